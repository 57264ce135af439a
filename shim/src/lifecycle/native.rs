//! Native containers (a pod's pause container, native sidecars), run by the system's `runc` on
//! behalf of the shim, so mixed pods work.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;

use super::error::{Result, ShimError};
use super::instance::{Ended, ExitFuture, Instance, Made, Stats};
use super::reaper;
use super::record::{self, Record};
use super::stdio::StdioPaths;

/// The runc binary: `$WASMBOX_RUNC`, else `runc` from PATH.
pub fn runc_binary() -> String {
    std::env::var("WASMBOX_RUNC").unwrap_or_else(|_| "runc".into())
}

/// The shim's own state directory (runc's roots live below it); no grant may reach it.
pub const STATE_DIR: &str = "/run/wasmbox";

/// runc's state root for a containerd namespace.
pub fn runc_root(namespace: &str) -> PathBuf {
    Path::new(STATE_DIR).join("runc").join(namespace)
}

/// One native container, driven through runc's command line.
#[derive(Debug, Clone)]
struct Native {
    /// runc's state root.
    pub root: PathBuf,
    /// Container id.
    pub id: String,
    /// Bundle directory.
    pub bundle: PathBuf,
}

impl Native {
    /// Runs `runc ARGS` with the given stdio and waits for it through the reaper. On failure the
    /// error carries runc's own message from its log.
    async fn run(&self, args: &[&str], stdio: Option<[std::fs::File; 3]>) -> Result<()> {
        let log = self.bundle.join("runc-log.json");
        let _ = std::fs::remove_file(&log);
        let mut args_os: Vec<std::ffi::OsString> = vec![
            "--root".into(),
            self.root.clone().into(),
            "--log".into(),
            log.clone().into(),
            "--log-format".into(),
            "json".into(),
        ];
        args_os.extend(args.iter().map(Into::into));
        let null = || {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
                .map_err(|e| ShimError::Internal(format!("open /dev/null: {e}")))
        };
        let [i, o, e] = match stdio {
            Some(files) => files,
            None => [null()?, null()?, null()?],
        };
        let what = format!("runc {}", args.first().copied().unwrap_or(""));
        let since = std::time::Instant::now();
        let pid = wasmbox_runtime::spawner::spawn(wasmbox_runtime::spawner::Spawn {
            program: runc_binary().into(),
            args: args_os,
            env: std::env::vars_os().collect(),
            cwd: Some(self.bundle.clone()),
            stdio: [i.into(), o.into(), e.into()],
            // Its own process group: signals meant for the shim's group never reach runc.
            own_group: true,
        })
        .map_err(|e| ShimError::Internal(format!("{what} {}: {e}", self.id)))?;
        let code = reaper::watch(pid as i32, since)
            .await
            .map_err(|_| ShimError::Internal(format!("{what} {}: exit lost", self.id)))?;
        if code != 0 {
            let msg = runc_error(&log).unwrap_or_else(|| format!("exit status {code}"));
            return Err(ShimError::Internal(format!("{what} {}: {msg}", self.id)));
        }
        Ok(())
    }

    /// `runc create`: the container's init is created, waiting to be started. Returns its pid.
    pub async fn create(&self, stdio: &StdioPaths) -> Result<u32> {
        std::fs::create_dir_all(&self.root)
            .map_err(|e| ShimError::Internal(format!("runc root {}: {e}", self.root.display())))?;
        let pid_file = self.bundle.join("init.pid");
        let bundle = self.bundle.to_string_lossy().into_owned();
        let pid_arg = pid_file.to_string_lossy().into_owned();
        self.run(
            &[
                "create",
                "--bundle",
                &bundle,
                "--pid-file",
                &pid_arg,
                &self.id,
            ],
            Some(stdio.open_native().await?),
        )
        .await?;
        match read_pid(&pid_file) {
            Ok(pid) => Ok(pid),
            Err(e) => {
                // runc made the container: it must not outlive a failed create.
                let _ = self.delete(true).await;
                Err(e)
            }
        }
    }

    /// `runc start`.
    pub async fn start(&self) -> Result<()> {
        self.run(&["start", &self.id], None).await
    }

    /// `runc kill [--all] ID SIGNAL`.
    pub async fn kill(&self, signal: u32, all: bool) -> Result<()> {
        let sig = signal.to_string();
        let mut args = vec!["kill"];
        if all {
            args.push("--all");
        }
        args.extend([self.id.as_str(), sig.as_str()]);
        self.run(&args, None).await
    }

    /// `runc pause` / `runc resume`.
    pub async fn pause(&self, pause: bool) -> Result<()> {
        let verb = if pause { "pause" } else { "resume" };
        self.run(&[verb, &self.id], None).await
    }

    /// `runc update --resources FILE` with the resources as OCI JSON.
    pub async fn update(&self, resources_json: &[u8]) -> Result<()> {
        let file = self.bundle.join("runc-update.json");
        std::fs::write(&file, resources_json)
            .map_err(|e| ShimError::Internal(format!("write {}: {e}", file.display())))?;
        let path = file.to_string_lossy().into_owned();
        let r = self
            .run(&["update", "--resources", &path, &self.id], None)
            .await;
        let _ = std::fs::remove_file(&file);
        r
    }

    /// `runc exec --detach`: starts another process in the container. Returns its pid.
    pub async fn exec(
        &self,
        exec_id: &str,
        process_json: &[u8],
        stdio: &StdioPaths,
    ) -> Result<u32> {
        let spec = self.bundle.join(format!("exec-{exec_id}.json"));
        let pid_file = self.bundle.join(format!("exec-{exec_id}.pid"));
        std::fs::write(&spec, process_json)
            .map_err(|e| ShimError::Internal(format!("write {}: {e}", spec.display())))?;
        let spec_arg = spec.to_string_lossy().into_owned();
        let pid_arg = pid_file.to_string_lossy().into_owned();
        let r = self
            .run(
                &[
                    "exec",
                    "--detach",
                    "--process",
                    &spec_arg,
                    "--pid-file",
                    &pid_arg,
                    &self.id,
                ],
                Some(stdio.open_native().await?),
            )
            .await;
        let _ = std::fs::remove_file(&spec);
        r?;
        let pid = read_pid(&pid_file);
        let _ = std::fs::remove_file(&pid_file);
        pid
    }

    /// `runc delete [--force]`.
    pub async fn delete(&self, force: bool) -> Result<()> {
        let mut args = vec!["delete"];
        if force {
            args.push("--force");
        }
        args.push(&self.id);
        self.run(&args, None).await
    }
}

fn read_pid(path: &Path) -> Result<u32> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| ShimError::Internal(format!("runc wrote no pid to {}", path.display())))
}

/// The last error runc logged.
fn runc_error(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["level"] == "error")
        .and_then(|v| v["msg"].as_str().map(str::to_string))
}

/// Sends `signal` to a native process by pid (exec'd processes).
#[allow(unsafe_code, reason = "kill(2) on a pid the reaper tracks")]
fn signal_pid(pid: u32, signal: u32) -> Result<()> {
    // 0 and anything past i32 would name a process group, or every process.
    if pid == 0 || pid > i32::MAX as u32 {
        return Err(ShimError::Internal(format!(
            "no process to signal (pid {pid})"
        )));
    }
    // SAFETY: kill has no memory effects.
    if unsafe { libc::kill(pid as i32, signal as i32) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(if e.raw_os_error() == Some(libc::ESRCH) {
            ShimError::NotFound(format!("process {pid}"))
        } else {
            ShimError::Internal(format!("kill {pid}: {e}"))
        });
    }
    Ok(())
}

/// Resolves with `pid`'s end, through the reaper. `since` is a moment before it was started.
fn exit_of(pid: u32, since: std::time::Instant) -> ExitFuture {
    let rx = reaper::watch(pid as i32, since);
    Box::pin(async move {
        Some(Ended {
            // An exit the reaper lost is reported as 255, as runc's shim does.
            code: rx.await.unwrap_or(255) as u32,
            oom: false,
        })
    })
}

/// An added process not started yet.
struct Pending {
    /// Its OCI process JSON (runc starts an added process at once, so it is handed over at
    /// start).
    process: Vec<u8>,
    /// Ends it if it is killed before it starts.
    exit: tokio::sync::oneshot::Sender<Ended>,
}

/// A native container: runc runs its init and its added processes.
pub struct NativeInstance {
    runc: Native,
    /// Added processes not started yet.
    pending: HashMap<String, Pending>,
}

impl NativeInstance {
    /// `runc create` for the container in `bundle`. `record` is written first with what
    /// [`recover`] needs should this shim die from here on.
    pub async fn create(
        namespace: &str,
        id: &str,
        bundle: &Path,
        stdio: &StdioPaths,
        record: &record::RecordFile,
    ) -> Result<(Self, Made)> {
        let this = Self {
            runc: Native {
                root: runc_root(namespace),
                id: id.to_string(),
                bundle: bundle.to_path_buf(),
            },
            pending: HashMap::new(),
        };
        record
            .update(|r| this.describe(r))
            .map_err(|e| ShimError::Internal(format!("save state in {}: {e}", bundle.display())))?;
        let since = std::time::Instant::now();
        let pid = this.runc.create(stdio).await?;
        tracing::info!(id, pid, "created native container with runc");
        Ok((
            this,
            Made {
                pid,
                exit: Some(exit_of(pid, since)),
            },
        ))
    }
}

#[async_trait]
impl Instance for NativeInstance {
    fn describe(&self, record: &mut Record) {
        record.kind = record::Kind::Native;
        record.runc_root = Some(self.runc.root.clone());
    }

    async fn start(&mut self, exec_id: &str, pid: u32, stdio: &StdioPaths) -> Result<Made> {
        if exec_id.is_empty() {
            self.runc.start().await?;
            return Ok(Made { pid, exit: None });
        }
        let pending = self.pending.get(exec_id).ok_or_else(|| {
            ShimError::NotFound(format!("process {exec_id} in container {}", self.runc.id))
        })?;
        let since = std::time::Instant::now();
        // On failure the process stays created: it may be started again, or killed.
        let pid = self.runc.exec(exec_id, &pending.process, stdio).await?;
        // Its end is now the real process's.
        self.pending.remove(exec_id);
        Ok(Made {
            pid,
            exit: Some(exit_of(pid, since)),
        })
    }

    async fn kill(&mut self, exec_id: &str, pid: u32, signal: u32, all: bool) -> Result<()> {
        if exec_id.is_empty() {
            return self.runc.kill(signal, all).await;
        }
        // Never started: there is no process to signal, and it ends now.
        if let Some(p) = self.pending.remove(exec_id) {
            let _ = p.exit.send(Ended {
                code: 128 + signal,
                oom: false,
            });
            return Ok(());
        }
        signal_pid(pid, signal)
    }

    async fn exec(&mut self, exec_id: &str, process: &[u8], _stdio: &StdioPaths) -> Result<Made> {
        // Its end resolves if it is killed before it starts; dropped (nothing) once it starts.
        let (made, exit) = Made::promised(0);
        self.pending.insert(
            exec_id.to_string(),
            Pending {
                process: process.to_vec(),
                exit,
            },
        );
        Ok(made)
    }

    fn remove_exec(&mut self, exec_id: &str) {
        self.pending.remove(exec_id);
    }

    async fn pause(&mut self) -> Result<()> {
        self.runc.pause(true).await
    }

    async fn resume(&mut self) -> Result<()> {
        self.runc.pause(false).await
    }

    async fn update(&mut self, resources: &[u8]) -> Result<()> {
        self.runc.update(resources).await
    }

    fn stats(&self) -> Result<Stats> {
        Err(ShimError::Unimplemented(format!(
            "container {} is native (run by runc); wasmbox reports stats of wasm containers only",
            self.runc.id
        )))
    }

    async fn delete(&mut self) -> Result<()> {
        self.runc.delete(true).await
    }
}

/// Removes runc's container `rec` names, after the shim that ran it died (`runc delete --force`).
pub(super) async fn delete_left(rec: &Record, bundle: &Path, namespace: &str) -> Result<()> {
    reaper::start()
        .await
        .map_err(|e| ShimError::Internal(format!("reaper: {e}")))?;
    let n = Native {
        root: rec
            .runc_root
            .clone()
            .unwrap_or_else(|| runc_root(namespace)),
        id: rec.id.clone(),
        bundle: bundle.to_path_buf(),
    };
    if let Err(e) = n.delete(true).await {
        tracing::warn!(id = rec.id, error = %e, "runc delete after the shim died");
    }
    Ok(())
}
