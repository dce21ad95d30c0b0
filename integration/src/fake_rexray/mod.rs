//! `fake-rexray`: a double of REX-Ray 0.11's Docker volume plugin, serving the plugin protocol on a unix
//! socket (see `shared/protocols/docker-volume-plugin.md`).
//!
//! Behaviour: scope `global`; `Get`/`List` `Status` carries `name`, `size` (GB), `iops`, `type`,
//! `availabilityZone`, `fields`, `service`, `server` as REX-Ray's does, and — beyond what REX-Ray's
//! Docker plugin reports, as its libStorage API (`GET /volumes/{service}?attachments=1`) does — the
//! attachment: `attachmentState` (2 attached to this host, 3 available, 4 attached to another host) and
//! `attachments` (`[{"instanceID": {"id": <host>, "driver": "ebs"}, "volumeID": <name>}]`); `Mount`
//! ignores the id and counts mounts per name in memory; `Unmount` detaches only when the count drops
//! below 2, and never a volume attached to another host since; a volume attached to another host fails
//! `Mount` with `docker-legacy: Mount: <name>: failed: resource not found` unless preemption is on; a
//! missing volume is created on `Mount` only with implicit create; the mountpoint
//! `<root>/volumes/<name>/data` is a real directory (the volume's data moves there when it is mounted on
//! this host). Preemption is a force-detach: the new host gets the volume's data as it was, and the old
//! holder's mountpoint no longer reaches it (what the old holder writes afterwards fails or vanishes,
//! see [`backend::force_detach`]). Instances sharing one backend directory see one "cloud"
//! ([`backend`]).
//!
//! Fault injection, in-process through [`FaultHandle`] or from another process through extra endpoints
//! on the same socket:
//! - `POST /Fake.SetFaults` with a [`Faults`] JSON body replaces the faults, e.g.
//!   `{"methods":{"Mount":{"latency_ms":500,"error":"boom","hang":false}},"quirk":"legacy_error"}`;
//!   a method fault may carry `reply: {"status":200,"content_type":"text/plain","body":"...","pad_bytes":0}`
//!   to send a raw reply (malformed JSON, wrong types, huge bodies).
//! - `POST /Fake.ClearFaults` removes them; `POST /Fake.Counts` returns `{"counts":{name:n}}`.

pub mod backend;
pub mod cli;

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;

pub use backend::{VolumeMeta, create_volume, volume_info};

/// How one instance behaves.
#[derive(Debug, Clone)]
pub struct Config {
    pub socket: PathBuf,
    pub backend: PathBuf,
    pub host: String,
    pub zone: String,
    /// Force-detach a volume attached to another host on `Mount`.
    pub preempt: bool,
    /// Create a missing volume on `Mount`.
    pub implicit_create: bool,
    /// Root of mountpoints; default `<backend>/hosts/<host>`.
    pub root: Option<PathBuf>,
}

impl Config {
    pub fn new(socket: impl Into<PathBuf>, backend: impl Into<PathBuf>, host: &str) -> Self {
        Config {
            socket: socket.into(),
            backend: backend.into(),
            host: host.to_string(),
            zone: String::new(),
            preempt: false,
            implicit_create: false,
            root: None,
        }
    }

    fn root(&self) -> PathBuf {
        self.root
            .clone()
            .unwrap_or_else(|| self.backend.join("hosts").join(&self.host))
    }
}

/// How error replies (and, for `lowercase`/`text_plain`, all replies) are shaped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quirk {
    /// 500 with `{"Err":...}`, content type `application/vnd.docker.plugins.v1.1+json`.
    #[default]
    Standard,
    /// REX-Ray <= 0.10: 500, text/plain `{"Error":"..."}` with the message unescaped.
    LegacyError,
    /// 500 with an HTML error page.
    Html,
    /// 200 with a non-empty `Err`.
    OkWithErr,
    /// Field names in lower case (`mountpoint`, `volume`, `err`).
    Lowercase,
    /// Every reply served as `text/plain`.
    TextPlain,
}

/// A raw reply replacing the normal one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawReply {
    pub status: u16,
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub body: String,
    /// Append this many spaces to the body (for oversized replies without sending them over SetFaults).
    #[serde(default)]
    pub pad_bytes: usize,
}

/// Fault on one method.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MethodFault {
    #[serde(default)]
    pub latency_ms: u64,
    /// Fail with this message (shaped by the quirk).
    #[serde(default)]
    pub error: Option<String>,
    /// Never answer (until the server shuts down).
    #[serde(default)]
    pub hang: bool,
    #[serde(default)]
    pub reply: Option<RawReply>,
}

/// Every fault; method keys are `Mount` or `VolumeDriver.Mount` (case-insensitive).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Faults {
    #[serde(default)]
    pub methods: HashMap<String, MethodFault>,
    #[serde(default)]
    pub quirk: Quirk,
}

fn method_key(m: &str) -> String {
    m.rsplit('.').next().unwrap_or(m).to_ascii_lowercase()
}

impl Faults {
    fn for_method(&self, method: &str) -> Option<MethodFault> {
        let key = method_key(method);
        self.methods
            .iter()
            .find(|(k, _)| method_key(k) == key)
            .map(|(_, f)| f.clone())
    }

    /// Faults with one method fault set.
    pub fn on(method: &str, fault: MethodFault) -> Self {
        let mut f = Faults::default();
        f.methods.insert(method.to_string(), fault);
        f
    }
}

/// Changes the faults of a running instance.
#[derive(Debug, Clone)]
pub struct FaultHandle(Arc<Mutex<Faults>>);

impl FaultHandle {
    pub fn set(&self, faults: Faults) {
        *lock(&self.0) = faults;
    }
    pub fn clear(&self) {
        self.set(Faults::default());
    }
    pub fn set_quirk(&self, quirk: Quirk) {
        lock(&self.0).quirk = quirk;
    }
    pub fn set_method(&self, method: &str, fault: MethodFault) {
        lock(&self.0).methods.insert(method.to_string(), fault);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct Shared {
    config: Config,
    faults: Arc<Mutex<Faults>>,
    counts: Mutex<HashMap<String, u32>>,
    /// Plugin calls served, by method (`VolumeDriver.Get`): what the observe benchmark counts.
    calls: Mutex<std::collections::BTreeMap<String, u64>>,
    stop: CancellationToken,
}

/// A running instance. Dropping it stops the server and removes the socket.
#[derive(Debug)]
pub struct FakeRexray {
    shared: Arc<Shared>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl FakeRexray {
    /// Binds the socket (replacing a stale one) and serves until [`FakeRexray::shutdown`] or drop.
    pub async fn serve(config: Config) -> std::io::Result<FakeRexray> {
        if let Some(parent) = config.socket.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let _ = std::fs::remove_file(&config.socket);
        std::fs::create_dir_all(config.root())?;
        backend::lock(&config.backend)?;
        let listener = UnixListener::bind(&config.socket)?;
        let shared = Arc::new(Shared {
            config,
            faults: Arc::new(Mutex::new(Faults::default())),
            counts: Mutex::new(HashMap::new()),
            calls: Mutex::new(std::collections::BTreeMap::new()),
            stop: CancellationToken::new(),
        });
        let s = shared.clone();
        let task = tokio::spawn(async move { accept_loop(listener, s).await });
        Ok(FakeRexray {
            shared,
            task: Some(task),
        })
    }

    pub fn socket(&self) -> &Path {
        &self.shared.config.socket
    }

    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    pub fn faults(&self) -> FaultHandle {
        FaultHandle(self.shared.faults.clone())
    }

    /// This instance's in-memory mount count of `name`.
    pub fn mount_count(&self, name: &str) -> u32 {
        lock(&self.shared.counts).get(name).copied().unwrap_or(0)
    }

    /// Plugin calls served so far, by method (`Plugin.Activate`, `VolumeDriver.Get`, …).
    pub fn calls(&self) -> std::collections::BTreeMap<String, u64> {
        lock(&self.shared.calls).clone()
    }

    /// Stops serving (hung calls are dropped) and removes the socket.
    pub async fn shutdown(mut self) {
        self.stop_now();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }

    fn stop_now(&self) {
        self.shared.stop.cancel();
        let _ = std::fs::remove_file(&self.shared.config.socket);
    }
}

impl Drop for FakeRexray {
    fn drop(&mut self) {
        self.stop_now();
    }
}

async fn accept_loop(listener: UnixListener, shared: Arc<Shared>) {
    let conns = tokio_util::task::TaskTracker::new();
    loop {
        let stream = tokio::select! {
            () = shared.stop.cancelled() => break,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "fake-rexray accept failed");
                    continue;
                }
            },
        };
        let s = shared.clone();
        let stop = shared.stop.clone();
        conns.spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let s = s.clone();
                async move { Ok::<_, Infallible>(handle(s, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                _ = conn => {}
                () = stop.cancelled() => {}
            }
        });
    }
    conns.close();
}

type Resp = http::Response<Full<Bytes>>;

fn respond(status: u16, content_type: &str, body: impl Into<Bytes>) -> Resp {
    let mut r = http::Response::new(Full::new(body.into()));
    *r.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r
}

const PLUGIN_CT: &str = "application/vnd.docker.plugins.v1.1+json";

fn lowercase_keys(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                // The status map is the driver's own data; only protocol fields change case.
                .map(|(k, v)| {
                    if k == "Status" {
                        ("status".into(), v)
                    } else {
                        (k.to_ascii_lowercase(), lowercase_keys(v))
                    }
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(lowercase_keys).collect()),
        other => other,
    }
}

fn ok_reply(quirk: Quirk, body: Value) -> Resp {
    match quirk {
        Quirk::Lowercase => respond(200, PLUGIN_CT, lowercase_keys(body).to_string()),
        Quirk::TextPlain => respond(200, "text/plain; charset=utf-8", body.to_string()),
        _ => respond(200, PLUGIN_CT, body.to_string()),
    }
}

fn err_reply(quirk: Quirk, msg: &str) -> Resp {
    match quirk {
        Quirk::Standard => respond(500, PLUGIN_CT, json!({"Err": msg}).to_string()),
        Quirk::LegacyError => respond(
            500,
            "text/plain; charset=utf-8",
            format!("{{\"Error\":\"{msg}\"}}\n"),
        ),
        Quirk::Html => respond(
            500,
            "text/html",
            format!(
                "<html><head><title>500 Internal Server Error</title></head><body><h1>{msg}</h1></body></html>"
            ),
        ),
        Quirk::OkWithErr => respond(200, PLUGIN_CT, json!({"Err": msg}).to_string()),
        Quirk::Lowercase => respond(500, PLUGIN_CT, json!({"err": msg}).to_string()),
        Quirk::TextPlain => respond(500, "text/plain", json!({"Err": msg}).to_string()),
    }
}

async fn handle(s: Arc<Shared>, req: http::Request<Incoming>) -> Resp {
    let path = req.uri().path().trim_start_matches('/').to_string();
    let body = match Limited::new(req.into_body(), 1 << 20).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return respond(400, "text/plain", format!("bad request body: {e}")),
    };
    // Control endpoints of the double itself.
    match path.as_str() {
        "Fake.SetFaults" => {
            return match serde_json::from_slice::<Faults>(&body) {
                Ok(f) => {
                    *lock(&s.faults) = f;
                    respond(200, "application/json", "{}")
                }
                Err(e) => respond(400, "text/plain", format!("bad faults: {e}")),
            };
        }
        "Fake.ClearFaults" => {
            *lock(&s.faults) = Faults::default();
            return respond(200, "application/json", "{}");
        }
        "Fake.Counts" => {
            let counts = lock(&s.counts).clone();
            return respond(
                200,
                "application/json",
                json!({"counts": counts}).to_string(),
            );
        }
        _ => {}
    }
    *lock(&s.calls).entry(path.clone()).or_default() += 1;
    let (fault, quirk) = {
        let f = lock(&s.faults);
        (f.for_method(&path), f.quirk)
    };
    if let Some(fault) = &fault {
        if fault.latency_ms > 0 {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(fault.latency_ms)) => {}
                () = s.stop.cancelled() => return respond(503, "text/plain", "shutting down"),
            }
        }
        if fault.hang {
            s.stop.cancelled().await;
            return respond(503, "text/plain", "shutting down");
        }
        if let Some(raw) = &fault.reply {
            let mut b = raw.body.clone().into_bytes();
            b.resize(b.len() + raw.pad_bytes, b' ');
            return respond(raw.status, raw.content_type.as_deref().unwrap_or(""), b);
        }
        if let Some(msg) = &fault.error {
            return err_reply(quirk, msg);
        }
    }
    let args: Map<String, Value> = if body.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(m)) => m,
            Ok(_) | Err(_) => {
                return err_reply(quirk, &format!("{path}: request body is not a JSON object"));
            }
        }
    };
    let name = args
        .get("Name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let s2 = s.clone();
    let p2 = path.clone();
    // Backend IO takes a blocking file lock.
    let result = tokio::task::spawn_blocking(move || dispatch(&s2, &p2, &name, &args)).await;
    match result {
        Ok(Ok(v)) => ok_reply(quirk, v),
        Ok(Err(msg)) => err_reply(quirk, &msg),
        Err(e) => err_reply(quirk, &format!("internal error: {e}")),
    }
}

fn dispatch(
    s: &Shared,
    method: &str,
    name: &str,
    args: &Map<String, Value>,
) -> Result<Value, String> {
    let cfg = &s.config;
    let io = |e: std::io::Error| e.to_string();
    let need_name = || {
        if name.is_empty() {
            Err(format!("{method}: missing Name"))
        } else {
            Ok(())
        }
    };
    let not_found = |op: &str| format!("docker-legacy: {op}: {name}: failed: resource not found");
    match method {
        "Plugin.Activate" => Ok(json!({"Implements": ["VolumeDriver"]})),
        "VolumeDriver.Capabilities" => Ok(json!({"Capabilities": {"Scope": "global"}})),
        "VolumeDriver.Create" => {
            need_name()?;
            let opts = args
                .get("Opts")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            let opt = |k: &str| {
                opts.iter()
                    .find(|(ok, _)| ok.eq_ignore_ascii_case(k))
                    .and_then(|(_, v)| v.as_str())
            };
            let size = match opt("size") {
                Some(v) => v
                    .parse::<u64>()
                    .map_err(|_| format!("docker-legacy: Create: {name}: invalid size {v:?}"))?,
                None => 16,
            };
            let zone = opt("availabilityZone").unwrap_or(&cfg.zone).to_string();
            let b = backend::lock(&cfg.backend).map_err(io)?;
            if b.read(name).map_err(io)?.is_none() {
                let mut meta = backend::new_meta(name, size, &zone);
                if let Some(t) = opt("type").or_else(|| opt("volumeType")) {
                    meta.volume_type = t.to_string();
                }
                meta.iops = opt("iops").and_then(|v| v.parse().ok()).unwrap_or(0);
                b.write(&meta).map_err(io)?;
            }
            Ok(json!({"Err": ""}))
        }
        "VolumeDriver.Remove" => {
            need_name()?;
            let b = backend::lock(&cfg.backend).map_err(io)?;
            let meta = b
                .read(name)
                .map_err(io)?
                .ok_or_else(|| not_found("Remove"))?;
            if let Some(h) = &meta.attached_host {
                return Err(format!(
                    "docker-legacy: Remove: {name}: volume is attached to {h}"
                ));
            }
            if let Some(p) = &meta.data_path {
                let _ = std::fs::remove_dir_all(p);
            }
            b.delete(name).map_err(io)?;
            Ok(json!({"Err": ""}))
        }
        "VolumeDriver.Get" => {
            need_name()?;
            let b = backend::lock(&cfg.backend).map_err(io)?;
            let meta = b.read(name).map_err(io)?.ok_or_else(|| not_found("Get"))?;
            Ok(json!({"Volume": volume_json(s, &meta), "Err": ""}))
        }
        "VolumeDriver.List" => {
            let b = backend::lock(&cfg.backend).map_err(io)?;
            let vols: Vec<Value> = b
                .list()
                .map_err(io)?
                .iter()
                .map(|m| volume_json(s, m))
                .collect();
            Ok(json!({"Volumes": vols, "Err": ""}))
        }
        "VolumeDriver.Path" => {
            need_name()?;
            let b = backend::lock(&cfg.backend).map_err(io)?;
            let meta = b.read(name).map_err(io)?.ok_or_else(|| not_found("Path"))?;
            Ok(json!({"Mountpoint": mounted_here(s, &meta).unwrap_or_default(), "Err": ""}))
        }
        "VolumeDriver.Mount" => {
            need_name()?;
            let b = backend::lock(&cfg.backend).map_err(io)?;
            let mut meta = match b.read(name).map_err(io)? {
                Some(m) => m,
                None if cfg.implicit_create => backend::new_meta(name, 16, &cfg.zone),
                None => return Err(not_found("Mount")),
            };
            let holder = meta.attached_host.clone().filter(|h| *h != cfg.host);
            if holder.is_some() && !cfg.preempt {
                return Err(not_found("Mount"));
            }
            let mp = cfg.root().join("volumes").join(name).join("data");
            clear_mountpoint(&mp).map_err(io)?;
            match &meta.data_path {
                Some(old) if *old != mp && old.is_dir() => match &holder {
                    Some(h) => backend::force_detach(old, &mp, name, h, &cfg.host)
                        .map_err(|e| format!("force-detaching volume data: {e}"))?,
                    None => {
                        std::fs::rename(old, &mp).map_err(|e| format!("moving volume data: {e}"))?
                    }
                },
                _ => std::fs::create_dir_all(&mp).map_err(io)?,
            }
            if meta.attached_host.as_deref() != Some(cfg.host.as_str()) {
                // Attached fresh (or preempted): any count this instance had is stale.
                lock(&s.counts).insert(name.to_string(), 0);
            }
            meta.attached_host = Some(cfg.host.clone());
            meta.data_path = Some(mp.clone());
            b.write(&meta).map_err(io)?;
            *lock(&s.counts).entry(name.to_string()).or_insert(0) += 1;
            Ok(json!({"Mountpoint": mp.display().to_string(), "Err": ""}))
        }
        "VolumeDriver.Unmount" => {
            need_name()?;
            let b = backend::lock(&cfg.backend).map_err(io)?;
            let mut meta = b
                .read(name)
                .map_err(io)?
                .ok_or_else(|| not_found("Unmount"))?;
            let mut counts = lock(&s.counts);
            let count = counts.entry(name.to_string()).or_insert(0);
            if *count >= 2 {
                *count -= 1;
            } else {
                *count = 0;
                if meta.attached_host.as_deref() == Some(cfg.host.as_str()) {
                    meta.attached_host = None;
                    b.write(&meta).map_err(io)?;
                }
            }
            Ok(json!({"Err": ""}))
        }
        other => Err(format!("unknown method {other}")),
    }
}

/// Makes way for the volume's data at `mp`: removes the marker an earlier force-detach left there, and
/// creates the parent. A directory stays: it is the volume's own when mounted here again (its owner and
/// mode, set by whoever prepared the volume, are the filesystem's and must survive a second Mount), and
/// an empty leftover is replaced by the rename or filled by the copy.
fn clear_mountpoint(mp: &Path) -> std::io::Result<()> {
    if let Some(parent) = mp.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::symlink_metadata(mp) {
        Ok(m) if !m.is_dir() => std::fs::remove_file(mp),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn mounted_here(s: &Shared, meta: &VolumeMeta) -> Option<String> {
    let here = meta.attached_host.as_deref() == Some(s.config.host.as_str());
    let count = lock(&s.counts).get(&meta.name).copied().unwrap_or(0);
    if here && count > 0 {
        meta.data_path.as_ref().map(|p| p.display().to_string())
    } else {
        None
    }
}

/// libStorage's `attachmentState` as seen from the asking instance: attached to it, available, or attached
/// to another instance.
const ATTACHED_HERE: u8 = 2;
const AVAILABLE: u8 = 3;
const ATTACHED_ELSEWHERE: u8 = 4;

fn volume_json(s: &Shared, meta: &VolumeMeta) -> Value {
    let (state, attachments) = match &meta.attached_host {
        None => (AVAILABLE, json!([])),
        Some(h) => (
            if *h == s.config.host {
                ATTACHED_HERE
            } else {
                ATTACHED_ELSEWHERE
            },
            json!([{ "instanceID": { "id": h, "driver": "ebs" }, "volumeID": meta.name }]),
        ),
    };
    json!({
        "Name": meta.name,
        "Mountpoint": mounted_here(s, meta).unwrap_or_default(),
        "Status": {
            "name": meta.name,
            "size": meta.size_gb,
            "iops": meta.iops,
            "type": meta.volume_type,
            "availabilityZone": meta.zone,
            "fields": null,
            "service": "ebs",
            "server": "fake-rexray",
            "attachmentState": state,
            "attachments": attachments,
        },
    })
}
