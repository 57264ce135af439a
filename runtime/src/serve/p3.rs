//! WASI 0.3 services (`wasi:http/handler@0.3`): a request goes to its fresh instance as an async
//! call, and the store runs concurrently until the response body is done (a 0.3 handler returns
//! its response before its body is written: the guest task goes on writing it). The request's
//! limits, deadline, memory and output are the ones every request has (`request.rs`).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame};
use wasmtime::AsContextMut as _;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::handler::{Prepared, Proxy};
use wasmtime_wasi_http::p2::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use super::admit::Watched;
use super::request::Answer;
use crate::host::P2Host;

/// Runs `req` through `service` (an instance in `store`), sending the response head to `tx`,
/// until its body has been sent or dropped. A trap, or a handler that returns an error code,
/// ends it with an error, which the caller turns into a status.
pub(super) async fn handle(
    mut store: wasmtime::Store<P2Host>,
    service: Proxy,
    req: hyper::Request<Watched>,
    scheme: &'static str,
    tx: Answer,
) -> wasmtime::Result<()> {
    let req = absolute(req, scheme).map(|body| body.boxed_unsync());
    let (answer_tx, answer_rx) = futures::channel::oneshot::channel();
    let prepared = Prepared::new(
        store.as_context_mut(),
        &service,
        req,
        <P2Host as WasiHttpView>::http,
        answer_tx,
    )?;
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let answered = async move {
        match answer_rx.await {
            Ok(Ok(resp)) => {
                let resp = resp.map(|inner| {
                    Finished {
                        inner,
                        _done: done_tx,
                    }
                    .boxed_unsync()
                });
                if tx.send(Ok(resp)).is_ok() {
                    // Sent, or dropped by a client that left: either way the body is done then.
                    let _ = done_rx.await;
                }
                Ok(())
            }
            Ok(Err(e)) => {
                if let Some(code) =
                    e.downcast_ref::<wasmtime_wasi_http::p3::bindings::http::types::ErrorCode>()
                {
                    let _ = tx.send(Err(ErrorCode::InternalError(Some(format!("{code:?}")))));
                    return Ok(());
                }
                Err(e)
            }
            // Never answered: the caller says so.
            Err(_) => Ok(()),
        }
    };
    store
        .run_concurrent(async |accessor| {
            let (ran, answered) =
                tokio::join!(prepared.run(accessor, std::future::pending()), answered);
            ran?;
            answered
        })
        .await?
}

/// The request with an absolute URI: HTTP/1.1's origin-form target gets the scheme it came with
/// and the authority of its `host` header, as WASI 0.2 requests are given them.
fn absolute(req: hyper::Request<Watched>, scheme: &'static str) -> hyper::Request<Watched> {
    let (mut parts, body) = req.into_parts();
    if parts.uri.scheme().is_none()
        && let Some(host) = parts
            .headers
            .get(hyper::header::HOST)
            .and_then(|h| h.to_str().ok())
    {
        let mut uri = parts.uri.clone().into_parts();
        uri.scheme = Some(if scheme == "https" {
            http::uri::Scheme::HTTPS
        } else {
            http::uri::Scheme::HTTP
        });
        uri.authority = host.parse().ok();
        if uri.path_and_query.is_none() {
            uri.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        }
        if let Ok(full) = http::Uri::from_parts(uri) {
            parts.uri = full;
        }
    }
    hyper::Request::from_parts(parts, body)
}

/// A response body that says when it is done: when it is dropped (after its end, or when its
/// client left), its instance may end.
struct Finished {
    inner: HyperOutgoingBody,
    _done: tokio::sync::oneshot::Sender<()>,
}

impl Body for Finished {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
