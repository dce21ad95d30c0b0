//! es-standin nodes form real clusters over their transport ports: a master only by a majority of the
//! voting configuration, bootstrapping only from `cluster.initial_master_nodes` and only once, the
//! cluster UUID kept in the data path and another cluster's refused, silent nodes removed by the master's
//! follower checks, and transport TLS that refuses a certificate from another CA.

use std::time::Duration;

use rustix::process::Signal;
use serde_json::Value;
use tether_integration::es_standin::testing::{Pki, Running, Sandbox, request, start};
use tether_integration::process::Proc;
use tether_integration::testing::cluster::SubnetLease;
use tether_integration::testing::eventually;

const V8: &str = "docker.elastic.co/elasticsearch/elasticsearch:8.15.0";
const V7: &str = "docker.elastic.co/elasticsearch/elasticsearch:7.17.22";
const WAIT: Duration = Duration::from_secs(60);
/// How long a negative (nothing forms, nobody joins) is watched: many discovery and election rounds at
/// the intervals of [`FAST`].
const QUIET: Duration = Duration::from_millis(2500);

/// Quick discovery and fault detection (every setting is Elasticsearch's own).
const FAST: [&str; 10] = [
    "discovery.find_peers_interval=100ms",
    "cluster.fault_detection.follower_check.interval=200ms",
    "cluster.fault_detection.follower_check.timeout=500ms",
    "cluster.fault_detection.follower_check.retry_count=2",
    "cluster.fault_detection.leader_check.interval=200ms",
    "cluster.fault_detection.leader_check.timeout=500ms",
    "cluster.fault_detection.leader_check.retry_count=2",
    "cluster.publish.timeout=2s",
    "cluster.election.max_timeout=1s",
    "network.host=127.0.0.1",
];

/// One planned node: its name, ports and sandbox (its task's layer, holding its data path).
struct Planned {
    name: String,
    transport: u16,
    http: u16,
    sandbox: Sandbox,
}

/// Plans `names` on the ports of a lease's block, which no other test process uses while the returned
/// lease is held (ports picked at random and probed free were taken by another test between the probe
/// and the node's bind).
fn plan(names: &[&str]) -> (SubnetLease, Vec<Planned>) {
    let lease = SubnetLease::acquire();
    let base = lease.ports_base();
    let nodes = (0u16..)
        .zip(names)
        .map(|(i, n)| Planned {
            name: (*n).to_owned(),
            transport: base + 2 * i,
            http: base + 2 * i + 1,
            sandbox: Sandbox::new(),
        })
        .collect();
    (lease, nodes)
}

/// The `-E` settings of `node` seeding `seeds`, with `initial` masters and `extra`.
fn settings(node: &Planned, seeds: &[&Planned], initial: &[&str], extra: &[String]) -> Vec<String> {
    let mut s: Vec<String> = FAST.iter().map(|s| (*s).to_owned()).collect();
    s.push(format!("node.name={}", node.name));
    s.push(format!("transport.port={}", node.transport));
    s.push(format!("http.port={}", node.http));
    let seeds: Vec<String> = seeds
        .iter()
        .map(|p| format!("127.0.0.1:{}", p.transport))
        .collect();
    s.push(format!("discovery.seed_hosts={}", seeds.join(",")));
    if !initial.is_empty() {
        s.push(format!(
            "cluster.initial_master_nodes={}",
            initial.join(",")
        ));
    }
    s.extend(extra.iter().cloned());
    s
}

fn no_security() -> Vec<String> {
    vec!["xpack.security.enabled=false".to_owned()]
}

async fn start_node(
    node: &Planned,
    image: &str,
    env: &[(&str, &str)],
    settings: &[String],
) -> Running {
    let s: Vec<&str> = settings.iter().map(String::as_str).collect();
    start(node.sandbox.env(image, env), &s)
        .await
        .unwrap_or_else(|e| panic!("{} starts: {e}", node.name))
}

/// A node of `V8` without security, seeding `seeds`, with `initial` masters.
async fn start_plain(node: &Planned, seeds: &[&Planned], initial: &[&str]) -> Running {
    start_node(
        node,
        V8,
        &[],
        &settings(node, seeds, initial, &no_security()),
    )
    .await
}

/// Credentials for secured nodes.
type Auth<'a> = Option<(&'a str, &'a str)>;

async fn get(node: &Planned, path: &str, auth: Auth<'_>) -> Option<(u16, Value)> {
    request(
        "GET",
        &format!("http://127.0.0.1:{}{path}", node.http),
        None,
        auth,
        None,
    )
    .await
    .ok()
}

/// `(master id, node names, cluster uuid)` as `node` sees the cluster.
async fn view(node: &Planned, auth: Auth<'_>) -> Option<(Option<String>, Vec<String>, String)> {
    let (status, s) = get(node, "/_cluster/state/master_node,nodes", auth).await?;
    if status != 200 {
        return None;
    }
    let mut names: Vec<String> = s["nodes"]
        .as_object()?
        .values()
        .filter_map(|n| n["name"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    Some((
        s["master_node"].as_str().map(str::to_owned),
        names,
        s["cluster_uuid"].as_str()?.to_owned(),
    ))
}

/// Waits until every node of `nodes` has the same elected master and exactly `names`; returns the UUID.
async fn formed(nodes: &[&Planned], names: &[&str], auth: Auth<'_>) -> String {
    let want: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
    eventually(&format!("a cluster of {names:?}"), WAIT, || async {
        let mut seen = Vec::new();
        for n in nodes {
            let (master, names, uuid) = view(n, auth).await?;
            if master.is_none() || names != want || uuid == "_na_" {
                return None;
            }
            seen.push((master, uuid));
        }
        seen.dedup();
        (seen.len() == 1).then(|| seen[0].1.clone())
    })
    .await
    .expect("formed")
}

/// Checks `holds` every 100 ms for [`QUIET`].
async fn stays<F, Fut>(what: &str, mut holds: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + QUIET;
    while tokio::time::Instant::now() < end {
        assert!(holds().await, "expected {what} to hold");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn has_master(node: &Planned, auth: Auth<'_>) -> bool {
    matches!(
        get(node, "/_cluster/health?master_timeout=50ms", auth).await,
        Some((200, _))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_needs_a_majority_of_the_voting_configuration() {
    let (_lease, p) = plan(&["n1", "n2", "n3"]);
    let all: Vec<&Planned> = p.iter().collect();
    let initial = ["n1", "n2", "n3"];
    let mut running = Vec::new();
    for n in &p {
        running.push(start_plain(n, &all, &initial).await);
    }
    let uuid = formed(&all, &initial, None).await;
    let (_, health) = get(&p[0], "/_cluster/health", None).await.expect("health");
    assert_eq!(health["number_of_nodes"], 3, "{health}");

    // Two of three stop: the last one loses its master and cannot elect itself.
    let n1 = running.remove(0);
    for r in running.drain(..) {
        r.stop().await;
    }
    eventually("n1 without a master", WAIT, || async {
        (!has_master(&p[0], None).await).then_some(())
    })
    .await
    .expect("master lost");
    let (status, body) = get(&p[0], "/_cluster/health?master_timeout=100ms", None)
        .await
        .expect("health");
    assert_eq!(
        (status, body["error"]["type"].as_str()),
        (503, Some("master_not_discovered_exception"))
    );
    stays("n1 alone stays without a master", || async {
        !has_master(&p[0], None).await
    })
    .await;

    // One comes back: two of three elect again, in the same cluster.
    let n2 = start_plain(&p[1], &all, &initial).await;
    let again = formed(&[&p[0], &p[1]], &["n1", "n2"], None).await;
    assert_eq!(again, uuid, "the cluster UUID lives in the data paths");
    n1.stop().await;
    n2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrapping_needs_more_than_half_of_the_initial_master_nodes_and_happens_once() {
    let (_lease, p) = plan(&["a", "b", "c"]);
    let all: Vec<&Planned> = p.iter().collect();

    // Seeds alone never bootstrap a cluster.
    let a = start_plain(&p[0], &all, &[]).await;
    let b = start_plain(&p[1], &all, &[]).await;
    stays(
        "no cluster without cluster.initial_master_nodes",
        || async { !has_master(&p[0], None).await && !has_master(&p[1], None).await },
    )
    .await;
    a.stop().await;
    b.stop().await;

    // One of three listed nodes is not more than half.
    let initial = ["a", "b", "c"];
    let a = start_plain(&p[0], &all, &initial).await;
    stays("a alone does not bootstrap", || async {
        !has_master(&p[0], None).await
    })
    .await;
    let (_, root) = get(&p[0], "/", None).await.expect("root");
    assert_eq!(root["cluster_uuid"], "_na_");
    // Two of three are.
    let b = start_plain(&p[1], &all, &initial).await;
    let uuid = formed(&[&p[0], &p[1]], &["a", "b"], None).await;
    // The third joins the formed cluster (its voting configuration then holds all three).
    let c = start_plain(&p[2], &all, &initial).await;
    assert_eq!(formed(&all, &initial, None).await, uuid);

    // Restarted with the setting still there, the nodes rejoin their cluster: no second bootstrap.
    for r in [a, b, c] {
        r.stop().await;
    }
    let mut running = Vec::new();
    for n in &p {
        running.push(start_plain(n, &all, &initial).await);
    }
    assert_eq!(formed(&all, &initial, None).await, uuid, "the same cluster");
    for r in running {
        r.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_of_another_cluster_is_refused_until_its_data_path_is_wiped() {
    let (_lease, p) = plan(&["a1", "b1", "b2", "b3"]);
    let (a, bs) = (&p[0], &p[1..]);
    let a_run = start_plain(a, &[a], &["a1"]).await;
    let uuid_a = formed(&[a], &["a1"], None).await;

    let b_all: Vec<&Planned> = bs.iter().collect();
    let b_initial = ["b1", "b2", "b3"];
    let mut b_run = Vec::new();
    for n in bs {
        b_run.push(start_plain(n, &b_all, &b_initial).await);
    }
    let uuid_b = formed(&b_all, &b_initial, None).await;
    assert_ne!(uuid_a, uuid_b);
    for r in b_run {
        r.stop().await;
    }

    // b1 comes back pointed at cluster A: it cannot elect (one of three) and A's master cannot take it.
    let b1 = start_plain(&bs[0], &[a], &[]).await;
    let (_, root) = get(&bs[0], "/", None).await.expect("root");
    assert_eq!(root["cluster_uuid"], uuid_b, "b1 keeps its cluster's UUID");
    stays("b1 stays out of cluster A", || async {
        matches!(view(a, None).await, Some((Some(_), names, _)) if names == ["a1"])
            && !has_master(&bs[0], None).await
    })
    .await;
    b1.stop().await;

    // The same node with an empty data path joins A.
    let wiped = Planned {
        name: "b1".into(),
        transport: bs[0].transport,
        http: bs[0].http,
        sandbox: Sandbox::new(),
    };
    let b1 = start_plain(&wiped, &[a], &[]).await;
    assert_eq!(formed(&[a, &wiped], &["a1", "b1"], None).await, uuid_a);
    b1.stop().await;
    a_run.stop().await;
}

/// The index in `p` of the elected master, as `p[0]` sees it.
async fn elected(p: &[Planned]) -> usize {
    let (master_id, _, _) = view(&p[0], None).await.expect("view");
    let (_, state) = get(&p[0], "/_cluster/state/nodes", None)
        .await
        .expect("state");
    let master_name = state["nodes"][master_id.as_deref().expect("master")]["name"]
        .as_str()
        .expect("master name")
        .to_owned();
    p.iter()
        .position(|n| n.name == master_name)
        .expect("master planned")
}

/// Auto-creating an index is a master-node action: when the master fails to commit it (here its
/// followers are frozen, so the publication times out and the master steps down) the request waits for
/// the next master and is retried, as `TransportMasterNodeAction` retries on
/// `FailedToCommitClusterStateException` until `master_timeout`; the client sees a slow 201, not an
/// error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_outlives_a_failed_publication_of_its_new_index() {
    let logs = tempfile::tempdir().expect("logs");
    let (_lease, p) = plan(&["w1", "w2", "w3"]);
    let all: Vec<&Planned> = p.iter().collect();
    let initial = ["w1", "w2", "w3"];
    let procs: Vec<Proc> = p
        .iter()
        .map(|n| spawn(n, &settings(n, &all, &initial, &no_security()), logs.path()))
        .collect();
    formed(&all, &initial, None).await;
    let master = elected(&p).await;
    let followers: Vec<usize> = (0..p.len()).filter(|i| *i != master).collect();
    for f in &followers {
        procs[*f].signal(Signal::STOP).expect("SIGSTOP");
    }
    let url = format!("http://127.0.0.1:{}/docs/_doc/1", p[master].http);
    let put = tokio::spawn(async move {
        request(
            "PUT",
            &url,
            Some(&serde_json::json!({ "v": 1 })),
            None,
            None,
        )
        .await
    });
    eventually("the master to step down", WAIT, || async {
        (!has_master(&p[master], None).await).then_some(())
    })
    .await
    .expect("stepped down");
    for f in &followers {
        procs[*f].signal(Signal::CONT).expect("SIGCONT");
    }
    let (status, body) = put.await.expect("the request task").expect("an answer");
    assert_eq!(status, 201, "{body}\n{}", procs[master].log_text());
    formed(&all, &initial, None).await;
    let (status, doc) = get(&p[master], "/docs/_doc/1", None).await.expect("get");
    assert_eq!((status, &doc["_source"]["v"]), (200, &serde_json::json!(1)));
    for mut pr in procs {
        let _ = pr.stop(Duration::from_secs(20)).await;
    }
}

/// The binary, so that it can be frozen with SIGSTOP.
fn spawn(node: &Planned, settings: &[String], logs: &std::path::Path) -> Proc {
    let env: Vec<(String, String)> = node.sandbox.env(V8, &[]).into_iter().collect();
    let args: Vec<String> = settings
        .iter()
        .flat_map(|s| ["-E".to_owned(), s.clone()])
        .collect();
    Proc::spawn("es-standin", &node.name, &args, &env, logs).expect("spawn es-standin")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_master_removes_a_node_that_stops_answering() {
    let logs = tempfile::tempdir().expect("logs");
    let (_lease, p) = plan(&["f1", "f2", "f3"]);
    let all: Vec<&Planned> = p.iter().collect();
    let initial = ["f1", "f2", "f3"];
    let mut procs: Vec<Proc> = p
        .iter()
        .map(|n| spawn(n, &settings(n, &all, &initial, &no_security()), logs.path()))
        .collect();
    formed(&all, &initial, None).await;
    let master = elected(&p).await;
    let victim = (master + 1) % 3;
    let others: Vec<&str> = initial
        .iter()
        .copied()
        .filter(|n| *n != p[victim].name)
        .collect();

    // Frozen: it still accepts connections but answers nothing; the follower checks time out.
    procs[victim].signal(Signal::STOP).expect("SIGSTOP");
    eventually("the frozen node removed", WAIT, || async {
        matches!(view(&p[master], None).await, Some((Some(_), names, _)) if names == others)
            .then_some(())
    })
    .await
    .expect("removed");
    assert!(
        procs[master]
            .log_text()
            .contains("followers check retry count exceeded"),
        "{}",
        procs[master].log_text()
    );
    // Thawed, it finds it was removed and joins again.
    procs[victim].signal(Signal::CONT).expect("SIGCONT");
    formed(&all, &initial, None).await;

    // Killed: its port refuses connections and it is removed at once.
    procs[victim].kill9();
    eventually("the killed node removed", WAIT, || async {
        matches!(view(&p[master], None).await, Some((Some(_), names, _)) if names == others)
            .then_some(())
    })
    .await
    .expect("removed");
    assert!(procs[master].log_text().contains("reason: disconnected"));
    for mut pr in procs {
        let _ = pr.stop(Duration::from_secs(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_tls_refuses_a_certificate_of_another_ca_or_host() {
    let pki = Pki::new("cluster CA");
    let rogue = Pki::new("another CA");
    let (_lease, p) = plan(&["t1", "t2", "t3"]);
    let all: Vec<&Planned> = p.iter().collect();
    let initial = ["t1", "t2"];
    let password = "s3cret";
    let auth = Some(("elastic", password));
    let env = [("ELASTIC_PASSWORD", password)];
    // A node with transport TLS verified as `mode`, and security on.
    let start_tls = async |n: &Planned, mode: &str| {
        let mut tls = Pki::transport_settings(&n.sandbox.path.join("certs"), mode);
        tls.push("xpack.security.enabled=true".into());
        start_node(n, V8, &env, &settings(n, &all, &initial, &tls)).await
    };
    pki.write_node(&p[0].sandbox.path.join("certs"), "t1", &["127.0.0.1"]);
    pki.write_node(&p[1].sandbox.path.join("certs"), "t2", &["127.0.0.1"]);
    // t3 trusts the cluster CA but holds a certificate another CA signed.
    pki.write_foreign_node(
        &rogue,
        &p[2].sandbox.path.join("certs"),
        "t3",
        &["127.0.0.1"],
    );
    let t1 = start_tls(&p[0], "full").await;
    let t2 = start_tls(&p[1], "full").await;
    let t3 = start_tls(&p[2], "full").await;
    let uuid = formed(&[&p[0], &p[1]], &["t1", "t2"], auth).await;
    stays("t3 kept out by its certificate", || async {
        matches!(view(&p[0], auth).await, Some((Some(_), names, _)) if names == ["t1", "t2"])
            && !has_master(&p[2], auth).await
    })
    .await;
    t3.stop().await;

    // Signed by the right CA but for another address: refused under `full`, accepted under `certificate`.
    pki.write_node(&p[2].sandbox.path.join("certs"), "t3", &["10.9.9.9"]);
    let t3 = start_tls(&p[2], "full").await;
    stays("t3 kept out by the name in its certificate", || async {
        matches!(view(&p[0], auth).await, Some((Some(_), names, _)) if names == ["t1", "t2"])
    })
    .await;
    t3.stop().await;
    t1.stop().await;
    t2.stop().await;
    let mut running = Vec::new();
    for n in &p {
        running.push(start_tls(n, "certificate").await);
    }
    assert_eq!(formed(&all, &["t1", "t2", "t3"], auth).await, uuid);
    for r in running {
        r.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_717_cluster_forms_and_an_older_node_cannot_join_a_newer_cluster() {
    let (_lease, p) = plan(&["o1", "o2", "n1", "m1", "o3"]);
    let olds: Vec<&Planned> = vec![&p[0], &p[1]];
    let mut running = Vec::new();
    for n in &olds {
        running.push(start_node(n, V7, &[], &settings(n, &olds, &["o1", "o2"], &[])).await);
    }
    formed(&olds, &["o1", "o2"], None).await;
    let (_, root) = get(&p[0], "/", None).await.expect("root");
    assert_eq!(root["version"]["number"], "7.17.22");
    // An 8.x node may join a 7.17 cluster (a rolling upgrade).
    running.push(start_plain(&p[2], &olds, &[]).await);
    formed(&[&p[0], &p[2]], &["n1", "o1", "o2"], None).await;
    for r in running {
        r.stop().await;
    }

    // A cluster of only 8.x nodes refuses a 7.17 node.
    let new = &p[3];
    let m1 = start_plain(new, &[new], &["m1"]).await;
    formed(&[new], &["m1"], None).await;
    let o3 = start_node(&p[4], V7, &[], &settings(&p[4], &[new], &[], &[])).await;
    stays("the 7.17 node stays out", || async {
        matches!(view(new, None).await, Some((Some(_), names, _)) if names == ["m1"])
    })
    .await;
    o3.stop().await;
    m1.stop().await;
}

/// What a Tether task must give an 8.x node, all through the environment as Tether sets it: production
/// mode (bound to 0.0.0.0), equal heap sizes, discovery, transport TLS with the cluster's CA, the elastic
/// password, and `path.data` on a volume uid 1000 / gid 0 can write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secure_8x_cluster_forms_from_the_environment_alone() {
    let pki = Pki::new("tether cluster CA");
    let (_lease, p) = plan(&["es-1", "es-2", "es-3"]);
    let seeds: Vec<String> = p
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.transport))
        .collect();
    let seeds = seeds.join(",");
    let password = "tether-secret";
    let mut running = Vec::new();
    for n in &p {
        pki.write_node(&n.sandbox.path.join("certs"), &n.name, &["127.0.0.1"]);
        let volume = n.sandbox.volume("data", 1000, 0, 0o770);
        let vars: Vec<(String, String)> = vec![
            ("node.name".into(), n.name.clone()),
            ("cluster.name".into(), "tether".into()),
            ("http.port".into(), n.http.to_string()),
            ("transport.port".into(), n.transport.to_string()),
            ("network.host".into(), "0.0.0.0".into()),
            ("network.publish_host".into(), "127.0.0.1".into()),
            ("discovery.seed_hosts".into(), seeds.clone()),
            (
                "cluster.initial_master_nodes".into(),
                "es-1,es-2,es-3".into(),
            ),
            ("ES_JAVA_OPTS".into(), "-Xms512m -Xmx512m".into()),
            ("path.data".into(), "/data".into()),
            (
                tether_integration::mesos_emu::volume_env_name("/data"),
                volume.display().to_string(),
            ),
            ("ELASTIC_PASSWORD".into(), password.into()),
            ("xpack.security.transport.ssl.enabled".into(), "true".into()),
            (
                "xpack.security.transport.ssl.verification_mode".into(),
                "certificate".into(),
            ),
            (
                "xpack.security.transport.ssl.key".into(),
                "/mnt/mesos/sandbox/certs/node.key".into(),
            ),
            (
                "xpack.security.transport.ssl.certificate".into(),
                "/mnt/mesos/sandbox/certs/node.crt".into(),
            ),
            (
                "xpack.security.transport.ssl.certificate_authorities".into(),
                "/mnt/mesos/sandbox/certs/ca.crt".into(),
            ),
            ("discovery.find_peers_interval".into(), "100ms".into()),
        ];
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        running.push(start_node(n, V8, &vars, &[]).await);
    }
    let auth = Some(("elastic", password));
    let all: Vec<&Planned> = p.iter().collect();
    formed(&all, &["es-1", "es-2", "es-3"], auth).await;
    let (status, _) = get(&p[0], "/", None).await.expect("root");
    assert_eq!(status, 401, "security is on");
    for r in running {
        r.stop().await;
    }
}

// ---- shards, health and the operations API (issue 14) -------------------------------------------

/// Recoveries take long enough here to be seen as INITIALIZING / RELOCATING.
const SLOW_RECOVERY: &str = "es_standin.recovery_time=700ms";

async fn send(node: &Planned, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    request(
        method,
        &format!("http://127.0.0.1:{}{path}", node.http),
        body.as_ref(),
        None,
        None,
    )
    .await
    .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// Starts `names` (all master-eligible data nodes unless `roles` says otherwise) as one cluster.
async fn start_cluster(
    p: &[Planned],
    image: &str,
    roles: &[Option<&str>],
    extra: &[String],
) -> Vec<Running> {
    let all: Vec<&Planned> = p.iter().collect();
    let initial: Vec<&str> = p
        .iter()
        .zip(roles.iter().chain(std::iter::repeat(&None)))
        .filter(|(_, r)| r.is_none_or(|r| r.split(',').any(|x| x == "master")))
        .map(|(n, _)| n.name.as_str())
        .collect();
    let mut running = Vec::new();
    for (i, n) in p.iter().enumerate() {
        let mut s = settings(n, &all, &initial, &no_security());
        if let Some(Some(r)) = roles.get(i) {
            s.push(format!("node.roles={r}"));
        }
        s.extend(extra.iter().cloned());
        running.push(start_node(n, image, &[], &s).await);
    }
    let names: Vec<&str> = p.iter().map(|n| n.name.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    formed(&all, &sorted, None).await;
    running
}

/// `_cat/shards?format=json` rows as `(index, shard, prirep, state, node)`.
async fn shards(node: &Planned) -> Vec<(String, String, String, String, Option<String>)> {
    let (status, rows) = send(
        node,
        "GET",
        "/_cat/shards?format=json&h=index,shard,prirep,state,node",
        None,
    )
    .await;
    assert_eq!(status, 200, "{rows}");
    rows.as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
            (
                s("index"),
                s("shard"),
                s("prirep"),
                s("state"),
                r["node"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

async fn health_is(node: &Planned, query: &str) -> Value {
    let (status, h) = send(node, "GET", &format!("/_cluster/health?{query}"), None).await;
    assert_eq!(status, 200, "{query}: {h}");
    h
}

/// `name → id` from `_cat/nodes?h=id,name&full_id=true&format=json`.
async fn node_ids(node: &Planned) -> std::collections::BTreeMap<String, String> {
    let (_, rows) = send(
        node,
        "GET",
        "/_cat/nodes?h=id,name&full_id=true&format=json",
        None,
    )
    .await;
    rows.as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r["name"].as_str().expect("name").to_owned(),
                r["id"].as_str().expect("id").to_owned(),
            )
        })
        .collect()
}

async fn write_docs(node: &Planned, index: &str, ids: std::ops::Range<u32>) {
    for i in ids {
        let (status, body) = send(
            node,
            "PUT",
            &format!("/{index}/_doc/d{i}"),
            Some(serde_json::json!({ "n": i })),
        )
        .await;
        assert!(matches!(status, 200 | 201), "write d{i}: {body}");
    }
}

async fn read_docs(node: &Planned, index: &str, ids: std::ops::Range<u32>) {
    for i in ids {
        let (status, body) = send(node, "GET", &format!("/{index}/_doc/d{i}"), None).await;
        if status != 200 {
            let (_, st) = send(node, "GET", "/_cluster/state/routing_table,nodes", None).await;
            panic!("read d{i} from {}: {status} {body}\n{st:#}", node.name);
        }
        assert_eq!(&body["_source"]["n"], &serde_json::json!(i));
    }
}

/// Copies only on data nodes, never two of a shard on one node; a write is on every copy (read back
/// through each node after the holder of the primary is gone: the replica was promoted); a node that
/// comes back with its data path recovers its copies, and one that comes back wiped is a new node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_live_on_data_nodes_and_survive_the_loss_of_a_holder() {
    let (_lease, p) = plan(&["m1", "d1", "d2", "d3", "c1"]);
    let roles = [
        Some("master"),
        Some("master,data"),
        Some("master,data"),
        Some("data"),
        Some("[]"),
    ];
    // Placement and recovery only: no rebalancing moves in between the checks.
    let extra = [
        SLOW_RECOVERY.to_owned(),
        "cluster.routing.rebalance.enable=none".to_owned(),
    ];
    let mut running = start_cluster(&p, V8, &roles, &extra).await;
    let (status, created) = send(
        &p[4],
        "PUT",
        "/logs",
        Some(serde_json::json!({ "settings": { "number_of_shards": 3, "number_of_replicas": 1 } })),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["acknowledged"], true);
    let (status, again) = send(&p[4], "PUT", "/logs", None).await;
    assert_eq!(
        (status, again["error"]["type"].as_str()),
        (400, Some("resource_already_exists_exception"))
    );
    // A new index's replicas are seen recovering before the cluster is green.
    eventually("a recovering replica", WAIT, || async {
        let s = shards(&p[0]).await;
        s.iter().any(|r| r.3 == "INITIALIZING").then_some(())
    })
    .await
    .expect("initializing seen");
    let h = health_is(&p[0], "wait_for_status=green&timeout=30s").await;
    assert_eq!(
        (
            h["active_shards"].as_u64(),
            h["number_of_data_nodes"].as_u64()
        ),
        (Some(6), Some(3)),
        "{h}"
    );
    let table = shards(&p[0]).await;
    for shard in ["0", "1", "2"] {
        let holders: Vec<&str> = table
            .iter()
            .filter(|r| r.1 == shard)
            .filter_map(|r| r.4.as_deref())
            .collect();
        assert_eq!(holders.len(), 2, "{table:?}");
        assert_ne!(
            holders[0], holders[1],
            "two copies of shard {shard} on one node"
        );
        assert!(
            holders.iter().all(|h| ["d1", "d2", "d3"].contains(h)),
            "only data nodes hold shards: {table:?}"
        );
    }
    write_docs(&p[4], "logs", 0..20).await;

    // The holder of shard 0's primary stops: its replica is promoted, nothing is lost.
    let victim = table
        .iter()
        .find(|r| r.1 == "0" && r.2 == "p")
        .and_then(|r| r.4.clone())
        .expect("primary of shard 0");
    let vi = p.iter().position(|n| n.name == victim).expect("planned");
    running.remove(vi).stop().await;
    let h = health_is(&p[0], "wait_for_nodes=4&wait_for_status=yellow&timeout=30s").await;
    assert_eq!(h["status"], "yellow", "{h}");
    assert!(h["delayed_unassigned_shards"].as_u64() > Some(0), "{h}");
    let promoted = shards(&p[0]).await;
    assert!(
        promoted
            .iter()
            .filter(|r| r.2 == "p")
            .all(|r| r.3 == "STARTED" && r.4.as_deref() != Some(victim.as_str())),
        "{promoted:?}"
    );
    for reader in [&p[0], &p[4]] {
        read_docs(reader, "logs", 0..20).await;
    }
    write_docs(&p[0], "logs", 20..30).await;

    // Back with its data path: it gets its copies back (recovered from the primaries) at once.
    let all: Vec<&Planned> = p.iter().collect();
    let initial = ["m1", "d1", "d2"];
    let mut s = settings(&p[vi], &all, &initial, &no_security());
    s.push(format!("node.roles={}", roles[vi].expect("roles")));
    s.extend(extra.iter().cloned());
    let back = start_node(&p[vi], V8, &[], &s).await;
    health_is(&p[0], "wait_for_status=green&timeout=30s").await;
    read_docs(&p[vi], "logs", 0..30).await;
    back.stop().await;
    health_is(&p[0], "wait_for_nodes=4&timeout=30s").await;

    // Back wiped (a new node id): it is a new node; the copies it held are rebuilt from the others.
    // From here a departed copy is rebuilt elsewhere after 1s instead of 1m.
    let (status, body) = send(
        &p[0],
        "PUT",
        "/logs/_settings",
        Some(serde_json::json!({ "index": { "unassigned.node_left.delayed_timeout": "1s" } })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let wiped = Planned {
        name: p[vi].name.clone(),
        transport: p[vi].transport,
        http: p[vi].http,
        sandbox: Sandbox::new(),
    };
    let again = start_node(&wiped, V8, &[], &s).await;
    let h = health_is(&p[0], "wait_for_nodes=5&wait_for_status=green&timeout=90s").await;
    assert_eq!(h["number_of_nodes"], 5, "{h}");
    read_docs(&wiped, "logs", 0..30).await;
    again.stop().await;
    for r in running {
        r.stop().await;
    }
}

/// `cluster.routing.allocation.exclude._name` moves copies away (RELOCATING on the way), `enable`
/// holds replicas back, and a null resets a setting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_settings_exclude_nodes_and_limit_allocation() {
    let (_lease, p) = plan(&["s1", "s2", "s3"]);
    let running = start_cluster(&p, V8, &[], &[SLOW_RECOVERY.to_owned()]).await;
    send(
        &p[0],
        "PUT",
        "/idx",
        Some(serde_json::json!({ "settings": { "index": { "number_of_shards": 2, "number_of_replicas": 1 } } })),
    )
    .await;
    health_is(&p[0], "wait_for_status=green&timeout=30s").await;
    write_docs(&p[0], "idx", 0..10).await;

    let (status, body) = send(
        &p[1],
        "PUT",
        "/_cluster/settings",
        Some(serde_json::json!({ "transient": { "cluster.routing.allocation.exclude._name": "s3" } })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["transient"]["cluster"]["routing"]["allocation"]["exclude"]["_name"],
        "s3"
    );
    let h = health_is(
        &p[0],
        "wait_for_no_relocating_shards=true&wait_for_status=green&timeout=30s",
    )
    .await;
    assert_eq!(h["relocating_shards"], 0);
    let table = shards(&p[0]).await;
    assert!(
        table.iter().all(|r| r.4.as_deref() != Some("s3")),
        "{table:?}"
    );
    read_docs(&p[2], "idx", 0..10).await;

    // Unknown settings and bad values are refused.
    let (status, e) = send(
        &p[0],
        "PUT",
        "/_cluster/settings",
        Some(serde_json::json!({ "persistent": { "cluster.routing.allocation.enable": "some" } })),
    )
    .await;
    assert_eq!(
        (status, e["error"]["type"].as_str()),
        (400, Some("illegal_argument_exception"))
    );
    let (status, _) = send(
        &p[0],
        "PUT",
        "/_cluster/settings",
        Some(serde_json::json!({ "persistent": { "no.such.setting": 1 } })),
    )
    .await;
    assert_eq!(status, 400);

    // `primaries`: a new index's replicas wait.
    send(
        &p[0],
        "PUT",
        "/_cluster/settings",
        Some(serde_json::json!({ "persistent": { "cluster": { "routing": { "allocation": { "enable": "primaries" } } } },
                                 "transient": { "cluster.routing.allocation.exclude._name": null } })),
    )
    .await;
    send(&p[0], "PUT", "/later", None).await;
    let (status, h) = send(
        &p[0],
        "GET",
        "/_cluster/health/later?wait_for_status=green&timeout=1500ms",
        None,
    )
    .await;
    assert_eq!((status, h["timed_out"].as_bool()), (408, Some(true)), "{h}");
    assert_eq!(h["unassigned_shards"], 1, "{h}");
    let (_, flat) = send(&p[2], "GET", "/_cluster/settings?flat_settings=true", None).await;
    assert_eq!(
        flat,
        serde_json::json!({ "persistent": { "cluster.routing.allocation.enable": "primaries" }, "transient": {} })
    );
    send(
        &p[0],
        "PUT",
        "/_cluster/settings",
        Some(serde_json::json!({ "persistent": { "cluster.routing.allocation.enable": null } })),
    )
    .await;
    health_is(&p[0], "wait_for_status=green&timeout=30s").await;
    let (status, flushed) = send(&p[0], "POST", "/_flush", None).await;
    assert_eq!(
        (status, flushed["_shards"]["failed"].as_u64()),
        (200, Some(0))
    );
    let (status, _) = send(&p[0], "POST", "/_flush/synced", None).await;
    assert_eq!(status, 400, "synced flush is gone in 8.x");
    for r in running {
        r.stop().await;
    }
}

/// The node shutdown API by node id: `remove` drains the node (STALLED while its copies have nowhere
/// to go, COMPLETE once it holds none), `restart` is COMPLETE at once and keeps its replicas waiting
/// for it while it is away; DELETE clears a record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_shutdown_api_drains_or_waits_for_a_node() {
    let (_lease, p) = plan(&["h1", "h2", "h3"]);
    let mut running = start_cluster(&p, V8, &[], &[SLOW_RECOVERY.to_owned()]).await;
    send(
        &p[0],
        "PUT",
        "/data",
        Some(serde_json::json!({ "settings": { "number_of_shards": 2, "number_of_replicas": 1 } })),
    )
    .await;
    health_is(&p[0], "wait_for_status=green&timeout=30s").await;
    write_docs(&p[0], "data", 0..10).await;
    let ids = node_ids(&p[0]).await;
    let (h3, h2) = (ids["h3"].clone(), ids["h2"].clone());
    let (_, short) = send(&p[0], "GET", "/_cat/nodes?h=id,name&format=json", None).await;
    assert_eq!(
        short[0]["id"].as_str().map(str::len),
        Some(4),
        "ids are abbreviated without full_id: {short}"
    );

    let (status, body) = send(
        &p[0],
        "PUT",
        &format!("/_nodes/{h3}/shutdown"),
        Some(serde_json::json!({ "type": "remove", "reason": "scale down" })),
    )
    .await;
    assert_eq!(
        (status, &body["acknowledged"]),
        (200, &serde_json::json!(true))
    );
    let status_of = |id: String| {
        let node = &p[1];
        async move {
            let (code, b) = send(node, "GET", &format!("/_nodes/{id}/shutdown"), None).await;
            assert_eq!(code, 200, "{b}");
            b["nodes"][0].clone()
        }
    };
    let first = status_of(h3.clone()).await;
    assert_eq!(first["type"], "REMOVE", "{first}");
    assert!(
        first["shutdown_startedmillis"].as_u64().is_some(),
        "{first}"
    );
    let done = eventually("h3 drained", WAIT, || async {
        let s = status_of(h3.clone()).await;
        (s["status"] == "COMPLETE").then_some(s)
    })
    .await
    .expect("complete");
    assert_eq!(done["shard_migration"]["shard_migrations_remaining"], 0);
    assert!(
        shards(&p[0])
            .await
            .iter()
            .all(|r| r.4.as_deref() != Some("h3"))
    );
    health_is(&p[0], "wait_for_status=green&timeout=30s").await;
    // h2 cannot be drained as well: both copies of every shard would have to share h1.
    send(
        &p[0],
        "PUT",
        &format!("/_nodes/{h2}/shutdown"),
        Some(serde_json::json!({ "type": "remove", "reason": "too many" })),
    )
    .await;
    let stalled = status_of(h2.clone()).await;
    assert_eq!(stalled["status"], "STALLED", "{stalled}");
    assert!(stalled["shard_migration"]["shard_migrations_remaining"].as_u64() > Some(0));
    let (_, all) = send(&p[0], "GET", "/_nodes/shutdown", None).await;
    assert_eq!(all["nodes"].as_array().map(Vec::len), Some(2), "{all}");
    for id in [&h2, &h3] {
        let (status, _) = send(&p[0], "DELETE", &format!("/_nodes/{id}/shutdown"), None).await;
        assert_eq!(status, 200);
    }
    let (status, e) = send(&p[0], "DELETE", &format!("/_nodes/{h3}/shutdown"), None).await;
    assert_eq!(
        (status, e["error"]["type"].as_str()),
        (404, Some("resource_not_found_exception"))
    );
    health_is(&p[0], "wait_for_status=green&timeout=30s").await;
    let (status, e) = send(
        &p[0],
        "PUT",
        &format!("/_nodes/{h3}/shutdown"),
        Some(serde_json::json!({ "type": "remove", "reason": "r", "allocation_delay": "10m" })),
    )
    .await;
    assert_eq!(status, 400, "allocation_delay is for restarts only: {e}");

    // restart: COMPLETE at once; while h3 is away its copies wait for it (no rebuild on others).
    send(
        &p[0],
        "PUT",
        &format!("/_nodes/{h3}/shutdown"),
        Some(serde_json::json!({ "type": "restart", "reason": "rolling", "allocation_delay": "20m" })),
    )
    .await;
    let r = status_of(h3.clone()).await;
    assert_eq!(
        (
            r["type"].as_str(),
            r["status"].as_str(),
            r["allocation_delay"].as_str()
        ),
        (Some("RESTART"), Some("COMPLETE"), Some("20m")),
        "{r}"
    );
    // Rebalancing gave the drained node copies again once its record was gone.
    eventually("h3 holds copies again", WAIT, || async {
        let s = shards(&p[0]).await;
        s.iter()
            .any(|r| r.4.as_deref() == Some("h3") && r.3 == "STARTED")
            .then_some(())
    })
    .await
    .expect("rebalanced");
    health_is(&p[0], "wait_for_no_relocating_shards=true&timeout=30s").await;
    let h3_run = running.remove(2);
    h3_run.stop().await;
    let h = health_is(&p[0], "wait_for_nodes=2&timeout=30s").await;
    assert_eq!(h["number_of_nodes"], 2);
    stays("h3's copies wait for it", || async {
        let h = health_is(&p[0], "").await;
        h["status"] == "yellow" && h["initializing_shards"] == 0
    })
    .await;
    let all_p: Vec<&Planned> = p.iter().collect();
    let mut s = settings(&p[2], &all_p, &["h1", "h2", "h3"], &no_security());
    s.push(SLOW_RECOVERY.to_owned());
    running.push(start_node(&p[2], V8, &[], &s).await);
    health_is(&p[0], "wait_for_nodes=3&wait_for_status=green&timeout=30s").await;
    read_docs(&p[2], "data", 0..10).await;
    send(&p[0], "DELETE", &format!("/_nodes/{h3}/shutdown"), None).await;
    for r in running {
        r.stop().await;
    }
}

/// Voting configuration exclusions: the master drops the excluded nodes from the voting configuration
/// (also itself, handing over), they are visible in the cluster state, and DELETE clears them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voting_exclusions_take_nodes_out_of_the_voting_configuration() {
    let (_lease, p) = plan(&["v1", "v2", "v3"]);
    let running = start_cluster(&p, V8, &[], &[]).await;
    let ids = node_ids(&p[0]).await;
    async fn coordination(node: &Planned) -> Value {
        let (_, s) = send(node, "GET", "/_cluster/state/metadata", None).await;
        s["metadata"]["cluster_coordination"].clone()
    }
    let c = coordination(&p[0]).await;
    assert_eq!(
        c["last_committed_config"].as_array().map(Vec::len),
        Some(3),
        "{c}"
    );
    let (status, body) = send(
        &p[1],
        "POST",
        "/_cluster/voting_config_exclusions?node_names=v3",
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // The answer comes once the master committed the new configuration; another node applies that
    // state a moment later, as in Elasticsearch, so it is read once applied.
    let c = eventually("the exclusion applied on v1", WAIT, || async {
        let c = coordination(&p[0]).await;
        let excluded = c["voting_config_exclusions"]
            .as_array()
            .is_some_and(|e| !e.is_empty());
        let v3_votes = c["last_committed_config"]
            .as_array()
            .is_some_and(|v| v.iter().any(|id| id.as_str() == Some(ids["v3"].as_str())));
        (excluded && !v3_votes).then_some(c)
    })
    .await
    .expect("the exclusion in v1's state");
    let committed: Vec<&str> = c["last_committed_config"]
        .as_array()
        .expect("config")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(!committed.contains(&ids["v3"].as_str()), "{c}");
    assert_eq!(
        c["voting_config_exclusions"],
        serde_json::json!([{ "node_id": ids["v3"], "node_name": "v3" }])
    );
    // The excluded master hands over (v3 may have been the master: wait for the current one).
    let master_id = eventually("a master", WAIT, || async {
        let (m, _, _) = view(&p[0], None).await?;
        m
    })
    .await
    .expect("master");
    let (status, body) = send(
        &p[0],
        "POST",
        &format!("/_cluster/voting_config_exclusions?node_ids={master_id}&timeout=30s"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    eventually("another master", WAIT, || async {
        let (m, _, _) = view(&p[0], None).await?;
        m.filter(|m| *m != master_id)
    })
    .await
    .expect("handed over");
    let (status, e) = send(&p[0], "POST", "/_cluster/voting_config_exclusions", None).await;
    assert_eq!(status, 400, "{e}");
    let (status, _) = send(
        &p[0],
        "DELETE",
        "/_cluster/voting_config_exclusions?wait_for_removal=false",
        None,
    )
    .await;
    assert_eq!(status, 200);
    eventually("no exclusion and all three voting again", WAIT, || async {
        let c = coordination(&p[0]).await;
        (c["voting_config_exclusions"] == serde_json::json!([])
            && c["last_committed_config"].as_array().map(Vec::len) == Some(3))
        .then_some(())
    })
    .await
    .expect("three voters");
    for r in running {
        r.stop().await;
    }
}

/// A mixed 7.17 / 8.x cluster: `_cat/nodes` shows each node's version, and a replica never goes to a
/// node older than its primary's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_never_lands_on_an_older_node_than_its_primary() {
    let (_lease, p) = plan(&["o1", "o2", "n1"]);
    let olds: Vec<&Planned> = vec![&p[0], &p[1]];
    let mut running = Vec::new();
    for n in &olds {
        running.push(start_node(n, V7, &[], &settings(n, &olds, &["o1", "o2"], &[])).await);
    }
    formed(&olds, &["o1", "o2"], None).await;
    running.push(start_plain(&p[2], &olds, &[]).await);
    formed(&[&p[0], &p[2]], &["n1", "o1", "o2"], None).await;
    let (_, nodes) = send(
        &p[0],
        "GET",
        "/_cat/nodes?h=name,version,node.role,master&format=json",
        None,
    )
    .await;
    let versions: std::collections::BTreeMap<String, String> = nodes
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap_or("").to_owned(),
                r["version"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(versions["o1"], "7.17.22", "{nodes}");
    assert_eq!(versions["n1"], "8.15.0", "{nodes}");
    // The primary on the 8.x node (the old ones excluded while the index is created).
    send(
        &p[0],
        "PUT",
        "/_cluster/settings",
        Some(serde_json::json!({ "transient": { "cluster.routing.allocation.exclude._name": "o1,o2" } })),
    )
    .await;
    send(&p[0], "PUT", "/mixed", None).await;
    health_is(&p[0], "wait_for_status=yellow&timeout=30s").await;
    send(
        &p[0],
        "PUT",
        "/_cluster/settings",
        Some(serde_json::json!({ "transient": { "cluster.routing.allocation.exclude._name": null } })),
    )
    .await;
    stays("the replica stays unassigned", || async {
        let s = shards(&p[0]).await;
        s.iter()
            .any(|r| r.2 == "p" && r.4.as_deref() == Some("n1") && r.3 == "STARTED")
            && s.iter().any(|r| r.2 == "r" && r.3 == "UNASSIGNED")
    })
    .await;
    let (status, synced) = send(&p[0], "POST", "/_flush/synced", None).await;
    assert_eq!(status, 200, "7.17 still has synced flush: {synced}");
    for r in running {
        r.stop().await;
    }
}

/// The rolling-restart procedure's `cluster.routing.allocation.enable: primaries` (§5 of the fact
/// sheet): the replicas a leaving node held are not rebuilt on another node (the cluster stays yellow
/// even with no `node_left` delay), nor given back when it rejoins; once allocation is reset the
/// returning node recovers its own copy and the cluster is green with every document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_allocation_primaries_a_leaving_nodes_copies_wait_for_the_reset() {
    let (_lease, p) = plan(&["r1", "r2", "r3"]);
    let mut running = start_cluster(&p, V8, &[], &[SLOW_RECOVERY.to_owned()]).await;
    let (status, body) = send(
        &p[0],
        "PUT",
        "/roll",
        Some(serde_json::json!({ "settings": { "number_of_shards": 1, "number_of_replicas": 1 } })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // No `node_left` delay: only `enable` can hold a departed copy back.
    let (status, body) = send(
        &p[0],
        "PUT",
        "/roll/_settings",
        Some(serde_json::json!({ "index": { "unassigned.node_left.delayed_timeout": "0s" } })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    health_is(&p[0], "wait_for_status=green&timeout=30s").await;
    write_docs(&p[0], "roll", 0..10).await;
    let (status, body) = send(
        &p[0],
        "PUT",
        "/_cluster/settings",
        Some(serde_json::json!({ "persistent": { "cluster.routing.allocation.enable": "primaries" } })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, flushed) = send(&p[0], "POST", "/_flush", None).await;
    assert_eq!(status, 200, "{flushed}");

    // The replica's holder leaves; the third node could take a copy, but `primaries` forbids it.
    let table = shards(&p[0]).await;
    let holder = table
        .iter()
        .find(|r| r.2 == "r")
        .and_then(|r| r.4.clone())
        .expect("a replica holder");
    let idle =
        table
            .iter()
            .filter_map(|r| r.4.clone())
            .fold(vec!["r1", "r2", "r3"], |mut left, h| {
                left.retain(|n| *n != h);
                left
            });
    assert_eq!(idle.len(), 1, "{table:?}");
    let hi = p.iter().position(|n| n.name == holder).expect("planned");
    let observer = &p[(hi + 1) % 3];
    running.remove(hi).stop().await;
    let h = health_is(observer, "wait_for_nodes=2&timeout=30s").await;
    assert_eq!(h["status"], "yellow", "{h}");
    stays("the replica is not rebuilt elsewhere", || async {
        let h = health_is(observer, "").await;
        let s = shards(observer).await;
        h["status"] == "yellow"
            && h["initializing_shards"] == 0
            && s.iter().all(|r| r.4.as_deref() != Some(idle[0]))
    })
    .await;
    read_docs(observer, "roll", 0..10).await;

    // Back on its data path: still yellow until allocation is reset.
    let all: Vec<&Planned> = p.iter().collect();
    let mut s = settings(&p[hi], &all, &["r1", "r2", "r3"], &no_security());
    s.push(SLOW_RECOVERY.to_owned());
    let back = start_node(&p[hi], V8, &[], &s).await;
    health_is(observer, "wait_for_nodes=3&timeout=30s").await;
    stays(
        "the returning node's replica waits for the reset",
        || async {
            let h = health_is(observer, "").await;
            h["status"] == "yellow" && h["unassigned_shards"] == 1
        },
    )
    .await;
    let (status, body) = send(
        observer,
        "PUT",
        "/_cluster/settings",
        Some(serde_json::json!({ "persistent": { "cluster.routing.allocation.enable": null } })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    health_is(observer, "wait_for_status=green&timeout=30s").await;
    let table = shards(observer).await;
    assert!(
        table
            .iter()
            .any(|r| r.2 == "r" && r.4.as_deref() == Some(holder.as_str())),
        "the returning node recovers its own copy: {table:?}"
    );
    read_docs(&p[hi], "roll", 0..10).await;
    back.stop().await;
    for r in running {
        r.stop().await;
    }
}

/// A restarted node applies Elasticsearch's initial state until a master publishes one: it serves no
/// document from the state it had before (the cluster may have moved past it), nor its old routing.
/// Here the master-eligible node comes back alone, without a quorum, so it stays so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_serves_nothing_before_a_master_publishes_to_it() {
    let (_lease, p) = plan(&["q1", "q2", "q3"]);
    let running = start_cluster(&p, V8, &[], &[]).await;
    send(
        &p[0],
        "PUT",
        "/kept",
        Some(serde_json::json!({ "settings": { "number_of_shards": 1, "number_of_replicas": 2 } })),
    )
    .await;
    health_is(&p[0], "wait_for_status=green&timeout=30s").await;
    write_docs(&p[0], "kept", 0..3).await;
    for r in running {
        r.stop().await;
    }
    let all: Vec<&Planned> = p.iter().collect();
    let alone = start_plain(&p[0], &all, &["q1", "q2", "q3"]).await;
    let (status, e) = send(&p[0], "GET", "/kept/_doc/d0", None).await;
    assert_eq!(
        (
            status,
            e["error"]["type"].as_str(),
            e["error"]["reason"].as_str()
        ),
        (
            503,
            Some("cluster_block_exception"),
            Some("blocked by: [SERVICE_UNAVAILABLE/1/state not recovered / initialized];")
        ),
        "{e}"
    );
    let (_, nodes) = send(&p[0], "GET", "/_cat/shards?format=json&local=true", None).await;
    assert_eq!(
        nodes,
        serde_json::json!([]),
        "no routing before a master publishes"
    );
    let (status, e) = send(
        &p[0],
        "PUT",
        "/kept/_doc/late?timeout=500ms",
        Some(serde_json::json!({ "n": 1 })),
    )
    .await;
    assert_eq!(
        (status, e["error"]["type"].as_str()),
        (503, Some("cluster_block_exception")),
        "{e}"
    );
    alone.stop().await;
}
