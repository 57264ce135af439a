//! One request: refused when the server cannot hold it, else given an instance slot and run in a
//! fresh instance under its deadline and memory limits; when the instance ends without a
//! response, why decides the status.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hyper::body::{Body as _, Incoming};
use tokio::sync::TryAcquireError;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use super::Service;
use super::access::{Access, CLIENT_GONE, Logged};
use super::admit::{BodyVerdict, Busy, Cut, Watched};
use super::log::Tagged;
use crate::host::{Limiter, Meter, P2Host};
use crate::metrics::Limit;
use crate::shared::Gated;
use crate::wasi::build_ctx;

/// Epoch ticks a handler runs before it yields to other requests (4 × 5 ms).
const SLICE_TICKS: u64 = 4;

/// How one request's instance ended.
enum Outcome {
    Done,
    Trap(String),
    MemoryLimit(u64),
    /// The instances together were at the container's memory limit.
    Crowded,
    Timeout(Duration),
    Stopped,
}

type Response = hyper::Response<Logged>;
type Request = hyper::Request<Watched>;
pub(super) type Answer =
    tokio::sync::oneshot::Sender<Result<hyper::Response<HyperOutgoingBody>, ErrorCode>>;

impl Service {
    /// Counts a limit's refusal in the metrics, if they are kept.
    fn count(&self, limit: Limit) {
        if let Some(o) = &self.metrics {
            o.limit(limit);
        }
    }

    /// The scheme requests arrive with: `https` over TLS, else `http`.
    fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// Answers one request. A request refused because too many wait for a slot is an HTTP/2
    /// stream reset with `REFUSED_STREAM` (the client may safely retry it), or a 503.
    pub(super) async fn handle(
        self: Arc<Self>,
        req: hyper::Request<Incoming>,
        busy: Busy,
    ) -> Result<Response, h2::Error> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let target = req.uri().path_and_query().map(|p| p.as_str());
        let mut access = Access::new(
            id,
            req.method(),
            target,
            self.err.clone(),
            busy,
            self.metrics.as_ref(),
        );
        access.span = crate::trace::ServerSpan::start(&req, self.scheme(), self.port);
        let trace = access.span.as_ref().map(crate::trace::ServerSpan::context);
        // Until a response is handed to hyper, hyper dropping this request (the client went
        // away) ends its instance, and the access line says so.
        let mut pending = Pending {
            access: Some(access),
            abort: None,
        };
        let serve = &self.policy.serve;
        if let Some(most) = serve.max_body_size
            && req.body().size_hint().lower() > most
        {
            self.count(Limit::BodySize);
            return Ok(pending
                .take()
                .respond(413, "request body too large\n", None));
        }
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(TryAcquireError::Closed) => {
                return Ok(pending.take().respond(503, "server stopping\n", None));
            }
            Err(TryAcquireError::NoPermits) => {
                let Some(waiter) = self.waiting.admit(super::admit::head_bytes(&req)) else {
                    self.count(Limit::Waiting);
                    let access = pending.take();
                    if req.version() == hyper::Version::HTTP_2 {
                        access.write(503, 0, false);
                        return Err(h2::Error::from(h2::Reason::REFUSED_STREAM));
                    }
                    return Ok(access.respond(503, "server busy\n", None));
                };
                let Ok(permit) = self.slots.clone().acquire_owned().await else {
                    return Ok(pending.take().respond(503, "server stopping\n", None));
                };
                drop(waiter);
                permit
            }
        };
        self.note_slot_taken();
        let verdict = Arc::new(BodyVerdict::default());
        let (most, stall) = (serve.max_body_size, serve.idle_timeout);
        let req = req.map(|body| Watched::new(body, most, stall, verdict.clone()));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let me = self.clone();
        let guest = self.tasks.spawn(async move {
            let _permit = permit;
            me.run_instance(id, req, tx, trace).await
        });
        let abort = guest.abort_handle();
        pending.abort = Some(abort.clone());
        let answered = rx.await;
        let access = pending.take();
        let mut hit = None;
        let (status, reason) = match answered {
            // A response made from a body the server cut short is not sent: the client gets
            // the cut's status instead (below).
            Ok(Ok(_)) if verdict.get().is_some() => {
                abort.abort();
                (500, "answered a request whose body was cut".into())
            }
            Ok(Ok(resp)) => return Ok(access.forward(resp, abort)),
            Ok(Err(code)) => (500, format!("answered with error {code:?}")),
            // The instance ended without a response: why decides the status.
            Err(_) => match guest.await {
                Ok(Outcome::Timeout(t)) => {
                    hit = Some(Limit::RequestTimeout);
                    (503, format!("timed out after {t:?}"))
                }
                Ok(Outcome::Trap(m)) => {
                    if let Some(o) = &self.metrics {
                        o.trapped();
                    }
                    (500, format!("trapped: {m}"))
                }
                Ok(Outcome::MemoryLimit(l)) => {
                    hit = Some(Limit::RequestMemory);
                    (500, format!("exceeded its memory limit of {l} bytes"))
                }
                Ok(Outcome::Crowded) => {
                    hit = Some(Limit::Memory);
                    (
                        503,
                        "found the memory limit taken by the requests in flight".into(),
                    )
                }
                Ok(Outcome::Done) => (500, "returned without a response".into()),
                Ok(Outcome::Stopped) | Err(_) => (503, "stopped".into()),
            },
        };
        // A body the server cut short is the client's doing, whatever the handler made of it.
        let (status, body) = match verdict.get() {
            Some(Cut::TooLarge) => {
                hit = Some(Limit::BodySize);
                (413, "request body too large\n")
            }
            Some(Cut::Stalled) => {
                hit = Some(Limit::BodyStalled);
                (408, "request body timed out\n")
            }
            None if status == 503 => (503, "service unavailable\n"),
            None => (500, "internal server error\n"),
        };
        if let Some(limit) = hit {
            self.count(limit);
        }
        self.err.line(format!("[{id}] wasmbox: handler {reason}"));
        Ok(access.respond(status, body, None))
    }

    /// Runs one fresh instance on `req`, sending its response head to `tx`, until the handler
    /// and its response body are done, its deadline passes or the server stops.
    async fn run_instance(
        &self,
        id: u64,
        req: Request,
        tx: Answer,
        trace: Option<opentelemetry::Context>,
    ) -> Outcome {
        // Each instance under its own limit, and all of them under the container's.
        let own = self
            .policy
            .serve
            .request_memory
            .or(self.shared.meter.limit());
        let meter = Meter::new(own);
        let fut = self.instance(id, req, tx, meter.clone(), trace);
        let mut fut = std::pin::pin!(fut);
        let guest = Gated {
            fut: fut.as_mut(),
            gate: &self.shared.gate,
        };
        let timeout = self.policy.serve.request_timeout;
        tokio::select! {
            biased;
            () = self.stop.cancelled() => Outcome::Stopped,
            () = tokio::time::sleep(timeout) => Outcome::Timeout(timeout),
            r = guest => match r {
                Ok(()) => Outcome::Done,
                Err(_) if meter.hit.load(Ordering::SeqCst) => {
                    Outcome::MemoryLimit(meter.limit().unwrap_or(0))
                }
                Err(_) if meter.crowded.load(Ordering::SeqCst) => Outcome::Crowded,
                Err(e) => Outcome::Trap(crate::store::trap_message(&e)),
            },
        }
    }

    async fn instance(
        &self,
        id: u64,
        req: Request,
        tx: Answer,
        meter: Arc<Meter>,
        trace: Option<opentelemetry::Context>,
    ) -> wasmtime::Result<()> {
        let mut b = build_ctx(&self.policy, &self.preopens, Default::default())
            .map_err(|e| wasmtime::format_err!("{e}"))?;
        b.stdout(Tagged::new(id, self.out.clone()));
        b.stderr(Tagged::new(id, self.err.clone()));
        let limiter = Limiter::counted_in(meter, self.shared.meter.clone());
        let handles = self.policy.limits.handles();
        let hooks = crate::http::Hooks::new(
            self.policy.net.http.clone(),
            handles,
            Some(self.outgoing.clone()),
        )
        .counted_in(self.metrics.clone())
        .traced(trace);
        let host = P2Host::new(
            b.build(),
            crate::store::handle_table(handles),
            handles,
            limiter,
            hooks,
        );
        let mut store = crate::store::new_component_store(&self.engine, host);
        // Longer slices than a command's: a handler usually finishes within one, so requests run
        // first come, first served instead of sharing the CPU (which delays every one of them);
        // a kill, a timeout or a client going away is still noticed within a slice.
        store.set_epoch_deadline(SLICE_TICKS);
        store.epoch_deadline_callback(|_| Ok(wasmtime::UpdateDeadline::Yield(SLICE_TICKS)));
        let proxy = match self.pre.instantiate_async(&mut store).await? {
            wasmtime_wasi_http::handler::Proxy::P2(proxy) => proxy,
            service => return super::p3::handle(store, service, req, self.scheme(), tx).await,
        };
        let req = store.data_mut().http().new_incoming_request(
            match self.scheme() {
                "https" => Scheme::Https,
                _ => Scheme::Http,
            },
            req,
        )?;
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
