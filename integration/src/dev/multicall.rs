//! The multi-call entry point: `tether-dev __run <component> ...` runs one component in this process by
//! calling its library `run` exactly as its own binary does, so `cargo run --bin tether-dev` needs no
//! other build step.

use std::ffi::OsString;

use clap::Parser as _;

use super::DevError;

/// What `tether-dev __run` can start.
pub const COMPONENTS: [&str; 5] = [
    "mesos-emu",
    "fake-rexray",
    "tether-sidecar",
    "tether-scheduler",
    "es-standin",
];

/// Runs one component in this process (the multi-call entry point): `argv[0]` is the component name.
pub async fn run_component(argv: Vec<OsString>) -> Result<(), DevError> {
    let name = argv
        .first()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_default();
    let fail = |e: &dyn std::fmt::Display| DevError::Component {
        component: name.clone(),
        message: e.to_string(),
    };
    match name.as_str() {
        "mesos-emu" => {
            let args = crate::mesos_emu::Args::parse_from(&argv);
            tether_telemetry::init(args.log_format);
            let shutdown = tether_telemetry::shutdown_on_signals();
            crate::mesos_emu::run(args, shutdown)
                .await
                .map_err(|e| fail(&e))
        }
        "fake-rexray" => {
            let args = crate::fake_rexray::cli::Args::parse_from(&argv);
            tether_telemetry::init(args.log_format);
            let shutdown = tether_telemetry::shutdown_on_signals();
            crate::fake_rexray::cli::run(args, shutdown)
                .await
                .map_err(|e| fail(&e))
        }
        "tether-sidecar" => {
            let args = tether_sidecar::Args::parse_from(&argv);
            tether_telemetry::init(args.log_format);
            let shutdown = tether_telemetry::shutdown_on_signals();
            tether_sidecar::run(args, shutdown)
                .await
                .map_err(|e| fail(&e))
        }
        "tether-scheduler" => {
            let args = tether_scheduler::args::Args::parse_from(&argv);
            tether_telemetry::init(args.log_format);
            let shutdown = tether_telemetry::shutdown_on_signals();
            tether_scheduler::run::run(args, shutdown)
                .await
                .map_err(|e| fail(&e))
        }
        "es-standin" => {
            let args = crate::es_standin::Args::parse_from(&argv);
            tether_telemetry::init(args.log_format);
            let shutdown = tether_telemetry::shutdown_on_signals();
            crate::es_standin::run(args, shutdown, |_| {})
                .await
                .map_err(|e| fail(&e))
        }
        other => Err(DevError::UnknownComponent(other.to_owned())),
    }
}
