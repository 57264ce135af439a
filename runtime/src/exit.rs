//! How a guest ended, and the process exit code each ending maps to.

use std::fmt;
use std::time::Duration;

/// Exit code when the guest trapped (as a native process killed by SIGABRT).
pub const EXIT_TRAP: i32 = 134;
/// Exit code when the guest exceeded its memory limit (as a container killed by the OOM killer).
pub const EXIT_MEMORY_LIMIT: i32 = 137;
/// Exit code when the guest ran past its wall-clock deadline (as `timeout(1)`).
pub const EXIT_TIMEOUT: i32 = 124;
/// Exit code when wasmbox itself failed before or while starting the guest (as docker and podman).
pub const EXIT_RUNTIME_ERROR: i32 = 125;

/// Why a guest stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest returned from its entry or called `proc_exit`/`exit` with this code.
    Exited(i32),
    /// The guest was killed with this signal number.
    Signaled(i32),
    /// The guest trapped; the message says where and why.
    Trap(String),
    /// The guest tried to grow its memories or tables past the limit (bytes).
    MemoryLimit(u64),
    /// The guest ran past its wall-clock deadline.
    Timeout(Duration),
}

/// The final status of a guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitStatus {
    /// Why it stopped.
    pub reason: ExitReason,
}

impl ExitStatus {
    /// The process exit code for this status (documented in docs/run.md).
    pub fn code(&self) -> i32 {
        match &self.reason {
            ExitReason::Exited(n) => *n,
            ExitReason::Signaled(s) => 128 + s,
            ExitReason::Trap(_) => EXIT_TRAP,
            ExitReason::MemoryLimit(_) => EXIT_MEMORY_LIMIT,
            ExitReason::Timeout(_) => EXIT_TIMEOUT,
        }
    }

    /// True when the guest ended on its own with code 0.
    pub fn success(&self) -> bool {
        self.reason == ExitReason::Exited(0)
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reason {
            ExitReason::Exited(n) => write!(f, "exited with code {n}"),
            ExitReason::Signaled(s) => write!(f, "killed by signal {s}"),
            ExitReason::Trap(m) => write!(f, "trapped: {m}"),
            ExitReason::MemoryLimit(l) => write!(f, "memory limit of {l} bytes exceeded"),
            ExitReason::Timeout(d) => write!(f, "timed out after {d:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_container_conventions() {
        let st = |reason| ExitStatus { reason };
        assert_eq!(st(ExitReason::Exited(3)).code(), 3);
        assert_eq!(st(ExitReason::Signaled(15)).code(), 143);
        assert_eq!(st(ExitReason::Signaled(9)).code(), 137);
        assert_eq!(st(ExitReason::Trap("x".into())).code(), 134);
        assert_eq!(st(ExitReason::MemoryLimit(1)).code(), 137);
        assert_eq!(st(ExitReason::Timeout(Duration::from_secs(1))).code(), 124);
        assert!(st(ExitReason::Exited(0)).success());
        assert!(!st(ExitReason::Exited(1)).success());
    }
}
