//! The shim's errors, and the one place they become ttrpc status codes.

use containerd_shim::protos::ttrpc::{self, Code};

/// Why a task request failed. Each kind maps to exactly one ttrpc code in [`From`] below, which
/// containerd turns back into its own error kinds (`ctr` shows the message).
#[derive(Debug, thiserror::Error)]
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

impl From<ShimError> for ttrpc::Error {
    fn from(e: ShimError) -> Self {
        let code = match &e {
            ShimError::NotFound(_) => Code::NOT_FOUND,
            ShimError::AlreadyExists(_) => Code::ALREADY_EXISTS,
            ShimError::FailedPrecondition(_) => Code::FAILED_PRECONDITION,
            ShimError::InvalidArgument(_) => Code::INVALID_ARGUMENT,
            ShimError::Unimplemented(_) => Code::UNIMPLEMENTED,
            ShimError::Internal(_) => Code::INTERNAL,
        };
        ttrpc::Error::RpcStatus(ttrpc::get_status(code, e.to_string()))
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_its_code() {
        let cases = [
            (ShimError::NotFound("task x".into()), Code::NOT_FOUND),
            (
                ShimError::AlreadyExists("task x".into()),
                Code::ALREADY_EXISTS,
            ),
            (
                ShimError::FailedPrecondition("running".into()),
                Code::FAILED_PRECONDITION,
            ),
            (
                ShimError::InvalidArgument("bad".into()),
                Code::INVALID_ARGUMENT,
            ),
            (ShimError::Unimplemented("no".into()), Code::UNIMPLEMENTED),
            (ShimError::Internal("io".into()), Code::INTERNAL),
        ];
        for (e, code) in cases {
            let msg = e.to_string();
            match ttrpc::Error::from(e) {
                ttrpc::Error::RpcStatus(s) => {
                    assert_eq!(s.code(), code);
                    assert_eq!(s.message(), msg);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}
