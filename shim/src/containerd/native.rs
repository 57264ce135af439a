//! Native containers (a pod's pause container, native sidecars), run by the system's `runc` on
//! behalf of the shim, so mixed pods work.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::error::{Result, ShimError};
use super::reaper;
use super::stdio::StdioPaths;

/// The runc binary: `$WASMBOX_RUNC`, else `runc` from PATH.
fn runc_binary() -> String {
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
pub struct Native {
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
        let mut cmd = Command::new(runc_binary());
        cmd.arg("--root")
            .arg(&self.root)
            .arg("--log")
            .arg(&log)
            .arg("--log-format")
            .arg("json")
            .args(args)
            .current_dir(&self.bundle);
        match stdio {
            Some([i, o, e]) => {
                cmd.stdin(i).stdout(o).stderr(e);
            }
            None => {
                cmd.stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null());
            }
        }
        // Its own process group: signals meant for the shim's group never reach runc.
        cmd.process_group(0);
        let what = format!("runc {}", args.first().copied().unwrap_or(""));
        let since = std::time::Instant::now();
        let child = cmd
            .spawn()
            .map_err(|e| ShimError::Internal(format!("{what} {}: {e}", self.id)))?;
        let code = reaper::watch(child.id() as i32, since)
            .await
            .map_err(|_| ShimError::Internal(format!("{what} {}: exit lost", self.id)))?;
        drop(child);
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
        read_pid(&pid_file)
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
pub fn signal_pid(pid: u32, signal: u32) -> Result<()> {
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
