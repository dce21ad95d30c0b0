//! One Elasticsearch node (es-standin) as a test sees it through a [`Node`] of the admin API: store a
//! document, read it back, wait for the node to answer.

use std::time::Duration;

use tether_proto::v1::Node;

use super::DEADLINE;
use crate::http_client;

/// `http://<host>:<http port><path>` of `node`.
fn url(node: &Node, path: &str) -> String {
    format!("http://{}:{}{path}", node.host, node.http_port)
}

/// Writes document `id` into index `docs` of `node`.
pub async fn put_doc(node: &Node, id: &str, doc: serde_json::Value) {
    let url = url(node, &format!("/docs/_doc/{id}"));
    let (status, body) = http_client::put_json(&url, &doc)
        .await
        .expect("node reachable");
    assert!(status == 200 || status == 201, "{url}: {status} {body}");
}

/// Waits until `node` answers `GET /`, returning that answer (RUNNING only means the process started;
/// the listener follows).
pub async fn wait_es(node: &Node) -> serde_json::Value {
    let url = url(node, "/");
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Ok((200, body)) = http_client::get_json(&url).await {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{url} never answered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `node` has applied a cluster state of `count` nodes (`_cluster/health?wait_for_nodes`).
pub async fn wait_es_nodes(node: &Node, count: usize) {
    let url = url(
        node,
        &format!("/_cluster/health?wait_for_nodes={count}&timeout=1s"),
    );
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let last = http_client::get_json(&url).await;
        if matches!(last, Ok((200, _))) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{url} never saw {count} nodes: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads document `id` of index `docs` from `node`: `Some(source)` when found.
pub async fn get_doc(node: &Node, id: &str) -> Option<serde_json::Value> {
    let (status, body) = http_client::get_json(&url(node, &format!("/docs/_doc/{id}")))
        .await
        .ok()?;
    (status == 200).then(|| body["_source"].clone())
}
