//! The scheduler as a server, in two steps.
//!
//! [`bind`] does everything that can fail on a bad flag, file or port, and starts nothing: the core's
//! and the Mesos client's configuration, token and TLS files, both listeners, the embedded store (opened
//! and locked). With `--state zk://...` the store is loaded only once this instance is elected, in serve.
//!
//! [`Bound::serve`] runs it: the listeners first (a standby answers who leads), then the election when
//! there is one, then the Mesos driver and call sender and the loop (`run.rs`). Every task goes to one
//! [`Supervisor`]; any of them ending stops the loop with that task's error. On the way out the stages
//! stop in [`Stage::STOP_ORDER`]: the driver, then (with the loop gone and the call queue closed) the
//! call sender, then the listeners, then the election.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tether_core::Core;
use tether_core::domain::EsCluster;
use tether_core::ids::Millis;
use tether_mesos::client::{MesosClient, Notification};
use tether_mesos::model::FrameworkID;
use tether_proto::v1 as pb;
use tether_proto::v1::admin_server::AdminServer;
use tether_proto::v1::agent_channel_server::AgentChannelServer;
use tether_zk::{Candidate, MasterDetector, ZkConfig};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Router;
use tonic_health::server::HealthReporter;

use crate::admin::{AdminConfig, AdminService};
use crate::agent_channel::{AgentChannelService, ChannelConfig};
use crate::agent_identity::{AgentAuth, AgentSecret};
use crate::args::{Args, MasterSource};
use crate::config;
use crate::elasticsearch::{self, EsClient, EsClientConfig};
use crate::election;
use crate::error::SchedulerError;
use crate::ha::{self, Activity};
use crate::mesos::{self, Masters};
use crate::metrics::Metrics;
use crate::presentation::Clock;
use crate::run::{EsPoll, Inputs, LoopSettings, Outputs, Shell};
use crate::store::StateStore;
use crate::supervisor::{Stage, Supervisor};

/// How long each stage gets to stop before what is left of it is aborted.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Where the state lives: the embedded store (opened and locked by `bind`; this instance always leads)
/// or ZooKeeper (loaded once this instance is elected).
#[derive(Debug)]
enum Backend {
    File(StateStore),
    Zk(ZkConfig),
}

/// A scheduler whose configuration was accepted and whose listeners are bound; nothing runs yet.
#[derive(Debug)]
pub struct Bound {
    core_config: tether_core::Config,
    /// `--nodes`, applied on a first start.
    nodes: u64,
    masters: Masters,
    backend: Backend,
    listener: TcpListener,
    listen: SocketAddr,
    /// (TLS, mutual TLS), for the start-up log line.
    tls: (bool, bool),
    metrics_listener: Option<TcpListener>,
    router: Router,
    health: HealthReporter,
    activity: Arc<watch::Sender<Activity>>,
    inputs: Inputs,
    mesos_tx: mpsc::Sender<Notification>,
    /// Where the Elasticsearch poller (storage fencing only) sends its views.
    es_tx: mpsc::Sender<EsCluster>,
    events: broadcast::Sender<pb::ClusterEvent>,
    metrics: Metrics,
    settings: LoopSettings,
    /// Where the leader publishes the agent-token secret the agent channel verifies with.
    agent_secret: watch::Sender<Option<Arc<AgentSecret>>>,
    /// This machine's name (the election member id) and the admin address a standby names.
    hostname: String,
    advertise: String,
    tasks: Supervisor,
}

/// Checks the flags and files and binds the listeners; see the module docs.
pub async fn bind(args: Args) -> Result<Bound, SchedulerError> {
    let core_config = config::core_config(&args)?;
    let master_source = args.master_source()?;
    let mesos_settings = config::mesos_config(&args, &master_source)?;
    let masters = match master_source {
        // Refuses bad master URLs and CA files here.
        MasterSource::Http(_) => Masters::Fixed(
            MesosClient::new(mesos_settings).map_err(|e| SchedulerError::Config(e.to_string()))?,
        ),
        MasterSource::Zk(url) => Masters::Zk {
            detector: args.zk.config(url)?,
            settings: mesos_settings,
        },
    };
    let agent_token = config::token(args.agent_token_file.as_deref())?;
    let admin_token = config::token(args.admin_token_file.as_deref())?;
    if admin_token.is_none() {
        tracing::warn!(
            "the admin API is running without a token: anyone who can reach --listen may use it"
        );
    }
    match (&agent_token, args.allow_shared_agent_token) {
        (Some(_), false) => {
            return Err(SchedulerError::Config(
                "--agent-token-file is the shared agent token, which lets any sidecar pose as any \
                 agent: give each sidecar its own token (tetherctl agent-token HOST), or pass \
                 --allow-shared-agent-token to keep accepting it"
                    .into(),
            ));
        }
        (Some(_), true) => tracing::warn!(
            "--allow-shared-agent-token: sidecars may connect with the shared agent token, which \
             names no host: any holder can pose as any agent"
        ),
        (None, true) => tracing::warn!(
            "--allow-shared-agent-token without --agent-token-file: sidecars connect WITHOUT any \
             credential and any peer that reaches --listen can pose as any agent"
        ),
        (None, false) => {}
    }
    let (agent_secret, secret_rx) = watch::channel(None);
    let mut server = http2_settings(crate::tls::server_builder(&args)?);
    let backend = match args.state_url() {
        None => Backend::File(StateStore::open_file(&args.state_dir).await?),
        Some(url) => Backend::Zk(args.zk.config(url)?),
    };
    let source = config::cluster_secrets(&args, &core_config)?;
    if source.is_some() && args.tls_cert.is_none() {
        tracing::warn!(
            "!!! Elasticsearch security is on but the sidecars' channel runs WITHOUT TLS: the `elastic` \
             password and the node certificates cross the network in the clear. Give --tls-cert/--tls-key !!!"
        );
    }
    let (secrets, secrets_in_store) = match source {
        Some(config::SecretsSource::Ready(s)) => (Some(s), None),
        Some(config::SecretsSource::Store(operator)) => (None, Some(operator)),
        None => (None, None),
    };
    let listener = listen(args.listen).await?;
    let listen_addr = listener
        .local_addr()
        .map_err(|source| SchedulerError::Listen {
            addr: args.listen,
            source,
        })?;
    let metrics_listener = match args.metrics_listen {
        Some(addr) => Some(listen(addr).await?),
        None => None,
    };

    let activity = Arc::new(
        watch::channel(match backend {
            Backend::File(_) => Activity::Leading,
            Backend::Zk(_) => Activity::Standby { leader: None },
        })
        .0,
    );
    let tasks = Supervisor::new();
    let (sidecar_tx, sidecars) = mpsc::channel(1024);
    let (admin_tx, admin) = mpsc::channel(64);
    let (mesos_tx, mesos) = mpsc::channel(256);
    let (es_tx, es) = mpsc::channel(16);
    let (events, _) = broadcast::channel(1024);
    let (health, health_service) = tonic_health::server::health_reporter();
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tether_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| SchedulerError::Serve(e.to_string()))?;
    let agent_service = AgentChannelService::new(
        ChannelConfig {
            auth: AgentAuth {
                shared: agent_token,
                allow_shared: args.allow_shared_agent_token,
                secret: secret_rx,
            },
            limits: args.wire_limits(),
            ..Default::default()
        },
        sidecar_tx,
    )
    .with_activity(activity.subscribe())
    .with_tracker(tasks.tracker(Stage::Serving));
    let admin_service = AdminService::new(
        AdminConfig {
            token: admin_token,
            open_reads: args.admin_open_reads,
            max_nodes: args.max_nodes,
        },
        admin_tx,
        events.clone(),
    )
    .with_activity(activity.subscribe(), &args.framework_name);
    let router = server
        .add_service(health_service)
        .add_service(reflection)
        .add_service(AgentChannelServer::new(agent_service))
        .add_service(AdminServer::new(admin_service));

    // With groups, `--group default:N` seeds the default group (none: 0), as `--nodes` does without.
    let nodes = if core_config.groups.is_empty() {
        args.nodes
    } else {
        core_config
            .groups
            .iter()
            .find(|g| g.name.is_default())
            .map_or(0, |g| g.count)
    };
    Ok(Bound {
        core_config,
        nodes,
        masters,
        backend,
        listener,
        listen: listen_addr,
        tls: (args.tls_cert.is_some(), args.tls_client_ca.is_some()),
        metrics_listener,
        router,
        health,
        activity,
        inputs: Inputs {
            mesos,
            sidecars,
            admin,
            es,
        },
        mesos_tx,
        es_tx,
        events,
        metrics: Metrics::new(),
        settings: LoopSettings {
            task: config::task_options(&args)?,
            roles: vec![args.role.clone()],
            driver: args.external_volume_driver.clone(),
            framework_name: args.framework_name.clone(),
            es: es_client(secrets.as_ref(), Duration::from_secs(2))?,
            es_poll: EsPoll {
                client: es_client(secrets.as_ref(), poll_timeout(args.es_poll_interval))?,
                interval: args.es_poll_interval,
            },
            secrets,
            secrets_in_store,
            agent_secret_file: args.state_dir.join(crate::store::secret::FILE),
        },
        agent_secret,
        hostname: config::hostname(&args),
        advertise: config::advertise_address(&args),
        tasks,
    })
}

/// An answer slower than a poll is no answer.
fn poll_timeout(interval: Duration) -> Duration {
    interval.clamp(Duration::from_millis(200), Duration::from_secs(10))
}

/// With the secrets in ZooKeeper: loads them (the first leader creates them) and gives the loop's
/// Elasticsearch clients the CA and the password, before anything is launched or asked.
async fn secrets_from_store(
    store: &StateStore,
    settings: &mut LoopSettings,
) -> Result<(), SchedulerError> {
    let (Some(operator), StateStore::Zk(zk)) = (settings.secrets_in_store.take(), store) else {
        return Ok(());
    };
    let secrets = crate::store::cluster_secrets::load_or_create(zk.zk(), &operator)
        .await
        .map_err(|e| match e {
            crate::store::cluster_secrets::ZkSecretsError::Store(s) => SchedulerError::Store(s),
            other => SchedulerError::Config(format!("Elasticsearch security: {other}")),
        })?;
    let secrets = Arc::new(secrets);
    settings.es = es_client(Some(&secrets), Duration::from_secs(2))?;
    settings.es_poll.client = es_client(Some(&secrets), poll_timeout(settings.es_poll.interval))?;
    settings.secrets = Some(secrets);
    Ok(())
}

/// HTTP/2 flow control for up to one connection per agent. hyper's server defaults let every stream and
/// every connection buffer 1 MiB the scheduler has not read yet; while the event loop holds sidecars
/// back (the queue byte budget), that is what each of 10,000 connections may pile up. Reports are a few
/// KiB, so the protocol's own initial window (64 KiB) costs them nothing; a larger message (up to gRPC's
/// 4 MiB) still goes through, in window-sized steps as the reader consumes it.
pub fn http2_settings(server: tonic::transport::Server) -> tonic::transport::Server {
    const WINDOW: u32 = 64 * 1024;
    server
        .initial_stream_window_size(WINDOW)
        .initial_connection_window_size(WINDOW)
        .http2_adaptive_window(Some(false))
}

/// The Elasticsearch client: trusts the cluster CA and logs in as `elastic` when security is on.
fn es_client(
    secrets: Option<&Arc<crate::cluster_ca::ClusterSecrets>>,
    timeout: Duration,
) -> Result<EsClient, SchedulerError> {
    EsClient::new(EsClientConfig {
        timeout,
        ca_pem: secrets.map(|s| s.ca_pem().to_owned()),
        basic_auth: secrets.map(|s| ("elastic".to_owned(), s.password().to_owned())),
    })
    .map_err(|e| SchedulerError::Config(e.to_string()))
}

async fn listen(addr: SocketAddr) -> Result<TcpListener, SchedulerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| SchedulerError::Listen { addr, source })
}

impl Bound {
    /// The address the gRPC listener is bound to (the port the OS chose for `--listen ...:0`).
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.listen
    }

    /// The address of the metrics endpoint, when `--metrics-listen` was given.
    #[must_use]
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// Serves until `shutdown` is cancelled (`Ok`) or something fatal happens (`Err`); see
    /// [`crate::run::run`] for what that covers. Tasks on the agents keep running either way.
    pub async fn serve(self, shutdown: CancellationToken) -> Result<(), SchedulerError> {
        let Bound {
            core_config,
            nodes,
            masters,
            backend,
            listener,
            listen,
            tls,
            metrics_listener,
            router,
            health,
            activity,
            mut inputs,
            mesos_tx,
            es_tx,
            events,
            metrics,
            settings,
            agent_secret,
            hostname,
            advertise,
            mut tasks,
        } = self;

        let watched = activity.subscribe();
        let leading = *watched.borrow() == Activity::Leading;
        ha::set_health(&health, leading).await;
        metrics.leader.set(i64::from(leading));
        tasks.spawn(
            Stage::Serving,
            "health reporter",
            ha::report_health(
                health,
                metrics.leader.clone(),
                watched,
                tasks.token(Stage::Serving),
            ),
        );
        tracing::info!(%listen, tls = tls.0, mutual_tls = tls.1, "serving sidecars and the admin API");
        let stop = tasks.token(Stage::Serving);
        tasks.spawn(Stage::Serving, "gRPC server", async move {
            router
                .serve_with_incoming_shutdown(
                    TcpListenerStream::new(listener),
                    stop.cancelled_owned(),
                )
                .await
                .map_err(|e| SchedulerError::Serve(e.to_string()))
        });
        if let Some(l) = metrics_listener {
            let (registry, stop) = (metrics.registry.clone(), tasks.token(Stage::Serving));
            tasks.spawn(Stage::Serving, "metrics endpoint", async move {
                tether_telemetry::serve_metrics(l, registry, stop).await;
                Ok(())
            });
        }

        // `lost` never fires for the embedded store: that instance leads for as long as it runs.
        let (store, lost, candidate) = match backend {
            Backend::File(store) => (store, CancellationToken::new(), None),
            Backend::Zk(zk) => {
                match stand_by(&zk, &hostname, &advertise, &activity, &mut tasks, &shutdown).await {
                    Ok(Some((elected, candidate))) => (
                        StateStore::Zk(Box::new(elected.store)),
                        elected.lost,
                        Some(candidate),
                    ),
                    Ok(None) => {
                        tasks.stop_all(STOP_GRACE).await;
                        return Ok(());
                    }
                    Err(e) => {
                        tasks.stop_all(STOP_GRACE).await;
                        return Err(e);
                    }
                }
            }
        };
        if candidate.is_some() {
            tasks.spawn(
                Stage::Ha,
                "leadership watchdog",
                election::watch_leadership(
                    lost.clone(),
                    activity.clone(),
                    tasks.token(Stage::Mesos),
                    tasks.token(Stage::Ha),
                ),
            );
        }

        let leading = Leading {
            core_config,
            nodes,
            masters,
            store,
            mesos_tx,
            es_tx,
            events,
            metrics,
            settings,
            agent_secret,
            leader_address: if candidate.is_some() {
                advertise
            } else {
                String::new()
            },
        };
        let result = lead(
            leading,
            &activity,
            &mut inputs,
            &mut tasks,
            &shutdown,
            &lost,
        )
        .await;

        // Requests still arriving get "shutting down" at once; stream readers stop at their next message.
        drop(inputs);
        tasks.stop(Stage::Serving, STOP_GRACE).await;
        if let Some(candidate) = candidate {
            if result.is_ok() {
                // Hand over at once rather than after the session timeout.
                candidate.resign().await;
            } else {
                // The session may be gone: do not wait on it; the znode goes with the session.
                drop(candidate);
            }
        }
        tasks.stop(Stage::Ha, STOP_GRACE).await;
        tracing::info!("scheduler stopped; tasks keep running and the state is persisted");
        result
    }
}

/// Campaigns and stands by, answering who leads, until elected (the state is then loaded), `shutdown`
/// (`None`, after resigning), or a task ending.
async fn stand_by(
    zk: &ZkConfig,
    hostname: &str,
    advertise: &str,
    activity: &Arc<watch::Sender<Activity>>,
    tasks: &mut Supervisor,
    shutdown: &CancellationToken,
) -> Result<Option<(election::Elected, Candidate)>, SchedulerError> {
    let mut candidate = election::campaign(zk, hostname, advertise.to_owned()).await?;
    tasks.spawn(
        Stage::Ha,
        "election follower",
        election::follow_roles(candidate.role(), activity.clone(), tasks.token(Stage::Ha)),
    );
    let elected = tokio::select! {
        () = shutdown.cancelled() => None,
        e = tasks.failed() => return Err(e),
        r = election::elected(&mut candidate) => Some(r?),
    };
    match elected {
        Some(e) => Ok(Some((e, candidate))),
        None => {
            candidate.resign().await;
            Ok(None)
        }
    }
}

/// What acting as the leader needs.
struct Leading {
    core_config: tether_core::Config,
    nodes: u64,
    masters: Masters,
    store: StateStore,
    mesos_tx: mpsc::Sender<Notification>,
    es_tx: mpsc::Sender<EsCluster>,
    events: broadcast::Sender<pb::ClusterEvent>,
    metrics: Metrics,
    settings: LoopSettings,
    agent_secret: watch::Sender<Option<Arc<AgentSecret>>>,
    leader_address: String,
}

/// Builds the core from the stored state, starts the Mesos tasks and runs the loop; on the way out stops
/// the driver, closes the call queue and stops the call sender, in that order.
async fn lead(
    leading: Leading,
    activity: &watch::Sender<Activity>,
    inputs: &mut Inputs,
    tasks: &mut Supervisor,
    shutdown: &CancellationToken,
    lost: &CancellationToken,
) -> Result<(), SchedulerError> {
    let Leading {
        core_config,
        nodes,
        masters,
        store,
        mesos_tx,
        es_tx,
        events,
        metrics,
        mut settings,
        agent_secret,
        leader_address,
    } = leading;
    let result = async {
        secrets_from_store(&store, &mut settings).await?;
        let fresh = store.is_fresh()?;
        let mut core = Core::new(core_config, store.state()?)
            .map_err(|e| SchedulerError::State(e.to_string()))?;
        let clock = Clock::start();
        if fresh {
            core.handle_scale(nodes, Millis(0))
                .map_err(|e| SchedulerError::Config(e.to_string()))?;
        }
        // Before any sidecar is served: a secret rotated by the previous leader is the one in force.
        let secret = crate::store::secret::load(&store, &settings.agent_secret_file).await?;
        agent_secret.send_replace(secret.map(Arc::new));
        let framework_id = core
            .persisted()
            .framework_id
            .as_ref()
            .map(|id| FrameworkID::new(id.as_str()));
        activity.send_replace(Activity::Leading);

        let (calls, calls_rx) = mpsc::unbounded_channel();
        let (clients_tx, clients_rx) = watch::channel::<Option<MesosClient>>(None);
        let operator = clients_rx.clone();
        tasks.spawn(
            Stage::Calls,
            "Mesos call sender",
            mesos::send_calls(calls_rx, clients_rx, lost.clone()),
        );
        let (es_targets, targets_rx) = watch::channel(Vec::new());
        // Stops with the call sender, right after the driver: a scheduler that no longer acts
        // needs no observation of the cluster.
        tasks.spawn(
            Stage::Calls,
            "Elasticsearch poller",
            elasticsearch::run_poller(
                settings.es_poll.client.clone(),
                targets_rx,
                es_tx,
                settings.es_poll.interval,
                tasks.token(Stage::Calls),
            ),
        );
        let stop = tasks.token(Stage::Mesos);
        match masters {
            Masters::Fixed(client) => {
                client.set_framework_id(framework_id);
                tasks.spawn(
                    Stage::Mesos,
                    "Mesos driver",
                    mesos::drive(client, clients_tx, mesos_tx, stop),
                );
            }
            Masters::Zk { detector, settings } => {
                let detector = MasterDetector::start(detector).await?;
                tasks.spawn(
                    Stage::Mesos,
                    "Mesos master follower",
                    mesos::follow_masters(
                        detector,
                        settings,
                        framework_id,
                        clients_tx,
                        mesos_tx,
                        stop,
                    ),
                );
            }
        }
        let outputs = Outputs {
            calls,
            events,
            metrics,
            operator,
            es_targets,
            agent_secret,
        };
        let mut shell = Shell::new(core, store, clock, outputs, settings, leader_address);
        let result = shell.run(inputs, tasks, shutdown, lost).await;
        Ok((shell, result))
    }
    .await;
    let (shell, result) = match result {
        Ok((shell, result)) => (Some(shell), result),
        Err(e) => (None, Err(e)),
    };
    if result.is_err() {
        // Another instance may lead (or the state could not be written): stop acting before anything
        // else, so nothing this instance still has queued reaches Mesos.
        activity.send_replace(Activity::Standby { leader: None });
    }
    tasks.stop(Stage::Mesos, STOP_GRACE).await;
    // Closes the call queue (the sender ends once it has tried what is queued) and every sidecar's
    // outbox (ending their streams).
    drop(shell);
    tasks.stop(Stage::Calls, STOP_GRACE).await;
    result
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    /// A scheduler on loopback whose master never answers (nothing listens on port 1), with its state in
    /// `state`.
    async fn bind_in(state: &std::path::Path) -> Bound {
        let args = Args::try_parse_from([
            "tether-scheduler",
            "--master",
            "http://127.0.0.1:1",
            "--state-dir",
            &state.display().to_string(),
            "--listen",
            "127.0.0.1:0",
            "--es-security",
            "off",
        ])
        .expect("valid flags");
        bind(args).await.expect("bind")
    }

    #[tokio::test]
    async fn serve_stops_with_an_error_when_the_mesos_driver_ends_by_itself() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bound = bind_in(dir.path()).await;
        let addr = bound.local_addr();
        // Makes the real driver return, as it would on a bug, while nothing asked the scheduler to stop.
        let driver = bound.tasks.token(Stage::Mesos);
        let shutdown = CancellationToken::new();
        let serving = tokio::spawn(bound.serve(shutdown.clone()));
        // Serving: the admin port answers.
        tokio::net::TcpStream::connect(addr)
            .await
            .expect("the listener serves");
        driver.cancel();
        let result = serving.await.expect("serve does not panic");
        assert!(
            matches!(
                result,
                Err(SchedulerError::TaskEnded {
                    task: "Mesos driver"
                })
            ),
            "{result:?}"
        );
        assert!(
            !shutdown.is_cancelled(),
            "the caller's token is the caller's"
        );
        // Everything was drained: the listener is closed and the state directory unlocked.
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
        drop(bind_in(dir.path()).await);
    }

    #[tokio::test]
    async fn serve_stops_cleanly_on_shutdown() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bound = bind_in(dir.path()).await;
        let shutdown = CancellationToken::new();
        let serving = tokio::spawn(bound.serve(shutdown.clone()));
        shutdown.cancel();
        serving
            .await
            .expect("serve does not panic")
            .expect("a clean stop");
        drop(bind_in(dir.path()).await);
    }
}
