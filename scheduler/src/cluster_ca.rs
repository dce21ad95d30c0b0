//! The Elasticsearch cluster's secrets: its certificate authority and the `elastic` user's password.
//!
//! The CA is the operator's (`--es-ca-cert`/`--es-ca-key`) or generated on first start (ten years) and
//! kept beside the rest of the state: in the state directory as `es-ca.crt`, and `es-ca.key` and
//! `elastic-password` created with mode 0600; with `--state zk://` in ZooKeeper
//! (`store::cluster_secrets`, creator-only ACL), so every HA candidate signs with the same CA. The
//! password is `--es-password-file`'s or generated once.
//! Neither the key nor the password is ever logged (`Debug` shows neither) or put in a TaskInfo: a node's
//! password reaches it only as a file the sidecar writes on its identity volume.
//!
//! A node's private key never leaves its agent: the sidecar returns a CSR and [`ClusterSecrets::sign`]
//! signs the CSR's key for exactly the names the scheduler chose (never the names the CSR asks for), for one
//! year, as TLS server and client.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng as _;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};

const CA_CERT: &str = "es-ca.crt";
const CA_KEY: &str = "es-ca.key";
const PASSWORD: &str = "elastic-password";
const DAY: u64 = 86_400;

/// Why the secrets could not be loaded, created or used.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what}: {message}")]
    Crypto { what: &'static str, message: String },
    #[error("--es-ca-cert and --es-ca-key go together")]
    HalfCa,
    #[error("the password file {} is empty", .0.display())]
    EmptyPassword(PathBuf),
}

fn crypto(what: &'static str) -> impl Fn(rcgen::Error) -> SecretsError {
    move |e| SecretsError::Crypto {
        what,
        message: e.to_string(),
    }
}

/// The cluster CA and the `elastic` password.
pub struct ClusterSecrets {
    ca_pem: String,
    /// Kept only for a backup that asks for the secrets (`tetherctl state export --include-secrets`).
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
    password: String,
}

impl std::fmt::Debug for ClusterSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSecrets")
            .field("ca_pem", &self.ca_pem)
            .finish_non_exhaustive()
    }
}

/// What the operator gave: the CA (`--es-ca-cert`, `--es-ca-key`) and the password (`--es-password-file`),
/// read at start so a bad file is refused before anything runs. `Debug` shows neither.
#[derive(Clone, Default)]
pub struct OperatorSecrets {
    /// (certificate, key) PEMs.
    pub ca: Option<(String, String)>,
    pub password: Option<String>,
}

impl std::fmt::Debug for OperatorSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorSecrets")
            .field("ca", &self.ca.is_some())
            .field("password", &self.password.is_some())
            .finish()
    }
}

impl OperatorSecrets {
    /// Reads the files given.
    pub fn read(
        ca: Option<(&Path, &Path)>,
        password_file: Option<&Path>,
    ) -> Result<OperatorSecrets, SecretsError> {
        let ca = match ca {
            Some((cert, key)) => Some((read("--es-ca-cert", cert)?, read("--es-ca-key", key)?)),
            None => None,
        };
        let password = match password_file {
            Some(path) => {
                let p = read("--es-password-file", path)?.trim().to_owned();
                if p.is_empty() {
                    return Err(SecretsError::EmptyPassword(path.to_owned()));
                }
                Some(p)
            }
            None => None,
        };
        Ok(OperatorSecrets { ca, password })
    }

    /// Both the CA and the password are the operator's: nothing is generated or stored.
    pub fn is_complete(&self) -> bool {
        self.ca.is_some() && self.password.is_some()
    }
}

/// A password for `elastic`: 24 random alphanumerics.
fn new_password() -> String {
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(24)
        .map(char::from)
        .collect()
}

impl ClusterSecrets {
    /// A new ten-year CA and a new password, as (CA certificate, CA key, password).
    pub fn generate() -> Result<(String, String, String), SecretsError> {
        let (cert, key) = new_ca()?;
        Ok((cert, key, new_password()))
    }

    /// The operator's CA and password when given, else those kept in `dir`, else new ones written there.
    pub fn load_or_create(
        dir: &Path,
        ca: Option<(&Path, &Path)>,
        password_file: Option<&Path>,
    ) -> Result<ClusterSecrets, SecretsError> {
        let (ca_pem, key_pem) = match ca {
            Some((cert, key)) => (read("--es-ca-cert", cert)?, read("--es-ca-key", key)?),
            None => {
                let (cert, key) = (dir.join(CA_CERT), dir.join(CA_KEY));
                if cert.exists() || key.exists() {
                    (
                        read("the cluster CA", &cert)?,
                        read("the cluster CA key", &key)?,
                    )
                } else {
                    let (cert_pem, key_pem) = new_ca()?;
                    create(&key, &key_pem, 0o600)?;
                    create(&cert, &cert_pem, 0o644)?;
                    (cert_pem, key_pem)
                }
            }
        };
        let password = match password_file {
            Some(path) => {
                let p = read("--es-password-file", path)?.trim().to_owned();
                if p.is_empty() {
                    return Err(SecretsError::EmptyPassword(path.to_owned()));
                }
                p
            }
            None => {
                let path = dir.join(PASSWORD);
                if path.exists() {
                    read("the elastic password", &path)?.trim().to_owned()
                } else {
                    let p = new_password();
                    create(&path, &p, 0o600)?;
                    p
                }
            }
        };
        ClusterSecrets::from_pems(ca_pem, key_pem, password)
    }

    /// The secrets from their PEM texts and the password, checked: the key parses and the certificate
    /// is a CA certificate it can sign with.
    pub fn from_pems(
        ca_pem: String,
        key_pem: String,
        password: String,
    ) -> Result<ClusterSecrets, SecretsError> {
        let key = KeyPair::from_pem(&key_pem).map_err(crypto("the cluster CA key"))?;
        let issuer =
            Issuer::from_ca_cert_pem(&ca_pem, key).map_err(crypto("the cluster CA certificate"))?;
        if password.trim().is_empty() {
            return Err(SecretsError::Crypto {
                what: "the elastic password",
                message: "it is empty".into(),
            });
        }
        Ok(ClusterSecrets {
            ca_pem,
            key_pem,
            issuer,
            password,
        })
    }

    /// The CA's private key (PEM): only for a backup that asked for the secrets.
    pub fn ca_key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The files `load_or_create` reads in `dir`, each of which must not exist yet.
    pub fn paths(dir: &Path) -> [PathBuf; 3] {
        [dir.join(CA_CERT), dir.join(CA_KEY), dir.join(PASSWORD)]
    }

    /// Writes these secrets into `dir` as `load_or_create` keeps them (a restore), refusing to replace
    /// any file already there; on a failure the files this call created are removed.
    pub fn create_in(&self, dir: &Path) -> Result<(), SecretsError> {
        let [cert, key, password] = Self::paths(dir);
        let mut made = Vec::new();
        let result = [
            (&key, self.key_pem.as_str(), 0o600),
            (&cert, self.ca_pem.as_str(), 0o644),
            (&password, self.password.as_str(), 0o600),
        ]
        .into_iter()
        .try_for_each(|(path, body, mode)| {
            create(path, body, mode)?;
            made.push(path.clone());
            Ok(())
        });
        if result.is_err() {
            for path in made {
                let _ = fs::remove_file(path);
            }
        }
        result
    }

    /// The CA certificate (PEM), which nodes and the scheduler's client trust.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The `elastic` user's password.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// A one-year ([`tether_core::config::NODE_CERT_DAYS`]) certificate for the key in `csr_pem`, naming `common_name`, `dns_names` and
    /// `ip_addresses` (the CSR's own names are ignored).
    pub fn sign(
        &self,
        csr_pem: &str,
        common_name: &str,
        dns_names: &[String],
        ip_addresses: &[String],
    ) -> Result<SignedCert, SecretsError> {
        let mut csr =
            CertificateSigningRequestParams::from_pem(csr_pem).map_err(crypto("the node's CSR"))?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        for name in dns_names {
            params.subject_alt_names.push(SanType::DnsName(
                name.clone().try_into().map_err(crypto("a DNS name"))?,
            ));
        }
        for ip in ip_addresses {
            let ip = ip
                .parse()
                .map_err(|e: std::net::AddrParseError| SecretsError::Crypto {
                    what: "an IP address",
                    message: format!("{ip:?}: {e}"),
                })?;
            params.subject_alt_names.push(SanType::IpAddress(ip));
        }
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let not_after_unix_s = set_validity(&mut params, tether_core::config::NODE_CERT_DAYS);
        csr.params = params;
        let pem = csr
            .signed_by(&self.issuer)
            .map_err(crypto("signing the node's certificate"))?
            .pem();
        Ok(SignedCert {
            pem,
            not_after_unix_s,
        })
    }
}

/// A node's certificate as [`ClusterSecrets::sign`] made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCert {
    pub pem: String,
    /// Its `notAfter` as Unix seconds, exactly as written into it (the core renews the node before it).
    pub not_after_unix_s: u64,
}

/// A new self-signed CA, valid ten years.
fn new_ca() -> Result<(String, String), SecretsError> {
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "Tether Elasticsearch cluster CA");
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, 3650);
    let key = KeyPair::generate().map_err(crypto("generating the cluster CA key"))?;
    let cert = params
        .self_signed(&key)
        .map_err(crypto("making the cluster CA"))?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Valid from yesterday (clock skew between agents) to `days` from now.
/// Valid from the start of yesterday (UTC) to the start of the day `days` from now; returns the
/// latter as Unix seconds (the day's midnight: what `date_time_ymd` writes).
fn set_validity(params: &mut CertificateParams, days: u64) -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let (y, m, d) = date(now.saturating_sub(DAY));
    params.not_before = rcgen::date_time_ymd(y, m, d);
    let end = now.saturating_add(days * DAY);
    let (y, m, d) = date(end);
    params.not_after = rcgen::date_time_ymd(y, m, d);
    end - end % DAY
}

/// The UTC (year, month, day) holding `unix_secs`, as rcgen takes it.
fn date(unix_secs: u64) -> (i32, u8, u8) {
    let (year, month, day) = tether_core::renewal::civil_date(unix_secs);
    (i32::try_from(year).unwrap_or(i32::MAX), month, day)
}

fn read(what: &'static str, path: &Path) -> Result<String, SecretsError> {
    fs::read_to_string(path).map_err(|source| SecretsError::Io {
        what,
        path: path.to_owned(),
        source,
    })
}

/// Creates `path` (it must not exist) with `mode` from the start, so a secret is never readable by others.
fn create(path: &Path, body: &str, mode: u32) -> Result<(), SecretsError> {
    let io = |source| SecretsError::Io {
        what: "writing",
        path: path.to_owned(),
        source,
    };
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io)?;
    f.write_all(body.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn secrets_are_created_once_with_private_modes_and_sign_only_the_chosen_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = ClusterSecrets::load_or_create(dir.path(), None, None).expect("created");
        for (file, mode) in [(CA_KEY, 0o600), (PASSWORD, 0o600), (CA_CERT, 0o644)] {
            let m = fs::metadata(dir.path().join(file))
                .expect("file")
                .permissions();
            assert_eq!(m.mode() & 0o777, mode, "{file}");
        }
        assert!(!format!("{s:?}").contains(s.password()), "never in Debug");
        let again = ClusterSecrets::load_or_create(dir.path(), None, None).expect("loaded");
        assert_eq!(
            (again.ca_pem(), again.password()),
            (s.ca_pem(), s.password())
        );
        let key = KeyPair::generate().expect("key");
        let csr = CertificateParams::new(vec!["evil.example".to_owned()])
            .expect("params")
            .serialize_request(&key)
            .expect("csr")
            .pem()
            .expect("pem");
        let unix_now = || {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("after 1970")
                .as_secs()
        };
        let before = unix_now();
        let cert = s
            .sign(
                &csr,
                "es-1",
                &["agent-1".into(), "es-1".into()],
                &["10.0.0.7".into()],
            )
            .expect("signed");
        assert!(cert.pem.starts_with("-----BEGIN CERTIFICATE-----"));
        // The expiry the core is told is the certificate's own notAfter.
        let (_, der) = x509_parser::pem::parse_x509_pem(cert.pem.as_bytes()).expect("pem");
        let parsed = der.parse_x509().expect("certificate");
        let not_after = parsed.validity().not_after.timestamp();
        assert_eq!(
            u64::try_from(not_after).expect("after 1970"),
            cert.not_after_unix_s
        );
        let after = unix_now();
        let lifetime = tether_core::config::NODE_CERT_DAYS * DAY;
        assert!(
            cert.not_after_unix_s > before + lifetime - DAY
                && cert.not_after_unix_s <= after + lifetime,
            "the start of the day a year from now: {} vs {before}",
            cert.not_after_unix_s
        );
        assert!(s.sign("garbage", "es-1", &[], &[]).is_err());
        assert!(s.sign(&csr, "es-1", &[], &["agent-1".into()]).is_err());
    }

    #[test]
    fn a_malformed_operator_ca_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = (dir.path().join("ca.crt"), dir.path().join("ca.key"));
        fs::write(&cert, "not a certificate").expect("write");
        fs::write(&key, new_ca().expect("ca").1).expect("write");
        let e = ClusterSecrets::load_or_create(dir.path(), Some((&cert, &key)), None)
            .expect_err("malformed");
        assert!(e.to_string().contains("the cluster CA certificate"), "{e}");
    }
}
