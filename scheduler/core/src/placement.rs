//! Placement: one round per OFFERS event. Offers are judged once against the node-independent rules
//! (resources, ports, one node per agent, constraints, sidecar freshness, attach slots), sorted once by
//! score and bucketed by zone; each pending node (lowest id first) then takes its preferred agent (where
//! its volumes are attached or where it last ran) or the best remaining offer of its volumes' zone. The
//! round is O(offers log offers + nodes), never O(offers × nodes). Every unused offer is declined with a
//! refuse filter and its reason is kept per agent.

use crate::command::{MesosCommand, Reason, ReasonKind, WatchEvent};
use crate::config::{Constraint, Strategy};
use crate::core::Core;
use crate::domain::{FEATURE_NODE_IDENTITY, FEATURE_VOLUME_OWNER, Offer};
use crate::ids::{Hostname, Millis, NodeId};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// The candidates of each host, best first, without a list per host (most hosts make one offer): each
/// host's first and last candidate, and a link from each candidate to the next one of its host.
struct HostIndex<'a> {
    ends: HashMap<&'a Hostname, (usize, usize)>,
    next: Vec<Option<usize>>,
}

impl<'a> HostIndex<'a> {
    fn new(candidates: usize) -> Self {
        HostIndex {
            ends: HashMap::with_capacity(candidates),
            next: vec![None; candidates],
        }
    }

    /// Appends candidate `c` to `host`'s list; call in best-first order.
    fn push(&mut self, host: &'a Hostname, c: usize) {
        match self.ends.entry(host) {
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert((c, c));
            }
            std::collections::hash_map::Entry::Occupied(mut e) => {
                let (_, last) = e.get_mut();
                self.next[*last] = Some(c);
                *last = c;
            }
        }
    }

    /// `host`'s candidates, best first.
    fn iter(&self, host: &Hostname) -> impl Iterator<Item = usize> + '_ {
        std::iter::successors(self.ends.get(host).map(|(first, _)| *first), |c| {
            self.next[*c]
        })
    }
}

struct Candidate {
    offer: usize,
    http: u16,
    transport: u16,
    /// Index into the round's zone names.
    zone: Option<usize>,
    spare_attach: u32,
    spare_resources: f64,
    used: bool,
}

/// What a node needs from the agent it is placed on.
struct Requirement {
    zone: Option<String>,
    required_host: Option<Hostname>,
    preferred: Vec<Hostname>,
    /// Where the node's last prepare failed: tried last.
    avoid: Option<Hostname>,
}

impl Core {
    /// OFFERS: places pending nodes and declines the rest.
    pub fn handle_offers(&mut self, offers: Vec<Offer>, now: Millis) {
        // Prepares past their deadline can no longer mount, even if their timer has not fired yet.
        self.abandoned_prepares.retain(|_, a| a.deadline > now);
        for o in &offers {
            if self.agent_hosts.get(&o.agent_id) != Some(&o.hostname) {
                self.agent_hosts
                    .insert(o.agent_id.clone(), o.hostname.clone());
            }
            if !o.attributes.is_empty() {
                let attrs = o
                    .attributes
                    .iter()
                    .map(|(n, v)| (n.clone(), v.render()))
                    .collect();
                self.host_attributes.insert(o.hostname.clone(), attrs);
            }
        }
        let mut reasons: Vec<Option<Reason>> = vec![None; offers.len()];
        if self.subscribed_since.is_none() {
            reasons
                .iter_mut()
                .for_each(|r| *r = Some(Reason::NotSubscribed));
            self.decline_round(&offers, reasons, Vec::new(), now);
            return;
        }
        if let Some(from) = self.placement_from.filter(|f| *f > now) {
            reasons
                .iter_mut()
                .for_each(|r| *r = Some(Reason::StartupGrace { until_ms: from.0 }));
            self.decline_round(&offers, reasons, Vec::new(), now);
            return;
        }
        let pending: Vec<NodeId> = self
            .slots
            .iter()
            .filter(|(id, rt)| rt.not_before <= now && self.needs_task(**id))
            .map(|(id, _)| *id)
            .collect();
        if pending.is_empty() {
            let waiting = self
                .slots
                .iter()
                .filter(|(id, _)| self.needs_task(**id))
                .map(|(_, rt)| rt.not_before)
                .min();
            let reason = match waiting {
                Some(until) => Reason::Backoff { until_ms: until.0 },
                None => Reason::NothingPending,
            };
            reasons.iter_mut().for_each(|r| *r = Some(reason.clone()));
            self.decline_round(&offers, reasons, Vec::new(), now);
            self.flush_interest();
            return;
        }

        // Agents that already hold a node (running, launching, or being prepared) and UNIQUE values used.
        let mut busy: HashSet<Hostname> = HashSet::new();
        let mut unique_used: HashMap<String, HashSet<String>> = HashMap::new();
        let unique_attrs: Vec<String> = self
            .config
            .constraints
            .iter()
            .filter_map(|c| match c {
                Constraint::Unique(a) => Some(a.clone()),
                Constraint::Equals(..) => None,
            })
            .collect();
        for (id, rt) in &self.slots {
            let host = match (&rt.preparing, self.record(*id)) {
                (Some(p), _) => Some(&p.offer.hostname),
                (None, Some(rec)) => rec
                    .task
                    .as_ref()
                    .filter(|t| !t.is_terminal())
                    .map(|t| &t.host),
                _ => None,
            };
            let Some(host) = host else { continue };
            busy.insert(host.clone());
            let attrs = if rt.attributes.is_empty() {
                self.host_attributes
                    .get(host)
                    .map(Vec::as_slice)
                    .unwrap_or_default()
            } else {
                rt.attributes.as_slice()
            };
            for a in &unique_attrs {
                if let Some((_, v)) = attrs.iter().find(|(n, _)| n == a) {
                    unique_used.entry(a.clone()).or_default().insert(v.clone());
                }
            }
        }

        let needed_attach = u32::try_from(self.config.volumes.len()).unwrap_or(u32::MAX);
        // Offers are judged against the smallest group need among the pending nodes; each node then
        // takes only an offer that fits its own group (one group: the same need, as without groups).
        let mut need = Need::of(&self.resources(pending[0]));
        let mut group_needs: BTreeMap<u16, Need> = BTreeMap::new();
        for id in &pending {
            let n = *group_needs
                .entry(id.group())
                .or_insert_with(|| Need::of(&self.resources(*id)));
            need = need.min(n);
        }
        let masters_seeded =
            self.groups.values().all(|g| g.resources.master_eligible()) || self.master_launched();
        let mut cands: Vec<Candidate> = Vec::with_capacity(offers.len());
        let mut zones = ZoneNames::default();
        for (i, o) in offers.iter().enumerate() {
            let round = Round {
                busy: &busy,
                unique_used: &unique_used,
                needed_attach,
                need,
                now,
            };
            match self.judge_offer(i, o, &round, &mut zones) {
                Ok(c) => cands.push(c),
                Err(r) => reasons[i] = Some(r),
            }
        }
        // Best first: most spare attach slots, then most spare resources, then offer order.
        let mut order: Vec<usize> = (0..cands.len()).collect();
        order.sort_by(|a, b| {
            let (ca, cb) = (&cands[*a], &cands[*b]);
            cb.spare_attach
                .cmp(&ca.spare_attach)
                .then(cb.spare_resources.total_cmp(&ca.spare_resources))
                .then(ca.offer.cmp(&cb.offer))
        });
        let mut buckets: HashMap<Option<usize>, Vec<usize>> = HashMap::new();
        let mut by_host = HostIndex::new(cands.len());
        let mut by_unique: HashMap<(String, String), Vec<usize>> = HashMap::new();
        for &c in &order {
            let cand = &cands[c];
            buckets.entry(cand.zone).or_default().push(c);
            let offer = &offers[cand.offer];
            by_host.push(&offer.hostname, c);
            for a in &unique_attrs {
                if let Some(v) = offer.attribute(a) {
                    by_unique.entry((a.clone(), v)).or_default().push(c);
                }
            }
        }
        let mut cursors: HashMap<usize, usize> = HashMap::new();
        let mut global_cursor = 0usize;

        // A pinned port missing from offers is a configuration the operator must see on the pending
        // nodes themselves, not only in the decline log: it stands for "no suitable offer".
        let no_fit = reasons
            .iter()
            .flatten()
            .find(|r| matches!(r, Reason::PinnedPortNotOffered { .. }))
            .cloned()
            .unwrap_or(Reason::NoSuitableOffer);
        let mut unplaced: Vec<(NodeId, Reason)> = Vec::new();
        let mut assignments: Vec<(NodeId, usize)> = Vec::new();
        for id in pending {
            if !masters_seeded && !self.master_eligible_node(id) {
                unplaced.push((id, Reason::WaitingForMasters));
                continue;
            }
            let own = group_needs.get(&id.group()).copied().unwrap_or(need);
            let fits = |c: &Candidate| {
                own.fits(&offers[c.offer], self.config.strategy == Strategy::Normal)
            };
            let req = match self.requirement(id, now) {
                Ok(r) => r,
                Err(reason) => {
                    unplaced.push((id, reason));
                    continue;
                }
            };
            // `None`: any zone; `Some(None)`: a zone no candidate is in; `Some(Some(z))`: zone z.
            let want: Option<Option<usize>> = req.zone.as_deref().map(|z| zones.get(z));
            let zone_ok = |c: &Candidate| want.is_none_or(|w| w.is_some() && c.zone == w);
            let mut chosen = None;
            if let Some(h) = &req.required_host {
                chosen = by_host
                    .iter(h)
                    .find(|c| !cands[*c].used && zone_ok(&cands[*c]) && fits(&cands[*c]));
                if chosen.is_none() {
                    let volume = self
                        .record(id)
                        .and_then(|r| r.volumes.first().cloned())
                        .map(|v| Reason::VolumeAttachedElsewhere {
                            volume: v,
                            host: h.clone(),
                        });
                    unplaced.push((id, volume.unwrap_or(Reason::NoSuitableOffer)));
                    continue;
                }
            }
            if chosen.is_none() {
                chosen = req
                    .preferred
                    .iter()
                    .filter(|h| req.avoid.as_ref() != Some(*h))
                    .find_map(|h| {
                        by_host
                            .iter(h)
                            .find(|c| !cands[*c].used && zone_ok(&cands[*c]) && fits(&cands[*c]))
                    });
            }
            if chosen.is_none() {
                let mut no_cursor = 0usize;
                let (list, cursor) = match want {
                    Some(Some(z)) => (
                        buckets.get(&Some(z)).map(Vec::as_slice).unwrap_or_default(),
                        cursors.entry(z).or_insert(0),
                    ),
                    Some(None) => (&[][..], &mut no_cursor),
                    None => (order.as_slice(), &mut global_cursor),
                };
                while *cursor < list.len() && cands[list[*cursor]].used {
                    *cursor += 1;
                }
                // Skip (without consuming) the agent where the node's last prepare failed, if any
                // other offer will do; only a few offers come from one agent, so this stays cheap.
                chosen = list[*cursor..]
                    .iter()
                    .copied()
                    .filter(|c| !cands[*c].used && fits(&cands[*c]))
                    .find(|c| req.avoid.as_ref() != Some(&offers[cands[*c].offer].hostname))
                    .or_else(|| {
                        list[*cursor..]
                            .iter()
                            .copied()
                            .find(|c| !cands[*c].used && fits(&cands[*c]))
                    });
            }
            let Some(c) = chosen else {
                let reason = match (&req.zone, self.record(id).and_then(|r| r.volumes.first())) {
                    (Some(z), Some(v)) => Reason::VolumeZone {
                        volume: v.clone(),
                        volume_zone: z.clone(),
                        agent_zone: None,
                    },
                    _ => no_fit.clone(),
                };
                unplaced.push((id, reason));
                continue;
            };
            cands[c].used = true;
            let offer = &offers[cands[c].offer];
            for o in by_host.iter(&offer.hostname) {
                if !cands[o].used {
                    cands[o].used = true;
                    reasons[cands[o].offer] = Some(Reason::AgentBusy);
                }
            }
            for a in &unique_attrs {
                if let Some(v) = offer.attribute(a)
                    && let Some(same) = by_unique.get(&(a.clone(), v.clone()))
                {
                    for &o in same {
                        if !cands[o].used {
                            cands[o].used = true;
                            reasons[cands[o].offer] = Some(Reason::ConstraintUnique {
                                attribute: a.clone(),
                                value: Some(v.clone()),
                            });
                        }
                    }
                }
            }
            assignments.push((id, c));
        }
        for c in &cands {
            if !c.used {
                reasons[c.offer] = Some(Reason::Surplus);
            }
        }
        for (id, reason) in unplaced {
            self.set_reason(id, reason, now);
        }
        let accepted: Vec<usize> = assignments.iter().map(|(_, c)| cands[*c].offer).collect();
        // Declines first: held and accepted offers are not in the list.
        self.decline_round(&offers, reasons, accepted, now);
        for (id, c) in assignments {
            let cand = &cands[c];
            let offer = offers[cand.offer].clone();
            match self.config.strategy {
                Strategy::Normal => self.launch(id, &offer, cand.http, cand.transport, now),
                Strategy::External { .. } => {
                    self.start_prepare(
                        id,
                        offer,
                        cand.http,
                        cand.transport,
                        cand.zone.map(|z| zones.name(z).to_owned()),
                        now,
                    );
                }
            }
        }
        self.flush_interest();
    }

    fn decline_round(
        &mut self,
        offers: &[Offer],
        reasons: Vec<Option<Reason>>,
        taken: Vec<usize>,
        now: Millis,
    ) {
        let taken: BTreeSet<usize> = taken.into_iter().collect();
        let mut idle = Vec::new();
        let mut busy = Vec::new();
        let mut counts: BTreeMap<ReasonKind, usize> = BTreeMap::new();
        for (i, (o, r)) in offers.iter().zip(reasons).enumerate() {
            if taken.contains(&i) {
                continue;
            }
            let r = r.unwrap_or(Reason::Surplus);
            *counts.entry(r.kind()).or_default() += 1;
            if matches!(r, Reason::NothingPending) {
                idle.push(o.id.clone());
            } else {
                busy.push(o.id.clone());
            }
            // Agents offer every round: overwrite in place rather than clone the host name each time.
            match self.agent_reasons.get_mut(&o.hostname) {
                Some(slot) => *slot = (r, now),
                None => {
                    self.agent_reasons.insert(o.hostname.clone(), (r, now));
                }
            }
        }
        if !busy.is_empty() {
            self.mesos(MesosCommand::Decline {
                offer_ids: busy,
                refuse_seconds: self.config.decline_refuse_seconds,
            });
        }
        if !idle.is_empty() {
            self.mesos(MesosCommand::Decline {
                offer_ids: idle,
                refuse_seconds: self.config.idle_refuse_seconds,
            });
        }
        if !counts.is_empty() {
            let mut by_reason: Vec<(ReasonKind, usize)> = counts.into_iter().collect();
            // Watchers have always read the kinds in the order of their words.
            by_reason.sort_by_key(|(k, _)| k.as_str());
            self.watch(WatchEvent::OffersDeclined { by_reason });
        }
    }

    fn judge_offer(
        &self,
        i: usize,
        o: &Offer,
        round: &Round<'_>,
        zones: &mut ZoneNames,
    ) -> Result<Candidate, Reason> {
        let Round {
            busy,
            unique_used,
            needed_attach,
            need,
            now,
        } = *round;
        let cfg = &self.config;
        // Non-finite values from a peer count as nothing offered.
        let enough = |offered: f64, needed: f64| offered.is_finite() && offered >= needed;
        if !enough(o.cpus, need.cpus) {
            return Err(Reason::Cpus {
                offered: o.cpus,
                needed: need.cpus,
            });
        }
        if !enough(o.mem_mb, need.mem_mb) {
            return Err(Reason::Mem {
                offered: o.mem_mb,
                needed: need.mem_mb,
            });
        }
        if matches!(cfg.strategy, Strategy::Normal) && !enough(o.disk_mb, need.disk_mb) {
            return Err(Reason::Disk {
                offered: o.disk_mb,
                needed: need.disk_mb,
            });
        }
        let (http, transport) = o.node_ports(cfg.http_port, cfg.transport_port)?;
        if busy.contains(&o.hostname) {
            return Err(Reason::AgentBusy);
        }
        for c in &cfg.constraints {
            match c {
                Constraint::Equals(attribute, wanted) => {
                    let found = o.attribute(attribute);
                    if found.as_deref() != Some(wanted.as_str()) {
                        return Err(Reason::ConstraintEquals {
                            attribute: attribute.clone(),
                            wanted: wanted.clone(),
                            found,
                        });
                    }
                }
                Constraint::Unique(attribute) => {
                    let value = o.attribute(attribute);
                    let taken = value
                        .as_ref()
                        .is_none_or(|v| unique_used.get(attribute).is_some_and(|s| s.contains(v)));
                    if taken {
                        return Err(Reason::ConstraintUnique {
                            attribute: attribute.clone(),
                            value,
                        });
                    }
                }
            }
        }
        let spare_resources =
            (o.cpus - need.cpus) / need.cpus + (o.mem_mb - need.mem_mb) / need.mem_mb;
        let mut zone = o.zone.as_deref();
        let mut spare_attach = u32::MAX;
        if matches!(cfg.strategy, Strategy::External { .. }) {
            let Some(s) = self.sidecars.get(&o.hostname) else {
                return Err(Reason::SidecarMissing);
            };
            if !s.connected {
                return Err(Reason::SidecarDisconnected);
            }
            if !self.sidecar_fresh(s, now) {
                return Err(Reason::SidecarStale {
                    age_ms: s.last_report_at.map(|t| now.since(t)),
                });
            }
            if cfg.volume_owner.is_some() && !s.features.iter().any(|f| f == FEATURE_VOLUME_OWNER) {
                return Err(Reason::SidecarLacksFeature(FEATURE_VOLUME_OWNER.to_owned()));
            }
            if self.security().is_on() && !s.features.iter().any(|f| f == FEATURE_NODE_IDENTITY) {
                return Err(Reason::SidecarLacksFeature(
                    FEATURE_NODE_IDENTITY.to_owned(),
                ));
            }
            if !s.driver_healthy {
                return Err(Reason::DriverUnhealthy(
                    s.driver_error.clone().unwrap_or_else(|| "unhealthy".into()),
                ));
            }
            if let Some(max) = s.max_attachments {
                let free = max.saturating_sub(s.attachments_used);
                if free < needed_attach {
                    return Err(Reason::NoAttachSlots {
                        used: s.attachments_used,
                        max,
                        needed: needed_attach,
                    });
                }
                spare_attach = free - needed_attach;
            }
            if zone.is_none() {
                zone = s.zone.as_deref();
            }
        }
        Ok(Candidate {
            offer: i,
            http,
            transport,
            zone: zone.map(|z| zones.intern(z)),
            spare_attach,
            spare_resources,
            used: false,
        })
    }

    fn requirement(&self, id: NodeId, now: Millis) -> Result<Requirement, Reason> {
        let Some(rec) = self.record(id) else {
            return Err(Reason::NoSuitableOffer);
        };
        let mut preferred: Vec<Hostname> = Vec::new();
        if let Some(t) = &rec.task {
            preferred.push(t.host.clone());
        }
        let avoid = self.slots.get(&id).and_then(|rt| rt.avoid_host.clone());
        let Strategy::External { auto_create, .. } = &self.config.strategy else {
            return Ok(Requirement {
                zone: None,
                required_host: None,
                preferred,
                avoid,
            });
        };
        let mut zones: BTreeSet<String> = BTreeSet::new();
        // Hosts the node must run on: where a live sidecar holds a volume attached, or where a host-local
        // volume lives.
        let mut pinned: BTreeSet<(Hostname, usize)> = BTreeSet::new();
        // A sidecar mount not yet released (its sidecar is away) still holds the volumes there.
        if let Some(h) = &rec.mount_host {
            pinned.insert((h.clone(), 0));
        }
        for (vi, v) in rec.volumes.iter().enumerate() {
            let agg = self.volumes.get(v);
            let exists = agg.is_some_and(|a| a.exists > 0);
            if !exists && !auto_create {
                let reported = agg.is_some_and(|a| a.missing > 0);
                return Err(if reported {
                    Reason::VolumeMissing(v.clone())
                } else {
                    Reason::VolumeNotReported(v.clone())
                });
            }
            let Some(agg) = agg else { continue };
            if exists && let Some(z) = agg.zone.as_ref().filter(|z| !z.is_empty()) {
                zones.insert(z.clone());
            }

            // A host-local driver's volume cannot follow the node: it must run where the volume is.
            for h in &agg.local_hosts {
                pinned.insert((h.clone(), vi));
            }
            for h in &agg.attached_hosts {
                let live = self
                    .sidecars
                    .get(h)
                    .is_some_and(|s| self.sidecar_fresh(s, now));
                if live {
                    pinned.insert((h.clone(), vi));
                } else if !preferred.contains(h) {
                    preferred.insert(0, h.clone());
                }
            }
        }
        if zones.len() > 1 {
            return Err(Reason::VolumesSplitAcrossZones);
        }
        let hosts: BTreeSet<&Hostname> = pinned.iter().map(|(h, _)| h).collect();
        if hosts.len() > 1
            && let Some((h, vi)) = pinned.iter().next()
            && let Some(volume) = rec.volumes.get(*vi)
        {
            return Err(Reason::VolumeAttachedElsewhere {
                volume: volume.clone(),
                host: h.clone(),
            });
        }
        let required_host = hosts.into_iter().next().cloned();
        Ok(Requirement {
            zone: zones.into_iter().next(),
            required_host,
            preferred,
            avoid,
        })
    }
}

/// What every offer of a round is judged against.
struct Round<'a> {
    busy: &'a HashSet<Hostname>,
    unique_used: &'a HashMap<String, HashSet<String>>,
    needed_attach: u32,
    need: Need,
    now: Millis,
}

/// The resources one node of a group takes from an offer.
#[derive(Debug, Clone, Copy)]
struct Need {
    cpus: f64,
    mem_mb: f64,
    disk_mb: f64,
}

impl Need {
    fn of(r: &crate::config::GroupResources) -> Need {
        Need {
            cpus: r.cpus,
            mem_mb: r.mem_mb,
            disk_mb: r.disk_mb,
        }
    }

    fn min(self, o: Need) -> Need {
        Need {
            cpus: self.cpus.min(o.cpus),
            mem_mb: self.mem_mb.min(o.mem_mb),
            disk_mb: self.disk_mb.min(o.disk_mb),
        }
    }

    fn fits(&self, o: &Offer, disk: bool) -> bool {
        let enough = |offered: f64, needed: f64| offered.is_finite() && offered >= needed;
        enough(o.cpus, self.cpus)
            && enough(o.mem_mb, self.mem_mb)
            && (!disk || enough(o.disk_mb, self.disk_mb))
    }
}

/// The zones seen in one round, numbered so candidates carry an index instead of a string.
#[derive(Default)]
struct ZoneNames {
    ids: HashMap<String, usize>,
    names: Vec<String>,
}

impl ZoneNames {
    fn intern(&mut self, z: &str) -> usize {
        if let Some(id) = self.ids.get(z) {
            return *id;
        }
        self.names.push(z.to_owned());
        self.ids.insert(z.to_owned(), self.names.len() - 1);
        self.names.len() - 1
    }

    fn get(&self, z: &str) -> Option<usize> {
        self.ids.get(z).copied()
    }

    fn name(&self, id: usize) -> &str {
        self.names.get(id).map_or("", String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::HostIndex;
    use crate::ids::Hostname;

    #[test]
    fn the_host_index_lists_each_hosts_candidates_in_push_order() {
        let [a, b, c] = ["a", "b", "c"].map(|h| Hostname::new(h).expect("host"));
        let mut index = HostIndex::new(6);
        for (i, h) in [&a, &b, &a, &c, &a, &b].into_iter().enumerate() {
            index.push(h, i);
        }
        let list = |h: &Hostname| index.iter(h).collect::<Vec<_>>();
        assert_eq!(list(&a), [0, 2, 4]);
        assert_eq!(list(&b), [1, 5]);
        assert_eq!(list(&c), [3]);
        assert!(list(&Hostname::new("d").expect("host")).is_empty());
    }
}
