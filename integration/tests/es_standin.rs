//! One es-standin node plays the official image's contract: where settings come from, who it runs as and
//! which paths it accepts, the bootstrap checks, TLS files, security and the HTTP API. Each test breaks if
//! the rule it names is broken. (Clustering: `es_standin_cluster.rs`.)

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tether_integration::es_standin::StandinError;
use tether_integration::es_standin::container::EMU_USER_ENV;
use tether_integration::es_standin::testing::{Pki, Sandbox, request, start};
use tether_integration::mesos_emu::volume_env_name;

const V8: &str = "docker.elastic.co/elasticsearch/elasticsearch:8.15.0";
const V7: &str = "docker.elastic.co/elasticsearch/elasticsearch:7.17.22";

/// A loopback node without security (development mode: checks only warn).
const PLAIN: [&str; 4] = [
    "network.host=127.0.0.1",
    "http.port=0",
    "transport.port=0",
    "xpack.security.enabled=false",
];

fn with<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    PLAIN.iter().copied().chain(extra.iter().copied()).collect()
}

/// Waits until every primary is active: a restarted node recovers its copies from its data path first,
/// and a read meanwhile gets 503 `no_shard_available_action_exception`, as from Elasticsearch.
async fn primaries_active(base: &str) {
    let (status, body) = get(format!(
        "{base}/_cluster/health?wait_for_status=yellow&timeout=30s"
    ))
    .await;
    assert_eq!(status, 200, "{body}");
}

async fn get(url: String) -> (u16, Value) {
    request("GET", &url, None, None, None)
        .await
        .expect("request")
}

async fn put(url: &str, body: &Value) -> (u16, Value) {
    request("PUT", url, Some(body), None, None)
        .await
        .expect("request")
}

/// A GET as the user `elastic` with `password`.
async fn get_as_elastic(url: &str, password: &str) -> (u16, Value) {
    request("GET", url, None, Some(("elastic", password)), None)
        .await
        .expect("request")
}

/// Runs the binary with exactly `env` and `args`; it must exit within 30 s.
async fn exit_of(env: &BTreeMap<String, String>, args: &[&str]) -> (i32, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_es-standin"))
            .env_clear()
            .envs(env)
            .args(args.iter().flat_map(|a| ["-E", a]))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output(),
    )
    .await
    .expect("the stand-in exits")
    .expect("spawned");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn settings_come_from_dotted_names_es_setting_names_and_e_options_and_empty_values_are_skipped()
 {
    let sb = Sandbox::new();
    let env = sb.env(
        V8,
        &[
            ("ES_SETTING_CLUSTER_NAME", "from-es-setting"),
            // Empty: skipped, so the node name falls back to HOSTNAME.
            ("node.name", ""),
            ("HOSTNAME", "host-name"),
            ("node.attr.zone", "z1"),
        ],
    );
    // Listing a node that does not exist keeps it from bootstrapping a cluster.
    let node = start(env, &with(&["cluster.initial_master_nodes=nobody"]))
        .await
        .expect("starts");
    let (status, root) = get(format!("{}/", node.http_url("http"))).await;
    assert_eq!(status, 200);
    assert_eq!(root["name"], "host-name", "{root}");
    assert_eq!(root["cluster_name"], "from-es-setting", "{root}");
    assert_eq!(root["version"]["number"], "8.15.0");
    assert_eq!(root["cluster_uuid"], "_na_");
    node.stop().await;

    // The image's elasticsearch.yml names the cluster when nothing else does.
    let sb = Sandbox::new();
    let node = start(sb.env(V7, &[]), &with(&["node.name=n7"]))
        .await
        .expect("starts");
    let (_, root) = get(format!("{}/", node.http_url("http"))).await;
    assert_eq!(root["cluster_name"], "docker-cluster", "{root}");
    assert_eq!(root["version"]["number"], "7.17.22");
    assert_eq!(root["name"], "n7");
    node.stop().await;
}

#[tokio::test]
async fn a_setting_given_twice_or_empty_on_the_command_line_is_a_usage_error() {
    let sb = Sandbox::new();
    let env = sb.env(V8, &[("cluster.name", "from-env")]);
    let (code, stderr) = exit_of(&env, &["cluster.name=from-arg"]).await;
    assert_eq!(code, 64, "{stderr}");
    assert!(
        stderr.contains("setting [cluster.name] already set, saw [from-arg] and [from-env]"),
        "{stderr}"
    );
    let (code, stderr) = exit_of(&sb.env(V8, &[]), &["node.name="]).await;
    assert_eq!(code, 64, "{stderr}");
    assert!(
        stderr.contains("setting [node.name] must not be empty"),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_default_data_path_is_in_the_tasks_own_layer_and_goes_with_it() {
    let first = Sandbox::new();
    let volume = first.volume("es1data", 1000, 0, 0o775);
    let vol_env = volume_env_name("/data");
    let volume_str = volume.display().to_string();
    let env = |sb: &Sandbox| sb.env(V8, &[(vol_env.as_str(), volume_str.as_str())]);

    // No path.data: the documents land in the sandbox, not on the volume mounted at /data.
    let node = start(env(&first), &with(&[])).await.expect("starts");
    let (status, _) = put(
        &format!("{}/docs/_doc/1", node.http_url("http")),
        &json!({"v": 1}),
    )
    .await;
    // A single node with no discovery settings bootstraps after 3 s (development mode).
    assert_eq!(status, 201);
    node.stop().await;
    assert!(
        first
            .layer("/usr/share/elasticsearch/data/indices/docs")
            .is_dir()
    );
    assert!(
        std::fs::read_dir(&volume).expect("volume").next().is_none(),
        "nothing on the volume"
    );

    // Relaunched in another sandbox (the node moved): the data is gone.
    let second = Sandbox::new();
    let node = start(env(&second), &with(&[])).await.expect("starts");
    // Once it formed a cluster of its own (before, reads are blocked: state not recovered).
    primaries_active(&node.http_url("http")).await;
    let (status, _) = get(format!("{}/docs/_doc/1", node.http_url("http"))).await;
    assert_eq!(status, 404, "the document was in the old task's layer");
    node.stop().await;

    // With path.data on the volume it survives the move.
    let node = start(env(&first), &with(&["path.data=/data"]))
        .await
        .expect("starts");
    let (status, _) = put(
        &format!("{}/docs/_doc/2", node.http_url("http")),
        &json!({"v": 2}),
    )
    .await;
    assert_eq!(status, 201);
    node.stop().await;
    let node = start(env(&second), &with(&["path.data=/data"]))
        .await
        .expect("starts");
    primaries_active(&node.http_url("http")).await;
    let (status, doc) = get(format!("{}/docs/_doc/2", node.http_url("http"))).await;
    assert_eq!((status, &doc["_source"]), (200, &json!({"v": 2})));
    node.stop().await;
}

#[tokio::test]
async fn root_is_refused_by_8x_while_717_drops_to_uid_1000() {
    let sb = Sandbox::new();
    let e = start(sb.env(V8, &[(EMU_USER_ENV, "0:0")]), &with(&[]))
        .await
        .expect_err("root refused");
    assert!(matches!(e, StandinError::Root), "{e}");
    assert_eq!(e.to_string(), "can not run elasticsearch as root");

    // 7.17's entrypoint starts as root and runs Elasticsearch as 1000:0, which owns what it creates.
    let data = "/usr/share/elasticsearch/data/sub";
    let path_data = format!("path.data={data}");
    let node = start(sb.env(V7, &[(EMU_USER_ENV, "0:0")]), &with(&[&path_data]))
        .await
        .expect("7.17 starts");
    node.stop().await;
    let meta = std::fs::metadata(sb.layer(data)).expect("data dir");
    use std::os::unix::fs::MetadataExt as _;
    assert_eq!((meta.uid(), meta.gid()), (1000, 0));

    // Outside the process launcher's emulation a root process is root.
    if rustix::process::geteuid().is_root() {
        let mut env = sb.env(V8, &[]);
        env.remove("TETHER_EMU_ROOTFS");
        let (code, stderr) = exit_of(&env, &PLAIN).await;
        assert_eq!(code, 1, "{stderr}");
        assert!(
            stderr.contains("can not run elasticsearch as root"),
            "{stderr}"
        );
    }
}

#[tokio::test]
async fn a_data_path_uid_1000_gid_0_cannot_write_is_refused() {
    let sb = Sandbox::new();
    let data = "/usr/share/elasticsearch/data";
    for (name, uid, gid, mode, ok) in [
        ("root-755", 0, 0, 0o755, false),
        ("other-owner-775", 4242, 4242, 0o775, false),
        ("root-group-775", 0, 0, 0o775, true),
        ("es-700", 1000, 4242, 0o700, true),
    ] {
        let vol = sb.volume(name, uid, gid, mode);
        let env = sb.env(V8, &[(&volume_env_name(data), &vol.display().to_string())]);
        match start(env, &with(&[])).await {
            Ok(node) => {
                assert!(
                    ok,
                    "{name}: uid 1000 gid 0 cannot write it, yet the node started"
                );
                node.stop().await;
            }
            Err(e) => {
                assert!(!ok, "{name}: refused: {e}");
                let text = e.to_string();
                assert!(
                    text.starts_with(&format!("failed to obtain node locks, tried [{data}]")),
                    "{text}"
                );
                assert!(text.contains("AccessDeniedException"), "{text}");
            }
        }
    }
    // Search permission on the way counts too.
    let parent = sb.volume("parent", 0, 0, 0o700);
    std::fs::create_dir(parent.join("data")).expect("mkdir");
    std::os::unix::fs::chown(parent.join("data"), Some(1000), Some(0)).expect("chown");
    let env = sb.env(
        V8,
        &[(&volume_env_name("/srv"), &parent.display().to_string())],
    );
    let e = start(env, &with(&["path.data=/srv/data"]))
        .await
        .expect_err("/srv is not searchable by uid 1000");
    assert!(e.to_string().contains("failed to obtain node locks"), "{e}");
}

#[tokio::test]
async fn a_config_directory_volume_must_hold_the_image_files_and_be_writable_for_the_keystore() {
    let sb = Sandbox::new();
    let config = "/usr/share/elasticsearch/config";
    let empty = sb.volume("config-empty", 1000, 0, 0o775);
    let env = sb.env(
        V8,
        &[(&volume_env_name(config), &empty.display().to_string())],
    );
    let e = start(env, &with(&[])).await.expect_err("no jvm.options");
    assert!(e.to_string().contains("jvm.options"), "{e}");

    let read_only = sb.volume("config-ro", 0, 0, 0o755);
    for f in ["jvm.options", "log4j2.properties"] {
        std::fs::write(read_only.join(f), "# test\n").expect("write");
        std::fs::set_permissions(read_only.join(f), std::fs::Permissions::from_mode(0o644))
            .expect("chmod");
    }
    let env = sb.env(
        V8,
        &[(&volume_env_name(config), &read_only.display().to_string())],
    );
    let e = start(env.clone(), &with(&[]))
        .await
        .expect_err("keystore cannot be created");
    assert!(
        e.to_string().contains(
            "AccessDeniedException[/usr/share/elasticsearch/config/elasticsearch.keystore.tmp]"
        ),
        "{e}"
    );
    std::fs::remove_file(read_only.join("log4j2.properties")).expect("rm");
    std::os::unix::fs::chown(&read_only, Some(1000), Some(0)).expect("chown");
    let e = start(env.clone(), &with(&[]))
        .await
        .expect_err("no log4j2.properties");
    assert!(e.to_string().contains("no log4j2.properties found"), "{e}");
    std::fs::write(read_only.join("log4j2.properties"), "# test\n").expect("write");
    let node = start(env.clone(), &with(&[]))
        .await
        .expect("writable config directory");
    node.stop().await;
    assert!(read_only.join("elasticsearch.keystore").is_file());
    // With the keystore there, the directory must still be writable.
    std::os::unix::fs::chown(&read_only, Some(0), Some(0)).expect("chown");
    let e = start(env, &with(&[]))
        .await
        .expect_err("config directory not writable");
    assert!(e.to_string().contains("AccessDeniedException"), "{e}");
}

/// Production mode: bound to 0.0.0.0 with multi-node discovery.
fn production<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    ["network.host=0.0.0.0", "http.port=0", "transport.port=0"]
        .into_iter()
        .chain(extra.iter().copied())
        .collect()
}

#[tokio::test]
async fn production_mode_requires_equal_heap_sizes() {
    let sb = Sandbox::new();
    let settings = production(&[
        "discovery.seed_hosts=127.0.0.1:1",
        "xpack.security.enabled=false",
    ]);
    let env = sb.env(V8, &[("ES_JAVA_OPTS", "-Xms512m -Xmx1g")]);
    let (code, stderr) = exit_of(&env, &settings).await;
    assert_eq!(code, 78, "{stderr}");
    assert!(
        stderr.contains("ERROR: [1] bootstrap checks failed."),
        "{stderr}"
    );
    assert!(
        stderr.contains("bootstrap check failure [1] of [1]: initial heap size [536870912] not equal to maximum heap size [1073741824]; this can cause resize pauses"),
        "{stderr}"
    );
    let env = sb.env(V8, &[("ES_JAVA_OPTS", "-Xms1g -Xmx1g")]);
    let node = start(env, &settings).await.expect("equal heap sizes pass");
    node.stop().await;
}

#[tokio::test]
async fn production_mode_requires_discovery_settings() {
    let sb = Sandbox::new();
    let (code, stderr) = exit_of(
        &sb.env(V8, &[("discovery.seed_hosts", "")]),
        &production(&["xpack.security.enabled=false"]),
    )
    .await;
    assert_eq!(code, 78, "{stderr}");
    assert!(
        stderr.contains("the default discovery settings are unsuitable for production use; at least one of [discovery.seed_hosts, discovery.seed_providers, cluster.initial_master_nodes] must be configured"),
        "{stderr}"
    );
    // single-node discovery is not production mode; explicit enforcement is.
    let node = start(
        sb.env(V8, &[]),
        &production(&["xpack.security.enabled=false", "discovery.type=single-node"]),
    )
    .await
    .expect("single-node skips enforcement");
    node.stop().await;
    let (code, stderr) = exit_of(
        &sb.env(
            V8,
            &[("ES_JAVA_OPTS", "-Des.enforce.bootstrap.checks=true")],
        ),
        &with(&[]),
    )
    .await;
    assert_eq!(code, 78, "{stderr}");
}

#[tokio::test]
async fn production_mode_requires_transport_tls_on_8x_and_on_717_only_with_explicit_security() {
    let sb = Sandbox::new();
    let discovery = production(&["discovery.seed_hosts=127.0.0.1:1"]);
    let (code, stderr) = exit_of(&sb.env(V8, &[]), &discovery).await;
    assert_eq!(code, 78, "{stderr}");
    assert!(
        stderr.contains("Transport SSL must be enabled if security is enabled. Please set [xpack.security.transport.ssl.enabled] to [true] or disable security by setting [xpack.security.enabled] to [false]"),
        "{stderr}"
    );
    // A data path written by 8.x cannot go back to 7.17: a sandbox of its own.
    let sb = Sandbox::new();
    let node = start(sb.env(V7, &[]), &discovery)
        .await
        .expect("7.17: security off by default");
    node.stop().await;
    let explicit = production(&[
        "discovery.seed_hosts=127.0.0.1:1",
        "xpack.security.enabled=true",
    ]);
    let (code, stderr) = exit_of(&sb.env(V7, &[]), &explicit).await;
    assert_eq!(code, 78, "{stderr}");
    assert!(stderr.contains("on a [basic] license"), "{stderr}");
}

#[tokio::test]
async fn transport_tls_files_must_exist_and_parse() {
    let sb = Sandbox::new();
    let certs = sb.layer("/usr/share/elasticsearch/config/certs");
    let pki = Pki::new("test CA");
    // Lay out the image first, then the certificates in its config directory.
    let node = start(sb.env(V8, &[]), &with(&[])).await.expect("starts");
    node.stop().await;
    pki.write_node(&certs, "n1", &["127.0.0.1"]);
    let tls = [
        "xpack.security.enabled=true",
        "xpack.security.transport.ssl.enabled=true",
        "xpack.security.transport.ssl.key=certs/node.key",
        "xpack.security.transport.ssl.certificate=certs/node.crt",
        "xpack.security.transport.ssl.certificate_authorities=certs/missing-ca.crt",
    ];
    let settings: Vec<&str> = ["network.host=127.0.0.1", "http.port=0", "transport.port=0"]
        .into_iter()
        .chain(tls)
        .collect();
    let (code, stderr) = exit_of(&sb.env(V8, &[]), &settings).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("failed to load SSL configuration [xpack.security.transport.ssl] - cannot read configured PEM certificate_authorities [/usr/share/elasticsearch/config/certs/missing-ca.crt] because the file does not exist"),
        "{stderr}"
    );
    std::fs::write(certs.join("garbage.crt"), "not a certificate").expect("write");
    let garbage: Vec<&str> = settings
        .iter()
        .map(|s| {
            if s.starts_with("xpack.security.transport.ssl.certificate_authorities") {
                "xpack.security.transport.ssl.certificate_authorities=certs/garbage.crt"
            } else {
                s
            }
        })
        .collect();
    let (code, stderr) = exit_of(&sb.env(V8, &[]), &garbage).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("no certificates found"), "{stderr}");
    let good: Vec<&str> = settings
        .iter()
        .map(|s| {
            if s.starts_with("xpack.security.transport.ssl.certificate_authorities") {
                "xpack.security.transport.ssl.certificate_authorities=certs/ca.crt"
            } else {
                s
            }
        })
        .collect();
    let node = start(sb.env(V8, &[]), &good)
        .await
        .expect("valid TLS files");
    node.stop().await;
}

#[tokio::test]
async fn security_needs_the_elastic_password_and_https_when_enabled() {
    let sb = Sandbox::new();
    let secure = [
        "network.host=127.0.0.1",
        "http.port=0",
        "transport.port=0",
        "xpack.security.enabled=true",
    ];
    let node = start(sb.env(V8, &[("ELASTIC_PASSWORD", "s3cret")]), &secure)
        .await
        .expect("starts");
    let url = format!("{}/", node.http_url("http"));
    let (status, body) = request("GET", &url, None, None, None)
        .await
        .expect("request");
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["type"], "security_exception");
    assert_eq!(
        body["error"]["reason"],
        "missing authentication credentials for REST request [/]"
    );
    let (status, _) = get_as_elastic(&url, "wrong").await;
    assert_eq!(status, 401);
    let (status, root) = get_as_elastic(&url, "s3cret").await;
    assert_eq!(status, 200, "{root}");
    node.stop().await;

    // The keystore keeps the first bootstrap password: a new ELASTIC_PASSWORD does not replace it.
    let node = start(sb.env(V8, &[("ELASTIC_PASSWORD", "other")]), &secure)
        .await
        .expect("starts");
    let url = format!("{}/", node.http_url("http"));
    let (status, _) = get_as_elastic(&url, "other").await;
    assert_eq!(status, 401);
    let (status, _) = get_as_elastic(&url, "s3cret").await;
    assert_eq!(status, 200);
    node.stop().await;

    // HTTPS: the http layer speaks TLS only.
    let fresh = Sandbox::new();
    let certs = fresh.path.join("certs");
    let pki = Pki::new("http CA");
    pki.write_node(&certs, "localhost", &["localhost", "127.0.0.1"]);
    let certs_in_sandbox = "/mnt/mesos/sandbox/certs";
    let https: Vec<String> = secure
        .iter()
        .map(|s| (*s).to_owned())
        .chain([
            "xpack.security.http.ssl.enabled=true".to_owned(),
            format!("xpack.security.http.ssl.key={certs_in_sandbox}/node.key"),
            format!("xpack.security.http.ssl.certificate={certs_in_sandbox}/node.crt"),
        ])
        .collect();
    let https: Vec<&str> = https.iter().map(String::as_str).collect();
    let node = start(fresh.env(V8, &[("ELASTIC_PASSWORD", "s3cret")]), &https)
        .await
        .expect("starts");
    let (status, _) = request(
        "GET",
        &format!("{}/", node.http_url("https")),
        None,
        Some(("elastic", "s3cret")),
        Some(&pki.ca.cert_pem),
    )
    .await
    .expect("https");
    assert_eq!(status, 200);
    assert!(
        request(
            "GET",
            &format!("{}/", node.http_url("http")),
            None,
            Some(("elastic", "s3cret")),
            None
        )
        .await
        .is_err(),
        "plain http to an https port gets no answer"
    );
    node.stop().await;
}

#[tokio::test]
async fn the_elastic_password_file_must_be_600_or_400_and_not_combined() {
    let sb = Sandbox::new();
    let file = sb.path.join("password");
    std::fs::write(&file, "from-file\n").expect("write");
    std::os::unix::fs::chown(&file, Some(1000), Some(0)).expect("chown");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let in_container = "/mnt/mesos/sandbox/password";
    let secure = [
        "network.host=127.0.0.1",
        "http.port=0",
        "transport.port=0",
        "xpack.security.enabled=true",
    ];
    let (code, stderr) = exit_of(
        &sb.env(V8, &[("ELASTIC_PASSWORD_FILE", in_container)]),
        &secure,
    )
    .await;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("ERROR: File {in_container} from ELASTIC_PASSWORD_FILE must have file permissions 400 or 600, but actually has: 644")),
        "{stderr}"
    );
    let (code, stderr) = exit_of(
        &sb.env(
            V8,
            &[
                ("ELASTIC_PASSWORD_FILE", in_container),
                ("ELASTIC_PASSWORD", "x"),
            ],
        ),
        &secure,
    )
    .await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("mutually exclusive"), "{stderr}");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let node = start(
        sb.env(V8, &[("ELASTIC_PASSWORD_FILE", in_container)]),
        &secure,
    )
    .await
    .expect("starts");
    let (status, _) = request(
        "GET",
        &format!("{}/", node.http_url("http")),
        None,
        Some(("elastic", "from-file")),
        None,
    )
    .await
    .expect("request");
    assert_eq!(
        status, 200,
        "the trailing newline is dropped, as $(cat) does"
    );
    node.stop().await;
}

#[tokio::test]
async fn a_first_8x_start_without_security_settings_configures_tls_itself() {
    let sb = Sandbox::new();
    let node = start(
        sb.env(V8, &[]),
        &[
            "network.host=127.0.0.1",
            "http.port=0",
            "transport.port=0",
            "discovery.type=single-node",
        ],
    )
    .await
    .expect("starts");
    let keystore: Value = serde_json::from_slice(
        &std::fs::read(sb.layer("/usr/share/elasticsearch/config/elasticsearch.keystore"))
            .expect("keystore"),
    )
    .expect("json");
    let password = keystore["entries"]["bootstrap.password"]
        .as_str()
        .expect("generated password")
        .to_owned();
    let ca = std::fs::read_to_string(sb.layer("/usr/share/elasticsearch/config/certs/http_ca.crt"))
        .expect("http CA");
    let url = format!("https://127.0.0.1:{}/", node.bound.http.port());
    let (status, _) = request("GET", &url, None, Some(("elastic", &password)), Some(&ca))
        .await
        .expect("https with the generated CA");
    assert_eq!(status, 200);
    node.stop().await;
}

#[tokio::test]
async fn health_without_a_master_is_503_and_red_locally() {
    let sb = Sandbox::new();
    // In its own list nobody else can be found: it never bootstraps.
    let node = start(
        sb.env(V8, &[]),
        &with(&["cluster.initial_master_nodes=somebody-else", "node.name=n1"]),
    )
    .await
    .expect("starts");
    let base = node.http_url("http");
    let (status, body) = get(format!("{base}/_cluster/health?master_timeout=200ms")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        body,
        json!({
            "error": {
                "root_cause": [{ "type": "master_not_discovered_exception", "reason": null }],
                "type": "master_not_discovered_exception",
                "reason": null,
            },
            "status": 503,
        })
    );
    let (status, body) = get(format!("{base}/_cluster/health?local=true")).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("red")),
        "{body}"
    );
    let (status, body) = put(&format!("{base}/docs/_doc/1?timeout=200ms"), &json!({})).await;
    assert_eq!(status, 503, "writes need a master: {body}");
    node.stop().await;
}

#[tokio::test]
async fn documents_survive_a_restart_on_the_same_data_path() {
    let sb = Sandbox::new();
    let env = |id: &str| sb.env(V8, &[("ELASTICSEARCH_NODE_ID", id)]);
    let single = with(&["discovery.type=single-node", "node.name=es-1"]);
    let node = start(env("1"), &single).await.expect("starts");
    let base = node.http_url("http");
    let (status, root) = get(format!("{base}/")).await;
    assert_eq!(status, 200);
    assert_eq!(root["data_created_by_node_id"], "1");
    let (status, health) = get(format!(
        "{base}/_cluster/health?wait_for_status=green&timeout=30s"
    ))
    .await;
    assert_eq!(
        (status, health["number_of_nodes"].as_u64()),
        (200, Some(1)),
        "{health}"
    );
    let uuid = get(format!("{base}/")).await.1["cluster_uuid"].clone();
    assert_ne!(uuid, "_na_");

    let put = |id: &'static str, v: Value| {
        let base = base.clone();
        async move { put(&format!("{base}/logs/_doc/{id}"), &v).await }
    };
    let (status, body) = put("a%201", json!({"msg": "hello"})).await;
    assert_eq!((status, body["result"].as_str()), (201, Some("created")));
    let (status, body) = put("a%201", json!({"msg": "again"})).await;
    assert_eq!((status, body["_version"].as_u64()), (200, Some(2)));
    let (_, health) = get(format!("{base}/_cluster/health")).await;
    assert_eq!(
        health["status"], "yellow",
        "one data node cannot hold the replica: {health}"
    );
    node.stop().await;

    // Relaunched with another id on the same data: the creator and the cluster UUID are still there.
    let node = start(env("7"), &single).await.expect("starts");
    let base = node.http_url("http");
    let (status, root) = get(format!("{base}/")).await;
    assert_eq!(status, 200);
    assert_eq!(root["data_created_by_node_id"], "1");
    assert_eq!(
        root["cluster_uuid"], uuid,
        "the UUID lives in the data path"
    );
    primaries_active(&base).await;
    let (status, doc) = get(format!("{base}/logs/_doc/a%201")).await;
    assert_eq!((status, &doc["_source"]), (200, &json!({"msg": "again"})));
    let (status, missing) = get(format!("{base}/logs/_doc/nope")).await;
    assert_eq!((status, &missing["found"]), (404, &json!(false)));
    let (status, e) = get(format!("{base}/nothing/_doc/1")).await;
    assert_eq!(
        (status, e["error"]["type"].as_str()),
        (404, Some("index_not_found_exception"))
    );
    node.stop().await;
}

#[tokio::test]
async fn bad_requests_get_clear_errors() {
    let sb = Sandbox::new();
    let node = start(sb.env(V8, &[]), &with(&["discovery.type=single-node"]))
        .await
        .expect("starts");
    let base = node.http_url("http");
    let (status, e) = put(&format!("{base}/Bad/_doc/1"), &json!({})).await;
    assert_eq!(
        (status, e["error"]["type"].as_str()),
        (400, Some("invalid_index_name_exception"))
    );
    let (status, e) = put(&format!("{base}/ok/_doc/1"), &json!([1, 2])).await;
    assert_eq!(
        (status, e["error"]["type"].as_str()),
        (400, Some("mapper_parsing_exception"))
    );
    let (status, _) = request("DELETE", &format!("{base}/ok"), None, None, None)
        .await
        .expect("delete");
    assert_eq!(status, 405);
    node.stop().await;
}

#[tokio::test]
async fn a_second_process_on_a_held_data_path_refuses_to_start() {
    let sb = Sandbox::new();
    let node = start(sb.env(V8, &[]), &with(&[])).await.expect("starts");
    let (code, stderr) = exit_of(&sb.env(V8, &[]), &PLAIN).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("failed to obtain node locks, tried [/usr/share/elasticsearch/data]"),
        "{stderr}"
    );
    assert!(stderr.contains("LockObtainFailedException"), "{stderr}");
    node.stop().await;
}

#[tokio::test]
async fn legacy_role_settings_are_unknown_to_8x() {
    let sb = Sandbox::new();
    let e = start(sb.env(V8, &[]), &with(&["node.master=true"]))
        .await
        .expect_err("removed in 8.0");
    assert!(
        e.to_string().starts_with("unknown setting [node.master]"),
        "{e}"
    );
    let node = start(sb.env(V7, &[]), &with(&["node.master=true"]))
        .await
        .expect("7.17 knows it");
    node.stop().await;
}

/// A node whose volume is force-detached underneath it (another host mounted it with preemption) fails
/// every read and write afterwards, as Elasticsearch fails once its node lock is no longer valid (the
/// lost volume's IO errors); what it acknowledged before is on the volume, and a node started on the new
/// host runs on it.
#[tokio::test]
async fn a_node_whose_volume_was_preempted_acknowledges_nothing() {
    use tether_integration::fake_rexray::{self, Config, FakeRexray};
    use tether_sidecar::plugin::{PluginAddr, PluginClient};
    let tmp = tempfile::tempdir().expect("tempdir");
    let backend = tmp.path().join("backend");
    fake_rexray::create_volume(&backend, "es1data", 1, "z1").expect("volume");
    let plugin = |host: &str| {
        let mut cfg = Config::new(tmp.path().join(format!("{host}.sock")), &backend, host);
        cfg.preempt = true;
        cfg
    };
    let _a = FakeRexray::serve(plugin("a")).await.expect("plugin a");
    let _b = FakeRexray::serve(plugin("b")).await.expect("plugin b");
    let client =
        |host: &str| PluginClient::new(PluginAddr::Unix(tmp.path().join(format!("{host}.sock"))));
    let data = "/usr/share/elasticsearch/data";
    // As the sidecar leaves a volume for the image's user (uid 1000, gid 0).
    let owned = |mountpoint: &str| {
        std::os::unix::fs::chown(mountpoint, Some(1000), Some(0)).expect("chown");
        std::fs::set_permissions(mountpoint, std::fs::Permissions::from_mode(0o775))
            .expect("chmod");
    };
    let single = with(&["discovery.type=single-node", "node.name=es-1"]);
    let at_a = client("a").mount("es1data", "").await.expect("mount on a");
    owned(&at_a);
    let sb_a = Sandbox::new();
    let old_node = start(sb_a.env(V8, &[(&volume_env_name(data), &at_a)]), &single)
        .await
        .expect("starts on a");
    let old = old_node.http_url("http");
    let put = |base: String, id: &'static str, v: Value| async move {
        put(&format!("{base}/logs/_doc/{id}"), &v).await
    };
    let (status, body) = put(old.clone(), "before", json!({"v": 1})).await;
    assert_eq!(status, 201, "{body}");

    let at_b = client("b")
        .mount("es1data", "")
        .await
        .expect("preempting mount on b");
    owned(&at_b);
    let (status, reply) = put(old.clone(), "after", json!({"v": 2})).await;
    assert_eq!(status, 500, "PUT after preemption: {reply}");
    assert_eq!(reply["error"]["type"], "illegal_state_exception");
    let (status, reply) = get(format!("{old}/logs/_doc/before")).await;
    assert_eq!(status, 500, "GET after preemption: {reply}");
    assert_eq!(reply["error"]["type"], "illegal_state_exception");

    let sb_b = Sandbox::new();
    let new_node = start(sb_b.env(V8, &[(&volume_env_name(data), &at_b)]), &single)
        .await
        .expect("starts on b");
    let new = new_node.http_url("http");
    primaries_active(&new).await;
    let (status, doc) = get(format!("{new}/logs/_doc/before")).await;
    assert_eq!((status, &doc["_source"]), (200, &json!({"v": 1})));
    let (status, _) = get(format!("{new}/logs/_doc/after")).await;
    assert_eq!(
        status, 404,
        "nothing the preempted node was sent reached the volume"
    );
    old_node.stop().await;
    new_node.stop().await;
}

/// A data path records the version that last wrote it: a newer version starts on it (an upgrade), an
/// older one refuses to start with Elasticsearch's words and exit code 1, and the refused start changes
/// nothing (the newer version still starts there with every document).
#[tokio::test]
async fn data_a_newer_version_wrote_cannot_be_read_by_an_older_one() {
    const OLD: &str = "docker.elastic.co/elasticsearch/elasticsearch:8.14.3";
    const NEWER: &str = "docker.elastic.co/elasticsearch/elasticsearch:8.16.1";
    let sb = Sandbox::new();
    let single = with(&["discovery.type=single-node", "node.name=v-1"]);
    let node = start(sb.env(OLD, &[]), &single).await.expect("starts");
    let base = node.http_url("http");
    let (status, body) = put(&format!("{base}/up/_doc/1"), &json!({"n": 1})).await;
    assert_eq!(status, 201, "{body}");
    node.stop().await;

    // Upgraded in place: 8.15.0 reads what 8.14.3 wrote.
    let node = start(sb.env(V8, &[]), &single).await.expect("upgrades");
    let base = node.http_url("http");
    primaries_active(&base).await;
    let (status, doc) = get(format!("{base}/up/_doc/1")).await;
    assert_eq!((status, &doc["_source"]), (200, &json!({"n": 1})));
    node.stop().await;

    let e = start(sb.env(OLD, &[]), &single)
        .await
        .expect_err("8.14.3 cannot read 8.15.0's data");
    assert_eq!(
        e.to_string(),
        "cannot downgrade a node from version [8.15.0] to version [8.14.3]"
    );
    let (code, stderr) = exit_of(&sb.env(OLD, &[]), &single).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("cannot downgrade a node"), "{stderr}");

    let node = start(sb.env(NEWER, &[]), &single).await.expect("upgrades");
    primaries_active(&node.http_url("http")).await;
    node.stop().await;
    let e = start(sb.env(V8, &[]), &single)
        .await
        .expect_err("8.15.0 cannot read 8.16.1's data");
    assert_eq!(
        e.to_string(),
        "cannot downgrade a node from version [8.16.1] to version [8.15.0]"
    );
}

/// A node's own `cluster.routing.*` settings are validated at start-up: a misspelt key is an unknown
/// setting (with Elasticsearch's suggestion) and a bad value is refused, each with exit code 1; a real
/// setting es-standin does not model is accepted.
#[tokio::test]
async fn unknown_or_invalid_routing_settings_refuse_the_start() {
    let sb = Sandbox::new();
    let (code, stderr) = exit_of(
        &sb.env(V8, &[]),
        &with(&[
            "discovery.type=single-node",
            "cluster.routing.allocation.enabled=all",
        ]),
    )
    .await;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(
            "unknown setting [cluster.routing.allocation.enabled] did you mean any of [cluster.routing.allocation.enable, "
        ),
        "{stderr}"
    );
    let e = start(
        sb.env(V8, &[]),
        &with(&[
            "discovery.type=single-node",
            "cluster.routing.allocation.enable=sometimes",
        ]),
    )
    .await
    .expect_err("a bad value");
    assert_eq!(e.to_string(), "Illegal allocation.enable value [SOMETIMES]");
    let node = start(
        sb.env(V8, &[]),
        &with(&[
            "discovery.type=single-node",
            "cluster.routing.allocation.disk.watermark.low=85%",
            "cluster.routing.allocation.enable=primaries",
        ]),
    )
    .await
    .expect("real settings start");
    node.stop().await;
}
