//! `warmpool certs`, run as a user runs it: the files it writes, the caBundle it prints, and a
//! serving certificate that a real TLS verifier (webpki, as rustls uses it) accepts for exactly
//! the names and addresses asked for.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use base64::Engine as _;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

fn certs(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_warmpool"))
        .arg("certs")
        .args(args)
        .output()
        .expect("run warmpool certs")
}

fn generate(out: &Path, names: &[&str]) -> Output {
    let mut args = vec!["--out", out.to_str().unwrap()];
    for name in names {
        let flag = if name.parse::<std::net::IpAddr>().is_ok() {
            "--ip"
        } else {
            "--dns"
        };
        args.extend([flag, name]);
    }
    let output = certs(&args);
    assert!(
        output.status.success(),
        "warmpool certs failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn verifier(ca_pem: &Path) -> Arc<WebPkiServerVerifier> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .unwrap()
}

fn serving_cert(dir: &Path) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(dir.join("tls.crt")).unwrap()
}

fn accepts(verifier: &WebPkiServerVerifier, cert: &CertificateDer<'_>, name: &str) -> bool {
    let name = ServerName::try_from(name.to_owned()).unwrap();
    verifier
        .verify_server_cert(cert, &[], &name, &[], UnixTime::now())
        .is_ok()
}

#[test]
fn writes_the_three_files_and_prints_the_ca_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("new/certs");
    let output = generate(&out, &["localhost", "127.0.0.1"]);

    let ca = std::fs::read(out.join("ca.crt")).unwrap();
    assert!(ca.starts_with(b"-----BEGIN CERTIFICATE-----"));
    assert!(
        std::fs::read(out.join("tls.crt"))
            .unwrap()
            .starts_with(b"-----BEGIN CERTIFICATE-----")
    );
    assert!(
        std::fs::read(out.join("tls.key"))
            .unwrap()
            .starts_with(b"-----BEGIN PRIVATE KEY-----")
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(out.join("tls.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "tls.key must be private");
    }

    // stdout is exactly the caBundle: one line of base64 that decodes to ca.crt.
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let bundle = base64::engine::general_purpose::STANDARD
        .decode(stdout.trim_end())
        .unwrap();
    assert_eq!(bundle, ca);
    // stderr is a one-line summary naming the directory.
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(out.to_str().unwrap()), "{stderr}");

    // A second run replaces the pair (a new CA), and leaves no temporary files behind.
    generate(&out, &["localhost"]);
    assert_ne!(std::fs::read(out.join("ca.crt")).unwrap(), ca);
    let mut names: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["ca.crt", "tls.crt", "tls.key"]);
}

#[test]
fn the_serving_certificate_has_the_names_asked_for_and_chains_to_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    generate(
        dir.path(),
        &["localhost", "warmpool.warmpool.svc", "127.0.0.1", "::1"],
    );
    let verifier = verifier(&dir.path().join("ca.crt"));
    let cert = serving_cert(dir.path());
    for name in ["localhost", "warmpool.warmpool.svc", "127.0.0.1", "::1"] {
        assert!(accepts(&verifier, &cert, name), "not valid for {name}");
    }
    for name in ["example.com", "warmpool.other.svc", "10.0.0.1"] {
        assert!(!accepts(&verifier, &cert, name), "valid for {name}");
    }

    // Another run's CA does not vouch for this certificate.
    let other = tempfile::tempdir().unwrap();
    generate(other.path(), &["localhost"]);
    let other_verifier = verifier_for(other.path());
    assert!(!accepts(&other_verifier, &cert, "localhost"));
}

fn verifier_for(dir: &Path) -> Arc<WebPkiServerVerifier> {
    verifier(&dir.join("ca.crt"))
}

#[test]
fn bad_arguments_fail_with_a_one_line_reason() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let a_file = dir.path().join("a-file");
    std::fs::write(&a_file, b"").unwrap();
    let cases: [(&[&str], &str); 4] = [
        (
            &["--out", out, "--dns", "localhost", "--days", "0"],
            "--days",
        ),
        (
            &["--out", out, "--dns", "localhost", "--days", "100000"],
            "--days",
        ),
        (&["--out", out, "--dns", "not a name"], "--dns `not a name`"),
        (
            &["--out", a_file.to_str().unwrap(), "--dns", "localhost"],
            "--out",
        ),
    ];
    for (args, named) in cases {
        let output = certs(args);
        assert!(!output.status.success(), "{args:?} succeeded");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
        assert!(stderr.contains(named), "{args:?}: {stderr}");
        assert!(output.stdout.is_empty(), "{args:?} printed a caBundle");
    }
    // Nothing was written by the failed runs.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

    // Missing --dns: clap's usage error, non-zero.
    let output = certs(&["--out", out]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--dns"));
}
