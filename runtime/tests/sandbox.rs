//! The runtime API as the shim and CLI use it: prepare then start, kill from another thread,
//! many guests at once, the compiled-code cache.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmbox_runtime::{
    ExitReason, Input, LoadedFrom, Output, Policy, Program, Runtime, RuntimeConfig, Stdio,
};

fn example(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(rel)
}

fn runtime() -> Runtime {
    Runtime::new(RuntimeConfig::default()).unwrap()
}

fn files(rt: &Runtime) -> Program {
    rt.load_file(&example("files/files.wasm")).unwrap().0
}

fn policy(args: &[&str]) -> Policy {
    Policy {
        args: std::iter::once("files")
            .chain(args.iter().copied())
            .map(String::from)
            .collect(),
        cwd: "/".into(),
        ..Default::default()
    }
}

/// Prepares and starts `prog` under `p` with its stdout captured in memory.
fn start_capturing(rt: &Runtime, prog: &Program, p: Policy) -> (wasmbox_runtime::Running, Output) {
    let out = Output::memory();
    let running = rt
        .prepare(prog, p)
        .unwrap()
        .start(Stdio {
            stdout: out.clone(),
            ..Default::default()
        })
        .unwrap();
    (running, out)
}

/// The `files` policy with no arguments and a memory limit.
fn limited(bytes: u64) -> Policy {
    Policy {
        limits: wasmbox_runtime::Limits {
            memory: Some(bytes),
            ..Default::default()
        },
        ..policy(&[])
    }
}

#[test]
fn prepare_then_start_and_capture_output() {
    let rt = runtime();
    let prog = files(&rt);
    let prepared = rt.prepare(&prog, policy(&["args", "x"])).unwrap();
    let out = Output::memory();
    let running = prepared
        .start(Stdio {
            stdout: out.clone(),
            ..Default::default()
        })
        .unwrap();
    let st = running.wait();
    assert!(st.success(), "{st}");
    assert_eq!(
        String::from_utf8(out.contents()).unwrap(),
        "files\nargs\nx\n"
    );
}

fn assert_killed_fast(args: &[&str], stdin: Input) {
    let rt = runtime();
    let prog = files(&rt);
    let running = rt
        .prepare(&prog, policy(args))
        .unwrap()
        .start(Stdio {
            stdin,
            ..Default::default()
        })
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        running.try_status().is_none(),
        "guest should still be running"
    );
    let kill = running.kill_handle();
    let t = Instant::now();
    let killer = std::thread::spawn(move || kill.kill(9));
    assert!(killer.join().unwrap());
    let st = running.wait();
    let took = t.elapsed();
    assert_eq!(st.reason, ExitReason::Signaled(9));
    assert_eq!(st.code(), 137);
    assert!(took < Duration::from_millis(100), "kill took {took:?}");
    assert!(!running.kill_handle().kill(15), "a second kill is a no-op");
}

#[test]
fn kill_a_looping_guest_from_another_thread_within_100ms() {
    assert_killed_fast(&["loop"], Input::Null);
}

#[test]
fn kill_a_guest_blocked_in_a_read_within_100ms() {
    // A pipe whose write end stays open: the guest's read blocks forever.
    let (r, w) = std::io::pipe().unwrap();
    let r: std::fs::File = std::os::fd::OwnedFd::from(r).into();
    assert_killed_fast(&["stdin"], Input::File(r));
    drop(w);
}

#[test]
fn kill_a_sleeping_guest_within_100ms() {
    assert_killed_fast(&["sleep", "60000"], Input::Null);
}

#[test]
fn many_guests_from_many_threads() {
    let rt = runtime();
    let prog = Arc::new(files(&rt));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let rt = rt.clone();
            let prog = prog.clone();
            std::thread::spawn(move || {
                let running: Vec<_> = (0..8)
                    .map(|i| {
                        let code = (t * 8 + i).to_string();
                        rt.prepare(&prog, policy(&["exit", &code]))
                            .unwrap()
                            .start(Stdio::default())
                            .unwrap()
                    })
                    .collect();
                running
                    .iter()
                    .enumerate()
                    .map(|(i, r)| {
                        assert_eq!(r.wait().code() as usize, t * 8 + i);
                    })
                    .count()
            })
        })
        .collect();
    let done: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(done, 64);
}

#[test]
fn looping_guests_do_not_starve_each_other() {
    let rt = runtime();
    let prog = files(&rt);
    let loops: Vec<_> = (0..6)
        .map(|_| {
            rt.prepare(&prog, policy(&["loop"]))
                .unwrap()
                .start(Stdio::default())
                .unwrap()
        })
        .collect();
    // With more loopers than executor threads, a short guest still finishes promptly.
    let t = Instant::now();
    let st = rt
        .prepare(&prog, policy(&["exit", "5"]))
        .unwrap()
        .start(Stdio::default())
        .unwrap()
        .wait();
    assert_eq!(st.code(), 5);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    for l in &loops {
        l.kill_handle().kill(15);
        assert_eq!(l.wait().code(), 143);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_inside_a_tokio_runtime() {
    let rt = runtime();
    let prog = files(&rt);
    let running = rt
        .prepare(&prog, policy(&["exit", "3"]))
        .unwrap()
        .start(Stdio::default())
        .unwrap();
    assert_eq!(running.wait_async().await.code(), 3);
}

#[test]
fn cache_hit_on_second_load_and_across_runtimes() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = RuntimeConfig {
        cache_dir: Some(dir.path().join("cache")),
        ..Default::default()
    };
    let wasm = example("hello/hello.wasm");
    let rt = Runtime::new(cfg.clone()).unwrap();
    assert_eq!(rt.load_file(&wasm).unwrap().1, LoadedFrom::Compiled);
    // The same runtime shares its compiled copy.
    assert_eq!(rt.load_file(&wasm).unwrap().1, LoadedFrom::Memory);
    rt.flush_cache();
    let rt2 = Runtime::new(cfg).unwrap();
    let (prog, from) = rt2.load_file(&wasm).unwrap();
    assert_eq!(from, LoadedFrom::Cache);
    let (running, out) = start_capturing(&rt2, &prog, policy(&[]));
    let st = running.wait();
    assert!(st.success());
    assert!(
        String::from_utf8(out.contents())
            .unwrap()
            .starts_with("Hello from wasmbox!")
    );
}

#[test]
fn damaged_cache_entry_is_recompiled() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = RuntimeConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        ..Default::default()
    };
    let wasm = example("hello/hello.wasm");
    let rt = Runtime::new(cfg.clone()).unwrap();
    rt.load_file(&wasm).unwrap();
    rt.flush_cache();
    let entry = std::fs::read_dir(dir.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::write(&entry, b"garbage").unwrap();
    let rt = Runtime::new(cfg.clone()).unwrap();
    assert_eq!(rt.load_file(&wasm).unwrap().1, LoadedFrom::Compiled);
    drop(rt);
    let rt = Runtime::new(cfg).unwrap();
    assert_eq!(rt.load_file(&wasm).unwrap().1, LoadedFrom::Cache);
}

#[test]
fn components_run_and_can_be_killed() {
    let rt = runtime();
    let (prog, _) = rt
        .load_file(&example("hello-component/hello-component.wasm"))
        .unwrap();
    assert!(prog.is_component());
    let (running, out) = start_capturing(&rt, &prog, policy(&["z"]));
    let st = running.wait();
    assert!(st.success(), "{st}");
    assert_eq!(
        String::from_utf8(out.contents()).unwrap(),
        "Hello from wasmbox!\nargs: z\n"
    );
    let looping = wat_component_loop();
    let (prog, _) = rt.load("loop.wat", looping.as_bytes()).unwrap();
    let p = Policy {
        export: Some("spin".into()),
        ..policy(&[])
    };
    let running = rt
        .prepare(&prog, p)
        .unwrap()
        .start(Stdio::default())
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    running.kill_handle().kill(15);
    assert_eq!(running.wait().code(), 143);
    assert!(t.elapsed() < Duration::from_millis(100));
}

fn wat_component_loop() -> String {
    r#"(component
         (core module $m (func (export "spin") (loop $l (br $l))))
         (core instance $i (instantiate $m))
         (func (export "spin") (canon lift (core func $i "spin"))))"#
        .to_string()
}

/// Component-model handles, which a guest makes with no host call (here streams, by
/// `stream.new`), are capped per guest by its handle limit: the same component that makes 5,000
/// streams and returns runs under the default limit, and traps under a small one.
#[test]
fn component_model_handles_are_capped_by_the_handle_limit() {
    let rt = runtime();
    let wat = r#"(component
        (type $s (stream u8))
        (core func $new (canon stream.new $s))
        (core module $m
          (import "" "new" (func $new (result i64)))
          (func (export "make") (local $i i32)
            (loop $l
              (drop (call $new))
              (local.set $i (i32.add (local.get $i) (i32.const 1)))
              (br_if $l (i32.lt_u (local.get $i) (i32.const 5000))))))
        (core instance $i (instantiate $m (with "" (instance (export "new" (func $new))))))
        (func (export "make") (canon lift (core func $i "make"))))"#;
    let (prog, _) = rt.load("streams.wat", wat.as_bytes()).unwrap();
    let run = |open_handles: Option<u64>| {
        let p = Policy {
            export: Some("make".into()),
            limits: wasmbox_runtime::Limits {
                open_handles,
                ..Default::default()
            },
            ..policy(&[])
        };
        rt.prepare(&prog, p)
            .unwrap()
            .start(Stdio::default())
            .unwrap()
            .wait()
    };
    let st = run(None);
    assert!(st.success(), "{st}");
    let st = run(Some(16));
    assert!(
        matches!(&st.reason, ExitReason::Trap(m) if m.contains("handle limit")),
        "{st}"
    );
}

#[test]
fn component_without_wasi_cli_run_is_refused() {
    let rt = runtime();
    let (prog, _) = rt
        .load("loop.wat", wat_component_loop().as_bytes())
        .unwrap();
    let e = rt
        .prepare(&prog, policy(&[]))
        .err()
        .expect("no wasi:cli/run")
        .to_string();
    assert!(e.contains("wasi:cli/run"), "{e}");
}

#[test]
fn unknown_import_is_a_link_error() {
    let rt = runtime();
    let wat = r#"(module (import "env" "host_secret" (func)) (func (export "_start")))"#;
    let (prog, _) = rt.load("imports.wat", wat.as_bytes()).unwrap();
    let e = rt.prepare(&prog, policy(&[])).err().expect("link error");
    let msg = format!("{e}: {}", std::error::Error::source(&e).unwrap());
    assert!(
        msg.contains("linking imports.wat") && msg.contains("host_secret"),
        "{msg}"
    );
}

#[test]
fn tables_count_against_the_memory_limit() {
    let rt = runtime();
    let wat = r#"(module (table 1000000 funcref) (memory 1) (func (export "_start")))"#;
    let (prog, _) = rt.load("table.wat", wat.as_bytes()).unwrap();
    let st = rt
        .prepare(&prog, limited(1 << 20))
        .unwrap()
        .start(Stdio::default())
        .unwrap()
        .wait();
    assert_eq!(st.reason, ExitReason::MemoryLimit(1 << 20));
}

#[test]
fn output_to_a_pipe_loses_nothing() {
    use std::io::Read;
    let rt = runtime();
    let prog = files(&rt);
    let (mut r, w) = std::io::pipe().unwrap();
    let w: std::fs::File = std::os::fd::OwnedFd::from(w).into();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        r.read_to_string(&mut s).unwrap();
        s
    });
    let running = rt
        .prepare(&prog, policy(&["spam", "50000"]))
        .unwrap()
        .start(Stdio {
            stdout: Output::File(Arc::new(w)),
            ..Default::default()
        })
        .unwrap();
    assert!(running.wait().success());
    drop(running);
    let s = reader.join().unwrap();
    let lines: Vec<&str> = s.lines().collect();
    assert_eq!(lines.len(), 50000);
    assert_eq!(lines[49999], "line 50000");
}

#[test]
fn a_paused_guest_makes_no_progress_and_resumes_where_it_was() {
    let rt = runtime();
    let (prog, _) = rt.load_file(&example("wat/dots.wat")).unwrap();
    let (running, out) = start_capturing(&rt, &prog, policy(&[]));
    std::thread::sleep(Duration::from_millis(100));
    assert!(running.pause());
    assert!(!running.pause(), "pausing twice is refused");
    // Within one epoch tick the guest stops.
    std::thread::sleep(Duration::from_millis(50));
    let (len, cpu) = (out.contents().len(), running.usage().cpu);
    assert!(len > 0, "the guest printed before the pause");
    assert!(running.usage().paused);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(out.contents().len(), len, "no output while paused");
    assert_eq!(running.usage().cpu, cpu, "no CPU time while paused");
    assert!(running.try_status().is_none());
    assert!(running.resume());
    std::thread::sleep(Duration::from_millis(100));
    assert!(out.contents().len() > len, "output continues after resume");
    assert!(running.usage().cpu > cpu);
    // A paused guest can still be killed at once.
    assert!(running.pause());
    running.kill_handle().kill(15);
    assert_eq!(running.wait().code(), 143);
}

/// CPU time is split as the kernel measures it: a guest that faults in 64 MiB of fresh pages
/// (kernel work on its thread) has system time, its counting loop adds user time, and the two
/// parts make up the whole.
#[test]
fn cpu_time_is_split_into_user_and_system() {
    let rt = runtime();
    let (prog, _) = rt.load_file(&example("wat/touch.wat")).unwrap();
    let running = rt
        .prepare(&prog, policy(&[]))
        .unwrap()
        .start(Stdio::default())
        .unwrap();
    assert_eq!(running.wait().code(), 0);
    let u = running.usage();
    assert!(
        u.cpu_system >= Duration::from_millis(1),
        "about 16,000 page faults take kernel time: {u:?}"
    );
    assert!(u.cpu_system <= u.cpu, "{u:?}");
    assert!(
        u.cpu - u.cpu_system >= Duration::from_millis(100),
        "counting to 2^30 is user time: {u:?}"
    );
}

#[test]
fn a_lower_memory_limit_applies_to_a_running_guest() {
    let rt = runtime();
    let (prog, _) = rt.load_file(&example("wat/grow.wat")).unwrap();
    let running = rt
        .prepare(&prog, limited(1 << 30))
        .unwrap()
        .start(Stdio::default())
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let used = running.usage().memory;
    assert!(used > 64 << 10, "the guest has grown: {used}");
    assert_eq!(running.usage().memory_limit, Some(1 << 30));
    running.set_memory_limit(Some(used + (64 << 10)));
    let st = running.wait();
    assert_eq!(
        st.reason,
        ExitReason::MemoryLimit(used + (64 << 10)),
        "{st}"
    );
}

#[test]
fn guest_threads_cannot_exec_trace_or_mount() {
    // Native code reaching a guest thread (here, a closure run on one) meets the seccomp filter.
    let rt = runtime();
    let exec = rt
        .on_guest_thread(|| std::process::Command::new("/bin/true").status().map(|_| ()))
        .unwrap();
    assert_eq!(
        exec.unwrap_err().raw_os_error(),
        Some(libc::EPERM),
        "exec is denied on a guest thread"
    );
    #[allow(unsafe_code, reason = "plain syscalls without memory arguments")]
    let (unshare, ptrace) = rt
        .on_guest_thread(|| unsafe {
            let u = libc::unshare(libc::CLONE_NEWNS);
            let u = (u, std::io::Error::last_os_error().raw_os_error());
            let p = libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0);
            (u, (p, std::io::Error::last_os_error().raw_os_error()))
        })
        .unwrap();
    assert_eq!(unshare, (-1, Some(libc::EPERM)));
    assert_eq!(ptrace, (-1, Some(libc::EPERM)));
    // A blocking-pool thread of the executor (where file I/O runs) is filtered too.
    let h = rt.handle();
    let blocking = h
        .block_on(h.spawn_blocking(|| std::process::Command::new("/bin/true").status()))
        .unwrap();
    assert_eq!(blocking.unwrap_err().raw_os_error(), Some(libc::EPERM));
    // Threads outside the executor are not: the test's own thread still execs.
    assert!(
        std::process::Command::new("/bin/true")
            .status()
            .unwrap()
            .success()
    );
}
