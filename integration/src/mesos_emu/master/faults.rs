//! Faults and what the master does about them: an agent killed (removed: its tasks GONE), partitioned
//! (silent until the ping timeout, then UNREACHABLE) and healed (re-registered with its tasks) or
//! marked GONE by the operator, a removed or GONE machine coming back under a new agent id, a task
//! failed, an offer rescinded, and a master failover (agents re-register after a delay).

use tether_mesos::model::*;
use tokio::time::Instant;

use super::super::launcher::TaskControl;
use super::state::{Agent, AgentStatus, State, master_status, now_ns};

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
            self.agent_unreachable(&a);
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
            t.kill_now();
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
        self.agents
            .insert(id.clone(), Agent::new(AgentID::new(id.clone()), cfg));
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
