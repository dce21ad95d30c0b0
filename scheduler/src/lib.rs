//! tether-scheduler: the Mesos framework that runs Elasticsearch nodes on external volumes.
//!
//! This crate is the IO shell around the pure core (`tether-core`): it owns the Mesos connection
//! (`tether-mesos`), the gRPC listener for sidecars and operators, and the state store. It converts wire
//! types to the core's domain types at the boundary and executes the core's commands in order.

pub mod store;

pub mod admin;
pub mod agent_channel;
pub mod args;
pub mod auth;
pub mod convert;
pub mod ha;
pub mod metrics;
pub mod run;
pub mod taskinfo;
pub mod tls;
