//! How a forked process (a container's, or one added by `exec`) tells the command that forked it
//! it is ready: one message on a pipe, `ok` and the cgroups it joined, or `error:` and why, then
//! the pipe's end.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};

#[derive(serde::Serialize, serde::Deserialize)]
struct Ready {
    cgroups: Vec<PathBuf>,
}

/// Tells the forking command the process is ready (with the cgroups it joined), or why not.
pub fn tell(ready: OwnedFd, outcome: &Result<Vec<PathBuf>>) {
    let msg = match outcome {
        Ok(cgroups) => format!(
            "ok {}",
            serde_json::to_string(&Ready {
                cgroups: cgroups.clone()
            })
            .unwrap_or_default()
        ),
        Err(e) => format!("error: {e:#}"),
    };
    let _ = std::fs::File::from(ready).write_all(msg.as_bytes());
}

/// What child `pid` told on `ready`: the cgroups it joined; its error, once it is collected.
pub fn heard(ready: OwnedFd, pid: i32) -> Result<Vec<PathBuf>> {
    let mut told = String::new();
    std::fs::File::from(ready)
        .read_to_string(&mut told)
        .context("waiting for the process it forked")?;
    if let Some(json) = told.strip_prefix("ok ") {
        let r: Ready = serde_json::from_str(json).context("the process's answer")?;
        return Ok(r.cgroups);
    }
    // It has failed and exits: collect it.
    let _ = rustix::process::waitpid(
        rustix::process::Pid::from_raw(pid),
        rustix::process::WaitOptions::empty(),
    );
    let why = told.strip_prefix("error: ").unwrap_or(&told).trim();
    if why.is_empty() {
        bail!("the process died while setting up");
    }
    bail!("{why}")
}
