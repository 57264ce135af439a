//! Filesystem capabilities: what a guest is granted, and attempts to get out of it.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use crate::common::{Out, Wasmbox, bundle, guest};

/// A host layout: `secret.txt` outside the grant, `vol/` granted, `vol/inside.txt` inside.
struct Host {
    dir: tempfile::TempDir,
}

const SECRET: &str = "host secret, never to be read by a guest";

impl Host {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret.txt"), SECRET).unwrap();
        std::fs::create_dir(dir.path().join("vol")).unwrap();
        std::fs::write(dir.path().join("vol/inside.txt"), "inside").unwrap();
        Host { dir }
    }
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    fn vol(&self) -> String {
        self.path("vol").display().to_string()
    }
    fn assert_secret_untouched(&self) {
        assert_eq!(
            std::fs::read_to_string(self.path("secret.txt")).unwrap(),
            SECRET
        );
        let names: Vec<String> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        let mut names = names;
        names.sort();
        assert_eq!(
            names,
            ["secret.txt", "vol"],
            "nothing created outside the grant"
        );
    }
}

fn files(wb: &Wasmbox, vol: &str, args: &[&str]) -> Out {
    let f = guest("files/files.wasm");
    let mut a = vec!["run", "-v", vol, f.to_str().unwrap()];
    a.extend_from_slice(args);
    wb.run(&a)
}

#[track_caller]
fn denied(out: &Out) {
    assert_eq!(out.code, 1, "operation should fail: {out:#?}");
    assert!(out.stdout.starts_with("error: "), "{out:#?}");
    assert!(!out.stdout.contains(SECRET), "secret leaked: {out:#?}");
}

#[test]
fn granted_directory_is_readable_and_writable() {
    let h = Host::new();
    let wb = Wasmbox::new();
    let vol = format!("{}:/data", h.vol());
    let out = files(&wb, &vol, &["cat", "/data/inside.txt"]);
    out.code(0);
    assert_eq!(out.stdout, "inside");
    files(&wb, &vol, &["write", "/data/new.txt", "made by guest"]).code(0);
    assert_eq!(
        std::fs::read_to_string(h.path("vol/new.txt")).unwrap(),
        "made by guest"
    );
    files(&wb, &vol, &["mkdir", "/data/sub"]).code(0);
    assert!(h.path("vol/sub").is_dir());
    let out = files(&wb, &vol, &["ls", "/data"]);
    assert_eq!(out.stdout, "inside.txt\nnew.txt\nsub\n");
    h.assert_secret_untouched();
}

#[test]
fn nothing_else_of_the_host_is_reachable() {
    let h = Host::new();
    let wb = Wasmbox::new();
    let vol = format!("{}:/data", h.vol());
    for path in ["/etc/passwd", "/", "/proc/self/environ", "/tmp"] {
        denied(&files(&wb, &vol, &["cat", path]));
    }
    denied(&files(
        &wb,
        &vol,
        &["cat", &h.path("secret.txt").display().to_string()],
    ));
    denied(&files(&wb, &vol, &["ls", "/"]));
    h.assert_secret_untouched();
}

#[test]
fn dotdot_cannot_climb_out() {
    let h = Host::new();
    let wb = Wasmbox::new();
    let vol = format!("{}:/data", h.vol());
    for p in [
        "/data/../secret.txt",
        "/data/../../secret.txt",
        "/data/sub/../../secret.txt",
        "../secret.txt",
    ] {
        denied(&files(&wb, &vol, &["cat", p]));
        denied(&files(&wb, &vol, &["write", p, "pwned"]));
    }
    denied(&files(&wb, &vol, &["mkdir", "/data/../evil"]));
    denied(&files(
        &wb,
        &vol,
        &["mv", "/data/inside.txt", "/data/../moved"],
    ));
    denied(&files(
        &wb,
        &vol,
        &["link", "/data/../secret.txt", "/data/hard"],
    ));
    assert!(!h.path("vol/hard").exists());
    h.assert_secret_untouched();
}

#[test]
fn symlinks_inside_a_grant_cannot_point_out() {
    let h = Host::new();
    symlink("../secret.txt", h.path("vol/rel-escape")).unwrap();
    symlink(h.path("secret.txt"), h.path("vol/abs-escape")).unwrap();
    symlink("..", h.path("vol/up")).unwrap();
    let wb = Wasmbox::new();
    let vol = format!("{}:/data", h.vol());
    for p in [
        "/data/rel-escape",
        "/data/abs-escape",
        "/data/up/secret.txt",
    ] {
        denied(&files(&wb, &vol, &["cat", p]));
        denied(&files(&wb, &vol, &["write", p, "pwned"]));
        denied(&files(&wb, &vol, &["truncate", p, "0"]));
    }
    // Trailing slashes and dots do not change that.
    for p in [
        "/data/rel-escape/",
        "/data/up/",
        "/data/up/.",
        "/data/abs-escape/.",
    ] {
        denied(&files(&wb, &vol, &["cat", p]));
        denied(&files(&wb, &vol, &["ls", p]));
    }
    // A link the guest makes itself is no better.
    let _ = files(&wb, &vol, &["symlink", "../secret.txt", "/data/made"]);
    denied(&files(&wb, &vol, &["cat", "/data/made"]));
    denied(&files(&wb, &vol, &["write", "/data/made", "pwned"]));
    let _ = files(
        &wb,
        &vol,
        &[
            "symlink",
            &h.path("secret.txt").display().to_string(),
            "/data/made-abs",
        ],
    );
    denied(&files(&wb, &vol, &["cat", "/data/made-abs"]));
    h.assert_secret_untouched();
}

#[test]
fn rootfs_absolute_symlink_does_not_reach_the_host() {
    let h = Host::new();
    let dir = tempfile::tempdir().unwrap();
    let b = bundle(dir.path(), serde_json::json!({}));
    let rootfs = b.join("rootfs");
    std::fs::create_dir(rootfs.join("etc")).unwrap();
    symlink("/etc/shadow", rootfs.join("etc/shadow-link")).unwrap();
    symlink(h.path("secret.txt"), rootfs.join("secret-link")).unwrap();
    let wb = Wasmbox::new();
    let bundle_arg = b.display().to_string();
    // Each names the rootfs's file, as in a chroot: not there to read.
    for p in ["/etc/shadow-link", "/secret-link"] {
        let out = wb.run(&["run", "--bundle", &bundle_arg, "cat", p]);
        denied(&out);
        assert!(!out.stdout.contains("root:"), "{out:#?}");
    }
    // A write makes the rootfs's file where its directory is there, and fails where it is not.
    let out = wb.run(&["run", "--bundle", &bundle_arg, "write", "/secret-link", "x"]);
    denied(&out);
    let shadow = std::fs::read_to_string("/etc/shadow").ok();
    let out = wb.run(&[
        "run",
        "--bundle",
        &bundle_arg,
        "write",
        "/etc/shadow-link",
        "pwned",
    ]);
    out.code(0);
    assert_eq!(
        std::fs::read_to_string(rootfs.join("etc/shadow")).unwrap(),
        "pwned"
    );
    assert_eq!(std::fs::read_to_string("/etc/shadow").ok(), shadow);
    h.assert_secret_untouched();
    // The rootfs itself is granted at `/`.
    let out = wb.run(&["run", "--bundle", &bundle_arg, "ls", "/"]);
    out.code(0);
    assert_eq!(out.stdout, "etc\nfiles.wasm\nsecret-link\n");
}

#[test]
fn an_entrypoint_reached_through_absolute_links_is_found_inside_the_rootfs() {
    // As distributions lay out their binaries: `/usr/bin/app -> /etc/alternatives/app ->
    // /opt/app/files.wasm`; and a link that climbs with `..` from the root, which stops there.
    let dir = tempfile::tempdir().unwrap();
    let b = bundle(dir.path(), serde_json::json!({}));
    let rootfs = b.join("rootfs");
    for d in ["usr/bin", "etc/alternatives", "opt/app"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    std::fs::rename(rootfs.join("files.wasm"), rootfs.join("opt/app/files.wasm")).unwrap();
    symlink("/opt/app/files.wasm", rootfs.join("etc/alternatives/app")).unwrap();
    symlink("/etc/alternatives/app", rootfs.join("usr/bin/app")).unwrap();
    symlink(
        "/../../../../../opt/app/files.wasm",
        rootfs.join("usr/bin/climb"),
    )
    .unwrap();
    // A link to where the host has a file names the rootfs's, which is missing.
    symlink("/bin/sh", rootfs.join("usr/bin/host")).unwrap();
    let wb = Wasmbox::new();
    let bundle_arg = b.display().to_string();
    for (arg0, path) in [
        ("/usr/bin/app", "/usr/bin/app"),
        ("/usr/bin/climb", "/usr/bin/climb"),
        ("app", "/usr/bin/app"),
    ] {
        let config = serde_json::json!({"process": {
            "args": [arg0, "args", "x"],
            "env": ["PATH=/usr/local/bin:/usr/bin"],
        }});
        bundle(dir.path(), config);
        let out = wb.run(&["run", "--bundle", &bundle_arg]);
        assert_eq!(out.code, 0, "{arg0}: {out:#?}");
        assert_eq!(out.stdout, format!("{arg0}\nargs\nx\n"), "{arg0} ({path})");
    }
    bundle(
        dir.path(),
        serde_json::json!({"process": {"args": ["/usr/bin/host"]}}),
    );
    let out = wb.run(&["run", "--bundle", &bundle_arg]);
    assert_ne!(out.code, 0, "{out:#?}");
    assert!(out.stderr.contains("does not exist"), "{out:#?}");
}

fn mtime(p: &Path) -> std::time::SystemTime {
    std::fs::symlink_metadata(p).unwrap().modified().unwrap()
}

#[test]
fn read_only_grant_refuses_every_write() {
    let h = Host::new();
    std::fs::create_dir(h.path("vol/dir")).unwrap();
    let before = mtime(&h.path("vol/inside.txt"));
    let wb = Wasmbox::new();
    let vol = format!("{}:/data:ro", h.vol());
    let out = files(&wb, &vol, &["cat", "/data/inside.txt"]);
    out.code(0);
    assert_eq!(out.stdout, "inside");
    let attempts: &[&[&str]] = &[
        &["write", "/data/inside.txt", "x"],
        &["write", "/data/new.txt", "x"],
        &["append", "/data/inside.txt", "x"],
        &["truncate", "/data/inside.txt", "0"],
        &["openrw", "/data/inside.txt"],
        &["rm", "/data/inside.txt"],
        &["mv", "/data/inside.txt", "/data/renamed.txt"],
        &["mkdir", "/data/newdir"],
        &["rmdir", "/data/dir"],
        &["touch", "/data/inside.txt"],
        &["touch", "/data/dir"],
        &["symlink", "inside.txt", "/data/link"],
        &["link", "/data/inside.txt", "/data/hard"],
    ];
    for a in attempts {
        let out = files(&wb, &vol, a);
        assert_eq!(
            out.code, 1,
            "{a:?} should fail on a read-only grant: {out:#?}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(h.path("vol/inside.txt")).unwrap(),
        "inside"
    );
    assert_eq!(mtime(&h.path("vol/inside.txt")), before);
    let mut names: Vec<String> = std::fs::read_dir(h.path("vol"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["dir", "inside.txt"]);
    h.assert_secret_untouched();
}

#[test]
fn read_only_rootfs_and_read_only_flag() {
    let dir = tempfile::tempdir().unwrap();
    let b = bundle(dir.path(), serde_json::json!({"root": {"readonly": true}}));
    let wb = Wasmbox::new();
    let arg = b.display().to_string();
    let out = wb.run(&["run", "--bundle", &arg, "write", "/x", "y"]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(!b.join("rootfs/x").exists());
    let dir2 = tempfile::tempdir().unwrap();
    let b2 = bundle(dir2.path(), serde_json::json!({}));
    let arg2 = b2.display().to_string();
    wb.run(&["run", "--bundle", &arg2, "write", "/x", "y"])
        .code(0);
    assert!(b2.join("rootfs/x").exists());
    let out = wb.run(&["run", "--read-only", "--bundle", &arg2, "write", "/z", "y"]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(!b2.join("rootfs/z").exists());
}

#[test]
fn spec_mounts_bind_ro_tmpfs_and_kernel_mounts() {
    let h = Host::new();
    let dir = tempfile::tempdir().unwrap();
    let b = bundle(
        dir.path(),
        serde_json::json!({"mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs"},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"},
            {"destination": "/data", "type": "bind", "source": h.path("vol"), "options": ["rbind", "ro"]},
            {"destination": "/rw", "type": "bind", "source": h.path("vol"), "options": ["rbind", "rw"]}
        ]}),
    );
    let arg = b.display().to_string();
    let wb = Wasmbox::new();
    let out = wb.run(&["run", "--bundle", &arg, "cat", "/data/inside.txt"]);
    out.code(0);
    assert_eq!(out.stdout, "inside");
    assert_eq!(
        wb.run(&["run", "--bundle", &arg, "write", "/data/x", "y"])
            .code,
        1
    );
    wb.run(&["run", "--bundle", &arg, "write", "/rw/x", "y"])
        .code(0);
    assert!(h.path("vol/x").exists());
    // tmpfs: writable, private, fresh each run.
    wb.run(&["run", "--bundle", &arg, "write", "/tmp/t", "y"])
        .code(0);
    assert_eq!(wb.run(&["run", "--bundle", &arg, "cat", "/tmp/t"]).code, 1);
    // Kernel mounts are never exposed.
    for p in [
        "/proc/self/status",
        "/sys/kernel/hostname",
        "/proc/1/environ",
    ] {
        let out = wb.run(&["run", "--bundle", &arg, "cat", p]);
        assert_eq!(out.code, 1, "{p}: {out:#?}");
    }
    // /dev holds wasmbox's own devices, never the kernel's.
    let out = wb.run(&["run", "--bundle", &arg, "ls", "/dev"]);
    out.code(0);
    assert_eq!(out.stdout, crate::devices::DEVICES);
}

/// Kubelet's single-file mounts: `/etc/hosts` read-only, a termination-message file writable
/// below `/dev`. Each shows alone (a bind of one file exposes no sibling), read-only however the
/// guest tries, and a rootfs symbolic link at the destination is resolved inside the rootfs.
#[test]
fn single_files_are_bound_alone_and_read_only_as_given() {
    let h = Host::new();
    std::fs::write(h.path("vol/hosts"), "10.0.0.1 pod\n").unwrap();
    std::fs::write(h.path("vol/termination-log"), "").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let b = bundle(
        dir.path(),
        serde_json::json!({"mounts": [
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs"},
            {"destination": "/etc/hosts", "type": "bind", "source": h.path("vol/hosts"), "options": ["rbind", "ro"]},
            {"destination": "/dev/termination-log", "type": "bind", "source": h.path("vol/termination-log"), "options": ["rbind", "rw"]},
            {"destination": "/etc/resolv.conf", "type": "bind", "source": h.path("vol/inside.txt"), "options": ["rbind", "ro"]}
        ]}),
    );
    // The image's /etc/resolv.conf is a link to a file elsewhere in the image, as in many images.
    std::fs::create_dir_all(b.join("rootfs/etc")).unwrap();
    std::fs::create_dir_all(b.join("rootfs/run")).unwrap();
    std::fs::write(b.join("rootfs/run/resolv.conf"), "image's own").unwrap();
    symlink("../run/resolv.conf", b.join("rootfs/etc/resolv.conf")).unwrap();
    let arg = b.display().to_string();
    let wb = Wasmbox::new();
    let out = wb.run(&["run", "--bundle", &arg, "cat", "/etc/hosts"]);
    out.code(0);
    assert_eq!(out.stdout, "10.0.0.1 pod\n");
    for args in [
        ["write", "/etc/hosts", "x"],
        ["append", "/etc/hosts", "x"],
        ["truncate", "/etc/hosts", "0"],
    ] {
        let mut a = vec!["run", "--bundle", &arg];
        a.extend(args);
        let out = wb.run(&a);
        assert_eq!(out.code, 1, "{args:?}: {out:#?}");
    }
    assert_eq!(
        std::fs::read_to_string(h.path("vol/hosts")).unwrap(),
        "10.0.0.1 pod\n"
    );
    // Its directory holds only what the rootfs has: vol's other files never show.
    let out = wb.run(&["run", "--bundle", &arg, "ls", "/etc"]);
    out.code(0);
    assert_eq!(out.stdout, "hosts\nresolv.conf\n");
    // Through the image's link, the bound file.
    let out = wb.run(&["run", "--bundle", &arg, "cat", "/etc/resolv.conf"]);
    assert_eq!(out.stdout, "inside");
    // The termination message reaches the host file; /dev shows only it and the devices, which
    // answer as ever beside it.
    wb.run(&[
        "run",
        "--bundle",
        &arg,
        "write",
        "/dev/termination-log",
        "it failed because",
    ])
    .code(0);
    assert_eq!(
        std::fs::read_to_string(h.path("vol/termination-log")).unwrap(),
        "it failed because"
    );
    let out = wb.run(&["run", "--bundle", &arg, "ls", "/dev"]);
    assert_eq!(
        out.stdout,
        "full\nnull\nrandom\ntermination-log\nurandom\nzero\n"
    );
    let out = wb.run(&["run", "--bundle", &arg, "dev"]);
    out.code(0);
    assert_eq!(out.stdout, crate::devices::ANSWERS);
    // This /dev is a read-only mount: the kernel refuses every change to it.
    for args in [
        &["write", "/dev/new", "x"][..],
        &["rm", "/dev/termination-log"],
        &["rm", "/dev/null"],
        &["touch", "/dev/null"],
        &["mv", "/dev/zero", "/dev/z"],
        &["mkdir", "/dev/d"],
        &["truncate", "/dev/null", "5"],
    ] {
        let mut a = vec!["run", "--bundle", &arg];
        a.extend(args);
        let out = wb.run(&a);
        assert_eq!(out.code, 1, "{args:?}: {out:#?}");
    }
    let out = wb.run(&["run", "--bundle", &arg, "ls", "/dev"]);
    assert_eq!(
        out.stdout,
        "full\nnull\nrandom\ntermination-log\nurandom\nzero\n"
    );
    h.assert_secret_untouched();
}

/// A single-file destination that is a link to a file the rootfs lacks fails, saying so.
#[test]
fn a_single_file_destination_linked_to_nothing_is_a_clear_error() {
    let h = Host::new();
    let dir = tempfile::tempdir().unwrap();
    let b = bundle(
        dir.path(),
        serde_json::json!({"mounts": [
            {"destination": "/etc/resolv.conf", "type": "bind", "source": h.path("vol/inside.txt"), "options": ["rbind", "ro"]}
        ]}),
    );
    std::fs::create_dir_all(b.join("rootfs/etc")).unwrap();
    symlink(
        "../run/missing/resolv.conf",
        b.join("rootfs/etc/resolv.conf"),
    )
    .unwrap();
    let arg = b.display().to_string();
    let line = Wasmbox::new()
        .run(&["run", "--bundle", &arg, "cat", "/etc/resolv.conf"])
        .the_error_line()
        .to_string();
    assert!(
        line.contains("/etc/resolv.conf") && line.contains("symbolic link to a file missing"),
        "{line}"
    );
}

/// A single-file source is opened like a directory grant: no symbolic link on its path, never
/// a device node, never one of wasmbox's own files.
#[test]
fn single_file_sources_must_be_plain_files_reached_without_links() {
    let h = Host::new();
    symlink(h.path("secret.txt"), h.path("vol/link")).unwrap();
    let wb = Wasmbox::new();
    for (source, why) in [
        (h.path("vol/link"), "symbolic link"),
        (
            PathBuf::from("/dev/null"),
            "neither a directory nor a regular file",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let b = bundle(
            dir.path(),
            serde_json::json!({"mounts": [
                {"destination": "/etc/x", "type": "bind", "source": source, "options": ["rbind", "ro"]}
            ]}),
        );
        let arg = b.display().to_string();
        let out = wb.run(&["run", "--bundle", &arg, "cat", "/etc/x"]);
        assert_eq!(out.code, 125, "{source:?}: {out:#?}");
        assert!(out.stderr.contains(why), "{source:?}: {out:#?}");
        assert!(!out.stdout.contains(SECRET));
    }
}
