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
        running.push(start_node(n, V8, &[], &settings(n, &all, &initial, &no_security())).await);
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
    let n2 = start_node(
        &p[1],
        V8,
        &[],
        &settings(&p[1], &all, &initial, &no_security()),
    )
    .await;
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
    let a = start_node(&p[0], V8, &[], &settings(&p[0], &all, &[], &no_security())).await;
    let b = start_node(&p[1], V8, &[], &settings(&p[1], &all, &[], &no_security())).await;
    stays(
        "no cluster without cluster.initial_master_nodes",
        || async { !has_master(&p[0], None).await && !has_master(&p[1], None).await },
    )
    .await;
    a.stop().await;
    b.stop().await;

    // One of three listed nodes is not more than half.
    let initial = ["a", "b", "c"];
    let a = start_node(
        &p[0],
        V8,
        &[],
        &settings(&p[0], &all, &initial, &no_security()),
    )
    .await;
    stays("a alone does not bootstrap", || async {
        !has_master(&p[0], None).await
    })
    .await;
    let (_, root) = get(&p[0], "/", None).await.expect("root");
    assert_eq!(root["cluster_uuid"], "_na_");
    // Two of three are.
    let b = start_node(
        &p[1],
        V8,
        &[],
        &settings(&p[1], &all, &initial, &no_security()),
    )
    .await;
    let uuid = formed(&[&p[0], &p[1]], &["a", "b"], None).await;
    // The third joins the formed cluster (its voting configuration then holds all three).
    let c = start_node(
        &p[2],
        V8,
        &[],
        &settings(&p[2], &all, &initial, &no_security()),
    )
    .await;
    assert_eq!(formed(&all, &initial, None).await, uuid);

    // Restarted with the setting still there, the nodes rejoin their cluster: no second bootstrap.
    for r in [a, b, c] {
        r.stop().await;
    }
    let mut running = Vec::new();
    for n in &p {
        running.push(start_node(n, V8, &[], &settings(n, &all, &initial, &no_security())).await);
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
    let a_run = start_node(a, V8, &[], &settings(a, &[a], &["a1"], &no_security())).await;
    let uuid_a = formed(&[a], &["a1"], None).await;

    let b_all: Vec<&Planned> = bs.iter().collect();
    let b_initial = ["b1", "b2", "b3"];
    let mut b_run = Vec::new();
    for n in bs {
        b_run.push(start_node(n, V8, &[], &settings(n, &b_all, &b_initial, &no_security())).await);
    }
    let uuid_b = formed(&b_all, &b_initial, None).await;
    assert_ne!(uuid_a, uuid_b);
    for r in b_run {
        r.stop().await;
    }

    // b1 comes back pointed at cluster A: it cannot elect (one of three) and A's master cannot take it.
    let b1 = start_node(
        &bs[0],
        V8,
        &[],
        &settings(&bs[0], &[a], &[], &no_security()),
    )
    .await;
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
    let b1 = start_node(
        &wiped,
        V8,
        &[],
        &settings(&wiped, &[a], &[], &no_security()),
    )
    .await;
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
    let tls = |n: &Planned, mode: &str| {
        let mut s = Pki::transport_settings(&n.sandbox.path.join("certs"), mode);
        s.push("xpack.security.enabled=true".into());
        s
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
    let t1 = start_node(
        &p[0],
        V8,
        &env,
        &settings(&p[0], &all, &initial, &tls(&p[0], "full")),
    )
    .await;
    let t2 = start_node(
        &p[1],
        V8,
        &env,
        &settings(&p[1], &all, &initial, &tls(&p[1], "full")),
    )
    .await;
    let t3 = start_node(
        &p[2],
        V8,
        &env,
        &settings(&p[2], &all, &initial, &tls(&p[2], "full")),
    )
    .await;
    let uuid = formed(&[&p[0], &p[1]], &["t1", "t2"], auth).await;
    stays("t3 kept out by its certificate", || async {
        matches!(view(&p[0], auth).await, Some((Some(_), names, _)) if names == ["t1", "t2"])
            && !has_master(&p[2], auth).await
    })
    .await;
    t3.stop().await;

    // Signed by the right CA but for another address: refused under `full`, accepted under `certificate`.
    pki.write_node(&p[2].sandbox.path.join("certs"), "t3", &["10.9.9.9"]);
    let t3 = start_node(
        &p[2],
        V8,
        &env,
        &settings(&p[2], &all, &initial, &tls(&p[2], "full")),
    )
    .await;
    stays("t3 kept out by the name in its certificate", || async {
        matches!(view(&p[0], auth).await, Some((Some(_), names, _)) if names == ["t1", "t2"])
    })
    .await;
    t3.stop().await;
    t1.stop().await;
    t2.stop().await;
    let mut running = Vec::new();
    for n in &p {
        running.push(
            start_node(
                n,
                V8,
                &env,
                &settings(n, &all, &initial, &tls(n, "certificate")),
            )
            .await,
        );
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
    running.push(start_node(&p[2], V8, &[], &settings(&p[2], &olds, &[], &no_security())).await);
    formed(&[&p[0], &p[2]], &["n1", "o1", "o2"], None).await;
    for r in running {
        r.stop().await;
    }

    // A cluster of only 8.x nodes refuses a 7.17 node.
    let new = &p[3];
    let m1 = start_node(
        new,
        V8,
        &[],
        &settings(new, &[new], &["m1"], &no_security()),
    )
    .await;
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
