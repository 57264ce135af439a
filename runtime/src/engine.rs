//! The engine: one `wasmtime::Engine` per process with epoch interruption, the linkers every guest is
//! instantiated against, the compiled-code cache, and the executor guests run on.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use wasmtime::component::Component;
use wasmtime::{Engine, Module};

use crate::engine_config::{base_config, pooling_config};

use crate::cache::{ArtifactKind, ModuleCache, sha256};
use crate::error::{Error, Result, boxed};
use crate::host::{P1Host, P2Host};
use crate::protect::ProtectedPath;

/// How often the epoch advances; the granularity of kills, timeouts and yields.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// How instances get their memories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Allocator {
    /// Allocate per instance (best for one guest per process).
    #[default]
    OnDemand,
    /// Pre-reserve slots for many instances (best for a process that runs many guests); falls back
    /// to on-demand when the host refuses the reservation.
    Pooling,
}

/// Settings of a [`Runtime`].
#[derive(Debug, Clone, Default)]
pub struct RuntimeConfig {
    /// Where compiled code is cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// The most bytes the cache may hold ([`crate::cache::cap::DEFAULT_MAX`] when `None`).
    pub cache_max: Option<u64>,
    /// Instance allocation strategy.
    pub allocator: Allocator,
    /// Where private directories for tmpfs mounts and mount trees are made (default: the system
    /// temp dir). When given, it is protected: no grant may reach it.
    pub scratch_dir: Option<PathBuf>,
    /// Build each guest's filesystem as a kernel mount tree (`nodev,nosuid`, read-only grants
    /// read-only to the kernel). Needs [`crate::mounts::enter_namespace`] to have succeeded.
    pub mount_tree: bool,
    /// wasmbox's own directories and files (beyond the cache and its key, which are always
    /// protected) that no grant may reach.
    pub protected: Vec<ProtectedPath>,
    /// Run guests on an executor of the runtime's own even inside a tokio runtime, so that the
    /// caller's threads (which still build mount trees, as the shim's do) carry only the
    /// process's filter, not the guest threads' own.
    /// Outside a tokio runtime the runtime always has its own executor.
    pub own_executor: bool,
    /// Where wasm is compiled: in this process, or in a helper whose memory is capped.
    pub compiler: crate::compiler::Compiler,
    /// No guest of this runtime is granted network: `socket` is denied on guest threads too, so
    /// native code reached from a guest cannot open one.
    pub deny_guest_sockets: bool,
}

/// A compiled workload, ready to be prepared any number of times.
#[derive(Clone)]
pub struct Program {
    pub(crate) name: String,
    pub(crate) kind: ProgramKind,
    /// What it is by its exports ([`crate::shape::guest_kind`]), which decides how it is linked.
    pub(crate) guest: crate::GuestKind,
}

#[derive(Clone)]
pub(crate) enum ProgramKind {
    Module(Module),
    Component(Component),
}

impl Program {
    /// The workload's name (usually its path).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True for a component, false for a core module.
    pub fn is_component(&self) -> bool {
        matches!(self.kind, ProgramKind::Component(_))
    }

    /// What it is by its exports.
    pub fn guest_kind(&self) -> crate::GuestKind {
        self.guest
    }
}

/// Where a [`Program`] came from, for observability and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadedFrom {
    /// Compiled now (and stored in the cache when there is one).
    Compiled,
    /// Loaded from the compiled-code cache.
    Cache,
    /// Already loaded by this runtime: the same compiled code is shared.
    Memory,
}

pub(crate) struct Inner {
    pub(crate) engine: Engine,
    /// Whether `engine` took its instances from the pooling allocator.
    pub(crate) pooling: bool,
    pub(crate) cache: Option<ModuleCache>,
    // The linkers, each made when a guest first needs it: a process that runs only modules or
    // only components never builds (or touches the code of) the other's hundreds of imports.
    p1: OnceLock<wasmtime::Linker<P1Host>>,
    /// `p1` plus socket descriptors, for modules granted pre-opened listeners.
    p1_sockets: OnceLock<wasmtime::Linker<P1Host>>,
    p2: OnceLock<wasmtime::component::Linker<P2Host>>,
    /// The executor this runtime made for itself, when created outside tokio.
    owned_executor: Option<tokio::runtime::Runtime>,
    pub(crate) handle: tokio::runtime::Handle,
    pub(crate) scratch_dir: PathBuf,
    pub(crate) mount_tree: bool,
    pub(crate) protected: Vec<ProtectedPath>,
    stop_ticker: Arc<AtomicBool>,
    /// Cache writes still in flight; joined on drop so a short-lived process leaves them complete.
    cache_writes: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// Everything this runtime has loaded, by wasm digest: one compiled copy per module.
    loaded: std::sync::Mutex<std::collections::HashMap<[u8; 32], ProgramKind>>,
    /// The cache entries it loaded, each under a shared lock that marks it in use for as long
    /// as the runtime (and so the code mapped from it) lives.
    held: std::sync::Mutex<Vec<std::fs::File>>,
    compiler: crate::compiler::Compiler,
    /// The devices of `/dev` most guests share, made when a guest first needs them.
    devices: OnceLock<Arc<crate::devices::DevDir>>,
}

impl Inner {
    /// The devices of `/dev` guests share (see `Runtime::filesystem`).
    pub(crate) fn devices(&self) -> std::io::Result<Arc<crate::devices::DevDir>> {
        if let Some(d) = self.devices.get() {
            return Ok(d.clone());
        }
        let mut made = crate::devices::DevDir::create(&self.scratch_dir, &[])?;
        // Shared by every guest of this runtime: with mount namespaces, the kernel is a second
        // wall around it, as around every grant.
        if self.mount_tree {
            crate::mounts::seal_read_only(&made.path()).map_err(std::io::Error::other)?;
            made = made.sealed();
        }
        let made = Arc::new(made);
        Ok(self.devices.get_or_init(|| made).clone())
    }

    /// The WASI 0.1 linker, with socket descriptors when `sockets`.
    pub(crate) fn p1(&self, sockets: bool) -> Result<&wasmtime::Linker<P1Host>> {
        let cell = if sockets { &self.p1_sockets } else { &self.p1 };
        if let Some(l) = cell.get() {
            return Ok(l);
        }
        let l = p1_linker(&self.engine, sockets).map_err(|e| Error::Engine { source: boxed(e) })?;
        Ok(cell.get_or_init(move || l))
    }

    /// The component linker: WASI 0.2 and 0.3 and `wasi:http`.
    pub(crate) fn p2(&self) -> Result<&wasmtime::component::Linker<P2Host>> {
        if let Some(l) = self.p2.get() {
            return Ok(l);
        }
        let l = p2_linker(&self.engine).map_err(|e| Error::Engine { source: boxed(e) })?;
        Ok(self.p2.get_or_init(move || l))
    }
}

fn p1_linker(engine: &Engine, sockets: bool) -> wasmtime::Result<wasmtime::Linker<P1Host>> {
    let mut p1 = wasmtime::Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_async(&mut p1, |h: &mut P1Host| &mut h.wasi)?;
    // Any status a container can report (0..=255) is the guest's exit code; wasmtime-wasi
    // would turn 126 and up into a trap.
    p1.allow_shadowing(true).func_wrap(
        "wasi_snapshot_preview1",
        "proc_exit",
        |_: wasmtime::Caller<'_, P1Host>, status: i32| -> wasmtime::Result<()> {
            Err(wasmtime::Error::new(wasmtime_wasi::I32Exit(status & 0xff)))
        },
    )?;
    p1.allow_shadowing(false);
    crate::p1::add_to_linker(&mut p1, sockets)?;
    Ok(p1)
}

fn p2_linker(engine: &Engine) -> wasmtime::Result<wasmtime::component::Linker<P2Host>> {
    let mut p2 = wasmtime::component::Linker::new(engine);
    // WASI 0.2 and 0.3 side by side, and `wasi:http` (outgoing requests checked against the
    // guest's HTTP grants), as `wasmtime run -Sp3,http` links them.
    wasmtime_wasi::p2::add_to_linker_async(&mut p2)?;
    wasmtime_wasi::p3::add_to_linker(&mut p2)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut p2)?;
    wasmtime_wasi_http::p3::add_to_linker(&mut p2)?;
    crate::p2fs::add_to_linker(&mut p2)?;
    crate::p2dev::add_to_linker(&mut p2)?;
    crate::p2links::add_to_linker(&mut p2)?;
    crate::p2sockets::add_to_linker(&mut p2)?;
    Ok(p2)
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
        for h in self.cache_writes.get_mut().expect("cache writes").drain(..) {
            let _ = h.join();
        }
        if let Some(rt) = self.owned_executor.take() {
            rt.shutdown_background();
        }
    }
}

/// The sandbox engine. Cheap to clone; share one per process across threads.
#[derive(Clone)]
pub struct Runtime {
    pub(crate) inner: Arc<Inner>,
}

impl Runtime {
    /// Creates the engine, its linkers and the epoch ticker. Inside a tokio runtime, guests run on
    /// it; otherwise the runtime owns a small multi-threaded executor.
    pub fn new(config: RuntimeConfig) -> Result<Self> {
        let (engine, pooling) = match config.allocator {
            Allocator::OnDemand => Engine::new(&base_config()).map(|e| (e, false)),
            Allocator::Pooling => match Engine::new(&pooling_config()) {
                Ok(e) => Ok((e, true)),
                Err(e) => {
                    tracing::info!(error = %e, "pooling allocator unavailable; allocating on demand");
                    Engine::new(&base_config()).map(|e| (e, false))
                }
            },
        }
        .map_err(|e| Error::Engine { source: boxed(e) })?;
        let cache = config
            .cache_dir
            .as_deref()
            .map(|d| ModuleCache::open(d, &engine))
            .transpose()?
            .map(|c| match config.cache_max {
                Some(max) => c.with_max(max),
                None => c,
            });
        let mut protected = config.protected.clone();
        if let Some(c) = &cache {
            protected.push(ProtectedPath::new("compiled-code cache", c.dir()));
            protected.push(ProtectedPath::new("cache key", c.key_path()));
        }
        if config.mount_tree
            && let Some(reason) = crate::mounts::unavailable_reason()
        {
            return Err(Error::MountTree { reason });
        }
        let current = tokio::runtime::Handle::try_current().ok();
        let (owned_executor, handle) = match current {
            Some(h) if !config.own_executor => (None, h),
            _ => {
                // Every thread of this executor, workers and blocking pool, runs under the
                // seccomp filter.
                let progs = Arc::new(
                    crate::seccomp::programs(crate::seccomp::Threads::Guest {
                        sockets: !config.deny_guest_sockets,
                    })
                    .map_err(|reason| Error::Seccomp { reason })?,
                );
                let baseline = crate::seccomp::filter_count();
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("wasmbox-guest")
                    .on_thread_start(move || {
                        crate::seccomp::install(&progs, baseline);
                        crate::special::register_guest_thread();
                    })
                    .on_thread_stop(crate::special::unregister_guest_thread)
                    .enable_all()
                    .build()
                    .map_err(|source| Error::Executor { source })?;
                let h = rt.handle().clone();
                (Some(rt), h)
            }
        };
        let scratch_dir = config
            .scratch_dir
            .clone()
            .unwrap_or_else(std::env::temp_dir);
        if config.scratch_dir.is_some() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&scratch_dir)
                .map_err(|source| Error::Scratch {
                    guest: format!("(private directory {})", scratch_dir.display()),
                    source,
                })?;
            // A directory of wasmbox's own: no grant may reach the trees and tmpfs stand-ins.
            protected.push(ProtectedPath::new("private directory", &scratch_dir));
        }
        crate::scratch::sweep_stale(&scratch_dir);
        let stop_ticker = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = stop_ticker.clone();
            std::thread::Builder::new()
                .name("wasmbox-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(|source| Error::Executor { source })?;
        }
        Ok(Self {
            inner: Arc::new(Inner {
                engine,
                pooling,
                cache,
                p1: Default::default(),
                p1_sockets: Default::default(),
                p2: Default::default(),
                owned_executor,
                handle,
                scratch_dir,
                mount_tree: config.mount_tree,
                protected,
                stop_ticker,
                cache_writes: Default::default(),
                held: Default::default(),
                loaded: Default::default(),
                compiler: config.compiler.clone(),
                devices: OnceLock::new(),
            }),
        })
    }

    /// The tokio runtime guests run on.
    pub fn handle(&self) -> tokio::runtime::Handle {
        self.inner.handle.clone()
    }

    /// Runs `f` on one of the threads guests run on, and waits for it: to see what a guest
    /// thread may do (its seccomp filter, when the runtime has its own executor).
    pub fn on_guest_thread<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> std::thread::Result<R> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.inner.handle.spawn(async move {
            let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
        });
        rx.recv()
            .unwrap_or_else(|_| Err(Box::new("the guest executor is gone")))
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// Reads and loads a wasm file from the host (the CLI's named ambient-authority entry point).
    pub fn load_file(&self, path: &Path) -> Result<(Program, LoadedFrom)> {
        let bytes = std::fs::read(path).map_err(|source| Error::ReadWasm {
            path: path.to_path_buf(),
            source,
        })?;
        self.load(&path.display().to_string(), &bytes)
    }

    /// Loads wasm (binary or text) named `name`: from the cache when compiled before, else compiles
    /// and caches it. Precompiled native code is refused.
    pub fn load(&self, name: &str, bytes: &[u8]) -> Result<(Program, LoadedFrom)> {
        self.load_by(name, bytes, None)
    }

    /// [`Runtime::load`], giving up at `deadline`: a compile in a helper process is ended then
    /// ([`Error::CompileDeadline`]); one in this process runs to its end.
    pub fn load_by(
        &self,
        name: &str,
        bytes: &[u8],
        deadline: Option<std::time::Instant>,
    ) -> Result<(Program, LoadedFrom)> {
        let binary = to_binary(name, bytes)?;
        let guest = crate::shape::guest_kind(&binary).ok_or_else(|| Error::NotWasm {
            name: name.to_string(),
            reason: "no wasm header".into(),
        })?;
        let kind = if wasmparser::Parser::is_component(&binary) {
            ArtifactKind::Component
        } else {
            ArtifactKind::Module
        };
        let digest = sha256(&binary);
        if let Some(k) = self.inner.loaded.lock().expect("loaded").get(&digest) {
            return Ok((self.program(name, k.clone(), guest), LoadedFrom::Memory));
        }
        let (k, from) = self.compile_or_cached(name, &binary, digest, kind, deadline)?;
        self.inner
            .loaded
            .lock()
            .expect("loaded")
            .insert(digest, k.clone());
        Ok((self.program(name, k, guest), from))
    }

    /// Compiles wasm `bytes` (named `name`) into the cache unless a sound entry for it is there
    /// already, keeping nothing of it loaded (compiling ahead of a start). Returns
    /// [`LoadedFrom::Cache`] when it was compiled before, else [`LoadedFrom::Compiled`] once the
    /// entry is written.
    pub fn compile_to_cache(&self, name: &str, bytes: &[u8]) -> Result<LoadedFrom> {
        let binary = to_binary(name, bytes)?;
        if crate::shape::guest_kind(&binary).is_none() {
            return Err(Error::NotWasm {
                name: name.to_string(),
                reason: "no wasm header".into(),
            });
        }
        let kind = if wasmparser::Parser::is_component(&binary) {
            ArtifactKind::Component
        } else {
            ArtifactKind::Module
        };
        let digest = sha256(&binary);
        if let Some(cache) = &self.inner.cache
            && let Ok(Some(_)) = cache.open_verified(&digest, kind)
        {
            return Ok(LoadedFrom::Cache);
        }
        // A damaged or planted entry is replaced there, as at any load.
        let (program, from) = self.compile_or_cached(name, &binary, digest, kind, None)?;
        drop(program);
        self.flush_cache();
        Ok(from)
    }

    /// Waits until compiled code written in the background is in the cache.
    pub fn flush_cache(&self) {
        let pending: Vec<_> = self
            .inner
            .cache_writes
            .lock()
            .expect("cache writes")
            .drain(..)
            .collect();
        for h in pending {
            let _ = h.join();
        }
    }

    fn compile_or_cached(
        &self,
        name: &str,
        binary: &[u8],
        digest: [u8; 32],
        kind: ArtifactKind,
        deadline: Option<std::time::Instant>,
    ) -> Result<(ProgramKind, LoadedFrom)> {
        if let Some(cache) = &self.inner.cache
            && let Some(k) = self.load_cached(name, cache, &digest, kind)?
        {
            return Ok((k, LoadedFrom::Cache));
        }
        let engine = &self.inner.engine;
        crate::shape::check(binary).map_err(|reason| Error::TooLarge {
            name: name.to_string(),
            reason,
        })?;
        let compile_err = |e| Error::Compile {
            name: name.to_string(),
            source: boxed(e),
        };
        // Small wasm compiles here: its compile needs a few tens of MiB at most, and a helper
        // would cost more than the compile itself.
        let helper = self
            .inner
            .compiler
            .helper_program()
            .filter(|_| binary.len() > crate::compiler::IN_PROCESS_MAX);
        // A module big enough for the helper is compiled by one process at a time: one that
        // waited for another's compile loads what that one wrote.
        let lock = match (&self.inner.cache, &helper) {
            (Some(cache), Some(_)) => {
                let lock = cache.compile_lock(&digest, kind, deadline);
                if lock.waited()
                    && let Some(k) = self.load_cached(name, cache, &digest, kind)?
                {
                    return Ok((k, LoadedFrom::Cache));
                }
                Some(lock)
            }
            _ => None,
        };
        tracing::debug!(
            name,
            bytes = binary.len(),
            r#where = if helper.is_some() {
                "in a helper"
            } else {
                "in process"
            },
            "compiling"
        );
        let (k, serialized) = match helper {
            None => {
                let k = match kind {
                    ArtifactKind::Module => ProgramKind::Module(
                        Module::from_binary(engine, binary).map_err(compile_err)?,
                    ),
                    ArtifactKind::Component => ProgramKind::Component(
                        Component::from_binary(engine, binary).map_err(compile_err)?,
                    ),
                };
                trim_heap();
                (k, None)
            }
            Some((program, memory)) => {
                let bytes = crate::compiler::compile_in_helper(
                    program, memory, name, kind, binary, deadline,
                )?;
                let k = deserialize_helper_output(engine, &bytes, kind).map_err(compile_err)?;
                (k, Some(bytes))
            }
        };
        if let Some(cache) = &self.inner.cache {
            // Serializing and fsyncing is off the start path: the guest runs meanwhile, and the
            // write is joined when the runtime is dropped. A write that fails only costs a later
            // recompile.
            let cache = cache.clone();
            let program = k.clone();
            let name = name.to_string();
            let job = std::thread::Builder::new()
                .name("wasmbox-cache".into())
                .spawn(move || {
                    // Released once the entry is written (or could not be).
                    let _lock = lock;
                    let bytes = match serialized {
                        Some(b) => Ok(b),
                        None => match &program {
                            ProgramKind::Module(m) => m.serialize(),
                            ProgramKind::Component(c) => c.serialize(),
                        },
                    };
                    match bytes {
                        Ok(bytes) => {
                            if let Err(e) = cache.store(&digest, kind, &bytes) {
                                tracing::warn!(name, error = %e, "could not store compiled code");
                            }
                        }
                        Err(e) => {
                            tracing::warn!(name, error = %e, "could not serialize compiled code")
                        }
                    }
                    trim_heap();
                });
            match job {
                Ok(h) => self
                    .inner
                    .cache_writes
                    .lock()
                    .expect("cache writes")
                    .push(h),
                Err(e) => tracing::warn!(error = %e, "could not start the cache writer"),
            }
        }
        Ok((k, LoadedFrom::Compiled))
    }

    /// The compiled code for `digest` from the cache, loaded, if a sound entry is there. An entry
    /// that fails its MAC, cannot be read or cannot be loaded is evicted (and compiled again).
    fn load_cached(
        &self,
        name: &str,
        cache: &crate::cache::ModuleCache,
        digest: &[u8; 32],
        kind: ArtifactKind,
    ) -> Result<Option<ProgramKind>> {
        match cache.open_verified(digest, kind) {
            Ok(Some(entry)) => {
                let path = entry.path.clone();
                let held = crate::cache::cap::hold(&entry.file);
                match deserialize(&self.inner.engine, entry, kind) {
                    Ok(k) => {
                        match held {
                            Ok(f) => self.inner.held.lock().expect("held").push(f),
                            Err(e) => {
                                tracing::debug!(path = %path.display(), error = %e, "could not mark a cache entry in use")
                            }
                        }
                        tracing::debug!(name, path = %path.display(), "compiled code from cache");
                        Ok(Some(k))
                    }
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "discarding unusable cache entry");
                        cache.evict(&path);
                        Ok(None)
                    }
                }
            }
            Ok(None) => Ok(None),
            Err(Error::CacheTampered { path }) => {
                // Not written by us with our key: never loaded; recompiled and replaced.
                tracing::warn!(
                    path = %path.display(),
                    "cache entry failed its MAC check (tampered with); recompiling and replacing it"
                );
                cache.evict(&path);
                Ok(None)
            }
            Err(Error::CacheIo { path, source }) => {
                // An entry that cannot be read (damaged, mode changed): a miss.
                tracing::warn!(path = %path.display(), error = %source, "unreadable cache entry; recompiling it");
                cache.evict(&path);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn program(&self, name: &str, kind: ProgramKind, guest: crate::GuestKind) -> Program {
        Program {
            name: name.to_string(),
            kind,
            guest,
        }
    }
}

/// Gives memory the process used and freed back to the kernel: a compile's (or its
/// serialization's), or a container's set-up. The allocator keeps freed memory in the arena of
/// the thread that used it, so a long-lived process (a pod's shim) would otherwise keep a
/// compile's peak, about 10 MiB, resident for good, and after each container's set-up some
/// hundred KiB.
#[allow(
    unsafe_code,
    reason = "malloc_trim(3) only releases free memory of the allocator's own"
)]
pub fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim takes no pointers and only returns free pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn deserialize(
    engine: &Engine,
    entry: crate::cache::Verified,
    kind: ArtifactKind,
) -> wasmtime::Result<ProgramKind> {
    use std::os::fd::AsRawFd;
    // SAFETY: `entry` is a file of our own cache whose MAC, keyed with a secret only this user can
    // read, was checked over the whole file just now, through this same open file; only this
    // cache writes such files (from `serialize` of code this engine compiled). Nothing from an
    // image or a user ever gets a valid MAC.
    #[allow(
        unsafe_code,
        reason = "loading our own compiled code, verified by its MAC, from our private cache"
    )]
    unsafe {
        Ok(match kind {
            ArtifactKind::Module => {
                ProgramKind::Module(Module::deserialize_open_file(engine, entry.file)?)
            }
            ArtifactKind::Component => {
                // The verified file itself, through its descriptor: no path lookup to race.
                let fd_path = format!("/proc/self/fd/{}", entry.file.as_raw_fd());
                ProgramKind::Component(Component::deserialize_file(engine, fd_path)?)
            }
        })
    }
}

/// Loads what the compiler helper wrote.
pub(crate) fn deserialize_helper_output(
    engine: &Engine,
    bytes: &[u8],
    kind: ArtifactKind,
) -> wasmtime::Result<ProgramKind> {
    // SAFETY: `bytes` are what our own compiler helper (this program, re-executed) wrote on a pipe
    // only we hold, from `precompile_*` of an engine configured as this one; they came from no
    // image and no user. wasmtime checks the engine compatibility header before loading.
    #[allow(
        unsafe_code,
        reason = "loading code our own compiler helper compiled, straight from its pipe"
    )]
    unsafe {
        Ok(match kind {
            ArtifactKind::Module => ProgramKind::Module(Module::deserialize(engine, bytes)?),
            ArtifactKind::Component => {
                ProgramKind::Component(Component::deserialize(engine, bytes)?)
            }
        })
    }
}

/// True when `bytes` are wasmtime's precompiled native code (a `.cwasm`), which wasmbox only ever
/// loads from its own cache.
pub fn is_precompiled(bytes: &[u8]) -> bool {
    Engine::detect_precompiled(bytes).is_some()
}

/// Checks the bytes are wasm (or wasm text) and returns the binary.
fn to_binary(name: &str, bytes: &[u8]) -> Result<Vec<u8>> {
    let not_wasm = |reason: String| Error::NotWasm {
        name: name.to_string(),
        reason,
    };
    if Engine::detect_precompiled(bytes).is_some() {
        return Err(Error::Precompiled {
            name: name.to_string(),
        });
    }
    if crate::shape::is_wasm(bytes) {
        if bytes.len() < 8 {
            return Err(not_wasm("truncated header".into()));
        }
        return Ok(bytes.to_vec());
    }
    if bytes.is_empty() {
        return Err(not_wasm("the file is empty".into()));
    }
    if bytes.starts_with(b"\x7fELF") {
        return Err(not_wasm("it is an ELF native executable".into()));
    }
    let looks_text = std::str::from_utf8(bytes).is_ok_and(|s| {
        let t = s.trim_start();
        t.starts_with('(') || t.starts_with(";;")
    });
    if looks_text {
        return wat::parse_bytes(bytes)
            .map(|b| b.into_owned())
            .map_err(|e| not_wasm(format!("wasm text does not parse: {e}")));
    }
    let head: Vec<String> = bytes.iter().take(4).map(|b| format!("{b:02x}")).collect();
    Err(not_wasm(format!(
        "no wasm magic number (starts with bytes {})",
        head.join(" ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_non_wasm_with_reasons() {
        let e = to_binary("x", b"").unwrap_err().to_string();
        assert!(e.contains("empty"), "{e}");
        let e = to_binary("x", b"\x7fELF\x02\x01").unwrap_err().to_string();
        assert!(e.contains("ELF"), "{e}");
        let e = to_binary("x", b"#!/bin/sh\necho").unwrap_err().to_string();
        assert!(e.contains("23 21 2f 62"), "{e}");
        let e = to_binary("x", b"\0asm\x01").unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
        let e = to_binary("x", b"(module (func $f (unknown)))")
            .unwrap_err()
            .to_string();
        assert!(e.contains("wasm text"), "{e}");
        assert!(to_binary("x", b"(module)").is_ok());
    }

    #[test]
    fn rejects_precompiled() {
        let engine = Engine::default();
        let bytes = engine.precompile_module(b"(module)").unwrap();
        let e = to_binary("evil.cwasm", &bytes).unwrap_err();
        assert!(matches!(e, Error::Precompiled { .. }), "{e}");
    }
}
