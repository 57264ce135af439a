//! `wasmbox install containerd`, against real configuration files: the output of
//! `containerd config default`, one with comments and another runtime, k3s's template; each
//! result checked by containerd itself (`containerd config dump`).

use std::path::Path;
use std::process::Command;

use crate::common::{Out, Wasmbox, wasmbox_bin};

/// The example CRI entry's table, as containerd's config parser reads it.
fn example_entry() -> toml_like::Entry {
    toml_like::entry(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../examples/kubernetes/containerd-runtime.toml"),
        )
        .unwrap(),
    )
}

/// The few lines of a runtime table the tests compare (no TOML parser in the test crate beyond
/// containerd's own).
mod toml_like {
    /// `runtime_type`, `pod_annotations`, `container_annotations` of the `wasmbox` runtime.
    #[derive(Debug, PartialEq, Eq)]
    pub struct Entry(pub Vec<String>);

    pub fn entry(text: &str) -> Entry {
        let mut lines = text
            .lines()
            .skip_while(|l| {
                !l.trim_start().starts_with("[plugins.") || !l.contains("runtimes.wasmbox]")
            })
            .skip(1)
            .take_while(|l| !l.trim_start().starts_with('['))
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect::<Vec<_>>();
        lines.sort();
        Entry(lines)
    }
}

/// `text` without the `wasmbox` runtime's table (its header and its keys).
fn without_entry(text: &str) -> String {
    let mut out = String::new();
    let mut skipping = false;
    for l in text.split_inclusive('\n') {
        let t = l.trim();
        if t.is_empty() {
            skipping = false;
        }
        if t.starts_with('[') {
            skipping = t.ends_with("runtimes.wasmbox]");
            // The blank line the table was given before its header.
            if skipping && out.ends_with("\n\n") {
                out.pop();
            }
        }
        if !skipping {
            out.push_str(l);
        }
    }
    out
}

/// `--config CONFIG --bin-dir BIN`.
fn paths(config: &Path, bin: &Path) -> [String; 4] {
    [
        "--config".into(),
        config.display().to_string(),
        "--bin-dir".into(),
        bin.display().to_string(),
    ]
}

fn install(wb: &Wasmbox, args: &[&str]) -> Out {
    let mut a = vec!["install", "containerd"];
    a.extend_from_slice(args);
    wb.run(&a)
}

/// containerd's own reading of a config: `containerd --config PATH config dump`.
fn dump(config: &Path) -> String {
    let out = Command::new("containerd")
        .arg("--config")
        .arg(config)
        .args(["config", "dump"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_default_config_gets_the_runtime_once_and_loses_it_exactly() {
    let wb = Wasmbox::new();
    let d = tempfile::tempdir().unwrap();
    let config = d.path().join("config.toml");
    let default = Command::new("containerd")
        .args(["config", "default"])
        .output()
        .unwrap()
        .stdout;
    std::fs::write(&config, &default).unwrap();
    let bin = d.path().join("bin");
    let args = paths(&config, &bin);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = install(&wb, &args);
    out.code(0);
    // The RuntimeClass to create, on stdout.
    let rc: serde_yaml::Value = serde_yaml::from_str(&out.stdout).unwrap();
    assert_eq!(rc["kind"].as_str(), Some("RuntimeClass"));
    assert_eq!(rc["handler"].as_str(), Some("wasmbox"));
    assert!(out.stderr.contains("restart containerd"), "{out:#?}");
    // The shim, executable, the very binary built beside wasmbox.
    let shim = bin.join("containerd-shim-wasmbox-v1");
    assert_eq!(
        std::fs::read(&shim).unwrap(),
        std::fs::read(wasmbox_bin().with_file_name("containerd-shim-wasmbox-v1")).unwrap()
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&shim).unwrap().permissions().mode() & 0o777,
        0o755
    );
    // containerd reads the entry, which is the example's.
    let text = std::fs::read_to_string(&config).unwrap();
    assert_eq!(toml_like::entry(&text), example_entry());
    let dumped = dump(&config);
    assert!(dumped.contains("runtimes.wasmbox]"), "{dumped}");
    assert!(dumped.contains("io.containerd.wasmbox.v1"), "{dumped}");
    // Everything else is as it was, byte for byte.
    assert_eq!(
        without_entry(&text),
        String::from_utf8(default.clone()).unwrap()
    );
    // A second run changes nothing.
    let before = std::fs::read(&config).unwrap();
    let out = install(&wb, &args);
    out.code(0);
    assert!(out.stderr.matches("unchanged").count() == 2, "{out:#?}");
    assert_eq!(std::fs::read(&config).unwrap(), before);
    // Uninstall gives back the very bytes, and removes the shim; again, nothing to do.
    let mut un = args.to_vec();
    un.push("--uninstall");
    install(&wb, &un).code(0);
    assert_eq!(std::fs::read(&config).unwrap(), default);
    assert!(!shim.exists());
    let out = install(&wb, &un);
    out.code(0);
    assert!(out.stderr.matches("unchanged").count() == 2, "{out:#?}");
}

#[test]
fn comments_and_other_runtimes_survive_and_bad_configs_are_refused_untouched() {
    let wb = Wasmbox::new();
    let d = tempfile::tempdir().unwrap();
    let config = d.path().join("config.toml");
    let mine = r#"# the operator's own notes
version = 2

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.crun] # for some pods
  runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.crun.options]
    BinaryName = "/usr/bin/crun"
"#;
    std::fs::write(&config, mine).unwrap();
    let bin = d.path().join("bin");
    let args = paths(&config, &bin);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // --dry-run says what it would do and does nothing.
    let out = install(&wb, &["--dry-run", args[0], args[1], args[2], args[3]]);
    out.code(0);
    assert!(out.stderr.contains("would write"), "{out:#?}");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), mine);
    assert!(!bin.exists());
    install(&wb, &args).code(0);
    let text = std::fs::read_to_string(&config).unwrap();
    assert_eq!(without_entry(&text), mine);
    assert_eq!(toml_like::entry(&text), example_entry());
    let dumped = dump(&config);
    assert!(dumped.contains("/usr/bin/crun") && dumped.contains("io.containerd.wasmbox.v1"));
    let mut un = args.to_vec();
    un.push("--uninstall");
    install(&wb, &un).code(0);
    assert_eq!(std::fs::read_to_string(&config).unwrap(), mine);

    // An entry of the operator's own keeps its other keys and its other annotation patterns.
    let own_entry = r#"version = 2
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.wasmbox]
  runtime_type = "io.containerd.wasmbox.v1" # pinned
  pod_annotations = ["example.com/*"]
  snapshotter = "native"
"#;
    std::fs::write(&config, own_entry).unwrap();
    install(&wb, &args).code(0);
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("# pinned"), "{text}");
    assert!(
        text.contains(r#"pod_annotations = ["example.com/*", "wasmbox.*"]"#),
        "{text}"
    );
    assert!(text.contains(r#"snapshotter = "native""#), "{text}");
    let dumped = dump(&config);
    assert!(
        dumped.contains("example.com/*") && dumped.contains("native"),
        "{dumped}"
    );

    // No config at all: one is made (containerd's defaults fill in the rest), and goes again.
    std::fs::remove_file(&config).unwrap();
    install(&wb, &args).code(0);
    assert!(dump(&config).contains("io.containerd.wasmbox.v1"));
    install(&wb, &un).code(0);
    assert!(!config.exists());

    // Not TOML: refused, naming the file, and nothing changes.
    let broken = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"\n";
    std::fs::write(&config, broken).unwrap();
    let out = install(&wb, &args);
    out.runtime_error(&["config.toml", "not valid TOML", "line 2"]);
    assert_eq!(std::fs::read_to_string(&config).unwrap(), broken);
    assert!(!bin.join("containerd-shim-wasmbox-v1").exists());
}

#[test]
fn k3s_gets_a_template_block_that_keeps_its_base() {
    let wb = Wasmbox::new();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("var/lib/rancher/k3s/agent/etc/containerd");
    std::fs::create_dir_all(&dir).unwrap();
    // What k3s rendered last, in containerd's config version 2.
    std::fs::write(
        dir.join("config.toml"),
        String::from_utf8(
            Command::new("containerd")
                .args(["config", "default"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap(),
    )
    .unwrap();
    let args = ["--k3s", "--host-root", root.path().to_str().unwrap()];
    install(&wb, &args).code(0);
    let tmpl = dir.join("config.toml.tmpl");
    let text = std::fs::read_to_string(&tmpl).unwrap();
    assert!(text.starts_with("{{ template \"base\" . }}\n"), "{text}");
    assert_eq!(toml_like::entry(&text), example_entry());
    assert!(
        root.path()
            .join("usr/local/bin/containerd-shim-wasmbox-v1")
            .exists()
    );
    // Idempotent; and an operator's own template lines stay.
    install(&wb, &args).code(0);
    assert_eq!(std::fs::read_to_string(&tmpl).unwrap(), text);
    let mut un = args.to_vec();
    un.push("--uninstall");
    install(&wb, &un).code(0);
    assert!(!tmpl.exists(), "only the base was left: the template goes");
    let own = "{{ template \"base\" . }}\n\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/etc/x\"\n";
    std::fs::write(&tmpl, own).unwrap();
    install(&wb, &args).code(0);
    assert!(std::fs::read_to_string(&tmpl).unwrap().starts_with(own));
    install(&wb, &un).code(0);
    assert_eq!(std::fs::read_to_string(&tmpl).unwrap(), own);
    std::fs::remove_file(&tmpl).unwrap();

    // A k3s that runs containerd 2 renders config version 3 from config-v3.toml.tmpl.
    std::fs::write(dir.join("config.toml"), "version = 3\n").unwrap();
    install(&wb, &args).code(0);
    assert!(!tmpl.exists());
    let v3 = std::fs::read_to_string(dir.join("config-v3.toml.tmpl")).unwrap();
    assert!(
        v3.contains(r#"[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.wasmbox]"#),
        "{v3}"
    );
    install(&wb, &args).code(0);
    assert_eq!(
        std::fs::read_to_string(dir.join("config-v3.toml.tmpl")).unwrap(),
        v3
    );
    install(&wb, &un).code(0);
    assert!(!dir.join("config-v3.toml.tmpl").exists());
}

/// The installer DaemonSet runs this very command against the host's root, mounted where it says.
#[test]
fn the_installer_daemonset_runs_the_install_on_the_hosts_root() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/kubernetes/installer.yaml"),
    )
    .unwrap();
    let ds: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(ds["kind"].as_str(), Some("DaemonSet"));
    let pod = &ds["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["privileged"].as_bool(), Some(true));
    let mount = c["volumeMounts"][0]["mountPath"].as_str().unwrap();
    let volume = &pod["volumes"][0];
    assert_eq!(volume["name"], c["volumeMounts"][0]["name"]);
    assert_eq!(volume["hostPath"]["path"].as_str(), Some("/"));
    let script = c["command"][2].as_str().unwrap();
    assert!(
        script.contains(&format!("wasmbox install containerd --host-root {mount}")),
        "{script}"
    );
    // And that command line parses as wasmbox's own.
    let wb = Wasmbox::new();
    let root = tempfile::tempdir().unwrap();
    let out = install(
        &wb,
        &["--dry-run", "--host-root", root.path().to_str().unwrap()],
    );
    out.code(0);
    assert!(out.stderr.contains("would write"), "{out:#?}");
    assert!(!root.path().join("etc").exists());
}
