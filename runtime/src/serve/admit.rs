//! What a client can make the server hold, bounded: requests waiting for an instance slot (by
//! count and by the bytes of their heads), a connection's idleness, a request body's size and
//! pace, and a response's pace (a connection whose client reads nothing is closed).

use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming};

/// Requests waiting for an instance slot, within a count and a budget of head bytes.
pub(super) struct Waiting {
    held: Mutex<(usize, usize)>,
    most: usize,
    most_bytes: usize,
}

/// One request's place among the waiting: given back when dropped.
pub(super) struct Waiter {
    queue: Arc<Waiting>,
    bytes: usize,
}

impl Waiting {
    pub(super) fn new(most: usize, most_bytes: usize) -> Arc<Self> {
        Arc::new(Self {
            held: Mutex::new((0, 0)),
            most,
            most_bytes,
        })
    }

    /// The bytes of head the waiting requests hold.
    pub(super) fn bytes(&self) -> usize {
        self.held.lock().expect("waiting lock").1
    }

    /// A place for a request holding `bytes` of head, or `None` when the queue is full.
    pub(super) fn admit(self: &Arc<Self>, bytes: usize) -> Option<Waiter> {
        let mut held = self.held.lock().expect("waiting lock");
        let (count, total) = *held;
        if count >= self.most || total + bytes > self.most_bytes {
            return None;
        }
        *held = (count + 1, total + bytes);
        Some(Waiter {
            queue: self.clone(),
            bytes,
        })
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let mut held = self.queue.held.lock().expect("waiting lock");
        held.0 -= 1;
        held.1 -= self.bytes;
    }
}

/// The bytes a request's head holds: its target and its header fields (as decoded).
pub(super) fn head_bytes<B>(req: &hyper::Request<B>) -> usize {
    let fields: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 32)
        .sum();
    req.uri().to_string().len() + req.method().as_str().len() + fields
}

/// Whether a connection has requests in flight, and since when it has none.
pub(super) struct Activity {
    state: Mutex<(usize, Instant)>,
    changed: tokio::sync::Notify,
}

/// One request in flight on a connection: the connection is idle again once every one is
/// dropped.
pub(super) struct Busy(Arc<Activity>);

impl Activity {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new((0, Instant::now())),
            changed: tokio::sync::Notify::new(),
        })
    }

    pub(super) fn begin(self: &Arc<Self>) -> Busy {
        self.state.lock().expect("activity lock").0 += 1;
        self.changed.notify_one();
        Busy(self.clone())
    }

    /// Waits until the connection has had no request in flight for `idle`.
    pub(super) async fn idle_for(&self, idle: Duration) {
        loop {
            let (busy, since) = *self.state.lock().expect("activity lock");
            if busy > 0 {
                self.changed.notified().await;
                continue;
            }
            let end = since + idle;
            if Instant::now() >= end {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep_until(end.into()) => {}
                () = self.changed.notified() => {}
            }
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut state = self.0.state.lock().expect("activity lock");
        state.0 -= 1;
        state.1 = Instant::now();
        drop(state);
        self.0.changed.notify_one();
    }
}

/// Why a request body was cut short by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cut {
    /// Past `--max-body-size`: 413.
    TooLarge,
    /// The client sent nothing for the idle timeout while the handler waited for it: 408.
    Stalled,
}

/// What became of a request body, shared between the body and whoever answers the request.
#[derive(Default)]
pub(super) struct BodyVerdict(AtomicU8);

impl BodyVerdict {
    fn set(&self, cut: Cut) {
        let v = match cut {
            Cut::TooLarge => 1,
            Cut::Stalled => 2,
        };
        self.0.store(v, Ordering::SeqCst);
    }

    pub(super) fn get(&self) -> Option<Cut> {
        match self.0.load(Ordering::SeqCst) {
            1 => Some(Cut::TooLarge),
            2 => Some(Cut::Stalled),
            _ => None,
        }
    }
}

/// A request body counted as it streams: past `most` bytes, or when the client sends nothing for
/// `stall` while the handler waits for it, it ends in an error the handler sees.
pub(super) struct Watched {
    inner: Incoming,
    read: u64,
    most: Option<u64>,
    stall: Duration,
    /// Armed while the handler waits for the client.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    verdict: Arc<BodyVerdict>,
}

impl Watched {
    pub(super) fn new(
        inner: Incoming,
        most: Option<u64>,
        stall: Duration,
        verdict: Arc<BodyVerdict>,
    ) -> Self {
        Self {
            inner,
            read: 0,
            most,
            stall,
            timer: None,
            verdict,
        }
    }
}

impl Body for Watched {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let me = &mut *self;
        match Pin::new(&mut me.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                me.timer = None;
                if let Some(d) = frame.data_ref() {
                    me.read += d.len() as u64;
                    if me.most.is_some_and(|most| me.read > most) {
                        me.verdict.set(Cut::TooLarge);
                        return Poll::Ready(Some(Err(
                            wasmtime_wasi_http::Error::HttpRequestBodySize(Some(me.read)),
                        )));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let stall = me.stall;
                let timer = me
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
                if timer.as_mut().poll(cx).is_ready() {
                    me.verdict.set(Cut::Stalled);
                    return Poll::Ready(Some(Err(
                        wasmtime_wasi_http::Error::ConnectionReadTimeout,
                    )));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// A connection's socket whose writes may wait at most `stall`: a client that reads nothing for
/// that long while the server has something to send is cut off, and what it held (the handler
/// producing the response, its instance slot) is freed.
pub(super) struct Stalling<IO> {
    io: IO,
    stall: Duration,
    /// Armed while a write waits.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<IO> Stalling<IO> {
    pub(super) fn new(io: IO, stall: Duration) -> Self {
        Self {
            io,
            stall,
            timer: None,
        }
    }

    /// `r`, a write's outcome, unless it has been waiting for the whole `stall`.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if r.is_ready() {
            self.timer = None;
            return r;
        }
        let stall = self.stall;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client read nothing for the idle timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<IO: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Stalling<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Stalling<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        self.watch(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.watch(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_flush(cx);
        self.watch(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_waiting_are_bounded_by_count_and_by_bytes() {
        let q = Waiting::new(3, 100);
        let a = q.admit(40).unwrap();
        let b = q.admit(40).unwrap();
        assert!(q.admit(40).is_none(), "past the bytes");
        let c = q.admit(20).unwrap();
        assert!(q.admit(0).is_none(), "past the count");
        drop(a);
        let d = q.admit(40).unwrap();
        drop((b, c, d));
        assert_eq!(*q.held.lock().unwrap(), (0, 0));
    }

    #[test]
    fn a_head_is_counted_with_its_target_and_fields() {
        let req = hyper::Request::get(format!("/{}", "p".repeat(4096)))
            .header("x-a", "v".repeat(100))
            .body(())
            .unwrap();
        let n = head_bytes(&req);
        assert!((4097 + 103..4097 + 103 + 64).contains(&n), "{n}");
    }

    #[tokio::test]
    async fn a_write_the_client_never_reads_fails_after_the_stall() {
        use tokio::io::AsyncWriteExt;
        let (ours, _theirs) = tokio::io::duplex(1024);
        let stall = Duration::from_millis(50);
        let mut io = Stalling::new(ours, stall);
        let started = Instant::now();
        let mut written = 0;
        let e = loop {
            match io.write(&[0; 512]).await {
                Ok(n) => written += n,
                Err(e) => break e,
            }
        };
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        assert_eq!(written, 1024, "what fitted was written");
        assert!(started.elapsed() >= stall);
    }

    #[tokio::test]
    async fn a_connection_is_idle_once_its_last_request_is_done() {
        let a = Activity::new();
        let idle = Duration::from_millis(50);
        let busy = a.begin();
        let waiting = a.idle_for(idle);
        tokio::pin!(waiting);
        // Busy: never idle, however long.
        assert!(tokio::time::timeout(idle * 4, &mut waiting).await.is_err());
        let done = Instant::now();
        drop(busy);
        waiting.await;
        assert!(done.elapsed() >= idle);
    }
}
