//! The operator-facing parts of tetherctl against a whole local cluster of real processes: `endpoints`
//! names addresses where the nodes' HTTP answers, once they joined the cluster; the scheduler's
//! operations gauges (leader, subscription, volumes, Elasticsearch health) say what the cluster is; `scale --wait` keeps printing one progress line (or
//! JSON object) per change when stdout is not a terminal, and the admin token file is read from
//! `TETHER_ADMIN_TOKEN_FILE` or, with a deprecation note, from the old `TETHER_TOKEN_FILE`.
//!
//! Build the binaries first (`cargo build --workspace --bins`).

use tether_integration::http_client;
use tether_integration::process::free_port;
use tether_integration::testing::cluster::E2eCluster;
use tether_integration::testing::ctl::tetherctl;
use tether_integration::testing::scheduler::all_running;
use tether_integration::testing::{DEADLINE, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_wait_and_the_token_variables() {
    let metrics = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let c = E2eCluster::start(3, 2, |o| o.scheduler_metrics = Some(metrics)).await;
    c.wait_nodes("two running nodes", all_running(2)).await;
    // Joined: the scheduler's `GET /` of each node named the cluster's UUID.
    let nodes = c
        .wait_nodes("two nodes joined", |n| {
            all_running(2)(n) && n.iter().filter(|n| n.joined).count() == 2
        })
        .await;
    let es = c.es().await;
    let ctl_env = c.tetherctl_env();
    let env: Vec<(&str, &str)> = ctl_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let var = |name: &str| {
        ctl_env
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
            .expect("set")
    };
    let (scheduler, ca, token) = (
        var("TETHER_SCHEDULER"),
        var("TETHER_CA_CERT"),
        var("TETHER_ADMIN_TOKEN_FILE"),
    );

    // endpoints: one address per running node, each answered by that node's Elasticsearch.
    let out = tetherctl(&["--output", "json", "endpoints"], &env).await;
    assert!(out.ok && out.stderr.is_empty(), "{out:?}");
    let endpoints: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    let endpoints = endpoints.as_array().expect("an array");
    assert_eq!(endpoints.len(), 2, "{endpoints:?}");
    for (e, n) in endpoints.iter().zip(&nodes) {
        let address = format!("{}:{}", n.host, n.http_port);
        assert_eq!(e["id"], n.id);
        assert_eq!(e["address"], address.as_str());
        let r = http_client::es_request(&es, http::Method::GET, &n.host, n.http_port, "/", None)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status, 200, "{address}: {}", r.text());
    }
    // The operations metrics of a working cluster: this instance leads, it is subscribed, the sidecars'
    // volume reports are exported per node and volume, and the cluster (no index yet) is green.
    let scrape = || async {
        let reply = http_client::request(
            http::Method::GET,
            &format!("http://{metrics}/metrics"),
            None,
        )
        .await
        .ok()?;
        (reply.status == 200).then(|| reply.text())
    };
    let body = eventually(
        "the cluster's health and volumes in the metrics",
        DEADLINE,
        || async {
            let body = scrape().await?;
            let wanted = [
                "tether_leader 1".to_owned(),
                "tether_mesos_subscribed 1".to_owned(),
                "tether_es_health 0".to_owned(),
            ];
            let volumes = nodes.iter().flat_map(|n| {
                n.volumes.iter().map(move |v| {
                    format!(
                        "tether_volume_free_bytes{{node=\"{}\",volume=\"{v}\"}}",
                        n.id
                    )
                })
            });
            wanted
                .into_iter()
                .chain(volumes)
                .all(|w| body.lines().any(|l| l.starts_with(&w)))
                .then_some(body)
        },
    )
    .await;
    let body = match body {
        Ok(body) => body,
        Err(e) => panic!("{e}\nlast scrape:\n{}", scrape().await.unwrap_or_default()),
    };
    assert!(body.contains("tether_volume_size_bytes{"), "{body}");

    let table = tetherctl(&["endpoints"], &env).await;
    assert!(table.ok, "{table:?}");
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["ID", "ADDRESS"]
    );
    assert_eq!(lines.len(), 3, "{lines:?}");

    // scale --wait, not on a terminal: the plan, then one progress object per change, the last settled.
    // (The cluster's volumes exist for two nodes: down to one and back.)
    let out = tetherctl(
        &[
            "--output",
            "json",
            "scale",
            "1",
            "--wait",
            "--wait-timeout",
            "2m",
        ],
        &env,
    )
    .await;
    assert!(out.ok, "{out:?}");
    let lines: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines[0]["desired"], 1, "{lines:?}");
    assert!(lines.len() >= 2, "{lines:?}");
    for progress in &lines[1..] {
        let keys: Vec<&String> = progress.as_object().expect("object").keys().collect();
        assert_eq!(keys, ["progress"], "{progress}");
    }
    assert_eq!(
        lines.last().expect("a last line")["progress"],
        "1/1 running, 1 live"
    );
    let out = tetherctl(&["scale", "2", "--wait", "--wait-timeout", "2m"], &env).await;
    assert!(out.ok, "{out:?}");
    assert!(out.stdout.starts_with("scaling 1 -> 2"), "{out:?}");
    assert!(
        out.stdout.lines().skip(1).all(|l| l.starts_with("... ")),
        "{out:?}"
    );
    assert_eq!(
        out.stdout.lines().last(),
        Some("... 2/2 running, 2 live"),
        "{out:?}"
    );

    // The deprecated variable still works, with a note; the new one wins when both are set.
    let old = [
        ("TETHER_SCHEDULER", scheduler),
        ("TETHER_CA_CERT", ca),
        ("TETHER_TOKEN_FILE", token),
    ];
    let out = tetherctl(&["status"], &old).await;
    assert!(out.ok, "{out:?}");
    assert!(
        out.stderr.contains("TETHER_TOKEN_FILE is deprecated")
            && out.stderr.contains("TETHER_ADMIN_TOKEN_FILE"),
        "{out:?}"
    );
    let both = [
        ("TETHER_SCHEDULER", scheduler),
        ("TETHER_CA_CERT", ca),
        ("TETHER_ADMIN_TOKEN_FILE", token),
        ("TETHER_TOKEN_FILE", "/nonexistent/old.token"),
    ];
    let out = tetherctl(&["status"], &both).await;
    assert!(out.ok && out.stderr.is_empty(), "{out:?}");
    c.stop().await;
}
