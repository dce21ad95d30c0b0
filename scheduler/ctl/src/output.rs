//! Rendering of admin answers: tables for people, JSON for scripts.
//!
//! The JSON field names are a contract scripts rely on; change them only by adding fields.
//! - `nodes`: an array of objects with `id` (integer), `state` (upper-case string, `RUNNING` when its task
//!   runs), `agent` (host or null), `agent_id` (string or null), `task_id` (string or null), `http_port`
//!   and `transport_port` (integer or null), `volumes` (array of names), `reason` (string or null),
//!   `since_unix_ms` (integer), `unreachable_since_unix_ms` (integer, or null unless its task is
//!   UNREACHABLE) and `next_action` (`{"kind": "none"|"wait_operator"|"replace_at"|"es_still_sees_it",
//!   "at_unix_ms": integer or null (set with `replace_at`), "text": string}`: what the scheduler will do
//!   about an UNREACHABLE node) and `joined` (bool: it runs and its last `GET /` named the cluster's
//!   UUID), `es_joined` (bool: Elasticsearch's elected master lists it, as the scheduler last polled),
//!   `shards` (integer: shard copies it holds, or null when unknown) and `removal` (null, or
//!   `{"kind": "scale_down"|"replace", "step": "move_data"|"exclude_voting"|"stop"|"clear", "waiting":
//!   string, "stalled": bool}` while it is being removed safely) and `group` (string: the node's group,
//!   `default` for the nodes of no `--group`; `id` is the node's id within it) and `config_generation`
//!   (integer: the stored configuration generation it runs, or launches with next) and
//!   `certificate_not_after` (integer Unix seconds: when the certificate signed for its newest launch
//!   expires; null when none is recorded: security off, or an older scheduler).
//! - `volumes`: an array of objects with `name`, `node_id`, `group`, `exists` (bool), `size_bytes` and `free_bytes`
//!   (integer or null), `zone` (string or null), `attached_to` (host or null), `last_error` (string or null).
//! - `agents`: an array of objects with `host`, `agent_id`, `sidecar_connected`, `last_report_age_ms`,
//!   `driver_healthy`, `driver_latency_micros`, `driver_error`, `zone`, `attachments_used`,
//!   `attachments_max`, `volumes_seen`, `last_decline_reason`, `observes` (integer: volumes its sidecar is
//!   assigned to observe; 0 when disconnected).
//! - `status`: an object with `framework_id` (string or null), `framework_name`, `master`, `subscribed_since_unix_ms`,
//!   `desired`, `running`, `strategy`, `driver`, `leader`, `leader_address`, `cluster_uuid` (string, null
//!   before the cluster bootstrapped), `security` (`off`, `transport` or `full`), `health` (`green`,
//!   `yellow`, `red` or `unknown`), `shards` (`{active, relocating, initializing, unassigned}` or null),
//!   `es_master` (the elected master's node name, or null) and `groups` (an array of
//!   `{"name", "desired", "running"}`, one per node group; `default` alone without `--group`).
//! - `bootstrap reset`: `{message}`.
//! - `update`, `restart`, `rollout status|pause|resume|abort|rollback`: `{"config_generation",
//!   "state": "idle|running|paused|done|aborted", "done": [ids], "current": id|null, "pending": [ids],
//!   "reason": string|null}`, plus `step` (the current node's step, or null), `message` (what the
//!   request did, or null) and `nodes` (`{"done", "current", "pending"}` as `{"id", "group"}` objects).
//! - `scale`: `{previous, desired, start: [ids], stop: [ids], group}` (ids within the group); `replace`: `{node_id, old_task_id, message}`;
//!   `agents gone`: `{agent_ids: [ids], message}`;
//!   `watch`: one JSON object per line with `at_unix_ms`, `kind`, `node_id`, `host`, `task_id`, `message`;
//!   `--wait` progress: one `{"progress": "..."}` object per line.
//! - `agent-token HOST`: `{host, expires_unix_ms, token}` (the table format prints the token alone on its
//!   last line, for `tail -n1`); `agent-token --rotate-secret`: `{message}`.
//! - `endpoints`: an array of objects with `id` (integer), `host`, `http_port` (integer) and `address`
//!   (`host:http_port`), one per node that runs and has joined the Elasticsearch cluster (`joined`),
//!   lowest id first.

use std::io::Write;

use serde::Serialize;
use tether_proto::v1::{
    Agent, Cluster, ClusterEvent, MarkAgentGoneResponse, MintAgentTokenResponse, Node,
    ReplaceNodeResponse, RolloutNode, RolloutStatus, ScaleResponse, Volume,
};

/// How answers are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

fn opt(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

fn opt_port(p: u32) -> Option<u32> {
    (p != 0).then_some(p)
}

/// One node as scripts see it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NodeView {
    pub id: u64,
    pub state: String,
    pub agent: Option<String>,
    pub agent_id: Option<String>,
    pub task_id: Option<String>,
    pub http_port: Option<u32>,
    pub transport_port: Option<u32>,
    pub volumes: Vec<String>,
    pub reason: Option<String>,
    pub since_unix_ms: u64,
    pub unreachable_since_unix_ms: Option<u64>,
    pub next_action: NextActionView,
    pub joined: bool,
    pub es_joined: bool,
    pub shards: Option<u64>,
    pub removal: Option<RemovalView>,
    pub group: String,
    /// The stored configuration generation it runs (0: an older scheduler did not say).
    pub config_generation: u64,
    /// When its certificate expires, Unix seconds (`None`: none recorded, or an older scheduler).
    pub certificate_not_after: Option<u64>,
}

/// A node being removed safely.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RemovalView {
    pub kind: String,
    pub step: String,
    pub waiting: String,
    pub stalled: bool,
}

/// The group an answer names; an older scheduler names none: its nodes are the default group's.
fn group_or_default(g: &str) -> String {
    if g.is_empty() {
        "default".to_owned()
    } else {
        g.to_owned()
    }
}

/// What the scheduler will do about an UNREACHABLE node.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NextActionView {
    /// `none`, `wait_operator`, `replace_at` or `es_still_sees_it`.
    pub kind: String,
    /// With `replace_at`: when.
    pub at_unix_ms: Option<u64>,
    pub text: String,
}

impl NodeView {
    /// The node has, or may have, a task: it counts against the desired number.
    pub fn is_live(&self) -> bool {
        matches!(
            self.state.as_str(),
            "PREPARING"
                | "STAGING"
                | "STARTING"
                | "RUNNING"
                | "KILLING"
                | "STOPPING"
                | "UNREACHABLE"
        )
    }
}

impl From<&Node> for NodeView {
    fn from(n: &Node) -> Self {
        NodeView {
            id: n.id,
            state: n.state.clone(),
            agent: opt(&n.host),
            agent_id: opt(&n.agent_id),
            task_id: opt(&n.task_id),
            http_port: opt_port(n.http_port),
            transport_port: opt_port(n.transport_port),
            volumes: n.volumes.clone(),
            reason: opt(&n.reason),
            since_unix_ms: n.since_unix_ms,
            unreachable_since_unix_ms: n.unreachable_since_unix_ms,
            joined: n.joined,
            es_joined: n.es_joined,
            shards: n.shards,
            removal: n.removal.as_ref().map(|r| RemovalView {
                kind: r.kind.clone(),
                step: r.step.clone(),
                waiting: r.waiting.clone(),
                stalled: r.stalled,
            }),
            group: group_or_default(&n.group),
            config_generation: n.config_generation,
            certificate_not_after: n.certificate_not_after,
            next_action: match &n.next_action {
                Some(a) => NextActionView {
                    kind: if a.kind.is_empty() {
                        "none".to_owned()
                    } else {
                        a.kind.clone()
                    },
                    at_unix_ms: (a.at_unix_ms != 0).then_some(a.at_unix_ms),
                    text: a.text.clone(),
                },
                // An older scheduler says nothing: nothing is planned as far as we know.
                None => NextActionView {
                    kind: "none".to_owned(),
                    at_unix_ms: None,
                    text: String::new(),
                },
            },
        }
    }
}

/// How long ago `unix_ms` was, seen at `now_unix_ms`, in whole seconds (`1m 12s`).
#[must_use]
pub fn ago(unix_ms: u64, now_unix_ms: u64) -> String {
    let secs = now_unix_ms.saturating_sub(unix_ms) / 1000;
    humantime::format_duration(std::time::Duration::from_secs(secs)).to_string()
}

fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[derive(Debug, Serialize)]
struct VolumeView {
    name: String,
    node_id: u64,
    group: String,
    exists: bool,
    size_bytes: Option<u64>,
    free_bytes: Option<u64>,
    zone: Option<String>,
    attached_to: Option<String>,
    last_error: Option<String>,
}

impl From<&Volume> for VolumeView {
    fn from(v: &Volume) -> Self {
        VolumeView {
            name: v.name.clone(),
            node_id: v.node_id,
            group: group_or_default(&v.group),
            exists: v.exists,
            size_bytes: v.size_bytes,
            free_bytes: v.free_bytes,
            zone: opt(&v.zone),
            attached_to: opt(&v.attached_to),
            last_error: opt(&v.last_error),
        }
    }
}

#[derive(Debug, Serialize)]
struct AgentView {
    host: String,
    agent_id: Option<String>,
    sidecar_connected: bool,
    last_report_age_ms: Option<u64>,
    driver_healthy: bool,
    driver_latency_micros: u64,
    driver_error: Option<String>,
    zone: Option<String>,
    attachments_used: u32,
    attachments_max: u32,
    volumes_seen: u32,
    last_decline_reason: Option<String>,
    observes: u32,
    maintenance: Option<MaintenanceView>,
}

/// An agent's maintenance, as `agents --output json` shows it.
#[derive(Debug, Serialize)]
struct MaintenanceView {
    start_unix_ms: Option<u64>,
    duration_ms: Option<u64>,
    draining: bool,
    nodes: u32,
}

impl MaintenanceView {
    /// The table's words: `draining`, or the window (`since start` when it began before the
    /// scheduler did), with the nodes still there.
    fn words(&self) -> String {
        let window = if self.draining {
            "draining".to_owned()
        } else {
            let from = self.start_unix_ms.map_or_else(
                || "started".to_owned(),
                |ms| {
                    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
                    format!("from {}", humantime::format_rfc3339_seconds(at))
                },
            );
            match self.duration_ms {
                Some(d) => format!(
                    "{from} for {}",
                    humantime::format_duration(std::time::Duration::from_secs(d / 1000))
                ),
                None => format!("{from} for good"),
            }
        };
        format!("{window}, {} node(s) on it", self.nodes)
    }
}

impl From<&Agent> for AgentView {
    fn from(a: &Agent) -> Self {
        AgentView {
            host: a.host.clone(),
            agent_id: opt(&a.agent_id),
            sidecar_connected: a.sidecar_connected,
            last_report_age_ms: a.last_report_age_ms,
            driver_healthy: a.driver_healthy,
            driver_latency_micros: a.driver_latency_micros,
            driver_error: opt(&a.driver_error),
            zone: opt(&a.zone),
            attachments_used: a.attachments_used,
            attachments_max: a.attachments_max,
            volumes_seen: a.volumes_seen,
            last_decline_reason: opt(&a.last_decline_reason),
            observes: a.observes,
            maintenance: a.maintenance.as_ref().map(|m| MaintenanceView {
                start_unix_ms: m.start_unix_ms,
                duration_ms: m.duration_ms,
                draining: m.draining,
                nodes: m.nodes,
            }),
        }
    }
}

#[derive(Debug, Serialize)]
struct ClusterView {
    framework_id: Option<String>,
    framework_name: String,
    master: Option<String>,
    subscribed_since_unix_ms: Option<u64>,
    desired: u64,
    running: u64,
    strategy: String,
    driver: Option<String>,
    leader: bool,
    leader_address: Option<String>,
    cluster_uuid: Option<String>,
    security: String,
    health: String,
    shards: Option<ShardCountsView>,
    es_master: Option<String>,
    groups: Vec<GroupView>,
}

#[derive(Debug, Serialize)]
struct ShardCountsView {
    active: u64,
    relocating: u64,
    initializing: u64,
    unassigned: u64,
}

/// One group's counts, as `status --output json` shows them.
#[derive(Debug, Serialize)]
struct GroupView {
    name: String,
    desired: u64,
    running: u64,
    #[serde(skip)]
    roles: Option<Vec<String>>,
}

impl From<&Cluster> for ClusterView {
    fn from(c: &Cluster) -> Self {
        ClusterView {
            framework_id: opt(&c.framework_id),
            framework_name: c.framework_name.clone(),
            master: opt(&c.master),
            subscribed_since_unix_ms: (c.subscribed_since_unix_ms != 0)
                .then_some(c.subscribed_since_unix_ms),
            desired: c.desired,
            running: c.running,
            strategy: c.strategy.clone(),
            driver: opt(&c.driver),
            leader: c.leader,
            leader_address: opt(&c.leader_address),
            cluster_uuid: c.cluster_uuid.clone().filter(|u| !u.is_empty()),
            security: c.security.clone(),
            // An older scheduler says nothing: unknown.
            health: opt(&c.health).unwrap_or_else(|| "unknown".to_owned()),
            shards: c.shards.map(|k| ShardCountsView {
                active: k.active,
                relocating: k.relocating,
                initializing: k.initializing,
                unassigned: k.unassigned,
            }),
            es_master: opt(&c.es_master),
            groups: if c.groups.is_empty() {
                // An older scheduler: one group of every node.
                vec![GroupView {
                    name: "default".to_owned(),
                    desired: c.desired,
                    running: c.running,
                    roles: None,
                }]
            } else {
                c.groups
                    .iter()
                    .map(|g| GroupView {
                        name: g.name.clone(),
                        desired: g.desired,
                        running: g.running,
                        roles: (!g.roles_default).then(|| g.roles.clone()),
                    })
                    .collect()
            },
        }
    }
}

fn json_line(out: &mut (dyn Write + Send), value: &impl Serialize) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    writeln!(out)
}

fn dash(s: Option<impl ToString>) -> String {
    s.map(|v| v.to_string()).unwrap_or_else(|| "-".to_owned())
}

fn bytes(b: Option<u64>) -> String {
    const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
    match b {
        Some(b) if b >= 1024 * 1024 * 1024 => format!("{:.1}GiB", b as f64 / GIB),
        Some(b) => format!("{:.1}MiB", b as f64 / (1024.0 * 1024.0)),
        None => "-".to_owned(),
    }
}

/// Left-aligned columns, two spaces apart, header first.
pub fn table(
    out: &mut (dyn Write + Send),
    header: &[&str],
    rows: &[Vec<String>],
) -> std::io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        s.trim_end().to_owned()
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for row in rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

pub fn cluster(out: &mut (dyn Write + Send), format: Format, c: &Cluster) -> std::io::Result<()> {
    let v = ClusterView::from(c);
    if format == Format::Json {
        return json_line(out, &v);
    }
    let rows = [
        (
            "framework",
            format!("{} ({})", v.framework_name, dash(v.framework_id.as_deref())),
        ),
        ("master", dash(v.master.as_deref())),
        (
            "nodes",
            format!("{} running / {} desired", v.running, v.desired),
        ),
        (
            "groups",
            v.groups
                .iter()
                .map(|g| {
                    let roles = match &g.roles {
                        None => "every role".to_owned(),
                        Some(r) if r.is_empty() => "coordinating-only".to_owned(),
                        Some(r) => r.join("+"),
                    };
                    format!("{} {}/{} ({roles})", g.name, g.running, g.desired)
                })
                .collect::<Vec<_>>()
                .join(", "),
        ),
        (
            "strategy",
            format!("{} {}", v.strategy, v.driver.as_deref().unwrap_or("")),
        ),
        (
            "bootstrap",
            match &v.cluster_uuid {
                Some(uuid) => format!("cluster uuid {uuid}"),
                None => "not yet (no node has reported a cluster uuid)".to_owned(),
            },
        ),
        (
            "health",
            match &v.shards {
                Some(k) => format!(
                    "{} ({} active, {} relocating, {} initializing, {} unassigned shards; master {})",
                    v.health,
                    k.active,
                    k.relocating,
                    k.initializing,
                    k.unassigned,
                    dash(v.es_master.as_deref())
                ),
                None => v.health.clone(),
            },
        ),
        ("security", v.security.clone()),
        (
            "leader",
            if v.leader {
                "this scheduler".to_owned()
            } else {
                dash(v.leader_address.as_deref())
            },
        ),
    ];
    for (k, val) in rows {
        writeln!(out, "{k:<10} {}", val.trim_end())?;
    }
    Ok(())
}

pub fn nodes(out: &mut (dyn Write + Send), format: Format, nodes: &[Node]) -> std::io::Result<()> {
    let views: Vec<NodeView> = nodes.iter().map(NodeView::from).collect();
    if format == Format::Json {
        return json_line(out, &views);
    }
    let now = now_unix_ms();
    let grouped = views.iter().any(|n| n.group != "default");
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|n| {
            vec![
                if grouped {
                    format!("{}/{}", n.group, n.id)
                } else {
                    n.id.to_string()
                },
                n.state.clone(),
                match (n.es_joined, n.state.as_str()) {
                    (true, _) => "joined".to_owned(),
                    // RUNNING in Mesos but not in the cluster: worth seeing at a glance.
                    (false, "RUNNING") => "not joined".to_owned(),
                    _ => "-".to_owned(),
                },
                dash(n.shards),
                // 0: an older scheduler did not say.
                dash((n.config_generation > 0).then_some(n.config_generation)),
                dash(n.agent.as_deref()),
                match (n.http_port, n.transport_port) {
                    (Some(h), Some(t)) => format!("{h},{t}"),
                    _ => "-".to_owned(),
                },
                dash(n.task_id.as_deref()),
                n.volumes.join(","),
                match n.unreachable_since_unix_ms {
                    // How long, and what will end it.
                    Some(t) => format!(
                        "unreachable for {}; {}",
                        ago(t, now),
                        dash(n.reason.as_deref())
                    ),
                    None => dash(n.reason.as_deref()),
                },
            ]
        })
        .collect();
    table(
        out,
        &[
            if grouped { "GROUP/ID" } else { "ID" },
            "STATE",
            "ES",
            "SHARDS",
            "GEN",
            "AGENT",
            "PORTS",
            "TASK",
            "VOLUMES",
            "REASON",
        ],
        &rows,
    )
}

/// The answer of `agents gone`.
pub fn agents_gone(
    out: &mut (dyn Write + Send),
    format: Format,
    r: &MarkAgentGoneResponse,
) -> std::io::Result<()> {
    #[derive(Serialize)]
    struct View<'a> {
        agent_ids: &'a [String],
        message: &'a str,
    }
    if format == Format::Json {
        return json_line(
            out,
            &View {
                agent_ids: &r.agent_ids,
                message: &r.message,
            },
        );
    }
    writeln!(out, "{}", r.message)
}

pub fn agents(
    out: &mut (dyn Write + Send),
    format: Format,
    agents: &[Agent],
) -> std::io::Result<()> {
    let views: Vec<AgentView> = agents.iter().map(AgentView::from).collect();
    if format == Format::Json {
        return json_line(out, &views);
    }
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|a| {
            vec![
                a.host.clone(),
                dash(a.agent_id.as_deref()),
                if a.sidecar_connected { "yes" } else { "no" }.to_owned(),
                a.last_report_age_ms
                    .map(|ms| format!("{:.1}s", ms as f64 / 1000.0))
                    .unwrap_or("-".into()),
                if a.driver_healthy {
                    format!("ok {}ms", a.driver_latency_micros / 1000)
                } else {
                    format!("down {}", a.driver_error.as_deref().unwrap_or(""))
                },
                dash(a.zone.as_deref()),
                if a.attachments_max == 0 {
                    format!("{}/-", a.attachments_used)
                } else {
                    format!("{}/{}", a.attachments_used, a.attachments_max)
                },
                a.volumes_seen.to_string(),
                a.observes.to_string(),
                a.maintenance
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), MaintenanceView::words),
                dash(a.last_decline_reason.as_deref()),
            ]
        })
        .collect();
    table(
        out,
        &[
            "HOST",
            "AGENT",
            "SIDECAR",
            "REPORT",
            "DRIVER",
            "ZONE",
            "ATTACH",
            "VOLUMES",
            "OBSERVES",
            "MAINTENANCE",
            "LAST DECLINE",
        ],
        &rows,
    )
}

pub fn volumes(
    out: &mut (dyn Write + Send),
    format: Format,
    volumes: &[Volume],
) -> std::io::Result<()> {
    let views: Vec<VolumeView> = volumes.iter().map(VolumeView::from).collect();
    if format == Format::Json {
        return json_line(out, &views);
    }
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|v| {
            vec![
                v.name.clone(),
                v.node_id.to_string(),
                if v.exists { "yes" } else { "no" }.to_owned(),
                bytes(v.size_bytes),
                bytes(v.free_bytes),
                dash(v.zone.as_deref()),
                dash(v.attached_to.as_deref()),
                dash(v.last_error.as_deref()),
            ]
        })
        .collect();
    table(
        out,
        &[
            "NAME", "NODE", "EXISTS", "SIZE", "FREE", "ZONE", "ATTACHED", "ERROR",
        ],
        &rows,
    )
}

/// One running node's HTTP address as scripts see it.
#[derive(Debug, Serialize)]
struct EndpointView<'a> {
    id: u64,
    host: &'a str,
    http_port: u32,
    address: String,
}

/// The HTTP addresses of the running nodes: what clients and load balancers need.
pub fn endpoints(
    out: &mut (dyn Write + Send),
    format: Format,
    nodes: &[Node],
) -> std::io::Result<()> {
    let views: Vec<EndpointView> = nodes
        .iter()
        .filter(|n| n.joined && !n.host.is_empty() && n.http_port != 0)
        .map(|n| EndpointView {
            id: n.id,
            host: &n.host,
            http_port: n.http_port,
            address: format!("{}:{}", n.host, n.http_port),
        })
        .collect();
    if format == Format::Json {
        return json_line(out, &views);
    }
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|e| vec![e.id.to_string(), e.address.clone()])
        .collect();
    table(out, &["ID", "ADDRESS"], &rows)
}

pub fn scale(
    out: &mut (dyn Write + Send),
    format: Format,
    plan: &ScaleResponse,
) -> std::io::Result<()> {
    #[derive(Serialize)]
    struct View<'a> {
        previous: u64,
        desired: u64,
        start: &'a [u64],
        stop: &'a [u64],
        group: String,
    }
    let group = group_or_default(&plan.group);
    if format == Format::Json {
        return json_line(
            out,
            &View {
                previous: plan.previous,
                desired: plan.desired,
                start: &plan.start,
                stop: &plan.stop,
                group,
            },
        );
    }
    let ids = |v: &[u64]| {
        if v.is_empty() {
            "none".to_owned()
        } else {
            v.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
        }
    };
    let of = if group == "default" {
        String::new()
    } else {
        format!("group {group} ")
    };
    writeln!(
        out,
        "scaling {of}{} -> {}: start {}; stop {} (volumes kept)",
        plan.previous,
        plan.desired,
        ids(&plan.start),
        ids(&plan.stop)
    )
}

pub fn replace(
    out: &mut (dyn Write + Send),
    format: Format,
    r: &ReplaceNodeResponse,
) -> std::io::Result<()> {
    #[derive(Serialize)]
    struct View<'a> {
        node_id: u64,
        old_task_id: Option<String>,
        message: &'a str,
    }
    if format == Format::Json {
        return json_line(
            out,
            &View {
                node_id: r.node_id,
                old_task_id: opt(&r.old_task_id),
                message: &r.message,
            },
        );
    }
    writeln!(out, "node {}: {}", r.node_id, r.message)
}

/// A minted agent token: what it is for, then the token itself alone on the last line.
pub fn agent_token(
    out: &mut (dyn Write + Send),
    format: Format,
    t: &MintAgentTokenResponse,
) -> std::io::Result<()> {
    #[derive(Serialize)]
    struct View<'a> {
        host: &'a str,
        expires_unix_ms: u64,
        token: &'a str,
    }
    if format == Format::Json {
        return json_line(
            out,
            &View {
                host: &t.host,
                expires_unix_ms: t.expires_unix_ms,
                token: &t.token,
            },
        );
    }
    let expires = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(t.expires_unix_ms),
    );
    writeln!(
        out,
        "# agent token for {} (valid until {expires}); install it as the sidecar's --token-file, mode 0600",
        t.host
    )?;
    writeln!(out, "{}", t.token)
}

/// A rollout as scripts see it: `config_generation`, `state` (`idle|running|paused|done|aborted`),
/// `done` and `pending` (node ids, in order), `current` (a node id or null), `reason` (or null); and,
/// beside them, `step`, `message` and `nodes` (the same nodes with their groups, for clusters with
/// `--group`, where an id is unique only within its group).
pub fn rollout(
    out: &mut (dyn Write + Send),
    format: Format,
    r: &RolloutStatus,
) -> std::io::Result<()> {
    #[derive(Serialize)]
    struct Ref {
        id: u64,
        group: String,
    }
    #[derive(Serialize)]
    struct Nodes {
        done: Vec<Ref>,
        current: Option<Ref>,
        pending: Vec<Ref>,
    }
    #[derive(Serialize)]
    struct View {
        config_generation: u64,
        state: String,
        done: Vec<u64>,
        current: Option<u64>,
        pending: Vec<u64>,
        reason: Option<String>,
        step: Option<String>,
        message: Option<String>,
        nodes: Nodes,
    }
    let to_ref = |n: &RolloutNode| Ref {
        id: n.id,
        group: group_or_default(&n.group),
    };
    let name = |n: &RolloutNode| {
        if group_or_default(&n.group) == "default" {
            n.id.to_string()
        } else {
            format!("{}/{}", n.group, n.id)
        }
    };
    if format == Format::Json {
        return json_line(
            out,
            &View {
                config_generation: r.config_generation,
                state: r.state.clone(),
                done: r.done.iter().map(|n| n.id).collect(),
                current: r.current.as_ref().map(|n| n.id),
                pending: r.pending.iter().map(|n| n.id).collect(),
                reason: opt(&r.reason),
                step: opt(&r.step),
                message: opt(&r.message),
                nodes: Nodes {
                    done: r.done.iter().map(to_ref).collect(),
                    current: r.current.as_ref().map(to_ref),
                    pending: r.pending.iter().map(to_ref).collect(),
                },
            },
        );
    }
    let list = |v: &[RolloutNode]| {
        if v.is_empty() {
            "none".to_owned()
        } else {
            v.iter().map(name).collect::<Vec<_>>().join(",")
        }
    };
    if !r.message.is_empty() {
        writeln!(out, "{}", r.message)?;
    }
    writeln!(
        out,
        "rollout {} (configuration {})",
        r.state, r.config_generation
    )?;
    let current = r.current.as_ref().map_or_else(
        || "none".to_owned(),
        |n| {
            if r.step.is_empty() {
                name(n)
            } else {
                format!("{} ({})", name(n), r.step)
            }
        },
    );
    writeln!(out, "  current: {current}")?;
    writeln!(out, "  done:    {}", list(&r.done))?;
    writeln!(out, "  pending: {}", list(&r.pending))?;
    if !r.reason.is_empty() {
        writeln!(out, "  reason:  {}", r.reason)?;
    }
    Ok(())
}

/// A call's one-line answer (`{message}` in JSON).
pub fn message(out: &mut (dyn Write + Send), format: Format, message: &str) -> std::io::Result<()> {
    if format == Format::Json {
        return json_line(out, &serde_json::json!({ "message": message }));
    }
    writeln!(out, "{message}")
}

pub fn event(
    out: &mut (dyn Write + Send),
    format: Format,
    e: &ClusterEvent,
) -> std::io::Result<()> {
    #[derive(Serialize)]
    struct View<'a> {
        at_unix_ms: u64,
        kind: &'a str,
        node_id: Option<u64>,
        host: Option<String>,
        task_id: Option<String>,
        message: &'a str,
    }
    if format == Format::Json {
        return json_line(
            out,
            &View {
                at_unix_ms: e.at_unix_ms,
                kind: &e.kind,
                node_id: e.node_id,
                host: opt(&e.host),
                task_id: opt(&e.task_id),
                message: &e.message,
            },
        );
    }
    let when = humantime::format_rfc3339_millis(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(e.at_unix_ms),
    );
    let node = e.node_id.map(|n| format!("node={n} ")).unwrap_or_default();
    let host = opt(&e.host)
        .map(|h| format!("host={h} "))
        .unwrap_or_default();
    writeln!(out, "{when} {:<16} {node}{host}{}", e.kind, e.message)
}

pub fn progress(
    out: &mut (dyn Write + Send),
    format: Format,
    progress: &str,
) -> std::io::Result<()> {
    if format == Format::Json {
        return json_line(out, &serde_json::json!({ "progress": progress }));
    }
    writeln!(out, "... {progress}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_proto::v1::AgentMaintenance;

    fn node(id: u64, state: &str, host: &str) -> Node {
        Node {
            id,
            state: state.to_owned(),
            task_id: if host.is_empty() {
                String::new()
            } else {
                format!("elasticsearch-{id}.1")
            },
            agent_id: String::new(),
            host: host.to_owned(),
            http_port: if host.is_empty() { 0 } else { 31000 },
            transport_port: if host.is_empty() { 0 } else { 31001 },
            volumes: vec![format!("elasticsearch{id}data")],
            reason: if host.is_empty() {
                "volume missing".to_owned()
            } else {
                String::new()
            },
            since_unix_ms: 1,
            unreachable_since_unix_ms: None,
            next_action: None,
            joined: state == "RUNNING",
            ..Node::default()
        }
    }

    fn render(f: impl FnOnce(&mut (dyn Write + Send)) -> std::io::Result<()>) -> String {
        let mut buf: Vec<u8> = Vec::new();
        f(&mut buf).expect("render");
        String::from_utf8(buf).expect("utf-8")
    }

    #[test]
    fn agents_show_a_maintenance_window_or_a_drain() {
        let agent = |host: &str, maintenance: Option<AgentMaintenance>| Agent {
            host: host.to_owned(),
            maintenance,
            ..Agent::default()
        };
        let list = [
            agent("a1", None),
            agent(
                "a2",
                Some(AgentMaintenance {
                    start_unix_ms: Some(1_798_761_600_000),
                    duration_ms: Some(7_200_000),
                    draining: false,
                    nodes: 1,
                }),
            ),
            agent(
                "a3",
                Some(AgentMaintenance {
                    start_unix_ms: None,
                    duration_ms: None,
                    draining: true,
                    nodes: 0,
                }),
            ),
        ];
        let table = render(|out| agents(out, Format::Table, &list));
        let column = |host: &str| {
            table
                .lines()
                .find(|l| l.starts_with(host))
                .unwrap_or_else(|| panic!("{host} in {table}"))
                .to_owned()
        };
        assert!(
            table
                .lines()
                .next()
                .is_some_and(|h| h.contains("MAINTENANCE"))
        );
        assert!(
            column("a2").contains("from 2027-01-01T00:00:00Z for 2h, 1 node(s) on it"),
            "{table}"
        );
        assert!(
            column("a3").contains("draining, 0 node(s) on it"),
            "{table}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&render(|out| agents(out, Format::Json, &list))).expect("json");
        assert_eq!(json[0]["maintenance"], serde_json::Value::Null);
        assert_eq!(
            json[1]["maintenance"],
            serde_json::json!({"start_unix_ms": 1_798_761_600_000_u64, "duration_ms": 7_200_000,
                "draining": false, "nodes": 1})
        );
        assert_eq!(
            json[2]["maintenance"]["start_unix_ms"],
            serde_json::Value::Null
        );
    }

    #[test]
    fn nodes_json_uses_the_documented_names_and_nulls() {
        let text = render(|o| {
            nodes(
                o,
                Format::Json,
                &[node(1, "RUNNING", "a1"), node(2, "PENDING", "")],
            )
        });
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v[0]["id"], 1);
        assert_eq!(v[0]["state"], "RUNNING");
        assert_eq!(v[0]["agent"], "a1");
        assert_eq!(v[0]["task_id"], "elasticsearch-1.1");
        assert_eq!(v[0]["reason"], serde_json::Value::Null);
        assert_eq!(v[1]["agent"], serde_json::Value::Null);
        assert_eq!(v[1]["task_id"], serde_json::Value::Null);
        assert_eq!(v[1]["reason"], "volume missing");
        assert_eq!(v[1]["volumes"], serde_json::json!(["elasticsearch2data"]));
        assert_eq!(v[0]["unreachable_since_unix_ms"], serde_json::Value::Null);
        assert_eq!(
            v[0]["next_action"],
            serde_json::json!({"kind": "none", "at_unix_ms": null, "text": ""})
        );
        assert_eq!(v[0]["es_joined"], false);
        assert_eq!(v[0]["shards"], serde_json::Value::Null);
        assert_eq!(v[0]["removal"], serde_json::Value::Null);
    }

    #[test]
    fn nodes_show_what_elasticsearch_says_and_a_removal_in_progress() {
        let mut joined = node(1, "RUNNING", "a1");
        joined.es_joined = true;
        joined.shards = Some(4);
        let mut leaving = node(3, "STOPPING", "a3");
        leaving.es_joined = true;
        leaving.shards = Some(2);
        leaving.removal = Some(tether_proto::v1::NodeRemoval {
            kind: "scale_down".into(),
            step: "move_data".into(),
            waiting: "2 shard copies still on it".into(),
            stalled: false,
        });
        let absent = node(2, "RUNNING", "a2");
        let all = [joined, absent, leaving];
        let v: serde_json::Value =
            serde_json::from_str(&render(|o| nodes(o, Format::Json, &all))).expect("json");
        assert_eq!(
            (v[0]["es_joined"].clone(), v[0]["shards"].clone()),
            (true.into(), 4.into())
        );
        assert_eq!(
            v[2]["removal"],
            serde_json::json!({"kind": "scale_down", "step": "move_data",
                "waiting": "2 shard copies still on it", "stalled": false})
        );
        let table = render(|o| nodes(o, Format::Table, &all));
        // RUNNING in Mesos but not in the cluster is shown as such.
        let line = table.lines().find(|l| l.starts_with('2')).expect("node 2");
        assert!(line.contains("not joined"), "{table}");
    }

    #[test]
    fn nodes_table_shows_the_configuration_generation_each_runs() {
        let done = Node {
            config_generation: 3,
            ..node(1, "RUNNING", "a1")
        };
        let pending = Node {
            config_generation: 2,
            ..node(2, "RUNNING", "a2")
        };
        let older_scheduler = node(3, "RUNNING", "a3");
        let table = render(|o| nodes(o, Format::Table, &[done, pending, older_scheduler]));
        let lines: Vec<&str> = table.lines().collect();
        let gen_col = lines[0].find("GEN").expect("a GEN column");
        let agent_col = lines[0].find("AGENT").expect("an AGENT column");
        let gen_of = |l: &str| l[gen_col..agent_col].trim().to_owned();
        assert_eq!(
            lines[1..].iter().map(|l| gen_of(l)).collect::<Vec<_>>(),
            ["3", "2", "-"],
            "{table}"
        );
    }

    #[test]
    fn status_json_has_the_health() {
        let c = Cluster {
            health: "yellow".into(),
            shards: Some(tether_proto::v1::ShardCounts {
                active: 3,
                relocating: 1,
                initializing: 0,
                unassigned: 1,
            }),
            es_master: "es-1".into(),
            ..Cluster::default()
        };
        let v: serde_json::Value =
            serde_json::from_str(&render(|o| cluster(o, Format::Json, &c))).expect("json");
        assert_eq!(v["health"], "yellow");
        assert_eq!(v["shards"]["relocating"], 1);
        assert_eq!(v["es_master"], "es-1");
        // An older scheduler that says nothing: unknown, not green.
        let v: serde_json::Value =
            serde_json::from_str(&render(|o| cluster(o, Format::Json, &Cluster::default())))
                .expect("json");
        assert_eq!(v["health"], "unknown");
        assert_eq!(v["shards"], serde_json::Value::Null);
    }

    #[test]
    fn an_unreachable_node_shows_how_long_and_what_comes_next() {
        let mut n = node(2, "UNREACHABLE", "a2");
        n.unreachable_since_unix_ms = Some(1_000);
        n.reason = "replacing in 42 s, storage-fenced".to_owned();
        n.next_action = Some(tether_proto::v1::NextAction {
            kind: "replace_at".to_owned(),
            at_unix_ms: 43_000,
            text: n.reason.clone(),
        });
        let text = render(|o| nodes(o, Format::Json, std::slice::from_ref(&n)));
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v[0]["unreachable_since_unix_ms"], 1_000);
        assert_eq!(
            v[0]["next_action"],
            serde_json::json!({"kind": "replace_at", "at_unix_ms": 43_000, "text": "replacing in 42 s, storage-fenced"})
        );
        let table = render(|o| nodes(o, Format::Table, &[n]));
        assert!(
            table.contains("unreachable for ")
                && table.contains("replacing in 42 s, storage-fenced"),
            "{table}"
        );
        assert_eq!(ago(1_000, 73_500), "1m 12s");
    }

    #[test]
    fn tables_align_columns() {
        let text = render(|o| {
            nodes(
                o,
                Format::Table,
                &[
                    node(1, "RUNNING", "agent-long-name"),
                    node(10, "PENDING", ""),
                ],
            )
        });
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        let col = |l: &str| {
            l.find("STATE")
                .or_else(|| l.find("RUNNING"))
                .or_else(|| l.find("PENDING"))
        };
        assert_eq!(col(lines[0]), col(lines[1]));
        assert_eq!(col(lines[1]), col(lines[2]));
        assert!(lines[2].contains("volume missing"));
    }

    #[test]
    fn endpoints_list_joined_nodes_only() {
        let not_joined = Node {
            joined: false,
            ..node(4, "RUNNING", "a4")
        };
        let all = [
            node(1, "RUNNING", "a1"),
            node(2, "PENDING", ""),
            node(3, "STAGING", "a3"),
            not_joined,
        ];
        let text = render(|o| endpoints(o, Format::Json, &all));
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(
            v,
            serde_json::json!([{"id": 1, "host": "a1", "http_port": 31000, "address": "a1:31000"}])
        );
        let text = render(|o| endpoints(o, Format::Table, &all));
        assert_eq!(text, "ID  ADDRESS\n1   a1:31000\n");
    }

    #[test]
    fn nodes_and_status_name_their_groups() {
        let master = Node {
            group: "masters".to_owned(),
            ..node(1, "RUNNING", "a1")
        };
        let data = Node {
            group: "data".to_owned(),
            ..node(1, "PENDING", "")
        };
        let text = render(|o| nodes(o, Format::Json, &[master.clone(), data.clone()]));
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(
            (&v[0]["group"], &v[0]["id"]),
            (&"masters".into(), &1.into())
        );
        assert_eq!((&v[1]["group"], &v[1]["id"]), (&"data".into(), &1.into()));
        // An older scheduler names no group: its nodes are the default group's.
        let text = render(|o| nodes(o, Format::Json, &[node(2, "RUNNING", "a2")]));
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v[0]["group"], "default");
        let table = render(|o| nodes(o, Format::Table, &[master, data]));
        assert!(
            table.starts_with("GROUP/ID") && table.contains("masters/1"),
            "{table}"
        );

        let cluster = Cluster {
            framework_name: "elasticsearch".to_owned(),
            desired: 5,
            running: 4,
            security: "off".to_owned(),
            groups: vec![
                tether_proto::v1::GroupStatus {
                    name: "masters".to_owned(),
                    desired: 3,
                    running: 3,
                    roles: vec!["master".to_owned()],
                    roles_default: false,
                },
                tether_proto::v1::GroupStatus {
                    name: "coord".to_owned(),
                    desired: 2,
                    running: 1,
                    roles: Vec::new(),
                    roles_default: false,
                },
            ],
            ..Cluster::default()
        };
        let text = render(|o| super::cluster(o, Format::Json, &cluster));
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(
            v["groups"],
            serde_json::json!([
                {"name": "masters", "desired": 3, "running": 3},
                {"name": "coord", "desired": 2, "running": 1},
            ])
        );
        let table = render(|o| super::cluster(o, Format::Table, &cluster));
        assert!(
            table.contains("masters 3/3 (master), coord 1/2 (coordinating-only)"),
            "{table}"
        );
        // An older scheduler: one default group of every node.
        let old = Cluster {
            groups: Vec::new(),
            ..cluster
        };
        let text = render(|o| super::cluster(o, Format::Json, &old));
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(
            v["groups"],
            serde_json::json!([{"name": "default", "desired": 5, "running": 4}])
        );
        let plan = ScaleResponse {
            previous: 2,
            desired: 4,
            start: vec![3, 4],
            stop: Vec::new(),
            group: "data".to_owned(),
        };
        let text = render(|o| scale(o, Format::Json, &plan));
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["group"], "data");
        assert_eq!(v["start"], serde_json::json!([3, 4]));
        let text = render(|o| scale(o, Format::Table, &plan));
        assert_eq!(
            text,
            "scaling group data 2 -> 4: start 3,4; stop none (volumes kept)\n"
        );
    }

    #[test]
    fn live_states_count_against_desired() {
        assert!(NodeView::from(&node(1, "UNREACHABLE", "a")).is_live());
        assert!(!NodeView::from(&node(1, "PENDING", "")).is_live());
        assert!(!NodeView::from(&node(1, "TASK_FAILED", "a")).is_live());
    }
}
