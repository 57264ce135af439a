//! What the lifecycle tells the world, behind a small trait: the containerd face publishes these
//! as task events; tests record them.

use super::status::Exit;
use super::stdio::StdioPaths;

/// One mount of a container's rootfs, as the caller prepared it (containerd's snapshot mounts).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RootfsMount {
    /// Filesystem type (`overlay`, `bind`, ...).
    pub kind: String,
    /// Its source.
    pub source: String,
    /// Mount options.
    pub options: Vec<String>,
}

/// Something that happened to a container or one of its processes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A container was created.
    Create {
        /// Container id.
        id: String,
        /// Bundle directory.
        bundle: String,
        /// Its rootfs mounts.
        rootfs: Vec<RootfsMount>,
        /// Its init process's stdio.
        stdio: StdioPaths,
        /// Its init process's pid.
        pid: u32,
    },
    /// A container's init process was started.
    Start {
        /// Container id.
        id: String,
        /// Its pid.
        pid: u32,
    },
    /// A process was added to a container.
    ExecAdded {
        /// Container id.
        id: String,
        /// Exec id.
        exec_id: String,
    },
    /// An added process was started.
    ExecStarted {
        /// Container id.
        id: String,
        /// Exec id.
        exec_id: String,
        /// Its pid.
        pid: u32,
    },
    /// A guest went over its memory limit (sent just before its exit).
    Oom {
        /// Container id.
        id: String,
    },
    /// A process ended.
    Exit {
        /// Container id.
        id: String,
        /// Exec id ("" for init).
        exec_id: String,
        /// Its pid.
        pid: u32,
        /// How it ended.
        exit: Exit,
    },
    /// A container was paused.
    Paused {
        /// Container id.
        id: String,
    },
    /// A container was resumed.
    Resumed {
        /// Container id.
        id: String,
    },
    /// A container was deleted.
    Delete {
        /// Container id.
        id: String,
        /// Its init process's pid.
        pid: u32,
        /// How it ended.
        exit: Exit,
    },
}

/// Where events go. `send` never waits.
pub trait Events: Send + Sync + 'static {
    /// Queues `event`.
    fn send(&self, event: Event);
}
