//! `es-standin`: one Elasticsearch-like node (see `tether_integration::es_standin`).

use clap::Parser;
use tether_integration::es_standin;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = es_standin::Args::parse();
    tether_telemetry::init(args.log_format);
    let shutdown = tether_telemetry::shutdown_on_signals();
    es_standin::run(args, shutdown, |_| {}).await?;
    Ok(())
}
