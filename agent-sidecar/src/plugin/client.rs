//! The HTTP side of the plugin client: one short-lived HTTP/1.1 connection per call (like the engine's
//! client, so a plugin that restarts behind the same socket is picked up at once), a timeout over the whole
//! call, and a reply size bound.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncRead, AsyncWrite};

use super::reply::{self, Parsed, Scope, Volume, field, kind};
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

/// Told the method, duration and success of every call (for metrics). Must be cheap: it runs inline.
pub trait CallObserver: Send + Sync + std::fmt::Debug {
    fn observe(&self, method: Method, elapsed: Duration, ok: bool);
}

/// A client of one volume plugin. Cheap to clone; safe to use from many tasks at once.
#[derive(Debug, Clone)]
pub struct PluginClient {
    addr: Arc<PluginAddr>,
    timeouts: Timeouts,
    observer: Option<Arc<dyn CallObserver>>,
}

impl PluginClient {
    /// A client with the default timeouts.
    pub fn new(addr: PluginAddr) -> Self {
        Self::with_timeouts(addr, Timeouts::default())
    }

    pub fn with_timeouts(addr: PluginAddr, timeouts: Timeouts) -> Self {
        PluginClient {
            addr: Arc::new(addr),
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
            timeouts: t,
            observer: self.observer.clone(),
        }
    }

    /// `/Plugin.Activate`: the interfaces the plugin implements. Fails unless it includes `VolumeDriver`.
    pub async fn activate(&self) -> Result<Vec<String>, PluginError> {
        let m = Method::Activate;
        let obj = self.call(m, None, None).await?;
        let implements = match field(&obj, "Implements") {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            None | Some(Value::Null) => Vec::new(),
            Some(other) => {
                return Err(bad(
                    m,
                    None,
                    format!("Implements should be an array, got {}", kind(other)),
                ));
            }
        };
        if !implements
            .iter()
            .any(|i| i.eq_ignore_ascii_case("VolumeDriver"))
        {
            return Err(PluginError {
                method: m,
                volume: None,
                kind: PluginErrorKind::NotAVolumeDriver(implements),
            });
        }
        Ok(implements)
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
        let mp = reply::opt_string(&obj, "Mountpoint").map_err(|e| bad(m, Some(name), e))?;
        match mp {
            Some(p) if !p.is_empty() => Ok(p),
            _ => Err(bad(
                m,
                Some(name),
                "no Mountpoint in a successful reply".into(),
            )),
        }
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
        let mp = reply::opt_string(&obj, "Mountpoint").map_err(|e| bad(m, Some(name), e))?;
        Ok(mp.filter(|p| !p.is_empty()))
    }

    /// `/VolumeDriver.Get`: `None` for `{"Volume":null}` (no such volume). Drivers that answer a missing
    /// volume with an error produce `Err` (see [`PluginError::is_not_found`]).
    pub async fn get(&self, name: &str) -> Result<Option<Volume>, PluginError> {
        let m = Method::Get;
        let obj = self
            .call(m, Some(name), Some(json!({"Name": name})))
            .await?;
        match field(&obj, "Volume") {
            None | Some(Value::Null) => Ok(None),
            Some(v) => reply::volume(v)
                .map(Some)
                .map_err(|e| bad(m, Some(name), e)),
        }
    }

    /// `/VolumeDriver.List`.
    pub async fn list(&self) -> Result<Vec<Volume>, PluginError> {
        let m = Method::List;
        let obj = self.call(m, None, Some(json!({}))).await?;
        match field(&obj, "Volumes") {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(reply::volume)
                .collect::<Result<_, _>>()
                .map_err(|e| bad(m, None, e)),
            Some(other) => Err(bad(
                m,
                None,
                format!("Volumes should be an array, got {}", kind(other)),
            )),
        }
    }

    /// `/VolumeDriver.Capabilities`: the scope. An error reply, an empty or unknown scope all mean `Local`
    /// (as in the engine); only transport failures and timeouts are errors.
    pub async fn capabilities(&self) -> Result<Scope, PluginError> {
        let obj = match self.call(Method::Capabilities, None, Some(json!({}))).await {
            Ok(obj) => obj,
            Err(e) if e.is_driver_answer() => return Ok(Scope::Local),
            Err(e) => return Err(e),
        };
        let scope = match field(&obj, "Capabilities") {
            Some(Value::Object(caps)) => field(caps, "Scope")
                .and_then(Value::as_str)
                .unwrap_or_default(),
            _ => "",
        };
        Ok(if scope.trim().eq_ignore_ascii_case("global") {
            Scope::Global
        } else {
            Scope::Local
        })
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
        match reply::parse(status, &bytes) {
            Parsed::Ok(obj) => Ok(obj),
            Parsed::Err(message) => Err(err(PluginErrorKind::Driver { status, message })),
            Parsed::Bad(why) => Err(err(PluginErrorKind::BadReply(why))),
        }
    }

    async fn exchange(
        &self,
        method: Method,
        payload: String,
    ) -> Result<(u16, Bytes), PluginErrorKind> {
        match &*self.addr {
            PluginAddr::Unix(path) => {
                let stream = tokio::net::UnixStream::connect(path).await.map_err(|e| {
                    PluginErrorKind::Unreachable(format!("{}: {e}", path.display()))
                })?;
                self.send(stream, "localhost", method, payload).await
            }
            PluginAddr::Tcp(hostport) => {
                let stream = tokio::net::TcpStream::connect(hostport.as_str())
                    .await
                    .map_err(|e| PluginErrorKind::Unreachable(format!("{hostport}: {e}")))?;
                self.send(stream, hostport, method, payload).await
            }
        }
    }

    async fn send<S>(
        &self,
        stream: S,
        host: &str,
        method: Method,
        payload: String,
    ) -> Result<(u16, Bytes), PluginErrorKind>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let transport = |e: hyper::Error| PluginErrorKind::Transport(e.to_string());
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| PluginErrorKind::Unreachable(e.to_string()))?;
        // The connection task ends when the exchange is done or the caller's timeout drops it.
        let conn_task = tokio::spawn(async move {
            let _ = conn.await;
        });
        let _abort = AbortOnDrop(conn_task);
        let req = http::Request::post(format!("/{}", method.name()))
            .header(http::header::HOST, host)
            .header(
                http::header::ACCEPT,
                "application/vnd.docker.plugins.v1.2+json",
            )
            .body(Full::new(Bytes::from(payload)))
            .map_err(|e| PluginErrorKind::Transport(e.to_string()))?;
        let resp = sender.send_request(req).await.map_err(transport)?;
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
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn bad(method: Method, volume: Option<&str>, why: String) -> PluginError {
    PluginError {
        method,
        volume: volume.map(str::to_string),
        kind: PluginErrorKind::BadReply(why),
    }
}
