//! Network capabilities: which addresses a guest may connect to, listen on, and whether it may resolve names.
//!
//! Everything is denied unless granted. Grants are plain data so that every front end (CLI flags,
//! spec annotations) produces the same [`NetPolicy`], and one function ([`NetPolicy::allows`]) decides.

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Transport protocol of a grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// A set of addresses (an IP network) and a port range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// Protocol the grant applies to.
    pub protocol: Protocol,
    /// Network address.
    pub addr: IpAddr,
    /// Prefix length (32 or 128 for a single address).
    pub prefix: u8,
    /// First and last port granted.
    pub ports: RangeInclusive<u16>,
}

impl Grant {
    /// True when `sa` lies inside this grant.
    pub fn contains(&self, sa: &SocketAddr) -> bool {
        self.ports.contains(&sa.port()) && ip_in_net(sa.ip(), self.addr, self.prefix)
    }
}

fn ip_in_net(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    let ip = match (ip, net) {
        (IpAddr::V6(v6), IpAddr::V4(_)) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => return false,
        },
        _ => ip,
    };
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

impl FromStr for Grant {
    type Err = Error;

    /// Parses `[tcp:|udp:]ADDR[/PREFIX]:PORT[-PORT]`, where an IPv6 address is written in brackets
    /// (`[::1]:80`, `[fd00::/8]:1-65535`) and `*` as the port means every port.
    fn from_str(spec: &str) -> Result<Self, Error> {
        let bad = |reason: &str| Error::NetGrant {
            spec: spec.to_string(),
            reason: reason.to_string(),
        };
        let (protocol, rest) = if let Some(r) = spec.strip_prefix("tcp:") {
            (Protocol::Tcp, r)
        } else if let Some(r) = spec.strip_prefix("udp:") {
            (Protocol::Udp, r)
        } else {
            (Protocol::Tcp, spec)
        };
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| bad("expected ADDR:PORT"))?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let (addr, prefix) = match host.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (host, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| {
            bad("address is not an IP address (names are not granted, addresses are)")
        })?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| bad("prefix length out of range"))?,
            None => max,
        };
        let ports = if port == "*" {
            0..=u16::MAX
        } else {
            let parse = |p: &str| {
                p.parse::<u16>()
                    .map_err(|_| bad("port is not a number from 0 to 65535"))
            };
            match port.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (parse(a)?, parse(b)?);
                    if a > b {
                        return Err(bad("port range is reversed"));
                    }
                    a..=b
                }
                None => {
                    let p = parse(port)?;
                    p..=p
                }
            }
        };
        Ok(Grant {
            protocol,
            addr,
            prefix,
            ports,
        })
    }
}

/// What a guest may do on the network. The default grants nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetPolicy {
    /// Destinations the guest may connect (TCP) or send datagrams (UDP) to.
    pub connect: Vec<Grant>,
    /// Local addresses the guest may bind and listen on (TCP) or bind and receive on (UDP).
    pub listen: Vec<Grant>,
    /// Whether the guest may resolve host names.
    pub dns: bool,
    /// Authorities the guest may send HTTP requests to through `wasi:http` (no socket grant
    /// needed: wasmbox makes the connection).
    #[serde(default)]
    pub http: Vec<crate::http::HttpGrant>,
}

/// What a socket address is about to be used for (mirrors wasmtime-wasi's socket address check).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrUse {
    /// Bind a TCP socket (also the implicit bind of `connect` and `listen`, with a wildcard address).
    TcpBind,
    /// Put a TCP socket in listening mode.
    TcpListen,
    /// Accept a client on a listening socket (address: the client).
    TcpAccept,
    /// Connect a TCP socket.
    TcpConnect,
    /// Bind a UDP socket.
    UdpBind,
    /// Send a datagram.
    UdpSend,
    /// Receive a datagram (address: the sender).
    UdpReceive,
}

impl NetPolicy {
    /// True when any socket at all may be used.
    pub fn any(&self) -> bool {
        !self.connect.is_empty() || !self.listen.is_empty()
    }

    /// True when the guest can reach the network in any way: sockets, name lookups, or
    /// outgoing HTTP (which wasmbox sends from the namespace it runs in).
    pub fn reaches_network(&self) -> bool {
        self.any() || self.dns || !self.http.is_empty()
    }

    fn grants(&self, list: &[Grant], proto: Protocol, sa: &SocketAddr) -> bool {
        list.iter().any(|g| g.protocol == proto && g.contains(sa))
    }

    fn has(&self, list: &[Grant], proto: Protocol) -> bool {
        list.iter().any(|g| g.protocol == proto)
    }

    /// Decides whether `sa` may be used for `use_`.
    pub fn allows(&self, sa: &SocketAddr, use_: AddrUse) -> bool {
        use Protocol::*;
        let ephemeral = sa.port() == 0 && sa.ip().is_unspecified();
        match use_ {
            // An explicit bind must match a listen grant; the wildcard bind that precedes a
            // connect is allowed when the guest may connect anywhere.
            AddrUse::TcpBind => {
                self.grants(&self.listen, Tcp, sa) || (ephemeral && self.has(&self.connect, Tcp))
            }
            AddrUse::TcpListen => self.grants(&self.listen, Tcp, sa),
            AddrUse::TcpAccept => self.has(&self.listen, Tcp),
            AddrUse::TcpConnect => self.grants(&self.connect, Tcp, sa),
            AddrUse::UdpBind => {
                self.grants(&self.listen, Udp, sa) || (ephemeral && self.has(&self.connect, Udp))
            }
            AddrUse::UdpSend => self.grants(&self.connect, Udp, sa),
            AddrUse::UdpReceive => {
                self.has(&self.listen, Udp) || self.grants(&self.connect, Udp, sa)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_grants() {
        let g: Grant = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(g.protocol, Protocol::Tcp);
        assert_eq!(g.prefix, 32);
        assert_eq!(g.ports, 8080..=8080);
        let g: Grant = "udp:10.0.0.0/8:53-54".parse().unwrap();
        assert_eq!(g.protocol, Protocol::Udp);
        assert!(g.contains(&sa("10.9.8.7:54")));
        assert!(!g.contains(&sa("11.0.0.1:53")));
        assert!(!g.contains(&sa("10.0.0.1:55")));
        let g: Grant = "[::1]:*".parse().unwrap();
        assert!(g.contains(&sa("[::1]:1")));
        let g: Grant = "[fd00::/8]:443".parse().unwrap();
        assert!(g.contains(&sa("[fd12::1]:443")));
        let g: Grant = "0.0.0.0/0:80".parse().unwrap();
        assert!(g.contains(&sa("1.2.3.4:80")));
    }

    #[test]
    fn rejects_bad_grants() {
        for bad in [
            "example.com:80",
            "127.0.0.1",
            "127.0.0.1:99999",
            "127.0.0.1/33:80",
            "127.0.0.1:90-80",
            "[::1]/129:1",
        ] {
            let err = bad.parse::<Grant>().unwrap_err().to_string();
            assert!(err.contains(bad), "{err}");
        }
    }

    #[test]
    fn deny_by_default() {
        let p = NetPolicy::default();
        for u in [
            AddrUse::TcpBind,
            AddrUse::TcpListen,
            AddrUse::TcpConnect,
            AddrUse::TcpAccept,
            AddrUse::UdpBind,
            AddrUse::UdpSend,
            AddrUse::UdpReceive,
        ] {
            assert!(!p.allows(&sa("127.0.0.1:80"), u));
            assert!(!p.allows(&sa("0.0.0.0:0"), u));
        }
    }

    #[test]
    fn any_grant_at_all_reaches_the_network() {
        assert!(!NetPolicy::default().reaches_network());
        let http = NetPolicy {
            http: vec!["api.example.com".parse().unwrap()],
            ..Default::default()
        };
        assert!(
            http.reaches_network() && !http.any(),
            "HTTP alone: no sockets"
        );
        let dns = NetPolicy {
            dns: true,
            ..Default::default()
        };
        assert!(dns.reaches_network());
        let connect = NetPolicy {
            connect: vec!["127.0.0.1:80".parse().unwrap()],
            ..Default::default()
        };
        assert!(connect.reaches_network());
    }

    #[test]
    fn connect_grants_are_exact() {
        let p = NetPolicy {
            connect: vec!["127.0.0.1:8000-8001".parse().unwrap()],
            ..Default::default()
        };
        assert!(p.allows(&sa("127.0.0.1:8000"), AddrUse::TcpConnect));
        assert!(p.allows(&sa("[::ffff:127.0.0.1]:8001"), AddrUse::TcpConnect));
        assert!(!p.allows(&sa("127.0.0.1:8002"), AddrUse::TcpConnect));
        assert!(!p.allows(&sa("127.0.0.2:8000"), AddrUse::TcpConnect));
        assert!(p.allows(&sa("0.0.0.0:0"), AddrUse::TcpBind));
        assert!(!p.allows(&sa("0.0.0.0:8000"), AddrUse::TcpBind));
        assert!(!p.allows(&sa("127.0.0.1:8000"), AddrUse::TcpListen));
        assert!(!p.allows(&sa("127.0.0.1:8000"), AddrUse::UdpSend));
    }

    #[test]
    fn listen_grants() {
        let p = NetPolicy {
            listen: vec!["127.0.0.1:9000".parse().unwrap()],
            ..Default::default()
        };
        assert!(p.allows(&sa("127.0.0.1:9000"), AddrUse::TcpBind));
        assert!(p.allows(&sa("127.0.0.1:9000"), AddrUse::TcpListen));
        assert!(p.allows(&sa("127.0.0.5:1234"), AddrUse::TcpAccept));
        assert!(!p.allows(&sa("0.0.0.0:9000"), AddrUse::TcpBind));
        assert!(!p.allows(&sa("0.0.0.0:0"), AddrUse::TcpBind));
        assert!(!p.allows(&sa("127.0.0.1:9000"), AddrUse::TcpConnect));
    }
}
