//! What the shim persists per container in its bundle, so that the `delete` action can clean up
//! after a shim that was killed: whether runc owns the container, its pid, whether the rootfs was
//! mounted.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

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
            rootfs_mounted: true,
            runc_root: Some("/run/x".into()),
        };
        r.save(d.path()).unwrap();
        let back = Record::load(d.path()).unwrap().unwrap();
        assert_eq!(back.kind, Kind::Native);
        assert_eq!(back.pid, 42);
        assert!(!d.path().join(format!(".{FILE}.tmp")).exists());
        Record::remove(d.path());
        assert!(Record::load(d.path()).unwrap().is_none());
    }
}
