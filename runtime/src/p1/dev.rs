//! Preview 1's reads, writes and status calls (by descriptor and by path) on the devices of
//! `/dev` ([`crate::devices`]).
//! `path_open` (in `fs`) opens a device's placeholder read-only, whatever access was asked
//! ([`open_args`]), and records the descriptor in [`P1Host::devices`]; `fd_renumber` and
//! `fd_close` move and forget it. The calls here answer for a recorded descriptor as the device
//! would, and hand every other descriptor on to wasmtime-wasi (sockets are `net`'s, which hands
//! the rest on to these). Listing a directory that holds the devices (`fd_readdir`) gives them
//! as character devices.

use wasmtime::{Caller, Linker};

use super::abi::{
    EEXIST, EFAULT, ENOSPC, ENOTDIR, MODULE, Mem, OFLAGS_CREAT, OFLAGS_EXCL, SUCCESS, delegate,
    memory, off,
};
use crate::devices::{Device, MAX_READ, WriteError};
use crate::host::P1Host;

// Preview 1's flag bits that matter here.
const OFLAGS_DIRECTORY: i32 = 2;
#[cfg(test)]
const OFLAGS_TRUNC: i32 = 8;
const FDFLAGS_NONBLOCK: i32 = 4;
const RIGHTS_FD_READ: i64 = 1 << 1;
const RIGHTS_FD_WRITE: i64 = 1 << 6;
const FILETYPE_CHARACTER_DEVICE: u8 = 2;
const FILETYPE_REGULAR_FILE: u8 = 4;
/// The bytes of a `dirent` before its name: `d_next`, `d_ino`, `d_namlen`, `d_type` and padding.
const DIRENT_HEAD: usize = 24;
/// Most bytes one write takes (Linux's `MAX_RW_COUNT`).
const MAX_WRITE: usize = 0x7fff_f000;

/// The `path_open` arguments (`oflags`, rights, `fdflags`) that open a device's placeholder:
/// read-only, nothing created or truncated, no append or sync flags. Asking for a directory is
/// `ENOTDIR`, and for a new file `EEXIST`.
pub(super) fn open_args(
    oflags: i32,
    base: i64,
    inh: i64,
    fdflags: i32,
) -> Result<(i32, i64, i64, i32), i32> {
    if oflags & OFLAGS_DIRECTORY != 0 {
        return Err(ENOTDIR);
    }
    if oflags & OFLAGS_CREAT != 0 && oflags & OFLAGS_EXCL != 0 {
        return Err(EEXIST);
    }
    let read_only = |r: i64| (r & !RIGHTS_FD_WRITE) | RIGHTS_FD_READ;
    Ok((
        0,
        read_only(base),
        read_only(inh),
        fdflags & FDFLAGS_NONBLOCK,
    ))
}

/// The device the guest's descriptor `fd` is, if it is one.
fn device(c: &Caller<'_, P1Host>, fd: i32) -> Option<Device> {
    c.data().devices.get(&(fd as u32)).copied()
}

/// Writes `n` (a byte count) at `ret`.
fn put_size(c: &mut Caller<'_, P1Host>, ret: i32, n: usize) -> wasmtime::Result<i32> {
    let mem = memory(c)?;
    let mut m = Mem(mem.data_mut(c));
    Ok(m.put(ret as u32, &(n as u32).to_le_bytes())
        .map(|()| SUCCESS)
        .unwrap_or_else(|e| e))
}

/// A read of `dev` into the iovecs at `iovs`: at most [`MAX_READ`] bytes in all.
fn read(
    c: &mut Caller<'_, P1Host>,
    dev: Device,
    iovs: i32,
    n: i32,
    ret: i32,
) -> wasmtime::Result<i32> {
    let mem = memory(c)?;
    let mut m = Mem(mem.data_mut(&mut *c));
    let vecs = match m.iovs(iovs as u32, n as u32) {
        Ok(v) => v,
        Err(e) => return Ok(e),
    };
    let mut total = 0usize;
    for (ptr, len) in vecs {
        let want = (len as usize).min(MAX_READ - total);
        let buf = match m.slice(ptr, want as u32) {
            Ok(b) => b,
            Err(e) => return Ok(e),
        };
        let got = dev.read(buf);
        total += got;
        if got < want || total == MAX_READ {
            break;
        }
    }
    put_size(c, ret, total)
}

/// A write of the iovecs at `iovs` to `dev`: checked, then taken whole or refused.
fn write(
    c: &mut Caller<'_, P1Host>,
    dev: Device,
    iovs: i32,
    n: i32,
    ret: i32,
) -> wasmtime::Result<i32> {
    let mem = memory(c)?;
    let mut m = Mem(mem.data_mut(&mut *c));
    let vecs = match m.iovs(iovs as u32, n as u32) {
        Ok(v) => v,
        Err(e) => return Ok(e),
    };
    let mut total = 0usize;
    for (ptr, len) in vecs {
        if m.slice(ptr, len).is_err() || off(ptr, len).is_err() {
            return Ok(EFAULT);
        }
        total = total.saturating_add(len as usize);
    }
    // As Linux's MAX_RW_COUNT: one write takes at most this much, so the count fits wasi-libc's
    // 32-bit ssize_t however many times the iovecs repeat one buffer.
    match dev.write(total.min(MAX_WRITE)) {
        Ok(n) => put_size(c, ret, n),
        Err(WriteError::NoSpace) => Ok(ENOSPC),
    }
}

/// `fd_read`: a device's bytes, or wasmtime-wasi's read.
pub(super) async fn fd_read(
    mut c: Caller<'_, P1Host>,
    fd: i32,
    iovs: i32,
    n: i32,
    ret: i32,
) -> wasmtime::Result<i32> {
    match device(&c, fd) {
        Some(dev) => read(&mut c, dev, iovs, n, ret),
        None => delegate!(c, fd_read, async (fd, iovs, n, ret)),
    }
}

/// `fd_write`: taken by a device, or wasmtime-wasi's write.
pub(super) async fn fd_write(
    mut c: Caller<'_, P1Host>,
    fd: i32,
    iovs: i32,
    n: i32,
    ret: i32,
) -> wasmtime::Result<i32> {
    match device(&c, fd) {
        Some(dev) => write(&mut c, dev, iovs, n, ret),
        None => delegate!(c, fd_write, async (fd, iovs, n, ret)),
    }
}

/// `fd_fdstat_get`: a device is a character device, readable and writable.
pub(super) async fn fd_fdstat_get(
    mut c: Caller<'_, P1Host>,
    fd: i32,
    ptr: i32,
) -> wasmtime::Result<i32> {
    let code = delegate!(c, fd_fdstat_get, async (fd, ptr))?;
    if code != SUCCESS || device(&c, fd).is_none() {
        return Ok(code);
    }
    let mem = memory(&mut c)?;
    let mut m = Mem(mem.data_mut(&mut c));
    let patched = m.slice(ptr as u32, 24).map(|st| {
        st[0] = FILETYPE_CHARACTER_DEVICE;
        let base = i64::from_le_bytes(st[8..16].try_into().expect("8 bytes")) | RIGHTS_FD_WRITE;
        st[8..16].copy_from_slice(&base.to_le_bytes());
    });
    Ok(patched.map(|()| SUCCESS).unwrap_or_else(|e| e))
}

/// `fd_filestat_get`: a device is a character device.
pub(super) async fn fd_filestat_get(
    mut c: Caller<'_, P1Host>,
    fd: i32,
    ptr: i32,
) -> wasmtime::Result<i32> {
    let code = delegate!(c, fd_filestat_get, async (fd, ptr))?;
    if code != SUCCESS || device(&c, fd).is_none() {
        return Ok(code);
    }
    let mem = memory(&mut c)?;
    let mut m = Mem(mem.data_mut(&mut c));
    Ok(m.put(
        off(ptr as u32, 16).unwrap_or(u32::MAX),
        &[FILETYPE_CHARACTER_DEVICE],
    )
    .map(|()| SUCCESS)
    .unwrap_or_else(|e| e))
}

/// `fd_readdir`: in a directory that holds the devices, their entries are character devices.
pub(super) async fn fd_readdir(
    mut c: Caller<'_, P1Host>,
    fd: i32,
    buf: i32,
    len: i32,
    cookie: i64,
    used: i32,
) -> wasmtime::Result<i32> {
    let code = delegate!(c, fd_readdir, async (fd, buf, len, cookie, used))?;
    let Some(dir) = c.data().dirs.get(&(fd as u32)).cloned() else {
        return Ok(code);
    };
    if code != SUCCESS {
        return Ok(code);
    }
    let mem = memory(&mut c)?;
    let mut m = Mem(mem.data_mut(&mut c));
    let Ok(n) = m
        .slice(used as u32, 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]).min(len as u32))
    else {
        return Ok(code);
    };
    if let Ok(entries) = m.slice(buf as u32, n) {
        mark_devices(entries, |name| {
            crate::devices::named(name) && crate::devices::beneath(&*dir, name, false).is_some()
        });
    }
    Ok(code)
}

/// Marks as character devices the regular files of a preview 1 `fd_readdir` buffer (`dirent`s,
/// each followed by its name; the last may be cut short) whose names `is_device` says are.
fn mark_devices(entries: &mut [u8], is_device: impl Fn(&[u8]) -> bool) {
    let mut at = 0;
    while at + DIRENT_HEAD <= entries.len() {
        let len = u32::from_le_bytes([
            entries[at + 16],
            entries[at + 17],
            entries[at + 18],
            entries[at + 19],
        ]) as usize;
        let Some(end) = (at + DIRENT_HEAD)
            .checked_add(len)
            .filter(|e| *e <= entries.len())
        else {
            break;
        };
        if entries[at + 20] == FILETYPE_REGULAR_FILE && is_device(&entries[at + DIRENT_HEAD..end]) {
            entries[at + 20] = FILETYPE_CHARACTER_DEVICE;
        }
        at = end;
    }
}

/// Adds the calls to `l`, which already holds wasmtime-wasi's preview 1.
pub(super) fn add_to_linker(l: &mut Linker<P1Host>) -> wasmtime::Result<()> {
    type Rw = (i32, i32, i32, i32);
    type Prw = (i32, i32, i32, i64, i32);
    l.allow_shadowing(true);
    l.func_wrap_async(
        MODULE,
        "fd_read",
        |c: Caller<'_, P1Host>, (fd, iovs, n, ret): Rw| Box::new(fd_read(c, fd, iovs, n, ret)),
    )?;
    l.func_wrap_async(
        MODULE,
        "fd_write",
        |c: Caller<'_, P1Host>, (fd, iovs, n, ret): Rw| Box::new(fd_write(c, fd, iovs, n, ret)),
    )?;
    l.func_wrap_async(
        MODULE,
        "fd_pread",
        |mut c: Caller<'_, P1Host>, (fd, iovs, n, at, ret): Prw| {
            Box::new(async move {
                match device(&c, fd) {
                    Some(dev) => read(&mut c, dev, iovs, n, ret),
                    None => delegate!(c, fd_pread, async (fd, iovs, n, at, ret)),
                }
            })
        },
    )?;
    l.func_wrap_async(
        MODULE,
        "fd_pwrite",
        |mut c: Caller<'_, P1Host>, (fd, iovs, n, at, ret): Prw| {
            Box::new(async move {
                match device(&c, fd) {
                    Some(dev) => write(&mut c, dev, iovs, n, ret),
                    None => delegate!(c, fd_pwrite, async (fd, iovs, n, at, ret)),
                }
            })
        },
    )?;
    l.func_wrap_async(
        MODULE,
        "fd_readdir",
        |c: Caller<'_, P1Host>, (fd, buf, len, cookie, used): (i32, i32, i32, i64, i32)| {
            Box::new(fd_readdir(c, fd, buf, len, cookie, used))
        },
    )?;
    l.func_wrap_async(
        MODULE,
        "fd_fdstat_get",
        |c: Caller<'_, P1Host>, (fd, ptr): (i32, i32)| Box::new(fd_fdstat_get(c, fd, ptr)),
    )?;
    l.func_wrap_async(
        MODULE,
        "fd_filestat_get",
        |c: Caller<'_, P1Host>, (fd, ptr): (i32, i32)| Box::new(fd_filestat_get(c, fd, ptr)),
    )?;
    l.func_wrap_async(
        MODULE,
        "path_filestat_get",
        |mut c: Caller<'_, P1Host>, (fd, flags, path, len, buf): (i32, i32, i32, i32, i32)| {
            Box::new(async move {
                let follow = flags & 1 != 0;
                let mem = memory(&mut c)?;
                let name = match Mem(mem.data_mut(&mut c)).slice(path as u32, len as u32) {
                    Ok(b) => b.to_vec(),
                    Err(e) => return Ok(e),
                };
                // Through an absolute link, from the directory that holds where it leads.
                let (code, dir, name) =
                    match super::links::moved(c.data(), fd as u32, &name, follow) {
                        Some((to, dir, rel)) => (
                            super::links::path_filestat_get(&mut c, to, flags, &rel, buf).await?,
                            Some(dir),
                            rel,
                        ),
                        None => (
                            delegate!(c, path_filestat_get, async (fd, flags, path, len, buf))?,
                            c.data().dirs.get(&(fd as u32)).cloned(),
                            name,
                        ),
                    };
                let Some(dir) = dir else {
                    return Ok(code);
                };
                if code != SUCCESS || crate::devices::beneath(&*dir, &name, follow).is_none() {
                    return Ok(code);
                }
                let mem = memory(&mut c)?;
                let mut m = Mem(mem.data_mut(&mut c));
                Ok(m.put(
                    off(buf as u32, 16).unwrap_or(u32::MAX),
                    &[FILETYPE_CHARACTER_DEVICE],
                )
                .map(|()| SUCCESS)
                .unwrap_or_else(|e| e))
            })
        },
    )?;
    l.allow_shadowing(false);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_opens_read_only_and_never_as_a_directory_or_a_new_file() {
        let all = -1i64;
        let (o, b, i, f) = open_args(
            OFLAGS_CREAT | OFLAGS_TRUNC,
            RIGHTS_FD_WRITE,
            all,
            1 | 4 | 16,
        )
        .unwrap();
        assert_eq!(o, 0, "nothing created or truncated");
        assert_eq!(b & RIGHTS_FD_WRITE, 0);
        assert_ne!(b & RIGHTS_FD_READ, 0, "always opened for reading");
        assert_eq!(i & RIGHTS_FD_WRITE, 0);
        assert_eq!(f, FDFLAGS_NONBLOCK, "append and sync flags dropped");
        assert_eq!(open_args(OFLAGS_DIRECTORY, 0, 0, 0), Err(ENOTDIR));
        assert_eq!(open_args(OFLAGS_CREAT | OFLAGS_EXCL, 0, 0, 0), Err(EEXIST));
    }

    /// A `dirent` named `name` of type `kind`.
    fn dirent(name: &str, kind: u8) -> Vec<u8> {
        let mut d = vec![0u8; DIRENT_HEAD];
        d[16..20].copy_from_slice(&(name.len() as u32).to_le_bytes());
        d[20] = kind;
        d.extend_from_slice(name.as_bytes());
        d
    }

    #[test]
    fn readdir_marks_the_devices_it_is_told_of_and_only_whole_regular_entries() {
        let mut buf = [
            dirent("null", FILETYPE_REGULAR_FILE),
            dirent("notes", FILETYPE_REGULAR_FILE),
            dirent("zero", 3),
            dirent("urandom", FILETYPE_REGULAR_FILE),
        ]
        .concat();
        // The last entry cut inside its name, as a full buffer leaves it.
        buf.truncate(buf.len() - 2);
        mark_devices(&mut buf, |n| {
            n == b"null" || n == b"zero" || n.starts_with(b"uran")
        });
        let types: Vec<u8> = [0, 28, 57, 85].iter().map(|at| buf[at + 20]).collect();
        assert_eq!(
            types,
            [
                FILETYPE_CHARACTER_DEVICE,
                FILETYPE_REGULAR_FILE,
                3,
                FILETYPE_REGULAR_FILE
            ]
        );
        // A name length past the buffer stops the walk.
        let mut bad = dirent("null", FILETYPE_REGULAR_FILE);
        bad[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        mark_devices(&mut bad, |_| true);
        assert_eq!(bad[20], FILETYPE_REGULAR_FILE);
    }
}
