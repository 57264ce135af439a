//! Serving HTTP components: `wasmbox serve` (and `wasmbox run`) on loopback, driven by curl and
//! by hyper as a client, with the `http-hello` example (C, `examples/http-hello`).

use std::io::{Read, Write};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use sha2::{Digest as _, Sha256};

use crate::common::{Wasmbox, guest};

mod served;
pub(crate) use served::{READY, Served, built_example, hello};

/// The Python app (`examples/http-py`).
fn python_app() -> String {
    built_example("http-py")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

fn empty() -> Body {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed()
}

/// One HTTP/1.1 connection to `addr`, kept alive across requests.
async fn http1(addr: &str) -> hyper::client::conn::http1::SendRequest<Body> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

fn get(addr: &str, path: &str) -> hyper::Request<Body> {
    hyper::Request::get(path)
        .header("host", addr)
        .body(empty())
        .unwrap()
}

async fn text(resp: hyper::Response<hyper::body::Incoming>) -> (u16, String) {
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[test]
fn an_http_component_answers_curl_and_keeps_connections_alive() {
    let wb = Wasmbox::new();
    let s = Served::start(&wb, "serve", &[], &hello());
    assert_eq!(s.curl(&[], "/"), (200, "hello from wasm\n".into()));
    // The same through `run`: an HTTP component is served with no extra flag.
    let r = Served::start(&wb, "run", &[], &hello());
    assert_eq!(r.curl(&[], "/"), (200, "hello from wasm\n".into()));
    // Ten requests over one connection, each answered by a fresh instance: the handler's
    // counter (a global of its instance) is 1 every time.
    let addr = s.addr.clone();
    runtime().block_on(async move {
        let mut conn = http1(&addr).await;
        for _ in 0..10 {
            conn.ready().await.unwrap();
            let resp = conn.send_request(get(&addr, "/count")).await.unwrap();
            assert_eq!(text(resp).await, (200, "1\n".into()));
        }
    });
    let line = s.access_line("/count");
    let fields: Vec<&str> = line.split(' ').collect();
    assert!(
        fields[0].starts_with("time=20") && fields[0].ends_with('Z'),
        "{line}"
    );
    assert!(fields[1].starts_with("id="), "{line}");
    assert_eq!(
        fields[2..5],
        ["method=GET", "path=/count", "status=200"],
        "{line}"
    );
    assert!(
        fields[5].starts_with("duration=") && fields[5].ends_with("ms"),
        "{line}"
    );
    assert_eq!(fields[6], "bytes=2", "{line}");
}

#[test]
fn h2c_and_two_hundred_concurrent_requests_are_all_answered() {
    let wb = Wasmbox::new();
    let s = Served::start(&wb, "serve", &[], &hello());
    let out = Command::new("curl")
        .args(["-s", "--http2-prior-knowledge", "-w", "%{http_version}"])
        .arg(s.url("/"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from wasm\n2");
    let addr = s.addr.clone();
    runtime().block_on(async move {
        // HTTP/2 without TLS, many streams on one connection.
        let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let (h2, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tcp),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let mut tasks = Vec::new();
        for i in 0..100 {
            let mut h2 = h2.clone();
            let uri = format!("http://{addr}/echo");
            tasks.push(tokio::spawn(async move {
                let body = format!("stream {i}");
                let req = hyper::Request::post(uri)
                    .body(
                        Full::new(Bytes::from(body.clone()))
                            .map_err(|n| match n {})
                            .boxed(),
                    )
                    .unwrap();
                let resp = h2.send_request(req).await.unwrap();
                assert_eq!(text(resp).await, (200, body));
            }));
        }
        // And 200 HTTP/1.1 connections at once, each with a body of its own.
        for i in 0..200 {
            let addr = addr.clone();
            tasks.push(tokio::spawn(async move {
                let mut conn = http1(&addr).await;
                let body = format!("request {i}");
                let req = hyper::Request::post("/echo")
                    .header("host", &addr)
                    .body(
                        Full::new(Bytes::from(body.clone()))
                            .map_err(|n| match n {})
                            .boxed(),
                    )
                    .unwrap();
                let resp = conn.send_request(req).await.unwrap();
                assert_eq!(text(resp).await, (200, body));
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

#[test]
fn a_streamed_hundred_mebibyte_body_is_echoed_without_being_held_whole() {
    const MIB: usize = 1 << 20;
    let wb = Wasmbox::new();
    let s = Served::start(&wb, "serve", &["--memory", "32m"], &hello());
    let addr = s.addr.clone();
    let (sent, got, len) = runtime().block_on(async move {
        let mut conn = http1(&addr).await;
        // 100 chunks of 1 MiB, each different, produced as they are sent.
        let (tx, rx) =
            tokio::sync::mpsc::channel::<Result<hyper::body::Frame<Bytes>, std::io::Error>>(2);
        let sender = tokio::spawn(async move {
            let mut h = Sha256::new();
            for i in 0..100u32 {
                let chunk: Vec<u8> = (0..MIB)
                    .map(|j| (j as u32 ^ i.wrapping_mul(2_654_435_761)) as u8)
                    .collect();
                h.update(&chunk);
                if tx
                    .send(Ok(hyper::body::Frame::data(Bytes::from(chunk))))
                    .await
                    .is_err()
                {
                    break;
                }
            }
            hex::encode(h.finalize())
        });
        let body = StreamBody::new(tokio_stream(rx)).boxed();
        let req = hyper::Request::post("/echo")
            .header("host", &addr)
            .body(body)
            .unwrap();
        let resp = conn.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        let mut h = Sha256::new();
        let mut len = 0usize;
        while let Some(f) = body.frame().await {
            if let Ok(d) = f.unwrap().into_data() {
                len += d.len();
                h.update(&d);
            }
        }
        (sender.await.unwrap(), hex::encode(h.finalize()), len)
    });
    assert_eq!(len, 100 * MIB);
    assert_eq!(sent, got);
    // Neither wasmbox nor the guest (capped at 32 MiB) held the body whole.
    let peak = crate::common::peak_rss_kib(s.child.id());
    assert!(peak < 90 * 1024, "peak RSS {peak} KiB");
}

/// Trailers go both ways, over HTTP/2 and over HTTP/1.1 (chunked, when the client says it takes
/// them): the handler gets the request's and answers with its own.
#[test]
fn trailers_reach_the_handler_and_come_back() {
    let wb = Wasmbox::new();
    let s = Served::start(&wb, "serve", &[], &hello());
    let addr = s.addr.clone();
    runtime().block_on(async move {
        let request = || {
            let mut t = hyper::HeaderMap::new();
            t.insert("x-client", "sent at the end".parse().unwrap());
            let frames = vec![
                Ok::<_, std::io::Error>(hyper::body::Frame::data(Bytes::from_static(b"some body"))),
                Ok(hyper::body::Frame::trailers(t)),
            ];
            StreamBody::new(futures_util::stream::iter(frames)).boxed()
        };
        let check = |data: Vec<u8>, trailers: Option<hyper::HeaderMap>| {
            assert_eq!(data, b"some body");
            let t = trailers.expect("response trailers");
            assert_eq!(t["x-client"], "sent at the end");
            assert_eq!(t["x-wasm"], "trailer");
        };
        // HTTP/2.
        let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let (mut h2, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tcp),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let req = hyper::Request::post(format!("http://{addr}/trailers"))
            .body(request())
            .unwrap();
        let resp = h2.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let collected = resp.into_body().collect().await.unwrap();
        let trailers = collected.trailers().cloned();
        check(collected.to_bytes().to_vec(), trailers);
        // HTTP/1.1, chunked.
        let mut conn = http1(&addr).await;
        let req = hyper::Request::post("/trailers")
            .header("host", &addr)
            .header("te", "trailers")
            // HTTP/1.1 sends only the trailers its head declares.
            .header("trailer", "x-client")
            .body(request())
            .unwrap();
        let resp = conn.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let collected = resp.into_body().collect().await.unwrap();
        let trailers = collected.trailers().cloned();
        check(collected.to_bytes().to_vec(), trailers);
    });
    // Both responses ended, trailers and all.
    for _ in 0..2 {
        let line = s.access_line("/trailers");
        assert!(!line.contains("incomplete"), "{line}");
    }
}

/// A stream of frames from a channel, for a streamed request body.
fn tokio_stream<T>(mut rx: tokio::sync::mpsc::Receiver<T>) -> impl futures_core::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[test]
fn faults_stay_in_their_request_and_the_server_goes_on() {
    let wb = Wasmbox::new();
    let s = Served::start(
        &wb,
        "serve",
        &["--memory", "16m", "--request-timeout", "1s"],
        &hello(),
    );
    let (code, _) = s.curl(&[], "/trap");
    assert_eq!(code, 500);
    assert!(
        s.stderr.wait(Duration::from_secs(30), |l| l
            .contains("wasmbox: handler trapped")),
        "{:#?}",
        s.stderr.all()
    );
    assert_eq!(s.curl(&[], "/"), (200, "hello from wasm\n".into()));
    let (code, _) = s.curl(&[], "/alloc");
    assert_eq!(code, 500);
    assert!(
        s.stderr.wait(Duration::from_secs(30), |l| l.contains(
            "wasmbox: handler exceeded its memory limit of 16777216 bytes"
        )),
        "{:#?}",
        s.stderr.all()
    );
    let t = Instant::now();
    let (code, _) = s.curl(&[], "/spin");
    assert_eq!(code, 503);
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    assert!(
        s.stderr.wait(Duration::from_secs(30), |l| l
            .contains("wasmbox: handler timed out after 1s")),
        "{:#?}",
        s.stderr.all()
    );
    let (code, _) = s.curl(&[], "/noresponse");
    assert_eq!(code, 500);
    assert!(s.stderr.wait(Duration::from_secs(30), |l| {
        l.contains("wasmbox: handler returned without a response")
    }));
    // Malformed requests get 400 from wasmbox's HTTP layer and never reach a guest.
    let mut raw = std::net::TcpStream::connect(&s.addr).unwrap();
    raw.write_all(b"NOT HTTP AT ALL\r\n\r\n").unwrap();
    let mut answer = String::new();
    let _ = raw.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
    assert_eq!(s.curl(&[], "/"), (200, "hello from wasm\n".into()));
}

#[test]
fn handler_output_is_tagged_with_its_request_id() {
    let wb = Wasmbox::new();
    let s = Served::start(&wb, "serve", &[], &hello());
    assert_eq!(s.curl(&[], "/print"), (200, "printed\n".into()));
    let access = s.access_line("/print");
    let id = access
        .split(' ')
        .find_map(|f| f.strip_prefix("id="))
        .unwrap()
        .to_string();
    let out = format!("[{id}] a line on stdout");
    let err = format!("[{id}] a line on stderr");
    assert!(
        s.stdout.wait(Duration::from_secs(30), |l| l == out),
        "{:#?}",
        s.stdout.all()
    );
    assert!(
        s.stderr.wait(Duration::from_secs(30), |l| l == err),
        "{:#?}",
        s.stderr.all()
    );
    // The unterminated last line is kept too.
    let tail = format!("[{id}] no newline at the end");
    assert!(
        s.stdout.wait(Duration::from_secs(30), |l| l == tail),
        "{:#?}",
        s.stdout.all()
    );
}

/// A loopback HTTP server answering every request with `body`; counts its connections.
pub(crate) struct Upstream {
    port: u16,
    connections: Arc<std::sync::atomic::AtomicUsize>,
}

impl Upstream {
    pub(crate) fn start(body: &'static str) -> Self {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let c2 = connections.clone();
        std::thread::spawn(move || {
            for mut c in l.incoming().flatten() {
                c2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut buf = [0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match c.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = write!(
                    c,
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Upstream { port, connections }
    }

    fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[test]
fn outgoing_requests_reach_only_granted_authorities() {
    let granted = Upstream::start("upstream says hi");
    let other = Upstream::start("should never be seen");
    let wb = Wasmbox::new();
    let grant = format!("localhost:{}", granted.port);
    let ip_grant = format!("127.0.0.1:{}", granted.port);
    let s = Served::start(
        &wb,
        "serve",
        &["--allow-http", &grant, "--allow-http", &ip_grant],
        &hello(),
    );
    let fetch = |url: String| s.curl(&["-G", "--data-urlencode", &format!("url={url}")], "/fetch");
    let (code, body) = fetch(format!("http://127.0.0.1:{}/x", granted.port));
    assert_eq!((code, body.as_str()), (200, "upstream says hi"));
    assert_eq!(granted.connections(), 1);
    // Not granted: denied before any connection, with the denied error code.
    let (code, body) = fetch(format!("http://127.0.0.1:{}/x", other.port));
    assert_eq!(code, 502, "{body}");
    assert!(body.contains("HTTP-request-denied"), "{body}");
    // A grant by name is not a grant for another name of the same address, nor another port.
    let s2 = Served::start(&wb, "serve", &["--allow-http", &grant], &hello());
    let fetch2 =
        |url: String| s2.curl(&["-G", "--data-urlencode", &format!("url={url}")], "/fetch");
    let (code, body) = fetch2(format!("http://127.0.0.1:{}/x", granted.port));
    assert!(
        code == 502 && body.contains("HTTP-request-denied"),
        "{code} {body}"
    );
    let (code, body) = fetch2(format!("http://localhost:{}/x", other.port));
    assert!(
        code == 502 && body.contains("HTTP-request-denied"),
        "{code} {body}"
    );
    assert_eq!(granted.connections(), 1);
    assert_eq!(other.connections(), 0);
    let denied = format!("127.0.0.1:{}", other.port);
    assert!(
        s.stderr
            .wait(Duration::from_secs(30), |l| l.contains("denied")
                && l.contains(&denied)),
        "{:#?}",
        s.stderr.all()
    );
}

#[test]
fn sigterm_drains_requests_in_flight_then_exits_zero() {
    let wb = Wasmbox::new();
    let mut s = Served::start(&wb, "serve", &[], &hello());
    let url = s.url("/sleep");
    let slow = std::thread::spawn(move || {
        let out = Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}"])
            .arg(url)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    });
    // The handler says when it has the request.
    assert!(
        s.stdout.wait(READY, |l| l.ends_with("] sleeping")),
        "{:#?}",
        s.stdout.all()
    );
    s.signal(libc::SIGTERM);
    assert!(
        s.stderr.wait(Duration::from_secs(30), |l| l
            .starts_with("wasmbox: draining")),
        "{:#?}",
        s.stderr.all()
    );
    // No new connection once draining.
    assert!(std::net::TcpStream::connect(&s.addr).is_err());
    assert_eq!(slow.join().unwrap(), "slept\n\n200");
    assert_eq!(s.wait(Duration::from_secs(30)), 0);
}

#[test]
fn a_second_sigterm_ends_a_drain_at_once() {
    let wb = Wasmbox::new();
    let mut s = Served::start(&wb, "serve", &["--drain-timeout", "60s"], &hello());
    let url = s.url("/spin");
    let stuck = std::thread::spawn(move || {
        Command::new("curl")
            .args(["-s", "-o", "/dev/null"])
            .arg(url)
            .status()
            .unwrap()
    });
    assert!(
        s.stdout.wait(READY, |l| l.ends_with("] spinning")),
        "{:#?}",
        s.stdout.all()
    );
    s.signal(libc::SIGTERM);
    assert!(s.stderr.wait(Duration::from_secs(30), |l| {
        l.starts_with("wasmbox: draining")
    }));
    let t = Instant::now();
    s.signal(libc::SIGTERM);
    assert_eq!(s.wait(Duration::from_secs(30)), 128 + libc::SIGTERM);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let _ = stuck.join();
}

/// A request still running when the drain period ends is ended (the client's response is cut
/// or refused) and the server exits 0.
#[test]
fn a_drain_ends_what_is_still_running_at_its_deadline() {
    let wb = Wasmbox::new();
    let mut s = Served::start(&wb, "serve", &["--drain-timeout", "1s"], &hello());
    let url = s.url("/spin");
    let stuck = std::thread::spawn(move || {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .arg(url)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    });
    assert!(
        s.stdout.wait(READY, |l| l.ends_with("] spinning")),
        "{:#?}",
        s.stdout.all()
    );
    s.signal(libc::SIGTERM);
    assert!(s.stderr.wait(Duration::from_secs(30), |l| {
        l.starts_with("wasmbox: draining")
    }));
    assert_eq!(s.wait(Duration::from_secs(30)), 0);
    // The handler never answered: the client got no success.
    assert_ne!(stuck.join().unwrap(), "200");
}

/// `--max-concurrency 1`: one handler at a time; three slow requests sent at once take three
/// handler runs end to end (never less), and all are answered.
#[test]
fn max_concurrency_runs_requests_one_after_the_other() {
    let wb = Wasmbox::new();
    let s = Served::start(&wb, "serve", &["--max-concurrency", "1"], &hello());
    let t = Instant::now();
    let slow: Vec<_> = (0..3)
        .map(|_| {
            let url = s.url("/sleep");
            std::thread::spawn(move || {
                let out = Command::new("curl")
                    .args(["-s", "-w", "%{http_code}"])
                    .arg(url)
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&out.stdout).into_owned()
            })
        })
        .collect();
    for h in slow {
        assert_eq!(h.join().unwrap(), "slept\n200");
    }
    // Each /sleep waits 1.5 s in its handler.
    assert!(
        t.elapsed() >= Duration::from_millis(4400),
        "{:?}",
        t.elapsed()
    );
}

/// The default `--max-concurrency` (256) holds that many handlers at once, each a fresh instance
/// of a component of several core instances (hello has five and an adapter): every one of 256
/// slow requests sent at once is answered, none fails for want of an instance slot. And a
/// concurrency beyond what the instance pool holds is lowered at start, and said.
#[test]
fn the_default_concurrency_is_held_at_once_and_a_larger_one_is_lowered() {
    let wb = Wasmbox::new();
    let s = Served::start(&wb, "serve", &[], &hello());
    let addr = s.addr.clone();
    runtime().block_on(async move {
        let mut tasks = Vec::new();
        for _ in 0..256 {
            let addr = addr.clone();
            tasks.push(tokio::spawn(async move {
                let mut h1 = http1(&addr).await;
                text(h1.send_request(get(&addr, "/sleep")).await.unwrap()).await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), (200, "slept\n".to_string()));
        }
    });
    assert!(
        !s.stderr.all().iter().any(|l| l.contains("status=500")),
        "{:#?}",
        s.stderr.all()
    );
    drop(s);
    let s = Served::start(&wb, "serve", &["--max-concurrency", "1000"], &hello());
    let line = s
        .stderr
        .find(READY, |l| l.starts_with("wasmbox: at most "))
        .unwrap_or_else(|| panic!("{:#?}", s.stderr.all()));
    let n: usize = line["wasmbox: at most ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!((256..1000).contains(&n), "{line}");
    assert_eq!(s.curl(&[], "/"), (200, "hello from wasm\n".into()));
}

/// A client that goes away before its response ends its handler's instance: with one slot,
/// the next request is answered only if the spinning instance was ended.
#[test]
fn a_client_that_goes_away_ends_its_instance() {
    let wb = Wasmbox::new();
    let s = Served::start(&wb, "serve", &["--max-concurrency", "1"], &hello());
    let mut conn = std::net::TcpStream::connect(&s.addr).unwrap();
    write!(conn, "GET /spin HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
    assert!(
        s.stdout.wait(READY, |l| l.ends_with("] spinning")),
        "{:#?}",
        s.stdout.all()
    );
    drop(conn);
    assert!(
        s.stderr.wait(Duration::from_secs(30), |l| l
            .contains("handler ended: the client went away")),
        "{:#?}",
        s.stderr.all()
    );
    let line = s.access_line("/spin");
    assert!(
        line.contains(" status=499 ") && line.ends_with("incomplete=true"),
        "{line}"
    );
    assert_eq!(s.curl(&[], "/"), (200, "hello from wasm\n".into()));
}

#[test]
fn serve_refuses_a_command_and_a_taken_address() {
    let wb = Wasmbox::new();
    let out = wb.run(&[
        "serve",
        "--addr",
        "127.0.0.1:0",
        &guest("hello/hello.wasm").to_string_lossy(),
    ]);
    out.runtime_error(&["is a command module, not an HTTP component"]);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = wb.run(&["serve", "--addr", &addr, &hello()]);
    out.runtime_error(&["serving HTTP on", &addr]);
    let out = wb.run(&["serve", "--max-concurrency", "0", &hello()]);
    assert_eq!(out.code, 125, "{out:#?}");
}

/// The Python app (componentize-py): a greeting, a streamed echo of a body larger than its
/// buffers, and outgoing requests to the granted upstream only.
#[test]
fn the_python_app_echoes_and_fetches_only_what_is_granted() {
    let granted = Upstream::start("upstream says hi");
    let other = Upstream::start("should never be seen");
    let wb = Wasmbox::new();
    let grant = format!("127.0.0.1:{}", granted.port);
    let s = Served::start(&wb, "serve", &["--allow-http", &grant], &python_app());
    assert_eq!(s.curl(&[], "/"), (200, "hello from python\n".into()));
    let body: String = (0..200_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &body).unwrap();
    let upload = format!("@{}", file.path().display());
    let (code, echoed) = s.curl(&["--data-binary", &upload], "/echo");
    assert_eq!(code, 200);
    assert!(echoed == body, "echoed {} bytes", echoed.len());
    let fetch = |url: String| s.curl(&["-G", "--data-urlencode", &format!("url={url}")], "/fetch");
    assert_eq!(
        fetch(format!("http://127.0.0.1:{}/x", granted.port)),
        (200, "upstream says hi".into())
    );
    let (code, text) = fetch(format!("http://127.0.0.1:{}/x", other.port));
    assert_eq!(code, 502, "{text}");
    assert!(text.contains("HttpRequestDenied"), "{text}");
    assert_eq!((granted.connections(), other.connections()), (1, 0));
}
