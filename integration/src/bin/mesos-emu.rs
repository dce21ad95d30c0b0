//! `mesos-emu`: the Mesos master emulator as a standalone process.

use clap::Parser as _;
use tether_integration::mesos_emu::{Args, run};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tether_telemetry::init(args.log_format);
    let cancel = tether_telemetry::shutdown_on_signals();
    run(args, cancel).await?;
    Ok(())
}
