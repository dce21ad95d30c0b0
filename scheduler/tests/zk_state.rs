//! The scheduler's ZooKeeper state store against a real ZooKeeper: round trip, a 10,000-slot table, and
//! the compare-and-set path (a write that lost the race is an error, never retried).

use std::collections::BTreeMap;

use tether_core::config::Security;
use tether_core::ids::{AgentId, FrameworkId, GroupName, Hostname, NodeId, TaskId, VolumeName};
use tether_core::state::{
    Bootstrap, GroupRecord, PersistedState, SlotRecord, StateWrite, TaskRecord,
};
use tether_scheduler::store::StoreError;
use tether_scheduler::store::zk::ZkStateStore;
use tether_zk::testing::ZkServer;
use tether_zk::{ZkConfig, ZkSession, ZkStore};

fn slot(id: u64) -> SlotRecord {
    SlotRecord {
        node_id: NodeId(id),
        volumes: vec![
            VolumeName::new(format!("es{id}config")).expect("volume"),
            VolumeName::new(format!("es{id}data")).expect("volume"),
        ],
        generation: 2,
        task: Some(TaskRecord {
            task_id: TaskId::new(format!("es-{id}.2")).expect("task id"),
            agent_id: AgentId::new(format!("agent-{}", id % 7)).expect("agent id"),
            host: Hostname::new(format!("agent{}.example", id % 7)).expect("host"),
            http_port: 31000,
            transport_port: 31001,
            state: None,
            publish_address: None,
        }),
        removed: false,
        forced: false,
        fenced: false,
        last_reason: Some(format!("placed on agent{}", id % 7)),
        mount_host: None,
        removal: None,
        config_generation: 1,
        // A recorded certificate expiry goes through ZooKeeper like the rest of the slot.
        cert_not_after: Some(1_900_000_000 + id),
    }
}

async fn open(server: &ZkServer) -> ZkStateStore {
    let session = ZkSession::connect(&ZkConfig::new(server.url("/tether/es")))
        .await
        .expect("session");
    ZkStateStore::load(ZkStore::open(session, None).await.expect("store"))
        .await
        .expect("load")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_round_trips_including_ten_thousand_slots() {
    let Some(server) =
        ZkServer::start_or_skip("state_round_trips_including_ten_thousand_slots").await
    else {
        return;
    };
    let mut store = open(&server).await;
    assert!(store.is_fresh(), "nothing stored yet");
    let mut writes = vec![
        StateWrite::FrameworkId(FrameworkId::new("fw-0001").expect("id")),
        StateWrite::Desired(10_000),
        StateWrite::Bootstrapped(Bootstrap {
            cluster_uuid: "Zx3-uuid".into(),
            security: Security::Off,
        }),
    ];
    writes.extend((1..=10_000).map(|i| StateWrite::Slot(slot(i))));
    let t = std::time::Instant::now();
    store.write(&writes).await.expect("bulk write");
    // Figures for the docs, not assertions.
    eprintln!("zk state: writing 10,000 slots took {:?}", t.elapsed());
    // Two group writes in one batch: the one `groups` document holds both.
    let group = |name: &str, index, desired| {
        StateWrite::Group(
            GroupName::new(name).expect("group"),
            GroupRecord { index, desired },
        )
    };
    // The stored node configuration and a rollout mid-node, each one document.
    let config = tether_core::nodeconfig::NodeConfig {
        image: "es:8.15.0".into(),
        es_settings: vec![("indices.memory.index_buffer_size".into(), "20%".into())],
        es_env: Vec::new(),
        cpus: 1.5,
        mem_mb: 2048.0,
        heap_mb: 1024,
    };
    let table = tether_core::state::ConfigTable {
        generation: 2,
        groups: [(
            GroupName::default_group(),
            vec![tether_core::nodeconfig::Versioned {
                generation: 2,
                config,
            }],
        )]
        .into_iter()
        .collect(),
    };
    let rollout = tether_core::state::Rollout {
        generation: 2,
        state: tether_core::rollout::RolloutState::Running,
        reason: None,
        done: vec![NodeId(1)],
        current: Some(tether_core::rollout::RolloutNode {
            node_id: NodeId(2),
            step: tether_core::rollout::RolloutStep::Stop,
            from_generation: 1,
            to_generation: 2,
            shutdown_node_id: Some("es-id-2".into()),
            allocation_set: false,
            stopped_task: None,
            joined: false,
            rolled_back: false,
        }),
        abort_requested: false,
    };
    let small = [
        StateWrite::RemoveSlot(NodeId(17)),
        StateWrite::Desired(9_999),
        group("masters", 1, 3),
        group("data", 2, 0),
        StateWrite::NodeConfig(table),
        StateWrite::Rollout(Some(rollout)),
    ];
    store.write(&small).await.expect("small write");
    store
        .write(&[group("data", 2, 5)])
        .await
        .expect("a group write alone");

    let mut expected = PersistedState::default();
    for w in writes.iter().chain(&small) {
        expected.apply(w);
    }
    expected.apply(&group("data", 2, 5));
    assert_eq!(store.state(), &expected);

    let t = std::time::Instant::now();
    let reloaded = open(&server).await;
    eprintln!("zk state: loading 9,999 slots took {:?}", t.elapsed());
    assert!(!reloaded.is_fresh());
    assert_eq!(
        reloaded.state(),
        &expected,
        "a new instance loads what was written"
    );
    assert_eq!(reloaded.state().slots.len(), 9_999);

    // The values are documented JSON, readable by anyone with zkCli.
    let session = ZkSession::connect(&ZkConfig::new(server.url("/tether/es")))
        .await
        .expect("session");
    let raw = ZkStore::open(session, None).await.expect("store");
    let desired: Option<serde_json::Value> = raw.get("desired").await.expect("get");
    assert_eq!(desired, Some(serde_json::json!({"value": 9_999})));
    let slots: BTreeMap<String, serde_json::Value> = raw.get_table("slots").await.expect("table");
    assert_eq!(slots["42"]["task"]["task_id"], "es-42.2");
    let groups: Option<serde_json::Value> = raw.get("groups").await.expect("get");
    assert_eq!(
        groups,
        Some(serde_json::json!({"value": {
            "data": {"index": 2, "desired": 5},
            "masters": {"index": 1, "desired": 3},
        }}))
    );
    let boot: Option<serde_json::Value> = raw.get("bootstrap").await.expect("get");
    assert_eq!(
        boot,
        Some(serde_json::json!({"value": {"cluster_uuid": "Zx3-uuid", "security": "Off"}}))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_lost_the_race_fails_and_is_not_retried() {
    let Some(server) =
        ZkServer::start_or_skip("a_write_that_lost_the_race_fails_and_is_not_retried").await
    else {
        return;
    };
    let mut first = open(&server).await;
    first
        .write(&[StateWrite::Desired(3), StateWrite::Slot(slot(1))])
        .await
        .expect("first write");

    // Another instance (a newer leader) loads and writes.
    let mut second = open(&server).await;
    second
        .write(&[StateWrite::Desired(5)])
        .await
        .expect("newer write");

    let err = first
        .write(&[StateWrite::Desired(4)])
        .await
        .expect_err("the stale instance must lose");
    match &err {
        StoreError::Zk(e) => assert!(e.is_fatal(), "{err}"),
        other => panic!("expected a ZooKeeper conflict, got {other}"),
    }
    assert!(err.to_string().contains("conflict"), "{err}");
    // Poisoned: even a write to a znode nobody else touched is refused now.
    let again = first
        .write(&[StateWrite::Slot(slot(2))])
        .await
        .expect_err("refuses after a failure");
    assert!(matches!(again, StoreError::Zk(_)), "{again}");

    let fresh = open(&server).await;
    assert_eq!(fresh.state().desired, 5, "the newer leader's value stands");
    assert!(fresh.state().slots.contains_key(&NodeId(1)));
    assert!(!fresh.state().slots.contains_key(&NodeId(2)));
}
