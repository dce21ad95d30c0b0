//! Bearer tokens for the agent channel and the admin API (separate tokens).
//!
//! Tokens come from a file or the environment and are never logged (their `Debug` is redacted). They are
//! compared in constant time so response timing does not reveal how much of a guess was right.

use std::path::Path;

use tonic::{Request, Status};

/// A secret bearer token.
#[derive(Clone)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Why a token could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read token file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("token file {path} is empty")]
    Empty { path: String },
}

impl Token {
    /// A token from its text (surrounding whitespace ignored). Empty text is no token.
    pub fn new(text: &str) -> Option<Token> {
        let t = text.trim();
        (!t.is_empty()).then(|| Token(t.to_owned()))
    }

    /// Reads a token file; an empty file is an error (it would silently disable authentication).
    pub fn from_file(path: &Path) -> Result<Token, TokenError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Token::new(&text).ok_or_else(|| TokenError::Empty {
            path: path.display().to_string(),
        })
    }

    /// Constant-time comparison with a presented token.
    pub fn matches(&self, presented: &str) -> bool {
        constant_time_eq(self.0.as_bytes(), presented.as_bytes())
    }

    /// The token's text, for a client that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Compares every byte whatever the first difference; only the length may leak, which says little
/// about a random token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token of `authorization: Bearer <token>`, `None` when the header is absent. The scheme is
/// case-insensitive (RFC 7235 §2.1: `bearer` and `BEARER` are `Bearer`); another scheme, or a value
/// that is not text, is UNAUTHENTICATED.
pub fn bearer<T>(req: &Request<T>) -> Result<Option<&str>, Status> {
    let Some(value) = req.metadata().get("authorization") else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| Status::unauthenticated("the authorization header is not text"))?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => Ok(Some(token.trim())),
        _ => Err(Status::unauthenticated(
            "the authorization header must be `Bearer <token>`",
        )),
    }
}

/// Checks `authorization: Bearer <token>` on a request. `None` as the expected token means the endpoint
/// is open.
pub fn check<T>(expected: Option<&Token>, req: &Request<T>) -> Result<(), Status> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let presented = bearer(req)?.ok_or_else(|| Status::unauthenticated("missing bearer token"))?;
    if expected.matches(presented) {
        Ok(())
    } else {
        Err(Status::unauthenticated("invalid bearer token"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_exactly_and_never_print() {
        let t = Token::new(" s3cret \n").expect("token");
        assert!(t.matches("s3cret"));
        assert!(!t.matches("s3cre"));
        assert!(!t.matches("s3cret!"));
        assert!(!t.matches("S3cret"));
        assert_eq!(format!("{t:?}"), "Token(<redacted>)");
        assert!(Token::new("  \n").is_none());
    }

    #[test]
    fn requests_need_the_bearer_header() {
        let t = Token::new("abc").expect("token");
        let mut req = Request::new(());
        assert_eq!(
            check(Some(&t), &req).expect_err("missing").code(),
            tonic::Code::Unauthenticated
        );
        req.metadata_mut()
            .insert("authorization", "Bearer abd".parse().expect("ascii"));
        assert_eq!(
            check(Some(&t), &req).expect_err("wrong").code(),
            tonic::Code::Unauthenticated
        );
        req.metadata_mut()
            .insert("authorization", "Bearer abc".parse().expect("ascii"));
        assert!(check(Some(&t), &req).is_ok());
        assert!(check(None, &Request::new(())).is_ok());
        // RFC 7235: the scheme is case-insensitive.
        for scheme in ["bearer", "BEARER", "bEaReR"] {
            req.metadata_mut().insert(
                "authorization",
                format!("{scheme} abc").parse().expect("ascii"),
            );
            assert!(check(Some(&t), &req).is_ok(), "{scheme}");
        }
        req.metadata_mut()
            .insert("authorization", "Basic abc".parse().expect("ascii"));
        assert_eq!(
            check(Some(&t), &req).expect_err("another scheme").code(),
            tonic::Code::Unauthenticated
        );
    }

    #[test]
    fn an_empty_token_file_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, "\n").expect("write");
        assert!(matches!(
            Token::from_file(&path),
            Err(TokenError::Empty { .. })
        ));
    }
}
