//! WASI 0.3 HTTP services (`wasi:http/handler@0.3`, the `wasi:http/service` world), served as 0.2
//! components are: the WASI testsuite's own services (`../shared/wasi-testsuite`), through
//! `serve` and `run`, over HTTP/1.1, h2c and HTTPS, with a streamed echo, the body limit, access
//! lines, metrics and a drain.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use sha2::{Digest as _, Sha256};

use crate::common::{Wasmbox, wasi_testsuite_p3};
use crate::http::Served;

const WITHIN: Duration = Duration::from_secs(60);

fn echo_service() -> String {
    wasi_testsuite_p3("http-service-echo")
        .to_string_lossy()
        .into_owned()
}

/// POSTs `body` to `url` with curl and `args` from stdin: (status, sha256 of the answer).
fn post(url: &str, args: &[&str], body: &[u8]) -> (u16, String) {
    let mut child = Command::new("curl")
        .args(["-s", "-o", "-", "-D", "/dev/stderr", "--data-binary", "@-"])
        .args(args)
        .arg(url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let body = body.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&body);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let head = String::from_utf8_lossy(&out.stderr);
    let status = head
        .lines()
        .rev()
        .find(|l| l.starts_with("HTTP/"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, hex::encode(Sha256::digest(&out.stdout)))
}

#[test]
fn a_wasi_0_3_service_streams_echoes_under_the_limits_and_drains() {
    let wb = Wasmbox::new();
    let mut s = Served::start(
        &wb,
        "serve",
        &["--max-body-size", "8m", "--metrics-addr", "127.0.0.1:0"],
        &echo_service(),
    );
    // 4 MiB through the guest and back, over HTTP/1.1 (chunked, streamed) and h2c.
    let body: Vec<u8> = (0..4 << 20).map(|i: u32| (i * 7 % 251) as u8).collect();
    let digest = hex::encode(Sha256::digest(&body));
    assert_eq!(post(&s.url("/echo"), &[], &body), (200, digest.clone()));
    assert_eq!(
        post(&s.url("/echo"), &["--http2-prior-knowledge"], &body),
        (200, digest)
    );
    // The handler sees the request's headers and answers with its own.
    let out = Command::new("curl")
        .args(["-s", "-D", "-", "-o", "/dev/null", "-H", "x-echo: ping"])
        .arg(s.url("/reflect-header"))
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(head.contains("x-echoed: ping"), "{head}");
    // Past the body limit: 413, the guest never given the body.
    let big = vec![b'x'; 9 << 20];
    let (code, _) = post(&s.url("/echo"), &crate::https::EXPECT, &big);
    assert_eq!(code, 413);
    assert_eq!(s.curl(&[], "/whatever").0, 404);
    // One access line per request, and the metrics count them.
    assert!(
        s.stderr.wait_count(WITHIN, 5, |l| l.starts_with("time=")),
        "{:#?}",
        s.stderr.all()
    );
    let lines = s.stderr.all();
    let echoed: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains(" path=/echo status=200 "))
        .collect();
    assert_eq!(echoed.len(), 2, "{lines:#?}");
    assert!(
        echoed
            .iter()
            .all(|l| l.contains(&format!("bytes={}", 4 << 20)) && !l.contains("incomplete")),
        "{lines:#?}"
    );
    let at = lines
        .iter()
        .find_map(|l| l.strip_prefix("wasmbox: metrics at "))
        .unwrap()
        .to_string();
    let metrics = Command::new("curl").args(["-s", &at]).output().unwrap();
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    assert!(
        metrics.contains(r#"wasmbox_http_limit_hits_total{limit="body_size"} 1"#),
        "{metrics}"
    );
    // SIGINT drains and exits 0, as `wasmtime serve` does on ^C.
    s.signal(libc::SIGINT);
    assert_eq!(s.wait(WITHIN), 0, "{:#?}", s.stderr.all());
    assert!(
        s.stderr
            .all()
            .iter()
            .any(|l| l.starts_with("wasmbox: draining")),
        "{:#?}",
        s.stderr.all()
    );
}

#[test]
fn run_serves_a_wasi_0_3_service_and_its_toolchains_run_export_does_not_make_it_a_command() {
    let wb = Wasmbox::new();
    let service = wasi_testsuite_p3("http-service")
        .to_string_lossy()
        .into_owned();
    let inspected = wb.run(&["inspect", &service]);
    assert!(
        inspected.stdout.contains("HTTP component"),
        "{inspected:#?}"
    );
    let mut s = Served::start(&wb, "run", &[], &service);
    assert_eq!(s.curl(&[], "/"), (200, "hey\n".into()));
    assert_eq!(
        s.curl(&["--http2-prior-knowledge"], "/"),
        (200, "hey\n".into())
    );
    assert_eq!(s.curl(&["-X", "POST"], "/whatever").0, 405);
    s.signal(libc::SIGTERM);
    assert_eq!(s.wait(WITHIN), 0);
}
