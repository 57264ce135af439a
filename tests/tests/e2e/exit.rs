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
    assert_eq!(&lines[1..], ["args", "--flag", "two words"], "{out:#?}");
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
    let env: Vec<&str> = out.stdout.lines().collect();
    assert!(env.contains(&"GREETING=hi there"), "{out:#?}");
    assert!(env.contains(&"PWD=/work"), "{out:#?}");
    // Nothing of wasmbox's own environment leaks in.
    assert!(
        !env.iter().any(|l| l.starts_with("WASMBOX_CACHE_DIR=")),
        "{out:#?}"
    );
    assert!(!env.iter().any(|l| l.starts_with("PATH=")), "{out:#?}");
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
    use std::io::Write;
    let wb = Wasmbox::new();
    let mut child = wb
        .cmd()
        .args(["run", &files(), "stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"from the host\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
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
    let mut child = wb.cmd().args(["run", &files(), "loop"]).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "guest should still loop"
    );
    let t = Instant::now();
    // SAFETY: plain kill(2) on our own child.
    #[allow(unsafe_code, reason = "sending a signal to a child process")]
    let rc = unsafe { libc::kill(child.id() as i32, sig) };
    assert_eq!(rc, 0);
    let st = child.wait().unwrap();
    let took = t.elapsed();
    assert_eq!(st.code(), Some(want));
    assert!(took < Duration::from_millis(500), "took {took:?}");
}

#[test]
fn sigterm_gives_143() {
    signal_exit(libc::SIGTERM, 143);
}

#[test]
fn sigint_gives_130() {
    signal_exit(libc::SIGINT, 130);
}
