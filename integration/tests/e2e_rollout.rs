//! A rolling upgrade end to end, the smoke test of `tetherctl update`: three nodes on one es-standin
//! version, an index with a replica, `update --image` to a newer tag; the rollout restarts the nodes one
//! at a time and reaches `done`, every node runs the new version, no document is lost, and a downgrade
//! is refused. (The larger scenarios, groups, a writer during the rollout and the scheduler killed
//! midway, are in `e2e_rolling.rs`.) Build the binaries first (`cargo build --workspace --bins`).

use std::time::Duration;

use http::Method;
use serde_json::{Value, json};
use tether_integration::testing::cluster::E2eCluster;
use tether_integration::testing::ctl::tetherctl;
use tether_integration::testing::es::{assert_docs, call, index_with};

const OLD: &str = "tether/es-standin:8.13.4";
const NEW: &str = "tether/es-standin:8.15.0";

/// `tetherctl --output json ARGS` against `c`: whether it succeeded, and its JSON (or its stderr).
async fn ctl(c: &E2eCluster, args: &[&str]) -> (bool, Value, String) {
    let env = c.tetherctl_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut all = vec!["--output", "json"];
    all.extend_from_slice(args);
    let out = tetherctl(&all, &env).await;
    let json = serde_json::from_str(&out.stdout).unwrap_or(Value::Null);
    (out.ok, json, out.stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_image_rolls_three_nodes_one_at_a_time_to_done() {
    let c = E2eCluster::start(3, 3, |o| o.image = OLD.into()).await;
    let access = c.es().await;
    let nodes = c.wait_formed(3).await;
    let first = nodes[0].clone();
    index_with(&access, &first, "docs", 2, 1, 20).await;

    let (ok, _, stderr) = ctl(&c, &["update", "--image", "tether/es-standin:8.1.0"]).await;
    assert!(
        !ok && stderr.contains("older than"),
        "a downgrade: {stderr}"
    );
    let (ok, started, stderr) = ctl(&c, &["update", "--image", NEW]).await;
    assert!(ok, "{stderr}");
    assert_eq!(started["config_generation"], 2, "{started}");

    // Poll until done; at every look at most one node is down, and the rollout is never paused
    // (nothing here should hold a gate for long).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    let mut seen_current = Vec::new();
    loop {
        let (ok, status, stderr) = ctl(&c, &["rollout", "status"]).await;
        assert!(ok, "{stderr}");
        assert_ne!(status["state"], "paused", "{status}");
        if let Some(id) = status["current"].as_u64()
            && seen_current.last() != Some(&id)
        {
            seen_current.push(id);
        }
        let (_, listed, _) = ctl(&c, &["nodes"]).await;
        // At most one node down as Mesos sees it (what Elasticsearch lists is unknown for a moment
        // while a restarted master's successor is elected).
        let away = listed
            .as_array()
            .map_or(0, |n| n.iter().filter(|n| n["state"] != "RUNNING").count());
        assert!(away <= 1, "more than one node away: {listed}");
        if status["state"] == "done" {
            let mut done: Vec<u64> = status["done"]
                .as_array()
                .expect("done")
                .iter()
                .filter_map(Value::as_u64)
                .collect();
            done.sort_unstable();
            assert_eq!(done, [1, 2, 3], "{status}");
            assert_eq!(status["pending"], json!([]), "{status}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rollout never reached done: {status}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        seen_current.iter().all(|id| (1..=3).contains(id)),
        "{seen_current:?}"
    );

    let (_, listed, _) = ctl(&c, &["nodes"]).await;
    for n in listed.as_array().expect("nodes") {
        assert_eq!(n["config_generation"], 2, "{n}");
    }
    let nodes = c.wait_formed(3).await;
    // Every node the cluster lists runs the new version (polled: the node asked may still be
    // applying the last cluster state).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (s, cat) = call(
            &access,
            &nodes[0],
            Method::GET,
            "/_cat/nodes?format=json&h=name,version",
            None,
        )
        .await;
        let versions: Option<Vec<&str>> = cat
            .as_array()
            .map(|a| a.iter().filter_map(|n| n["version"].as_str()).collect());
        if versions
            .as_ref()
            .is_some_and(|v| v.len() == 3 && v.iter().all(|v| *v == "8.15.0"))
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every node on 8.15.0: {s} {cat}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_docs(&access, &nodes[0], "docs", 20).await;
}
