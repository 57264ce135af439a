//! Safe layer unpacking into a rootfs through cap-std.
//!
//! Every path is resolved beneath the rootfs [`Dir`]; nothing on the host outside it is ever
//! touched. Entries are handled deliberately: absolute paths are confined to the rootfs, `..`
//! is refused; symbolic links are created as links and never followed while unpacking (an entry
//! whose parent is a link is refused); hard links may only point at files inside the rootfs;
//! whiteouts and opaque directories remove what lower layers made; device nodes and FIFOs are
//! skipped; setuid and setgid bits are dropped; and a total size budget stops decompression bombs.

use std::collections::HashSet;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use cap_std::fs::{Dir, OpenOptions, Permissions};

/// Default cap on the bytes all layers of one image may unpack to.
pub const DEFAULT_MAX_BYTES: u64 = 8 << 30;

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// Why a layer could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The layer stream failed to read or decompress.
    #[error("reading layer")]
    Read(#[source] io::Error),
    /// An entry was refused because it would reach outside the rootfs or through a link.
    #[error("layer entry {path:?} refused: {reason}")]
    Refused {
        /// The entry's path as written in the layer.
        path: String,
        /// Why.
        reason: String,
    },
    /// Writing an entry failed.
    #[error("writing layer entry {path:?}")]
    Write {
        /// The entry's path.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The layers unpack to more than the budget allows.
    #[error("image unpacks to more than {limit} bytes (the unpack size limit)")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
}

/// Bytes left to unpack across all of an image's layers.
#[derive(Debug, Clone)]
pub struct Budget {
    limit: u64,
    used: u64,
}

impl Budget {
    /// A budget of `limit` bytes.
    pub fn new(limit: u64) -> Self {
        Self { limit, used: 0 }
    }

    fn take(&mut self, n: u64) -> Result<(), UnpackError> {
        self.used = self.used.saturating_add(n);
        if self.used > self.limit {
            return Err(UnpackError::TooLarge { limit: self.limit });
        }
        Ok(())
    }
}

impl Default for Budget {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_BYTES)
    }
}

/// Compression of a layer, from its media type or, failing that, its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

impl Compression {
    /// From an OCI/Docker layer media type, when it says.
    pub fn from_media_type(mt: &str) -> Option<Self> {
        if mt.ends_with("gzip") {
            Some(Self::Gzip)
        } else if mt.ends_with("zstd") {
            Some(Self::Zstd)
        } else if mt.ends_with(".tar") {
            Some(Self::None)
        } else {
            None
        }
    }

    fn sniff(head: &[u8]) -> Self {
        if head.starts_with(&[0x1f, 0x8b]) {
            Self::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Self::Zstd
        } else {
            Self::None
        }
    }
}

/// A layer's tar stream from its blob: decompressed as `compression` says, or as its first bytes
/// say when the media type did not.
pub(crate) fn decompress<'a>(
    data: impl Read + 'a,
    compression: Option<Compression>,
) -> io::Result<Box<dyn Read + 'a>> {
    let mut buf = BufReader::with_capacity(64 << 10, data);
    let c = match compression {
        Some(c) => c,
        None => Compression::sniff(buf.fill_buf()?),
    };
    Ok(match c {
        Compression::None => Box::new(buf),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(buf)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(buf)?),
    })
}

/// Turns an entry path into a path relative to the rootfs: leading `/` and `.` are dropped
/// (confined), `..` is refused. `None` for the root itself.
pub(crate) fn confine(raw: &Path) -> Result<Option<PathBuf>, String> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => return Err("path contains '..'".into()),
            Component::Prefix(_) => return Err("path has a prefix".into()),
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

/// [`confine`] for a path written as text: the relative path, or `None` if it climbs with `..`.
pub(crate) fn confine_str(p: &str) -> Option<PathBuf> {
    confine(Path::new(p)).ok().flatten()
}

struct Layer<'a> {
    root: &'a Dir,
    budget: &'a mut Budget,
    /// Paths this layer made, which its own opaque markers must keep.
    made: HashSet<PathBuf>,
}

/// Unpacks one layer (`data`, compressed as `compression` says or as its first bytes show)
/// into `root`, on top of the layers unpacked before it.
pub fn unpack_layer(
    root: &Dir,
    data: impl Read,
    compression: Option<Compression>,
    budget: &mut Budget,
) -> Result<(), UnpackError> {
    let reader = decompress(data, compression).map_err(UnpackError::Read)?;
    let mut layer = Layer {
        root,
        budget,
        made: HashSet::new(),
    };
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(UnpackError::Read)? {
        let entry = entry.map_err(UnpackError::Read)?;
        layer.entry(entry)?;
    }
    Ok(())
}

impl Layer<'_> {
    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let raw = entry.path().map_err(UnpackError::Read)?.into_owned();
        let shown = raw.display().to_string();
        let refused = |reason: String| UnpackError::Refused {
            path: shown.clone(),
            reason,
        };
        let write = |source: io::Error| UnpackError::Write {
            path: shown.clone(),
            source,
        };
        let Some(rel) = confine(&raw).map_err(refused)? else {
            return Ok(());
        };
        let name = rel
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let parent = rel.parent().unwrap_or(Path::new("")).to_path_buf();
        if name == OPAQUE {
            self.check_parents(&rel).map_err(refused)?;
            return self.opaque(&parent).map_err(write);
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
            self.check_parents(&rel).map_err(refused)?;
            return self.remove(&parent.join(hidden)).map_err(write);
        }
        let kind = entry.header().entry_type();
        let mode = entry.header().mode().unwrap_or(0o644) & 0o1777;
        use tar::EntryType as T;
        match kind {
            T::Directory => {
                self.make_parents(&rel)
                    .map_err(|e| self.classify(e, &shown))?;
                match self.root.symlink_metadata(&rel) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        self.root.remove_file(&rel).map_err(write)?;
                        self.root.create_dir(&rel).map_err(write)?;
                    }
                    Err(_) => self.root.create_dir(&rel).map_err(write)?,
                }
                self.root
                    .set_permissions(
                        &rel,
                        Permissions::from_std(std::fs::Permissions::from_mode(mode)),
                    )
                    .map_err(write)?;
            }
            T::Regular | T::Continuous | T::GNUSparse => {
                self.make_parents(&rel)
                    .map_err(|e| self.classify(e, &shown))?;
                self.replace(&rel).map_err(write)?;
                let declared = entry.size();
                self.budget.take(declared)?;
                let mut f = self
                    .root
                    .open_with(&rel, OpenOptions::new().write(true).create_new(true))
                    .map_err(write)?;
                // Count what is really written: sparse entries expand past their stored size.
                let room = self.budget.limit - self.budget.used + declared;
                let copied = io::copy(&mut (&mut entry).take(room + 1), &mut f).map_err(write)?;
                if copied > room {
                    return Err(UnpackError::TooLarge {
                        limit: self.budget.limit,
                    });
                }
                self.budget.take(copied.saturating_sub(declared))?;
                f.set_permissions(Permissions::from_std(std::fs::Permissions::from_mode(mode)))
                    .map_err(write)?;
            }
            T::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(UnpackError::Read)?
                    .ok_or_else(|| refused("symbolic link without a target".into()))?
                    .into_owned();
                self.make_parents(&rel)
                    .map_err(|e| self.classify(e, &shown))?;
                self.replace(&rel).map_err(write)?;
                // The target is stored verbatim and never followed here.
                self.root.symlink_contents(&target, &rel).map_err(write)?;
            }
            T::Link => {
                let target = entry
                    .link_name()
                    .map_err(UnpackError::Read)?
                    .ok_or_else(|| refused("hard link without a target".into()))?
                    .into_owned();
                let target = confine(&target)
                    .map_err(|r| refused(format!("hard link target {}", r)))?
                    .ok_or_else(|| refused("hard link to the root".into()))?;
                self.check_parents(&target)
                    .map_err(|r| refused(format!("hard link target: {r}")))?;
                match self.root.symlink_metadata(&target) {
                    Ok(m) if m.is_file() => {}
                    Ok(_) => return Err(refused("hard link target is not a regular file".into())),
                    Err(_) => {
                        return Err(refused(format!(
                            "hard link target {} is not in the rootfs",
                            target.display()
                        )));
                    }
                }
                self.make_parents(&rel)
                    .map_err(|e| self.classify(e, &shown))?;
                self.replace(&rel).map_err(write)?;
                self.root
                    .hard_link(&target, self.root, &rel)
                    .map_err(write)?;
            }
            other => {
                tracing::debug!(path = %shown, kind = ?other, "layer entry skipped");
                return Ok(());
            }
        }
        self.made.insert(rel);
        Ok(())
    }

    /// Refuses a path any of whose parents is a symbolic link or not a directory.
    fn check_parents(&self, rel: &Path) -> Result<(), String> {
        let mut prefix = PathBuf::new();
        let parts: Vec<_> = rel.components().collect();
        for c in &parts[..parts.len().saturating_sub(1)] {
            prefix.push(c);
            match self.root.symlink_metadata(&prefix) {
                Ok(m) if m.is_symlink() => {
                    return Err(format!("passes through symbolic link {}", prefix.display()));
                }
                Ok(m) if !m.is_dir() => {
                    return Err(format!("{} is not a directory", prefix.display()));
                }
                Ok(_) | Err(_) => {}
            }
        }
        Ok(())
    }

    /// Creates missing parents of `rel` (mode 0755), never through a link.
    fn make_parents(&mut self, rel: &Path) -> Result<(), ParentError> {
        self.check_parents(rel).map_err(ParentError::Refused)?;
        let mut prefix = PathBuf::new();
        let parts: Vec<_> = rel.components().collect();
        for c in &parts[..parts.len().saturating_sub(1)] {
            prefix.push(c);
            if self.root.symlink_metadata(&prefix).is_err() {
                self.root.create_dir(&prefix).map_err(ParentError::Io)?;
                self.made.insert(prefix.clone());
            }
        }
        Ok(())
    }

    fn classify(&self, e: ParentError, shown: &str) -> UnpackError {
        match e {
            ParentError::Refused(reason) => UnpackError::Refused {
                path: shown.to_string(),
                reason,
            },
            ParentError::Io(source) => UnpackError::Write {
                path: shown.to_string(),
                source,
            },
        }
    }

    /// Removes whatever is at `rel` so a new entry replaces it (a directory stays for a directory).
    fn replace(&self, rel: &Path) -> io::Result<()> {
        self.remove(rel)
    }

    /// Removes `rel` (a file, a link, or a whole directory), never following links.
    fn remove(&self, rel: &Path) -> io::Result<()> {
        match self.root.symlink_metadata(rel) {
            Ok(m) if m.is_dir() => self.root.remove_dir_all(rel),
            Ok(_) => self.root.remove_file(rel),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Empties `dir` of everything lower layers put there, keeping this layer's entries.
    fn opaque(&self, dir: &Path) -> io::Result<()> {
        let entries = if dir.as_os_str().is_empty() {
            self.root.entries()?
        } else {
            match self.root.symlink_metadata(dir) {
                Ok(m) if m.is_dir() => self.root.read_dir(dir)?,
                _ => return Ok(()),
            }
        };
        for e in entries {
            let child = dir.join(e?.file_name());
            if !self.made.contains(&child) {
                self.remove(&child)?;
            }
        }
        Ok(())
    }
}

enum ParentError {
    Refused(String),
    Io(io::Error),
}

#[cfg(test)]
mod tests;
