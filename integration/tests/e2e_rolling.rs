//! Rolling changes end to end (issue 14): `tetherctl update` replaces the out-of-date nodes one at a
//! time while a client writes and reads ([`Traffic`]), a scheduler killed mid-rollout carries on, a
//! configuration that cannot start pauses the rollout at its first node and `rollback` / `abort` leave
//! the cluster as it was, and a downgrade is refused. Build the binaries first
//! (`cargo build --workspace --bins`).
//!
//! The versions are es-standin's, named by the image tag as the official image's are: data written by
//! 8.15.0 cannot be read by 8.14.3 (a node refuses to start on it), a replica never goes to a node older
//! than its primary's, and an unknown setting refuses the start.

use std::collections::BTreeMap;
use std::time::Duration;

use http::Method;
use serde_json::Value;
use tether_integration::http_client::EsAccess;
use tether_integration::testing::cluster::E2eCluster;
use tether_integration::testing::ctl::{Ctl, tetherctl};
use tether_integration::testing::es::call;
use tether_integration::testing::traffic::{Report, Traffic};
use tether_proto::v1::Node;

const OLD: &str = "tether/es-standin:8.14.3";
const NEW: &str = "tether/es-standin:8.15.0";
const OLD_VERSION: &str = "8.14.3";
const NEW_VERSION: &str = "8.15.0";
/// A rolling restart of a few nodes, each recovering its copies: generous, never a timing assertion.
const ROLLOUT_DEADLINE: Duration = Duration::from_secs(600);

/// A cluster on the old image, its rollout steps bounded by `step_timeout` so a stuck rollout pauses
/// with its reason instead of waiting out the test.
async fn cluster(
    agents: usize,
    nodes: u64,
    groups: &[&str],
    image: &str,
    step_timeout: &str,
) -> E2eCluster {
    let c = E2eCluster::start(agents, nodes, |o| {
        o.groups = groups.iter().map(|g| (*g).to_owned()).collect();
        o.image = image.to_owned();
        o.scheduler_args = vec!["--rollout-step-timeout".into(), step_timeout.into()];
    })
    .await;
    let total = if groups.is_empty() {
        nodes as usize
    } else {
        groups
            .iter()
            .map(|g| g.split(':').nth(1).and_then(|n| n.parse::<usize>().ok()))
            .sum::<Option<usize>>()
            .expect("NAME:COUNT")
    };
    c.wait_formed(total).await;
    c
}

async fn ctl(c: &E2eCluster, args: &[&str]) -> Ctl {
    let env = c.tetherctl_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut all = vec!["--output", "json"];
    all.extend_from_slice(args);
    tetherctl(&all, &env).await
}

/// The `--output json` answer of a tetherctl command that must succeed.
async fn ctl_json(c: &E2eCluster, args: &[&str]) -> Value {
    let out = ctl(c, args).await;
    assert!(out.ok, "tetherctl {args:?}: {}{}", out.stdout, out.stderr);
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
}

/// Polls `rollout status` until `pred` holds; panics with the last status and the scheduler's log.
async fn wait_rollout(c: &E2eCluster, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    wait_rollout_within(c, what, ROLLOUT_DEADLINE, pred).await
}

/// [`wait_rollout`] with a bound of its own.
async fn wait_rollout_within(
    c: &E2eCluster,
    what: &str,
    within: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    let mut last = Value::Null;
    while tokio::time::Instant::now() < deadline {
        let out = ctl(c, &["rollout", "status"]).await;
        if out.ok
            && let Ok(status) = serde_json::from_str::<Value>(&out.stdout)
        {
            if pred(&status) {
                return status;
            }
            last = status;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!(
        "gave up waiting for the rollout to be {what}; last status {last}\nscheduler log tail:\n{}",
        c.log_tail("tether-scheduler", 60)
    );
}

/// `nodes --output json`.
async fn nodes_json(c: &E2eCluster) -> Vec<Value> {
    ctl_json(c, &["nodes"])
        .await
        .as_array()
        .cloned()
        .expect("a node array")
}

/// Node name → the version each node of the cluster reports, as the node `via` sees them.
async fn versions(access: &EsAccess, via: &Node) -> BTreeMap<String, String> {
    let (status, rows) = call(
        access,
        via,
        Method::GET,
        "/_cat/nodes?h=name,version&format=json",
        None,
    )
    .await;
    assert_eq!(status, 200, "{rows}");
    rows.as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap_or_default().to_owned(),
                r["version"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Waits until the cluster is green with `count` nodes, every one on `version`, and nothing Tether set
/// for a step is left in Elasticsearch (allocation settings, shutdown records, voting exclusions).
async fn settled_on(c: &E2eCluster, count: usize, version: &str) {
    let access = c.es().await;
    let nodes = c
        .wait_nodes(&format!("{count} running nodes"), |ns| {
            ns.iter().filter(|n| n.state == "RUNNING").count() == count
        })
        .await;
    let via = nodes
        .iter()
        .find(|n| n.state == "RUNNING")
        .expect("a running node");
    let path = format!("/_cluster/health?wait_for_status=green&wait_for_nodes={count}&timeout=60s");
    let (status, health) = call(&access, via, Method::GET, &path, None).await;
    assert_eq!(
        (status, health["status"].as_str()),
        (200, Some("green")),
        "{health}"
    );
    let seen = versions(&access, via).await;
    assert_eq!(seen.len(), count, "{seen:?}");
    assert!(seen.values().all(|v| v == version), "{seen:?}");
    let (_, settings) = call(
        &access,
        via,
        Method::GET,
        "/_cluster/settings?flat_settings=true",
        None,
    )
    .await;
    for scope in ["persistent", "transient"] {
        let left: Vec<&String> = settings[scope]
            .as_object()
            .map(|o| {
                o.keys()
                    .filter(|k| k.starts_with("cluster.routing.allocation."))
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            left.is_empty(),
            "{scope} allocation settings left: {settings}"
        );
    }
    let (_, shutdowns) = call(&access, via, Method::GET, "/_nodes/shutdown", None).await;
    assert_eq!(
        shutdowns["nodes"],
        serde_json::json!([]),
        "shutdown records left"
    );
    let (_, state) = call(&access, via, Method::GET, "/_cluster/state/metadata", None).await;
    assert_eq!(
        state["metadata"]["cluster_coordination"]["voting_config_exclusions"],
        serde_json::json!([]),
        "voting exclusions left"
    );
}

/// What every rolling change must keep, from the traffic that ran through it; `restarted` nodes (by
/// Elasticsearch name) each left the cluster exactly once, the others never.
fn assert_safe(report: &Report, restarted: usize) {
    eprintln!(
        "traffic: {} acknowledged, {} failed writes, {} reads ({} failed, longest gap {:?}), colours {:?}, \
         most down {}, absences {:?}",
        report.acknowledged.len(),
        report.failed_writes,
        report.reads,
        report.failed_reads,
        report.longest_read_gap,
        report.colours,
        report.most_down,
        report.absences
    );
    assert!(
        !report.acknowledged.is_empty(),
        "the writer was never acknowledged"
    );
    assert!(
        report.not_found.is_empty() && report.unreadable_at_end.is_empty(),
        "acknowledged documents lost: not found {:?}, unreadable {:?}",
        report.not_found,
        report.unreadable_at_end
    );
    assert!(
        !report.saw_red(),
        "the cluster went red: {:?}",
        report.colours
    );
    assert!(
        report.most_down <= 1,
        "{} nodes were down at once",
        report.most_down
    );
    assert!(
        report.absent_at_end.is_empty(),
        "{:?}",
        report.absent_at_end
    );
    // The watcher samples: a restart quicker than a sample (a master's, while the cluster elects
    // another and drops the old one within a few hundred milliseconds) can pass unseen, so it proves
    // only that no node left twice and no other node left; each test checks the exactly-once restart
    // on the task ids.
    let restarts = report.restarts();
    assert!(
        restarts.len() <= restarted && restarts.values().all(|n| *n == 1),
        "each of at most {restarted} nodes leaves the cluster once: {restarts:?}"
    );
    // The bound is this test's own slowest restart (as the watcher measured it: last seen before it
    // left, first seen back), not a wall-clock constant.
    if let Some(slowest) = report.longest_absence() {
        assert!(
            report.longest_read_gap <= slowest,
            "reads failed for {:?}, longer than the slowest restart {slowest:?}",
            report.longest_read_gap
        );
    }
}

/// 3 dedicated masters and 2 data nodes go from 8.14.3 to 8.15.0 while a client writes and reads (one
/// replica): no acknowledged document lost, never red, at most one node down, reads never failing for
/// longer than a node's restart, and the rollout done with every node on the new configuration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_upgrade_of_two_groups_loses_nothing_and_takes_one_node_at_a_time() {
    let c = cluster(
        5,
        0,
        &["masters:3:roles=master", "data:2:roles=data"],
        OLD,
        "180s",
    )
    .await;
    let nodes = c.wait_formed(5).await;
    let before = ctl_json(&c, &["rollout", "status"]).await;
    assert_eq!(before["state"], "idle", "{before}");
    let traffic = Traffic::start(c.es().await, &nodes, c.admin().await, 2).await;
    traffic.wait_acknowledged(20).await;

    ctl_json(&c, &["update", "--image", NEW]).await;
    let done = wait_rollout(&c, "done", |s| s["state"] == "done").await;
    let report = traffic.stop().await;
    assert_safe(&report, 5);

    let generation = done["config_generation"].as_u64().expect("a generation");
    assert!(
        before["config_generation"]
            .as_u64()
            .is_none_or(|b| generation > b),
        "{before} → {done}"
    );
    assert_eq!(
        (
            done["done"].as_array().map(Vec::len),
            &done["current"],
            done["pending"].as_array().map(Vec::len)
        ),
        (Some(5), &Value::Null, Some(0)),
        "{done}"
    );
    let listed = nodes_json(&c).await;
    assert_eq!(listed.len(), 5);
    for n in &listed {
        assert_eq!(
            (n["state"].as_str(), n["config_generation"].as_u64()),
            (Some("RUNNING"), Some(generation)),
            "{n}"
        );
        // Launched exactly twice: restarted once (the task id ends in the launch count).
        assert!(
            n["task_id"].as_str().is_some_and(|t| t.ends_with(".2")),
            "{n}"
        );
    }
    settled_on(&c, 5, NEW_VERSION).await;
}

/// The scheduler SIGKILLed in the middle of a rollout: restarted, it carries on from the same step and
/// finishes; the nodes done before the kill are not restarted again, no node twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduler_killed_mid_rollout_carries_on_and_finishes_it() {
    let mut c = cluster(3, 3, &[], OLD, "180s").await;
    let nodes = c.wait_formed(3).await;
    let traffic = Traffic::start(c.es().await, &nodes, c.admin().await, 3).await;
    traffic.wait_acknowledged(10).await;

    ctl_json(&c, &["update", "--image", NEW]).await;
    let mid = wait_rollout(&c, "past its first node", |s| {
        s["done"].as_array().is_some_and(|d| !d.is_empty())
            && s["pending"].as_array().is_some_and(|p| !p.is_empty())
    })
    .await;
    let tasks_before: BTreeMap<u64, String> = c
        .wait_nodes("the node list", |_| true)
        .await
        .into_iter()
        .map(|n| (n.id, n.task_id))
        .collect();
    c.cluster.kill_scheduler();
    c.cluster
        .start_scheduler(&c.options)
        .await
        .expect("the scheduler restarts");

    let done = wait_rollout(&c, "done", |s| s["state"] == "done").await;
    let report = traffic.stop().await;
    assert_safe(&report, 3);
    let generation = done["config_generation"].as_u64().expect("a generation");
    assert_eq!(done["config_generation"], mid["config_generation"]);
    let after = c.wait_nodes("the node list", |_| true).await;
    for id in mid["done"].as_array().into_iter().flatten() {
        let id = id.as_u64().expect("a node id");
        let now = after.iter().find(|n| n.id == id).expect("still listed");
        assert_eq!(
            Some(&now.task_id),
            tasks_before.get(&id),
            "node {id} was done before the kill and restarted again"
        );
    }
    for n in nodes_json(&c).await {
        assert_eq!(n["config_generation"].as_u64(), Some(generation), "{n}");
    }
    // Each node was launched exactly twice (its task id ends in its launch count): restarted once,
    // the one in progress at the kill included.
    for n in &after {
        assert!(
            n.task_id.ends_with(".2"),
            "node {}: task {}",
            n.id,
            n.task_id
        );
    }
    settled_on(&c, 3, NEW_VERSION).await;
}

/// A new configuration Elasticsearch refuses at start-up (a misspelt setting) pauses the rollout at its
/// first node with the reason, touching no other node; `rollback` returns that node to the old
/// configuration and `abort` ends the rollout: the cluster is green on the old image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_that_cannot_start_pauses_then_rollback_and_abort_restore_the_old_one() {
    let c = cluster(3, 3, &[], OLD, "30s").await;
    let nodes = c.wait_formed(3).await;
    let before = nodes_json(&c).await;
    let old_generation: Vec<Option<u64>> = before
        .iter()
        .map(|n| n["config_generation"].as_u64())
        .collect();
    let tasks_before: BTreeMap<u64, String> =
        nodes.iter().map(|n| (n.id, n.task_id.clone())).collect();
    let traffic = Traffic::start(c.es().await, &nodes, c.admin().await, 3).await;
    traffic.wait_acknowledged(10).await;

    ctl_json(
        &c,
        &[
            "update",
            "--image",
            NEW,
            "--es-setting",
            "cluster.routing.allocation.enabled=all",
        ],
    )
    .await;
    let paused = wait_rollout(&c, "paused", |s| s["state"] == "paused").await;
    eprintln!("paused: {paused}");
    assert!(
        paused["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "a pause says why: {paused}"
    );
    assert_eq!(
        (
            paused["done"].as_array().map(Vec::len),
            paused["pending"].as_array().map(Vec::len)
        ),
        (Some(0), Some(2)),
        "{paused}"
    );
    let current = paused["current"].as_u64().expect("the first node");
    let others = c.wait_nodes("the node list", |_| true).await;
    for n in others.iter().filter(|n| n.id != current) {
        assert_eq!(
            (n.state.as_str(), Some(&n.task_id)),
            ("RUNNING", tasks_before.get(&n.id)),
            "node {} was touched",
            n.id
        );
    }

    ctl_json(&c, &["rollout", "rollback"]).await;
    c.wait_nodes(
        &format!("node {current} back on its old configuration"),
        |ns| ns.iter().all(|n| n.state == "RUNNING"),
    )
    .await;
    ctl_json(&c, &["rollout", "abort"]).await;
    // One node's restart on the old configuration is all that is left.
    let aborted = wait_rollout_within(&c, "aborted", Duration::from_secs(180), |s| {
        s["state"] == "aborted"
    })
    .await;
    assert_eq!(
        aborted["done"].as_array().map(Vec::len),
        Some(0),
        "{aborted}"
    );
    settled_on(&c, 3, OLD_VERSION).await;
    let after: Vec<Option<u64>> = nodes_json(&c)
        .await
        .iter()
        .map(|n| n["config_generation"].as_u64())
        .collect();
    assert_eq!(after, old_generation, "every node on the old configuration");
    let report = traffic.stop().await;
    assert_safe(&report, 1);
}

/// An image older than the one running is refused with an error naming both versions (Elasticsearch
/// cannot read data a newer version wrote), and nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downgrade_is_refused() {
    let c = cluster(1, 1, &[], NEW, "180s").await;
    let before = ctl_json(&c, &["rollout", "status"]).await;
    let tasks: Vec<String> = c
        .wait_nodes("the node", |_| true)
        .await
        .into_iter()
        .map(|n| n.task_id)
        .collect();
    let out = ctl(&c, &["update", "--image", OLD]).await;
    assert!(!out.ok, "a downgrade was accepted: {out:?}");
    assert!(
        out.stderr.contains(OLD_VERSION) && out.stderr.contains(NEW_VERSION),
        "the error names both versions: {}",
        out.stderr
    );
    let after = ctl_json(&c, &["rollout", "status"]).await;
    assert_eq!(
        (&after["state"], &after["config_generation"]),
        (&before["state"], &before["config_generation"]),
        "{before} → {after}"
    );
    let still: Vec<String> = c
        .wait_nodes("the node", |_| true)
        .await
        .into_iter()
        .map(|n| n.task_id)
        .collect();
    assert_eq!(still, tasks);
}
