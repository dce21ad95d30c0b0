//! Real-ZooKeeper test of Mesos master detection with emulated masters registering `json.info_` znodes.

use std::time::Duration;

use tether_zk::client as zk;
use tether_zk::testing::{SimulatedProcess, ZkServer, eventually, register_mesos_master};
use tether_zk::{MasterDetector, ZkConfig, ZkSession};

const DEADLINE: Duration = Duration::from_secs(30);

fn config(server: &ZkServer) -> ZkConfig {
    ZkConfig::new(server.url("/mesos")).with_session_timeout(Duration::from_secs(2))
}

async fn register(session: &ZkSession, host: &str, port: u16) -> String {
    register_mesos_master(session, "/mesos", host, port)
        .await
        .expect("register a master")
}

fn current_url(d: &MasterDetector) -> Option<String> {
    d.current().map(|m| m.url())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detector_follows_the_lowest_json_info_znode() {
    let Some(server) = ZkServer::start_or_skip("master_detection").await else {
        return;
    };
    // The detector may start before any master registered (even before /mesos exists).
    let detector = MasterDetector::start(config(&server)).await.unwrap();
    assert_eq!(detector.current(), None);

    let admin = ZkSession::connect(&config(&server)).await.unwrap();
    admin.ensure_path("/mesos").await.unwrap();
    // Noise a real /mesos holds: the replicated log's node and an old binary-protobuf contender.
    admin
        .client()
        .create("/mesos/log_replicas", b"", &admin.persistent_options())
        .await
        .unwrap();
    let opts = zk::CreateMode::PersistentSequential.with_acls(zk::Acls::anyone_all());
    admin
        .client()
        .create("/mesos/info_", b"\x08\x01binary", &opts)
        .await
        .unwrap();

    // Master 1 runs in its own "process" so it can die abruptly; master 2 registers after it.
    let mut m1_proc = SimulatedProcess::new();
    let cfg = config(&server);
    m1_proc
        .run(async move {
            let s = ZkSession::connect(&cfg).await.unwrap();
            register(&s, "m1.test", 5050).await;
            // Keep the session alive inside the process.
            tokio::spawn(async move {
                std::future::pending::<()>().await;
                drop(s)
            });
        })
        .await;
    let m2 = ZkSession::connect(&config(&server)).await.unwrap();
    let m2_path = register(&m2, "m2.test", 5051).await;

    assert_eq!(
        tokio::time::timeout(DEADLINE, detector.leader())
            .await
            .unwrap()
            .url(),
        "http://m1.test:5050"
    );
    assert_eq!(
        current_url(&detector).as_deref(),
        Some("http://m1.test:5050")
    );

    // The leading master dies: its session expires and the detector moves to the next one.
    m1_proc.kill();
    assert!(
        eventually(DEADLINE, || async {
            current_url(&detector).as_deref() == Some("http://m2.test:5051")
        })
        .await,
        "{:?}",
        detector.current()
    );

    // The last master goes away gracefully: no leader.
    m2.client().delete(&m2_path, None).await.unwrap();
    assert!(eventually(DEADLINE, || async { detector.current().is_none() }).await);

    // A new master comes; a subscriber on the watch channel sees it.
    let mut rx = detector.watch();
    let m3 = ZkSession::connect(&config(&server)).await.unwrap();
    register(&m3, "m3.test", 5052).await;
    let seen = tokio::time::timeout(DEADLINE, rx.wait_for(|m| m.is_some()))
        .await
        .unwrap()
        .unwrap()
        .clone();
    assert_eq!(
        seen.map(|m| m.url()).as_deref(),
        Some("http://m3.test:5052")
    );
}
