//! Native code on a guest thread, as if a guest had escaped wasm: `tests/clients/inject.py`
//! stops a `wasmbox-guest` thread with ptrace and makes it issue system calls, including the
//! trick that once worked (a signal handler on a fresh executable page, run by the unfiltered
//! main thread, which then exec'd a shell). No thread of a server or a shim may exec a program,
//! and a guest granted no network cannot open a socket.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

use crate::common::Wasmbox;
use crate::ctrd::{Containerd, Images, WAT};
use crate::http::{Served, hello};

const EPERM: i64 = -1;

/// Runs the injector against `pid` and returns what it reports; `mark` is the file its shell
/// would write.
fn inject(pid: u32, mark: &std::path::Path, port: Option<u16>) -> serde_json::Value {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/inject.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script).arg(pid.to_string()).arg("--mark").arg(mark);
    if let Some(p) = port {
        cmd.args(["--port", &p.to_string()]);
    }
    let out = cmd.stderr(Stdio::inherit()).output().unwrap();
    assert!(out.status.success(), "inject.py failed");
    let text = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str(text.lines().last().unwrap()).unwrap()
}

fn get_root(addr: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The attack's outcome every time: the guest thread and the main thread are both refused
/// `execve`, though the handler was installed and ran, and the shell never wrote its file.
fn assert_no_exec(got: &serde_json::Value, mark: &std::path::Path) {
    assert_eq!(got["execve"], EPERM, "{got}");
    assert_eq!(got["rt_sigaction"], 0, "{got}");
    assert_eq!(got["tgkill"], 0, "{got}");
    assert_eq!(got["handler_execve"], EPERM, "{got}");
    assert!(!mark.exists(), "the injected shell ran: {got}");
}

#[test]
fn no_thread_of_a_server_execs_and_a_guest_without_network_opens_no_socket() {
    let wb = Wasmbox::new();
    let t = tempfile::tempdir().unwrap();
    let s = Served::start(&wb, "serve", &[], &hello());
    let port: u16 = s.addr.rsplit(':').next().unwrap().parse().unwrap();
    let mark = t.path().join("mark");
    let got = inject(s.child.id(), &mark, Some(port));
    assert_no_exec(&got, &mark);
    assert_eq!(got["socket"], EPERM, "{got}");
    // The process goes on serving.
    assert!(get_root(&s.addr).starts_with("HTTP/1.1 200"));
}

#[test]
fn a_guest_granted_network_still_cannot_exec() {
    let wb = Wasmbox::new();
    let t = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let grant = format!("127.0.0.1:{port}");
    let s = Served::start(&wb, "serve", &["--allow-connect", &grant], &hello());
    let mark = t.path().join("mark");
    let got = inject(s.child.id(), &mark, Some(port));
    assert_no_exec(&got, &mark);
    // Sockets are the guest's to open here: the injected connect reaches the test's listener.
    assert!(got["socket"].as_i64().unwrap() >= 0, "{got}");
    assert_eq!(got["connect"], 0, "{got}");
    assert!(listener.accept().is_ok());
    assert!(get_root(&s.addr).starts_with("HTTP/1.1 200"));
}

#[test]
fn no_thread_of_a_shim_execs_and_its_containers_go_on() {
    let c = Containerd::start();
    c.import(&Images::get().archive(WAT));
    c.run_detached(&[], WAT, "spin", &["/spin.wasm"]);
    c.wait_status("spin", "RUNNING");
    let shim = c.shims()[0];
    let t = tempfile::tempdir().unwrap();
    let mark = t.path().join("mark");
    let got = inject(shim, &mark, None);
    assert_no_exec(&got, &mark);
    // The shim still answers for its container.
    c.wait_status("spin", "RUNNING");
    let out = c.ctr(&["task", "kill", "-s", "SIGKILL", "spin"]);
    assert_eq!(out.code, 0, "{out:#?}");
    c.wait_status("spin", "STOPPED");
}
