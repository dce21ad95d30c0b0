//! Why the scheduler stopped with an error: one enum for `bind` (bad configuration, a taken port, an
//! unusable state directory) and `serve` (a fatal Mesos answer, a failed state write, lost leadership, a
//! task of the process that ended when nothing asked it to).

use std::net::SocketAddr;

use tether_mesos::client::FatalError;

use crate::auth::TokenError;
use crate::store::StoreError;

/// Why the scheduler stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Backup(#[from] crate::backup::BackupError),
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
    /// One of the process's own tasks (the Mesos driver, the call sender, the gRPC server, ...) returned
    /// while the scheduler was running: without it the scheduler would go on serving but stop acting.
    #[error("the {task} stopped unexpectedly")]
    TaskEnded { task: &'static str },
    /// One of the process's own tasks panicked.
    #[error("the {task} panicked: {message}")]
    TaskPanicked { task: &'static str, message: String },
}
