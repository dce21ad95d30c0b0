//! The `fake-rexray` command line, in the library so the local cluster can run it as a component.

use std::path::PathBuf;

use tokio_util::sync::CancellationToken;

use super::{Config, FakeRexray};

/// A REX-Ray 0.11 double speaking the Docker volume plugin protocol on a unix socket.
///
/// Run one instance per simulated host; instances sharing --backend see one "cloud", so a volume is
/// attached to at most one host. Faults can be injected at run time by POSTing a JSON body to
/// /Fake.SetFaults on the socket, e.g.
/// {"methods":{"Mount":{"latency_ms":500,"error":"boom","hang":false}},"quirk":"legacy_error"};
/// /Fake.ClearFaults removes them; /Fake.Counts returns the mount counts.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "fake-rexray", version)]
pub struct Args {
    /// Unix socket to serve on (e.g. /run/docker/plugins/rexray.sock).
    #[arg(long, env = "TETHER_FAKE_REXRAY_SOCKET")]
    pub socket: PathBuf,
    /// Backend directory shared by every instance (the simulated cloud's volumes and attachments).
    #[arg(long, env = "TETHER_FAKE_REXRAY_BACKEND")]
    pub backend: PathBuf,
    /// Host name of the simulated instance this plugin runs on.
    #[arg(long, env = "TETHER_FAKE_REXRAY_HOST")]
    pub host: String,
    /// Availability zone of this instance; the default zone of volumes it creates.
    #[arg(long, env = "TETHER_FAKE_REXRAY_ZONE", default_value = "")]
    pub zone: String,
    /// Force-detach a volume attached to another host on Mount (REX-Ray's mount.preempt).
    #[arg(long, env = "TETHER_FAKE_REXRAY_PREEMPT")]
    pub preempt: bool,
    /// Create a missing volume on Mount (REX-Ray's create.implicit).
    #[arg(long, env = "TETHER_FAKE_REXRAY_IMPLICIT_CREATE")]
    pub implicit_create: bool,
    /// Root of the mountpoints (`<root>/volumes/<name>/data`); default `<backend>/hosts/<host>`.
    #[arg(long, env = "TETHER_FAKE_REXRAY_ROOT")]
    pub root: Option<PathBuf>,
    /// Log format.
    #[arg(long, env = "TETHER_LOG_FORMAT", value_enum, default_value_t)]
    pub log_format: tether_telemetry::LogFormat,
}

/// Serves until `shutdown`, then closes the socket.
pub async fn run(args: Args, shutdown: CancellationToken) -> std::io::Result<()> {
    let config = Config {
        socket: args.socket,
        backend: args.backend,
        host: args.host,
        zone: args.zone,
        preempt: args.preempt,
        implicit_create: args.implicit_create,
        root: args.root,
    };
    let server = FakeRexray::serve(config).await?;
    tracing::info!(socket = %server.socket().display(), "fake-rexray serving");
    shutdown.cancelled().await;
    server.shutdown().await;
    Ok(())
}
