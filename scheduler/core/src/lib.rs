//! Tether's pure scheduling core: node ids, placement, fencing, scaling and reconciliation as a
//! deterministic state machine in the manner of quinn-proto. It has no tokio, tonic, hyper, clock,
//! randomness or IO.
//!
//! # Contract with the shell
//! * Events go in through `Core::handle_*`, each with `now` ([`Millis`] since an epoch the shell picks and
//!   keeps for the life of the process). Peer data is converted to the domain types of [`domain`] (ids
//!   validated) before it reaches the core.
//! * Commands come out of [`Core::poll_command`]. The shell executes them **strictly in order**, and a
//!   [`Command::Persist`] must be **durable before any later command is executed**. The core relies on it:
//!   a slot's new task id (and generation) is persisted before the ACCEPT that launches it, an update's
//!   state before its ACKNOWLEDGE.
//! * [`Core::poll_timeout`] says when to call [`Core::handle_timeout`] next (offer holds, backoffs,
//!   reconciliation, the first-status watchdog of a launch).
//! * Mesos commands polled while not subscribed may fail at the master; the core re-derives whatever matters
//!   after the next SUBSCRIBED (reconciliation re-kills scaled-down tasks, placement restarts).
//! * After a restart, build the core with [`Core::new`] from the persisted state: tasks not known terminal
//!   keep fencing their slot until reconciliation answers.
//! * Sidecar commands go to the stream of the named host; `SidecarCommand::Welcome` answers every Hello
//!   (and is re-sent when the watch set changes); a sidecar declaring `watch_delta` gets its share of the
//!   volumes to observe as `SidecarCommand::WatchDelta`s instead (`observe.rs`).
//!
//! # Safety rules the core keeps (see `DESIGN.md`, invariants 1-3)
//! * A node is (re)launched only when its previous task is known terminal (LOST, FAILED, KILLED, FINISHED,
//!   ERROR, DROPPED, GONE, GONE_BY_OPERATOR), or an operator forced a replacement. UNREACHABLE, UNKNOWN and
//!   "restored but not reconciled" are not terminal. A task of an older generation that shows up alive is
//!   killed.
//! * At most one agent holds a node's volumes as far as the core knows: the agent of a task that may be
//!   alive, of a held offer being prepared, of a prepare given up on but not yet past its deadline, of a
//!   sidecar mount not yet released (`SlotRecord::mount_host`, durable, written before the Prepare), or of
//!   a volume a live sidecar reports attached. A node with such a holder can only be placed there.
//! * With the external strategy nothing is placed during `Config::startup_grace_ms` after the first
//!   SUBSCRIBED of a process, so reconnecting sidecars can report the mounts they hold first.
//! * A node whose task failed waits an exponential backoff before it is placed again; one whose task
//!   ended with its agent (GONE, or LOST/DROPPED for an agent removed or disconnected) does not, since
//!   there is no crash loop to damp and every second counts toward recovery.
//!
//! # Assumptions about the sidecar
//! A `Release` of a volume it does not hold succeeds; a Prepare past its `deadline_ms` fails and unmounts
//! what it mounted; it reports `attached_here` for its own mounts of every watched volume.

mod admin;
pub mod alloc;
pub mod command;
pub mod config;
mod core;
pub mod domain;
pub mod error;
pub mod es_events;
mod fencing;
pub mod forget;
pub mod groups;
pub mod ids;
mod launch;
pub mod maintenance;
mod mesos_events;
pub mod nodeconfig;
mod observe;
mod placement;
pub mod removal;
pub mod renewal;
pub mod rollout;
mod sidecar_events;
pub mod state;
mod step_calls;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(test)]
mod tests;
pub mod view;

pub use crate::command::{
    Command, LaunchSpec, MesosCommand, Reason, ReasonKind, SidecarCommand, WatchEvent,
};
pub use crate::config::{
    Config, Constraint, Containerizer, Fencing, GroupSpec, Strategy, VolumeSpec,
};
pub use crate::core::{Core, MAX_NODES, ScalePlan};
pub use crate::error::CoreError;
pub use crate::ids::{
    AgentId, FrameworkId, GroupName, Hostname, IdError, Millis, NodeId, OfferId, TaskId, VolumeName,
};
pub use crate::state::{GroupRecord, PersistedState, SlotRecord, StateWrite, TaskRecord};
