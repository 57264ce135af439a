//! One compile of a module at a time across the processes that share a cache: a node's shims
//! and its agent, or the replicas of a scale-out starting together. Before compiling a module
//! the cache lacks, a process takes the exclusive `flock` of the module's lock file
//! (`.NAME.lock` beside the entry `NAME`) and writes its pid there; one that finds it taken waits,
//! then loads what the holder wrote instead of compiling it again.
//!
//! - **Priority**: a waiter raises the holder's threads, and its children's (the compile
//!   helper), to its own CPU priority, so a pod never waits on the agent's nice-19 compile at
//!   nice 19 (priority inheritance). Only ever raised, and only what the lock file names (a pid
//!   and its pid namespace: a holder in another namespace is left alone).
//! - **Bounded**: a waiter waits until its deadline (the load deadline of a start, else
//!   [`MOST_WAIT`]), then compiles itself. A filesystem without `flock` compiles without waiting.
//! - Lock files are empty but for a pid; the cap's sweep removes those whose entry is gone.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::fs::{FlockOperation, flock};
use rustix::process::Pid;

/// How often a waiter tries the lock.
const TRY_EVERY: Duration = Duration::from_millis(20);
/// How often a waiter raises the holder's priority again (a compile starts threads as it goes).
const RAISE_EVERY: Duration = Duration::from_millis(500);
/// The longest a compile without a deadline waits for another process's.
pub const MOST_WAIT: Duration = Duration::from_secs(600);

/// The lock file of the entry named `entry` (a file name in the cache's directory).
pub fn path_for(dir: &Path, entry: &str) -> std::path::PathBuf {
    dir.join(format!(".{entry}.lock"))
}

/// A module's compile lock, held (or not) by this process until dropped.
#[derive(Debug)]
pub struct CompileLock {
    held: Option<File>,
    waited: bool,
}

impl CompileLock {
    /// Whether another process held the lock first: what it compiled may be in the cache now.
    pub fn waited(&self) -> bool {
        self.waited
    }

    /// Whether this process holds the lock.
    pub fn held(&self) -> bool {
        self.held.is_some()
    }
}

/// Takes the lock file at `path`, waiting for another holder at most until `until` (else
/// [`MOST_WAIT`]). Never fails: a lock that cannot be had is not held, and the caller compiles.
pub fn acquire(path: &Path, until: Option<Instant>) -> CompileLock {
    let file = match OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(f) => f,
        Err(e) => {
            tracing::debug!(path = %path.display(), error = %e, "no compile lock");
            return CompileLock {
                held: None,
                waited: false,
            };
        }
    };
    let until = until.unwrap_or_else(|| Instant::now() + MOST_WAIT);
    let mut waited = false;
    let mut raised: Option<Instant> = None;
    loop {
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {
                let mut f = file;
                let _ = f.set_len(0).and_then(|()| {
                    f.rewind()?;
                    f.write_all(format!("{} {}", std::process::id(), pid_namespace()).as_bytes())
                });
                return CompileLock {
                    held: Some(f),
                    waited,
                };
            }
            Err(rustix::io::Errno::WOULDBLOCK) => {}
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "compile lock not supported");
                return CompileLock { held: None, waited };
            }
        }
        if !waited {
            tracing::debug!(path = %path.display(), "another process compiles this module; waiting for it");
        }
        waited = true;
        if raised.is_none_or(|t| t.elapsed() >= RAISE_EVERY) {
            if let Some(pid) = holder(&file) {
                raise(pid);
            }
            raised = Some(Instant::now());
        }
        if Instant::now() >= until {
            tracing::warn!(path = %path.display(), "waited for another process's compile until the deadline; compiling here");
            return CompileLock { held: None, waited };
        }
        std::thread::sleep(TRY_EVERY);
    }
}

/// This process's pid namespace (`/proc/self/ns/pid`'s target): a pid means the same process
/// only to a process of the same namespace.
fn pid_namespace() -> String {
    std::fs::read_link("/proc/self/ns/pid")
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The pid the lock file names, when its holder is in this process's pid namespace.
fn holder(mut file: &File) -> Option<Pid> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.take(128).read_to_string(&mut text).ok()?;
    let (pid, ns) = text.trim().split_once(' ')?;
    if ns != pid_namespace() {
        return None;
    }
    Pid::from_raw(pid.parse().ok()?)
}

/// Raises every thread of process `pid` and of its children to this thread's CPU priority,
/// where theirs is lower. What the kernel refuses is left as it is.
pub fn raise(pid: Pid) {
    let Ok(mine) = rustix::process::getpriority_process(None) else {
        return;
    };
    let mut procs = vec![pid.as_raw_nonzero().get()];
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            procs.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<i32>().ok()),
            );
        }
    }
    for p in procs {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let Some(tid) = t
                .file_name()
                .to_str()
                .and_then(|s| s.parse().ok())
                .and_then(Pid::from_raw)
            else {
                continue;
            };
            // Linux keeps a nice value per thread; `PRIO_PROCESS` of a thread id sets that one.
            if rustix::process::getpriority_process(Some(tid)).is_ok_and(|n| n > mine) {
                let _ = rustix::process::setpriority_process(Some(tid), mine);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_taker_waits_until_its_deadline_then_gets_the_lock_once_it_is_free() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(dir.path(), "m.cwasm");
        let first = acquire(&path, None);
        assert!(first.held() && !first.waited());
        assert_eq!(
            holder(first.held.as_ref().unwrap()).map(|p| p.as_raw_nonzero().get() as u32),
            Some(std::process::id())
        );
        // A holder of another pid namespace is not one this process can name.
        std::fs::write(&path, format!("{} pid:[1]", std::process::id())).unwrap();
        assert_eq!(holder(first.held.as_ref().unwrap()), None);
        let t = Instant::now();
        let second = acquire(&path, Some(Instant::now() + Duration::from_millis(100)));
        assert!(!second.held() && second.waited());
        assert!(t.elapsed() >= Duration::from_millis(100));
        drop(first);
        let third = acquire(&path, Some(Instant::now()));
        assert!(third.held() && !third.waited());
    }

    #[test]
    fn a_waiter_raises_the_holders_threads_and_children_to_its_own_priority() {
        // A holder at nice 19 with a child at nice 19, as the agent and its compile helper are.
        let mut holder = std::process::Command::new("nice")
            .args(["-n", "19", "sh", "-c", "sleep 30 & wait"])
            .spawn()
            .unwrap();
        let pid = Pid::from_raw(holder.id() as i32).unwrap();
        let child = || {
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                .ok()
                .and_then(|c| c.split_whitespace().next()?.parse::<i32>().ok())
                .and_then(Pid::from_raw)
        };
        // The shell starts its child at once; wait for it to be there.
        let deadline = Instant::now() + Duration::from_secs(10);
        let kid = loop {
            if let Some(k) = child() {
                break k;
            }
            assert!(Instant::now() < deadline, "no child");
            std::thread::yield_now();
        };
        let nice = |p: Pid| rustix::process::getpriority_process(Some(p)).unwrap();
        assert_eq!((nice(pid), nice(kid)), (19, 19));
        let mine = rustix::process::getpriority_process(None).unwrap();
        raise(pid);
        assert_eq!((nice(pid), nice(kid)), (mine, mine));
        let _ = rustix::process::kill_process(kid, rustix::process::Signal::KILL);
        let _ = holder.kill();
        let _ = holder.wait();
    }
}
