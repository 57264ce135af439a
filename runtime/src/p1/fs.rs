//! Preview 1's filesystem calls as wasmtime-wasi implements them, with three changes in
//! `path_open`:
//!
//! - a guest that holds its handle limit gets `EMFILE`, as from a kernel at `RLIMIT_NOFILE`,
//!   instead of trapping on a full resource table;
//! - a FIFO or a socket file is refused (`EACCES`) before, during and after the open, as
//!   [`crate::special`] describes;
//! - a device of `/dev` ([`crate::devices`]) opens read-only and is recorded for `dev`;
//! - a path through an absolute symbolic link is opened inside the guest's root (`links`).
//!
//! The checks look beneath the directory the guest names, so the host keeps its own `O_PATH`
//! descriptor of every directory the guest holds ([`P1Host::dirs`]): the preopens, and each
//! directory the guest opens itself, taken right after its `path_open` and checked to be the
//! same directory (a directory that cannot be pinned so is refused), moved by `fd_renumber` and
//! dropped by `fd_close`.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use wasmtime::{AsContextMut, Caller, Linker};
use wasmtime_wasi::p1::types;
use wasmtime_wasi::p1::wasi_snapshot_preview1::WasiSnapshotPreview1;

use super::abi::{
    EACCES, EINTR, EMFILE, MODULE, Mem, OFLAGS_CREAT, OFLAGS_EXCL, SUCCESS, delegate, memory,
};
use crate::host::P1Host;
use crate::special;

/// The descriptors a preview 1 guest holds: every entry of its resource table.
pub(crate) fn held(c: &mut Caller<'_, P1Host>) -> usize {
    wasmtime_wasi::WasiView::ctx(&mut c.data_mut().wasi)
        .table
        .iter_mut()
        .count()
}

/// Adds the shadowed calls to `l`, which already holds wasmtime-wasi's preview 1.
pub(crate) fn add_to_linker(l: &mut Linker<P1Host>) -> wasmtime::Result<()> {
    type Args = (i32, i32, i32, i32, i32, i64, i64, i32, i32);
    l.allow_shadowing(true);
    l.func_wrap_async(
        MODULE,
        "path_open",
        |mut c: Caller<'_, P1Host>,
         (fd, dirflags, path, len, oflags, base, inh, fdflags, ret): Args| {
            Box::new(async move {
                if held(&mut c) >= c.data().handles {
                    return Ok(EMFILE);
                }
                let follow = dirflags & 1 != 0;
                let mem = memory(&mut c)?;
                let name = match Mem(mem.data_mut(&mut c)).slice(path as u32, len as u32) {
                    Ok(b) => b.to_vec(),
                    Err(e) => return Ok(e),
                };
                let dir = c.data().dirs.get(&(fd as u32)).cloned();
                let found = dir.as_ref().map(|d| special::find(&**d, &name, follow));
                // A path that leaves its directory may go through an absolute link: it is opened
                // from the directory that holds where it leads (`links`). A new file's last link
                // is not followed, as the kernel's `O_CREAT | O_EXCL` does not.
                let exclusive = oflags & (OFLAGS_CREAT | OFLAGS_EXCL) == OFLAGS_CREAT | OFLAGS_EXCL;
                let moved = match found {
                    Some(Err(rustix::io::Errno::XDEV)) => {
                        super::links::moved(c.data(), fd as u32, &name, follow && !exclusive)
                    }
                    _ => None,
                };
                let (fd, dir, name, target) = match &moved {
                    Some((to, dir, rel)) => {
                        let target = special::lookup(&**dir, rel, follow);
                        (*to as i32, Some(dir.clone()), rel.clone(), target)
                    }
                    None => (fd, dir, name, found.and_then(Result::ok)),
                };
                if target.as_ref().is_some_and(special::is_fifo_or_socket_fd) {
                    tracing::debug!(path = %String::from_utf8_lossy(&name), "FIFO or socket file not opened");
                    return Ok(EACCES);
                }
                // A device of /dev opens its placeholder read-only; `dev` answers for it.
                let device = target.as_ref().and_then(crate::devices::of_file);
                let (oflags, base, inh, fdflags) = match device {
                    Some(_) => match super::dev::open_args(oflags, base, inh, fdflags) {
                        Ok(args) => args,
                        Err(e) => return Ok(e),
                    },
                    None => (oflags, base, inh, fdflags),
                };
                let open = async {
                    if moved.is_some() {
                        let at = fd as u32;
                        super::links::path_open(
                            &mut c, at, dirflags, &name, oflags, base, inh, fdflags, ret,
                        )
                        .await
                    } else {
                        delegate!(
                            c,
                            path_open,
                            async (fd, dirflags, path, len, oflags, base, inh, fdflags, ret)
                        )
                    }
                };
                let code = special::interrupting(open).await?;
                if code == EINTR {
                    // Only the FIFO watchdog's signal interrupts an open: it waited on a FIFO
                    // that appeared under it.
                    return Ok(EACCES);
                }
                if code != SUCCESS {
                    return Ok(code);
                }
                let mem = memory(&mut c)?;
                let Ok(new) = Mem(mem.data_mut(&mut c)).u32(ret as u32) else {
                    // wasmtime-wasi wrote it there a moment ago.
                    return Ok(code);
                };
                let keep = match filetype(&mut c, new).await {
                    Some(types::Filetype::Directory) => {
                        // Pinned as the very directory the guest now holds, or refused: later
                        // opens beneath it are checked beneath that descriptor.
                        let pinned = match dir.and_then(|d| {
                            special::lookup_as(&*d, &name, follow, rustix::fs::OFlags::DIRECTORY)
                        }) {
                            Some(host) => same_directory(&mut c, new, &host)
                                .await
                                .then_some(host),
                            None => None,
                        };
                        match pinned {
                            Some(host) => {
                                c.data_mut().dirs.insert(new, Arc::new(host));
                                true
                            }
                            None => {
                                tracing::warn!(path = %String::from_utf8_lossy(&name), "a directory changed under its open; refused");
                                false
                            }
                        }
                    }
                    // A FIFO (preview 1 has no file type for one) or socket swapped in under the
                    // checks, or something wasmtime-wasi cannot say: the guest never holds it.
                    None
                    | Some(
                        types::Filetype::Unknown
                        | types::Filetype::SocketStream
                        | types::Filetype::SocketDgram,
                    ) => {
                        tracing::warn!(path = %String::from_utf8_lossy(&name), "a FIFO or socket was opened; closed and refused");
                        false
                    }
                    Some(_) => true,
                };
                if !keep {
                    close_here(&mut c, new).await;
                    return Ok(EACCES);
                }
                match device {
                    Some(d) => c.data_mut().devices.insert(new, d),
                    None => c.data_mut().devices.remove(&new),
                };
                Ok(code)
            })
        },
    )?;
    l.func_wrap_async(
        MODULE,
        "fd_renumber",
        |mut c: Caller<'_, P1Host>, (from, to): (i32, i32)| {
            Box::new(async move {
                let code = delegate!(c, fd_renumber, async (from, to))?;
                if code == SUCCESS && from != to {
                    let host = c.data_mut();
                    let (from, to) = (from as u32, to as u32);
                    host.dirs.remove(&to);
                    if let Some(d) = host.dirs.remove(&from) {
                        host.dirs.insert(to, d);
                    }
                    host.devices.remove(&to);
                    if let Some(d) = host.devices.remove(&from) {
                        host.devices.insert(to, d);
                    }
                }
                Ok(code)
            })
        },
    )?;
    l.allow_shadowing(false);
    Ok(())
}

/// `fd_close` of a file or directory descriptor (sockets are `net`'s): wasmtime-wasi closes it,
/// and a directory is forgotten.
pub(crate) async fn close(mut c: &mut Caller<'_, P1Host>, fd: i32) -> wasmtime::Result<i32> {
    let code = delegate!(c, fd_close, async (fd))?;
    if code == SUCCESS {
        c.data_mut().dirs.remove(&(fd as u32));
        c.data_mut().devices.remove(&(fd as u32));
    }
    Ok(code)
}

/// Closes `fd`, which the host opened on the guest's behalf a moment ago.
async fn close_here(c: &mut Caller<'_, P1Host>, fd: u32) {
    let mem = match memory(c) {
        Ok(m) => m,
        Err(_) => return,
    };
    let (data, host) = mem.data_and_store_mut(c.as_context_mut());
    let mut gm = wiggle::GuestMemory::Unshared(data);
    let _ = host.wasi.fd_close(&mut gm, types::Fd::from(fd)).await;
}

/// The file type of the guest's descriptor `fd`, as wasmtime-wasi reports it.
async fn filetype(c: &mut Caller<'_, P1Host>, fd: u32) -> Option<types::Filetype> {
    let mem = memory(c).ok()?;
    let (data, host) = mem.data_and_store_mut(c.as_context_mut());
    let mut gm = wiggle::GuestMemory::Unshared(data);
    host.wasi
        .fd_fdstat_get(&mut gm, types::Fd::from(fd))
        .await
        .ok()
        .map(|s| s.fs_filetype)
}

/// Whether the guest's directory descriptor `fd` and the host's `host` are the same directory:
/// preview 1 numbers an inode by hashing its device and inode numbers as wasmtime-wasi does.
async fn same_directory(c: &mut Caller<'_, P1Host>, fd: u32, host: &OwnedFd) -> bool {
    use std::hash::{Hash, Hasher};
    let Ok(st) = rustix::fs::fstat(host) else {
        return false;
    };
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (st.st_dev, st.st_ino).hash(&mut h);
    let want = h.finish();
    let Ok(mem) = memory(c) else {
        return false;
    };
    let (data, host) = mem.data_and_store_mut(c.as_context_mut());
    let mut gm = wiggle::GuestMemory::Unshared(data);
    host.wasi
        .fd_filestat_get(&mut gm, types::Fd::from(fd))
        .await
        .is_ok_and(|s| s.ino == want)
}
