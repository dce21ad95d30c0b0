//! The scheduler's Elasticsearch client, for the second opinion storage fencing needs: which nodes does
//! the elected master list? A Mesos partition is not an Elasticsearch partition (an agent process can
//! die while its containers keep serving), so a node is replaced only if Elasticsearch no longer lists
//! it either.
//!
//! [`EsClient::nodes_seen_by_master`] asks one node `GET /_cluster/state/master_node,nodes` (the node
//! forwards it to the elected master, waiting at most `master_timeout`); [`poll`] asks the nodes in turn
//! until one answers for a master; [`run_poller`] does that every interval and hands each [`EsView`] to
//! the loop. Plain HTTP for now: [`EsClientConfig`] is where the cluster CA (TLS) and basic-auth
//! credentials of a secured cluster go.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use tether_core::domain::EsView;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Largest answer read: the cluster state's `nodes` of a big cluster, with room to spare.
const MAX_BODY: usize = 8 << 20;

/// How the client talks to the cluster.
#[derive(Debug, Clone)]
pub struct EsClientConfig {
    /// Bound on one request, from connecting to the end of the answer; also the `master_timeout` asked.
    pub timeout: Duration,
}

/// Why a node gave no view.
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
    #[error("{node}: unreadable cluster state: {message}")]
    Body { node: String, message: String },
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

/// A client; cheap to clone.
#[derive(Debug, Clone)]
pub struct EsClient {
    http: Client<HttpConnector, Full<Bytes>>,
    config: EsClientConfig,
}

impl EsClient {
    pub fn new(config: EsClientConfig) -> EsClient {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.timeout));
        EsClient {
            http: Client::builder(TokioExecutor::new()).build(connector),
            config,
        }
    }

    /// What the elected master lists, asked of the node at `base` (`http://host:port`).
    pub async fn nodes_seen_by_master(&self, base: &str) -> Result<MasterView, EsError> {
        let node = base.to_owned();
        let timeout = self.config.timeout;
        let url = format!(
            "{base}/_cluster/state/master_node,nodes?master_timeout={}ms",
            timeout.as_millis()
        );
        let exchange = async {
            let req = Request::builder()
                .method(Method::GET)
                .uri(&url)
                .header(http::header::ACCEPT, "application/json")
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
                    message: e.to_string(),
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
        let (status, body) = tokio::time::timeout(timeout + Duration::from_millis(500), exchange)
            .await
            .map_err(|_| EsError::Timeout {
                node: node.clone(),
                timeout,
            })??;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            // `master_not_discovered_exception`: the node knows no elected master.
            return Err(EsError::NoMaster { node });
        }
        if !status.is_success() {
            return Err(EsError::Status {
                node,
                status: status.as_u16(),
                body: String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned(),
            });
        }
        parse_state(&node, &body)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
