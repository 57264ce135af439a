//! Compiling ahead: `load`, `build` (and `pull`, in `registry.rs`) compile an image's wasm into
//! the compiled-code cache, and `run` and `serve` then start from it; `--no-compile`;
//! `wasmbox compile` of files and images; a wasm that does not compile is reported without
//! failing the load or build, and again by `run`.

use std::path::{Path, PathBuf};

use crate::common::{Wasmbox, guest};
use crate::http::Served;
use crate::images::{compat, with_store};

/// The compiled entries in `wb`'s cache.
pub fn cached(wb: &Wasmbox) -> Vec<PathBuf> {
    crate::common::cache_entries(&wb.cache.path().join("c"))
}

/// `wasmbox --store … ARGS` with the runtime's debug log, which says where code came from.
fn logged(wb: &Wasmbox, args: &[&str]) -> crate::common::Out {
    let store = wb.cache.path().join("store");
    let out = wb
        .cmd()
        .env("WASMBOX_LOG", "wasmbox_runtime=debug")
        .args(["--store", store.to_str().unwrap()])
        .args(args)
        .output()
        .unwrap();
    crate::common::Out::from(out)
}

#[test]
fn load_and_build_compile_ahead_and_run_and_serve_start_from_the_cache() {
    let wb = Wasmbox::new();
    let work = tempfile::tempdir().unwrap();
    let cpt = compat(&work.path().join("cpt"), "localhost/files:v1");
    // `load` compiles the image's wasm (its non-wasm file is left alone).
    let out = with_store(&wb, &["load", "-i", cpt.to_str().unwrap()]);
    out.code(0);
    assert_eq!(out.stdout.trim(), "Loaded image: localhost/files:v1");
    assert_eq!(cached(&wb).len(), 1, "{out:#?}");
    let out = logged(&wb, &["run", "localhost/files:v1"]);
    out.code(0);
    assert_eq!(out.stdout, "from the image");
    assert!(
        out.stderr.contains("compiled code from cache") && !out.stderr.contains("compiling"),
        "{out:#?}"
    );
    // `build` of an HTTP component: `serve` (whose engine pools its instances) starts from what
    // the build compiled.
    let http = guest("http-hello/http-hello.wasm");
    let out = with_store(
        &wb,
        &[
            "build",
            http.to_str().unwrap(),
            "-t",
            "localhost/hello-http:1",
        ],
    );
    out.code(0);
    assert_eq!(cached(&wb).len(), 2, "{out:#?}");
    let store = wb.cache.path().join("store");
    let mut cmd = wb.cmd();
    cmd.env("WASMBOX_LOG", "wasmbox_runtime=debug")
        .args(["--store", store.to_str().unwrap()]);
    let server = Served::start_as(cmd, "serve", &[], "localhost/hello-http:1");
    assert_eq!(server.curl(&[], "/").0, 200);
    let log = server.stderr.all();
    drop(server);
    assert!(
        log.iter().any(|l| l.contains("compiled code from cache"))
            && !log.iter().any(|l| l.contains("compiling")),
        "{log:#?}"
    );
    // `--no-compile` leaves the cache as it was.
    let hello = guest("hello/hello.wasm");
    with_store(
        &wb,
        &[
            "build",
            hello.to_str().unwrap(),
            "-t",
            "localhost/hello:1",
            "--no-compile",
        ],
    )
    .code(0);
    assert_eq!(cached(&wb).len(), 2);
    // `compile` of an image: now it is there, and compiling it again changes nothing.
    let out = with_store(&wb, &["compile", "localhost/hello:1"]);
    out.code(0);
    let entries = cached(&wb);
    assert_eq!(entries.len(), 3, "{out:#?}");
    let written: Vec<_> = entries
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().modified().unwrap())
        .collect();
    with_store(
        &wb,
        &["compile", "localhost/hello:1", hello.to_str().unwrap()],
    )
    .code(0);
    let again: Vec<_> = cached(&wb)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().modified().unwrap())
        .collect();
    assert_eq!(written, again);
    let out = logged(&wb, &["run", hello.to_str().unwrap()]);
    out.code(0);
    assert!(out.stderr.contains("compiled code from cache"), "{out:#?}");
    // What a killed compile left (pid_max is at most 2^22: this pid names no process) goes at
    // the next one.
    let scratch = tempfile::tempdir().unwrap();
    let stale = scratch
        .path()
        .join("bundles/wasmbox-compile-4194305-x/rootfs");
    std::fs::create_dir_all(&stale).unwrap();
    let out = wb
        .cmd()
        .env("WASMBOX_SCRATCH_DIR", scratch.path())
        .args([
            "--store",
            store.to_str().unwrap(),
            "compile",
            "localhost/hello:1",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(!stale.exists());
    assert_eq!(
        std::fs::read_dir(scratch.path().join("bundles"))
            .unwrap()
            .count(),
        0,
        "its own bundle is removed too"
    );
}

/// A module well formed but invalid: `(func (result i32))` with an empty body, which fails
/// validation when compiled.
const INVALID: &[u8] =
    b"\0asm\x01\0\0\0\x01\x05\x01\x60\x00\x01\x7f\x03\x02\x01\x00\x0a\x04\x01\x02\x00\x0b";

/// A Containerfile image whose `/app.wasm` is [`INVALID`].
fn broken_image(wb: &Wasmbox, dir: &Path, name: &str) -> crate::common::Out {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("app.wasm"), INVALID).unwrap();
    std::fs::write(
        dir.join("Containerfile"),
        "FROM scratch\nCOPY app.wasm /app.wasm\nENTRYPOINT [\"/app.wasm\"]\n",
    )
    .unwrap();
    let file = dir.join("Containerfile");
    with_store(
        wb,
        &[
            "build",
            "-f",
            file.to_str().unwrap(),
            "-t",
            name,
            dir.to_str().unwrap(),
        ],
    )
}

#[test]
fn wasm_that_does_not_compile_is_reported_and_fails_only_what_runs_it() {
    let wb = Wasmbox::new();
    let work = tempfile::tempdir().unwrap();
    // The build succeeds and says what did not compile, naming the image and the file.
    let out = broken_image(&wb, &work.path().join("ctx"), "localhost/broken:1");
    out.code(0);
    assert!(
        out.stdout.starts_with("localhost/broken:1 sha256:"),
        "{out:#?}"
    );
    assert!(
        out.stderr.contains("localhost/broken:1:/app.wasm") && out.stderr.contains("compil"),
        "{out:#?}"
    );
    assert!(cached(&wb).is_empty());
    // `run` reports it again.
    let out = with_store(&wb, &["run", "localhost/broken:1"]);
    assert_ne!(out.code, 0, "{out:#?}");
    assert!(out.stderr.contains("/app.wasm"), "{out:#?}");
    // `compile` fails on it, and on a file that is not there or an image the store lacks.
    let out = with_store(&wb, &["compile", "localhost/broken:1"]);
    out.code(1);
    assert!(
        out.stderr.contains("localhost/broken:1:/app.wasm"),
        "{out:#?}"
    );
    let bad = work.path().join("ctx/app.wasm");
    let out = with_store(&wb, &["compile", bad.to_str().unwrap()]);
    out.code(1);
    assert!(out.stderr.contains(bad.to_str().unwrap()), "{out:#?}");
    with_store(&wb, &["compile", "/nowhere/x.wasm"]).runtime_error(&["/nowhere/x.wasm"]);
    with_store(&wb, &["compile", "localhost/absent:1"])
        .runtime_error(&["localhost/absent:1", "pull it first"]);
    with_store(&wb, &["compile", "--no-cache", bad.to_str().unwrap()])
        .runtime_error(&["--no-cache"]);
    assert!(cached(&wb).is_empty());
    // A cache that cannot be opened fails the build of nothing, and says so.
    let store = wb.cache.path().join("store");
    let hello = guest("hello/hello.wasm");
    let out = crate::common::Out::from(
        wb.cmd()
            .env("WASMBOX_CACHE_MAX", "lots")
            .args(["--store", store.to_str().unwrap(), "build"])
            .args([hello.to_str().unwrap(), "-t", "localhost/hello:2"])
            .output()
            .unwrap(),
    );
    out.code(0);
    assert!(
        out.stderr.contains("not compiled ahead") && out.stderr.contains("WASMBOX_CACHE_MAX"),
        "{out:#?}"
    );
    assert!(cached(&wb).is_empty());
}

#[test]
fn processes_starting_the_same_module_together_compile_it_once() {
    // Four starts of one module (big enough for the compile helper) at once, one cache: one
    // compiles, and each other waits for it and loads what it wrote, as a scale-out's replicas
    // on one node do.
    let wb = Wasmbox::new();
    let component = guest("files/files-component.wasm");
    let children: Vec<_> = (0..4)
        .map(|_| {
            wb.cmd()
                .env("WASMBOX_LOG", "wasmbox_runtime=debug")
                .args(["run", component.to_str().unwrap(), "args", "x"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<_> = children
        .into_iter()
        .map(|c| crate::common::Out::from(c.wait_with_output().unwrap()))
        .collect();
    for out in &outs {
        assert_eq!(out.code, 0, "{out:#?}");
        assert!(out.stdout.ends_with("args\nx\n"), "{out:#?}");
    }
    let compiled = outs
        .iter()
        .filter(|o| o.stderr.contains("compiling"))
        .count();
    let loaded = outs
        .iter()
        .filter(|o| o.stderr.contains("compiled code from cache"))
        .count();
    assert_eq!((compiled, loaded), (1, 3), "{outs:#?}");
    assert_eq!(cached(&wb).len(), 1);
}
