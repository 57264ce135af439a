//! A real containerd for the shim tests: its own root, state, sockets and namespace, with the
//! freshly built `containerd-shim-wasmbox-v1` on its PATH; driven with `ctr`. Everything it
//! starts (containerd, shims, runc containers, mounts) is cleaned up when it drops.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest as _, Sha256};

use crate::common::{Out, wasmbox_bin};

mod images;
pub use images::*;

/// Our runtime's name in containerd.
pub const RUNTIME: &str = "io.containerd.wasmbox.v1";

/// A containerd daemon of the test's own.
pub struct Containerd {
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    pub ns: String,
    /// Added to containerd's environment.
    env: Vec<(String, String)>,
    /// The network namespace it runs in (`nsenter --net=`), if not the test's.
    netns: Option<String>,
    /// The umask it starts with (and its shims inherit), if not the test's.
    umask: Option<libc::mode_t>,
}

/// A named network namespace (`ip netns add`) holding only loopback, up; deleted when dropped.
pub struct TestNetns(pub String);

impl TestNetns {
    /// A new namespace named `PREFIX-PID-N`.
    pub fn new(prefix: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let ns = TestNetns(format!(
            "{prefix}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        ip(&["netns", "add", &ns.0]);
        ip(&["-n", &ns.0, "link", "set", "lo", "up"]);
        ns
    }

    /// Its path, for `nsenter --net=` and setns(2).
    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.0)
    }

    /// `nsenter --net=NS PROGRAM`: a command that runs inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new(tool("nsenter"));
        c.arg(format!("--net={}", self.path().display()))
            .arg(program);
        c
    }

    /// Runs `f` on a thread that has joined the namespace (a network namespace is per thread).
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let ns = std::fs::File::open(self.path()).unwrap();
        std::thread::spawn(move || {
            enter_netns(&ns);
            f()
        })
        .join()
        .unwrap()
    }
}

#[allow(unsafe_code, reason = "setns(2) of a test's own thread")]
fn enter_netns(ns: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid descriptor; only the calling thread changes namespace.
    let r = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.0])
            .status();
    }
}

/// Runs `ip ARGS`, which must succeed.
pub fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().unwrap();
    assert!(st.success(), "ip {args:?}");
}

fn tool(name: &str) -> String {
    for dir in ["/usr/bin", "/usr/sbin", "/usr/local/bin", "/bin", "/sbin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p.to_string_lossy().into_owned();
        }
    }
    panic!("{name} is not installed: tests/run.sh installs it (apt-get install containerd runc)");
}

impl Containerd {
    /// Starts a containerd and waits until it answers.
    pub fn start() -> Self {
        Self::start_with_env(&[])
    }

    /// Starts a containerd with `env` added to its environment (which its shims inherit).
    pub fn start_with_env(env: &[(&str, &str)]) -> Self {
        Self::start_with(env, None)
    }

    /// Starts a containerd under `umask` (which its shims inherit), as an init system started
    /// with a umask of 000 would.
    pub fn start_with_umask(umask: libc::mode_t) -> Self {
        Self::start_with(&[], Some(umask))
    }

    fn start_with(env: &[(&str, &str)], umask: Option<libc::mode_t>) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let ns = format!(
            "wbt-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let mut c = Self::new(ns, env, None);
        c.umask = umask;
        c.configure(r#"disabled_plugins = ["io.containerd.grpc.v1.cri"]"#);
        c.launch();
        c
    }

    /// A containerd not started yet, in directory of its own.
    fn new(ns: String, env: &[(&str, &str)], netns: Option<String>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("wbctd")
            .tempdir_in("/tmp")
            .unwrap();
        Containerd {
            dir,
            child: None,
            ns,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            netns,
            umask: None,
        }
    }

    /// Writes its configuration: its own root, state and sockets, then `extra` (TOML).
    fn configure(&self, extra: &str) {
        let d = self.dir.path();
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
{extra}
[grpc]
  address = "{d}/c.sock"
[ttrpc]
  address = "{d}/c.sock.ttrpc"
[debug]
  level = "debug"
"#,
            d = d.display()
        );
        std::fs::write(d.join("config.toml"), config).unwrap();
    }

    /// Starts a containerd with its CRI plugin, in network namespace `netns`, for containerd
    /// namespace `k8s.io`. `configure` gets its directory and returns the CRI plugin's
    /// configuration (TOML, after the top-level keys).
    pub fn start_cri(
        netns: &TestNetns,
        env: &[(&str, &str)],
        configure: impl FnOnce(&Path) -> String,
    ) -> Self {
        let c = Self::new("k8s.io".into(), env, Some(netns.0.clone()));
        let extra = configure(c.dir.path());
        let mut c = c;
        c.configure(&extra);
        c.launch();
        c
    }

    fn launch(&mut self) {
        let d = self.dir.path();
        let bin_dir = wasmbox_bin().parent().unwrap().to_path_buf();
        assert!(
            bin_dir.join("containerd-shim-wasmbox-v1").exists(),
            "containerd-shim-wasmbox-v1 not built: run `cargo build --workspace --bins`"
        );
        let path = format!(
            "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            bin_dir.display()
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("containerd.log"))
            .unwrap();
        let mut command = match &self.netns {
            Some(ns) => {
                let mut c = Command::new(tool("nsenter"));
                c.arg(format!("--net=/run/netns/{ns}"))
                    .arg(tool("containerd"));
                c
            }
            None => Command::new(tool("containerd")),
        };
        if let Some(umask) = self.umask {
            set_umask(&mut command, umask);
        }
        let child = command
            .arg("--config")
            .arg(d.join("config.toml"))
            .env("PATH", path)
            .env("WASMBOX_CACHE_DIR", d.join("cache"))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start containerd");
        self.child = Some(child);
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(30) {
            if self.ctr(&["version"]).code == 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("containerd did not come up: {}", self.log());
    }

    /// Stops containerd (SIGTERM) and starts it again on the same root and state; shims keep
    /// running meanwhile.
    pub fn restart(&mut self) {
        self.stop_daemon();
        self.launch();
    }

    fn stop_daemon(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(c.id(), libc::SIGTERM);
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(10) {
                if c.try_wait().unwrap().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The daemon's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// The gRPC socket.
    pub fn sock(&self) -> PathBuf {
        self.dir.path().join("c.sock")
    }

    /// The path of the socket a shim serving `group` binds (the shim crate's `socket_address`:
    /// `/run/containerd/s/` and the SHA-256 of the daemon's address, namespace and group).
    pub fn group_socket(&self, group: &str) -> PathBuf {
        let key = format!("{}/{}/{group}", self.sock().display(), self.ns);
        Path::new("/run/containerd/s").join(hex::encode(Sha256::digest(key.as_bytes())))
    }

    /// A `ctr` command against this daemon and namespace.
    pub fn ctr_cmd(&self) -> Command {
        let mut c = Command::new(tool("ctr"));
        c.arg("--address")
            .arg(self.sock())
            .arg("--namespace")
            .arg(&self.ns)
            .stdin(Stdio::null());
        c
    }

    /// Runs `ctr ARGS` to completion.
    pub fn ctr(&self, args: &[&str]) -> Out {
        Out::from(self.ctr_cmd().args(args).output().expect("spawn ctr"))
    }

    /// Imports an image archive.
    pub fn import(&self, archive: &Path) {
        let out = self.ctr(&["images", "import", archive.to_str().unwrap()]);
        assert_eq!(out.code, 0, "ctr images import: {out:#?}");
    }

    /// `ctr run --rm --runtime io.containerd.wasmbox.v1 [FLAGS] IMAGE ID [ARGS]`.
    pub fn run(&self, flags: &[&str], image: &str, id: &str, args: &[&str]) -> Out {
        let mut a = vec!["run", "--rm", "--runtime", RUNTIME];
        a.extend_from_slice(flags);
        a.push(image);
        a.push(id);
        a.extend_from_slice(args);
        self.ctr(&a)
    }

    /// Starts a detached container (`ctr run -d`), with its output in `DIR/ID.log`.
    pub fn run_detached(&self, flags: &[&str], image: &str, id: &str, args: &[&str]) -> PathBuf {
        let log = self.dir.path().join(format!("{id}.log"));
        let uri = format!("file://{}", log.display());
        let mut a = vec!["run", "-d", "--runtime", RUNTIME, "--log-uri", &uri];
        a.extend_from_slice(flags);
        a.push(image);
        a.push(id);
        a.extend_from_slice(args);
        let out = self.ctr(&a);
        assert_eq!(
            out.code,
            0,
            "ctr run -d {id}: {out:#?}\n{}",
            self.log_tail()
        );
        log
    }

    /// The status column of `ctr task ls` for `id` (RUNNING, STOPPED, PAUSED, CREATED).
    pub fn status(&self, id: &str) -> Option<String> {
        let out = self.ctr(&["task", "ls"]);
        out.stdout.lines().skip(1).find_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols.first() == Some(&id)).then(|| cols.last().unwrap().to_string())
        })
    }

    /// The pid `ctr task ls` shows for `id`.
    pub fn pid(&self, id: &str) -> u32 {
        let out = self.ctr(&["task", "ls"]);
        out.stdout
            .lines()
            .skip(1)
            .find_map(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                (cols.first() == Some(&id)).then(|| cols[1].parse().unwrap())
            })
            .unwrap_or_else(|| panic!("no task {id}: {out:#?}"))
    }

    /// Waits until `id`'s status is `want`.
    #[track_caller]
    pub fn wait_status(&self, id: &str, want: &str) {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(20) {
            if self.status(id).as_deref() == Some(want) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "{id} never became {want}: {:?}\n{}",
            self.status(id),
            self.log_tail()
        );
    }

    /// The last lines of the daemon's log (for failure messages).
    pub fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Shim processes serving this daemon (not their spawners, forks that show the same command
    /// line).
    pub fn shims(&self) -> Vec<u32> {
        let sock = self.sock().to_string_lossy().into_owned();
        procs_matching(|cmd| {
            cmd.first()
                .is_some_and(|a| a.ends_with("containerd-shim-wasmbox-v1"))
                && cmd.windows(2).any(|w| w[0] == "-address" && w[1] == sock)
        })
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim_end() != "wasmbox-spawner")
        })
        .collect()
    }

    /// Mounts below this daemon's directory, as the host sees them.
    pub fn mounts(&self) -> Vec<String> {
        self.mounts_seen_by("self")
    }

    /// Mounts below this daemon's directory, as process `pid` (`self` for the host's) sees them:
    /// a shim mounts in a mount namespace of its own.
    pub fn mounts_seen_by(&self, pid: &str) -> Vec<String> {
        let d = self.dir.path().to_string_lossy().into_owned();
        std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
            .unwrap()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|m| m.starts_with(&d))
            .collect()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if self.child.is_some() {
            let tasks = self.ctr(&["task", "ls", "-q"]);
            for id in tasks.stdout.lines() {
                let _ = self.ctr(&["task", "kill", "-a", "-s", "SIGKILL", id]);
            }
            for id in tasks.stdout.lines() {
                let _ = self.ctr(&["task", "delete", "-f", id]);
            }
            let cs = self.ctr(&["containers", "ls", "-q"]);
            for id in cs.stdout.lines() {
                let _ = self.ctr(&["containers", "rm", id]);
            }
        }
        self.stop_daemon();
        for pid in self.shims() {
            let socket = shim_socket(pid);
            signal(pid, libc::SIGKILL);
            if let Some(s) = socket {
                let _ = std::fs::remove_file(s);
            }
        }
        // runc containers of this daemon (their bundles are in its state directory: another
        // daemon may use the same namespace), then mounts, deepest first.
        let d = self.dir.path().to_string_lossy().into_owned();
        for runc_root in [
            format!("/run/wasmbox/runc/{}", self.ns),
            format!("/run/containerd/runc/{}", self.ns),
        ] {
            let Ok(list) = Command::new(tool("runc"))
                .args(["--root", &runc_root, "list", "--format", "json"])
                .output()
            else {
                continue;
            };
            let listed: serde_json::Value =
                serde_json::from_slice(&list.stdout).unwrap_or_default();
            for c in listed.as_array().into_iter().flatten() {
                if c["bundle"].as_str().is_some_and(|b| b.starts_with(&d))
                    && let Some(id) = c["id"].as_str()
                {
                    let _ = Command::new(tool("runc"))
                        .args(["--root", &runc_root, "delete", "--force", id])
                        .output();
                }
            }
            // Only if nothing else is left in it.
            let _ = std::fs::remove_dir(&runc_root);
        }
        let mut mounts = self.mounts();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            umount(&m);
        }
    }
}

#[allow(
    unsafe_code,
    reason = "umask(2) in the forked child before exec: async-signal-safe, no memory effects"
)]
fn set_umask(command: &mut Command, umask: libc::mode_t) {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: the closure only calls umask(2), which is async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            libc::umask(umask);
            Ok(())
        });
    }
}

/// Sends `sig` to `pid`; false when kill(2) fails (the process is gone).
#[allow(unsafe_code, reason = "kill(2) on a test's own process")]
pub fn signal(pid: u32, sig: i32) -> bool {
    // SAFETY: no memory effects.
    unsafe { libc::kill(pid as i32, sig) == 0 }
}

#[allow(unsafe_code, reason = "umount2(2) of a test's own mount")]
fn umount(path: &str) {
    let c = std::ffi::CString::new(path).unwrap();
    // SAFETY: `c` is a valid C string for the call.
    unsafe {
        libc::umount2(c.as_ptr(), libc::MNT_DETACH);
    }
}

/// The socket path a shim process serves: the listening Unix socket under `/run/containerd/s/`
/// among its descriptors.
pub fn shim_socket(pid: u32) -> Option<String> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|t| {
            let t = t.to_string_lossy().into_owned();
            Some(t.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    // Num RefCount Protocol Flags Type St Inode Path; St 01 is listening.
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/unix")).ok()?;
    table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() == 8
            && f[5] == "01"
            && inodes.iter().any(|i| i == f[6])
            && f[7].starts_with("/run/containerd/s/"))
        .then(|| f[7].to_string())
    })
}

/// Pids whose command line matches.
pub fn procs_matching(f: impl Fn(&[String]) -> bool) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if f(&args) {
            out.push(pid);
        }
    }
    out
}

/// Whether a process exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next().map(|st| st != "Z"))
                .unwrap_or(false)
        })
        .unwrap_or(false)
}

/// `ctr events`, collected in the background.
pub struct EventLog {
    child: Child,
    lines: std::sync::Arc<crate::common::Lines>,
}

/// One event: its topic and its JSON body.
#[derive(Debug, Clone)]
pub struct Event {
    pub topic: String,
    pub body: serde_json::Value,
}

impl Event {
    /// Parses one line of `ctr events` (`TIME NAMESPACE TOPIC {JSON}`).
    fn parse(line: &str) -> Option<Event> {
        let brace = line.find('{')?;
        let body: serde_json::Value = serde_json::from_str(&line[brace..]).ok()?;
        let topic = line[..brace].split_whitespace().last()?.to_string();
        Some(Event { topic, body })
    }
}

impl EventLog {
    /// Starts `ctr events`.
    pub fn start(c: &Containerd) -> Self {
        let mut child = c
            .ctr_cmd()
            .arg("events")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lines = crate::common::Lines::read(child.stdout.take().unwrap());
        // ctr subscribes asynchronously: it is listening once an event made after it started
        // shows up. Namespaces made for that are removed again.
        let t = Instant::now();
        let mut probes = Vec::new();
        loop {
            let probe = format!(
                "wasmbox-events-probe-{}-{}",
                std::process::id(),
                probes.len()
            );
            assert_eq!(c.ctr(&["namespaces", "create", &probe]).code, 0);
            probes.push(probe);
            let seen = lines.wait(Duration::from_millis(200), |l| {
                l.contains("/namespaces/create") && probes.iter().any(|p| l.contains(p.as_str()))
            });
            if seen {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "ctr events shows no events"
            );
        }
        for p in &probes {
            c.ctr(&["namespaces", "remove", p]);
        }
        EventLog { child, lines }
    }

    /// Events about container `id` so far.
    pub fn of(&self, id: &str) -> Vec<Event> {
        self.lines
            .all()
            .iter()
            .filter_map(|l| Event::parse(l))
            .filter(|e| e.body["container_id"] == id)
            .collect()
    }

    /// Waits until container `id` has an event on `topic`, and returns it.
    #[track_caller]
    pub fn wait_for(&self, id: &str, topic: &str) -> Event {
        let wanted = |l: &str| {
            Event::parse(l).is_some_and(|e| e.topic == topic && e.body["container_id"] == id)
        };
        if self.lines.wait(Duration::from_secs(20), wanted)
            && let Some(e) = self.of(id).into_iter().find(|e| e.topic == topic)
        {
            return e;
        }
        panic!("no {topic} event for {id}: {:#?}", self.of(id));
    }
}

impl Drop for EventLog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Parses an RFC 3339 timestamp as `ctr events` prints it (UTC, `Z`).
pub fn parse_time(s: &str) -> SystemTime {
    // 2026-11-23T13:15:00.123456789Z
    let (date, time) = s.trim_end_matches('Z').split_once('T').unwrap();
    let d: Vec<i64> = date.split('-').map(|x| x.parse().unwrap()).collect();
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<i64> = hms.split(':').map(|x| x.parse().unwrap()).collect();
    let nanos: u32 = format!("{frac:0<9}")[..9].parse().unwrap();
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, m) = if d[1] <= 2 {
        (d[0] - 1, d[1] + 9)
    } else {
        (d[0], d[1] - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    let secs = days * 86400 + t[0] * 3600 + t[1] * 60 + t[2];
    SystemTime::UNIX_EPOCH + Duration::new(secs as u64, nanos)
}
