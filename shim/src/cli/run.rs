//! `wasmbox run`: run a wasm file or an OCI runtime bundle in a sandbox, with the terminal's stdio.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use wasmbox_runtime::{Bundle, ExitReason, Policy, Runtime, Stdio};

use super::options::{CacheOptions, SandboxOptions};

/// Run a wasm module or component, or an OCI runtime bundle.
#[derive(Args, Debug)]
#[command(trailing_var_arg = true)]
pub struct RunCommand {
    /// An OCI runtime bundle directory (`config.json` + rootfs) to run instead of a file.
    #[arg(long, value_name = "DIR")]
    pub bundle: Option<PathBuf>,
    /// Grants and limits.
    #[command(flatten)]
    pub sandbox: SandboxOptions,
    /// Cache options.
    #[command(flatten)]
    pub cache: CacheOptions,
    /// The wasm file (`FILE.wasm`, or `FILE.wasm#export` to call another export); with
    /// `--bundle`, the first guest argument.
    #[arg(value_name = "WASM", required_unless_present = "bundle")]
    pub wasm: Option<String>,
    /// Arguments passed to the guest (after its name).
    #[arg(value_name = "ARGS", allow_hyphen_values = true)]
    pub args: Vec<String>,
}

impl RunCommand {
    /// Runs the guest to its end and returns the exit code.
    pub fn execute(self) -> Result<i32> {
        let runtime = Runtime::new(self.cache.runtime_config())?;
        let (program, mut policy) = match (&self.bundle, &self.wasm) {
            (Some(dir), first) => {
                let bundle = Bundle::load(dir)?;
                let bytes = bundle.read_entry()?;
                let name = format!("{}:/{}", dir.display(), bundle.entry.display());
                let (program, _) = runtime.load(&name, &bytes)?;
                let mut policy = bundle.policy;
                // Arguments after the bundle replace the spec's (as `docker run IMAGE CMD`).
                if let Some(first) = first {
                    policy.args.truncate(1);
                    policy.args.push(first.clone());
                    policy.args.extend(self.args.iter().cloned());
                }
                (program, policy)
            }
            (None, Some(wasm)) => {
                let (path, export) = split_file_export(wasm);
                let (program, _) = runtime.load_file(&path)?;
                let policy = Policy {
                    args: std::iter::once(path.display().to_string())
                        .chain(self.args.iter().cloned())
                        .collect(),
                    cwd: "/".into(),
                    export,
                    ..Default::default()
                };
                (program, policy)
            }
            (None, None) => bail!("nothing to run: give a wasm file or --bundle DIR"),
        };
        self.sandbox.apply(&mut policy)?;
        let prepared = runtime.prepare(&program, policy)?;
        let running = prepared
            .start(Stdio::inherit())
            .context("starting the guest")?;
        let kill = running.kill_handle();
        runtime.handle().spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut int), Ok(mut term)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) else {
                return;
            };
            let sig = tokio::select! {
                _ = int.recv() => libc::SIGINT,
                _ = term.recv() => libc::SIGTERM,
            };
            kill.kill(sig);
        });
        let status = running.wait();
        match &status.reason {
            ExitReason::Exited(_) | ExitReason::Signaled(_) => {}
            _ => eprintln!("wasmbox: guest {status}"),
        }
        Ok(status.code())
    }
}

/// `file.wasm#export` → (`file.wasm`, `export`), unless a file with the whole name exists.
fn split_file_export(arg: &str) -> (PathBuf, Option<String>) {
    if Path::new(arg).exists() {
        return (PathBuf::from(arg), None);
    }
    let (p, e) = Policy::split_export(arg);
    (PathBuf::from(p), e.map(str::to_string))
}
