//! Capability policy: what a guest is given (arguments, environment, directories, network, limits),
//! and how an OCI runtime bundle's `config.json` turns into one.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use oci_spec::runtime::{Mount, Process, Spec};

use crate::error::{Error, Result};
use crate::net::NetPolicy;

mod annotations;
mod serve;
pub use annotations::*;
pub use serve::*;

/// Filesystem types that are kernel interfaces and are never exposed to a guest (as mount types,
/// and as mounts below a recursive grant's source).
pub(crate) const KERNEL_FS: &[&str] = &[
    "proc",
    "sysfs",
    "devpts",
    "mqueue",
    "cgroup",
    "cgroup2",
    "devtmpfs",
    "securityfs",
    "debugfs",
    "tracefs",
    "bpf",
    "hugetlbfs",
    "configfs",
    "fusectl",
    "pstore",
    "binfmt_misc",
    "efivarfs",
];
/// Guest directories whose contents are kernel interfaces; nothing is ever mounted at or under them.
const KERNEL_DIRS: &[&str] = &["/proc", "/sys", "/dev"];

/// The longest wall-clock deadline accepted (a year).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// Parses a `config.json` as runc 1.1 reads one. The runtime spec makes `process.user` and
/// `process.cwd` required, but runc runs a process without a user as uid 0 and podman and
/// hand-written configs leave it out; WASI has no users, so a missing user is uid 0 and gid 0,
/// and a missing working directory is `/`.
pub fn parse_spec(text: &str) -> Result<Spec, String> {
    let mut json: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if let Some(process) = json.get_mut("process").and_then(|p| p.as_object_mut()) {
        process
            .entry("user")
            .or_insert_with(|| serde_json::json!({"uid": 0, "gid": 0}));
        process.entry("cwd").or_insert_with(|| "/".into());
    }
    serde_json::from_value(json).map_err(|e| e.to_string())
}

/// Finds where `process.args[0]` lives in the rootfs: a path (absolute, or relative to the
/// working directory) as is; a bare name in the process's `PATH`, as runc would; symbolic links
/// followed inside the rootfs as a chroot follows them. Returns the path relative to the rootfs,
/// or `None` when nothing is there.
pub fn locate_entry(root: &cap_std::fs::Dir, process: &Process) -> Option<PathBuf> {
    let arg0 = process.args().as_ref()?.first()?;
    let (arg0, _) = Policy::split_export(arg0);
    let cwd = process.cwd().to_string_lossy().into_owned();
    let rel = |p: &str| -> PathBuf {
        let full = if p.starts_with('/') {
            p.to_string()
        } else {
            format!("{cwd}/{p}")
        };
        PathBuf::from(full.trim_start_matches('/'))
    };
    // Links followed as the container's own root sees them (absolute ones from the rootfs).
    let exists = |p: &Path| {
        p.as_os_str().is_empty()
            || crate::resolve::open_in_root(
                std::os::fd::AsFd::as_fd(root),
                p,
                rustix::fs::OFlags::PATH,
            )
            .is_ok()
    };
    if arg0.contains('/') {
        let p = rel(arg0);
        return exists(&p).then_some(p);
    }
    let path = process
        .env()
        .iter()
        .flatten()
        .find_map(|kv| kv.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .to_string();
    std::iter::once(rel(arg0))
        .chain(
            path.split(':')
                .filter(|d| d.starts_with('/'))
                .map(|d| rel(&format!("{d}/{arg0}"))),
        )
        .find(|p| !p.as_os_str().is_empty() && exists(p))
}

/// A deadline of `secs` seconds, range-checked: at least a millisecond, at most [`MAX_TIMEOUT`].
/// Every timeout from a flag, annotation or spec goes through here.
pub fn timeout_from_secs(secs: f64) -> Result<Duration, String> {
    match Duration::try_from_secs_f64(secs) {
        Ok(d) if d >= Duration::from_millis(1) && d <= MAX_TIMEOUT => Ok(d),
        _ => Err(format!(
            "{secs} seconds is out of range (1ms to {} days)",
            MAX_TIMEOUT.as_secs() / 86400
        )),
    }
}

/// Parses a size: bytes, or a number with `k`, `m`, `g` (powers of 1024; `b`, `ib` suffixes
/// allowed). Flags and annotations read sizes alike.
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let t = t
        .strip_suffix("ib")
        .or_else(|| t.strip_suffix('b'))
        .unwrap_or(&t);
    let (num, mul) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mul))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{s:?} is not a size (e.g. 64m, 1g, 1048576)"))
}

/// Parses a duration: `500ms`, `10s`, `2m`, `1h`, or plain seconds. Flags and annotations read
/// durations alike.
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let t = s.trim();
    let bad = || format!("{s:?} is not a duration (e.g. 500ms, 10s, 2m)");
    let (num, unit) = match t.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&t[..i], &t[i..]),
        None => (t, "s"),
    };
    let n: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(bad()),
    };
    timeout_from_secs(secs).map_err(|e| format!("{s:?}: {e}"))
}

/// A host directory granted to the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirGrant {
    /// Directory on the host.
    pub host: PathBuf,
    /// Absolute path the guest sees it at.
    pub guest: String,
    /// Whether the guest may only read.
    pub read_only: bool,
    /// Whether mounts below the host directory come along (`rbind`; `-v` does, as docker's).
    pub recursive: bool,
}

/// A single host file bound at a guest path (a bind mount of a file, as kubelet gives every
/// container `/etc/hosts` and its termination-message file). Exposed only through a mount tree,
/// where a bind of one file shows no siblings; without one it is left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileGrant {
    /// File on the host.
    pub host: PathBuf,
    /// Absolute guest path.
    pub guest: String,
    /// Whether the guest may only read it.
    pub read_only: bool,
}

/// Open handles a guest may hold when nothing says otherwise (as a shell's `ulimit -n`).
pub const DEFAULT_HANDLES: u64 = 1024;
/// The most open handles any guest may hold.
pub const MAX_HANDLES: u64 = 65536;

/// Resource limits of one guest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// Cap on the bytes of all linear memories and tables together.
    pub memory: Option<u64>,
    /// Wall-clock deadline from start.
    pub timeout: Option<Duration>,
    /// Cap on open handles (files, directories, sockets, streams, pollables) at once; `None` is
    /// [`DEFAULT_HANDLES`]. From `process.rlimits` `RLIMIT_NOFILE` (its soft limit) in a spec.
    pub open_handles: Option<u64>,
}

impl Limits {
    /// The handle limit in force, within 16..=[`MAX_HANDLES`].
    pub fn handles(&self) -> usize {
        self.open_handles
            .unwrap_or(DEFAULT_HANDLES)
            .clamp(16, MAX_HANDLES) as usize
    }
}

/// Everything a guest is granted. Nothing outside it is reachable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// `argv`, starting with the program name.
    pub args: Vec<String>,
    /// Environment variables.
    pub env: Vec<(String, String)>,
    /// Initial working directory (absolute guest path); empty when none was given (a wasm file
    /// run without `-w`): a component's `initial-cwd` is then none, as under `wasmtime run`.
    pub cwd: String,
    /// The export to call instead of the default entry (`_start` or `wasi:cli/run`).
    pub export: Option<String>,
    /// Directories, the rootfs (at `/`) first when there is one.
    pub dirs: Vec<DirGrant>,
    /// Single files bound into the guest's filesystem.
    pub files: Vec<FileGrant>,
    /// Guest paths that get a fresh private empty directory each start (tmpfs mounts).
    pub scratch: Vec<String>,
    /// Network grants.
    pub net: NetPolicy,
    /// Limits.
    pub limits: Limits,
    /// How an HTTP component is served (unused for commands).
    pub serve: ServeConfig,
    /// Whether `/dev` holds the devices every container has (`null`, `zero`, `full`, `random`,
    /// `urandom`), which wasmbox answers itself: always for a bundle, on request for a file.
    pub devices: bool,
}

/// A guest path made absolute and normal, or `None` when it tries to climb with `..`.
pub fn normalize_guest_path(p: &str) -> Option<String> {
    let mut parts = Vec::new();
    for c in Path::new(p).components() {
        match c {
            Component::Normal(s) => parts.push(s.to_str()?.to_string()),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(format!("/{}", parts.join("/")))
}

fn is_kernel_path(guest: &str) -> bool {
    KERNEL_DIRS
        .iter()
        .any(|k| guest == *k || guest.starts_with(&format!("{k}/")))
}

impl Policy {
    /// Splits `name#export` in `args[0]` into the program path and the export to call.
    pub fn split_export(arg0: &str) -> (&str, Option<&str>) {
        match arg0.rsplit_once('#') {
            Some((p, e)) if !e.is_empty() && !e.contains('/') => (p, Some(e)),
            _ => (arg0, None),
        }
    }

    /// Adds a directory grant, checking the guest path.
    pub fn grant_dir(&mut self, host: PathBuf, guest: &str, read_only: bool) -> Result<(), String> {
        self.grant_dir_with(host, guest, read_only, true)
    }

    /// Adds a directory grant, checking the guest path; `recursive` brings the mounts below the
    /// host directory along.
    pub fn grant_dir_with(
        &mut self,
        host: PathBuf,
        guest: &str,
        read_only: bool,
        recursive: bool,
    ) -> Result<(), String> {
        let guest = normalize_guest_path(guest).ok_or("guest path must not contain '..'")?;
        if is_kernel_path(&guest) {
            let hint = if guest == "/dev" || guest.starts_with("/dev/") {
                " (wasmbox answers /dev/null, zero, full, random and urandom itself: images have \
                 them, and `--dev` gives them to a wasm file)"
            } else {
                ""
            };
            return Err(format!("{guest} is reserved for kernel interfaces{hint}"));
        }
        self.dirs.retain(|d| d.guest != guest);
        self.dirs.push(DirGrant {
            host,
            guest,
            read_only,
            recursive,
        });
        Ok(())
    }
}

/// A runtime bundle read from disk: the policy and where the entry wasm lives.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The bundle directory.
    pub dir: PathBuf,
    /// The parsed `config.json`.
    pub spec: Spec,
    /// The policy derived from it.
    pub policy: Policy,
    /// Host path of the rootfs.
    pub rootfs: PathBuf,
    /// Path of the entry wasm inside the rootfs (relative to it).
    pub entry: PathBuf,
}

impl Bundle {
    /// Reads `DIR/config.json` and derives the policy.
    pub fn load(dir: &Path) -> Result<Bundle> {
        let path = dir.join("config.json");
        let bad = |reason: String| Error::Spec {
            path: path.clone(),
            reason,
        };
        let text = std::fs::read_to_string(&path).map_err(|e| bad(e.to_string()))?;
        Self::from_spec(dir, parse_spec(&text).map_err(bad)?)
    }

    /// Derives the policy from an already parsed spec of the bundle at `dir`.
    pub fn from_spec(dir: &Path, spec: Spec) -> Result<Bundle> {
        let rootfs = rootfs_of(dir, &spec)?;
        // Where runc would find it (a bare name through PATH); one not found is read where the
        // path names it, and reported missing there.
        // Ambient authority, named: opening the bundle's rootfs.
        let entry = match (
            cap_std::fs::Dir::open_ambient_dir(&rootfs, cap_std::ambient_authority()),
            spec.process(),
        ) {
            (Ok(root), Some(process)) => locate_entry(&root, process),
            _ => None,
        };
        Self::with_entry(dir, spec, rootfs, entry)
    }

    /// Derives the policy of the bundle at `dir` whose rootfs is `rootfs` and whose entry (found
    /// by [`locate_entry`], relative to the rootfs) is `entry`, when it was found.
    pub fn with_entry(
        dir: &Path,
        spec: Spec,
        rootfs: PathBuf,
        entry: Option<PathBuf>,
    ) -> Result<Bundle> {
        let path = dir.join("config.json");
        let bad = |reason: String| Error::Spec {
            path: path.clone(),
            reason,
        };
        let process = spec
            .process()
            .as_ref()
            .ok_or_else(|| bad("no process".into()))?;
        let args = process.args().clone().unwrap_or_default();
        let Some(arg0) = args.first() else {
            return Err(bad("process.args is empty".into()));
        };
        let (program, export) = Policy::split_export(arg0);
        let cwd = normalize_guest_path(&process.cwd().to_string_lossy())
            .ok_or_else(|| bad("process.cwd must not contain '..'".into()))?;
        let entry_guest = if program.starts_with('/') {
            program.to_string()
        } else {
            format!("{cwd}/{program}")
        };
        let entry_guest = normalize_guest_path(&entry_guest)
            .ok_or_else(|| bad(format!("entrypoint {program:?} must not contain '..'")))?;
        let root = spec.root().as_ref().ok_or_else(|| bad("no root".into()))?;
        let entry = entry.unwrap_or_else(|| PathBuf::from(entry_guest.trim_start_matches('/')));
        let mut policy = Policy {
            args: std::iter::once(program.to_string())
                .chain(args.iter().skip(1).cloned())
                .collect(),
            env: process
                .env()
                .iter()
                .flatten()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            cwd,
            export: export.map(str::to_string),
            devices: true,
            ..Default::default()
        };
        policy.dirs.push(DirGrant {
            host: rootfs.clone(),
            guest: "/".into(),
            read_only: root.readonly().unwrap_or(false),
            recursive: false,
        });
        for m in spec.mounts().iter().flatten() {
            apply_mount(&mut policy, m, dir).map_err(bad)?;
        }
        if let Some(mem) = spec
            .linux()
            .as_ref()
            .and_then(|l| l.resources().as_ref())
            .and_then(|r| r.memory().as_ref())
            .and_then(|m| m.limit())
            && mem > 0
        {
            policy.limits.memory = Some(mem as u64);
        }
        if let Some(nofile) = process
            .rlimits()
            .iter()
            .flatten()
            .find(|r| r.typ() == oci_spec::runtime::PosixRlimitType::RlimitNofile)
        {
            policy.limits.open_handles = Some(nofile.soft());
        }
        let empty = HashMap::new();
        let ann = spec.annotations().as_ref().unwrap_or(&empty);
        apply_annotations(&mut policy, ann).map_err(bad)?;
        Ok(Bundle {
            dir: dir.to_path_buf(),
            spec,
            policy,
            rootfs,
            entry,
        })
    }
}

/// The host path of the rootfs of the bundle at `dir` (`root.path`, relative to the bundle).
pub fn rootfs_of(dir: &Path, spec: &Spec) -> Result<PathBuf> {
    let root = spec.root().as_ref().ok_or_else(|| Error::Spec {
        path: dir.join("config.json"),
        reason: "no root".into(),
    })?;
    Ok(if root.path().is_absolute() {
        root.path().clone()
    } else {
        dir.join(root.path())
    })
}

fn apply_mount(policy: &mut Policy, m: &Mount, bundle: &Path) -> Result<(), String> {
    let dest = m.destination().to_string_lossy();
    let guest = normalize_guest_path(&dest)
        .ok_or_else(|| format!("mount destination {dest:?} must not contain '..'"))?;
    if guest == "/" {
        // "" or "/" would replace the rootfs grant.
        return Err(format!(
            "mount destination {dest:?} is the root; a mount must go below /"
        ));
    }
    let typ = m.typ().as_deref().unwrap_or("");
    let opts = m.options().clone().unwrap_or_default();
    let is_bind = typ == "bind" || opts.iter().any(|o| o == "bind" || o == "rbind");
    let read_only = opts.iter().any(|o| o == "ro");
    // A file bound below /dev (a termination-message file) is a plain file, not the kernel's.
    if is_bind
        && guest.starts_with("/dev/")
        && let Some(source) = m.source().as_ref().map(|s| bundle.join(s))
        && std::fs::metadata(&source).is_ok_and(|m| m.is_file())
    {
        return grant_file(policy, source, guest, read_only);
    }
    if is_kernel_path(&guest) || KERNEL_FS.contains(&typ) {
        tracing::debug!(destination = %guest, r#type = typ, "kernel mount not exposed");
        return Ok(());
    }
    if typ == "tmpfs" {
        policy.scratch.retain(|g| *g != guest);
        policy.scratch.push(guest);
        return Ok(());
    }
    if !is_bind {
        tracing::debug!(destination = %guest, r#type = typ, "mount type not exposed");
        return Ok(());
    }
    let source = m
        .source()
        .as_ref()
        .ok_or_else(|| format!("bind mount at {guest} has no source"))?;
    let source = if source.is_absolute() {
        source.clone()
    } else {
        bundle.join(source)
    };
    let meta = std::fs::metadata(&source)
        .map_err(|e| format!("bind mount source {}: {e}", source.display()))?;
    if meta.is_file() {
        return grant_file(policy, source, guest, read_only);
    }
    if !meta.is_dir() {
        return Err(format!(
            "bind mount source {} is neither a directory nor a regular file",
            source.display()
        ));
    }
    let recursive = opts.iter().any(|o| o == "rbind");
    policy.grant_dir_with(source, &guest, read_only, recursive)
}

/// Adds a single-file grant; a later one at the same guest path replaces it (the last mount
/// shows, as with runc).
fn grant_file(
    policy: &mut Policy,
    host: PathBuf,
    guest: String,
    read_only: bool,
) -> Result<(), String> {
    policy.files.retain(|f| f.guest != guest);
    policy.files.push(FileGrant {
        host,
        guest,
        read_only,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64m"), Ok(64 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("0").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn normalizes_guest_paths() {
        assert_eq!(normalize_guest_path("/a/./b/").as_deref(), Some("/a/b"));
        assert_eq!(normalize_guest_path("a").as_deref(), Some("/a"));
        assert_eq!(normalize_guest_path("/").as_deref(), Some("/"));
        assert_eq!(normalize_guest_path("/a/../b"), None);
    }

    #[test]
    fn splits_export() {
        assert_eq!(
            Policy::split_export("/app.wasm#run"),
            ("/app.wasm", Some("run"))
        );
        assert_eq!(Policy::split_export("/app.wasm"), ("/app.wasm", None));
        assert_eq!(Policy::split_export("/a#b/c.wasm"), ("/a#b/c.wasm", None));
    }

    fn spec(json: serde_json::Value) -> Spec {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn spec_to_policy() {
        let host = tempfile::tempdir().unwrap();
        let data = host.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(host.path().join("hosts"), "x").unwrap();
        std::fs::write(host.path().join("termination-log"), "").unwrap();
        let s = spec(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs", "readonly": true},
            "process": {"cwd": "/app", "args": ["main.wasm#go", "x"], "env": ["A=1", "B=2=3"],
                        "user": {"uid": 0, "gid": 0}},
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs"},
                {"destination": "/dev/shm", "type": "tmpfs", "source": "shm"},
                {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup"},
                {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"},
                {"destination": "/data", "type": "bind", "source": data, "options": ["rbind", "ro"]},
                {"destination": "/etc/hosts", "type": "bind", "source": host.path().join("hosts"), "options": ["rbind", "ro"]},
                {"destination": "/dev/termination-log", "type": "bind", "source": host.path().join("termination-log"), "options": ["rbind", "rw"]},
                {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue"}
            ],
            "linux": {"resources": {"memory": {"limit": 1048576}}},
            "annotations": {"wasmbox.net.connect": "127.0.0.1:80, udp:10.0.0.0/8:53", "wasmbox.net.dns": "true",
                "wasmbox.http.allow": "api.example.com, *.svc.cluster.local:8080"}
        }));
        let b = Bundle::from_spec(host.path(), s).unwrap();
        assert_eq!(b.entry, PathBuf::from("app/main.wasm"));
        assert_eq!(b.rootfs, host.path().join("rootfs"));
        let p = &b.policy;
        assert_eq!(p.args, vec!["main.wasm", "x"]);
        assert_eq!(p.export.as_deref(), Some("go"));
        assert_eq!(
            p.env,
            vec![("A".into(), "1".into()), ("B".into(), "2=3".into())]
        );
        assert_eq!(p.cwd, "/app");
        assert_eq!(p.dirs.len(), 2);
        assert_eq!(p.dirs[0].guest, "/");
        assert!(p.dirs[0].read_only);
        assert_eq!(
            p.dirs[1],
            DirGrant {
                host: data,
                guest: "/data".into(),
                read_only: true,
                recursive: true,
            }
        );
        assert_eq!(p.scratch, vec!["/tmp".to_string()]);
        // Single files, read-only as given; a file below /dev is a file, the kernel's are not.
        assert_eq!(
            p.files,
            [
                FileGrant {
                    host: host.path().join("hosts"),
                    guest: "/etc/hosts".into(),
                    read_only: true,
                },
                FileGrant {
                    host: host.path().join("termination-log"),
                    guest: "/dev/termination-log".into(),
                    read_only: false,
                },
            ]
        );
        assert_eq!(p.limits.memory, Some(1048576));
        assert_eq!(p.net.connect.len(), 2);
        assert!(p.net.dns);
        let http: Vec<String> = p.net.http.iter().map(|g| g.to_string()).collect();
        assert_eq!(http, ["api.example.com", "*.svc.cluster.local:8080"]);
    }

    #[test]
    fn spec_errors_name_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), "{not json").unwrap();
        let e = Bundle::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("config.json"), "{e}");
        let s = spec(serde_json::json!({
            "ociVersion": "1.0.2", "root": {"path": "rootfs"},
            "process": {"cwd": "/", "args": ["../../x.wasm"], "user": {"uid": 0, "gid": 0}}
        }));
        let e = Bundle::from_spec(dir.path(), s).unwrap_err().to_string();
        assert!(e.contains(".."), "{e}");
        let s = spec(serde_json::json!({
            "ociVersion": "1.0.2", "root": {"path": "rootfs"},
            "process": {"cwd": "/", "args": ["/a.wasm"], "user": {"uid": 0, "gid": 0}},
            "annotations": {"wasmbox.net.connect": "example.com:80"}
        }));
        let e = Bundle::from_spec(dir.path(), s).unwrap_err().to_string();
        assert!(
            e.contains("wasmbox.net.connect") && e.contains("example.com"),
            "{e}"
        );
    }
}
