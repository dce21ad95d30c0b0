//! End-to-end: an agent's machine dies as a real one does (TASK_UNREACHABLE after the ping timeout, and
//! nothing more), with real processes (see `e2e_cluster.rs` for the set-up). 4 agents in zones a, b, a,
//! b run 3 nodes; node 2's volumes are in zone-b, which has one spare agent.
//!
//! - Without fencing the node waits, its reason naming the operator command, and `tetherctl agents gone`
//!   brings it back with its data.
//! - With storage fencing it comes back on its own after the delay, with every acknowledged document.
//! - A frozen (partitioned) old task is replaced the same way; once healed it can write nothing (its
//!   volume was taken over) and it is killed.
//! - A driver without preemption never yields two writers: the node stays pending with the driver's
//!   reason.

use std::time::Duration;

use serde_json::json;
use tether_integration::http_client;
use tether_integration::http_client::EsAccess;
use tether_integration::testing::cluster::E2eCluster;
use tether_integration::testing::ctl::{tetherctl, tetherctl_answering};
use tether_integration::testing::es::{get_doc, put_doc, wait_es};
use tether_proto::v1::{ListNodesRequest, Node};

fn node(nodes: &[Node], id: u64) -> Node {
    nodes
        .iter()
        .find(|n| n.id == id)
        .cloned()
        .expect("node listed")
}

/// Node 2, with documents `doc-2-0..count` acknowledged, once the three nodes formed one cluster.
async fn node_two_with_documents(c: &E2eCluster, count: usize) -> Node {
    let nodes = c.wait_formed(3).await;
    let two = node(&nodes, 2);
    let es = c.es().await;
    wait_es(&es, &two).await;
    for i in 0..count {
        put_doc(&es, &two, &format!("doc-2-{i}"), json!({ "i": i })).await;
    }
    two
}

/// Node 2's machine dies, with its sidecar and plugin.
async fn kill_machine_of(c: &mut E2eCluster, n: &Node) {
    c.emu_fault(&format!("agents/{}/kill", n.agent_id)).await;
    c.cluster.kill_sidecar(&n.host);
    c.cluster.kill_plugin(&n.host);
}

fn env_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// Node `id` as `tetherctl --output json nodes` shows it.
async fn node_json(c: &E2eCluster, id: u64) -> serde_json::Value {
    let env = c.tetherctl_env();
    let out = tetherctl(&["--output", "json", "nodes"], &env_refs(&env)).await;
    assert!(out.ok, "{out:?}");
    let all: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    all.as_array()
        .into_iter()
        .flatten()
        .find(|n| n["id"] == id)
        .cloned()
        .expect("node listed")
}

async fn all_documents_back(es: &EsAccess, moved: &Node, count: usize) {
    wait_es(es, moved).await;
    for i in 0..count {
        assert_eq!(
            get_doc(es, moved, &format!("doc-2-{i}")).await,
            Some(json!({ "i": i })),
            "acknowledged document doc-2-{i} on {}",
            moved.host
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_fencing_a_dead_agents_node_waits_for_the_operator() {
    let mut c = E2eCluster::start(4, 3, |o| o.storage_fencing = None).await;
    let two = node_two_with_documents(&c, 3).await;
    kill_machine_of(&mut c, &two).await;
    let command = format!("tetherctl agents gone {}", two.host);
    c.wait_nodes("node 2 UNREACHABLE, naming the operator command", |ns| {
        ns.iter()
            .any(|n| n.id == 2 && n.state == "UNREACHABLE" && n.reason.contains(&command))
    })
    .await;
    let shown = node_json(&c, 2).await;
    assert_eq!(shown["next_action"]["kind"], "wait_operator", "{shown}");
    assert!(
        shown["unreachable_since_unix_ms"].as_u64().is_some(),
        "{shown}"
    );
    c.assert_not_relaunched(2, Duration::from_secs(5), None)
        .await;

    let env = c.tetherctl_env();
    let env = env_refs(&env);
    // An agent that is up is refused; so is an answer other than `yes`.
    let spare = c
        .zone_hosts("zone-b")
        .into_iter()
        .find(|h| *h != two.host)
        .expect("a spare zone-b agent");
    let refused = tetherctl(&["agents", "gone", &spare, "--yes"], &env).await;
    assert!(!refused.ok, "{refused:?}");
    let one = node(&c.wait_nodes("nodes", |_| true).await, 1);
    let refused = tetherctl(&["agents", "gone", &one.host, "--yes"], &env).await;
    assert!(
        !refused.ok && refused.stderr.contains("up"),
        "a running agent is refused: {refused:?}"
    );
    let declined = tetherctl_answering(&["agents", "gone", &two.host], &env, "no\n").await;
    assert!(
        !declined.ok && declined.stderr.contains("not confirmed"),
        "{declined:?}"
    );
    c.assert_not_relaunched(2, Duration::from_secs(1), None)
        .await;

    let done = tetherctl_answering(&["agents", "gone", &two.host], &env, "yes\n").await;
    assert!(done.ok && done.stdout.contains(&two.agent_id), "{done:?}");
    let after = c
        .wait_nodes("node 2 running elsewhere", |ns| {
            ns.iter()
                .any(|n| n.id == 2 && n.state == "RUNNING" && n.host != two.host)
        })
        .await;
    all_documents_back(&c.es().await, &node(&after, 2), 3).await;
    assert_eq!(c.duplicate_writers().await, vec![]);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_storage_fencing_a_dead_agents_node_comes_back_on_its_own() {
    let mut c = E2eCluster::start(4, 3, |_| {}).await;
    let two = node_two_with_documents(&c, 5).await;
    kill_machine_of(&mut c, &two).await;
    // On the way: UNREACHABLE, with the time of its replacement announced.
    let shown = {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let n = node_json(&c, 2).await;
            if n["next_action"]["kind"] == "replace_at" {
                break n;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never announced a replacement: {n}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    assert!(
        shown["next_action"]["at_unix_ms"].as_u64().is_some(),
        "{shown}"
    );
    assert!(
        shown["next_action"]["text"]
            .as_str()
            .is_some_and(|t| t.contains("storage-fenced")),
        "{shown}"
    );
    let after = c
        .wait_nodes("node 2 running elsewhere", |ns| {
            ns.iter()
                .any(|n| n.id == 2 && n.state == "RUNNING" && n.host != two.host)
        })
        .await;
    let moved = node(&after, 2);
    assert_ne!(moved.task_id, two.task_id);
    all_documents_back(&c.es().await, &moved, 5).await;
    assert_eq!(c.duplicate_writers().await, vec![]);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healed_old_task_wrote_nothing_after_the_takeover_and_is_killed() {
    let mut c = E2eCluster::start(4, 3, |_| {}).await;
    let es = c.es().await;
    let two = node_two_with_documents(&c, 3).await;
    // Cut off with its processes frozen; its sidecar is cut off too.
    c.emu_fault(&format!("agents/{}/partition?freeze=true", two.agent_id))
        .await;
    c.cluster.kill_sidecar(&two.host);
    // A frozen node leaves Elasticsearch only by the master's follower checks (3 × 10 s by default),
    // and the scheduler waits --unreachable-replace-after (10 s here) past both: about 45 s on an idle
    // machine, more on a loaded one, so this wait has twice the usual bound.
    let after = c
        .wait_nodes_within(
            "node 2 replaced elsewhere",
            2 * tether_integration::testing::DEADLINE,
            |ns| {
                ns.iter()
                    .any(|n| n.id == 2 && n.state == "RUNNING" && n.host != two.host)
            },
        )
        .await;
    let moved = node(&after, 2);
    all_documents_back(&c.es().await, &moved, 3).await;
    put_doc(&es, &moved, "doc-2-new", json!({ "on": "new" })).await;

    // The partition heals: the old process runs again. Whatever it is asked to write fails (its volume
    // was taken over), and the scheduler kills it.
    c.emu_fault(&format!("agents/{}/heal", two.agent_id)).await;
    // Asked as a client of the secure cluster would (HTTPS, as `elastic`): a refusal must come from the
    // old node itself, not from a wrong scheme or missing credentials.
    let late = http_client::es_request(
        &es,
        http::Method::PUT,
        &two.host,
        two.http_port,
        "/docs/_doc/doc-2-late",
        Some(&json!({ "on": "old" })),
    )
    .await;
    assert!(
        !matches!(&late, Ok(r) if r.status == 200 || r.status == 201),
        "the old task acknowledged a write after the takeover: {late:?}"
    );
    let killed = {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let url = format!("http://{}/state", c.cluster.plan.emu);
            let (_, state) = http_client::get_json(&url).await.expect("emulator state");
            let live = tether_integration::dev::chaos::live_tasks(&state);
            let old_live = live
                .get(&2)
                .into_iter()
                .flatten()
                .any(|t| t.task_id == two.task_id);
            if !old_live {
                break true;
            }
            // Until the scheduler hears of the healed task and kills it, the master lists it RUNNING
            // beside the new one; what keeps it from writing is that its volumes stay with the new host.
            let held = c.attachments().await;
            for v in &moved.volumes {
                assert_eq!(
                    held.get(v).cloned().flatten().as_deref(),
                    Some(moved.host.as_str()),
                    "volume {v} left node 2's new host while the old task lived: {live:?}"
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the old task was never killed: {live:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    assert!(killed);
    assert_eq!(c.duplicate_writers().await, vec![]);
    assert_eq!(get_doc(&es, &moved, "doc-2-late").await, None);
    assert_eq!(
        get_doc(&es, &moved, "doc-2-new").await,
        Some(json!({ "on": "new" }))
    );
    let mut admin = c.admin().await;
    let nodes = admin
        .list_nodes(ListNodesRequest {})
        .await
        .expect("nodes")
        .into_inner()
        .nodes;
    assert_eq!(node(&nodes, 2).task_id, moved.task_id);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_preemption_the_node_stays_pending_and_never_has_two_writers() {
    let mut c = E2eCluster::start(4, 3, |o| o.preempt = false).await;
    let two = node_two_with_documents(&c, 1).await;
    kill_machine_of(&mut c, &two).await;
    c.wait_nodes("node 2 pending with the driver's refusal", |ns| {
        ns.iter()
            .any(|n| n.id == 2 && n.state == "PENDING" && n.reason.contains("resource not found"))
    })
    .await;
    c.assert_not_relaunched(2, Duration::from_secs(5), None)
        .await;
    c.stop().await;
}
