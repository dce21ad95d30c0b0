//! Maintenance primitives, as the real master and its allocator do them (`src/master/http.cpp`
//! `maintenanceSchedule`/`maintenanceStatus`, `src/master/maintenance.cpp` validation,
//! `Master::updateUnavailability`, `Master::inverseOffer`, `acceptInverseOffers`/`declineInverseOffers`,
//! `HierarchicalAllocatorProcess::{updateUnavailability, updateInverseOffer, generateInverseOffers}`):
//!
//! - `POST /maintenance/schedule` (`mesos.v1.maintenance.Schedule`) replaces the one schedule: every
//!   machine in it is DRAINING with its window, every machine left out is UP again. A machine is an
//!   agent when both its host name (case-insensitive) and its IP match the agent's (`127.0.0.1` here,
//!   as its offers' `url` say); an omitted field is `""` and must match too. For each agent whose
//!   unavailability changes, its offers and inverse offers are rescinded, its inverse-offer answers and
//!   filters forgotten, and the next allocation sends new ones.
//! - Offers of such an agent carry `unavailability`; each allocation sends an inverse offer (no
//!   resources: the whole agent) to every subscribed framework with resources offered or allocated on
//!   it, unless one is outstanding or the framework filtered inverse offers of that agent.
//! - ACCEPT_INVERSE_OFFERS / DECLINE_INVERSE_OFFERS record the framework's answer (ACCEPT/DECLINE with
//!   a timestamp) and install a filter of `refuse_seconds` (5 s by default, 365 days at most, negative
//!   is the default, 0 is none); the master asks again once it expires. Unknown ids are ignored.
//! - Inverse offers are rescinded when the framework re-subscribes (and dropped when it disconnects),
//!   and when their agent is removed or becomes unreachable. The answers live in the allocator and
//!   are lost with a master failover, as upstream.
//! - `GET /maintenance/schedule` and `GET /maintenance/status` (`ClusterStatus`: each draining machine
//!   with the latest answers of the frameworks) answer from that.
//!
//! Not emulated: `/machine/down` and `/machine/up` (DOWN mode), the operator API's maintenance calls,
//! and `DRAIN_AGENT`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tether_mesos::model::*;
use tokio::time::Instant;

use super::state::{Reply, State, now_ns};

/// `Filters.refuse_seconds` by default.
const DEFAULT_REFUSE: f64 = 5.0;
/// The longest filter the allocator installs.
const MAX_REFUSE: f64 = 365.0 * 24.0 * 3600.0;
/// The IP of every emulated agent's pid (what its offers' `url` say).
pub(crate) const AGENT_IP: &str = "127.0.0.1";

/// The allocator's maintenance of one agent (`Slave::Maintenance`).
#[derive(Debug, Clone)]
pub(crate) struct AgentMaintenance {
    pub unavailability: Unavailability,
    /// Frameworks with an inverse offer of this agent outstanding.
    pub outstanding: BTreeSet<String>,
    /// The latest answer of each framework.
    pub statuses: BTreeMap<String, InverseOfferStatus>,
    /// Until when each framework refused inverse offers of this agent.
    pub filters: BTreeMap<String, Instant>,
}

/// One outstanding inverse offer.
#[derive(Debug, Clone)]
pub(crate) struct InverseOfferRec {
    pub framework: String,
    pub agent: String,
}

/// The machine id of an agent host.
fn machine_of(hostname: &str) -> MachineID {
    MachineID {
        hostname: Some(hostname.to_owned()),
        ip: Some(AGENT_IP.to_owned()),
    }
}

/// Whether a schedule's machine is the agent's machine (host name case-insensitive; both must match).
fn same_machine(a: &MachineID, b: &MachineID) -> bool {
    a.hostname.as_deref().unwrap_or("").to_lowercase()
        == b.hostname.as_deref().unwrap_or("").to_lowercase()
        && a.ip.as_deref().unwrap_or("") == b.ip.as_deref().unwrap_or("")
}

fn machine_json(m: &MachineID) -> String {
    serde_json::to_string(m).unwrap_or_default()
}

/// `maintenance::validation::schedule` (without DOWN machines, which the emulator has none of).
fn validate(schedule: &MaintenanceSchedule) -> Result<(), String> {
    let mut seen: Vec<MachineID> = Vec::new();
    for w in &schedule.windows {
        if w.machine_ids.is_empty() {
            return Err("List of machines in the maintenance window is empty".into());
        }
        if w.unavailability.duration.is_some_and(|d| d.nanoseconds < 0) {
            return Err("Unavailability 'duration' is negative".into());
        }
        for m in &w.machine_ids {
            let host = m.hostname.as_deref().unwrap_or("");
            let ip = m.ip.as_deref().unwrap_or("");
            if host.is_empty() && ip.is_empty() {
                return Err("Both 'hostname' and 'ip' for a machine are empty".into());
            }
            if !ip.is_empty() && ip.parse::<std::net::Ipv4Addr>().is_err() {
                return Err(format!("Failed to parse IP '{ip}'"));
            }
            if seen.iter().any(|s| same_machine(s, m)) {
                return Err(format!(
                    "Machine '{}' appears more than once in the schedule",
                    machine_json(m)
                ));
            }
            seen.push(m.clone());
        }
    }
    Ok(())
}

impl State {
    /// `POST /maintenance/schedule`: 200 with an empty body, or 400 with the master's reason.
    pub fn update_maintenance_schedule(&mut self, body: &str) -> Reply {
        let value: serde_json::Value = match serde_json::from_str(body) {
            Ok(v) => v,
            Err(e) => return Reply::Status(400, format!("Failed to parse JSON: {e}")),
        };
        let schedule: MaintenanceSchedule = match serde_json::from_value(value) {
            Ok(s) => s,
            Err(e) => return Reply::Status(400, format!("Failed to parse schedule: {e}")),
        };
        if let Err(e) = validate(&schedule) {
            return Reply::Status(400, e);
        }
        let mut windows: Vec<(MachineID, Unavailability)> = Vec::new();
        for w in &schedule.windows {
            for m in &w.machine_ids {
                windows.push((m.clone(), w.unavailability.clone()));
            }
        }
        let agents: Vec<(String, String)> = self
            .agents
            .iter()
            .map(|(id, a)| (id.clone(), a.cfg.hostname.clone()))
            .collect();
        for (aid, host) in agents {
            let machine = machine_of(&host);
            let new = windows
                .iter()
                .find(|(m, _)| same_machine(m, &machine))
                .map(|(_, u)| u.clone());
            let old = self.maintenance.get(&aid).map(|m| m.unavailability.clone());
            if old.is_none() && new.is_none() {
                continue;
            }
            // The master rescinds and re-sends even when the window did not change.
            self.update_unavailability(&aid, new);
        }
        self.schedule = schedule;
        self.allocate_now = true;
        Reply::Status(200, String::new())
    }

    /// `Master::updateUnavailability` for one agent: its offers and inverse offers are rescinded and the
    /// allocator starts the agent's maintenance afresh (answers and filters gone).
    fn update_unavailability(&mut self, aid: &str, unavailability: Option<Unavailability>) {
        let offers: Vec<String> = self
            .offers
            .iter()
            .filter(|(_, o)| o.agent.value == aid)
            .map(|(k, _)| k.clone())
            .collect();
        for id in offers {
            self.remove_offer(&id, true);
        }
        self.rescind_agent_inverse_offers(aid);
        match unavailability {
            Some(u) => {
                self.maintenance.insert(
                    aid.to_owned(),
                    AgentMaintenance {
                        unavailability: u,
                        outstanding: BTreeSet::new(),
                        statuses: BTreeMap::new(),
                        filters: BTreeMap::new(),
                    },
                );
            }
            None => {
                self.maintenance.remove(aid);
            }
        }
    }

    /// The agent's window, for its offers.
    pub(super) fn unavailability_of(&self, aid: &str) -> Option<Unavailability> {
        self.maintenance.get(aid).map(|m| m.unavailability.clone())
    }

    /// `generateInverseOffers`: run after the allocation's offers.
    pub(super) fn generate_inverse_offers(&mut self, now: Instant) {
        let mut out: BTreeMap<String, Vec<InverseOffer>> = BTreeMap::new();
        let aids: Vec<String> = self.maintenance.keys().cloned().collect();
        for aid in aids {
            let Some(a) = self.agents.get(&aid) else {
                continue;
            };
            if !a.reachable(now) {
                continue;
            }
            let hostname = a.cfg.hostname.clone();
            let agent_id = a.id.clone();
            let fws: Vec<String> = self
                .frameworks
                .iter()
                .filter(|(fw, f)| {
                    f.stream.is_some()
                        && (f
                            .tasks
                            .values()
                            .any(|t| t.agent.value == aid && !t.state.is_terminal())
                            || self
                                .offers
                                .values()
                                .any(|o| &o.framework == *fw && o.agent.value == aid))
                })
                .map(|(fw, _)| fw.clone())
                .collect();
            for fw in fws {
                let Some(m) = self.maintenance.get_mut(&aid) else {
                    continue;
                };
                m.filters.retain(|_, until| *until > now);
                if m.outstanding.contains(&fw) || m.filters.contains_key(&fw) {
                    continue;
                }
                m.outstanding.insert(fw.clone());
                let unavailability = m.unavailability.clone();
                let id = format!("{}-O{}", self.master_id, self.next_offer);
                self.next_offer += 1;
                self.inverse_offers.insert(
                    id.clone(),
                    InverseOfferRec {
                        framework: fw.clone(),
                        agent: aid.clone(),
                    },
                );
                let framework_id = self.frameworks[&fw].id.clone();
                out.entry(fw).or_default().push(InverseOffer {
                    id: OfferID::new(id),
                    url: Some(Url {
                        scheme: "http".into(),
                        address: Address {
                            hostname: Some(hostname.clone()),
                            ip: Some(AGENT_IP.into()),
                            port: 5051,
                        },
                        path: Some("/slave(1)".into()),
                    }),
                    framework_id,
                    agent_id: Some(agent_id.clone()),
                    unavailability,
                    resources: Vec::new(),
                });
            }
        }
        for (fw, list) in out {
            self.emit(&fw, &Event::inverse_offers(list));
        }
    }

    /// ACCEPT_INVERSE_OFFERS (`accept`) or DECLINE_INVERSE_OFFERS of framework `fw`.
    pub(super) fn answer_inverse_offers(
        &mut self,
        fw: &str,
        reply: InverseOffersReply,
        accept: bool,
        now: Instant,
    ) {
        for id in reply.inverse_offer_ids {
            let Some(rec) = self
                .inverse_offers
                .get(&id.value)
                .filter(|r| r.framework == fw)
                .cloned()
            else {
                // "Ignoring accept of inverse offer ... since it is no longer valid".
                continue;
            };
            self.inverse_offers.remove(&id.value);
            let Some(framework_id) = self.frameworks.get(fw).map(|f| f.id.clone()) else {
                continue;
            };
            let Some(m) = self.maintenance.get_mut(&rec.agent) else {
                continue;
            };
            if !m.outstanding.remove(fw) {
                continue;
            }
            m.statuses.insert(
                fw.to_owned(),
                InverseOfferStatus {
                    status: if accept {
                        InverseOfferStatusKind::Accept
                    } else {
                        InverseOfferStatusKind::Decline
                    },
                    framework_id,
                    timestamp: Nanos {
                        nanoseconds: now_ns(),
                    },
                },
            );
            let secs = reply
                .filters
                .and_then(|f| f.refuse_seconds)
                .unwrap_or(DEFAULT_REFUSE);
            let secs = if secs < 0.0 || !secs.is_finite() {
                DEFAULT_REFUSE
            } else {
                secs.min(MAX_REFUSE)
            };
            if secs > 0.0 {
                m.filters
                    .insert(fw.to_owned(), now + Duration::from_secs_f64(secs));
            }
        }
    }

    /// Removes (with `rescind`, tells) the inverse offers of framework `fw` (a re-subscription or a
    /// disconnection): the allocator may send new ones.
    pub(super) fn drop_inverse_offers_of(&mut self, fw: &str, rescind: bool) {
        let ids: Vec<String> = self
            .inverse_offers
            .iter()
            .filter(|(_, r)| r.framework == fw)
            .map(|(k, _)| k.clone())
            .collect();
        for id in ids {
            self.remove_inverse_offer(&id, rescind);
        }
    }

    /// Rescinds the inverse offers of agent `aid` (its unavailability changed, or it left).
    pub(super) fn rescind_agent_inverse_offers(&mut self, aid: &str) {
        let ids: Vec<String> = self
            .inverse_offers
            .iter()
            .filter(|(_, r)| r.agent == aid)
            .map(|(k, _)| k.clone())
            .collect();
        for id in ids {
            self.remove_inverse_offer(&id, true);
        }
    }

    fn remove_inverse_offer(&mut self, id: &str, rescind: bool) {
        let Some(rec) = self.inverse_offers.remove(id) else {
            return;
        };
        if let Some(m) = self.maintenance.get_mut(&rec.agent) {
            m.outstanding.remove(&rec.framework);
        }
        if rescind {
            self.emit(
                &rec.framework,
                &Event::rescind_inverse_offer(OfferID::new(id)),
            );
        }
    }

    /// `GET /maintenance/schedule`.
    #[must_use]
    pub fn maintenance_schedule(&self) -> MaintenanceSchedule {
        self.schedule.clone()
    }

    /// `GET /maintenance/status`: every scheduled machine is DRAINING, with the answers the allocator
    /// holds for its agents.
    #[must_use]
    pub fn maintenance_status(&self) -> ClusterStatus {
        let mut status = ClusterStatus::default();
        for w in &self.schedule.windows {
            for m in &w.machine_ids {
                let statuses = self
                    .agents
                    .iter()
                    .filter(|(_, a)| same_machine(m, &machine_of(&a.cfg.hostname)))
                    .filter_map(|(aid, _)| self.maintenance.get(aid))
                    .flat_map(|am| am.statuses.values().cloned())
                    .collect();
                status.draining_machines.push(DrainingMachine {
                    id: m.clone(),
                    statuses,
                });
            }
        }
        status
    }

    /// After a master failover the allocator starts empty: answers and filters are gone, inverse
    /// offers are sent anew (the schedule itself is in the registry and survives).
    pub(super) fn maintenance_after_failover(&mut self) {
        self.inverse_offers.clear();
        for m in self.maintenance.values_mut() {
            m.outstanding.clear();
            m.statuses.clear();
            m.filters.clear();
        }
    }
}
