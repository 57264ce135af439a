//! Attacks on compiled code and on compiling, performed through `wasmbox run`: no grant reaches
//! the compiled-code cache or its key, planted native code never runs, the deadline covers
//! compiling, huge modules are refused and a compile's memory is capped.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use crate::common::{Wasmbox, cache_entries as entries, guest};
use crate::escapes::{error_line, files, spec_bundle};

#[test]
fn no_grant_reaches_the_cache_or_its_key_at_inside_or_above() {
    let wb = Wasmbox::new();
    let cache = wb.cache.path().join("c");
    wb.run(&["run", &guest("hello/hello.wasm").display().to_string()])
        .code(0);
    let key = wb.cache.path().join("c.key");
    assert!(key.exists(), "the cache key lives beside the cache");
    for (host, how) in [
        (wb.cache.path().to_path_buf(), "contains"),
        (cache.clone(), "is"),
    ] {
        let v = format!("{}:/home", host.display());
        let out = wb.run(&["run", "-v", &v, &files(), "ls", "/home"]);
        let line = out.the_error_line();
        assert!(
            line.contains(how) && line.contains("compiled-code cache"),
            "{line}"
        );
    }
    std::fs::create_dir(cache.join("sub")).unwrap();
    let v = format!("{}:/x", cache.join("sub").display());
    let line = error_line(&wb, &["run", "-v", &v, &files(), "ls", "/x"]);
    assert!(
        line.contains("is inside wasmbox's compiled-code cache"),
        "{line}"
    );
    // A single-file bind of the key, or of an entry, is refused the same way.
    let entry = entries(&cache).remove(0);
    for (file, what) in [(&key, "is wasmbox's cache key"), (&entry, "is inside")] {
        let (_b, dir) = spec_bundle(serde_json::json!({"mounts": [
            {"destination": "/etc/x", "type": "bind", "source": file, "options": ["rbind", "ro"]}
        ]}));
        let line = error_line(&wb, &["run", "--bundle", &dir, "cat", "/etc/x"]);
        assert!(line.contains(what), "{line}");
    }
}

#[test]
fn planted_native_code_is_never_run() {
    let wb = Wasmbox::new();
    let cache = wb.cache.path().join("c");
    // Two different modules compiled into the cache.
    let hello = guest("hello/hello.wasm").display().to_string();
    wb.run(&["run", &hello]).code(0);
    let before = entries(&cache);
    wb.run(&["run", &files(), "exit", "7"]).code(7);
    let after = entries(&cache);
    let files_entry = after
        .iter()
        .find(|p| !before.contains(p))
        .expect("files.wasm's entry")
        .clone();
    // The attack: hello's compiled code (a real entry, with a MAC good for hello) saved under
    // files.wasm's name; then, in a second round, one byte of an entry changed.
    let mut bytes = std::fs::read(&before[0]).unwrap();
    for round in 0..2 {
        std::fs::write(&files_entry, &bytes).unwrap();
        let out = wb
            .cmd()
            .env("WASMBOX_LOG", "warn")
            .args(["run", &files(), "exit", "7"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(7),
            "round {round}: files must run as itself: {stderr}"
        );
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("hello"),
            "round {round}: the planted code ran"
        );
        assert!(
            stderr.contains("failed its MAC check"),
            "round {round}: {stderr}"
        );
        // The entry was replaced by files.wasm's own code: the next run loads it quietly.
        let out = wb
            .cmd()
            .env("WASMBOX_LOG", "warn")
            .args(["run", &files(), "exit", "7"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(7));
        assert!(!String::from_utf8_lossy(&out.stderr).contains("MAC"));
        bytes = std::fs::read(&files_entry).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
    }
}

/// A module of `n` functions, each with a body worth compiling, whose `_start` returns at once.
pub fn many_functions(n: usize) -> Vec<u8> {
    functions_then(n, "(module (func (export \"_start\"))")
}

/// `many_functions`, but `_start` prints `started` and then spins.
fn many_functions_then_spin(n: usize) -> Vec<u8> {
    functions_then(
        n,
        r#"(module
            (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 1)
            (data (i32.const 16) "started\n")
            (func (export "_start")
              (i32.store (i32.const 0) (i32.const 16))
              (i32.store (i32.const 4) (i32.const 8))
              (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
              (loop $l (br $l)))"#,
    )
}

/// A module of 200,000 functions, written in `dir`: about 1 GiB to compile, more than a second.
fn big_module(dir: &std::path::Path) -> String {
    let big = dir.join("big.wasm");
    std::fs::write(&big, many_functions(200_000)).unwrap();
    big.display().to_string()
}

/// `head` (a module's text, unclosed) and `n` functions worth compiling.
fn functions_then(n: usize, head: &str) -> Vec<u8> {
    let mut text = String::from(head);
    for i in 0..n {
        text.push_str(&format!(
            " (func (param i32) (result i32) local.get 0 i32.const {i} i32.mul i32.const 7 i32.add)"
        ));
    }
    text.push(')');
    wat::parse_str(&text).unwrap()
}

#[test]
fn the_deadline_covers_compiling_and_huge_modules_are_refused() {
    let wb = Wasmbox::new();
    let t = tempfile::tempdir().unwrap();
    let big = big_module(t.path());
    let out = wb.run(&["run", "--no-cache", "--timeout", "1s", &big]);
    assert_eq!(out.code, 124, "{out:#?}");
    assert!(out.stderr.contains("while loading"), "{out:#?}");
    let huge = t.path().join("huge.wasm");
    std::fs::write(&huge, many_functions(250_001)).unwrap();
    let line = error_line(&wb, &["run", "--no-cache", &huge.display().to_string()]);
    assert!(line.contains("250002 functions"), "{line}");
}

/// Compiling runs in a helper process whose memory is capped: a module that needs about 1 GiB
/// to compile fails under a 256 MiB cap with a message that says so; compiled in a helper under
/// the default cap, that memory is never `wasmbox run`'s own; a module that needs little
/// compiles in a helper under 64 MiB.
#[test]
fn compile_memory_is_capped_in_a_helper_process() {
    let wb = Wasmbox::new();
    let t = tempfile::tempdir().unwrap();
    let big = big_module(t.path());
    let line = error_line(
        &wb,
        &["run", "--no-cache", "--compile-memory", "256m", &big],
    );
    assert!(
        line.contains("the compiler needed more than its 256 MiB memory cap"),
        "{line}"
    );
    let spin = t.path().join("spin.wasm");
    std::fs::write(&spin, many_functions_then_spin(200_000)).unwrap();
    let mut child = wb
        .cmd()
        .args(["run", "--no-cache"])
        .arg(&spin)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "started\n");
    let hwm_kib = crate::common::peak_rss_kib(child.id());
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(hwm_kib < 256 * 1024, "wasmbox run's peak RSS {hwm_kib} KiB");
    // A module past the size compiled in process (64 KiB) but quick to compile: its helper
    // needs little.
    let data = t.path().join("data.wasm");
    let wat = format!(
        r#"(module (memory 2) (data (i32.const 0) "{}") (func (export "_start")))"#,
        "x".repeat(100 << 10)
    );
    std::fs::write(&data, wat::parse_str(&wat).unwrap()).unwrap();
    let data = data.display().to_string();
    let out = wb.run(&[
        "run",
        "--no-cache",
        "--log-level",
        "wasmbox_runtime=debug",
        "--compile-memory",
        "64m",
        &data,
    ]);
    out.code(0);
    assert!(out.stderr.contains("in a helper"), "{out:#?}");
    let out = wb.run(&["run", "--compile-memory", "1m", &files(), "args"]);
    out.code(125);
    assert!(out.stderr.contains("too little to compile in"), "{out:#?}");
}
