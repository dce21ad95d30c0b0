//! Operating Elasticsearch end to end (issue 14): a scale-down moves each leaving node's data away
//! before its task is stopped, masters leave one at a time, the last copy of a shard is refused, and
//! nothing Tether set in Elasticsearch remains afterwards. Build the binaries first
//! (`cargo build --workspace --bins`).
//!
//! It needs es-standin's shard allocation (`_cat/shards`, the node shutdown API, voting exclusions):
//! against a stand-in without them it says so loudly and checks nothing.

use std::time::Duration;

use http::Method;
use serde_json::{Value, json};
use tether_integration::http_client::EsAccess;
use tether_integration::testing::cluster::E2eCluster;
use tether_integration::testing::ctl::tetherctl;
use tether_integration::testing::es::{assert_docs, call, index_with, wait_green_seen};
use tether_proto::v1::Node;

/// A cluster of `nodes` on `agents` agents, formed: with its Elasticsearch access, its nodes and node 1.
async fn formed(agents: usize, nodes: u64) -> (E2eCluster, EsAccess, Vec<Node>, Node) {
    let c = E2eCluster::start(agents, nodes, |_| {}).await;
    let access = c.es().await;
    let all = c.wait_formed(nodes as usize).await;
    let first = all.iter().find(|n| n.id == 1).expect("node 1").clone();
    (c, access, all, first)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_down_moves_data_first_masters_one_at_a_time_and_leaves_nothing_set() {
    let (c, access, _, first) = formed(4, 4).await;
    // Data with a replica everywhere, and an index without replicas.
    index_with(&access, &first, "replicated", 4, 1, 40).await;
    index_with(&access, &first, "single", 1, 0, 0).await;

    // Green first: the health views say so.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let status = c.ctl_json(&["status"]).await;
        if status["health"] == "green" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never green: {status}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let listed = c.ctl_json(&["nodes"]).await;
    for n in listed.as_array().expect("nodes") {
        assert_eq!(n["es_joined"], true, "{n}");
        assert!(n["shards"].is_u64(), "{n}");
    }

    // The only copy of `single`: replacing its holder is refused, naming the index (once the
    // scheduler's poll has seen the index).
    let (_, health) = call(&access, &first, Method::GET, "/_cluster/health", None).await;
    let active = health["active_shards"].clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while c.ctl_json(&["status"]).await["shards"]["active"] != active {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the scheduler never saw {active} shards"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (_, shards) = call(
        &access,
        &first,
        Method::GET,
        "/_cat/shards/single?format=json&h=node",
        None,
    )
    .await;
    let holder = shards[0]["node"]
        .as_str()
        .expect("single is assigned")
        .to_owned();
    let holder_id = holder.rsplit('-').next().expect("es-<id>").to_owned();
    let env = c.tetherctl_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let refused = tetherctl(&["replace", &holder_id], &env).await;
    assert!(
        !refused.ok && refused.stderr.contains("single"),
        "{}",
        refused.stderr
    );
    // With a replica it may go; then green again before the scale-down.
    let (s, body) = call(
        &access,
        &first,
        Method::PUT,
        "/single/_settings",
        Some(&json!({"index": {"number_of_replicas": 1}})),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    wait_green_seen(&c, &access, &first).await;

    // 4 -> 2: nodes 4 and 3 drain; each task stops only once it holds nothing.
    let plan = c.ctl_json(&["scale", "2"]).await;
    assert_eq!(plan["stop"], json!([4, 3]));
    let mut saw_draining = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    loop {
        let listed = c.ctl_json(&["nodes"]).await;
        let nodes = listed.as_array().expect("nodes");
        let leaving: Vec<&Value> = nodes
            .iter()
            .filter(|n| n["id"].as_u64() > Some(2))
            .collect();
        for n in &leaving {
            if n["removal"]["step"] == "move_data" && n["state"] == "STOPPING" {
                saw_draining = true;
            }
        }
        // Masters leave one at a time: never two voting exclusions at once, never two nodes stopping.
        let (_, state) = call(
            &access,
            &first,
            Method::GET,
            "/_cluster/state/metadata?filter_path=metadata.cluster_coordination.voting_config_exclusions",
            None,
        )
        .await;
        let exclusions = state["metadata"]["cluster_coordination"]["voting_config_exclusions"]
            .as_array()
            .map_or(0, Vec::len);
        assert!(exclusions <= 1, "{state}");
        let stopping = leaving
            .iter()
            .filter(|n| n["removal"]["step"] == "stop")
            .count();
        assert!(stopping <= 1, "{listed}");
        let done = leaving
            .iter()
            .all(|n| n["state"] == "STOPPED" && n["removal"].is_null());
        if done {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the scale-down did not finish: {listed}\n{}",
            c.log_tail("tether-scheduler", 40)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        saw_draining,
        "the leaving nodes were never seen draining while they ran"
    );

    // Nothing lost, nothing left set.
    assert_docs(&access, &first, "replicated", 40).await;
    let (_, shutdowns) = call(&access, &first, Method::GET, "/_nodes/shutdown", None).await;
    assert_eq!(shutdowns["nodes"], json!([]), "{shutdowns}");
    let (_, settings) = call(&access, &first, Method::GET, "/_cluster/settings", None).await;
    assert!(
        settings["persistent"]["cluster"]["routing"]["allocation"]["exclude"]["_name"].is_null(),
        "{settings}"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_moves_data_first_and_the_node_comes_back_not_excluded() {
    let (c, access, nodes, first) = formed(4, 3).await;
    index_with(&access, &first, "replicated", 3, 1, 20).await;
    wait_green_seen(&c, &access, &first).await;
    let old_task = nodes
        .iter()
        .find(|n| n.id == 3)
        .expect("node 3")
        .task_id
        .clone();
    let answer = c.ctl_json(&["replace", "3"]).await;
    assert!(
        answer["message"]
            .as_str()
            .is_some_and(|m| m.contains("data moves away first")),
        "{answer}"
    );
    // Its task runs until its data moved away; it comes back on its volumes with a new task. (Node 3
    // shares zone a with node 1, so zone awareness lets its copies move there; node 2, alone in zone b,
    // could not move its copies while it is in the cluster, in Elasticsearch as here: that removal
    // would wait, reported once overdue.)
    let mut saw_draining = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    loop {
        let listed = c.ctl_json(&["nodes"]).await;
        let n = listed
            .as_array()
            .and_then(|a| a.iter().find(|n| n["id"] == 3))
            .expect("node 3")
            .clone();
        if n["removal"]["step"] == "move_data" && n["task_id"] == old_task.as_str() {
            assert_eq!(n["state"], "RUNNING", "{n}");
            saw_draining = true;
        }
        if n["state"] == "RUNNING"
            && n["task_id"] != old_task.as_str()
            && n["removal"].is_null()
            && n["es_joined"] == true
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node 3 never came back: {n}\n{}",
            c.log_tail("tether-scheduler", 40)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(saw_draining, "node 3 was never seen draining while it ran");
    let (_, shutdowns) = call(&access, &first, Method::GET, "/_nodes/shutdown", None).await;
    assert_eq!(shutdowns["nodes"], json!([]), "{shutdowns}");
    let (_, state) = call(
        &access,
        &first,
        Method::GET,
        "/_cluster/state/metadata?filter_path=metadata.cluster_coordination.voting_config_exclusions",
        None,
    )
    .await;
    let exclusions = state["metadata"]["cluster_coordination"]["voting_config_exclusions"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(exclusions, 0, "the node came back excluded: {state}");
    assert_docs(&access, &first, "replicated", 20).await;
    c.stop().await;
}
