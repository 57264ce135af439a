//! Pods through the CRI plugin: containers to completion, stop, images from a registry, an HTTP
//! component at the pod's IP, the example RuntimeClass.

use super::*;

#[test]
fn a_wasm_pod_runs_containers_to_completion_and_leaves_nothing_when_removed() {
    let cri = Cri::start(&[HELLO, FILES]);
    let pod = cri.pod("jobs");
    let before = now_ns();
    let pod_id = cri.run_pod(&pod, &handler());
    let st = cri.pod_status(&pod_id).status.unwrap();
    assert_eq!(st.state, PodSandboxState::SandboxReady as i32);
    let ip = st.network.unwrap().ip;
    assert!(
        ip.starts_with("10.99.0."),
        "pod IP {ip:?} from the CNI bridge"
    );
    let pod_netns = cri.pod_netns(&pod_id);
    assert!(pod_netns.exists());
    assert_eq!(cri.pods().len(), 1);
    // The shim holds the sandbox: no pause container, no runc call.
    assert_eq!(cri.runc_containers(), Vec::<String>::new());

    // One that succeeds, one that fails.
    let ok = cri.create(&pod_id, &pod, container("hello", HELLO, &["from", "a pod"]));
    let bad = cri.create(&pod_id, &pod, container("fails", FILES, &["exit", "3"]));
    assert_eq!(
        cri.status(&ok).state,
        ContainerState::ContainerCreated as i32
    );
    cri.start_container(&ok);
    cri.start_container(&bad);
    let done = cri.wait_state(&ok, ContainerState::ContainerExited);
    assert_eq!((done.exit_code, done.reason.as_str()), (0, "Completed"));
    // containerd takes the start time when the start call returns, and the finish time from
    // the exit event: for a guest that ends at once the two may be either way round.
    assert!(
        before < done.started_at && before < done.finished_at,
        "{done:#?}"
    );
    let failed = cri.wait_state(&bad, ContainerState::ContainerExited);
    assert_eq!((failed.exit_code, failed.reason.as_str()), (3, "Error"));

    // The CRI log format: `<RFC 3339 time> stdout F <line>`, complete though the guest printed
    // and exited at once.
    let log = cri.log(&pod, "hello");
    let lines: Vec<&str> = log.lines().collect();
    assert!(!lines.is_empty(), "empty log");
    for l in &lines {
        let parts: Vec<&str> = l.splitn(4, ' ').collect();
        assert_eq!(parts.len(), 4, "{l:?}");
        assert!(parts[0].contains('T') && parts[0].ends_with('Z'), "{l:?}");
        assert!(matches!(parts[1], "stdout" | "stderr"), "{l:?}");
        assert_eq!(parts[2], "F", "{l:?}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with("stdout F Hello from wasmbox!")),
        "{log}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with("stdout F args: from a pod")),
        "{log}"
    );

    let listed = cri.containers(&pod_id);
    assert_eq!(listed.len(), 2);
    assert!(
        listed
            .iter()
            .all(|c| c.state == ContainerState::ContainerExited as i32)
    );
    cri.remove_container(&ok);
    cri.remove_container(&bad);
    assert!(cri.containers(&pod_id).is_empty());
    cri.remove_pod(&pod_id);
    assert!(cri.pods().is_empty());
    cri.assert_nothing_left(&pod_netns);
}

#[test]
fn stop_container_ends_a_wasm_guest_at_sigterm_and_a_native_sidecar_at_the_grace_period() {
    let cri = Cri::start(&[WAT, BUSYBOX]);
    let pod = cri.pod("mixed");
    let pod_id = cri.run_pod(&pod, &handler());
    let mut spin = container("spin", WAT, &[]);
    spin.command = vec!["/spin.wasm".into()];
    let spin = cri.create(&pod_id, &pod, spin);
    // PID 1 of its own pid namespace ignores SIGTERM: only the grace period's SIGKILL ends it.
    let mut sidecar = container("sidecar", BUSYBOX, &[]);
    sidecar.command = vec!["sleep".into(), "3600".into()];
    let sidecar = cri.create(&pod_id, &pod, sidecar);
    cri.start_container(&spin);
    cri.start_container(&sidecar);
    cri.wait_state(&spin, ContainerState::ContainerRunning);
    cri.wait_state(&sidecar, ContainerState::ContainerRunning);
    // The sidecar lives in the pod's own UTS (the pod's hostname) and IPC namespaces, which the
    // shim made for the sandbox it holds; not the host's.
    let out = cri.exec_sync(&sidecar, &["hostname"], 30).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "mixed\n");
    let pid = cri.container_pid(&sidecar);
    for ns in ["ipc", "uts"] {
        let theirs = std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap();
        let ours = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        assert_ne!(theirs, ours, "the sidecar's {ns} namespace is the host's");
    }
    // An exec into the sidecar that runc cannot start fails alone: containerd kills and deletes
    // the process that never started, and the pod's shim and containers stay.
    let bad = cri.exec_sync(&sidecar, &["/no/such/program"], 30);
    assert!(
        bad.is_err() || bad.as_ref().is_ok_and(|o| o.exit_code != 0),
        "{bad:?}"
    );
    for id in [&spin, &sidecar] {
        assert_eq!(
            cri.status(id).state,
            ContainerState::ContainerRunning as i32
        );
    }
    assert_eq!(cri.ctrd.shims().len(), 1);
    // A pod PID namespace (shareProcessNamespace) is one the shim cannot hold: refused.
    let mut shared = container("shared-pid", BUSYBOX, &[]);
    shared.command = vec!["sleep".into(), "3600".into()];
    let opts = shared
        .linux
        .as_mut()
        .unwrap()
        .security_context
        .as_mut()
        .unwrap()
        .namespace_options
        .as_mut()
        .unwrap();
    opts.pid = NamespaceMode::Pod as i32;
    std::fs::create_dir_all(Path::new(&pod.log_directory).join("shared-pid")).unwrap();
    // containerd makes the task (the shim's create) at StartContainer.
    let shared = cri.create(&pod_id, &pod, shared);
    let refused = cri
        .call(cri.rs().start_container(StartContainerRequest {
            container_id: shared.clone(),
        }))
        .unwrap_err();
    assert!(
        refused.message().contains("shareProcessNamespace"),
        "{}",
        refused.message()
    );

    let t = Instant::now();
    cri.stop_container(&spin, 30);
    let took = t.elapsed();
    let st = cri.wait_state(&spin, ContainerState::ContainerExited);
    assert_eq!((st.exit_code, st.reason.as_str()), (143, "Error"));
    assert!(took < Duration::from_secs(10), "a wasm guest took {took:?}");

    let t = Instant::now();
    cri.stop_container(&sidecar, 2);
    let took = t.elapsed();
    let st = cri.wait_state(&sidecar, ContainerState::ContainerExited);
    assert_eq!(st.exit_code, 137, "{st:#?}");
    assert!(
        took >= Duration::from_secs(2),
        "killed before its grace period: {took:?}"
    );

    let pod_netns = cri.pod_netns(&pod_id);
    for id in [&spin, &sidecar, &shared] {
        cri.remove_container(id);
    }
    cri.remove_pod(&pod_id);
    cri.assert_nothing_left(&pod_netns);
}

#[test]
fn wasm_images_are_pulled_from_a_registry_over_plain_http_and_run() {
    let mut cri = Cri::start(&[]);
    cri.start_registry();
    cri.push(HELLO, "wasmbox-test/hello:v1");
    let image = format!("{REGISTRY}/wasmbox-test/hello:v1");
    assert!(!cri.image_known(&image));
    let image_ref = cri
        .pull(&image)
        .unwrap_or_else(|e| panic!("PullImage: {e}\n{}", cri.ctrd.log_tail()));
    assert!(image_ref.starts_with("sha256:"), "{image_ref}");
    assert!(cri.image_known(&image));
    let pod = cri.pod("pulled");
    let pod_id = cri.run_pod(&pod, &handler());
    let id = cri.create(&pod_id, &pod, container("hello", &image, &[]));
    cri.start_container(&id);
    let st = cri.wait_state(&id, ContainerState::ContainerExited);
    assert_eq!((st.exit_code, st.reason.as_str()), (0, "Completed"));
    assert!(
        cri.log(&pod, "hello")
            .contains("stdout F Hello from wasmbox!")
    );
    // An artifact (a wasm config and layer, no rootfs) is the form containerd 1.6 cannot unpack
    // (its image config has no rootfs diff ids): its pull fails, saying so. Images for
    // Kubernetes are built `--format compat` (or converted with `wasmbox save --compat`).
    cri.push(HELLO_ARTIFACT, "wasmbox-test/hello-artifact:v1");
    let artifact = format!("{REGISTRY}/wasmbox-test/hello-artifact:v1");
    match cri.pull(&artifact) {
        Err(e) => assert!(
            e.message().contains("failed to unpack image"),
            "{}",
            e.message()
        ),
        Ok(image_ref) => {
            // A containerd that can: it must then run.
            let id = cri.create(&pod_id, &pod, container("artifact", &image_ref, &[]));
            cri.start_container(&id);
            let st = cri.wait_state(&id, ContainerState::ContainerExited);
            assert_eq!(st.exit_code, 0);
        }
    }
    cri.remove_pod(&pod_id);
}

#[test]
fn an_http_component_in_a_pod_is_served_at_the_pod_ip_and_to_its_sidecar() {
    let cri = Cri::start(&[HTTP_HELLO, BUSYBOX]);
    // The example pod: its annotations and memory limit, on its RuntimeClass.
    let example = manifest("pod.yaml");
    assert_eq!(
        example["spec"]["runtimeClassName"].as_str(),
        manifest("runtimeclass.yaml")["metadata"]["name"].as_str()
    );
    let mut pod = cri.pod("web");
    for (k, v) in example["metadata"]["annotations"].as_mapping().unwrap() {
        pod.annotations
            .insert(k.as_str().unwrap().into(), v.as_str().unwrap().into());
    }
    let spec = &example["spec"]["containers"][0];
    let port = spec["ports"][0]["containerPort"].as_u64().unwrap();
    let limit = match spec["resources"]["limits"]["memory"].as_str().unwrap() {
        m if m.ends_with("Mi") => m.trim_end_matches("Mi").parse::<i64>().unwrap() << 20,
        m => panic!("memory limit {m}"),
    };
    let pod_id = cri.run_pod(&pod, &handler());
    let ip = cri.pod_status(&pod_id).status.unwrap().network.unwrap().ip;
    let mut web = container(spec["name"].as_str().unwrap(), HTTP_HELLO, &[]);
    web.annotations = pod.annotations.clone();
    web.linux
        .as_mut()
        .unwrap()
        .resources
        .as_mut()
        .unwrap()
        .memory_limit_in_bytes = limit;
    let web = cri.create(&pod_id, &pod, web);
    let mut sidecar = container("sidecar", BUSYBOX, &[]);
    sidecar.command = vec!["sleep".into(), "3600".into()];
    let sidecar = cri.create(&pod_id, &pod, sidecar);
    cri.start_container(&web);
    cri.start_container(&sidecar);
    cri.wait_state(&sidecar, ContainerState::ContainerRunning);

    // From the node's network namespace, at the pod's IP.
    let addr = format!("{ip}:{port}");
    let answer = cri.netns.run(move || http_get(&addr, "/"));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains("\r\n\r\n10\r\nhello from wasm\n"),
        "{answer}"
    );
    // From the native sidecar, on the pod's localhost.
    let url = format!("http://127.0.0.1:{port}/");
    let out = cri
        .exec_sync(&sidecar, &["wget", "-q", "-O", "-", &url], 30)
        .unwrap();
    assert_eq!(
        (out.exit_code, String::from_utf8_lossy(&out.stdout).as_ref()),
        (0, "hello from wasm\n"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        cri.status(&web).state,
        ContainerState::ContainerRunning as i32
    );
    // Deleting the pod drains the server and removes everything.
    let pod_netns = cri.pod_netns(&pod_id);
    cri.remove_pod(&pod_id);
    cri.assert_nothing_left(&pod_netns);
}

#[test]
fn the_example_runtime_class_and_config_are_what_the_tests_use() {
    let rc = manifest("runtimeclass.yaml");
    assert_eq!(rc["apiVersion"].as_str(), Some("node.k8s.io/v1"));
    let name = rc["metadata"]["name"].as_str().unwrap();
    // The handler is the runtime's name in containerd's CRI configuration.
    let toml = kubernetes("containerd-runtime.toml");
    let table = format!(
        "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.{}]",
        handler()
    );
    assert!(toml.contains(&table), "{toml}");
    assert!(toml.contains(r#"runtime_type = "io.containerd.wasmbox.v1""#));
    // A pod names the class.
    let pod = manifest("pod.yaml");
    assert_eq!(pod["spec"]["runtimeClassName"].as_str(), Some(name));
}
