//! How an HTTP component is served, and the bounds on what a client can make the server hold:
//! the settings, their defaults, and the caps derived from the descriptor limit.

use std::time::Duration;

/// Where and how wasmbox serves an HTTP component (`wasi:http/incoming-handler`), and the bounds
/// on what a client can make the server hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeConfig {
    /// Where wasmbox listens (the listener is wasmbox's: the guest needs no socket grant).
    pub addr: std::net::SocketAddr,
    /// Requests handled at once; further requests wait for a slot (at most
    /// [`WAITING_REQUESTS`] of them, holding at most [`WAITING_HEAD_BYTES`]), and while every slot
    /// is taken no new connection is accepted (they wait in the kernel's accept queue).
    pub max_concurrency: usize,
    /// How long one request's instance may run, response body included.
    pub request_timeout: Duration,
    /// After SIGTERM, how long requests in flight may take to finish.
    pub drain_timeout: Duration,
    /// How long a client has to send a request's head (HTTP/1.1; slowloris). A connection
    /// waiting for its next request is also under it.
    pub header_timeout: Duration,
    /// How long a connection with no request in flight stays open; and how long a request waits
    /// on a client that sends none of its body, or reads none of the response, before it ends.
    pub idle_timeout: Duration,
    /// Connections open at once; `None` derives it from the descriptor limit
    /// ([`default_max_connections`]). Past it, new connections wait in the kernel's accept queue.
    pub max_connections: Option<usize>,
    /// Bytes a request body may hold, counted as it streams (413 past it); `None` is no limit
    /// (bodies stream and are never held whole).
    pub max_body_size: Option<u64>,
    /// Bytes of a request's head (request line and header fields; HPACK-decoded in HTTP/2); 431
    /// past it.
    pub max_header_size: u64,
    /// Bytes of memory one request's instance may use; `None` is the container's memory limit,
    /// which caps all instances together.
    pub request_memory: Option<u64>,
    /// HTTPS instead of HTTP: the certificate chain and private key to serve with.
    pub tls: Option<TlsFiles>,
    /// Where Prometheus metrics are served (`/metrics`), if anywhere. In a pod, one endpoint
    /// covers all its HTTP containers.
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// The PEM files HTTPS is served with: a certificate chain (the server's certificate first) and
/// its private key. Read at start and again on SIGHUP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain.
    pub cert: std::path::PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: std::path::PathBuf,
    /// Whether the paths are the guest's (from annotations: read beneath the container's grants,
    /// never outside them) rather than the host's (from flags).
    pub in_guest: bool,
}

/// The largest certificate-chain or key file read.
pub const MAX_TLS_FILE: u64 = 1 << 20;

/// Where HTTP components are served unless told otherwise (as runwasi and `wasmtime serve`).
pub const DEFAULT_HTTP_ADDR: &str = "0.0.0.0:8080";
/// Requests an HTTP component handles at once unless told otherwise.
pub const DEFAULT_MAX_CONCURRENCY: usize = 256;
/// The most requests at once that may be asked for (instances the pooling allocator holds).
pub const MAX_CONCURRENCY: usize = 1000;
/// How long a drain waits for requests in flight unless told otherwise.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one request may run unless told otherwise.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a client has to send a request head unless told otherwise.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an idle connection, or a request stalled on its client, lasts unless told otherwise.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Bytes of a request head unless told otherwise.
pub const DEFAULT_MAX_HEADER_SIZE: u64 = 64 << 10;
/// The smallest request-head limit that may be set (HTTP/1.1's read buffer holds a head).
pub const MIN_HEADER_SIZE: u64 = 8 << 10;
/// The largest request head that may be allowed.
pub const MAX_HEADER_SIZE: u64 = 1 << 20;
/// Requests that may wait for an instance slot at once; past it (or [`WAITING_HEAD_BYTES`]), a
/// request is refused with 503 (HTTP/2: the stream is reset with `REFUSED_STREAM`).
pub const WAITING_REQUESTS: usize = 1024;
/// Bytes of request heads that requests waiting for a slot may hold together.
pub const WAITING_HEAD_BYTES: usize = 16 << 20;
/// Descriptors kept back from connections and outgoing requests when their caps are derived.
const RESERVED_DESCRIPTORS: u64 = 64;

/// Connections open at once when not told otherwise: half of what the descriptor limit leaves
/// after a reserve, so outgoing requests ([`max_outgoing_connections`]), files and the log have
/// their share.
pub fn default_max_connections(nofile: u64) -> usize {
    (nofile.saturating_sub(RESERVED_DESCRIPTORS) / 2).max(16) as usize
}

/// Outgoing HTTP connections one server holds at once, all handlers together: a quarter of what
/// the descriptor limit leaves after a reserve.
pub fn max_outgoing_connections(nofile: u64) -> usize {
    (nofile.saturating_sub(RESERVED_DESCRIPTORS) / 4).max(8) as usize
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            addr: DEFAULT_HTTP_ADDR.parse().expect("a valid address"),
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: None,
            max_body_size: None,
            max_header_size: DEFAULT_MAX_HEADER_SIZE,
            request_memory: None,
            tls: None,
            metrics_addr: None,
        }
    }
}

/// Checks a request-head limit: from [`MIN_HEADER_SIZE`] to [`MAX_HEADER_SIZE`].
pub fn check_header_size(n: u64) -> std::result::Result<u64, String> {
    if (MIN_HEADER_SIZE..=MAX_HEADER_SIZE).contains(&n) {
        Ok(n)
    } else {
        Err(format!(
            "{n} bytes is out of range for a request head ({}k to {}k)",
            MIN_HEADER_SIZE >> 10,
            MAX_HEADER_SIZE >> 10
        ))
    }
}
