//! Helpers for tests that run stand-ins: a sandbox standing in for the process launcher's, in-process
//! nodes with their own environment, a test PKI, and an HTTP(S) client with basic auth.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::certs::Ca;
use super::container::EMU_ROOTFS_ENV;
use super::image::TASK_IMAGE_ENV;
use super::{Args, Bound, StandinError, run_with_env};

/// A task sandbox as the process launcher makes it (mode 0755), removed when dropped.
#[derive(Debug)]
pub struct Sandbox {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sandbox");
        std::fs::create_dir(&path).expect("sandbox");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        Sandbox { _dir: dir, path }
    }

    /// The environment the process launcher gives a task of `image`, plus `vars`.
    pub fn env(&self, image: &str, vars: &[(&str, &str)]) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        env.insert(EMU_ROOTFS_ENV.to_owned(), self.path.display().to_string());
        env.insert("MESOS_SANDBOX".to_owned(), self.path.display().to_string());
        env.insert(TASK_IMAGE_ENV.to_owned(), image.to_owned());
        for (k, v) in vars {
            env.insert((*k).to_owned(), (*v).to_owned());
        }
        env
    }

    /// The host path of a path in the task's own layer.
    pub fn layer(&self, container_path: &str) -> PathBuf {
        self.path.join(container_path.trim_start_matches('/'))
    }

    /// A directory in the sandbox, owned by `uid:gid` with `mode` (a volume as a plugin would mount it).
    pub fn volume(&self, name: &str, uid: u32, gid: u32, mode: u32) -> PathBuf {
        let p = self.path.join("volumes").join(name);
        std::fs::create_dir_all(&p).expect("volume dir");
        std::fs::set_permissions(
            self.path.join("volumes"),
            std::fs::Permissions::from_mode(0o755),
        )
        .expect("chmod");
        std::os::unix::fs::chown(&p, Some(uid), Some(gid)).expect("chown (tests run as root)");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
        p
    }
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox::new()
    }
}

/// A stand-in running in this process.
#[derive(Debug)]
pub struct Running {
    pub bound: Bound,
    token: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), StandinError>>,
}

impl Running {
    pub fn http_url(&self, scheme: &str) -> String {
        format!("{scheme}://{}", self.bound.http)
    }

    /// Stops the node (as SIGTERM would) and waits for it.
    pub async fn stop(self) {
        self.token.cancel();
        let _ = self.task.await;
    }
}

/// Starts a node with `env` and `-E` `settings`; the error when it refuses to start.
pub async fn start(
    env: BTreeMap<String, String>,
    settings: &[&str],
) -> Result<Running, StandinError> {
    let args = Args {
        settings: settings.iter().map(|s| (*s).to_owned()).collect(),
        log_format: tether_telemetry::LogFormat::Text,
    };
    let token = CancellationToken::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let run_token = token.clone();
    let mut task = tokio::spawn(async move {
        run_with_env(env, args, run_token, move |b| {
            let _ = tx.send(b);
        })
        .await
    });
    tokio::select! {
        bound = rx => match bound {
            Ok(bound) => Ok(Running { bound, token, task }),
            Err(_) => Err(task.await.expect("stand-in task").expect_err("stopped before binding")),
        },
        r = &mut task => Err(r.expect("stand-in task").expect_err("returned before binding")),
    }
}

/// A test PKI: a CA and certificates for nodes, written as PEM files under a directory.
#[derive(Debug)]
pub struct Pki {
    pub ca: Ca,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        Pki {
            ca: Ca::new(name).expect("CA"),
        }
    }

    /// Writes `ca.crt`, `node.crt` and `node.key` (SANs `sans`) into `dir`, readable by uid 1000 gid 0.
    pub fn write_node(&self, dir: &Path, common_name: &str, sans: &[&str]) {
        let sans: Vec<String> = sans.iter().map(|s| (*s).to_owned()).collect();
        let leaf = self.ca.leaf(common_name, &sans).expect("leaf");
        self.write_files(dir, &self.ca.cert_pem, &leaf.cert_pem, &leaf.key_pem);
    }

    /// Writes `ca.crt` from this PKI but a node certificate from `other` (a certificate the cluster's CA
    /// did not sign).
    pub fn write_foreign_node(&self, other: &Pki, dir: &Path, common_name: &str, sans: &[&str]) {
        let sans: Vec<String> = sans.iter().map(|s| (*s).to_owned()).collect();
        let leaf = other.ca.leaf(common_name, &sans).expect("leaf");
        self.write_files(dir, &self.ca.cert_pem, &leaf.cert_pem, &leaf.key_pem);
    }

    fn write_files(&self, dir: &Path, ca: &str, cert: &str, key: &str) {
        std::fs::create_dir_all(dir).expect("cert dir");
        for (name, body) in [("ca.crt", ca), ("node.crt", cert), ("node.key", key)] {
            let p = dir.join(name);
            std::fs::write(&p, body).expect("write");
            std::os::unix::fs::chown(&p, Some(1000), Some(0)).expect("chown");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        }
        std::os::unix::fs::chown(dir, Some(1000), Some(0)).expect("chown");
    }

    /// The `-E` settings of transport TLS with the files [`Pki::write_node`] wrote to `dir`.
    pub fn transport_settings(dir: &Path, mode: &str) -> Vec<String> {
        let d = dir.display();
        vec![
            "xpack.security.transport.ssl.enabled=true".to_owned(),
            format!("xpack.security.transport.ssl.verification_mode={mode}"),
            format!("xpack.security.transport.ssl.key={d}/node.key"),
            format!("xpack.security.transport.ssl.certificate={d}/node.crt"),
            format!("xpack.security.transport.ssl.certificate_authorities={d}/ca.crt"),
        ]
    }
}

/// One HTTP(S) JSON request: `auth` as basic credentials, `ca_pem` to trust for https.
pub async fn request(
    method: &str,
    url: &str,
    body: Option<&Value>,
    auth: Option<(&str, &str)>,
    ca_pem: Option<&str>,
) -> Result<(u16, Value), String> {
    use base64::Engine as _;
    let uri: http::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let authority = uri.authority().ok_or("no authority")?.to_string();
    let tcp = tokio::net::TcpStream::connect(&authority)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let mut req = http::Request::builder()
        .method(method)
        .uri(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
        .header("host", &authority)
        .header("content-type", "application/json");
    if let Some((u, p)) = auth {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
        req = req.header("authorization", format!("Basic {token}"));
    }
    let req = req
        .body(Full::new(Bytes::from(
            body.map(|b| b.to_string()).unwrap_or_default(),
        )))
        .map_err(|e| e.to_string())?;
    let resp = if uri.scheme_str() == Some("https") {
        let mut roots = rustls::RootCertStore::empty();
        use rustls::pki_types::pem::PemObject as _;
        for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.unwrap_or("").as_bytes())
        {
            roots
                .add(c.map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let host = uri.host().unwrap_or("localhost").to_owned();
        let name = rustls::pki_types::ServerName::try_from(host).map_err(|e| e.to_string())?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("{url}: TLS: {e}"))?;
        send(TokioIo::new(tls), req).await?
    } else {
        send(TokioIo::new(tcp), req).await?
    };
    Ok(resp)
}

async fn send<S>(io: S, req: http::Request<Full<Bytes>>) -> Result<(u16, Value), String>
where
    S: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let resp = tokio::time::timeout(Duration::from_secs(120), sender.send_request(req))
        .await
        .map_err(|_| "no answer".to_owned())?
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    ))
}
