//! wasmbox's front ends: the `wasmbox` command line and the containerd shim. They own
//! every process-level concern (argv, signals, exit codes, logging) and compose the `runtime` and
//! `images` crates.

pub mod cli;
pub mod containerd;
pub mod lifecycle;

use wasmbox_runtime::compiler::{Compiler, HELPER_ARG, MIN_COMPILE_MEMORY, helper_main};

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

/// Parses a compile memory cap (a size, as `--memory` takes), at least
/// [`wasmbox_runtime::compiler::MIN_COMPILE_MEMORY`].
pub fn parse_compile_memory(s: &str) -> Result<u64, String> {
    let n = cli::parse_size(s)?;
    if n < MIN_COMPILE_MEMORY {
        return Err(format!(
            "{s:?} is too little to compile in (at least {} MiB)",
            MIN_COMPILE_MEMORY >> 20
        ));
    }
    Ok(n)
}

/// Parses a log filter: comma-separated `level` (the default) and `target=level` directives, as
/// in `warn,wasmbox_runtime=debug`: a list of targets, without an env filter's span and field
/// directives (and their regex matching).
pub fn parse_log_filter(s: &str) -> Result<tracing_subscriber::filter::Targets, String> {
    s.parse().map_err(|e| {
        format!("{s:?} is not a log filter (`level` or `target=level`, comma-separated): {e}")
    })
}

/// Compiling in this program re-executed as a helper, capped at `memory` bytes.
pub fn compiler(memory: u64) -> Compiler {
    Compiler::helper(memory)
}
