//! tether-scheduler: the Mesos framework that runs Elasticsearch nodes on external volumes.
//!
//! This crate is the IO shell around the pure core (`tether-core`): it owns the Mesos connection
//! (`tether-mesos`), the gRPC listener for sidecars and operators, and the state store. It converts wire
//! types to the core's domain types at the boundary and executes the core's commands in order.
//!
//! [`server::bind`] checks the flags and binds the listeners, [`server::Bound::serve`] runs the scheduler
//! (the loop is in [`run`]); [`run::run`] is both.

pub mod store;

pub mod admin;
pub mod agent_channel;
pub mod agent_identity;
pub mod args;
pub mod auth;
pub mod backup;
pub mod cluster_ca;
pub mod config;
pub mod convert;
pub mod elasticsearch;
pub mod election;
pub mod error;
pub mod ha;
pub mod mesos;
pub mod metrics;
pub mod presentation;
pub mod run;
pub mod server;
pub mod supervisor;
pub mod taskinfo;
pub mod tls;

pub use crate::error::SchedulerError;
