//! `wasmbox` as an OCI runtime with runc's command line, so every engine that drives runc runs
//! wasm containers through it: podman (through conmon), Docker and `ctr` (through containerd's
//! runc shim, `--runc-binary` or a runtime's `BinaryName`), CRI-O.
//!
//! A container is a process of its own, as under runc: `create` forks it, it sets itself up from
//! the bundle (`container`) and waits on an exec FIFO for `start`; its exit status is its guest's.
//! State lives in `ROOT/ID/state.json` (`state`), its status moving by the lifecycle's rules.
//! Native entrypoints go to the system's runc (`runc`). The arguments are runc's (`args`).

mod args;
mod commands;
mod container;
mod create;
mod exec;
mod hooks;
mod ready;
mod runc;
mod state;
mod sys;
mod terminal;

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;

pub use args::is_oci;
use args::{LogFormat, Oci, OciCommand};
use state::State as Saved;

/// Runs runc's command line `raw` (without the program name); the exit status.
pub fn main(raw: Vec<String>) -> ExitCode {
    let argv = std::iter::once("wasmbox".to_string()).chain(raw.iter().cloned());
    let oci = match Oci::try_parse_from(argv) {
        Ok(o) => o,
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    // Only a container's process (forked by `create`, `run` and `exec`) takes SIGINT and SIGTERM
    // for its guest; other commands keep the default actions.
    if !matches!(
        oci.command,
        OciCommand::Create(_) | OciCommand::Run(_) | OciCommand::Exec(_)
    ) {
        crate::signals::unblock();
    }
    match run(&oci, &raw) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            report(&oci, &format!("{e:#}"));
            ExitCode::from(1)
        }
    }
}

/// The container a command names, if any.
fn id_of(c: &OciCommand) -> Option<&str> {
    use OciCommand::*;
    Some(match c {
        Start(a) | State(a) | Pause(a) | Resume(a) => &a.id,
        Kill(a) => &a.id,
        Delete(a) => &a.id,
        Ps(a) => &a.id,
        Exec(a) => &a.id,
        Update(a) => &a.id,
        Events(a) => &a.id,
        Create(_) | Run(_) | List(_) | Features | Spec(_) => return None,
    })
}

fn run(oci: &Oci, raw: &[String]) -> Result<i32> {
    use OciCommand::*;
    // A container runc holds is runc's for every command.
    if let Some(id) = id_of(&oci.command)
        && !Saved::exists(&oci.root, id)
        && runc::has(oci, id)
    {
        return runc::delegate(oci, raw);
    }
    let done = |r: Result<()>| r.map(|()| 0);
    match &oci.command {
        Create(a) => match create::create(oci, a)? {
            Some(()) => Ok(0),
            None => runc::delegate(oci, raw),
        },
        Run(a) => {
            if create::create(oci, &a.create)?.is_none() {
                return runc::delegate(oci, raw);
            }
            commands::start(oci, &a.create.id)?;
            if a.detach {
                return Ok(0);
            }
            let st = Saved::load(&oci.root, &a.create.id)?;
            let code = exec::wait_child(st.pid)?;
            if !a.keep {
                commands::delete(
                    oci,
                    &args::DeleteArgs {
                        force: true,
                        id: a.create.id.clone(),
                    },
                )?;
            }
            Ok(code)
        }
        Start(a) => done(commands::start(oci, &a.id)),
        State(a) => done(commands::print_state(oci, &a.id)),
        Kill(a) => done(commands::kill(oci, a)),
        Delete(a) => done(commands::delete(oci, a)),
        List(a) => done(commands::list(oci, a)),
        Ps(a) => done(commands::ps(oci, a)),
        Features => done(commands::features()),
        Spec(a) => done(commands::spec(a)),
        Exec(a) => exec::exec(oci, a),
        Pause(a) => done(commands::pause(oci, &a.id, true)),
        Resume(a) => done(commands::pause(oci, &a.id, false)),
        Update(a) => done(commands::update(oci, a)),
        Events(a) => done(commands::events(oci, a)),
    }
}

/// An error, on stderr and in the log as its format says (conmon and containerd's runc shim read
/// the last error line of a JSON log).
fn report(oci: &Oci, msg: &str) {
    eprintln!("wasmbox: error: {msg}");
    let Some(path) = &oci.log else { return };
    let line = match oci.log_format {
        LogFormat::Json => serde_json::json!({
            "level": "error",
            "msg": msg,
            "time": wasmbox_runtime::rfc3339::millis(std::time::SystemTime::now()),
        })
        .to_string(),
        LogFormat::Text => format!("level=error msg={msg:?}"),
    };
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{line}");
    }
}
