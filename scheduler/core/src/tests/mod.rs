//! Core tests: one deterministic test per rule (`rules`, and `fencing` for UNREACHABLE nodes), and a
//! property-based model test (`model`).

mod bounds;
mod determinism;
mod fencing;
mod groups;
mod maintenance;
mod model;
mod observe;
mod placement;
mod removal;
mod renewal;
mod rollout;
mod rules;
mod views;
