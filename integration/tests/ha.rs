//! High availability with a real ZooKeeper (`tether_zk::testing::ZkServer`), the Mesos emulator and real
//! `tether-scheduler` processes: ZooKeeper state through the scheduler, one active scheduler among
//! several, fail-over after kill -9, a leader cut off from ZooKeeper, the version-conflict path, and
//! Mesos master detection through `json.info_` znodes.
//!
//! Build the binary first: `cargo build -p tether-scheduler`. Skips loudly without ZooKeeper unless
//! `TETHER_REQUIRE_ZK=1`.

use std::collections::BTreeMap;
use std::time::Duration;

use tether_integration::dev::chaos::node_of_task;
use tether_integration::mesos_emu::{EmuConfig, EmuHandle, MesosEmu};
use tether_integration::testing::scheduler::{SchedulerProcess, all_running, wait_nodes};
use tether_integration::testing::{DEADLINE, eventually};
use tether_proto::v1::{Cluster, GetClusterRequest, ListNodesRequest, ScaleRequest};
use tether_zk::testing::{ZkServer, register_mesos_master};
use tether_zk::{ZkConfig, ZkSession, ZkStore};

/// Session timeout of the schedulers' ZooKeeper sessions: short, so fail-over tests stay quick (the test
/// server's tickTime of 200 ms allows 0.4..4 s).
const SESSION: &str = "2s";

/// ZooKeeper for test `test` (`None`: skipped, as `ZkServer::start_or_skip` says), an emulator of `agents`
/// agents, and a temp dir.
async fn zk_and_emulator(
    test: &str,
    agents: usize,
) -> Option<(ZkServer, EmuHandle, tempfile::TempDir)> {
    let zk = ZkServer::start_or_skip(test).await?;
    let emu = MesosEmu::start(EmuConfig::fast(agents))
        .await
        .expect("emulator");
    Some((zk, emu, tempfile::tempdir().expect("tempdir")))
}

fn zk_flags(server: &ZkServer, path: &str) -> Vec<String> {
    vec![
        "--state".into(),
        format!("zk://{}{path}", server.connect_string()),
        "--zk-session-timeout".into(),
        SESSION.into(),
        "--startup-grace".into(),
        "500ms".into(),
    ]
}

fn spawn(
    label: &str,
    master: &str,
    flags: &[String],
    extra: &[&str],
    dir: &std::path::Path,
) -> SchedulerProcess {
    let mut all: Vec<&str> = flags.iter().map(String::as_str).collect();
    all.extend_from_slice(extra);
    SchedulerProcess::spawn(label, master, &all, dir)
}

async fn cluster(s: &mut SchedulerProcess) -> Option<Cluster> {
    let mut admin = s.admin().await;
    admin
        .get_cluster(GetClusterRequest {})
        .await
        .ok()
        .map(|r| r.into_inner())
}

/// Live (non-terminal) tasks per node id, as the emulator sees them.
fn live_by_node(emu: &EmuHandle) -> BTreeMap<u64, Vec<String>> {
    let mut by_node: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for t in emu.tasks() {
        if !t.state.is_terminal()
            && let Some(node) = node_of_task(&t.task_id)
        {
            by_node.entry(node).or_default().push(t.task_id);
        }
    }
    by_node
}

fn assert_no_duplicates(emu: &EmuHandle) {
    let live = live_by_node(emu);
    assert!(
        live.values().all(|tasks| tasks.len() <= 1),
        "at most one live task per node id: {live:?}"
    );
}

fn framework_ids(emu: &EmuHandle) -> Vec<String> {
    emu.state()["frameworks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["id"].as_str().map(str::to_owned))
        .collect()
}

/// The gRPC health status of `tether.v1.Admin` on `s`.
async fn admin_health(
    s: &SchedulerProcess,
) -> tonic_health::pb::health_check_response::ServingStatus {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", s.listen))
        .expect("url")
        .connect()
        .await
        .expect("connect");
    tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: "tether.v1.Admin".into(),
        })
        .await
        .expect("health check")
        .into_inner()
        .status()
}

/// Waits until exactly one of `schedulers` says it leads; returns its index. The others must be
/// standbys naming it.
async fn the_leader(schedulers: &mut [&mut SchedulerProcess]) -> usize {
    let mut last = Vec::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        last.clear();
        for s in schedulers.iter_mut() {
            last.push(cluster(s).await);
        }
        let leaders: Vec<usize> = (0..last.len())
            .filter(|i| last[*i].as_ref().is_some_and(|c| c.leader))
            .collect();
        if let [i] = leaders[..] {
            let address = schedulers[i].address();
            // Every instance, the leader included, names the leader's admin address.
            let standbys_agree = last
                .iter()
                .all(|c| c.as_ref().is_some_and(|c| c.leader_address == address));
            if standbys_agree {
                return i;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never exactly one leader with standbys naming it: {last:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `count` schedulers sharing one ZooKeeper state path, each wanting `nodes` nodes; returns them and the
/// index of the one that leads.
async fn candidates(
    zk: &ZkServer,
    emu: &EmuHandle,
    dir: &std::path::Path,
    count: usize,
    nodes: usize,
) -> (Vec<SchedulerProcess>, usize) {
    let flags = zk_flags(zk, "/tether/es");
    let nodes = nodes.to_string();
    let mut s: Vec<SchedulerProcess> = (0..count)
        .map(|i| {
            spawn(
                &format!("sched{i}"),
                &emu.url(),
                &flags,
                &["--nodes", &nodes],
                dir,
            )
        })
        .collect();
    let leader = leader_of(&mut s).await;
    (s, leader)
}

async fn leader_of(schedulers: &mut [SchedulerProcess]) -> usize {
    let mut refs: Vec<&mut SchedulerProcess> = schedulers.iter_mut().collect();
    the_leader(&mut refs).await
}

/// Stops `s[leader]` with SIGTERM (a clean stop) and waits for the next leader among the rest; returns
/// the stopped one and the new leader's index.
async fn stop_the_leader(
    s: &mut Vec<SchedulerProcess>,
    leader: usize,
) -> (SchedulerProcess, usize) {
    let mut old = s.remove(leader);
    let status = old.proc.stop(DEADLINE).await.expect("stops on SIGTERM");
    assert!(status.success(), "clean stop: {}", old.proc.log_text());
    let next = leader_of(s).await;
    (old, next)
}

/// Waits until the emulator `emu` sees framework `fw` subscribed (`connected`) or not.
async fn wait_subscription(emu: &EmuHandle, fw: &str, connected: bool, what: &str) {
    eventually(what, DEADLINE, || {
        let now = emu.framework_connected(fw) == connected;
        async move { now.then_some(()) }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

/// The scheduler's state in ZooKeeper, read as another client (with `credentials`, or anonymously).
async fn state_store(zk: &ZkServer, credentials: Option<tether_zk::DigestCredentials>) -> ZkStore {
    let session =
        ZkSession::connect(&ZkConfig::new(zk.url("/tether/es")).with_credentials(credentials))
            .await
            .expect("session");
    ZkStore::open(session, None).await.expect("store")
}

fn task_ids(nodes: &[tether_proto::v1::Node]) -> Vec<String> {
    nodes.iter().map(|n| n.task_id.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_round_trips_through_zookeeper() {
    let Some((zk, emu, dir)) = zk_and_emulator("the_state_round_trips_through_zookeeper", 2).await
    else {
        return;
    };
    let flags = zk_flags(&zk, "/tether/es");
    let mut s = spawn("sched", &emu.url(), &flags, &["--nodes", "2"], dir.path());
    let mut admin = s.admin().await;
    let before = wait_nodes(&mut admin, "two running nodes", all_running(2)).await;
    let status = s.proc.stop(DEADLINE).await.expect("stops on SIGTERM");
    assert!(status.success(), "clean stop: {}", s.proc.log_text());

    // What is in ZooKeeper is documented JSON matching what the scheduler reported.
    let raw = state_store(&zk, None).await;
    let fw: Option<serde_json::Value> = raw.get("framework_id").await.expect("get");
    assert_eq!(
        fw.as_ref()
            .and_then(|v| v["value"].as_str())
            .map(str::to_owned),
        framework_ids(&emu).first().cloned()
    );
    let desired: Option<serde_json::Value> = raw.get("desired").await.expect("get");
    assert_eq!(desired, Some(serde_json::json!({"value": 2})));
    let slots: BTreeMap<String, serde_json::Value> = raw.get_table("slots").await.expect("table");
    for n in &before {
        assert_eq!(
            slots[&n.id.to_string()]["task"]["task_id"].as_str(),
            Some(n.task_id.as_str()),
            "slot {} in ZooKeeper: {slots:#?}",
            n.id
        );
    }

    // A new process loads it: same framework, same tasks, nothing relaunched.
    let mut s = spawn(
        "sched-again",
        &emu.url(),
        &flags,
        &["--nodes", "5"],
        dir.path(),
    );
    let mut admin = s.admin().await;
    let after = wait_nodes(&mut admin, "the same two nodes", all_running(2)).await;
    assert_eq!(task_ids(&before), task_ids(&after));
    assert_eq!(
        framework_ids(&emu).len(),
        1,
        "resubscribed with the stored id"
    );
    assert_no_duplicates(&emu);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_three_schedulers_acts_and_another_takes_over_after_kill_9() {
    let Some((zk, emu, dir)) = zk_and_emulator(
        "one_of_three_schedulers_acts_and_another_takes_over_after_kill_9",
        3,
    )
    .await
    else {
        return;
    };
    let (mut s, leader) = candidates(&zk, &emu, dir.path(), 3, 3).await;

    let mut admin = s[leader].admin().await;
    let before = wait_nodes(&mut admin, "three running nodes", all_running(3)).await;
    let frameworks = framework_ids(&emu);
    assert_eq!(
        frameworks.len(),
        1,
        "only the leader subscribed: {frameworks:?}"
    );
    assert_no_duplicates(&emu);

    // Standbys say who leads and refuse what only the leader may do.
    let standby = (leader + 1) % 3;
    let mut standby_admin = s[standby].admin().await;
    let write = standby_admin
        .scale(ScaleRequest {
            nodes: 4,
            ..Default::default()
        })
        .await
        .expect_err("a standby refuses writes");
    assert_eq!(write.code(), tonic::Code::FailedPrecondition);
    assert!(
        write.message().contains(&s[leader].address()),
        "names the leader: {}",
        write.message()
    );
    let read = standby_admin
        .list_nodes(ListNodesRequest {})
        .await
        .expect_err("a standby does not serve node lists");
    assert_eq!(read.code(), tonic::Code::Unavailable);
    // Health checks route a proxy to the leader: only its admin service is SERVING.
    use tonic_health::pb::health_check_response::ServingStatus;
    assert_eq!(admin_health(&s[leader]).await, ServingStatus::Serving);
    assert_eq!(admin_health(&s[standby]).await, ServingStatus::NotServing);

    let killed_at = std::time::Instant::now();
    s[leader].proc.kill9();
    let old = s.remove(leader);
    let next = leader_of(&mut s).await;
    assert_ne!(s[next].address(), old.address());
    let mut admin = s[next].admin().await;
    let after = wait_nodes(
        &mut admin,
        "three running nodes after fail-over",
        all_running(3),
    )
    .await;
    let fw = frameworks[0].clone();
    wait_subscription(
        &emu,
        &fw,
        true,
        "the new leader subscribed with the same framework id",
    )
    .await;
    // A figure for the docs, not an assertion: about the session timeout plus one subscription.
    eprintln!(
        "fail-over: kill -9 of the leader to the new leader's subscription took {:?} (session timeout {SESSION})",
        killed_at.elapsed()
    );
    assert_eq!(
        framework_ids(&emu),
        frameworks,
        "same framework, no second one"
    );
    assert_eq!(
        task_ids(&before),
        task_ids(&after),
        "the running tasks were kept, not relaunched"
    );
    assert_no_duplicates(&emu);
    assert_eq!(live_by_node(&emu).len(), 3, "every node has its task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_zookeeper_stops_acting() {
    let Some((mut zk, emu, dir)) =
        zk_and_emulator("a_leader_cut_off_from_zookeeper_stops_acting", 3).await
    else {
        return;
    };
    let flags = zk_flags(&zk, "/tether/es");
    let mut s = spawn("sched", &emu.url(), &flags, &["--nodes", "2"], dir.path());
    let mut admin = s.admin().await;
    wait_nodes(&mut admin, "two running nodes", all_running(2)).await;
    let fw = framework_ids(&emu)[0].clone();

    // Freeze ZooKeeper (SIGSTOP): the session can neither be confirmed nor expire-notified.
    zk.pause();
    let status = s
        .proc
        .wait_exit(DEADLINE)
        .await
        .expect("the cut-off leader stops");
    zk.resume();
    assert!(!status.success(), "a lost leadership is an error exit");
    let log = s.proc.log_text();
    assert!(log.contains("lost ZooKeeper leadership"), "says why: {log}");
    wait_subscription(
        &emu,
        &fw,
        false,
        "the emulator to see the subscription closed",
    )
    .await;
    assert!(
        log.contains("stopped the Mesos driver and refusing calls"),
        "stopped acting before exiting: {log}"
    );
    assert_no_duplicates(&emu);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_compare_and_set_stops_the_scheduler() {
    let Some((zk, emu, dir)) =
        zk_and_emulator("a_lost_compare_and_set_stops_the_scheduler", 2).await
    else {
        return;
    };
    let flags = zk_flags(&zk, "/tether/es");
    let mut s = spawn("sched", &emu.url(), &flags, &["--nodes", "1"], dir.path());
    let mut admin = s.admin().await;
    wait_nodes(&mut admin, "one running node", all_running(1)).await;

    // Someone else (a newer leader, an operator) changes the desired count behind its back.
    let other = state_store(&zk, None).await;
    let _: Option<serde_json::Value> = other.get("desired").await.expect("get");
    other
        .put("desired", &serde_json::json!({"value": 7}))
        .await
        .expect("write");

    let scaled = admin
        .scale(ScaleRequest {
            nodes: 2,
            ..Default::default()
        })
        .await;
    assert!(
        scaled.is_err(),
        "the scale was not acknowledged: {scaled:?}"
    );
    let status = s.proc.wait_exit(DEADLINE).await.expect("exits");
    assert!(!status.success(), "a lost race is an error exit");
    let log = s.proc.log_text();
    assert!(log.contains("conflict"), "says why: {log}");
    let desired: Option<serde_json::Value> = other.get("desired").await.expect("get");
    assert_eq!(
        desired,
        Some(serde_json::json!({"value": 7})),
        "the newer value was not overwritten"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_follows_the_leading_master_in_zookeeper() {
    let Some(zk) =
        ZkServer::start_or_skip("the_scheduler_follows_the_leading_master_in_zookeeper").await
    else {
        return;
    };
    let a = MesosEmu::start(EmuConfig::fast(2))
        .await
        .expect("emulator a");
    let b = MesosEmu::start(EmuConfig::fast(2))
        .await
        .expect("emulator b");
    let port = |url: &str| -> u16 {
        url.rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .expect("emulator port")
    };
    // Two masters contend like Mesos masters do: the lowest json.info_ sequence leads.
    let masters = ZkSession::connect(&ZkConfig::new(zk.url("/mesos")))
        .await
        .expect("session");
    masters.ensure_path("/mesos").await.expect("mesos dir");
    let a_znode = register_mesos_master(&masters, "/mesos", "127.0.0.1", port(&a.url()))
        .await
        .expect("register a");
    register_mesos_master(&masters, "/mesos", "127.0.0.1", port(&b.url()))
        .await
        .expect("register b");

    let dir = tempfile::tempdir().expect("tempdir");
    let master = format!("zk://{}/mesos", zk.connect_string());
    let state = dir.path().join("state");
    let mut s = SchedulerProcess::spawn(
        "sched",
        &master,
        &[
            "--nodes",
            "1",
            "--state-dir",
            state.to_str().expect("utf-8 path"),
        ],
        dir.path(),
    );
    let mut admin = s.admin().await;
    wait_nodes(&mut admin, "one node running via master a", all_running(1)).await;
    let fw = framework_ids(&a);
    assert_eq!(fw.len(), 1, "subscribed to the leading master a");
    assert!(framework_ids(&b).is_empty(), "not to the standby master b");

    // Master a abdicates: b leads, and the scheduler moves there with the same framework id.
    masters
        .client()
        .delete(&a_znode, None)
        .await
        .expect("a abdicates");
    let id = fw[0].clone();
    wait_subscription(&b, &id, true, "the scheduler subscribed to master b").await;
    assert_eq!(framework_ids(&b), fw, "same framework id on the new master");
    wait_subscription(&a, &id, false, "the subscription to master a closed").await;
    assert!(s.proc.is_running(), "{}", s.proc.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_schedulers_the_standby_takes_over_when_the_leader_stops() {
    let Some((zk, emu, dir)) = zk_and_emulator(
        "of_two_schedulers_the_standby_takes_over_when_the_leader_stops",
        2,
    )
    .await
    else {
        return;
    };
    let (mut s, leader) = candidates(&zk, &emu, dir.path(), 2, 2).await;
    let mut admin = s[leader].admin().await;
    let before = wait_nodes(&mut admin, "two running nodes", all_running(2)).await;
    let frameworks = framework_ids(&emu);
    assert_eq!(frameworks.len(), 1, "only the leader subscribed");

    // SIGTERM: the leader resigns (deletes its election znode) instead of leaving it to the session.
    let (old, next) = stop_the_leader(&mut s, leader).await;
    assert!(
        old.proc
            .log_text()
            .contains("resigned from leader election")
    );
    let mut admin = s[next].admin().await;
    let after = wait_nodes(
        &mut admin,
        "two running nodes under the new leader",
        all_running(2),
    )
    .await;
    assert_eq!(task_ids(&before), task_ids(&after));
    assert_eq!(framework_ids(&emu), frameworks);
    assert_no_duplicates(&emu);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_credentials_lock_the_state_to_tether() {
    let Some((zk, emu, dir)) =
        zk_and_emulator("digest_credentials_lock_the_state_to_tether", 1).await
    else {
        return;
    };
    let password = "pw-never-logged-7f3a";
    let auth = dir.path().join("zk-auth");
    std::fs::write(&auth, format!("tether:{password}\n")).expect("auth file");
    let mut flags = zk_flags(&zk, "/tether/es");
    flags.extend(["--zk-auth-file".into(), auth.display().to_string()]);
    let mut s = spawn("sched", &emu.url(), &flags, &["--nodes", "1"], dir.path());
    let mut admin = s.admin().await;
    wait_nodes(&mut admin, "one running node", all_running(1)).await;

    let anonymous = state_store(&zk, None).await;
    let denied = anonymous.get::<serde_json::Value>("desired").await;
    assert!(
        denied.is_err(),
        "an anonymous session cannot read: {denied:?}"
    );

    let credentials = tether_zk::DigestCredentials::new("tether", password).expect("credentials");
    let tether = state_store(&zk, Some(credentials)).await;
    let desired: Option<serde_json::Value> = tether.get("desired").await.expect("get");
    assert_eq!(desired, Some(serde_json::json!({"value": 1})));
    assert!(
        !s.proc.log_text().contains(password),
        "the password never reaches the log"
    );
}

/// A real `tether-sidecar` for `host` dialling `scheduler` (no volume driver: it reports the driver
/// unhealthy and keeps its stream, which is all these tests look at).
fn sidecar(
    host: &str,
    scheduler: &str,
    dir: &std::path::Path,
) -> tether_integration::process::Proc {
    let plugins = dir.join("no-plugins").display().to_string();
    let args: Vec<String> = [
        "--scheduler",
        scheduler,
        "--driver",
        "nowhere",
        "--plugin-dir",
        &plugins,
        "--spec-dir",
        &plugins,
        "--hostname",
        host,
        "--state-file",
        &dir.join(format!("{host}.json")).display().to_string(),
        "--report-interval",
        "200ms",
        "--reconnect-min",
        "100ms",
        "--reconnect-max",
        "1s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    tether_integration::process::Proc::spawn("tether-sidecar", host, &args, &[], dir)
        .unwrap_or_else(|e| panic!("{e} (build it: cargo build -p tether-sidecar)"))
}

/// Waits until the scheduler `s` lists `host` with an open sidecar stream.
async fn wait_sidecar(
    s: &mut SchedulerProcess,
    host: &str,
    log: &tether_integration::process::Proc,
) {
    let mut admin = s.admin().await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let agents = admin
            .list_agents(tether_proto::v1::ListAgentsRequest {})
            .await
            .map(|r| r.into_inner().agents)
            .unwrap_or_default();
        if agents.iter().any(|a| a.host == host && a.sidecar_connected) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{host}'s sidecar never reached the leader; its log:\n{}",
            log.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_sent_to_a_standby_or_to_zookeeper_ends_up_at_the_leader() {
    let Some((zk, emu, dir)) = zk_and_emulator(
        "a_sidecar_sent_to_a_standby_or_to_zookeeper_ends_up_at_the_leader",
        1,
    )
    .await
    else {
        return;
    };
    let (mut s, leader) = candidates(&zk, &emu, dir.path(), 2, 0).await;
    let standby = 1 - leader;

    // The standby's refusal names the leader in a documented form.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", s[standby].listen))
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let (up, rx) = tokio::sync::mpsc::channel(1);
    drop(up);
    let refusal = tether_proto::v1::agent_channel_client::AgentChannelClient::new(channel)
        .connect(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect_err("a standby refuses sidecars");
    assert_eq!(refusal.code(), tonic::Code::Unavailable);
    assert_eq!(
        refusal
            .metadata()
            .get("tether-leader")
            .and_then(|v| v.to_str().ok()),
        Some(s[leader].address().as_str())
    );

    // Given only the standby's URL, or the standby first in a list, or the state's zk:// URL.
    let standby_url = format!("http://{}", s[standby].address());
    let leader_url = format!("http://{}", s[leader].address());
    let zk_url = format!("zk://{}/tether/es", zk.connect_string());
    let list = format!("{standby_url},{leader_url}");
    let cases = [
        ("via-standby", standby_url.as_str()),
        ("via-list", list.as_str()),
        ("via-zk", zk_url.as_str()),
    ];
    let mut procs = Vec::new();
    for (host, scheduler) in cases {
        procs.push((host, sidecar(host, scheduler, dir.path())));
    }
    for (host, proc) in &procs {
        wait_sidecar(&mut s[leader], host, proc).await;
    }
    let (_, via_standby) = &procs[0];
    assert!(
        via_standby
            .log_text()
            .contains("a standby named the leader; dialling it"),
        "{}",
        via_standby.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_leader_verifies_the_agent_tokens_the_previous_one_minted() {
    let Some((zk, emu, dir)) = zk_and_emulator(
        "the_next_leader_verifies_the_agent_tokens_the_previous_one_minted",
        1,
    )
    .await
    else {
        return;
    };
    let (mut s, leader) = candidates(&zk, &emu, dir.path(), 2, 0).await;
    let token = s[leader]
        .admin()
        .await
        .mint_agent_token(tether_proto::v1::MintAgentTokenRequest {
            host: "agent-z".into(),
            ttl_seconds: 3600,
        })
        .await
        .expect("minted")
        .into_inner()
        .token;
    // The secret is state, beside the rest of it.
    let raw = state_store(&zk, None).await;
    let stored: Option<serde_json::Value> = raw.get("agent_token_secret").await.expect("get");
    assert!(
        stored
            .as_ref()
            .and_then(|v| v["value"].as_str())
            .is_some_and(|v| v.len() == 64),
        "{stored:?}"
    );

    let (_old, next) = stop_the_leader(&mut s, leader).await;
    let open = |host: &str| {
        let (url, token, host) = (
            format!("http://{}", s[next].address()),
            token.clone(),
            host.to_owned(),
        );
        async move {
            let channel = tonic::transport::Endpoint::from_shared(url)
                .expect("url")
                .connect()
                .await
                .expect("connect");
            let (up, rx) = tokio::sync::mpsc::channel(1);
            up.send(tether_proto::v1::AgentMessage {
                body: Some(tether_proto::v1::agent_message::Body::Hello(
                    tether_proto::v1::Hello {
                        hostname: host,
                        ..Default::default()
                    },
                )),
            })
            .await
            .expect("queued");
            let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
            req.metadata_mut().insert(
                "authorization",
                format!("Bearer {token}").parse().expect("ascii"),
            );
            let r = tether_proto::v1::agent_channel_client::AgentChannelClient::new(channel)
                .connect(req)
                .await
                .map(drop);
            drop(up);
            r
        }
    };
    open("agent-z").await.expect("the new leader accepts it");
    let e = open("agent-y")
        .await
        .expect_err("and still binds it to its host");
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
}

/// The CA certificate and the `elastic` password a scheduler exports with its secrets.
async fn exported_secrets(p: &mut SchedulerProcess) -> (String, String) {
    let doc = p
        .admin()
        .await
        .export_state(tether_proto::v1::ExportStateRequest {
            include_secrets: true,
        })
        .await
        .expect("export")
        .into_inner()
        .document;
    let v: serde_json::Value = serde_json::from_str(&doc).expect("backup json");
    let secrets = &v["secrets"];
    assert_eq!(secrets["kind"], "included", "{secrets}");
    let text = |k: &str| secrets[k].as_str().expect(k).to_owned();
    (text("ca_cert_pem"), text("elastic_password"))
}

/// With security on and `--state zk://`, the cluster CA and the `elastic` password live in ZooKeeper
/// (created by the first leader, with the store's ACL), and the next leader signs and logs in with the
/// same ones instead of making its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_ca_and_password_are_in_zookeeper_and_shared_by_the_next_leader() {
    let Some((zk, emu, dir)) = zk_and_emulator(
        "the_cluster_ca_and_password_are_in_zookeeper_and_shared_by_the_next_leader",
        1,
    )
    .await
    else {
        return;
    };
    let flags = zk_flags(&zk, "/tether/es");
    let extra = [
        "--nodes",
        "0",
        "--es-security",
        "full",
        "--external-volume-driver",
        "rexray",
    ];
    let mut s: Vec<SchedulerProcess> = (0..2)
        .map(|i| spawn(&format!("sched{i}"), &emu.url(), &flags, &extra, dir.path()))
        .collect();
    let leader = leader_of(&mut s).await;
    let first = exported_secrets(&mut s[leader]).await;

    let raw = state_store(&zk, None).await;
    let stored: serde_json::Value = raw
        .get("es_cluster_secrets")
        .await
        .expect("get")
        .expect("the secrets are in ZooKeeper");
    assert_eq!(stored["ca_cert_pem"].as_str(), Some(first.0.as_str()));
    assert_eq!(stored["password"].as_str(), Some(first.1.as_str()));
    assert!(
        stored["ca_key_pem"]
            .as_str()
            .is_some_and(|k| k.contains("PRIVATE KEY"))
    );

    let (old, next) = stop_the_leader(&mut s, leader).await;
    let second = exported_secrets(&mut s[next]).await;
    assert_eq!(second, first, "the next leader's CA and password");
    for p in [&old.proc, &s[next].proc] {
        assert!(
            !p.log_text().contains(&first.1),
            "the password never reaches the log"
        );
    }
}
