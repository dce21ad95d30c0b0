//! tetherctl: the operators' command line over tether-scheduler's admin gRPC API (`tether.v1.Admin`).
//!
//! This crate owns the command-line surface and its two renderings: human tables, and JSON for scripts
//! whose field names are a documented, stable contract (see [`output`]). It holds no cluster logic: every
//! answer comes from the scheduler, and every failure becomes one line on stderr and a non-zero exit.
//! `--wait` shows a progress bar when stdout is a terminal and one line per change otherwise.

pub mod output;

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use tether_proto::client::{self, EndpointError, TlsFiles, TlsFlags};
use tether_proto::v1::admin_client::AdminClient;
use tether_proto::v1::{
    BootstrapResetRequest, ExportStateRequest, GetClusterRequest, ListAgentsRequest,
    ListNodesRequest, ListVolumesRequest, MarkAgentGoneRequest, MintAgentTokenRequest,
    ReplaceNodeRequest, RotateAgentTokenSecretRequest, ScaleRequest, WatchEventsRequest,
};
use tether_proto::v1::{
    ControlRolloutRequest, EsSetting, GetRolloutRequest, RestartRequest, UpdateConfigRequest,
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
    /// File holding the admin bearer token (the scheduler's `--admin-token-file`). The deprecated
    /// `TETHER_TOKEN_FILE` is still read when this is unset.
    #[arg(long, global = true, env = "TETHER_ADMIN_TOKEN_FILE")]
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
    /// Every agent: sidecar, driver health, zone, attachment slots; or an action on agents.
    Agents {
        #[command(subcommand)]
        action: Option<AgentsAction>,
    },
    /// Every volume: node, existence, size, free space, zone, attachment.
    Volumes,
    /// Change the desired node count of a group (scale-down stops its highest ids and keeps their
    /// volumes).
    Scale {
        /// The new node count.
        #[arg(allow_negative_numbers = true)]
        nodes: i64,
        /// Remove nodes even if that removes the last copy of a shard (the scale is refused
        /// otherwise, naming the index); repeated on a scale-down in progress, lets a data move that
        /// is overdue (`--removal-step-timeout`) go on. Not `replace --force`.
        #[arg(long)]
        allow_data_loss: bool,
        /// The node group (`--group` of the scheduler); the default group (the nodes of no `--group`)
        /// when absent.
        #[arg(long)]
        group: Option<String>,
        /// Show progress until the cluster settles at the new count.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this long.
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        wait_timeout: Duration,
    },
    /// Relaunch a node elsewhere.
    Replace {
        /// The node id (within its group).
        id: u64,
        /// The node's group; the default group when absent.
        #[arg(long)]
        group: Option<String>,
        /// Replace even though the old task may still be alive (you assert it is not).
        #[arg(long)]
        force: bool,
        /// Without --force a RUNNING node's data moves away first; allow it even when the node holds
        /// the last copy of a shard.
        #[arg(long)]
        allow_data_loss: bool,
        /// Show progress until the node runs again.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this long.
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        wait_timeout: Duration,
    },
    /// Store a new node configuration (its number: `config_generation`) and roll it over the nodes one
    /// at a time, each step gated on what Elasticsearch says (`tetherctl rollout status` follows it).
    /// An image older than the running version is refused; a tag with no readable version needs
    /// --allow-unknown-version.
    Update {
        /// The Elasticsearch image.
        #[arg(long)]
        image: Option<String>,
        /// An Elasticsearch setting `KEY=VALUE` (repeatable; replaces the same key).
        #[arg(long = "es-setting", value_name = "KEY=VALUE")]
        es_settings: Vec<String>,
        /// An environment variable of Elasticsearch `NAME=VALUE` (repeatable; replaces the same name).
        #[arg(long = "es-env", value_name = "NAME=VALUE")]
        es_env: Vec<String>,
        /// Remove a stored Elasticsearch setting (repeatable).
        #[arg(long = "unset-es-setting", value_name = "KEY")]
        unset_es_settings: Vec<String>,
        /// Remove a stored environment variable (repeatable).
        #[arg(long = "unset-es-env", value_name = "NAME")]
        unset_es_env: Vec<String>,
        /// CPUs per node.
        #[arg(long)]
        cpus: Option<f64>,
        /// Memory per node, MB.
        #[arg(long)]
        mem: Option<f64>,
        /// JVM heap per node, MB.
        #[arg(long)]
        heap: Option<u64>,
        /// The node group; every group when absent.
        #[arg(long)]
        group: Option<String>,
        /// Accept an image tag with no readable Elasticsearch version (no downgrade check).
        #[arg(long)]
        allow_unknown_version: bool,
    },
    /// Restart the nodes (of a group, or all) one at a time on their current configuration.
    Restart {
        /// The node group; every group when absent.
        #[arg(long)]
        group: Option<String>,
    },
    /// The rolling change in progress: its status, or pause, resume, abort, rollback.
    Rollout {
        #[command(subcommand)]
        action: RolloutAction,
    },
    /// Follow state changes and scheduling decisions as they happen.
    Watch,
    /// The Elasticsearch cluster's bootstrap.
    Bootstrap {
        #[command(subcommand)]
        action: BootstrapAction,
    },
    /// Mint a token for HOST's sidecar (printed alone on the last line), or rotate the secret that signs
    /// every agent token.
    ///
    /// The scheduler signs the token with a secret kept in its state store; tetherctl never sees the
    /// secret. The sidecar presents the token (its `--token-file`) and may then speak only for HOST.
    /// `--rotate-secret` revokes every token minted before at once: mint new ones for every host.
    #[command(name = "agent-token")]
    AgentToken {
        /// The agent's host name, as the sidecar announces it (its `--hostname`) and Mesos offers it.
        #[arg(
            required_unless_present = "rotate_secret",
            conflicts_with = "rotate_secret"
        )]
        host: Option<String>,
        /// How long the token is valid (e.g. 30d, 12h).
        #[arg(long, default_value = "365d", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// Replace the secret instead: every agent token minted before is refused from now on.
        #[arg(long)]
        rotate_secret: bool,
    },
    /// HTTP addresses (`host:port`) of the Elasticsearch nodes that run and have joined the cluster, for
    /// clients and load balancers.
    ///
    /// Joined: the node's task is RUNNING and its last answer to the scheduler's `GET /` (asked every
    /// 2 s) named the cluster's UUID. A node still starting, or one that formed another cluster, is left
    /// out (`tetherctl nodes` shows it).
    Endpoints,
    /// The scheduler's persisted state, for backups.
    State {
        #[command(subcommand)]
        action: StateAction,
    },
    /// Print the completion script of a shell, e.g. `tetherctl completions bash >
    /// /etc/bash_completion.d/tetherctl` (the Debian package installs them).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// What to do with the rollout.
#[derive(Debug, Clone, Copy, clap::Subcommand)]
pub enum RolloutAction {
    /// Where it stands: configuration generation, state, nodes done, the current node, nodes pending,
    /// and why it waits or paused.
    Status,
    /// Stop moving on (the current step holds) until `resume`.
    Pause,
    /// Go on from where it stands.
    Resume,
    /// Stop after the current node; nodes already on the new configuration stay there.
    Abort,
    /// Send the current node back to its previous configuration (only if it never joined the cluster on
    /// the new one); the rollout then pauses.
    Rollback,
}

impl RolloutAction {
    /// The admin API's word.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutAction::Status => "status",
            RolloutAction::Pause => "pause",
            RolloutAction::Resume => "resume",
            RolloutAction::Abort => "abort",
            RolloutAction::Rollback => "rollback",
        }
    }
}

/// What to do with the bootstrap.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum BootstrapAction {
    /// Forget that the cluster bootstrapped, so the next launches bootstrap a cluster again (after a first
    /// bootstrap that failed). Refused while a node reports a cluster or its volumes may hold data.
    Reset {
        /// Reset anyway: the next launches form a new cluster and the old cluster's data is orphaned.
        #[arg(long)]
        yes_new_cluster: bool,
    },
}

/// What to do with the persisted state.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum StateAction {
    /// Print the persisted state (framework id, desired count, every node slot, the bootstrap) as a
    /// versioned JSON backup document, e.g. `tetherctl state export > tether-state.json`; load it with
    /// `tether-scheduler --restore FILE`. Always JSON, whatever `--output` says.
    Export {
        /// Also put the cluster CA's certificate and private key and the `elastic` password in it (keep
        /// that file as secret as the CA key). Without it they are left out and the document says so.
        #[arg(long)]
        include_secrets: bool,
    },
}

/// What to do with agents.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum AgentsAction {
    /// Asks the Mesos master to mark agents gone, for good: their tasks become TASK_GONE_BY_OPERATOR
    /// and their nodes are placed again elsewhere. Do it only when the machine is really off (powered
    /// down, terminated): a machine that is only cut off may still run its Elasticsearch node, and
    /// marking it gone lets a second node start on the same volumes unless the storage fences the old
    /// one. A host name means that host's agents whose tasks the scheduler knows UNREACHABLE; an agent
    /// that is up is refused.
    Gone {
        /// A Mesos agent id, or a host name.
        #[arg(value_name = "AGENT_ID|HOST")]
        agent: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

/// The deprecated name of `TETHER_ADMIN_TOKEN_FILE`, still read when the new one is unset.
pub const DEPRECATED_TOKEN_FILE_ENV: &str = "TETHER_TOKEN_FILE";

impl Args {
    /// Parses the command line and the environment, then applies the deprecated variables clap cannot
    /// express (its `env` takes one name), printing a note on stderr for each one used.
    pub fn from_env() -> Args {
        let mut args = <Args as clap::Parser>::parse();
        if let Some(note) = args.apply_deprecated_env(|name| std::env::var_os(name)) {
            eprintln!("tetherctl: {note}");
        }
        args
    }

    /// Fills `token_file` from `TETHER_TOKEN_FILE` (read through `var`) when neither `--token-file` nor
    /// `TETHER_ADMIN_TOKEN_FILE` gave one. Returns the deprecation note to print when the alias was used.
    pub fn apply_deprecated_env(
        &mut self,
        var: impl Fn(&str) -> Option<OsString>,
    ) -> Option<String> {
        if self.token_file.is_some() {
            return None;
        }
        // As clap does for `env`: an empty value counts as unset.
        let path = var(DEPRECATED_TOKEN_FILE_ENV).filter(|v| !v.is_empty())?;
        self.token_file = Some(PathBuf::from(path));
        Some(format!(
            "{DEPRECATED_TOKEN_FILE_ENV} is deprecated and will be removed; set TETHER_ADMIN_TOKEN_FILE instead"
        ))
    }
}

/// Writes `tetherctl`'s completion script for `shell` to `out`.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn Write) -> std::io::Result<()> {
    let mut command = <Args as clap::CommandFactory>::command();
    // Rendered first: clap_complete panics on a write error (e.g. a closed pipe), we report it.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "tetherctl", &mut script);
    out.write_all(&script)
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
    /// Our own `--timeout` (or the scheduler's enforcement of the deadline we sent) ended the call: no
    /// refusal was heard, and a write may or may not have happened.
    #[error(
        "the scheduler did not answer within --timeout ({message}); it may be busy or unreachable, and \
         a write may still take effect: check, or retry with a longer --timeout"
    )]
    TimedOut { message: String },
    #[error("gave up waiting after {waited:?}: {progress}")]
    WaitTimeout { waited: Duration, progress: String },
    #[error("not confirmed: nothing was marked gone (answer `yes`, or pass --yes)")]
    NotConfirmed,
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

impl From<tonic::Status> for CtlError {
    fn from(status: tonic::Status) -> Self {
        if is_timeout(&status) {
            return CtlError::TimedOut {
                message: status.message().to_owned(),
            };
        }
        CtlError::Refused {
            code: status.code(),
            message: status.message().to_owned(),
        }
    }
}

/// tonic ends a call whose deadline passed with CANCELLED "Timeout expired", on this side (the
/// channel's timeout) or the scheduler's (the `grpc-timeout` we sent); a server may also say
/// DEADLINE_EXCEEDED. None of these is the scheduler refusing.
/// `KEY=VALUE` arguments of `flag` as the API's pairs.
fn key_values(flag: &str, args: Vec<String>) -> Result<Vec<EsSetting>, CtlError> {
    args.into_iter()
        .map(|s| match s.split_once('=') {
            Some((key, value)) => Ok(EsSetting {
                key: key.to_owned(),
                value: value.to_owned(),
            }),
            None => Err(CtlError::Refused {
                code: tonic::Code::InvalidArgument,
                message: format!("{flag} {s:?}: expected KEY=VALUE"),
            }),
        })
        .collect()
}

fn is_timeout(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        if e.is::<tonic::TimeoutExpired>() {
            return true;
        }
        source = e.source();
    }
    status.code() == tonic::Code::DeadlineExceeded
        || (status.code() == tonic::Code::Cancelled
            && status.message() == tonic::TimeoutExpired(()).to_string())
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

/// Asks on stderr, reads the answer from stdin: only `yes` confirms (end of input does not).
async fn confirm_gone(agent: &str) -> bool {
    eprint!(
        "Mark the Mesos agent(s) of {agent} gone? This is irreversible: their tasks end for good and \
         their nodes start elsewhere on the same volumes. Do it only if the machine is really off. \
         Type 'yes' to continue: "
    );
    let answer = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    })
    .await;
    matches!(answer, Ok(Ok(line)) if line.trim() == "yes")
}

/// Runs one command, writing its output to `out`. `terminal`: `out` is a terminal, so `--wait` may draw
/// a progress bar on it instead of printing lines.
pub async fn run(args: Args, out: &mut (dyn Write + Send), terminal: bool) -> Result<(), CtlError> {
    if let Command::Completions { shell } = args.command {
        return Ok(completions(shell, out)?);
    }
    let mut client = connect(&args).await?;
    let format = args.output;
    let bar = terminal && format == Format::Table;
    match args.command {
        Command::Completions { .. } => {}
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
        Command::Agents { action: None } => {
            let agents = client
                .list_agents(ListAgentsRequest {})
                .await?
                .into_inner()
                .agents;
            output::agents(out, format, &agents)?;
        }
        Command::Agents {
            action: Some(AgentsAction::Gone { agent, yes }),
        } => {
            if !yes && !confirm_gone(&agent).await {
                return Err(CtlError::NotConfirmed);
            }
            let resp = client
                .mark_agent_gone(MarkAgentGoneRequest { agent })
                .await?
                .into_inner();
            output::agents_gone(out, format, &resp)?;
        }
        Command::State {
            action: StateAction::Export { include_secrets },
        } => {
            let doc = client
                .export_state(ExportStateRequest { include_secrets })
                .await?
                .into_inner();
            out.write_all(doc.document.as_bytes())?;
            out.write_all(b"\n")?;
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
            allow_data_loss,
            group,
            wait,
            wait_timeout,
        } => {
            let plan = client
                .scale(ScaleRequest {
                    nodes,
                    allow_data_loss,
                    group: group.unwrap_or_default(),
                })
                .await?
                .into_inner();
            output::scale(out, format, &plan)?;
            if wait {
                let desired = plan.desired;
                let group = if plan.group.is_empty() {
                    "default".to_owned()
                } else {
                    plan.group.clone()
                };
                wait_until(&mut client, out, format, bar, wait_timeout, |nodes| {
                    let ours = || nodes.iter().filter(|n| n.group == group);
                    let running = ours().filter(|n| n.state == "RUNNING").count() as u64;
                    let live = ours().filter(|n| n.is_live()).count() as u64;
                    Step {
                        done: running == desired && live == desired,
                        message: format!("{running}/{desired} running, {live} live"),
                        count: Some((running, desired)),
                    }
                })
                .await?;
            }
        }
        Command::Bootstrap {
            action: BootstrapAction::Reset { yes_new_cluster },
        } => {
            let resp = client
                .bootstrap_reset(BootstrapResetRequest {
                    new_cluster: yes_new_cluster,
                })
                .await?
                .into_inner();
            output::message(out, format, &resp.message)?;
        }
        Command::Replace {
            id,
            group,
            force,
            allow_data_loss,
            wait,
            wait_timeout,
        } => {
            let group = group.unwrap_or_default();
            let resp = client
                .replace_node(ReplaceNodeRequest {
                    node_id: id,
                    force,
                    allow_data_loss,
                    group: group.clone(),
                })
                .await?
                .into_inner();
            output::replace(out, format, &resp)?;
            if wait {
                let old = resp.old_task_id;
                let group = if group.is_empty() {
                    "default".to_owned()
                } else {
                    group
                };
                wait_until(&mut client, out, format, bar, wait_timeout, |nodes| {
                    let (done, message) =
                        match nodes.iter().find(|n| n.id == id && n.group == group) {
                            Some(n) => (
                                n.state == "RUNNING" && n.task_id.as_deref() != Some(old.as_str()),
                                format!("node {id} {}", n.state),
                            ),
                            None => (false, format!("node {id} not listed")),
                        };
                    Step {
                        done,
                        message,
                        count: None,
                    }
                })
                .await?;
            }
        }
        Command::AgentToken {
            rotate_secret: true,
            ..
        } => {
            let resp = client
                .rotate_agent_token_secret(RotateAgentTokenSecretRequest {})
                .await?
                .into_inner();
            output::message(out, format, &resp.message)?;
        }
        Command::AgentToken {
            host: Some(host),
            ttl,
            ..
        } => {
            let resp = client
                .mint_agent_token(MintAgentTokenRequest {
                    host,
                    ttl_seconds: ttl.as_secs(),
                })
                .await?
                .into_inner();
            output::agent_token(out, format, &resp)?;
        }
        // clap requires HOST unless --rotate-secret.
        Command::AgentToken { host: None, .. } => {}
        Command::Endpoints => {
            let nodes = client
                .list_nodes(ListNodesRequest {})
                .await?
                .into_inner()
                .nodes;
            output::endpoints(out, format, &nodes)?;
        }
        Command::Update {
            image,
            es_settings,
            es_env,
            unset_es_settings,
            unset_es_env,
            cpus,
            mem,
            heap,
            group,
            allow_unknown_version,
        } => {
            let status = client
                .update_config(UpdateConfigRequest {
                    image,
                    es_settings: key_values("--es-setting", es_settings)?,
                    es_env: key_values("--es-env", es_env)?,
                    unset_es_settings,
                    unset_es_env,
                    cpus,
                    mem,
                    heap,
                    group: group.unwrap_or_default(),
                    allow_unknown_version,
                })
                .await?
                .into_inner();
            output::rollout(out, format, &status)?;
        }
        Command::Restart { group } => {
            let status = client
                .restart(RestartRequest {
                    group: group.unwrap_or_default(),
                })
                .await?
                .into_inner();
            output::rollout(out, format, &status)?;
        }
        Command::Rollout { action } => {
            let status = match action {
                RolloutAction::Status => client.get_rollout(GetRolloutRequest {}).await?,
                other => {
                    client
                        .control_rollout(ControlRolloutRequest {
                            action: other.as_str().to_owned(),
                        })
                        .await?
                }
            }
            .into_inner();
            output::rollout(out, format, &status)?;
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

/// One look at the node list while waiting.
struct Step {
    done: bool,
    message: String,
    /// `(settled, wanted)` when the progress is countable (a bar), `None` for a spinner.
    count: Option<(u64, u64)>,
}

/// A bar when the step is countable, else a spinner; both show the step's message.
fn progress_bar(step: &Step) -> indicatif::ProgressBar {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    let (bar, template) = match step.count {
        Some((_, wanted)) => (
            ProgressBar::with_draw_target(Some(wanted), ProgressDrawTarget::stdout()),
            "{spinner} {elapsed:>4} [{bar:30}] {msg}",
        ),
        None => (
            ProgressBar::with_draw_target(None, ProgressDrawTarget::stdout()),
            "{spinner} {elapsed:>4} {msg}",
        ),
    };
    // The templates are constants; the default style is only a fallback that never shows.
    let style = ProgressStyle::with_template(template)
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    bar.set_style(style);
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// Polls the node list until `settled` says so, showing each new progress message once (as a line) or
/// as it changes (on a bar).
/// `draw_bar`: draw a progress bar on stdout (a terminal) rather than print lines.
async fn wait_until(
    client: &mut Client,
    out: &mut (dyn Write + Send),
    format: Format,
    draw_bar: bool,
    timeout: Duration,
    settled: impl Fn(&[NodeView]) -> Step,
) -> Result<(), CtlError> {
    let started = tokio::time::Instant::now();
    let mut last = String::new();
    let mut bar: Option<indicatif::ProgressBar> = None;
    loop {
        let nodes = client
            .list_nodes(ListNodesRequest {})
            .await?
            .into_inner()
            .nodes;
        let views: Vec<NodeView> = nodes.iter().map(NodeView::from).collect();
        let step = settled(&views);
        if draw_bar {
            // Whatever was printed before (the plan) must be on screen above the bar.
            out.flush()?;
            let b = bar.get_or_insert_with(|| progress_bar(&step));
            if let Some((done, wanted)) = step.count {
                b.set_length(wanted);
                b.set_position(done);
            }
            b.set_message(step.message.clone());
        } else if step.message != last {
            output::progress(out, format, &step.message)?;
            out.flush()?;
        }
        last = step.message;
        if step.done {
            if let Some(b) = bar {
                b.finish_with_message(last);
            }
            return Ok(());
        }
        if started.elapsed() >= timeout {
            if let Some(b) = bar {
                b.abandon();
            }
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
    fn the_old_token_variable_is_read_only_when_the_new_one_is_unset() {
        let old = |name: &str| {
            (name == DEPRECATED_TOKEN_FILE_ENV).then(|| OsString::from("/etc/tether/old.token"))
        };
        let mut args = parse(&["status"]);
        let note = args.apply_deprecated_env(old).expect("a deprecation note");
        assert!(note.contains("TETHER_ADMIN_TOKEN_FILE"), "{note}");
        assert_eq!(
            args.token_file.as_deref(),
            Some(std::path::Path::new("/etc/tether/old.token"))
        );

        let mut args = parse(&["--token-file", "/new.token", "status"]);
        assert_eq!(args.apply_deprecated_env(old), None);
        assert_eq!(
            args.token_file.as_deref(),
            Some(std::path::Path::new("/new.token"))
        );

        let mut args = parse(&["status"]);
        assert_eq!(args.apply_deprecated_env(|_| Some(OsString::new())), None);
        assert_eq!(args.token_file, None);
    }

    #[test]
    fn a_timeout_is_not_a_refusal() {
        let ours = CtlError::from(tonic::Status::cancelled("Timeout expired"));
        assert!(matches!(ours, CtlError::TimedOut { .. }), "{ours}");
        assert!(ours.to_string().contains("did not answer within --timeout"));
        assert!(!ours.to_string().contains("refused"));
        let deadline = CtlError::from(tonic::Status::deadline_exceeded("deadline"));
        assert!(matches!(deadline, CtlError::TimedOut { .. }));
        let refused = CtlError::from(tonic::Status::cancelled("the scheduler is shutting down"));
        assert!(matches!(refused, CtlError::Refused { .. }));
    }

    #[test]
    fn agent_token_takes_a_host_or_rotates() {
        let a = parse(&["agent-token", "agent-1", "--ttl", "30d"]);
        assert!(matches!(
            a.command,
            Command::AgentToken { host: Some(ref h), ttl, rotate_secret: false }
                if h == "agent-1" && ttl == Duration::from_secs(30 * 86_400)
        ));
        let r = parse(&["agent-token", "--rotate-secret"]);
        assert!(matches!(
            r.command,
            Command::AgentToken {
                host: None,
                rotate_secret: true,
                ..
            }
        ));
        for bad in [
            &["agent-token"][..],
            &["agent-token", "h", "--rotate-secret"],
        ] {
            assert!(
                Args::try_parse_from(std::iter::once("tetherctl").chain(bad.iter().copied()))
                    .is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn completions_name_every_subcommand() {
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let mut script = Vec::new();
            completions(shell, &mut script).expect("writes to a Vec");
            let script = String::from_utf8(script).expect("utf-8");
            for sub in ["status", "nodes", "endpoints", "scale", "completions"] {
                assert!(script.contains(sub), "{shell}: no {sub}");
            }
        }
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
