//! The image store as the command line reaches it: where it lives, how registries are reached,
//! and what name a user's short reference means.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use wasmbox_images::{Reference, Store};

/// Where the image store lives and how registries are reached.
#[derive(Args, Debug, Clone, Default)]
pub struct StoreOptions {
    /// A registry (`HOST[:PORT]`) that may be reached over plain HTTP (repeatable); loopback
    /// registries always may.
    #[arg(long = "insecure-registry", value_name = "HOST", global = true)]
    pub insecure: Vec<String>,
    /// Image store directory (default `/var/lib/wasmbox` for root, else
    /// `$XDG_DATA_HOME/wasmbox` or `~/.local/share/wasmbox`).
    #[arg(
        long = "store",
        env = "WASMBOX_STORE",
        value_name = "DIR",
        global = true
    )]
    pub store: Option<PathBuf>,
}

impl StoreOptions {
    /// Opens (creating) the store.
    pub fn open(&self) -> Result<Store> {
        Ok(Store::open(&self.dir())?)
    }

    /// The store's directory.
    pub fn dir(&self) -> PathBuf {
        self.store.clone().unwrap_or_else(default_store)
    }

    /// How registries are reached.
    pub fn registry(&self) -> wasmbox_images::registry::RegistryOptions {
        wasmbox_images::registry::RegistryOptions {
            insecure: self.insecure.clone(),
            auth_file: None,
        }
    }

    /// Pulls `name` into `store`, showing progress; returns the canonical name.
    pub fn pull(&self, store: &Store, name: &str) -> Result<String> {
        let r: Reference = name.parse()?;
        let progress = super::progress::StderrProgress::new();
        Ok(block_on(wasmbox_images::registry::pull(
            store,
            &r,
            &self.registry(),
            &progress,
        ))??)
    }
}

/// Runs a registry transfer to completion on a small runtime of its own.
pub fn block_on<F: std::future::Future>(f: F) -> Result<F::Output> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the network runtime")?;
    Ok(rt.block_on(f))
}

fn default_store() -> PathBuf {
    // SAFETY: geteuid has no preconditions.
    #[allow(unsafe_code, reason = "geteuid is always safe")]
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        return PathBuf::from("/var/lib/wasmbox");
    }
    std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("wasmbox")
}

/// The canonical name of a reference given by a user, for a name being made (`build -t`).
pub fn canonical(name: &str) -> Result<String> {
    Ok(name.parse::<Reference>()?.to_string())
}

/// The stored name a user's `name` means: a short name is `localhost/NAME` when the store has
/// that, else Docker Hub's name (which `run` pulls when it is missing too).
pub fn local_name(store: &Store, name: &str) -> Result<String> {
    let names = Reference::local_candidates(name)?;
    let found = names
        .iter()
        .map(ToString::to_string)
        .find(|n| store.resolve(n).is_ok());
    Ok(found.unwrap_or_else(|| names[names.len() - 1].to_string()))
}
