//! Per-guest store state: the WASI context, the memory limiter, the `wasi:http` hooks (for
//! components) and (for preview 1) the pre-opened sockets.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::p1::sockets::Sockets;

/// Bytes charged per table element against the memory limit.
const TABLE_ELEMENT_BYTES: u64 = 8;

/// What a guest's memories and tables use, and its limit; shared between the store's limiter and
/// the [`crate::Running`] handle, so the limit can change while the guest runs.
#[derive(Debug, Default)]
pub(crate) struct Meter {
    /// Limit in bytes; 0 means none.
    limit: AtomicU64,
    /// Bytes in use by all memories and tables.
    used: AtomicU64,
    /// Set when the guest tried to go past the limit.
    pub(crate) hit: AtomicBool,
    /// Set when the guest's growth would have taken the instances it is counted with past
    /// their limit together (the container's memory), though not past its own.
    pub(crate) crowded: AtomicBool,
}

impl Meter {
    pub(crate) fn new(limit: Option<u64>) -> Arc<Self> {
        let m = Arc::new(Self::default());
        m.set_limit(limit);
        m
    }

    pub(crate) fn set_limit(&self, limit: Option<u64>) {
        self.limit.store(limit.unwrap_or(0), Ordering::SeqCst);
    }

    pub(crate) fn limit(&self) -> Option<u64> {
        Some(self.limit.load(Ordering::SeqCst)).filter(|&l| l > 0)
    }

    pub(crate) fn used(&self) -> u64 {
        self.used.load(Ordering::SeqCst)
    }
}

/// Caps the bytes of all of a guest's memories and tables together, and, for the instances of a
/// server, of all instances together.
pub(crate) struct Limiter {
    meter: Arc<Meter>,
    /// A meter that adds up several guests' use (the instances of one server) against its own
    /// limit (the container's memory).
    total: Option<Arc<Meter>>,
}

impl Limiter {
    pub(crate) fn new(meter: Arc<Meter>) -> Self {
        Self { meter, total: None }
    }

    /// A limiter for `meter` whose use is also counted in `total`, and held within `total`'s
    /// limit, until it is dropped.
    pub(crate) fn counted_in(meter: Arc<Meter>, total: Arc<Meter>) -> Self {
        Self {
            meter,
            total: Some(total),
        }
    }

    fn grow(&mut self, current: u64, desired: u64) -> wasmtime::Result<bool> {
        let m = &self.meter;
        let before = m.used.load(Ordering::SeqCst);
        let next = before.saturating_sub(current).saturating_add(desired);
        if let Some(limit) = m.limit()
            && next > limit
        {
            m.hit.store(true, Ordering::SeqCst);
            wasmtime::bail!("memory limit of {limit} bytes exceeded (asked for {next} bytes)");
        }
        if let Some(t) = &self.total {
            if next >= before {
                // Taken from the total in one step, so instances growing at once cannot pass
                // its limit together.
                let more = next - before;
                let limit = t.limit();
                let taken = t
                    .used
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                        let after = used.saturating_add(more);
                        limit.is_none_or(|l| after <= l).then_some(after)
                    });
                if let Err(used) = taken {
                    m.crowded.store(true, Ordering::SeqCst);
                    wasmtime::bail!(
                        "memory limit of {} bytes for all instances together exceeded ({used} bytes in use, asked for {more} more)",
                        limit.unwrap_or(0)
                    );
                }
            } else {
                t.used.fetch_sub(before - next, Ordering::SeqCst);
            }
        }
        m.used.store(next, Ordering::SeqCst);
        Ok(true)
    }
}

impl Drop for Limiter {
    fn drop(&mut self) {
        if let Some(t) = &self.total {
            t.used.fetch_sub(self.meter.used(), Ordering::SeqCst);
        }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.grow(current as u64, desired as u64)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.grow(
            current as u64 * TABLE_ELEMENT_BYTES,
            desired as u64 * TABLE_ELEMENT_BYTES,
        )
    }
}

/// Store state of a preview 1 core module.
pub(crate) struct P1Host {
    pub(crate) wasi: WasiP1Ctx,
    pub(crate) limiter: Limiter,
    pub(crate) sockets: Sockets,
    /// Most descriptors the guest may hold open.
    pub(crate) handles: usize,
    /// The directories the guest's descriptors name, by number: the preopens (3 on) and those
    /// the guest opened itself, each as the host's own `O_PATH` descriptor (see `p1::fs`).
    pub(crate) dirs: std::collections::HashMap<u32, Arc<std::os::fd::OwnedFd>>,
    /// The preopens by guest path, each the very descriptor `dirs` holds for it while the guest
    /// holds it (see `p1::links`).
    pub(crate) preopens: Vec<(String, Arc<std::os::fd::OwnedFd>)>,
    /// The descriptors that are devices of `/dev` (see `p1::dev`), by number.
    pub(crate) devices: std::collections::HashMap<u32, crate::devices::Device>,
}

/// Store state of a component (WASI 0.2 or 0.3).
pub(crate) struct P2Host {
    pub(crate) ctx: WasiCtx,
    pub(crate) table: ResourceTable,
    /// Most handles the guest may hold open: opening a file or a socket past it is an error
    /// code; the table's own cap, a little above, is the backstop.
    pub(crate) handles: usize,
    pub(crate) limiter: Limiter,
    pub(crate) http: WasiHttpCtx,
    /// Checks each outgoing request against the guest's HTTP grants.
    pub(crate) hooks: crate::http::Hooks,
}

impl P2Host {
    pub(crate) fn new(
        ctx: WasiCtx,
        table: ResourceTable,
        handles: usize,
        limiter: Limiter,
        hooks: crate::http::Hooks,
    ) -> Self {
        P2Host {
            ctx,
            table,
            handles,
            limiter,
            http: WasiHttpCtx::new(),
            hooks,
        }
    }
}

impl P2Host {
    /// Whether `more` new handles would take the guest past its limit.
    pub(crate) fn at_handle_limit(&mut self, more: usize) -> bool {
        self.table.iter_mut().count() + more > self.handles
    }
}

impl WasiHttpView for P2Host {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            hooks: &mut self.hooks,
            table: &mut self.table,
            ctx: &mut self.http,
        }
    }
}

impl WasiView for P2Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

/// Access to the limiter of either kind of host.
pub(crate) trait HasLimiter: Send + 'static {
    fn limiter(&mut self) -> &mut Limiter;
}

impl HasLimiter for P1Host {
    fn limiter(&mut self) -> &mut Limiter {
        &mut self.limiter
    }
}

impl HasLimiter for P2Host {
    fn limiter(&mut self) -> &mut Limiter {
        &mut self.limiter
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_counts_all_memories_and_tables() {
        let meter = Meter::new(Some(100));
        let mut l = Limiter::new(meter.clone());
        assert!(l.memory_growing(0, 60, None).unwrap());
        assert!(l.table_growing(0, 5, None).unwrap()); // 40 bytes
        assert!(l.memory_growing(60, 60, None).unwrap());
        assert_eq!(meter.used(), 100);
        assert!(!meter.hit.load(Ordering::SeqCst));
        let e = l.memory_growing(0, 1, None).unwrap_err().to_string();
        assert!(e.contains("memory limit of 100 bytes"), "{e}");
        assert!(meter.hit.load(Ordering::SeqCst));
        let mut unlimited = Limiter::new(Meter::new(None));
        assert!(unlimited.memory_growing(0, 1 << 40, None).unwrap());
    }

    #[test]
    fn instances_counted_together_stay_within_the_total_limit() {
        let total = Meter::new(Some(100));
        let (a, b) = (Meter::new(Some(80)), Meter::new(Some(80)));
        let mut la = Limiter::counted_in(a.clone(), total.clone());
        let mut lb = Limiter::counted_in(b.clone(), total.clone());
        assert!(la.memory_growing(0, 60, None).unwrap());
        let e = lb.memory_growing(0, 50, None).unwrap_err().to_string();
        assert!(e.contains("all instances together"), "{e}");
        assert!(b.crowded.load(Ordering::SeqCst) && !b.hit.load(Ordering::SeqCst));
        assert_eq!((total.used(), b.used()), (60, 0));
        assert!(lb.memory_growing(0, 40, None).unwrap());
        // Its own limit still holds within the total's room.
        assert!(la.memory_growing(60, 20, None).unwrap());
        assert!(la.memory_growing(20, 90, None).is_err());
        assert!(a.hit.load(Ordering::SeqCst));
        drop(la);
        assert_eq!(total.used(), 40);
        drop(lb);
        assert_eq!(total.used(), 0);
    }

    #[test]
    fn limit_changes_apply_to_the_next_growth() {
        let meter = Meter::new(Some(100));
        let mut l = Limiter::new(meter.clone());
        assert!(l.memory_growing(0, 80, None).unwrap());
        meter.set_limit(Some(50));
        assert!(l.memory_growing(80, 90, None).is_err());
        meter.set_limit(Some(1000));
        assert!(l.memory_growing(80, 900, None).unwrap());
        assert_eq!(meter.used(), 900);
    }
}
