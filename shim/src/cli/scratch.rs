//! The command line's private directories: where they live, made mode 0700.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Where `wasmbox run` keeps its private directories: `$WASMBOX_SCRATCH_DIR`, else
/// `/run/wasmbox/run` for root, else `$XDG_RUNTIME_DIR/wasmbox` or `~/.cache/wasmbox-run`. Never
/// the shared temp dir, which users grant (`-v /tmp:/tmp`) and other processes share.
pub fn scratch_base() -> Result<PathBuf> {
    let base = std::env::var_os("WASMBOX_SCRATCH_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            rustix::process::geteuid()
                .is_root()
                .then(|| "/run/wasmbox/run".into())
        })
        .or_else(|| {
            std::env::var_os("XDG_RUNTIME_DIR")
                .filter(|v| !v.is_empty())
                .map(|d| PathBuf::from(d).join("wasmbox"))
        })
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/wasmbox-run")))
        .context("no private directory: set WASMBOX_SCRATCH_DIR")?;
    private_dir(&base)
}

/// Creates `dir` (and its parents) if needed, mode 0700.
pub fn private_dir(dir: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating the private directory {}", dir.display()))?;
    Ok(dir.to_path_buf())
}
