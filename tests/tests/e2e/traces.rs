//! OpenTelemetry traces: `wasmbox serve` with `OTEL_EXPORTER_OTLP_ENDPOINT` set exports its spans
//! to a local OTLP/HTTP receiver (tests/clients/otlp_receiver.py, decoding them with the
//! `opentelemetry-proto` package): the request's server span is the child of the `traceparent`
//! it came with, the handler's outgoing request a client span below it whose `traceparent`
//! reaches the server it calls; the load is a span; the service name and resource attributes
//! come from the standard variables. Unset, nothing is started.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use crate::common::{Lines, Wasmbox};
use crate::http::{Served, hello};

const WITHIN: Duration = Duration::from_secs(60);

/// The receiver and the downstream server, run until dropped.
struct Receiver {
    child: std::process::Child,
    lines: Arc<Lines>,
    otlp: u16,
    down: u16,
}

impl Receiver {
    fn start() -> Self {
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/otlp_receiver.py");
        let mut child = Command::new("python3")
            .arg(script)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Lines::read(child.stdout.take().unwrap());
        let first = lines
            .find(WITHIN, |l| l.starts_with(r#"{"ports""#))
            .expect("the receiver did not start (tests/run.sh installs opentelemetry-proto)");
        let v: serde_json::Value = serde_json::from_str(&first).unwrap();
        Self {
            child,
            lines,
            otlp: v["ports"][0].as_u64().unwrap() as u16,
            down: v["ports"][1].as_u64().unwrap() as u16,
        }
    }

    /// Waits for a JSON line `want` accepts.
    fn wait(&self, what: &str, want: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let line = self
            .lines
            .find(WITHIN, |l| serde_json::from_str(l).is_ok_and(|v| want(&v)))
            .unwrap_or_else(|| panic!("no {what}: {:#?}", self.lines.all()));
        serde_json::from_str(&line).unwrap()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The names of `pid`'s threads.
fn threads(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .map(|c| c.trim().to_string())
        .collect()
}

/// The scheduling policy of `pid`'s thread whose name starts with `name` (field 41 of its
/// `stat`: 0 normal, 3 batch).
fn policy(pid: u32, name: &str) -> Option<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with(name))
        })
        .find_map(|t| {
            let stat = std::fs::read_to_string(t.path().join("stat")).ok()?;
            // Fields from the third on follow the name's closing parenthesis.
            stat.rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(38)?
                .parse()
                .ok()
        })
}

const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const PARENT: &str = "b7ad6b7169203331";

#[test]
fn a_trace_crosses_the_guest_from_the_incoming_request_to_the_outgoing_one() {
    let wb = Wasmbox::new();
    let r = Receiver::start();
    let mut cmd = wb.cmd();
    cmd.env(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        format!("http://127.0.0.1:{}", r.otlp),
    )
    .env("OTEL_BSP_SCHEDULE_DELAY", "100")
    .env("OTEL_SERVICE_NAME", "shop")
    .env("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test");
    let grant = format!("127.0.0.1:{}", r.down);
    let s = Served::start_as(cmd, "serve", &["--allow-http", &grant], &hello());
    assert!(
        threads(s.child.id())
            .iter()
            .any(|t| t.starts_with("OpenTelemetry")),
        "{:?}",
        threads(s.child.id())
    );
    let traceparent = format!("traceparent: 00-{TRACE}-{PARENT}-01");
    let path = format!("/fetch?url=http://127.0.0.1:{}/", r.down);
    assert_eq!(s.curl(&["-H", &traceparent], &path), (200, "down".into()));
    // What reached the downstream server: this trace, and the client span's id.
    let down = r.wait("traceparent downstream", |v| v.get("traceparent").is_some());
    let carried = down["traceparent"].as_str().unwrap_or_default().to_string();
    let parts: Vec<&str> = carried.split('-').collect();
    assert_eq!((parts.len(), parts[1]), (4, TRACE), "{carried}");
    let server = r.wait("server span", |v| v["kind"] == 2 && v["trace"] == TRACE);
    assert_eq!(server["parent"], PARENT, "{server:#}");
    assert_eq!(server["span"], "GET");
    let attrs = &server["attributes"];
    assert_eq!(attrs["http.request.method"], "GET", "{server:#}");
    assert_eq!(attrs["url.path"], "/fetch", "{server:#}");
    assert_eq!(attrs["http.response.status_code"], 200, "{server:#}");
    assert_eq!(server["service"], "shop");
    assert_eq!(server["resource"]["deployment.environment"], "test");
    let client = r.wait("client span", |v| v["kind"] == 3 && v["trace"] == TRACE);
    assert_eq!(client["parent"], server["id"], "{client:#}");
    assert_eq!(
        client["id"], parts[2],
        "the traceparent sent is the client span's"
    );
    assert_eq!(client["attributes"]["http.response.status_code"], 200);
    assert_eq!(
        client["attributes"]["url.full"],
        format!("http://127.0.0.1:{}/", r.down)
    );
    let load = r.wait("load span", |v| v["span"] == "wasmbox.load");
    assert!(
        ["compiled", "cache", "memory"].contains(
            &load["attributes"]["wasmbox.load.from"]
                .as_str()
                .unwrap_or("")
        ),
        "{load:#}"
    );
    // A request without a traceparent starts a trace of its own.
    assert_eq!(s.curl(&[], "/"), (200, "hello from wasm\n".into()));
    let root = r.wait("root server span", |v| {
        v["kind"] == 2 && v["trace"] != TRACE && v["attributes"]["url.path"] == "/"
    });
    assert_eq!(root["parent"], "", "{root:#}");
    // Having exported, the exporter's thread runs as batch work; the serving threads do not.
    assert_eq!(policy(s.child.id(), "OpenTelemetry"), Some(3));
    assert_eq!(policy(s.child.id(), "wasmbox-guest"), Some(0));
}

#[test]
fn without_an_endpoint_nothing_is_started() {
    let wb = Wasmbox::new();
    let mut cmd = wb.cmd();
    cmd.env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    let s = Served::start_as(cmd, "serve", &[], &hello());
    assert_eq!(s.curl(&[], "/"), (200, "hello from wasm\n".into()));
    let names = threads(s.child.id());
    assert!(
        !names.iter().any(|t| t.starts_with("OpenTelemetry")),
        "{names:?}"
    );
}

/// Under containerd, the shim reads the variables from containerd's environment: a container's
/// create, start and load are spans of the service `wasmbox`.
#[test]
fn the_shims_create_start_and_load_are_spans() {
    let r = Receiver::start();
    let endpoint = format!("http://127.0.0.1:{}", r.otlp);
    let c = crate::ctrd::Containerd::start_with_env(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ]);
    c.import(&crate::ctrd::Images::get().archive(crate::ctrd::HELLO));
    let out = c.run(&[], crate::ctrd::HELLO, "traced", &[]);
    assert_eq!(out.code, 0, "{out:#?}");
    for name in ["wasmbox.shim.create", "wasmbox.shim.start"] {
        let span = r.wait(name, |v| {
            v["span"] == name && v["attributes"]["container.id"] == "traced"
        });
        assert_eq!(span["service"], "wasmbox", "{span:#}");
    }
    r.wait("load span", |v| v["span"] == "wasmbox.load");
}
