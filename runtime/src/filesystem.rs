//! What a guest's filesystem is once its grants are opened: the preopens its WASI context gets
//! and what keeps them alive (the opened sources, the mount tree, the private scratch
//! directories). Built by `Runtime::filesystem` in `sandbox.rs`; a command's and a server's
//! guests take it alike.

use std::path::PathBuf;

/// A guest's directories: the opened sources, the private scratch directories and, with mount
/// trees on, the tree over them. Dropped in field order when the guest ends: the tree is
/// unmounted before the scratch directories are removed.
pub(crate) struct Filesystem {
    /// What the guest's WASI context preopens: a path naming the directory, its guest path,
    /// read-only.
    pub(crate) preopens: Vec<(PathBuf, String, bool)>,
    /// The working directory, when it is preopened of its own (see `preopen_cwd_first`).
    pub(crate) _cwd: Option<std::os::fd::OwnedFd>,
    pub(crate) _tree: Option<crate::mounts::MountTree>,
    pub(crate) _sources: Vec<crate::mounts::Source>,
    pub(crate) _scratch: Vec<tempfile::TempDir>,
    /// The devices of `/dev`, when it has them (this guest's own when single files are bound
    /// below it).
    pub(crate) _devices: Option<std::sync::Arc<crate::devices::DevDir>>,
}

impl Filesystem {
    /// Preview 1 has no call for the working directory, and a guest must see only the
    /// environment it was given, so a preview 1 guest whose working directory is not `/` gets
    /// it as its first preopen (descriptor 3), under its own guest path. That is where runtimes
    /// without a `PWD` put it (Go's `wasip1` takes the first preopen's name as its working
    /// directory); to wasi-libc it is one more name for a directory already granted, with the
    /// same access. The directory is looked up beneath the grant that holds it without
    /// following any symbolic link; one that does not resolve so is left out.
    pub(crate) fn preopen_cwd_first(&mut self, cwd: &str) {
        use rustix::fs::{Mode, OFlags, ResolveFlags};
        if cwd.is_empty() || cwd == "/" {
            return;
        }
        // A working directory that is itself a grant: that grant goes first.
        if let Some(i) = self.preopens.iter().position(|(_, g, _)| g == cwd) {
            let grant = self.preopens.remove(i);
            self.preopens.insert(0, grant);
            return;
        }
        let Some((host, rel, ro)) = self.grant_holding(cwd) else {
            return;
        };
        let opened = rustix::fs::open(
            &host,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .and_then(|grant| {
            crate::resolve::openat2(
                std::os::fd::AsFd::as_fd(&grant),
                rel.as_str(),
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS,
            )
        });
        match opened {
            Ok(fd) => {
                let path = PathBuf::from(format!(
                    "/proc/self/fd/{}",
                    std::os::fd::AsRawFd::as_raw_fd(&fd)
                ));
                self.preopens.insert(0, (path, cwd.to_string(), ro));
                self._cwd = Some(fd);
            }
            Err(e) => tracing::debug!(%cwd, error = %e, "working directory not preopened"),
        }
    }

    /// The grant that holds guest path `path` (the one mounted deepest above it): the path
    /// naming its directory, `path` relative to it, and whether it is read-only.
    fn grant_holding(&self, path: &str) -> Option<(PathBuf, String, bool)> {
        let (i, rel) =
            crate::resolve::holding(self.preopens.iter().map(|(_, g, _)| g.as_str()), path)?;
        let (host, _, ro) = &self.preopens[i];
        Some((host.clone(), rel.to_string(), *ro))
    }

    /// Reads the regular file at guest path `path` as the guest would find it: beneath the grant
    /// that holds it, following symbolic links only while they stay beneath it (a Kubernetes
    /// secret volume's links do), at most `most` bytes. Anything else (a path no grant holds, a
    /// FIFO, a device, a larger file) is refused.
    pub(crate) fn read_file(&self, path: &str, most: u64) -> std::io::Result<Vec<u8>> {
        use rustix::fs::{Mode, OFlags, ResolveFlags};
        use std::io::{Error, ErrorKind};
        let (host, rel, _) = self.grant_holding(path).ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                "no directory granted to the guest holds it",
            )
        })?;
        let grant = rustix::fs::open(
            &host,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let fd = crate::resolve::openat2(
            std::os::fd::AsFd::as_fd(&grant),
            rel.as_str(),
            OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
        )?;
        let file = std::fs::File::from(fd);
        read_regular(file, most)
    }
}

/// Reads an opened file whole if it is a regular file of at most `most` bytes.
pub(crate) fn read_regular(file: std::fs::File, most: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Error, ErrorKind, Read};
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(Error::new(ErrorKind::InvalidInput, "not a regular file"));
    }
    // Read to one byte past the bound, whatever the size said: a file may grow meanwhile.
    let mut bytes = Vec::with_capacity(meta.len().min(most) as usize);
    file.take(most + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > most {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("larger than {most} bytes"),
        ));
    }
    Ok(bytes)
}
