//! Property-based model test: random sequences of offers, status updates (duplicates and out of order
//! included), agent losses, partitions, sidecar reports, disconnects and restarts, scale changes, forced
//! replacements and scheduler restarts from the persisted state, driven through the core against a small
//! simulated world (master, agents, sidecars). After every step it checks:
//! * at most one live task per node id in the world (unless an operator forced a replacement);
//! * the core's own invariants (ids are the lowest `desired` ids; at most one agent holds a node's volumes
//!   by the core's knowledge; indexes agree);
//! * the command stream: a new task is persisted before its ACCEPT, and a launch follows only a terminal
//!   or force-replaced task;
//! * the durable state (initial state plus every emitted write) equals what the core believes.

use crate::command::{Command, MesosCommand, SidecarCommand};
use crate::domain::{CommandResult, TaskState};
use crate::ids::{Hostname, NodeId, OfferId, TaskId, VolumeName};
use crate::testing::*;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

const HOSTS: usize = 5;

#[derive(Debug, Clone)]
enum Action {
    Offers(Vec<u8>),
    Update { pick: u8, state: u8, uuid: bool },
    Redeliver { pick: u8, back: u8 },
    Partition(u8),
    Heal(u8),
    AgentGone(u8),
    Report(u8),
    SidecarDown(u8),
    SidecarUp { host: u8, restarted: bool },
    PrepareAnswer { pick: u8, ok: bool },
    Rescind(u8),
    Advance(u32),
    Scale(u8),
    Replace { node: u8, force: bool },
    Restart,
    Resubscribe,
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        6 => proptest::collection::vec(0u8..HOSTS as u8, 1..4).prop_map(Action::Offers),
        4 => (any::<u8>(), any::<u8>(), any::<bool>()).prop_map(|(pick, state, uuid)| Action::Update { pick, state, uuid }),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(pick, back)| Action::Redeliver { pick, back }),
        1 => (0u8..HOSTS as u8).prop_map(Action::Partition),
        1 => (0u8..HOSTS as u8).prop_map(Action::Heal),
        1 => (0u8..HOSTS as u8).prop_map(Action::AgentGone),
        3 => (0u8..HOSTS as u8).prop_map(Action::Report),
        1 => (0u8..HOSTS as u8).prop_map(Action::SidecarDown),
        1 => (0u8..HOSTS as u8, any::<bool>()).prop_map(|(host, restarted)| Action::SidecarUp { host, restarted }),
        8 => (any::<u8>(), prop::bool::weighted(0.8)).prop_map(|(pick, ok)| Action::PrepareAnswer { pick, ok }),
        1 => any::<u8>().prop_map(Action::Rescind),
        3 => (0u32..70_000).prop_map(Action::Advance),
        1 => (0u8..5).prop_map(Action::Scale),
        1 => (any::<u8>(), any::<bool>()).prop_map(|(node, force)| Action::Replace { node, force }),
        1 => Just(Action::Restart),
        1 => Just(Action::Resubscribe),
    ]
}

#[derive(Debug)]
struct WTask {
    node: NodeId,
    host: usize,
    alive: bool,
    truth: TaskState,
    history: Vec<TaskState>,
}

#[derive(Debug, Default)]
struct WSidecar {
    connected: bool,
    instance: u32,
    seq: u64,
    mounts: BTreeMap<VolumeName, u32>,
}

struct World {
    h: Harness,
    tasks: BTreeMap<TaskId, WTask>,
    sidecars: Vec<WSidecar>,
    partitioned: BTreeSet<usize>,
    offers: BTreeMap<OfferId, usize>,
    prepares: Vec<(usize, u64, Vec<VolumeName>, crate::ids::Millis)>,
    forced: BTreeSet<NodeId>,
    inbox: VecDeque<crate::domain::TaskStatus>,
    next_offer: u64,
    errors: Vec<String>,
    forced_mounts: BTreeSet<(NodeId, usize)>,
}

fn hname(i: usize) -> String {
    format!("h{i}")
}

fn host_index(h: &Hostname) -> usize {
    h.as_str()[1..].parse().unwrap_or(0)
}

impl World {
    fn new(strategy: crate::Strategy) -> World {
        let mut h = Harness::new(config(strategy));
        h.subscribe();
        let mut w = World {
            h,
            tasks: BTreeMap::new(),
            sidecars: (0..HOSTS).map(|_| WSidecar::default()).collect(),
            partitioned: BTreeSet::new(),
            offers: BTreeMap::new(),
            prepares: Vec::new(),
            forced: BTreeSet::new(),
            inbox: VecDeque::new(),
            next_offer: 0,
            errors: Vec::new(),
            forced_mounts: BTreeSet::new(),
        };
        for i in 0..HOSTS {
            w.sidecar_up(i, false);
            w.report(i);
        }
        let _ = w.h.core.handle_scale(3, w.h.now);
        w.settle();
        w
    }

    fn sidecar_up(&mut self, i: usize, restarted: bool) {
        let s = &mut self.sidecars[i];
        if restarted {
            s.instance += 1;
            s.seq = 0;
            s.mounts.clear();
            self.prepares.retain(|p| p.0 != i);
        }
        s.connected = true;
        let hello = hello(
            &hname(i),
            Some("z1"),
            Some(6),
            &format!("inst-{}", s.instance),
        );
        self.h.core.handle_sidecar_hello(hello, self.h.now);
    }

    fn report(&mut self, i: usize) {
        let s = &mut self.sidecars[i];
        if !s.connected {
            return;
        }
        s.seq += 1;
        let vols = self
            .h
            .core
            .watch_names()
            .iter()
            .map(|v| {
                volume(
                    v,
                    true,
                    Some("z1"),
                    s.mounts.get(v).copied().unwrap_or(0) > 0,
                )
            })
            .collect();
        let used = u32::try_from(s.mounts.values().filter(|c| **c > 0).count()).unwrap_or(0);
        let r = report(s.seq, vols, used);
        self.h
            .core
            .handle_sidecar_report(&host(&hname(i)), r, self.h.now);
    }

    fn deliver(&mut self, id: &TaskId, state: TaskState, uuid: bool) {
        let Some(t) = self.tasks.get_mut(id) else {
            return;
        };
        t.history.push(state);
        let s = status(id, &hname(t.host), state, uuid.then_some("dXVpZA=="));
        self.inbox.push_back(s);
    }

    /// Executes the core's commands against the world and delivers the resulting updates, until quiet.
    fn settle(&mut self) {
        for _ in 0..200 {
            let cmds = self.h.drain();
            if cmds.is_empty() && self.inbox.is_empty() {
                return;
            }
            for c in cmds {
                self.execute(c);
            }
            while let Some(s) = self.inbox.pop_front() {
                self.h.core.handle_update(s, self.h.now);
            }
        }
    }

    fn execute(&mut self, c: Command) {
        match c {
            Command::Mesos(MesosCommand::Accept {
                offer_id, launch, ..
            }) => {
                let valid = self.offers.remove(&offer_id).is_some();
                let host = host_index(&launch.host);
                // No launch while another agent's sidecar still holds a mount of the node's volumes.
                for (i, s) in self.sidecars.iter().enumerate() {
                    let held = launch
                        .volumes
                        .iter()
                        .any(|v| s.mounts.get(&v.name).copied().unwrap_or(0) > 0);
                    let vouched = self.forced.contains(&launch.node_id)
                        || self.forced_mounts.contains(&(launch.node_id, i));
                    if i != host && held && !vouched {
                        self.errors.push(format!(
                            "{} launched on h{host} while h{i} holds its volumes",
                            launch.task_id
                        ));
                    }
                }
                self.tasks.insert(
                    launch.task_id.clone(),
                    WTask {
                        node: launch.node_id,
                        host,
                        alive: valid,
                        truth: TaskState::Staging,
                        history: Vec::new(),
                    },
                );
                if !valid {
                    self.tasks
                        .entry(launch.task_id.clone())
                        .and_modify(|t| t.truth = TaskState::Dropped);
                    self.deliver(&launch.task_id, TaskState::Dropped, false);
                }
            }
            Command::Mesos(MesosCommand::Decline { offer_ids, .. }) => {
                for o in offer_ids {
                    self.offers.remove(&o);
                }
            }
            Command::Mesos(MesosCommand::Kill { task_id, .. }) => {
                let reachable = self
                    .tasks
                    .get(&task_id)
                    .map(|t| !self.partitioned.contains(&t.host));
                match reachable {
                    Some(true) => {
                        if let Some(t) = self.tasks.get_mut(&task_id)
                            && t.alive
                        {
                            t.alive = false;
                            t.truth = TaskState::Killed;
                            self.deliver(&task_id, TaskState::Killed, true);
                        }
                    }
                    Some(false) => {}
                    None => self
                        .inbox
                        .push_back(status(&task_id, "h0", TaskState::Gone, None)),
                }
            }
            Command::Mesos(MesosCommand::Reconcile { tasks }) => {
                let list: Vec<TaskId> = if tasks.is_empty() {
                    self.tasks
                        .iter()
                        .filter(|(_, t)| t.alive && !self.partitioned.contains(&t.host))
                        .map(|(id, _)| id.clone())
                        .collect()
                } else {
                    tasks.into_iter().map(|(t, _)| t).collect()
                };
                for id in list {
                    match self.tasks.get(&id) {
                        Some(t) if self.partitioned.contains(&t.host) && t.alive => {
                            self.deliver(&id, TaskState::Unreachable, false);
                        }
                        Some(t) => {
                            let s = t.truth;
                            self.deliver(&id, s, false);
                        }
                        None => self
                            .inbox
                            .push_back(status(&id, "h0", TaskState::Gone, None)),
                    }
                }
            }
            Command::Sidecar { host, command } => {
                let i = host_index(&host);
                if !self.sidecars[i].connected {
                    return;
                }
                match command {
                    SidecarCommand::Prepare {
                        command_id,
                        volumes,
                        ..
                    } => {
                        self.prepares.push((i, command_id, volumes, self.h.now));
                    }
                    SidecarCommand::Release { volumes, .. } => {
                        for v in volumes {
                            if let Some(c) = self.sidecars[i].mounts.get_mut(&v) {
                                *c = c.saturating_sub(1);
                            }
                        }
                    }
                    // The model runs without security: no identity is ever installed.
                    SidecarCommand::Welcome { .. }
                    | SidecarCommand::WatchDelta { .. }
                    | SidecarCommand::InstallIdentity { .. } => {}
                }
            }
            _ => {}
        }
    }

    fn complete_silently(&mut self, on: impl Fn(usize) -> bool) {
        let (done, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.prepares)
            .into_iter()
            .partition(|p| on(p.0));
        self.prepares = keep;
        for (i, _, volumes, _) in done {
            for v in volumes {
                *self.sidecars[i].mounts.entry(v).or_default() += 1;
            }
        }
    }

    fn answer(&mut self, idx: usize, ok: bool) {
        let (i, command_id, volumes, _) = self.prepares.remove(idx);
        if ok {
            for v in &volumes {
                *self.sidecars[i].mounts.entry(v.clone()).or_default() += 1;
            }
        }
        let result = CommandResult {
            command_id,
            ok,
            error: (!ok).then(|| "failed".into()),
            volumes: Vec::new(),
            csr_pem: None,
        };
        self.h
            .core
            .handle_sidecar_result(&host(&hname(i)), result, self.h.now);
    }

    fn step(&mut self, a: Action) {
        let now = self.h.now;
        match a {
            Action::Offers(hosts) => {
                let mut offers = Vec::new();
                for i in hosts.into_iter().map(usize::from).collect::<BTreeSet<_>>() {
                    if self.partitioned.contains(&i) {
                        continue;
                    }
                    self.next_offer += 1;
                    let id = format!("o-{}", self.next_offer);
                    let o = offer(&id, &hname(i), 4.0, 8192.0, 1000.0);
                    self.offers.insert(o.id.clone(), i);
                    offers.push(o);
                }
                self.h.core.handle_offers(offers, now);
            }
            Action::Update { pick, state, uuid } => {
                let alive: Vec<TaskId> = self
                    .tasks
                    .iter()
                    .filter(|(_, t)| t.alive && !self.partitioned.contains(&t.host))
                    .map(|(id, _)| id.clone())
                    .collect();
                if alive.is_empty() {
                    return;
                }
                let id = alive[usize::from(pick) % alive.len()].clone();
                use TaskState::*;
                let choices = [
                    Starting, Running, Running, Killing, Finished, Failed, Killed, Error, Lost,
                    Dropped, Gone,
                ];
                let s = choices[usize::from(state) % choices.len()];
                if let Some(t) = self.tasks.get_mut(&id) {
                    t.truth = s;
                    t.alive = !s.is_terminal();
                }
                self.deliver(&id, s, uuid);
            }
            Action::Redeliver { pick, back } => {
                let with_history: Vec<TaskId> = self
                    .tasks
                    .iter()
                    .filter(|(_, t)| !t.history.is_empty())
                    .map(|(id, _)| id.clone())
                    .collect();
                if with_history.is_empty() {
                    return;
                }
                let id = with_history[usize::from(pick) % with_history.len()].clone();
                let Some(t) = self.tasks.get(&id) else { return };
                let s = t.history[usize::from(back) % t.history.len()];
                // Only what really happened can be re-sent: an old state, never a future one.
                let st = status(&id, &hname(t.host), s, None);
                self.inbox.push_back(st);
            }
            Action::Partition(i) => {
                let i = usize::from(i);
                if !self.partitioned.insert(i) {
                    return;
                }
                self.offers.retain(|_, h| *h != i);
                let ids: Vec<TaskId> = self
                    .tasks
                    .iter()
                    .filter(|(_, t)| t.host == i && t.alive)
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in ids {
                    self.deliver(&id, TaskState::Unreachable, false);
                }
            }
            Action::Heal(i) => {
                let i = usize::from(i);
                if !self.partitioned.remove(&i) {
                    return;
                }
                let ids: Vec<TaskId> = self
                    .tasks
                    .iter()
                    .filter(|(_, t)| t.host == i && t.alive)
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in ids {
                    let s = self.tasks[&id].truth;
                    self.deliver(&id, s, false);
                }
            }
            Action::AgentGone(i) => {
                let i = usize::from(i);
                self.partitioned.remove(&i);
                self.offers.retain(|_, h| *h != i);
                let ids: Vec<TaskId> = self
                    .tasks
                    .iter()
                    .filter(|(_, t)| t.host == i && t.alive)
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in ids {
                    if let Some(t) = self.tasks.get_mut(&id) {
                        t.alive = false;
                        t.truth = TaskState::GoneByOperator;
                    }
                    self.deliver(&id, TaskState::GoneByOperator, false);
                }
                self.h.core.handle_agent_lost(&agent(&hname(i)), now);
            }
            Action::Report(i) => self.report(usize::from(i)),
            Action::SidecarDown(i) => {
                let i = usize::from(i);
                if !self.sidecars[i].connected {
                    return;
                }
                self.sidecars[i].connected = false;
                // Worst case: in-flight prepares finish mounting, their answers are lost with the stream.
                self.complete_silently(|h| h == i);
                self.h
                    .core
                    .handle_sidecar_disconnected(&host(&hname(i)), now);
            }
            Action::SidecarUp { host, restarted } => {
                self.sidecar_up(usize::from(host), restarted);
                self.report(usize::from(host));
            }
            Action::PrepareAnswer { pick, ok } => {
                if self.prepares.is_empty() {
                    return;
                }
                let idx = usize::from(pick) % self.prepares.len();
                self.answer(idx, ok);
            }
            Action::Rescind(pick) => {
                if self.offers.is_empty() {
                    return;
                }
                let id = self
                    .offers
                    .keys()
                    .nth(usize::from(pick) % self.offers.len())
                    .cloned();
                if let Some(id) = id {
                    self.offers.remove(&id);
                    self.h.core.handle_rescind(&id, now);
                }
            }
            Action::Advance(ms) => {
                // The sidecar gives up on prepares at their deadline.
                let deadline = self.h.core.config().prepare_hold_ms * 9 / 10;
                let end = now.plus(u64::from(ms));
                while let Some(idx) = self.prepares.iter().position(|p| p.3.plus(deadline) <= end) {
                    self.answer(idx, false);
                    self.settle();
                }
                // Connected sidecars keep reporting every interval while time passes.
                let mut left = u64::from(ms);
                while left > 0 {
                    let chunk = left.min(self.h.core.config().report_interval_ms);
                    for c in self.h.advance(chunk) {
                        self.execute(c);
                    }
                    left -= chunk;
                    for i in 0..HOSTS {
                        if !self.partitioned.contains(&i) {
                            self.report(i);
                        }
                    }
                    self.settle();
                }
            }
            Action::Scale(n) => {
                let _ = self.h.core.handle_scale(u64::from(n), now);
            }
            Action::Replace { node, force } => {
                let id = NodeId(1 + u64::from(node) % 5);
                let before_alive = self.tasks.values().any(|t| t.node == id && t.alive);
                let volumes = self
                    .h
                    .core
                    .persisted()
                    .slots
                    .get(&id)
                    .map(|r| r.volumes.clone())
                    .unwrap_or_default();
                let ok = self.h.core.handle_replace(id, force, now).is_ok();
                if ok && force && before_alive {
                    self.forced.insert(id);
                    // The operator also vouches for the mounts the old agent's sidecar holds.
                    for (i, s) in self.sidecars.iter().enumerate() {
                        if volumes
                            .iter()
                            .any(|v| s.mounts.get(v).copied().unwrap_or(0) > 0)
                        {
                            self.forced_mounts.insert((id, i));
                        }
                    }
                }
            }
            Action::Restart => {
                self.offers.clear();
                // Every stream breaks: in-flight prepares finish mounting, nobody hears of it.
                self.complete_silently(|_| true);
                self.h.restart();
                self.h.subscribe();
                for i in 0..HOSTS {
                    if self.sidecars[i].connected {
                        self.sidecar_up(i, false);
                        self.report(i);
                    }
                }
            }
            Action::Resubscribe => {
                self.offers.clear();
                self.h.core.handle_disconnected(now);
                self.h.subscribe();
            }
        }
        self.settle();
    }

    fn check(&mut self) -> Result<(), String> {
        if let Some(v) = self.h.violations.first().or(self.errors.first()) {
            return Err(v.clone());
        }
        if &self.h.store != self.h.core.persisted() {
            return Err("durable state differs from the core's belief".into());
        }
        self.h.core.check_invariants()?;
        let mut alive: BTreeMap<NodeId, usize> = BTreeMap::new();
        for t in self.tasks.values().filter(|t| t.alive) {
            *alive.entry(t.node).or_default() += 1;
        }
        for (node, n) in &alive {
            if *n > 1 && !self.forced.contains(node) {
                return Err(format!("node {node} has {n} live tasks"));
            }
        }
        // A forced node is relaxed until its superseded task is dead.
        let current: BTreeSet<TaskId> = self
            .h
            .core
            .persisted()
            .slots
            .values()
            .filter_map(|r| r.task.as_ref())
            .map(|t| t.task_id.clone())
            .collect();
        let stale_alive: BTreeSet<NodeId> = self
            .tasks
            .iter()
            .filter(|(id, t)| t.alive && !current.contains(*id))
            .map(|(_, t)| t.node)
            .collect();
        self.forced.retain(|n| stale_alive.contains(n));
        Ok(())
    }
}

fn run(strategy: crate::Strategy, actions: Vec<Action>) -> Result<(), TestCaseError> {
    let mut w = World::new(strategy);
    w.check().map_err(TestCaseError::fail)?;
    for (i, a) in actions.into_iter().enumerate() {
        let shown = format!("{a:?}");
        w.step(a);
        w.check()
            .map_err(|e| TestCaseError::fail(format!("after step {i} {shown}: {e}")))?;
    }
    if std::env::var_os("TETHER_MODEL_STATS").is_some() {
        // How much the random run exercised, to keep the generator honest.
        let forced =
            w.h.log
                .iter()
                .filter(|c| matches!(c, Command::Persist(crate::StateWrite::Slot(r)) if r.forced))
                .count();
        eprintln!(
            "launched {} forced {} commands {}",
            w.tasks.len(),
            forced,
            w.h.log.len()
        );
    }
    Ok(())
}

proptest! {
    // 256 cases by default; `PROPTEST_CASES=5000` for a longer hunt.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256),
        ..ProptestConfig::default()
    })]

    #[test]
    fn external_strategy_keeps_the_invariants(actions in proptest::collection::vec(action(), 1..120)) {
        run(external(true), actions)?;
    }

    #[test]
    fn normal_strategy_keeps_the_invariants(actions in proptest::collection::vec(action(), 1..120)) {
        run(crate::Strategy::Normal, actions)?;
    }
}

/// The model itself must make progress, or the properties above prove little.
#[test]
fn the_model_launches_and_runs_nodes() {
    let mut w = World::new(external(true));
    w.step(Action::Offers(vec![0, 1, 2, 3]));
    while !w.prepares.is_empty() {
        w.answer(0, true);
        w.settle();
    }
    let launched = w.tasks.len();
    assert_eq!(launched, 3, "{:?}", w.h.core.nodes(w.h.now));
    for _ in 0..3 {
        w.step(Action::Update {
            pick: 0,
            state: 1,
            uuid: true,
        });
    }
    assert!(w.check().is_ok());
}
