//! `openat2(2)` as every confined path resolution here calls it: retried while the kernel reports
//! that a rename or mount somewhere in the system raced the walk. With `RESOLVE_BENEATH` or
//! `RESOLVE_IN_ROOT`, Linux returns `EAGAIN` whenever any rename or mount happens during a lookup
//! that goes through `..`, and asks the caller to retry; under concurrent containers (each
//! building a mount tree) that is common. [`open_in_root`] resolves a path as a chroot would
//! (absolute links from the root, `..` stopping there), in the kernel where it can
//! (`RESOLVE_IN_ROOT`, Linux 5.6) and by a walk of its own where it cannot. A leaf.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// Most tries of one lookup before its `EAGAIN` is returned (a lookup only races while others
/// rename or mount; this bounds the work one lookup can be made to do).
const MOST_TRIES: usize = 64;

/// `openat2(dir, path, flags, mode, resolve)`, retried on `EAGAIN`.
pub(crate) fn openat2<P: rustix::path::Arg + Copy>(
    dir: BorrowedFd<'_>,
    path: P,
    flags: OFlags,
    mode: Mode,
    resolve: ResolveFlags,
) -> rustix::io::Result<OwnedFd> {
    let mut tries = 1;
    loop {
        match rustix::fs::openat2(dir, path, flags, mode, resolve) {
            Err(Errno::AGAIN) if tries < MOST_TRIES => tries += 1,
            r => return r,
        }
    }
}

/// Most symbolic links one walk follows (Linux's `MAXSYMLINKS`).
const MAX_LINKS: usize = 40;

/// Opens `path` beneath the directory `root` as if `root` were `/`: absolute symbolic links
/// start again from `root`, `..` never climbs above it, magic links (`/proc/*/fd`) are refused.
/// `flags` are `openat(2)`'s (`O_NOFOLLOW` is honoured for the last component).
pub(crate) fn open_in_root(
    root: BorrowedFd<'_>,
    path: &Path,
    flags: OFlags,
) -> rustix::io::Result<OwnedFd> {
    let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    match openat2(root, path, flags | OFlags::CLOEXEC, Mode::empty(), resolve) {
        Err(Errno::NOSYS) => walk_in_root(root, path, flags),
        r => r,
    }
}

/// [`open_in_root`] without `openat2`: each component opened with `O_NOFOLLOW` from the
/// directory reached so far, each link read and its target walked in turn.
fn walk_in_root(root: BorrowedFd<'_>, path: &Path, flags: OFlags) -> rustix::io::Result<OwnedFd> {
    let mut todo: Vec<PathBuf> = components(path);
    // The directories walked through, the root first: `..` pops one.
    let mut dirs: Vec<OwnedFd> = vec![rustix::fs::openat(
        root,
        ".",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?];
    let mut links = 0;
    while let Some(c) = todo.pop() {
        let name = c.as_os_str();
        if name == ".." {
            if dirs.len() > 1 {
                dirs.pop();
            }
            continue;
        }
        let here = dirs.last().expect("the root").as_fd();
        let last = todo.is_empty();
        let fd = rustix::fs::openat(
            here,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let stat = rustix::fs::fstat(&fd)?;
        match rustix::fs::FileType::from_raw_mode(stat.st_mode) {
            rustix::fs::FileType::Symlink if !(last && flags.contains(OFlags::NOFOLLOW)) => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(Errno::LOOP);
                }
                let target = rustix::fs::readlinkat(here, name, Vec::new())?;
                let target = Path::new(OsStr::from_bytes(target.as_bytes()));
                if target.is_absolute() {
                    dirs.truncate(1);
                }
                todo.extend(components(target));
            }
            rustix::fs::FileType::Directory if !last => dirs.push(fd),
            _ if last => {
                return rustix::fs::openat(
                    here,
                    name,
                    flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                );
            }
            _ => return Err(Errno::NOTDIR),
        }
    }
    // The path named a directory (or the root itself): open the one reached.
    rustix::fs::openat(
        dirs.last().expect("the root"),
        ".",
        flags | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// `path`'s components to walk, last first (`/` and `.` dropped, `..` kept).
fn components(path: &Path) -> Vec<PathBuf> {
    path.components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(PathBuf::from(n)),
            Component::ParentDir => Some(PathBuf::from("..")),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_lookup_resolves_as_openat2_does() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("a")).unwrap();
        let root = std::fs::File::open(dir.path()).unwrap();
        let beneath = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
        assert!(openat2(root.as_fd(), "a/../a", OFlags::PATH, Mode::empty(), beneath).is_ok());
        assert_eq!(
            openat2(root.as_fd(), "../x", OFlags::PATH, Mode::empty(), beneath).unwrap_err(),
            Errno::XDEV
        );
    }

    /// A rootfs laid out as distributions lay theirs: absolute links between its directories.
    fn distro() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::create_dir_all(p.join("usr/local/bin")).unwrap();
        std::fs::create_dir_all(p.join("usr/bin")).unwrap();
        std::fs::create_dir_all(p.join("etc/alternatives")).unwrap();
        std::fs::write(p.join("usr/local/bin/python3.12.wasm"), "py").unwrap();
        let link = |t: &str, at: &str| std::os::unix::fs::symlink(t, p.join(at)).unwrap();
        link("/usr/local/bin/python3.12.wasm", "usr/bin/python3");
        link("/usr/bin/python3", "etc/alternatives/python");
        link(
            "/../../../../usr/local/bin/python3.12.wasm",
            "usr/bin/climb",
        );
        link("/etc/passwd", "usr/bin/passwd");
        link("/loop", "loop");
        d
    }

    #[test]
    fn absolute_links_resolve_inside_the_root_in_the_kernel_and_in_the_walk() {
        use std::io::Read;
        let d = distro();
        let root = std::fs::File::open(d.path()).unwrap();
        let read = |fd: rustix::io::Result<OwnedFd>| -> Result<String, Errno> {
            let mut s = String::new();
            std::fs::File::from(fd?).read_to_string(&mut s).unwrap();
            Ok(s)
        };
        let kernel = |p: &str| read(open_in_root(root.as_fd(), Path::new(p), OFlags::RDONLY));
        let walk = |p: &str| read(walk_in_root(root.as_fd(), Path::new(p), OFlags::RDONLY));
        for open in [&kernel as &dyn Fn(&str) -> Result<String, Errno>, &walk] {
            assert_eq!(open("usr/bin/python3"), Ok("py".into()));
            assert_eq!(open("/etc/alternatives/python"), Ok("py".into()));
            // `..` through an absolute link stops at the root.
            assert_eq!(open("usr/bin/climb"), Ok("py".into()));
            assert_eq!(open("../../usr/bin/python3"), Ok("py".into()));
            // A link to a file of the host's names the rootfs's, which is missing.
            assert_eq!(open("usr/bin/passwd"), Err(Errno::NOENT));
            assert_eq!(open("loop"), Err(Errno::LOOP));
            assert_eq!(open("usr/local/bin/python3.12.wasm/x"), Err(Errno::NOTDIR));
        }
        // O_NOFOLLOW opens the last link itself, as the kernel does.
        assert_eq!(
            walk_in_root(
                root.as_fd(),
                Path::new("usr/bin/python3"),
                OFlags::PATH | OFlags::NOFOLLOW
            )
            .and_then(|fd| rustix::fs::fstat(&fd))
            .map(|st| rustix::fs::FileType::from_raw_mode(st.st_mode)),
            Ok(rustix::fs::FileType::Symlink)
        );
    }
}
