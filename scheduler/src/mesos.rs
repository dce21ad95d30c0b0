//! The Mesos side of the shell: which subscription driver runs (one for a fixed `--master` list, or one
//! at a time against the master ZooKeeper says leads), and the one task that posts the core's calls in
//! order so the loop never waits on HTTP.

use tether_mesos::client::{MesosClient, MesosConfig, Notification};
use tether_mesos::model::{Call, FrameworkID};
use tether_zk::MasterDetector;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::error::SchedulerError;

/// The driver currently subscribed, for the call sender (`None` while no leading master is known).
pub type CurrentClient = watch::Receiver<Option<MesosClient>>;

/// Where the masters are, resolved at bind time.
#[derive(Debug)]
pub enum Masters {
    /// A fixed `--master` list: one client that follows redirects among them.
    Fixed(MesosClient),
    /// The leading master's `json.info_` znode: a client per leader.
    Zk {
        detector: tether_zk::ZkConfig,
        settings: MesosConfig,
    },
}

/// Runs the subscription driver for a fixed master list until `stop`.
pub async fn drive(
    client: MesosClient,
    clients: watch::Sender<Option<MesosClient>>,
    tx: mpsc::Sender<Notification>,
    stop: CancellationToken,
) -> Result<(), SchedulerError> {
    clients.send_replace(Some(client.clone()));
    client.run(tx, stop).await;
    Ok(())
}

/// Runs one Mesos driver at a time against the master ZooKeeper says leads, replacing it (same framework
/// id) whenever the leader changes, until `stop`. The driver runs inside this task: if it stops by
/// itself (a fatal answer, already reported on `tx`), so does this task.
pub async fn follow_masters(
    detector: MasterDetector,
    settings: MesosConfig,
    mut framework_id: Option<FrameworkID>,
    clients: watch::Sender<Option<MesosClient>>,
    tx: mpsc::Sender<Notification>,
    stop: CancellationToken,
) -> Result<(), SchedulerError> {
    let mut leaders = detector.watch();
    let mut current: Option<Driver> = None;
    loop {
        let want = leaders
            .borrow_and_update()
            .as_ref()
            .map(tether_zk::MasterAddr::url);
        if want.as_deref() != current.as_ref().map(|d| d.url.as_str()) {
            if let Some(old) = current.take() {
                let old = old.stop().await;
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
                    return Ok(());
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
                        let cancel = stop.child_token();
                        let run = Box::pin(client.run(tx.clone(), cancel.clone()));
                        current = Some(Driver { url, cancel, run });
                    }
                    Err(e) => {
                        tracing::error!(master = %url, error = %e, "unusable master address in ZooKeeper")
                    }
                }
            }
        }
        let driver_ended = async {
            match current.as_mut() {
                Some(d) => (&mut d.run).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = stop.cancelled() => break,
            () = driver_ended => {
                // Stopped for good after telling the loop why (a fatal answer).
                return Err(SchedulerError::TaskEnded { task: "Mesos driver" });
            }
            changed = leaders.changed() => if changed.is_err() {
                return Err(SchedulerError::TaskEnded { task: "Mesos master detector" });
            },
        }
    }
    if let Some(d) = current {
        d.stop().await;
    }
    Ok(())
}

/// The driver of one leading master, run inside the follower's own task (not spawned: it cannot
/// outlive the follower).
struct Driver {
    url: String,
    cancel: CancellationToken,
    run: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
}

impl Driver {
    /// Stops the driver and waits for it; returns its master's URL.
    async fn stop(self) -> String {
        self.cancel.cancel();
        self.run.await;
        self.url
    }
}

/// Posts the core's Mesos calls in order on the current driver's stream, until the queue closes (the
/// loop is gone). Calls are dropped, with a warning, while no master is known or once leadership is
/// `lost`: the core's timers and reconciliation recover from a lost call.
pub async fn send_calls(
    mut calls: mpsc::UnboundedReceiver<Call>,
    clients: CurrentClient,
    lost: CancellationToken,
) -> Result<(), SchedulerError> {
    while let Some(call) = calls.recv().await {
        if lost.is_cancelled() {
            tracing::warn!("dropping a Mesos call: no longer the leader");
            continue;
        }
        let Some(client) = clients.borrow().clone() else {
            tracing::warn!("dropping a Mesos call: no leading master known");
            continue;
        };
        if let Err(e) = client.send(call).await {
            tracing::warn!(error = %e, "Mesos call failed");
        }
    }
    Ok(())
}
