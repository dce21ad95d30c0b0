//! One ZooKeeper session for Tether: connecting with optional digest auth, the ACL every Tether znode gets,
//! and paths under the configured root. The store, the election and the master detector share it.

use std::time::Duration;

use zookeeper_client as zk;

use crate::url::{DigestCredentials, ZkUrl};

/// A ZooKeeper failure with the operation and path it concerned.
#[derive(Debug, thiserror::Error)]
pub enum ZkError {
    /// No session could be established.
    #[error("cannot connect to ZooKeeper {url}: {source}")]
    Connect { url: String, source: zk::Error },
    /// The server refused our digest credentials (user shown, password never).
    #[error("ZooKeeper refused digest credentials for user {user:?}: {source}")]
    Auth { user: String, source: zk::Error },
    /// An operation failed.
    #[error("ZooKeeper {op} {path}: {source}")]
    Op {
        op: &'static str,
        path: String,
        source: zk::Error,
    },
}

impl ZkError {
    /// The underlying client error, if any.
    pub fn source_error(&self) -> &zk::Error {
        match self {
            ZkError::Connect { source, .. }
            | ZkError::Auth { source, .. }
            | ZkError::Op { source, .. } => source,
        }
    }

    /// Whether the session is gone for good (expired, closed, auth failed): a new session is needed.
    pub fn is_session_terminal(&self) -> bool {
        matches!(
            self.source_error(),
            zk::Error::SessionExpired | zk::Error::ClientClosed | zk::Error::AuthFailed
        )
    }
}

/// How to reach ZooKeeper: URL (hosts and root path), credentials and session timeout.
#[derive(Clone, Debug)]
pub struct ZkConfig {
    /// Hosts and the root path of Tether's tree (e.g. `/tether/<framework-name>`) or of the Mesos masters.
    pub url: ZkUrl,
    /// Digest credentials (from `--zk-auth-file`); when set, Tether's znodes are readable and writable only
    /// by this identity. Credentials embedded in the URL are used when this is `None`.
    pub credentials: Option<DigestCredentials>,
    /// Requested session timeout; the server clamps it to `[2, 20] x tickTime`.
    pub session_timeout: Duration,
}

impl ZkConfig {
    /// Default session timeout: long enough to ride out a GC pause, short enough for a quick failover.
    pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(10);

    /// A config with the default session timeout and the URL's credentials, if any.
    pub fn new(url: ZkUrl) -> Self {
        Self {
            url,
            credentials: None,
            session_timeout: Self::DEFAULT_SESSION_TIMEOUT,
        }
    }

    /// Sets the digest credentials.
    pub fn with_credentials(mut self, credentials: Option<DigestCredentials>) -> Self {
        self.credentials = credentials;
        self
    }

    /// Sets the requested session timeout.
    pub fn with_session_timeout(mut self, timeout: Duration) -> Self {
        self.session_timeout = timeout;
        self
    }

    /// The credentials in effect: the explicit ones, else those in the URL.
    pub fn effective_credentials(&self) -> Option<&DigestCredentials> {
        self.credentials.as_ref().or(self.url.credentials())
    }
}

/// A connected ZooKeeper session rooted at the URL's path. Cheap to clone (clones share the session).
#[derive(Clone, Debug)]
pub struct ZkSession {
    client: zk::Client,
    root: String,
    authed: bool,
}

impl ZkSession {
    /// Connects (waiting up to about the session timeout for a server) and, with credentials, adds digest
    /// auth to the session before anything else is sent.
    pub async fn connect(config: &ZkConfig) -> Result<Self, ZkError> {
        let mut connector = zk::Client::connector().with_session_timeout(config.session_timeout);
        let creds = config.effective_credentials();
        if let Some(c) = creds {
            connector = connector.with_auth("digest", &c.auth_bytes());
        }
        let client = connector
            .connect(&config.url.connect_string())
            .await
            .map_err(|source| match (source, creds) {
                (zk::Error::AuthFailed, Some(c)) => ZkError::Auth {
                    user: c.user().to_owned(),
                    source: zk::Error::AuthFailed,
                },
                (source, _) => ZkError::Connect {
                    url: config.url.to_string(),
                    source,
                },
            })?;
        tracing::info!(url = %config.url, session = %client.session_id(), timeout_ms = client.session_timeout().as_millis() as u64,
            authenticated = creds.is_some(), "ZooKeeper session established");
        Ok(Self {
            client,
            root: config.url.path().to_owned(),
            authed: creds.is_some(),
        })
    }

    /// The underlying client, for operations this crate does not wrap.
    pub fn client(&self) -> &zk::Client {
        &self.client
    }

    /// The absolute root path (no trailing `/`).
    pub fn root(&self) -> &str {
        &self.root
    }

    /// `<root>/<rel>`.
    pub fn path(&self, rel: &str) -> String {
        if rel.is_empty() {
            self.root.clone()
        } else {
            format!("{}/{}", self.root, rel.trim_start_matches('/'))
        }
    }

    /// The negotiated session timeout.
    pub fn session_timeout(&self) -> Duration {
        self.client.session_timeout()
    }

    /// Whether the session is currently connected to a server.
    pub fn is_connected(&self) -> bool {
        self.client.state() == zk::SessionState::SyncConnected
    }

    /// Whether digest credentials were added to this session.
    pub fn is_authenticated(&self) -> bool {
        self.authed
    }

    /// A watcher of session state changes (Disconnected, SyncConnected, Expired, Closed, AuthFailed).
    pub fn state_watcher(&self) -> zk::StateWatcher {
        self.client.state_watcher()
    }

    /// The ACL for znodes Tether creates at or under the root: with credentials, all permissions for the
    /// session's digest identity only (`world:anyone` gets nothing); without, open.
    pub fn acls(&self) -> zk::Acls<'static> {
        if self.authed {
            zk::Acls::creator_all()
        } else {
            zk::Acls::anyone_all()
        }
    }

    /// Persistent create options with [`Self::acls`].
    pub fn persistent_options(&self) -> zk::CreateOptions<'static> {
        zk::CreateMode::Persistent.with_acls(self.acls())
    }

    /// Creates `path` and its missing ancestors (like `mkdir -p`). Ancestors above the root (e.g. `/tether`,
    /// shared by several frameworks) are created open so another framework with other credentials can
    /// still create its own tree beside ours; the root and everything below get [`Self::acls`].
    pub async fn ensure_path(&self, path: &str) -> Result<(), ZkError> {
        let mut prefix = String::new();
        for comp in path
            .trim_start_matches('/')
            .split('/')
            .filter(|c| !c.is_empty())
        {
            prefix.push('/');
            prefix.push_str(comp);
            let inside = prefix == self.root || prefix.starts_with(&format!("{}/", self.root));
            let options = if inside {
                self.persistent_options()
            } else {
                zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all())
            };
            match self.client.check_stat(&prefix).await {
                Ok(Some(_)) => continue,
                Ok(None) => {}
                Err(source) => {
                    return Err(ZkError::Op {
                        op: "exists",
                        path: prefix,
                        source,
                    });
                }
            }
            match self.client.create(&prefix, &[], &options).await {
                Ok(_) | Err(zk::Error::NodeExists) => {}
                Err(source) => {
                    return Err(ZkError::Op {
                        op: "create",
                        path: prefix,
                        source,
                    });
                }
            }
        }
        Ok(())
    }
}
