//! `wasmbox push`.

use anyhow::Result;
use clap::Args;
use wasmbox_images::Reference;

use crate::cli::store::{StoreOptions, local_name};

/// Push an image from the store to a registry.
#[derive(Args, Debug)]
pub struct PushCommand {
    /// The image in the store.
    pub image: String,
    /// Where to push it (default: the image's own name).
    pub destination: Option<String>,
}

impl PushCommand {
    /// Pushes, printing a line per blob.
    pub fn execute(self, store: &StoreOptions) -> Result<i32> {
        let s = store.open()?;
        let name = local_name(&s, &self.image)?;
        let dest: Reference = self.destination.as_deref().unwrap_or(&name).parse()?;
        let progress = crate::cli::progress::StderrProgress::new();
        crate::cli::store::block_on(wasmbox_images::registry::push(
            &s,
            &name,
            &dest,
            &store.registry(),
            &progress,
        ))??;
        println!("{dest}");
        Ok(0)
    }
}
