//! Registry pull with oci-client: manifests (and indexes, choosing the wasm or host platform),
//! config and layers, each verified against its digest on the way into the store; blobs already
//! stored are skipped. Plain HTTP is used only for loopback registries and ones named insecure.

use std::net::IpAddr;
use std::path::PathBuf;

use base64::Engine as _;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;

use crate::digest::{BadDigest, Digest};
use crate::image::choose_platform;
use crate::oci::Document;
use crate::reference::Reference;
use crate::store::{Descriptor, Store, StoreError};

const ACCEPTED: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// How to reach registries.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Registries (host or host:port) that may be reached over plain HTTP.
    pub insecure: Vec<String>,
    /// Credentials file (default `$REGISTRY_AUTH_FILE`, else `$DOCKER_CONFIG/config.json` or
    /// `~/.docker/config.json`).
    pub auth_file: Option<PathBuf>,
}

/// Hears how a transfer goes, blob by blob.
pub trait Progress: Sync {
    /// A blob of `size` bytes starts.
    fn started(&self, digest: &str, size: u64);
    /// `n` more bytes of it arrived.
    fn advanced(&self, digest: &str, n: u64);
    /// It is done (`note`: "already present", "N bytes", "manifest").
    fn done(&self, digest: &str, note: &str);
}

/// Writes into a blob and tells `Progress` how much.
struct Tracked<'a, 'b> {
    w: &'a mut crate::store::BlobWriter<'b>,
    p: &'a dyn Progress,
    digest: &'a str,
}

impl tokio::io::AsyncWrite for Tracked<'_, '_> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let r = std::pin::Pin::new(&mut *this.w).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = &r {
            this.p.advanced(this.digest, *n as u64);
        }
        r
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut *self.w).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut *self.w).poll_shutdown(cx)
    }
}

/// Why a pull failed, naming the image and, where there is one, the blob.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The registry refused or failed a request.
    #[error("pulling {image}{}: {reason}", blob.as_ref().map(|b| format!(", blob {b}")).unwrap_or_default())]
    Registry {
        /// The image.
        image: String,
        /// The blob, when the failure was about one.
        blob: Option<String>,
        /// What the registry or the connection said.
        reason: String,
    },
    /// What came back does not match its digest or does not parse.
    #[error("pulling {image}: {reason}")]
    Invalid {
        /// The image.
        image: String,
        /// What is wrong.
        reason: String,
    },
    /// Storing failed (including a blob that does not match its digest).
    #[error("pulling {image}")]
    Store {
        /// The image.
        image: String,
        /// Why.
        #[source]
        source: StoreError,
    },
}

fn is_loopback(registry: &str) -> bool {
    let host = registry
        .rsplit_once(':')
        .filter(|(_, p)| p.chars().all(|c| c.is_ascii_digit()))
        .map_or(registry, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A docker-style auth file (`config.json`): credentials by registry.
#[derive(serde::Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: std::collections::HashMap<String, AuthEntry>,
}

/// One registry's credentials: `user:password` in base64, or a bearer token.
#[derive(serde::Deserialize)]
struct AuthEntry {
    auth: Option<String>,
    registrytoken: Option<String>,
}

/// Credentials for `registry` from a docker-style auth file, anonymous when there are none.
pub fn auth_for(registry: &str, opts: &RegistryOptions) -> RegistryAuth {
    let file = opts
        .auth_file
        .clone()
        .or_else(|| std::env::var_os("REGISTRY_AUTH_FILE").map(PathBuf::from))
        .or_else(|| std::env::var_os("DOCKER_CONFIG").map(|d| PathBuf::from(d).join("config.json")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json")));
    let Some(auths) = file
        .and_then(|f| std::fs::read(f).ok())
        .and_then(|b| serde_json::from_slice::<AuthFile>(&b).ok())
        .map(|f| f.auths)
    else {
        return RegistryAuth::Anonymous;
    };
    let keys = if registry == "docker.io" {
        vec![
            "https://index.docker.io/v1/",
            "docker.io",
            "index.docker.io",
        ]
    } else {
        vec![registry]
    };
    for entry in keys.iter().filter_map(|k| auths.get(*k)) {
        if let Some(b64) = &entry.auth
            && let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b64)
            && let Ok(s) = String::from_utf8(raw)
            && let Some((u, p)) = s.split_once(':')
        {
            return RegistryAuth::Basic(u.to_string(), p.to_string());
        }
        if let Some(tok) = &entry.registrytoken {
            return RegistryAuth::Bearer(tok.clone());
        }
    }
    RegistryAuth::Anonymous
}

fn client_for(r: &Reference, opts: &RegistryOptions) -> oci_client::Client {
    let mut plain = opts.insecure.clone();
    if is_loopback(&r.registry) {
        plain.push(r.registry.clone());
    }
    oci_client::Client::new(ClientConfig {
        protocol: ClientProtocol::HttpsExcept(plain),
        ..Default::default()
    })
}

fn oci_ref(r: &Reference, digest: Option<&str>) -> oci_client::Reference {
    match (
        digest
            .map(str::to_string)
            .or_else(|| r.digest.as_ref().map(|d| d.to_string())),
        &r.tag,
    ) {
        (Some(d), _) => {
            oci_client::Reference::with_digest(r.registry.clone(), r.repository.clone(), d)
        }
        (None, Some(t)) => {
            oci_client::Reference::with_tag(r.registry.clone(), r.repository.clone(), t.clone())
        }
        (None, None) => oci_client::Reference::with_tag(
            r.registry.clone(),
            r.repository.clone(),
            "latest".into(),
        ),
    }
}

/// Pulls `r` into `store` and names it by its canonical reference, which is returned.
/// `progress` hears one line per blob fetched or skipped.
pub async fn pull(
    store: &Store,
    r: &Reference,
    opts: &RegistryOptions,
    progress: &dyn Progress,
) -> Result<String, PullError> {
    let image = r.to_string();
    let client = client_for(r, opts);
    let auth = auth_for(&r.registry, opts);
    let reg =
        |blob: Option<&str>, e: oci_client::errors::OciDistributionError| PullError::Registry {
            image: image.clone(),
            blob: blob.map(str::to_string),
            reason: e.to_string(),
        };
    let invalid = |reason: String| PullError::Invalid {
        image: image.clone(),
        reason,
    };
    let serr = |source| PullError::Store {
        image: image.clone(),
        source,
    };
    let _keep = store.keep_blobs().map_err(serr)?;
    let top_ref = oci_ref(r, None);
    let (top_bytes, _) = client
        .pull_manifest_raw(&top_ref, &auth, ACCEPTED)
        .await
        .map_err(|e| reg(None, e))?;
    let top_digest = Digest::of(&top_bytes);
    if let Some(want) = &r.digest
        && *want != top_digest
    {
        return Err(invalid(format!(
            "manifest hashes to {top_digest}, not {want}"
        )));
    }
    let top = Document::parse(&top_bytes)
        .map_err(|e| invalid(format!("manifest {top_digest} is malformed: {e}")))?;
    let top_type = top.media_type().unwrap_or(ACCEPTED[0].to_string());
    let (manifest, manifest_bytes, manifest_digest) = match top {
        Document::Index(index) => {
            let pick = choose_platform(index.manifests())
                .ok_or_else(|| invalid("the index has no wasm or host-platform manifest".into()))?;
            let want = crate::oci::digest(pick).map_err(|e| invalid(e.to_string()))?;
            let d = want.to_string();
            let (bytes, _) = client
                .pull_manifest_raw(&oci_ref(r, Some(&d)), &auth, ACCEPTED)
                .await
                .map_err(|e| reg(Some(&d), e))?;
            if Digest::of(&bytes) != want {
                return Err(invalid(format!(
                    "manifest {want} does not match its digest"
                )));
            }
            let manifest = match Document::parse(&bytes) {
                Ok(Document::Manifest(m)) => *m,
                Ok(Document::Index(_) | Document::Artifact(_)) => {
                    return Err(invalid(format!("manifest {want} is not an image manifest")));
                }
                Err(e) => return Err(invalid(format!("manifest {want} is malformed: {e}"))),
            };
            (manifest, bytes.to_vec(), want)
        }
        Document::Manifest(m) => (*m, top_bytes.to_vec(), top_digest.clone()),
        Document::Artifact(_) => {
            return Err(invalid(format!(
                "manifest {top_digest} is an artifact manifest, which names blobs, not an image"
            )));
        }
    };
    let blobs: Vec<(Digest, u64)> = std::iter::once(manifest.config())
        .chain(manifest.layers())
        .map(|d| Ok((crate::oci::digest(d)?, d.size())))
        .collect::<Result<_, BadDigest>>()
        .map_err(|e| invalid(e.to_string()))?;
    for (d, size) in &blobs {
        let b = &d.to_string();
        if store.has_blob(d) {
            progress.done(b, "already present");
            continue;
        }
        progress.started(b, *size);
        // Streamed to a temp file in the store, hashed on the way, renamed in only if it matches.
        let mut w = store.blob_writer().map_err(serr)?;
        let tracked = Tracked {
            w: &mut w,
            p: progress,
            digest: b,
        };
        client
            .pull_blob(&top_ref, b.as_str(), tracked)
            .await
            .map_err(|e| reg(Some(b), e))?;
        let n = w.commit(d).map_err(serr)?;
        progress.done(b, &format!("{n} bytes"));
    }
    // The manifest (and index) last, so a reference only ever points at complete content.
    store
        .put_blob(&manifest_digest, &manifest_bytes[..])
        .map_err(serr)?;
    store.put_blob(&top_digest, &top_bytes[..]).map_err(serr)?;
    store
        .set_ref(
            &image,
            Descriptor {
                media_type: top_type,
                digest: top_digest.to_string(),
                size: top_bytes.len() as u64,
                annotations: Default::default(),
                extra: Default::default(),
            },
        )
        .map_err(serr)?;
    Ok(image)
}

/// Pushes `name` from the store to `dest`: blobs first, then child manifests, then the top
/// manifest, so the registry never names incomplete content.
pub async fn push(
    store: &Store,
    name: &str,
    dest: &Reference,
    opts: &RegistryOptions,
    progress: &dyn Progress,
) -> Result<(), PullError> {
    let image = dest.to_string();
    let client = client_for(dest, opts);
    let auth = auth_for(&dest.registry, opts);
    let reg =
        |blob: Option<&str>, e: oci_client::errors::OciDistributionError| PullError::Registry {
            image: image.clone(),
            blob: blob.map(str::to_string),
            reason: e.to_string(),
        };
    let serr = |source| PullError::Store {
        image: image.clone(),
        source,
    };
    let target = oci_ref(dest, None);
    client
        .auth(&target, &auth, oci_client::RegistryOperation::Push)
        .await
        .map_err(|e| reg(None, e))?;
    let top = store.resolve(name).map_err(serr)?;
    // Depth-first, each digest once: every document after the blobs and documents it names.
    let mut read = |digest: &str| -> Result<Vec<String>, PullError> {
        let Ok(d) = digest.parse::<Digest>() else {
            return Ok(Vec::new());
        };
        let bytes = store.read_blob(&d).map_err(serr)?;
        Ok(crate::oci::referenced_digests(&bytes))
    };
    let order = crate::store::walk_graph(&top.digest, &mut read, &|reason| PullError::Invalid {
        image: image.clone(),
        reason,
    })?;
    let mut items = Vec::new();
    for digest in order {
        let Ok(d) = digest.parse::<Digest>() else {
            continue;
        };
        let doc = Document::sniff(&store.read_blob(&d).map_err(serr)?);
        let mt = doc.as_ref().and_then(Document::media_type);
        items.push((digest, doc.is_some(), mt));
    }
    for (digest, is_doc, mt) in &items {
        let d: Digest = digest.parse().map_err(|e: BadDigest| PullError::Invalid {
            image: image.clone(),
            reason: e.to_string(),
        })?;
        let bytes = store.read_blob(&d).map_err(serr)?;
        if *is_doc {
            let content_type = mt.clone().unwrap_or_else(|| top.media_type.clone());
            let reference = if *digest == top.digest {
                target.clone()
            } else {
                oci_ref(dest, Some(digest))
            };
            let ct = content_type.parse().map_err(|_| PullError::Invalid {
                image: image.clone(),
                reason: format!("media type {content_type:?}"),
            })?;
            client
                .push_manifest_raw(&reference, bytes, ct)
                .await
                .map_err(|e| reg(Some(digest), e))?;
            progress.done(digest, "manifest");
        } else {
            let n = bytes.len();
            progress.started(digest, n as u64);
            client
                .push_blob(&target, bytes, digest)
                .await
                .map_err(|e| reg(Some(digest), e))?;
            progress.done(digest, &format!("{n} bytes"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries_may_use_http() {
        for r in [
            "127.0.0.1:5000",
            "localhost",
            "localhost:5000",
            "[::1]:5000",
            "127.1.2.3",
        ] {
            assert!(is_loopback(r), "{r}");
        }
        for r in [
            "docker.io",
            "10.0.0.1:5000",
            "example.com:443",
            "localhost.example.com",
        ] {
            assert!(!is_loopback(r), "{r}");
        }
    }

    #[test]
    fn credentials_from_an_auth_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("auth.json");
        let auth = base64::engine::general_purpose::STANDARD.encode("user:pa:ss");
        std::fs::write(&f, format!(r#"{{"auths": {{"127.0.0.1:5000": {{"auth": "{auth}"}}, "https://index.docker.io/v1/": {{"auth": "{auth}"}}}}}}"#)).unwrap();
        let opts = RegistryOptions {
            auth_file: Some(f),
            ..Default::default()
        };
        assert!(
            matches!(auth_for("127.0.0.1:5000", &opts), RegistryAuth::Basic(u, p) if u == "user" && p == "pa:ss")
        );
        assert!(matches!(
            auth_for("docker.io", &opts),
            RegistryAuth::Basic(..)
        ));
        assert!(matches!(
            auth_for("ghcr.io", &opts),
            RegistryAuth::Anonymous
        ));
    }
}
