//! Errors the core returns to admin callers and the shell. Bad peer input is an error value, never a panic.

use crate::ids::{IdError, NodeId, TaskId};

/// Why the core refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    /// The configuration is unusable.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// An id built from configuration or input is invalid.
    #[error(transparent)]
    Id(#[from] IdError),
    /// The node id is not part of the cluster.
    #[error("node {0} is not part of the cluster")]
    UnknownNode(NodeId),
    /// A replacement without force while the node's task may still run.
    #[error(
        "node {node}: task {task} may still be alive (state {state}); replace with force to override"
    )]
    TaskMayBeAlive {
        /// The node.
        node: NodeId,
        /// Its current task.
        task: TaskId,
        /// The last known state, or `unknown`.
        state: String,
    },
    /// The request would lose data or break the cluster as things stand.
    #[error("refused: {0}")]
    Refused(String),
    /// An agent cannot be marked gone through Tether: it is not known UNREACHABLE.
    #[error("{target}: {why}")]
    NotUnreachable {
        /// The agent id or host asked for.
        target: String,
        /// What Tether knows of it.
        why: String,
    },
    /// The persisted state contradicts itself or the configuration.
    #[error("persisted state is inconsistent: {0}")]
    BadState(String),
}
