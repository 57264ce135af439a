//! Why a lifecycle request failed. Each face maps the kinds to its own codes (containerd's ttrpc
//! status codes in `containerd::error`).

/// Why a task request failed. Each kind is one status code to the faces that report it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ShimError {
    /// No container or process with this id.
    #[error("{0}: not found")]
    NotFound(String),
    /// A container or process with this id exists already.
    #[error("{0}: already exists")]
    AlreadyExists(String),
    /// The request does not fit the process's state (e.g. deleting a running task).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The request or the bundle is malformed or asks for something unsupported.
    #[error("{0}")]
    InvalidArgument(String),
    /// The request is valid but this shim does not implement it.
    #[error("{0}")]
    Unimplemented(String),
    /// Anything else (I/O, runc, mounts).
    #[error("{0}")]
    Internal(String),
}

/// Shorthand for the shim's results.
pub type Result<T, E = ShimError> = std::result::Result<T, E>;

/// Renders an error and its sources on one line (`a: b: c`), for messages `ctr` prints.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = c.source();
    }
    s
}
