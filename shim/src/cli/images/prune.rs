//! `wasmbox prune`.

use anyhow::Result;
use clap::Args;

use crate::cli::store::StoreOptions;

/// Delete blobs no image refers to.
#[derive(Args, Debug)]
pub struct PruneCommand {}

impl PruneCommand {
    /// Prints what was deleted.
    pub fn execute(self, store: &StoreOptions) -> Result<i32> {
        let store = store.open()?;
        let removed = store.prune()?;
        for d in &removed {
            println!("deleted: {d}");
        }
        println!("{} blob(s) deleted", removed.len());
        Ok(0)
    }
}
