//! The HTTP API a stand-in serves, with Elasticsearch's answers and error shapes.
//!
//! - **Security**: when on (8.x default; 7.17 with `xpack.security.enabled: true`) every request needs
//!   basic auth as `elastic` with the keystore's `bootstrap.password`, else 401 `security_exception` and
//!   `WWW-Authenticate: Basic realm="security"`. A node without a bootstrap password authenticates nobody.
//!   With `xpack.security.http.ssl.enabled` it speaks HTTPS only.
//! - `GET /`: name, cluster name, `cluster_uuid` (`_na_` until the node joined a formed cluster), version;
//!   plus the stand-in's `tether_node_id` and `data_created_by_node_id`.
//! - `GET /_cluster/health[/<index>]`: waits up to `master_timeout` (30 s) for a master, then 503
//!   `master_not_discovered_exception`; with `local=true` it answers from the node's own state (`red`
//!   without a master). Green, yellow and red come from the shard table (a new index's initializing
//!   primary is yellow, an existing one's red). `wait_for_status` / `wait_for_nodes` /
//!   `wait_for_no_relocating_shards` / `wait_for_no_initializing_shards` wait up to `timeout` (30 s),
//!   then 408 with `timed_out: true`. Master-node reads (health, state, settings, `_cat`, shutdown status)
//!   first catch up with the master's state.
//! - `GET /_cluster/state[/<metrics>]`: `version`, `master_node`, `nodes`, `metadata`, `routing_table`.
//! - Documents: `PUT|POST /<index>/_doc/<id>` (the index is created through the master first, retried
//!   with the next master when a publication fails; no master within `timeout` → 503; no active primary
//!   within `timeout` → 503 `unavailable_shards_exception`), `GET /<index>/_doc/<id>` (no active copy →
//!   503 `no_shard_available_action_exception`).
//! - The operations API is [`super::api`]; a path with no handler is 405 here, except the shutdown API
//!   before 7.15 and 8.x's `_flush/synced`, which answer 400 "no handler found" as Elasticsearch does.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::api;
use super::cluster::{ClusterError, ClusterView, Coordinator};
use super::documents::{self, DocError};
use super::image::EsVersion;
use super::settings::parse_time;

/// Largest document body accepted; Elasticsearch's default `http.max_content_length` is 100 MB, a
/// stand-in needs far less.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// What the HTTP layer serves.
#[derive(Debug)]
pub struct HttpNode {
    pub cluster_name: String,
    pub version: EsVersion,
    /// `Some` when security is on: the `elastic` user's password (`None`: nobody authenticates).
    pub security: Option<Option<String>>,
    pub coordinator: Arc<Coordinator>,
    /// Re-checked before every document read and write.
    pub lock: super::data_path::LockCheck,
    pub tether_node_id: Option<String>,
    pub data_owner: Option<String>,
}

/// Serves HTTP (or HTTPS with `tls`) on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    node: Arc<HttpNode>,
    shutdown: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((stream, peer)) = accepted else {
            continue;
        };
        let node = node.clone();
        let tls = tls.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(node.clone(), req));
            let builder = hyper::server::conn::http1::Builder::new();
            let work = async {
                match tls {
                    None => {
                        let _ = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok(s) => {
                            let _ = builder.serve_connection(TokioIo::new(s), service).await;
                        }
                        Err(e) => tracing::warn!(
                            %peer, error = %e,
                            "http client did not complete a TLS handshake (plaintext http traffic on an https channel?), closing connection"
                        ),
                    },
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = work => {}
            }
        });
    }
}

pub type Reply = Response<Full<Bytes>>;

pub fn reply(status: u16, body: &Value) -> Reply {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

/// Elasticsearch's error body.
pub fn error(status: u16, kind: &str, reason: Option<&str>) -> Reply {
    let cause = json!({ "type": kind, "reason": reason });
    reply(
        status,
        &json!({ "error": { "root_cause": [cause.clone()], "type": kind, "reason": reason }, "status": status }),
    )
}

fn doc_error(e: DocError) -> Reply {
    error(e.status, e.kind, Some(&e.reason))
}

async fn handle(node: Arc<HttpNode>, req: Request<Incoming>) -> Result<Reply, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    if let Some(denied) = authenticate(&node, &req, &path) {
        return Ok(denied);
    }
    let params = Params::parse(&query);
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let m = method.as_str();
    let shutdown_api = api::has_shutdown_api(node.version);
    let resp = match (&method, segments.as_slice()) {
        (&Method::GET | &Method::HEAD, []) => root(&node),
        (&Method::GET, ["_cluster", "health"]) => health(&node, &params, None).await,
        (&Method::GET, ["_cluster", "health", index]) => health(&node, &params, Some(index)).await,
        (&Method::GET, ["_cluster", "state"]) => cluster_state(&node, &params, "_all").await,
        (&Method::GET, ["_cluster", "state", metrics, ..]) => {
            cluster_state(&node, &params, metrics).await
        }
        (&Method::GET, ["_cluster", "settings"]) => api::get_cluster_settings(&node, &params).await,
        (&Method::PUT, ["_cluster", "settings"]) => match body(req).await {
            Ok(b) => api::put_cluster_settings(&node, &params, &b).await,
            Err(r) => r,
        },
        (&Method::POST, ["_cluster", "voting_config_exclusions"]) => {
            api::add_voting_exclusions(&node, &params).await
        }
        (&Method::DELETE, ["_cluster", "voting_config_exclusions"]) => {
            api::clear_voting_exclusions(&node, &params).await
        }
        (&Method::GET, ["_cat", "nodes"]) => api::cat_nodes(&node, &params).await,
        (&Method::GET, ["_cat", "shards"]) => api::cat_shards(&node, &params, None).await,
        (&Method::GET, ["_cat", "shards", index]) => {
            api::cat_shards(&node, &params, Some(index)).await
        }
        (&Method::GET, ["_cat", "health"]) => api::cat_health(&node, &params).await,
        (&Method::GET, ["_nodes"]) => api::nodes_info(&node),
        (&Method::GET, ["_nodes", "shutdown"]) if shutdown_api => {
            api::get_shutdown(&node, None, &params).await
        }
        (&Method::GET, ["_nodes", ids, "shutdown"]) if shutdown_api => {
            api::get_shutdown(&node, Some(ids), &params).await
        }
        (&Method::PUT, ["_nodes", id, "shutdown"]) if shutdown_api => match body(req).await {
            Ok(b) => api::put_shutdown(&node, id, &params, &b).await,
            Err(r) => r,
        },
        (&Method::DELETE, ["_nodes", id, "shutdown"]) if shutdown_api => {
            api::delete_shutdown(&node, id, &params).await
        }
        (_, ["_nodes", .., "shutdown"]) => api::no_handler(m, &path),
        (&Method::POST | &Method::GET, ["_flush"]) => api::flush(&node, None),
        (&Method::POST | &Method::GET, ["_flush", "synced"]) if !node.version.is_8() => {
            api::flush(&node, None)
        }
        (_, ["_flush", "synced"]) => api::no_handler(m, &path),
        (&Method::POST | &Method::GET, [index, "_flush"]) => api::flush(&node, Some(index)),
        (&Method::PUT, [index, "_settings"]) => match body(req).await {
            Ok(b) => api::put_index_settings(&node, index, &params, &b).await,
            Err(r) => r,
        },
        (&Method::GET, [index, "_doc", id]) => get_doc(&node, index, id).await,
        (&Method::PUT | &Method::POST, [index, "_doc", id]) => match body(req).await {
            Ok(b) => put_doc(&node, index, id, &b, &params).await,
            Err(r) => r,
        },
        (&Method::PUT, [index]) if !index.starts_with('_') => match body(req).await {
            Ok(b) => api::create_index(&node, index, &params, &b).await,
            Err(r) => r,
        },
        _ => error(
            405,
            "illegal_argument_exception",
            Some(&format!("unsupported request [{method} {path}]")),
        ),
    };
    Ok(resp)
}

async fn body(req: Request<Incoming>) -> Result<Bytes, Reply> {
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) => Err(error(413, "content_too_long", Some(&e.to_string()))),
    }
}

/// `None` when the request may proceed.
fn authenticate(node: &HttpNode, req: &Request<Incoming>, path: &str) -> Option<Reply> {
    let Some(password) = &node.security else {
        return None;
    };
    let challenge = |reason: String| {
        let mut r = reply(
            401,
            &json!({
                "error": {
                    "root_cause": [{ "type": "security_exception", "reason": reason,
                        "header": { "WWW-Authenticate": ["Basic realm=\"security\" charset=\"UTF-8\""] } }],
                    "type": "security_exception",
                    "reason": reason,
                    "header": { "WWW-Authenticate": ["Basic realm=\"security\" charset=\"UTF-8\""] },
                },
                "status": 401,
            }),
        );
        r.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Basic realm=\"security\" charset=\"UTF-8\""),
        );
        r
    };
    let Some((user, given)) = basic_credentials(req) else {
        return Some(challenge(format!(
            "missing authentication credentials for REST request [{path}]"
        )));
    };
    let ok = user == "elastic"
        && password
            .as_deref()
            .is_some_and(|p| !p.is_empty() && p == given);
    if ok {
        None
    } else {
        Some(challenge(format!(
            "unable to authenticate user [{user}] for REST request [{path}]"
        )))
    }
}

fn basic_credentials(req: &Request<Incoming>) -> Option<(String, String)> {
    use base64::Engine as _;
    let value = req
        .headers()
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_owned(), p.to_owned()))
}

fn root(node: &HttpNode) -> Reply {
    let view = node.coordinator.view().borrow().clone();
    let (lucene, wire, index) = if node.version.is_8() {
        ("9.11.1", "7.17.0", "7.0.0")
    } else {
        ("8.11.3", "6.8.0", "6.0.0-beta1")
    };
    reply(
        200,
        &json!({
            "name": view.local.name,
            "cluster_name": node.cluster_name,
            "cluster_uuid": view.cluster_uuid(),
            "version": {
                "number": node.version.to_string(),
                "build_flavor": "default",
                "build_type": "docker",
                "build_hash": "es-standin",
                "build_snapshot": false,
                "lucene_version": lucene,
                "minimum_wire_compatibility_version": wire,
                "minimum_index_compatibility_version": index,
            },
            "tagline": "You Know, for Search",
            "tether_node_id": node.tether_node_id,
            "data_created_by_node_id": node.data_owner,
        }),
    )
}

/// `GET /_cluster/state[/<metrics>]` with the `master_node` and `nodes` metrics (from this node's state).
async fn cluster_state(node: &HttpNode, params: &Params, metrics: &str) -> Reply {
    let view = api::master_view(node, params).await;
    let all = metrics == "_all";
    let wants = |m: &str| all || metrics.split(',').any(|x| x == m);
    let mut body = json!({
        "cluster_name": node.cluster_name,
        "cluster_uuid": view.cluster_uuid(),
    });
    if wants("version") {
        body["version"] = json!(view.state.version);
    }
    if wants("master_node") {
        body["master_node"] = json!(view.master.as_ref().map(|m| m.id.clone()));
    }
    if wants("metadata") {
        body["metadata"] = api::metadata_json(&view.state);
    }
    if wants("routing_table") {
        body["routing_table"] = api::routing_json(&view.state);
    }
    if wants("nodes") {
        let nodes: serde_json::Map<String, Value> = view
            .state
            .nodes
            .values()
            .map(|n| {
                (
                    n.id.clone(),
                    json!({
                        "name": n.name,
                        "transport_address": n.address.to_string(),
                        "roles": n.roles,
                        "version": n.version.to_string(),
                        "attributes": n.attributes,
                    }),
                )
            })
            .collect();
        body["nodes"] = Value::Object(nodes);
    }
    reply(200, &body)
}

/// Query parameters.
#[derive(Debug, Default)]
pub struct Params(Vec<(String, String)>);

impl Params {
    pub fn parse(query: &str) -> Params {
        Params(
            query
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| match p.split_once('=') {
                    Some((k, v)) => (k.to_owned(), v.to_owned()),
                    None => (p.to_owned(), String::new()),
                })
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("" | "true"))
    }

    pub fn time(&self, key: &str, default: Duration) -> Duration {
        self.get(key).and_then(parse_time).unwrap_or(default)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Status {
    Green,
    Yellow,
    Red,
}

impl Status {
    fn name(self) -> &'static str {
        match self {
            Status::Green => "green",
            Status::Yellow => "yellow",
            Status::Red => "red",
        }
    }

    fn parse(s: &str) -> Option<Status> {
        match s {
            "green" => Some(Status::Green),
            "yellow" => Some(Status::Yellow),
            "red" => Some(Status::Red),
            _ => None,
        }
    }
}

fn health_of(view: &ClusterView, index: Option<&str>) -> (Status, Value) {
    let state = &view.state;
    let h = api::health_of_state(state, index);
    let status = if view.master.is_none() {
        Status::Red
    } else {
        [Status::Green, Status::Yellow, Status::Red][usize::from(h.status.min(2))]
    };
    (
        status,
        json!({
            "cluster_name": state.cluster_name,
            "status": status.name(),
            "timed_out": false,
            "number_of_nodes": state.nodes.len(),
            "number_of_data_nodes": state.nodes.values().filter(|n| n.is_data()).count(),
            "active_primary_shards": h.active_primary,
            "active_shards": h.active,
            "relocating_shards": h.relocating,
            "initializing_shards": h.initializing,
            "unassigned_shards": h.unassigned,
            "delayed_unassigned_shards": h.delayed_unassigned,
            "number_of_pending_tasks": 0,
            "number_of_in_flight_fetch": 0,
            "task_max_waiting_in_queue_millis": 0,
            "active_shards_percent_as_number": api::percent(&h),
        }),
    )
}

/// `wait_for_nodes`: `N`, `>=N`, `<=N`, `>N`, `<N`, `ge(N)`, `le(N)`, `gt(N)`, `lt(N)`.
fn nodes_match(expr: &str, n: usize) -> bool {
    let (op, num) = if let Some(r) = expr.strip_prefix(">=") {
        (">=", r)
    } else if let Some(r) = expr.strip_prefix("<=") {
        ("<=", r)
    } else if let Some(r) = expr.strip_prefix('>') {
        (">", r)
    } else if let Some(r) = expr.strip_prefix('<') {
        ("<", r)
    } else if let Some(r) = expr.strip_prefix("ge(").and_then(|r| r.strip_suffix(')')) {
        (">=", r)
    } else if let Some(r) = expr.strip_prefix("le(").and_then(|r| r.strip_suffix(')')) {
        ("<=", r)
    } else if let Some(r) = expr.strip_prefix("gt(").and_then(|r| r.strip_suffix(')')) {
        (">", r)
    } else if let Some(r) = expr.strip_prefix("lt(").and_then(|r| r.strip_suffix(')')) {
        ("<", r)
    } else {
        ("==", expr)
    };
    let Ok(k) = num.trim().parse::<usize>() else {
        return false;
    };
    match op {
        ">=" => n >= k,
        "<=" => n <= k,
        ">" => n > k,
        "<" => n < k,
        _ => n == k,
    }
}

async fn health(node: &HttpNode, params: &Params, index: Option<&str>) -> Reply {
    let coordinator = &node.coordinator;
    if !params.flag("local")
        && coordinator
            .wait_for_master(params.time("master_timeout", Duration::from_secs(30)))
            .await
            .is_none()
    {
        return error(503, "master_not_discovered_exception", None);
    }
    if !params.flag("local") {
        coordinator.sync_with_master(Duration::from_secs(5)).await;
    }
    if let Some(i) = index
        && !coordinator.view().borrow().state.indices.contains(i)
    {
        return error(
            404,
            "index_not_found_exception",
            Some(&format!("no such index [{i}]")),
        );
    }
    let wanted = params.get("wait_for_status").and_then(Status::parse);
    let nodes_expr = params.get("wait_for_nodes").map(str::to_owned);
    let no_relocating = params.flag("wait_for_no_relocating_shards");
    let no_initializing = params.flag("wait_for_no_initializing_shards");
    let waits = wanted.is_some() || nodes_expr.is_some() || no_relocating || no_initializing;
    let satisfied = |v: &ClusterView| {
        let (status, body) = health_of(v, index);
        wanted.is_none_or(|w| status <= w)
            && nodes_expr
                .as_deref()
                .is_none_or(|e| nodes_match(e, v.state.nodes.len()))
            && (!no_relocating || body["relocating_shards"] == 0)
            && (!no_initializing || body["initializing_shards"] == 0)
    };
    let mut rx = coordinator.view();
    let timeout = params.time("timeout", Duration::from_secs(30));
    let timed_out = if waits {
        tokio::time::timeout(timeout, rx.wait_for(|v| satisfied(v)))
            .await
            .is_err()
    } else {
        false
    };
    let view = rx.borrow().clone();
    let (_, mut body) = health_of(&view, index);
    if timed_out {
        body["timed_out"] = json!(true);
        return reply(408, &body);
    }
    reply(200, &body)
}

/// The node lock is no longer valid: its volume was taken away (see `data_path`).
fn lost_lock(node: &HttpNode) -> Option<Reply> {
    let reason = node.lock.ensure_valid().err()?;
    Some(error(500, "illegal_state_exception", Some(&reason)))
}

/// A node that has not applied a master's state since it started refuses a document read at once and
/// a write after its timeout (the `state not recovered` block, 503).
fn not_recovered(node: &HttpNode) -> Option<Reply> {
    (!node.coordinator.view().borrow().recovered).then(|| {
        error(
            503,
            "cluster_block_exception",
            Some(crate::es_standin::cluster::NOT_RECOVERED),
        )
    })
}

async fn get_doc(node: &HttpNode, index: &str, id: &str) -> Reply {
    if let Some(refused) = lost_lock(node).or_else(|| not_recovered(node)) {
        return refused;
    }
    if let Err(e) = documents::check_index(index) {
        return doc_error(e);
    }
    match node.coordinator.read_doc(index, id).await {
        Ok((status, body)) => reply(status, &body),
        Err(e) => doc_error(e),
    }
}

async fn put_doc(node: &HttpNode, index: &str, id: &str, body: &[u8], params: &Params) -> Reply {
    if let Some(refused) = lost_lock(node) {
        return refused;
    }
    if let Err(e) = documents::check_index(index) {
        return doc_error(e);
    }
    let source = match documents::parse_source(body) {
        Ok(s) => s,
        Err(e) => return doc_error(e),
    };
    if id.is_empty() || id.len() > 512 {
        return error(
            400,
            "action_request_validation_exception",
            Some("id must be 1 to 512 bytes long"),
        );
    }
    let timeout = params.time("timeout", Duration::from_secs(60));
    // The `state not recovered` block is retryable: a write waits for it to go, up to its timeout.
    let mut rx = node.coordinator.view();
    if tokio::time::timeout(timeout, rx.wait_for(|v| v.recovered))
        .await
        .is_err()
    {
        return not_recovered(node).unwrap_or_else(|| error(503, "cluster_block_exception", None));
    }
    drop(rx);
    let exists = node
        .coordinator
        .view()
        .borrow()
        .state
        .indices
        .contains(index);
    if exists {
        // A write needs a master (the default `cluster.no_master_block: write`).
        if node.coordinator.wait_for_master(timeout).await.is_none() {
            return error(
                503,
                "cluster_block_exception",
                Some("blocked by: [SERVICE_UNAVAILABLE/2/no master];"),
            );
        }
    } else {
        // Auto-creation: one primary, one replica (the 7.x and 8.x defaults).
        match node.coordinator.create_index(index, 1, 1, timeout).await {
            Ok(()) => {}
            Err(ClusterError::NoMaster) => {
                return error(503, "master_not_discovered_exception", None);
            }
            Err(ClusterError::Failed(reason)) => {
                return error(500, "exception", Some(&reason));
            }
        }
    }
    match node.coordinator.write_doc(index, id, source, timeout).await {
        Ok((status, body)) => reply(status, &body),
        Err(e) => doc_error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_for_nodes_expressions() {
        assert!(nodes_match("3", 3));
        assert!(nodes_match(">=2", 3));
        assert!(!nodes_match("<3", 3));
        assert!(nodes_match("ge(3)", 3));
        assert!(!nodes_match("gt(3)", 3));
        assert!(!nodes_match("x", 3));
    }
}
