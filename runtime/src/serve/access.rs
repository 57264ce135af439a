//! One request's access-log line and the response body that writes it: the line is written when
//! the response ends, or when the client goes away first.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use super::admit::Busy;
use super::log::LineSink;

/// Longest request target an access line shows: a longer one is cut there and ends with `...`.
pub(super) const PATH_LOGGED: usize = 1024;

/// The status an access line shows for a request whose client went away before any response
/// (as nginx writes it).
pub(super) const CLIENT_GONE: u16 = 499;

/// One request's access-log line, written when its response ends.
pub(super) struct Access {
    pub(super) time: SystemTime,
    pub(super) id: u64,
    pub(super) method: String,
    pub(super) path: String,
    pub(super) started: Instant,
    pub(super) sink: LineSink,
    /// The request's hold on its connection: the connection is busy until the line is written.
    pub(super) _busy: Busy,
    /// Where the request is counted, and its place among those in flight.
    pub(super) metrics: Option<(crate::metrics::Observer, crate::metrics::InFlight)>,
    /// Its server span, when traces are exported.
    pub(super) span: Option<crate::trace::ServerSpan>,
}

impl Access {
    /// The line of a request with this target: the target is cut at [`PATH_LOGGED`] bytes.
    pub(super) fn new(
        id: u64,
        method: &hyper::Method,
        target: Option<&str>,
        sink: LineSink,
        busy: Busy,
        metrics: Option<&crate::metrics::Observer>,
    ) -> Self {
        let target = target.unwrap_or("/");
        let path = if target.len() > PATH_LOGGED {
            let mut end = PATH_LOGGED;
            while !target.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}...", &target[..end])
        } else {
            target.to_string()
        };
        Access {
            time: SystemTime::now(),
            id,
            method: method.to_string(),
            path,
            started: Instant::now(),
            sink,
            _busy: busy,
            metrics: metrics.map(|o| (o.clone(), o.arrived())),
            span: None,
        }
    }

    pub(super) fn respond(
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

    pub(super) fn forward(
        self,
        resp: hyper::Response<HyperOutgoingBody>,
        abort: impl Into<Option<tokio::task::AbortHandle>>,
    ) -> hyper::Response<Logged> {
        let status = resp.status().as_u16();
        // What a client is owed: nothing after HEAD, 204 or 304; else the declared length, if
        // any (an HTTP/1.1 connection stops reading the body once that much is sent).
        let owed = if self.method == "HEAD" || status == 204 || status == 304 {
            Some(0)
        } else {
            resp.headers()
                .get(hyper::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok())
        };
        resp.map(|inner| Logged {
            inner,
            bytes: 0,
            owed,
            status,
            access: Some(self),
            abort: abort.into(),
        })
    }

    pub(super) fn write(mut self, status: u16, bytes: u64, complete: bool) {
        let took = self.started.elapsed();
        if let Some(span) = self.span.take() {
            span.end(status);
        }
        if let Some((o, _)) = &self.metrics {
            o.answered(&self.method, status, took);
        }
        let mut line = format!(
            "time={} id={} method={} path={} status={status} duration={:.3}ms bytes={bytes}",
            crate::rfc3339::millis(self.time),
            self.id,
            quote(&self.method),
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
pub(super) struct Logged {
    inner: HyperOutgoingBody,
    bytes: u64,
    /// The bytes the response declares (`content-length`; none for HEAD, 204 and 304), if it does.
    owed: Option<u64>,
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
            // Complete when everything declared was sent (hyper stops asking for a body once its
            // `content-length` is reached, before the guest's stream says it has ended), or when
            // hyper never polled it because it was empty from the start.
            let complete = self.owed == Some(self.bytes) || self.inner.is_end_stream();
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

/// A value as one logfmt value: quoted when it holds a space, a quote or a control character.
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

    #[tokio::test]
    async fn long_targets_are_cut_where_documented() {
        let (sink, _done) = LineSink::start("stderr", crate::wasi::Output::Null);
        let busy = || super::super::admit::Activity::new().begin();
        let long = format!("/{}", "a".repeat(PATH_LOGGED * 16));
        let a = Access::new(
            1,
            &hyper::Method::GET,
            Some(&long),
            sink.clone(),
            busy(),
            None,
        );
        assert_eq!(a.path.len(), PATH_LOGGED + 3);
        assert!(a.path.ends_with("...") && long.starts_with(&a.path[..PATH_LOGGED]));
        let short = Access::new(
            2,
            &hyper::Method::GET,
            Some("/x?y=1"),
            sink.clone(),
            busy(),
            None,
        );
        assert_eq!(short.path, "/x?y=1");
        let root = Access::new(3, &hyper::Method::GET, None, sink, busy(), None);
        assert_eq!(root.path, "/");
    }
}
