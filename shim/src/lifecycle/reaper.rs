//! Exit statuses of child processes (runc and the native containers it starts), by pid.
//!
//! The shim is a subreaper and the shim crate reaps every child on SIGCHLD, so nobody else may
//! `waitpid`: instead, exits arrive here through the crate's monitor and are handed to whoever
//! watches that pid, or kept for a while if the watcher has not asked yet.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use containerd_shim::monitor::{Subject, Topic, monitor_subscribe};
use tokio::sync::oneshot;

/// How long an exit nobody watched is kept.
const UNCLAIMED_FOR: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Table {
    watchers: HashMap<i32, oneshot::Sender<i32>>,
    unclaimed: HashMap<i32, (i32, Instant)>,
}

static TABLE: LazyLock<Mutex<Table>> = LazyLock::new(Default::default);

/// Starts routing exits from the shim crate's monitor. Call once, before spawning children.
pub async fn start() -> std::io::Result<()> {
    let mut sub = monitor_subscribe(Topic::Pid)
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    tokio::spawn(async move {
        while let Some(ev) = sub.rx.recv().await {
            if let Subject::Pid(pid) = ev.subject {
                exited(pid, ev.exit_code);
            }
        }
    });
    Ok(())
}

fn exited(pid: i32, code: i32) {
    let mut t = TABLE.lock().expect("reaper lock");
    if let Some(tx) = t.watchers.remove(&pid) {
        let _ = tx.send(code);
    } else {
        let now = Instant::now();
        t.unclaimed
            .retain(|_, (_, at)| now.duration_since(*at) < UNCLAIMED_FOR);
        t.unclaimed.insert(pid, (code, now));
    }
}

/// Resolves with `pid`'s exit code (128+signal when killed), also if it already exited. `since`
/// is a moment before the process was started: an exit kept from before then was another
/// process's that had the same pid (pids are reused), and is dropped.
pub fn watch(pid: i32, since: Instant) -> oneshot::Receiver<i32> {
    let (tx, rx) = oneshot::channel();
    let mut t = TABLE.lock().expect("reaper lock");
    match t.unclaimed.remove(&pid) {
        Some((code, at)) if at >= since => {
            let _ = tx.send(code);
        }
        _ => {
            t.watchers.insert(pid, tx);
        }
    }
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exit_from_before_a_process_started_is_not_its_own() {
        let before = Instant::now();
        exited(987_001, 3);
        let mut rx = watch(987_001, before);
        assert_eq!(rx.try_recv().unwrap(), 3);
        exited(987_002, 4);
        let after = Instant::now();
        let mut rx = watch(987_002, after);
        // Stale: the watcher waits for the real exit.
        assert!(rx.try_recv().is_err());
        exited(987_002, 5);
        assert_eq!(rx.try_recv().unwrap(), 5);
    }
}
