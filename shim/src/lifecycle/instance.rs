//! The process interface: what runs a container's processes, a wasm guest in this process
//! ([`super::wasm::WasmInstance`]) or runc ([`super::native::NativeInstance`]). The lifecycle
//! checks every request against the process's status first, so an instance is only asked to do
//! what its status allows, and never keeps status of its own.

use std::future::Future;
use std::pin::Pin;

use async_trait::async_trait;

use super::error::Result;
use super::record::Record;
use super::stdio::StdioPaths;

/// How a process ended, as its instance saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    /// Exit status (128+signal when killed).
    pub code: u32,
    /// Whether it went over its memory limit.
    pub oom: bool,
}

/// Resolves when the process ends; `None` when it can no longer end (forgotten unstarted).
pub type ExitFuture = Pin<Box<dyn Future<Output = Option<Ended>> + Send>>;

/// A process an instance made (a container's init, or an added one).
pub struct Made {
    /// Its pid: the shim's for wasm, runc's init, or 0 until started.
    pub pid: u32,
    /// Its end, when it can already be known (before it is started).
    pub exit: Option<ExitFuture>,
}

impl Made {
    /// A process `pid` whose end is promised now and told through the sender (or never, if the
    /// sender is dropped).
    pub fn promised(pid: u32) -> (Self, tokio::sync::oneshot::Sender<Ended>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let made = Made {
            pid,
            exit: Some(Box::pin(async move { rx.await.ok() })),
        };
        (made, tx)
    }
}

/// Usage of a container's live processes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Bytes of memory in use.
    pub memory: u64,
    /// The memory limit, if any.
    pub memory_limit: Option<u64>,
    /// CPU time, nanoseconds.
    pub cpu_ns: u64,
    /// The part of `cpu_ns` spent in the kernel.
    pub cpu_system_ns: u64,
    /// Live processes.
    pub processes: u64,
}

/// What runs one container's processes. `exec_id` "" is the init process.
#[async_trait]
pub trait Instance: Send + Sync {
    /// Fills in what the on-disk record must hold to clean up after this instance.
    fn describe(&self, record: &mut Record);

    /// Starts a created process (`pid` as made). Returns its pid and, if not known before, its
    /// end.
    async fn start(&mut self, exec_id: &str, pid: u32, stdio: &StdioPaths) -> Result<Made>;

    /// Signals a process that has not stopped: a created one ends (128+`signal`). With `all`
    /// and the init process, every process of the container.
    async fn kill(&mut self, exec_id: &str, pid: u32, signal: u32, all: bool) -> Result<()>;

    /// Adds a process (created, not started) from its OCI process JSON.
    async fn exec(&mut self, exec_id: &str, process: &[u8], stdio: &StdioPaths) -> Result<Made>;

    /// Forgets an added process that is not running.
    fn remove_exec(&mut self, exec_id: &str);

    /// Freezes every process of the container.
    async fn pause(&mut self) -> Result<()>;

    /// Thaws every process of the container.
    async fn resume(&mut self) -> Result<()>;

    /// Applies new resources (OCI `LinuxResources` JSON) to the container.
    async fn update(&mut self, resources: &[u8]) -> Result<()>;

    /// Usage of the container's live processes.
    fn stats(&self) -> Result<Stats>;

    /// Releases everything the container holds; its init is created or stopped.
    async fn delete(&mut self) -> Result<()>;
}
