//! The shim and network namespaces: guest sockets and HTTP components in the namespace their
//! spec names, never the host's unasked; a group's namespace rule.

use std::io::Write;

use crate::ctrd::{
    Containerd, ECHO, EventLog, FILES, HTTP_HELLO, HTTP_SERVICE_P3, NET_PROBE, TestNetns,
};

use crate::shim::{wait_listening, wait_until, with_images};

#[test]
fn guest_sockets_live_in_the_network_namespace_the_spec_names() {
    let c = with_images(&[ECHO]);
    let netns = TestNetns::new("wbt-net");
    let ns = &netns.0;
    let port = crate::common::free_port();
    let grant = format!("wasmbox.net.listen=127.0.0.1:{port}");
    let path = format!("network:/var/run/netns/{ns}");
    let log = c.run_detached(
        &["--with-ns", &path, "--annotation", &grant],
        ECHO,
        "echo",
        &["/app.wasm"],
    );
    wait_listening(&log);
    // Not in the host's namespace...
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    // ...but in the named one.
    let ns_path = format!("/var/run/netns/{ns}");
    assert_eq!(echo_in_netns(ns_path, port, "ping\n"), "ping\n");
    assert_eq!(c.ctr(&["task", "kill", "-s", "SIGKILL", "echo"]).code, 0);
}

/// `memory.usage_in_bytes` of `id` as `ctr task metrics` reports it.
fn memory_usage(c: &Containerd, id: &str) -> u64 {
    let metrics = c.ctr(&["task", "metrics", id]);
    assert_eq!(metrics.code, 0, "{metrics:#?}");
    metrics
        .stdout
        .lines()
        .find(|l| l.starts_with("memory.usage_in_bytes"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{metrics:#?}"))
}

/// Two HTTP components of one pod (one group, one network namespace the test made) are served
/// by one shim on two ports; requests come through that namespace; `ctr task metrics` counts the
/// memory of the instances alive; a kill drains: a slow request in flight completes, the task
/// exits 0, and the container's log has the readiness, drain and access lines.
#[test]
fn http_components_are_served_in_the_pods_namespace_and_drain_on_kill() {
    let c = with_images(&[HTTP_HELLO]);
    let netns = TestNetns::new("wbt-http");
    let ns = &netns.0;
    let events = EventLog::start(&c);
    let path = format!("network:/var/run/netns/{ns}");
    let serve = |id: &str, port: u16| {
        let addr = format!("wasmbox.http.addr=127.0.0.1:{port}");
        let log = c.run_detached(
            &[
                "--with-ns",
                &path,
                "--annotation",
                &addr,
                "--annotation",
                "io.containerd.runc.v2.group=web",
            ],
            HTTP_HELLO,
            id,
            &["/app.wasm"],
        );
        // The server is up once its log says so (the container's stderr).
        wait_serving(&c, &log, id, port);
        log
    };
    let log = serve("web", 8080);
    serve("web2", 8081);
    assert_eq!(c.pid("web"), c.pid("web2"), "one shim serves the pod");
    let ns_path = format!("/var/run/netns/{ns}");
    // On the namespace's loopback (the host's 8080 is not the pod's).
    assert_eq!(
        http_in_netns(ns_path.clone(), 8080, "/"),
        "200|hello from wasm\n"
    );
    assert_eq!(http_in_netns(ns_path.clone(), 8081, "/count"), "200|1\n");
    // Between requests no instance lives; what counts is what the one slot it used keeps
    // resident (at most 256 KiB a memory, 64 KiB a table).
    let idle = memory_usage(&c, "web");
    assert!(idle > 0 && idle <= 4 << 20, "{idle}");
    // A slow request in flight when the kill comes still completes; then the task exits 0.
    let slow = {
        let p = ns_path.clone();
        std::thread::spawn(move || http_in_netns(p, 8080, "/sleep"))
    };
    wait_until("the slow request is in the handler", || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("] sleeping"))
    });
    // Its instance's memory is the container's while it lives, beside what the slots keep.
    assert!(memory_usage(&c, "web") >= idle + (64 << 10));
    assert_eq!(c.ctr(&["task", "kill", "web"]).code, 0);
    assert_eq!(slow.join().unwrap(), "200|slept\n");
    let exit = events.wait_for("web", "/tasks/exit");
    // A drained server exits 0 (protobuf's JSON leaves a zero out).
    assert_eq!(
        exit.body["exit_status"].as_u64().unwrap_or(0),
        0,
        "{exit:#?}"
    );
    c.wait_status("web", "STOPPED");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("wasmbox: draining"), "{text}");
    // The access log went to the container's log, one line per request.
    let access: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("time=") && l.contains(" method=GET "))
        .collect();
    assert_eq!(access.len(), 2, "{text}");
    assert!(
        access.iter().any(|l| l.contains("path=/sleep status=200")),
        "{text}"
    );
    // The pod's other server went on.
    assert_eq!(
        http_in_netns(ns_path.clone(), 8081, "/"),
        "200|hello from wasm\n"
    );
    assert_eq!(c.ctr(&["task", "delete", "web"]).code, 0);
    assert_eq!(c.ctr(&["task", "kill", "-s", "SIGKILL", "web2"]).code, 0);
    c.wait_status("web2", "STOPPED");
    assert_eq!(c.ctr(&["task", "delete", "web2"]).code, 0);
}

/// A WASI 0.3 service (the WASI testsuite's `http-service`) is served by the shim in the pod's
/// namespace as a 0.2 component is, and a kill drains it: the task exits 0.
#[test]
fn a_wasi_0_3_service_is_served_in_the_pods_namespace_and_drains_on_kill() {
    let c = with_images(&[HTTP_SERVICE_P3]);
    let netns = TestNetns::new("wbt-p3http");
    let path = format!("network:/var/run/netns/{}", netns.0);
    let events = EventLog::start(&c);
    let log = c.run_detached(
        &[
            "--with-ns",
            &path,
            "--annotation",
            "wasmbox.http.addr=127.0.0.1:8080",
        ],
        HTTP_SERVICE_P3,
        "svc",
        &["/app.wasm"],
    );
    wait_serving(&c, &log, "svc", 8080);
    let ns_path = format!("/var/run/netns/{}", netns.0);
    assert_eq!(http_in_netns(ns_path.clone(), 8080, "/"), "200|hey\n");
    assert_eq!(
        http_in_netns(ns_path, 8080, "/whatever").split('|').next(),
        Some("404")
    );
    assert_eq!(c.ctr(&["task", "kill", "svc"]).code, 0);
    let exit = events.wait_for("svc", "/tasks/exit");
    assert_eq!(
        exit.body["exit_status"].as_u64().unwrap_or(0),
        0,
        "{exit:#?}"
    );
    c.wait_status("svc", "STOPPED");
    assert_eq!(c.ctr(&["task", "delete", "svc"]).code, 0);
}

/// A plain `ctr run` (a new network namespace asked for, none named, no network granted) serves
/// an HTTP component in a namespace of its own, as runc would run it: never on the host's.
#[test]
fn an_http_component_never_listens_on_the_hosts_network_unasked() {
    let c = with_images(&[HTTP_HELLO]);
    let port = crate::common::free_port();
    let addr = format!("wasmbox.http.addr=127.0.0.1:{port}");
    let log = c.run_detached(
        &["--annotation", &addr],
        HTTP_HELLO,
        "private",
        &["/app.wasm"],
    );
    wait_serving(&c, &log, "private", port);
    let refused = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    // `--net-host` asks for the host's namespace: there it answers.
    let port2 = crate::common::free_port();
    let addr2 = format!("wasmbox.http.addr=127.0.0.1:{port2}");
    let log2 = c.run_detached(
        &["--net-host", "--annotation", &addr2],
        HTTP_HELLO,
        "hosted",
        &["/app.wasm"],
    );
    wait_serving(&c, &log2, "hosted", port2);
    let out = std::process::Command::new("curl")
        .args(["-s", &format!("http://127.0.0.1:{port2}/")])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from wasm\n");
    for id in ["private", "hosted"] {
        assert_eq!(c.ctr(&["task", "kill", "-s", "SIGKILL", id]).code, 0);
        c.wait_status(id, "STOPPED");
        assert_eq!(c.ctr(&["task", "delete", id]).code, 0);
    }
}

/// Waits until the log at `log` of container `id` says it serves on 127.0.0.1:`port` (or the
/// container stopped), and asserts it runs.
pub(crate) fn wait_serving(c: &Containerd, log: &std::path::Path, id: &str, port: u16) {
    let ready = format!("wasmbox: serving http://127.0.0.1:{port}");
    wait_until("the server is listening", || {
        std::fs::read_to_string(log).is_ok_and(|l| l.contains(&ready))
            || c.status(id).as_deref() == Some("STOPPED")
    });
    assert_eq!(c.status(id).as_deref(), Some("RUNNING"), "{}", c.log_tail());
}

/// GETs `path` (HTTP/1.0, so the body is not chunked) from 127.0.0.1:`port` in the network
/// namespace at `ns_path`; returns the status code and the body, joined by `|`.
pub(crate) fn http_in_netns(ns_path: String, port: u16, path: &'static str) -> String {
    std::thread::spawn(move || {
        use std::io::Read;
        enter_netns(&ns_path);
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\nhost: web\r\n\r\n").unwrap();
        let mut got = String::new();
        s.read_to_string(&mut got).unwrap();
        let status = got
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string();
        let body = got
            .split_once("\r\n\r\n")
            .map(|(_, b)| b)
            .unwrap_or_default();
        format!("{status}|{body}")
    })
    .join()
    .unwrap()
}

/// Sends `msg` to the echo server on 127.0.0.1:`port` of the network namespace at `ns_path`,
/// from a thread that joins it, and returns the reply.
fn echo_in_netns(ns_path: String, port: u16, msg: &'static str) -> String {
    std::thread::spawn(move || {
        use std::io::Read;
        enter_netns(&ns_path);
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(msg.as_bytes()).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut got = String::new();
        s.read_to_string(&mut got).unwrap();
        got
    })
    .join()
    .unwrap()
}

#[allow(unsafe_code, reason = "setns(2) on the calling test thread only")]
fn enter_netns(path: &str) {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).unwrap();
    // SAFETY: setns reads the descriptor only; it moves just this thread.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
}

#[test]
fn a_guest_granted_network_gets_a_namespace_of_its_own_unless_the_host_one_is_asked_for() {
    let c = with_images(&[ECHO]);
    let port = crate::common::free_port();
    let grant = format!("wasmbox.net.listen=127.0.0.1:{port}");
    // Plain `ctr run` asks for a new network namespace: the listener is not on the host's
    // loopback, but on the shim's own namespace's.
    let log = c.run_detached(&["--annotation", &grant], ECHO, "own", &["/app.wasm"]);
    wait_listening(&log);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    let shim = c.shims()[0];
    let ns_path = format!("/proc/{shim}/ns/net");
    assert_ne!(
        std::fs::read_link(&ns_path).unwrap(),
        std::fs::read_link("/proc/self/ns/net").unwrap()
    );
    assert_eq!(echo_in_netns(ns_path, port, "own\n"), "own\n");
    assert_eq!(c.ctr(&["task", "kill", "-s", "SIGKILL", "own"]).code, 0);
    c.wait_status("own", "STOPPED");
    // `--net-host` keeps the host's namespace.
    c.run_detached(
        &["--net-host", "--annotation", &grant],
        ECHO,
        "host",
        &["/app.wasm"],
    );
    c.wait_status("host", "RUNNING");
    let mut s = None;
    wait_until("the listener is up on the host's loopback", || {
        s = std::net::TcpStream::connect(("127.0.0.1", port)).ok();
        s.is_some()
    });
    assert_eq!(c.ctr(&["task", "kill", "-s", "SIGKILL", "host"]).code, 0);
}

/// A group's guests live in its shim's one network namespace, so each must ask for the one the
/// group's first container asked for: a plain `ctr run` in a group a `--net-host` container began
/// would reach the host's loopback services, and a `--net-host` one in a plain group would not
/// get the host's network it asked for.
#[test]
fn a_group_refuses_a_container_asking_for_another_network_namespace() {
    let c = with_images(&[FILES, NET_PROBE]);
    let pong = crate::common::PongServer::start();
    let port = pong.port.to_string();
    let grant = format!("wasmbox.net.connect=127.0.0.1:{port}");
    let probe = ["/app.wasm", "connect", "127.0.0.1", port.as_str()];
    for (group, first, other) in [
        ("nethost", "--net-host", "a new network namespace"),
        ("netown", "", "the host's network namespace"),
    ] {
        let label = format!("io.containerd.runc.v2.group={group}");
        let flags = |net: &'static str| {
            let mut f = vec![
                "--annotation",
                label.as_str(),
                "--annotation",
                grant.as_str(),
            ];
            f.extend([net].into_iter().filter(|n| !n.is_empty()));
            f
        };
        let anchor = format!("{group}-anchor");
        c.run_detached(
            &flags(first),
            FILES,
            &anchor,
            &["/app.wasm", "sleep", "600000"],
        );
        c.wait_status(&anchor, "RUNNING");
        // The other request is refused, saying why.
        let second = if first.is_empty() { "--net-host" } else { "" };
        let out = c.run(&flags(second), NET_PROBE, &format!("{group}-other"), &probe);
        assert_ne!(out.code, 0, "{group}: {out:#?}");
        assert!(
            out.stderr.contains(&format!("asks for {other}"))
                && out
                    .stderr
                    .contains("must ask for the same network namespace"),
            "{group}: {out:#?}"
        );
        assert!(c.status(&format!("{group}-other")).is_none());
        // The same request as the first's runs, in the group's namespace.
        let out = c.run(&flags(first), NET_PROBE, &format!("{group}-same"), &probe);
        if first.is_empty() {
            // It ran, in the group's own namespace, where the host's listener is not.
            assert_eq!(out.code, 1, "{group}: {out:#?}\n{}", c.log_tail());
            assert_eq!(out.stdout, "error: connection-refused\n", "{group}");
        } else {
            assert_eq!(out.code, 0, "{group}: {out:#?}\n{}", c.log_tail());
            assert_eq!(out.stdout, "connected\npong\n", "{group}");
        }
        assert_eq!(c.ctr(&["task", "kill", "-s", "SIGKILL", &anchor]).code, 0);
        c.wait_status(&anchor, "STOPPED");
        assert_eq!(c.ctr(&["task", "delete", &anchor]).code, 0);
    }
}

#[test]
fn an_http_grant_alone_also_gets_a_namespace_of_its_own() {
    // wasmbox sends a guest's HTTP requests itself, from the namespace it is in: a guest granted
    // only outgoing HTTP must not be left in the host's, where the host's loopback services are.
    let c = with_images(&[FILES]);
    let grant = "wasmbox.http.allow=127.0.0.1:8080";
    c.run_detached(
        &["--annotation", grant],
        FILES,
        "http",
        &["/app.wasm", "sleep", "600000"],
    );
    c.wait_status("http", "RUNNING");
    let shim = c.pid("http");
    assert_ne!(
        std::fs::read_link(format!("/proc/{shim}/ns/net")).unwrap(),
        std::fs::read_link("/proc/self/ns/net").unwrap(),
        "the shim runs the guest in a network namespace of its own"
    );
    assert_eq!(c.ctr(&["task", "kill", "-s", "SIGKILL", "http"]).code, 0);
}
