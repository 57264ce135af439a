//! The life of one guest: prepare (link against the sandbox's imports, check the entry), start
//! (build its WASI context and store, run it on the executor), kill (from any thread, at once),
//! wait (its [`ExitStatus`]).

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use wasmtime::component::types::ComponentItem;
use wasmtime::{Store, Val};
use wasmtime_wasi::I32Exit;
use wasmtime_wasi::p2::bindings::CommandPre;

use crate::engine::{LoadedFrom, Program, ProgramKind, Runtime};
use crate::error::{Error, Result, boxed};
use crate::exit::{ExitReason, ExitStatus};
use crate::filesystem::Filesystem;
use crate::host::{Limiter, Meter, P1Host, P2Host};
use crate::p1::sockets::Sockets;
use crate::policy::Policy;
use crate::shared::{Gate, Gated, Shared};
use crate::store::{handle_table, new_component_store, new_store, trap_message};
use crate::wasi::{Stdio, build_ctx};

enum Pre {
    Module {
        pre: wasmtime::InstancePre<P1Host>,
        export: String,
        init: bool,
    },
    /// A WASI 0.2 command (`wasi:cli/run@0.2`).
    Command(CommandPre<P2Host>),
    /// A WASI 0.3 command (`wasi:cli/run@0.3`, an async export).
    Command3(wasmtime_wasi::p3::bindings::CommandPre<P2Host>),
    ComponentExport {
        pre: wasmtime::component::InstancePre<P2Host>,
        export: String,
    },
    /// An HTTP component (`wasi:http/incoming-handler@0.2`, or `wasi:http/handler@0.3`), served.
    Proxy(wasmtime_wasi_http::handler::ProxyPre<P2Host>),
}

/// What a guest is, by what it exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestKind {
    /// A core module (WASI preview 1) exporting `_start`, run from it or a named export.
    CommandModule,
    /// A core module exporting no `_start` (a library: `_initialize` and named exports), run
    /// only from a named export.
    ReactorModule,
    /// A component exporting `wasi:cli/run` (WASI 0.2 or 0.3), or a named export.
    CommandComponent,
    /// A component exporting `wasi:http/incoming-handler`: served, a fresh instance per request.
    HttpComponent,
}

impl std::fmt::Display for GuestKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            GuestKind::CommandModule => "command module",
            GuestKind::ReactorModule => "reactor module",
            GuestKind::CommandComponent => "command component",
            GuestKind::HttpComponent => "HTTP component",
        })
    }
}

/// A guest linked and checked, ready to start (an OCI "created" container).
pub struct Prepared {
    runtime: Runtime,
    name: String,
    policy: Policy,
    pre: Pre,
    kind: GuestKind,
    fs: Filesystem,
    /// An HTTP component's listener, when bound before start ([`Prepared::listen_with`]).
    listener: Option<std::net::TcpListener>,
    /// Where an HTTP component's metrics are counted, with their labels and where they are
    /// served ([`Prepared::count_in`]).
    metrics: Option<(
        Arc<crate::metrics::Metrics>,
        crate::metrics::Labels,
        std::net::SocketAddr,
    )>,
    /// Where its code came from and how long loading it took ([`crate::launch::prepare`]).
    loaded: Option<(LoadedFrom, Duration)>,
}

impl Runtime {
    /// Links `program` against the sandbox and checks its entry, without running anything.
    pub fn prepare(&self, program: &Program, policy: Policy) -> Result<Prepared> {
        let name = program.name.clone();
        let link = |e| Error::Link {
            name: name.clone(),
            source: boxed(e),
        };
        let pre = match &program.kind {
            ProgramKind::Module(m) => {
                let export = policy.export.clone().unwrap_or_else(|| "_start".into());
                let ok = m
                    .get_export(&export)
                    .and_then(|e| e.func().map(|f| f.params().len() == 0))
                    .unwrap_or(false);
                if !ok {
                    return Err(Error::ExportNotFound { name, export });
                }
                let init = export != "_start" && m.get_export("_initialize").is_some();
                let linker = self
                    .inner
                    .p1(!crate::p1::sockets::preopenable(&policy.net).is_empty())?;
                Pre::Module {
                    pre: linker.instantiate_pre(m).map_err(link)?,
                    export,
                    init,
                }
            }
            ProgramKind::Component(c) => {
                let pre = self.inner.p2()?.instantiate_pre(c).map_err(link)?;
                let not_command = |_| Error::NotCommand { name: name.clone() };
                match &policy.export {
                    // Served, as its exports say (`shape::guest_kind`, the one decision).
                    None if program.guest == GuestKind::HttpComponent => {
                        use wasmtime_wasi_http::handler::ProxyPre;
                        Pre::Proxy(
                            match wasmtime_wasi_http::p3::bindings::ServicePre::new(pre.clone()) {
                                Ok(p3) => ProxyPre::P3(p3),
                                Err(_) => ProxyPre::P2(
                                    wasmtime_wasi_http::p2::bindings::ProxyPre::new(pre)
                                        .map_err(not_command)?,
                                ),
                            },
                        )
                    }
                    // A command exporting both versions runs as WASI 0.3, as `wasmtime run` does.
                    None => match wasmtime_wasi::p3::bindings::CommandPre::new(pre.clone()) {
                        Ok(p3) => Pre::Command3(p3),
                        Err(_) => Pre::Command(CommandPre::new(pre).map_err(not_command)?),
                    },
                    Some(export) => {
                        let ty = c.component_type();
                        let ok = ty.exports(self.engine()).any(|(n, item)| {
                            n == export
                                && matches!(item.ty, ComponentItem::ComponentFunc(ref f) if f.params().len() == 0)
                        });
                        if !ok {
                            return Err(Error::ExportNotFound {
                                name,
                                export: export.clone(),
                            });
                        }
                        Pre::ComponentExport {
                            pre,
                            export: export.clone(),
                        }
                    }
                }
            }
        };
        let mut fs = self.filesystem(&policy)?;
        if matches!(pre, Pre::Module { .. }) {
            fs.preopen_cwd_first(&policy.cwd);
        }
        let kind = match &pre {
            Pre::ComponentExport { .. } => GuestKind::CommandComponent,
            _ => program.guest,
        };
        Ok(Prepared {
            runtime: self.clone(),
            name,
            policy,
            pre,
            kind,
            fs,
            listener: None,
            metrics: None,
            loaded: None,
        })
    }

    /// Opens the policy's directories (each checked: not reaching wasmbox's own directories, no
    /// symbolic link on its path, no kernel filesystem), makes the private scratch directories
    /// and, with mount trees on, binds them all into the guest's tree.
    fn filesystem(&self, policy: &Policy) -> Result<Filesystem> {
        let inner = &self.inner;
        let mut sources = Vec::new();
        // The root (when granted) is the base of the tree: first, whatever order it was added in.
        let mut dirs: Vec<_> = policy.dirs.iter().collect();
        dirs.sort_by_key(|d| d.guest != "/");
        for d in dirs {
            let src = crate::mounts::Source::open(&d.host).map_err(|reason| Error::Source {
                host: d.host.clone(),
                guest: d.guest.clone(),
                reason,
            })?;
            // Checked through the opened directory, so the path cannot change in between.
            crate::protect::check_grant(&src.fd_path(), &inner.protected).map_err(|reason| {
                Error::Protected {
                    host: d.host.clone(),
                    guest: d.guest.clone(),
                    reason,
                }
            })?;
            sources.push((src, d.guest.clone(), d.read_only, d.recursive));
        }
        let mut scratch = Vec::new();
        for guest in &policy.scratch {
            let err = |source| Error::Scratch {
                guest: guest.clone(),
                source,
            };
            let dir = tempfile::Builder::new()
                .prefix(&crate::scratch::scratch_prefix("wasmbox-tmpfs-"))
                .tempdir_in(&inner.scratch_dir)
                .map_err(err)?;
            sources.push((
                crate::mounts::Source::own(dir.path()).map_err(err)?,
                guest.clone(),
                false,
                false,
            ));
            scratch.push(dir);
        }
        // The devices of /dev (see `devices`), when the policy has them. Single files bound
        // below /dev (kubelet's termination-message file) need them in the tree, in a directory
        // of this guest's own that holds their mountpoints; otherwise the runtime's one directory
        // is preopened beside the tree, and nothing is made in a granted directory.
        let dev_files: Vec<&str> = if policy.devices && inner.mount_tree {
            policy
                .files
                .iter()
                .filter_map(|f| f.guest.strip_prefix("/dev/"))
                .collect()
        } else {
            Vec::new()
        };
        let dev_err = |source| Error::Scratch {
            guest: crate::devices::GUEST_DIR.into(),
            source,
        };
        let devices = match (policy.devices, dev_files.is_empty()) {
            (false, _) => None,
            (true, true) => Some(inner.devices().map_err(dev_err)?),
            (true, false) => Some(Arc::new(
                crate::devices::DevDir::create(&inner.scratch_dir, &dev_files).map_err(dev_err)?,
            )),
        };
        let mut dev_beside = None;
        if let Some(d) = &devices {
            let source = crate::mounts::Source::own(&d.path()).map_err(dev_err)?;
            if dev_files.is_empty() {
                dev_beside = Some(source);
            } else {
                sources.push((source, crate::devices::GUEST_DIR.into(), true, false));
            }
        }
        // Parents before children (the root first), binds before tmpfs at the same depth, as
        // containerd's CRI orders mounts: a mount inside another always shows.
        sources.sort_by_key(|(_, guest, ..)| {
            if guest == "/" {
                0
            } else {
                guest.matches('/').count()
            }
        });
        // Single files: only a mount tree can show one without its siblings.
        let mut files = Vec::new();
        for f in &policy.files {
            if !inner.mount_tree {
                tracing::warn!(source = %f.host.display(), destination = %f.guest, "a single-file bind needs a mount tree (root, or a user namespace); not exposed to the guest");
                continue;
            }
            let src =
                crate::mounts::Source::open_file(&f.host).map_err(|reason| Error::Source {
                    host: f.host.clone(),
                    guest: f.guest.clone(),
                    reason,
                })?;
            crate::protect::check_grant(&src.fd_path(), &inner.protected).map_err(|reason| {
                Error::Protected {
                    host: f.host.clone(),
                    guest: f.guest.clone(),
                    reason,
                }
            })?;
            files.push((src, f.guest.clone(), f.read_only));
        }
        let (tree, paths) = if inner.mount_tree {
            let mounts: Vec<_> = sources
                .iter()
                .map(
                    |(source, guest, read_only, recursive)| crate::mounts::TreeMount {
                        source,
                        guest,
                        read_only: *read_only,
                        recursive: *recursive,
                    },
                )
                .collect();
            let files: Vec<_> = files
                .iter()
                .map(|(source, guest, read_only)| crate::mounts::TreeFile {
                    source,
                    guest,
                    read_only: *read_only,
                })
                .collect();
            let tree = crate::mounts::MountTree::build(&inner.scratch_dir, &mounts, &files)
                .map_err(|reason| Error::MountTree { reason })?;
            let paths = tree.grant_paths();
            (Some(tree), paths)
        } else {
            let paths = sources.iter().map(|(s, ..)| s.fd_path()).collect();
            (None, paths)
        };
        // A /dev in the tree is a read-only mount (nothing is made or removed in it), but the
        // single files bound in it may be writable: its preopen leaves that to the kernel.
        let mut preopens: Vec<_> = paths
            .into_iter()
            .zip(&sources)
            .map(|(path, (_, guest, ro, _))| {
                let in_tree_dev = devices.is_some() && guest == crate::devices::GUEST_DIR;
                (path, guest.clone(), *ro && !in_tree_dev)
            })
            .collect();
        let mut sources: Vec<_> = sources.into_iter().map(|(s, ..)| s).collect();
        if let Some(dev) = dev_beside {
            preopens.push((dev.fd_path(), crate::devices::GUEST_DIR.into(), true));
            sources.push(dev);
        }
        Ok(Filesystem {
            preopens,
            _cwd: None,
            _tree: tree,
            _sources: sources,
            _scratch: scratch,
            _devices: devices,
        })
    }
}

/// A snapshot of what a running guest uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Bytes of all its memories and tables.
    pub memory: u64,
    /// Its memory limit, if any.
    pub memory_limit: Option<u64>,
    /// CPU time spent running it (wasm and the host calls it makes on its threads).
    pub cpu: Duration,
    /// The part of `cpu` spent in the kernel; the rest is user time.
    pub cpu_system: Duration,
    /// Whether it is paused.
    pub paused: bool,
}

/// Stops a guest at once, from any thread. Cheap to clone.
#[derive(Clone)]
pub struct KillHandle(Arc<Shared>);

impl KillHandle {
    /// Kills the guest as if by signal `signal`: it stops at its next instruction or, if blocked
    /// in the host, at once. Its status becomes `128 + signal`. Returns false if it had already
    /// been killed or ended. A server takes SIGHUP as a reload of its TLS certificate, not a kill.
    pub fn kill(&self, signal: i32) -> bool {
        if self.0.status.lock().expect("status lock").is_some() {
            return false;
        }
        if self.0.serving && signal == libc::SIGHUP {
            self.0.hangup.notify_one();
            return true;
        }
        if self.0.serving {
            self.0.kill_signal.store(signal.max(1), Ordering::SeqCst);
            self.0.kill.notify_one();
            return true;
        }
        let first = self
            .0
            .kill_signal
            .compare_exchange(0, signal.max(1), Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
        if first {
            self.0.kill.notify_one();
        }
        first
    }
}

/// A started guest.
pub struct Running {
    shared: Arc<Shared>,
    http_addr: Option<std::net::SocketAddr>,
    /// The runtime it runs on, kept as long as the guest is: its executor and epoch ticker are
    /// what run it.
    _runtime: Runtime,
}

impl Running {
    /// Where an HTTP component is being served; `None` for a command.
    pub fn http_addr(&self) -> Option<std::net::SocketAddr> {
        self.http_addr
    }

    /// A handle that kills this guest.
    pub fn kill_handle(&self) -> KillHandle {
        KillHandle(self.shared.clone())
    }

    /// Blocks until the guest ends. Do not call from inside an async task; use [`Running::wait_async`].
    pub fn wait(&self) -> ExitStatus {
        let mut st = self.shared.status.lock().expect("status lock");
        loop {
            if let Some(s) = st.clone() {
                return s;
            }
            st = self.shared.done.wait(st).expect("status lock");
        }
    }

    /// Waits for the guest to end.
    pub async fn wait_async(&self) -> ExitStatus {
        let mut rx = self.shared.watch.subscribe();
        let st = rx
            .wait_for(|s| s.is_some())
            .await
            .expect("status sender lives in Running");
        st.clone().expect("waited for Some")
    }

    /// The status if the guest has ended.
    pub fn try_status(&self) -> Option<ExitStatus> {
        self.shared.status.lock().expect("status lock").clone()
    }

    /// Pauses the guest: it makes no progress until [`Running::resume`]. Returns false if it was
    /// already paused or has ended.
    pub fn pause(&self) -> bool {
        self.try_status().is_none() && self.shared.gate.set_paused(true)
    }

    /// Resumes a paused guest where it was. Returns false if it was not paused.
    pub fn resume(&self) -> bool {
        self.shared.gate.set_paused(false)
    }

    /// Sets a new limit on the guest's memories and tables (`None`: no limit). It applies to the
    /// next growth; memory already in use is kept.
    pub fn set_memory_limit(&self, limit: Option<u64>) {
        self.shared.meter.set_limit(limit);
    }

    /// What the guest uses now.
    pub fn usage(&self) -> Usage {
        Usage {
            memory: self.shared.memory_usage(),
            memory_limit: self.shared.meter.limit(),
            cpu: Duration::from_nanos(self.shared.gate.cpu_ns.load(Ordering::Relaxed)),
            cpu_system: Duration::from_nanos(self.shared.gate.system_ns.load(Ordering::Relaxed)),
            paused: self.shared.gate.paused.load(Ordering::SeqCst),
        }
    }
}

impl Prepared {
    /// What the guest is: a module, a command or an HTTP component.
    pub fn kind(&self) -> GuestKind {
        self.kind
    }

    /// For an HTTP component, binds its listening address now with `bind` (given the address
    /// the policy names), so a taken address fails here rather than at start, and the caller
    /// decides where it is bound (a network namespace of its own); returns the bound address.
    /// Nothing is done for a command.
    pub fn listen_with(
        &mut self,
        bind: impl FnOnce(std::net::SocketAddr) -> std::io::Result<std::net::TcpListener>,
    ) -> Result<Option<std::net::SocketAddr>> {
        if !matches!(self.pre, Pre::Proxy(_)) {
            return Ok(None);
        }
        let addr = self.policy.serve.addr;
        let listen = |source| Error::Serve { addr, source };
        let l = bind(addr).map_err(listen)?;
        let bound = l.local_addr().map_err(listen)?;
        self.listener = Some(l);
        Ok(Some(bound))
    }

    /// Counts an HTTP component's metrics in `metrics`, served at `endpoint`, each series
    /// labelled with `labels` (a pod's container name, say). Nothing is counted for a command.
    pub fn count_in(
        &mut self,
        metrics: Arc<crate::metrics::Metrics>,
        labels: crate::metrics::Labels,
        endpoint: std::net::SocketAddr,
    ) {
        self.metrics = Some((metrics, labels, endpoint));
    }

    /// For an HTTP component whose policy names a metrics address, binds it now with `bind` (as
    /// [`Prepared::listen_with`]) and serves its metrics there, for this guest alone; returns
    /// the bound address. Nothing is done for a command, or without an address.
    pub fn metrics_with(
        &mut self,
        bind: impl FnOnce(std::net::SocketAddr) -> std::io::Result<std::net::TcpListener>,
    ) -> Result<Option<std::net::SocketAddr>> {
        let Some(addr) = self.policy.serve.metrics_addr else {
            return Ok(None);
        };
        if !matches!(self.pre, Pre::Proxy(_)) {
            return Ok(None);
        }
        let listen = |source| Error::Serve { addr, source };
        let l = bind(addr).map_err(listen)?;
        let bound = l.local_addr().map_err(listen)?;
        let metrics = crate::metrics::Metrics::new();
        metrics.serve(l).map_err(listen)?;
        self.count_in(metrics, Vec::new(), bound);
        Ok(Some(bound))
    }

    /// Records where the code came from and how long loading it took, for the metrics.
    pub(crate) fn set_loaded(&mut self, from: LoadedFrom, took: Duration) {
        self.loaded = Some((from, took));
    }

    /// The workload's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The policy it will run under.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Sets the wall-clock deadline it will start with (`None`: none).
    pub fn set_timeout(&mut self, timeout: Option<Duration>) {
        self.policy.limits.timeout = timeout;
    }

    /// Sets the memory limit it will start with (`None`: no limit).
    pub fn set_memory_limit(&mut self, limit: Option<u64>) {
        self.policy.limits.memory = limit;
    }

    /// Starts the guest with `stdio`.
    pub fn start(self, stdio: Stdio) -> Result<Running> {
        let runtime = self.runtime.clone();
        let inner = &self.runtime.inner;
        // Sockets register with the executor's reactor.
        let _enter = inner.handle.enter();
        let fs = self.fs;
        let meter = Meter::new(self.policy.limits.memory);
        let shared = Arc::new(Shared {
            kill_signal: AtomicI32::new(0),
            kill: tokio::sync::Notify::new(),
            hangup: tokio::sync::Notify::new(),
            serving: matches!(self.pre, Pre::Proxy(_)),
            status: Mutex::new(None),
            done: Condvar::new(),
            watch: tokio::sync::watch::Sender::new(None),
            meter,
            gate: Gate::default(),
            host: std::sync::OnceLock::new(),
        });
        if let Pre::Proxy(pre) = self.pre {
            let component = match &pre {
                wasmtime_wasi_http::handler::ProxyPre::P2(p) => p.instance_pre().component(),
                wasmtime_wasi_http::handler::ProxyPre::P3(p) => p.instance_pre().component(),
            };
            let capacity = crate::engine_config::pool_capacity(inner.pooling, component);
            let residue = crate::engine_config::slot_residue(inner.pooling, component);
            let (addr, server) = crate::serve::start(crate::serve::Parts {
                engine: inner.engine.clone(),
                capacity,
                residue,
                pre,
                policy: self.policy,
                listener: self.listener,
                fs,
                stdout: stdio.stdout,
                stderr: stdio.stderr,
                shared: shared.clone(),
                metrics: self.metrics,
                loaded: self.loaded,
            })?;
            tracing::info!(name = self.name, %addr, "serving HTTP");
            let task_shared = shared.clone();
            inner.handle.spawn(async move {
                let reason = server.await;
                task_shared.finish(ExitStatus { reason });
            });
            return Ok(Running {
                shared,
                http_addr: Some(addr),
                _runtime: runtime,
            });
        }
        let mut builder = build_ctx(&self.policy, &fs.preopens, stdio)?;
        let limiter = Limiter::new(shared.meter.clone());
        let timeout = self.policy.limits.timeout;
        let handles = self.policy.limits.handles();
        let engine = inner.engine.clone();
        let http = self.policy.net.http.clone();
        let component_host = move |mut b: wasmtime_wasi::WasiCtxBuilder, limiter| {
            let hooks = crate::http::Hooks::new(http, handles, None);
            P2Host::new(b.build(), handle_table(handles), handles, limiter, hooks)
        };
        let fut: std::pin::Pin<Box<dyn Future<Output = wasmtime::Result<i32>> + Send>> =
            match self.pre {
                Pre::Module { pre, export, init } => {
                    let sockets = Sockets::open(&self.policy.net, handles, &mut builder)?;
                    let mut wasi = builder.build_p1();
                    // `path_open` answers EMFILE at `handles`; the table's own cap, a little above
                    // (stdio and preopens), is the backstop.
                    wasmtime_wasi::WasiView::ctx(&mut wasi)
                        .table
                        .set_max_capacity(handles + crate::store::HANDLE_HEADROOM);
                    let dirs = (3..)
                        .zip(&fs.preopens)
                        .map(|(fd, (path, guest, _))| {
                            rustix::fs::open(
                                path,
                                rustix::fs::OFlags::PATH
                                    | rustix::fs::OFlags::DIRECTORY
                                    | rustix::fs::OFlags::CLOEXEC,
                                rustix::fs::Mode::empty(),
                            )
                            .map(|d| (fd, guest.clone(), Arc::new(d)))
                            .map_err(|e| Error::Preopen {
                                host: path.clone(),
                                guest: guest.clone(),
                                source: Box::new(std::io::Error::from(e)),
                            })
                        })
                        .collect::<Result<Vec<_>>>()?;
                    let host = P1Host {
                        wasi,
                        limiter,
                        sockets,
                        handles,
                        preopens: dirs
                            .iter()
                            .map(|(_, g, d)| (g.clone(), d.clone()))
                            .collect(),
                        dirs: dirs.into_iter().map(|(fd, _, d)| (fd, d)).collect(),
                        devices: Default::default(),
                    };
                    let store = new_store(&engine, host);
                    Box::pin(run_module(store, pre, export, init))
                }
                Pre::Command(pre) => {
                    let store = new_component_store(&engine, component_host(builder, limiter));
                    Box::pin(run_command(store, pre))
                }
                Pre::Command3(pre) => {
                    let store = new_component_store(&engine, component_host(builder, limiter));
                    Box::pin(run_command3(store, pre))
                }
                Pre::ComponentExport { pre, export } => {
                    let store = new_component_store(&engine, component_host(builder, limiter));
                    Box::pin(run_component_export(store, pre, export))
                }
                Pre::Proxy(_) => unreachable!("served above"),
            };
        let task_shared = shared.clone();
        let name = self.name.clone();
        inner.handle.spawn(async move {
            let started = Instant::now();
            let deadline = async {
                match timeout {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            };
            let mut fut = fut;
            let guest = Gated {
                fut: fut.as_mut(),
                gate: &task_shared.gate,
            };
            let reason = tokio::select! {
                biased;
                () = task_shared.kill.notified() => {
                    ExitReason::Signaled(task_shared.kill_signal.load(Ordering::SeqCst))
                }
                () = deadline => ExitReason::Timeout(timeout.unwrap_or_default()),
                r = guest => classify(r, &task_shared),
            };
            drop(fs);
            let status = ExitStatus { reason };
            tracing::debug!(name, %status, elapsed = ?started.elapsed(), "guest ended");
            task_shared.finish(status);
        });
        Ok(Running {
            shared,
            http_addr: None,
            _runtime: runtime,
        })
    }
}

fn classify(r: wasmtime::Result<i32>, shared: &Shared) -> ExitReason {
    let sig = shared.kill_signal.load(Ordering::SeqCst);
    match r {
        _ if sig != 0 => ExitReason::Signaled(sig),
        Ok(code) => ExitReason::Exited(code),
        Err(e) => {
            if let Some(exit) = e.downcast_ref::<I32Exit>() {
                ExitReason::Exited(exit.0)
            } else if shared.meter.hit.load(Ordering::SeqCst) {
                ExitReason::MemoryLimit(shared.meter.limit().unwrap_or(0))
            } else {
                tracing::info!(error = ?e, "guest trapped");
                ExitReason::Trap(trap_message(&e))
            }
        }
    }
}

async fn run_module(
    mut store: Store<P1Host>,
    pre: wasmtime::InstancePre<P1Host>,
    export: String,
    init: bool,
) -> wasmtime::Result<i32> {
    let instance = pre.instantiate_async(&mut store).await?;
    if init {
        let f = instance.get_typed_func::<(), ()>(&mut store, "_initialize")?;
        f.call_async(&mut store, ()).await?;
    }
    let f = instance
        .get_func(&mut store, &export)
        .ok_or_else(|| wasmtime::format_err!("export {export} vanished"))?;
    let n = f.ty(&store).results().len();
    let mut results = vec![Val::I32(0); n];
    f.call_async(&mut store, &[], &mut results).await?;
    Ok(0)
}

async fn run_command(mut store: Store<P2Host>, pre: CommandPre<P2Host>) -> wasmtime::Result<i32> {
    let cmd = pre.instantiate_async(&mut store).await?;
    Ok(match cmd.wasi_cli_run().call_run(&mut store).await? {
        Ok(()) => 0,
        Err(()) => 1,
    })
}

async fn run_command3(
    mut store: Store<P2Host>,
    pre: wasmtime_wasi::p3::bindings::CommandPre<P2Host>,
) -> wasmtime::Result<i32> {
    let cmd = pre.instantiate_async(&mut store).await?;
    let result = store
        .run_concurrent(async |store| cmd.wasi_cli_run().call_run(store).await)
        .await??;
    Ok(match result {
        Ok(()) => 0,
        Err(()) => 1,
    })
}

async fn run_component_export(
    mut store: Store<P2Host>,
    pre: wasmtime::component::InstancePre<P2Host>,
    export: String,
) -> wasmtime::Result<i32> {
    let instance = pre.instantiate_async(&mut store).await?;
    let f = instance
        .get_func(&mut store, &export)
        .ok_or_else(|| wasmtime::format_err!("export {export} vanished"))?;
    let n = f.ty(&store).results().len();
    let mut results = vec![wasmtime::component::Val::Bool(false); n];
    f.call_async(&mut store, &[], &mut results).await?;
    Ok(0)
}
