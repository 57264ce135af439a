//! Network capabilities: denied by default, granted exactly, for components and for preview 1
//! modules with pre-opened listeners. Everything runs on loopback.

use std::io::{Read, Write};
use std::time::Duration;

use crate::common::{PongServer, Wasmbox, free_port, guest};

/// Runs the net-probe component with one connect grant, connecting to `ip:port`.
fn connect(wb: &Wasmbox, grant: &str, ip: &str, port: u16) -> crate::common::Out {
    wb.run(&[
        "run",
        "--allow-connect",
        grant,
        &probe(),
        "connect",
        ip,
        &port.to_string(),
    ])
}

fn probe() -> String {
    guest("net-probe/net-probe.wasm").display().to_string()
}

#[test]
fn connect_is_denied_by_default() {
    let srv = PongServer::start();
    let wb = Wasmbox::new();
    let out = wb.run(&[
        "run",
        &probe(),
        "connect",
        "127.0.0.1",
        &srv.port.to_string(),
    ]);
    out.code(1);
    assert_eq!(out.stdout.trim(), "error: access-denied");
}

#[test]
fn connect_to_a_granted_address_succeeds_and_only_there() {
    let srv = PongServer::start();
    let other = PongServer::start();
    let wb = Wasmbox::new();
    let grant = format!("127.0.0.1:{}", srv.port);
    let out = connect(&wb, &grant, "127.0.0.1", srv.port);
    out.code(0);
    assert_eq!(out.stdout, "connected\npong\n");
    // A port that is not granted stays closed, even with a server behind it.
    let out = connect(&wb, &grant, "127.0.0.1", other.port);
    out.code(1);
    assert_eq!(out.stdout.trim(), "error: access-denied");
    // Another loopback address on the granted port is not granted either.
    let out = connect(&wb, &grant, "127.0.0.2", srv.port);
    assert_eq!(out.stdout.trim(), "error: access-denied");
    // A CIDR grant with a port range covers both servers.
    let lo = srv.port.min(other.port);
    let hi = srv.port.max(other.port);
    let grant = format!("127.0.0.0/8:{lo}-{hi}");
    for p in [srv.port, other.port] {
        let out = connect(&wb, &grant, "127.0.0.1", p);
        out.code(0);
    }
    // A UDP grant does not open TCP.
    let grant = format!("udp:127.0.0.1:{}", srv.port);
    let out = connect(&wb, &grant, "127.0.0.1", srv.port);
    assert_eq!(out.stdout.trim(), "error: access-denied");
}

#[test]
fn name_lookup_needs_a_grant() {
    let wb = Wasmbox::new();
    let out = wb.run(&["run", &probe(), "resolve", "localhost"]);
    out.code(1);
    assert!(out.stdout.starts_with("error: "), "{out:#?}");
    let out = wb.run(&["run", "--allow-dns", &probe(), "resolve", "localhost"]);
    out.code(0);
    assert!(
        out.stdout.lines().any(|l| l == "127.0.0.1" || l == "::1"),
        "{out:#?}"
    );
}

#[test]
fn component_listen_needs_a_grant() {
    let wb = Wasmbox::new();
    let port = free_port();
    let out = wb.run(&["run", &probe(), "listen", "127.0.0.1", &port.to_string()]);
    out.code(1);
    assert_eq!(out.stdout.trim(), "error: access-denied");
    let grant = format!("127.0.0.1:{port}");
    let mut child = wb
        .cmd()
        .args([
            "run",
            "--listen",
            &grant,
            &probe(),
            "listen",
            "127.0.0.1",
            &port.to_string(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut conn = connect_retry(port);
    conn.write_all(b"echo me\n").unwrap();
    let mut reply = String::new();
    conn.read_to_string(&mut reply).unwrap();
    assert_eq!(reply, "echo me\n");
    assert!(child.wait().unwrap().success());
}

fn connect_retry(port: u16) -> std::net::TcpStream {
    for _ in 0..100 {
        if let Ok(c) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            return c;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listening on 127.0.0.1:{port}");
}

#[test]
fn preview1_server_on_a_preopened_listener() {
    let wb = Wasmbox::new();
    let port = free_port();
    let grant = format!("127.0.0.1:{port}");
    let mut child = wb
        .cmd()
        .args([
            "run",
            "--listen",
            &grant,
            guest("echo-server/echo.wasm").to_str().unwrap(),
            "--once",
        ])
        .spawn()
        .unwrap();
    let mut conn = connect_retry(port);
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let writer = {
        let mut c = conn.try_clone().unwrap();
        let p = payload.clone();
        std::thread::spawn(move || {
            c.write_all(&p).unwrap();
            c.shutdown(std::net::Shutdown::Write).unwrap();
        })
    };
    let mut got = Vec::new();
    conn.read_to_end(&mut got).unwrap();
    writer.join().unwrap();
    assert_eq!(got.len(), payload.len());
    assert!(got == payload, "echoed bytes differ");
    assert!(child.wait().unwrap().success());
}

#[test]
fn preview1_module_without_grant_has_no_socket() {
    let wb = Wasmbox::new();
    let out = wb.run(&[
        "run",
        "--timeout",
        "5s",
        guest("echo-server/echo.wasm").to_str().unwrap(),
        "--once",
    ]);
    assert_ne!(out.code, 0, "{out:#?}");
    assert_ne!(out.code, 124, "should fail at once, not wait: {out:#?}");
}

#[test]
fn listen_address_in_use_is_a_clear_error() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let wb = Wasmbox::new();
    let grant = format!("127.0.0.1:{port}");
    wb.run(&[
        "run",
        "--listen",
        &grant,
        guest("echo-server/echo.wasm").to_str().unwrap(),
    ])
    .runtime_error(&["listening on 127.0.0.1", "in use"]);
}
