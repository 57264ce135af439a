//! Options shared by every command that starts a guest: grants, limits and the cache.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use wasmbox_runtime::Policy;
use wasmbox_runtime::net::Grant;
pub use wasmbox_runtime::policy::{parse_duration, parse_size};

/// What a guest is granted beyond its image or bundle.
#[derive(Args, Debug, Clone, Default)]
pub struct SandboxOptions {
    /// Grant a host directory: `HOST:GUEST[:ro|rw]` (repeatable).
    #[arg(short = 'v', long = "volume", value_name = "HOST:GUEST[:ro]")]
    pub volumes: Vec<String>,
    /// Set an environment variable: `KEY=VALUE`, or `KEY` to copy it from wasmbox's environment.
    #[arg(short = 'e', long = "env", value_name = "KEY[=VALUE]")]
    pub env: Vec<String>,
    /// Working directory inside the sandbox.
    #[arg(short = 'w', long = "workdir", value_name = "DIR")]
    pub workdir: Option<String>,
    /// Cap on the guest's memories and tables together (e.g. `64m`, `1g`, bytes).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub memory: Option<u64>,
    /// Wall-clock deadline (e.g. `10s`, `500ms`, `2m`); the guest is stopped with code 124.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Resource limit, as docker's: `nofile=N[:HARD]` caps the guest's open handles (default 1024).
    #[arg(long = "ulimit", value_name = "nofile=N", value_parser = parse_ulimit)]
    pub ulimit: Option<u64>,
    /// Grant the root filesystem read-only.
    #[arg(long)]
    pub read_only: bool,
    /// Give a wasm file `/dev/null`, `zero`, `full`, `random` and `urandom`, which wasmbox answers
    /// itself (images and bundles always have them).
    #[arg(long)]
    pub dev: bool,
    /// Let the guest connect to `[tcp:|udp:]ADDR[/PREFIX]:PORT[-PORT]` (repeatable).
    #[arg(long = "allow-connect", value_name = "GRANT")]
    pub allow_connect: Vec<String>,
    /// Let the guest listen on `[tcp:|udp:]ADDR:PORT` (repeatable). Preview 1 modules get it as a
    /// pre-opened listening socket.
    #[arg(long = "listen", value_name = "GRANT")]
    pub listen: Vec<String>,
    /// Let the guest resolve host names.
    #[arg(long = "allow-dns")]
    pub allow_dns: bool,
    /// Let the guest send `wasi:http` requests to `HOST`, `HOST:PORT`, `HOST:*` or `*.DOMAIN`
    /// (repeatable; `HOST` alone means port 80 for http and 443 for https). Without a grant every
    /// outgoing request fails with `HTTP-request-denied`.
    #[arg(long = "allow-http", value_name = "AUTHORITY")]
    pub allow_http: Vec<String>,
}

impl SandboxOptions {
    /// Applies the options on top of `policy` (flags win over the bundle or image).
    pub fn apply(&self, policy: &mut Policy) -> Result<()> {
        for v in &self.volumes {
            let (host, guest, ro) = parse_volume(v)?;
            let meta = std::fs::metadata(&host)
                .with_context(|| format!("volume {v:?}: host path {}", host.display()))?;
            if !meta.is_dir() {
                bail!(
                    "volume {v:?}: {} is not a directory (only directories can be granted)",
                    host.display()
                );
            }
            policy
                .grant_dir(host, &guest, ro)
                .map_err(|reason| anyhow::anyhow!("volume {v:?}: {reason}"))?;
        }
        policy.devices |= self.dev;
        for e in &self.env {
            let (k, val) = match e.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (e.clone(), std::env::var(e).unwrap_or_default()),
            };
            if k.is_empty() {
                bail!("env {e:?}: empty variable name");
            }
            policy.env.retain(|(ek, _)| *ek != k);
            policy.env.push((k, val));
        }
        if let Some(w) = &self.workdir {
            policy.cwd = wasmbox_runtime::policy::normalize_guest_path(w)
                .with_context(|| format!("workdir {w:?}: must not contain '..'"))?;
        }
        if let Some(m) = self.memory {
            policy.limits.memory = Some(m);
        }
        if let Some(t) = self.timeout {
            policy.limits.timeout = Some(t);
        }
        if let Some(n) = self.ulimit {
            policy.limits.open_handles = Some(n);
        }
        if self.read_only
            && let Some(root) = policy.dirs.iter_mut().find(|d| d.guest == "/")
        {
            root.read_only = true;
        }
        for g in &self.allow_connect {
            policy.net.connect.push(g.parse::<Grant>()?);
        }
        for g in &self.listen {
            policy.net.listen.push(g.parse::<Grant>()?);
        }
        policy.net.dns |= self.allow_dns;
        for g in &self.allow_http {
            policy.net.http.push(
                g.parse()
                    .map_err(|e: String| anyhow::anyhow!("--allow-http: {e}"))?,
            );
        }
        Ok(())
    }
}

/// How an HTTP component is served (by `wasmbox serve`, and by `wasmbox run` when what it runs
/// is one), and the bounds on what a client can make the server hold.
#[derive(Args, Debug, Clone, Default)]
pub struct ServeOptions {
    /// Where to listen for HTTP (default 0.0.0.0:8080). The listener is wasmbox's: the guest
    /// needs no socket grant for it.
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_addr)]
    pub addr: Option<std::net::SocketAddr>,
    /// Requests handled at once (default 256, at most 1000); more wait for a slot, up to 1024
    /// of them, and past that are refused with 503.
    #[arg(long, value_name = "N", value_parser = parse_concurrency)]
    pub max_concurrency: Option<usize>,
    /// How long one request's instance may run, its response body included (default 60s); past
    /// it the client gets 503, or the response is cut.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub request_timeout: Option<Duration>,
    /// After SIGTERM, how long requests in flight may take to finish (default 10s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub drain_timeout: Option<Duration>,
    /// How long a client has to send a request's head (default 30s). An HTTP/1.1 connection
    /// waiting for its next request is also under it.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub header_timeout: Option<Duration>,
    /// How long a connection with no request in flight stays open, and how long a request waits
    /// on a client that sends none of its body or reads none of the response (default 60s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub idle_timeout: Option<Duration>,
    /// Connections open at once (default: half the descriptor limit, less a reserve); more wait
    /// in the kernel's accept queue.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: Option<u32>,
    /// Bytes a request body may hold, counted as it streams (default: no limit); past it the
    /// client gets 413.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_body_size: Option<u64>,
    /// Bytes of a request's head, its request line and header fields (default 64k, from 8k to 1m);
    /// past it the client gets 431.
    #[arg(long, value_name = "SIZE", value_parser = parse_header_size)]
    pub max_header_size: Option<u64>,
    /// Memory one request's instance may use (default: the memory limit, which caps all
    /// instances together).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub request_memory: Option<u64>,
    /// Serve Prometheus metrics at http://HOST:PORT/metrics: requests, durations, instance
    /// slots, guest memory and CPU, traps, limit hits, outgoing requests, loads.
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_addr)]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Serve HTTPS with this PEM certificate chain, the server's certificate first (with
    /// --tls-key); HTTP/2 is offered by ALPN. SIGHUP reads both files again.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl ServeOptions {
    /// Applies the options on top of `policy`.
    pub fn apply(&self, policy: &mut Policy) {
        let s = &mut policy.serve;
        if let Some(a) = self.addr {
            s.addr = a;
        }
        if let Some(n) = self.max_concurrency {
            s.max_concurrency = n;
        }
        let set = |d: &mut Duration, o: Option<Duration>| *d = o.unwrap_or(*d);
        set(&mut s.request_timeout, self.request_timeout);
        set(&mut s.drain_timeout, self.drain_timeout);
        set(&mut s.header_timeout, self.header_timeout);
        set(&mut s.idle_timeout, self.idle_timeout);
        if let Some(n) = self.max_connections {
            s.max_connections = Some(n as usize);
        }
        if let Some(n) = self.max_body_size {
            s.max_body_size = Some(n);
        }
        if let Some(n) = self.max_header_size {
            s.max_header_size = n;
        }
        if let Some(n) = self.request_memory {
            s.request_memory = Some(n);
        }
        if let Some(a) = self.metrics_addr {
            s.metrics_addr = Some(a);
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            s.tls = Some(wasmbox_runtime::policy::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                in_guest: false,
            });
        }
    }
}

fn parse_header_size(s: &str) -> Result<u64, String> {
    parse_size(s).and_then(wasmbox_runtime::policy::check_header_size)
}

fn parse_addr(s: &str) -> Result<std::net::SocketAddr, String> {
    s.parse().map_err(|_| {
        format!(
            "{s:?} is not an address to listen on (HOST:PORT, e.g. 127.0.0.1:8080 or [::1]:8080)"
        )
    })
}

fn parse_concurrency(s: &str) -> Result<usize, String> {
    let max = wasmbox_runtime::MAX_CONCURRENCY;
    match s.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!("{s:?} is not a number of requests from 1 to {max}")),
    }
}

fn parse_volume(v: &str) -> Result<(PathBuf, String, bool)> {
    let parts: Vec<&str> = v.split(':').collect();
    let (host, guest, ro) = match parts.as_slice() {
        [h, g] => (*h, *g, false),
        [h, g, "ro"] => (*h, *g, true),
        [h, g, "rw"] => (*h, *g, false),
        [_, _, o] => bail!("volume {v:?}: unknown option {o:?} (expected ro or rw)"),
        _ => bail!("volume {v:?}: expected HOST:GUEST[:ro]"),
    };
    if host.is_empty() || guest.is_empty() {
        bail!("volume {v:?}: expected HOST:GUEST[:ro]");
    }
    if !guest.starts_with('/') {
        bail!("volume {v:?}: guest path must be absolute");
    }
    Ok((PathBuf::from(host), guest.to_string(), ro))
}

/// Where compiled code is cached, and how compiling is capped.
#[derive(Args, Debug, Clone, Default)]
pub struct CacheOptions {
    /// Compiled-code cache directory (else `$WASMBOX_CACHE_DIR`; default `/var/cache/wasmbox`
    /// for root, else `$XDG_CACHE_HOME/wasmbox`).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Compile without reading or writing the cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Cap on the memory one compile may take (else `$WASMBOX_COMPILE_MEMORY`; default 2g).
    /// Compiling runs in a helper process of its own; a module that needs more is refused.
    #[arg(long, value_name = "SIZE", value_parser = wasmbox_runtime::launch::parse_compile_memory)]
    pub compile_memory: Option<u64>,
}

impl CacheOptions {
    /// The launch settings these options give (the environment fills in the rest).
    pub fn settings(&self) -> wasmbox_runtime::launch::Settings {
        wasmbox_runtime::launch::Settings {
            cache_dir: self.cache_dir.clone(),
            no_cache: self.no_cache,
            compile_memory: self.compile_memory,
        }
    }
}

/// Parses `nofile=N[:HARD]` (the soft limit counts), within 16 and the most handles allowed.
pub fn parse_ulimit(s: &str) -> Result<u64, String> {
    let max = wasmbox_runtime::policy::MAX_HANDLES;
    let bad = || format!("{s:?}: expected nofile=N with N from 16 to {max}");
    let v = s.strip_prefix("nofile=").ok_or_else(bad)?;
    let soft = v.split(':').next().unwrap_or(v);
    soft.parse::<u64>()
        .ok()
        .filter(|n| (16..=max).contains(n))
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes() {
        assert_eq!(
            parse_volume("/a:/b:ro").unwrap(),
            ("/a".into(), "/b".into(), true)
        );
        assert_eq!(
            parse_volume("/a:/b").unwrap(),
            ("/a".into(), "/b".into(), false)
        );
        for bad in ["/a", "/a:b", "/a:/b:rx", ":/b", "/a:/b:ro:x"] {
            let e = parse_volume(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
    }

    proptest::proptest! {
        #[test]
        fn flag_parsers_never_panic(
            s in "\\PC{0,40}",
            n in "[0-9.eE+-]{0,30}(ms|s|m|h|k|m|g|ib|b)?",
        ) {
            for x in [&s, &n] {
                let _ = parse_size(x);
                if let Ok(d) = parse_duration(x) {
                    proptest::prop_assert!(d <= wasmbox_runtime::policy::MAX_TIMEOUT);
                }
                let _ = parse_volume(x);
                let _ = parse_ulimit(x);
                let _ = parse_ulimit(&format!("nofile={x}"));
            }
        }
    }
}
