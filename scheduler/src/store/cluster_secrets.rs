//! The cluster CA and the `elastic` password with `--state zk://`: in ZooKeeper beside the state, so every
//! HA candidate signs with the same CA and logs in with the same password.
//!
//! The document [`ZNODE`] under `<root>/state` holds `{"ca_cert_pem", "ca_key_pem", "password"}` with the
//! store's ACL (creator-only with `--zk-auth-file`), written compare-and-set and fenced like every state
//! write. The first leader with security on generates it; the operator's `--es-ca-cert`/`--es-ca-key` and
//! `--es-password-file` take precedence over the stored parts (given all three, nothing is stored). Never
//! logged.

use serde::{Deserialize, Serialize};
use tether_zk::ZkStore;

use super::StoreError;
use crate::cluster_ca::{ClusterSecrets, OperatorSecrets, SecretsError};

/// The ZooKeeper document, under `<root>/state`.
pub const ZNODE: &str = "es_cluster_secrets";

#[derive(Serialize, Deserialize)]
struct Doc {
    ca_cert_pem: String,
    ca_key_pem: String,
    password: String,
}

/// Why the secrets could not be had from ZooKeeper.
#[derive(Debug, thiserror::Error)]
pub enum ZkSecretsError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the cluster secrets in ZooKeeper ({ZNODE}): {0}")]
    Secrets(#[from] SecretsError),
}

/// The secrets the leader signs with: the operator's parts, the rest from ZooKeeper (created there by
/// the first leader that needs them).
pub async fn load_or_create(
    zk: &ZkStore,
    operator: &OperatorSecrets,
) -> Result<ClusterSecrets, ZkSecretsError> {
    if let (Some((cert, key)), Some(password)) = (&operator.ca, &operator.password) {
        return Ok(ClusterSecrets::from_pems(
            cert.clone(),
            key.clone(),
            password.clone(),
        )?);
    }
    let doc = match zk.get::<Doc>(ZNODE).await.map_err(StoreError::from)? {
        Some(doc) => doc,
        None => {
            let (ca_cert_pem, ca_key_pem, password) = ClusterSecrets::generate()?;
            let doc = Doc {
                ca_cert_pem,
                ca_key_pem,
                password,
            };
            zk.put(ZNODE, &doc).await.map_err(StoreError::from)?;
            tracing::info!("generated the cluster CA and the elastic password, kept in ZooKeeper");
            doc
        }
    };
    let (cert, key) = operator
        .ca
        .clone()
        .unwrap_or((doc.ca_cert_pem, doc.ca_key_pem));
    let password = operator.password.clone().unwrap_or(doc.password);
    Ok(ClusterSecrets::from_pems(cert, key, password)?)
}

/// Whether ZooKeeper already holds cluster secrets.
pub async fn exists(zk: &ZkStore) -> Result<bool, StoreError> {
    Ok(zk
        .get::<serde_json::Value>(ZNODE)
        .await
        .map_err(StoreError::from)?
        .is_some())
}

/// Stores `secrets` (a restore into an empty store).
pub async fn save(zk: &ZkStore, secrets: &ClusterSecrets) -> Result<(), StoreError> {
    // Read first: the store writes compare-and-set against the version it last saw.
    let _ = zk.get::<serde_json::Value>(ZNODE).await?;
    zk.put(
        ZNODE,
        &Doc {
            ca_cert_pem: secrets.ca_pem().to_owned(),
            ca_key_pem: secrets.ca_key_pem().to_owned(),
            password: secrets.password().to_owned(),
        },
    )
    .await?;
    Ok(())
}
