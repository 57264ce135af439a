//! Exit statuses, arguments, environment and stdio of `wasmbox run`.

use std::time::{Duration, Instant};

use crate::common::{Wasmbox, bundle, guest};

fn files() -> String {
    guest("files/files.wasm").display().to_string()
}

#[test]
fn hello_module_and_component() {
    let wb = Wasmbox::new();
    let out = wb.run(&["run", guest("hello/hello.wasm").to_str().unwrap(), "a", "b"]);
    out.code(0);
    assert_eq!(out.stdout, "Hello from wasmbox!\nargs: a b\n");
    let out = wb.run(&[
        "run",
        guest("hello-component/hello-component.wasm")
            .to_str()
            .unwrap(),
        "x",
    ]);
    out.code(0);
    assert_eq!(out.stdout, "Hello from wasmbox!\nargs: x\n");
}

#[test]
fn proc_exit_code_is_the_exit_code() {
    let wb = Wasmbox::new();
    for n in ["0", "3", "42", "255"] {
        let out = wb.run(&["run", &files(), "exit", n]);
        out.code(n.parse().unwrap());
    }
}

#[test]
fn traps_exit_134_with_the_message() {
    let wb = Wasmbox::new();
    let out = wb.run(&["run", &files(), "abort"]);
    out.code(134);
    assert!(out.stderr.contains("unreachable"), "{out:#?}");
    let out = wb.run(&["run", &files(), "recurse"]);
    out.code(134);
    assert!(out.stderr.contains("call stack exhausted"), "{out:#?}");
}

#[test]
fn args_and_env_reach_the_guest() {
    let wb = Wasmbox::new();
    let out = wb.run(&[
        "run",
        "-e",
        "GREETING=hi there",
        "-e",
        "EMPTY=",
        &files(),
        "args",
        "--flag",
        "two words",
    ]);
    out.code(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines,
        ["files.wasm", "args", "--flag", "two words"],
        "argv[0] is the file's name, not its host path: {out:#?}"
    );
    let out = wb.run(&[
        "run",
        "-e",
        "GREETING=hi there",
        "-w",
        "/work",
        &files(),
        "env",
    ]);
    out.code(0);
    // Exactly the variables given: nothing of wasmbox's own environment, no PWD.
    let env: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(env, ["GREETING=hi there"], "{out:#?}");
    let component = guest("files/files-component.wasm").display().to_string();
    let out = wb.run(&["run", "-w", "/work", &component, "env"]);
    out.code(0);
    assert_eq!(out.stdout, "", "{out:#?}");
}

/// Prints the name of preopen 3, the first directory a preview 1 guest is given.
const FIRST_PREOPEN: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_prestat_get" (func $get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_dir_name" (func $name (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (if (call $get (i32.const 3) (i32.const 0)) (then unreachable))
    (drop (call $name (i32.const 3) (i32.const 64) (i32.load (i32.const 4))))
    (i32.store (i32.const 16) (i32.const 64))
    (i32.store (i32.const 20) (i32.load (i32.const 4)))
    (drop (call $write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24)))))"#;

#[test]
fn the_working_directory_reaches_both_kinds_of_guest_without_a_variable() {
    let wb = Wasmbox::new();
    let vol = tempfile::tempdir().unwrap();
    std::fs::create_dir(vol.path().join("sub")).unwrap();
    std::fs::write(vol.path().join("sub/f"), "here").unwrap();
    std::os::unix::fs::symlink("../../../../..", vol.path().join("up")).unwrap();
    let v = format!("{}:/data", vol.path().display());
    // A preview 1 module gets it as its first preopen, under its guest path.
    let t = tempfile::tempdir().unwrap();
    let m = t.path().join("first.wasm");
    std::fs::write(&m, wat::parse_str(FIRST_PREOPEN).unwrap()).unwrap();
    let m = m.display().to_string();
    let first = |cwd: &str| {
        let out = wb.run(&["run", "-v", &v, "-w", cwd, &m]);
        out.code(0);
        out.stdout.clone()
    };
    assert_eq!(first("/data/sub"), "/data/sub");
    assert_eq!(first("/"), "/data");
    // A working directory that is a grant of its own, not the first: that grant comes first.
    let other = tempfile::tempdir().unwrap();
    let o = format!("{}:/other", other.path().display());
    let out = wb.run(&["run", "-v", &v, "-v", &o, "-w", "/other", &m]);
    out.code(0);
    assert_eq!(out.stdout, "/other");
    // A working directory that is not there, outside every grant, or reached through a symbolic
    // link adds nothing.
    assert_eq!(first("/data/missing"), "/data");
    assert_eq!(first("/elsewhere"), "/data");
    assert_eq!(first("/data/up"), "/data");
}

#[test]
fn bundle_process_args_env_and_export() {
    let wb = Wasmbox::new();
    let dir = tempfile::tempdir().unwrap();
    let b = bundle(
        dir.path(),
        serde_json::json!({"process": {"args": ["/files.wasm", "env"], "env": ["FROM_SPEC=yes"], "cwd": "/"}}),
    );
    let out = wb.run(&["run", "--bundle", b.to_str().unwrap()]);
    out.code(0);
    assert!(out.stdout.lines().any(|l| l == "FROM_SPEC=yes"), "{out:#?}");
    // Arguments after the bundle replace the spec's.
    let out = wb.run(&["run", "--bundle", b.to_str().unwrap(), "exit", "9"]);
    out.code(9);
}

#[test]
fn stdin_is_forwarded() {
    let wb = Wasmbox::new();
    let out = crate::common::fed(
        wb.cmd().args(["run", &files(), "stdin"]),
        b"from the host\n",
    );
    assert!(out.status.success());
    assert_eq!(out.stdout, b"from the host\n");
}

#[test]
fn no_output_lost_when_exiting_at_once() {
    let wb = Wasmbox::new();
    let out = wb.run(&["run", &files(), "spam", "20000"]);
    out.code(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 20000);
    assert_eq!(lines[19999], "line 20000");
}

fn signal_exit(sig: i32, want: i32) {
    let wb = Wasmbox::new();
    let mut child = wb
        .cmd()
        .args(["run", &files(), "loop"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Signalled once the guest says it runs, however long compiling took.
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line, "looping\n");
    let t = Instant::now();
    assert!(crate::ctrd::signal(child.id(), sig), "kill {}", child.id());
    let st = child.wait().unwrap();
    let took = t.elapsed();
    assert_eq!(st.code(), Some(want));
    assert!(took < Duration::from_millis(500), "took {took:?}");
}

/// A signal that arrives while wasmbox is still loading and compiling ends it with 128+signal,
/// and leaves no bundle or private directory behind.
fn signal_while_loading(sig: i32, want: i32) {
    let wb = Wasmbox::new();
    let t = tempfile::tempdir().unwrap();
    let big = t.path().join("big.wasm");
    std::fs::write(&big, crate::compiled::many_functions(150_000)).unwrap();
    let scratch = t.path().join("scratch");
    let mut child = wb
        .cmd()
        .args(["--log-level", "wasmbox_runtime=debug", "run", "--no-cache"])
        .arg(&big)
        .env("WASMBOX_SCRATCH_DIR", &scratch)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The sign: wasmbox logs that it compiles.
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        let n = std::io::BufRead::read_line(&mut err, &mut line).unwrap();
        assert!(n > 0, "wasmbox ended before compiling: {seen}");
        seen.push_str(&line);
        if line.contains("compiling") {
            break;
        }
    }
    assert!(crate::ctrd::signal(child.id(), sig), "kill {}", child.id());
    let t0 = Instant::now();
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(want), "{seen}");
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t0.elapsed()
    );
    let left: Vec<_> = walk(&scratch);
    assert!(
        left.iter().all(|p| p.is_dir()),
        "files left behind: {left:?}"
    );
}

/// Every path under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        out.extend(walk(&p));
        out.push(p);
    }
    out
}

#[test]
fn sigterm_while_compiling_gives_143() {
    signal_while_loading(libc::SIGTERM, 143);
}

#[test]
fn sigint_while_compiling_gives_130() {
    signal_while_loading(libc::SIGINT, 130);
}

#[test]
fn sigterm_gives_143() {
    signal_exit(libc::SIGTERM, 143);
}

#[test]
fn sigint_gives_130() {
    signal_exit(libc::SIGINT, 130);
}

/// Writes `config` as `DIR/config.json` beside a rootfs holding the `files` guest.
fn raw_bundle(dir: &std::path::Path, config: &serde_json::Value) -> String {
    std::fs::create_dir_all(dir.join("rootfs")).unwrap();
    std::fs::copy(files(), dir.join("rootfs/files.wasm")).unwrap();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    dir.display().to_string()
}

/// A podman of its own (root, run root and storage in `dir`), as tests/run.sh installs it.
pub(crate) fn podman(dir: &std::path::Path) -> std::process::Command {
    let mut c = std::process::Command::new("podman");
    c.arg("--root")
        .arg(dir.join("root"))
        .arg("--runroot")
        .arg(dir.join("run"))
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

#[test]
fn bundles_that_podman_writes_run() {
    // podman writes the config.json its OCI runtime gets at `podman init`: kernel mounts,
    // single-file binds, rlimits, capabilities, seccomp. wasmbox runs that bundle as written.
    let wb = Wasmbox::new();
    let t = tempfile::tempdir().unwrap();
    let store = t.path().join("store");
    let store = store.to_str().unwrap();
    let tar = t.path().join("files.tar");
    let files = crate::common::guest("files/files.wasm");
    wb.run(&[
        "build",
        "--store",
        store,
        "--format",
        "compat",
        "-t",
        "localhost/files:podman",
        files.to_str().unwrap(),
    ])
    .code(0);
    wb.run(&[
        "save",
        "--store",
        store,
        "-o",
        tar.to_str().unwrap(),
        "localhost/files:podman",
    ])
    .code(0);
    let pm = t.path().join("podman");
    struct Remove(std::path::PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = podman(&self.0).args(["rm", "-f", "-a"]).output();
        }
    }
    let _remove = Remove(pm.clone());
    let ok = |c: &mut std::process::Command| {
        let out = c.output().expect("podman (installed by tests/run.sh)");
        assert!(out.status.success(), "{c:?}: {out:#?}");
        String::from_utf8(out.stdout).unwrap()
    };
    ok(podman(&pm).args(["load", "-q", "-i"]).arg(&tar));
    let id = ok(podman(&pm).args([
        "create",
        "--network",
        "none",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=4096:4096",
        "-e",
        "FROM_PODMAN=yes",
        "localhost/files:podman",
        "env",
    ]));
    let id = id.trim();
    ok(podman(&pm).args(["init", id]));
    let config = pm
        .join("root/vfs-containers")
        .join(id)
        .join("userdata/config.json");
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config).expect("podman's config.json")).unwrap();
    assert!(
        spec["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["type"] == "proc"),
        "a config as podman writes it: {spec:#}"
    );
    let bundle = t.path().join("bundle");
    std::fs::create_dir(&bundle).unwrap();
    std::fs::write(bundle.join("config.json"), spec.to_string()).unwrap();
    let out = wb.run(&["run", "--bundle", bundle.to_str().unwrap()]);
    out.code(0);
    let env: Vec<&str> = out.stdout.lines().collect();
    assert!(env.contains(&"FROM_PODMAN=yes"), "{out:#?}");
    assert!(env.contains(&"container=podman"), "{out:#?}");
    assert!(
        !out.stderr.contains('\x1b'),
        "log lines on a pipe carry no colour codes: {out:#?}"
    );
}

#[test]
fn bundles_that_runc_accepts_run_without_a_user() {
    let wb = Wasmbox::new();
    let t = tempfile::tempdir().unwrap();
    // As `runc spec` writes one, with its process pointed at the guest, and then without
    // `process.user`, which runc runs as uid 0.
    let spec_dir = t.path().join("spec");
    std::fs::create_dir(&spec_dir).unwrap();
    let st = std::process::Command::new("runc")
        .arg("spec")
        .current_dir(&spec_dir)
        .status()
        .expect("runc (installed by tests/run.sh)");
    assert!(st.success());
    let mut c: serde_json::Value =
        serde_json::from_slice(&std::fs::read(spec_dir.join("config.json")).unwrap()).unwrap();
    c["process"]["terminal"] = false.into();
    c["process"]["args"] = serde_json::json!(["/files.wasm", "exit", "3"]);
    let dir = raw_bundle(&spec_dir, &c);
    wb.run(&["run", "--bundle", &dir]).code(3);
    c["process"].as_object_mut().unwrap().remove("user");
    let dir = raw_bundle(&spec_dir, &c);
    wb.run(&["run", "--bundle", &dir]).code(3);
    // Minimal hand-written ones: no user; no user and no working directory; a bare name found
    // through the process's PATH, as runc finds it.
    for (i, process) in [
        serde_json::json!({"args": ["/files.wasm", "exit", "4"], "cwd": "/"}),
        serde_json::json!({"args": ["/files.wasm", "exit", "4"]}),
        serde_json::json!({"args": ["files.wasm", "exit", "4"], "env": ["PATH=/bin:/"]}),
    ]
    .into_iter()
    .enumerate()
    {
        let d = t.path().join(format!("min{i}"));
        let c = serde_json::json!({"ociVersion": "1.0.2", "root": {"path": "rootfs"}, "process": process});
        let dir = raw_bundle(&d, &c);
        let out = wb.run(&["run", "--bundle", &dir]);
        assert_eq!(out.code, 4, "{c}: {out:#?}");
    }
    // What runc refuses stays refused, with the reason.
    let d = t.path().join("bad");
    let dir = raw_bundle(
        &d,
        &serde_json::json!({"root": {"path": "rootfs"}, "process": {"args": []}}),
    );
    let line = wb
        .run(&["run", "--bundle", &dir])
        .the_error_line()
        .to_string();
    assert!(line.contains("process.args is empty"), "{line}");
}
