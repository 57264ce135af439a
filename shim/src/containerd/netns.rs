//! The network namespace a shim's guests live in.
//!
//! A shim serves one group of containers (a Kubernetes pod), which share one network namespace.
//! The serving process joins the namespace its first container's spec names before it starts any
//! thread, so every thread, and so every socket a guest opens, lives there. Later containers of
//! the group must name the same namespace.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Spec};

use super::error::{Result, ShimError};

/// The network namespace path a spec names, if any.
fn named(spec: &Spec) -> Option<PathBuf> {
    spec.linux()
        .as_ref()?
        .namespaces()
        .as_ref()?
        .iter()
        .find(|n| n.typ() == LinuxNamespaceType::Network)?
        .path()
        .clone()
}

/// Joins the network namespace named by `BUNDLE/config.json`, if it names one. Must run before
/// the process starts any thread: `setns` moves only the calling thread, and threads started
/// later inherit it.
#[allow(unsafe_code, reason = "setns(2) on a namespace file we opened")]
pub fn join_from_bundle(bundle: &Path) -> std::result::Result<(), String> {
    let Ok(text) = std::fs::read_to_string(bundle.join("config.json")) else {
        return Ok(());
    };
    let Ok(spec) = serde_json::from_str::<Spec>(&text) else {
        // create reports the malformed spec to containerd.
        return Ok(());
    };
    let Some(path) = named(&spec) else {
        return Ok(());
    };
    let f = std::fs::File::open(&path)
        .map_err(|e| format!("open network namespace {}: {e}", path.display()))?;
    use std::os::fd::AsRawFd;
    // SAFETY: setns reads only the descriptor, which stays open for the call.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(format!(
            "join network namespace {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Checks that a wasm container's spec names this process's network namespace (or none).
pub fn check_same(spec: &Spec) -> Result<()> {
    let Some(path) = named(spec) else {
        return Ok(());
    };
    let want = std::fs::metadata(&path).map_err(|e| {
        ShimError::InvalidArgument(format!("network namespace {}: {e}", path.display()))
    })?;
    let ours = std::fs::metadata("/proc/thread-self/ns/net")
        .map_err(|e| ShimError::Internal(format!("own network namespace: {e}")))?;
    if (want.dev(), want.ino()) != (ours.dev(), ours.ino()) {
        return Err(ShimError::InvalidArgument(format!(
            "network namespace {} is not the one this shim's group lives in; containers that \
             share a shim (same io.kubernetes.cri.sandbox-id or io.containerd.runc.v2.group) \
             must share their network namespace",
            path.display()
        )));
    }
    Ok(())
}
