//! containerd's content store as a source of blobs ([`wasmbox_images::blobs::Blobs`]): what
//! the image code reads from the local store, it reads here over containerd's gRPC API, streamed
//! and bounded. Called from the worker's thread, it waits on the agent's runtime for each reply.

use std::io::Read;

use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::{InfoRequest, ReadContentRequest, ReadContentResponse};
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::{Code, Request, Status, Streaming};
use wasmbox_images::blobs::Blobs;
use wasmbox_images::{Digest, StoreError};

/// The most bytes a manifest, index or config may have.
const MAX_DOCUMENT: i64 = 4 << 20;

/// The content of one containerd namespace.
pub struct Content {
    client: ContentClient<Channel>,
    namespace: String,
    rt: tokio::runtime::Handle,
}

/// A request in `namespace`, as containerd reads it from the metadata.
pub fn in_namespace<T>(namespace: &str, message: T) -> Result<Request<T>, Status> {
    let mut r = Request::new(message);
    let ns = namespace
        .parse()
        .map_err(|_| Status::invalid_argument(format!("namespace {namespace:?}")))?;
    r.metadata_mut().insert("containerd-namespace", ns);
    Ok(r)
}

fn store_err(d: &Digest, status: Status) -> StoreError {
    if status.code() == Code::NotFound {
        return StoreError::MissingBlob { digest: d.clone() };
    }
    StoreError::Io {
        op: "reading from containerd",
        path: d.to_string(),
        source: std::io::Error::other(status.message().to_string()),
    }
}

impl Content {
    /// The content of `namespace` over `channel`.
    pub fn new(channel: Channel, namespace: &str, rt: tokio::runtime::Handle) -> Self {
        Self {
            client: ContentClient::new(channel),
            namespace: namespace.to_string(),
            rt,
        }
    }

    fn stream(&self, d: &Digest) -> Result<Streaming<ReadContentResponse>, Status> {
        let mut client = self.client.clone();
        let req = in_namespace(
            &self.namespace,
            ReadContentRequest {
                digest: d.to_string(),
                offset: 0,
                size: 0,
            },
        )?;
        self.rt.block_on(client.read(req)).map(|r| r.into_inner())
    }

    fn size(&self, d: &Digest) -> Result<i64, Status> {
        let mut client = self.client.clone();
        let req = in_namespace(
            &self.namespace,
            InfoRequest {
                digest: d.to_string(),
            },
        )?;
        let info = self.rt.block_on(client.info(req))?.into_inner().info;
        Ok(info.map_or(0, |i| i.size))
    }
}

impl Blobs for Content {
    fn read_blob(&self, d: &Digest) -> Result<Vec<u8>, StoreError> {
        let size = self.size(d).map_err(|s| store_err(d, s))?;
        if size > MAX_DOCUMENT {
            return Err(StoreError::Malformed {
                what: format!("blob {d}"),
                reason: format!("{size} bytes, more than a document may have ({MAX_DOCUMENT})"),
            });
        }
        let mut bytes = Vec::new();
        self.open_blob(d)?
            .take(MAX_DOCUMENT as u64)
            .read_to_end(&mut bytes)
            .map_err(|source| StoreError::Io {
                op: "reading from containerd",
                path: d.to_string(),
                source,
            })?;
        let actual = Digest::of(&bytes);
        if actual != *d {
            return Err(StoreError::DigestMismatch {
                expected: d.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    fn open_blob(&self, d: &Digest) -> Result<Box<dyn Read + '_>, StoreError> {
        let stream = self.stream(d).map_err(|s| store_err(d, s))?;
        Ok(Box::new(Reader {
            stream,
            rt: &self.rt,
            chunk: Vec::new(),
            at: 0,
        }))
    }
}

/// A blob's bytes as they arrive.
struct Reader<'a> {
    stream: Streaming<ReadContentResponse>,
    rt: &'a tokio::runtime::Handle,
    chunk: Vec<u8>,
    at: usize,
}

impl Read for Reader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.chunk.len() {
            match self.rt.block_on(self.stream.message()) {
                Ok(Some(m)) => {
                    self.chunk = m.data;
                    self.at = 0;
                }
                Ok(None) => return Ok(0),
                Err(s) => return Err(std::io::Error::other(s.message().to_string())),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
