//! TLS on the scheduler's gRPC listener (sidecars, tetherctl, health, reflection share one port).
//!
//! This module owns turning `--tls-cert`/`--tls-key` (and `--tls-client-ca` for mutual TLS) into a
//! tonic server builder. Files are read and parsed at start-up so a wrong path or a bad PEM stops the
//! scheduler with the file named, rather than failing every handshake later.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use crate::args::Args;

/// Why the listener's TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} {path} holds no PEM certificate or key")]
    NotPem { what: &'static str, path: PathBuf },
    #[error("--tls-cert and --tls-key go together (got only {given})")]
    Incomplete { given: &'static str },
    #[error(
        "--tls-client-ca needs --tls-cert and --tls-key (client certificates are only checked over TLS)"
    )]
    ClientCaWithoutTls,
    #[error("invalid TLS configuration (--tls-cert {cert}, --tls-key {key}): {reason}")]
    Invalid {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
}

fn read_pem(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })?;
    // tonic's own error for a non-PEM file does not name the file; catch the common mistake here.
    if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(TlsError::NotPem {
            what,
            path: path.to_owned(),
        });
    }
    Ok(bytes)
}

/// The listener's TLS configuration, `None` for plaintext (no `--tls-cert`).
pub fn server_tls_config(
    cert: Option<&Path>,
    key: Option<&Path>,
    client_ca: Option<&Path>,
) -> Result<Option<ServerTlsConfig>, TlsError> {
    let (cert, key) = match (cert, key) {
        (Some(c), Some(k)) => (c, k),
        (None, None) if client_ca.is_some() => return Err(TlsError::ClientCaWithoutTls),
        (None, None) => return Ok(None),
        (Some(_), None) => {
            return Err(TlsError::Incomplete {
                given: "--tls-cert",
            });
        }
        (None, Some(_)) => return Err(TlsError::Incomplete { given: "--tls-key" }),
    };
    let identity = Identity::from_pem(
        read_pem("certificate", cert)?,
        read_pem("private key", key)?,
    );
    let mut config = ServerTlsConfig::new().identity(identity);
    if let Some(ca) = client_ca {
        // With a client CA tonic requires a certificate signed by it (client auth is not optional).
        config = config.client_ca_root(Certificate::from_pem(read_pem("client CA", ca)?));
    }
    Ok(Some(config))
}

/// A server builder for `--listen`: with TLS when the flags ask for it, plaintext otherwise.
pub fn server_builder(args: &Args) -> Result<Server, TlsError> {
    let config = server_tls_config(
        args.tls_cert.as_deref(),
        args.tls_key.as_deref(),
        args.tls_client_ca.as_deref(),
    )?;
    let builder = Server::builder();
    let Some(config) = config else {
        return Ok(builder);
    };
    // Parsing the certificate and key happens here, so a mismatched pair fails at start-up.
    builder.tls_config(config).map_err(|e| TlsError::Invalid {
        cert: args.tls_cert.clone().unwrap_or_default(),
        key: args.tls_key.clone().unwrap_or_default(),
        reason: source_chain(&e),
    })
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        parts.push(s.to_string());
        cur = s.source();
    }
    parts.dedup();
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_without_flags_and_clear_errors_for_half_configurations() {
        assert!(
            server_tls_config(None, None, None)
                .expect("plain")
                .is_none()
        );
        let p = Path::new("/nonexistent/x.pem");
        assert!(matches!(
            server_tls_config(Some(p), None, None),
            Err(TlsError::Incomplete {
                given: "--tls-cert"
            })
        ));
        assert!(matches!(
            server_tls_config(None, Some(p), None),
            Err(TlsError::Incomplete { given: "--tls-key" })
        ));
        assert!(matches!(
            server_tls_config(None, None, Some(p)),
            Err(TlsError::ClientCaWithoutTls)
        ));
        let err = server_tls_config(Some(p), Some(p), None).expect_err("missing file");
        assert!(err.to_string().contains("/nonexistent/x.pem"), "{err}");
    }

    #[test]
    fn a_file_that_is_not_pem_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cert = dir.path().join("cert.pem");
        std::fs::write(&cert, "not a certificate").expect("write");
        let err = server_tls_config(Some(&cert), Some(&cert), None).expect_err("not pem");
        assert!(matches!(err, TlsError::NotPem { .. }), "{err}");
        assert!(err.to_string().contains("cert.pem"), "{err}");
    }
}
