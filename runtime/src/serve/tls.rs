//! HTTPS: the server's certificate chain and key, read from PEM files (the host's, or the
//! guest's beneath its grants), offered with ALPN `h2` and `http/1.1`, and read again on SIGHUP.
//! A reload changes what new handshakes get; connections already open go on as they were. A
//! reload that fails keeps the certificate in use and says why.

use std::os::unix::fs::OpenOptionsExt as _;
use std::sync::{Arc, RwLock};

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;

use crate::filesystem::Filesystem;
use crate::policy::{MAX_TLS_FILE, TlsFiles};

/// The certificate new handshakes get; replaced whole by a reload.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().expect("certificate lock").clone())
    }
}

/// A server's TLS: its acceptor and where its certificate comes from.
pub(super) struct Tls {
    pub(super) acceptor: TlsAcceptor,
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: Arc<Current>,
}

impl Tls {
    /// Loads the certificate and key `files` name; the error names the file and what is wrong.
    pub(super) fn load(files: &TlsFiles, fs: &Filesystem) -> Result<Self, String> {
        // One provider named here: the process links more than one.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = certified(files, fs, &provider)?;
        let current = Arc::new(Current(RwLock::new(Arc::new(key))));
        let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS versions: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            files: files.clone(),
            provider,
            current,
        })
    }

    /// Reads the files again: new handshakes get what they now hold. On error the certificate
    /// in use stays.
    pub(super) fn reload(&self, fs: &Filesystem) -> Result<(), String> {
        let key = certified(&self.files, fs, &self.provider)?;
        *self.current.0.write().expect("certificate lock") = Arc::new(key);
        Ok(())
    }

    /// What the readiness and reload lines call the certificate.
    pub(super) fn describe(&self) -> String {
        let whose = if self.files.in_guest {
            "the container's "
        } else {
            ""
        };
        format!("{whose}{}", self.files.cert.display())
    }
}

/// The chain and key `files` name, checked to belong together.
fn certified(
    files: &TlsFiles,
    fs: &Filesystem,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, String> {
    let read = |path: &std::path::Path, what: &str| -> Result<Vec<u8>, String> {
        let bytes = if files.in_guest {
            fs.read_file(&path.to_string_lossy(), MAX_TLS_FILE)
        } else {
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
                .open(path)
                .and_then(|f| crate::filesystem::read_regular(f, MAX_TLS_FILE))
        };
        bytes.map_err(|e| format!("TLS {what} {}: {e}", path.display()))
    };
    let cert_pem = read(&files.cert, "certificate")?;
    let key_pem = read(&files.key, "key")?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("TLS certificate {}: {e}", files.cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "TLS certificate {}: no PEM CERTIFICATE in it",
            files.cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        format!(
            "TLS key {}: no PEM private key in it ({e})",
            files.key.display()
        )
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| {
        format!(
            "TLS key {} does not go with certificate {}: {e}",
            files.key.display(),
            files.cert.display()
        )
    })
}
