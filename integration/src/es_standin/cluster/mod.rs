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

pub mod state;
pub mod transport;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use self::state::{
    BOOTSTRAP_PLACEHOLDER_PREFIX, ClusterState, DiscoveryNode, Persisted, StateStore, VotingConfig,
    new_uuid, reconfigure,
};
use self::transport::{Request, Response, Transport, TransportError, TransportTls};
use super::settings::{Settings, SettingsError};

/// The coordination settings, with Elasticsearch's defaults and lower bounds.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    pub cluster_name: String,
    pub seed_hosts: Vec<String>,
    /// The port of a seed host given without one.
    pub default_port: u16,
    pub initial_master_nodes: Vec<String>,
    pub single_node: bool,
    /// `Some` when no discovery setting is configured (development mode).
    pub unconfigured_bootstrap: Option<Duration>,
    pub find_peers_interval: Duration,
    pub request_peers_timeout: Duration,
    pub election_initial_timeout: Duration,
    pub election_back_off: Duration,
    pub election_max_timeout: Duration,
    pub follower_check_interval: Duration,
    pub follower_check_timeout: Duration,
    pub follower_check_retries: u64,
    pub leader_check_interval: Duration,
    pub leader_check_timeout: Duration,
    pub leader_check_retries: u64,
    pub publish_timeout: Duration,
    pub formation_warning_timeout: Duration,
}

impl ClusterSettings {
    pub fn from_settings(
        s: &Settings,
        cluster_name: &str,
        default_port: u16,
        is_8: bool,
    ) -> Result<ClusterSettings, SettingsError> {
        let ms = Duration::from_millis;
        let secs = Duration::from_secs;
        let single_node = match s.get("discovery.type").unwrap_or("multi-node") {
            "single-node" => true,
            "multi-node" => false,
            other => {
                return Err(SettingsError::Invalid(format!(
                    "Unknown discovery type [{other}]"
                )));
            }
        };
        let initial_master_nodes = s.list("cluster.initial_master_nodes");
        if single_node && s.contains("cluster.initial_master_nodes") {
            if is_8 {
                return Err(SettingsError::Invalid(
                    "setting [cluster.initial_master_nodes] is not allowed when [discovery.type] is set to [single-node]".into(),
                ));
            }
            tracing::warn!(
                "[cluster.initial_master_nodes] is ignored with [discovery.type] set to [single-node]"
            );
        }
        let unique: BTreeSet<&String> = initial_master_nodes.iter().collect();
        if unique.len() != initial_master_nodes.len() {
            return Err(SettingsError::Invalid(format!(
                "setting [cluster.initial_master_nodes] contains duplicates: [{}]",
                initial_master_nodes.join(", ")
            )));
        }
        let configured = [
            "discovery.seed_hosts",
            "discovery.seed_providers",
            "cluster.initial_master_nodes",
        ]
        .iter()
        .any(|k| s.contains(k));
        Ok(ClusterSettings {
            cluster_name: cluster_name.to_owned(),
            seed_hosts: s.list("discovery.seed_hosts"),
            default_port,
            initial_master_nodes: if single_node {
                Vec::new()
            } else {
                initial_master_nodes
            },
            single_node,
            unconfigured_bootstrap: if configured || single_node {
                None
            } else {
                Some(s.time("discovery.unconfigured_bootstrap_timeout", secs(3), ms(1))?)
            },
            find_peers_interval: s.time("discovery.find_peers_interval", secs(1), ms(1))?,
            request_peers_timeout: s.time("discovery.request_peers_timeout", secs(3), ms(1))?,
            election_initial_timeout: s.time("cluster.election.initial_timeout", ms(100), ms(1))?,
            election_back_off: s.time("cluster.election.back_off_time", ms(100), ms(1))?,
            election_max_timeout: s.time("cluster.election.max_timeout", secs(10), ms(200))?,
            follower_check_interval: s.time(
                "cluster.fault_detection.follower_check.interval",
                secs(1),
                ms(100),
            )?,
            follower_check_timeout: s.time(
                "cluster.fault_detection.follower_check.timeout",
                secs(10),
                ms(1),
            )?,
            follower_check_retries: s.int(
                "cluster.fault_detection.follower_check.retry_count",
                3,
                1,
            )?,
            leader_check_interval: s.time(
                "cluster.fault_detection.leader_check.interval",
                secs(1),
                ms(100),
            )?,
            leader_check_timeout: s.time(
                "cluster.fault_detection.leader_check.timeout",
                secs(10),
                ms(1),
            )?,
            leader_check_retries: s.int(
                "cluster.fault_detection.leader_check.retry_count",
                3,
                1,
            )?,
            publish_timeout: s.time("cluster.publish.timeout", secs(30), ms(1))?,
            formation_warning_timeout: s.time(
                "cluster.formation.warning_timeout",
                secs(10),
                ms(1),
            )?,
        })
    }
}

/// What HTTP handlers see of the cluster.
#[derive(Debug, Clone)]
pub struct ClusterView {
    pub local: DiscoveryNode,
    /// The elected master as this node knows it, `None` without one.
    pub master: Option<DiscoveryNode>,
    /// The last state this node applied.
    pub state: ClusterState,
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
        listener: TcpListener,
        tls: Option<TransportTls>,
        shutdown: CancellationToken,
    ) -> Arc<Coordinator> {
        let applied = persisted.accepted.clone();
        let view = ClusterView {
            local: local.clone(),
            master: None,
            state: applied.clone(),
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
            tls,
            handler,
            shutdown.clone(),
        ));
        for task in [Task::Discovery, Task::FollowerChecks, Task::LeaderChecks] {
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
            v.master = master;
            v.state = i.applied.clone();
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
            }
        }
    }

    /// Seeds and every node heard of, as `(address, host to verify)`.
    async fn probe_targets(&self) -> Vec<(SocketAddr, String)> {
        let mut out: BTreeMap<SocketAddr, String> = BTreeMap::new();
        // A single-node cluster looks for nobody.
        if self.cfg.single_node {
            return Vec::new();
        }
        for seed in &self.cfg.seed_hosts {
            let (host, port) = split_host_port(seed, self.cfg.default_port);
            match tokio::net::lookup_host((host.as_str(), port)).await {
                Ok(addrs) => {
                    for a in addrs {
                        out.entry(a).or_insert_with(|| host.clone());
                    }
                }
                Err(e) => tracing::debug!(seed, error = %e, "failed to resolve seed host"),
            }
        }
        let known: Vec<DiscoveryNode> = {
            let i = self.lock();
            i.p.accepted
                .nodes
                .values()
                .chain(i.heard_of.values())
                .cloned()
                .collect()
        };
        for n in known {
            out.entry(n.address).or_insert(n.host);
        }
        out.remove(&self.local().address);
        out.into_iter().collect()
    }

    async fn discovery_round(self: &Arc<Self>) {
        let targets = self.probe_targets().await;
        let known: Vec<DiscoveryNode> = self.lock().peers.values().cloned().collect();
        let probes = targets.iter().map(|(addr, host)| {
            self.transport.send(
                *addr,
                host,
                Request::Peers {
                    known: known.clone(),
                },
                self.cfg.request_peers_timeout,
            )
        });
        let results = futures::future::join_all(probes).await;
        let mut peers = BTreeMap::new();
        let mut heard_of = BTreeMap::new();
        let mut masters: Vec<DiscoveryNode> = Vec::new();
        for (r, (addr, _)) in results.into_iter().zip(&targets) {
            match r {
                Ok(Response::Peers {
                    node,
                    master,
                    known,
                }) => {
                    let node = *node;
                    if node.id == self.local().id {
                        continue;
                    }
                    for k in known.into_iter().filter(|k| k.id != self.local().id) {
                        heard_of.insert(k.id.clone(), k);
                    }
                    if let Some(m) = master.map(|m| *m).filter(|m| m.id != self.local().id)
                        && !masters.contains(&m)
                    {
                        masters.push(m);
                    }
                    if node.is_master_eligible() {
                        peers.insert(node.id.clone(), node);
                    }
                }
                Ok(other) => tracing::debug!(%addr, ?other, "unexpected answer to a peers request"),
                Err(e) => tracing::debug!(error = %e, "peer probe failed"),
            }
        }
        {
            let mut i = self.lock();
            i.peers = peers;
            i.heard_of = heard_of;
        }
        for master in masters {
            if self.join(&master).await {
                return;
            }
        }
        self.maybe_bootstrap();
        self.maybe_elect().await;
    }

    /// Asks `master` to add this node; true when it did.
    async fn join(&self, master: &DiscoveryNode) -> bool {
        match self
            .transport
            .send(
                master.address,
                &master.host,
                Request::Join,
                self.cfg.publish_timeout,
            )
            .await
        {
            Ok(_) => {
                tracing::info!(node = %self.local().name, master = %master, "joined the cluster");
                true
            }
            Err(e) => {
                tracing::warn!(
                    "failed to join {master} with JoinRequest{{sourceNode={}}}: {e}",
                    self.local()
                );
                false
            }
        }
    }

    fn maybe_bootstrap(&self) {
        let mut i = self.lock();
        if !i.p.accepted.last_accepted_config.is_empty()
            || !i.bootstrapping_permitted
            || !self.local().is_master_eligible()
        {
            return;
        }
        let mut discovered: Vec<DiscoveryNode> = vec![self.local().clone()];
        discovered.extend(i.peers.values().cloned());
        let config: BTreeSet<String> = if self.cfg.single_node {
            BTreeSet::from([self.local().id.clone()])
        } else if !self.cfg.initial_master_nodes.is_empty() {
            let reqs = &self.cfg.initial_master_nodes;
            let (matched, unmatched) = match check_requirements(&discovered, reqs) {
                Ok(x) => x,
                Err(msg) => {
                    tracing::warn!("bootstrapping cancelled: {msg}");
                    i.bootstrapping_permitted = false;
                    return;
                }
            };
            if !matched.contains(&self.local().id) {
                tracing::info!(
                    "skipping cluster bootstrapping as local node does not match bootstrap requirements: [{}]",
                    reqs.join(", ")
                );
                i.bootstrapping_permitted = false;
                return;
            }
            if matched.len() * 2 <= reqs.len() {
                return;
            }
            matched
                .into_iter()
                .chain(
                    unmatched
                        .iter()
                        .map(|r| format!("{BOOTSTRAP_PLACEHOLDER_PREFIX}{r}")),
                )
                .collect()
        } else if let Some(after) = self.cfg.unconfigured_bootstrap {
            if self.started.elapsed() < after {
                return;
            }
            tracing::info!(
                "performing best-effort cluster bootstrapping with the discovered nodes"
            );
            discovered
                .iter()
                .filter(|n| n.is_master_eligible())
                .map(|n| n.id.clone())
                .collect()
        } else {
            return;
        };
        i.bootstrapping_permitted = false;
        let config = VotingConfig(config);
        tracing::info!(node = %self.local().name, "setting initial configuration to VotingConfiguration{config}");
        i.p.accepted.last_committed_config = config.clone();
        i.p.accepted.last_accepted_config = config;
        let _ = self.persist(&i);
    }

    async fn maybe_elect(self: &Arc<Self>) {
        let delay = {
            let mut i = self.lock();
            if !matches!(i.mode, Mode::Candidate)
                || i.p.accepted.last_accepted_config.is_empty()
                || !self.local().is_master_eligible()
                || self.local().roles.contains("voting_only")
            {
                return;
            }
            let mut possible: BTreeSet<String> = i.peers.keys().cloned().collect();
            possible.insert(self.local().id.clone());
            if !i.p.accepted.has_quorum(&possible) {
                return;
            }
            let cap = (self.cfg.election_initial_timeout
                + self.cfg.election_back_off * i.election_attempts)
                .min(self.cfg.election_max_timeout);
            i.election_attempts = i.election_attempts.saturating_add(1);
            Duration::from_millis(rand::random_range(0..=cap.as_millis() as u64))
        };
        tokio::time::sleep(delay).await;
        self.election().await;
    }

    async fn election(self: &Arc<Self>) {
        let (peers, last_term, last_version, accepted) = {
            let i = self.lock();
            if !matches!(i.mode, Mode::Candidate) {
                return;
            }
            (
                i.peers.values().cloned().collect::<Vec<_>>(),
                i.p.accepted.term,
                i.p.accepted.version,
                i.p.accepted.clone(),
            )
        };
        // Pre-voting: would a quorum follow us without disrupting a working leader?
        let pre = futures::future::join_all(peers.iter().map(|p| {
            self.transport.send(
                p.address,
                &p.host,
                Request::PreVote {
                    last_accepted_term: last_term,
                    last_accepted_version: last_version,
                },
                self.cfg.request_peers_timeout,
            )
        }))
        .await;
        let mut max_term = self.lock().p.current_term;
        let mut pre_votes = BTreeSet::from([self.local().id.clone()]);
        for (p, r) in peers.iter().zip(pre) {
            if let Ok(Response::PreVote {
                current_term,
                last_accepted_term,
                last_accepted_version,
                has_leader,
            }) = r
            {
                max_term = max_term.max(current_term);
                if !has_leader
                    && (last_accepted_term, last_accepted_version) <= (last_term, last_version)
                {
                    pre_votes.insert(p.id.clone());
                }
            }
        }
        if !accepted.has_quorum(&pre_votes) {
            return;
        }
        // The election proper, in a new term.
        let term = {
            let mut i = self.lock();
            if !matches!(i.mode, Mode::Candidate) {
                return;
            }
            let term = i.p.current_term.max(max_term) + 1;
            i.p.current_term = term;
            if self.persist(&i).is_err() {
                return;
            }
            term
        };
        let votes_in = futures::future::join_all(peers.iter().map(|p| {
            self.transport.send(
                p.address,
                &p.host,
                Request::StartJoin { term },
                self.cfg.request_peers_timeout,
            )
        }))
        .await;
        let mut voters = vec![self.local().clone()];
        for (p, r) in peers.iter().zip(votes_in) {
            match r {
                Ok(Response::Vote {
                    term: t,
                    last_accepted_term,
                    last_accepted_version,
                }) if t == term
                    && (last_accepted_term, last_accepted_version) <= (last_term, last_version) =>
                {
                    voters.push(p.clone());
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "no vote"),
            }
        }
        let votes: BTreeSet<String> = voters.iter().map(|n| n.id.clone()).collect();
        // Held before becoming leader, so that no join publishes from the state of an older term.
        let _guard = self.publish_lock.lock().await;
        let state = {
            let mut i = self.lock();
            if !matches!(i.mode, Mode::Candidate) || i.p.current_term != term {
                return;
            }
            if !i.p.accepted.has_quorum(&votes) {
                tracing::debug!(term, votes = ?votes, "election lost");
                return;
            }
            let mut state = i.p.accepted.clone();
            state.term = term;
            state.version = i.p.accepted.version + 1;
            state.master = Some(self.local().id.clone());
            state.nodes = voters.iter().map(|n| (n.id.clone(), n.clone())).collect();
            if state.cluster_uuid == state::UNKNOWN_UUID {
                state.cluster_uuid = new_uuid();
                state.uuid_committed = false;
            }
            state.last_accepted_config = reconfigure(
                &live_master_eligible(&state),
                &self.local().id,
                &state.last_accepted_config,
            );
            i.mode = Mode::Leader;
            i.election_attempts = 0;
            i.follower_failures.clear();
            state
        };
        match self.publish(state).await {
            Ok(()) => tracing::info!(
                node = %self.local().name, term,
                "elected-as-master ([{}] nodes joined)", votes.len()
            ),
            Err(e) => {
                tracing::warn!(term, error = %e, "failed to publish the first state as master")
            }
        }
    }

    fn warn_not_formed(&self) {
        let i = self.lock();
        let mut discovered: Vec<String> = vec![self.local().to_string()];
        discovered.extend(i.peers.values().map(ToString::to_string));
        let discovered = discovered.join(", ");
        let seeds = self.cfg.seed_hosts.join(", ");
        let msg = if i.p.accepted.last_accepted_config.is_empty() {
            if self.cfg.initial_master_nodes.is_empty() {
                format!(
                    "master not discovered yet, this node has not previously joined a bootstrapped cluster, and [cluster.initial_master_nodes] is empty on this node: have discovered [{discovered}]; discovery will continue using [{seeds}] from hosts providers"
                )
            } else {
                format!(
                    "master not discovered yet, this node has not previously joined a bootstrapped cluster, and this node must discover master-eligible nodes [{}] to bootstrap a cluster: have discovered [{discovered}]; discovery will continue using [{seeds}] from hosts providers",
                    self.cfg.initial_master_nodes.join(", ")
                )
            }
        } else {
            format!(
                "master not discovered or elected yet, an election requires at least {} nodes with ids from {}, have discovered [{discovered}]; discovery will continue using [{seeds}] from hosts providers; node term {}, last-accepted version {} in term {}",
                i.p.accepted.last_accepted_config.quorum_size(),
                i.p.accepted.last_accepted_config,
                i.p.current_term,
                i.p.accepted.version,
                i.p.accepted.term
            )
        };
        tracing::warn!(node = %self.local().name, "{msg}");
    }

    async fn check_followers(self: &Arc<Self>) {
        let (term, targets) = {
            let i = self.lock();
            if !matches!(i.mode, Mode::Leader) {
                return;
            }
            let targets: Vec<DiscoveryNode> = i
                .applied
                .nodes
                .values()
                .filter(|n| n.id != self.local().id)
                .cloned()
                .collect();
            (i.p.current_term, targets)
        };
        if targets.is_empty() {
            return;
        }
        let results = futures::future::join_all(targets.iter().map(|n| {
            self.transport.send(
                n.address,
                &n.host,
                Request::FollowerCheck { term },
                self.cfg.follower_check_timeout,
            )
        }))
        .await;
        let mut removals: Vec<(DiscoveryNode, String)> = Vec::new();
        {
            let mut i = self.lock();
            if !matches!(i.mode, Mode::Leader) || i.p.current_term != term {
                return;
            }
            for (n, r) in targets.into_iter().zip(results) {
                match r {
                    Ok(_) => {
                        i.follower_failures.remove(&n.id);
                    }
                    Err(e) if e.is_disconnect() => removals.push((n, "disconnected".into())),
                    Err(e) => {
                        let count = i.follower_failures.entry(n.id.clone()).or_insert(0);
                        *count += 1;
                        tracing::debug!(node = %n, failures = *count, error = %e, "follower check failed");
                        if *count >= self.cfg.follower_check_retries {
                            removals.push((n, "followers check retry count exceeded".into()));
                        }
                    }
                }
            }
        }
        if removals.is_empty() {
            return;
        }
        let _guard = self.publish_lock.lock().await;
        let state = {
            let mut i = self.lock();
            if !matches!(i.mode, Mode::Leader) {
                return;
            }
            let mut state = i.applied.clone();
            for (n, _) in &removals {
                state.nodes.remove(&n.id);
                i.follower_failures.remove(&n.id);
            }
            state
        };
        let reasons: Vec<String> = removals
            .iter()
            .map(|(n, why)| format!("{n} reason: {why}"))
            .collect();
        match self.publish_next(state).await {
            Ok(()) => {
                tracing::info!(node = %self.local().name, "node-left[{}]", reasons.join(", "))
            }
            Err(e) => tracing::warn!(error = %e, "failed to remove [{}]", reasons.join(", ")),
        }
    }

    async fn check_leader(&self) {
        let leader = match &self.lock().mode {
            Mode::Follower(l) => l.clone(),
            _ => return,
        };
        let r = self
            .transport
            .send(
                leader.address,
                &leader.host,
                Request::LeaderCheck,
                self.cfg.leader_check_timeout,
            )
            .await;
        let mut i = self.lock();
        if !matches!(&i.mode, Mode::Follower(l) if l.id == leader.id) {
            return;
        }
        match r {
            Ok(_) => i.leader_failures = 0,
            Err(e) if e.is_disconnect() => {
                self.become_candidate(&mut i, &format!("master node [{leader}] disconnected"))
            }
            Err(TransportError::Refused(_, msg)) if msg.contains("removed from the cluster") => {
                self.become_candidate(&mut i, &msg)
            }
            Err(e) => {
                i.leader_failures += 1;
                if i.leader_failures >= self.cfg.leader_check_retries {
                    self.become_candidate(
                        &mut i,
                        &format!("leader check retry count exceeded for [{leader}]: {e}"),
                    );
                }
            }
        }
    }

    // ---- publication ---------------------------------------------------------------------------

    /// Publishes `state` (nodes already changed) as the next version, with a voting configuration fitted
    /// to its live nodes. The caller holds the publish lock.
    async fn publish_next(self: &Arc<Self>, mut state: ClusterState) -> Result<(), String> {
        {
            let i = self.lock();
            if !matches!(i.mode, Mode::Leader) {
                return Err("no longer the master".into());
            }
            state.term = i.p.current_term;
            state.version = i.p.accepted.version.max(i.applied.version) + 1;
            state.master = Some(self.local().id.clone());
            state.last_committed_config = i.applied.last_accepted_config.clone();
            state.last_accepted_config = reconfigure(
                &live_master_eligible(&state),
                &self.local().id,
                &i.applied.last_accepted_config,
            );
        }
        self.publish(state).await
    }

    /// Two-phase publication: accept locally, send to every node, commit once both configurations have
    /// a quorum of acceptances; step down otherwise. The caller holds the publish lock.
    async fn publish(self: &Arc<Self>, state: ClusterState) -> Result<(), String> {
        {
            let mut i = self.lock();
            if !matches!(i.mode, Mode::Leader) || i.p.current_term != state.term {
                return Err("no longer the master".into());
            }
            i.p.accepted = state.clone();
            self.persist(&i)?;
        }
        let mut acks = BTreeSet::from([self.local().id.clone()]);
        let mut pending: FuturesUnordered<_> = state
            .nodes
            .values()
            .filter(|n| n.id != self.local().id)
            .cloned()
            .map(|n| {
                let t = self.transport.clone();
                let req = Request::Publish {
                    state: Box::new(state.clone()),
                };
                let timeout = self.cfg.publish_timeout;
                async move {
                    let r = t.send(n.address, &n.host, req, timeout).await;
                    (n, r)
                }
            })
            .collect();
        while !state.has_quorum(&acks) {
            let Some((n, r)) = pending.next().await else {
                break;
            };
            match r {
                Ok(_) => {
                    acks.insert(n.id.clone());
                }
                Err(e) => tracing::debug!(node = %n, error = %e, "publication not accepted"),
            }
        }
        if !state.has_quorum(&acks) {
            let mut i = self.lock();
            self.become_candidate(
                &mut i,
                "publication failed: no quorum of the voting configuration",
            );
            return Err(format!(
                "publication of cluster state version [{}] in term [{}] failed: only [{}] of the voting configuration accepted it",
                state.version,
                state.term,
                acks.len()
            ));
        }
        {
            let mut i = self.lock();
            if i.p.accepted.term == state.term && i.p.accepted.version == state.version {
                self.apply_committed(&mut i);
            }
        }
        // Commit to those that accepted, and to late acceptors as they answer.
        let commit = Request::Commit {
            term: state.term,
            version: state.version,
        };
        let acked: Vec<DiscoveryNode> = state
            .nodes
            .values()
            .filter(|n| n.id != self.local().id && acks.contains(&n.id))
            .cloned()
            .collect();
        let t = self.transport.clone();
        let timeout = self.cfg.publish_timeout;
        tokio::spawn(async move {
            let first = futures::future::join_all(
                acked
                    .iter()
                    .map(|n| t.send(n.address, &n.host, commit.clone(), timeout)),
            );
            let late = async {
                while let Some((n, r)) = pending.next().await {
                    if r.is_ok() {
                        let _ = t.send(n.address, &n.host, commit.clone(), timeout).await;
                    }
                }
            };
            tokio::join!(first, late);
        });
        Ok(())
    }

    /// Marks the accepted state committed and applies it.
    fn apply_committed(&self, i: &mut Inner) {
        i.p.accepted.uuid_committed = true;
        i.p.accepted.last_committed_config = i.p.accepted.last_accepted_config.clone();
        let _ = self.persist(i);
        let before = std::mem::replace(&mut i.applied, i.p.accepted.clone());
        let joined: Vec<String> = i
            .applied
            .nodes
            .values()
            .filter(|n| !before.nodes.contains_key(&n.id))
            .map(ToString::to_string)
            .collect();
        let left: Vec<String> = before
            .nodes
            .values()
            .filter(|n| !i.applied.nodes.contains_key(&n.id))
            .map(ToString::to_string)
            .collect();
        if before.master != i.applied.master || !joined.is_empty() || !left.is_empty() {
            tracing::info!(
                node = %self.local().name,
                master = ?i.applied.master_node().map(ToString::to_string),
                term = i.applied.term,
                version = i.applied.version,
                joined = ?joined,
                left = ?left,
                "cluster state applied"
            );
        }
        self.refresh_view(i);
    }

    // ---- requests from peers -------------------------------------------------------------------

    async fn handle(self: Arc<Self>, from: DiscoveryNode, req: Request) -> Response {
        match req {
            Request::Peers { known } => self.on_peers(from, known),
            Request::PreVote { .. } => {
                let i = self.lock();
                Response::PreVote {
                    current_term: i.p.current_term,
                    last_accepted_term: i.p.accepted.term,
                    last_accepted_version: i.p.accepted.version,
                    has_leader: !matches!(i.mode, Mode::Candidate),
                }
            }
            Request::StartJoin { term } => self.on_start_join(term),
            Request::Join => self.on_join(from).await,
            Request::ValidateJoin { cluster_uuid } => self.on_validate_join(&cluster_uuid),
            Request::Publish { state } => self.on_publish(from, *state),
            Request::Commit { term, version } => {
                let mut i = self.lock();
                if i.p.accepted.term != term || i.p.accepted.version != version {
                    return Response::Refused(format!(
                        "received commit for term [{term}] version [{version}] but the last accepted state is version [{}] in term [{}]",
                        i.p.accepted.version, i.p.accepted.term
                    ));
                }
                self.apply_committed(&mut i);
                Response::Ack
            }
            Request::FollowerCheck { term } => self.on_follower_check(from, term),
            Request::LeaderCheck => {
                let i = self.lock();
                match i.mode {
                    Mode::Leader if i.applied.nodes.contains_key(&from.id) => Response::Ack,
                    Mode::Leader => Response::Refused(format!(
                        "rejecting leader check since [{from}] has been removed from the cluster"
                    )),
                    _ => Response::Refused(format!(
                        "rejecting leader check from [{from}] sent to a node that is no longer the master"
                    )),
                }
            }
            Request::CreateIndex { name } => match self.create_index_as_master(&name).await {
                Ok(()) => Response::Ack,
                Err(e) => Response::Refused(e),
            },
        }
    }

    fn on_peers(&self, from: DiscoveryNode, known: Vec<DiscoveryNode>) -> Response {
        let mut i = self.lock();
        if matches!(i.mode, Mode::Candidate) {
            for k in known
                .into_iter()
                .chain([from])
                .filter(|k| k.id != self.local().id)
            {
                i.heard_of.insert(k.id.clone(), k);
            }
        }
        let master = match &i.mode {
            Mode::Leader => Some(self.local().clone()),
            Mode::Follower(l) => Some(l.clone()),
            Mode::Candidate => None,
        };
        Response::Peers {
            node: Box::new(self.local().clone()),
            master: master.map(Box::new),
            known: i
                .peers
                .values()
                .chain(i.applied.nodes.values())
                .cloned()
                .collect(),
        }
    }

    fn on_start_join(&self, term: u64) -> Response {
        let mut i = self.lock();
        if term <= i.p.current_term {
            return Response::Refused(format!(
                "incoming term {term} does not match current term {}",
                i.p.current_term
            ));
        }
        i.p.current_term = term;
        if let Err(e) = self.persist(&i) {
            return Response::Refused(e);
        }
        if !matches!(i.mode, Mode::Candidate) {
            self.become_candidate(&mut i, "joining a newer term");
        }
        Response::Vote {
            term,
            last_accepted_term: i.p.accepted.term,
            last_accepted_version: i.p.accepted.version,
        }
    }

    fn on_validate_join(&self, cluster_uuid: &str) -> Response {
        let i = self.lock();
        if i.p.accepted.uuid_committed && i.p.accepted.cluster_uuid != cluster_uuid {
            let msg = format!(
                "This node previously joined a cluster with UUID [{}] and is now trying to join a different cluster with UUID [{cluster_uuid}]. This is forbidden and usually indicates an incorrect discovery or cluster bootstrapping configuration. Note that the cluster UUID persists across restarts and can only be changed by deleting the contents of the node's data path [{}] which will also remove any data held by this node.",
                i.p.accepted.cluster_uuid, self.data_path_shown
            );
            tracing::warn!("{msg}");
            return Response::Refused(msg);
        }
        Response::Ack
    }

    async fn on_join(self: &Arc<Self>, from: DiscoveryNode) -> Response {
        let _guard = self.publish_lock.lock().await;
        if self.cfg.single_node {
            return Response::Refused(
                "cannot join node with [discovery.type] set to [single-node] discovery".into(),
            );
        }
        let applied = {
            let i = self.lock();
            if !matches!(i.mode, Mode::Leader) {
                return Response::Refused(format!(
                    "Node [{}] not master for join request",
                    self.local()
                ));
            }
            i.applied.clone()
        };
        match self
            .transport
            .send(
                from.address,
                &from.host,
                Request::ValidateJoin {
                    cluster_uuid: applied.cluster_uuid.clone(),
                },
                self.cfg.publish_timeout,
            )
            .await
        {
            Ok(_) => {}
            Err(TransportError::Refused(_, msg)) => return Response::Refused(msg),
            Err(e) => {
                return Response::Refused(format!(
                    "failure when sending a join validation request from [{}] to [{from}]: {e}",
                    self.local()
                ));
            }
        }
        if let Some(min) = applied.nodes.values().map(|n| n.version).min()
            && from.version < min
        {
            return Response::Refused(format!(
                "node version [{}] may not join a cluster comprising only nodes of version [{min}] or greater",
                from.version
            ));
        }
        let mut state = applied;
        // A node restarted elsewhere keeps its id; a different node at the same address replaces it.
        state
            .nodes
            .retain(|id, n| *id == from.id || n.address != from.address);
        state.nodes.insert(from.id.clone(), from.clone());
        match self.publish_next(state).await {
            Ok(()) => {
                tracing::info!(node = %self.local().name, "node-join[{from} join existing leader]");
                Response::Ack
            }
            Err(e) => Response::Refused(e),
        }
    }

    fn on_publish(&self, from: DiscoveryNode, state: ClusterState) -> Response {
        let mut i = self.lock();
        if state.term < i.p.current_term {
            return Response::Refused(format!(
                "incoming term {} does not match current term {}",
                state.term, i.p.current_term
            ));
        }
        if i.p.accepted.uuid_committed && state.cluster_uuid != i.p.accepted.cluster_uuid {
            return Response::Refused(format!(
                "received cluster state from {from} with a different cluster uuid {} than local cluster uuid {}, rejecting",
                state.cluster_uuid, i.p.accepted.cluster_uuid
            ));
        }
        if state.term == i.p.accepted.term && state.version < i.p.accepted.version {
            return Response::Refused(format!(
                "incoming version {} lower than current version {}",
                state.version, i.p.accepted.version
            ));
        }
        let Some(master) = state.master_node().cloned() else {
            return Response::Refused("published state names no master".into());
        };
        i.p.current_term = i.p.current_term.max(state.term);
        i.p.accepted = state;
        if let Err(e) = self.persist(&i) {
            return Response::Refused(e);
        }
        i.leader_failures = 0;
        i.mode = Mode::Follower(master);
        self.refresh_view(&i);
        Response::Ack
    }

    fn on_follower_check(&self, from: DiscoveryNode, term: u64) -> Response {
        let mut i = self.lock();
        if term < i.p.current_term {
            return Response::Refused(format!(
                "onFollowerCheckRequest: current term is [{}] which is greater than term [{term}] of the follower check",
                i.p.current_term
            ));
        }
        if term > i.p.current_term {
            i.p.current_term = term;
            if let Err(e) = self.persist(&i) {
                return Response::Refused(e);
            }
        }
        match &i.mode {
            Mode::Follower(l) if l.id == from.id => Response::Ack,
            _ if i.p.accepted.master.as_deref() == Some(&from.id) && i.p.accepted.term == term => {
                i.mode = Mode::Follower(from);
                self.refresh_view(&i);
                Response::Ack
            }
            _ => Response::Refused(format!("[{}] is not following [{from}]", self.local())),
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

    /// Adds index `name` to the cluster state through the master (what auto-creating an index does),
    /// waiting up to `timeout` for a master.
    pub async fn create_index(
        self: &Arc<Self>,
        name: &str,
        timeout: Duration,
    ) -> Result<(), ClusterError> {
        if self.view.borrow().state.indices.contains(name) {
            return Ok(());
        }
        let master = self
            .wait_for_master(timeout)
            .await
            .ok_or(ClusterError::NoMaster)?;
        if master.id == self.local().id {
            self.create_index_as_master(name)
                .await
                .map_err(ClusterError::Failed)?;
        } else {
            self.transport
                .send(
                    master.address,
                    &master.host,
                    Request::CreateIndex {
                        name: name.to_owned(),
                    },
                    timeout,
                )
                .await
                .map_err(|e| ClusterError::Failed(e.to_string()))?;
        }
        let mut rx = self.view.subscribe();
        let applied = rx.wait_for(|v| v.state.indices.contains(name));
        match tokio::time::timeout(timeout, applied).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(ClusterError::Failed(format!(
                "index [{name}] was created but this node has not applied it yet"
            ))),
        }
    }

    async fn create_index_as_master(self: &Arc<Self>, name: &str) -> Result<(), String> {
        let _guard = self.publish_lock.lock().await;
        let mut state = {
            let i = self.lock();
            if !matches!(i.mode, Mode::Leader) {
                return Err(format!(
                    "Node [{}] not master for index creation",
                    self.local()
                ));
            }
            if i.applied.indices.contains(name) {
                return Ok(());
            }
            i.applied.clone()
        };
        state.indices.insert(name.to_owned());
        self.publish_next(state).await
    }
}

#[derive(Debug, Clone, Copy)]
enum Task {
    Discovery,
    FollowerChecks,
    LeaderChecks,
}

fn live_master_eligible(state: &ClusterState) -> BTreeSet<String> {
    state
        .nodes
        .values()
        .filter(|n| n.is_master_eligible())
        .map(|n| n.id.clone())
        .collect()
}

/// `(matched node ids, unmatched requirements)`; refuses a requirement matching two nodes or a node
/// matching two requirements, as `ClusterBootstrapService` does.
fn check_requirements(
    nodes: &[DiscoveryNode],
    reqs: &[String],
) -> Result<(BTreeSet<String>, Vec<String>), String> {
    let mut selected = BTreeSet::new();
    let mut unmatched = Vec::new();
    for r in reqs {
        let matching: Vec<&DiscoveryNode> = nodes
            .iter()
            .filter(|n| n.is_master_eligible() && n.matches_requirement(r))
            .collect();
        match matching.as_slice() {
            [] => unmatched.push(r.clone()),
            [one] => {
                if !selected.insert(one.id.clone()) {
                    return Err(format!(
                        "node [{one}] matches multiple requirements: [{}]",
                        reqs.join(", ")
                    ));
                }
            }
            many => {
                let names: Vec<String> = many.iter().map(ToString::to_string).collect();
                return Err(format!(
                    "requirement [{r}] matches multiple nodes: [{}]",
                    names.join(", ")
                ));
            }
        }
    }
    Ok((selected, unmatched))
}

/// `host:port`, `[v6]:port` or a bare host (then `default_port`).
fn split_host_port(seed: &str, default_port: u16) -> (String, u16) {
    if let Some(rest) = seed.strip_prefix('[')
        && let Some((host, tail)) = rest.split_once(']')
    {
        let port = tail
            .strip_prefix(':')
            .and_then(|p| p.parse().ok())
            .unwrap_or(default_port);
        return (host.to_owned(), port);
    }
    match seed.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => {
            (host.to_owned(), port.parse().unwrap_or(default_port))
        }
        _ => (seed.to_owned(), default_port),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::es_standin::image::EsVersion;

    fn node(id: &str, name: &str, addr: &str) -> DiscoveryNode {
        DiscoveryNode {
            id: id.into(),
            name: name.into(),
            address: addr.parse().expect("addr"),
            host: "127.0.0.1".into(),
            roles: BTreeSet::from(["master".to_owned(), "data".to_owned()]),
            version: EsVersion::DEFAULT,
            attributes: BTreeMap::new(),
        }
    }

    #[test]
    fn bootstrap_requirements_match_names_addresses_and_ips() {
        let nodes = vec![
            node("i1", "es-1", "127.0.0.1:9301"),
            node("i2", "es-2", "127.0.0.2:9300"),
        ];
        let reqs: Vec<String> = ["es-1", "127.0.0.2", "es-3"].map(String::from).to_vec();
        let (matched, unmatched) = check_requirements(&nodes, &reqs).expect("ok");
        assert_eq!(matched, BTreeSet::from(["i1".to_owned(), "i2".to_owned()]));
        assert_eq!(unmatched, vec!["es-3".to_owned()]);
        let ambiguous: Vec<String> = ["127.0.0.1:9301", "es-1"].map(String::from).to_vec();
        assert!(check_requirements(&nodes, &ambiguous).is_err());
    }

    #[test]
    fn seeds_split_into_host_and_port() {
        assert_eq!(split_host_port("a:9301", 9300), ("a".into(), 9301));
        assert_eq!(split_host_port("a", 9300), ("a".into(), 9300));
        assert_eq!(split_host_port("[::1]:9305", 9300), ("::1".into(), 9305));
    }

    #[test]
    fn duplicate_or_single_node_initial_masters_are_refused() {
        let dup = Settings::from_pairs([("cluster.initial_master_nodes", "a,b,a")]);
        assert!(ClusterSettings::from_settings(&dup, "c", 9300, true).is_err());
        let single = Settings::from_pairs([
            ("cluster.initial_master_nodes", "a"),
            ("discovery.type", "single-node"),
        ]);
        assert_eq!(
            ClusterSettings::from_settings(&single, "c", 9300, true).map(|_| ()),
            Err(SettingsError::Invalid(
                "setting [cluster.initial_master_nodes] is not allowed when [discovery.type] is set to [single-node]".into()
            ))
        );
        assert!(ClusterSettings::from_settings(&single, "c", 9300, false).is_ok());
    }
}
