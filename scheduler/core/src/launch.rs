//! The task builder: turns a placed node into a [`LaunchSpec`] the shell renders as a TaskInfo for the
//! Docker or the Mesos containerizer.

use crate::command::{LaunchSpec, LaunchVolume, env};
use crate::config::{ES_CONFIG_DIR, IDENTITY_MOUNT, Security, Strategy};
use crate::core::Core;
use crate::domain::Offer;
use crate::ids::{NodeId, TaskId};

/// Builds the launch of node `id` as task `task_id` on `offer`.
pub(crate) fn build(
    core: &Core,
    id: NodeId,
    task_id: &TaskId,
    offer: &Offer,
    http_port: u16,
    transport_port: u16,
) -> LaunchSpec {
    let cfg = &core.config;
    // The node's stored configuration (`nodeconfig.rs`), not the start-up flags: image, operator
    // settings and environment, and (through `resources`) cpus, mem and heap.
    let node = core.node_config(id);
    let group = core.resources(id);
    let (driver, driver_options, disk_mb) = match &cfg.strategy {
        Strategy::Normal => (None, Vec::new(), group.disk_mb),
        Strategy::External {
            driver,
            driver_options,
            ..
        } => (Some(driver.clone()), driver_options.clone(), 0.0),
    };
    let names = core
        .record(id)
        .map(|r| r.volumes.clone())
        .unwrap_or_default();
    let volumes = names
        .into_iter()
        .zip(cfg.volumes.iter())
        .map(|(name, spec)| LaunchVolume {
            name,
            container_path: spec.container_path.clone(),
            driver: driver.clone(),
            driver_options: driver_options.clone(),
        })
        .collect();
    // Seed hosts: the other nodes' transport addresses, those whose task may be alive first (lowest ids
    // first), then the last address of the others, bounded. A node relaunched while the rest of the
    // cluster is briefly down still gets somewhere to look; an empty list with no initial master nodes
    // would let 8.x form a one-node cluster of its own. Only master-eligible nodes are seeds: discovery
    // looks for masters, and a coordinating or data node listed there would only be a detour.
    let others: Vec<&crate::state::TaskRecord> = core
        .persisted
        .slots
        .values()
        .filter(|r| r.node_id != id && !r.removed)
        .filter(|r| core.resources(r.node_id).master_eligible())
        .filter_map(|r| r.task.as_ref())
        .collect();
    let seeds: Vec<String> = others
        .iter()
        .filter(|t| !t.is_terminal())
        .chain(others.iter().filter(|t| t.is_terminal()))
        .map(|t| t.transport_address())
        .take(cfg.max_seed_hosts)
        .collect();
    let name = core.node_name(id);
    let data_path = cfg.data_volume_spec().map(|v| v.container_path.clone());
    let mut vars = vec![
        (env::NODE_ID.to_owned(), id.ordinal().to_string()),
        (env::NODE_NAME.to_owned(), name.clone()),
        (env::CLUSTER_NAME.to_owned(), cfg.cluster_name.clone()),
        (env::HTTP_PORT.to_owned(), http_port.to_string()),
        (env::TRANSPORT_PORT.to_owned(), transport_port.to_string()),
        (env::BIND_HOST.to_owned(), "0.0.0.0".to_owned()),
        (
            env::PUBLISH_HOST.to_owned(),
            crate::core::publish_address(cfg, offer),
        ),
        (env::SEED_HOSTS.to_owned(), seeds.join(",")),
    ];
    if let Some(path) = data_path {
        vars.push((env::PATH_DATA.to_owned(), path));
    }
    if let Some(roles) = &group.roles {
        // An empty list is `[]`: the image skips an empty variable, and Elasticsearch reads `[]` as the
        // empty list from 8.2 (a coordinating-only node).
        let value = if roles.is_empty() {
            "[]".to_owned()
        } else {
            roles.join(",")
        };
        vars.push((env::NODE_ROLES.to_owned(), value));
    }
    if !core.persisted.cluster_formed && group.master_eligible() {
        // Bootstrap: the same list on every master-eligible node (never on the others), the lowest (up
        // to three) allocated master-eligible ids.
        let masters: Vec<String> = core
            .master_eligible()
            .into_iter()
            .map(|n| core.node_name(n))
            .collect();
        vars.push((env::INITIAL_MASTER_NODES.to_owned(), masters.join(",")));
    }
    vars.push((
        env::JAVA_OPTS.to_owned(),
        format!("-Xms{0}m -Xmx{0}m", group.heap_mb),
    ));
    let security = core.security();
    if security.is_on() {
        vars.extend(security_settings(security));
    } else {
        vars.push((env::SECURITY_ENABLED.to_owned(), "false".to_owned()));
    }
    // Zone awareness: what the agent's sidecar reports, else the offer's fault domain.
    let zone = core
        .sidecars
        .get(&offer.hostname)
        .and_then(|s| s.zone.clone())
        .or_else(|| offer.zone.clone());
    if let Some(zone) = zone {
        vars.push((env::ZONE_ATTR.to_owned(), zone));
        vars.push((env::AWARENESS.to_owned(), "zone".to_owned()));
    }
    // The operator's own settings and environment last; `Config::validate` refused any that would
    // override what Tether sets above.
    vars.extend(node.es_settings.iter().cloned());
    vars.extend(node.es_env.iter().cloned());
    LaunchSpec {
        node_id: id,
        task_id: task_id.clone(),
        name,
        agent_id: offer.agent_id.clone(),
        host: offer.hostname.clone(),
        cpus: group.cpus,
        mem_mb: group.mem_mb,
        disk_mb,
        heap_mb: group.heap_mb,
        image: node.image.clone(),
        containerizer: cfg.containerizer,
        http_port,
        transport_port,
        volumes,
        env: vars,
        health_check_port: http_port,
        health_check_path: cfg.health_check_path.clone(),
        role: offer.role.clone(),
        resources: offer.take(
            group.cpus,
            group.mem_mb,
            disk_mb,
            &[http_port, transport_port],
        ),
    }
}

/// The settings of a node with security on. The identity files are on the identity volume, mounted at
/// [`IDENTITY_MOUNT`] inside the config directory (TLS paths are relative to it); the password reaches the
/// node only as a file there, never in the TaskInfo.
fn security_settings(security: Security) -> Vec<(String, String)> {
    let dir = IDENTITY_MOUNT
        .strip_prefix(ES_CONFIG_DIR)
        .unwrap_or(IDENTITY_MOUNT)
        .trim_start_matches('/');
    let file = |name: &str| format!("{dir}/{name}");
    let mut out = vec![
        (env::SECURITY_ENABLED.to_owned(), "true".to_owned()),
        (
            "xpack.security.transport.ssl.enabled".to_owned(),
            "true".to_owned(),
        ),
        (
            "xpack.security.transport.ssl.verification_mode".to_owned(),
            "certificate".to_owned(),
        ),
        (
            "xpack.security.transport.ssl.key".to_owned(),
            file("node.key"),
        ),
        (
            "xpack.security.transport.ssl.certificate".to_owned(),
            file("node.crt"),
        ),
        (
            "xpack.security.transport.ssl.certificate_authorities".to_owned(),
            file("ca.crt"),
        ),
        (
            env::PASSWORD_FILE.to_owned(),
            format!("{IDENTITY_MOUNT}/elastic-password"),
        ),
    ];
    if security == Security::Full {
        out.extend([
            (
                "xpack.security.http.ssl.enabled".to_owned(),
                "true".to_owned(),
            ),
            ("xpack.security.http.ssl.key".to_owned(), file("node.key")),
            (
                "xpack.security.http.ssl.certificate".to_owned(),
                file("node.crt"),
            ),
            (
                "xpack.security.http.ssl.certificate_authorities".to_owned(),
                file("ca.crt"),
            ),
        ]);
    }
    out
}
