//! `tether-bench`: runs the benchmark harness (`tether_integration::bench`) and prints `figure` and `ratio`
//! lines on stdout. `--quick` for a short run. `tether-bench __run <component> [flags]` runs one component
//! in this process (the footprint benchmark measures components as separate processes and falls back to
//! this when the workspace binary is not built).

use std::process::ExitCode;

use clap::Parser;

// The scheduler binary's allocator: the benchmarks run the scheduler's library in this process.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let rest: Vec<_> = std::env::args_os().skip(1).collect();
    let result = if rest.first().is_some_and(|a| a == "__run") {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| {
                rt.block_on(tether_integration::dev::run_component(rest[1..].to_vec()))
                    .map_err(anyhow::Error::from)
            })
    } else {
        let args = tether_integration::bench::BenchArgs::parse();
        tether_integration::bench::run(&args)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tether-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
