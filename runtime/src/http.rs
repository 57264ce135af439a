//! Outgoing HTTP: which authorities a guest may send requests to through `wasi:http`
//! (`outgoing-handler` in preview 2, `client` in 0.3), and the hooks that enforce it.
//!
//! Everything is denied unless granted. A request is checked against the grants before any
//! connection or name lookup is made; a denied request fails with `HTTP-request-denied` and is
//! logged. Name resolution for granted hosts is wasmbox's own (it is not a socket grant).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};
use wasmtime_wasi_http::{RequestOptions, WasiBody, WasiHttpHooks};

/// One authority a guest may send HTTP and HTTPS requests to.
///
/// Written `HOST` (the scheme's default port: 80 for `http`, 443 for `https`), `HOST:PORT`,
/// `HOST:*` (any port), or with a leading `*.` (`*.example.com`: any name below `example.com`, not
/// `example.com` itself). `HOST` is a name or an IP address; IPv6 addresses are bracketed
/// (`[::1]:8080`). Names compare case-insensitively.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpGrant {
    /// The host name or address, lower case, without brackets or the `*.` prefix.
    pub host: String,
    /// True for `*.HOST`: names strictly below `host`.
    pub subdomains: bool,
    /// The port granted.
    pub port: Port,
}

/// The port part of an [`HttpGrant`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Port {
    /// 80 for `http`, 443 for `https`.
    Default,
    /// Any port.
    Any,
    /// This port.
    Only(u16),
}

impl FromStr for HttpGrant {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("HTTP grant {s:?}: {why}");
        let t = s.trim();
        if t.contains("://") || t.contains('/') {
            return Err(bad("give an authority (host or host:port), not a URL"));
        }
        if t.contains('@') {
            return Err(bad("give an authority without a user name ('@')"));
        }
        let (host, port) = if let Some(rest) = t.strip_prefix('[') {
            let (h, after) = rest
                .split_once(']')
                .ok_or_else(|| bad("missing ']' after an IPv6 address"))?;
            h.parse::<std::net::Ipv6Addr>()
                .map_err(|_| bad("not an IPv6 address in brackets"))?;
            match after {
                "" => (h, None),
                p => (
                    h,
                    Some(
                        p.strip_prefix(':')
                            .ok_or_else(|| bad("expected ':PORT' after ']'"))?,
                    ),
                ),
            }
        } else {
            match t.rsplit_once(':') {
                Some((h, _)) if h.contains(':') => {
                    return Err(bad(
                        "an IPv6 address goes in brackets: [ADDR] or [ADDR]:PORT",
                    ));
                }
                Some((h, p)) => (h, Some(p)),
                None => (t, None),
            }
        };
        let port = match port {
            None => Port::Default,
            Some("*") => Port::Any,
            Some(p) => Port::Only(
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| bad("the port must be 1-65535 or *"))?,
            ),
        };
        let (host, subdomains) = match host.strip_prefix("*.") {
            Some(h) => (h, true),
            None => (host, false),
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let valid = host.parse::<std::net::Ipv6Addr>().is_ok() // bracketed, checked above
            || host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !valid || host.contains('*') {
            return Err(bad(
                "the host must be a name, an IP address or *.NAME (no other wildcards)",
            ));
        }
        Ok(HttpGrant {
            host: host.to_ascii_lowercase(),
            subdomains,
            port,
        })
    }
}

impl fmt::Display for HttpGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.subdomains {
            f.write_str("*.")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            f.write_str(&self.host)?;
        }
        match self.port {
            Port::Default => Ok(()),
            Port::Any => f.write_str(":*"),
            Port::Only(p) => write!(f, ":{p}"),
        }
    }
}

impl HttpGrant {
    /// True when a request to `host` (lower case, IPv6 without brackets) on `port` is granted,
    /// `default_port` being its scheme's.
    pub fn allows(&self, host: &str, port: u16, default_port: u16) -> bool {
        let port_ok = match self.port {
            Port::Default => port == default_port,
            Port::Any => true,
            Port::Only(p) => port == p,
        };
        let host_ok = if self.subdomains {
            host.strip_suffix(self.host.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.'))
        } else {
            host == self.host
        };
        port_ok && host_ok
    }
}

/// Decides whether a request to `uri` may be sent under `grants`; the error says why not.
pub fn check(grants: &[HttpGrant], uri: &::http::Uri) -> Result<(), String> {
    let scheme = uri.scheme_str().unwrap_or("https");
    let default_port = match scheme {
        "http" => 80,
        "https" => 443,
        other => return Err(format!("scheme {other:?} is not http or https")),
    };
    let authority = uri.authority().ok_or("the request has no authority")?;
    // What is checked must be what is connected to: the whole authority, so no user name (it
    // would be looked up as part of the name), brackets only around an IPv6 address, and at
    // most one trailing dot.
    if authority.as_str().contains('@') {
        return Err(format!("{authority} carries a user name"));
    }
    let raw = authority.host();
    let host = match raw.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) if v6.parse::<std::net::Ipv6Addr>().is_ok() => v6.to_ascii_lowercase(),
        Some(_) => return Err(format!("{authority}: brackets hold only an IPv6 address")),
        None => raw.strip_suffix('.').unwrap_or(raw).to_ascii_lowercase(),
    };
    let port = authority.port_u16().unwrap_or(default_port);
    if grants.iter().any(|g| g.allows(&host, port, default_port)) {
        Ok(())
    } else {
        Err(format!("{authority} is not granted (--allow-http)"))
    }
}

/// The `wasi:http` hooks of one guest: every request is checked against its grants first, and
/// the connections it opens are counted against its handle limit and the server's cap.
pub(crate) struct Hooks {
    pub(crate) grants: Vec<HttpGrant>,
    /// Outgoing connections this guest holds open (connecting, or carrying a request).
    open: Arc<AtomicUsize>,
    /// The most it may hold: its handle limit.
    most: usize,
    /// Permits for the outgoing connections of every instance of a server together.
    shared: Option<Arc<tokio::sync::Semaphore>>,
    /// Where outgoing requests are counted, if anywhere.
    metrics: Option<crate::metrics::Observer>,
    /// The span outgoing requests are children of, when traces are exported.
    trace: Option<opentelemetry::Context>,
}

impl Hooks {
    /// Hooks for a guest granted `grants`, holding at most `most` connections, and, when
    /// `shared` is given, each one also under a permit of it.
    pub(crate) fn new(
        grants: Vec<HttpGrant>,
        most: usize,
        shared: Option<Arc<tokio::sync::Semaphore>>,
    ) -> Self {
        Self {
            grants,
            open: Arc::default(),
            most,
            shared,
            metrics: None,
            trace: None,
        }
    }

    /// Makes each outgoing request a client span, child of `parent`, and carries its
    /// `traceparent` to the server it reaches.
    pub(crate) fn traced(mut self, parent: Option<opentelemetry::Context>) -> Self {
        self.trace = parent;
        self
    }

    /// Counts each outgoing request's outcome in `metrics`.
    pub(crate) fn counted_in(mut self, metrics: Option<crate::metrics::Observer>) -> Self {
        self.metrics = metrics;
        self
    }

    fn count(&self, outcome: &'static str) {
        if let Some(m) = &self.metrics {
            m.outgoing(outcome);
        }
    }

    /// A hold on one more outgoing connection, or why there is none.
    fn connection(&self) -> Result<Connection, &'static str> {
        let permit = match &self.shared {
            Some(s) => Some(
                s.clone()
                    .try_acquire_owned()
                    .map_err(|_| "the server's outgoing connections are all in use")?,
            ),
            None => None,
        };
        if self.open.fetch_add(1, Ordering::SeqCst) >= self.most {
            self.open.fetch_sub(1, Ordering::SeqCst);
            return Err("the handler holds as many outgoing connections as its handle limit");
        }
        Ok(Connection {
            open: self.open.clone(),
            _permit: permit,
        })
    }
}

/// One outgoing connection counted: released when the connection ends.
struct Connection {
    open: Arc<AtomicUsize>,
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::SeqCst);
    }
}

impl WasiHttpHooks for Hooks {
    fn send_request(
        &mut self,
        mut request: ::http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        ::http::Response<WasiBody>,
                        Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                    ),
                    wasmtime_wasi_http::Error,
                >,
            > + Send,
    > {
        _ = fut;
        if let Err(why) = check(&self.grants, request.uri()) {
            tracing::warn!(method = %request.method(), uri = %request.uri(), "outgoing HTTP request denied: {why}");
            self.count("denied");
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        let connection = match self.connection() {
            Ok(c) => c,
            Err(why) => {
                tracing::warn!(method = %request.method(), uri = %request.uri(), "outgoing HTTP request refused: {why}");
                self.count("limited");
                return Box::new(async { Err(wasmtime_wasi_http::Error::ConnectionLimitReached) });
            }
        };
        self.count("allowed");
        let span = self.trace.as_ref().and_then(|parent| {
            let (method, uri) = (request.method().clone(), request.uri().clone());
            crate::trace::ClientSpan::start(parent, &method, &uri, request.headers_mut())
        });
        Box::new(async move {
            use http_body_util::BodyExt;
            let sent = wasmtime_wasi_http::default_send_request(request, options).await;
            if let Some(span) = span {
                span.end(match &sent {
                    Ok((res, _)) => Ok(res.status().as_u16()),
                    Err(e) => Err(format!("{e:?}")),
                });
            }
            let (res, io) = sent?;
            // The connection lives as long as the task driving it.
            let io = async move {
                let _connection = connection;
                io.await
            };
            Ok((
                res.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(s: &str) -> HttpGrant {
        s.parse().unwrap()
    }

    fn ok(grants: &[&str], uri: &str) -> bool {
        let grants: Vec<_> = grants.iter().map(|s| g(s)).collect();
        check(&grants, &uri.parse().unwrap()).is_ok()
    }

    #[test]
    fn grants_parse_and_print_back() {
        for s in [
            "example.com",
            "example.com:8080",
            "example.com:*",
            "*.example.com",
            "127.0.0.1:80",
            "[::1]:8080",
            "[::1]",
        ] {
            assert_eq!(g(s).to_string(), s);
        }
        assert_eq!(g("API.Example.COM").host, "api.example.com");
    }

    #[test]
    fn bad_grants_say_why() {
        for (s, why) in [
            ("http://example.com", "not a URL"),
            ("example.com/x", "not a URL"),
            ("example.com:0", "1-65535"),
            ("example.com:http", "1-65535"),
            ("", "no host"),
            ("*.", "no host"),
            ("ex*ample.com", "no other wildcards"),
            ("a..b", "no other wildcards"),
            ("[::1", "missing ']'"),
            ("[nope]:80", "IPv6"),
            ("::1", "in brackets"),
            ("a:b:80", "in brackets"),
            ("user@example.com", "user name"),
        ] {
            let e = s.parse::<HttpGrant>().unwrap_err();
            assert!(e.contains(why), "{s}: {e}");
        }
    }

    #[test]
    fn requests_match_host_port_and_scheme_default() {
        assert!(ok(&["example.com"], "https://example.com/"));
        assert!(ok(&["example.com"], "http://example.com/x"));
        assert!(ok(&["example.com"], "https://EXAMPLE.com:443/"));
        assert!(!ok(&["example.com"], "https://example.com:8443/"));
        assert!(!ok(&["example.com"], "http://example.com:443/"));
        assert!(ok(&["example.com:8443"], "https://example.com:8443/"));
        assert!(ok(&["example.com:*"], "http://example.com:1/"));
        assert!(!ok(&["example.com"], "https://example.com.evil.test/"));
        assert!(!ok(&["example.com"], "https://sub.example.com/"));
        assert!(ok(&["*.example.com"], "https://a.b.example.com/"));
        assert!(!ok(&["*.example.com"], "https://example.com/"));
        assert!(!ok(&["*.example.com"], "https://badexample.com/"));
        assert!(ok(&["[::1]:8080"], "http://[::1]:8080/"));
        assert!(!ok(&["127.0.0.1:8080"], "http://[::1]:8080/"));
        assert!(ok(&["127.0.0.1:8080"], "http://127.0.0.1:8080/"));
        assert!(!ok(&[], "http://127.0.0.1:8080/"));
        assert!(!ok(&["example.com:*"], "ftp://example.com/"));
        // The authority checked is the one connected to.
        assert!(!ok(&["example.com"], "http://x@example.com/"));
        assert!(!ok(&["example.com"], "http://[example.com]/"));
        assert!(ok(&["example.com"], "http://example.com./"));
        assert!(!ok(&["example.com"], "http://example.com../"));
    }

    fn request(uri: &str) -> ::http::Request<WasiBody> {
        use http_body_util::BodyExt;
        let body = http_body_util::Empty::<bytes::Bytes>::new()
            .map_err(|never| match never {})
            .boxed_unsync();
        ::http::Request::get(uri).body(body).unwrap()
    }

    async fn send(
        grants: &[&str],
        uri: &str,
    ) -> Result<::http::Response<WasiBody>, wasmtime_wasi_http::Error> {
        let mut hooks = Hooks::new(grants.iter().map(|s| g(s)).collect(), 16, None);
        let fut = hooks.send_request(request(uri), None, Box::new(async { Ok(()) }));
        let (res, io) = std::pin::Pin::from(fut).await?;
        tokio::spawn(std::pin::Pin::from(io));
        Ok(res)
    }

    #[test]
    fn outgoing_connections_count_against_the_guest_and_the_server() {
        let server = Arc::new(tokio::sync::Semaphore::new(2));
        let a = Hooks::new(vec![], 1, Some(server.clone()));
        let b = Hooks::new(vec![], 5, Some(server.clone()));
        let held = a.connection().unwrap();
        assert!(a.connection().err().unwrap().contains("handle limit"));
        let other = b.connection().unwrap();
        assert!(b.connection().err().unwrap().contains("server's"));
        drop(held);
        let again = b.connection().unwrap();
        assert_eq!(b.open.load(Ordering::SeqCst), 2);
        drop((other, again));
        assert_eq!(
            (b.open.load(Ordering::SeqCst), server.available_permits()),
            (0, 2)
        );
        // A guest of its own (a command) is held only by its handle limit.
        let alone = Hooks::new(vec![], 2, None);
        let _held = (alone.connection().unwrap(), alone.connection().unwrap());
        assert!(alone.connection().is_err());
    }

    #[test]
    fn hooks_send_granted_requests_and_deny_the_rest_without_connecting() {
        use std::io::{Read, Write};
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = server.local_addr().unwrap().port();
        let (done, denied_all) = std::sync::mpsc::channel::<()>();
        let accepted = std::thread::spawn(move || {
            let (mut conn, _) = server.accept().unwrap();
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && conn.read(&mut b).unwrap() == 1 {
                head.push(b[0]);
            }
            conn.write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                .unwrap();
            // The server stays up for the denied requests below: had one connected, its
            // connection would be waiting in the backlog once they are done.
            denied_all.recv().unwrap();
            server.set_nonblocking(true).unwrap();
            (String::from_utf8(head).unwrap(), server.accept().is_ok())
        });
        let granted = format!("127.0.0.1:{port}");
        rt.block_on(async {
            let uri = format!("http://127.0.0.1:{port}/x");
            let res = send(&[&granted], &uri).await.unwrap();
            assert_eq!(res.status(), 204);
            for (grants, uri) in [
                (vec![], uri.clone()),
                (vec!["127.0.0.1"], uri.clone()),
                (vec![granted.as_str()], format!("http://localhost:{port}/x")),
                (
                    vec![granted.as_str()],
                    format!("https://127.0.0.1:{}/x", port + 1),
                ),
            ] {
                let sent =
                    tokio::time::timeout(std::time::Duration::from_secs(10), send(&grants, &uri));
                let e = sent.await.expect("a denied request waited").unwrap_err();
                assert!(
                    matches!(e, wasmtime_wasi_http::Error::HttpRequestDenied),
                    "{uri} under {grants:?}: {e:?}"
                );
            }
        });
        done.send(()).unwrap();
        let (head, second) = accepted.join().unwrap();
        assert!(head.starts_with("GET /x HTTP/1.1\r\n"), "{head}");
        assert!(!second, "a denied request connected");
    }
}
