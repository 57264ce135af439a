//! runc's command line, as the engines send it: global flags before the command, each command's
//! flags and its container id. Parsed with clap, as runc's own urfave/cli takes them
//! (`--flag value` and `--flag=value`).

#[cfg(test)]
use std::path::Path;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Where containers' state lives unless `--root` says: for root; another user's is below
/// `$XDG_RUNTIME_DIR` (as runc's is). Chosen by the user alone, not by the environment an engine
/// happens to pass a call (podman passes only `XDG_RUNTIME_DIR` to some calls).
pub const DEFAULT_ROOT: &str = "/run/wasmbox/runtime";

/// The state root when no `--root` is given.
fn default_root() -> PathBuf {
    if rustix::process::geteuid().is_root() {
        return PathBuf::from(DEFAULT_ROOT);
    }
    std::env::var_os("XDG_RUNTIME_DIR")
        .filter(|v| !v.is_empty())
        .map(|d| PathBuf::from(d).join("wasmbox-runtime"))
        .unwrap_or_else(|| {
            std::env::temp_dir().join(format!(
                "wasmbox-runtime-{}",
                rustix::process::geteuid().as_raw()
            ))
        })
}

/// The runtime's global flags and its command.
#[derive(Parser, Debug)]
#[command(name = "wasmbox", version, disable_help_subcommand = true)]
pub struct Oci {
    /// Where containers' state lives.
    #[arg(long, global = true, value_name = "DIR", default_value_os_t = default_root())]
    pub root: PathBuf,
    /// Where errors and debug lines go (besides stderr).
    #[arg(long, global = true, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// The log's format.
    #[arg(long = "log-format", global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Debug lines too.
    #[arg(long, global = true)]
    pub debug: bool,
    /// `linux.cgroupsPath` is systemd's `SLICE:PREFIX:NAME` (laid out on cgroupfs).
    #[arg(long = "systemd-cgroup", global = true)]
    pub systemd_cgroup: bool,
    /// Accepted as runc takes it (`true`, `false`, `auto`).
    #[arg(long, global = true, value_name = "VALUE", num_args = 0..=1, default_missing_value = "true")]
    pub rootless: Option<String>,
    /// Accepted and ignored: wasm containers are not checkpointed.
    #[arg(long, global = true, value_name = "PATH")]
    pub criu: Option<String>,
    /// The command.
    #[command(subcommand)]
    pub command: OciCommand,
}

/// How the log is written.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Plain lines.
    Text,
    /// One JSON object per line (`level`, `msg`, `time`), which conmon and containerd read.
    Json,
}

/// runc's commands.
#[derive(Subcommand, Debug)]
pub enum OciCommand {
    /// Create a container: its process is made and waits for `start`.
    Create(CreateArgs),
    /// Create and start a container, and wait for it unless detached.
    Run(RunArgs),
    /// Start a created container.
    Start(IdArg),
    /// Print a container's state (OCI state JSON).
    State(IdArg),
    /// Send a signal to a container's processes.
    Kill(KillArgs),
    /// Delete a container's state (and, with --force, the container).
    Delete(DeleteArgs),
    /// List containers.
    List(ListArgs),
    /// List a container's processes.
    Ps(PsArgs),
    /// What this runtime supports (JSON).
    Features,
    /// Write a default config.json.
    Spec(SpecArgs),
    /// Run another process in a container.
    Exec(ExecArgs),
    /// Pause a container's processes.
    Pause(IdArg),
    /// Resume a paused container's processes.
    Resume(IdArg),
    /// Update a container's resources.
    Update(UpdateArgs),
    /// A container's events (with --stats, one stats event).
    Events(EventsArgs),
}

/// A container id alone.
#[derive(Args, Debug)]
pub struct IdArg {
    /// The container.
    pub id: String,
}

/// `create`'s flags.
#[derive(Args, Debug, Clone)]
pub struct CreateArgs {
    /// The bundle directory.
    #[arg(short = 'b', long, value_name = "DIR", default_value = ".")]
    pub bundle: PathBuf,
    /// Where the container process's pid is written.
    #[arg(long = "pid-file", value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    /// A unix socket that receives the terminal's master (`process.terminal`).
    #[arg(long = "console-socket", value_name = "SOCKET")]
    pub console_socket: Option<PathBuf>,
    /// Descriptors past stdio passed on to the container (accepted; a guest gets none).
    #[arg(long = "preserve-fds", value_name = "N", default_value_t = 0)]
    pub preserve_fds: u32,
    /// Accepted: a wasm container's filesystem is a mount tree, not a pivoted root.
    #[arg(long = "no-pivot")]
    pub no_pivot: bool,
    /// Accepted: there is no session keyring to make.
    #[arg(long = "no-new-keyring")]
    pub no_new_keyring: bool,
    /// The container.
    pub id: String,
}

/// `run`'s flags: `create`'s, and whether to detach.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// `create`'s flags and the id.
    #[command(flatten)]
    pub create: CreateArgs,
    /// Return once started instead of waiting for the container.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Keep the state after the container ends (runc's `--keep`).
    #[arg(long)]
    pub keep: bool,
}

/// `kill`'s flags.
#[derive(Args, Debug)]
pub struct KillArgs {
    /// Every process of the container.
    #[arg(short = 'a', long)]
    pub all: bool,
    /// The container.
    pub id: String,
    /// The signal: a name (`TERM`, `SIGTERM`) or a number; SIGTERM by default.
    pub signal: Option<String>,
}

/// `delete`'s flags.
#[derive(Args, Debug)]
pub struct DeleteArgs {
    /// Kill a running container first.
    #[arg(short = 'f', long)]
    pub force: bool,
    /// The container.
    pub id: String,
}

/// `list`'s flags.
#[derive(Args, Debug)]
pub struct ListArgs {
    /// `table` or `json`.
    #[arg(short = 'f', long, default_value = "table")]
    pub format: String,
    /// Ids only.
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

/// `ps`'s flags.
#[derive(Args, Debug)]
pub struct PsArgs {
    /// `table` or `json`.
    #[arg(short = 'f', long, default_value = "table")]
    pub format: String,
    /// The container.
    pub id: String,
    /// `ps` options for the table (default `-ef`), as runc passes them to ps(1).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub ps_args: Vec<String>,
}

/// `spec`'s flags.
#[derive(Args, Debug)]
pub struct SpecArgs {
    /// Where to write config.json (default: here).
    #[arg(short = 'b', long, value_name = "DIR")]
    pub bundle: Option<PathBuf>,
}

/// `exec`'s flags.
#[derive(Args, Debug)]
pub struct ExecArgs {
    /// The process, as OCI process JSON.
    #[arg(short = 'p', long, value_name = "FILE")]
    pub process: Option<PathBuf>,
    /// A unix socket that receives the terminal's master.
    #[arg(long = "console-socket", value_name = "SOCKET")]
    pub console_socket: Option<PathBuf>,
    /// Working directory.
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<String>,
    /// An environment variable (repeatable).
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// A terminal.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// The user (accepted; a guest has none).
    #[arg(short = 'u', long, value_name = "UID[:GID]")]
    pub user: Option<String>,
    /// Additional groups (accepted).
    #[arg(short = 'g', long = "additional-gids", value_name = "GID")]
    pub additional_gids: Vec<String>,
    /// Accepted.
    #[arg(long = "process-label")]
    pub process_label: Option<String>,
    /// Accepted.
    #[arg(long)]
    pub apparmor: Option<String>,
    /// Accepted.
    #[arg(long = "no-new-privs")]
    pub no_new_privs: bool,
    /// Accepted.
    #[arg(short = 'c', long = "cap")]
    pub cap: Vec<String>,
    /// Accepted.
    #[arg(long = "preserve-fds", default_value_t = 0)]
    pub preserve_fds: u32,
    /// Where the process's pid is written.
    #[arg(long = "pid-file", value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    /// Return once started.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Run even if the container is paused (accepted).
    #[arg(long = "ignore-paused")]
    pub ignore_paused: bool,
    /// Accepted.
    #[arg(long)]
    pub cgroup: Vec<String>,
    /// The container.
    pub id: String,
    /// The command and its arguments, when no --process is given.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// `update`'s flags.
#[derive(Args, Debug)]
pub struct UpdateArgs {
    /// Resources as OCI `LinuxResources` JSON (`-` for stdin).
    #[arg(short = 'r', long, value_name = "FILE")]
    pub resources: Option<PathBuf>,
    /// Memory limit (bytes, or with a k/m/g suffix).
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// Accepted.
    #[arg(long = "memory-swap")]
    pub memory_swap: Option<String>,
    /// Accepted.
    #[arg(long = "memory-reservation")]
    pub memory_reservation: Option<String>,
    /// Accepted.
    #[arg(long = "kernel-memory")]
    pub kernel_memory: Option<String>,
    /// Accepted.
    #[arg(long = "cpu-shares")]
    pub cpu_shares: Option<String>,
    /// Accepted.
    #[arg(long = "cpu-period")]
    pub cpu_period: Option<String>,
    /// Accepted.
    #[arg(long = "cpu-quota")]
    pub cpu_quota: Option<String>,
    /// Accepted.
    #[arg(long = "cpuset-cpus")]
    pub cpuset_cpus: Option<String>,
    /// Accepted.
    #[arg(long = "cpuset-mems")]
    pub cpuset_mems: Option<String>,
    /// Accepted.
    #[arg(long = "pids-limit")]
    pub pids_limit: Option<String>,
    /// Accepted.
    #[arg(long = "blkio-weight")]
    pub blkio_weight: Option<String>,
    /// The container.
    pub id: String,
}

/// `events`' flags.
#[derive(Args, Debug)]
pub struct EventsArgs {
    /// One stats event, then exit.
    #[arg(long)]
    pub stats: bool,
    /// Accepted.
    #[arg(long, value_name = "DURATION")]
    pub interval: Option<String>,
    /// The container.
    pub id: String,
}

/// The flags runc takes before its command (with a value, or without).
const GLOBAL_WITH_VALUE: &[&str] = &["--root", "--log", "--log-format", "--criu"];
const GLOBAL_ALONE: &[&str] = &["--debug", "--systemd-cgroup", "--rootless"];

/// Commands only runc's command line has (`run` is `wasmbox run` unless a runc flag comes first).
const RUNC_ONLY: &[&str] = &[
    "create", "start", "state", "kill", "delete", "list", "ps", "features", "spec", "exec",
    "pause", "resume", "update", "events",
];

/// Whether `args` (without the program name) are runc's command line: a runc global flag comes
/// first, or the command is one only runc has.
pub fn is_oci(args: &[String]) -> bool {
    let mut i = 0;
    let mut runc_flag = false;
    while let Some(a) = args.get(i) {
        let name = a.split_once('=').map_or(a.as_str(), |(n, _)| n);
        if GLOBAL_WITH_VALUE.contains(&name) {
            runc_flag = true;
            i += if a.contains('=') { 1 } else { 2 };
        } else if GLOBAL_ALONE.contains(&name) {
            runc_flag = true;
            i += 1;
        } else if a.starts_with('-') {
            i += 1;
        } else {
            return runc_flag || RUNC_ONLY.contains(&a.as_str());
        }
    }
    false
}

/// Where the command starts in `args` (without the program name): past the global flags.
pub fn command_at(args: &[String]) -> usize {
    let mut i = 0;
    while let Some(a) = args.get(i) {
        let name = a.split_once('=').map_or(a.as_str(), |(n, _)| n);
        if GLOBAL_WITH_VALUE.contains(&name) && !a.contains('=') {
            i += 2;
        } else if a.starts_with('-') {
            i += 1;
        } else {
            return i;
        }
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Oci {
        let argv: Vec<String> = line.split_whitespace().map(String::from).collect();
        assert!(
            is_oci(&argv[1..]),
            "{line}: not taken for runc's command line"
        );
        Oci::try_parse_from(&argv).unwrap_or_else(|e| panic!("{line}: {e}"))
    }

    /// The argument vectors engines send, as their sources build them: containerd's runc shim
    /// (go-runc 1.2), podman 4.3 (directly and through conmon), CRI-O.
    #[test]
    fn every_engines_argv_parses() {
        let lines = [
            // containerd's runc shim (Docker, ctr --runc-binary, CRI BinaryName).
            "R --root /run/containerd/runc/k8s.io --log /b/log.json --log-format json create --bundle /b --pid-file /b/init.pid ID",
            "R --root /run/containerd/runc/default --log /b/log.json --log-format json --systemd-cgroup create --bundle /b --pid-file /b/init.pid --console-socket /tmp/s --no-pivot --no-new-keyring ID",
            "R --root /r --log /b/log.json --log-format json start ID",
            "R --root /r --log /b/log.json --log-format json exec --process /run/user/0/runc-process1 --console-socket /tmp/s --detach --pid-file /b/e.pid ID",
            "R --root /r --log /b/log.json --log-format json kill --all ID 9",
            "R --root /r --log /b/log.json --log-format json kill ID 15",
            "R --root /r --log /b/log.json --log-format json delete ID",
            "R --root /r --log /b/log.json --log-format json delete --force ID",
            "R --root /r --log /b/log.json --log-format json pause ID",
            "R --root /r --log /b/log.json --log-format json resume ID",
            "R --root /r --log /b/log.json --log-format json update --resources=- ID",
            "R --root /r --log /b/log.json --log-format json ps --format json ID",
            "R --root /r state ID",
            "R --root /r list --format=json",
            "R --root /r events --stats ID",
            "R --root /r events --interval=5s ID",
            "R --rootless=false --root /r start ID",
            "R features",
            "R spec --bundle /b",
            "R spec --rootless",
            // podman through conmon, and directly.
            "R --log-format=json --log /run/c/oci-log create --bundle /b --pid-file /run/c/pidfile --no-new-keyring --console-socket /tmp/s ID",
            "R create --bundle /b --pid-file /run/c/pidfile ID",
            "R --systemd-cgroup create --bundle /b --pid-file /run/c/pidfile --no-pivot --preserve-fds 2 ID",
            "R --log-format=json --log /run/c/exec-log exec --pid-file /run/c/exec.pid --process /run/c/p.json --detach --preserve-fds 1 --console-socket /tmp/s ID",
            "R start ID",
            "R kill ID 28",
            "R kill --all ID 15",
            "R delete --force ID",
            "R update --resources=/tmp/podman123 ID",
            // CRI-O.
            "R --systemd-cgroup --root=/run/crun create --bundle /b --pid-file /b/pidfile --no-pivot ID",
            "R --root /run/crun --systemd-cgroup kill ID KILL",
            "R --root /run/crun kill -a ID 9",
            "R --root /run/crun update --resources - ID",
            "R --root /run/crun exec --process /tmp/exec-process-1 ID",
            "R --root=/run/crun exec --pid-file /tmp/pidfile1 --process /tmp/exec-process-1 --detach ID",
        ];
        for line in lines {
            parse(line);
        }
        let o = parse("R --root=/run/crun --log-format json kill -a ID KILL");
        assert_eq!(o.root, Path::new("/run/crun"));
        assert_eq!(o.log_format, LogFormat::Json);
        let OciCommand::Kill(k) = o.command else {
            panic!("kill")
        };
        assert!(k.all);
        assert_eq!((k.id.as_str(), k.signal.as_deref()), ("ID", Some("KILL")));
        let o = parse("R --root /r exec --process /p.json --detach --pid-file /e.pid ID");
        let OciCommand::Exec(e) = o.command else {
            panic!("exec")
        };
        assert!(e.detach && e.command.is_empty());
        assert_eq!(e.id, "ID");
    }

    #[test]
    fn wasmbox_s_own_commands_stay_its_own() {
        let own = |l: &str| {
            let a: Vec<String> = l.split_whitespace().map(String::from).collect();
            is_oci(&a)
        };
        assert!(!own("run app.wasm"));
        assert!(!own("run --bundle /b"));
        assert!(!own("--store /s images"));
        assert!(!own("serve --addr 127.0.0.1:8080 app.wasm"));
        assert!(own("--root /r run --bundle /b ID"));
        assert!(own("state ID"));
        assert_eq!(
            command_at(&[
                "--root".into(),
                "/r".into(),
                "--debug".into(),
                "start".into()
            ]),
            3
        );
    }
}
