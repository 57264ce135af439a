//! Native entrypoints go to the system's runc, with the same command line and a state root of
//! its own below ours (`ROOT/.runc`): `wasmbox` can be an engine's default runtime and still run
//! busybox. A container runc made is runc's for every later command.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;

use anyhow::{Context, Result};

use super::args::{LogFormat, Oci, command_at};

/// runc's state root below ours.
pub fn root(oci: &Oci) -> PathBuf {
    oci.root.join(".runc")
}

/// Whether runc holds container `id`.
pub fn has(oci: &Oci, id: &str) -> bool {
    super::state::dir(&oci.root, id).is_ok() && root(oci).join(id).join("state.json").exists()
}

/// The containers runc holds, as `runc list --format json` gives them (none when runc never
/// made one here).
pub fn list(oci: &Oci) -> Result<Vec<serde_json::Value>> {
    let root = root(oci);
    if !root.is_dir() {
        return Ok(Vec::new());
    }
    let out = std::process::Command::new(crate::lifecycle::native::runc_binary())
        .arg("--root")
        .arg(&root)
        .args(["list", "--format", "json"])
        .stdin(std::process::Stdio::null())
        .output()
        .context("running runc list")?;
    if !out.status.success() {
        anyhow::bail!("runc list: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    // runc prints `null` when it holds none.
    let list: Option<Vec<serde_json::Value>> =
        serde_json::from_slice(&out.stdout).context("reading runc list's output")?;
    Ok(list.unwrap_or_default())
}

/// Replaces this process with runc, given our global flags (its root moved below ours) and the
/// command as we were given it (`raw`, without the program name).
pub fn delegate(oci: &Oci, raw: &[String]) -> Result<i32> {
    let mut cmd = std::process::Command::new(crate::lifecycle::native::runc_binary());
    cmd.arg("--root").arg(root(oci));
    if let Some(log) = &oci.log {
        cmd.arg("--log").arg(log);
    }
    cmd.arg(match oci.log_format {
        LogFormat::Text => "--log-format=text",
        LogFormat::Json => "--log-format=json",
    });
    if oci.debug {
        cmd.arg("--debug");
    }
    if oci.systemd_cgroup {
        cmd.arg("--systemd-cgroup");
    }
    if let Some(r) = &oci.rootless {
        cmd.arg(format!("--rootless={r}"));
    }
    cmd.args(&raw[command_at(raw)..]);
    Err(cmd.exec()).context("running runc")
}
