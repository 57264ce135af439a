//! Where an image's blobs are read from: this crate's store, or another content store (a node's
//! containerd, for `wasmbox agent`). Reading an image ([`crate::Image::open_in`]) and finding its
//! wasm ([`crate::entry`]) go through this, so both read any store alike.

use std::io::Read;

use crate::digest::Digest;
use crate::store::{Store, StoreError};

/// A content-addressed source of blobs.
pub trait Blobs {
    /// A whole blob: a manifest, index or config.
    fn read_blob(&self, d: &Digest) -> Result<Vec<u8>, StoreError>;
    /// A blob to stream: a layer.
    fn open_blob(&self, d: &Digest) -> Result<Box<dyn Read + '_>, StoreError>;
}

impl Blobs for Store {
    fn read_blob(&self, d: &Digest) -> Result<Vec<u8>, StoreError> {
        Store::read_blob(self, d)
    }

    fn open_blob(&self, d: &Digest) -> Result<Box<dyn Read + '_>, StoreError> {
        Ok(Box::new(Store::open_blob(self, d)?))
    }
}
