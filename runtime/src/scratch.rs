//! wasmbox's private directories (mount trees, tmpfs stand-ins, run bundles, devices): how they are named
//! after the process that made them, and how the ones a killed process left are swept. A leaf.

use std::path::Path;

/// Prefixes of the private directories a wasmbox process makes in its scratch directory, each
/// followed by the process's pid and a dash.
const SCRATCH_PREFIXES: [&str; 5] = [
    "wasmbox-run-",
    "wasmbox-compile-",
    "wasmbox-tree-",
    "wasmbox-tmpfs-",
    "wasmbox-dev-",
];

/// The name prefix for a private directory of this process: `PREFIX<pid>-`.
pub fn scratch_prefix(prefix: &str) -> String {
    format!("{prefix}{}-", std::process::id())
}

/// Removes private directories left in `dir` by wasmbox processes of this user that are gone (a
/// `wasmbox run` killed with SIGKILL cannot clean up after itself). A directory is only removed
/// when its pid names no live process.
pub fn sweep_stale(dir: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let me = rustix::process::geteuid().as_raw();
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = SCRATCH_PREFIXES.iter().find_map(|p| name.strip_prefix(p)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let ours = e.metadata().is_ok_and(|m| m.is_dir() && m.uid() == me);
        if ours && pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let path = e.path();
            match std::fs::remove_dir_all(&path) {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "removed a stale private directory")
                }
                Err(err) => {
                    tracing::debug!(path = %path.display(), error = %err, "could not remove a stale directory")
                }
            }
        }
    }
}
