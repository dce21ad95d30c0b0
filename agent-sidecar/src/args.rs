//! Command-line and environment configuration of `tether-sidecar` (shared with in-process runners).

use std::path::PathBuf;

use tether_proto::client::{self, EndpointError, TlsFiles, TlsFlags};
use tonic::transport::Endpoint;

pub use tether_telemetry::LogFormat;

/// tether-sidecar: verifies, attaches and measures external volumes through the Docker volume plugin
/// protocol on one Mesos agent, and streams what it sees to tether-scheduler over gRPC.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "tether-sidecar", version)]
pub struct Args {
    /// tether-scheduler's agent channel: a gRPC URL (e.g. http://scheduler.example:7070), several
    /// comma-separated (the HA candidates: tried in turn), or zk://hosts/<root> (the schedulers'
    /// --state), where the leader is read from the election. A standby's refusal names the leader and the
    /// sidecar dials it next.
    #[arg(long, env = "TETHER_SCHEDULER", value_name = "URL[,URL...]|zk://...")]
    pub scheduler: String,

    /// ZooKeeper options, for a zk:// `--scheduler`.
    #[command(flatten)]
    pub zk: tether_zk::ZkArgs,

    /// Name of the Docker volume driver to use (e.g. rexray), found like the Docker engine finds it.
    #[arg(long, env = "TETHER_DRIVER")]
    pub driver: String,

    /// Directory searched for `<driver>.sock` and `<driver>/<driver>.sock` (repeatable, in order).
    #[arg(
        long = "plugin-dir",
        env = "TETHER_PLUGIN_DIRS",
        value_delimiter = ',',
        default_value = "/run/docker/plugins"
    )]
    pub plugin_dirs: Vec<PathBuf>,

    /// Directory searched for `<driver>.spec` / `<driver>.json` files after the sockets (repeatable).
    #[arg(
        long = "spec-dir",
        env = "TETHER_SPEC_DIRS",
        value_delimiter = ',',
        default_values = ["/etc/docker/plugins", "/usr/lib/docker/plugins"]
    )]
    pub spec_dirs: Vec<PathBuf>,

    /// Host name announced to the scheduler; must equal the Mesos agent's offer hostname. Default: the
    /// system's host name.
    #[arg(long, env = "TETHER_HOSTNAME")]
    pub hostname: Option<String>,

    /// Mesos agent id, when known (lets the scheduler join on it as well as on the host name).
    #[arg(long, env = "TETHER_AGENT_ID")]
    pub agent_id: Option<String>,

    /// Availability zone of this agent (e.g. us-east-1a); empty when unknown.
    #[arg(long, env = "TETHER_ZONE", default_value = "")]
    pub zone: String,

    /// How many volumes this agent can have attached at once; 0 means no limit.
    #[arg(long, env = "TETHER_MAX_ATTACHMENTS", default_value_t = 0)]
    pub max_attachments: u32,

    /// How often to report to the scheduler (the scheduler's Welcome may override it), e.g. 10s, 500ms.
    #[arg(long, env = "TETHER_REPORT_INTERVAL", default_value = "10s")]
    pub report_interval: humantime::Duration,

    /// How often to look (`Get`) at an assigned volume whose facts are settled (the same in two looks in
    /// a row) and that is neither held nor waiting for a launch; those are looked at every report
    /// interval. Applies to the share a scheduler assigns (`watch_delta`); an old scheduler's full watch
    /// set is looked at every interval.
    #[arg(long, env = "TETHER_DETAIL_INTERVAL", default_value = "5m")]
    pub detail_interval: humantime::Duration,

    /// How often to send a full snapshot report between reports that carry only changes (a scheduler
    /// that assigns shares accepts changes; the first report on every stream is a snapshot).
    #[arg(long, env = "TETHER_SNAPSHOT_INTERVAL", default_value = "10m")]
    pub snapshot_interval: humantime::Duration,

    /// File recording the mounts the sidecar holds, so a restarted sidecar releases them.
    #[arg(
        long,
        env = "TETHER_STATE_FILE",
        default_value = "/var/lib/tether-sidecar/state.json"
    )]
    pub state_file: PathBuf,

    /// File holding the agent token sent to the scheduler as `authorization: Bearer <token>`.
    #[arg(long, env = "TETHER_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,

    /// Serve Prometheus metrics (volume plugin call latency and errors, by method) on this address.
    #[arg(long, env = "TETHER_METRICS_LISTEN")]
    pub metrics_listen: Option<std::net::SocketAddr>,

    /// PEM CA certificate that signed the scheduler's certificate; required for an `https://` scheduler.
    #[arg(long, env = "TETHER_SCHEDULER_CA")]
    pub scheduler_ca: Option<PathBuf>,

    /// PEM client certificate for a scheduler that requires mutual TLS (`--tls-client-ca`).
    #[arg(long, env = "TETHER_CLIENT_CERT", requires = "key")]
    pub cert: Option<PathBuf>,

    /// PEM private key of `--cert`.
    #[arg(long, env = "TETHER_CLIENT_KEY", requires = "cert")]
    pub key: Option<PathBuf>,

    /// Log format: text or json. Log level comes from RUST_LOG (default info).
    #[arg(long, env = "TETHER_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Timeout of the driver's Create and Mount calls.
    #[arg(long, env = "TETHER_MOUNT_TIMEOUT", default_value = "2m")]
    pub mount_timeout: humantime::Duration,

    /// Timeout of every other driver call.
    #[arg(long, env = "TETHER_CALL_TIMEOUT", default_value = "1m")]
    pub call_timeout: humantime::Duration,

    /// Largest driver reply accepted, in bytes.
    #[arg(long, env = "TETHER_MAX_REPLY_BYTES", default_value_t = 1 << 20)]
    pub max_reply_bytes: usize,

    /// On SIGTERM, how long to let in-flight commands finish before releasing held mounts.
    #[arg(long, env = "TETHER_GRACE_PERIOD", default_value = "30s")]
    pub grace_period: humantime::Duration,

    /// First delay before redialling the scheduler (doubles up to --reconnect-max, with jitter).
    #[arg(long, env = "TETHER_RECONNECT_MIN", default_value = "500ms")]
    pub reconnect_min: humantime::Duration,

    /// Longest delay between redials of the scheduler.
    #[arg(long, env = "TETHER_RECONNECT_MAX", default_value = "30s")]
    pub reconnect_max: humantime::Duration,
}

impl Args {
    /// The host name to announce: `--hostname`, else the system's.
    pub fn effective_hostname(&self) -> String {
        if let Some(h) = self.hostname.as_deref().filter(|h| !h.trim().is_empty()) {
            return h.trim().to_string();
        }
        system_hostname()
    }
}

impl Args {
    /// Where to dial (`--scheduler` parsed), refusing a bad list or zk:// URL.
    pub fn targets(&self) -> Result<crate::leader::Targets, String> {
        crate::leader::Targets::parse(&self.scheduler, &self.zk, self.scheduler_ca.is_some())
    }

    /// The endpoint of the scheduler at `url` (one of `--scheduler`'s, or a leader's), with TLS for an
    /// `https://` URL (`tether_proto::client`'s rule). Files are read on every call, so a redial picks up
    /// rotated certificates.
    pub fn endpoint(&self, url: &str) -> Result<Endpoint, String> {
        let files = TlsFiles {
            ca: self.scheduler_ca.as_deref(),
            identity: self.cert.as_deref().zip(self.key.as_deref()),
        };
        let flags = TlsFlags {
            ca: "--scheduler-ca",
            cert: "--cert",
        };
        client::endpoint(url, files, flags).map_err(|e| match e {
            EndpointError::BadUrl { url, source } => format!("--scheduler {url:?}: {source}"),
            EndpointError::ReadFile { path, source, .. } => {
                format!("reading {}: {source}", path.display())
            }
            other => other.to_string(),
        })
    }
}

/// The kernel's host name (`/proc/sys/kernel/hostname`), else `/etc/hostname`, else `localhost`.
pub fn system_hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .find(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn every_flag_is_documented_and_has_an_env_var() {
        let cmd = Args::command();
        for arg in cmd
            .get_arguments()
            .filter(|a| a.get_long().is_some_and(|l| l != "help" && l != "version"))
        {
            assert!(
                arg.get_help().is_some(),
                "--{:?} has no help",
                arg.get_long()
            );
            let env = arg
                .get_env()
                .map(|e| e.to_string_lossy().into_owned())
                .unwrap_or_default();
            assert!(
                env.starts_with("TETHER_"),
                "--{:?} has no TETHER_ env var",
                arg.get_long()
            );
        }
    }

    #[test]
    fn tls_flags_need_an_https_url_and_https_needs_a_ca() {
        use clap::Parser;
        let parse = |extra: &[&str]| {
            let mut argv = vec!["tether-sidecar", "--driver", "rexray"];
            argv.extend_from_slice(extra);
            Args::try_parse_from(argv).expect("valid flags")
        };
        let endpoint = |a: Args| a.endpoint(&a.scheduler);
        assert!(endpoint(parse(&["--scheduler", "http://s:1"])).is_ok());
        let err = endpoint(parse(&[
            "--scheduler",
            "http://s:1",
            "--scheduler-ca",
            "/ca.pem",
        ]))
        .expect_err("TLS flags with http://");
        assert!(err.contains("https://"), "{err}");
        let err = endpoint(parse(&["--scheduler", "https://s:1"])).expect_err("https without a CA");
        assert!(err.contains("--scheduler-ca"), "{err}");
        let err = endpoint(parse(&[
            "--scheduler",
            "https://s:1",
            "--scheduler-ca",
            "/nonexistent/ca.pem",
        ]))
        .expect_err("unreadable CA");
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn interface_flags_parse() {
        use clap::Parser;
        let a = Args::try_parse_from([
            "tether-sidecar",
            "--scheduler",
            "http://s:1",
            "--driver",
            "rexray",
            "--plugin-dir",
            "/a",
            "--plugin-dir",
            "/b",
            "--spec-dir",
            "/c",
            "--hostname",
            "h",
            "--zone",
            "z",
            "--max-attachments",
            "3",
            "--report-interval",
            "250ms",
            "--state-file",
            "/s.json",
            "--token-file",
            "/t",
        ]);
        let a = a.map_err(|e| e.to_string());
        assert!(
            a.as_ref()
                .is_ok_and(|a| a.plugin_dirs.len() == 2 && a.max_attachments == 3),
            "{a:?}"
        );
    }
}
