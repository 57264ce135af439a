//! An image laid out as distributions lay theirs out, its entrypoint reached through absolute
//! symbolic links (`/etc/alternatives/app -> /usr/bin/python3 -> /usr/local/bin/python3.12.wasm`,
//! one climbing with `..` from the root) in tar entries built by hand: `wasmbox run` of it, the
//! shim running it from containerd, and the agent compiling it there, all resolve the links inside
//! the image as a chroot would.

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
    let lower = layer(&[("usr/local/bin/python3.12.wasm", &wasm)], &[]);
    let upper = layer(
        &[],
        &[
            ("usr/bin/python3", "/usr/local/bin/python3.12.wasm"),
            ("etc/alternatives/app", "/../../../usr/bin/python3"),
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
fn an_entrypoint_behind_absolute_links_runs_from_wasmbox_the_shim_and_the_agents_cache() {
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
    assert!(
        c.log().contains("compiled code from cache"),
        "{}",
        c.log_tail()
    );
}
