//! A process's status and the transitions between statuses: the one place that says what may
//! happen to a container in each state, as OCI runtimes define it (created, running, paused,
//! stopped).

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// Where a process is in its life. A container's status is its init process's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Made and waiting to be started (a wasm guest linked; runc's init waiting on its FIFO).
    Created,
    /// Started and not ended.
    Running,
    /// Started, not ended, and frozen (init only: a container is paused as a whole).
    Paused,
    /// Ended, or killed before it started. Final.
    Stopped,
}

/// What can happen to a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// It was started.
    Start,
    /// Its container was paused.
    Pause,
    /// Its container was resumed.
    Resume,
    /// It ended (or was killed before it started).
    Exit,
}

impl Status {
    /// The status after `t`, or `None` when `t` cannot happen in this status.
    pub fn next(self, t: Transition) -> Option<Status> {
        use Status::*;
        use Transition::*;
        match (self, t) {
            (Created, Start) => Some(Running),
            (Running, Pause) => Some(Paused),
            (Paused, Resume) => Some(Running),
            (Created | Running | Paused, Exit) => Some(Stopped),
            _ => None,
        }
    }

    /// Whether the process may be started.
    pub fn can_start(self) -> bool {
        self.next(Transition::Start).is_some()
    }

    /// Whether there is anything to signal (a created process is ended by a kill).
    pub fn can_kill(self) -> bool {
        self != Status::Stopped
    }

    /// Whether the container may be paused.
    pub fn can_pause(self) -> bool {
        self.next(Transition::Pause).is_some()
    }

    /// Whether the container may be resumed.
    pub fn can_resume(self) -> bool {
        self.next(Transition::Resume).is_some()
    }

    /// Whether another process may be added to the container (runc refuses a paused or stopped
    /// one).
    pub fn can_exec(self) -> bool {
        matches!(self, Status::Created | Status::Running)
    }

    /// Whether the process may be deleted: never while it runs, paused or not.
    pub fn can_delete(self) -> bool {
        matches!(self, Status::Created | Status::Stopped)
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// Exit status (128+signal when killed).
    pub code: u32,
    /// When it ended.
    pub at: SystemTime,
}

/// A process's status and, once stopped, its exit: one value, so the two always agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State {
    /// Its status.
    pub status: Status,
    /// Set when the status becomes [`Status::Stopped`].
    pub exit: Option<Exit>,
    /// A start is under way: its outcome (and its event) comes before an exit is recorded.
    pub starting: bool,
    /// Its container was deleted: an exit still recorded is not told (a delete was).
    pub deleted: bool,
}

impl State {
    /// A created process.
    pub fn created() -> Self {
        Self {
            status: Status::Created,
            exit: None,
            starting: false,
            deleted: false,
        }
    }

    /// Applies `t`; false (and nothing changes) when `t` cannot happen now. An exit records
    /// `exit`.
    pub fn apply(&mut self, t: Transition, exit: Option<Exit>) -> bool {
        let Some(next) = self.status.next(t) else {
            return false;
        };
        self.status = next;
        if t == Transition::Exit {
            self.exit = exit;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::Status::*;
    use super::Transition::*;
    use super::*;

    const ALL: [Status; 4] = [Created, Running, Paused, Stopped];

    #[test]
    fn each_status_allows_exactly_its_transitions() {
        let allowed = [
            (Created, Start, Running),
            (Created, Exit, Stopped),
            (Running, Pause, Paused),
            (Running, Exit, Stopped),
            (Paused, Resume, Running),
            (Paused, Exit, Stopped),
        ];
        for s in ALL {
            for t in [Start, Pause, Resume, Exit] {
                let want = allowed
                    .iter()
                    .find(|(from, by, _)| *from == s && *by == t)
                    .map(|(_, _, to)| *to);
                assert_eq!(s.next(t), want, "{s:?} by {t:?}");
            }
        }
    }

    #[test]
    fn what_each_status_permits() {
        let table = [
            // (status, start, kill, pause, resume, exec, delete)
            (Created, true, true, false, false, true, true),
            (Running, false, true, true, false, true, false),
            (Paused, false, true, false, true, false, false),
            (Stopped, false, false, false, false, false, true),
        ];
        for (s, start, kill, pause, resume, exec, delete) in table {
            assert_eq!(s.can_start(), start, "{s:?} start");
            assert_eq!(s.can_kill(), kill, "{s:?} kill");
            assert_eq!(s.can_pause(), pause, "{s:?} pause");
            assert_eq!(s.can_resume(), resume, "{s:?} resume");
            assert_eq!(s.can_exec(), exec, "{s:?} exec");
            assert_eq!(s.can_delete(), delete, "{s:?} delete");
        }
    }

    #[test]
    fn an_exit_is_recorded_once_and_is_final() {
        let mut st = State::created();
        assert!(st.apply(Start, None));
        let first = super::Exit {
            code: 3,
            at: SystemTime::UNIX_EPOCH,
        };
        assert!(st.apply(Exit, Some(first)));
        assert_eq!((st.status, st.exit), (Stopped, Some(first)));
        let second = super::Exit {
            code: 137,
            at: SystemTime::now(),
        };
        assert!(!st.apply(Exit, Some(second)));
        assert!(!st.apply(Start, None));
        assert_eq!(st.exit, Some(first));
    }

    #[test]
    fn statuses_are_stored_by_name() {
        assert_eq!(serde_json::to_string(&Paused).unwrap(), "\"paused\"");
        let back: Status = serde_json::from_str("\"stopped\"").unwrap();
        assert_eq!(back, Stopped);
    }
}
