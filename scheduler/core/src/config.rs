//! The core's configuration: what a node looks like (image, resources, volumes), how offers are judged
//! (strategy, constraints) and every timer. The shell fills it from flags; [`Config::validate`] refuses
//! anything that would later produce an invalid volume name or task id.

use crate::error::CoreError;
use crate::ids::{NodeId, TaskId, VolumeName};
use serde::{Deserialize, Serialize};

/// One volume every node has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeSpec {
    /// The suffix in the volume name (`config`, `data`), rendered as `{volume}` in the template.
    pub suffix: String,
    /// Where the volume is mounted inside the container.
    pub container_path: String,
}

/// How offers are judged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Strategy {
    /// No external driver: the offer must carry the configured disk, as the 2016 framework required.
    Normal,
    /// Volumes live in an external Docker volume driver: no disk check; the agent's sidecar must be connected
    /// and fresh and must vouch for the volumes.
    External {
        /// Docker volume driver name (e.g. `rexray`).
        driver: String,
        /// Ask the sidecar to create a volume its driver does not know.
        auto_create: bool,
        /// Options for `Create` (e.g. `size`); the core adds `availabilityZone` when it knows the agent's zone.
        create_options: Vec<(String, String)>,
        /// `driver_options` put on each volume of the launch (used by the Mesos containerizer only).
        driver_options: Vec<(String, String)>,
    },
}

/// What ends the wait for a node whose task is UNREACHABLE (its agent silent: dead, or cut off).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Fencing {
    /// Nothing automatic: the node waits for a terminal state, which an operator gives by marking the
    /// agent gone (`tetherctl agents gone`).
    None,
    /// The volume driver attaches a volume in one place only and takes it over on Mount (REX-Ray with
    /// EBS and `preempt`): once the old task has been UNREACHABLE for
    /// [`Config::unreachable_replace_after_ms`] and Elasticsearch's elected master has not listed it for
    /// as long, the node is prepared elsewhere, which force-detaches the volumes from the old agent, and
    /// launched once the new attachment is confirmed. A multi-attach or network-filesystem driver must
    /// never be run with it: nothing would fence the old writer.
    Storage,
}

/// Which Mesos containerizer runs the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Containerizer {
    /// `ContainerInfo.type = DOCKER`, host networking, `docker run -v name:path`.
    Docker,
    /// `ContainerInfo.type = MESOS` with a Docker image and the `docker/volume` isolator.
    Mesos,
}

/// A placement constraint on agent attributes, Marathon-style `field:OPERATOR[:value]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Constraint {
    /// `rack:UNIQUE`: no two live nodes on agents with the same value of the attribute (an agent without
    /// the attribute is refused).
    Unique(String),
    /// `rack:CLUSTER:r1`: the attribute must equal the value.
    Equals(String, String),
}

impl Constraint {
    /// Parses `field:UNIQUE` or `field:CLUSTER:value`.
    pub fn parse(text: &str) -> Result<Constraint, CoreError> {
        let parts: Vec<&str> = text.split(':').collect();
        let bad = || {
            CoreError::InvalidConfig(format!(
                "constraint {text:?}: expected field:UNIQUE or field:CLUSTER:value"
            ))
        };
        match parts.as_slice() {
            [field, op] if op.eq_ignore_ascii_case("UNIQUE") && !field.is_empty() => {
                Ok(Constraint::Unique((*field).to_owned()))
            }
            [field, op, value] if op.eq_ignore_ascii_case("CLUSTER") && !field.is_empty() => {
                Ok(Constraint::Equals((*field).to_owned(), (*value).to_owned()))
            }
            _ => Err(bad()),
        }
    }
}

/// Everything the core needs to decide.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// Framework name: prefix of task ids and (by default) of volume names.
    pub framework_name: String,
    /// Elasticsearch cluster name.
    pub cluster_name: String,
    /// The lowest node id.
    pub first_id: u64,
    /// Which volumes every node has.
    pub volumes: Vec<VolumeSpec>,
    /// Volume name template with `{framework}`, `{cluster}`, `{id}`, `{volume}`; default
    /// `{framework}{id}{volume}` (e.g. `elasticsearch1data`).
    pub volume_name_template: String,
    /// Offer strategy.
    pub strategy: Strategy,
    /// Containerizer of the launched task.
    pub containerizer: Containerizer,
    /// Elasticsearch image.
    pub image: String,
    /// CPUs per node.
    pub cpus: f64,
    /// Memory per node, MB.
    pub mem_mb: f64,
    /// Disk per node, MB (checked by the `normal` strategy only).
    pub disk_mb: f64,
    /// JVM heap per node, MB.
    pub heap_mb: u64,
    /// Attribute constraints.
    pub constraints: Vec<Constraint>,
    /// Path of the HTTP health check.
    pub health_check_path: String,
    /// At most this many seed hosts (the lowest live node ids) go into `discovery.seed_hosts`; a few
    /// reachable master-eligible nodes are all discovery needs, and it keeps a launch O(1) in cluster size.
    pub max_seed_hosts: usize,
    /// How long an offer is held while the sidecar prepares volumes.
    pub prepare_hold_ms: u64,
    /// First backoff of a slot after a failed placement or launch.
    pub backoff_initial_ms: u64,
    /// Cap of the slot backoff.
    pub backoff_max_ms: u64,
    /// First retry interval of explicit reconciliation.
    pub reconcile_initial_ms: u64,
    /// Cap of the explicit reconciliation retry interval.
    pub reconcile_max_ms: u64,
    /// Period of implicit reconciliation.
    pub implicit_reconcile_ms: u64,
    /// A launched task with no status at all after this long is reconciled explicitly.
    pub launch_status_timeout_ms: u64,
    /// Report interval asked of sidecars.
    pub report_interval_ms: u64,
    /// A sidecar is fresh while its last report is younger than this many report intervals.
    pub freshness_multiple: u64,
    /// External strategy: after the first SUBSCRIBED of a process, wait this long (for sidecars to
    /// reconnect and report their mounts) before placing anything.
    pub startup_grace_ms: u64,
    /// Refuse filter of a decline while something is pending.
    pub decline_refuse_seconds: f64,
    /// Refuse filter of a decline when nothing is pending (REVIVE clears it).
    pub idle_refuse_seconds: f64,
    /// What ends the wait for a node whose task is UNREACHABLE.
    pub fencing: Fencing,
    /// With storage fencing: how long a task must have been UNREACHABLE, and absent from Elasticsearch's
    /// elected master, before its node is replaced.
    pub unreachable_replace_after_ms: u64,
    /// An Elasticsearch view older than this is no view (the shell polls several times within it).
    pub es_view_max_age_ms: u64,
}

impl Config {
    /// A configuration with the defaults of the flags for `framework_name` (volumes `config` at
    /// `/tmp/config` and `data` at `/data`, ids from 1, `normal` strategy, Docker containerizer).
    #[must_use]
    pub fn new(framework_name: &str) -> Config {
        Config {
            framework_name: framework_name.to_owned(),
            cluster_name: framework_name.to_owned(),
            first_id: 1,
            volumes: vec![
                VolumeSpec {
                    suffix: "config".into(),
                    container_path: "/tmp/config".into(),
                },
                VolumeSpec {
                    suffix: "data".into(),
                    container_path: "/data".into(),
                },
            ],
            volume_name_template: "{framework}{id}{volume}".into(),
            strategy: Strategy::Normal,
            containerizer: Containerizer::Docker,
            image: "docker.elastic.co/elasticsearch/elasticsearch:8.13.4".into(),
            cpus: 1.0,
            mem_mb: 2048.0,
            disk_mb: 1024.0,
            heap_mb: 1024,
            constraints: Vec::new(),
            health_check_path: "/_cluster/health?local=true".into(),
            max_seed_hosts: 16,
            prepare_hold_ms: 60_000,
            backoff_initial_ms: 1_000,
            backoff_max_ms: 60_000,
            reconcile_initial_ms: 2_000,
            reconcile_max_ms: 60_000,
            implicit_reconcile_ms: 600_000,
            launch_status_timeout_ms: 120_000,
            report_interval_ms: 5_000,
            freshness_multiple: 3,
            startup_grace_ms: 15_000,
            decline_refuse_seconds: 10.0,
            idle_refuse_seconds: 300.0,
            fencing: Fencing::None,
            unreachable_replace_after_ms: 60_000,
            es_view_max_age_ms: 30_000,
        }
    }

    /// Refuses a configuration that would produce invalid names or nonsense timers.
    pub fn validate(&self) -> Result<(), CoreError> {
        let bad = |m: String| Err(CoreError::InvalidConfig(m));
        if self.framework_name.is_empty()
            || !self
                .framework_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        {
            return bad(format!(
                "framework name {:?} must match [a-zA-Z0-9_.-]+",
                self.framework_name
            ));
        }
        if self.cluster_name.is_empty() {
            return bad("cluster name must not be empty".into());
        }
        if self.volumes.is_empty() && matches!(self.strategy, Strategy::External { .. }) {
            return bad("the external strategy needs at least one volume".into());
        }
        for v in &self.volumes {
            if !v.container_path.starts_with('/') {
                return bad(format!(
                    "container path {:?} must be absolute",
                    v.container_path
                ));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for v in &self.volumes {
            if !seen.insert(v.suffix.as_str()) {
                return bad(format!("volume {:?} listed twice", v.suffix));
            }
        }
        if !self.volume_name_template.contains("{id}") {
            return bad("the volume name template must contain {id}".into());
        }
        if self.volumes.len() > 1 && !self.volume_name_template.contains("{volume}") {
            return bad(
                "the volume name template must contain {volume} when there are several volumes"
                    .into(),
            );
        }
        self.volume_names(NodeId(self.first_id))?;
        self.task_id(NodeId(u64::MAX), u64::MAX)?;
        if !(self.cpus > 0.0 && self.mem_mb > 0.0 && self.disk_mb >= 0.0) {
            return bad("cpus and mem must be positive and disk not negative".into());
        }
        if !self.health_check_path.starts_with('/') {
            return bad("the health check path must start with '/'".into());
        }
        if self.backoff_initial_ms == 0
            || self.reconcile_initial_ms == 0
            || self.implicit_reconcile_ms == 0
        {
            return bad("backoff and reconciliation intervals must be positive".into());
        }
        if self.fencing == Fencing::Storage {
            if !matches!(self.strategy, Strategy::External { .. }) {
                return bad(
                    "storage fencing needs the external strategy: only a volume driver can fence"
                        .into(),
                );
            }
            if self.unreachable_replace_after_ms == 0 || self.es_view_max_age_ms == 0 {
                return bad(
                    "the unreachable replace delay and the Elasticsearch view age must be positive"
                        .into(),
                );
            }
        }
        if self.report_interval_ms == 0 || self.freshness_multiple == 0 || self.prepare_hold_ms == 0
        {
            return bad(
                "report interval, freshness multiple and prepare hold must be positive".into(),
            );
        }
        Ok(())
    }

    /// The names of node `id`'s volumes, in the order of [`Config::volumes`].
    pub fn volume_names(&self, id: NodeId) -> Result<Vec<VolumeName>, CoreError> {
        self.volumes
            .iter()
            .map(|v| {
                let name = self
                    .volume_name_template
                    .replace("{framework}", &self.framework_name)
                    .replace("{cluster}", &self.cluster_name)
                    .replace("{id}", &id.0.to_string())
                    .replace("{volume}", &v.suffix);
                VolumeName::new(name).map_err(CoreError::from)
            })
            .collect()
    }

    /// The deterministic task id of generation `generation` of node `id`.
    pub fn task_id(&self, id: NodeId, generation: u64) -> Result<TaskId, CoreError> {
        Ok(TaskId::new(format!(
            "{}-{}.{}",
            self.framework_name, id.0, generation
        ))?)
    }

    /// The Elasticsearch node name of node `id`.
    #[must_use]
    pub fn node_name(&self, id: NodeId) -> String {
        format!("{}-{}", self.framework_name, id.0)
    }

    /// How long a sidecar stays fresh after a report.
    #[must_use]
    pub fn freshness_ms(&self) -> u64 {
        self.report_interval_ms
            .saturating_mul(self.freshness_multiple)
    }
}
