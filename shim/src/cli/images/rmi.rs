//! `wasmbox rmi`.

use anyhow::Result;
use clap::Args;

use crate::cli::store::{StoreOptions, local_name};

/// Remove images from the store (their blobs go with `prune`).
#[derive(Args, Debug)]
pub struct RmiCommand {
    /// The images.
    #[arg(required = true)]
    pub images: Vec<String>,
}

impl RmiCommand {
    /// Removes each reference.
    pub fn execute(self, store: &StoreOptions) -> Result<i32> {
        let store = store.open()?;
        for i in &self.images {
            let name = local_name(&store, i)?;
            store.remove_ref(&name)?;
            println!("Untagged: {name}");
        }
        Ok(0)
    }
}
