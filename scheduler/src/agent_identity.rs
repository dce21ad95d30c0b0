//! Who a sidecar is: the credential a stream presents, and the host it may speak for.
//!
//! A per-agent token is `tat1.<host, base64url>.<expiry, Unix seconds>.<HMAC-SHA256, base64url>`, the
//! HMAC taken under a secret kept in the state store (the embedded store's directory, file
//! `agent-token.key`, mode 0600; or the znode `<root>/state/agent_token_secret` with the store's ACL), so
//! every HA candidate verifies every token without a list. The secret is created by the first mint and
//! replaced by a rotation, which revokes every token minted before. With mutual TLS, a client
//! certificate's DNS subject alternative names name the hosts it may speak for. The shared agent token
//! (`--agent-token-file`) names no host and is accepted only with `--allow-shared-agent-token`.
//!
//! A valid credential for another host than the Hello's is PERMISSION_DENIED (the peer is known, it may not
//! do this); a missing, malformed, expired or forged credential is UNAUTHENTICATED (the peer is unknown).
//! Neither the secret nor a token is ever logged: their `Debug` is redacted, and a credential is
//! compared by the SHA-256 of its bytes.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use rand::Rng as _;
use ring::{digest, hmac};
use tether_core::ids::Hostname;
use tokio::sync::watch;
use tonic::{Request, Status};

use crate::auth::{self, Token};

/// What every per-agent token starts with (and what tells it from the shared token).
pub const TOKEN_PREFIX: &str = "tat1.";

/// The longest validity `MintAgentToken` grants.
pub const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 86_400);

/// Domain separation: this key signs nothing else, but a future token kind must not verify as this one.
const CONTEXT: &[u8] = b"tether agent token v1\0";

/// The HMAC key of per-agent tokens.
pub struct AgentSecret {
    key: hmac::Key,
    /// 64 hex digits, as stored.
    text: String,
}

impl std::fmt::Debug for AgentSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AgentSecret(<redacted>)")
    }
}

/// A stored secret that is not one.
#[derive(Debug, thiserror::Error)]
#[error("the agent-token secret is not 64 hex digits")]
pub struct BadSecret;

impl AgentSecret {
    /// 32 random bytes.
    pub fn generate() -> AgentSecret {
        let bytes: [u8; 32] = rand::rng().random();
        let text: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        AgentSecret {
            key: hmac::Key::new(hmac::HMAC_SHA256, &bytes),
            text,
        }
    }

    /// The secret as stored (surrounding whitespace ignored).
    pub fn from_text(text: &str) -> Result<AgentSecret, BadSecret> {
        let text = text.trim();
        if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(BadSecret);
        }
        let bytes: Vec<u8> = (0..32)
            .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| BadSecret))
            .collect::<Result<_, _>>()?;
        Ok(AgentSecret {
            key: hmac::Key::new(hmac::HMAC_SHA256, &bytes),
            text: text.to_ascii_lowercase(),
        })
    }

    /// What the store keeps.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// A token for `host` valid until `expires_unix_s`.
    pub fn mint(&self, host: &Hostname, expires_unix_s: u64) -> String {
        let tag = hmac::sign(&self.key, &signed(host.as_str(), expires_unix_s));
        format!(
            "{TOKEN_PREFIX}{}.{expires_unix_s}.{}",
            B64.encode(host.as_str()),
            B64.encode(tag.as_ref())
        )
    }

    /// The host `token` names, if this secret signed it and it has not expired at `now_unix_s`.
    pub fn verify(&self, token: &str, now_unix_s: u64) -> Result<String, TokenRefusal> {
        let rest = token
            .strip_prefix(TOKEN_PREFIX)
            .ok_or(TokenRefusal::Malformed)?;
        let mut parts = rest.split('.');
        let (Some(host), Some(expiry), Some(tag), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenRefusal::Malformed);
        };
        let host = B64
            .decode(host)
            .ok()
            .and_then(|h| String::from_utf8(h).ok())
            .ok_or(TokenRefusal::Malformed)?;
        let expiry: u64 = expiry.parse().map_err(|_| TokenRefusal::Malformed)?;
        let tag = B64.decode(tag).map_err(|_| TokenRefusal::Malformed)?;
        // Constant time (ring's verify), and before the expiry: an attacker learns nothing from the
        // difference between a forged and an expired token.
        hmac::verify(&self.key, &signed(&host, expiry), &tag).map_err(|_| TokenRefusal::Forged)?;
        if now_unix_s >= expiry {
            return Err(TokenRefusal::Expired { at_unix_s: expiry });
        }
        Ok(host)
    }
}

fn signed(host: &str, expires_unix_s: u64) -> Vec<u8> {
    let mut m = CONTEXT.to_vec();
    m.extend_from_slice(host.as_bytes());
    m.push(0);
    m.extend_from_slice(expires_unix_s.to_string().as_bytes());
    m
}

/// Why a per-agent token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefusal {
    #[error("the agent token is malformed (expected tat1.<host>.<expiry>.<signature>)")]
    Malformed,
    #[error(
        "the agent token was not signed with the current secret (forged, or minted before the last \
         `tetherctl agent-token --rotate-secret`)"
    )]
    Forged,
    #[error("the agent token expired at {at_unix_s} (Unix seconds); mint a new one")]
    Expired { at_unix_s: u64 },
    #[error("no agent token was ever minted by this cluster (no secret yet)")]
    NoSecret,
}

/// The SHA-256 of a credential's bytes: how two streams' credentials are compared without keeping them.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    fn of(bytes: &[u8]) -> Fingerprint {
        let mut out = [0u8; 32];
        out.copy_from_slice(digest::digest(&digest::SHA256, bytes).as_ref());
        Fingerprint(out)
    }
}

impl std::fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:")?;
        self.0[..4].iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// What a stream presented, once verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A per-agent token naming `host`.
    AgentToken {
        host: String,
        fingerprint: Fingerprint,
    },
    /// A client certificate (mutual TLS) whose DNS names are `hosts`.
    ClientCert {
        hosts: Vec<String>,
        fingerprint: Fingerprint,
    },
    /// The shared agent token (only with `--allow-shared-agent-token`): names no host.
    Shared,
    /// Nothing, on a channel without `--agent-token-file` and with `--allow-shared-agent-token`.
    Open,
}

impl Credential {
    /// For the log: the kind, never the secret.
    pub fn kind(&self) -> &'static str {
        match self {
            Credential::AgentToken { .. } => "agent token",
            Credential::ClientCert { .. } => "client certificate",
            Credential::Shared => "shared agent token",
            Credential::Open => "no credential",
        }
    }

    /// Whether this credential may speak for `host` (a Hello's host name): PERMISSION_DENIED if not.
    pub fn permits(&self, host: &str) -> Result<(), Status> {
        match self {
            Credential::AgentToken { host: named, .. } if named == host => Ok(()),
            Credential::AgentToken { host: named, .. } => Err(Status::permission_denied(format!(
                "the agent token names host {named:?}, not {host:?} (the Hello's hostname); mint one \
                 for {host:?} with `tetherctl agent-token {host}`"
            ))),
            Credential::ClientCert { hosts, .. } => {
                if hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
                    Ok(())
                } else {
                    Err(Status::permission_denied(format!(
                        "the client certificate names {hosts:?}, not {host:?} (the Hello's hostname)"
                    )))
                }
            }
            Credential::Shared | Credential::Open => Ok(()),
        }
    }
}

/// How the agent channel tells who a stream is.
#[derive(Debug, Clone)]
pub struct AgentAuth {
    /// `--agent-token-file`: accepted only when `allow_shared` (the scheduler refuses to start otherwise).
    pub shared: Option<Token>,
    /// `--allow-shared-agent-token`.
    pub allow_shared: bool,
    /// The current secret; `None` until one is loaded or created.
    pub secret: watch::Receiver<Option<Arc<AgentSecret>>>,
}

impl AgentAuth {
    /// An authenticator that knows no secret (tests and loopback development).
    pub fn without_secret(shared: Option<Token>, allow_shared: bool) -> AgentAuth {
        AgentAuth {
            shared,
            allow_shared,
            secret: watch::channel(None).1,
        }
    }

    /// The credential `req` presents: a bearer token first, else a client certificate, else nothing
    /// (only where allowed). UNAUTHENTICATED otherwise, saying why.
    pub fn authenticate<T>(&self, req: &Request<T>) -> Result<Credential, Status> {
        if let Some(token) = auth::bearer(req)? {
            if token.starts_with(TOKEN_PREFIX) {
                let secret = self.secret.borrow().clone();
                let host = secret
                    .ok_or(TokenRefusal::NoSecret)
                    .and_then(|s| s.verify(token, unix_now_s()))
                    .map_err(|e| Status::unauthenticated(e.to_string()))?;
                return Ok(Credential::AgentToken {
                    host,
                    fingerprint: Fingerprint::of(token.as_bytes()),
                });
            }
            return match &self.shared {
                Some(shared) if self.allow_shared && shared.matches(token) => {
                    Ok(Credential::Shared)
                }
                _ => Err(Status::unauthenticated(
                    "invalid bearer token: not a per-agent token (tat1.…) nor an accepted shared agent token",
                )),
            };
        }
        if let Some(cert) = req.peer_certs().and_then(|c| c.first().cloned()) {
            let hosts = dns_names(cert.as_ref());
            if !hosts.is_empty() {
                return Ok(Credential::ClientCert {
                    hosts,
                    fingerprint: Fingerprint::of(cert.as_ref()),
                });
            }
        }
        if self.allow_shared && self.shared.is_none() {
            return Ok(Credential::Open);
        }
        Err(Status::unauthenticated(
            "no agent credential: send `authorization: Bearer <token>` with a per-agent token \
             (`tetherctl agent-token HOST`), or a client certificate naming the host",
        ))
    }
}

/// The DNS subject alternative names of a DER certificate (none when it does not parse: the TLS layer
/// already verified it, so that would be a certificate without names for us).
fn dns_names(der: &[u8]) -> Vec<String> {
    use x509_parser::prelude::{FromDer as _, GeneralName, X509Certificate};
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some((*d).to_owned()),
            _ => None,
        })
        .collect()
}

/// Seconds since the Unix epoch (token expiries are wall-clock facts shared between machines).
pub fn unix_now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(h: &str) -> Hostname {
        Hostname::new(h).expect("host")
    }

    #[test]
    fn a_token_verifies_for_its_host_until_it_expires() {
        let s = AgentSecret::generate();
        let t = s.mint(&host("agent-1.example"), 1_000);
        assert!(t.starts_with(TOKEN_PREFIX));
        assert_eq!(s.verify(&t, 999).as_deref(), Ok("agent-1.example"));
        assert_eq!(
            s.verify(&t, 1_000),
            Err(TokenRefusal::Expired { at_unix_s: 1_000 })
        );
    }

    #[test]
    fn a_token_under_another_secret_or_altered_is_refused() {
        let (a, b) = (AgentSecret::generate(), AgentSecret::generate());
        let t = a.mint(&host("h1"), u64::MAX);
        assert_eq!(b.verify(&t, 0), Err(TokenRefusal::Forged));
        // Another host or a later expiry under the same signature.
        let parts: Vec<&str> = t.split('.').collect();
        let other_host = format!("tat1.{}.{}.{}", B64.encode("h2"), parts[2], parts[3]);
        assert_eq!(a.verify(&other_host, 0), Err(TokenRefusal::Forged));
        let later = format!("tat1.{}.{}.{}", parts[1], 5, parts[3]);
        assert_eq!(a.verify(&later, 0), Err(TokenRefusal::Forged));
        for bad in [
            "tat1.",
            "tat1.a.b",
            "tat1.!!.1.x",
            "tat1.aDE.x.AAAA",
            "tat1.a.1.b.c",
        ] {
            assert_eq!(a.verify(bad, 0), Err(TokenRefusal::Malformed), "{bad}");
        }
    }

    #[test]
    fn the_secret_round_trips_through_its_text_and_never_prints() {
        let s = AgentSecret::generate();
        let again = AgentSecret::from_text(&format!("{}\n", s.text())).expect("parses");
        let t = s.mint(&host("h"), u64::MAX);
        assert!(again.verify(&t, 0).is_ok());
        assert_eq!(format!("{s:?}"), "AgentSecret(<redacted>)");
        assert!(AgentSecret::from_text("abc").is_err());
        assert!(AgentSecret::from_text(&"g".repeat(64)).is_err());
    }

    fn with_bearer(value: &str) -> Request<()> {
        let mut r = Request::new(());
        r.metadata_mut()
            .insert("authorization", value.parse().expect("ascii"));
        r
    }

    #[test]
    fn credentials_permit_only_their_host() {
        let secret = Arc::new(AgentSecret::generate());
        let token = secret.mint(&host("a"), unix_now_s() + 60);
        let auth = AgentAuth {
            shared: None,
            allow_shared: false,
            secret: watch::channel(Some(secret)).1,
        };
        let cred = auth
            .authenticate(&with_bearer(&format!("bearer {token}")))
            .expect("valid token, lower-case scheme");
        assert!(cred.permits("a").is_ok());
        let e = cred.permits("b").expect_err("token for a, Hello for b");
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(e.message().contains("\"a\""), "{}", e.message());
    }

    #[test]
    fn the_shared_token_and_no_credential_need_the_flag() {
        let shared = Token::new("s3cret");
        let strict = AgentAuth::without_secret(shared.clone(), false);
        let e = strict
            .authenticate(&with_bearer("Bearer s3cret"))
            .expect_err("shared token without the flag");
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        let e = strict
            .authenticate(&Request::new(()))
            .expect_err("nothing presented");
        assert_eq!(e.code(), tonic::Code::Unauthenticated);

        let allowed = AgentAuth::without_secret(shared, true);
        assert_eq!(
            allowed.authenticate(&with_bearer("Bearer s3cret")).ok(),
            Some(Credential::Shared)
        );
        assert!(allowed.authenticate(&Request::new(())).is_err());
        let open = AgentAuth::without_secret(None, true);
        assert_eq!(
            open.authenticate(&Request::new(())).ok(),
            Some(Credential::Open)
        );
        // A per-agent token before any secret exists says so.
        let e = open
            .authenticate(&with_bearer("Bearer tat1.aA.1.AA"))
            .expect_err("no secret");
        assert!(e.message().contains("was ever minted"), "{}", e.message());
    }
}
