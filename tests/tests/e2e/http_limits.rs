//! What a client can make `wasmbox serve` hold, attacked as a client would: floods of waiting
//! requests over HTTP/2, a slow log reader, clients that stall a body or never read a response,
//! idle and slow connections, oversized heads and bodies, handlers that open many outgoing
//! connections, and requests that together ask for more memory than the server is given. Each
//! asserts the bound holds (peak RSS where memory is the target) and a normal request is served.

use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Wasmbox, peak_rss_kib};
use crate::http::{Served, hello};

/// How long a test waits for something that must happen (a generous bound for a loaded
/// machine, never a pause).
const WITHIN: Duration = Duration::from_secs(60);

fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WITHIN)).unwrap();
    s
}

/// Reads the next response on `s`: its status and body (by its length, or chunked), or `None`
/// when the connection ended first.
fn response(s: &mut TcpStream) -> Option<(u16, Vec<u8>)> {
    response_from(&mut std::io::BufReader::new(s))
}

fn response_from(r: &mut impl BufRead) -> Option<(u16, Vec<u8>)> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let status = line.split(' ').nth(1)?.parse().ok()?;
    let (mut length, mut chunked) = (0, false);
    loop {
        line.clear();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let Some((k, v)) = line.trim_end().split_once(':') else {
            break;
        };
        match k.to_ascii_lowercase().as_str() {
            "content-length" => length = v.trim().parse().ok()?,
            "transfer-encoding" => chunked = v.to_ascii_lowercase().contains("chunked"),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    r.read_exact(&mut body).ok()?;
    while chunked {
        line.clear();
        r.read_line(&mut line).ok()?;
        let n = usize::from_str_radix(line.trim().split(';').next()?, 16).ok()?;
        let mut chunk = vec![0; n + 2];
        if n == 0 {
            // No trailers here: the last chunk ends with a blank line.
            chunk.truncate(0);
            chunked = false;
            line.clear();
            r.read_line(&mut line).ok()?;
        } else {
            r.read_exact(&mut chunk).ok()?;
            body.extend_from_slice(&chunk[..n]);
        }
    }
    Some((status, body))
}

/// The status of the next response on `s`.
fn status(s: &mut TcpStream) -> Option<u16> {
    response(s).map(|(code, _)| code)
}

/// Waits for the server to close `s`: true when it did within [`WITHIN`].
fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// `GET /` on a new connection: its status.
fn get_root(addr: &str) -> Option<u16> {
    let mut s = connect(addr);
    s.write_all(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n").unwrap();
    status(&mut s)
}

/// Runs `tests/clients/h2_flood.py` against `addr` and returns what it printed.
fn h2_flood(addr: &str, args: &[&str]) -> serde_json::Value {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/h2_flood.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(addr)
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "h2_flood.py failed (tests/run.sh installs its `h2` package from PyPI)"
    );
    let text = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str(text.lines().last().unwrap()).unwrap()
}

fn count(v: &serde_json::Value, group: &str, key: &str) -> u64 {
    v[group][key].as_u64().unwrap_or(0)
}

#[test]
fn requests_waiting_for_a_slot_are_bounded_and_the_rest_refused() {
    let wb = Wasmbox::new();
    let mut s = Served::start(&wb, "serve", &["--max-concurrency", "4"], &hello());
    let pid = s.child.id();
    assert_eq!(get_root(&s.addr), Some(200));
    let before = peak_rss_kib(pid);
    // 400 connections × 100 streams, each HEADERS frame a 4000-byte path to a handler that
    // sleeps: 40,000 requests whose paths cost the client a few bytes each (HPACK indexes it),
    // and that would hold 300 MiB were they all kept waiting.
    let got = h2_flood(
        &s.addr,
        &[
            "--connections",
            "400",
            "--streams",
            "100",
            "--path",
            "/sleep",
            "--path-bytes",
            "4000",
            "--deadline",
            "5",
        ],
    );
    let grown_mib = peak_rss_kib(pid).saturating_sub(before) / 1024;
    eprintln!("h2 flood: {got}; peak RSS grew {grown_mib} MiB");
    // Past the waiting bound, refused at once with REFUSED_STREAM (7), which a client may retry.
    assert!(count(&got, "resets", "7") > 30_000, "{got}");
    assert!(grown_mib < 128, "the server grew {grown_mib} MiB");
    // The client gone, the server is whole: a normal request is served, and SIGTERM ends it.
    assert_eq!(get_root(&s.addr), Some(200));
    s.signal(libc::SIGTERM);
    assert_eq!(s.wait(WITHIN), 0);
}

#[test]
fn a_slow_log_reader_costs_dropped_lines_not_memory() {
    let wb = Wasmbox::new();
    let mut child = wb
        .cmd()
        .args(["serve", "--addr", "127.0.0.1:0", &hello()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // The log's reader reads the readiness line, then nothing until told to go on.
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("wasmbox: serving http://") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "no readiness line"
        );
    }
    let addr = line
        .trim()
        .trim_start_matches("wasmbox: serving http://")
        .to_string();
    assert_eq!(get_root(&addr), Some(200));
    let before = peak_rss_kib(pid);
    // 4 connections × 2000 requests with 16 KiB targets, pipelined: 128 MiB of targets for a
    // log nobody reads.
    let target = format!("/?{}", "t".repeat(16 << 10));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (addr, target) = (addr.clone(), target.clone());
            std::thread::spawn(move || {
                let mut s = connect(&addr);
                let mut r = std::io::BufReader::new(s.try_clone().unwrap());
                let reader = std::thread::spawn(move || {
                    (0..2000)
                        .filter(|_| response_from(&mut r).is_some_and(|(c, _)| c == 200))
                        .count()
                });
                let req = format!("GET {target} HTTP/1.1\r\nhost: t\r\n\r\n");
                for _ in 0..2000 {
                    s.write_all(req.as_bytes()).unwrap();
                }
                reader.join().unwrap()
            })
        })
        .collect();
    let answered: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();
    assert_eq!(answered, 8000);
    // The log still blocked, a normal request is served.
    assert_eq!(get_root(&addr), Some(200));
    let grown_mib = peak_rss_kib(pid).saturating_sub(before) / 1024;
    eprintln!("log flood: peak RSS grew {grown_mib} MiB");
    assert!(grown_mib < 32, "the server grew {grown_mib} MiB");
    // Now read: what was queued comes, with a count of what was dropped.
    let rest = crate::common::Lines::read(stderr);
    let counted = rest
        .find(WITHIN, |l| l.contains(" log lines dropped"))
        .expect("no drop was reported");
    let dropped: u64 = counted
        .trim_start_matches("wasmbox: ")
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(dropped > 0, "{counted}");
    let _ = child.kill();
    let _ = child.wait();
    let rest = rest.all().join("\n");
    let access = rest
        .lines()
        .find(|l| l.contains(" path=/?ttt"))
        .expect("an access line of a long target");
    let path = access
        .split(' ')
        .find_map(|f| f.strip_prefix("path="))
        .unwrap();
    assert_eq!(path.len(), 1024 + 3, "{path}");
    assert!(path.ends_with("..."));
}

#[test]
fn clients_that_stall_a_body_or_a_response_free_their_slots() {
    let wb = Wasmbox::new();
    // A request timeout far beyond the test: only the stall can free the slots.
    let s = Served::start(
        &wb,
        "serve",
        &[
            "--max-concurrency",
            "2",
            "--idle-timeout",
            "1s",
            "--request-timeout",
            "1h",
        ],
        &hello(),
    );
    // Two slow POSTs: a head promising 100000 bytes, ten sent, then nothing. `/trailers` reads
    // the whole body before it answers.
    let mut slow: Vec<_> = (0..2)
        .map(|_| {
            let mut c = connect(&s.addr);
            c.write_all(
                b"POST /trailers HTTP/1.1\r\nhost: t\r\ncontent-length: 100000\r\n\r\n0123456789",
            )
            .unwrap();
            c
        })
        .collect();
    assert_eq!(get_root(&s.addr), Some(200), "the slots stayed held");
    for c in &mut slow {
        assert_eq!(status(c), Some(408));
    }
    // Two clients that send an 8 MiB body to `/echo` and never read the echo.
    let writers: Vec<_> = (0..2)
        .map(|_| {
            let mut c = connect(&s.addr);
            std::thread::spawn(move || {
                let chunk = vec![b'e'; 64 << 10];
                let _ = c.write_all(
                    format!(
                        "POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: {}\r\n\r\n",
                        128 * chunk.len()
                    )
                    .as_bytes(),
                );
                // Blocks once both sides' buffers are full; fails once the server cuts it off.
                let cut = (0..128).any(|_| c.write_all(&chunk).is_err());
                (cut, closed_by_server(&mut c))
            })
        })
        .collect();
    assert_eq!(get_root(&s.addr), Some(200), "the slots stayed held");
    for w in writers {
        let (cut, closed) = w.join().unwrap();
        assert!(cut || closed, "the non-reading client was never cut off");
    }
    assert!(
        s.stderr.wait(WITHIN, |l| l.contains("status=408")),
        "{:#?}",
        s.stderr.all()
    );
}

#[test]
fn idle_and_slow_connections_are_closed_and_connections_are_capped() {
    let wb = Wasmbox::new();
    let s = Served::start(
        &wb,
        "serve",
        &["--idle-timeout", "1s", "--header-timeout", "1s"],
        &hello(),
    );
    // Keep-alive connections that go quiet after a request, and some that never send one.
    let mut idle: Vec<_> = (0..20)
        .map(|i| {
            let mut c = connect(&s.addr);
            if i % 2 == 0 {
                c.write_all(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n").unwrap();
                assert_eq!(status(&mut c), Some(200));
            }
            c
        })
        .collect();
    for c in &mut idle {
        assert!(closed_by_server(c), "an idle connection stayed open");
    }
    // Slowloris: a head sent a byte at a time, the next byte each time the server has said
    // nothing for 100 ms (well within any idle timeout), until it closes the connection.
    let mut slow = connect(&s.addr);
    slow.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let started = Instant::now();
    let head = b"GET / HTTP/1.1\r\nhost: t\r\nx-slow: "
        .iter()
        .chain(std::iter::repeat(&b'a'));
    for &b in head {
        if slow.write_all(&[b]).is_err() || started.elapsed() > WITHIN {
            break;
        }
        let mut answer = [0u8; 64];
        match slow.read(&mut answer) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            // Closed (0 bytes, a reset) or answered: the server is done with it.
            _ => break,
        }
    }
    assert!(
        started.elapsed() < WITHIN,
        "a head sent slowly was never cut off"
    );
    assert!(started.elapsed() >= Duration::from_secs(1));

    // At most two connections at once: a third waits in the accept queue until one closes.
    let s = Served::start(
        &wb,
        "serve",
        &[
            "--max-connections",
            "2",
            "--idle-timeout",
            "1h",
            "--header-timeout",
            "1h",
        ],
        &hello(),
    );
    let held: Vec<_> = (0..2)
        .map(|_| {
            let mut c = connect(&s.addr);
            c.write_all(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n").unwrap();
            assert_eq!(status(&mut c), Some(200));
            c
        })
        .collect();
    let mut third = connect(&s.addr);
    third
        .write_all(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
        .unwrap();
    // Not answered while the two are open (a bounded look: were it accepted, it would be
    // answered within this).
    third
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let mut b = [0u8; 1];
    let early = third.read(&mut b);
    assert!(
        matches!(&early, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "a third connection was served: {early:?}"
    );
    drop(held);
    third.set_read_timeout(Some(WITHIN)).unwrap();
    assert_eq!(status(&mut third), Some(200));
}

#[test]
fn bodies_and_heads_past_their_limits_are_refused_with_413_and_431() {
    let wb = Wasmbox::new();
    let s = Served::start(
        &wb,
        "serve",
        &["--max-body-size", "1k", "--max-header-size", "8k"],
        &hello(),
    );
    // A declared length past the limit: refused before the body is sent.
    let mut c = connect(&s.addr);
    c.write_all(b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 2048\r\n\r\n")
        .unwrap();
    assert_eq!(status(&mut c), Some(413));
    // A chunked body that crosses it as it streams.
    let mut c = connect(&s.addr);
    c.write_all(b"POST /trailers HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n")
        .unwrap();
    // Once the limit is crossed the server answers and may close the connection while the rest
    // is still being written: those writes can fail, and the answer is read all the same.
    for _ in 0..4 {
        let _ = c.write_all(format!("400\r\n{}\r\n", "c".repeat(1024)).as_bytes());
    }
    let _ = c.write_all(b"0\r\n\r\n");
    assert_eq!(status(&mut c), Some(413));
    // Within the limit, echoed.
    let (code, body) = s.curl(&["--data-binary", &"k".repeat(1000)], "/echo");
    assert_eq!((code, body.len()), (200, 1000));
    // A head past the limit: 431, over HTTP/1.1 and HTTP/2.
    let mut c = connect(&s.addr);
    c.write_all(
        format!(
            "GET / HTTP/1.1\r\nhost: t\r\nx-big: {}\r\n\r\n",
            "h".repeat(16 << 10)
        )
        .as_bytes(),
    )
    .unwrap();
    assert_eq!(status(&mut c), Some(431));
    let got = h2_flood(&s.addr, &["--header-bytes", "16384"]);
    assert_eq!(count(&got, "statuses", "431"), 1, "{got}");
    let got = h2_flood(&s.addr, &["--header-bytes", "100"]);
    assert_eq!(count(&got, "statuses", "200"), 1, "{got}");
}

#[test]
fn outgoing_connections_are_capped_for_the_server_as_a_whole() {
    // An upstream that accepts connections and never answers.
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = upstream.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in upstream.incoming().flatten() {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(c);
        }
    });
    let wb = Wasmbox::new();
    // 256 descriptors: outgoing connections are capped at (256 - 64) / 4 = 48.
    let mut cmd = Command::new("prlimit");
    cmd.arg("--nofile=256:256")
        .arg(crate::common::wasmbox_bin());
    for (k, v) in wb.cmd().get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let grant = format!("127.0.0.1:{port}");
    let s = Served::start_as(
        cmd,
        "serve",
        &["--allow-http", &grant, "--request-timeout", "10s"],
        &hello(),
    );
    let url = format!("/fetch?url=http://127.0.0.1:{port}/");
    let fetches: Vec<_> = (0..60)
        .map(|_| {
            let (addr, url) = (s.addr.clone(), url.clone());
            std::thread::spawn(move || {
                let mut c = connect(&addr);
                c.write_all(format!("GET {url} HTTP/1.1\r\nhost: t\r\n\r\n").as_bytes())
                    .unwrap();
                status(&mut c)
            })
        })
        .collect();
    let statuses: Vec<_> = fetches.into_iter().map(|f| f.join().unwrap()).collect();
    let refused = statuses.iter().filter(|s| **s == Some(502)).count();
    let timed_out = statuses.iter().filter(|s| **s == Some(503)).count();
    assert_eq!((refused, timed_out), (12, 48), "{statuses:?}");
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 48);
    assert!(
        s.stderr
            .wait(WITHIN, |l| l.contains("outgoing HTTP request refused")),
        "{:#?}",
        s.stderr.all()
    );
    assert_eq!(get_root(&s.addr), Some(200));
}

#[test]
fn the_memory_limit_caps_all_instances_together() {
    let wb = Wasmbox::new();
    let s = Served::start(&wb, "serve", &["--memory", "64m"], &hello());
    let pid = s.child.id();
    assert_eq!(get_root(&s.addr), Some(200));
    let before = peak_rss_kib(pid);
    // 16 requests at once, each taking all the memory it can get.
    let allocs: Vec<_> = (0..16)
        .map(|_| {
            let addr = s.addr.clone();
            std::thread::spawn(move || {
                let mut c = connect(&addr);
                c.write_all(b"GET /alloc HTTP/1.1\r\nhost: t\r\n\r\n")
                    .unwrap();
                status(&mut c)
            })
        })
        .collect();
    let statuses: Vec<_> = allocs.into_iter().map(|a| a.join().unwrap()).collect();
    let grown_mib = peak_rss_kib(pid).saturating_sub(before) / 1024;
    eprintln!("16 allocs under --memory 64m: {statuses:?}; peak RSS grew {grown_mib} MiB");
    assert!(statuses.contains(&Some(503)), "{statuses:?}");
    assert!(
        statuses.iter().all(|s| matches!(s, Some(500 | 503))),
        "{statuses:?}"
    );
    assert!(
        grown_mib < 64 + 48,
        "the instances grew {grown_mib} MiB together"
    );
    assert!(
        s.stderr
            .wait(WITHIN, |l| l.contains("memory limit taken by the requests")),
        "{:#?}",
        s.stderr.all()
    );
    // Each request under its own cap too.
    let s = Served::start(&wb, "serve", &["--request-memory", "16m"], &hello());
    assert_eq!(s.curl(&[], "/alloc").0, 500);
    assert!(
        s.stderr.wait(WITHIN, |l| l
            .contains("exceeded its memory limit of 16777216 bytes")),
        "{:#?}",
        s.stderr.all()
    );
}
