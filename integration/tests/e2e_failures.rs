//! End-to-end failure scenarios with real processes (see `e2e_cluster.rs` for the set-up): partitions,
//! a scheduler crash mid-relaunch, a dead sidecar and a hung volume plugin. In each, 4 agents in zones
//! a, b, a, b run 3 nodes; node 2's volumes are in zone-b, which has one spare agent.

use std::time::Duration;

use serde_json::json;
use tether_integration::testing::cluster::E2eCluster;
use tether_integration::testing::es::{get_doc, put_doc, wait_es};
use tether_integration::testing::scheduler::all_running;
use tether_proto::v1::Node;

fn node(nodes: &[Node], id: u64) -> Node {
    nodes
        .iter()
        .find(|n| n.id == id)
        .cloned()
        .expect("node listed")
}

/// Node 2 and the zone-b agent that does not run it, once the three nodes formed one cluster.
async fn node_two_and_spare(c: &E2eCluster) -> (Node, String) {
    let nodes = c.wait_formed(3).await;
    let two = node(&nodes, 2);
    let spare = c
        .zone_hosts("zone-b")
        .into_iter()
        .find(|h| *h != two.host)
        .expect("a spare zone-b agent");
    (two, spare)
}

/// The machine of node 2's agent dies with its sidecar and plugin: the task is UNREACHABLE after the
/// ping timeout, and storage fencing replaces it after the delay.
async fn kill_agent_of(c: &mut E2eCluster, n: &Node) {
    c.emu_fault(&format!("agents/{}/kill", n.agent_id)).await;
    c.cluster.kill_sidecar(&n.host);
    c.cluster.kill_plugin(&n.host);
}

/// (3) A partitioned agent's node is not replaced while UNREACHABLE (its task may still write), and is
/// replaced once the agent is GONE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_node_is_replaced_only_once_its_agent_is_gone() {
    let c = E2eCluster::start(4, 3, |_| {}).await;
    let es = c.es().await;
    let (two, _) = node_two_and_spare(&c).await;
    wait_es(&es, &two).await;
    put_doc(&es, &two, "doc-2", json!({ "v": 2 })).await;

    // Frozen, as a machine whose agent is declared gone is dead: a node 2 that kept running as
    // Elasticsearch's elected master would keep its node id in the cluster, and its replacement could
    // not join until Elasticsearch noticed the lost data path (its file-system health check, every two
    // minutes by default, which es-standin does not model).
    c.emu_fault(&format!("agents/{}/partition?freeze=true", two.agent_id))
        .await;
    c.wait_nodes("node 2 unreachable", |ns| {
        ns.iter().any(|n| n.id == 2 && n.state == "UNREACHABLE")
    })
    .await;
    // Several allocation rounds and backoffs pass; the old task is the only one for node 2.
    c.assert_not_relaunched(2, Duration::from_secs(4), Some(&two.task_id))
        .await;
    let nodes = c
        .wait_nodes("node 2 still on its task", |ns| {
            ns.iter().any(|n| n.id == 2)
        })
        .await;
    assert_eq!(
        node(&nodes, 2).task_id,
        two.task_id,
        "{}",
        c.log_tail("tether-scheduler", 60)
    );

    c.emu_fault(&format!("agents/{}/gone", two.agent_id)).await;
    let after = c
        .wait_nodes("node 2 running elsewhere", |ns| {
            ns.iter()
                .any(|n| n.id == 2 && n.state == "RUNNING" && n.host != two.host)
        })
        .await;
    let moved = node(&after, 2);
    wait_es(&es, &moved).await;
    assert_eq!(get_doc(&es, &moved, "doc-2").await, Some(json!({ "v": 2 })));
    c.stop().await;
}

/// (4) The scheduler is SIGKILLed while it relaunches a node; after a restart there is no duplicate task
/// and every document is present.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduler_killed_mid_relaunch_leaves_no_duplicate() {
    let mut c = E2eCluster::start(4, 3, |_| {}).await;
    let es = c.es().await;
    let nodes = c.wait_formed(3).await;
    for n in &nodes {
        wait_es(&es, n).await;
        put_doc(&es, n, &format!("doc-{}", n.id), json!({ "v": n.id })).await;
    }
    let two = node(&nodes, 2);
    kill_agent_of(&mut c, &two).await;
    // Kill the scheduler as soon as it works on the relaunch (preparing or launched, not yet running).
    c.wait_nodes("node 2 being relaunched", |ns| {
        ns.iter()
            .any(|n| n.id == 2 && (n.task_id != two.task_id || n.state == "PREPARING"))
    })
    .await;
    c.cluster.kill_scheduler();
    let options = c.options.clone();
    c.cluster
        .start_scheduler(&options)
        .await
        .expect("scheduler restarts");

    let after = c
        .wait_nodes("three running nodes after the restart", all_running(3))
        .await;
    let live = c.live_tasks_by_node().await;
    for id in 1..=3 {
        assert_eq!(
            live.get(&id).map(Vec::len),
            Some(1),
            "exactly one live task for node {id} (besides a fenced UNREACHABLE one): {live:?}"
        );
    }
    // The writer check reads the emulator, the node list and the volume backend one after the other: a
    // read between two of them may see a moment apart, so it must hold once, within a bound.
    let mut writers = Vec::new();
    for _ in 0..40 {
        writers = c.duplicate_writers().await;
        if writers.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert_eq!(writers, vec![]);
    for n in &after {
        wait_es(&es, n).await;
        assert_eq!(
            get_doc(&es, n, &format!("doc-{}", n.id)).await,
            Some(json!({ "v": n.id })),
            "node {}",
            n.id
        );
    }
    c.stop().await;
}

/// (6) With its sidecar dead, an agent gets no launch until the sidecar reconnects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_launch_on_an_agent_whose_sidecar_is_down() {
    let mut c = E2eCluster::start(4, 3, |_| {}).await;
    let (two, spare) = node_two_and_spare(&c).await;
    assert!(c.cluster.kill_sidecar(&spare));
    kill_agent_of(&mut c, &two).await;
    c.wait_nodes("node 2 waiting", |ns| {
        ns.iter().any(|n| n.id == 2 && n.state != "RUNNING")
    })
    .await;
    // The spare is the only zone-b agent left, and its sidecar cannot vouch for the volumes.
    c.assert_not_relaunched(2, Duration::from_secs(4), None)
        .await;

    let agent = c.agent(&spare);
    c.cluster.start_sidecar(&agent).expect("sidecar restarts");
    let after = c
        .wait_nodes("node 2 running on the spare", |ns| {
            ns.iter()
                .any(|n| n.id == 2 && n.state == "RUNNING" && n.host == spare)
        })
        .await;
    assert_eq!(node(&after, 2).volumes, two.volumes);
    c.stop().await;
}

/// (7) A volume plugin that hangs: the launch there is refused with a clear reason, the other nodes are
/// unaffected, and the node runs once the plugin answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_plugin_refuses_the_launch_there_and_nothing_else() {
    let mut c = E2eCluster::start(4, 3, |o| o.mount_timeout = Duration::from_secs(4)).await;
    let (two, spare) = node_two_and_spare(&c).await;
    c.plugin_faults(&spare, json!({ "methods": { "Mount": { "hang": true } } }))
        .await;
    kill_agent_of(&mut c, &two).await;
    let waiting = c
        .wait_nodes("node 2 refused on the hung agent with a reason", |ns| {
            ns.iter()
                .any(|n| n.id == 2 && n.state == "PENDING" && n.reason.contains("prepare failed"))
        })
        .await;
    for id in [1, 3] {
        assert_eq!(node(&waiting, id).state, "RUNNING", "node {id} unaffected");
    }

    c.plugin_faults(&spare, json!({ "methods": {} })).await;
    c.wait_nodes(
        "node 2 running on the spare once the plugin answers",
        |ns| {
            ns.iter()
                .any(|n| n.id == 2 && n.state == "RUNNING" && n.host == spare)
        },
    )
    .await;
    c.stop().await;
}

/// A volume attached to another instance (without preemption, as REX-Ray defaults) is never launched:
/// the prepare fails with the driver's reason, the node stays pending, the others run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_attached_elsewhere_is_not_launched() {
    let c = E2eCluster::start(3, 3, |o| {
        o.preempt = false;
        o.attached_elsewhere = vec![("elasticsearch1data".into(), "some-other-instance".into())];
    })
    .await;
    let nodes = c
        .wait_nodes(
            "nodes 2 and 3 running, node 1 refused by the driver",
            |ns| {
                ns.len() == 3
                    && ns
                        .iter()
                        .filter(|n| n.id != 1)
                        .all(|n| n.state == "RUNNING")
                    && ns.iter().any(|n| {
                        n.id == 1 && n.state == "PENDING" && n.reason.contains("prepare failed")
                    })
            },
        )
        .await;
    assert!(
        node(&nodes, 1).task_id.is_empty(),
        "node 1 was never launched"
    );
    let live = c.live_tasks_by_node().await;
    assert!(!live.contains_key(&1), "no task for node 1: {live:?}");
    c.stop().await;
}
