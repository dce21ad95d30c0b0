//! Agent identity against a real tether-scheduler (in this process, no Mesos needed): per-agent tokens
//! minted through the admin API bind a sidecar stream to its host; the shared token and credentials for
//! another host are refused, as are expired and revoked tokens; a second stream for a host may replace
//! the first only with the same credential. Plus the edge's small promises: a Hello whose agent id does
//! not convert is told why, `bearer` in lower case is a bearer, and an undecodable admin request is
//! INVALID_ARGUMENT.

use std::path::Path;
use std::time::Duration;

use tether_integration::process::free_port;
use tether_integration::testing::scheduler::Scheduler;
use tether_proto::v1::admin_client::AdminClient;
use tether_proto::v1::agent_channel_client::AgentChannelClient;
use tether_proto::v1::{
    AgentMessage, Hello, ListAgentsRequest, MarkAgentGoneRequest, MintAgentTokenRequest,
    RotateAgentTokenSecretRequest, ScaleResponse, SchedulerMessage, agent_message,
};
use tether_scheduler::agent_identity::AgentSecret;
use tether_scheduler::store::secret;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status, Streaming};

/// A scheduler that requires host-bound credentials; no Mesos master answers (none is needed here).
fn strict(state: &Path) -> Scheduler {
    Scheduler::start_strict(&format!("http://127.0.0.1:{}", free_port()), state, &[])
}

async fn channel(sched: &Scheduler) -> Channel {
    Endpoint::from_shared(format!("http://{}", sched.listen))
        .expect("url")
        .connect()
        .await
        .expect("scheduler reachable")
}

async fn mint(admin: &mut AdminClient<Channel>, host: &str) -> String {
    admin
        .mint_agent_token(MintAgentTokenRequest {
            host: host.to_owned(),
            ttl_seconds: 3600,
        })
        .await
        .expect("minted")
        .into_inner()
        .token
}

/// An open sidecar stream: keep `_up` to keep it open.
struct Stream {
    _up: mpsc::Sender<AgentMessage>,
    down: Streaming<SchedulerMessage>,
}

/// Opens a stream presenting `authorization` (as given) with a Hello for `host` (and `agent_id`).
async fn connect(
    sched: &Scheduler,
    authorization: Option<&str>,
    host: &str,
    agent_id: &str,
) -> Result<Stream, Status> {
    let (up, rx) = mpsc::channel(8);
    up.send(AgentMessage {
        body: Some(agent_message::Body::Hello(Hello {
            hostname: host.to_owned(),
            agent_id: agent_id.to_owned(),
            instance_id: "test".to_owned(),
            ..Default::default()
        })),
    })
    .await
    .expect("queued");
    let mut req = tonic::Request::new(ReceiverStream::new(rx));
    if let Some(a) = authorization {
        req.metadata_mut()
            .insert("authorization", a.parse().expect("ascii"));
    }
    let down = AgentChannelClient::new(channel(sched).await)
        .connect(req)
        .await?
        .into_inner();
    Ok(Stream { _up: up, down })
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Whether the admin API lists `host` with an open sidecar stream.
async fn connected(admin: &mut AdminClient<Channel>, host: &str) -> bool {
    admin
        .list_agents(ListAgentsRequest {})
        .await
        .expect("agents")
        .into_inner()
        .agents
        .iter()
        .any(|a| a.host == host && a.sidecar_connected)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_speaks_only_for_its_host_and_never_after_it_expired() {
    let state = tempfile::tempdir().expect("tempdir");
    let mut sched = strict(state.path());
    let mut admin = sched.admin().await;
    let a = mint(&mut admin, "agent-a").await;

    // The host's own sidecar.
    let _held = connect(&sched, Some(&bearer(&a)), "agent-a", "")
        .await
        .expect("its own token");
    assert!(connected(&mut admin, "agent-a").await);

    // A's token in a Hello for B: the peer is known, it may not speak for B.
    let e = connect(&sched, Some(&bearer(&a)), "agent-b", "")
        .await
        .err()
        .expect("another host");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("agent-a"), "{}", e.message());
    assert!(!connected(&mut admin, "agent-b").await);

    // What the shared token was: a string without a host. Without --allow-shared-agent-token it is no
    // credential, whichever host it claims.
    for impostor in [Some("Bearer the-old-shared-token"), None] {
        let e = connect(&sched, impostor, "agent-a", "")
            .await
            .err()
            .expect("no host-bound credential");
        assert_eq!(e.code(), Code::Unauthenticated, "{impostor:?}: {e:?}");
    }
    assert!(connected(&mut admin, "agent-a").await, "A kept its stream");

    // A token signed with the real secret but expired.
    let stored = secret::load_file(&state.path().join(secret::FILE))
        .expect("readable")
        .expect("created by the first mint");
    let expired = stored.mint(
        &tether_core::ids::Hostname::new("agent-c").expect("host"),
        1_000,
    );
    let e = connect(&sched, Some(&bearer(&expired)), "agent-c", "")
        .await
        .err()
        .expect("expired");
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().contains("expired"), "{}", e.message());
    // Forged: right shape, another secret.
    let forged = AgentSecret::generate().mint(
        &tether_core::ids::Hostname::new("agent-c").expect("host"),
        u64::MAX / 2,
    );
    let e = connect(&sched, Some(&bearer(&forged)), "agent-c", "")
        .await
        .err()
        .expect("forged");
    assert_eq!(e.code(), Code::Unauthenticated);
    sched.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_secret_revokes_every_earlier_token_even_across_a_restart() {
    let state = tempfile::tempdir().expect("tempdir");
    let mut sched = strict(state.path());
    let mut admin = sched.admin().await;
    let old = mint(&mut admin, "agent-a").await;
    drop(
        connect(&sched, Some(&bearer(&old)), "agent-a", "")
            .await
            .expect("valid before the rotation"),
    );
    admin
        .rotate_agent_token_secret(RotateAgentTokenSecretRequest {})
        .await
        .expect("rotated");
    let e = connect(&sched, Some(&bearer(&old)), "agent-a", "")
        .await
        .err()
        .expect("revoked");
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().contains("rotate-secret"), "{}", e.message());
    let new = mint(&mut admin, "agent-a").await;
    drop(
        connect(&sched, Some(&bearer(&new)), "agent-a", "")
            .await
            .expect("a token under the new secret"),
    );

    // The secret is state: a restarted scheduler verifies with the rotated one.
    sched.stop().await;
    let mut sched = strict(state.path());
    let _ = sched.admin().await;
    connect(&sched, Some(&bearer(&new)), "agent-a", "")
        .await
        .expect("the new token after a restart");
    let e = connect(&sched, Some(&bearer(&old)), "agent-a", "")
        .await
        .err()
        .expect("the old one stays revoked");
    assert_eq!(e.code(), Code::Unauthenticated);
    sched.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_same_credential_replaces_a_hosts_stream() {
    let state = tempfile::tempdir().expect("tempdir");
    let mut sched = strict(state.path());
    let mut admin = sched.admin().await;
    let first = mint(&mut admin, "agent-a").await;
    // Another valid token for the same host (a later expiry: another credential).
    let second = admin
        .mint_agent_token(MintAgentTokenRequest {
            host: "agent-a".into(),
            ttl_seconds: 7200,
        })
        .await
        .expect("minted")
        .into_inner()
        .token;
    assert_ne!(first, second);

    let mut held = connect(&sched, Some(&bearer(&first)), "agent-a", "")
        .await
        .expect("first stream");
    let e = connect(&sched, Some(&bearer(&second)), "agent-a", "")
        .await
        .err()
        .expect("another credential may not take the host's place");
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(
        e.message().contains("another credential"),
        "{}",
        e.message()
    );

    // The same credential (a sidecar restarting while its old stream lingers) replaces it, and the old
    // stream ends.
    let _replacement = connect(&sched, Some(&bearer(&first)), "agent-a", "")
        .await
        .expect("same credential");
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match held.down.message().await {
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the replaced stream ends");
    assert!(connected(&mut admin, "agent-a").await);
    sched.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_says_what_is_wrong() {
    let state = tempfile::tempdir().expect("tempdir");
    let mut sched = strict(state.path());
    let mut admin = sched.admin().await;
    let token = mint(&mut admin, "agent-a").await;

    // An agent id the core refuses: the sidecar hears why instead of a silently closed stream.
    let e = connect(&sched, Some(&bearer(&token)), "agent-a", "bad/agent")
        .await
        .err()
        .expect("refused");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("agent_id"), "{}", e.message());

    // RFC 7235: the scheme is case-insensitive.
    connect(&sched, Some(&format!("bearer {token}")), "agent-a", "")
        .await
        .expect("lower-case scheme");

    // Bytes that are not a ScaleRequest (field 1 as a string where an int64 belongs): the request is
    // invalid, the scheduler did not fail.
    let mut grpc = tonic::client::Grpc::new(channel(&sched).await);
    grpc.ready().await.expect("ready");
    let e = grpc
        .unary(
            tonic::Request::new(MarkAgentGoneRequest {
                agent: "not a number".into(),
            }),
            http::uri::PathAndQuery::from_static("/tether.v1.Admin/Scale"),
            tether_proto::codec::ProtoCodec::<MarkAgentGoneRequest, ScaleResponse>::default(),
        )
        .await
        .expect_err("malformed");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    sched.stop().await;
}
