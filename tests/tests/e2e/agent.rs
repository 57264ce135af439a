//! `wasmbox agent` beside a real containerd: it compiles the wasm of the images containerd held
//! before it started and of those imported after, skips native ones, comes back when containerd
//! restarts, says once what it cannot compile, and the shim then starts from what it compiled;
//! `install containerd --agent`.

use crate::agentd::Agent;
use crate::common::{cache_entries, free_port, wasmbox_bin};
use crate::ctrd::{BUSYBOX, Containerd, FILES, HELLO, HELLO_ARTIFACT, Images};
use crate::metrics::{curl, parse, value};

fn scrape(port: u16) -> Vec<crate::metrics::Sample> {
    let (status, _, body) = curl(&format!("http://127.0.0.1:{port}/metrics"), &[]);
    assert_eq!(status, 200, "{body}");
    parse(&body)
}

/// Two images that say they hold wasm but give none to compile, saved as archives in `dir`: a
/// compat one whose entrypoint has the wasm magic and garbage after it, and an artifact whose
/// layer is no wasm.
fn unusable(dir: &std::path::Path) -> [(std::path::PathBuf, &'static str); 2] {
    let wb = crate::common::Wasmbox::new();
    let broken = crate::images::Layout::new(&dir.join("broken"));
    let mut tar = tar::Builder::new(Vec::new());
    let garbage = b"\0asm\x01\0\0\0 not a module";
    let mut h = tar::Header::new_gnu();
    h.set_size(garbage.len() as u64);
    h.set_mode(0o755);
    tar.append_data(&mut h, "app.wasm", &garbage[..]).unwrap();
    broken.image(
        Some("localhost/agent/broken:1"),
        serde_json::json!({"os": "wasip1", "architecture": "wasm",
            "config": {"Entrypoint": ["/app.wasm"]}}),
        "application/vnd.oci.image.config.v1+json",
        vec![(
            "application/vnd.oci.image.layer.v1.tar",
            tar.into_inner().unwrap(),
        )],
    );
    let empty = crate::images::Layout::new(&dir.join("empty"));
    empty.image(
        Some("localhost/agent/empty:1"),
        serde_json::json!({}),
        "application/vnd.wasm.config.v0+json",
        vec![("application/wasm", b"no wasm here".to_vec())],
    );
    [
        (broken.dir, "localhost/agent/broken:1"),
        (empty.dir, "localhost/agent/empty:1"),
    ]
    .map(|(layout, name)| {
        let archive = dir.join(format!("{}.tar", name.replace(['/', ':'], "-")));
        crate::images::with_store(
            &wb,
            &["load", "--no-compile", "-i", layout.to_str().unwrap()],
        )
        .code(0);
        crate::images::with_store(&wb, &["save", "-o", archive.to_str().unwrap(), name]).code(0);
        (archive, name)
    })
}

#[test]
fn the_agent_compiles_what_containerd_holds_and_pulls_and_comes_back_after_a_restart() {
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().to_str().unwrap().to_string();
    let mut c = Containerd::start_with_env(&[
        ("WASMBOX_CACHE_DIR", &cache_dir),
        ("WASMBOX_LOG", "wasmbox_runtime=debug"),
    ]);
    let images = Images::get();
    // Held before the agent starts: caught up when it connects.
    c.import(&images.archive(HELLO));
    let port = free_port();
    let mut agent = Agent::start(&c, cache.path(), port);
    agent.wait_for("watching containerd", 1);
    agent.wait_for(&format!("compiled {HELLO}:"), 1);
    assert_eq!(cache_entries(cache.path()).len(), 1);
    // Imported after: the event brings it. An artifact's wasm layer (containerd 1.6 stores one
    // it cannot unpack), then a compat image whose entrypoint is streamed out of its layer.
    let artifact = images.archive(HELLO_ARTIFACT);
    let out = c.ctr(&[
        "images",
        "import",
        "--no-unpack",
        artifact.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 0, "{out:#?}");
    c.import(&images.archive(FILES));
    agent.wait_for(&format!("compiled {FILES}:/app.wasm"), 1);
    // The artifact holds the same module as the compat hello image: in the cache already.
    let m = scrape(port);
    let images_total = |m: &[crate::metrics::Sample], r: &str| {
        value(m, "wasmbox_agent_images_total", &[("result", r)])
    };
    assert_eq!(images_total(&m, "compiled"), 2.0);
    assert_eq!(images_total(&m, "cached"), 1.0);
    assert_eq!(cache_entries(cache.path()).len(), 2);
    // A native image holds nothing to compile.
    c.import(&images.archive(BUSYBOX));
    crate::shim::wait_until("the native image is counted", || {
        images_total(&scrape(port), "not_wasm") == 1.0
    });
    assert_eq!(value(&m, "wasmbox_agent_containerd_connected", &[]), 1.0);
    // Images that say they hold wasm but give none to compile: each is said, and skipped.
    let work = tempfile::tempdir().unwrap();
    let [(broken, broken_name), (empty, empty_name)] = unusable(work.path());
    for a in [&broken, &empty] {
        let out = c.ctr(&["images", "import", "--no-unpack", a.to_str().unwrap()]);
        assert_eq!(out.code, 0, "{out:#?}");
    }
    let broken_said = format!("{broken_name}:/app.wasm did not compile");
    let empty_said = format!("{empty_name}: holds no wasm binary where it says");
    agent.wait_for(&broken_said, 1);
    agent.wait_for(&empty_said, 1);
    // containerd restarts: the agent connects again and looks up the six images it holds, each
    // seen before (so nothing is said twice); an image imported then is compiled.
    c.restart();
    agent.wait_for("watching containerd", 2);
    crate::shim::wait_until("the six images are looked up again", || {
        images_total(&scrape(port), "seen_before") == 6.0
    });
    assert_eq!(agent.count(&broken_said), 1, "{:#?}", agent.log);
    assert_eq!(agent.count(&empty_said), 1, "{:#?}", agent.log);
    assert_eq!(images_total(&scrape(port), "failed"), 1.0);
    c.import(&images.archive(crate::ctrd::ECHO));
    agent.wait_for(&format!("compiled {}", crate::ctrd::ECHO), 1);
    let m = scrape(port);
    assert_eq!(
        value(&m, "wasmbox_agent_containerd_reconnects_total", &[]),
        1.0
    );
    assert_eq!(images_total(&m, "unreadable"), 0.0, "{:#?}", agent.log);
    // The shim starts FILES from what the agent compiled, and rewrites nothing.
    let entries = cache_entries(cache.path());
    let before: Vec<_> = entries
        .iter()
        .map(|e| std::fs::metadata(e).unwrap().modified().unwrap())
        .collect();
    let out = c.run(&[], FILES, "warm", &["/app.wasm", "args", "x"]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(
        c.log().contains("compiled code from cache"),
        "{}",
        c.log_tail()
    );
    let after: Vec<_> = entries
        .iter()
        .map(|e| std::fs::metadata(e).unwrap().modified().unwrap())
        .collect();
    assert_eq!(before, after);
}

#[test]
fn install_agent_puts_the_binary_beside_the_shim_and_a_unit_where_systemd_runs() {
    let wb = crate::common::Wasmbox::new();
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let install = |more: &[&str]| {
        let mut a = vec![
            "install",
            "containerd",
            "--host-root",
            r.to_str().unwrap(),
            "--agent",
        ];
        a.extend_from_slice(more);
        wb.run(&a)
    };
    let unit = r.join("etc/systemd/system/wasmbox-agent.service");
    let binary = r.join("usr/local/bin/wasmbox");
    // No systemd: the binary, and the word that the agent needs starting some other way.
    let out = install(&[]);
    out.code(0);
    assert_eq!(
        std::fs::read(&binary).unwrap(),
        std::fs::read(wasmbox_bin()).unwrap()
    );
    assert!(!unit.exists());
    assert!(out.stderr.contains("no systemd on this host"), "{out:#?}");
    // With systemd: its unit, and how to start it; a second run changes nothing.
    std::fs::create_dir_all(r.join("run/systemd/system")).unwrap();
    let out = install(&[]);
    out.code(0);
    let text = std::fs::read_to_string(&unit).unwrap();
    assert!(
        text.contains(
            "ExecStart=/usr/local/bin/wasmbox agent --address /run/containerd/containerd.sock\n"
        ),
        "{text}"
    );
    assert!(
        out.stderr
            .contains("systemctl daemon-reload && systemctl enable --now wasmbox-agent"),
        "{out:#?}"
    );
    let out = install(&[]);
    assert_eq!(out.stderr.matches("unchanged").count(), 4, "{out:#?}");
    // Uninstall takes the unit, the binary, the runtime and the shim.
    install(&["--uninstall"]).code(0);
    assert!(!unit.exists() && !binary.exists());
    assert!(!r.join("usr/local/bin/containerd-shim-wasmbox-v1").exists());
}
