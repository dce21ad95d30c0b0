//! Command-line flags of `tether-scheduler`. Every flag also reads a `TETHER_...` environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tether_telemetry::LogFormat;

/// Which Mesos containerizer runs the Elasticsearch containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Containerizer {
    /// The Docker containerizer: `docker run -v <volume>:<path>` with `--volume-driver`.
    Docker,
    /// The Mesos containerizer with a Docker image and the `docker/volume` isolator (dvdcli).
    Mesos,
}

/// `--es-security`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EsSecurity {
    /// `full` for 8.x images (their default is security on), `off` below 8.
    Auto,
    /// No security: `xpack.security.enabled=false`.
    Off,
    /// Transport TLS with certificates of the cluster CA, and the `elastic` password.
    Transport,
    /// Transport and HTTP TLS, and the `elastic` password.
    Full,
}

/// What ends the wait of a node whose task is UNREACHABLE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Fencing {
    /// Nothing automatic: an operator who knows the machine is off marks its agent gone
    /// (`tetherctl agents gone HOST`).
    None,
    /// The volume driver attaches a volume in one place only and takes it over on Mount (REX-Ray with
    /// EBS and `preempt`): Tether replaces the node itself. Never with a multi-attach or
    /// network-filesystem driver.
    Storage,
}

/// Flags of tether-scheduler.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "tether-scheduler",
    version,
    about = "Mesos framework running Elasticsearch nodes on external volumes"
)]
pub struct Args {
    /// Mesos masters: comma-separated `http://host:port` (the client follows redirects to the leader),
    /// or `zk://host1:2181,host2:2181/mesos` to follow the leading master's `json.info_` znode.
    #[arg(
        long = "master",
        env = "TETHER_MASTER",
        value_delimiter = ',',
        required = true
    )]
    pub masters: Vec<String>,
    /// PEM CA bundle trusted for `https://` masters (default: the system's trusted roots).
    #[arg(long, env = "TETHER_MASTER_CA")]
    pub master_ca: Option<PathBuf>,
    /// Framework name; also the default volume-name prefix (`<name><id>data`).
    #[arg(long, env = "TETHER_FRAMEWORK_NAME", default_value = "elasticsearch")]
    pub framework_name: String,
    /// Elasticsearch cluster name given to every node.
    #[arg(long, env = "TETHER_CLUSTER_NAME", default_value = "elasticsearch")]
    pub cluster_name: String,
    /// Mesos role to receive offers for.
    #[arg(long, env = "TETHER_ROLE", default_value = "elasticsearch")]
    pub role: String,
    /// Unix user the tasks run as (FrameworkInfo.user).
    #[arg(long, env = "TETHER_USER", default_value = "root")]
    pub user: String,
    /// Principal for Mesos authentication (HTTP basic) and FrameworkInfo.principal.
    #[arg(long, env = "TETHER_PRINCIPAL")]
    pub principal: Option<String>,
    /// File holding the secret for the principal.
    #[arg(long, env = "TETHER_SECRET_FILE")]
    pub secret_file: Option<PathBuf>,
    /// How long Mesos keeps the framework's tasks running while no scheduler is connected.
    #[arg(long, env = "TETHER_FAILOVER_TIMEOUT", default_value = "7days", value_parser = humantime::parse_duration)]
    pub failover_timeout: Duration,
    /// Largest single event accepted from the master's subscription stream, in MiB. One OFFERS event
    /// carries an offer per agent: about 1 KiB each, so 10,000 agents make a ~10 MiB event.
    #[arg(long, env = "TETHER_MAX_EVENT_MIB", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_event_mib: u32,
    /// Docker volume driver of the nodes' volumes (e.g. `rexray`). Empty: the normal strategy, which
    /// needs disk in the offer and no sidecar.
    #[arg(long, env = "TETHER_EXTERNAL_VOLUME_DRIVER", default_value = "")]
    pub external_volume_driver: String,
    /// Desired number of Elasticsearch nodes at first start (later changes go through `tetherctl scale`
    /// and are persisted).
    #[arg(long, env = "TETHER_NODES", default_value_t = 3)]
    pub nodes: u64,
    /// A node group, repeatable: `NAME:COUNT[:roles=master+data+ingest][:cpus=C][:mem=MB][:heap=MB][:disk=MB]`
    /// (e.g. `masters:3:roles=master:mem=2048 --group data:4:roles=data+ingest`). `roles=` lists
    /// Elasticsearch roles joined by `+` (empty: coordinating-only, Elasticsearch 8.2+; absent: every
    /// role); unset resources are `--cpus`/`--mem`/`--heap`/`--disk`. A group's nodes are named
    /// `<framework>-<group>-<id>` and its volumes `<framework>-<group><id><volume>`. Without `--group`
    /// the cluster is one group of identical nodes (`default`, sized by `--nodes`, named as before);
    /// `--group default:N[...]` keeps those nodes beside new groups. COUNT seeds a group the first time
    /// the scheduler sees it; afterwards its stored count wins (change it with `tetherctl scale --group`).
    /// In the environment, groups are separated by `;`.
    #[arg(long = "group", env = "TETHER_GROUPS", value_delimiter = ';')]
    pub groups: Vec<String>,
    /// Largest node count a scale request may ask for.
    #[arg(long, env = "TETHER_MAX_NODES", default_value_t = 10_000)]
    pub max_nodes: u64,
    /// First node id.
    #[arg(long, env = "TETHER_FIRST_ID", default_value_t = 1)]
    pub first_id: u64,
    /// CPUs per node.
    #[arg(long, env = "TETHER_CPUS", default_value_t = 1.0)]
    pub cpus: f64,
    /// Memory per node, MB.
    #[arg(long, env = "TETHER_MEM", default_value_t = 2048.0)]
    pub mem: f64,
    /// Disk per node, MB (the normal strategy only).
    #[arg(long, env = "TETHER_DISK", default_value_t = 1024.0)]
    pub disk: f64,
    /// Elasticsearch heap, MB (`ES_JAVA_OPTS=-Xms..m -Xmx..m`); default half of `--mem`.
    #[arg(long, env = "TETHER_HEAP")]
    pub heap: Option<u64>,
    /// Container image of the nodes.
    #[arg(
        long,
        env = "TETHER_IMAGE",
        default_value = "docker.elastic.co/elasticsearch/elasticsearch:8.13.4"
    )]
    pub image: String,
    /// Suffix of the volume (see `--volume`) that holds Elasticsearch's `path.data`.
    #[arg(long, env = "TETHER_DATA_VOLUME", default_value = "data")]
    pub data_volume: String,
    /// Elasticsearch setting for every node, `key=value`, repeatable (e.g.
    /// `indices.memory.index_buffer_size=20%`). Settings Tether owns (`node.name`, ports, `path.data`,
    /// discovery, bootstrap) are refused.
    #[arg(long = "es-setting", env = "TETHER_ES_SETTINGS", value_delimiter = ';')]
    pub es_settings: Vec<String>,
    /// Environment variable for every node, `NAME=value`, repeatable.
    #[arg(long = "es-env", env = "TETHER_ES_ENV", value_delimiter = ';')]
    pub es_env: Vec<String>,
    /// Elasticsearch security: `auto` (`full` for 8.x images, `off` below 8), `off`, `transport`
    /// (transport TLS with certificates of the cluster CA, and the `elastic` password) or `full` (HTTP TLS
    /// too). Decided when the cluster first bootstraps and kept: a later change is ignored.
    #[arg(long, env = "TETHER_ES_SECURITY", value_enum, default_value_t = EsSecurity::Auto)]
    pub es_security: EsSecurity,
    /// PEM certificate of the cluster CA that signs the nodes' certificates (with `--es-ca-key`); default
    /// a CA generated on first start and kept in `--state-dir`.
    #[arg(long, env = "TETHER_ES_CA_CERT", requires = "es_ca_key")]
    pub es_ca_cert: Option<PathBuf>,
    /// PEM private key of `--es-ca-cert`.
    #[arg(long, env = "TETHER_ES_CA_KEY", requires = "es_ca_cert")]
    pub es_ca_key: Option<PathBuf>,
    /// File holding the `elastic` user's password; default one generated on first start and kept in
    /// `--state-dir` (mode 0600). It reaches nodes only as a file on their identity volume.
    #[arg(long, env = "TETHER_ES_PASSWORD_FILE")]
    pub es_password_file: Option<PathBuf>,
    /// With security on, every launch gets a certificate valid one year; a running node whose
    /// certificate expires within this long is restarted through the rollout (one node at a time,
    /// gated on Elasticsearch) to get a new one. A paused rollout holds renewals too. Below 365 days.
    #[arg(long, env = "TETHER_ES_CERT_RENEW_BEFORE", default_value = "30d", value_parser = humantime::parse_duration)]
    pub es_cert_renew_before: Duration,
    /// `docker run` parameter, `key=value`, repeatable; added to the default `ulimit=nofile=65535:65535`
    /// (the same key, or for `ulimit` the same limit, replaces a default). `ulimit`s are also given to the
    /// Mesos containerizer as `rlimit_info`.
    #[arg(
        long = "docker-parameter",
        env = "TETHER_DOCKER_PARAMETERS",
        value_delimiter = ';'
    )]
    pub docker_parameters: Vec<String>,
    /// How long Elasticsearch gets between SIGTERM and SIGKILL when Tether stops a task (the Mesos
    /// `KillPolicy` of every TaskInfo and every KILL): enough to flush and leave the cluster cleanly.
    #[arg(long, env = "TETHER_KILL_GRACE_PERIOD", default_value = "30s", value_parser = humantime::parse_duration)]
    pub kill_grace_period: Duration,
    /// A step of a safe node removal (scale-down, replace: moving its data away, leaving the voting
    /// configuration, stopping, clearing what was set) not done after this long is reported as stalled
    /// (`tetherctl nodes`, `watch`, `tether_node_removals_stalled`); it is never forced on its own.
    #[arg(long, env = "TETHER_REMOVAL_STEP_TIMEOUT", default_value = "30m", value_parser = humantime::parse_duration)]
    pub removal_step_timeout: Duration,
    /// A rollout step (the gate before a node, telling Elasticsearch, the stop, the rejoin, the
    /// clean-up, the wait for green) not done after this long pauses the rollout with the reason
    /// (`tetherctl rollout status`); it never goes on past red on its own.
    #[arg(long, env = "TETHER_ROLLOUT_STEP_TIMEOUT", default_value = "30m", value_parser = humantime::parse_duration)]
    pub rollout_step_timeout: Duration,
    /// How long the master waits before asking again after Tether answers an inverse offer (Mesos
    /// maintenance): declined while a node still runs on the agent, accepted once none does.
    #[arg(long, env = "TETHER_MAINTENANCE_ANSWER_INTERVAL", default_value = "60s", value_parser = humantime::parse_duration)]
    pub maintenance_answer_interval: Duration,
    /// Pull the image on every launch, even when the agent has it.
    #[arg(long, env = "TETHER_FORCE_PULL_IMAGE")]
    pub force_pull_image: bool,
    /// URI the Mesos fetcher downloads into each task's sandbox, repeatable.
    #[arg(long = "fetch-uri", env = "TETHER_FETCH_URIS", value_delimiter = ',')]
    pub fetch_uris: Vec<String>,
    /// Pin every node's Elasticsearch HTTP port (as the 2016 framework's `--elasticsearchPorts` did): an
    /// offer without it in its port ranges does not fit, with that reason. Default: the first offered port.
    #[arg(long, env = "TETHER_HTTP_PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub http_port: Option<u16>,
    /// Pin every node's Elasticsearch transport port, likewise. Default: the first other offered port.
    #[arg(long, env = "TETHER_TRANSPORT_PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub transport_port: Option<u16>,
    /// Publish and seed nodes with the agent's IP address (from the offer) instead of its host name.
    #[arg(long, env = "TETHER_USE_IP_ADDRESS")]
    pub use_ip_address: bool,
    /// Unix user the task's command runs as (`CommandInfo.user`); default the framework's `--user`.
    #[arg(long, env = "TETHER_TASK_USER")]
    pub task_user: Option<String>,
    /// `uid:gid` the sidecar gives each volume's root (mode 0770) before a launch; the official image
    /// runs Elasticsearch as 1000:0. Empty leaves ownership alone. Needs sidecars that declare
    /// `volume_owner`.
    #[arg(long, env = "TETHER_VOLUME_OWNER", default_value = "1000:0")]
    pub volume_owner: String,
    /// Containerizer: `docker` or `mesos`.
    #[arg(long, env = "TETHER_CONTAINERIZER", value_enum, default_value_t = Containerizer::Docker)]
    pub containerizer: Containerizer,
    /// Shell command to run instead of the image's entrypoint; empty keeps the image's. (A POSIX shell
    /// drops dotted variables like `node.name`; prefer `--exec` for a binary that reads them.)
    #[arg(
        long,
        env = "TETHER_COMMAND",
        default_value = "",
        conflicts_with = "exec"
    )]
    pub command: String,
    /// Executable to run instead of the image's entrypoint, without a shell.
    #[arg(long, env = "TETHER_EXEC")]
    pub exec: Option<String>,
    /// Arguments of `--exec`, repeatable.
    #[arg(
        long = "exec-arg",
        env = "TETHER_EXEC_ARGS",
        value_delimiter = ' ',
        allow_hyphen_values = true
    )]
    pub exec_args: Vec<String>,
    /// The nodes' volumes as `suffix:container-path`, repeatable. Volume names are
    /// `<framework-name><id><suffix>` (or the `--volume-name-template`), e.g. `data:/usr/share/elasticsearch/data`
    /// alone for a data-only layout. The default `config` volume is the identity volume, inside the image's
    /// config directory (where Elasticsearch reads TLS files), so it is valid with security on and off;
    /// `config:/tmp/config` (the layout of older versions) is valid with `--es-security off` only.
    #[arg(long = "volume", env = "TETHER_VOLUMES", value_delimiter = ',', default_values = ["config:/usr/share/elasticsearch/config/node", "data:/data"])]
    pub volumes: Vec<String>,
    /// Volume naming template with `{framework}`, `{cluster}`, `{id}` and `{volume}` (the suffix); the default is
    /// `{framework}{id}{volume}`. Include `{cluster}` to keep two frameworks' volumes apart.
    #[arg(
        long,
        env = "TETHER_VOLUME_NAME_TEMPLATE",
        default_value = "{framework}{id}{volume}"
    )]
    pub volume_name_template: String,
    /// Create a node's missing volumes (with `--volume-option`s) instead of waiting for an operator.
    #[arg(long, env = "TETHER_AUTO_CREATE_VOLUMES")]
    pub auto_create_volumes: bool,
    /// Driver options for created volumes, `key=value`, repeatable (e.g. `size=100`).
    #[arg(
        long = "volume-option",
        env = "TETHER_VOLUME_OPTIONS",
        value_delimiter = ','
    )]
    pub volume_options: Vec<String>,
    /// Placement constraints, Marathon style: `attr:UNIQUE`, `attr:CLUSTER:value`, `attr:LIKE:regex`
    /// (repeatable).
    #[arg(long = "constraint", env = "TETHER_CONSTRAINTS", value_delimiter = ';')]
    pub constraints: Vec<String>,
    /// Where the embedded state store keeps the framework id, desired count and node table.
    #[arg(long, env = "TETHER_STATE_DIR", default_value = "/var/lib/tether")]
    pub state_dir: PathBuf,
    /// Keep the state in ZooKeeper instead of `--state-dir`: `zk://host1:2181,host2:2181/tether/<name>`.
    /// Every scheduler started with the same URL joins one leader election; only the leader acts.
    // Parsed at once: `ZkUrl`'s `Debug` redacts credentials embedded in the URL.
    #[arg(long = "state", env = "TETHER_STATE", value_name = "ZK_URL", value_parser = parse_zk_url)]
    pub state: Option<tether_zk::ZkUrl>,
    /// Load a backup (`tetherctl state export > FILE`) into the empty store that `--state-dir` or
    /// `--state` names, then exit without serving; refused when the store holds anything, and nothing is
    /// written unless the whole file checks out. Secrets in the backup go to `--state-dir`.
    #[arg(long, env = "TETHER_RESTORE", value_name = "FILE")]
    pub restore: Option<PathBuf>,
    /// The admin address a standby names when it refuses a call (`host:port`); default `--listen`, with
    /// the host name in place of an unspecified address.
    #[arg(long, env = "TETHER_ADVERTISE_ADDRESS")]
    pub advertise_address: Option<String>,
    #[command(flatten)]
    pub zk: tether_zk::ZkArgs,
    /// gRPC listener for sidecars and the admin API.
    #[arg(long, env = "TETHER_LISTEN", default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,
    /// Prometheus `/metrics` listener; unset disables it.
    #[arg(long, env = "TETHER_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// File holding the shared agent token (one token for every sidecar, naming no host). Accepted only
    /// with `--allow-shared-agent-token`; per-agent tokens (`tetherctl agent-token HOST`) replace it.
    #[arg(long, env = "TETHER_AGENT_TOKEN_FILE")]
    pub agent_token_file: Option<PathBuf>,
    /// Accept sidecar credentials that name no host: the shared `--agent-token-file`, or, without one,
    /// no credential at all. Any holder can then pose as any agent (logged as a warning at start).
    #[arg(long, env = "TETHER_ALLOW_SHARED_AGENT_TOKEN")]
    pub allow_shared_agent_token: bool,
    /// File holding the bearer token admin clients must present.
    #[arg(long, env = "TETHER_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// PEM certificate (chain) of the gRPC listener; with `--tls-key` the listener speaks TLS only.
    #[arg(long, env = "TETHER_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "TETHER_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate(s) that sign client certificates: every client (sidecars, tetherctl) must then
    /// present one (mutual TLS). Needs `--tls-cert`.
    #[arg(long, env = "TETHER_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Let unauthenticated clients make read-only admin calls.
    #[arg(long, env = "TETHER_ADMIN_OPEN_READS")]
    pub admin_open_reads: bool,
    /// How often sidecars report.
    #[arg(long, env = "TETHER_REPORT_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub report_interval: Duration,
    /// Host name announced to Mesos (FrameworkInfo.hostname); default the system's.
    #[arg(long, env = "TETHER_HOSTNAME")]
    pub hostname: Option<String>,
    /// How long an offer is held while a sidecar prepares a node's volumes.
    #[arg(long, env = "TETHER_PREPARE_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub prepare_timeout: Duration,
    /// After (re)subscribing, wait this long before placing nodes so that reconnecting sidecars can report
    /// the mounts they hold.
    #[arg(long, env = "TETHER_STARTUP_GRACE", default_value = "15s", value_parser = humantime::parse_duration)]
    pub startup_grace: Duration,
    /// Period of implicit task reconciliation.
    #[arg(long, env = "TETHER_RECONCILE_INTERVAL", default_value = "10m", value_parser = humantime::parse_duration)]
    pub reconcile_interval: Duration,
    /// What ends the wait of a node whose task is UNREACHABLE (its agent silent: dead, or cut off).
    /// `none`: an operator who knows the machine is off runs `tetherctl agents gone HOST`. `storage`:
    /// the operator states that the volume driver attaches a volume in one place only and takes it over
    /// on Mount (REX-Ray with EBS and `preempt`); Tether then replaces the node once its task has been
    /// UNREACHABLE, and absent from Elasticsearch's elected master, for `--unreachable-replace-after`.
    /// Never `storage` with a multi-attach or network-filesystem driver: nothing would stop the old
    /// writer.
    #[arg(long, env = "TETHER_FENCING", value_enum, default_value_t = Fencing::None)]
    pub fencing: Fencing,
    /// With `--fencing storage`: how long a task must have been UNREACHABLE, and absent from
    /// Elasticsearch's elected master, before its node is replaced.
    #[arg(long, env = "TETHER_UNREACHABLE_REPLACE_AFTER", default_value = "60s", value_parser = humantime::parse_duration)]
    pub unreachable_replace_after: Duration,
    /// How often the running nodes are asked what Elasticsearch says: the elected master and the nodes
    /// it lists (storage fencing), health, shards, shutdown records and voting exclusions (health
    /// views, safe removal).
    #[arg(long, env = "TETHER_ES_POLL_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub es_poll_interval: Duration,
    /// Longest short string a sidecar may send, in bytes: every field of its Hello (agent id, version,
    /// driver, zone, instance id, each feature) and of a volume report (name, zone, mountpoint, status
    /// keys and values). At least the contract's 1024, which sidecars keep within.
    #[arg(long, env = "TETHER_MAX_FIELD_BYTES", default_value_t = tether_proto::limits::FIELD_BYTES as u64,
        value_parser = clap::value_parser!(u64).range(tether_proto::limits::FIELD_BYTES as u64..=1 << 20))]
    pub max_field_bytes: u64,
    /// Longest free text a sidecar may send (a driver's error, a command's error, a CSR), in bytes. At
    /// least the contract's 16384.
    #[arg(long, env = "TETHER_MAX_TEXT_BYTES", default_value_t = tether_proto::limits::TEXT_BYTES as u64,
        value_parser = clap::value_parser!(u64).range(tether_proto::limits::TEXT_BYTES as u64..=4 << 20))]
    pub max_text_bytes: u64,
    /// Most entries of a list or map in one sidecar message (Hello features, a volume's status). At least
    /// the contract's 64.
    #[arg(long, env = "TETHER_MAX_ENTRIES", default_value_t = tether_proto::limits::ENTRIES as u64,
        value_parser = clap::value_parser!(u64).range(tether_proto::limits::ENTRIES as u64..=65_536))]
    pub max_entries: u64,
    /// Most volumes in one sidecar report or command result. A report lists every watched volume, so
    /// `--max-nodes` × volumes per node must fit (checked at start). At least the contract's 65536.
    #[arg(long, env = "TETHER_MAX_VOLUMES_PER_REPORT", default_value_t = tether_proto::limits::VOLUMES_PER_REPORT as u64,
        value_parser = clap::value_parser!(u64).range(tether_proto::limits::VOLUMES_PER_REPORT as u64..=1 << 24))]
    pub max_volumes_per_report: u64,
    /// Bytes of sidecar messages waiting for the scheduler's loop, all sidecars together; beyond it
    /// sidecars are held back by flow control. At least 8 MiB (two of the largest gRPC messages).
    #[arg(long, env = "TETHER_MAX_QUEUE_BYTES", default_value_t = crate::agent_channel::DEFAULT_QUEUE_BYTES as u64,
        value_parser = clap::value_parser!(u64).range(8 << 20..=1 << 40))]
    pub max_queue_bytes: u64,
    /// How long the scheduler remembers an agent with no connected sidecar that Mesos does not know
    /// (never offered since the scheduler started, or removed) and no node names; then it is forgotten
    /// (listed no more) until its sidecar or Mesos mentions it again.
    #[arg(long, env = "TETHER_MAX_AGENT_ABSENCE", default_value = "10m", value_parser = humantime::parse_duration)]
    pub max_agent_absence: Duration,
    /// Log format.
    #[arg(long, env = "TETHER_LOG_FORMAT", value_enum, default_value_t)]
    pub log_format: LogFormat,
}

impl Args {
    /// The `--max-…` limits on what one sidecar may send.
    #[must_use]
    pub fn wire_limits(&self) -> crate::agent_channel::WireLimits {
        let size = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        crate::agent_channel::WireLimits {
            field_bytes: size(self.max_field_bytes),
            text_bytes: size(self.max_text_bytes),
            entries: size(self.max_entries),
            volumes_per_report: size(self.max_volumes_per_report),
            queue_bytes: size(self.max_queue_bytes),
        }
    }
}

fn parse_zk_url(s: &str) -> Result<tether_zk::ZkUrl, tether_zk::UrlError> {
    s.parse()
}

/// Where the Mesos masters are found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterSource {
    /// A fixed list of `http://host:port`.
    Http(Vec<String>),
    /// The leading master's `json.info_` znode under this URL's path.
    Zk(tether_zk::ZkUrl),
}

impl MasterSource {
    pub fn is_zk(&self) -> bool {
        matches!(self, MasterSource::Zk(_))
    }
}

impl Args {
    /// `--master` as a source. clap split the value on commas, which a `zk://` host list also uses, so
    /// a value starting with `zk://` is joined back together.
    pub fn master_source(&self) -> Result<MasterSource, tether_zk::UrlError> {
        match self.masters.first() {
            Some(first) if tether_zk::ZkUrl::is_zk(first) => {
                Ok(MasterSource::Zk(self.masters.join(",").parse()?))
            }
            _ => Ok(MasterSource::Http(self.masters.clone())),
        }
    }

    /// `--state` as a ZooKeeper URL (`None`: the embedded store in `--state-dir`).
    pub fn state_url(&self) -> Option<tether_zk::ZkUrl> {
        self.state.clone()
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[test]
    fn every_flag_is_documented_and_reads_the_environment() {
        let cmd = Args::command();
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if matches!(id, "help" | "version") {
                continue;
            }
            assert!(arg.get_help().is_some(), "--{id} has no help text");
            let env = arg
                .get_env()
                .map(|e| e.to_string_lossy().into_owned())
                .unwrap_or_default();
            assert!(
                env.starts_with("TETHER_"),
                "--{id} has no TETHER_ environment variable"
            );
        }
    }

    #[test]
    fn the_documented_interface_parses() {
        let a = Args::try_parse_from([
            "tether-scheduler",
            "--master",
            "http://m1:5050,http://m2:5050",
            "--framework-name",
            "es",
            "--external-volume-driver",
            "rexray",
            "--nodes",
            "5",
            "--cpus",
            "2",
            "--mem",
            "4096",
            "--image",
            "es:8",
            "--containerizer",
            "mesos",
            "--state-dir",
            "/tmp/x",
            "--listen",
            "0.0.0.0:7070",
        ])
        .expect("parses");
        assert_eq!(a.masters, ["http://m1:5050", "http://m2:5050"]);
        assert_eq!(a.containerizer, Containerizer::Mesos);
        assert_eq!(
            a.volumes,
            ["config:/usr/share/elasticsearch/config/node", "data:/data"],
            "the identity volume inside the config directory: valid for 8.x security"
        );
        assert_eq!(a.max_event_mib, 64);
        assert!(a.state.is_none(), "the embedded store is the default");
        assert_eq!(a.fencing, Fencing::None, "nothing automatic by default");
        let f = Args::try_parse_from([
            "tether-scheduler",
            "--master",
            "http://m:5050",
            "--fencing",
            "storage",
            "--unreachable-replace-after",
            "90s",
        ])
        .expect("parses");
        assert_eq!(f.fencing, Fencing::Storage);
        assert_eq!(f.unreachable_replace_after, Duration::from_secs(90));
    }

    #[test]
    fn an_event_cap_of_zero_is_refused() {
        let base = [
            "tether-scheduler",
            "--master",
            "http://m:5050",
            "--max-event-mib",
        ];
        let zero = Args::try_parse_from(base.iter().copied().chain(["0"]));
        assert!(zero.is_err());
        let big = Args::try_parse_from(base.iter().copied().chain(["256"])).expect("parses");
        assert_eq!(big.max_event_mib, 256);
    }

    #[test]
    fn zookeeper_urls_keep_their_commas() {
        let a = Args::try_parse_from([
            "tether-scheduler",
            "--master",
            "zk://z1:2181,z2:2181/mesos",
            "--state",
            "zk://z1:2181,z2:2181/tether/es",
        ])
        .expect("parses");
        assert!(a.master_source().expect("zk master").is_zk());
        let state = a.state_url().expect("a zk state URL");
        assert_eq!(state.hosts(), ["z1:2181", "z2:2181"]);
        assert_eq!(state.path(), "/tether/es");
        let bad = Args::try_parse_from([
            "tether-scheduler",
            "--master",
            "http://m:5050",
            "--state",
            "/var/lib/x",
        ]);
        assert!(bad.is_err(), "--state takes only zk:// URLs");
        let http = Args::try_parse_from([
            "tether-scheduler",
            "--master",
            "http://m1:5050,http://m2:5050",
        ])
        .expect("parses");
        assert!(!http.master_source().expect("http masters").is_zk());
    }
}
