//! Serving an HTTP component (`wasi:http/incoming-handler@0.2`): wasmbox's own listener speaks
//! HTTP/1.1 (keep-alive) and HTTP/2 without TLS (h2c) through hyper; every request gets a fresh
//! instance of the pre-instantiated component, with the guest's grants and its own memory limit
//! and deadline; the handler's output is tagged with the request's id; one access-log line per
//! request; SIGTERM drains.
//!
//! Faults stay in their request: a trap, a memory or time limit, or a handler that returns
//! without a response gives that client a 500 (503 for the deadline) and a log line, and the
//! server goes on. A client that goes away mid-response ends its instance at once.

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::exit::ExitReason;
use crate::host::{Limiter, Meter, P2Host};
use crate::policy::Policy;
use crate::sandbox::{Filesystem, Gated, Shared};
use crate::wasi::{Output, build_ctx};

/// Longest line of handler output passed on whole; a longer one is split.
const LINE_MAX: usize = 16 << 10;
/// Lines of handler output (and access-log lines) waiting for a slow log reader, per stream.
const LINES_QUEUED: usize = 1024;
/// How long the listener rests after a failed accept (out of descriptors, say).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
/// How long a log thread lets lines gather after a write.
const GATHER: Duration = Duration::from_millis(10);
/// Most bytes of queued lines written at once.
const BATCH_MAX: usize = 64 << 10;

/// What one request's instance needs, shared by every request.
struct Service {
    engine: wasmtime::Engine,
    pre: ProxyPre<P2Host>,
    policy: Policy,
    preopens: Vec<(std::path::PathBuf, String, bool)>,
    shared: Arc<Shared>,
    slots: Arc<Semaphore>,
    out: LineSink,
    err: LineSink,
    next_id: AtomicU64,
    /// Ends every request at once (a forced stop, or the end of the drain).
    stop: CancellationToken,
    tasks: TaskTracker,
}

/// Epoch ticks a handler runs before it yields to other requests (4 × 5 ms).
const SLICE_TICKS: u64 = 4;

/// What a server is made of.
pub(crate) struct Parts {
    pub(crate) engine: wasmtime::Engine,
    pub(crate) pre: ProxyPre<P2Host>,
    /// How many instances of the component the engine's pool holds at once, if it is bounded.
    pub(crate) capacity: Option<usize>,
    pub(crate) policy: Policy,
    /// Bound already ([`crate::Prepared::listen_with`]), or `None` to bind `policy.serve.addr`.
    pub(crate) listener: Option<std::net::TcpListener>,
    pub(crate) fs: Filesystem,
    pub(crate) stdout: Output,
    pub(crate) stderr: Output,
    pub(crate) shared: Arc<Shared>,
}

/// A server running: its future yields its exit reason.
pub(crate) type Server = Pin<Box<dyn Future<Output = ExitReason> + Send>>;

/// Serves until killed. Returns the bound address and the server.
pub(crate) fn start(parts: Parts) -> crate::Result<(SocketAddr, Server)> {
    let Parts {
        engine,
        pre,
        capacity,
        policy,
        listener,
        fs,
        stdout,
        stderr,
        shared,
    } = parts;
    let addr = policy.serve.addr;
    let listen = |source| crate::Error::Serve { addr, source };
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
    err.line(format!("wasmbox: serving http://{bound}"));
    // Requests beyond what the instance pool holds wait for a slot instead of failing.
    let mut concurrency = policy.serve.max_concurrency.max(1);
    if let Some(fits) = capacity.filter(|&fits| fits < concurrency) {
        err.line(format!(
            "wasmbox: at most {fits} requests at once: the instance pool holds {fits} instances of this component"
        ));
        concurrency = fits;
    }
    let slots = Arc::new(Semaphore::new(concurrency));
    let svc = Arc::new(Service {
        engine,
        pre,
        preopens: fs.preopens.clone(),
        policy,
        shared: shared.clone(),
        slots,
        out,
        err,
        next_id: AtomicU64::new(0),
        stop: CancellationToken::new(),
        tasks: TaskTracker::new(),
    });
    let fut = async move {
        let reason = accept_loop(&svc, listener).await;
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

async fn accept_loop(svc: &Arc<Service>, listener: tokio::net::TcpListener) -> ExitReason {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    let drain = svc.policy.serve.drain_timeout;
    // The first kill: SIGTERM drains, any other signal ends everything at once.
    let killed = || {
        let signal = svc.shared.kill_signal.load(Ordering::SeqCst);
        (signal != libc::SIGTERM).then_some(ExitReason::Signaled(signal))
    };
    loop {
        // While every slot is taken, new connections wait in the kernel's accept queue.
        let permit = tokio::select! {
            biased;
            () = svc.shared.kill.notified() => match killed() {
                Some(end) => return end,
                None => break,
            },
            permit = svc.slots.clone().acquire_owned() => permit,
        };
        drop(permit);
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
        let conn_svc = svc.clone();
        let service = hyper::service::service_fn(move |req| {
            let svc = conn_svc.clone();
            async move { Ok::<_, Infallible>(svc.handle(req).await) }
        });
        let conn = builder
            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        let stop = svc.stop.clone();
        svc.tasks.spawn(async move {
            tokio::select! {
                _ = conn => {}
                () = stop.cancelled() => {}
            }
        });
    }
    // Draining: no new connection; requests in flight finish, up to the grace period.
    drop(listener);
    svc.err.line(format!(
        "wasmbox: draining: no new connections; requests in flight have {drain:?} to finish"
    ));
    tokio::spawn(graceful.shutdown());
    svc.tasks.close();
    tokio::select! {
        biased;
        () = svc.shared.kill.notified() => {
            ExitReason::Signaled(svc.shared.kill_signal.load(Ordering::SeqCst))
        }
        () = svc.tasks.wait() => ExitReason::Exited(0),
        () = tokio::time::sleep(drain) => {
            tracing::info!("drain period over: ending the requests still running");
            ExitReason::Exited(0)
        }
    }
}

/// How one request's instance ended.
enum Outcome {
    Done,
    Trap(String),
    MemoryLimit(u64),
    Timeout(Duration),
    Stopped,
}

impl Service {
    async fn handle(self: Arc<Self>, req: hyper::Request<Incoming>) -> hyper::Response<Logged> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let started = Instant::now();
        let access = Access {
            time: SystemTime::now(),
            id,
            method: req.method().to_string(),
            path: req
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| "/".into()),
            started,
            sink: self.err.clone(),
        };
        // Until a response is handed to hyper, hyper dropping this request (the client went
        // away) ends its instance, and the access line says so.
        let mut pending = Pending {
            access: Some(access),
            abort: None,
        };
        let Ok(permit) = self.slots.clone().acquire_owned().await else {
            return pending.take().respond(503, "server stopping\n", None);
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let me = self.clone();
        let guest = self.tasks.spawn(async move {
            let _permit = permit;
            me.run_instance(id, req, tx).await
        });
        let abort = guest.abort_handle();
        pending.abort = Some(abort.clone());
        let answered = rx.await;
        let access = pending.take();
        match answered {
            Ok(Ok(resp)) => access.forward(resp, abort),
            Ok(Err(code)) => {
                self.err.line(format!(
                    "[{id}] wasmbox: handler answered with error {code:?}"
                ));
                access.respond(500, "internal server error\n", None)
            }
            // The instance ended without a response: why decides the status.
            Err(_) => {
                let (status, reason) = match guest.await {
                    Ok(Outcome::Timeout(t)) => (503, format!("timed out after {t:?}")),
                    Ok(Outcome::Trap(m)) => (500, format!("trapped: {m}")),
                    Ok(Outcome::MemoryLimit(l)) => {
                        (500, format!("exceeded its memory limit of {l} bytes"))
                    }
                    Ok(Outcome::Done) => (500, "returned without a response".into()),
                    Ok(Outcome::Stopped) | Err(_) => (503, "stopped".into()),
                };
                self.err.line(format!("[{id}] wasmbox: handler {reason}"));
                let body = if status == 503 {
                    "service unavailable\n"
                } else {
                    "internal server error\n"
                };
                access.respond(status, body, None)
            }
        }
    }

    /// Runs one fresh instance on `req`, sending its response head to `tx`, until the handler
    /// and its response body are done, its deadline passes or the server stops.
    async fn run_instance(
        &self,
        id: u64,
        req: hyper::Request<Incoming>,
        tx: tokio::sync::oneshot::Sender<Result<hyper::Response<HyperOutgoingBody>, ErrorCode>>,
    ) -> Outcome {
        let meter = Meter::new(self.shared.meter.limit());
        let fut = self.instance(id, req, tx, meter.clone());
        let mut fut = std::pin::pin!(fut);
        let guest = Gated {
            fut: fut.as_mut(),
            gate: &self.shared.gate,
        };
        let deadline = async {
            match self.policy.serve.request_timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = self.stop.cancelled() => Outcome::Stopped,
            () = deadline => Outcome::Timeout(self.policy.serve.request_timeout.unwrap_or_default()),
            r = guest => match r {
                Ok(()) => Outcome::Done,
                Err(_) if meter.hit.load(Ordering::SeqCst) => {
                    Outcome::MemoryLimit(meter.limit().unwrap_or(0))
                }
                Err(e) => Outcome::Trap(crate::sandbox::trap_message(&e)),
            },
        }
    }

    async fn instance(
        &self,
        id: u64,
        req: hyper::Request<Incoming>,
        tx: tokio::sync::oneshot::Sender<Result<hyper::Response<HyperOutgoingBody>, ErrorCode>>,
        meter: Arc<Meter>,
    ) -> wasmtime::Result<()> {
        let mut b = build_ctx(&self.policy, &self.preopens, Default::default())
            .map_err(|e| wasmtime::format_err!("{e}"))?;
        b.stdout(Tagged::new(id, self.out.clone()));
        b.stderr(Tagged::new(id, self.err.clone()));
        let limiter = Limiter::counted_in(meter, self.shared.meter.clone());
        let handles = self.policy.limits.handles();
        let host = P2Host::new(
            b.build(),
            crate::sandbox::handle_table(handles),
            handles,
            limiter,
            self.policy.net.http.clone(),
        );
        let mut store = crate::sandbox::new_component_store(&self.engine, host);
        // Longer slices than a command's: a handler usually finishes within one, so requests run
        // first come, first served instead of sharing the CPU (which delays every one of them);
        // a kill, a timeout or a client going away is still noticed within a slice.
        store.set_epoch_deadline(SLICE_TICKS);
        store.epoch_deadline_callback(|_| Ok(wasmtime::UpdateDeadline::Yield(SLICE_TICKS)));
        let proxy = self.pre.instantiate_async(&mut store).await?;
        let req = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, req)?;
        let out = store.data_mut().http().new_response_outparam(tx)?;
        proxy
            .wasi_http_incoming_handler()
            .call_handle(&mut store, req, out)
            .await?;
        // Let the connection's task send the response before this one frees the instance
        // (returning its memory to the pool takes a while, and the scheduler would run it first).
        tokio::task::yield_now().await;
        Ok(())
    }
}

/// A request not answered yet. Dropped armed (hyper dropped the request: its client went away),
/// it ends the request's instance and writes its access line with status 499.
struct Pending {
    access: Option<Access>,
    abort: Option<tokio::task::AbortHandle>,
}

impl Pending {
    /// Disarms it: the request is being answered.
    fn take(&mut self) -> Access {
        self.abort = None;
        self.access.take().expect("taken once")
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let Some(access) = self.access.take() else {
            return;
        };
        if let Some(abort) = self.abort.take() {
            abort.abort();
            access.sink.line(format!(
                "[{}] wasmbox: handler ended: the client went away",
                access.id
            ));
        }
        access.write(CLIENT_GONE, 0, false);
    }
}

/// The status an access line shows for a request whose client went away before any response
/// (as nginx writes it).
const CLIENT_GONE: u16 = 499;

/// One request's access-log line, written when its response ends.
struct Access {
    time: SystemTime,
    id: u64,
    method: String,
    path: String,
    started: Instant,
    sink: LineSink,
}

impl Access {
    fn respond(
        self,
        status: u16,
        body: &'static str,
        abort: Option<tokio::task::AbortHandle>,
    ) -> hyper::Response<Logged> {
        let body = http_body_util::Full::new(Bytes::from_static(body.as_bytes()))
            .map_err(|never| match never {})
            .boxed_unsync();
        let mut resp = hyper::Response::new(body);
        *resp.status_mut() = hyper::StatusCode::from_u16(status).expect("a valid status");
        resp.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("text/plain"),
        );
        self.forward(resp, abort)
    }

    fn forward(
        self,
        resp: hyper::Response<HyperOutgoingBody>,
        abort: impl Into<Option<tokio::task::AbortHandle>>,
    ) -> hyper::Response<Logged> {
        let status = resp.status().as_u16();
        resp.map(|inner| Logged {
            inner,
            bytes: 0,
            status,
            access: Some(self),
            abort: abort.into(),
        })
    }

    fn write(self, status: u16, bytes: u64, complete: bool) {
        let took = self.started.elapsed();
        let mut line = format!(
            "time={} id={} method={} path={} status={status} duration={:.3}ms bytes={bytes}",
            crate::rfc3339::millis(self.time),
            self.id,
            self.method,
            quote(&self.path),
            took.as_secs_f64() * 1000.0,
        );
        if !complete {
            line.push_str(" incomplete=true");
        }
        self.sink.line(line);
    }
}

/// A response body that counts what it sends and writes the access line when it ends; dropped
/// before its end (the client went away), it ends the instance still producing it.
pub(crate) struct Logged {
    inner: HyperOutgoingBody,
    bytes: u64,
    status: u16,
    access: Option<Access>,
    abort: Option<tokio::task::AbortHandle>,
}

impl Body for Logged {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    self.bytes += d.len() as u64;
                }
                if f.is_trailers()
                    && let Some(a) = self.access.take()
                {
                    // Trailers end a body: hyper may not ask for more.
                    a.write(self.status, self.bytes, true);
                    self.abort = None;
                }
            }
            Poll::Ready(None) => {
                if let Some(a) = self.access.take() {
                    a.write(self.status, self.bytes, true);
                }
                self.abort = None;
            }
            Poll::Ready(Some(Err(_))) | Poll::Pending => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        if let Some(a) = self.access.take() {
            // Complete only when hyper never polled it because it was empty from the start.
            let complete = self.inner.is_end_stream();
            a.write(self.status, self.bytes, complete);
            if complete {
                return;
            }
        }
        if let Some(abort) = self.abort.take() {
            abort.abort();
        }
    }
}

/// Lines for one of wasmbox's own streams, written in order by a thread of their own so that a
/// slow reader (a full FIFO) holds up only the guests writing, never an executor thread.
#[derive(Clone)]
struct LineSink(tokio::sync::mpsc::Sender<Vec<u8>>);

impl LineSink {
    fn start(name: &'static str, out: Output) -> (Self, std::thread::JoinHandle<()>) {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(LINES_QUEUED);
        let thread = std::thread::Builder::new()
            .name(format!("wasmbox-{name}"))
            .spawn(move || {
                while let Some(mut line) = rx.blocking_recv() {
                    // Whatever else is queued goes in the same write: one system call for many
                    // lines under load.
                    while line.len() < BATCH_MAX {
                        match rx.try_recv() {
                            Ok(more) => line.extend_from_slice(&more),
                            Err(_) => break,
                        }
                    }
                    let r = match &out {
                        Output::Inherit if name == "stderr" => std::io::stderr().write_all(&line),
                        Output::Inherit => {
                            let mut o = std::io::stdout().lock();
                            o.write_all(&line).and_then(|()| o.flush())
                        }
                        Output::Null => Ok(()),
                        Output::File(f) => (&**f).write_all(&line),
                        Output::Memory(p) => {
                            use wasmtime_wasi::p2::OutputStream;
                            p.clone()
                                .write(Bytes::from(line))
                                .map_err(|e| std::io::Error::other(e.to_string()))
                        }
                    };
                    if r.is_err() {
                        // The reader is gone; keep draining so writers never block.
                        continue;
                    }
                    // Lines gather meanwhile: under load this thread wakes a hundred times a
                    // second, not once a request.
                    std::thread::sleep(GATHER);
                }
            })
            .expect("starting a log thread");
        (LineSink(tx), thread)
    }

    /// Queues one line of wasmbox's own (a newline is added), waiting for room off the
    /// executor when the queue is full.
    fn line(&self, mut line: String) {
        line.push('\n');
        queue(&self.0, line.into_bytes());
    }
}

/// Queues `line` without waiting: when the queue is full, a task sends it once there is room.
fn queue(tx: &tokio::sync::mpsc::Sender<Vec<u8>>, line: Vec<u8>) {
    if let Err(tokio::sync::mpsc::error::TrySendError::Full(l)) = tx.try_send(line)
        && let Ok(h) = tokio::runtime::Handle::try_current()
    {
        let tx = tx.clone();
        h.spawn(async move {
            let _ = tx.send(l).await;
        });
    }
}

/// A handler's stdout or stderr: each line goes to wasmbox's stream as `[ID] line`.
struct Tagged {
    id: u64,
    sink: LineSink,
}

impl Tagged {
    fn new(id: u64, sink: LineSink) -> Self {
        Self { id, sink }
    }
}

impl wasmtime_wasi::cli::IsTerminal for Tagged {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for Tagged {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(TaggedWriter {
            prefix: format!("[{}] ", self.id).into_bytes(),
            tx: tokio_util::sync::PollSender::new(self.sink.0.clone()),
            partial: Vec::new(),
        })
    }
}

struct TaggedWriter {
    prefix: Vec<u8>,
    tx: tokio_util::sync::PollSender<Vec<u8>>,
    /// The line so far, without its prefix.
    partial: Vec<u8>,
}

impl TaggedWriter {
    fn take_line(&mut self) -> Vec<u8> {
        let mut line = Vec::with_capacity(self.prefix.len() + self.partial.len() + 1);
        line.extend_from_slice(&self.prefix);
        line.append(&mut self.partial);
        if line.last() != Some(&b'\n') {
            line.push(b'\n');
        }
        line
    }
}

impl tokio::io::AsyncWrite for TaggedWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let room = LINE_MAX - self.partial.len();
        let (n, ends_line) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) if i < room => (i + 1, true),
            _ => (buf.len().min(room), buf.len() >= room),
        };
        if !ends_line {
            self.partial.extend_from_slice(&buf[..n]);
            return Poll::Ready(Ok(n));
        }
        // A whole line: wait for room in the queue (the guest waits with it), then send it.
        match self.tx.poll_reserve(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(_)) => return Poll::Ready(Ok(n)),
            Poll::Ready(Ok(())) => {}
        }
        self.partial.extend_from_slice(&buf[..n]);
        let line = self.take_line();
        let _ = self.tx.send_item(line);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl Drop for TaggedWriter {
    fn drop(&mut self) {
        // The last line, when the guest did not end it.
        if !self.partial.is_empty()
            && let Some(tx) = self.tx.get_ref().cloned()
        {
            let line = self.take_line();
            queue(&tx, line);
        }
    }
}

/// A path as one logfmt value: quoted when it holds a space, a quote or a control character.
fn quote(s: &str) -> String {
    if s.chars()
        .any(|c| c == ' ' || c == '"' || c == '\\' || c.is_control())
    {
        format!("{s:?}")
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_with_spaces_or_quotes_are_quoted() {
        assert_eq!(quote("/a/b?c=1"), "/a/b?c=1");
        assert_eq!(quote("/a b"), "\"/a b\"");
        assert_eq!(quote("/a\"b"), "\"/a\\\"b\"");
    }
}
