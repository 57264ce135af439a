//! `wasmbox load`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use wasmbox_images::Reference;

use crate::cli::AheadOptions;
use crate::cli::store::StoreOptions;

/// Load images from an OCI layout (a directory or a tarball).
#[derive(Args, Debug)]
pub struct LoadCommand {
    /// The layout directory or tarball.
    #[arg(short = 'i', long = "input", value_name = "FILE")]
    pub input: PathBuf,
    /// Name the (single) image in it.
    #[arg(short = 't', long = "tag", value_name = "REF")]
    pub tag: Option<String>,
    /// Compiling the images' wasm.
    #[command(flatten)]
    pub ahead: AheadOptions,
}

impl LoadCommand {
    /// Loads and prints the names.
    pub fn execute(self, store: &StoreOptions) -> Result<i32> {
        let store = store.open()?;
        let tag = self
            .tag
            .as_deref()
            .map(str::parse::<Reference>)
            .transpose()?;
        let names = wasmbox_images::archive::load(&store, &self.input, tag.as_ref())?;
        self.ahead.images(&store, &names)?;
        for n in names {
            println!("Loaded image: {n}");
        }
        Ok(0)
    }
}
