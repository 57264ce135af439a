//! WASI 0.3 components (the official testsuite's prebuilt `wasm32-wasip3` tests) under
//! `wasmbox run`: they run, and they get exactly their grants, as 0.2 components do.

use std::path::{Path, PathBuf};

use crate::common::{Out, Wasmbox};
use crate::ctrd::TestNetns;

/// The official WASI testsuite (`$WASI_TESTSUITE`, else `../shared/wasi-testsuite` beside the
/// repository).
fn suite() -> PathBuf {
    let p = std::env::var_os("WASI_TESTSUITE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/wasi-testsuite")
        });
    assert!(p.is_dir(), "the WASI testsuite is not at {}", p.display());
    p
}

/// A WASI 0.3 test component by name, e.g. `cli-env`.
fn p3(name: &str) -> String {
    let p = suite().join(format!("tests/rust/testsuite/wasm32-wasip3/{name}.wasm"));
    assert!(p.exists(), "missing {}", p.display());
    p.to_string_lossy().into_owned()
}

/// A private copy of the suite's `fs-tests.dir` (tests write into it).
fn fs_tests_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = suite().join("tests/rust/testsuite/wasm32-wasip3/fs-tests.dir");
    let st = std::process::Command::new("cp")
        .arg("-r")
        .arg(format!("{}/.", src.display()))
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(st.success());
    dir
}

#[test]
fn wasi_0_3_commands_get_their_arguments_environment_and_exit_code() {
    let wb = Wasmbox::new();
    // The component checks its arguments and environment itself and panics if they differ.
    let env = p3("cli-env");
    wb.run(&["run", "-e", "foo=bar", "-e", "baz=42", &env, "a", "b", "42"])
        .code(0);
    let out = wb.run(&["run", "-e", "foo=bar", &env, "a", "b", "42"]);
    assert_ne!(out.code, 0, "{out:#?}");
    // It also checks that it has no working directory (`initial-cwd` is none, as no `-w` was
    // given): with one, it fails.
    let out = wb.run(&[
        "run", "-e", "foo=bar", "-e", "baz=42", "-w", "/", &env, "a", "b", "42",
    ]);
    assert!(out.stderr.contains("cwd.is_none()"), "{out:#?}");
    // `exit(1)` and `run` returning an error both give 1.
    wb.run(&["run", &p3("cli-exit")]).code(1);
    wb.run(&["run", &p3("run-with-err")]).code(1);
}

#[test]
fn wasi_0_3_sockets_reach_only_granted_addresses() {
    let wb = Wasmbox::new();
    let connect = p3("sockets-tcp-connect");
    // The test uses both 127.0.0.1 and ::1: a namespace of the test's own has both on loopback
    // whether or not the host has IPv6.
    let netns = TestNetns::new("wbt-p3");
    let in_netns = |args: &[&str]| {
        let mut c = wb.cmd();
        c.args(args);
        Out::from(netns.run(move || c.output().expect("spawn wasmbox")))
    };
    let out = in_netns(&["run", &connect]);
    assert_ne!(out.code, 0, "no grant, yet it connected: {out:#?}");
    let mut args = vec!["run"];
    for g in ["127.0.0.1:*", "[::1]:*"] {
        args.extend(["--allow-connect", g, "--listen", g]);
    }
    args.push(&connect);
    in_netns(&args).code(0);
}

#[test]
fn wasi_0_3_filesystem_sees_only_its_grant_and_read_only_means_read_only() {
    let wb = Wasmbox::new();
    let io = p3("filesystem-io");
    let dir = fs_tests_dir();
    let before = std::fs::read_dir(dir.path()).unwrap().count();
    let ro = format!("{}:/:ro", dir.path().display());
    let out = wb.run(&["run", "-v", &ro, &io]);
    assert_ne!(out.code, 0, "it wrote through a read-only grant: {out:#?}");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        before,
        "nothing was created"
    );
    let rw = format!("{}:/", dir.path().display());
    wb.run(&["run", "-v", &rw, &io]).code(0);
    // `..` does not leave the grant.
    wb.run(&["run", "-v", &rw, &p3("filesystem-dotdot")])
        .code(0);
    // No grant, no filesystem.
    let out = wb.run(&["run", &io]);
    assert_ne!(out.code, 0, "{out:#?}");
}

#[test]
fn a_malformed_http_grant_is_refused_naming_it() {
    let wb = Wasmbox::new();
    for (grant, why) in [
        ("http://example.com", "not a URL"),
        ("example.com:0", "1-65535"),
        ("ex*ample.com", "no other wildcards"),
    ] {
        let out = wb.run(&["run", "--allow-http", grant, &p3("cli-exit")]);
        let line = out.the_error_line();
        assert!(
            line.contains("--allow-http") && line.contains(grant) && line.contains(why),
            "{line}"
        );
    }
}

#[test]
fn a_wasi_0_3_open_of_a_fifo_in_a_grant_is_refused_not_waited_on() {
    // `filesystem-stat` opens `a.txt` of its directory for reading. Made a FIFO, that open would
    // wait for a writer for ever (it does under `wasmtime run`); wasmbox answers `access`.
    let wb = Wasmbox::new();
    let dir = fs_tests_dir();
    let fifo = dir.path().join("a.txt");
    std::fs::remove_file(&fifo).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let rw = format!("{}:/", dir.path().display());
    // `timeout` is only a backstop for a wasmbox that would wait.
    let out = crate::common::Out::from(
        std::process::Command::new("timeout")
            .arg("60")
            .arg(crate::common::wasmbox_bin())
            .args(["run", "-v", &rw, &p3("filesystem-stat")])
            .env("WASMBOX_CACHE_DIR", wb.cache.path().join("c"))
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap(),
    );
    assert_ne!(out.code, 124, "the open waited: {out:#?}");
    assert!(out.stderr.contains("ErrorCode::Access"), "{out:#?}");
}
