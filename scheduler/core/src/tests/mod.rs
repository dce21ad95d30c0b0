//! Core tests: one deterministic test per rule (`rules`, and `fencing` for UNREACHABLE nodes), and a
//! property-based model test (`model`).

mod bounds;
mod determinism;
mod fencing;
mod groups;
mod model;
mod observe;
mod placement;
mod removal;
mod rollout;
mod rules;
mod views;
