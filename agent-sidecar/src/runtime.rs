//! The sidecar's runtime: the stream to the scheduler (Hello, Welcome, commands, results), the reporter
//! (periodic and on demand) and the shutdown sequence. Owns no protocol details of the driver.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use rand::Rng;
use tether_proto::v1::agent_channel_client::AgentChannelClient;
use tether_proto::v1::{
    AgentMessage, CommandResult, Hello, InstallIdentity, Prepare, Release, Report,
    SchedulerMessage, VolumeSelector, agent_message, scheduler_message,
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
pub const FEATURES: [&str; 2] = ["volume_owner", "node_identity"];

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
    pub(crate) volumes: Arc<Volumes>,
    watch: Mutex<VolumeSelector>,
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
    pub(crate) fn new(args: Args, hostname: String, volumes: Arc<Volumes>) -> Self {
        let interval = Duration::from(args.report_interval).max(Duration::from_millis(10));
        Runtime {
            args,
            hostname,
            instance_id: uuid::Uuid::new_v4().to_string(),
            volumes,
            watch: Mutex::new(VolumeSelector::default()),
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
                features: FEATURES.iter().map(|f| f.to_string()).collect(),
            })),
        }
    }

    /// Sends on the current stream, if any (reports are snapshots: a lost one is replaced by the next).
    fn send(&self, msg: AgentMessage) {
        let tx = lock(&self.outbound).clone();
        if let Some(tx) = tx
            && tx.try_send(msg).is_err()
        {
            tracing::debug!("outbound queue full or closed; message dropped");
        }
    }

    /// Builds one report: driver health, every watched volume, attachments.
    async fn build_report(&self) -> Report {
        let driver = &self.volumes.driver;
        // One cheap call keeps health and scope fresh even with nothing to watch.
        let _ = driver
            .call(None, |c| async move { c.capabilities().await })
            .await;
        let watch = lock(&self.watch).clone();
        let mut names: BTreeSet<String> = watch.names.iter().cloned().collect();
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
        let volumes: Vec<_> = futures::stream::iter(names)
            .map(|name| {
                let held = held.get(&name).cloned();
                async move {
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
                    volume_report(&name, found.as_ref(), held.as_ref(), usage, &err)
                }
            })
            .buffered(8)
            .collect()
            .await;
        let mut health = driver.health();
        if health.healthy && !list_error.is_empty() {
            health.error = list_error;
        }
        let mut report = Report {
            sequence: self.sequence.fetch_add(1, Ordering::SeqCst) + 1,
            driver: Some(health),
            volumes,
            attachments_used: self.volumes.attachments_used(),
        };
        crate::bounds::report(&mut report);
        report
    }

    /// Reports every interval and whenever asked, until `stop`.
    pub(crate) async fn reporter(self: Arc<Self>, stop: CancellationToken) {
        loop {
            self.volumes.retry_pending().await;
            let report = self.build_report().await;
            tracing::debug!(
                sequence = report.sequence,
                healthy = report.driver.as_ref().is_some_and(|d| d.healthy),
                "report"
            );
            self.send(AgentMessage {
                body: Some(agent_message::Body::Report(report)),
            });
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
                    "welcome"
                );
                *lock(&self.watch) = w.watch.unwrap_or_default();
                if w.report_interval_ms > 0 {
                    *lock(&self.interval) = Duration::from_millis(w.report_interval_ms.max(10));
                }
                self.report_now.notify_one();
            }
            scheduler_message::Body::Prepare(p) => self.spawn_prepare(p, tx.clone()),
            scheduler_message::Body::Release(r) => self.spawn_release(r, tx.clone()),
            scheduler_message::Body::InstallIdentity(i) => self.spawn_install(i, tx.clone()),
        }
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
