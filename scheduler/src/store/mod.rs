//! Where the scheduler keeps what must survive it: framework id, desired count, node slots.
//!
//! The embedded [`file::FileStore`] is the zero-setup default. Every write is durable before the call
//! returns, and the scheduler performs no action a write allows until then (the slot's new task id is
//! stored before its LAUNCH is sent).

pub mod file;

use std::path::PathBuf;

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
}
