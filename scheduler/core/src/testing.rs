//! Test support shared by the core's tests and (with the `testing` feature) by other crates' tests and
//! benchmarks: builders for domain values and a [`Harness`] that drives a [`Core`] with a virtual clock,
//! drains its commands, replays its `Persist` writes onto a copy of the durable state and audits the
//! command stream (a slot's new task is persisted before its ACCEPT; a launch only follows a terminal,
//! force-replaced or storage-fenced task, and only an UNREACHABLE task is fenced).

use crate::command::{Command, MesosCommand, SidecarCommand};
use crate::config::{Config, Strategy};
use crate::core::Core;
use crate::domain::{
    CommandResult, DriverScope, Hello, Offer, PortRange, Report, StatusSource, TaskState,
    TaskStatus, VolumeReport,
};
use crate::ids::{AgentId, FrameworkId, Hostname, Millis, NodeId, OfferId, TaskId, VolumeName};
use crate::state::{PersistedState, StateWrite};

/// A valid id from a test constant.
fn must<T, E: std::fmt::Debug>(r: Result<T, E>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("test constant rejected: {e:?}"),
    }
}

/// A durable state as a running cluster leaves it: a framework id, a bootstrap, three nodes (one
/// RUNNING, one never launched, one scaled down with its volumes kept).
#[must_use]
pub fn sample_state() -> PersistedState {
    use crate::state::{Bootstrap, SlotRecord, TaskRecord};
    let slot = |n: u64, task: Option<TaskRecord>, removed: bool| SlotRecord {
        node_id: NodeId(n),
        volumes: vec![vol(&format!("es-{n}-data")), vol(&format!("es-{n}-config"))],
        generation: u64::from(task.is_some()),
        task,
        removed,
        forced: false,
        fenced: false,
        last_reason: None,
        mount_host: None,
        removal: None,
        config_generation: 1,
        cert_not_after: (n == 1).then_some(1_900_000_000),
    };
    let running = TaskRecord {
        task_id: task("fw-1-1.1"),
        agent_id: agent("agent-1"),
        host: host("a1.example"),
        http_port: 31000,
        transport_port: 31001,
        state: Some(TaskState::Running),
        publish_address: Some("a1.example".into()),
    };
    PersistedState {
        framework_id: Some(must(FrameworkId::new("fw-1"))),
        desired: 2,
        cluster_formed: true,
        bootstrap: Some(Bootstrap {
            cluster_uuid: "kq3XcI5mT2a8ZxkYx0ZbZw".into(),
            security: crate::config::Security::Off,
        }),
        slots: [
            slot(1, Some(running), false),
            slot(2, None, false),
            slot(3, None, true),
        ]
        .into_iter()
        .map(|s| (s.node_id, s))
        .collect(),
        groups: std::collections::BTreeMap::new(),
        node_config: None,
        rollout: None,
    }
}

/// What the core asks the shell to launch for node 3 on `agent-1` (ports 31000/31001, one data volume
/// of `driver`, or a sandbox path without one).
#[must_use]
pub fn launch_spec(
    containerizer: crate::config::Containerizer,
    driver: Option<&str>,
) -> crate::command::LaunchSpec {
    crate::command::LaunchSpec {
        node_id: NodeId(3),
        task_id: task("elasticsearch-3.1"),
        name: "elasticsearch-3".to_owned(),
        agent_id: agent("M-S1"),
        host: host("agent-1"),
        cpus: 1.0,
        mem_mb: 2048.0,
        disk_mb: 0.0,
        heap_mb: 1024,
        image: "elasticsearch:8".to_owned(),
        containerizer,
        http_port: 31000,
        transport_port: 31001,
        volumes: vec![crate::command::LaunchVolume {
            name: vol("elasticsearch3data"),
            container_path: "/data".to_owned(),
            driver: driver.map(str::to_owned),
            driver_options: vec![("size".to_owned(), "16".to_owned())],
        }],
        env: vec![("ELASTICSEARCH_NODE_ID".to_owned(), "3".to_owned())],
        health_check_port: 31000,
        health_check_path: "/_cluster/health?local=true".to_owned(),
        role: "elasticsearch".to_owned(),
        resources: offer("o", "agent-1", 1.0, 2048.0, 0.0).take(1.0, 2048.0, 0.0, &[31000, 31001]),
    }
}

/// `spec` on ports `http` and `transport`, its resources taken from `o` as the core takes them.
#[must_use]
pub fn launch_spec_from(
    mut spec: crate::command::LaunchSpec,
    o: &Offer,
    http: u16,
    transport: u16,
) -> crate::command::LaunchSpec {
    (spec.http_port, spec.transport_port, spec.health_check_port) = (http, transport, http);
    spec.resources = o.take(spec.cpus, spec.mem_mb, spec.disk_mb, &[http, transport]);
    spec
}

/// A dynamic reservation for `elasticsearch` by principal `ops` with one label.
#[must_use]
pub fn dynamic_reservation() -> Vec<crate::domain::Reservation> {
    vec![crate::domain::Reservation {
        dynamic: true,
        role: "elasticsearch".into(),
        principal: Some("ops".into()),
        labels: Some(vec![("team".into(), Some("search".into()))]),
    }]
}

/// A static reservation for `elasticsearch` (the agent's `--resources`).
#[must_use]
pub fn static_reservation() -> Vec<crate::domain::Reservation> {
    vec![crate::domain::Reservation {
        dynamic: false,
        role: "elasticsearch".into(),
        principal: None,
        labels: None,
    }]
}

/// [`offer`] with part of it reserved for `elasticsearch`: `cpus` dynamically reserved cpus, 512 MB
/// statically reserved memory and port 31000 dynamically reserved (all included in the totals).
#[must_use]
pub fn reserved_offer(id: &str, host_name: &str, cpus: f64) -> Offer {
    use crate::domain::{ResourceAmount, ResourcePart};
    let part = |name: &str, reservations, amount| ResourcePart {
        name: name.to_owned(),
        reservations,
        amount,
    };
    Offer {
        role: "elasticsearch".into(),
        reserved: vec![
            part("cpus", dynamic_reservation(), ResourceAmount::Scalar(cpus)),
            part("mem", static_reservation(), ResourceAmount::Scalar(512.0)),
            part(
                "ports",
                dynamic_reservation(),
                ResourceAmount::Ranges(vec![PortRange {
                    begin: 31000,
                    end: 31000,
                }]),
            ),
        ],
        ..offer(id, host_name, 4.0, 8192.0, 1000.0)
    }
}

/// A host name.
#[must_use]
pub fn host(name: &str) -> Hostname {
    must(Hostname::new(name))
}

/// The agent id the builders give `host`.
#[must_use]
pub fn agent(host: &str) -> AgentId {
    must(AgentId::new(format!("agent-{host}")))
}

/// A task id.
#[must_use]
pub fn task(id: &str) -> TaskId {
    must(TaskId::new(id))
}

/// A volume name.
#[must_use]
pub fn vol(name: &str) -> VolumeName {
    must(VolumeName::new(name))
}

/// An offer on `host` with `cpus`, `mem`, `disk` and ports 31000-31009.
#[must_use]
pub fn offer(id: &str, host_name: &str, cpus: f64, mem: f64, disk: f64) -> Offer {
    Offer {
        id: must(OfferId::new(id)),
        agent_id: agent(host_name),
        hostname: host(host_name),
        zone: None,
        ip: None,
        cpus,
        mem_mb: mem,
        disk_mb: disk,
        ports: vec![PortRange {
            begin: 31000,
            end: 31009,
        }],
        attributes: Vec::new(),
        role: "*".into(),
        reserved: Vec::new(),
        unavailability: None,
    }
}

/// [`offer`] from an agent whose machine is scheduled for maintenance from `start`.
#[must_use]
pub fn unavailable_offer(id: &str, host_name: &str, start: Millis) -> Offer {
    Offer {
        unavailability: Some(crate::domain::Unavailability {
            start,
            duration_ms: Some(3_600_000),
        }),
        ..offer(id, host_name, 4.0, 8192.0, 1000.0)
    }
}

/// A status update from the agent (with a uuid) or the master (without).
#[must_use]
pub fn status(
    task_id: &TaskId,
    host_name: &str,
    state: TaskState,
    uuid: Option<&str>,
) -> TaskStatus {
    TaskStatus {
        task_id: task_id.clone(),
        agent_id: Some(agent(host_name)),
        state,
        reason: None,
        message: None,
        source: Some(if uuid.is_some() {
            StatusSource::Executor
        } else {
            StatusSource::Master
        }),
        uuid: uuid.map(str::to_owned),
        healthy: None,
    }
}

/// A sidecar hello for `host`.
#[must_use]
pub fn hello(
    host_name: &str,
    zone: Option<&str>,
    max_attachments: Option<u32>,
    instance: &str,
) -> Hello {
    Hello {
        hostname: host(host_name),
        agent_id: Some(agent(host_name)),
        sidecar_version: "0.1.0".into(),
        driver_name: "rexray".into(),
        driver_scope: DriverScope::Global,
        zone: zone.map(str::to_owned),
        max_attachments,
        instance_id: instance.into(),
        features: vec![
            crate::domain::FEATURE_VOLUME_OWNER.into(),
            crate::domain::FEATURE_NODE_IDENTITY.into(),
        ],
    }
}

/// A sidecar hello for `host` that declares `watch_delta` (it observes the share it is assigned).
#[must_use]
pub fn hello_observing(host_name: &str, zone: Option<&str>, instance: &str) -> Hello {
    let mut h = hello(host_name, zone, None, instance);
    h.features.push(crate::domain::FEATURE_WATCH_DELTA.into());
    h
}

/// What each `watch_delta` sidecar was told to observe, rebuilt from the commands as a sidecar applies
/// them: a WatchDelta with `reset` starts over; a host that went away is dropped with [`Shares::gone`].
#[derive(Debug, Default, Clone)]
pub struct Shares(
    pub std::collections::BTreeMap<Hostname, std::collections::BTreeMap<VolumeName, bool>>,
);

impl Shares {
    /// Applies every WatchDelta among `cmds`.
    pub fn apply(&mut self, cmds: &[Command]) {
        for c in cmds {
            if let Command::Sidecar {
                host,
                command: crate::command::SidecarCommand::WatchDelta { reset, add, remove },
            } = c
            {
                let share = self.0.entry(host.clone()).or_default();
                if *reset {
                    share.clear();
                }
                for v in remove {
                    share.remove(v);
                }
                for (v, urgent) in add {
                    share.insert(v.clone(), *urgent);
                }
            }
        }
    }

    /// The sidecar of `host` disconnected: its share died with its stream.
    pub fn gone(&mut self, host: &Hostname) {
        self.0.remove(host);
    }

    /// The hosts observing `volume`.
    #[must_use]
    pub fn observers(&self, volume: &VolumeName) -> Vec<Hostname> {
        self.0
            .iter()
            .filter(|(_, s)| s.contains_key(volume))
            .map(|(h, _)| h.clone())
            .collect()
    }
}

/// A volume report.
#[must_use]
pub fn volume(
    name: &VolumeName,
    exists: bool,
    zone: Option<&str>,
    attached_here: bool,
) -> VolumeReport {
    VolumeReport {
        name: name.clone(),
        exists,
        size_bytes: exists.then_some(10 << 30),
        free_bytes: None,
        zone: zone.map(str::to_owned),
        attached_here,
        driver_attachment: None,
        last_error: None,
    }
}

/// A healthy report.
#[must_use]
pub fn report(sequence: u64, volumes: Vec<VolumeReport>, attachments_used: u32) -> Report {
    Report {
        sequence,
        driver_healthy: true,
        driver_latency_micros: 800,
        driver_error: None,
        volumes,
        attachments_used,
    }
}

/// A config for tests: framework `es`, 1 cpu, 1024 MB, 100 MB disk, the given strategy.
#[must_use]
pub fn config(strategy: Strategy) -> Config {
    let mut c = Config::new("es");
    c.cpus = 1.0;
    c.mem_mb = 1024.0;
    c.disk_mb = 100.0;
    c.heap_mb = 512;
    c.startup_grace_ms = 0;
    c.strategy = strategy;
    c
}

/// The external strategy with the `rexray` driver.
#[must_use]
pub fn external(auto_create: bool) -> Strategy {
    Strategy::External {
        driver: "rexray".into(),
        auto_create,
        create_options: vec![("size".into(), "10".into())],
        driver_options: vec![("size".into(), "10".into())],
    }
}

/// Drives a core with a virtual clock and audits what it emits.
#[derive(Debug)]
pub struct Harness {
    /// The core under test.
    pub core: Core,
    /// Virtual time.
    pub now: Millis,
    /// The durable state: the initial state plus every emitted write, as a store would hold it.
    pub store: PersistedState,
    /// Every command drained so far.
    pub log: Vec<Command>,
    /// Violations of the command-stream rules seen so far.
    pub violations: Vec<String>,
    offer_seq: u64,
}

impl Harness {
    /// A harness around a fresh core.
    #[must_use]
    pub fn new(config: Config) -> Harness {
        Harness::restore(config, PersistedState::default())
    }

    /// A harness around a core restored from `store`.
    #[must_use]
    pub fn restore(config: Config, store: PersistedState) -> Harness {
        let core = must(Core::new(config, store.clone()));
        let mut h = Harness {
            core,
            now: Millis(0),
            store,
            log: Vec::new(),
            violations: Vec::new(),
            offer_seq: 0,
        };
        h.drain();
        h
    }

    /// Restarts the core from the durable state (a scheduler kill -9), keeping the clock.
    pub fn restart(&mut self) {
        let config = self.core.config().clone();
        self.core = must(Core::new(config, self.store.clone()));
        self.drain();
    }

    /// Drains and audits every queued command; returns them.
    pub fn drain(&mut self) -> Vec<Command> {
        let mut out = Vec::new();
        while let Some(c) = self.core.poll_command() {
            self.audit(&c);
            if let Command::Persist(w) = &c {
                self.store.apply(w);
            }
            out.push(c.clone());
            self.log.push(c);
        }
        out
    }

    fn audit(&mut self, c: &Command) {
        match c {
            Command::Persist(StateWrite::Slot(new)) => {
                let Some(old) = self.store.slots.get(&new.node_id) else {
                    return;
                };
                let (Some(old_task), Some(new_task)) = (&old.task, &new.task) else {
                    if old.task.is_none()
                        && new.task.is_some()
                        && old.generation > 0
                        && !old.forced
                        && !old.fenced
                    {
                        self.violations.push(format!(
                            "node {}: relaunch after a dropped task without force or fencing",
                            new.node_id
                        ));
                    }
                    if let (Some(t), None) = (&old.task, &new.task)
                        && new.fenced
                        && t.state != Some(TaskState::Unreachable)
                    {
                        self.violations.push(format!(
                            "node {}: task {} fenced while {:?}, not UNREACHABLE",
                            new.node_id, t.task_id, t.state
                        ));
                    }
                    return;
                };
                if old_task.task_id != new_task.task_id && !old_task.is_terminal() && !old.forced {
                    self.violations.push(format!(
                        "node {}: task {} persisted while {} is {:?}",
                        new.node_id, new_task.task_id, old_task.task_id, old_task.state
                    ));
                }
            }
            Command::Mesos(MesosCommand::Accept { launch, .. }) => {
                let persisted = self
                    .store
                    .slots
                    .get(&launch.node_id)
                    .and_then(|r| r.task.as_ref())
                    .is_some_and(|t| t.task_id == launch.task_id && t.agent_id == launch.agent_id);
                if !persisted {
                    self.violations.push(format!(
                        "ACCEPT of {} before its task was persisted",
                        launch.task_id
                    ));
                }
            }
            _ => {}
        }
    }

    /// Advances the clock by `ms`, firing every timer due on the way, and drains.
    pub fn advance(&mut self, ms: u64) -> Vec<Command> {
        let end = self.now.plus(ms);
        let mut out = Vec::new();
        while let Some(t) = self.core.poll_timeout() {
            if t > end {
                break;
            }
            self.now = self.now.max(t);
            self.core.handle_timeout(self.now);
            out.extend(self.drain());
            if self.core.poll_timeout().is_some_and(|n| n <= self.now) {
                // A timer that re-arms in the past would loop forever.
                self.core.handle_timeout(self.now);
                out.extend(self.drain());
                if self.core.poll_timeout().is_some_and(|n| n <= self.now) {
                    self.violations
                        .push("poll_timeout stays in the past after handle_timeout".into());
                    break;
                }
            }
        }
        self.now = end;
        out
    }

    /// SUBSCRIBED with framework id `fw-1`.
    pub fn subscribe(&mut self) -> Vec<Command> {
        self.core
            .handle_subscribed(must(FrameworkId::new("fw-1")), self.now);
        self.drain()
    }

    /// A fresh offer id.
    pub fn next_offer_id(&mut self) -> String {
        self.offer_seq += 1;
        format!("o-{}", self.offer_seq)
    }

    /// Offers and drains.
    pub fn offers(&mut self, offers: Vec<Offer>) -> Vec<Command> {
        self.core.handle_offers(offers, self.now);
        self.drain()
    }

    /// Connects a sidecar and sends a report in which every given volume exists in `zone`.
    pub fn sidecar(
        &mut self,
        host_name: &str,
        zone: Option<&str>,
        max: Option<u32>,
        volumes: &[VolumeName],
    ) -> Vec<Command> {
        self.core
            .handle_sidecar_hello(hello(host_name, zone, max, "i-1"), self.now);
        let vols = volumes
            .iter()
            .map(|v| volume(v, true, zone, false))
            .collect();
        let seq = self.now.0 + 1;
        self.core
            .handle_sidecar_report(&host(host_name), report(seq, vols, 0), self.now);
        self.drain()
    }

    /// One offer of 4 cpus, 8 GB and 1 GB of disk from each of `hosts`, in one round; drains.
    pub fn offers_from(&mut self, hosts: &[&str]) -> Vec<Command> {
        let offers: Vec<_> = hosts
            .iter()
            .map(|x| {
                let id = self.next_offer_id();
                offer(&id, x, 4.0, 8192.0, 1000.0)
            })
            .collect();
        self.offers(offers)
    }

    /// [`Harness::offers_from`] `hosts`, and every task launched on them reports RUNNING (the normal
    /// strategy launches at once; external volumes wait for a prepare).
    pub fn launch_running(&mut self, hosts: &[&str]) {
        let cmds = self.offers_from(hosts);
        for l in accepts(&cmds) {
            self.update(status(
                &l.task_id,
                l.host.as_str(),
                TaskState::Running,
                Some("u"),
            ));
        }
    }

    /// Answers a prepare with the volumes' reports.
    pub fn prepare_result_with(
        &mut self,
        host_name: &str,
        command_id: u64,
        volumes: Vec<VolumeReport>,
    ) -> Vec<Command> {
        let result = CommandResult {
            command_id,
            ok: true,
            error: None,
            volumes,
            csr_pem: None,
        };
        self.core
            .handle_sidecar_result(&host(host_name), result, self.now);
        self.drain()
    }

    /// Answers a prepare.
    pub fn prepare_result(&mut self, host_name: &str, command_id: u64, ok: bool) -> Vec<Command> {
        let result = CommandResult {
            command_id,
            ok,
            error: (!ok).then(|| "Mount: volume busy".to_owned()),
            volumes: Vec::new(),
            csr_pem: None,
        };
        self.core
            .handle_sidecar_result(&host(host_name), result, self.now);
        self.drain()
    }

    /// Delivers an update.
    pub fn update(&mut self, s: TaskStatus) -> Vec<Command> {
        self.core.handle_update(s, self.now);
        self.drain()
    }

    /// Node `node`'s current task answers `GET /` with `cluster_uuid`.
    pub fn es_root(&mut self, node: u64, cluster_uuid: &str) -> Vec<Command> {
        if let Some(task) = self.task_of(node) {
            self.core
                .handle_es_root(NodeId(node), &task, cluster_uuid, self.now);
        }
        self.drain()
    }

    /// Delivers an observation of the Elasticsearch cluster.
    pub fn es_cluster(&mut self, cluster: crate::domain::EsCluster) -> Vec<Command> {
        self.core.handle_es_cluster(cluster, self.now);
        self.drain()
    }

    /// Answers the Elasticsearch call `call_id` (`None`: success; `Some(e)`: Elasticsearch's error).
    pub fn es_result(&mut self, call_id: u64, error: Option<&str>) -> Vec<Command> {
        let result = match error {
            None => Ok(()),
            Some(e) => Err(e.to_owned()),
        };
        self.core.handle_es_call_result(call_id, result, self.now);
        self.drain()
    }

    /// INVERSE_OFFERS: inverse offer `id` for the agent of `host_name`, a window starting at `start`.
    pub fn inverse_offer(&mut self, id: &str, host_name: &str, start: Millis) -> Vec<Command> {
        let offer = crate::domain::InverseOffer {
            id: must(OfferId::new(id)),
            agent_id: agent(host_name),
            unavailability: crate::domain::Unavailability {
                start,
                duration_ms: Some(3_600_000),
            },
        };
        self.core.handle_inverse_offers(vec![offer], self.now);
        self.drain()
    }

    /// The current task of `node`.
    #[must_use]
    pub fn task_of(&self, node: u64) -> Option<TaskId> {
        self.core
            .persisted()
            .slots
            .get(&NodeId(node))
            .and_then(|r| r.task.as_ref())
            .map(|t| t.task_id.clone())
    }

    /// How long `node` may not be placed from now (its backoff); 0 when it may be.
    #[must_use]
    pub fn backoff_left(&self, node: u64) -> u64 {
        self.core
            .nodes(self.now)
            .into_iter()
            .find(|n| n.node_id == NodeId(node))
            .map_or(0, |n| n.not_before.since(self.now))
    }
}

/// Fails the test on a command-stream violation, a store that differs from the core's durable state,
/// or a broken invariant of the core.
pub fn check(h: &Harness) {
    assert!(h.violations.is_empty(), "{:?}", h.violations);
    assert_eq!(&h.store, h.core.persisted());
    if let Err(e) = h.core.check_invariants() {
        panic!("{e}");
    }
}

/// A harness around `config` with `n` nodes RUNNING on `h1..hn` (one offer each), each having reported
/// the cluster's UUID `uuid-1`, [`check`]ed.
#[must_use]
pub fn running_cluster(config: Config, n: u64) -> Harness {
    let mut h = Harness::new(config);
    h.subscribe();
    if let Err(e) = h.core.handle_scale(n, h.now) {
        panic!("scale to {n}: {e}");
    }
    h.drain();
    let hosts: Vec<String> = (1..=n).map(|i| format!("h{i}")).collect();
    h.launch_running(&hosts.iter().map(String::as_str).collect::<Vec<_>>());
    for i in 1..=n {
        h.es_root(i, "uuid-1");
    }
    check(&h);
    h
}

/// The `(host, command_id, node)` of every Prepare in `cmds`.
#[must_use]
pub fn prepares(cmds: &[Command]) -> Vec<(Hostname, u64, NodeId)> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Sidecar {
                host,
                command:
                    SidecarCommand::Prepare {
                        command_id,
                        node_id,
                        ..
                    },
            } => Some((host.clone(), *command_id, *node_id)),
            _ => None,
        })
        .collect()
}

/// Every ACCEPT's launch in `cmds`.
#[must_use]
pub fn accepts(cmds: &[Command]) -> Vec<crate::command::LaunchSpec> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Mesos(MesosCommand::Accept { launch, .. }) => Some((**launch).clone()),
            _ => None,
        })
        .collect()
}

/// Every declined offer id in `cmds`, with the refuse filter.
#[must_use]
pub fn declines(cmds: &[Command]) -> Vec<(String, f64)> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Mesos(MesosCommand::Decline {
                offer_ids,
                refuse_seconds,
            }) => Some(
                offer_ids
                    .iter()
                    .map(|o| (o.to_string(), *refuse_seconds))
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        })
        .flatten()
        .collect()
}

/// Whether `cmds` contain the Mesos command `m`.
#[must_use]
pub fn has(cmds: &[Command], m: &MesosCommand) -> bool {
    cmds.iter()
        .any(|c| matches!(c, Command::Mesos(x) if x == m))
}

/// Every Elasticsearch call in `cmds`, with its id.
#[must_use]
pub fn es_calls(cmds: &[Command]) -> Vec<(u64, crate::command::EsCall)> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Elasticsearch { call_id, call } => Some((*call_id, call.clone())),
            _ => None,
        })
        .collect()
}

/// A shard copy of `index` on `node` (`None`: unassigned), STARTED unless unassigned.
#[must_use]
pub fn shard(index: &str, n: u32, primary: bool, node: Option<&str>) -> crate::domain::EsShard {
    crate::domain::EsShard {
        index: index.to_owned(),
        shard: n,
        primary,
        state: if node.is_some() {
            crate::domain::ShardState::Started
        } else {
            crate::domain::ShardState::Unassigned
        },
        node: node.map(str::to_owned),
    }
}

/// A green cluster whose elected master is the first of `nodes` (each `(name, master-eligible)`, the
/// Elasticsearch id `id-<name>`), every node on `version`, holding `shards`, with no shutdown record
/// and no voting exclusion.
#[must_use]
pub fn es_cluster(
    nodes: &[(&str, bool)],
    version: &str,
    shards: Vec<crate::domain::EsShard>,
) -> crate::domain::EsCluster {
    use crate::domain::{EsCluster, EsHealth, EsNode, EsVersion, EsView, ShardCounts};
    let unassigned = shards.iter().filter(|s| s.node.is_none()).count() as u64;
    EsCluster {
        view: EsView::Master {
            master: nodes
                .first()
                .map(|(n, _)| (*n).to_owned())
                .unwrap_or_default(),
            nodes: nodes.iter().map(|(n, _)| (*n).to_owned()).collect(),
        },
        health: if unassigned == 0 {
            EsHealth::Green
        } else {
            EsHealth::Yellow
        },
        shard_counts: Some(ShardCounts {
            active: shards.len() as u64 - unassigned,
            relocating: 0,
            initializing: 0,
            unassigned,
        }),
        nodes: nodes
            .iter()
            .map(|(n, master)| {
                (
                    (*n).to_owned(),
                    EsNode {
                        id: format!("id-{n}"),
                        version: EsVersion::parse(version),
                        master_eligible: Some(*master),
                    },
                )
            })
            .collect(),
        shards: Some(shards),
        shutdowns: Some(std::collections::BTreeMap::new()),
        voting_exclusions: Some(std::collections::BTreeSet::new()),
    }
}
