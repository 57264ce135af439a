//! Kubernetes as kubelet drives it: CRI calls (`runtime.v1`, the `k8s-cri` client over the
//! socket) to containerd 1.6's CRI plugin, whose `wasmbox` runtime and RuntimeClass come from
//! `examples/kubernetes/`. containerd runs in a network namespace of the test's own, with a real
//! CNI bridge (host-local addresses inside that namespace) and a real registry on its loopback.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::ctrd::{
    BUSYBOX, Containerd, ECHO, FILES, HELLO, HELLO_ARTIFACT, HTTP_HELLO, Images, NET_PROBE, PAUSE,
    TestNetns, WAT,
};
use crate::shim::wait_until;

/// Where the registry listens, on the loopback of the test's network namespace.
const REGISTRY: &str = "127.0.0.1:5000";

/// A file of `examples/kubernetes/`.
fn kubernetes(file: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/kubernetes")
        .join(file);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A YAML document of `examples/kubernetes/`.
fn manifest(file: &str) -> serde_yaml::Value {
    serde_yaml::from_str(&kubernetes(file)).unwrap()
}

/// The handler of the example RuntimeClass: what kubelet passes as `runtime_handler`.
fn handler() -> String {
    let rc = manifest("runtimeclass.yaml");
    assert_eq!(rc["kind"].as_str(), Some("RuntimeClass"));
    rc["handler"].as_str().unwrap().to_string()
}

/// A file of `tests/cri/` (shared with `bench/cri.sh`), its `@NAME@` placeholders filled in.
fn cri_file(file: &str, fill: &[(&str, &str)]) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("cri").join(file);
    let mut text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    for (name, value) in fill {
        text = text.replace(&format!("@{name}@"), value);
    }
    assert!(
        !text.contains("@\""),
        "{}: a placeholder left unfilled",
        p.display()
    );
    text
}

/// The CRI plugin's configuration: a CNI bridge with addresses from host-local (all inside the
/// test's namespace), the pause image, plain HTTP to the registry on loopback, runc for native
/// pods, and wasmbox's runtime entry exactly as `examples/kubernetes/` gives it.
fn cri_config(d: &Path) -> String {
    let cni = d.join("cni");
    std::fs::create_dir_all(&cni).unwrap();
    let ipam = d.join("ipam");
    let conflist = cri_file(
        "bridge.conflist",
        &[
            ("NAME", "wasmbox-test"),
            ("BRIDGE", "wbcni0"),
            ("IPAM_DIR", &ipam.to_string_lossy()),
            ("SUBNET", "10.99.0.0/24"),
        ],
    );
    std::fs::write(cni.join("10-wasmbox-test.conflist"), conflist).unwrap();
    let plugin = cri_file(
        "cri-plugin.toml",
        &[("PAUSE", PAUSE), ("CNI_CONF_DIR", &cni.to_string_lossy())],
    );
    format!(
        "{plugin}\n{}\n{}",
        kubernetes("containerd-runtime.toml"),
        runc_shim_entry()
    )
}

/// The handler of a runtime entry that runs containerd's own runc shim with wasmbox as its
/// binary (`BinaryName`): wasmbox as the runc of a Kubernetes node.
const RUNC_SHIM_HANDLER: &str = "wasmbox-runc";

fn runc_shim_entry() -> String {
    let entry =
        format!(r#"plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{RUNC_SHIM_HANDLER}"#);
    format!(
        "[{entry}]\n  runtime_type = \"io.containerd.runc.v2\"\n[{entry}.options]\n  BinaryName = \"{}\"\n",
        crate::common::wasmbox_bin().display()
    )
}

/// containerd with its CRI plugin, and a CRI client: the test is kubelet.
struct Cri {
    ctrd: Containerd,
    rt: tokio::runtime::Runtime,
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
    /// Pod log directories (kubelet's /var/log/pods).
    logs: tempfile::TempDir,
    registry: Option<std::process::Child>,
    netns: TestNetns,
}

type CriResult<T> = Result<T, tonic::Status>;

impl Cri {
    /// Starts containerd in a new network namespace, imports `images` into `k8s.io` (the pause
    /// image always), and waits until the CRI plugin says the runtime and network are ready.
    fn start(images: &[&str]) -> Self {
        Self::start_with_env(images, &[])
    }

    /// [`Cri::start`] with `env` in containerd's environment (which its shims inherit).
    fn start_with_env(images: &[&str], env: &[(&str, &str)]) -> Self {
        let netns = TestNetns::new("wbcri");
        let ctrd = Containerd::start_cri(&netns, env, cri_config);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let sock = ctrd.sock();
        let channel = rt
            .block_on(
                Endpoint::try_from("http://localhost")
                    .unwrap()
                    .connect_with_connector(tower::service_fn(move |_: Uri| {
                        let sock = sock.clone();
                        async move {
                            let s = tokio::net::UnixStream::connect(sock).await?;
                            Ok::<_, std::io::Error>(TokioIo::new(s))
                        }
                    })),
            )
            .expect("connect to the CRI socket");
        let cri = Cri {
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
            rt,
            ctrd,
            logs: tempfile::tempdir().unwrap(),
            registry: None,
            netns,
        };
        for name in std::iter::once(&PAUSE).chain(images) {
            cri.ctrd.import(&Images::get().archive(name));
        }
        cri.wait_ready();
        cri
    }

    fn call<T>(&self, f: impl Future<Output = CriResult<tonic::Response<T>>>) -> CriResult<T> {
        self.rt.block_on(f).map(tonic::Response::into_inner)
    }

    fn rs(&self) -> RuntimeServiceClient<Channel> {
        self.runtime.clone()
    }

    /// Waits for RuntimeReady and NetworkReady (the CNI configuration is loaded) and for the
    /// imported images to be known to the plugin.
    fn wait_ready(&self) {
        wait_until("the CRI plugin is ready", || {
            let Ok(st) = self.call(self.rs().status(StatusRequest::default())) else {
                return false;
            };
            let conditions = st.status.map(|s| s.conditions).unwrap_or_default();
            ["RuntimeReady", "NetworkReady"]
                .iter()
                .all(|t| conditions.iter().any(|c| c.r#type == *t && c.status))
        });
        wait_until("the pause image is known", || self.image_known(PAUSE));
    }

    fn image_known(&self, name: &str) -> bool {
        let mut images = self.images.clone();
        self.call(images.image_status(ImageStatusRequest {
            image: Some(ImageSpec {
                image: name.into(),
                ..Default::default()
            }),
            verbose: false,
        }))
        .is_ok_and(|s| s.image.is_some())
    }

    /// A pod as kubelet configures it: its own log directory, network namespace shared by its
    /// containers, pid namespace per container.
    fn pod(&self, name: &str) -> PodSandboxConfig {
        let logs = self.logs.path().join(name);
        std::fs::create_dir_all(&logs).unwrap();
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                uid: format!("uid-{name}"),
                namespace: "default".into(),
                attempt: 0,
            }),
            hostname: name.into(),
            log_directory: logs.to_string_lossy().into_owned(),
            linux: Some(LinuxPodSandboxConfig {
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(namespaces()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// RunPodSandbox with `handler`; returns the pod's id.
    fn run_pod(&self, config: &PodSandboxConfig, handler: &str) -> String {
        self.call(self.rs().run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: handler.into(),
        }))
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", self.ctrd.log_tail()))
        .pod_sandbox_id
    }

    fn pod_status(&self, id: &str) -> PodSandboxStatusResponse {
        self.call(self.rs().pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: true,
        }))
        .unwrap()
    }

    /// The path of a pod's network namespace, from its verbose status.
    fn pod_netns(&self, id: &str) -> PathBuf {
        let info: serde_json::Value =
            serde_json::from_str(&self.pod_status(id).info["info"]).unwrap();
        let path = info["runtimeSpec"]["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["type"] == "network")
            .and_then(|n| n["path"].as_str())
            .unwrap()
            .to_string();
        PathBuf::from(path)
    }

    /// CreateContainer in pod `pod_id`; its log goes to `NAME/0.log` in the pod's directory
    /// (kubelet makes the container's directory).
    fn create(&self, pod_id: &str, pod: &PodSandboxConfig, config: ContainerConfig) -> String {
        let dir = Path::new(&pod.log_directory).join(&config.metadata.as_ref().unwrap().name);
        std::fs::create_dir_all(dir).unwrap();
        self.try_create(pod_id, pod, config)
            .unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", self.ctrd.log_tail()))
    }

    fn try_create(
        &self,
        pod_id: &str,
        pod: &PodSandboxConfig,
        config: ContainerConfig,
    ) -> CriResult<String> {
        self.call(self.rs().create_container(CreateContainerRequest {
            pod_sandbox_id: pod_id.into(),
            config: Some(config),
            sandbox_config: Some(pod.clone()),
        }))
        .map(|r| r.container_id)
    }

    fn start_container(&self, id: &str) {
        self.call(self.rs().start_container(StartContainerRequest {
            container_id: id.into(),
        }))
        .unwrap_or_else(|e| panic!("StartContainer: {e}\n{}", self.ctrd.log_tail()));
    }

    fn status(&self, id: &str) -> ContainerStatus {
        self.call(self.rs().container_status(ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        }))
        .unwrap()
        .status
        .unwrap()
    }

    /// Waits until container `id` is in `state`, and returns its status.
    #[track_caller]
    fn wait_state(&self, id: &str, state: ContainerState) -> ContainerStatus {
        let mut last = None;
        wait_until(&format!("{id} reaches {state:?}"), || {
            let st = self.status(id);
            let reached = st.state == state as i32;
            last = Some(st);
            reached
        });
        last.expect("polled at least once")
    }

    fn stop_container(&self, id: &str, timeout: i64) {
        self.call(self.rs().stop_container(StopContainerRequest {
            container_id: id.into(),
            timeout,
        }))
        .unwrap_or_else(|e| panic!("StopContainer: {e}\n{}", self.ctrd.log_tail()));
    }

    fn remove_container(&self, id: &str) {
        self.call(self.rs().remove_container(RemoveContainerRequest {
            container_id: id.into(),
        }))
        .unwrap();
    }

    fn containers(&self, pod_id: &str) -> Vec<Container> {
        self.call(self.rs().list_containers(ListContainersRequest {
            filter: Some(ContainerFilter {
                pod_sandbox_id: pod_id.into(),
                ..Default::default()
            }),
        }))
        .unwrap()
        .containers
    }

    fn pods(&self) -> Vec<PodSandbox> {
        self.call(self.rs().list_pod_sandbox(ListPodSandboxRequest::default()))
            .unwrap()
            .items
    }

    /// StopPodSandbox then RemovePodSandbox, as kubelet does when a pod is deleted.
    fn remove_pod(&self, id: &str) {
        self.call(self.rs().stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: id.into(),
        }))
        .unwrap_or_else(|e| panic!("StopPodSandbox: {e}\n{}", self.ctrd.log_tail()));
        self.call(self.rs().remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: id.into(),
        }))
        .unwrap();
    }

    /// Asserts that a removed pod left nothing: no shim serving this containerd, no mount
    /// below its directories, no network namespace, no task state, no runc container.
    fn assert_nothing_left(&self, pod_netns: &Path) {
        wait_until("the pod's shim exits", || self.ctrd.shims().is_empty());
        assert!(!pod_netns.exists(), "{} is left", pod_netns.display());
        assert_eq!(self.ctrd.mounts(), Vec::<String>::new());
        let tasks = self
            .ctrd
            .dir
            .path()
            .join("state/io.containerd.runtime.v2.task/k8s.io");
        let left: Vec<_> = std::fs::read_dir(&tasks)
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "task state left: {left:?}");
        let ours = self.runc_containers();
        assert!(ours.is_empty(), "runc containers left: {ours:?}");
    }

    /// The runc containers the shims of this containerd run (their bundles are in its state).
    fn runc_containers(&self) -> Vec<String> {
        let d = self.ctrd.dir.path().to_string_lossy().into_owned();
        let runc = std::process::Command::new("runc")
            .args([
                "--root",
                "/run/wasmbox/runc/k8s.io",
                "list",
                "--format",
                "json",
            ])
            .output()
            .unwrap();
        let listed: serde_json::Value = serde_json::from_slice(&runc.stdout).unwrap_or_default();
        listed
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["bundle"].as_str().is_some_and(|b| b.starts_with(&d)))
            .filter_map(|c| c["id"].as_str().map(str::to_string))
            .collect()
    }

    /// A container's pid, from its verbose status.
    fn container_pid(&self, id: &str) -> u32 {
        let info = self
            .call(self.rs().container_status(ContainerStatusRequest {
                container_id: id.into(),
                verbose: true,
            }))
            .unwrap()
            .info;
        let info: serde_json::Value = serde_json::from_str(&info["info"]).unwrap();
        info["pid"].as_u64().unwrap() as u32
    }

    /// Starts a docker-registry on [`REGISTRY`], inside the test's network namespace.
    fn start_registry(&mut self) {
        let dir = self.ctrd.dir.path().join("registry");
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {REGISTRY}\n",
                dir.join("data").display()
            ),
        )
        .unwrap();
        let child = self
            .netns
            .command("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("docker-registry: tests/run.sh installs it");
        self.registry = Some(child);
        wait_until("the registry answers", || {
            self.netns
                .run(|| std::net::TcpStream::connect(REGISTRY).is_ok())
        });
    }

    /// Pushes test image `image` to the registry as `name` (skopeo, in the namespace).
    fn push(&self, image: &str, name: &str) {
        let st = self
            .netns
            .command("skopeo")
            .args(["copy", "--quiet", "--dest-tls-verify=false"])
            .arg(format!(
                "oci-archive:{}",
                Images::get().archive(image).display()
            ))
            .arg(format!("docker://{REGISTRY}/{name}"))
            .status()
            .unwrap();
        assert!(st.success(), "skopeo copy {image}");
    }

    fn pull(&self, image: &str) -> CriResult<String> {
        let mut images = self.images.clone();
        self.call(images.pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            ..Default::default()
        }))
        .map(|r| r.image_ref)
    }

    fn exec_sync(&self, id: &str, cmd: &[&str], timeout: i64) -> CriResult<ExecSyncResponse> {
        self.call(self.rs().exec_sync(ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|c| c.to_string()).collect(),
            timeout,
        }))
    }

    /// Exec through the CRI streaming server, as `kubectl exec` does (its URL, then the
    /// `v4.channel.k8s.io` websocket protocol): returns stdout, stderr and the final status.
    fn exec_stream(&self, id: &str, cmd: &[&str]) -> Streamed {
        let url = self
            .call(self.rs().exec(ExecRequest {
                container_id: id.into(),
                cmd: cmd.iter().map(|c| c.to_string()).collect(),
                stdout: true,
                stderr: true,
                ..Default::default()
            }))
            .unwrap_or_else(|e| panic!("Exec: {e}"))
            .url;
        self.netns.run(move || websocket_exec(&url))
    }

    fn update_memory(&self, id: &str, limit: i64) {
        self.call(
            self.rs()
                .update_container_resources(UpdateContainerResourcesRequest {
                    container_id: id.into(),
                    linux: Some(LinuxContainerResources {
                        memory_limit_in_bytes: limit,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
        )
        .unwrap_or_else(|e| panic!("UpdateContainerResources: {e}"));
    }

    /// The CRI log of a container: its `log_path` in its pod's directory.
    fn log(&self, pod: &PodSandboxConfig, name: &str) -> String {
        std::fs::read_to_string(Path::new(&pod.log_directory).join(format!("{name}/0.log")))
            .unwrap_or_default()
    }
}

impl Drop for Cri {
    fn drop(&mut self) {
        // Remove what a failed test left, as kubelet would, so its network namespaces go too.
        if let Ok(pods) = self.call(self.rs().list_pod_sandbox(ListPodSandboxRequest::default())) {
            for p in pods.items {
                let _ = self.call(self.rs().stop_pod_sandbox(StopPodSandboxRequest {
                    pod_sandbox_id: p.id.clone(),
                }));
                let _ = self.call(self.rs().remove_pod_sandbox(RemovePodSandboxRequest {
                    pod_sandbox_id: p.id,
                }));
            }
        }
        if let Some(mut r) = self.registry.take() {
            let _ = r.kill();
            let _ = r.wait();
        }
    }
}

/// Kubelet's default namespaces: network and IPC shared by the pod, pid per container.
fn namespaces() -> NamespaceOption {
    NamespaceOption {
        network: NamespaceMode::Pod as i32,
        pid: NamespaceMode::Container as i32,
        ipc: NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

/// A container of image `image` with arguments `args` (after the image's entrypoint).
fn container(name: &str, image: &str, args: &[&str]) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        args: args.iter().map(|a| a.to_string()).collect(),
        log_path: format!("{name}/0.log"),
        linux: Some(LinuxContainerConfig {
            resources: Some(LinuxContainerResources::default()),
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(namespaces()),
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

/// Nanoseconds since the epoch, now.
fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

#[test]
fn a_wasm_pod_runs_containers_to_completion_and_leaves_nothing_when_removed() {
    let cri = Cri::start(&[HELLO, FILES]);
    let pod = cri.pod("jobs");
    let before = now_ns();
    let pod_id = cri.run_pod(&pod, &handler());
    let st = cri.pod_status(&pod_id).status.unwrap();
    assert_eq!(st.state, PodSandboxState::SandboxReady as i32);
    let ip = st.network.unwrap().ip;
    assert!(
        ip.starts_with("10.99.0."),
        "pod IP {ip:?} from the CNI bridge"
    );
    let pod_netns = cri.pod_netns(&pod_id);
    assert!(pod_netns.exists());
    assert_eq!(cri.pods().len(), 1);
    // The shim holds the sandbox: no pause container, no runc call.
    assert_eq!(cri.runc_containers(), Vec::<String>::new());

    // One that succeeds, one that fails.
    let ok = cri.create(&pod_id, &pod, container("hello", HELLO, &["from", "a pod"]));
    let bad = cri.create(&pod_id, &pod, container("fails", FILES, &["exit", "3"]));
    assert_eq!(
        cri.status(&ok).state,
        ContainerState::ContainerCreated as i32
    );
    cri.start_container(&ok);
    cri.start_container(&bad);
    let done = cri.wait_state(&ok, ContainerState::ContainerExited);
    assert_eq!((done.exit_code, done.reason.as_str()), (0, "Completed"));
    // containerd takes the start time when the start call returns, and the finish time from
    // the exit event: for a guest that ends at once the two may be either way round.
    assert!(
        before < done.started_at && before < done.finished_at,
        "{done:#?}"
    );
    let failed = cri.wait_state(&bad, ContainerState::ContainerExited);
    assert_eq!((failed.exit_code, failed.reason.as_str()), (3, "Error"));

    // The CRI log format: `<RFC 3339 time> stdout F <line>`, complete though the guest printed
    // and exited at once.
    let log = cri.log(&pod, "hello");
    let lines: Vec<&str> = log.lines().collect();
    assert!(!lines.is_empty(), "empty log");
    for l in &lines {
        let parts: Vec<&str> = l.splitn(4, ' ').collect();
        assert_eq!(parts.len(), 4, "{l:?}");
        assert!(parts[0].contains('T') && parts[0].ends_with('Z'), "{l:?}");
        assert!(matches!(parts[1], "stdout" | "stderr"), "{l:?}");
        assert_eq!(parts[2], "F", "{l:?}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with("stdout F Hello from wasmbox!")),
        "{log}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with("stdout F args: from a pod")),
        "{log}"
    );

    let listed = cri.containers(&pod_id);
    assert_eq!(listed.len(), 2);
    assert!(
        listed
            .iter()
            .all(|c| c.state == ContainerState::ContainerExited as i32)
    );
    cri.remove_container(&ok);
    cri.remove_container(&bad);
    assert!(cri.containers(&pod_id).is_empty());
    cri.remove_pod(&pod_id);
    assert!(cri.pods().is_empty());
    cri.assert_nothing_left(&pod_netns);
}

#[test]
fn stop_container_ends_a_wasm_guest_at_sigterm_and_a_native_sidecar_at_the_grace_period() {
    let cri = Cri::start(&[WAT, BUSYBOX]);
    let pod = cri.pod("mixed");
    let pod_id = cri.run_pod(&pod, &handler());
    let mut spin = container("spin", WAT, &[]);
    spin.command = vec!["/spin.wasm".into()];
    let spin = cri.create(&pod_id, &pod, spin);
    // PID 1 of its own pid namespace ignores SIGTERM: only the grace period's SIGKILL ends it.
    let mut sidecar = container("sidecar", BUSYBOX, &[]);
    sidecar.command = vec!["sleep".into(), "3600".into()];
    let sidecar = cri.create(&pod_id, &pod, sidecar);
    cri.start_container(&spin);
    cri.start_container(&sidecar);
    cri.wait_state(&spin, ContainerState::ContainerRunning);
    cri.wait_state(&sidecar, ContainerState::ContainerRunning);
    // The sidecar lives in the pod's own UTS (the pod's hostname) and IPC namespaces, which the
    // shim made for the sandbox it holds; not the host's.
    let out = cri.exec_sync(&sidecar, &["hostname"], 30).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "mixed\n");
    let pid = cri.container_pid(&sidecar);
    for ns in ["ipc", "uts"] {
        let theirs = std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap();
        let ours = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        assert_ne!(theirs, ours, "the sidecar's {ns} namespace is the host's");
    }
    // An exec into the sidecar that runc cannot start fails alone: containerd kills and deletes
    // the process that never started, and the pod's shim and containers stay.
    let bad = cri.exec_sync(&sidecar, &["/no/such/program"], 30);
    assert!(
        bad.is_err() || bad.as_ref().is_ok_and(|o| o.exit_code != 0),
        "{bad:?}"
    );
    for id in [&spin, &sidecar] {
        assert_eq!(
            cri.status(id).state,
            ContainerState::ContainerRunning as i32
        );
    }
    assert_eq!(cri.ctrd.shims().len(), 1);
    // A pod PID namespace (shareProcessNamespace) is one the shim cannot hold: refused.
    let mut shared = container("shared-pid", BUSYBOX, &[]);
    shared.command = vec!["sleep".into(), "3600".into()];
    let opts = shared
        .linux
        .as_mut()
        .unwrap()
        .security_context
        .as_mut()
        .unwrap()
        .namespace_options
        .as_mut()
        .unwrap();
    opts.pid = NamespaceMode::Pod as i32;
    std::fs::create_dir_all(Path::new(&pod.log_directory).join("shared-pid")).unwrap();
    // containerd makes the task (the shim's create) at StartContainer.
    let shared = cri.create(&pod_id, &pod, shared);
    let refused = cri
        .call(cri.rs().start_container(StartContainerRequest {
            container_id: shared.clone(),
        }))
        .unwrap_err();
    assert!(
        refused.message().contains("shareProcessNamespace"),
        "{}",
        refused.message()
    );

    let t = Instant::now();
    cri.stop_container(&spin, 30);
    let took = t.elapsed();
    let st = cri.wait_state(&spin, ContainerState::ContainerExited);
    assert_eq!((st.exit_code, st.reason.as_str()), (143, "Error"));
    assert!(took < Duration::from_secs(10), "a wasm guest took {took:?}");

    let t = Instant::now();
    cri.stop_container(&sidecar, 2);
    let took = t.elapsed();
    let st = cri.wait_state(&sidecar, ContainerState::ContainerExited);
    assert_eq!(st.exit_code, 137, "{st:#?}");
    assert!(
        took >= Duration::from_secs(2),
        "killed before its grace period: {took:?}"
    );

    let pod_netns = cri.pod_netns(&pod_id);
    for id in [&spin, &sidecar, &shared] {
        cri.remove_container(id);
    }
    cri.remove_pod(&pod_id);
    cri.assert_nothing_left(&pod_netns);
}

#[test]
fn wasm_images_are_pulled_from_a_registry_over_plain_http_and_run() {
    let mut cri = Cri::start(&[]);
    cri.start_registry();
    cri.push(HELLO, "wasmbox-test/hello:v1");
    let image = format!("{REGISTRY}/wasmbox-test/hello:v1");
    assert!(!cri.image_known(&image));
    let image_ref = cri
        .pull(&image)
        .unwrap_or_else(|e| panic!("PullImage: {e}\n{}", cri.ctrd.log_tail()));
    assert!(image_ref.starts_with("sha256:"), "{image_ref}");
    assert!(cri.image_known(&image));
    let pod = cri.pod("pulled");
    let pod_id = cri.run_pod(&pod, &handler());
    let id = cri.create(&pod_id, &pod, container("hello", &image, &[]));
    cri.start_container(&id);
    let st = cri.wait_state(&id, ContainerState::ContainerExited);
    assert_eq!((st.exit_code, st.reason.as_str()), (0, "Completed"));
    assert!(
        cri.log(&pod, "hello")
            .contains("stdout F Hello from wasmbox!")
    );
    // An artifact (a wasm config and layer, no rootfs) is the form containerd 1.6 cannot unpack
    // (its image config has no rootfs diff ids): its pull fails, saying so. Images for
    // Kubernetes are built `--format compat` (or converted with `wasmbox save --compat`).
    cri.push(HELLO_ARTIFACT, "wasmbox-test/hello-artifact:v1");
    let artifact = format!("{REGISTRY}/wasmbox-test/hello-artifact:v1");
    match cri.pull(&artifact) {
        Err(e) => assert!(
            e.message().contains("failed to unpack image"),
            "{}",
            e.message()
        ),
        Ok(image_ref) => {
            // A containerd that can: it must then run.
            let id = cri.create(&pod_id, &pod, container("artifact", &image_ref, &[]));
            cri.start_container(&id);
            let st = cri.wait_state(&id, ContainerState::ContainerExited);
            assert_eq!(st.exit_code, 0);
        }
    }
    cri.remove_pod(&pod_id);
}

#[test]
fn an_http_component_in_a_pod_is_served_at_the_pod_ip_and_to_its_sidecar() {
    let cri = Cri::start(&[HTTP_HELLO, BUSYBOX]);
    // The example pod: its annotations and memory limit, on its RuntimeClass.
    let example = manifest("pod.yaml");
    assert_eq!(
        example["spec"]["runtimeClassName"].as_str(),
        manifest("runtimeclass.yaml")["metadata"]["name"].as_str()
    );
    let mut pod = cri.pod("web");
    for (k, v) in example["metadata"]["annotations"].as_mapping().unwrap() {
        pod.annotations
            .insert(k.as_str().unwrap().into(), v.as_str().unwrap().into());
    }
    let spec = &example["spec"]["containers"][0];
    let port = spec["ports"][0]["containerPort"].as_u64().unwrap();
    let limit = match spec["resources"]["limits"]["memory"].as_str().unwrap() {
        m if m.ends_with("Mi") => m.trim_end_matches("Mi").parse::<i64>().unwrap() << 20,
        m => panic!("memory limit {m}"),
    };
    let pod_id = cri.run_pod(&pod, &handler());
    let ip = cri.pod_status(&pod_id).status.unwrap().network.unwrap().ip;
    let mut web = container(spec["name"].as_str().unwrap(), HTTP_HELLO, &[]);
    web.annotations = pod.annotations.clone();
    web.linux
        .as_mut()
        .unwrap()
        .resources
        .as_mut()
        .unwrap()
        .memory_limit_in_bytes = limit;
    let web = cri.create(&pod_id, &pod, web);
    let mut sidecar = container("sidecar", BUSYBOX, &[]);
    sidecar.command = vec!["sleep".into(), "3600".into()];
    let sidecar = cri.create(&pod_id, &pod, sidecar);
    cri.start_container(&web);
    cri.start_container(&sidecar);
    cri.wait_state(&sidecar, ContainerState::ContainerRunning);

    // From the node's network namespace, at the pod's IP.
    let addr = format!("{ip}:{port}");
    let answer = cri.netns.run(move || http_get(&addr, "/"));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains("\r\n\r\n10\r\nhello from wasm\n"),
        "{answer}"
    );
    // From the native sidecar, on the pod's localhost.
    let url = format!("http://127.0.0.1:{port}/");
    let out = cri
        .exec_sync(&sidecar, &["wget", "-q", "-O", "-", &url], 30)
        .unwrap();
    assert_eq!(
        (out.exit_code, String::from_utf8_lossy(&out.stdout).as_ref()),
        (0, "hello from wasm\n"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        cri.status(&web).state,
        ContainerState::ContainerRunning as i32
    );
    // Deleting the pod drains the server and removes everything.
    let pod_netns = cri.pod_netns(&pod_id);
    cri.remove_pod(&pod_id);
    cri.assert_nothing_left(&pod_netns);
}

/// One `GET PATH` over HTTP/1.1 to `addr`, answered whole. An HTTP component's listener is bound
/// at create, so it accepts once its container is started.
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s =
        std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn the_example_runtime_class_and_config_are_what_the_tests_use() {
    let rc = manifest("runtimeclass.yaml");
    assert_eq!(rc["apiVersion"].as_str(), Some("node.k8s.io/v1"));
    let name = rc["metadata"]["name"].as_str().unwrap();
    // The handler is the runtime's name in containerd's CRI configuration.
    let toml = kubernetes("containerd-runtime.toml");
    let table = format!(
        "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.{}]",
        handler()
    );
    assert!(toml.contains(&table), "{toml}");
    assert!(toml.contains(r#"runtime_type = "io.containerd.wasmbox.v1""#));
    // A pod names the class.
    let pod = manifest("pod.yaml");
    assert_eq!(pod["spec"]["runtimeClassName"].as_str(), Some(name));
}

#[test]
fn kubelets_single_file_mounts_and_termination_message_reach_a_wasm_guest() {
    let cri = Cri::start(&[FILES]);
    let pod = cri.pod("files");
    let pod_id = cri.run_pod(&pod, &handler());
    // What kubelet mounts in each container besides containerd's /etc files: the termination
    // message file (a fresh empty file of its own), and here one read-only config file.
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("settings"), "mode=strict\n").unwrap();
    std::fs::write(host.path().join("sibling"), "never shown").unwrap();
    let run = |name: &str, args: &[&str]| -> (ContainerStatus, String) {
        let log = host.path().join(format!("{name}-termination-log"));
        std::fs::write(&log, "").unwrap();
        let mut c = container(name, FILES, args);
        c.mounts = vec![
            Mount {
                container_path: "/dev/termination-log".into(),
                host_path: log.to_string_lossy().into_owned(),
                ..Default::default()
            },
            Mount {
                container_path: "/etc/app/settings".into(),
                host_path: host.path().join("settings").to_string_lossy().into_owned(),
                readonly: true,
                ..Default::default()
            },
        ];
        let id = cri.create(&pod_id, &pod, c);
        cri.start_container(&id);
        let st = cri.wait_state(&id, ContainerState::ContainerExited);
        let out = cri
            .log(&pod, name)
            .lines()
            .filter_map(|l| l.splitn(4, ' ').nth(3))
            .collect::<Vec<_>>()
            .join("\n");
        (st, out)
    };
    let (st, out) = run("hostname", &["cat", "/etc/hostname"]);
    assert_eq!((st.exit_code, out.trim()), (0, "files"), "{st:#?}");
    let (st, out) = run("hosts", &["cat", "/etc/hosts"]);
    assert_eq!(st.exit_code, 0, "{out}");
    assert!(out.contains("localhost"), "{out}");
    let (st, out) = run("resolv", &["cat", "/etc/resolv.conf"]);
    assert_eq!(st.exit_code, 0, "{out}");
    // Only the bound files: nothing else of their host directories.
    let (_, out) = run("etc", &["ls", "/etc"]);
    assert_eq!(out, "app\nhostname\nhosts\nresolv.conf");
    let (_, out) = run("app", &["ls", "/etc/app"]);
    assert_eq!(out, "settings");
    // The kernel refuses the write (EROFS, which WASI reports as an I/O error).
    let (st, out) = run("readonly", &["write", "/etc/app/settings", "x"]);
    assert_eq!(st.exit_code, 1, "{out}");
    assert!(out.starts_with("error: "), "{out}");
    assert_eq!(
        std::fs::read_to_string(host.path().join("settings")).unwrap(),
        "mode=strict\n"
    );
    // The termination message, read as kubelet reads it: from the host file of the mount at
    // the container's terminationMessagePath, which ContainerStatus lists.
    let (st, _) = run(
        "message",
        &["write", "/dev/termination-log", "config invalid: mode"],
    );
    assert_eq!(st.exit_code, 0);
    let mount = st
        .mounts
        .iter()
        .find(|m| m.container_path == "/dev/termination-log")
        .expect("the termination-log mount in the status");
    assert_eq!(
        std::fs::read_to_string(&mount.host_path).unwrap(),
        "config invalid: mode"
    );
    cri.remove_pod(&pod_id);
}

/// What a streamed exec gave.
#[derive(Debug, Default)]
struct Streamed {
    stdout: String,
    stderr: String,
    /// The status message (channel 3): `{"status":"Success"}` or a failure with the exit code.
    status: serde_json::Value,
}

impl Streamed {
    /// The exit code the status carries (0 on success).
    fn exit_code(&self) -> i64 {
        if self.status["status"] == "Success" {
            return 0;
        }
        self.status["details"]["causes"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["reason"] == "ExitCode"))
            .and_then(|c| c["message"].as_str())
            .and_then(|m| m.parse().ok())
            .unwrap_or_else(|| panic!("no exit code in {:#}", self.status))
    }
}

/// A websocket client of Kubernetes' remote command protocol (`v4.channel.k8s.io`): each binary
/// message's first byte is its channel (1 stdout, 2 stderr, 3 the final status).
fn websocket_exec(url: &str) -> Streamed {
    use std::io::{BufRead, BufReader, Read, Write};
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut s = std::net::TcpStream::connect(host).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: d2FzbWJveC10ZXN0LWtleQ==\r\n\
         Sec-WebSocket-Protocol: v4.channel.k8s.io\r\n\r\n"
    )
    .unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 101"), "{line}");
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
    }
    let mut out = Streamed::default();
    loop {
        let mut head = [0u8; 2];
        if r.read_exact(&mut head).is_err() {
            break;
        }
        let opcode = head[0] & 0x0f;
        let len = match head[1] & 0x7f {
            126 => {
                let mut b = [0u8; 2];
                r.read_exact(&mut b).unwrap();
                u16::from_be_bytes(b) as usize
            }
            127 => {
                let mut b = [0u8; 8];
                r.read_exact(&mut b).unwrap();
                u64::from_be_bytes(b) as usize
            }
            n => n as usize,
        };
        let mut payload = vec![0u8; len];
        r.read_exact(&mut payload).unwrap();
        if opcode == 8 {
            break;
        }
        let Some((&channel, data)) = payload.split_first() else {
            continue;
        };
        let text = String::from_utf8_lossy(data);
        match channel {
            1 => out.stdout.push_str(&text),
            2 => out.stderr.push_str(&text),
            3 if !data.is_empty() => out.status = serde_json::from_slice(data).unwrap(),
            _ => {}
        }
    }
    out
}

#[test]
fn exec_runs_wasm_programs_in_the_container_and_logs_can_be_reopened() {
    let cri = Cri::start(&[FILES, HTTP_HELLO]);
    let pod = cri.pod("exec");
    let pod_id = cri.run_pod(&pod, &handler());
    let id = cri.create(&pod_id, &pod, container("app", FILES, &["sleep", "600000"]));
    cri.start_container(&id);
    cri.wait_state(&id, ContainerState::ContainerRunning);

    // ExecSync, as liveness probes and `kubectl exec` without a terminal use it.
    let out = cri.exec_sync(&id, &["/app.wasm", "args", "x"], 30).unwrap();
    assert_eq!(
        (out.exit_code, String::from_utf8_lossy(&out.stdout).as_ref()),
        (0, "/app.wasm\nargs\nx\n")
    );
    let out = cri.exec_sync(&id, &["/app.wasm", "exit", "3"], 30).unwrap();
    assert_eq!(out.exit_code, 3);
    // The container's capabilities, nothing more: its rootfs, not the host's.
    let out = cri.exec_sync(&id, &["/app.wasm", "ls", "/"], 30).unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("app.wasm"));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("usr"));
    // A probe's timeout ends the program.
    let t = Instant::now();
    let late = cri.exec_sync(&id, &["/app.wasm", "sleep", "600000"], 1);
    assert!(late.is_err(), "{late:?}");
    assert!(t.elapsed() < Duration::from_secs(30));
    // A native program is refused in a wasm container, clearly.
    let native = cri.exec_sync(&id, &["/bin/sh", "-c", "true"], 30);
    let e = native.unwrap_err();
    assert!(
        e.message().contains("\"/bin/sh\" does not exist"),
        "{}",
        e.message()
    );

    // Streaming exec through the CRI streaming server.
    let s = cri.exec_stream(&id, &["/app.wasm", "args", "streamed"]);
    assert_eq!(
        (s.exit_code(), s.stdout.as_str()),
        (0, "/app.wasm\nargs\nstreamed\n")
    );
    let s = cri.exec_stream(&id, &["/app.wasm", "exit", "4"]);
    assert_eq!(s.exit_code(), 4, "{s:?}");
    assert_eq!(
        cri.status(&id).state,
        ContainerState::ContainerRunning as i32
    );

    // ReopenContainerLog, as kubelet's log rotation uses it: an HTTP component logs one access
    // line per request; after the rename and reopen, the next line goes to the new file.
    let web = cri.create(&pod_id, &pod, container("web", HTTP_HELLO, &[]));
    cri.start_container(&web);
    let ip = cri.pod_status(&pod_id).status.unwrap().network.unwrap().ip;
    let addr = format!("{ip}:8080");
    let get = |path: &'static str| {
        let addr = addr.clone();
        cri.netns.run(move || http_get(&addr, path))
    };
    let first = get("/first");
    assert!(
        first.starts_with("HTTP/1.1 404"),
        "{first}\n{}",
        cri.log(&pod, "web")
    );
    let log = Path::new(&pod.log_directory).join("web/0.log");
    wait_until("the first access line", || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("method=GET path=/first "))
    });
    let rotated = log.with_extension("log.1");
    std::fs::rename(&log, &rotated).unwrap();
    cri.call(cri.rs().reopen_container_log(ReopenContainerLogRequest {
        container_id: web.clone(),
    }))
    .unwrap();
    assert!(get("/second").starts_with("HTTP/1.1 404"));
    wait_until("the second access line in the new file", || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("method=GET path=/second "))
    });
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(
        old.contains("path=/first ") && !old.contains("path=/second "),
        "{old}"
    );
    cri.remove_pod(&pod_id);
}

#[test]
fn memory_limits_end_a_guest_as_oomkilled_and_change_live() {
    let cri = Cri::start(&[FILES, WAT]);
    let pod = cri.pod("memory");
    let pod_id = cri.run_pod(&pod, &handler());
    // resources.limits.memory: 16 MiB, and the guest asks for 64.
    let mut hungry = container("hungry", FILES, &["alloc", "64"]);
    hungry
        .linux
        .as_mut()
        .unwrap()
        .resources
        .as_mut()
        .unwrap()
        .memory_limit_in_bytes = 16 << 20;
    let hungry = cri.create(&pod_id, &pod, hungry);
    cri.start_container(&hungry);
    let st = cri.wait_state(&hungry, ContainerState::ContainerExited);
    assert_eq!(
        (st.exit_code, st.reason.as_str()),
        (137, "OOMKilled"),
        "{st:#?}"
    );
    // UpdateContainerResources lowers a running guest's limit: it ends at its next growth.
    let mut grow = container("grow", WAT, &[]);
    grow.command = vec!["/grow.wasm".into()];
    let grow = cri.create(&pod_id, &pod, grow);
    cri.start_container(&grow);
    cri.wait_state(&grow, ContainerState::ContainerRunning);
    cri.update_memory(&grow, 2 << 20);
    let st = cri.wait_state(&grow, ContainerState::ContainerExited);
    assert_eq!(
        (st.exit_code, st.reason.as_str()),
        (137, "OOMKilled"),
        "{st:#?}"
    );
    cri.remove_pod(&pod_id);
}

#[test]
fn pod_annotations_grant_the_network_and_a_guest_without_a_grant_has_none() {
    let cri = Cri::start(&[ECHO, NET_PROBE]);
    // A server pod: its grant lets the echo server listen on the pod's port 7000.
    let mut server = cri.pod("server");
    server
        .annotations
        .insert("wasmbox.net.listen".into(), "0.0.0.0:7000".into());
    let server_id = cri.run_pod(&server, &handler());
    let echo = cri.create(&server_id, &server, container("echo", ECHO, &[]));
    cri.start_container(&echo);
    wait_until("the echo server listens", || {
        cri.log(&server, "echo").contains("listening on fd")
    });
    let ip = cri
        .pod_status(&server_id)
        .status
        .unwrap()
        .network
        .unwrap()
        .ip;
    let target = format!("{ip}:7000");
    let probe = |pod: &PodSandboxConfig, pod_id: &str, name: &str| {
        let id = cri.create(
            pod_id,
            pod,
            container(name, NET_PROBE, &["connect", &ip, "7000"]),
        );
        cri.start_container(&id);
        let st = cri.wait_state(&id, ContainerState::ContainerExited);
        (st.exit_code, cri.log(pod, name))
    };
    // A client pod granted that address.
    let mut granted = cri.pod("granted");
    granted
        .annotations
        .insert("wasmbox.net.connect".into(), target.clone());
    let granted_id = cri.run_pod(&granted, &handler());
    let (code, log) = probe(&granted, &granted_id, "client");
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("stdout F connected"), "{log}");
    // A pod without grants has an IP, but its guest has no network.
    let bare = cri.pod("bare");
    let bare_id = cri.run_pod(&bare, &handler());
    assert!(
        !cri.pod_status(&bare_id)
            .status
            .unwrap()
            .network
            .unwrap()
            .ip
            .is_empty()
    );
    let (code, log) = probe(&bare, &bare_id, "client");
    assert_eq!(code, 1, "{log}");
    assert!(log.contains("stdout F error: access-denied"), "{log}");
    for id in [&granted_id, &bare_id, &server_id] {
        cri.remove_pod(id);
    }
}

#[test]
fn volumes_are_bind_mounts_with_read_only_enforced() {
    let cri = Cri::start(&[FILES]);
    let pod = cri.pod("volumes");
    let pod_id = cri.run_pod(&pod, &handler());
    let host = tempfile::tempdir().unwrap();
    let (config, scratch) = (host.path().join("config"), host.path().join("scratch"));
    std::fs::create_dir_all(&config).unwrap();
    std::fs::create_dir_all(&scratch).unwrap();
    std::fs::write(config.join("app.conf"), "level=3").unwrap();
    let mounts = vec![
        // A hostPath volume mounted readOnly.
        Mount {
            container_path: "/config".into(),
            host_path: config.to_string_lossy().into_owned(),
            readonly: true,
            ..Default::default()
        },
        // An emptyDir: a host directory of kubelet's, writable.
        Mount {
            container_path: "/scratch".into(),
            host_path: scratch.to_string_lossy().into_owned(),
            ..Default::default()
        },
    ];
    let run = |name: &str, args: &[&str]| {
        let mut c = container(name, FILES, args);
        c.mounts = mounts.clone();
        let id = cri.create(&pod_id, &pod, c);
        cri.start_container(&id);
        let st = cri.wait_state(&id, ContainerState::ContainerExited);
        (st.exit_code, cri.log(&pod, name))
    };
    let (code, log) = run("read", &["cat", "/config/app.conf"]);
    assert_eq!(code, 0, "{log}");
    // No newline at its end: a partial line (`P`) in the CRI format.
    assert!(log.contains("stdout P level=3"), "{log}");
    let (code, _) = run("write-ro", &["write", "/config/app.conf", "x"]);
    assert_eq!(code, 1);
    let (code, _) = run("create-ro", &["write", "/config/new", "x"]);
    assert_eq!(code, 1);
    assert_eq!(
        std::fs::read_to_string(config.join("app.conf")).unwrap(),
        "level=3"
    );
    assert!(!config.join("new").exists());
    let (code, log) = run("write-rw", &["write", "/scratch/out", "done"]);
    assert_eq!(code, 0, "{log}");
    assert_eq!(
        std::fs::read_to_string(scratch.join("out")).unwrap(),
        "done"
    );
    cri.remove_pod(&pod_id);
}

/// A pod cgroup as kubelet makes one (cgroupfs driver): `/wasmbox-test-PID-N/podNAME` in every
/// cgroup hierarchy, with a CPU limit; removed with everything below it when dropped.
struct PodCgroupDir {
    /// The cgroup path, as `cgroup_parent` names it.
    path: String,
}

/// The mount point of the v1 hierarchy holding `controller` (`cpu` alone, or `cpu,cpuacct`),
/// or of cgroup v2.
fn cgroup_mount(controller: &str) -> PathBuf {
    let root = Path::new("/sys/fs/cgroup");
    for name in [controller, "cpu,cpuacct"] {
        let dir = root.join(name);
        if dir.join("tasks").exists() && (name == controller || controller.starts_with("cpu")) {
            return dir;
        }
    }
    assert!(
        root.join("cgroup.controllers").exists(),
        "no cgroup hierarchy for {controller}"
    );
    root.to_path_buf()
}

impl PodCgroupDir {
    /// Makes the pod's cgroup with a CPU limit of `quota_us` per 100 ms.
    fn new(name: &str, quota_us: u64) -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let top = format!(
            "wasmbox-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        );
        let path = format!("/{top}/pod{name}");
        // In every hierarchy, as kubelet makes a pod's cgroup (systemd's own one aside).
        for e in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
            let m = e.path();
            let v1 = m.join("cgroup.procs").exists() && !m.ends_with("systemd");
            if v1
                && !std::fs::symlink_metadata(&m)
                    .unwrap()
                    .file_type()
                    .is_symlink()
            {
                std::fs::create_dir_all(m.join(path.trim_start_matches('/'))).unwrap();
            }
        }
        if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            std::fs::create_dir_all(Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/')))
                .unwrap();
        }
        let cpu = cgroup_mount("cpu").join(path.trim_start_matches('/'));
        if cpu.join("cpu.cfs_quota_us").exists() {
            std::fs::write(cpu.join("cpu.cfs_period_us"), "100000").unwrap();
            std::fs::write(cpu.join("cpu.cfs_quota_us"), quota_us.to_string()).unwrap();
        } else {
            std::fs::write(cpu.join("cpu.max"), format!("{quota_us} 100000")).unwrap();
        }
        PodCgroupDir { path }
    }

    /// The CPU time used in it (and below), in nanoseconds.
    fn cpu_ns(&self) -> u64 {
        let dir = cgroup_mount("cpuacct").join(self.path.trim_start_matches('/'));
        if let Ok(v) = std::fs::read_to_string(dir.join("cpuacct.usage")) {
            return v.trim().parse().unwrap();
        }
        stat_field(&dir.join("cpu.stat"), "usage_usec") * 1000
    }

    /// How many periods its CPU limit throttled.
    fn throttled(&self) -> u64 {
        let dir = cgroup_mount("cpu").join(self.path.trim_start_matches('/'));
        stat_field(&dir.join("cpu.stat"), "nr_throttled")
    }

    /// The shim's cgroup below it, in the cpu hierarchy.
    fn shim_dir(&self) -> PathBuf {
        cgroup_mount("cpu")
            .join(self.path.trim_start_matches('/'))
            .join("wasmbox")
    }
}

fn stat_field(file: &Path, key: &str) -> u64 {
    let text = std::fs::read_to_string(file).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{key} in {}: {text}", file.display()))
}

impl Drop for PodCgroupDir {
    fn drop(&mut self) {
        let top = self.path.split('/').nth(1).unwrap().to_string();
        let Ok(mounts) = std::fs::read_dir("/sys/fs/cgroup") else {
            return;
        };
        let mut roots: Vec<PathBuf> = mounts.flatten().map(|e| e.path().join(&top)).collect();
        roots.push(Path::new("/sys/fs/cgroup").join(&top));
        for root in roots.into_iter().filter(|r| r.is_dir()) {
            // Deepest first: a cgroup is removed with rmdir once its children are gone.
            let mut dirs = vec![root.clone()];
            let mut i = 0;
            while i < dirs.len() {
                if let Ok(rd) = std::fs::read_dir(&dirs[i]) {
                    dirs.extend(rd.flatten().filter(|e| e.path().is_dir()).map(|e| e.path()));
                }
                i += 1;
            }
            for d in dirs.iter().rev() {
                let _ = std::fs::remove_dir(d);
            }
        }
    }
}

#[test]
fn a_pods_wasm_work_is_charged_to_its_cgroup_and_its_cpu_limit_throttles_it() {
    let cri = Cri::start(&[WAT]);
    // A fifth of a CPU for the pod, as kubelet sets a pod's limit on its cgroup.
    let cg = PodCgroupDir::new("charged", 20_000);
    let mut pod = cri.pod("charged");
    pod.linux.as_mut().unwrap().cgroup_parent = cg.path.clone();
    let pod_id = cri.run_pod(&pod, &handler());
    assert!(
        cg.shim_dir().is_dir(),
        "the shim's cgroup below the pod's: {}",
        cri.ctrd
            .log()
            .lines()
            .filter(|l| l.contains("cgroup"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let mut spin = container("spin", WAT, &[]);
    spin.command = vec!["/spin.wasm".into()];
    let spin = cri.create(&pod_id, &pod, spin);
    cri.start_container(&spin);
    cri.wait_state(&spin, ContainerState::ContainerRunning);
    // The guest's CPU as ContainerStats reports it: until it has used 300 ms.
    let cpu = |id: &str| -> u64 {
        cri.call(cri.rs().container_stats(ContainerStatsRequest {
            container_id: id.into(),
        }))
        .unwrap()
        .stats
        .and_then(|s| s.cpu)
        .and_then(|c| c.usage_core_nano_seconds)
        .map(|v| v.value)
        .unwrap_or(0)
    };
    wait_until("the guest has used 300 ms of CPU", || {
        cpu(&spin) >= 300_000_000
    });
    // The pod's cgroup holds that work, and its limit throttled it.
    let guest = cpu(&spin);
    assert!(cg.cpu_ns() >= guest, "pod {} < guest {guest}", cg.cpu_ns());
    assert!(
        cg.throttled() > 0,
        "the pod's CPU limit never throttled its guest"
    );
    // ContainerStats' memory, and ListPodSandboxStats' CPU, which reads the pod's cgroup.
    let stats = cri
        .call(cri.rs().container_stats(ContainerStatsRequest {
            container_id: spin.clone(),
        }))
        .unwrap()
        .stats
        .unwrap();
    let working_set = stats
        .memory
        .and_then(|m| m.working_set_bytes)
        .map(|v| v.value)
        .unwrap_or(0);
    assert!(working_set >= 64 << 10, "working set {working_set}");
    let pods = cri
        .call(cri.rs().list_pod_sandbox_stats(ListPodSandboxStatsRequest {
            filter: Some(PodSandboxStatsFilter {
                id: pod_id.clone(),
                ..Default::default()
            }),
        }))
        .unwrap()
        .stats;
    let pod_cpu = pods[0]
        .linux
        .as_ref()
        .and_then(|l| l.cpu.as_ref())
        .and_then(|c| c.usage_core_nano_seconds.as_ref())
        .map(|v| v.value)
        .unwrap_or(0);
    assert!(
        pod_cpu >= guest,
        "pod sandbox stats {pod_cpu} < guest {guest}"
    );
    // Removing the pod: the shim leaves the pod's cgroup and removes its own.
    cri.remove_pod(&pod_id);
    wait_until("the pod's shim exits", || cri.ctrd.shims().is_empty());
    assert!(!cg.shim_dir().exists());
}

#[test]
fn with_wasmbox_sandbox_runc_a_pod_keeps_runcs_pause_container() {
    let cri = Cri::start_with_env(&[HELLO], &[("WASMBOX_SANDBOX", "runc")]);
    let pod = cri.pod("paused");
    let pod_id = cri.run_pod(&pod, &handler());
    assert_eq!(cri.runc_containers(), std::slice::from_ref(&pod_id));
    let id = cri.create(&pod_id, &pod, container("hello", HELLO, &[]));
    cri.start_container(&id);
    let st = cri.wait_state(&id, ContainerState::ContainerExited);
    assert_eq!((st.exit_code, st.reason.as_str()), (0, "Completed"));
    let pod_netns = cri.pod_netns(&pod_id);
    cri.remove_pod(&pod_id);
    cri.assert_nothing_left(&pod_netns);
}

#[test]
fn a_pod_on_the_runc_shim_with_wasmbox_as_its_binary_runs_wasm_and_native_containers() {
    let cri = Cri::start(&[HELLO, BUSYBOX]);
    let pod = cri.pod("runcshim");
    let pod_id = cri.run_pod(&pod, RUNC_SHIM_HANDLER);
    assert_eq!(
        cri.pod_status(&pod_id).status.unwrap().state,
        PodSandboxState::SandboxReady as i32
    );
    let wasm = cri.create(&pod_id, &pod, container("hello", HELLO, &[]));
    let mut native = container("native", BUSYBOX, &["echo", "native"]);
    native.command = vec!["/bin/busybox".into()];
    let native = cri.create(&pod_id, &pod, native);
    cri.start_container(&wasm);
    cri.start_container(&native);
    let done = cri.wait_state(&wasm, ContainerState::ContainerExited);
    assert_eq!(done.exit_code, 0, "{done:#?}\n{}", cri.ctrd.log_tail());
    assert!(cri.log(&pod, "hello").contains("Hello from wasmbox!"));
    let done = cri.wait_state(&native, ContainerState::ContainerExited);
    assert_eq!(done.exit_code, 0, "{done:#?}");
    assert!(cri.log(&pod, "native").contains("native"));
    cri.remove_pod(&pod_id);
}
