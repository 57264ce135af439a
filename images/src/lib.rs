//! wasmbox's image handling: the content-addressed store, safe layer unpacking, and (as it grows)
//! registry pull and push, layout import and export, and wasm detection.

pub mod archive;
pub mod blobs;
pub mod build;
pub mod bundle;
pub mod containerfile;
pub mod detect;
pub mod digest;
pub mod entry;
pub mod image;
pub mod oci;
pub mod reference;
pub mod registry;
pub mod store;
pub mod unpack;

pub use digest::Digest;
pub use image::{Image, ImageError};
pub use reference::Reference;
pub use store::{Store, StoreError};
