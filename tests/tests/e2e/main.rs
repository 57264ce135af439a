//! End-to-end tests: run the built `wasmbox` binary on the example guests, as a user would.

mod bad_input;
mod common;
mod cri;
mod ctrd;
mod devices;
mod engines;
mod escapes;
mod exit;
mod fs;
mod http;
mod http_js;
mod http_limits;
mod images;
mod install;
mod limits;
mod native_code;
mod net;
mod oci;
mod p3;
mod recipes;
mod registry;
mod shim;
mod shim_groups;
mod shim_limits;
mod shim_net;
mod shim_socket;
