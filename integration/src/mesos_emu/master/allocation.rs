//! Allocation: every allocation interval (or at once after something freed resources) each subscribed,
//! unsuppressed role of each framework gets one offer per reachable agent with free resources, unless a
//! decline filter covers them; DECLINE and the unused part of an ACCEPT add filters; SUPPRESS and REVIVE;
//! offers going back to their agent (used, declined, rescinded, or their framework gone).

use std::collections::BTreeMap;
use std::time::Duration;

use tether_mesos::model::*;
use tokio::time::Instant;

use super::super::resources::Res;
use super::state::{Agent, Filter, Framework, OfferRec, State};

/// `Filters.refuse_seconds` when a DECLINE or ACCEPT gives none.
const DEFAULT_REFUSE: f64 = 5.0;
/// The longest filter (and, times 100, the longest failover timeout) the master honours.
pub(super) const MAX_REFUSE: f64 = 365.0 * 24.0 * 3600.0;

impl State {
    /// The allocator's part of a tick: expired filters go, and offers are made when due.
    pub(super) fn allocation_tick(&mut self, now: Instant) {
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
            for role in f.roles() {
                if self.frameworks[&fw].suppressed.contains(&role) {
                    continue;
                }
                let agent_ids: Vec<String> = self.agents.keys().cloned().collect();
                for aid in agent_ids {
                    if let Some(offer) = self.offer_agent(&fw, &role, &aid, now) {
                        out.entry(fw.clone()).or_default().push(offer);
                    }
                }
            }
        }
        for (fw, offers) in out {
            self.emit(&fw, &Event::offers(offers));
        }
        self.generate_inverse_offers(now);
    }

    /// Offers everything agent `aid` has free for `role` (unreserved, or reserved for it) to that role
    /// of framework `fw`, unless the agent is not reachable, has nothing free for it, or a filter covers
    /// what it has.
    fn offer_agent(&mut self, fw: &str, role: &str, aid: &str, now: Instant) -> Option<Offer> {
        let f = self.frameworks.get(fw)?;
        let a = self.agents.get(aid)?;
        let (res, rest) = a.free.split_for(role, f.reservation_refinement());
        if !a.reachable(now) || res.is_empty() || self.filtered(fw, role, aid, &res) {
            return None;
        }
        let offer_id = format!("{}-O{}", self.master_id, self.next_offer);
        self.next_offer += 1;
        let mut offer = offer(offer_id.clone(), f, a, role, &res);
        offer.unavailability = self.unavailability_of(aid);
        if let Some(a) = self.agents.get_mut(aid) {
            a.free = rest;
        }
        self.offers.insert(
            offer_id,
            OfferRec {
                framework: fw.to_string(),
                agent: offer.agent_id.clone(),
                role: role.to_string(),
                res,
            },
        );
        Some(offer)
    }

    /// Whether a filter of `fw`'s `role` on agent `aid` covers `free`.
    fn filtered(&self, fw: &str, role: &str, aid: &str, free: &Res) -> bool {
        self.filters.iter().any(|x| {
            x.framework == fw && x.role == role && x.agent == aid && x.refused.contains(free)
        })
    }

    /// Refuses `o`'s resources to its framework and role on its agent for `refuse_seconds` (5 s by
    /// default, at least one allocation interval; 0 adds no filter).
    pub(super) fn add_filter(
        &mut self,
        fw: &str,
        o: &OfferRec,
        filters: Option<Filters>,
        now: Instant,
    ) {
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

    pub(super) fn decline(
        &mut self,
        fw: &str,
        ids: &[OfferID],
        filters: Option<Filters>,
        now: Instant,
    ) {
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

    /// REVIVE: `roles` (all of the framework's when empty) are offered again and lose their filters. A
    /// role the framework does not have makes the call a no-op.
    pub(super) fn revive(&mut self, fw: &str, roles: Vec<String>) {
        if let Some(f) = self.frameworks.get_mut(fw) {
            let roles = if roles.is_empty() { f.roles() } else { roles };
            if roles.iter().any(|r| !f.roles().contains(r)) {
                return;
            }
            for r in &roles {
                f.suppressed.remove(r);
            }
            self.filters
                .retain(|x| !(x.framework == fw && roles.contains(&x.role)));
            self.allocate_now = true;
        }
    }

    /// SUPPRESS: no more offers for `roles` (all of the framework's when empty).
    pub(super) fn suppress(&mut self, fw: &str, roles: Vec<String>) {
        if let Some(f) = self.frameworks.get_mut(fw) {
            let roles = if roles.is_empty() { f.roles() } else { roles };
            f.suppressed.extend(roles);
        }
    }

    /// Returns all offers of `fw` to the agents; with `rescind`, tells the framework.
    pub(super) fn drop_offers_of(&mut self, fw: &str, rescind: bool) {
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

    /// Returns one offer's resources to its agent; with `rescind`, tells its framework.
    pub(super) fn remove_offer(&mut self, offer_id: &str, rescind: bool) -> Option<OfferRec> {
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
}

/// The offer of `res` on agent `a` to `f`'s `role` (allocation info only for a MULTI_ROLE framework).
fn offer(id: String, f: &Framework, a: &Agent, role: &str, res: &Res) -> Offer {
    let alloc_role = f.multi_role().then_some(role);
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
        .filter(|t| t.agent == a.id && !t.state.is_terminal())
        .map(|t| ExecutorID::new(t.info.task_id.value.clone()))
        .collect();
    Offer {
        id: OfferID::new(id),
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
        resources: res.to_resources(alloc_role, f.reservation_refinement()),
        attributes: a
            .cfg
            .attributes
            .iter()
            .map(|(k, v)| Attribute::text(k.clone(), v.clone()))
            .collect(),
        executor_ids,
        unavailability: None,
        allocation_info: alloc_role.map(|r| AllocationInfo {
            role: Some(r.to_string()),
        }),
    }
}
