//! `tether-scheduler --restore FILE` into each store: the embedded one and ZooKeeper. A backup loads into
//! an empty store and nothing else; a malformed or wrong-version file, or one that breaks the state's
//! rules, writes nothing at all; a store that holds a framework is refused.

use std::path::Path;

use clap::Parser as _;
use tether_core::testing::sample_state;
use tether_scheduler::args::Args;
use tether_scheduler::backup::{self, Backup};
use tether_scheduler::cluster_ca::ClusterSecrets;
use tether_scheduler::store::StateStore;
use tether_scheduler::store::zk::ZkStateStore;
use tether_zk::testing::ZkServer;
use tether_zk::{ZkConfig, ZkSession, ZkStore};

fn args(state_dir: &Path, extra: &[&str]) -> Args {
    let dir = state_dir.display().to_string();
    let mut argv = vec![
        "tether-scheduler",
        "--master",
        "http://127.0.0.1:1",
        "--state-dir",
        &dir,
        "--es-security",
        "off",
    ];
    argv.extend_from_slice(extra);
    Args::try_parse_from(argv).expect("valid flags")
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write the backup");
    path
}

/// Documents that must be refused before anything is written, with what the refusal must say.
fn bad_documents() -> Vec<(&'static str, String)> {
    let good = serde_json::to_value(Backup::export(
        "elasticsearch",
        &sample_state(),
        None,
        false,
        1,
    ))
    .expect("value");
    let mut newer = good.clone();
    newer["format_version"] = 3.into();
    let mut broken = good.clone();
    // The last slot is valid, the first one names a volume of another node: a partial write would
    // have stored the framework id and the first slots already.
    broken["state"]["slots"]["3"]["volumes"][0] =
        broken["state"]["slots"]["1"]["volumes"][0].clone();
    let mut other = good;
    other["framework_name"] = "another".into();
    vec![
        (
            "not valid JSON",
            "{\"format\": \"tether-state\", ".to_owned(),
        ),
        ("format_version 3", newer.to_string()),
        ("belongs to nodes", broken.to_string()),
        ("framework", other.to_string()),
    ]
}

#[tokio::test]
async fn a_backup_loads_into_an_empty_state_dir_only_and_a_bad_one_writes_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = tmp.path().join("state");
    for (i, (says, text)) in bad_documents().into_iter().enumerate() {
        let file = write(tmp.path(), &format!("bad-{i}.json"), &text);
        let e = backup::restore(&args(&store, &[]), &file)
            .await
            .expect_err(says);
        assert!(e.to_string().contains(says), "{says}: {e}");
        let opened = StateStore::open_file(&store).await.expect("opens");
        assert!(
            opened.is_fresh().expect("readable"),
            "{says}: wrote something"
        );
    }

    // With the secrets: they land in the state directory as the scheduler keeps its own.
    let secrets = ClusterSecrets::load_or_create(tmp.path(), None, None).expect("secrets");
    let doc = Backup::export("elasticsearch", &sample_state(), Some(&secrets), true, 1);
    let file = write(tmp.path(), "good.json", &doc.to_json().expect("json"));
    let restored = backup::restore(&args(&store, &[]), &file)
        .await
        .expect("restores");
    assert_eq!((restored.nodes, restored.desired), (3, 2));
    let opened = StateStore::open_file(&store).await.expect("opens");
    assert_eq!(opened.state().expect("readable"), sample_state());
    drop(opened);
    let kept = ClusterSecrets::load_or_create(&store, None, None).expect("restored secrets");
    assert_eq!(
        (kept.ca_pem(), kept.password()),
        (secrets.ca_pem(), secrets.password())
    );

    // Twice: the store now holds a framework.
    let e = backup::restore(&args(&store, &[]), &file)
        .await
        .expect_err("not empty");
    assert!(
        e.to_string().contains("already holds framework fw-1"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_loads_into_an_empty_zookeeper_root_only() {
    let Some(server) =
        ZkServer::start_or_skip("a_backup_loads_into_an_empty_zookeeper_root_only").await
    else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let url = server.url("/tether/restore").to_string();
    let zk_args = args(&tmp.path().join("local"), &["--state", &url]);
    let load = || async {
        let session = ZkSession::connect(&ZkConfig::new(server.url("/tether/restore")))
            .await
            .expect("session");
        ZkStateStore::load(ZkStore::open(session, None).await.expect("store"))
            .await
            .expect("load")
    };
    for (i, (says, text)) in bad_documents().into_iter().enumerate() {
        let file = write(tmp.path(), &format!("bad-{i}.json"), &text);
        let e = backup::restore(&zk_args, &file).await.expect_err(says);
        assert!(e.to_string().contains(says), "{says}: {e}");
        assert!(load().await.is_fresh(), "{says}: wrote something");
    }
    let doc = Backup::export("elasticsearch", &sample_state(), None, false, 1);
    let file = write(tmp.path(), "good.json", &doc.to_json().expect("json"));
    backup::restore(&zk_args, &file).await.expect("restores");
    assert_eq!(load().await.state(), &sample_state());
    let e = backup::restore(&zk_args, &file)
        .await
        .expect_err("not empty");
    assert!(
        e.to_string().contains("already holds framework fw-1"),
        "{e}"
    );

    // With the secrets: into ZooKeeper beside the state (where the leader looks), not the local directory.
    let secure_url = server.url("/tether/restore-secure").to_string();
    let local = tmp.path().join("local-secure");
    let secure_args = args(&local, &["--state", &secure_url]);
    let secrets = ClusterSecrets::load_or_create(tmp.path(), None, None).expect("secrets");
    let doc = Backup::export("elasticsearch", &sample_state(), Some(&secrets), true, 1);
    let file = write(tmp.path(), "secure.json", &doc.to_json().expect("json"));
    let restored = backup::restore(&secure_args, &file)
        .await
        .expect("restores");
    assert!(
        restored.to_string().contains("es_cluster_secrets"),
        "{restored}"
    );
    let session = ZkSession::connect(&ZkConfig::new(server.url("/tether/restore-secure")))
        .await
        .expect("session");
    let raw = ZkStore::open(session, None).await.expect("store");
    let kept = tether_scheduler::store::cluster_secrets::load_or_create(&raw, &Default::default())
        .await
        .expect("the restored secrets");
    assert_eq!(
        (kept.ca_pem(), kept.password()),
        (secrets.ca_pem(), secrets.password())
    );
    assert!(
        ClusterSecrets::paths(&local).iter().all(|p| !p.exists()),
        "nothing in the local directory"
    );
}
