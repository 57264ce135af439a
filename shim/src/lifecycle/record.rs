//! What the lifecycle persists per container in its bundle: its status, and what the `delete`
//! action needs to clean up after a shim that was killed (whether runc owns the container, its
//! pid, whether the rootfs was mounted).

use std::io::Write;
use std::path::{Path, PathBuf};

use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::status::Status;

/// File name of the record inside the bundle.
pub const FILE: &str = "wasmbox-task.json";

/// Who runs the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A wasm guest inside the shim process.
    Wasm,
    /// A native process run by runc.
    Native,
    /// A pod's sandbox held by the shim itself (no process of its own).
    Sandbox,
}

/// The persisted record of one container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// Container id.
    pub id: String,
    /// Who runs it.
    pub kind: Kind,
    /// Its pid (the shim's, for wasm).
    pub pid: u32,
    /// Its status, as of its last transition.
    #[serde(default = "created")]
    pub status: Status,
    /// Whether the shim mounted the rootfs.
    pub rootfs_mounted: bool,
    /// runc's state root, for native containers.
    pub runc_root: Option<PathBuf>,
}

impl Record {
    /// Writes the record into `bundle` atomically (temp file, fsync, rename).
    pub fn save(&self, bundle: &Path) -> std::io::Result<()> {
        let tmp = bundle.join(format!(".{FILE}.tmp"));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, bundle.join(FILE))?;
        std::fs::File::open(bundle)?.sync_all()
    }

    /// Reads the record of `bundle`, if there is one.
    pub fn load(bundle: &Path) -> std::io::Result<Option<Record>> {
        match std::fs::read(bundle.join(FILE)) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(std::io::Error::other),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes the record of `bundle`.
    pub fn remove(bundle: &Path) {
        let _ = std::fs::remove_file(bundle.join(FILE));
    }
}

fn created() -> Status {
    Status::Created
}

/// A container's record and the bundle it is kept in, shared by the requests and the task that
/// records its exit. Once removed, it is never written again.
#[derive(Debug)]
pub struct RecordFile {
    bundle: PathBuf,
    record: Mutex<Option<Record>>,
}

impl RecordFile {
    /// A record not yet written.
    pub fn new(bundle: &Path, record: Record) -> Self {
        Self {
            bundle: bundle.to_path_buf(),
            record: Mutex::new(Some(record)),
        }
    }

    /// Changes the record with `f` and writes it; does nothing once removed.
    pub fn update(&self, f: impl FnOnce(&mut Record)) -> std::io::Result<()> {
        let mut r = self.record.lock().expect("record lock");
        match r.as_mut() {
            Some(rec) => {
                f(rec);
                rec.save(&self.bundle)
            }
            None => Ok(()),
        }
    }

    /// Removes the record from the bundle, for good.
    pub fn remove(&self) {
        let mut r = self.record.lock().expect("record lock");
        *r = None;
        Record::remove(&self.bundle);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_absent() {
        let d = tempfile::tempdir().unwrap();
        assert!(Record::load(d.path()).unwrap().is_none());
        let r = Record {
            id: "c1".into(),
            kind: Kind::Native,
            pid: 42,
            status: Status::Running,
            rootfs_mounted: true,
            runc_root: Some("/run/x".into()),
        };
        r.save(d.path()).unwrap();
        let back = Record::load(d.path()).unwrap().unwrap();
        assert_eq!(back.kind, Kind::Native);
        assert_eq!(back.pid, 42);
        assert_eq!(back.status, Status::Running);
        assert!(!d.path().join(format!(".{FILE}.tmp")).exists());
        Record::remove(d.path());
        assert!(Record::load(d.path()).unwrap().is_none());
    }
}

#[cfg(test)]
mod file_tests {
    use super::*;

    #[test]
    fn a_removed_record_is_never_written_again() {
        let d = tempfile::tempdir().unwrap();
        let f = RecordFile::new(
            d.path(),
            Record {
                id: "c1".into(),
                kind: Kind::Wasm,
                pid: 1,
                status: Status::Created,
                rootfs_mounted: false,
                runc_root: None,
            },
        );
        f.update(|r| r.status = Status::Running).unwrap();
        assert_eq!(
            Record::load(d.path()).unwrap().unwrap().status,
            Status::Running
        );
        f.remove();
        f.update(|r| r.status = Status::Stopped).unwrap();
        assert!(Record::load(d.path()).unwrap().is_none());
    }

    #[test]
    fn a_record_from_before_statuses_reads_as_created() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join(FILE),
            r#"{"id":"c","kind":"wasm","pid":7,"rootfs_mounted":false,"runc_root":null}"#,
        )
        .unwrap();
        let r = Record::load(d.path()).unwrap().unwrap();
        assert_eq!(r.status, Status::Created);
    }
}
