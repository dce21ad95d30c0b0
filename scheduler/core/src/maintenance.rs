//! Mesos maintenance: a node whose agent is scheduled for maintenance is moved away through the same
//! safe path as `tetherctl replace` (`removal.rs`, kind [`RemovalKind::Maintenance`]) before the window
//! starts, and relaunched on its volumes elsewhere.
//!
//! What tells the core an agent is under maintenance (each converted at the boundary, the window on
//! the core's clock):
//! - an inverse offer (`INVERSE_OFFERS`), sent by the master to frameworks with resources on an agent
//!   whose machine is in the maintenance schedule; `RESCIND_INVERSE_OFFER` withdraws it;
//! - an offer carrying `unavailability` (the master puts it on every offer of such an agent): nothing
//!   is placed there, and an offer of a known agent *without* it says the maintenance is over;
//! - a status update with `REASON_AGENT_DRAINING` (`DRAIN_AGENT`): the master itself kills the agent's
//!   tasks and offers nothing of it until it is reactivated, so there is nothing to move ahead of it;
//!   the killed node is relaunched elsewhere at once, without a backoff.
//!
//! The rules: one node moves at a time, and none while any other removal is under way; a node
//! Elasticsearch counts on moves only while the cluster is not red, every other node runs, and its
//! removal would not take the last copy of a shard or the last master-eligible node (`check_removal`)
//! — otherwise it stays, and why is its `last_reason` (`tetherctl nodes`) and a watch warning. An inverse
//! offer is accepted once the agent holds no Tether task (the operator may go ahead), declined while a
//! node there cannot be moved, and held (unanswered) while its nodes are being moved or wait for their
//! turn; each answer carries `maintenance_refuse_seconds` as the filter so the master does not ask every
//! allocation interval. (The master sends inverse offers only to frameworks with resources on the agent:
//! an inverse offer declined during a move would have no successor to accept once the agent is empty.)
//!
//! Durable: only the move itself (the node's `SlotRecord::removal`), so a new leader finishes it and
//! starts no second one. The set of agents under maintenance is not stored: after a (re)subscription
//! the master rescinds the inverse offers of the old subscription and sends new ones at its next
//! allocation, and every offer of such an agent carries its `unavailability`.

use crate::command::{MesosCommand, Reason, WatchEvent};
use crate::core::Core;
use crate::domain::{EsHealth, InverseOffer, Offer, TaskState, TaskStatus, Unavailability};
use crate::ids::{AgentId, Millis, NodeId, OfferId};
use crate::removal::Membership;
use crate::state::RemovalKind;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// What the core knows of maintenance (not durable: the master tells it again).
#[derive(Debug, Clone, Default)]
pub(crate) struct MaintenanceState {
    /// Agents Mesos says are scheduled for maintenance.
    pub(crate) agents: BTreeMap<AgentId, AgentMaintenance>,
    /// Nodes not moved away yet, with why (as last reported: a watcher is told each change once).
    pub(crate) blocked: BTreeMap<NodeId, String>,
    /// Of those, the nodes that only wait for another node's move (their agent's inverse offer is
    /// held, not declined: Tether is complying).
    pub(crate) waiting_turn: BTreeSet<NodeId>,
}

/// What the core knows of one agent's maintenance (not durable: the master tells it again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AgentMaintenance {
    /// The latest window Mesos gave.
    pub(crate) window: Unavailability,
    /// Inverse offers received and not answered yet.
    pub(crate) unanswered: BTreeSet<OfferId>,
    /// Inverse offers of this agent the master has not rescinded (answered ones included).
    pub(crate) inverse_offers: BTreeSet<OfferId>,
    /// The agent's latest offer carried `unavailability`.
    pub(crate) from_offer: bool,
    /// A task of the agent was killed with `REASON_AGENT_DRAINING`.
    pub(crate) draining: bool,
}

impl AgentMaintenance {
    fn new(window: Unavailability) -> AgentMaintenance {
        AgentMaintenance {
            window,
            unanswered: BTreeSet::new(),
            inverse_offers: BTreeSet::new(),
            from_offer: false,
            draining: false,
        }
    }

    /// Whether anything still says the agent is under maintenance.
    fn evident(&self) -> bool {
        !self.inverse_offers.is_empty() || self.from_offer || self.draining
    }
}

/// An agent under maintenance as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintenanceView {
    /// The agent.
    pub agent_id: AgentId,
    /// Its window.
    pub window: Unavailability,
    /// Mesos is draining it (`DRAIN_AGENT`).
    pub draining: bool,
    /// The Tether nodes still on it.
    pub nodes: Vec<NodeId>,
}

impl Core {
    /// INVERSE_OFFERS: the agents are scheduled for maintenance. Their nodes are moved away (one at a
    /// time) and each inverse offer is answered.
    pub fn handle_inverse_offers(&mut self, offers: Vec<InverseOffer>, now: Millis) {
        for o in offers {
            let m = self
                .maintenance
                .agents
                .entry(o.agent_id.clone())
                .or_insert_with(|| AgentMaintenance::new(o.unavailability));
            let new_window = m.window != o.unavailability || !m.evident();
            m.window = o.unavailability;
            m.unanswered.insert(o.id.clone());
            m.inverse_offers.insert(o.id);
            if new_window {
                self.watch(WatchEvent::Warning {
                    message: format!(
                        "agent {} is scheduled for maintenance from {} ms{}",
                        o.agent_id,
                        o.unavailability.start.0,
                        o.unavailability
                            .duration_ms
                            .map_or_else(|| " (for good)".to_owned(), |d| format!(" for {d} ms")),
                    ),
                });
            }
        }
        self.drive_maintenance(now);
        self.flush_interest();
    }

    /// RESCIND_INVERSE_OFFER: the master withdrew an inverse offer (its schedule changed, its agent
    /// left, or the subscription changed); without other evidence the agent is no longer under
    /// maintenance. A move already under way finishes: it is safe either way.
    pub fn handle_rescind_inverse_offer(&mut self, id: &OfferId, now: Millis) {
        let Some(agent) = self
            .maintenance
            .agents
            .iter()
            .find(|(_, m)| m.inverse_offers.contains(id))
            .map(|(a, _)| a.clone())
        else {
            return;
        };
        if let Some(m) = self.maintenance.agents.get_mut(&agent) {
            m.inverse_offers.remove(id);
            m.unanswered.remove(id);
            if !m.evident() {
                self.maintenance.agents.remove(&agent);
            }
        }
        self.drive_maintenance(now);
        self.flush_interest();
    }

    /// What a round of offers says of maintenance: an offer with `unavailability` marks its agent, one
    /// without it clears a known agent (the master puts it on every offer while the machine is in the
    /// schedule). Called before placement, which skips the marked offers.
    pub(crate) fn note_offers_maintenance(&mut self, offers: &[Offer], now: Millis) {
        if self.maintenance.agents.is_empty() && offers.iter().all(|o| o.unavailability.is_none()) {
            return;
        }
        let mut changed = false;
        for o in offers {
            match o.unavailability {
                Some(u) => {
                    let m = self
                        .maintenance
                        .agents
                        .entry(o.agent_id.clone())
                        .or_insert_with(|| AgentMaintenance::new(u));
                    changed |= !m.from_offer || m.window != u;
                    m.window = u;
                    m.from_offer = true;
                }
                None => {
                    if self.maintenance.agents.remove(&o.agent_id).is_some() {
                        changed = true;
                        self.watch(WatchEvent::Warning {
                            message: format!(
                                "agent {} is no longer scheduled for maintenance",
                                o.agent_id
                            ),
                        });
                    }
                }
            }
        }
        if changed {
            self.drive_maintenance(now);
        }
    }

    /// A status update with `REASON_AGENT_DRAINING`: Mesos drains the agent (it kills the tasks itself
    /// and offers nothing of the agent until an operator reactivates it).
    pub(crate) fn note_draining(&mut self, status: &TaskStatus, now: Millis) {
        let agent = status.agent_id.clone().or_else(|| {
            self.tasks
                .get(&status.task_id)
                .and_then(|id| self.record(*id))
                .and_then(|r| r.task.as_ref())
                .map(|t| t.agent_id.clone())
        });
        let Some(agent) = agent else { return };
        let m = self
            .maintenance
            .agents
            .entry(agent.clone())
            .or_insert_with(|| {
                AgentMaintenance::new(Unavailability {
                    start: now,
                    duration_ms: None,
                })
            });
        if !m.draining {
            m.draining = true;
            self.watch(WatchEvent::Warning {
                message: format!(
                    "agent {agent} is being drained by Mesos (DRAIN_AGENT): its tasks are killed by \
                     the master; Tether's nodes there are relaunched elsewhere"
                ),
            });
        }
    }

    /// The agents under maintenance.
    #[must_use]
    pub fn maintenance(&self) -> Vec<MaintenanceView> {
        self.maintenance
            .agents
            .keys()
            .filter_map(|agent| self.maintenance_of(agent))
            .collect()
    }

    /// `agent`'s maintenance, if Mesos scheduled it (`tetherctl agents`).
    pub(crate) fn maintenance_of(&self, agent: &AgentId) -> Option<MaintenanceView> {
        let m = self.maintenance.agents.get(agent)?;
        Some(MaintenanceView {
            agent_id: agent.clone(),
            window: m.window,
            draining: m.draining,
            nodes: self.nodes_on(agent),
        })
    }

    /// The nodes whose task may run on `agent`, or that are being prepared there.
    fn nodes_on(&self, agent: &AgentId) -> Vec<NodeId> {
        self.persisted
            .slots
            .values()
            .filter(|r| {
                r.task
                    .as_ref()
                    .is_some_and(|t| !t.is_terminal() && &t.agent_id == agent)
                    || self
                        .slots
                        .get(&r.node_id)
                        .and_then(|rt| rt.preparing.as_ref())
                        .is_some_and(|p| &p.offer.agent_id == agent)
            })
            .map(|r| r.node_id)
            .collect()
    }

    /// Answers the unanswered inverse offers that can be: accepted once the agent holds no Tether
    /// task; declined while a node there cannot be moved (the master asks again after the filter);
    /// held while its nodes are being moved or wait for their turn. Held, not declined, because the
    /// master sends inverse offers only to frameworks with resources on the agent (`generateInverseOffers`):
    /// one declined during the move would never be followed by another once the agent is empty, and
    /// the operator would see DECLINE to the end.
    fn answer_inverse_offers(&mut self) {
        let mut accept = Vec::new();
        let mut decline = Vec::new();
        let agents: Vec<AgentId> = self
            .maintenance
            .agents
            .iter()
            .filter(|(_, m)| !m.unanswered.is_empty())
            .map(|(a, _)| a.clone())
            .collect();
        for agent in agents {
            let nodes = self.nodes_on(&agent);
            let empty = nodes.is_empty();
            let stuck = nodes.iter().any(|id| {
                self.maintenance.blocked.contains_key(id)
                    && !self.maintenance.waiting_turn.contains(id)
            });
            if !empty && !stuck {
                continue;
            }
            let Some(m) = self.maintenance.agents.get_mut(&agent) else {
                continue;
            };
            let ids = std::mem::take(&mut m.unanswered);
            if empty {
                accept.extend(ids);
                self.watch(WatchEvent::Warning {
                    message: format!(
                        "agent {agent} holds no Tether node: its maintenance may go ahead (inverse \
                         offer accepted)"
                    ),
                });
            } else {
                decline.extend(ids);
            }
        }
        let refuse_seconds = self.config.maintenance_refuse_seconds;
        if !accept.is_empty() {
            self.mesos(MesosCommand::AcceptInverseOffers {
                inverse_offer_ids: accept,
                refuse_seconds,
            });
        }
        if !decline.is_empty() {
            self.mesos(MesosCommand::DeclineInverseOffers {
                inverse_offer_ids: decline,
                refuse_seconds,
            });
        }
    }

    /// A new subscription: the master rescinded the old one's inverse offers and offers (and sends new
    /// ones), so only what a status update told (draining) is kept.
    pub(crate) fn maintenance_resubscribed(&mut self, now: Millis) {
        self.maintenance.agents.retain(|_, m| {
            m.inverse_offers.clear();
            m.unanswered.clear();
            m.from_offer = false;
            m.draining
        });
        self.drive_maintenance(now);
    }

    /// Starts moving the next node off an agent under maintenance when the rules allow it, and records
    /// why each other such node waits.
    pub(crate) fn drive_maintenance(&mut self, now: Millis) {
        let mut blocked: BTreeMap<NodeId, String> = BTreeMap::new();
        let mut turn: BTreeSet<NodeId> = BTreeSet::new();
        if self.subscribed_since.is_some() && !self.maintenance.agents.is_empty() {
            self.plan_maintenance(&mut blocked, &mut turn, now);
        }
        self.maintenance.waiting_turn = turn;
        // The node's reason says why it stays (a status update may have reset it); watchers hear of
        // each change once; a reason that no longer holds goes.
        let before = std::mem::replace(&mut self.maintenance.blocked, blocked.clone());
        for (id, why) in &before {
            if !blocked.contains_key(id)
                && let Some(rt) = self.slots.get_mut(id)
                && rt.reason == Some(Reason::MaintenanceBlocked(why.clone()))
            {
                rt.reason = None;
            }
        }
        for (id, why) in blocked {
            if let Some(rt) = self.slots.get_mut(&id) {
                rt.reason = Some(Reason::MaintenanceBlocked(why.clone()));
            }
            if before.get(&id) != Some(&why) {
                self.watch(WatchEvent::Warning {
                    message: format!(
                        "node {id}: its agent is scheduled for maintenance; not moved away yet: {why}"
                    ),
                });
            }
        }
        self.answer_inverse_offers();
    }

    fn plan_maintenance(
        &mut self,
        blocked: &mut BTreeMap<NodeId, String>,
        turn: &mut BTreeSet<NodeId>,
        now: Millis,
    ) {
        // Earliest window first, then the node id.
        let mut waiting: Vec<(Millis, NodeId)> = Vec::new();
        for (agent, m) in &self.maintenance.agents {
            if m.draining {
                // The master kills its tasks itself; nothing to move ahead of it.
                continue;
            }
            for id in self.nodes_on(agent) {
                let r = self.record(id);
                if r.is_some_and(|r| !r.removed && r.removal.is_none()) {
                    waiting.push((m.window.start, id));
                }
            }
        }
        waiting.sort_unstable();
        if waiting.is_empty() {
            return;
        }
        if let Some(moving) = self
            .persisted
            .slots
            .values()
            .find(|r| r.removal.is_some())
            .map(|r| r.node_id)
        {
            for (_, id) in waiting {
                blocked.insert(
                    id,
                    format!("node {moving} is being removed or moved first (one node at a time)"),
                );
                turn.insert(id);
            }
            return;
        }
        // The first that may move does; one that may not never holds up the others.
        let mut started: Option<NodeId> = None;
        for (_, id) in waiting {
            if let Some(first) = started {
                blocked.insert(id, format!("node {first} is moved away first"));
                turn.insert(id);
                continue;
            }
            match self.maintenance_guard(id, now) {
                Some(why) => {
                    blocked.insert(id, why);
                }
                None => {
                    self.watch(WatchEvent::Removal {
                        node_id: id,
                        message: "its agent is scheduled for maintenance: moving it away".into(),
                        stalled: false,
                    });
                    self.begin_removal(id, RemovalKind::Maintenance, false, now);
                    started = Some(id);
                }
            }
        }
    }

    /// Why node `id` may not be moved away now (`None`: it may).
    fn maintenance_guard(&self, id: NodeId, now: Millis) -> Option<String> {
        let running = self
            .record(id)
            .and_then(|r| r.task.as_ref())
            .is_some_and(|t| t.state == Some(TaskState::Running));
        if !running {
            // Starting, or UNREACHABLE: not stopped before Mesos says where it stands.
            return Some("its task is not RUNNING".into());
        }
        match self.membership(id, now) {
            Membership::Out => return None,
            Membership::Unknown => {
                return Some("no recent answer from Elasticsearch (it may hold data)".into());
            }
            Membership::In => {}
        }
        let Some(cluster) = self.fresh_cluster(now) else {
            return Some("no recent answer from Elasticsearch".into());
        };
        match cluster.health {
            EsHealth::Green | EsHealth::Yellow => {}
            EsHealth::Red => return Some("the cluster is red".into()),
            EsHealth::NoMaster | EsHealth::Unknown => {
                return Some("Elasticsearch reports no healthy elected master".into());
            }
        }
        if let Some(other) = self.persisted.slots.values().find(|r| {
            let running = r
                .task
                .as_ref()
                .is_some_and(|t| t.state == Some(TaskState::Running));
            r.node_id != id && !r.removed && !running
        }) {
            return Some(format!(
                "node {} is not running: one node down at a time",
                other.node_id
            ));
        }
        if let Some(other) = self.persisted.slots.values().find(|r| {
            r.node_id != id && !r.removed && !cluster.lists(&self.config.node_name(r.node_id))
        }) {
            return Some(format!(
                "node {} has not joined the cluster: one node away at a time",
                other.node_id
            ));
        }
        let remaining: u64 = self.groups.values().map(|g| g.ids.len() as u64).sum();
        self.check_removal(&[id], remaining, false, now)
            .err()
            .map(|e| format!("{e}; `tetherctl replace {id} --allow-data-loss` moves it anyway"))
    }
}
