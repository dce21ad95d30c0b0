//! `tether-dev`'s flags (each also an environment variable).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::chaos;

/// The scheduler's `--fencing`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Fencing {
    /// An UNREACHABLE node waits for `tetherctl agents gone HOST`.
    None,
    /// The REX-Ray doubles fence: an UNREACHABLE node absent from Elasticsearch is replaced after
    /// `--unreachable-replace-after`.
    Storage,
}

/// Flags of tether-dev.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "tether-dev",
    version,
    about = "Run a whole Tether cluster locally: Mesos emulator, REX-Ray doubles, sidecars, scheduler, Elasticsearch stand-ins"
)]
pub struct Args {
    /// Number of Mesos agents (each with a REX-Ray double and a sidecar).
    #[arg(long, env = "TETHER_DEV_AGENTS", default_value_t = 3)]
    pub agents: usize,
    /// Number of zones the agents (and the nodes' volumes) are spread over, round robin: 1 or 2.
    #[arg(long, env = "TETHER_DEV_ZONES", default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=2))]
    pub zones: u8,
    /// Number of Elasticsearch nodes.
    #[arg(long, env = "TETHER_DEV_NODES", default_value_t = 3)]
    pub nodes: u64,
    /// Directory for all state, tokens and logs (created; reused across runs).
    #[arg(long, env = "TETHER_DEV_STATE_DIR", default_value = "/tmp/tether-dev")]
    pub state_dir: PathBuf,
    /// Admin API (and sidecar channel) address of the scheduler.
    #[arg(
        long,
        env = "TETHER_DEV_ADMIN_LISTEN",
        default_value = "127.0.0.1:7070"
    )]
    pub admin_listen: SocketAddr,
    /// Kill and partition agents at random while writing and reading documents; report any lost one.
    #[arg(long, env = "TETHER_DEV_CHAOS")]
    pub chaos: bool,
    /// Rounds of `--chaos` (one fault, recovery, settling and checks each); 0 runs until Ctrl-C.
    #[arg(long, env = "TETHER_DEV_CHAOS_ROUNDS", default_value_t = 0)]
    pub chaos_rounds: u64,
    /// Seed of the fault sequence (printed; pass it again to replay the same choices). Random if unset.
    #[arg(long, env = "TETHER_DEV_CHAOS_SEED")]
    pub chaos_seed: Option<u64>,
    /// Kinds of faults `--chaos` picks from.
    #[arg(
        long,
        env = "TETHER_DEV_CHAOS_FAULTS",
        value_enum,
        value_delimiter = ',',
        default_value = "kill-agent,partition,kill-sidecar,kill-scheduler,master-failover,hung-plugin,slow-plugin,zk-leader-loss,sidecar-impostor"
    )]
    pub chaos_faults: Vec<chaos::FaultKind>,
    /// How long a fault lasts before recovery starts (a partition lasts until the agent is UNREACHABLE).
    #[arg(long, env = "TETHER_DEV_CHAOS_HOLD", default_value = "3s", value_parser = humantime::parse_duration)]
    pub chaos_hold: Duration,
    /// Bound on the cluster's return to health after a fault (all nodes RUNNING and serving, every
    /// sidecar connected); a round that does not settle is a violation.
    #[arg(long, env = "TETHER_DEV_CHAOS_SETTLE_TIMEOUT", default_value = "90s", value_parser = humantime::parse_duration)]
    pub chaos_settle_timeout: Duration,
    /// Agents get the addresses `<subnet>.11`, `<subnet>.12`, ... (any 127/8 subnet).
    #[arg(long, env = "TETHER_DEV_AGENT_SUBNET", default_value = "127.0.0")]
    pub agent_subnet: String,
    /// First port of the agents' port ranges.
    #[arg(long, env = "TETHER_DEV_PORTS_BASE", default_value_t = 31000)]
    pub ports_base: u16,
    /// Size of each agent's port range.
    #[arg(long, env = "TETHER_DEV_PORT_STRIDE", default_value_t = 100)]
    pub port_stride: u16,
    /// The emulated Mesos master's allocation interval.
    #[arg(long, env = "TETHER_DEV_ALLOCATION_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub allocation_interval: Duration,
    /// How long a partitioned agent stays silent before the master declares its tasks UNREACHABLE.
    #[arg(long, env = "TETHER_DEV_AGENT_PING_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub agent_ping_timeout: Duration,
    /// The scheduler's wait after subscribing before it places nodes.
    #[arg(long, env = "TETHER_DEV_STARTUP_GRACE", default_value = "5s", value_parser = humantime::parse_duration)]
    pub startup_grace: Duration,
    /// The scheduler's `--fencing`: `storage` (the REX-Ray doubles preempt, so a dead agent's node comes
    /// back on its own) or `none` (it waits for `tetherctl agents gone HOST`).
    #[arg(long, env = "TETHER_DEV_FENCING", value_enum, default_value_t = Fencing::Storage)]
    pub fencing: Fencing,
    /// The scheduler's `--unreachable-replace-after` with `--fencing storage`.
    #[arg(long, env = "TETHER_DEV_UNREACHABLE_REPLACE_AFTER", default_value = "10s", value_parser = humantime::parse_duration)]
    pub unreachable_replace_after: Duration,
    /// Keep the scheduler's state in a standalone ZooKeeper that tether-dev starts (Debian's `zookeeper`
    /// package: `/usr/share/java/zookeeper.jar` and Java), as `--state zk://127.0.0.1:<port>/tether/dev`
    /// with a 4 s session timeout, instead of the embedded store. `--chaos` then also restarts it
    /// (`zk-leader-loss`).
    #[arg(long, env = "TETHER_DEV_ZOOKEEPER")]
    pub zookeeper: bool,
    /// The scheduler's `--es-security`: `auto` is `full` with the stand-in's default 8.x image (TLS on the
    /// transport and HTTP layers, the `elastic` password; `--chaos` writes and reads that way too).
    #[arg(long, env = "TETHER_DEV_ES_SECURITY", default_value = "auto", value_parser = ["auto", "off", "transport", "full"])]
    pub es_security: String,
    /// Node groups, passed to the scheduler's `--group` (repeatable; `;`-separated in the environment),
    /// e.g. `masters:1:roles=master`. Their volumes are pre-created; `--nodes` then sizes nothing.
    #[arg(long = "group", env = "TETHER_DEV_GROUPS", value_delimiter = ';')]
    pub groups: Vec<String>,
    /// How often the live status is printed.
    #[arg(long, env = "TETHER_DEV_STATUS_INTERVAL", default_value = "3s", value_parser = humantime::parse_duration)]
    pub status_interval: Duration,
    /// Log format of tether-dev itself (components log to `<state-dir>/logs`).
    #[arg(long, env = "TETHER_LOG_FORMAT", value_enum, default_value_t)]
    pub log_format: tether_telemetry::LogFormat,
}
