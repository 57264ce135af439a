//! `wasmbox agent`: keeps a node's compiled-code cache warm before its first pod. It watches
//! containerd's event stream (`/images/create`, `/images/update`) and, on every (re)connection,
//! the images containerd already holds; for each image that runs wasm it reads the wasm from
//! containerd's content store (a compat image's entrypoint streamed out of its layers, nothing
//! unpacked to disk) and compiles it into the cache the shim loads from, one at a time, at the
//! lowest CPU and I/O priority, each compile inside the compile helper's memory cap. It writes
//! compiled code and never loads any.
//!
//! Its containerd API bindings are generated at build time (`protoc`), so it is built only with
//! the `agent` feature.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::cli::CacheOptions;

#[cfg(feature = "agent")]
mod content;
#[cfg(feature = "agent")]
mod metrics;
#[cfg(feature = "agent")]
mod priority;
#[cfg(feature = "agent")]
mod watch;
#[cfg(feature = "agent")]
mod worker;

/// containerd's socket where its installers put it.
pub const DEFAULT_ADDRESS: &str = "/run/containerd/containerd.sock";

/// Compile the wasm of every image containerd pulls on this node, ahead of its first start.
#[derive(Args, Debug)]
pub struct AgentCommand {
    /// containerd's socket.
    #[arg(long, value_name = "SOCKET", default_value = DEFAULT_ADDRESS)]
    pub address: PathBuf,
    /// A containerd namespace to watch (repeatable; default: every namespace).
    #[arg(long = "namespace", short = 'n', value_name = "NAME")]
    pub namespaces: Vec<String>,
    /// Where to compile to: the shim's cache, with the same rules.
    #[command(flatten)]
    pub cache: CacheOptions,
    /// Serve Prometheus metrics of the agent's work at `http://ADDR/metrics`.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,
}

impl AgentCommand {
    /// Runs until killed.
    pub fn execute(self) -> Result<i32> {
        if self.cache.no_cache {
            anyhow::bail!("--no-cache leaves the agent nowhere to compile to");
        }
        #[cfg(feature = "agent")]
        {
            watch::run(self)
        }
        #[cfg(not(feature = "agent"))]
        {
            anyhow::bail!(
                "this wasmbox was built without the agent (cargo build --release -p wasmbox-shim --features agent; it needs protoc)"
            )
        }
    }
}
