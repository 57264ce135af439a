//! wasmbox's front ends: the `wasmbox` command line, the containerd shim and the node agent. They own
//! every process-level concern (argv, signals, exit codes, logging) and compose the `runtime` and
//! `images` crates.

pub mod agent;
pub mod cli;
pub mod containerd;
pub mod launch;
pub mod lifecycle;
pub mod oci;
pub mod signals;
pub mod umask;

use wasmbox_runtime::compiler::{HELPER_ARG, helper_main};

/// When this process was started as the compiler helper (first argument
/// [`wasmbox_runtime::compiler::HELPER_ARG`]), runs it and returns its exit status. Both binaries
/// ask this first thing in `main`, before any thread or signal setup.
pub fn compiler_helper() -> Option<i32> {
    let mut args = std::env::args_os().skip(1);
    if args.next()? != HELPER_ARG {
        return None;
    }
    Some(helper_main(&args.collect::<Vec<_>>()))
}

/// Parses a log filter: comma-separated `level` (the default) and `target=level` directives, as
/// in `warn,wasmbox_runtime=debug`: a list of targets, without an env filter's span and field
/// directives (and their regex matching).
pub fn parse_log_filter(s: &str) -> Result<tracing_subscriber::filter::Targets, String> {
    s.parse().map_err(|e| {
        format!("{s:?} is not a log filter (`level` or `target=level`, comma-separated): {e}")
    })
}
