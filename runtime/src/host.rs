//! Per-guest store state: the WASI context, the memory limiter, and (for preview 1) the
//! pre-opened sockets.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::p1net::Sockets;

/// Bytes charged per table element against the memory limit.
const TABLE_ELEMENT_BYTES: u64 = 8;

/// Caps the bytes of all of a guest's memories and tables together.
pub(crate) struct Limiter {
    limit: Option<u64>,
    used: u64,
    /// Set when the guest tried to go past the limit.
    pub(crate) hit: Arc<AtomicBool>,
}

impl Limiter {
    pub(crate) fn new(limit: Option<u64>) -> Self {
        Self {
            limit,
            used: 0,
            hit: Arc::new(AtomicBool::new(false)),
        }
    }

    fn grow(&mut self, current: u64, desired: u64) -> wasmtime::Result<bool> {
        let next = self.used.saturating_sub(current).saturating_add(desired);
        if let Some(limit) = self.limit
            && next > limit
        {
            self.hit.store(true, Ordering::SeqCst);
            wasmtime::bail!("memory limit of {limit} bytes exceeded (asked for {next} bytes)");
        }
        self.used = next;
        Ok(true)
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
}

/// Store state of a preview 2 component.
pub(crate) struct P2Host {
    pub(crate) ctx: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: Limiter,
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
        let mut l = Limiter::new(Some(100));
        assert!(l.memory_growing(0, 60, None).unwrap());
        assert!(l.table_growing(0, 5, None).unwrap()); // 40 bytes
        assert!(l.memory_growing(60, 60, None).unwrap());
        assert!(!l.hit.load(Ordering::SeqCst));
        let e = l.memory_growing(0, 1, None).unwrap_err().to_string();
        assert!(e.contains("memory limit of 100 bytes"), "{e}");
        assert!(l.hit.load(Ordering::SeqCst));
        let mut unlimited = Limiter::new(None);
        assert!(unlimited.memory_growing(0, 1 << 40, None).unwrap());
    }
}
