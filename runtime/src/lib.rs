//! wasmbox's sandbox engine: turns an OCI runtime bundle (or a wasm file) plus a capability
//! [`Policy`] into a running guest in wasmtime, with filesystem and network access limited to what
//! the policy grants.
//!
//! ```no_run
//! use wasmbox_runtime::{Policy, Runtime, RuntimeConfig, Stdio};
//! let rt = Runtime::new(RuntimeConfig::default())?;
//! let (program, _) = rt.load_file("hello.wasm".as_ref())?;
//! let policy = Policy { args: vec!["hello.wasm".into()], cwd: "/".into(), ..Default::default() };
//! let running = rt.prepare(&program, policy)?.start(Stdio::inherit())?;
//! let status = running.wait();
//! std::process::exit(status.code());
//! # Ok::<(), wasmbox_runtime::Error>(())
//! ```

pub mod cache;
pub mod compiler;
mod devices;
mod engine;
mod engine_config;
mod error;
mod exit;
mod filesystem;
mod host;
pub mod http;
pub mod launch;
pub mod metrics;
pub mod mounts;
pub mod net;
mod p1;
mod p2dev;
mod p2fs;
mod p2links;
mod p2sockets;
pub mod policy;
pub mod protect;
mod resolve;
pub mod rfc3339;
mod sandbox;
mod scratch;
pub mod seccomp;
mod serve;
pub mod shape;
mod shared;
pub mod spawner;
mod special;
mod store;
pub mod trace;
mod wasi;

#[cfg(test)]
mod fuzz_tests;

pub use engine::{
    Allocator, EPOCH_TICK, LoadedFrom, Program, Runtime, RuntimeConfig, is_precompiled, trim_heap,
};
pub use error::{Error, Result};
pub use exit::{
    EXIT_MEMORY_LIMIT, EXIT_RUNTIME_ERROR, EXIT_TIMEOUT, EXIT_TRAP, ExitReason, ExitStatus,
};
pub use net::NetPolicy;
pub use policy::{
    Bundle, DEFAULT_DRAIN_TIMEOUT, DEFAULT_HTTP_ADDR, DEFAULT_MAX_CONCURRENCY, DirGrant, Limits,
    MAX_CONCURRENCY, Policy, ServeConfig,
};
pub use protect::ProtectedPath;
pub use sandbox::{GuestKind, KillHandle, Prepared, Running, Usage};
pub use scratch::{scratch_prefix, sweep_stale};
pub use wasi::{Input, Output, Stdio};
