//! Everything the tests (and the recovery benchmark) share, one module per thing under test:
//!
//! - [`scheduler`]: a tether-scheduler in this process or as a child process, its admin API, waiting for
//!   its node list;
//! - [`cluster`]: a whole local cluster of real processes in a temp dir ([`cluster::E2eCluster`]) and the
//!   loopback subnet each one leases so that end-to-end tests run in parallel;
//! - [`es`]: documents in, and answers from, one Elasticsearch node (es-standin);
//! - [`ctl`]: the real `tetherctl` binary, run as an operator runs it;
//! - [`emu`]: driving the Mesos emulator with the real `tether-mesos` client, and raw scheduler-API calls;
//! - [`sidecar`]: an in-process scheduler double for the sidecar, a sidecar in this process, a
//!   fake-rexray in a temp dir;
//! - [`docker`]: the Docker tier: whether an engine answers, images and volumes that clean up after
//!   themselves;
//! - [`traffic`]: a writer and a reader of documents and a watcher of the cluster's health and nodes,
//!   running while a test changes the cluster (rolling changes), and what they saw.
//!
//! Waiting is always polling against a generous deadline, never a timing assertion.

pub mod cluster;
pub mod ctl;
pub mod docker;
pub mod emu;
pub mod es;
pub mod scheduler;
pub mod sidecar;
pub mod traffic;

use std::time::Duration;

/// Generous deadline for a distributed condition in tests (never a timing assertion).
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Polls `check` every 100 ms until it returns `Some`, or gives up after `timeout` with `what` in the
/// message.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("gave up after {timeout:?} waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
