//! The commands that act on a created container: `start`, `state`, `kill`, `delete`, `list`,
//! `ps`, `pause`, `resume`, `update`, `events`; and `features` and `spec`. Each checks the
//! container's status by the lifecycle's rules first.

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::args::{DeleteArgs, EventsArgs, KillArgs, ListArgs, Oci, PsArgs, SpecArgs, UpdateArgs};
use super::state::{self, State};
use crate::lifecycle::Status;

/// How long `delete --force` and `start` wait for a container process to act.
const WAIT: Duration = Duration::from_secs(10);

/// `start`: opens the exec FIFO, which lets the container process run its guest.
pub fn start(oci: &Oci, id: &str) -> Result<()> {
    let mut st = State::load(&oci.root, id)?;
    match st.status() {
        s if s.can_start() => {}
        Status::Stopped => bail!("cannot start a container that has stopped"),
        _ => bail!("cannot start an already running container"),
    }
    let spec = super::create::read_spec(&st.bundle)?;
    super::hooks::run(&spec, super::hooks::When::StartContainer, &st.oci())?;
    let fifo = state::fifo(&state::dir(&oci.root, id)?);
    let f = rustix::fs::open(
        &fifo,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .with_context(|| format!("opening {}", fifo.display()))?;
    // The container process writes one byte once it has opened its end.
    let deadline = Instant::now() + WAIT;
    loop {
        let mut b = [0u8; 1];
        match rustix::io::read(&f, &mut b) {
            Ok(1) => break,
            Ok(_) | Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) => {
                if !st.alive() {
                    bail!("the container process has gone");
                }
                if Instant::now() > deadline {
                    bail!("the container process did not take the start");
                }
                let mut fds = [rustix::event::PollFd::new(&f, rustix::event::PollFlags::IN)];
                let _ = rustix::event::poll(
                    &mut fds,
                    Some(&rustix::event::Timespec {
                        tv_sec: 0,
                        tv_nsec: 50_000_000,
                    }),
                );
            }
            Err(e) => return Err(e).context("reading the exec FIFO"),
        }
    }
    let _ = std::fs::remove_file(&fifo);
    st.status = Status::Running;
    st.save(&oci.root)?;
    if let Err(e) = super::hooks::run(&spec, super::hooks::When::Poststart, &st.oci()) {
        tracing::warn!("{e:#}");
    }
    Ok(())
}

/// `state`.
pub fn print_state(oci: &Oci, id: &str) -> Result<()> {
    let st = State::load(&oci.root, id)?;
    println!("{}", serde_json::to_string_pretty(&st.oci())?);
    Ok(())
}

/// A signal by name (`KILL`, `SIGKILL`, any case) or number.
pub fn parse_signal(s: &str) -> Result<i32> {
    if let Ok(n) = s.parse::<i32>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
        bail!("invalid signal {s:?}");
    }
    let up = s.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    let n = match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "ILL" => libc::SIGILL,
        "TRAP" => libc::SIGTRAP,
        "ABRT" | "IOT" => libc::SIGABRT,
        "BUS" => libc::SIGBUS,
        "FPE" => libc::SIGFPE,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "SEGV" => libc::SIGSEGV,
        "USR2" => libc::SIGUSR2,
        "PIPE" => libc::SIGPIPE,
        "ALRM" => libc::SIGALRM,
        "TERM" => libc::SIGTERM,
        "STKFLT" => libc::SIGSTKFLT,
        "CHLD" | "CLD" => libc::SIGCHLD,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "TSTP" => libc::SIGTSTP,
        "TTIN" => libc::SIGTTIN,
        "TTOU" => libc::SIGTTOU,
        "URG" => libc::SIGURG,
        "XCPU" => libc::SIGXCPU,
        "XFSZ" => libc::SIGXFSZ,
        "VTALRM" => libc::SIGVTALRM,
        "PROF" => libc::SIGPROF,
        "WINCH" => libc::SIGWINCH,
        "IO" | "POLL" => libc::SIGIO,
        "PWR" => libc::SIGPWR,
        "SYS" => libc::SIGSYS,
        _ => bail!("invalid signal {s:?}"),
    };
    Ok(n)
}

/// Sends `sig` to process `pid` through a pidfd, if it is still the one started at `start_time`.
fn signal(pid: i32, start_time: u64, sig: i32) -> Result<()> {
    let Some(p) = rustix::process::Pid::from_raw(pid) else {
        return Ok(());
    };
    let fd = match rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::SRCH) => return Ok(()),
        Err(e) => return Err(e).context("pidfd_open"),
    };
    // Opened after the check would be racy; checked after the open, the pidfd pins the process.
    if state::start_time(pid) != Some(start_time) {
        return Ok(());
    }
    let sig = rustix::process::Signal::from_named_raw(sig).context("no such signal")?;
    match rustix::process::pidfd_send_signal(&fd, sig) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
        Err(e) => Err(e).context("sending the signal"),
    }
}

/// `kill`.
pub fn kill(oci: &Oci, a: &KillArgs) -> Result<()> {
    let st = State::load(&oci.root, &a.id)?;
    let sig = parse_signal(a.signal.as_deref().unwrap_or("SIGTERM"))?;
    if !st.status().can_kill() {
        // Every process of a stopped container is gone already.
        if a.all {
            return Ok(());
        }
        bail!("container not running");
    }
    signal(st.pid, st.start_time, sig)?;
    if a.all {
        for (pid, t) in &st.execs {
            signal(*pid, *t, sig)?;
        }
    }
    Ok(())
}

/// Waits (a pidfd's readiness) until process `pid` has ended, at most `limit`.
fn wait_gone(pid: i32, limit: Duration) -> Result<()> {
    let Some(p) = rustix::process::Pid::from_raw(pid) else {
        return Ok(());
    };
    let Ok(fd) = rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()) else {
        return Ok(());
    };
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("process {pid} did not end within {limit:?}");
        }
        let mut fds = [rustix::event::PollFd::new(
            &fd,
            rustix::event::PollFlags::IN,
        )];
        let ts = rustix::event::Timespec::try_from(left).unwrap_or(rustix::event::Timespec {
            tv_sec: 1,
            tv_nsec: 0,
        });
        match rustix::event::poll(&mut fds, Some(&ts)) {
            Ok(n) if n > 0 => return Ok(()),
            _ => {}
        }
    }
}

/// `delete`: a stopped container's state goes; a created one is killed first (as runc does), a
/// running or paused one only with `--force`.
pub fn delete(oci: &Oci, a: &DeleteArgs) -> Result<()> {
    let st = State::load(&oci.root, &a.id)?;
    match st.status() {
        Status::Stopped => {}
        Status::Created => end(&st)?,
        s if a.force => {
            if s == Status::Paused {
                signal(st.pid, st.start_time, libc::SIGCONT)?;
            }
            end(&st)?;
        }
        s => bail!(
            "cannot delete container {} that is not stopped: {}",
            a.id,
            serde_json::to_value(s)?.as_str().unwrap_or("running")
        ),
    }
    for (pid, t) in &st.execs {
        signal(*pid, *t, libc::SIGKILL)?;
    }
    for d in st.cgroups.iter().rev() {
        // Gone once empty; the kernel refuses while a process is still in it.
        let _ = std::fs::remove_dir(d);
    }
    if let Ok(spec) = super::create::read_spec(&st.bundle)
        && let Err(e) = super::hooks::run(&spec, super::hooks::When::Poststop, &st.oci())
    {
        tracing::warn!("{e:#}");
    }
    let dir = state::dir(&oci.root, &a.id)?;
    std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))
}

fn end(st: &State) -> Result<()> {
    signal(st.pid, st.start_time, libc::SIGKILL)?;
    wait_gone(st.pid, WAIT)
}

/// Every container with state under the root.
fn all(root: &Path) -> Vec<State> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut v: Vec<State> = entries
        .flatten()
        .filter_map(|e| State::load(root, e.file_name().to_str()?).ok())
        .collect();
    v.sort_by(|a, b| a.id.cmp(&b.id));
    v
}

/// `list`: the wasm containers and the native ones runc holds, by id.
pub fn list(oci: &Oci, a: &ListArgs) -> Result<()> {
    let mut states: Vec<serde_json::Value> = all(&oci.root).iter().map(State::oci).collect();
    states.extend(super::runc::list(oci)?);
    states.sort_by(|x, y| x["id"].as_str().cmp(&y["id"].as_str()));
    let text = |v: &serde_json::Value, k: &str| v[k].as_str().unwrap_or("").to_string();
    if a.quiet {
        for s in &states {
            println!("{}", text(s, "id"));
        }
        return Ok(());
    }
    match a.format.as_str() {
        "json" => println!("{}", serde_json::to_string(&states)?),
        "table" => {
            println!(
                "{:<20} {:<8} {:<10} {:<40} {:<31} OWNER",
                "ID", "PID", "STATUS", "BUNDLE", "CREATED"
            );
            for s in &states {
                let owner = Some(text(s, "owner"))
                    .filter(|o| !o.is_empty())
                    .unwrap_or_else(|| "root".into());
                println!(
                    "{:<20} {:<8} {:<10} {:<40} {:<31} {owner}",
                    text(s, "id"),
                    s["pid"],
                    text(s, "status"),
                    text(s, "bundle"),
                    text(s, "created"),
                );
            }
        }
        f => bail!("invalid format {f:?}: table or json"),
    }
    Ok(())
}

/// `ps`: the container's live processes.
pub fn ps(oci: &Oci, a: &PsArgs) -> Result<()> {
    let st = State::load(&oci.root, &a.id)?;
    let pids = st.pids();
    match a.format.as_str() {
        "json" => println!("{}", serde_json::to_string(&pids)?),
        "table" => print!("{}", ps_table(&a.ps_args, &pids)?),
        f => bail!("invalid format {f:?}: table or json"),
    }
    Ok(())
}

/// ps(1)'s table (`-ef` unless other options are given), as runc prints it: the header and the
/// lines of `pids`.
fn ps_table(options: &[String], pids: &[i32]) -> Result<String> {
    let default = ["-ef".to_string()];
    let options = if options.is_empty() {
        &default[..]
    } else {
        options
    };
    let out = std::process::Command::new("ps")
        .args(options)
        .stdin(std::process::Stdio::null())
        .output()
        .context("running ps")?;
    if !out.status.success() {
        bail!(
            "ps {}: {}",
            options.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    filter_ps(&String::from_utf8_lossy(&out.stdout), pids)
}

/// The header of ps(1)'s output and its lines whose PID column is one of `pids`.
fn filter_ps(text: &str, pids: &[i32]) -> Result<String> {
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let Some(col) = header.split_whitespace().position(|f| f == "PID") else {
        bail!("ps's output has no PID column: {header:?}");
    };
    let mut table = format!("{header}\n");
    for line in lines {
        let pid = line
            .split_whitespace()
            .nth(col)
            .and_then(|p| p.parse().ok());
        if pid.is_some_and(|p| pids.contains(&p)) {
            table.push_str(line);
            table.push('\n');
        }
    }
    Ok(table)
}

/// `pause` and `resume`: the container's processes are stopped and continued.
pub fn pause(oci: &Oci, id: &str, pause: bool) -> Result<()> {
    let mut st = State::load(&oci.root, id)?;
    let status = st.status();
    match pause {
        true if status.can_pause() => {}
        false if status.can_resume() => {}
        true => bail!("container not running"),
        false => bail!("container not paused"),
    }
    let sig = if pause { libc::SIGSTOP } else { libc::SIGCONT };
    signal(st.pid, st.start_time, sig)?;
    for (pid, t) in &st.execs {
        signal(*pid, *t, sig)?;
    }
    st.status = if pause {
        Status::Paused
    } else {
        Status::Running
    };
    st.save(&oci.root)
}

/// `update`: a new memory limit for the container's cgroups.
pub fn update(oci: &Oci, a: &UpdateArgs) -> Result<()> {
    let st = State::load(&oci.root, &a.id)?;
    let mut limit = a
        .memory
        .as_deref()
        .map(wasmbox_runtime::policy::parse_size)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    if let Some(r) = &a.resources {
        let mut text = String::new();
        if r.as_os_str() == "-" {
            std::io::stdin().read_to_string(&mut text)?;
        } else {
            text =
                std::fs::read_to_string(r).with_context(|| format!("reading {}", r.display()))?;
        }
        let res: oci_spec::runtime::LinuxResources =
            serde_json::from_str(&text).context("the resources")?;
        if let Some(m) = res.memory().as_ref().and_then(|m| m.limit()) {
            limit = Some(m.max(0) as u64);
        }
    }
    if let Some(l) = limit.filter(|l| *l > 0) {
        crate::lifecycle::cgroup::set_memory(&st.cgroups, l)?;
    }
    Ok(())
}

/// One `stats` event, as runc prints them.
fn stats_event(st: &State) -> serde_json::Value {
    let u = crate::lifecycle::cgroup::usage(&st.cgroups);
    serde_json::json!({
        "type": "stats",
        "id": st.id,
        "data": {
            "cpu": {"usage": {"total": u.cpu_ns, "kernel": u.cpu_system_ns,
                              "user": u.cpu_ns.saturating_sub(u.cpu_system_ns)}},
            "memory": {"usage": {"usage": u.memory, "limit": u.memory_limit.unwrap_or(u64::MAX)}},
            "pids": {"current": u.processes},
        }
    })
}

/// How many times container `st`, whose state directory is `dir`, has run out of memory: its
/// guest passing its limit, and the kernel's OOM killer in its cgroups.
fn ooms(st: &State, dir: &Path) -> u64 {
    u64::from(state::oom_mark(dir).exists()) + crate::lifecycle::cgroup::oom_kills(&st.cgroups)
}

/// `events`: with `--stats`, one stats event; else a stats event every interval until the
/// container stops, each preceded by an `oom` event for every time it ran out of memory since
/// the last (as runc's, counted from when `events` began).
pub fn events(oci: &Oci, a: &EventsArgs) -> Result<()> {
    let every = match &a.interval {
        Some(i) => wasmbox_runtime::policy::parse_duration(i).map_err(anyhow::Error::msg)?,
        None => Duration::from_secs(5),
    };
    let dir = state::dir(&oci.root, &a.id)?;
    let mut told = None;
    loop {
        let st = State::load(&oci.root, &a.id)?;
        // Read before its out-of-memory count: a process seen gone has left its mark.
        let stopped = st.status() == Status::Stopped;
        let now = ooms(&st, &dir);
        for _ in told.unwrap_or(now)..now {
            println!("{}", serde_json::json!({"type": "oom", "id": st.id}));
        }
        told = Some(now);
        println!("{}", serde_json::to_string(&stats_event(&st))?);
        if a.stats || stopped {
            return Ok(());
        }
        std::thread::sleep(every);
    }
}

/// `features`: what this runtime takes.
pub fn features() -> Result<()> {
    let v = serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.1.0",
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": ["ro", "rw", "bind", "rbind", "nosuid", "nodev", "noexec"],
        "linux": {
            "namespaces": ["network", "mount"],
            "capabilities": [],
            "cgroup": {"v1": true, "v2": true, "systemd": false, "systemdUser": false},
            "seccomp": {"enabled": false},
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false},
        },
        "annotations": {
            "io.github.wasmbox.runtime": "wasm, with native entrypoints handed to runc",
        },
    });
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

/// `spec`: a default `config.json` (runc's), refusing to overwrite one.
pub fn spec(a: &SpecArgs) -> Result<()> {
    let dir = a.bundle.clone().unwrap_or_else(|| ".".into());
    let path = dir.join("config.json");
    if path.exists() {
        bail!("File {} exists. Remove it first", path.display());
    }
    let spec = oci_spec::runtime::Spec::default();
    let text = serde_json::to_string_pretty(&spec)?;
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ps_table_keeps_the_header_and_the_containers_lines() {
        let text = "UID          PID    PPID  C STIME TTY          TIME CMD
root           1       0  0 10:00 ?        00:00:01 /sbin/init
root          42       1  0 10:01 ?        00:00:00 wasmbox-guest
root         420       1  0 10:01 ?        00:00:00 other
";
        let t = filter_ps(text, &[42]).unwrap();
        assert_eq!(t.lines().count(), 2, "{t}");
        assert!(t.starts_with("UID") && t.contains("wasmbox-guest") && !t.contains("other"));
        assert!(filter_ps("USER COMMAND\nroot x\n", &[1]).is_err());
    }

    #[test]
    fn signals_by_name_or_number() {
        assert_eq!(parse_signal("SIGTERM").unwrap(), 15);
        assert_eq!(parse_signal("term").unwrap(), 15);
        assert_eq!(parse_signal("KILL").unwrap(), 9);
        assert_eq!(parse_signal("9").unwrap(), 9);
        assert!(parse_signal("0").is_err());
        assert!(parse_signal("SIGNOPE").is_err());
    }
}
