//! `tether-dev`: the whole local cluster in one process tree, and the README's first command.
//!
//! One state directory holds everything: the Mesos emulator (agents on loopback addresses, two zones,
//! tasks run as local processes), one REX-Ray double per agent on a shared backend with the volumes an
//! operator would pre-create, one tether-sidecar per agent, and tether-scheduler with the external driver.
//! Each component is a real process: this same executable re-run as `tether-dev __run <component> ...`,
//! which calls the component's library `run` exactly as its own binary does — so `cargo run --bin
//! tether-dev` needs no other build step. Elasticsearch nodes are `es-standin` processes started by the
//! emulator's process launcher with volumes attached through the agent's plugin.
//!
//! Layout of `--state-dir`:
//! `admin.token` (0600); `logs/<component>.log`; `scheduler/` (state store, with the agent-token secret);
//! `rexray/` (the shared "cloud" backend); `agents/<host>/rexray.sock`, `agents/<host>/sidecar.json` and
//! `agents/<host>/agent.token` (0600: the host's own token, minted through the admin API as an operator
//! would with `tetherctl agent-token HOST`);
//! `emu/` (task sandboxes).
//!
//! The modules: `args` (flags), `multicall` (`__run <component>`), `plan` (addresses and the state
//! directory), `cluster` (the process supervisor), `status` (the printed status) and [`chaos`]
//! (`--chaos`).

mod args;
pub mod chaos;
mod cluster;
mod multicall;
mod plan;
mod status;

use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;

pub use args::Args;
pub use cluster::{Cluster, Components, Options};
pub use multicall::{COMPONENTS, run_component};
pub use plan::{AgentPlan, DRIVER, Plan, ZONES, prepare};
pub use status::{es_access, es_access_for};

use crate::process::ProcError;

/// Why the local cluster could not run.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Spawn(#[from] ProcError),
    #[error("unknown component {0:?} (expected one of {COMPONENTS:?})")]
    UnknownComponent(String),
    #[error("{component}: {message}")]
    Component { component: String, message: String },
    #[error("{0} did not come up: see {1}")]
    NotReady(String, PathBuf),
    #[error(
        "chaos: {lost} document(s) lost and {violations} invariant violation(s); see the lines above"
    )]
    ChaosFailed { lost: u64, violations: u64 },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> DevError + 'a {
    move |source| DevError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Runs the local cluster until `shutdown`, printing its status; stops every process it started.
pub async fn run(args: Args, shutdown: CancellationToken) -> Result<(), DevError> {
    let exe = std::env::current_exe().map_err(io(
        "cannot find this executable",
        Path::new("/proc/self/exe"),
    ))?;
    if args.chaos && !args.groups.is_empty() {
        // The checker counts nodes by `--nodes` and reads node ids out of task ids, which a group's
        // ids repeat.
        return Err(DevError::Component {
            component: "--chaos".to_owned(),
            message: "checks a cluster of one group: run it without --group".to_owned(),
        });
    }
    let plan = Plan::new(&args);
    let options = Options::from_args(Components::MultiCall(exe), &args);
    let mut cluster = Cluster::start(plan.clone(), &options).await?;
    if args.chaos {
        let result = chaos::run(&args, &mut cluster, &options, shutdown).await;
        println!("stopping the local cluster...");
        cluster.stop().await;
        return result;
    }
    println!("{}", status::banner(&plan, args.nodes));
    status::print_every(&plan, args.status_interval, &shutdown).await;
    println!("stopping the local cluster...");
    cluster.stop().await;
    println!("stopped; state kept in {}", plan.state.display());
    Ok(())
}
