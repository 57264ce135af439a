//! Image commands on the local store, one file each: `pull`, `push`, `build`, `images` (`list`),
//! `inspect`, `rmi`, `prune`, `load`, `save`; and what they say an image's wasm is.

mod build;
mod inspect;
mod list;
mod load;
mod prune;
mod pull;
mod push;
mod rmi;
mod save;

use anyhow::{Context, Result};
use wasmbox_images::detect::Form;
use wasmbox_images::{Image, Store};

pub use build::BuildCommand;
pub use inspect::InspectCommand;
pub use list::ImagesCommand;
pub use load::LoadCommand;
pub use prune::PruneCommand;
pub use pull::PullCommand;
pub use push::PushCommand;
pub use rmi::RmiCommand;
pub use save::SaveCommand;

/// What wasm `bytes` are: a command module, a command component or an HTTP component.
pub(super) fn workload(bytes: &[u8]) -> String {
    wasmbox_runtime::shape::guest_kind(bytes)
        .map(|k| k.to_string())
        .unwrap_or_else(|| "not wasm".into())
}

/// The image's form, and for an artifact what its wasm is (a compat image's entry is inside its
/// layers: [`compat_workload`] unpacks them).
pub(super) fn kind(store: &Store, img: &Image) -> String {
    match img.detection.as_ref().map(|d| &d.form) {
        Some(Form::Artifact { digest, .. }) => {
            let blob = store.read_blob(digest).ok();
            match blob {
                Some(b) => format!("artifact, {}", workload(&b)),
                None => "artifact".into(),
            }
        }
        Some(Form::Compat) => "compat".into(),
        None => "not wasm".into(),
    }
}

/// What a compat image's entry is, read from a bundle of it written in a private directory.
pub(super) fn compat_workload(store: &Store, img: &Image) -> Result<String> {
    let scratch = crate::cli::scratch::scratch_base()?;
    let dir = crate::cli::target::bundle_of(store, img, &scratch, "wasmbox-run-")?;
    let bytes = entry_bytes(dir.path())?;
    Ok(workload(&bytes))
}

/// Where the wasm entry is: the artifact's layer, or the compat image's entrypoint file.
pub(super) fn entry(img: &Image) -> serde_json::Value {
    match img.detection.as_ref().map(|d| &d.form) {
        Some(Form::Artifact { index, digest }) => {
            serde_json::json!({"layer": index, "digest": digest.to_string(), "path": format!("/{}", wasmbox_images::image::ARTIFACT_ENTRY)})
        }
        _ => serde_json::json!({"path": img.arg0()}),
    }
}

/// The entrypoint's bytes of the bundle at `dir`, classified as every face classifies it.
fn entry_bytes(dir: &std::path::Path) -> Result<Vec<u8>> {
    let text = std::fs::read_to_string(dir.join("config.json")).context("reading the bundle")?;
    let spec = wasmbox_runtime::policy::parse_spec(&text).map_err(anyhow::Error::msg)?;
    Ok(match crate::launch::classify(dir, spec)? {
        wasmbox_runtime::launch::Entry::Wasm(w) => w.bytes,
        wasmbox_runtime::launch::Entry::Native => Vec::new(),
    })
}
