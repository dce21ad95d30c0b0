//! Core tests: one deterministic test per rule (`rules`), and a property-based model test (`model`).

mod determinism;
mod model;
mod placement;
mod rules;
