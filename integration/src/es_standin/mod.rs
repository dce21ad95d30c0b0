//! `es-standin`: a faithful double of one node of the official Elasticsearch Docker image (7.17, 8.x), as
//! far as what Tether gives a node and expects back (facts: `shared/protocols/elasticsearch.md`).
//!
//! Real Elasticsearch cannot run here, so the tests and the local cluster run this instead; it must refuse
//! what real Elasticsearch refuses, or a Tether bug passes the tests. A start goes as the image's does:
//! 1. the version is the one the task's image tag names ([`image`]);
//! 2. the process plays the image's user, 1000:0, and every path it touches is checked against that user
//!    as the kernel would; 8.x refuses to run as root. The rule ([`container`] has it in full): a
//!    `TETHER_EMU_USER=uid:gid` wins; else under the process launcher's emulation (`TETHER_EMU_ROOTFS`
//!    set) a stand-in that really is root plays the image's user (8.x 1000:0; 7.17 root, which its
//!    entrypoint drops to 1000:0); else it is what it really is — so a root process outside the emulation
//!    is refused by 8.x, and the Docker tier's image truly runs as 1000:0;
//! 3. the entrypoint's steps: `ELASTIC_PASSWORD(_FILE)` into the keystore, 7.17's `TAKE_FILE_OWNERSHIP`;
//! 4. settings from `elasticsearch.yml`, then `-E` options and the environment the way
//!    `bin/elasticsearch-env` maps it ([`settings`]); validated as Elasticsearch validates node settings
//!    at start-up where the stand-in knows them: 8.x's removed legacy settings, and under
//!    `cluster.routing.` an unknown key ("unknown setting [..] did you mean [..]?") or a bad value;
//! 5. the data path (default `ES_HOME/data`, in the task's own layer), its lock and state ([`data_path`]);
//!    data last written by a newer version refuses the start ("cannot downgrade a node from version [..]
//!    to version [..]"), an older one is upgraded in place;
//! 6. 8.x security auto-configuration on a first start that allows it ([`autoconfig`]);
//! 7. TLS material ([`tls`]), transport bound ([`network`]), bootstrap checks in production mode
//!    ([`bootstrap_checks`]);
//! 8. cluster coordination with the other stand-ins over the transport port ([`cluster`]) and the HTTP API
//!    ([`http`], [`api`], [`documents`]).
//!
//! **Shards and operations** (issue 14; Elasticsearch's paths, parameters, field names and status codes):
//! - indices with primaries and replicas (`PUT /<index>` with `settings.number_of_shards` /
//!   `number_of_replicas`, default 1/1, also on a document's first write; `PUT /<index>/_settings` for
//!   `number_of_replicas` and `unassigned.node_left.delayed_timeout`), allocated by the master
//!   ([`cluster::routing`]: data roles, one copy per node, awareness, `exclude._name/_ip/_host/_id`,
//!   `allocation.enable`, versions, shutdown records, delayed replicas, in-sync copies, simple
//!   rebalancing); copies recover from the primary (or a primary from its own data path) in
//!   `es_standin.recovery_time` (200ms; not an Elasticsearch setting), so INITIALIZING and RELOCATING
//!   are seen; documents live in the copies on the holders' data paths ([`cluster::shards`]): a write is
//!   acknowledged once on the primary and every other assigned copy (a copy that missed it is failed
//!   first), a read goes to an active copy, a red shard answers 503;
//! - `GET /_cluster/health[/<index>]` from the shard table (`wait_for_status`, `wait_for_nodes`,
//!   `wait_for_no_relocating_shards`, `wait_for_no_initializing_shards`, `timeout` → 408); `_cat/nodes`,
//!   `_cat/shards[/<index>]`, `_cat/health` (text with `v`, or `format=json`; `h=` by column name or
//!   alias; node ids abbreviated to 4 characters unless `full_id=true`); `GET /_nodes`;
//!   `GET|PUT /_cluster/settings` (`persistent`, `transient`, nested or flat, null resets, wildcards
//!   reset; `cluster.routing.*` allocation settings only, others 400); `GET /_cluster/state` with
//!   `metadata.cluster_coordination` (`last_committed_config`, `voting_config_exclusions`) and
//!   `routing_table`; `POST /_flush`, `/<index>/_flush`, 7.17's `_flush/synced`;
//! - the node shutdown API by node id (`PUT|GET|DELETE /_nodes/<id>/shutdown`, `GET /_nodes/shutdown`)
//!   and voting configuration exclusions (`POST|DELETE /_cluster/voting_config_exclusions`), see [`api`];
//! - not modelled: searches, deletes, mappings, aliases, templates, snapshots, `_cluster/reroute`,
//!   allocation explain, disk-based allocation, data tiers, ingest; document routing hashes ids with
//!   FNV-1a, not murmur3; `_cat` heap/ram/cpu/load/store columns are placeholders.
//!
//! A refused start exits non-zero with Elasticsearch's message: 64 for command-line errors, 78 for failed
//! bootstrap checks, 1 otherwise.

pub mod api;
pub mod autoconfig;
pub mod bootstrap_checks;
pub mod certs;
pub mod cluster;
pub mod container;
pub mod data_path;
pub mod documents;
pub mod http;
pub mod image;
pub mod network;
pub mod settings;
pub mod testing;
pub mod tls;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use self::bootstrap_checks::{BootstrapCheckFailure, CheckError, CheckInput, JvmOptions};
use self::cluster::state::{DiscoveryNode, StateError, StateStore};
use self::cluster::transport::TransportTls;
use self::cluster::{ClusterSettings, Coordinator};
use self::container::{ContainerFs, EMU_USER_ENV, Identity};
use self::data_path::DataPathError;
use self::image::{EsVersion, ImageError, Keystore, TASK_IMAGE_ENV};
use self::settings::{Settings, SettingsError};
use self::tls::{ClientAuth, SslSettings, TlsError};

/// The command line: what `bin/elasticsearch` accepts that a task uses.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "es-standin",
    about = "Elasticsearch stand-in for Tether's tests and local cluster: `-E key=value` settings, and the environment the official image reads"
)]
pub struct Args {
    /// Configure a setting (`-E key=value`, also `-Ekey=value`).
    #[arg(short = 'E', value_name = "KEY=VALUE")]
    pub settings: Vec<String>,
    /// Log format, from `TETHER_LOG_FORMAT` (`text` or `json`); not an Elasticsearch option.
    #[arg(skip = log_format_from_env())]
    pub log_format: tether_telemetry::LogFormat,
}

fn log_format_from_env() -> tether_telemetry::LogFormat {
    match std::env::var("TETHER_LOG_FORMAT").as_deref() {
        Ok("json") => tether_telemetry::LogFormat::Json,
        _ => tether_telemetry::LogFormat::Text,
    }
}

/// Why the stand-in did not start.
#[derive(Debug, thiserror::Error)]
pub enum StandinError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("can not run elasticsearch as root")]
    Root,
    #[error(transparent)]
    DataPath(#[from] DataPathError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    BootstrapChecks(#[from] BootstrapCheckFailure),
    #[error("BindTransportException[Failed to bind {what} to {addr}]; nested: {source}")]
    Bind {
        what: &'static str,
        addr: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Network(String),
}

impl StandinError {
    /// Elasticsearch's exit code for this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            StandinError::Settings(SettingsError::Usage(_)) => 64,
            StandinError::BootstrapChecks(_) => 78,
            _ => 1,
        }
    }
}

impl From<CheckError> for StandinError {
    fn from(e: CheckError) -> Self {
        match e {
            CheckError::Failed(f) => StandinError::BootstrapChecks(f),
            CheckError::Settings(s) => StandinError::Settings(s),
        }
    }
}

/// The addresses a started node listens on.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub http: SocketAddr,
    pub transport: SocketAddr,
}

/// Runs a node with this process's environment until `shutdown` is cancelled. `on_bound` is told the
/// real addresses once both listeners are bound (useful with port 0).
pub async fn run(
    args: Args,
    shutdown: CancellationToken,
    on_bound: impl FnOnce(Bound),
) -> Result<(), StandinError> {
    run_with_env(std::env::vars().collect(), args, shutdown, on_bound).await
}

/// [`run`] with an explicit environment (several nodes in one test process).
pub async fn run_with_env(
    env: BTreeMap<String, String>,
    args: Args,
    shutdown: CancellationToken,
    on_bound: impl FnOnce(Bound),
) -> Result<(), StandinError> {
    let version = EsVersion::from_image(env.get(TASK_IMAGE_ENV).map(String::as_str))
        .map_err(|e| StandinError::Image(ImageError::Config(e)))?;
    let fs = ContainerFs::from_env(&env);
    let start = start_identity(&env, &fs, version)?;
    image::materialize_layer(&fs).map_err(|e| ImageError::Config(e.to_string()))?;

    let entry = image::run_entrypoint(version, &env, &fs, start)?;
    let who = entry.identity;
    if who.uid == 0 {
        return Err(StandinError::Root);
    }
    let cli_args: &[String] = if entry.args_passed {
        &args.settings
    } else {
        if !args.settings.is_empty() {
            tracing::warn!("the {version} image's entrypoint drops the command's arguments");
        }
        &[]
    };
    let cli = settings::command_line_settings(&env, cli_args)?;
    let config = image::read_config_dir(&env, &fs, who)?;
    let yml = match &config.yml {
        Some(text) => settings::parse_yml(text)?,
        None => Settings::new(),
    };
    let mut settings = yml.overridden_by(&cli).resolve_placeholders(&env)?;
    validate_settings(&settings, version)?;

    let data_container = data_path::configured(&settings, version)?;
    let (data, lock) = data_path::open(&fs, &data_container, who)?;
    let lock_check = data_path::LockCheck::new(&lock, &data)?;
    let data_was_empty = std::fs::read_dir(&data.host)
        .map(|mut d| d.all(|e| e.is_ok_and(|e| e.file_name() == "node.lock")))
        .unwrap_or(true);
    let node_id_env = env.get("ELASTICSEARCH_NODE_ID").cloned();
    let data_owner = data.record_owner(node_id_env.as_deref())?;

    let node_name = settings
        .get("node.name")
        .map(str::to_owned)
        .unwrap_or_else(|| default_node_name(&env));
    let roles = node_roles(&settings, version)?;
    let mut keystore = config.keystore.clone();
    if version.is_8() {
        let ctx = autoconfig::Context {
            fs: &fs,
            who,
            config_dir: &config.path,
            settings: &settings,
            node_name: &node_name,
            roles: &roles,
            data_was_empty,
        };
        if let Some(added) = autoconfig::run(&ctx, &mut keystore)? {
            settings = settings.overridden_by(&added);
        }
    }

    let cluster_name = settings
        .get("cluster.name")
        .unwrap_or("elasticsearch")
        .to_owned();
    let store = StateStore::new(&data.state_dir());
    let persisted = store.load_or_create(&cluster_name, version)?;

    let security = bootstrap_checks::security_enabled(&settings, version)?;
    let transport_ssl = if security {
        SslSettings::from_settings(
            &settings,
            tls::TRANSPORT_SSL,
            &config.path,
            ClientAuth::Required,
        )?
    } else {
        None
    };
    let http_ssl = if security {
        SslSettings::from_settings(&settings, tls::HTTP_SSL, &config.path, ClientAuth::None)?
    } else {
        None
    };
    let transport_tls = match &transport_ssl {
        Some(s) => {
            let loaded = s.load(&fs, who)?;
            Some(TransportTls {
                acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(loaded.server_config()?)),
                connector: tokio_rustls::TlsConnector::from(Arc::new(loaded.client_config()?)),
            })
        }
        None => None,
    };
    let http_tls = match &http_ssl {
        Some(s) => Some(tokio_rustls::TlsAcceptor::from(Arc::new(
            s.load(&fs, who)?.server_config()?,
        ))),
        None => None,
    };

    // Transport first, then the bootstrap checks, then HTTP, as Elasticsearch starts.
    let transport_bind = network::resolve_host(
        settings
            .first_of(&[
                "transport.bind_host",
                "transport.host",
                "network.bind_host",
                "network.host",
            ])
            .unwrap_or("_local_"),
    )
    .await?;
    let transport_ports = settings.get("transport.port").unwrap_or("9300-9400");
    let transport = network::bind_range(transport_bind, transport_ports, "transport").await?;
    let transport_addr = network::local_addr(&transport, "transport")?;
    let publish_host = settings
        .first_of(&[
            "transport.publish_host",
            "transport.host",
            "network.publish_host",
            "network.host",
        ])
        .unwrap_or("_local_")
        .to_owned();
    let mut publish_ip = network::resolve_host(&publish_host).await?;
    if publish_ip.is_unspecified() {
        publish_ip = network::primary_ip();
    }
    let publish_port = match settings.get("transport.publish_port") {
        Some(p) => p.parse().map_err(|_| {
            SettingsError::Invalid(format!(
                "Failed to parse value [{p}] for setting [transport.publish_port]"
            ))
        })?,
        None => transport_addr.port(),
    };
    let publish = SocketAddr::new(publish_ip, publish_port);
    let es_java_opts = env.get("ES_JAVA_OPTS").map(String::as_str);
    let jvm = JvmOptions::new(&config.jvm_options, es_java_opts);
    bootstrap_checks::check(&CheckInput {
        settings: &settings,
        version,
        jvm: &jvm,
        transport_bound: &[transport_addr],
        transport_publish: publish,
        memlock_unlimited: bootstrap_checks::memlock_unlimited(),
        memory_bytes: bootstrap_checks::memory_bytes(),
    })?;

    let http_bind = network::resolve_host(
        settings
            .first_of(&[
                "http.bind_host",
                "http.host",
                "network.bind_host",
                "network.host",
            ])
            .unwrap_or("_local_"),
    )
    .await?;
    let http = network::bind_range(
        http_bind,
        settings.get("http.port").unwrap_or("9200-9300"),
        "http",
    )
    .await?;
    let bound = Bound {
        http: network::local_addr(&http, "http")?,
        transport: transport_addr,
    };

    let publish_host_name = if publish_host.starts_with('_') || publish_host == "0.0.0.0" {
        publish_ip.to_string()
    } else {
        publish_host
    };
    let local = DiscoveryNode {
        id: persisted.node_id.clone(),
        name: node_name.clone(),
        address: publish,
        host: publish_host_name,
        roles,
        version,
        attributes: settings
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix("node.attr.")
                    .map(|a| (a.to_owned(), v.to_owned()))
            })
            .collect(),
        ephemeral_id: cluster::state::new_uuid(),
    };
    let default_port = transport_ports
        .split('-')
        .next()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or(9300);
    let cluster_cfg =
        ClusterSettings::from_settings(&settings, &cluster_name, default_port, version.is_8())?;
    let coordinator = Coordinator::start(
        cluster_cfg,
        local,
        persisted,
        store,
        data.container.display().to_string(),
        cluster::shards::Docs {
            indices: data.indices(),
            lock: Some(data_path::LockCheck::new(&lock, &data)?),
            write_lock: tokio::sync::Mutex::new(()),
        },
        transport,
        transport_tls,
        shutdown.clone(),
    );
    let http_node = Arc::new(http::HttpNode {
        cluster_name: cluster_name.clone(),
        version,
        security: security.then(|| keystore.entries.get(Keystore::BOOTSTRAP_PASSWORD).cloned()),
        coordinator,
        lock: lock_check,
        tether_node_id: node_id_env,
        data_owner: data_owner.clone(),
    });
    tracing::info!(
        node = %node_name, version = %version, user = %who, http = %bound.http,
        transport = %bound.transport, publish = %publish, data = %data.container.display(),
        data_host = %data.host.display(), owner = ?data_owner, security,
        "es-standin started"
    );
    on_bound(bound);
    http::serve(http, http_tls, http_node, shutdown.clone()).await;
    drop(lock);
    tracing::info!(node = %node_name, "es-standin stopped");
    Ok(())
}

/// The identity the process starts as (see [`container`]).
fn start_identity(
    env: &BTreeMap<String, String>,
    fs: &ContainerFs,
    version: EsVersion,
) -> Result<Identity, StandinError> {
    if let Some(raw) = env.get(EMU_USER_ENV).filter(|v| !v.is_empty()) {
        return Identity::parse(raw).ok_or_else(|| {
            StandinError::Network(format!("{EMU_USER_ENV}={raw}: expected <uid>:<gid>"))
        });
    }
    let real = Identity::real();
    Ok(if fs.emulated() && real.uid == 0 {
        version.image_user()
    } else {
        real
    })
}

/// Settings Elasticsearch refuses outright: 8.x's removed legacy settings, and unknown keys or bad values
/// under `cluster.routing.` (validated at start-up as `PUT _cluster/settings` validates them).
fn validate_settings(settings: &Settings, version: EsVersion) -> Result<(), SettingsError> {
    for (key, value) in settings.iter() {
        if let Some(why) = cluster::routing::startup_error(key, value) {
            return Err(SettingsError::Invalid(why));
        }
    }
    if version.is_8() {
        for legacy in [
            "node.master",
            "node.data",
            "node.ingest",
            "node.ml",
            "node.voting_only",
            "node.transform",
            "node.remote_cluster_client",
            "discovery.zen.minimum_master_nodes",
        ] {
            if settings.contains(legacy) {
                return Err(SettingsError::Invalid(format!(
                    "unknown setting [{legacy}] please check that any required plugins are installed, or check the breaking changes documentation for removed settings"
                )));
            }
        }
    }
    Ok(())
}

/// `node.roles` (7.9+), or 7.17's legacy `node.master` / `node.data`; all roles by default.
fn node_roles(settings: &Settings, version: EsVersion) -> Result<BTreeSet<String>, SettingsError> {
    const ALL: [&str; 11] = [
        "data",
        "data_cold",
        "data_content",
        "data_frozen",
        "data_hot",
        "data_warm",
        "ingest",
        "master",
        "ml",
        "remote_cluster_client",
        "transform",
    ];
    let legacy: Vec<&str> = ["node.master", "node.data"]
        .into_iter()
        .filter(|k| settings.contains(k))
        .collect();
    if settings.contains("node.roles") {
        if let Some(k) = legacy.first() {
            return Err(SettingsError::Invalid(format!(
                "can not explicitly configure node roles and use legacy role setting [{k}]=[{}]",
                settings.get(k).unwrap_or("")
            )));
        }
        // From 8.2 a list setting given on the command line (as the image turns the environment) may be
        // a JSON-style array, so `[]` is the empty list: a coordinating-only node (elastic/elasticsearch
        // #85186). Before, the value is split on commas only: `[]` is one role named `[]`.
        let roles: BTreeSet<String> = if version >= EsVersion::new(8, 2, 0) {
            settings.list("node.roles").into_iter().collect()
        } else {
            settings
                .get("node.roles")
                .unwrap_or("")
                .split(',')
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .map(str::to_owned)
                .collect()
        };
        for r in &roles {
            if !ALL.contains(&r.as_str()) && r != "voting_only" {
                return Err(SettingsError::Invalid(format!("unknown role [{r}]")));
            }
        }
        return Ok(roles);
    }
    let mut roles: BTreeSet<String> = ALL.iter().map(|s| (*s).to_owned()).collect();
    if !version.is_8() {
        if !settings.bool("node.master", true)? {
            roles.remove("master");
        }
        if !settings.bool("node.data", true)? {
            roles.retain(|r| r != "data" && !r.starts_with("data_"));
        }
    }
    Ok(roles)
}

fn default_node_name(env: &BTreeMap<String, String>) -> String {
    env.get("HOSTNAME")
        .filter(|h| !h.is_empty())
        .cloned()
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_role_array_is_coordinating_only_from_8_2() {
        let s = Settings::from_pairs([("node.roles", "[]")]);
        let roles = node_roles(&s, EsVersion::new(8, 13, 4)).expect("8.13 reads []");
        assert!(roles.is_empty());
        let old = node_roles(&s, EsVersion::new(8, 1, 0)).expect_err("8.1 does not");
        assert!(old.to_string().contains("unknown role [[]]"), "{old}");
        let s = Settings::from_pairs([("node.roles", "master,data")]);
        let roles = node_roles(&s, EsVersion::new(7, 17, 0)).expect("a list");
        assert_eq!(
            roles,
            BTreeSet::from(["data".to_owned(), "master".to_owned()])
        );
    }
}
