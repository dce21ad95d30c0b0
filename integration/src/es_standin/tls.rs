//! TLS as Elasticsearch configures it: `xpack.security.{transport,http}.ssl.*`, PEM files relative to the
//! config directory, read as the node's user.
//!
//! - `enabled` (default false). SSL settings without `enabled` are refused ("[…enabled] is not set, but the
//!   following settings have been configured"); enabled without `key` and `certificate` is refused
//!   ("server ssl configuration requires a key and certificate"). Missing or unreadable files fail the
//!   start ("failed to load SSL configuration [prefix] - …"). PKCS#12/JKS keystores (`keystore.path`) and
//!   encrypted keys are not read by the stand-in and are refused with a message saying so.
//! - `verification_mode`: `full` (default: a trusted chain *and* a SAN matching the host or IP dialled),
//!   `certificate` (the chain only) or `none`. A certificate that does not chain to the configured
//!   `certificate_authorities` fails the handshake, not the start — as with Elasticsearch, whose node
//!   starts and then cannot talk to its peers.
//! - `client_authentication`: transport `required` by default (mutual TLS), http `none`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

use super::container::{ContainerFs, Identity, PathError};
use super::settings::Settings;

pub const TRANSPORT_SSL: &str = "xpack.security.transport.ssl";
pub const HTTP_SSL: &str = "xpack.security.http.ssl";

/// An SSL configuration Elasticsearch refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(pub String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerificationMode {
    Full,
    Certificate,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    Required,
    Optional,
    None,
}

/// One `…ssl.*` group, paths already absolute container paths.
#[derive(Debug, Clone)]
pub struct SslSettings {
    pub prefix: &'static str,
    pub key: PathBuf,
    pub certificate: PathBuf,
    pub certificate_authorities: Vec<PathBuf>,
    pub verification_mode: VerificationMode,
    pub client_authentication: ClientAuth,
}

impl SslSettings {
    /// The group under `prefix` when enabled; `None` when disabled.
    pub fn from_settings(
        settings: &Settings,
        prefix: &'static str,
        config_dir: &Path,
        default_client_auth: ClientAuth,
    ) -> Result<Option<SslSettings>, TlsError> {
        let enabled_key = format!("{prefix}.enabled");
        let invalid = |e: super::settings::SettingsError| TlsError(e.to_string());
        let group_prefix = format!("{prefix}.");
        let configured: Vec<&str> = settings.keys_with_prefix(&group_prefix).collect();
        if !settings.contains(&enabled_key) {
            if !configured.is_empty() {
                return Err(TlsError(format!(
                    "invalid configuration for {prefix} - [{enabled_key}] is not set, but the following settings have been configured in elasticsearch.yml : [{}]",
                    configured.join(",")
                )));
            }
            return Ok(None);
        }
        if !settings.bool(&enabled_key, false).map_err(invalid)? {
            return Ok(None);
        }
        let get = |name: &str| settings.get(&format!("{prefix}.{name}"));
        if get("keystore.path").is_some() || get("truststore.path").is_some() {
            return Err(TlsError(format!(
                "es-standin reads PEM files only: set [{prefix}.key], [{prefix}.certificate] and [{prefix}.certificate_authorities] instead of a keystore or truststore"
            )));
        }
        if get("key_passphrase").is_some() || get("secure_key_passphrase").is_some() {
            return Err(TlsError(format!(
                "es-standin does not read encrypted keys: [{prefix}.key_passphrase] is not supported"
            )));
        }
        let (Some(key), Some(certificate)) = (get("key"), get("certificate")) else {
            return Err(TlsError(format!(
                "invalid SSL configuration for {prefix} - server ssl configuration requires a key and certificate, but these have not been configured; you must set either [{prefix}.keystore.path], or both [{prefix}.key] and [{prefix}.certificate]"
            )));
        };
        let resolve = |p: &str| {
            let p = Path::new(p);
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                config_dir.join(p)
            }
        };
        let verification_mode = match get("verification_mode").unwrap_or("full") {
            "full" => VerificationMode::Full,
            "certificate" => VerificationMode::Certificate,
            "none" => VerificationMode::None,
            other => {
                return Err(TlsError(format!(
                    "could not resolve ssl client verification mode, unknown value [{other}]"
                )));
            }
        };
        let client_authentication = match get("client_authentication") {
            None => default_client_auth,
            Some("required") => ClientAuth::Required,
            Some("optional") => ClientAuth::Optional,
            Some("none") => ClientAuth::None,
            Some(other) => {
                return Err(TlsError(format!(
                    "could not resolve ssl client authentication, unknown value [{other}]"
                )));
            }
        };
        Ok(Some(SslSettings {
            prefix,
            key: resolve(key),
            certificate: resolve(certificate),
            certificate_authorities: settings
                .list(&format!("{prefix}.certificate_authorities"))
                .iter()
                .map(|p| resolve(p))
                .collect(),
            verification_mode,
            client_authentication,
        }))
    }

    /// Reads and parses the files as `who`.
    pub fn load(&self, fs: &ContainerFs, who: Identity) -> Result<LoadedTls, TlsError> {
        let fail = |what: &str, path: &Path, why: String| {
            TlsError(format!(
                "failed to load SSL configuration [{}] - cannot read configured PEM {what} [{}] {why}",
                self.prefix,
                path.display()
            ))
        };
        let read = |what: &str, path: &Path| {
            fs.read(path, who).map_err(|e| {
                let why = match e {
                    PathError::Missing(_) => "because the file does not exist".to_owned(),
                    PathError::Denied(_) => "because access to read the file is blocked".to_owned(),
                    PathError::Io { message, .. } => format!("({message})"),
                };
                fail(what, path, why)
            })
        };
        let cert_pem = read("certificate", &self.certificate)?;
        let certs = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| fail("certificate", &self.certificate, format!("({e})")))?;
        if certs.is_empty() {
            return Err(fail(
                "certificate",
                &self.certificate,
                "(no certificates found)".into(),
            ));
        }
        let key_pem = read("private key", &self.key)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| fail("private key", &self.key, format!("({e})")))?;
        let mut roots = RootCertStore::empty();
        for ca in &self.certificate_authorities {
            let pem = read("certificate_authorities", ca)?;
            let cas = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| fail("certificate_authorities", ca, format!("({e})")))?;
            if cas.is_empty() {
                return Err(fail(
                    "certificate_authorities",
                    ca,
                    "(no certificates found)".into(),
                ));
            }
            for c in cas {
                roots
                    .add(c)
                    .map_err(|e| fail("certificate_authorities", ca, format!("({e})")))?;
            }
        }
        Ok(LoadedTls {
            prefix: self.prefix,
            certs,
            key,
            roots: Arc::new(roots),
            mode: self.verification_mode,
            client_auth: self.client_authentication,
        })
    }
}

/// Parsed PEM material of one SSL group.
#[derive(Debug)]
pub struct LoadedTls {
    prefix: &'static str,
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: Arc<RootCertStore>,
    mode: VerificationMode,
    client_auth: ClientAuth,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl LoadedTls {
    fn verifier(&self) -> Result<Arc<PeerVerifier>, TlsError> {
        let provider = provider();
        let client = if self.roots.is_empty() {
            None
        } else {
            let builder =
                WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider.clone());
            let builder = match self.client_auth {
                ClientAuth::Optional => builder.allow_unauthenticated(),
                _ => builder,
            };
            Some(
                builder
                    .build()
                    .map_err(|e| TlsError(format!("{}: {e}", self.prefix)))?,
            )
        };
        Ok(Arc::new(PeerVerifier {
            roots: self.roots.clone(),
            mode: self.mode,
            client_auth: self.client_auth,
            algs: provider.signature_verification_algorithms,
            client,
        }))
    }

    /// The server side (accepting peers, or HTTPS clients).
    pub fn server_config(&self) -> Result<rustls::ServerConfig, TlsError> {
        let bad = |e: rustls::Error| {
            TlsError(format!(
                "failed to load SSL configuration [{}] - {e}",
                self.prefix
            ))
        };
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(bad)?;
        let builder = match self.client_auth {
            ClientAuth::None => builder.with_no_client_auth(),
            _ => builder.with_client_cert_verifier(self.verifier()?),
        };
        builder
            .with_single_cert(self.certs.clone(), self.key.clone_key())
            .map_err(bad)
    }

    /// The client side (dialling peers), presenting the node's certificate.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, TlsError> {
        let bad = |e: rustls::Error| {
            TlsError(format!(
                "failed to load SSL configuration [{}] - {e}",
                self.prefix
            ))
        };
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(bad)?
            .dangerous()
            .with_custom_certificate_verifier(self.verifier()?)
            .with_client_auth_cert(self.certs.clone(), self.key.clone_key())
            .map_err(bad)
    }
}

/// Verifies peers by `verification_mode`, both ways.
#[derive(Debug)]
struct PeerVerifier {
    roots: Arc<RootCertStore>,
    mode: VerificationMode,
    client_auth: ClientAuth,
    algs: WebPkiSupportedAlgorithms,
    /// Chain checks of client certificates (clientAuth usage); `None` without trusted CAs.
    client: Option<Arc<dyn ClientCertVerifier>>,
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.mode == VerificationMode::None {
            return Ok(ServerCertVerified::assertion());
        }
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algs.all,
        )?;
        if self.mode == VerificationMode::Full {
            rustls::client::verify_server_name(&cert, server_name)?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

impl ClientCertVerifier for PeerVerifier {
    fn offer_client_auth(&self) -> bool {
        self.client_auth != ClientAuth::None
    }

    fn client_auth_mandatory(&self) -> bool {
        self.client_auth == ClientAuth::Required
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if self.mode == VerificationMode::None {
            return Ok(ClientCertVerified::assertion());
        }
        match &self.client {
            Some(v) => v.verify_client_cert(end_entity, intermediates, now),
            None => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> Settings {
        Settings::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn ssl_settings_need_enabled_and_a_key_pair() {
        let dir = Path::new("/usr/share/elasticsearch/config");
        let e = SslSettings::from_settings(
            &cfg(&[("xpack.security.transport.ssl.key", "k.pem")]),
            TRANSPORT_SSL,
            dir,
            ClientAuth::Required,
        )
        .expect_err("enabled missing");
        assert!(
            e.0.contains("[xpack.security.transport.ssl.enabled] is not set"),
            "{e}"
        );
        let e = SslSettings::from_settings(
            &cfg(&[("xpack.security.transport.ssl.enabled", "true")]),
            TRANSPORT_SSL,
            dir,
            ClientAuth::Required,
        )
        .expect_err("no key");
        assert!(e.0.contains("requires a key and certificate"), "{e}");
        let s = SslSettings::from_settings(
            &cfg(&[
                ("xpack.security.transport.ssl.enabled", "true"),
                ("xpack.security.transport.ssl.key", "certs/node.key"),
                ("xpack.security.transport.ssl.certificate", "/abs/node.crt"),
                (
                    "xpack.security.transport.ssl.certificate_authorities",
                    "certs/ca.crt",
                ),
                (
                    "xpack.security.transport.ssl.verification_mode",
                    "certificate",
                ),
            ]),
            TRANSPORT_SSL,
            dir,
            ClientAuth::Required,
        )
        .expect("valid")
        .expect("enabled");
        assert_eq!(s.key, dir.join("certs/node.key"));
        assert_eq!(s.certificate, Path::new("/abs/node.crt"));
        assert_eq!(s.certificate_authorities, vec![dir.join("certs/ca.crt")]);
        assert_eq!(s.verification_mode, VerificationMode::Certificate);
    }
}
