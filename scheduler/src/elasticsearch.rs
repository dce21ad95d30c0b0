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
//! serving), so a node is replaced only if Elasticsearch no longer lists it either.
//! [`EsClient::nodes_seen_by_master`] asks one node `GET /_cluster/state/master_node,nodes` (the node
//! forwards it to the elected master, waiting at most `master_timeout`); [`poll`] asks the nodes in turn
//! until one answers for a master; [`run_poller`] does that every interval and hands each [`EsView`] to
//! the loop.
//!
//! And the cluster's health for the metrics: [`cluster_health`] asks the running nodes in turn
//! `GET /_cluster/health` until one answers ([`EsHealth`], the `tether_es_health` gauge).

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
use tether_core::domain::EsView;
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

/// The elected master's node name and every node name it lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterView {
    pub master: String,
    pub nodes: BTreeSet<String>,
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

/// What `GET /` says about a node.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RootInfo {
    /// The node's name.
    pub name: String,
    /// The cluster it belongs to; `_na_` before it joined a bootstrapped cluster.
    pub cluster_uuid: String,
}

/// The cluster's health as `GET /_cluster/health` gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EsHealth {
    /// Every shard assigned.
    Green,
    /// Every primary assigned, some replica not.
    Yellow,
    /// Some primary unassigned: some data cannot be read or written.
    Red,
    /// The node asked knows no elected master (503 `master_not_discovered_exception`).
    NoMaster,
    /// No running node answered (or none runs).
    Unknown,
}

impl EsHealth {
    /// The value of `tether_es_health`: 0 green, 1 yellow, 2 red, 3 no elected master, -1 unknown; so
    /// `>= 2` means the cluster cannot serve all of its data.
    #[must_use]
    pub fn gauge(self) -> i64 {
        match self {
            EsHealth::Green => 0,
            EsHealth::Yellow => 1,
            EsHealth::Red => 2,
            EsHealth::NoMaster => 3,
            EsHealth::Unknown => -1,
        }
    }
}

#[derive(Debug, Deserialize)]
struct HealthAnswer {
    status: String,
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

    /// What the elected master lists, asked of the node at `base` (`http://host:port`).
    pub async fn nodes_seen_by_master(&self, base: &str) -> Result<MasterView, EsError> {
        let path = format!(
            "/_cluster/state/master_node,nodes?master_timeout={}ms",
            self.config.timeout.as_millis()
        );
        match self.get(base, &path).await {
            Ok(body) => parse_state(base, &body),
            // `master_not_discovered_exception`: the node knows no elected master.
            Err(EsError::Status { node, status, .. })
                if status == StatusCode::SERVICE_UNAVAILABLE.as_u16() =>
            {
                Err(EsError::NoMaster { node })
            }
            Err(e) => Err(e),
        }
    }

    /// `GET /_cluster/health` of the node at `base`, waiting at most the client's timeout for a master.
    pub async fn health(&self, base: &str) -> Result<EsHealth, EsError> {
        let path = format!(
            "/_cluster/health?master_timeout={}ms",
            self.config.timeout.as_millis()
        );
        let body = match self.get(base, &path).await {
            Ok(body) => body,
            Err(EsError::Status { status, .. })
                if status == StatusCode::SERVICE_UNAVAILABLE.as_u16() =>
            {
                return Ok(EsHealth::NoMaster);
            }
            Err(e) => return Err(e),
        };
        let answer: HealthAnswer = serde_json::from_slice(&body).map_err(|e| EsError::Body {
            node: base.to_owned(),
            message: e.to_string(),
        })?;
        match answer.status.as_str() {
            "green" => Ok(EsHealth::Green),
            "yellow" => Ok(EsHealth::Yellow),
            "red" => Ok(EsHealth::Red),
            other => Err(EsError::Body {
                node: base.to_owned(),
                message: format!("unknown health status {other:?}"),
            }),
        }
    }

    /// A GET bounded by the configured timeout; any status but 2xx is an error.
    async fn get(&self, base: &str, path: &str) -> Result<Bytes, EsError> {
        let node = base.to_owned();
        let timeout = self.config.timeout;
        let exchange = async {
            let mut req = Request::builder()
                .method(Method::GET)
                .uri(format!("{base}{path}"))
                .header(http::header::ACCEPT, "application/json");
            if let Some((user, password)) = &self.config.basic_auth {
                use base64::Engine as _;
                let token =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                req = req.header(http::header::AUTHORIZATION, format!("Basic {token}"));
            }
            let req = req
                .body(Full::new(Bytes::new()))
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

/// The master's name and the names it lists, from a cluster state answer.
fn parse_state(node: &str, body: &[u8]) -> Result<MasterView, EsError> {
    let state: ClusterState = serde_json::from_slice(body).map_err(|e| EsError::Body {
        node: node.to_owned(),
        message: e.to_string(),
    })?;
    let master = state
        .master_node
        .as_ref()
        .and_then(|id| state.nodes.get(id))
        .map(|n| n.name.clone())
        .ok_or_else(|| EsError::NoMaster {
            node: node.to_owned(),
        })?;
    Ok(MasterView {
        master,
        nodes: state.nodes.into_values().map(|n| n.name).collect(),
    })
}

/// Asks the nodes at `targets` in turn until one answers for an elected master; every failure goes into
/// the `NoMaster` view's words.
pub async fn poll(client: &EsClient, targets: &[String]) -> EsView {
    let mut failures = Vec::new();
    for t in targets {
        match client.nodes_seen_by_master(t).await {
            Ok(v) => {
                return EsView::Master {
                    master: v.master,
                    nodes: v.nodes,
                };
            }
            Err(e) => failures.push(e.to_string()),
        }
    }
    EsView::NoMaster {
        why: if failures.is_empty() {
            "no node to ask".to_owned()
        } else {
            failures.join("; ")
        },
    }
}

/// Asks the nodes at `targets` in turn until one answers `GET /_cluster/health`.
pub async fn cluster_health(client: &EsClient, targets: &[String]) -> EsHealth {
    for t in targets {
        match client.health(t).await {
            Ok(h) => return h,
            Err(e) => tracing::debug!(error = %e, "no cluster health from this node"),
        }
    }
    EsHealth::Unknown
}

/// Every `interval`, asks the current `targets` (HTTP base URLs of the nodes the loop believes serve)
/// and sends the view to the loop, until `stop` (or the loop is gone).
pub async fn run_poller(
    client: EsClient,
    targets: watch::Receiver<Vec<String>>,
    views: mpsc::Sender<EsView>,
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
            v = poll(&client, &list) => v,
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
        assert_eq!(v.master, "es-2");
        assert_eq!(
            v.nodes,
            BTreeSet::from(["es-1".to_owned(), "es-2".to_owned()])
        );
        let none = br#"{"cluster_name":"es","master_node":null,"nodes":{}}"#;
        assert!(matches!(
            parse_state("n", none),
            Err(EsError::NoMaster { .. })
        ));
        assert!(matches!(
            parse_state("n", b"<html>"),
            Err(EsError::Body { .. })
        ));
    }
}
