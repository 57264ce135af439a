//! The test images: wasm guests built into compat images by `wasmbox build`, and hand-made
//! single-layer images (native busybox and pause, a precompiled entrypoint, a device node),
//! saved once per test process as archives `ctr images import` reads.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::common::{Wasmbox, guest};

/// Test images, built once per test process as archives `ctr images import` reads.
pub struct Images {
    dir: tempfile::TempDir,
}

/// Image names.
pub const FILES: &str = "localhost/wasmbox-test/files:ctr";
pub const HELLO: &str = "localhost/wasmbox-test/hello:ctr";
pub const HELLO_ARTIFACT: &str = "localhost/wasmbox-test/hello-artifact:ctr";
pub const HELLO_CONVERTED: &str = "localhost/wasmbox-test/hello-converted:ctr";
pub const WAT: &str = "localhost/wasmbox-test/wat:ctr";
pub const BUSYBOX: &str = "localhost/wasmbox-test/busybox:ctr";
pub const PRECOMPILED: &str = "localhost/wasmbox-test/precompiled:ctr";
pub const ECHO: &str = "localhost/wasmbox-test/echo:ctr";
pub const HTTP_HELLO: &str = "localhost/wasmbox-test/http-hello:ctr";
/// The WASI testsuite's `http-service`, a WASI 0.3 service (`wasi:http/handler@0.3`).
pub const HTTP_SERVICE_P3: &str = "localhost/wasmbox-test/http-service-p3:ctr";
pub const DEVICES: &str = "localhost/wasmbox-test/devices:ctr";
pub const PAUSE: &str = "localhost/wasmbox-test/pause:ctr";
pub const NET_PROBE: &str = "localhost/wasmbox-test/net-probe:ctr";

/// Guests written in WAT (`examples/wat/NAME.wat`), stored compiled in one image as `/NAME.wasm`.
pub const WAT_GUESTS: &[&str] = &["dots", "grow", "spin", "flood"];

impl Images {
    /// The shared set.
    pub fn get() -> &'static Images {
        static IMAGES: OnceLock<Images> = OnceLock::new();
        IMAGES.get_or_init(Images::build)
    }

    /// The archive holding `name`.
    pub fn archive(&self, name: &str) -> PathBuf {
        let file = name.rsplit('/').next().unwrap().replace(':', "-");
        self.dir.path().join(format!("{file}.tar"))
    }

    fn build() -> Images {
        let dir = tempfile::tempdir().unwrap();
        let wb = Wasmbox::new();
        let store = dir.path().join("store");
        let store = store.to_str().unwrap();
        let run = |args: &[&str]| {
            let mut a = vec!["--store", store];
            a.extend_from_slice(args);
            let out = wb.run(&a);
            assert_eq!(out.code, 0, "wasmbox {args:?}: {out:#?}");
        };
        let images = Images { dir };
        let save = |name: &str, extra: &[&str]| {
            let archive = images.archive(name);
            let mut a = vec!["save", "-o", archive.to_str().unwrap()];
            a.extend_from_slice(extra);
            a.push(name);
            run(&a);
        };
        let files = guest("files/files.wasm");
        let hello = guest("hello/hello.wasm");
        run(&[
            "build",
            "--format",
            "compat",
            files.to_str().unwrap(),
            "-t",
            FILES,
        ]);
        save(FILES, &[]);
        run(&[
            "build",
            "--format",
            "compat",
            hello.to_str().unwrap(),
            "-t",
            HELLO,
        ]);
        save(HELLO, &[]);
        let echo = guest("echo-server/echo.wasm");
        run(&[
            "build",
            "--format",
            "compat",
            echo.to_str().unwrap(),
            "-t",
            ECHO,
        ]);
        save(ECHO, &[]);
        let probe = guest("net-probe/net-probe.wasm");
        run(&[
            "build",
            "--format",
            "compat",
            probe.to_str().unwrap(),
            "-t",
            NET_PROBE,
        ]);
        save(NET_PROBE, &[]);
        let http = guest("http-hello/http-hello.wasm");
        run(&[
            "build",
            "--format",
            "compat",
            http.to_str().unwrap(),
            "-t",
            HTTP_HELLO,
        ]);
        save(HTTP_HELLO, &[]);
        let service = crate::common::wasi_testsuite_p3("http-service");
        run(&[
            "build",
            "--format",
            "compat",
            service.to_str().unwrap(),
            "-t",
            HTTP_SERVICE_P3,
        ]);
        save(HTTP_SERVICE_P3, &[]);
        run(&["build", hello.to_str().unwrap(), "-t", HELLO_ARTIFACT]);
        save(HELLO_ARTIFACT, &[]);
        let converted = images.archive(HELLO_CONVERTED);
        run(&[
            "save",
            "--compat",
            "-o",
            converted.to_str().unwrap(),
            HELLO_ARTIFACT,
        ]);
        // The WAT guests, compiled, side by side in one compat image.
        let wat_dir = images.dir.path().join("wat");
        std::fs::create_dir_all(&wat_dir).unwrap();
        let mut adds = Vec::new();
        for name in WAT_GUESTS {
            let p = wat_dir.join(format!("{name}.wasm"));
            let text = guest(&format!("wat/{name}.wat"));
            std::fs::write(&p, wat::parse_file(text).unwrap()).unwrap();
            adds.push(format!("{}:/{name}.wasm", p.display()));
        }
        let first = wat_dir.join("dots.wasm");
        let mut a = vec!["build", "--format", "compat"];
        for add in &adds {
            a.extend(["--add", add.as_str()]);
        }
        a.extend([first.to_str().unwrap(), "-t", WAT]);
        run(&a);
        save(WAT, &[]);
        // Precompiled code posing as the entrypoint.
        let cwasm = wasmtime::Engine::default()
            .precompile_module(&std::fs::read(&hello).unwrap())
            .unwrap();
        native_image(
            &images.archive(PRECOMPILED),
            PRECOMPILED,
            &[("app.wasm", cwasm.as_slice(), None)],
            json!({"os": "wasip1", "architecture": "wasm", "config": {"Entrypoint": ["/app.wasm"]}}),
        );
        // A wasm image whose layer holds a device node (/dev/null's numbers) at /null.
        let files_wasm = std::fs::read(&files).unwrap();
        native_image(
            &images.archive(DEVICES),
            DEVICES,
            &[
                ("app.wasm", files_wasm.as_slice(), None),
                ("null", b"", Some(Special::CharDev(1, 3))),
            ],
            json!({"os": "wasip1", "architecture": "wasm", "config": {"Entrypoint": ["/app.wasm"]}}),
        );
        // busybox: a static native image.
        let bb = std::fs::read("/bin/busybox")
            .expect("/bin/busybox: tests/run.sh installs busybox-static");
        let mut files: Vec<(&str, &[u8], Option<Special<'_>>)> =
            vec![("bin/busybox", bb.as_slice(), None)];
        for applet in ["sh", "echo", "sleep", "cat", "true", "wget", "hostname"] {
            files.push((
                Box::leak(format!("bin/{applet}").into_boxed_str()),
                b"",
                Some(Special::Link("busybox")),
            ));
        }
        // The pods' pause container: tests/pause.c, built static.
        let pause = images.dir.path().join("pause");
        let st = Command::new("cc")
            .args(["-static", "-Os", "-o"])
            .arg(&pause)
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("pause.c"))
            .status()
            .expect("cc: tests/run.sh installs gcc");
        assert!(st.success(), "building tests/pause.c");
        native_image(
            &images.archive(PAUSE),
            PAUSE,
            &[("pause", std::fs::read(&pause).unwrap().as_slice(), None)],
            json!({"os": "linux", "architecture": "amd64", "config": {"Entrypoint": ["/pause"]}}),
        );
        native_image(
            &images.archive(BUSYBOX),
            BUSYBOX,
            &files,
            json!({"os": "linux", "architecture": "amd64", "config": {"Cmd": ["sh"], "Env": ["PATH=/bin"]}}),
        );
        images
    }
}

/// What an entry of a test layer is besides a regular file.
#[derive(Clone, Copy)]
enum Special<'a> {
    /// A symbolic link to this target.
    Link(&'a str),
    /// A character device node (major, minor).
    CharDev(u32, u32),
}

/// Writes an OCI archive holding one single-layer image: `files` are (path, contents, special)
/// entries of the layer (a regular file when `special` is `None`); `config` gets the layer's diff
/// id.
fn native_image(
    archive: &Path,
    name: &str,
    files: &[(&str, &[u8], Option<Special<'_>>)],
    mut config: serde_json::Value,
) {
    let mut b = tar::Builder::new(Vec::new());
    for (p, data, special) in files {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o755);
        match special {
            Some(Special::Link(target)) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                b.append_link(&mut h, p, target).unwrap();
            }
            Some(Special::CharDev(major, minor)) => {
                h.set_entry_type(tar::EntryType::Char);
                h.set_mode(0o666);
                h.set_size(0);
                h.set_device_major(*major).unwrap();
                h.set_device_minor(*minor).unwrap();
                h.set_cksum();
                b.append_data(&mut h, p, std::io::empty()).unwrap();
            }
            None => {
                h.set_size(data.len() as u64);
                h.set_cksum();
                b.append_data(&mut h, p, *data).unwrap();
            }
        }
    }
    let layer = b.into_inner().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let blobs = dir.path().join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8], media: &str| {
        let hex = hex::encode(Sha256::digest(bytes));
        std::fs::write(blobs.join(&hex), bytes).unwrap();
        json!({"mediaType": media, "digest": format!("sha256:{hex}"), "size": bytes.len()})
    };
    let layer_d = put(&layer, "application/vnd.oci.image.layer.v1.tar");
    config["rootfs"] = json!({"type": "layers", "diff_ids": [layer_d["digest"]]});
    let config_d = put(
        &serde_json::to_vec(&config).unwrap(),
        "application/vnd.oci.image.config.v1+json",
    );
    let manifest = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": config_d, "layers": [layer_d]});
    let mut md = put(
        &serde_json::to_vec(&manifest).unwrap(),
        "application/vnd.oci.image.manifest.v1+json",
    );
    md["annotations"] = json!({"io.containerd.image.name": name, "org.opencontainers.image.ref.name": name.rsplit(':').next().unwrap()});
    std::fs::write(
        dir.path().join("index.json"),
        serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [md]})).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let st = Command::new("tar")
        .arg("-C")
        .arg(dir.path())
        .arg("-cf")
        .arg(archive)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
}
