//! `wasmbox` as an OCI runtime with runc's command line: driven directly as engines drive runc,
//! and by a real engine, containerd's runc shim (`ctr run --runc-binary`), for wasm and native
//! images.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Out, guest, wasmbox_bin};
use crate::ctrd::{BUSYBOX, Containerd, HELLO, Images, WAT};

/// A runtime root of its own, and a JSON log, as containerd's runc shim gives them.
struct Runtime {
    root: tempfile::TempDir,
    log: PathBuf,
}

impl Runtime {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        let log = root.path().join("log.json");
        Self { root, log }
    }

    /// `wasmbox --root R --log L --log-format json ARGS`, stdio to files.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(wasmbox_bin());
        c.arg("--root")
            .arg(self.root.path().join("state"))
            .arg("--log")
            .arg(&self.log)
            .arg("--log-format=json")
            .args(args);
        c
    }

    fn run(&self, args: &[&str]) -> Out {
        Out::from(self.cmd(args).stdin(Stdio::null()).output().unwrap())
    }

    /// `create`, the container process's stdio going to files in `dir` (never pipes the test
    /// would wait on: the process outlives the command).
    fn create(&self, dir: &Path, bundle: &Path, id: &str, extra: &[&str]) -> Out {
        let mut args = vec!["create", "--bundle", bundle.to_str().unwrap()];
        args.extend_from_slice(extra);
        args.push(id);
        let status = self
            .cmd(&args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join(format!("{id}.out"))).unwrap())
            .stderr(std::fs::File::create(dir.join(format!("{id}.err"))).unwrap())
            .status()
            .unwrap();
        Out {
            code: status.code().unwrap_or(-1),
            stdout: std::fs::read_to_string(dir.join(format!("{id}.out"))).unwrap(),
            stderr: std::fs::read_to_string(dir.join(format!("{id}.err"))).unwrap(),
        }
    }

    fn state(&self, id: &str) -> serde_json::Value {
        let out = self.run(&["state", id]);
        assert_eq!(out.code, 0, "{out:#?}");
        serde_json::from_str(&out.stdout).unwrap()
    }

    fn wait_status(&self, id: &str, want: &str) {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(60) {
            if self.state(id)["status"] == want {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("{id} never became {want}: {}", self.state(id));
    }
}

/// A bundle running the wasm file `wasm` (copied in as `/app.wasm`) with `args`.
fn bundle(dir: &Path, wasm: &Path, args: &[&str]) -> PathBuf {
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    std::fs::copy(wasm, rootfs.join("app.wasm")).unwrap();
    let mut argv = vec!["/app.wasm".to_string()];
    argv.extend(args.iter().map(|a| a.to_string()));
    let spec = serde_json::json!({
        "ociVersion": "1.0.2",
        "root": {"path": "rootfs"},
        "process": {"cwd": "/", "args": argv, "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0}},
        "linux": {"namespaces": [{"type": "mount"}]},
    });
    std::fs::write(dir.join("config.json"), spec.to_string()).unwrap();
    dir.to_path_buf()
}

fn spin() -> PathBuf {
    let t = std::env::temp_dir().join(format!("wasmbox-oci-spin-{}.wasm", std::process::id()));
    let text = std::fs::read_to_string(guest("wat/spin.wat")).unwrap();
    std::fs::write(&t, wat::parse_str(text).unwrap()).unwrap();
    t
}

#[test]
fn create_start_state_and_delete_as_an_engine_drives_them() {
    let rt = Runtime::new();
    let b = tempfile::tempdir().unwrap();
    let bundle = bundle(b.path(), &guest("files/files.wasm"), &["args", "x"]);
    let pid_file = b.path().join("pid");
    let out_file = b.path().join("c1.out");
    let out = rt.create(
        b.path(),
        &bundle,
        "c1",
        &["--pid-file", pid_file.to_str().unwrap()],
    );
    assert_eq!(out.code, 0, "{out:#?}");
    let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    let st = rt.state("c1");
    assert_eq!(st["status"], "created", "{st}");
    assert_eq!(st["pid"], pid);
    assert_eq!(st["bundle"], bundle.to_str().unwrap());
    // Nothing runs before start.
    assert_eq!(std::fs::read_to_string(&out_file).unwrap(), "");
    // A second create with the same id is refused, and the first is untouched.
    let again = rt.run(&["create", "--bundle", bundle.to_str().unwrap(), "c1"]);
    assert_eq!(again.code, 1, "{again:#?}");
    assert!(
        again.stderr.contains("container with id exists: c1"),
        "{again:#?}"
    );
    let log = std::fs::read_to_string(&rt.log).unwrap();
    let last: serde_json::Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    assert_eq!(last["level"], "error");
    assert!(last["msg"].as_str().unwrap().contains("exists"), "{last}");
    assert_eq!(rt.state("c1")["status"], "created");

    assert_eq!(rt.run(&["start", "c1"]).code, 0);
    rt.wait_status("c1", "stopped");
    assert_eq!(
        std::fs::read_to_string(&out_file).unwrap(),
        "/app.wasm\nargs\nx\n"
    );
    let again = rt.run(&["start", "c1"]);
    assert!(
        again
            .stderr
            .contains("cannot start a container that has stopped"),
        "{again:#?}"
    );
    let list = rt.run(&["list", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(v[0]["id"], "c1", "{list:#?}");
    assert_eq!(rt.run(&["delete", "c1"]).code, 0);
    let gone = rt.run(&["state", "c1"]);
    assert!(
        gone.stderr.contains("container c1 does not exist"),
        "{gone:#?}"
    );
    assert!(!rt.root.path().join("state/c1").exists());
}

#[test]
fn run_gives_the_guests_exit_status_and_cleans_up() {
    let rt = Runtime::new();
    let b = tempfile::tempdir().unwrap();
    let bundle = bundle(b.path(), &guest("files/files.wasm"), &["exit", "7"]);
    let out = rt.run(&["run", "--bundle", bundle.to_str().unwrap(), "r1"]);
    assert_eq!(out.code, 7, "{out:#?}");
    assert!(!rt.root.path().join("state/r1").exists());
}

#[test]
fn kill_reaches_the_guest_and_delete_needs_force_while_it_runs() {
    let rt = Runtime::new();
    let b = tempfile::tempdir().unwrap();
    let bundle = bundle(b.path(), &spin(), &[]);
    let create = |id: &str| {
        let out = rt.create(b.path(), &bundle, id, &[]);
        assert_eq!(out.code, 0, "{out:#?}");
        assert_eq!(rt.run(&["start", id]).code, 0);
        rt.wait_status(id, "running");
    };
    create("k1");
    let refused = rt.run(&["delete", "k1"]);
    assert_eq!(refused.code, 1);
    assert!(
        refused.stderr.contains("not stopped: running"),
        "{refused:#?}"
    );
    assert_eq!(rt.run(&["pause", "k1"]).code, 0);
    assert_eq!(rt.state("k1")["status"], "paused");
    assert_eq!(rt.run(&["resume", "k1"]).code, 0);
    assert_eq!(rt.state("k1")["status"], "running");
    let ps = rt.run(&["ps", "--format", "json", "k1"]);
    let pids: Vec<i32> = serde_json::from_str(&ps.stdout).unwrap();
    assert_eq!(pids, [rt.state("k1")["pid"].as_i64().unwrap() as i32]);
    assert_eq!(rt.run(&["kill", "k1", "TERM"]).code, 0);
    rt.wait_status("k1", "stopped");
    let late = rt.run(&["kill", "k1", "KILL"]);
    assert!(late.stderr.contains("container not running"), "{late:#?}");
    assert_eq!(rt.run(&["delete", "k1"]).code, 0);
    create("k2");
    assert_eq!(rt.run(&["delete", "--force", "k2"]).code, 0);
    assert!(!rt.root.path().join("state/k2").exists());
    // A container process that dies outside the runtime's knowledge reads as stopped, and its
    // state is cleaned by delete.
    create("k3");
    let pid = rt.state("k3")["pid"].as_i64().unwrap() as u32;
    crate::ctrd::signal(pid, libc::SIGKILL);
    rt.wait_status("k3", "stopped");
    assert_eq!(rt.run(&["delete", "k3"]).code, 0);
    assert!(!rt.root.path().join("state/k3").exists());
}

#[test]
fn a_native_bundle_goes_to_runc_with_a_root_of_its_own() {
    let rt = Runtime::new();
    let b = tempfile::tempdir().unwrap();
    let rootfs = b.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    // tests/run.sh installs busybox-static.
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    // runc's default spec, as `wasmbox spec` writes it, running busybox without a terminal.
    assert_eq!(
        rt.run(&["spec", "--bundle", b.path().to_str().unwrap()])
            .code,
        0
    );
    let again = rt.run(&["spec", "--bundle", b.path().to_str().unwrap()]);
    assert!(again.stderr.contains("exists"), "{again:#?}");
    let path = b.path().join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    spec["process"]["args"] = serde_json::json!(["/bin/busybox", "echo", "native"]);
    spec["process"]["terminal"] = serde_json::json!(false);
    spec["root"] = serde_json::json!({"path": "rootfs", "readonly": true});
    std::fs::write(&path, spec.to_string()).unwrap();
    let out = rt.run(&["run", "--bundle", b.path().to_str().unwrap(), "n1"]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(out.stdout, "native\n");
}

#[test]
fn containerds_runc_shim_runs_wasm_and_native_images_through_wasmbox() {
    let c = Containerd::start();
    for n in [HELLO, WAT, BUSYBOX] {
        c.import(&Images::get().archive(n));
    }
    let bin = wasmbox_bin();
    let runc = |image: &str, id: &str, args: &[&str]| {
        let mut a = vec![
            "run",
            "--rm",
            "--runtime",
            "io.containerd.runc.v2",
            "--runc-binary",
            bin.to_str().unwrap(),
            image,
            id,
        ];
        a.extend_from_slice(args);
        c.ctr(&a)
    };
    let out = runc(HELLO, "hello", &[]);
    assert_eq!(out.code, 0, "{out:#?}\n{}", c.log_tail());
    assert!(out.stdout.contains("Hello from wasmbox!"), "{out:#?}");
    let out = runc(BUSYBOX, "native", &["sh", "-c", "echo native; exit 3"]);
    assert_eq!(out.code, 3, "{out:#?}\n{}", c.log_tail());
    assert_eq!(out.stdout, "native\n");
}

/// A podman of its own (root, run root and storage below `dir`), with wasmbox as its runtime.
/// On these hosts podman needs the ulimits given to `run`.
fn podman(dir: &Path) -> Command {
    let mut c = Command::new("podman");
    c.arg("--root")
        .arg(dir.join("root"))
        .arg("--runroot")
        .arg(dir.join("run"))
        .arg("--runtime")
        .arg(wasmbox_bin())
        .args([
            "--storage-driver",
            "vfs",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "file",
        ]);
    c
}

const ULIMITS: [&str; 4] = [
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=4096:4096",
];

/// Removes every container of a test's podman when the test ends.
struct PodmanGone(PathBuf);

impl Drop for PodmanGone {
    fn drop(&mut self) {
        let _ = podman(&self.0).args(["rm", "-f", "-a"]).output();
    }
}

#[test]
fn podman_runs_wasm_and_native_images_through_wasmbox() {
    let t = tempfile::tempdir().unwrap();
    let pm = t.path().join("podman");
    let _gone = PodmanGone(pm.clone());
    let wb = crate::common::Wasmbox::new();
    let store = t.path().join("store");
    let tar = t.path().join("files.tar");
    let files = guest("files/files.wasm");
    let s = store.to_str().unwrap();
    wb.run(&[
        "build",
        "--store",
        s,
        "--format",
        "compat",
        "-t",
        "localhost/files:pm",
        files.to_str().unwrap(),
    ])
    .code(0);
    wb.run(&[
        "save",
        "--store",
        s,
        "-o",
        tar.to_str().unwrap(),
        "localhost/files:pm",
    ])
    .code(0);
    let run = |c: &mut Command| Out::from(c.output().expect("podman (installed by tests/run.sh)"));
    let out = run(podman(&pm).args(["load", "-q", "-i"]).arg(&tar));
    assert_eq!(out.code, 0, "{out:#?}");
    let out = run(podman(&pm)
        .args(["load", "-q", "-i"])
        .arg(Images::get().archive(BUSYBOX)));
    assert_eq!(out.code, 0, "{out:#?}");
    let podman_run = |args: &[&str]| {
        let mut c = podman(&pm);
        c.args(["run", "--rm", "--network", "none"])
            .args(ULIMITS)
            .args(args);
        run(&mut c)
    };
    // Output and exit status.
    let out = podman_run(&["localhost/files:pm", "args", "a b"]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(out.stdout, "/app.wasm\nargs\na b\n");
    let out = podman_run(&["localhost/files:pm", "exit", "7"]);
    assert_eq!(out.code, 7, "{out:#?}");
    // A read-write volume is written, a read-only one is not.
    let vol = t.path().join("vol");
    std::fs::create_dir(&vol).unwrap();
    let rw = format!("{}:/data", vol.display());
    let out = podman_run(&["-v", &rw, "localhost/files:pm", "write", "/data/f", "hello"]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(std::fs::read_to_string(vol.join("f")).unwrap(), "hello");
    let ro = format!("{}:/data:ro", vol.display());
    let out = podman_run(&["-v", &ro, "localhost/files:pm", "write", "/data/g", "no"]);
    assert_ne!(out.code, 0, "{out:#?}");
    assert!(!vol.join("g").exists());
    // `-it`: the guest's stdio is a terminal whose master conmon got over the console socket.
    let mut it = podman(&pm);
    it.args(["run", "-it", "--rm", "--network", "none"])
        .args(ULIMITS)
        .args(["localhost/files:pm", "args", "tty"]);
    let line: Vec<String> = std::iter::once(it.get_program())
        .chain(it.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let out = run(Command::new("script").args(["-qec", &line.join(" "), "/dev/null"]));
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(
        out.stdout.contains("args\r\ntty\r\n"),
        "through a terminal: {out:#?}"
    );
    // A native image goes to runc.
    let out = podman_run(&[BUSYBOX, "sh", "-c", "echo native; exit 3"]);
    assert_eq!(out.code, 3, "{out:#?}");
    assert_eq!(out.stdout, "native\n");
    // stop ends a looping guest at once with 143; logs has its output.
    let mut c = podman(&pm);
    c.args(["run", "-d", "--network", "none"])
        .args(ULIMITS)
        .args(["localhost/files:pm", "loop"]);
    let out = run(&mut c);
    assert_eq!(out.code, 0, "{out:#?}");
    let id = out.stdout.trim().to_string();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(60) {
        let logs = run(podman(&pm).args(["logs", &id]));
        if logs.stdout.contains("looping") {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // exec runs another program of the image beside it.
    let out = run(podman(&pm).args(["exec", &id, "/app.wasm", "args", "inside"]));
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(out.stdout, "/app.wasm\nargs\ninside\n");
    // stats reads the container's cgroup, which its process joined.
    let out = run(podman(&pm).args(["stats", "--no-stream", "--format", "{{.MemUsage}}", &id]));
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(!out.stdout.trim().starts_with("0B"), "{out:#?}");
    // pause stops its progress, unpause lets it go on.
    assert_eq!(run(podman(&pm).args(["pause", &id])).code, 0);
    let out = run(podman(&pm).args(["inspect", "--format", "{{.State.Status}}", &id]));
    assert_eq!(out.stdout.trim(), "paused", "{out:#?}");
    assert_eq!(run(podman(&pm).args(["unpause", &id])).code, 0);
    let started = Instant::now();
    let out = run(podman(&pm).args(["stop", "-t", "10", &id]));
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stop took {:?}",
        started.elapsed()
    );
    let out = run(podman(&pm).args(["inspect", "--format", "{{.State.ExitCode}}", &id]));
    assert_eq!(out.stdout.trim(), "143", "{out:#?}");
    let out = run(podman(&pm).args(["rm", &id]));
    assert_eq!(out.code, 0, "{out:#?}");
    // What podman removed leaves nothing in the runtime's state (podman gives no --root).
    let left: Vec<String> = std::fs::read_dir(DEFAULT_STATE_ROOT)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(!left.contains(&id), "{left:?}");
}

/// The runtime's state root when an engine gives none.
const DEFAULT_STATE_ROOT: &str = "/run/wasmbox/runtime";

/// Debian's docker.io 20.10 (a newer client elsewhere on `PATH` is not the one meant).
const DOCKERD: &str = "/usr/sbin/dockerd";
const DOCKER: &str = "/usr/bin/docker";

/// A dockerd of its own (data, exec root and socket in a temp dir, no iptables, no bridge), with
/// wasmbox added as the runtime `wasmbox`; stopped on drop.
struct Dockerd {
    child: std::process::Child,
    host: String,
    dir: tempfile::TempDir,
}

impl Dockerd {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let host = format!("unix://{}", dir.path().join("docker.sock").display());
        let log = std::fs::File::create(dir.path().join("dockerd.log")).unwrap();
        let child = Command::new(DOCKERD)
            .arg("--data-root")
            .arg(dir.path().join("data"))
            .arg("--exec-root")
            .arg(dir.path().join("exec"))
            .arg("--pidfile")
            .arg(dir.path().join("dockerd.pid"))
            .args([
                "-H",
                &host,
                "--iptables=false",
                "--bridge=none",
                "--storage-driver",
                "vfs",
            ])
            .arg("--add-runtime")
            .arg(format!("wasmbox={}", wasmbox_bin().display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("dockerd (tests/run.sh installs docker.io)");
        let d = Dockerd { child, host, dir };
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(90) {
            if d.docker(&["version"]).code == 0 {
                return d;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("dockerd did not come up:\n{}", d.log());
    }

    fn docker(&self, args: &[&str]) -> Out {
        Out::from(
            Command::new(DOCKER)
                .args(["-H", &self.host])
                .args(args)
                .stdin(Stdio::null())
                .output()
                .unwrap(),
        )
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let out = self.docker(&["ps", "-aq"]);
        for id in out.stdout.split_whitespace() {
            let _ = self.docker(&["rm", "-f", id]);
        }
        crate::ctrd::signal(self.child.id(), libc::SIGTERM);
        let _ = self.child.wait();
    }
}

#[test]
fn docker_runs_wasm_images_built_the_docker_way_through_wasmbox() {
    let reg = crate::registry::Registry::start();
    let wb = crate::common::Wasmbox::new();
    let t = tempfile::tempdir().unwrap();
    let s = t.path().join("store");
    let s = s.to_str().unwrap();
    let files = guest("files/files.wasm");
    // As Docker users have them: linux/amd64, the wasm found by its magic bytes.
    wb.run(&[
        "build",
        "--store",
        s,
        "--format",
        "compat",
        "--platform",
        "linux/amd64",
        "-t",
        "localhost/files:docker",
        files.to_str().unwrap(),
    ])
    .code(0);
    let image = format!("{}/files:docker", reg.addr);
    wb.run(&["push", "--store", s, "localhost/files:docker", &image])
        .code(0);
    let d = Dockerd::start();
    let out = d.docker(&["pull", &image]);
    assert_eq!(out.code, 0, "{out:#?}\n{}", d.log());
    let run = |args: &[&str]| {
        let mut a = vec!["run", "--runtime", "wasmbox", "--network", "none"];
        a.extend_from_slice(args);
        d.docker(&a)
    };
    let out = run(&["--rm", &image, "args", "a b"]);
    assert_eq!(out.code, 0, "{out:#?}\n{}", d.log());
    assert_eq!(out.stdout, "/app.wasm\nargs\na b\n");
    let out = run(&["--rm", &image, "exit", "7"]);
    assert_eq!(out.code, 7, "{out:#?}");
    // A looping guest: logs, exec, stats, and a stop that ends it at once with 143.
    let out = run(&["-d", &image, "loop"]);
    assert_eq!(out.code, 0, "{out:#?}\n{}", d.log());
    let id = out.stdout.trim().to_string();
    let t0 = Instant::now();
    while !d.docker(&["logs", &id]).stdout.contains("looping") {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no output from {id}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = d.docker(&["exec", &id, "/app.wasm", "args", "inside"]);
    assert_eq!(out.code, 0, "{out:#?}\n{}", d.log());
    assert_eq!(out.stdout, "/app.wasm\nargs\ninside\n");
    let out = d.docker(&["stats", "--no-stream", "--format", "{{.MemUsage}}", &id]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(!out.stdout.trim().starts_with("0B"), "{out:#?}");
    // update reaches the container's cgroup through `wasmbox update --resources=-`.
    let out = d.docker(&["update", "--memory", "96m", "--memory-swap", "96m", &id]);
    assert_eq!(out.code, 0, "{out:#?}\n{}", d.log());
    let out = d.docker(&["stats", "--no-stream", "--format", "{{.MemUsage}}", &id]);
    assert!(out.stdout.contains("96MiB"), "{out:#?}");
    let started = Instant::now();
    let out = d.docker(&["stop", "-t", "10", &id]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stop took {:?}",
        started.elapsed()
    );
    let out = d.docker(&["inspect", "-f", "{{.State.ExitCode}}", &id]);
    assert_eq!(out.stdout.trim(), "143", "{out:#?}");
}

#[test]
fn the_specs_hooks_run_with_the_state_on_their_stdin() {
    let rt = Runtime::new();
    let b = tempfile::tempdir().unwrap();
    let bundle = bundle(b.path(), &guest("files/files.wasm"), &["args"]);
    let path = bundle.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let hook = |name: &str| {
        let out = b.path().join(format!("{name}.json"));
        serde_json::json!([{"path": "/bin/sh", "args": ["sh", "-c", format!("cat > {}", out.display())]}])
    };
    spec["hooks"] = serde_json::json!({
        "createRuntime": hook("createRuntime"),
        "createContainer": hook("createContainer"),
        "startContainer": hook("startContainer"),
        "poststart": hook("poststart"),
        "poststop": hook("poststop"),
    });
    std::fs::write(&path, spec.to_string()).unwrap();
    let out = rt.create(b.path(), &bundle, "h1", &[]);
    assert_eq!(out.code, 0, "{out:#?}");
    let read = |name: &str| -> serde_json::Value {
        let text = std::fs::read_to_string(b.path().join(format!("{name}.json")))
            .unwrap_or_else(|e| panic!("{name} hook did not run: {e}"));
        serde_json::from_str(&text).unwrap()
    };
    let pid = rt.state("h1")["pid"].clone();
    for name in ["createRuntime", "createContainer"] {
        let st = read(name);
        assert_eq!(
            (&st["id"], &st["pid"]),
            (&"h1".into(), &pid),
            "{name}: {st}"
        );
        assert_eq!(st["status"], "creating");
    }
    assert!(!b.path().join("startContainer.json").exists());
    assert_eq!(rt.run(&["start", "h1"]).code, 0);
    assert_eq!(read("startContainer")["id"], "h1");
    assert_eq!(read("poststart")["status"], "running");
    rt.wait_status("h1", "stopped");
    assert_eq!(rt.run(&["delete", "h1"]).code, 0);
    assert_eq!(read("poststop")["id"], "h1");
    // A failing hook fails the create, and leaves nothing.
    spec["hooks"] = serde_json::json!({"createRuntime": [{"path": "/bin/false"}]});
    std::fs::write(&path, spec.to_string()).unwrap();
    let out = rt.create(b.path(), &bundle, "h2", &[]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stderr.contains("hook /bin/false"), "{out:#?}");
    assert!(!rt.root.path().join("state/h2").exists());
}

/// A compose file of two services: the wasm HTTP component `web`, and a native busybox `client`
/// that fetches from it, waiting until it answers. `runtime` names web's runtime, if any. With
/// `shared`, the client lives in web's network namespace (for an engine whose bridge networking
/// is not available here, dockerd run with `--bridge=none`); else both are on the project's
/// network and the client reaches web by name.
fn compose_file(
    dir: &Path,
    web: &str,
    client: &str,
    runtime: Option<&str>,
    shared: bool,
) -> PathBuf {
    let runtime = runtime.map_or(String::new(), |r| format!("    runtime: {r}\n"));
    let (web_net, client_net, url) = if shared {
        (
            "    network_mode: none\n",
            "    network_mode: \"service:web\"\n",
            "http://127.0.0.1:8080/",
        )
    } else {
        ("", "", "http://web:8080/")
    };
    let text = format!(
        r#"version: "2.4"
services:
  web:
    image: {web}
{runtime}{web_net}  client:
    image: {client}
{client_net}    depends_on: [web]
    command: ["sh", "-c", "i=0; while [ $$i -lt 600 ]; do wget -qO- {url} && exit 0; i=$$((i+1)); sleep 0.1; done; exit 1"]
"#
    );
    let path = dir.join("docker-compose.yml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The HTTP component as a compat image for linux/amd64, saved to `tar` and named `name`.
fn http_image(store: &Path, name: &str, tar: Option<&Path>) {
    let wb = crate::common::Wasmbox::new();
    let s = store.to_str().unwrap();
    let wasm = guest("http-hello/http-hello.wasm");
    wb.run(&[
        "build",
        "--store",
        s,
        "--format",
        "compat",
        "--platform",
        "linux/amd64",
        "-t",
        name,
        wasm.to_str().unwrap(),
    ])
    .code(0);
    if let Some(tar) = tar {
        wb.run(&["save", "--store", s, "-o", tar.to_str().unwrap(), name])
            .code(0);
    }
}

#[test]
fn docker_compose_brings_up_a_wasm_service_and_a_native_one_beside_it() {
    let reg = crate::registry::Registry::start();
    let t = tempfile::tempdir().unwrap();
    let store = t.path().join("store");
    http_image(&store, "localhost/web:compose", None);
    let web = format!("{}/web:compose", reg.addr);
    crate::common::Wasmbox::new()
        .run(&[
            "push",
            "--store",
            store.to_str().unwrap(),
            "localhost/web:compose",
            &web,
        ])
        .code(0);
    let client = format!("{}/busybox:compose", reg.addr);
    let st = Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .arg(format!(
            "oci-archive:{}",
            Images::get().archive(BUSYBOX).display()
        ))
        .arg(format!("docker://{client}"))
        .status()
        .unwrap();
    assert!(st.success(), "skopeo copy of busybox");
    let d = Dockerd::start();
    let file = compose_file(t.path(), &web, &client, Some("wasmbox"), true);
    let compose = |args: &[&str]| {
        Out::from(
            Command::new("docker-compose")
                .env("DOCKER_HOST", &d.host)
                .arg("-f")
                .arg(&file)
                .args(["-p", "wasmboxtest"])
                .args(args)
                .stdin(Stdio::null())
                .output()
                .expect("docker-compose (tests/run.sh installs it)"),
        )
    };
    let out = compose(&["up", "--exit-code-from", "client"]);
    assert_eq!(out.code, 0, "{out:#?}\n{}", d.log());
    assert!(out.stdout.contains("hello from wasm"), "{out:#?}");
    let out = compose(&["down"]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(
        d.docker(&["ps", "-aq"]).stdout.trim(),
        "",
        "nothing is left"
    );
}

#[test]
fn podman_compose_brings_up_a_wasm_service_and_a_native_one_beside_it() {
    let t = tempfile::tempdir().unwrap();
    let pm = t.path().join("podman");
    let _gone = PodmanGone(pm.clone());
    let tar = t.path().join("web.tar");
    http_image(&t.path().join("store"), "localhost/web:compose", Some(&tar));
    let load = |tar: &Path| {
        let out = Out::from(
            podman(&pm)
                .args(["load", "-q", "-i"])
                .arg(tar)
                .output()
                .unwrap(),
        );
        assert_eq!(out.code, 0, "{out:#?}");
    };
    load(&tar);
    load(&Images::get().archive(BUSYBOX));
    // wasmbox is podman's runtime for both: the native client goes on to runc.
    let file = compose_file(t.path(), "localhost/web:compose", BUSYBOX, None, false);
    let global: Vec<String> = podman(&pm)
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let compose = |args: &[&str]| {
        Out::from(
            Command::new("podman-compose")
                .arg("--podman-args")
                .arg(global.join(" "))
                .arg("--podman-run-args")
                .arg(ULIMITS.join(" "))
                .arg("-f")
                .arg(&file)
                .args(["-p", "wasmboxtest"])
                .args(args)
                .stdin(Stdio::null())
                .output()
                .expect("podman-compose (tests/run.sh installs it)"),
        )
    };
    // podman-compose 1.0.3 attaches to every service it starts: started detached, the client is
    // waited for by podman.
    let out = compose(&["up", "-d"]);
    assert_eq!(out.code, 0, "{out:#?}");
    let client = "wasmboxtest_client_1";
    let out = Out::from(podman(&pm).args(["wait", client]).output().unwrap());
    assert_eq!(out.stdout.trim(), "0", "{out:#?}");
    let out = Out::from(podman(&pm).args(["logs", client]).output().unwrap());
    assert!(out.stdout.contains("hello from wasm"), "{out:#?}");
    let out = compose(&["down"]);
    assert_eq!(out.code, 0, "{out:#?}");
    let left = Out::from(podman(&pm).args(["ps", "-aq"]).output().unwrap());
    assert_eq!(left.stdout.trim(), "", "nothing is left");
}

/// The Containerfile the Docker primers teach, built for wasm.
const CONTAINERFILE: &str = "FROM scratch\nCOPY app.wasm /app.wasm\nENTRYPOINT [\"/app.wasm\"]\n";

#[test]
fn an_image_podman_builds_from_a_containerfile_runs_unchanged() {
    let t = tempfile::tempdir().unwrap();
    let pm = t.path().join("podman");
    let _gone = PodmanGone(pm.clone());
    let ctx = t.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::copy(guest("files/files.wasm"), ctx.join("app.wasm")).unwrap();
    std::fs::write(ctx.join("Containerfile"), CONTAINERFILE).unwrap();
    let out = Out::from(
        podman(&pm)
            .args([
                "build",
                "--platform",
                "wasi/wasm",
                "-t",
                "localhost/built:1",
            ])
            .arg(&ctx)
            .output()
            .unwrap(),
    );
    assert_eq!(out.code, 0, "{out:#?}");
    let mut c = podman(&pm);
    c.args(["run", "--rm", "--network", "none"])
        .args(ULIMITS)
        .args(["localhost/built:1", "args", "built"]);
    let out = Out::from(c.output().unwrap());
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(out.stdout, "/app.wasm\nargs\nbuilt\n");
}
