//! TLS on a listener (rustls, ring): a certificate chain and its key read
//! from PEM files, offered with ALPN `h2` and `http/1.1` (so a browser's
//! streams to comet share one HTTP/2 connection), and re-read without a
//! restart: a reload that fails keeps the certificate in use and says why;
//! connections already open keep theirs.
//!
//! Strategy: the server's rustls config resolves its certificate through
//! [`Certificates`], which holds the current `CertifiedKey` behind a lock
//! that a handshake takes only to clone an `Arc`; [`Tls::reload`] swaps it.
//! What triggers a reload (SIGHUP, a change of the files) lives with the
//! composition (`app`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

pub use comet_config::manifest::TlsFiles;

/// Why a certificate could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file holds no certificate, or no key, in PEM.
    #[error("{path} holds no {what} in PEM")]
    Missing {
        /// The file.
        path: PathBuf,
        /// `certificate` or `private key`.
        what: &'static str,
    },
    /// A PEM block does not decode.
    #[error("{path} is not valid PEM: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The key is not one rustls can sign with, or not the certificate's.
    #[error("the key in {key} does not go with the certificate in {cert}: {reason}")]
    Key {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's account.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// The certificate a listener offers now.
#[derive(Debug)]
struct Certificates {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

/// A listener's TLS: the acceptor, and the certificate it can reload.
pub struct Tls {
    files: TlsFiles,
    certificates: Arc<Certificates>,
    /// What the files held when last loaded.
    loaded: std::sync::Mutex<Digest>,
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

/// What a reload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reloaded {
    /// New connections get the certificate the files hold now.
    Changed,
    /// The files hold what is in use already.
    Unchanged,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// What two readings of the files are compared by.
type Digest = u64;

fn digest(cert: &[u8], key: &[u8]) -> Digest {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    (cert, key).hash(&mut h);
    h.finish()
}

/// Read and check the certificate chain and key of `files`.
fn load(files: &TlsFiles, provider: &CryptoProvider) -> Result<(CertifiedKey, Digest), TlsError> {
    let pem = |path: &Path, reason: rustls::pki_types::pem::Error| TlsError::Pem {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let cert_bytes = read(&files.cert)?;
    let chain = CertificateDer::pem_slice_iter(&cert_bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem(&files.cert, e))?;
    if chain.is_empty() {
        return Err(TlsError::Missing {
            path: files.cert.clone(),
            what: "certificate",
        });
    }
    let key_bytes = read(&files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::Missing {
            path: files.key.clone(),
            what: "private key",
        },
        e => pem(&files.key, e),
    })?;
    let certified = CertifiedKey::from_der(chain, key, provider).map_err(|e| TlsError::Key {
        cert: files.cert.clone(),
        key: files.key.clone(),
        reason: e.to_string(),
    })?;
    // `from_der` lets through a key whose match it cannot tell; a reload
    // must not swap in a key that is not the certificate's.
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(e) => {
            return Err(TlsError::Key {
                cert: files.cert.clone(),
                key: files.key.clone(),
                reason: e.to_string(),
            });
        }
    }
    Ok((certified, digest(&cert_bytes, &key_bytes)))
}

impl Tls {
    /// TLS with the certificate of `files`, offering `h2` and `http/1.1`.
    pub fn new(files: TlsFiles) -> Result<Arc<Tls>, TlsError> {
        let provider = provider();
        let (certified, loaded) = load(&files, &provider)?;
        let certificates = Arc::new(Certificates {
            current: RwLock::new(Arc::new(certified)),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(certificates.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        // Stateless resumption: a client reconnecting (as real-time clients
        // do, all at once after a restart) skips the key exchange, and the
        // server keeps nothing per session. The ticket key is this
        // process's own, rotated by rustls.
        config.ticketer =
            rustls::crypto::ring::Ticketer::new().map_err(|e| TlsError::Config(e.to_string()))?;
        Ok(Arc::new(Tls {
            files,
            certificates,
            loaded: std::sync::Mutex::new(loaded),
            acceptor: TlsAcceptor::from(Arc::new(config)),
        }))
    }

    /// The handshake side of new connections.
    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// The files the certificate is read from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Read the files again and offer their certificate to new connections
    /// (open ones keep theirs); on an error the one in use stays.
    pub fn reload(&self) -> Result<Reloaded, TlsError> {
        let (certified, digest) = load(&self.files, &provider())?;
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if *loaded == digest {
            return Ok(Reloaded::Unchanged);
        }
        *loaded = digest;
        *self
            .certificates
            .current
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Arc::new(certified);
        Ok(Reloaded::Changed)
    }
}
