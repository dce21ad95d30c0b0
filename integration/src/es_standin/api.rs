//! The operations API a stand-in serves beyond documents and health: `_cat`, cluster settings, index
//! creation and settings, flush, nodes info, the node shutdown API and voting configuration exclusions,
//! with Elasticsearch's paths, parameters, field names and status codes (see the module header of
//! [`super`] for what is modelled).
//!
//! - **Node shutdown** (7.15+; `replace` 7.16+; by node *id*, as `_cat/nodes?h=id,name&full_id=true`
//!   or `GET /_nodes` list them): `PUT /_nodes/<id>/shutdown` `{"type": "restart|remove|replace",
//!   "reason", "allocation_delay" (restart only), "target_node_name" (replace only)}` → `{"acknowledged":
//!   true}`; `GET /_nodes[/<ids>]/shutdown` → `{"nodes": [{"node_id", "type": "RESTART|REMOVE|REPLACE",
//!   "reason", "shutdown_startedmillis", "allocation_delay" (restart), "target_node_name" (replace),
//!   "status", "shard_migration": {"status", "shard_migrations_remaining", "explanation"?},
//!   "persistent_tasks": {"status"}, "plugins": {"status"}}]}` where a restart is COMPLETE at once, a
//!   remove/replace is COMPLETE when the node holds no copy (or is gone), STALLED when a copy on it has
//!   nowhere to go and none is moving, IN_PROGRESS otherwise; `DELETE` → `{"acknowledged": true}` or
//!   404 `resource_not_found_exception`. A record for an absent id is accepted, as in Elasticsearch.
//! - **Voting exclusions**: `POST /_cluster/voting_config_exclusions?node_names=a,b` (or `node_ids=`;
//!   exactly one; `timeout` 30s) adds them (an unknown name gets id `_absent_`; more than
//!   `cluster.max_voting_config_exclusions`, 10, is 400) and answers 200 `{}` once none of them is in the
//!   last committed voting configuration, else 500 `timeout_exception`; an excluded master hands over.
//!   `DELETE /_cluster/voting_config_exclusions[?wait_for_removal=false]` clears them (by default once
//!   the excluded nodes left the cluster, within `timeout`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::cluster::routing::{
    self, CopyState, Health, ShutdownRecord, VotingExclusion, invalid_value, known_setting,
};
use super::cluster::shards::{ClusterUpdate, now_ms};
use super::cluster::state::{ClusterState, DiscoveryNode};
use super::cluster::{ClusterError, ClusterView};
use super::documents;
use super::http::{HttpNode, Params, Reply, error, reply};
use super::image::EsVersion;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

fn text_reply(status: u16, body: String) -> Reply {
    let mut r = http::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=UTF-8"),
    );
    r
}

fn bad_request(reason: &str) -> Reply {
    error(400, "illegal_argument_exception", Some(reason))
}

fn cluster_error(e: ClusterError) -> Reply {
    match e {
        ClusterError::NoMaster => error(503, "master_not_discovered_exception", None),
        ClusterError::Failed(r) => error(500, "exception", Some(&r)),
    }
}

/// Elasticsearch's answer to a path it has no handler for.
pub fn no_handler(method: &str, path: &str) -> Reply {
    reply(
        400,
        &json!({
            "error": format!("no handler found for uri [{path}] and method [{method}]"),
            "status": 400,
        }),
    )
}

fn view(node: &HttpNode) -> ClusterView {
    node.coordinator.view().borrow().clone()
}

/// This node's state once it caught up with the master's (what a master-node read action answers);
/// its own with `local=true`.
pub async fn master_view(node: &HttpNode, params: &Params) -> ClusterView {
    if !params.flag("local") {
        node.coordinator
            .sync_with_master(Duration::from_secs(5))
            .await;
    }
    view(node)
}

// ---- _cat ----------------------------------------------------------------------------------------

/// A `_cat` column: its name, aliases, and whether it is shown without `h`.
struct Column {
    name: &'static str,
    aliases: &'static [&'static str],
    default: bool,
}

const fn col(name: &'static str, aliases: &'static [&'static str], default: bool) -> Column {
    Column {
        name,
        aliases,
        default,
    }
}

/// Renders rows (column name → value, `None` for null) as `_cat` does: `format=json` objects keyed by
/// the requested column names, else aligned text (`v` adds the header line).
fn cat(
    params: &Params,
    columns: &[Column],
    rows: Vec<BTreeMap<&'static str, Option<String>>>,
) -> Reply {
    let selected: Vec<(String, &'static str)> = match params.get("h") {
        Some(h) if !h.is_empty() => h
            .split(',')
            .filter_map(|want| {
                let want = want.trim();
                columns
                    .iter()
                    .find(|c| c.name == want || c.aliases.contains(&want))
                    .map(|c| (want.to_owned(), c.name))
            })
            .collect(),
        _ => columns
            .iter()
            .filter(|c| c.default)
            .map(|c| (c.name.to_owned(), c.name))
            .collect(),
    };
    if params.get("format") == Some("json") {
        let out: Vec<Value> = rows
            .iter()
            .map(|r| {
                let m: Map<String, Value> = selected
                    .iter()
                    .map(|(shown, name)| {
                        let v = r.get(name).cloned().flatten();
                        (shown.clone(), v.map(Value::String).unwrap_or(Value::Null))
                    })
                    .collect();
                Value::Object(m)
            })
            .collect();
        return reply(200, &Value::Array(out));
    }
    let mut table: Vec<Vec<String>> = Vec::new();
    if params.flag("v") {
        table.push(selected.iter().map(|(s, _)| s.clone()).collect());
    }
    for r in &rows {
        table.push(
            selected
                .iter()
                .map(|(_, n)| r.get(n).cloned().flatten().unwrap_or_default())
                .collect(),
        );
    }
    let widths: Vec<usize> = (0..selected.len())
        .map(|i| table.iter().map(|row| row[i].len()).max().unwrap_or(0))
        .collect();
    let mut text = String::new();
    for row in table {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        text.push_str(cells.join(" ").trim_end());
        text.push('\n');
    }
    text_reply(200, text)
}

/// `node.role` letters, as `_cat/nodes` shows them (`-` for none).
pub fn role_letters(n: &DiscoveryNode) -> String {
    let mut letters: Vec<char> = n
        .roles
        .iter()
        .filter_map(|r| match r.as_str() {
            "data" => Some('d'),
            "data_cold" => Some('c'),
            "data_content" => Some('s'),
            "data_frozen" => Some('f'),
            "data_hot" => Some('h'),
            "data_warm" => Some('w'),
            "ingest" => Some('i'),
            "master" => Some('m'),
            "ml" => Some('l'),
            "remote_cluster_client" => Some('r'),
            "transform" => Some('t'),
            "voting_only" => Some('v'),
            _ => None,
        })
        .collect();
    letters.sort_unstable();
    if letters.is_empty() {
        "-".into()
    } else {
        letters.into_iter().collect()
    }
}

pub async fn cat_nodes(node: &HttpNode, params: &Params) -> Reply {
    const COLUMNS: [Column; 13] = [
        col("id", &["nodeId"], false),
        col("ip", &["i"], true),
        col("port", &["po"], false),
        col("heap.percent", &["hp", "heapPercent"], true),
        col("ram.percent", &["rp", "ramPercent"], true),
        col("cpu", &[], true),
        col("load_1m", &["l"], true),
        col("load_5m", &["l"], true),
        col("load_15m", &["l"], true),
        col("node.role", &["r", "role", "nodeRole"], true),
        col("master", &["m"], true),
        col("name", &["n"], true),
        col("version", &["v"], false),
    ];
    let v = master_view(node, params).await;
    let full_id = params.flag("full_id");
    let rows = v
        .state
        .nodes
        .values()
        .map(|n| {
            let id = if full_id {
                n.id.clone()
            } else {
                n.id.chars().take(4).collect()
            };
            let master = if v.master.as_ref().is_some_and(|m| m.id == n.id) {
                "*"
            } else {
                "-"
            };
            BTreeMap::from([
                ("id", Some(id)),
                ("ip", Some(n.address.ip().to_string())),
                ("port", Some(n.address.port().to_string())),
                ("heap.percent", Some("25".to_owned())),
                ("ram.percent", Some("50".to_owned())),
                ("cpu", Some("1".to_owned())),
                ("load_1m", Some("0.10".to_owned())),
                ("load_5m", Some("0.10".to_owned())),
                ("load_15m", Some("0.10".to_owned())),
                ("node.role", Some(role_letters(n))),
                ("master", Some(master.to_owned())),
                ("name", Some(n.name.clone())),
                ("version", Some(n.version.to_string())),
            ])
        })
        .collect();
    cat(params, &COLUMNS, rows)
}

pub async fn cat_shards(node: &HttpNode, params: &Params, index: Option<&str>) -> Reply {
    const COLUMNS: [Column; 11] = [
        col("index", &["i", "idx"], true),
        col("shard", &["s", "sh"], true),
        col("prirep", &["p", "pr", "primaryOrReplica"], true),
        col("state", &["st"], true),
        col("docs", &["d", "dc"], true),
        col("store", &["sto"], true),
        col("ip", &[], true),
        col("id", &[], false),
        col("node", &["n"], true),
        col("unassigned.reason", &["ur"], false),
        col("unassigned.at", &["ua"], false),
    ];
    let v = master_view(node, params).await;
    let me = v.local.id.clone();
    let mut rows = Vec::new();
    for (name, shards) in &v.state.routing {
        if index.is_some_and(|i| !i.split(',').any(|p| routing::simple_match(p, name))) {
            continue;
        }
        for (shard, t) in shards.iter().enumerate() {
            for c in &t.copies {
                let holder = c.node.as_deref().and_then(|n| v.state.nodes.get(n));
                let node_col = holder.map(|h| match c.relocating_node.as_deref() {
                    Some(target) => {
                        let t = v.state.nodes.get(target);
                        format!(
                            "{} -> {} {} {}",
                            h.name,
                            t.map(|t| t.address.ip().to_string()).unwrap_or_default(),
                            target,
                            t.map(|t| t.name.clone()).unwrap_or_default()
                        )
                    }
                    None => h.name.clone(),
                });
                let docs = (c.node.as_deref() == Some(&me) && c.state.active()).then(|| {
                    documents::count(&node.coordinator.docs.shard_dir(name, shard)).to_string()
                });
                rows.push(BTreeMap::from([
                    ("index", Some(name.clone())),
                    ("shard", Some(shard.to_string())),
                    ("prirep", Some(if c.primary { "p" } else { "r" }.to_owned())),
                    ("state", Some(c.state.name().to_owned())),
                    ("docs", docs),
                    ("store", c.state.active().then(|| "1kb".to_owned())),
                    ("ip", holder.map(|h| h.address.ip().to_string())),
                    ("id", c.node.clone()),
                    ("node", node_col),
                    (
                        "unassigned.reason",
                        c.unassigned.as_ref().map(|u| u.reason.clone()),
                    ),
                    (
                        "unassigned.at",
                        c.unassigned.as_ref().map(|u| u.at_ms.to_string()),
                    ),
                ]));
            }
        }
    }
    cat(params, &COLUMNS, rows)
}

pub async fn cat_health(node: &HttpNode, params: &Params) -> Reply {
    const COLUMNS: [Column; 14] = [
        col("epoch", &["t", "time"], true),
        col("timestamp", &["ts", "hms", "hhmmss"], true),
        col("cluster", &["cl"], true),
        col("status", &["st"], true),
        col("node.total", &["nt", "nodeTotal"], true),
        col("node.data", &["nd", "nodeData"], true),
        col("shards", &["t", "sh", "shards.total"], true),
        col("pri", &["p", "shards.primary"], true),
        col("relo", &["r", "shards.relocating"], true),
        col("init", &["i", "shards.initializing"], true),
        col("unassign", &["u", "shards.unassigned"], true),
        col("pending_tasks", &["pt"], true),
        col("max_task_wait_time", &["mtwt"], true),
        col("active_shards_percent", &["asp"], true),
    ];
    let v = master_view(node, params).await;
    let h = health_of_state(&v.state, None);
    let secs = now_ms() / 1000;
    let status = if v.master.is_none() {
        "red"
    } else {
        h.status_name()
    };
    let row = BTreeMap::from([
        ("epoch", Some(secs.to_string())),
        (
            "timestamp",
            Some(format!(
                "{:02}:{:02}:{:02}",
                secs / 3600 % 24,
                secs / 60 % 60,
                secs % 60
            )),
        ),
        ("cluster", Some(node.cluster_name.clone())),
        ("status", Some(status.to_owned())),
        ("node.total", Some(v.state.nodes.len().to_string())),
        (
            "node.data",
            Some(
                v.state
                    .nodes
                    .values()
                    .filter(|n| n.is_data())
                    .count()
                    .to_string(),
            ),
        ),
        ("shards", Some(h.active.to_string())),
        ("pri", Some(h.active_primary.to_string())),
        ("relo", Some(h.relocating.to_string())),
        ("init", Some(h.initializing.to_string())),
        ("unassign", Some(h.unassigned.to_string())),
        ("pending_tasks", Some("0".to_owned())),
        ("max_task_wait_time", Some("-".to_owned())),
        (
            "active_shards_percent",
            Some(format!("{:.1}%", percent(&h))),
        ),
    ]);
    cat(params, &COLUMNS, vec![row])
}

/// Shard health over the cluster, or over `index` only.
pub fn health_of_state(state: &ClusterState, index: Option<&str>) -> Health {
    let mut h = Health::default();
    for (name, shards) in &state.routing {
        if index.is_some_and(|i| i != name) {
            continue;
        }
        for t in shards {
            h.add(t);
        }
    }
    h
}

pub fn percent(h: &Health) -> f64 {
    if h.total == 0 {
        100.0
    } else {
        100.0 * h.active as f64 / h.total as f64
    }
}

// ---- nodes info ----------------------------------------------------------------------------------

pub fn nodes_info(node: &HttpNode) -> Reply {
    let v = view(node);
    let nodes: Map<String, Value> = v
        .state
        .nodes
        .values()
        .map(|n| {
            (
                n.id.clone(),
                json!({
                    "name": n.name,
                    "transport_address": n.address.to_string(),
                    "host": n.host,
                    "ip": n.address.ip().to_string(),
                    "version": n.version.to_string(),
                    "roles": n.roles,
                    "attributes": n.attributes,
                }),
            )
        })
        .collect();
    let count = nodes.len();
    reply(
        200,
        &json!({
            "_nodes": { "total": count, "successful": count, "failed": 0 },
            "cluster_name": node.cluster_name,
            "nodes": nodes,
        }),
    )
}

// ---- cluster settings ----------------------------------------------------------------------------

/// Flattens `{"a": {"b": 1}}` / `{"a.b": 1}` into `a.b → Some("1")`; `null` → `None`.
fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, Option<String>>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        Value::Null => {
            out.insert(prefix.to_owned(), None);
        }
        Value::String(s) => {
            out.insert(prefix.to_owned(), Some(s.clone()));
        }
        Value::Array(a) => {
            let items: Vec<String> = a
                .iter()
                .map(|i| match i {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect();
            out.insert(prefix.to_owned(), Some(items.join(",")));
        }
        other => {
            out.insert(prefix.to_owned(), Some(other.to_string()));
        }
    }
}

/// `a.b → v` as `{"a": {"b": v}}` (or as it is with `flat_settings=true`).
fn settings_json(m: &BTreeMap<String, String>, flat: bool) -> Value {
    if flat {
        return json!(m);
    }
    fn insert(map: &mut Map<String, Value>, parts: &[&str], v: &str) {
        match parts {
            [] => {}
            [last] => {
                map.insert((*last).to_owned(), Value::String(v.to_owned()));
            }
            [first, rest @ ..] => {
                let entry = map
                    .entry((*first).to_owned())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !entry.is_object() {
                    *entry = Value::Object(Map::new());
                }
                if let Value::Object(next) = entry {
                    insert(next, rest, v);
                }
            }
        }
    }
    let mut root = Map::new();
    for (k, v) in m {
        let parts: Vec<&str> = k.split('.').collect();
        insert(&mut root, &parts, v);
    }
    Value::Object(root)
}

pub async fn get_cluster_settings(node: &HttpNode, params: &Params) -> Reply {
    let v = master_view(node, params).await;
    let flat = params.flag("flat_settings");
    reply(
        200,
        &json!({
            "persistent": settings_json(&v.state.metadata.persistent, flat),
            "transient": settings_json(&v.state.metadata.transient, flat),
        }),
    )
}

pub async fn put_cluster_settings(node: &HttpNode, params: &Params, body: &[u8]) -> Reply {
    let parsed: Value = match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return error(
                400,
                "parse_exception",
                Some("request body is required and must be a JSON object"),
            );
        }
    };
    let current = view(node).state.metadata;
    let mut scopes: [(&str, BTreeMap<String, Option<String>>); 2] = [
        ("persistent", BTreeMap::new()),
        ("transient", BTreeMap::new()),
    ];
    for (scope, changes) in scopes.iter_mut() {
        let mut raw = BTreeMap::new();
        if let Some(v) = parsed.get(*scope) {
            flatten("", v, &mut raw);
        }
        let existing = if *scope == "persistent" {
            &current.persistent
        } else {
            &current.transient
        };
        for (k, v) in raw {
            // `"cluster.routing.allocation.exclude.*": null` resets them all.
            if v.is_none() && k.ends_with('*') {
                for e in existing.keys() {
                    if routing::simple_match(&k, e) {
                        changes.insert(e.clone(), None);
                    }
                }
                continue;
            }
            if !known_setting(&k) {
                return bad_request(&format!("{scope} setting [{k}], not recognized"));
            }
            if let Some(val) = &v
                && let Some(why) = invalid_value(&k, val)
            {
                return bad_request(&why);
            }
            changes.insert(k, v);
        }
    }
    let [(_, persistent), (_, transient)] = scopes;
    let timeout = params.time("master_timeout", DEFAULT_TIMEOUT);
    let update = ClusterUpdate::PutSettings {
        persistent: persistent.clone(),
        transient: transient.clone(),
    };
    if let Err(e) = node.coordinator.submit(update, timeout, |_| false).await {
        return cluster_error(e);
    }
    let shown = |m: &BTreeMap<String, Option<String>>| {
        let set: BTreeMap<String, String> = m
            .iter()
            .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
            .collect();
        settings_json(&set, params.flag("flat_settings"))
    };
    reply(
        200,
        &json!({ "acknowledged": true, "persistent": shown(&persistent), "transient": shown(&transient) }),
    )
}

// ---- indices -------------------------------------------------------------------------------------

/// An index setting from `{"settings": {"index": {"k": v}}}`, `{"settings": {"k": v}}` or
/// `{"settings": {"index.k": v}}` (`settings` itself for `_settings`).
fn index_setting(settings: &Value, key: &str) -> Option<String> {
    let mut flat = BTreeMap::new();
    flatten("", settings, &mut flat);
    flat.get(&format!("index.{key}"))
        .or_else(|| flat.get(key))
        .cloned()
        .flatten()
}

pub async fn create_index(node: &HttpNode, index: &str, params: &Params, body: &[u8]) -> Reply {
    if let Err(e) = documents::check_index(index) {
        return error(e.status, e.kind, Some(&e.reason));
    }
    let parsed: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        match serde_json::from_slice(body) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                return error(
                    400,
                    "parse_exception",
                    Some("request body must be a JSON object"),
                );
            }
        }
    };
    let settings = parsed.get("settings").cloned().unwrap_or(json!({}));
    let number = |key: &str, default: u32, min: u32| -> Result<u32, String> {
        match index_setting(&settings, key) {
            None => Ok(default),
            Some(v) => match v.trim_matches('"').parse::<u32>() {
                Ok(n) if n >= min => Ok(n),
                _ => Err(format!(
                    "Failed to parse value [{v}] for setting [index.{key}] must be >= {min}"
                )),
            },
        }
    };
    let shards = match number("number_of_shards", 1, 1) {
        Ok(n) => n,
        Err(r) => return bad_request(&r),
    };
    let replicas = match number("number_of_replicas", 1, 0) {
        Ok(n) => n,
        Err(r) => return bad_request(&r),
    };
    if let Some(meta) = view(node).state.metadata.indices.get(index) {
        return error(
            400,
            "resource_already_exists_exception",
            Some(&format!("index [{index}/{}] already exists", meta.uuid)),
        );
    }
    let timeout = params.time("timeout", DEFAULT_TIMEOUT);
    if let Err(e) = node
        .coordinator
        .create_index(index, shards, replicas, timeout)
        .await
    {
        return cluster_error(e);
    }
    // `wait_for_active_shards` defaults to 1: the primaries.
    let mut rx = node.coordinator.view();
    let active = rx.wait_for(|v| {
        v.state.routing.get(index).is_some_and(|s| {
            s.iter()
                .all(|t| t.primary().is_some_and(|p| p.state.active()))
        })
    });
    let shards_acknowledged = tokio::time::timeout(timeout, active).await.is_ok();
    reply(
        200,
        &json!({ "acknowledged": true, "shards_acknowledged": shards_acknowledged, "index": index }),
    )
}

pub async fn put_index_settings(
    node: &HttpNode,
    index: &str,
    params: &Params,
    body: &[u8],
) -> Reply {
    let parsed: Value = match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return error(
                400,
                "parse_exception",
                Some("request body must be a JSON object"),
            );
        }
    };
    let settings = parsed.get("settings").cloned().unwrap_or(parsed);
    if !view(node).state.metadata.indices.contains_key(index) {
        return error(
            404,
            "index_not_found_exception",
            Some(&format!("no such index [{index}]")),
        );
    }
    let replicas = match index_setting(&settings, "number_of_replicas") {
        None => None,
        Some(v) => match v.trim_matches('"').parse::<u32>() {
            Ok(n) => Some(n),
            Err(_) => {
                return bad_request(&format!(
                    "Failed to parse value [{v}] for setting [index.number_of_replicas]"
                ));
            }
        },
    };
    let delay_ms = match index_setting(&settings, "unassigned.node_left.delayed_timeout") {
        None => None,
        Some(v) => match routing::time_ms(&v) {
            Some(ms) => Some(ms),
            None => {
                return bad_request(&format!(
                    "failed to parse setting [index.unassigned.node_left.delayed_timeout] with value [{v}] as a time value"
                ));
            }
        },
    };
    let update = ClusterUpdate::UpdateIndexSettings {
        index: index.to_owned(),
        replicas,
        node_left_delay_ms: delay_ms,
    };
    match node
        .coordinator
        .submit(
            update,
            params.time("master_timeout", DEFAULT_TIMEOUT),
            |_| false,
        )
        .await
    {
        Ok(()) => reply(200, &json!({ "acknowledged": true })),
        Err(e) => cluster_error(e),
    }
}

/// `POST /_flush`, `/<index>/_flush` (and 7.17's deprecated `_flush/synced`): every copy is durable
/// already, so a flush only reports the copies.
pub fn flush(node: &HttpNode, index: Option<&str>) -> Reply {
    let v = view(node);
    if let Some(i) = index
        && !v.state.indices.contains(i)
    {
        return error(
            404,
            "index_not_found_exception",
            Some(&format!("no such index [{i}]")),
        );
    }
    let h = health_of_state(&v.state, index);
    reply(
        200,
        &json!({ "_shards": { "total": h.total, "successful": h.active, "failed": 0 } }),
    )
}

// ---- node shutdown -------------------------------------------------------------------------------

/// The node shutdown API arrived in 7.15.
pub fn has_shutdown_api(v: EsVersion) -> bool {
    v >= EsVersion::new(7, 15, 0)
}

pub async fn put_shutdown(node: &HttpNode, node_id: &str, params: &Params, body: &[u8]) -> Reply {
    let parsed: Value = match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => v,
        _ => return error(400, "parse_exception", Some("request body is required")),
    };
    let kind = match parsed.get("type").and_then(Value::as_str) {
        Some(t) => t.to_lowercase(),
        None => {
            return error(
                400,
                "action_request_validation_exception",
                Some("Validation Failed: 1: shutdown type is required;"),
            );
        }
    };
    let replace_ok = node.version >= EsVersion::new(7, 16, 0);
    if !(kind == "restart" || kind == "remove" || (kind == "replace" && replace_ok)) {
        return bad_request(&format!(
            "No enum constant org.elasticsearch.cluster.metadata.SingleNodeShutdownMetadata.Type.{}",
            kind.to_uppercase()
        ));
    }
    let Some(reason) = parsed.get("reason").and_then(Value::as_str) else {
        return error(
            400,
            "action_request_validation_exception",
            Some("Validation Failed: 1: reason is required;"),
        );
    };
    let allocation_delay_ms = match parsed.get("allocation_delay").and_then(Value::as_str) {
        None => None,
        Some(_) if kind != "restart" => {
            return bad_request(
                "[allocation_delay] is only allowed for RESTART-type shutdown requests",
            );
        }
        Some(d) => match routing::time_ms(d) {
            Some(ms) => Some(ms),
            None => return bad_request(&format!("failed to parse [allocation_delay] value [{d}]")),
        },
    };
    let target_node_name = parsed
        .get("target_node_name")
        .and_then(Value::as_str)
        .map(str::to_owned);
    match (kind.as_str(), &target_node_name) {
        ("replace", None) => {
            return error(
                400,
                "action_request_validation_exception",
                Some(
                    "Validation Failed: 1: target node name is required for REPLACE type shutdowns;",
                ),
            );
        }
        (k, Some(_)) if k != "replace" => {
            return error(
                400,
                "action_request_validation_exception",
                Some(
                    "Validation Failed: 1: target node name is only valid for REPLACE type shutdowns;",
                ),
            );
        }
        _ => {}
    }
    let record = ShutdownRecord {
        node_id: node_id.to_owned(),
        kind,
        reason: reason.to_owned(),
        started_ms: now_ms(),
        allocation_delay_ms,
        target_node_name,
    };
    match node
        .coordinator
        .submit(
            ClusterUpdate::PutShutdown(record),
            params.time("master_timeout", DEFAULT_TIMEOUT),
            |_| false,
        )
        .await
    {
        Ok(()) => reply(200, &json!({ "acknowledged": true })),
        Err(e) => cluster_error(e),
    }
}

pub async fn delete_shutdown(node: &HttpNode, node_id: &str, params: &Params) -> Reply {
    if !view(node).state.metadata.shutdowns.contains_key(node_id) {
        return error(
            404,
            "resource_not_found_exception",
            Some(&format!("node [{node_id}] is not currently shutting down")),
        );
    }
    let id = node_id.to_owned();
    match node
        .coordinator
        .submit(
            ClusterUpdate::DeleteShutdown {
                node_id: node_id.to_owned(),
            },
            params.time("master_timeout", DEFAULT_TIMEOUT),
            move |v| !v.state.metadata.shutdowns.contains_key(&id),
        )
        .await
    {
        Ok(()) => reply(200, &json!({ "acknowledged": true })),
        Err(e) => cluster_error(e),
    }
}

/// `GET _nodes[/<ids>]/shutdown`.
pub async fn get_shutdown(node: &HttpNode, ids: Option<&str>, params: &Params) -> Reply {
    if node
        .coordinator
        .wait_for_master(params.time("master_timeout", DEFAULT_TIMEOUT))
        .await
        .is_none()
    {
        return error(503, "master_not_discovered_exception", None);
    }
    let v = master_view(node, params).await;
    let wanted: Option<Vec<&str>> = ids.map(|i| i.split(',').collect());
    let nodes: Vec<Value> = v
        .state
        .metadata
        .shutdowns
        .values()
        .filter(|r| {
            wanted
                .as_ref()
                .is_none_or(|w| w.contains(&r.node_id.as_str()))
        })
        .map(|r| shutdown_status(&v.state, r))
        .collect();
    reply(200, &json!({ "nodes": nodes }))
}

fn shutdown_status(state: &ClusterState, r: &ShutdownRecord) -> Value {
    let (status, remaining, explanation) = if r.kind == "restart" {
        (
            "COMPLETE",
            0,
            Some("no shard relocation is necessary for a node restart".to_owned()),
        )
    } else if !state.nodes.contains_key(&r.node_id) {
        ("COMPLETE", 0, None)
    } else {
        let mut remaining = 0;
        let mut moving = false;
        let mut stuck: Option<String> = None;
        for (index, shards) in &state.routing {
            for (shard, t) in shards.iter().enumerate() {
                for c in t
                    .copies
                    .iter()
                    .filter(|c| c.node.as_deref() == Some(&r.node_id))
                {
                    remaining += 1;
                    match c.state {
                        CopyState::Relocating => moving = true,
                        CopyState::Started if stuck.is_none() => {
                            stuck = Some(format!(
                                "shard [{shard}] [{}] of index [{index}] cannot move, use the Cluster Allocation Explain API on this shard for details",
                                if c.primary { "primary" } else { "replica" }
                            ));
                        }
                        _ => {}
                    }
                }
            }
        }
        if remaining == 0 {
            ("COMPLETE", 0, None)
        } else if !moving && stuck.is_some() {
            ("STALLED", remaining, stuck)
        } else {
            ("IN_PROGRESS", remaining, None)
        }
    };
    let mut migration = json!({ "status": status, "shard_migrations_remaining": remaining });
    if let Some(e) = explanation {
        migration["explanation"] = json!(e);
    }
    let mut out = json!({
        "node_id": r.node_id,
        "type": r.kind.to_uppercase(),
        "reason": r.reason,
        "shutdown_startedmillis": r.started_ms,
        "status": status,
        "shard_migration": migration,
        "persistent_tasks": { "status": "COMPLETE" },
        "plugins": { "status": "COMPLETE" },
    });
    if r.kind == "restart" {
        let ms = r
            .allocation_delay_ms
            .unwrap_or(routing::DEFAULT_RESTART_DELAY_MS);
        out["allocation_delay"] = json!(format_time(ms));
    }
    if let Some(t) = &r.target_node_name {
        out["target_node_name"] = json!(t);
    }
    out
}

/// A duration as Elasticsearch prints a `TimeValue` (`5m`, `30s`, `250ms`).
fn format_time(ms: u64) -> String {
    if ms > 0 && ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms > 0 && ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms > 0 && ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

// ---- voting configuration exclusions -------------------------------------------------------------

pub async fn add_voting_exclusions(node: &HttpNode, params: &Params) -> Reply {
    let (names, ids) = (params.get("node_names"), params.get("node_ids"));
    let v = view(node);
    let exclusions: Vec<VotingExclusion> = match (names, ids) {
        (Some(names), None) => names
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|name| VotingExclusion {
                node_id: v
                    .state
                    .nodes
                    .values()
                    .find(|n| n.name == name)
                    .map(|n| n.id.clone())
                    .unwrap_or_else(|| "_absent_".into()),
                node_name: name.to_owned(),
            })
            .collect(),
        (None, Some(ids)) => ids
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|id| VotingExclusion {
                node_id: id.to_owned(),
                node_name: v
                    .state
                    .nodes
                    .get(id)
                    .map(|n| n.name.clone())
                    .unwrap_or_else(|| "_absent_".into()),
            })
            .collect(),
        _ => {
            return bad_request(
                "Please set node identifiers correctly. One and only one of [node_name], [node_names] and [node_ids] has to be set",
            );
        }
    };
    let existing = &v.state.metadata.voting_config_exclusions;
    let max: usize = v
        .state
        .metadata
        .transient
        .get("cluster.max_voting_config_exclusions")
        .or_else(|| {
            v.state
                .metadata
                .persistent
                .get("cluster.max_voting_config_exclusions")
        })
        .and_then(|m| m.parse().ok())
        .unwrap_or(10);
    let new: Vec<&VotingExclusion> = exclusions
        .iter()
        .filter(|e| !existing.contains(e))
        .collect();
    if existing.len() + new.len() > max {
        return bad_request(&format!(
            "add voting config exclusions request for {} would add [{}] exclusions to the existing [{}] which would exceed the maximum of [{max}] set by [cluster.max_voting_config_exclusions]",
            describe(&exclusions),
            new.len(),
            existing.len()
        ));
    }
    let timeout = params.time("timeout", DEFAULT_TIMEOUT);
    let deadline = tokio::time::Instant::now() + timeout;
    if let Err(e) = node
        .coordinator
        .submit(
            ClusterUpdate::AddVotingExclusions(exclusions.clone()),
            timeout,
            |_| false,
        )
        .await
    {
        return cluster_error(e);
    }
    let excluded: Vec<String> = exclusions.iter().map(|e| e.node_id.clone()).collect();
    let mut rx = node.coordinator.view();
    let removed = rx.wait_for(|v| {
        !excluded
            .iter()
            .any(|id| v.state.last_committed_config.0.contains(id))
    });
    match tokio::time::timeout_at(deadline, removed).await {
        Ok(Ok(_)) => reply(200, &json!({})),
        _ => error(
            500,
            "timeout_exception",
            Some(&format!(
                "timed out waiting for voting config exclusions {} to take effect",
                describe(&exclusions)
            )),
        ),
    }
}

fn describe(e: &[VotingExclusion]) -> String {
    let parts: Vec<String> = e
        .iter()
        .map(|e| format!("{{{}}}{{{}}}", e.node_id, e.node_name))
        .collect();
    format!("[{}]", parts.join(", "))
}

pub async fn clear_voting_exclusions(node: &HttpNode, params: &Params) -> Reply {
    let wait = params.get("wait_for_removal") != Some("false");
    let timeout = params.time("timeout", DEFAULT_TIMEOUT);
    let deadline = tokio::time::Instant::now() + timeout;
    if wait {
        let mut rx = node.coordinator.view();
        let gone = rx.wait_for(|v| {
            v.state
                .metadata
                .voting_config_exclusions
                .iter()
                .all(|e| !v.state.nodes.contains_key(&e.node_id))
        });
        if tokio::time::timeout_at(deadline, gone).await.is_err() {
            let still = describe(&view(node).state.metadata.voting_config_exclusions);
            return error(
                500,
                "timeout_exception",
                Some(&format!(
                    "timed out waiting for removal of nodes; if nodes should not be removed, set waitForRemoval to false. {still}"
                )),
            );
        }
    }
    match node
        .coordinator
        .submit(ClusterUpdate::ClearVotingExclusions, timeout, |v| {
            v.state.metadata.voting_config_exclusions.is_empty()
        })
        .await
    {
        Ok(()) => reply(200, &json!({})),
        Err(e) => cluster_error(e),
    }
}

/// `metadata` of `GET _cluster/state`: the coordination metadata and the indices.
pub fn metadata_json(state: &ClusterState) -> Value {
    let indices: Map<String, Value> = state
        .metadata
        .indices
        .iter()
        .map(|(name, m)| {
            let in_sync: Map<String, Value> = state
                .routing
                .get(name)
                .map(|s| {
                    s.iter()
                        .enumerate()
                        .map(|(i, t)| (i.to_string(), json!(t.in_sync)))
                        .collect()
                })
                .unwrap_or_default();
            (
                name.clone(),
                json!({
                    "state": "open",
                    "settings": { "index": {
                        "uuid": m.uuid,
                        "number_of_shards": m.number_of_shards.to_string(),
                        "number_of_replicas": m.number_of_replicas.to_string(),
                        "creation_date": m.creation_date_ms.to_string(),
                        "unassigned": { "node_left": { "delayed_timeout": format_time(m.node_left_delay_ms) } },
                    } },
                    "in_sync_allocations": in_sync,
                }),
            )
        })
        .collect();
    json!({
        "cluster_uuid": state.cluster_uuid,
        "cluster_uuid_committed": state.uuid_committed,
        "cluster_coordination": {
            "term": state.term,
            "last_committed_config": state.last_committed_config.0,
            "last_accepted_config": state.last_accepted_config.0,
            "voting_config_exclusions": state.metadata.voting_config_exclusions.iter()
                .map(|e| json!({ "node_id": e.node_id, "node_name": e.node_name }))
                .collect::<Vec<_>>(),
        },
        "persistent": settings_json(&state.metadata.persistent, false),
        "transient": settings_json(&state.metadata.transient, false),
        "indices": indices,
    })
}

/// `routing_table` of `GET _cluster/state`.
pub fn routing_json(state: &ClusterState) -> Value {
    let indices: Map<String, Value> = state
        .routing
        .iter()
        .map(|(name, shards)| {
            let s: Map<String, Value> = shards
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    let copies: Vec<Value> = t
                        .copies
                        .iter()
                        .map(|c| {
                            json!({
                                "state": c.state.name(),
                                "primary": c.primary,
                                "node": c.node,
                                "relocating_node": c.relocating_node,
                                "shard": i,
                                "index": name,
                                "allocation_id": c.allocation_id.as_ref().map(|id| json!({ "id": id })),
                                "unassigned_info": c.unassigned.as_ref().map(|u| json!({
                                    "reason": u.reason, "at": u.at_ms, "delayed": u.delayed,
                                    "last_node": u.last_node,
                                })),
                            })
                        })
                        .collect();
                    (i.to_string(), Value::Array(copies))
                })
                .collect();
            (name.clone(), json!({ "shards": s }))
        })
        .collect();
    json!({ "indices": indices })
}
