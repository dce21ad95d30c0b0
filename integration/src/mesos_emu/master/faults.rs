//! Faults and what the master does about them, as a real master (`shared/protocols/mesos-v1-scheduler.md`
//! §5.4–5.6) does:
//!
//! - a machine dies (`kill`): its tasks' processes die with it, the agent falls silent, and after the
//!   ping timeout its tasks become TASK_UNREACHABLE — and nothing more;
//! - a partition: the agent falls silent while its processes keep running (or stop where they are, with
//!   `freeze`), UNREACHABLE after the ping timeout, and the agent re-registers with its tasks when healed;
//! - a dead machine restarts: with its work directory kept it re-registers under its old agent id and
//!   reports the tasks it ran as TASK_GONE; with the work directory wiped it registers under a new id and
//!   the old tasks stay UNREACHABLE until the registry forgets the old agent
//!   (`registry_max_agent_age`), after which reconciliation answers TASK_UNKNOWN;
//! - an operator marks an agent gone (the operator API's MARK_AGENT_GONE): TASK_GONE_BY_OPERATOR;
//! - maintenance removes an agent at once (`remove`): its tasks are killed and reported TASK_GONE;
//! - a task fails, an offer is rescinded, the master fails over (agents re-register after a delay).

use tether_mesos::model::*;
use tokio::time::Instant;

use super::super::launcher::TaskControl;
use super::state::{Agent, AgentStatus, State, master_status, now_ns};

/// Why a fault or an operator call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FaultError {
    /// The master knows no such agent (never did, or its registry forgot it).
    #[error("Agent '{0}' not found")]
    UnknownAgent(String),
    /// The agent is in a state where the fault makes no sense.
    #[error("{0}")]
    Conflict(String),
}

/// How a dead machine comes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Its work directory survived: the agent recovers its id (Mesos ≥ 1.4) and the tasks it ran are
    /// reported TASK_GONE.
    KeepWorkDir,
    /// Its work directory was wiped: a new agent id; the old id's tasks stay UNREACHABLE.
    WipeWorkDir,
}

const MARKED_GONE: &str = "Agent has been marked gone";

impl State {
    /// The ping-timeout part of a tick: partitioned agents silent for too long become UNREACHABLE.
    pub(super) fn time_out_partitions(&mut self, now: Instant) {
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
            self.agent_unreachable(&a, now);
        }
    }

    /// The registry part of a tick: UNREACHABLE and GONE agents older than `registry_max_agent_age` are
    /// forgotten with their tasks, so reconciliation then answers TASK_UNKNOWN for them.
    pub(super) fn forget_old_agents(&mut self, now: Instant) {
        let max_age = self.cfg.registry_max_agent_age;
        let old: Vec<String> = self
            .agents
            .values()
            .filter(|a| matches!(a.status, AgentStatus::Unreachable | AgentStatus::Gone))
            .filter(|a| a.left_at.is_some_and(|t| now >= t + max_age))
            .map(|a| a.id.value.clone())
            .collect();
        for agent in old {
            for (fw, tid) in self.agent_tasks(&agent) {
                if let Some(f) = self.frameworks.get_mut(&fw) {
                    f.tasks.remove(&tid);
                }
            }
            self.agents.remove(&agent);
            tracing::info!(agent, "the registry forgot the agent");
        }
    }

    /// The re-registration part of a tick: agents whose post-failover delay passed are reachable again,
    /// so their queued updates go out and they are offered.
    pub(super) fn finish_reregistrations(&mut self, now: Instant) {
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
    }

    fn rescind_agent_offers(&mut self, agent: &str) {
        // The agent's inverse offers go with it (`Master::removeSlave`, `markUnreachable`).
        self.rescind_agent_inverse_offers(agent);
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

    /// Hands `c` to the launcher of every task on `agent`.
    fn control_agent_tasks(&self, agent: &str, c: &TaskControl) {
        for (fw, tid) in self.agent_tasks(agent) {
            if let Some(t) = self.frameworks.get(&fw).and_then(|f| f.tasks.get(&tid)) {
                t.control_task(c.clone());
            }
        }
    }

    /// The agent's tasks end with a master-generated update and are forgotten. Their processes are
    /// killed when the agent can be told (`kill`), else they keep running as the agent's orphans.
    fn end_agent_tasks(
        &mut self,
        agent: &str,
        state: TaskState,
        reason: Reason,
        msg: &str,
        kill: bool,
    ) {
        for (fw, tid) in self.agent_tasks(agent) {
            let Some(t) = self
                .frameworks
                .get_mut(&fw)
                .and_then(|f| f.tasks.remove(&tid))
            else {
                continue;
            };
            if kill {
                t.kill_now();
            } else if let (Some(c), Some(a)) = (t.control.clone(), self.agents.get_mut(agent)) {
                a.orphans.push(c);
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

    /// Maintenance: the agent is removed at once, its tasks killed and reported TASK_GONE
    /// (REASON_AGENT_REMOVED). Removing a removed or GONE agent changes nothing.
    pub fn remove_agent(&mut self, agent: &str) -> Result<(), FaultError> {
        let a = self.agent_mut(agent)?;
        if matches!(a.status, AgentStatus::Removed | AgentStatus::Gone) {
            return Ok(());
        }
        a.status = AgentStatus::Removed;
        let id = a.id.clone();
        self.rescind_agent_offers(agent);
        self.end_agent_tasks(
            agent,
            TaskState::Gone,
            Reason::ReasonAgentRemoved,
            "Agent removed",
            true,
        );
        self.broadcast_failure(&id);
        Ok(())
    }

    /// The agent's machine dies: its tasks' processes die with it (no update, no unmount), the agent
    /// falls silent, and the ping timeout makes its tasks UNREACHABLE. Killing a dead or removed machine
    /// changes nothing.
    pub fn kill_agent(&mut self, agent: &str) -> Result<(), FaultError> {
        let now = Instant::now();
        let a = self.agent_mut(agent)?;
        if a.down || a.status == AgentStatus::Removed {
            return Ok(());
        }
        a.down = true;
        a.frozen = false;
        if a.status == AgentStatus::Active && a.partitioned_at.is_none() {
            a.partitioned_at = Some(now);
        }
        for o in std::mem::take(&mut a.orphans) {
            let _ = o.send(TaskControl::Lose);
        }
        self.control_agent_tasks(agent, &TaskControl::Lose);
        tracing::info!(agent, "agent machine died");
        Ok(())
    }

    /// The agent is cut off: silent until the ping timeout makes its tasks UNREACHABLE. Its tasks keep
    /// running, or with `freeze` stop where they are until it heals.
    pub fn partition_agent(&mut self, agent: &str, freeze: bool) -> Result<(), FaultError> {
        let now = Instant::now();
        let a = self.agent_mut(agent)?;
        if a.down {
            return Ok(());
        }
        if a.status == AgentStatus::Active && a.partitioned_at.is_none() {
            a.partitioned_at = Some(now);
        }
        if freeze && !a.frozen {
            a.frozen = true;
            self.control_agent_tasks(agent, &TaskControl::Freeze);
        }
        Ok(())
    }

    fn agent_unreachable(&mut self, agent: &str, now: Instant) {
        let ns = now_ns();
        let Some(a) = self.agents.get_mut(agent) else {
            return;
        };
        a.status = AgentStatus::Unreachable;
        a.unreachable_ns = Some(ns);
        a.left_at = Some(now);
        a.killed.clear();
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
                Some("health check timed out".into()),
                Some(&id),
            );
            s.unreachable_time = Some(Nanos { nanoseconds: ns });
            t.state = TaskState::Unreachable;
            self.emit(&fw, &Event::update(s));
        }
        self.broadcast_failure(&id);
    }

    /// The partition heals: the agent re-registers, the master learns what the updates it held say, and
    /// its tasks are reported again (their current state, REASON_AGENT_REREGISTERED) before the held
    /// updates are retried until acknowledged; frozen processes continue. A GONE agent that reconnects is
    /// shut down, and the processes still running there with it. A dead machine cannot heal.
    pub fn heal_agent(&mut self, agent: &str) -> Result<(), FaultError> {
        let now = Instant::now();
        let a = self.agent_mut(agent)?;
        if a.down {
            return Err(FaultError::Conflict(format!(
                "the machine of agent {agent} is down: restart it"
            )));
        }
        a.partitioned_at = None;
        let thaw = std::mem::take(&mut a.frozen);
        match a.status {
            AgentStatus::Gone => {
                for o in std::mem::take(&mut a.orphans) {
                    let _ = o.send(TaskControl::Kill {
                        grace: std::time::Duration::ZERO,
                    });
                }
                return Ok(());
            }
            AgentStatus::Removed => return Ok(()),
            AgentStatus::Active | AgentStatus::Unreachable => {}
        }
        if thaw {
            self.control_agent_tasks(agent, &TaskControl::Thaw);
        }
        self.learn_held_updates(agent);
        let Some(a) = self.agents.get_mut(agent) else {
            return Ok(());
        };
        let killed = std::mem::take(&mut a.killed);
        if a.status == AgentStatus::Unreachable {
            a.status = AgentStatus::Active;
            a.unreachable_ns = None;
            a.left_at = None;
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
                    Some("Unreachable agent re-reregistered".into()),
                    Some(&id),
                );
                self.emit(&fw, &Event::update(s));
            }
        }
        self.flush_all(now);
        for (fw, k) in killed {
            self.kill(&fw, k);
        }
        self.allocate_now = true;
        Ok(())
    }

    /// The operator API's MARK_AGENT_GONE (`Master::Http::_markAgentGone`, `Master::markGone`): allowed
    /// for a registered or UNREACHABLE agent, idempotent for a GONE one, `UnknownAgent` (404) otherwise.
    /// Its tasks become TASK_GONE_BY_OPERATOR (REASON_AGENT_REMOVED_BY_OPERATOR). A registered agent
    /// the master can reach is shut down with its tasks; behind a partition the tasks keep running until
    /// the agent reconnects and is shut down.
    pub fn mark_gone(&mut self, agent: &str) -> Result<(), FaultError> {
        let now = Instant::now();
        let a = self.agent_mut(agent)?;
        let registered = match a.status {
            AgentStatus::Gone => return Ok(()),
            AgentStatus::Removed => return Err(FaultError::UnknownAgent(agent.to_string())),
            AgentStatus::Active => true,
            AgentStatus::Unreachable => false,
        };
        let reachable = registered && a.partitioned_at.is_none();
        a.status = AgentStatus::Gone;
        a.left_at = Some(now);
        let id = a.id.clone();
        self.rescind_agent_offers(agent);
        self.end_agent_tasks(
            agent,
            TaskState::GoneByOperator,
            Reason::ReasonAgentRemovedByOperator,
            MARKED_GONE,
            reachable,
        );
        if registered {
            self.broadcast_failure(&id);
        }
        tracing::info!(agent, "agent marked gone");
        Ok(())
    }

    /// A dead, removed or GONE agent's machine comes back; returns the agent id it registers under.
    /// Removed and GONE agents always come back under a new id (the master refuses the old one), a dead
    /// machine under its old id unless its work directory was wiped. An agent that is up cannot restart.
    pub fn restart_agent(&mut self, agent: &str, how: Restart) -> Result<String, FaultError> {
        let now = Instant::now();
        let a = self.agent_mut(agent)?;
        let same_id = match (a.status, a.down) {
            (AgentStatus::Removed | AgentStatus::Gone, _) => false,
            (_, true) => how == Restart::KeepWorkDir,
            (_, false) => {
                return Err(FaultError::Conflict(format!(
                    "agent {agent} is not down (kill, remove or mark it gone first)"
                )));
            }
        };
        // Whatever still ran on the old machine did not survive its restart.
        for o in std::mem::take(&mut a.orphans) {
            let _ = o.send(TaskControl::Lose);
        }
        if same_id {
            self.reregister_rebooted(agent, now);
            tracing::info!(agent, "agent restarted under its old id");
            return Ok(agent.to_string());
        }
        let cfg = a.cfg.clone();
        let mut n = self.agents.len();
        let id = loop {
            let candidate = format!("{}-S{n}", self.master_id);
            if !self.agents.contains_key(&candidate) {
                break candidate;
            }
            n += 1;
        };
        self.agents
            .insert(id.clone(), Agent::new(AgentID::new(id.clone()), cfg));
        self.allocate_now = true;
        tracing::info!(old = agent, new = %id, "agent restarted under a new id");
        Ok(id)
    }

    /// A rebooted machine's agent recovers its id and re-registers: the executors of its tasks did not
    /// survive the reboot, so it reports each task it ran as TASK_GONE (agent updates, acknowledged).
    fn reregister_rebooted(&mut self, agent: &str, now: Instant) {
        let Some(a) = self.agents.get_mut(agent) else {
            return;
        };
        a.status = AgentStatus::Active;
        a.down = false;
        a.frozen = false;
        a.killed.clear();
        a.partitioned_at = None;
        a.unreachable_ns = None;
        a.left_at = None;
        for (fw, tid) in self.agent_tasks(agent) {
            let Some(f) = self.frameworks.get_mut(&fw) else {
                continue;
            };
            let fid = f.id.clone();
            if let Some(t) = f.tasks.get_mut(&tid) {
                t.unreachable_ns = None;
            }
            // The real agent's reason is REASON_EXECUTOR_REREGISTRATION_TIMEOUT, which `tether-mesos`
            // does not model; REASON_AGENT_RESTARTED says the same to a framework.
            self.report(
                &fid,
                &tid,
                TaskState::Gone,
                Some(Reason::ReasonAgentRestarted),
                Some("Executor did not reregister after the agent restarted".into()),
                None,
            );
        }
        self.flush_all(now);
        self.allocate_now = true;
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
        self.maintenance_after_failover();
        self.master_id = uuid::Uuid::new_v4().to_string();
        for a in self.agents.values_mut() {
            if a.status == AgentStatus::Active {
                a.recovering_until = Some(now + self.cfg.agent_reregister_delay);
            }
        }
        tracing::info!(master = %self.master_id, "master restarted");
    }

    fn agent_mut(&mut self, agent: &str) -> Result<&mut Agent, FaultError> {
        self.agents
            .get_mut(agent)
            .ok_or_else(|| FaultError::UnknownAgent(agent.to_string()))
    }
}
