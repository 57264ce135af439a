//! Memory limit, wall-clock timeout, and the compiled-code cache as seen from the CLI.

use std::time::{Duration, Instant};

use crate::common::{Wasmbox, bundle, guest};

fn files() -> String {
    guest("files/files.wasm").display().to_string()
}

#[test]
fn memory_limit_stops_the_guest_with_137() {
    let wb = Wasmbox::new();
    let out = wb.run(&["run", "--memory", "16m", &files(), "alloc", "64"]);
    out.code(137);
    assert!(
        out.stderr
            .contains("memory limit of 16777216 bytes exceeded"),
        "{out:#?}"
    );
    // Under the limit, the same guest runs.
    let out = wb.run(&["run", "--memory", "16m", &files(), "alloc", "4"]);
    out.code(0);
    assert_eq!(out.stdout.trim(), "allocated 4 MB");
    // Unlimited, it can allocate more than the limit above.
    wb.run(&["run", &files(), "alloc", "64"]).code(0);
}

#[test]
fn memory_limit_from_the_spec() {
    let dir = tempfile::tempdir().unwrap();
    let b = bundle(
        dir.path(),
        serde_json::json!({"linux": {"resources": {"memory": {"limit": 8388608}}}}),
    );
    let wb = Wasmbox::new();
    let out = wb.run(&["run", "--bundle", b.to_str().unwrap(), "alloc", "32"]);
    out.code(137);
    assert!(
        out.stderr.contains("memory limit of 8388608 bytes"),
        "{out:#?}"
    );
}

#[test]
fn memory_limit_below_initial_memory_fails_at_instantiation() {
    let wb = Wasmbox::new();
    let out = wb.run(&["run", "--memory", "64k", &files(), "exit", "0"]);
    out.code(137);
    assert!(
        out.stderr.contains("memory limit of 65536 bytes"),
        "{out:#?}"
    );
}

#[test]
fn timeout_stops_a_looping_guest_with_124() {
    let wb = Wasmbox::new();
    let t = Instant::now();
    let out = wb.run(&["run", "--timeout", "300ms", &files(), "loop"]);
    out.code(124);
    assert!(out.stderr.contains("timed out"), "{out:#?}");
    assert!(t.elapsed() < Duration::from_secs(5));
    // A guest that ends before its deadline is not affected.
    wb.run(&["run", "--timeout", "30s", &files(), "exit", "4"])
        .code(4);
}

#[test]
fn timeout_also_stops_a_guest_blocked_in_the_host() {
    let wb = Wasmbox::new();
    let out = wb.run(&["run", "--timeout", "300ms", &files(), "sleep", "60000"]);
    out.code(124);
}

#[test]
fn second_run_uses_the_cache() {
    let wb = Wasmbox::new();
    let f = files();
    wb.run(&["run", &f, "exit", "0"]).code(0);
    let cache = wb.cache.path().join("c");
    let entries: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let before = std::fs::metadata(&entries[0]).unwrap().modified().unwrap();
    let out = wb
        .cmd()
        .env("WASMBOX_LOG", "wasmbox_runtime=debug")
        .args(["run", &f, "exit", "0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("compiled code from cache"), "{stderr}");
    assert_eq!(
        std::fs::metadata(&entries[0]).unwrap().modified().unwrap(),
        before
    );
}

#[test]
fn foreign_precompiled_code_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let engine = wasmtime::Engine::default();
    let cwasm = engine
        .precompile_module(b"(module (func (export \"_start\")))")
        .unwrap();
    let path = dir.path().join("evil.cwasm");
    std::fs::write(&path, &cwasm).unwrap();
    let wb = Wasmbox::new();
    wb.run(&["run", path.to_str().unwrap()])
        .runtime_error(&["evil.cwasm", "precompiled"]);
    // Also when it sits in a bundle's rootfs as the entrypoint.
    let b = bundle(
        dir.path(),
        serde_json::json!({"process": {"args": ["/evil.cwasm"]}}),
    );
    std::fs::write(b.join("rootfs/evil.cwasm"), &cwasm).unwrap();
    wb.run(&["run", "--bundle", b.to_str().unwrap()])
        .runtime_error(&["evil.cwasm", "precompiled"]);
}

#[test]
fn cache_in_a_world_writable_directory_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("shared");
    std::fs::create_dir(&cache).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    let wb = Wasmbox::new();
    let out = wb
        .cmd()
        .env("WASMBOX_CACHE_DIR", &cache)
        .args(["run", &files(), "exit", "0"])
        .output()
        .unwrap();
    crate::common::Out::from(out).runtime_error(&["cache directory", "other users write"]);
}
