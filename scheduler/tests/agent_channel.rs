//! The agent channel over real gRPC on loopback: authentication, the Hello handshake, forwarding both ways.

use std::time::Duration;

use tether_proto::v1::agent_channel_client::AgentChannelClient;
use tether_proto::v1::agent_channel_server::AgentChannelServer;
use tether_proto::v1::{
    AgentMessage, Hello, Report, SchedulerMessage, Welcome, agent_message, scheduler_message,
};
use tether_scheduler::agent_channel::{AgentChannelService, ChannelConfig, SidecarEvent};
use tether_scheduler::agent_identity::AgentAuth;
use tether_scheduler::auth::Token;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::transport::{Channel, Endpoint};

async fn serve(config: ChannelConfig) -> (String, mpsc::Receiver<SidecarEvent>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (tx, rx) = mpsc::channel(16);
    let service = AgentChannelServer::new(AgentChannelService::new(config, tx));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    (url, rx)
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
        .send(SchedulerMessage {
            body: Some(scheduler_message::Body::Welcome(Welcome {
                report_interval_ms: 500,
                watch: None,
            })),
        })
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
