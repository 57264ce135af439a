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

/// The installer DaemonSet runs this very command against the host's root, mounted where it says,
/// then the agent.
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
    // Then it runs the agent against the host's containerd and the shim's cache.
    assert!(
        script.ends_with(&format!(
            "exec /opt/wasmbox/wasmbox agent --address {mount}/run/containerd/containerd.sock \
             --cache-dir {mount}/var/cache/wasmbox"
        )),
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

/// `containerd config default` of the containerd on this machine (1.6).
fn containerd_default() -> String {
    String::from_utf8(
        Command::new("containerd")
            .args(["config", "default"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
}

/// A file of `tests/fixtures/containerd` (see its README for where each comes from).
fn fixture(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/containerd")
            .join(name),
    )
    .unwrap()
}

/// Whether `path` is a symbolic link to `target`.
fn links_to(path: &Path, target: &str) -> bool {
    std::fs::read_link(path).is_ok_and(|t| t == Path::new(target))
}

/// `before` with the unified diff `diff` applied, each context and removed line checked.
fn apply(diff: &str, before: &str) -> String {
    let old: Vec<&str> = before.split_inclusive('\n').collect();
    let mut out = String::new();
    let mut at = 0;
    for l in diff
        .split_inclusive('\n')
        .skip_while(|l| !l.starts_with("@@ "))
    {
        if let Some(h) = l.strip_prefix("@@ -") {
            let range = h.split(' ').next().unwrap();
            let (start, count) = match range.split_once(',') {
                Some((s, c)) => (s.parse::<usize>().unwrap(), c.parse::<usize>().unwrap()),
                None => (range.parse().unwrap(), 1),
            };
            // An empty old range names the line after which the new lines go.
            let first = if count == 0 { start } else { start - 1 };
            assert!(first >= at, "hunks out of order: {diff}");
            old[at..first].iter().for_each(|l| out.push_str(l));
            at = first;
        } else if let Some(l) = l.strip_prefix('+') {
            out.push_str(l);
        } else if let Some((kept, l)) = l
            .strip_prefix(' ')
            .map(|l| (true, l))
            .or_else(|| l.strip_prefix('-').map(|l| (false, l)))
        {
            assert_eq!(
                old[at],
                l,
                "the diff's line {} is not the file's: {diff}",
                at + 1
            );
            if kept {
                out.push_str(l);
            }
            at += 1;
        } else {
            panic!("not a line of a unified diff: {l:?}");
        }
    }
    old[at..].iter().for_each(|l| out.push_str(l));
    out
}

/// The unified diff in a dry run's messages: from its `--- ` line to the next message.
fn diff_in(stderr: &str) -> String {
    stderr
        .split_inclusive('\n')
        .skip_while(|l| !l.starts_with("--- "))
        .take_while(|l| !l.starts_with("wasmbox: "))
        .collect()
}

/// A host's config reached through a link: absolute (to a path only the host's root has, or one
/// only the installer's root has) or relative and climbing past the root. The link's target is
/// edited beneath the host's root, the link stays, and uninstall gives the host's file back.
#[test]
fn links_under_the_host_root_are_followed_beneath_it_and_their_targets_edited() {
    let wb = Wasmbox::new();
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    std::fs::create_dir_all(r.join("etc/containerd")).unwrap();
    std::fs::create_dir_all(r.join("hostonly")).unwrap();
    std::fs::create_dir_all(r.join("opt/bin")).unwrap();
    std::fs::create_dir_all(r.join("usr/local")).unwrap();
    std::os::unix::fs::symlink("/opt/bin", r.join("usr/local/bin")).unwrap();
    let host = format!("# the host's own\n{}", containerd_default());
    let hostonly = r.join("hostonly/config.toml");
    std::fs::write(&hostonly, &host).unwrap();
    let link = r.join("etc/containerd/config.toml");
    let args = ["--host-root", r.to_str().unwrap()];
    let mut un = args.to_vec();
    un.push("--uninstall");

    for target in [
        "/hostonly/config.toml",
        "../../../../../../../../hostonly/config.toml",
    ] {
        std::os::unix::fs::symlink(target, &link).unwrap();
        let out = install(&wb, &args);
        out.code(0);
        assert!(out.stderr.contains("hostonly/config.toml"), "{out:#?}");
        assert!(links_to(&link, target));
        let text = std::fs::read_to_string(&hostonly).unwrap();
        assert_eq!(
            without_entry(&text),
            host,
            "the host's settings are all kept"
        );
        assert_eq!(toml_like::entry(&text), example_entry());
        assert!(dump(&hostonly).contains("io.containerd.wasmbox.v1"));
        // The shim went through its own link, which stays.
        assert!(r.join("opt/bin/containerd-shim-wasmbox-v1").exists());
        assert!(links_to(&r.join("usr/local/bin"), "/opt/bin"));
        let out = install(&wb, &args);
        out.code(0);
        assert_eq!(out.stderr.matches("unchanged").count(), 2, "{out:#?}");
        install(&wb, &un).code(0);
        assert_eq!(std::fs::read_to_string(&hostonly).unwrap(), host);
        assert!(links_to(&link, target));
        assert!(!r.join("opt/bin/containerd-shim-wasmbox-v1").exists());
        std::fs::remove_file(&link).unwrap();
    }

    // A link to a file that only the installer's own root has: its text never reaches the host.
    let mine = tempfile::NamedTempFile::new().unwrap();
    let installers =
        "# the installer's own, not the host's\nversion = 2\nroot = \"/not/the/host\"\n";
    std::fs::write(mine.path(), installers).unwrap();
    std::os::unix::fs::symlink(mine.path(), &link).unwrap();
    let beneath = r.join(mine.path().strip_prefix("/").unwrap());
    install(&wb, &args).code(0);
    assert_eq!(std::fs::read_to_string(mine.path()).unwrap(), installers);
    let made = std::fs::read_to_string(&beneath).unwrap();
    assert!(!made.contains("/not/the/host"), "{made}");
    assert!(dump(&beneath).contains("io.containerd.wasmbox.v1"));
    assert!(links_to(&link, mine.path().to_str().unwrap()));
    install(&wb, &un).code(0);
    assert!(!beneath.exists(), "the config made from nothing goes again");
    assert!(links_to(&link, mine.path().to_str().unwrap()));
    assert_eq!(std::fs::read_to_string(mine.path()).unwrap(), installers);
    assert_eq!(std::fs::read_to_string(&hostonly).unwrap(), host);
}

/// A config with CRLF line endings keeps them, and uninstall gives it back byte for byte; so
/// does a k3s template.
#[test]
fn crlf_line_endings_are_kept_and_uninstall_gives_the_bytes_back() {
    let wb = Wasmbox::new();
    let d = tempfile::tempdir().unwrap();
    let config = d.path().join("config.toml");
    let crlf = format!(
        "# the operator's\r\n{}",
        containerd_default().replace('\n', "\r\n")
    );
    std::fs::write(&config, &crlf).unwrap();
    let bin = d.path().join("bin");
    let args = paths(&config, &bin);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    install(&wb, &args).code(0);
    let text = std::fs::read_to_string(&config).unwrap();
    assert_eq!(
        text.matches('\n').count(),
        text.matches("\r\n").count(),
        "every line ends in CRLF: {text:?}"
    );
    assert_eq!(toml_like::entry(&text), example_entry());
    assert!(dump(&config).contains("io.containerd.wasmbox.v1"));
    let out = install(&wb, &args);
    out.code(0);
    assert_eq!(out.stderr.matches("unchanged").count(), 2, "{out:#?}");
    let mut un = args.to_vec();
    un.push("--uninstall");
    install(&wb, &un).code(0);
    assert_eq!(std::fs::read(&config).unwrap(), crlf.as_bytes());

    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("var/lib/rancher/k3s/agent/etc/containerd");
    std::fs::create_dir_all(&dir).unwrap();
    let tmpl = dir.join("config.toml.tmpl");
    let own = "{{ template \"base\" . }}\r\n\r\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\r\n  config_path = \"/etc/x\"\r\n";
    std::fs::write(&tmpl, own).unwrap();
    let args = ["--k3s", "--host-root", root.path().to_str().unwrap()];
    install(&wb, &args).code(0);
    let text = std::fs::read_to_string(&tmpl).unwrap();
    assert!(text.starts_with(own), "{text:?}");
    assert!(text.contains("runtimes.wasmbox]\r\n"), "{text:?}");
    assert_eq!(text.matches('\n').count(), text.matches("\r\n").count());
    let mut un = args.to_vec();
    un.push("--uninstall");
    install(&wb, &un).code(0);
    assert_eq!(std::fs::read_to_string(&tmpl).unwrap(), own);
}

/// Runs `wasmbox install containerd ARGS` and gives it `within` to end: a run that hangs is
/// killed and fails the test.
fn install_within(wb: &Wasmbox, args: &[&str], within: std::time::Duration) -> Out {
    let mut child = wb
        .cmd()
        .args(["install", "containerd"])
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = crate::common::Lines::read(child.stderr.take().unwrap());
    let ended = stderr.wait_end(within);
    if !ended {
        let _ = child.kill();
    }
    let status = child.wait().unwrap();
    assert!(ended, "still running after {within:?}: {:?}", stderr.all());
    let mut text = stderr.all().join("\n");
    text.push('\n');
    Out {
        code: status.code().unwrap_or(-1),
        stdout: String::new(),
        stderr: text,
    }
}

/// A FIFO, a directory and an oversized file are refused at once, named with the reason, and
/// nothing is written.
#[test]
fn a_fifo_a_directory_or_an_oversized_config_is_refused_at_once() {
    let wb = Wasmbox::new();
    let d = tempfile::tempdir().unwrap();
    let bin = d.path().join("bin");
    let within = std::time::Duration::from_secs(20);

    let fifo = d.path().join("fifo.toml");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let args = paths(&fifo, &bin);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    install_within(&wb, &args, within).runtime_error(&[
        "fifo.toml",
        "is a FIFO, not a regular file",
        "nothing was changed",
    ]);
    assert!(!bin.exists());
    let mut k3s = args.to_vec();
    k3s.push("--k3s");
    install_within(&wb, &k3s, within).runtime_error(&["fifo.toml", "a FIFO"]);

    let dir = d.path().join("dir.toml");
    std::fs::create_dir(&dir).unwrap();
    let args = paths(&dir, &bin);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    install_within(&wb, &args, within).runtime_error(&["dir.toml", "a directory"]);

    // Sparse: no disk is used, and the size alone refuses them before any read.
    for size in [(1 << 20) + 1, 300 << 20] {
        let big = d.path().join("big.toml");
        let f = std::fs::File::create(&big).unwrap();
        f.set_len(size).unwrap();
        let args = paths(&big, &bin);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        install_within(&wb, &args, within).runtime_error(&[
            "big.toml",
            "larger than 1048576 bytes",
            &format!("({size} bytes)"),
            "nothing was changed",
        ]);
        assert_eq!(std::fs::metadata(&big).unwrap().len(), size);
        assert!(!bin.exists());
    }
}

/// `--dry-run` prints the very edit as a unified diff (applied, it gives what the real run
/// writes) and changes nothing; so for uninstall and for a config made from nothing.
#[test]
fn dry_run_prints_the_edit_as_a_unified_diff_and_changes_nothing() {
    let wb = Wasmbox::new();
    let d = tempfile::tempdir().unwrap();
    let config = d.path().join("config.toml");
    let before = containerd_default();
    std::fs::write(&config, &before).unwrap();
    let bin = d.path().join("bin");
    let args = paths(&config, &bin);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut dry = args.to_vec();
    dry.push("--dry-run");
    let out = install(&wb, &dry);
    out.code(0);
    let diff = diff_in(&out.stderr);
    let shown = config.display().to_string();
    assert!(
        diff.starts_with(&format!("--- {shown}\n+++ {shown}\n@@ -")),
        "{out:#?}"
    );
    assert!(
        diff.contains("\n+runtime_type = \"io.containerd.wasmbox.v1\"\n"),
        "{diff}"
    );
    assert_eq!(std::fs::read_to_string(&config).unwrap(), before);
    assert!(!bin.exists());
    install(&wb, &args).code(0);
    let after = std::fs::read_to_string(&config).unwrap();
    assert_eq!(apply(&diff, &before), after);

    // Nothing to do: no diff.
    let out = install(&wb, &dry);
    out.code(0);
    assert_eq!(diff_in(&out.stderr), "", "{out:#?}");

    let mut un = dry.clone();
    un.push("--uninstall");
    let out = install(&wb, &un);
    out.code(0);
    let diff = diff_in(&out.stderr);
    assert!(diff.lines().any(|l| l.starts_with("-[plugins.")), "{diff}");
    assert!(
        !diff
            .lines()
            .any(|l| l.starts_with("+") && !l.starts_with("+++")),
        "{diff}"
    );
    assert_eq!(std::fs::read_to_string(&config).unwrap(), after);
    assert_eq!(apply(&diff, &after), before);

    // No config: the diff makes one from /dev/null.
    std::fs::remove_file(&config).unwrap();
    let out = install(&wb, &dry);
    out.code(0);
    let diff = diff_in(&out.stderr);
    assert!(
        diff.starts_with(&format!("--- /dev/null\n+++ {shown}\n")),
        "{diff}"
    );
    assert!(!config.exists());
    install(&wb, &args).code(0);
    assert_eq!(apply(&diff, ""), std::fs::read_to_string(&config).unwrap());
}

/// containerd 2.x's CRI configuration as containerd writes it (version 3, the runtime under
/// `io.containerd.cri.v1.runtime`, single-quoted keys): install, re-install and uninstall, as the
/// 1.6 default above.
#[test]
fn containerd_2_configs_get_the_runtime_once_and_lose_it_exactly() {
    let wb = Wasmbox::new();
    for name in [
        "containerd-2.0-cri.toml",
        "containerd-2.1-cri.toml",
        "containerd-2.2-cri.toml",
    ] {
        let d = tempfile::tempdir().unwrap();
        let config = d.path().join("config.toml");
        let default = fixture(name);
        std::fs::write(&config, &default).unwrap();
        let bin = d.path().join("bin");
        let args = paths(&config, &bin);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        install(&wb, &args).code(0);
        let text = std::fs::read_to_string(&config).unwrap();
        assert!(
            text.contains(
                "\n[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.wasmbox]\n"
            ),
            "{name}: {text}"
        );
        assert_eq!(toml_like::entry(&text), example_entry(), "{name}");
        assert_eq!(without_entry(&text), default, "{name}");
        let out = install(&wb, &args);
        out.code(0);
        assert_eq!(
            out.stderr.matches("unchanged").count(),
            2,
            "{name}: {out:#?}"
        );
        assert_eq!(std::fs::read_to_string(&config).unwrap(), text);
        let mut un = args.to_vec();
        un.push("--uninstall");
        install(&wb, &un).code(0);
        assert_eq!(std::fs::read_to_string(&config).unwrap(), default, "{name}");
        let out = install(&wb, &un);
        out.code(0);
        assert_eq!(
            out.stderr.matches("unchanged").count(),
            2,
            "{name}: {out:#?}"
        );
    }
}

/// k3s's own version-3 base template, copied whole into `config-v3.toml.tmpl` as k3s's docs
/// suggest for a custom template: the block goes after it and comes out exactly.
#[test]
fn k3s_own_v3_template_gets_the_block_and_loses_it_exactly() {
    let wb = Wasmbox::new();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("var/lib/rancher/k3s/agent/etc/containerd");
    std::fs::create_dir_all(&dir).unwrap();
    let tmpl = dir.join("config-v3.toml.tmpl");
    let base = fixture("k3s-config-v3.toml.tmpl");
    std::fs::write(&tmpl, &base).unwrap();
    let args = ["--k3s", "--host-root", root.path().to_str().unwrap()];
    install(&wb, &args).code(0);
    let text = std::fs::read_to_string(&tmpl).unwrap();
    assert!(text.starts_with(&base), "{text}");
    assert!(
        text.contains(r#"[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.wasmbox]"#),
        "{text}"
    );
    assert_eq!(toml_like::entry(&text), example_entry());
    let out = install(&wb, &args);
    out.code(0);
    assert_eq!(out.stderr.matches("unchanged").count(), 2, "{out:#?}");
    let mut un = args.to_vec();
    un.push("--uninstall");
    install(&wb, &un).code(0);
    assert_eq!(std::fs::read_to_string(&tmpl).unwrap(), base);
}
