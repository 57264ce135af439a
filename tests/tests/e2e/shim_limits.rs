//! What one guest can do to its pod's shim and host under containerd: device nodes, descriptors,
//! buffers, the compiled-code cache, compiles past their deadline or memory cap.

use crate::ctrd::{Containerd, DEVICES, FILES, HELLO, Images, WAT};

use crate::shim::{wait_until, with_images};

#[test]
fn device_nodes_never_open_under_containerd() {
    let c = with_images(&[DEVICES, FILES]);
    // containerd's snapshotter creates the node from the layer; the guest must not open it.
    let out = c.run(&[], DEVICES, "dev1", &["/app.wasm", "cat", "/null"]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stdout.contains("error: "), "{out:#?}");
    let out = c.run(&[], DEVICES, "dev2", &["/app.wasm", "openrw", "/null"]);
    assert_eq!(out.code, 1, "{out:#?}");
    // A device node in a bind mount, and a read-only mount nested in a writable one.
    let host = tempfile::tempdir().unwrap();
    std::fs::create_dir(host.path().join("config")).unwrap();
    std::fs::write(host.path().join("config/settings"), "original").unwrap();
    let made = std::process::Command::new("mknod")
        .arg(host.path().join("null"))
        .args(["c", "1", "3"])
        .status()
        .unwrap();
    assert!(made.success());
    let rw = format!(
        "type=bind,src={},dst=/app,options=rbind:rw",
        host.path().display()
    );
    let ro = format!(
        "type=bind,src={},dst=/app/config,options=rbind:ro",
        host.path().join("config").display()
    );
    let out = c.run(
        &["--mount", &rw],
        FILES,
        "dev3",
        &["/app.wasm", "cat", "/app/null"],
    );
    assert_eq!(out.code, 1, "{out:#?}");
    let out = c.run(
        &["--mount", &rw, "--mount", &ro],
        FILES,
        "nested",
        &["/app.wasm", "write", "/app/./config/settings", "pwned"],
    );
    assert_eq!(out.code, 1, "{out:#?}");
    assert_eq!(
        std::fs::read_to_string(host.path().join("config/settings")).unwrap(),
        "original"
    );
    let out = c.run(
        &["--mount", &rw, "--mount", &ro],
        FILES,
        "nested-rw",
        &["/app.wasm", "write", "/app/new", "x"],
    );
    assert_eq!(out.code, 0, "{out:#?}");
}

#[test]
fn one_guest_cannot_take_its_pods_descriptors() {
    let c = with_images(&[FILES, HELLO]);
    let group = ["--annotation", "io.containerd.runc.v2.group=fds"];
    let log = c.run_detached(
        &group,
        FILES,
        "hog",
        &["/app.wasm", "openmany", "/app.wasm", "600000"],
    );
    wait_until("the hog has opened all it may", || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("opened "))
    });
    let text = std::fs::read_to_string(&log).unwrap();
    let n: u64 = text
        .trim()
        .strip_prefix("opened ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    // ctr's spec gives RLIMIT_NOFILE 1024: the guest's handles stop there, far below the shim's.
    assert!(n < 1024, "opened {n}");
    let out = c.run(&group, HELLO, "neighbour", &[]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(out.stdout.contains("Hello"), "{out:#?}");
    assert_eq!(c.ctr(&["task", "kill", "-s", "SIGKILL", "hog"]).code, 0);
    c.wait_status("hog", "STOPPED");
    assert_eq!(c.ctr(&["task", "delete", "hog"]).code, 0);
}

#[test]
fn no_mount_reaches_the_shims_cache() {
    let c = with_images(&[FILES]);
    // The shim's compiled-code cache is `DIR/cache` (WASMBOX_CACHE_DIR in containerd's
    // environment); a volume above it, as a hostPath on /var would be, is refused at create.
    let above = format!(
        "type=bind,src={},dst=/host,options=rbind:rw",
        c.dir.path().display()
    );
    let out = c.run(
        &["--mount", &above],
        FILES,
        "above",
        &["/app.wasm", "ls", "/host"],
    );
    assert_ne!(out.code, 0, "{out:#?}");
    assert!(out.stderr.contains("compiled-code cache"), "{out:#?}");
    assert!(c.status("above").is_none());
    // The cache was not touched by a guest, and a well-behaved container still runs.
    let out = c.run(&[], FILES, "fine", &["/app.wasm", "exit", "0"]);
    assert_eq!(out.code, 0, "{out:#?}");
}

#[test]
fn one_guest_cannot_make_its_pods_shim_buffer_or_scan() {
    // The flood guest in a pod-style group: 50 iovecs over one 24 MiB buffer, then poll_oneoff
    // with 2^32-1 subscriptions. The shared shim stays small and its neighbour runs.
    let c = with_images(&[WAT, HELLO]);
    let port = crate::common::free_port();
    let grant = format!("wasmbox.net.listen=127.0.0.1:{port}");
    let group = "io.containerd.runc.v2.group=flood";
    let log = c.run_detached(
        &[
            "--net-host",
            "--annotation",
            &grant,
            "--annotation",
            group,
            "--memory-limit",
            "67108864",
        ],
        WAT,
        "flood",
        &["/flood.wasm"],
    );
    let mut conn = None;
    wait_until("the flood guest listens", || {
        conn = std::net::TcpStream::connect(("127.0.0.1", port)).ok();
        conn.is_some()
    });
    wait_until("the flood guest has sent and polled", || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.lines().count() >= 2)
    });
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text, "sent\npoll-einval\n");
    let shims = c.shims();
    assert_eq!(shims.len(), 1);
    let hwm_kib = crate::common::peak_rss_kib(shims[0]);
    assert!(hwm_kib < 256 * 1024, "shim peak RSS {hwm_kib} KiB");
    let out = c.run(&["--net-host", "--annotation", group], HELLO, "beside", &[]);
    assert_eq!(out.code, 0, "{out:#?}");
    drop(conn);
    c.wait_status("flood", "STOPPED");
    assert_eq!(c.ctr(&["task", "delete", "flood"]).code, 0);
}

/// Imports into `c` a compat image of a module that takes far longer than a second, and about
/// 1 GiB, to compile; returns its name.
fn big_image(c: &Containerd, t: &tempfile::TempDir) -> &'static str {
    let big = t.path().join("big.wasm");
    std::fs::write(&big, crate::compiled::many_functions(200_000)).unwrap();
    let wb = crate::common::Wasmbox::new();
    let store = t.path().join("store").display().to_string();
    let name = "localhost/wasmbox-test/big:ctr";
    let archive = t.path().join("big.tar").display().to_string();
    wb.run(&[
        "--store",
        &store,
        "build",
        "--format",
        "compat",
        &big.display().to_string(),
        "-t",
        name,
    ])
    .code(0);
    wb.run(&["--store", &store, "save", "-o", &archive, name])
        .code(0);
    c.import(std::path::Path::new(&archive));
    name
}

#[test]
fn the_deadline_covers_compiling_in_the_shim() {
    let c = Containerd::start();
    let t = tempfile::tempdir().unwrap();
    let name = big_image(&c, &t);
    let out = c.run(&["--annotation", "wasmbox.timeout=1"], name, "big", &[]);
    assert_ne!(out.code, 0, "{out:#?}");
    assert!(out.stderr.contains("while loading"), "{out:#?}");
    assert!(c.status("big").is_none());
}

/// Compiling runs in a helper process whose memory is capped (`WASMBOX_COMPILE_MEMORY` in the
/// shim's environment): a module that needs more fails its own create, with a message that says
/// so, while its pod's shim and the neighbour running in it are untouched.
#[test]
fn a_compile_beyond_its_memory_cap_fails_alone() {
    let c = Containerd::start_with_env(&[("WASMBOX_COMPILE_MEMORY", "256m")]);
    let t = tempfile::tempdir().unwrap();
    let name = big_image(&c, &t);
    c.import(&Images::get().archive(FILES));
    let group = ["--annotation", "io.containerd.runc.v2.group=compile"];
    let log = c.run_detached(&group, FILES, "neighbour", &["/app.wasm", "loop"]);
    wait_until("the neighbour runs", || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("looping"))
    });
    let shim = c.pid("neighbour");
    let out = c.run(&group, name, "big", &[]);
    assert_ne!(out.code, 0, "{out:#?}");
    assert!(
        out.stderr
            .contains("the compiler needed more than its 256 MiB"),
        "{out:#?}"
    );
    assert!(c.status("big").is_none());
    assert_eq!(c.status("neighbour").as_deref(), Some("RUNNING"));
    // The compile's gigabyte was never the shim's.
    let hwm_kib = crate::common::peak_rss_kib(shim);
    assert!(hwm_kib < 200 * 1024, "the shim's peak RSS {hwm_kib} KiB");
    assert_eq!(
        c.ctr(&["task", "kill", "-s", "SIGKILL", "neighbour"]).code,
        0
    );
    c.wait_status("neighbour", "STOPPED");
    assert_eq!(c.ctr(&["task", "delete", "neighbour"]).code, 0);
}
