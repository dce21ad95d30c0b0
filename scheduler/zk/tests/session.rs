//! Real-ZooKeeper tests of the harness, sessions, and digest auth with ACLs.

use std::time::Duration;

use tether_zk::client as zk;
use tether_zk::testing::{ZkServer, eventually};
use tether_zk::{DigestCredentials, MemberInfo, ZkConfig, ZkSession, ZkStore, campaign};

fn config(server: &ZkServer, path: &str) -> ZkConfig {
    ZkConfig::new(server.url(path)).with_session_timeout(Duration::from_secs(2))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_stop_restart_and_pause_are_seen_by_a_session() {
    let Some(mut server) = ZkServer::start_or_skip("harness_stop_restart_and_pause").await else {
        return;
    };
    let session = ZkSession::connect(&config(&server, "/t/harness"))
        .await
        .unwrap();
    session.ensure_path(&session.path("a/b")).await.unwrap();
    assert!(
        session
            .client()
            .check_stat("/t/harness/a/b")
            .await
            .unwrap()
            .is_some()
    );

    server.stop();
    assert!(
        eventually(Duration::from_secs(20), || async {
            !session.is_connected()
        })
        .await
    );
    server.restart().await.unwrap();
    assert!(eventually(Duration::from_secs(20), || async { session.is_connected() }).await);
    // Data survived the restart.
    assert!(
        session
            .client()
            .check_stat("/t/harness/a/b")
            .await
            .unwrap()
            .is_some()
    );

    server.pause();
    assert!(
        eventually(Duration::from_secs(20), || async {
            !session.is_connected()
        })
        .await
    );
    server.resume();
    let other = ZkSession::connect(&config(&server, "/t/harness"))
        .await
        .unwrap();
    assert!(
        other
            .client()
            .check_stat("/t/harness/a")
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_acl_keeps_unauthenticated_and_wrong_users_out() {
    let Some(server) = ZkServer::start_or_skip("digest_acl").await else {
        return;
    };
    let creds = DigestCredentials::new("tether", "s3cret").unwrap();
    let owner =
        ZkSession::connect(&config(&server, "/tether/es").with_credentials(Some(creds.clone())))
            .await
            .unwrap();
    assert!(owner.is_authenticated());
    let store = ZkStore::open(owner.clone(), None).await.unwrap();
    store.put("doc", &serde_json::json!({})).await.unwrap();
    let member = campaign(&owner, MemberInfo::now("a", "a:1")).await.unwrap();

    let (acl, _) = owner
        .client()
        .get_acl("/tether/es/state/doc")
        .await
        .unwrap();
    assert_eq!(acl.len(), 1, "{acl:?}");
    assert_eq!(acl[0].scheme(), "digest");
    assert!(acl[0].id().starts_with("tether:"), "{acl:?}");
    assert!(
        !acl[0].id().contains("s3cret"),
        "the ACL holds a hash, not the password"
    );

    let anon = ZkSession::connect(&config(&server, "/tether/es"))
        .await
        .unwrap();
    assert_eq!(
        anon.client()
            .get_data("/tether/es/state/doc")
            .await
            .unwrap_err(),
        zk::Error::NoAuth
    );
    assert_eq!(
        anon.client()
            .list_children("/tether/es/state")
            .await
            .unwrap_err(),
        zk::Error::NoAuth
    );
    assert_eq!(
        anon.client()
            .get_data(member.member_path())
            .await
            .unwrap_err(),
        zk::Error::NoAuth
    );
    assert_eq!(
        anon.client().list_children("/tether/es").await.unwrap_err(),
        zk::Error::NoAuth
    );
    assert_eq!(
        anon.client()
            .set_data("/tether/es/state/doc", b"x", None)
            .await
            .unwrap_err(),
        zk::Error::NoAuth
    );

    let wrong = DigestCredentials::new("tether", "guess").unwrap();
    let intruder = ZkSession::connect(&config(&server, "/tether/es").with_credentials(Some(wrong)))
        .await
        .unwrap();
    assert_eq!(
        intruder
            .client()
            .get_data("/tether/es/state/doc")
            .await
            .unwrap_err(),
        zk::Error::NoAuth
    );

    let friend = ZkSession::connect(&config(&server, "/tether/es").with_credentials(Some(creds)))
        .await
        .unwrap();
    assert_eq!(
        friend
            .client()
            .get_data("/tether/es/state/doc")
            .await
            .unwrap()
            .0,
        b"{}"
    );
    // The ancestor above the root stays open so other frameworks can live beside us.
    assert!(anon.client().list_children("/tether").await.is_ok());
}
