//! Serving an HTTP component (`wasi:http/incoming-handler@0.2`, or a WASI 0.3 service exporting
//! `wasi:http/handler@0.3`, in `p3.rs`): wasmbox's own listener speaks
//! HTTP/1.1 (keep-alive) and HTTP/2, in the clear (h2c) or over TLS (`tls.rs`: HTTP/2 by ALPN,
//! the certificate read again on SIGHUP) through hyper; every request gets a fresh
//! instance of the pre-instantiated component, with the guest's grants and its own memory limit
//! and deadline; the handler's output is tagged with the request's id; one access-log line per
//! request; SIGTERM drains.
//!
//! Faults stay in their request: a trap, a memory or time limit, or a handler that returns
//! without a response gives that client a 500 (503 for the deadline) and a log line, and the
//! server goes on. A client that goes away mid-response ends its instance at once.
//!
//! What a client can make the server hold is bounded (`ServeConfig`): connections, the time to
//! send a head, idle connections, the size of a head and of a body, requests waiting for a slot
//! and the bytes of their heads, a request's time and memory, the instances' memory together,
//! outgoing connections, and the log's queue.

mod access;
mod admit;
mod log;
mod p3;
mod request;
mod tls;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wasmtime_wasi_http::handler::ProxyPre;

use crate::exit::ExitReason;
use crate::filesystem::Filesystem;
use crate::host::P2Host;
use crate::policy::{Policy, ServeConfig};
use crate::shared::Shared;
use crate::wasi::Output;

use log::LineSink;

/// How long the listener rests after a failed accept (out of descriptors, say).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
/// Streams one HTTP/2 connection may have open at once.
const H2_STREAMS: u32 = 100;
/// Bytes an HTTP/2 client may send on one stream, and on one connection, before the handler
/// reads them (the flow-control windows).
const H2_STREAM_WINDOW: u32 = 64 << 10;
const H2_CONNECTION_WINDOW: u32 = 256 << 10;

/// What one request's instance needs, shared by every request.
struct Service {
    engine: wasmtime::Engine,
    pre: ProxyPre<P2Host>,
    policy: Policy,
    preopens: Vec<(std::path::PathBuf, String, bool)>,
    shared: Arc<Shared>,
    slots: Arc<Semaphore>,
    /// Requests waiting for a slot.
    waiting: Arc<admit::Waiting>,
    /// Outgoing connections of every instance together.
    outgoing: Arc<Semaphore>,
    out: LineSink,
    err: LineSink,
    next_id: AtomicU64,
    /// HTTPS: what connections are accepted through.
    tls: Option<tls::Tls>,
    /// Requests handled at once.
    concurrency: usize,
    /// The port it listens on.
    port: u16,
    /// What one used instance slot keeps resident, at most, between requests.
    residue: u64,
    /// The most instance slots in use at once so far: the slots it has used.
    peak: std::sync::atomic::AtomicUsize,
    /// Where this server's metrics are counted, if anywhere.
    metrics: Option<crate::metrics::Observer>,
    /// Ends every request at once (a forced stop, or the end of the drain).
    stop: CancellationToken,
    tasks: TaskTracker,
}

/// What a server is made of.
pub(crate) struct Parts {
    pub(crate) engine: wasmtime::Engine,
    pub(crate) pre: ProxyPre<P2Host>,
    /// How many instances of the component the engine's pool holds at once, if it is bounded.
    pub(crate) capacity: Option<usize>,
    /// What one used pool slot keeps resident between requests, at most.
    pub(crate) residue: u64,
    pub(crate) policy: Policy,
    /// Bound already ([`crate::Prepared::listen_with`]), or `None` to bind `policy.serve.addr`.
    pub(crate) listener: Option<std::net::TcpListener>,
    pub(crate) fs: Filesystem,
    pub(crate) stdout: Output,
    pub(crate) stderr: Output,
    pub(crate) shared: Arc<Shared>,
    /// Where to count this server's metrics, the labels they carry, and where they are served.
    pub(crate) metrics: Option<(
        Arc<crate::metrics::Metrics>,
        crate::metrics::Labels,
        SocketAddr,
    )>,
    /// Where the component's code came from, and how long loading it took.
    pub(crate) loaded: Option<(crate::LoadedFrom, Duration)>,
}

/// A server running: its future yields its exit reason.
pub(crate) type Server = Pin<Box<dyn Future<Output = ExitReason> + Send>>;

/// This process's soft limit on open descriptors.
fn descriptor_limit() -> u64 {
    rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX)
}

/// Serves until killed. Returns the bound address and the server.
pub(crate) fn start(parts: Parts) -> crate::Result<(SocketAddr, Server)> {
    let Parts {
        engine,
        pre,
        capacity,
        residue,
        policy,
        listener,
        fs,
        stdout,
        stderr,
        shared,
        metrics,
        loaded,
    } = parts;
    let addr = policy.serve.addr;
    let listen = |source| crate::Error::Serve { addr, source };
    let tls = policy
        .serve
        .tls
        .as_ref()
        .map(|files| tls::Tls::load(files, &fs))
        .transpose()
        .map_err(|reason| crate::Error::Tls { reason })?;
    let std_listener = match listener {
        Some(l) => l,
        None => std::net::TcpListener::bind(addr).map_err(listen)?,
    };
    std_listener.set_nonblocking(true).map_err(listen)?;
    let bound = std_listener.local_addr().map_err(listen)?;
    let listener = tokio::net::TcpListener::from_std(std_listener).map_err(listen)?;
    let (out, out_done) = LineSink::start("stdout", stdout);
    let (err, err_done) = LineSink::start("stderr", stderr);
    // The readiness line, on the server's stderr (the container's log under containerd): the
    // listener is bound and accepting once it is written.
    if let Some((_, _, at)) = &metrics {
        err.line(format!("wasmbox: metrics at http://{at}/metrics"));
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    err.line(format!("wasmbox: serving {scheme}://{bound}"));
    // Requests beyond what the instance pool holds wait for a slot instead of failing.
    let mut concurrency = policy.serve.max_concurrency.max(1);
    if let Some(fits) = capacity.filter(|&fits| fits < concurrency) {
        err.line(format!(
            "wasmbox: at most {fits} requests at once: the instance pool holds {fits} instances of this component"
        ));
        concurrency = fits;
    }
    let nofile = descriptor_limit();
    let connections = policy
        .serve
        .max_connections
        .unwrap_or_else(|| crate::policy::default_max_connections(nofile));
    let svc = Arc::new_cyclic(|me: &std::sync::Weak<Service>| Service {
        engine,
        pre,
        preopens: fs.preopens.clone(),
        shared: shared.clone(),
        slots: Arc::new(Semaphore::new(concurrency)),
        waiting: admit::Waiting::new(
            crate::policy::WAITING_REQUESTS,
            crate::policy::WAITING_HEAD_BYTES,
        ),
        outgoing: Arc::new(Semaphore::new(crate::policy::max_outgoing_connections(
            nofile,
        ))),
        policy,
        out,
        err,
        next_id: AtomicU64::new(0),
        tls,
        concurrency,
        port: bound.port(),
        residue,
        peak: std::sync::atomic::AtomicUsize::new(0),
        metrics: metrics.map(|(m, labels, _)| {
            let sampled: std::sync::Weak<dyn crate::metrics::Sampled> = me.clone();
            m.observer(labels, sampled)
        }),
        stop: CancellationToken::new(),
        tasks: TaskTracker::new(),
    });
    let held: std::sync::Weak<dyn crate::shared::HostHeld> = Arc::downgrade(&svc) as _;
    let _ = shared.host.set(held);
    if let (Some(o), Some((from, took))) = (&svc.metrics, loaded) {
        o.loaded(from, took);
    }
    let fut = async move {
        let reason = tokio::select! {
            reason = accept_loop(&svc, listener, connections) => reason,
            never = reload_on_hangup(&svc, &fs) => match never {},
        };
        svc.stop.cancel();
        svc.tasks.close();
        svc.tasks.wait().await;
        drop(svc);
        drop(fs);
        // Every line written before the end reaches the log before the status is known.
        let _ = tokio::task::spawn_blocking(move || {
            let _ = out_done.join();
            let _ = err_done.join();
        })
        .await;
        reason
    };
    Ok((bound, Box::pin(fut)))
}

type Builder = hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>;

/// hyper's connection settings: the head's time and size limits, HTTP/2's stream and window
/// bounds.
fn builder(serve: &ServeConfig) -> Builder {
    let head = serve.max_header_size as usize;
    let mut b = Builder::new(hyper_util::rt::TokioExecutor::new());
    b.http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(serve.header_timeout)
        // The read buffer holds a head while it is parsed: one that does not fit gets 431.
        .max_buf_size(head);
    b.http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .max_header_list_size(head as u32)
        .max_concurrent_streams(H2_STREAMS)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW);
    b
}

async fn accept_loop(
    svc: &Arc<Service>,
    listener: tokio::net::TcpListener,
    connections: usize,
) -> ExitReason {
    let builder = builder(&svc.policy.serve);
    let open = Arc::new(Semaphore::new(connections));
    let drain = CancellationToken::new();
    let drain_timeout = svc.policy.serve.drain_timeout;
    // The first kill: SIGTERM or SIGINT (a terminal's ^C) drains, as `wasmtime serve` does on
    // ^C; any other signal ends everything at once.
    let killed = || {
        let signal = svc.shared.kill_signal.load(Ordering::SeqCst);
        (!matches!(signal, libc::SIGTERM | libc::SIGINT)).then_some(ExitReason::Signaled(signal))
    };
    loop {
        // Past the connection cap, or while every slot is taken, new connections wait in the
        // kernel's accept queue.
        let admitted = async {
            let connection = open.clone().acquire_owned().await;
            drop(svc.slots.acquire().await);
            connection
        };
        let connection = tokio::select! {
            biased;
            () = svc.shared.kill.notified() => match killed() {
                Some(end) => return end,
                None => break,
            },
            permit = admitted => permit.expect("the connection semaphore is never closed"),
        };
        let accepted = tokio::select! {
            biased;
            () = svc.shared.kill.notified() => match killed() {
                Some(end) => return end,
                None => break,
            },
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                // Out of descriptors, say: the connections in flight go on; try again shortly.
                tracing::warn!(error = %e, "accepting a connection");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        svc.tasks.spawn(connection_task(
            svc.clone(),
            builder.clone(),
            stream,
            connection,
            drain.clone(),
        ));
    }
    // Draining: no new connection; requests in flight finish, up to the grace period.
    drop(listener);
    svc.err.line(format!(
        "wasmbox: draining: no new connections; requests in flight have {drain_timeout:?} to finish"
    ));
    drain.cancel();
    svc.tasks.close();
    tokio::select! {
        biased;
        () = svc.shared.kill.notified() => {
            ExitReason::Signaled(svc.shared.kill_signal.load(Ordering::SeqCst))
        }
        () = svc.tasks.wait() => ExitReason::Exited(0),
        () = tokio::time::sleep(drain_timeout) => {
            tracing::info!("drain period over: ending the requests still running");
            ExitReason::Exited(0)
        }
    }
}

/// Serves one connection until it ends, the server stops, or it is closed gracefully: at the
/// drain, or once it has had no request in flight for the idle timeout. A client that reads
/// nothing of what is sent to it for the idle timeout is cut off.
async fn connection_task(
    svc: Arc<Service>,
    builder: Builder,
    stream: tokio::net::TcpStream,
    _open: tokio::sync::OwnedSemaphorePermit,
    drain: CancellationToken,
) {
    let io = admit::Stalling::new(stream, svc.policy.serve.idle_timeout);
    let Some(tls) = &svc.tls else {
        return serve_over(&svc, builder, io, drain).await;
    };
    // The handshake is part of the head: a client has the header timeout for both.
    let handshake = tls.acceptor.accept(io);
    let done = tokio::select! {
        biased;
        () = svc.stop.cancelled() => return,
        () = drain.cancelled() => return,
        done = tokio::time::timeout(svc.policy.serve.header_timeout, handshake) => done,
    };
    match done {
        Ok(Ok(stream)) => serve_over(&svc, builder, stream, drain).await,
        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
        Err(_) => {}
    }
}

/// Serves HTTP over `io` (the socket, or TLS over it) until the connection ends, the server
/// stops, or it is closed gracefully (drain, idle).
async fn serve_over<IO>(svc: &Arc<Service>, builder: Builder, io: IO, drain: CancellationToken)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let activity = admit::Activity::new();
    let conn_svc = svc.clone();
    let conn_activity = activity.clone();
    let service = hyper::service::service_fn(move |req| {
        let busy = conn_activity.begin();
        conn_svc.clone().handle(req, busy)
    });
    let conn = builder
        .serve_connection(hyper_util::rt::TokioIo::new(io), service)
        .into_owned();
    let mut conn = std::pin::pin!(conn);
    let idle = activity.idle_for(svc.policy.serve.idle_timeout);
    let mut idle = std::pin::pin!(idle);
    let mut closing = false;
    loop {
        tokio::select! {
            biased;
            () = svc.stop.cancelled() => return,
            _ = conn.as_mut() => return,
            () = drain.cancelled(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            () = idle.as_mut(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
}

/// SIGHUP (a kill with it) reads the certificate again, for the handshakes after it; with no TLS
/// there is nothing to read and the server goes on. Never returns.
async fn reload_on_hangup(svc: &Service, fs: &Filesystem) -> std::convert::Infallible {
    loop {
        svc.shared.hangup.notified().await;
        match &svc.tls {
            None => svc
                .err
                .line("wasmbox: SIGHUP: nothing to reload (serving without TLS)".to_string()),
            Some(tls) => match tls.reload(fs) {
                Ok(()) => svc.err.line(format!(
                    "wasmbox: SIGHUP: TLS certificate reloaded from {}",
                    tls.describe()
                )),
                Err(e) => svc.err.line(format!(
                    "wasmbox: SIGHUP: kept the TLS certificate in use: {e}"
                )),
            },
        }
    }
}

impl crate::metrics::Sampled for Service {
    fn sample(&self) -> crate::metrics::Sample {
        crate::metrics::Sample {
            slots_in_use: self.slots_in_use() as u64,
            slots: self.concurrency as u64,
            memory: self.shared.meter.used(),
            cpu: Duration::from_nanos(self.shared.gate.cpu_ns.load(Ordering::Relaxed)),
        }
    }
}

impl Service {
    /// Instance slots running a request now.
    fn slots_in_use(&self) -> usize {
        self.concurrency
            .saturating_sub(self.slots.available_permits())
    }

    /// Notes the slots in use after one more was taken.
    fn note_slot_taken(&self) {
        self.peak.fetch_max(self.slots_in_use(), Ordering::Relaxed);
    }
}

impl crate::shared::HostHeld for Service {
    fn held(&self) -> u64 {
        let slots = self.peak.load(Ordering::Relaxed) as u64;
        slots * self.residue + self.waiting.bytes() as u64
    }
}
