//! The compiled-code cache: native code that wasmbox compiled itself, keyed by the wasm's sha256 and
//! the engine's compatibility hash, written atomically and loaded with `deserialize_file` (mmap, so
//! processes running the same wasm share its code pages).
//!
//! This is the only place precompiled native code is ever loaded from, so the cache refuses a
//! directory or file that anyone but the current user could have written.

use std::fs::{self, File, OpenOptions};
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Feeds `Hash` output into sha256, so the engine's compatibility hash is stable across processes.
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        // Read through the digest; `Hash` implementations only write.
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// The default cache directory: `/var/cache/wasmbox` for root, else `$XDG_CACHE_HOME/wasmbox` or
/// `~/.cache/wasmbox`.
pub fn default_dir() -> Option<PathBuf> {
    if rustix_euid() == 0 {
        return Some(PathBuf::from("/var/cache/wasmbox"));
    }
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("wasmbox"))
}

fn rustix_euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    #[allow(unsafe_code, reason = "geteuid is always safe")]
    unsafe {
        libc::geteuid()
    }
}

/// Kind of artifact, part of the file name so a module and a component never alias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArtifactKind {
    /// A core module.
    Module,
    /// A component.
    Component,
}

/// A directory of compiled artifacts.
#[derive(Debug, Clone)]
pub struct ModuleCache {
    dir: PathBuf,
    engine_key: String,
}

impl ModuleCache {
    /// Opens (creating with mode 0700) the cache at `dir` for `engine`.
    ///
    /// Refuses a directory that is not owned by the current user or that others may write to.
    pub fn open(dir: &Path, engine: &wasmtime::Engine) -> Result<Self> {
        let io = |source| Error::CacheIo {
            path: dir.to_path_buf(),
            source,
        };
        if !dir.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io)?;
        }
        let meta = fs::symlink_metadata(dir).map_err(io)?;
        check_owned(dir, &meta, true)?;
        let mut h = ShaHasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut h);
        let engine_key = hex::encode(&h.0.finalize()[..8]);
        Ok(Self {
            dir: dir.to_path_buf(),
            engine_key,
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of the artifact for wasm whose sha256 is `digest`.
    pub fn path_for(&self, digest: &[u8; 32], kind: ArtifactKind) -> PathBuf {
        let ext = match kind {
            ArtifactKind::Module => "module",
            ArtifactKind::Component => "component",
        };
        self.dir.join(format!(
            "{}-{}.{ext}.cwasm",
            hex::encode(digest),
            self.engine_key
        ))
    }

    /// Returns the path of a cached artifact if one exists and is safe to load.
    pub fn lookup(&self, digest: &[u8; 32], kind: ArtifactKind) -> Result<Option<PathBuf>> {
        let path = self.path_for(digest, kind);
        match fs::symlink_metadata(&path) {
            Ok(meta) => {
                check_owned(&path, &meta, false)?;
                Ok(Some(path))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::CacheIo { path, source }),
        }
    }

    /// Stores `bytes` as the artifact for `digest`: temp file (0600), fsync, rename, fsync dir.
    pub fn store(&self, digest: &[u8; 32], kind: ArtifactKind, bytes: &[u8]) -> Result<PathBuf> {
        let path = self.path_for(digest, kind);
        let tmp = self.dir.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            hex::encode(&digest[..8])
        ));
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| Error::CacheIo { path: p, source }
        };
        let write = || -> std::io::Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io(&path)(e)
        })?;
        Ok(path)
    }

    /// Removes an artifact that failed to load (stale or damaged).
    pub fn evict(&self, path: &Path) {
        if let Err(e) = fs::remove_file(path) {
            tracing::warn!(path = %path.display(), error = %e, "could not evict cache entry");
        }
    }
}

fn check_owned(path: &Path, meta: &fs::Metadata, dir: bool) -> Result<()> {
    let bad = |reason: String| Error::UnsafeCache {
        path: path.to_path_buf(),
        reason,
    };
    if meta.file_type().is_symlink() {
        return Err(bad("is a symbolic link".into()));
    }
    if dir && !meta.is_dir() {
        return Err(bad("is not a directory".into()));
    }
    if !dir && !meta.is_file() {
        return Err(bad("is not a regular file".into()));
    }
    let euid = rustix_euid();
    if meta.uid() != euid {
        return Err(bad(format!(
            "owned by uid {}, not by the current user (uid {euid})",
            meta.uid()
        )));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(bad(format!(
            "mode {mode:o} lets other users write to it; use 0700 for the directory"
        )));
    }
    Ok(())
}

/// sha256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_atomically_with_private_modes() {
        let engine = wasmtime::Engine::default();
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("c");
        let cache = ModuleCache::open(&dir, &engine).unwrap();
        let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let d = sha256(b"x");
        assert!(cache.lookup(&d, ArtifactKind::Module).unwrap().is_none());
        let p = cache.store(&d, ArtifactKind::Module, b"abc").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"abc");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            cache.lookup(&d, ArtifactKind::Module).unwrap(),
            Some(p.clone())
        );
        assert!(cache.lookup(&d, ArtifactKind::Component).unwrap().is_none());
        // Only the artifact is left: no temp files.
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
    }

    #[test]
    fn refuses_writable_dir_and_files() {
        let engine = wasmtime::Engine::default();
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("c");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        let e = ModuleCache::open(&dir, &engine).unwrap_err().to_string();
        assert!(e.contains("other users write"), "{e}");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        let cache = ModuleCache::open(&dir, &engine).unwrap();
        let d = sha256(b"y");
        let p = cache.store(&d, ArtifactKind::Module, b"abc").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o666)).unwrap();
        let e = cache
            .lookup(&d, ArtifactKind::Module)
            .unwrap_err()
            .to_string();
        assert!(e.contains("other users write"), "{e}");
    }

    #[test]
    fn engine_key_is_stable() {
        let engine = wasmtime::Engine::default();
        let root = tempfile::tempdir().unwrap();
        let a = ModuleCache::open(root.path(), &engine).unwrap();
        let b = ModuleCache::open(root.path(), &wasmtime::Engine::default()).unwrap();
        assert_eq!(a.engine_key, b.engine_key);
    }
}
