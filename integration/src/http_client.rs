//! The crate's one HTTP/1 client: what the tests, `tether-dev --chaos` and the benchmarks use to talk to
//! es-standin, the emulator's `/state` and `/emu/` fault API, a fake-rexray's control socket and the
//! scheduler's `/metrics`.
//!
//! A [`Conn`] is one connection (TCP or unix socket) kept alive across requests. Callers that must know
//! *which process* answered hold one: the chaos writer checks once that a connection is served by the
//! right node's data and then credits every acknowledgement on it to that node, and the ingest benchmark
//! scrapes `/metrics` every millisecond without reconnecting. Everyone else uses the one-shot functions,
//! which open a connection per request. An Elasticsearch node with security on is reached through
//! [`EsAccess`] (HTTPS trusting the cluster CA, basic auth as `elastic`). Every exchange is bounded by a
//! timeout and every answer's body by a size cap ([`Limits`]), so a stuck or runaway peer fails the
//! caller instead of hanging it.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// Bounds of a connection's exchanges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bound on connecting, and on each request from sending it to the end of the answer's body.
    pub timeout: Duration,
    /// Largest body accepted in an answer.
    pub body_cap: usize,
}

impl Default for Limits {
    /// 10 s and 16 MiB: far beyond any answer of the doubles or `/metrics`, short of a hung test.
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(10),
            body_cap: 16 << 20,
        }
    }
}

impl Limits {
    pub fn with_timeout(timeout: Duration) -> Limits {
        Limits {
            timeout,
            ..Limits::default()
        }
    }
}

/// Why an exchange failed; every variant names the peer (`host:port`, a URL or a socket path).
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{url}: not an http://host:port/... URL")]
    Url { url: String },
    #[error("{peer}: cannot connect: {source}")]
    Connect {
        peer: String,
        source: std::io::Error,
    },
    #[error("{peer}: invalid request: {source}")]
    Request { peer: String, source: http::Error },
    #[error("{peer}: {source}")]
    Http { peer: String, source: hyper::Error },
    #[error("{peer}: reading the answer: {message}")]
    Body { peer: String, message: String },
    #[error("{peer}: the answer's body exceeds {cap} bytes")]
    TooLarge { peer: String, cap: usize },
    #[error("{peer}: no answer within {timeout:?}")]
    Timeout { peer: String, timeout: Duration },
    #[error("{peer}: TLS: {message}")]
    Tls { peer: String, message: String },
}

/// How a client reaches an Elasticsearch node's HTTP layer. With security on a node wants the `elastic`
/// user's basic auth; with `--es-security full` it speaks HTTPS only, with a certificate of the cluster
/// CA. The default is plain HTTP without credentials (`--es-security off`).
#[derive(Clone, Default)]
pub struct EsAccess {
    /// PEM of the cluster CA: HTTPS, trusting only it.
    pub ca_pem: Option<String>,
    /// `(user, password)` for basic auth.
    pub basic_auth: Option<(String, String)>,
}

impl std::fmt::Debug for EsAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EsAccess")
            .field("https", &self.ca_pem.is_some())
            .field("user", &self.basic_auth.as_ref().map(|(u, _)| u))
            .finish()
    }
}

impl EsAccess {
    /// `http` or `https`.
    pub fn scheme(&self) -> &'static str {
        if self.ca_pem.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// `<scheme>://host:port<path>`.
    pub fn url(&self, host: &str, port: u32, path: &str) -> String {
        format!("{}://{host}:{port}{path}", self.scheme())
    }

    fn authorization(&self) -> Option<http::HeaderValue> {
        use base64::Engine as _;
        let (user, password) = self.basic_auth.as_ref()?;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        http::HeaderValue::from_str(&format!("Basic {token}")).ok()
    }

    /// A TLS client trusting only the cluster CA.
    fn tls(&self, peer: &str) -> Result<Option<tokio_rustls::TlsConnector>, HttpError> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject as _;
        let Some(pem) = &self.ca_pem else {
            return Ok(None);
        };
        let tls = |message: String| HttpError::Tls {
            peer: peer.to_owned(),
            message,
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            roots
                .add(cert.map_err(|e| tls(e.to_string()))?)
                .map_err(|e| tls(e.to_string()))?;
        }
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Some(tokio_rustls::TlsConnector::from(std::sync::Arc::new(
            config,
        ))))
    }
}

/// An answer: its status and whole body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON; `Null` when it is not JSON (the emulator's fault API answers plain text).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// One HTTP/1 connection kept alive across requests; every answer on it comes from the process that
/// accepted it.
#[derive(Debug)]
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
    /// The `Host` header.
    host: String,
    /// The peer in error messages.
    peer: String,
    limits: Limits,
    /// Sent with every request (an Elasticsearch node with security on).
    authorization: Option<http::HeaderValue>,
}

impl Conn {
    /// Connects to `authority` (`host:port`).
    pub async fn tcp(authority: &str, limits: Limits) -> Result<Conn, HttpError> {
        let peer = authority.to_owned();
        let connect = tokio::net::TcpStream::connect(authority);
        let stream = bounded(&peer, limits.timeout, async {
            connect.await.map_err(|source| HttpError::Connect {
                peer: peer.clone(),
                source,
            })
        })
        .await?;
        // Requests are small and answered at once; Nagle would add 40 ms to each.
        let _ = stream.set_nodelay(true);
        Conn::handshake(TokioIo::new(stream), authority.to_owned(), peer, limits).await
    }

    /// Connects to the Elasticsearch node at `host:port` as `access` says: HTTPS trusting the cluster CA,
    /// and its credentials on every request.
    pub async fn es(
        host: &str,
        port: u32,
        access: &EsAccess,
        limits: Limits,
    ) -> Result<Conn, HttpError> {
        let authority = format!("{host}:{port}");
        let Some(tls) = access.tls(&authority)? else {
            let mut conn = Conn::tcp(&authority, limits).await?;
            conn.authorization = access.authorization();
            return Ok(conn);
        };
        let peer = authority.clone();
        let stream = bounded(&peer, limits.timeout, async {
            let tcp = tokio::net::TcpStream::connect(&authority)
                .await
                .map_err(|source| HttpError::Connect {
                    peer: peer.clone(),
                    source,
                })?;
            let _ = tcp.set_nodelay(true);
            let name = rustls::pki_types::ServerName::try_from(host.to_owned()).map_err(|e| {
                HttpError::Tls {
                    peer: peer.clone(),
                    message: e.to_string(),
                }
            })?;
            tls.connect(name, tcp).await.map_err(|e| HttpError::Tls {
                peer: peer.clone(),
                message: e.to_string(),
            })
        })
        .await?;
        let mut conn = Conn::handshake(TokioIo::new(stream), authority, peer, limits).await?;
        conn.authorization = access.authorization();
        Ok(conn)
    }

    /// Connects to the HTTP server on the unix socket at `path`.
    pub async fn unix(path: &Path, limits: Limits) -> Result<Conn, HttpError> {
        let peer = path.display().to_string();
        let stream = bounded(&peer, limits.timeout, async {
            tokio::net::UnixStream::connect(path)
                .await
                .map_err(|source| HttpError::Connect {
                    peer: peer.clone(),
                    source,
                })
        })
        .await?;
        Conn::handshake(TokioIo::new(stream), "localhost".to_owned(), peer, limits).await
    }

    async fn handshake<T>(
        io: TokioIo<T>,
        host: String,
        peer: String,
        limits: Limits,
    ) -> Result<Conn, HttpError>
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        let (sender, conn) = bounded(&peer, limits.timeout, async {
            hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|source| HttpError::Http {
                    peer: peer.clone(),
                    source,
                })
        })
        .await?;
        tokio::spawn(conn);
        Ok(Conn {
            sender,
            host,
            peer,
            limits,
            authorization: None,
        })
    }

    /// Sends `method path` with `body` as JSON (none: an empty body) and reads the whole answer.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Reply, HttpError> {
        let peer = format!("{}{path}", self.peer);
        let mut req = http::Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.host);
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        if let Some(auth) = &self.authorization {
            req = req.header(header::AUTHORIZATION, auth.clone());
        }
        let req = req
            .body(Full::new(Bytes::from(
                body.map(Value::to_string).unwrap_or_default(),
            )))
            .map_err(|source| HttpError::Request {
                peer: peer.clone(),
                source,
            })?;
        let (timeout, cap) = (self.limits.timeout, self.limits.body_cap);
        let sender = &mut self.sender;
        bounded(&peer, timeout, async {
            let http = |source| HttpError::Http {
                peer: peer.clone(),
                source,
            };
            sender.ready().await.map_err(http)?;
            let resp = sender.send_request(req).await.map_err(http)?;
            let status = resp.status().as_u16();
            let body = Limited::new(resp.into_body(), cap)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        HttpError::TooLarge {
                            peer: peer.clone(),
                            cap,
                        }
                    } else {
                        HttpError::Body {
                            peer: peer.clone(),
                            message: e.to_string(),
                        }
                    }
                })?
                .to_bytes();
            Ok(Reply { status, body })
        })
        .await
    }

    /// `GET path`.
    pub async fn get(&mut self, path: &str) -> Result<Reply, HttpError> {
        self.send(Method::GET, path, None).await
    }
}

async fn bounded<T>(
    peer: &str,
    timeout: Duration,
    fut: impl Future<Output = Result<T, HttpError>>,
) -> Result<T, HttpError> {
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| HttpError::Timeout {
            peer: peer.to_owned(),
            timeout,
        })?
}

/// Splits `http://host:port/path?query` into the authority and the path with its query.
fn split_url(url: &str) -> Result<(String, String), HttpError> {
    let bad = || HttpError::Url {
        url: url.to_owned(),
    };
    let uri: http::Uri = url.parse().map_err(|_| bad())?;
    if uri.scheme_str() != Some("http") {
        return Err(bad());
    }
    let authority = uri.authority().ok_or_else(bad)?.to_string();
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    Ok((authority, path))
}

/// One request on a fresh connection, within the default [`Limits`].
pub async fn request(method: Method, url: &str, body: Option<&Value>) -> Result<Reply, HttpError> {
    let (authority, path) = split_url(url)?;
    let mut conn = Conn::tcp(&authority, Limits::default()).await?;
    conn.send(method, &path, body).await
}

/// `GET url`: the status and the body as JSON (`Null` when it is not JSON).
pub async fn get_json(url: &str) -> Result<(u16, Value), HttpError> {
    let r = request(Method::GET, url, None).await?;
    Ok((r.status, r.json()))
}

/// `PUT url` with a JSON body: the status and the answer as JSON.
pub async fn put_json(url: &str, body: &Value) -> Result<(u16, Value), HttpError> {
    let r = request(Method::PUT, url, Some(body)).await?;
    Ok((r.status, r.json()))
}

/// `POST url` with an optional JSON body: the status and the answer as JSON.
pub async fn post_json(url: &str, body: Option<&Value>) -> Result<(u16, Value), HttpError> {
    let r = request(Method::POST, url, body).await?;
    Ok((r.status, r.json()))
}

/// One request to the Elasticsearch node at `host:port` on a fresh connection, as `access` says, within
/// the default [`Limits`].
pub async fn es_request(
    access: &EsAccess,
    method: Method,
    host: &str,
    port: u32,
    path: &str,
    body: Option<&Value>,
) -> Result<Reply, HttpError> {
    let mut conn = Conn::es(host, port, access, Limits::default()).await?;
    conn.send(method, path, body).await
}

/// `POST path` with a JSON body to the HTTP server on a unix socket (e.g. a fake-rexray's
/// `/Fake.SetFaults`): the status.
pub async fn post_unix(socket: &Path, path: &str, body: &Value) -> Result<u16, HttpError> {
    let mut conn = Conn::unix(socket, Limits::default()).await?;
    Ok(conn.send(Method::POST, path, Some(body)).await?.status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_authority_and_path() {
        let (a, p) = split_url("http://127.0.0.1:9200/docs/_doc/1?refresh=true").expect("valid");
        assert_eq!(a, "127.0.0.1:9200");
        assert_eq!(p, "/docs/_doc/1?refresh=true");
        let (_, p) = split_url("http://h:1").expect("valid");
        assert_eq!(p, "/");
        assert!(matches!(
            split_url("https://h:1/"),
            Err(HttpError::Url { .. })
        ));
        assert!(matches!(
            split_url("/only/a/path"),
            Err(HttpError::Url { .. })
        ));
    }

    /// A one-connection HTTP/1 server answering every request with `body`, counting requests.
    async fn serve(body: &'static [u8]) -> (std::net::SocketAddr, tokio::task::JoinHandle<usize>) {
        use hyper::service::service_fn;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let count = served.clone();
            let svc = service_fn(move |_req: http::Request<hyper::body::Incoming>| {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async move {
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                        Bytes::from_static(body),
                    )))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
            served.load(std::sync::atomic::Ordering::SeqCst)
        });
        (addr, task)
    }

    #[tokio::test]
    async fn a_connection_is_kept_alive_across_requests() {
        let (addr, server) = serve(br#"{"ok":true}"#).await;
        let mut conn = Conn::tcp(&addr.to_string(), Limits::default())
            .await
            .expect("connect");
        for _ in 0..3 {
            let r = conn.get("/").await.expect("answer");
            assert_eq!((r.status, r.json()), (200, serde_json::json!({"ok": true})));
        }
        drop(conn);
        assert_eq!(
            server.await.expect("server"),
            3,
            "one connection served all"
        );
    }

    #[tokio::test]
    async fn a_body_over_the_cap_is_an_error() {
        let (addr, _server) = serve(b"0123456789").await;
        let limits = Limits {
            body_cap: 4,
            ..Limits::default()
        };
        let mut conn = Conn::tcp(&addr.to_string(), limits).await.expect("connect");
        let err = conn.get("/").await.expect_err("too large");
        assert!(matches!(err, HttpError::TooLarge { cap: 4, .. }), "{err}");
    }

    #[tokio::test]
    async fn a_silent_peer_times_out() {
        // Accepts but never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let _hold = tokio::spawn(async move {
            let conn = listener.accept().await;
            std::future::pending::<()>().await;
            drop(conn);
        });
        let mut conn = Conn::tcp(
            &addr.to_string(),
            Limits::with_timeout(Duration::from_millis(50)),
        )
        .await
        .expect("connect");
        let err = conn.get("/").await.expect_err("no answer");
        assert!(matches!(err, HttpError::Timeout { .. }), "{err}");
    }
}
