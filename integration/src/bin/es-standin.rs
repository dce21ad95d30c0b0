//! `es-standin`: one Elasticsearch node of the official image (see `tether_integration::es_standin`).
//! A refused start prints Elasticsearch's message and exits with its code.

use std::process::ExitCode;

use clap::Parser;
use tether_integration::es_standin;

#[tokio::main]
async fn main() -> ExitCode {
    let args = es_standin::Args::parse();
    tether_telemetry::init(args.log_format);
    let shutdown = tether_telemetry::shutdown_on_signals();
    match es_standin::run(args, shutdown, |_| {}).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let text = e.to_string();
            if text.starts_with("ERROR: ") {
                eprintln!("{text}");
            } else {
                eprintln!("ERROR: {text}");
            }
            ExitCode::from(e.exit_code())
        }
    }
}
