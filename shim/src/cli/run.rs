//! `wasmbox run`: run a wasm file or an OCI runtime bundle in a sandbox, with the terminal's stdio.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use wasmbox_runtime::{
    Allocator, Bundle, ExitReason, GuestKind, Policy, ProtectedPath, Runtime, Stdio,
};

use super::images::{StoreOptions, local_name};
use super::options::{CacheOptions, SandboxOptions, ServeOptions};

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
        // Before any thread starts: the guest's filesystem is a mount tree in a namespace of ours.
        wasmbox_runtime::mounts::enter_namespace();
        // Still single-threaded: whatever this process starts from now on (the compile helper)
        // is started by the spawner, and no thread of it may exec a program.
        wasmbox_runtime::seccomp::lock_process(vec![wasmbox_runtime::compiler::spawnable()])
            .map_err(anyhow::Error::msg)?;
        super::signals::start().context("starting the signal thread")?;
        // The deadline covers loading and compiling too: a watchdog ends a run still loading.
        let started = std::time::Instant::now();
        if let Some(t) = self.sandbox.timeout {
            std::thread::Builder::new()
                .name("wasmbox-deadline".into())
                .spawn(move || {
                    std::thread::sleep(t);
                    super::signals::end_loading(
                        wasmbox_runtime::EXIT_TIMEOUT,
                        &format!("guest timed out after {t:?} while loading"),
                    );
                })
                .context("starting the deadline watchdog")?;
        }
        let mut config = self.cache.runtime_config();
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
        let (name, bytes, mut policy) = match (&bundle_dir, &self.wasm) {
            (Some(dir), _) => {
                let first = &guest_first;
                let bundle = Bundle::load(dir)?;
                if let Some(m) = bundle
                    .spec
                    .process()
                    .as_ref()
                    .and_then(|p| p.user().umask())
                {
                    umask = m & 0o777;
                }
                let bytes = bundle.read_entry()?;
                let name = format!("{}:/{}", dir.display(), bundle.entry.display());
                let mut policy = bundle.policy;
                // Arguments after the bundle replace the spec's (as `docker run IMAGE CMD`).
                if let Some(first) = first {
                    policy.args.truncate(1);
                    policy.args.push(first.clone());
                    policy.args.extend(guest_rest.iter().cloned());
                }
                (name, bytes, policy)
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
                (path.display().to_string(), bytes, policy)
            }
            (None, None) => bail!("nothing to run: give a wasm file or --bundle DIR"),
        };
        if self.serve_only
            || wasmbox_runtime::shape::guest_kind(&bytes) == Some(GuestKind::HttpComponent)
        {
            // A fresh instance per request: slots reserved once, reused with copy-on-write images.
            config.allocator = Allocator::Pooling;
        }
        self.sandbox.apply(&mut policy)?;
        self.serve.apply(&mut policy);
        config.deny_guest_sockets = !policy.net.reaches_network();
        let runtime = Runtime::new(config)?;
        let (program, _) = runtime.load(&name, &bytes)?;
        drop(bytes);
        if !mount_tree && (!policy.dirs.is_empty() || !policy.scratch.is_empty()) {
            check_direct_grants_allowed()?;
        }
        if let Some(t) = self.sandbox.timeout {
            // What is left of the deadline after loading is the guest's.
            let left = t.saturating_sub(started.elapsed());
            if left.is_zero() {
                eprintln!("wasmbox: guest timed out after {t:?} while loading");
                return Ok(wasmbox_runtime::EXIT_TIMEOUT);
            }
            policy.limits.timeout = Some(left);
        }
        super::signals::starting();
        let mut prepared = runtime.prepare(&program, policy)?;
        // Bound here, off the guest threads (which may not open sockets).
        prepared.listen_with(std::net::TcpListener::bind)?;
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
        super::signals::running(running.kill_handle());
        let status = running.wait();
        match &status.reason {
            ExitReason::Exited(_) | ExitReason::Signaled(_) => {}
            _ => eprintln!("wasmbox: guest {status}"),
        }
        Ok(status.code())
    }
}

/// Where `wasmbox run` keeps its private directories: `$WASMBOX_SCRATCH_DIR`, else
/// `/run/wasmbox/run` for root, else `$XDG_RUNTIME_DIR/wasmbox` or `~/.cache/wasmbox-run`. Never
/// the shared temp dir, which users grant (`-v /tmp:/tmp`) and other processes share.
pub(crate) fn scratch_base() -> Result<PathBuf> {
    let base = std::env::var_os("WASMBOX_SCRATCH_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            rustix::process::geteuid()
                .is_root()
                .then(|| "/run/wasmbox/run".into())
        })
        .or_else(|| {
            std::env::var_os("XDG_RUNTIME_DIR")
                .filter(|v| !v.is_empty())
                .map(|d| PathBuf::from(d).join("wasmbox"))
        })
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/wasmbox-run")))
        .context("no private directory: set WASMBOX_SCRATCH_DIR")?;
    private_dir(&base)
}

/// Creates `dir` (and its parents) if needed, mode 0700.
pub(crate) fn private_dir(dir: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating the private directory {}", dir.display()))?;
    Ok(dir.to_path_buf())
}

/// The umask files a guest creates get when the spec names none.
pub const DEFAULT_UMASK: u32 = 0o022;

/// Sets the process's umask, which the files a guest creates in its grants get.
#[allow(unsafe_code, reason = "umask(2) cannot fail and touches no memory")]
pub fn set_umask(mask: u32) {
    // SAFETY: umask only swaps the process's file mode mask.
    unsafe {
        libc::umask(mask as libc::mode_t);
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
    let why = match wasmbox_runtime::mounts::namespace() {
        Some(wasmbox_runtime::mounts::Namespace::Unavailable(r)) => r.clone(),
        _ => "no private mount namespace".into(),
    };
    bail!(
        "directories can only be granted inside a private mount namespace, and none could be \
         made ({why}); set {NO_MOUNT_TREE_ENV}=1 to grant them without the kernel's nodev and \
         read-only checks"
    )
}

/// True when `what` is meant as a file: it exists, or it is written as a path or a wasm file name
/// (`/…`, `./…`, `../…`, `*.wasm`, `*.wat`, `*.cwasm`, optionally with `#export`).
pub(crate) fn names_a_file(what: &str) -> bool {
    let (path, _) = split_file_export(what);
    let p = path.to_string_lossy();
    path.exists()
        || p.starts_with('/')
        || p.starts_with("./")
        || p.starts_with("../")
        || [".wasm", ".wat", ".cwasm"].iter().any(|e| p.ends_with(e))
}

/// Finds the image (loading an `oci:DIR` layout first) and writes its bundle to a temp dir.
fn image_to_bundle(opts: &StoreOptions, what: &str, scratch: &Path) -> Result<tempfile::TempDir> {
    let store = opts.open()?;
    let name = if let Some(dir) = what.strip_prefix("oci:") {
        let names = wasmbox_images::archive::load(&store, Path::new(dir), None)?;
        names
            .into_iter()
            .next()
            .with_context(|| format!("{dir} holds no image"))?
    } else {
        let name = local_name(&store, what)
            .with_context(|| format!("{what:?} is neither a file nor an image reference"))?;
        if store.resolve(&name).is_err() {
            opts.pull(&store, &name)?;
        }
        name
    };
    let image = wasmbox_images::Image::open(&store, &name)?;
    let bundles = private_dir(&scratch.join("bundles"))?;
    wasmbox_runtime::sweep_stale(&bundles);
    let dir = tempfile::Builder::new()
        .prefix(&wasmbox_runtime::scratch_prefix("wasmbox-run-"))
        .tempdir_in(&bundles)
        .context("creating a bundle directory")?;
    super::signals::remove_on_signal(dir.path().to_path_buf());
    image.write_bundle(&store, dir.path(), &mut Default::default())?;
    Ok(dir)
}

/// `file.wasm#export` → (`file.wasm`, `export`), unless a file with the whole name exists.
fn split_file_export(arg: &str) -> (PathBuf, Option<String>) {
    if Path::new(arg).exists() {
        return (PathBuf::from(arg), None);
    }
    let (p, e) = Policy::split_export(arg);
    (PathBuf::from(p), e.map(str::to_string))
}
