//! `wasmbox pull`.

use anyhow::Result;
use clap::Args;

use crate::cli::AheadOptions;
use crate::cli::store::StoreOptions;

/// Pull an image from a registry into the store.
#[derive(Args, Debug)]
pub struct PullCommand {
    /// The image.
    pub image: String,
    /// Compiling the image's wasm.
    #[command(flatten)]
    pub ahead: AheadOptions,
}

impl PullCommand {
    /// Pulls, compiles and prints the name.
    pub fn execute(self, store: &StoreOptions) -> Result<i32> {
        let s = store.open()?;
        let name = store.pull(&s, &self.image)?;
        self.ahead.images(&s, std::slice::from_ref(&name))?;
        println!("{name}");
        Ok(0)
    }
}
