//! `wasmbox run`: run a wasm file or an OCI runtime bundle in a sandbox, with the terminal's stdio.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use wasmbox_runtime::launch::Entry;
use wasmbox_runtime::{Allocator, ExitReason, GuestKind, Policy, ProtectedPath, Runtime, Stdio};

use super::options::{CacheOptions, SandboxOptions, ServeOptions};
use super::scratch::{private_dir, scratch_base};
use super::store::StoreOptions;
use super::target::{image_to_bundle, names_a_file, split_file_export};
use crate::umask::{DEFAULT_UMASK, set_umask};

/// Run a wasm module or component, or an OCI runtime bundle.
#[derive(Args, Debug)]
#[command(trailing_var_arg = true)]
pub struct RunCommand {
    /// An OCI runtime bundle directory (`config.json` + rootfs) to run instead of a file.
    #[arg(long, value_name = "DIR")]
    pub bundle: Option<PathBuf>,
    /// Run this program of the image or bundle instead of its entrypoint (its command is dropped
    /// unless arguments follow), as `docker run --entrypoint` does.
    #[arg(long, value_name = "PATH")]
    pub entrypoint: Option<String>,
    /// Grants and limits.
    #[command(flatten)]
    pub sandbox: SandboxOptions,
    /// Serving options (for HTTP components).
    #[command(flatten)]
    pub serve: ServeOptions,
    /// Cache options.
    #[command(flatten)]
    pub cache: CacheOptions,
    /// What to run: a wasm file (`FILE.wasm`, or `FILE.wasm#export` to call another export), an
    /// image in the store (`REF`), or an OCI layout (`oci:DIR`); with `--bundle`, the first guest
    /// argument.
    #[arg(value_name = "WASM", required_unless_present = "bundle")]
    pub wasm: Option<String>,
    /// Arguments passed to the guest (after its name).
    #[arg(value_name = "ARGS", allow_hyphen_values = true)]
    pub args: Vec<String>,
    /// Refuse anything but an HTTP component (`wasmbox serve`).
    #[arg(skip)]
    pub serve_only: bool,
}

impl RunCommand {
    /// Runs the guest to its end and returns the exit code.
    pub fn execute(self, store: &StoreOptions) -> Result<i32> {
        // The deadline covers loading and compiling too: it counts from here.
        let started = std::time::Instant::now();
        // Before any thread starts: the guest's filesystem is a mount tree in a namespace of ours.
        wasmbox_runtime::mounts::enter_namespace();
        // Still single-threaded: whatever this process starts from now on (the compile helper)
        // is started by the spawner, and no thread of it may exec a program.
        wasmbox_runtime::seccomp::lock_process(vec![wasmbox_runtime::compiler::spawnable()])
            .map_err(anyhow::Error::msg)?;
        crate::signals::start().context("starting the signal thread")?;
        // Traces, when an OTLP endpoint is set: the exporter's thread is no guest thread.
        wasmbox_runtime::trace::init().map_err(anyhow::Error::msg)?;
        let mut config = self.cache.settings().config()?;
        let scratch = scratch_base()?;
        config.scratch_dir = Some(private_dir(&scratch.join("private"))?);
        config.mount_tree = wasmbox_runtime::mounts::available();
        config
            .protected
            .push(ProtectedPath::new("image store", store.dir()));
        let mount_tree = config.mount_tree;
        // An image is turned into a bundle in a private directory removed after the run.
        let mut image_bundle = None;
        if let (None, Some(what)) = (&self.bundle, &self.wasm)
            && !names_a_file(what)
        {
            image_bundle = Some(image_to_bundle(store, what, &scratch)?);
        }
        let bundle_dir = self
            .bundle
            .clone()
            .or_else(|| image_bundle.as_ref().map(|t| t.path().to_path_buf()));
        let guest_first = if image_bundle.is_some() {
            self.args.first().cloned()
        } else {
            self.wasm.clone()
        };
        let guest_rest: Vec<String> = if image_bundle.is_some() {
            self.args.iter().skip(1).cloned().collect()
        } else {
            self.args.clone()
        };
        let mut umask = DEFAULT_UMASK;
        // The wasm is read before the engine is made: a server gets the pooling allocator.
        let (name, bytes, mut policy, kind) = match (&bundle_dir, &self.wasm) {
            (Some(dir), _) => {
                let wasm = bundle_entry(dir, self.entrypoint.as_deref())?;
                if let Some(m) = wasm
                    .bundle
                    .spec
                    .process()
                    .as_ref()
                    .and_then(|p| p.user().umask())
                {
                    umask = m & 0o777;
                }
                let name = format!("{}:{}", dir.display(), wasm.name());
                let wasmbox_runtime::launch::Wasm {
                    bundle,
                    bytes,
                    kind,
                } = wasm;
                let mut policy = bundle.policy;
                // Arguments after the bundle replace the spec's (as `docker run IMAGE CMD`).
                if let Some(first) = &guest_first {
                    policy.args.truncate(1);
                    policy.args.push(first.clone());
                    policy.args.extend(guest_rest.iter().cloned());
                }
                (name, bytes, policy, kind)
            }
            (None, Some(wasm)) => {
                let (path, export) = split_file_export(wasm);
                // Ambient authority, named: the file the user asked to run.
                let bytes =
                    std::fs::read(&path).map_err(|source| wasmbox_runtime::Error::ReadWasm {
                        path: path.clone(),
                        source,
                    })?;
                // argv[0] is the file's name, not its host path (as under `wasmtime run`): no
                // host path reaches the guest.
                let arg0 = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| path.display().to_string());
                let policy = Policy {
                    args: std::iter::once(arg0)
                        .chain(self.args.iter().cloned())
                        .collect(),
                    // No working directory unless `-w` gives one.
                    cwd: String::new(),
                    export,
                    ..Default::default()
                };
                let kind = wasmbox_runtime::shape::guest_kind(&bytes);
                (path.display().to_string(), bytes, policy, kind)
            }
            (None, None) => bail!("nothing to run: give a wasm file or --bundle DIR"),
        };
        if self.entrypoint.is_some() && bundle_dir.is_none() {
            bail!("--entrypoint applies to an image or a bundle, not to a wasm file");
        }
        if self.serve_only || kind == Some(GuestKind::HttpComponent) {
            // A fresh instance per request: slots reserved once, reused with copy-on-write images.
            config.allocator = Allocator::Pooling;
        }
        self.sandbox.apply(&mut policy)?;
        self.serve.apply(&mut policy);
        if !mount_tree && (!policy.dirs.is_empty() || !policy.scratch.is_empty()) {
            check_direct_grants_allowed()?;
        }
        config.deny_guest_sockets = !policy.net.reaches_network();
        let runtime = Runtime::new(config)?;
        let prepared = wasmbox_runtime::launch::prepare(&runtime, &name, &bytes, policy, started);
        drop(bytes);
        let mut prepared = match prepared {
            Err(wasmbox_runtime::Error::LoadDeadline { after, .. }) => {
                eprintln!("wasmbox: guest timed out after {after:?} while loading");
                return Ok(wasmbox_runtime::EXIT_TIMEOUT);
            }
            other => other?,
        };
        crate::signals::starting();
        // Bound here, off the guest threads (which may not open sockets).
        prepared.listen_with(std::net::TcpListener::bind)?;
        prepared.metrics_with(std::net::TcpListener::bind)?;
        let kind = prepared.kind();
        if self.serve_only && kind != GuestKind::HttpComponent {
            bail!(
                "{} is a {kind}, not an HTTP component (it exports no wasi:http/incoming-handler); run it with wasmbox run",
                prepared.name()
            );
        }
        set_umask(umask);
        let running = prepared
            .start(Stdio::inherit())
            .context("starting the guest")?;
        crate::signals::running(running.kill_handle());
        let status = running.wait();
        wasmbox_runtime::trace::shutdown();
        match &status.reason {
            ExitReason::Exited(_) | ExitReason::Signaled(_) => {}
            _ => eprintln!("wasmbox: guest {status}"),
        }
        Ok(status.code())
    }
}

/// The wasm entrypoint of the bundle at `dir` (or `entrypoint` in its rootfs), read and
/// classified once; a native one is refused.
fn bundle_entry(dir: &Path, entrypoint: Option<&str>) -> Result<wasmbox_runtime::launch::Wasm> {
    let path = dir.join("config.json");
    let bad = |reason: String| wasmbox_runtime::Error::Spec {
        path: path.clone(),
        reason,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| bad(e.to_string()))?;
    let mut spec = wasmbox_runtime::policy::parse_spec(&text).map_err(bad)?;
    if let Some(e) = entrypoint {
        let mut process = spec.process().clone().unwrap_or_default();
        process.set_args(Some(vec![e.to_string()]));
        spec.set_process(Some(process));
    }
    match crate::launch::classify(dir, spec)? {
        Entry::Wasm(w) => Ok(*w),
        Entry::Native => bail!(
            "{}: the entrypoint is a native program, not wasm; wasmbox runs wasm (runc runs \
             native containers)",
            dir.display()
        ),
    }
}

/// Environment variable that lets `wasmbox run` grant directories without a mount tree.
const NO_MOUNT_TREE_ENV: &str = "WASMBOX_NO_MOUNT_TREE";

/// Without a private mount namespace the kernel cannot keep device nodes shut or nested read-only
/// grants read-only, so directories are granted only when the user says so.
fn check_direct_grants_allowed() -> Result<()> {
    if std::env::var(NO_MOUNT_TREE_ENV).is_ok_and(|v| v == "1") {
        tracing::warn!(
            "granting directories without a mount tree: device nodes in them can be opened"
        );
        return Ok(());
    }
    let why = wasmbox_runtime::mounts::unavailable_reason()
        .unwrap_or_else(|| "no private mount namespace".into());
    bail!(
        "directories can only be granted inside a private mount namespace, and none could be \
         made ({why}); set {NO_MOUNT_TREE_ENV}=1 to grant them without the kernel's nodev and \
         read-only checks"
    )
}
