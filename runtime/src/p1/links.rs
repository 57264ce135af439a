//! Preview 1 lookups through absolute symbolic links, resolved inside the guest's root as a
//! chroot resolves them ([`crate::resolve::through_absolute_link`]): every call by path
//! (`path_open` and `path_filestat_get`, shadowed in `fs` and `dev`, and the others, shadowed
//! here) is made from the directory the guest holds that holds the place the link leads to (the
//! deepest of its preopens above it), with the path relative to that directory, so its access
//! (read-only or not) is that directory's. The moved path is handed to wasmtime-wasi in a buffer
//! of the host's standing in for the guest's memory ([`Scratch`], handed on by `abi::delegate`). A guest not granted `/`, or
//! that closed that directory's descriptor, has the lookup refused as before.

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use wasmtime::{Caller, Linker};

use super::abi::{EFAULT, MODULE, Mem, SUCCESS, delegate, memory};
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

/// A buffer of the host's that wasmtime-wasi takes as the guest's memory for one call: the moved
/// paths, and room for what the call writes back.
#[derive(Default)]
struct Scratch(Vec<u8>);

impl Scratch {
    /// Puts `bytes` in, aligned to `align`; their offset and length, as the call takes them.
    fn put(&mut self, bytes: &[u8], align: usize) -> (i32, i32) {
        let at = self.0.len().next_multiple_of(align);
        self.0.resize(at, 0);
        self.0.extend_from_slice(bytes);
        (at as i32, bytes.len() as i32)
    }

    /// Room for `n` bytes aligned to `align`; its offset.
    fn room(&mut self, n: usize, align: usize) -> i32 {
        self.put(&vec![0; n], align).0
    }

    fn at(&self, at: i32, n: usize) -> &[u8] {
        &self.0[at as usize..at as usize + n]
    }
}

/// wasmtime-wasi's `path_open` of `name` (the host's bytes, not the guest's) from the guest's
/// directory `fd`, the new descriptor written at `ret` in the guest's memory.
#[allow(clippy::too_many_arguments)]
pub(super) async fn path_open(
    mut c: &mut Caller<'_, P1Host>,
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
    let mut s = Scratch::default();
    let (p, n) = s.put(name, 1);
    let at = s.room(4, 4);
    let code = delegate!(c, path_open, async (fd as i32, dirflags, p, n, oflags, base, inh, fdflags, at) in &mut s.0)?;
    if code == SUCCESS {
        let _ = Mem(mem.data_mut(&mut *c)).put(ret as u32, s.at(at, 4));
    }
    Ok(code)
}

/// Preview 1's `filestat` size.
const FILESTAT: usize = 64;

/// wasmtime-wasi's `path_filestat_get` of `name` (the host's bytes) from the guest's directory
/// `fd`, the status written at `ret` in the guest's memory.
pub(super) async fn path_filestat_get(
    mut c: &mut Caller<'_, P1Host>,
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
    let mut s = Scratch::default();
    let (p, n) = s.put(name, 1);
    let at = s.room(FILESTAT, 8);
    let code = delegate!(c, path_filestat_get, async (fd as i32, flags, p, n, at) in &mut s.0)?;
    if code == SUCCESS {
        let _ = Mem(mem.data_mut(&mut *c)).put(ret as u32, s.at(at, FILESTAT));
    }
    Ok(code)
}

/// The guest's path argument at `ptr`, `len`, read from its memory.
fn guest_path(
    c: &mut Caller<'_, P1Host>,
    ptr: i32,
    len: i32,
) -> wasmtime::Result<Result<Vec<u8>, i32>> {
    let mem = memory(c)?;
    Ok(Mem(mem.data_mut(&mut *c))
        .slice(ptr as u32, len as u32)
        .map(|b| b.to_vec()))
}

/// A call's path arguments, each a descriptor and a path beneath it.
type PathArgs = Vec<(i32, Vec<u8>)>;

/// A call's path arguments `args` (descriptor, pointer, length, whether a last link is
/// followed) as the call makes them: each as the guest gave it, or where [`moved`] moves it.
/// `None` when none moved (the call is handed on as it came); an errno for a path out of the
/// guest's memory.
fn paths(
    c: &mut Caller<'_, P1Host>,
    args: &[(i32, i32, i32, bool)],
) -> wasmtime::Result<Result<Option<PathArgs>, i32>> {
    let mut out = Vec::new();
    let mut any = false;
    for &(fd, ptr, len, follow) in args {
        let name = match guest_path(c, ptr, len)? {
            Ok(n) => n,
            Err(e) => return Ok(Err(e)),
        };
        match moved(c.data(), fd as u32, &name, follow) {
            Some((to, _, rel)) => {
                any = true;
                out.push((to as i32, rel));
            }
            None => out.push((fd, name)),
        }
    }
    Ok(Ok(any.then_some(out)))
}

/// The moved path arguments of a call to `$func`; or, when none moved, the call handed on to
/// wasmtime-wasi as it came; or the errno of a path out of the guest's memory.
macro_rules! moved_or_delegate {
    ($c:ident, $paths:expr, $func:ident, ($($arg:expr),*)) => {
        match paths(&mut $c, $paths)? {
            Err(e) => return Ok(e),
            Ok(None) => return delegate!($c, $func, async ($($arg),*)),
            Ok(Some(moved)) => moved,
        }
    };
}

/// Most bytes of a link's target read back through a moved `path_readlink` (Linux's limit on a
/// target is 4095).
const MOST_LINK: usize = 64 << 10;

/// Shadows the calls by path other than `path_open` and `path_filestat_get` in `l`, which
/// already holds wasmtime-wasi's preview 1. None of them follows a last link but
/// `path_filestat_set_times` and `path_link`'s source when their flags say so.
pub(super) fn add_to_linker(l: &mut Linker<P1Host>) -> wasmtime::Result<()> {
    l.allow_shadowing(true);
    macro_rules! one_path {
        ($name:literal, $func:ident) => {
            l.func_wrap_async(
                MODULE,
                $name,
                |mut c: Caller<'_, P1Host>, (fd, path, len): (i32, i32, i32)| {
                    Box::new(async move {
                        let moved = moved_or_delegate!(
                            c,
                            &[(fd, path, len, false)],
                            $func,
                            (fd, path, len)
                        );
                        let mut s = Scratch::default();
                        let (p, n) = s.put(&moved[0].1, 1);
                        delegate!(c, $func, async (moved[0].0, p, n) in &mut s.0)
                    })
                },
            )?;
        };
    }
    one_path!("path_create_directory", path_create_directory);
    one_path!("path_remove_directory", path_remove_directory);
    one_path!("path_unlink_file", path_unlink_file);
    l.func_wrap_async(
        MODULE,
        "path_readlink",
        |mut c: Caller<'_, P1Host>,
         (fd, path, len, buf, buf_len, ret): (i32, i32, i32, i32, i32, i32)| {
            Box::new(async move {
                let moved = moved_or_delegate!(
                    c,
                    &[(fd, path, len, false)],
                    path_readlink,
                    (fd, path, len, buf, buf_len, ret)
                );
                let mem = memory(&mut c)?;
                if Mem(mem.data_mut(&mut c))
                    .slice(buf as u32, buf_len as u32)
                    .is_err()
                    || Mem(mem.data_mut(&mut c)).u32(ret as u32).is_err()
                {
                    return Ok(EFAULT);
                }
                let room = (buf_len as u32 as usize).min(MOST_LINK);
                let mut s = Scratch::default();
                let (p, n) = s.put(&moved[0].1, 1);
                let out = s.room(room, 1);
                let got = s.room(4, 4);
                let code = delegate!(c, path_readlink, async (moved[0].0, p, n, out, room as i32, got) in &mut s.0)?;
                if code == SUCCESS {
                    let n = u32::from_le_bytes(s.at(got, 4).try_into().expect("4 bytes"));
                    let mut m = Mem(mem.data_mut(&mut c));
                    let written = m
                        .put(buf as u32, s.at(out, n as usize))
                        .and_then(|()| m.put(ret as u32, &n.to_le_bytes()));
                    if let Err(e) = written {
                        return Ok(e);
                    }
                }
                Ok(code)
            })
        },
    )?;
    l.func_wrap_async(
        MODULE,
        "path_filestat_set_times",
        |mut c: Caller<'_, P1Host>,
         (fd, flags, path, len, atim, mtim, fst): (i32, i32, i32, i32, i64, i64, i32)| {
            Box::new(async move {
                let moved = moved_or_delegate!(
                    c,
                    &[(fd, path, len, flags & 1 != 0)],
                    path_filestat_set_times,
                    (fd, flags, path, len, atim, mtim, fst)
                );
                let mut s = Scratch::default();
                let (p, n) = s.put(&moved[0].1, 1);
                delegate!(c, path_filestat_set_times, async (moved[0].0, flags, p, n, atim, mtim, fst) in &mut s.0)
            })
        },
    )?;
    l.func_wrap_async(
        MODULE,
        "path_rename",
        |mut c: Caller<'_, P1Host>,
         (fd, path, len, to_fd, to_path, to_len): (i32, i32, i32, i32, i32, i32)| {
            Box::new(async move {
                let args = [(fd, path, len, false), (to_fd, to_path, to_len, false)];
                let moved = moved_or_delegate!(
                    c,
                    &args,
                    path_rename,
                    (fd, path, len, to_fd, to_path, to_len)
                );
                let mut s = Scratch::default();
                let (p, n) = s.put(&moved[0].1, 1);
                let (tp, tn) = s.put(&moved[1].1, 1);
                delegate!(c, path_rename, async (moved[0].0, p, n, moved[1].0, tp, tn) in &mut s.0)
            })
        },
    )?;
    l.func_wrap_async(
        MODULE,
        "path_link",
        |mut c: Caller<'_, P1Host>, (fd, flags, path, len, to_fd, to_path, to_len): (i32, i32, i32, i32, i32, i32, i32)| {
            Box::new(async move {
                let args = [(fd, path, len, flags & 1 != 0), (to_fd, to_path, to_len, false)];
                let moved = moved_or_delegate!(c, &args, path_link, (fd, flags, path, len, to_fd, to_path, to_len));
                let mut s = Scratch::default();
                let (p, n) = s.put(&moved[0].1, 1);
                let (tp, tn) = s.put(&moved[1].1, 1);
                delegate!(c, path_link, async (moved[0].0, flags, p, n, moved[1].0, tp, tn) in &mut s.0)
            })
        },
    )?;
    l.func_wrap_async(
        MODULE,
        "path_symlink",
        |mut c: Caller<'_, P1Host>,
         (target, target_len, fd, path, len): (i32, i32, i32, i32, i32)| {
            Box::new(async move {
                // The link's target is its content, kept as given; only where it is made moves.
                let moved = moved_or_delegate!(
                    c,
                    &[(fd, path, len, false)],
                    path_symlink,
                    (target, target_len, fd, path, len)
                );
                let target = match guest_path(&mut c, target, target_len)? {
                    Ok(t) => t,
                    Err(e) => return Ok(e),
                };
                let mut s = Scratch::default();
                let (tp, tn) = s.put(&target, 1);
                let (p, n) = s.put(&moved[0].1, 1);
                delegate!(c, path_symlink, async (tp, tn, moved[0].0, p, n) in &mut s.0)
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
    fn a_path_and_its_result_share_one_aligned_buffer() {
        let mut s = Scratch::default();
        assert_eq!(s.put(b"abc", 1), (0, 3));
        assert_eq!(s.room(4, 4), 4);
        assert_eq!(s.put(b"de", 8), (8, 2));
        assert_eq!((s.0.len(), s.at(8, 2)), (10, &b"de"[..]));
    }
}
