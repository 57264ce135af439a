//! This crate's side of the launch path every face shares (`wasmbox_runtime::launch`): the
//! images crate's annotation rule, applied when a bundle's entrypoint is classified.

use std::path::Path;

use oci_spec::runtime::Spec;
use wasmbox_runtime::launch::Entry;

/// Classifies the entrypoint of the bundle at `dir` ([`Entry::classify`]); a spec whose
/// annotations call the workload wasm (`module.wasm.image/variant`, `run.oci.handler`) must have
/// a wasm entrypoint.
pub fn classify(dir: &Path, spec: Spec) -> wasmbox_runtime::Result<Entry> {
    let arg0 = spec
        .process()
        .as_ref()
        .and_then(|p| p.args().as_ref())
        .and_then(|a| a.first())
        .cloned();
    let annotated = spec
        .annotations()
        .as_ref()
        .is_some_and(|a| wasmbox_images::detect::annotations_mean_wasm(a, arg0.as_deref()));
    Entry::classify(dir, spec, annotated)
}
