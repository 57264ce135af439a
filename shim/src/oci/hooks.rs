//! The spec's OCI hooks, run as runc runs them: each program with its arguments and environment,
//! the container's state JSON on its stdin, within its timeout. `prestart` (deprecated, run with
//! `createRuntime`), `createRuntime` and `createContainer` run in `create` once the container's
//! process is set up; `startContainer` and `poststart` in `start`; `poststop` in `delete`. A
//! failing hook before the start fails the command; after it, it is reported only. (Docker's
//! networking relies on its `libnetwork-setkey` prestart hook.)

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use oci_spec::runtime::{Hook, Hooks, Spec};

/// When a hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// `prestart` and `createRuntime`, then `createContainer`.
    Create,
    /// `startContainer`.
    StartContainer,
    /// `poststart`.
    Poststart,
    /// `poststop`.
    Poststop,
}

fn hooks_of(hooks: &Hooks, when: When) -> Vec<Hook> {
    #[allow(deprecated)]
    let lists: Vec<&Option<Vec<Hook>>> = match when {
        When::Create => vec![
            hooks.prestart(),
            hooks.create_runtime(),
            hooks.create_container(),
        ],
        When::StartContainer => vec![hooks.start_container()],
        When::Poststart => vec![hooks.poststart()],
        When::Poststop => vec![hooks.poststop()],
    };
    lists.into_iter().flatten().flatten().cloned().collect()
}

/// Runs the spec's hooks for `when` with `state` on their stdin; the first failure is an error.
pub fn run(spec: &Spec, when: When, state: &serde_json::Value) -> Result<()> {
    let Some(hooks) = spec.hooks() else {
        return Ok(());
    };
    for h in hooks_of(hooks, when) {
        run_one(&h, state).with_context(|| format!("{when:?} hook {}", h.path().display()))?;
    }
    Ok(())
}

fn run_one(h: &Hook, state: &serde_json::Value) -> Result<()> {
    let mut cmd = Command::new(h.path());
    if let Some(args) = h.args() {
        if let Some(arg0) = args.first() {
            std::os::unix::process::CommandExt::arg0(&mut cmd, arg0);
        }
        cmd.args(args.iter().skip(1));
    }
    cmd.env_clear();
    for kv in h.env().iter().flatten() {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting it")?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that reads nothing may close its stdin: that is no failure.
        let _ = stdin.write_all(state.to_string().as_bytes());
    }
    let limit = h
        .timeout()
        .filter(|t| *t > 0)
        .map(|t| Duration::from_secs(t as u64));
    let Some(limit) = limit else {
        let st = child.wait().context("waiting for it")?;
        if !st.success() {
            bail!("it failed: {st}");
        }
        return Ok(());
    };
    let started = Instant::now();
    loop {
        if let Some(st) = child.try_wait().context("waiting for it")? {
            if !st.success() {
                bail!("it failed: {st}");
            }
            return Ok(());
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            bail!("it timed out after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
