//! `wasmbox` as an OCI runtime with runc's command line: driven directly as engines drive runc,
//! and by containerd's runc shim (`ctr run --runc-binary`), for wasm and native images. The
//! other engines are in `engines.rs`.

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
    // The table is ps(1)'s, as runc prints it: its header and the container's process.
    let table = rt.run(&["ps", "k1", "-o", "pid,comm"]);
    assert_eq!(table.code, 0, "{table:#?}");
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{table:#?}");
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["PID", "COMMAND"]
    );
    assert_eq!(
        lines[1].split_whitespace().next(),
        Some(pids[0].to_string().as_str())
    );
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
fn events_tell_when_a_guest_ran_out_of_memory() {
    use std::io::BufRead;
    let rt = Runtime::new();
    for (id, mb, ooms) in [("o1", "64", 1), ("o2", "4", 0)] {
        let b = tempfile::tempdir().unwrap();
        let bundle = bundle(b.path(), &guest("files/files.wasm"), &["alloc", mb]);
        let config = bundle.join("config.json");
        let mut spec: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
        spec["linux"]["resources"] = serde_json::json!({"memory": {"limit": 16 << 20}});
        std::fs::write(&config, spec.to_string()).unwrap();
        let out = rt.create(b.path(), &bundle, id, &[]);
        assert_eq!(out.code, 0, "{out:#?}");
        let mut events = rt
            .cmd(&["events", "--interval", "50ms", id])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(events.stdout.take().unwrap()).lines();
        let mut next = || -> Option<serde_json::Value> {
            Some(serde_json::from_str(&lines.next()?.unwrap()).unwrap())
        };
        // The first stats event: `events` is watching before the guest starts.
        assert_eq!(next().unwrap()["type"], "stats");
        assert_eq!(rt.run(&["start", id]).code, 0);
        let rest: Vec<serde_json::Value> = std::iter::from_fn(next).collect();
        assert!(events.wait().unwrap().success());
        let types: Vec<&str> = rest.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            types.iter().filter(|t| **t == "oom").count(),
            ooms,
            "{id}: {rest:?}"
        );
        assert_eq!(types.last(), Some(&"stats"), "{id}: {rest:?}");
        assert!(rest.iter().all(|e| e["id"] == id), "{rest:?}");
        assert_eq!(rt.run(&["delete", id]).code, 0);
    }
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
    // `list` shows runc's containers beside the wasm ones.
    let w = tempfile::tempdir().unwrap();
    let wasm = bundle(w.path(), &guest("files/files.wasm"), &["args"]);
    assert_eq!(rt.create(w.path(), &wasm, "w1", &[]).code, 0);
    let out = rt.create(b.path(), b.path(), "n2", &[]);
    assert_eq!(out.code, 0, "{out:#?}");
    let out = rt.run(&["list", "--format", "json"]);
    assert_eq!(out.code, 0, "{out:#?}");
    let listed: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).unwrap();
    let seen: Vec<(&str, &str)> = listed
        .iter()
        .map(|s| (s["id"].as_str().unwrap(), s["status"].as_str().unwrap()))
        .collect();
    assert_eq!(seen, [("n2", "created"), ("w1", "created")], "{listed:#?}");
    let out = rt.run(&["list", "-q"]);
    assert_eq!(out.stdout, "n2\nw1\n");
    for id in ["n2", "w1"] {
        let out = rt.run(&["delete", "--force", id]);
        assert_eq!(out.code, 0, "{id}: {out:#?}");
    }
    assert_eq!(rt.run(&["list", "-q"]).stdout, "");
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

#[test]
fn the_specs_hooks_run_with_the_state_on_their_stdin() {
    let rt = Runtime::new();
    let b = tempfile::tempdir().unwrap();
    // A guest that runs until killed, so that poststart sees it running.
    let bundle = bundle(b.path(), &guest("files/files.wasm"), &["loop"]);
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
    // `features` names every hook it runs.
    let features: serde_json::Value = serde_json::from_str(&rt.run(&["features"]).stdout).unwrap();
    for name in [
        "prestart",
        "createRuntime",
        "createContainer",
        "startContainer",
        "poststart",
        "poststop",
    ] {
        assert!(
            features["hooks"].as_array().unwrap().contains(&name.into()),
            "{name}: {features}"
        );
    }
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
    assert_eq!(rt.run(&["kill", "h1", "KILL"]).code, 0);
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
