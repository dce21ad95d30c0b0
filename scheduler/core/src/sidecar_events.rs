//! Sidecar events into the core: Hello (Welcome and queued releases back), disconnection, reports (folded
//! into per-volume knowledge; stray mounts released) and command results (a successful prepare launches).

use crate::command::{Command, Reason, WatchEvent};
use crate::core::{Core, Sidecar, VolumeAgg};
use crate::domain::{CommandResult, Hello, Report, TaskState, VolumeReport};
use crate::ids::{Hostname, Millis, NodeId, VolumeName};
use std::collections::BTreeMap;

impl Core {
    // ----------------------------------------------------------------------------------------------
    // Sidecars
    // ----------------------------------------------------------------------------------------------

    /// A sidecar said hello (first connection, reconnection, or a restarted sidecar). Queued releases for
    /// the host go out first, then the Welcome.
    pub fn handle_sidecar_hello(&mut self, hello: Hello, now: Millis) {
        let host = hello.hostname.clone();
        let restarted = self
            .sidecars
            .get(&host)
            .is_some_and(|s| s.instance_id != hello.instance_id);
        if restarted {
            // The old process is gone with its in-flight prepare; its mounts died with it.
            self.abandon_prepares_on(&host, now, "sidecar restarted");
        }
        let entry = self
            .sidecars
            .entry(host.clone())
            .or_insert_with(|| Sidecar {
                agent_id: None,
                connected: true,
                instance_id: hello.instance_id.clone(),
                zone: None,
                max_attachments: None,
                features: Vec::new(),
                driver_name: String::new(),
                driver_scope: crate::domain::DriverScope::Unknown,
                last_report_at: None,
                last_sequence: 0,
                driver_healthy: false,
                driver_latency_micros: 0,
                driver_error: None,
                attachments_used: 0,
                volumes: BTreeMap::new(),
            });
        if entry.instance_id != hello.instance_id {
            entry.instance_id = hello.instance_id.clone();
            entry.last_sequence = 0;
            entry.last_report_at = None;
        }
        entry.connected = true;
        entry.agent_id = hello.agent_id.clone().or(entry.agent_id.take());
        entry.zone = hello.zone.clone();
        entry.max_attachments = hello.max_attachments;
        entry.features = hello.features.clone();
        entry.driver_name = hello.driver_name.clone();
        entry.driver_scope = hello.driver_scope;
        // The Hello's agent id stays the sidecar's claim (`Sidecar::agent_id`): only Mesos's word makes an
        // agent known (`agent_hosts`), or an invented one would be remembered forever.
        self.absent_since.remove(&host);
        self.sync_sidecar_facts(&host);
        self.observe_sidecar(&host);
        let command = self.welcome(&host);
        self.push(Command::Sidecar {
            host: host.clone(),
            command,
        });
        let due: Vec<NodeId> = self
            .persisted
            .slots
            .values()
            .filter(|r| r.mount_host.as_ref() == Some(&host))
            .map(|r| r.node_id)
            .collect();
        for id in due {
            self.release_mount(id);
        }
        let _ = now;
        self.flush_interest();
    }

    pub(crate) fn abandon_prepares_on(&mut self, host: &Hostname, now: Millis, why: &str) {
        let ids: Vec<NodeId> = self
            .slots
            .iter()
            .filter(|(_, rt)| {
                rt.preparing
                    .as_ref()
                    .is_some_and(|p| &p.offer.hostname == host)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.abandon_prepare(id, true);
            self.fail_slot(id, Reason::PrepareFailed(why.to_owned()), now);
        }
    }

    /// The sidecar's stream closed: its in-flight prepare fails, releases wait for its return.
    pub fn handle_sidecar_disconnected(&mut self, host: &Hostname, now: Millis) {
        if let Some(s) = self.sidecars.get_mut(host) {
            s.connected = false;
        } else {
            return;
        }
        self.sync_sidecar_facts(host);
        self.mark_absent(host, now);
        // Its volumes go to other observers; its last look at them must not outvote theirs. What it holds
        // mounted stays on record: that keeps the node pinned here until the release.
        let unattached: Vec<VolumeName> = self.sidecars.get(host).map_or(Vec::new(), |s| {
            s.volumes
                .values()
                .filter(|v| !v.attached_here)
                .map(|v| v.name.clone())
                .collect()
        });
        self.forget_observations(host, &unattached);
        self.observe_sidecar(host);
        self.abandon_prepares_on(host, now, "sidecar disconnected");
        // An in-flight prepare may have mounted just before the stream closed, and its answer is lost: keep
        // its node pinned to this agent until the sidecar is back and the release goes out (or an operator
        // forces a replacement), instead of trusting the prepare's deadline.
        // A prepare given up on earlier may also have mounted after our release: same treatment.
        let lost: Vec<NodeId> = self
            .abandoned_prepares
            .values()
            .filter(|a| &a.host == host)
            .map(|a| a.node)
            .collect();
        self.abandoned_prepares.retain(|_, a| &a.host != host);
        for id in lost {
            if let Some(mut rec) = self.record(id).cloned()
                && rec.mount_host.is_none()
            {
                rec.mount_host = Some(host.clone());
                self.write_slot(rec);
            }
        }
        self.flush_interest();
    }

    /// A sidecar report. Stale reports (sequence not above the last) are dropped.
    pub fn handle_sidecar_report(&mut self, host: &Hostname, report: Report, now: Millis) {
        let Some(s) = self.sidecars.get_mut(host) else {
            self.watch(WatchEvent::Warning {
                message: format!("report from {host} before its hello"),
            });
            return;
        };
        if report.sequence <= s.last_sequence {
            return;
        }
        s.last_sequence = report.sequence;
        s.last_report_at = Some(now);
        s.driver_healthy = report.driver_healthy;
        s.driver_latency_micros = report.driver_latency_micros;
        s.driver_error = report.driver_error.clone();
        s.attachments_used = report.attachments_used;
        let local = s.driver_scope == crate::domain::DriverScope::Local;
        let old: BTreeMap<VolumeName, VolumeReport> = std::mem::take(&mut s.volumes);
        self.sync_sidecar_facts(host);
        // Only names a node refers to are kept, and of a `watch_delta` sidecar only its share and its own
        // mounts: anything else would let a sidecar grow the index without bound.
        let mut new = BTreeMap::new();
        for v in report.volumes {
            if self.may_report(host, &v.name, v.attached_here) {
                new.insert(v.name.clone(), v);
            }
        }
        let mut zone_changed = false;
        for (name, o) in &old {
            if !new.contains_key(name) {
                Self::fold_volume(&mut self.volumes, host, name, Some(o), None, local);
            }
        }
        for (name, v) in &new {
            zone_changed |=
                Self::fold_volume(&mut self.volumes, host, name, old.get(name), Some(v), local);
        }
        self.release_stray_mounts(host, &new);
        if let Some(s) = self.sidecars.get_mut(host) {
            s.volumes = new;
        }
        if zone_changed {
            self.observation_changed();
        }
    }

    /// A report of a `watch_delta` sidecar carrying only what changed since its previous report
    /// (`volumes`), and the names it no longer reports (`removed`). One that does not follow the last
    /// report this core handled cannot be applied: the sidecar is welcomed again, which it answers with a
    /// full snapshot.
    pub fn handle_sidecar_report_delta(
        &mut self,
        host: &Hostname,
        report: Report,
        removed: Vec<VolumeName>,
        now: Millis,
    ) {
        let Some(s) = self.sidecars.get_mut(host) else {
            self.watch(WatchEvent::Warning {
                message: format!("report from {host} before its hello"),
            });
            return;
        };
        if report.sequence <= s.last_sequence {
            return;
        }
        if s.last_sequence == 0 || report.sequence != s.last_sequence + 1 {
            s.last_sequence = report.sequence;
            let command = self.welcome(host);
            self.push(Command::Sidecar {
                host: host.clone(),
                command,
            });
            return;
        }
        s.last_sequence = report.sequence;
        s.last_report_at = Some(now);
        s.driver_healthy = report.driver_healthy;
        s.driver_latency_micros = report.driver_latency_micros;
        s.driver_error = report.driver_error.clone();
        s.attachments_used = report.attachments_used;
        let local = s.driver_scope == crate::domain::DriverScope::Local;
        self.sync_sidecar_facts(host);
        let mut changed = BTreeMap::new();
        for v in report.volumes {
            if self.may_report(host, &v.name, v.attached_here) {
                changed.insert(v.name.clone(), v);
            }
        }
        let mut zone_changed = false;
        if let Some(s) = self.sidecars.get_mut(host) {
            for name in &removed {
                if let Some(old) = s.volumes.remove(name) {
                    Self::fold_volume(&mut self.volumes, host, name, Some(&old), None, local);
                }
            }
            for (name, v) in &changed {
                let old = s.volumes.insert(name.clone(), v.clone());
                zone_changed |=
                    Self::fold_volume(&mut self.volumes, host, name, old.as_ref(), Some(v), local);
            }
        }
        self.release_stray_mounts(host, &changed);
        if zone_changed {
            self.observation_changed();
        }
    }

    /// A mount the sidecar holds that nothing in the core explains (e.g. from before a scheduler restart)
    /// is released once, so every Mount is matched by an Unmount.
    pub(crate) fn release_stray_mounts(
        &mut self,
        host: &Hostname,
        reported: &BTreeMap<VolumeName, VolumeReport>,
    ) {
        let mut stray = Vec::new();
        for v in reported.values() {
            if !v.attached_here {
                // The common case on every report: nothing was released, so build no key.
                if !self.stray_released.is_empty() {
                    self.stray_released.remove(&(host.clone(), v.name.clone()));
                }
                continue;
            }
            let Some(id) = self.volume_owner.get(&v.name).copied() else {
                continue;
            };
            let key = (host.clone(), v.name.clone());
            if self.explains_mount(id, host) || self.stray_released.contains(&key) {
                continue;
            }
            self.stray_released.insert(key);
            stray.push(v.name.clone());
        }
        self.release(host, stray);
    }

    /// Whether the core expects node `id`'s volumes to be mounted by the sidecar of `host`.
    pub(crate) fn explains_mount(&self, id: NodeId, host: &Hostname) -> bool {
        let Some(rt) = self.slots.get(&id) else {
            return false;
        };
        if self
            .record(id)
            .is_some_and(|r| r.mount_host.as_ref() == Some(host))
            || rt
                .preparing
                .as_ref()
                .is_some_and(|p| &p.offer.hostname == host)
            || self
                .abandoned_prepares
                .values()
                .any(|a| a.node == id && &a.host == host)
        {
            return true;
        }
        // Restored after a restart: a launch may still be starting on the prepared mount.
        self.record(id)
            .and_then(|r| r.task.as_ref())
            .is_some_and(|t| {
                &t.host == host
                    && matches!(
                        t.state,
                        None | Some(TaskState::Staging) | Some(TaskState::Starting)
                    )
            })
    }

    /// Replaces what `host` said about volume `name` (`old`) by what it says now (`new`); true when that
    /// taught the volume's zone (which decides who observes it).
    pub(crate) fn fold_volume(
        index: &mut foldhash::HashMap<VolumeName, VolumeAgg>,
        host: &Hostname,
        name: &VolumeName,
        old: Option<&VolumeReport>,
        new: Option<&VolumeReport>,
        local: bool,
    ) -> bool {
        // Every report folds every volume: clone the name only the first time it is seen.
        let agg = match index.get_mut(name) {
            Some(agg) => agg,
            None => index.entry(name.clone()).or_default(),
        };
        if let Some(o) = old {
            if o.exists {
                agg.exists = agg.exists.saturating_sub(1);
            } else {
                agg.missing = agg.missing.saturating_sub(1);
            }
            agg.attached_hosts.remove(host);
            agg.local_hosts.remove(host);
        }
        let Some(v) = new else { return false };
        if v.exists {
            agg.exists += 1;
            if local {
                agg.local_hosts.insert(host.clone());
            }
        } else {
            agg.missing += 1;
        }
        if v.attached_here {
            agg.attached_hosts.insert(host.clone());
        }
        let mut zone_changed = false;
        if v.zone.is_some() && agg.zone != v.zone {
            agg.zone.clone_from(&v.zone);
            zone_changed = true;
        }
        if v.size_bytes.is_some() {
            agg.size_bytes = v.size_bytes;
        }
        if v.free_bytes.is_some() {
            agg.free_bytes = v.free_bytes;
        }
        agg.last_error.clone_from(&v.last_error);
        zone_changed
    }

    /// The outcome of a Prepare or Release.
    pub fn handle_sidecar_result(&mut self, host: &Hostname, result: CommandResult, now: Millis) {
        // Of a `watch_delta` sidecar only its share and its own mounts: a look at anything else (a prepare
        // given up on) would linger beside the observer's word until the next snapshot.
        let kept: Vec<&VolumeReport> = result
            .volumes
            .iter()
            .filter(|v| self.may_report(host, &v.name, v.attached_here))
            .collect();
        if let Some(s) = self.sidecars.get_mut(host) {
            let local = s.driver_scope == crate::domain::DriverScope::Local;
            for v in kept {
                let old = s.volumes.insert(v.name.clone(), v.clone());
                let _ = Self::fold_volume(
                    &mut self.volumes,
                    host,
                    &v.name,
                    old.as_ref(),
                    Some(v),
                    local,
                );
            }
        }
        let preparing = self.slots.iter().find_map(|(id, rt)| {
            rt.preparing
                .as_ref()
                .filter(|p| {
                    (p.command_id == result.command_id || p.install_id == Some(result.command_id))
                        && &p.offer.hostname == host
                })
                .map(|p| (*id, p.command_id))
        });
        // A storage-fenced replacement launches only once the driver confirmed the takeover. That is in
        // the Prepare's own answer: an InstallIdentity's answer, which may follow it, reports no volumes.
        if let Some((id, prepare_id)) = preparing
            && result.ok
            && prepare_id == result.command_id
            && self.slots.get(&id).is_some_and(|rt| rt.replacing_fenced)
            && let Err(reason) = self.confirm_fenced_attachment(id, &result)
        {
            // The takeover did not happen as the driver sees it: launching could make a second
            // writer. Release, and try again (elsewhere first) after the backoff.
            self.abandon_prepare(id, true);
            self.abandoned_prepares.remove(&result.command_id);
            let fence = self.prepare_fence(id);
            if let Some(rt) = self.slots.get_mut(&id) {
                rt.not_before = fence.max(now);
                rt.avoid_host = Some(host.clone());
            }
            self.fail_slot(id, reason, now);
            self.flush_interest();
            return;
        }
        // A prepare that asked for an identity launches only once the signed identity is installed.
        let mut result = result;
        if let Some((id, prepare_id)) = preparing
            && result.ok
            && prepare_id == result.command_id
            && let Some(identity) = self
                .slots
                .get(&id)
                .and_then(|rt| rt.preparing.as_ref())
                .and_then(|p| p.identity.clone())
        {
            match result.csr_pem.take().filter(|c| !c.is_empty()) {
                Some(csr_pem) => {
                    let install_id = self.command_id();
                    if let Some(p) = self.slots.get_mut(&id).and_then(|rt| rt.preparing.as_mut()) {
                        p.install_id = Some(install_id);
                    }
                    self.push(Command::Sidecar {
                        host: host.clone(),
                        command: crate::command::SidecarCommand::InstallIdentity {
                            command_id: install_id,
                            prepare_id,
                            node_id: id,
                            identity,
                            csr_pem,
                            owner: self.config.volume_owner,
                        },
                    });
                    self.flush_interest();
                    return;
                }
                None => {
                    result.ok = false;
                    result.error = Some(
                        "the sidecar prepared the volumes but returned no CSR for the node's key"
                            .into(),
                    );
                }
            }
        }
        match preparing.map(|(id, _)| id) {
            Some(id) if result.ok => {
                let Some(p) = self.slots.get_mut(&id).and_then(|rt| rt.preparing.take()) else {
                    return;
                };
                self.holds.remove(&p.offer.id);
                self.launch(id, &p.offer, p.http_port, p.transport_port, now);
            }
            Some(id) => {
                self.abandon_prepare(id, true);
                // The answer came (to the prepare, or to the install that followed it, which means the
                // prepare succeeded): nothing of this prepare is left mounted or outstanding.
                if let Some((_, prepare_id)) = preparing {
                    self.abandoned_prepares.remove(&prepare_id);
                }
                self.abandoned_prepares.remove(&result.command_id);
                let fence = self.prepare_fence(id);
                if let Some(rt) = self.slots.get_mut(&id) {
                    rt.not_before = fence.max(now);
                    rt.avoid_host = Some(host.clone());
                }
                let err = result.error.unwrap_or_else(|| "unknown error".into());
                self.fail_slot(id, Reason::PrepareFailed(err), now);
            }
            None => {
                // A late answer to a prepare we gave up on: whatever it mounted must be unmounted.
                if let Some(a) = self.abandoned_prepares.remove(&result.command_id)
                    && &a.host == host
                    && result.ok
                {
                    self.release(&a.host, a.volumes);
                }
            }
        }
        self.flush_interest();
    }
}
