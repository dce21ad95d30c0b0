//! Real-ZooKeeper tests of leader election: exactly one leader among several, takeover after a leader
//! dies without a goodbye (`kill -9`), and a leader partitioned from ZooKeeper stops acting and is fenced
//! off from the state store.

use std::time::Duration;

use tether_zk::testing::{SimulatedProcess, ZkServer, eventually};
use tether_zk::{
    Batch, Candidate, MemberInfo, Role, StoreError, ZkConfig, ZkSession, ZkStore, campaign,
};

const SESSION: Duration = Duration::from_secs(2);
const DEADLINE: Duration = Duration::from_secs(30);

fn config(server: &ZkServer) -> ZkConfig {
    ZkConfig::new(server.url("/tether/ha")).with_session_timeout(SESSION)
}

/// Joins the election from inside `process`, so killing the process kills the session abruptly.
async fn join(process: &SimulatedProcess, server: &ZkServer, id: &str) -> Candidate {
    let cfg = config(server);
    let info = MemberInfo::now(id, format!("{id}.example:7070"));
    process
        .run(async move {
            let session = ZkSession::connect(&cfg).await.unwrap();
            campaign(&session, info).await.unwrap()
        })
        .await
}

fn leaders(candidates: &[Option<Candidate>]) -> Vec<String> {
    candidates
        .iter()
        .flatten()
        .filter(|c| matches!(*c.role().borrow(), Role::Leader))
        .map(|c| c.info().id.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_candidates_one_leader_and_takeover_after_kill_9() {
    let Some(server) = ZkServer::start_or_skip("three_candidates_takeover").await else {
        return;
    };
    let mut procs: Vec<SimulatedProcess> = (0..3).map(|_| SimulatedProcess::new()).collect();
    let mut cands = Vec::new();
    for (i, p) in procs.iter().enumerate() {
        cands.push(Some(join(p, &server, &format!("sched-{i}")).await));
    }
    assert!(
        eventually(DEADLINE, || async { leaders(&cands).len() == 1 }).await,
        "{:?}",
        leaders(&cands)
    );
    let first = leaders(&cands)[0].clone();
    assert_eq!(first, "sched-0", "the earliest member leads");
    // Followers report who leads, with its admin address.
    assert!(
        eventually(DEADLINE, || async {
            cands[1..]
                .iter()
                .flatten()
                .all(|c| c.leader().map(|l| l.admin_address) == Some("sched-0.example:7070".into()))
        })
        .await
    );

    assert!(
        !cands[0]
            .as_mut()
            .unwrap()
            .elected()
            .await
            .unwrap()
            .is_lost()
    );
    procs[0].kill();
    let dead = cands[0].take();
    std::mem::forget(dead); // its runtime is gone; dropping it would only try to tidy up through a dead session
    assert!(
        eventually(DEADLINE, || async { leaders(&cands) == ["sched-1"] }).await,
        "{:?}",
        leaders(&cands)
    );
    assert!(
        eventually(DEADLINE, || async {
            cands[2].as_ref().unwrap().leader().map(|l| l.id) == Some("sched-1".into())
        })
        .await
    );
    let leadership = cands[1].as_mut().unwrap().elected().await.unwrap();
    assert!(!leadership.is_lost());

    // A graceful resignation hands over at once.
    let resigning = cands[1].take().unwrap();
    resigning.resign().await;
    assert!(
        eventually(DEADLINE, || async { leaders(&cands) == ["sched-2"] }).await,
        "{:?}",
        leaders(&cands)
    );
    assert!(leadership.is_lost());
    drop(procs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_leader_stops_and_is_fenced_off_from_the_store() {
    let Some(mut server) = ZkServer::start_or_skip("partitioned_leader").await else {
        return;
    };
    let session_a = ZkSession::connect(&config(&server)).await.unwrap();
    let mut a = campaign(&session_a, MemberInfo::now("a", "a:7070"))
        .await
        .unwrap();
    let leadership = a.elected().await.unwrap();
    let store_a = ZkStore::open(session_a.clone(), Some(leadership.fence()))
        .await
        .unwrap();
    store_a
        .put("desired", &serde_json::json!({"value": 1}))
        .await
        .unwrap();

    let session_b = ZkSession::connect(&config(&server)).await.unwrap();
    let mut b = campaign(&session_b, MemberInfo::now("b", "b:7070"))
        .await
        .unwrap();
    assert!(
        eventually(DEADLINE, || async {
            b.leader().map(|l| l.id) == Some("a".into())
        })
        .await
    );

    // Partition: the server freezes. The leader must notice and stop on its own.
    server.pause();
    let lost = leadership.lost();
    assert!(
        tokio::time::timeout(DEADLINE, lost.cancelled())
            .await
            .is_ok(),
        "leader did not stop while partitioned from ZooKeeper"
    );
    // `lost` fires first (stop acting before anything else); the role follows right after.
    assert!(
        eventually(DEADLINE, || async {
            matches!(*a.role().borrow(), Role::Lost { .. })
        })
        .await,
        "role did not become Lost after the leadership was lost"
    );
    server.resume();

    // b takes over (a's znode is withdrawn on reconnect or expires with its session) ...
    let lb = tokio::time::timeout(DEADLINE, b.elected())
        .await
        .expect("b elected")
        .unwrap();
    // ... writes with its own fence ...
    let store_b = ZkStore::open(session_b.clone(), Some(lb.fence()))
        .await
        .unwrap();
    let _: Option<serde_json::Value> = store_b.get("desired").await.unwrap();
    store_b
        .put("desired", &serde_json::json!({"value": 2}))
        .await
        .unwrap();
    // ... and the deposed leader can never write again.
    let mut batch = Batch::new();
    batch
        .put("desired", &serde_json::json!({"value": 99}))
        .unwrap();
    let err = store_a.commit(batch).await.unwrap_err();
    assert!(err.is_fatal(), "{err}");
    assert!(
        matches!(err, StoreError::Fenced { .. } | StoreError::Conflict { .. }),
        "{err}"
    );
    let check = ZkStore::open(ZkSession::connect(&config(&server)).await.unwrap(), None)
        .await
        .unwrap();
    assert_eq!(
        check.get::<serde_json::Value>("desired").await.unwrap(),
        Some(serde_json::json!({"value": 2}))
    );
    // a's candidacy is over for good; it would campaign again as a new member.
    assert!(matches!(
        a.elected().await,
        Err(tether_zk::ElectionError::Lost(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_stops_when_the_server_stops_and_one_leader_emerges_after_restart() {
    let Some(mut server) = ZkServer::start_or_skip("server_stop_restart").await else {
        return;
    };
    let cfg = ZkConfig::new(server.url("/tether/ha")).with_session_timeout(Duration::from_secs(4));
    let mut a = campaign(
        &ZkSession::connect(&cfg).await.unwrap(),
        MemberInfo::now("a", "a:1"),
    )
    .await
    .unwrap();
    let leadership = a.elected().await.unwrap();
    let b = campaign(
        &ZkSession::connect(&cfg).await.unwrap(),
        MemberInfo::now("b", "b:1"),
    )
    .await
    .unwrap();
    assert!(
        eventually(DEADLINE, || async {
            b.leader().map(|l| l.id) == Some("a".into())
        })
        .await
    );

    server.stop();
    assert!(
        tokio::time::timeout(DEADLINE, leadership.lost().cancelled())
            .await
            .is_ok(),
        "leader kept acting"
    );
    server.restart().await.unwrap();

    // Like the scheduler's loop: a candidacy that ended is replaced by a fresh one on a new session.
    let mut cands = vec![Some(a), Some(b)];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        for (i, slot) in cands.iter_mut().enumerate() {
            if matches!(*slot.as_ref().unwrap().role().borrow(), Role::Lost { .. }) {
                drop(slot.take());
                let session = ZkSession::connect(&cfg).await.unwrap();
                let id = if i == 0 { "a" } else { "b" };
                *slot = Some(
                    campaign(&session, MemberInfo::now(id, "x:1"))
                        .await
                        .unwrap(),
                );
            }
        }
        let settled = cands
            .iter()
            .flatten()
            .all(|c| !matches!(*c.role().borrow(), Role::Lost { .. }));
        if settled && leaders(&cands).len() == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "leaders after restart: {:?}",
            leaders(&cands)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(leadership.is_lost(), "the old leadership never comes back");
}
