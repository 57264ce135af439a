//! An image's entry wasm read straight from its blobs, with nothing unpacked: an artifact's wasm
//! layer, or, for a compat image, the entrypoint's file as the union of its layers shows it (upper
//! layers first, whiteouts and opaque directories honoured, symbolic links followed inside the
//! image as a chroot sees them, `..` stopping at its root). `wasmbox agent` compiles what this
//! finds in a node's containerd.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::blobs::Blobs;
use crate::detect::{Form, is_wasm};
use crate::digest::Digest;
use crate::image::{ARTIFACT_ENTRY, Image, ImageError};
use crate::unpack::{Compression, decompress};

/// Most entries of an image's layers indexed while looking for its entrypoint.
const MAX_ENTRIES: usize = 1 << 20;
/// Most bytes of layers read to find out whether an image that does not say it holds wasm runs
/// a wasm entrypoint (images built the Docker way: `FROM scratch`, `COPY app.wasm`). A larger
/// one is taken for the native image it most likely is.
pub const MAX_UNDECLARED_LAYERS: u64 = 256 << 20;
/// Most symbolic links followed resolving one path (Linux's `MAXSYMLINKS`).
const MAX_LINKS: usize = 40;
/// The `PATH` a bare entrypoint name is looked up in when the config sets none (runc's).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The wasm an image runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryWasm {
    /// Its path in the image's root filesystem.
    pub path: String,
    /// The binary.
    pub bytes: Vec<u8>,
}

/// What a layer holds at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Link(PathBuf),
    Other,
}

/// The union of an image's layers: each path's entry and the layer it comes from.
#[derive(Debug, Default)]
struct Union {
    entries: HashMap<PathBuf, (usize, Kind)>,
}

/// The wasm image `image` (read from `blobs`) runs, at most `max` bytes; `None` when it holds no
/// wasm there (a native image, or an entrypoint that is no wasm).
pub fn entry_wasm(
    blobs: &dyn Blobs,
    image: &Image,
    max: u64,
) -> Result<Option<EntryWasm>, ImageError> {
    let Some(detection) = &image.detection else {
        // Run as wasm only if its entrypoint turns out to be wasm.
        if image.size() > MAX_UNDECLARED_LAYERS {
            return Ok(None);
        }
        return compat_entry(blobs, image, max);
    };
    match &detection.form {
        Form::Artifact { digest, .. } => {
            let blob = blobs
                .open_blob(digest)
                .map_err(ImageError::store(&image.name))?;
            Ok(
                read_wasm(image, blob, max, ARTIFACT_ENTRY)?.map(|bytes| EntryWasm {
                    path: format!("/{ARTIFACT_ENTRY}"),
                    bytes,
                }),
            )
        }
        Form::Compat => compat_entry(blobs, image, max),
    }
}

fn compat_entry(
    blobs: &dyn Blobs,
    image: &Image,
    max: u64,
) -> Result<Option<EntryWasm>, ImageError> {
    let layers = layers(image)?;
    let mut union = Union::default();
    for (index, (digest, compression)) in layers.iter().enumerate().rev() {
        let mut tar = open_layer(blobs, image, digest, *compression)?;
        union
            .add_layer(index, &mut tar)
            .map_err(|reason| ImageError::Malformed {
                image: image.name.clone(),
                what: format!("layer {digest}"),
                reason,
            })?;
    }
    let Some(found) = candidates(image)
        .into_iter()
        .find_map(|p| union.resolve(&p).map(|f| (p, f)))
    else {
        return Ok(None);
    };
    let (path, (layer, at)) = found;
    let (digest, compression) = &layers[layer];
    let mut tar = open_layer(blobs, image, digest, *compression)?;
    let shown = format!("/{}", path.display());
    for entry in tar.entries().map_err(|e| read_err(image, digest, e))? {
        let entry = entry.map_err(|e| read_err(image, digest, e))?;
        let p = entry.path().map_err(|e| read_err(image, digest, e))?;
        if confine(&p).as_deref() == Some(at.as_path()) {
            let bytes = read_wasm(image, entry, max, &shown)?;
            return Ok(bytes.map(|bytes| EntryWasm { path: shown, bytes }));
        }
    }
    Ok(None)
}

impl Union {
    /// Adds a layer beneath those added before: what they hold, hide or make opaque wins.
    fn add_layer<R: Read>(
        &mut self,
        index: usize,
        tar: &mut tar::Archive<R>,
    ) -> Result<(), String> {
        let err = |e: std::io::Error| e.to_string();
        let mut hidden = HashSet::new();
        let mut opaque = HashSet::new();
        for entry in tar.entries().map_err(err)? {
            let entry = entry.map_err(err)?;
            let Some(path) = confine(&entry.path().map_err(err)?) else {
                continue;
            };
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let parent = path.parent().unwrap_or(Path::new("")).to_path_buf();
            if name == ".wh..wh..opq" {
                opaque.insert(parent);
                continue;
            }
            if let Some(gone) = name.strip_prefix(".wh.") {
                hidden.insert(parent.join(gone));
                continue;
            }
            if self.entries.contains_key(&path) || self.covered(&path) {
                continue;
            }
            let kind = match entry.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => Kind::File,
                tar::EntryType::Directory => Kind::Dir,
                tar::EntryType::Symlink => match entry.link_name().map_err(err)? {
                    Some(t) => Kind::Link(t.into_owned()),
                    None => Kind::Other,
                },
                // A hard link names an earlier entry of its layer: followed as a link.
                tar::EntryType::Link => match entry.link_name().map_err(err)? {
                    Some(t) => Kind::Link(Path::new("/").join(t)),
                    None => Kind::Other,
                },
                _ => Kind::Other,
            };
            if self.entries.len() >= MAX_ENTRIES {
                return Err(format!("the layers hold more than {MAX_ENTRIES} entries"));
            }
            self.entries.insert(path, (index, kind));
        }
        // A whiteout or opaque directory hides what the layers beneath hold, not its own layer.
        for p in hidden {
            self.entries.entry(p).or_insert((index, Kind::Other));
        }
        for d in opaque {
            self.entries
                .insert(d.join(".wh..wh..opq"), (index, Kind::Other));
        }
        Ok(())
    }

    /// Whether an upper layer hides `path`: a non-directory, or an opaque directory, above it.
    fn covered(&self, path: &Path) -> bool {
        path.ancestors().skip(1).any(|a| {
            matches!(self.entries.get(a), Some((_, k)) if *k != Kind::Dir)
                || self.entries.contains_key(&a.join(".wh..wh..opq"))
        })
    }

    /// The regular file `path` (relative to the root) names, following links beneath the root:
    /// its layer and its path there.
    fn resolve(&self, path: &Path) -> Option<(usize, PathBuf)> {
        let mut todo: Vec<PathBuf> = path
            .components()
            .rev()
            .map(|c| PathBuf::from(c.as_os_str()))
            .collect();
        let mut at = PathBuf::new();
        let mut links = 0;
        while let Some(c) = todo.pop() {
            match c.to_str() {
                Some("/") | Some(".") => continue,
                Some("..") => {
                    at.pop();
                    continue;
                }
                _ => {}
            }
            let next = at.join(&c);
            match self.entries.get(&next) {
                Some((_, Kind::Link(target))) => {
                    links += 1;
                    if links > MAX_LINKS {
                        return None;
                    }
                    if target.is_absolute() {
                        at = PathBuf::new();
                    }
                    todo.extend(
                        target
                            .components()
                            .rev()
                            .map(|c| PathBuf::from(c.as_os_str())),
                    );
                }
                Some((layer, Kind::File)) if todo.is_empty() => return Some((*layer, next)),
                Some((_, Kind::File | Kind::Other)) => return None,
                // A directory, or one only implied by the paths beneath it.
                Some((_, Kind::Dir)) => at = next,
                None if todo.is_empty() => return None,
                None => at = next,
            }
        }
        None
    }
}

/// The paths (relative to the root) the entrypoint may name: a path as is (relative to the
/// working directory), a bare name in each directory of the config's `PATH`, as runc looks.
fn candidates(image: &Image) -> Vec<PathBuf> {
    let Some(arg0) = image.arg0() else {
        return Vec::new();
    };
    let process = image.process();
    // `PATH#export` names an export of the module at PATH.
    let arg0 = arg0.split('#').next().unwrap_or(arg0);
    let cwd = process.cwd;
    let rel = |p: &str| {
        Path::new(cwd)
            .join(p)
            .strip_prefix("/")
            .map(Path::to_path_buf)
    };
    if arg0.contains('/') {
        return rel(arg0).into_iter().collect();
    }
    let path = process
        .env
        .iter()
        .filter_map(|v| v.strip_prefix("PATH="))
        .next()
        .unwrap_or(DEFAULT_PATH);
    path.split(':')
        .filter(|d| d.starts_with('/'))
        .filter_map(|d| rel(&format!("{d}/{arg0}")).ok())
        .collect()
}

/// A tar entry's path relative to the root, as unpacking confines it (`None` for the root or a
/// path that climbs with `..`).
fn confine(p: &Path) -> Option<PathBuf> {
    crate::unpack::confine(p).ok().flatten()
}

/// The image's layers: digest and compression, bottom first.
fn layers(image: &Image) -> Result<Vec<(Digest, Option<Compression>)>, ImageError> {
    image
        .manifest
        .layers()
        .iter()
        .map(|l| {
            let d = crate::oci::digest(l).map_err(|e| ImageError::Malformed {
                image: image.name.clone(),
                what: "layer".into(),
                reason: e.to_string(),
            })?;
            Ok((d, Compression::from_media_type(l.media_type().as_ref())))
        })
        .collect()
}

fn open_layer<'a>(
    blobs: &'a dyn Blobs,
    image: &Image,
    digest: &Digest,
    compression: Option<Compression>,
) -> Result<tar::Archive<Box<dyn Read + 'a>>, ImageError> {
    let blob = blobs
        .open_blob(digest)
        .map_err(ImageError::store(&image.name))?;
    let tar = decompress(blob, compression).map_err(|e| read_err(image, digest, e))?;
    Ok(tar::Archive::new(tar))
}

fn read_err(image: &Image, digest: &Digest, e: std::io::Error) -> ImageError {
    ImageError::Malformed {
        image: image.name.clone(),
        what: format!("layer {digest}"),
        reason: e.to_string(),
    }
}

/// Reads `r` if it is wasm (`None` if it is not), refusing more than `max` bytes.
fn read_wasm(
    image: &Image,
    r: impl Read,
    max: u64,
    path: &str,
) -> Result<Option<Vec<u8>>, ImageError> {
    let bad = |reason: String| ImageError::Malformed {
        image: image.name.clone(),
        what: path.into(),
        reason,
    };
    let mut r = r.take(max.saturating_add(1));
    let mut bytes = vec![0u8; 8];
    let mut head = 0;
    while head < bytes.len() {
        match r.read(&mut bytes[head..]).map_err(|e| bad(e.to_string()))? {
            0 => break,
            n => head += n,
        }
    }
    bytes.truncate(head);
    if !is_wasm(&bytes) {
        return Ok(None);
    }
    r.read_to_end(&mut bytes).map_err(|e| bad(e.to_string()))?;
    if bytes.len() as u64 > max {
        return Err(bad(format!("larger than {max} bytes")));
    }
    Ok(Some(bytes))
}

#[cfg(test)]
mod tests;
