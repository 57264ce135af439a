//! Wasm containers: each process is a guest inside this process, prepared at create (compiled,
//! linked, its mount tree built and its listener bound) and started by start.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use oci_spec::runtime::{LinuxResources, Process, Spec};
use tokio::sync::oneshot;
use wasmbox_runtime::launch::{Entry, Wasm};
use wasmbox_runtime::{ExitReason, KillHandle, Prepared, Running, Runtime};

use super::error::{Result, ShimError, chain};
use super::instance::{Ended, Instance, Made, Stats};
use super::record::{self, Record};
use super::stdio::StdioPaths;

/// One process's guest.
enum Body {
    /// Linked and waiting to start, with its opened stdio.
    Created(Box<Prepared>, wasmbox_runtime::Stdio),
    /// Started (it may have ended since).
    Running(Arc<Running>),
    /// Killed before it started.
    Done,
}

struct Guest {
    body: Body,
    /// Reports its end; taken when it starts (its waiter reports then) or is killed unstarted.
    exit: Option<oneshot::Sender<Ended>>,
}

impl Guest {
    fn new(prepared: Prepared, io: wasmbox_runtime::Stdio) -> (Self, Made) {
        let (made, tx) = Made::promised(std::process::id());
        let guest = Self {
            body: Body::Created(Box::new(prepared), io),
            exit: Some(tx),
        };
        (guest, made)
    }

    /// The guest, while it runs.
    fn running(&self) -> Option<&Arc<Running>> {
        match &self.body {
            Body::Running(r) if r.try_status().is_none() => Some(r),
            _ => None,
        }
    }
}

/// The started added processes of a container, which end with its init (as a pid namespace's
/// processes end with its pid 1).
type ExecKills = Arc<std::sync::Mutex<HashMap<String, KillHandle>>>;

/// A wasm container: its spec (kept for exec) and its guests by exec id ("" for init).
pub struct WasmInstance {
    id: String,
    runtime: Runtime,
    bundle: PathBuf,
    spec: Box<Spec>,
    guests: HashMap<String, Guest>,
    execs: ExecKills,
}

impl WasmInstance {
    /// Prepares the container's init guest from its classified entrypoint: compiled within its
    /// deadline, linked, its HTTP listener (if it serves) bound, its stdio opened.
    pub async fn create(
        id: &str,
        runtime: Runtime,
        wasm: Box<Wasm>,
        stdio: &StdioPaths,
    ) -> Result<(Self, Made)> {
        super::netns::check_same(&wasm.bundle.spec)?;
        let (mut prepared, wasm) = prepare_off_executor(&runtime, wasm).await?;
        // An HTTP component's address is bound now: a taken one fails create.
        let own = super::netns::server_needs_own_namespace(&wasm.bundle.spec);
        // Its metrics endpoint, in a namespace of its own, is bound in the same one.
        let metrics_addr = prepared.policy().serve.metrics_addr;
        let mut own_metrics = None;
        prepared
            .listen_with(|addr| {
                if own {
                    let (listener, metrics) =
                        super::netns::bind_in_new_namespace(addr, metrics_addr)?;
                    own_metrics = metrics;
                    Ok(listener)
                } else {
                    std::net::TcpListener::bind(addr)
                }
            })
            .map_err(|e| ShimError::InvalidArgument(chain(&e)))?;
        let endpoint = match own_metrics {
            Some(l) => super::metrics::Endpoint::Own(l),
            None => super::metrics::Endpoint::Shared,
        };
        super::metrics::count(&mut prepared, id, &wasm.bundle.spec, endpoint)?;
        let io = stdio.open_wasm().await?;
        let (guest, made) = Guest::new(prepared, io);
        tracing::info!(id, entry = %wasm.name(), "created wasm container");
        let Wasm { bundle, .. } = *wasm;
        Ok((
            Self {
                id: id.to_string(),
                runtime,
                bundle: bundle.dir,
                spec: Box::new(bundle.spec),
                guests: HashMap::from([(String::new(), guest)]),
                execs: ExecKills::default(),
            },
            made,
        ))
    }

    fn guest(&mut self, exec_id: &str) -> Result<&mut Guest> {
        let id = &self.id;
        self.guests
            .get_mut(exec_id)
            .ok_or_else(|| ShimError::NotFound(format!("process {exec_id} in container {id}")))
    }
}

#[async_trait]
impl Instance for WasmInstance {
    fn describe(&self, record: &mut Record) {
        record.kind = record::Kind::Wasm;
        record.runc_root = None;
    }

    async fn start(&mut self, exec_id: &str, pid: u32, _stdio: &StdioPaths) -> Result<Made> {
        let id = self.id.clone();
        let guest = self.guest(exec_id)?;
        let Body::Created(prepared, io) = std::mem::replace(&mut guest.body, Body::Done) else {
            return Err(ShimError::FailedPrecondition(format!(
                "container {id} cannot be started"
            )));
        };
        // On failure it stays Done with its end still to tell: a kill ends it.
        let running = Arc::new(
            prepared
                .start(io)
                .map_err(|e| ShimError::Internal(chain(&e)))?,
        );
        guest.body = Body::Running(running.clone());
        // The set-up's garbage (spec, bundle, mount tree, loading) goes back to the kernel, off
        // the request's path.
        tokio::task::spawn_blocking(wasmbox_runtime::trim_heap);
        let tx = guest.exit.take();
        let execs = self.execs.clone();
        if !exec_id.is_empty() {
            execs
                .lock()
                .expect("exec kills")
                .insert(exec_id.to_string(), running.kill_handle());
        }
        let exec_id = exec_id.to_string();
        tokio::spawn(async move {
            let st = running.wait_async().await;
            if exec_id.is_empty() {
                // The container's end is its added processes' too.
                for k in execs.lock().expect("exec kills").values() {
                    k.kill(libc::SIGKILL);
                }
            } else {
                execs.lock().expect("exec kills").remove(&exec_id);
            }
            if !matches!(st.reason, ExitReason::Exited(_) | ExitReason::Signaled(_)) {
                tracing::info!(id, exec_id, status = %st, "guest ended");
            }
            if let Some(tx) = tx {
                let _ = tx.send(Ended {
                    code: st.code() as u32,
                    oom: matches!(st.reason, ExitReason::MemoryLimit(_)),
                });
            }
        });
        // Its end was promised when it was made.
        Ok(Made { pid, exit: None })
    }

    async fn kill(&mut self, exec_id: &str, _pid: u32, signal: u32, all: bool) -> Result<()> {
        self.guest(exec_id)?;
        let targets: Vec<&mut Guest> = if all && exec_id.is_empty() {
            self.guests.values_mut().collect()
        } else {
            self.guests.get_mut(exec_id).into_iter().collect()
        };
        for g in targets {
            match &g.body {
                Body::Running(r) => {
                    r.kill_handle().kill(signal as i32);
                }
                // Never started (or its start failed): it ends now, as runc's created
                // processes do.
                Body::Created(..) | Body::Done => {
                    g.body = Body::Done;
                    if let Some(tx) = g.exit.take() {
                        let _ = tx.send(Ended {
                            code: 128 + signal,
                            oom: false,
                        });
                    }
                }
            }
        }
        Ok(())
    }

    async fn exec(&mut self, exec_id: &str, process: &[u8], stdio: &StdioPaths) -> Result<Made> {
        let process: Process = serde_json::from_slice(process)
            .map_err(|e| ShimError::InvalidArgument(format!("exec process spec: {e}")))?;
        let mut spec = (*self.spec).clone();
        spec.set_process(Some(process));
        let entry = crate::launch::classify(&self.bundle, spec.clone())
            .map_err(|e| ShimError::InvalidArgument(chain(&e)))?;
        let w = match entry {
            Entry::Wasm(w) => w,
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
        let (mut prepared, _) = prepare_off_executor(&self.runtime, w).await?;
        // The container's current memory limit (it may have been updated).
        if let Some(init) = self.guests.get("").and_then(Guest::running) {
            prepared.set_memory_limit(init.usage().memory_limit);
        }
        let io = stdio.open_wasm().await?;
        let (guest, made) = Guest::new(prepared, io);
        self.guests.insert(exec_id.to_string(), guest);
        Ok(made)
    }

    fn remove_exec(&mut self, exec_id: &str) {
        self.guests.remove(exec_id);
        self.execs.lock().expect("exec kills").remove(exec_id);
    }

    async fn pause(&mut self) -> Result<()> {
        for g in self.guests.values().filter_map(Guest::running) {
            g.pause();
        }
        Ok(())
    }

    async fn resume(&mut self) -> Result<()> {
        for g in self.guests.values().filter_map(Guest::running) {
            g.resume();
        }
        Ok(())
    }

    async fn update(&mut self, resources: &[u8]) -> Result<()> {
        let res: LinuxResources = serde_json::from_slice(resources)
            .map_err(|e| ShimError::InvalidArgument(format!("update resources: {e}")))?;
        let Some(limit) = res.memory().as_ref().and_then(|m| m.limit()) else {
            return Ok(());
        };
        let limit = (limit > 0).then_some(limit as u64);
        for g in self.guests.values_mut() {
            match &mut g.body {
                Body::Running(r) => r.set_memory_limit(limit),
                // Applies from its start.
                Body::Created(p, _) => p.set_memory_limit(limit),
                Body::Done => {}
            }
        }
        tracing::info!(id = self.id, ?limit, "memory limit updated");
        Ok(())
    }

    fn stats(&self) -> Result<Stats> {
        let mut s = Stats::default();
        for g in self.guests.values().filter_map(Guest::running) {
            let u = g.usage();
            s.memory += u.memory;
            s.memory_limit = s.memory_limit.max(u.memory_limit);
            s.cpu_ns += u.cpu.as_nanos() as u64;
            s.cpu_system_ns += u.cpu_system.as_nanos() as u64;
            s.processes += 1;
        }
        Ok(s)
    }

    async fn delete(&mut self) -> Result<()> {
        // A created, never started guest releases its stdio now.
        self.guests.clear();
        Ok(())
    }
}

/// Loads, links and builds the mount tree of a wasm entrypoint within its deadline
/// (`launch::prepare`), on the blocking pool, so one container's long compile never holds an
/// executor thread other containers' requests need. Gives the entrypoint back, without its bytes.
async fn prepare_off_executor(runtime: &Runtime, wasm: Box<Wasm>) -> Result<(Prepared, Box<Wasm>)> {
    let rt = runtime.clone();
    let since = std::time::Instant::now();
    let (prepared, mut wasm) =
        tokio::task::spawn_blocking(move || (wasm.prepare(&rt, since), wasm))
            .await
            .map_err(|e| ShimError::Internal(format!("preparing the guest: {e}")))?;
    wasm.bytes = Vec::new();
    let prepared = prepared.map_err(|e| ShimError::InvalidArgument(chain(&e)))?;
    Ok((prepared, wasm))
}
