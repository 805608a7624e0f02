//! `warmpool certs`: a local certificate authority and a serving certificate signed by it.
//!
//! In a cluster the chart (or cert-manager) provides the webhook's certificate; this is for
//! running the webhook on a laptop, in the end-to-end tests, or for a first install without
//! cert-manager. Keys are ECDSA P-256, written as PKCS#8 PEM.

use std::fs;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// Write ca.crt, tls.crt and tls.key (PEM) into --out and print the base64 caBundle.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory to write ca.crt, tls.crt and tls.key into (created if missing).
    #[arg(long, default_value = "certs")]
    pub out: PathBuf,
    /// DNS name for the serving certificate, e.g. warmpool.warmpool.svc (repeatable).
    #[arg(long = "dns", required = true)]
    pub dns: Vec<String>,
    /// IP address for the serving certificate, e.g. 127.0.0.1 (repeatable).
    #[arg(long = "ip")]
    pub ip: Vec<IpAddr>,
    /// Validity of the serving certificate in days.
    #[arg(long, default_value_t = 365)]
    pub days: u32,
}

/// Generates and writes the files, prints the caBundle (base64 of ca.crt) on stdout and a
/// one-line summary on stderr.
pub fn run(args: Args) -> anyhow::Result<()> {
    let generated = generate(&Request {
        dns: &args.dns,
        ips: &args.ip,
        days: args.days,
    })?;
    write(&args.out, &generated)?;
    println!("{}", STANDARD.encode(generated.ca_pem.as_bytes()));
    let ips: Vec<String> = args.ip.iter().map(ToString::to_string).collect();
    eprintln!(
        "wrote {ca}, {cert} and {key} to {out} for {names}, valid {days} days; the line above is the caBundle",
        ca = CA_FILE,
        cert = CERT_FILE,
        key = KEY_FILE,
        out = args.out.display(),
        names = args
            .dns
            .iter()
            .chain(&ips)
            .cloned()
            .collect::<Vec<_>>()
            .join(", "),
        days = args.days,
    );
    Ok(())
}

/// File names written into the output directory (the names a Kubernetes TLS Secret uses).
pub const CA_FILE: &str = "ca.crt";
pub const CERT_FILE: &str = "tls.crt";
pub const KEY_FILE: &str = "tls.key";

/// The longest validity `--days` accepts (ten years).
pub const MAX_DAYS: u32 = 3650;

/// Why certificates could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error(
        "--dns `{0}` is not a valid DNS name (letters, digits, `-` and `.`, e.g. warmpool.warmpool.svc)"
    )]
    BadDnsName(String),
    #[error("--days {0} is out of range; give a number of days from 1 to {MAX_DAYS}")]
    BadDays(u32),
    #[error("at least one --dns name is needed, e.g. --dns localhost")]
    NoNames,
    #[error("cannot generate the certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot write {path}: {source}; check that --out names a writable directory")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What `generate` makes, all PEM.
#[derive(Debug, Clone)]
pub struct Generated {
    /// The CA certificate: the `caBundle` of the webhook configuration, and what clients trust.
    pub ca_pem: String,
    /// The serving certificate, signed by the CA.
    pub cert_pem: String,
    /// The serving certificate's private key (PKCS#8).
    pub key_pem: String,
}

/// What to put in the serving certificate.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub dns: &'a [String],
    pub ips: &'a [IpAddr],
    pub days: u32,
}

/// Makes a fresh CA and a serving certificate for `request`'s names and addresses.
pub fn generate(request: &Request<'_>) -> Result<Generated, CertsError> {
    if request.dns.is_empty() {
        return Err(CertsError::NoNames);
    }
    if request.days == 0 || request.days > MAX_DAYS {
        return Err(CertsError::BadDays(request.days));
    }
    for name in request.dns {
        if rustls::pki_types::DnsName::try_from(name.as_str()).is_err() {
            return Err(CertsError::BadDnsName(name.clone()));
        }
    }
    let now = OffsetDateTime::now_utc();
    // A little slack for clocks that are behind ours.
    let not_before = now - Duration::hours(1);
    let not_after = now + Duration::days(i64::from(request.days));

    let mut ca = CertificateParams::default();
    ca.distinguished_name = name("warmpool local CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = not_before;
    ca.not_after = not_after;
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let mut leaf = CertificateParams::default();
    leaf.distinguished_name = name(&request.dns[0]);
    leaf.subject_alt_names = request
        .dns
        .iter()
        .map(|d| Ok(SanType::DnsName(d.clone().try_into()?)))
        .chain(request.ips.iter().map(|ip| Ok(SanType::IpAddress(*ip))))
        .collect::<Result<_, rcgen::Error>>()?;
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    leaf.not_before = not_before;
    leaf.not_after = not_after;
    let leaf_key = KeyPair::generate()?;
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer)?;

    Ok(Generated {
        ca_pem: ca_cert.pem(),
        cert_pem: leaf_cert.pem(),
        key_pem: leaf_key.serialize_pem(),
    })
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "warmpool");
    dn.push(DnType::CommonName, common_name);
    dn
}

/// Writes `ca.crt`, `tls.crt` and `tls.key` into `dir` (created if missing); the key is readable
/// by its owner only. Each file is written to a temporary name and renamed into place, so a
/// webhook that polls these files never reads half of one.
pub fn write(dir: &Path, generated: &Generated) -> Result<(), CertsError> {
    fs::create_dir_all(dir).map_err(|source| CertsError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    write_file(&dir.join(CA_FILE), generated.ca_pem.as_bytes(), 0o644)?;
    write_file(&dir.join(KEY_FILE), generated.key_pem.as_bytes(), 0o600)?;
    write_file(&dir.join(CERT_FILE), generated.cert_pem.as_bytes(), 0o644)?;
    Ok(())
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), CertsError> {
    let error = |source| CertsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(&tmp).map_err(error)?;
    // `mode` applies only to a new file: make a leftover temporary file private too.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(error)?;
    }
    file.write_all(contents).map_err(error)?;
    file.sync_all().map_err(error)?;
    drop(file);
    fs::rename(&tmp, path).map_err(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_requests_before_generating() {
        let dns = vec!["localhost".to_owned()];
        let bad = |dns: &[String], days| {
            generate(&Request {
                dns,
                ips: &[],
                days,
            })
            .unwrap_err()
        };
        assert!(matches!(bad(&dns, 0), CertsError::BadDays(0)));
        assert!(matches!(bad(&dns, MAX_DAYS + 1), CertsError::BadDays(_)));
        assert!(matches!(bad(&[], 30), CertsError::NoNames));
        assert!(matches!(
            bad(&["not a name".to_owned()], 30),
            CertsError::BadDnsName(_)
        ));
    }

    #[test]
    fn makes_three_pem_documents() {
        let generated = generate(&Request {
            dns: &["warmpool.warmpool.svc".to_owned()],
            ips: &["127.0.0.1".parse().unwrap()],
            days: 1,
        })
        .unwrap();
        assert!(generated.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(
            generated
                .cert_pem
                .starts_with("-----BEGIN CERTIFICATE-----")
        );
        assert!(generated.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert_ne!(generated.ca_pem, generated.cert_pem);
    }
}
