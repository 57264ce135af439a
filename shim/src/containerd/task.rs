//! The task service containerd talks to: every method `ctr` and the CRI plugin use.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;
use containerd_shim::ExitSignal;
use containerd_shim::protos::api::Empty;
use containerd_shim::protos::api::{
    CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest, CreateTaskResponse,
    DeleteRequest, DeleteResponse, ExecProcessRequest, KillRequest, PauseRequest, PidsRequest,
    PidsResponse, ProcessInfo, ResizePtyRequest, ResumeRequest, ShutdownRequest, StartRequest,
    StartResponse, StateRequest, StateResponse, StatsRequest, StatsResponse, Status,
    UpdateTaskRequest, WaitRequest, WaitResponse,
};
use containerd_shim::protos::cgroups::metrics::{
    CPUStat, CPUUsage, MemoryEntry, MemoryStat, Metrics, PidsStat,
};
use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim::protos::protobuf::{EnumOrUnknown, MessageField};
use containerd_shim::protos::topics::{
    TASK_CREATE_EVENT_TOPIC, TASK_DELETE_EVENT_TOPIC, TASK_EXEC_ADDED_EVENT_TOPIC,
    TASK_EXEC_STARTED_EVENT_TOPIC, TASK_EXIT_EVENT_TOPIC, TASK_OOM_EVENT_TOPIC,
    TASK_PAUSED_EVENT_TOPIC, TASK_RESUMED_EVENT_TOPIC, TASK_START_EVENT_TOPIC,
};
use containerd_shim::protos::ttrpc;
use containerd_shim::{Task, TtrpcContext};
use oci_spec::runtime::{LinuxResources, Process};
use tokio::sync::Mutex as AsyncMutex;
use wasmbox_runtime::{ExitReason, Runtime};

use super::container::{self, Body, Container, Entry, Exit, Kind, Proc};
use super::error::{Result, ShimError, chain};
use super::events::{Events, timestamp};
use super::native::{self, Native};
use super::reaper;
use super::record::{self, Record};
use super::stdio::StdioPaths;

type Shared = Arc<AsyncMutex<Container>>;

/// The task service of one shim process, which may serve many containers (a pod).
pub struct TaskService {
    /// Made at the first wasm create: pooling when the shim serves a group, on demand otherwise.
    /// An error is kept, and each create reports it.
    runtime: Arc<std::sync::OnceLock<std::result::Result<Runtime, (bool, String)>>>,
    containers: Mutex<HashMap<String, Shared>>,
    events: Events,
    namespace: String,
    exit: Arc<ExitSignal>,
    shim_pid: u32,
}

impl TaskService {
    /// A service publishing through `events`.
    pub fn new(events: Events, namespace: String, exit: Arc<ExitSignal>) -> Self {
        Self {
            runtime: Default::default(),
            containers: Mutex::new(HashMap::new()),
            events,
            namespace,
            exit,
            shim_pid: std::process::id(),
        }
    }

    /// The wasm runtime, made on first use. A shim serving a group (the spec carries a group annotation) will run many guests and
    /// pre-reserves instance slots (the pooling allocator); a shim for one container allocates
    /// on demand, which starts faster.
    fn runtime(&self, spec: &oci_spec::runtime::Spec) -> Result<&Runtime> {
        match self.runtime.get_or_init(|| make_runtime(spec)) {
            Ok(r) => Ok(r),
            Err((invalid, msg)) if *invalid => Err(ShimError::InvalidArgument(msg.clone())),
            Err((_, msg)) => Err(ShimError::Internal(msg.clone())),
        }
    }

    fn get(&self, id: &str) -> Result<Shared> {
        self.containers
            .lock()
            .expect("containers lock")
            .get(id)
            .cloned()
            .ok_or_else(|| ShimError::NotFound(format!("container {id}")))
    }

    async fn do_create(&self, req: CreateTaskRequest) -> Result<CreateTaskResponse> {
        let id = req.id.clone();
        if self
            .containers
            .lock()
            .expect("containers lock")
            .contains_key(&id)
        {
            return Err(ShimError::AlreadyExists(format!("container {id}")));
        }
        if !req.checkpoint.is_empty() {
            return Err(ShimError::Unimplemented(
                "restoring from a checkpoint is not supported by wasmbox".into(),
            ));
        }
        let stdio = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        stdio.check()?;
        let bundle = PathBuf::from(&req.bundle);
        let spec = container::read_spec(&bundle)?;
        let mounted = container::mount_rootfs(&bundle, &req.rootfs)?;
        let made = self.create_in(&id, &bundle, spec, stdio, mounted).await;
        let c = match made {
            Ok(c) => c,
            Err(e) => {
                if mounted {
                    container::unmount_rootfs(&bundle);
                }
                record::Record::remove(&bundle);
                return Err(e);
            }
        };
        let pid = c.init.pid;
        self.containers
            .lock()
            .expect("containers lock")
            .insert(id.clone(), Arc::new(AsyncMutex::new(c)));
        self.events.send(
            TASK_CREATE_EVENT_TOPIC,
            TaskCreate {
                container_id: id,
                bundle: req.bundle,
                rootfs: req.rootfs,
                io: MessageField::some(TaskIO {
                    stdin: req.stdin,
                    stdout: req.stdout,
                    stderr: req.stderr,
                    terminal: req.terminal,
                    ..Default::default()
                }),
                pid,
                ..Default::default()
            },
        );
        Ok(CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    async fn create_in(
        &self,
        id: &str,
        bundle: &Path,
        spec: oci_spec::runtime::Spec,
        stdio: StdioPaths,
        mounted: bool,
    ) -> Result<Container> {
        let mut rec = Record {
            id: id.to_string(),
            kind: record::Kind::Wasm,
            pid: self.shim_pid,
            rootfs_mounted: mounted,
            runc_root: None,
        };
        let save = |rec: &Record| {
            rec.save(bundle).map_err(|e| {
                ShimError::Internal(format!("save state in {}: {e}", bundle.display()))
            })
        };
        match container::classify(bundle, &spec)? {
            Entry::Wasm(b) => {
                super::netns::check_same(&spec)?;
                let mut prepared = prepare_within_deadline(self.runtime(&spec)?, &b).await?;
                // An HTTP component's address is bound now: a taken one fails create.
                let own = super::netns::server_needs_own_namespace(&spec);
                prepared
                    .listen_with(|addr| {
                        if own {
                            super::netns::bind_in_new_namespace(addr)
                        } else {
                            std::net::TcpListener::bind(addr)
                        }
                    })
                    .map_err(|e| ShimError::InvalidArgument(chain(&e)))?;
                let io = stdio.open_wasm().await?;
                save(&rec)?;
                tracing::info!(id, entry = %b.entry.display(), "created wasm container");
                Ok(Container {
                    id: id.to_string(),
                    bundle: bundle.to_path_buf(),
                    mounted,
                    kind: Kind::Wasm(Box::new(spec)),
                    init: Proc::new(
                        self.shim_pid,
                        stdio,
                        Body::WasmCreated(Box::new(prepared), io),
                    ),
                    execs: HashMap::new(),
                    paused: false,
                })
            }
            Entry::Native => {
                let n = Native {
                    root: native::runc_root(&self.namespace),
                    id: id.to_string(),
                    bundle: bundle.to_path_buf(),
                };
                rec.kind = record::Kind::Native;
                rec.runc_root = Some(n.root.clone());
                save(&rec)?;
                let since = std::time::Instant::now();
                let pid = n.create(&stdio).await?;
                rec.pid = pid;
                save(&rec)?;
                tracing::info!(id, pid, "created native container with runc");
                let c = Container {
                    id: id.to_string(),
                    bundle: bundle.to_path_buf(),
                    mounted,
                    kind: Kind::Native(n),
                    init: Proc::new(pid, stdio, Body::Native),
                    execs: HashMap::new(),
                    paused: false,
                };
                self.watch_native(&c.init, id, "", since);
                Ok(c)
            }
        }
    }

    /// Publishes the exit of a native process when the reaper reports it.
    fn watch_native(&self, p: &Proc, id: &str, exec_id: &str, since: std::time::Instant) {
        let rx = reaper::watch(p.pid as i32, since);
        let tx = p.exit.clone();
        let (events, id, exec_id, pid) = (
            self.events.clone(),
            id.to_string(),
            exec_id.to_string(),
            p.pid,
        );
        tokio::spawn(async move {
            let code = rx.await.unwrap_or(255) as u32;
            finish(&events, &tx, &id, &exec_id, pid, code, false);
        });
    }

    /// Publishes the exit of a wasm guest when it ends.
    fn watch_guest(&self, running: Arc<Running>, p: &Proc, id: &str, exec_id: &str) {
        let tx = p.exit.clone();
        let (events, id, exec_id, pid) = (
            self.events.clone(),
            id.to_string(),
            exec_id.to_string(),
            p.pid,
        );
        tokio::spawn(async move {
            let st = running.wait_async().await;
            let oom = matches!(st.reason, ExitReason::MemoryLimit(_));
            if !matches!(st.reason, ExitReason::Exited(_) | ExitReason::Signaled(_)) {
                tracing::info!(id, exec_id, status = %st, "guest ended");
            }
            finish(&events, &tx, &id, &exec_id, pid, st.code() as u32, oom);
        });
    }

    async fn do_start(&self, req: StartRequest) -> Result<StartResponse> {
        let shared = self.get(&req.id)?;
        let mut c = shared.lock().await;
        let native = match &c.kind {
            Kind::Native(n) => Some(n.clone()),
            Kind::Wasm(_) => None,
        };
        let p = c.process_mut(&req.exec_id)?;
        if p.started || p.exited().is_some() {
            return Err(ShimError::FailedPrecondition(format!(
                "process {} of container {} was already started",
                exec_label(&req.exec_id),
                req.id
            )));
        }
        match std::mem::replace(&mut p.body, Body::Done) {
            Body::WasmCreated(prepared, io) => {
                let running = Arc::new(
                    prepared
                        .start(io)
                        .map_err(|e| ShimError::Internal(chain(&e)))?,
                );
                p.body = Body::WasmRunning(running.clone());
                p.started = true;
                let p: &Proc = p;
                self.watch_guest(running, p, &req.id, &req.exec_id);
            }
            Body::Native => {
                p.body = Body::Native;
                native
                    .expect("native body in a native container")
                    .start()
                    .await?;
                p.started = true;
            }
            Body::NativeExec(json) => {
                let n = native.expect("native exec in a native container");
                let since = std::time::Instant::now();
                let pid = match n.exec(&req.exec_id, &json, &p.stdio).await {
                    Ok(pid) => pid,
                    Err(e) => {
                        p.body = Body::NativeExec(json);
                        return Err(e);
                    }
                };
                p.pid = pid;
                p.body = Body::Native;
                p.started = true;
                let p: &Proc = p;
                self.watch_native(p, &req.id, &req.exec_id, since);
            }
            other => {
                p.body = other;
                return Err(ShimError::FailedPrecondition(format!(
                    "container {} cannot be started",
                    req.id
                )));
            }
        }
        let pid = p.pid;
        if req.exec_id.is_empty() {
            self.events.send(
                TASK_START_EVENT_TOPIC,
                TaskStart {
                    container_id: req.id.clone(),
                    pid,
                    ..Default::default()
                },
            );
        } else {
            self.events.send(
                TASK_EXEC_STARTED_EVENT_TOPIC,
                TaskExecStarted {
                    container_id: req.id.clone(),
                    exec_id: req.exec_id.clone(),
                    pid,
                    ..Default::default()
                },
            );
        }
        Ok(StartResponse {
            pid,
            ..Default::default()
        })
    }

    async fn do_kill(&self, req: KillRequest) -> Result<()> {
        let shared = self.get(&req.id)?;
        let c = shared.lock().await;
        if let Kind::Native(n) = &c.kind {
            if req.exec_id.is_empty() {
                if c.init.exited().is_some() && !req.all {
                    return Err(ShimError::NotFound(format!(
                        "process already finished in container {}",
                        req.id
                    )));
                }
                return n.kill(req.signal, req.all).await;
            }
            let p = c.process(&req.exec_id)?;
            if p.exited().is_some() {
                return Err(ShimError::NotFound(format!(
                    "process {} already finished",
                    req.exec_id
                )));
            }
            return native::signal_pid(p.pid, req.signal);
        }
        let mut targets: Vec<(&str, &Proc)> =
            vec![(req.exec_id.as_str(), c.process(&req.exec_id)?)];
        if req.all && req.exec_id.is_empty() {
            targets.extend(c.execs.iter().map(|(k, p)| (k.as_str(), p)));
        }
        let mut killed = false;
        for (exec_id, p) in targets {
            killed |= kill_guest(&self.events, &req.id, exec_id, p, req.signal);
        }
        if !killed && !req.all {
            return Err(ShimError::NotFound(format!(
                "process {} of container {} already finished",
                exec_label(&req.exec_id),
                req.id
            )));
        }
        Ok(())
    }

    async fn do_delete(&self, req: DeleteRequest) -> Result<DeleteResponse> {
        let shared = self.get(&req.id)?;
        let mut c = shared.lock().await;
        if !req.exec_id.is_empty() {
            let p = c.process(&req.exec_id)?;
            if p.started && p.exited().is_none() {
                return Err(ShimError::FailedPrecondition(format!(
                    "exec {} of container {} is still running",
                    req.exec_id, req.id
                )));
            }
            let p = c.execs.remove(&req.exec_id).expect("checked above");
            let exit = p.exited();
            return Ok(delete_response(p.pid, exit));
        }
        let running = c.init.started && c.init.exited().is_none();
        if running {
            return Err(ShimError::FailedPrecondition(format!(
                "container {} is still running; kill it first",
                req.id
            )));
        }
        if let Kind::Native(n) = &c.kind {
            n.delete(true).await?;
        }
        // A created, never started guest: release its stdio now.
        c.init.body = Body::Done;
        c.execs.clear();
        if c.mounted {
            container::unmount_rootfs(&c.bundle);
        }
        Record::remove(&c.bundle);
        let exit = c.init.exited();
        let pid = c.init.pid;
        drop(c);
        self.containers
            .lock()
            .expect("containers lock")
            .remove(&req.id);
        let resp = delete_response(pid, exit);
        self.events.send(
            TASK_DELETE_EVENT_TOPIC,
            TaskDelete {
                container_id: req.id.clone(),
                pid,
                exit_status: resp.exit_status,
                exited_at: resp.exited_at.clone(),
                id: req.id,
                ..Default::default()
            },
        );
        Ok(resp)
    }

    async fn do_exec(&self, req: ExecProcessRequest) -> Result<()> {
        let shared = self.get(&req.id)?;
        let mut c = shared.lock().await;
        if c.execs.contains_key(&req.exec_id) || req.exec_id.is_empty() {
            return Err(ShimError::AlreadyExists(format!(
                "exec {} in container {}",
                req.exec_id, req.id
            )));
        }
        if c.init.exited().is_some() {
            return Err(ShimError::FailedPrecondition(format!(
                "container {} has stopped",
                req.id
            )));
        }
        let stdio = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        stdio.check()?;
        let json = req
            .spec
            .as_ref()
            .map(|a| a.value.clone())
            .ok_or_else(|| ShimError::InvalidArgument("exec: no process spec".into()))?;
        let process: Process = serde_json::from_slice(&json)
            .map_err(|e| ShimError::InvalidArgument(format!("exec process spec: {e}")))?;
        let proc_ = match &c.kind {
            // runc starts an exec'd process at once, so it is run at start.
            Kind::Native(_) => Proc::new(0, stdio, Body::NativeExec(json)),
            Kind::Wasm(spec) => {
                let mut spec = (**spec).clone();
                spec.set_process(Some(process));
                let b = match container::classify(&c.bundle, &spec)? {
                    Entry::Wasm(b) => b,
                    Entry::Native => {
                        return Err(ShimError::InvalidArgument(format!(
                            "exec: {:?} is not wasm; a wasm container runs only wasm programs",
                            spec.process()
                                .as_ref()
                                .and_then(|p| p.args().as_ref())
                                .and_then(|a| a.first())
                                .cloned()
                                .unwrap_or_default()
                        )));
                    }
                };
                let mut prepared = prepare_off_executor(self.runtime(&spec)?, &b).await?;
                // The container's current memory limit (it may have been updated).
                if let Some(limit) = c.init.guest().and_then(|g| g.usage().memory_limit) {
                    prepared.set_memory_limit(Some(limit));
                }
                let io = stdio.open_wasm().await?;
                Proc::new(
                    self.shim_pid,
                    stdio,
                    Body::WasmCreated(Box::new(prepared), io),
                )
            }
        };
        c.execs.insert(req.exec_id.clone(), proc_);
        self.events.send(
            TASK_EXEC_ADDED_EVENT_TOPIC,
            TaskExecAdded {
                container_id: req.id,
                exec_id: req.exec_id,
                ..Default::default()
            },
        );
        Ok(())
    }

    async fn do_state(&self, req: StateRequest) -> Result<StateResponse> {
        let shared = self.get(&req.id)?;
        let c = shared.lock().await;
        let p = c.process(&req.exec_id)?;
        let exit = p.exited();
        let status = match (exit, p.started) {
            (Some(_), _) => Status::STOPPED,
            (None, false) => Status::CREATED,
            (None, true) if c.paused => Status::PAUSED,
            (None, true) => Status::RUNNING,
        };
        Ok(StateResponse {
            id: req.id.clone(),
            bundle: c.bundle.to_string_lossy().into_owned(),
            pid: p.pid,
            status: EnumOrUnknown::new(status),
            stdin: p.stdio.stdin.clone(),
            stdout: p.stdio.stdout.clone(),
            stderr: p.stdio.stderr.clone(),
            terminal: p.stdio.terminal,
            exit_status: exit.map(|e| e.code).unwrap_or(0),
            exited_at: exit
                .map(|e| MessageField::some(timestamp(e.at)))
                .unwrap_or_default(),
            exec_id: req.exec_id,
            ..Default::default()
        })
    }

    async fn do_pause(&self, id: &str, pause: bool) -> Result<()> {
        let shared = self.get(id)?;
        let mut c = shared.lock().await;
        if c.paused == pause {
            return Err(ShimError::FailedPrecondition(format!(
                "container {id} is {}",
                if pause {
                    "already paused"
                } else {
                    "not paused"
                }
            )));
        }
        if !c.init.started || c.init.exited().is_some() {
            return Err(ShimError::FailedPrecondition(format!(
                "container {id} is not running"
            )));
        }
        match &c.kind {
            Kind::Native(n) => n.pause(pause).await?,
            Kind::Wasm(_) => {
                for p in std::iter::once(&c.init).chain(c.execs.values()) {
                    if let Some(g) = p.guest() {
                        if pause {
                            g.pause();
                        } else {
                            g.resume();
                        }
                    }
                }
            }
        }
        c.paused = pause;
        if pause {
            self.events.send(
                TASK_PAUSED_EVENT_TOPIC,
                TaskPaused {
                    container_id: id.to_string(),
                    ..Default::default()
                },
            );
        } else {
            self.events.send(
                TASK_RESUMED_EVENT_TOPIC,
                TaskResumed {
                    container_id: id.to_string(),
                    ..Default::default()
                },
            );
        }
        Ok(())
    }

    async fn do_update(&self, req: UpdateTaskRequest) -> Result<()> {
        let shared = self.get(&req.id)?;
        let c = shared.lock().await;
        let json = req
            .resources
            .as_ref()
            .map(|a| a.value.clone())
            .ok_or_else(|| ShimError::InvalidArgument("update: no resources".into()))?;
        match &c.kind {
            Kind::Native(n) => n.update(&json).await,
            Kind::Wasm(_) => {
                let res: LinuxResources = serde_json::from_slice(&json)
                    .map_err(|e| ShimError::InvalidArgument(format!("update resources: {e}")))?;
                let Some(limit) = res.memory().as_ref().and_then(|m| m.limit()) else {
                    return Ok(());
                };
                let limit = (limit > 0).then_some(limit as u64);
                for p in std::iter::once(&c.init).chain(c.execs.values()) {
                    if let Some(g) = p.guest() {
                        g.set_memory_limit(limit);
                    }
                }
                tracing::info!(id = req.id, ?limit, "memory limit updated");
                Ok(())
            }
        }
    }

    async fn do_stats(&self, id: &str) -> Result<StatsResponse> {
        let shared = self.get(id)?;
        let c = shared.lock().await;
        if let Kind::Native(_) = c.kind {
            return Err(ShimError::Unimplemented(format!(
                "container {id} is native (run by runc); wasmbox reports stats of wasm containers only"
            )));
        }
        let (mut memory, mut limit, mut cpu, mut system, mut procs) =
            (0u64, 0u64, 0u64, 0u64, 0u64);
        for p in std::iter::once(&c.init).chain(c.execs.values()) {
            if let Some(g) = p.guest() {
                let u = g.usage();
                memory += u.memory;
                limit = limit.max(u.memory_limit.unwrap_or(0));
                cpu += u.cpu.as_nanos() as u64;
                system += u.cpu_system.as_nanos() as u64;
                procs += 1;
            }
        }
        let metrics = Metrics {
            pids: MessageField::some(PidsStat {
                current: procs,
                ..Default::default()
            }),
            cpu: MessageField::some(CPUStat {
                usage: MessageField::some(CPUUsage {
                    total: cpu,
                    user: cpu - system,
                    kernel: system,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            memory: MessageField::some(MemoryStat {
                rss: memory,
                total_rss: memory,
                usage: MessageField::some(MemoryEntry {
                    usage: memory,
                    limit: if limit == 0 { u64::MAX } else { limit },
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let any = containerd_shim::util::convert_to_any(Box::new(metrics))
            .map_err(|e| ShimError::Internal(e.to_string()))?;
        Ok(StatsResponse {
            stats: MessageField::some(any),
            ..Default::default()
        })
    }

    async fn do_pids(&self, id: &str) -> Result<PidsResponse> {
        let shared = self.get(id)?;
        let c = shared.lock().await;
        let mut seen = std::collections::BTreeSet::new();
        let processes = std::iter::once(&c.init)
            .chain(c.execs.values())
            .filter(|p| p.started && p.exited().is_none())
            .filter(|p| seen.insert(p.pid))
            .map(|p| ProcessInfo {
                pid: p.pid,
                ..Default::default()
            })
            .collect();
        Ok(PidsResponse {
            processes,
            ..Default::default()
        })
    }
}

type Running = wasmbox_runtime::Running;

/// Kills one wasm process: a running guest through its kill handle, a created one by marking it
/// ended. Returns false if it had already ended.
fn kill_guest(events: &Events, id: &str, exec_id: &str, p: &Proc, signal: u32) -> bool {
    if p.exited().is_some() {
        return false;
    }
    match &p.body {
        Body::WasmRunning(g) => g.kill_handle().kill(signal as i32),
        // Never started: it ends now, as runc's created processes do.
        _ => {
            finish(events, &p.exit, id, exec_id, p.pid, 128 + signal, false);
            true
        }
    }
}

/// Records a process's exit and publishes it (with TaskOOM first when it hit its memory limit).
fn finish(
    events: &Events,
    tx: &tokio::sync::watch::Sender<Option<Exit>>,
    id: &str,
    exec_id: &str,
    pid: u32,
    code: u32,
    oom: bool,
) {
    let exit = Exit {
        code,
        at: SystemTime::now(),
    };
    let first = tx.send_if_modified(|e| {
        if e.is_none() {
            *e = Some(exit);
            true
        } else {
            false
        }
    });
    if !first {
        return;
    }
    if oom {
        events.send(
            TASK_OOM_EVENT_TOPIC,
            TaskOOM {
                container_id: id.to_string(),
                ..Default::default()
            },
        );
    }
    events.send(
        TASK_EXIT_EVENT_TOPIC,
        TaskExit {
            container_id: id.to_string(),
            id: if exec_id.is_empty() { id } else { exec_id }.to_string(),
            pid,
            exit_status: code,
            exited_at: MessageField::some(timestamp(exit.at)),
            ..Default::default()
        },
    );
}

fn delete_response(pid: u32, exit: Option<Exit>) -> DeleteResponse {
    let exit = exit.unwrap_or(Exit {
        code: 0,
        at: SystemTime::now(),
    });
    DeleteResponse {
        pid,
        exit_status: exit.code,
        exited_at: MessageField::some(timestamp(exit.at)),
        ..Default::default()
    }
}

fn exec_label(exec_id: &str) -> &str {
    if exec_id.is_empty() { "init" } else { exec_id }
}

fn empty(r: Result<()>) -> ttrpc::Result<Empty> {
    r.map(|()| Empty::new()).map_err(Into::into)
}

fn log_err<T>(what: &str, r: Result<T>) -> Result<T> {
    if let Err(e) = &r {
        tracing::warn!(request = what, error = %e, "request failed");
    }
    r
}

#[async_trait]
impl Task for TaskService {
    async fn create(
        &self,
        _ctx: &TtrpcContext,
        req: CreateTaskRequest,
    ) -> ttrpc::Result<CreateTaskResponse> {
        Ok(log_err("create", self.do_create(req).await)?)
    }

    async fn start(&self, _ctx: &TtrpcContext, req: StartRequest) -> ttrpc::Result<StartResponse> {
        Ok(log_err("start", self.do_start(req).await)?)
    }

    async fn state(&self, _ctx: &TtrpcContext, req: StateRequest) -> ttrpc::Result<StateResponse> {
        Ok(self.do_state(req).await?)
    }

    async fn wait(&self, _ctx: &TtrpcContext, req: WaitRequest) -> ttrpc::Result<WaitResponse> {
        let mut rx = {
            let shared = self.get(&req.id)?;
            let c = shared.lock().await;
            c.process(&req.exec_id)?.exit.subscribe()
        };
        let exit = rx
            .wait_for(|e| e.is_some())
            .await
            .map_err(|_| ShimError::Internal(format!("wait {}: process vanished", req.id)))?
            .expect("waited for Some");
        Ok(WaitResponse {
            exit_status: exit.code,
            exited_at: MessageField::some(timestamp(exit.at)),
            ..Default::default()
        })
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: KillRequest) -> ttrpc::Result<Empty> {
        empty(log_err("kill", self.do_kill(req).await))
    }

    async fn delete(
        &self,
        _ctx: &TtrpcContext,
        req: DeleteRequest,
    ) -> ttrpc::Result<DeleteResponse> {
        Ok(log_err("delete", self.do_delete(req).await)?)
    }

    async fn exec(&self, _ctx: &TtrpcContext, req: ExecProcessRequest) -> ttrpc::Result<Empty> {
        empty(log_err("exec", self.do_exec(req).await))
    }

    async fn pids(&self, _ctx: &TtrpcContext, req: PidsRequest) -> ttrpc::Result<PidsResponse> {
        Ok(self.do_pids(&req.id).await?)
    }

    async fn pause(&self, _ctx: &TtrpcContext, req: PauseRequest) -> ttrpc::Result<Empty> {
        empty(log_err("pause", self.do_pause(&req.id, true).await))
    }

    async fn resume(&self, _ctx: &TtrpcContext, req: ResumeRequest) -> ttrpc::Result<Empty> {
        empty(log_err("resume", self.do_pause(&req.id, false).await))
    }

    async fn update(&self, _ctx: &TtrpcContext, req: UpdateTaskRequest) -> ttrpc::Result<Empty> {
        empty(log_err("update", self.do_update(req).await))
    }

    async fn stats(&self, _ctx: &TtrpcContext, req: StatsRequest) -> ttrpc::Result<StatsResponse> {
        Ok(self.do_stats(&req.id).await?)
    }

    async fn close_io(&self, _ctx: &TtrpcContext, req: CloseIORequest) -> ttrpc::Result<Empty> {
        // stdin is read straight from containerd's FIFO, so the guest sees end-of-file as soon as
        // the client closes its end; nothing is buffered here to flush.
        let shared = self.get(&req.id)?;
        let c = shared.lock().await;
        c.process(&req.exec_id)?;
        Ok(Empty::new())
    }

    async fn resize_pty(&self, _ctx: &TtrpcContext, req: ResizePtyRequest) -> ttrpc::Result<Empty> {
        Err(ShimError::FailedPrecondition(format!(
            "container {} has no terminal to resize",
            req.id
        ))
        .into())
    }

    async fn connect(
        &self,
        _ctx: &TtrpcContext,
        req: ConnectRequest,
    ) -> ttrpc::Result<ConnectResponse> {
        let task_pid = match self.get(&req.id) {
            Ok(shared) => shared.lock().await.init.pid,
            Err(_) => 0,
        };
        Ok(ConnectResponse {
            shim_pid: self.shim_pid,
            task_pid,
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        })
    }

    async fn shutdown(&self, _ctx: &TtrpcContext, _req: ShutdownRequest) -> ttrpc::Result<Empty> {
        // One shim serves a whole group: it goes only when its last container is deleted.
        if self.containers.lock().expect("containers lock").is_empty() {
            tracing::info!("last container deleted; shim exiting");
            self.exit.signal();
        }
        Ok(Empty::new())
    }
}

/// Makes the wasm runtime for `spec`'s shim; an error says whether the configuration was at
/// fault (true) and what went wrong.
fn make_runtime(spec: &oci_spec::runtime::Spec) -> std::result::Result<Runtime, (bool, String)> {
    let grouped = super::group_of(spec).is_some();
    let compile_memory = match std::env::var("WASMBOX_COMPILE_MEMORY") {
        Ok(v) => crate::parse_compile_memory(&v)
            .map_err(|e| (true, format!("WASMBOX_COMPILE_MEMORY: {e}")))?,
        Err(_) => wasmbox_runtime::compiler::DEFAULT_COMPILE_MEMORY,
    };
    let config = wasmbox_runtime::RuntimeConfig {
        // Each compile in a helper process of its own: one container's module cannot take the
        // memory the pod's other containers run in.
        compiler: crate::compiler(compile_memory),
        cache_dir: std::env::var_os("WASMBOX_CACHE_DIR")
            .map(Into::into)
            .or_else(wasmbox_runtime::cache::default_dir),
        allocator: if grouped {
            wasmbox_runtime::Allocator::Pooling
        } else {
            wasmbox_runtime::Allocator::OnDemand
        },
        mount_tree: true,
        // Guests run on filtered threads of their own; the shim's threads still exec runc.
        own_executor: true,
        scratch_dir: Some(std::path::Path::new(super::native::STATE_DIR).join("scratch")),
        protected: vec![wasmbox_runtime::ProtectedPath::new(
            "state directory",
            super::native::STATE_DIR,
        )],
    };
    Runtime::new(config).map_err(|e| (false, format!("starting the wasm runtime: {}", chain(&e))))
}

impl std::fmt::Debug for TaskService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskService")
            .field("namespace", &self.namespace)
            .finish()
    }
}

/// [`prepare_off_executor`] within the bundle's deadline (`wasmbox.timeout`), which covers
/// loading and compiling: create fails when it runs out, and the guest gets what is left.
async fn prepare_within_deadline(
    runtime: &Runtime,
    bundle: &wasmbox_runtime::Bundle,
) -> Result<wasmbox_runtime::Prepared> {
    let Some(limit) = bundle.policy.limits.timeout else {
        return prepare_off_executor(runtime, bundle).await;
    };
    let started = std::time::Instant::now();
    let mut prepared = tokio::time::timeout(limit, prepare_off_executor(runtime, bundle))
        .await
        .map_err(|_| {
            ShimError::InvalidArgument(format!(
                "/{}: timed out after {limit:?} while loading",
                bundle.entry.display()
            ))
        })??;
    prepared.set_timeout(Some(
        limit
            .saturating_sub(started.elapsed())
            .max(std::time::Duration::from_millis(1)),
    ));
    Ok(prepared)
}

/// Compiles, links and builds the mount tree of a wasm bundle on the blocking pool, so one
/// container's long compile never holds an executor thread other containers' requests need.
async fn prepare_off_executor(
    runtime: &Runtime,
    bundle: &wasmbox_runtime::Bundle,
) -> Result<wasmbox_runtime::Prepared> {
    let (rt, b) = (runtime.clone(), bundle.clone());
    let deadline = bundle
        .policy
        .limits
        .timeout
        .and_then(|t| std::time::Instant::now().checked_add(t));
    tokio::task::spawn_blocking(move || container::prepare(&rt, &b, deadline))
        .await
        .map_err(|e| ShimError::Internal(format!("preparing the guest: {e}")))?
}
