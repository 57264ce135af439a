//! The task service containerd talks to: every method `ctr` and the CRI plugin use, each mapped
//! onto the container lifecycle ([`crate::lifecycle`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use containerd_shim::ExitSignal;
use containerd_shim::protos::api::Empty;
use containerd_shim::protos::api::{
    CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest, CreateTaskResponse,
    DeleteRequest, DeleteResponse, ExecProcessRequest, KillRequest, PauseRequest, PidsRequest,
    PidsResponse, ProcessInfo, ResizePtyRequest, ResumeRequest, ShutdownRequest, StartRequest,
    StartResponse, StateRequest, StateResponse, StatsRequest, StatsResponse, Status as TaskStatus,
    UpdateTaskRequest, WaitRequest, WaitResponse,
};
use containerd_shim::protos::cgroups::metrics::{
    CPUStat, CPUUsage, MemoryEntry, MemoryStat, Metrics, PidsStat,
};
use containerd_shim::protos::protobuf::{EnumOrUnknown, MessageField};
use containerd_shim::protos::ttrpc;
use containerd_shim::{Task, TtrpcContext};
use wasmbox_runtime::Runtime;

use super::events::{Publisher, timestamp};
use crate::lifecycle::{
    CreateRequest, Exit, Lifecycle, PodCgroupSlot, Result, RootfsMount, ShimError, Stats, Status,
    StdioPaths, chain,
};

/// The task service of one shim process, which may serve many containers (a pod).
pub struct TaskService {
    lifecycle: Lifecycle,
    events: Publisher,
    exit: Arc<ExitSignal>,
    shim_pid: u32,
}

impl TaskService {
    /// A service publishing through `events`, for containerd namespace `namespace`, keeping the
    /// pod cgroup it joins in `pod_cgroup`. At shutdown it signals `exit`.
    pub fn new(
        events: Publisher,
        namespace: String,
        exit: Arc<ExitSignal>,
        pod_cgroup: PodCgroupSlot,
    ) -> Self {
        Self {
            lifecycle: Lifecycle::new(
                Arc::new(events.clone()),
                namespace,
                Box::new(make_runtime),
                pod_cgroup,
            ),
            events,
            exit,
            shim_pid: std::process::id(),
        }
    }
}

fn stdio(stdin: &str, stdout: &str, stderr: &str, terminal: bool) -> StdioPaths {
    StdioPaths {
        stdin: stdin.to_string(),
        stdout: stdout.to_string(),
        stderr: stderr.to_string(),
        terminal,
    }
}

fn status(s: Status) -> TaskStatus {
    match s {
        Status::Created => TaskStatus::CREATED,
        Status::Running => TaskStatus::RUNNING,
        Status::Paused => TaskStatus::PAUSED,
        Status::Stopped => TaskStatus::STOPPED,
    }
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

/// A wasm container's usage as cgroup metrics, the form `ctr task metrics` and the CRI plugin
/// read.
fn metrics(s: &Stats) -> Metrics {
    Metrics {
        pids: MessageField::some(PidsStat {
            current: s.processes,
            ..Default::default()
        }),
        cpu: MessageField::some(CPUStat {
            usage: MessageField::some(CPUUsage {
                total: s.cpu_ns,
                user: s.cpu_ns.saturating_sub(s.cpu_system_ns),
                kernel: s.cpu_system_ns,
                ..Default::default()
            }),
            ..Default::default()
        }),
        memory: MessageField::some(MemoryStat {
            rss: s.memory,
            total_rss: s.memory,
            usage: MessageField::some(MemoryEntry {
                usage: s.memory,
                limit: s.memory_limit.unwrap_or(u64::MAX),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
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
        if !req.checkpoint.is_empty() {
            return Err(ShimError::Unimplemented(
                "restoring from a checkpoint is not supported by wasmbox".into(),
            )
            .into());
        }
        let create = CreateRequest {
            id: req.id.clone(),
            bundle: PathBuf::from(&req.bundle),
            rootfs: req
                .rootfs
                .iter()
                .map(|m| RootfsMount {
                    kind: m.type_.clone(),
                    source: m.source.clone(),
                    options: m.options.clone(),
                })
                .collect(),
            stdio: stdio(&req.stdin, &req.stdout, &req.stderr, req.terminal),
        };
        let pid = log_err("create", self.lifecycle.create(create).await)?;
        Ok(CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    async fn start(&self, _ctx: &TtrpcContext, req: StartRequest) -> ttrpc::Result<StartResponse> {
        let pid = log_err("start", self.lifecycle.start(&req.id, &req.exec_id).await)?;
        Ok(StartResponse {
            pid,
            ..Default::default()
        })
    }

    async fn state(&self, _ctx: &TtrpcContext, req: StateRequest) -> ttrpc::Result<StateResponse> {
        let st = self.lifecycle.state(&req.id, &req.exec_id).await?;
        Ok(StateResponse {
            id: req.id,
            bundle: st.bundle.to_string_lossy().into_owned(),
            pid: st.pid,
            status: EnumOrUnknown::new(status(st.status)),
            stdin: st.stdio.stdin,
            stdout: st.stdio.stdout,
            stderr: st.stdio.stderr,
            terminal: st.stdio.terminal,
            exit_status: st.exit.map(|e| e.code).unwrap_or(0),
            exited_at: st
                .exit
                .map(|e| MessageField::some(timestamp(e.at)))
                .unwrap_or_default(),
            exec_id: req.exec_id,
            ..Default::default()
        })
    }

    async fn wait(&self, _ctx: &TtrpcContext, req: WaitRequest) -> ttrpc::Result<WaitResponse> {
        let exit = self.lifecycle.wait(&req.id, &req.exec_id).await?;
        Ok(WaitResponse {
            exit_status: exit.code,
            exited_at: MessageField::some(timestamp(exit.at)),
            ..Default::default()
        })
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: KillRequest) -> ttrpc::Result<Empty> {
        let r = self
            .lifecycle
            .kill(&req.id, &req.exec_id, req.signal, req.all)
            .await;
        empty(log_err("kill", r))
    }

    async fn delete(
        &self,
        _ctx: &TtrpcContext,
        req: DeleteRequest,
    ) -> ttrpc::Result<DeleteResponse> {
        let d = log_err("delete", self.lifecycle.delete(&req.id, &req.exec_id).await)?;
        Ok(delete_response(d.pid, d.exit))
    }

    async fn exec(&self, _ctx: &TtrpcContext, req: ExecProcessRequest) -> ttrpc::Result<Empty> {
        let r = match req.spec.as_ref() {
            None => Err(ShimError::InvalidArgument("exec: no process spec".into())),
            Some(spec) => {
                let io = stdio(&req.stdin, &req.stdout, &req.stderr, req.terminal);
                self.lifecycle
                    .exec(&req.id, &req.exec_id, io, &spec.value)
                    .await
            }
        };
        empty(log_err("exec", r))
    }

    async fn pids(&self, _ctx: &TtrpcContext, req: PidsRequest) -> ttrpc::Result<PidsResponse> {
        let processes = self
            .lifecycle
            .pids(&req.id)
            .await?
            .into_iter()
            .map(|pid| ProcessInfo {
                pid,
                ..Default::default()
            })
            .collect();
        Ok(PidsResponse {
            processes,
            ..Default::default()
        })
    }

    async fn pause(&self, _ctx: &TtrpcContext, req: PauseRequest) -> ttrpc::Result<Empty> {
        empty(log_err("pause", self.lifecycle.pause(&req.id, true).await))
    }

    async fn resume(&self, _ctx: &TtrpcContext, req: ResumeRequest) -> ttrpc::Result<Empty> {
        empty(log_err(
            "resume",
            self.lifecycle.pause(&req.id, false).await,
        ))
    }

    async fn update(&self, _ctx: &TtrpcContext, req: UpdateTaskRequest) -> ttrpc::Result<Empty> {
        let r = match req.resources.as_ref() {
            None => Err(ShimError::InvalidArgument("update: no resources".into())),
            Some(res) => self.lifecycle.update(&req.id, &res.value).await,
        };
        empty(log_err("update", r))
    }

    async fn stats(&self, _ctx: &TtrpcContext, req: StatsRequest) -> ttrpc::Result<StatsResponse> {
        let s = self.lifecycle.stats(&req.id).await?;
        let any = containerd_shim::util::convert_to_any(Box::new(metrics(&s)))
            .map_err(|e| ShimError::Internal(e.to_string()))?;
        Ok(StatsResponse {
            stats: MessageField::some(any),
            ..Default::default()
        })
    }

    async fn close_io(&self, _ctx: &TtrpcContext, req: CloseIORequest) -> ttrpc::Result<Empty> {
        // stdin is read straight from containerd's FIFO, so the guest sees end-of-file as soon as
        // the client closes its end; nothing is buffered here to flush.
        self.lifecycle.exists(&req.id, &req.exec_id).await?;
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
        Ok(ConnectResponse {
            shim_pid: self.shim_pid,
            task_pid: self.lifecycle.init_pid(&req.id).await.unwrap_or(0),
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        })
    }

    async fn shutdown(&self, _ctx: &TtrpcContext, _req: ShutdownRequest) -> ttrpc::Result<Empty> {
        // One shim serves a whole group: it goes only when its last container is deleted.
        if self.lifecycle.is_empty() {
            tracing::info!("last container deleted; shim exiting");
            self.events.flush(std::time::Duration::from_secs(5)).await;
            self.exit.signal();
        }
        Ok(Empty::new())
    }
}

/// Makes the wasm runtime for `spec`'s shim, its settings from the shim's environment
/// (`WASMBOX_CACHE_DIR`, `WASMBOX_COMPILE_MEMORY`).
fn make_runtime(spec: &oci_spec::runtime::Spec) -> crate::lifecycle::Result<Runtime> {
    let grouped = super::group_of(spec).is_some();
    // Each compile in a helper process of its own: one container's module cannot take the
    // memory the pod's other containers run in.
    let mut config = wasmbox_runtime::launch::Settings::default()
        .config()
        .map_err(|e| ShimError::InvalidArgument(chain(&e)))?;
    config.allocator = if grouped {
        wasmbox_runtime::Allocator::Pooling
    } else {
        wasmbox_runtime::Allocator::OnDemand
    };
    config.mount_tree = true;
    // Guests run on filtered threads of their own; the shim's threads still build mount trees
    // and make network namespaces. A group's later containers may be granted network the first
    // was not, so guest threads may open sockets.
    config.own_executor = true;
    config.scratch_dir =
        Some(std::path::Path::new(crate::lifecycle::native::STATE_DIR).join("scratch"));
    config.protected = vec![wasmbox_runtime::ProtectedPath::new(
        "state directory",
        crate::lifecycle::native::STATE_DIR,
    )];
    Runtime::new(config)
        .map_err(|e| ShimError::Internal(format!("starting the wasm runtime: {}", chain(&e))))
}

impl std::fmt::Debug for TaskService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskService").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_becomes_cgroup_metrics_with_user_and_kernel_time_apart() {
        let m = metrics(&Stats {
            memory: 5 << 20,
            memory_limit: None,
            cpu_ns: 900,
            cpu_system_ns: 300,
            processes: 2,
        });
        assert_eq!(m.cpu.usage.total, 900);
        assert_eq!((m.cpu.usage.user, m.cpu.usage.kernel), (600, 300));
        assert_eq!(m.memory.usage.usage, 5 << 20);
        assert_eq!(m.memory.usage.limit, u64::MAX);
        assert_eq!(m.pids.current, 2);
    }
}
