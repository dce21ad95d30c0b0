//! The scheduler's event loop: the one place where the core meets the world.
//!
//! Events from the Mesos subscription, the sidecars and the admin API are converted to domain types and
//! handed to the core with the current time; after each event the core's commands are executed strictly in
//! order. A `Persist` is written (fsynced) before any later command runs, so the slot's new task id is
//! durable before the LAUNCH that uses it is sent. Mesos calls go to one sender task that posts them in
//! order without blocking the loop.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tether_core::Core;
use tether_core::command::{Command, MesosCommand, SidecarCommand, WatchEvent};
use tether_core::config::{
    Config, Constraint, Containerizer as CoreContainerizer, Strategy, VolumeSpec,
};
use tether_core::ids::{FrameworkId, Hostname, Millis, NodeId};
use tether_core::state::{PersistedState, StateWrite};
use tether_core::view::NodePhase;
use tether_mesos::client::{
    Credential, FatalError, FrameworkSettings, MesosClient, MesosConfig, Notification,
};
use tether_mesos::model::{self, Call, EventType};
use tether_proto::v1 as pb;
use tether_proto::v1::admin_server::AdminServer;
use tether_proto::v1::agent_channel_server::AgentChannelServer;
use tether_proto::v1::agent_message::Body as AgentBody;
use tether_zk::{MasterDetector, MemberInfo, ZkConfig, ZkSession, ZkStore};
use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::admin::{AdminConfig, AdminRequest, AdminService};
use crate::agent_channel::{AgentChannelService, ChannelConfig, ConnId, SidecarEvent};
use crate::args::{Args, Containerizer, MasterSource};
use crate::auth::{Token, TokenError};
use crate::convert;
use crate::ha::Activity;
use crate::metrics::{Metrics, ReasonLabel};
use crate::store::file::{Apply, FileStore};
use crate::store::zk::ZkStateStore;
use crate::store::{StateStore, StoreError};
use crate::taskinfo::TaskCommand;

/// Why the scheduler stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the persisted state does not fit the configuration: {0}")]
    State(String),
    #[error(
        "Mesos master: {0}{hint}",
        hint = if .0.framework_removed() {
            " — this framework id was torn down; move the state directory aside to register a new framework"
        } else {
            ""
        }
    )]
    Mesos(FatalError),
    #[error("gRPC server failed: {0}")]
    Serve(String),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("ZooKeeper: {0}")]
    Zk(#[from] tether_zk::ZkError),
    #[error(transparent)]
    ZkUrl(#[from] tether_zk::UrlError),
    /// The session or the election znode is gone: another instance may lead now. The Mesos driver was
    /// stopped before this was returned; a supervisor restarts the process, which campaigns again.
    #[error("lost ZooKeeper leadership ({0}); stopped acting")]
    LeadershipLost(String),
}

impl Apply<StateWrite> for PersistedState {
    fn apply(&mut self, write: &StateWrite) {
        PersistedState::apply(self, write);
    }
}

/// The core's configuration from the flags.
pub fn core_config(args: &Args) -> Result<Config, SchedulerError> {
    let mut c = Config::new(&args.framework_name);
    c.cluster_name = args.cluster_name.clone();
    c.first_id = args.first_id;
    c.volumes = args
        .volumes
        .iter()
        .map(|v| {
            let (suffix, path) = v.split_once(':').ok_or_else(|| {
                SchedulerError::Config(format!("--volume {v:?}: expected suffix:container-path"))
            })?;
            Ok(VolumeSpec {
                suffix: suffix.to_owned(),
                container_path: path.to_owned(),
            })
        })
        .collect::<Result<_, SchedulerError>>()?;
    c.volume_name_template = args.volume_name_template.clone();
    let options = args
        .volume_options
        .iter()
        .map(|o| {
            o.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| {
                    SchedulerError::Config(format!("--volume-option {o:?}: expected key=value"))
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    c.strategy = if args.external_volume_driver.is_empty() {
        Strategy::Normal
    } else {
        Strategy::External {
            driver: args.external_volume_driver.clone(),
            auto_create: args.auto_create_volumes,
            create_options: options.clone(),
            driver_options: options,
        }
    };
    c.containerizer = match args.containerizer {
        Containerizer::Docker => CoreContainerizer::Docker,
        Containerizer::Mesos => CoreContainerizer::Mesos,
    };
    c.image = args.image.clone();
    c.cpus = args.cpus;
    c.mem_mb = args.mem;
    c.disk_mb = args.disk;
    c.heap_mb = args.heap.unwrap_or((args.mem / 2.0) as u64);
    c.constraints = args
        .constraints
        .iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| Constraint::parse(s.trim()).map_err(|e| SchedulerError::Config(e.to_string())))
        .collect::<Result<_, _>>()?;
    c.report_interval_ms = args.report_interval.as_millis() as u64;
    c.prepare_hold_ms = args.prepare_timeout.as_millis() as u64;
    c.implicit_reconcile_ms = args.reconcile_interval.as_millis() as u64;
    c.startup_grace_ms = args.startup_grace.as_millis() as u64;
    c.validate()
        .map_err(|e| SchedulerError::Config(e.to_string()))?;
    Ok(c)
}

fn mesos_config(args: &Args) -> Result<MesosConfig, SchedulerError> {
    let credential = match (&args.principal, &args.secret_file) {
        (Some(p), Some(f)) => Some(
            Credential::from_secret_file(p.clone(), f)
                .map_err(|e| SchedulerError::Config(e.to_string()))?,
        ),
        (None, Some(_)) => {
            return Err(SchedulerError::Config(
                "--secret-file needs --principal".into(),
            ));
        }
        _ => None,
    };
    let hostname = args.hostname.clone().or_else(|| {
        rustix::system::uname()
            .nodename()
            .to_str()
            .ok()
            .map(str::to_owned)
    });
    Ok(MesosConfig {
        // Replaced by the detected leader when `--master` is a zk:// URL.
        masters: match args.master_source()? {
            MasterSource::Http(list) => list,
            MasterSource::Zk(_) => vec!["http://127.0.0.1:5050".into()],
        },
        framework: FrameworkSettings {
            user: args.user.clone(),
            name: args.framework_name.clone(),
            roles: vec![args.role.clone()],
            failover_timeout: args.failover_timeout,
            hostname,
            principal: args.principal.clone(),
            webui_url: None,
            labels: None,
        },
        credential,
        max_frame: (args.max_event_mib as usize) << 20,
        master_ca: args.master_ca.clone(),
        ..MesosConfig::default()
    })
}

fn load_token(path: Option<&Path>) -> Result<Option<Token>, TokenError> {
    path.map(Token::from_file).transpose()
}

/// A connected sidecar, by host.
#[derive(Debug)]
struct SidecarConn {
    conn: ConnId,
    outbox: mpsc::Sender<pb::SchedulerMessage>,
}

/// Everything the loop owns besides the core.
struct Shell {
    core: Core,
    store: StateStore,
    started: Instant,
    started_unix_ms: u64,
    calls: mpsc::UnboundedSender<Call>,
    sidecars: HashMap<Hostname, SidecarConn>,
    hosts_by_conn: HashMap<ConnId, Hostname>,
    events: broadcast::Sender<pb::ClusterEvent>,
    metrics: Metrics,
    master: String,
    task_command: TaskCommand,
    roles: Vec<String>,
    driver: String,
    framework_name: String,
    /// This instance's advertised admin address when it won a ZooKeeper election (empty otherwise).
    leader_address: String,
}

impl Shell {
    fn now(&self) -> Millis {
        Millis(self.started.elapsed().as_millis() as u64)
    }

    fn unix_ms(&self, at: Millis) -> u64 {
        self.started_unix_ms + at.0
    }

    /// Executes the core's commands in order. A store failure stops everything: acting on state that
    /// could not be persisted would break "nothing acknowledged is lost".
    async fn drain(&mut self) -> Result<(), SchedulerError> {
        let mut batch: Vec<StateWrite> = Vec::new();
        while let Some(cmd) = self.core.poll_command() {
            if let Command::Persist(w) = cmd {
                batch.push(w);
                continue;
            }
            self.flush(&mut batch).await?;
            match cmd {
                Command::Persist(_) => {}
                Command::Mesos(m) => self.mesos(m),
                Command::Sidecar { host, command } => self.sidecar(&host, &command),
                Command::Watch(e) => self.watch(e),
            }
        }
        self.flush(&mut batch).await
    }

    async fn flush(&mut self, batch: &mut Vec<StateWrite>) -> Result<(), SchedulerError> {
        if batch.is_empty() {
            return Ok(());
        }
        let t = Instant::now();
        self.store.write(batch).await?;
        self.metrics
            .state_write_seconds
            .observe(t.elapsed().as_secs_f64());
        batch.clear();
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
        let call = convert::mesos_call(&m, &self.task_command, &self.roles);
        let _ = self.calls.send(call);
    }

    fn sidecar(&mut self, host: &Hostname, command: &SidecarCommand) {
        let Some(conn) = self.sidecars.get(host) else {
            // The core times the command out; nothing else to do.
            tracing::warn!(host = %host.as_str(), "no sidecar connected for a command");
            return;
        };
        if conn
            .outbox
            .try_send(convert::sidecar_command(command))
            .is_err()
        {
            tracing::warn!(host = %host.as_str(), "sidecar outbox full or closed; command dropped");
        }
    }

    fn watch(&mut self, e: WatchEvent) {
        let at = self.unix_ms(self.now());
        let (kind, node_id, host, task_id, message) = match &e {
            WatchEvent::Subscribed { framework_id } => (
                "subscribed",
                None,
                None,
                None,
                format!("framework {framework_id}"),
            ),
            WatchEvent::Disconnected => (
                "disconnected",
                None,
                None,
                None,
                "subscription ended".to_owned(),
            ),
            WatchEvent::Preparing { node_id, host } => (
                "preparing",
                Some(*node_id),
                Some(host.as_str()),
                None,
                "preparing volumes".to_owned(),
            ),
            WatchEvent::Launched {
                node_id,
                task_id,
                host,
            } => (
                "launch",
                Some(*node_id),
                Some(host.as_str()),
                Some(task_id.as_str()),
                "launched".to_owned(),
            ),
            WatchEvent::TaskState {
                node_id,
                task_id,
                state,
            } => (
                "node_state",
                Some(*node_id),
                None,
                Some(task_id.as_str()),
                state.clone(),
            ),
            WatchEvent::NodeWaiting { node_id, reason } => {
                ("node_waiting", Some(*node_id), None, None, reason.clone())
            }
            WatchEvent::OffersDeclined { by_reason } => {
                for (reason, n) in by_reason {
                    self.metrics
                        .offers_declined
                        .get_or_create(&ReasonLabel {
                            reason: reason_kind(reason),
                        })
                        .inc_by(*n as u64);
                }
                let text = by_reason
                    .iter()
                    .map(|(r, n)| format!("{n}× {r}"))
                    .collect::<Vec<_>>()
                    .join("; ");
                ("offers_declined", None, None, None, text)
            }
            WatchEvent::Scaled { from, to } => {
                ("scale", None, None, None, format!("{from} -> {to}"))
            }
            WatchEvent::Replaced { node_id, force } => (
                "replace",
                Some(*node_id),
                None,
                None,
                format!("replacement requested (force: {force})"),
            ),
            WatchEvent::StrayTask { task_id, state } => (
                "stray_task",
                None,
                None,
                Some(task_id.as_str()),
                format!("killing stray task in {state}"),
            ),
            WatchEvent::Warning { message } => ("warning", None, None, None, message.clone()),
        };
        tracing::info!(
            kind,
            node_id = node_id.map(|n: NodeId| n.0),
            host,
            task_id,
            "{message}"
        );
        let _ = self.events.send(pb::ClusterEvent {
            at_unix_ms: at,
            kind: kind.to_owned(),
            node_id: node_id.map(|n| n.0),
            host: host.unwrap_or_default().to_owned(),
            task_id: task_id.unwrap_or_default().to_owned(),
            message,
        });
    }

    fn on_mesos(&mut self, n: Notification) -> Result<(), SchedulerError> {
        let now = self.now();
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
                match FrameworkId::new(&framework_id.value) {
                    Ok(id) => self.core.handle_subscribed(id, now),
                    Err(e) => tracing::error!(error = %e, "master sent an invalid framework id"),
                }
            }
            Notification::Disconnected { reason } => {
                tracing::warn!(%reason, "Mesos subscription lost; resubscribing");
                self.master.clear();
                self.core.handle_disconnected(now);
            }
            Notification::Fatal(e) => return Err(SchedulerError::Mesos(e)),
            Notification::Event(ev) => self.on_event(*ev, now),
        }
        Ok(())
    }

    fn on_event(&mut self, ev: model::Event, now: Millis) {
        match ev.event_type {
            EventType::Offers => {
                let offers = ev.offers.map(|o| o.offers).unwrap_or_default();
                self.metrics.offers_received.inc_by(offers.len() as u64);
                let mut good = Vec::with_capacity(offers.len());
                for o in offers {
                    match convert::offer(&o) {
                        Ok(d) => good.push(d),
                        Err(e) => {
                            // Not placeable, but the master still counts it as ours until declined.
                            tracing::warn!(offer = %o.id, error = %e, "declining an offer the core cannot read");
                            let _ = self.calls.send(Call::decline(vec![o.id], None));
                        }
                    }
                }
                self.core.handle_offers(good, now);
            }
            EventType::Rescind => {
                if let Some(r) = ev.rescind {
                    match tether_core::ids::OfferId::new(&r.offer_id.value) {
                        Ok(id) => self.core.handle_rescind(&id, now),
                        Err(e) => tracing::warn!(error = %e, "rescind of an unreadable offer id"),
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
                    match tether_core::ids::AgentId::new(&agent.value) {
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
            | EventType::InverseOffers
            | EventType::RescindInverseOffer
            | EventType::Message
            | EventType::UpdateOperationStatus
            | EventType::Unknown => {}
        }
    }

    fn on_sidecar(&mut self, e: SidecarEvent) {
        let now = self.now();
        match e {
            SidecarEvent::Connected {
                conn,
                hello,
                outbox,
            } => match convert::hello(&hello) {
                Ok(h) => {
                    let host = h.hostname.clone();
                    tracing::info!(host = %host.as_str(), driver = %h.driver_name, "sidecar connected");
                    // A newer stream from the same host replaces the old one (its outbox is dropped,
                    // which ends that stream).
                    if let Some(old) = self
                        .sidecars
                        .insert(host.clone(), SidecarConn { conn, outbox })
                    {
                        self.hosts_by_conn.remove(&old.conn);
                    }
                    self.hosts_by_conn.insert(conn, host);
                    self.metrics
                        .sidecars_connected
                        .set(self.sidecars.len() as i64);
                    self.core.handle_sidecar_hello(h, now);
                }
                Err(e) => tracing::warn!(error = %e, "refusing a sidecar hello"),
            },
            SidecarEvent::Message { conn, body } => {
                let Some(host) = self.hosts_by_conn.get(&conn).cloned() else {
                    return;
                };
                match body {
                    AgentBody::Report(r) => match convert::report(&r) {
                        Ok(r) => {
                            self.metrics.sidecar_reports.inc();
                            self.core.handle_sidecar_report(&host, r, now);
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

    /// Answers an admin request. Writes reply only after their commands were drained, so a successful
    /// `Scale` is durable when the client hears of it.
    async fn on_admin(&mut self, req: AdminRequest) -> Result<(), SchedulerError> {
        let now = self.now();
        match req {
            AdminRequest::GetCluster(reply) => {
                let c = self.core.cluster();
                let _ = reply.send(pb::Cluster {
                    framework_id: c.framework_id.unwrap_or_default(),
                    framework_name: self.framework_name.clone(),
                    master: self.master.clone(),
                    subscribed_since_unix_ms: c.subscribed_since.map_or(0, |s| self.unix_ms(s)),
                    desired: c.desired,
                    running: c.running,
                    strategy: c.strategy,
                    driver: self.driver.clone(),
                    leader: true,
                    leader_address: self.leader_address.clone(),
                });
            }
            AdminRequest::ListNodes(reply) => {
                let nodes = self
                    .core
                    .nodes()
                    .into_iter()
                    .map(|n| self.node(n))
                    .collect();
                let _ = reply.send(pb::ListNodesResponse { nodes });
            }
            AdminRequest::ListAgents(reply) => {
                let agents = self
                    .core
                    .agents(now)
                    .into_iter()
                    .map(|a| pb::Agent {
                        host: a.host.as_str().to_owned(),
                        agent_id: a
                            .agent_id
                            .map(|i| i.as_str().to_owned())
                            .unwrap_or_default(),
                        sidecar_connected: a.sidecar_connected,
                        last_report_age_ms: a.last_report_at.map(|t| now.since(t)),
                        driver_healthy: a.driver_healthy,
                        driver_latency_micros: a.driver_latency_micros,
                        driver_error: String::new(),
                        zone: a.zone.unwrap_or_default(),
                        attachments_used: a.attachments_used,
                        attachments_max: a.attachments_max.unwrap_or(0),
                        volumes_seen: a.volumes_seen.len() as u32,
                        last_decline_reason: a.last_decline.unwrap_or_default(),
                    })
                    .collect();
                let _ = reply.send(pb::ListAgentsResponse { agents });
            }
            AdminRequest::ListVolumes(reply) => {
                let volumes = self
                    .core
                    .volumes()
                    .into_iter()
                    .map(|v| pb::Volume {
                        name: v.name.as_str().to_owned(),
                        node_id: v.node_id.0,
                        exists: v.exists.unwrap_or(false),
                        size_bytes: v.size_bytes,
                        free_bytes: v.free_bytes,
                        zone: v.zone.unwrap_or_default(),
                        attached_to: v
                            .attached_to
                            .iter()
                            .map(|h| h.as_str())
                            .collect::<Vec<_>>()
                            .join(","),
                        last_error: v.last_error.unwrap_or_default(),
                    })
                    .collect();
                let _ = reply.send(pb::ListVolumesResponse { volumes });
            }
            AdminRequest::Scale { nodes, reply } => {
                let previous = self.core.persisted().desired;
                match self.core.handle_scale(nodes, now) {
                    Ok(plan) => {
                        self.drain().await?;
                        let _ = reply.send(Ok(pb::ScaleResponse {
                            previous,
                            desired: nodes,
                            start: plan.start.iter().map(|n| n.0).collect(),
                            stop: plan.stop.iter().map(|n| n.0).collect(),
                        }));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(Status::invalid_argument(e.to_string())));
                    }
                }
            }
            AdminRequest::Replace {
                node_id,
                force,
                reply,
            } => {
                let old = self
                    .core
                    .persisted()
                    .slots
                    .get(&NodeId(node_id))
                    .and_then(|s| s.task.as_ref())
                    .map(|t| t.task_id.as_str().to_owned())
                    .unwrap_or_default();
                match self.core.handle_replace(NodeId(node_id), force, now) {
                    Ok(()) => {
                        self.drain().await?;
                        let message = if force {
                            "forced: the old task is being killed and the node relaunches on the next suitable offer"
                        } else {
                            "the node relaunches on the next suitable offer"
                        };
                        let _ = reply.send(Ok(pb::ReplaceNodeResponse {
                            node_id,
                            old_task_id: old,
                            message: message.to_owned(),
                        }));
                    }
                    Err(e @ tether_core::error::CoreError::TaskMayBeAlive { .. }) => {
                        let _ = reply.send(Err(Status::failed_precondition(e.to_string())));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(Status::invalid_argument(e.to_string())));
                    }
                }
            }
        }
        Ok(())
    }

    fn node(&self, n: tether_core::view::NodeView) -> pb::Node {
        let state = match &n.phase {
            NodePhase::Pending => "PENDING".to_owned(),
            NodePhase::Preparing => "PREPARING".to_owned(),
            NodePhase::Task(Some(s)) => s.strip_prefix("TASK_").unwrap_or(s).to_owned(),
            NodePhase::Task(None) => "STAGING".to_owned(),
            NodePhase::Stopping => "STOPPING".to_owned(),
            NodePhase::Stopped => "STOPPED".to_owned(),
        };
        let (http_port, transport_port) = n
            .ports
            .map_or((0, 0), |(h, t)| (u32::from(h), u32::from(t)));
        pb::Node {
            id: n.node_id.0,
            state,
            task_id: n.task_id.map(|t| t.as_str().to_owned()).unwrap_or_default(),
            agent_id: n
                .agent_id
                .map(|a| a.as_str().to_owned())
                .unwrap_or_default(),
            host: n.host.map(|h| h.as_str().to_owned()).unwrap_or_default(),
            http_port,
            transport_port,
            volumes: n.volumes.iter().map(|v| v.as_str().to_owned()).collect(),
            reason: n.last_reason.unwrap_or_default(),
            since_unix_ms: self.unix_ms(n.since),
        }
    }

    fn refresh_gauges(&self) {
        let nodes = self.core.nodes();
        let running = nodes
            .iter()
            .filter(|n| n.phase == NodePhase::Task(Some("TASK_RUNNING".into())))
            .count();
        let fenced = nodes
            .iter()
            .filter(|n| {
                matches!(&n.phase, NodePhase::Task(Some(s)) if s == "TASK_UNREACHABLE" || s == "TASK_UNKNOWN")
            })
            .count();
        self.metrics.nodes_running.set(running as i64);
        self.metrics.fenced_slots.set(fenced as i64);
        self.metrics
            .nodes_desired
            .set(self.core.persisted().desired as i64);
    }
}

/// The metric label for a decline reason: its first words before any that carries a value (a number, a
/// volume or host name), so the label set stays small whatever the values.
fn reason_kind(reason: &str) -> String {
    let mut words = Vec::new();
    for w in reason.split_whitespace().take(3) {
        if w.chars()
            .any(|c| c.is_ascii_digit() || c == '"' || c == ':' || c == '/')
        {
            break;
        }
        words.push(
            w.chars()
                .filter(char::is_ascii_alphanumeric)
                .collect::<String>()
                .to_ascii_lowercase(),
        );
    }
    words.retain(|w| !w.is_empty());
    if words.is_empty() {
        "other".to_owned()
    } else {
        words.join("_")
    }
}

/// Where the state lives: the embedded store (locked at start, this instance always leads) or
/// ZooKeeper (loaded once this instance is elected).
enum Backend {
    File(FileStore<PersistedState, StateWrite>),
    Zk(ZkConfig),
}

/// What winning the election hands the loop.
struct Elected {
    store: ZkStateStore,
    lost: CancellationToken,
    candidate: tether_zk::Candidate,
}

fn hostname(args: &Args) -> String {
    args.hostname.clone().unwrap_or_else(|| {
        rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned()
    })
}

/// The admin address a standby names: `--advertise-address`, else `--listen` with the host name in
/// place of an unspecified address.
fn advertise_address(args: &Args) -> String {
    args.advertise_address.clone().unwrap_or_else(|| {
        if args.listen.ip().is_unspecified() {
            format!("{}:{}", hostname(args), args.listen.port())
        } else {
            args.listen.to_string()
        }
    })
}

/// Campaigns until elected (or `shutdown`), keeping `activity` saying who leads meanwhile, then loads
/// the state with writes fenced on this instance's election znode.
async fn elect(
    args: &Args,
    zk: &ZkConfig,
    activity: &std::sync::Arc<watch::Sender<Activity>>,
    shutdown: &CancellationToken,
) -> Result<Option<Elected>, SchedulerError> {
    let session = ZkSession::connect(zk).await?;
    let id = format!(
        "{}-{}-{}",
        hostname(args),
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
    );
    let me = MemberInfo::now(id, advertise_address(args));
    let mut candidate = tether_zk::campaign(&session, me)
        .await
        .map_err(|e| SchedulerError::LeadershipLost(e.to_string()))?;
    let mut roles = candidate.role();
    let tx = activity.clone();
    tokio::spawn(async move {
        loop {
            let role = roles.borrow_and_update().clone();
            match role {
                tether_zk::Role::Follower { leader } => {
                    let leader = leader.map(|m| m.admin_address);
                    // Only the loop turns an instance into the leader, and a leader only leaves through
                    // `Lost`, so a follower update never overwrites `Leading`.
                    tx.send_if_modified(|a| {
                        let next = Activity::Standby { leader };
                        if *a == Activity::Leading || *a == next {
                            return false;
                        }
                        *a = next;
                        true
                    });
                }
                tether_zk::Role::Lost { .. } => {
                    tx.send_replace(Activity::Standby { leader: None });
                }
                tether_zk::Role::Leader => {}
            }
            if roles.changed().await.is_err() {
                return;
            }
        }
    });
    tracing::info!(member = %candidate.member_path(), "standing by until elected leader");
    let leadership = tokio::select! {
        () = shutdown.cancelled() => {
            candidate.resign().await;
            return Ok(None);
        }
        r = candidate.elected() => r.map_err(|e| SchedulerError::LeadershipLost(e.to_string()))?,
    };
    tracing::info!(member = %candidate.member_path(), "elected leader; loading the state from ZooKeeper");
    let store = ZkStore::open(session, Some(leadership.fence()))
        .await
        .map_err(StoreError::from)?;
    let store = ZkStateStore::load(store).await?;
    Ok(Some(Elected {
        store,
        lost: leadership.lost(),
        candidate,
    }))
}

/// Runs one Mesos driver at a time against the master ZooKeeper says leads, replacing it (same framework
/// id) whenever the leader changes.
async fn follow_masters(
    detector: MasterDetector,
    settings: MesosConfig,
    mut framework_id: Option<model::FrameworkID>,
    clients: watch::Sender<Option<MesosClient>>,
    tx: mpsc::Sender<Notification>,
    cancel: CancellationToken,
) {
    let mut leaders = detector.watch();
    let mut current: Option<(String, CancellationToken)> = None;
    loop {
        let want = leaders
            .borrow_and_update()
            .as_ref()
            .map(tether_zk::MasterAddr::url);
        if want.as_deref() != current.as_ref().map(|(url, _)| url.as_str()) {
            if let Some((old, stop)) = current.take() {
                stop.cancel();
                if let Some(id) = clients
                    .borrow()
                    .as_ref()
                    .and_then(MesosClient::framework_id)
                {
                    framework_id = Some(id);
                }
                clients.send_replace(None);
                let reason = format!("the leading Mesos master is no longer {old}");
                if tx
                    .send(Notification::Disconnected { reason })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            if let Some(url) = want {
                let config = MesosConfig {
                    masters: vec![url.clone()],
                    ..settings.clone()
                };
                match MesosClient::new(config) {
                    Ok(client) => {
                        tracing::info!(master = %url, "subscribing to the leading Mesos master");
                        client.set_framework_id(framework_id.clone());
                        clients.send_replace(Some(client.clone()));
                        let stop = cancel.child_token();
                        tokio::spawn(client.run(tx.clone(), stop.clone()));
                        current = Some((url, stop));
                    }
                    Err(e) => {
                        tracing::error!(master = %url, error = %e, "unusable master address in ZooKeeper")
                    }
                }
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            r = leaders.changed() => if r.is_err() { return },
        }
    }
}

/// Runs the scheduler until `shutdown` is cancelled or a fatal error. Tasks keep running when it stops:
/// SIGTERM never wipes state or kills tasks.
///
/// With `--state zk://...` the instance first stands by in the leader election (answering `GetCluster`
/// with who leads, refusing everything else) and acts only once elected. On losing the session it stops
/// the Mesos driver and refuses calls first, then returns [`SchedulerError::LeadershipLost`].
pub async fn run(args: Args, shutdown: CancellationToken) -> Result<(), SchedulerError> {
    let config = core_config(&args)?;
    let master_source = args.master_source()?;
    let mesos_settings = mesos_config(&args)?;
    if let MasterSource::Http(_) = master_source {
        // Refuse bad master URLs before anything else.
        MesosClient::new(mesos_settings.clone())
            .map_err(|e| SchedulerError::Config(e.to_string()))?;
    }
    let agent_token = load_token(args.agent_token_file.as_deref())?;
    let admin_token = load_token(args.admin_token_file.as_deref())?;
    if agent_token.is_none() || admin_token.is_none() {
        tracing::warn!(
            agent = agent_token.is_some(),
            admin = admin_token.is_some(),
            "a gRPC API is running without a token: anyone who can reach --listen may use it"
        );
    }

    let mut server_builder = crate::tls::server_builder(&args)?;

    let backend = match args.state_url() {
        None => Backend::File(FileStore::open(&args.state_dir)?),
        Some(url) => Backend::Zk(args.zk.config(url)?),
    };
    let activity = std::sync::Arc::new(
        watch::channel(match backend {
            Backend::File(_) => Activity::Leading,
            Backend::Zk(_) => Activity::Standby { leader: None },
        })
        .0,
    );

    let (sidecar_tx, mut sidecar_rx) = mpsc::channel(1024);
    let (admin_tx, mut admin_rx) = mpsc::channel(64);
    let (events_tx, _) = broadcast::channel(1024);
    let (mesos_tx, mut mesos_rx) = mpsc::channel(256);
    let (calls_tx, mut calls_rx) = mpsc::unbounded_channel::<Call>();
    let metrics = Metrics::new();

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| SchedulerError::Listen {
            addr: args.listen,
            source,
        })?;
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    // The admin service reports SERVING only while this instance leads, so a load balancer or proxy
    // health-checking the schedulers sends clients (and sidecars) to the leader.
    {
        async fn report(health: &tonic_health::server::HealthReporter, leading: bool) {
            if leading {
                health.set_serving::<AdminServer<AdminService>>().await;
            } else {
                health.set_not_serving::<AdminServer<AdminService>>().await;
            }
        }
        let mut activity = activity.subscribe();
        let leading = *activity.borrow_and_update() == Activity::Leading;
        // Set before the listener serves, so the first health check already has an answer.
        report(&health_reporter, leading).await;
        tokio::spawn(async move {
            while activity.changed().await.is_ok() {
                let leading = *activity.borrow_and_update() == Activity::Leading;
                report(&health_reporter, leading).await;
            }
        });
    }
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tether_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| SchedulerError::Serve(e.to_string()))?;
    let agent_service = AgentChannelService::new(
        ChannelConfig {
            token: agent_token,
            ..Default::default()
        },
        sidecar_tx,
    )
    .with_activity(activity.subscribe());
    let admin_service = AdminService::new(
        AdminConfig {
            token: admin_token,
            open_reads: args.admin_open_reads,
            max_nodes: args.max_nodes,
        },
        admin_tx,
        events_tx.clone(),
    )
    .with_activity(activity.subscribe(), &args.framework_name);
    let server_shutdown = shutdown.clone();
    tracing::info!(listen = %args.listen, tls = args.tls_cert.is_some(), mutual_tls = args.tls_client_ca.is_some(), "serving sidecars and the admin API");
    let server = tokio::spawn(
        server_builder
            .add_service(health_service)
            .add_service(reflection)
            .add_service(AgentChannelServer::new(agent_service))
            .add_service(AdminServer::new(admin_service))
            .serve_with_incoming_shutdown(
                TcpListenerStream::new(listener),
                server_shutdown.cancelled_owned(),
            ),
    );
    if let Some(addr) = args.metrics_listen {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| SchedulerError::Listen { addr, source })?;
        tokio::spawn(tether_telemetry::serve_metrics(
            l,
            metrics.registry.clone(),
            shutdown.clone(),
        ));
    }

    // `lost` never fires for the embedded store: that instance leads for as long as it runs.
    let (store, lost, candidate) = match backend {
        Backend::File(f) => (StateStore::File(f), CancellationToken::new(), None),
        Backend::Zk(zk) => match elect(&args, &zk, &activity, &shutdown).await {
            Ok(Some(e)) => (StateStore::Zk(Box::new(e.store)), e.lost, Some(e.candidate)),
            Ok(None) => {
                let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
                return Ok(());
            }
            Err(e) => {
                shutdown.cancel();
                return Err(e);
            }
        },
    };

    let fresh = store.is_fresh();
    let persisted = store.state().clone();
    let mut core =
        Core::new(config, persisted).map_err(|e| SchedulerError::State(e.to_string()))?;
    let started = Instant::now();
    if fresh {
        core.handle_scale(args.nodes, Millis(0))
            .map_err(|e| SchedulerError::Config(e.to_string()))?;
    }
    let framework_id = core
        .persisted()
        .framework_id
        .as_ref()
        .map(|id| model::FrameworkID::new(id.as_str()));

    let mesos_cancel = shutdown.child_token();
    // Stop acting the moment leadership ends, whatever the loop is doing (a state write may be waiting
    // on ZooKeeper): refuse calls, stop the driver. Queued Mesos calls are dropped by the sender below.
    {
        let lost = lost.clone();
        let activity = activity.clone();
        let mesos_cancel = mesos_cancel.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                biased;
                () = lost.cancelled() => {
                    activity.send_replace(Activity::Standby { leader: None });
                    mesos_cancel.cancel();
                    tracing::error!("lost ZooKeeper leadership: stopped the Mesos driver and refusing calls");
                }
                () = shutdown.cancelled() => {}
            }
        });
    }
    activity.send_replace(Activity::Leading);

    let (clients_tx, clients_rx) = watch::channel::<Option<MesosClient>>(None);
    let sender_lost = lost.clone();
    tokio::spawn(async move {
        while let Some(call) = calls_rx.recv().await {
            if sender_lost.is_cancelled() {
                tracing::warn!("dropping a Mesos call: no longer the leader");
                continue;
            }
            let Some(client) = clients_rx.borrow().clone() else {
                tracing::warn!("dropping a Mesos call: no leading master known");
                continue;
            };
            if let Err(e) = client.send(call).await {
                // The core's timers and reconciliation recover from a lost call; say what happened.
                tracing::warn!(error = %e, "Mesos call failed");
            }
        }
    });
    match master_source {
        MasterSource::Http(_) => {
            let mesos = MesosClient::new(mesos_settings)
                .map_err(|e| SchedulerError::Config(e.to_string()))?;
            mesos.set_framework_id(framework_id);
            clients_tx.send_replace(Some(mesos.clone()));
            tokio::spawn(mesos.run(mesos_tx, mesos_cancel.clone()));
        }
        MasterSource::Zk(url) => {
            let detector = MasterDetector::start(args.zk.config(url)?).await?;
            tokio::spawn(follow_masters(
                detector,
                mesos_settings,
                framework_id,
                clients_tx,
                mesos_tx,
                mesos_cancel.clone(),
            ));
        }
    }

    let started_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut shell = Shell {
        core,
        store,
        started,
        started_unix_ms,
        calls: calls_tx,
        sidecars: HashMap::new(),
        hosts_by_conn: HashMap::new(),
        events: events_tx,
        metrics,
        master: String::new(),
        task_command: match (&args.exec, args.command.is_empty()) {
            (Some(program), _) => TaskCommand::Exec {
                program: program.clone(),
                args: args.exec_args.clone(),
            },
            (None, false) => TaskCommand::Shell(args.command.clone()),
            (None, true) => TaskCommand::Image,
        },
        roles: vec![args.role.clone()],
        driver: args.external_volume_driver.clone(),
        framework_name: args.framework_name.clone(),
        leader_address: if candidate.is_some() {
            advertise_address(&args)
        } else {
            String::new()
        },
    };

    let mut gauges = tokio::time::interval(Duration::from_secs(1));
    let mut result = shell.drain().await;
    while result.is_ok() {
        let wake = shell.core.poll_timeout().map(|at| {
            let now = shell.now();
            tokio::time::Instant::now() + Duration::from_millis(at.0.saturating_sub(now.0))
        });
        // Biased: once leadership is lost, no further event is handled.
        let step: Result<(), SchedulerError> = tokio::select! {
            biased;
            () = lost.cancelled() => Err(SchedulerError::LeadershipLost(
                "the ZooKeeper session was lost or the election znode is gone".into(),
            )),
            () = shutdown.cancelled() => break,
            Some(n) = mesos_rx.recv() => shell.on_mesos(n),
            Some(e) = sidecar_rx.recv() => { shell.on_sidecar(e); Ok(()) }
            Some(r) = admin_rx.recv() => shell.on_admin(r).await,
            () = sleep_until(wake) => { let now = shell.now(); shell.core.handle_timeout(now); Ok(()) }
            _ = gauges.tick() => { shell.refresh_gauges(); Ok(()) }
        };
        result = match step {
            Ok(()) => shell.drain().await,
            Err(e) => Err(e),
        };
    }
    if result.is_err() {
        // Another instance may lead (or the state could not be written): stop acting before anything
        // else, so nothing this instance still has queued reaches Mesos.
        activity.send_replace(Activity::Standby { leader: None });
    }
    mesos_cancel.cancel();
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    if let Some(candidate) = candidate {
        if result.is_ok() {
            // Hand over at once rather than after the session timeout.
            candidate.resign().await;
        } else {
            // The session may be gone: do not wait on it; the znode goes with the session.
            drop(candidate);
        }
    }
    tracing::info!("scheduler stopped; tasks keep running and the state is persisted");
    result
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

    #[test]
    fn decline_reason_labels_stay_small() {
        assert_eq!(reason_kind("cpus 0.5 < 1"), "cpus");
        assert_eq!(
            reason_kind("the agent's tether-sidecar is disconnected"),
            "the_agents_tethersidecar"
        );
        assert_eq!(
            reason_kind("volume elasticsearch1data does not exist"),
            "volume"
        );
        assert_eq!(reason_kind("17"), "other");
    }
}
