//! `wasmbox inspect`.

use anyhow::{Context, Result};
use clap::Args;
use wasmbox_images::Image;
use wasmbox_images::detect::Form;

use super::{compat_workload, entry, kind, workload};
use crate::cli::store::{StoreOptions, local_name};

/// Show an image's manifest, config, detected entry and what its wasm is; or what a wasm file is.
#[derive(Args, Debug)]
pub struct InspectCommand {
    /// The image, or a wasm file.
    pub image: String,
}

impl InspectCommand {
    /// Prints JSON.
    pub fn execute(self, store: &StoreOptions) -> Result<i32> {
        if crate::cli::target::names_a_file(&self.image) {
            // Ambient authority, named: the file the user asked about.
            let bytes =
                std::fs::read(&self.image).with_context(|| format!("reading {}", self.image))?;
            let out = serde_json::json!({
                "file": self.image,
                "kind": workload(&bytes),
                "size": bytes.len(),
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
            return Ok(0);
        }
        let store = store.open()?;
        let img = Image::open(&store, &local_name(&store, &self.image)?)?;
        let kind = match img.detection.as_ref().map(|d| &d.form) {
            Some(Form::Compat) => format!("compat, {}", compat_workload(&store, &img)?),
            _ => kind(&store, &img),
        };
        // The manifest and config as the image holds them, every field kept (a wasm
        // artifact's config has its own, which the image spec's type leaves out).
        let as_held = |digest: &wasmbox_images::Digest| -> Result<serde_json::Value> {
            Ok(serde_json::from_slice(&store.read_blob(digest)?)?)
        };
        let config_digest = wasmbox_images::oci::digest(img.manifest.config())?;
        let out = serde_json::json!({
            "reference": img.name,
            "digest": img.manifest_digest.to_string(),
            "kind": kind,
            "detectedBecause": img.detection.as_ref().map(|d| d.because.clone()),
            "entry": entry(&img),
            "manifest": as_held(&img.manifest_digest)?,
            "config": as_held(&config_digest)?,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        Ok(0)
    }
}
