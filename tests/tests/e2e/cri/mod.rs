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

/// The runtime entry of the docs' CRI recipe, which names [`RUNC_SHIM_HANDLER`].
fn runc_shim_entry() -> String {
    let entry = crate::recipes::recipe("containerd-cri.toml");
    assert!(
        entry.contains(&format!("runtimes.{RUNC_SHIM_HANDLER}]")),
        "{entry}"
    );
    entry
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

mod limits;
mod pods;
mod warm;
