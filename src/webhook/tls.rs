//! The serving certificate: loaded at start, and swapped in place when the files change.
//!
//! Kubernetes updates a mounted Secret by pointing a `..data` symlink at a new directory in one
//! rename; file watchers on the paths miss that. So the files' bytes are read again every
//! [`POLL_INTERVAL`] and compared with what was last seen: a change is loaded and, if the new
//! pair is good, served to the next TLS handshake. A broken pair (half-written, or a key that
//! does not match) keeps the old certificate and is reported once.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// How often the certificate and key files are compared with what is served.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Why a certificate/key pair cannot be served. Each message names the file and the fix.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "cannot read the TLS certificate {path}: {source}; pass --tls-cert with a PEM certificate file (`warmpool certs --out DIR` writes one)"
    )]
    ReadCert {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot read the TLS key {path}: {source}; pass --tls-key with the PEM private key of the certificate"
    )]
    ReadKey {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} holds no PEM certificate ({reason}); --tls-cert must be a PEM file starting with -----BEGIN CERTIFICATE-----"
    )]
    NoCert { path: PathBuf, reason: String },
    #[error(
        "{path} holds no PEM private key ({reason}); --tls-key must be a PEM file starting with -----BEGIN PRIVATE KEY----- (or EC/RSA PRIVATE KEY)"
    )]
    NoKey { path: PathBuf, reason: String },
    #[error(
        "the private key {key} does not belong to the certificate {cert} ({reason}); pass the key that was issued with this certificate"
    )]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
}

/// Where the pair lives on disk.
#[derive(Debug, Clone)]
pub struct CertPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The bytes of both files, as last read.
#[derive(PartialEq, Eq)]
struct Contents {
    cert: Vec<u8>,
    key: Vec<u8>,
}

impl Contents {
    fn read(paths: &CertPaths) -> Result<Contents, TlsError> {
        let cert = std::fs::read(&paths.cert).map_err(|source| TlsError::ReadCert {
            path: paths.cert.clone(),
            source,
        })?;
        let key = std::fs::read(&paths.key).map_err(|source| TlsError::ReadKey {
            path: paths.key.clone(),
            source,
        })?;
        Ok(Contents { cert, key })
    }

    fn certified_key(
        &self,
        paths: &CertPaths,
        provider: &CryptoProvider,
    ) -> Result<CertifiedKey, TlsError> {
        let chain = CertificateDer::pem_slice_iter(&self.cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::NoCert {
                path: paths.cert.clone(),
                reason: e.to_string(),
            })?;
        if chain.is_empty() {
            return Err(TlsError::NoCert {
                path: paths.cert.clone(),
                reason: "no CERTIFICATE block".into(),
            });
        }
        let key = PrivateKeyDer::from_pem_slice(&self.key).map_err(|e| TlsError::NoKey {
            path: paths.key.clone(),
            reason: e.to_string(),
        })?;
        let mismatch = |e: rustls::Error| TlsError::Mismatch {
            cert: paths.cert.clone(),
            key: paths.key.clone(),
            reason: e.to_string(),
        };
        let certified = CertifiedKey::from_der(chain, key, provider).map_err(mismatch)?;
        // `from_der` lets an undecidable comparison pass; a ring key always knows its public
        // key, so insist on an answer.
        certified.keys_match().map_err(mismatch)?;
        Ok(certified)
    }
}

/// A rustls certificate resolver whose certificate can be replaced while serving. Every
/// handshake takes the pair current at that moment; connections already open keep theirs.
pub struct ReloadingResolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl fmt::Debug for ReloadingResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingResolver").finish_non_exhaustive()
    }
}

impl ReloadingResolver {
    fn new(key: CertifiedKey) -> Self {
        ReloadingResolver {
            current: RwLock::new(Arc::new(key)),
        }
    }

    fn replace(&self, key: CertifiedKey) {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        *current = Arc::new(key);
    }
}

impl ResolvesServerCert for ReloadingResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        Some(Arc::clone(&current))
    }
}

/// What one poll found.
#[derive(Debug)]
pub enum Poll {
    /// The files are as last seen.
    Unchanged,
    /// New files, now served.
    Reloaded,
    /// New files that cannot be served; the previous pair stays.
    Failed(TlsError),
}

/// Loads the pair and keeps the resolver up to date with the files.
pub struct CertReloader {
    paths: CertPaths,
    provider: Arc<CryptoProvider>,
    resolver: Arc<ReloadingResolver>,
    /// The bytes last looked at (served or rejected), so that a broken pair is reported once;
    /// `None` after a failed read.
    seen: Option<Contents>,
}

impl fmt::Debug for CertReloader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertReloader")
            .field("paths", &self.paths)
            .finish_non_exhaustive()
    }
}

impl CertReloader {
    /// Loads the pair now; an error here means the webhook cannot start.
    pub fn load(paths: CertPaths, provider: Arc<CryptoProvider>) -> Result<Self, TlsError> {
        let contents = Contents::read(&paths)?;
        let key = contents.certified_key(&paths, &provider)?;
        Ok(CertReloader {
            resolver: Arc::new(ReloadingResolver::new(key)),
            paths,
            provider,
            seen: Some(contents),
        })
    }

    pub fn resolver(&self) -> Arc<ReloadingResolver> {
        Arc::clone(&self.resolver)
    }

    /// Reads the files once and swaps the served pair if they changed and are good.
    pub fn poll(&mut self) -> Poll {
        let contents = match Contents::read(&self.paths) {
            Ok(contents) => contents,
            // A file briefly missing mid-rotation: keep serving and look again next time.
            // Reported once per state, like a broken pair.
            Err(e) => {
                return match self.seen.take() {
                    Some(_) => Poll::Failed(e),
                    None => Poll::Unchanged,
                };
            }
        };
        if self.seen.as_ref() == Some(&contents) {
            return Poll::Unchanged;
        }
        let result = contents.certified_key(&self.paths, &self.provider);
        self.seen = Some(contents);
        match result {
            Ok(key) => {
                self.resolver.replace(key);
                Poll::Reloaded
            }
            Err(e) => Poll::Failed(e),
        }
    }

    /// Polls every [`POLL_INTERVAL`] until `stop` resolves, calling `report` on each change.
    pub async fn run(
        mut self,
        mut report: impl FnMut(&Poll, &CertPaths) + Send,
        stop: impl std::future::Future<Output = ()>,
    ) {
        let mut ticks = tokio::time::interval(POLL_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => return,
                _ = ticks.tick() => {}
            }
            // File reads block: do them on the blocking pool, not on an async worker.
            let polled = tokio::task::spawn_blocking(move || {
                let outcome = self.poll();
                (self, outcome)
            })
            .await;
            let outcome;
            (self, outcome) = match polled {
                Ok(polled) => polled,
                // Only a panic in `poll` gets here, and it has none; the served pair stays.
                Err(_) => return,
            };
            if !matches!(outcome, Poll::Unchanged) {
                report(&outcome, &self.paths);
            }
        }
    }
}

/// The rustls server configuration: TLS 1.3 and 1.2 with the ring provider, HTTP/2 and
/// HTTP/1.1 by ALPN, the certificate from `resolver`.
pub fn server_config(
    provider: Arc<CryptoProvider>,
    resolver: Arc<ReloadingResolver>,
) -> Result<rustls::ServerConfig, rustls::Error> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The crypto provider warmpool uses everywhere: ring.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs;
    use std::path::Path;

    fn pair(dir: &Path) -> CertPaths {
        let generated = certs::generate(&certs::Request {
            dns: &["localhost".to_owned()],
            ips: &[],
            days: 1,
        })
        .unwrap();
        certs::write(dir, &generated).unwrap();
        CertPaths {
            cert: dir.join(certs::CERT_FILE),
            key: dir.join(certs::KEY_FILE),
        }
    }

    fn served(reloader: &CertReloader) -> Vec<u8> {
        reloader.resolver.current.read().unwrap().cert[0].to_vec()
    }

    #[test]
    fn start_up_errors_name_the_file_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let paths = pair(dir.path());
        let missing = CertPaths {
            cert: dir.path().join("nope.crt"),
            key: paths.key.clone(),
        };
        let e = CertReloader::load(missing, provider())
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope.crt") && e.contains("--tls-cert"), "{e}");

        let other = tempfile::tempdir().unwrap();
        let other = pair(other.path());
        let mismatched = CertPaths {
            cert: paths.cert.clone(),
            key: other.key,
        };
        let e = CertReloader::load(mismatched, provider()).unwrap_err();
        assert!(matches!(e, TlsError::Mismatch { .. }), "{e}");

        let swapped = CertPaths {
            cert: paths.key.clone(),
            key: paths.cert.clone(),
        };
        let e = CertReloader::load(swapped, provider()).unwrap_err();
        assert!(matches!(e, TlsError::NoCert { .. }), "{e}");
    }

    #[test]
    fn a_good_new_pair_is_served_and_a_broken_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let paths = pair(dir.path());
        let mut reloader = CertReloader::load(paths.clone(), provider()).unwrap();
        let first = served(&reloader);
        assert!(matches!(reloader.poll(), Poll::Unchanged));

        pair(dir.path());
        assert!(matches!(reloader.poll(), Poll::Reloaded));
        let second = served(&reloader);
        assert_ne!(first, second);

        std::fs::write(&paths.key, b"garbage").unwrap();
        assert!(matches!(
            reloader.poll(),
            Poll::Failed(TlsError::NoKey { .. })
        ));
        assert_eq!(served(&reloader), second);
        // Reported once, not every second.
        assert!(matches!(reloader.poll(), Poll::Unchanged));

        std::fs::remove_file(&paths.cert).unwrap();
        assert!(matches!(
            reloader.poll(),
            Poll::Failed(TlsError::ReadCert { .. })
        ));
        assert!(matches!(reloader.poll(), Poll::Unchanged));
        assert_eq!(served(&reloader), second);

        pair(dir.path());
        assert!(matches!(reloader.poll(), Poll::Reloaded));
        assert_ne!(served(&reloader), second);
    }
}
