//! The scheduler's Elasticsearch client. Elasticsearch, not Mesos, knows whether the cluster
//! bootstrapped: a container can reach TASK_RUNNING and its node never join anything.
//!
//! [`EsClient::root`] asks a node `GET /` for its name and `cluster_uuid` (`_na_` until it has joined a
//! bootstrapped cluster); [`probe_roots`] asks every running node at once and hands each answer to the
//! loop, which gives it to the core (`Core::handle_es_root`). With security on the client trusts the
//! cluster CA only (https with `full`) and logs in as `elastic`.
//!
//! It also gives storage fencing its second opinion: which nodes does the elected master list? A Mesos
//! partition is not an Elasticsearch partition (an agent process can die while its containers keep
//! serving), so a node is replaced only if Elasticsearch no longer lists it either. [`observe`] asks
//! the nodes in turn `GET /_cluster/state/master_node,nodes` (a node forwards it to the elected master,
//! waiting at most `master_timeout`) until one answers for a master; [`run_poller`] does that every
//! interval and hands each [`EsCluster`] (whose `view` is that [`EsView`]) to the loop.
//!
//! The same poll gathers the rest of what the core acts on, from the node that answered for the
//! master ([`observe`], one [`EsCluster`]): `_cluster/health` (colour and shard counts, the
//! `tether_es_health` gauge), `_cat/nodes` (versions, roles), `_cat/shards` (who holds what),
//! `_nodes/shutdown` (shutdown records) and the voting configuration exclusions. A part that does not
//! answer is unknown (`None`), never empty.
//!
//! And the calls the core asks for (`Command::Elasticsearch`, [`execute`]): the node shutdown API,
//! cluster settings, flush and voting exclusions, sent to the running nodes in turn until one answers.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use tether_core::command::EsCall;
use tether_core::domain::{
    EsCluster, EsHealth, EsNode, EsShard, EsVersion, EsView, NodeShutdown, ShardCounts, ShardState,
    ShutdownKind, ShutdownStatus,
};
use tether_core::ids::{NodeId, TaskId};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Largest answer read: the cluster state's `nodes` of a big cluster, with room to spare.
const MAX_BODY: usize = 8 << 20;

/// How the client talks to the cluster.
#[derive(Clone)]
pub struct EsClientConfig {
    /// Bound on one request, from connecting to the end of the answer; also the `master_timeout` asked.
    pub timeout: Duration,
    /// PEM CA certificate(s) trusted for `https://` nodes (`None`: plain HTTP only).
    pub ca_pem: Option<String>,
    /// `(user, password)` for HTTP basic authentication.
    pub basic_auth: Option<(String, String)>,
}

impl std::fmt::Debug for EsClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EsClientConfig")
            .field("timeout", &self.timeout)
            .field("tls", &self.ca_pem.is_some())
            .field("user", &self.basic_auth.as_ref().map(|(u, _)| u))
            .finish()
    }
}

/// Why a node gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum EsError {
    #[error("{node}: {message}")]
    Transport { node: String, message: String },
    #[error("{node}: timed out after {timeout:?}")]
    Timeout { node: String, timeout: Duration },
    #[error("{node}: HTTP {status}: {body}")]
    Status {
        node: String,
        status: u16,
        body: String,
    },
    #[error("{node}: unreadable answer: {message}")]
    Body { node: String, message: String },
    #[error("the cluster CA: {0}")]
    Ca(String),
    #[error("{node}: no elected master")]
    NoMaster { node: String },
}

#[derive(Debug, Deserialize)]
struct ClusterState {
    master_node: Option<String>,
    #[serde(default)]
    nodes: BTreeMap<String, StateNode>,
}

#[derive(Debug, Deserialize)]
struct StateNode {
    name: String,
}

/// The elected master's name and the listed nodes (Elasticsearch id to node name).
#[derive(Debug)]
struct StateNodes {
    master: Option<String>,
    nodes: BTreeMap<String, String>,
}

/// What `GET /` says about a node.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RootInfo {
    /// The node's name.
    pub name: String,
    /// The cluster it belongs to; `_na_` before it joined a bootstrapped cluster.
    pub cluster_uuid: String,
}

/// The value of `tether_es_health`: 0 green, 1 yellow, 2 red, 3 no elected master, -1 unknown; so
/// `>= 2` means the cluster cannot serve all of its data.
#[must_use]
pub fn health_gauge(h: EsHealth) -> i64 {
    match h {
        EsHealth::Green => 0,
        EsHealth::Yellow => 1,
        EsHealth::Red => 2,
        EsHealth::NoMaster => 3,
        EsHealth::Unknown => -1,
    }
}

#[derive(Debug, Deserialize)]
struct HealthAnswer {
    status: String,
    #[serde(default)]
    active_shards: u64,
    #[serde(default)]
    relocating_shards: u64,
    #[serde(default)]
    initializing_shards: u64,
    #[serde(default)]
    unassigned_shards: u64,
}

/// One row of `_cat/nodes?format=json&full_id=true&h=id,name,version,node.role`.
#[derive(Debug, Deserialize)]
struct CatNode {
    name: String,
    #[serde(default)]
    version: Option<String>,
    #[serde(default, rename = "node.role")]
    role: Option<String>,
}

/// One row of `_cat/shards?format=json&h=index,shard,prirep,state,node` (every value a string).
#[derive(Debug, Deserialize)]
struct CatShard {
    index: String,
    shard: String,
    prirep: String,
    state: String,
    #[serde(default)]
    node: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ShutdownAnswer {
    #[serde(default)]
    nodes: Vec<ShutdownRecord>,
}

#[derive(Debug, Deserialize)]
struct ShutdownRecord {
    node_id: String,
    #[serde(rename = "type")]
    kind: String,
    status: String,
}

#[derive(Debug, Default, Deserialize)]
struct CoordinationAnswer {
    #[serde(default)]
    metadata: Option<CoordinationMetadata>,
}

#[derive(Debug, Default, Deserialize)]
struct CoordinationMetadata {
    #[serde(default)]
    cluster_coordination: Option<Coordination>,
}

#[derive(Debug, Default, Deserialize)]
struct Coordination {
    #[serde(default)]
    voting_config_exclusions: Vec<VotingExclusion>,
}

#[derive(Debug, Deserialize)]
struct VotingExclusion {
    #[serde(default)]
    node_name: String,
}

/// A client; cheap to clone.
#[derive(Debug, Clone)]
pub struct EsClient {
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    config: EsClientConfig,
}

impl EsClient {
    /// A client; fails only on a CA that holds no usable certificate.
    pub fn new(config: EsClientConfig) -> Result<EsClient, EsError> {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.timeout));
        connector.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(config.ca_pem.as_deref())?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        Ok(EsClient {
            http: Client::builder(TokioExecutor::new()).build(connector),
            config,
        })
    }

    /// `GET {base}/`, where `base` is `http://host:port`.
    pub async fn root(&self, base: &str) -> Result<RootInfo, EsError> {
        let body = self.get(base, "/").await?;
        serde_json::from_slice(&body).map_err(|e| EsError::Body {
            node: base.to_owned(),
            message: e.to_string(),
        })
    }

    /// The elected master's name (`None`: none elected) and every listed node, id to name.
    async fn state(&self, base: &str) -> Result<StateNodes, EsError> {
        let path = format!(
            "/_cluster/state/master_node,nodes?master_timeout={}ms",
            self.config.timeout.as_millis()
        );
        let body = match self.get(base, &path).await {
            Ok(body) => body,
            Err(EsError::Status { node, status, .. })
                if status == StatusCode::SERVICE_UNAVAILABLE.as_u16() =>
            {
                return Err(EsError::NoMaster { node });
            }
            Err(e) => return Err(e),
        };
        parse_state(base, &body)
    }

    /// `GET /_cluster/health` of the node at `base`, waiting at most the client's timeout for a master.
    pub async fn health(&self, base: &str) -> Result<EsHealth, EsError> {
        self.health_and_counts(base).await.map(|(h, _)| h)
    }

    /// `GET /_cluster/health`: the colour and, when a master answered, the shard counts.
    pub async fn health_and_counts(
        &self,
        base: &str,
    ) -> Result<(EsHealth, Option<ShardCounts>), EsError> {
        let path = format!(
            "/_cluster/health?master_timeout={}ms",
            self.config.timeout.as_millis()
        );
        let body = match self.get(base, &path).await {
            Ok(body) => body,
            Err(EsError::Status { status, .. })
                if status == StatusCode::SERVICE_UNAVAILABLE.as_u16() =>
            {
                return Ok((EsHealth::NoMaster, None));
            }
            Err(e) => return Err(e),
        };
        let answer: HealthAnswer = parse(base, &body)?;
        let health = match answer.status.as_str() {
            "green" => EsHealth::Green,
            "yellow" => EsHealth::Yellow,
            "red" => EsHealth::Red,
            other => {
                return Err(EsError::Body {
                    node: base.to_owned(),
                    message: format!("unknown health status {other:?}"),
                });
            }
        };
        Ok((
            health,
            Some(ShardCounts {
                active: answer.active_shards,
                relocating: answer.relocating_shards,
                initializing: answer.initializing_shards,
                unassigned: answer.unassigned_shards,
            }),
        ))
    }

    /// Versions and roles by node name (`_cat/nodes`).
    async fn cat_nodes(&self, base: &str) -> Result<BTreeMap<String, CatNode>, EsError> {
        let body = self
            .get(
                base,
                "/_cat/nodes?format=json&full_id=true&h=id,name,version,node.role",
            )
            .await?;
        let rows: Vec<CatNode> = parse(base, &body)?;
        Ok(rows.into_iter().map(|r| (r.name.clone(), r)).collect())
    }

    /// Every shard copy (`_cat/shards`).
    async fn cat_shards(&self, base: &str) -> Result<Vec<EsShard>, EsError> {
        let body = self
            .get(
                base,
                "/_cat/shards?format=json&h=index,shard,prirep,state,node",
            )
            .await?;
        let rows: Vec<CatShard> = parse(base, &body)?;
        rows.into_iter().map(|r| shard_of(base, r)).collect()
    }

    /// The node shutdown records by Elasticsearch node id (`GET _nodes/shutdown`, 7.15+).
    async fn shutdowns(&self, base: &str) -> Result<BTreeMap<String, NodeShutdown>, EsError> {
        let body = self.get(base, "/_nodes/shutdown").await?;
        let answer: ShutdownAnswer = parse(base, &body)?;
        answer
            .nodes
            .into_iter()
            .map(|r| {
                let bad = |what: &str, v: &str| EsError::Body {
                    node: base.to_owned(),
                    message: format!("unknown shutdown {what} {v:?}"),
                };
                let kind = match r.kind.to_ascii_lowercase().as_str() {
                    "restart" => ShutdownKind::Restart,
                    "remove" => ShutdownKind::Remove,
                    "replace" => ShutdownKind::Replace,
                    _ => return Err(bad("type", &r.kind)),
                };
                let status = match r.status.to_ascii_uppercase().as_str() {
                    "NOT_STARTED" => ShutdownStatus::NotStarted,
                    "IN_PROGRESS" => ShutdownStatus::InProgress,
                    "STALLED" => ShutdownStatus::Stalled,
                    "COMPLETE" => ShutdownStatus::Complete,
                    _ => return Err(bad("status", &r.status)),
                };
                Ok((r.node_id, NodeShutdown { kind, status }))
            })
            .collect()
    }

    /// The node names in the voting configuration exclusions (the cluster state's coordination
    /// metadata; `filter_path` leaves out everything else, and an empty list altogether).
    async fn voting_exclusions(&self, base: &str) -> Result<BTreeSet<String>, EsError> {
        let body = self
            .get(
                base,
                "/_cluster/state/metadata?filter_path=metadata.cluster_coordination.voting_config_exclusions",
            )
            .await?;
        let answer: CoordinationAnswer = parse(base, &body)?;
        Ok(answer
            .metadata
            .and_then(|m| m.cluster_coordination)
            .map(|c| {
                c.voting_config_exclusions
                    .into_iter()
                    .map(|e| e.node_name)
                    .filter(|n| !n.is_empty())
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Makes `call` through the node at `base`, waiting at most `timeout`.
    pub async fn call(&self, base: &str, call: &EsCall, timeout: Duration) -> Result<(), EsError> {
        let settings =
            |key: &str, value: Option<String>| serde_json::json!({ "persistent": { key: value } });
        let (method, path, body) = match call {
            EsCall::PutShutdown {
                node_id,
                kind,
                reason,
                target_node_name,
            } => {
                let mut body = serde_json::json!({ "type": kind.as_str(), "reason": reason });
                if let Some(t) = target_node_name {
                    body["target_node_name"] = serde_json::Value::String(t.clone());
                }
                (
                    Method::PUT,
                    format!("/_nodes/{}/shutdown", path_segment(node_id)),
                    Some(body),
                )
            }
            EsCall::DeleteShutdown { node_id } => (
                Method::DELETE,
                format!("/_nodes/{}/shutdown", path_segment(node_id)),
                None,
            ),
            EsCall::SetAllocationEnable(v) => (
                Method::PUT,
                "/_cluster/settings".to_owned(),
                Some(settings(
                    "cluster.routing.allocation.enable",
                    v.map(|v| v.as_str().to_owned()),
                )),
            ),
            EsCall::SetAllocationExclude { names } => (
                Method::PUT,
                "/_cluster/settings".to_owned(),
                Some(settings(
                    "cluster.routing.allocation.exclude._name",
                    (!names.is_empty()).then(|| names.join(",")),
                )),
            ),
            EsCall::Flush => (Method::POST, "/_flush".to_owned(), None),
            EsCall::AddVotingExclusions { node_names } => (
                Method::POST,
                format!(
                    "/_cluster/voting_config_exclusions?node_names={}&timeout={}ms",
                    node_names
                        .iter()
                        .map(|n| path_segment(n))
                        .collect::<Vec<_>>()
                        .join(","),
                    timeout.saturating_sub(Duration::from_secs(1)).as_millis()
                ),
                None,
            ),
            EsCall::ClearVotingExclusions => (
                Method::DELETE,
                "/_cluster/voting_config_exclusions?wait_for_removal=false".to_owned(),
                None,
            ),
        };
        let body = body.map(|b| b.to_string().into_bytes());
        match self.send(method, base, &path, body, timeout).await {
            Ok(_) => Ok(()),
            // A shutdown record that is not there is cleared.
            Err(EsError::Status { status: 404, .. })
                if matches!(call, EsCall::DeleteShutdown { .. }) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// A GET bounded by the configured timeout; any status but 2xx is an error.
    async fn get(&self, base: &str, path: &str) -> Result<Bytes, EsError> {
        self.send(Method::GET, base, path, None, self.config.timeout)
            .await
    }

    /// A request bounded by `timeout`, with a JSON `body`; any status but 2xx is an error.
    async fn send(
        &self,
        method: Method,
        base: &str,
        path: &str,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Bytes, EsError> {
        let node = base.to_owned();
        let exchange = async {
            let mut req = Request::builder()
                .method(method)
                .uri(format!("{base}{path}"))
                .header(http::header::ACCEPT, "application/json");
            if body.is_some() {
                req = req.header(http::header::CONTENT_TYPE, "application/json");
            }
            if let Some((user, password)) = &self.config.basic_auth {
                use base64::Engine as _;
                let token =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                req = req.header(http::header::AUTHORIZATION, format!("Basic {token}"));
            }
            let req = req
                .body(Full::new(Bytes::from(body.unwrap_or_default())))
                .map_err(|e| EsError::Transport {
                    node: node.clone(),
                    message: e.to_string(),
                })?;
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|e| EsError::Transport {
                    node: node.clone(),
                    message: with_sources(&e),
                })?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| EsError::Body {
                    node: node.clone(),
                    message: e.to_string(),
                })?
                .to_bytes();
            Ok::<_, EsError>((status, body))
        };
        // A node that accepts the connection but never answers (a frozen process) is bounded here.
        let (status, body): (StatusCode, Bytes) =
            tokio::time::timeout(timeout + Duration::from_millis(500), exchange)
                .await
                .map_err(|_| EsError::Timeout {
                    node: node.clone(),
                    timeout,
                })??;
        if !status.is_success() {
            return Err(EsError::Status {
                node,
                status: status.as_u16(),
                body: String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned(),
            });
        }
        Ok(body)
    }
}

/// `e` and its causes: hyper's own words ("client error (Connect)") hide why, e.g. a node certificate the
/// cluster CA did not sign.
fn with_sources(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// The master's name (`None`: none elected) and the nodes it lists, from a cluster state answer.
fn parse_state(node: &str, body: &[u8]) -> Result<StateNodes, EsError> {
    let state: ClusterState = parse(node, body)?;
    let master = state
        .master_node
        .as_ref()
        .and_then(|id| state.nodes.get(id))
        .map(|n| n.name.clone());
    Ok(StateNodes {
        master,
        nodes: state
            .nodes
            .into_iter()
            .map(|(id, n)| (id, n.name))
            .collect(),
    })
}

/// `body` as JSON of type `T`, or why not.
fn parse<T: serde::de::DeserializeOwned>(node: &str, body: &[u8]) -> Result<T, EsError> {
    serde_json::from_slice(body).map_err(|e| EsError::Body {
        node: node.to_owned(),
        message: e.to_string(),
    })
}

/// A `_cat/shards` row as the core's shard copy. A relocating copy's `node` reads
/// `es-1 -> 10.0.0.2 <id> es-2`: the copy serves on the first.
fn shard_of(base: &str, r: CatShard) -> Result<EsShard, EsError> {
    let bad = |what: &str, v: &str| EsError::Body {
        node: base.to_owned(),
        message: format!("_cat/shards: unknown {what} {v:?}"),
    };
    let state = match r.state.as_str() {
        "STARTED" => ShardState::Started,
        "RELOCATING" => ShardState::Relocating,
        "INITIALIZING" => ShardState::Initializing,
        "UNASSIGNED" => ShardState::Unassigned,
        other => return Err(bad("state", other)),
    };
    let shard = r.shard.parse().map_err(|_| bad("shard", &r.shard))?;
    let node = r
        .node
        .as_deref()
        .and_then(|n| n.split(" -> ").next())
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_owned);
    Ok(EsShard {
        index: r.index,
        shard,
        primary: r.prirep == "p",
        state,
        node,
    })
}

/// `text` safe inside a URL path segment or query value: node ids and names are `[A-Za-z0-9_-]`
/// in practice; anything else is percent-encoded.
fn path_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Asks the nodes at `targets` in turn until one answers for an elected master, then asks that node the
/// rest of what the core needs. Every failure to find a master goes into the `NoMaster` view's words.
pub async fn observe(client: &EsClient, targets: &[String]) -> EsCluster {
    let mut failures = Vec::new();
    for t in targets {
        let state = match client.state(t).await {
            Ok(s) => s,
            Err(e) => {
                failures.push(e.to_string());
                continue;
            }
        };
        let Some(master) = state.master else {
            failures.push(format!("{t}: no elected master"));
            continue;
        };
        let (health, shard_counts) = match client.health_and_counts(t).await {
            Ok(h) => h,
            Err(e) => {
                tracing::debug!(error = %e, "no cluster health");
                (EsHealth::Unknown, None)
            }
        };
        let cat = log_err("_cat/nodes", client.cat_nodes(t).await);
        let nodes = state
            .nodes
            .iter()
            .map(|(id, name)| {
                let row = cat.as_ref().and_then(|c| c.get(name));
                (
                    name.clone(),
                    EsNode {
                        id: id.clone(),
                        version: row
                            .and_then(|r| r.version.as_deref())
                            .and_then(EsVersion::parse),
                        master_eligible: row
                            .and_then(|r| r.role.as_deref())
                            .map(|roles| roles.contains('m')),
                    },
                )
            })
            .collect();
        return EsCluster {
            view: EsView::Master {
                master,
                nodes: state.nodes.into_values().collect(),
            },
            health,
            shard_counts,
            nodes,
            shards: log_err("_cat/shards", client.cat_shards(t).await),
            shutdowns: log_err("_nodes/shutdown", client.shutdowns(t).await),
            voting_exclusions: log_err(
                "voting configuration exclusions",
                client.voting_exclusions(t).await,
            ),
        };
    }
    let mut cluster = EsCluster::unanswered(if failures.is_empty() {
        "no node to ask".to_owned()
    } else {
        failures.join("; ")
    });
    if !targets.is_empty()
        && let Some(t) = targets.first()
        && let Ok((h @ EsHealth::NoMaster, _)) = client.health_and_counts(t).await
    {
        cluster.health = h;
    }
    cluster
}

fn log_err<T>(what: &str, r: Result<T, EsError>) -> Option<T> {
    r.map_err(|e| tracing::debug!(error = %e, "{what}: no answer (unknown this round)"))
        .ok()
}

/// Makes `call` through the nodes at `targets` in turn: a node that cannot be reached, or knows no
/// master, hands it to the next; Elasticsearch's refusal is the answer.
pub async fn execute(
    client: &EsClient,
    targets: &[String],
    call: &EsCall,
    timeout: Duration,
) -> Result<(), String> {
    let mut failures = Vec::new();
    for t in targets {
        match client.call(t, call, timeout).await {
            Ok(()) => return Ok(()),
            Err(e @ (EsError::Transport { .. } | EsError::Timeout { .. })) => {
                failures.push(e.to_string());
            }
            Err(e @ EsError::Status { status: 503, .. }) => failures.push(e.to_string()),
            Err(e) => return Err(format!("{call}: {e}")),
        }
    }
    Err(if failures.is_empty() {
        format!("{call}: no running node to ask")
    } else {
        format!("{call}: {}", failures.join("; "))
    })
}

/// Every `interval`, asks the current `targets` (HTTP base URLs of the nodes the loop believes serve)
/// and sends the view to the loop, until `stop` (or the loop is gone).
pub async fn run_poller(
    client: EsClient,
    targets: watch::Receiver<Vec<String>>,
    views: mpsc::Sender<EsCluster>,
    interval: Duration,
    stop: CancellationToken,
) -> Result<(), crate::error::SchedulerError> {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        let list = targets.borrow().clone();
        let view = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            v = observe(&client, &list) => v,
        };
        if views.send(view).await.is_err() {
            return Ok(());
        }
    }
}

/// Trusts only `ca_pem` (the cluster CA); without one, no root at all (plain HTTP only).
fn tls_config(ca_pem: Option<&str>) -> Result<rustls::ClientConfig, EsError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| EsError::Ca(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    if let Some(pem) = ca_pem {
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            roots
                .add(cert.map_err(|e| EsError::Ca(e.to_string()))?)
                .map_err(|e| EsError::Ca(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(EsError::Ca("no PEM certificate in it".into()));
        }
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

/// A running task to ask, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootTarget {
    pub node_id: NodeId,
    pub task_id: TaskId,
    /// `http://host:port`.
    pub base: String,
}

/// What a running task answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootAnswer {
    pub node_id: NodeId,
    pub task_id: TaskId,
    pub cluster_uuid: String,
}

/// Asks every target `GET /` at once and sends each answer to `answers`; a node that does not answer
/// (still starting, or gone) is only logged at debug level: Mesos reports what happened to its task.
pub async fn probe_roots(
    client: EsClient,
    targets: Vec<RootTarget>,
    answers: mpsc::Sender<RootAnswer>,
) {
    let probes = targets.into_iter().map(|t| {
        let client = client.clone();
        let answers = answers.clone();
        async move {
            match client.root(&t.base).await {
                Ok(info) => {
                    let _ = answers
                        .send(RootAnswer {
                            node_id: t.node_id,
                            task_id: t.task_id,
                            cluster_uuid: info.cluster_uuid,
                        })
                        .await;
                }
                Err(e) => tracing::debug!(node_id = %t.node_id, error = %e, "GET / failed"),
            }
        }
    });
    futures::future::join_all(probes).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_answer_gives_the_name_and_the_cluster_uuid() {
        let body = br#"{"name":"es-1","cluster_name":"es","cluster_uuid":"_na_",
            "version":{"number":"8.15.0"},"tagline":"You Know, for Search"}"#;
        let info: RootInfo = serde_json::from_slice(body).expect("root");
        assert_eq!(
            (info.name.as_str(), info.cluster_uuid.as_str()),
            ("es-1", "_na_")
        );
    }

    #[test]
    fn the_cluster_state_gives_the_master_and_the_listed_names() {
        let body = br#"{"cluster_name":"es","cluster_uuid":"u","master_node":"id-2",
            "nodes":{"id-1":{"name":"es-1","transport_address":"10.0.0.1:9300"},
                     "id-2":{"name":"es-2","transport_address":"10.0.0.2:9300"}}}"#;
        let v = parse_state("n", body).expect("a view");
        assert_eq!(v.master.as_deref(), Some("es-2"));
        assert_eq!(
            v.nodes.values().cloned().collect::<BTreeSet<_>>(),
            BTreeSet::from(["es-1".to_owned(), "es-2".to_owned()])
        );
        assert_eq!(v.nodes["id-1"], "es-1", "ids are the keys");
        let none = br#"{"cluster_name":"es","master_node":null,"nodes":{}}"#;
        assert!(matches!(
            parse_state("n", none),
            Ok(StateNodes { master: None, .. })
        ));
        assert!(matches!(
            parse_state("n", b"<html>"),
            Err(EsError::Body { .. })
        ));
    }

    /// A stand-in Elasticsearch HTTP endpoint for the client's own tests: answers each request with
    /// what `answer` gives for `(method, path with query, body)` and records the requests.
    struct FakeEs {
        base: String,
        seen: std::sync::Arc<std::sync::Mutex<Vec<(String, String, String)>>>,
    }

    type Answer = fn(&str, &str, &str) -> (u16, String);

    async fn fake_es(answer: Answer) -> FakeEs {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = std::sync::Arc::clone(&seen);
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let record = std::sync::Arc::clone(&record);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        // One request per connection is all the client needs here (keep-alive or not).
                        let mut chunk = [0u8; 4096];
                        let Ok(n) = sock.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let text = String::from_utf8_lossy(&buf).into_owned();
                        let Some(end) = text.find("\r\n\r\n") else {
                            continue;
                        };
                        let head = &text[..end];
                        let length = head
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if buf.len() < end + 4 + length {
                            continue;
                        }
                        let body = text[end + 4..end + 4 + length].to_owned();
                        let mut first = head.lines().next().unwrap_or("").split(' ');
                        let method = first.next().unwrap_or("").to_owned();
                        let path = first.next().unwrap_or("").to_owned();
                        let (status, reply) = answer(&method, &path, &body);
                        record.lock().expect("lock").push((method, path, body));
                        let out = format!(
                            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{reply}",
                            reply.len()
                        );
                        let _ = sock.write_all(out.as_bytes()).await;
                        buf.clear();
                    }
                });
            }
        });
        FakeEs { base, seen }
    }

    fn plain_client() -> EsClient {
        EsClient::new(EsClientConfig {
            timeout: Duration::from_secs(5),
            ca_pem: None,
            basic_auth: None,
        })
        .expect("client")
    }

    /// Real Elasticsearch 8.x answers (shapes from its REST API), one node relocating a shard away.
    fn cluster_answers(method: &str, path: &str, _body: &str) -> (u16, String) {
        let path = path.split('?').next().unwrap_or(path);
        let body = match (method, path) {
            ("GET", "/_cluster/state/master_node,nodes") => {
                r#"{"cluster_name":"es","cluster_uuid":"u","master_node":"idA",
                  "nodes":{"idA":{"name":"es-1","ephemeral_id":"e1","transport_address":"10.0.0.1:9300","attributes":{}},
                           "idB":{"name":"es-2","ephemeral_id":"e2","transport_address":"10.0.0.2:9300","attributes":{}}}}"#
            }
            ("GET", "/_cluster/health") => {
                r#"{"cluster_name":"es","status":"yellow","timed_out":false,"number_of_nodes":2,
                  "number_of_data_nodes":2,"active_primary_shards":1,"active_shards":1,
                  "relocating_shards":1,"initializing_shards":0,"unassigned_shards":1,
                  "delayed_unassigned_shards":0,"number_of_pending_tasks":0,
                  "number_of_in_flight_fetch":0,"task_max_waiting_in_queue_millis":0,
                  "active_shards_percent_as_number":50.0}"#
            }
            ("GET", "/_cat/nodes") => {
                r#"[{"id":"idA","name":"es-1","version":"8.15.0","node.role":"cdfhilmrstw"},
                   {"id":"idB","name":"es-2","version":"7.17.3","node.role":"di"}]"#
            }
            ("GET", "/_cat/shards") => {
                r#"[{"index":"logs","shard":"0","prirep":"p","state":"RELOCATING","node":"es-2 -> 10.0.0.1 idA es-1"},
                   {"index":"logs","shard":"0","prirep":"r","state":"UNASSIGNED","node":null}]"#
            }
            ("GET", "/_nodes/shutdown") => {
                r#"{"nodes":[{"node_id":"idB","type":"REMOVE","reason":"tether","shutdown_startedmillis":1,
                   "status":"IN_PROGRESS","shard_migration":{"status":"IN_PROGRESS",
                   "shard_migrations_remaining":1,"explanation":"moving"},
                   "persistent_tasks":{"status":"COMPLETE"},"plugins":{"status":"COMPLETE"}}]}"#
            }
            ("GET", "/_cluster/state/metadata") => {
                r#"{"metadata":{"cluster_coordination":{"voting_config_exclusions":
                   [{"node_id":"idB","node_name":"es-2"}]}}}"#
            }
            _ => return (404, r#"{"error":"no handler","status":404}"#.to_owned()),
        };
        (200, body.to_owned())
    }

    #[tokio::test]
    async fn one_observation_gathers_health_nodes_shards_shutdowns_and_exclusions() {
        let es = fake_es(cluster_answers).await;
        let c = observe(&plain_client(), std::slice::from_ref(&es.base)).await;
        assert_eq!(
            c.view,
            EsView::Master {
                master: "es-1".into(),
                nodes: BTreeSet::from(["es-1".to_owned(), "es-2".to_owned()]),
            }
        );
        assert_eq!(c.health, EsHealth::Yellow);
        assert_eq!(
            c.shard_counts,
            Some(ShardCounts {
                active: 1,
                relocating: 1,
                initializing: 0,
                unassigned: 1
            })
        );
        let b = &c.nodes["es-2"];
        assert_eq!(b.id, "idB", "the shutdown API's path takes this id");
        assert_eq!(
            (b.version, b.master_eligible),
            (Some(EsVersion(7, 17, 3)), Some(false))
        );
        assert_eq!(c.nodes["es-1"].master_eligible, Some(true));
        assert_eq!(c.min_version(), Some(EsVersion(7, 17, 3)));
        // The relocating copy still serves on its source node.
        assert_eq!(c.shards_on("es-2"), Some(1));
        assert_eq!(c.shards_on("es-1"), Some(0));
        assert_eq!(
            c.shutdowns.as_ref().and_then(|m| m.get("idB")).copied(),
            Some(NodeShutdown {
                kind: ShutdownKind::Remove,
                status: ShutdownStatus::InProgress
            })
        );
        assert_eq!(
            c.voting_exclusions,
            Some(BTreeSet::from(["es-2".to_owned()]))
        );
    }

    #[tokio::test]
    async fn a_part_that_does_not_answer_is_unknown_not_empty() {
        // Before 7.15 there is no `_nodes/shutdown`; an empty `filter_path` answer is `{}`.
        fn older(method: &str, path: &str, body: &str) -> (u16, String) {
            match path.split('?').next() {
                Some("/_nodes/shutdown") => (400, r#"{"error":"no handler"}"#.to_owned()),
                Some("/_cluster/state/metadata") => (200, "{}".to_owned()),
                _ => cluster_answers(method, path, body),
            }
        }
        let es = fake_es(older).await;
        let c = observe(&plain_client(), std::slice::from_ref(&es.base)).await;
        assert_eq!(c.shutdowns, None);
        assert_eq!(c.voting_exclusions, Some(BTreeSet::new()));
        // No node to ask: nothing is known, and nothing claims to be.
        let none = observe(&plain_client(), &[]).await;
        assert_eq!(none.health, EsHealth::Unknown);
        assert!(none.shards.is_none() && none.nodes.is_empty());
    }

    #[tokio::test]
    async fn calls_use_the_real_api_paths_and_bodies() {
        fn accept(method: &str, path: &str, _body: &str) -> (u16, String) {
            if method == "DELETE" && path.starts_with("/_nodes/gone/") {
                return (
                    404,
                    r#"{"error":{"type":"resource_not_found_exception"},"status":404}"#.to_owned(),
                );
            }
            if method == "PUT" && path.starts_with("/_nodes/bad/") {
                return (
                    400,
                    r#"{"error":{"type":"illegal_argument_exception"},"status":400}"#.to_owned(),
                );
            }
            (200, r#"{"acknowledged":true}"#.to_owned())
        }
        let es = fake_es(accept).await;
        let client = plain_client();
        let calls = [
            EsCall::PutShutdown {
                node_id: "idB".into(),
                kind: ShutdownKind::Remove,
                reason: "tether: scale-down of node 2".into(),
                target_node_name: None,
            },
            EsCall::DeleteShutdown {
                node_id: "gone".into(),
            },
            EsCall::SetAllocationExclude {
                names: vec!["es-2".into(), "es-3".into()],
            },
            EsCall::SetAllocationExclude { names: Vec::new() },
            EsCall::SetAllocationEnable(Some(tether_core::command::AllocationEnable::Primaries)),
            EsCall::Flush,
            EsCall::AddVotingExclusions {
                node_names: vec!["es-2".into()],
            },
            EsCall::ClearVotingExclusions,
        ];
        for call in &calls {
            execute(
                &client,
                std::slice::from_ref(&es.base),
                call,
                Duration::from_secs(10),
            )
            .await
            .unwrap_or_else(|e| panic!("{call}: {e}"));
        }
        let refused = EsCall::PutShutdown {
            node_id: "bad".into(),
            kind: ShutdownKind::Restart,
            reason: "r".into(),
            target_node_name: None,
        };
        let e = execute(
            &client,
            std::slice::from_ref(&es.base),
            &refused,
            Duration::from_secs(10),
        )
        .await
        .expect_err("a 400 is Elasticsearch's answer, not a reason to try another node");
        assert!(e.contains("HTTP 400"), "{e}");
        let seen = es.seen.lock().expect("lock").clone();
        let json = |b: &str| serde_json::from_str::<serde_json::Value>(b).expect("json body");
        assert_eq!(
            (seen[0].0.as_str(), seen[0].1.as_str()),
            ("PUT", "/_nodes/idB/shutdown")
        );
        assert_eq!(
            json(&seen[0].2),
            serde_json::json!({"type": "remove", "reason": "tether: scale-down of node 2"})
        );
        assert_eq!(seen[1].0, "DELETE");
        assert_eq!(seen[2].1, "/_cluster/settings");
        assert_eq!(
            json(&seen[2].2),
            serde_json::json!({"persistent": {"cluster.routing.allocation.exclude._name": "es-2,es-3"}})
        );
        assert_eq!(
            json(&seen[3].2),
            serde_json::json!({"persistent": {"cluster.routing.allocation.exclude._name": null}})
        );
        assert_eq!(
            json(&seen[4].2),
            serde_json::json!({"persistent": {"cluster.routing.allocation.enable": "primaries"}})
        );
        assert_eq!(
            (seen[5].0.as_str(), seen[5].1.as_str()),
            ("POST", "/_flush")
        );
        assert!(
            seen[6]
                .1
                .starts_with("/_cluster/voting_config_exclusions?node_names=es-2&timeout="),
            "{}",
            seen[6].1
        );
        assert_eq!(
            (seen[7].0.as_str(), seen[7].1.as_str()),
            (
                "DELETE",
                "/_cluster/voting_config_exclusions?wait_for_removal=false"
            )
        );
    }
}
