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

/// Resolves with `pid`'s exit code (128+signal when killed), also if it already exited.
pub fn watch(pid: i32) -> oneshot::Receiver<i32> {
    let (tx, rx) = oneshot::channel();
    let mut t = TABLE.lock().expect("reaper lock");
    match t.unclaimed.remove(&pid) {
        Some((code, _)) => {
            let _ = tx.send(code);
        }
        None => {
            t.watchers.insert(pid, tx);
        }
    }
    rx
}
