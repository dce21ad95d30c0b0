//! TLS on tether-scheduler's gRPC listener: certificates are made at test time (a CA, a server
//! certificate for localhost/127.0.0.1, a client certificate). Proves that clients trusting the CA get
//! through, plaintext and untrusting clients do not, and that with `--tls-client-ca` only clients holding a
//! CA-signed certificate are served — for a plain tonic client, tetherctl and the sidecar. Also https between
//! the Mesos client and a master (the emulator serving TLS).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tether_integration::mesos_emu::{EmuConfig, EmuHandle, EmuTls, MesosEmu};
use tether_integration::process::bin_path;
use tether_integration::testing::DEADLINE;
use tether_integration::testing::emu::{Driver, fast_client_config};
use tether_integration::testing::scheduler::Scheduler;
use tether_integration::testing::sidecar::{RunningSidecar, sidecar_args};
use tether_mesos::client::Notification;
use tether_mesos::model::EventType;
use tether_proto::v1::admin_client::AdminClient;
use tether_proto::v1::{GetClusterRequest, ListAgentsRequest};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// PEM files of one test's little PKI.
struct Pki {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    /// A sidecar's client certificate: its DNS name is the host it speaks for.
    agent_cert: PathBuf,
    agent_key: PathBuf,
    client_key: PathBuf,
    /// A client certificate from a CA the scheduler does not trust.
    rogue_cert: PathBuf,
    rogue_key: PathBuf,
}

fn new_ca(name: &str) -> (rcgen::Certificate, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::new()).expect("no names");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("self-signed CA");
    (cert, Issuer::new(params, key))
}

fn leaf(
    issuer: &Issuer<'static, KeyPair>,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let mut params =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("valid names");
    params.distinguished_name.push(DnType::CommonName, names[0]);
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, issuer).expect("signed");
    (cert.pem(), key.serialize_pem())
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ca, issuer) = new_ca("tether test CA");
        let (server_cert, server_key) = leaf(
            &issuer,
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_cert, client_key) =
            leaf(&issuer, &["tetherctl"], ExtendedKeyUsagePurpose::ClientAuth);
        let (agent_cert, agent_key) =
            leaf(&issuer, &["tls-host"], ExtendedKeyUsagePurpose::ClientAuth);
        let (_, rogue) = new_ca("someone else's CA");
        let (rogue_cert, rogue_key) =
            leaf(&rogue, &["mallory"], ExtendedKeyUsagePurpose::ClientAuth);
        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).expect("write pem");
            p
        };
        Pki {
            ca: write("ca.pem", &ca.pem()),
            server_cert: write("server.pem", &server_cert),
            server_key: write("server.key", &server_key),
            client_cert: write("client.pem", &client_cert),
            client_key: write("client.key", &client_key),
            agent_cert: write("agent.pem", &agent_cert),
            agent_key: write("agent.key", &agent_key),
            rogue_cert: write("rogue.pem", &rogue_cert),
            rogue_key: write("rogue.key", &rogue_key),
            _dir: dir,
        }
    }

    fn server_flags(&self, mutual: bool) -> Vec<String> {
        let mut flags = vec![
            "--tls-cert".to_owned(),
            s(&self.server_cert),
            "--tls-key".to_owned(),
            s(&self.server_key),
        ];
        if mutual {
            flags.extend(["--tls-client-ca".to_owned(), s(&self.ca)]);
        }
        flags
    }

    fn client_tls(&self, identity: Option<(&Path, &Path)>) -> ClientTlsConfig {
        let ca = std::fs::read(&self.ca).expect("ca");
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
        if let Some((cert, key)) = identity {
            tls = tls.identity(Identity::from_pem(
                std::fs::read(cert).expect("cert"),
                std::fs::read(key).expect("key"),
            ));
        }
        tls
    }
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn start(emu: &EmuHandle, state: &Path, flags: &[String]) -> Scheduler {
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    Scheduler::start(&emu.url(), state, &flags)
}

/// One health check through `endpoint`: the connection and the call must both succeed.
async fn health(endpoint: Endpoint) -> Result<ServingStatus, String> {
    let channel = endpoint
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    let resp = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map_err(|e| format!("check: {e:?}"))?;
    Ok(resp.into_inner().status())
}

fn https(port: u16, tls: ClientTlsConfig) -> Endpoint {
    Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
        .expect("url")
        .tls_config(tls)
        .expect("client tls")
}

/// Waits until a TLS client that is expected to work is served (the listener starts asynchronously).
async fn wait_served(sched: &mut Scheduler, endpoint: impl Fn() -> Endpoint) -> Channel {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if sched.task.is_finished() {
            let result = (&mut sched.task).await;
            panic!("the scheduler stopped: {result:?}");
        }
        let last = health(endpoint()).await;
        if last == Ok(ServingStatus::Serving) {
            return endpoint().connect().await.expect("connects again");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never served over TLS: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs tetherctl with `args`; returns (success, stdout, stderr).
async fn tetherctl(args: &[String]) -> (bool, String, String) {
    let bin = bin_path("tetherctl").unwrap_or_else(|e| panic!("{e}"));
    let out = tokio::process::Command::new(bin)
        .args(args)
        .env_clear()
        .output()
        .await
        .expect("tetherctl runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_listener_serves_clients_that_trust_its_ca_and_no_plaintext() {
    let pki = Pki::new();
    let emu = MesosEmu::start(EmuConfig::fast(1)).await.expect("emulator");
    let state = tempfile::tempdir().expect("tempdir");
    let mut sched = start(&emu, state.path(), &pki.server_flags(false));
    let port = sched.listen.port();
    let channel = wait_served(&mut sched, || https(port, pki.client_tls(None))).await;
    let cluster = AdminClient::new(channel)
        .get_cluster(GetClusterRequest {})
        .await
        .expect("admin over TLS")
        .into_inner();
    assert_eq!(cluster.framework_name, "elasticsearch");

    // Plaintext to a TLS port: no answer.
    let plain = Endpoint::from_shared(format!("http://{}", sched.listen)).expect("url");
    let refused = health(plain).await;
    assert!(
        refused.is_err(),
        "plaintext must not be served: {refused:?}"
    );
    // TLS without trusting the CA (no roots at all): the handshake fails.
    let untrusting = https(port, ClientTlsConfig::new());
    let refused = health(untrusting).await;
    assert!(
        refused.is_err(),
        "an untrusted server certificate must fail: {refused:?}"
    );
    // ... and the listener still serves good clients afterwards (failed handshakes do not kill it).
    assert_eq!(
        health(https(port, pki.client_tls(None))).await,
        Ok(ServingStatus::Serving)
    );

    // tetherctl: with --ca-cert it works; without it, one line on stderr and a non-zero exit.
    let url = format!("https://127.0.0.1:{}", sched.listen.port());
    let (ok, stdout, stderr) = tetherctl(&[
        "--scheduler".into(),
        url.clone(),
        "--ca-cert".into(),
        s(&pki.ca),
        "--output".into(),
        "json".into(),
        "status".into(),
    ])
    .await;
    assert!(ok, "tetherctl over TLS: {stderr}");
    let status: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(status["framework_name"], "elasticsearch");
    let (ok, _, stderr) = tetherctl(&["--scheduler".into(), url, "status".into()]).await;
    assert!(!ok);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--ca-cert"), "{stderr}");
    sched.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_serves_only_clients_with_a_certificate_from_the_client_ca() {
    let pki = Pki::new();
    let emu = MesosEmu::start(EmuConfig::fast(1)).await.expect("emulator");
    let state = tempfile::tempdir().expect("tempdir");
    let mut sched = start(&emu, state.path(), &pki.server_flags(true));
    let port = sched.listen.port();
    let with_cert = || {
        https(
            port,
            pki.client_tls(Some((&pki.client_cert, &pki.client_key))),
        )
    };
    let channel = wait_served(&mut sched, with_cert).await;
    AdminClient::new(channel)
        .get_cluster(GetClusterRequest {})
        .await
        .expect("admin with a client certificate");

    let refused = health(https(port, pki.client_tls(None))).await;
    assert!(
        refused.is_err(),
        "no client certificate must be refused: {refused:?}"
    );
    let rogue = pki.client_tls(Some((&pki.rogue_cert, &pki.rogue_key)));
    let refused = health(https(port, rogue)).await;
    assert!(
        refused.is_err(),
        "a certificate from another CA must be refused: {refused:?}"
    );

    // tetherctl with --cert/--key works; without them it fails with one line.
    let url = format!("https://127.0.0.1:{}", sched.listen.port());
    let base = [
        "--scheduler".to_owned(),
        url,
        "--ca-cert".into(),
        s(&pki.ca),
    ];
    let mut with = base.to_vec();
    with.extend([
        "--cert".into(),
        s(&pki.client_cert),
        "--key".into(),
        s(&pki.client_key),
        "--output".into(),
        "json".into(),
        "nodes".into(),
    ]);
    let (ok, stdout, stderr) = tetherctl(&with).await;
    assert!(ok, "tetherctl with a client certificate: {stderr}");
    assert!(
        serde_json::from_str::<serde_json::Value>(&stdout)
            .expect("json")
            .is_array()
    );
    let mut without = base.to_vec();
    without.push("status".into());
    let (ok, _, stderr) = tetherctl(&without).await;
    assert!(!ok, "tetherctl without a client certificate must fail");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    // A client certificate names the hosts it may speak for: tetherctl's is no sidecar's.
    let (up, rx) = tokio::sync::mpsc::channel(1);
    up.send(tether_proto::v1::AgentMessage {
        body: Some(tether_proto::v1::agent_message::Body::Hello(
            tether_proto::v1::Hello {
                hostname: "tls-host".into(),
                ..Default::default()
            },
        )),
    })
    .await
    .expect("queued");
    let e = tether_proto::v1::agent_channel_client::AgentChannelClient::new(
        with_cert().connect().await.expect("connect"),
    )
    .connect(tokio_stream::wrappers::ReceiverStream::new(rx))
    .await
    .expect_err("a certificate for another name");
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");

    // A sidecar with the CA and a client certificate naming its host connects over mutual TLS.
    let world = tempfile::tempdir().expect("tempdir");
    let mut args = sidecar_args(
        &format!("https://127.0.0.1:{}", sched.listen.port()),
        "rexray",
        &world.path().join("plugins"),
        &world.path().join("state.json"),
        "tls-host",
    );
    args.scheduler_ca = Some(pki.ca.clone());
    args.cert = Some(pki.agent_cert.clone());
    args.key = Some(pki.agent_key.clone());
    let sidecar = RunningSidecar::spawn(args);
    let mut admin = AdminClient::new(with_cert().connect().await.expect("connect"));
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let agents = admin
            .list_agents(ListAgentsRequest {})
            .await
            .expect("agents")
            .into_inner()
            .agents;
        if agents
            .iter()
            .any(|a| a.host == "tls-host" && a.sidecar_connected)
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sidecar never connected over mutual TLS: {agents:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sidecar.stop().await.expect("sidecar stops cleanly");
    sched.stop().await;
}

/// https to the Mesos master: the client subscribes to an emulator serving TLS when it trusts the CA
/// (`--master-ca`), and refuses one whose certificate no trusted root signed, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mesos_client_subscribes_over_https_only_to_a_master_it_trusts() {
    let pki = Pki::new();
    let mut config = EmuConfig::fast(1);
    config.tls = Some(EmuTls {
        cert_pem: std::fs::read_to_string(&pki.server_cert).expect("cert"),
        key_pem: std::fs::read_to_string(&pki.server_key).expect("key"),
    });
    let emu = MesosEmu::start(config).await.expect("emulator");
    assert!(emu.url().starts_with("https://"), "{}", emu.url());

    let mut trusting = fast_client_config(vec![emu.url()]);
    trusting.master_ca = Some(pki.ca.clone());
    let mut d = Driver::start(trusting);
    d.subscribed().await;
    let offers = d.event(EventType::Offers).await.offers.expect("offers");
    assert_eq!(offers.offers.len(), 1);

    let mut untrusting = Driver::start(fast_client_config(vec![emu.url()]));
    let reason = untrusting
        .until(|n| match n {
            Notification::Subscribed { .. } => panic!("subscribed to a master it cannot trust"),
            Notification::Disconnected { reason } => Some(reason.clone()),
            _ => None,
        })
        .await;
    assert!(reason.contains("certificate"), "{reason}");
    emu.shutdown();
}
