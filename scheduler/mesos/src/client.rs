//! The HTTP connection to the Mesos master. [`MesosClient::run`] is the subscription driver: it owns
//! SUBSCRIBE, heartbeat liveness, resubscription with the framework id and jittered backoff, and leader
//! following (307 with a protocol-relative `Location`, next master on 503 or connection failure); it
//! delivers [`Notification`]s through an mpsc channel. [`MesosClient::send`] posts every other call on the
//! current stream, adding `Mesos-Stream-Id` and the framework id, and maps status codes to [`CallError`].

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rand::Rng as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::model::{
    AgentID, Call, CallType, Capability, CapabilityType, Event, EventType, FrameworkID,
    FrameworkInfo, Labels, MasterInfo, OperatorCall,
};
use crate::recordio::{DEFAULT_MAX_FRAME, Decoder, RecordIoError};

const API_PATH: &str = "/api/v1/scheduler";
/// The operator API.
const OPERATOR_PATH: &str = "/api/v1";
const STREAM_ID: &str = "Mesos-Stream-Id";
const MAX_REDIRECTS: usize = 5;

/// The framework fields Tether sets on SUBSCRIBE.
#[derive(Debug, Clone)]
pub struct FrameworkSettings {
    pub user: String,
    pub name: String,
    pub roles: Vec<String>,
    /// How long the master keeps our tasks after we disconnect. Default one week.
    pub failover_timeout: Duration,
    pub hostname: Option<String>,
    pub principal: Option<String>,
    pub webui_url: Option<String>,
    pub labels: Option<Labels>,
}

impl Default for FrameworkSettings {
    fn default() -> Self {
        FrameworkSettings {
            user: "root".into(),
            name: "tether".into(),
            roles: vec!["elasticsearch".into()],
            failover_timeout: Duration::from_secs(7 * 24 * 3600),
            hostname: None,
            principal: None,
            webui_url: None,
            labels: None,
        }
    }
}

/// HTTP basic credentials for `--authenticate_http_frameworks` masters.
#[derive(Clone)]
pub struct Credential {
    pub principal: String,
    pub secret: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("principal", &self.principal)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl Credential {
    /// Reads the secret from a file (trailing newline trimmed), as Mesos' `--credential` files hold it.
    pub fn from_secret_file(
        principal: impl Into<String>,
        path: &std::path::Path,
    ) -> Result<Self, ConfigError> {
        let secret = std::fs::read_to_string(path).map_err(|e| ConfigError::SecretFile {
            path: path.display().to_string(),
            source: e,
        })?;
        Ok(Credential {
            principal: principal.into(),
            secret: secret.trim_end_matches(['\n', '\r']).to_string(),
        })
    }
}

/// Everything the client needs.
#[derive(Debug, Clone)]
pub struct MesosConfig {
    /// `http://host:port` of each master; tried in order, the last leader first.
    pub masters: Vec<String>,
    pub framework: FrameworkSettings,
    pub credential: Option<Credential>,
    /// Roles to subscribe suppressed.
    pub suppressed_roles: Vec<String>,
    /// Cap on one RecordIO record.
    pub max_frame: usize,
    /// PEM file of the CA(s) that sign `https://` masters' certificates; the system's roots when unset.
    pub master_ca: Option<PathBuf>,
    /// The stream is dead after this many heartbeat intervals without a byte.
    pub heartbeat_misses: u32,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Timeout for each call, and for the subscribe response headers and first event.
    pub request_timeout: Duration,
}

impl Default for MesosConfig {
    fn default() -> Self {
        MesosConfig {
            masters: vec!["http://127.0.0.1:5050".into()],
            framework: FrameworkSettings::default(),
            credential: None,
            suppressed_roles: vec![],
            max_frame: DEFAULT_MAX_FRAME,
            master_ca: None,
            heartbeat_misses: 5,
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(15),
            request_timeout: Duration::from_secs(75),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no Mesos master configured")]
    NoMasters,
    #[error("master address {0:?} is not http://host:port or https://host:port")]
    BadMaster(String),
    #[error("cannot use master CA file {path}: {reason}")]
    MasterCa { path: String, reason: String },
    #[error("cannot set up TLS for https masters: {0}")]
    Tls(String),
    #[error("cannot read secret file {path}: {source}")]
    SecretFile {
        path: String,
        source: std::io::Error,
    },
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("not subscribed to a Mesos master")]
    NotSubscribed,
    #[error("master rejected the call (400): {0}")]
    BadRequest(String),
    #[error("master refused authentication (401)")]
    Unauthorized,
    #[error("master refused the call (403): {0}")]
    Forbidden(String),
    #[error("master does not know it (404): {0}")]
    NotFound(String),
    #[error("master is not the leader any more (307 to {0})")]
    NotLeader(String),
    #[error("master unavailable (503): {0}")]
    Unavailable(String),
    #[error("unexpected status {status} from master: {body}")]
    Unexpected { status: u16, body: String },
    #[error("transport error talking to {master}: {message}")]
    Transport { master: String, message: String },
    #[error("call to {0} timed out")]
    Timeout(String),
    #[error("cannot encode call: {0}")]
    Encode(String),
}

/// A failure that retrying will not fix; the driver stops after reporting one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FatalError {
    /// An ERROR event, on a live stream or as the answer to SUBSCRIBE (e.g. "Framework has been removed").
    #[error("Mesos master sent ERROR: {message}")]
    Framework { message: String },
    /// SUBSCRIBE itself was refused (400/401/403/406/415): our call or credentials are wrong.
    #[error("Mesos master refused SUBSCRIBE with {status}: {body}")]
    SubscribeRefused { status: u16, body: String },
}

impl FatalError {
    /// True when the master no longer knows the framework: the persisted framework id must be discarded.
    pub fn framework_removed(&self) -> bool {
        matches!(self, FatalError::Framework { message } if message.contains("Framework has been removed"))
    }
}

/// What the driver tells the scheduler shell.
#[derive(Debug, Clone)]
pub enum Notification {
    /// A (re)subscription succeeded. Persist `framework_id`; reconcile.
    Subscribed {
        framework_id: FrameworkID,
        heartbeat_interval: Duration,
        master: Option<Box<MasterInfo>>,
    },
    /// Any event but SUBSCRIBED and HEARTBEAT.
    Event(Box<Event>),
    /// The stream broke; outstanding offers are void. The driver resubscribes by itself.
    Disconnected { reason: String },
    /// The driver stopped for good.
    Fatal(FatalError),
}

#[derive(Debug, Default)]
struct Session {
    framework_id: Option<FrameworkID>,
    /// (master base url, stream id) of the live subscription.
    stream: Option<(String, String)>,
    /// Index into `masters` to try first.
    leader_hint: usize,
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The real master connection. Cheap to clone.
#[derive(Clone)]
pub struct MesosClient {
    config: Arc<MesosConfig>,
    http: HttpClient,
    session: Arc<Mutex<Session>>,
}

impl std::fmt::Debug for MesosClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MesosClient")
            .field("masters", &self.config.masters)
            .finish()
    }
}

fn normalise_master(m: &str) -> Result<String, ConfigError> {
    let trimmed = m.trim().trim_end_matches('/');
    let rest = trimmed
        .strip_prefix("http://")
        .or_else(|| trimmed.strip_prefix("https://"))
        .ok_or_else(|| ConfigError::BadMaster(m.to_string()))?;
    if rest.is_empty() || rest.contains('/') {
        return Err(ConfigError::BadMaster(m.to_string()));
    }
    Ok(trimmed.to_string())
}

/// TLS for `https://` masters: the given CA file's certificates, or the system's trusted roots.
fn tls_config(ca: Option<&std::path::Path>) -> Result<rustls::ClientConfig, ConfigError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::Tls(e.to_string()))?;
    let config = match ca {
        Some(path) => {
            let bad = |reason: String| ConfigError::MasterCa {
                path: path.display().to_string(),
                reason,
            };
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| bad(e.to_string()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(e.to_string()))?;
            if certs.is_empty() {
                return Err(bad("no PEM certificate in it".into()));
            }
            let mut roots = rustls::RootCertStore::empty();
            for c in certs {
                roots.add(c).map_err(|e| bad(e.to_string()))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => {
            // A system without a certificate store (a FROM scratch image) gets an empty one: http
            // masters still work, and an https master fails its handshake with a clear error.
            let found = rustls_native_certs::load_native_certs();
            let mut roots = rustls::RootCertStore::empty();
            roots.add_parsable_certificates(found.certs);
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Ok(config)
}

enum Attempt {
    /// The stream ran and then ended; resubscribe (backoff reset if it had subscribed).
    Ended {
        reason: String,
        subscribed: bool,
    },
    Fatal(FatalError),
    Cancelled,
}

impl MesosClient {
    pub fn new(mut config: MesosConfig) -> Result<Self, ConfigError> {
        if config.masters.is_empty() {
            return Err(ConfigError::NoMasters);
        }
        config.masters = config
            .masters
            .iter()
            .map(|m| normalise_master(m))
            .collect::<Result<_, _>>()?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.request_timeout));
        // The inner connector must let https URLs through; the TLS layer decides per scheme.
        connector.enforce_http(false);
        let tls = tls_config(config.master_ca.as_deref())?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let http = Client::builder(TokioExecutor::new()).build(connector);
        Ok(MesosClient {
            config: Arc::new(config),
            http,
            session: Arc::new(Mutex::new(Session::default())),
        })
    }

    fn session(&self) -> std::sync::MutexGuard<'_, Session> {
        self.session.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The FrameworkInfo sent on SUBSCRIBE: checkpointing, MULTI_ROLE, PARTITION_AWARE, TASK_KILLING_STATE.
    pub fn framework_info(&self) -> FrameworkInfo {
        let f = &self.config.framework;
        FrameworkInfo {
            user: f.user.clone(),
            name: f.name.clone(),
            id: self.framework_id(),
            failover_timeout: Some(f.failover_timeout.as_secs_f64()),
            checkpoint: Some(true),
            roles: f.roles.clone(),
            hostname: f.hostname.clone(),
            principal: f
                .principal
                .clone()
                .or_else(|| self.config.credential.as_ref().map(|c| c.principal.clone())),
            webui_url: f.webui_url.clone(),
            capabilities: [
                CapabilityType::MultiRole,
                CapabilityType::PartitionAware,
                CapabilityType::TaskKillingState,
            ]
            .into_iter()
            .map(|capability_type| Capability { capability_type })
            .collect(),
            labels: f.labels.clone(),
        }
    }

    /// The SUBSCRIBE call the driver sends next.
    pub fn subscribe_call(&self) -> Call {
        Call::subscribe(self.framework_info(), self.config.suppressed_roles.clone())
    }

    fn request(
        &self,
        url: &str,
        body: Bytes,
        stream_id: Option<&str>,
    ) -> Result<Request<Full<Bytes>>, CallError> {
        let mut b = Request::builder()
            .method(Method::POST)
            .uri(url)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json");
        if let Some(id) = stream_id {
            b = b.header(STREAM_ID, id);
        }
        if let Some(c) = &self.config.credential {
            let token = base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", c.principal, c.secret));
            b = b.header(header::AUTHORIZATION, format!("Basic {token}"));
        }
        b.body(Full::new(body))
            .map_err(|e| CallError::Encode(e.to_string()))
    }

    /// The subscription driver. Runs until `cancel` fires or a [`FatalError`] (which it reports first).
    pub async fn run(self, tx: mpsc::Sender<Notification>, cancel: CancellationToken) {
        let mut backoff = self.config.backoff_min;
        loop {
            let outcome = tokio::select! {
                _ = cancel.cancelled() => Attempt::Cancelled,
                o = self.attempt(&tx) => o,
            };
            self.session().stream = None;
            match outcome {
                Attempt::Cancelled => return,
                Attempt::Fatal(e) => {
                    tracing::error!(error = %e, "Mesos subscription failed for good");
                    let _ = tx.send(Notification::Fatal(e)).await;
                    return;
                }
                Attempt::Ended { reason, subscribed } => {
                    tracing::warn!(%reason, "Mesos subscription lost; resubscribing");
                    if tx
                        .send(Notification::Disconnected { reason })
                        .await
                        .is_err()
                    {
                        return;
                    }
                    if subscribed {
                        backoff = self.config.backoff_min;
                    }
                }
            }
            let jittered = backoff.mul_f64(rand::rng().random_range(0.5..1.0));
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(jittered) => {}
            }
            backoff = (backoff * 2).min(self.config.backoff_max);
        }
    }

    /// One subscription: find the leader, subscribe, pump the stream until it ends.
    async fn attempt(&self, tx: &mpsc::Sender<Notification>) -> Attempt {
        let body = match serde_json::to_vec(&self.subscribe_call()) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                return Attempt::Ended {
                    reason: format!("cannot encode SUBSCRIBE: {e}"),
                    subscribed: false,
                };
            }
        };
        let masters = &self.config.masters;
        let start = self.session().leader_hint;
        let mut failures = Vec::new();
        for i in 0..masters.len() {
            let idx = (start + i) % masters.len();
            let mut base = masters[idx].clone();
            let mut redirects = 0;
            loop {
                let url = format!("{base}{API_PATH}");
                let req = match self.request(&url, body.clone(), None) {
                    Ok(r) => r,
                    Err(e) => {
                        return Attempt::Ended {
                            reason: e.to_string(),
                            subscribed: false,
                        };
                    }
                };
                let resp =
                    match tokio::time::timeout(self.config.request_timeout, self.http.request(req))
                        .await
                    {
                        Err(_) => {
                            failures.push(format!("{base}: SUBSCRIBE timed out"));
                            break;
                        }
                        Ok(Err(e)) => {
                            failures.push(format!("{base}: {}", with_causes(&e)));
                            break;
                        }
                        Ok(Ok(r)) => r,
                    };
                let status = resp.status();
                if status == StatusCode::TEMPORARY_REDIRECT {
                    match redirect_target(&base, resp.headers().get(header::LOCATION)) {
                        Some(next) if redirects < MAX_REDIRECTS => {
                            tracing::info!(from = %base, to = %next, "following Mesos leader redirect");
                            redirects += 1;
                            base = next;
                            continue;
                        }
                        _ => {
                            failures.push(format!("{base}: unusable or repeated redirect"));
                            break;
                        }
                    }
                }
                if status == StatusCode::OK {
                    self.session().leader_hint = idx;
                    return self.pump(base, resp, tx).await;
                }
                let body = read_text(resp.into_body()).await;
                if status.is_server_error() {
                    failures.push(format!("{base}: {status} {body}"));
                    break;
                }
                return Attempt::Fatal(FatalError::SubscribeRefused {
                    status: status.as_u16(),
                    body,
                });
            }
        }
        Attempt::Ended {
            reason: format!("no master accepted SUBSCRIBE: {}", failures.join("; ")),
            subscribed: false,
        }
    }

    async fn pump(
        &self,
        base: String,
        resp: http::Response<hyper::body::Incoming>,
        tx: &mpsc::Sender<Notification>,
    ) -> Attempt {
        let Some(stream_id) = resp
            .headers()
            .get(STREAM_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
        else {
            return Attempt::Ended {
                reason: format!("{base}: SUBSCRIBE answer without {STREAM_ID}"),
                subscribed: false,
            };
        };
        let mut body = resp.into_body();
        let mut decoder = Decoder::new(self.config.max_frame);
        // Until SUBSCRIBED arrives, the request timeout bounds the wait; after, heartbeat misses do.
        let mut idle = self.config.request_timeout;
        let mut subscribed = false;
        loop {
            let frame = match tokio::time::timeout(idle, body.frame()).await {
                Err(_) => {
                    return Attempt::Ended {
                        reason: format!("{base}: no bytes for {idle:?} (missed heartbeats)"),
                        subscribed,
                    };
                }
                Ok(None) => {
                    let why = match decoder.finish() {
                        Err(e) => format!("{base}: stream closed: {e}"),
                        Ok(()) => format!("{base}: stream closed by master"),
                    };
                    return Attempt::Ended {
                        reason: why,
                        subscribed,
                    };
                }
                Ok(Some(Err(e))) => {
                    return Attempt::Ended {
                        reason: format!("{base}: stream error: {e}"),
                        subscribed,
                    };
                }
                Ok(Some(Ok(f))) => f,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let records = match decoder.feed(&data) {
                Ok(r) => r,
                Err(e) => {
                    return Attempt::Ended {
                        reason: format!("{base}: {}", framing(e)),
                        subscribed,
                    };
                }
            };
            for record in records {
                let event: Event = match serde_json::from_slice(&record) {
                    Ok(e) => e,
                    Err(e) => {
                        // A record we cannot read may hide an update we must acknowledge: resubscribe
                        // rather than skip it.
                        return Attempt::Ended {
                            reason: format!("{base}: undecodable event: {e}"),
                            subscribed,
                        };
                    }
                };
                match event.event_type {
                    EventType::Subscribed => {
                        let Some(s) = event.subscribed else {
                            return Attempt::Ended {
                                reason: "SUBSCRIBED without payload".into(),
                                subscribed,
                            };
                        };
                        let hb = s
                            .heartbeat_interval_seconds
                            .filter(|h| h.is_finite() && *h > 0.0)
                            .unwrap_or(15.0);
                        let heartbeat_interval = Duration::from_secs_f64(hb.min(3600.0));
                        idle = heartbeat_interval * self.config.heartbeat_misses.max(1);
                        {
                            let mut sess = self.session();
                            sess.framework_id = Some(s.framework_id.clone());
                            sess.stream = Some((base.clone(), stream_id.clone()));
                        }
                        subscribed = true;
                        let n = Notification::Subscribed {
                            framework_id: s.framework_id,
                            heartbeat_interval,
                            master: s.master_info.map(Box::new),
                        };
                        if tx.send(n).await.is_err() {
                            return Attempt::Cancelled;
                        }
                    }
                    EventType::Heartbeat => {}
                    EventType::Error => {
                        let message = event
                            .error
                            .map(|e| e.message)
                            .unwrap_or_else(|| "ERROR without message".into());
                        return Attempt::Fatal(FatalError::Framework { message });
                    }
                    _ => {
                        if !subscribed {
                            return Attempt::Ended {
                                reason: format!("{base}: {:?} before SUBSCRIBED", event.event_type),
                                subscribed,
                            };
                        }
                        if tx.send(Notification::Event(Box::new(event))).await.is_err() {
                            return Attempt::Cancelled;
                        }
                    }
                }
            }
        }
    }

    /// The framework id used on the next (re)subscription; `None` subscribes as a new framework.
    pub fn set_framework_id(&self, id: Option<FrameworkID>) {
        self.session().framework_id = id;
    }

    /// The framework id of the live (or the next) subscription.
    pub fn framework_id(&self) -> Option<FrameworkID> {
        self.session().framework_id.clone()
    }

    /// Sends a non-SUBSCRIBE call on the current subscription, adding `Mesos-Stream-Id` and the framework
    /// id.
    pub async fn send(&self, call: Call) -> Result<(), CallError> {
        let (base, stream_id, fw) = {
            let s = self.session();
            let Some((base, sid)) = s.stream.clone() else {
                return Err(CallError::NotSubscribed);
            };
            (base, sid, s.framework_id.clone())
        };
        let mut call = call;
        if call.call_type != CallType::Subscribe && call.framework_id.is_none() {
            call.framework_id = fw;
        }
        let body = serde_json::to_vec(&call).map_err(|e| CallError::Encode(e.to_string()))?;
        let req = self.request(
            &format!("{base}{API_PATH}"),
            Bytes::from(body),
            Some(&stream_id),
        )?;
        let resp = tokio::time::timeout(self.config.request_timeout, self.http.request(req))
            .await
            .map_err(|_| CallError::Timeout(base.clone()))?
            .map_err(|e| CallError::Transport {
                master: base.clone(),
                message: with_causes(&e),
            })?;
        answer(resp).await
    }

    /// The operator API's MARK_AGENT_GONE of `agent_id`, sent to the subscribed master with the
    /// framework's credentials: the master marks the agent gone for good (its tasks become
    /// TASK_GONE_BY_OPERATOR; the agent is shut down if it ever reconnects). The master must be
    /// Mesos 1.5 or later, and its ACLs must allow `mark_agents_gone` for the framework's principal
    /// (`{"mark_agents_gone": [{"principals": {"values": ["<principal>"]}, "agents": {"type": "ANY"}}]}`),
    /// else it answers 403. An agent it does not know is [`CallError::NotFound`]; one already gone is
    /// not an error.
    pub async fn mark_agent_gone(&self, agent_id: &AgentID) -> Result<(), CallError> {
        let base = self
            .session()
            .stream
            .as_ref()
            .map(|(base, _)| base.clone())
            .ok_or(CallError::NotSubscribed)?;
        let call = OperatorCall::mark_agent_gone(agent_id.clone());
        let body = serde_json::to_vec(&call).map_err(|e| CallError::Encode(e.to_string()))?;
        let req = self.request(&format!("{base}{OPERATOR_PATH}"), Bytes::from(body), None)?;
        let resp = tokio::time::timeout(self.config.request_timeout, self.http.request(req))
            .await
            .map_err(|_| CallError::Timeout(base.clone()))?
            .map_err(|e| CallError::Transport {
                master: base.clone(),
                message: with_causes(&e),
            })?;
        answer(resp).await
    }
}

/// A call's answer: 200 or 202 is success, anything else the master's refusal with its words.
async fn answer(resp: hyper::Response<hyper::body::Incoming>) -> Result<(), CallError> {
    let status = resp.status();
    if status == StatusCode::ACCEPTED || status == StatusCode::OK {
        return Ok(());
    }
    if status == StatusCode::TEMPORARY_REDIRECT {
        let to = resp
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?")
            .to_string();
        return Err(CallError::NotLeader(to));
    }
    let text = read_text(resp.into_body()).await;
    Err(match status {
        StatusCode::BAD_REQUEST => CallError::BadRequest(text),
        StatusCode::UNAUTHORIZED => CallError::Unauthorized,
        StatusCode::FORBIDDEN => CallError::Forbidden(text),
        StatusCode::NOT_FOUND => CallError::NotFound(text),
        StatusCode::SERVICE_UNAVAILABLE => CallError::Unavailable(text),
        s => CallError::Unexpected {
            status: s.as_u16(),
            body: text,
        },
    })
}

/// The error and its sources: hyper's own message ("client error (Connect)") hides what went wrong, such
/// as a refused connection or an untrusted certificate.
fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn framing(e: RecordIoError) -> String {
    format!("bad RecordIO framing: {e}")
}

/// Resolves a 307 `Location`. The real master sends `//host:port/api/v1/scheduler`; absolute URLs and
/// bare `host:port` (as older docs show) are accepted too. Returns the new base `http://host:port`.
fn redirect_target(current: &str, location: Option<&HeaderValue>) -> Option<String> {
    let loc = location?.to_str().ok()?.trim();
    let scheme = current.split("://").next().unwrap_or("http");
    let rest = if let Some(r) = loc.strip_prefix("//") {
        r
    } else if let Some((s, r)) = loc.split_once("://") {
        // A leader that moves between schemes is a misconfiguration; staying on ours keeps the CA.
        if s != scheme {
            return None;
        }
        r
    } else {
        loc
    };
    let authority = rest.split('/').next()?;
    if authority.is_empty() {
        return None;
    }
    Some(format!("{scheme}://{authority}"))
}

async fn read_text(body: hyper::body::Incoming) -> String {
    match tokio::time::timeout(Duration::from_secs(5), body.collect()).await {
        Ok(Ok(b)) => {
            let bytes = b.to_bytes();
            String::from_utf8_lossy(&bytes[..bytes.len().min(4096)]).into_owned()
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_locations() {
        let v = |s: &'static str| HeaderValue::from_static(s);
        assert_eq!(
            redirect_target("http://a:1", Some(&v("//b:2/api/v1/scheduler"))).as_deref(),
            Some("http://b:2")
        );
        assert_eq!(
            redirect_target("http://a:1", Some(&v("http://c:3/x"))).as_deref(),
            Some("http://c:3")
        );
        assert_eq!(
            redirect_target("http://a:1", Some(&v("masterhost2:5050"))).as_deref(),
            Some("http://masterhost2:5050")
        );
        assert_eq!(redirect_target("http://a:1", Some(&v("//"))), None);
        assert_eq!(redirect_target("http://a:1", None), None);
    }

    #[test]
    fn masters_must_be_http_urls() {
        assert!(normalise_master("http://m:5050/").is_ok());
        assert!(normalise_master("m:5050").is_err());
        assert!(normalise_master("https://m:5050").is_ok());
        assert!(normalise_master("ftp://m:5050").is_err());
        assert!(
            MesosClient::new(MesosConfig {
                masters: vec![],
                ..Default::default()
            })
            .is_err()
        );
    }

    #[test]
    fn subscribe_sets_required_framework_fields() {
        let c = MesosClient::new(MesosConfig::default()).unwrap();
        c.set_framework_id(Some(FrameworkID::new("M-0001")));
        let v = serde_json::to_value(c.subscribe_call()).unwrap();
        let fi = &v["subscribe"]["framework_info"];
        assert_eq!(fi["checkpoint"], true);
        assert_eq!(fi["failover_timeout"], 604800.0);
        assert_eq!(v["framework_id"]["value"], "M-0001");
        let caps: Vec<&str> = fi["capabilities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["type"].as_str().unwrap())
            .collect();
        assert_eq!(
            caps,
            ["MULTI_ROLE", "PARTITION_AWARE", "TASK_KILLING_STATE"]
        );
        assert!(fi.get("role").is_none());
    }

    #[test]
    fn secret_file_is_trimmed_and_redacted() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret");
        std::fs::write(&p, "s3cret\n").unwrap();
        let c = Credential::from_secret_file("p", &p).unwrap();
        assert_eq!(c.secret, "s3cret");
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(Credential::from_secret_file("p", &dir.path().join("missing")).is_err());
    }
}
