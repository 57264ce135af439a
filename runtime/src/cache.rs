//! The compiled-code cache: native code that wasmbox compiled itself, keyed by the wasm's sha256 and
//! the engine's compatibility hash, written atomically and loaded with `deserialize_file` (mmap, so
//! processes running the same wasm share its code pages).
//!
//! This is the only place precompiled native code is ever loaded from, so the cache refuses a
//! directory or file that anyone but the current user could have written, and every entry carries
//! a keyed MAC (HMAC-SHA256, appended to the file) that is checked before anything in it is
//! deserialized. The key lives beside the cache directory (`DIR.key`, mode 0600), never inside it,
//! and no grant may reach either (see [`crate::protect`]).
//!
//! The cache holds at most its cap ([`cap`]): writing an entry removes the least recently used
//! ones past it, never one a process has loaded.

pub mod cap;
pub mod lock;

use std::fs::{self, File, OpenOptions};
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
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

/// Length of the MAC trailer of every entry.
const MAC_LEN: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// A directory of compiled artifacts.
#[derive(Clone)]
pub struct ModuleCache {
    dir: PathBuf,
    engine_key: String,
    mac_key: [u8; 32],
    /// The most bytes the entries may hold together.
    max: u64,
}

impl std::fmt::Debug for ModuleCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModuleCache")
            .field("dir", &self.dir)
            .field("engine_key", &self.engine_key)
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

/// An entry found in the cache whose MAC checked out: the open file, positioned anywhere.
#[derive(Debug)]
pub struct Verified {
    /// Where it is.
    pub path: PathBuf,
    /// The open file, to deserialize from (the same one that was verified).
    pub file: File,
}

/// The key file of the cache at `dir`: `DIR.key`, beside the directory.
pub fn key_path(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(".key");
    dir.with_file_name(name)
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
        let mac_key = load_or_create_key(&key_path(dir))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            engine_key,
            mac_key,
            max: cap::DEFAULT_MAX,
        })
    }

    /// The same cache, holding at most `max` bytes.
    pub fn with_max(mut self, max: u64) -> Self {
        self.max = max;
        self
    }

    /// The key file.
    pub fn key_path(&self) -> PathBuf {
        key_path(&self.dir)
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

    /// Takes the compile lock of the entry for `digest` ([`lock`]), waiting for another process's
    /// compile of it at most until `until`.
    pub fn compile_lock(
        &self,
        digest: &[u8; 32],
        kind: ArtifactKind,
        until: Option<std::time::Instant>,
    ) -> lock::CompileLock {
        let entry = self.path_for(digest, kind);
        let name = entry.file_name().unwrap_or_default().to_string_lossy();
        lock::acquire(&lock::path_for(&self.dir, &name), until)
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

    /// Opens the cached artifact for `digest` and checks its MAC over the whole file. `Ok(None)`
    /// when there is none; [`Error::CacheTampered`] when its MAC does not match (it was not
    /// written by this cache's owner with this key). The file returned is the one verified, so
    /// nothing can be swapped in between the check and the load.
    pub fn open_verified(&self, digest: &[u8; 32], kind: ArtifactKind) -> Result<Option<Verified>> {
        let Some(path) = self.lookup(digest, kind)? else {
            return Ok(None);
        };
        let io = |source| Error::CacheIo {
            path: path.clone(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(io)?;
        check_owned(&path, &file.metadata().map_err(io)?, false)?;
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut &file, &mut bytes).map_err(io)?;
        let Some(body_len) = bytes.len().checked_sub(MAC_LEN) else {
            return Err(Error::CacheTampered { path });
        };
        let (body, tag) = bytes.split_at(body_len);
        if self.mac(&path, body).verify_slice(tag).is_err() {
            return Err(Error::CacheTampered { path });
        }
        cap::touch(&file);
        Ok(Some(Verified { path, file }))
    }

    /// The MAC of an entry: over the file's name (the wasm's digest, its kind, the engine) and
    /// its bytes, so an entry moved under another module's name fails too.
    fn mac(&self, path: &Path, bytes: &[u8]) -> HmacSha256 {
        let mut m = HmacSha256::new_from_slice(&self.mac_key).expect("HMAC takes any key length");
        let name = path.file_name().unwrap_or_default().as_encoded_bytes();
        m.update(&(name.len() as u64).to_le_bytes());
        m.update(name);
        m.update(bytes);
        m
    }

    /// Stores `bytes` as the artifact for `digest`, with its MAC appended: temp file (0600), fsync,
    /// rename, fsync dir. Then the least recently used entries past the cap are removed.
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
            // Exactly 0600 whatever the process's umask (a spec may set any).
            f.set_permissions(fs::Permissions::from_mode(0o600))?;
            f.write_all(bytes)?;
            f.write_all(&self.mac(&path, bytes).finalize().into_bytes())?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io(&path)(e)
        })?;
        match cap::trim(&self.dir, self.max, Some(&path)) {
            Ok(t) if t.removed > 0 => tracing::info!(
                removed = t.removed,
                freed = t.freed,
                left = t.total,
                in_use = t.busy,
                "compiled-code cache past its cap of {} bytes: least recently used entries removed",
                self.max
            ),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "could not keep the compiled-code cache under its cap")
            }
        }
        Ok(path)
    }

    /// Removes an artifact that failed to load (stale or damaged).
    pub fn evict(&self, path: &Path) {
        if let Err(e) = fs::remove_file(path) {
            tracing::warn!(path = %path.display(), error = %e, "could not evict cache entry");
        }
    }
}

/// Reads the cache's MAC key, creating it (32 random bytes, mode 0600) when there is none. A key
/// file that is not ours, is readable by others or has the wrong length is refused.
fn load_or_create_key(path: &Path) -> Result<[u8; 32]> {
    let io = |source| Error::CacheIo {
        path: path.to_path_buf(),
        source,
    };
    let read = || -> Result<Option<[u8; 32]>> {
        let f = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        let meta = f.metadata().map_err(io)?;
        check_owned(path, &meta, false)?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(Error::UnsafeCache {
                path: path.to_path_buf(),
                reason: format!(
                    "mode {:o} lets other users read the key; use 0600",
                    meta.permissions().mode() & 0o7777
                ),
            });
        }
        let mut key = Vec::new();
        std::io::Read::read_to_end(&mut &f, &mut key).map_err(io)?;
        key.try_into()
            .map(Some)
            .map_err(|k: Vec<u8>| Error::UnsafeCache {
                path: path.to_path_buf(),
                reason: format!("holds {} bytes, not a 32-byte key", k.len()),
            })
    };
    if let Some(key) = read()? {
        return Ok(key);
    }
    let mut key = [0u8; 32];
    std::io::Read::read_exact(&mut File::open("/dev/urandom").map_err(io)?, &mut key)
        .map_err(io)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".wasmbox-key-")
        .permissions(fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)
        .map_err(io)?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(io)?;
    tmp.as_file().write_all(&key).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    // A hard link creates the name only if it does not exist: two processes creating the key at
    // once agree on the one that landed first.
    match fs::hard_link(tmp.path(), path) {
        Ok(()) => {
            let _ = File::open(dir).and_then(|d| d.sync_all());
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            read()?.ok_or_else(|| io(std::io::ErrorKind::NotFound.into()))
        }
        Err(e) => Err(io(e)),
    }
}

/// Refuses a cache directory that is a link, not a directory, not the current user's, or
/// writable by others, as [`ModuleCache::open`] does.
pub fn check_dir(dir: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(dir).map_err(|source| Error::CacheIo {
        path: dir.to_path_buf(),
        source,
    })?;
    check_owned(dir, &meta, true)
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
        let stored = fs::read(&p).unwrap();
        assert_eq!(&stored[..3], b"abc");
        assert_eq!(stored.len(), 3 + MAC_LEN, "the MAC is appended");
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
    fn entries_are_verified_by_a_mac_over_name_and_bytes() {
        let engine = wasmtime::Engine::default();
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("c");
        let cache = ModuleCache::open(&dir, &engine).unwrap();
        let key = root.path().join("c.key");
        assert_eq!(
            fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let (a, b) = (sha256(b"a"), sha256(b"b"));
        let pa = cache.store(&a, ArtifactKind::Module, b"code of a").unwrap();
        let pb = cache.store(&b, ArtifactKind::Module, b"code of b").unwrap();
        assert!(
            cache
                .open_verified(&a, ArtifactKind::Module)
                .unwrap()
                .is_some()
        );
        // An entry moved under another module's name fails.
        fs::copy(&pa, &pb).unwrap();
        let e = cache.open_verified(&b, ArtifactKind::Module).unwrap_err();
        assert!(matches!(e, Error::CacheTampered { .. }), "{e}");
        // A changed byte fails; so does a file too short to hold a MAC.
        let mut bytes = fs::read(&pa).unwrap();
        bytes[0] ^= 1;
        fs::write(&pa, &bytes).unwrap();
        assert!(matches!(
            cache.open_verified(&a, ArtifactKind::Module),
            Err(Error::CacheTampered { .. })
        ));
        fs::write(&pa, b"x").unwrap();
        assert!(matches!(
            cache.open_verified(&a, ArtifactKind::Module),
            Err(Error::CacheTampered { .. })
        ));
        // Another process opening the cache reads the same key; a key others can read is refused.
        let again = ModuleCache::open(&dir, &engine).unwrap();
        assert_eq!(again.mac_key, cache.mac_key);
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        let e = ModuleCache::open(&dir, &engine).unwrap_err().to_string();
        assert!(e.contains("read the key"), "{e}");
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
