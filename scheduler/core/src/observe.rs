//! Which sidecar observes which volume (issue 15). Broadcasting every volume name to every sidecar made the
//! driver calls cost agents × volumes (each `Get` is a cloud API call behind REX-Ray); instead each volume
//! is assigned to one sidecar that declared [`FEATURE_WATCH_DELTA`]:
//!
//! * the agent that holds it (a task that may be alive, a sidecar mount on record, a prepare) observes it;
//! * otherwise one connected sidecar of the volume's zone, or of any zone while the zone is unknown (or
//!   no sidecar of that zone is connected), the least loaded one, kept while it stays valid and the
//!   spread stays even, moved when it goes;
//! * a sidecar of a host-local driver observes every volume: each host has its own copies, and only it
//!   can tell whether one exists there.
//!
//! Sidecars without the feature keep getting the full watch set in every Welcome, and observe everything.
//! The assignment is recomputed lazily: anything that may change it marks it dirty, and the next
//! [`Core::poll_command`] emits the changes as [`SidecarCommand::WatchDelta`] per sidecar, so a handler
//! never pays for it twice.
//!
//! The flush is incremental in the sidecars: the candidate sidecars are kept as they come and go (no walk
//! of every sidecar), and only the shares of sidecars whose volumes changed (or that said Hello, or came
//! or went) are rebuilt and compared. The assignment still looks at every volume and every candidate, so a
//! flush costs O(volumes + candidates) with no per-sidecar allocation, and nothing at all while no
//! `watch_delta` sidecar is connected. It decides exactly as a recomputation of every share would
//! (`observation_from_scratch`, tested against it).

use crate::command::{Command, SidecarCommand};
use crate::core::Core;
use crate::domain::{DriverScope, FEATURE_WATCH_DELTA};
use crate::ids::{Hostname, NodeId, VolumeName};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// What the core told each `watch_delta` sidecar, and whether that is still right.
#[derive(Debug, Default)]
pub(crate) struct Observation {
    /// Each volume's observer among the sidecars of a cluster-wide driver.
    pub(crate) observer: HashMap<VolumeName, Hostname>,
    /// Each `watch_delta` sidecar's share as last sent: name → urgent.
    pub(crate) shares: BTreeMap<Hostname, BTreeMap<VolumeName, bool>>,
    /// Sidecars whose next WatchDelta starts over (`reset`): they said Hello.
    pub(crate) reset: BTreeSet<Hostname>,
    /// Something the assignment depends on changed since the last flush.
    pub(crate) dirty: bool,
    /// The connected `watch_delta` sidecars of a cluster-wide driver, with their zones (kept as sidecars
    /// come and go: [`Core::observe_sidecar`]).
    pub(crate) candidates: BTreeMap<Hostname, Option<String>>,
    /// The connected `watch_delta` sidecars of a host-local driver.
    pub(crate) local: BTreeSet<Hostname>,
    /// Sidecars that became or stopped being candidates since the last flush.
    pub(crate) moved: BTreeSet<Hostname>,
}

/// What a recomputation of every share gives (see [`Core::observation_from_scratch`]).
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct FromScratch {
    pub(crate) observer: HashMap<VolumeName, Hostname>,
    pub(crate) shares: BTreeMap<Hostname, BTreeMap<VolumeName, bool>>,
    /// The WatchDeltas, in the order they are queued.
    pub(crate) commands: Vec<(Hostname, SidecarCommand)>,
}

/// One volume's facts the assignment needs.
struct Want {
    name: VolumeName,
    holder: Option<Hostname>,
    urgent: bool,
    zone: Option<String>,
}

impl Core {
    /// Marks the assignment for recomputation before the next command is polled.
    pub(crate) fn observation_changed(&mut self) {
        self.observe.dirty = true;
    }

    /// Re-reads whether the sidecar of `host` is a candidate observer (connected, `watch_delta`) and of
    /// which kind: call after its Hello, its disconnection, or forgetting it.
    pub(crate) fn observe_sidecar(&mut self, host: &Hostname) {
        let o = &mut self.observe;
        let was = o.candidates.contains_key(host) || o.local.contains(host);
        let now = match self.sidecars.get(host) {
            Some(s) if s.connected && s.features.iter().any(|f| f == FEATURE_WATCH_DELTA) => {
                Some((s.driver_scope == DriverScope::Local, s.zone.clone()))
            }
            _ => None,
        };
        o.candidates.remove(host);
        o.local.remove(host);
        match now {
            Some((true, _)) => {
                o.local.insert(host.clone());
            }
            Some((false, zone)) => {
                o.candidates.insert(host.clone(), zone);
            }
            None => {}
        }
        if was || o.candidates.contains_key(host) || o.local.contains(host) {
            o.moved.insert(host.clone());
        }
        self.observation_changed();
    }

    /// Whether the sidecar of `host` gets its share by delta (declared `watch_delta`).
    pub(crate) fn observes_by_delta(&self, host: &Hostname) -> bool {
        self.sidecars
            .get(host)
            .is_some_and(|s| s.features.iter().any(|f| f == FEATURE_WATCH_DELTA))
    }

    /// The host holding node `id`'s volumes as far as the core knows: a prepare under way, a sidecar
    /// mount on record, a task that may be alive.
    fn holder(&self, id: NodeId) -> Option<Hostname> {
        if let Some(p) = self.slots.get(&id).and_then(|rt| rt.preparing.as_ref()) {
            return Some(p.offer.hostname.clone());
        }
        let rec = self.record(id)?;
        rec.mount_host.clone().or_else(|| {
            rec.task
                .as_ref()
                .filter(|t| !t.is_terminal())
                .map(|t| t.host.clone())
        })
    }

    /// How many volumes the sidecar of `host` observes: its share, or the full watch set for a sidecar
    /// without `watch_delta`; 0 when disconnected.
    pub(crate) fn observes(&self, host: &Hostname) -> usize {
        match self.sidecars.get(host) {
            Some(s) if s.connected => match self.observe.shares.get(host) {
                Some(share) => share.len(),
                None if self.observes_by_delta(host) => 0,
                None => self.watch.len(),
            },
            _ => 0,
        }
    }

    /// The share a `watch_delta` sidecar is responsible for, as last sent (for tests and views).
    #[must_use]
    pub fn observed_by(&self, host: &Hostname) -> Vec<VolumeName> {
        self.observe
            .shares
            .get(host)
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// One volume's facts the assignment needs, for every volume of every node.
    fn wants(&self) -> Vec<Want> {
        self.persisted
            .slots
            .values()
            .flat_map(|rec| {
                let holder = self.holder(rec.node_id);
                let urgent = holder.is_some() || self.needs_task(rec.node_id);
                rec.volumes.iter().map(move |v| (v, holder.clone(), urgent))
            })
            .map(|(v, holder, urgent)| Want {
                name: v.clone(),
                holder,
                urgent,
                zone: self
                    .volumes
                    .get(v)
                    .and_then(|a| a.zone.clone())
                    .filter(|z| !z.is_empty()),
            })
            .collect()
    }

    /// Recomputes the assignment if anything changed and queues each sidecar's changes.
    pub(crate) fn flush_observation(&mut self) {
        if !self.observe.dirty {
            return;
        }
        self.observe.dirty = false;
        let moved = std::mem::take(&mut self.observe.moved);
        let reset = std::mem::take(&mut self.observe.reset);
        if self.observe.candidates.is_empty() && self.observe.local.is_empty() {
            // Nobody observes by delta: nothing to assign or tell (shares die with their streams).
            self.observe.observer.clear();
            self.observe.shares.clear();
            return;
        }
        let wants = self.wants();
        let observer = assign(&wants, &self.observe.candidates, &self.observe.observer);
        // A sidecar's share changes only if one of its volumes came, went or changed urgency, or it said
        // Hello (`reset`), or it became a candidate; every other share stays as sent.
        let old_observer = std::mem::take(&mut self.observe.observer);
        let mut touched: BTreeSet<Hostname> = reset.iter().chain(&moved).cloned().collect();
        touched.extend(self.observe.local.iter().cloned());
        let mut by_host: HashMap<&Hostname, BTreeMap<VolumeName, bool>> = HashMap::new();
        let mut names: std::collections::HashSet<&VolumeName> =
            std::collections::HashSet::with_capacity(wants.len());
        for w in &wants {
            names.insert(&w.name);
            let new = observer.get(&w.name);
            let old = old_observer.get(&w.name);
            if let Some(h) = new {
                by_host
                    .entry(h)
                    .or_default()
                    .insert(w.name.clone(), w.urgent);
            }
            if new != old {
                touched.extend(new.cloned());
                touched.extend(old.cloned());
            } else if let Some(h) = new
                && self.observe.shares.get(h).and_then(|s| s.get(&w.name)) != Some(&w.urgent)
            {
                touched.insert(h.clone());
            }
        }
        for (name, h) in &old_observer {
            if !names.contains(name) {
                touched.insert(h.clone());
            }
        }
        drop(names);
        let everything: BTreeMap<VolumeName, bool> = if self.observe.local.is_empty() {
            BTreeMap::new()
        } else {
            wants.iter().map(|w| (w.name.clone(), w.urgent)).collect()
        };
        let mut desired: Vec<(Hostname, BTreeMap<VolumeName, bool>)> = Vec::new();
        for host in touched {
            let share = if self.observe.local.contains(&host) {
                everything.clone()
            } else if self.observe.candidates.contains_key(&host) {
                by_host.remove(&host).unwrap_or_default()
            } else {
                // No longer a candidate: its share went with its stream.
                self.observe.shares.remove(&host);
                continue;
            };
            desired.push((host, share));
        }
        drop(by_host);
        self.observe.observer = observer;
        for (host, share) in desired {
            let reset = reset.contains(&host);
            let old = self.observe.shares.remove(&host);
            let before = if reset { None } else { old.as_ref() };
            let add: Vec<(VolumeName, bool)> = share
                .iter()
                .filter(|(n, u)| before.and_then(|b| b.get(*n)) != Some(*u))
                .map(|(n, u)| (n.clone(), *u))
                .collect();
            let remove: Vec<VolumeName> = before
                .map(|b| {
                    b.keys()
                        .filter(|n| !share.contains_key(*n))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            // What it no longer observes is no longer its word: a deletion seen by the next observer
            // must not be outvoted by this one's last look (unless it holds a mount of it).
            self.forget_observations(&host, &remove);
            if reset || !add.is_empty() || !remove.is_empty() {
                self.push(Command::Sidecar {
                    host: host.clone(),
                    command: SidecarCommand::WatchDelta { reset, add, remove },
                });
            }
            self.observe.shares.insert(host, share);
        }
    }

    /// The assignment and the commands a recomputation of every share from the sidecars and the nodes
    /// would give now (the flush as first written): what [`Core::flush_observation`] must decide.
    #[cfg(test)]
    pub(crate) fn observation_from_scratch(&self) -> FromScratch {
        let mut out = FromScratch {
            observer: self.observe.observer.clone(),
            shares: self.observe.shares.clone(),
            commands: Vec::new(),
        };
        if !self.observe.dirty {
            return out;
        }
        let mut cluster_wide: BTreeMap<Hostname, Option<String>> = BTreeMap::new();
        let mut local: Vec<Hostname> = Vec::new();
        for (host, s) in &self.sidecars {
            if !s.connected || !s.features.iter().any(|f| f == FEATURE_WATCH_DELTA) {
                continue;
            }
            if s.driver_scope == DriverScope::Local {
                local.push(host.clone());
            } else {
                cluster_wide.insert(host.clone(), s.zone.clone());
            }
        }
        let wants = self.wants();
        let observer = assign(&wants, &cluster_wide, &self.observe.observer);
        let mut desired: BTreeMap<Hostname, BTreeMap<VolumeName, bool>> = cluster_wide
            .keys()
            .chain(local.iter())
            .map(|h| (h.clone(), BTreeMap::new()))
            .collect();
        for w in &wants {
            if let Some(h) = observer.get(&w.name)
                && let Some(share) = desired.get_mut(h)
            {
                share.insert(w.name.clone(), w.urgent);
            }
            for h in &local {
                if let Some(share) = desired.get_mut(h) {
                    share.insert(w.name.clone(), w.urgent);
                }
            }
        }
        for (host, share) in &desired {
            let reset = self.observe.reset.contains(host);
            let before = if reset {
                None
            } else {
                self.observe.shares.get(host)
            };
            let add: Vec<(VolumeName, bool)> = share
                .iter()
                .filter(|(n, u)| before.and_then(|b| b.get(*n)) != Some(*u))
                .map(|(n, u)| (n.clone(), *u))
                .collect();
            let remove: Vec<VolumeName> = before
                .map(|b| {
                    b.keys()
                        .filter(|n| !share.contains_key(*n))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            if reset || !add.is_empty() || !remove.is_empty() {
                out.commands.push((
                    host.clone(),
                    SidecarCommand::WatchDelta { reset, add, remove },
                ));
            }
        }
        out.observer = observer;
        out.shares = desired;
        out
    }

    /// Drops what the sidecar of `host` last said of `names`, except of volumes it holds mounted.
    pub(crate) fn forget_observations(&mut self, host: &Hostname, names: &[VolumeName]) {
        let Some(s) = self.sidecars.get_mut(host) else {
            return;
        };
        let local = s.driver_scope == DriverScope::Local;
        for name in names {
            if s.volumes.get(name).is_some_and(|v| !v.attached_here)
                && let Some(old) = s.volumes.remove(name)
            {
                Self::fold_volume(&mut self.volumes, host, name, Some(&old), None, local);
            }
        }
    }

    /// Whether the sidecar of `host` may report volume `name`: its share (or anything a node refers to,
    /// for a sidecar without `watch_delta`), and any volume it holds mounted.
    pub(crate) fn may_report(&self, host: &Hostname, name: &VolumeName, attached: bool) -> bool {
        if !self.volume_owner.contains_key(name) {
            return false;
        }
        match self.observe.shares.get(host) {
            Some(share) => attached || share.contains_key(name),
            None => true,
        }
    }
}

/// The observer of every volume among the sidecars of a cluster-wide driver (`candidates`: host → zone):
/// the holder when it is a candidate; else the current observer while it is a candidate of the right
/// zone and under its group's even share; else the least loaded candidate of the volume's zone (of any
/// zone when the zone is unknown or has none). Deterministic: ties go to the lowest host name.
fn assign(
    wants: &[Want],
    candidates: &BTreeMap<Hostname, Option<String>>,
    current: &HashMap<VolumeName, Hostname>,
) -> HashMap<VolumeName, Hostname> {
    let mut out = HashMap::new();
    if candidates.is_empty() {
        return out;
    }
    let zones: BTreeSet<&str> = candidates.values().flatten().map(String::as_str).collect();
    // A volume's group: its zone if a candidate lives there, else every candidate (`None`).
    let group_of = |w: &Want| -> Option<String> {
        w.zone
            .as_deref()
            .filter(|z| zones.contains(z))
            .map(str::to_owned)
    };
    let members = |g: &Option<String>| -> Vec<&Hostname> {
        candidates
            .iter()
            .filter(|(_, z)| g.is_none() || z.as_ref() == g.as_ref())
            .map(|(h, _)| h)
            .collect()
    };
    let mut load: BTreeMap<&Hostname, usize> = candidates.keys().map(|h| (h, 0)).collect();
    let mut free: BTreeMap<Option<String>, Vec<&Want>> = BTreeMap::new();
    for w in wants {
        match w.holder.as_ref().filter(|h| candidates.contains_key(*h)) {
            Some(h) => {
                out.insert(w.name.clone(), h.clone());
                *load.entry(h).or_default() += 1;
            }
            None => free.entry(group_of(w)).or_default().push(w),
        }
    }
    // Zones first, so the any-zone group evens out what they leave.
    let mut groups: Vec<(Option<String>, Vec<&Want>)> = free.into_iter().collect();
    groups.sort_by_key(|(g, _)| g.is_none());
    for (g, ws) in groups {
        let hosts = members(&g);
        let fixed: usize = hosts.iter().map(|h| load[h]).sum();
        let cap = (fixed + ws.len()).div_ceil(hosts.len().max(1));
        let mut rest = Vec::new();
        for w in ws {
            match current.get(&w.name) {
                Some(h) if hosts.contains(&h) && load[h] < cap => {
                    *load.get_mut(h).expect("a candidate") += 1;
                    out.insert(w.name.clone(), h.clone());
                }
                _ => rest.push(w),
            }
        }
        let mut by_load: BTreeSet<(usize, &Hostname)> =
            hosts.iter().map(|h| (load[h], *h)).collect();
        for w in rest {
            let Some((n, h)) = by_load.pop_first() else {
                break;
            };
            out.insert(w.name.clone(), h.clone());
            by_load.insert((n + 1, h));
            load.insert(h, n + 1);
        }
    }
    out
}
