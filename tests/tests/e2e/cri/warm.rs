//! A node with `wasmbox agent` beside its containerd: an image kubelet pulls (CRI `PullImage`)
//! is compiled before its pod is created, so the pod's create loads compiled code and compiles
//! nothing.

use super::*;

#[test]
fn a_pulled_images_pod_starts_from_what_the_agent_compiled() {
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().to_str().unwrap().to_string();
    let mut cri = Cri::start_with_env(
        &[],
        &[
            ("WASMBOX_CACHE_DIR", &cache_dir),
            ("WASMBOX_LOG", "wasmbox_runtime=debug"),
        ],
    );
    cri.start_registry();
    cri.push(FILES, "wasmbox-test/files:warm");
    let image = format!("{REGISTRY}/wasmbox-test/files:warm");
    let port = crate::common::free_port();
    let mut agent = crate::agentd::Agent::start(&cri.ctrd, cache.path(), port);
    agent.wait_for("watching containerd", 1);
    assert!(crate::common::cache_entries(cache.path()).is_empty());
    cri.pull(&image)
        .unwrap_or_else(|e| panic!("PullImage: {e}\n{}", cri.ctrd.log_tail()));
    // Compiled under whichever of its names containerd made first.
    agent.wait_for("wasmbox agent: compiled ", 1);
    let entries = crate::common::cache_entries(cache.path());
    assert_eq!(entries.len(), 1, "{:#?}", agent.log);
    let written = std::fs::metadata(&entries[0]).unwrap().modified().unwrap();
    let pod = cri.pod("warm");
    let pod_id = cri.run_pod(&pod, &handler());
    let id = cri.create(&pod_id, &pod, container("files", &image, &["args", "warm"]));
    cri.start_container(&id);
    let st = cri.wait_state(&id, ContainerState::ContainerExited);
    assert_eq!(st.exit_code, 0, "{}", cri.ctrd.log_tail());
    assert!(
        cri.log(&pod, "files").contains("stdout F warm"),
        "{}",
        cri.log(&pod, "files")
    );
    // The create loaded the agent's code: nothing compiled, the entry never rewritten.
    let log = cri.ctrd.log();
    assert!(
        log.contains("compiled code from cache"),
        "{}",
        cri.ctrd.log_tail()
    );
    assert!(!log.contains("compiling"), "{}", cri.ctrd.log_tail());
    assert_eq!(
        std::fs::metadata(&entries[0]).unwrap().modified().unwrap(),
        written
    );
    cri.remove_pod(&pod_id);
}
