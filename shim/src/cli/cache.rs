//! `wasmbox cache ls` and `wasmbox cache prune`: the compiled-code cache's entries, and emptying
//! or trimming it. The cache is the one `run`, `serve` and the shim use (`--cache-dir`, else
//! `WASMBOX_CACHE_DIR`, else the default); it keeps itself under `WASMBOX_CACHE_MAX`
//! (see [`wasmbox_runtime::cache::cap`]).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use wasmbox_runtime::cache::cap;

/// The compiled-code cache.
#[derive(Args, Debug)]
pub struct CacheCommand {
    /// What to do.
    #[command(subcommand)]
    pub what: CacheWhat,
}

/// `wasmbox cache`'s subcommands.
#[derive(Subcommand, Debug)]
pub enum CacheWhat {
    /// List the entries: the sha256 of the wasm each was compiled from, its kind, size, last use,
    /// and whether a process has it loaded now; least recently used first.
    Ls(Dir),
    /// Remove the entries no process has loaded: all of them, or with `--max` the least recently
    /// used until the rest hold at most that much.
    Prune {
        /// The cache.
        #[command(flatten)]
        dir: Dir,
        /// Keep the most recently used entries that fit in this size (e.g. `500m`, `2g`).
        #[arg(long, value_name = "SIZE", value_parser = super::parse_size)]
        max: Option<u64>,
    },
}

/// Which cache.
#[derive(Args, Debug)]
pub struct Dir {
    /// The compiled-code cache directory (else `$WASMBOX_CACHE_DIR`; default `/var/cache/wasmbox`
    /// for root, else `$XDG_CACHE_HOME/wasmbox`).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
}

impl Dir {
    /// The directory, decided as every face decides it, and refused as the cache refuses it
    /// (not the user's own, or writable by others) when it exists.
    fn path(&self) -> Result<PathBuf> {
        let settings = wasmbox_runtime::launch::Settings {
            cache_dir: self.cache_dir.clone(),
            ..Default::default()
        };
        let dir = settings.cache_dir().context(
            "no compiled-code cache directory: give --cache-dir or set WASMBOX_CACHE_DIR",
        )?;
        if dir.exists() {
            wasmbox_runtime::cache::check_dir(&dir)?;
        }
        Ok(dir)
    }
}

impl CacheCommand {
    /// Lists or prunes.
    pub fn execute(self) -> Result<i32> {
        match self.what {
            CacheWhat::Ls(dir) => {
                let dir = dir.path()?;
                let entries = match cap::entries(&dir) {
                    Ok(e) => e,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                    Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
                };
                println!(
                    "{:<71} {:<9} {:>10}  {:<24} IN USE",
                    "WASM", "KIND", "SIZE", "LAST USE"
                );
                for e in entries {
                    println!(
                        "sha256:{:<64} {:<9} {:>10}  {:<24} {}",
                        e.digest,
                        e.kind,
                        e.size,
                        wasmbox_runtime::rfc3339::millis(e.last_use),
                        if e.in_use() { "yes" } else { "no" }
                    );
                }
                Ok(0)
            }
            CacheWhat::Prune { dir, max } => {
                let dir = dir.path()?;
                if !dir.exists() {
                    println!("removed 0 entries (0 bytes); 0 left (0 bytes)");
                    return Ok(0);
                }
                let t = cap::trim(&dir, max.unwrap_or(0), None)
                    .with_context(|| format!("pruning {}", dir.display()))?;
                println!(
                    "removed {} entries ({} bytes); {} left ({} bytes, {} in use)",
                    t.removed, t.freed, t.kept, t.total, t.busy
                );
                Ok(0)
            }
        }
    }
}
