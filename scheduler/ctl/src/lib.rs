//! tetherctl: the operators' command line over tether-scheduler's admin gRPC API (`tether.v1.Admin`).
//!
//! This crate owns the command-line surface and its two renderings: human tables, and JSON for scripts
//! whose field names are a documented, stable contract (see [`output`]). It holds no cluster logic: every
//! answer comes from the scheduler, and every failure becomes one line on stderr and a non-zero exit.

pub mod output;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use tether_proto::client::{self, EndpointError, TlsFiles, TlsFlags};
use tether_proto::v1::admin_client::AdminClient;
use tether_proto::v1::{
    GetClusterRequest, ListAgentsRequest, ListNodesRequest, ListVolumesRequest, ReplaceNodeRequest,
    ScaleRequest, WatchEventsRequest,
};
use tokio_stream::StreamExt;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::output::{Format, NodeView};

/// Command-line arguments of tetherctl.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "tetherctl",
    version,
    about = "Inspect and steer a Tether cluster through tether-scheduler's admin API"
)]
pub struct Args {
    /// Admin API of the scheduler, e.g. `http://127.0.0.1:7070`.
    #[arg(
        long,
        global = true,
        env = "TETHER_SCHEDULER",
        default_value = "http://127.0.0.1:7070"
    )]
    pub scheduler: String,
    /// File holding the admin bearer token (the scheduler's `--admin-token-file`).
    #[arg(long, global = true, env = "TETHER_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// The admin bearer token itself; prefer `--token-file` (the environment only, never a flag value).
    #[arg(
        long = "token",
        env = "TETHER_ADMIN_TOKEN",
        hide_env_values = true,
        hide = true
    )]
    pub token: Option<String>,
    /// PEM CA certificate that signed the scheduler's certificate; required for an `https://` scheduler.
    #[arg(long, global = true, env = "TETHER_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// PEM client certificate for a scheduler that requires mutual TLS (`--tls-client-ca`).
    #[arg(long, global = true, env = "TETHER_CLIENT_CERT", requires = "key")]
    pub cert: Option<PathBuf>,
    /// PEM private key of `--cert`.
    #[arg(long, global = true, env = "TETHER_CLIENT_KEY", requires = "cert")]
    pub key: Option<PathBuf>,
    /// Output format: `table` for people, `json` for scripts.
    #[arg(long, global = true, env = "TETHER_OUTPUT", value_enum, default_value_t = Format::Table)]
    pub output: Format,
    /// How long to wait for the scheduler to answer a call.
    #[arg(long, global = true, env = "TETHER_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// The framework: id, master, desired and running counts, strategy.
    Status,
    /// Every node slot: id, state, task, agent, ports, volumes, reason.
    Nodes,
    /// Every agent: sidecar, driver health, zone, attachment slots.
    Agents,
    /// Every volume: node, existence, size, free space, zone, attachment.
    Volumes,
    /// Change the desired node count (scale-down stops the highest ids and keeps their volumes).
    Scale {
        /// The new node count.
        #[arg(allow_negative_numbers = true)]
        nodes: i64,
        /// Show progress until the cluster settles at the new count.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this long.
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        wait_timeout: Duration,
    },
    /// Relaunch a node elsewhere.
    Replace {
        /// The node id.
        id: u64,
        /// Replace even though the old task may still be alive (you assert it is not).
        #[arg(long)]
        force: bool,
        /// Show progress until the node runs again.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this long.
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        wait_timeout: Duration,
    },
    /// Follow state changes and scheduling decisions as they happen.
    Watch,
}

/// Why a command failed. Each renders as one line.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("invalid scheduler address {url:?}: {reason}")]
    BadAddress { url: String, reason: String },
    #[error("cannot reach the scheduler at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("cannot read the token file {path}: {source}")]
    TokenFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {what} {path}: {source}")]
    TlsFile {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("the token is not valid gRPC metadata")]
    BadToken,
    #[error("the scheduler refused: {code:?}: {message}")]
    Refused { code: tonic::Code, message: String },
    #[error("gave up waiting after {waited:?}: {progress}")]
    WaitTimeout { waited: Duration, progress: String },
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

impl From<tonic::Status> for CtlError {
    fn from(status: tonic::Status) -> Self {
        CtlError::Refused {
            code: status.code(),
            message: status.message().to_owned(),
        }
    }
}

type Client = AdminClient<InterceptedService<Channel, Auth>>;

/// Adds the bearer token to every call.
#[derive(Debug, Clone)]
pub struct Auth(Option<MetadataValue<tonic::metadata::Ascii>>);

impl Auth {
    /// Sends `authorization: <value>` (e.g. `Bearer <token>`) on every call; `None` sends nothing.
    pub fn new(value: Option<MetadataValue<tonic::metadata::Ascii>>) -> Self {
        Auth(value)
    }
}

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            req.metadata_mut().insert("authorization", token.clone());
        }
        Ok(req)
    }
}

fn token(args: &Args) -> Result<Auth, CtlError> {
    let raw = match (&args.token_file, &args.token) {
        (Some(path), _) => {
            Some(
                std::fs::read_to_string(path).map_err(|source| CtlError::TokenFile {
                    path: path.clone(),
                    source,
                })?,
            )
        }
        (None, Some(t)) => Some(t.clone()),
        (None, None) => None,
    };
    let value = raw
        .map(|t| client::bearer(&t).map_err(|_| CtlError::BadToken))
        .transpose()?;
    Ok(Auth(value))
}

async fn connect(args: &Args) -> Result<Client, CtlError> {
    let auth = token(args)?;
    let channel = endpoint(args)?
        .connect_timeout(args.timeout)
        .timeout(args.timeout)
        .connect()
        .await
        .map_err(|e| CtlError::Unreachable {
            url: args.scheduler.clone(),
            reason: source_chain(&e),
        })?;
    Ok(AdminClient::with_interceptor(channel, auth))
}

/// The endpoint of `--scheduler`, with TLS for `https://` (`tether_proto::client`'s rule: TLS flags with a
/// plaintext URL are refused rather than ignored, so a typo never silently sends the token in the clear).
fn endpoint(args: &Args) -> Result<Endpoint, CtlError> {
    let files = TlsFiles {
        ca: args.ca_cert.as_deref(),
        identity: args.cert.as_deref().zip(args.key.as_deref()),
    };
    let flags = TlsFlags {
        ca: "--ca-cert",
        cert: "--cert",
    };
    client::endpoint(&args.scheduler, files, flags).map_err(|e| match e {
        EndpointError::BadUrl { url, source } => CtlError::BadAddress {
            url,
            reason: source.to_string(),
        },
        EndpointError::ReadFile { what, path, source } => CtlError::TlsFile { what, path, source },
        EndpointError::Tls { source, .. } => CtlError::Tls(source_chain(&source)),
        rule @ (EndpointError::TlsWithoutHttps { .. } | EndpointError::NoCa { .. }) => {
            CtlError::Tls(rule.to_string())
        }
    })
}

/// tonic's transport errors say "transport error" at the top; the cause is further down.
fn source_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        parts.push(s.to_string());
        cur = s.source();
    }
    parts.dedup();
    parts.join(": ")
}

/// Runs one command, writing its output to `out`.
pub async fn run(args: Args, out: &mut (dyn Write + Send)) -> Result<(), CtlError> {
    let mut client = connect(&args).await?;
    let format = args.output;
    match args.command {
        Command::Status => {
            let cluster = client.get_cluster(GetClusterRequest {}).await?.into_inner();
            output::cluster(out, format, &cluster)?;
        }
        Command::Nodes => {
            let nodes = client
                .list_nodes(ListNodesRequest {})
                .await?
                .into_inner()
                .nodes;
            output::nodes(out, format, &nodes)?;
        }
        Command::Agents => {
            let agents = client
                .list_agents(ListAgentsRequest {})
                .await?
                .into_inner()
                .agents;
            output::agents(out, format, &agents)?;
        }
        Command::Volumes => {
            let volumes = client
                .list_volumes(ListVolumesRequest {})
                .await?
                .into_inner()
                .volumes;
            output::volumes(out, format, &volumes)?;
        }
        Command::Scale {
            nodes,
            wait,
            wait_timeout,
        } => {
            let plan = client.scale(ScaleRequest { nodes }).await?.into_inner();
            output::scale(out, format, &plan)?;
            if wait {
                let desired = plan.desired;
                wait_until(&mut client, out, format, wait_timeout, |nodes| {
                    let running = nodes.iter().filter(|n| n.state == "RUNNING").count() as u64;
                    let live = nodes.iter().filter(|n| n.is_live()).count() as u64;
                    let progress = format!("{running}/{desired} running, {live} live");
                    (running == desired && live == desired, progress)
                })
                .await?;
            }
        }
        Command::Replace {
            id,
            force,
            wait,
            wait_timeout,
        } => {
            let resp = client
                .replace_node(ReplaceNodeRequest { node_id: id, force })
                .await?
                .into_inner();
            output::replace(out, format, &resp)?;
            if wait {
                let old = resp.old_task_id;
                wait_until(&mut client, out, format, wait_timeout, |nodes| match nodes
                    .iter()
                    .find(|n| n.id == id)
                {
                    Some(n) => (
                        n.state == "RUNNING" && n.task_id.as_deref() != Some(old.as_str()),
                        format!("node {id} {}", n.state),
                    ),
                    None => (false, format!("node {id} not listed")),
                })
                .await?;
            }
        }
        Command::Watch => {
            let mut stream = client
                .watch_events(WatchEventsRequest {})
                .await?
                .into_inner();
            while let Some(event) = stream.next().await {
                output::event(out, format, &event?)?;
                out.flush()?;
            }
        }
    }
    Ok(())
}

/// Polls the node list until `settled` says so, printing each new progress line once.
async fn wait_until(
    client: &mut Client,
    out: &mut (dyn Write + Send),
    format: Format,
    timeout: Duration,
    settled: impl Fn(&[NodeView]) -> (bool, String),
) -> Result<(), CtlError> {
    let started = tokio::time::Instant::now();
    let mut last = String::new();
    loop {
        let nodes = client
            .list_nodes(ListNodesRequest {})
            .await?
            .into_inner()
            .nodes;
        let views: Vec<NodeView> = nodes.iter().map(NodeView::from).collect();
        let (done, progress) = settled(&views);
        if progress != last {
            output::progress(out, format, &progress)?;
            out.flush()?;
            last = progress;
        }
        if done {
            return Ok(());
        }
        if started.elapsed() >= timeout {
            return Err(CtlError::WaitTimeout {
                waited: timeout,
                progress: last,
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[test]
    fn every_global_flag_is_documented_and_reads_the_environment() {
        for arg in Args::command().get_arguments() {
            let id = arg.get_id().as_str();
            if matches!(id, "help" | "version") {
                continue;
            }
            assert!(arg.get_help().is_some(), "--{id} has no help text");
            let env = arg
                .get_env()
                .map(|e| e.to_string_lossy().into_owned())
                .unwrap_or_default();
            assert!(env.starts_with("TETHER_"), "--{id} has no TETHER_ variable");
        }
    }

    fn parse(argv: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("tetherctl").chain(argv.iter().copied()))
            .expect("valid flags")
    }

    #[test]
    fn tls_flags_need_an_https_url_and_https_needs_a_ca() {
        let plain = parse(&["--scheduler", "http://h:1", "status"]);
        assert!(endpoint(&plain).is_ok(), "plaintext");

        let mixed = parse(&[
            "--scheduler",
            "http://h:1",
            "--ca-cert",
            "/ca.pem",
            "status",
        ]);
        let err = endpoint(&mixed).expect_err("TLS flags with http://");
        assert!(err.to_string().contains("https://"), "{err}");

        let no_ca = parse(&["--scheduler", "https://h:1", "status"]);
        let err = endpoint(&no_ca).expect_err("https without a CA");
        assert!(err.to_string().contains("--ca-cert"), "{err}");

        let missing = parse(&[
            "--scheduler",
            "https://h:1",
            "--ca-cert",
            "/nonexistent/ca.pem",
            "status",
        ]);
        let err = endpoint(&missing).expect_err("unreadable CA");
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");

        // --cert without --key is a usage error.
        assert!(
            Args::try_parse_from(["tetherctl", "--cert", "/c.pem", "status"]).is_err(),
            "--cert needs --key"
        );
    }
}
