//! Forgetting agents nothing vouches for, so that a peer cannot make the core hold memory forever.
//!
//! An agent (a host) is remembered while its sidecar is connected, while Mesos knows it (an offer or a
//! task status named its agent id, and no FAILURE removed that agent since), or while a node refers to
//! it (a task, a sidecar mount on record, a prepare). Offers are suppressed when nothing is pending, so
//! the absence of offers says nothing about an agent's health; Mesos's knowledge is what counts. When the
//! last of these goes (the sidecar disconnects, Mesos removes the agent), the host becomes *absent*; after
//! `Config::max_agent_absence_ms` absent, if still nothing vouches for it, everything the core keeps per
//! host is dropped: its sidecar entry (and what its reports added to the volume index), its last decline
//! reason and attributes, its stray-release marks.
//!
//! Volume names are bounded at ingest instead: only names some node refers to (`volume_owner`, which
//! never shrinks) enter a sidecar's entry or the volume index, so names no node refers to are never held.

use std::collections::BTreeSet;

use crate::core::{Core, Timer};
use crate::ids::{Hostname, Millis};

/// Sizes of what the core keeps per agent and per volume name (for tests and gauges).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Footprint {
    /// Sidecars known, connected or not.
    pub sidecars: usize,
    /// Volume reports held across every sidecar's latest report.
    pub sidecar_volumes: usize,
    /// Names in the index of reported volumes.
    pub volume_index: usize,
    /// Agent ids Mesos named, with their hosts.
    pub mesos_agents: usize,
    /// Hosts with a last decline reason.
    pub decline_reasons: usize,
    /// Hosts with offer attributes.
    pub host_attributes: usize,
    /// Hosts waiting out their absence.
    pub absent: usize,
    /// Stray mounts asked to be released.
    pub stray_released: usize,
}

impl Core {
    /// What the core holds per agent and per volume name.
    #[must_use]
    pub fn footprint(&self) -> Footprint {
        let (decline_reasons, host_attributes) = self.offered.counts();
        Footprint {
            sidecars: self.sidecars.len(),
            sidecar_volumes: self.sidecars.values().map(|s| s.volumes.len()).sum(),
            volume_index: self.volumes.len(),
            mesos_agents: self.agent_hosts.len(),
            decline_reasons,
            host_attributes,
            absent: self.absent_since.len(),
            stray_released: self.stray_released.len(),
        }
    }

    /// `host` lost what vouched for it (its sidecar disconnected, or Mesos removed its agent).
    pub(crate) fn mark_absent(&mut self, host: &Hostname, now: Millis) {
        self.absent_since.entry(host.clone()).or_insert(now);
        self.arm_forget(now.plus(self.config.max_agent_absence_ms));
    }

    fn arm_forget(&mut self, at: Millis) {
        if self.forget_at.is_some_and(|t| t <= at) {
            return;
        }
        if let Some(old) = self.forget_at.replace(at) {
            self.timers.remove(&(old, Timer::Forget));
        }
        self.timers.insert((at, Timer::Forget));
    }

    /// The `Timer::Forget` sweep: forgets every host absent for the whole grace with nothing vouching for
    /// it, and re-arms for the next one due.
    pub(crate) fn forget_absent(&mut self, now: Millis) {
        self.forget_at = None;
        let grace = self.config.max_agent_absence_ms;
        let mesos: BTreeSet<Hostname> = self.agent_hosts.values().cloned().collect();
        let named = self.hosts_nodes_name();
        let mut forget = Vec::new();
        let mut next: Option<Millis> = None;
        let absent = std::mem::take(&mut self.absent_since);
        for (host, since) in absent {
            let connected = self.sidecars.get(&host).is_some_and(|s| s.connected);
            if connected || mesos.contains(&host) {
                // Vouched for again; whatever ends that marks it absent anew.
                continue;
            }
            let since = if now.since(since) < grace {
                since
            } else if named.contains(&host) {
                // A node still names it: look again one grace later.
                now
            } else {
                forget.push(host);
                continue;
            };
            let due = since.plus(grace);
            next = Some(next.map_or(due, |n| n.min(due)));
            self.absent_since.insert(host, since);
        }
        for host in forget {
            self.forget_host(&host);
        }
        if let Some(at) = next {
            self.arm_forget(at);
        }
    }

    /// Hosts a node refers to: its task that may be alive, its sidecar mount on record, an in-flight or abandoned prepare.
    fn hosts_nodes_name(&self) -> BTreeSet<Hostname> {
        let mut hosts = BTreeSet::new();
        for rec in self.persisted.slots.values() {
            hosts.extend(
                rec.task
                    .as_ref()
                    .filter(|t| !t.is_terminal())
                    .map(|t| t.host.clone()),
            );
            hosts.extend(rec.mount_host.clone());
        }
        for rt in self.slots.values() {
            hosts.extend(rt.preparing.as_ref().map(|p| p.offer.hostname.clone()));
            hosts.extend(rt.avoid_host.clone());
        }
        hosts.extend(self.abandoned_prepares.values().map(|a| a.host.clone()));
        hosts
    }

    fn forget_host(&mut self, host: &Hostname) {
        if let Some(s) = self.sidecars.remove(host) {
            let local = s.driver_scope == crate::domain::DriverScope::Local;
            for (name, v) in &s.volumes {
                let _ = Self::fold_volume(&mut self.volumes, host, name, Some(v), None, local);
            }
        }
        self.observe.shares.remove(host);
        self.observe_sidecar(host);
        self.offered.remove(host);
        self.stray_released.retain(|(h, _)| h != host);
    }
}
