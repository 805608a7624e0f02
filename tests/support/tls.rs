//! A rustls client that trusts given CA files: how the tests talk to the real webhook.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// Trusts only the certificates in `ca`, offering `alpn` (e.g. `[b"h2"]`).
pub fn client_config(ca: &Path, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    client_config_trusting(&[ca], alpn)
}

/// Trusts only the certificates in the files `cas` (the old CA and the new during a rotation,
/// say), offering `alpn`.
pub fn client_config_trusting(
    cas: &[impl AsRef<Path>],
    alpn: &[&[u8]],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        for cert in CertificateDer::pem_file_iter(ca).expect("CA file") {
            roots
                .add(cert.expect("PEM certificate"))
                .expect("trusted CA");
        }
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}
