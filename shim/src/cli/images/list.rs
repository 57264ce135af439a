//! `wasmbox images`.

use anyhow::Result;
use clap::Args;
use wasmbox_images::Image;

use super::kind;
use crate::cli::store::StoreOptions;

/// List the images in the store.
#[derive(Args, Debug)]
pub struct ImagesCommand {}

impl ImagesCommand {
    /// Prints one line per image.
    pub fn execute(self, store: &StoreOptions) -> Result<i32> {
        let store = store.open()?;
        println!("{:<50} {:<19} {:>10}  KIND", "REFERENCE", "DIGEST", "SIZE");
        for (name, _) in store.refs()? {
            match Image::open(&store, &name) {
                Ok(img) => println!(
                    "{:<50} {:<19} {:>10}  {}",
                    name,
                    &img.manifest_digest.to_string()[..19],
                    img.size(),
                    kind(&store, &img)
                ),
                Err(e) => println!("{name:<50} {:<19} {:>10}  broken: {e}", "-", "-"),
            }
        }
        Ok(0)
    }
}
