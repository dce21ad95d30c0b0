//! tether-sidecar: the per-agent volume verifier and attacher.
//!
//! [`plugin`] is a standalone client of the Docker volume plugin protocol (also used by the Mesos emulator).
//! The rest is the sidecar runtime: [`Args`] and [`run`] connect to the scheduler over the `tether.v1`
//! agent channel, report what the driver sees, and prepare/release volumes on command; [`identity`] sets
//! volume roots' owners and keeps the node's key, certificate and password on its volume.

mod args;
mod bounds;
mod driver;
pub mod identity;
pub mod leader;
pub mod metrics;
pub mod plugin;
mod runtime;
mod state;
mod volumes;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use args::{Args, LogFormat, system_hostname};
pub use runtime::{FEATURES, VERSION};
pub use state::{MountEntry, Phase};
pub use volumes::validate_name;

/// Locks `m` even when poisoned. No critical section in the sidecar can leave its data half-updated (each
/// is an assignment, a clone or a restore-on-error), so one panic must not become a panic in every later
/// caller (the reporter, the stream, the shutdown release).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Why the sidecar stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("state file {path}: {source}")]
    State {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("releasing held mounts at shutdown: {0}")]
    Release(String),
}

/// Runs a sidecar until `shutdown` is cancelled, then drains (in-flight commands up to the grace period)
/// and releases every mount it holds. Only configuration and state-file problems end it early: a missing
/// driver or scheduler is reported and retried, never fatal.
pub async fn run(args: Args, shutdown: CancellationToken) -> Result<(), SidecarError> {
    run_declaring(args, shutdown, &FEATURES).await
}

/// [`run`], declaring `features` in the Hello instead of [`FEATURES`]: the observe benchmark plays
/// sidecars from before `watch_delta` with it, for its broadcast baseline.
pub async fn run_declaring(
    args: Args,
    shutdown: CancellationToken,
    features: &[&str],
) -> Result<(), SidecarError> {
    // Fails early on a bad URL or unreadable TLS files; the session redials with the same settings.
    let targets = args.targets().map_err(SidecarError::Config)?;
    for url in targets.urls() {
        args.endpoint(url).map_err(SidecarError::Config)?;
    }
    if targets.urls().is_empty() {
        // zk://: the leader's address is known only later; the TLS files are checked now.
        args.endpoint(&targets.leader_url("localhost:1"))
            .map_err(SidecarError::Config)?;
    }
    if args.driver.trim().is_empty() {
        return Err(SidecarError::Config("--driver must not be empty".into()));
    }
    let hostname = args.effective_hostname();
    bounds::check_config(&[
        ("--hostname", &hostname),
        ("--agent-id", args.agent_id.as_deref().unwrap_or_default()),
        ("--driver", &args.driver),
        ("--zone", &args.zone),
    ])
    .map_err(SidecarError::Config)?;
    let state = state::StateFile::open(&args.state_file, &format!("tether-sidecar-{hostname}"))
        .map_err(|source| SidecarError::State {
            path: args.state_file.clone(),
            source,
        })?;
    let timeouts = plugin::Timeouts {
        long: Duration::from(args.mount_timeout),
        short: Duration::from(args.call_timeout),
        max_reply_bytes: args.max_reply_bytes,
    };
    let metrics = metrics::SidecarMetrics::new();
    let driver = Arc::new(
        driver::Driver::new(
            &args.driver,
            args.plugin_dirs.clone(),
            args.spec_dirs.clone(),
            timeouts,
        )
        .with_observer(Arc::new(metrics.clone())),
    );
    if let Some(addr) = args.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| SidecarError::Config(format!("--metrics-listen {addr}: {e}")))?;
        tokio::spawn(tether_telemetry::serve_metrics(
            listener,
            metrics.registry.clone(),
            shutdown.clone(),
        ));
    }
    let volumes = Arc::new(volumes::Volumes::new(driver, state));
    tracing::info!(
        hostname = %hostname,
        driver = %args.driver,
        mount_id = volumes.mount_id(),
        pending = volumes.state.entries().len(),
        "tether-sidecar starting"
    );
    // Best effort, so the first Hello can carry the driver's scope; a missing driver is retried later.
    let probe = timeouts.short.min(Duration::from_secs(5));
    if let Err(e) = volumes
        .driver
        .call(Some(probe), |c| async move { c.capabilities().await })
        .await
    {
        tracing::warn!(error = %e, "volume driver not available yet");
    }
    let rt = Arc::new(runtime::Runtime::new(args, hostname, volumes, features));
    let stop = shutdown.child_token();
    let reporter = tokio::spawn(rt.clone().reporter(stop.clone()));
    rt.clone().connection_loop(targets, stop.clone()).await;
    let _ = reporter.await;
    tracing::info!("shutting down: draining commands and releasing mounts");
    let result = rt.drain().await;
    tracing::info!(ok = result.is_ok(), "tether-sidecar stopped");
    result
}
