//! The serving certificate: loaded at start, and swapped in place when the files change.
//!
//! Kubernetes updates a mounted Secret by pointing a `..data` symlink at a new directory in one
//! rename; file watchers on the paths miss that. So the files' bytes are read again every
//! `POLL_INTERVAL` and compared with what was last seen: a change is loaded and, if the new
//! pair is good, served to the next TLS handshake. A broken pair (half-written, or a key that
//! does not match) keeps the old certificate and is reported once.
//!
//! The certificate and the key are two reads: a swap between them gives the old certificate with
//! the new key. Such a mismatch is read again at once (up to [`MISMATCH_RETRIES`] times) before
//! it counts as a broken pair. The served certificate's expiry (the leaf's notAfter) is kept
//! beside it, for the expiry gauge and warnings ([`expiry`]).

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
/// How often a key that does not match its certificate is read again at once, both files, before
/// the pair counts as broken: a `..data` symlink swap between the two reads tears the pair.
pub const MISMATCH_RETRIES: usize = 3;
/// A certificate expiring within this much time is warned about (at load, reload and daily).
pub const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 24 * 3600);

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

/// The bytes of both files, as read one after the other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contents {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

impl Contents {
    /// Reads the certificate, then the key.
    pub fn read(paths: &CertPaths) -> Result<Contents, TlsError> {
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
    ) -> Result<Served, TlsError> {
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
        let not_after = not_after(&certified.cert[0]);
        Ok(Served {
            key: Arc::new(certified),
            not_after,
        })
    }
}

/// The leaf's notAfter as Unix seconds; `None` if x509-parser cannot read it (rustls took the
/// certificate, so it is served all the same).
fn not_after(leaf: &CertificateDer<'_>) -> Option<i64> {
    x509_parser::parse_x509_certificate(leaf)
        .ok()
        .map(|(_, cert)| cert.validity().not_after.timestamp())
}

/// A pair that can be served, with its expiry.
struct Served {
    key: Arc<CertifiedKey>,
    not_after: Option<i64>,
}

/// What reading the pair gave.
enum Read {
    /// A file could not be read.
    Unreadable(TlsError),
    /// The bytes are those last seen.
    Seen,
    /// New bytes, and whether they can be served.
    New(Contents, Result<Served, TlsError>),
}

/// Reads the pair with `read` and builds the served key from it. A key that does not match
/// its certificate is read again at once, both files, up to [`MISMATCH_RETRIES`] times: a
/// Secret update swaps a `..data` symlink, and a swap between the two reads gives the old
/// certificate with the new key, a pair that never was on disk. Only a mismatch that lasts
/// (a torn write, a wrong key) is returned. `seen` is the pair last looked at: bytes equal to
/// it are not parsed again.
fn read_pair(
    paths: &CertPaths,
    provider: &CryptoProvider,
    seen: Option<&Contents>,
    mut read: impl FnMut(&CertPaths) -> Result<Contents, TlsError>,
) -> Read {
    let mut retries = 0;
    loop {
        let contents = match read(paths) {
            Ok(contents) => contents,
            Err(e) => return Read::Unreadable(e),
        };
        if seen == Some(&contents) {
            return Read::Seen;
        }
        match contents.certified_key(paths, provider) {
            Err(TlsError::Mismatch { .. }) if retries < MISMATCH_RETRIES => {
                retries += 1;
                tracing::debug!(
                    retries,
                    "certificate and key read do not match (a swap between the reads?); reading both again"
                );
            }
            result => return Read::New(contents, result),
        }
    }
}

/// How close a certificate is to its notAfter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// More than [`EXPIRY_WARNING`] left.
    Valid,
    /// Expires within [`EXPIRY_WARNING`]: so many whole days left.
    Soon { days_left: i64 },
    /// Past its notAfter: clients (the API server) refuse it.
    Expired,
}

/// Where `not_after` (Unix seconds) stands at `now` (Unix seconds).
pub fn expiry(not_after: i64, now: i64) -> Expiry {
    let left = not_after.saturating_sub(now);
    if left <= 0 {
        Expiry::Expired
    } else if left < EXPIRY_WARNING.as_secs() as i64 {
        Expiry::Soon {
            days_left: left / 86_400,
        }
    } else {
        Expiry::Valid
    }
}

/// A rustls certificate resolver whose certificate can be replaced while serving. Every
/// handshake takes the pair current at that moment; connections already open keep theirs.
pub struct ReloadingResolver {
    current: RwLock<Served>,
}

impl fmt::Debug for ReloadingResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingResolver").finish_non_exhaustive()
    }
}

impl ReloadingResolver {
    fn new(served: Served) -> Self {
        ReloadingResolver {
            current: RwLock::new(served),
        }
    }

    fn replace(&self, served: Served) {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        *current = served;
    }

    /// The served certificate's notAfter (Unix seconds), `None` if it could not be read.
    pub fn not_after(&self) -> Option<i64> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .not_after
    }
}

impl ResolvesServerCert for ReloadingResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        Some(Arc::clone(&current.key))
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
        let (contents, served) = match read_pair(&paths, &provider, None, Contents::read) {
            Read::Unreadable(e) => return Err(e),
            Read::New(contents, served) => (contents, served?),
            Read::Seen => unreachable!("nothing was seen before the first read"),
        };
        Ok(CertReloader {
            resolver: Arc::new(ReloadingResolver::new(served)),
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
        self.poll_with(Contents::read)
    }

    /// [`CertReloader::poll`] with the files read by `read` (called once per attempt, see
    /// [`MISMATCH_RETRIES`]); tests feed it a sequence of reads.
    pub fn poll_with(
        &mut self,
        read: impl FnMut(&CertPaths) -> Result<Contents, TlsError>,
    ) -> Poll {
        match read_pair(&self.paths, &self.provider, self.seen.as_ref(), read) {
            // A file briefly missing mid-rotation: keep serving and look again next time.
            // Reported once per state, like a broken pair.
            Read::Unreadable(e) => match self.seen.take() {
                Some(_) => Poll::Failed(e),
                None => Poll::Unchanged,
            },
            Read::Seen => Poll::Unchanged,
            Read::New(contents, result) => {
                self.seen = Some(contents);
                match result {
                    Ok(served) => {
                        self.resolver.replace(served);
                        Poll::Reloaded
                    }
                    Err(e) => Poll::Failed(e),
                }
            }
        }
    }

    /// Polls every `POLL_INTERVAL` until `stop` resolves, calling `report` on each change.
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
    use crate::cli::certs;
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
        reloader.resolver.current.read().unwrap().key.cert[0].to_vec()
    }

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    /// A Secret volume as the kubelet writes it: `tls.crt` → `..data/tls.crt`, `..data` → a
    /// timestamped directory; `swap` points `..data` at another directory in one rename.
    struct SecretVolume {
        dir: tempfile::TempDir,
        generations: usize,
    }

    impl SecretVolume {
        fn new() -> SecretVolume {
            let volume = SecretVolume {
                dir: tempfile::tempdir().unwrap(),
                generations: 0,
            };
            let root = volume.dir.path();
            for file in [certs::CERT_FILE, certs::KEY_FILE] {
                std::os::unix::fs::symlink(Path::new("..data").join(file), root.join(file))
                    .unwrap();
            }
            volume
        }

        fn paths(&self) -> CertPaths {
            CertPaths {
                cert: self.dir.path().join(certs::CERT_FILE),
                key: self.dir.path().join(certs::KEY_FILE),
            }
        }

        /// Writes a new pair into a new directory and swaps `..data` to it; returns the new
        /// certificate's bytes.
        fn swap(&mut self) -> Vec<u8> {
            self.generations += 1;
            let name = format!("..generation_{}", self.generations);
            let root = self.dir.path();
            std::fs::create_dir(root.join(&name)).unwrap();
            pair(&root.join(&name));
            let staged = root.join("..data_tmp");
            std::os::unix::fs::symlink(&name, &staged).unwrap();
            std::fs::rename(&staged, root.join("..data")).unwrap();
            std::fs::read(root.join(&name).join(certs::CERT_FILE)).unwrap()
        }
    }

    fn leaf_der(pem: &[u8]) -> Vec<u8> {
        CertificateDer::pem_slice_iter(pem)
            .next()
            .unwrap()
            .unwrap()
            .to_vec()
    }

    /// The kubelet swaps the `..data` symlink between the read of the certificate and the
    /// read of the key: the first read is the old certificate with the new key. It is read
    /// again at once and the new pair is served, no failure reported.
    #[test]
    fn a_swap_between_the_two_reads_is_read_again_not_a_failure() {
        let mut volume = SecretVolume::new();
        let first = volume.swap();
        let paths = volume.paths();
        let mut reloader = CertReloader::load(paths.clone(), provider()).unwrap();
        assert_eq!(served(&reloader), leaf_der(&first));

        let mut reads = 0;
        let mut second = Vec::new();
        let polled = reloader.poll_with(|paths| {
            reads += 1;
            let cert = std::fs::read(&paths.cert).unwrap();
            if reads == 1 {
                second = volume.swap();
            }
            let key = std::fs::read(&paths.key).unwrap();
            Ok(Contents { cert, key })
        });
        assert!(matches!(polled, Poll::Reloaded), "{polled:?}");
        assert_eq!(reads, 2, "one torn read, one good one");
        assert_eq!(served(&reloader), leaf_der(&second));
        assert!(matches!(reloader.poll(), Poll::Unchanged));
    }

    /// A torn pair that lasts (the key of another certificate) is read 1 + MISMATCH_RETRIES
    /// times, then reported once as a mismatch; the served pair stays.
    #[test]
    fn a_mismatch_that_lasts_is_retried_a_bounded_number_of_times_then_reported() {
        let mut volume = SecretVolume::new();
        let first = volume.swap();
        let paths = volume.paths();
        let mut reloader = CertReloader::load(paths.clone(), provider()).unwrap();
        let old_cert = std::fs::read(&paths.cert).unwrap();
        volume.swap();
        let new_key = std::fs::read(&paths.key).unwrap();

        let mut reads = 0;
        let torn = |_: &CertPaths| {
            Ok(Contents {
                cert: old_cert.clone(),
                key: new_key.clone(),
            })
        };
        let polled = reloader.poll_with(|p| {
            reads += 1;
            torn(p)
        });
        assert!(
            matches!(polled, Poll::Failed(TlsError::Mismatch { .. })),
            "{polled:?}"
        );
        assert_eq!(reads, 1 + MISMATCH_RETRIES);
        assert_eq!(served(&reloader), leaf_der(&first));
        // The same torn bytes again: already reported, read once, not parsed.
        reads = 0;
        let polled = reloader.poll_with(|p| {
            reads += 1;
            torn(p)
        });
        assert!(matches!(polled, Poll::Unchanged), "{polled:?}");
        assert_eq!(reads, 1);
        // The real files (the new pair) are served next.
        assert!(matches!(reloader.poll(), Poll::Reloaded));
    }

    /// A torn read fed as a sequence: torn, torn, then good within the retries.
    #[test]
    fn torn_reads_within_the_retries_end_in_the_good_pair() {
        let dir = tempfile::tempdir().unwrap();
        let old = pair(dir.path());
        let mut reloader = CertReloader::load(old.clone(), provider()).unwrap();
        let (old_cert, old_key) = (
            std::fs::read(&old.cert).unwrap(),
            std::fs::read(&old.key).unwrap(),
        );
        let other = tempfile::tempdir().unwrap();
        let new = pair(other.path());
        let (new_cert, new_key) = (
            std::fs::read(&new.cert).unwrap(),
            std::fs::read(&new.key).unwrap(),
        );
        let mut sequence = vec![
            (old_cert.clone(), new_key.clone()),
            (new_cert.clone(), old_key.clone()),
            (old_cert, new_key.clone()),
            (new_cert.clone(), new_key),
        ]
        .into_iter();
        let polled = reloader.poll_with(|_| {
            let (cert, key) = sequence.next().expect("no more reads than retries");
            Ok(Contents { cert, key })
        });
        assert!(matches!(polled, Poll::Reloaded), "{polled:?}");
        assert_eq!(sequence.len(), 0);
        assert_eq!(served(&reloader), leaf_der(&new_cert));
    }

    #[test]
    fn the_served_certificates_expiry_is_its_not_after() {
        let dir = tempfile::tempdir().unwrap();
        let paths = pair(dir.path()); // valid for 1 day
        let reloader = CertReloader::load(paths, provider()).unwrap();
        let not_after = reloader.resolver().not_after().expect("notAfter read");
        let left = not_after - now();
        assert!((86_400 - 120..=86_400 + 120).contains(&left), "{left}");
        assert!(
            matches!(expiry(not_after, now()), Expiry::Soon { days_left: 0 | 1 }),
            "a certificate of one day expires within the warning"
        );
    }

    #[test]
    fn expiry_is_valid_then_soon_then_expired() {
        let day = 86_400;
        let now = 1_800_000_000;
        assert_eq!(expiry(now + 90 * day, now), Expiry::Valid);
        assert_eq!(expiry(now + 30 * day, now), Expiry::Valid);
        assert_eq!(
            expiry(now + 30 * day - 1, now),
            Expiry::Soon { days_left: 29 }
        );
        assert_eq!(expiry(now + 10, now), Expiry::Soon { days_left: 0 });
        assert_eq!(expiry(now, now), Expiry::Expired);
        assert_eq!(expiry(now - day, now), Expiry::Expired);
        assert_eq!(expiry(i64::MIN, i64::MAX), Expiry::Expired);
        assert_eq!(expiry(i64::MAX, i64::MIN), Expiry::Valid);
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
