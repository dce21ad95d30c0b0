//! Leader election in ZooKeeper (`--state zk://...`): joining, standing by with the leader's address in
//! [`Activity`], loading the state once elected (writes fenced on this instance's member znode), and the
//! watchdog that stops acting the moment leadership ends.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tether_zk::{Candidate, MemberInfo, Role, ZkConfig, ZkSession, ZkStore};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::error::SchedulerError;
use crate::ha::Activity;
use crate::store::StoreError;
use crate::store::zk::ZkStateStore;

/// What winning the election hands the loop.
#[derive(Debug)]
pub struct Elected {
    pub store: ZkStateStore,
    /// Fires when leadership ends (session lost, member znode gone).
    pub lost: CancellationToken,
}

/// Joins the election under `zk`'s root as `host` (for the member id) serving admin at `advertise`.
pub async fn campaign(
    zk: &ZkConfig,
    host: &str,
    advertise: String,
) -> Result<Candidate, SchedulerError> {
    let session = ZkSession::connect(zk).await?;
    let id = format!(
        "{host}-{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
    );
    let candidate = tether_zk::campaign(&session, MemberInfo::now(id, advertise))
        .await
        .map_err(|e| SchedulerError::LeadershipLost(e.to_string()))?;
    tracing::info!(member = %candidate.member_path(), "standing by until elected leader");
    Ok(candidate)
}

/// Waits until `candidate` leads, then loads the state with writes fenced on its member znode.
pub async fn elected(candidate: &mut Candidate) -> Result<Elected, SchedulerError> {
    let leadership = candidate
        .elected()
        .await
        .map_err(|e| SchedulerError::LeadershipLost(e.to_string()))?;
    tracing::info!(member = %candidate.member_path(), "elected leader; loading the state from ZooKeeper");
    let store = ZkStore::open(candidate.session().clone(), Some(leadership.fence()))
        .await
        .map_err(StoreError::from)?;
    Ok(Elected {
        store: ZkStateStore::load(store).await?,
        lost: leadership.lost(),
    })
}

/// Keeps `activity` saying who leads while this instance stands by. Only the loop turns an instance
/// into the leader, and a leader only leaves through `Lost`, so a follower update never overwrites
/// `Leading`. Runs until `stop`.
pub async fn follow_roles(
    mut roles: watch::Receiver<Role>,
    activity: Arc<watch::Sender<Activity>>,
    stop: CancellationToken,
) -> Result<(), SchedulerError> {
    loop {
        let role = roles.borrow_and_update().clone();
        match role {
            Role::Follower { leader } => {
                let leader = leader.map(|m| m.admin_address);
                activity.send_if_modified(|a| {
                    let next = Activity::Standby { leader };
                    if *a == Activity::Leading || *a == next {
                        return false;
                    }
                    *a = next;
                    true
                });
            }
            Role::Lost { .. } => {
                activity.send_replace(Activity::Standby { leader: None });
            }
            Role::Leader => {}
        }
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            changed = roles.changed() => if changed.is_err() {
                // The candidacy ended; `lost` has fired and the loop is stopping.
                stop.cancelled().await;
                return Ok(());
            },
        }
    }
}

/// Stops acting the moment leadership ends, whatever the loop is doing (a state write may be waiting on
/// ZooKeeper): refuses calls, stops the Mesos driver. Runs until `stop`.
pub async fn watch_leadership(
    lost: CancellationToken,
    activity: Arc<watch::Sender<Activity>>,
    mesos: CancellationToken,
    stop: CancellationToken,
) -> Result<(), SchedulerError> {
    tokio::select! {
        biased;
        () = lost.cancelled() => {
            activity.send_replace(Activity::Standby { leader: None });
            mesos.cancel();
            tracing::error!("lost ZooKeeper leadership: stopped the Mesos driver and refusing calls");
        }
        () = stop.cancelled() => return Ok(()),
    }
    stop.cancelled().await;
    Ok(())
}
