//! The emulator on its own: the master's HTTP status-code ladder, decline filters and REVIVE, and the
//! process launcher with Docker volumes resolved to host directories.

use std::sync::Arc;

use http::Method;
use tether_integration::mesos_emu::{
    DirVolumeAttacher, EmuConfig, MesosEmu, ProcessLauncher, Restart,
};
use tether_integration::testing::emu::{eventually, raw_call, sleep_task, subscribed_framework};
use tether_mesos::client::Notification;
use tether_mesos::model::*;

const JSON: Option<&str> = Some("application/json");
const SUB: &str = r#"{"type":"SUBSCRIBE","subscribe":{"framework_info":{"user":"u","name":"n","roles":["r"],"capabilities":[{"type":"MULTI_ROLE"}]}}}"#;

#[tokio::test]
async fn status_code_ladder() {
    let emu = MesosEmu::start(EmuConfig::fast(1)).await.unwrap();
    let u = emu.url();
    assert_eq!(raw_call(&u, Method::GET, JSON, None, "").await.status, 405);
    assert_eq!(
        raw_call(&u, Method::POST, None, None, SUB).await.status,
        400
    );
    assert_eq!(
        raw_call(
            &u,
            Method::POST,
            Some("application/json; charset=utf-8"),
            None,
            SUB
        )
        .await
        .status,
        415
    );
    assert_eq!(
        raw_call(&u, Method::POST, JSON, None, "{not json")
            .await
            .status,
        400
    );
    // Enum as a number, and a missing required field (`user`).
    assert_eq!(
        raw_call(
            &u,
            Method::POST,
            JSON,
            None,
            r#"{"type":1,"subscribe":{"framework_info":{"user":"u","name":"n"}}}"#
        )
        .await
        .status,
        400
    );
    assert_eq!(
        raw_call(
            &u,
            Method::POST,
            JSON,
            None,
            r#"{"type":"SUBSCRIBE","subscribe":{"framework_info":{"name":"n"}}}"#
        )
        .await
        .status,
        400
    );
    assert_eq!(
        raw_call(&u, Method::POST, JSON, Some("x"), SUB)
            .await
            .status,
        400,
        "SUBSCRIBE with a stream id"
    );
    let sub = raw_call(&u, Method::POST, JSON, None, SUB).await;
    assert_eq!(sub.status, 200);
    let sid = sub.stream_id.expect("Mesos-Stream-Id");
    assert_eq!(sid.len(), 36);
    let fw = emu.state()["frameworks"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let revive = format!(
        r#"{{"framework_id":{{"value":"{fw}"}},"type":"REVIVE","revive":{{"roles":["r"]}}}}"#
    );
    assert_eq!(
        raw_call(&u, Method::POST, JSON, Some(&sid), &revive)
            .await
            .status,
        202
    );
    assert_eq!(
        raw_call(&u, Method::POST, JSON, None, &revive).await.status,
        400,
        "missing stream id"
    );
    assert_eq!(
        raw_call(&u, Method::POST, JSON, Some("other"), &revive)
            .await
            .status,
        400,
        "stream id mismatch"
    );
    let unknown = revive.replace(&fw, "nope-0000");
    assert_eq!(
        raw_call(&u, Method::POST, JSON, Some(&sid), &unknown)
            .await
            .status,
        400,
        "unknown framework"
    );
    let ack = format!(
        r#"{{"framework_id":{{"value":"{fw}"}},"type":"ACKNOWLEDGE","acknowledge":{{"agent_id":{{"value":"a"}},"task_id":{{"value":"t"}},"uuid":"AAAA"}}}}"#
    );
    assert_eq!(
        raw_call(&u, Method::POST, JSON, Some(&sid), &ack)
            .await
            .status,
        400,
        "uuid not 16 bytes"
    );
    let no_payload = format!(r#"{{"framework_id":{{"value":"{fw}"}},"type":"ACCEPT"}}"#);
    assert_eq!(
        raw_call(&u, Method::POST, JSON, Some(&sid), &no_payload)
            .await
            .status,
        400
    );
    emu.set_leader(Some("leader.example:5050".into()));
    let r = raw_call(&u, Method::POST, JSON, None, SUB).await;
    assert_eq!(
        (r.status, r.location.as_deref()),
        (307, Some("//leader.example:5050/api/v1/scheduler"))
    );
    emu.set_leader(None);
    emu.set_unavailable(true);
    assert_eq!(
        raw_call(&u, Method::POST, JSON, None, SUB).await.status,
        503
    );
    emu.shutdown();

    let mut cfg = EmuConfig::fast(1);
    cfg.credentials = Some(("p".into(), "s".into()));
    let secured = MesosEmu::start(cfg).await.unwrap();
    let r = raw_call(&secured.url(), Method::POST, JSON, None, SUB).await;
    assert_eq!(
        (r.status, r.www_authenticate.as_deref()),
        (401, Some("Basic realm=\"mesos-master-scheduler\""))
    );
    secured.shutdown();
}

#[tokio::test]
async fn decline_filters_hold_until_revive() {
    let (emu, mut d, _) = subscribed_framework(EmuConfig::fast(2)).await;
    let offers = d.offers().await;
    assert_eq!(offers.len(), 2, "one offer per agent");
    let (filtered, other) = (offers[0].clone(), offers[1].clone());
    d.client
        .send(Call::decline(vec![filtered.id.clone()], Some(3600.0)))
        .await
        .unwrap();
    d.decline_unfiltered(vec![other.id.clone()]).await;
    // Several allocation passes re-offer only the unfiltered agent.
    for _ in 0..3 {
        let o = d.offers().await;
        assert!(
            o.iter().all(|x| x.agent_id == other.agent_id),
            "filtered agent re-offered"
        );
        d.decline_unfiltered(o.iter().map(|x| x.id.clone()).collect())
            .await;
    }
    d.client.send(Call::revive(vec![])).await.unwrap();
    loop {
        let o = d.offers().await;
        if o.iter().any(|x| x.agent_id == filtered.agent_id) {
            break;
        }
        d.decline_unfiltered(o.iter().map(|x| x.id.clone()).collect())
            .await;
    }
    d.cancel.cancel();
    emu.shutdown();
}

/// A removed agent's machine comes back under a new agent id with the same hostname and is offered
/// again, even when asked to keep its work directory (the master refuses a removed agent's id); an agent
/// that is up cannot be "restarted".
#[tokio::test]
async fn a_removed_agent_restarts_under_a_new_id() {
    let (emu, mut d, _) = subscribed_framework(EmuConfig::fast(2)).await;
    let first = d.offers().await;
    let victim = first[0].clone();
    assert_eq!(
        emu.restart_agent(&victim.agent_id.value, Restart::KeepWorkDir),
        None,
        "still up"
    );
    assert!(emu.remove_agent(&victim.agent_id.value));
    let new_id = emu
        .restart_agent(&victim.agent_id.value, Restart::KeepWorkDir)
        .expect("a removed agent restarts");
    assert_ne!(new_id, victim.agent_id.value);
    let offer = d
        .until(|n| match n {
            Notification::Event(e) if e.event_type == EventType::Offers => {
                e.offers.as_ref().and_then(|o| {
                    o.offers
                        .iter()
                        .find(|x| x.agent_id.value == new_id)
                        .cloned()
                })
            }
            _ => None,
        })
        .await;
    assert_eq!(offer.hostname, victim.hostname);
    let state = emu.state();
    let states: Vec<(&str, &str)> = state["slaves"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["hostname"] == victim.hostname.as_str())
        .map(|a| (a["id"].as_str().unwrap(), a["state"].as_str().unwrap()))
        .collect();
    assert!(
        states.contains(&(victim.agent_id.value.as_str(), "REMOVED")),
        "{states:?}"
    );
    assert!(states.contains(&(new_id.as_str(), "ACTIVE")), "{states:?}");
    d.cancel.cancel();
    emu.shutdown();
}

#[tokio::test]
async fn process_launcher_runs_commands_with_docker_volumes_as_directories() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = EmuConfig::fast(1);
    cfg.launcher = Arc::new(ProcessLauncher {
        sandbox_root: dir.path().join("sandboxes"),
        volumes: Arc::new(DirVolumeAttacher {
            root: dir.path().join("volumes"),
        }),
    });
    let (emu, mut d, _) = subscribed_framework(cfg).await;
    let offer = d.offers().await.remove(0);
    let mut t = sleep_task("writer", &offer.agent_id);
    t.command = Some(CommandInfo {
        value: Some(
            "echo \"$GREETING\" > \"$TETHER_VOLUME_DATA/hello\" && test -d \"$MESOS_SANDBOX\""
                .into(),
        ),
        environment: Some(Environment {
            variables: vec![Variable::value("GREETING", "hi from es1")],
        }),
        ..CommandInfo::default()
    });
    t.container = Some(ContainerInfo {
        container_type: ContainerType::Mesos,
        volumes: vec![Volume::docker_volume(
            "/data",
            VolumeMode::Rw,
            "rexray",
            "es1data",
            vec![],
        )],
        hostname: None,
        docker: None,
        mesos: None,
        rlimit_info: None,
    });
    let mut sleeper = sleep_task("sleeper", &offer.agent_id);
    sleeper.command = Some(CommandInfo {
        value: Some("sleep 100".into()),
        ..CommandInfo::default()
    });
    d.launch(&offer, vec![t, sleeper]).await;
    d.ack_until_state(TaskState::Finished).await;
    let written = std::fs::read_to_string(dir.path().join("volumes/rexray/es1data/hello")).unwrap();
    assert_eq!(written.trim(), "hi from es1");
    eventually(|| {
        emu.tasks()
            .iter()
            .any(|t| t.task_id == "sleeper" && t.state == TaskState::Running)
    })
    .await;
    d.client
        .send(Call::kill(
            TaskID::new("sleeper"),
            None,
            Some(2_000_000_000),
        ))
        .await
        .unwrap();
    d.ack_until_state(TaskState::Killed).await;
    d.cancel.cancel();
    emu.shutdown();
}

/// The agent runs each task's health check as Mesos does: a task that passes its TCP check is reported
/// healthy; a task whose check keeps failing past the grace period is reported unhealthy, then killed by
/// its executor, and its TASK_KILLED says `healthy: false`. (The checker's timing rules are unit-tested on
/// a paused clock in `mesos_emu::health`.)
#[tokio::test]
async fn a_task_failing_its_health_check_past_the_grace_period_is_killed_unhealthy() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = EmuConfig::fast(1);
    // The checks dial the agent's address, as the executor dials 127.0.0.1 inside the task's namespace.
    cfg.agents[0].hostname = "127.0.0.1".into();
    cfg.launcher = Arc::new(ProcessLauncher {
        sandbox_root: dir.path().join("sandboxes"),
        volumes: Arc::new(DirVolumeAttacher {
            root: dir.path().join("volumes"),
        }),
    });
    let listening = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let open_port = listening.local_addr().unwrap().port();
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let (emu, mut d, _) = subscribed_framework(cfg).await;
    let offer = d.offers().await.remove(0);
    let tcp_check = |port: u16| HealthCheck {
        delay_seconds: Some(0.0),
        interval_seconds: Some(0.1),
        timeout_seconds: Some(1.0),
        consecutive_failures: Some(2),
        grace_period_seconds: Some(0.3),
        check_type: Some(HealthCheckType::Tcp),
        http: None,
        tcp: Some(TcpCheckInfo {
            port: u32::from(port),
        }),
    };
    let mut healthy = sleep_task("healthy", &offer.agent_id);
    healthy.health_check = Some(tcp_check(open_port));
    let mut failing = sleep_task("failing", &offer.agent_id);
    failing.health_check = Some(tcp_check(closed_port));
    failing.kill_policy = Some(KillPolicy {
        grace_period: Some(Nanos {
            nanoseconds: 100_000_000,
        }),
    });
    d.launch(&offer, vec![healthy, failing]).await;
    let mut seen: Vec<(String, TaskState, Option<bool>, Option<Reason>)> = Vec::new();
    let done = |seen: &[(String, TaskState, Option<bool>, Option<Reason>)]| {
        seen.iter()
            .any(|(id, s, h, _)| id == "healthy" && *s == TaskState::Running && *h == Some(true))
            && seen
                .iter()
                .any(|(id, s, _, _)| id == "failing" && *s == TaskState::Killed)
    };
    // Updates are delivered at least once: one retried before its acknowledgement arrived (a busy
    // machine) comes again with the same uuid, and counts once.
    let mut uuids = std::collections::HashSet::new();
    while !done(&seen) {
        let s = d.next_update_acknowledged().await;
        if s.uuid.as_ref().is_some_and(|u| !uuids.insert(u.clone())) {
            continue;
        }
        seen.push((s.task_id.value.clone(), s.state, s.healthy, s.reason));
    }
    let failing: Vec<_> = seen.iter().filter(|(id, ..)| id == "failing").collect();
    let unhealthy_running = failing.iter().any(|(_, s, h, r)| {
        *s == TaskState::Running
            && *h == Some(false)
            && *r == Some(Reason::ReasonTaskHealthCheckStatusUpdated)
    });
    assert!(
        unhealthy_running,
        "told unhealthy before the kill: {failing:?}"
    );
    let killed = failing
        .iter()
        .find(|(_, s, ..)| *s == TaskState::Killed)
        .expect("killed");
    assert_eq!(killed.2, Some(false), "TASK_KILLED carries healthy=false");
    // The framework has TASK_KILLING_STATE: the executor says TASK_KILLING before it kills.
    let states: Vec<TaskState> = failing.iter().map(|(_, s, ..)| *s).collect();
    let killing = states.iter().position(|s| *s == TaskState::Killing);
    let last_running = states.iter().rposition(|s| *s == TaskState::Running);
    assert!(
        killing.is_some_and(
            |k| last_running.is_some_and(|r| r < k) && states[k + 1..] == [TaskState::Killed]
        ),
        "RUNNING (unhealthy), then KILLING, then KILLED: {states:?}"
    );
    assert!(
        !seen
            .iter()
            .any(|(id, s, ..)| id == "healthy" && s.is_terminal()),
        "the healthy task runs on: {seen:?}"
    );
    drop(listening);
    d.cancel.cancel();
    emu.shutdown();
}

/// The master checks each task of an ACCEPT against what is left of the offer with the reservations
/// (`Resources::contains` after upgrading the task's resources): reserved resources are offered with their
/// reservation, and a task asking for more than is offered unreserved, or for reserved resources under
/// another reservation, is TASK_ERROR (REASON_TASK_INVALID); a task naming the reservation as offered is
/// launched.
#[tokio::test]
async fn an_accept_is_checked_against_the_offer_with_its_reservations() {
    let mut cfg = EmuConfig::fast(1);
    cfg.agents[0] = tether_integration::testing::emu::reserved_agent(0);
    let (emu, mut d, _) = subscribed_framework(cfg).await;
    let offer = d.offers().await.remove(0);
    let reserved_cpus: Vec<&Resource> = offer
        .resources
        .iter()
        .filter(|r| r.name == "cpus" && r.role.as_deref() == Some("elasticsearch"))
        .collect();
    assert_eq!(reserved_cpus.len(), 1, "{:?}", offer.resources);
    assert_eq!(
        reserved_cpus[0]
            .reservation
            .as_ref()
            .and_then(|r| r.principal.as_deref()),
        Some("ops")
    );
    let dynamic_cpus = reserved_cpus[0].clone();
    let task = |id: &str, resources: Vec<Resource>| TaskInfo {
        resources,
        ..sleep_task(id, &offer.agent_id)
    };
    let with_role = |mut r: Resource| {
        r.role = Some("elasticsearch".into());
        r
    };
    let mut as_offered = dynamic_cpus.clone();
    as_offered.scalar = Some(Scalar { value: 0.75 });
    as_offered.allocation_info = None;
    let tasks = vec![
        // Reserved and unreserved summed, as if all unreserved: only 0.25 is.
        task("summed", vec![Resource::scalar("cpus", 1.0)]),
        // The role without the dynamic reservation's principal and labels is a STATIC reservation.
        task("static", vec![with_role(Resource::scalar("cpus", 0.5))]),
        // Reserved memory under the reservation it has, but more than offered.
        task("too-much", vec![with_role(Resource::scalar("mem", 1024.0))]),
        // As offered: launched.
        task(
            "fits",
            vec![
                as_offered,
                Resource::scalar("cpus", 0.25),
                with_role(Resource::scalar("mem", 512.0)),
            ],
        ),
    ];
    d.launch(&offer, tasks).await;
    let mut errors = std::collections::BTreeMap::new();
    let mut launched = false;
    while errors.len() < 3 || !launched {
        let s = d.next_update_acknowledged().await;
        match s.state {
            TaskState::Error => {
                assert_eq!(s.reason, Some(Reason::ReasonTaskInvalid), "{s:?}");
                let message = s.message.clone().unwrap_or_default();
                assert!(message.contains("more than available"), "{message}");
                errors.insert(s.task_id.value.clone(), message);
            }
            TaskState::Starting | TaskState::Running => {
                assert_eq!(s.task_id.value, "fits", "{s:?}");
                launched = true;
            }
            other => panic!("unexpected {other:?}: {s:?}"),
        }
    }
    assert_eq!(
        errors.keys().map(String::as_str).collect::<Vec<_>>(),
        ["static", "summed", "too-much"]
    );
    d.cancel.cancel();
    emu.shutdown();
}

/// A partitioned agent's status update manager holds its updates: a task that fails behind the partition
/// is still RUNNING to the master, so the ping timeout makes it TASK_UNREACHABLE like the others; when the
/// agent is back the master learns of the failure and the held TASK_FAILED is delivered (with its uuid)
/// until acknowledged.
#[tokio::test]
async fn a_partitioned_agent_holds_its_updates_until_it_is_back() {
    let (emu, mut d, _) = subscribed_framework(EmuConfig::fast(1)).await;
    let offer = d.offers().await.remove(0);
    d.launch(&offer, vec![sleep_task("t", &offer.agent_id)])
        .await;
    d.ack_until_state(TaskState::Running).await;
    assert!(emu.partition_agent(&offer.agent_id.value));
    assert!(emu.fail_task("t"));
    // The first word after the partition is the master's own: it never heard of the failure.
    let s = d.update().await;
    assert_eq!(
        (s.state, s.reason, s.uuid.is_none()),
        (
            TaskState::Unreachable,
            Some(Reason::ReasonAgentRemoved),
            true
        ),
        "{s:?}"
    );
    eventually(|| emu.tasks().first().is_some_and(|t| t.unacknowledged == 1)).await;
    let held = emu.tasks();
    assert_eq!(
        (held[0].state, held[0].unacknowledged),
        (TaskState::Unreachable, 1),
        "the failure is held on the agent: {held:?}"
    );
    assert!(emu.heal_agent(&offer.agent_id.value));
    let mut seen = Vec::new();
    loop {
        let s = d.next_update_acknowledged().await;
        seen.push((s.state, s.reason, s.uuid.is_some()));
        if s.state == TaskState::Failed && s.uuid.is_some() {
            break;
        }
    }
    // Re-registration first (the master's word, no uuid), then the agent's held update.
    assert_eq!(
        seen.first(),
        Some(&(
            TaskState::Failed,
            Some(Reason::ReasonAgentReregistered),
            false
        )),
        "{seen:?}"
    );
    eventually(|| emu.tasks().is_empty()).await;
    d.cancel.cancel();
    emu.shutdown();
}
