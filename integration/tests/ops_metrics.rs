//! The monitoring files in `deploy/` against the real binaries: every metric the Prometheus alerts
//! (`deploy/prometheus/alerts.yml`) and the Grafana dashboard (`deploy/grafana/tether.json`) use is one
//! that a running tether-scheduler or tether-sidecar exports, and both answer the liveness check on
//! their metrics listener — a standby scheduler too, since leadership is not liveness — and each
//! scheduler's `tether_leader` says whether it leads.
//!
//! Build the binaries first (`cargo build --workspace --bins`). The standby test skips loudly without
//! ZooKeeper unless `TETHER_REQUIRE_ZK=1`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use tether_integration::http_client;
use tether_integration::process::{Proc, free_port};
use tether_integration::testing::scheduler::SchedulerProcess;
use tether_integration::testing::{DEADLINE, eventually};
use tether_proto::v1::GetClusterRequest;
use tether_zk::testing::ZkServer;

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn loopback() -> SocketAddr {
    ([127, 0, 0, 1], free_port()).into()
}

/// `GET path`: the status code and body, or `None` while nothing answers.
async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let reply = http_client::request(http::Method::GET, &format!("http://{addr}{path}"), None)
        .await
        .ok()?;
    Some((reply.status, reply.text()))
}

/// Waits until `addr` serves `path`; panics with `log` after the deadline.
async fn wait_get(addr: SocketAddr, path: &str, proc: &Proc) -> (u16, String) {
    eventually(
        &format!("{} to serve {path}", proc.label()),
        DEADLINE,
        || get(addr, path),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}; log:\n{}", proc.log_text()))
}

/// The sample names an exposition can contain, from its `# TYPE` lines (a family with no children yet
/// has no samples, but its type line is there): counters end in `_total`, histograms have `_bucket`,
/// `_sum` and `_count`.
fn exported_names(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        let mut words = line.split_whitespace();
        if (words.next(), words.next()) != (Some("#"), Some("TYPE")) {
            continue;
        }
        let (Some(name), Some(kind)) = (words.next(), words.next()) else {
            continue;
        };
        match kind {
            "counter" => {
                names.insert(format!("{name}_total"));
            }
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
            _ => {
                names.insert(name.to_owned());
            }
        }
    }
    names
}

/// Tether's metric names (`tether_…`) in PromQL text.
fn tether_names(promql: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = promql;
    while let Some(at) = rest.find("tether_") {
        let preceded_by_word = rest[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if !preceded_by_word {
            names.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

/// Every `expr` string in the dashboard's JSON (panel targets).
fn dashboard_queries(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match v {
                    serde_json::Value::String(s) if k == "expr" => out.push(s.clone()),
                    _ => dashboard_queries(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| dashboard_queries(v, out)),
        _ => {}
    }
}

/// The metric names the alerts and the dashboard use, with the file each comes from.
fn used_names() -> Vec<(String, &'static str)> {
    let alerts =
        std::fs::read_to_string(repo_file("deploy/prometheus/alerts.yml")).expect("alerts");
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo_file("deploy/grafana/tether.json")).expect("dashboard"),
    )
    .expect("dashboard JSON");
    let mut queries = Vec::new();
    dashboard_queries(&dashboard, &mut queries);
    assert!(queries.len() > 10, "the dashboard has queries: {queries:?}");
    let mut used: Vec<(String, &'static str)> = tether_names(&alerts)
        .into_iter()
        .map(|n| (n, "deploy/prometheus/alerts.yml"))
        .collect();
    used.extend(
        tether_names(&queries.join("\n"))
            .into_iter()
            .map(|n| (n, "deploy/grafana/tether.json")),
    );
    used
}

/// The scheduler's and the sidecar's registries with one child in every labelled family.
fn families_with_a_child() -> String {
    use tether_sidecar::plugin::{CallObserver, Method};
    let scheduler = tether_scheduler::metrics::Metrics::new();
    scheduler.declined(tether_core::ReasonKind::VolumeMissing, 1);
    scheduler.set_volumes(&[tether_core::view::VolumeView {
        name: tether_core::ids::VolumeName::new("es1data").expect("volume name"),
        node_id: tether_core::ids::NodeId(1),
        group: "default".into(),
        exists: Some(true),
        size_bytes: Some(100),
        free_bytes: Some(50),
        zone: None,
        attached_to: Vec::new(),
        last_error: None,
    }]);
    scheduler.set_certificate_expiries([("default", tether_core::ids::NodeId(1), 1_900_000_000)]);
    let sidecar = tether_sidecar::metrics::SidecarMetrics::new();
    sidecar.observe(Method::Get, std::time::Duration::from_millis(1), false);
    scheduler.encode() + &tether_telemetry::encode(&sidecar.registry)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_alerts_and_dashboard_use_is_exported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (listen, sched_metrics, side_metrics) = (loopback(), loopback(), loopback());
    // No Mesos master answers: the scheduler keeps retrying, which is all this test needs of it.
    let scheduler_args: Vec<String> = [
        "--master",
        &format!("http://127.0.0.1:{}", free_port()),
        "--listen",
        &listen.to_string(),
        "--metrics-listen",
        &sched_metrics.to_string(),
        "--state-dir",
        &dir.path().join("state").display().to_string(),
        "--es-security",
        "off",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let scheduler = Proc::spawn(
        "tether-scheduler",
        "scheduler",
        &scheduler_args,
        &[],
        dir.path(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // A driver that is nowhere: the sidecar reports it unhealthy and keeps running.
    let plugins = dir.path().join("plugins").display().to_string();
    let sidecar_args: Vec<String> = [
        "--scheduler",
        &format!("http://{listen}"),
        "--driver",
        "nowhere",
        "--plugin-dir",
        &plugins,
        "--spec-dir",
        &plugins,
        "--hostname",
        "ops-metrics-agent",
        "--state-file",
        &dir.path().join("sidecar.json").display().to_string(),
        "--metrics-listen",
        &side_metrics.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let sidecar = Proc::spawn("tether-sidecar", "sidecar", &sidecar_args, &[], dir.path())
        .unwrap_or_else(|e| panic!("{e}"));

    let mut exported = BTreeSet::new();
    for (proc, addr) in [(&scheduler, sched_metrics), (&sidecar, side_metrics)] {
        let (status, body) = wait_get(addr, "/metrics", proc).await;
        assert_eq!(status, 200, "{}: {body}", proc.label());
        exported.extend(exported_names(&body));
        let (status, body) = wait_get(addr, "/live", proc).await;
        assert_eq!((status, body.as_str()), (200, "live\n"), "{}", proc.label());
        let (status, _) = wait_get(addr, "/nothing-here", proc).await;
        assert_eq!(status, 404, "{}", proc.label());
    }
    // A labelled family appears in an exposition only once it has a child, which idle processes do not
    // create (no offers declined, no driver called); the same registries, encoded in-process with one
    // child each, complete the list.
    exported.extend(exported_names(&families_with_a_child()));
    // The extraction itself works: names of both binaries are found on both sides.
    for name in [
        "tether_nodes_desired",
        "tether_leader",
        "tether_volume_free_bytes",
        "tether_offers_declined_total",
        "tether_sidecar_plugin_call_seconds_bucket",
    ] {
        assert!(exported.contains(name), "{name} not in {exported:?}");
    }
    let used = used_names();
    assert!(
        used.iter().any(|(n, _)| n == "tether_sidecars_connected"),
        "{used:?}"
    );
    let missing: Vec<String> = used
        .iter()
        .filter(|(name, _)| !exported.contains(name))
        .map(|(name, file)| format!("{name} (in {file})"))
        .collect();
    assert!(
        missing.is_empty(),
        "used but not exported: {missing:?}\nexported: {exported:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_scheduler_passes_the_liveness_check() {
    let Some(zk) = ZkServer::start_or_skip("a_standby_scheduler_passes_the_liveness_check").await
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let master = format!("http://127.0.0.1:{}", free_port());
    let state = format!("zk://{}/tether/ops-live", zk.connect_string());
    let mut schedulers = Vec::new();
    for label in ["first", "second"] {
        let metrics = loopback();
        let metrics_flag = metrics.to_string();
        let s = SchedulerProcess::spawn(
            label,
            &master,
            &[
                "--state",
                &state,
                "--zk-session-timeout",
                "2s",
                "--metrics-listen",
                &metrics_flag,
            ],
            dir.path(),
        );
        schedulers.push((s, metrics));
    }
    // One leads, the other stands by; which is which does not matter.
    let mut leaders = Vec::new();
    for (s, _) in &mut schedulers {
        let admin = s.admin().await;
        let leads = eventually("the election to settle", DEADLINE, || {
            let mut admin = admin.clone();
            async move {
                let c = admin
                    .get_cluster(GetClusterRequest {})
                    .await
                    .ok()?
                    .into_inner();
                (c.leader || !c.leader_address.is_empty()).then_some(c.leader)
            }
        })
        .await
        .expect("an answer");
        leaders.push(leads);
    }
    leaders.sort();
    assert_eq!(leaders, [false, true], "one leader and one standby");
    let mut leader_gauges = Vec::new();
    for (s, metrics) in &schedulers {
        let (status, body) = wait_get(*metrics, "/live", &s.proc).await;
        assert_eq!(
            (status, body.as_str()),
            (200, "live\n"),
            "{}",
            s.proc.label()
        );
        let (_, body) = wait_get(*metrics, "/metrics", &s.proc).await;
        leader_gauges.push(
            body.lines()
                .find_map(|l| l.strip_prefix("tether_leader "))
                .map(str::to_owned)
                .unwrap_or_else(|| panic!("no tether_leader in\n{body}")),
        );
    }
    // Each instance says whether it leads: the leader 1, the standby 0 (alert TetherNoLeader).
    leader_gauges.sort();
    assert_eq!(leader_gauges, ["0", "1"]);
}
