//! HTTPS: `--tls-cert`/`--tls-key` (and the `wasmbox.http.tls-*` annotations, read beneath the
//! container's grants) serve HTTP/1.1 and HTTP/2 by ALPN with a PEM chain, checked by `curl
//! --cacert` against a certificate authority the test makes with `openssl`; SIGHUP reloads the
//! certificate while an open connection goes on; the serving limits hold over TLS; a bad
//! certificate, key or path is a clear error at start and, on reload, keeps the one in use.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{Wasmbox, bundle};
use crate::http::{Served, hello};

/// curl's options for a body that waits for the server's `100 Continue` (hyper sends it only
/// once the handler reads the body), however long the server takes to answer.
pub(crate) const EXPECT: [&str; 4] = ["-H", "Expect: 100-continue", "--expect100-timeout", "600"];

/// How long a test waits for something that must happen (never a pause).
const WITHIN: Duration = Duration::from_secs(60);

/// Runs `openssl` in `dir` with `args`, split at spaces.
fn openssl(dir: &Path, args: &str) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args.split_whitespace())
        .output()
        .expect("openssl (Debian's openssl package; tests/run.sh installs it)");
    assert!(out.status.success(), "openssl {args}: {out:?}");
}

/// The `openssl req` options of a new P-256 key.
const EC: &str = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1";
/// The `openssl req` options of a new 2048-bit RSA key.
const RSA: &str = "-newkey rsa:2048";

/// A certificate authority `NAME-root.pem`, an intermediate it signed, and a server
/// certificate for 127.0.0.1 and localhost the intermediate signed with a key made by `key`
/// (`EC` or `RSA`): `NAME-chain.pem` (server first, then the intermediate) and its key.
struct Pki {
    root: PathBuf,
    chain: PathBuf,
    key: PathBuf,
}

fn pki(dir: &Path, name: &str, key: &str) -> Pki {
    let ext =
        |file: &str, text: &str| std::fs::write(dir.join(format!("{name}-{file}")), text).unwrap();
    ext(
        "ca.ext",
        "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n",
    );
    ext(
        "leaf.ext",
        "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    );
    openssl(
        dir,
        &format!(
            "req -x509 -nodes -days 2 {EC} -keyout {name}-root.key -out {name}-root.pem \
             -subj /CN={name}-root -addext basicConstraints=critical,CA:TRUE \
             -addext keyUsage=critical,keyCertSign,cRLSign"
        ),
    );
    let sign = |new_key: &str, who: &str, ca: &str, ext: &str| {
        openssl(
            dir,
            &format!(
                "req -new -nodes {new_key} -keyout {name}-{who}.key -out {name}-req.csr \
                 -subj /CN={name}-{who}"
            ),
        );
        openssl(
            dir,
            &format!(
                "x509 -req -days 2 -in {name}-req.csr -CA {name}-{ca}.pem -CAkey {name}-{ca}.key \
                 -set_serial 7 -extfile {name}-{ext} -out {name}-{who}.pem"
            ),
        );
    };
    sign(EC, "int", "root", "ca.ext");
    sign(key, "leaf", "int", "leaf.ext");
    let read = |f: &str| std::fs::read(dir.join(format!("{name}-{f}"))).unwrap();
    std::fs::write(
        dir.join(format!("{name}-chain.pem")),
        [read("leaf.pem"), read("int.pem")].concat(),
    )
    .unwrap();
    Pki {
        root: dir.join(format!("{name}-root.pem")),
        chain: dir.join(format!("{name}-chain.pem")),
        key: dir.join(format!("{name}-leaf.key")),
    }
}

/// Writes `bytes` at `to` by renaming a finished file over it, as a certificate is rotated.
fn replace(to: &Path, bytes: &[u8]) {
    let tmp = to.with_extension("new");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, to).unwrap();
}

/// `curl` over HTTPS trusting `ca`: (curl's exit code, HTTP status, HTTP version, body).
fn curl(s: &Served, ca: &Path, args: &[&str], path: &str) -> (i32, u16, String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(ca)
        .args(["-o", "-", "-w", "\n%{http_code} %{http_version}"])
        .args(args)
        .arg(s.url(path))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = text.rsplit_once('\n').unwrap_or(("", &text));
    let (code, version) = tail.split_once(' ').unwrap_or((tail, ""));
    (
        out.status.code().unwrap_or(-1),
        code.parse().unwrap_or(0),
        version.to_string(),
        body.to_string(),
    )
}

/// A TLS client (Python's `ssl`) trusting `ca` on one connection to `addr`: sends what each
/// line of its stdin says (`get` a keep-alive GET of `/`, `head` half a request head) and
/// prints the status line of each answer, or `closed` when the server closes the connection.
struct TlsClient {
    child: std::process::Child,
    lines: BufReader<std::process::ChildStdout>,
}

const TLS_CLIENT: &str = r#"
import socket, ssl, sys
host, port = sys.argv[2].rsplit(":", 1)
ctx = ssl.create_default_context(cafile=sys.argv[1])
s = ctx.wrap_socket(socket.create_connection((host, int(port))), server_hostname=host)
s.settimeout(60)
print("connected", flush=True)
for cmd in sys.stdin:
    cmd = cmd.strip()
    if cmd == "get":
        s.sendall(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
        data = b""
        while b"hello from wasm\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                print("closed", flush=True)
                sys.exit(0)
            data += chunk
        print(data.split(b"\r\n")[0].decode(), flush=True)
    elif cmd == "head":
        s.sendall(b"GET / HTTP/1.1\r\nhost: t\r\n")
        try:
            chunk = s.recv(4096)
        except (ConnectionError, ssl.SSLError):
            chunk = b""
        print("closed" if not chunk else chunk.split(b"\r\n")[0].decode(), flush=True)
"#;

impl TlsClient {
    fn connect(ca: &Path, addr: &str) -> Self {
        let mut child = Command::new("python3")
            .args(["-c", TLS_CLIENT])
            .arg(ca)
            .arg(addr)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        lines.read_line(&mut first).unwrap();
        assert_eq!(first.trim(), "connected");
        Self { child, lines }
    }

    fn send(&mut self, cmd: &str) -> String {
        writeln!(self.child.stdin.as_mut().unwrap(), "{cmd}").unwrap();
        let mut line = String::new();
        self.lines.read_line(&mut line).unwrap();
        line.trim().to_string()
    }
}

impl Drop for TlsClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn https_serves_http1_and_h2_by_alpn_and_reloads_its_certificate_on_sighup() {
    let wb = Wasmbox::new();
    let dir = tempfile::tempdir().unwrap();
    let a = pki(dir.path(), "a", EC);
    let b = pki(dir.path(), "b", RSA);
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::copy(&a.chain, &cert).unwrap();
    std::fs::copy(&a.key, &key).unwrap();
    let (cert_s, key_s) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let s = Served::start(
        &wb,
        "serve",
        &["--tls-cert", cert_s, "--tls-key", key_s],
        &hello(),
    );
    assert_eq!(s.scheme, "https");
    // HTTP/2 by ALPN unless the client asks for HTTP/1.1; the chain lets curl reach the root.
    let hello_body = "hello from wasm\n".to_string();
    assert_eq!(
        curl(&s, &a.root, &[], "/"),
        (0, 200, "2".into(), hello_body.clone())
    );
    assert_eq!(
        curl(&s, &a.root, &["--http1.1"], "/"),
        (0, 200, "1.1".into(), hello_body.clone())
    );
    // The guest is told its request came over HTTPS.
    assert_eq!(curl(&s, &a.root, &[], "/scheme").3, "https\n");
    // Plain HTTP to the TLS port is no request.
    let plain = Command::new("curl")
        .args(["-sS", "--max-time", "30", &format!("http://{}/", s.addr)])
        .output()
        .unwrap();
    assert!(!plain.status.success(), "{plain:?}");

    // A connection opened before the reload goes on after it.
    let mut open = TlsClient::connect(&a.root, &s.addr);
    assert_eq!(open.send("get"), "HTTP/1.1 200 OK");
    replace(&cert, &std::fs::read(&b.chain).unwrap());
    replace(&key, &std::fs::read(&b.key).unwrap());
    s.signal(libc::SIGHUP);
    assert!(
        s.stderr.wait(WITHIN, |l| l
            .starts_with("wasmbox: SIGHUP: TLS certificate reloaded from")
            && l.contains("tls.crt")),
        "{:#?}",
        s.stderr.all()
    );
    assert_eq!(
        curl(&s, &b.root, &[], "/"),
        (0, 200, "2".into(), hello_body.clone())
    );
    // curl 60: the peer's certificate is not signed by the authority it was given.
    assert_eq!(curl(&s, &a.root, &[], "/").0, 60);
    assert_eq!(open.send("get"), "HTTP/1.1 200 OK");

    // A reload of files that do not hold a certificate keeps the one in use, and says why.
    replace(&cert, b"not a certificate\n");
    s.signal(libc::SIGHUP);
    assert!(
        s.stderr.wait(WITHIN, |l| l.starts_with(
            "wasmbox: SIGHUP: kept the TLS certificate in use: TLS certificate"
        ) && l.contains("tls.crt")),
        "{:#?}",
        s.stderr.all()
    );
    assert_eq!(curl(&s, &b.root, &[], "/").1, 200);
    // And the server still runs: SIGHUP is no kill.
    assert!(s.stderr.all().iter().all(|l| !l.contains("draining")));
}

/// Over HTTP/2 with TLS (ALPN `h2`, Python's `h2` package), a POST declaring a `length`-byte
/// body, none of it sent: the status it gets, or `closed`.
fn h2_declared_body(ca: &Path, addr: &str, length: usize) -> String {
    const CLIENT: &str = r#"
import socket, ssl, sys
import h2.connection, h2.events
ca, addr, length = sys.argv[1], sys.argv[2], sys.argv[3]
host, port = addr.rsplit(":", 1)
ctx = ssl.create_default_context(cafile=ca)
ctx.set_alpn_protocols(["h2"])
s = ctx.wrap_socket(socket.create_connection((host, int(port))), server_hostname=host)
s.settimeout(60)
assert s.selected_alpn_protocol() == "h2", s.selected_alpn_protocol()
c = h2.connection.H2Connection()
c.initiate_connection()
c.send_headers(1, [(":method", "POST"), (":path", "/echo"), (":scheme", "https"),
                   (":authority", addr), ("content-length", length)])
s.sendall(c.data_to_send())
while True:
    data = s.recv(65535)
    if not data:
        print("closed")
        break
    for e in c.receive_data(data):
        if isinstance(e, h2.events.ResponseReceived):
            print(dict(e.headers)[b":status"].decode())
            sys.exit(0)
    s.sendall(c.data_to_send())
"#;
    let out = Command::new("python3")
        .args(["-c", CLIENT])
        .arg(ca)
        .arg(addr)
        .arg(length.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn the_serving_limits_hold_over_https() {
    let wb = Wasmbox::new();
    let dir = tempfile::tempdir().unwrap();
    let a = pki(dir.path(), "a", EC);
    let s = Served::start(
        &wb,
        "serve",
        &[
            "--tls-cert",
            a.chain.to_str().unwrap(),
            "--tls-key",
            a.key.to_str().unwrap(),
            "--header-timeout",
            "1s",
            "--max-body-size",
            "1k",
            "--max-header-size",
            "8k",
        ],
        &hello(),
    );
    // A connection that never starts its handshake is closed at the header timeout.
    let mut silent = std::net::TcpStream::connect(&s.addr).unwrap();
    silent.set_read_timeout(Some(WITHIN)).unwrap();
    let mut buf = [0u8; 64];
    let r = std::io::Read::read(&mut silent, &mut buf);
    assert!(
        matches!(r, Ok(0))
            || matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "a connection without a handshake stayed open: {r:?}"
    );
    // One that shakes hands and then sends half a head: the same.
    let mut half = TlsClient::connect(&a.root, &s.addr);
    assert_eq!(half.send("head"), "closed");
    // Bodies and heads past their limits, over both protocols.
    let body = "k".repeat(2048);
    let big = format!("x-big: {}", "h".repeat(16 << 10));
    // The body waits for `100 Continue`, which never comes: the answer is not raced by it.
    let (_, code, _, _) = curl(
        &s,
        &a.root,
        &EXPECT
            .iter()
            .copied()
            .chain(["--http1.1", "--data-binary", &body])
            .collect::<Vec<_>>(),
        "/echo",
    );
    assert_eq!(code, 413);
    // Over HTTP/2 the answer comes before the body is sent, and the stream is then reset: a
    // client still sending may miss it (curl does, at times), so this one sends only the head.
    assert_eq!(h2_declared_body(&a.root, &s.addr, 2048), "413");
    for proto in ["--http1.1", "--http2"] {
        let (_, code, _, _) = curl(&s, &a.root, &[proto, "-H", &big], "/");
        assert_eq!(code, 431, "{proto}");
        let (_, code, _, echoed) = curl(&s, &a.root, &[proto, "--data-binary", "small"], "/echo");
        assert_eq!((code, echoed.as_str()), (200, "small"), "{proto}");
    }
}

/// A bundle serving `http-hello` with `annotations`, its rootfs at `/`, and `tls` (a host
/// directory) bound read-only at `/etc/tls`.
fn tls_bundle(dir: &Path, tls: &Path, annotations: serde_json::Value) -> PathBuf {
    let b = bundle(
        dir,
        serde_json::json!({
            "process": {"args": ["/app.wasm"]},
            "annotations": annotations,
            "mounts": [{"destination": "/etc/tls", "type": "bind", "source": tls,
                        "options": ["rbind", "ro"]}],
        }),
    );
    std::fs::copy(hello(), b.join("rootfs/app.wasm")).unwrap();
    b
}

#[test]
fn annotations_serve_https_from_files_in_the_containers_grants_and_never_beyond() {
    let wb = Wasmbox::new();
    let dir = tempfile::tempdir().unwrap();
    let a = pki(dir.path(), "a", EC);
    // Laid out as a Kubernetes secret volume: the names are links into a dated directory,
    // through `..data`.
    let tls = dir.path().join("secret");
    std::fs::create_dir_all(tls.join("..2026_12_07")).unwrap();
    std::fs::copy(&a.chain, tls.join("..2026_12_07/tls.crt")).unwrap();
    std::fs::copy(&a.key, tls.join("..2026_12_07/tls.key")).unwrap();
    std::os::unix::fs::symlink("..2026_12_07", tls.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/tls.crt", tls.join("tls.crt")).unwrap();
    std::os::unix::fs::symlink("..data/tls.key", tls.join("tls.key")).unwrap();
    // Links that leave the grant: absolute, and up and out.
    std::os::unix::fs::symlink(&a.chain, tls.join("absolute.crt")).unwrap();
    std::os::unix::fs::symlink("../../a-chain.pem", tls.join("climbing.crt")).unwrap();
    let fifo = tls.join("fifo.crt");
    crate::common::mkfifo(&fifo);

    let ann = |cert: &str| {
        serde_json::json!({
            "wasmbox.http.addr": "127.0.0.1:0",
            "wasmbox.http.tls-cert": cert,
            "wasmbox.http.tls-key": "/etc/tls/tls.key",
        })
    };
    let ok = tempfile::tempdir().unwrap();
    let b = tls_bundle(ok.path(), &tls, ann("/etc/tls/tls.crt"));
    let mut cmd = wb.cmd();
    cmd.args(["run", "--bundle"]).arg(&b);
    let s = Served::spawn(cmd);
    assert_eq!(s.scheme, "https");
    assert_eq!(
        curl(&s, &a.root, &[], "/scheme"),
        (0, 200, "2".into(), "https\n".into())
    );
    drop(s);

    for (cert, why) in [
        (
            "/etc/tls/absolute.crt",
            "TLS certificate /etc/tls/absolute.crt",
        ),
        (
            "/etc/tls/climbing.crt",
            "TLS certificate /etc/tls/climbing.crt",
        ),
        ("/etc/tls/fifo.crt", "not a regular file"),
        (
            "/etc/tls/missing.crt",
            "TLS certificate /etc/tls/missing.crt",
        ),
        ("/app.wasm", "no PEM CERTIFICATE"),
    ] {
        let d = tempfile::tempdir().unwrap();
        let b = tls_bundle(d.path(), &tls, ann(cert));
        let out = wb.run_bounded(&["run", "--bundle", b.to_str().unwrap()]);
        let stderr = &out.stderr;
        assert_eq!(out.code, 125, "{cert}: {stderr}");
        assert!(
            stderr.contains("serving HTTPS") && stderr.contains(why),
            "{cert}: {stderr}"
        );
        assert!(!stderr.contains("BEGIN"), "{cert}: {stderr}");
    }
}

#[test]
fn a_certificate_and_key_that_do_not_go_together_are_refused_at_start() {
    let wb = Wasmbox::new();
    let dir = tempfile::tempdir().unwrap();
    let a = pki(dir.path(), "a", EC);
    let b = pki(dir.path(), "b", EC);
    let wasm = hello();
    let mismatched = wb.run(&[
        "serve",
        "--addr",
        "127.0.0.1:0",
        "--tls-cert",
        a.chain.to_str().unwrap(),
        "--tls-key",
        b.key.to_str().unwrap(),
        &wasm,
    ]);
    mismatched.code(125);
    let line = mismatched.the_error_line();
    assert!(
        line.contains("does not go with") && line.contains("b-leaf.key"),
        "{line}"
    );
    let alone = wb.run(&["serve", "--tls-cert", a.chain.to_str().unwrap(), &wasm]);
    assert_ne!(alone.code, 0);
    assert!(alone.stderr.contains("--tls-key"), "{alone:#?}");
}
