//! The emulator's machine faults against what a real master does (`shared/protocols/mesos-v1-scheduler.md`
//! §5.4–5.6): a dead machine is TASK_UNREACHABLE after the ping timeout and nothing more, its processes
//! die and its volumes stay attached to it; restarted with its work directory it reports its tasks
//! TASK_GONE under its old id, wiped it registers under a new id and the old tasks stay UNREACHABLE until
//! the registry forgets the agent (then TASK_UNKNOWN); the operator API's MARK_AGENT_GONE yields
//! TASK_GONE_BY_OPERATOR with the real status codes; a frozen partition stops the processes until it
//! heals. Tasks run as local processes whose volumes come from a fake REX-Ray per agent.

use std::sync::Arc;
use std::time::Duration;

use http::Method;
use tether_integration::fake_rexray::{self, Config, FakeRexray};
use tether_integration::http_client;
use tether_integration::mesos_emu::{
    EmuConfig, EmuHandle, MesosEmu, PluginVolumeAttacher, ProcessLauncher,
};
use tether_integration::testing::emu::{
    DEADLINE, Driver, ack_until_task, eventually, mark_agent_gone_call, operator_call, sleep_task,
    subscribed_framework,
};
use tether_mesos::client::Notification;
use tether_mesos::model::*;

const VOLUME: &str = "es1data";
const JSON: (&str, &str) = ("content-type", "application/json");

/// An emulator whose tasks are local processes, one fake REX-Ray per agent on a shared backend, and a
/// subscribed framework.
struct World {
    emu: EmuHandle,
    d: Driver,
    dir: tempfile::TempDir,
    _plugins: Vec<FakeRexray>,
}

impl World {
    async fn start(tune: impl FnOnce(&mut EmuConfig)) -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = dir.path().join("backend");
        fake_rexray::create_volume(&backend, VOLUME, 1, "zone-a").expect("volume");
        let mut cfg = EmuConfig::fast(2);
        let mut plugins = Vec::new();
        for a in &cfg.agents {
            let socket = dir
                .path()
                .join("plugins")
                .join(&a.hostname)
                .join("rexray.sock");
            let mut p = Config::new(socket, &backend, &a.hostname);
            p.preempt = true;
            plugins.push(FakeRexray::serve(p).await.expect("plugin"));
        }
        cfg.launcher = Arc::new(ProcessLauncher {
            sandbox_root: dir.path().join("sandboxes"),
            volumes: Arc::new(PluginVolumeAttacher {
                root: dir.path().join("plugins"),
            }),
        });
        tune(&mut cfg);
        let (emu, d, _) = subscribed_framework(cfg).await;
        World {
            emu,
            d,
            dir,
            _plugins: plugins,
        }
    }

    /// Launches a task that records its pid in its sandbox and keeps beating, with the volume attached,
    /// on the first agent offered; returns the agent once the task runs.
    async fn launch_beating(&mut self, task: &str) -> AgentID {
        let offer = self.d.offers().await.remove(0);
        let mut t = sleep_task(task, &offer.agent_id);
        t.command = Some(CommandInfo {
            value: Some(
                "echo $$ > \"$MESOS_SANDBOX/pid\"; while :; do date +%s%N > \"$MESOS_SANDBOX/beat\"; sleep 0.05; done"
                    .into(),
            ),
            ..CommandInfo::default()
        });
        t.container = Some(ContainerInfo {
            container_type: ContainerType::Mesos,
            volumes: vec![Volume::docker_volume(
                "/data",
                VolumeMode::Rw,
                "rexray",
                VOLUME,
                vec![],
            )],
            hostname: None,
            docker: None,
            mesos: None,
            rlimit_info: None,
        });
        self.d.launch(&offer, vec![t]).await;
        let s = ack_until_task(&mut self.d, task, TaskState::Running).await;
        assert_eq!(s.state, TaskState::Running, "{:?}", s.message);
        let pid = self.pid(task).await;
        eventually(|| process_state(pid).is_some_and(|s| s != 'T')).await;
        offer.agent_id
    }

    /// The pid the task recorded.
    async fn pid(&self, task: &str) -> u32 {
        let path = self.dir.path().join("sandboxes").join(task).join("pid");
        let mut pid = None;
        eventually(|| {
            pid = std::fs::read_to_string(&path)
                .ok()
                .and_then(|s| s.trim().parse().ok());
            pid.is_some()
        })
        .await;
        pid.expect("pid recorded")
    }

    /// POST `/emu/<path>`: the status and the answer's text.
    async fn fault(&self, path: &str) -> (u16, String) {
        let reply = http_client::request(
            Method::POST,
            &format!("{}/emu/{path}", self.emu.url()),
            None,
        )
        .await
        .expect("emulator answers");
        (reply.status, reply.text())
    }

    /// The next update of `task`, acknowledging what needs it.
    async fn next_update(&mut self, task: &str) -> TaskStatus {
        loop {
            let s = self.d.next_update_acknowledged().await;
            if s.task_id.value == task {
                return s;
            }
        }
    }

    /// Explicit reconciliation of `task` on `agent`: the master's answer.
    async fn reconcile(&mut self, task: &str, agent: &AgentID) -> TaskStatus {
        self.d
            .client
            .send(Call::reconcile(vec![(
                TaskID::new(task),
                Some(agent.clone()),
            )]))
            .await
            .expect("reconcile");
        self.next_update(task).await
    }

    /// The agent as the emulator's `/state` lists it.
    fn agent_state(&self, agent: &AgentID) -> serde_json::Value {
        self.emu.state()["slaves"]
            .as_array()
            .and_then(|all| all.iter().find(|a| a["id"] == agent.value.as_str()))
            .cloned()
            .unwrap_or_default()
    }

    fn attached_to(&self) -> Option<String> {
        fake_rexray::volume_info(&self.dir.path().join("backend"), VOLUME)
            .expect("backend readable")
            .and_then(|m| m.attached_host)
    }

    async fn stop(self) {
        self.d.cancel.cancel();
        self.emu.shutdown();
    }
}

/// The state letter of `/proc/<pid>/stat` (`T`: stopped), `None` once the process is gone.
fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.trim_start().chars().next().filter(|c| *c != 'Z')
}

/// Collects every event for `window` and fails if one is an update of `task`.
async fn no_update_for(d: &mut Driver, task: &str, window: Duration) {
    let end = tokio::time::Instant::now() + window;
    while let Ok(n) = tokio::time::timeout_at(end, d.rx.recv()).await {
        if let Some(Notification::Event(e)) = n
            && let Some(u) = &e.update
        {
            assert_ne!(u.status.task_id.value, task, "unexpected update {u:?}");
        }
    }
}

#[tokio::test]
async fn a_dead_machine_is_unreachable_after_the_ping_timeout_and_nothing_more() {
    let mut w = World::start(|_| {}).await;
    let agent = w.launch_beating("t1").await;
    let pid = w.pid("t1").await;
    assert_eq!(
        w.fault(&format!("agents/{}/kill", agent.value)).await.0,
        200
    );

    let s = w.next_update("t1").await;
    assert_eq!(s.state, TaskState::Unreachable);
    assert_eq!(s.reason, Some(Reason::ReasonAgentRemoved));
    assert_eq!(s.source, Some(Source::SourceMaster));
    assert!(s.unreachable_time.is_some() && s.uuid.is_none(), "{s:?}");
    eventually(|| process_state(pid).is_none()).await;
    let dead = w.agent_state(&agent);
    assert_eq!(
        w.attached_to().as_deref(),
        dead["hostname"].as_str(),
        "a dead machine detaches nothing"
    );
    assert_eq!(dead["machine"], "down");

    // Nothing more on its own, for many ping timeouts; reconciliation still says UNREACHABLE.
    no_update_for(&mut w.d, "t1", Duration::from_secs(2)).await;
    let s = w.reconcile("t1", &agent).await;
    assert_eq!(
        (s.state, s.reason),
        (TaskState::Unreachable, Some(Reason::ReasonReconciliation))
    );
    assert!(s.unreachable_time.is_some());

    let (status, text) = w.fault(&format!("agents/{}/heal", agent.value)).await;
    assert_eq!(status, 409, "a dead machine cannot heal: {text}");
    assert_eq!(w.fault("agents/nope/kill").await.0, 404);
    w.stop().await;
}

#[tokio::test]
async fn a_dead_machine_restarted_with_its_work_directory_reports_its_tasks_gone() {
    let mut w = World::start(|_| {}).await;
    let agent = w.launch_beating("t1").await;
    let up = w
        .emu
        .agent_ids()
        .into_iter()
        .find(|a| *a != agent.value)
        .expect("another agent");
    let (status, text) = w.fault(&format!("agents/{up}/restart")).await;
    assert_eq!(status, 409, "an agent that is up cannot restart: {text}");
    w.fault(&format!("agents/{}/kill", agent.value)).await;
    assert_eq!(w.next_update("t1").await.state, TaskState::Unreachable);

    let (status, id) = w.fault(&format!("agents/{}/restart", agent.value)).await;
    assert_eq!(
        (status, id.as_str()),
        (200, agent.value.as_str()),
        "same id"
    );
    let s = w.next_update("t1").await;
    assert_eq!(s.state, TaskState::Gone);
    assert_eq!(s.source, Some(Source::SourceAgent));
    assert_eq!(s.reason, Some(Reason::ReasonAgentRestarted));
    assert!(s.uuid.is_some(), "an agent's update is acknowledged");
    eventually(|| w.emu.tasks().is_empty()).await;
    let offered =
        w.d.until(|n| match n {
            Notification::Event(e) if e.event_type == EventType::Offers => e
                .offers
                .as_ref()
                .and_then(|o| o.offers.iter().find(|x| x.agent_id == agent).cloned()),
            _ => None,
        })
        .await;
    assert_eq!(offered.agent_id, agent);
    w.stop().await;
}

#[tokio::test]
async fn a_wiped_machine_comes_back_under_a_new_id_and_its_old_tasks_stay_unreachable_until_forgotten()
 {
    let mut w = World::start(|c| c.registry_max_agent_age = Duration::from_secs(2)).await;
    let agent = w.launch_beating("t1").await;
    w.fault(&format!("agents/{}/kill", agent.value)).await;
    assert_eq!(w.next_update("t1").await.state, TaskState::Unreachable);

    let (status, id) = w
        .fault(&format!("agents/{}/restart?wiped=true", agent.value))
        .await;
    assert_eq!(status, 200);
    assert_ne!(id, agent.value, "a wiped machine registers under a new id");
    let s = w.reconcile("t1", &agent).await;
    assert_eq!(s.state, TaskState::Unreachable, "{s:?}");

    // Polled, not timed: once the registry forgets the old agent, the task is unknown.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let s = w.reconcile("t1", &agent).await;
        if s.state == TaskState::Unknown {
            break;
        }
        assert_eq!(s.state, TaskState::Unreachable, "{s:?}");
        assert!(tokio::time::Instant::now() < deadline, "never forgotten");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!w.emu.agent_ids().contains(&agent.value));
    w.stop().await;
}

#[tokio::test]
async fn mark_agent_gone_through_the_operator_api() {
    let mut w = World::start(|_| {}).await;
    let base = w.emu.url();
    let call = |a: &str| mark_agent_gone_call(a);
    // The master's ladder.
    assert_eq!(operator_call(&base, Method::GET, &[], "").await.status, 405);
    assert_eq!(
        operator_call(&base, Method::POST, &[], &call("x"))
            .await
            .status,
        400
    );
    let plain = [("content-type", "text/plain")];
    assert_eq!(
        operator_call(&base, Method::POST, &plain, &call("x"))
            .await
            .status,
        415
    );
    for (body, why) in [
        ("{nope", "Failed to parse body into JSON"),
        (
            r#"{"type":"NOPE"}"#,
            "Failed to convert JSON into Call protobuf",
        ),
        (
            r#"{"type":32}"#,
            "Failed to convert JSON into Call protobuf",
        ),
        (
            r#"{"type":"MARK_AGENT_GONE"}"#,
            "Failed to validate master::Call: Expecting 'mark_agent_gone' to be present",
        ),
    ] {
        let a = operator_call(&base, Method::POST, &[JSON], body).await;
        assert_eq!(a.status, 400, "{body}");
        assert!(a.body.starts_with(why), "{body}: {}", a.body);
    }
    let html = [JSON, ("accept", "text/html")];
    assert_eq!(
        operator_call(&base, Method::POST, &html, &call("x"))
            .await
            .status,
        406
    );
    let a = operator_call(&base, Method::POST, &[JSON], r#"{"type":"GET_STATE"}"#).await;
    assert_eq!(a.status, 501, "not emulated: {}", a.body);
    let a = operator_call(&base, Method::POST, &[JSON], &call("nope")).await;
    assert_eq!((a.status, a.body.as_str()), (404, "Agent 'nope' not found"));

    // An UNREACHABLE agent marked gone: its task is GONE_BY_OPERATOR at once, while its process, behind
    // the partition, runs on until the agent reconnects and is shut down.
    let agent = w.launch_beating("t1").await;
    let pid = w.pid("t1").await;
    w.fault(&format!("agents/{}/partition", agent.value)).await;
    assert_eq!(w.next_update("t1").await.state, TaskState::Unreachable);
    let a = operator_call(&base, Method::POST, &[JSON], &call(&agent.value)).await;
    assert_eq!((a.status, a.body.as_str()), (200, ""));
    let s = w.next_update("t1").await;
    assert_eq!(s.state, TaskState::GoneByOperator);
    assert_eq!(s.reason, Some(Reason::ReasonAgentRemovedByOperator));
    assert_eq!(s.message.as_deref(), Some("Agent has been marked gone"));
    assert!(s.uuid.is_none());
    let again = operator_call(&base, Method::POST, &[JSON], &call(&agent.value)).await;
    assert_eq!(again.status, 200, "idempotent");
    let s = w.reconcile("t1", &agent).await;
    assert_eq!(s.state, TaskState::GoneByOperator);
    assert!(
        process_state(pid).is_some(),
        "still running behind the partition"
    );
    assert_eq!(
        w.fault(&format!("agents/{}/heal", agent.value)).await.0,
        200
    );
    eventually(|| process_state(pid).is_none()).await;
    no_update_for(&mut w.d, "t1", Duration::from_millis(500)).await;
    w.stop().await;

    // With credentials: 401 in the operator realm, then the call goes through.
    let mut cfg = EmuConfig::fast(1);
    cfg.credentials = Some(("ops".into(), "secret".into()));
    let secured = MesosEmu::start(cfg).await.expect("emulator");
    let agent = secured.agent_ids()[0].clone();
    let a = operator_call(&secured.url(), Method::POST, &[JSON], &call(&agent)).await;
    assert_eq!(
        (a.status, a.www_authenticate.as_deref()),
        (401, Some("Basic realm=\"mesos-master-readwrite\""))
    );
    let auth = format!(
        "Basic {}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "ops:secret")
    );
    let authed = [JSON, ("authorization", auth.as_str())];
    let a = operator_call(&secured.url(), Method::POST, &authed, &call(&agent)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    secured.set_leader(Some("leader.test:5050".into()));
    let a = operator_call(&secured.url(), Method::POST, &authed, &call(&agent)).await;
    assert_eq!(
        (a.status, a.location.as_deref()),
        (307, Some("//leader.test:5050/api/v1"))
    );
    secured.shutdown();
}

#[tokio::test]
async fn a_frozen_partition_stops_the_task_until_it_heals() {
    let mut w = World::start(|_| {}).await;
    let agent = w.launch_beating("t1").await;
    let pid = w.pid("t1").await;
    let (status, _) = w
        .fault(&format!("agents/{}/partition?freeze=true", agent.value))
        .await;
    assert_eq!(status, 200);
    eventually(|| process_state(pid) == Some('T')).await;
    assert_eq!(w.agent_state(&agent)["machine"], "frozen");
    assert_eq!(w.next_update("t1").await.state, TaskState::Unreachable);
    // The master cannot reach it: a KILL is answered as by reconciliation, and nothing is killed.
    w.d.client
        .send(Call::kill(TaskID::new("t1"), Some(agent.clone()), None))
        .await
        .expect("kill");
    let s = w.next_update("t1").await;
    assert_eq!(
        (s.state, s.reason),
        (TaskState::Unreachable, Some(Reason::ReasonReconciliation))
    );
    assert_eq!(process_state(pid), Some('T'));

    assert_eq!(
        w.fault(&format!("agents/{}/heal", agent.value)).await.0,
        200
    );
    eventually(|| process_state(pid).is_some_and(|s| s != 'T')).await;
    let s = w.next_update("t1").await;
    assert_eq!(
        (s.state, s.reason),
        (TaskState::Running, Some(Reason::ReasonAgentReregistered))
    );
    let beat = w.dir.path().join("sandboxes/t1/beat");
    let first = std::fs::read_to_string(&beat).unwrap_or_default();
    eventually(|| std::fs::read_to_string(&beat).unwrap_or_default() != first).await;
    w.d.client
        .send(Call::kill(TaskID::new("t1"), Some(agent.clone()), None))
        .await
        .expect("kill");
    let s = ack_until_task(&mut w.d, "t1", TaskState::Killed).await;
    assert_eq!(s.state, TaskState::Killed, "{s:?}");
    eventually(|| process_state(pid).is_none()).await;
    w.stop().await;
}

/// `remove` keeps today's immediate removal: TASK_GONE (REASON_AGENT_REMOVED) at once, the process
/// killed and its volume unmounted.
#[tokio::test]
async fn a_removed_agent_ends_its_tasks_at_once() {
    let mut w = World::start(|_| {}).await;
    let agent = w.launch_beating("t1").await;
    let pid = w.pid("t1").await;
    assert_eq!(
        w.fault(&format!("agents/{}/remove", agent.value)).await.0,
        200
    );
    let s = w.next_update("t1").await;
    assert_eq!(
        (s.state, s.reason),
        (TaskState::Gone, Some(Reason::ReasonAgentRemoved))
    );
    eventually(|| process_state(pid).is_none()).await;
    eventually(|| w.attached_to().is_none()).await;
    w.stop().await;
}
