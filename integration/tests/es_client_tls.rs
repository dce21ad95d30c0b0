//! The scheduler's Elasticsearch client (`tether_scheduler::elasticsearch`) against a stand-in node with
//! `--es-security full`'s HTTP layer: TLS with files named relative to the config directory, as the
//! official image reads them, and basic auth as `elastic`. The client trusts the cluster CA only.

use std::time::Duration;

use tether_integration::es_standin::testing::{Pki, Running, Sandbox, start};
use tether_scheduler::elasticsearch::{EsClient, EsClientConfig, EsError};

const V8: &str = "docker.elastic.co/elasticsearch/elasticsearch:8.15.0";
const PASSWORD: &str = "s3cret-elastic";

/// A single 8.x node with security on and HTTP TLS, its certificate (SAN 127.0.0.1) signed by `pki` and
/// installed under `config/node/`, the way the sidecar installs a node's identity.
async fn https_node(sb: &Sandbox, pki: &Pki) -> Running {
    // The image's config directory belongs to the node's user (1000:0).
    let config = sb.layer("/usr/share/elasticsearch/config");
    std::fs::create_dir_all(&config).expect("config dir");
    std::os::unix::fs::chown(&config, Some(1000), Some(0)).expect("chown (tests run as root)");
    pki.write_node(
        &sb.layer("/usr/share/elasticsearch/config/node"),
        "es-1",
        &["127.0.0.1"],
    );
    let settings = [
        "network.host=127.0.0.1",
        "http.port=0",
        "transport.port=0",
        "xpack.security.enabled=true",
        "xpack.security.http.ssl.enabled=true",
        "xpack.security.http.ssl.key=node/node.key",
        "xpack.security.http.ssl.certificate=node/node.crt",
        "xpack.security.http.ssl.certificate_authorities=node/ca.crt",
    ];
    start(sb.env(V8, &[("ELASTIC_PASSWORD", PASSWORD)]), &settings)
        .await
        .expect("the node starts with HTTP TLS")
}

fn client(ca: Option<&Pki>, auth: bool) -> EsClient {
    EsClient::new(EsClientConfig {
        timeout: Duration::from_secs(5),
        ca_pem: ca.map(|p| p.ca.cert_pem.clone()),
        basic_auth: auth.then(|| ("elastic".to_owned(), PASSWORD.to_owned())),
    })
    .expect("client")
}

#[tokio::test]
async fn the_client_reads_the_cluster_uuid_over_https_with_the_elastic_password() {
    let sb = Sandbox::new();
    let pki = Pki::new("cluster CA");
    let node = https_node(&sb, &pki).await;
    let root = client(Some(&pki), true)
        .root(&node.http_url("https"))
        .await
        .expect("GET / over https as elastic");
    assert!(
        !root.cluster_uuid.is_empty(),
        "GET / names a cluster uuid (or _na_): {root:?}"
    );
    node.stop().await;
}

#[tokio::test]
async fn without_credentials_the_https_node_answers_401() {
    let sb = Sandbox::new();
    let pki = Pki::new("cluster CA");
    let node = https_node(&sb, &pki).await;
    match client(Some(&pki), false)
        .root(&node.http_url("https"))
        .await
    {
        Err(EsError::Status { status, body, .. }) => {
            assert_eq!(status, 401, "{body}");
            assert!(body.contains("security_exception"), "{body}");
        }
        other => panic!("expected 401, got {other:?}"),
    }
    node.stop().await;
}

#[tokio::test]
async fn plain_http_to_an_https_node_gets_no_answer() {
    let sb = Sandbox::new();
    let pki = Pki::new("cluster CA");
    let node = https_node(&sb, &pki).await;
    let e = client(Some(&pki), true)
        .root(&node.http_url("http"))
        .await
        .expect_err("the node speaks TLS only");
    assert!(
        matches!(e, EsError::Transport { .. } | EsError::Timeout { .. }),
        "{e}"
    );
    node.stop().await;
}

#[tokio::test]
async fn a_node_certificate_signed_by_another_ca_is_refused() {
    let sb = Sandbox::new();
    let other = Pki::new("somebody else's CA");
    let node = https_node(&sb, &other).await;
    let cluster_ca = Pki::new("cluster CA");
    let e = client(Some(&cluster_ca), true)
        .root(&node.http_url("https"))
        .await
        .expect_err("the client trusts the cluster CA only");
    match &e {
        EsError::Transport { message, .. } => assert!(
            message.contains("certificate") || message.contains("UnknownIssuer"),
            "a certificate error: {message}"
        ),
        other => panic!("expected a TLS failure, got {other}"),
    }
    // The same client without any CA (security off) trusts no https node at all.
    assert!(
        client(None, true)
            .root(&node.http_url("https"))
            .await
            .is_err()
    );
    node.stop().await;
}

/// The tests' own client (`http_client::EsAccess`, used by the e2e helpers and `tether-dev --chaos`)
/// reaches the same node the same way, and is refused the same way.
#[tokio::test]
async fn the_test_client_reaches_an_https_node_with_the_cluster_ca_and_the_password() {
    use tether_integration::http_client::{EsAccess, es_request};
    let sb = Sandbox::new();
    let pki = Pki::new("cluster CA");
    let node = https_node(&sb, &pki).await;
    let (host, port) = (
        node.bound.http.ip().to_string(),
        u32::from(node.bound.http.port()),
    );
    let full = EsAccess {
        ca_pem: Some(pki.ca.cert_pem.clone()),
        basic_auth: Some(("elastic".into(), PASSWORD.into())),
    };
    let r = es_request(&full, http::Method::GET, &host, port, "/", None)
        .await
        .expect("https as elastic");
    assert_eq!(r.status, 200, "{}", r.text());
    let anonymous = EsAccess {
        basic_auth: None,
        ..full.clone()
    };
    let r = es_request(&anonymous, http::Method::GET, &host, port, "/", None)
        .await
        .expect("an answer");
    assert_eq!(r.status, 401);
    let other = EsAccess {
        ca_pem: Some(Pki::new("another CA").ca.cert_pem.clone()),
        ..full.clone()
    };
    assert!(
        es_request(&other, http::Method::GET, &host, port, "/", None)
            .await
            .is_err(),
        "a node certificate of another CA is refused"
    );
    assert!(
        es_request(
            &EsAccess::default(),
            http::Method::GET,
            &host,
            port,
            "/",
            None
        )
        .await
        .is_err(),
        "plain HTTP gets no answer"
    );
    node.stop().await;
}
