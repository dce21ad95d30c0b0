//! The transport protocol between stand-ins: one request per connection, each frame a big-endian `u32`
//! length and a JSON body, over TCP or — with `xpack.security.transport.ssl.enabled` — mutual TLS with the
//! node's certificates, so a peer whose certificate does not chain to the configured CA, or (with
//! `verification_mode: full`) does not name the address dialled, is never heard.
//!
//! Every request carries the sender's cluster name and node; a peer of another cluster name is refused at
//! the handshake, as Elasticsearch's transport handshake does.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::shards::ClusterUpdate;
use super::state::{ClusterState, DiscoveryNode};

/// Largest frame: a cluster state of a few hundred nodes fits easily.
const MAX_FRAME: usize = 16 * 1024 * 1024;

/// A coordination request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    /// Peer discovery: "here are the nodes I know; who are you and who is your master?"
    Peers { known: Vec<DiscoveryNode> },
    /// Would you vote for a candidate whose last accepted state is this fresh?
    PreVote {
        last_accepted_term: u64,
        last_accepted_version: u64,
    },
    /// Join the candidate in a new term (a vote).
    StartJoin { term: u64 },
    /// Add me to your cluster (to the elected master).
    Join,
    /// Can you join a cluster with this UUID? (master → joining node)
    ValidateJoin { cluster_uuid: String },
    /// Accept this state (master → nodes).
    Publish { state: Box<ClusterState> },
    /// The state of `term`/`version` is committed: apply it.
    Commit { term: u64, version: u64 },
    /// Fault detection, master → follower. `ephemeral_id` is the follower's as the master's state has it:
    /// a process that restarted on the same address has another one and is not that node (Elasticsearch's
    /// transport handshake refuses a node whose ephemeral id differs, and the master also sees the old
    /// connection close), so the master removes it as disconnected.
    FollowerCheck {
        term: u64,
        #[serde(default)]
        ephemeral_id: Option<String>,
    },
    /// Fault detection, follower → master.
    LeaderCheck,
    /// A cluster-state change (any node → master).
    Update(ClusterUpdate),
    /// The version of the master's applied state (any node → master, before a master-read action).
    StateVersion,
    /// Index a document (coordinating node → the primary's node).
    PrimaryWrite {
        index: String,
        id: String,
        source: serde_json::Value,
    },
    /// Store this version of a document in a copy (primary → other copies).
    ReplicaWrite {
        index: String,
        shard: usize,
        id: String,
        version: u64,
        source: serde_json::Value,
    },
    /// Read a document from a copy.
    GetDoc {
        index: String,
        shard: usize,
        id: String,
    },
    /// Every document of the primary, for the recovering copy `allocation_id`.
    RecoverShard {
        index: String,
        shard: usize,
        allocation_id: String,
    },
}

/// A reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Response {
    Peers {
        node: Box<DiscoveryNode>,
        master: Option<Box<DiscoveryNode>>,
        known: Vec<DiscoveryNode>,
    },
    PreVote {
        current_term: u64,
        last_accepted_term: u64,
        last_accepted_version: u64,
        has_leader: bool,
    },
    Vote {
        term: u64,
        last_accepted_term: u64,
        last_accepted_version: u64,
    },
    Ack,
    /// A cluster-state update is in the state of this version (committed on the master).
    Published(u64),
    /// A document write's HTTP status and body.
    Written(u16, serde_json::Value),
    /// `(version, source)` of a document, `None` when missing.
    Doc(Option<(u64, serde_json::Value)>),
    /// `(id, version, source)` of every document of a shard.
    Docs(Vec<(String, u64, serde_json::Value)>),
    /// The request was understood and refused (Elasticsearch's remote exception).
    Refused(String),
}

#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    cluster_name: String,
    from: DiscoveryNode,
    /// The ephemeral id of the node the sender means (None: whoever listens there, as discovery asks).
    /// Elasticsearch connects to a node, not an address: its handshake refuses a process whose
    /// ephemeral id differs, so a node restarted on the same address never receives what was meant for
    /// its previous process (a publication, a replica write, a read of a copy it no longer has).
    #[serde(default)]
    to: Option<String>,
    request: Request,
}

/// Why a request got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// Nobody accepts connections there (Elasticsearch's `ConnectTransportException`): the node is gone.
    #[error("[{0}] connect_exception: {1}")]
    Connect(SocketAddr, String),
    #[error("[{0}] request timed out after {1:?}")]
    Timeout(SocketAddr, Duration),
    #[error("[{0}] TLS handshake failed: {1}")]
    Tls(SocketAddr, String),
    #[error("[{0}] {1}")]
    Io(SocketAddr, String),
    #[error("[{0}] remote refused: {1}")]
    Refused(SocketAddr, String),
}

impl TransportError {
    /// Whether the peer is simply not there (fault detection drops such a node at once).
    pub fn is_disconnect(&self) -> bool {
        match self {
            TransportError::Connect(..) => true,
            TransportError::Refused(_, why) => why.starts_with(RESTARTED),
            _ => false,
        }
    }
}

/// How a node answers a follower check meant for an earlier process on its address (see
/// [`Request::FollowerCheck`]).
pub const RESTARTED: &str = "handshake failed: unexpected remote node";

/// Both sides of transport TLS.
#[derive(Clone)]
pub struct TransportTls {
    pub acceptor: tokio_rustls::TlsAcceptor,
    pub connector: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for TransportTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TransportTls")
    }
}

/// Sends requests to peers.
#[derive(Debug, Clone)]
pub struct Transport {
    pub cluster_name: String,
    pub local: DiscoveryNode,
    pub tls: Option<TransportTls>,
    pub connect_timeout: Duration,
}

impl Transport {
    /// One request to `addr`; `host` is what the peer's certificate must name under `full` verification.
    pub async fn send(
        &self,
        addr: SocketAddr,
        host: &str,
        request: Request,
        timeout: Duration,
    ) -> Result<Response, TransportError> {
        self.send_envelope(addr, host, None, request, timeout).await
    }

    /// One request to the process `node` names (its ephemeral id): a process that restarted on its
    /// address refuses it as Elasticsearch's handshake does, and the refusal counts as a disconnect.
    pub async fn send_to(
        &self,
        node: &DiscoveryNode,
        request: Request,
        timeout: Duration,
    ) -> Result<Response, TransportError> {
        self.send_envelope(
            node.address,
            &node.host,
            Some(node.ephemeral_id.clone()),
            request,
            timeout,
        )
        .await
    }

    async fn send_envelope(
        &self,
        addr: SocketAddr,
        host: &str,
        to: Option<String>,
        request: Request,
        timeout: Duration,
    ) -> Result<Response, TransportError> {
        let envelope = Envelope {
            cluster_name: self.cluster_name.clone(),
            from: self.local.clone(),
            to,
            request,
        };
        let body =
            serde_json::to_vec(&envelope).map_err(|e| TransportError::Io(addr, e.to_string()))?;
        let exchange = async {
            let tcp = match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr))
                .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return Err(TransportError::Connect(addr, e.to_string())),
                Err(_) => return Err(TransportError::Connect(addr, "connect timed out".into())),
            };
            let _ = tcp.set_nodelay(true);
            match &self.tls {
                None => exchange(tcp, &body, addr).await,
                Some(tls) => {
                    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
                        .map_err(|e| TransportError::Tls(addr, format!("{host}: {e}")))?;
                    let stream = tls
                        .connector
                        .connect(name, tcp)
                        .await
                        .map_err(|e| TransportError::Tls(addr, e.to_string()))?;
                    exchange(stream, &body, addr).await
                }
            }
        };
        let response = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| TransportError::Timeout(addr, timeout))??;
        match response {
            Response::Refused(reason) => Err(TransportError::Refused(addr, reason)),
            r => Ok(r),
        }
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    body: &[u8],
    addr: SocketAddr,
) -> Result<Response, TransportError> {
    let io = |e: std::io::Error| TransportError::Io(addr, e.to_string());
    write_frame(&mut stream, body).await.map_err(io)?;
    let reply = read_frame(&mut stream).await.map_err(|e| {
        // A TLS peer that rejected our certificate closes the connection after the handshake.
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            TransportError::Io(addr, "connection closed by the peer".into())
        } else {
            io(e)
        }
    })?;
    let _ = stream.shutdown().await;
    serde_json::from_slice(&reply).map_err(|e| TransportError::Io(addr, e.to_string()))
}

async fn write_frame<S: AsyncWrite + Unpin>(s: &mut S, body: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(body.len()).map_err(|_| std::io::Error::other("frame too large"))?;
    s.write_all(&len.to_be_bytes()).await?;
    s.write_all(body).await?;
    s.flush().await
}

async fn read_frame<S: AsyncRead + Unpin>(s: &mut S) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::other(format!(
            "frame of {len} bytes is too large"
        )));
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await?;
    Ok(body)
}

/// Serves requests on `listener` until `shutdown`, answering each with `handler(from, request)`.
pub async fn serve<H, F>(
    listener: TcpListener,
    cluster_name: String,
    local_ephemeral_id: String,
    tls: Option<TransportTls>,
    handler: H,
    shutdown: CancellationToken,
) where
    H: Fn(DiscoveryNode, Request) -> F + Send + Sync + 'static,
    F: Future<Output = Response> + Send + 'static,
{
    let handler = Arc::new(handler);
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((tcp, peer)) = accepted else { continue };
        let _ = tcp.set_nodelay(true);
        let handler = handler.clone();
        let cluster_name = cluster_name.clone();
        let local = local_ephemeral_id.clone();
        let tls = tls.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let work = async {
                match tls {
                    None => answer(tcp, &cluster_name, &local, handler.as_ref()).await,
                    Some(tls) => match tls.acceptor.accept(tcp).await {
                        Ok(stream) => answer(stream, &cluster_name, &local, handler.as_ref()).await,
                        Err(e) => {
                            tracing::warn!(%peer, error = %e, "transport TLS handshake with a peer failed, closing connection");
                        }
                    },
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = work => {}
            }
        });
    }
}

async fn answer<S, H, F>(mut stream: S, cluster_name: &str, local: &str, handler: &H)
where
    S: AsyncRead + AsyncWrite + Unpin,
    H: Fn(DiscoveryNode, Request) -> F,
    F: Future<Output = Response>,
{
    let Ok(frame) = read_frame(&mut stream).await else {
        return;
    };
    let response = match serde_json::from_slice::<Envelope>(&frame) {
        Err(e) => Response::Refused(format!("malformed transport message: {e}")),
        Ok(env) if env.cluster_name != cluster_name => Response::Refused(format!(
            "handshake failed, mismatched cluster name [Cluster [{}]] - {}",
            env.cluster_name, env.from
        )),
        Ok(env) if env.to.as_deref().is_some_and(|to| to != local) => Response::Refused(format!(
            "{RESTARTED}: [{}] meant the process with ephemeral id [{}], this one is [{local}]",
            env.from,
            env.to.unwrap_or_default()
        )),
        Ok(env) => handler(env.from, env.request).await,
    };
    let body = serde_json::to_vec(&response).unwrap_or_default();
    let _ = write_frame(&mut stream, &body).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, address: SocketAddr, ephemeral_id: &str) -> DiscoveryNode {
        DiscoveryNode {
            id: format!("{name}-id"),
            name: name.to_owned(),
            address,
            host: "127.0.0.1".to_owned(),
            roles: std::collections::BTreeSet::new(),
            version: crate::es_standin::image::EsVersion::DEFAULT,
            attributes: std::collections::BTreeMap::new(),
            ephemeral_id: ephemeral_id.to_owned(),
        }
    }

    /// A request meant for an earlier process on the address is refused as a disconnect (what the
    /// master's publication and fault detection then act on); one for this process, or for whoever
    /// listens (discovery), is handled.
    #[tokio::test]
    async fn a_restarted_process_refuses_what_was_meant_for_its_predecessor() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let shutdown = CancellationToken::new();
        tokio::spawn(serve(
            listener,
            "c".to_owned(),
            "now".to_owned(),
            None,
            |_, _| async { Response::Ack },
            shutdown.clone(),
        ));
        let sender = Transport {
            cluster_name: "c".to_owned(),
            local: node("master", address, "m"),
            tls: None,
            connect_timeout: Duration::from_secs(5),
        };
        let timeout = Duration::from_secs(5);
        let stale = sender
            .send_to(&node("n", address, "before"), Request::LeaderCheck, timeout)
            .await
            .expect_err("refused");
        assert!(stale.is_disconnect(), "{stale}");
        let current = sender
            .send_to(&node("n", address, "now"), Request::LeaderCheck, timeout)
            .await;
        assert!(matches!(current, Ok(Response::Ack)), "{current:?}");
        let anyone = sender
            .send(address, "127.0.0.1", Request::LeaderCheck, timeout)
            .await;
        assert!(matches!(anyone, Ok(Response::Ack)), "{anyone:?}");
        shutdown.cancel();
    }
}
