//! The coordination settings, with Elasticsearch's names, defaults and lower bounds.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::es_standin::settings::{Settings, SettingsError};

/// The coordination settings, with Elasticsearch's defaults and lower bounds.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    pub cluster_name: String,
    pub seed_hosts: Vec<String>,
    /// The port of a seed host given without one.
    pub default_port: u16,
    pub initial_master_nodes: Vec<String>,
    pub single_node: bool,
    /// `Some` when no discovery setting is configured (development mode).
    pub unconfigured_bootstrap: Option<Duration>,
    pub find_peers_interval: Duration,
    pub request_peers_timeout: Duration,
    pub election_initial_timeout: Duration,
    pub election_back_off: Duration,
    pub election_max_timeout: Duration,
    pub follower_check_interval: Duration,
    pub follower_check_timeout: Duration,
    pub follower_check_retries: u64,
    pub leader_check_interval: Duration,
    pub leader_check_timeout: Duration,
    pub leader_check_retries: u64,
    pub publish_timeout: Duration,
    pub formation_warning_timeout: Duration,
    /// The node's own `cluster.routing.*` settings: what the master allocates with unless the cluster
    /// settings say otherwise.
    pub local_cluster_settings: BTreeMap<String, String>,
    /// How long a shard recovery takes here (`es_standin.recovery_time`, not an Elasticsearch setting).
    pub recovery_time: Duration,
}

impl ClusterSettings {
    pub fn from_settings(
        s: &Settings,
        cluster_name: &str,
        default_port: u16,
        is_8: bool,
    ) -> Result<ClusterSettings, SettingsError> {
        let ms = Duration::from_millis;
        let secs = Duration::from_secs;
        let single_node = match s.get("discovery.type").unwrap_or("multi-node") {
            "single-node" => true,
            "multi-node" => false,
            other => {
                return Err(SettingsError::Invalid(format!(
                    "Unknown discovery type [{other}]"
                )));
            }
        };
        let initial_master_nodes = s.list("cluster.initial_master_nodes");
        if single_node && s.contains("cluster.initial_master_nodes") {
            if is_8 {
                return Err(SettingsError::Invalid(
                    "setting [cluster.initial_master_nodes] is not allowed when [discovery.type] is set to [single-node]".into(),
                ));
            }
            tracing::warn!(
                "[cluster.initial_master_nodes] is ignored with [discovery.type] set to [single-node]"
            );
        }
        let unique: BTreeSet<&String> = initial_master_nodes.iter().collect();
        if unique.len() != initial_master_nodes.len() {
            return Err(SettingsError::Invalid(format!(
                "setting [cluster.initial_master_nodes] contains duplicates: [{}]",
                initial_master_nodes.join(", ")
            )));
        }
        let configured = [
            "discovery.seed_hosts",
            "discovery.seed_providers",
            "cluster.initial_master_nodes",
        ]
        .iter()
        .any(|k| s.contains(k));
        Ok(ClusterSettings {
            cluster_name: cluster_name.to_owned(),
            seed_hosts: s.list("discovery.seed_hosts"),
            default_port,
            initial_master_nodes: if single_node {
                Vec::new()
            } else {
                initial_master_nodes
            },
            single_node,
            unconfigured_bootstrap: if configured || single_node {
                None
            } else {
                Some(s.time("discovery.unconfigured_bootstrap_timeout", secs(3), ms(1))?)
            },
            find_peers_interval: s.time("discovery.find_peers_interval", secs(1), ms(1))?,
            request_peers_timeout: s.time("discovery.request_peers_timeout", secs(3), ms(1))?,
            election_initial_timeout: s.time("cluster.election.initial_timeout", ms(100), ms(1))?,
            election_back_off: s.time("cluster.election.back_off_time", ms(100), ms(1))?,
            election_max_timeout: s.time("cluster.election.max_timeout", secs(10), ms(200))?,
            follower_check_interval: s.time(
                "cluster.fault_detection.follower_check.interval",
                secs(1),
                ms(100),
            )?,
            follower_check_timeout: s.time(
                "cluster.fault_detection.follower_check.timeout",
                secs(10),
                ms(1),
            )?,
            follower_check_retries: s.int(
                "cluster.fault_detection.follower_check.retry_count",
                3,
                1,
            )?,
            leader_check_interval: s.time(
                "cluster.fault_detection.leader_check.interval",
                secs(1),
                ms(100),
            )?,
            leader_check_timeout: s.time(
                "cluster.fault_detection.leader_check.timeout",
                secs(10),
                ms(1),
            )?,
            leader_check_retries: s.int(
                "cluster.fault_detection.leader_check.retry_count",
                3,
                1,
            )?,
            publish_timeout: s.time("cluster.publish.timeout", secs(30), ms(1))?,
            formation_warning_timeout: s.time(
                "cluster.formation.warning_timeout",
                secs(10),
                ms(1),
            )?,
            local_cluster_settings: s
                .iter()
                .filter(|(k, _)| k.starts_with("cluster.routing."))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            recovery_time: s.time("es_standin.recovery_time", ms(200), Duration::ZERO)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_or_single_node_initial_masters_are_refused() {
        let dup = Settings::from_pairs([("cluster.initial_master_nodes", "a,b,a")]);
        assert!(ClusterSettings::from_settings(&dup, "c", 9300, true).is_err());
        let single = Settings::from_pairs([
            ("cluster.initial_master_nodes", "a"),
            ("discovery.type", "single-node"),
        ]);
        assert_eq!(
            ClusterSettings::from_settings(&single, "c", 9300, true).map(|_| ()),
            Err(SettingsError::Invalid(
                "setting [cluster.initial_master_nodes] is not allowed when [discovery.type] is set to [single-node]".into()
            ))
        );
        assert!(ClusterSettings::from_settings(&single, "c", 9300, false).is_ok());
    }
}
