//! The cache's size cap. Once the entries together pass the cap, the least recently used are
//! removed until they fit again, never one in use.
//!
//! - **In use**: a process that loads an entry holds a shared `flock` on it for as long as it may
//!   have the code mapped ([`hold`]). Removing an entry takes the exclusive lock without waiting,
//!   so one in use is passed over (its disk space would not come back while it is mapped anyway).
//! - **Last use**: the entry's access time, set when it is written and when it is loaded
//!   ([`touch`]), whatever the mount's atime options say.
//!
//! Entries are the `*.cwasm` files of the directory; files of other engines (another wasmbox)
//! count too, as they take the same disk.

use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rustix::fs::{FlockOperation, flock};

/// The cap when none is given: 10 GiB.
pub const DEFAULT_MAX: u64 = 10 << 30;
/// The environment variable that sets the cap (a size: `500m`, `20g`, bytes).
pub const MAX_ENV: &str = "WASMBOX_CACHE_MAX";
/// Temporary files of a writer that died are removed once this old.
const STALE_TMP: Duration = Duration::from_secs(3600);

/// One entry of the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Where it is.
    pub path: PathBuf,
    /// The sha256 of the wasm it was compiled from, in hex.
    pub digest: String,
    /// `module` or `component`.
    pub kind: String,
    /// Bytes on disk.
    pub size: u64,
    /// When it was last loaded (or written).
    pub last_use: SystemTime,
}

impl Entry {
    /// Whether a process holds it (has its code mapped) now.
    pub fn in_use(&self) -> bool {
        open(&self.path).is_ok_and(|f| matches!(take(&f), Taken::Busy))
    }
}

/// What trying the exclusive lock on an entry found.
enum Taken {
    /// Ours: no process holds the entry.
    Ours,
    /// A process holds it.
    Busy,
    /// The lock could not be tried (a filesystem without `flock`, say): not known to be free.
    Unknown(std::io::Error),
}

/// Tries the exclusive lock on `f` without waiting.
fn take(f: &File) -> Taken {
    loop {
        match flock(f, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Taken::Ours,
            Err(rustix::io::Errno::WOULDBLOCK) => return Taken::Busy,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Taken::Unknown(e.into()),
        }
    }
}

fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// A loaded entry's mark: a shared lock on `file`'s entry, held as long as what it returns
/// lives (a descriptor of its own, so the lock outlasts `file`).
pub fn hold(file: &File) -> std::io::Result<File> {
    let held = file.try_clone()?;
    flock(&held, FlockOperation::LockShared)?;
    Ok(held)
}

/// Records that the entry open as `file` was used now.
pub fn touch(file: &File) {
    let now = fs::FileTimes::new().set_accessed(SystemTime::now());
    if let Err(e) = file.set_times(now) {
        tracing::debug!(error = %e, "could not record a cache entry's use");
    }
}

/// The entries in `dir`, least recently used first.
pub fn entries(dir: &Path) -> std::io::Result<Vec<Entry>> {
    scan(dir, false)
}

/// [`entries`]; with `sweep`, temporary files left by a writer that died more than an hour ago,
/// and compile locks of entries that are gone, are removed on the way.
fn scan(dir: &Path, sweep: bool) -> std::io::Result<Vec<Entry>> {
    let mut found = Vec::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        let name = name.to_string_lossy();
        let Ok(meta) = e.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        if let Some(entry) = name.strip_prefix('.').and_then(|n| n.strip_suffix(".lock")) {
            // A compile lock whose entry is gone, and which no process holds.
            if sweep
                && !dir.join(entry).exists()
                && File::open(e.path())
                    .is_ok_and(|f| flock(&f, FlockOperation::NonBlockingLockExclusive).is_ok())
            {
                let _ = fs::remove_file(e.path());
            }
            continue;
        }
        if name.starts_with(".tmp-") {
            let old = meta
                .modified()
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|age| age > STALE_TMP);
            if old && sweep {
                let _ = fs::remove_file(e.path());
            }
            continue;
        }
        let Some(stem) = name.strip_suffix(".cwasm") else {
            continue;
        };
        let (rest, kind) = stem.rsplit_once('.').unwrap_or((stem, ""));
        let digest = rest.split('-').next().unwrap_or(rest);
        found.push(Entry {
            path: e.path(),
            digest: digest.to_string(),
            kind: kind.to_string(),
            size: meta.len(),
            last_use: meta.accessed().unwrap_or(SystemTime::UNIX_EPOCH),
        });
    }
    found.sort_by(|a, b| (a.last_use, &a.path).cmp(&(b.last_use, &b.path)));
    Ok(found)
}

/// What a trim did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Trimmed {
    /// Entries removed.
    pub removed: usize,
    /// Their bytes.
    pub freed: u64,
    /// Entries left.
    pub kept: usize,
    /// Of those, the ones passed over because they were in use.
    pub busy: usize,
    /// The bytes of the entries left.
    pub total: u64,
}

/// Removes the least recently used entries of `dir` until the rest hold at most `max` bytes,
/// passing over those in use and `keep` (one just written). An entry that cannot be opened, locked
/// or removed is kept and logged, and the trim goes on. Also removes temporary files of writers
/// that died.
pub fn trim(dir: &Path, max: u64, keep: Option<&Path>) -> std::io::Result<Trimmed> {
    let all = scan(dir, true)?;
    let mut t = Trimmed {
        total: all.iter().map(|e| e.size).sum(),
        kept: all.len(),
        ..Default::default()
    };
    for e in all {
        if t.total <= max {
            break;
        }
        if Some(e.path.as_path()) == keep {
            continue;
        }
        match remove(&e.path) {
            Ok(Removed::Yes) => {
                t.removed += 1;
                t.freed += e.size;
            }
            Ok(Removed::Gone) => {}
            Ok(Removed::Kept) => {
                t.busy += 1;
                continue;
            }
            Err(err) => {
                tracing::warn!(path = %e.path.display(), error = %err, "could not remove a compiled-code cache entry");
                continue;
            }
        }
        t.total -= e.size;
        t.kept -= 1;
    }
    Ok(t)
}

/// What [`remove`] did.
enum Removed {
    Yes,
    /// Another process removed it first.
    Gone,
    /// A process holds it, or a newer entry took its name meanwhile.
    Kept,
}

/// Removes the entry at `path` under its exclusive lock, unless a process holds it. The file
/// unlinked is the one locked: a new entry renamed onto the path meanwhile stays.
fn remove(path: &Path) -> std::io::Result<Removed> {
    let f = match open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Removed::Gone),
        Err(e) => return Err(e),
    };
    match take(&f) {
        Taken::Ours => {}
        Taken::Busy => return Ok(Removed::Kept),
        Taken::Unknown(e) => return Err(e),
    }
    let locked = f.metadata()?;
    match fs::symlink_metadata(path) {
        Ok(now) if (now.dev(), now.ino()) == (locked.dev(), locked.ino()) => {}
        Ok(_) => return Ok(Removed::Kept),
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Removed::Gone),
        Err(e) => return Err(e),
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(Removed::Yes),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(Removed::Gone),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An entry of `size` bytes last used `ago` seconds before now.
    fn entry(dir: &Path, digest: &str, size: usize, ago: u64) -> PathBuf {
        let path = dir.join(format!("{digest}-0123456789abcdef.module.cwasm"));
        fs::write(&path, vec![0u8; size]).unwrap();
        let then = SystemTime::now() - Duration::from_secs(ago);
        let f = File::open(&path).unwrap();
        f.set_times(fs::FileTimes::new().set_accessed(then))
            .unwrap();
        path
    }

    #[test]
    fn a_trim_removes_the_compile_locks_of_gone_entries_that_no_process_holds() {
        let dir = tempfile::tempdir().unwrap();
        let kept = entry(dir.path(), "aa", 10, 0);
        let name = |p: &Path| p.file_name().unwrap().to_str().unwrap().to_string();
        let of_kept = super::super::lock::path_for(dir.path(), &name(&kept));
        let gone = super::super::lock::path_for(dir.path(), "bb-0123456789abcdef.module.cwasm");
        let held = super::super::lock::path_for(dir.path(), "cc-0123456789abcdef.module.cwasm");
        fs::write(&of_kept, "1").unwrap();
        fs::write(&gone, "1").unwrap();
        let holding = super::super::lock::acquire(&held, None);
        assert!(holding.held());
        trim(dir.path(), u64::MAX, None).unwrap();
        assert!(of_kept.exists() && held.exists() && !gone.exists());
        drop(holding);
        trim(dir.path(), u64::MAX, None).unwrap();
        assert!(!held.exists() && of_kept.exists());
    }

    #[test]
    fn entries_are_listed_least_recently_used_first_with_their_digests() {
        let dir = tempfile::tempdir().unwrap();
        entry(dir.path(), "aa", 10, 100);
        entry(dir.path(), "bb", 20, 300);
        fs::write(dir.path().join("notes.txt"), "x").unwrap();
        fs::write(dir.path().join(".tmp-1-cc"), "fresh").unwrap();
        let list = entries(dir.path()).unwrap();
        let names: Vec<_> = list.iter().map(|e| (e.digest.as_str(), e.size)).collect();
        assert_eq!(names, [("bb", 20), ("aa", 10)]);
        assert_eq!(list[0].kind, "module");
        assert!(
            dir.path().join(".tmp-1-cc").exists(),
            "a writer's fresh file stays"
        );
        // A dead writer's old file goes at the next trim, not at a listing.
        let stale = dir.path().join(".tmp-2-dd");
        let f = File::create(&stale).unwrap();
        f.set_times(fs::FileTimes::new().set_modified(SystemTime::now() - 2 * STALE_TMP))
            .unwrap();
        entries(dir.path()).unwrap();
        assert!(stale.exists());
        trim(dir.path(), u64::MAX, None).unwrap();
        assert!(!stale.exists() && dir.path().join(".tmp-1-cc").exists());
    }

    #[test]
    fn a_trim_removes_the_least_recently_used_and_passes_over_those_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let oldest = entry(dir.path(), "aa", 100, 500);
        let busy = entry(dir.path(), "bb", 100, 400);
        let older = entry(dir.path(), "cc", 100, 300);
        let newest = entry(dir.path(), "dd", 100, 10);
        // Used now: its last use moves to the end.
        let reused = entry(dir.path(), "ee", 100, 600);
        touch(&File::open(&reused).unwrap());
        let held = hold(&File::open(&busy).unwrap()).unwrap();
        let t = trim(dir.path(), 300, Some(&newest)).unwrap();
        assert_eq!(
            t,
            Trimmed {
                removed: 2,
                freed: 200,
                kept: 3,
                busy: 1,
                total: 300,
            }
        );
        assert!(!oldest.exists() && !older.exists());
        assert!(busy.exists() && newest.exists() && reused.exists());
        assert!(entries(dir.path()).unwrap()[0].in_use());
        drop(held);
        assert!(!entries(dir.path()).unwrap()[0].in_use());
        // Under the cap, nothing goes.
        let t = trim(dir.path(), 1000, None).unwrap();
        assert_eq!((t.removed, t.kept), (0, 3));
        // A cap of nothing empties it, the one kept aside.
        let t = trim(dir.path(), 0, Some(&newest)).unwrap();
        assert_eq!((t.removed, t.kept, t.total), (2, 1, 100));
    }
}
