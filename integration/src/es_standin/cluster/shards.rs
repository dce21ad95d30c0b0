//! Cluster-state updates through the master, shard recovery on the nodes, and documents kept in shard
//! copies.
//!
//! - **Updates** (index creation, shard started/failed, settings, shutdown records, voting exclusions) go
//!   to the elected master, which applies them, reroutes ([`super::routing`]) and publishes; a master that
//!   fails or changes is retried until the timeout, as `TransportMasterNodeAction` does. The master also
//!   reroutes every `follower_check.interval`, so delayed replicas are assigned when their delay ends.
//! - **Recovery**: a node that finds a copy INITIALIZING on it (or RELOCATING to it) recovers it — a new
//!   primary from an empty store, a primary with data from its own data path, any other copy by copying
//!   every document from the primary's node — waits `es_standin.recovery_time` (not an Elasticsearch
//!   setting: how long a recovery takes here, 200ms by default, so INITIALIZING and RELOCATING are seen),
//!   then reports it started to the master.
//! - **Writes**: `shard = hash(id) % number_of_shards`; the coordinating node sends the write to the
//!   primary's node (waiting up to `timeout` for an active primary), which writes it durably, then to
//!   every other assigned copy (started, recovering, relocation target); a copy that misses it is failed
//!   through the master before the write is acknowledged. Copies apply a version only if newer, so a
//!   recovery and concurrent writes converge. **Reads** go to an active copy (the local one first).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::routing::{
    self, AllocSettings, CopyState, IndexMeta, ShardTable, ShutdownRecord, VotingExclusion,
};
use super::state::{ClusterState, DiscoveryNode, new_uuid};
use super::transport::{Request, Response, TransportError};
use super::{ClusterError, ClusterView, Coordinator, Mode};
use crate::es_standin::documents::{self, DocError};

/// A change to the cluster state that only the master makes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ClusterUpdate {
    CreateIndex {
        name: String,
        shards: u32,
        replicas: u32,
    },
    /// `PUT <index>/_settings`: `number_of_replicas`, `unassigned.node_left.delayed_timeout`.
    UpdateIndexSettings {
        index: String,
        replicas: Option<u32>,
        node_left_delay_ms: Option<u64>,
    },
    ShardStarted {
        index: String,
        shard: usize,
        allocation_id: String,
    },
    ShardFailed {
        index: String,
        shard: usize,
        allocation_id: String,
    },
    /// `None` resets a setting.
    PutSettings {
        persistent: BTreeMap<String, Option<String>>,
        transient: BTreeMap<String, Option<String>>,
    },
    PutShutdown(ShutdownRecord),
    DeleteShutdown {
        node_id: String,
    },
    AddVotingExclusions(Vec<VotingExclusion>),
    ClearVotingExclusions,
}

/// Milliseconds since the epoch (Elasticsearch's timestamps in the cluster state are wall-clock).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Applies `u` to `state`; `false` when nothing changed.
fn apply(state: &mut ClusterState, u: &ClusterUpdate, now: u64) -> bool {
    match u {
        ClusterUpdate::CreateIndex {
            name,
            shards,
            replicas,
        } => {
            if state.indices.contains(name) {
                return false;
            }
            let meta = IndexMeta {
                uuid: new_uuid(),
                number_of_shards: *shards,
                number_of_replicas: *replicas,
                node_left_delay_ms: routing::DEFAULT_NODE_LEFT_DELAY_MS,
                creation_date_ms: now,
            };
            state.indices.insert(name.clone());
            state
                .routing
                .insert(name.clone(), routing::new_index_routing(&meta, now));
            state.metadata.indices.insert(name.clone(), meta);
        }
        ClusterUpdate::UpdateIndexSettings {
            index,
            replicas,
            node_left_delay_ms,
        } => {
            let Some(m) = state.metadata.indices.get_mut(index) else {
                return false;
            };
            if let Some(r) = replicas {
                m.number_of_replicas = *r;
            }
            if let Some(d) = node_left_delay_ms {
                m.node_left_delay_ms = *d;
            }
        }
        ClusterUpdate::ShardStarted {
            index,
            shard,
            allocation_id,
        } => return routing::shard_started(state, index, *shard, allocation_id),
        ClusterUpdate::ShardFailed {
            index,
            shard,
            allocation_id,
        } => routing::shard_failed(state, index, *shard, allocation_id, now),
        ClusterUpdate::PutSettings {
            persistent,
            transient,
        } => {
            for (scope, changes) in [
                (&mut state.metadata.persistent, persistent),
                (&mut state.metadata.transient, transient),
            ] {
                for (k, v) in changes {
                    match v {
                        Some(v) => scope.insert(k.clone(), v.clone()),
                        None => scope.remove(k),
                    };
                }
            }
        }
        ClusterUpdate::PutShutdown(r) => {
            let mut r = r.clone();
            if let Some(old) = state.metadata.shutdowns.get(&r.node_id) {
                r.started_ms = old.started_ms;
            }
            state.metadata.shutdowns.insert(r.node_id.clone(), r);
        }
        ClusterUpdate::DeleteShutdown { node_id } => {
            state.metadata.shutdowns.remove(node_id);
        }
        ClusterUpdate::AddVotingExclusions(add) => {
            for e in add {
                if !state.metadata.voting_config_exclusions.contains(e) {
                    state.metadata.voting_config_exclusions.push(e.clone());
                }
            }
        }
        ClusterUpdate::ClearVotingExclusions => {
            if state.metadata.voting_config_exclusions.is_empty() {
                return false;
            }
            state.metadata.voting_config_exclusions.clear();
        }
    }
    true
}

/// Which shard a document id belongs to (FNV-1a; Elasticsearch's murmur3 routing is not reproduced).
pub fn shard_of(id: &str, shards: u32) -> usize {
    let mut h: u32 = 0x811c_9dc5;
    for b in id.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    (h % shards.max(1)) as usize
}

/// A refused document request, Elasticsearch-shaped (`status`, `type`, `reason`).
pub type DocFailure = DocError;

fn failure(status: u16, kind: &'static str, reason: impl Into<String>) -> DocFailure {
    DocError {
        status,
        kind,
        reason: reason.into(),
    }
}

impl Coordinator {
    /// Sends `update` to the master, retrying with the next master until `timeout`; `done` tells from a
    /// node's view that it is already in effect (then nothing is sent).
    pub async fn submit(
        self: &Arc<Self>,
        update: ClusterUpdate,
        timeout: Duration,
        done: impl Fn(&ClusterView) -> bool,
    ) -> Result<(), ClusterError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = self.view.subscribe();
        loop {
            let tried = {
                let v = rx.borrow_and_update();
                if done(&v) {
                    return Ok(());
                }
                v.master.clone().map(|m| (m, v.state.version))
            };
            let Some((master, version)) = tried else {
                tokio::time::timeout_at(deadline, rx.wait_for(|v| v.master.is_some()))
                    .await
                    .map_err(|_| ClusterError::NoMaster)?
                    .map_err(|_| ClusterError::NoMaster)?;
                continue;
            };
            let attempt = if master.id == self.local().id {
                self.update_as_master(update.clone()).await
            } else {
                match self
                    .transport
                    .send_to(
                        &master,
                        Request::Update(update.clone()),
                        deadline.saturating_duration_since(tokio::time::Instant::now()),
                    )
                    .await
                {
                    Ok(Response::Published(v)) => Ok(v),
                    Ok(other) => Err(format!("unexpected answer {other:?}")),
                    Err(e) => Err(e.to_string()),
                }
            };
            match attempt {
                Ok(published) => {
                    // Read-your-writes on this node, as a master-node action's caller would see it
                    // (bounded: the commit reaches this node shortly after the master's).
                    let applied = rx.wait_for(|v| v.state.version >= published);
                    let _ = tokio::time::timeout_at(deadline, applied).await;
                    return Ok(());
                }
                Err(e) => {
                    tracing::debug!(update = ?update, master = %master, error = %e,
                        "master could not apply the update; retrying with the next master");
                    // `MasterNodeChangePredicate`: another master, or the same one with a newer state.
                    let changed = rx.wait_for(|v| {
                        v.master
                            .as_ref()
                            .is_some_and(|m| m.id != master.id || v.state.version > version)
                            || done(v)
                    });
                    tokio::time::timeout_at(deadline, changed)
                        .await
                        .map_err(|_| ClusterError::NoMaster)?
                        .map_err(|_| ClusterError::NoMaster)?;
                }
            }
        }
    }

    /// Waits (up to `timeout`) until this node applied at least the master's current state, so that a
    /// read answered from this node's state is what the master would answer (Elasticsearch's
    /// master-node read actions run on the master).
    pub async fn sync_with_master(&self, timeout: Duration) {
        let Some(master) = self.view.borrow().master.clone() else {
            return;
        };
        if master.id == self.local().id {
            return;
        }
        if let Ok(Response::Published(version)) = self
            .transport
            .send_to(&master, Request::StateVersion, timeout)
            .await
        {
            let mut rx = self.view.subscribe();
            let _ =
                tokio::time::timeout(timeout, rx.wait_for(|v| v.state.version >= version)).await;
        }
    }

    /// The master's side of [`Coordinator::submit`]: the version of the state the update is in.
    pub(super) async fn update_as_master(
        self: &Arc<Self>,
        update: ClusterUpdate,
    ) -> Result<u64, String> {
        let _guard = self.publish_lock.lock().await;
        let mut state = {
            let i = self.lock();
            if !matches!(i.mode, Mode::Leader) {
                return Err(format!("Node [{}] not master for {update:?}", self.local()));
            }
            i.applied.clone()
        };
        if !apply(&mut state, &update, now_ms()) {
            return Ok(state.version);
        }
        self.publish_next(state).await?;
        Ok(self.lock().applied.version)
    }

    /// The master reroutes when time alone changes the outcome (a delayed replica's delay ending).
    pub(super) async fn reroute_tick(self: &Arc<Self>) {
        let state = {
            let i = self.lock();
            if !matches!(i.mode, Mode::Leader) {
                return;
            }
            i.applied.clone()
        };
        let mut next = state.clone();
        let settings = AllocSettings::effective(&next.metadata, &self.cfg.local_cluster_settings);
        routing::reroute(&mut next, &settings, now_ms());
        if next.routing == state.routing {
            return;
        }
        let _guard = self.publish_lock.lock().await;
        let current = self.lock().applied.clone();
        if current.version != state.version {
            return;
        }
        if let Err(e) = self.publish_next(current).await {
            tracing::debug!(error = %e, "reroute not published");
        }
    }

    // ---- recovery ------------------------------------------------------------------------------

    /// Starts a recovery for every copy newly assigned to this node.
    pub(super) fn start_recoveries(self: &Arc<Self>, state: &ClusterState) {
        let me = self.local().id.clone();
        for (index, shards) in &state.routing {
            for (shard, t) in shards.iter().enumerate() {
                for c in &t.copies {
                    let aid = match c.state {
                        CopyState::Initializing if c.node.as_deref() == Some(&me) => {
                            c.allocation_id.clone()
                        }
                        CopyState::Relocating if c.relocating_node.as_deref() == Some(&me) => {
                            c.target_allocation_id.clone()
                        }
                        _ => None,
                    };
                    let Some(aid) = aid else { continue };
                    let new = self
                        .recovering
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(aid.clone());
                    if !new {
                        continue;
                    }
                    let from_store = c.state == CopyState::Initializing && c.primary;
                    let c2 = self.clone();
                    let index = index.clone();
                    tokio::spawn(async move {
                        c2.recover(index, shard, aid, from_store).await;
                    });
                }
            }
        }
    }

    async fn recover(self: Arc<Self>, index: String, shard: usize, aid: String, from_store: bool) {
        let outcome = if from_store {
            // A new primary starts empty; a primary with data has it on this data path already.
            std::fs::create_dir_all(self.docs.shard_dir(&index, shard)).map_err(|e| e.to_string())
        } else {
            self.copy_from_primary(&index, shard, &aid).await
        };
        tokio::time::sleep(self.cfg.recovery_time).await;
        let update = match outcome {
            Ok(()) => ClusterUpdate::ShardStarted {
                index: index.clone(),
                shard,
                allocation_id: aid.clone(),
            },
            Err(e) => {
                tracing::warn!(index, shard, error = %e, "recovery failed");
                ClusterUpdate::ShardFailed {
                    index: index.clone(),
                    shard,
                    allocation_id: aid.clone(),
                }
            }
        };
        let still_assigned = |v: &ClusterView| !assigned_here(&v.state, &index, shard, &aid);
        if let Err(e) = self
            .submit(update, Duration::from_secs(30), still_assigned)
            .await
        {
            tracing::warn!(index, shard, error = %e, "could not report the recovery to the master");
        }
        self.recovering
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&aid);
    }

    async fn copy_from_primary(&self, index: &str, shard: usize, aid: &str) -> Result<(), String> {
        let state = self.view.borrow().state.clone();
        let primary = state
            .routing
            .get(index)
            .and_then(|s| s.get(shard))
            .and_then(ShardTable::primary)
            .filter(|p| p.state.active())
            .and_then(|p| p.node.clone())
            .and_then(|n| state.nodes.get(&n).cloned())
            .ok_or("no active primary to recover from")?;
        let docs = if primary.id == self.local().id {
            self.docs.all(index, shard)?
        } else {
            match self
                .transport
                .send_to(
                    &primary,
                    Request::RecoverShard {
                        index: index.to_owned(),
                        shard,
                        allocation_id: aid.to_owned(),
                    },
                    Duration::from_secs(60),
                )
                .await
                .map_err(|e| e.to_string())?
            {
                Response::Docs(d) => d,
                other => return Err(format!("unexpected answer {other:?}")),
            }
        };
        std::fs::create_dir_all(self.docs.shard_dir(index, shard)).map_err(|e| e.to_string())?;
        for (id, version, source) in docs {
            self.docs
                .apply(index, shard, &id, version, source)
                .map_err(|e| e.reason)?;
        }
        Ok(())
    }

    /// The primary's side of a recovery: once this node applied the state that assigns the recovering
    /// copy (so every later write goes to it too), a snapshot of the shard's documents.
    pub(super) async fn on_recover_shard(&self, index: &str, shard: usize, aid: &str) -> Response {
        let mut rx = self.view.subscribe();
        let known = rx.wait_for(|v| assigned_here_or_target(&v.state, index, shard, aid));
        if tokio::time::timeout(Duration::from_secs(30), known)
            .await
            .is_err()
        {
            return Response::Refused(format!(
                "[{index}][{shard}] recovery [{aid}] is not known to the primary"
            ));
        }
        let _w = self.docs.write_lock.lock().await;
        match self.docs.all(index, shard) {
            Ok(d) => Response::Docs(d),
            Err(e) => Response::Refused(e),
        }
    }

    // ---- documents -----------------------------------------------------------------------------

    /// A write from a client, sent to the primary (retried while there is none or it moved).
    pub async fn write_doc(
        self: &Arc<Self>,
        index: &str,
        id: &str,
        source: Value,
        timeout: Duration,
    ) -> Result<(u16, Value), DocFailure> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = self.view.subscribe();
        loop {
            let (primary, version) = {
                let v = rx.borrow_and_update();
                let p = primary_node(&v.state, index, id);
                (p, v.state.version)
            };
            let outcome = match &primary {
                Some(p) if p.id == self.local().id => {
                    self.write_as_primary(index, id, &source).await
                }
                Some(p) => match self
                    .transport
                    .send_to(
                        p,
                        Request::PrimaryWrite {
                            index: index.to_owned(),
                            id: id.to_owned(),
                            source: source.clone(),
                        },
                        deadline.saturating_duration_since(tokio::time::Instant::now()),
                    )
                    .await
                {
                    Ok(Response::Written(status, body)) => Ok((status, body)),
                    Ok(other) => Err(failure(500, "exception", format!("{other:?}"))),
                    Err(TransportError::Refused(_, msg)) => Err(failure(503, "retry", msg)),
                    Err(e) => Err(failure(503, "retry", e.to_string())),
                },
                None => Err(failure(503, "retry", "primary shard is not active")),
            };
            match outcome {
                Err(f) if f.kind == "retry" => {
                    let changed = rx.wait_for(|v| v.state.version > version);
                    if tokio::time::timeout_at(deadline, changed).await.is_err() {
                        let shard = rx
                            .borrow()
                            .state
                            .metadata
                            .indices
                            .get(index)
                            .map(|m| shard_of(id, m.number_of_shards));
                        return Err(failure(
                            503,
                            "unavailable_shards_exception",
                            format!(
                                "[{index}][{}] primary shard is not active Timeout: [{timeout:?}], request: [index {{[{index}][{id}]}}]; last failure: {}",
                                shard.unwrap_or(0),
                                f.reason
                            ),
                        ));
                    }
                }
                other => return other,
            }
        }
    }

    /// On the primary's node: write locally, then to every other assigned copy.
    pub(super) async fn write_as_primary(
        self: &Arc<Self>,
        index: &str,
        id: &str,
        source: &Value,
    ) -> Result<(u16, Value), DocFailure> {
        self.docs
            .ensure_lock()
            .map_err(|r| failure(500, "illegal_state_exception", r))?;
        let (shard, version, targets) = {
            let _w = self.docs.write_lock.lock().await;
            let state = self.view.borrow().state.clone();
            let me = self.local().id.clone();
            let Some(meta) = state.metadata.indices.get(index) else {
                return Err(failure(
                    503,
                    "retry",
                    format!("no index [{index}] here yet"),
                ));
            };
            let shard = shard_of(id, meta.number_of_shards);
            let Some(t) = state.routing.get(index).and_then(|s| s.get(shard)) else {
                return Err(failure(503, "retry", "no routing"));
            };
            let is_primary = t
                .primary()
                .is_some_and(|p| p.state.active() && p.node.as_deref() == Some(&me));
            if !is_primary {
                return Err(failure(
                    503,
                    "retry",
                    format!("[{}] is not the primary", self.local()),
                ));
            }
            let version = self.docs.current_version(index, shard, id).unwrap_or(0) + 1;
            self.docs.apply(index, shard, id, version, source.clone())?;
            let mut targets: Vec<(DiscoveryNode, String, bool)> = Vec::new();
            for c in &t.copies {
                if let Some(n) = c.node.as_deref().filter(|n| *n != me)
                    && c.state != CopyState::Unassigned
                    && let (Some(node), Some(aid)) = (state.nodes.get(n), c.allocation_id.clone())
                {
                    targets.push((node.clone(), aid, c.state.active()));
                }
                if let Some(n) = c.relocating_node.as_deref().filter(|n| *n != me)
                    && let (Some(node), Some(aid)) =
                        (state.nodes.get(n), c.target_allocation_id.clone())
                {
                    targets.push((node.clone(), aid, false));
                }
            }
            (shard, version, targets)
        };
        let sends = targets.iter().map(|(n, _, _)| {
            self.transport.send_to(
                n,
                Request::ReplicaWrite {
                    index: index.to_owned(),
                    shard,
                    id: id.to_owned(),
                    version,
                    source: source.clone(),
                },
                self.cfg.publish_timeout,
            )
        });
        let results = futures::future::join_all(sends).await;
        let mut failed = 0;
        for ((n, aid, _), r) in targets.iter().zip(results) {
            if let Err(e) = r {
                failed += 1;
                tracing::warn!(index, shard, node = %n, error = %e, "replica write failed; failing the copy");
                let aid2 = aid.clone();
                let (ix, sh) = (index.to_owned(), shard);
                let gone = move |v: &ClusterView| !copy_exists(&v.state, &ix, sh, &aid2);
                self.submit(
                    ClusterUpdate::ShardFailed {
                        index: index.to_owned(),
                        shard,
                        allocation_id: aid.clone(),
                    },
                    Duration::from_secs(30),
                    gone,
                )
                .await
                .map_err(|e| {
                    failure(
                        500,
                        "replication_response_exception",
                        format!("a copy missed the write and could not be failed: {e}"),
                    )
                })?;
            }
        }
        let total = targets.len() + 1;
        let (status, result) = if version == 1 {
            (201, "created")
        } else {
            (200, "updated")
        };
        Ok((
            status,
            json!({ "_index": index, "_id": id, "_version": version, "result": result,
                    "_shards": { "total": total, "successful": total - failed, "failed": 0 },
                    "_seq_no": version - 1, "_primary_term": 1 }),
        ))
    }

    /// A read, from an active copy (this node's first).
    pub async fn read_doc(&self, index: &str, id: &str) -> Result<(u16, Value), DocFailure> {
        let state = self.view.borrow().state.clone();
        let Some(meta) = state.metadata.indices.get(index) else {
            return Err(failure(
                404,
                "index_not_found_exception",
                format!("no such index [{index}]"),
            ));
        };
        let shard = shard_of(id, meta.number_of_shards);
        let me = self.local().id.clone();
        let t = state.routing.get(index).and_then(|s| s.get(shard));
        let mut holders: Vec<String> = t
            .map(|t| {
                t.copies
                    .iter()
                    .filter(|c| c.state.active())
                    .filter_map(|c| c.node.clone())
                    .collect()
            })
            .unwrap_or_default();
        holders.sort_by_key(|n| *n != me);
        let mut last = String::from("no active copy");
        for h in holders {
            let found = if h == me {
                self.docs
                    .ensure_lock()
                    .map_err(|r| failure(500, "illegal_state_exception", r))?;
                Ok(self.docs.get(index, shard, id))
            } else if let Some(n) = state.nodes.get(&h) {
                match self
                    .transport
                    .send_to(
                        n,
                        Request::GetDoc {
                            index: index.to_owned(),
                            shard,
                            id: id.to_owned(),
                        },
                        Duration::from_secs(10),
                    )
                    .await
                {
                    Ok(Response::Doc(d)) => Ok(d),
                    Ok(other) => Err(format!("{other:?}")),
                    Err(e) => Err(e.to_string()),
                }
            } else {
                Err(format!("node [{h}] not in the cluster"))
            };
            match found {
                Ok(Some((version, source))) => {
                    return Ok((
                        200,
                        json!({ "_index": index, "_id": id, "_version": version, "found": true, "_source": source }),
                    ));
                }
                Ok(None) => {
                    return Ok((404, json!({ "_index": index, "_id": id, "found": false })));
                }
                Err(e) => last = e,
            }
        }
        Err(failure(
            503,
            "no_shard_available_action_exception",
            format!("[{index}][{shard}] {last}"),
        ))
    }
}

/// The node of the active primary of `id`'s shard.
fn primary_node(state: &ClusterState, index: &str, id: &str) -> Option<DiscoveryNode> {
    let meta = state.metadata.indices.get(index)?;
    let shard = shard_of(id, meta.number_of_shards);
    let p = state.routing.get(index)?.get(shard)?.primary()?;
    if !p.state.active() {
        return None;
    }
    state.nodes.get(p.node.as_deref()?).cloned()
}

fn assigned_here(state: &ClusterState, index: &str, shard: usize, aid: &str) -> bool {
    state
        .routing
        .get(index)
        .and_then(|s| s.get(shard))
        .is_some_and(|t| {
            t.copies.iter().any(|c| {
                (c.state == CopyState::Initializing && c.allocation_id.as_deref() == Some(aid))
                    || (c.state == CopyState::Relocating
                        && c.target_allocation_id.as_deref() == Some(aid))
            })
        })
}

fn assigned_here_or_target(state: &ClusterState, index: &str, shard: usize, aid: &str) -> bool {
    assigned_here(state, index, shard, aid) || copy_exists(state, index, shard, aid)
}

fn copy_exists(state: &ClusterState, index: &str, shard: usize, aid: &str) -> bool {
    state
        .routing
        .get(index)
        .and_then(|s| s.get(shard))
        .is_some_and(|t| {
            t.copies.iter().any(|c| {
                c.allocation_id.as_deref() == Some(aid)
                    || c.target_allocation_id.as_deref() == Some(aid)
            })
        })
}

/// A node's shard copies on its data path.
#[derive(Debug)]
pub struct Docs {
    pub indices: std::path::PathBuf,
    pub lock: Option<crate::es_standin::data_path::LockCheck>,
    /// Serializes local writes with the choice of their replication targets and recovery snapshots.
    pub write_lock: tokio::sync::Mutex<()>,
}

impl Docs {
    pub fn shard_dir(&self, index: &str, shard: usize) -> std::path::PathBuf {
        self.indices.join(index).join(shard.to_string())
    }

    pub fn ensure_lock(&self) -> Result<(), String> {
        match &self.lock {
            Some(l) => l.ensure_valid(),
            None => Ok(()),
        }
    }

    fn current_version(&self, index: &str, shard: usize, id: &str) -> Option<u64> {
        documents::read(&self.shard_dir(index, shard), id).map(|d| d.0)
    }

    /// Stores `version` of a document unless a newer one is there.
    pub fn apply(
        &self,
        index: &str,
        shard: usize,
        id: &str,
        version: u64,
        source: Value,
    ) -> Result<(), DocError> {
        self.ensure_lock()
            .map_err(|r| failure(500, "illegal_state_exception", r))?;
        documents::store(&self.shard_dir(index, shard), id, version, source)
    }

    pub fn get(&self, index: &str, shard: usize, id: &str) -> Option<(u64, Value)> {
        documents::read(&self.shard_dir(index, shard), id)
    }

    pub fn all(&self, index: &str, shard: usize) -> Result<Vec<(String, u64, Value)>, String> {
        self.ensure_lock()?;
        documents::all(&self.shard_dir(index, shard))
    }
}

/// The transport side of documents.
impl Coordinator {
    pub(super) async fn on_replica_write(
        &self,
        index: &str,
        shard: usize,
        id: &str,
        version: u64,
        source: Value,
    ) -> Response {
        let _w = self.docs.write_lock.lock().await;
        match self.docs.apply(index, shard, id, version, source) {
            Ok(()) => Response::Ack,
            Err(e) => Response::Refused(e.reason),
        }
    }

    pub(super) fn on_get_doc(&self, index: &str, shard: usize, id: &str) -> Response {
        if let Err(e) = self.docs.ensure_lock() {
            return Response::Refused(e);
        }
        Response::Doc(self.docs.get(index, shard, id))
    }
}
