//! Attacks that once worked, performed again through `wasmbox run`, each asserting the safe
//! outcome and an untouched host.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Stdio;

use crate::common::{Wasmbox, bundle, free_port, guest};

/// The one `wasmbox: error:` line of `wasmbox ARGS` (which must exit 125).
pub(crate) fn error_line(wb: &Wasmbox, args: &[&str]) -> String {
    wb.run(args).the_error_line().to_string()
}

/// A bundle of the `files` guest with `config` merged into its spec: the directory, and its
/// path as an argument.
pub(crate) fn spec_bundle(config: serde_json::Value) -> (tempfile::TempDir, String) {
    let b = tempfile::tempdir().unwrap();
    bundle(b.path(), config);
    let dir = b.path().display().to_string();
    (b, dir)
}

pub(crate) fn files() -> String {
    guest("files/files.wasm").display().to_string()
}

/// The same program as `files`, as a WASI 0.2 component.
fn files_component() -> String {
    guest("files/files-component.wasm").display().to_string()
}

#[test]
fn device_nodes_in_a_grant_never_open() {
    let wb = Wasmbox::new();
    let t = tempfile::tempdir().unwrap();
    let vol = t.path().join("vol");
    std::fs::create_dir(&vol).unwrap();
    // /dev/null's numbers: reading it succeeds (empty) wherever device nodes work.
    let made = std::process::Command::new("mknod")
        .arg(vol.join("null"))
        .args(["c", "1", "3"])
        .status()
        .unwrap();
    assert!(made.success(), "mknod needs root, as the test command runs");
    std::fs::write(vol.join("plain"), "plain").unwrap();
    let v = format!("{}:/data", vol.display());
    let out = wb.run(&["run", "-v", &v, &files(), "cat", "/data/null"]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stdout.contains("error: "), "{out:#?}");
    let out = wb.run(&["run", "-v", &v, &files(), "openrw", "/data/null"]);
    assert_eq!(out.code, 1, "{out:#?}");
    wb.run(&["run", "-v", &v, &files(), "cat", "/data/plain"])
        .code(0);
    // The same node in a bundle's rootfs.
    let (b, dir) = spec_bundle(serde_json::json!({}));
    let made = std::process::Command::new("mknod")
        .arg(b.path().join("rootfs/kmsg"))
        .args(["c", "1", "3"])
        .status()
        .unwrap();
    assert!(made.success());
    let out = wb.run(&["run", "--bundle", &dir, "cat", "/kmsg"]);
    assert_eq!(out.code, 1, "{out:#?}");
}

#[test]
fn a_read_only_grant_inside_a_writable_one_stays_read_only() {
    let wb = Wasmbox::new();
    let t = tempfile::tempdir().unwrap();
    let app = t.path().join("app");
    std::fs::create_dir_all(app.join("config")).unwrap();
    std::fs::write(app.join("config/settings"), "original").unwrap();
    let rw = format!("{}:/app", app.display());
    let ro = format!("{}:/app/config:ro", app.join("config").display());
    for path in [
        "/app/./config/settings",
        "/app/config/settings",
        "/app/config/../config/settings",
    ] {
        let out = wb.run(&[
            "run",
            "-v",
            &rw,
            "-v",
            &ro,
            &files(),
            "write",
            path,
            "pwned",
        ]);
        assert_eq!(out.code, 1, "{path}: {out:#?}");
    }
    assert_eq!(
        std::fs::read_to_string(app.join("config/settings")).unwrap(),
        "original"
    );
    // The writable parent stays writable.
    wb.run(&[
        "run",
        "-v",
        &rw,
        "-v",
        &ro,
        &files(),
        "write",
        "/app/new",
        "x",
    ])
    .code(0);
    assert_eq!(std::fs::read_to_string(app.join("new")).unwrap(), "x");
}

#[test]
fn a_link_made_by_a_guest_is_never_a_grant_source() {
    let wb = Wasmbox::new();
    let t = tempfile::tempdir().unwrap();
    let vol = t.path().join("vol");
    std::fs::create_dir(&vol).unwrap();
    let v = format!("{}:/data", vol.display());
    // Run 1 plants the link.
    wb.run(&[
        "run",
        "-v",
        &v,
        &files(),
        "symlink",
        "../../../../..",
        "/data/public",
    ])
    .code(0);
    assert!(
        std::fs::symlink_metadata(vol.join("public"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    // Run 2 grants it: refused, naming the link.
    let src = vol.join("public");
    let v2 = format!("{}:/public:ro", src.display());
    let out = wb.run(&["run", "-v", &v2, &files(), "cat", "/public/etc/hostname"]);
    let line = out.the_error_line();
    assert!(
        line.contains("symbolic link") && line.contains(&src.display().to_string()),
        "{line}"
    );
    // A link higher up the source's path is refused the same way.
    symlink(&vol, t.path().join("alias")).unwrap();
    let v3 = format!("{}:/d", t.path().join("alias").display());
    let line = error_line(&wb, &["run", "-v", &v3, &files(), "ls", "/d"]);
    assert!(line.contains("symbolic link"), "{line}");
}

#[test]
fn kernel_filesystems_are_never_grant_sources() {
    let wb = Wasmbox::new();
    for src in ["/proc", "/sys", "/dev", "/proc/self"] {
        let v = format!("{src}:/k");
        let out = wb.run(&["run", "-v", &v, &files(), "ls", "/k"]);
        let line = out.the_error_line();
        assert!(
            line.contains("kernel filesystem") || line.contains("symbolic link"),
            "{src}: {line}"
        );
    }
}

#[test]
fn a_mount_at_the_root_is_refused() {
    let wb = Wasmbox::new();
    let host = tempfile::tempdir().unwrap();
    for dest in ["", "/", "/."] {
        let (_b, dir) = spec_bundle(serde_json::json!({"mounts": [
            {"destination": dest, "type": "bind", "source": host.path(), "options": ["rbind"]}
        ]}));
        let line = error_line(&wb, &["run", "--bundle", &dir, "ls", "/"]);
        assert!(line.contains("is the root"), "{dest:?}: {line}");
    }
}

#[test]
fn numbers_out_of_range_are_clear_errors() {
    let wb = Wasmbox::new();
    for t in ["99999999999999999999", "1e300", "inf", "nan", "0.0000001ms"] {
        let out = wb.run(&["run", "--timeout", t, &files(), "exit", "0"]);
        assert_eq!(out.code, 125, "{t}: {out:#?}");
        assert!(!out.stderr.contains("panicked"), "{t}: {out:#?}");
    }
    for t in ["1e300", "99999999999999999999", "-1"] {
        let (_b, dir) = spec_bundle(serde_json::json!({"annotations": {"wasmbox.timeout": t}}));
        let line = error_line(&wb, &["run", "--bundle", &dir]);
        assert!(line.contains("wasmbox.timeout"), "{t}: {line}");
    }
}

#[test]
fn mount_trees_are_removed_when_the_guest_ends() {
    let wb = Wasmbox::new();
    let scratch = tempfile::tempdir().unwrap();
    let vol = tempfile::tempdir().unwrap();
    let v = format!("{}:/data", vol.path().display());
    let out = wb
        .cmd()
        .env("WASMBOX_SCRATCH_DIR", scratch.path())
        .args(["run", "-v", &v, &files(), "write", "/data/f", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(std::fs::read_to_string(vol.path().join("f")).unwrap(), "x");
    let left: Vec<_> = std::fs::read_dir(scratch.path().join("private"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    // The private directory is wasmbox's own: no grant reaches it.
    let v = format!("{}:/s", scratch.path().display());
    let line = wb
        .cmd()
        .env("WASMBOX_SCRATCH_DIR", scratch.path())
        .args(["run", "-v", &v, &files(), "ls", "/s"])
        .output()
        .unwrap();
    let line = crate::common::Out::from(line);
    assert!(
        line.the_error_line().contains("private directory"),
        "{line:#?}"
    );
}

#[test]
fn a_guest_cannot_make_the_host_buffer_or_scan_for_it() {
    let wb = Wasmbox::new();
    let port = free_port();
    let grant = format!("127.0.0.1:{port}");
    let mut child = wb
        .cmd()
        .args(["run", "--memory", "64m", "--listen", &grant])
        .arg(guest("wat/flood.wat"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let conn = loop {
        // The guest's listener exists once wasmbox has bound it; its stdout says when it sent.
        match std::net::TcpStream::connect(&grant) {
            Ok(c) => break c,
            Err(_) if child.try_wait().unwrap().is_none() => {
                std::thread::yield_now();
            }
            Err(e) => panic!("wasmbox ended before listening: {e}"),
        }
    };
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "sent");
    assert_eq!(lines.next().unwrap().unwrap(), "poll-einval");
    let hwm_kib = crate::common::peak_rss_kib(child.id());
    // The guest's own memory is 25 MiB; 50 copies of its buffer would be 1.2 GiB.
    assert!(hwm_kib < 256 * 1024, "peak RSS {hwm_kib} KiB");
    // It sent at most one bounded chunk.
    let mut got = Vec::new();
    conn.set_read_timeout(Some(std::time::Duration::from_millis(200)))
        .unwrap();
    let _ = (&conn).take(1 << 20).read_to_end(&mut got);
    assert!(!got.is_empty() && got.len() <= 64 << 10, "{}", got.len());
    drop(conn);
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn open_handles_are_capped_per_guest() {
    let wb = Wasmbox::new();
    let vol = tempfile::tempdir().unwrap();
    std::fs::write(vol.path().join("f"), "x").unwrap();
    let v = format!("{}:/data", vol.path().display());
    // The guest gets an error at the limit (EMFILE; ENOMEM for a component, as WASI 0.2 has no
    // EMFILE) and goes on running: it prints its count, exits 0.
    let opened = |guest: &str, extra: &[&str]| -> u64 {
        let mut a = vec!["run", "-v", &v];
        a.extend_from_slice(extra);
        a.extend([guest, "openmany", "/data/f"]);
        let out = wb.run(&a);
        out.code(0);
        out.stdout
            .trim()
            .strip_prefix("opened ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{guest}: {out:#?}"))
    };
    let n = opened(&files(), &[]);
    assert!((900..1024).contains(&n), "default limit 1024: opened {n}");
    // (The preview 1 adapter inside the component holds 128 descriptors of its own, so the
    // component is tried below that.)
    for guest in [files(), files_component()] {
        let n = opened(&guest, &["--ulimit", "nofile=100"]);
        assert!(
            (50..100).contains(&n),
            "{guest}: --ulimit nofile=100: opened {n}"
        );
    }
    // Sockets too: a component making sockets in a loop gets `new-socket-limit`.
    let probe = guest("net-probe/net-probe.wasm").display().to_string();
    let out = wb.run(&[
        "run",
        "--ulimit",
        "nofile=100",
        "--allow-connect",
        "127.0.0.1:9",
        &probe,
        "sockets",
    ]);
    out.code(1);
    let made: u64 = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("made "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{out:#?}"));
    assert!((50..=100).contains(&made), "made {made}: {out:#?}");
    assert!(out.stdout.contains("error: new-socket-limit"), "{out:#?}");
    let out = wb.run(&["run", "--ulimit", "nofile=lots", &files(), "exit", "0"]);
    assert_eq!(out.code, 125, "{out:#?}");
    assert!(out.stderr.contains("expected nofile=N"), "{out:#?}");
}

#[test]
fn files_a_guest_creates_follow_the_umask_not_an_inherited_zero() {
    use std::os::unix::fs::PermissionsExt;
    let wb = Wasmbox::new();
    let vol = tempfile::tempdir().unwrap();
    let v = format!("{}:/data", vol.path().display());
    let f = files();
    let bin = crate::common::wasmbox_bin();
    let cmd = wb.cmd();
    // Started with umask 000, as a careless service manager would.
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg("umask 000; exec \"$0\" \"$@\"")
        .arg(&bin)
        .args(["run", "-v", &v, &f, "write", "/data/made", "x"])
        .envs(cmd.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let mode = std::fs::metadata(vol.path().join("made"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o644);
    // A bundle's umask applies.
    let (b, dir) =
        spec_bundle(serde_json::json!({"process": {"user": {"uid": 0, "gid": 0, "umask": 63}}}));
    wb.run(&["run", "--bundle", &dir, "write", "/made", "x"])
        .code(0);
    let mode = std::fs::metadata(b.path().join("rootfs/made"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "umask 077");
}

/// Copies the example hello layout to `dir`, wrapping its manifest in `levels` indexes, each
/// naming the one below it `fanout` times.
fn nested_layout(dir: &Path, levels: usize, fanout: usize) {
    let src = crate::common::examples().join("images/hello");
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    for e in std::fs::read_dir(src.join("blobs/sha256")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), blobs.join(e.file_name())).unwrap();
    }
    std::fs::copy(src.join("oci-layout"), dir.join("oci-layout")).unwrap();
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(src.join("index.json")).unwrap()).unwrap();
    let mut desc = index["manifests"][0].clone();
    desc.as_object_mut().unwrap().remove("annotations");
    for _ in 0..levels {
        let doc = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": vec![desc.clone(); fanout],
        }))
        .unwrap();
        use sha2::Digest as _;
        let hex = hex::encode(sha2::Sha256::digest(&doc));
        std::fs::write(blobs.join(&hex), &doc).unwrap();
        desc = serde_json::json!({
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": format!("sha256:{hex}"),
            "size": doc.len(),
        });
    }
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [desc]})).unwrap(),
    )
    .unwrap();
}

#[test]
fn image_graphs_are_walked_once_per_blob_within_caps() {
    let wb = Wasmbox::new();
    let store = tempfile::tempdir().unwrap();
    let s = store.path().display().to_string();
    // 13 levels, each naming the next 32 times: 32^13 paths, 14 blobs. `timeout` is only a
    // backstop so a regression fails instead of hanging the suite.
    let deep = tempfile::tempdir().unwrap();
    nested_layout(deep.path(), 13, 32);
    let out = crate::common::Out::from(
        std::process::Command::new("timeout")
            .arg("120")
            .arg(crate::common::wasmbox_bin())
            .args(["--store", &s, "load", "-t", "localhost/deep:1", "-i"])
            .arg(deep.path())
            .output()
            .unwrap(),
    );
    let line = out.the_error_line();
    assert!(line.contains("nested more than 8 levels"), "{line}");
    // Within the caps the same shape loads, each blob stored once.
    let ok = tempfile::tempdir().unwrap();
    nested_layout(ok.path(), 6, 32);
    let dir = ok.path().display().to_string();
    wb.run(&["--store", &s, "load", "-t", "localhost/wide:1", "-i", &dir])
        .code(0);
}

#[test]
fn private_directories_left_by_a_killed_run_are_swept() {
    let wb = Wasmbox::new();
    let scratch = tempfile::tempdir().unwrap();
    // pid_max is at most 2^22: this pid names no process.
    let stale = scratch.path().join("private/wasmbox-tree-4194305-abc");
    std::fs::create_dir_all(stale.join("x")).unwrap();
    // A live process's directory (this test's) stays.
    let live = scratch
        .path()
        .join(format!("private/wasmbox-tmpfs-{}-abc", std::process::id()));
    std::fs::create_dir(&live).unwrap();
    let out = wb
        .cmd()
        .env("WASMBOX_SCRATCH_DIR", scratch.path())
        .args(["run", &files(), "exit", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(!stale.exists(), "the stale directory is removed");
    assert!(live.exists(), "a live process's directory is kept");
}

#[test]
fn without_root_the_wall_stands_in_a_user_namespace() {
    // The same attacks as a user with no privileges: wasmbox makes a user namespace of its own.
    let t = tempfile::tempdir().unwrap();
    let top = t.path();
    let vol = top.join("vol");
    std::fs::create_dir_all(vol.join("config")).unwrap();
    std::fs::write(vol.join("config/settings"), "original").unwrap();
    let made = std::process::Command::new("mknod")
        .arg(vol.join("null"))
        .args(["c", "1", "3"])
        .status()
        .unwrap();
    assert!(made.success());
    let guest_copy = top.join("files.wasm");
    std::fs::copy(guest("files/files.wasm"), &guest_copy).unwrap();
    let chown = std::process::Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(top)
        .status()
        .unwrap();
    assert!(chown.success());
    let as_nobody = |args: &[&str]| {
        let out = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(crate::common::wasmbox_bin())
            .args(args)
            .env("HOME", top)
            .env("WASMBOX_CACHE_DIR", top.join("cache"))
            .env("WASMBOX_STORE", top.join("store"))
            .env_remove("XDG_CACHE_HOME")
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("WASMBOX_SCRATCH_DIR")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        crate::common::Out::from(out)
    };
    let f = guest_copy.display().to_string();
    let rw = format!("{}:/app", vol.display());
    let ro = format!("{}:/app/config:ro", vol.join("config").display());
    let out = as_nobody(&["run", "-v", &rw, &f, "cat", "/app/null"]);
    assert_eq!(out.code, 1, "{out:#?}");
    let out = as_nobody(&[
        "run",
        "-v",
        &rw,
        "-v",
        &ro,
        &f,
        "write",
        "/app/./config/settings",
        "x",
    ]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert_eq!(
        std::fs::read_to_string(vol.join("config/settings")).unwrap(),
        "original"
    );
    as_nobody(&["run", "-v", &rw, "-v", &ro, &f, "write", "/app/new", "x"]).code(0);
    // Files the guest makes are the user's own.
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(vol.join("new")).unwrap().uid(), 65534);
    // Its home holds the cache and the store: not grantable.
    let home = format!("{}:/home", top.display());
    let line = as_nobody(&["run", "-v", &home, &f, "ls", "/home"])
        .the_error_line()
        .to_string();
    assert!(line.contains("contains wasmbox's"), "{line}");
}

#[test]
fn a_recursive_grant_never_brings_a_kernel_filesystem_along() {
    let wb = Wasmbox::new();
    let t = tempfile::tempdir().unwrap();
    let vol = t.path().join("vol");
    std::fs::create_dir_all(vol.join("p")).unwrap();
    // A chroot-like source: procfs mounted below it (on the host, removed at the end).
    let st = std::process::Command::new("mount")
        .args(["-t", "proc", "proc"])
        .arg(vol.join("p"))
        .status()
        .unwrap();
    assert!(
        st.success(),
        "mounting proc needs root, as the test command runs"
    );
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(vol.join("p"));
    let v = format!("{}:/d", vol.display());
    let line = error_line(&wb, &["run", "-v", &v, &files(), "ls", "/d/p"]);
    assert!(line.contains("kernel filesystem (proc)"), "{line}");
    // A plain `bind` brings only the directory: the guest sees the empty mountpoint.
    let (_b, dir) = spec_bundle(serde_json::json!({"mounts": [
        {"destination": "/d", "type": "bind", "source": vol, "options": ["bind", "ro"]}
    ]}));
    let out = wb.run(&["run", "--bundle", &dir, "ls", "/d/p"]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(out.stdout.trim(), "", "{out:#?}");
}

#[test]
fn a_mount_inside_another_always_shows_whatever_the_spec_order() {
    let wb = Wasmbox::new();
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("in.txt"), "from the host").unwrap();
    let b = tempfile::tempdir().unwrap();
    // The bind below the tmpfs comes first in the spec.
    bundle(
        b.path(),
        serde_json::json!({"mounts": [
            {"destination": "/data/sub", "type": "bind", "source": host.path(), "options": ["rbind", "ro"]},
            {"destination": "/data", "type": "tmpfs", "source": "tmpfs"}
        ]}),
    );
    let dir = b.path().display().to_string();
    let out = wb.run(&["run", "--bundle", &dir, "cat", "/data/sub/in.txt"]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(out.stdout, "from the host");
    let out = wb.run(&["run", "--bundle", &dir, "write", "/data/sub/in.txt", "x"]);
    assert_eq!(out.code, 1, "{out:#?}");
    wb.run(&["run", "--bundle", &dir, "write", "/data/scratch.txt", "x"])
        .code(0);
}

#[test]
fn a_fifo_or_socket_file_in_a_grant_is_refused_not_waited_on() {
    let wb = Wasmbox::new();
    let vol = tempfile::tempdir().unwrap();
    crate::common::mkfifo(&vol.path().join("fifo"));
    let _sock = std::os::unix::net::UnixListener::bind(vol.path().join("sock")).unwrap();
    symlink("fifo", vol.path().join("link")).unwrap();
    let v = format!("{}:/data", vol.path().display());
    for guest in [files(), files_component()] {
        for path in ["/data/fifo", "/data/sock", "/data/link", "/data/./fifo"] {
            // Opening the FIFO would wait for a writer for ever.
            let out = wb.run_bounded(&["run", "-v", &v, &guest, "cat", path]);
            assert_eq!(out.code, 1, "{guest} {path}: {out:#?}");
            assert!(
                out.stdout.contains("error: Permission denied"),
                "{guest} {path}: {out:#?}"
            );
        }
    }
}

#[test]
fn a_fifo_is_refused_beneath_a_directory_the_guest_opened_itself() {
    let wb = Wasmbox::new();
    let vol = tempfile::tempdir().unwrap();
    let sub = vol.path().join("sub");
    std::fs::create_dir_all(sub.join("inner")).unwrap();
    std::fs::write(sub.join("ok.txt"), "ok").unwrap();
    std::fs::write(sub.join("f2"), "a plain file").unwrap();
    crate::common::mkfifo(&sub.join("fifo"));
    crate::common::mkfifo(&sub.join("inner/f2"));
    let v = format!("{}:/data", vol.path().display());
    let opendir = guest("wat/opendir.wat").display().to_string();
    let out = wb.run_bounded(&["run", "-v", &v, &opendir]);
    assert_eq!(out.code, 0, "{out:#?}");
    // Refused by the look-up beneath the directory each number names, before any open: no open
    // waited on a FIFO to be interrupted.
    assert!(!out.stderr.contains("interrupted"), "{out:#?}");
    let steps: Vec<(&str, &str)> = out
        .stdout
        .lines()
        .map(|l| l.rsplit_once(' ').unwrap())
        .map(|(name, errno)| (name.trim(), errno))
        .collect();
    // 2 is EACCES: the FIFOs are refused, the regular file opens, and after the renumbering the
    // check follows the directory the number now names.
    assert_eq!(
        steps,
        [
            ("sub/fifo", "2"),
            ("sub/ok.txt", "0"),
            ("inner/f2", "2"),
            ("renumber", "0"),
            ("renumbered/f2", "2"),
        ],
        "{out:#?}"
    );
}

/// A host process (or a native container sharing the volume) swaps a FIFO in and out under a
/// guest that opens the same name again and again. Whenever the swap lands between wasmbox's
/// look-up and the open, the open that then waits is released and refused; the guest never holds
/// a FIFO and never hangs.
#[test]
fn a_fifo_swapped_in_under_an_open_is_released_and_refused() {
    let wb = Wasmbox::new();
    let vol = tempfile::tempdir().unwrap();
    let x = vol.path().join("x");
    std::fs::write(&x, "file").unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swapper = {
        let (dir, stop) = (vol.path().to_path_buf(), stop.clone());
        std::thread::spawn(move || {
            let mut swaps = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::fs::write(dir.join("file.tmp"), "file").unwrap();
                std::fs::rename(dir.join("file.tmp"), dir.join("x")).unwrap();
                crate::common::mkfifo(&dir.join("fifo.tmp"));
                std::fs::rename(dir.join("fifo.tmp"), dir.join("x")).unwrap();
                swaps += 1;
            }
            swaps
        })
    };
    let v = format!("{}:/data", vol.path().display());
    let n = 300;
    for guest in [files(), files_component()] {
        // Rounds until a swap has landed under an open at least once (the interrupt or the
        // check after the open spoke); each round must end well whatever happened.
        let mut caught = false;
        for _ in 0..30 {
            let out =
                wb.run_bounded(&["run", "-v", &v, &guest, "reopen", "/data/x", &n.to_string()]);
            assert_eq!(out.code, 0, "{guest}: {out:#?}");
            let counts: Vec<u64> = out
                .stdout
                .split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect();
            assert_eq!(counts.len(), 2, "{guest}: {out:#?}");
            assert_eq!(counts[0] + counts[1], n, "{guest}: {out:#?}");
            if out.stderr.contains("interrupted opens waiting on a FIFO")
                || out
                    .stderr
                    .contains("a FIFO or socket was opened; closed and refused")
            {
                caught = true;
                break;
            }
        }
        assert!(caught, "{guest}: no swap ever landed under an open");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(swapper.join().unwrap() > 0);
}
