//! The devices every container has: `/dev/null`, `/dev/zero`, `/dev/full`, `/dev/random` and
//! `/dev/urandom` (the OCI runtime spec's default devices, less the terminal ones), answered by
//! wasmbox itself. No host device node is ever opened.
//!
//! A guest gets `/dev` as a read-only preopen of a private directory ([`DevDir`]) holding one
//! empty regular file per device. Opening one of them opens that placeholder read-only, whatever
//! access was asked; the WASI layers (`p1::dev` for preview 1, `p2dev` for WASI 0.2) then answer
//! reads and writes on it as the device would:
//!
//! | device | read | write |
//! | --- | --- | --- |
//! | `null` | end of file | accepted, discarded |
//! | `zero` | zeros | accepted, discarded |
//! | `full` | zeros | `ENOSPC` |
//! | `random`, `urandom` | random bytes (the kernel's `getrandom`, WASI's random source) | accepted, discarded |
//!
//! Each read makes at most [`MAX_READ`] bytes (a short read, as the kernel's own devices give
//! for large reads), so what a guest makes the host produce per call is bounded.
//!
//! The placeholders are known by identity: a process-wide registry holds the device and inode
//! numbers of every live [`DevDir`]'s files, so a descriptor (or a name looked up beneath a
//! directory) is a device exactly when its file is one of them, however the guest reached it.
//! A leaf.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// One of the devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Device {
    Null,
    Zero,
    Full,
    Random,
    Urandom,
}

/// Every device, with its name under `/dev`.
const ALL: [(Device, &str); 5] = [
    (Device::Null, "null"),
    (Device::Zero, "zero"),
    (Device::Full, "full"),
    (Device::Random, "random"),
    (Device::Urandom, "urandom"),
];

/// Whether `name` is a device's name under `/dev`.
pub(crate) fn named(name: &[u8]) -> bool {
    ALL.iter().any(|(_, n)| n.as_bytes() == name)
}

/// Most bytes one read makes.
pub(crate) const MAX_READ: usize = 64 * 1024;

/// Where the devices appear to a guest.
pub(crate) const GUEST_DIR: &str = "/dev";

/// Why a write to a device fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteError {
    /// `/dev/full`: no space left on the device.
    NoSpace,
}

impl Device {
    /// Fills the start of `buf` (at most [`MAX_READ`] bytes) as a read of the device does, and
    /// says how many bytes it filled: 0 is end of file.
    pub(crate) fn read(self, buf: &mut [u8]) -> usize {
        let n = buf.len().min(MAX_READ);
        let buf = &mut buf[..n];
        match self {
            Device::Null => return 0,
            Device::Zero | Device::Full => buf.fill(0),
            Device::Random | Device::Urandom => fill_random(buf),
        }
        n
    }

    /// A read of up to `len` bytes, as owned bytes.
    pub(crate) fn read_vec(self, len: u64) -> Vec<u8> {
        let mut v = vec![0; usize::try_from(len).unwrap_or(MAX_READ).min(MAX_READ)];
        let n = self.read(&mut v);
        v.truncate(n);
        v
    }

    /// A write of `len` bytes: how many were taken.
    pub(crate) fn write(self, len: usize) -> Result<usize, WriteError> {
        match self {
            Device::Full if len > 0 => Err(WriteError::NoSpace),
            _ => Ok(len),
        }
    }
}

/// Random bytes from the kernel, as WASI's `random_get` has them.
fn fill_random(buf: &mut [u8]) {
    let mut done = 0;
    while done < buf.len() {
        match rustix::rand::getrandom(&mut buf[done..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => done += n,
            Err(rustix::io::Errno::INTR) => {}
            // getrandom(2) fails only on bad arguments; never hand out predictable bytes.
            Err(e) => panic!("getrandom: {e}"),
        }
    }
}

/// The identity of a file: its device and inode numbers.
type Id = (u64, u64);

fn id_of(fd: impl AsFd) -> Option<Id> {
    rustix::fs::fstat(fd).ok().map(|st| (st.st_dev, st.st_ino))
}

/// The placeholders of every live [`DevDir`] of this process.
static REGISTRY: Mutex<Vec<(Id, Device)>> = Mutex::new(Vec::new());

/// The device whose placeholder `fd` is, if it is one.
pub(crate) fn of_file(fd: impl AsFd) -> Option<Device> {
    let id = id_of(fd)?;
    let reg = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    reg.iter().find(|(i, _)| *i == id).map(|(_, d)| *d)
}

/// The device `name` beneath `dir` is, resolved as the guest's path is (following a final
/// symbolic link when `follow`), if it is a device's placeholder.
pub(crate) fn beneath(dir: impl AsFd, name: &[u8], follow: bool) -> Option<Device> {
    crate::special::lookup(dir, name, follow)
        .as_ref()
        .and_then(of_file)
}

/// A private directory holding one empty, read-only placeholder per device; removed (and
/// forgotten by the registry) when dropped.
#[derive(Debug)]
pub(crate) struct DevDir {
    dir: Option<tempfile::TempDir>,
    ids: Vec<Id>,
    /// Whether a read-only mount of it covers it (see [`DevDir::sealed`]).
    sealed: bool,
}

impl DevDir {
    /// Makes one in `scratch_dir`, named after this process as its other private directories,
    /// with an empty file at each of `mountpoints` (paths relative to `/dev`, their parent
    /// directories made) for single-file binds below `/dev` to cover.
    pub(crate) fn create(scratch_dir: &Path, mountpoints: &[&str]) -> std::io::Result<DevDir> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new()
            .prefix(&crate::scratch::scratch_prefix("wasmbox-dev-"))
            .tempdir_in(scratch_dir)?;
        for point in mountpoints {
            let path = dir.path().join(point);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::File::create(path)?;
        }
        let mut entries = Vec::new();
        for (dev, name) in ALL {
            if mountpoints.contains(&name) {
                // A file bound over the device's name is what the guest asked for.
                continue;
            }
            let f = std::fs::File::create(dir.path().join(name))?;
            f.set_permissions(std::fs::Permissions::from_mode(0o444))?;
            entries.push((id_of(&f).ok_or_else(std::io::Error::last_os_error)?, dev));
        }
        let ids = entries.iter().map(|(i, _)| *i).collect();
        REGISTRY
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(entries);
        Ok(DevDir {
            dir: Some(dir),
            ids,
            sealed: false,
        })
    }

    /// The directory, to preopen as [`GUEST_DIR`].
    pub(crate) fn path(&self) -> PathBuf {
        self.dir
            .as_ref()
            .expect("lives until drop")
            .path()
            .to_path_buf()
    }

    /// Says that a read-only mount of the directory now covers it, to be unmounted before the
    /// directory is removed.
    pub(crate) fn sealed(mut self) -> Self {
        self.sealed = true;
        self
    }
}

impl Drop for DevDir {
    fn drop(&mut self) {
        REGISTRY
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(i, _)| !self.ids.contains(i));
        let Some(dir) = self.dir.take() else { return };
        if self.sealed
            && let Err(e) = rustix::mount::unmount(dir.path(), rustix::mount::UnmountFlags::DETACH)
        {
            // Never delete through a mount that is still there: leave the directory.
            tracing::warn!(path = %dir.path().display(), error = %e, "unmounting /dev's directory failed");
            let _ = dir.keep();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_read_and_write_as_the_kernels_do() {
        let mut buf = [7u8; 16];
        assert_eq!(Device::Null.read(&mut buf), 0);
        assert_eq!(Device::Zero.read(&mut buf), 16);
        assert_eq!(buf, [0; 16]);
        buf = [7; 16];
        assert_eq!(Device::Full.read(&mut buf), 16);
        assert_eq!(buf, [0; 16]);
        let mut a = [0u8; 64];
        let mut b = [0u8; 64];
        assert_eq!(Device::Urandom.read(&mut a), 64);
        assert_eq!(Device::Random.read(&mut b), 64);
        assert_ne!(a, b, "two random reads differ");
        let mut big = vec![0u8; MAX_READ + 10];
        assert_eq!(
            Device::Zero.read(&mut big),
            MAX_READ,
            "a short read past the bound"
        );
        assert_eq!(Device::Urandom.read_vec(u64::MAX).len(), MAX_READ);
        assert_eq!(Device::Null.write(10), Ok(10));
        assert_eq!(Device::Urandom.write(10), Ok(10));
        assert_eq!(Device::Full.write(10), Err(WriteError::NoSpace));
        assert_eq!(Device::Full.write(0), Ok(0));
    }

    #[test]
    fn placeholders_are_known_by_identity_while_their_directory_lives() {
        let scratch = tempfile::tempdir().unwrap();
        let d = DevDir::create(scratch.path(), &["termination-log", "a/b", "zero"]).unwrap();
        let f = std::fs::File::open(d.path().join("full")).unwrap();
        assert_eq!(of_file(&f), Some(Device::Full));
        // Another file of the same name is no device.
        std::fs::write(scratch.path().join("null"), "").unwrap();
        let other = std::fs::File::open(scratch.path().join("null")).unwrap();
        assert_eq!(of_file(&other), None);
        // Mountpoints are plain files, and one named as a device is no device.
        assert!(d.path().join("a/b").is_file());
        let point = std::fs::File::open(d.path().join("termination-log")).unwrap();
        assert_eq!(of_file(&point), None);
        let zero = std::fs::File::open(d.path().join("zero")).unwrap();
        assert_eq!(of_file(&zero), None);
        let u = std::fs::File::open(d.path().join("urandom")).unwrap();
        assert_eq!(of_file(&u), Some(Device::Urandom));
        let plain = tempfile::NamedTempFile::new().unwrap();
        assert_eq!(of_file(plain.as_file()), None);
        let path = d.path();
        drop(d);
        assert!(!path.exists(), "removed when dropped");
        assert_eq!(of_file(&f), None, "forgotten when dropped");
    }
}
