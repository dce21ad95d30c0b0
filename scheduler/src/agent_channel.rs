//! The `tether.v1.AgentChannel` gRPC service: one stream per sidecar, forwarded to the scheduler loop.
//!
//! This module owns only the transport: authentication (who the stream is, `agent_identity`), the Hello
//! handshake, connection ids, and the per-connection outbox. It validates the Hello at the edge (a
//! sidecar that cannot say which host it is on, or whose credential names another host, is refused) and
//! hands everything else to the loop, which converts it to the core's domain types and decides whether
//! the stream may take the host's place (its verdict is what the sidecar hears).
//!
//! It also bounds what a sidecar can make the scheduler hold ([`WireLimits`], the `--max-…` flags): a
//! Hello or message with a string, list or volume count over its limit ends the stream with
//! INVALID_ARGUMENT or RESOURCE_EXHAUSTED naming the limit and its value; and the messages queued for
//! the loop are bounded in bytes across every sidecar, so a flood of large reports waits in the
//! sidecars' HTTP/2 flow control instead of in the scheduler's memory.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::Stream;
use tether_core::ids::Hostname;
use tether_proto::v1::agent_channel_server::AgentChannel;
use tether_proto::v1::{AgentMessage, Hello, SchedulerMessage, agent_message};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_stream::StreamExt;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status, Streaming};

use crate::agent_identity::{AgentAuth, Credential};
use crate::ha::{ActivityRx, always_leading};

/// Identifies one sidecar stream; a reconnecting sidecar gets a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// What the service tells the scheduler loop.
#[derive(Debug)]
pub enum SidecarEvent {
    /// A sidecar completed the handshake. Messages for it go to `outbox`; dropping `outbox` ends the
    /// stream.
    /// The loop answers on `verdict`: `Err` ends the call with that status (the Hello does not convert,
    /// or the host already has a stream under another credential).
    Connected {
        conn: ConnId,
        hello: Hello,
        credential: Credential,
        outbox: mpsc::Sender<Box<SchedulerMessage>>,
        verdict: oneshot::Sender<Result<(), Status>>,
    },
    /// A report or command result from a connected sidecar. It holds its size in the queue's byte
    /// budget until dropped.
    Message {
        conn: ConnId,
        body: agent_message::Body,
        queued: QueuedBytes,
    },
    /// The stream ended or failed.
    Disconnected { conn: ConnId, reason: String },
}

/// A message's share of the queue's byte budget ([`WireLimits::queue_bytes`]), returned when dropped.
#[derive(Debug)]
pub struct QueuedBytes(#[allow(dead_code, reason = "held for its drop")] OwnedSemaphorePermit);

/// What one sidecar may send (the scheduler's `--max-…` flags). The defaults are the contract's
/// ([`tether_proto::limits`]), which a sidecar keeps within.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireLimits {
    /// `--max-field-bytes`: every short string of a Hello and of a volume report.
    pub field_bytes: usize,
    /// `--max-text-bytes`: errors and CSRs.
    pub text_bytes: usize,
    /// `--max-entries`: Hello features, a volume's status entries.
    pub entries: usize,
    /// `--max-volumes-per-report`: volumes in one report or command result.
    pub volumes_per_report: usize,
    /// `--max-queue-bytes`: encoded bytes of sidecar messages waiting for the loop, all sidecars together.
    pub queue_bytes: usize,
}

/// `--max-queue-bytes`'s default: sixteen of the largest messages gRPC accepts (4 MiB).
pub const DEFAULT_QUEUE_BYTES: usize = 64 << 20;

impl Default for WireLimits {
    fn default() -> Self {
        use tether_proto::limits;
        WireLimits {
            field_bytes: limits::FIELD_BYTES,
            text_bytes: limits::TEXT_BYTES,
            entries: limits::ENTRIES,
            volumes_per_report: limits::VOLUMES_PER_REPORT,
            queue_bytes: DEFAULT_QUEUE_BYTES,
        }
    }
}

impl WireLimits {
    fn field(&self, what: &str, value: &str) -> Result<(), Status> {
        too_long(what, value, self.field_bytes, "--max-field-bytes")
    }

    fn text(&self, what: &str, value: &str) -> Result<(), Status> {
        too_long(what, value, self.text_bytes, "--max-text-bytes")
    }

    fn entries(&self, what: &str, n: usize) -> Result<(), Status> {
        too_many(what, n, self.entries, "--max-entries")
    }

    /// A Hello within the limits (its host name is checked by [`validate_hello`]).
    pub fn check_hello(&self, h: &Hello) -> Result<(), Status> {
        self.field("hello.agent_id", &h.agent_id)?;
        self.field("hello.sidecar_version", &h.sidecar_version)?;
        self.field("hello.driver_name", &h.driver_name)?;
        self.field("hello.zone", &h.zone)?;
        self.field("hello.instance_id", &h.instance_id)?;
        self.entries("hello.features", h.features.len())?;
        for f in &h.features {
            self.field("hello.features[]", f)?;
        }
        Ok(())
    }

    /// A report or command result within the limits.
    pub fn check_body(&self, body: &agent_message::Body) -> Result<(), Status> {
        let volumes = match body {
            agent_message::Body::Hello(h) => return self.check_hello(h),
            agent_message::Body::Report(r) => {
                if let Some(d) = &r.driver {
                    self.text("report.driver.error", &d.error)?;
                }
                too_many(
                    "removed names in one report",
                    r.removed.len(),
                    self.volumes_per_report,
                    "--max-volumes-per-report",
                )?;
                for n in &r.removed {
                    self.field("report.removed[]", n)?;
                }
                &r.volumes
            }
            agent_message::Body::Result(c) => {
                self.text("result.error", &c.error)?;
                self.text("result.csr_pem", &c.csr_pem)?;
                &c.volumes
            }
        };
        too_many(
            "volumes in one message",
            volumes.len(),
            self.volumes_per_report,
            "--max-volumes-per-report",
        )?;
        for v in volumes {
            self.field("volume.name", &v.name)?;
            self.field("volume.zone", &v.zone)?;
            self.field("volume.mountpoint", &v.mountpoint)?;
            self.text("volume.last_error", &v.last_error)?;
            self.entries("volume.status", v.status.len())?;
            for (k, val) in &v.status {
                self.field("volume.status key", k)?;
                self.field("volume.status value", val)?;
            }
        }
        Ok(())
    }
}

fn too_long(what: &str, value: &str, limit: usize, flag: &str) -> Result<(), Status> {
    if value.len() <= limit {
        return Ok(());
    }
    Err(Status::invalid_argument(format!(
        "{what} is {} bytes; the limit is {flag}={limit}",
        value.len()
    )))
}

fn too_many(what: &str, n: usize, limit: usize, flag: &str) -> Result<(), Status> {
    if n <= limit {
        return Ok(());
    }
    Err(Status::resource_exhausted(format!(
        "{n} {what}; the limit is {flag}={limit}"
    )))
}

/// Settings of the service.
#[derive(Debug, Clone)]
pub struct ChannelConfig {
    /// Who a stream is.
    pub auth: AgentAuth,
    /// How long a new stream may take to send its Hello.
    pub hello_timeout: Duration,
    /// Messages buffered per sidecar before the loop's sends wait.
    pub outbox_capacity: usize,
    pub limits: WireLimits,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        ChannelConfig {
            auth: AgentAuth::without_secret(None, false),
            hello_timeout: Duration::from_secs(30),
            outbox_capacity: 256,
            limits: WireLimits::default(),
        }
    }
}

/// The tonic service; cheap to clone.
#[derive(Debug, Clone)]
pub struct AgentChannelService {
    config: Arc<ChannelConfig>,
    events: mpsc::Sender<SidecarEvent>,
    next_conn: Arc<AtomicU64>,
    /// The byte budget of messages queued for the loop.
    queue: Arc<Semaphore>,
    activity: ActivityRx,
    /// Where each stream's reader task runs, so shutdown can wait for them.
    readers: TaskTracker,
}

impl AgentChannelService {
    pub fn new(config: ChannelConfig, events: mpsc::Sender<SidecarEvent>) -> Self {
        AgentChannelService {
            queue: Arc::new(Semaphore::new(
                config.limits.queue_bytes.min(Semaphore::MAX_PERMITS),
            )),
            config: Arc::new(config),
            events,
            next_conn: Arc::new(AtomicU64::new(1)),
            activity: always_leading(),
            readers: TaskTracker::new(),
        }
    }

    /// Runs each stream's reader task on `readers` (the scheduler's supervisor waits for them at shutdown).
    pub fn with_tracker(mut self, readers: TaskTracker) -> Self {
        self.readers = readers;
        self
    }

    /// Bytes left in the budget of messages queued for the loop (`--max-queue-bytes`).
    #[must_use]
    pub fn queue_bytes_free(&self) -> usize {
        self.queue.available_permits()
    }

    /// Refuses sidecar streams while `activity` says this instance is a standby.
    pub fn with_activity(mut self, activity: ActivityRx) -> Self {
        self.activity = activity;
        self
    }
}

/// Host names are the join key with Mesos offers: a Hello must name a host the way the core's
/// [`Hostname`] does (the one rule for host names, shared with offers).
fn validate_hello(hello: &Hello) -> Result<(), Status> {
    Hostname::new(hello.hostname.as_str())
        .map_err(|e| Status::invalid_argument(format!("hello.hostname: {e}")))?;
    Ok(())
}

type OutStream = Pin<Box<dyn Stream<Item = Result<SchedulerMessage, Status>> + Send>>;

#[tonic::async_trait]
impl AgentChannel for AgentChannelService {
    type ConnectStream = OutStream;

    async fn connect(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        // A standby answers before authenticating: the leader's address is no secret, and only the
        // leader holds the agent-token secret a per-agent token is verified with.
        let refusal = self.activity.borrow().refusal("sidecar streams", false);
        if let Some(status) = refusal {
            return Err(status);
        }
        let credential = self.config.auth.authenticate(&request)?;
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(self.config.hello_timeout, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no Hello within the handshake timeout"))??;
        let hello = match first.and_then(|m| m.body) {
            Some(agent_message::Body::Hello(h)) => h,
            Some(_) => return Err(Status::invalid_argument("the first message must be Hello")),
            None => return Err(Status::invalid_argument("the stream ended before Hello")),
        };
        validate_hello(&hello)?;
        self.config.limits.check_hello(&hello)?;
        credential.permits(&hello.hostname).inspect_err(|e| {
            tracing::warn!(host = %hello.hostname, credential = credential.kind(),
                reason = e.message(), "refused a sidecar speaking for another host");
        })?;

        let conn = ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed));
        // Boxed: a channel allocates its slots 32 at a time, and one stream per sidecar kept 32 unboxed
        // messages' worth (7.5 KiB) for a queue that is nearly always empty.
        let (outbox, rx) = mpsc::channel(self.config.outbox_capacity);
        let (verdict, answer) = oneshot::channel();
        let shutting_down = || Status::unavailable("scheduler is shutting down");
        self.events
            .send(SidecarEvent::Connected {
                conn,
                hello,
                credential,
                outbox,
                verdict,
            })
            .await
            .map_err(|_| shutting_down())?;
        answer.await.map_err(|_| shutting_down())??;

        let events = self.events.clone();
        let limits = self.config.limits;
        let queue = Arc::clone(&self.queue);
        // A refusal of a later message ends the sidecar's stream with its status.
        let (refuse, refusal) = oneshot::channel::<Status>();
        self.readers.spawn(async move {
            let reason = loop {
                match inbound.next().await {
                    Some(Ok(AgentMessage {
                        body: Some(agent_message::Body::Hello(_)),
                    })) => {
                        break "a second Hello on one stream".to_owned();
                    }
                    Some(Ok(AgentMessage { body: Some(body) })) => {
                        let queued = match limits
                            .check_body(&body)
                            .and_then(|()| queue_share(&queue, &limits, &body))
                        {
                            Ok(share) => share,
                            Err(status) => {
                                let reason = format!("refused: {}", status.message());
                                tracing::warn!(conn = conn.0, %reason, "sidecar message over a limit");
                                let _ = refuse.send(status);
                                break reason;
                            }
                        };
                        // Waiting here holds the sidecar back through HTTP/2 flow control.
                        let Ok(permit) = queued.await else { return };
                        let queued = QueuedBytes(permit);
                        if events
                            .send(SidecarEvent::Message { conn, body, queued })
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    // A message kind from a newer sidecar: ignore it, as the contract says.
                    Some(Ok(AgentMessage { body: None })) => {}
                    Some(Err(status)) => break format!("stream error: {}", status.message()),
                    None => break "stream closed by the sidecar".to_owned(),
                }
            };
            let _ = events
                .send(SidecarEvent::Disconnected { conn, reason })
                .await;
        });

        Ok(Response::new(Box::pin(downstream(rx, refusal))))
    }
}

/// Where the stream towards a sidecar stands.
enum Down {
    /// The loop's messages, or a refusal of one of the sidecar's messages.
    Open(
        mpsc::Receiver<Box<SchedulerMessage>>,
        oneshot::Receiver<Status>,
    ),
    /// The reader ended without a refusal: only the loop's messages.
    Outbox(mpsc::Receiver<Box<SchedulerMessage>>),
    /// A refusal was sent: the stream is over.
    Done,
}

/// What the sidecar hears: the loop's messages until the loop drops the outbox (which is how a replaced
/// stream ends), or a refusal of one of its messages, which ends the stream with that status.
fn downstream(
    rx: mpsc::Receiver<Box<SchedulerMessage>>,
    refusal: oneshot::Receiver<Status>,
) -> impl Stream<Item = Result<SchedulerMessage, Status>> + Send {
    futures::stream::unfold(Down::Open(rx, refusal), |state| async move {
        match state {
            Down::Open(mut rx, mut refusal) => tokio::select! {
                m = rx.recv() => m.map(|m| (Ok(*m), Down::Open(rx, refusal))),
                r = &mut refusal => match r {
                    Ok(status) => Some((Err(status), Down::Done)),
                    Err(_) => rx.recv().await.map(|m| (Ok(*m), Down::Outbox(rx))),
                },
            },
            Down::Outbox(mut rx) => rx.recv().await.map(|m| (Ok(*m), Down::Outbox(rx))),
            Down::Done => None,
        }
    })
}

/// Waits for `body`'s encoded size in the queue's byte budget; a message larger than the whole budget
/// is refused.
fn queue_share(
    queue: &Arc<Semaphore>,
    limits: &WireLimits,
    body: &agent_message::Body,
) -> Result<
    impl std::future::Future<Output = Result<OwnedSemaphorePermit, tokio::sync::AcquireError>> + use<>,
    Status,
> {
    let size = body.encoded_len();
    let permits = u32::try_from(size)
        .ok()
        .filter(|_| size <= limits.queue_bytes.min(Semaphore::MAX_PERMITS));
    let Some(permits) = permits else {
        return Err(Status::resource_exhausted(format!(
            "a message of {size} bytes; the limit is --max-queue-bytes={}",
            limits.queue_bytes
        )));
    };
    Ok(Arc::clone(queue).acquire_many_owned(permits))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(host: &str) -> Hello {
        Hello {
            hostname: host.to_owned(),
            ..Default::default()
        }
    }

    #[test]
    fn hello_needs_a_host_name_as_offers_carry_it() {
        assert!(validate_hello(&hello("agent-1.example")).is_ok());
        for bad in ["", "a b", "a\tb", "a\u{7}b"] {
            let e = validate_hello(&hello(bad)).expect_err(bad);
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
            assert!(e.message().starts_with("hello.hostname"), "{}", e.message());
        }
        assert!(validate_hello(&hello(&"a".repeat(255))).is_ok());
        assert!(validate_hello(&hello(&"a".repeat(256))).is_err());
    }
}
