//! Real-ZooKeeper tests of the versioned JSON store: round trip, 10,000-entry tables under the znode size
//! limit, compare-and-set conflicts between two writers, and fencing by the leader znode.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tether_zk::client as zk;
use tether_zk::testing::ZkServer;
use tether_zk::{Batch, Fence, StoreError, ZkConfig, ZkSession, ZkStore};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Slot {
    node_id: String,
    task_id: Option<String>,
    agent_id: Option<String>,
    volume: String,
    state: String,
    reason: Option<String>,
}

fn slot(i: usize) -> Slot {
    Slot {
        node_id: format!("es-data-{i:05}"),
        task_id: Some(format!(
            "tether.es-data-{i:05}.0f3c2a4e-8d1b-4c57-9a3e-{i:012}"
        )),
        agent_id: Some(format!("6f1a5d0e-2b3c-4d5e-8f90-a1b2c3d4e5f6-S{}", i % 97)),
        volume: format!("tether-es-prod-data-{i:05}"),
        state: "running".into(),
        reason: i
            .is_multiple_of(10)
            .then(|| "waiting for a matching offer with 4 cpus and 16 GiB".into()),
    }
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Value<T> {
    value: T,
}

async fn session(server: &ZkServer, path: &str) -> ZkSession {
    let cfg = ZkConfig::new(server.url(path)).with_session_timeout(Duration::from_secs(3));
    ZkSession::connect(&cfg).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_and_tables_round_trip() {
    let Some(server) = ZkServer::start_or_skip("documents_and_tables_round_trip").await else {
        return;
    };
    let store = ZkStore::open(session(&server, "/tether/es").await, None)
        .await
        .unwrap();
    assert_eq!(
        store.get::<Value<String>>("framework_id").await.unwrap(),
        None
    );
    assert!(store.get_table::<Slot>("slots").await.unwrap().is_empty());

    let slots: BTreeMap<String, Slot> = (0..50)
        .map(|i| (format!("es-data-{i:05}"), slot(i)))
        .collect();
    let mut batch = Batch::new();
    batch
        .put(
            "framework_id",
            &Value {
                value: "fw-1".to_owned(),
            },
        )
        .unwrap();
    batch.put("desired", &Value { value: 50u32 }).unwrap();
    batch.replace_table("slots", &slots).unwrap();
    store.commit(batch).await.unwrap();

    // Updates after our own writes need no re-read.
    store.put("desired", &Value { value: 49u32 }).await.unwrap();
    let mut batch = Batch::new();
    batch.remove("slots", "es-data-00049").unwrap();
    batch
        .upsert(
            "slots",
            "es-data-00001",
            &Slot {
                state: "staging".into(),
                ..slot(1)
            },
        )
        .unwrap();
    store.commit(batch).await.unwrap();

    let fresh = ZkStore::open(session(&server, "/tether/es").await, None)
        .await
        .unwrap();
    assert_eq!(
        fresh
            .get::<Value<String>>("framework_id")
            .await
            .unwrap()
            .unwrap()
            .value,
        "fw-1"
    );
    assert_eq!(
        fresh
            .get::<Value<u32>>("desired")
            .await
            .unwrap()
            .unwrap()
            .value,
        49
    );
    let got = fresh.get_table::<Slot>("slots").await.unwrap();
    let mut want = slots.clone();
    want.remove("es-data-00049");
    want.insert(
        "es-data-00001".into(),
        Slot {
            state: "staging".into(),
            ..slot(1)
        },
    );
    assert_eq!(got, want);

    // The stored JSON is the documented plain layout, readable by any ZooKeeper tool.
    let (raw, _) = fresh
        .session()
        .client()
        .get_data("/tether/es/state/desired")
        .await
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&raw).unwrap(),
        serde_json::json!({"value": 49})
    );
    let bucket = format!(
        "/tether/es/state/slots/{:02x}",
        tether_zk::store::bucket_of("es-data-00001")
    );
    let (raw, _) = fresh.session().client().get_data(&bucket).await.unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(doc["entries"]["es-data-00001"]["state"], "staging");

    // Emptying a table deletes its buckets; deleting a document removes its znode.
    let mut batch = Batch::new();
    batch
        .replace_table("slots", &BTreeMap::<String, Slot>::new())
        .unwrap();
    batch.delete("desired").unwrap();
    fresh.commit(batch).await.unwrap();
    let client = fresh.session().client();
    assert!(
        client
            .list_children("/tether/es/state/slots")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        client.check_stat("/tether/es/state/desired").await.unwrap(),
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_slots_stay_far_below_the_znode_limit() {
    let Some(server) = ZkServer::start_or_skip("ten_thousand_slots").await else {
        return;
    };
    let store = ZkStore::open(session(&server, "/tether/big").await, None)
        .await
        .unwrap();
    store.get_table::<Slot>("slots").await.unwrap();
    let slots: BTreeMap<String, Slot> = (0..10_000)
        .map(|i| (format!("es-data-{i:05}"), slot(i)))
        .collect();
    let total: usize = slots
        .values()
        .map(|s| serde_json::to_vec(s).unwrap().len())
        .sum();
    let mut batch = Batch::new();
    batch.replace_table("slots", &slots).unwrap();
    store.commit(batch).await.unwrap();

    let client = store.session().client();
    let buckets = client
        .list_children("/tether/big/state/slots")
        .await
        .unwrap();
    let mut largest = 0;
    for b in &buckets {
        let stat = client
            .check_stat(&format!("/tether/big/state/slots/{b}"))
            .await
            .unwrap()
            .unwrap();
        largest = largest.max(stat.data_length);
    }
    eprintln!(
        "10,000 slots: {total} bytes of JSON over {} znodes, largest {largest} bytes",
        buckets.len()
    );
    assert!(buckets.len() > 200, "{}", buckets.len());
    assert!(
        (largest as usize) < 64 * 1024,
        "largest bucket {largest} bytes"
    );

    let fresh = ZkStore::open(session(&server, "/tether/big").await, None)
        .await
        .unwrap();
    assert_eq!(fresh.get_table::<Slot>("slots").await.unwrap(), slots);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_writer_gets_conflict_and_a_fresh_open_sees_the_winner() {
    let Some(server) = ZkServer::start_or_skip("stale_writer_conflict").await else {
        return;
    };
    let a = ZkStore::open(session(&server, "/tether/race").await, None)
        .await
        .unwrap();
    let b = ZkStore::open(session(&server, "/tether/race").await, None)
        .await
        .unwrap();
    a.put("desired", &Value { value: 3u32 }).await.unwrap();
    a.get_table::<Slot>("slots").await.unwrap();

    // Both read the same versions ...
    assert_eq!(
        b.get::<Value<u32>>("desired").await.unwrap(),
        Some(Value { value: 3 })
    );
    b.get_table::<Slot>("slots").await.unwrap();
    // ... the new leader (b) writes first ...
    let mut batch = Batch::new();
    batch.put("desired", &Value { value: 5u32 }).unwrap();
    batch.upsert("slots", "es-data-00000", &slot(0)).unwrap();
    b.commit(batch).await.unwrap();
    // ... so the deposed one (a) loses on both kinds of znode, and stays refused.
    let err = a.put("desired", &Value { value: 4u32 }).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict { path } if path == "/tether/race/state/desired"),
        "{err}"
    );
    assert!(err.is_fatal());
    let err = a.put("other", &Value { value: 1u32 }).await.unwrap_err();
    assert!(matches!(err, StoreError::Poisoned(_)), "{err}");

    let a2 = ZkStore::open(session(&server, "/tether/race").await, None)
        .await
        .unwrap();
    a2.get_table::<Slot>("slots").await.unwrap();
    let c = ZkStore::open(session(&server, "/tether/race").await, None)
        .await
        .unwrap();
    let mut batch = Batch::new();
    batch.upsert("slots", "es-data-00000", &slot(7)).unwrap();
    let err = c.commit(batch).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict { .. }),
        "a create over an existing bucket conflicts: {err}"
    );

    // A fresh open sees the winner's data, and the failed batches left nothing behind.
    assert_eq!(
        a2.get::<Value<u32>>("desired").await.unwrap(),
        Some(Value { value: 5 })
    );
    assert_eq!(a2.get::<Value<u32>>("other").await.unwrap(), None);
    let slots = a2.get_table::<Slot>("slots").await.unwrap();
    assert_eq!(slots.len(), 1);
    assert_eq!(slots["es-data-00000"], slot(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_fenced_by_the_leader_znode() {
    let Some(server) = ZkServer::start_or_skip("writes_are_fenced").await else {
        return;
    };
    let s = session(&server, "/tether/fence").await;
    s.ensure_path("/tether/fence/leader").await.unwrap();
    let member = "/tether/fence/leader/member-x";
    s.client()
        .create(
            member,
            b"{}",
            &zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all()),
        )
        .await
        .unwrap();
    let store = ZkStore::open(s.clone(), Some(Fence::new(member)))
        .await
        .unwrap();
    store.put("desired", &Value { value: 1u32 }).await.unwrap();
    s.client().delete(member, None).await.unwrap();
    let err = store
        .put("desired", &Value { value: 2u32 })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Fenced { .. }), "{err}");
    let check = ZkStore::open(session(&server, "/tether/fence").await, None)
        .await
        .unwrap();
    assert_eq!(
        check.get::<Value<u32>>("desired").await.unwrap(),
        Some(Value { value: 1 })
    );
}
