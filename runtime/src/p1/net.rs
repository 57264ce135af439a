//! Pre-opened listening sockets for WASI preview 1 modules.
//!
//! Preview 1 has no `socket`/`bind`: a server gets an already-listening socket from the host (as
//! with `wasmtime run --tcplisten`). wasmtime-wasi's preview 1 implementation has no socket
//! descriptors, so for guests granted a listen address this module shadows the descriptor calls
//! that can meet a socket (`sock_*`, `fd_read`, `fd_write`, `fd_close`, `fd_fdstat_*`,
//! `fd_filestat_get`, `poll_oneoff`) and hands every other descriptor to wasmtime-wasi unchanged.
//!
//! Socket descriptors are numbered from [`super::sockets::SOCKET_FD_BASE`], far above the numbers wasmtime-wasi
//! hands out, so the two tables never collide. The guest finds its listeners through the
//! environment: `LISTEN_FDS` (how many) and `LISTEN_FDS_START` (the first), consecutive.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::task::Poll;
use std::time::Duration;

use wasmtime::{Caller, Linker};

use super::abi::*;
use super::sockets::{Sock, register};
use crate::error::Result;
use crate::host::P1Host;
use crate::net::AddrUse;

const FILETYPE_SOCKET_STREAM: u8 = 6;
const FDFLAGS_NONBLOCK: u16 = 0x4;
const ALL_RIGHTS: u64 = (1 << 29) - 1;

fn errno_of(e: &std::io::Error) -> i32 {
    use std::io::ErrorKind::*;
    match e.kind() {
        WouldBlock => EAGAIN,
        ConnectionReset | ConnectionAborted => ECONNRESET,
        BrokenPipe => EPIPE,
        NotConnected => ENOTCONN,
        Interrupted => EINTR,
        InvalidInput => EINVAL,
        _ => EIO,
    }
}

/// Most bytes one send copies out of guest memory; the rest is a short write, as sockets may do.
const MAX_SEND: usize = 64 << 10;
/// Most subscriptions one `poll_oneoff` on sockets takes; more is `EINVAL`.
pub(crate) const MAX_POLL_SUBSCRIPTIONS: u32 = 4096;

/// Runs `f` on the socket at `fd` if there is one; otherwise `None` and the call is delegated.
pub(crate) fn is_socket(caller: &Caller<'_, P1Host>, fd: i32) -> bool {
    caller.data().sockets.fds.contains_key(&(fd as u32))
}

/// Reads into the guest's first non-empty iovec; waits unless the socket is non-blocking.
async fn recv(
    caller: &mut Caller<'_, P1Host>,
    fd: u32,
    iovs: u32,
    n: u32,
    peek: bool,
) -> wasmtime::Result<Result<u32, i32>> {
    let mem = memory(caller)?;
    let target = {
        let mut m = Mem(mem.data_mut(&mut *caller));
        match m.iovs(iovs, n) {
            Ok(v) => v.into_iter().find(|(_, len)| *len > 0),
            Err(e) => return Ok(Err(e)),
        }
    };
    let Some((ptr, len)) = target else {
        return Ok(Ok(0));
    };
    let len = len.min(1 << 20) as usize;
    let mut buf = vec![0u8; len];
    let entry = caller
        .data()
        .sockets
        .fds
        .get(&fd)
        .expect("checked by caller");
    let Sock::Stream(s) = &entry.sock else {
        return Ok(Err(ENOTCONN));
    };
    let nonblocking = entry.nonblocking;
    let got = loop {
        let r = if peek {
            s.get_ref().peek(&mut buf)
        } else {
            s.get_ref().read(&mut buf)
        };
        match r {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && !nonblocking => {
                let mut g = match s.readable().await {
                    Ok(g) => g,
                    Err(e) => break Err(e),
                };
                g.clear_ready();
            }
            r => break r,
        }
    };
    let got = match got {
        Ok(k) => k,
        Err(e) => return Ok(Err(errno_of(&e))),
    };
    let mut m = Mem(mem.data_mut(&mut *caller));
    Ok(m.put(ptr, &buf[..got]).map(|()| got as u32))
}

/// Writes the guest's iovecs; waits for room unless the socket is non-blocking.
async fn send(
    caller: &mut Caller<'_, P1Host>,
    fd: u32,
    ciovs: u32,
    n: u32,
) -> wasmtime::Result<Result<u32, i32>> {
    let mem = memory(caller)?;
    // One bounded copy, whatever the iovecs say: host memory stays at MAX_SEND per call.
    let buf: Vec<u8> = {
        let mut m = Mem(mem.data_mut(&mut *caller));
        let iovs = match m.iovs(ciovs, n) {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        };
        let mut out = Vec::new();
        for (p, l) in iovs {
            let take = (l as usize).min(MAX_SEND - out.len()) as u32;
            match m.slice(p, take) {
                Ok(s) => out.extend_from_slice(s),
                Err(e) => return Ok(Err(e)),
            }
            if out.len() == MAX_SEND {
                break;
            }
        }
        out
    };
    let entry = caller
        .data()
        .sockets
        .fds
        .get(&fd)
        .expect("checked by caller");
    let Sock::Stream(s) = &entry.sock else {
        return Ok(Err(ENOTCONN));
    };
    let nonblocking = entry.nonblocking;
    loop {
        match s.get_ref().write(&buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && !nonblocking => {
                match s.writable().await {
                    Ok(mut g) => g.clear_ready(),
                    Err(e) => return Ok(Err(errno_of(&e))),
                }
            }
            Err(e) => return Ok(Err(errno_of(&e))),
            Ok(k) => return Ok(Ok(k as u32)),
        }
    }
}

async fn accept(caller: &mut Caller<'_, P1Host>, fd: u32, flags: i32) -> Result<u32, i32> {
    let host = caller.data_mut();
    let entry = host.sockets.fds.get(&fd).expect("checked by caller");
    let Sock::Listener(l) = &entry.sock else {
        return Err(EINVAL);
    };
    let nonblocking = entry.nonblocking;
    let (stream, peer) = loop {
        match l.get_ref().accept() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && !nonblocking => {
                match l.readable().await {
                    Ok(mut g) => g.clear_ready(),
                    Err(e) => return Err(errno_of(&e)),
                }
            }
            Err(e) => return Err(errno_of(&e)),
            Ok(c) => break c,
        }
    };
    if !host.sockets.net.allows(&peer, AddrUse::TcpAccept) {
        return Err(ECONNRESET);
    }
    if host.sockets.fds.len() >= host.sockets.max {
        // The connection is closed; the guest is at its handle limit.
        return Err(EMFILE);
    }
    let stream = stream
        .set_nonblocking(true)
        .and_then(|()| register(stream))
        .map_err(|e| errno_of(&e))?;
    let new = host.sockets.insert(Sock::Stream(stream));
    if flags as u16 & FDFLAGS_NONBLOCK != 0 {
        host.sockets
            .fds
            .get_mut(&new)
            .expect("just inserted")
            .nonblocking = true;
    }
    Ok(new)
}

/// One `poll_oneoff` subscription over sockets and clocks.
enum Sub {
    Clock {
        userdata: u64,
        deadline: tokio::time::Instant,
    },
    Read {
        userdata: u64,
        fd: u32,
    },
    Write {
        userdata: u64,
        fd: u32,
    },
}

async fn poll(
    caller: &mut Caller<'_, P1Host>,
    input: u32,
    out: u32,
    n: u32,
) -> wasmtime::Result<Result<u32, i32>> {
    let mem = memory(caller)?;
    if n > MAX_POLL_SUBSCRIPTIONS {
        return Ok(Err(EINVAL));
    }
    let subs = {
        let mut m = Mem(mem.data_mut(&mut *caller));
        let mut subs = Vec::new();
        for i in 0..n {
            let Ok(at) = off(input, i * 48) else {
                return Ok(Err(EFAULT));
            };
            let parse = |m: &mut Mem<'_>| -> Result<Sub, i32> {
                let userdata = m.u64(at)?;
                let tag = m.slice(off(at, 8)?, 1)?[0];
                Ok(match tag {
                    0 => {
                        let timeout = m.u64(off(at, 24)?)?;
                        let flags =
                            u16::from_le_bytes(m.slice(off(at, 40)?, 2)?.try_into().expect("2"));
                        if flags & 1 != 0 {
                            return Err(ENOTSUP);
                        }
                        let now = tokio::time::Instant::now();
                        // A deadline past what the clock can hold is as good as never.
                        let far = now + crate::policy::MAX_TIMEOUT;
                        Sub::Clock {
                            userdata,
                            deadline: now
                                .checked_add(Duration::from_nanos(timeout))
                                .map_or(far, |d| d.min(far)),
                        }
                    }
                    1 => Sub::Read {
                        userdata,
                        fd: m.u32(off(at, 16)?)?,
                    },
                    2 => Sub::Write {
                        userdata,
                        fd: m.u32(off(at, 16)?)?,
                    },
                    _ => return Err(EINVAL),
                })
            };
            match parse(&mut m) {
                Ok(s) => subs.push(s),
                Err(e) => return Ok(Err(e)),
            }
        }
        subs
    };
    // Mixing sockets with other descriptors in one poll is not supported.
    let sockets = &caller.data().sockets;
    for s in &subs {
        if let Sub::Read { fd, .. } | Sub::Write { fd, .. } = s
            && !sockets.fds.contains_key(fd)
        {
            return Ok(Err(ENOTSUP));
        }
    }
    let mut sleeps: Vec<Option<std::pin::Pin<Box<tokio::time::Sleep>>>> = subs
        .iter()
        .map(|s| match s {
            Sub::Clock { deadline, .. } => Some(Box::pin(tokio::time::sleep_until(*deadline))),
            _ => None,
        })
        .collect();
    // (userdata, type, error)
    let events: Vec<(u64, u8, u16)> = std::future::poll_fn(|cx| {
        let mut ready = Vec::new();
        for (i, s) in subs.iter().enumerate() {
            match s {
                Sub::Clock { userdata, .. } => {
                    if sleeps[i]
                        .as_mut()
                        .expect("clock has sleep")
                        .as_mut()
                        .poll(cx)
                        .is_ready()
                    {
                        ready.push((*userdata, 0u8, 0u16));
                    }
                }
                Sub::Read { userdata, fd } | Sub::Write { userdata, fd } => {
                    let read = matches!(s, Sub::Read { .. });
                    let e = &sockets.fds[fd];
                    let r = match (&e.sock, read) {
                        (Sock::Listener(l), true) => l.poll_read_ready(cx).map(|r| r.map(drop)),
                        (Sock::Listener(_), false) => Poll::Pending,
                        (Sock::Stream(st), true) => st.poll_read_ready(cx).map(|r| r.map(drop)),
                        (Sock::Stream(st), false) => st.poll_write_ready(cx).map(|r| r.map(drop)),
                    };
                    if let Poll::Ready(r) = r {
                        let err = r.err().map(|e| errno_of(&e) as u16).unwrap_or(0);
                        ready.push((*userdata, if read { 1 } else { 2 }, err));
                    }
                }
            }
        }
        if ready.is_empty() {
            Poll::Pending
        } else {
            Poll::Ready(ready)
        }
    })
    .await;
    let mut m = Mem(mem.data_mut(&mut *caller));
    for (i, (userdata, typ, err)) in events.iter().enumerate() {
        let Ok(at) = off(out, i as u32 * 32) else {
            return Ok(Err(EFAULT));
        };
        let mut ev = [0u8; 32];
        ev[0..8].copy_from_slice(&userdata.to_le_bytes());
        ev[8..10].copy_from_slice(&err.to_le_bytes());
        ev[10] = *typ;
        if *typ != 0 {
            // nbytes: unknown but non-zero means "ready".
            ev[16..24].copy_from_slice(&1u64.to_le_bytes());
        }
        if let Err(e) = m.put(at, &ev) {
            return Ok(Err(e));
        }
    }
    Ok(Ok(events.len() as u32))
}

fn write_result(
    caller: &mut Caller<'_, P1Host>,
    r: Result<u32, i32>,
    ptr: i32,
) -> wasmtime::Result<i32> {
    match r {
        Ok(v) => {
            let mem = memory(caller)?;
            let mut m = Mem(mem.data_mut(caller));
            Ok(m.put(ptr as u32, &v.to_le_bytes())
                .map(|()| SUCCESS)
                .unwrap_or_else(|e| e))
        }
        Err(e) => Ok(e),
    }
}

/// Shadows the descriptor calls on `linker` (which already holds wasmtime-wasi's preview 1) with
/// ones that also understand socket descriptors.
pub(crate) fn add_to_linker(l: &mut Linker<P1Host>) -> wasmtime::Result<()> {
    l.allow_shadowing(true);
    l.func_wrap_async(
        MODULE,
        "sock_accept",
        |mut c: Caller<'_, P1Host>, (fd, flags, ret): (i32, i32, i32)| {
            Box::new(async move {
                if !is_socket(&c, fd) {
                    return delegate!(c, sock_accept, (fd, flags, ret));
                }
                let r = accept(&mut c, fd as u32, flags).await;
                write_result(&mut c, r, ret)
            })
        },
    )?;
    l.func_wrap_async(
        MODULE,
        "sock_recv",
        |mut c: Caller<'_, P1Host>,
         (fd, iovs, n, flags, ret, ret_flags): (i32, i32, i32, i32, i32, i32)| {
            Box::new(async move {
                if !is_socket(&c, fd) {
                    return delegate!(c, sock_recv, (fd, iovs, n, flags, ret, ret_flags));
                }
                let r = recv(&mut c, fd as u32, iovs as u32, n as u32, flags & 1 != 0).await?;
                let code = write_result(&mut c, r, ret)?;
                if code != SUCCESS {
                    return Ok(code);
                }
                // roflags is a u16: no flags to report.
                let mem = memory(&mut c)?;
                let mut m = Mem(mem.data_mut(&mut c));
                Ok(m.put(ret_flags as u32, &0u16.to_le_bytes())
                    .map(|()| SUCCESS)
                    .unwrap_or_else(|e| e))
            })
        },
    )?;
    l.func_wrap_async(
        MODULE,
        "sock_send",
        |mut c: Caller<'_, P1Host>, (fd, iovs, n, flags, ret): (i32, i32, i32, i32, i32)| {
            Box::new(async move {
                if !is_socket(&c, fd) {
                    return delegate!(c, sock_send, (fd, iovs, n, flags, ret));
                }
                let r = send(&mut c, fd as u32, iovs as u32, n as u32).await?;
                write_result(&mut c, r, ret)
            })
        },
    )?;
    l.func_wrap_async(
        MODULE,
        "sock_shutdown",
        |mut c: Caller<'_, P1Host>, (fd, how): (i32, i32)| {
            Box::new(async move {
                if !is_socket(&c, fd) {
                    return delegate!(c, sock_shutdown, (fd, how));
                }
                let e = &c.data().sockets.fds[&(fd as u32)];
                let Sock::Stream(s) = &e.sock else {
                    return Ok(ENOTCONN);
                };
                let how = match how {
                    1 => Shutdown::Read,
                    2 => Shutdown::Write,
                    3 => Shutdown::Both,
                    _ => return Ok(EINVAL),
                };
                Ok(s.get_ref()
                    .shutdown(how)
                    .map(|()| SUCCESS)
                    .unwrap_or_else(|e| errno_of(&e)))
            })
        },
    )?;
    l.func_wrap_async(
        MODULE,
        "fd_read",
        |mut c: Caller<'_, P1Host>, (fd, iovs, n, ret): (i32, i32, i32, i32)| {
            Box::new(async move {
                if !is_socket(&c, fd) {
                    return super::dev::fd_read(c, fd, iovs, n, ret).await;
                }
                let r = recv(&mut c, fd as u32, iovs as u32, n as u32, false).await?;
                write_result(&mut c, r, ret)
            })
        },
    )?;
    l.func_wrap_async(
        MODULE,
        "fd_write",
        |mut c: Caller<'_, P1Host>, (fd, iovs, n, ret): (i32, i32, i32, i32)| {
            Box::new(async move {
                if !is_socket(&c, fd) {
                    return super::dev::fd_write(c, fd, iovs, n, ret).await;
                }
                let r = send(&mut c, fd as u32, iovs as u32, n as u32).await?;
                write_result(&mut c, r, ret)
            })
        },
    )?;
    l.func_wrap_async(
        MODULE,
        "fd_fdstat_get",
        |mut c: Caller<'_, P1Host>, (fd, ptr): (i32, i32)| {
            Box::new(async move {
                if !is_socket(&c, fd) {
                    return super::dev::fd_fdstat_get(c, fd, ptr).await;
                }
                let nonblocking = c.data().sockets.fds[&(fd as u32)].nonblocking;
                let mut st = [0u8; 24];
                st[0] = FILETYPE_SOCKET_STREAM;
                let flags = if nonblocking { FDFLAGS_NONBLOCK } else { 0 };
                st[2..4].copy_from_slice(&flags.to_le_bytes());
                st[8..16].copy_from_slice(&ALL_RIGHTS.to_le_bytes());
                st[16..24].copy_from_slice(&ALL_RIGHTS.to_le_bytes());
                let mem = memory(&mut c)?;
                let mut m = Mem(mem.data_mut(&mut c));
                Ok(m.put(ptr as u32, &st)
                    .map(|()| SUCCESS)
                    .unwrap_or_else(|e| e))
            })
        },
    )?;
    l.func_wrap_async(
        MODULE,
        "fd_fdstat_set_flags",
        |mut c: Caller<'_, P1Host>, (fd, flags): (i32, i32)| {
            Box::new(async move {
                if !is_socket(&c, fd) {
                    return delegate!(c, fd_fdstat_set_flags, (fd, flags));
                }
                let e = c
                    .data_mut()
                    .sockets
                    .fds
                    .get_mut(&(fd as u32))
                    .expect("checked");
                e.nonblocking = flags as u16 & FDFLAGS_NONBLOCK != 0;
                Ok(SUCCESS)
            })
        },
    )?;
    l.func_wrap_async(
        MODULE,
        "fd_filestat_get",
        |mut c: Caller<'_, P1Host>, (fd, ptr): (i32, i32)| {
            Box::new(async move {
                if !is_socket(&c, fd) {
                    return super::dev::fd_filestat_get(c, fd, ptr).await;
                }
                let mut st = [0u8; 64];
                st[16] = FILETYPE_SOCKET_STREAM;
                let mem = memory(&mut c)?;
                let mut m = Mem(mem.data_mut(&mut c));
                Ok(m.put(ptr as u32, &st)
                    .map(|()| SUCCESS)
                    .unwrap_or_else(|e| e))
            })
        },
    )?;
    l.func_wrap_async(
        MODULE,
        "poll_oneoff",
        |mut c: Caller<'_, P1Host>, (input, out, n, ret): (i32, i32, i32, i32)| {
            Box::new(async move {
                let names_socket = {
                    let mem = memory(&mut c)?;
                    let (data, host) = mem.data_and_store_mut(&mut c);
                    let mut m = Mem(data);
                    // At most MAX_POLL_SUBSCRIPTIONS are looked at: a huge count costs nothing here.
                    (0..(n as u32).min(MAX_POLL_SUBSCRIPTIONS)).any(|i| {
                        let Ok(at) = off(input as u32, i * 48) else {
                            return false;
                        };
                        let tag = off(at, 8).and_then(|a| m.slice(a, 1).map(|t| t[0]));
                        matches!(tag, Ok(1 | 2))
                            && off(at, 16)
                                .and_then(|a| m.u32(a))
                                .is_ok_and(|fd| host.sockets.fds.contains_key(&fd))
                    })
                };
                if !names_socket {
                    return delegate!(c, poll_oneoff, async (input, out, n, ret));
                }
                let r = poll(&mut c, input as u32, out as u32, n as u32).await?;
                write_result(&mut c, r, ret)
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
    fn errno_mapping() {
        let e = std::io::Error::from(std::io::ErrorKind::WouldBlock);
        assert_eq!(errno_of(&e), EAGAIN);
        let e = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        assert_eq!(errno_of(&e), EPIPE);
    }
}
