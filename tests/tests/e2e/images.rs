//! Images in the local store: load, list, inspect, run, save, remove, prune.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::common::{Out, Wasmbox, guest};

/// Writes an OCI layout directory by hand, as skopeo or umoci would.
pub(crate) struct Layout {
    pub(crate) dir: PathBuf,
}

impl Layout {
    pub(crate) fn new(dir: &Path) -> Self {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Layout {
            dir: dir.to_path_buf(),
        }
    }
    fn blob(&self, bytes: &[u8]) -> Value {
        let hex = hex::encode(Sha256::digest(bytes));
        std::fs::write(self.dir.join("blobs/sha256").join(&hex), bytes).unwrap();
        json!({"digest": format!("sha256:{hex}"), "size": bytes.len()})
    }
    /// Stores a manifest and returns its descriptor.
    fn manifest(&self, config: Value, config_type: &str, layers: Vec<(&str, Vec<u8>)>) -> Value {
        let mut c = self.blob(&serde_json::to_vec(&config).unwrap());
        c["mediaType"] = json!(config_type);
        let layers: Vec<Value> = layers
            .into_iter()
            .map(|(mt, b)| {
                let mut d = self.blob(&b);
                d["mediaType"] = json!(mt);
                d
            })
            .collect();
        let m = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": c, "layers": layers});
        let mut d = self.blob(&serde_json::to_vec(&m).unwrap());
        d["mediaType"] = json!("application/vnd.oci.image.manifest.v1+json");
        d
    }

    fn name(&self, mut d: Value, name: Option<&str>) {
        if let Some(n) = name {
            d["annotations"] = json!({"org.opencontainers.image.ref.name": n});
        }
        let index = json!({"schemaVersion": 2, "manifests": [d]});
        std::fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&index).unwrap(),
        )
        .unwrap();
    }

    pub(crate) fn image(
        &self,
        name: Option<&str>,
        config: Value,
        config_type: &str,
        layers: Vec<(&str, Vec<u8>)>,
    ) {
        let d = self.manifest(config, config_type, layers);
        self.name(d, name);
    }
}

/// A multi-platform image: a linux/amd64 manifest and a wasip1/wasm one behind an image index.
pub fn multi_platform(dir: &Path, name: &str) -> PathBuf {
    let l = Layout::new(dir);
    let linux = tar_layer(&[("bin/app", b"\x7fELF\x02\x01\x01")]);
    let mut native = l.manifest(
        json!({"os": "linux", "architecture": "amd64", "config": {"Cmd": ["/bin/app"]}}),
        "application/vnd.oci.image.config.v1+json",
        vec![("application/vnd.oci.image.layer.v1.tar", linux)],
    );
    native["platform"] = json!({"os": "linux", "architecture": "amd64"});
    let wasm = std::fs::read(guest("files/files.wasm")).unwrap();
    let mut wasi = l.manifest(
        json!({"os": "wasip1", "architecture": "wasm", "config": {"Entrypoint": ["/app.wasm"], "Cmd": ["exit", "7"]}}),
        "application/vnd.oci.image.config.v1+json",
        vec![("application/vnd.oci.image.layer.v1.tar", tar_layer(&[("app.wasm", &wasm)]))],
    );
    wasi["platform"] = json!({"os": "wasip1", "architecture": "wasm"});
    let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [native, wasi]});
    let mut d = l.blob(&serde_json::to_vec(&index).unwrap());
    d["mediaType"] = json!("application/vnd.oci.image.index.v1+json");
    l.name(d, Some(name));
    l.dir
}

fn artifact(dir: &Path, name: &str) -> PathBuf {
    let l = Layout::new(dir);
    let wasm = std::fs::read(guest("hello/hello.wasm")).unwrap();
    l.image(
        Some(name),
        json!({}),
        "application/vnd.wasm.config.v0+json",
        vec![("application/wasm", wasm)],
    );
    l.dir
}

fn tar_layer(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (p, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o755);
        h.set_cksum();
        b.append_data(&mut h, p, *data).unwrap();
    }
    b.into_inner().unwrap()
}

pub fn compat(dir: &Path, name: &str) -> PathBuf {
    let l = Layout::new(dir);
    let wasm = std::fs::read(guest("files/files.wasm")).unwrap();
    let layer = tar_layer(&[
        ("app/files.wasm", &wasm),
        ("data/hello.txt", b"from the image"),
    ]);
    let config = json!({"os": "wasip1", "architecture": "wasm",
        "config": {"Entrypoint": ["/app/files.wasm"], "Cmd": ["cat", "/data/hello.txt"], "Env": ["IMAGE_ENV=1"], "WorkingDir": "/data"}});
    l.image(
        Some(name),
        config,
        "application/vnd.oci.image.config.v1+json",
        vec![("application/vnd.oci.image.layer.v1.tar", layer)],
    );
    l.dir
}

pub fn with_store(wb: &Wasmbox, args: &[&str]) -> Out {
    let store = wb.cache.path().join("store");
    let mut a = vec!["--store", store.to_str().unwrap()];
    a.extend_from_slice(args);
    wb.run(&a)
}

#[test]
fn load_list_run_inspect_save_rmi_prune() {
    let wb = Wasmbox::new();
    let work = tempfile::tempdir().unwrap();
    let art = artifact(&work.path().join("art"), "localhost/demo/hello:1.0");
    let out = with_store(&wb, &["load", "-i", art.to_str().unwrap()]);
    out.code(0);
    assert_eq!(out.stdout.trim(), "Loaded image: localhost/demo/hello:1.0");
    let cpt = compat(&work.path().join("cpt"), "localhost/files:v1");
    with_store(&wb, &["load", "-i", cpt.to_str().unwrap()]).code(0);
    let out = with_store(&wb, &["images"]);
    out.code(0);
    assert!(
        out.stdout.contains("localhost/demo/hello:1.0")
            && out.stdout.contains("artifact, command module"),
        "{out:#?}"
    );
    assert!(
        out.stdout.contains("localhost/files:v1") && out.stdout.contains("compat"),
        "{out:#?}"
    );
    // Run by reference, with arguments.
    let out = with_store(&wb, &["run", "localhost/demo/hello:1.0", "a", "b"]);
    out.code(0);
    assert_eq!(out.stdout, "Hello from wasmbox!\nargs: a b\n");
    // A compat image: entrypoint, cmd, env and working directory from its config, files from its layer.
    let out = with_store(&wb, &["run", "localhost/files:v1"]);
    out.code(0);
    assert_eq!(out.stdout, "from the image");
    let out = with_store(&wb, &["run", "localhost/files:v1", "env"]);
    assert!(
        out.stdout.lines().any(|l| l == "IMAGE_ENV=1")
            && !out.stdout.lines().any(|l| l.starts_with("PWD=")),
        "{out:#?}"
    );
    // Flags apply on top of the image.
    let out = with_store(
        &wb,
        &["run", "--memory", "8m", "localhost/files:v1", "alloc", "32"],
    );
    out.code(137);
    let out = with_store(&wb, &["inspect", "localhost/files:v1"]);
    out.code(0);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["reference"], "localhost/files:v1");
    assert_eq!(v["detectedBecause"], "platform wasip1/wasm");
    assert_eq!(v["entry"]["path"], "/app/files.wasm");
    // save → load into another store → run.
    let tarball = work.path().join("hello.tar");
    with_store(
        &wb,
        &[
            "save",
            "-o",
            tarball.to_str().unwrap(),
            "localhost/demo/hello:1.0",
        ],
    )
    .code(0);
    let wb2 = Wasmbox::new();
    with_store(&wb2, &["load", "-i", tarball.to_str().unwrap()]).code(0);
    let out = with_store(&wb2, &["run", "localhost/demo/hello:1.0"]);
    out.code(0);
    assert_eq!(out.stdout, "Hello from wasmbox!\n");
    // rmi, then the image is gone and prune frees its blobs.
    with_store(&wb, &["rmi", "localhost/demo/hello:1.0"]).code(0);
    // (inspect never reaches for a registry; run would try to pull it back.)
    with_store(&wb, &["inspect", "localhost/demo/hello:1.0"])
        .runtime_error(&["localhost/demo/hello:1.0", "not in the store"]);
    let out = with_store(&wb, &["prune"]);
    out.code(0);
    assert!(out.stdout.contains("3 blob(s) deleted"), "{out:#?}");
    with_store(&wb, &["run", "localhost/files:v1"]).code(0);
}

#[test]
fn run_an_oci_layout_directly() {
    let wb = Wasmbox::new();
    let work = tempfile::tempdir().unwrap();
    let art = artifact(&work.path().join("art"), "demo/hello:latest");
    let out = with_store(&wb, &["run", &format!("oci:{}", art.display()), "x"]);
    out.code(0);
    assert_eq!(out.stdout, "Hello from wasmbox!\nargs: x\n");
}

#[test]
fn load_names_and_bad_layouts() {
    let wb = Wasmbox::new();
    let work = tempfile::tempdir().unwrap();
    // Unnamed: needs --tag.
    let l = Layout::new(&work.path().join("unnamed"));
    l.image(
        None,
        json!({}),
        "application/vnd.wasm.config.v0+json",
        vec![("application/wasm", b"\0asm\x01\0\0\0".to_vec())],
    );
    with_store(&wb, &["load", "-i", l.dir.to_str().unwrap()]).runtime_error(&["no name", "--tag"]);
    with_store(
        &wb,
        &["load", "-i", l.dir.to_str().unwrap(), "-t", "named:1"],
    )
    .code(0);
    // A blob whose content does not match its name is refused, and no reference is made.
    let bad = artifact(&work.path().join("bad"), "localhost/bad:1");
    let blobs: Vec<PathBuf> = std::fs::read_dir(bad.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    for b in &blobs {
        if std::fs::read(b).unwrap().starts_with(b"\0asm") {
            std::fs::write(b, b"\0asm tampered").unwrap();
        }
    }
    with_store(&wb, &["load", "-i", bad.to_str().unwrap()])
        .runtime_error(&["does not match its digest"]);
    let out = with_store(&wb, &["images"]);
    assert!(!out.stdout.contains("localhost/bad:1"), "{out:#?}");
    // Not a layout at all.
    with_store(&wb, &["load", "-i", work.path().to_str().unwrap()])
        .runtime_error(&["neither an OCI image layout", "nor a docker-archive"]);
    // A tarball with a hostile entry is refused by the safe unpacker.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(1);
    h.set_mode(0o644);
    h.as_old_mut().name[..11].copy_from_slice(b"../evil.txt");
    h.set_cksum();
    b.append(&h, &b"x"[..]).unwrap();
    let evil = work.path().join("evil.tar");
    std::fs::write(&evil, b.into_inner().unwrap()).unwrap();
    with_store(&wb, &["load", "-i", evil.to_str().unwrap()]).runtime_error(&["evil.tar", "'..'"]);
    assert!(!work.path().parent().unwrap().join("evil.txt").exists());
    // A bad reference.
    with_store(&wb, &["run", "Not/A:Ref:At:All"])
        .runtime_error(&["neither a file nor an image reference"]);
}

#[test]
fn a_linux_image_is_refused_saying_what_it_holds() {
    let wb = Wasmbox::new();
    let work = tempfile::tempdir().unwrap();
    let l = Layout::new(&work.path().join("linux"));
    let layer = tar_layer(&[("bin/sh", b"\x7fELF\x02\x01\x01")]);
    l.image(
        Some("localhost/busybox:1"),
        json!({"os": "linux", "architecture": "amd64", "config": {"Cmd": ["/bin/sh"]}}),
        "application/vnd.oci.image.config.v1+json",
        vec![("application/vnd.oci.image.layer.v1.tar", layer)],
    );
    // Loaded (nothing to compile ahead), refused when run or compiled.
    let out = with_store(&wb, &["load", "-i", l.dir.to_str().unwrap()]);
    out.code(0);
    assert_eq!(out.stderr, "", "{out:#?}");
    with_store(&wb, &["compile", "localhost/busybox:1"]).runtime_error(&["holds no wasm"]);
    with_store(&wb, &["run", "localhost/busybox:1"]).runtime_error(&[
        "holds no wasm",
        "linux/amd64",
        "/bin/sh",
    ]);
}

#[test]
fn the_readme_example_image_runs() {
    let wb = Wasmbox::new();
    let layout = crate::common::examples().join("images/hello");
    let out = with_store(&wb, &["run", &format!("oci:{}", layout.display())]);
    out.code(0);
    assert_eq!(out.stdout, "Hello from wasmbox!\n");
    let out = with_store(&wb, &["images"]);
    assert!(
        out.stdout
            .contains("localhost/wasmbox/examples/hello:latest"),
        "{out:#?}"
    );
}

#[test]
fn output_piped_into_a_reader_that_quits_ends_quietly() {
    let wb = Wasmbox::new();
    let work = tempfile::tempdir().unwrap();
    let layout = compat(&work.path().join("l"), "localhost/pipe/quit:1");
    with_store(&wb, &["load", "-i", layout.to_str().unwrap()]).code(0);
    let store = wb.cache.path().join("store");
    let mut child = wb
        .cmd()
        .args([
            "--store",
            store.to_str().unwrap(),
            "inspect",
            "localhost/pipe/quit:1",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The reader goes away before wasmbox writes.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("panicked"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `inspect` says what an image's wasm is (a command module, a command component, an HTTP
/// component), for artifacts, for compat images (from the entry inside their layers) and for a
/// wasm file.
#[test]
fn inspect_says_what_the_wasm_is() {
    let wb = Wasmbox::new();
    let kind = |args: &[&str]| -> String {
        let out = with_store(&wb, args);
        out.code(0);
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        v["kind"].as_str().unwrap().to_string()
    };
    let layout = format!("oci:{}", guest("images/http-hello").display());
    with_store(&wb, &["load", "-i", &layout[4..]]).code(0);
    assert_eq!(
        kind(&["inspect", "localhost/wasmbox/examples/http-hello:latest"]),
        "artifact, HTTP component"
    );
    let http = guest("http-hello/http-hello.wasm").display().to_string();
    with_store(
        &wb,
        &["build", "--format", "compat", &http, "-t", "web:compat"],
    )
    .code(0);
    assert_eq!(kind(&["inspect", "web:compat"]), "compat, HTTP component");
    let files = guest("files/files-component.wasm").display().to_string();
    with_store(
        &wb,
        &["build", "--format", "compat", &files, "-t", "files:compat"],
    )
    .code(0);
    assert_eq!(
        kind(&["inspect", "files:compat"]),
        "compat, command component"
    );
    assert_eq!(kind(&["inspect", &http]), "HTTP component");
    let hello = guest("hello/hello.wasm").display().to_string();
    assert_eq!(kind(&["inspect", &hello]), "command module");
    // A library module (`_initialize` and named exports, no `_start`), run only by naming one.
    let t = tempfile::tempdir().unwrap();
    let reactor = t.path().join("reactor.wasm");
    let text = r#"(module (func (export "_initialize")) (func (export "process")))"#;
    std::fs::write(&reactor, wat::parse_str(text).unwrap()).unwrap();
    assert_eq!(
        kind(&["inspect", reactor.to_str().unwrap()]),
        "reactor module"
    );
}

/// `build -f`: an image from a Containerfile and its build context, run as written and with
/// `--entrypoint`; `RUN` refused naming its line.
#[test]
fn a_containerfile_builds_an_image_that_runs_as_written() {
    let wb = Wasmbox::new();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::copy(guest("files/files.wasm"), ctx.path().join("app.wasm")).unwrap();
    std::fs::write(ctx.path().join("data.txt"), "from the context").unwrap();
    let file = ctx.path().join("Containerfile");
    std::fs::write(
        &file,
        "FROM scratch\nCOPY app.wasm /app.wasm\nCOPY data.txt /data/\nENV GREETING=hi\n\
         WORKDIR /data\nENTRYPOINT [\"/app.wasm\"]\nCMD [\"env\"]\n",
    )
    .unwrap();
    let (f, c) = (file.to_str().unwrap(), ctx.path().to_str().unwrap());
    with_store(&wb, &["build", "-f", f, "-t", "localhost/cf:1", c]).code(0);
    let out = with_store(&wb, &["run", "localhost/cf:1"]);
    out.code(0);
    assert!(out.stdout.lines().any(|l| l == "GREETING=hi"), "{out:#?}");
    let out = with_store(&wb, &["run", "localhost/cf:1", "cat", "/data/data.txt"]);
    out.code(0);
    assert_eq!(out.stdout, "from the context");
    let out = with_store(
        &wb,
        &[
            "run",
            "--entrypoint",
            "/app.wasm",
            "localhost/cf:1",
            "args",
            "x",
        ],
    );
    out.code(0);
    assert_eq!(out.stdout, "/app.wasm\nargs\nx\n");
    std::fs::write(&file, "FROM scratch\nRUN make\n").unwrap();
    with_store(&wb, &["build", "-f", f, "-t", "localhost/cf:2", c])
        .runtime_error(&["line 2: RUN: there is nothing to run it on"]);
}
