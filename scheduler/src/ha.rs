//! High availability: whether this instance acts, and what a standby tells its clients.
//!
//! With the embedded store an instance always leads. With `--state zk://...` several instances campaign
//! in ZooKeeper; only the leader subscribes to Mesos, serves sidecars and accepts admin writes. The gRPC
//! services read the current [`Activity`] from a watch channel so a standby can say who leads instead of
//! acting, and a leader that loses its session flips to standby before anything else happens. gRPC
//! health follows the same value (see [`report_health`]). The election itself is in `election`.

use tether_proto::v1::admin_server::AdminServer;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tonic_health::server::HealthReporter;

use crate::admin::AdminService;
use crate::error::SchedulerError;

/// What this instance is doing now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Activity {
    /// This instance acts: it owns the Mesos subscription, the sidecars and admin writes.
    Leading,
    /// Another instance leads (its admin address, when known); this one only answers `GetCluster`.
    Standby { leader: Option<String> },
}

impl Activity {
    /// The status a standby returns for a call only the leader serves (`None` when leading).
    /// Writes get `FAILED_PRECONDITION` (retrying here will never work; send it to the leader), reads
    /// and sidecar streams `UNAVAILABLE` (the leader may be elsewhere; retry there or later).
    pub fn refusal(&self, what: &str, write: bool) -> Option<Status> {
        let Activity::Standby { leader } = self else {
            return None;
        };
        let message = match leader {
            Some(addr) => format!(
                "this tether-scheduler is a standby and does not serve {what}; the leader is at {addr}"
            ),
            None => format!(
                "this tether-scheduler is a standby and does not serve {what}; no leader is known right now"
            ),
        };
        let mut status = if write {
            Status::failed_precondition(message)
        } else {
            Status::unavailable(message)
        };
        if let Some(value) = leader.as_deref().and_then(|a| a.parse().ok()) {
            status.metadata_mut().insert(LEADER_METADATA, value);
        }
        Some(status)
    }
}

/// The metadata key of a standby's refusal that names the leader's advertised `host:port` (documented
/// in `agent.proto`; sidecars follow it).
pub const LEADER_METADATA: &str = "tether-leader";

/// The receiving end the services hold.
pub type ActivityRx = watch::Receiver<Activity>;

/// A channel that always says "leading" (the embedded store, and services built without HA).
pub fn always_leading() -> ActivityRx {
    let (tx, rx) = watch::channel(Activity::Leading);
    // The value never changes; dropping the sender keeps `borrow()` working.
    drop(tx);
    rx
}

/// Reports `tether.v1.Admin` SERVING while this instance leads and NOT_SERVING otherwise, so a load
/// balancer or proxy health-checking the schedulers sends clients (and sidecars) to the leader. Reports
/// changes only: set the first status with [`set_health`] before serving. Runs until `stop`.
pub async fn report_health(
    health: HealthReporter,
    leader: prometheus_client::metrics::gauge::Gauge,
    mut activity: ActivityRx,
    stop: CancellationToken,
) -> Result<(), SchedulerError> {
    loop {
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            changed = activity.changed() => {
                if changed.is_err() {
                    stop.cancelled().await;
                    return Ok(());
                }
                let leading = *activity.borrow_and_update() == Activity::Leading;
                leader.set(i64::from(leading));
                set_health(&health, leading).await;
            }
        }
    }
}

/// Sets the admin service's health status once (before the listener serves, so the first check already
/// has an answer).
pub async fn set_health(health: &HealthReporter, leading: bool) {
    if leading {
        health.set_serving::<AdminServer<AdminService>>().await;
    } else {
        health.set_not_serving::<AdminServer<AdminService>>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_standby_refuses_writes_naming_the_leader() {
        assert!(Activity::Leading.refusal("admin writes", true).is_none());
        let standby = Activity::Standby {
            leader: Some("10.0.0.5:7070".into()),
        };
        let w = standby.refusal("admin writes", true).expect("refused");
        assert_eq!(w.code(), tonic::Code::FailedPrecondition);
        assert!(w.message().contains("10.0.0.5:7070"), "{}", w.message());
        assert_eq!(
            w.metadata()
                .get(LEADER_METADATA)
                .and_then(|v| v.to_str().ok()),
            Some("10.0.0.5:7070")
        );
        let r = standby.refusal("sidecar streams", false).expect("refused");
        assert_eq!(r.code(), tonic::Code::Unavailable);
        let unknown = Activity::Standby { leader: None }
            .refusal("admin writes", true)
            .expect("refused");
        assert!(unknown.message().contains("no leader is known"));
        assert!(unknown.metadata().get(LEADER_METADATA).is_none());
    }
}
