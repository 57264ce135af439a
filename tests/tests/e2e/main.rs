//! End-to-end tests: run the built `wasmbox` binary on the example guests, as a user would.

mod bad_input;
mod common;
mod exit;
mod fs;
mod limits;
mod net;
