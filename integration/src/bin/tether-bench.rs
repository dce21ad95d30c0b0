//! `tether-bench`: runs the benchmark harness (`tether_integration::bench`) and prints `figure` and `ratio`
//! lines on stdout. `--quick` for a short run.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = tether_integration::bench::BenchArgs::parse();
    match tether_integration::bench::run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tether-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
