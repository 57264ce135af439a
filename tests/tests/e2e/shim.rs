//! The containerd shim, driven through a real containerd with `ctr`: wasm images as containers,
//! the task service, stdio, events, grouping, native containers through runc, survival.

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use crate::ctrd::{
    BUSYBOX, Containerd, DEVICES, ECHO, EventLog, FILES, HELLO, HELLO_ARTIFACT, HELLO_CONVERTED,
    HTTP_HELLO, Images, NET_PROBE, PRECOMPILED, RUNTIME, TestNetns, WAT, alive, parse_time,
    shim_socket, signal,
};

fn with_images(names: &[&str]) -> Containerd {
    let c = Containerd::start();
    for n in names {
        c.import(&Images::get().archive(n));
    }
    c
}

/// Polls `f` until it holds (a minute at most: containerd on a loaded machine).
pub(crate) fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(60) {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting until {what}");
}

/// CPU time (user and system, in clock ticks) process `pid` has used.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which is in parentheses): state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    n(11) + n(12)
}

/// Waits until the daemon's only shim has burned 10 more ticks of CPU: a sign that the guest it
/// runs is spinning, not still starting.
fn wait_spinning(c: &Containerd) {
    let shim = c.shims()[0];
    let start = cpu_ticks(shim);
    wait_until("the guest spins", || cpu_ticks(shim) >= start + 10);
}

/// Waits until the echo server whose container log is `log` has found its listening socket.
fn wait_listening(log: &std::path::Path) {
    wait_until("the echo server listens", || {
        std::fs::read_to_string(log).is_ok_and(|l| l.contains("listening on fd"))
    });
}

#[test]
fn compat_image_runs_to_completion_with_output_and_exit_status() {
    let c = with_images(&[HELLO, FILES]);
    let out = c.run(&[], HELLO, "hello", &[]);
    assert_eq!(out.code, 0, "{out:#?}\n{}", c.log_tail());
    assert!(out.stdout.contains("Hello from wasmbox!"), "{out:#?}");
    let out = c.run(&[], FILES, "args", &["/app.wasm", "args", "a b", "c"]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(out.stdout, "/app.wasm\nargs\na b\nc\n");
    let out = c.run(&[], FILES, "exit", &["/app.wasm", "exit", "7"]);
    assert_eq!(out.code, 7, "{out:#?}");
    wait_until("shims exit once their containers are deleted", || {
        c.shims().is_empty()
    });
    assert!(c.mounts().is_empty(), "{:?}", c.mounts());
    // The shim's own log is in containerd's log, in its format, without wasmtime's call traces.
    let log = c.log();
    assert!(
        log.lines().any(
            |l| l.contains("level=info msg=\"created wasm container\" id=args")
                && l.contains("runtime=io.containerd.wasmbox.v1")
        ),
        "{}",
        c.log_tail()
    );
    assert!(
        !log.contains("fd_prestat_get"),
        "wasmtime's call traces are filtered out"
    );
}

#[test]
fn the_rootfs_and_mounts_are_the_guests_only_files_with_read_only_honoured() {
    let c = with_images(&[FILES]);
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("in.txt"), "from the host").unwrap();
    let ro = format!(
        "type=bind,src={},dst=/data,options=rbind:ro",
        host.path().display()
    );
    let rw = format!(
        "type=bind,src={},dst=/data,options=rbind:rw",
        host.path().display()
    );
    let out = c.run(
        &["--mount", &ro],
        FILES,
        "ro1",
        &["/app.wasm", "cat", "/data/in.txt"],
    );
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(out.stdout.contains("from the host"), "{out:#?}");
    let out = c.run(
        &["--mount", &ro],
        FILES,
        "ro2",
        &["/app.wasm", "write", "/data/in.txt", "x"],
    );
    assert_ne!(out.code, 0, "{out:#?}");
    assert_eq!(
        std::fs::read_to_string(host.path().join("in.txt")).unwrap(),
        "from the host"
    );
    let out = c.run(
        &["--mount", &rw],
        FILES,
        "rw",
        &["/app.wasm", "write", "/data/new.txt", "hi"],
    );
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(
        std::fs::read_to_string(host.path().join("new.txt")).unwrap(),
        "hi"
    );
    // The rootfs is writable unless --read-only, and /proc, /sys, /dev are never there.
    let out = c.run(&[], FILES, "w", &["/app.wasm", "write", "/made.txt", "x"]);
    assert_eq!(out.code, 0, "{out:#?}");
    let out = c.run(
        &["--read-only"],
        FILES,
        "r",
        &["/app.wasm", "write", "/made.txt", "x"],
    );
    assert_ne!(out.code, 0, "{out:#?}");
    let out = c.run(&[], FILES, "ls", &["/app.wasm", "ls", "/"]);
    assert_eq!(out.code, 0, "{out:#?}");
    for hidden in ["proc", "sys", "dev"] {
        assert!(!out.stdout.lines().any(|l| l == hidden), "{out:#?}");
    }
    for escape in ["/../../../../etc/passwd", "/proc/self/environ"] {
        let out = c.run(&[], FILES, "esc", &["/app.wasm", "cat", escape]);
        assert_ne!(out.code, 0, "{escape}: {out:#?}");
        assert!(!out.stdout.contains("root:"), "{out:#?}");
    }
}

#[test]
fn artifacts_run_in_compat_form_and_containerd_refuses_them_as_they_are() {
    let c = Containerd::start();
    // containerd 1.6 cannot unpack a wasm artifact (its layer is no filesystem): the error is
    // containerd's own, and nothing runs.
    let imported = c.ctr(&[
        "images",
        "import",
        Images::get().archive(HELLO_ARTIFACT).to_str().unwrap(),
    ]);
    let out = c.run(&[], HELLO_ARTIFACT, "art", &[]);
    assert_ne!(out.code, 0, "{imported:#?} {out:#?}");
    assert!(!out.stderr.is_empty(), "{out:#?}");
    // `wasmbox save --compat` writes the same image in compat form, under the same name.
    c.import(&Images::get().archive(HELLO_CONVERTED));
    let out = c.run(&[], HELLO_ARTIFACT, "conv", &["/app.wasm", "x"]);
    assert_eq!(out.code, 0, "{out:#?}\n{}", c.log_tail());
    assert!(out.stdout.contains("Hello from wasmbox!"), "{out:#?}");
    assert!(out.stdout.contains("args: x"), "{out:#?}");
}

#[test]
fn output_is_complete_when_a_guest_prints_a_lot_and_exits_at_once() {
    let c = with_images(&[FILES]);
    let out = c.run(&[], FILES, "spam", &["/app.wasm", "spam", "100000"]);
    assert_eq!(out.code, 0, "{}", c.log_tail());
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 100000);
    assert_eq!(lines[99999], "line 100000");
}

#[test]
fn stdin_reaches_the_guest_and_ends_when_the_client_closes_it() {
    let c = with_images(&[FILES]);
    let input = "one\ntwo\nthree\n".repeat(1000);
    let mut child = c
        .ctr_cmd()
        .args([
            "run",
            "--rm",
            "--runtime",
            RUNTIME,
            FILES,
            "stdin",
            "/app.wasm",
            "stdin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", c.log_tail());
    assert_eq!(String::from_utf8_lossy(&out.stdout), input);
}

#[test]
fn a_terminal_is_refused_clearly() {
    let c = with_images(&[HELLO]);
    // ctr needs a terminal of its own to ask for one: `script` gives it a pty.
    let cmd = c.ctr_cmd();
    let mut line: Vec<String> = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    line.extend(["run", "--rm", "-t", "--runtime", RUNTIME, HELLO, "tty"].map(String::from));
    let out = std::process::Command::new("script")
        .args(["-qec", &line.join(" "), "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("terminal"), "{text}");
    assert!(!text.contains("Hello"), "{text}");
    assert_eq!(c.status("tty"), None);
}

#[test]
fn sigterm_stops_a_looping_guest_with_143_within_100ms_and_events_tell_the_story() {
    let c = with_images(&[WAT]);
    let events = EventLog::start(&c);
    c.run_detached(&[], WAT, "spin", &["/spin.wasm"]);
    c.wait_status("spin", "RUNNING");
    wait_spinning(&c);
    let before = SystemTime::now();
    let out = c.ctr(&["task", "kill", "-s", "SIGTERM", "spin"]);
    let sent = SystemTime::now();
    assert_eq!(out.code, 0, "{out:#?}");
    let exit = events.wait_for("spin", "/tasks/exit");
    assert_eq!(exit.body["exit_status"], 143, "{exit:#?}");
    let at = parse_time(exit.body["exited_at"].as_str().unwrap());
    assert!(at >= before, "{exit:#?}");
    let late = at.duration_since(sent).unwrap_or_default();
    assert!(
        late < Duration::from_millis(100),
        "exited {late:?} after the kill returned"
    );
    c.wait_status("spin", "STOPPED");
    assert_eq!(c.ctr(&["task", "delete", "spin"]).code, 0);
    let topics: Vec<String> = events.of("spin").into_iter().map(|e| e.topic).collect();
    wait_until("the delete event", || {
        events.of("spin").iter().any(|e| e.topic == "/tasks/delete")
    });
    for t in ["/tasks/create", "/tasks/start", "/tasks/exit"] {
        assert!(topics.iter().any(|x| x == t), "{t} missing from {topics:?}");
    }
}

#[test]
fn exec_runs_another_program_with_its_own_stdio_and_status() {
    let c = with_images(&[FILES]);
    let events = EventLog::start(&c);
    c.run_detached(&[], FILES, "host", &["/app.wasm", "sleep", "600000"]);
    c.wait_status("host", "RUNNING");
    let out = c.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e1",
        "host",
        "/app.wasm",
        "args",
        "x",
    ]);
    assert_eq!(out.code, 0, "{out:#?}\n{}", c.log_tail());
    assert_eq!(out.stdout, "/app.wasm\nargs\nx\n");
    let out = c.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e2",
        "host",
        "/app.wasm",
        "exit",
        "3",
    ]);
    assert_eq!(out.code, 3, "{out:#?}");
    // Same capabilities: the container's rootfs, nothing of the host's.
    let out = c.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e3",
        "host",
        "/app.wasm",
        "ls",
        "/",
    ]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(out.stdout.contains("app.wasm"), "{out:#?}");
    assert!(!out.stdout.contains("etc"), "{out:#?}");
    // A program that is not wasm is refused.
    let out = c.ctr(&["task", "exec", "--exec-id", "e4", "host", "/nope.wasm"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("does not exist"), "{out:#?}");
    let added = events.wait_for("host", "/tasks/exec-added");
    assert_eq!(added.body["exec_id"], "e1");
    events.wait_for("host", "/tasks/exec-started");
    assert_eq!(c.status("host").as_deref(), Some("RUNNING"));
    // kill --all ends the exec'd processes too.
    let out = c.ctr(&[
        "task",
        "exec",
        "-d",
        "--exec-id",
        "bg",
        "host",
        "/app.wasm",
        "sleep",
        "600000",
    ]);
    assert_eq!(out.code, 0, "{out:#?}");
    let ps = c.ctr(&["task", "ps", "host"]);
    assert_eq!(ps.code, 0, "{ps:#?}");
    assert_eq!(
        c.ctr(&["task", "kill", "-a", "-s", "SIGKILL", "host"]).code,
        0
    );
    c.wait_status("host", "STOPPED");
    wait_until("the exec'd process exits too", || {
        events.of("host").iter().any(|e| {
            e.topic == "/tasks/exit" && e.body["id"] == "bg" && e.body["exit_status"] == 137
        })
    });
}

#[test]
fn pause_stops_progress_and_resume_continues_and_metrics_report_usage() {
    let c = with_images(&[WAT]);
    let events = EventLog::start(&c);
    let log = c.run_detached(&[], WAT, "dots", &["/dots.wasm"]);
    let size = || std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    wait_until("dots are printed", || size() > 3);
    let out = c.ctr(&["task", "pause", "dots"]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(c.status("dots").as_deref(), Some("PAUSED"));
    std::thread::sleep(Duration::from_millis(100));
    let paused_at = size();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(size(), paused_at, "no progress while paused");
    let metrics = c.ctr(&["task", "metrics", "dots"]);
    assert_eq!(metrics.code, 0, "{metrics:#?}");
    assert!(
        metrics.stdout.contains("memory.usage_in_bytes"),
        "{metrics:#?}"
    );
    let usage: u64 = metrics
        .stdout
        .lines()
        .find(|l| l.starts_with("memory.usage_in_bytes"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert_eq!(usage, 65536, "one page of linear memory: {metrics:#?}");
    let out = c.ctr(&["task", "resume", "dots"]);
    assert_eq!(out.code, 0, "{out:#?}");
    wait_until("dots continue", || size() > paused_at);
    events.wait_for("dots", "/tasks/paused");
    events.wait_for("dots", "/tasks/resumed");
    let cpu = |m: &str| -> u64 {
        m.lines()
            .find(|l| l.starts_with("cpuacct.usage "))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let first = cpu(&metrics.stdout);
    let later = cpu(&c.ctr(&["task", "metrics", "dots"]).stdout);
    assert!(
        first > 0 && later > first,
        "CPU time grows: {first} then {later}"
    );
    assert_eq!(c.ctr(&["task", "kill", "-s", "SIGKILL", "dots"]).code, 0);
}

#[test]
fn a_lower_memory_limit_applies_to_a_running_guest_and_reports_oom() {
    let c = with_images(&[WAT]);
    let events = EventLog::start(&c);
    c.run_detached(
        &["--memory-limit", "1073741824"],
        WAT,
        "grow",
        &["/grow.wasm"],
    );
    c.wait_status("grow", "RUNNING");
    wait_spinning(&c);
    assert_eq!(c.status("grow").as_deref(), Some("RUNNING"));
    // ctr 1.6 has no `task update`; containerd (and CRI's UpdateContainerResources) send this.
    update_memory(&c, "grow", 4 << 20);
    let exit = events.wait_for("grow", "/tasks/exit");
    assert_eq!(exit.body["exit_status"], 137, "{exit:#?}");
    events.wait_for("grow", "/tasks/oom");
}

/// Waits until `f` (a FIFO's read end) is readable or its writer has hung up, or `limit` passes.
#[allow(unsafe_code, reason = "poll(2) on one descriptor the test owns")]
fn wait_readable(f: &std::fs::File, limit: Duration) {
    use std::os::fd::AsRawFd;
    let mut p = libc::pollfd {
        fd: f.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `p` is one valid pollfd for the call.
    unsafe {
        libc::poll(&mut p, 1, limit.as_millis() as i32);
    }
}

/// A ttrpc client of the shim serving container `id`, as containerd connects to it.
fn shim_client(c: &Containerd, id: &str) -> containerd_shim_protos::shim_sync::TaskClient {
    let bundle = c
        .dir
        .path()
        .join("state/io.containerd.runtime.v2.task")
        .join(&c.ns)
        .join(id);
    let address = std::fs::read_to_string(bundle.join("address")).unwrap();
    let client = containerd_shim_protos::ttrpc::Client::connect(address.trim()).unwrap();
    containerd_shim_protos::shim_sync::TaskClient::new(client)
}

/// The memory limit of a native container's cgroup (cgroup v1 or v2).
fn cgroup_memory_limit(c: &Containerd, id: &str) -> u64 {
    let bundle = c
        .dir
        .path()
        .join("state/io.containerd.runtime.v2.task")
        .join(&c.ns)
        .join(id);
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    let path = spec["linux"]["cgroupsPath"]
        .as_str()
        .unwrap()
        .trim_start_matches('/');
    let v1 = std::path::Path::new("/sys/fs/cgroup/memory").join(path);
    let file = if v1.exists() {
        v1.join("memory.limit_in_bytes")
    } else {
        std::path::Path::new("/sys/fs/cgroup")
            .join(path)
            .join("memory.max")
    };
    let text = std::fs::read_to_string(&file).unwrap();
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{}: {text}", file.display()))
}

/// Sends the task service the Update request containerd sends for new resources.
fn update_memory(c: &Containerd, id: &str, limit: u64) {
    use containerd_shim_protos::api::UpdateTaskRequest;
    use containerd_shim_protos::protobuf::MessageField;
    use containerd_shim_protos::protobuf::well_known_types::any::Any;
    let req = UpdateTaskRequest {
        id: id.to_string(),
        resources: MessageField::some(Any {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources".into(),
            value: serde_json::to_vec(&serde_json::json!({"memory": {"limit": limit}})).unwrap(),
            ..Default::default()
        }),
        ..Default::default()
    };
    shim_client(c, id)
        .update(
            containerd_shim_protos::ttrpc::context::with_timeout(5_000_000_000),
            &req,
        )
        .unwrap();
}

#[test]
fn fifty_containers_start_concurrently_and_are_all_killed() {
    let c = with_images(&[FILES]);
    let ids: Vec<String> = (0..50).map(|i| format!("many{i}")).collect();
    std::thread::scope(|s| {
        for id in &ids {
            let c = &c;
            s.spawn(move || {
                c.run_detached(&[], FILES, id, &["/app.wasm", "sleep", "600000"]);
            });
        }
    });
    let ls = c.ctr(&["task", "ls"]);
    let running = ls.stdout.lines().filter(|l| l.ends_with("RUNNING")).count();
    assert_eq!(running, 50, "{ls:#?}");
    std::thread::scope(|s| {
        for id in &ids {
            let c = &c;
            s.spawn(move || {
                let out = c.ctr(&["task", "kill", "-s", "SIGKILL", id]);
                assert_eq!(out.code, 0, "{out:#?}");
            });
        }
    });
    for id in &ids {
        c.wait_status(id, "STOPPED");
    }
    for id in &ids {
        assert_eq!(c.ctr(&["task", "delete", id]).code, 0);
        assert_eq!(c.ctr(&["containers", "rm", id]).code, 0);
    }
    wait_until("all shims exit", || c.shims().is_empty());
    assert!(c.mounts().is_empty(), "{:?}", c.mounts());
}

#[test]
fn containers_of_one_group_started_at_once_share_one_shim_and_a_dead_ones_socket_is_replaced() {
    let c = with_images(&[FILES]);
    let group = ["--annotation", "io.containerd.runc.v2.group=rush"];
    let ids: Vec<String> = (0..8).map(|i| format!("rush{i}")).collect();
    std::thread::scope(|s| {
        for id in &ids {
            let c = &c;
            s.spawn(move || c.run_detached(&group, FILES, id, &["/app.wasm", "sleep", "600000"]));
        }
    });
    let shims = c.shims();
    assert_eq!(shims.len(), 1, "one shim for a group started at once");
    let socket = shim_socket(shims[0]).expect("the shim's listening socket");
    for id in &ids {
        assert_eq!(c.ctr(&["task", "kill", "-s", "SIGKILL", id]).code, 0);
        c.wait_status(id, "STOPPED");
        assert_eq!(c.ctr(&["task", "delete", id]).code, 0);
    }
    wait_until("the group's shim exits", || c.shims().is_empty());
    // What a shim that died leaves: a socket file nobody listens on.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(std::os::unix::net::UnixStream::connect(&socket).is_err());
    c.run_detached(
        &group,
        FILES,
        "rush-again",
        &["/app.wasm", "sleep", "600000"],
    );
    c.wait_status("rush-again", "RUNNING");
    let shims = c.shims();
    assert_eq!(shims.len(), 1);
    assert_eq!(shim_socket(shims[0]).as_deref(), Some(socket.as_str()));
}

#[test]
fn a_pod_wide_smart_variant_runs_wasm_containers_as_wasm_and_a_native_sidecar_through_runc() {
    // crun's convention: `compat-smart` on the pod means "wasm where the entrypoint is a .wasm
    // file", so a native sidecar of the same pod stays native.
    let c = with_images(&[FILES, BUSYBOX]);
    for variant in ["compat-smart", "wasm-smart"] {
        let ann = format!("module.wasm.image/variant={variant}");
        let group = format!("io.containerd.runc.v2.group=smart-{variant}");
        let flags = ["--annotation", ann.as_str(), "--annotation", group.as_str()];
        let (app, side) = (format!("app-{variant}"), format!("side-{variant}"));
        // An anchor keeps the group's shim alive, so what the others leave in its mount
        // namespace after their delete can be seen.
        let anchor = format!("anchor-{variant}");
        c.run_detached(&flags, FILES, &anchor, &["/app.wasm", "sleep", "600000"]);
        c.run_detached(&flags, FILES, &app, &["/app.wasm", "sleep", "600000"]);
        let out = c.run(&flags, BUSYBOX, &side, &["echo", "native sidecar"]);
        assert_eq!(out.code, 0, "{variant}: {out:#?}\n{}", c.log_tail());
        assert_eq!(out.stdout, "native sidecar\n", "{variant}");
        c.run_detached(&flags, BUSYBOX, &side, &["sleep", "600"]);
        c.wait_status(&side, "RUNNING");
        let native = c.pid(&side);
        assert_eq!(
            std::fs::read_to_string(format!("/proc/{native}/comm"))
                .unwrap()
                .trim(),
            "sleep",
            "{variant}: runc runs the sidecar"
        );
        let wasm = c.pid(&app);
        assert_ne!(native, wasm);
        assert!(
            c.shims().contains(&wasm),
            "{variant}: the wasm container lives in the shim"
        );
        // A wasm guest lives in its group's shim: its pid is the shim's (an earlier group's shim
        // may still be exiting).
        let shim = wasm.to_string();
        let of = |id: &str| {
            let needle = format!("/{id}/");
            c.mounts_seen_by(&shim)
                .into_iter()
                .filter(|m| m.contains(&needle))
                .collect::<Vec<_>>()
        };
        assert!(
            !of(&app).is_empty(),
            "{variant}: the rootfs is mounted in the shim"
        );
        for id in [&app, &side, &anchor] {
            assert_eq!(c.ctr(&["task", "kill", "-s", "SIGKILL", id]).code, 0);
            c.wait_status(id, "STOPPED");
            assert_eq!(c.ctr(&["task", "delete", id]).code, 0);
            assert_eq!(c.ctr(&["containers", "rm", id]).code, 0);
            if id != &anchor {
                assert_eq!(
                    of(id),
                    Vec::<String>::new(),
                    "{id}: mounts left in the shim"
                );
            }
        }
        assert!(c.mounts().is_empty(), "{:?}", c.mounts());
    }
    wait_until("all shims exit", || c.shims().is_empty());
}

#[test]
fn containers_of_one_group_share_one_shim_and_others_get_their_own() {
    let c = with_images(&[FILES, BUSYBOX]);
    let group = ["--annotation", "io.containerd.runc.v2.group=pod1"];
    for id in ["g1", "g2", "g3"] {
        c.run_detached(&group, FILES, id, &["/app.wasm", "sleep", "600000"]);
    }
    // A native container of the same group: runc runs it, through the same shim.
    c.run_detached(&group, BUSYBOX, "gnative", &["sleep", "600"]);
    c.wait_status("gnative", "RUNNING");
    assert_eq!(c.shims().len(), 1, "one shim for the group");
    let socket = shim_socket(c.shims()[0]).unwrap();
    assert!(socket.starts_with("/run/containerd/s/"), "{socket}");
    c.run_detached(&[], FILES, "solo", &["/app.wasm", "sleep", "600000"]);
    assert_eq!(
        c.shims().len(),
        2,
        "a container without a group gets its own shim"
    );
    let wasm_pid = c.pid("g1");
    assert_eq!(
        wasm_pid,
        c.pid("g2"),
        "wasm guests live in the shim process"
    );
    let native_pid = c.pid("gnative");
    assert_ne!(native_pid, wasm_pid);
    assert!(alive(native_pid));
    let comm = std::fs::read_to_string(format!("/proc/{native_pid}/comm")).unwrap();
    assert_eq!(comm.trim(), "sleep");
    for id in ["g1", "g2", "g3", "gnative", "solo"] {
        assert_eq!(c.ctr(&["task", "kill", "-s", "SIGKILL", id]).code, 0);
        c.wait_status(id, "STOPPED");
        assert_eq!(c.ctr(&["task", "delete", id]).code, 0, "{}", c.log_tail());
    }
    assert!(!alive(native_pid));
    wait_until("all shims exit", || c.shims().is_empty());
    assert!(
        !std::path::Path::new(&socket).exists(),
        "{socket} is removed"
    );
}

#[test]
fn native_images_run_through_runc_with_output_and_status() {
    let c = with_images(&[BUSYBOX]);
    let out = c.run(&[], BUSYBOX, "echo", &["echo", "native", "hello"]);
    assert_eq!(out.code, 0, "{out:#?}\n{}", c.log_tail());
    assert_eq!(out.stdout, "native hello\n");
    let out = c.run(&[], BUSYBOX, "fail", &["sh", "-c", "exit 5"]);
    assert_eq!(out.code, 5, "{out:#?}");
    // exec, pause and resume of a native container go to runc.
    c.run_detached(&[], BUSYBOX, "nsleep", &["sleep", "600"]);
    c.wait_status("nsleep", "RUNNING");
    let out = c.ctr(&["task", "exec", "--exec-id", "x", "nsleep", "echo", "inside"]);
    assert_eq!(out.code, 0, "{out:#?}\n{}", c.log_tail());
    assert_eq!(out.stdout, "inside\n");
    assert_eq!(c.ctr(&["task", "pause", "nsleep"]).code, 0);
    assert_eq!(c.status("nsleep").as_deref(), Some("PAUSED"));
    assert_eq!(c.ctr(&["task", "resume", "nsleep"]).code, 0);
    // update goes to runc: the container's cgroup gets the new memory limit.
    update_memory(&c, "nsleep", 48 << 20);
    assert_eq!(cgroup_memory_limit(&c, "nsleep"), 48 << 20);
    // As with runc, the container's init (pid 1 of its pid namespace) has no SIGTERM handler, so
    // only SIGKILL ends it.
    assert_eq!(c.ctr(&["task", "kill", "-s", "SIGKILL", "nsleep"]).code, 0);
    c.wait_status("nsleep", "STOPPED");
    assert_eq!(c.ctr(&["task", "delete", "nsleep"]).code, 0);
}

#[test]
fn containerd_restarted_while_containers_run_finds_them_again() {
    let mut c = with_images(&[FILES, BUSYBOX]);
    c.run_detached(&[], FILES, "r1", &["/app.wasm", "sleep", "600000"]);
    c.run_detached(&[], BUSYBOX, "r2", &["sleep", "600"]);
    c.wait_status("r2", "RUNNING");
    let shims = c.shims();
    c.restart();
    assert_eq!(
        c.status("r1").as_deref(),
        Some("RUNNING"),
        "{}",
        c.log_tail()
    );
    assert_eq!(c.status("r2").as_deref(), Some("RUNNING"));
    assert_eq!(c.shims(), shims, "the same shims serve them");
    let out = c.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "after",
        "r1",
        "/app.wasm",
        "args",
        "again",
    ]);
    assert_eq!(out.code, 0, "{out:#?}");
    for id in ["r1", "r2"] {
        assert_eq!(c.ctr(&["task", "kill", "-s", "SIGKILL", id]).code, 0);
        c.wait_status(id, "STOPPED");
        assert_eq!(c.ctr(&["task", "delete", id]).code, 0);
    }
}

#[test]
fn a_shim_killed_with_sigkill_is_cleaned_up_by_containerd() {
    let c = with_images(&[FILES, BUSYBOX]);
    let group = ["--annotation", "io.containerd.runc.v2.group=doomed"];
    c.run_detached(&group, FILES, "k1", &["/app.wasm", "sleep", "600000"]);
    c.run_detached(&group, BUSYBOX, "k2", &["sleep", "600"]);
    c.wait_status("k2", "RUNNING");
    let native = c.pid("k2");
    let shims = c.shims();
    assert_eq!(shims.len(), 1);
    let socket = shim_socket(shims[0]).unwrap();
    // The rootfs mounts live in the shim's own mount namespace, not the host's.
    assert!(!c.mounts_seen_by(&shims[0].to_string()).is_empty());
    assert!(c.mounts().is_empty(), "{:?}", c.mounts());
    let events = EventLog::start(&c);
    signal(shims[0], libc::SIGKILL);
    // containerd runs the binary's `delete` action for each container, which undoes the shim's
    // work and reports the exit, and drops the tasks.
    for id in ["k1", "k2"] {
        let exit = events.wait_for(id, "/tasks/exit");
        assert_eq!(exit.body["exit_status"], 137, "{exit:#?}");
        wait_until("the task is gone", || c.status(id).is_none());
        let out = c.ctr(&["containers", "rm", id]);
        assert_eq!(out.code, 0, "{out:#?}");
    }
    wait_until("the native container is gone", || !alive(native));
    wait_until("no mounts are left", || c.mounts().is_empty());
    assert!(c.shims().is_empty());
    assert!(
        !std::path::Path::new(&socket).exists(),
        "{socket} is removed"
    );
}

#[test]
fn bad_bundles_fail_create_clearly_and_leave_nothing_behind() {
    let c = with_images(&[FILES, BUSYBOX, PRECOMPILED]);
    /// Container id, `ctr run` flags, image, args, what the error must say.
    type Case<'a> = (&'a str, &'a [&'a str], &'a str, &'a [&'a str], &'a str);
    let cases: [Case; 4] = [
        ("missing", &[], FILES, &["/nope.wasm"], "does not exist"),
        ("cwasm", &[], PRECOMPILED, &[], "precompiled"),
        (
            "notwasm",
            &["--annotation", "module.wasm.image/variant=compat"],
            BUSYBOX,
            &["/bin/busybox"],
            "not a wasm binary",
        ),
        ("badexport", &[], FILES, &["/app.wasm#nope"], "nope"),
    ];
    for (id, flags, image, args, needle) in cases {
        let out = c.run(flags, image, id, args);
        assert_ne!(out.code, 0, "{id}: {out:#?}");
        assert!(out.stderr.contains(needle), "{id}: {out:#?}");
        assert_eq!(c.status(id), None, "{id}");
    }
    wait_until("no shim is left", || c.shims().is_empty());
    assert!(c.mounts().is_empty(), "{:?}", c.mounts());
}

#[test]
fn guest_sockets_live_in_the_network_namespace_the_spec_names() {
    let c = with_images(&[ECHO]);
    let netns = TestNetns::new("wbt-net");
    let ns = &netns.0;
    let port = crate::common::free_port();
    let grant = format!("wasmbox.net.listen=127.0.0.1:{port}");
    let path = format!("network:/var/run/netns/{ns}");
    let log = c.run_detached(
        &["--with-ns", &path, "--annotation", &grant],
        ECHO,
        "echo",
        &["/app.wasm"],
    );
    wait_listening(&log);
    // Not in the host's namespace...
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    // ...but in the named one.
    let ns_path = format!("/var/run/netns/{ns}");
    assert_eq!(echo_in_netns(ns_path, port, "ping\n"), "ping\n");
    assert_eq!(c.ctr(&["task", "kill", "-s", "SIGKILL", "echo"]).code, 0);
}

/// `memory.usage_in_bytes` of `id` as `ctr task metrics` reports it.
fn memory_usage(c: &Containerd, id: &str) -> u64 {
    let metrics = c.ctr(&["task", "metrics", id]);
    assert_eq!(metrics.code, 0, "{metrics:#?}");
    metrics
        .stdout
        .lines()
        .find(|l| l.starts_with("memory.usage_in_bytes"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{metrics:#?}"))
}

/// Two HTTP components of one pod (one group, one network namespace the test made) are served
/// by one shim on two ports; requests come through that namespace; `ctr task metrics` counts the
/// memory of the instances alive; a kill drains: a slow request in flight completes, the task
/// exits 0, and the container's log has the readiness, drain and access lines.
#[test]
fn http_components_are_served_in_the_pods_namespace_and_drain_on_kill() {
    let c = with_images(&[HTTP_HELLO]);
    let netns = TestNetns::new("wbt-http");
    let ns = &netns.0;
    let events = EventLog::start(&c);
    let path = format!("network:/var/run/netns/{ns}");
    let serve = |id: &str, port: u16| {
        let addr = format!("wasmbox.http.addr=127.0.0.1:{port}");
        let log = c.run_detached(
            &[
                "--with-ns",
                &path,
                "--annotation",
                &addr,
                "--annotation",
                "io.containerd.runc.v2.group=web",
            ],
            HTTP_HELLO,
            id,
            &["/app.wasm"],
        );
        // The server is up once its log says so (the container's stderr).
        let ready = format!("wasmbox: serving http://127.0.0.1:{port}");
        wait_until("the server is listening", || {
            std::fs::read_to_string(&log).is_ok_and(|l| l.contains(&ready))
                || c.status(id).as_deref() == Some("STOPPED")
        });
        assert_eq!(c.status(id).as_deref(), Some("RUNNING"), "{}", c.log_tail());
        log
    };
    let log = serve("web", 8080);
    serve("web2", 8081);
    assert_eq!(c.pid("web"), c.pid("web2"), "one shim serves the pod");
    let ns_path = format!("/var/run/netns/{ns}");
    // On the namespace's loopback (the host's 8080 is not the pod's).
    assert_eq!(
        http_in_netns(ns_path.clone(), 8080, "/"),
        "200|hello from wasm\n"
    );
    assert_eq!(http_in_netns(ns_path.clone(), 8081, "/count"), "200|1\n");
    // Between requests no instance lives.
    assert_eq!(memory_usage(&c, "web"), 0);
    // A slow request in flight when the kill comes still completes; then the task exits 0.
    let slow = {
        let p = ns_path.clone();
        std::thread::spawn(move || http_in_netns(p, 8080, "/sleep"))
    };
    wait_until("the slow request is in the handler", || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("] sleeping"))
    });
    // Its instance's memory is the container's while it lives.
    assert!(memory_usage(&c, "web") >= 64 << 10);
    assert_eq!(c.ctr(&["task", "kill", "web"]).code, 0);
    assert_eq!(slow.join().unwrap(), "200|slept\n");
    let exit = events.wait_for("web", "/tasks/exit");
    // A drained server exits 0 (protobuf's JSON leaves a zero out).
    assert_eq!(
        exit.body["exit_status"].as_u64().unwrap_or(0),
        0,
        "{exit:#?}"
    );
    c.wait_status("web", "STOPPED");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("wasmbox: draining"), "{text}");
    // The access log went to the container's log, one line per request.
    let access: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("time=") && l.contains(" method=GET "))
        .collect();
    assert_eq!(access.len(), 2, "{text}");
    assert!(
        access.iter().any(|l| l.contains("path=/sleep status=200")),
        "{text}"
    );
    // The pod's other server went on.
    assert_eq!(
        http_in_netns(ns_path.clone(), 8081, "/"),
        "200|hello from wasm\n"
    );
    assert_eq!(c.ctr(&["task", "delete", "web"]).code, 0);
    assert_eq!(c.ctr(&["task", "kill", "-s", "SIGKILL", "web2"]).code, 0);
    c.wait_status("web2", "STOPPED");
    assert_eq!(c.ctr(&["task", "delete", "web2"]).code, 0);
}

/// A plain `ctr run` (a new network namespace asked for, none named, no network granted) serves
/// an HTTP component in a namespace of its own, as runc would run it: never on the host's.
#[test]
fn an_http_component_never_listens_on_the_hosts_network_unasked() {
    let c = with_images(&[HTTP_HELLO]);
    let port = crate::common::free_port();
    let addr = format!("wasmbox.http.addr=127.0.0.1:{port}");
    let log = c.run_detached(
        &["--annotation", &addr],
        HTTP_HELLO,
        "private",
        &["/app.wasm"],
    );
    let ready = format!("wasmbox: serving http://127.0.0.1:{port}");
    wait_until("the server is listening", || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains(&ready))
            || c.status("private").as_deref() == Some("STOPPED")
    });
    assert_eq!(
        c.status("private").as_deref(),
        Some("RUNNING"),
        "{}",
        c.log_tail()
    );
    let refused = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    // `--net-host` asks for the host's namespace: there it answers.
    let port2 = crate::common::free_port();
    let addr2 = format!("wasmbox.http.addr=127.0.0.1:{port2}");
    let log2 = c.run_detached(
        &["--net-host", "--annotation", &addr2],
        HTTP_HELLO,
        "hosted",
        &["/app.wasm"],
    );
    let ready2 = format!("wasmbox: serving http://127.0.0.1:{port2}");
    wait_until("the host-network server is listening", || {
        std::fs::read_to_string(&log2).is_ok_and(|l| l.contains(&ready2))
            || c.status("hosted").as_deref() == Some("STOPPED")
    });
    let out = std::process::Command::new("curl")
        .args(["-s", &format!("http://127.0.0.1:{port2}/")])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from wasm\n");
    for id in ["private", "hosted"] {
        assert_eq!(c.ctr(&["task", "kill", "-s", "SIGKILL", id]).code, 0);
        c.wait_status(id, "STOPPED");
        assert_eq!(c.ctr(&["task", "delete", id]).code, 0);
    }
}

/// GETs `path` (HTTP/1.0, so the body is not chunked) from 127.0.0.1:`port` in the network
/// namespace at `ns_path`; returns the status code and the body, joined by `|`.
fn http_in_netns(ns_path: String, port: u16, path: &'static str) -> String {
    std::thread::spawn(move || {
        use std::io::Read;
        enter_netns(&ns_path);
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\nhost: web\r\n\r\n").unwrap();
        let mut got = String::new();
        s.read_to_string(&mut got).unwrap();
        let status = got
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string();
        let body = got
            .split_once("\r\n\r\n")
            .map(|(_, b)| b)
            .unwrap_or_default();
        format!("{status}|{body}")
    })
    .join()
    .unwrap()
}

/// Sends `msg` to the echo server on 127.0.0.1:`port` of the network namespace at `ns_path`,
/// from a thread that joins it, and returns the reply.
fn echo_in_netns(ns_path: String, port: u16, msg: &'static str) -> String {
    std::thread::spawn(move || {
        use std::io::Read;
        enter_netns(&ns_path);
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(msg.as_bytes()).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut got = String::new();
        s.read_to_string(&mut got).unwrap();
        got
    })
    .join()
    .unwrap()
}

#[allow(unsafe_code, reason = "setns(2) on the calling test thread only")]
fn enter_netns(path: &str) {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).unwrap();
    // SAFETY: setns reads the descriptor only; it moves just this thread.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
}

#[test]
fn the_shim_reports_its_version_and_answers_delete_for_a_clean_bundle() {
    let bin = crate::common::wasmbox_bin()
        .parent()
        .unwrap()
        .join("containerd-shim-wasmbox-v1");
    let out = std::process::Command::new(&bin).arg("-v").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(RUNTIME));
    // The `delete` action in a bundle with nothing to undo answers a DeleteResponse at once.
    use containerd_shim_protos::protobuf::Message;
    let bundle = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(&bin)
        .args([
            "-namespace",
            "x",
            "-id",
            "gone",
            "-address",
            "/nonexistent.sock",
            "delete",
        ])
        .current_dir(bundle.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let resp = containerd_shim_protos::api::DeleteResponse::parse_from_bytes(&out.stdout).unwrap();
    assert_eq!(resp.exit_status, 137);
    let at = resp.exited_at.seconds;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((now - at).abs() < 60, "{at} vs {now}");
    assert!(
        std::fs::read_dir(bundle.path()).unwrap().next().is_none(),
        "nothing written"
    );
}

#[test]
fn a_guest_granted_network_gets_a_namespace_of_its_own_unless_the_host_one_is_asked_for() {
    let c = with_images(&[ECHO]);
    let port = crate::common::free_port();
    let grant = format!("wasmbox.net.listen=127.0.0.1:{port}");
    // Plain `ctr run` asks for a new network namespace: the listener is not on the host's
    // loopback, but on the shim's own namespace's.
    let log = c.run_detached(&["--annotation", &grant], ECHO, "own", &["/app.wasm"]);
    wait_listening(&log);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    let shim = c.shims()[0];
    let ns_path = format!("/proc/{shim}/ns/net");
    assert_ne!(
        std::fs::read_link(&ns_path).unwrap(),
        std::fs::read_link("/proc/self/ns/net").unwrap()
    );
    assert_eq!(echo_in_netns(ns_path, port, "own\n"), "own\n");
    assert_eq!(c.ctr(&["task", "kill", "-s", "SIGKILL", "own"]).code, 0);
    c.wait_status("own", "STOPPED");
    // `--net-host` keeps the host's namespace.
    c.run_detached(
        &["--net-host", "--annotation", &grant],
        ECHO,
        "host",
        &["/app.wasm"],
    );
    c.wait_status("host", "RUNNING");
    let mut s = None;
    wait_until("the listener is up on the host's loopback", || {
        s = std::net::TcpStream::connect(("127.0.0.1", port)).ok();
        s.is_some()
    });
    assert_eq!(c.ctr(&["task", "kill", "-s", "SIGKILL", "host"]).code, 0);
}

/// A group's guests live in its shim's one network namespace, so each must ask for the one the
/// group's first container asked for: a plain `ctr run` in a group a `--net-host` container began
/// would reach the host's loopback services, and a `--net-host` one in a plain group would not
/// get the host's network it asked for.
#[test]
fn a_group_refuses_a_container_asking_for_another_network_namespace() {
    let c = with_images(&[FILES, NET_PROBE]);
    let pong = crate::common::PongServer::start();
    let port = pong.port.to_string();
    let grant = format!("wasmbox.net.connect=127.0.0.1:{port}");
    let probe = ["/app.wasm", "connect", "127.0.0.1", port.as_str()];
    for (group, first, other) in [
        ("nethost", "--net-host", "a new network namespace"),
        ("netown", "", "the host's network namespace"),
    ] {
        let label = format!("io.containerd.runc.v2.group={group}");
        let flags = |net: &'static str| {
            let mut f = vec![
                "--annotation",
                label.as_str(),
                "--annotation",
                grant.as_str(),
            ];
            f.extend([net].into_iter().filter(|n| !n.is_empty()));
            f
        };
        let anchor = format!("{group}-anchor");
        c.run_detached(
            &flags(first),
            FILES,
            &anchor,
            &["/app.wasm", "sleep", "600000"],
        );
        c.wait_status(&anchor, "RUNNING");
        // The other request is refused, saying why.
        let second = if first.is_empty() { "--net-host" } else { "" };
        let out = c.run(&flags(second), NET_PROBE, &format!("{group}-other"), &probe);
        assert_ne!(out.code, 0, "{group}: {out:#?}");
        assert!(
            out.stderr.contains(&format!("asks for {other}"))
                && out
                    .stderr
                    .contains("must ask for the same network namespace"),
            "{group}: {out:#?}"
        );
        assert!(c.status(&format!("{group}-other")).is_none());
        // The same request as the first's runs, in the group's namespace.
        let out = c.run(&flags(first), NET_PROBE, &format!("{group}-same"), &probe);
        if first.is_empty() {
            // It ran, in the group's own namespace, where the host's listener is not.
            assert_eq!(out.code, 1, "{group}: {out:#?}\n{}", c.log_tail());
            assert_eq!(out.stdout, "error: connection-refused\n", "{group}");
        } else {
            assert_eq!(out.code, 0, "{group}: {out:#?}\n{}", c.log_tail());
            assert_eq!(out.stdout, "connected\npong\n", "{group}");
        }
        assert_eq!(c.ctr(&["task", "kill", "-s", "SIGKILL", &anchor]).code, 0);
        c.wait_status(&anchor, "STOPPED");
        assert_eq!(c.ctr(&["task", "delete", &anchor]).code, 0);
    }
}

#[test]
fn an_http_grant_alone_also_gets_a_namespace_of_its_own() {
    // wasmbox sends a guest's HTTP requests itself, from the namespace it is in: a guest granted
    // only outgoing HTTP must not be left in the host's, where the host's loopback services are.
    let c = with_images(&[FILES]);
    let grant = "wasmbox.http.allow=127.0.0.1:8080";
    c.run_detached(
        &["--annotation", grant],
        FILES,
        "http",
        &["/app.wasm", "sleep", "600000"],
    );
    c.wait_status("http", "RUNNING");
    let shim = c.pid("http");
    assert_ne!(
        std::fs::read_link(format!("/proc/{shim}/ns/net")).unwrap(),
        std::fs::read_link("/proc/self/ns/net").unwrap(),
        "the shim runs the guest in a network namespace of its own"
    );
    assert_eq!(c.ctr(&["task", "kill", "-s", "SIGKILL", "http"]).code, 0);
}

#[test]
fn output_waits_for_a_client_that_opens_its_fifo_late() {
    // A guest that prints and exits at once must not lose its output to a client that opens its
    // end of the FIFO late. Driven through the shim's own task API (as containerd would), with a
    // FIFO this test opens 300 ms after asking for the task.
    use containerd_shim_protos::api::{
        CreateTaskRequest, DeleteRequest, StartRequest, WaitRequest,
    };
    let c = with_images(&[FILES]);
    let group = ["--annotation", "io.containerd.runc.v2.group=late"];
    c.run_detached(&group, FILES, "anchor", &["/app.wasm", "sleep", "600000"]);
    let tasks = shim_client(&c, "anchor");
    let dir = tempfile::tempdir().unwrap();
    // A new network namespace, as the anchor's plain `ctr run` asked for.
    let bundle = crate::common::bundle(
        &dir.path().join("bundle"),
        serde_json::json!({
            "process": {"args": ["/files.wasm", "args", "late", "reader"]},
            "linux": {"namespaces": [{"type": "network"}]},
        }),
    );
    let fifo = dir.path().join("stdout");
    let st = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(st.success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            use std::io::Read;
            use std::os::unix::fs::OpenOptionsExt;
            std::thread::sleep(Duration::from_millis(300));
            let mut f = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&fifo)
                .unwrap();
            // Until a writer has come, a read says end-of-file: wait for one (or its data).
            wait_readable(&f, Duration::from_secs(10));
            let mut got = Vec::new();
            let t = Instant::now();
            let mut buf = [0u8; 4096];
            while t.elapsed() < Duration::from_secs(10) {
                match f.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            String::from_utf8(got).unwrap()
        })
    };
    let ctx = || containerd_shim_protos::ttrpc::context::with_timeout(10_000_000_000);
    let id = "late".to_string();
    tasks
        .create(
            ctx(),
            &CreateTaskRequest {
                id: id.clone(),
                bundle: bundle.to_string_lossy().into_owned(),
                stdout: fifo.to_string_lossy().into_owned(),
                ..Default::default()
            },
        )
        .unwrap();
    tasks
        .start(
            ctx(),
            &StartRequest {
                id: id.clone(),
                ..Default::default()
            },
        )
        .unwrap();
    let waited = tasks
        .wait(
            ctx(),
            &WaitRequest {
                id: id.clone(),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(waited.exit_status, 0);
    assert_eq!(reader.join().unwrap(), "/files.wasm\nargs\nlate\nreader\n");
    tasks
        .delete(
            ctx(),
            &DeleteRequest {
                id,
                ..Default::default()
            },
        )
        .unwrap();
}

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
    std::fs::write(&big, crate::escapes::many_functions(200_000)).unwrap();
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
