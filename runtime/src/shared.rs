//! What a running guest shares with whoever holds it: its end (status, waiters), its kill, its
//! memory meter, and the gate that pauses it and counts its CPU time. A command's guest and a
//! server's instances alike.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};

use crate::exit::ExitStatus;
use crate::host::Meter;

pub(crate) struct Shared {
    /// Signal the guest was (last) killed with; 0 while not killed.
    pub(crate) kill_signal: AtomicI32,
    pub(crate) kill: tokio::sync::Notify,
    /// A server's SIGHUP: read the TLS certificate again (it is no kill).
    pub(crate) hangup: tokio::sync::Notify,
    /// A server takes every kill (the first SIGTERM drains, the next ends it); a command only
    /// the first.
    pub(crate) serving: bool,
    pub(crate) status: Mutex<Option<ExitStatus>>,
    pub(crate) done: Condvar,
    pub(crate) watch: tokio::sync::watch::Sender<Option<ExitStatus>>,
    /// The guest's memory (for a server: the limit of each instance, the use of all of them).
    pub(crate) meter: Arc<Meter>,
    pub(crate) gate: Gate,
    /// For a server: what it holds on the host for its guest beyond the live instances' memories
    /// ([`HostHeld`]), counted in the guest's usage.
    pub(crate) host: std::sync::OnceLock<std::sync::Weak<dyn HostHeld>>,
}

/// Host memory a server keeps for its guest beyond the instances alive.
pub(crate) trait HostHeld: Send + Sync {
    /// Bytes held: what its used instance slots keep resident, and what waits for a slot.
    fn held(&self) -> u64;
}

impl Shared {
    /// The guest's memory as its container's usage counts it: the live instances' memories and
    /// tables, and what its server holds for it.
    pub(crate) fn memory_usage(&self) -> u64 {
        let held = self
            .host
            .get()
            .and_then(std::sync::Weak::upgrade)
            .map_or(0, |h| h.held());
        self.meter.used() + held
    }
}

impl Shared {
    /// Records the guest's end and wakes everyone waiting for it.
    pub(crate) fn finish(&self, status: ExitStatus) {
        *self.status.lock().expect("status lock") = Some(status.clone());
        self.done.notify_all();
        self.watch.send_replace(Some(status));
    }
}

/// Holds a paused guest: while paused its future is not polled, so it makes no progress (a guest
/// running wasm is stopped at its next epoch yield). Also adds up the CPU time spent polling it.
#[derive(Default)]
pub(crate) struct Gate {
    pub(crate) paused: AtomicBool,
    waker: Mutex<Option<Waker>>,
    pub(crate) cpu_ns: AtomicU64,
    /// The part of `cpu_ns` spent in the kernel (page faults, system calls).
    pub(crate) system_ns: AtomicU64,
}

impl Gate {
    pub(crate) fn set_paused(&self, paused: bool) -> bool {
        let changed = self.paused.swap(paused, Ordering::SeqCst) != paused;
        if !paused && let Some(w) = self.waker.lock().expect("gate lock").take() {
            w.wake();
        }
        changed
    }
}

/// A guest's future behind its [`Gate`].
pub(crate) struct Gated<'a, F: ?Sized> {
    pub(crate) fut: Pin<&'a mut F>,
    pub(crate) gate: &'a Gate,
}

impl<F: Future + ?Sized> Future for Gated<'_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        if self.gate.paused.load(Ordering::SeqCst) {
            *self.gate.waker.lock().expect("gate lock") = Some(cx.waker().clone());
            // Resumed between the check and storing the waker: poll on.
            if self.gate.paused.load(Ordering::SeqCst) {
                return Poll::Pending;
            }
        }
        let (u0, k0) = thread_times_ns();
        let r = self.fut.as_mut().poll(cx);
        let (u1, k1) = thread_times_ns();
        let system = k1.saturating_sub(k0);
        self.gate
            .cpu_ns
            .fetch_add(u1.saturating_sub(u0) + system, Ordering::Relaxed);
        self.gate.system_ns.fetch_add(system, Ordering::Relaxed);
        r
    }
}

/// User and kernel CPU time of the calling thread so far, in nanoseconds, as the kernel accounts
/// them (the figures `/proc` shows; updated at scheduler ticks and switches, so the share of one
/// short poll is sampled rather than exact). One system call, without the run-queue lock that the
/// thread CPU clock takes.
#[allow(unsafe_code, reason = "getrusage writes only into the rusage we pass")]
fn thread_times_ns() -> (u64, u64) {
    // SAFETY: all-zero is a valid rusage (plain integers).
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    if rc != 0 {
        return (0, 0);
    }
    let ns = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1_000;
    (ns(ru.ru_utime), ns(ru.ru_stime))
}
