//! One Elasticsearch node (es-standin) as a test sees it through a [`Node`] of the admin API: store a
//! document, read it back, wait for the node to answer. Every call goes as `es` says: with security on,
//! HTTPS trusting the cluster CA and the `elastic` password (`E2eCluster::es`).

use std::time::Duration;

use http::Method;
use tether_proto::v1::Node;

use super::DEADLINE;
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
