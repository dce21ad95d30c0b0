//! The agent channel over real gRPC on loopback: authentication, the Hello handshake, forwarding both ways.

use std::time::Duration;

use tether_proto::v1::agent_channel_client::AgentChannelClient;
use tether_proto::v1::agent_channel_server::AgentChannelServer;
use tether_proto::v1::{
    AgentMessage, Hello, Report, SchedulerMessage, VolumeReport, Welcome, agent_message,
    scheduler_message,
};
use tether_scheduler::agent_channel::{
    AgentChannelService, ChannelConfig, SidecarEvent, WireLimits,
};
use tether_scheduler::agent_identity::AgentAuth;
use tether_scheduler::auth::Token;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::transport::{Channel, Endpoint};

async fn serve(config: ChannelConfig) -> (String, mpsc::Receiver<SidecarEvent>) {
    let (url, rx, _) = serve_service(config).await;
    (url, rx)
}

async fn serve_service(
    config: ChannelConfig,
) -> (String, mpsc::Receiver<SidecarEvent>, AgentChannelService) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (tx, rx) = mpsc::channel(16);
    let service = AgentChannelService::new(config, tx);
    // The scheduler's own HTTP/2 windows, so the tests see its flow control.
    tokio::spawn(
        tether_scheduler::server::http2_settings(tonic::transport::Server::builder())
            .add_service(AgentChannelServer::new(service.clone()))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    (url, rx, service)
}

async fn client(url: &str) -> AgentChannelClient<Channel> {
    AgentChannelClient::new(
        Endpoint::from_shared(url.to_owned())
            .expect("url")
            .connect()
            .await
            .expect("connect"),
    )
}

fn msg(body: agent_message::Body) -> AgentMessage {
    AgentMessage { body: Some(body) }
}

fn hello(host: &str) -> agent_message::Body {
    agent_message::Body::Hello(Hello {
        hostname: host.to_owned(),
        ..Default::default()
    })
}

async fn next(rx: &mut mpsc::Receiver<SidecarEvent>) -> SidecarEvent {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("event in time")
        .expect("event")
}

/// Opens a stream that sends `up_rx`, has the loop accept its Hello, and returns the scheduler's side of
/// it with the `Connected` event's connection id and outbox.
async fn connect_accepted(
    url: &str,
    up_rx: mpsc::Receiver<AgentMessage>,
    events: &mut mpsc::Receiver<SidecarEvent>,
) -> (
    tonic::Streaming<SchedulerMessage>,
    tether_scheduler::agent_channel::ConnId,
    mpsc::Sender<Box<SchedulerMessage>>,
) {
    let url = url.to_owned();
    let connecting =
        tokio::spawn(async move { client(&url).await.connect(ReceiverStream::new(up_rx)).await });
    let SidecarEvent::Connected {
        conn,
        outbox,
        verdict,
        ..
    } = next(events).await
    else {
        panic!("expected Connected")
    };
    verdict.send(Ok(())).expect("waiting");
    let down = connecting
        .await
        .expect("no panic")
        .expect("connect")
        .into_inner();
    (down, conn, outbox)
}

/// A channel that lets every stream in without a credential (`--allow-shared-agent-token` and no
/// `--agent-token-file`): these tests are about the handshake, not identity.
fn open() -> ChannelConfig {
    ChannelConfig {
        auth: AgentAuth::without_secret(None, true),
        ..Default::default()
    }
}

#[tokio::test]
async fn hello_then_reports_up_and_commands_down() {
    let (url, mut events) = serve(open()).await;
    let (up, up_rx) = mpsc::channel(8);
    up.send(msg(hello("agent-1"))).await.expect("send");
    let connecting =
        tokio::spawn(async move { client(&url).await.connect(ReceiverStream::new(up_rx)).await });

    let SidecarEvent::Connected {
        conn,
        hello,
        outbox,
        verdict,
        ..
    } = next(&mut events).await
    else {
        panic!("expected Connected")
    };
    verdict.send(Ok(())).expect("waiting for the verdict");
    let mut down = connecting
        .await
        .expect("no panic")
        .expect("connect")
        .into_inner();
    assert_eq!(hello.hostname, "agent-1");
    outbox
        .send(Box::new(SchedulerMessage {
            body: Some(scheduler_message::Body::Welcome(Welcome {
                report_interval_ms: 500,
                watch: None,
            })),
        }))
        .await
        .expect("outbox");
    let welcome = down.message().await.expect("recv").expect("message");
    assert!(
        matches!(welcome.body, Some(scheduler_message::Body::Welcome(w)) if w.report_interval_ms == 500)
    );

    up.send(msg(agent_message::Body::Report(Report {
        sequence: 7,
        ..Default::default()
    })))
    .await
    .expect("send");
    match next(&mut events).await {
        SidecarEvent::Message {
            conn: c,
            body: agent_message::Body::Report(r),
            ..
        } => {
            assert_eq!((c, r.sequence), (conn, 7));
        }
        other => panic!("expected a report, got {other:?}"),
    }
    drop(up);
    assert!(
        matches!(next(&mut events).await, SidecarEvent::Disconnected { conn: c, .. } if c == conn)
    );

    // Dropping the outbox ends the sidecar's stream.
    drop(outbox);
    assert!(down.message().await.map(|m| m.is_none()).unwrap_or(true));
}

#[tokio::test]
async fn a_stream_must_start_with_hello() {
    let (url, _events) = serve(open()).await;
    let (up, up_rx) = mpsc::channel(8);
    up.send(msg(agent_message::Body::Report(Report::default())))
        .await
        .expect("send");
    let status = client(&url)
        .await
        .connect(ReceiverStream::new(up_rx))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);

    let (up, up_rx) = mpsc::channel(8);
    up.send(msg(hello("bad host"))).await.expect("send");
    let status = client(&url)
        .await
        .connect(ReceiverStream::new(up_rx))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn the_shared_token_is_required_and_checked_when_allowed() {
    let config = ChannelConfig {
        auth: AgentAuth::without_secret(Token::new("agent-secret"), true),
        ..Default::default()
    };
    let (url, mut events) = serve(config).await;

    for presented in [None, Some("Bearer wrong")] {
        let (up, up_rx) = mpsc::channel(8);
        up.send(msg(hello("agent-1"))).await.expect("send");
        let mut req = tonic::Request::new(ReceiverStream::new(up_rx));
        if let Some(p) = presented {
            req.metadata_mut()
                .insert("authorization", p.parse().expect("ascii"));
        }
        let status = client(&url).await.connect(req).await.expect_err("refused");
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
    }
    assert!(
        events.try_recv().is_err(),
        "a refused sidecar must not reach the scheduler"
    );

    let (up, up_rx) = mpsc::channel(8);
    up.send(msg(hello("agent-1"))).await.expect("send");
    let mut req = tonic::Request::new(ReceiverStream::new(up_rx));
    req.metadata_mut().insert(
        "authorization",
        "Bearer agent-secret".parse().expect("ascii"),
    );
    let connecting = tokio::spawn(async move { client(&url).await.connect(req).await });
    let SidecarEvent::Connected { verdict, .. } = next(&mut events).await else {
        panic!("expected Connected")
    };
    verdict.send(Ok(())).expect("waiting");
    connecting.await.expect("no panic").expect("accepted");
}

#[tokio::test]
async fn the_loops_refusal_reaches_the_sidecar() {
    let (url, mut events) = serve(open()).await;
    let (up, up_rx) = mpsc::channel(8);
    up.send(msg(hello("agent-1"))).await.expect("send");
    let connecting =
        tokio::spawn(async move { client(&url).await.connect(ReceiverStream::new(up_rx)).await });
    let SidecarEvent::Connected { verdict, .. } = next(&mut events).await else {
        panic!("expected Connected")
    };
    verdict
        .send(Err(tonic::Status::invalid_argument("hello: agent id: bad")))
        .expect("waiting");
    let status = connecting.await.expect("no panic").expect_err("refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(status.message(), "hello: agent id: bad");
}

/// A Hello whose `instance_id` is one byte over the limit is refused, naming the limit.
#[tokio::test]
async fn an_oversized_hello_field_is_refused_with_the_limit_named() {
    let (url, mut events) = serve(open()).await;
    let limit = tether_proto::limits::FIELD_BYTES;
    let (up, up_rx) = mpsc::channel(8);
    up.send(msg(agent_message::Body::Hello(Hello {
        hostname: "agent-1".into(),
        instance_id: "x".repeat(limit + 1),
        ..Default::default()
    })))
    .await
    .expect("send");
    let status = client(&url)
        .await
        .connect(ReceiverStream::new(up_rx))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("hello.instance_id")
            && status
                .message()
                .contains(&format!("--max-field-bytes={limit}")),
        "{}",
        status.message()
    );
    assert!(events.try_recv().is_err(), "nothing reached the loop");
}

fn report_with(volumes: usize) -> agent_message::Body {
    agent_message::Body::Report(Report {
        sequence: 1,
        volumes: (0..volumes)
            .map(|i| VolumeReport {
                name: format!("v{i}"),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    })
}

/// The scheduler's HTTP/2 windows (64 KiB) are far smaller than the largest message gRPC accepts (4 MiB):
/// a report of nearly that size still arrives whole, window by window.
#[tokio::test]
async fn a_report_of_nearly_the_largest_message_size_passes_the_small_windows() {
    let (url, mut events) = serve(open()).await;
    let (up, up_rx) = mpsc::channel(8);
    up.send(msg(hello("agent-1"))).await.expect("send");
    let (_down, conn, outbox) = connect_accepted(&url, up_rx, &mut events).await;
    // Volumes with names at the field limit, as many as fit under 4 MiB with room for the framing: each
    // encodes to 1,030 bytes (a 1,024-byte name, its tag and length, the volume's tag and length), so
    // the report is 4,032 × 1,030 = 4,152,960 bytes plus a few of its own.
    let name = |i: usize| format!("{i:0>1024}");
    let volumes = (4 << 20) / 1040;
    let report = agent_message::Body::Report(Report {
        sequence: 1,
        volumes: (0..volumes)
            .map(|i| VolumeReport {
                name: name(i),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    });
    up.send(msg(report)).await.expect("send");
    match next(&mut events).await {
        SidecarEvent::Message {
            conn: c,
            body: agent_message::Body::Report(r),
            ..
        } => {
            assert_eq!(c, conn);
            assert_eq!(r.volumes.len(), volumes);
            assert_eq!(
                r.volumes.last().map(|v| v.name.clone()),
                Some(name(volumes - 1))
            );
        }
        other => panic!("expected the report, got {other:?}"),
    }
    drop(outbox);
}

/// A report over `--max-volumes-per-report` ends the stream with RESOURCE_EXHAUSTED naming the limit,
/// and never reaches the loop.
#[tokio::test]
async fn a_report_with_too_many_volumes_ends_the_stream_with_the_limit_named() {
    let limits = WireLimits {
        volumes_per_report: 3,
        ..WireLimits::default()
    };
    let (url, mut events) = serve(ChannelConfig { limits, ..open() }).await;
    let (up, up_rx) = mpsc::channel(8);
    up.send(msg(hello("agent-1"))).await.expect("send");
    let (mut down, conn, outbox) = connect_accepted(&url, up_rx, &mut events).await;
    up.send(msg(report_with(3))).await.expect("send");
    up.send(msg(report_with(4))).await.expect("send");
    assert!(matches!(
        next(&mut events).await,
        SidecarEvent::Message { conn: c, .. } if c == conn
    ));
    match next(&mut events).await {
        SidecarEvent::Disconnected { conn: c, reason } => {
            assert_eq!(c, conn);
            assert!(reason.contains("--max-volumes-per-report=3"), "{reason}");
        }
        other => panic!("expected the stream to end, got {other:?}"),
    }
    let status = down
        .message()
        .await
        .expect_err("the stream ends with a status");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(
        status.message().contains("4 volumes in one message")
            && status.message().contains("--max-volumes-per-report=3"),
        "{}",
        status.message()
    );
    drop(outbox);
}

/// Messages wait for room in the byte budget before they are queued for the loop: what the loop has
/// not handled yet never exceeds `--max-queue-bytes`, and a message larger than all of it is refused.
#[tokio::test]
async fn the_loop_queue_is_bounded_in_bytes() {
    let body = report_with(1000);
    let size = body.encoded_len();
    let budget = size * 5 / 2;
    let (url, mut events, service) = serve_service(ChannelConfig {
        limits: WireLimits {
            queue_bytes: budget,
            ..WireLimits::default()
        },
        ..open()
    })
    .await;
    let (up, up_rx) = mpsc::channel(8);
    up.send(msg(hello("agent-1"))).await.expect("send");
    let (mut down, _, outbox) = connect_accepted(&url, up_rx, &mut events).await;
    for _ in 0..3 {
        up.send(msg(body.clone())).await.expect("send");
    }
    // Two fit; the loop holds them (unhandled), so the third cannot be queued.
    let first = next(&mut events).await;
    let second = next(&mut events).await;
    // (The waiting third may already hold part of what is left.)
    assert!(service.queue_bytes_free() <= budget - 2 * size);
    assert!(service.queue_bytes_free() < size);
    // Handling one makes room for the third.
    drop(first);
    assert!(matches!(
        next(&mut events).await,
        SidecarEvent::Message { .. }
    ));
    drop(second);
    // A message larger than the whole budget can never be queued: refused.
    up.send(msg(report_with(3000))).await.expect("send");
    let status = down.message().await.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(
        status
            .message()
            .contains(&format!("--max-queue-bytes={budget}")),
        "{}",
        status.message()
    );
    drop(outbox);
}
