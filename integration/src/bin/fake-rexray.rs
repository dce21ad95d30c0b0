//! `fake-rexray`: serves a REX-Ray 0.11 double on a unix socket until SIGTERM/SIGINT.
//!
//! Fault injection at run time from another process: `POST /Fake.SetFaults` on the same socket with a JSON
//! body like `{"methods":{"Mount":{"latency_ms":0,"error":null,"hang":true}},"quirk":"standard"}`
//! (quirks: standard, legacy_error, html, ok_with_err, lowercase, text_plain); `POST /Fake.ClearFaults`;
//! `POST /Fake.Counts` returns this instance's mount counts.

use clap::Parser;
use tether_integration::fake_rexray::cli::{Args, run};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tether_telemetry::init(args.log_format);
    let shutdown = tether_telemetry::shutdown_on_signals();
    run(args, shutdown).await?;
    Ok(())
}
