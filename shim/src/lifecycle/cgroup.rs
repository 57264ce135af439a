//! Charging a pod's wasm work to the pod's cgroup.
//!
//! Wasm guests run inside the shim, and containerd starts the shim in its own cgroup, so without
//! this a pod's cgroup would only ever see its pause container: kubelet's CPU and memory limits,
//! its evictions and the node's accounting (ListPodSandboxStats, `kubectl top pod`) read the
//! pod's cgroup. At the pod sandbox's create, the shim moves itself into a cgroup of its own,
//! `wasmbox`, below the pod's (the parent of the sandbox's `linux.cgroupsPath`), in every
//! hierarchy (cgroup v1 controllers, and cgroup v2), so the pod's limits apply to its guests
//! and its usage includes them. When the shim's last container is deleted it moves back and
//! removes that cgroup. Each move waits for an RCU grace period, so the join runs in the
//! background ([`crate::lifecycle::Lifecycle::create`]) and the move back comes after the
//! shutdown's answer.

use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;

/// The cgroup the shim makes below the pod's.
const NAME: &str = "wasmbox";

/// A cgroup hierarchy: where it is mounted and what part of it the mount shows.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Hierarchy {
    /// Mount point.
    mount: PathBuf,
    /// The cgroup path the mount's root is (usually `/`).
    root: String,
    /// Its controllers, sorted (none for cgroup v2): how `/proc/self/cgroup` names it.
    controllers: Vec<String>,
}

impl Hierarchy {
    /// The directory of cgroup `path` (absolute in the hierarchy), if the mount shows it.
    fn dir(&self, path: &str) -> Option<PathBuf> {
        let rel = if self.root == "/" {
            path
        } else {
            path.strip_prefix(&self.root)?
        };
        Some(self.mount.join(rel.trim_start_matches('/')))
    }
}

/// The shim's place below a pod's cgroup, and where it came from.
#[derive(Debug)]
pub struct PodCgroup {
    /// The directories the shim joined (one per hierarchy).
    joined: Vec<PathBuf>,
    /// The cgroup directories the shim was in before, to return to.
    before: Vec<PathBuf>,
    /// The pod's directories the shim made (parents before children), to remove when empty.
    made: Vec<PathBuf>,
}

/// The cgroup hierarchies this process sees (from `mountinfo`), but systemd's own (`name=systemd`),
/// which is systemd's to manage.
fn hierarchies(mountinfo: &str) -> Vec<Hierarchy> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let fields: Vec<&str> = left.split(' ').collect();
            let rfields: Vec<&str> = right.split(' ').collect();
            let fstype = *rfields.first()?;
            let opts = rfields.get(2).copied().unwrap_or("");
            let wanted = match fstype {
                "cgroup2" => true,
                "cgroup" => !opts.split(',').any(|o| o.starts_with("name=")),
                _ => false,
            };
            let mut controllers: Vec<String> = if fstype == "cgroup" {
                opts.split(',')
                    .filter(|o| {
                        !o.contains('=')
                            && !matches!(*o, "rw" | "ro" | "xattr" | "clone_children" | "noprefix")
                    })
                    .map(str::to_string)
                    .collect()
            } else {
                Vec::new()
            };
            controllers.sort_unstable();
            let (mount, root) = (fields.get(4)?, fields.get(3)?);
            wanted.then(|| Hierarchy {
                mount: PathBuf::from(unescape(mount)),
                root: unescape(root),
                controllers,
            })
        })
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && let Some(v) = s
                .get(i + 1..i + 4)
                .and_then(|o| u8::from_str_radix(o, 8).ok())
        {
            out.push(v as char);
            i += 4;
            continue;
        }
        out.push(b[i] as char);
        i += 1;
    }
    out
}

/// The pod's cgroup path from its sandbox's `linux.cgroupsPath`: the parent of a cgroupfs path
/// (`/kubepods/besteffort/podUID/SANDBOX`), or the parent slice of a systemd one
/// (`kubepods-besteffort-podUID.slice:cri-containerd:SANDBOX`), expanded as systemd lays slices
/// out.
pub fn pod_path(cgroups_path: &str) -> Option<String> {
    if let Some((slice, _)) = cgroups_path.split_once(':') {
        let name = slice.strip_suffix(".slice")?;
        if name.is_empty() || name == "-" {
            return None;
        }
        let mut path = String::new();
        let mut prefix = String::new();
        for part in name.split('-') {
            if part.is_empty() {
                return None;
            }
            if !prefix.is_empty() {
                prefix.push('-');
            }
            prefix.push_str(part);
            path.push('/');
            path.push_str(&prefix);
            path.push_str(".slice");
        }
        return Some(path);
    }
    let p = Path::new(cgroups_path);
    if !p.is_absolute() || p.components().any(|c| c.as_os_str() == "..") {
        return None;
    }
    let parent = p.parent()?.to_str()?;
    (parent != "/").then(|| parent.to_string())
}

/// The pod cgroup a spec's container calls for: only a CRI pod sandbox's.
pub fn pod_of(spec: &Spec) -> Option<String> {
    if !super::sandbox::is_sandbox(spec) {
        return None;
    }
    let path = spec.linux().as_ref()?.cgroups_path().as_ref()?;
    pod_path(path.to_str()?)
}

/// This process's cgroup directory in each hierarchy, from `/proc/self/cgroup` (v1 lines are
/// `N:controllers:/path`, v2's `0::/path`).
fn current(hier: &[Hierarchy], proc_cgroup: &str) -> Vec<Option<PathBuf>> {
    hier.iter()
        .map(|h| {
            proc_cgroup.lines().find_map(|l| {
                let mut it = l.splitn(3, ':');
                let (_, ctrl, path) = (it.next()?, it.next()?, it.next()?);
                let mut named: Vec<&str> = ctrl.split(',').filter(|c| !c.is_empty()).collect();
                named.sort_unstable();
                (named == h.controllers).then(|| h.dir(path)).flatten()
            })
        })
        .collect()
}

/// Moves this process into `POD/wasmbox` in every hierarchy. The pod's cgroup is kubelet's to
/// make, with its limits; where nobody made it (a pod run without kubelet), it is made here, as
/// runc makes its pause container's parents, so that containerd finds the pod's cgroup (its pod
/// stats read it) and the pod's work is charged to it. A hierarchy where that fails (no
/// permission) is left as it was, with a warning.
pub fn join(pod: &str) -> PodCgroup {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let proc_cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let hier = hierarchies(&mountinfo);
    let now = current(&hier, &proc_cgroup);
    let mut joined = PodCgroup {
        joined: Vec::new(),
        before: Vec::new(),
        made: Vec::new(),
    };
    let pid = std::process::id().to_string();
    for (h, before) in hier.iter().zip(now) {
        let (Some(pod_dir), Some(dir)) = (h.dir(pod), h.dir(&format!("{pod}/{NAME}"))) else {
            continue;
        };
        match make_missing(&h.mount, &pod_dir) {
            Ok(made) => joined.made.extend(made),
            Err(e) => {
                tracing::warn!(cgroup = %pod_dir.display(), error = %e, "could not make the pod's cgroup; its guests are not charged to it there");
                continue;
            }
        }
        let moved = std::fs::create_dir(&dir)
            .or_else(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    Ok(())
                } else {
                    Err(e)
                }
            })
            .and_then(|()| {
                if h.controllers.iter().any(|c| c == "cpuset") {
                    fill_cpuset(&h.mount, &dir)
                } else {
                    Ok(())
                }
            })
            .and_then(|()| std::fs::write(dir.join("cgroup.procs"), &pid));
        match (moved, before) {
            (Ok(()), Some(before)) => {
                joined.joined.push(dir);
                joined.before.push(before);
            }
            (Ok(()), None) => joined.joined.push(dir),
            (Err(e), _) => {
                tracing::warn!(cgroup = %dir.display(), error = %e, "could not join the pod's cgroup; its guests are not charged to it there");
                let _ = std::fs::remove_dir(&dir);
            }
        }
    }
    tracing::info!(
        pod,
        hierarchies = joined.joined.len(),
        "joined the pod's cgroup"
    );
    joined
}

/// Makes `dir` and whichever of its parents below `mount` are missing; returns the directories
/// it made, parents first.
fn make_missing(mount: &Path, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut missing = Vec::new();
    let mut d = dir;
    while d != mount && d.starts_with(mount) && !d.is_dir() {
        missing.push(d.to_path_buf());
        d = d.parent().unwrap_or(mount);
    }
    missing.reverse();
    let mut made = Vec::new();
    for m in missing {
        match std::fs::create_dir(&m) {
            Ok(()) => made.push(m),
            // Made at the same moment by someone else (another shim of the pod's): theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(made)
}

/// A new v1 cpuset cgroup starts with no CPUs and no memory nodes, and takes no process until
/// it has some: each directory from the hierarchy's root down to `dir` that has none gets its
/// parent's (as runc does).
fn fill_cpuset(mount: &Path, dir: &Path) -> std::io::Result<()> {
    let Ok(rel) = dir.strip_prefix(mount) else {
        return Ok(());
    };
    let mut parent = mount.to_path_buf();
    for c in rel.components() {
        let cur = parent.join(c);
        for f in ["cpuset.cpus", "cpuset.mems"] {
            if std::fs::read_to_string(cur.join(f))?.trim().is_empty() {
                std::fs::write(cur.join(f), std::fs::read_to_string(parent.join(f))?.trim())?;
            }
        }
        parent = cur;
    }
    Ok(())
}

/// The cgroupfs path of a container's `linux.cgroupsPath`: as it is when absolute; a relative
/// one below the hierarchies' roots; a systemd one (`SLICE:PREFIX:NAME`, which the systemd
/// driver would make a scope of) laid out as systemd lays it out, `SLICE-PATH/PREFIX-NAME.scope`.
/// `None` for a path with `..`.
pub fn container_path(cgroups_path: &str) -> Option<String> {
    let parts: Vec<&str> = cgroups_path.split(':').collect();
    if let [slice, prefix, name] = parts[..] {
        let base = if slice.is_empty() {
            String::new()
        } else {
            pod_path(&format!("{slice}:x"))?
        };
        let scope = if prefix.is_empty() {
            format!("{name}.scope")
        } else {
            format!("{prefix}-{name}.scope")
        };
        return (!name.is_empty() && !name.contains('/')).then(|| format!("{base}/{scope}"));
    }
    let p = Path::new(cgroups_path);
    if p.components().any(|c| c.as_os_str() == "..") {
        return None;
    }
    Some(format!("/{}", cgroups_path.trim_start_matches('/')))
}

/// Moves this process into the cgroup `path` (from [`container_path`]) in every hierarchy,
/// making it where missing, with `memory` as its memory limit where the memory controller is
/// (cgroup v1's `memory.limit_in_bytes`, v2's `memory.max`). Returns the directories joined. A
/// hierarchy that refuses is an error naming it.
pub fn enter_container(path: &str, memory: Option<u64>) -> std::io::Result<Vec<PathBuf>> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    let pid = std::process::id().to_string();
    let mut joined = Vec::new();
    for h in hierarchies(&mountinfo) {
        let Some(dir) = h.dir(path) else { continue };
        let named = |e: std::io::Error| {
            std::io::Error::new(e.kind(), format!("cgroup {}: {e}", dir.display()))
        };
        std::fs::create_dir_all(&dir).map_err(named)?;
        if h.controllers.iter().any(|c| c == "cpuset") {
            fill_cpuset(&h.mount, &dir).map_err(named)?;
        }
        if let Some(limit) = memory {
            let v1 = h.controllers.iter().any(|c| c == "memory");
            let file = if v1 {
                "memory.limit_in_bytes"
            } else {
                "memory.max"
            };
            // A v2 hierarchy without the memory controller has no such file: nothing to set.
            if v1 || dir.join(file).exists() {
                std::fs::write(dir.join(file), limit.to_string()).map_err(named)?;
            }
        }
        std::fs::write(dir.join("cgroup.procs"), &pid).map_err(named)?;
        joined.push(dir);
    }
    Ok(joined)
}

/// What the cgroups in `dirs` account: memory in use and its limit, CPU time (ns), and
/// processes, from the first hierarchy that has each.
pub fn usage(dirs: &[PathBuf]) -> super::Stats {
    let read = |f: &str| {
        dirs.iter()
            .find_map(|d| std::fs::read_to_string(d.join(f)).ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let limit = read("memory.limit_in_bytes")
        .or_else(|| read("memory.max"))
        .filter(|l| *l < 1 << 62);
    let cpu_system_ns = dirs
        .iter()
        .find_map(|d| std::fs::read_to_string(d.join("cpuacct.stat")).ok())
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("system "))
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .map(|ticks| ticks * 10_000_000)
        .unwrap_or(0);
    let processes = dirs
        .iter()
        .find_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
        .map(|s| s.lines().count() as u64)
        .unwrap_or(0);
    super::Stats {
        memory: read("memory.usage_in_bytes")
            .or_else(|| read("memory.current"))
            .unwrap_or(0),
        memory_limit: limit,
        cpu_ns: read("cpuacct.usage").unwrap_or(0),
        cpu_system_ns,
        processes,
    }
}

/// How many processes the kernel's OOM killer has killed in the cgroups `dirs` (cgroup v1's
/// `memory.oom_control`, v2's `memory.events`; the first hierarchy that counts them).
pub fn oom_kills(dirs: &[PathBuf]) -> u64 {
    dirs.iter()
        .find_map(|d| {
            ["memory.oom_control", "memory.events"]
                .iter()
                .find_map(|f| std::fs::read_to_string(d.join(f)).ok())
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("oom_kill "))
                        .and_then(|v| v.trim().parse().ok())
                })
        })
        .unwrap_or(0)
}

/// Sets the memory limit of the cgroups in `dirs` (`runc update`).
pub fn set_memory(dirs: &[PathBuf], limit: u64) -> std::io::Result<()> {
    for d in dirs {
        for f in ["memory.limit_in_bytes", "memory.max"] {
            if d.join(f).exists() {
                std::fs::write(d.join(f), limit.to_string()).map_err(|e| {
                    std::io::Error::new(e.kind(), format!("{}: {e}", d.join(f).display()))
                })?;
            }
        }
    }
    Ok(())
}

impl PodCgroup {
    /// Moves this process back where it was and removes the cgroups it made.
    pub fn leave(self) {
        let pid = std::process::id().to_string();
        for before in &self.before {
            if let Err(e) = std::fs::write(before.join("cgroup.procs"), &pid) {
                tracing::warn!(cgroup = %before.display(), error = %e, "could not leave the pod's cgroup");
            }
        }
        for dir in &self.joined {
            // Fails (and stays, for kubelet to remove with the pod's) if something is still in it.
            let _ = std::fs::remove_dir(dir);
        }
        // What was made for the pod goes too, children first, each only once it is empty.
        for dir in self.made.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_kills_are_read_from_either_version() {
        let t = tempfile::tempdir().unwrap();
        let (v1, v2, none) = (t.path().join("v1"), t.path().join("v2"), t.path().join("n"));
        for d in [&v1, &v2, &none] {
            std::fs::create_dir(d).unwrap();
        }
        std::fs::write(
            v1.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
        )
        .unwrap();
        std::fs::write(
            v2.join("memory.events"),
            "low 0\nhigh 0\nmax 4\noom 2\noom_kill 2\n",
        )
        .unwrap();
        assert_eq!(oom_kills(std::slice::from_ref(&v1)), 3);
        assert_eq!(oom_kills(&[none.clone(), v2]), 2);
        assert_eq!(oom_kills(&[none]), 0);
    }

    #[test]
    fn only_the_missing_part_of_a_pods_path_is_made_and_reported() {
        let root = tempfile::tempdir().unwrap();
        let mount = root.path().join("memory");
        std::fs::create_dir_all(mount.join("kubepods")).unwrap();
        let pod = mount.join("kubepods/burstable/pod1");
        let made = make_missing(&mount, &pod).unwrap();
        assert_eq!(made, [mount.join("kubepods/burstable"), pod.clone()]);
        assert!(pod.is_dir());
        assert!(
            make_missing(&mount, &pod).unwrap().is_empty(),
            "nothing made twice"
        );
        // Never above the hierarchy's mount.
        assert!(
            make_missing(&mount, &root.path().join("elsewhere/x"))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_containers_cgroups_path_becomes_a_cgroupfs_path() {
        assert_eq!(
            container_path("/machine/c1").as_deref(),
            Some("/machine/c1")
        );
        assert_eq!(container_path("c1").as_deref(), Some("/c1"));
        assert_eq!(
            container_path("machine.slice:libpod:abc").as_deref(),
            Some("/machine.slice/libpod-abc.scope")
        );
        assert_eq!(
            container_path("system.slice:docker:abc").as_deref(),
            Some("/system.slice/docker-abc.scope")
        );
        assert_eq!(container_path("/a/../b"), None);
    }

    const MOUNTINFO: &str = "\
25 30 0:22 / /sys rw,nosuid - sysfs sysfs rw
33 25 0:28 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
34 33 0:29 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
35 33 0:30 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
38 33 0:33 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,cpu,cpuacct
40 33 0:35 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,memory
";

    const PROC_CGROUP: &str = "\
5:memory:/system.slice/containerd.service
3:cpu,cpuacct:/system.slice/containerd.service
1:name=systemd:/system.slice/containerd.service
0::/system.slice/containerd.service
";

    #[test]
    fn every_hierarchy_but_systemds_is_found_with_where_this_process_is() {
        let h = hierarchies(MOUNTINFO);
        let mounts: Vec<_> = h.iter().map(|h| h.mount.display().to_string()).collect();
        assert_eq!(
            mounts,
            [
                "/sys/fs/cgroup/unified",
                "/sys/fs/cgroup/cpu,cpuacct",
                "/sys/fs/cgroup/memory"
            ]
        );
        let now = current(&h, PROC_CGROUP);
        assert_eq!(
            now,
            [
                Some("/sys/fs/cgroup/unified/system.slice/containerd.service".into()),
                Some("/sys/fs/cgroup/cpu,cpuacct/system.slice/containerd.service".into()),
                Some("/sys/fs/cgroup/memory/system.slice/containerd.service".into()),
            ]
        );
    }

    #[test]
    fn the_pod_is_the_parent_of_the_sandboxs_cgroup() {
        assert_eq!(
            pod_path("/kubepods/besteffort/pod1234/abcd").as_deref(),
            Some("/kubepods/besteffort/pod1234")
        );
        assert_eq!(
            pod_path("kubepods-besteffort-pod1234.slice:cri-containerd:abcd").as_deref(),
            Some("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1234.slice")
        );
        for bad in [
            "/abcd",
            "relative/x",
            "/a/../b/c",
            "nope:cri:x",
            "-.slice:x:y",
            "",
        ] {
            assert_eq!(pod_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_mount_of_part_of_a_hierarchy_shows_only_that_part() {
        let h = Hierarchy {
            mount: "/sys/fs/cgroup/memory".into(),
            root: "/kubepods".into(),
            controllers: vec!["memory".into()],
        };
        assert_eq!(
            h.dir("/kubepods/pod1/wasmbox"),
            Some(PathBuf::from("/sys/fs/cgroup/memory/pod1/wasmbox"))
        );
        assert_eq!(h.dir("/system.slice"), None);
        assert_eq!(unescape("/a\\040b"), "/a b");
    }
}
