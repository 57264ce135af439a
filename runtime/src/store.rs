//! Stores for guests: the epoch yield every store gets, and the caps on a guest's handle tables.
//! A command's guest and a server's instances alike.

use wasmtime::{Store, UpdateDeadline};

use crate::host::{HasLimiter, P2Host};

/// Table entries a guest gets beyond its handle limit, for its stdio, preopens and streams.
pub(crate) const HANDLE_HEADROOM: usize = 64;

/// A resource table holding at most `handles` entries (plus the headroom).
pub(crate) fn handle_table(handles: usize) -> wasmtime::component::ResourceTable {
    let mut t = wasmtime::component::ResourceTable::new();
    t.set_max_capacity(handles + HANDLE_HEADROOM);
    t
}

pub(crate) fn new_store<T: HasLimiter>(engine: &wasmtime::Engine, host: T) -> Store<T> {
    let mut store = Store::new(engine, host);
    store.limiter(|h| h.limiter());
    store.set_epoch_deadline(1);
    // Yield to the executor every tick: other guests progress, and kill and timeout are noticed.
    store.epoch_deadline_callback(|_| Ok(UpdateDeadline::Yield(1)));
    store
}

/// Component-model handles (resources, streams, futures, subtasks) one guest may hold, per handle
/// it may hold open; wasmtime keeps them in tables of its own, beside the resource table.
const COMPONENT_HANDLES_PER_HANDLE: usize = 16;
/// Entries of wasmtime's concurrency table (stream, future and task state) per component handle.
const CONCURRENT_ENTRIES_PER_HANDLE: usize = 4;
/// The most component-model handles any guest may hold (wasmtime's own default).
const MAX_COMPONENT_HANDLES: usize = 100_000;

/// A store for a component, whose component-model handle tables are capped too: a guest making
/// streams or futures in a loop traps at the cap instead of growing the host without bound.
pub(crate) fn new_component_store(engine: &wasmtime::Engine, host: P2Host) -> Store<P2Host> {
    let cap = ((host.handles + HANDLE_HEADROOM) * COMPONENT_HANDLES_PER_HANDLE)
        .min(MAX_COMPONENT_HANDLES);
    let mut store = new_store(engine, host);
    store.set_max_component_handles(cap);
    // The state behind the handles: a stream takes two handles and a few entries here.
    if let Some(t) = store.concurrent_resource_table() {
        t.set_max_capacity(cap * CONCURRENT_ENTRIES_PER_HANDLE);
    }
    store
}

/// The trap's cause and the innermost frame, on one line.
pub(crate) fn trap_message(e: &wasmtime::Error) -> String {
    let cause = e.root_cause().to_string();
    let frame = e
        .downcast_ref::<wasmtime::WasmBacktrace>()
        .and_then(|bt| bt.frames().first())
        .map(|f| {
            let name = f.func_name().unwrap_or("<unnamed>");
            match f.module_offset() {
                Some(off) => format!(" in {name} at offset {off:#x}"),
                None => format!(" in {name}"),
            }
        })
        .unwrap_or_default();
    format!("{cause}{frame}")
}
