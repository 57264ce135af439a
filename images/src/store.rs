//! The local image store: an OCI image layout on disk (`oci-layout`, `index.json`,
//! `blobs/sha256/<hex>`), with references recorded in `index.json` under the
//! `org.opencontainers.image.ref.name` annotation.
//!
//! A blob is written to `tmp/`, verified against its digest, fsynced, then renamed into place, so
//! no blob ever holds content that does not match its name. `index.json` is replaced the same way,
//! under an exclusive lock, after the blobs it points at are in place, so a reference never points
//! at a missing blob. Every access goes through the store's cap-std [`Dir`].

use std::collections::{BTreeMap, HashSet};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use cap_std::fs::{Dir, OpenOptions};
use serde::{Deserialize, Serialize};

use sha2::{Digest as _, Sha256};

use crate::digest::Digest;

/// Annotation holding a reference name in `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Errors of the store, each naming the operation and what it was done to.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O operation on the store failed.
    #[error("{op} {path}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path inside the store.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Content did not match the digest it was fetched under.
    #[error("blob {expected} does not match its digest (content hashes to {actual})")]
    DigestMismatch {
        /// The digest asked for.
        expected: Digest,
        /// What the content hashed to.
        actual: Digest,
    },
    /// A blob is not in the store.
    #[error("blob {digest} is not in the store")]
    MissingBlob {
        /// The digest.
        digest: Digest,
    },
    /// `index.json` or a manifest does not parse.
    #[error("{what} is malformed: {reason}")]
    Malformed {
        /// Which document.
        what: String,
        /// The parser's complaint.
        reason: String,
    },
    /// A reference is not in the store.
    #[error("image {name} is not in the store")]
    UnknownRef {
        /// The reference.
        name: String,
    },
}

type Result<T, E = StoreError> = std::result::Result<T, E>;

fn io_err(op: &'static str, path: impl Into<String>) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.into();
    move |source| StoreError::Io { op, path, source }
}

/// A missing blob is [`StoreError::MissingBlob`]; any other failure names the operation.
fn blob_err(op: &'static str, d: &Digest, rel: String) -> impl FnOnce(io::Error) -> StoreError {
    let digest = d.clone();
    move |source| match source.kind() {
        io::ErrorKind::NotFound => StoreError::MissingBlob { digest },
        _ => StoreError::Io {
            op,
            path: rel,
            source,
        },
    }
}

/// A descriptor as stored in `index.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    /// Media type of the target.
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// Digest of the target.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// Annotations (the reference name lives here).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Anything else a descriptor may carry, kept as it was.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// An OCI layout's `index.json`, the store's and an archive's: its descriptors as they were.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Index {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    pub(crate) manifests: Vec<Descriptor>,
    #[serde(flatten)]
    extra: BTreeMap<String, serde_json::Value>,
}

impl Index {
    /// An index of `manifests`.
    pub(crate) fn of(manifests: Vec<Descriptor>) -> Self {
        Index {
            schema_version: 2,
            media_type: Some("application/vnd.oci.image.index.v1+json".into()),
            manifests,
            extra: BTreeMap::new(),
        }
    }
}

/// The store.
pub struct Store {
    root: PathBuf,
    dir: Dir,
}

/// Held while the store's references are being changed; other processes wait.
pub struct StoreLock(std::fs::File);

impl Drop for StoreLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

impl Store {
    /// Opens the store at `root`, creating an empty OCI layout there if needed.
    pub fn open(root: &Path) -> Result<Self> {
        let shown = root.display().to_string();
        std::fs::create_dir_all(root).map_err(io_err("creating store", &shown))?;
        // The one place the store takes ambient authority: opening its own root.
        let dir = Dir::open_ambient_dir(root, cap_std::ambient_authority())
            .map_err(io_err("opening store", &shown))?;
        dir.create_dir_all("blobs/sha256")
            .map_err(io_err("creating", "blobs/sha256"))?;
        dir.create_dir_all("tmp")
            .map_err(io_err("creating", "tmp"))?;
        let store = Self {
            root: root.to_path_buf(),
            dir,
        };
        if !store.exists("oci-layout") {
            store.write_atomic("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        if !store.exists("index.json") {
            let _lock = store.lock()?;
            if !store.exists("index.json") {
                store.write_index(&Index::of(Vec::new()))?;
            }
        }
        Ok(store)
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn exists(&self, p: &str) -> bool {
        self.dir.symlink_metadata(p).is_ok()
    }

    /// Takes the store's exclusive lock on references (across processes).
    pub fn lock(&self) -> Result<StoreLock> {
        self.flock("lock", true)
    }

    /// Keeps `prune` away while held: taken (shared) by anything that writes blobs before naming
    /// them (pull, load, build) or reads them all (save), so no blob is pruned in between.
    pub fn keep_blobs(&self) -> Result<StoreLock> {
        self.flock("gc.lock", false)
    }

    fn flock(&self, name: &'static str, exclusive: bool) -> Result<StoreLock> {
        let f = self
            .dir
            .open_with(
                name,
                OpenOptions::new().create(true).truncate(false).write(true),
            )
            .map_err(io_err("opening", name))?
            .into_std();
        if exclusive {
            f.lock().map_err(io_err("locking", name))?;
        } else {
            f.lock_shared().map_err(io_err("locking", name))?;
        }
        Ok(StoreLock(f))
    }

    fn blob_rel(d: &Digest) -> String {
        format!("blobs/sha256/{}", d.hex())
    }

    /// True when the blob is present.
    pub fn has_blob(&self, d: &Digest) -> bool {
        self.exists(&Self::blob_rel(d))
    }

    /// Writes `data` as blob `expected`, verifying it while streaming. Returns its size. A blob
    /// already present is not written again. On any failure nothing is left behind.
    pub fn put_blob(&self, expected: &Digest, mut data: impl Read) -> Result<u64> {
        let rel = Self::blob_rel(expected);
        if let Ok(m) = self.dir.symlink_metadata(&rel) {
            return Ok(m.len());
        }
        let mut w = self.blob_writer()?;
        io::copy(&mut data, &mut w).map_err(io_err("writing", &w.tmp))?;
        w.commit(expected)
    }

    /// A writer for a new blob, for content that arrives in pieces (a registry download). Call
    /// [`BlobWriter::commit`] with the digest it must match; dropped uncommitted, it leaves nothing.
    pub fn blob_writer(&self) -> Result<BlobWriter<'_>> {
        let tmp = self.tmp_name();
        let file = self
            .dir
            .open_with(&tmp, OpenOptions::new().write(true).create_new(true))
            .map_err(io_err("creating", &tmp))?;
        Ok(BlobWriter {
            store: self,
            tmp,
            file: Some(file),
            hasher: Sha256::new(),
            size: 0,
            renamed: false,
        })
    }

    /// Stores `bytes` and returns their digest.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<Digest> {
        let d = Digest::of(bytes);
        self.put_blob(&d, bytes)?;
        Ok(d)
    }

    /// Reads a whole blob.
    pub fn read_blob(&self, d: &Digest) -> Result<Vec<u8>> {
        let rel = Self::blob_rel(d);
        self.dir.read(&rel).map_err(blob_err("reading", d, rel))
    }

    /// Opens a blob for streaming.
    pub fn open_blob(&self, d: &Digest) -> Result<cap_std::fs::File> {
        let rel = Self::blob_rel(d);
        self.dir.open(&rel).map_err(blob_err("opening", d, rel))
    }

    fn tmp_name(&self) -> String {
        format!(
            "tmp/{}-{}",
            std::process::id(),
            TMP_SEQ.fetch_add(1, Ordering::Relaxed)
        )
    }

    fn sync_dir(&self, rel: &str) -> Result<()> {
        self.dir
            .open(rel)
            .and_then(|d| d.sync_all())
            .map_err(io_err("syncing", rel))
    }

    fn write_atomic(&self, rel: &str, bytes: &[u8]) -> Result<()> {
        let mut w = self.blob_writer()?;
        w.write_all(bytes).map_err(io_err("writing", &w.tmp))?;
        w.finish(rel, ".")?;
        Ok(())
    }

    fn read_index(&self) -> Result<Index> {
        let bytes = self
            .dir
            .read("index.json")
            .map_err(io_err("reading", "index.json"))?;
        serde_json::from_slice(&bytes).map_err(|e| StoreError::Malformed {
            what: format!("{}/index.json", self.root.display()),
            reason: e.to_string(),
        })
    }

    fn write_index(&self, index: &Index) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(index).expect("index serializes");
        self.write_atomic("index.json", &bytes)
    }

    /// All references and what they point at, sorted by name.
    pub fn refs(&self) -> Result<Vec<(String, Descriptor)>> {
        let mut v: Vec<_> = self
            .read_index()?
            .manifests
            .into_iter()
            .filter_map(|d| d.annotations.get(REF_NAME).cloned().map(|n| (n, d)))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(v)
    }

    /// What `name` points at.
    pub fn resolve(&self, name: &str) -> Result<Descriptor> {
        self.refs()?
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, d)| d)
            .ok_or_else(|| StoreError::UnknownRef {
                name: name.to_string(),
            })
    }

    /// Points `name` at `target` (whose blob, and everything it references, must already be
    /// stored), replacing any earlier target.
    pub fn set_ref(&self, name: &str, mut target: Descriptor) -> Result<()> {
        let d: Digest = target
            .digest
            .parse()
            .map_err(|e: crate::digest::BadDigest| StoreError::Malformed {
                what: format!("descriptor for {name}"),
                reason: e.to_string(),
            })?;
        if !self.has_blob(&d) {
            return Err(StoreError::MissingBlob { digest: d });
        }
        target.annotations.insert(REF_NAME.into(), name.into());
        let _lock = self.lock()?;
        let mut index = self.read_index()?;
        index
            .manifests
            .retain(|m| m.annotations.get(REF_NAME).map(String::as_str) != Some(name));
        index.manifests.push(target);
        self.write_index(&index)
    }

    /// Removes reference `name`.
    pub fn remove_ref(&self, name: &str) -> Result<()> {
        let _lock = self.lock()?;
        let mut index = self.read_index()?;
        let before = index.manifests.len();
        index
            .manifests
            .retain(|m| m.annotations.get(REF_NAME).map(String::as_str) != Some(name));
        if index.manifests.len() == before {
            return Err(StoreError::UnknownRef {
                name: name.to_string(),
            });
        }
        self.write_index(&index)
    }

    /// Deletes blobs no reference reaches and leftover temp files; returns what was deleted.
    pub fn prune(&self) -> Result<Vec<Digest>> {
        // Waits for pulls, loads and builds in flight: their blobs are not named yet.
        let _gc = self.flock("gc.lock", true)?;
        let _lock = self.lock()?;
        let mut reachable = HashSet::new();
        let mut queue: Vec<String> = self
            .read_index()?
            .manifests
            .into_iter()
            .map(|d| d.digest)
            .collect();
        while let Some(d) = queue.pop() {
            let Ok(d) = d.parse::<Digest>() else { continue };
            if !reachable.insert(d.clone()) {
                continue;
            }
            // Manifests and indexes name further blobs; anything else is a leaf.
            if let Ok(bytes) = self.read_blob(&d) {
                queue.extend(crate::oci::referenced_digests(&bytes));
            }
        }
        let mut removed = Vec::new();
        for e in self
            .dir
            .read_dir("blobs/sha256")
            .map_err(io_err("listing", "blobs/sha256"))?
        {
            let name = e.map_err(io_err("listing", "blobs/sha256"))?.file_name();
            let name = name.to_string_lossy();
            match format!("sha256:{name}").parse::<Digest>() {
                Ok(d) if reachable.contains(&d) => {}
                parsed => {
                    let rel = format!("blobs/sha256/{name}");
                    self.dir
                        .remove_file(&rel)
                        .map_err(io_err("removing", &rel))?;
                    if let Ok(d) = parsed {
                        removed.push(d);
                    }
                }
            }
        }
        for e in self.dir.read_dir("tmp").map_err(io_err("listing", "tmp"))? {
            let name = e.map_err(io_err("listing", "tmp"))?.file_name();
            let rel = format!("tmp/{}", name.to_string_lossy());
            self.dir
                .remove_file(&rel)
                .map_err(io_err("removing", &rel))?;
        }
        Ok(removed)
    }
}

/// A blob being written: a temp file in the store and a running hash of what went in.
pub struct BlobWriter<'a> {
    store: &'a Store,
    tmp: String,
    file: Option<cap_std::fs::File>,
    hasher: Sha256,
    size: u64,
    renamed: bool,
}

impl BlobWriter<'_> {
    /// Verifies the content against `expected`, then moves it into place (fsynced). Returns its
    /// size. A mismatch is an error and leaves nothing behind.
    pub fn commit(mut self, expected: &Digest) -> Result<u64> {
        let actual = Digest::from_sha256(std::mem::take(&mut self.hasher).finalize().into());
        if &actual != expected {
            return Err(StoreError::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        let rel = Store::blob_rel(expected);
        self.finish(&rel, "blobs/sha256")
    }

    /// fsyncs, renames to `rel`, fsyncs `parent`.
    fn finish(&mut self, rel: &str, parent: &str) -> Result<u64> {
        let file = self.file.take().expect("finished once");
        file.sync_all().map_err(io_err("syncing", &self.tmp))?;
        drop(file);
        self.store
            .dir
            .rename(&self.tmp, &self.store.dir, rel)
            .map_err(io_err("storing", rel))?;
        self.renamed = true;
        self.store.sync_dir(parent)?;
        Ok(self.size)
    }
}

impl Write for BlobWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.as_mut().expect("not finished").write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl tokio::io::AsyncWrite for BlobWriter<'_> {
    // Local disk writes: done in place, like the synchronous path.
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::task::Poll::Ready(self.get_mut().write(buf))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

impl Drop for BlobWriter<'_> {
    fn drop(&mut self) {
        if !self.renamed {
            drop(self.file.take());
            let _ = self.store.dir.remove_file(&self.tmp);
        }
    }
}

/// Deepest chain of documents (index → index → … → manifest → blob) a walk follows.
pub const MAX_GRAPH_DEPTH: usize = 8;
/// Most digests one document may name.
pub const MAX_REFERENCES: usize = 4096;
/// Most distinct blobs one image graph may hold.
pub const MAX_GRAPH_BLOBS: usize = 65536;

/// Walks the blob graph from `root` depth-first, calling `visit` once per distinct digest (it
/// returns the digests that blob names) and returning every digest after those it names
/// (children first). Fails with the reason when the graph is deeper than [`MAX_GRAPH_DEPTH`], a
/// document names more than [`MAX_REFERENCES`] digests, or the graph holds more than
/// [`MAX_GRAPH_BLOBS`] blobs, so a hostile graph (each index naming the next many times) costs
/// one visit per blob and never runs away.
pub fn walk_graph<E>(
    root: &str,
    visit: &mut dyn FnMut(&str) -> Result<Vec<String>, E>,
    too_big: &dyn Fn(String) -> E,
) -> Result<Vec<String>, E> {
    fn go<E>(
        digest: &str,
        depth: usize,
        seen: &mut HashSet<String>,
        out: &mut Vec<String>,
        visit: &mut dyn FnMut(&str) -> Result<Vec<String>, E>,
        too_big: &dyn Fn(String) -> E,
    ) -> Result<(), E> {
        if !seen.insert(digest.to_string()) {
            return Ok(());
        }
        if seen.len() > MAX_GRAPH_BLOBS {
            return Err(too_big(format!(
                "the image graph holds more than {MAX_GRAPH_BLOBS} blobs"
            )));
        }
        if depth > MAX_GRAPH_DEPTH {
            return Err(too_big(format!(
                "the image graph is nested more than {MAX_GRAPH_DEPTH} levels deep"
            )));
        }
        let children = visit(digest)?;
        if children.len() > MAX_REFERENCES {
            return Err(too_big(format!(
                "{digest} names {} digests, more than {MAX_REFERENCES}",
                children.len()
            )));
        }
        for c in &children {
            go(c, depth + 1, seen, out, visit, too_big)?;
        }
        out.push(digest.to_string());
        Ok(())
    }
    let mut out = Vec::new();
    go(root, 0, &mut HashSet::new(), &mut out, visit, too_big)?;
    Ok(out)
}

#[cfg(test)]
mod tests;
