//! Status updates: an agent's updates get a uuid and queue per task, the head is delivered while the
//! agent is reachable and the framework subscribed, and only its ACKNOWLEDGE (matching uuid) moves the
//! queue on; unacknowledged heads are resent every resend interval. Master-generated updates are sent
//! once and never acknowledged. KILL, and RECONCILE per the master's case table.

use std::time::Duration;

use tether_mesos::model::*;
use tokio::time::Instant;

use super::super::launcher::TaskControl;
use super::state::{AgentStatus, Framework, State, Task, master_status, new_uuid_b64, now_secs};

impl State {
    /// An update from the task's agent (executor, or the agent itself for a failed launch): queued for
    /// delivery; a terminal one frees the task's resources. Behind a partition the agent's status update
    /// manager holds it (and retries it once the agent is back): the master learns nothing of it, so
    /// its view of the task (state, resources, what reconciliation and the ping timeout see) stays as it
    /// was until the agent reconnects ([`State::learn_held_updates`]).
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
        let partitioned = self
            .frameworks
            .get(&fw.value)
            .and_then(|f| f.tasks.get(task_id))
            .and_then(|t| self.agents.get(&t.agent.value))
            .is_some_and(|a| a.partitioned_at.is_some() || a.status == AgentStatus::Unreachable);
        let Some(f) = self.frameworks.get_mut(&fw.value) else {
            return;
        };
        let killing_ok = f.info.has_capability(CapabilityType::TaskKillingState);
        let Some(t) = f.tasks.get_mut(task_id) else {
            return;
        };
        // The agent's own latest word on the task: the newest update it still holds, else the master's.
        let (agent_state, agent_healthy) = t
            .pending
            .back()
            .map_or((t.state, t.healthy), |s| (s.state, s.healthy));
        if t.state.is_terminal()
            || agent_state.is_terminal()
            || (state == TaskState::Killing && !killing_ok)
        {
            return;
        }
        let mut s = TaskStatus::new(t.info.task_id.clone(), state);
        s.message = message;
        // The agent itself speaks for a container it could not start or an executor that did not
        // survive its restart; everything else comes from the executor.
        s.source = Some(match reason {
            Some(Reason::ReasonContainerLaunchFailed | Reason::ReasonAgentRestarted) => {
                Source::SourceAgent
            }
            _ => Source::SourceExecutor,
        });
        s.reason = reason;
        s.agent_id = Some(t.agent.clone());
        s.executor_id = Some(ExecutorID::new(t.info.task_id.value.clone()));
        s.timestamp = Some(now_secs());
        s.uuid = Some(new_uuid_b64());
        s.healthy = healthy.or(agent_healthy);
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
        let healthy = s.healthy;
        t.pending.push_back(s);
        let first = t.pending.len() == 1;
        if state.is_terminal() {
            t.control = None;
        }
        if partitioned {
            return;
        }
        t.state = state;
        t.healthy = healthy;
        if state.is_terminal() {
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

    /// A partitioned agent is back: the master learns what its held updates say of each task (the newest
    /// one's state, and a terminal one frees the task's resources) before they are delivered in order.
    pub(super) fn learn_held_updates(&mut self, agent: &str) {
        for (fw, tid) in self.agent_tasks(agent) {
            let Some(t) = self
                .frameworks
                .get_mut(&fw)
                .and_then(|f| f.tasks.get_mut(&tid))
            else {
                continue;
            };
            let Some((state, healthy)) = t.pending.back().map(|s| (s.state, s.healthy)) else {
                continue;
            };
            if t.state.is_terminal() || t.state == state {
                continue;
            }
            t.state = state;
            t.healthy = healthy;
            if state.is_terminal() {
                let res = t.res.clone();
                if let Some(a) = self.agents.get_mut(agent) {
                    a.free.add(&res);
                }
                self.allocate_now = true;
            }
        }
    }

    /// The resend part of a tick: every outstanding head again, once per resend interval.
    pub(super) fn resend_updates(&mut self, now: Instant) {
        if now >= self.next_resend {
            self.next_resend = now + self.cfg.status_resend_interval;
            self.flush_all(now);
        }
    }

    /// Sends the head of every deliverable task queue.
    pub(super) fn flush_all(&mut self, now: Instant) {
        let keys: Vec<(String, String)> = self
            .frameworks
            .iter()
            .flat_map(|(f, fr)| fr.tasks.keys().map(move |t| (f.clone(), t.clone())))
            .collect();
        for (f, t) in keys {
            self.flush(&f, &t, now);
        }
    }

    /// Sends the head of the task's queue, if the framework is subscribed and the agent reachable.
    pub(super) fn flush(&mut self, fw: &str, task: &str, now: Instant) {
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

    /// A master-generated update: no uuid, sent once, never acknowledged.
    pub(super) fn master_update(
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

    /// ACKNOWLEDGE of the head of a task's queue: the next one is sent; a task whose last update was
    /// terminal is forgotten.
    pub(super) fn acknowledge(&mut self, fw: &str, a: Acknowledge, now: Instant) {
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

    /// KILL: TASK_KILLING (when the framework takes it), then the launcher stops the task within the
    /// grace period. An unknown task, or one of an UNREACHABLE agent (the master keeps those apart from
    /// its tasks), is answered as by reconciliation. A task of an agent the master still counts as
    /// registered but cannot reach (partitioned, not yet timed out) is killed when the agent reconnects.
    pub(super) fn kill(&mut self, fw: &str, k: Kill) {
        let Some(f) = self.frameworks.get_mut(fw) else {
            return;
        };
        let Some(t) = f
            .tasks
            .get_mut(&k.task_id.value)
            .filter(|t| t.state != TaskState::Unreachable)
        else {
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
        let agent = t.agent.value.clone();
        if let Some(a) = self
            .agents
            .get_mut(&agent)
            .filter(|a| a.partitioned_at.is_some())
        {
            a.killed.push((fw.to_owned(), k));
            return;
        }
        let Some(t) = self
            .frameworks
            .get_mut(fw)
            .and_then(|f| f.tasks.get_mut(&k.task_id.value))
        else {
            return;
        };
        let grace = k
            .kill_policy
            .or(t.info.kill_policy)
            .and_then(|p| p.grace_period)
            .map(|g| Duration::from_nanos(g.nanoseconds.max(0) as u64))
            .unwrap_or(Duration::from_secs(3));
        let Some(ctl) = t.control.clone() else { return };
        let task_id = t.info.task_id.value.clone();
        let fid = FrameworkID::new(fw.to_owned());
        self.report(&fid, &task_id, TaskState::Killing, None, None, None);
        let _ = ctl.send(TaskControl::Kill { grace });
    }

    /// RECONCILE: implicit (no tasks: every known task but the unreachable ones) or explicit, per the
    /// master's case table for tasks it does not know.
    pub(super) fn reconcile(&mut self, fw: &str, tasks: Vec<ReconcileTask>, now: Instant) {
        let Some(f) = self.frameworks.get(fw) else {
            return;
        };
        let mut out = Vec::new();
        if tasks.is_empty() {
            for t in f.tasks.values() {
                if t.state == TaskState::Unreachable {
                    continue;
                }
                out.push(known_status(f, t));
            }
        } else {
            let any_recovering = self.agents.values().any(|a| a.recovering(now));
            for rt in tasks {
                if let Some(t) = f.tasks.get(&rt.task_id.value) {
                    out.push(known_status(f, t));
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
}

/// A known task's reconciliation answer: the state last sent (or known), its health and unreachable time.
fn known_status(f: &Framework, t: &Task) -> TaskStatus {
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
