//! A small client of the Docker engine HTTP API (v1.41, Docker 20.10) over its unix socket: just the
//! container and volume calls the emulator's `docker` launcher and the Docker-tier tests need. Errors
//! carry the engine's own `message`, since that is what an operator (or a TASK_FAILED) must show.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyperlocal::{UnixClientExt as _, UnixConnector};
use serde_json::{Value, json};

/// The API version every request is pinned to (Docker 20.10), so a newer engine answers the same way.
pub const API_VERSION: &str = "v1.41";

/// The engine's default socket.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// Bound on ordinary calls; `wait` is a long poll and has none.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("docker engine at {socket}: {op}: {message}")]
    Transport {
        socket: PathBuf,
        op: String,
        message: String,
    },
    #[error("docker engine: {op}: HTTP {status}: {message}")]
    Api {
        op: String,
        status: u16,
        message: String,
    },
}

impl EngineError {
    /// The HTTP status the engine answered, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            EngineError::Api { status, .. } => Some(*status),
            EngineError::Transport { .. } => None,
        }
    }

    /// The engine's message (or the transport failure) without the call context.
    pub fn message(&self) -> &str {
        match self {
            EngineError::Api { message, .. } | EngineError::Transport { message, .. } => message,
        }
    }
}

/// One container of `GET /containers/json`.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSummary {
    pub id: String,
    pub names: Vec<String>,
    pub state: String,
}

/// A connection pool to one engine socket.
#[derive(Clone)]
pub struct DockerEngine {
    socket: PathBuf,
    client: Client<UnixConnector, Full<Bytes>>,
}

impl std::fmt::Debug for DockerEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerEngine")
            .field("socket", &self.socket)
            .finish()
    }
}

impl DockerEngine {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        DockerEngine {
            socket: socket.into(),
            client: Client::unix(),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends one call; returns the status and body, or the engine's error message for 4xx/5xx.
    async fn call(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<&Value>,
        timeout: Option<Duration>,
    ) -> Result<(u16, Bytes), EngineError> {
        let op = format!("{method} {path_and_query}");
        let transport = |message: String| EngineError::Transport {
            socket: self.socket.clone(),
            op: op.clone(),
            message,
        };
        let uri: http::Uri =
            hyperlocal::Uri::new(&self.socket, &format!("/{API_VERSION}{path_and_query}")).into();
        let mut req = Request::builder().method(method.clone()).uri(uri);
        let payload = match body {
            Some(v) => {
                req = req.header(http::header::CONTENT_TYPE, "application/json");
                Bytes::from(v.to_string())
            }
            None => Bytes::new(),
        };
        let req = req
            .body(Full::new(payload))
            .map_err(|e| transport(e.to_string()))?;
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| transport(format!("{e:#}")))?;
            let status = resp.status().as_u16();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| transport(e.to_string()))?
                .to_bytes();
            Ok::<_, EngineError>((status, bytes))
        };
        let (status, bytes) = match timeout {
            Some(t) => tokio::time::timeout(t, exchange)
                .await
                .map_err(|_| transport(format!("no answer within {t:?}")))??,
            None => exchange.await?,
        };
        if status >= 400 {
            let message = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).trim().to_owned());
            return Err(EngineError::Api {
                op,
                status,
                message,
            });
        }
        Ok((status, bytes))
    }

    async fn call_json(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, EngineError> {
        let (_, bytes) = self.call(method, path, body, Some(CALL_TIMEOUT)).await?;
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| EngineError::Transport {
            socket: self.socket.clone(),
            op: path.to_owned(),
            message: format!("bad JSON from the engine: {e}"),
        })
    }

    /// `GET /_ping`.
    pub async fn ping(&self) -> Result<(), EngineError> {
        self.call(Method::GET, "/_ping", None, Some(Duration::from_secs(5)))
            .await
            .map(drop)
    }

    /// `POST /containers/create`; returns the new container's id.
    pub async fn create_container(
        &self,
        name: &str,
        config: &Value,
    ) -> Result<String, EngineError> {
        let v = self
            .call_json(
                Method::POST,
                &format!("/containers/create?name={}", encode(name)),
                Some(config),
            )
            .await?;
        v.get("Id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| EngineError::Transport {
                socket: self.socket.clone(),
                op: "create container".into(),
                message: format!("no Id in {v}"),
            })
    }

    pub async fn start_container(&self, id: &str) -> Result<(), EngineError> {
        self.call_json(Method::POST, &format!("/containers/{id}/start"), None)
            .await
            .map(drop)
    }

    /// Blocks until the container is not running; returns its exit code.
    pub async fn wait_container(&self, id: &str) -> Result<i64, EngineError> {
        let (_, bytes) = self
            .call(
                Method::POST,
                &format!("/containers/{id}/wait?condition=not-running"),
                None,
                None,
            )
            .await?;
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if let Some(m) = v.pointer("/Error/Message").and_then(Value::as_str)
            && !m.is_empty()
        {
            return Err(EngineError::Api {
                op: format!("wait {id}"),
                status: 200,
                message: m.to_owned(),
            });
        }
        Ok(v.get("StatusCode").and_then(Value::as_i64).unwrap_or(-1))
    }

    /// `POST /containers/{id}/pause`: every process of the container stops where it is (the cgroup
    /// freezer), as on a machine cut off by a partition.
    pub async fn pause_container(&self, id: &str) -> Result<(), EngineError> {
        self.call_json(Method::POST, &format!("/containers/{id}/pause"), None)
            .await
            .map(drop)
    }

    /// `POST /containers/{id}/unpause`.
    pub async fn unpause_container(&self, id: &str) -> Result<(), EngineError> {
        self.call_json(Method::POST, &format!("/containers/{id}/unpause"), None)
            .await
            .map(drop)
    }

    /// SIGTERM, then SIGKILL after `grace` (whole seconds, rounded up). Stopping a stopped container is
    /// not an error.
    pub async fn stop_container(&self, id: &str, grace: Duration) -> Result<(), EngineError> {
        let t = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
        match self
            .call(
                Method::POST,
                &format!("/containers/{id}/stop?t={t}"),
                None,
                Some(CALL_TIMEOUT + grace),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.status() == Some(304) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Force-removes a container (anonymous volumes too, never named ones). A missing one is not an error.
    pub async fn remove_container(&self, id: &str) -> Result<(), EngineError> {
        match self
            .call_json(
                Method::DELETE,
                &format!("/containers/{id}?force=true&v=true"),
                None,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.status() == Some(404) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The last `lines` lines of the container's output, for a failure message. Empty when unavailable.
    pub async fn logs_tail(&self, id: &str, lines: u32) -> String {
        let Ok((_, bytes)) = self
            .call(
                Method::GET,
                &format!("/containers/{id}/logs?stdout=true&stderr=true&tail={lines}"),
                None,
                Some(CALL_TIMEOUT),
            )
            .await
        else {
            return String::new();
        };
        demux_logs(&bytes)
    }

    /// Every container (running or not) carrying label `key=value`.
    pub async fn containers_labelled(
        &self,
        key: &str,
        value: &str,
    ) -> Result<Vec<ContainerSummary>, EngineError> {
        let filters = json!({ "label": [format!("{key}={value}")] }).to_string();
        let v = self
            .call_json(
                Method::GET,
                &format!("/containers/json?all=true&filters={}", encode(&filters)),
                None,
            )
            .await?;
        Ok(v.as_array()
            .into_iter()
            .flatten()
            .map(|c| ContainerSummary {
                id: c["Id"].as_str().unwrap_or_default().to_owned(),
                names: c["Names"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect(),
                state: c["State"].as_str().unwrap_or_default().to_owned(),
            })
            .collect())
    }

    /// `GET /volumes/{name}`: `None` when the engine does not know the volume.
    pub async fn inspect_volume(&self, name: &str) -> Result<Option<Value>, EngineError> {
        match self
            .call_json(Method::GET, &format!("/volumes/{}", encode(name)), None)
            .await
        {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Names of the volumes of one driver. Asks only that driver: a lookup by name asks every driver the
    /// engine has ever used, and each one whose socket is gone costs ~15 s of retries.
    pub async fn volumes_of_driver(&self, driver: &str) -> Result<Vec<String>, EngineError> {
        let filters = json!({ "driver": [driver] }).to_string();
        let v = self
            .call_json(
                Method::GET,
                &format!("/volumes?filters={}", encode(&filters)),
                None,
            )
            .await?;
        Ok(v["Volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x["Name"].as_str().map(str::to_owned))
            .collect())
    }

    /// `DELETE /volumes/{name}` (the driver's Remove runs). A missing volume is not an error.
    pub async fn remove_volume(&self, name: &str) -> Result<(), EngineError> {
        match self
            .call_json(Method::DELETE, &format!("/volumes/{}", encode(name)), None)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.status() == Some(404) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Percent-encodes a query or path component.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A container without a TTY streams its output as frames of `[stream, 0, 0, 0, len(4, BE)]` + payload.
fn demux_logs(bytes: &[u8]) -> String {
    let mut out = Vec::new();
    let mut rest = bytes;
    while rest.len() >= 8 {
        let len = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
        let end = (8 + len).min(rest.len());
        out.extend_from_slice(&rest[8..end]);
        rest = &rest[end..];
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_filters() {
        assert_eq!(encode("a=b c/\"d\""), "a%3Db%20c%2F%22d%22");
    }

    #[test]
    fn demuxes_framed_logs() {
        let mut b = vec![1, 0, 0, 0, 0, 0, 0, 3];
        b.extend_from_slice(b"hi\n");
        b.extend_from_slice(&[2, 0, 0, 0, 0, 0, 0, 4]);
        b.extend_from_slice(b"err\n");
        assert_eq!(demux_logs(&b), "hi\nerr\n");
    }
}
