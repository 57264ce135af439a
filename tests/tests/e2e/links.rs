//! An image laid out as distributions lay theirs out, its entrypoint reached through absolute
//! symbolic links (`/etc/alternatives/app -> /usr/bin/python3 -> /usr/local/bin/python3.12.wasm`,
//! one climbing with `..` from the root) in tar entries built by hand: `wasmbox run` of it, the
//! shim running it from containerd, and the agent compiling it there, all resolve the links inside
//! the image as a chroot would. A guest's own opens through such links stay inside its root too.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::common::{Wasmbox, guest};
use crate::ctrd::Containerd;
use crate::images::{Layout, with_store};

const NAME: &str = "localhost/wasmbox-test/linked:1";

/// One layer's tar: files, and symbolic links with their targets as given.
fn layer(files: &[(&str, &[u8])], links: &[(&str, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (p, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o755);
        b.append_data(&mut h, p, *data).unwrap();
    }
    for (p, target) in links {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        b.append_link(&mut h, p, target).unwrap();
    }
    b.into_inner().unwrap()
}

/// The image, as an OCI layout in `dir`: the wasm in its first layer, the links in its second.
fn linked(dir: &Path) -> PathBuf {
    let l = Layout::new(dir);
    let wasm = std::fs::read(guest("files/files.wasm")).unwrap();
    let lower = layer(
        &[
            ("usr/local/bin/python3.12.wasm", &wasm),
            ("usr/share/ca/cert.pem", b"cert"),
        ],
        &[],
    );
    let upper = layer(
        &[],
        &[
            ("usr/bin/python3", "/usr/local/bin/python3.12.wasm"),
            ("etc/alternatives/app", "/../../../usr/bin/python3"),
            ("etc/ssl/cert.pem", "/usr/share/ca/cert.pem"),
        ],
    );
    // containerd checks the layers against the config's diff ids (uncompressed: their digests).
    let diff_id = |l: &[u8]| {
        use sha2::Digest as _;
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(l)))
    };
    let config = json!({"os": "wasip1", "architecture": "wasm",
        "rootfs": {"type": "layers", "diff_ids": [diff_id(&lower), diff_id(&upper)]},
        "config": {"Entrypoint": ["/etc/alternatives/app"], "Cmd": ["args", "linked"]}});
    l.image(
        Some(NAME),
        config,
        "application/vnd.oci.image.config.v1+json",
        vec![
            ("application/vnd.oci.image.layer.v1.tar", lower),
            ("application/vnd.oci.image.layer.v1.tar", upper),
        ],
    );
    l.dir
}

#[test]
fn an_image_with_absolute_links_runs_from_wasmbox_the_shim_and_the_agents_cache() {
    let wb = Wasmbox::new();
    let work = tempfile::tempdir().unwrap();
    let layout = linked(&work.path().join("layout"));
    let out = with_store(
        &wb,
        &["load", "--no-compile", "-i", layout.to_str().unwrap()],
    );
    out.code(0);
    let expected = "/etc/alternatives/app\nargs\nlinked\n";
    let out = with_store(&wb, &["run", NAME]);
    assert_eq!((out.code, out.stdout.as_str()), (0, expected), "{out:#?}");
    // The guest's own open through an absolute link of the image.
    let cat = ["/etc/alternatives/app", "cat", "/etc/ssl/cert.pem"];
    let out = with_store(&wb, &["run", NAME, cat[1], cat[2]]);
    assert_eq!((out.code, out.stdout.as_str()), (0, "cert"), "{out:#?}");
    // Through containerd: the agent compiles it (its layers streamed, the links followed in
    // them), and the shim runs it from that cache.
    let archive = work.path().join("linked.tar");
    with_store(&wb, &["save", "-o", archive.to_str().unwrap(), NAME]).code(0);
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().to_str().unwrap().to_string();
    let c = Containerd::start_with_env(&[
        ("WASMBOX_CACHE_DIR", &cache_dir),
        ("WASMBOX_LOG", "wasmbox_runtime=debug"),
    ]);
    let mut agent = crate::agentd::Agent::start(&c, cache.path(), crate::common::free_port());
    agent.wait_for("watching containerd", 1);
    c.import(&archive);
    agent.wait_for(&format!("compiled {NAME}:/etc/alternatives/app"), 1);
    let out = c.run(&[], NAME, "linked", &[]);
    assert_eq!((out.code, out.stdout.as_str()), (0, expected), "{out:#?}");
    let out = c.run(&[], NAME, "linked-cat", &cat);
    assert_eq!((out.code, out.stdout.as_str()), (0, "cert"), "{out:#?}");
    assert!(
        c.log().contains("compiled code from cache"),
        "{}",
        c.log_tail()
    );
}

/// A rootfs whose files reach each other through absolute links, as distributions' do
/// (`/etc/ssl/certs -> /usr/share/ca`), one leading into a read-write grant mounted in it, one
/// climbing with `..` from the root, one naming a file of the host's.
#[test]
fn a_guests_own_opens_go_through_absolute_links_inside_its_root() {
    let t = tempfile::tempdir().unwrap();
    let (root, data) = (t.path().join("rootfs"), t.path().join("data"));
    for d in ["usr/share/ca", "etc/ssl", "app", "data"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::create_dir(&data).unwrap();
    std::fs::write(root.join("usr/share/ca/cert.pem"), "cert").unwrap();
    let secret = t.path().join("secret.txt");
    std::fs::write(&secret, "host secret").unwrap();
    let link = |target: &str, at: &str| std::os::unix::fs::symlink(target, root.join(at)).unwrap();
    link("/usr/share/ca/cert.pem", "etc/ssl/cert.pem");
    link("/usr/share/ca", "etc/ssl/certs");
    link("/data", "app/data");
    link("/../../../../usr/share/ca/cert.pem", "app/up");
    link(secret.to_str().unwrap(), "app/host");
    link("/dev/null", "app/null");
    let wb = Wasmbox::new();
    let grants = [
        format!("{}:/:ro", root.display()),
        format!("{}:/data", data.display()),
    ];
    for g in ["files/files.wasm", "files/files-component.wasm"] {
        let program = guest(g).display().to_string();
        let run = |args: &[&str]| {
            let mut a = vec!["run", "--dev", "-v", &grants[0], "-v", &grants[1], &program];
            a.extend_from_slice(args);
            wb.run(&a)
        };
        for (args, expected) in [
            (&["cat", "/etc/ssl/cert.pem"][..], "cert"),
            (&["cat", "/etc/ssl/certs/cert.pem"], "cert"),
            (&["cat", "/app/up"], "cert"),
            // A device wasmbox answers, reached through a link.
            (&["write", "/app/null", "x"], "ok\n"),
            (&["cat", "/app/null"], ""),
            (&["ls", "/etc/ssl/certs"], "cert.pem\n"),
            (&["stat", "/etc/ssl/certs/cert.pem"], "size=4 type=file\n"),
            // The link itself, not followed.
            (&["stat", "/etc/ssl/cert.pem"], "size=22 type=symlink\n"),
        ] {
            let out = run(args);
            assert_eq!(
                (out.code, out.stdout.as_str()),
                (0, expected),
                "{g} {args:?}: {out:#?}"
            );
        }
        // Into the read-write grant through a link in the read-only root: that grant's access,
        // for every call by path.
        run(&["write", "/app/data/new", g]).code(0);
        assert_eq!(std::fs::read_to_string(data.join("new")).unwrap(), g);
        for (args, expected) in [
            (&["mkdir", "/app/data/d"][..], "ok\n"),
            (&["touch", "/app/data/d/f"], "ok\n"),
            (&["mv", "/app/data/d/f", "/app/data/d/g"], "ok\n"),
            (&["link", "/app/data/d/g", "/app/data/d/h"], "ok\n"),
            // `..` from the grant's directory climbs in the root, as in a chroot.
            (
                &["symlink", "../../usr/share/ca/cert.pem", "/app/data/d/l"],
                "ok\n",
            ),
            (
                &["readlink", "/app/data/d/l"],
                "../../usr/share/ca/cert.pem\n",
            ),
            (&["cat", "/app/data/d/l"], "cert"),
            (&["ls", "/app/data/d"], "g\nh\nl\n"),
        ] {
            let out = run(args);
            assert_eq!(
                (out.code, out.stdout.as_str()),
                (0, expected),
                "{g} {args:?}: {out:#?}"
            );
        }
        let d = data.join("d");
        assert!(std::fs::metadata(d.join("h")).unwrap().is_file());
        assert_eq!(
            std::fs::read_link(d.join("l")).unwrap(),
            Path::new("../../usr/share/ca/cert.pem")
        );
        // A guest makes no absolute link (wasmtime-wasi's rule, kept).
        let out = run(&["symlink", "/etc/ssl/cert.pem", "/app/data/d/abs"]);
        assert_eq!(out.code, 1, "{g}: {out:#?}");
        for args in [
            &["rm", "/app/data/d/g"][..],
            &["rm", "/app/data/d/h"],
            &["rm", "/app/data/d/l"],
            &["rmdir", "/app/data/d"],
        ] {
            let out = run(args);
            assert_eq!(
                (out.code, out.stdout.as_str()),
                (0, "ok\n"),
                "{g} {args:?}: {out:#?}"
            );
        }
        assert!(!d.exists());
        let out = run(&["mkdir", "/etc/ssl/certs/d"]);
        assert_eq!(out.code, 1, "{g}: the root is read-only: {out:#?}");
        let out = run(&["write", "/etc/ssl/certs/new", "x"]);
        assert_eq!(out.code, 1, "{g}: the root is read-only: {out:#?}");
        assert!(!root.join("usr/share/ca/new").exists());
        // A link naming a host file names the rootfs's, which is not there.
        let out = run(&["cat", "/app/host"]);
        assert_eq!(
            (out.code, out.stdout.as_str()),
            (1, "error: No such file or directory\n"),
            "{g}: {out:#?}"
        );
    }
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "host secret");
}
