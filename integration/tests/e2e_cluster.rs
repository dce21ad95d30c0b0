//! End-to-end scenarios with real processes: the workspace's binaries (mesos-emu, fake-rexray,
//! tether-sidecar, tether-scheduler, es-standin) started exactly as an operator would, talking over
//! loopback and unix sockets. Build them first: `cargo build --workspace --bins` (the README's test
//! command does).

use std::collections::BTreeSet;

use serde_json::json;
use tether_integration::es_standin::testing::request;
use tether_integration::testing::cluster::E2eCluster;
use tether_integration::testing::es::{get_doc, put_doc, wait_es};
use tether_integration::testing::scheduler::all_running;

/// (1) and (2): three nodes come up and store a document each; an agent is killed and its node comes back
/// on a surviving agent of the same zone, with the same id and volumes, and its documents are readable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agents_node_comes_back_elsewhere_with_its_data() {
    // Zones alternate a, b, a, b: node 2's volumes are in zone-b, which has a spare agent.
    let c = E2eCluster::start(4, 3, |_| {}).await;
    let es = c.es().await;
    let nodes = c.wait_formed(3).await;
    assert_eq!(nodes.iter().map(|n| n.id).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(
        nodes
            .iter()
            .map(|n| n.host.as_str())
            .collect::<BTreeSet<_>>()
            .len(),
        3
    );
    for n in &nodes {
        wait_es(&es, n).await;
        put_doc(
            &es,
            n,
            &format!("doc-{}", n.id),
            json!({ "written_to": n.id }),
        )
        .await;
    }
    // Bootstrap is what a node reports, not a task reaching RUNNING.
    let uuid = c.wait_cluster_uuid().await;
    assert_ne!(uuid, "_na_");
    let cluster = c
        .admin()
        .await
        .get_cluster(tether_proto::v1::GetClusterRequest {})
        .await
        .expect("status")
        .into_inner();
    assert_eq!(
        cluster.security, "full",
        "the local cluster is secure by default (auto, 8.x)"
    );

    let victim = nodes.iter().find(|n| n.id == 2).expect("node 2").clone();
    // The machine dies: UNREACHABLE after the ping timeout, replaced by storage fencing after the delay.
    c.emu_fault(&format!("agents/{}/kill", victim.agent_id))
        .await;
    let mut c = c;
    c.cluster.kill_sidecar(&victim.host);
    c.cluster.kill_plugin(&victim.host);

    let zone_b: BTreeSet<String> = c
        .cluster
        .plan
        .agents
        .iter()
        .filter(|a| a.zone == "zone-b")
        .map(|a| a.host.clone())
        .collect();
    let after = c
        .wait_nodes("node 2 running on another zone-b agent", |ns| {
            ns.iter()
                .any(|n| n.id == 2 && n.state == "RUNNING" && n.host != victim.host)
        })
        .await;
    let moved = after.iter().find(|n| n.id == 2).expect("node 2");
    assert!(
        zone_b.contains(&moved.host),
        "node 2 stayed in its volumes' zone: {moved:?}"
    );
    assert_ne!(moved.task_id, victim.task_id, "a new task, same node id");
    assert_eq!(moved.volumes, victim.volumes, "same volumes");
    let root = wait_es(&es, moved).await;
    assert_eq!(
        root["data_created_by_node_id"], "2",
        "the data directory is node 2's: {root}"
    );
    // `wait_es` returned once the node had joined a cluster: its own.
    assert_eq!(
        root["cluster_uuid"], uuid,
        "the moved node rejoined its cluster: {root}"
    );
    assert_eq!(c.wait_cluster_uuid().await, uuid, "the stored UUID stays");
    assert_eq!(
        get_doc(&es, moved, "doc-2").await,
        Some(json!({ "written_to": 2 })),
        "data followed the node"
    );
    for n in after.iter().filter(|n| n.id != 2) {
        assert_eq!(
            get_doc(&es, n, &format!("doc-{}", n.id)).await,
            Some(json!({ "written_to": n.id }))
        );
    }
    c.stop().await;
}

/// Security on (issue 12), `full`: every node's key is made on its agent, its CSR signed by the
/// scheduler's cluster CA and installed before the launch; the nodes bootstrap one cluster over mutual
/// TLS, and the scheduler, logging in as `elastic` over HTTPS, confirms it. The HTTP layer speaks TLS only
/// and answers 401 without credentials. Each signing recorded its certificate's expiry (renewal is timed
/// from it), shown by the admin API and `tetherctl nodes`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secure_cluster_forms_over_mutual_tls_with_certificates_the_scheduler_signed() {
    let unix_now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs()
    };
    let before = unix_now();
    let c = E2eCluster::start(3, 3, |o| o.es_security = "full".into()).await;
    let nodes = c.wait_nodes("three running nodes", all_running(3)).await;
    // One year from the signing, cut to the start of that day (UTC).
    const DAY: u64 = 86_400;
    let after = unix_now();
    for n in &nodes {
        let at = n
            .certificate_not_after
            .unwrap_or_else(|| panic!("node {} has no recorded certificate expiry", n.id));
        assert!(
            at > before + 364 * DAY && at <= after + 365 * DAY,
            "node {}: {at} is not a year after {before}",
            n.id
        );
    }
    let listed = c.ctl_json(&["nodes"]).await;
    for n in &nodes {
        let row = listed
            .as_array()
            .and_then(|a| a.iter().find(|r| r["id"] == n.id))
            .unwrap_or_else(|| panic!("node {} in tetherctl nodes: {listed}", n.id));
        assert_eq!(
            row["certificate_not_after"].as_u64(),
            n.certificate_not_after,
            "{row}"
        );
    }
    let uuid = c.wait_cluster_uuid().await;
    assert_ne!(uuid, "_na_");
    // Node 1 serves once it has joined (RUNNING comes before its listener; another node may have
    // reported the UUID first).
    let root = wait_es(&c.es().await, &nodes[0]).await;
    assert_eq!(root["cluster_uuid"], uuid.as_str(), "{root}");
    let state = c.cluster.plan.state.join("scheduler");
    let ca = std::fs::read_to_string(state.join("es-ca.crt")).expect("the cluster CA");
    let password = std::fs::read_to_string(state.join("elastic-password")).expect("the password");
    let password = password.trim();
    let https = format!("https://{}:{}/", nodes[0].host, nodes[0].http_port);
    let http = format!("http://{}:{}/", nodes[0].host, nodes[0].http_port);
    assert!(
        request("GET", &http, None, Some(("elastic", password)), None)
            .await
            .is_err(),
        "security full: plain HTTP gets no answer"
    );
    let (status, _) = request("GET", &https, None, None, Some(&ca))
        .await
        .expect("the node answers over https");
    assert_eq!(status, 401, "security is on: no anonymous access");
    let (status, root) = request("GET", &https, None, Some(("elastic", password)), Some(&ca))
        .await
        .expect("the node answers over https");
    assert_eq!(status, 200, "{root}");
    assert_eq!(root["cluster_uuid"], uuid.as_str(), "{root}");
    let cluster = c
        .admin()
        .await
        .get_cluster(tether_proto::v1::GetClusterRequest {})
        .await
        .expect("status")
        .into_inner();
    assert_eq!(cluster.security, "full", "what tetherctl status shows");
    c.stop().await;
}

/// (5): a node whose data volume is missing stays pending with the reason shown, the others run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_volume_keeps_its_node_pending_with_the_reason() {
    let c = E2eCluster::start(3, 3, |o| {
        o.missing_volumes = vec!["elasticsearch3data".into()]
    })
    .await;
    let nodes = c
        .wait_nodes(
            "nodes 1 and 2 running, node 3 pending with a reason",
            |ns| {
                ns.len() == 3
                    && ns
                        .iter()
                        .filter(|n| n.id != 3)
                        .all(|n| n.state == "RUNNING")
                    && ns.iter().any(|n| {
                        n.id == 3 && n.state == "PENDING" && n.reason.contains("elasticsearch3data")
                    })
            },
        )
        .await;

    // What an operator sees, through the real tetherctl.
    let plan = &c.cluster.plan;
    let out = tokio::process::Command::new(
        tether_integration::process::bin_path("tetherctl").expect("tetherctl"),
    )
    .args(["--scheduler", &plan.scheduler_url(), "--ca-cert"])
    .arg(&plan.tls_ca)
    .arg("--token-file")
    .arg(&plan.admin_token)
    .args(["nodes", "--output", "json"])
    .output()
    .await
    .expect("tetherctl runs");
    assert!(
        out.status.success(),
        "tetherctl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON array");
    let three = listed
        .as_array()
        .and_then(|a| a.iter().find(|n| n["id"] == 3))
        .expect("node 3 listed");
    assert_eq!(three["state"], "PENDING");
    assert_eq!(three["agent"], serde_json::Value::Null);
    assert!(
        three["reason"]
            .as_str()
            .is_some_and(|r| r.contains("elasticsearch3data")),
        "{three}"
    );
    assert_eq!(nodes.iter().filter(|n| n.state == "RUNNING").count(), 2);
    c.stop().await;
}

/// A 7.17 image with security `auto`: below 8 that is `off`, and three stand-ins playing 7.17 form one
/// cluster over plain transport (no identity is prepared, no TLS setting reaches the nodes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_7_17_cluster_with_security_auto_forms_without_tls() {
    let c = E2eCluster::start(3, 3, |o| o.image = "tether/es-standin:7.17.21".into()).await;
    let nodes = c.wait_formed(3).await;
    let uuid = c.wait_cluster_uuid().await;
    assert_ne!(uuid, "_na_");
    let cluster = c
        .admin()
        .await
        .get_cluster(tether_proto::v1::GetClusterRequest {})
        .await
        .expect("status")
        .into_inner();
    assert_eq!(cluster.security, "off", "auto is off below 8");
    let es = c.es().await;
    for n in &nodes {
        let root = wait_es(&es, n).await;
        assert_eq!(root["cluster_uuid"], uuid.as_str(), "{root}");
        assert_eq!(root["version"]["number"], "7.17.21", "{root}");
    }
    // Plain HTTP, no credentials: security is really off on the nodes.
    let n = &nodes[0];
    let (status, health) = request(
        "GET",
        &format!("http://{}:{}/_cluster/health", n.host, n.http_port),
        None,
        None,
        None,
    )
    .await
    .expect("the node answers over plain http");
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["number_of_nodes"], 3, "{health}");
    c.stop().await;
}
