//! Import and export: OCI image layouts (a directory, or a tarball as `skopeo copy ...
//! oci-archive:` writes) into and out of the store. Every blob is verified against its digest on
//! the way in; a tarball is unpacked with the same safe unpacker as image layers.

use std::io::{self, Read};
use std::path::Path;

use cap_std::fs::Dir;

use crate::digest::{BadDigest, Digest};
use crate::reference::Reference;
use crate::store::{Descriptor, REF_NAME, Store, StoreError, walk_graph};
use crate::unpack::{Budget, UnpackError, unpack_layer};

/// Annotation containerd and buildkit use for the full image name.
const CONTAINERD_NAME: &str = "io.containerd.image.name";

/// Errors of import and export, naming the file and the reason.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// Reading the source failed.
    #[error("{op} {path}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The archive is not an OCI layout, or a document in it is malformed.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// Unpacking the tarball failed.
    #[error("unpacking {path}")]
    Unpack {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: UnpackError,
    },
    /// Storing failed (including a blob that does not match its digest).
    #[error("importing {path}")]
    Store {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: StoreError,
    },
}

/// Loads the OCI layout at `src` (a directory or a tarball of one) into `store`. Each image is
/// named by its `org.opencontainers.image.ref.name` (or `io.containerd.image.name`) annotation,
/// or by `name` when given (then the layout must hold one image). Returns the names stored.
pub fn load(
    store: &Store,
    src: &Path,
    name: Option<&Reference>,
) -> Result<Vec<String>, ArchiveError> {
    let shown = src.display().to_string();
    let io = |op| {
        let path = shown.clone();
        move |source| ArchiveError::Io { op, path, source }
    };
    let meta = std::fs::metadata(src).map_err(io("reading"))?;
    let _tmp;
    let dir = if meta.is_dir() {
        Dir::open_ambient_dir(src, cap_std::ambient_authority()).map_err(io("opening"))?
    } else {
        _tmp = tempfile::Builder::new()
            .prefix("load-")
            .tempdir_in(store.root().join("tmp"))
            .map_err(io("unpacking"))?;
        let dir = Dir::open_ambient_dir(_tmp.path(), cap_std::ambient_authority())
            .map_err(io("unpacking"))?;
        let f = std::fs::File::open(src).map_err(io("opening"))?;
        unpack_layer(&dir, f, None, &mut Budget::default()).map_err(|source| {
            ArchiveError::Unpack {
                path: shown.clone(),
                source,
            }
        })?;
        dir
    };
    import(store, &dir, &shown, name)
}

fn store_err(path: &str) -> impl FnOnce(StoreError) -> ArchiveError {
    let path = path.to_string();
    move |source| ArchiveError::Store { path, source }
}

fn invalid(path: &str, reason: impl Into<String>) -> ArchiveError {
    ArchiveError::Invalid {
        path: path.to_string(),
        reason: reason.into(),
    }
}

/// A name given on the command line can only name a single image.
fn one_if_named(shown: &str, name: Option<&Reference>, images: usize) -> Result<(), ArchiveError> {
    if name.is_some() && images != 1 {
        return Err(invalid(
            shown,
            format!("holds {images} images; a name can only be given to one"),
        ));
    }
    Ok(())
}

fn import(
    store: &Store,
    dir: &Dir,
    shown: &str,
    name: Option<&Reference>,
) -> Result<Vec<String>, ArchiveError> {
    let _keep = store.keep_blobs().map_err(store_err(shown))?;
    if dir.symlink_metadata("oci-layout").is_err() {
        if dir.symlink_metadata("manifest.json").is_ok() {
            return import_docker_archive(store, dir, shown, name);
        }
        return Err(invalid(
            shown,
            "neither an OCI image layout (no oci-layout file) nor a docker-archive (no manifest.json)",
        ));
    }
    let index: crate::store::Index = read_json(dir, "index.json", shown)?;
    let entries = index.manifests;
    if entries.is_empty() {
        return Err(invalid(shown, "index.json lists no images"));
    }
    one_if_named(shown, name, entries.len())?;
    let mut names = Vec::new();
    for target in entries {
        let ref_name = match name {
            Some(n) => n.to_string(),
            None => {
                let ann = (target.annotations.get(CONTAINERD_NAME))
                    .or_else(|| target.annotations.get(REF_NAME))
                    .ok_or_else(|| {
                        invalid(
                            shown,
                            format!("image {} has no name; give one with --tag", target.digest),
                        )
                    })?;
                // A short ref name (`skopeo copy ... oci-archive:x.tar:compat:v9`) is a local
                // image's, as `podman load` names it: `localhost/compat:v9`.
                Reference::local(ann)
                    .map_err(|err| invalid(shown, format!("{err}; give a name with --tag")))?
                    .to_string()
            }
        };
        copy_tree(store, dir, shown, &target.digest)?;
        let mut target = target;
        target.annotations.remove(CONTAINERD_NAME);
        store.set_ref(&ref_name, target).map_err(store_err(shown))?;
        names.push(ref_name);
    }
    Ok(names)
}

/// Imports a docker-archive (`docker save`, `podman save`, `skopeo copy ... docker-archive:`):
/// `manifest.json` lists each image's config file, tags and layer tarballs. Each image becomes an
/// OCI manifest in the store; layers keep their bytes (their digests are computed here).
fn import_docker_archive(
    store: &Store,
    dir: &Dir,
    shown: &str,
    name: Option<&Reference>,
) -> Result<Vec<String>, ArchiveError> {
    let entries: Vec<DockerEntry> = read_json(dir, "manifest.json", shown)?;
    if entries.is_empty() {
        return Err(invalid(shown, "manifest.json lists no images"));
    }
    one_if_named(shown, name, entries.len())?;
    let store_file = |rel: &str| -> Result<(Digest, u64, bool), ArchiveError> {
        let rel = crate::unpack::confine_str(rel)
            .ok_or_else(|| invalid(shown, format!("entry path {rel:?} leaves the archive")))?;
        let open = || {
            dir.open(&rel).map_err(|source| ArchiveError::Io {
                op: "reading",
                path: format!("{shown}/{}", rel.display()),
                source,
            })
        };
        let mut r = crate::digest::HashingReader::new(open()?);
        let mut head = [0u8; 2];
        let got = r.read(&mut head).unwrap_or(0);
        io::copy(&mut r, &mut io::sink()).map_err(|source| ArchiveError::Io {
            op: "reading",
            path: format!("{shown}/{}", rel.display()),
            source,
        })?;
        let (d, size) = r.finish();
        store.put_blob(&d, open()?).map_err(store_err(shown))?;
        Ok((d, size, got == 2 && head == [0x1f, 0x8b]))
    };
    let mut names = Vec::new();
    for e in entries {
        let (cd, cs, _) = store_file(&e.config)?;
        let mut layers = Vec::new();
        for rel in &e.layers {
            let (d, size, gz) = store_file(rel)?;
            let mt = if gz {
                "application/vnd.oci.image.layer.v1.tar+gzip"
            } else {
                "application/vnd.oci.image.layer.v1.tar"
            };
            layers.push(crate::oci::descriptor(mt, &d, size));
        }
        let config = crate::oci::descriptor("application/vnd.oci.image.config.v1+json", &cd, cs);
        let manifest = crate::oci::manifest(config, layers);
        let manifest = crate::oci::to_bytes(&manifest);
        let md = store.put_bytes(&manifest).map_err(store_err(shown))?;
        let ref_name = match name {
            Some(n) => n.to_string(),
            None => {
                let tag = e.repo_tags.first().ok_or_else(|| {
                    invalid(
                        shown,
                        format!("image {md} has no tag; give a name with --tag"),
                    )
                })?;
                tag.parse::<Reference>()
                    .map_err(|err| invalid(shown, format!("{err}; give a name with --tag")))?
                    .to_string()
            }
        };
        store
            .set_ref(
                &ref_name,
                Descriptor {
                    media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                    digest: md.to_string(),
                    size: manifest.len() as u64,
                    annotations: Default::default(),
                    extra: Default::default(),
                },
            )
            .map_err(store_err(shown))?;
        names.push(ref_name);
    }
    Ok(names)
}

/// One image of a docker-archive's `manifest.json`: its config and layer files, and its tags.
#[derive(serde::Serialize, serde::Deserialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Vec<String>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

fn read_json<T: serde::de::DeserializeOwned>(
    dir: &Dir,
    rel: &str,
    shown: &str,
) -> Result<T, ArchiveError> {
    let bytes = dir.read(rel).map_err(|source| ArchiveError::Io {
        op: "reading",
        path: format!("{shown}/{rel}"),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|e| invalid(shown, format!("{rel} is malformed: {e}")))
}

/// Copies blob `digest` and everything it references into the store, verifying each, once each.
fn copy_tree(store: &Store, dir: &Dir, shown: &str, digest: &str) -> Result<(), ArchiveError> {
    let mut copy = |digest: &str| -> Result<Vec<String>, ArchiveError> {
        let d: Digest = digest
            .parse()
            .map_err(|e: BadDigest| invalid(shown, e.to_string()))?;
        let rel = format!("blobs/sha256/{}", d.hex());
        let f = dir.open(&rel).map_err(|source| ArchiveError::Io {
            op: "reading",
            path: format!("{shown}/{rel}"),
            source,
        })?;
        store.put_blob(&d, f).map_err(store_err(shown))?;
        Ok(crate::oci::referenced_digests(
            &store.read_blob(&d).unwrap_or_default(),
        ))
    };
    walk_graph(digest, &mut copy, &|reason| invalid(shown, reason))?;
    Ok(())
}

/// Writes `name` from the store as an OCI layout tarball at `out` (atomically: a temp file renamed
/// into place). The index names the image by its full reference.
pub fn save(store: &Store, name: &str, out: &Path) -> Result<(), ArchiveError> {
    let serr = |source| ArchiveError::Store {
        path: out.display().to_string(),
        source,
    };
    let _keep = store.keep_blobs().map_err(serr)?;
    let target = store.resolve(name).map_err(serr)?;
    save_as(store, name, target, out)
}

/// Writes the image `target` points at, named `name`, as an OCI layout tarball at `out`
/// (atomically). The caller holds the store's blob lock.
pub fn save_as(
    store: &Store,
    name: &str,
    mut target: crate::store::Descriptor,
    out: &Path,
) -> Result<(), ArchiveError> {
    let shown = out.display().to_string();
    let serr = |source| ArchiveError::Store {
        path: shown.clone(),
        source,
    };
    target.annotations.insert(REF_NAME.into(), name.into());
    let mut digests = Vec::new();
    collect(store, &target.digest, &mut digests).map_err(serr)?;
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile::NamedTempFile::new_in(parent).map_err(|source| ArchiveError::Io {
        op: "creating",
        path: shown.clone(),
        source,
    })?;
    let werr = |source| ArchiveError::Io {
        op: "writing",
        path: shown.clone(),
        source,
    };
    {
        let mut b = tar::Builder::new(tmp.as_file());
        let add =
            |b: &mut tar::Builder<&std::fs::File>, path: &str, data: &mut dyn Read, size: u64| {
                let mut h = tar::Header::new_ustar();
                h.set_size(size);
                h.set_mode(0o644);
                h.set_mtime(0);
                h.set_cksum();
                b.append_data(&mut h, path, data)
            };
        let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
        add(&mut b, "oci-layout", &mut &layout[..], layout.len() as u64).map_err(werr)?;
        let index = crate::oci::to_bytes(&crate::store::Index::of(vec![target.clone()]));
        add(&mut b, "index.json", &mut &index[..], index.len() as u64).map_err(werr)?;
        if let Some(list) = docker_list(store, name, &target) {
            add(&mut b, "manifest.json", &mut &list[..], list.len() as u64).map_err(werr)?;
        }
        for d in &digests {
            let mut f = store.open_blob(d).map_err(serr)?;
            let size = f.metadata().map_err(werr)?.len();
            add(&mut b, &format!("blobs/sha256/{}", d.hex()), &mut f, size).map_err(werr)?;
        }
        b.finish().map_err(werr)?;
    }
    tmp.as_file().sync_all().map_err(werr)?;
    tmp.persist(out).map_err(|e| werr(e.error))?;
    Ok(())
}

/// Docker's own list of an archive's images (`manifest.json`: config, tags and layers by path),
/// written beside the OCI layout as `ctr export` writes it, so that `docker load` (which reads
/// only that list before Docker 25) takes the archive. Only for one image manifest whose config
/// is an image config; none for an index or a wasm artifact, which Docker cannot run.
fn docker_list(store: &Store, name: &str, target: &Descriptor) -> Option<Vec<u8>> {
    const MANIFESTS: [&str; 2] = [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ];
    const CONFIGS: [&str; 2] = [
        "application/vnd.oci.image.config.v1+json",
        "application/vnd.docker.container.image.v1+json",
    ];
    if !MANIFESTS.contains(&target.media_type.as_str()) {
        return None;
    }
    let digest: Digest = target.digest.parse().ok()?;
    let Ok(crate::oci::Document::Manifest(manifest)) =
        crate::oci::Document::parse(&store.read_blob(&digest).ok()?)
    else {
        return None;
    };
    if !CONFIGS.contains(&manifest.config().media_type().to_string().as_str()) {
        return None;
    }
    let path = |d: &oci_spec::image::Descriptor| -> Option<String> {
        Some(format!(
            "blobs/sha256/{}",
            crate::oci::digest(d).ok()?.hex()
        ))
    };
    let layers = manifest
        .layers()
        .iter()
        .map(path)
        .collect::<Option<Vec<_>>>()?;
    let repo_tags = if name.contains('@') {
        vec![]
    } else {
        vec![name.to_string()]
    };
    let list = [DockerEntry {
        config: path(manifest.config())?,
        repo_tags,
        layers,
    }];
    Some(crate::oci::to_bytes(&list))
}

fn collect(store: &Store, digest: &str, out: &mut Vec<Digest>) -> Result<(), StoreError> {
    let Ok(d) = digest.parse::<Digest>() else {
        return Ok(());
    };
    if out.contains(&d) {
        return Ok(());
    }
    let bytes = store.read_blob(&d)?;
    out.push(d);
    for child in crate::oci::referenced_digests(&bytes) {
        collect(store, &child, out)?;
    }
    Ok(())
}
