//! `zk://` URLs and digest credentials: the only place that parses user input about where ZooKeeper is and
//! who Tether is to it. Credentials never reach a log: their `Debug` is redacted and no `Display` exists.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

/// Why a `zk://` URL or a credentials file was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UrlError {
    /// The string does not start with `zk://`.
    #[error("a ZooKeeper URL must start with zk:// (got {0:?})")]
    Scheme(String),
    /// No `host:port` before the path.
    #[error(
        "a ZooKeeper URL needs at least one host:port before the path, e.g. zk://zk1:2181/tether/es"
    )]
    NoHosts,
    /// One `host:port` entry is malformed.
    #[error("bad ZooKeeper host {0:?}: expected host:port with a port in 1..=65535")]
    Host(String),
    /// The path is missing, relative, or has empty or `.`/`..` components.
    #[error(
        "bad ZooKeeper path {0:?}: expected an absolute path like /tether/<framework-name> (not / alone)"
    )]
    Path(String),
    /// `user:password@` is malformed.
    #[error(
        "bad ZooKeeper credentials in URL: expected user:password@ with a non-empty user and password"
    )]
    UrlCredentials,
    /// The credentials file could not be read.
    #[error("cannot read ZooKeeper auth file {path}: {reason}")]
    AuthFileIo { path: String, reason: String },
    /// The credentials file does not hold `user:password`.
    #[error(
        "bad ZooKeeper auth file {path}: expected one line user:password with a non-empty user and password"
    )]
    AuthFileFormat { path: String },
}

/// A ZooKeeper digest identity (`user:password`), used for `addauth digest` and for ACLs on Tether's
/// znodes. `Debug` prints the user only.
#[derive(Clone, PartialEq, Eq)]
pub struct DigestCredentials {
    user: String,
    password: String,
}

impl fmt::Debug for DigestCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DigestCredentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl DigestCredentials {
    /// Credentials from a user and password; both must be non-empty and the user has no `:`.
    pub fn new(user: &str, password: &str) -> Option<Self> {
        if user.is_empty() || password.is_empty() || user.contains(':') {
            return None;
        }
        Some(Self {
            user: user.to_owned(),
            password: password.to_owned(),
        })
    }

    /// Reads `user:password` from a file (the `--zk-auth-file` flag). Surrounding whitespace and a trailing
    /// newline are ignored; the password may contain `:`.
    pub fn from_file(path: &Path) -> Result<Self, UrlError> {
        let text = std::fs::read_to_string(path).map_err(|e| UrlError::AuthFileIo {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let format_err = || UrlError::AuthFileFormat {
            path: path.display().to_string(),
        };
        let line = text.trim();
        if line.lines().count() != 1 {
            return Err(format_err());
        }
        let (user, password) = line.split_once(':').ok_or_else(format_err)?;
        Self::new(user, password).ok_or_else(format_err)
    }

    /// The user name (safe to log).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The bytes given to ZooKeeper's `digest` auth scheme. Never log these.
    pub fn auth_bytes(&self) -> Vec<u8> {
        format!("{}:{}", self.user, self.password).into_bytes()
    }
}

/// A parsed `zk://[user:pass@]host1:2181,host2:2181/path` URL.
#[derive(Clone, PartialEq, Eq)]
pub struct ZkUrl {
    hosts: Vec<String>,
    path: String,
    credentials: Option<DigestCredentials>,
}

impl fmt::Debug for ZkUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZkUrl")
            .field("hosts", &self.hosts)
            .field("path", &self.path)
            .field("credentials", &self.credentials)
            .finish()
    }
}

/// Prints the URL without credentials, so it is safe to log.
impl fmt::Display for ZkUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "zk://{}{}", self.hosts.join(","), self.path)
    }
}

impl ZkUrl {
    /// A URL from parts already validated elsewhere (tests, the local-cluster runner).
    pub fn new(hosts: Vec<String>, path: &str) -> Result<Self, UrlError> {
        if hosts.is_empty() {
            return Err(UrlError::NoHosts);
        }
        for h in &hosts {
            validate_host(h)?;
        }
        validate_path(path)?;
        Ok(Self {
            hosts,
            path: path.to_owned(),
            credentials: None,
        })
    }

    /// The `host:port` entries, in the order given.
    pub fn hosts(&self) -> &[String] {
        &self.hosts
    }

    /// The absolute znode path every Tether znode lives under (no trailing `/`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Credentials embedded in the URL, if any (discouraged: prefer `--zk-auth-file`).
    pub fn credentials(&self) -> Option<&DigestCredentials> {
        self.credentials.as_ref()
    }

    /// The client connect string `host1:2181,host2:2181` (no chroot: paths are always absolute).
    pub fn connect_string(&self) -> String {
        self.hosts.join(",")
    }

    /// The same hosts with another path (e.g. for a sibling tree).
    pub fn with_path(&self, path: &str) -> Result<Self, UrlError> {
        validate_path(path)?;
        Ok(Self {
            path: path.to_owned(),
            ..self.clone()
        })
    }

    /// Whether a `--state`/`--master` value is a ZooKeeper URL (as opposed to a directory or `http://`).
    pub fn is_zk(s: &str) -> bool {
        s.starts_with("zk://")
    }
}

impl FromStr for ZkUrl {
    type Err = UrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s.strip_prefix("zk://").ok_or_else(|| {
            // Never echo what could be credentials.
            let shown = if s.contains('@') {
                "<redacted>".to_owned()
            } else {
                s.to_owned()
            };
            UrlError::Scheme(shown)
        })?;
        let slash = rest
            .find('/')
            .ok_or_else(|| UrlError::Path(String::new()))?;
        let (authority, path) = rest.split_at(slash);
        let (credentials, hosts) = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => {
                let (user, password) = userinfo.split_once(':').ok_or(UrlError::UrlCredentials)?;
                let creds =
                    DigestCredentials::new(user, password).ok_or(UrlError::UrlCredentials)?;
                (Some(creds), hosts)
            }
            None => (None, authority),
        };
        if hosts.is_empty() {
            return Err(UrlError::NoHosts);
        }
        let hosts: Vec<String> = hosts.split(',').map(str::to_owned).collect();
        for h in &hosts {
            validate_host(h)?;
        }
        let path = path.strip_suffix('/').unwrap_or(path);
        validate_path(path)?;
        Ok(Self {
            hosts,
            path: path.to_owned(),
            credentials,
        })
    }
}

fn validate_host(h: &str) -> Result<(), UrlError> {
    let bad = || UrlError::Host(h.to_owned());
    let (host, port) = h.rsplit_once(':').ok_or_else(bad)?;
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '[' | ']' | ':'));
    let port_ok = port.parse::<u16>().is_ok_and(|p| p != 0);
    if host_ok && port_ok {
        Ok(())
    } else {
        Err(bad())
    }
}

fn validate_path(p: &str) -> Result<(), UrlError> {
    let bad = || UrlError::Path(p.to_owned());
    let rest = p.strip_prefix('/').ok_or_else(bad)?;
    if rest.is_empty() {
        return Err(bad());
    }
    for comp in rest.split('/') {
        if comp.is_empty() || comp == "." || comp == ".." || comp.chars().any(|c| c.is_control()) {
            return Err(bad());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_hosts_and_path() {
        let u: ZkUrl = "zk://zk1:2181,zk2.example.com:2182/tether/es-prod"
            .parse()
            .unwrap();
        assert_eq!(u.hosts(), ["zk1:2181", "zk2.example.com:2182"]);
        assert_eq!(u.path(), "/tether/es-prod");
        assert_eq!(u.connect_string(), "zk1:2181,zk2.example.com:2182");
        assert!(u.credentials().is_none());
        assert_eq!(
            u.to_string(),
            "zk://zk1:2181,zk2.example.com:2182/tether/es-prod"
        );
    }

    #[test]
    fn trailing_slash_is_dropped() {
        let u: ZkUrl = "zk://127.0.0.1:2181/mesos/".parse().unwrap();
        assert_eq!(u.path(), "/mesos");
    }

    #[test]
    fn credentials_are_parsed_and_never_printed() {
        let u: ZkUrl = "zk://tether:s3cr3t:x@zk1:2181/tether/a".parse().unwrap();
        let c = u.credentials().unwrap();
        assert_eq!(c.user(), "tether");
        assert_eq!(c.auth_bytes(), b"tether:s3cr3t:x");
        let shown = format!("{u:?} {u}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn rejects_bad_urls_with_clear_errors() {
        let cases = [
            (
                "http://zk1:2181/a",
                UrlError::Scheme("http://zk1:2181/a".into()),
            ),
            ("zk:///tether", UrlError::NoHosts),
            ("zk://zk1/tether", UrlError::Host("zk1".into())),
            ("zk://zk1:0/tether", UrlError::Host("zk1:0".into())),
            ("zk://zk1:2181,/tether", UrlError::Host(String::new())),
            ("zk://zk1:2181", UrlError::Path(String::new())),
            ("zk://zk1:2181/", UrlError::Path(String::new())),
            ("zk://zk1:2181/a//b", UrlError::Path("/a//b".into())),
            ("zk://zk1:2181/a/../b", UrlError::Path("/a/../b".into())),
            ("zk://:pw@zk1:2181/a", UrlError::UrlCredentials),
            ("zk://user@zk1:2181/a", UrlError::UrlCredentials),
        ];
        for (input, want) in cases {
            assert_eq!(input.parse::<ZkUrl>().unwrap_err(), want, "{input}");
        }
        let err = "http://u:secret@h:1/a"
            .parse::<ZkUrl>()
            .unwrap_err()
            .to_string();
        assert!(!err.contains("secret"), "{err}");
    }

    #[test]
    fn auth_file_round_trip_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good");
        std::fs::write(&good, "tether:pa:ss\n").unwrap();
        let c = DigestCredentials::from_file(&good).unwrap();
        assert_eq!(c.auth_bytes(), b"tether:pa:ss");
        assert!(!format!("{c:?}").contains("pa:ss"));
        for bad in ["", "nopassword", ":pw", "u:", "a:b\nc:d"] {
            let p = dir.path().join("bad");
            std::fs::write(&p, bad).unwrap();
            assert!(
                matches!(
                    DigestCredentials::from_file(&p),
                    Err(UrlError::AuthFileFormat { .. })
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            DigestCredentials::from_file(&dir.path().join("missing")),
            Err(UrlError::AuthFileIo { .. })
        ));
    }

    proptest! {
        #[test]
        fn accepted_urls_reparse_to_themselves(s in "(zk://)?\\PC{0,60}") {
            if let Ok(u) = s.parse::<ZkUrl>() {
                // Display drops credentials, so compare without them.
                let again: ZkUrl = u.to_string().parse().unwrap();
                prop_assert_eq!(again.hosts(), u.hosts());
                prop_assert_eq!(again.path(), u.path());
            }
        }

        #[test]
        fn valid_urls_round_trip(
            hosts in proptest::collection::vec(("[a-z][a-z0-9.-]{0,10}", 1u16..), 1..4),
            comps in proptest::collection::vec("[a-zA-Z0-9_-]{1,8}", 1..4),
        ) {
            let hosts: Vec<String> = hosts.into_iter().map(|(h, p)| format!("{h}:{p}")).collect();
            let path = format!("/{}", comps.join("/"));
            let s = format!("zk://{}{}", hosts.join(","), path);
            let u: ZkUrl = s.parse().unwrap();
            prop_assert_eq!(u.hosts(), hosts.as_slice());
            prop_assert_eq!(u.path(), path.as_str());
            prop_assert_eq!(u.to_string(), s);
        }
    }
}
