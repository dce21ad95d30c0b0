//! Where the scheduler keeps what must survive it: framework id, desired count, node slots.
//!
//! The embedded [`file::FileStore`] is the zero-setup default; `--state zk://...` selects
//! [`zk::ZkStateStore`] for several schedulers sharing one state with a leader. Every write is durable
//! before the call returns, and the scheduler performs no action a write allows until then (the slot's
//! new task id is stored before its LAUNCH is sent).

pub mod file;
pub mod zk;

use std::path::PathBuf;

use tether_core::state::{PersistedState, StateWrite};

/// A state-store failure. The scheduler stops acting on any of these: acting on state it could not
/// persist would break "nothing acknowledged is lost".
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state directory {dir} is in use by another scheduler process")]
    Locked { dir: PathBuf },
    #[error("state store {path} is corrupt: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    #[error("cannot encode state: {0}")]
    Encode(String),
    /// A ZooKeeper write lost a compare-and-set race, was fenced off, or failed: never retried, since
    /// another scheduler may lead now.
    #[error("ZooKeeper state store: {0}")]
    Zk(#[from] tether_zk::StoreError),
    #[error("ZooKeeper state {key} is unreadable: {detail}")]
    ZkCorrupt { key: String, detail: String },
}

/// The store the scheduler loop writes through.
#[derive(Debug)]
pub enum StateStore {
    File(file::FileStore<PersistedState, StateWrite>),
    Zk(Box<zk::ZkStateStore>),
}

impl StateStore {
    /// The state as loaded plus every write since.
    pub fn state(&self) -> &PersistedState {
        match self {
            StateStore::File(f) => f.state(),
            StateStore::Zk(z) => z.state(),
        }
    }

    /// Whether nothing was ever stored (first start: apply `--nodes`).
    pub fn is_fresh(&self) -> bool {
        match self {
            StateStore::File(f) => f.is_fresh(),
            StateStore::Zk(z) => z.is_fresh(),
        }
    }

    /// Persists `batch` (in order) before returning.
    pub async fn write(&mut self, batch: &[StateWrite]) -> Result<(), StoreError> {
        match self {
            StateStore::File(f) => f.write(batch),
            StateStore::Zk(z) => z.write(batch).await,
        }
    }
}
