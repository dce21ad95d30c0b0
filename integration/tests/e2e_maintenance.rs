//! Mesos maintenance end to end (issue 14): an operator schedules maintenance for the agent of one of
//! three nodes (the master's `/maintenance/schedule`); Tether moves that node away through the safe
//! removal path before the window starts (its data first, then its task), relaunches it on its
//! volumes on another agent, and accepts the master's inverse offer (held meanwhile) only once the
//! agent holds no Tether task. No shard is lost, the cluster is never red, and nothing is placed back on the agent
//! while it is under maintenance. Build the binaries first (`cargo build --workspace --bins`).

use std::time::Duration;

use http::Method;
use serde_json::{Value, json};
use tether_integration::testing::cluster::E2eCluster;
use tether_integration::testing::emu::{
    maintenance_status, maintenance_window, post_maintenance_schedule, unix_ns_now,
};
use tether_integration::testing::es::{assert_docs, call, index_with, wait_green_seen};
use tether_mesos::model::InverseOfferStatusKind;

/// The node with id `id` in a `tetherctl nodes` answer.
fn node(listed: &Value, id: u64) -> Value {
    listed
        .as_array()
        .and_then(|a| a.iter().find(|n| n["id"] == id))
        .cloned()
        .unwrap_or_else(|| panic!("node {id} in {listed}"))
}

/// Tether's live tasks on `host`, as the master sees them.
async fn tasks_on(c: &E2eCluster, host: &str) -> Vec<String> {
    let (_, state) = tether_integration::http_client::get_json(&format!("{}/state", c.emu_url()))
        .await
        .expect("emulator state");
    tether_integration::dev::chaos::live_tasks(&state)
        .into_values()
        .flatten()
        .filter(|t| t.host == host)
        .map(|t| t.task_id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_leaves_an_agent_scheduled_for_maintenance_safely_and_is_not_placed_back() {
    // One zone: the volumes are zonal, so the node needs a free agent of its own zone to come back on,
    // and zone awareness needs another node of its zone to take its copies.
    let c = E2eCluster::start_in_zones(4, 3, 1, |o| {
        o.scheduler_args
            .extend(["--maintenance-answer-interval".into(), "2s".into()]);
    })
    .await;
    let access = c.es().await;
    let nodes = c.wait_formed(3).await;
    let first = nodes.iter().find(|n| n.id == 1).expect("node 1").clone();
    index_with(&access, &first, "replicated", 3, 1, 20).await;
    // Green, as the scheduler sees it, before anything moves.
    wait_green_seen(&c, &access, &first).await;

    let moving = nodes.iter().find(|n| n.id == 3).expect("node 3").clone();
    let host = moving.host.clone();
    let start = unix_ns_now() + 3_600_000_000_000;
    let r = post_maintenance_schedule(&c.emu_url(), &maintenance_window(&host, start)).await;
    assert_eq!(r.status, 200, "{}", r.body);

    let mut saw_moving = false;
    let mut saw_window = false;
    let mut accepted = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    loop {
        let (_, health) = call(&access, &first, Method::GET, "/_cluster/health", None).await;
        assert_ne!(health["status"], "red", "the cluster went red: {health}");
        let listed = c.ctl_json(&["nodes"]).await;
        let n = node(&listed, 3);
        if n["removal"]["kind"] == "maintenance" && n["task_id"] == moving.task_id.as_str() {
            saw_moving = true;
        }
        // The operator sees the window on the agent, at the time the master was given.
        let agents = c.ctl_json(&["agents"]).await;
        let there = agents
            .as_array()
            .and_then(|a| a.iter().find(|a| a["host"] == host.as_str()))
            .map(|a| a["maintenance"]["start_unix_ms"].clone());
        if there == Some(serde_json::json!(start / 1_000_000)) {
            saw_window = true;
        }
        // The answer first: an ACCEPT was sent only after the task there ended, so the tasks read
        // next must show none.
        let status = maintenance_status(&c.emu_url()).await;
        let on_agent = tasks_on(&c, &host).await;
        let answers: Vec<InverseOfferStatusKind> = status
            .draining_machines
            .iter()
            .flat_map(|m| m.statuses.iter().map(|s| s.status))
            .collect();
        if answers.contains(&InverseOfferStatusKind::Accept) {
            assert!(on_agent.is_empty(), "accepted while {on_agent:?} ran there");
            accepted = true;
        } else if !on_agent.is_empty() {
            assert!(
                on_agent.iter().all(|t| *t == moving.task_id),
                "a task was placed on the agent under maintenance: {on_agent:?}"
            );
        }
        let back = n["state"] == "RUNNING"
            && n["task_id"] != moving.task_id.as_str()
            && n["removal"].is_null()
            && n["es_joined"] == true;
        if back {
            assert_ne!(
                n["host"],
                host.as_str(),
                "placed back on the agent under maintenance: {n}"
            );
        }
        if back && accepted {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node 3 never moved away (accepted: {accepted}): {n}\n{}",
            c.log_tail("tether-scheduler", 40)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(saw_moving, "node 3 was never seen moving while it ran");
    assert!(
        saw_window,
        "tetherctl agents never showed the maintenance window on {host}"
    );

    // Nothing lost, nothing left set, and nothing placed on the agent while it stays scheduled.
    assert_docs(&access, &first, "replicated", 20).await;
    let (_, shutdowns) = call(&access, &first, Method::GET, "/_nodes/shutdown", None).await;
    assert_eq!(shutdowns["nodes"], json!([]), "{shutdowns}");
    for _ in 0..10 {
        assert!(
            tasks_on(&c, &host).await.is_empty(),
            "a task was placed on {host}"
        );
        let (_, health) = call(&access, &first, Method::GET, "/_cluster/health", None).await;
        assert_ne!(health["status"], "red", "{health}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    c.stop().await;
}
