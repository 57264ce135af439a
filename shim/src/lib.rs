//! wasmbox's front ends: the `wasmbox` command line and the containerd shim. They own
//! every process-level concern (argv, signals, exit codes, logging) and compose the `runtime` and
//! `images` crates.

pub mod cli;
pub mod containerd;
