//! The sidecar's runtime: the stream to the scheduler (Hello, Welcome, commands, results), the reporter
//! (periodic and on demand) and the shutdown sequence. Owns no protocol details of the driver.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use rand::Rng;
use tether_proto::v1::agent_channel_client::AgentChannelClient;
use tether_proto::v1::{
    AgentMessage, CommandResult, Hello, InstallIdentity, Prepare, Release, Report,
    SchedulerMessage, VolumeReport, VolumeSelector, WatchDelta, agent_message, scheduler_message,
};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::args::Args;
use crate::identity::Owner;
use crate::leader::Targets;
use crate::volumes::{InstallSpec, Outcome, PrepareSpec, Volumes, measure, volume_report};
use crate::{SidecarError, lock};

/// Version sent in Hello.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What this sidecar declares in Hello beyond the first contract: the scheduler relies on nothing else.
pub const FEATURES: [&str; 3] = ["volume_owner", "node_identity", "watch_delta"];

/// What this sidecar observes.
#[derive(Debug, Default)]
struct Watch {
    /// The full watch set of a Welcome (a scheduler that does not assign shares).
    selector: VolumeSelector,
    /// The share assigned by WatchDelta on this stream (name → urgent); `None` until the first one,
    /// and then the selector is what is watched and every report is a snapshot.
    share: Option<BTreeMap<String, bool>>,
}

/// The last look (`Get`) at one volume.
#[derive(Debug)]
struct Look {
    report: VolumeReport,
    at: Instant,
    /// Two looks in a row found the same: looked at again only every `--detail-interval`.
    settled: bool,
}

/// What the scheduler was last told on this stream, for reports that carry only changes.
#[derive(Debug)]
struct Sent {
    volumes: HashMap<String, VolumeReport>,
    /// Volumes a command result reported since: the scheduler took that word, so the next report says
    /// again what the look says, changed or not.
    resend: std::collections::HashSet<String>,
    /// The next report must be a snapshot: a new stream, a Welcome, a report lost on the way, the period.
    snapshot_due: bool,
    last_snapshot: Instant,
}

/// Why a session ended, and the leader a standby named when that was why.
#[derive(Debug)]
struct SessionError {
    message: String,
    leader: Option<String>,
}

impl From<String> for SessionError {
    fn from(message: String) -> Self {
        SessionError {
            message,
            leader: None,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Runtime {
    args: Args,
    hostname: String,
    instance_id: String,
    /// Declared in Hello ([`FEATURES`], unless a benchmark plays an older sidecar).
    features: Vec<String>,
    pub(crate) volumes: Arc<Volumes>,
    watch: Mutex<Watch>,
    looks: Mutex<HashMap<String, Look>>,
    sent: Mutex<Sent>,
    interval: Mutex<Duration>,
    sequence: AtomicU64,
    report_now: Notify,
    outbound: Mutex<Option<mpsc::Sender<AgentMessage>>>,
    commands: TaskTracker,
    /// Counts streams: a command id names a command only within its stream.
    session: AtomicU64,
    /// The node keys this sidecar generated, by the Prepare (stream, command id) that asked for them,
    /// until their volume is released: an InstallIdentity naming another Prepare is refused.
    identities: Mutex<BTreeMap<(u64, u64), PreparedIdentity>>,
}

/// What a Prepare with an identity request generated a key for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PreparedIdentity {
    node_id: u64,
    volume: String,
    dir: String,
}

impl Runtime {
    pub(crate) fn new(
        args: Args,
        hostname: String,
        volumes: Arc<Volumes>,
        features: &[&str],
    ) -> Self {
        let interval = Duration::from(args.report_interval).max(Duration::from_millis(10));
        Runtime {
            args,
            hostname,
            instance_id: uuid::Uuid::new_v4().to_string(),
            features: features.iter().map(|f| f.to_string()).collect(),
            volumes,
            watch: Mutex::new(Watch::default()),
            looks: Mutex::new(HashMap::new()),
            sent: Mutex::new(Sent {
                volumes: HashMap::new(),
                resend: std::collections::HashSet::new(),
                snapshot_due: true,
                last_snapshot: Instant::now(),
            }),
            interval: Mutex::new(interval),
            sequence: AtomicU64::new(0),
            report_now: Notify::new(),
            outbound: Mutex::new(None),
            commands: TaskTracker::new(),
            session: AtomicU64::new(0),
            identities: Mutex::new(BTreeMap::new()),
        }
    }

    fn hello(&self) -> AgentMessage {
        AgentMessage {
            body: Some(agent_message::Body::Hello(Hello {
                hostname: self.hostname.clone(),
                agent_id: self.args.agent_id.clone().unwrap_or_default(),
                sidecar_version: VERSION.to_string(),
                driver_name: self.args.driver.clone(),
                driver_scope: self.volumes.driver.scope() as i32,
                zone: self.args.zone.clone(),
                max_attachments: self.args.max_attachments,
                instance_id: self.instance_id.clone(),
                features: self.features.clone(),
            })),
        }
    }

    /// Sends on the current stream, if any; false when it could not (a lost report is replaced by the
    /// next, which must then be a snapshot).
    fn send(&self, msg: AgentMessage) -> bool {
        let tx = lock(&self.outbound).clone();
        match tx {
            Some(tx) if tx.try_send(msg).is_ok() => true,
            Some(_) => {
                tracing::debug!("outbound queue full or closed; message dropped");
                false
            }
            None => false,
        }
    }

    /// Whether to look at `name` (a `Get`) for this report, or report the last look again. With a
    /// share, each volume is looked at once per report interval (a report sent early, after a command
    /// or a change of the share, reuses looks younger than that), and one neither urgent nor held whose
    /// facts are settled only every `--detail-interval`.
    fn due(&self, name: &str, urgent: bool, by_share: bool, held: bool) -> bool {
        if !by_share {
            return true;
        }
        let interval = lock(&self.interval).mul_f64(0.9);
        let detail = Duration::from(self.args.detail_interval);
        lock(&self.looks).get(name).is_none_or(|l| {
            let age = l.at.elapsed();
            if urgent || held || !l.settled {
                age >= interval
            } else {
                age >= detail
            }
        })
    }

    /// Builds one report: driver health, every observed volume (the share, or the Welcome's full set)
    /// and every volume held here, attachments.
    async fn build_report(&self) -> Report {
        let driver = &self.volumes.driver;
        // Capabilities only on (re)activation: a driver that stays up is asked once.
        driver.ensure_active().await;
        let (selector, share) = {
            let w = lock(&self.watch);
            (w.selector.clone(), w.share.clone())
        };
        let by_share = share.is_some();
        let watch = if by_share {
            VolumeSelector::default()
        } else {
            selector
        };
        let mut names: BTreeSet<String> = watch.names.iter().cloned().collect();
        let share = share.unwrap_or_default();
        names.extend(share.keys().cloned());
        let held: BTreeMap<String, _> = self
            .volumes
            .state
            .entries()
            .into_iter()
            .map(|e| (e.volume.clone(), e))
            .collect();
        names.extend(held.keys().cloned());
        let mut list_error = String::new();
        if !watch.prefixes.is_empty() {
            match driver.call(None, |c| async move { c.list().await }).await {
                Ok(vols) => names.extend(
                    vols.into_iter()
                        .map(|v| v.name)
                        .filter(|n| watch.prefixes.iter().any(|p| n.starts_with(p.as_str()))),
                ),
                Err(e) => list_error = e.to_string(),
            }
        }
        // A host-local driver lists only this host's volumes: one List says which of the share exist
        // here, and only those need a Get. A cluster-wide driver's List is the whole account (and may
        // exceed the reply cap), so there every volume gets its own Get instead.
        let listed: Option<BTreeSet<String>> =
            if by_share && driver.scope() == tether_proto::v1::DriverScope::Local {
                match driver.call(None, |c| async move { c.list().await }).await {
                    Ok(vols) => Some(vols.into_iter().map(|v| v.name).collect()),
                    Err(e) => {
                        list_error = e.to_string();
                        None
                    }
                }
            } else {
                None
            };
        let volumes: Vec<_> = futures::stream::iter(names)
            .map(|name| {
                let held = held.get(&name).cloned();
                let urgent = share.get(&name).copied().unwrap_or(false);
                let is_held = held
                    .as_ref()
                    .is_some_and(|h| h.phase == crate::state::Phase::Held);
                let absent_here = !is_held && listed.as_ref().is_some_and(|l| !l.contains(&name));
                let due = !absent_here && self.due(&name, urgent, by_share, is_held);
                async move {
                    if absent_here {
                        return volume_report(&name, None, held.as_ref(), None, "");
                    }
                    if !due && let Some(l) = lock(&self.looks).get(&name) {
                        return l.report.clone();
                    }
                    let got = driver
                        .call(None, |c| {
                            let n = name.clone();
                            async move { c.get(&n).await }
                        })
                        .await;
                    let usage = match held
                        .as_ref()
                        .filter(|h| h.phase == crate::state::Phase::Held)
                    {
                        Some(h) => measure(std::path::Path::new(&h.mountpoint)).await.ok(),
                        None => None,
                    };
                    let (found, err) = match got {
                        Ok(v) => (v, String::new()),
                        Err(e) if e.is_not_found() => (None, String::new()),
                        Err(e) => (None, e.to_string()),
                    };
                    // The freshest word on the volume replaces an older command error.
                    self.volumes
                        .set_error(&name, Some(err.as_str()).filter(|e| !e.is_empty()));
                    let report = volume_report(&name, found.as_ref(), held.as_ref(), usage, &err);
                    if by_share {
                        let mut looks = lock(&self.looks);
                        let settled = looks.get(&name).is_some_and(|l| l.report == report);
                        looks.insert(
                            name.clone(),
                            Look {
                                report: report.clone(),
                                at: Instant::now(),
                                settled,
                            },
                        );
                    }
                    report
                }
            })
            .buffered(8)
            .collect()
            .await;
        if by_share {
            // Looks at volumes no longer observed are of no use.
            let keep: BTreeSet<&str> = volumes.iter().map(|v| v.name.as_str()).collect();
            lock(&self.looks).retain(|n, _| keep.contains(n.as_str()));
        }
        let mut health = driver.health();
        if health.healthy && !list_error.is_empty() {
            health.error = list_error;
        }
        let mut report = Report {
            sequence: self.sequence.fetch_add(1, Ordering::SeqCst) + 1,
            driver: Some(health),
            volumes,
            attachments_used: self.volumes.attachments_used(),
            delta: false,
            removed: Vec::new(),
        };
        if by_share {
            self.as_delta(&mut report);
        }
        crate::bounds::report(&mut report);
        report
    }

    /// Turns a snapshot into the changes since the last report on this stream, unless a snapshot is due.
    fn as_delta(&self, report: &mut Report) {
        let mut sent = lock(&self.sent);
        let snapshot_interval = Duration::from(self.args.snapshot_interval);
        let now: HashMap<String, VolumeReport> = report
            .volumes
            .iter()
            .map(|v| (v.name.clone(), v.clone()))
            .collect();
        if sent.snapshot_due || sent.last_snapshot.elapsed() >= snapshot_interval {
            sent.snapshot_due = false;
            sent.last_snapshot = Instant::now();
            sent.volumes = now;
            sent.resend.clear();
            return;
        }
        report.delta = true;
        let resend = std::mem::take(&mut sent.resend);
        report
            .volumes
            .retain(|v| resend.contains(&v.name) || sent.volumes.get(&v.name) != Some(v));
        report.removed = sent
            .volumes
            .keys()
            .filter(|n| !now.contains_key(*n))
            .cloned()
            .collect();
        report.removed.sort();
        sent.volumes = now;
    }

    /// Reports every interval and whenever asked, until `stop`.
    pub(crate) async fn reporter(self: Arc<Self>, stop: CancellationToken) {
        loop {
            self.volumes.retry_pending().await;
            let report = self.build_report().await;
            tracing::debug!(
                sequence = report.sequence,
                delta = report.delta,
                volumes = report.volumes.len(),
                healthy = report.driver.as_ref().is_some_and(|d| d.healthy),
                "report"
            );
            let sent = self.send(AgentMessage {
                body: Some(agent_message::Body::Report(report)),
            });
            if !sent {
                lock(&self.sent).snapshot_due = true;
            }
            let interval = *lock(&self.interval);
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
                () = self.report_now.notified() => {}
            }
        }
    }

    /// Dials the scheduler until `stop`, with jittered exponential backoff between attempts. A standby's
    /// refusal that names the leader is followed at once (once per refusal: two standbys naming each
    /// other still back off).
    pub(crate) async fn connection_loop(
        self: Arc<Self>,
        mut targets: Targets,
        stop: CancellationToken,
    ) {
        let min = Duration::from(self.args.reconnect_min).max(Duration::from_millis(1));
        let max = Duration::from(self.args.reconnect_max).max(min);
        let mut delay = min;
        let mut leader: Option<String> = None;
        while !stop.is_cancelled() {
            let started = Instant::now();
            let followed = leader.is_some();
            let url = match leader.take() {
                Some(url) => Ok(url),
                None => targets.next().await,
            };
            match url {
                Ok(url) => match self.session(&url, &stop).await {
                    Ok(()) => tracing::info!(scheduler = %url, "scheduler stream closed"),
                    Err(e) => {
                        tracing::warn!(scheduler = %url, error = %e.message, "scheduler stream failed");
                        leader = e.leader.map(|a| targets.leader_url(&a));
                    }
                },
                Err(e) => tracing::warn!(error = %e, "cannot tell which scheduler leads"),
            }
            *lock(&self.outbound) = None;
            if stop.is_cancelled() {
                break;
            }
            if let Some(url) = &leader
                && !followed
            {
                tracing::info!(leader = %url, "a standby named the leader; dialling it");
                continue;
            }
            // A session that lived a while resets the backoff.
            if started.elapsed() > max {
                delay = min;
            }
            let jittered = delay.mul_f64(rand::rng().random_range(0.5..1.0));
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(jittered) => {}
            }
            delay = (delay * 2).min(max);
        }
    }

    async fn session(
        self: &Arc<Self>,
        url: &str,
        stop: &CancellationToken,
    ) -> Result<(), SessionError> {
        let endpoint = self
            .args
            .endpoint(url)?
            .connect_timeout(Duration::from_secs(5))
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10));
        let channel = tokio::select! {
            r = endpoint.connect() => r.map_err(|e| format!("connecting to {url}: {e}"))?,
            () = stop.cancelled() => return Ok(()),
        };
        let mut client = AgentChannelClient::new(channel);
        let (tx, rx) = mpsc::channel::<AgentMessage>(256);
        tx.try_send(self.hello()).map_err(|e| e.to_string())?;
        let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        if let Some(path) = &self.args.token_file {
            let token = tokio::fs::read_to_string(path)
                .await
                .map_err(|e| format!("reading token file {}: {e}", path.display()))?;
            let value = tether_proto::client::bearer(&token)
                .map_err(|_| format!("token in {} is not valid header text", path.display()))?;
            request.metadata_mut().insert("authorization", value);
        }
        let response = tokio::select! {
            r = client.connect(request) => r.map_err(|s| SessionError {
                message: format!("Connect: {} {}", s.code(), s.message()),
                leader: crate::leader::leader_of(&s),
            })?,
            () = stop.cancelled() => return Ok(()),
        };
        let mut inbound = response.into_inner();
        tracing::info!(scheduler = %url, "connected to scheduler");
        // A new stream: whatever scheduler answers assigns (or not) anew, and hears a snapshot first.
        lock(&self.watch).share = None;
        lock(&self.sent).snapshot_due = true;
        self.session.fetch_add(1, Ordering::SeqCst);
        *lock(&self.outbound) = Some(tx.clone());
        loop {
            let msg = tokio::select! {
                m = inbound.message() => m,
                () = stop.cancelled() => return Ok(()),
            };
            match msg {
                Ok(Some(SchedulerMessage { body: Some(body) })) => self.handle(body, &tx),
                Ok(Some(SchedulerMessage { body: None })) => {
                    tracing::debug!("ignoring a scheduler message of an unknown kind");
                }
                Ok(None) => return Ok(()),
                Err(s) => return Err(format!("{} {}", s.code(), s.message()).into()),
            }
        }
    }

    fn handle(self: &Arc<Self>, body: scheduler_message::Body, tx: &mpsc::Sender<AgentMessage>) {
        match body {
            scheduler_message::Body::Welcome(w) => {
                tracing::info!(
                    names = w.watch.as_ref().map_or(0, |s| s.names.len()),
                    by_share = w.watch.is_none(),
                    "welcome"
                );
                // Without `watch` the share comes (or stays) by WatchDelta.
                if let Some(selector) = w.watch {
                    let mut watch = lock(&self.watch);
                    watch.selector = selector;
                    watch.share = None;
                }
                if w.report_interval_ms > 0 {
                    *lock(&self.interval) = Duration::from_millis(w.report_interval_ms.max(10));
                }
                lock(&self.sent).snapshot_due = true;
                self.report_now.notify_one();
            }
            scheduler_message::Body::WatchDelta(d) => self.apply_delta(d),
            scheduler_message::Body::Prepare(p) => self.spawn_prepare(p, tx.clone()),
            scheduler_message::Body::Release(r) => self.spawn_release(r, tx.clone()),
            scheduler_message::Body::InstallIdentity(i) => self.spawn_install(i, tx.clone()),
        }
    }

    /// Applies a change of the share; a report follows at once so the new volumes are seen.
    fn apply_delta(&self, d: WatchDelta) {
        let mut watch = lock(&self.watch);
        let share = watch.share.get_or_insert_with(BTreeMap::new);
        if d.reset {
            share.clear();
        }
        for name in &d.remove {
            share.remove(name);
        }
        let mut added = Vec::with_capacity(d.add.len());
        for v in d.add {
            // Only names Docker accepts: a name the driver could never hold is a scheduler's mistake.
            match crate::volumes::validate_name(&v.name) {
                Ok(()) => {
                    added.push(v.name.clone());
                    share.insert(v.name, v.urgent);
                }
                Err(e) => tracing::warn!(error = %e, "WatchDelta: volume ignored"),
            }
        }
        tracing::debug!(
            reset = d.reset,
            removed = d.remove.len(),
            share = share.len(),
            "watch delta"
        );
        drop(watch);
        // The scheduler forgets this sidecar's word on a volume it moves away, and may hand it back
        // before another report is built: whatever a delta adds is told afresh in the next report, never
        // taken for known because an earlier one carried it. (A removed name stays in `sent` so that the
        // next report names it in `removed`.)
        let mut sent = lock(&self.sent);
        if d.reset {
            sent.snapshot_due = true;
        }
        for name in &added {
            sent.volumes.remove(name);
        }
        drop(sent);
        self.report_now.notify_one();
    }

    fn spawn_prepare(self: &Arc<Self>, p: Prepare, tx: mpsc::Sender<AgentMessage>) {
        let rt = self.clone();
        let received = Instant::now();
        let key = (self.session.load(Ordering::SeqCst), p.command_id);
        let prepared = p.identity.as_ref().map(|i| PreparedIdentity {
            node_id: p.node_id,
            volume: i.volume.clone(),
            dir: i.dir.clone(),
        });
        self.commands.spawn(async move {
            tracing::info!(
                command_id = p.command_id,
                node_id = p.node_id,
                volumes = ?p.volumes,
                owner = ?p.owner,
                identity = p.identity.as_ref().map(|i| i.volume.as_str()),
                "prepare"
            );
            let outcome = match p.owner.as_ref().map(Owner::from_proto).transpose() {
                Ok(owner) => {
                    let spec = PrepareSpec {
                        node_id: p.node_id,
                        volumes: p.volumes,
                        create_missing: p.create_missing,
                        create_options: p.create_options.into_iter().collect(),
                        deadline: (p.deadline_ms > 0)
                            .then(|| received + Duration::from_millis(p.deadline_ms)),
                        owner,
                        identity: p.identity,
                    };
                    rt.volumes.prepare(&spec).await
                }
                Err(e) => Outcome::failed(e.to_string()),
            };
            if let Some(prepared) = prepared.filter(|_| outcome.error.is_none()) {
                let mut identities = lock(&rt.identities);
                // Those of earlier streams can no longer be named.
                identities.retain(|(session, _), _| *session == key.0);
                identities.insert(key, prepared);
            }
            rt.finish(p.command_id, outcome, &tx).await;
        });
    }

    fn spawn_release(self: &Arc<Self>, r: Release, tx: mpsc::Sender<AgentMessage>) {
        let rt = self.clone();
        self.commands.spawn(async move {
            tracing::info!(command_id = r.command_id, volumes = ?r.volumes, "release");
            lock(&rt.identities).retain(|_, i| !r.volumes.contains(&i.volume));
            let outcome = rt.volumes.release(&r.volumes).await;
            rt.finish(r.command_id, outcome, &tx).await;
        });
    }

    /// Whether `i` names a Prepare of this stream that generated a key for its node, volume and dir (an
    /// older scheduler names none: 0, and only the volume's mount is checked).
    fn install_refusal(&self, i: &InstallIdentity) -> Option<String> {
        if i.prepare_command_id == 0 {
            return None;
        }
        let key = (self.session.load(Ordering::SeqCst), i.prepare_command_id);
        let want = PreparedIdentity {
            node_id: i.node_id,
            volume: i.volume.clone(),
            dir: i.dir.clone(),
        };
        match lock(&self.identities).get(&key) {
            Some(had) if *had == want => None,
            Some(had) => Some(format!(
                "InstallIdentity for Prepare {}: that Prepare generated the key of node {} in {:?} of volume {:?}, not of node {} in {:?} of volume {:?}",
                i.prepare_command_id, had.node_id, had.dir, had.volume, i.node_id, i.dir, i.volume
            )),
            None => Some(format!(
                "InstallIdentity for Prepare {}: this sidecar holds no key that Prepare generated (not prepared here, failed, or its volume released)",
                i.prepare_command_id
            )),
        }
    }

    fn spawn_install(self: &Arc<Self>, i: InstallIdentity, tx: mpsc::Sender<AgentMessage>) {
        let rt = self.clone();
        let refusal = self.install_refusal(&i);
        self.commands.spawn(async move {
            // Never the password or the certificates: only where they go.
            tracing::info!(
                command_id = i.command_id,
                prepare_command_id = i.prepare_command_id,
                node_id = i.node_id,
                volume = %i.volume,
                dir = %i.dir,
                "install identity"
            );
            let owner = match refusal {
                Some(e) => Err(e),
                None => i
                    .owner
                    .as_ref()
                    .map(Owner::from_proto)
                    .transpose()
                    .map_err(|e| e.to_string()),
            };
            let outcome = match owner {
                Ok(owner) => {
                    let spec = InstallSpec {
                        volume: i.volume,
                        dir: i.dir,
                        certificate_pem: i.certificate_pem,
                        ca_pem: i.ca_pem,
                        password: i.password,
                        owner,
                    };
                    rt.volumes.install_identity(&spec).await
                }
                Err(e) => Outcome::failed(e),
            };
            rt.finish(i.command_id, outcome, &tx).await;
        });
    }

    async fn finish(&self, command_id: u64, outcome: Outcome, tx: &mpsc::Sender<AgentMessage>) {
        if let Some(e) = &outcome.error {
            tracing::warn!(command_id, error = %e, "command failed");
        }
        let mut result = CommandResult {
            command_id,
            ok: outcome.error.is_none(),
            error: outcome.error.unwrap_or_default(),
            volumes: outcome.volumes,
            csr_pem: outcome.csr_pem.unwrap_or_default(),
        };
        crate::bounds::result(&mut result);
        lock(&self.sent)
            .resend
            .extend(result.volumes.iter().map(|v| v.name.clone()));
        // On the stream the command came on; if it closed, the scheduler learns the state from reports.
        let _ = tx
            .send(AgentMessage {
                body: Some(agent_message::Body::Result(result)),
            })
            .await;
        self.report_now.notify_one();
    }

    /// Stops taking commands, waits for in-flight ones up to the grace period, then releases every mount.
    pub(crate) async fn drain(&self) -> Result<(), SidecarError> {
        let grace = Duration::from(self.args.grace_period);
        self.commands.close();
        if tokio::time::timeout(grace, self.commands.wait())
            .await
            .is_err()
        {
            tracing::warn!("grace period over; abandoning in-flight driver calls");
            self.volumes.abort_calls();
            self.commands.wait().await;
        }
        self.volumes
            .release_all()
            .await
            .map_err(SidecarError::Release)
    }
}
