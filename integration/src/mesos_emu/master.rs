//! The emulated master's state machine: frameworks and their streams, agents, the allocator (offers,
//! filters, suppress/revive), ACCEPT validation, status-update delivery with acknowledgement and resend,
//! reconciliation, and the faults. Everything runs under one lock; time comes from `tokio::time` so tests
//! can use short intervals.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use tether_mesos::model::*;
use tether_mesos::recordio;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::EmuConfig;
use super::launcher::{LaunchSpec, Reporter, TaskControl};
use super::resources::Res;

const DEFAULT_REFUSE: f64 = 5.0;
const MAX_REFUSE: f64 = 365.0 * 24.0 * 3600.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AgentStatus {
    Active,
    Unreachable,
    Removed,
    Gone,
}

#[derive(Debug)]
pub(crate) struct Agent {
    pub id: AgentID,
    pub cfg: super::AgentConfig,
    pub free: Res,
    pub status: AgentStatus,
    pub partitioned_at: Option<Instant>,
    pub unreachable_ns: Option<i64>,
    /// After a master restart, until this instant the agent is "recovered but not re-registered".
    pub recovering_until: Option<Instant>,
}

impl Agent {
    fn reachable(&self, now: Instant) -> bool {
        self.status == AgentStatus::Active && self.partitioned_at.is_none() && !self.recovering(now)
    }
    fn recovering(&self, now: Instant) -> bool {
        self.recovering_until.is_some_and(|t| now < t)
    }
}

#[derive(Debug)]
pub(crate) struct Task {
    pub info: TaskInfo,
    pub agent: AgentID,
    pub res: Res,
    /// Latest state reported by the agent (or set by the master).
    pub state: TaskState,
    /// State of the latest update sent to the framework.
    pub sent_state: Option<TaskState>,
    pub healthy: Option<bool>,
    /// Agent updates not yet acknowledged; the head is the one outstanding.
    pub pending: VecDeque<TaskStatus>,
    pub control: Option<mpsc::UnboundedSender<TaskControl>>,
    pub unreachable_ns: Option<i64>,
}

#[derive(Debug)]
pub(crate) struct StreamConn {
    pub id: String,
    pub tx: mpsc::UnboundedSender<Bytes>,
    pub next_heartbeat: Instant,
}

#[derive(Debug)]
pub(crate) struct Framework {
    pub id: FrameworkID,
    pub info: FrameworkInfo,
    pub stream: Option<StreamConn>,
    pub suppressed: BTreeSet<String>,
    pub tasks: BTreeMap<String, Task>,
    pub failover_deadline: Option<Instant>,
}

impl Framework {
    fn aware(&self) -> bool {
        self.info.has_capability(CapabilityType::PartitionAware)
    }
    fn multi_role(&self) -> bool {
        self.info.has_capability(CapabilityType::MultiRole)
    }
    fn roles(&self) -> Vec<String> {
        if self.multi_role() {
            self.info.roles.clone()
        } else {
            vec!["*".to_string()]
        }
    }
    /// Without PARTITION_AWARE, the partition states all read TASK_LOST.
    fn map_state(&self, s: TaskState) -> TaskState {
        match s {
            TaskState::Dropped
            | TaskState::Unreachable
            | TaskState::Gone
            | TaskState::GoneByOperator
            | TaskState::Unknown
                if !self.aware() =>
            {
                TaskState::Lost
            }
            s => s,
        }
    }
}

#[derive(Debug)]
pub(crate) struct OfferRec {
    pub framework: String,
    pub agent: AgentID,
    pub role: String,
    pub res: Res,
}

#[derive(Debug)]
struct Filter {
    framework: String,
    role: String,
    agent: String,
    until: Instant,
    refused: Res,
}

/// What the HTTP layer answers.
#[derive(Debug)]
pub(crate) enum Reply {
    Status(u16, String),
    Stream {
        stream_id: String,
        rx: mpsc::UnboundedReceiver<Bytes>,
    },
}

#[derive(Debug)]
pub(crate) struct State {
    pub cfg: Arc<EmuConfig>,
    pub master_id: String,
    pub port: u16,
    next_fw: u32,
    next_offer: u64,
    pub agents: BTreeMap<String, Agent>,
    pub frameworks: BTreeMap<String, Framework>,
    pub removed: BTreeSet<String>,
    pub offers: BTreeMap<String, OfferRec>,
    filters: Vec<Filter>,
    /// When set, this master is not the leader: 307 to `//<leader>/api/v1/scheduler`.
    pub leader: Option<String>,
    /// When set, 503 (no leader elected).
    pub unavailable: bool,
    next_allocation: Instant,
    next_resend: Instant,
    allocate_now: bool,
    me: Option<Weak<Shared>>,
    /// Copy of every event record written, for conformance tests.
    pub tap: Option<mpsc::UnboundedSender<Bytes>>,
    pub heartbeats_enabled: bool,
}

/// The shared core: state plus the handle launchers report through.
#[derive(Debug)]
pub(crate) struct Shared {
    pub state: Mutex<State>,
}

fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn now_ns() -> i64 {
    (now_secs() * 1e9) as i64
}

fn new_uuid_b64() -> String {
    base64::engine::general_purpose::STANDARD.encode(uuid::Uuid::new_v4().as_bytes())
}

fn encode(tap: Option<&mpsc::UnboundedSender<Bytes>>, ev: &Event) -> Bytes {
    // Serialising our own model cannot fail; an empty record would be skipped by clients anyway.
    let json = serde_json::to_vec(ev).unwrap_or_default();
    if let Some(t) = tap {
        let _ = t.send(Bytes::from(json.clone()));
    }
    recordio::encode(&json)
}

fn master_status(
    task_id: &TaskID,
    state: TaskState,
    reason: Reason,
    message: Option<String>,
    agent: Option<&AgentID>,
) -> TaskStatus {
    let mut s = TaskStatus::new(task_id.clone(), state);
    s.message = message;
    s.source = Some(Source::SourceMaster);
    s.reason = Some(reason);
    s.agent_id = agent.cloned();
    s.timestamp = Some(now_secs());
    s
}

impl Shared {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A status update from an agent's executor: gets a uuid and joins the task's delivery queue.
    pub fn agent_report(
        &self,
        fw: &FrameworkID,
        task_id: &str,
        state: TaskState,
        reason: Option<Reason>,
        message: Option<String>,
        healthy: Option<bool>,
    ) {
        let mut st = self.lock();
        st.report(fw, task_id, state, reason, message, healthy);
    }
}

impl State {
    pub fn new(cfg: Arc<EmuConfig>, port: u16, me: Weak<Shared>) -> State {
        let master_id = uuid::Uuid::new_v4().to_string();
        let now = Instant::now();
        let mut agents = BTreeMap::new();
        for (i, a) in cfg.agents.iter().enumerate() {
            let id = AgentID::new(a.id.clone().unwrap_or_else(|| format!("{master_id}-S{i}")));
            let free = Res::default()
                .scalar("cpus", a.cpus)
                .scalar("mem", a.mem)
                .scalar("disk", a.disk)
                .range("ports", a.ports.0, a.ports.1);
            agents.insert(
                id.value.clone(),
                Agent {
                    id,
                    cfg: a.clone(),
                    free,
                    status: AgentStatus::Active,
                    partitioned_at: None,
                    unreachable_ns: None,
                    recovering_until: None,
                },
            );
        }
        State {
            cfg,
            master_id,
            port,
            next_fw: 0,
            next_offer: 0,
            agents,
            frameworks: BTreeMap::new(),
            removed: BTreeSet::new(),
            offers: BTreeMap::new(),
            filters: Vec::new(),
            leader: None,
            unavailable: false,
            next_allocation: now,
            next_resend: now,
            allocate_now: true,
            me: Some(me),
            tap: None,
            heartbeats_enabled: true,
        }
    }

    pub fn master_info(&self) -> MasterInfo {
        MasterInfo {
            id: self.master_id.clone(),
            ip: u32::from_le_bytes([127, 0, 0, 1]),
            port: u32::from(self.port),
            pid: Some(format!("master@127.0.0.1:{}", self.port)),
            hostname: Some(self.cfg.hostname.clone()),
            version: Some(super::MESOS_VERSION.into()),
            address: Some(Address {
                hostname: Some(self.cfg.hostname.clone()),
                ip: Some("127.0.0.1".into()),
                port: i32::from(self.port),
            }),
            domain: None,
        }
    }

    // ---- emission --------------------------------------------------------------------------------------

    /// Sends an event on the framework's stream; a dead stream disconnects the framework.
    fn emit(&mut self, fw: &str, ev: &Event) {
        let now = Instant::now();
        let Some(f) = self.frameworks.get_mut(fw) else {
            return;
        };
        let Some(s) = &f.stream else { return };
        if s.tx.send(encode(self.tap.as_ref(), ev)).is_err() {
            self.disconnect(fw, now);
        }
    }

    fn disconnect(&mut self, fw: &str, now: Instant) {
        let Some(f) = self.frameworks.get_mut(fw) else {
            return;
        };
        if f.stream.take().is_none() {
            return;
        }
        let timeout = f
            .info
            .failover_timeout
            .unwrap_or(0.0)
            .clamp(0.0, MAX_REFUSE * 100.0);
        f.failover_deadline = Some(now + Duration::from_secs_f64(timeout));
        tracing::info!(framework = fw, "framework disconnected");
        self.drop_offers_of(fw, false);
    }

    /// Returns all offers of `fw` to the agents; with `rescind`, tells the framework.
    fn drop_offers_of(&mut self, fw: &str, rescind: bool) {
        let ids: Vec<String> = self
            .offers
            .iter()
            .filter(|(_, o)| o.framework == fw)
            .map(|(k, _)| k.clone())
            .collect();
        for id in ids {
            self.remove_offer(&id, rescind);
        }
    }

    fn remove_offer(&mut self, offer_id: &str, rescind: bool) -> Option<OfferRec> {
        let o = self.offers.remove(offer_id)?;
        if let Some(a) = self.agents.get_mut(&o.agent.value) {
            a.free.add(&o.res);
        }
        if rescind {
            let fw = o.framework.clone();
            self.emit(&fw, &Event::rescind(OfferID::new(offer_id)));
        }
        Some(o)
    }

    // ---- ticking ---------------------------------------------------------------------------------------

    /// Everything time-driven: heartbeats, allocation, resends, failover timeouts, agent ping timeouts.
    pub fn tick(&mut self, now: Instant) {
        let hb: Vec<String> = self
            .frameworks
            .iter()
            .filter(|(_, f)| {
                self.heartbeats_enabled
                    && f.stream.as_ref().is_some_and(|s| now >= s.next_heartbeat)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for fw in hb {
            if let Some(s) = self.frameworks.get_mut(&fw).and_then(|f| f.stream.as_mut()) {
                s.next_heartbeat = now + self.cfg.heartbeat_interval;
            }
            self.emit(&fw, &Event::heartbeat());
        }
        let expired: Vec<String> = self
            .frameworks
            .iter()
            .filter(|(_, f)| f.stream.is_none() && f.failover_deadline.is_some_and(|d| now >= d))
            .map(|(k, _)| k.clone())
            .collect();
        for fw in expired {
            tracing::info!(framework = %fw, "failover timeout expired; removing framework");
            self.remove_framework(&fw);
        }
        let timed_out: Vec<String> = self
            .agents
            .values()
            .filter(|a| {
                a.status == AgentStatus::Active
                    && a.partitioned_at
                        .is_some_and(|p| now >= p + self.cfg.agent_ping_timeout)
            })
            .map(|a| a.id.value.clone())
            .collect();
        for a in timed_out {
            self.agent_unreachable(&a);
        }
        let recovered: Vec<String> = self
            .agents
            .values()
            .filter(|a| a.recovering_until.is_some_and(|t| now >= t))
            .map(|a| a.id.value.clone())
            .collect();
        if !recovered.is_empty() {
            for a in &recovered {
                if let Some(ag) = self.agents.get_mut(a) {
                    ag.recovering_until = None;
                }
            }
            self.flush_all(now);
            self.allocate_now = true;
        }
        if now >= self.next_resend {
            self.next_resend = now + self.cfg.status_resend_interval;
            self.flush_all(now);
        }
        self.filters.retain(|f| f.until > now);
        if self.allocate_now || now >= self.next_allocation {
            self.allocate_now = false;
            self.next_allocation = now + self.cfg.allocation_interval;
            self.allocate(now);
        }
    }

    fn allocate(&mut self, now: Instant) {
        let mut out: BTreeMap<String, Vec<Offer>> = BTreeMap::new();
        let fws: Vec<String> = self.frameworks.keys().cloned().collect();
        for fw in fws {
            let Some(f) = self.frameworks.get(&fw) else {
                continue;
            };
            if f.stream.is_none() {
                continue;
            }
            let multi = f.multi_role();
            for role in f.roles() {
                if f.suppressed.contains(&role) {
                    continue;
                }
                let agent_ids: Vec<String> = self.agents.keys().cloned().collect();
                for aid in agent_ids {
                    let Some(a) = self.agents.get(&aid) else {
                        continue;
                    };
                    if !a.reachable(now) || a.free.is_empty() {
                        continue;
                    }
                    if self.filters.iter().any(|x| {
                        x.framework == fw
                            && x.role == role
                            && x.agent == aid
                            && x.refused.contains(&a.free)
                    }) {
                        continue;
                    }
                    let res = a.free.clone();
                    let offer_id = format!("{}-O{}", self.master_id, self.next_offer);
                    self.next_offer += 1;
                    let alloc_role = multi.then_some(role.as_str());
                    let zone = a.cfg.zone.as_ref().map(|z| DomainInfo {
                        fault_domain: Some(FaultDomain {
                            region: Name {
                                name: a.cfg.region.clone().unwrap_or_else(|| "region-1".into()),
                            },
                            zone: Name { name: z.clone() },
                        }),
                    });
                    let executor_ids = f
                        .tasks
                        .values()
                        .filter(|t| t.agent.value == aid && !t.state.is_terminal())
                        .map(|t| ExecutorID::new(t.info.task_id.value.clone()))
                        .collect();
                    let offer = Offer {
                        id: OfferID::new(offer_id.clone()),
                        framework_id: f.id.clone(),
                        agent_id: a.id.clone(),
                        hostname: a.cfg.hostname.clone(),
                        url: Some(Url {
                            scheme: "http".into(),
                            address: Address {
                                hostname: Some(a.cfg.hostname.clone()),
                                ip: Some("127.0.0.1".into()),
                                port: 5051,
                            },
                            path: Some("/slave(1)".into()),
                        }),
                        domain: zone,
                        resources: res.to_resources(alloc_role),
                        attributes: a
                            .cfg
                            .attributes
                            .iter()
                            .map(|(k, v)| Attribute::text(k.clone(), v.clone()))
                            .collect(),
                        executor_ids,
                        allocation_info: alloc_role.map(|r| AllocationInfo {
                            role: Some(r.to_string()),
                        }),
                    };
                    if let Some(a) = self.agents.get_mut(&aid) {
                        a.free = Res::default();
                    }
                    self.offers.insert(
                        offer_id,
                        OfferRec {
                            framework: fw.clone(),
                            agent: offer.agent_id.clone(),
                            role: role.clone(),
                            res,
                        },
                    );
                    out.entry(fw.clone()).or_default().push(offer);
                }
            }
        }
        for (fw, offers) in out {
            self.emit(&fw, &Event::offers(offers));
        }
    }

    /// Sends the head of every deliverable task queue.
    fn flush_all(&mut self, now: Instant) {
        let keys: Vec<(String, String)> = self
            .frameworks
            .iter()
            .flat_map(|(f, fr)| fr.tasks.keys().map(move |t| (f.clone(), t.clone())))
            .collect();
        for (f, t) in keys {
            self.flush(&f, &t, now);
        }
    }

    fn flush(&mut self, fw: &str, task: &str, now: Instant) {
        let Some(f) = self.frameworks.get_mut(fw) else {
            return;
        };
        if f.stream.is_none() {
            return;
        }
        let Some(t) = f.tasks.get_mut(task) else {
            return;
        };
        if !self
            .agents
            .get(&t.agent.value)
            .is_some_and(|a| a.reachable(now))
        {
            return;
        }
        let Some(head) = t.pending.front().cloned() else {
            return;
        };
        t.sent_state = Some(head.state);
        self.emit(fw, &Event::update(head));
    }

    // ---- agent-side updates ----------------------------------------------------------------------------

    pub fn report(
        &mut self,
        fw: &FrameworkID,
        task_id: &str,
        state: TaskState,
        reason: Option<Reason>,
        message: Option<String>,
        healthy: Option<bool>,
    ) {
        let now = Instant::now();
        let Some(f) = self.frameworks.get_mut(&fw.value) else {
            return;
        };
        let killing_ok = f.info.has_capability(CapabilityType::TaskKillingState);
        let Some(t) = f.tasks.get_mut(task_id) else {
            return;
        };
        if t.state.is_terminal() || (state == TaskState::Killing && !killing_ok) {
            return;
        }
        let mut s = TaskStatus::new(t.info.task_id.clone(), state);
        s.message = message;
        s.source = Some(if reason == Some(Reason::ReasonContainerLaunchFailed) {
            Source::SourceAgent
        } else {
            Source::SourceExecutor
        });
        s.reason = reason;
        s.agent_id = Some(t.agent.clone());
        s.executor_id = Some(ExecutorID::new(t.info.task_id.value.clone()));
        s.timestamp = Some(now_secs());
        s.uuid = Some(new_uuid_b64());
        s.healthy = healthy.or(t.healthy);
        s.container_status = Some(ContainerStatus {
            container_id: Some(ContainerID::new(format!("c-{}", t.info.task_id.value))),
            network_infos: vec![NetworkInfo {
                ip_addresses: vec![IpAddress {
                    protocol: Some("IPv4".into()),
                    ip_address: Some("127.0.0.1".into()),
                }],
                name: None,
            }],
            executor_pid: None,
        });
        t.state = state;
        t.healthy = s.healthy;
        t.pending.push_back(s);
        let first = t.pending.len() == 1;
        if state.is_terminal() {
            t.control = None;
            let (agent, res) = (t.agent.value.clone(), t.res.clone());
            if let Some(a) = self.agents.get_mut(&agent) {
                a.free.add(&res);
            }
            self.allocate_now = true;
        }
        if first {
            self.flush(&fw.value, task_id, now);
        }
    }

    // ---- calls -----------------------------------------------------------------------------------------

    pub fn subscribe(&mut self, call: Call, stream_header: Option<&str>) -> Reply {
        let now = Instant::now();
        if stream_header.is_some() {
            return Reply::Status(400, "Failed to validate scheduler::Call: Subscribe calls should not include the 'Mesos-Stream-Id' header".into());
        }
        let Some(sub) = call.subscribe else {
            return Reply::Status(
                400,
                "Failed to validate scheduler::Call: Expecting 'subscribe' to be present".into(),
            );
        };
        let mut info = sub.framework_info;
        if call.framework_id != info.id {
            return Reply::Status(400, "Failed to validate scheduler::Call: 'framework_id' differs from 'subscribe.framework_info.id'".into());
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let stream_id = uuid::Uuid::new_v4().to_string();
        let tap = self.tap.clone();
        let fail =
            |tx: mpsc::UnboundedSender<Bytes>, rx: mpsc::UnboundedReceiver<Bytes>, msg: &str| {
                // 200, then ERROR, then the stream closes (tx dropped here).
                let _ = tx.send(encode(tap.as_ref(), &Event::error(msg)));
                Reply::Stream {
                    stream_id: stream_id.clone(),
                    rx,
                }
            };
        if let Some(e) = validate_roles(&info) {
            return fail(tx, rx, &e);
        }
        let id = match &info.id {
            Some(id) if self.removed.contains(&id.value) => {
                return fail(tx, rx, "Framework has been removed");
            }
            Some(id) => id.clone(),
            None => {
                let id = FrameworkID::new(format!("{}-{:04}", self.master_id, self.next_fw));
                self.next_fw += 1;
                id
            }
        };
        info.id = Some(id.clone());
        if let Some(old) = self.frameworks.get_mut(&id.value) {
            if old.info.principal != info.principal {
                return fail(tx, rx, "Changing framework's principal is not allowed");
            }
            // user and checkpoint are immutable; silently keep the old ones.
            info.user = old.info.user.clone();
            info.checkpoint = old.info.checkpoint;
            if let Some(s) = old.stream.take() {
                let _ = s.tx.send(encode(
                    self.tap.as_ref(),
                    &Event::error("Framework failed over"),
                ));
            }
            old.info = info;
            old.failover_deadline = None;
            old.suppressed = sub.suppressed_roles.into_iter().collect();
            self.drop_offers_of(&id.value, false);
        } else {
            self.frameworks.insert(
                id.value.clone(),
                Framework {
                    id: id.clone(),
                    info,
                    stream: None,
                    suppressed: sub.suppressed_roles.into_iter().collect(),
                    tasks: BTreeMap::new(),
                    failover_deadline: None,
                },
            );
        }
        let hb = self.cfg.heartbeat_interval;
        let subscribed = Event::subscribed(Subscribed {
            framework_id: id.clone(),
            heartbeat_interval_seconds: Some(hb.as_secs_f64()),
            master_info: Some(self.master_info()),
        });
        let _ = tx.send(encode(self.tap.as_ref(), &subscribed));
        let _ = tx.send(encode(self.tap.as_ref(), &Event::heartbeat()));
        if let Some(f) = self.frameworks.get_mut(&id.value) {
            f.stream = Some(StreamConn {
                id: stream_id.clone(),
                tx,
                next_heartbeat: now + hb,
            });
        }
        self.allocate_now = true;
        // Outstanding updates are resent on the new stream.
        let tasks: Vec<String> = self
            .frameworks
            .get(&id.value)
            .map(|f| f.tasks.keys().cloned().collect())
            .unwrap_or_default();
        for t in tasks {
            self.flush(&id.value, &t, now);
        }
        tracing::info!(framework = %id, "framework subscribed");
        Reply::Stream { stream_id, rx }
    }

    /// Any call but SUBSCRIBE, after the transport checks.
    pub fn call(&mut self, call: Call, stream_header: Option<&str>) -> Reply {
        let Some(fw_id) = call.framework_id.clone() else {
            return Reply::Status(
                400,
                "Failed to validate scheduler::Call: Expecting 'framework_id' to be present".into(),
            );
        };
        if let Some(e) = validate_payload(&call) {
            return Reply::Status(400, format!("Failed to validate scheduler::Call: {e}"));
        }
        let Some(f) = self.frameworks.get(&fw_id.value) else {
            return Reply::Status(400, "Framework cannot be found".into());
        };
        let Some(s) = &f.stream else {
            return Reply::Status(403, "Framework is not subscribed".into());
        };
        match stream_header {
            None => {
                return Reply::Status(
                    400,
                    "All non-subscribe calls should include the 'Mesos-Stream-Id' header".into(),
                );
            }
            Some(h) if h != s.id => {
                return Reply::Status(
                    400,
                    format!(
                        "The stream ID '{h}' included in this request didn't match the stream ID currently associated with framework ID {fw_id}"
                    ),
                );
            }
            Some(_) => {}
        }
        let fw = fw_id.value.clone();
        let now = Instant::now();
        match call.call_type {
            CallType::Teardown => {
                self.remove_framework(&fw);
            }
            CallType::Accept => {
                if let Some(a) = call.accept {
                    self.accept(&fw, a, now);
                }
            }
            CallType::Decline => {
                if let Some(d) = call.decline {
                    self.decline(&fw, &d.offer_ids, d.filters, now);
                }
            }
            CallType::Revive => {
                let roles = call.revive.map(|r| r.roles).unwrap_or_default();
                if let Some(f) = self.frameworks.get_mut(&fw) {
                    let roles = if roles.is_empty() { f.roles() } else { roles };
                    if roles.iter().any(|r| !f.roles().contains(r)) {
                        return Reply::Status(202, String::new());
                    }
                    for r in &roles {
                        f.suppressed.remove(r);
                    }
                    self.filters
                        .retain(|x| !(x.framework == fw && roles.contains(&x.role)));
                    self.allocate_now = true;
                }
            }
            CallType::Suppress => {
                let roles = call.suppress.map(|r| r.roles).unwrap_or_default();
                if let Some(f) = self.frameworks.get_mut(&fw) {
                    let roles = if roles.is_empty() { f.roles() } else { roles };
                    f.suppressed.extend(roles);
                }
            }
            CallType::Kill => {
                if let Some(k) = call.kill {
                    self.kill(&fw, k);
                }
            }
            CallType::Acknowledge => {
                if let Some(a) = call.acknowledge {
                    self.acknowledge(&fw, a, now);
                }
            }
            CallType::Reconcile => {
                self.reconcile(&fw, call.reconcile.unwrap_or_default().tasks, now);
            }
            CallType::Shutdown
            | CallType::Message
            | CallType::Request
            | CallType::AcceptInverseOffers
            | CallType::DeclineInverseOffers => {}
            CallType::Subscribe => {}
            CallType::Unknown => {
                return Reply::Status(501, "Received an unexpected call type".into());
            }
        }
        Reply::Status(202, String::new())
    }

    fn add_filter(&mut self, fw: &str, o: &OfferRec, filters: Option<Filters>, now: Instant) {
        let secs = filters
            .and_then(|f| f.refuse_seconds)
            .unwrap_or(DEFAULT_REFUSE);
        let secs = if secs < 0.0 || !secs.is_finite() {
            DEFAULT_REFUSE
        } else {
            secs.min(MAX_REFUSE)
        };
        if secs == 0.0 || o.res.is_empty() {
            return;
        }
        let d = Duration::from_secs_f64(secs).max(self.cfg.allocation_interval);
        self.filters.push(Filter {
            framework: fw.to_string(),
            role: o.role.clone(),
            agent: o.agent.value.clone(),
            until: now + d,
            refused: o.res.clone(),
        });
    }

    fn decline(&mut self, fw: &str, ids: &[OfferID], filters: Option<Filters>, now: Instant) {
        for id in ids {
            if self
                .offers
                .get(&id.value)
                .is_some_and(|o| o.framework == fw)
                && let Some(o) = self.remove_offer(&id.value, false)
            {
                self.add_filter(fw, &o, filters, now);
            }
        }
    }

    fn accept(&mut self, fw: &str, a: Accept, now: Instant) {
        let tasks: Vec<TaskInfo> = a
            .operations
            .iter()
            .filter_map(|o| o.launch.as_ref())
            .flat_map(|l| l.task_infos.clone())
            .collect();
        let group_tasks: Vec<TaskInfo> = a
            .operations
            .iter()
            .filter_map(|o| o.launch_group.as_ref())
            .flat_map(|g| g.task_group.tasks.clone())
            .collect();
        // Stage A: the offers.
        let mut err = None;
        let mut seen = BTreeSet::new();
        if a.offer_ids.is_empty() {
            err = Some("No offers specified".to_string());
        }
        for id in &a.offer_ids {
            if !seen.insert(id.value.clone()) {
                err.get_or_insert(format!("Duplicate offer {id} in offer list"));
            }
            match self.offers.get(&id.value) {
                None => {
                    err.get_or_insert(format!("Offer {id} is no longer valid"));
                }
                Some(o) if o.framework != fw => {
                    err.get_or_insert(format!("Offer {id} has invalid framework"));
                }
                Some(_) => {}
            }
        }
        let valid: Vec<&OfferRec> = a
            .offer_ids
            .iter()
            .filter_map(|i| self.offers.get(&i.value))
            .filter(|o| o.framework == fw)
            .collect();
        if valid.iter().map(|o| &o.role).collect::<BTreeSet<_>>().len() > 1 {
            err.get_or_insert("Aggregated offers must be allocated to the same role".into());
        }
        if valid
            .iter()
            .map(|o| &o.agent)
            .collect::<BTreeSet<_>>()
            .len()
            > 1
        {
            err.get_or_insert("Aggregated offers must belong to one single agent".into());
        }
        // The offers are used up either way.
        let mut total = Res::default();
        let mut agent = None;
        let mut role = String::from("*");
        for id in &a.offer_ids {
            if self
                .offers
                .get(&id.value)
                .is_some_and(|o| o.framework == fw)
                && let Some(o) = self.offers.remove(&id.value)
            {
                total.add(&o.res);
                agent = Some(o.agent.clone());
                role = o.role.clone();
            }
        }
        let give_back = |st: &mut State, res: &Res| {
            if let Some(ag) = agent.as_ref().and_then(|x| st.agents.get_mut(&x.value)) {
                ag.free.add(res);
            }
        };
        if let Some(e) = err {
            give_back(self, &total);
            for t in tasks.iter().chain(group_tasks.iter()) {
                self.master_update(
                    fw,
                    &t.task_id,
                    TaskState::Dropped,
                    Reason::ReasonInvalidOffers,
                    Some(format!("Task launched with invalid offers: {e}")),
                    Some(&t.agent_id),
                );
            }
            return;
        }
        let Some(agent) = agent.clone() else { return };
        let mut remaining = total;
        for t in group_tasks {
            self.master_update(
                fw,
                &t.task_id,
                TaskState::Error,
                Reason::ReasonTaskGroupInvalid,
                Some("LAUNCH_GROUP is not supported by the emulator".into()),
                Some(&agent),
            );
        }
        for t in tasks {
            match self.validate_task(fw, &t, &agent, &remaining) {
                Err(msg) => self.master_update(
                    fw,
                    &t.task_id,
                    TaskState::Error,
                    Reason::ReasonTaskInvalid,
                    Some(msg),
                    Some(&agent),
                ),
                Ok(res) => {
                    remaining.sub(&res);
                    self.launch(fw, t, agent.clone(), res);
                }
            }
        }
        let rec = OfferRec {
            framework: fw.to_string(),
            agent: agent.clone(),
            role,
            res: remaining.clone(),
        };
        give_back(self, &remaining);
        self.add_filter(fw, &rec, a.filters, now);
    }

    /// `validation::task::validate`, in the master's order; returns the task's resources.
    fn validate_task(
        &self,
        fw: &str,
        t: &TaskInfo,
        agent: &AgentID,
        available: &Res,
    ) -> Result<Res, String> {
        let id = &t.task_id.value;
        if id.is_empty()
            || id.len() > 255
            || id == "."
            || id == ".."
            || id.chars().any(|c| c.is_control() || c == '/' || c == '\\')
        {
            return Err(format!("Task ID '{id}' is invalid"));
        }
        if self
            .frameworks
            .get(fw)
            .is_some_and(|f| f.tasks.contains_key(id))
        {
            return Err(format!("Task has duplicate ID: {id}"));
        }
        if &t.agent_id != agent {
            return Err(format!(
                "Task uses invalid agent {} while agent {} is expected",
                t.agent_id, agent
            ));
        }
        if let Some(g) = t.kill_policy.and_then(|k| k.grace_period)
            && g.nanoseconds < 0
        {
            return Err("Task's 'kill_policy.grace_period' must be non-negative".into());
        }
        if let Some(h) = &t.health_check {
            let typ = h.check_type.or(if h.http.is_some() {
                Some(HealthCheckType::Http)
            } else {
                None
            });
            match (typ, &h.http) {
                (Some(HealthCheckType::Http), Some(http)) => {
                    if http.path.as_deref().is_some_and(|p| !p.starts_with('/')) {
                        return Err(
                            "Task's health check is invalid: The path must start with '/'".into(),
                        );
                    }
                    if http
                        .scheme
                        .as_deref()
                        .is_some_and(|s| s != "http" && s != "https")
                    {
                        return Err(
                            "Task's health check is invalid: The scheme must be 'http' or 'https'"
                                .into(),
                        );
                    }
                }
                (Some(HealthCheckType::Http), None) => {
                    return Err("Task's health check is invalid: Expecting 'http' to be set".into());
                }
                (None, _) if h.tcp.is_none() => {
                    return Err("Task's health check is invalid: type is not set".into());
                }
                _ => {}
            }
        }
        if t.resources.is_empty() {
            return Err("Task uses no resources".into());
        }
        let res = Res::from_resources(&t.resources)
            .map_err(|e| format!("Task uses invalid resources: {e}"))?;
        if let Some(c) = t.command.as_ref().and_then(|c| c.environment.as_ref()) {
            for v in &c.variables {
                if v.variable_type.unwrap_or(VariableType::Value) == VariableType::Value
                    && v.value.is_none()
                {
                    return Err(format!(
                        "Environment variable '{}' of type 'VALUE' must have a value set",
                        v.name
                    ));
                }
            }
        }
        if let Some(c) = &t.container {
            for v in &c.volumes {
                let n = usize::from(v.host_path.is_some())
                    + usize::from(v.image.is_some())
                    + usize::from(v.source.is_some());
                if n != 1 {
                    return Err("Task's ContainerInfo is invalid: Only one of them should be set: 'host_path', 'image' and 'source' in Volume".into());
                }
                if let Some(s) = &v.source
                    && s.source_type == Some(VolumeSourceType::DockerVolume)
                    && s.docker_volume.is_none()
                {
                    return Err("Task's ContainerInfo is invalid: 'source.docker_volume' is not set for DOCKER_VOLUME volume".into());
                }
            }
            if c.container_type == ContainerType::Docker {
                let Some(d) = &c.docker else {
                    return Err("Task's ContainerInfo is invalid: DockerInfo 'docker' is not set for DOCKER typed ContainerInfo".into());
                };
                if d.parameters.iter().any(|p| p.key == "name") {
                    return Err("Task's ContainerInfo is invalid: Parameter in DockerInfo must not be 'name'".into());
                }
            }
        }
        if t.command.is_some() == t.executor.is_some() {
            return Err("Task should have at least one (but not both) of CommandInfo or ExecutorInfo present".into());
        }
        if !available.contains(&res) {
            return Err(format!(
                "Total resources {:?} required by task and its executor is more than available {:?}",
                res.scalars, available.scalars
            ));
        }
        Ok(res)
    }

    fn launch(&mut self, fw: &str, info: TaskInfo, agent: AgentID, res: Res) {
        let Some(shared) = self.me.clone() else {
            return;
        };
        let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
        let hostname = self
            .agents
            .get(&agent.value)
            .map(|a| a.cfg.hostname.clone())
            .unwrap_or_default();
        let Some(f) = self.frameworks.get_mut(fw) else {
            return;
        };
        let spec = LaunchSpec {
            framework_id: f.id.clone(),
            agent_id: agent.clone(),
            agent_hostname: hostname,
            task: info.clone(),
        };
        let reporter = Reporter {
            shared,
            framework_id: f.id.clone(),
            task_id: info.task_id.value.clone(),
        };
        f.tasks.insert(
            info.task_id.value.clone(),
            Task {
                info,
                agent,
                res,
                state: TaskState::Staging,
                sent_state: None,
                healthy: None,
                pending: VecDeque::new(),
                control: Some(ctl_tx),
                unreachable_ns: None,
            },
        );
        self.cfg.launcher.launch(spec, reporter, ctl_rx);
    }

    /// A master-generated update: no uuid, sent once, never acknowledged.
    fn master_update(
        &mut self,
        fw: &str,
        task: &TaskID,
        state: TaskState,
        reason: Reason,
        message: Option<String>,
        agent: Option<&AgentID>,
    ) {
        let Some(f) = self.frameworks.get(fw) else {
            return;
        };
        let st = master_status(task, f.map_state(state), reason, message, agent);
        self.emit(fw, &Event::update(st));
    }

    fn kill(&mut self, fw: &str, k: Kill) {
        let Some(f) = self.frameworks.get_mut(fw) else {
            return;
        };
        let Some(t) = f.tasks.get_mut(&k.task_id.value) else {
            self.reconcile(
                fw,
                vec![ReconcileTask {
                    task_id: k.task_id,
                    agent_id: k.agent_id,
                }],
                Instant::now(),
            );
            return;
        };
        if k.agent_id.as_ref().is_some_and(|a| a != &t.agent) {
            return;
        }
        let grace = k
            .kill_policy
            .or(t.info.kill_policy)
            .and_then(|p| p.grace_period)
            .map(|g| Duration::from_nanos(g.nanoseconds.max(0) as u64))
            .unwrap_or(Duration::from_secs(3));
        let Some(ctl) = t.control.clone() else { return };
        let task_id = t.info.task_id.value.clone();
        let fid = f.id.clone();
        self.report(&fid, &task_id, TaskState::Killing, None, None, None);
        let _ = ctl.send(TaskControl::Kill { grace });
    }

    fn acknowledge(&mut self, fw: &str, a: Acknowledge, now: Instant) {
        let Some(f) = self.frameworks.get_mut(fw) else {
            return;
        };
        let Some(t) = f.tasks.get_mut(&a.task_id.value) else {
            return;
        };
        if t.agent != a.agent_id
            || t.pending.front().and_then(|s| s.uuid.as_deref()) != Some(a.uuid.as_str())
        {
            return;
        }
        let acked = t.pending.pop_front();
        if t.pending.is_empty() && acked.is_some_and(|s| s.state.is_terminal()) {
            f.tasks.remove(&a.task_id.value);
            return;
        }
        self.flush(fw, &a.task_id.value, now);
    }

    fn reconcile(&mut self, fw: &str, tasks: Vec<ReconcileTask>, now: Instant) {
        let Some(f) = self.frameworks.get(fw) else {
            return;
        };
        let mut out = Vec::new();
        if tasks.is_empty() {
            for t in f.tasks.values() {
                if t.state == TaskState::Unreachable {
                    continue;
                }
                out.push(self.known_status(f, t));
            }
        } else {
            let any_recovering = self.agents.values().any(|a| a.recovering(now));
            for rt in tasks {
                if let Some(t) = f.tasks.get(&rt.task_id.value) {
                    out.push(self.known_status(f, t));
                    continue;
                }
                let Some(aid) = rt.agent_id.clone() else {
                    if !any_recovering {
                        out.push(master_status(
                            &rt.task_id,
                            f.map_state(TaskState::Unknown),
                            Reason::ReasonReconciliation,
                            Some("Reconciliation: Task is unknown".into()),
                            None,
                        ));
                    }
                    continue;
                };
                let (state, msg, unreachable) = match self.agents.get(&aid.value) {
                    Some(a) if a.recovering(now) => continue,
                    Some(a) if a.status == AgentStatus::Active => (
                        TaskState::Gone,
                        "Reconciliation: Task is unknown to the agent",
                        None,
                    ),
                    Some(a) if a.status == AgentStatus::Unreachable => (
                        TaskState::Unreachable,
                        "Reconciliation: Task is unreachable",
                        a.unreachable_ns,
                    ),
                    Some(a) if a.status == AgentStatus::Gone => (
                        TaskState::GoneByOperator,
                        "Reconciliation: Task is gone",
                        None,
                    ),
                    _ => (TaskState::Unknown, "Reconciliation: Task is unknown", None),
                };
                let mut s = master_status(
                    &rt.task_id,
                    f.map_state(state),
                    Reason::ReasonReconciliation,
                    Some(msg.into()),
                    Some(&aid),
                );
                s.unreachable_time = unreachable.map(|n| Nanos { nanoseconds: n });
                out.push(s);
            }
        }
        for s in out {
            self.emit(fw, &Event::update(s));
        }
    }

    fn known_status(&self, f: &Framework, t: &Task) -> TaskStatus {
        let state = t.sent_state.unwrap_or(t.state);
        let mut s = master_status(
            &t.info.task_id,
            f.map_state(state),
            Reason::ReasonReconciliation,
            Some("Reconciliation: Latest task state".into()),
            Some(&t.agent),
        );
        s.healthy = t.healthy;
        s.unreachable_time = t.unreachable_ns.map(|n| Nanos { nanoseconds: n });
        s
    }

    pub fn remove_framework(&mut self, fw: &str) {
        self.drop_offers_of(fw, false);
        let Some(f) = self.frameworks.remove(fw) else {
            return;
        };
        for t in f.tasks.values() {
            if let Some(c) = &t.control {
                let _ = c.send(TaskControl::Kill {
                    grace: Duration::ZERO,
                });
            }
            if !t.state.is_terminal()
                && let Some(a) = self.agents.get_mut(&t.agent.value)
            {
                a.free.add(&t.res);
            }
        }
        self.filters.retain(|x| x.framework != fw);
        self.removed.insert(fw.to_string());
        tracing::info!(framework = fw, "framework removed");
    }

    // ---- faults ----------------------------------------------------------------------------------------

    fn agent_tasks(&self, agent: &str) -> Vec<(String, String)> {
        self.frameworks
            .iter()
            .flat_map(|(f, fr)| {
                fr.tasks
                    .iter()
                    .filter(|(_, t)| t.agent.value == agent)
                    .map(move |(t, _)| (f.clone(), t.clone()))
            })
            .collect()
    }

    fn rescind_agent_offers(&mut self, agent: &str) {
        let ids: Vec<String> = self
            .offers
            .iter()
            .filter(|(_, o)| o.agent.value == agent)
            .map(|(k, _)| k.clone())
            .collect();
        for id in ids {
            self.remove_offer(&id, true);
        }
    }

    fn broadcast_failure(&mut self, agent: &AgentID) {
        let fws: Vec<String> = self.frameworks.keys().cloned().collect();
        for fw in fws {
            self.emit(
                &fw,
                &Event::failure(Failure {
                    agent_id: Some(agent.clone()),
                    executor_id: None,
                    status: None,
                }),
            );
        }
    }

    /// The agent's tasks end with a master-generated update and are forgotten.
    fn end_agent_tasks(&mut self, agent: &str, state: TaskState, reason: Reason, msg: &str) {
        for (fw, tid) in self.agent_tasks(agent) {
            let Some(t) = self
                .frameworks
                .get_mut(&fw)
                .and_then(|f| f.tasks.remove(&tid))
            else {
                continue;
            };
            if let Some(c) = &t.control {
                let _ = c.send(TaskControl::Kill {
                    grace: Duration::ZERO,
                });
            }
            if !t.state.is_terminal() {
                self.master_update(
                    &fw,
                    &t.info.task_id,
                    state,
                    reason,
                    Some(msg.into()),
                    Some(&t.agent),
                );
            }
        }
    }

    pub fn kill_agent(&mut self, agent: &str) -> bool {
        let Some(a) = self.agents.get_mut(agent) else {
            return false;
        };
        if matches!(a.status, AgentStatus::Removed | AgentStatus::Gone) {
            return true;
        }
        a.status = AgentStatus::Removed;
        let id = a.id.clone();
        self.rescind_agent_offers(agent);
        self.end_agent_tasks(
            agent,
            TaskState::Gone,
            Reason::ReasonAgentRemoved,
            "Agent removed",
        );
        self.broadcast_failure(&id);
        true
    }

    pub fn partition_agent(&mut self, agent: &str) -> bool {
        let Some(a) = self.agents.get_mut(agent) else {
            return false;
        };
        if a.status == AgentStatus::Active && a.partitioned_at.is_none() {
            a.partitioned_at = Some(Instant::now());
        }
        true
    }

    fn agent_unreachable(&mut self, agent: &str) {
        let ns = now_ns();
        let Some(a) = self.agents.get_mut(agent) else {
            return;
        };
        a.status = AgentStatus::Unreachable;
        a.unreachable_ns = Some(ns);
        let id = a.id.clone();
        self.rescind_agent_offers(agent);
        for (fw, tid) in self.agent_tasks(agent) {
            let Some(f) = self.frameworks.get_mut(&fw) else {
                continue;
            };
            let mapped = f.map_state(TaskState::Unreachable);
            let Some(t) = f.tasks.get_mut(&tid) else {
                continue;
            };
            if t.state.is_terminal() {
                continue;
            }
            t.unreachable_ns = Some(ns);
            t.sent_state = Some(TaskState::Unreachable);
            let mut s = master_status(
                &t.info.task_id,
                mapped,
                Reason::ReasonAgentRemoved,
                Some("Agent is unreachable".into()),
                Some(&id),
            );
            s.unreachable_time = Some(Nanos { nanoseconds: ns });
            t.state = TaskState::Unreachable;
            self.emit(&fw, &Event::update(s));
        }
        self.broadcast_failure(&id);
    }

    pub fn heal_agent(&mut self, agent: &str) -> bool {
        let now = Instant::now();
        let Some(a) = self.agents.get_mut(agent) else {
            return false;
        };
        a.partitioned_at = None;
        if a.status == AgentStatus::Unreachable {
            a.status = AgentStatus::Active;
            a.unreachable_ns = None;
            let id = a.id.clone();
            for (fw, tid) in self.agent_tasks(agent) {
                let Some(f) = self.frameworks.get_mut(&fw) else {
                    continue;
                };
                let Some(t) = f.tasks.get_mut(&tid) else {
                    continue;
                };
                // The agent still runs the task: its real state is the last one it reported.
                let current = t
                    .pending
                    .back()
                    .map(|s| s.state)
                    .unwrap_or(TaskState::Running);
                t.state = current;
                t.unreachable_ns = None;
                t.sent_state = Some(current);
                let s = master_status(
                    &t.info.task_id,
                    current,
                    Reason::ReasonAgentReregistered,
                    Some("Agent reregistered".into()),
                    Some(&id),
                );
                self.emit(&fw, &Event::update(s));
            }
        }
        self.flush_all(now);
        self.allocate_now = true;
        true
    }

    pub fn mark_gone(&mut self, agent: &str) -> bool {
        let Some(a) = self.agents.get_mut(agent) else {
            return false;
        };
        a.status = AgentStatus::Gone;
        a.partitioned_at = None;
        self.rescind_agent_offers(agent);
        self.end_agent_tasks(
            agent,
            TaskState::GoneByOperator,
            Reason::ReasonAgentRemovedByOperator,
            "Agent marked as gone by the operator",
        );
        true
    }

    /// The machine of a removed or GONE agent comes back. The master refuses the old agent id (a removed
    /// agent must not re-register), so like a real agent whose work directory was wiped it registers
    /// afresh: a new id, the configured resources, no tasks. Returns the new id, or `None` when `agent`
    /// is unknown or not down.
    pub fn restart_agent(&mut self, agent: &str) -> Option<String> {
        let old = self.agents.get(agent)?;
        if !matches!(old.status, AgentStatus::Removed | AgentStatus::Gone) {
            return None;
        }
        let cfg = old.cfg.clone();
        let mut n = self.agents.len();
        let id = loop {
            let candidate = format!("{}-S{n}", self.master_id);
            if !self.agents.contains_key(&candidate) {
                break candidate;
            }
            n += 1;
        };
        let free = Res::default()
            .scalar("cpus", cfg.cpus)
            .scalar("mem", cfg.mem)
            .scalar("disk", cfg.disk)
            .range("ports", cfg.ports.0, cfg.ports.1);
        self.agents.insert(
            id.clone(),
            Agent {
                id: AgentID::new(id.clone()),
                cfg,
                free,
                status: AgentStatus::Active,
                partitioned_at: None,
                unreachable_ns: None,
                recovering_until: None,
            },
        );
        self.allocate_now = true;
        tracing::info!(old = agent, new = %id, "agent restarted under a new id");
        Some(id)
    }

    pub fn fail_task(&mut self, task: &str, message: &str) -> bool {
        for f in self.frameworks.values() {
            if let Some(c) = f.tasks.get(task).and_then(|t| t.control.as_ref()) {
                return c
                    .send(TaskControl::Fail {
                        message: message.to_string(),
                    })
                    .is_ok();
            }
        }
        false
    }

    pub fn rescind_offer(&mut self, offer: &str) -> bool {
        self.remove_offer(offer, true).is_some()
    }

    /// A master failover: every stream drops, offers vanish, a new master id, agents re-register after
    /// the configured delay. Failover timers do not survive a master failover (MESOS-4659).
    pub fn restart_master(&mut self) {
        let now = Instant::now();
        for f in self.frameworks.values_mut() {
            f.stream = None;
            f.failover_deadline = None;
        }
        let ids: Vec<String> = self.offers.keys().cloned().collect();
        for id in ids {
            self.remove_offer(&id, false);
        }
        self.filters.clear();
        self.master_id = uuid::Uuid::new_v4().to_string();
        for a in self.agents.values_mut() {
            if a.status == AgentStatus::Active {
                a.recovering_until = Some(now + self.cfg.agent_reregister_delay);
            }
        }
        tracing::info!(master = %self.master_id, "master restarted");
    }
}

/// Semantic SUBSCRIBE checks answered with ERROR on the stream.
fn validate_roles(info: &FrameworkInfo) -> Option<String> {
    let multi = info.has_capability(CapabilityType::MultiRole);
    if !multi && !info.roles.is_empty() {
        return Some("'FrameworkInfo.roles' is set but the MULTI_ROLE capability is not".into());
    }
    let mut seen = BTreeSet::new();
    for r in &info.roles {
        if !seen.insert(r) {
            return Some(format!(
                "'FrameworkInfo.roles' contains duplicate role '{r}'"
            ));
        }
        let bad = r.is_empty()
            || r.starts_with('/')
            || r.ends_with('/')
            || r.split('/')
                .any(|c| c == "." || c == ".." || c == "*" || c.starts_with('-') || c.is_empty())
            || r.chars().any(|c| c.is_whitespace() || c.is_control());
        if bad {
            return Some(format!("Role '{r}' is invalid"));
        }
    }
    None
}

/// The per-type presence checks and the ACKNOWLEDGE uuid check of `validation::scheduler::call`.
fn validate_payload(c: &Call) -> Option<String> {
    let missing = |name: &str| Some(format!("Expecting '{name}' to be present"));
    match c.call_type {
        CallType::Accept if c.accept.is_none() => missing("accept"),
        CallType::Decline if c.decline.is_none() => missing("decline"),
        CallType::Kill if c.kill.is_none() => missing("kill"),
        CallType::Shutdown if c.shutdown.is_none() => missing("shutdown"),
        CallType::Message if c.message.is_none() => missing("message"),
        CallType::AcceptInverseOffers if c.accept_inverse_offers.is_none() => {
            missing("accept_inverse_offers")
        }
        CallType::DeclineInverseOffers if c.decline_inverse_offers.is_none() => {
            missing("decline_inverse_offers")
        }
        CallType::Acknowledge => match &c.acknowledge {
            None => missing("acknowledge"),
            Some(a) => {
                let cleaned: String = a.uuid.chars().filter(|c| !c.is_whitespace()).collect();
                let decoded = base64::engine::general_purpose::STANDARD_NO_PAD
                    .decode(cleaned.trim_end_matches('='));
                match decoded {
                    Ok(b) if b.len() == 16 => None,
                    _ => Some("'uuid' is not a valid UUID".into()),
                }
            }
        },
        _ => None,
    }
}
