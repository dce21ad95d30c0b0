//! What the coordination layer knows and keeps: nodes, voting configurations, the cluster state and its
//! durable copy in `<data>/_state/`.
//!
//! As in Elasticsearch's `CoordinationState`: a node persists its current term and its last *accepted*
//! cluster state, which carries the last committed and the last accepted voting configurations; a state
//! becomes committed once a quorum of both configurations accepted it. The cluster UUID is chosen by the
//! first elected master and is *committed* with the first committed state; from then on the node belongs
//! to that cluster for as long as its data path lives. Bootstrapping only fills the two voting
//! configurations of a node whose data path holds none.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::routing::{Metadata, RoutingTable};
use crate::es_standin::data_path::write_durably;
use crate::es_standin::image::EsVersion;

/// The UUID a node reports before it belongs to a cluster.
pub const UNKNOWN_UUID: &str = "_na_";
/// Prefix of voting-configuration entries that stand for `cluster.initial_master_nodes` entries not
/// discovered when the cluster was bootstrapped.
pub const BOOTSTRAP_PLACEHOLDER_PREFIX: &str = "{bootstrap-placeholder}-";

/// A node as its peers know it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscoveryNode {
    pub id: String,
    pub name: String,
    /// The published transport address.
    pub address: SocketAddr,
    /// The published host as configured (a name or an IP): what a peer verifies the certificate against.
    pub host: String,
    pub roles: BTreeSet<String>,
    pub version: EsVersion,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// New on every start (Elasticsearch's ephemeral id): a node that restarted before the master noticed
    /// is a node that left and joined again, with its copies to recover.
    #[serde(default)]
    pub ephemeral_id: String,
}

impl DiscoveryNode {
    pub fn is_master_eligible(&self) -> bool {
        self.roles.contains("master")
    }

    pub fn is_data(&self) -> bool {
        self.roles
            .iter()
            .any(|r| r == "data" || r.starts_with("data_"))
    }

    /// `cluster.initial_master_nodes` entries name a node, its address or its IP.
    pub fn matches_requirement(&self, requirement: &str) -> bool {
        self.name == requirement
            || self.address.to_string() == requirement
            || self.address.ip().to_string() == requirement
    }
}

impl std::fmt::Display for DiscoveryNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{{{}}}{{{}}}{{{}}}", self.name, self.id, self.address)
    }
}

/// A set of master-eligible node ids whose majority decides.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VotingConfig(pub BTreeSet<String>);

impl VotingConfig {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// More than half of the configuration is among `votes`.
    pub fn has_quorum(&self, votes: &BTreeSet<String>) -> bool {
        let n = self.0.iter().filter(|id| votes.contains(*id)).count();
        n * 2 > self.0.len()
    }

    pub fn quorum_size(&self) -> usize {
        self.0.len() / 2 + 1
    }
}

impl std::fmt::Display for VotingConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.0.iter().map(String::as_str).collect();
        write!(f, "[{}]", ids.join(", "))
    }
}

/// The cluster state the stand-in replicates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    pub cluster_name: String,
    pub cluster_uuid: String,
    pub uuid_committed: bool,
    pub term: u64,
    pub version: u64,
    pub master: Option<String>,
    pub nodes: BTreeMap<String, DiscoveryNode>,
    pub last_committed_config: VotingConfig,
    pub last_accepted_config: VotingConfig,
    /// Index names (their settings are in `metadata.indices`).
    pub indices: BTreeSet<String>,
    #[serde(default)]
    pub metadata: Metadata,
    /// Index → shard → copies ([`super::routing`]).
    #[serde(default)]
    pub routing: RoutingTable,
}

impl ClusterState {
    pub fn empty(cluster_name: &str) -> ClusterState {
        ClusterState {
            cluster_name: cluster_name.to_owned(),
            cluster_uuid: UNKNOWN_UUID.to_owned(),
            uuid_committed: false,
            term: 0,
            version: 0,
            master: None,
            nodes: BTreeMap::new(),
            last_committed_config: VotingConfig::default(),
            last_accepted_config: VotingConfig::default(),
            indices: BTreeSet::new(),
            metadata: Metadata::default(),
            routing: RoutingTable::new(),
        }
    }

    /// Whether both configurations have a quorum among `votes` (what elections and commits need).
    pub fn has_quorum(&self, votes: &BTreeSet<String>) -> bool {
        self.last_committed_config.has_quorum(votes) && self.last_accepted_config.has_quorum(votes)
    }

    pub fn master_node(&self) -> Option<&DiscoveryNode> {
        self.master.as_ref().and_then(|id| self.nodes.get(id))
    }
}

/// What a node keeps in `<data>/_state/coordination.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Persisted {
    pub node_id: String,
    /// The version that last wrote this data path (a node cannot go back to an older one).
    pub node_version: EsVersion,
    pub current_term: u64,
    pub accepted: ClusterState,
}

/// Why the state on disk cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Elasticsearch's `NodeMetadata.upgradeToCurrentVersion`, word for word: data a newer version wrote
    /// (its node metadata, cluster state and Lucene indices) cannot be read by an older one.
    #[error("cannot downgrade a node from version [{from}] to version [{to}]")]
    Downgrade { from: EsVersion, to: EsVersion },
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
}

/// The durable home of [`Persisted`].
#[derive(Debug, Clone)]
pub struct StateStore {
    file: PathBuf,
}

impl StateStore {
    pub fn new(state_dir: &Path) -> StateStore {
        StateStore {
            file: state_dir.join("coordination.json"),
        }
    }

    /// Loads the state, or starts a new one with a fresh node id; refuses data written by a newer version.
    pub fn load_or_create(
        &self,
        cluster_name: &str,
        version: EsVersion,
    ) -> Result<Persisted, StateError> {
        let io = |e: &dyn std::fmt::Display| StateError::Io {
            path: self.file.clone(),
            message: e.to_string(),
        };
        let mut p = match std::fs::read(&self.file) {
            Ok(bytes) => serde_json::from_slice::<Persisted>(&bytes).map_err(|e| io(&e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Persisted {
                node_id: new_uuid(),
                node_version: version,
                current_term: 0,
                accepted: ClusterState::empty(cluster_name),
            },
            Err(e) => return Err(io(&e)),
        };
        if p.node_version > version {
            return Err(StateError::Downgrade {
                from: p.node_version,
                to: version,
            });
        }
        p.node_version = version;
        self.save(&p)?;
        Ok(p)
    }

    /// Writes durably (fsync, rename, fsync the directory) before the caller acts on it.
    pub fn save(&self, p: &Persisted) -> Result<(), StateError> {
        let body = serde_json::to_vec_pretty(p).unwrap_or_default();
        write_durably(&self.file, &body).map_err(|e| StateError::Io {
            path: self.file.clone(),
            message: e.to_string(),
        })
    }
}

/// A random 22-character id in Elasticsearch's style (URL-safe base64 of 16 random bytes).
pub fn new_uuid() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes())
}

/// The voting configuration Elasticsearch's `Reconfigurator` picks with
/// `cluster.auto_shrink_voting_configuration: true`: live master-eligible nodes first (the master, then
/// those already in the configuration, then by id), then dead ones of the current configuration, as many
/// as the larger of the live count rounded down to odd and 3 (1 while the configuration is smaller than
/// 3); kept unchanged unless the new one has a quorum of live nodes. `retired` (voting configuration
/// exclusions) are left out altogether, as Elasticsearch's `retiredNodeIds`.
pub fn reconfigure(
    live_master_eligible: &BTreeSet<String>,
    retired: &BTreeSet<String>,
    master: &str,
    current: &VotingConfig,
) -> VotingConfig {
    let live: BTreeSet<String> = live_master_eligible.difference(retired).cloned().collect();
    let live_master_eligible = &live;
    #[derive(PartialEq, Eq, PartialOrd, Ord)]
    struct Candidate {
        dead: bool,
        not_master: bool,
        not_in_config: bool,
        id: String,
    }
    let mut ordered: BTreeSet<Candidate> = live_master_eligible
        .iter()
        .map(|id| Candidate {
            dead: false,
            not_master: id != master,
            not_in_config: !current.0.contains(id),
            id: id.clone(),
        })
        .collect();
    for id in current
        .0
        .iter()
        .filter(|id| !live_master_eligible.contains(*id) && !retired.contains(*id))
    {
        ordered.insert(Candidate {
            dead: true,
            not_master: true,
            not_in_config: false,
            id: id.clone(),
        });
    }
    let minimum = if current.0.len() < 3 { 1 } else { 3 };
    let live = live_master_eligible.len();
    let round_down_to_odd = if live.is_multiple_of(2) {
        live.saturating_sub(1)
    } else {
        live
    };
    let target = round_down_to_odd.max(minimum);
    let new = VotingConfig(ordered.into_iter().take(target).map(|c| c.id).collect());
    if new.has_quorum(live_master_eligible) {
        new
    } else {
        current.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| (*s).to_owned()).collect()
    }

    fn none() -> BTreeSet<String> {
        BTreeSet::new()
    }

    #[test]
    fn excluded_nodes_leave_the_configuration_and_are_not_added_back() {
        let three = VotingConfig(set(&["a", "b", "c"]));
        // c is excluded while alive: two voters remain, and c is not taken back while excluded.
        assert_eq!(
            reconfigure(&set(&["a", "b", "c"]), &set(&["c"]), "a", &three),
            VotingConfig(set(&["a", "b"]))
        );
        let five = VotingConfig(set(&["a", "b", "c", "d", "e"]));
        assert_eq!(
            reconfigure(
                &set(&["a", "b", "c", "d", "e"]),
                &set(&["d", "e"]),
                "a",
                &five
            ),
            three
        );
        // Without the exclusion c would be kept as the third voter.
        assert_eq!(
            reconfigure(&set(&["a", "b", "c"]), &none(), "a", &three),
            three
        );
    }

    #[test]
    fn quorum_is_a_strict_majority() {
        let c = VotingConfig(set(&["a", "b", "c"]));
        assert!(!c.has_quorum(&set(&["a"])));
        assert!(c.has_quorum(&set(&["a", "b"])));
        assert!(!c.has_quorum(&set(&["a", "x", "y"])));
        let four = VotingConfig(set(&["a", "b", "c", "d"]));
        assert!(!four.has_quorum(&set(&["a", "b"])));
        assert!(!VotingConfig::default().has_quorum(&set(&["a"])));
    }

    #[test]
    fn reconfiguration_grows_to_odd_sizes_and_never_shrinks_below_three() {
        let placeholder = format!("{BOOTSTRAP_PLACEHOLDER_PREFIX}n3");
        let boot = VotingConfig(set(&["a", "b", &placeholder]));
        // The third node joins: the placeholder goes.
        assert_eq!(
            reconfigure(&set(&["a", "b", "c"]), &none(), "a", &boot),
            VotingConfig(set(&["a", "b", "c"]))
        );
        let three = VotingConfig(set(&["a", "b", "c"]));
        // One dies: the configuration keeps it so that 2 of 3 still decide.
        assert_eq!(reconfigure(&set(&["a", "b"]), &none(), "a", &three), three);
        // A fourth joins: 4 rounds down to 3.
        assert_eq!(
            reconfigure(&set(&["a", "b", "c", "d"]), &none(), "a", &three),
            three
        );
        // Five live nodes: all five vote.
        assert_eq!(
            reconfigure(&set(&["a", "b", "c", "d", "e"]), &none(), "a", &three),
            VotingConfig(set(&["a", "b", "c", "d", "e"]))
        );
        // A single-node cluster stays single.
        let one = VotingConfig(set(&["a"]));
        assert_eq!(reconfigure(&set(&["a"]), &none(), "a", &one), one);
        assert_eq!(reconfigure(&set(&["a", "b"]), &none(), "a", &one), one);
    }
}
