//! What `wasmbox run` (and `inspect`) is given to name: a wasm file (`FILE.wasm`, `FILE#export`),
//! an image in the store (`REF`, pulled when missing), or an OCI layout (`oci:DIR`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use wasmbox_runtime::Policy;

use super::store::{StoreOptions, local_name};

/// True when `what` is meant as a file: it exists, or it is written as a path or a wasm file name
/// (`/…`, `./…`, `../…`, `*.wasm`, `*.wat`, `*.cwasm`, optionally with `#export`).
pub fn names_a_file(what: &str) -> bool {
    let (path, _) = split_file_export(what);
    let p = path.to_string_lossy();
    path.exists()
        || p.starts_with('/')
        || p.starts_with("./")
        || p.starts_with("../")
        || [".wasm", ".wat", ".cwasm"].iter().any(|e| p.ends_with(e))
}

/// Finds the image (loading an `oci:DIR` layout first) and writes its bundle to a temp dir.
pub fn image_to_bundle(
    opts: &StoreOptions,
    what: &str,
    scratch: &Path,
) -> Result<tempfile::TempDir> {
    let store = opts.open()?;
    let name = if let Some(dir) = what.strip_prefix("oci:") {
        let names = wasmbox_images::archive::load(&store, Path::new(dir), None)?;
        names
            .into_iter()
            .next()
            .with_context(|| format!("{dir} holds no image"))?
    } else {
        let name = local_name(&store, what)
            .with_context(|| format!("{what:?} is neither a file nor an image reference"))?;
        if store.resolve(&name).is_err() {
            opts.pull(&store, &name)?;
        }
        name
    };
    let image = wasmbox_images::Image::open(&store, &name)?;
    bundle_of(&store, &image, scratch, "wasmbox-run-")
}

/// Writes `image`'s bundle into a private directory of `scratch`'s `bundles/`, named
/// `PREFIX<pid>-…` (a prefix [`wasmbox_runtime::sweep_stale`] knows), removed when the result is
/// dropped or the process is signalled; what processes that are gone left there is swept first.
pub fn bundle_of(
    store: &wasmbox_images::Store,
    image: &wasmbox_images::Image,
    scratch: &Path,
    prefix: &str,
) -> Result<tempfile::TempDir> {
    let bundles = super::scratch::private_dir(&scratch.join("bundles"))?;
    wasmbox_runtime::sweep_stale(&bundles);
    let dir = tempfile::Builder::new()
        .prefix(&wasmbox_runtime::scratch_prefix(prefix))
        .tempdir_in(&bundles)
        .context("creating a bundle directory")?;
    crate::signals::remove_on_signal(dir.path().to_path_buf());
    image.write_bundle(store, dir.path(), &mut Default::default())?;
    Ok(dir)
}

/// `file.wasm#export` → (`file.wasm`, `export`), unless a file with the whole name exists.
pub fn split_file_export(arg: &str) -> (PathBuf, Option<String>) {
    if Path::new(arg).exists() {
        return (PathBuf::from(arg), None);
    }
    let (p, e) = Policy::split_export(arg);
    (PathBuf::from(p), e.map(str::to_string))
}
