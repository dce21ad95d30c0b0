//! The `tether.v1.AgentChannel` gRPC service: one stream per sidecar, forwarded to the scheduler loop.
//!
//! This module owns only the transport: authentication (who the stream is, `agent_identity`), the Hello
//! handshake, connection ids, and the per-connection outbox. It validates the Hello at the edge (a
//! sidecar that cannot say which host it is on, or whose credential names another host, is refused) and
//! hands everything else to the loop, which converts it to the core's domain types and decides whether
//! the stream may take the host's place (its verdict is what the sidecar hears).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::Stream;
use tether_core::ids::Hostname;
use tether_proto::v1::agent_channel_server::AgentChannel;
use tether_proto::v1::{AgentMessage, Hello, SchedulerMessage, agent_message};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
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
        outbox: mpsc::Sender<SchedulerMessage>,
        verdict: oneshot::Sender<Result<(), Status>>,
    },
    /// A report or command result from a connected sidecar.
    Message {
        conn: ConnId,
        body: agent_message::Body,
    },
    /// The stream ended or failed.
    Disconnected { conn: ConnId, reason: String },
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
}

impl Default for ChannelConfig {
    fn default() -> Self {
        ChannelConfig {
            auth: AgentAuth::without_secret(None, false),
            hello_timeout: Duration::from_secs(30),
            outbox_capacity: 256,
        }
    }
}

/// The tonic service; cheap to clone.
#[derive(Debug, Clone)]
pub struct AgentChannelService {
    config: Arc<ChannelConfig>,
    events: mpsc::Sender<SidecarEvent>,
    next_conn: Arc<AtomicU64>,
    activity: ActivityRx,
    /// Where each stream's reader task runs, so shutdown can wait for them.
    readers: TaskTracker,
}

impl AgentChannelService {
    pub fn new(config: ChannelConfig, events: mpsc::Sender<SidecarEvent>) -> Self {
        AgentChannelService {
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
    if hello.agent_id.len() > 1024 || hello.zone.len() > 256 || hello.driver_name.len() > 256 {
        return Err(Status::invalid_argument("hello fields are too long"));
    }
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
        credential.permits(&hello.hostname).inspect_err(|e| {
            tracing::warn!(host = %hello.hostname, credential = credential.kind(),
                reason = e.message(), "refused a sidecar speaking for another host");
        })?;

        let conn = ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed));
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
        self.readers.spawn(async move {
            let reason = loop {
                match inbound.next().await {
                    Some(Ok(AgentMessage {
                        body: Some(agent_message::Body::Hello(_)),
                    })) => {
                        break "a second Hello on one stream".to_owned();
                    }
                    Some(Ok(AgentMessage { body: Some(body) })) => {
                        if events
                            .send(SidecarEvent::Message { conn, body })
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

        let stream = ReceiverStream::new(rx).map(Ok::<_, Status>);
        Ok(Response::new(Box::pin(stream)))
    }
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
