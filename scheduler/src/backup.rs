//! Backups of the persisted state: the document `tetherctl state export` writes (made here, from the
//! loop's state, by the `ExportState` admin call) and `tether-scheduler --restore FILE` reads.
//!
//! The document is JSON, versioned by `format_version`; a reader refuses any version it does not know
//! rather than guessing. The cluster's secrets (the CA certificate and key, the `elastic` password) are in
//! it only when asked for; otherwise `"secrets": {"kind": "omitted"}` says they were left out, and
//! `{"kind": "none"}` that the scheduler had none (Elasticsearch security off).
//!
//! A restore writes into an empty store only, and only after the whole document was checked: the format,
//! every id, the state's own rules ([`PersistedState::check`]), the configuration's ([`Core::new`]), the
//! framework name, and the secrets (the key must sign with the certificate). Nothing is written before
//! all of that passed, so a bad file leaves the store as it was.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tether_core::{Core, PersistedState};
use tether_zk::{ZkSession, ZkStore};

use crate::agent_identity::AgentSecret;
use crate::args::Args;
use crate::cluster_ca::{ClusterSecrets, SecretsError};
use crate::config;
use crate::election;
use crate::error::SchedulerError;
use crate::store::zk::ZkStateStore;
use crate::store::{StateStore, StoreError};

/// What the document's `format` field says.
pub const FORMAT: &str = "tether-state";
/// The version this scheduler writes. Version 2 added the node groups (`state.groups`, absent without
/// `--group`); version 1 documents are version 2 documents without groups and are read as such. A
/// scheduler that reads version 1 only refuses a version 2 document rather than drop its groups.
pub const FORMAT_VERSION: u32 = 2;
/// Every version this scheduler reads.
pub const READABLE_VERSIONS: &[u32] = &[1, 2];

/// How long a ZooKeeper restore waits to be elected (another scheduler leading means the store is in use).
const ELECTION_WAIT: Duration = Duration::from_secs(30);

/// A backup document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backup {
    /// Always [`FORMAT`].
    pub format: String,
    /// Always [`FORMAT_VERSION`] for documents this scheduler writes.
    pub format_version: u32,
    pub exported_at_unix_ms: u64,
    /// `--framework-name` of the scheduler that exported it; a restore refuses another name.
    pub framework_name: String,
    /// The persisted state, as the embedded store's snapshot holds it.
    pub state: PersistedState,
    pub secrets: Secrets,
    /// The agent-token secret (what signs every `tetherctl agent-token`), only with `--include-secrets`
    /// and once a token was minted. Without it the restored scheduler refuses every sidecar's token
    /// until new ones are minted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_token_secret: Option<SecretText>,
}

/// A secret's text in a backup, never printed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretText(pub String);

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The cluster's secrets in a backup.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Secrets {
    /// Elasticsearch security was off: the scheduler had no CA and no password.
    None,
    /// Left out (exported without `--include-secrets`).
    Omitted,
    Included {
        ca_cert_pem: String,
        ca_key_pem: String,
        elastic_password: String,
    },
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Secrets::None => "None",
            Secrets::Omitted => "Omitted",
            Secrets::Included { .. } => "Included(..)",
        })
    }
}

/// Why a backup could not be read or restored. Each one leaves the target store as it was.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("cannot read the backup {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the backup is not valid JSON: {0}")]
    Json(String),
    #[error("the backup is not a Tether state backup: {0}")]
    Format(String),
    #[error(
        "the backup has format_version {found}; this scheduler reads versions 1 to {FORMAT_VERSION}"
    )]
    Version { found: u64 },
    #[error("the backup's state is invalid: {0}")]
    Invalid(String),
    #[error("the backup's secrets are unusable: {0}")]
    Secrets(#[from] SecretsError),
    #[error("refusing to restore into {target}: {why}")]
    NotEmpty { target: String, why: String },
    #[error("cannot encode the backup: {0}")]
    Encode(String),
}

impl Backup {
    /// The document for `state`; the secrets only when `include_secrets`.
    #[must_use]
    pub fn export(
        framework_name: &str,
        state: &PersistedState,
        secrets: Option<&ClusterSecrets>,
        include_secrets: bool,
        now_unix_ms: u64,
    ) -> Backup {
        let secrets = match (secrets, include_secrets) {
            (None, _) => Secrets::None,
            (Some(_), false) => Secrets::Omitted,
            (Some(s), true) => Secrets::Included {
                ca_cert_pem: s.ca_pem().to_owned(),
                ca_key_pem: s.ca_key_pem().to_owned(),
                elastic_password: s.password().to_owned(),
            },
        };
        Backup {
            format: FORMAT.to_owned(),
            format_version: FORMAT_VERSION,
            exported_at_unix_ms: now_unix_ms,
            framework_name: framework_name.to_owned(),
            state: state.clone(),
            secrets,
            agent_token_secret: None,
        }
    }

    /// The document with the agent-token secret, when secrets are asked for and one exists.
    #[must_use]
    pub fn with_agent_token_secret(
        mut self,
        secret: Option<&AgentSecret>,
        include_secrets: bool,
    ) -> Backup {
        self.agent_token_secret = secret
            .filter(|_| include_secrets)
            .map(|s| SecretText(s.text().to_owned()));
        self
    }

    /// The agent-token secret the document carries, checked.
    pub fn agent_secret(&self) -> Result<Option<AgentSecret>, BackupError> {
        self.agent_token_secret
            .as_ref()
            .map(|t| {
                AgentSecret::from_text(&t.0).map_err(|_| {
                    BackupError::Invalid("agent_token_secret is not 64 hex digits".into())
                })
            })
            .transpose()
    }

    pub fn to_json(&self) -> Result<String, BackupError> {
        serde_json::to_string_pretty(self).map_err(|e| BackupError::Encode(e.to_string()))
    }

    /// Reads a document: the format and its version first (so a newer document is refused as such, not
    /// as a field this version does not know), then every field, ids included.
    pub fn parse(text: &str) -> Result<Backup, BackupError> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| BackupError::Json(e.to_string()))?;
        let format = value.get("format").and_then(serde_json::Value::as_str);
        if format != Some(FORMAT) {
            return Err(BackupError::Format(format!(
                "`format` is {}, expected {FORMAT:?}",
                value
                    .get("format")
                    .map_or("missing".into(), ToString::to_string)
            )));
        }
        let version = value
            .get("format_version")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| BackupError::Format("`format_version` is missing".into()))?;
        if !READABLE_VERSIONS.iter().any(|v| u64::from(*v) == version) {
            return Err(BackupError::Version { found: version });
        }
        if version == 1 && value.pointer("/state/groups").is_some() {
            return Err(BackupError::Invalid(
                "a format_version 1 document has no node groups, but this one has `state.groups`"
                    .into(),
            ));
        }
        serde_json::from_value(value).map_err(|e| BackupError::Invalid(e.to_string()))
    }

    /// Everything a restore checks before writing, against the configuration it will run with; returns
    /// the secrets to write into the state directory, if the document has them.
    pub fn validate(
        &self,
        framework_name: &str,
        core_config: &tether_core::Config,
        operator_ca: bool,
    ) -> Result<Option<ClusterSecrets>, BackupError> {
        if self.framework_name != framework_name {
            return Err(BackupError::Invalid(format!(
                "it is of framework {:?}, this scheduler runs --framework-name {framework_name:?}",
                self.framework_name
            )));
        }
        self.state.check().map_err(BackupError::Invalid)?;
        Core::new(core_config.clone(), self.state.clone())
            .map_err(|e| BackupError::Invalid(e.to_string()))?;
        let secure = self
            .state
            .bootstrap
            .as_ref()
            .is_some_and(|b| b.security.is_on());
        match &self.secrets {
            Secrets::Included {
                ca_cert_pem,
                ca_key_pem,
                elastic_password,
            } => Ok(Some(ClusterSecrets::from_pems(
                ca_cert_pem.clone(),
                ca_key_pem.clone(),
                elastic_password.clone(),
            )?)),
            // A new CA would sign certificates the running nodes do not trust.
            Secrets::Omitted | Secrets::None if secure && !operator_ca => {
                Err(BackupError::Invalid(format!(
                    "the cluster bootstrapped with Elasticsearch security {} but the backup has no \
                     secrets: export it with --include-secrets, or give the cluster's --es-ca-cert, \
                     --es-ca-key and --es-password-file",
                    self.state
                        .bootstrap
                        .as_ref()
                        .map_or("on", |b| b.security.as_str())
                )))
            }
            Secrets::Omitted | Secrets::None => Ok(None),
        }
    }
}

/// What a restore wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// `--state-dir` or the `zk://` URL (credentials redacted).
    pub target: String,
    pub framework_id: Option<String>,
    pub nodes: usize,
    pub desired: u64,
    /// Where the secrets were written (the state directory, or ZooKeeper's document), when the backup
    /// had them.
    pub secrets_at: Option<String>,
}

/// `tether-scheduler --restore FILE`: checks `file` against the configuration in `args`, then loads it
/// into the empty store `args` names (`--state-dir`, or `--state zk://...`), and the secrets beside it
/// (into `--state-dir`, or ZooKeeper). Refuses a store that holds anything.
pub async fn restore(args: &Args, file: &Path) -> Result<Restored, SchedulerError> {
    let text = std::fs::read_to_string(file).map_err(|source| BackupError::Read {
        path: file.to_owned(),
        source,
    })?;
    let backup = Backup::parse(&text)?;
    let core_config = config::core_config(args)?;
    let secrets = backup.validate(
        &args.framework_name,
        &core_config,
        args.es_ca_cert.is_some(),
    )?;
    let agent_secret = backup.agent_secret()?;
    let agent_secret_file = args.state_dir.join(crate::store::secret::FILE);
    let writes = backup.state.writes();
    let secrets_at;
    let target = match args.state_url() {
        None => {
            let mut store = StateStore::open_file(&args.state_dir).await?;
            let target = args.state_dir.display().to_string();
            refuse_unless_fresh(&target, &store.state()?, store.is_fresh()?)?;
            write_secrets(secrets.as_ref(), &args.state_dir)?;
            if let Err(e) = store.write(writes).await {
                remove_secrets(secrets.as_ref(), &args.state_dir);
                return Err(e.into());
            }
            if let Some(a) = &agent_secret {
                crate::store::secret::save(&store, &agent_secret_file, a).await?;
            }
            secrets_at = secrets
                .as_ref()
                .map(|_| args.state_dir.display().to_string());
            target
        }
        Some(url) => {
            let target = format!("{url:?}");
            let zk = args.zk.config(url)?;
            // Looked at before campaigning: a running leader would keep this waiting for nothing.
            let session = ZkSession::connect(&zk).await?;
            let peek = ZkStateStore::load(
                ZkStore::open(session, None)
                    .await
                    .map_err(StoreError::from)?,
            )
            .await?;
            refuse_unless_fresh(&target, peek.state(), peek.is_fresh())?;
            let mut candidate =
                election::campaign(&zk, &config::hostname(args), "restoring".into()).await?;
            let elected = tokio::time::timeout(ELECTION_WAIT, election::elected(&mut candidate))
                .await
                .map_err(|_| BackupError::NotEmpty {
                    target: target.clone(),
                    why: format!(
                        "another scheduler leads there (not elected within {}s): stop every \
                         scheduler of this framework first",
                        ELECTION_WAIT.as_secs()
                    ),
                })??;
            let mut store = elected.store;
            refuse_unless_fresh(&target, store.state(), store.is_fresh())?;
            // With the state in ZooKeeper the cluster's secrets are kept there too.
            if secrets.is_some() && crate::store::cluster_secrets::exists(store.zk()).await? {
                candidate.resign().await;
                return Err(BackupError::NotEmpty {
                    target,
                    why: format!(
                        "it already holds cluster secrets ({})",
                        crate::store::cluster_secrets::ZNODE
                    ),
                }
                .into());
            }
            let mut written = store.write(&writes).await;
            if let (Ok(()), Some(s)) = (&written, &secrets) {
                written = crate::store::cluster_secrets::save(store.zk(), s).await;
            }
            if let (Ok(()), Some(a)) = (&written, &agent_secret) {
                let store = StateStore::Zk(Box::new(store));
                written = crate::store::secret::save(&store, &agent_secret_file, a).await;
            }
            candidate.resign().await;
            written?;
            secrets_at = secrets
                .as_ref()
                .map(|_| format!("{target} ({})", crate::store::cluster_secrets::ZNODE));
            target
        }
    };
    Ok(Restored {
        target,
        framework_id: backup
            .state
            .framework_id
            .as_ref()
            .map(|id| id.as_str().to_owned()),
        nodes: backup.state.slots.len(),
        desired: backup.state.desired,
        secrets_at,
    })
}

impl std::fmt::Display for Restored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "restored framework {} into {}: {} nodes, desired {}",
            self.framework_id
                .as_deref()
                .unwrap_or("(not yet registered)"),
            self.target,
            self.nodes,
            self.desired
        )?;
        match &self.secrets_at {
            Some(at) => write!(f, "; the cluster CA and elastic password in {at}"),
            None => Ok(()),
        }
    }
}

fn refuse_unless_fresh(
    target: &str,
    state: &PersistedState,
    fresh: bool,
) -> Result<(), BackupError> {
    if fresh {
        return Ok(());
    }
    Err(BackupError::NotEmpty {
        target: target.to_owned(),
        why: match &state.framework_id {
            Some(id) => format!("it already holds framework {}", id.as_str()),
            None => format!(
                "it already holds a state ({} nodes, desired {})",
                state.slots.len(),
                state.desired
            ),
        },
    })
}

/// Writes the secrets into `dir`, refusing when any of their files is there (checked before the state
/// is written, as the rest of the validation).
fn write_secrets(secrets: Option<&ClusterSecrets>, dir: &Path) -> Result<(), BackupError> {
    if let Some(s) = secrets {
        if let Some(p) = ClusterSecrets::paths(dir).into_iter().find(|p| p.exists()) {
            return Err(BackupError::NotEmpty {
                target: dir.display().to_string(),
                why: format!("{} exists", p.display()),
            });
        }
        std::fs::create_dir_all(dir).map_err(|source| BackupError::Read {
            path: dir.to_owned(),
            source,
        })?;
        s.create_in(dir)?;
    }
    Ok(())
}

fn remove_secrets(secrets: Option<&ClusterSecrets>, dir: &Path) {
    if secrets.is_some() {
        for p in ClusterSecrets::paths(dir) {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use tether_core::testing::{config, external, sample_state};

    use super::*;

    fn secrets() -> ClusterSecrets {
        let dir = tempfile::tempdir().expect("tempdir");
        ClusterSecrets::load_or_create(dir.path(), None, None).expect("secrets")
    }

    #[test]
    fn the_agent_token_secret_travels_only_when_asked_for_and_is_never_printed() {
        let secret = AgentSecret::generate();
        let doc = |include| {
            Backup::export("elasticsearch", &sample_state(), None, include, 7)
                .with_agent_token_secret(Some(&secret), include)
        };
        assert!(doc(false).agent_secret().expect("valid").is_none());
        assert!(!doc(false).to_json().expect("json").contains(secret.text()));
        let with = doc(true);
        assert!(!format!("{with:?}").contains(secret.text()));
        let back = Backup::parse(&with.to_json().expect("json")).expect("parses");
        let restored = back.agent_secret().expect("valid").expect("present");
        assert_eq!(restored.text(), secret.text());
        let mut bad = back;
        bad.agent_token_secret = Some(SecretText("not-hex".into()));
        assert!(matches!(bad.agent_secret(), Err(BackupError::Invalid(_))));
    }

    #[test]
    fn secrets_are_in_the_document_only_when_asked_for() {
        let s = secrets();
        let state = sample_state();
        let without = Backup::export("elasticsearch", &state, Some(&s), false, 7)
            .to_json()
            .expect("json");
        assert!(!without.contains("PRIVATE KEY") && !without.contains(s.password()));
        assert!(without.contains(r#""kind": "omitted""#), "{without}");
        let with = Backup::export("elasticsearch", &state, Some(&s), true, 7)
            .to_json()
            .expect("json");
        assert!(with.contains("PRIVATE KEY") && with.contains(s.password()));
        let back = Backup::parse(&with).expect("parses");
        assert_eq!(back.state, state);
        let restored = back
            .validate("elasticsearch", &config(external(false)), false)
            .expect("valid")
            .expect("secrets");
        assert_eq!(restored.ca_pem(), s.ca_pem());
        assert!(
            !format!("{back:?}").contains(s.password()),
            "never in Debug"
        );
        let none = Backup::export("elasticsearch", &state, None, true, 7);
        assert_eq!(none.secrets, Secrets::None);
    }

    #[test]
    fn a_wrong_format_or_version_is_refused_before_its_fields_are_read() {
        let doc = Backup::export("elasticsearch", &sample_state(), None, false, 7);
        let mut v = serde_json::to_value(&doc).expect("value");
        v["format_version"] = 3.into();
        v["a_field_of_version_3"] = true.into();
        let e = Backup::parse(&v.to_string()).expect_err("newer");
        assert!(matches!(e, BackupError::Version { found: 3 }), "{e}");
        v["format"] = "something-else".into();
        assert!(matches!(
            Backup::parse(&v.to_string()),
            Err(BackupError::Format(_))
        ));
        assert!(matches!(
            Backup::parse("{\"format\": \"tether-state\""),
            Err(BackupError::Json(_))
        ));
    }

    #[test]
    fn version_1_documents_restore_and_groups_round_trip() {
        // What a scheduler before node groups exported: version 1, no `groups`.
        let doc = Backup::export("elasticsearch", &sample_state(), None, false, 7);
        let mut v = serde_json::to_value(&doc).expect("value");
        assert!(v["state"].get("groups").is_none());
        v["format_version"] = 1.into();
        let old = Backup::parse(&v.to_string()).expect("version 1 reads");
        assert_eq!(old.state, sample_state());
        old.validate("elasticsearch", &config(external(false)), false)
            .expect("restorable");
        // A version 1 document cannot carry groups.
        v["state"]["groups"] = serde_json::json!({"data": {"index": 1, "desired": 0}});
        assert!(matches!(
            Backup::parse(&v.to_string()),
            Err(BackupError::Invalid(_))
        ));
        // The groups of a cluster with `--group` travel in version 2.
        let mut cfg = config(tether_core::Strategy::Normal);
        cfg.groups = vec![
            tether_core::GroupSpec::parse("masters:3:roles=master").expect("group"),
            tether_core::GroupSpec::parse("data:2:roles=data").expect("group"),
        ];
        let core = Core::new(cfg.clone(), PersistedState::default()).expect("core");
        let doc = Backup::export("elasticsearch", core.persisted(), None, false, 7);
        let text = doc.to_json().expect("json");
        let back = Backup::parse(&text).expect("parses");
        assert_eq!(back.format_version, 2);
        assert_eq!(&back.state, core.persisted());
        assert_eq!(back.state.groups.len(), 2);
        back.validate("elasticsearch", &cfg, false).expect("valid");
    }

    #[test]
    fn a_document_that_breaks_the_states_rules_is_invalid() {
        let doc = Backup::export("elasticsearch", &sample_state(), None, false, 7);
        let cfg = config(external(false));
        let mut v = serde_json::to_value(&doc).expect("value");
        v["state"]["slots"]["2"]["task"] = v["state"]["slots"]["1"]["task"].clone();
        let twice = Backup::parse(&v.to_string()).expect("well-formed");
        assert!(
            twice
                .validate("elasticsearch", &cfg, false)
                .expect_err("one task in two slots")
                .to_string()
                .contains("belongs to nodes")
        );
        v["state"]["slots"]["1"]["task"]["task_id"] = "".into();
        assert!(matches!(
            Backup::parse(&v.to_string()),
            Err(BackupError::Invalid(_))
        ));
        assert!(
            doc.validate("other", &cfg, false)
                .expect_err("another framework")
                .to_string()
                .contains("framework")
        );
    }

    #[test]
    fn a_secure_cluster_without_its_secrets_is_refused_unless_the_operator_gives_the_ca() {
        let mut state = sample_state();
        if let Some(b) = state.bootstrap.as_mut() {
            b.security = tether_core::config::Security::Transport;
        }
        let doc = Backup::export("elasticsearch", &state, Some(&secrets()), false, 7);
        let cfg = config(external(false));
        let e = doc
            .validate("elasticsearch", &cfg, false)
            .expect_err("no CA");
        assert!(e.to_string().contains("--include-secrets"), "{e}");
        assert!(
            doc.validate("elasticsearch", &cfg, true)
                .expect("operator CA")
                .is_none()
        );
    }
}
