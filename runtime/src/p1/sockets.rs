//! The sockets of one preview 1 guest: the listeners pre-opened from its grants and the
//! connections it accepted, numbered from [`SOCKET_FD_BASE`]. A leaf of `p1`: the guest's host
//! state holds the table, `net` shadows the calls that use it.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};

use tokio::io::unix::AsyncFd;

use crate::error::{Error, Result};
use crate::net::{NetPolicy, Protocol};

/// First descriptor number used for sockets.
pub const SOCKET_FD_BASE: u32 = 1 << 24;

pub(crate) enum Sock {
    Listener(AsyncFd<TcpListener>),
    Stream(AsyncFd<TcpStream>),
}

pub(crate) struct Entry {
    pub(crate) sock: Sock,
    pub(crate) nonblocking: bool,
}

/// The sockets of one preview 1 guest.
#[derive(Default)]
pub(crate) struct Sockets {
    pub(crate) fds: HashMap<u32, Entry>,
    next: u32,
    pub(crate) net: NetPolicy,
    /// Most sockets open at once (the guest's handle limit).
    pub(crate) max: usize,
}

/// The listen grants that name one address and one port, which can be pre-opened.
pub(crate) fn preopenable(net: &NetPolicy) -> Vec<SocketAddr> {
    net.listen
        .iter()
        .filter(|g| {
            g.protocol == Protocol::Tcp
                && g.ports.start() == g.ports.end()
                && g.prefix == if g.addr.is_ipv4() { 32 } else { 128 }
        })
        .map(|g| SocketAddr::new(g.addr, *g.ports.start()))
        .collect()
}

impl Sockets {
    /// Binds a listener for each pre-openable listen grant and tells the guest where they are.
    /// Must run inside the executor's context.
    pub(crate) fn open(
        net: &NetPolicy,
        max: usize,
        b: &mut wasmtime_wasi::WasiCtxBuilder,
    ) -> Result<Self> {
        let mut s = Sockets {
            next: SOCKET_FD_BASE,
            net: net.clone(),
            max,
            ..Default::default()
        };
        let addrs = preopenable(net);
        for addr in &addrs {
            let l = TcpListener::bind(addr)
                .and_then(|l| {
                    l.set_nonblocking(true)?;
                    register(l)
                })
                .map_err(|source| Error::Listen {
                    addr: *addr,
                    source,
                })?;
            s.insert(Sock::Listener(l));
        }
        if !addrs.is_empty() {
            b.env("LISTEN_FDS", addrs.len().to_string());
            b.env("LISTEN_FDS_START", SOCKET_FD_BASE.to_string());
        }
        Ok(s)
    }

    pub(crate) fn insert(&mut self, sock: Sock) -> u32 {
        let fd = self.next;
        self.next += 1;
        self.fds.insert(
            fd,
            Entry {
                sock,
                nonblocking: false,
            },
        );
        fd
    }
}

/// Registers an owned socket with the executor's reactor.
pub(crate) fn register<T: std::os::fd::AsRawFd>(sock: T) -> std::io::Result<AsyncFd<T>> {
    // SAFETY: `sock` is an owned std socket; it owns its descriptor, and `AsyncFd` keeps it (never
    // replacing or closing it) until the `AsyncFd` is dropped, which is what `register` requires.
    #[allow(
        unsafe_code,
        reason = "registering an owned socket with tokio's reactor"
    )]
    unsafe {
        AsyncFd::register(sock).map_err(|e| e.into_parts().1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_single_addresses_are_preopened() {
        let net = NetPolicy {
            listen: vec![
                "127.0.0.1:8080".parse().unwrap(),
                "127.0.0.1:8000-8010".parse().unwrap(),
                "10.0.0.0/8:80".parse().unwrap(),
                "udp:127.0.0.1:53".parse().unwrap(),
                "[::1]:9000".parse().unwrap(),
            ],
            ..Default::default()
        };
        let v = preopenable(&net);
        assert_eq!(
            v,
            vec![
                "127.0.0.1:8080".parse().unwrap(),
                "[::1]:9000".parse().unwrap()
            ]
        );
    }
}
