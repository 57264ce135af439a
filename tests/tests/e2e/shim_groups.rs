//! Groups under containerd: one shim for a group's containers, another for everyone else, many
//! at once, and a pod's native sidecar beside its wasm containers.

use crate::ctrd::{BUSYBOX, FILES, alive, shim_socket};
use crate::shim::{wait_until, with_images};

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
