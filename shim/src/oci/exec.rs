//! `exec`: another wasm program of the container's rootfs, run as a process of its own in the
//! container's network namespace and cgroup, with the grants of the container's spec and the
//! process the caller gives (`--process FILE`, or the command and `--cwd`, `--env`, `--tty`).

use anyhow::{Context, Result, bail};
use oci_spec::runtime::Process;
use wasmbox_runtime::launch::Entry;

use super::args::{ExecArgs, Oci};
use super::state::{self, State};

/// Runs the process; detached, returns once it runs (its pid in `--pid-file`), else waits for it
/// and returns its exit status.
pub fn exec(oci: &Oci, a: &ExecArgs) -> Result<i32> {
    let mut st = State::load(&oci.root, &a.id)?;
    let status = st.status();
    if !(status.can_exec() || a.ignore_paused && status == crate::lifecycle::Status::Paused) {
        bail!(
            "cannot exec in a container that is {}",
            serde_json::to_value(status)?.as_str().unwrap_or("stopped")
        );
    }
    let mut spec = super::create::read_spec(&st.bundle)?;
    let process = process(a, spec.process().as_ref())?;
    let terminal = process.terminal().unwrap_or(false);
    if terminal && a.console_socket.is_none() {
        bail!("a terminal was asked for but no --console-socket was given");
    }
    spec.set_process(Some(process));
    let wasm = match crate::launch::classify(&st.bundle, spec.clone())? {
        Entry::Wasm(w) => w,
        Entry::Native => bail!("exec: the program is not wasm; a wasm container runs only wasm"),
    };
    let (ready_read, ready_write) =
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).context("a pipe")?;
    let pid = match super::sys::fork()? {
        0 => {
            drop(ready_read);
            let join = super::container::Join::Exec {
                pid: st.pid,
                cgroups: &st.cgroups,
            };
            super::container::run(
                oci,
                join,
                &spec,
                wasm,
                terminal,
                a.console_socket.clone(),
                ready_write,
                None,
            )
        }
        pid => pid,
    };
    drop(ready_write);
    super::ready::heard(ready_read, pid)?;
    if let Some(p) = &a.pid_file {
        super::create::write_pid_file(p, pid)?;
    }
    if a.detach {
        if let Some(t) = state::start_time(pid) {
            st.execs.push((pid, t));
            st.save(&oci.root)?;
        }
        return Ok(0);
    }
    wait_child(pid)
}

/// Waits for child `pid`; its exit status, 128+signal when killed.
pub fn wait_child(pid: i32) -> Result<i32> {
    let p = rustix::process::Pid::from_raw(pid).context("no pid")?;
    loop {
        match rustix::process::waitpid(Some(p), rustix::process::WaitOptions::empty()) {
            Ok(Some((_, st))) => {
                if let Some(code) = st.exit_status() {
                    return Ok(code);
                }
                if let Some(sig) = st.terminating_signal() {
                    return Ok(128 + sig);
                }
            }
            Ok(None) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e).context("waiting for the process"),
        }
    }
}

/// The process to run: `--process FILE` as it is, else the container's process with the
/// command, working directory, environment and terminal of the flags.
fn process(a: &ExecArgs, base: Option<&Process>) -> Result<Process> {
    if let Some(f) = &a.process {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        return serde_json::from_str(&text).with_context(|| format!("{}: malformed", f.display()));
    }
    if a.command.is_empty() {
        bail!("exec: no command given (and no --process)");
    }
    let mut p = base.cloned().unwrap_or_default();
    p.set_args(Some(a.command.clone()));
    if let Some(cwd) = &a.cwd {
        p.set_cwd(cwd.into());
    }
    let mut env = p.env().clone().unwrap_or_default();
    env.extend(a.env.iter().cloned());
    p.set_env(Some(env));
    p.set_terminal(Some(a.tty));
    Ok(p)
}
