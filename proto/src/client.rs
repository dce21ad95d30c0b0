//! Dialling tether-scheduler, shared by every client of it (tether-sidecar, tetherctl, the test harness):
//! the endpoint with its TLS rule, and the bearer header. Hand-written, beside the generated code.
//!
//! The TLS rule: an `https://` URL needs the CA that signed the scheduler's certificate (no system roots:
//! a Tether cluster's CA is its own), and TLS flags with a plaintext URL are refused rather than ignored,
//! so a typo never silently sends a token in the clear.

use std::path::{Path, PathBuf};

use tonic::metadata::errors::InvalidMetadataValue;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// How a program names its TLS flags, so that errors cite the flags its user typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsFlags {
    /// The CA certificate flag, e.g. `--ca-cert`.
    pub ca: &'static str,
    /// The client certificate flag, e.g. `--cert`.
    pub cert: &'static str,
}

/// The TLS files given for the scheduler; all `None` for a plaintext scheduler.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TlsFiles<'a> {
    /// PEM CA certificate that signed the scheduler's certificate.
    pub ca: Option<&'a Path>,
    /// PEM client certificate and its private key, for a scheduler that requires mutual TLS.
    pub identity: Option<(&'a Path, &'a Path)>,
}

/// Why the scheduler's endpoint could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("invalid URL {url:?}: {source}")]
    BadUrl {
        url: String,
        source: tonic::transport::Error,
    },
    #[error("{}/{} need an https:// scheduler URL, got {url}", flags.ca, flags.cert)]
    TlsWithoutHttps { url: String, flags: TlsFlags },
    #[error("{url} is https: give the CA that signed its certificate with {}", flags.ca)]
    NoCa { url: String, flags: TlsFlags },
    #[error("cannot read {what} {path}: {source}")]
    ReadFile {
        /// `CA certificate`, `client certificate` or `client key`.
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("TLS settings for {url}: {source}")]
    Tls {
        url: String,
        source: tonic::transport::Error,
    },
}

/// The endpoint of the scheduler at `url`, with TLS for `https://`. The files are read on every call, so
/// a client that redials through this picks up rotated certificates.
pub fn endpoint(
    url: &str,
    files: TlsFiles<'_>,
    flags: TlsFlags,
) -> Result<Endpoint, EndpointError> {
    let endpoint =
        Endpoint::from_shared(url.to_owned()).map_err(|source| EndpointError::BadUrl {
            url: url.to_owned(),
            source,
        })?;
    if !url.starts_with("https://") {
        if files != TlsFiles::default() {
            return Err(EndpointError::TlsWithoutHttps {
                url: url.to_owned(),
                flags,
            });
        }
        return Ok(endpoint);
    }
    let ca = files.ca.ok_or_else(|| EndpointError::NoCa {
        url: url.to_owned(),
        flags,
    })?;
    let mut tls =
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read("CA certificate", ca)?));
    if let Some((cert, key)) = files.identity {
        tls = tls.identity(Identity::from_pem(
            read("client certificate", cert)?,
            read("client key", key)?,
        ));
    }
    endpoint
        .tls_config(tls)
        .map_err(|source| EndpointError::Tls {
            url: url.to_owned(),
            source,
        })
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, EndpointError> {
    std::fs::read(path).map_err(|source| EndpointError::ReadFile {
        what,
        path: path.to_owned(),
        source,
    })
}

/// The `authorization` value for `token`: `Bearer <token>`, the token trimmed (token files end in a newline).
pub fn bearer(token: &str) -> Result<MetadataValue<Ascii>, InvalidMetadataValue> {
    format!("Bearer {}", token.trim()).parse()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLAGS: TlsFlags = TlsFlags {
        ca: "--the-ca",
        cert: "--the-cert",
    };

    fn files<'a>(ca: Option<&'a str>, identity: Option<(&'a str, &'a str)>) -> TlsFiles<'a> {
        TlsFiles {
            ca: ca.map(Path::new),
            identity: identity.map(|(c, k)| (Path::new(c), Path::new(k))),
        }
    }

    #[test]
    fn tls_flags_need_an_https_url_and_https_needs_a_ca() {
        assert!(endpoint("http://s:1", files(None, None), FLAGS).is_ok());
        for given in [
            files(Some("/ca.pem"), None),
            files(None, Some(("/c.pem", "/k.pem"))),
        ] {
            let err = endpoint("http://s:1", given, FLAGS).expect_err("TLS flags with http://");
            assert_eq!(
                err.to_string(),
                "--the-ca/--the-cert need an https:// scheduler URL, got http://s:1"
            );
        }
        let err = endpoint("https://s:1", files(None, None), FLAGS).expect_err("no CA");
        assert_eq!(
            err.to_string(),
            "https://s:1 is https: give the CA that signed its certificate with --the-ca"
        );
        let err = endpoint(
            "https://s:1",
            files(Some("/nonexistent/ca.pem"), None),
            FLAGS,
        )
        .expect_err("unreadable CA");
        assert!(
            matches!(&err, EndpointError::ReadFile { what: "CA certificate", path, .. } if path == Path::new("/nonexistent/ca.pem")),
            "{err}"
        );
        let err = endpoint("not a url", files(None, None), FLAGS).expect_err("bad URL");
        assert!(matches!(err, EndpointError::BadUrl { .. }), "{err}");
    }

    #[test]
    fn the_client_identity_is_read_after_the_ca() {
        // Any readable file will do as the CA: its contents are checked only after every file is read.
        let ca = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
        let err = endpoint(
            "https://s:1",
            files(Some(ca), Some(("/nonexistent/c.pem", "/nonexistent/k.pem"))),
            FLAGS,
        )
        .expect_err("unreadable client certificate");
        assert!(
            matches!(
                &err,
                EndpointError::ReadFile {
                    what: "client certificate",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn bearer_trims_the_token() {
        let v = bearer("s3cret\n").expect("ascii");
        assert_eq!(v.to_str().ok(), Some("Bearer s3cret"));
        assert!(bearer("two\nlines").is_err());
    }
}
