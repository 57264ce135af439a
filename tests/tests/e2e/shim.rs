//! The containerd shim, driven through a real containerd with `ctr`: wasm images as containers,
//! the task service, stdio, events, grouping, native containers through runc, survival.

use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use crate::ctrd::{
    BUSYBOX, Containerd, EventLog, FILES, HELLO, HELLO_ARTIFACT, HELLO_CONVERTED, Images,
    PRECOMPILED, RUNTIME, WAT, alive, parse_time, shim_socket, signal,
};

pub(crate) fn with_images(names: &[&str]) -> Containerd {
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
pub(crate) fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which is in parentheses): state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    n(11) + n(12)
}

/// Waits until the daemon's only shim has burned 10 more ticks of CPU: a sign that the guest it
/// runs is spinning, not still starting.
pub(crate) fn wait_spinning(c: &Containerd) {
    let shim = c.shims()[0];
    let start = cpu_ticks(shim);
    wait_until("the guest spins", || cpu_ticks(shim) >= start + 10);
}

/// Waits until the echo server whose container log is `log` has found its listening socket.
pub(crate) fn wait_listening(log: &std::path::Path) {
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
    // The devices of /dev, which wasmbox answers itself.
    let out = c.run(&[], FILES, "dev", &["/app.wasm", "dev"]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(out.stdout, crate::devices::ANSWERS, "{out:#?}");
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
    let out = crate::common::fed(
        c.ctr_cmd().args([
            "run",
            "--rm",
            "--runtime",
            RUNTIME,
            FILES,
            "stdin",
            "/app.wasm",
            "stdin",
        ]),
        input.as_bytes(),
    );
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
