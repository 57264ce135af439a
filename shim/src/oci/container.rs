//! The container's process, from its fork in `create` to the guest's end: set up while still
//! single-threaded, ready, then waiting on the exec FIFO until `start` opens it, then the guest,
//! whose exit status becomes the process's.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use anyhow::{Context, Result};
use oci_spec::runtime::Spec;
use wasmbox_runtime::launch::Wasm;
use wasmbox_runtime::{Allocator, ExitReason, GuestKind, ProtectedPath, Runtime, Stdio};

use super::args::Oci;

/// Where a process set up here lives: a container's own namespaces and cgroup, made from its
/// spec, or those of a running container's process it is added to (`exec`).
pub enum Join<'a> {
    /// The container's process: the spec's network namespace and cgroup.
    Container(&'a Spec),
    /// A process added to the container whose process is `pid`, in cgroups `cgroups`.
    Exec { pid: i32, cgroups: &'a [PathBuf] },
}

/// Runs the container process, whose state directory is `dir`, or, with `dir` `None`, a process
/// added to it, which starts at once; never returns.
#[allow(clippy::too_many_arguments)]
pub fn run(
    oci: &Oci,
    join: Join<'_>,
    spec: &Spec,
    wasm: Box<Wasm>,
    terminal: bool,
    console_socket: Option<PathBuf>,
    ready: OwnedFd,
    dir: Option<&std::path::Path>,
) -> ! {
    let started = std::time::Instant::now();
    let mut cgroups = Vec::new();
    let set_up = set_up(
        oci,
        join,
        &wasm,
        terminal,
        console_socket,
        started,
        &mut cgroups,
    );
    let prepared = match set_up {
        Ok(p) => {
            super::ready::tell(ready, &Ok(cgroups));
            p
        }
        Err(e) => {
            super::ready::tell(ready, &Err(e));
            std::process::exit(1);
        }
    };
    // Until `start` opens the FIFO; a signal before then ends the process (128+signal).
    if let Some(dir) = dir {
        let mut f = match std::fs::OpenOptions::new()
            .write(true)
            .open(super::state::fifo(dir))
        {
            Ok(f) => f,
            Err(e) => {
                eprintln!("wasmbox: waiting for start: {e}");
                std::process::exit(1);
            }
        };
        let _ = f.write_all(b"0");
    }
    crate::signals::starting();
    let umask = spec
        .process()
        .as_ref()
        .and_then(|p| p.user().umask())
        .map_or(crate::umask::DEFAULT_UMASK, |m| m & 0o777);
    crate::umask::set_umask(umask);
    let running = match prepared.start(Stdio::inherit()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("wasmbox: starting the guest: {e}");
            std::process::exit(wasmbox_runtime::EXIT_RUNTIME_ERROR);
        }
    };
    crate::signals::running(running.kill_handle());
    let status = running.wait();
    wasmbox_runtime::trace::shutdown();
    if let (ExitReason::MemoryLimit(_), Some(dir)) = (&status.reason, dir)
        && let Err(e) = std::fs::write(super::state::oom_mark(dir), b"")
    {
        eprintln!("wasmbox: marking the guest's out-of-memory end: {e}");
    }
    if !matches!(
        status.reason,
        ExitReason::Exited(_) | ExitReason::Signaled(_)
    ) {
        eprintln!("wasmbox: guest {status}");
    }
    std::process::exit(status.code())
}

/// Everything before `start`, in the order the kernel needs it: namespaces and the cgroup while
/// single-threaded, then the lock, then the runtime and the guest.
fn set_up(
    oci: &Oci,
    join: Join<'_>,
    wasm: &Wasm,
    terminal: bool,
    console_socket: Option<PathBuf>,
    started: std::time::Instant,
    cgroups: &mut Vec<PathBuf>,
) -> Result<wasmbox_runtime::Prepared> {
    // Its own process group, as runc's init: a signal to the caller's group is not the guest's.
    let _ = rustix::process::setsid();
    match join {
        Join::Container(spec) => {
            crate::lifecycle::netns::enter(spec).map_err(anyhow::Error::msg)?;
            if let Some(path) = spec
                .linux()
                .as_ref()
                .and_then(|l| l.cgroups_path().as_ref())
                .and_then(|p| p.to_str())
            {
                let path = crate::lifecycle::cgroup::container_path(path)
                    .with_context(|| format!("linux.cgroupsPath {path:?}"))?;
                let memory = wasm.bundle.policy.limits.memory;
                *cgroups = crate::lifecycle::cgroup::enter_container(&path, memory)
                    .context("joining the container's cgroup")?;
            }
        }
        Join::Exec { pid, cgroups: dirs } => {
            let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))
                .context("the container's network namespace")?;
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&ns),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .context("joining the container's network namespace")?;
            let me = std::process::id().to_string();
            for d in dirs {
                std::fs::write(d.join("cgroup.procs"), &me)
                    .with_context(|| format!("joining cgroup {}", d.display()))?;
            }
        }
    }
    if let wasmbox_runtime::mounts::Namespace::Unavailable(reason) =
        wasmbox_runtime::mounts::enter_namespace()
    {
        anyhow::bail!("a private mount namespace: {reason}");
    }
    wasmbox_runtime::seccomp::lock_process(vec![wasmbox_runtime::compiler::spawnable()])
        .map_err(anyhow::Error::msg)?;
    crate::signals::start().context("starting the signal thread")?;
    // Traces, when an OTLP endpoint is set: the exporter's thread is no guest thread.
    wasmbox_runtime::trace::init().map_err(anyhow::Error::msg)?;
    if terminal {
        let socket = console_socket.context("no --console-socket")?;
        super::terminal::attach(&socket).context("the terminal")?;
    }
    let mut config = wasmbox_runtime::launch::Settings::default().config()?;
    config.mount_tree = true;
    config.scratch_dir = Some(oci.root.join(".scratch"));
    config
        .protected
        .push(ProtectedPath::new("runtime state", &oci.root));
    if wasm.kind == Some(GuestKind::HttpComponent) {
        config.allocator = Allocator::Pooling;
    }
    config.deny_guest_sockets = !wasm.bundle.policy.net.reaches_network();
    let runtime = Runtime::new(config)?;
    let mut prepared = wasm.prepare(&runtime, started)?;
    prepared.listen_with(std::net::TcpListener::bind)?;
    prepared.metrics_with(std::net::TcpListener::bind)?;
    Ok(prepared)
}
