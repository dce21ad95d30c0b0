//! 8.x security auto-configuration (`AutoConfigureNode`): on a first start that allows it, the node makes
//! its own CA and certificates under `<config>/certs`, turns on TLS for HTTP and transport in
//! `elasticsearch.yml`, and — without a bootstrap password — generates one for `elastic` and prints it.
//!
//! It is **skipped** when: a data path is not empty; `xpack.security.autoconfiguration.enabled` is false;
//! `xpack.security.enabled` is set; any `xpack.security.{transport,http}.ssl.*` is set; any of
//! `discovery.seed_hosts`, `discovery.seed_providers`, `cluster.initial_master_nodes` is set (except an
//! initial-master list naming only this node); the node is not master-eligible, is voting-only or cannot
//! hold data; the config directory is not writable. A multi-node cluster therefore brings its own
//! transport TLS.
//!
//! The stand-in writes PEM files where Elasticsearch writes PKCS#12 keystores.

use std::path::Path;

use super::certs::Ca;
use super::container::{Access, ContainerFs, Identity};
use super::image::{ImageError, Keystore};
use super::settings::Settings;

/// What auto-configuration looks at.
#[derive(Debug)]
pub struct Context<'a> {
    pub fs: &'a ContainerFs,
    pub who: Identity,
    pub config_dir: &'a Path,
    pub settings: &'a Settings,
    pub node_name: &'a str,
    pub roles: &'a std::collections::BTreeSet<String>,
    pub data_was_empty: bool,
}

/// Why auto-configuration is skipped, `None` when it runs.
pub fn skip_reason(ctx: &Context<'_>) -> Option<&'static str> {
    let s = ctx.settings;
    if !ctx.data_was_empty {
        return Some("the data path is not empty");
    }
    if s.get("xpack.security.autoconfiguration.enabled") == Some("false") {
        return Some("xpack.security.autoconfiguration.enabled is false");
    }
    if s.contains("xpack.security.enabled") {
        return Some("xpack.security.enabled is set");
    }
    if s.keys_with_prefix("xpack.security.transport.ssl.")
        .next()
        .is_some()
        || s.keys_with_prefix("xpack.security.http.ssl.")
            .next()
            .is_some()
    {
        return Some("TLS settings are configured");
    }
    if s.contains("discovery.seed_hosts") || s.contains("discovery.seed_providers") {
        return Some("discovery settings are configured");
    }
    if s.contains("cluster.initial_master_nodes")
        && s.list("cluster.initial_master_nodes") != [ctx.node_name.to_owned()]
    {
        return Some("cluster.initial_master_nodes names other nodes");
    }
    if !ctx.roles.contains("master")
        || ctx.roles.contains("voting_only")
        || !ctx
            .roles
            .iter()
            .any(|r| r == "data" || r.starts_with("data_"))
    {
        return Some("the node is not a master-eligible data node");
    }
    if ctx
        .fs
        .check(ctx.config_dir, Access::Write, ctx.who)
        .is_err()
    {
        return Some("the config directory is not writable");
    }
    None
}

/// Runs auto-configuration when allowed; returns the settings it added to `elasticsearch.yml`.
pub fn run(ctx: &Context<'_>, keystore: &mut Keystore) -> Result<Option<Settings>, ImageError> {
    if let Some(why) = skip_reason(ctx) {
        tracing::info!("skipping security auto configuration because {why}");
        return Ok(None);
    }
    let fail = |e: &dyn std::fmt::Display| {
        ImageError::Config(format!("security auto-configuration failed: {e}"))
    };
    let mut sans: Vec<String> = vec![
        ctx.node_name.to_owned(),
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
    ];
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let h = h.trim().to_owned();
        if !h.is_empty() && !sans.contains(&h) {
            sans.push(h);
        }
    }
    let http_ca =
        Ca::new("Elasticsearch security auto-configuration HTTP CA").map_err(|e| fail(&e))?;
    let transport_ca =
        Ca::new("Elasticsearch security auto-configuration transport CA").map_err(|e| fail(&e))?;
    let http = http_ca.leaf(ctx.node_name, &sans).map_err(|e| fail(&e))?;
    let transport = transport_ca
        .leaf(ctx.node_name, &sans)
        .map_err(|e| fail(&e))?;

    let certs = ctx.config_dir.join("certs");
    ctx.fs
        .make_dir(&certs, 0o750, ctx.who)
        .map_err(|e| fail(&e))?;
    for (name, body) in [
        ("http_ca.crt", &http_ca.cert_pem),
        ("http.crt", &http.cert_pem),
        ("http.key", &http.key_pem),
        ("transport_ca.crt", &transport_ca.cert_pem),
        ("transport.crt", &transport.cert_pem),
        ("transport.key", &transport.key_pem),
    ] {
        ctx.fs
            .make_file(&certs.join(name), body.as_bytes(), 0o660, ctx.who)
            .map_err(|e| fail(&e))?;
    }

    let mut added: Vec<(String, String)> = [
        ("xpack.security.enabled", "true"),
        ("xpack.security.enrollment.enabled", "true"),
        ("xpack.security.http.ssl.enabled", "true"),
        ("xpack.security.http.ssl.key", "certs/http.key"),
        ("xpack.security.http.ssl.certificate", "certs/http.crt"),
        ("xpack.security.transport.ssl.enabled", "true"),
        (
            "xpack.security.transport.ssl.verification_mode",
            "certificate",
        ),
        ("xpack.security.transport.ssl.key", "certs/transport.key"),
        (
            "xpack.security.transport.ssl.certificate",
            "certs/transport.crt",
        ),
        (
            "xpack.security.transport.ssl.certificate_authorities",
            "certs/transport_ca.crt",
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let single_node = ctx.settings.get("discovery.type") == Some("single-node");
    if !single_node && !ctx.settings.contains("cluster.initial_master_nodes") {
        added.push((
            "cluster.initial_master_nodes".into(),
            ctx.node_name.to_owned(),
        ));
    }
    if !ctx.settings.contains("http.host") {
        added.push(("http.host".into(), "0.0.0.0".into()));
    }
    let yml_path = ctx.config_dir.join("elasticsearch.yml");
    let mut yml = ctx
        .fs
        .read(&yml_path, ctx.who)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    yml.push_str(
        "\n#----------------------- BEGIN SECURITY AUTO CONFIGURATION -----------------------\n",
    );
    for (k, v) in &added {
        yml.push_str(&format!("{k}: \"{v}\"\n"));
    }
    yml.push_str(
        "#----------------------- END SECURITY AUTO CONFIGURATION -------------------------\n",
    );
    ctx.fs
        .check(&yml_path, Access::Write, ctx.who)
        .map_err(|e| fail(&e))?;
    super::data_path::write_durably(&ctx.fs.host(&yml_path), yml.as_bytes())
        .map_err(|e| fail(&e))?;
    let _ = ctx.fs.give(&ctx.fs.host(&yml_path), ctx.who);

    let mut banner = String::from(
        "Elasticsearch security features have been automatically configured!\nAuthentication is enabled and cluster connections are encrypted.\n",
    );
    if !keystore.entries.contains_key(Keystore::BOOTSTRAP_PASSWORD) {
        let password = super::cluster::state::new_uuid().replace(['-', '_'], "x");
        keystore
            .entries
            .insert(Keystore::BOOTSTRAP_PASSWORD.to_owned(), password.clone());
        keystore
            .save(ctx.fs, ctx.config_dir, ctx.who)
            .map_err(|e| fail(&e))?;
        banner.push_str(&format!(
            "Password for the elastic user (reset with `bin/elasticsearch-reset-password -u elastic`):\n  {password}\n"
        ));
    }
    banner.push_str(&format!(
        "HTTP CA certificate: {}\n",
        ctx.config_dir.join("certs/http_ca.crt").display()
    ));
    println!("{banner}");
    Ok(Some(Settings::from_pairs(added)))
}
