//! One Elasticsearch node (es-standin) as a test sees it through a [`Node`] of the admin API: store a
//! document, read it back, fill an index, wait for the node to answer (and for the cluster to be green
//! as the scheduler sees it). Every call goes as `es` says: with security on,
//! HTTPS trusting the cluster CA and the `elastic` password (`E2eCluster::es`).

use std::time::Duration;

use http::Method;
use tether_proto::v1::Node;

use super::DEADLINE;
use super::cluster::E2eCluster;
use crate::http_client::{self, EsAccess, Reply};

/// One request to `node`.
async fn request(
    es: &EsAccess,
    node: &Node,
    method: Method,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Result<Reply, http_client::HttpError> {
    http_client::es_request(es, method, &node.host, node.http_port, path, body).await
}

/// One request to `node` that must reach it: the status and the JSON body (`null` when not JSON).
pub async fn call(
    es: &EsAccess,
    node: &Node,
    method: Method,
    path: &str,
    body: Option<&serde_json::Value>,
) -> (u16, serde_json::Value) {
    let r = request(es, node, method, path, body)
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    (
        r.status,
        serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null),
    )
}

/// Creates `index` with `shards` primaries of `replicas` replicas each through `node`, and writes
/// documents `0..docs` (`{"n": i}`) into it, each refreshed so that a search sees it.
pub async fn index_with(
    es: &EsAccess,
    node: &Node,
    index: &str,
    shards: u32,
    replicas: u32,
    docs: u32,
) {
    let settings = serde_json::json!({
        "settings": {"number_of_shards": shards, "number_of_replicas": replicas}
    });
    let (s, body) = call(es, node, Method::PUT, &format!("/{index}"), Some(&settings)).await;
    assert_eq!(s, 200, "create {index}: {body}");
    for i in 0..docs {
        let path = format!("/{index}/_doc/{i}?refresh=true");
        let (s, body) = call(
            es,
            node,
            Method::PUT,
            &path,
            Some(&serde_json::json!({"n": i})),
        )
        .await;
        assert!(s == 200 || s == 201, "{path}: {s} {body}");
    }
}

/// Reads documents `0..docs` of `index` back through `node` (as [`index_with`] wrote them): each must be
/// found.
pub async fn assert_docs(es: &EsAccess, node: &Node, index: &str, docs: u32) {
    for i in 0..docs {
        let (s, doc) = call(es, node, Method::GET, &format!("/{index}/_doc/{i}"), None).await;
        assert_eq!(
            (s, &doc["found"]),
            (200, &serde_json::json!(true)),
            "{index} document {i}: {doc}"
        );
    }
}

/// Waits until Elasticsearch (asked through `node`) is green and the scheduler's last poll of `c` has
/// seen it so, with every shard Elasticsearch has active.
pub async fn wait_green_seen(c: &E2eCluster, es: &EsAccess, node: &Node) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (_, health) = call(es, node, Method::GET, "/_cluster/health", None).await;
        let status = c.ctl_json(&["status"]).await;
        if health["status"] == "green"
            && status["health"] == "green"
            && status["shards"]["active"] == health["active_shards"]
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never green as the scheduler sees it: {status} vs {health}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Writes document `id` into index `docs` of `node`.
pub async fn put_doc(es: &EsAccess, node: &Node, id: &str, doc: serde_json::Value) {
    let path = format!("/docs/_doc/{id}");
    let r = request(es, node, Method::PUT, &path, Some(&doc))
        .await
        .expect("node reachable");
    assert!(
        r.status == 200 || r.status == 201,
        "{}: {} {}",
        es.url(&node.host, node.http_port, &path),
        r.status,
        r.text()
    );
}

/// Waits until `node` answers `GET /` as a member of a formed cluster (a `cluster_uuid` other than
/// `_na_`), returning that answer: RUNNING only means the process started, the listener follows, and a
/// document written before the node knows a master waits for one (longer with TLS handshakes to make).
pub async fn wait_es(es: &EsAccess, node: &Node) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Ok(r) = request(es, node, Method::GET, "/", None).await
            && r.status == 200
        {
            let root = r.json();
            if root["cluster_uuid"].as_str().is_some_and(|u| u != "_na_") {
                return root;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} never answered",
            es.url(&node.host, node.http_port, "/")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `node` has applied a cluster state of `count` nodes (`_cluster/health?wait_for_nodes`).
pub async fn wait_es_nodes(es: &EsAccess, node: &Node, count: usize) {
    let path = format!("/_cluster/health?wait_for_nodes={count}&timeout=1s");
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let last = request(es, node, Method::GET, &path, None)
            .await
            .map(|r| (r.status, r.text()));
        if matches!(last, Ok((200, _))) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} never saw {count} nodes: {last:?}",
            es.url(&node.host, node.http_port, &path)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads document `id` of index `docs` from `node`: `Some(source)` when found. A 503 is retried until
/// the usual deadline, as a client does: a relaunched node refuses reads until a master published the
/// cluster state to it (`state not recovered`), and a copy may still be recovering.
pub async fn get_doc(es: &EsAccess, node: &Node, id: &str) -> Option<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let r = request(es, node, Method::GET, &format!("/docs/_doc/{id}"), None)
            .await
            .ok()?;
        if r.status != 503 || tokio::time::Instant::now() >= deadline {
            return (r.status == 200).then(|| r.json()["_source"].clone());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
