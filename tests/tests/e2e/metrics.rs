//! Prometheus metrics: `wasmbox serve --metrics-addr` and a pod's `wasmbox.metrics.addr`, scraped
//! and read with Prometheus' own Python parser (`prometheus_client.parser`); the counts must
//! match the requests the test sent.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::Wasmbox;
use crate::ctrd::{HTTP_HELLO, TestNetns};
use crate::http::{Served, hello};
use crate::shim::{wait_until, with_images};

const WITHIN: Duration = Duration::from_secs(60);

/// One sample: its name, labels and value.
#[derive(Debug)]
pub(crate) struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses an exposition with `prometheus_client.parser` (tests/run.sh installs it).
pub(crate) fn parse(text: &str) -> Vec<Sample> {
    const PARSE: &str = "import json, sys\n\
        from prometheus_client.parser import text_string_to_metric_families as parse\n\
        print(json.dumps([[s.name, s.labels, s.value] for f in parse(sys.stdin.read()) for s in f.samples]))";
    let out = crate::common::fed(
        Command::new("python3")
            .args(["-c", PARSE])
            .stderr(Stdio::piped()),
        text.as_bytes(),
    );
    assert!(
        out.status.success(),
        "the parser refused it: {out:?}\n{text}"
    );
    let rows: Vec<(String, BTreeMap<String, String>, f64)> =
        serde_json::from_slice(&out.stdout).unwrap();
    rows.into_iter()
        .map(|(name, labels, value)| Sample {
            name,
            labels,
            value,
        })
        .collect()
}

/// The value of the sample `name` whose labels include `labels`; none found is 0 (a counter
/// never incremented has no series).
pub(crate) fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect();
    assert!(
        found.len() <= 1,
        "{name} {labels:?} is not one series: {found:#?}"
    );
    found.first().map_or(0.0, |s| s.value)
}

/// `curl` of `url`: (status, content type, body).
pub(crate) fn curl(url: &str, args: &[&str]) -> (u16, String, String) {
    let out = Command::new("curl")
        .args(["-s", "-o", "-", "-w", "\n%{http_code} %{content_type}"])
        .args(args)
        .arg(url)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = text.rsplit_once('\n').unwrap();
    let (code, ctype) = tail.split_once(' ').unwrap_or((tail, ""));
    (
        code.parse().unwrap_or(0),
        ctype.to_string(),
        body.to_string(),
    )
}

#[test]
fn serve_counts_what_it_was_sent_and_prometheus_parses_it() {
    let wb = Wasmbox::new();
    let s = Served::start(
        &wb,
        "serve",
        &[
            "--metrics-addr",
            "127.0.0.1:0",
            "--max-concurrency",
            "8",
            "--max-body-size",
            "1k",
        ],
        &hello(),
    );
    let at = s
        .stderr
        .all()
        .iter()
        .find_map(|l| l.strip_prefix("wasmbox: metrics at ").map(str::to_string))
        .unwrap_or_else(|| panic!("no metrics line: {:#?}", s.stderr.all()));
    assert!(
        at.starts_with("http://127.0.0.1:") && at.ends_with("/metrics"),
        "{at}"
    );
    let mut sent = 0;
    let mut send = |args: &[&str], path: &str, want: u16| {
        assert_eq!(s.curl(args, path).0, want, "{path}");
        sent += 1;
    };
    for _ in 0..6 {
        send(&[], "/", 200);
    }
    for _ in 0..3 {
        send(&[], "/nope", 404);
    }
    for _ in 0..2 {
        send(&[], "/trap", 500);
    }
    let big = "b".repeat(2048);
    let mut refused = crate::https::EXPECT.to_vec();
    refused.extend(["--data-binary", &big]);
    send(&refused, "/echo", 413);
    // Denied: no --allow-http.
    send(&[], "/fetch?url=http://127.0.0.1:1/", 502);
    send(&["--http2-prior-knowledge"], "/", 200);
    // Each request is counted by the time its access line is written.
    assert!(
        s.stderr
            .wait_count(WITHIN, sent, |l| l.starts_with("time=")),
        "{:#?}",
        s.stderr.all()
    );

    let (code, ctype, text) = curl(&at, &[]);
    assert_eq!(code, 200);
    assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
    let m = parse(&text);
    let requests = |method, status| {
        value(
            &m,
            "wasmbox_http_requests_total",
            &[("method", method), ("status", status)],
        )
    };
    assert_eq!(requests("GET", "2xx"), 7.0, "{text}");
    assert_eq!(requests("GET", "4xx"), 3.0, "{text}");
    assert_eq!(requests("GET", "5xx"), 3.0, "{text}");
    assert_eq!(requests("POST", "4xx"), 1.0, "{text}");
    assert_eq!(
        value(&m, "wasmbox_http_request_duration_seconds_count", &[]),
        sent as f64
    );
    assert_eq!(value(&m, "wasmbox_guest_traps_total", &[]), 2.0, "{text}");
    assert_eq!(
        value(
            &m,
            "wasmbox_http_limit_hits_total",
            &[("limit", "body_size")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "wasmbox_http_outgoing_requests_total",
            &[("outcome", "denied")]
        ),
        1.0
    );
    assert_eq!(value(&m, "wasmbox_http_requests_in_flight", &[]), 0.0);
    assert_eq!(value(&m, "wasmbox_instance_slots", &[]), 8.0);
    assert_eq!(value(&m, "wasmbox_instance_slots_in_use", &[]), 0.0);
    assert!(
        value(&m, "wasmbox_guest_cpu_seconds_total", &[]) > 0.0,
        "{text}"
    );
    let loads: f64 = ["compiled", "cache", "memory"]
        .iter()
        .map(|f| value(&m, "wasmbox_compile_loads_total", &[("from", f)]))
        .sum();
    assert_eq!(loads, 1.0, "{text}");
    assert!(
        value(&m, "wasmbox_compile_seconds_total", &[]) > 0.0,
        "{text}"
    );

    // Anything but GET /metrics is refused; the server is untouched by scrapes.
    assert_eq!(curl(&at.replace("/metrics", "/"), &[]).0, 404);
    assert_eq!(curl(&at, &["-X", "POST"]).0, 405);
}

/// Two HTTP containers of one pod (one shim, in a network namespace the test made) that name the
/// same `wasmbox.metrics.addr` share one endpoint there, labelled by their CRI container names.
#[test]
fn a_pods_http_containers_share_one_metrics_endpoint_labelled_by_container() {
    let c = with_images(&[HTTP_HELLO]);
    let netns = TestNetns::new("wbt-metrics");
    let ns_path = format!("/var/run/netns/{}", netns.0);
    let with_ns = format!("network:{ns_path}");
    let serve = |id: &str, name: &str, port: u16| {
        let addr = format!("wasmbox.http.addr=127.0.0.1:{port}");
        let cri_name = format!("io.kubernetes.cri.container-name={name}");
        let log = c.run_detached(
            &[
                "--with-ns",
                &with_ns,
                "--annotation",
                &addr,
                "--annotation",
                "wasmbox.metrics.addr=127.0.0.1:9464",
                "--annotation",
                &cri_name,
                "--annotation",
                "io.containerd.runc.v2.group=metrics",
            ],
            HTTP_HELLO,
            id,
            &["/app.wasm"],
        );
        crate::shim_net::wait_serving(&c, &log, id, port);
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(
            text.contains("wasmbox: metrics at http://127.0.0.1:9464/metrics"),
            "{text}"
        );
        log
    };
    let front_log = serve("m-front", "front", 8080);
    let back_log = serve("m-back", "back", 8081);
    assert_eq!(c.pid("m-front"), c.pid("m-back"), "one shim serves the pod");
    let get = |port, path| crate::shim_net::http_in_netns(ns_path.clone(), port, path);
    for _ in 0..3 {
        assert_eq!(get(8080, "/"), "200|hello from wasm\n");
    }
    assert_eq!(get(8081, "/nope"), "404|not found\n");
    let access = |log: &std::path::Path| {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("time=") && l.contains(" method=GET "))
            .count()
    };
    wait_until("the access lines are written", || {
        access(&front_log) == 3 && access(&back_log) == 1
    });
    let scraped = get(9464, "/metrics");
    let (status, text) = scraped.split_once('|').unwrap();
    assert_eq!(status, "200", "{scraped}");
    let m = parse(text);
    let requests = |container, status| {
        value(
            &m,
            "wasmbox_http_requests_total",
            &[
                ("container", container),
                ("method", "GET"),
                ("status", status),
            ],
        )
    };
    assert_eq!(requests("front", "2xx"), 3.0, "{text}");
    assert_eq!(requests("back", "4xx"), 1.0, "{text}");
    assert_eq!(requests("back", "2xx"), 0.0, "{text}");
    for container in ["front", "back"] {
        assert_eq!(
            value(&m, "wasmbox_instance_slots", &[("container", container)]),
            256.0,
            "{text}"
        );
    }
    // Not on the host's network.
    assert!(std::net::TcpStream::connect(("127.0.0.1", 9464)).is_err());
    // A container that has gone leaves no live gauge behind; the other's stay.
    assert_eq!(c.ctr(&["task", "kill", "-s", "SIGKILL", "m-back"]).code, 0);
    c.wait_status("m-back", "STOPPED");
    assert_eq!(c.ctr(&["task", "delete", "m-back"]).code, 0);
    let scraped = get(9464, "/metrics");
    let m = parse(scraped.split_once('|').unwrap().1);
    assert_eq!(
        value(&m, "wasmbox_instance_slots", &[("container", "back")]),
        0.0
    );
    assert_eq!(
        value(&m, "wasmbox_instance_slots", &[("container", "front")]),
        256.0
    );
    assert_eq!(c.ctr(&["task", "kill", "-s", "SIGKILL", "m-front"]).code, 0);
    c.wait_status("m-front", "STOPPED");
    assert_eq!(c.ctr(&["task", "delete", "m-front"]).code, 0);
}
