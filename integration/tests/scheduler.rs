//! tether-scheduler against the Mesos emulator: placement, ids, restarts. (The external-volume scenarios
//! with sidecars and the REX-Ray double are in `scheduler_external.rs`.)

use std::collections::BTreeSet;

use tether_integration::mesos_emu::{EmuConfig, MesosEmu};
use tether_integration::testing::scheduler::{Scheduler, all_running, wait_nodes};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_come_up_with_ids_one_to_three_on_three_agents() {
    let emu = MesosEmu::start(EmuConfig::fast(3)).await.expect("emulator");
    let state = tempfile::tempdir().expect("tempdir");
    let mut sched = Scheduler::start(&emu.url(), state.path(), &["--nodes", "3"]);
    let mut admin = sched.admin().await;
    let nodes = wait_nodes(&mut admin, "three running nodes", all_running(3)).await;

    let ids: Vec<u64> = nodes.iter().map(|n| n.id).collect();
    assert_eq!(ids, [1, 2, 3]);
    let hosts: BTreeSet<&str> = nodes.iter().map(|n| n.host.as_str()).collect();
    assert_eq!(hosts.len(), 3, "one node per agent: {nodes:#?}");
    for n in &nodes {
        assert_eq!(
            n.volumes,
            [
                format!("elasticsearch{}config", n.id),
                format!("elasticsearch{}data", n.id)
            ]
        );
    }
    // The emulator agrees: exactly three live tasks.
    let live = emu
        .tasks()
        .iter()
        .filter(|t| !t.state.is_terminal())
        .count();
    assert_eq!(live, 3);
    sched.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_scheduler_keeps_its_framework_and_launches_no_duplicate() {
    let emu = MesosEmu::start(EmuConfig::fast(3)).await.expect("emulator");
    let state = tempfile::tempdir().expect("tempdir");
    let mut sched = Scheduler::start(&emu.url(), state.path(), &["--nodes", "2"]);
    let mut admin = sched.admin().await;
    let before = wait_nodes(&mut admin, "two running nodes", all_running(2)).await;
    let framework = emu.state()["frameworks"][0]["id"]
        .as_str()
        .map(str::to_owned);
    sched.stop().await;

    // Same state directory: same framework id, same tasks, nothing relaunched.
    let mut sched = Scheduler::start(&emu.url(), state.path(), &["--nodes", "2"]);
    let mut admin = sched.admin().await;
    let after = wait_nodes(
        &mut admin,
        "two running nodes after restart",
        all_running(2),
    )
    .await;
    let task_ids =
        |ns: &[tether_proto::v1::Node]| ns.iter().map(|n| n.task_id.clone()).collect::<Vec<_>>();
    assert_eq!(task_ids(&before), task_ids(&after));
    let frameworks = emu.state()["frameworks"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(0);
    assert_eq!(
        frameworks, 1,
        "resubscribed with the persisted id, no second framework"
    );
    assert_eq!(
        emu.state()["frameworks"][0]["id"]
            .as_str()
            .map(str::to_owned),
        framework
    );
    let live = emu
        .tasks()
        .iter()
        .filter(|t| !t.state.is_terminal())
        .count();
    assert_eq!(live, 2);
    sched.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_nodes_on_forty_agents_get_ids_one_to_forty() {
    // The 2016 framework's 32-bit id mask stopped at 31 nodes (and then reused id 0's volumes).
    let emu = MesosEmu::start(EmuConfig::fast(40))
        .await
        .expect("emulator");
    let state = tempfile::tempdir().expect("tempdir");
    let mut sched = Scheduler::start(&emu.url(), state.path(), &["--nodes", "40"]);
    let mut admin = sched.admin().await;
    let nodes = wait_nodes(&mut admin, "forty running nodes", all_running(40)).await;
    assert_eq!(
        nodes.iter().map(|n| n.id).collect::<Vec<_>>(),
        (1..=40).collect::<Vec<u64>>()
    );
    let hosts: BTreeSet<&str> = nodes.iter().map(|n| n.host.as_str()).collect();
    assert_eq!(hosts.len(), 40, "one node per agent");
    let volumes: BTreeSet<&String> = nodes.iter().flat_map(|n| &n.volumes).collect();
    assert_eq!(volumes.len(), 80, "every node has its own two volumes");
    sched.stop().await;
}

/// On agents whose resources are mostly reserved for the framework's role (dynamically and statically),
/// each node takes the reserved parts under their reservation and the rest unreserved: the master
/// launches it (summing reserved and unreserved amounts into unreserved resources gets TASK_ERROR).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_launch_on_reserved_resources_with_their_reservation() {
    let mut cfg = EmuConfig::fast(2);
    for (i, a) in cfg.agents.iter_mut().enumerate() {
        *a = tether_integration::testing::emu::reserved_agent(i);
    }
    let emu = MesosEmu::start(cfg).await.expect("emulator");
    let state = tempfile::tempdir().expect("tempdir");
    let mut sched = Scheduler::start(&emu.url(), state.path(), &["--nodes", "2"]);
    let mut admin = sched.admin().await;
    let nodes = wait_nodes(&mut admin, "two running nodes", all_running(2)).await;
    assert_eq!(nodes.len(), 2);
    let errors = emu
        .tasks()
        .iter()
        .filter(|t| t.state == tether_mesos::model::TaskState::Error)
        .count();
    assert_eq!(errors, 0);
    sched.stop().await;
}
