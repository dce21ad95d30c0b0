//! The core's configuration: what a node looks like (image, resources, volumes), how offers are judged
//! (strategy, constraints) and every timer. The shell fills it from flags; [`Config::validate`] refuses
//! anything that would later produce an invalid volume name or task id.

use crate::error::CoreError;
use crate::ids::{GroupName, Millis, NodeId, TaskId, VolumeName};
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

/// What Elasticsearch security a cluster runs with. Decided when the cluster first bootstraps and kept:
/// turning TLS on or off needs a full cluster restart, so a later image change never flips it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Security {
    /// `xpack.security.enabled=false`: plain HTTP and transport, no password.
    Off,
    /// Transport TLS with certificates signed by the cluster CA, and the `elastic` password.
    Transport,
    /// Transport and HTTP TLS, and the `elastic` password.
    Full,
}

impl Security {
    /// The word `tetherctl status` shows.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Security::Off => "off",
            Security::Transport => "transport",
            Security::Full => "full",
        }
    }
}

impl Security {
    /// Any security at all (node identities, the `elastic` password).
    #[must_use]
    pub fn is_on(self) -> bool {
        self != Security::Off
    }
}

/// Where the identity volume is mounted when security is on: inside the image's config directory, the
/// only place Elasticsearch reads TLS files from.
pub const IDENTITY_MOUNT: &str = "/usr/share/elasticsearch/config/node";
/// The image's config directory, which TLS settings are relative to.
pub const ES_CONFIG_DIR: &str = "/usr/share/elasticsearch/config";

/// Owner and mode a sidecar sets on each volume's root after mounting it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeOwner {
    /// Numeric user id.
    pub uid: u32,
    /// Numeric group id.
    pub gid: u32,
    /// Permission bits of the root directory.
    pub mode: u32,
}

/// Elasticsearch settings Tether decides for every node; an operator's `--es-setting` may not override
/// them (discovery and bootstrap break silently when two nodes disagree on them).
pub const OWNED_SETTINGS: &[&str] = &[
    "node.name",
    "cluster.name",
    "http.port",
    "transport.port",
    "path.data",
    "network.publish_host",
    "discovery.seed_hosts",
    "discovery.seed_providers",
    "discovery.type",
    "cluster.initial_master_nodes",
];

/// Why the operator may not set Elasticsearch's environment variable `name` (`None`: it may): it
/// names a setting Tether owns (a lowercase dotted name is a setting as it is, as the official image
/// reads it; `ES_SETTING_*` is decoded), or it is the heap or the password, which Tether sets.
#[must_use]
pub fn env_refusal(name: &str) -> Option<String> {
    let setting = es_setting_of_env(name).or_else(|| {
        (name.contains('.') && name == name.to_ascii_lowercase()).then(|| name.to_owned())
    });
    if let Some(key) = setting
        && OWNED_SETTINGS.contains(&key.as_str())
    {
        return Some(format!(
            "--es-env {name}: it sets {key}, which Tether sets itself and cannot be overridden"
        ));
    }
    if name == crate::command::env::JAVA_OPTS || name.starts_with("ELASTIC_PASSWORD") {
        return Some(format!(
            "--es-env {name}: Tether sets it (the heap from --heap, the password from the cluster's secret)"
        ));
    }
    None
}

/// The setting an `ES_SETTING_*` environment name stands for, as the official image's entrypoint decodes
/// it (`_` is `.`, `__` is `_`).
#[must_use]
pub fn es_setting_of_env(name: &str) -> Option<String> {
    let rest = name.strip_prefix("ES_SETTING_")?;
    Some(
        rest.split("__")
            .map(|part| part.replace('_', ".").to_ascii_lowercase())
            .collect::<Vec<_>>()
            .join("_"),
    )
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

/// The Elasticsearch roles a group may list (`node.roles`, 7.9+; `voting_only` needs `master`).
pub const KNOWN_ROLES: &[&str] = &[
    "master",
    "voting_only",
    "data",
    "data_content",
    "data_hot",
    "data_warm",
    "data_cold",
    "data_frozen",
    "ingest",
    "ml",
    "remote_cluster_client",
    "transform",
];

/// One node group (`--group NAME:COUNT[:roles=a+b][:cpus=..][:mem=..][:heap=..][:disk=..]`): nodes with
/// their own Elasticsearch roles, resources and volumes. Unset resources are the top-level flags'.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupSpec {
    /// The group's name; `default` is the group of a cluster without `--group` (named as before groups).
    pub name: GroupName,
    /// Nodes at first start of the group (the stored count wins afterwards, as `--nodes`).
    pub count: u64,
    /// `node.roles` (`Some(vec![])`: coordinating-only); `None`: Elasticsearch's default, every role.
    pub roles: Option<Vec<String>>,
    /// CPUs per node.
    pub cpus: Option<f64>,
    /// Memory per node, MB.
    pub mem_mb: Option<f64>,
    /// JVM heap per node, MB.
    pub heap_mb: Option<u64>,
    /// Disk per node, MB (the normal strategy only).
    pub disk_mb: Option<f64>,
}

impl GroupSpec {
    /// Parses `NAME:COUNT[:roles=master+data][:cpus=C][:mem=MB][:heap=MB][:disk=MB]`.
    pub fn parse(text: &str) -> Result<GroupSpec, CoreError> {
        let bad = |why: String| {
            CoreError::InvalidConfig(format!(
                "--group {text:?}: {why} (expected NAME:COUNT[:roles=master+data][:cpus=C][:mem=MB][:heap=MB][:disk=MB])"
            ))
        };
        let mut parts = text.split(':');
        let name =
            GroupName::new(parts.next().unwrap_or_default()).map_err(|e| bad(e.to_string()))?;
        let count = parts
            .next()
            .ok_or_else(|| bad("the node count is missing".into()))?
            .parse::<u64>()
            .map_err(|e| bad(format!("the node count: {e}")))?;
        let mut spec = GroupSpec {
            name,
            count,
            roles: None,
            cpus: None,
            mem_mb: None,
            heap_mb: None,
            disk_mb: None,
        };
        let number = |key: &str, v: &str| -> Result<f64, CoreError> {
            v.parse::<f64>()
                .ok()
                .filter(|n| n.is_finite() && *n >= 0.0)
                .ok_or_else(|| bad(format!("{key}={v:?} is not a non-negative number")))
        };
        let mut seen = std::collections::BTreeSet::new();
        for part in parts {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| bad(format!("{part:?} is not key=value")))?;
            if !seen.insert(key) {
                return Err(bad(format!("{key} given twice")));
            }
            match key {
                "roles" => {
                    let roles: Vec<String> = if value.is_empty() {
                        Vec::new()
                    } else {
                        value.split('+').map(str::to_owned).collect()
                    };
                    spec.roles = Some(roles);
                }
                "cpus" => spec.cpus = Some(number(key, value)?),
                "mem" => spec.mem_mb = Some(number(key, value)?),
                "disk" => spec.disk_mb = Some(number(key, value)?),
                "heap" => {
                    spec.heap_mb = Some(
                        value
                            .parse::<u64>()
                            .map_err(|e| bad(format!("heap={value:?}: {e}")))?,
                    );
                }
                other => return Err(bad(format!("unknown key {other:?}"))),
            }
        }
        Ok(spec)
    }

    /// Whether the group's nodes can be elected master (and so belong in the bootstrap list and the
    /// seeds): Elasticsearch's default roles include `master`.
    #[must_use]
    pub fn master_eligible(&self) -> bool {
        self.roles
            .as_ref()
            .is_none_or(|r| r.iter().any(|r| r == "master"))
    }
}

/// What one group's nodes get: its own values, else the top-level flags'.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupResources {
    /// CPUs per node.
    pub cpus: f64,
    /// Memory per node, MB.
    pub mem_mb: f64,
    /// Disk per node, MB.
    pub disk_mb: f64,
    /// JVM heap per node, MB.
    pub heap_mb: u64,
    /// `node.roles`, `None`: not set.
    pub roles: Option<Vec<String>>,
}

impl GroupResources {
    /// Whether these nodes are master-eligible.
    #[must_use]
    pub fn master_eligible(&self) -> bool {
        self.roles
            .as_ref()
            .is_none_or(|r| r.iter().any(|r| r == "master"))
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
    /// Refuse filter of an answer to an inverse offer (Mesos maintenance): the master asks again after
    /// this long.
    #[serde(default = "default_maintenance_refuse_seconds")]
    pub maintenance_refuse_seconds: f64,
    /// Suffix of the volume that holds `path.data`.
    pub data_volume: String,
    /// Extra Elasticsearch settings for every node (never one of [`OWNED_SETTINGS`]).
    pub es_settings: Vec<(String, String)>,
    /// Extra environment for every node.
    pub es_env: Vec<(String, String)>,
    /// Security of a cluster not yet bootstrapped (once bootstrapped, the stored choice wins).
    pub security: Security,
    /// Owner and mode of each volume's root, set by the sidecar before a launch (`None`: left alone).
    pub volume_owner: Option<VolumeOwner>,
    /// Publish and seed with the agent's IP address instead of its host name.
    pub use_ip_address: bool,
    /// Suffix of the volume that holds the node's identity files (key, certificates, password file).
    pub identity_volume: String,
    /// What ends the wait for a node whose task is UNREACHABLE.
    pub fencing: Fencing,
    /// With storage fencing: how long a task must have been UNREACHABLE, and absent from Elasticsearch's
    /// elected master, before its node is replaced.
    pub unreachable_replace_after_ms: u64,
    /// An Elasticsearch view older than this is no view (the shell polls several times within it).
    pub es_view_max_age_ms: u64,
    /// `--http-port`: every node's HTTP port, taken from the offer (`None`: the first offered port).
    pub http_port: Option<u16>,
    /// `--transport-port`: every node's transport port, taken from the offer (`None`: the first other
    /// offered port).
    pub transport_port: Option<u16>,
    /// An agent with no connected sidecar, unknown to Mesos (never offered, or removed) and not named by
    /// any node is forgotten after this long (`--max-agent-absence`): a sidecar must not be able to make
    /// the scheduler remember invented hosts forever.
    #[serde(default = "default_max_agent_absence_ms")]
    pub max_agent_absence_ms: u64,
    /// A step of a safe removal (moving data away, the voting exclusion, the stop, the clean-up) not done
    /// after this long is reported as stalled (`--removal-step-timeout`); it is never forced on its own.
    #[serde(default = "default_removal_step_timeout_ms")]
    pub removal_step_timeout_ms: u64,
    /// A rollout step (a gate before a node, telling Elasticsearch, the stop, the rejoin, the clean-up,
    /// the wait for green) not done after this long pauses the rollout with the reason
    /// (`--rollout-step-timeout`); nothing is forced.
    #[serde(default = "default_rollout_step_timeout_ms")]
    pub rollout_step_timeout_ms: u64,
    /// A running node whose certificate expires within this many seconds is restarted by a rollout
    /// to get a new one (`--es-cert-renew-before`, `renewal.rs`); below [`NODE_CERT_DAYS`].
    #[serde(default = "default_cert_renew_before_s")]
    pub cert_renew_before_s: u64,
    /// Node groups (`--group`); empty: one group of identical nodes, the default group, sized by the
    /// stored desired count (seeded by `--nodes`).
    #[serde(default)]
    pub groups: Vec<GroupSpec>,
}

fn default_cert_renew_before_s() -> u64 {
    30 * 86_400
}

/// How long a node's certificate is valid, in days (the scheduler's CA signs it at every launch).
pub const NODE_CERT_DAYS: u64 = 365;

fn default_rollout_step_timeout_ms() -> u64 {
    30 * 60_000
}

fn default_removal_step_timeout_ms() -> u64 {
    1_800_000
}

fn default_maintenance_refuse_seconds() -> f64 {
    60.0
}

fn default_max_agent_absence_ms() -> u64 {
    600_000
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
            maintenance_refuse_seconds: default_maintenance_refuse_seconds(),
            data_volume: "data".into(),
            es_settings: Vec::new(),
            es_env: Vec::new(),
            security: Security::Off,
            volume_owner: None,
            use_ip_address: false,
            identity_volume: "config".into(),
            fencing: Fencing::None,
            unreachable_replace_after_ms: 60_000,
            es_view_max_age_ms: 30_000,
            http_port: None,
            transport_port: None,
            max_agent_absence_ms: default_max_agent_absence_ms(),
            removal_step_timeout_ms: default_removal_step_timeout_ms(),
            rollout_step_timeout_ms: default_rollout_step_timeout_ms(),
            cert_renew_before_s: default_cert_renew_before_s(),
            groups: Vec::new(),
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
        if let (Some(h), Some(t)) = (self.http_port, self.transport_port)
            && h == t
        {
            return bad(format!(
                "--http-port and --transport-port are both {h}: a node needs two ports"
            ));
        }
        if self.http_port == Some(0) || self.transport_port == Some(0) {
            return bad("a pinned port must not be 0".into());
        }
        if !self.volumes.is_empty() && self.data_volume_spec().is_none() {
            return bad(format!(
                "the data volume {:?} is not one of the volumes ({})",
                self.data_volume,
                self.volumes
                    .iter()
                    .map(|v| v.suffix.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if self.security.is_on() {
            if !matches!(self.strategy, Strategy::External { .. }) {
                return bad(format!(
                    "Elasticsearch security {} needs the external strategy: the sidecar makes each node's key",
                    self.security.as_str()
                ));
            }
            match self.identity_volume_spec() {
                Some(v) if v.container_path == IDENTITY_MOUNT => {}
                Some(v) => {
                    return bad(format!(
                        "with Elasticsearch security on, the identity volume {:?} must be mounted at {IDENTITY_MOUNT} \
                         (Elasticsearch reads TLS files only from its config directory), not {}: \
                         --volume {}:{IDENTITY_MOUNT}",
                        v.suffix, v.container_path, v.suffix
                    ));
                }
                None => {
                    return bad(format!(
                        "with Elasticsearch security on, a volume {:?} mounted at {IDENTITY_MOUNT} must hold the \
                         node's identity files: add --volume {}:{IDENTITY_MOUNT}",
                        self.identity_volume, self.identity_volume
                    ));
                }
            }
        }
        for (key, _) in &self.es_settings {
            if OWNED_SETTINGS.contains(&key.as_str()) {
                return bad(format!(
                    "--es-setting {key}: Tether sets {key} itself and it cannot be overridden"
                ));
            }
        }
        for (name, _) in &self.es_env {
            if let Some(why) = env_refusal(name) {
                return bad(why);
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
        self.validate_groups()?;
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
        if self.removal_step_timeout_ms == 0 || self.rollout_step_timeout_ms == 0 {
            return bad("the removal and rollout step timeouts must be positive".into());
        }
        if self.cert_renew_before_s == 0 || self.cert_renew_before_s >= NODE_CERT_DAYS * 86_400 {
            return bad(format!(
                "the certificate renewal window must be positive and shorter than a certificate's \
                 {NODE_CERT_DAYS} days (else every new certificate would be renewed at once)"
            ));
        }
        if self.report_interval_ms == 0 || self.freshness_multiple == 0 || self.prepare_hold_ms == 0
        {
            return bad(
                "report interval, freshness multiple and prepare hold must be positive".into(),
            );
        }
        Ok(())
    }

    /// The groups' own rules: valid and distinct names, known roles, sane resources, at least one
    /// master-eligible group, and names that keep the groups' volumes apart.
    fn validate_groups(&self) -> Result<(), CoreError> {
        let bad = |m: String| Err(CoreError::InvalidConfig(m));
        if self.groups.is_empty() {
            return Ok(());
        }
        let mut names = std::collections::BTreeSet::new();
        for g in &self.groups {
            if !names.insert(g.name.as_str()) {
                return bad(format!("--group {} is given twice", g.name));
            }
            if g.count > crate::core::MAX_NODES {
                return bad(format!(
                    "--group {}: {} nodes exceed {}",
                    g.name,
                    g.count,
                    crate::core::MAX_NODES
                ));
            }
            if let Some(roles) = &g.roles {
                let mut seen = std::collections::BTreeSet::new();
                for r in roles {
                    if !KNOWN_ROLES.contains(&r.as_str()) {
                        return bad(format!(
                            "--group {}: unknown Elasticsearch role {r:?} (known: {})",
                            g.name,
                            KNOWN_ROLES.join(", ")
                        ));
                    }
                    if !seen.insert(r.as_str()) {
                        return bad(format!("--group {}: role {r} listed twice", g.name));
                    }
                }
                if seen.contains("voting_only") && !seen.contains("master") {
                    return bad(format!(
                        "--group {}: the voting_only role needs the master role",
                        g.name
                    ));
                }
            }
            let r = self.resources_of(Some(g));
            if !(r.cpus > 0.0 && r.mem_mb > 0.0 && r.disk_mb >= 0.0 && r.heap_mb > 0) {
                return bad(format!(
                    "--group {}: cpus, mem and heap must be positive and disk not negative",
                    g.name
                ));
            }
            let group = (!g.name.is_default()).then_some(&g.name);
            self.group_volume_names(group, NodeId(self.first_id))?;
            self.group_task_id(group, NodeId(NodeId::MAX_ORDINAL), u64::MAX)?;
        }
        let sets_roles = self.es_settings.iter().any(|(k, _)| k == "node.roles")
            || self.es_env.iter().any(|(k, _)| {
                k == "node.roles" || es_setting_of_env(k).as_deref() == Some("node.roles")
            });
        if sets_roles {
            return bad(
                "with --group, node.roles comes from each group's roles=: remove it from --es-setting/--es-env"
                    .into(),
            );
        }
        if !self.groups.iter().any(GroupSpec::master_eligible) {
            return bad(format!(
                "no --group is master-eligible ({}): a cluster needs master-eligible nodes; give one group \
                 roles=master (dedicated masters) or no roles= (every role)",
                self.groups
                    .iter()
                    .map(|g| g.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if self.groups.iter().any(|g| !g.name.is_default())
            && !self.volume_name_template.contains("{framework}")
        {
            return bad(
                "with --group, the volume name template must contain {framework}: a group's volumes \
                 carry its name there (<framework>-<group>)"
                    .into(),
            );
        }
        Ok(())
    }

    /// The spec of group `name` in the configuration, if any.
    #[must_use]
    pub fn group_spec(&self, name: &GroupName) -> Option<&GroupSpec> {
        self.groups.iter().find(|g| &g.name == name)
    }

    /// What the nodes of a group with `spec` get (`None`: the top-level flags, as without groups).
    #[must_use]
    pub fn resources_of(&self, spec: Option<&GroupSpec>) -> GroupResources {
        GroupResources {
            cpus: spec.and_then(|g| g.cpus).unwrap_or(self.cpus),
            mem_mb: spec.and_then(|g| g.mem_mb).unwrap_or(self.mem_mb),
            disk_mb: spec.and_then(|g| g.disk_mb).unwrap_or(self.disk_mb),
            heap_mb: spec.and_then(|g| g.heap_mb).unwrap_or(self.heap_mb),
            roles: spec.and_then(|g| g.roles.clone()),
        }
    }

    /// The names of node `id`'s volumes, in the order of [`Config::volumes`] (the default group).
    pub fn volume_names(&self, id: NodeId) -> Result<Vec<VolumeName>, CoreError> {
        self.group_volume_names(None, id)
    }

    /// The names of the volumes of node `id` of `group` (`None`: the default group,
    /// `<framework><id><volume>`); a named group's carry its name: `<framework>-<group><id><volume>`.
    pub fn group_volume_names(
        &self,
        group: Option<&GroupName>,
        id: NodeId,
    ) -> Result<Vec<VolumeName>, CoreError> {
        let framework = match group {
            Some(g) => format!("{}-{g}", self.framework_name),
            None => self.framework_name.clone(),
        };
        self.volumes
            .iter()
            .map(|v| {
                let name = self
                    .volume_name_template
                    .replace("{framework}", &framework)
                    .replace("{cluster}", &self.cluster_name)
                    .replace("{id}", &id.ordinal().to_string())
                    .replace("{volume}", &v.suffix);
                VolumeName::new(name).map_err(CoreError::from)
            })
            .collect()
    }

    /// The deterministic task id of generation `generation` of node `id` (the default group).
    pub fn task_id(&self, id: NodeId, generation: u64) -> Result<TaskId, CoreError> {
        self.group_task_id(None, id, generation)
    }

    /// The task id of generation `generation` of node `id` of `group`: `<framework>-<id>.<generation>`
    /// in the default group (the 2016 framework's form), `<framework>-<group>-<id>.<generation>` in a
    /// named one (a group name never ends in a digit, so the two never collide).
    pub fn group_task_id(
        &self,
        group: Option<&GroupName>,
        id: NodeId,
        generation: u64,
    ) -> Result<TaskId, CoreError> {
        Ok(TaskId::new(format!(
            "{}.{generation}",
            self.group_node_name(group, id)
        ))?)
    }

    /// The Elasticsearch node name of node `id` of `group` (`None`: the default group).
    #[must_use]
    pub fn group_node_name(&self, group: Option<&GroupName>, id: NodeId) -> String {
        match group {
            Some(g) => format!("{}-{g}-{}", self.framework_name, id.ordinal()),
            None => format!("{}-{}", self.framework_name, id.ordinal()),
        }
    }

    /// The volume that holds the node's identity files.
    #[must_use]
    pub fn identity_volume_spec(&self) -> Option<&VolumeSpec> {
        self.volumes
            .iter()
            .find(|v| v.suffix == self.identity_volume)
    }

    /// The volume that holds `path.data`.
    #[must_use]
    pub fn data_volume_spec(&self) -> Option<&VolumeSpec> {
        self.volumes.iter().find(|v| v.suffix == self.data_volume)
    }

    /// The Elasticsearch node name of node `id` (the default group).
    #[must_use]
    pub fn node_name(&self, id: NodeId) -> String {
        self.group_node_name(None, id)
    }

    /// How long a sidecar stays fresh after a report.
    #[must_use]
    pub fn freshness_ms(&self) -> u64 {
        self.report_interval_ms
            .saturating_mul(self.freshness_multiple)
    }

    /// Whether a sidecar whose last report came at `last_report_at` is fresh at `now`.
    #[must_use]
    pub fn report_fresh(&self, last_report_at: Option<Millis>, now: Millis) -> bool {
        last_report_at.is_some_and(|t| now.since(t) <= self.freshness_ms())
    }
}
