//! The containerd shim v2, `containerd-shim-wasmbox-v1` (runtime `io.containerd.wasmbox.v1`).
//!
//! containerd runs the binary with `start` to get a shim's socket, then talks ttrpc to the task
//! service ([`task::TaskService`]); it runs it with `delete` to clean up after a shim that died.
//! Containers with the same `io.kubernetes.cri.sandbox-id` or `io.containerd.runc.v2.group`
//! annotation share one shim process; without either, each container gets its own, as with runc.
//! Wasm containers run as guests inside the shim; native ones are handed to runc. This module is
//! only the face containerd sees (ttrpc requests, events, the shim's process); what happens to
//! containers is [`crate::lifecycle`]'s.

mod daemon;
mod error;
mod events;
mod logging;
mod socket;
mod task;

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use containerd_shim::protos::api::DeleteResponse;
use containerd_shim::protos::protobuf::{Message, MessageField};
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{Config, Error as CrateError, ExitSignal, Flags, StartOpts};

use crate::lifecycle::record::Record;
use crate::lifecycle::{PodCgroupSlot, netns};

/// The runtime name containerd knows this shim by.
pub const RUNTIME_ID: &str = "io.containerd.wasmbox.v1";

/// Spec annotations that put containers in one shim process, in order of precedence.
pub const GROUP_ANNOTATIONS: [&str; 2] = [
    "io.kubernetes.cri.sandbox-id",
    "io.containerd.runc.v2.group",
];

/// Exit status reported for a container whose shim died under it (as SIGKILL).
const EXIT_SHIM_GONE: u32 = 137;

/// Entry point of the shim binary; returns the process exit code.
pub fn main() -> i32 {
    if let Some(code) = crate::compiler_helper() {
        return code;
    }
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let flags = containerd_shim::parse(&args[1..]).ok();
    if flags.as_ref().is_some_and(|f| f.version) {
        println!(
            "{}:\n  Runtime: {RUNTIME_ID}\n  Version: {}",
            args[0].to_string_lossy(),
            env!("CARGO_PKG_VERSION")
        );
        return 0;
    }
    // containerd runs `delete` after every shim exits, on the path of `ctr run --rm`: when this
    // bundle holds no record (the task was deleted normally) there is nothing to undo, so answer
    // at once, without an executor.
    if flags.as_ref().is_some_and(|f| f.action == "delete")
        && let Ok(None) = Record::load(Path::new("."))
    {
        return match gone(0).write_to_writer(&mut std::io::stdout().lock()) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("{RUNTIME_ID}: write the delete response: {e}");
                1
            }
        };
    }
    // `start` forks the serving process (see [`daemon`]); `delete` undoes what a dead shim left.
    match flags {
        Some(f) if f.action == "start" => return daemon::start(f),
        Some(f) if f.action == "delete" => {}
        _ => {
            eprintln!("{RUNTIME_ID}: run by containerd, as `start` or `delete`");
            return 1;
        }
    }
    let Some(rt) = executor(tokio::runtime::Builder::new_current_thread()) else {
        return 1;
    };
    rt.block_on(containerd_shim::asynchronous::run::<Service>(
        RUNTIME_ID,
        Some(Config::default()),
    ));
    0
}

/// Builds an executor with every driver, saying why on stderr when it cannot.
fn executor(mut builder: tokio::runtime::Builder) -> Option<tokio::runtime::Runtime> {
    builder
        .enable_all()
        .build()
        .map_err(|e| eprintln!("{RUNTIME_ID}: start the executor: {e}"))
        .ok()
}

/// `BUNDLE/config.json`, when it can be read and parsed (create reports it to containerd when
/// it cannot).
fn bundle_spec(bundle: &Path) -> Option<oci_spec::runtime::Spec> {
    let text = std::fs::read_to_string(bundle.join("config.json")).ok()?;
    wasmbox_runtime::policy::parse_spec(&text).ok()
}

/// Raises the shim's own descriptor limit to its hard limit: guests are capped one by one (their
/// handle limit), and the shim keeps the headroom for itself and its other containers.
fn raise_nofile() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut l = getrlimit(Resource::Nofile);
    if l.current < l.maximum {
        l.current = l.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, l) {
            eprintln!("{RUNTIME_ID}: raise RLIMIT_NOFILE: {e}");
        }
    }
}

/// The shim's process-level side: start, delete, and the task service.
pub struct Service {
    exit: Arc<ExitSignal>,
    /// The pod cgroup the lifecycle joins, left when the process ends.
    pod_cgroup: PodCgroupSlot,
    namespace: String,
    debug: bool,
    /// The socket this process serves on (`unix://PATH`), removed when it exits.
    socket: String,
}

impl Service {
    /// Leaves the pod's cgroup, if one was joined: once the task API is shut down, so no
    /// request waits on it.
    async fn leave_pod_cgroup(&self) {
        if let Some(c) = self.pod_cgroup.lock().await.take() {
            c.leave();
        }
    }
}

/// The group a spec's container belongs to, from its group annotations.
fn group_of(spec: &oci_spec::runtime::Spec) -> Option<String> {
    spec.annotations()
        .as_ref()
        .and_then(|a| GROUP_ANNOTATIONS.iter().find_map(|k| a.get(*k)))
        .filter(|g| !g.is_empty())
        .cloned()
}

/// The group a container belongs to: its spec's group annotation, else its own id.
fn grouping(spec: Option<&oci_spec::runtime::Spec>, id: &str) -> String {
    spec.and_then(group_of).unwrap_or_else(|| id.to_string())
}

/// Removes the socket named in `BUNDLE/address` when nothing serves it any more (the shim that
/// served it died; a group's shim that still serves other containers keeps it).
fn remove_dead_socket(bundle: &Path) {
    let Ok(address) = std::fs::read_to_string(bundle.join("address")) else {
        return;
    };
    let path = address.trim().trim_start_matches("unix://");
    if !path.is_empty() && UnixStream::connect(path).is_err() {
        let _ = std::fs::remove_file(path);
    }
}

/// The `delete` action's answer: the process `pid` ended with the shim, now.
fn gone(pid: u32) -> DeleteResponse {
    DeleteResponse {
        pid,
        exit_status: EXIT_SHIM_GONE,
        exited_at: MessageField::some(events::timestamp(SystemTime::now())),
        ..Default::default()
    }
}

fn other(msg: String) -> CrateError {
    CrateError::Other(msg)
}

#[async_trait]
impl containerd_shim::asynchronous::Shim for Service {
    type T = task::TaskService;

    async fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        Service {
            exit: Arc::new(ExitSignal::default()),
            pod_cgroup: PodCgroupSlot::default(),
            namespace: args.namespace.clone(),
            debug: args.debug,
            socket: args.socket.clone(),
        }
    }

    async fn start_shim(&mut self, _opts: StartOpts) -> containerd_shim::Result<String> {
        // `start` never reaches the shim crate: [`daemon::start`] answers it.
        Err(other("start is handled before the shim crate runs".into()))
    }

    async fn delete_shim(&mut self) -> containerd_shim::Result<DeleteResponse> {
        // The shim serving this bundle is gone: undo what it did and report the exit.
        let bundle = std::env::current_dir().map_err(|e| other(format!("bundle dir: {e}")))?;
        let pid = crate::lifecycle::recover(&bundle, &self.namespace)
            .await
            .map_err(|e| other(e.to_string()))?;
        remove_dead_socket(&bundle);
        Ok(gone(pid))
    }

    async fn wait(&mut self) {
        self.exit.wait().await;
        // The first container's bundle (our working directory, where containerd's shim crate
        // looks for the address) may be gone by now: remove the socket by the path we served.
        if let Some(path) = self.socket.strip_prefix("unix://") {
            let _ = std::fs::remove_file(path);
        }
    }

    async fn create_task_service(&self, publisher: RemotePublisher) -> task::TaskService {
        logging::init(self.debug);
        if let Err(e) = crate::lifecycle::reaper::start().await {
            tracing::error!(error = %e, "starting the reaper failed");
        }
        let events = events::Publisher::start(publisher, self.namespace.clone());
        task::TaskService::new(
            events,
            self.namespace.clone(),
            self.exit.clone(),
            self.pod_cgroup.clone(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_annotations(ann: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("config.json"),
            format!(r#"{{"ociVersion":"1.0.2","annotations":{ann}}}"#),
        )
        .unwrap();
        d
    }

    #[test]
    fn containers_are_grouped_by_pod_then_runc_group_then_alone() {
        let d = with_annotations(
            r#"{"io.kubernetes.cri.sandbox-id":"pod1","io.containerd.runc.v2.group":"g"}"#,
        );
        assert_eq!(grouping(bundle_spec(d.path()).as_ref(), "c1"), "pod1");
        let d = with_annotations(r#"{"io.containerd.runc.v2.group":"g"}"#);
        assert_eq!(grouping(bundle_spec(d.path()).as_ref(), "c1"), "g");
        let d = with_annotations(r#"{"io.containerd.runc.v2.group":""}"#);
        assert_eq!(grouping(bundle_spec(d.path()).as_ref(), "c1"), "c1");
        let d = with_annotations("{}");
        assert_eq!(grouping(bundle_spec(d.path()).as_ref(), "c1"), "c1");
        let none = tempfile::tempdir().unwrap();
        assert_eq!(grouping(bundle_spec(none.path()).as_ref(), "c1"), "c1");
    }
}
