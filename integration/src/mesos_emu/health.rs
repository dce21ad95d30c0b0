//! The agent's health checking of a task, as Mesos does it (apache/mesos `src/checks/health_checker.cpp`
//! and the command/docker executors' handling of its verdicts):
//!
//! - the first check runs `delay_seconds` after the task started, the next `interval_seconds` after each
//!   result; a check not done within `timeout_seconds` fails (0: no timeout);
//! - HTTP: `curl -k -L` of `<scheme>://127.0.0.1:<port><path>` (scheme default `http`, no certificate
//!   verification); any code in [200, 400) passes. TCP: a connection to `127.0.0.1:<port>`;
//! - a failure while the task has never passed a check and is still within `grace_period_seconds` of its
//!   start is ignored; every other failure counts, and each sends an unhealthy verdict (TASK_RUNNING with
//!   `healthy=false`); the first success, and the first after failures, sends a healthy one;
//! - when the consecutive failures reach `consecutive_failures` the verdict says `kill_task`: the executor
//!   kills the task: TASK_KILLING first (the master passes it on only to a framework with
//!   TASK_KILLING_STATE), then SIGTERM, SIGKILL after the kill policy's grace, and its TASK_KILLED carries
//!   `healthy=false`. Checking goes on until the task is killed.
//!
//! Defaults (mesos.proto): delay 15 s, interval 10 s, timeout 20 s, 3 consecutive failures, grace 10 s.
//! A COMMAND check is not run: the emulator has no container to run it in (and Tether's images have no
//! shell); such a task is never judged.
//!
//! The emulator's tasks run on the host, bound to their agent's address rather than in a network
//! namespace of their own, so "127.0.0.1" here is the agent's host address.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tether_mesos::model::{HealthCheck, HealthCheckType};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// When and how often to check, and when to give up on a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub delay: Duration,
    pub interval: Duration,
    /// `None`: a check may take forever (`timeout_seconds: 0`).
    pub timeout: Option<Duration>,
    pub consecutive_failures: u32,
    pub grace: Duration,
}

fn seconds(v: Option<f64>, default: f64) -> Duration {
    Duration::from_secs_f64(v.unwrap_or(default).max(0.0))
}

impl Policy {
    /// The policy of `check`, with Mesos's defaults for what it leaves out.
    pub fn of(check: &HealthCheck) -> Policy {
        let timeout = seconds(check.timeout_seconds, 20.0);
        Policy {
            delay: seconds(check.delay_seconds, 15.0),
            interval: seconds(check.interval_seconds, 10.0),
            timeout: (!timeout.is_zero()).then_some(timeout),
            consecutive_failures: check.consecutive_failures.unwrap_or(3),
            grace: seconds(check.grace_period_seconds, 10.0),
        }
    }
}

/// What the checker tells the executor (`TaskHealthStatus`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub healthy: bool,
    pub consecutive_failures: u32,
    /// The failures reached `consecutive_failures`: the executor kills the task.
    pub kill_task: bool,
    /// Why the last check failed.
    pub message: Option<String>,
}

/// The checker's state between checks: Mesos's `initializing` and `consecutiveFailures`.
#[derive(Debug)]
pub struct Checker {
    policy: Policy,
    started: Instant,
    initializing: bool,
    consecutive: u32,
}

impl Checker {
    pub fn new(policy: Policy, started: Instant) -> Checker {
        Checker {
            policy,
            started,
            initializing: true,
            consecutive: 0,
        }
    }

    /// One check's result at `now`; the verdict to send, if any.
    pub fn observe(&mut self, now: Instant, result: Result<(), String>) -> Option<Verdict> {
        match result {
            Ok(()) => {
                let tell = self.initializing || self.consecutive > 0;
                self.initializing = false;
                self.consecutive = 0;
                tell.then_some(Verdict {
                    healthy: true,
                    consecutive_failures: 0,
                    kill_task: false,
                    message: None,
                })
            }
            Err(message) => {
                let in_grace = self.initializing
                    && !self.policy.grace.is_zero()
                    && now.duration_since(self.started) <= self.policy.grace;
                if in_grace {
                    return None;
                }
                self.consecutive += 1;
                Some(Verdict {
                    healthy: false,
                    consecutive_failures: self.consecutive,
                    kill_task: self.consecutive >= self.policy.consecutive_failures,
                    message: Some(message),
                })
            }
        }
    }
}

/// Checks with `probe` on `policy`'s schedule from now on, sending every verdict to `verdicts`, until the
/// receiver is gone. (The executor stops checking once it kills the task; dropping the receiver, or
/// aborting this future, is that.)
pub async fn run<F, Fut>(policy: Policy, mut probe: F, verdicts: mpsc::UnboundedSender<Verdict>)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let mut checker = Checker::new(policy, Instant::now());
    tokio::time::sleep(policy.delay).await;
    loop {
        let result = match policy.timeout {
            Some(t) => tokio::time::timeout(t, probe())
                .await
                .unwrap_or_else(|_| Err(format!("check has not returned after {t:?}; aborting"))),
            None => probe().await,
        };
        if let Some(v) = checker.observe(Instant::now(), result)
            && verdicts.send(v).is_err()
        {
            return;
        }
        tokio::time::sleep(policy.interval).await;
    }
}

/// What one check does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// `GET <scheme>://<host>:<port><path>`.
    Http {
        https: bool,
        host: String,
        port: u16,
        path: String,
    },
    /// A TCP connection to `<host>:<port>`.
    Tcp { host: String, port: u16 },
}

impl Probe {
    /// The probe of `check` for a task whose "localhost" is `host`; `None` for a check the emulator does
    /// not run (COMMAND) or one the master's validation would have refused.
    pub fn of(check: &HealthCheck, host: &str) -> Option<Probe> {
        let kind = check.check_type.or_else(|| {
            if check.http.is_some() {
                Some(HealthCheckType::Http)
            } else {
                None
            }
        })?;
        match kind {
            HealthCheckType::Http => {
                let h = check.http.as_ref()?;
                Some(Probe::Http {
                    https: h.scheme.as_deref() == Some("https"),
                    host: host.to_owned(),
                    port: u16::try_from(h.port).ok()?,
                    path: h.path.clone().unwrap_or_default(),
                })
            }
            HealthCheckType::Tcp => Some(Probe::Tcp {
                host: host.to_owned(),
                port: u16::try_from(check.tcp.as_ref()?.port).ok()?,
            }),
            HealthCheckType::Command | HealthCheckType::Unknown => None,
        }
    }

    /// One check: `Ok` when it passes, else why not.
    pub async fn check(&self) -> Result<(), String> {
        match self {
            Probe::Tcp { host, port } => tokio::net::TcpStream::connect((host.as_str(), *port))
                .await
                .map(drop)
                .map_err(|e| format!("TCP health check failed: {host}:{port}: {e}")),
            Probe::Http {
                https,
                host,
                port,
                path,
            } => {
                let code = http_code(*https, host, *port, path)
                    .await
                    .map_err(|e| format!("HTTP health check failed: {e}"))?;
                if (200..400).contains(&code) {
                    Ok(())
                } else {
                    Err(format!(
                        "HTTP health check failed: Unexpected HTTP response code: {code}"
                    ))
                }
            }
        }
    }
}

/// The status code of `GET path`, as `curl -k -w %{http_code}` reports it (the certificate unchecked).
async fn http_code(https: bool, host: &str, port: u16, path: &str) -> Result<u16, String> {
    use http_body_util::{BodyExt as _, Empty};
    use hyper_util::rt::TokioIo;
    let tcp = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("{host}:{port}: {e}"))?;
    let path = if path.is_empty() { "/" } else { path };
    let req = http::Request::get(path)
        .header(http::header::HOST, format!("{host}:{port}"))
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| e.to_string())?;
    async fn exchange<S>(io: S, req: http::Request<Empty<bytes::Bytes>>) -> Result<u16, String>
    where
        S: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let code = resp.status().as_u16();
        let _ = resp.into_body().collect().await;
        Ok(code)
    }
    if !https {
        return exchange(TokioIo::new(tcp), req).await;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Insecure(provider)))
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| format!("{host}: {e}"))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("{host}:{port}: TLS: {e}"))?;
    exchange(TokioIo::new(tls), req).await
}

/// `curl -k`: any server certificate is accepted (the handshake's signatures are still checked).
#[derive(Debug)]
struct Insecure(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for Insecure {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server (HTTPS with `tls`) answering like an Elasticsearch with security on: 401 on `/secure`
    /// (no credentials), 200 elsewhere. Its port.
    async fn es_like_server(tls: Option<tokio_rustls::TlsAcceptor>) -> u16 {
        use http_body_util::Full;
        use hyper::service::service_fn;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let service = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
            let code = if req.uri().path() == "/secure" {
                401
            } else {
                200
            };
            let mut r = http::Response::new(Full::new(bytes::Bytes::new()));
            *r.status_mut() = http::StatusCode::from_u16(code).expect("code");
            Ok::<_, std::convert::Infallible>(r)
        });
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let tls = tls.clone();
                tokio::spawn(async move {
                    let http = hyper::server::conn::http1::Builder::new();
                    let _ = match tls {
                        None => {
                            http.serve_connection(hyper_util::rt::TokioIo::new(s), service)
                                .await
                        }
                        Some(acceptor) => match acceptor.accept(s).await {
                            Ok(t) => {
                                http.serve_connection(hyper_util::rt::TokioIo::new(t), service)
                                    .await
                            }
                            Err(_) => return,
                        },
                    };
                });
            }
        });
        port
    }

    fn policy() -> Policy {
        Policy {
            delay: Duration::from_secs(15),
            interval: Duration::from_secs(10),
            timeout: Some(Duration::from_secs(20)),
            consecutive_failures: 3,
            grace: Duration::from_secs(30),
        }
    }

    #[test]
    fn mesos_defaults_fill_what_the_check_leaves_out() {
        let p = Policy::of(&HealthCheck::default());
        assert_eq!(
            p,
            Policy {
                delay: Duration::from_secs(15),
                interval: Duration::from_secs(10),
                timeout: Some(Duration::from_secs(20)),
                consecutive_failures: 3,
                grace: Duration::from_secs(10),
            }
        );
        let no_timeout = HealthCheck {
            timeout_seconds: Some(0.0),
            ..HealthCheck::default()
        };
        assert_eq!(Policy::of(&no_timeout).timeout, None, "0 means no timeout");
    }

    #[tokio::test(start_paused = true)]
    async fn failures_in_the_grace_period_before_a_first_success_are_ignored() {
        let start = Instant::now();
        let mut c = Checker::new(policy(), start);
        assert_eq!(
            c.observe(start + Duration::from_secs(15), Err("no".into())),
            None
        );
        assert_eq!(
            c.observe(start + Duration::from_secs(30), Err("no".into())),
            None
        );
        let v = c
            .observe(start + Duration::from_secs(31), Err("no".into()))
            .expect("past the grace period a failure counts");
        assert_eq!(
            (v.healthy, v.consecutive_failures, v.kill_task),
            (false, 1, false)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_first_success_the_grace_period_no_longer_shields() {
        let start = Instant::now();
        let mut c = Checker::new(policy(), start);
        let v = c
            .observe(start + Duration::from_secs(15), Ok(()))
            .expect("the first success is told");
        assert!(v.healthy);
        assert_eq!(
            c.observe(start + Duration::from_secs(16), Ok(())),
            None,
            "only changes are told"
        );
        let v = c
            .observe(start + Duration::from_secs(17), Err("down".into()))
            .expect("counted although within the grace period");
        assert_eq!((v.healthy, v.consecutive_failures), (false, 1));
        let v = c
            .observe(start + Duration::from_secs(18), Ok(()))
            .expect("recovery is told");
        assert!(v.healthy);
        for n in 1..=3 {
            let v = c
                .observe(start + Duration::from_secs(18 + n), Err("down".into()))
                .expect("counted");
            assert_eq!(v.consecutive_failures, n as u32);
            assert_eq!(v.kill_task, n == 3, "kill at the third consecutive failure");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_schedule_is_delay_then_interval_and_a_hung_check_times_out() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let start = Instant::now();
        let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = calls.clone();
        let policy = Policy {
            grace: Duration::ZERO,
            ..policy()
        };
        let checks = tokio::spawn(run(
            policy,
            move || {
                seen.lock().expect("lock").push(Instant::now() - start);
                // The check hangs: only the timeout ends it.
                futures::future::pending::<Result<(), String>>()
            },
            tx,
        ));
        let mut verdicts = Vec::new();
        while let Some(v) = rx.recv().await {
            let kill = v.kill_task;
            verdicts.push(v);
            if kill {
                break;
            }
        }
        drop(rx);
        checks.abort();
        let at = |s| Duration::from_secs(s);
        assert_eq!(
            *calls.lock().expect("lock"),
            [at(15), at(45), at(75)],
            "delay 15 s; each next check 10 s after the 20 s timeout ended the last"
        );
        assert_eq!(verdicts.len(), 3);
        assert!(
            verdicts[0]
                .message
                .as_deref()
                .is_some_and(|m| m.contains("has not returned")),
            "{verdicts:?}"
        );
        assert!(verdicts[2].kill_task);
    }

    /// `curl -k`: an HTTPS check passes against a certificate nobody trusts, and its code still counts.
    #[tokio::test]
    async fn an_https_check_does_not_verify_the_certificate_but_reads_the_code() {
        use rustls::pki_types::pem::PemObject as _;
        let ca = crate::es_standin::certs::Ca::new("nobody's CA").expect("CA");
        let leaf = ca.leaf("node", &["127.0.0.1".into()]).expect("leaf");
        let certs: Vec<rustls::pki_types::CertificateDer<'static>> =
            rustls::pki_types::CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .expect("cert");
        let key =
            rustls::pki_types::PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("key");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let port = es_like_server(Some(acceptor)).await;
        let https = |path: &str| Probe::Http {
            https: true,
            host: "127.0.0.1".into(),
            port,
            path: path.into(),
        };
        https("/")
            .check()
            .await
            .expect("an untrusted certificate is fine");
        let e = https("/secure").check().await.expect_err("401 fails");
        assert!(e.contains("401"), "{e}");
    }

    #[tokio::test]
    async fn probes_check_tcp_and_http_codes_as_curl_does() {
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let closed_port = closed.local_addr().expect("addr").port();
        drop(closed);
        let tcp = Probe::Tcp {
            host: "127.0.0.1".into(),
            port: closed_port,
        };
        assert!(tcp.check().await.is_err(), "nothing listens");

        let port = es_like_server(None).await;
        Probe::Tcp {
            host: "127.0.0.1".into(),
            port,
        }
        .check()
        .await
        .expect("TCP connects");
        let http = |path: &str, https| Probe::Http {
            https,
            host: "127.0.0.1".into(),
            port,
            path: path.into(),
        };
        http("/_cluster/health", false)
            .check()
            .await
            .expect("200 passes");
        let e = http("/secure", false).check().await.expect_err("401 fails");
        assert!(e.contains("401"), "{e}");
        assert!(
            http("/", true).check().await.is_err(),
            "https to a plain HTTP port fails the handshake"
        );
    }
}
