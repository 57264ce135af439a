//! A container's bundle as the shim handles it: its spec and the rootfs mounts containerd
//! prepared. Whether its entrypoint is wasm is decided by `crate::launch::classify`.

use std::path::Path;

use oci_spec::runtime::Spec;

use super::error::{Result, ShimError};
use super::events::RootfsMount;

/// Mounts the rootfs containerd prepared (snapshot mounts) at `BUNDLE/rootfs`. Returns whether
/// anything was mounted.
pub fn mount_rootfs(bundle: &Path, mounts: &[RootfsMount]) -> Result<bool> {
    if mounts.is_empty() {
        return Ok(false);
    }
    let target = bundle.join("rootfs");
    std::fs::create_dir_all(&target)
        .map_err(|e| ShimError::Internal(format!("create {}: {e}", target.display())))?;
    for (i, m) in mounts.iter().enumerate() {
        let fs = (!m.kind.is_empty()).then_some(m.kind.as_str());
        let src = (!m.source.is_empty()).then_some(m.source.as_str());
        if let Err(e) = containerd_shim::mount::mount_rootfs(fs, src, &m.options, &target) {
            if i > 0 {
                unmount_rootfs(bundle);
            }
            return Err(ShimError::Internal(format!(
                "mount rootfs {} ({}) at {}: {e}",
                m.source,
                m.kind,
                target.display()
            )));
        }
    }
    Ok(true)
}

/// Unmounts `BUNDLE/rootfs` and everything below it.
pub fn unmount_rootfs(bundle: &Path) {
    let target = bundle.join("rootfs");
    if let Err(e) = containerd_shim::mount::umount_recursive(target.to_str(), libc::MNT_DETACH) {
        tracing::warn!(target = %target.display(), error = %e, "unmounting the rootfs failed");
    }
}

/// Reads `BUNDLE/config.json`.
pub fn read_spec(bundle: &Path) -> Result<Spec> {
    let path = bundle.join("config.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| ShimError::InvalidArgument(format!("read {}: {e}", path.display())))?;
    wasmbox_runtime::policy::parse_spec(&text)
        .map_err(|e| ShimError::InvalidArgument(format!("{}: malformed: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_config_is_an_invalid_argument_naming_the_file() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("config.json"), "{not json").unwrap();
        let e = read_spec(d.path()).unwrap_err();
        assert!(matches!(e, ShimError::InvalidArgument(_)));
        assert!(e.to_string().contains("config.json: malformed"), "{e}");
        let d = tempfile::tempdir().unwrap();
        assert!(
            read_spec(d.path())
                .unwrap_err()
                .to_string()
                .contains("config.json")
        );
    }
}
