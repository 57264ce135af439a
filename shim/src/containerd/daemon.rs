//! The shim's own process: the `start` action and the serving process it leaves behind.
//!
//! containerd runs `BINARY start` and waits for it to print the address of a socket a shim serves
//! (and for its stdout to close). Rather than exec the binary a second time and wait for that
//! process to come up (the shim crate's way), `start` binds the socket itself, forks, and answers
//! at once: the address is reachable the moment it is printed (the kernel queues containerd's
//! connection), and the forked child, which needs no exec, loader or argument parsing, starts
//! serving on the socket it inherited while containerd is still reading the answer. Who may own,
//! serve and connect to that socket is [`super::socket`]'s to decide.

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;

use containerd_shim::asynchronous::Shim as _;
use containerd_shim::asynchronous::monitor::monitor_notify_by_pid;
use containerd_shim::protos::shim_async::{Task, create_task};
use containerd_shim::protos::ttrpc::r#async::Server;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{Config, Flags};
use tokio::signal::unix::{SignalKind, signal};

use super::socket::{self, Bound};
use super::{RUNTIME_ID, Service};

/// Environment variable holding containerd's ttrpc address (for events).
const TTRPC_ADDRESS: &str = "TTRPC_ADDRESS";

/// The `start` action: prints the address of the socket serving this container's group,
/// starting a serving process first when none serves it. Returns the exit code.
pub fn start(flags: Flags) -> i32 {
    match start_inner(flags) {
        Ok(address) => {
            let mut out = std::io::stdout().lock();
            match out.write_all(address.as_bytes()).and_then(|()| out.flush()) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("{RUNTIME_ID}: write the shim address: {e}");
                    1
                }
            }
        }
        Err(e) => {
            eprintln!("{RUNTIME_ID}: start: {e}");
            1
        }
    }
}

fn start_inner(flags: Flags) -> Result<String, String> {
    let spec = super::bundle_spec(Path::new("."));
    let group = super::grouping(spec.as_ref(), &flags.id);
    let address = containerd_shim::socket_address(&flags.address, &flags.namespace, &group);
    let path = address
        .strip_prefix("unix://")
        .unwrap_or(&address)
        .to_string();
    // Without a listener, a shim already serves this group (or another `start` of it bound the
    // socket a moment ago): containerd gets that socket.
    if let Some(bound) = socket::listen(Path::new(&path))? {
        let child = fork_server(flags, spec, bound, &address)?;
        // As the shim crate does: the serving process goes into the shim cgroup containerd asks
        // for (runtime options on stdin), with an OOM score just above containerd's.
        containerd_shim::cgroup::set_cgroup_and_oom_score(child)
            .map_err(|e| format!("place the shim process {child}: {e}"))?;
    }
    std::fs::write("address", &address).map_err(|e| format!("write the address file: {e}"))?;
    Ok(address)
}

/// Forks the serving process, which never returns here: it serves on the bound socket until its
/// last container is gone, then exits. Returns its pid to the parent.
fn fork_server(
    flags: Flags,
    spec: Option<oci_spec::runtime::Spec>,
    bound: Bound,
    address: &str,
) -> Result<u32, String> {
    let pid = fork();
    if pid < 0 {
        return Err(format!(
            "fork the serving process: {}",
            std::io::Error::last_os_error()
        ));
    }
    if pid > 0 {
        drop(bound);
        return Ok(pid as u32);
    }
    // The child: out of containerd's session, and off the pipes containerd reads `start`'s
    // answer from (containerd waits for every writer of them to close).
    let code = match detach() {
        Ok(()) => serve(flags, spec, bound, address),
        Err(e) => {
            eprintln!("{RUNTIME_ID}: {e}");
            1
        }
    };
    std::process::exit(code);
}

#[allow(
    unsafe_code,
    reason = "fork(2) from the single-threaded start process (no executor has been built yet), \
              so the child may go on running ordinary Rust code"
)]
fn fork() -> libc::pid_t {
    // SAFETY: see the reason above.
    unsafe { libc::fork() }
}

fn detach() -> Result<(), String> {
    rustix::process::setsid().map_err(|e| format!("setsid: {e}"))?;
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| format!("open /dev/null: {e}"))?;
    rustix::stdio::dup2_stdin(&null)
        .and_then(|()| rustix::stdio::dup2_stdout(&null))
        .and_then(|()| rustix::stdio::dup2_stderr(&null))
        .map_err(|e| format!("stdio to /dev/null: {e}"))
}

/// The serving process, from its fork: sets up the process as its first container's spec says
/// while it is still single-threaded, then serves the task API on the socket it was given.
fn serve(
    mut flags: Flags,
    spec: Option<oci_spec::runtime::Spec>,
    bound: Bound,
    address: &str,
) -> i32 {
    // Join the group's network namespace and make the namespaces of a pod sandbox it holds.
    let entered = super::netns::join(spec.as_ref()).and_then(|()| match &spec {
        Some(spec) => crate::lifecycle::sandbox::enter(spec),
        None => Ok(()),
    });
    if let Err(e) = entered {
        eprintln!("{RUNTIME_ID}: {e}");
        return 1;
    }
    // ... and a private mount namespace (a slave of the host's), where each wasm container's
    // filesystem is built as a mount tree and runc-delegated containers are mounted too.
    if let wasmbox_runtime::mounts::Namespace::Unavailable(reason) =
        wasmbox_runtime::mounts::enter_namespace()
    {
        eprintln!("{RUNTIME_ID}: a private mount namespace: {reason}");
        return 1;
    }
    super::raise_nofile();
    // Files guests create are never group- or world-writable through an inherited umask of 0.
    crate::umask::set_umask(crate::umask::DEFAULT_UMASK);
    // The shim adopts the processes its runc-delegated containers leave behind.
    if let Err(e) = rustix::process::set_child_subreaper(Some(rustix::process::getpid())) {
        eprintln!("{RUNTIME_ID}: become a subreaper: {e}");
        return 1;
    }
    // Still single-threaded: runc and the compile helper are started by the spawner from now on,
    // and no thread of the shim may exec a program.
    let spawnable = vec![
        wasmbox_runtime::compiler::spawnable(),
        wasmbox_runtime::spawner::Allowed::program(crate::lifecycle::native::runc_binary()),
    ];
    if let Err(e) = wasmbox_runtime::seccomp::lock_process(spawnable) {
        eprintln!("{RUNTIME_ID}: {e}");
        return 1;
    }
    // Traces, when containerd's environment names an OTLP endpoint: the exporter's thread is
    // started here, off the executors that run guests.
    if let Err(e) = wasmbox_runtime::trace::init() {
        eprintln!("{RUNTIME_ID}: {e}");
        return 1;
    }
    let mut executor = tokio::runtime::Builder::new_multi_thread();
    executor.worker_threads(2);
    let Some(rt) = super::executor(executor) else {
        return 1;
    };
    flags.socket = address.to_string();
    let served = rt.block_on(run(flags, bound));
    // What spans are still buffered are exported before the shim exits.
    wasmbox_runtime::trace::shutdown();
    match served {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{RUNTIME_ID}: {e}");
            1
        }
    }
}

async fn run(flags: Flags, bound: Bound) -> Result<(), String> {
    let ttrpc_address =
        std::env::var(TTRPC_ADDRESS).map_err(|e| format!("{TTRPC_ADDRESS}: {e}"))?;
    let signals = Signals::new().map_err(|e| format!("handle signals: {e}"))?;
    let mut config = Config::default();
    let mut shim = Service::new(RUNTIME_ID, &flags, &mut config).await;
    // The shim crate's own messages go to containerd's log FIFO too.
    let _ = containerd_shim::logger::init(
        flags.debug,
        &config.default_log_level,
        &flags.namespace,
        &flags.id,
    );
    let publisher = RemotePublisher::new(&ttrpc_address)
        .await
        .map_err(|e| format!("connect to containerd at {ttrpc_address}: {e}"))?;
    let task: Box<dyn Task + Send + Sync> = Box::new(shim.create_task_service(publisher).await);
    if let Some(what) = &bound.replaced {
        tracing::warn!(
            socket = %flags.socket,
            found = %what,
            "replaced what was at the group's socket path: not a socket served by root or \
             containerd's uid"
        );
    }
    let listener =
        socket::trusted_listener(bound.listener).map_err(|e| format!("shim socket: {e}"))?;
    let mut server = Server::new()
        .add_listener(listener)
        .register_service(create_task(Arc::from(task)));
    server
        .start()
        .await
        .map_err(|e| format!("serve the task API: {e}"))?;
    tokio::spawn(signals.handle());
    shim.wait().await;
    let _ = server.shutdown().await;
    shim.leave_pod_cgroup().await;
    Ok(())
}

/// The signals the serving process takes: SIGCHLD reaps every child (it is a subreaper) and
/// hands the exit to the shim crate's monitor, which [`crate::lifecycle::reaper`] listens to;
/// SIGTERM, SIGINT and SIGPIPE are ignored (containerd ends a shim through its API).
struct Signals {
    chld: tokio::signal::unix::Signal,
    others: Vec<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        Ok(Signals {
            chld: signal(SignalKind::child())?,
            others: vec![
                signal(SignalKind::terminate())?,
                signal(SignalKind::interrupt())?,
                signal(SignalKind::pipe())?,
            ],
        })
    }

    async fn handle(mut self) {
        // The other streams only need to exist: a registered tokio signal is not fatal.
        let _others = std::mem::take(&mut self.others);
        while self.chld.recv().await.is_some() {
            // Any child (`wait`: rustix's `waitpid(None)` is only the shim's process group).
            while let Ok(Some((pid, status))) =
                rustix::process::wait(rustix::process::WaitOptions::NOHANG)
            {
                let Some(code) = status
                    .exit_status()
                    .or_else(|| status.terminating_signal().map(|s| 128 + s))
                else {
                    continue;
                };
                let pid = pid.as_raw_nonzero().get();
                if let Err(e) = monitor_notify_by_pid(pid, code).await {
                    tracing::warn!(pid, error = %e, "routing a child's exit failed");
                }
            }
        }
    }
}
