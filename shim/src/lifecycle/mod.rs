//! One container lifecycle for every face that drives wasmbox containers: the containerd shim's
//! task service today, a runc-compatible command line later.
//!
//! A face maps its requests onto [`Lifecycle`]'s methods. Each process has one [`State`] (its
//! [`Status`] and, once stopped, its exit) that every request is checked against
//! (`Status::can_start`, `can_kill`, ...), and each change of a container's status is written to
//! its on-disk [`record`]. What runs the processes is behind one process interface,
//! [`instance::Instance`]: a wasm guest in this process ([`wasm`]) or runc ([`native`]). The
//! lifecycle never asks which. What happens is told through [`Events`].

pub mod cgroup;
mod container;
pub mod error;
pub mod events;
mod instance;
mod metrics;
pub mod native;
pub mod netns;
pub mod reaper;
pub mod record;
pub mod sandbox;
pub mod status;
pub mod stdio;
mod wasm;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use oci_spec::runtime::{Process, Spec};
use tokio::sync::Mutex as AsyncMutex;
use tokio::sync::watch;
use wasmbox_runtime::Runtime;
use wasmbox_runtime::launch::Entry;

pub use error::{Result, ShimError, chain};
pub use events::{Event, Events, RootfsMount};
pub use instance::Stats;
pub use status::{Exit, State, Status};
pub use stdio::StdioPaths;

use instance::{Ended, ExitFuture, Instance, Made};
use record::{Record, RecordFile};
use status::Transition;

/// Makes the wasm runtime at the first wasm create, from that container's spec; the error is the
/// create's (invalid argument when the configuration is at fault).
pub type MakeRuntime = Box<dyn Fn(&Spec) -> Result<Runtime> + Send + Sync>;

/// Makes every container's instance in place of the real ones, by container id: the lifecycle's
/// unit tests drive it against fakes.
#[cfg(test)]
type MakeFake = Box<dyn Fn(&str) -> (Box<dyn Instance>, Made) + Send + Sync>;

/// One process of a container.
struct Proc {
    /// Its pid: the shim's for wasm guests, 0 for a native added process until it starts.
    pid: u32,
    stdio: StdioPaths,
    state: watch::Sender<State>,
}

impl Proc {
    fn new(pid: u32, stdio: StdioPaths) -> Self {
        Self {
            pid,
            stdio,
            state: watch::Sender::new(State::created()),
        }
    }

    fn state(&self) -> State {
        *self.state.borrow()
    }
}

/// One container: its init process, its added processes, and what runs them.
struct Container {
    bundle: PathBuf,
    mounted: bool,
    instance: Box<dyn Instance>,
    init: Proc,
    execs: HashMap<String, Proc>,
    record: Arc<RecordFile>,
}

impl Container {
    fn process(&self, id: &str, exec_id: &str) -> Result<&Proc> {
        if exec_id.is_empty() {
            return Ok(&self.init);
        }
        self.execs
            .get(exec_id)
            .ok_or_else(|| ShimError::NotFound(format!("process {exec_id} in container {id}")))
    }

    fn process_mut(&mut self, id: &str, exec_id: &str) -> Result<&mut Proc> {
        if exec_id.is_empty() {
            return Ok(&mut self.init);
        }
        self.execs
            .get_mut(exec_id)
            .ok_or_else(|| ShimError::NotFound(format!("process {exec_id} in container {id}")))
    }

    /// The container's status: its init's.
    fn status(&self) -> Status {
        self.init.state().status
    }
}

/// Writes a container's new status to its record. Called while the init's state is locked for
/// the change (inside its `send_modify`), so the record follows the changes in their order.
fn persist(record: &RecordFile, status: Status) {
    if let Err(e) = record.update(|r| r.status = status) {
        tracing::warn!(?status, error = %e, "saving the status failed");
    }
}

type Shared = Arc<AsyncMutex<Container>>;

/// A container to create.
#[derive(Debug, Clone, Default)]
pub struct CreateRequest {
    /// Its id.
    pub id: String,
    /// Its bundle directory (`config.json`, `rootfs`).
    pub bundle: PathBuf,
    /// Mounts that make its rootfs, if the caller has not mounted it.
    pub rootfs: Vec<RootfsMount>,
    /// Its init process's stdio.
    pub stdio: StdioPaths,
}

/// One process as a face reports it.
#[derive(Debug, Clone)]
pub struct ProcessState {
    /// Its pid.
    pub pid: u32,
    /// Its container's bundle.
    pub bundle: PathBuf,
    /// Its status (an added process of a paused container is paused too).
    pub status: Status,
    /// Its stdio.
    pub stdio: StdioPaths,
    /// How it ended, once stopped.
    pub exit: Option<Exit>,
}

/// What a deleted process leaves behind.
#[derive(Debug, Clone, Copy)]
pub struct Deleted {
    /// Its pid.
    pub pid: u32,
    /// How it ended (`None`: it never ran).
    pub exit: Option<Exit>,
}

/// The containers of one shim process (a pod's, or one container's).
pub struct Lifecycle {
    /// Made at the first wasm create. An error is kept, and each create reports it.
    runtime: OnceLock<Result<Runtime>>,
    make_runtime: MakeRuntime,
    containers: Mutex<HashMap<String, Shared>>,
    events: Arc<dyn Events>,
    namespace: String,
    pid: u32,
    /// The pod cgroup this process joins from its pod sandbox's create. The join runs in the
    /// background holding this lock (moving a process between cgroups waits for an RCU grace
    /// period, 10 to 16 ms measured on cgroup v1): the sandbox's create answers at once, and each
    /// later create takes the lock, so no guest is made before the process is in the pod's
    /// cgroup.
    pod_cgroup: PodCgroupSlot,
    #[cfg(test)]
    fake: Option<MakeFake>,
}

/// Where a shim's pod cgroup is kept once joined. The process leaves it last, after its task API
/// is shut down: the move back waits for an RCU grace period too, which containerd's
/// StopPodSandbox need not wait for.
pub type PodCgroupSlot = Arc<tokio::sync::Mutex<Option<cgroup::PodCgroup>>>;

impl Lifecycle {
    /// A lifecycle telling `events`; `namespace` is the caller's (containerd's) namespace. The
    /// pod cgroup it joins is kept in `pod_cgroup`, for the process to leave.
    pub fn new(
        events: Arc<dyn Events>,
        namespace: String,
        make_runtime: MakeRuntime,
        pod_cgroup: PodCgroupSlot,
    ) -> Self {
        Self {
            runtime: OnceLock::new(),
            make_runtime,
            containers: Mutex::new(HashMap::new()),
            events,
            namespace,
            pid: std::process::id(),
            pod_cgroup,
            #[cfg(test)]
            fake: None,
        }
    }

    fn runtime(&self, spec: &Spec) -> Result<Runtime> {
        match self.runtime.get_or_init(|| (self.make_runtime)(spec)) {
            Ok(r) => Ok(r.clone()),
            Err(e) => Err(e.clone()),
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

    /// Whether no container is left.
    pub fn is_empty(&self) -> bool {
        self.containers.lock().expect("containers lock").is_empty()
    }

    /// Creates a container: mounts its rootfs, decides what runs it from its entrypoint, and
    /// makes its init process. Returns the init's pid. On failure nothing is left behind. Traced
    /// as `wasmbox.shim.create` when traces are exported.
    pub async fn create(&self, req: CreateRequest) -> Result<u32> {
        let span = wasmbox_runtime::trace::Operation::start(
            "wasmbox.shim.create",
            &[("container.id", req.id.clone())],
        );
        let made = self.create_traced(req).await;
        if let Err(e) = &made {
            span.fail(&e.to_string());
        }
        made
    }

    async fn create_traced(&self, req: CreateRequest) -> Result<u32> {
        let id = req.id.as_str();
        if self
            .containers
            .lock()
            .expect("containers lock")
            .contains_key(id)
        {
            return Err(ShimError::AlreadyExists(format!("container {id}")));
        }
        req.stdio.check()?;
        let spec = container::read_spec(&req.bundle)?;
        // A pod's wasm work is charged to the pod: the shim joins its cgroup with the sandbox.
        // Every create takes the lock, so waits for a join in flight.
        let mut joined = self.pod_cgroup.clone().lock_owned().await;
        match cgroup::pod_of(&spec) {
            Some(pod) if joined.is_none() => {
                tokio::task::spawn_blocking(move || *joined = Some(cgroup::join(&pod)));
            }
            _ => drop(joined),
        }
        // A sandbox held by this process needs no rootfs.
        let mounted = if sandbox::runs_here(&spec) {
            false
        } else {
            container::mount_rootfs(&req.bundle, &req.rootfs)?
        };
        let record = Arc::new(RecordFile::new(
            &req.bundle,
            Record {
                id: id.to_string(),
                kind: record::Kind::Wasm,
                pid: self.pid,
                status: Status::Created,
                rootfs_mounted: mounted,
                runc_root: None,
            },
        ));
        let undo = || {
            if mounted {
                container::unmount_rootfs(&req.bundle);
            }
            record.remove();
        };
        let (mut instance, made) = match self.instance(&req, spec, &record).await {
            Ok(m) => m,
            Err(e) => {
                undo();
                return Err(e);
            }
        };
        if let Err(e) = record.update(|r| {
            instance.describe(r);
            r.pid = made.pid;
        }) {
            let _ = instance.delete().await;
            undo();
            return Err(ShimError::Internal(format!(
                "save state in {}: {e}",
                req.bundle.display()
            )));
        }
        let c = Container {
            bundle: req.bundle.clone(),
            mounted,
            instance,
            init: Proc::new(made.pid, req.stdio.clone()),
            execs: HashMap::new(),
            record,
        };
        let (state, record) = (c.init.state.clone(), c.record.clone());
        self.containers
            .lock()
            .expect("containers lock")
            .insert(id.to_string(), Arc::new(AsyncMutex::new(c)));
        self.events.send(Event::Create {
            id: id.to_string(),
            bundle: req.bundle.to_string_lossy().into_owned(),
            rootfs: req.rootfs.clone(),
            stdio: req.stdio.clone(),
            pid: made.pid,
        });
        // Armed after the create is told: an init that dies at once is told to have ended after.
        if let Some(exit) = made.exit {
            self.watch(&state, Some(record), id, "", made.pid, exit);
        }
        Ok(made.pid)
    }

    /// What runs the container (a pod sandbox this process holds, or by its entrypoint): the one
    /// place the kind of backend is chosen.
    async fn instance(
        &self,
        req: &CreateRequest,
        spec: Spec,
        record: &RecordFile,
    ) -> Result<(Box<dyn Instance>, Made)> {
        #[cfg(test)]
        if let Some(make) = &self.fake {
            return Ok(make(&req.id));
        }
        if sandbox::runs_here(&spec) {
            let (i, made) = sandbox::SandboxInstance::create();
            tracing::info!(id = req.id, "pod sandbox held by the shim");
            return Ok((Box::new(i), made));
        }
        let entry = crate::launch::classify(&req.bundle, spec.clone())
            .map_err(|e| ShimError::InvalidArgument(chain(&e)))?;
        Ok(match entry {
            Entry::Wasm(w) => {
                let runtime = self.runtime(&spec)?;
                let (i, made) = wasm::WasmInstance::create(&req.id, runtime, w, &req.stdio).await?;
                (Box::new(i), made)
            }
            Entry::Native => {
                sandbox::check_native(&spec)?;
                netns::check_native(&spec)?;
                let (i, made) = native::NativeInstance::create(
                    &self.namespace,
                    &req.id,
                    &req.bundle,
                    &req.stdio,
                    record,
                )
                .await?;
                (Box::new(i), made)
            }
        })
    }

    /// Records a process's end when `exit` resolves, after any start under way has reported.
    fn watch(
        &self,
        state: &watch::Sender<State>,
        record: Option<Arc<RecordFile>>,
        id: &str,
        exec_id: &str,
        pid: u32,
        exit: ExitFuture,
    ) {
        let state = state.clone();
        let events = self.events.clone();
        let (id, exec_id) = (id.to_string(), exec_id.to_string());
        tokio::spawn(async move {
            let Some(ended) = exit.await else {
                return;
            };
            finish(
                &state,
                &*events,
                record.as_deref(),
                &id,
                &exec_id,
                pid,
                ended,
            )
            .await;
        });
    }

    /// Starts a created process. Returns its pid. Traced as `wasmbox.shim.start` when traces
    /// are exported.
    pub async fn start(&self, id: &str, exec_id: &str) -> Result<u32> {
        let span = wasmbox_runtime::trace::Operation::start(
            "wasmbox.shim.start",
            &[
                ("container.id", id.to_string()),
                ("process.exec_id", exec_id.to_string()),
            ],
        );
        let started = self.start_traced(id, exec_id).await;
        if let Err(e) = &started {
            span.fail(&e.to_string());
        }
        started
    }

    async fn start_traced(&self, id: &str, exec_id: &str) -> Result<u32> {
        let shared = self.get(id)?;
        let mut c = shared.lock().await;
        let p = c.process(id, exec_id)?;
        let mut was = State::created();
        let begun = p.state.send_if_modified(|s| {
            was = *s;
            let ok = s.status.can_start() && !s.starting;
            s.starting |= ok;
            ok
        });
        if !begun {
            let why = match was.status {
                Status::Stopped if was.exit.is_some() => "has stopped",
                _ => "was already started",
            };
            return Err(ShimError::FailedPrecondition(format!(
                "process {} of container {id} {why}",
                label(exec_id)
            )));
        }
        let (pid, stdio) = (p.pid, p.stdio.clone());
        let record = exec_id.is_empty().then(|| c.record.clone());
        let r = c.instance.start(exec_id, pid, &stdio).await;
        let p = c.process_mut(id, exec_id)?;
        let made = match r {
            Ok(made) => made,
            Err(e) => {
                p.state.send_modify(|s| s.starting = false);
                return Err(e);
            }
        };
        p.pid = made.pid;
        let events = &self.events;
        let mut started = false;
        p.state.send_modify(|s| {
            s.starting = false;
            started = s.apply(Transition::Start, None);
            // Recorded and told before its exit can be: that waits for `starting` to clear.
            if started {
                if let Some(r) = &record {
                    persist(r, Status::Running);
                }
                events.send(if exec_id.is_empty() {
                    Event::Start {
                        id: id.to_string(),
                        pid: made.pid,
                    }
                } else {
                    Event::ExecStarted {
                        id: id.to_string(),
                        exec_id: exec_id.to_string(),
                        pid: made.pid,
                    }
                });
            }
        });
        if let Some(exit) = made.exit {
            let state = c.process(id, exec_id)?.state.clone();
            self.watch(&state, record, id, exec_id, made.pid, exit);
        }
        Ok(made.pid)
    }

    /// Sends `signal` to a process (with `all`, every process of the container).
    pub async fn kill(&self, id: &str, exec_id: &str, signal: u32, all: bool) -> Result<()> {
        let shared = self.get(id)?;
        let mut c = shared.lock().await;
        let p = c.process(id, exec_id)?;
        if !p.state().status.can_kill() && !all {
            return Err(ShimError::NotFound(format!(
                "process {} of container {id} already finished",
                label(exec_id)
            )));
        }
        let pid = p.pid;
        c.instance.kill(exec_id, pid, signal, all).await
    }

    /// Adds a process to a container from its OCI process JSON; it is created, not started.
    pub async fn exec(
        &self,
        id: &str,
        exec_id: &str,
        stdio: StdioPaths,
        process: &[u8],
    ) -> Result<()> {
        let shared = self.get(id)?;
        let mut c = shared.lock().await;
        if exec_id.is_empty() || c.execs.contains_key(exec_id) {
            return Err(ShimError::AlreadyExists(format!(
                "exec {exec_id} in container {id}"
            )));
        }
        match c.status() {
            s if s.can_exec() => {}
            Status::Paused => {
                return Err(ShimError::FailedPrecondition(format!(
                    "container {id} is paused"
                )));
            }
            _ => {
                return Err(ShimError::FailedPrecondition(format!(
                    "container {id} has stopped"
                )));
            }
        }
        stdio.check()?;
        serde_json::from_slice::<Process>(process)
            .map_err(|e| ShimError::InvalidArgument(format!("exec process spec: {e}")))?;
        let made = c.instance.exec(exec_id, process, &stdio).await?;
        let p = Proc::new(made.pid, stdio);
        let state = p.state.clone();
        c.execs.insert(exec_id.to_string(), p);
        self.events.send(Event::ExecAdded {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
        });
        if let Some(exit) = made.exit {
            self.watch(&state, None, id, exec_id, made.pid, exit);
        }
        Ok(())
    }

    /// A process's state.
    pub async fn state(&self, id: &str, exec_id: &str) -> Result<ProcessState> {
        let shared = self.get(id)?;
        let c = shared.lock().await;
        let p = c.process(id, exec_id)?;
        let st = p.state();
        let status = match (st.status, c.status()) {
            (Status::Running, Status::Paused) => Status::Paused,
            (s, _) => s,
        };
        Ok(ProcessState {
            pid: p.pid,
            bundle: c.bundle.clone(),
            status,
            stdio: p.stdio.clone(),
            exit: st.exit,
        })
    }

    /// Waits for a process to end.
    pub async fn wait(&self, id: &str, exec_id: &str) -> Result<Exit> {
        let mut rx = {
            let shared = self.get(id)?;
            let c = shared.lock().await;
            c.process(id, exec_id)?.state.subscribe()
        };
        let st = rx
            .wait_for(|s| s.exit.is_some())
            .await
            .map_err(|_| ShimError::Internal(format!("wait {id}: process vanished")))?;
        Ok(st.exit.expect("waited for an exit"))
    }

    /// Deletes a process that is not running; the init process takes its container with it.
    pub async fn delete(&self, id: &str, exec_id: &str) -> Result<Deleted> {
        let shared = self.get(id)?;
        let mut c = shared.lock().await;
        if !exec_id.is_empty() {
            let p = c.process(id, exec_id)?;
            if !p.state().status.can_delete() {
                return Err(ShimError::FailedPrecondition(format!(
                    "exec {exec_id} of container {id} is still running"
                )));
            }
            let p = c.execs.remove(exec_id).expect("looked up above");
            c.instance.remove_exec(exec_id);
            return Ok(Deleted {
                pid: p.pid,
                exit: p.state().exit,
            });
        }
        if !c.status().can_delete() {
            return Err(ShimError::FailedPrecondition(format!(
                "container {id} is still running; kill it first"
            )));
        }
        // An end the delete brings about (runc's created init, killed) is not told after it.
        c.init.state.send_modify(|s| s.deleted = true);
        if let Err(e) = c.instance.delete().await {
            c.init.state.send_modify(|s| s.deleted = false);
            return Err(e);
        }
        c.execs.clear();
        if c.mounted {
            container::unmount_rootfs(&c.bundle);
        }
        c.record.remove();
        let deleted = Deleted {
            pid: c.init.pid,
            exit: c.init.state().exit,
        };
        drop(c);
        self.containers.lock().expect("containers lock").remove(id);
        self.events.send(Event::Delete {
            id: id.to_string(),
            pid: deleted.pid,
            exit: deleted.exit.unwrap_or(Exit {
                code: 0,
                at: SystemTime::now(),
            }),
        });
        Ok(deleted)
    }

    /// Freezes (`pause`) or thaws a running container.
    pub async fn pause(&self, id: &str, pause: bool) -> Result<()> {
        let shared = self.get(id)?;
        let mut c = shared.lock().await;
        let status = c.status();
        let refused = |why: &str| {
            Err(ShimError::FailedPrecondition(format!(
                "container {id} {why}"
            )))
        };
        let t = match pause {
            true if status.can_pause() => Transition::Pause,
            false if status.can_resume() => Transition::Resume,
            true if status == Status::Paused => return refused("is already paused"),
            false if matches!(status, Status::Running | Status::Created) => {
                return refused("is not paused");
            }
            _ => return refused("is not running"),
        };
        let next = status.next(t).expect("the guard allowed it");
        if pause {
            c.instance.pause().await?;
        } else {
            c.instance.resume().await?;
        }
        let events = &self.events;
        c.init.state.send_if_modified(|s| {
            let changed = s.apply(t, None);
            // Not when its end came first: it is stopped, and that was told.
            if changed {
                persist(&c.record, next);
                events.send(if pause {
                    Event::Paused { id: id.to_string() }
                } else {
                    Event::Resumed { id: id.to_string() }
                });
            }
            changed
        });
        Ok(())
    }

    /// Applies new resources (OCI `LinuxResources` JSON) to a container.
    pub async fn update(&self, id: &str, resources: &[u8]) -> Result<()> {
        let shared = self.get(id)?;
        let mut c = shared.lock().await;
        c.instance.update(resources).await
    }

    /// Usage of a container's live processes.
    pub async fn stats(&self, id: &str) -> Result<Stats> {
        let shared = self.get(id)?;
        let c = shared.lock().await;
        c.instance.stats()
    }

    /// The pids of a container's live processes (wasm guests all have the shim's).
    pub async fn pids(&self, id: &str) -> Result<Vec<u32>> {
        let shared = self.get(id)?;
        let c = shared.lock().await;
        let mut seen = std::collections::BTreeSet::new();
        Ok(std::iter::once(&c.init)
            .chain(c.execs.values())
            .filter(|p| matches!(p.state().status, Status::Running | Status::Paused))
            .filter(|p| seen.insert(p.pid))
            .map(|p| p.pid)
            .collect())
    }

    /// A container's init pid.
    pub async fn init_pid(&self, id: &str) -> Result<u32> {
        let shared = self.get(id)?;
        let c = shared.lock().await;
        Ok(c.init.pid)
    }

    /// Checks that a process exists.
    pub async fn exists(&self, id: &str, exec_id: &str) -> Result<()> {
        let shared = self.get(id)?;
        let c = shared.lock().await;
        c.process(id, exec_id).map(|_| ())
    }
}

/// Records a process's end and tells it (its OOM first), once, and only after a start under way
/// has told its own.
async fn finish(
    state: &watch::Sender<State>,
    events: &dyn Events,
    record: Option<&RecordFile>,
    id: &str,
    exec_id: &str,
    pid: u32,
    ended: Ended,
) {
    let mut rx = state.subscribe();
    loop {
        if rx.wait_for(|s| !s.starting).await.is_err() {
            return;
        }
        let mut starting = false;
        let exit = Exit {
            code: ended.code,
            at: SystemTime::now(),
        };
        state.send_if_modified(|s| {
            starting = s.starting;
            if starting || !s.apply(Transition::Exit, Some(exit)) {
                return false;
            }
            if let Some(r) = record {
                persist(r, Status::Stopped);
            }
            if s.deleted {
                return true;
            }
            if ended.oom {
                events.send(Event::Oom { id: id.to_string() });
            }
            events.send(Event::Exit {
                id: id.to_string(),
                exec_id: exec_id.to_string(),
                pid,
                exit,
            });
            true
        });
        if !starting {
            return;
        }
    }
}

/// How a face names a process in messages.
fn label(exec_id: &str) -> &str {
    if exec_id.is_empty() { "init" } else { exec_id }
}

/// Undoes what a shim that died left of the container in `bundle`, as its record says: runc's
/// container (with `--force`), its rootfs mount, the record. Returns the pid the record named (0
/// without one).
pub async fn recover(bundle: &Path, namespace: &str) -> Result<u32> {
    let rec = Record::load(bundle)
        .map_err(|e| ShimError::Internal(format!("read state in {}: {e}", bundle.display())))?;
    let Some(rec) = rec else {
        return Ok(0);
    };
    if rec.kind == record::Kind::Native {
        native::delete_left(&rec, bundle, namespace).await?;
    }
    if rec.rootfs_mounted {
        container::unmount_rootfs(bundle);
    }
    Record::remove(bundle);
    Ok(rec.pid)
}
