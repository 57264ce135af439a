//! The span exporter as background work: its first export moves the batch processor's thread to
//! `SCHED_BATCH`, so a batch being converted, encoded and sent never preempts a thread serving a
//! request when it wakes. It still gets its fair share of the CPU (nothing is starved, no span is
//! dropped for it); it only waits for the running thread's turn to end.

use std::sync::Once;
use std::time::Duration;

use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

#[derive(Debug)]
pub(super) struct Background<E> {
    inner: E,
    lowered: Once,
}

impl<E> Background<E> {
    pub(super) fn new(inner: E) -> Self {
        Self {
            inner,
            lowered: Once::new(),
        }
    }
}

impl<E: SpanExporter> SpanExporter for Background<E> {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        self.lowered.call_once(batch_policy);
        self.inner.export(batch)
    }

    fn shutdown_with_timeout(&mut self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn shutdown(&mut self) -> OTelSdkResult {
        self.inner.shutdown()
    }

    fn force_flush(&mut self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// Moves the calling thread to `SCHED_BATCH`. Lowering needs no privilege; should it fail, the
/// exporter runs as before.
#[allow(
    unsafe_code,
    reason = "sched_setscheduler reads only the sched_param we pass"
)]
fn batch_policy() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid sched_param; pid 0 is the calling thread.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future as _;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll, Waker};

    #[derive(Debug, Default)]
    struct Counting(AtomicUsize);

    impl SpanExporter for Counting {
        fn export(
            &self,
            batch: Vec<SpanData>,
        ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
            self.0.fetch_add(batch.len() + 1, Ordering::SeqCst);
            std::future::ready(Ok(()))
        }
    }

    #[allow(unsafe_code, reason = "sched_getscheduler only reads")]
    fn policy() -> i32 {
        // SAFETY: no arguments but the calling thread.
        unsafe { libc::sched_getscheduler(0) }
    }

    #[test]
    fn the_exporting_thread_runs_as_batch_work_and_every_export_is_passed_on() {
        let exporter = std::sync::Arc::new(Background::new(Counting::default()));
        let on = exporter.clone();
        let (before, after) = std::thread::spawn(move || {
            let before = policy();
            for _ in 0..2 {
                let fut = std::pin::pin!(on.export(Vec::new()));
                let polled = fut.poll(&mut Context::from_waker(Waker::noop()));
                assert!(matches!(polled, Poll::Ready(Ok(()))));
            }
            (before, policy())
        })
        .join()
        .unwrap();
        assert_eq!((before, after), (libc::SCHED_OTHER, libc::SCHED_BATCH));
        assert_eq!(exporter.inner.0.load(Ordering::SeqCst), 2);
        // Only the exporting thread was moved.
        assert_eq!(policy(), libc::SCHED_OTHER);
    }
}
