//! Observation by assignment (issue 15) against the real binaries: each volume is looked at by the one
//! sidecar the scheduler assigned it to, so a volume deleted behind Tether's back is learned from its
//! observer, and a volume whose observer dies is taken over by another sidecar.

use std::time::Duration;

use tether_integration::fake_rexray;
use tether_integration::testing::cluster::E2eCluster;
use tether_integration::testing::{DEADLINE, eventually};
use tether_proto::v1::{Agent, ListAgentsRequest, ListVolumesRequest, ScaleRequest, Volume};

async fn volumes(c: &E2eCluster) -> Vec<Volume> {
    c.admin()
        .await
        .list_volumes(ListVolumesRequest {})
        .await
        .map(|r| r.into_inner().volumes)
        .unwrap_or_default()
}

async fn agents(c: &E2eCluster) -> Vec<Agent> {
    c.admin()
        .await
        .list_agents(ListAgentsRequest {})
        .await
        .map(|r| r.into_inner().agents)
        .unwrap_or_default()
}

/// Every volume is observed by exactly one connected sidecar: the shares add up to the volumes.
fn observed_once(agents: &[Agent], volumes: usize) -> bool {
    let connected: Vec<&Agent> = agents.iter().filter(|a| a.sidecar_connected).collect();
    !connected.is_empty() && connected.iter().map(|a| a.observes as usize).sum::<usize>() == volumes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_deleted_behind_tethers_back_is_learned_from_its_observer() {
    let c = E2eCluster::start(3, 2, |_| {}).await;
    let nodes = c.wait_formed(2).await;
    let all = volumes(&c).await.len();
    let shares = eventually("the shares add up to the volumes", DEADLINE, || async {
        let a = agents(&c).await;
        observed_once(&a, all).then_some(a)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", c.log_tail("tether-scheduler", 40)));
    // Each running node's volumes are observed by its agent: nobody else spends a call on them.
    for n in &nodes {
        let a = shares.iter().find(|a| a.host == n.host).expect("its agent");
        assert!(a.observes as usize >= n.volumes.len(), "{a:?} for {n:?}");
    }

    let victim = nodes[0].volumes[0].clone();
    let backend = c.cluster.plan.backend.clone();
    let name = victim.clone();
    tokio::task::spawn_blocking(move || fake_rexray::backend::delete_volume(&backend, &name))
        .await
        .expect("joined")
        .expect("deleted from the backend");
    let seen = eventually(
        "the scheduler to learn of the deletion",
        DEADLINE,
        || async {
            volumes(&c)
                .await
                .into_iter()
                .find(|v| v.name == victim && !v.exists)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", c.log_tail("tether-scheduler", 40)));
    assert_eq!(seen.node_id, nodes[0].id);
    // The other volumes still exist as far as the scheduler knows.
    let rest = volumes(&c).await;
    assert!(
        rest.iter().filter(|v| v.name != victim).all(|v| v.exists),
        "{rest:?}"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_observing_sidecar_dies_another_takes_over() {
    let mut c = E2eCluster::start(3, 2, |_| {}).await;
    let nodes = c.wait_formed(2).await;
    let all = volumes(&c).await.len();
    // The third agent runs no node: find who observes more than its own node's volumes, once the shares
    // add up. Scaling down leaves node 2's volumes unattached, observed by some sidecar.
    c.admin()
        .await
        .scale(ScaleRequest {
            nodes: 1,
            ..Default::default()
        })
        .await
        .expect("scaled down");
    c.wait_nodes("node 2 stopped", |ns| {
        ns.iter().any(|n| n.id == 2 && n.state == "STOPPED")
    })
    .await;
    let running_host = nodes.iter().find(|n| n.id == 1).map(|n| n.host.clone());
    let before = eventually("the shares add up to the volumes", DEADLINE, || async {
        let a = agents(&c).await;
        observed_once(&a, all).then_some(a)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", c.log_tail("tether-scheduler", 40)));
    // A sidecar observing node 2's volumes and running no node.
    let observer = before
        .iter()
        .find(|a| a.observes > 0 && Some(&a.host) != running_host.as_ref())
        .map(|a| a.host.clone())
        .unwrap_or_else(|| panic!("an observer without a node: {before:?}"));
    assert!(c.cluster.kill_sidecar(&observer));
    let after = eventually("another sidecar to take over", DEADLINE, || async {
        let a = agents(&c).await;
        let gone = a.iter().any(|x| x.host == observer && !x.sidecar_connected);
        (gone && observed_once(&a, all)).then_some(a)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", c.log_tail("tether-scheduler", 40)));
    assert!(
        after
            .iter()
            .filter(|a| a.host != observer)
            .map(|a| a.observes)
            .sum::<u32>() as usize
            == all,
        "{after:?}"
    );
    // The volumes are still known to exist: the new observer looked at them.
    let vs = eventually(
        "every volume reported again",
        Duration::from_secs(30),
        || async {
            let vs = volumes(&c).await;
            vs.iter().all(|v| v.exists).then_some(vs)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(vs.len(), all);
    c.stop().await;
}
