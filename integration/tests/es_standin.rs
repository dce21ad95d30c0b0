//! The Elasticsearch stand-in behaves like one node: identity, health counting reachable peers, durable
//! documents, and the data-path lock that refuses a second writer.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use clap::Parser;
use serde_json::{Value, json};
use tether_integration::es_standin::{self, Bound};
use tether_integration::http_client;
use tokio_util::sync::CancellationToken;

fn args(data: &Path, extra: &[&str]) -> es_standin::Args {
    args_as("1", data, extra)
}

fn args_as(node_id: &str, data: &Path, extra: &[&str]) -> es_standin::Args {
    let data = data.to_str().expect("utf-8 temp path");
    let mut argv = vec![
        "es-standin",
        "--http-port",
        "0",
        "--transport-port",
        "0",
        "--data-path",
        data,
        "--node-name",
        "es-1",
        "--node-id",
        node_id,
    ];
    argv.extend_from_slice(extra);
    es_standin::Args::try_parse_from(argv).expect("valid args")
}

async fn start(args: es_standin::Args) -> (Bound, CancellationToken, tokio::task::JoinHandle<()>) {
    let token = CancellationToken::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let run_token = token.clone();
    let task = tokio::spawn(async move {
        es_standin::run(args, run_token, move |b| {
            let _ = tx.send(b);
        })
        .await
        .expect("stand-in runs");
    });
    let bound = rx.await.expect("stand-in binds");
    (bound, token, task)
}

async fn http(method: &str, url: String, body: Option<Value>) -> (u16, Value) {
    let method = method.parse().expect("HTTP method");
    let reply = http_client::request(method, &url, body.as_ref())
        .await
        .expect("stand-in answers");
    (reply.status, reply.json())
}

#[tokio::test]
async fn documents_survive_a_restart_on_the_same_data_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (bound, token, task) = start(args(dir.path(), &[])).await;
    let base = format!("http://{}", bound.http);

    let (status, root) = http("GET", format!("{base}/"), None).await;
    assert_eq!(status, 200);
    assert_eq!(root["name"], "es-1");
    assert_eq!(root["data_created_by_node_id"], "1");

    let (status, put) = http(
        "PUT",
        format!("{base}/logs/_doc/a%201"),
        Some(json!({"msg": "hello"})),
    )
    .await;
    assert_eq!((status, put["result"].as_str()), (201, Some("created")));
    let (status, put) = http(
        "PUT",
        format!("{base}/logs/_doc/a%201"),
        Some(json!({"msg": "again"})),
    )
    .await;
    assert_eq!((status, put["_version"].as_u64()), (200, Some(2)));

    token.cancel();
    task.await.expect("stopped");

    // A relaunched node with another id on the same volume still sees who created the data.
    let (bound, token, task) = start(args_as("7", dir.path(), &[])).await;
    let base = format!("http://{}", bound.http);
    let (status, doc) = http("GET", format!("{base}/logs/_doc/a%201"), None).await;
    assert_eq!(status, 200);
    assert_eq!(doc["_source"], json!({"msg": "again"}));
    let (_, root) = http("GET", format!("{base}/"), None).await;
    assert_eq!(root["data_created_by_node_id"], "1");
    let (status, missing) = http("GET", format!("{base}/logs/_doc/nope"), None).await;
    assert_eq!((status, &missing["found"]), (404, &json!(false)));
    token.cancel();
    task.await.expect("stopped");
}

#[tokio::test]
async fn bad_requests_get_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (bound, token, task) = start(args(dir.path(), &[])).await;
    let base = format!("http://{}", bound.http);
    let (status, e) = http("PUT", format!("{base}/Bad/_doc/1"), Some(json!({}))).await;
    assert_eq!(
        (status, e["error"]["type"].as_str()),
        (400, Some("invalid_index_name_exception"))
    );
    let (status, e) = http("PUT", format!("{base}/ok/_doc/1"), Some(json!([1, 2]))).await;
    assert_eq!(
        (status, e["error"]["type"].as_str()),
        (400, Some("mapper_parsing_exception"))
    );
    let (status, _) = http("DELETE", format!("{base}/ok"), None).await;
    assert_eq!(status, 405);
    token.cancel();
    task.await.expect("stopped");
}

#[tokio::test]
async fn health_counts_reachable_seed_peers() {
    let (a_dir, b_dir) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let (a, a_token, a_task) = start(args(a_dir.path(), &[])).await;
    // One live peer and one address nobody listens on (a port we bound and released).
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let seeds = format!("{},{dead}", a.transport);
    let (b, b_token, b_task) = start(args(b_dir.path(), &["--seed-hosts", &seeds])).await;
    let (status, health) = http("GET", format!("http://{}/_cluster/health", b.http), None).await;
    assert_eq!(status, 200);
    assert_eq!(health["number_of_nodes"], 2);
    assert_eq!(health["unreachable_seed_hosts"], 1);
    assert_eq!(health["status"], "yellow");
    for (token, task) in [(a_token, a_task), (b_token, b_task)] {
        token.cancel();
        task.await.expect("stopped");
    }
}

#[tokio::test]
async fn a_second_process_on_a_held_data_path_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_bound, token, task) = start(args(dir.path(), &[])).await;
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_es-standin"))
            .args(["--http-port", "0", "--transport-port", "0", "--data-path"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output(),
    )
    .await
    .expect("second process exits")
    .expect("spawned");
    assert!(!out.status.success(), "a second writer must be refused");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("locked by another live process"),
        "stderr: {stderr}"
    );
    token.cancel();
    task.await.expect("stopped");
}

/// A node whose volume is force-detached underneath it (another host mounted it with preemption) fails
/// every read and write afterwards, as Elasticsearch fails once its node lock is no longer valid; what
/// it acknowledged before is on the volume, and a node started on the new host runs on it.
#[tokio::test]
async fn a_node_whose_volume_was_preempted_acknowledges_nothing() {
    use tether_integration::fake_rexray::{self, Config, FakeRexray};
    use tether_sidecar::plugin::{PluginAddr, PluginClient};
    let tmp = tempfile::tempdir().expect("tempdir");
    let backend = tmp.path().join("backend");
    fake_rexray::create_volume(&backend, "es1data", 1, "z1").expect("volume");
    let plugin = |host: &str| {
        let mut cfg = Config::new(tmp.path().join(format!("{host}.sock")), &backend, host);
        cfg.preempt = true;
        cfg
    };
    let _a = FakeRexray::serve(plugin("a")).await.expect("plugin a");
    let _b = FakeRexray::serve(plugin("b")).await.expect("plugin b");
    let client =
        |host: &str| PluginClient::new(PluginAddr::Unix(tmp.path().join(format!("{host}.sock"))));
    let at_a = client("a").mount("es1data", "").await.expect("mount on a");
    let (bound, token, task) = start(args(Path::new(&at_a), &[])).await;
    let old = format!("http://{}", bound.http);
    let (status, _) = http(
        "PUT",
        format!("{old}/logs/_doc/before"),
        Some(json!({"v": 1})),
    )
    .await;
    assert_eq!(status, 201);

    let at_b = client("b")
        .mount("es1data", "")
        .await
        .expect("preempting mount on b");
    for (method, path, body) in [
        ("PUT", "logs/_doc/after", Some(json!({"v": 2}))),
        ("GET", "logs/_doc/before", None),
    ] {
        let (status, reply) = http(method, format!("{old}/{path}"), body).await;
        assert_eq!(status, 500, "{method} {path}: {reply}");
        assert_eq!(reply["error"]["type"], "illegal_state_exception");
    }

    let (bound, token_b, task_b) = start(args(Path::new(&at_b), &[])).await;
    let new = format!("http://{}", bound.http);
    let (status, doc) = http("GET", format!("{new}/logs/_doc/before"), None).await;
    assert_eq!((status, &doc["_source"]), (200, &json!({"v": 1})));
    let (status, _) = http("GET", format!("{new}/logs/_doc/after"), None).await;
    assert_eq!(
        status, 404,
        "nothing the preempted node was sent reached the volume"
    );
    for (t, h) in [(token, task), (token_b, task_b)] {
        t.cancel();
        h.await.expect("stopped");
    }
}

/// The cluster state's `master_node` and `nodes`, as Tether reads them.
async fn cluster_state(http_addr: &str) -> (u16, Value) {
    http(
        "GET",
        format!("http://{http_addr}/_cluster/state/master_node,nodes"),
        None,
    )
    .await
}

/// The names the cluster state lists and the master's name.
fn listed(v: &Value) -> (Vec<String>, Option<String>) {
    let nodes = v["nodes"].as_object().cloned().unwrap_or_default();
    let mut names: Vec<String> = nodes
        .values()
        .filter_map(|n| n["name"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    let master = v["master_node"]
        .as_str()
        .and_then(|id| nodes.get(id))
        .and_then(|n| n["name"].as_str().map(str::to_owned));
    (names, master)
}

/// Three stand-ins as processes (only a process can be frozen): the first without seeds, the others
/// seeded with it. All three are listed once they have greeted each other; a frozen one (SIGSTOP: its
/// port accepts, it never answers) and a dead one are not; with two of three gone there is no master.
#[tokio::test]
async fn the_cluster_state_lists_the_nodes_that_answer_and_needs_a_majority() {
    use tether_integration::process::free_port;
    let dirs: Vec<tempfile::TempDir> = (0..3)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let first_transport = format!("127.0.0.1:{}", ports[0].1);
    let mut children = Vec::new();
    for (i, (dir, (http_port, transport_port))) in dirs.iter().zip(&ports).enumerate() {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_es-standin"));
        cmd.args(["--http-port", &http_port.to_string()])
            .args(["--transport-port", &transport_port.to_string()])
            .args(["--node-name", &format!("es-{}", i + 1)])
            .arg("--data-path")
            .arg(dir.path())
            .kill_on_drop(true)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if i > 0 {
            cmd.args(["--seed-hosts", &first_transport]);
        }
        children.push(cmd.spawn().expect("es-standin starts"));
    }
    let first = format!("127.0.0.1:{}", ports[0].0);
    let wait_listed = |want: Vec<&'static str>| {
        let first = first.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            loop {
                if let Ok(Ok(r)) = tokio::time::timeout(
                    Duration::from_secs(5),
                    http_client::get_json(&format!(
                        "http://{first}/_cluster/state/master_node,nodes"
                    )),
                )
                .await
                    && r.0 == 200
                    && listed(&r.1).0 == want
                {
                    return listed(&r.1);
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "never listed {want:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let (_, master) = wait_listed(vec!["es-1", "es-2", "es-3"]).await;
    assert_eq!(master.as_deref(), Some("es-1"));

    let pid = children[2].id().expect("pid").to_string();
    let signal = |sig: &'static str, pid: String| async move {
        tokio::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .await
            .expect("kill runs");
    };
    signal("-STOP", pid.clone()).await;
    wait_listed(vec!["es-1", "es-2"]).await;
    signal("-CONT", pid).await;
    wait_listed(vec!["es-1", "es-2", "es-3"]).await;

    children[1].kill().await.expect("killed");
    children[2].kill().await.expect("killed");
    // Once the presence window has passed without an answer from either.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, reply) = cluster_state(&first).await;
        if status == 503 {
            assert_eq!(reply["error"]["type"], "master_not_discovered_exception");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still a master: {reply}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
