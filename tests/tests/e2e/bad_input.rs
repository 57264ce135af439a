//! Bad input: one clear error line naming the thing and the reason, exit 125, no trace.

use crate::common::{Wasmbox, bundle, guest};

#[test]
fn missing_file() {
    Wasmbox::new()
        .run(&["run", "/no/such/file.wasm"])
        .runtime_error(&["/no/such/file.wasm", "No such file"]);
}

#[test]
fn non_wasm_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("script.sh");
    std::fs::write(&p, "#!/bin/sh\necho hi\n").unwrap();
    Wasmbox::new()
        .run(&["run", p.to_str().unwrap()])
        .runtime_error(&["script.sh", "not a wasm module or component"]);
    let p = dir.path().join("empty.wasm");
    std::fs::write(&p, "").unwrap();
    Wasmbox::new()
        .run(&["run", p.to_str().unwrap()])
        .runtime_error(&["empty.wasm", "empty"]);
}

#[test]
fn truncated_and_malformed_modules() {
    let dir = tempfile::tempdir().unwrap();
    let whole = std::fs::read(guest("hello/hello.wasm")).unwrap();
    let p = dir.path().join("truncated.wasm");
    std::fs::write(&p, &whole[..whole.len() / 2]).unwrap();
    Wasmbox::new()
        .run(&["run", p.to_str().unwrap()])
        .runtime_error(&["compiling", "truncated.wasm"]);
    let mut bad = whole.clone();
    bad[8] = 0x7f; // a section id that does not exist
    let p = dir.path().join("malformed.wasm");
    std::fs::write(&p, &bad).unwrap();
    Wasmbox::new()
        .run(&["run", p.to_str().unwrap()])
        .runtime_error(&["compiling", "malformed.wasm"]);
}

#[test]
fn unknown_export() {
    let f = format!("{}#no_such_export", guest("files/files.wasm").display());
    Wasmbox::new()
        .run(&["run", &f])
        .runtime_error(&["files.wasm", "no export \"no_such_export\""]);
}

#[test]
fn export_named_with_hash_is_called() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("exports.wat");
    std::fs::write(
        &p,
        r#"(module
             (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
             (func (export "_start") (call $exit (i32.const 1)))
             (func (export "other") (call $exit (i32.const 7))))"#,
    )
    .unwrap();
    let wb = Wasmbox::new();
    wb.run(&["run", p.to_str().unwrap()]).code(1);
    wb.run(&["run", &format!("{}#other", p.display())]).code(7);
}

#[test]
fn bad_volume_specs() {
    let f = guest("hello/hello.wasm").display().to_string();
    let wb = Wasmbox::new();
    wb.run(&["run", "-v", "nocolon", &f])
        .runtime_error(&["nocolon", "HOST:GUEST"]);
    wb.run(&["run", "-v", "/tmp:/x:rx", &f])
        .runtime_error(&["/tmp:/x:rx", "unknown option"]);
    wb.run(&["run", "-v", "/no/such/dir:/x", &f])
        .runtime_error(&["/no/such/dir", "No such file"]);
    wb.run(&["run", "-v", "/tmp:relative", &f])
        .runtime_error(&["/tmp:relative", "absolute"]);
    wb.run(&["run", "-v", "/tmp:/proc", &f])
        .runtime_error(&["/tmp:/proc", "kernel"]);
    wb.run(&["run", "-v", "/tmp:/a/../b", &f])
        .runtime_error(&["/tmp:/a/../b", ".."]);
}

#[test]
fn bad_flags() {
    let f = guest("hello/hello.wasm").display().to_string();
    let wb = Wasmbox::new();
    wb.run(&["run", "--allow-connect", "example.com:80", &f])
        .runtime_error(&["example.com:80", "not an IP address"]);
    let out = wb.run(&["run", "--memory", "lots", &f]);
    out.code(125);
    assert!(out.stderr.contains("lots"), "{out:#?}");
    let out = wb.run(&["run", "--timeout", "soon", &f]);
    out.code(125);
    assert!(out.stderr.contains("soon"), "{out:#?}");
    let out = wb.run(&["run"]);
    out.code(125);
}

#[test]
fn malformed_config_json() {
    let dir = tempfile::tempdir().unwrap();
    let b = bundle(dir.path(), serde_json::json!({}));
    std::fs::write(b.join("config.json"), "{\"ociVersion\": ").unwrap();
    Wasmbox::new()
        .run(&["run", "--bundle", b.to_str().unwrap()])
        .runtime_error(&["config.json", "EOF"]);
    std::fs::write(
        b.join("config.json"),
        "{\"ociVersion\": \"1.0.2\", \"process\": 5}",
    )
    .unwrap();
    Wasmbox::new()
        .run(&["run", "--bundle", b.to_str().unwrap()])
        .runtime_error(&["config.json"]);
}

#[test]
fn missing_entrypoint_in_rootfs() {
    let dir = tempfile::tempdir().unwrap();
    let b = bundle(
        dir.path(),
        serde_json::json!({"process": {"args": ["/nope.wasm"]}}),
    );
    Wasmbox::new()
        .run(&["run", "--bundle", b.to_str().unwrap()])
        .runtime_error(&["/nope.wasm", "does not exist in the container's rootfs"]);
}

#[test]
fn bad_annotation() {
    let dir = tempfile::tempdir().unwrap();
    let b = bundle(
        dir.path(),
        serde_json::json!({"annotations": {"wasmbox.net.listen": "127.0.0.1:99999"}}),
    );
    Wasmbox::new()
        .run(&["run", "--bundle", b.to_str().unwrap()])
        .runtime_error(&["wasmbox.net.listen", "99999"]);
}
