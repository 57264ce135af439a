//! A container's state under the runtime's root: `ROOT/ID/state.json`, written atomically. Its
//! status moves by the lifecycle's rules (`lifecycle::status`); a container whose process is gone
//! reads as stopped, whatever was written last (a process that crashed or was killed leaves a
//! state that `delete` cleans).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::lifecycle::Status;

/// What the runtime keeps of one container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    /// The container's id.
    pub id: String,
    /// Its process (0 once it is known to be gone).
    pub pid: i32,
    /// When its process started, in clock ticks since boot (`/proc/PID/stat`): a pid reused by
    /// another process is not taken for it.
    pub start_time: u64,
    /// The bundle directory.
    pub bundle: PathBuf,
    /// The rootfs, as the spec names it.
    pub rootfs: PathBuf,
    /// When it was created (RFC 3339).
    pub created: String,
    /// Its status, as last written.
    pub status: Status,
    /// The spec's annotations.
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    /// The cgroup directories its process joined.
    #[serde(default)]
    pub cgroups: Vec<PathBuf>,
    /// Processes added by `exec --detach`: pid and start time.
    #[serde(default)]
    pub execs: Vec<(i32, u64)>,
}

/// The directory of container `id` under `root`; an id that could name another is refused.
pub fn dir(root: &Path, id: &str) -> Result<PathBuf> {
    // A leading dot is the runtime's own (`.runc`, `.scratch`).
    let ok = !id.is_empty()
        && id.len() <= 1024
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+'));
    if !ok {
        bail!("invalid container id {id:?}: letters, digits and - _ . + only, not first a dot");
    }
    Ok(root.join(id))
}

impl State {
    /// Reads container `id`'s state.
    pub fn load(root: &Path, id: &str) -> Result<State> {
        let path = dir(root, id)?.join("state.json");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!("container {id} does not exist")
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        serde_json::from_str(&text).with_context(|| format!("{}: malformed", path.display()))
    }

    /// Whether container `id` has state here.
    pub fn exists(root: &Path, id: &str) -> bool {
        dir(root, id).is_ok_and(|d| d.join("state.json").exists())
    }

    /// Writes the state: to a temporary file, synced, then renamed over the old one.
    pub fn save(&self, root: &Path) -> Result<()> {
        let dir = dir(root, &self.id)?;
        let tmp = dir.join(".state.json.tmp");
        let text = serde_json::to_vec_pretty(self)?;
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)
                .with_context(|| format!("writing {}", tmp.display()))?;
            f.write_all(&text)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, dir.join("state.json"))
            .with_context(|| format!("writing {}", dir.join("state.json").display()))
    }

    /// Whether its process is still the one it started.
    pub fn alive(&self) -> bool {
        self.pid > 0 && start_time(self.pid) == Some(self.start_time)
    }

    /// Its status now: as written while its process lives, else stopped.
    pub fn status(&self) -> Status {
        if self.status != Status::Stopped && !self.alive() {
            Status::Stopped
        } else {
            self.status
        }
    }

    /// The OCI state document `state` prints.
    pub fn oci(&self) -> serde_json::Value {
        let status = self.status();
        serde_json::json!({
            "ociVersion": "1.0.2",
            "id": self.id,
            "pid": if status == Status::Stopped { 0 } else { self.pid },
            "status": status,
            "bundle": self.bundle,
            "rootfs": self.rootfs,
            "created": self.created,
            "owner": "",
            "annotations": self.annotations,
        })
    }

    /// The live processes: the container's and those added to it.
    pub fn pids(&self) -> Vec<i32> {
        let mut v = Vec::new();
        if self.alive() {
            v.push(self.pid);
        }
        v.extend(
            self.execs
                .iter()
                .filter(|(p, t)| start_time(*p) == Some(*t))
                .map(|(p, _)| *p),
        );
        v
    }
}

/// The exec FIFO in a container's state directory `dir`: its process waits on it until `start`.
pub fn fifo(dir: &Path) -> PathBuf {
    dir.join("exec.fifo")
}

/// The mark a container's process leaves in its state directory `dir` when its guest ended by
/// passing its memory limit, which `events` reports as an `oom` event.
pub fn oom_mark(dir: &Path) -> PathBuf {
    dir.join("oom")
}

/// When process `pid` started (field 22 of `/proc/PID/stat`), if it exists and is no zombie.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state is field 3, starttime field 22.
    if f.first() == Some(&"Z") || f.first() == Some(&"X") {
        return None;
    }
    f.get(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_could_name_another_path_are_refused() {
        let root = Path::new("/r");
        assert_eq!(dir(root, "abc-1_2.3").unwrap(), Path::new("/r/abc-1_2.3"));
        for bad in ["", ".", "..", "a/b", "../x", "a b", ".runc"] {
            assert!(dir(root, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_state_whose_process_is_gone_reads_as_stopped_and_round_trips() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("c1")).unwrap();
        let me = std::process::id() as i32;
        let mut s = State {
            id: "c1".into(),
            pid: me,
            start_time: start_time(me).unwrap(),
            bundle: "/b".into(),
            rootfs: "/b/rootfs".into(),
            created: "2026-01-01T00:00:00Z".into(),
            status: Status::Running,
            annotations: HashMap::new(),
            cgroups: Vec::new(),
            execs: Vec::new(),
        };
        s.save(root.path()).unwrap();
        let back = State::load(root.path(), "c1").unwrap();
        assert_eq!(back.status(), Status::Running);
        assert_eq!(back.oci()["status"], "running");
        s.start_time += 1;
        assert_eq!(
            s.status(),
            Status::Stopped,
            "a reused pid is not the container's"
        );
        assert_eq!(s.oci()["pid"], 0);
        assert!(
            State::load(root.path(), "nope")
                .unwrap_err()
                .to_string()
                .contains("does not exist")
        );
    }
}
