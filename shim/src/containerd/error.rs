//! The one place lifecycle errors become ttrpc status codes, which containerd turns back into
//! its own error kinds (`ctr` shows the message).

use containerd_shim::protos::ttrpc::{self, Code};

use crate::lifecycle::ShimError;

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
