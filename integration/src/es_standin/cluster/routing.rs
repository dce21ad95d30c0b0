//! The shard table and the master's allocation, after Elasticsearch's `RoutingTable`, `AllocationService`
//! and its deciders; pure functions of the cluster state, the effective settings and the time.
//!
//! - Each index has `number_of_shards` primaries, each with `number_of_replicas` replicas. A copy is
//!   UNASSIGNED, INITIALIZING (recovering on its node), STARTED, or RELOCATING (started, and being copied
//!   to `relocating_node`; the target is not a separate entry here, as `_cat/shards` shows it).
//! - **In-sync copies** (node ids, one copy per node): a copy joins once started; a failed or departed
//!   copy leaves the set only while another copy of the shard stays active, so the last copies' holders
//!   are remembered and a primary with data is given back only to one of them (never to a wiped node:
//!   a wiped data path is a new node id). A shard that never started takes any node.
//! - A departed primary is replaced by an active replica (promotion); the departed copy becomes an
//!   unassigned replica, delayed by `index.unassigned.node_left.delayed_timeout` (1m), or by a
//!   `restart` shutdown's `allocation_delay` (5m) when longer, unless its node is back.
//! - Deciders: data nodes only, never two copies of a shard on one node, `cluster.routing.allocation.
//!   exclude._name/_ip/_host/_id/<attr>`, `enable` (all, primaries, new_primaries, none), awareness
//!   (`awareness.attributes`, `awareness.force.<attr>.values`; a node lacking an attribute gets no
//!   shards), version (a replica never on a node older than its primary's; a primary never moves to an
//!   older node), node shutdown (`remove`/`replace` nodes take no shards and shed theirs, a `replace`
//!   node's shards go only to its target), `node_concurrent_recoveries` (2) incoming recoveries per node.
//! - Rebalancing: once all copies are active, one copy at a time moves from the fullest data node to the
//!   emptiest while their counts differ by two or more (`cluster.routing.rebalance.enable`).
//! - Not modelled: Elasticsearch's weighted balancer, `include`/`require` filters, disk watermarks,
//!   data tiers, routing by custom `_routing`.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::state::{ClusterState, DiscoveryNode, new_uuid};
use crate::es_standin::settings::parse_time;

/// `index.unassigned.node_left.delayed_timeout`'s default.
pub const DEFAULT_NODE_LEFT_DELAY_MS: u64 = 60_000;
/// A `restart` shutdown's default `allocation_delay`.
pub const DEFAULT_RESTART_DELAY_MS: u64 = 300_000;

/// An index's settings that routing uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexMeta {
    pub uuid: String,
    pub number_of_shards: u32,
    pub number_of_replicas: u32,
    pub node_left_delay_ms: u64,
    pub creation_date_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CopyState {
    Unassigned,
    Initializing,
    Started,
    Relocating,
}

impl CopyState {
    pub fn name(self) -> &'static str {
        match self {
            CopyState::Unassigned => "UNASSIGNED",
            CopyState::Initializing => "INITIALIZING",
            CopyState::Started => "STARTED",
            CopyState::Relocating => "RELOCATING",
        }
    }

    pub fn active(self) -> bool {
        matches!(self, CopyState::Started | CopyState::Relocating)
    }
}

/// Why a copy is unassigned (Elasticsearch's `UnassignedInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unassigned {
    /// `INDEX_CREATED`, `NODE_LEFT`, `ALLOCATION_FAILED`, `REPLICA_ADDED`.
    pub reason: String,
    pub at_ms: u64,
    /// The node that held it (`NODE_LEFT`), preferred when it comes back.
    pub last_node: Option<String>,
    /// Waiting for `node_left` delay to pass.
    pub delayed: bool,
}

/// One copy of a shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardCopy {
    pub primary: bool,
    pub state: CopyState,
    pub node: Option<String>,
    /// RELOCATING: the target node.
    pub relocating_node: Option<String>,
    pub allocation_id: Option<String>,
    /// RELOCATING: the target's allocation id (what its recovery reports as started).
    pub target_allocation_id: Option<String>,
    pub unassigned: Option<Unassigned>,
}

impl ShardCopy {
    fn unassigned(primary: bool, reason: &str, at_ms: u64, last_node: Option<String>) -> ShardCopy {
        ShardCopy {
            primary,
            state: CopyState::Unassigned,
            node: None,
            relocating_node: None,
            allocation_id: None,
            target_allocation_id: None,
            unassigned: Some(Unassigned {
                reason: reason.to_owned(),
                at_ms,
                last_node,
                delayed: false,
            }),
        }
    }

    /// Whether the copy is on `node` or moving to it.
    pub fn touches(&self, node: &str) -> bool {
        self.node.as_deref() == Some(node) || self.relocating_node.as_deref() == Some(node)
    }
}

/// The copies of one shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardTable {
    pub copies: Vec<ShardCopy>,
    pub in_sync: BTreeSet<String>,
}

impl ShardTable {
    pub fn primary(&self) -> Option<&ShardCopy> {
        self.copies.iter().find(|c| c.primary)
    }

    fn active_count(&self) -> usize {
        self.copies.iter().filter(|c| c.state.active()).count()
    }
}

/// Index name → shard number → copies.
pub type RoutingTable = BTreeMap<String, Vec<ShardTable>>;

/// A `PUT _nodes/<id>/shutdown` record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShutdownRecord {
    pub node_id: String,
    /// `restart`, `remove`, `replace`.
    pub kind: String,
    pub reason: String,
    pub started_ms: u64,
    pub allocation_delay_ms: Option<u64>,
    pub target_node_name: Option<String>,
}

/// A voting configuration exclusion.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct VotingExclusion {
    pub node_id: String,
    pub node_name: String,
}

/// What the cluster state's metadata holds beyond index names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    pub indices: BTreeMap<String, IndexMeta>,
    pub persistent: BTreeMap<String, String>,
    pub transient: BTreeMap<String, String>,
    pub shutdowns: BTreeMap<String, ShutdownRecord>,
    pub voting_config_exclusions: Vec<VotingExclusion>,
}

/// The allocation settings in effect: transient over persistent over the master's own settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocSettings {
    pub enable: String,
    /// `exclude.<key>` → values (`_name`, `_ip`, `_host`, `_id` or an attribute).
    pub exclude: BTreeMap<String, Vec<String>>,
    pub awareness: Vec<String>,
    pub forced: BTreeMap<String, Vec<String>>,
    pub concurrent_recoveries: usize,
    /// `cluster.routing.rebalance.enable`.
    pub rebalance: String,
}

/// The dynamic cluster settings es-standin understands (others are refused as unknown).
pub fn known_setting(key: &str) -> bool {
    const EXACT: [&str; 6] = [
        "cluster.routing.allocation.enable",
        "cluster.routing.allocation.awareness.attributes",
        "cluster.routing.allocation.node_concurrent_recoveries",
        "cluster.routing.rebalance.enable",
        "cluster.max_voting_config_exclusions",
        "indices.recovery.max_bytes_per_sec",
    ];
    EXACT.contains(&key)
        || key.starts_with("cluster.routing.allocation.exclude.")
        || key.starts_with("cluster.routing.allocation.include.")
        || key.starts_with("cluster.routing.allocation.require.")
        || (key.starts_with("cluster.routing.allocation.awareness.force.")
            && key.ends_with(".values"))
}

/// Elasticsearch's other `cluster.routing.*` settings, which es-standin accepts in a node's own settings
/// without modelling them (`ClusterSettings.BUILT_IN_CLUSTER_SETTINGS`, 7.17–8.x); with [`known_setting`]
/// they are what a node's start-up accepts under `cluster.routing.`.
const UNMODELLED: [&str; 27] = [
    "cluster.routing.allocation.allow_rebalance",
    "cluster.routing.allocation.cluster_concurrent_rebalance",
    "cluster.routing.allocation.node_concurrent_incoming_recoveries",
    "cluster.routing.allocation.node_concurrent_outgoing_recoveries",
    "cluster.routing.allocation.node_initial_primaries_recoveries",
    "cluster.routing.allocation.same_shard.host",
    "cluster.routing.allocation.type",
    "cluster.routing.allocation.total_shards_per_node",
    "cluster.routing.allocation.shard_state.reroute.priority",
    "cluster.routing.allocation.balance.shard",
    "cluster.routing.allocation.balance.index",
    "cluster.routing.allocation.balance.threshold",
    "cluster.routing.allocation.balance.write_load",
    "cluster.routing.allocation.balance.disk_usage",
    "cluster.routing.allocation.disk.threshold_enabled",
    "cluster.routing.allocation.disk.include_relocations",
    "cluster.routing.allocation.disk.reroute_interval",
    "cluster.routing.allocation.disk.watermark.low",
    "cluster.routing.allocation.disk.watermark.low.max_headroom",
    "cluster.routing.allocation.disk.watermark.high",
    "cluster.routing.allocation.disk.watermark.high.max_headroom",
    "cluster.routing.allocation.disk.watermark.flood_stage",
    "cluster.routing.allocation.disk.watermark.flood_stage.max_headroom",
    "cluster.routing.allocation.disk.watermark.flood_stage.frozen",
    "cluster.routing.allocation.disk.watermark.flood_stage.frozen.max_headroom",
    "cluster.routing.allocation.disk.watermark.enable_for_single_data_node",
    "cluster.routing.use_adaptive_replica_selection",
];

/// Why a node refuses to start with `key = value` among its own settings, for keys under
/// `cluster.routing.`: Elasticsearch validates every node setting at start-up (`SettingsModule`), an
/// unknown key with `AbstractScopedSettings.validate`'s words (suggesting known keys more than 0.7
/// similar, Lucene's `LevenshteinDistance`), a known one's value as its setting parses it.
pub fn startup_error(key: &str, value: &str) -> Option<String> {
    if !key.starts_with("cluster.routing.") {
        return None;
    }
    // A whole family Elasticsearch registers by prefix (8.6+ desired-balance allocator).
    if known_setting(key)
        || UNMODELLED.contains(&key)
        || key.starts_with("cluster.routing.allocation.desired_balance.")
    {
        return invalid_value(key, value);
    }
    let exact = [
        "cluster.routing.allocation.enable",
        "cluster.routing.allocation.awareness.attributes",
        "cluster.routing.allocation.node_concurrent_recoveries",
        "cluster.routing.rebalance.enable",
    ];
    let mut scored: Vec<(f32, &str)> = exact
        .iter()
        .chain(UNMODELLED.iter())
        .map(|k| (similarity(key, k), *k))
        .filter(|(d, _)| *d > 0.7)
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    let msg = format!("unknown setting [{key}]");
    Some(match scored.as_slice() {
        [] => format!(
            "{msg} please check that any required plugins are installed, or check the breaking changes documentation for removed settings"
        ),
        [(_, one)] => format!("{msg} did you mean [{one}]?"),
        many => format!(
            "{msg} did you mean any of [{}]?",
            many.iter().map(|(_, k)| *k).collect::<Vec<_>>().join(", ")
        ),
    })
}

/// Lucene's `LevenshteinDistance.getDistance`: 1 − edits / the longer length (1 = equal).
fn similarity(a: &str, b: &str) -> f32 {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let longest = a.len().max(b.len());
    if longest == 0 {
        return 1.0;
    }
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j + 1] + 1).min(cur[j] + 1).min(prev[j] + cost);
        }
        prev = cur;
    }
    1.0 - prev[b.len()] as f32 / longest as f32
}

/// Refuses a value Elasticsearch refuses; `None` when fine.
pub fn invalid_value(key: &str, value: &str) -> Option<String> {
    match key {
        "cluster.routing.allocation.enable" | "cluster.routing.rebalance.enable" => {
            let ok = if key.ends_with("allocation.enable") {
                ["all", "primaries", "new_primaries", "none"].contains(&value)
            } else {
                ["all", "primaries", "replicas", "none"].contains(&value)
            };
            (!ok).then(|| format!("Illegal allocation.enable value [{}]", value.to_uppercase()))
        }
        "cluster.routing.allocation.node_concurrent_recoveries"
        | "cluster.max_voting_config_exclusions" => value
            .parse::<u32>()
            .is_err()
            .then(|| format!("Failed to parse value [{value}] for setting [{key}]")),
        _ => None,
    }
}

impl AllocSettings {
    /// `local` are the master's own (yml / `-E`) settings.
    pub fn effective(meta: &Metadata, local: &BTreeMap<String, String>) -> AllocSettings {
        let get = |k: &str| {
            meta.transient
                .get(k)
                .or_else(|| meta.persistent.get(k))
                .or_else(|| local.get(k))
                .cloned()
        };
        let list = |v: Option<String>| -> Vec<String> {
            v.map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
        };
        let keys: BTreeSet<&String> = meta
            .transient
            .keys()
            .chain(meta.persistent.keys())
            .chain(local.keys())
            .collect();
        let mut exclude = BTreeMap::new();
        let mut forced = BTreeMap::new();
        for k in keys {
            if let Some(attr) = k.strip_prefix("cluster.routing.allocation.exclude.") {
                let v = list(get(k));
                if !v.is_empty() {
                    exclude.insert(attr.to_owned(), v);
                }
            } else if let Some(attr) = k
                .strip_prefix("cluster.routing.allocation.awareness.force.")
                .and_then(|r| r.strip_suffix(".values"))
            {
                forced.insert(attr.to_owned(), list(get(k)));
            }
        }
        AllocSettings {
            enable: get("cluster.routing.allocation.enable").unwrap_or_else(|| "all".into()),
            exclude,
            awareness: list(get("cluster.routing.allocation.awareness.attributes")),
            forced,
            concurrent_recoveries: get("cluster.routing.allocation.node_concurrent_recoveries")
                .and_then(|v| v.parse().ok())
                .unwrap_or(2),
            rebalance: get("cluster.routing.rebalance.enable").unwrap_or_else(|| "all".into()),
        }
    }
}

/// `*` wildcards, as Elasticsearch's `Regex.simpleMatch`.
pub fn simple_match(pattern: &str, value: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == value,
        Some((head, rest)) => {
            let Some(after) = value.strip_prefix(head) else {
                return false;
            };
            if rest.is_empty() {
                return true;
            }
            (0..=after.len())
                .filter(|i| after.is_char_boundary(*i))
                .any(|i| simple_match(rest, &after[i..]))
        }
    }
}

fn excluded(s: &AllocSettings, n: &DiscoveryNode) -> bool {
    let ip = n.address.ip().to_string();
    s.exclude.iter().any(|(key, values)| {
        values.iter().any(|v| match key.as_str() {
            "_name" => simple_match(v, &n.name),
            "_ip" => simple_match(v, &ip),
            "_host" => simple_match(v, &n.host) || simple_match(v, &ip),
            "_id" => v == &n.id,
            attr => n.attributes.get(attr).is_some_and(|a| simple_match(v, a)),
        })
    })
}

/// A new index's routing: every copy unassigned (`INDEX_CREATED`).
pub fn new_index_routing(meta: &IndexMeta, now_ms: u64) -> Vec<ShardTable> {
    (0..meta.number_of_shards)
        .map(|_| ShardTable {
            copies: (0..=meta.number_of_replicas)
                .map(|i| ShardCopy::unassigned(i == 0, "INDEX_CREATED", now_ms, None))
                .collect(),
            in_sync: BTreeSet::new(),
        })
        .collect()
}

/// Node `id` left: its copies become unassigned, a replica is promoted where a primary went, a
/// relocation to it is cancelled.
pub fn node_left(state: &mut ClusterState, id: &str, now_ms: u64) {
    for shards in state.routing.values_mut() {
        for t in shards.iter_mut() {
            fail_copies(t, |c| c.node.as_deref() == Some(id), "NODE_LEFT", now_ms);
            for c in t.copies.iter_mut() {
                if c.relocating_node.as_deref() == Some(id) {
                    c.state = CopyState::Started;
                    c.relocating_node = None;
                    c.target_allocation_id = None;
                }
            }
        }
    }
}

/// Fails the copies `which` selects (see [`node_left`]).
fn fail_copies(t: &mut ShardTable, which: impl Fn(&ShardCopy) -> bool, reason: &str, now: u64) {
    let failing: Vec<usize> = (0..t.copies.len())
        .filter(|i| which(&t.copies[*i]))
        .collect();
    if failing.is_empty() {
        return;
    }
    let lost_primary = failing.iter().any(|i| t.copies[*i].primary);
    for i in &failing {
        let c = &mut t.copies[*i];
        let node = c.node.take();
        let was_active = c.state.active();
        *c = ShardCopy::unassigned(c.primary, reason, now, node.clone());
        // Elasticsearch's `IndexMetadataUpdater`: forget the copy only if an active copy remains.
        if let Some(n) = node
            && was_active
            && t.copies.iter().any(|o| o.state.active())
        {
            t.in_sync.remove(&n);
        }
    }
    if lost_primary {
        let promoted = t
            .copies
            .iter()
            .position(|c| !c.primary && c.state == CopyState::Started)
            .or_else(|| {
                t.copies
                    .iter()
                    .position(|c| !c.primary && c.state == CopyState::Relocating)
            });
        if let Some(p) = promoted {
            for c in t.copies.iter_mut() {
                c.primary = false;
            }
            t.copies[p].primary = true;
        }
    }
}

/// A recovery reported its copy started (`allocation_id`); `false` when no such copy is initializing.
pub fn shard_started(state: &mut ClusterState, index: &str, shard: usize, aid: &str) -> bool {
    let Some(t) = state.routing.get_mut(index).and_then(|s| s.get_mut(shard)) else {
        return false;
    };
    for i in 0..t.copies.len() {
        let c = &mut t.copies[i];
        if c.state == CopyState::Initializing && c.allocation_id.as_deref() == Some(aid) {
            c.state = CopyState::Started;
            if let Some(n) = c.node.clone() {
                t.in_sync.insert(n);
            }
            return true;
        }
        if c.state == CopyState::Relocating && c.target_allocation_id.as_deref() == Some(aid) {
            let source = c.node.take();
            c.node = c.relocating_node.take();
            c.allocation_id = c.target_allocation_id.take();
            c.state = CopyState::Started;
            if let Some(n) = c.node.clone() {
                t.in_sync.insert(n);
            }
            if let Some(s) = source {
                t.in_sync.remove(&s);
            }
            return true;
        }
    }
    false
}

/// A copy failed (a replica that missed a write, a recovery that failed).
pub fn shard_failed(state: &mut ClusterState, index: &str, shard: usize, aid: &str, now: u64) {
    let Some(t) = state.routing.get_mut(index).and_then(|s| s.get_mut(shard)) else {
        return;
    };
    for c in t.copies.iter_mut() {
        if c.state == CopyState::Relocating && c.target_allocation_id.as_deref() == Some(aid) {
            c.state = CopyState::Started;
            c.relocating_node = None;
            c.target_allocation_id = None;
            return;
        }
    }
    fail_copies(
        t,
        |c| c.allocation_id.as_deref() == Some(aid),
        "ALLOCATION_FAILED",
        now,
    );
}

/// The allocation pass: assigns what can be, moves what cannot stay, marks delayed replicas.
pub fn reroute(state: &mut ClusterState, s: &AllocSettings, now_ms: u64) {
    let nodes: Vec<DiscoveryNode> = state.nodes.values().cloned().collect();
    let shutdowns = state.metadata.shutdowns.clone();
    let metas = state.metadata.indices.clone();
    // Copies per node (and incoming recoveries), kept current as this pass assigns.
    let mut load: BTreeMap<String, usize> = BTreeMap::new();
    let mut incoming: BTreeMap<String, usize> = BTreeMap::new();
    for shards in state.routing.values() {
        for t in shards {
            for c in &t.copies {
                if let Some(n) = &c.node {
                    *load.entry(n.clone()).or_default() += 1;
                    if c.state == CopyState::Initializing && !c.primary {
                        *incoming.entry(n.clone()).or_default() += 1;
                    }
                }
                if let Some(n) = &c.relocating_node {
                    *load.entry(n.clone()).or_default() += 1;
                    *incoming.entry(n.clone()).or_default() += 1;
                }
            }
        }
    }
    let node_of = |id: &str| nodes.iter().find(|n| n.id == id);
    let shutting = |n: &DiscoveryNode| {
        shutdowns
            .get(&n.id)
            .is_some_and(|r| r.kind == "remove" || r.kind == "replace")
    };
    // A node a `replace` shutdown names as the target: it takes only the source's shards.
    let replace_targets: BTreeMap<String, String> = shutdowns
        .values()
        .filter(|r| r.kind == "replace")
        .filter_map(|r| {
            let target = r.target_node_name.as_ref()?;
            Some((target.clone(), r.node_id.clone()))
        })
        .collect();
    let ctx = Deciders {
        s,
        nodes: &nodes,
        shutdowns: &shutdowns,
        replace_targets: &replace_targets,
    };
    for (index, shards) in state.routing.iter_mut() {
        let Some(meta) = metas.get(index) else {
            continue;
        };
        for t in shards.iter_mut() {
            fit_replica_count(t, meta.number_of_replicas, now_ms);
            // Whether `n` may take a copy of `t` (`moving_from`: the copy leaves that node).
            let can_allocate = |t: &ShardTable,
                                n: &DiscoveryNode,
                                primary: bool,
                                moving_from: Option<&str>,
                                incoming: &BTreeMap<String, usize>|
             -> bool {
                ctx.allowed(
                    t,
                    n,
                    primary,
                    moving_from,
                    incoming,
                    meta.number_of_replicas,
                )
            };
            // Primaries.
            if let Some(pi) = t.copies.iter().position(|c| c.primary)
                && t.copies[pi].state == CopyState::Unassigned
            {
                let fresh = t.in_sync.is_empty();
                let enabled = match s.enable.as_str() {
                    "all" | "primaries" => true,
                    "new_primaries" => fresh,
                    _ => false,
                };
                if enabled {
                    let chosen = if fresh {
                        least_loaded(
                            nodes
                                .iter()
                                .filter(|n| can_allocate(t, n, true, None, &incoming)),
                            &load,
                        )
                    } else {
                        // Existing data: only an in-sync holder, even one the filters exclude
                        // (Elasticsearch forces a primary with data onto its node).
                        nodes
                            .iter()
                            .filter(|n| {
                                t.in_sync.contains(&n.id)
                                    && n.is_data()
                                    && !t.copies.iter().any(|c| c.touches(&n.id))
                            })
                            .map(|n| n.id.clone())
                            .next()
                    };
                    if let Some(n) = chosen {
                        let c = &mut t.copies[pi];
                        c.state = CopyState::Initializing;
                        c.node = Some(n.clone());
                        c.allocation_id = Some(new_uuid());
                        c.unassigned = None;
                        *load.entry(n).or_default() += 1;
                    }
                }
            }
            // Replicas, once the primary is active.
            let primary_active = t.primary().is_some_and(|p| p.state.active());
            for ri in 0..t.copies.len() {
                if t.copies[ri].primary || t.copies[ri].state != CopyState::Unassigned {
                    continue;
                }
                let (last_node, at_ms) = match &t.copies[ri].unassigned {
                    Some(u) => (u.last_node.clone(), u.at_ms),
                    None => (None, now_ms),
                };
                let delay = match &last_node {
                    Some(last)
                        if t.copies[ri]
                            .unassigned
                            .as_ref()
                            .is_some_and(|u| u.reason == "NODE_LEFT")
                            && node_of(last).is_none() =>
                    {
                        let restart = shutdowns
                            .get(last)
                            .filter(|r| r.kind == "restart")
                            .map(|r| r.allocation_delay_ms.unwrap_or(DEFAULT_RESTART_DELAY_MS))
                            .unwrap_or(0);
                        meta.node_left_delay_ms.max(restart)
                    }
                    _ => 0,
                };
                let delayed = now_ms < at_ms.saturating_add(delay);
                if let Some(u) = t.copies[ri].unassigned.as_mut() {
                    u.delayed = delayed;
                }
                if delayed || !primary_active || s.enable != "all" {
                    continue;
                }
                let candidates: Vec<&DiscoveryNode> = nodes
                    .iter()
                    .filter(|n| can_allocate(t, n, false, None, &incoming))
                    .collect();
                let chosen = last_node
                    .as_deref()
                    .and_then(|l| candidates.iter().find(|n| n.id == l))
                    .map(|n| n.id.clone())
                    .or_else(|| least_loaded(candidates.iter().copied(), &load));
                if let Some(n) = chosen {
                    let c = &mut t.copies[ri];
                    c.state = CopyState::Initializing;
                    c.node = Some(n.clone());
                    c.allocation_id = Some(new_uuid());
                    c.unassigned = None;
                    *load.entry(n.clone()).or_default() += 1;
                    *incoming.entry(n).or_default() += 1;
                }
            }
            // Moves: started copies whose node they may not stay on.
            for ci in 0..t.copies.len() {
                let c = &t.copies[ci];
                if c.state != CopyState::Started {
                    continue;
                }
                let Some(here) = c.node.as_deref().and_then(node_of) else {
                    continue;
                };
                let must_leave = excluded(s, here) || shutting(here) || !here.is_data();
                let enabled = match s.enable.as_str() {
                    "all" => true,
                    "primaries" => c.primary,
                    _ => false,
                };
                if !must_leave || !enabled {
                    continue;
                }
                let primary = c.primary;
                let from = here.id.clone();
                let candidates = nodes
                    .iter()
                    .filter(|n| can_allocate(t, n, primary, Some(&from), &incoming));
                if let Some(n) = least_loaded(candidates, &load) {
                    let c = &mut t.copies[ci];
                    c.state = CopyState::Relocating;
                    c.relocating_node = Some(n.clone());
                    c.target_allocation_id = Some(new_uuid());
                    *load.entry(n.clone()).or_default() += 1;
                    *incoming.entry(n).or_default() += 1;
                }
            }
        }
    }
    rebalance(state, &ctx, &mut incoming);
}

/// The deciders' inputs.
struct Deciders<'a> {
    s: &'a AllocSettings,
    nodes: &'a [DiscoveryNode],
    shutdowns: &'a BTreeMap<String, ShutdownRecord>,
    /// Target node name → the node a `replace` shutdown empties into it.
    replace_targets: &'a BTreeMap<String, String>,
}

impl Deciders<'_> {
    fn node(&self, id: &str) -> Option<&DiscoveryNode> {
        self.nodes.iter().find(|n| n.id == id)
    }

    fn shutting(&self, n: &DiscoveryNode) -> bool {
        self.shutdowns
            .get(&n.id)
            .is_some_and(|r| r.kind == "remove" || r.kind == "replace")
    }

    /// Whether `n` may take a copy of `t` (`moving_from`: the copy leaves that node).
    fn allowed(
        &self,
        t: &ShardTable,
        n: &DiscoveryNode,
        primary: bool,
        moving_from: Option<&str>,
        incoming: &BTreeMap<String, usize>,
        replicas: u32,
    ) -> bool {
        let s = self.s;
        if !n.is_data() || excluded(s, n) || self.shutting(n) {
            return false;
        }
        if t.copies.iter().any(|c| c.touches(&n.id)) {
            return false;
        }
        if let Some(source) = self.replace_targets.get(&n.name)
            && moving_from != Some(source.as_str())
        {
            return false;
        }
        if (!primary || moving_from.is_some())
            && incoming.get(&n.id).copied().unwrap_or(0) >= s.concurrent_recoveries
        {
            return false;
        }
        // Version: a replica recovers from its primary; a moved primary from its old node.
        let reference = if primary {
            moving_from.and_then(|m| self.node(m))
        } else {
            t.primary()
                .and_then(|p| p.node.as_deref())
                .and_then(|p| self.node(p))
        };
        if reference.is_some_and(|r| n.version < r.version) {
            return false;
        }
        awareness_allows(s, self.nodes, t, n, moving_from, replicas)
    }
}

/// Rebalancing (`cluster.routing.allocation.allow_rebalance: indices_all_active`, one move at a time):
/// once every copy is active, a copy moves from the data node holding the most copies to the one
/// holding the fewest while they differ by two or more (a plain count; Elasticsearch weighs shards per
/// index and per node).
fn rebalance(state: &mut ClusterState, ctx: &Deciders<'_>, incoming: &mut BTreeMap<String, usize>) {
    let s = ctx.s;
    if s.enable != "all" || s.rebalance == "none" {
        return;
    }
    let all_active = state
        .routing
        .values()
        .flatten()
        .flat_map(|t| &t.copies)
        .all(|c| c.state == CopyState::Started);
    if !all_active {
        return;
    }
    let eligible: Vec<&DiscoveryNode> = ctx
        .nodes
        .iter()
        .filter(|n| n.is_data() && !excluded(s, n) && !ctx.shutting(n))
        .collect();
    let mut load: BTreeMap<&str, usize> = eligible.iter().map(|n| (n.id.as_str(), 0)).collect();
    for c in state.routing.values().flatten().flat_map(|t| &t.copies) {
        if let Some(l) = c.node.as_deref().and_then(|n| load.get_mut(n)) {
            *l += 1;
        }
    }
    let mut by_load: Vec<(usize, &str)> = load.iter().map(|(n, l)| (*l, *n)).collect();
    by_load.sort_unstable();
    let (Some((low, to)), Some((high, from))) = (by_load.first().copied(), by_load.last().copied())
    else {
        return;
    };
    if high < low + 2 {
        return;
    }
    let Some(target) = ctx.node(to).cloned() else {
        return;
    };
    let metas = state.metadata.indices.clone();
    for (index, shards) in state.routing.iter_mut() {
        let replicas = metas.get(index).map(|m| m.number_of_replicas).unwrap_or(0);
        for t in shards.iter_mut() {
            let Some(ci) = t.copies.iter().position(|c| {
                c.node.as_deref() == Some(from)
                    && match s.rebalance.as_str() {
                        "primaries" => c.primary,
                        "replicas" => !c.primary,
                        _ => true,
                    }
            }) else {
                continue;
            };
            let primary = t.copies[ci].primary;
            if ctx.allowed(t, &target, primary, Some(from), incoming, replicas) {
                let c = &mut t.copies[ci];
                c.state = CopyState::Relocating;
                c.relocating_node = Some(target.id.clone());
                c.target_allocation_id = Some(new_uuid());
                *incoming.entry(target.id.clone()).or_default() += 1;
                return;
            }
        }
    }
}

/// Adds or drops replica copies to match `replicas` (unassigned ones go first, then the least advanced).
fn fit_replica_count(t: &mut ShardTable, replicas: u32, now_ms: u64) {
    let want = replicas as usize + 1;
    while t.copies.len() < want {
        t.copies
            .push(ShardCopy::unassigned(false, "REPLICA_ADDED", now_ms, None));
    }
    while t.copies.len() > want {
        let Some(i) = (0..t.copies.len())
            .filter(|i| !t.copies[*i].primary)
            .min_by_key(|i| t.copies[*i].state)
        else {
            break;
        };
        t.copies.remove(i);
    }
}

fn least_loaded<'a>(
    candidates: impl Iterator<Item = &'a DiscoveryNode>,
    load: &BTreeMap<String, usize>,
) -> Option<String> {
    candidates
        .min_by_key(|n| (load.get(&n.id).copied().unwrap_or(0), n.id.clone()))
        .map(|n| n.id.clone())
}

/// Elasticsearch's `AwarenessAllocationDecider`.
fn awareness_allows(
    s: &AllocSettings,
    nodes: &[DiscoveryNode],
    t: &ShardTable,
    n: &DiscoveryNode,
    moving_from: Option<&str>,
    replicas: u32,
) -> bool {
    let copies = replicas as usize + 1;
    for attr in &s.awareness {
        let Some(value) = n.attributes.get(attr) else {
            return false;
        };
        let mut values: BTreeSet<&str> = nodes
            .iter()
            .filter_map(|m| m.attributes.get(attr).map(String::as_str))
            .collect();
        if let Some(f) = s.forced.get(attr) {
            values.extend(f.iter().map(String::as_str));
        }
        let count = values.len().max(1);
        let (avg, leftover) = (copies / count, copies % count);
        let allowed = if avg == 0 {
            1
        } else {
            avg + usize::from(leftover > 0)
        };
        let mut here = 1usize;
        for c in &t.copies {
            for holder in [c.node.as_deref(), c.relocating_node.as_deref()]
                .into_iter()
                .flatten()
            {
                if Some(holder) == moving_from {
                    continue;
                }
                if nodes
                    .iter()
                    .find(|m| m.id == holder)
                    .and_then(|m| m.attributes.get(attr))
                    == Some(value)
                {
                    here += 1;
                }
            }
        }
        if here > allowed {
            return false;
        }
    }
    true
}

/// Cluster health of a set of shard tables (Elasticsearch's `ClusterShardHealth` rules).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Health {
    /// 0 green, 1 yellow, 2 red.
    pub status: u8,
    pub active_primary: usize,
    pub active: usize,
    pub relocating: usize,
    pub initializing: usize,
    pub unassigned: usize,
    pub delayed_unassigned: usize,
    pub total: usize,
}

impl Health {
    pub fn add(&mut self, t: &ShardTable) {
        for c in &t.copies {
            self.total += 1;
            match c.state {
                CopyState::Started => self.active += 1,
                CopyState::Relocating => {
                    self.active += 1;
                    self.relocating += 1;
                }
                CopyState::Initializing => self.initializing += 1,
                CopyState::Unassigned => {
                    self.unassigned += 1;
                    if c.unassigned.as_ref().is_some_and(|u| u.delayed) {
                        self.delayed_unassigned += 1;
                    }
                }
            }
            if c.primary && c.state.active() {
                self.active_primary += 1;
            }
        }
        let shard_status = match t.primary() {
            Some(p) if p.state.active() => {
                if t.active_count() == t.copies.len() {
                    0
                } else {
                    1
                }
            }
            // A new shard's primary still initializing is yellow, an existing one's red.
            Some(p) if p.state == CopyState::Initializing && t.in_sync.is_empty() => 1,
            _ => 2,
        };
        self.status = self.status.max(shard_status);
    }

    pub fn status_name(&self) -> &'static str {
        ["green", "yellow", "red"][usize::from(self.status.min(2))]
    }
}

/// Parses an `allocation_delay`-style time value into milliseconds.
pub fn time_ms(raw: &str) -> Option<u64> {
    parse_time(raw).map(|d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests;
