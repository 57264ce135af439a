//! Pods through the CRI plugin, continued: kubelet's mounts, exec and logs, memory limits, network
//! grants by annotation, volumes, the pod's cgroup, runc's pause container, runc's shim with
//! wasmbox as its binary.

use super::*;

#[test]
fn kubelets_single_file_mounts_and_termination_message_reach_a_wasm_guest() {
    let cri = Cri::start(&[FILES]);
    let pod = cri.pod("files");
    let pod_id = cri.run_pod(&pod, &handler());
    // What kubelet mounts in each container besides containerd's /etc files: the termination
    // message file (a fresh empty file of its own), and here one read-only config file.
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("settings"), "mode=strict\n").unwrap();
    std::fs::write(host.path().join("sibling"), "never shown").unwrap();
    let run = |name: &str, args: &[&str]| -> (ContainerStatus, String) {
        let log = host.path().join(format!("{name}-termination-log"));
        std::fs::write(&log, "").unwrap();
        let mut c = container(name, FILES, args);
        c.mounts = vec![
            Mount {
                container_path: "/dev/termination-log".into(),
                host_path: log.to_string_lossy().into_owned(),
                ..Default::default()
            },
            Mount {
                container_path: "/etc/app/settings".into(),
                host_path: host.path().join("settings").to_string_lossy().into_owned(),
                readonly: true,
                ..Default::default()
            },
        ];
        let id = cri.create(&pod_id, &pod, c);
        cri.start_container(&id);
        let st = cri.wait_state(&id, ContainerState::ContainerExited);
        let out = cri
            .log(&pod, name)
            .lines()
            .filter_map(|l| l.splitn(4, ' ').nth(3))
            .collect::<Vec<_>>()
            .join("\n");
        (st, out)
    };
    let (st, out) = run("hostname", &["cat", "/etc/hostname"]);
    assert_eq!((st.exit_code, out.trim()), (0, "files"), "{st:#?}");
    let (st, out) = run("hosts", &["cat", "/etc/hosts"]);
    assert_eq!(st.exit_code, 0, "{out}");
    assert!(out.contains("localhost"), "{out}");
    let (st, out) = run("resolv", &["cat", "/etc/resolv.conf"]);
    assert_eq!(st.exit_code, 0, "{out}");
    // Only the bound files: nothing else of their host directories.
    let (_, out) = run("etc", &["ls", "/etc"]);
    assert_eq!(out, "app\nhostname\nhosts\nresolv.conf");
    let (_, out) = run("app", &["ls", "/etc/app"]);
    assert_eq!(out, "settings");
    // The kernel refuses the write (EROFS, which WASI reports as an I/O error).
    let (st, out) = run("readonly", &["write", "/etc/app/settings", "x"]);
    assert_eq!(st.exit_code, 1, "{out}");
    assert!(out.starts_with("error: "), "{out}");
    assert_eq!(
        std::fs::read_to_string(host.path().join("settings")).unwrap(),
        "mode=strict\n"
    );
    // The termination message, read as kubelet reads it: from the host file of the mount at
    // the container's terminationMessagePath, which ContainerStatus lists.
    let (st, _) = run(
        "message",
        &["write", "/dev/termination-log", "config invalid: mode"],
    );
    assert_eq!(st.exit_code, 0);
    let mount = st
        .mounts
        .iter()
        .find(|m| m.container_path == "/dev/termination-log")
        .expect("the termination-log mount in the status");
    assert_eq!(
        std::fs::read_to_string(&mount.host_path).unwrap(),
        "config invalid: mode"
    );
    cri.remove_pod(&pod_id);
}

#[test]
fn exec_runs_wasm_programs_in_the_container_and_logs_can_be_reopened() {
    let cri = Cri::start(&[FILES, HTTP_HELLO]);
    let pod = cri.pod("exec");
    let pod_id = cri.run_pod(&pod, &handler());
    let id = cri.create(&pod_id, &pod, container("app", FILES, &["sleep", "600000"]));
    cri.start_container(&id);
    cri.wait_state(&id, ContainerState::ContainerRunning);

    // ExecSync, as liveness probes and `kubectl exec` without a terminal use it.
    let out = cri.exec_sync(&id, &["/app.wasm", "args", "x"], 30).unwrap();
    assert_eq!(
        (out.exit_code, String::from_utf8_lossy(&out.stdout).as_ref()),
        (0, "/app.wasm\nargs\nx\n")
    );
    let out = cri.exec_sync(&id, &["/app.wasm", "exit", "3"], 30).unwrap();
    assert_eq!(out.exit_code, 3);
    // The container's capabilities, nothing more: its rootfs, not the host's.
    let out = cri.exec_sync(&id, &["/app.wasm", "ls", "/"], 30).unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("app.wasm"));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("usr"));
    // A probe's timeout ends the program.
    let t = Instant::now();
    let late = cri.exec_sync(&id, &["/app.wasm", "sleep", "600000"], 1);
    assert!(late.is_err(), "{late:?}");
    assert!(t.elapsed() < Duration::from_secs(30));
    // A native program is refused in a wasm container, clearly.
    let native = cri.exec_sync(&id, &["/bin/sh", "-c", "true"], 30);
    let e = native.unwrap_err();
    assert!(
        e.message().contains("\"/bin/sh\" does not exist"),
        "{}",
        e.message()
    );

    // Streaming exec through the CRI streaming server.
    let s = cri.exec_stream(&id, &["/app.wasm", "args", "streamed"]);
    assert_eq!(
        (s.exit_code(), s.stdout.as_str()),
        (0, "/app.wasm\nargs\nstreamed\n")
    );
    let s = cri.exec_stream(&id, &["/app.wasm", "exit", "4"]);
    assert_eq!(s.exit_code(), 4, "{s:?}");
    assert_eq!(
        cri.status(&id).state,
        ContainerState::ContainerRunning as i32
    );

    // ReopenContainerLog, as kubelet's log rotation uses it: an HTTP component logs one access
    // line per request; after the rename and reopen, the next line goes to the new file.
    let web = cri.create(&pod_id, &pod, container("web", HTTP_HELLO, &[]));
    cri.start_container(&web);
    let ip = cri.pod_status(&pod_id).status.unwrap().network.unwrap().ip;
    let addr = format!("{ip}:8080");
    let get = |path: &'static str| {
        let addr = addr.clone();
        cri.netns.run(move || http_get(&addr, path))
    };
    let first = get("/first");
    assert!(
        first.starts_with("HTTP/1.1 404"),
        "{first}\n{}",
        cri.log(&pod, "web")
    );
    let log = Path::new(&pod.log_directory).join("web/0.log");
    wait_until("the first access line", || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("method=GET path=/first "))
    });
    let rotated = log.with_extension("log.1");
    std::fs::rename(&log, &rotated).unwrap();
    cri.call(cri.rs().reopen_container_log(ReopenContainerLogRequest {
        container_id: web.clone(),
    }))
    .unwrap();
    assert!(get("/second").starts_with("HTTP/1.1 404"));
    wait_until("the second access line in the new file", || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("method=GET path=/second "))
    });
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(
        old.contains("path=/first ") && !old.contains("path=/second "),
        "{old}"
    );
    cri.remove_pod(&pod_id);
}

#[test]
fn memory_limits_end_a_guest_as_oomkilled_and_change_live() {
    let cri = Cri::start(&[FILES, WAT]);
    let pod = cri.pod("memory");
    let pod_id = cri.run_pod(&pod, &handler());
    // resources.limits.memory: 16 MiB, and the guest asks for 64.
    let mut hungry = container("hungry", FILES, &["alloc", "64"]);
    hungry
        .linux
        .as_mut()
        .unwrap()
        .resources
        .as_mut()
        .unwrap()
        .memory_limit_in_bytes = 16 << 20;
    let hungry = cri.create(&pod_id, &pod, hungry);
    cri.start_container(&hungry);
    let st = cri.wait_state(&hungry, ContainerState::ContainerExited);
    assert_eq!(
        (st.exit_code, st.reason.as_str()),
        (137, "OOMKilled"),
        "{st:#?}"
    );
    // UpdateContainerResources lowers a running guest's limit: it ends at its next growth.
    let mut grow = container("grow", WAT, &[]);
    grow.command = vec!["/grow.wasm".into()];
    let grow = cri.create(&pod_id, &pod, grow);
    cri.start_container(&grow);
    cri.wait_state(&grow, ContainerState::ContainerRunning);
    cri.update_memory(&grow, 2 << 20);
    let st = cri.wait_state(&grow, ContainerState::ContainerExited);
    assert_eq!(
        (st.exit_code, st.reason.as_str()),
        (137, "OOMKilled"),
        "{st:#?}"
    );
    cri.remove_pod(&pod_id);
}

#[test]
fn pod_annotations_grant_the_network_and_a_guest_without_a_grant_has_none() {
    let cri = Cri::start(&[ECHO, NET_PROBE]);
    // A server pod: its grant lets the echo server listen on the pod's port 7000.
    let mut server = cri.pod("server");
    server
        .annotations
        .insert("wasmbox.net.listen".into(), "0.0.0.0:7000".into());
    let server_id = cri.run_pod(&server, &handler());
    let echo = cri.create(&server_id, &server, container("echo", ECHO, &[]));
    cri.start_container(&echo);
    wait_until("the echo server listens", || {
        cri.log(&server, "echo").contains("listening on fd")
    });
    let ip = cri
        .pod_status(&server_id)
        .status
        .unwrap()
        .network
        .unwrap()
        .ip;
    let target = format!("{ip}:7000");
    let probe = |pod: &PodSandboxConfig, pod_id: &str, name: &str| {
        let id = cri.create(
            pod_id,
            pod,
            container(name, NET_PROBE, &["connect", &ip, "7000"]),
        );
        cri.start_container(&id);
        let st = cri.wait_state(&id, ContainerState::ContainerExited);
        (st.exit_code, cri.log(pod, name))
    };
    // A client pod granted that address.
    let mut granted = cri.pod("granted");
    granted
        .annotations
        .insert("wasmbox.net.connect".into(), target.clone());
    let granted_id = cri.run_pod(&granted, &handler());
    let (code, log) = probe(&granted, &granted_id, "client");
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("stdout F connected"), "{log}");
    // A pod without grants has an IP, but its guest has no network.
    let bare = cri.pod("bare");
    let bare_id = cri.run_pod(&bare, &handler());
    assert!(
        !cri.pod_status(&bare_id)
            .status
            .unwrap()
            .network
            .unwrap()
            .ip
            .is_empty()
    );
    let (code, log) = probe(&bare, &bare_id, "client");
    assert_eq!(code, 1, "{log}");
    assert!(log.contains("stdout F error: access-denied"), "{log}");
    for id in [&granted_id, &bare_id, &server_id] {
        cri.remove_pod(id);
    }
}

#[test]
fn volumes_are_bind_mounts_with_read_only_enforced() {
    let cri = Cri::start(&[FILES]);
    let pod = cri.pod("volumes");
    let pod_id = cri.run_pod(&pod, &handler());
    let host = tempfile::tempdir().unwrap();
    let (config, scratch) = (host.path().join("config"), host.path().join("scratch"));
    std::fs::create_dir_all(&config).unwrap();
    std::fs::create_dir_all(&scratch).unwrap();
    std::fs::write(config.join("app.conf"), "level=3").unwrap();
    let mounts = vec![
        // A hostPath volume mounted readOnly.
        Mount {
            container_path: "/config".into(),
            host_path: config.to_string_lossy().into_owned(),
            readonly: true,
            ..Default::default()
        },
        // An emptyDir: a host directory of kubelet's, writable.
        Mount {
            container_path: "/scratch".into(),
            host_path: scratch.to_string_lossy().into_owned(),
            ..Default::default()
        },
    ];
    let run = |name: &str, args: &[&str]| {
        let mut c = container(name, FILES, args);
        c.mounts = mounts.clone();
        let id = cri.create(&pod_id, &pod, c);
        cri.start_container(&id);
        let st = cri.wait_state(&id, ContainerState::ContainerExited);
        (st.exit_code, cri.log(&pod, name))
    };
    let (code, log) = run("read", &["cat", "/config/app.conf"]);
    assert_eq!(code, 0, "{log}");
    // No newline at its end: a partial line (`P`) in the CRI format.
    assert!(log.contains("stdout P level=3"), "{log}");
    let (code, _) = run("write-ro", &["write", "/config/app.conf", "x"]);
    assert_eq!(code, 1);
    let (code, _) = run("create-ro", &["write", "/config/new", "x"]);
    assert_eq!(code, 1);
    assert_eq!(
        std::fs::read_to_string(config.join("app.conf")).unwrap(),
        "level=3"
    );
    assert!(!config.join("new").exists());
    let (code, log) = run("write-rw", &["write", "/scratch/out", "done"]);
    assert_eq!(code, 0, "{log}");
    assert_eq!(
        std::fs::read_to_string(scratch.join("out")).unwrap(),
        "done"
    );
    cri.remove_pod(&pod_id);
}

/// A pod cgroup as kubelet makes one (cgroupfs driver): `/wasmbox-test-PID-N/podNAME` in every
/// cgroup hierarchy, with a CPU limit; removed with everything below it when dropped.
struct PodCgroupDir {
    /// The cgroup path, as `cgroup_parent` names it.
    path: String,
}

/// The mount point of the v1 hierarchy holding `controller` (`cpu` alone, or `cpu,cpuacct`),
/// or of cgroup v2.
fn cgroup_mount(controller: &str) -> PathBuf {
    let root = Path::new("/sys/fs/cgroup");
    for name in [controller, "cpu,cpuacct"] {
        let dir = root.join(name);
        if dir.join("tasks").exists() && (name == controller || controller.starts_with("cpu")) {
            return dir;
        }
    }
    assert!(
        root.join("cgroup.controllers").exists(),
        "no cgroup hierarchy for {controller}"
    );
    root.to_path_buf()
}

impl PodCgroupDir {
    /// A pod cgroup path nobody made (as for a pod run without kubelet); removed, with whatever
    /// was made there, when dropped.
    fn unmade(name: &str) -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let top = format!(
            "wasmbox-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        );
        PodCgroupDir {
            path: format!("/{top}/pod{name}"),
        }
    }

    /// Makes the pod's cgroup with a CPU limit of `quota_us` per 100 ms.
    fn new(name: &str, quota_us: u64) -> Self {
        let made = Self::unmade(name);
        let path = made.path.as_str();
        // In every hierarchy, as kubelet makes a pod's cgroup (systemd's own one aside).
        for e in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
            let m = e.path();
            let v1 = m.join("cgroup.procs").exists() && !m.ends_with("systemd");
            if v1
                && !std::fs::symlink_metadata(&m)
                    .unwrap()
                    .file_type()
                    .is_symlink()
            {
                std::fs::create_dir_all(m.join(path.trim_start_matches('/'))).unwrap();
            }
        }
        if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            std::fs::create_dir_all(Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/')))
                .unwrap();
        }
        let cpu = cgroup_mount("cpu").join(path.trim_start_matches('/'));
        if cpu.join("cpu.cfs_quota_us").exists() {
            std::fs::write(cpu.join("cpu.cfs_period_us"), "100000").unwrap();
            std::fs::write(cpu.join("cpu.cfs_quota_us"), quota_us.to_string()).unwrap();
        } else {
            std::fs::write(cpu.join("cpu.max"), format!("{quota_us} 100000")).unwrap();
        }
        made
    }

    /// Its top directory in the cpu hierarchy.
    fn top_dir(&self) -> PathBuf {
        cgroup_mount("cpu").join(self.path.split('/').nth(1).unwrap())
    }

    /// The CPU time used in it (and below), in nanoseconds.
    fn cpu_ns(&self) -> u64 {
        let dir = cgroup_mount("cpuacct").join(self.path.trim_start_matches('/'));
        if let Ok(v) = std::fs::read_to_string(dir.join("cpuacct.usage")) {
            return v.trim().parse().unwrap();
        }
        stat_field(&dir.join("cpu.stat"), "usage_usec") * 1000
    }

    /// How many periods its CPU limit throttled.
    fn throttled(&self) -> u64 {
        let dir = cgroup_mount("cpu").join(self.path.trim_start_matches('/'));
        stat_field(&dir.join("cpu.stat"), "nr_throttled")
    }

    /// The shim's cgroup below it, in the cpu hierarchy.
    fn shim_dir(&self) -> PathBuf {
        cgroup_mount("cpu")
            .join(self.path.trim_start_matches('/'))
            .join("wasmbox")
    }
}

fn stat_field(file: &Path, key: &str) -> u64 {
    let text = std::fs::read_to_string(file).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{key} in {}: {text}", file.display()))
}

impl Drop for PodCgroupDir {
    fn drop(&mut self) {
        let top = self.path.split('/').nth(1).unwrap().to_string();
        let Ok(mounts) = std::fs::read_dir("/sys/fs/cgroup") else {
            return;
        };
        let mut roots: Vec<PathBuf> = mounts.flatten().map(|e| e.path().join(&top)).collect();
        roots.push(Path::new("/sys/fs/cgroup").join(&top));
        for root in roots.into_iter().filter(|r| r.is_dir()) {
            // Deepest first: a cgroup is removed with rmdir once its children are gone.
            let mut dirs = vec![root.clone()];
            let mut i = 0;
            while i < dirs.len() {
                if let Ok(rd) = std::fs::read_dir(&dirs[i]) {
                    dirs.extend(rd.flatten().filter(|e| e.path().is_dir()).map(|e| e.path()));
                }
                i += 1;
            }
            for d in dirs.iter().rev() {
                let _ = std::fs::remove_dir(d);
            }
        }
    }
}

#[test]
fn a_pods_wasm_work_is_charged_to_its_cgroup_and_its_cpu_limit_throttles_it() {
    let cri = Cri::start(&[WAT]);
    // A fifth of a CPU for the pod, as kubelet sets a pod's limit on its cgroup.
    let cg = PodCgroupDir::new("charged", 20_000);
    let mut pod = cri.pod("charged");
    pod.linux.as_mut().unwrap().cgroup_parent = cg.path.clone();
    let pod_id = cri.run_pod(&pod, &handler());
    assert!(
        cg.shim_dir().is_dir(),
        "the shim's cgroup below the pod's: {}",
        cri.ctrd
            .log()
            .lines()
            .filter(|l| l.contains("cgroup"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let mut spin = container("spin", WAT, &[]);
    spin.command = vec!["/spin.wasm".into()];
    let spin = cri.create(&pod_id, &pod, spin);
    cri.start_container(&spin);
    cri.wait_state(&spin, ContainerState::ContainerRunning);
    // The guest's CPU as ContainerStats reports it: until it has used 300 ms.
    let cpu = |id: &str| -> u64 {
        cri.call(cri.rs().container_stats(ContainerStatsRequest {
            container_id: id.into(),
        }))
        .unwrap()
        .stats
        .and_then(|s| s.cpu)
        .and_then(|c| c.usage_core_nano_seconds)
        .map(|v| v.value)
        .unwrap_or(0)
    };
    wait_until("the guest has used 300 ms of CPU", || {
        cpu(&spin) >= 300_000_000
    });
    // The pod's cgroup holds that work, and its limit throttled it.
    let guest = cpu(&spin);
    assert!(cg.cpu_ns() >= guest, "pod {} < guest {guest}", cg.cpu_ns());
    assert!(
        cg.throttled() > 0,
        "the pod's CPU limit never throttled its guest"
    );
    // ContainerStats' memory, and ListPodSandboxStats' CPU, which reads the pod's cgroup.
    let stats = cri
        .call(cri.rs().container_stats(ContainerStatsRequest {
            container_id: spin.clone(),
        }))
        .unwrap()
        .stats
        .unwrap();
    let working_set = stats
        .memory
        .and_then(|m| m.working_set_bytes)
        .map(|v| v.value)
        .unwrap_or(0);
    assert!(working_set >= 64 << 10, "working set {working_set}");
    let pods = cri
        .call(cri.rs().list_pod_sandbox_stats(ListPodSandboxStatsRequest {
            filter: Some(PodSandboxStatsFilter {
                id: pod_id.clone(),
                ..Default::default()
            }),
        }))
        .unwrap()
        .stats;
    let pod_cpu = pods[0]
        .linux
        .as_ref()
        .and_then(|l| l.cpu.as_ref())
        .and_then(|c| c.usage_core_nano_seconds.as_ref())
        .map(|v| v.value)
        .unwrap_or(0);
    assert!(
        pod_cpu >= guest,
        "pod sandbox stats {pod_cpu} < guest {guest}"
    );
    // Removing the pod: the shim leaves the pod's cgroup and removes its own.
    cri.remove_pod(&pod_id);
    wait_until("the pod's shim exits", || cri.ctrd.shims().is_empty());
    assert!(!cg.shim_dir().exists());
}

#[test]
fn with_wasmbox_sandbox_runc_a_pod_keeps_runcs_pause_container() {
    let cri = Cri::start_with_env(&[HELLO], &[("WASMBOX_SANDBOX", "runc")]);
    let pod = cri.pod("paused");
    let pod_id = cri.run_pod(&pod, &handler());
    assert_eq!(cri.runc_containers(), std::slice::from_ref(&pod_id));
    let id = cri.create(&pod_id, &pod, container("hello", HELLO, &[]));
    cri.start_container(&id);
    let st = cri.wait_state(&id, ContainerState::ContainerExited);
    assert_eq!((st.exit_code, st.reason.as_str()), (0, "Completed"));
    let pod_netns = cri.pod_netns(&pod_id);
    cri.remove_pod(&pod_id);
    cri.assert_nothing_left(&pod_netns);
}

#[test]
fn a_pod_on_the_runc_shim_with_wasmbox_as_its_binary_runs_wasm_and_native_containers() {
    let cri = Cri::start(&[HELLO, BUSYBOX]);
    let pod = cri.pod("runcshim");
    let pod_id = cri.run_pod(&pod, RUNC_SHIM_HANDLER);
    assert_eq!(
        cri.pod_status(&pod_id).status.unwrap().state,
        PodSandboxState::SandboxReady as i32
    );
    let wasm = cri.create(&pod_id, &pod, container("hello", HELLO, &[]));
    let mut native = container("native", BUSYBOX, &["echo", "native"]);
    native.command = vec!["/bin/busybox".into()];
    let native = cri.create(&pod_id, &pod, native);
    cri.start_container(&wasm);
    cri.start_container(&native);
    let done = cri.wait_state(&wasm, ContainerState::ContainerExited);
    assert_eq!(done.exit_code, 0, "{done:#?}\n{}", cri.ctrd.log_tail());
    assert!(cri.log(&pod, "hello").contains("Hello from wasmbox!"));
    let done = cri.wait_state(&native, ContainerState::ContainerExited);
    assert_eq!(done.exit_code, 0, "{done:#?}");
    assert!(cri.log(&pod, "native").contains("native"));
    cri.remove_pod(&pod_id);
}

#[test]
fn a_pod_run_without_kubelet_gets_a_cgroup_and_its_stats_read_from_it() {
    let cri = Cri::start(&[WAT]);
    // No kubelet: the pod's cgroup_parent names a cgroup nobody made (as under crictl); runc's
    // pause container would make it, and the shim makes it instead.
    let cg = PodCgroupDir::unmade("nokubelet");
    let mut pod = cri.pod("nokubelet");
    pod.linux.as_mut().unwrap().cgroup_parent = cg.path.clone();
    let pod_id = cri.run_pod(&pod, &handler());
    assert!(cg.shim_dir().is_dir(), "the shim's cgroup below the pod's");
    let mut spin = container("spin", WAT, &[]);
    spin.command = vec!["/spin.wasm".into()];
    let spin = cri.create(&pod_id, &pod, spin);
    cri.start_container(&spin);
    cri.wait_state(&spin, ContainerState::ContainerRunning);
    wait_until("the pod has used 100 ms of CPU", || {
        cg.cpu_ns() >= 100_000_000
    });
    // ListPodSandboxStats reads the pod's cgroup: CPU and memory, the guest's included.
    let pods = cri
        .call(cri.rs().list_pod_sandbox_stats(ListPodSandboxStatsRequest {
            filter: Some(PodSandboxStatsFilter {
                id: pod_id.clone(),
                ..Default::default()
            }),
        }))
        .unwrap_or_else(|e| panic!("ListPodSandboxStats: {e}\n{}", cri.ctrd.log_tail()))
        .stats;
    let linux = pods[0].linux.as_ref().unwrap();
    let cpu = linux
        .cpu
        .as_ref()
        .and_then(|c| c.usage_core_nano_seconds.as_ref())
        .map_or(0, |v| v.value);
    assert!(cpu >= 100_000_000, "pod CPU {cpu}");
    let memory = linux
        .memory
        .as_ref()
        .and_then(|m| m.working_set_bytes.as_ref())
        .map_or(0, |v| v.value);
    assert!(memory >= 1 << 20, "pod working set {memory}");
    // Removing the pod: what the shim made for it is gone.
    cri.remove_pod(&pod_id);
    wait_until("the pod's shim exits", || cri.ctrd.shims().is_empty());
    assert!(!cg.top_dir().exists(), "{}", cg.top_dir().display());
}
