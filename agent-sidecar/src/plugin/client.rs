//! The HTTP side of the plugin client: HTTP/1.1 over a small pool of keep-alive connections (hyper-util's
//! legacy client; hyperlocal's connector for unix sockets), a timeout over the whole call, and a reply
//! size bound.
//!
//! Pooling must not outlive a plugin restart: a restarted plugin closes the old connections, which the
//! pool then discards; a request written to one the client has not yet seen closed fails with a broken
//! pipe before the plugin could read it, and is sent again on another connection; a call cut off by its
//! timeout closes its connection instead of returning it; and idle connections are closed after
//! `POOL_IDLE_TIMEOUT`, so a sidecar between reports holds none.

use std::collections::BTreeMap;
use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyperlocal::UnixConnector;
use serde_json::{Map, Value, json};

use super::reply::{self, Scope, Volume};
use super::{Method, PluginAddr, PluginError, PluginErrorKind};

/// Per-call timeouts and the reply size bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// `Create` and `Mount` (the engine allows 2 minutes).
    pub long: Duration,
    /// Every other call (the engine allows 1 minute).
    pub short: Duration,
    /// Largest reply body accepted, in bytes.
    pub max_reply_bytes: usize,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            long: Duration::from_secs(120),
            short: Duration::from_secs(60),
            max_reply_bytes: 1 << 20,
        }
    }
}

/// How long an idle connection stays pooled: long enough to carry a burst of calls (a report's Gets, a
/// prepare's Get, Mount and Path), short enough that a sidecar between reports holds no connection and a
/// plugin's own idle cut-off seldom races a request on a reused one.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Idle connections kept per plugin: the reporter's concurrency (8 Gets at once).
const POOL_MAX_IDLE: usize = 8;

/// The longest path a unix socket address holds (`sun_path`, less its terminating NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Told the method, duration and success of every call (for metrics). Must be cheap: it runs inline.
pub trait CallObserver: Send + Sync + std::fmt::Debug {
    fn observe(&self, method: Method, elapsed: Duration, ok: bool);
}

/// A client of one volume plugin. Cheap to clone (clones share the connection pool); safe to use from many
/// tasks at once.
#[derive(Debug, Clone)]
pub struct PluginClient {
    addr: Arc<PluginAddr>,
    pool: Pool,
    timeouts: Timeouts,
    observer: Option<Arc<dyn CallObserver>>,
}

/// The connection pool to the plugin's address.
#[derive(Debug, Clone)]
enum Pool {
    Unix(Client<UnixConnector, Full<Bytes>>),
    Tcp(Client<HttpConnector, Full<Bytes>>),
}

fn pooled<C: Connect + Clone>(connector: C) -> Client<C, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(POOL_MAX_IDLE)
        .build(connector)
}

impl PluginClient {
    /// A client with the default timeouts.
    pub fn new(addr: PluginAddr) -> Self {
        Self::with_timeouts(addr, Timeouts::default())
    }

    /// A client with the given timeouts. Needs no runtime until the first call.
    pub fn with_timeouts(addr: PluginAddr, timeouts: Timeouts) -> Self {
        let pool = match &addr {
            PluginAddr::Unix(_) => Pool::Unix(pooled(UnixConnector)),
            PluginAddr::Tcp(_) => Pool::Tcp(pooled(HttpConnector::new())),
        };
        PluginClient {
            addr: Arc::new(addr),
            pool,
            timeouts,
            observer: None,
        }
    }

    /// The same client, reporting every call to `observer`.
    pub fn with_observer(mut self, observer: Arc<dyn CallObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    pub fn addr(&self) -> &PluginAddr {
        &self.addr
    }

    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// The same client with every timeout capped at `cap` (for commands with a deadline).
    pub fn capped(&self, cap: Duration) -> Self {
        let mut t = self.timeouts;
        t.long = t.long.min(cap);
        t.short = t.short.min(cap);
        PluginClient {
            addr: self.addr.clone(),
            pool: self.pool.clone(),
            timeouts: t,
            observer: self.observer.clone(),
        }
    }

    /// `/Plugin.Activate`: the interfaces the plugin implements. Fails unless it includes `VolumeDriver`.
    pub async fn activate(&self) -> Result<Vec<String>, PluginError> {
        let m = Method::Activate;
        let obj = self.call(m, None, None).await?;
        reply::implements(&obj).map_err(|kind| error(m, None, kind))
    }

    /// `/VolumeDriver.Create` with the given options.
    pub async fn create(
        &self,
        name: &str,
        opts: &BTreeMap<String, String>,
    ) -> Result<(), PluginError> {
        self.call(
            Method::Create,
            Some(name),
            Some(json!({"Name": name, "Opts": opts})),
        )
        .await?;
        Ok(())
    }

    /// `/VolumeDriver.Remove`.
    pub async fn remove(&self, name: &str) -> Result<(), PluginError> {
        self.call(Method::Remove, Some(name), Some(json!({"Name": name})))
            .await?;
        Ok(())
    }

    /// `/VolumeDriver.Mount` with mount id `id`: the host path where the volume is mounted.
    pub async fn mount(&self, name: &str, id: &str) -> Result<String, PluginError> {
        let m = Method::Mount;
        let obj = self
            .call(m, Some(name), Some(json!({"Name": name, "ID": id})))
            .await?;
        reply::mountpoint(&obj).map_err(|kind| error(m, Some(name), kind))
    }

    /// `/VolumeDriver.Unmount` with mount id `id`.
    pub async fn unmount(&self, name: &str, id: &str) -> Result<(), PluginError> {
        self.call(
            Method::Unmount,
            Some(name),
            Some(json!({"Name": name, "ID": id})),
        )
        .await?;
        Ok(())
    }

    /// `/VolumeDriver.Path`: the mountpoint, `None` when the driver leaves it missing or empty.
    pub async fn path(&self, name: &str) -> Result<Option<String>, PluginError> {
        let m = Method::Path;
        let obj = self
            .call(m, Some(name), Some(json!({"Name": name})))
            .await?;
        reply::path(&obj).map_err(|kind| error(m, Some(name), kind))
    }

    /// `/VolumeDriver.Get`: `None` for `{"Volume":null}` (no such volume). Drivers that answer a missing
    /// volume with an error produce `Err` (see [`PluginError::is_not_found`]).
    pub async fn get(&self, name: &str) -> Result<Option<Volume>, PluginError> {
        let m = Method::Get;
        let obj = self
            .call(m, Some(name), Some(json!({"Name": name})))
            .await?;
        reply::get(&obj).map_err(|kind| error(m, Some(name), kind))
    }

    /// `/VolumeDriver.List`.
    pub async fn list(&self) -> Result<Vec<Volume>, PluginError> {
        let m = Method::List;
        let obj = self.call(m, None, Some(json!({}))).await?;
        reply::list(&obj).map_err(|kind| error(m, None, kind))
    }

    /// `/VolumeDriver.Capabilities`: the scope. An error reply, an empty or unknown scope all mean `Local`
    /// (as in the engine); only transport failures and timeouts are errors.
    pub async fn capabilities(&self) -> Result<Scope, PluginError> {
        match self.call(Method::Capabilities, None, Some(json!({}))).await {
            Ok(obj) => Ok(reply::scope(&obj)),
            Err(e) if e.is_driver_answer() => Ok(Scope::Local),
            Err(e) => Err(e),
        }
    }

    /// One call: the reply object of a successful reply, or a typed error; observed when asked.
    async fn call(
        &self,
        method: Method,
        volume: Option<&str>,
        body: Option<Value>,
    ) -> Result<Map<String, Value>, PluginError> {
        let started = std::time::Instant::now();
        let result = self.call_unobserved(method, volume, body).await;
        if let Some(o) = &self.observer {
            o.observe(method, started.elapsed(), result.is_ok());
        }
        result
    }

    async fn call_unobserved(
        &self,
        method: Method,
        volume: Option<&str>,
        body: Option<Value>,
    ) -> Result<Map<String, Value>, PluginError> {
        let timeout = match method {
            Method::Create | Method::Mount => self.timeouts.long,
            _ => self.timeouts.short,
        };
        let err = |kind| PluginError {
            method,
            volume: volume.map(str::to_string),
            kind,
        };
        let payload = match body {
            // The engine sends a trailing newline; some plugins read line by line.
            Some(v) => format!("{v}\n"),
            None => String::new(),
        };
        let exchange = self.exchange(method, payload);
        let (status, bytes) = match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(r)) => r,
            Ok(Err(kind)) => return Err(err(kind)),
            Err(_) => return Err(err(PluginErrorKind::Timeout(timeout))),
        };
        reply::object(status, &bytes).map_err(err)
    }

    /// One request and its whole reply body. The request has the engine's shape: `POST /<Method>`,
    /// `Accept: application/vnd.docker.plugins.v1.2+json`, no content type, `Host: localhost` over a
    /// unix socket (a placeholder: the socket names the plugin) or the plugin's `host:port` over TCP.
    async fn exchange(
        &self,
        method: Method,
        payload: String,
    ) -> Result<(u16, Bytes), PluginErrorKind> {
        let path = format!("/{}", method.name());
        let (uri, host): (http::Uri, &str) = match &*self.addr {
            PluginAddr::Unix(socket) => {
                // hyperlocal carries the path in the URI and panics on one too long for it.
                if socket.as_os_str().len() > MAX_SOCKET_PATH {
                    return Err(PluginErrorKind::Unreachable(format!(
                        "{}: longer than a unix socket path may be ({MAX_SOCKET_PATH} bytes)",
                        socket.display()
                    )));
                }
                (hyperlocal::Uri::new(socket, &path).into(), "localhost")
            }
            PluginAddr::Tcp(hostport) => {
                let uri = format!("http://{hostport}{path}")
                    .parse()
                    .map_err(|e| PluginErrorKind::Unreachable(format!("{hostport}: {e}")))?;
                (uri, hostport)
            }
        };
        let payload = Bytes::from(payload);
        let mut stale = 0;
        let resp = loop {
            let req = http::Request::post(uri.clone())
                .header(http::header::HOST, host)
                .header(
                    http::header::ACCEPT,
                    "application/vnd.docker.plugins.v1.2+json",
                )
                .body(Full::new(payload.clone()))
                .map_err(|e| PluginErrorKind::Transport(e.to_string()))?;
            let sent = match &self.pool {
                Pool::Unix(client) => client.request(req).await,
                Pool::Tcp(client) => client.request(req).await,
            };
            match sent {
                Ok(resp) => break resp,
                // The plugin had closed this pooled connection (it restarted) before the client noticed:
                // writing to it failed, so the plugin cannot have read the whole request. Each retry takes
                // another connection; every stale one is discarded.
                Err(e) if stale < POOL_MAX_IDLE && broken_pipe(&e) => stale += 1,
                Err(e) => return Err(self.request_error(&e)),
            }
        };
        let status = resp.status().as_u16();
        let limit = self.timeouts.max_reply_bytes;
        let body = Limited::new(resp.into_body(), limit)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    PluginErrorKind::TooLarge { limit }
                } else {
                    PluginErrorKind::Transport(e.to_string())
                }
            })?;
        Ok((status, body.to_bytes()))
    }

    /// A failed connect never reached the plugin; anything later may have.
    fn request_error(&self, e: &hyper_util::client::legacy::Error) -> PluginErrorKind {
        // The client's own message only names the stage ("client error (Connect)"); the causes say why.
        let mut causes: Vec<String> = causes(e).map(ToString::to_string).collect();
        causes.dedup();
        if e.is_connect() {
            let why = causes.last().cloned().unwrap_or_else(|| e.to_string());
            let at = match &*self.addr {
                PluginAddr::Unix(socket) => socket.display().to_string(),
                PluginAddr::Tcp(hostport) => hostport.clone(),
            };
            PluginErrorKind::Unreachable(format!("{at}: {why}"))
        } else if causes.is_empty() {
            PluginErrorKind::Transport(e.to_string())
        } else {
            PluginErrorKind::Transport(causes.join(": "))
        }
    }
}

/// What caused `e`, outermost first.
fn causes(
    e: &hyper_util::client::legacy::Error,
) -> impl Iterator<Item = &(dyn std::error::Error + 'static)> {
    std::iter::successors(e.source(), |&c| c.source())
}

/// The write failed because the peer had closed the connection.
fn broken_pipe(e: &hyper_util::client::legacy::Error) -> bool {
    causes(e).any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn error(method: Method, volume: Option<&str>, kind: PluginErrorKind) -> PluginError {
    PluginError {
        method,
        volume: volume.map(str::to_string),
        kind,
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicUsize, Ordering};

    use hyper_util::rt::TokioIo;
    use tokio::net::UnixListener;
    use tokio::task::JoinSet;

    use super::*;

    /// A plugin on a unix socket that answers every call with `{}` and counts the connections it accepted.
    /// Dropping it closes the listener and every connection at once, like a killed process.
    struct TestPlugin {
        accepted: Arc<AtomicUsize>,
        tasks: JoinSet<()>,
    }

    impl TestPlugin {
        fn start(socket: &Path) -> std::io::Result<TestPlugin> {
            let listener = UnixListener::bind(socket)?;
            let accepted = Arc::new(AtomicUsize::new(0));
            let count = accepted.clone();
            let mut tasks = JoinSet::new();
            tasks.spawn(async move {
                // The connections live in this set, so aborting the accept loop closes them too.
                let mut conns = JoinSet::new();
                while let Ok((stream, _)) = listener.accept().await {
                    count.fetch_add(1, Ordering::SeqCst);
                    conns.spawn(async move {
                        let svc = hyper::service::service_fn(|_req| async {
                            Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(
                                b"{}",
                            ))))
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
            });
            Ok(TestPlugin { accepted, tasks })
        }

        async fn kill(mut self, socket: &Path) -> std::io::Result<()> {
            self.tasks.shutdown().await;
            std::fs::remove_file(socket)
        }
    }

    #[tokio::test]
    async fn sequential_calls_share_pooled_connections() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let socket = dir.path().join("p.sock");
        let plugin = TestPlugin::start(&socket)?;
        let client = PluginClient::new(PluginAddr::Unix(socket.clone()));
        let calls = 10;
        for _ in 0..calls {
            client.capabilities().await?;
        }
        let accepted = plugin.accepted.load(Ordering::SeqCst);
        assert!(
            (1..calls).contains(&accepted),
            "{accepted} connections for {calls} calls"
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_restarted_plugin_is_reached_without_waiting_for_a_timeout()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let socket = dir.path().join("p.sock");
        let plugin = TestPlugin::start(&socket)?;
        // Long timeouts: a call stuck on a dead pooled connection would hang the test, not pass it.
        let client = PluginClient::new(PluginAddr::Unix(socket.clone()));
        client.capabilities().await?;
        plugin.kill(&socket).await?;
        let restarted = TestPlugin::start(&socket)?;
        let first = client.get("v").await;
        let second = client.get("v").await;
        assert!(
            first.as_ref().is_ok_and(Option::is_none),
            "first call after the restart: {first:?}"
        );
        assert!(second.is_ok_and(|v| v.is_none()));
        assert!(restarted.accepted.load(Ordering::SeqCst) >= 1);
        Ok(())
    }

    #[tokio::test]
    async fn a_missing_socket_is_unreachable() {
        let client = PluginClient::new(PluginAddr::Unix("/nonexistent/p.sock".into()));
        let e = client.get("v").await.expect_err("no socket");
        assert_eq!(
            e.kind,
            PluginErrorKind::Unreachable(
                "/nonexistent/p.sock: No such file or directory (os error 2)".into()
            )
        );
        let long = PathBuf::from(format!("/{}", "x".repeat(200)));
        let e = PluginClient::new(PluginAddr::Unix(long))
            .get("v")
            .await
            .expect_err("path too long");
        assert!(matches!(e.kind, PluginErrorKind::Unreachable(m) if m.contains("longer than")));
    }

    /// The window a restart leaves: the plugin closed a pooled connection but the client has not yet seen
    /// it (its runtime is kept busy here, as on a loaded machine). The call must still reach the new plugin.
    #[tokio::test]
    async fn a_pooled_connection_closed_unnoticed_is_not_used_for_the_call()
    -> Result<(), Box<dyn std::error::Error>> {
        use std::io::{Read, Write};
        use std::os::unix::net::UnixListener;
        use std::sync::mpsc;

        fn serve_one(listener: &UnixListener) -> std::io::Result<std::os::unix::net::UnixStream> {
            let (mut s, _) = listener.accept()?;
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf)?;
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")?;
            Ok(s)
        }

        let dir = tempfile::tempdir()?;
        let socket = dir.path().join("p.sock");
        let listener = UnixListener::bind(&socket)?;
        let (restart_tx, restart_rx) = mpsc::channel::<()>();
        let (restarted_tx, restarted_rx) = mpsc::channel::<std::io::Result<()>>();
        let path = socket.clone();
        let plugin = std::thread::spawn(move || -> std::io::Result<()> {
            let kept_alive = serve_one(&listener)?;
            let _ = restart_rx.recv();
            drop((kept_alive, listener));
            let restarted = std::fs::remove_file(&path).and_then(|()| UnixListener::bind(&path));
            let listener = match restarted {
                Ok(l) => {
                    let _ = restarted_tx.send(Ok(()));
                    l
                }
                Err(e) => {
                    let _ = restarted_tx.send(Err(std::io::Error::other(e.to_string())));
                    return Err(e);
                }
            };
            serve_one(&listener).map(drop)
        });
        let client = PluginClient::new(PluginAddr::Unix(socket));
        client.capabilities().await?;
        // Lets the connection's task hand it back to the pool (a few turns of this one-thread runtime).
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        restart_tx.send(())?;
        // Blocking this thread keeps the runtime from seeing the connection close.
        restarted_rx.recv()??;
        let got = client.get("v").await;
        assert!(got.as_ref().is_ok_and(Option::is_none), "{got:?}");
        plugin.join().map_err(|_| "plugin thread panicked")??;
        Ok(())
    }
}
