//! Engines with `wasmbox` as their OCI runtime, as their users drive them: podman (load, pull,
//! run, exec, stats, pause, stop, a terminal, build, containers.conf), dockerd 20.10 (pull, load,
//! run, exec, stats, update, stop, daemon.json), docker-compose and podman-compose.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Out, guest, wasmbox_bin};
use crate::ctrd::{BUSYBOX, Images};

/// A podman of its own (root, run root and storage below `dir`), with wasmbox as its runtime.
/// On these hosts podman needs the ulimits given to `run`.
fn podman(dir: &Path) -> Command {
    let mut c = crate::exit::podman(dir);
    c.arg("--runtime").arg(wasmbox_bin());
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
    // The same image from a local registry, pulled by podman.
    let reg = crate::registry::Registry::start();
    let pushed = format!("{}/files:pm", reg.addr);
    wb.run(&["push", "--store", s, "localhost/files:pm", &pushed])
        .code(0);
    let out = podman_run(&["--tls-verify=false", &pushed, "args", "pulled"]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(out.stdout, "/app.wasm\nargs\npulled\n");
    let out = podman_run(&["localhost/files:pm", "exit", "7"]);
    assert_eq!(out.code, 7, "{out:#?}");
    // The devices of /dev, answered by wasmbox beside podman's own /dev mounts.
    let out = podman_run(&["localhost/files:pm", "dev"]);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, crate::devices::ANSWERS),
        "{out:#?}"
    );
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
    // The guest echoes what is typed until ^D, so its output comes only once podman is attached.
    let mut it = podman(&pm);
    it.args(["run", "-it", "--rm", "--network", "none"])
        .args(ULIMITS)
        .args(["localhost/files:pm", "stdin"]);
    let mut term = crate::pty::Pty::spawn(it);
    term.wait_raw();
    term.type_in(b"typed\r");
    // The container's terminal echoes the line, then the guest writes it back: CRLF both times.
    term.wait_for("the line twice", |s| s.matches("typed\r\n").count() == 2);
    term.type_in(b"\x04");
    let (code, screen) = term.finish();
    assert_eq!(code, 0, "{screen}");
    // `-dt`: what the guest writes to the terminal is in conmon's log.
    let out = run(podman(&pm)
        .args(["run", "-d", "-t", "--network", "none"])
        .args(ULIMITS)
        .args(["localhost/files:pm", "args", "tty"]));
    assert_eq!(out.code, 0, "{out:#?}");
    let id = out.stdout.trim().to_string();
    let out = run(podman(&pm).args(["wait", &id]));
    assert_eq!(out.stdout.trim(), "0", "{out:#?}");
    let out = run(podman(&pm).args(["logs", &id]));
    assert_eq!(
        out.stdout, "/app.wasm\r\nargs\r\ntty\r\n",
        "through a terminal: {out:#?}"
    );
    run(podman(&pm).args(["rm", &id]));
    // A native image goes to runc.
    let out = podman_run(&[BUSYBOX, "sh", "-c", "echo native; exit 3"]);
    assert_eq!(out.code, 3, "{out:#?}");
    assert_eq!(out.stdout, "native\n");
    // podman passes `--annotation` to its runtime: a `wasmbox.*` one reaches the guest's policy.
    let out = podman_run(&[
        "--annotation",
        "wasmbox.timeout=1s",
        "localhost/files:pm",
        "loop",
    ]);
    assert_eq!(
        out.code, 124,
        "the annotation's deadline ends the guest: {out:#?}"
    );
    // The docs' containers.conf recipe makes wasmbox podman's runtime, for wasm and native
    // images alike, with no `--runtime` flag.
    let conf = t.path().join("containers.conf");
    std::fs::write(&conf, crate::recipes::recipe("podman-containers.conf")).unwrap();
    for (image, args, want) in [
        (
            "localhost/files:pm",
            ["args", "conf"],
            "/app.wasm\nargs\nconf\n",
        ),
        (BUSYBOX, ["echo", "conf"], "conf\n"),
    ] {
        let mut c = crate::exit::podman(&pm);
        c.env("CONTAINERS_CONF", &conf)
            .args(["run", "--rm", "--network", "none"])
            .args(ULIMITS)
            .arg(image)
            .args(args);
        let out = run(&mut c);
        assert_eq!((out.code, out.stdout.as_str()), (0, want), "{out:#?}");
    }
    let mut c = crate::exit::podman(&pm);
    let out = run(c.env("CONTAINERS_CONF", &conf).args([
        "info",
        "--format",
        "{{.Host.OCIRuntime.Path}}",
    ]));
    assert_eq!(
        out.stdout.trim(),
        wasmbox_bin().to_str().unwrap(),
        "{out:#?}"
    );
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
/// wasmbox added as the runtime `wasmbox` by the docs' `daemon.json`; stopped on drop.
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
        // wasmbox is added as the docs' `daemon.json` adds it.
        let config = dir.path().join("daemon.json");
        std::fs::write(&config, crate::recipes::recipe("docker-daemon.json")).unwrap();
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
            .arg("--config-file")
            .arg(&config)
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
    // An image `wasmbox save` wrote, loaded with `docker load`.
    let tar = t.path().join("files.tar");
    wb.run(&[
        "save",
        "--store",
        s,
        "-o",
        tar.to_str().unwrap(),
        "localhost/files:docker",
    ])
    .code(0);
    let out = d.docker(&["load", "-i", tar.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out:#?}\n{}", d.log());
    let out = run(&["--rm", "localhost/files:docker", "args", "loaded"]);
    assert_eq!(out.code, 0, "{out:#?}\n{}", d.log());
    assert_eq!(out.stdout, "/app.wasm\nargs\nloaded\n");
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

/// A compose file of two services: the wasm HTTP component `web`, and a native busybox `client`
/// that fetches from it, waiting until it answers. `web` is the file's start up to web's own
/// keys (`version`, `services:`, `web:` and its image). With `shared`, the client lives in web's
/// network namespace (for an engine whose bridge networking is not available here, dockerd run
/// with `--bridge=none`); else both are on the project's network and the client reaches web by
/// name.
fn compose_file(dir: &Path, web: &str, client: &str, shared: bool) -> PathBuf {
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
        r#"{web}{web_net}  client:
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
    // web as the docs' compose recipe has it, `runtime: wasmbox` and all.
    let recipe = crate::recipes::recipe("docker-compose.yml");
    assert!(recipe.contains("REGISTRY/web:1"), "{recipe}");
    let file = compose_file(
        t.path(),
        &recipe.replace("REGISTRY/web:1", &web),
        &client,
        true,
    );
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
    let web = "version: \"2.4\"\nservices:\n  web:\n    image: localhost/web:compose\n";
    let file = compose_file(t.path(), web, BUSYBOX, false);
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
