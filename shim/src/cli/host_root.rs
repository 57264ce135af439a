//! Files of a host reached beneath its root (`--host-root`): every path, and every symbolic link
//! on the way (the last one too), resolved as if that root were `/` (`openat2(RESOLVE_IN_ROOT)`);
//! a file read only when it is a regular file of bounded size, and written atomically in place of
//! a link's target, never of the link.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// How every path is resolved: beneath the root, never through `/proc`'s magic links.
const RESOLVE: ResolveFlags = ResolveFlags::IN_ROOT.union(ResolveFlags::NO_MAGICLINKS);
/// How many symbolic links one path may go through (the kernel's own limit).
const MAX_LINKS: usize = 40;

/// A host's root directory, opened once.
#[derive(Debug)]
pub struct HostRoot {
    fd: OwnedFd,
    path: PathBuf,
}

/// Why a file was not read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Not a regular file (a FIFO would block the reader, a device never ends).
    #[error("it is {0}, not a regular file")]
    NotRegular(&'static str),
    /// Larger than the limit given.
    #[error("it is larger than {limit} bytes{}", .size.map(|s| format!(" ({s} bytes)")).unwrap_or_default())]
    TooLarge {
        /// Its size, when known before reading.
        size: Option<u64>,
        /// The limit.
        limit: u64,
    },
    /// The read itself failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl HostRoot {
    /// Opens the directory `path` as a host's root (`/` for this machine's own).
    pub fn open(path: &Path) -> Result<Self> {
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(std::io::Error::from)
        .with_context(|| format!("opening the host's root {}", path.display()))?;
        Ok(Self {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The file the host path `path` (absolute, in the host's terms) names: each symbolic link on
    /// the way and at its end followed beneath the root, an absolute link's target taken from the
    /// root. The file itself need not exist (nor its directory).
    pub fn file(&self, path: &Path) -> Result<HostFile<'_>> {
        let given = beneath(path)?;
        let mut rel = given.clone();
        for _ in 0..=MAX_LINKS {
            let (parent, name) = split(&rel)
                .with_context(|| format!("{}: names no file", self.path.join(&rel).display()))?;
            let dir = match self.open_dir(parent) {
                Ok(d) => d,
                Err(Errno::NOENT) => {
                    return Ok(HostFile {
                        root: self,
                        given,
                        rel,
                        dir: None,
                        name,
                    });
                }
                Err(e) => {
                    return Err(std::io::Error::from(e))
                        .with_context(|| format!("opening {}", self.path.join(parent).display()));
                }
            };
            let target = match rustix::fs::readlinkat(&dir, &name, Vec::new()) {
                Ok(t) => PathBuf::from(OsString::from_vec(t.into_bytes())),
                // Not a link (or nothing there): this is the file.
                Err(Errno::INVAL | Errno::NOENT) => {
                    let rel = self.beneath_root(&dir).map_or(rel, |d| d.join(&name));
                    return Ok(HostFile {
                        root: self,
                        given,
                        rel,
                        dir: Some(dir),
                        name,
                    });
                }
                Err(e) => {
                    return Err(std::io::Error::from(e)).with_context(|| {
                        format!("reading the link {}", self.path.join(&rel).display())
                    });
                }
            };
            // A relative target is taken from the link's directory, as the kernel does: the
            // joined path is resolved by the kernel too, `..` and links included.
            rel = if target.is_absolute() {
                beneath(&target)?
            } else {
                parent.join(target)
            };
        }
        bail!(
            "{}: more than {MAX_LINKS} symbolic links",
            self.path.join(&given).display()
        )
    }

    /// Where the open directory `dir` is beneath the root, without `..` or links, for messages
    /// (from `/proc`; `None` without it).
    fn beneath_root(&self, dir: &OwnedFd) -> Option<PathBuf> {
        let real = |fd: &OwnedFd| {
            std::fs::read_link(format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd())).ok()
        };
        Some(real(dir)?.strip_prefix(real(&self.fd)?).ok()?.to_path_buf())
    }

    /// The directory `rel` beneath the root, opened for reading.
    fn open_dir(&self, rel: &Path) -> rustix::io::Result<OwnedFd> {
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        rustix::fs::openat2(
            &self.fd,
            rel,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            RESOLVE,
        )
    }

    /// The directory `rel` beneath the root, made (mode 0755, with its missing parents) if absent.
    fn make_dir(&self, rel: &Path) -> std::io::Result<OwnedFd> {
        match self.open_dir(rel) {
            Err(Errno::NOENT) => {}
            r => return r.map_err(Into::into),
        }
        let mut cur = PathBuf::new();
        for c in rel.components() {
            let parent = self.open_dir(&cur)?;
            cur.push(c);
            if let Component::Normal(name) = c {
                match rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(self.open_dir(rel)?)
    }
}

/// `path` (absolute) as a path beneath a root.
fn beneath(path: &Path) -> Result<PathBuf> {
    match path.strip_prefix("/") {
        Ok(p) => Ok(p.to_path_buf()),
        Err(_) => bail!("{} is not an absolute path", path.display()),
    }
}

/// `rel`'s directory and last component, which must name an entry (not `.` or `..`).
fn split(rel: &Path) -> Option<(&Path, OsString)> {
    match rel.components().next_back()? {
        Component::Normal(name) => Some((rel.parent()?, name.to_os_string())),
        _ => None,
    }
}

/// A file of the host, resolved: the directory it is in, opened, and its name there.
#[derive(Debug)]
pub struct HostFile<'r> {
    root: &'r HostRoot,
    /// The path asked for, beneath the root.
    given: PathBuf,
    /// The path it resolved to, beneath the root (no link at its end).
    rel: PathBuf,
    /// Its directory; `None` when that does not exist yet.
    dir: Option<OwnedFd>,
    name: OsString,
}

impl std::fmt::Display for HostFile<'_> {
    /// The path asked for, and where its links led when they led elsewhere, as this process sees
    /// them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.root.path.join(&self.given).display())?;
        if self.rel != self.given {
            write!(f, " (-> {})", self.root.path.join(&self.rel).display())?;
        }
        Ok(())
    }
}

impl HostFile<'_> {
    /// Where the file is (its links followed), as this process sees it.
    pub fn path(&self) -> PathBuf {
        self.root.path.join(&self.rel)
    }

    /// Whether anything is there.
    pub fn exists(&self) -> bool {
        self.dir
            .as_ref()
            .is_some_and(|d| rustix::fs::statat(d, &self.name, AtFlags::SYMLINK_NOFOLLOW).is_ok())
    }

    /// The file's bytes, or `None` when nothing is there. Anything but a regular file is refused
    /// without waiting on it (a FIFO is opened non-blocking and never read), and so is a file of
    /// more than `limit` bytes, before reading when its size says so.
    pub fn read(&self, limit: u64) -> Result<Option<Vec<u8>>, ReadError> {
        let Some(dir) = &self.dir else {
            return Ok(None);
        };
        let fd = match rustix::fs::openat(
            dir,
            &self.name,
            OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            // Made a link after it was resolved.
            Err(Errno::LOOP) => return Err(ReadError::NotRegular("a symbolic link")),
            // A socket.
            Err(Errno::NXIO) => return Err(ReadError::NotRegular("a socket")),
            Err(e) => return Err(std::io::Error::from(e).into()),
        };
        let st = rustix::fs::fstat(&fd).map_err(std::io::Error::from)?;
        let kind = match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => None,
            FileType::Directory => Some("a directory"),
            FileType::Fifo => Some("a FIFO"),
            FileType::CharacterDevice => Some("a character device"),
            FileType::BlockDevice => Some("a block device"),
            FileType::Socket => Some("a socket"),
            FileType::Symlink => Some("a symbolic link"),
            FileType::Unknown => Some("of an unknown type"),
        };
        if let Some(kind) = kind {
            return Err(ReadError::NotRegular(kind));
        }
        let size = st.st_size as u64;
        if size > limit {
            return Err(ReadError::TooLarge {
                size: Some(size),
                limit,
            });
        }
        let mut bytes = Vec::with_capacity(size as usize);
        // It may grow while read: never past the limit.
        std::fs::File::from(fd)
            .take(limit + 1)
            .read_to_end(&mut bytes)?;
        if bytes.len() as u64 > limit {
            return Err(ReadError::TooLarge { size: None, limit });
        }
        Ok(Some(bytes))
    }

    /// Whether the file holds exactly `bytes`.
    pub fn holds(&self, bytes: &[u8]) -> bool {
        matches!(self.read(bytes.len() as u64), Ok(Some(b)) if b == bytes)
    }

    /// Writes `bytes` to the file atomically: a temporary file beside it (its directories made if
    /// missing), synced, renamed over it, then the directory synced. An existing file keeps its
    /// mode; a new one gets `mode`.
    pub fn write_atomically(&self, bytes: &[u8], mode: u32) -> Result<()> {
        let made;
        let dir = match &self.dir {
            Some(d) => d,
            None => {
                let parent = self.rel.parent().unwrap_or(Path::new(""));
                made = self.root.make_dir(parent).with_context(|| {
                    format!("creating {}", self.root.path.join(parent).display())
                })?;
                &made
            }
        };
        let mode = match rustix::fs::statat(dir, &self.name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st.st_mode & 0o7777,
            Err(_) => mode,
        };
        let (tmp, fd) = temp_file(dir).with_context(|| format!("creating a file beside {self}"))?;
        let written = (|| -> std::io::Result<()> {
            let mut f = std::fs::File::from(fd);
            f.write_all(bytes)?;
            rustix::fs::fchmod(&f, Mode::from_raw_mode(mode))?;
            f.sync_all()?;
            rustix::fs::renameat(dir, &tmp, dir, &self.name)?;
            Ok(())
        })();
        if let Err(e) = written {
            let _ = rustix::fs::unlinkat(dir, &tmp, AtFlags::empty());
            return Err(e).with_context(|| format!("writing {self}"));
        }
        rustix::fs::fsync(dir)
            .map_err(std::io::Error::from)
            .with_context(|| format!("syncing the directory of {self}"))?;
        Ok(())
    }

    /// Removes the file (the link's target, when the path was a link).
    pub fn remove(&self) -> Result<()> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        rustix::fs::unlinkat(dir, &self.name, AtFlags::empty())
            .map_err(std::io::Error::from)
            .with_context(|| format!("removing {self}"))
    }
}

/// A new file in `dir` with a name of its own (`.wasmbox-install-*`), mode 0600.
fn temp_file(dir: impl AsFd) -> std::io::Result<(OsString, OwnedFd)> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    loop {
        let name = OsString::from(format!(
            ".wasmbox-install-{}-{nanos:x}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        match rustix::fs::openat(
            &dir,
            &name,
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        ) {
            Ok(fd) => return Ok((name, fd)),
            Err(Errno::EXIST) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn links_are_followed_beneath_the_root_and_writes_land_on_their_targets() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("etc/c")).unwrap();
        std::fs::create_dir_all(root.join("real")).unwrap();
        std::fs::write(root.join("real/config"), "host's\n").unwrap();
        symlink("/real/config", root.join("etc/c/config")).unwrap();
        // Relative, climbing past the root: clamped there.
        symlink("../../../../../../real/config", root.join("etc/c/rel")).unwrap();
        // To a file only this machine's root has: taken beneath the host's root, where it is not.
        let outside = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(outside.path(), "not the host's\n").unwrap();
        symlink(outside.path(), root.join("etc/c/out")).unwrap();

        let host = HostRoot::open(root).unwrap();
        for p in ["/etc/c/config", "/etc/c/rel"] {
            let f = host.file(Path::new(p)).unwrap();
            assert_eq!(f.rel, Path::new("real/config"), "{p}");
            assert_eq!(f.read(100).unwrap().unwrap(), b"host's\n");
            let shown = f.to_string();
            assert!(
                shown.starts_with(&root.join(&p[1..]).display().to_string()),
                "{shown}"
            );
            assert!(shown.ends_with("real/config)"), "{shown}");
        }
        let f = host.file(Path::new("/etc/c/out")).unwrap();
        assert_eq!(f.rel, beneath(outside.path()).unwrap());
        assert!(f.read(100).unwrap().is_none());
        assert!(!f.exists());
        f.write_atomically(b"new\n", 0o644).unwrap();
        assert_eq!(std::fs::read(outside.path()).unwrap(), b"not the host's\n");
        assert_eq!(
            std::fs::read(root.join(beneath(outside.path()).unwrap())).unwrap(),
            b"new\n"
        );

        let f = host.file(Path::new("/etc/c/config")).unwrap();
        f.write_atomically(b"edited\n", 0o600).unwrap();
        assert!(
            std::fs::symlink_metadata(root.join("etc/c/config"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(
            std::fs::read(root.join("real/config")).unwrap(),
            b"edited\n"
        );
        f.remove().unwrap();
        assert!(!root.join("real/config").exists());
        assert!(
            std::fs::symlink_metadata(root.join("etc/c/config"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }

    #[test]
    fn only_bounded_regular_files_are_read() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::write(root.join("big"), vec![b'x'; 11]).unwrap();
        std::fs::write(root.join("ok"), vec![b'x'; 10]).unwrap();
        std::fs::create_dir(root.join("dir")).unwrap();
        let host = HostRoot::open(root).unwrap();
        let read = |p: &str| host.file(Path::new(p)).unwrap().read(10);
        assert!(matches!(
            read("/big"),
            Err(ReadError::TooLarge {
                size: Some(11),
                limit: 10
            })
        ));
        assert_eq!(read("/ok").unwrap().unwrap().len(), 10);
        assert!(matches!(
            read("/dir"),
            Err(ReadError::NotRegular("a directory"))
        ));
        assert!(read("/none").unwrap().is_none());
        assert!(read("/no/such/dir").unwrap().is_none());
        assert!(host.file(Path::new("/ok/..")).is_err());
    }
}
