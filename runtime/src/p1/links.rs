//! Preview 1 lookups through absolute symbolic links, resolved inside the guest's root as a
//! chroot resolves them ([`crate::resolve::through_absolute_link`]): `path_open` and
//! `path_filestat_get` of such a path are made from the directory the guest holds that holds
//! the place the link leads to (the deepest of its preopens above it), with the path relative
//! to that directory, so its access (read-only or not) is that directory's. A guest not granted
//! `/`, or that closed that directory's descriptor, has the lookup refused as before.

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use wasmtime::Caller;
use wasmtime_wasi::p1::wasi_snapshot_preview1 as wasi;

use super::abi::{EFAULT, Mem, SUCCESS, memory};
use crate::host::P1Host;

/// Where the guest's lookup of `name` from its descriptor `fd` is made instead, when it goes
/// through an absolute link: the guest's descriptor of the directory that holds the place it
/// leads to, the host's descriptor of that directory, and the path beneath it.
pub(super) fn moved(
    host: &P1Host,
    fd: u32,
    name: &[u8],
    follow: bool,
) -> Option<(u32, Arc<OwnedFd>, Vec<u8>)> {
    let start = host.dirs.get(&fd)?;
    let path = Path::new(OsStr::from_bytes(name));
    if !crate::resolve::escapes(start.as_fd(), path, follow) {
        return None;
    }
    let (_, root) = host.preopens.iter().find(|(g, _)| g == "/")?;
    let to = crate::resolve::through_absolute_link(root.as_fd(), start.as_fd(), path, follow)?;
    let to = to.to_str()?;
    let (i, rel) = crate::resolve::holding(host.preopens.iter().map(|(g, _)| g.as_str()), to)?;
    let dir = &host.preopens[i].1;
    let guest_fd = host
        .dirs
        .iter()
        .find(|(_, d)| Arc::ptr_eq(d, dir))
        .map(|(fd, _)| *fd)?;
    tracing::debug!(path = %path.display(), to, "looked up through an absolute link");
    Some((guest_fd, dir.clone(), rel.as_bytes().to_vec()))
}

/// The path `name` and room for a result of `room` bytes after it, aligned to `align`, in a
/// buffer of the host's for wasmtime-wasi to take as the guest's memory: the path at 0, the
/// result at the offset returned.
fn scratch(name: &[u8], room: usize, align: usize) -> (Vec<u8>, usize) {
    let at = name.len().next_multiple_of(align);
    let mut buf = vec![0; at + room];
    buf[..name.len()].copy_from_slice(name);
    (buf, at)
}

/// wasmtime-wasi's `path_open` of `name` (the host's bytes, not the guest's) from the guest's
/// directory `fd`, the new descriptor written at `ret` in the guest's memory.
#[allow(clippy::too_many_arguments)]
pub(super) async fn path_open(
    c: &mut Caller<'_, P1Host>,
    fd: u32,
    dirflags: i32,
    name: &[u8],
    oflags: i32,
    base: i64,
    inh: i64,
    fdflags: i32,
    ret: i32,
) -> wasmtime::Result<i32> {
    let mem = memory(c)?;
    if Mem(mem.data_mut(&mut *c)).u32(ret as u32).is_err() {
        return Ok(EFAULT);
    }
    let (mut buf, at) = scratch(name, 4, 4);
    let code = {
        let ctx = &mut c.data_mut().wasi;
        let mut gm = wiggle::GuestMemory::Unshared(&mut buf);
        wasi::path_open(
            ctx,
            &mut gm,
            fd as i32,
            dirflags,
            0,
            name.len() as i32,
            oflags,
            base,
            inh,
            fdflags,
            at as i32,
        )
        .await?
    };
    if code == SUCCESS {
        let _ = Mem(mem.data_mut(&mut *c)).put(ret as u32, &buf[at..at + 4]);
    }
    Ok(code)
}

/// Preview 1's `filestat` size.
const FILESTAT: usize = 64;

/// wasmtime-wasi's `path_filestat_get` of `name` (the host's bytes) from the guest's directory
/// `fd`, the status written at `ret` in the guest's memory.
pub(super) async fn path_filestat_get(
    c: &mut Caller<'_, P1Host>,
    fd: u32,
    flags: i32,
    name: &[u8],
    ret: i32,
) -> wasmtime::Result<i32> {
    let mem = memory(c)?;
    if Mem(mem.data_mut(&mut *c))
        .slice(ret as u32, FILESTAT as u32)
        .is_err()
    {
        return Ok(EFAULT);
    }
    let (mut buf, at) = scratch(name, FILESTAT, 8);
    let code = {
        let ctx = &mut c.data_mut().wasi;
        let mut gm = wiggle::GuestMemory::Unshared(&mut buf);
        wasi::path_filestat_get(
            ctx,
            &mut gm,
            fd as i32,
            flags,
            0,
            name.len() as i32,
            at as i32,
        )
        .await?
    };
    if code == SUCCESS {
        let _ = Mem(mem.data_mut(&mut *c)).put(ret as u32, &buf[at..at + FILESTAT]);
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_and_its_result_share_one_aligned_buffer() {
        let (buf, at) = scratch(b"usr/lib", 64, 8);
        assert_eq!((at, buf.len(), &buf[..7]), (8, 72, &b"usr/lib"[..]));
        let (buf, at) = scratch(b"abcd", 4, 4);
        assert_eq!((at, buf.len()), (4, 8));
    }
}
