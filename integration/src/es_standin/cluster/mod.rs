//! Cluster coordination among stand-ins, with Elasticsearch's (7.0+) semantics in a simpler protocol.
//!
//! - **Discovery**: a node without a master probes `discovery.seed_hosts` (re-resolved each round, every
//!   `discovery.find_peers_interval`) and every node it has heard of; a peer that reports an elected master
//!   is joined.
//! - **Bootstrapping**: only a master-eligible node whose data path holds no voting configuration, and only
//!   from `cluster.initial_master_nodes` (names, addresses or IPs; the same list everywhere): once more
//!   than half of the listed nodes are discovered, the configuration becomes those nodes plus a placeholder
//!   per missing entry. A node not in its own list never bootstraps; duplicates are refused at start. With
//!   `discovery.type: single-node` a node bootstraps alone. With no discovery settings at all (development
//!   mode) a node bootstraps with whatever it found after `discovery.unconfigured_bootstrap_timeout`.
//! - **Elections**: a candidate that sees a quorum of both the last committed and the last accepted voting
//!   configurations asks for pre-votes (refused by nodes that have a leader or a fresher state), then starts
//!   a new term; a node votes at most once per term and only for a candidate whose last accepted state is at
//!   least as fresh as its own. A majority of each configuration elects.
//! - **Publication**: the master publishes each new state; it is committed once a quorum of both
//!   configurations accepted it, and a master that cannot commit steps down. The voting configuration
//!   follows the live master-eligible nodes (`state::reconfigure`).
//! - **Joins**: the master first asks the joining node to validate the cluster UUID — a node that committed
//!   another cluster's UUID refuses ("This node previously joined a cluster with UUID …") — and refuses a
//!   node older than every node of the cluster.
//! - **Fault detection**: the master checks each follower every
//!   `cluster.fault_detection.follower_check.interval` (timeout, `retry_count` as in Elasticsearch) and
//!   removes a node that is gone at once or fails `retry_count` checks in a row; followers check the
//!   master the same way (`leader_check.*`) and become candidates when it fails.
//! - **Single-node discovery** looks for no peers and refuses joins.

mod discovery;
mod election;
mod fault_detection;
mod handlers;
mod publication;
pub mod routing;
mod settings;
pub mod shards;
pub mod state;
pub mod transport;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use self::settings::ClusterSettings;
use self::state::{ClusterState, DiscoveryNode, Persisted, StateStore};
use self::transport::{Request, Transport, TransportTls};

/// What HTTP handlers see of the cluster.
#[derive(Debug, Clone)]
pub struct ClusterView {
    pub local: DiscoveryNode,
    /// The elected master as this node knows it, `None` without one.
    pub master: Option<DiscoveryNode>,
    /// The last state this node applied.
    pub state: ClusterState,
    /// This node applied a state a master published since it started. Before that its state is
    /// Elasticsearch's initial one (`Coordinator.doStart`): only the node itself, no metadata nor
    /// routing, under the `state not recovered` block, so a restarted node serves nothing from the state
    /// it had before, which the cluster may have moved past (documents written while it was away).
    pub recovered: bool,
}

/// The `state not recovered / initialized` global block's answer (`GatewayService`).
pub const NOT_RECOVERED: &str =
    "blocked by: [SERVICE_UNAVAILABLE/1/state not recovered / initialized];";

/// The state a node applies when it starts, before any master published one (see
/// [`ClusterView::recovered`]): the node alone, no metadata nor routing. It keeps the persisted cluster
/// UUID for `GET /` (what Tether reads to tell a node of another cluster), as the stand-in always did.
fn initial_state(accepted: &ClusterState, local: &DiscoveryNode) -> ClusterState {
    let mut s = ClusterState::empty(&accepted.cluster_name);
    s.cluster_uuid = accepted.cluster_uuid.clone();
    s.uuid_committed = accepted.uuid_committed;
    s.nodes.insert(local.id.clone(), local.clone());
    s
}

impl ClusterView {
    /// `GET /`'s `cluster_uuid`: the UUID once committed, `_na_` before.
    pub fn cluster_uuid(&self) -> &str {
        if self.state.uuid_committed {
            &self.state.cluster_uuid
        } else {
            state::UNKNOWN_UUID
        }
    }
}

#[derive(Debug, Clone)]
enum Mode {
    Candidate,
    Leader,
    Follower(DiscoveryNode),
}

#[derive(Debug)]
struct Inner {
    p: Persisted,
    mode: Mode,
    applied: ClusterState,
    /// A master's state was applied since the start (see [`ClusterView::recovered`]).
    recovered: bool,
    /// Master-eligible peers that answered the last discovery round.
    peers: BTreeMap<String, DiscoveryNode>,
    /// Nodes peers told us about, probed next round.
    heard_of: BTreeMap<String, DiscoveryNode>,
    bootstrapping_permitted: bool,
    election_attempts: u32,
    follower_failures: BTreeMap<String, u64>,
    leader_failures: u64,
    candidate_since: Instant,
}

/// One node's coordination.
#[derive(Debug)]
pub struct Coordinator {
    cfg: ClusterSettings,
    transport: Transport,
    store: StateStore,
    /// The data path as the node names it (for the cluster UUID message).
    data_path_shown: String,
    inner: Mutex<Inner>,
    publish_lock: tokio::sync::Mutex<()>,
    view: watch::Sender<ClusterView>,
    started: Instant,
    /// This node's shard copies.
    pub docs: shards::Docs,
    /// Allocation ids of the copies this node is recovering.
    recovering: Mutex<BTreeSet<String>>,
}

/// Why a cluster-level request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    #[error("no master")]
    NoMaster,
    #[error("{0}")]
    Failed(String),
}

impl Coordinator {
    /// Starts serving transport requests on `listener` and coordinating with peers until `shutdown`.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        cfg: ClusterSettings,
        local: DiscoveryNode,
        persisted: Persisted,
        store: StateStore,
        data_path_shown: String,
        docs: shards::Docs,
        listener: TcpListener,
        tls: Option<TransportTls>,
        shutdown: CancellationToken,
    ) -> Arc<Coordinator> {
        let applied = persisted.accepted.clone();
        let view = ClusterView {
            local: local.clone(),
            master: None,
            state: initial_state(&applied, &local),
            recovered: false,
        };
        let transport = Transport {
            cluster_name: cfg.cluster_name.clone(),
            local: local.clone(),
            tls: tls.clone(),
            connect_timeout: Duration::from_secs(30),
        };
        let c = Arc::new(Coordinator {
            transport,
            store,
            data_path_shown,
            inner: Mutex::new(Inner {
                p: persisted,
                mode: Mode::Candidate,
                applied,
                recovered: false,
                peers: BTreeMap::new(),
                heard_of: BTreeMap::new(),
                bootstrapping_permitted: true,
                election_attempts: 0,
                follower_failures: BTreeMap::new(),
                leader_failures: 0,
                candidate_since: Instant::now(),
            }),
            publish_lock: tokio::sync::Mutex::new(()),
            view: watch::Sender::new(view),
            started: Instant::now(),
            docs,
            recovering: Mutex::new(BTreeSet::new()),
            cfg,
        });
        c.log_bootstrap_state();
        let handler = {
            let c = c.clone();
            move |from: DiscoveryNode, req: Request| {
                let c = c.clone();
                async move { c.handle(from, req).await }
            }
        };
        tokio::spawn(transport::serve(
            listener,
            c.cfg.cluster_name.clone(),
            c.local().ephemeral_id.clone(),
            tls,
            handler,
            shutdown.clone(),
        ));
        for task in [
            Task::Discovery,
            Task::FollowerChecks,
            Task::LeaderChecks,
            Task::Reroute,
            Task::Recoveries,
        ] {
            let c = c.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    () = c.run_task(task) => {}
                }
            });
        }
        c
    }

    /// The cluster as this node sees it, updated on every change.
    pub fn view(&self) -> watch::Receiver<ClusterView> {
        self.view.subscribe()
    }

    fn local(&self) -> &DiscoveryNode {
        &self.transport.local
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn persist(&self, i: &Inner) -> Result<(), String> {
        self.store.save(&i.p).map_err(|e| {
            tracing::error!(error = %e, "failed to persist the coordination state");
            e.to_string()
        })
    }

    fn refresh_view(&self, i: &Inner) {
        let master = match &i.mode {
            Mode::Leader if i.applied.master.as_deref() == Some(&self.local().id) => {
                Some(self.local().clone())
            }
            Mode::Follower(l) if i.applied.master.as_deref() == Some(&l.id) => Some(l.clone()),
            _ => None,
        };
        self.view.send_modify(|v| {
            if i.recovered {
                v.master = master;
                v.state = i.applied.clone();
                v.recovered = true;
            }
        });
    }

    fn become_candidate(&self, i: &mut Inner, reason: &str) {
        if !matches!(i.mode, Mode::Candidate) {
            tracing::info!(node = %self.local().name, reason, "master node changed: no master; becoming a candidate");
            i.candidate_since = Instant::now();
        }
        i.mode = Mode::Candidate;
        i.follower_failures.clear();
        i.leader_failures = 0;
        self.refresh_view(i);
    }

    fn log_bootstrap_state(&self) {
        let i = self.lock();
        let reqs = &self.cfg.initial_master_nodes;
        if i.p.accepted.uuid_committed {
            if reqs.is_empty() {
                tracing::info!(
                    "this node is locked into cluster UUID [{}] and will not attempt further cluster bootstrapping",
                    i.p.accepted.cluster_uuid
                );
            } else if self.local().version.is_8() {
                tracing::warn!(
                    "this node is locked into cluster UUID [{}] but [cluster.initial_master_nodes] is set to [{}]; remove this setting to avoid possible data loss caused by subsequent cluster bootstrap attempts",
                    i.p.accepted.cluster_uuid,
                    reqs.join(", ")
                );
            }
        } else if !reqs.is_empty() {
            tracing::info!(
                "this node has not joined a bootstrapped cluster yet; [cluster.initial_master_nodes] is set to [{}]",
                reqs.join(", ")
            );
        }
    }

    // ---- periodic work -------------------------------------------------------------------------

    async fn run_task(self: Arc<Self>, task: Task) {
        let interval = match task {
            Task::Discovery => self.cfg.find_peers_interval,
            Task::FollowerChecks => self.cfg.follower_check_interval,
            Task::LeaderChecks => self.cfg.leader_check_interval,
            Task::Reroute => self.cfg.follower_check_interval,
            Task::Recoveries => {
                let mut rx = self.view.subscribe();
                loop {
                    let state = rx.borrow_and_update().state.clone();
                    self.start_recoveries(&state);
                    if rx.changed().await.is_err() {
                        return;
                    }
                }
            }
        };
        let mut last_warning = Instant::now();
        loop {
            tokio::time::sleep(interval).await;
            match task {
                Task::Discovery => {
                    if matches!(self.lock().mode, Mode::Candidate) {
                        self.discovery_round().await;
                        if last_warning.elapsed() >= self.cfg.formation_warning_timeout {
                            last_warning = Instant::now();
                            self.warn_not_formed();
                        }
                    } else {
                        last_warning = Instant::now();
                    }
                }
                Task::FollowerChecks => self.check_followers().await,
                Task::LeaderChecks => self.check_leader().await,
                Task::Reroute => self.reroute_tick().await,
                Task::Recoveries => {}
            }
        }
    }

    // ---- cluster-level requests from the HTTP layer --------------------------------------------

    /// Waits up to `timeout` for an elected master.
    pub async fn wait_for_master(&self, timeout: Duration) -> Option<DiscoveryNode> {
        let mut rx = self.view.subscribe();
        let wait = rx.wait_for(|v| v.master.is_some());
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(v)) => v.master.clone(),
            _ => None,
        }
    }

    /// Adds index `name` (`shards` primaries, `replicas` replicas each) to the cluster state through the
    /// master (what creating or auto-creating an index does), waiting up to `timeout` for a master.
    ///
    /// As Elasticsearch's `TransportMasterNodeAction` does, a master that fails to commit the change,
    /// is no longer the master, or cannot be reached is no error yet: the request waits for the next
    /// master (another node, or a newer state) and is sent again, until `timeout` — then it fails as
    /// `master_not_discovered_exception`. Right after an election, competing candidates make the first
    /// publications fail now and then; a client sees that only as a slower answer.
    pub async fn create_index(
        self: &Arc<Self>,
        name: &str,
        shards: u32,
        replicas: u32,
        timeout: Duration,
    ) -> Result<(), ClusterError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let update = shards::ClusterUpdate::CreateIndex {
            name: name.to_owned(),
            shards,
            replicas,
        };
        self.submit(update, timeout, |v| v.state.indices.contains(name))
            .await?;
        let mut rx = self.view.subscribe();
        let applied = rx.wait_for(|v| v.state.indices.contains(name));
        match tokio::time::timeout_at(deadline, applied).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(ClusterError::Failed(format!(
                "index [{name}] was created but this node has not applied it yet"
            ))),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Task {
    Discovery,
    FollowerChecks,
    LeaderChecks,
    Reroute,
    Recoveries,
}

/// The ids of the voting configuration exclusions.
fn retired(state: &ClusterState) -> BTreeSet<String> {
    state
        .metadata
        .voting_config_exclusions
        .iter()
        .map(|e| e.node_id.clone())
        .collect()
}

fn live_master_eligible(state: &ClusterState) -> BTreeSet<String> {
    state
        .nodes
        .values()
        .filter(|n| n.is_master_eligible())
        .map(|n| n.id.clone())
        .collect()
}
