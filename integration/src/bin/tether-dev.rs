//! `tether-dev`: the whole local cluster (see `tether_integration::dev`). `tether-dev __run <component>
//! [flags]` runs one component in this process; the supervisor starts every component that way.

use std::process::ExitCode;

use clap::Parser as _;
use tether_integration::dev;

#[tokio::main]
async fn main() -> ExitCode {
    let mut argv = std::env::args_os();
    let _program = argv.next();
    let rest: Vec<_> = argv.collect();
    let result = if rest.first().is_some_and(|a| a == "__run") {
        dev::run_component(rest[1..].to_vec()).await
    } else {
        let args = dev::Args::parse();
        tether_telemetry::init(args.log_format);
        let shutdown = tether_telemetry::shutdown_on_signals();
        dev::run(args, shutdown).await
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tether-dev: {e}");
            ExitCode::FAILURE
        }
    }
}
