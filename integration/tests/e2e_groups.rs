//! End to end: node groups (`--group`) with the workspace's real binaries. A dedicated master and two
//! data nodes form one Elasticsearch cluster; each node runs with its group's roles on its group's
//! volumes, and `tetherctl` reports the groups. Build the binaries first: `cargo build --workspace --bins`.

use std::collections::BTreeMap;

use http::Method;
use tether_integration::fake_rexray;
use tether_integration::http_client::es_request;
use tether_integration::testing::cluster::E2eCluster;
use tether_integration::testing::ctl::tetherctl;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_group_runs_with_its_roles_on_its_own_volumes() {
    let c = E2eCluster::start(3, 0, |o| {
        o.groups = vec![
            "masters:1:roles=master".to_owned(),
            "data:2:roles=data+ingest:mem=384".to_owned(),
        ];
    })
    .await;
    let nodes = c.wait_formed(3).await;
    let mut by_name: BTreeMap<String, &tether_proto::v1::Node> = BTreeMap::new();
    for n in &nodes {
        let name = n
            .task_id
            .rsplit_once('.')
            .map(|(name, _)| name.to_owned())
            .unwrap_or_default();
        by_name.insert(name, n);
    }
    let names: Vec<(&str, &str, u64)> = by_name
        .iter()
        .map(|(name, n)| (name.as_str(), n.group.as_str(), n.id))
        .collect();
    assert_eq!(
        names,
        vec![
            ("elasticsearch-data-1", "data", 1),
            ("elasticsearch-data-2", "data", 2),
            ("elasticsearch-masters-1", "masters", 1),
        ]
    );

    // Each node's volumes are its group's, attached to the agent it runs on.
    let backend = c.cluster.plan.backend.clone();
    for n in &nodes {
        let want: Vec<String> = ["config", "data"]
            .iter()
            .map(|s| format!("elasticsearch-{}{}{s}", n.group, n.id))
            .collect();
        assert_eq!(n.volumes, want, "node {} of {}", n.id, n.group);
        for v in &n.volumes {
            let meta = fake_rexray::volume_info(&backend, v)
                .expect("backend readable")
                .unwrap_or_else(|| panic!("volume {v} exists"));
            assert_eq!(
                meta.attached_host.as_deref(),
                Some(n.host.as_str()),
                "{v} is attached where node {}/{} runs",
                n.group,
                n.id
            );
        }
    }

    // Elasticsearch itself: every node joined with its group's roles, and the master is the master.
    let es = c.es().await;
    let master = by_name["elasticsearch-masters-1"];
    let state = es_request(
        &es,
        Method::GET,
        &master.host,
        master.http_port,
        "/_cluster/state/master_node,nodes",
        None,
    )
    .await
    .expect("cluster state");
    assert_eq!(state.status, 200, "{}", state.text());
    let state = state.json();
    let mut roles: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut master_name = String::new();
    for (id, n) in state["nodes"].as_object().expect("nodes") {
        let name = n["name"].as_str().expect("name").to_owned();
        let mut r: Vec<String> = n["roles"]
            .as_array()
            .expect("roles")
            .iter()
            .filter_map(|r| r.as_str().map(str::to_owned))
            .collect();
        r.sort();
        if state["master_node"].as_str() == Some(id.as_str()) {
            master_name = name.clone();
        }
        roles.insert(name, r);
    }
    let want: BTreeMap<String, Vec<String>> = [
        ("elasticsearch-data-1", vec!["data", "ingest"]),
        ("elasticsearch-data-2", vec!["data", "ingest"]),
        ("elasticsearch-masters-1", vec!["master"]),
    ]
    .into_iter()
    .map(|(n, r)| (n.to_owned(), r.into_iter().map(str::to_owned).collect()))
    .collect();
    assert_eq!(roles, want);
    assert_eq!(master_name, "elasticsearch-masters-1");

    // tetherctl: the groups in `status`, each node's group in `nodes`.
    let ctl_env = c.tetherctl_env();
    let env: Vec<(&str, &str)> = ctl_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = tetherctl(&["status", "--output", "json"], &env).await;
    assert!(out.ok, "{out:?}");
    let status: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(
        status["groups"],
        serde_json::json!([
            {"name": "masters", "desired": 1, "running": 1},
            {"name": "data", "desired": 2, "running": 2},
        ])
    );
    let out = tetherctl(&["nodes", "--output", "json"], &env).await;
    assert!(out.ok, "{out:?}");
    let listed: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    let groups: Vec<(String, u64)> = listed
        .as_array()
        .expect("array")
        .iter()
        .map(|n| {
            (
                n["group"].as_str().unwrap_or_default().to_owned(),
                n["id"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        groups,
        vec![
            ("masters".to_owned(), 1),
            ("data".to_owned(), 1),
            ("data".to_owned(), 2)
        ]
    );

    // Scaling the data group down stops its highest id only; the master stays.
    let out = tetherctl(&["scale", "--group", "data", "1", "--output", "json"], &env).await;
    assert!(out.ok, "{out:?}");
    let plan: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(
        (&plan["group"], &plan["stop"]),
        (&"data".into(), &serde_json::json!([2]))
    );
    c.wait_nodes("data node 2 stopped", |ns| {
        ns.iter()
            .any(|n| n.group == "data" && n.id == 2 && n.state == "STOPPED")
            && ns
                .iter()
                .filter(|n| n.state == "RUNNING")
                .map(|n| (n.group.as_str(), n.id))
                .eq([("masters", 1), ("data", 1)])
    })
    .await;
}
