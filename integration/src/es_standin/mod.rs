//! `es-standin`: a small HTTP server that behaves like one Elasticsearch node as far as Tether is concerned.
//!
//! Real Elasticsearch cannot be installed here, so the tests and the local cluster run this instead. It reads
//! the settings Tether hands a real node — from flags, or from the environment the way the official
//! Elasticsearch image does (`node.name`, `cluster.name`, `http.port`, `transport.port`,
//! `discovery.seed_hosts`, `path.data`, `network.host`) — and:
//! - answers `GET /` with the node's identity and `GET /_cluster/health` counting the seed peers whose
//!   transport port accepts a connection;
//! - answers `GET /_cluster/state[/master_node,nodes]` with the elected master and the nodes it lists,
//!   or 503 `master_not_discovered_exception` without a majority ([`discovery`]: nodes greet each other
//!   on the transport port; a dead or frozen node does not answer and is not listed);
//! - stores documents (`PUT /<index>/_doc/<id>`, `GET /<index>/_doc/<id>`) as files under its data path,
//!   fsynced before it answers, so an acknowledged write survives a kill -9;
//! - holds an exclusive lock on `<data>/node.lock` for its whole life and refuses to start when another live
//!   process holds it, as Elasticsearch does — the check that catches two writers on one data directory;
//! - before it reads or writes a document, checks that `<data>/node.lock` is still the file it locked, as
//!   Elasticsearch does (`NodeEnvironment.assertEnvIsLocked`, Lucene's `NativeFSLock.ensureValid`), and
//!   fails the request when it is not — so a node whose volume was force-detached (preempted by another
//!   host) cannot acknowledge anything afterwards;
//! - records in `<data>/node.json` which node id first created the data, so tests can prove a relaunched
//!   node came back on the same volume.

use std::convert::Infallible;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::mesos_emu::volume_env_name;

mod discovery;

/// Largest document body accepted; Elasticsearch's default `http.max_content_length` is 100 MB, a
/// stand-in needs far less.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// Settings of one stand-in node. Each flag also reads the environment variable the official Elasticsearch
/// image maps to the same setting, so a task built for real Elasticsearch runs the stand-in unchanged.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "es-standin",
    version,
    about = "Elasticsearch stand-in for Tether's tests and local cluster"
)]
pub struct Args {
    /// Node name (Elasticsearch `node.name`).
    #[arg(long, env = "node.name", default_value = "es-standin")]
    pub node_name: String,
    /// Cluster name (Elasticsearch `cluster.name`).
    #[arg(long, env = "cluster.name", default_value = "elasticsearch")]
    pub cluster_name: String,
    /// Address to bind the HTTP and transport listeners to (Elasticsearch `network.host`).
    #[arg(long, env = "network.host", default_value = "127.0.0.1")]
    pub network_host: String,
    /// Address the other nodes reach this one at (Elasticsearch `network.publish_host`); default the
    /// bound address, or 127.0.0.1 when bound to every interface.
    #[arg(long, env = "network.publish_host")]
    pub publish_host: Option<String>,
    /// HTTP port (Elasticsearch `http.port`); 0 picks a free one.
    #[arg(long, env = "http.port", default_value_t = 9200)]
    pub http_port: u16,
    /// Transport port (Elasticsearch `transport.port`); 0 picks a free one. Peers count each other as
    /// reachable when this port accepts a TCP connection.
    #[arg(long, env = "transport.port", default_value_t = 9300)]
    pub transport_port: u16,
    /// Comma-separated `host:port` transport addresses of the other nodes (Elasticsearch
    /// `discovery.seed_hosts`).
    #[arg(
        long,
        env = "discovery.seed_hosts",
        default_value = "",
        value_delimiter = ','
    )]
    pub seed_hosts: Vec<String>,
    /// Directory holding the node's data (Elasticsearch `path.data`). Under the emulator's process
    /// launcher, a container path is translated to the host directory the volume was mounted at.
    #[arg(long, env = "path.data", default_value = "/data")]
    pub data_path: PathBuf,
    /// The Tether node id of this node; recorded in `node.json` the first time the data path is used.
    #[arg(long, env = "ELASTICSEARCH_NODE_ID")]
    pub node_id: Option<String>,
    /// Log format.
    #[arg(long, env = "TETHER_LOG_FORMAT", value_enum, default_value_t)]
    pub log_format: tether_telemetry::LogFormat,
}

/// Why the stand-in could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum StandinError {
    #[error("data path {path}: {source}")]
    DataPath {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "data path {path} is locked by another live process (failed to obtain node lock, is the following location writable?)"
    )]
    Locked { path: PathBuf },
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: String,
        source: std::io::Error,
    },
}

/// A running node's shared state.
#[derive(Debug)]
struct Node {
    args: Args,
    data: PathBuf,
    /// Node id that first created this data path (from `node.json`).
    data_owner: Option<String>,
    discovery: Arc<discovery::Discovery>,
    /// Held for the node's whole life; the OS releases it when the process dies, however it dies.
    lock: File,
}

/// The addresses a started node listens on.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub http: SocketAddr,
    pub transport: SocketAddr,
}

/// Runs a node until `shutdown` is cancelled. `on_bound` is told the real addresses once both listeners
/// are bound (useful with port 0).
pub async fn run(
    args: Args,
    shutdown: CancellationToken,
    on_bound: impl FnOnce(Bound),
) -> Result<(), StandinError> {
    let data = resolve_data_path(&args.data_path);
    let lock = lock_data_path(&data)?;
    let data_owner = record_owner(&data, args.node_id.as_deref())?;
    let http = bind(&args.network_host, args.http_port, "http").await?;
    let transport = bind(&args.network_host, args.transport_port, "transport").await?;
    let bound = Bound {
        http: http
            .local_addr()
            .map_err(|source| bind_err("http", &args, source))?,
        transport: transport
            .local_addr()
            .map_err(|source| bind_err("transport", &args, source))?,
    };
    tracing::info!(node = %args.node_name, http = %bound.http, transport = %bound.transport,
        data = %data.display(), owner = ?data_owner, "es-standin started");
    on_bound(bound);
    let publish = args.publish_host.clone().unwrap_or_else(|| {
        if args.network_host == "0.0.0.0" {
            "127.0.0.1".to_owned()
        } else {
            args.network_host.clone()
        }
    });
    let discovery = Arc::new(discovery::Discovery::new(
        &args.node_name,
        format!("{publish}:{}", bound.transport.port()),
        args.seed_hosts.clone(),
    ));
    let node = Arc::new(Node {
        args,
        data,
        data_owner,
        discovery: discovery.clone(),
        lock,
    });

    let transport_task = tokio::spawn(discovery::run(transport, discovery, shutdown.clone()));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = http.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let node = node.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(node.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }
    }
    transport_task.abort();
    tracing::info!(node = %node.args.node_name, "es-standin stopped");
    Ok(())
}

fn bind_err(what: &'static str, args: &Args, source: std::io::Error) -> StandinError {
    StandinError::Bind {
        what,
        addr: args.network_host.clone(),
        source,
    }
}

async fn bind(host: &str, port: u16, what: &'static str) -> Result<TcpListener, StandinError> {
    let addr = format!("{host}:{port}");
    TcpListener::bind(&addr)
        .await
        .map_err(|source| StandinError::Bind { what, addr, source })
}

/// The emulator's process launcher cannot bind-mount a volume at its container path, so it tells the
/// process where each container path really is (see [`volume_env_name`]).
pub fn resolve_data_path(container_path: &Path) -> PathBuf {
    std::env::var_os(volume_env_name(&container_path.to_string_lossy()))
        .map(PathBuf::from)
        .unwrap_or_else(|| container_path.to_path_buf())
}

fn lock_data_path(data: &Path) -> Result<File, StandinError> {
    let io = |source| StandinError::DataPath {
        path: data.to_path_buf(),
        source,
    };
    fs::create_dir_all(data).map_err(io)?;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(data.join("node.lock"))
        .map_err(io)?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(file),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(StandinError::Locked {
            path: data.to_path_buf(),
        }),
        Err(e) => Err(io(e.into())),
    }
}

/// Returns the node id recorded in `node.json`, recording `node_id` there when the data path is new.
fn record_owner(data: &Path, node_id: Option<&str>) -> Result<Option<String>, StandinError> {
    let path = data.join("node.json");
    let io = |source| StandinError::DataPath {
        path: path.clone(),
        source,
    };
    match fs::read(&path) {
        Ok(bytes) => {
            let owner = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| v.get("node_id").and_then(Value::as_str).map(str::to_owned));
            Ok(owner)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let Some(id) = node_id else { return Ok(None) };
            let body = serde_json::to_vec(&json!({ "node_id": id })).unwrap_or_default();
            write_durably(&path, &body).map_err(io)?;
            Ok(Some(id.to_owned()))
        }
        Err(e) => Err(io(e)),
    }
}

/// Write to a temporary file, fsync it, rename it into place and fsync the directory, so a reader sees
/// either the old or the new content and an acknowledged write survives a crash.
fn write_durably(path: &Path, body: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(body)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

type Reply = Response<Full<Bytes>>;

fn reply(status: StatusCode, body: Value) -> Reply {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

/// An Elasticsearch-shaped error reply.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    kind: &'static str,
    reason: String,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, reason: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            reason: reason.into(),
        }
    }

    fn into_reply(self) -> Reply {
        reply(
            self.status,
            json!({ "error": { "type": self.kind, "reason": self.reason }, "status": self.status.as_u16() }),
        )
    }
}

fn error(status: StatusCode, kind: &'static str, reason: impl Into<String>) -> Reply {
    ApiError::new(status, kind, reason).into_reply()
}

async fn handle(node: Arc<Node>, req: Request<Incoming>) -> Result<Reply, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let resp = match (&method, segments.as_slice()) {
        (&Method::GET, []) => root(&node),
        (&Method::GET, ["_cluster", "health"]) => health(&node).await,
        (&Method::GET, ["_cluster", "state"]) => cluster_state(&node, "").await,
        (&Method::GET, ["_cluster", "state", metrics]) => cluster_state(&node, metrics).await,
        (&Method::GET, [index, "_doc", id]) => get_doc(&node, index, id),
        (&Method::PUT | &Method::POST, [index, "_doc", id]) => {
            match Limited::new(req.into_body(), MAX_BODY).collect().await {
                Ok(body) => put_doc(&node, index, id, &body.to_bytes()),
                Err(e) => error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "content_too_long",
                    e.to_string(),
                ),
            }
        }
        _ => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "illegal_argument_exception",
            format!("unsupported request [{method} {path}]"),
        ),
    };
    Ok(resp)
}

fn root(node: &Node) -> Reply {
    reply(
        StatusCode::OK,
        json!({
            "name": node.args.node_name,
            "cluster_name": node.args.cluster_name,
            "tether_node_id": node.args.node_id,
            "data_created_by_node_id": node.data_owner,
            "version": { "number": "8.13.4", "build_flavor": "tether-standin" },
            "tagline": "You Know, for Search",
        }),
    )
}

async fn health(node: &Node) -> Reply {
    let peers: Vec<&String> = node
        .args
        .seed_hosts
        .iter()
        .filter(|s| !s.trim().is_empty())
        .collect();
    let probes = peers.iter().map(|peer| async move {
        tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(peer.trim()))
            .await
            .is_ok_and(|r| r.is_ok())
    });
    let reachable = futures::future::join_all(probes)
        .await
        .into_iter()
        .filter(|ok| *ok)
        .count();
    let nodes = 1 + reachable;
    let status = if reachable == peers.len() {
        "green"
    } else {
        "yellow"
    };
    reply(
        StatusCode::OK,
        json!({
            "cluster_name": node.args.cluster_name,
            "status": status,
            "timed_out": false,
            "number_of_nodes": nodes,
            "number_of_data_nodes": nodes,
            "unreachable_seed_hosts": peers.len() - reachable,
        }),
    )
}

/// `GET /_cluster/state[/<metrics>]` with the `master_node` and `nodes` metrics, as the elected master
/// publishes them (node ids are the node names here); 503 `master_not_discovered_exception` when no
/// master is elected.
async fn cluster_state(node: &Node, metrics: &str) -> Reply {
    let (master, nodes) = match node.discovery.view().await {
        discovery::View::Master { master, nodes } => (master, nodes),
        discovery::View::NoMaster { present, known } => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "master_not_discovered_exception",
                format!("no master: {present} of {known} master-eligible nodes answer"),
            );
        }
    };
    let all = metrics.is_empty() || metrics == "_all";
    let wants = |m: &str| all || metrics.split(',').any(|x| x == m);
    let mut body = json!({ "cluster_name": node.args.cluster_name });
    if wants("master_node") {
        body["master_node"] = json!(master);
    }
    if wants("nodes") {
        let nodes: serde_json::Map<String, Value> = nodes
            .into_iter()
            .map(|(name, address)| {
                (
                    name.clone(),
                    json!({ "name": name, "transport_address": address }),
                )
            })
            .collect();
        body["nodes"] = Value::Object(nodes);
    }
    reply(StatusCode::OK, body)
}

/// Index names follow Elasticsearch's rules, which also keep them safe as directory names.
fn valid_index(index: &str) -> bool {
    !index.is_empty()
        && index.len() <= 255
        && index != "."
        && index != ".."
        && !index.starts_with(['-', '_', '+'])
        && index
            .chars()
            .all(|c| !c.is_ascii_uppercase() && !"\\/*?\"<>| ,#:".contains(c) && !c.is_control())
}

/// Document ids may hold any character, so they are stored hex-encoded as file names.
fn doc_path(node: &Node, index: &str, id: &str) -> Result<PathBuf, ApiError> {
    if !valid_index(index) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_index_name_exception",
            format!("Invalid index name [{index}]"),
        ));
    }
    if id.is_empty() || id.len() > 512 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "action_request_validation_exception",
            "id must be 1 to 512 bytes long",
        ));
    }
    let hex: String = id.bytes().map(|b| format!("{b:02x}")).collect();
    Ok(node
        .data
        .join("indices")
        .join(index)
        .join(format!("{hex}.json")))
}

/// The data path still holds the lock file this node locked (same device and inode); otherwise the
/// volume was taken away underneath it and nothing may be read or written.
fn ensure_locked(node: &Node) -> Result<(), ApiError> {
    use std::os::unix::fs::MetadataExt as _;
    let path = node.data.join("node.lock");
    let held = node.lock.metadata();
    let seen = fs::metadata(&path);
    match (held, seen) {
        (Ok(h), Ok(p)) if h.dev() == p.dev() && h.ino() == p.ino() => Ok(()),
        (_, seen) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "illegal_state_exception",
            format!(
                "environment is not locked: {} is no longer the lock this node holds ({})",
                path.display(),
                seen.err().map_or_else(
                    || "changed by an external force".to_owned(),
                    |e| e.to_string()
                )
            ),
        )),
    }
}

fn put_doc(node: &Node, index: &str, id: &str, body: &[u8]) -> Reply {
    if let Err(e) = ensure_locked(node) {
        return e.into_reply();
    }
    let path = match doc_path(node, index, id) {
        Ok(p) => p,
        Err(e) => return e.into_reply(),
    };
    let source: Value = match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "mapper_parsing_exception",
                "the document must be a JSON object",
            );
        }
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "mapper_parsing_exception",
                format!("failed to parse: {e}"),
            );
        }
    };
    let version = read_doc(&path).map(|d| d.version + 1).unwrap_or(1);
    let stored = json!({ "_version": version, "_source": source });
    if let Err(e) = write_durably(&path, stored.to_string().as_bytes()) {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "io_exception",
            format!("{}: {e}", path.display()),
        );
    }
    let (status, result) = if version == 1 {
        (StatusCode::CREATED, "created")
    } else {
        (StatusCode::OK, "updated")
    };
    reply(
        status,
        json!({ "_index": index, "_id": id, "_version": version, "result": result,
                "_shards": { "total": 1, "successful": 1, "failed": 0 } }),
    )
}

struct StoredDoc {
    version: u64,
    source: Value,
}

fn read_doc(path: &Path) -> Option<StoredDoc> {
    let bytes = fs::read(path).ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    Some(StoredDoc {
        version: v.get("_version")?.as_u64()?,
        source: v.get("_source")?.clone(),
    })
}

fn get_doc(node: &Node, index: &str, id: &str) -> Reply {
    if let Err(e) = ensure_locked(node) {
        return e.into_reply();
    }
    let path = match doc_path(node, index, id) {
        Ok(p) => p,
        Err(e) => return e.into_reply(),
    };
    match read_doc(&path) {
        Some(doc) => reply(
            StatusCode::OK,
            json!({ "_index": index, "_id": id, "_version": doc.version, "found": true, "_source": doc.source }),
        ),
        None => reply(
            StatusCode::NOT_FOUND,
            json!({ "_index": index, "_id": id, "found": false }),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_names_follow_elasticsearch_rules() {
        assert!(valid_index("logs-2026.11"));
        for bad in [
            "", ".", "..", "Logs", "a/b", "_x", "-x", "a b", "a\\b", "a#b", "a:b",
        ] {
            assert!(!valid_index(bad), "{bad:?} must be refused");
        }
    }
}
