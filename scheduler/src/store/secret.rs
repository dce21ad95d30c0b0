//! Where the agent-token secret is kept: beside the state it protects, so every HA candidate shares it.
//!
//! The embedded store keeps it in its directory as [`FILE`] (mode 0600 from creation on, replaced
//! atomically and durably by a rotation), like the cluster CA's key; ZooKeeper keeps it in the document
//! [`ZNODE`] under `<root>/state` (`{"value": "<64 hex digits>"}`, with the store's ACL: creator-only
//! with `--zk-auth-file`), written compare-and-set and fenced like every state write, so a deposed leader
//! cannot rotate it. It is never logged.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{StateStore, StoreError};
use crate::agent_identity::AgentSecret;

/// The embedded store's file, in its directory.
pub const FILE: &str = "agent-token.key";
/// The ZooKeeper document, under `<root>/state`.
pub const ZNODE: &str = "agent_token_secret";

#[derive(Serialize, Deserialize)]
struct Doc {
    value: String,
}

/// The stored secret, `None` when no token was ever minted.
pub async fn load(store: &StateStore, file: &Path) -> Result<Option<AgentSecret>, StoreError> {
    match store {
        StateStore::File(_) => {
            let owned = file.to_owned();
            tokio::task::spawn_blocking(move || load_file(&owned))
                .await
                .map_err(|e| StoreError::Interrupted(e.to_string()))?
        }
        StateStore::Zk(z) => z
            .zk()
            .get::<Doc>(ZNODE)
            .await?
            .map(|d| {
                AgentSecret::from_text(&d.value).map_err(|e| StoreError::ZkCorrupt {
                    key: ZNODE.to_owned(),
                    detail: e.to_string(),
                })
            })
            .transpose(),
    }
}

/// The embedded store's secret, read from `file` (`None` when absent).
pub fn load_file(file: &Path) -> Result<Option<AgentSecret>, StoreError> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StoreError::Io {
                path: file.to_owned(),
                source,
            });
        }
    };
    AgentSecret::from_text(&text)
        .map(Some)
        .map_err(|e| StoreError::Corrupt {
            path: file.to_owned(),
            detail: e.to_string(),
        })
}

/// Stores `secret` in place of any other, durably, before returning.
pub async fn save(store: &StateStore, file: &Path, secret: &AgentSecret) -> Result<(), StoreError> {
    match store {
        StateStore::File(_) => {
            let (file, text) = (file.to_owned(), secret.text().to_owned());
            tokio::task::spawn_blocking(move || write_private(&file, &text))
                .await
                .map_err(|e| StoreError::Interrupted(e.to_string()))?
        }
        StateStore::Zk(z) => {
            // Read first: the store writes compare-and-set against the version it last saw.
            let _ = z.zk().get::<serde_json::Value>(ZNODE).await?;
            z.zk()
                .put(
                    ZNODE,
                    &Doc {
                        value: secret.text().to_owned(),
                    },
                )
                .await?;
            Ok(())
        }
    }
}

/// Writes `<file>.tmp` created 0600 (never readable by others, not even for a moment), fsyncs it,
/// renames it over `file` and fsyncs the directory.
fn write_private(file: &Path, text: &str) -> Result<(), StoreError> {
    let io = |path: PathBuf| move |source| StoreError::Io { path, source };
    let tmp = file.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(tmp.clone()))?;
    f.write_all(text.as_bytes()).map_err(io(tmp.clone()))?;
    f.sync_all().map_err(io(tmp.clone()))?;
    std::fs::rename(&tmp, file).map_err(io(file.to_owned()))?;
    let dir = file.parent().unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir.to_owned()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[tokio::test]
    async fn the_embedded_secret_is_private_and_survives_a_rotation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateStore::open_file(dir.path()).await.expect("store");
        let file = dir.path().join(FILE);
        assert!(load(&store, &file).await.expect("load").is_none());
        let first = AgentSecret::generate();
        save(&store, &file, &first).await.expect("save");
        let mode = std::fs::metadata(&file).expect("file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let loaded = load(&store, &file).await.expect("load").expect("secret");
        assert_eq!(loaded.text(), first.text());
        let second = AgentSecret::generate();
        save(&store, &file, &second).await.expect("rotate");
        let loaded = load(&store, &file).await.expect("load").expect("secret");
        assert_eq!(loaded.text(), second.text());
        assert!(!file.with_extension("tmp").exists());
        std::fs::write(&file, "not hex").expect("corrupt it");
        assert!(load(&store, &file).await.is_err());
    }
}
