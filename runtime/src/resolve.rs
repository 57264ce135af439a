//! `openat2(2)` as every confined path resolution here calls it: retried while the kernel reports
//! that a rename or mount somewhere in the system raced the walk. With `RESOLVE_BENEATH` or
//! `RESOLVE_IN_ROOT`, Linux returns `EAGAIN` whenever any rename or mount happens during a lookup
//! that goes through `..`, and asks the caller to retry; under concurrent containers (each
//! building a mount tree) that is common. A leaf.

use std::os::fd::{BorrowedFd, OwnedFd};

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
}
