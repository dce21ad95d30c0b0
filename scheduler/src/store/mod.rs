//! Where the scheduler keeps what must survive it: framework id, desired count, node slots.
//!
//! The embedded [`file::FileStore`] is the zero-setup default; `--state zk://...` selects
//! [`zk::ZkStateStore`] for several schedulers sharing one state with a leader. Every write is durable
//! before the call returns, and the scheduler performs no action a write allows until then (the slot's
//! new task id is stored before its LAUNCH is sent).
//!
//! The embedded store's `write` fsyncs, which takes milliseconds on a real disk: [`StateStore`] runs it on
//! tokio's blocking pool and the loop awaits it, so the loop's thread (and every other task on it) keeps
//! running while inputs queue, and the order "durable, then the next command" still holds.

pub mod cluster_secrets;
pub mod file;
pub mod secret;
pub mod zk;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tether_core::state::{PersistedState, StateWrite};

use self::file::Apply;

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
    /// A record is missing from the log: loading on would silently lose an acknowledged write.
    #[error(
        "state store {path} is corrupt: line {line} holds record {found} but record {missing} is missing (a gap in the log's sequence numbers)"
    )]
    SequenceGap {
        path: PathBuf,
        line: usize,
        missing: u64,
        found: u64,
    },
    #[error("cannot encode state: {0}")]
    Encode(String),
    /// A ZooKeeper write lost a compare-and-set race, was fenced off, or failed: never retried, since
    /// another scheduler may lead now.
    #[error("ZooKeeper state store: {0}")]
    Zk(#[from] tether_zk::StoreError),
    #[error("ZooKeeper state {key} is unreadable: {detail}")]
    ZkCorrupt { key: String, detail: String },
    /// A write on the blocking pool panicked (or was cancelled): what reached the disk is unknown.
    #[error("a state write did not complete: {0}")]
    Interrupted(String),
}

impl Apply<StateWrite> for PersistedState {
    fn apply(&mut self, write: &StateWrite) {
        PersistedState::apply(self, write);
    }
}

/// The embedded store as the loop holds it: shared with the blocking-pool task of each write.
type Embedded = Arc<Mutex<file::FileStore<PersistedState, StateWrite>>>;

/// The store the scheduler loop writes through.
#[derive(Debug)]
pub enum StateStore {
    File(Embedded),
    Zk(Box<zk::ZkStateStore>),
}

impl StateStore {
    /// Opens (and locks) the embedded store in `dir`, reading it on the blocking pool.
    pub async fn open_file(dir: &Path) -> Result<StateStore, StoreError> {
        let dir = dir.to_owned();
        let store = tokio::task::spawn_blocking(move || file::FileStore::open(&dir))
            .await
            .map_err(|e| StoreError::Interrupted(e.to_string()))??;
        Ok(StateStore::File(Arc::new(Mutex::new(store))))
    }

    /// The state as loaded plus every write since.
    pub fn state(&self) -> Result<PersistedState, StoreError> {
        match self {
            StateStore::File(f) => Ok(lock(f)?.state().clone()),
            StateStore::Zk(z) => Ok(z.state().clone()),
        }
    }

    /// Whether nothing was ever stored (first start: apply `--nodes`).
    pub fn is_fresh(&self) -> Result<bool, StoreError> {
        match self {
            StateStore::File(f) => Ok(lock(f)?.is_fresh()),
            StateStore::Zk(z) => Ok(z.is_fresh()),
        }
    }

    /// Persists `batch` (in order) before returning.
    pub async fn write(&mut self, batch: Vec<StateWrite>) -> Result<(), StoreError> {
        match self {
            StateStore::File(f) => {
                let f = Arc::clone(f);
                tokio::task::spawn_blocking(move || lock(&f)?.write(&batch))
                    .await
                    .map_err(|e| StoreError::Interrupted(e.to_string()))?
            }
            StateStore::Zk(z) => z.write(&batch).await,
        }
    }
}

/// The embedded store, unless a write panicked while holding it (its state is then unknown).
fn lock(
    f: &Embedded,
) -> Result<std::sync::MutexGuard<'_, file::FileStore<PersistedState, StateWrite>>, StoreError> {
    f.lock()
        .map_err(|_| StoreError::Interrupted("an earlier write panicked".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a single-threaded runtime too (the loop's case): the fsync runs on the blocking pool and the
    /// write is durable when `write` returns.
    #[tokio::test(flavor = "current_thread")]
    async fn embedded_writes_are_durable_when_they_return() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = StateStore::open_file(dir.path()).await.expect("open");
        assert!(store.is_fresh().expect("readable"));
        store
            .write(vec![StateWrite::Desired(5), StateWrite::ClusterFormed])
            .await
            .expect("write");
        assert_eq!(store.state().expect("readable").desired, 5);
        drop(store);
        let store = StateStore::open_file(dir.path()).await.expect("reopen");
        let state = store.state().expect("readable");
        assert_eq!((state.desired, state.cluster_formed), (5, true));
        assert!(!store.is_fresh().expect("readable"));
    }

    /// A named group's record goes through the log like every write, and a store with only groups in
    /// it is not fresh (the next start must not seed the default group).
    #[tokio::test(flavor = "current_thread")]
    async fn group_records_survive_a_reopen() {
        use tether_core::ids::GroupName;
        use tether_core::state::GroupRecord;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = StateStore::open_file(dir.path()).await.expect("open");
        let data = GroupName::new("data").expect("name");
        let rec = GroupRecord {
            index: 1,
            desired: 4,
        };
        store
            .write(vec![StateWrite::Group(data.clone(), rec.clone())])
            .await
            .expect("write");
        drop(store);
        let store = StateStore::open_file(dir.path()).await.expect("reopen");
        assert_eq!(
            store.state().expect("readable").groups.get(&data),
            Some(&rec)
        );
        assert!(!store.is_fresh().expect("readable"));
    }
}
