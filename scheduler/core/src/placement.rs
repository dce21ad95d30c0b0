//! Placement: one round per OFFERS event. Offers are judged once against the node-independent rules
//! (resources, ports, one node per agent, constraints, sidecar freshness, attach slots), sorted once by
//! score and bucketed by zone; each pending node (lowest id first) then takes its preferred agent (where
//! its volumes are attached or where it last ran) or the best remaining offer of its volumes' zone. The
//! round is O(offers log offers + nodes), never O(offers × nodes). Every unused offer is declined with a
//! refuse filter and its reason is kept per agent. Hosts are numbered once across rounds
//! ([`OfferedHosts`]): a round hashes each offer's host once and keeps what it learns of the host by
//! that number.

use crate::command::{MesosCommand, Reason, ReasonKind, WatchEvent};
use crate::config::{Constraint, Strategy};
use crate::core::{Core, Sidecar};
use crate::domain::{AttributeValue, FEATURE_NODE_IDENTITY, FEATURE_VOLUME_OWNER, Offer};
use crate::ids::{AgentId, Hostname, Millis, NodeId};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Every host that has offered, numbered once: a number stays with its host until the host is forgotten
/// (then it is reused). A round finds each offer's host with one hash, and keeps what it learns of the
/// host (its attributes, its last decline) by that number, with no further hashing or name comparison.
///
/// The table holds only numbers; a number's host name is compared in its record's [`OfferPrint`], the
/// buffer that also holds the agent id and attributes of the host's last offer. Finding a steady host
/// and checking that its agent and attributes are unchanged reads that one buffer, where separate keys,
/// agent ids and attribute strings took a cache miss each at 10,000 hosts.
#[derive(Debug, Default)]
pub(crate) struct OfferedHosts {
    ids: hashbrown::HashTable<usize>,
    hasher: foldhash::fast::RandomState,
    hosts: Vec<OfferedHost>,
    free: Vec<usize>,
}

/// A host name, then (after an offer was noted) the agent id and attributes of the host's last offer,
/// each part prefixed by its length.
#[derive(Debug, Default)]
pub(crate) struct OfferPrint(Vec<u8>);

impl OfferPrint {
    fn push(&mut self, part: &[u8]) {
        let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
        self.0.extend_from_slice(&len.to_le_bytes());
        self.0.extend_from_slice(part);
    }

    /// The first part of `buf` and the rest, if `buf` holds one.
    fn split(buf: &[u8]) -> Option<(&[u8], &[u8])> {
        let (len, rest) = buf.split_first_chunk::<4>()?;
        let len = u32::from_le_bytes(*len) as usize;
        (rest.len() >= len).then(|| rest.split_at(len))
    }

    fn host(host: &Hostname) -> OfferPrint {
        let mut p = OfferPrint(Vec::new());
        p.push(host.as_str().as_bytes());
        p
    }

    fn host_is(&self, host: &str) -> bool {
        Self::split(&self.0).is_some_and(|(h, _)| h == host.as_bytes())
    }

    /// Keeps only the host name: no offer matches until one is noted again.
    fn forget_offer(&mut self) {
        let host = Self::split(&self.0).map_or(0, |(h, _)| 4 + h.len());
        self.0.truncate(host);
    }

    /// Calls `f` with each part an offer's print holds after its host name, until `f` returns false.
    fn offer_parts(o: &Offer, mut f: impl FnMut(&[u8]) -> bool) -> bool {
        if !f(o.agent_id.as_str().as_bytes()) {
            return false;
        }
        for (name, value) in &o.attributes {
            let bits;
            let (kind, v): (&[u8], &[u8]) = match value {
                AttributeValue::Text(t) => (b"t", t.as_bytes()),
                AttributeValue::Scalar(x) => {
                    bits = x.to_bits().to_le_bytes();
                    (b"s", &bits)
                }
            };
            if !(f(name.as_bytes()) && f(kind) && f(v)) {
                return false;
            }
        }
        true
    }

    /// Whether this print is of an offer of the same host under the same agent id with the same
    /// attributes as `o`.
    fn is(&self, o: &Offer) -> bool {
        let Some((host, mut rest)) = Self::split(&self.0) else {
            return false;
        };
        host == o.hostname.as_str().as_bytes()
            && Self::offer_parts(o, |part| match Self::split(rest) {
                Some((p, r)) if p == part => {
                    rest = r;
                    true
                }
                _ => false,
            })
            && rest.is_empty()
    }

    /// Makes this the print of `o` (of this host), reusing the buffer.
    fn set(&mut self, o: &Offer) {
        self.0.clear();
        self.push(o.hostname.as_str().as_bytes());
        Self::offer_parts(o, |part| {
            self.push(part);
            true
        });
    }
}

/// What the rounds keep of one host.
#[derive(Debug, Default)]
pub(crate) struct OfferedHost {
    /// The host (`None`: a free number).
    host: Option<Hostname>,
    /// Its name, and the agent id and attributes of its last noted offer unless [`OfferedHost::agent`]
    /// was cleared since: an offer it matches changes neither.
    print: OfferPrint,
    /// The agent id it last offered under, while [`Core::agent_hosts`] maps that id to this host: an
    /// offer under the same id needs no lookup there ([`Core::know_agent`] keeps this true).
    pub(crate) agent: Option<AgentId>,
    /// What its sidecar said that a round reads, copied from [`Core::sidecars`] whenever a sidecar event
    /// changes it ([`Core::sync_sidecar_facts`]): a round reads this record, already in cache from noting
    /// the offer, instead of finding the sidecar in the ordered map.
    pub(crate) sidecar: Option<SidecarFacts>,
    /// Its attributes as last offered, rendered (empty until an offer carries some).
    pub(crate) attributes: Vec<(String, String)>,
    /// Why its last unused offer was declined, and when.
    pub(crate) decline: Option<(Reason, Millis)>,
}

/// The facts of a host's sidecar that judging an offer reads (a copy of part of [`Sidecar`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SidecarFacts {
    connected: bool,
    last_report_at: Option<Millis>,
    volume_owner: bool,
    node_identity: bool,
    driver_healthy: bool,
    max_attachments: Option<u32>,
    attachments_used: u32,
    zone: Option<String>,
}

impl SidecarFacts {
    pub(crate) fn of(s: &Sidecar) -> SidecarFacts {
        let declared = |f: &str| s.features.iter().any(|x| x == f);
        SidecarFacts {
            connected: s.connected,
            last_report_at: s.last_report_at,
            volume_owner: declared(FEATURE_VOLUME_OWNER),
            node_identity: declared(FEATURE_NODE_IDENTITY),
            driver_healthy: s.driver_healthy,
            max_attachments: s.max_attachments,
            attachments_used: s.attachments_used,
            zone: s.zone.clone(),
        }
    }
}

impl OfferedHosts {
    fn hash(&self, host: &str) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one(host)
    }

    /// The number of `host`, given it if new (then with `sidecar`'s facts).
    fn intern(&mut self, host: &Hostname, sidecar: impl FnOnce() -> Option<SidecarFacts>) -> usize {
        let hash = self.hash(host.as_str());
        let hosts = &self.hosts;
        if let Some(id) = self
            .ids
            .find(hash, |id| hosts[*id].print.host_is(host.as_str()))
        {
            return *id;
        }
        let record = OfferedHost {
            host: Some(host.clone()),
            print: OfferPrint::host(host),
            sidecar: sidecar(),
            ..OfferedHost::default()
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.hosts[id] = record;
                id
            }
            None => {
                self.hosts.push(record);
                self.hosts.len() - 1
            }
        };
        let (hosts, hasher) = (&self.hosts, &self.hasher);
        self.ids.insert_unique(hash, id, |id| {
            use std::hash::BuildHasher;
            hasher.hash_one(hosts[*id].host.as_ref().map_or("", Hostname::as_str))
        });
        id
    }

    /// Makes room for `more` hosts at once (a first round meets every agent).
    fn reserve(&mut self, more: usize) {
        let (hosts, hasher) = (&self.hosts, &self.hasher);
        self.ids.reserve(more, |id| {
            use std::hash::BuildHasher;
            hasher.hash_one(hosts[*id].host.as_ref().map_or("", Hostname::as_str))
        });
        self.hosts.reserve(more);
    }

    fn id(&self, host: &Hostname) -> Option<usize> {
        let hash = self.hash(host.as_str());
        self.ids
            .find(hash, |id| self.hosts[*id].print.host_is(host.as_str()))
            .copied()
    }

    /// What the rounds keep of `host`, if it offered.
    pub(crate) fn get(&self, host: &Hostname) -> Option<&OfferedHost> {
        self.id(host).map(|id| &self.hosts[id])
    }

    /// The record of `host`, if it offered.
    pub(crate) fn get_mut(&mut self, host: &Hostname) -> Option<&mut OfferedHost> {
        self.id(host).map(|id| &mut self.hosts[id])
    }

    /// Every known host's record.
    pub(crate) fn records(&self) -> impl Iterator<Item = (&Hostname, &OfferedHost)> {
        self.hosts
            .iter()
            .filter_map(|h| h.host.as_ref().map(|host| (host, h)))
    }

    /// The hosts with a last decline.
    pub(crate) fn declined(&self) -> impl Iterator<Item = &Hostname> {
        self.hosts
            .iter()
            .filter(|h| h.decline.is_some())
            .filter_map(|h| h.host.as_ref())
    }

    /// How many hosts have a last decline, and how many have attributes.
    pub(crate) fn counts(&self) -> (usize, usize) {
        let known = || self.hosts.iter().filter(|h| h.host.is_some());
        (
            known().filter(|h| h.decline.is_some()).count(),
            known().filter(|h| !h.attributes.is_empty()).count(),
        )
    }

    /// `agent` no longer names `host` in [`Core::agent_hosts`].
    pub(crate) fn forget_agent(&mut self, host: &Hostname, agent: &AgentId) {
        if let Some(h) = self.get_mut(host)
            && h.agent.as_ref() == Some(agent)
        {
            h.agent = None;
            // The print vouches for the agent field: an offer under `agent` must be noted again.
            h.print.forget_offer();
        }
    }

    /// Forgets `host`; its number goes to the next new host.
    pub(crate) fn remove(&mut self, host: &Hostname) {
        let hash = self.hash(host.as_str());
        let hosts = &self.hosts;
        if let Ok(entry) = self
            .ids
            .find_entry(hash, |id| hosts[*id].print.host_is(host.as_str()))
        {
            let (id, _) = entry.remove();
            self.hosts[id] = OfferedHost::default();
            self.free.push(id);
        }
    }
}

/// The hosts offering in one round, by their [`OfferedHosts`] number: per host whether it already holds a
/// node, and its candidates best first without a list per host (most hosts make one offer): the first and
/// last candidate, and a link from each candidate to the next one of its host.
struct HostIndex<'a> {
    table: &'a OfferedHosts,
    /// The round's number of each table number (`usize::MAX`: not offering in this round).
    round_of: Vec<usize>,
    hosts: Vec<HostEntry>,
    next: Vec<Option<usize>>,
}

#[derive(Default)]
struct HostEntry {
    busy: bool,
    ends: Option<(usize, usize)>,
}

impl<'a> HostIndex<'a> {
    fn new(table: &'a OfferedHosts, offers: usize) -> Self {
        HostIndex {
            table,
            round_of: vec![usize::MAX; table.hosts.len()],
            hosts: Vec::with_capacity(offers),
            next: vec![None; offers],
        }
    }

    /// The round's number for the host with table number `t`, added if new.
    fn add(&mut self, t: usize) -> usize {
        match self.round_of[t] {
            usize::MAX => {
                self.round_of[t] = self.hosts.len();
                self.hosts.push(HostEntry::default());
                self.hosts.len() - 1
            }
            id => id,
        }
    }

    fn id(&self, host: &Hostname) -> Option<usize> {
        self.table
            .id(host)
            .and_then(|t| self.round_of.get(t).copied())
            .filter(|id| *id != usize::MAX)
    }

    /// Marks `host` as holding a node already, if it offers in this round.
    fn mark_busy(&mut self, host: &Hostname) {
        if let Some(id) = self.id(host) {
            self.hosts[id].busy = true;
        }
    }

    fn busy(&self, id: usize) -> bool {
        self.hosts[id].busy
    }

    /// Appends candidate `c` (below the number of offers) to host `id`'s list; call in best-first order.
    fn push(&mut self, id: usize, c: usize) {
        let entry = &mut self.hosts[id];
        match &mut entry.ends {
            None => entry.ends = Some((c, c)),
            Some((_, last)) => {
                self.next[*last] = Some(c);
                *last = c;
            }
        }
    }

    /// Host `id`'s candidates, best first.
    fn iter(&self, id: Option<usize>) -> impl Iterator<Item = usize> + '_ {
        let first = id
            .and_then(|id| self.hosts[id].ends)
            .map(|(first, _)| first);
        std::iter::successors(first, |c| self.next[*c])
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
    /// The only agent the node may go to, and why it stays pending when that agent offers nothing that
    /// fits.
    required_host: Option<(Hostname, Reason)>,
    preferred: Vec<Hostname>,
    /// Where the node's last prepare failed: tried last.
    avoid: Option<Hostname>,
}

impl Core {
    /// OFFERS: places pending nodes and declines the rest.
    pub fn handle_offers(&mut self, mut offers: Vec<Offer>, now: Millis) {
        self.handle_offers_in(&mut offers, now);
    }

    /// [`Core::handle_offers`] on the caller's list, which it leaves empty with its capacity: a shell that
    /// converts every OFFERS event into the same list allocates it once. At 10,000 offers the list is
    /// 2.6 MB, and giving it back to the allocator (which returns it to the kernel page by page) took
    /// about a tenth of a round.
    pub fn handle_offers_in(&mut self, offers: &mut Vec<Offer>, now: Millis) {
        self.offers_round(offers, now);
        offers.clear();
    }

    fn offers_round(&mut self, offers: &mut Vec<Offer>, now: Millis) {
        // Prepares past their deadline can no longer mount, even if their timer has not fired yet.
        self.abandoned_prepares.retain(|_, a| a.deadline > now);
        // The first round of a large cluster meets every agent at once: grow the per-agent maps once, not
        // by doubling (later rounds find their agents there and reserve nothing).
        let host_of = self.note_offers(offers);
        self.note_offers_maintenance(offers, now);
        let mut reasons: Vec<Option<Reason>> = vec![None; offers.len()];
        if self.subscribed_since.is_none() {
            reasons
                .iter_mut()
                .for_each(|r| *r = Some(Reason::NotSubscribed));
            self.decline_round(offers, &host_of, reasons, &[], now);
            return;
        }
        if let Some(from) = self.placement_from.filter(|f| *f > now) {
            reasons
                .iter_mut()
                .for_each(|r| *r = Some(Reason::StartupGrace { until_ms: from.0 }));
            self.decline_round(offers, &host_of, reasons, &[], now);
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
            self.decline_round(offers, &host_of, reasons, &[], now);
            self.flush_interest();
            return;
        }

        let (assignments, unplaced, cands, zones) =
            self.place(offers, &host_of, &pending, &mut reasons, now);
        for (id, reason) in unplaced {
            self.set_reason(id, reason, now);
        }
        // Each placed node queues a few commands (its write, its Prepare or ACCEPT, a watch event): grow the
        // queue once, not by doubling a deque of large commands.
        self.commands.reserve(3 * assignments.len() + 3);
        let mut accepted: Vec<usize> = assignments.iter().map(|(_, c)| cands[*c].offer).collect();
        accepted.sort_unstable();
        accepted.dedup();
        // Declines first: held and accepted offers are not in the list.
        self.decline_round(offers, &host_of, reasons, &accepted, now);
        // The accepted offers leave the list last first, so each removal moves a declined offer (or
        // none) into the gap, never one still to be taken; `kept` ends in offer order.
        let mut kept: Vec<Option<Offer>> = accepted
            .iter()
            .rev()
            .map(|i| (*i < offers.len()).then(|| offers.swap_remove(*i)))
            .collect();
        kept.reverse();
        for (id, c) in assignments {
            let cand = &cands[c];
            // `kept` holds the accepted offers in offer order, each taken once.
            let Ok(k) = accepted.binary_search(&cand.offer) else {
                continue;
            };
            let Some(offer) = kept[k].take() else {
                continue;
            };
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

    /// Copies what a round reads of `host`'s sidecar into its offered record (if it offered): call after
    /// any change to the sidecar's connection, features, zone, attach slots, health or last report.
    pub(crate) fn sync_sidecar_facts(&mut self, host: &Hostname) {
        let facts = self.sidecars.get(host).map(SidecarFacts::of);
        if let Some(h) = self.offered.get_mut(host) {
            h.sidecar = facts;
        }
    }

    /// Records that Mesos names `host`'s agent `agent`.
    pub(crate) fn know_agent(&mut self, agent: &AgentId, host: &Hostname) {
        if self.agent_hosts.get(agent) == Some(host) {
            return;
        }
        if let Some(old) = self.agent_hosts.insert(agent.clone(), host.clone()) {
            self.offered.forget_agent(&old, agent);
        }
    }

    /// Records what the offers say of their agents (host, attributes) and returns each offer's host
    /// number in [`OfferedHosts`].
    pub(crate) fn note_offers(&mut self, offers: &[Offer]) -> Vec<usize> {
        // The first round of a large cluster meets every agent at once: grow the per-agent maps once, not
        // by doubling (later rounds find their agents there and reserve nothing).
        let unseen = offers.len().saturating_sub(self.agent_hosts.len());
        self.agent_hosts.reserve(unseen);
        self.offered
            .reserve(offers.len().saturating_sub(self.offered.ids.len()));
        let mut host_of = Vec::with_capacity(offers.len());
        for o in offers {
            let sidecars = &self.sidecars;
            let id = self.offered.intern(&o.hostname, || {
                sidecars.get(&o.hostname).map(SidecarFacts::of)
            });
            // Agents offer every round under the same id and with the same attributes: one comparison
            // with the print of the host's last offer says nothing changed.
            if self.offered.hosts[id].print.is(o) {
                host_of.push(id);
                continue;
            }
            if self.offered.hosts[id].agent.as_ref() != Some(&o.agent_id) {
                self.know_agent(&o.agent_id, &o.hostname);
                self.offered.hosts[id].agent = Some(o.agent_id.clone());
            }
            let known = &mut self.offered.hosts[id].attributes;
            if !o.attributes.is_empty() && !same_attributes(known, &o.attributes) {
                *known = o
                    .attributes
                    .iter()
                    .map(|(n, v)| (n.clone(), v.render()))
                    .collect();
            }
            self.offered.hosts[id].print.set(o);
            host_of.push(id);
        }
        host_of
    }

    /// The decisions of one round: which candidate each placed node takes, why each unplaced node waits,
    /// and (in `reasons`) why each unused offer is declined.
    #[allow(clippy::type_complexity)]
    fn place(
        &self,
        offers: &[Offer],
        offered_as: &[usize],
        pending: &[NodeId],
        reasons: &mut [Option<Reason>],
        now: Millis,
    ) -> (
        Vec<(NodeId, usize)>,
        Vec<(NodeId, Reason)>,
        Vec<Candidate>,
        ZoneNames,
    ) {
        // Candidates and busy marks refer to the round's hosts by number (`offered_as`: hashed once, in
        // `note_offers`).
        let mut by_host = HostIndex::new(&self.offered, offers.len());
        let host_of: Vec<usize> = offered_as.iter().map(|t| by_host.add(*t)).collect();

        // Agents that already hold a node (running, launching, or being prepared) and UNIQUE values used.
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
            by_host.mark_busy(host);
            if unique_attrs.is_empty() {
                continue;
            }
            let attrs = if rt.attributes.is_empty() {
                self.offered
                    .get(host)
                    .map(|h| h.attributes.as_slice())
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
        let mut need: Option<Need> = None;
        let mut group_needs: BTreeMap<u16, Need> = BTreeMap::new();
        for id in pending {
            let n = *group_needs
                .entry(id.group())
                .or_insert_with(|| Need::of(&self.resources(*id)));
            need = Some(need.map_or(n, |m| m.min(n)));
        }
        // Nothing pending: offers are judged as a node of the default configuration would judge them.
        let need = need.unwrap_or_else(|| Need::of(&self.config.resources_of(None)));
        let masters_seeded =
            self.groups.values().all(|g| g.resources.master_eligible()) || self.master_launched();
        let mut cands: Vec<Candidate> = Vec::with_capacity(offers.len());
        let mut zones = ZoneNames::default();
        let round = Round {
            unique_used: &unique_used,
            needed_attach,
            need,
            now,
        };
        // The first offer (in offer order) refused for a missing pinned port, noted as offers are judged
        // rather than found by a second pass over every offer's reason.
        let mut pinned_missing: Option<Reason> = None;
        for (i, o) in offers.iter().enumerate() {
            let host = OfferHost {
                busy: by_host.busy(host_of[i]),
                sidecar: self.offered.hosts[offered_as[i]].sidecar.as_ref(),
            };
            match self.judge_offer(i, o, host, &round, &mut zones) {
                Ok(c) => cands.push(c),
                Err(r) => {
                    if pinned_missing.is_none() && matches!(r, Reason::PinnedPortNotOffered { .. })
                    {
                        pinned_missing = Some(r.clone());
                    }
                    reasons[i] = Some(r);
                }
            }
        }
        // Best first: most spare attach slots, then most spare resources, then offer order. The offer
        // index makes every key distinct, so an unstable sort orders exactly as a stable one would.
        let mut keyed: Vec<(std::cmp::Reverse<u32>, std::cmp::Reverse<i64>, usize)> = cands
            .iter()
            .enumerate()
            .map(|(c, cand)| {
                (
                    std::cmp::Reverse(cand.spare_attach),
                    std::cmp::Reverse(total_order_key(cand.spare_resources)),
                    c,
                )
            })
            .collect();
        keyed.sort_unstable();
        let order: Vec<usize> = keyed.into_iter().map(|(_, _, c)| c).collect();
        let mut buckets: Vec<Vec<usize>> = vec![Vec::new(); zones.names.len()];
        let mut by_unique: HashMap<(String, String), Vec<usize>> = HashMap::new();
        for &c in &order {
            let cand = &cands[c];
            if let Some(z) = cand.zone {
                buckets[z].push(c);
            }
            by_host.push(host_of[cand.offer], c);
            let offer = &offers[cand.offer];
            for a in &unique_attrs {
                if let Some(v) = offer.attribute(a) {
                    by_unique.entry((a.clone(), v)).or_default().push(c);
                }
            }
        }
        let mut cursors: Vec<usize> = vec![0; zones.names.len()];
        let mut global_cursor = 0usize;

        // A pinned port missing from offers is a configuration the operator must see on the pending
        // nodes themselves, not only in the decline log: it stands for "no suitable offer".
        let no_fit = pinned_missing.unwrap_or(Reason::NoSuitableOffer);
        let mut unplaced: Vec<(NodeId, Reason)> = Vec::new();
        let mut assignments: Vec<(NodeId, usize)> = Vec::new();
        for &id in pending {
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
            if let Some((h, unmet)) = &req.required_host {
                chosen = by_host
                    .iter(by_host.id(h))
                    .find(|c| !cands[*c].used && zone_ok(&cands[*c]) && fits(&cands[*c]));
                if chosen.is_none() {
                    unplaced.push((id, unmet.clone()));
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
                            .iter(by_host.id(h))
                            .find(|c| !cands[*c].used && zone_ok(&cands[*c]) && fits(&cands[*c]))
                    });
            }
            if chosen.is_none() {
                let mut no_cursor = 0usize;
                let (list, cursor) = match want {
                    Some(Some(z)) => (buckets[z].as_slice(), &mut cursors[z]),
                    Some(None) => (&[][..], &mut no_cursor),
                    None => (order.as_slice(), &mut global_cursor),
                };
                while *cursor < list.len() && cands[list[*cursor]].used {
                    *cursor += 1;
                }
                // Skip (without consuming) the agent where the node's last prepare failed, if any
                // other offer will do; only a few offers come from one agent, so this stays cheap.
                // With one group every candidate fits and the cursor's is the first unused one.
                let free = |c: &usize| !cands[*c].used && fits(&cands[*c]);
                chosen = match &req.avoid {
                    None => list[*cursor..].iter().copied().find(free),
                    Some(avoid) => list[*cursor..]
                        .iter()
                        .copied()
                        .filter(free)
                        .find(|c| avoid != &offers[cands[*c].offer].hostname)
                        .or_else(|| list[*cursor..].iter().copied().find(free)),
                };
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
            for o in by_host.iter(Some(host_of[cands[c].offer])) {
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
        (assignments, unplaced, cands, zones)
    }

    /// Declines every offer not in `taken` (offer indices, ascending). The declined offers' ids are taken
    /// out of them in place into the DECLINEs (the offers are not moved), and their reasons go to their
    /// hosts' records by number (`host_of`, from `note_offers`): nothing is cloned or hashed per offer.
    fn decline_round(
        &mut self,
        offers: &mut [Offer],
        host_of: &[usize],
        reasons: Vec<Option<Reason>>,
        taken: &[usize],
        now: Millis,
    ) {
        let mut next_taken = taken.iter().copied().peekable();
        let mut idle = Vec::new();
        let mut busy = Vec::with_capacity(offers.len().saturating_sub(taken.len()));
        // A round has a handful of kinds, nearly all offers one of them: a short list, the last kind first.
        let mut counts: Vec<(ReasonKind, usize)> = Vec::new();
        for (i, (o, r)) in offers.iter_mut().zip(reasons).enumerate() {
            if next_taken.next_if_eq(&i).is_some() {
                continue;
            }
            let r = r.unwrap_or(Reason::Surplus);
            let kind = r.kind();
            match counts.iter_mut().rev().find(|(k, _)| *k == kind) {
                Some((_, n)) => *n += 1,
                None => counts.push((kind, 1)),
            }
            let id = o.id.take();
            if matches!(r, Reason::NothingPending) {
                idle.push(id);
            } else {
                busy.push(id);
            }
            self.offered.hosts[host_of[i]].decline = Some((r, now));
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
            let mut by_reason = counts;
            // Watchers have always read the kinds in the order of their words.
            by_reason.sort_by_key(|(k, _)| k.as_str());
            self.watch(WatchEvent::OffersDeclined { by_reason });
        }
    }

    fn judge_offer(
        &self,
        i: usize,
        o: &Offer,
        host: OfferHost<'_>,
        round: &Round<'_>,
        zones: &mut ZoneNames,
    ) -> Result<Candidate, Reason> {
        let Round {
            unique_used,
            needed_attach,
            need,
            now,
        } = *round;
        let cfg = &self.config;
        if o.unavailability.is_some() {
            // Its machine is scheduled for maintenance: a node placed there would only be moved again.
            return Err(Reason::AgentUnderMaintenance);
        }
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
        if host.busy {
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
            let Some(s) = host.sidecar else {
                return Err(Reason::SidecarMissing);
            };
            if !s.connected {
                return Err(Reason::SidecarDisconnected);
            }
            if !cfg.report_fresh(s.last_report_at, now) {
                return Err(Reason::SidecarStale {
                    age_ms: s.last_report_at.map(|t| now.since(t)),
                });
            }
            if cfg.volume_owner.is_some() && !s.volume_owner {
                return Err(Reason::SidecarLacksFeature(FEATURE_VOLUME_OWNER.to_owned()));
            }
            if self.security().is_on() && !s.node_identity {
                return Err(Reason::SidecarLacksFeature(
                    FEATURE_NODE_IDENTITY.to_owned(),
                ));
            }
            if !s.driver_healthy {
                // Rare: the error text is read from the sidecar itself, not kept in the facts.
                let error = self
                    .sidecars
                    .get(&o.hostname)
                    .and_then(|s| s.driver_error.clone());
                return Err(Reason::DriverUnhealthy(
                    error.unwrap_or_else(|| "unhealthy".into()),
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
        // A node the rollout restarts waits a while for the agent it ran on (its volumes, its page
        // cache, the placement the operator had), then takes any.
        let rollout_host = self.rollout_prefers(id, now).map(|h| {
            let unmet = Reason::WaitingForPreviousAgent { host: h.clone() };
            (h, unmet)
        });
        let Strategy::External { auto_create, .. } = &self.config.strategy else {
            return Ok(Requirement {
                zone: None,
                required_host: rollout_host,
                preferred,
                avoid,
            });
        };
        // At most one zone and one host are allowed, so no sets: the first zone seen and whether another
        // differs; the (host, volume index) pins, borrowed, looked at only if they name two hosts.
        let mut zone: Option<&String> = None;
        let mut split = false;
        let mut pinned: Vec<(&Hostname, usize)> = Vec::new();
        // A sidecar mount not yet released (its sidecar is away) still holds the volumes there.
        if let Some(h) = &rec.mount_host {
            pinned.push((h, 0));
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
                match zone {
                    None => zone = Some(z),
                    Some(first) if first != z => split = true,
                    Some(_) => {}
                }
            }

            // A host-local driver's volume cannot follow the node: it must run where the volume is.
            for h in &agg.local_hosts {
                pinned.push((h, vi));
            }
            for h in &agg.attached_hosts {
                let live = self
                    .sidecars
                    .get(h)
                    .is_some_and(|s| self.sidecar_fresh(s, now));
                if live {
                    pinned.push((h, vi));
                } else if !preferred.contains(h) {
                    preferred.insert(0, h.clone());
                }
            }
        }
        if split {
            return Err(Reason::VolumesSplitAcrossZones);
        }
        let required_host = pinned.first().map(|(h, _)| *h);
        if pinned.iter().any(|(h, _)| Some(*h) != required_host)
            && let Some((h, vi)) = pinned.iter().min()
            && let Some(volume) = rec.volumes.get(*vi)
        {
            return Err(Reason::VolumeAttachedElsewhere {
                volume: volume.clone(),
                host: (*h).clone(),
            });
        }
        let required_host = required_host
            .map(|h| {
                let unmet = rec.volumes.first().map_or(Reason::NoSuitableOffer, |v| {
                    Reason::VolumeAttachedElsewhere {
                        volume: v.clone(),
                        host: h.clone(),
                    }
                });
                (h.clone(), unmet)
            })
            .or(rollout_host);
        Ok(Requirement {
            zone: zone.cloned(),
            required_host,
            preferred,
            avoid,
        })
    }
}

/// What the round knows about an offer's host.
#[derive(Clone, Copy)]
struct OfferHost<'a> {
    /// It holds a node already.
    busy: bool,
    sidecar: Option<&'a SidecarFacts>,
}

/// What every offer of a round is judged against.
struct Round<'a> {
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

/// Whether the rendered attributes `known` are what `offered` renders to (without rendering it).
fn same_attributes(known: &[(String, String)], offered: &[(String, AttributeValue)]) -> bool {
    known.len() == offered.len()
        && known.iter().zip(offered).all(|((kn, kv), (on, ov))| {
            kn == on
                && match ov {
                    AttributeValue::Text(t) => kv == t,
                    AttributeValue::Scalar(_) => *kv == ov.render(),
                }
        })
}

/// An integer key ordered as `f64::total_cmp` orders `x` (the IEEE 754 total order).
fn total_order_key(x: f64) -> i64 {
    let bits = x.to_bits() as i64;
    bits ^ ((((bits >> 63) as u64) >> 1) as i64)
}

/// Up to this many zones a round finds an offer's zone by comparing names, not by hashing.
const FEW_ZONES: usize = 8;

/// The zones seen in one round, numbered so candidates carry an index instead of a string.
#[derive(Default)]
struct ZoneNames {
    ids: foldhash::HashMap<String, usize>,
    names: Vec<String>,
}

impl ZoneNames {
    fn intern(&mut self, z: &str) -> usize {
        // A cluster has a handful of zones: comparing with each is cheaper than hashing every offer's.
        if self.names.len() <= FEW_ZONES {
            if let Some(id) = self.names.iter().position(|n| n == z) {
                return id;
            }
        } else if let Some(id) = self.ids.get(z) {
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
    use super::{
        Candidate, HostIndex, Need, OfferHost, OfferPrint, OfferedHosts, Round, SidecarFacts,
        ZoneNames, total_order_key,
    };
    use crate::command::Reason;
    use crate::config::Constraint;
    use crate::core::Core;
    use crate::domain::{AttributeValue, Offer};
    use crate::ids::{Hostname, Millis, NodeId};
    use crate::testing::*;
    use proptest::prelude::*;
    use std::collections::{HashMap, HashSet};

    /// The round as first written, with no index: every lookup is a scan of the sorted candidates. It
    /// returns (node, offer index) per placed node, and the waiting nodes with their reasons.
    #[allow(clippy::type_complexity)]
    fn reference(
        core: &Core,
        offers: &[Offer],
        pending: &[NodeId],
        reasons: &mut [Option<Reason>],
        now: Millis,
    ) -> (Vec<(NodeId, usize)>, Vec<(NodeId, Reason)>) {
        let unique_attrs: Vec<String> = core
            .config
            .constraints
            .iter()
            .filter_map(|c| match c {
                Constraint::Unique(a) => Some(a.clone()),
                Constraint::Equals(..) => None,
            })
            .collect();
        let mut busy: HashSet<Hostname> = HashSet::new();
        let mut unique_used: HashMap<String, HashSet<String>> = HashMap::new();
        for (id, rt) in &core.slots {
            let host = match (&rt.preparing, core.record(*id)) {
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
                core.offered
                    .get(host)
                    .map(|h| h.attributes.clone())
                    .unwrap_or_default()
            } else {
                rt.attributes.clone()
            };
            for a in &unique_attrs {
                if let Some((_, v)) = attrs.iter().find(|(n, _)| n == a) {
                    unique_used.entry(a.clone()).or_default().insert(v.clone());
                }
            }
        }
        // One group (what the property generates): every pending node needs the same.
        let need = pending
            .iter()
            .map(|id| Need::of(&core.resources(*id)))
            .reduce(Need::min)
            .unwrap_or_else(|| Need::of(&core.config.resources_of(None)));
        let round = Round {
            unique_used: &unique_used,
            needed_attach: u32::try_from(core.config.volumes.len()).unwrap_or(u32::MAX),
            need,
            now,
        };
        let mut zones = ZoneNames::default();
        let mut cands: Vec<Candidate> = Vec::new();
        for (i, o) in offers.iter().enumerate() {
            // The sidecar's facts as the sidecar holds them now, not as the round's copy says.
            let facts = core.sidecars.get(&o.hostname).map(SidecarFacts::of);
            let host = OfferHost {
                busy: busy.contains(&o.hostname),
                sidecar: facts.as_ref(),
            };
            match core.judge_offer(i, o, host, &round, &mut zones) {
                Ok(c) => cands.push(c),
                Err(r) => reasons[i] = Some(r),
            }
        }
        let mut order: Vec<usize> = (0..cands.len()).collect();
        order.sort_by(|a, b| {
            let (ca, cb) = (&cands[*a], &cands[*b]);
            cb.spare_attach
                .cmp(&ca.spare_attach)
                .then(cb.spare_resources.total_cmp(&ca.spare_resources))
                .then(ca.offer.cmp(&cb.offer))
        });
        let no_fit = reasons
            .iter()
            .flatten()
            .find(|r| matches!(r, Reason::PinnedPortNotOffered { .. }))
            .cloned()
            .unwrap_or(Reason::NoSuitableOffer);
        let cand_hosts: Vec<&Hostname> = cands.iter().map(|c| &offers[c.offer].hostname).collect();
        let host_of = |c: usize| cand_hosts[c];
        let mut placed = Vec::new();
        let mut unplaced = Vec::new();
        for &id in pending {
            let req = match core.requirement(id, now) {
                Ok(r) => r,
                Err(reason) => {
                    unplaced.push((id, reason));
                    continue;
                }
            };
            let want = req.zone.as_deref().map(|z| zones.get(z));
            let fits = |c: usize, cands: &[Candidate]| {
                !cands[c].used && want.is_none_or(|w| w.is_some() && cands[c].zone == w)
            };
            let on = |h: &Hostname, cands: &[Candidate]| {
                order
                    .iter()
                    .copied()
                    .find(|c| host_of(*c) == h && fits(*c, cands))
            };
            let mut chosen = None;
            if let Some((h, unmet)) = &req.required_host {
                chosen = on(h, &cands);
                if chosen.is_none() {
                    unplaced.push((id, unmet.clone()));
                    continue;
                }
            }
            if chosen.is_none() {
                chosen = req
                    .preferred
                    .iter()
                    .filter(|h| req.avoid.as_ref() != Some(*h))
                    .find_map(|h| on(h, &cands));
            }
            if chosen.is_none() {
                let eligible: Vec<usize> = order
                    .iter()
                    .copied()
                    .filter(|c| !cands[*c].used)
                    .filter(|c| match want {
                        None => true,
                        Some(None) => false,
                        Some(w) => cands[*c].zone == w,
                    })
                    .collect();
                chosen = eligible
                    .iter()
                    .copied()
                    .find(|c| req.avoid.as_ref() != Some(host_of(*c)))
                    .or_else(|| eligible.first().copied());
            }
            let Some(c) = chosen else {
                let reason = match (&req.zone, core.record(id).and_then(|r| r.volumes.first())) {
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
            let host = host_of(c).clone();
            for &o in &order {
                if !cands[o].used && *host_of(o) == host {
                    cands[o].used = true;
                    reasons[cands[o].offer] = Some(Reason::AgentBusy);
                }
            }
            let offer = &offers[cands[c].offer];
            for a in &unique_attrs {
                if let Some(v) = offer.attribute(a) {
                    for &o in &order {
                        if !cands[o].used
                            && offers[cands[o].offer].attribute(a).as_ref() == Some(&v)
                        {
                            cands[o].used = true;
                            reasons[cands[o].offer] = Some(Reason::ConstraintUnique {
                                attribute: a.clone(),
                                value: Some(v.clone()),
                            });
                        }
                    }
                }
            }
            placed.push((id, cands[c].offer));
        }
        for c in &cands {
            if !c.used {
                reasons[c.offer] = Some(Reason::Surplus);
            }
        }
        (placed, unplaced)
    }

    /// The nodes a round at `now` places, as `handle_offers` picks them.
    fn pending(core: &Core, now: Millis) -> Vec<NodeId> {
        core.slots
            .iter()
            .filter(|(id, rt)| rt.not_before <= now && core.needs_task(**id))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Asserts that the indexed round decides exactly as the reference on the core's current state.
    /// The offers are noted first, as `handle_offers` notes them before placing.
    fn same_as_reference(
        core: &mut Core,
        offers: &[Offer],
        now: Millis,
    ) -> Result<(), TestCaseError> {
        let host_of = core.note_offers(offers);
        let core = &*core;
        let pending = pending(core, now);
        let mut ours = vec![None; offers.len()];
        let (assignments, unplaced, cands, _) =
            core.place(offers, &host_of, &pending, &mut ours, now);
        let placed: Vec<(NodeId, usize)> = assignments
            .iter()
            .map(|(id, c)| (*id, cands[*c].offer))
            .collect();
        let mut theirs = vec![None; offers.len()];
        let (ref_placed, ref_unplaced) = reference(core, offers, &pending, &mut theirs, now);
        prop_assert_eq!(placed, ref_placed);
        prop_assert_eq!(unplaced, ref_unplaced);
        prop_assert_eq!(ours, theirs);
        Ok(())
    }

    /// One agent of a generated cluster: its zone (index into `ZONES`, 2 = none), whether it has a
    /// sidecar, its attach slots in use (of 4), and its rack.
    type AgentSpec = (usize, bool, u32, u8);
    /// One offer: the agent (index), cpus and memory.
    type OfferSpec = (usize, f64, f64);

    const ZONES: [Option<&str>; 3] = [Some("z0"), Some("z1"), None];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Over three rounds (with prepares failing on one agent, volumes attached on others, and sidecars
        /// dropping their stream before a round and coming back after it), the indexed round places, waits
        /// and declines exactly as the reference does.
        #[test]
        fn the_indexed_round_decides_as_the_reference_scan(
            agents in proptest::collection::vec((0usize..3, proptest::bool::weighted(0.85), 0u32..4, 0u8..3), 1..9),
            nodes in 0u64..7,
            rounds in proptest::collection::vec(proptest::collection::vec((0usize..9, 0.8f64..3.0, 900f64..3072.0), 0..14), 1..4),
            unique_rack in any::<bool>(),
            attached in proptest::collection::vec((1u64..7, 0usize..9), 0..3),
            fail_first in any::<bool>(),
            away in proptest::collection::vec((0usize..3, 0usize..9), 0..3),
        ) {
            let mut cfg = config(external(false));
            if unique_rack {
                cfg.constraints = vec![Constraint::Unique("rack".into())];
            }
            let mut h = Harness::new(cfg.clone());
            h.subscribe();
            let _ = h.core.handle_scale(nodes, h.now);
            h.drain();
            let name = |a: usize| format!("h{a}");
            let agents: Vec<AgentSpec> = agents;
            // Node n's volumes live in zone n mod 2; every sidecar reports every node's volumes, some
            // of them attached on their host.
            let reported = |a: usize| {
                let mut vols = Vec::new();
                for n in 1..=nodes {
                    let z = ZONES[(n % 2) as usize];
                    let here = attached.iter().any(|(node, on)| *node == n && *on == a);
                    for v in cfg.volume_names(NodeId(n)).expect("names") {
                        vols.push(volume(&v, true, z, here));
                    }
                }
                vols
            };
            for (a, (zone, sidecar, used, _)) in agents.iter().enumerate() {
                if *sidecar {
                    h.core.handle_sidecar_hello(hello(&name(a), ZONES[*zone], Some(4), "i"), h.now);
                    h.core.handle_sidecar_report(&host(&name(a)), report(1, reported(a), *used), h.now);
                }
            }
            h.drain();
            let specs: Vec<Vec<OfferSpec>> = rounds;
            for (r, round) in specs.iter().enumerate() {
                let offers: Vec<Offer> = round
                    .iter()
                    .enumerate()
                    .map(|(i, (a, cpus, mem))| {
                        let a = a % agents.len();
                        let mut o = offer(&format!("o-{r}-{i}"), &name(a), *cpus, *mem, 1000.0);
                        o.zone = if i % 3 == 0 { ZONES[agents[a].0].map(str::to_owned) } else { None };
                        o.attributes = vec![("rack".into(), AttributeValue::Text(format!("r{}", agents[a].3)))];
                        o
                    })
                    .collect();
                // Some sidecars drop their stream before the round, and come back after it.
                let gone: Vec<usize> = away
                    .iter()
                    .filter(|(when, a)| *when == r && agents[a % agents.len()].1)
                    .map(|(_, a)| a % agents.len())
                    .collect();
                for a in &gone {
                    h.core.handle_sidecar_disconnected(&host(&name(*a)), h.now);
                }
                h.drain();
                same_as_reference(&mut h.core, &offers, h.now)?;
                let cmds = h.offers(offers);
                // Fail the first prepare of the round: its node backs off and avoids that agent.
                if fail_first && let Some((on, command_id, _)) = prepares(&cmds).first().cloned() {
                    h.prepare_result(on.as_str(), command_id, false);
                }
                h.advance(60_000);
                for a in &gone {
                    h.core.handle_sidecar_hello(hello(&name(*a), ZONES[agents[*a].0], Some(4), "i"), h.now);
                }
                // Sidecars stay fresh across rounds.
                for (a, (_, sidecar, used, _)) in agents.iter().enumerate() {
                    if *sidecar {
                        h.core.handle_sidecar_report(&host(&name(a)), report(r as u64 + 2, reported(a), *used), h.now);
                    }
                }
                h.drain();
                // The rounds' copies of sidecar facts and agent ids follow the sidecars and Mesos.
                let invariants = h.core.check_invariants();
                prop_assert!(invariants.is_ok(), "{:?}", invariants);
            }
            prop_assert!(h.violations.is_empty(), "{:?}", h.violations);
        }
    }

    #[test]
    fn the_host_index_lists_each_hosts_candidates_in_push_order() {
        let [a, b, c, d] = ["a", "b", "c", "d"].map(|h| Hostname::new(h).expect("host"));
        let mut table = OfferedHosts::default();
        // A host known from an earlier round but not offering in this one.
        table.intern(&d, || None);
        let round: Vec<usize> = [&a, &b, &a, &c, &a, &b]
            .into_iter()
            .map(|h| table.intern(h, || None))
            .collect();
        let mut index = HostIndex::new(&table, 6);
        for (i, t) in round.into_iter().enumerate() {
            let id = index.add(t);
            index.push(id, i);
        }
        let list = |h: &Hostname| index.iter(index.id(h)).collect::<Vec<_>>();
        assert_eq!(list(&a), [0, 2, 4]);
        assert_eq!(list(&b), [1, 5]);
        assert_eq!(list(&c), [3]);
        assert!(list(&d).is_empty());
        assert!(list(&Hostname::new("e").expect("host")).is_empty());
    }

    #[test]
    fn the_host_index_marks_only_offering_hosts_busy() {
        let [a, b] = ["a", "b"].map(|h| Hostname::new(h).expect("host"));
        let mut table = OfferedHosts::default();
        let t = table.intern(&a, || None);
        table.intern(&b, || None);
        let mut index = HostIndex::new(&table, 1);
        let id = index.add(t);
        index.mark_busy(&b);
        assert!(!index.busy(id));
        index.mark_busy(&a);
        assert!(index.busy(id));
        assert_eq!(index.id(&b), None);
    }

    #[test]
    fn a_forgotten_hosts_number_goes_to_the_next_new_host_with_nothing_of_it() {
        let [a, b, c] = ["a", "b", "c"].map(|h| Hostname::new(h).expect("host"));
        let mut table = OfferedHosts::default();
        let ta = table.intern(&a, || None);
        let tb = table.intern(&b, || None);
        table.hosts[ta].decline = Some((Reason::Surplus, Millis(1)));
        table.hosts[ta].attributes = vec![("rack".into(), "r1".into())];
        assert_eq!(table.intern(&a, || None), ta);
        assert_eq!(table.counts(), (1, 1));
        table.remove(&a);
        assert!(table.get(&a).is_none());
        assert_eq!(table.counts(), (0, 0));
        let tc = table.intern(&c, || None);
        assert_eq!(tc, ta);
        assert!(
            table
                .get(&c)
                .is_some_and(|h| h.decline.is_none() && h.attributes.is_empty())
        );
        assert_eq!(table.declined().count(), 0);
        assert_eq!(table.id(&b), Some(tb));
    }

    #[test]
    fn the_order_key_orders_as_total_cmp() {
        let xs = [
            f64::NEG_INFINITY,
            -2.5,
            -0.0,
            0.0,
            1e-300,
            3.0,
            f64::INFINITY,
            f64::NAN,
        ];
        for x in xs {
            for y in xs {
                assert_eq!(total_order_key(x).cmp(&total_order_key(y)), x.total_cmp(&y));
            }
        }
    }

    #[test]
    fn an_offer_print_matches_only_the_same_host_agent_and_attributes() {
        let mut base = offer("o1", "h", 4.0, 8192.0, 0.0);
        base.attributes = vec![
            ("rack".into(), AttributeValue::Text("r1".into())),
            ("gen".into(), AttributeValue::Scalar(2.0)),
        ];
        let mut print = OfferPrint::host(&base.hostname);
        assert!(print.host_is("h") && !print.host_is("hh") && !print.host_is(""));
        assert!(!print.is(&base), "a new host's print matches no offer");
        print.set(&base);
        assert!(print.is(&base));
        assert!(print.host_is("h"));
        // Another offer id and other resources: the same print.
        let mut same = offer("o2", "h", 1.0, 1.0, 0.0);
        same.attributes = base.attributes.clone();
        assert!(print.is(&same));
        let changed: Vec<Offer> = vec![
            {
                let mut o = base.clone();
                o.hostname = Hostname::new("h2").expect("host");
                o
            },
            {
                let mut o = base.clone();
                o.agent_id = crate::testing::agent("other");
                o
            },
            {
                let mut o = base.clone();
                o.attributes[0].1 = AttributeValue::Text("r2".into());
                o
            },
            {
                let mut o = base.clone();
                o.attributes[0].0 = "row".into();
                o
            },
            {
                let mut o = base.clone();
                o.attributes[1].1 = AttributeValue::Scalar(3.0);
                o
            },
            {
                // The same bytes as text and as a number differ.
                let mut o = base.clone();
                let bits = 2.0f64.to_bits().to_le_bytes();
                o.attributes[1].1 =
                    AttributeValue::Text(String::from_utf8_lossy(&bits).into_owned());
                o
            },
            {
                let mut o = base.clone();
                o.attributes.pop();
                o
            },
            {
                let mut o = base.clone();
                o.attributes.clear();
                o
            },
            {
                let mut o = base.clone();
                o.attributes
                    .push(("zone".into(), AttributeValue::Text(String::new())));
                o
            },
        ];
        for o in &changed {
            assert!(!print.is(o), "{o:?}");
        }
        print.forget_offer();
        assert!(print.host_is("h"));
        assert!(!print.is(&base), "a forgotten offer matches nothing");
    }
}
