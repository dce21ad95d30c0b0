//! The scheduler's event loop: the one place where the core meets the world.
//!
//! Events from the Mesos subscription, the sidecars and the admin API are converted to domain types and
//! handed to the core with the current time; after each event the core's commands are executed strictly in
//! order. A `Persist` is written (fsynced, off the loop's thread) before any later command runs, so the
//! slot's new task id is durable before the LAUNCH that uses it is sent. Mesos calls go to one sender task
//! that posts them in order without blocking the loop.
//!
//! [`run`] is the whole scheduler: [`crate::server::bind`], then [`crate::server::Bound::serve`], which
//! runs this loop.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tether_core::Core;
use tether_core::command::{Command, MesosCommand, SidecarCommand, WatchEvent};
use tether_core::domain::{EsCluster, TaskState};
use tether_core::ids::{AgentId, FrameworkId, Hostname, NodeId, OfferId};
use tether_core::state::StateWrite;
use tether_core::view::NodePhase;
use tether_mesos::client::Notification;
use tether_mesos::model::{self, Call, EventType};
use tether_proto::v1 as pb;
use tether_proto::v1::agent_message::Body as AgentBody;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::admin::AdminRequest;
use crate::agent_channel::{ConnId, SidecarEvent};
use crate::agent_identity::{self, AgentSecret, Credential};
use crate::args::Args;
use crate::convert;
use crate::elasticsearch::{self, EsClient, RootAnswer, RootTarget};
use crate::mesos::CurrentClient;
use crate::metrics::Metrics;
use crate::presentation::{self, Clock, ClusterFacts};
use crate::store::StateStore;
use crate::supervisor::Supervisor;
use crate::taskinfo::TaskOptions;

pub use crate::error::SchedulerError;

/// Runs the scheduler until `shutdown` is cancelled or a fatal error: [`crate::server::bind`] (flags,
/// files, listeners, the embedded store), then [`crate::server::Bound::serve`]. Tasks keep running when
/// it stops: SIGTERM never wipes state or kills tasks.
///
/// With `--state zk://...` the instance first stands by in the leader election (answering `GetCluster`
/// with who leads, refusing everything else) and acts only once elected. On losing the session it stops
/// the Mesos driver and refuses calls first, then returns [`SchedulerError::LeadershipLost`].
pub async fn run(args: Args, shutdown: CancellationToken) -> Result<(), SchedulerError> {
    crate::server::bind(args).await?.serve(shutdown).await
}

/// What the loop reads, besides the core's timer.
#[derive(Debug)]
pub struct Inputs {
    pub mesos: mpsc::Receiver<Notification>,
    pub sidecars: mpsc::Receiver<SidecarEvent>,
    pub admin: mpsc::Receiver<AdminRequest>,
    /// What the Elasticsearch poller observed, every `--es-poll-interval`.
    pub es: mpsc::Receiver<EsCluster>,
}

/// How the Elasticsearch poller asks.
#[derive(Debug, Clone)]
pub struct EsPoll {
    /// Its timeout is below the interval.
    pub client: EsClient,
    pub interval: Duration,
}

/// The settings the loop needs from the flags.
#[derive(Debug, Clone)]
pub struct LoopSettings {
    /// How tasks are rendered beyond the core's launch spec.
    pub task: TaskOptions,
    /// `--role`, scoping SUPPRESS and REVIVE.
    pub roles: Vec<String>,
    /// `--external-volume-driver`.
    pub driver: String,
    pub framework_name: String,
    /// The cluster CA and `elastic` password when security is on: InstallIdentity commands are signed
    /// with it, and the Elasticsearch client trusts it and logs in with the password.
    pub secrets: Option<std::sync::Arc<crate::cluster_ca::ClusterSecrets>>,
    /// With `--state zk://` and security on: `secrets` is filled by the leader from ZooKeeper (the
    /// operator's parts, given here, take precedence).
    pub secrets_in_store: Option<crate::cluster_ca::OperatorSecrets>,
    /// Asks running nodes what cluster they belong to.
    pub es: EsClient,
    /// The poller (always on: health, shards and safe removal need it; storage fencing reads its
    /// master view).
    pub es_poll: EsPoll,
    /// The agent-token secret's file with the embedded store (`<state dir>/agent-token.key`).
    pub agent_secret_file: std::path::PathBuf,
}

/// Where the loop's commands and events go.
#[derive(Debug)]
pub struct Outputs {
    /// The call sender's queue.
    pub calls: mpsc::UnboundedSender<Call>,
    /// `WatchEvents` subscribers.
    pub events: broadcast::Sender<pb::ClusterEvent>,
    pub metrics: Metrics,
    /// The subscribed driver, for operator-API calls (`MarkAgentGone`).
    pub operator: CurrentClient,
    /// The HTTP addresses of the nodes the Elasticsearch poller asks.
    pub es_targets: watch::Sender<Vec<String>>,
    /// The agent-token secret the agent channel verifies with: replaced on a mint's creation or a
    /// rotation, once stored.
    pub agent_secret: watch::Sender<Option<Arc<AgentSecret>>>,
}

/// A connected sidecar, by host.
#[derive(Debug)]
struct SidecarConn {
    conn: ConnId,
    outbox: mpsc::Sender<Box<pb::SchedulerMessage>>,
    /// Only a stream with the same credential may take this one's place.
    credential: Credential,
}

/// Everything the loop owns besides the inputs: the core, the store, and where commands go.
#[derive(Debug)]
pub struct Shell {
    core: Core,
    store: StateStore,
    clock: Clock,
    calls: mpsc::UnboundedSender<Call>,
    sidecars: HashMap<Hostname, SidecarConn>,
    hosts_by_conn: HashMap<ConnId, Hostname>,
    events: broadcast::Sender<pb::ClusterEvent>,
    metrics: Metrics,
    operator: CurrentClient,
    es_targets: watch::Sender<Vec<String>>,
    agent_secret: watch::Sender<Option<Arc<AgentSecret>>>,
    settings: LoopSettings,
    /// The subscribed master's URL (empty while not subscribed).
    master: String,
    /// This instance's advertised admin address when it won a ZooKeeper election (empty otherwise).
    leader_address: String,
    /// Where the answers of `Command::Elasticsearch` calls come back (the receiver is the loop's).
    es_answers: mpsc::Sender<EsCallAnswer>,
    es_answers_rx: Option<mpsc::Receiver<EsCallAnswer>>,
    /// The list every OFFERS event is converted into, kept (empty) between events so the core's round
    /// never frees it: as large as the largest event (about 260 bytes an offer).
    offer_list: Vec<tether_core::domain::Offer>,
}

/// How long one Elasticsearch call may take (a voting exclusion waits up to Elasticsearch's own 30 s
/// for the node to leave the voting configuration).
const ES_CALL_TIMEOUT: Duration = Duration::from_secs(45);

/// The outcome of one `Command::Elasticsearch` call.
#[derive(Debug)]
pub struct EsCallAnswer {
    pub call_id: u64,
    pub result: Result<(), String>,
}

/// How often the core is told the wall-clock time (certificate renewal is timed in days).
const WALL_CLOCK_INTERVAL: Duration = Duration::from_secs(60);

/// How often running nodes are asked `GET /` (until every one reports the cluster's UUID, bootstrap is
/// not confirmed, and a node joining another cluster is flagged at most this late).
const ROOT_PROBE_INTERVAL: Duration = Duration::from_secs(2);

impl Shell {
    /// A loop around `core`, writing through `store`, sending what the core asks for to `outputs`.
    #[must_use]
    pub fn new(
        core: Core,
        store: StateStore,
        clock: Clock,
        outputs: Outputs,
        settings: LoopSettings,
        leader_address: String,
    ) -> Shell {
        let Outputs {
            calls,
            events,
            metrics,
            operator,
            es_targets,
            agent_secret,
        } = outputs;
        let (es_answers, es_answers_rx) = mpsc::channel(256);
        Shell {
            core,
            store,
            clock,
            calls,
            sidecars: HashMap::new(),
            hosts_by_conn: HashMap::new(),
            events,
            metrics,
            operator,
            es_targets,
            agent_secret,
            settings,
            master: String::new(),
            leader_address,
            es_answers,
            es_answers_rx: Some(es_answers_rx),
            offer_list: Vec::new(),
        }
    }

    /// Runs until `shutdown` (`Ok`), or until leadership is `lost`, a fatal Mesos answer, a failed state
    /// write, or a task of `tasks` ending (`Err`). The loop is never cancelled halfway through executing
    /// the core's commands: every stop is seen between two inputs.
    pub async fn run(
        &mut self,
        inputs: &mut Inputs,
        tasks: &mut Supervisor,
        shutdown: &CancellationToken,
        lost: &CancellationToken,
    ) -> Result<(), SchedulerError> {
        let mut gauges = tokio::time::interval(Duration::from_secs(1));
        let mut probe = tokio::time::interval(ROOT_PROBE_INTERVAL);
        probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Its first tick is at once: the core learns the wall-clock time as this term begins.
        let mut wall = tokio::time::interval(WALL_CLOCK_INTERVAL);
        wall.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (roots_tx, roots) = mpsc::channel::<RootAnswer>(256);
        let answers = self
            .es_answers_rx
            .take()
            .unwrap_or_else(|| mpsc::channel(1).1);
        let mut fair = FairInputs::new(inputs, roots, answers);
        self.drain().await?;
        loop {
            let wake = self.core.poll_timeout().map(|at| {
                let now = self.clock.now();
                tokio::time::Instant::now() + Duration::from_millis(at.0.saturating_sub(now.0))
            });
            // Biased: once leadership is lost, no further event is handled; timers come before the inputs
            // (they are ready only when due, so they starve nothing); the inputs take turns in
            // [`FairInputs`], and come before the supervisor's report so that a Mesos driver's fatal
            // answer (queued before the driver returned) is read before the driver's end is.
            let step: Result<(), SchedulerError> = tokio::select! {
                biased;
                () = lost.cancelled() => Err(SchedulerError::LeadershipLost(
                    "the ZooKeeper session was lost or the election znode is gone".into(),
                )),
                () = shutdown.cancelled() => return Ok(()),
                () = sleep_until(wake) => { let now = self.clock.now(); self.core.handle_timeout(now); Ok(()) }
                _ = gauges.tick() => { self.refresh_gauges(); Ok(()) }
                _ = probe.tick() => { self.probe_roots(&roots_tx); Ok(()) }
                _ = wall.tick() => { self.tell_wall_clock(); Ok(()) }
                Some(input) = fair.next() => {
                    let sidecar = matches!(input, Input::Sidecar(_));
                    let step = self.on_input(input).await;
                    if sidecar {
                        // Sidecar events that are already waiting are handled before the commands
                        // run: after a failover, 10,000 hellos arrive at once, and the core
                        // recomputes which sidecar observes which volume once per drain, so one
                        // drain per hello made the reconnection quadratic in the agent count.
                        for _ in 0..FAIR_BATCH {
                            let Some(e) = fair.try_next_sidecar() else { break };
                            self.on_sidecar(e);
                        }
                    }
                    step
                }
                e = tasks.failed() => Err(e),
            };
            step?;
            self.drain().await?;
        }
    }

    async fn on_input(&mut self, input: Input) -> Result<(), SchedulerError> {
        match input {
            Input::Mesos(n) => self.on_mesos(n),
            Input::Sidecar(e) => {
                self.on_sidecar(*e);
                Ok(())
            }
            Input::Admin(r) => self.on_admin(r).await,
            Input::Es(v) => {
                let now = self.clock.now();
                self.metrics.set_es(&v);
                self.core.handle_es_cluster(v, now);
                Ok(())
            }
            Input::EsAnswer(a) => {
                let now = self.clock.now();
                if let Err(e) = &a.result {
                    tracing::warn!(call_id = a.call_id, error = %e, "Elasticsearch call failed");
                }
                self.core.handle_es_call_result(a.call_id, a.result, now);
                Ok(())
            }
            Input::Root(a) => {
                let now = self.clock.now();
                self.core
                    .handle_es_root(a.node_id, &a.task_id, &a.cluster_uuid, now);
                Ok(())
            }
        }
    }

    /// Executes the core's commands in order. A store failure stops everything: acting on state that
    /// could not be persisted would break "nothing acknowledged is lost".
    async fn drain(&mut self) -> Result<(), SchedulerError> {
        let mut batch: Vec<StateWrite> = Vec::new();
        while let Some(cmd) = self.core.poll_command() {
            let cmd = match cmd {
                Command::Persist(w) => {
                    batch.push(w);
                    continue;
                }
                other => other,
            };
            self.flush(&mut batch).await?;
            match cmd {
                Command::Persist(_) => {}
                Command::Mesos(m) => self.mesos(m),
                Command::Sidecar { host, command } => self.sidecar(&host, &command),
                Command::Watch(e) => self.watch(&e),
                Command::Elasticsearch { call_id, call } => self.elasticsearch(call_id, call),
            }
        }
        self.flush(&mut batch).await
    }

    /// Consecutive `Persist` writes go to the store as one batch, durable before this returns.
    async fn flush(&mut self, batch: &mut Vec<StateWrite>) -> Result<(), SchedulerError> {
        if batch.is_empty() {
            return Ok(());
        }
        let t = Instant::now();
        self.store.write(std::mem::take(batch)).await?;
        self.metrics
            .state_write_seconds
            .observe(t.elapsed().as_secs_f64());
        Ok(())
    }

    fn mesos(&mut self, m: MesosCommand) {
        if let MesosCommand::Accept { launch, .. } = &m {
            self.metrics.launches.inc();
            let relaunch = self
                .core
                .persisted()
                .slots
                .get(&launch.node_id)
                .is_some_and(|s| s.generation > 1);
            if relaunch {
                self.metrics.relaunches.inc();
            }
            tracing::info!(node_id = %launch.node_id, task_id = %launch.task_id.as_str(),
                agent = %launch.host.as_str(), "launching");
        }
        let call = convert::mesos_call(&m, &self.settings.task, &self.settings.roles);
        let _ = self.calls.send(call);
    }

    fn sidecar(&mut self, host: &Hostname, command: &SidecarCommand) {
        let message = match command {
            SidecarCommand::InstallIdentity {
                command_id,
                prepare_id,
                node_id,
                identity,
                csr_pem,
                owner,
            } => match self.sign(identity, csr_pem) {
                Ok((cert, ca, password)) => {
                    let now = self.clock.now();
                    // Persisted in this drain, before the InstallIdentity answer can let the launch go on: the
                    // node's renewal is timed from it.
                    if let Err(e) =
                        self.core
                            .handle_certificate_issued(*node_id, cert.not_after_unix_s, now)
                    {
                        tracing::warn!(node_id = %node_id, error = %e, "certificate expiry not recorded");
                    }
                    convert::install_identity(
                        (*command_id, *prepare_id),
                        *node_id,
                        identity,
                        *owner,
                        cert.pem,
                        ca,
                        password,
                    )
                }
                Err(error) => {
                    tracing::warn!(node_id = %node_id, %error, "cannot sign the node's certificate");
                    let now = self.clock.now();
                    self.core.handle_sidecar_result(
                        host,
                        tether_core::domain::CommandResult {
                            command_id: *command_id,
                            ok: false,
                            error: Some(format!("signing the node's certificate: {error}")),
                            volumes: Vec::new(),
                            csr_pem: None,
                        },
                        now,
                    );
                    return;
                }
            },
            other => match convert::sidecar_command(other) {
                Some(m) => m,
                None => return,
            },
        };
        let Some(conn) = self.sidecars.get(host) else {
            // The core times the command out; nothing else to do.
            tracing::warn!(host = %host.as_str(), "no sidecar connected for a command");
            return;
        };
        if conn.outbox.try_send(Box::new(message)).is_err() {
            tracing::warn!(host = %host.as_str(), "sidecar outbox full or closed; command dropped");
        }
    }

    /// Makes an Elasticsearch call off the loop, through the running nodes in turn; the answer comes
    /// back as an input.
    fn elasticsearch(&self, call_id: u64, call: tether_core::command::EsCall) {
        tracing::info!(call_id, call = %call, "Elasticsearch call");
        let client = self.settings.es.clone();
        let targets = self.es_targets.borrow().clone();
        let answers = self.es_answers.clone();
        tokio::spawn(async move {
            let result = elasticsearch::execute(&client, &targets, &call, ES_CALL_TIMEOUT).await;
            let _ = answers.send(EsCallAnswer { call_id, result }).await;
        });
    }

    /// A watch event goes to the metrics, the log and `WatchEvents` subscribers.
    fn watch(&mut self, e: &WatchEvent) {
        if let WatchEvent::OffersDeclined { by_reason } = e {
            for (kind, n) in by_reason {
                self.metrics.declined(*kind, *n);
            }
        }
        let event = presentation::cluster_event(e, self.clock.unix_ms(self.clock.now()));
        fn text(s: &str) -> Option<&str> {
            (!s.is_empty()).then_some(s)
        }
        // A warning (e.g. a start-up flag the stored configuration overrides) is one an operator acts on.
        if event.kind == "warning" {
            tracing::warn!(
                kind = event.kind.as_str(),
                node_id = event.node_id,
                host = text(&event.host),
                task_id = text(&event.task_id),
                "{}",
                event.message
            );
        } else {
            tracing::info!(
                kind = event.kind.as_str(),
                node_id = event.node_id,
                host = text(&event.host),
                task_id = text(&event.task_id),
                "{}",
                event.message
            );
        }
        let _ = self.events.send(event);
    }

    fn on_mesos(&mut self, n: Notification) -> Result<(), SchedulerError> {
        let now = self.clock.now();
        match n {
            Notification::Subscribed {
                framework_id,
                master,
                ..
            } => {
                self.master = master
                    .and_then(|m| {
                        m.address.map(|a| {
                            format!(
                                "http://{}:{}",
                                a.hostname.or(a.ip).unwrap_or_default(),
                                a.port
                            )
                        })
                    })
                    .unwrap_or_default();
                self.metrics.mesos_subscribed.set(1);
                match FrameworkId::new(&framework_id.value) {
                    Ok(id) => self.core.handle_subscribed(id, now),
                    Err(e) => tracing::error!(error = %e, "master sent an invalid framework id"),
                }
            }
            Notification::Disconnected { reason } => {
                tracing::warn!(%reason, "Mesos subscription lost; resubscribing");
                self.master.clear();
                self.metrics.mesos_subscribed.set(0);
                self.core.handle_disconnected(now);
            }
            Notification::Fatal(e) => return Err(SchedulerError::Mesos(e)),
            Notification::Event(ev) => self.on_event(*ev),
        }
        Ok(())
    }

    fn on_event(&mut self, ev: model::Event) {
        let now = self.clock.now();
        match ev.event_type {
            EventType::Offers => {
                let offers = ev.offers.map(|o| o.offers).unwrap_or_default();
                self.metrics.offers_received.inc_by(offers.len() as u64);
                let mut good = std::mem::take(&mut self.offer_list);
                good.reserve(offers.len());
                for o in offers {
                    match convert::offer(&o, &self.clock) {
                        Ok(d) => good.push(d),
                        Err(e) => {
                            // Not placeable, but the master still counts it as ours until declined.
                            tracing::warn!(offer = %o.id, error = %e, "declining an offer the core cannot read");
                            let _ = self.calls.send(Call::decline(vec![o.id], None));
                        }
                    }
                }
                self.core.handle_offers_in(&mut good, now);
                self.offer_list = good;
            }
            EventType::Rescind => {
                if let Some(r) = ev.rescind {
                    match OfferId::new(&r.offer_id.value) {
                        Ok(id) => self.core.handle_rescind(&id, now),
                        Err(e) => tracing::warn!(error = %e, "rescind of an unreadable offer id"),
                    }
                }
            }
            EventType::InverseOffers => {
                let list = ev
                    .inverse_offers
                    .map(|o| o.inverse_offers)
                    .unwrap_or_default();
                let mut good = Vec::with_capacity(list.len());
                for o in list {
                    match convert::inverse_offer(&o, &self.clock) {
                        Ok(d) => good.push(d),
                        Err(e) => {
                            // Not about an agent: nothing of Tether's to move; say so to the operator.
                            tracing::warn!(inverse_offer = %o.id, error = %e, "accepting an inverse offer the core cannot read");
                            let _ = self
                                .calls
                                .send(Call::accept_inverse_offers(vec![o.id], None));
                        }
                    }
                }
                self.core.handle_inverse_offers(good, now);
            }
            EventType::RescindInverseOffer => {
                if let Some(r) = ev.rescind_inverse_offer {
                    match OfferId::new(&r.inverse_offer_id.value) {
                        Ok(id) => self.core.handle_rescind_inverse_offer(&id, now),
                        Err(e) => {
                            tracing::warn!(error = %e, "rescind of an unreadable inverse offer id")
                        }
                    }
                }
            }
            EventType::Update => {
                let Some(u) = ev.update else { return };
                match convert::status(&u.status) {
                    Ok(s) => self.core.handle_update(s, now),
                    Err(e) => {
                        tracing::warn!(error = %e, "status update the core cannot read");
                        // Acknowledge receipt anyway, or the agent resends it forever.
                        if let Some(call) = Call::acknowledge_status(&u.status) {
                            let _ = self.calls.send(call);
                        }
                    }
                }
            }
            EventType::Failure => {
                // An agent removal has no executor id; an executor exit is followed by task updates.
                if let Some(agent) = ev
                    .failure
                    .filter(|f| f.executor_id.is_none())
                    .and_then(|f| f.agent_id)
                {
                    match AgentId::new(&agent.value) {
                        Ok(id) => self.core.handle_agent_lost(&id, now),
                        Err(e) => tracing::warn!(error = %e, "failure of an unreadable agent id"),
                    }
                }
            }
            EventType::Error => {
                // The client turns ERROR into a Fatal notification; nothing to do here.
            }
            EventType::Heartbeat
            | EventType::Subscribed
            | EventType::Message
            | EventType::UpdateOperationStatus
            | EventType::Unknown => {}
        }
    }

    fn on_sidecar(&mut self, e: SidecarEvent) {
        let now = self.clock.now();
        match e {
            SidecarEvent::Connected {
                conn,
                hello,
                credential,
                outbox,
                verdict,
            } => {
                let answer = self.on_connected(conn, &hello, credential, outbox, now);
                let _ = verdict.send(answer);
            }
            SidecarEvent::Message { conn, body, .. } => {
                let Some(host) = self.hosts_by_conn.get(&conn).cloned() else {
                    return;
                };
                match body {
                    AgentBody::Report(r) => match convert::any_report(&r) {
                        Ok(convert::SidecarReport::Full(r)) => {
                            self.metrics.sidecar_reports.inc();
                            self.core.handle_sidecar_report(&host, r, now);
                        }
                        Ok(convert::SidecarReport::Delta { report, removed }) => {
                            self.metrics.sidecar_reports.inc();
                            self.core
                                .handle_sidecar_report_delta(&host, report, removed, now);
                        }
                        Err(e) => {
                            tracing::warn!(host = %host.as_str(), error = %e, "bad sidecar report ignored")
                        }
                    },
                    AgentBody::Result(r) => match convert::command_result(&r) {
                        Ok(r) => self.core.handle_sidecar_result(&host, r, now),
                        Err(e) => {
                            tracing::warn!(host = %host.as_str(), error = %e, "bad command result ignored")
                        }
                    },
                    AgentBody::Hello(_) => {}
                }
            }
            SidecarEvent::Disconnected { conn, reason } => {
                let Some(host) = self.hosts_by_conn.remove(&conn) else {
                    return;
                };
                if self.sidecars.get(&host).is_some_and(|c| c.conn == conn) {
                    self.sidecars.remove(&host);
                    self.metrics
                        .sidecars_connected
                        .set(self.sidecars.len() as i64);
                    tracing::warn!(host = %host.as_str(), %reason, "sidecar disconnected");
                    self.core.handle_sidecar_disconnected(&host, now);
                }
            }
        }
    }

    /// A stream that passed authentication takes its host's place, unless the Hello does not convert
    /// (INVALID_ARGUMENT, saying why) or the host has a stream under another credential
    /// (PERMISSION_DENIED): a stolen or second credential must not evict the sidecar that is there.
    fn on_connected(
        &mut self,
        conn: ConnId,
        hello: &pb::Hello,
        credential: Credential,
        outbox: mpsc::Sender<Box<pb::SchedulerMessage>>,
        now: tether_core::ids::Millis,
    ) -> Result<(), Status> {
        let h = convert::hello(hello).map_err(|e| {
            tracing::warn!(host = %hello.hostname, error = %e, "refusing a sidecar hello");
            Status::invalid_argument(format!("hello: {e}"))
        })?;
        let host = h.hostname.clone();
        if let Some(old) = self.sidecars.get(&host) {
            if old.credential != credential {
                tracing::warn!(host = %host.as_str(), credential = credential.kind(),
                    "refused a second sidecar stream for a host under another credential");
                self.metrics.sidecar_replacements_refused.inc();
                return Err(Status::permission_denied(format!(
                    "host {} already has a sidecar stream under another credential; only the same \
                     credential may replace it (retry once that stream has ended)",
                    host.as_str()
                )));
            }
            tracing::warn!(host = %host.as_str(), credential = credential.kind(),
                "a new sidecar stream with the same credential replaces the host's stream");
            self.metrics.sidecar_replacements.inc();
        }
        tracing::info!(host = %host.as_str(), driver = %h.driver_name,
            credential = credential.kind(), "sidecar connected");
        // The older stream's outbox is dropped, which ends that stream.
        if let Some(old) = self.sidecars.insert(
            host.clone(),
            SidecarConn {
                conn,
                outbox,
                credential,
            },
        ) {
            self.hosts_by_conn.remove(&old.conn);
        }
        self.hosts_by_conn.insert(conn, host);
        self.metrics
            .sidecars_connected
            .set(self.sidecars.len() as i64);
        self.core.handle_sidecar_hello(h, now);
        Ok(())
    }

    /// A token for `host`, valid for `ttl`; the secret is created (and stored) by the first mint.
    async fn mint_agent_token(
        &mut self,
        host: &Hostname,
        ttl: Duration,
    ) -> Result<pb::MintAgentTokenResponse, SchedulerError> {
        let current = self.agent_secret.borrow().clone();
        let secret = match current {
            Some(s) => s,
            None => {
                let fresh = AgentSecret::generate();
                crate::store::secret::save(&self.store, &self.settings.agent_secret_file, &fresh)
                    .await?;
                tracing::info!("created the agent-token secret");
                let fresh = Arc::new(fresh);
                self.agent_secret.send_replace(Some(fresh.clone()));
                fresh
            }
        };
        let expires = agent_identity::unix_now_s().saturating_add(ttl.as_secs());
        tracing::info!(host = %host.as_str(), expires_unix_s = expires, "minted an agent token");
        Ok(pb::MintAgentTokenResponse {
            token: secret.mint(host, expires),
            host: host.as_str().to_owned(),
            expires_unix_ms: expires.saturating_mul(1000),
        })
    }

    /// Replaces the secret: stored first, then in force, so every earlier token is refused.
    async fn rotate_agent_secret(&mut self) -> Result<(), SchedulerError> {
        let fresh = AgentSecret::generate();
        crate::store::secret::save(&self.store, &self.settings.agent_secret_file, &fresh).await?;
        self.agent_secret.send_replace(Some(Arc::new(fresh)));
        tracing::warn!(
            "rotated the agent-token secret: every agent token minted before is refused"
        );
        Ok(())
    }

    /// Answers an admin request. Writes reply only after their commands were drained, so a successful
    /// `Scale` is durable when the client hears of it.
    async fn on_admin(&mut self, req: AdminRequest) -> Result<(), SchedulerError> {
        let now = self.clock.now();
        match req {
            AdminRequest::GetCluster(reply) => {
                let facts = ClusterFacts {
                    framework_name: &self.settings.framework_name,
                    master: &self.master,
                    driver: &self.settings.driver,
                    leader_address: &self.leader_address,
                };
                let _ = reply.send(presentation::cluster(
                    self.core.cluster_at(Some(now)),
                    facts,
                    &self.clock,
                ));
            }
            AdminRequest::ListNodes(reply) => {
                let nodes = self
                    .core
                    .nodes(now)
                    .into_iter()
                    .map(|n| presentation::node(n, &self.clock))
                    .collect();
                let _ = reply.send(pb::ListNodesResponse { nodes });
            }
            AdminRequest::ListAgents(reply) => {
                let agents = self
                    .core
                    .agents(now)
                    .into_iter()
                    .map(|a| presentation::agent(a, &self.clock))
                    .collect();
                let _ = reply.send(pb::ListAgentsResponse { agents });
            }
            AdminRequest::ListVolumes(reply) => {
                let volumes = self
                    .core
                    .volumes()
                    .into_iter()
                    .map(presentation::volume)
                    .collect();
                let _ = reply.send(pb::ListVolumesResponse { volumes });
            }
            AdminRequest::Scale {
                group,
                nodes,
                allow_data_loss,
                reply,
            } => {
                let group = if group.is_empty() {
                    tether_core::ids::DEFAULT_GROUP.to_owned()
                } else {
                    group
                };
                let previous = self.core.group_desired(&group).unwrap_or(0);
                match self
                    .core
                    .handle_scale_group(&group, nodes, allow_data_loss, now)
                {
                    Ok(plan) => {
                        self.drain().await?;
                        let _ = reply.send(Ok(pb::ScaleResponse {
                            previous,
                            desired: nodes,
                            start: plan.start.iter().map(|n| n.ordinal()).collect(),
                            stop: plan.stop.iter().map(|n| n.ordinal()).collect(),
                            group,
                        }));
                    }
                    Err(e @ tether_core::error::CoreError::Refused(_)) => {
                        let _ = reply.send(Err(Status::failed_precondition(e.to_string())));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(Status::invalid_argument(e.to_string())));
                    }
                }
            }
            AdminRequest::ExportState {
                include_secrets,
                reply,
            } => {
                // Every `Persist` was written before this input was read: this is the durable state.
                let doc = crate::backup::Backup::export(
                    &self.settings.framework_name,
                    self.core.persisted(),
                    self.settings.secrets.as_deref(),
                    include_secrets,
                    self.clock.unix_ms(now),
                )
                .with_agent_token_secret(self.agent_secret.borrow().as_deref(), include_secrets);
                let _ = reply.send(
                    doc.to_json()
                        .map(|document| pb::ExportStateResponse {
                            document,
                            format_version: crate::backup::FORMAT_VERSION,
                        })
                        .map_err(|e| Status::internal(e.to_string())),
                );
            }
            AdminRequest::MarkAgentGone { agent, reply } => match self.core.gone_agents(&agent) {
                Err(e) => {
                    let _ = reply.send(Err(Status::failed_precondition(e.to_string())));
                }
                Ok(agents) => {
                    let client = self.operator.borrow().clone();
                    // The master's answer may take a while: the loop does not wait for it.
                    tokio::spawn(async move {
                        let _ = reply.send(mark_agents_gone(client, agents).await);
                    });
                }
            },
            AdminRequest::Replace {
                group,
                node_id: ordinal,
                force,
                allow_data_loss,
                reply,
            } => {
                let group = if group.is_empty() {
                    tether_core::ids::DEFAULT_GROUP
                } else {
                    group.as_str()
                };
                let node_id = match self.core.node_in_group(group, ordinal) {
                    Ok(id) => id.0,
                    Err(e) => {
                        let _ = reply.send(Err(Status::not_found(e.to_string())));
                        return Ok(());
                    }
                };
                let old = self
                    .core
                    .persisted()
                    .slots
                    .get(&NodeId(node_id))
                    .and_then(|s| s.task.as_ref())
                    .map(|t| t.task_id.as_str().to_owned())
                    .unwrap_or_default();
                let safely = !force
                    && self
                        .core
                        .persisted()
                        .slots
                        .get(&NodeId(node_id))
                        .and_then(|s| s.task.as_ref())
                        .is_some_and(|t| t.state == Some(TaskState::Running));
                match self
                    .core
                    .handle_replace_with(NodeId(node_id), force, allow_data_loss, now)
                {
                    Ok(()) => {
                        self.drain().await?;
                        let message = if force {
                            "forced: the old task is being killed and the node relaunches on the next suitable offer"
                        } else if safely {
                            "its data moves away first, then it is stopped and relaunches on its volumes                              (`tetherctl nodes` shows where it stands)"
                        } else {
                            "the node relaunches on the next suitable offer"
                        };
                        let _ = reply.send(Ok(pb::ReplaceNodeResponse {
                            node_id: ordinal,
                            old_task_id: old,
                            message: message.to_owned(),
                        }));
                    }
                    Err(
                        e @ (tether_core::error::CoreError::TaskMayBeAlive { .. }
                        | tether_core::error::CoreError::Refused(_)),
                    ) => {
                        let _ = reply.send(Err(Status::failed_precondition(e.to_string())));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(Status::invalid_argument(e.to_string())));
                    }
                }
            }
            AdminRequest::MintAgentToken { host, ttl, reply } => {
                // A store failure stops the scheduler, as for any state write.
                let answer = self.mint_agent_token(&host, ttl).await?;
                let _ = reply.send(Ok(answer));
            }
            AdminRequest::RotateAgentSecret { reply } => {
                self.rotate_agent_secret().await?;
                let _ = reply.send(Ok(pb::RotateAgentTokenSecretResponse {
                    message: "rotated: every agent token minted before is refused from now on; \
                              streams already open stay until they reconnect"
                        .to_owned(),
                }));
            }
            AdminRequest::Rollout { op, reply } => {
                use crate::admin::{RolloutAction, RolloutOp};
                let result = match op {
                    RolloutOp::Status => Ok(String::new()),
                    RolloutOp::Update(update) => self
                        .core
                        .handle_config_update(update, now)
                        .map(|g| format!("configuration {g} stored; the rollout replaces out-of-date nodes one at a time")),
                    RolloutOp::Restart(group) => self
                        .core
                        .handle_restart(group.as_deref(), now)
                        .map(|g| format!("configuration {g} stored; the rollout restarts the nodes one at a time")),
                    RolloutOp::Control(RolloutAction::Pause) => self
                        .core
                        .handle_rollout_pause(now)
                        .map(|()| "paused".to_owned()),
                    RolloutOp::Control(RolloutAction::Resume) => self
                        .core
                        .handle_rollout_resume(now)
                        .map(|()| "resumed".to_owned()),
                    RolloutOp::Control(RolloutAction::Abort) => self
                        .core
                        .handle_rollout_abort(now)
                        .map(|()| "the rollout stops after the current node".to_owned()),
                    RolloutOp::Control(RolloutAction::Rollback) => self
                        .core
                        .handle_rollout_rollback(now)
                        .map(|id| {
                            format!(
                                "node {} goes back to its previous configuration; the rollout is paused",
                                id.ordinal()
                            )
                        }),
                };
                match result {
                    Ok(message) => {
                        self.drain().await?;
                        let _ = reply.send(Ok(presentation::rollout(&self.core, now, message)));
                    }
                    Err(e @ tether_core::error::CoreError::Refused(_)) => {
                        let _ = reply.send(Err(Status::failed_precondition(e.to_string())));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(Status::invalid_argument(e.to_string())));
                    }
                }
            }
            AdminRequest::BootstrapReset { new_cluster, reply } => {
                match self.core.handle_bootstrap_reset(new_cluster, now) {
                    Ok(()) => {
                        self.drain().await?;
                        let _ = reply.send(Ok(pb::BootstrapResetResponse {
                            message: "bootstrap reset: the next launches carry cluster.initial_master_nodes"
                                .to_owned(),
                        }));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(Status::failed_precondition(e.to_string())));
                    }
                }
            }
        }
        Ok(())
    }

    /// The wall-clock time, read from the system clock each time (not the monotonic `Clock`, which
    /// would not follow a corrected system time): certificates expire on the calendar.
    fn tell_wall_clock(&mut self) {
        let unix_s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let now = self.clock.now();
        self.core.handle_wall_clock(unix_s, now);
    }

    /// The signed certificate, the CA and the password for an InstallIdentity.
    fn sign(
        &self,
        identity: &tether_core::domain::IdentityRequest,
        csr_pem: &str,
    ) -> Result<(crate::cluster_ca::SignedCert, String, String), String> {
        let secrets =
            self.settings.secrets.as_ref().ok_or_else(|| {
                "security is on but this scheduler holds no cluster CA".to_owned()
            })?;
        let cert = secrets
            .sign(
                csr_pem,
                &identity.common_name,
                &identity.dns_names,
                &identity.ip_addresses,
            )
            .map_err(|e| e.to_string())?;
        Ok((
            cert,
            secrets.ca_pem().to_owned(),
            secrets.password().to_owned(),
        ))
    }

    /// Asks every node whose task runs `GET /`, off the loop (each probe is bounded by the client's
    /// timeout); the answers come back through `answers`.
    fn probe_roots(&self, answers: &mpsc::Sender<RootAnswer>) {
        let scheme = self.es_scheme();
        let targets: Vec<RootTarget> = self
            .core
            .nodes(self.clock.now())
            .into_iter()
            .filter(|n| n.phase == NodePhase::Task(Some(TaskState::Running)))
            .filter_map(|n| {
                Some(RootTarget {
                    node_id: n.node_id,
                    task_id: n.task_id?,
                    base: format!("{scheme}://{}:{}", n.host?.as_str(), n.ports?.0),
                })
            })
            .collect();
        if targets.is_empty() {
            return;
        }
        tokio::spawn(elasticsearch::probe_roots(
            self.settings.es.clone(),
            targets,
            answers.clone(),
        ));
    }

    /// `https` once the nodes serve HTTP over TLS (`--es-security full`).
    fn es_scheme(&self) -> &'static str {
        if self.core.security() == tether_core::config::Security::Full {
            "https"
        } else {
            "http"
        }
    }

    fn refresh_gauges(&self) {
        let nodes = self.core.nodes(self.clock.now());
        self.metrics.set_nodes(&nodes, self.core.desired_total());
        self.metrics.set_rollout(
            self.core.persisted().rollout.as_ref().map(|r| r.state),
            self.core.config_generation(),
        );
        self.metrics.set_volumes(&self.core.volumes());
        // Ask the nodes that run, not the UNREACHABLE ones whose fate the answer decides.
        let targets: Vec<String> = nodes
            .iter()
            .filter(|n| n.phase == NodePhase::Task(Some(TaskState::Running)))
            .filter_map(|n| match (&n.host, n.ports) {
                (Some(h), Some((http, _))) => {
                    Some(format!("{}://{}:{http}", self.es_scheme(), h.as_str()))
                }
                _ => None,
            })
            .collect();
        self.es_targets.send_if_modified(|t| {
            let changed = *t != targets;
            if changed {
                *t = targets;
            }
            changed
        });
    }
}

/// Asks the master to mark each agent gone, in order; the first refusal ends the call with the master's
/// words.
async fn mark_agents_gone(
    client: Option<tether_mesos::client::MesosClient>,
    agents: Vec<(AgentId, Hostname)>,
) -> Result<pb::MarkAgentGoneResponse, Status> {
    use tether_mesos::client::CallError;
    let Some(client) = client else {
        return Err(Status::unavailable(
            "not subscribed to a Mesos master; try again",
        ));
    };
    let mut done = Vec::new();
    for (agent, host) in &agents {
        let id = model::AgentID::new(agent.as_str());
        match client.mark_agent_gone(&id).await {
            Ok(()) => {
                tracing::warn!(agent = %agent.as_str(), host = %host.as_str(), "agent marked gone at an operator's request");
                done.push(agent.as_str().to_owned());
            }
            Err(e) => {
                let message = format!(
                    "marking agent {} ({}) gone: {e}",
                    agent.as_str(),
                    host.as_str()
                );
                return Err(match e {
                    CallError::Forbidden(_) | CallError::Unauthorized => {
                        Status::permission_denied(format!(
                            "{message}; the master's ACLs must allow mark_agents_gone for the scheduler's principal"
                        ))
                    }
                    CallError::NotFound(_) | CallError::BadRequest(_) => {
                        Status::failed_precondition(message)
                    }
                    _ => Status::unavailable(message),
                });
            }
        }
    }
    Ok(pb::MarkAgentGoneResponse {
        message: format!(
            "marked gone: {}; their tasks become TASK_GONE_BY_OPERATOR and their nodes are placed again",
            done.join(", ")
        ),
        agent_ids: done,
    })
}

/// One item from one of the loop's inputs.
#[derive(Debug)]
pub enum Input {
    Mesos(Notification),
    /// Boxed: a Connected event carries the stream's credential and channels, far larger than the rest.
    Sidecar(Box<SidecarEvent>),
    Admin(AdminRequest),
    Es(EsCluster),
    Root(RootAnswer),
    EsAnswer(EsCallAnswer),
}

/// How many items in a row one input may have served while another has items waiting.
pub const FAIR_BATCH: usize = 32;

/// The loop's inputs taking turns: an input is served at most [`FAIR_BATCH`] items in a row while any
/// other has one waiting, so a flood on one input (a thousand sidecars' reports, a burst of offers)
/// delays an admin request, a Mesos event or a sidecar event by at most one batch of it.
#[derive(Debug)]
pub struct FairInputs<'a> {
    inputs: &'a mut Inputs,
    roots: mpsc::Receiver<RootAnswer>,
    answers: mpsc::Receiver<EsCallAnswer>,
    /// The input being served, and how many in a row so far.
    turn: usize,
    served: usize,
}

/// The number of inputs in [`FairInputs`]'s rotation.
const INPUTS: usize = 6;

impl<'a> FairInputs<'a> {
    pub fn new(
        inputs: &'a mut Inputs,
        roots: mpsc::Receiver<RootAnswer>,
        answers: mpsc::Receiver<EsCallAnswer>,
    ) -> Self {
        FairInputs {
            inputs,
            roots,
            answers,
            turn: 0,
            served: 0,
        }
    }

    fn try_recv(&mut self, which: usize) -> Option<Input> {
        match which {
            0 => self
                .inputs
                .sidecars
                .try_recv()
                .ok()
                .map(|e| Input::Sidecar(Box::new(e))),
            1 => self.inputs.admin.try_recv().ok().map(Input::Admin),
            2 => self.inputs.mesos.try_recv().ok().map(Input::Mesos),
            3 => self.inputs.es.try_recv().ok().map(Input::Es),
            4 => self.roots.try_recv().ok().map(Input::Root),
            _ => self.answers.try_recv().ok().map(Input::EsAnswer),
        }
    }

    /// The next sidecar event that is ready now, out of turn (see the loop's batching of hellos).
    pub fn try_next_sidecar(&mut self) -> Option<SidecarEvent> {
        self.inputs.sidecars.try_recv().ok()
    }

    /// The next item that is ready now, in turn; `None` when every input is empty.
    pub fn try_next(&mut self) -> Option<Input> {
        for step in 0..=INPUTS {
            if step > 0 || self.served >= FAIR_BATCH {
                self.turn = (self.turn + 1) % INPUTS;
                self.served = 0;
            }
            if let Some(item) = self.try_recv(self.turn) {
                self.served += 1;
                return Some(item);
            }
        }
        None
    }

    /// The next item, in turn; waits while every input is empty. `None` once every input is closed.
    /// Cancel-safe: an item is taken only when it is returned.
    pub async fn next(&mut self) -> Option<Input> {
        if let Some(item) = self.try_next() {
            return Some(item);
        }
        let (which, item) = tokio::select! {
            Some(e) = self.inputs.sidecars.recv() => (0, Input::Sidecar(Box::new(e))),
            Some(r) = self.inputs.admin.recv() => (1, Input::Admin(r)),
            Some(n) = self.inputs.mesos.recv() => (2, Input::Mesos(n)),
            Some(v) = self.inputs.es.recv() => (3, Input::Es(v)),
            Some(a) = self.roots.recv() => (4, Input::Root(a)),
            Some(a) = self.answers.recv() => (5, Input::EsAnswer(a)),
            else => return None,
        };
        self.turn = which;
        self.served = 1;
        Some(item)
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent_channel::ConnId;

    struct Senders {
        sidecars: mpsc::Sender<SidecarEvent>,
        admin: mpsc::Sender<AdminRequest>,
        mesos: mpsc::Sender<Notification>,
        _es: mpsc::Sender<EsCluster>,
        _roots: mpsc::Sender<RootAnswer>,
        _answers: mpsc::Sender<EsCallAnswer>,
    }

    type Extra = (mpsc::Receiver<RootAnswer>, mpsc::Receiver<EsCallAnswer>);

    fn inputs(capacity: usize) -> (Inputs, Extra, Senders) {
        let (sidecars_tx, sidecars) = mpsc::channel(capacity);
        let (admin_tx, admin) = mpsc::channel(capacity);
        let (mesos_tx, mesos) = mpsc::channel(capacity);
        let (es_tx, es) = mpsc::channel(capacity);
        let (roots_tx, roots) = mpsc::channel(capacity);
        let (answers_tx, answers) = mpsc::channel(capacity);
        (
            Inputs {
                mesos,
                sidecars,
                admin,
                es,
            },
            (roots, answers),
            Senders {
                sidecars: sidecars_tx,
                admin: admin_tx,
                mesos: mesos_tx,
                _es: es_tx,
                _roots: roots_tx,
                _answers: answers_tx,
            },
        )
    }

    fn sidecar_event(i: u64) -> SidecarEvent {
        SidecarEvent::Disconnected {
            conn: ConnId(i),
            reason: String::new(),
        }
    }

    fn mesos_event() -> Notification {
        Notification::Disconnected {
            reason: String::new(),
        }
    }

    fn admin_request() -> AdminRequest {
        AdminRequest::GetCluster(tokio::sync::oneshot::channel().0)
    }

    /// What the loop would serve, in order, until the admin request: how many items of each input.
    async fn served_before_admin(fair: &mut FairInputs<'_>) -> (usize, usize) {
        let (mut sidecar, mut mesos) = (0, 0);
        loop {
            match fair.next().await.expect("an input") {
                Input::Admin(_) => return (sidecar, mesos),
                Input::Sidecar(_) => sidecar += 1,
                Input::Mesos(_) => mesos += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// With the sidecar queue saturated (and Mesos events flooding too), an admin request that arrives in
    /// the middle of a batch is served after at most one batch of each flooding input.
    #[tokio::test]
    async fn an_admin_request_waits_at_most_one_batch_of_a_flood() {
        let (mut inputs, (roots, answers), tx) = inputs(1024);
        let mut fair = FairInputs::new(&mut inputs, roots, answers);
        for i in 0..1024 {
            tx.sidecars.try_send(sidecar_event(i)).expect("room");
        }
        // Alone, the flood is served without a pause.
        for _ in 0..10 {
            assert!(matches!(fair.next().await, Some(Input::Sidecar(_))));
        }
        tx.admin.try_send(admin_request()).expect("room");
        let (sidecar, mesos) = served_before_admin(&mut fair).await;
        assert!(
            sidecar <= FAIR_BATCH,
            "{sidecar} sidecar events before the admin request"
        );
        assert_eq!(mesos, 0);

        // Both floods at once, the admin request arriving while Mesos events are being served.
        for _ in 0..1024 {
            tx.mesos.try_send(mesos_event()).expect("room");
        }
        while !matches!(fair.next().await, Some(Input::Mesos(_))) {}
        tx.admin.try_send(admin_request()).expect("room");
        let (sidecar, mesos) = served_before_admin(&mut fair).await;
        assert!(
            sidecar <= FAIR_BATCH,
            "{sidecar} sidecar events before the admin request"
        );
        assert!(
            mesos <= FAIR_BATCH,
            "{mesos} Mesos events before the admin request"
        );
    }

    /// Under floods on several inputs, each gets its batch in every round: a Mesos event waits for at
    /// most one batch of sidecar events, and the other way round.
    #[tokio::test]
    async fn floods_on_two_inputs_alternate_by_batches() {
        let (mut inputs, (roots, answers), tx) = inputs(1024);
        let mut fair = FairInputs::new(&mut inputs, roots, answers);
        for i in 0..1024 {
            tx.sidecars.try_send(sidecar_event(i)).expect("room");
            tx.mesos.try_send(mesos_event()).expect("room");
        }
        let mut runs = Vec::new();
        let mut last: Option<bool> = None;
        for _ in 0..(8 * FAIR_BATCH) {
            let sidecar = match fair.next().await.expect("an input") {
                Input::Sidecar(_) => true,
                Input::Mesos(_) => false,
                other => panic!("unexpected {other:?}"),
            };
            if last == Some(sidecar) {
                *runs.last_mut().expect("a run") += 1;
            } else {
                runs.push(1usize);
            }
            last = Some(sidecar);
        }
        assert!(runs.len() >= 8, "{runs:?}");
        assert!(runs.iter().all(|r| *r <= FAIR_BATCH), "{runs:?}");
    }
}
