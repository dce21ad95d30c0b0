//! `tether-sidecar` binary: tracing, the shutdown signal, then the library's `run`.

use clap::Parser;
use tether_sidecar::Args;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tether_telemetry::init(args.log_format);
    let shutdown = tether_telemetry::shutdown_on_signals();
    tether_sidecar::run(args, shutdown).await?;
    Ok(())
}
