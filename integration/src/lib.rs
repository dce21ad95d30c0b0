//! Test doubles of the systems Tether cannot run here, the local-cluster runner, the benchmarks and the
//! end-to-end tests.
//!
//! Everything in this crate exists to exercise the product faithfully: the doubles follow the fact sheets
//! in `shared/protocols/` so that what Tether sends them is what the real systems would accept. Nothing
//! here is linked into the product binaries.

pub mod bench;
pub mod dev;
pub mod docker_engine;
pub mod es_standin;
pub mod fake_rexray;
pub mod http_client;
pub mod mesos_emu;
pub mod process;
pub mod testing;
