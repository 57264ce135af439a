//! `wasmbox save`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use crate::cli::store::{StoreOptions, local_name};

/// Write an image as an OCI layout tarball.
#[derive(Args, Debug)]
pub struct SaveCommand {
    /// Output file.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,
    /// Write a wasm artifact in compat form (its wasm at `/app.wasm` in a tar layer), which
    /// runtimes that unpack every image into a filesystem (containerd 1.6) can run. Compat
    /// images are written as they are.
    #[arg(long)]
    pub compat: bool,
    /// The image.
    pub image: String,
}

impl SaveCommand {
    /// Writes the tarball.
    pub fn execute(self, store: &StoreOptions) -> Result<i32> {
        let store = store.open()?;
        let name = local_name(&store, &self.image)?;
        let image = wasmbox_images::image::Image::open(&store, &name)
            .with_context(|| format!("saving {name}"))?;
        let artifact = matches!(
            image.detection,
            Some(wasmbox_images::detect::Detection {
                form: wasmbox_images::detect::Form::Artifact { .. },
                ..
            })
        );
        if self.compat && artifact {
            let _keep = store.keep_blobs().context("locking the store")?;
            let desc = wasmbox_images::build::compat_of(&store, &image)
                .with_context(|| format!("converting {name} to compat form"))?;
            wasmbox_images::archive::save_as(&store, &name, desc, &self.output)
                .with_context(|| format!("saving {name}"))?;
        } else {
            wasmbox_images::archive::save(&store, &name, &self.output)
                .with_context(|| format!("saving {name}"))?;
        }
        Ok(0)
    }
}
