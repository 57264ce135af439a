//! Pulling from a real registry (Debian's docker-registry on loopback), with images pushed by a
//! real client (skopeo), and from a registry of the test's own that lies about a blob.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sha2::{Digest as _, Sha256};

use crate::common::{Wasmbox, free_port};
use crate::images::{compat, multi_platform, with_store};

/// A docker-registry serving on 127.0.0.1 with its storage in a temp dir; killed on drop.
pub(crate) struct Registry {
    child: Child,
    pub(crate) addr: String,
    _dir: tempfile::TempDir,
}

fn tool(name: &str) -> String {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(found, "{name} is not installed (tests/run.sh installs it)");
    name.to_string()
}

impl Registry {
    pub(crate) fn start() -> Self {
        Self::start_with(None)
    }

    /// With `Some((user, password))`, the registry requires basic authentication (htpasswd).
    fn start_with(auth: Option<(&str, &str)>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n{}",
                dir.path().join("data").display(),
                match auth {
                    Some((user, password)) => {
                        let hash = bcrypt::hash(password, 4).unwrap();
                        let htpasswd = dir.path().join("htpasswd");
                        std::fs::write(&htpasswd, format!("{user}:{hash}\n")).unwrap();
                        format!(
                            "auth:\n  htpasswd:\n    realm: wasmbox-test\n    path: {}\n",
                            htpasswd.display()
                        )
                    }
                    None => String::new(),
                }
            ),
        )
        .unwrap();
        let child = Command::new(tool("docker-registry"))
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut reg = Registry {
            child,
            addr,
            _dir: dir,
        };
        // Ready when it answers; on two loaded cores that can take a while, so wait until it
        // answers or exits (a minute at most).
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            if std::net::TcpStream::connect(&reg.addr).is_ok() {
                return reg;
            }
            if reg.child.try_wait().ok().flatten().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = reg.child.kill();
        let _ = reg.child.wait();
        panic!("docker-registry did not start on {}", reg.addr);
    }

    fn push(&self, layout: &std::path::Path, name: &str) {
        self.push_as(layout, name, None)
    }

    fn push_as(&self, layout: &std::path::Path, name: &str, creds: Option<&str>) {
        let mut cmd = Command::new(tool("skopeo"));
        cmd.args(["copy", "--quiet", "--dest-tls-verify=false"]);
        if let Some(c) = creds {
            cmd.args(["--dest-creds", c]);
        }
        let st = cmd
            .arg(format!("oci:{}", layout.display()))
            .arg(format!("docker://{}/{name}", self.addr))
            .status()
            .unwrap();
        assert!(st.success(), "skopeo copy to {}", self.addr);
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn example_layout() -> PathBuf {
    crate::common::examples().join("images/hello")
}

#[test]
fn pull_and_run_images_pushed_by_skopeo() {
    let reg = Registry::start();
    let work = tempfile::tempdir().unwrap();
    reg.push(&example_layout(), "demo/hello:1");
    reg.push(&compat(&work.path().join("c"), "x:1"), "demo/files:2");
    let wb = Wasmbox::new();
    let hello = format!("{}/demo/hello:1", reg.addr);
    let out = with_store(&wb, &["pull", &hello]);
    out.code(0);
    assert_eq!(out.stdout.trim(), hello);
    // The pull compiled the image's wasm: its first run starts from the cache.
    assert_eq!(crate::ahead::cached(&wb).len(), 1, "{out:#?}");
    let out = with_store(&wb, &["run", &hello, "a"]);
    out.code(0);
    assert_eq!(out.stdout, "Hello from wasmbox!\nargs: a\n");
    // A second pull fetches nothing new.
    let out = with_store(&wb, &["pull", &hello]);
    out.code(0);
    assert_eq!(out.stderr.matches("already present").count(), 2, "{out:#?}");
    // run pulls what is missing; a compat image runs from its unpacked layers.
    let files = format!("{}/demo/files:2", reg.addr);
    let out = with_store(&wb, &["run", &files]);
    out.code(0);
    assert_eq!(out.stdout, "from the image");
    let out = with_store(&wb, &["images"]);
    assert!(
        out.stdout.contains(&files) && out.stdout.contains(&hello),
        "{out:#?}"
    );
}

#[test]
fn missing_images_and_absent_registries_are_clear_errors() {
    let reg = Registry::start();
    let wb = Wasmbox::new();
    let name = format!("{}/demo/absent:1", reg.addr);
    with_store(&wb, &["pull", &name]).runtime_error(&[&name, "manifest unknown"]);
    let nobody = format!("127.0.0.1:{}/demo/x:1", free_port());
    with_store(&wb, &["pull", &nobody]).runtime_error(&[&nobody, "error sending request"]);
    with_store(&wb, &["run", &nobody]).runtime_error(&[&nobody]);
    assert!(with_store(&wb, &["images"]).stdout.lines().count() == 1);
}

/// How the fake registry answers the layer request.
#[derive(Clone, Copy, PartialEq)]
enum Layer {
    /// Other bytes than the digest names.
    Tampered,
    /// Half the bytes, then the connection drops (the registry went away).
    CutOff,
    /// The right bytes.
    Whole,
    /// The manifest is not JSON.
    JunkManifest,
    /// Every request is answered 403 Forbidden.
    Forbidden,
}

/// Serves one manifest whose layer is answered with other bytes than its digest names.
fn lying_registry() -> (String, String) {
    let (addr, layer, _) = fake_registry(Layer::Tampered);
    (addr, layer)
}

/// A registry of the test's own serving one wasm artifact; `mode` decides the layer's answer and
/// may be changed while it runs.
fn fake_registry(first: Layer) -> (String, String, std::sync::Arc<std::sync::Mutex<Layer>>) {
    let mode = std::sync::Arc::new(std::sync::Mutex::new(first));
    let wasm = std::fs::read(crate::common::guest("hello/hello.wasm")).unwrap();
    let wasm_digest = format!("sha256:{}", hex::encode(Sha256::digest(&wasm)));
    let config = b"{}".to_vec();
    let config_digest = format!("sha256:{}", hex::encode(Sha256::digest(&config)));
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.wasm.config.v0+json", "digest": config_digest, "size": 2},
        "layers": [{"mediaType": "application/wasm", "digest": wasm_digest, "size": wasm.len()}]
    }))
    .unwrap();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let layer_digest = wasm_digest.clone();
    let served = mode.clone();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            let mut r = BufReader::new(c.try_clone().unwrap());
            let mut line = String::new();
            if r.read_line(&mut line).is_err() {
                continue;
            }
            let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
            }
            if *served.lock().unwrap() == Layer::Forbidden {
                let body = br#"{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}"#;
                let mut c = c;
                let _ = write!(
                    c,
                    "HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = c.write_all(body);
                continue;
            }
            let junk = *served.lock().unwrap() == Layer::JunkManifest;
            let (ctype, body): (&str, Vec<u8>) = if path.contains("/manifests/") && junk {
                (
                    "application/vnd.oci.image.manifest.v1+json",
                    b"{ this is not json".to_vec(),
                )
            } else if path.contains("/manifests/") {
                (
                    "application/vnd.oci.image.manifest.v1+json",
                    manifest.clone(),
                )
            } else if path.ends_with(&config_digest) {
                ("application/octet-stream", config.clone())
            } else if path.ends_with(&layer_digest) {
                let m = *served.lock().unwrap();
                match m {
                    Layer::Tampered => {
                        let mut t = wasm.clone();
                        t.extend_from_slice(b" but tampered");
                        ("application/octet-stream", t)
                    }
                    Layer::Whole | Layer::JunkManifest | Layer::Forbidden => {
                        ("application/octet-stream", wasm.clone())
                    }
                    Layer::CutOff => {
                        let mut c = c;
                        let _ = write!(
                            c,
                            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
                            wasm.len()
                        );
                        let _ = c.write_all(&wasm[..wasm.len() / 2]);
                        let _ = c.shutdown(std::net::Shutdown::Both);
                        continue;
                    }
                }
            } else {
                ("application/json", b"{}".to_vec())
            };
            let mut c = c;
            let _ = write!(
                c,
                "HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = c.write_all(&body);
            let mut sink = Vec::new();
            let _ = r.read_to_end(&mut sink);
        }
    });
    (addr, wasm_digest, mode)
}

#[test]
fn a_blob_that_does_not_match_its_digest_is_refused() {
    let (addr, layer) = lying_registry();
    let wb = Wasmbox::new();
    let name = format!("{addr}/evil/app:1");
    let out = with_store(&wb, &["pull", &name]);
    // Progress lines come first; the error is one line naming the image, the blob and the reason.
    let error = out.the_error_line();
    assert!(
        error.contains(&name) && error.contains(&layer) && error.contains("digest"),
        "{out:#?}"
    );
    // Nothing is named, and no blob with that digest was stored.
    assert_eq!(with_store(&wb, &["images"]).stdout.lines().count(), 1);
    let store = wb.cache.path().join("store/blobs/sha256");
    assert!(!store.join(layer.trim_start_matches("sha256:")).exists());
}

#[test]
fn build_push_and_read_back_with_skopeo() {
    let reg = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let wb = Wasmbox::new();
    let component = crate::common::guest("hello-component/hello-component.wasm");
    let out = with_store(
        &wb,
        &[
            "build",
            component.to_str().unwrap(),
            "-t",
            "localhost/hc:1",
            "--arg",
            "built",
        ],
    );
    out.code(0);
    let dest = format!("{}/pushed/hc:1", reg.addr);
    with_store(&wb, &["push", "localhost/hc:1", &dest]).code(0);
    // skopeo reads the artifact as pushed: config type, wasm layer, and the component's world.
    let raw = Command::new(tool("skopeo"))
        .args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{dest}"),
        ])
        .output()
        .unwrap();
    assert!(raw.status.success());
    let m: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.wasm.config.v0+json"
    );
    assert_eq!(m["layers"][0]["mediaType"], "application/wasm");
    // skopeo copies it back out to an OCI layout; wasmbox loads that and runs it.
    let back = work.path().join("back");
    let st = Command::new(tool("skopeo"))
        .args([
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            &format!("docker://{dest}"),
        ])
        .arg(format!("oci:{}:pushed", back.display()))
        .status()
        .unwrap();
    assert!(st.success());
    let wb2 = Wasmbox::new();
    with_store(
        &wb2,
        &[
            "load",
            "-i",
            back.to_str().unwrap(),
            "-t",
            "localhost/back:1",
        ],
    )
    .code(0);
    let out = with_store(&wb2, &["run", "localhost/back:1"]);
    out.code(0);
    assert_eq!(out.stdout, "Hello from wasmbox!\nargs: built\n");
    let v: serde_json::Value =
        serde_json::from_str(&with_store(&wb2, &["inspect", "localhost/back:1"]).stdout).unwrap();
    let exports = v["config"]["component"]["exports"].as_array().unwrap();
    assert!(
        exports
            .iter()
            .any(|e| e.as_str().unwrap().starts_with("wasi:cli/run@")),
        "{v}"
    );
    // A compat image with an added file, pushed and pulled into another store.
    let data = work.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("f"), "added").unwrap();
    let files = crate::common::guest("files/files.wasm");
    let add = format!("{}:/data", data.display());
    with_store(
        &wb,
        &[
            "build",
            files.to_str().unwrap(),
            "-t",
            "localhost/fc:1",
            "--format",
            "compat",
            "--add",
            &add,
            "--arg",
            "cat",
            "--arg",
            "/data/f",
        ],
    )
    .code(0);
    let dest = format!("{}/pushed/fc:1", reg.addr);
    with_store(&wb, &["push", "localhost/fc:1", &dest]).code(0);
    let wb3 = Wasmbox::new();
    let out = with_store(&wb3, &["run", &dest]);
    out.code(0);
    assert_eq!(out.stdout, "added");
}

#[test]
fn build_refuses_bad_input() {
    let wb = Wasmbox::new();
    let work = tempfile::tempdir().unwrap();
    let f = work.path().join("not.wasm");
    std::fs::write(&f, "#!/bin/sh").unwrap();
    with_store(&wb, &["build", f.to_str().unwrap(), "-t", "localhost/x:1"])
        .runtime_error(&["not.wasm", "not a wasm binary"]);
    let hello = crate::common::guest("hello/hello.wasm");
    with_store(
        &wb,
        &[
            "build",
            hello.to_str().unwrap(),
            "-t",
            "localhost/x:1",
            "--add",
            "/tmp:/t",
        ],
    )
    .runtime_error(&["--add needs --format compat"]);
    with_store(&wb, &["build", hello.to_str().unwrap(), "-t", "Bad:Ref:X"])
        .runtime_error(&["Bad:Ref:X"]);
    assert_eq!(with_store(&wb, &["images"]).stdout.lines().count(), 1);
}

#[test]
fn load_archives_written_by_skopeo() {
    let work = tempfile::tempdir().unwrap();
    let layout = compat(&work.path().join("c"), "localhost/c:1");
    let docker = work.path().join("docker.tar");
    let oci = work.path().join("oci.tar");
    for (dest, what) in [
        (
            format!(
                "docker-archive:{}:localhost/from-docker:1",
                docker.display()
            ),
            "docker-archive",
        ),
        (
            format!("oci-archive:{}:compat:v9", oci.display()),
            "oci-archive",
        ),
    ] {
        let st = Command::new(tool("skopeo"))
            .args(["copy", "--quiet"])
            .arg(format!("oci:{}", layout.display()))
            .arg(&dest)
            .status()
            .unwrap();
        assert!(st.success(), "skopeo copy to {what}");
    }
    let wb = Wasmbox::new();
    let out = with_store(&wb, &["load", "-i", docker.to_str().unwrap()]);
    out.code(0);
    assert_eq!(out.stdout.trim(), "Loaded image: localhost/from-docker:1");
    assert_eq!(
        with_store(&wb, &["run", "localhost/from-docker:1"]).stdout,
        "from the image"
    );
    // An OCI archive's short ref name is a local image's, as podman names it; the short name
    // finds it, with no pull.
    let out = with_store(&wb, &["load", "-i", oci.to_str().unwrap()]);
    out.code(0);
    assert_eq!(out.stdout.trim(), "Loaded image: localhost/compat:v9");
    for name in ["compat:v9", "localhost/compat:v9"] {
        let out = with_store(&wb, &["run", name]);
        assert_eq!(out.stdout, "from the image", "{name}: {out:#?}");
    }
    assert!(
        with_store(&wb, &["inspect", "compat:v9"])
            .stdout
            .contains("localhost/compat:v9")
    );
    with_store(
        &wb,
        &[
            "load",
            "-i",
            oci.to_str().unwrap(),
            "-t",
            "localhost/from-oci:1",
        ],
    )
    .code(0);
    assert_eq!(
        with_store(&wb, &["run", "localhost/from-oci:1"]).stdout,
        "from the image"
    );
}

#[test]
fn a_registry_gone_mid_pull_leaves_nothing_and_a_later_pull_works() {
    let (addr, layer, mode) = fake_registry(Layer::CutOff);
    let wb = Wasmbox::new();
    let name = format!("{addr}/flaky/app:1");
    let out = with_store(&wb, &["pull", &name]);
    // Progress lines come first; the error is one line naming the image, the blob and the reason.
    let error = out.the_error_line();
    assert!(error.contains(&name) && error.contains(&layer), "{out:#?}");
    let store = wb.cache.path().join("store");
    assert!(
        !store
            .join("blobs/sha256")
            .join(layer.trim_start_matches("sha256:"))
            .exists()
    );
    assert_eq!(std::fs::read_dir(store.join("tmp")).unwrap().count(), 0);
    assert_eq!(with_store(&wb, &["images"]).stdout.lines().count(), 1);
    *mode.lock().unwrap() = Layer::Whole;
    with_store(&wb, &["pull", &name]).code(0);
    let out = with_store(&wb, &["run", &name]);
    out.code(0);
    assert_eq!(out.stdout, "Hello from wasmbox!\n");
}

#[test]
fn two_processes_pulling_the_same_image_both_succeed() {
    let reg = Registry::start();
    reg.push(&example_layout(), "demo/hello:2");
    let wb = Wasmbox::new();
    let store = wb.cache.path().join("store");
    let name = format!("{}/demo/hello:2", reg.addr);
    let children: Vec<_> = (0..4)
        .map(|_| {
            wb.cmd()
                .args(["--store", store.to_str().unwrap(), "pull", &name])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = with_store(&wb, &["images"]);
    assert_eq!(
        out.stdout.lines().filter(|l| l.contains(&name)).count(),
        1,
        "{out:#?}"
    );
    assert_eq!(std::fs::read_dir(store.join("tmp")).unwrap().count(), 0);
    with_store(&wb, &["run", &name]).code(0);
}

#[test]
fn authenticated_registry_needs_credentials_from_the_auth_file() {
    use base64::Engine as _;
    let reg = Registry::start_with(Some(("wbuser", "s3cret")));
    reg.push_as(&example_layout(), "private/hello:1", Some("wbuser:s3cret"));
    let name = format!("{}/private/hello:1", reg.addr);
    let wb = Wasmbox::new();
    // No credentials: refused, saying so.
    let out = with_store(&wb, &["pull", &name]);
    out.code(125);
    assert!(
        out.stderr.contains(&name) && out.stderr.to_lowercase().contains("not authorized"),
        "{out:#?}"
    );
    // Wrong credentials: refused too.
    let work = tempfile::tempdir().unwrap();
    let auth_file = work.path().join("auth.json");
    let write_auth = |userpass: &str| {
        let b64 = base64::engine::general_purpose::STANDARD.encode(userpass);
        std::fs::write(
            &auth_file,
            format!(r#"{{"auths": {{"{}": {{"auth": "{b64}"}}}}}}"#, reg.addr),
        )
        .unwrap();
    };
    write_auth("wbuser:wrong");
    let store = wb.cache.path().join("store");
    let pull = |wb: &Wasmbox| {
        crate::common::Out::from(
            wb.cmd()
                .env("REGISTRY_AUTH_FILE", &auth_file)
                .args(["--store", store.to_str().unwrap(), "pull", &name])
                .output()
                .unwrap(),
        )
    };
    let out = pull(&wb);
    out.code(125);
    assert!(
        out.stderr.to_lowercase().contains("not authorized"),
        "{out:#?}"
    );
    // The right credentials, as `podman login` writes them: pulled and runnable.
    write_auth("wbuser:s3cret");
    pull(&wb).code(0);
    let out = with_store(&wb, &["run", &name]);
    out.code(0);
    assert_eq!(out.stdout, "Hello from wasmbox!\n");
}

#[test]
fn an_image_made_by_umoci_is_pulled_and_run() {
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let image = format!("{}:wasm", layout.display());
    let umoci = |args: &[&str]| {
        let st = Command::new(tool("umoci")).args(args).status().unwrap();
        assert!(st.success(), "umoci {args:?}");
    };
    umoci(&["init", "--layout", layout.to_str().unwrap()]);
    umoci(&["new", "--image", &image]);
    let bundle = work.path().join("bundle");
    umoci(&[
        "unpack",
        "--rootless",
        "--image",
        &image,
        bundle.to_str().unwrap(),
    ]);
    std::fs::copy(
        crate::common::guest("files/files.wasm"),
        bundle.join("rootfs/app.wasm"),
    )
    .unwrap();
    umoci(&["repack", "--image", &image, bundle.to_str().unwrap()]);
    umoci(&[
        "config",
        "--image",
        &image,
        "--config.entrypoint",
        "/app.wasm",
        "--config.cmd",
        "exit",
        "--config.cmd",
        "3",
        "--os",
        "wasip1",
        "--architecture",
        "wasm",
    ]);
    let reg = Registry::start();
    reg.push(&layout, "umoci/files:1");
    let wb = Wasmbox::new();
    let name = format!("{}/umoci/files:1", reg.addr);
    with_store(&wb, &["run", &name]).code(3);
    let out = with_store(&wb, &["run", &name, "args"]);
    out.code(0);
    assert_eq!(out.stdout.lines().nth(1), Some("args"), "{out:#?}");
}

#[test]
fn a_multi_platform_index_runs_its_wasm_manifest() {
    let work = tempfile::tempdir().unwrap();
    let layout = multi_platform(&work.path().join("multi"), "localhost/multi:1");
    let reg = Registry::start();
    let st = Command::new(tool("skopeo"))
        .args(["copy", "--quiet", "--all", "--dest-tls-verify=false"])
        .arg(format!("oci:{}", layout.display()))
        .arg(format!("docker://{}/multi/app:1", reg.addr))
        .status()
        .unwrap();
    assert!(st.success());
    let wb = Wasmbox::new();
    let name = format!("{}/multi/app:1", reg.addr);
    with_store(&wb, &["run", &name]).code(7);
    let v: serde_json::Value =
        serde_json::from_str(&with_store(&wb, &["inspect", &name]).stdout).unwrap();
    assert_eq!(v["config"]["os"], "wasip1");
}

#[test]
fn skopeo_reads_what_wasmbox_saves() {
    let work = tempfile::tempdir().unwrap();
    let wb = Wasmbox::new();
    let layout = compat(&work.path().join("c"), "localhost/saved:1");
    with_store(&wb, &["load", "-i", layout.to_str().unwrap()]).code(0);
    let tarball = work.path().join("saved.tar");
    with_store(
        &wb,
        &["save", "-o", tarball.to_str().unwrap(), "localhost/saved:1"],
    )
    .code(0);
    let raw = Command::new(tool("skopeo"))
        .args(["inspect", "--raw"])
        .arg(format!("oci-archive:{}", tarball.display()))
        .output()
        .unwrap();
    assert!(
        raw.status.success(),
        "{}",
        String::from_utf8_lossy(&raw.stderr)
    );
    let m: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(m["layers"].as_array().unwrap().len(), 1);
    // Through a registry and back.
    let reg = Registry::start();
    let st = Command::new(tool("skopeo"))
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("oci-archive:{}", tarball.display()))
        .arg(format!("docker://{}/saved/app:1", reg.addr))
        .status()
        .unwrap();
    assert!(st.success());
    let out = with_store(
        &Wasmbox::new(),
        &["run", &format!("{}/saved/app:1", reg.addr)],
    );
    out.code(0);
    assert_eq!(out.stdout, "from the image");
}

#[test]
fn a_malformed_manifest_and_a_forbidden_registry_are_clear_errors() {
    let (addr, _, mode) = fake_registry(Layer::JunkManifest);
    let wb = Wasmbox::new();
    let name = format!("{addr}/broken/app:1");
    with_store(&wb, &["pull", &name]).runtime_error(&[&name, "malformed"]);
    *mode.lock().unwrap() = Layer::Forbidden;
    let out = with_store(&wb, &["pull", &name]);
    out.code(125);
    assert!(
        out.stderr.contains(&name) && out.stderr.to_lowercase().contains("denied"),
        "{out:#?}"
    );
    assert_eq!(with_store(&wb, &["images"]).stdout.lines().count(), 1);
    let blobs = wb.cache.path().join("store/blobs/sha256");
    assert_eq!(
        std::fs::read_dir(blobs).unwrap().count(),
        0,
        "nothing stored"
    );
}
