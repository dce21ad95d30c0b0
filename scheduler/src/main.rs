//! `tether-scheduler`: parses flags and runs the library's event loop (see `tether_scheduler::run`).

use std::process::ExitCode;

use clap::Parser;

// Sidecar reports are decoded on the connection tasks and dropped on the event loop: glibc's malloc spent
// a third of the ingest benchmark's CPU in allocation, much of it on arena locks (BENCHMARKS.md, ingest).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let args = tether_scheduler::args::Args::parse();
    tether_telemetry::init(args.log_format);
    let shutdown = tether_telemetry::shutdown_on_signals();
    let result = match args.restore.clone() {
        Some(file) => tether_scheduler::backup::restore(&args, &file)
            .await
            .map(|r| println!("{r}")),
        None => tether_scheduler::run::run(args, shutdown).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "tether-scheduler stopped");
            eprintln!("tether-scheduler: {e}");
            ExitCode::FAILURE
        }
    }
}
