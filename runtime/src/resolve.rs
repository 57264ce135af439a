//! `openat2(2)` as every confined path resolution here calls it: retried while the kernel reports
//! that a rename or mount somewhere in the system raced the walk. With `RESOLVE_BENEATH` or
//! `RESOLVE_IN_ROOT`, Linux returns `EAGAIN` whenever any rename or mount happens during a lookup
//! that goes through `..`, and asks the caller to retry; under concurrent containers (each
//! building a mount tree) that is common. [`open_in_root`] resolves a path as a chroot would
//! (absolute links from the root, `..` stopping there), in the kernel where it can
//! (`RESOLVE_IN_ROOT`, Linux 5.6) and by a walk of its own where it cannot. A guest's own
//! lookups go through absolute links so too: [`through_absolute_link`] says where one leads, and
//! [`holding`] which of the guest's directories holds that place. A leaf.

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

/// Where a guest's lookup of `path` from its directory `start` leads when it goes through an
/// absolute symbolic link, which only the guest's root `root` can resolve (a lookup beneath
/// `start` refuses it as an escape): the guest path reached, absolute, with no `.`, `..` or link
/// left in it but a last component not to be `follow`ed. The walk goes as a chroot's: from
/// `start` until an absolute link, from `root` after it, `..` stopping at the root. Once in the
/// root, a component that does not resolve ends the walk with the rest of the path as given
/// (its lookup then fails as it should). `None` when the path needs no root: it resolves
/// beneath `start`, fails there for another reason, or climbs above `start` without an absolute
/// link (refused, as before).
pub(crate) fn through_absolute_link(
    root: BorrowedFd<'_>,
    start: BorrowedFd<'_>,
    path: &Path,
    follow: bool,
) -> Option<PathBuf> {
    if path.is_absolute() || !escapes(start, path, follow) {
        return None;
    }
    let here = |fd: BorrowedFd<'_>| {
        rustix::fs::openat(
            fd,
            ".",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ok()
    };
    let mut todo = components(path);
    // The directories walked through (`start` first, or the root once an absolute link was
    // met), and, once in the root, their names.
    let mut dirs = vec![here(start)?];
    let mut names: Option<Vec<PathBuf>> = None;
    let mut links = 0;
    while let Some(c) = todo.pop() {
        let name = c.as_os_str();
        if name == ".." {
            match &mut names {
                Some(n) => {
                    if n.pop().is_some() {
                        dirs.pop();
                    }
                }
                None if dirs.len() > 1 => drop(dirs.pop()),
                None => return None,
            }
            continue;
        }
        let last = todo.is_empty();
        let at = dirs.last().expect("a directory").as_fd();
        let entry = rustix::fs::openat(
            at,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .and_then(|fd| rustix::fs::fstat(&fd).map(|st| (fd, st)));
        let Ok((fd, st)) = entry else {
            let n = names?;
            return Some(joined(
                n.into_iter().chain([c]).chain(todo.into_iter().rev()),
            ));
        };
        match rustix::fs::FileType::from_raw_mode(st.st_mode) {
            rustix::fs::FileType::Symlink if follow || !last => {
                links += 1;
                if links > MAX_LINKS {
                    return None;
                }
                let target = rustix::fs::readlinkat(at, name, Vec::new()).ok()?;
                let target = Path::new(OsStr::from_bytes(target.as_bytes()));
                if target.is_absolute() {
                    dirs = vec![here(root)?];
                    names = Some(Vec::new());
                }
                todo.extend(components(target));
            }
            rustix::fs::FileType::Directory if !last => {
                dirs.push(fd);
                if let Some(n) = &mut names {
                    n.push(c);
                }
            }
            _ => {
                let n = names?;
                return Some(joined(
                    n.into_iter().chain([c]).chain(todo.into_iter().rev()),
                ));
            }
        }
    }
    names.map(|n| joined(n.into_iter()))
}

/// Whether a guest's lookup of `path` from `start` is refused beneath it as an escape (`EXDEV`):
/// it climbs above `start` or goes through an absolute link. The cheap question
/// [`through_absolute_link`] asks first, for callers to ask before they find the root.
pub(crate) fn escapes(start: BorrowedFd<'_>, path: &Path, follow: bool) -> bool {
    let nofollow = if follow {
        OFlags::empty()
    } else {
        OFlags::NOFOLLOW
    };
    let beneath = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
    let flags = OFlags::PATH | OFlags::CLOEXEC | nofollow;
    matches!(
        openat2(start, path, flags, Mode::empty(), beneath),
        Err(Errno::XDEV)
    )
}

/// `/` and `parts` joined.
fn joined(parts: impl Iterator<Item = PathBuf>) -> PathBuf {
    let mut p = PathBuf::from("/");
    p.extend(parts);
    p
}

/// Which of `dirs` (guest paths of directories, as preopened) holds guest path `path`: the
/// deepest one above it, and `path` relative to it (`.` for the directory itself).
pub(crate) fn holding<'a>(
    dirs: impl IntoIterator<Item = &'a str>,
    path: &'a str,
) -> Option<(usize, &'a str)> {
    let within =
        |g: &str| g == "/" || path == g || path.strip_prefix(g).is_some_and(|r| r.starts_with('/'));
    let (i, g) = dirs
        .into_iter()
        .enumerate()
        .filter(|(_, g)| within(g))
        .max_by_key(|(_, g)| g.len())?;
    let rel = path[if g == "/" { 0 } else { g.len() }..].trim_start_matches('/');
    Some((i, if rel.is_empty() { "." } else { rel }))
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

    #[test]
    fn a_guests_lookup_through_an_absolute_link_is_said_where_it_leads_in_the_root() {
        let d = distro();
        let p = d.path();
        std::os::unix::fs::symlink("/usr/local", p.join("lib")).unwrap();
        let root = std::fs::File::open(p).unwrap();
        let bin = std::fs::File::open(p.join("usr/bin")).unwrap();
        let from = |start: &std::fs::File, path: &str, follow: bool| {
            through_absolute_link(root.as_fd(), start.as_fd(), Path::new(path), follow)
                .map(|p| p.display().to_string())
        };
        let wasm = Some("/usr/local/bin/python3.12.wasm".to_string());
        assert_eq!(from(&root, "usr/bin/python3", true), wasm);
        assert_eq!(from(&bin, "python3", true), wasm);
        assert_eq!(from(&root, "etc/alternatives/python", true), wasm);
        // `..` through an absolute link stops at the root.
        assert_eq!(from(&root, "usr/bin/climb", true), wasm);
        assert_eq!(from(&root, "lib/../../../etc", true), Some("/etc".into()));
        assert_eq!(from(&root, "lib/../etc", true), Some("/usr/etc".into()));
        // What does not resolve in the root is left as given, for its lookup to fail.
        assert_eq!(
            from(&root, "lib/missing/../x", true),
            Some("/usr/local/missing/../x".into())
        );
        // No absolute link on the way, or the last one not followed: nothing to say.
        assert_eq!(from(&root, "usr/local/bin/python3.12.wasm", true), None);
        assert_eq!(from(&root, "usr/bin/python3", false), None);
        assert_eq!(from(&root, "missing", true), None);
        // Climbing above the directory without an absolute link is refused as before.
        assert_eq!(from(&bin, "../../etc", true), None);
        assert_eq!(from(&root, "../x", true), None);
        assert_eq!(from(&root, "loop", true), None);
        assert_eq!(from(&root, "/usr/bin/python3", true), None);
    }

    #[test]
    fn the_deepest_directory_above_a_path_holds_it() {
        let dirs = ["/", "/data", "/dev"];
        assert_eq!(holding(dirs, "/data/x/y"), Some((1, "x/y")));
        assert_eq!(holding(dirs, "/dev/null"), Some((2, "null")));
        assert_eq!(holding(dirs, "/datax"), Some((0, "datax")));
        assert_eq!(holding(dirs, "/data"), Some((1, ".")));
        assert_eq!(holding(["/data"], "/etc/x"), None);
    }
}
