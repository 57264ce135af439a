//! A pod's sandbox without a pause process.
//!
//! A pod sandbox's "pause" container holds the namespaces the pod's containers share and does
//! nothing else. A wasmbox pod's shim is a process of the pod already: it joins the pod's network
//! namespace before it starts a thread, and here it also makes the pod's new IPC and UTS
//! namespaces (with the pod's hostname), which the pod's native containers join through the
//! sandbox's pid (the shim's: `/proc/PID/ns/ipc`, `/proc/PID/ns/uts`). So the sandbox costs no
//! runc call, no process and no rootfs mount: it is created, started and killed in the shim, and
//! ends as pause does (0 on SIGTERM or SIGINT, 128+signal otherwise).
//!
//! The one thing the shim cannot hold is a pod PID namespace (`shareProcessNamespace`): a native
//! container asking to join the sandbox's would join the host's, so it is refused. Operators who
//! want runc's pause anyway set `WASMBOX_SANDBOX=runc` in containerd's environment.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::OnceLock;

use async_trait::async_trait;
use oci_spec::runtime::{LinuxNamespaceType, Spec};
use tokio::sync::oneshot;

use super::error::{Result, ShimError};
use super::instance::{Ended, Instance, Made, Stats};
use super::record::{self, Record};
use super::stdio::StdioPaths;

/// The annotation CRI sets on every container: `sandbox` for a pod's pause container.
const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
/// `WASMBOX_SANDBOX=runc` keeps runc's pause container for pod sandboxes.
pub const SANDBOX_ENV: &str = "WASMBOX_SANDBOX";

/// Set when this process made a sandbox's namespaces at start (so it can be the sandbox).
static ENTERED: OnceLock<bool> = OnceLock::new();

/// Whether a spec is a CRI pod sandbox's (its pause container).
pub fn is_sandbox(spec: &Spec) -> bool {
    spec.annotations()
        .as_ref()
        .and_then(|a| a.get(CONTAINER_TYPE))
        .is_some_and(|t| t == "sandbox")
}

/// Whether this process is the sandbox of `spec`'s pod instead of a pause container.
pub fn runs_here(spec: &Spec) -> bool {
    is_sandbox(spec) && ENTERED.get() == Some(&true)
}

/// Makes the new namespaces a pod sandbox's `spec` asks its pause container for (IPC, and UTS
/// with the pod's hostname), unless `WASMBOX_SANDBOX=runc`. Must run before the process starts
/// any thread: `unshare` moves only the calling thread.
#[allow(
    unsafe_code,
    reason = "unshare(2) and sethostname(2); no memory is shared"
)]
pub fn enter(spec: &Spec) -> std::result::Result<(), String> {
    if !is_sandbox(spec) || std::env::var(SANDBOX_ENV).is_ok_and(|v| v == "runc") {
        let _ = ENTERED.set(false);
        return Ok(());
    }
    let fresh = |t: LinuxNamespaceType| {
        spec.linux()
            .as_ref()
            .and_then(|l| l.namespaces().as_ref())
            .is_some_and(|ns| ns.iter().any(|n| n.typ() == t && n.path().is_none()))
    };
    let mut flags = 0;
    if fresh(LinuxNamespaceType::Ipc) {
        flags |= libc::CLONE_NEWIPC;
    }
    let uts = fresh(LinuxNamespaceType::Uts);
    if uts {
        flags |= libc::CLONE_NEWUTS;
    }
    // SAFETY: unshare has no memory effects.
    if flags != 0 && unsafe { libc::unshare(flags) } != 0 {
        return Err(format!(
            "make the pod's namespaces: {}",
            std::io::Error::last_os_error()
        ));
    }
    if uts && let Some(name) = spec.hostname().as_deref().filter(|h| !h.is_empty()) {
        // SAFETY: the pointer and length name `name`'s bytes, which outlive the call.
        if unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) } != 0 {
            return Err(format!(
                "set the pod's hostname {name:?}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    let _ = ENTERED.set(true);
    Ok(())
}

/// Refuses a native container that would join this process's PID namespace (the host's) as its
/// pod's: `shareProcessNamespace` with a sandbox held by wasmbox.
pub fn check_native(spec: &Spec) -> Result<()> {
    let Some(path) = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .and_then(|ns| ns.iter().find(|n| n.typ() == LinuxNamespaceType::Pid))
        .and_then(|n| n.path().clone())
    else {
        return Ok(());
    };
    let id = |p: &Path| std::fs::metadata(p).map(|m| (m.dev(), m.ino())).ok();
    if ENTERED.get() == Some(&true)
        && id(&path).is_some()
        && id(&path) == id(Path::new("/proc/self/ns/pid"))
    {
        return Err(ShimError::InvalidArgument(format!(
            "this pod's sandbox is held by wasmbox, which has no PID namespace of the pod's to \
             share ({}): a native container cannot use shareProcessNamespace here (set {SANDBOX_ENV}=runc \
             in containerd's environment for runc's pause container)",
            path.display()
        )));
    }
    Ok(())
}

/// The sandbox as a process: this one. It ends when killed.
pub struct SandboxInstance {
    exit: Option<oneshot::Sender<Ended>>,
}

impl SandboxInstance {
    /// The sandbox, made; its end comes with its kill.
    pub fn create() -> (Self, Made) {
        let (made, tx) = Made::promised(std::process::id());
        (Self { exit: Some(tx) }, made)
    }
}

#[async_trait]
impl Instance for SandboxInstance {
    fn describe(&self, record: &mut Record) {
        record.kind = record::Kind::Sandbox;
        record.runc_root = None;
    }

    async fn start(&mut self, _exec_id: &str, pid: u32, _stdio: &StdioPaths) -> Result<Made> {
        Ok(Made { pid, exit: None })
    }

    async fn kill(&mut self, _exec_id: &str, _pid: u32, signal: u32, _all: bool) -> Result<()> {
        // As pause: SIGINT and SIGTERM end it with 0, any other signal with 128+signal.
        let code = match signal as i32 {
            libc::SIGINT | libc::SIGTERM => 0,
            s => 128 + s as u32,
        };
        if let Some(tx) = self.exit.take() {
            let _ = tx.send(Ended { code, oom: false });
        }
        Ok(())
    }

    async fn exec(&mut self, _exec_id: &str, _process: &[u8], _stdio: &StdioPaths) -> Result<Made> {
        Err(ShimError::InvalidArgument(
            "the pod's sandbox runs no program (wasmbox holds it); exec into one of the pod's \
             containers"
                .into(),
        ))
    }

    fn remove_exec(&mut self, _exec_id: &str) {}

    async fn pause(&mut self) -> Result<()> {
        Ok(())
    }

    async fn resume(&mut self) -> Result<()> {
        Ok(())
    }

    async fn update(&mut self, _resources: &[u8]) -> Result<()> {
        // The pod's resources are its cgroup's, which the shim is in.
        Ok(())
    }

    fn stats(&self) -> Result<Stats> {
        Ok(Stats::default())
    }

    async fn delete(&mut self) -> Result<()> {
        Ok(())
    }
}
