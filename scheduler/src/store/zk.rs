//! The scheduler's state in ZooKeeper (`--state zk://hosts/<root>`), on top of `tether_zk::ZkStore`.
//!
//! Layout under `<root>/state` (all values JSON, readable with `zkCli.sh get`):
//! - `framework_id`: `{"value": "<framework id>"}`
//! - `desired`: `{"value": <desired node count>}`
//! - `cluster_formed`: `{"value": true}` once a node reported a real cluster UUID
//! - `bootstrap`: `{"value": {"cluster_uuid": "...", "security": "Off"}}` (or `null` after a reset)
//! - `groups`: `{"value": {"<group>": {"index": <n>, "desired": <count>}}}`, the named node groups
//!   (absent until a `--group` other than `default` is first seen)
//! - `node_config`: `{"value": {"generation": <n>, "groups": {"<group>": [{"generation", "config"}]}}}`,
//!   the stored node configuration (`tetherctl update`; absent until first seeded)
//! - `rollout`: `{"value": <rollout>|null}`, the rolling change in progress or the last one
//! - `slots/<bb>`: table buckets `{"entries": {"<node id>": <slot>}}`, where a slot is the core's
//!   `SlotRecord` (volumes, generation, newest task id and agent, removed/forced flags, last reason,
//!   mount host, configuration generation, certificate expiry).
//!
//! Every write is compare-and-set against the versions this instance read at load time and fenced on
//! its election znode; a write that loses is returned as an error and poisons the store, and the
//! scheduler stops rather than retrying (another instance may lead by then).

use serde::{Deserialize, Serialize};
use tether_core::ids::{FrameworkId, GroupName, NodeId};
use tether_core::state::{
    Bootstrap, ConfigTable, GroupRecord, PersistedState, Rollout, SlotRecord, StateWrite,
};
use tether_zk::{Batch, ZkStore};

use super::StoreError;

const FRAMEWORK_ID: &str = "framework_id";
const DESIRED: &str = "desired";
const GROUPS: &str = "groups";
const CLUSTER_FORMED: &str = "cluster_formed";
const BOOTSTRAP: &str = "bootstrap";
const SLOTS: &str = "slots";
const NODE_CONFIG: &str = "node_config";
const ROLLOUT: &str = "rollout";

/// A single documented value: `{"value": ...}` leaves room for fields added later.
#[derive(Serialize, Deserialize)]
struct Doc<T> {
    value: T,
}

/// The loaded state plus the ZooKeeper store its writes go to.
#[derive(Debug)]
pub struct ZkStateStore {
    store: ZkStore,
    state: PersistedState,
    fresh: bool,
}

impl ZkStateStore {
    /// Loads everything under `<root>/state` (remembering versions for the compare-and-set writes).
    pub async fn load(store: ZkStore) -> Result<Self, StoreError> {
        let framework_id = match store.get::<Doc<String>>(FRAMEWORK_ID).await? {
            Some(d) => Some(
                FrameworkId::new(&d.value).map_err(|e| StoreError::ZkCorrupt {
                    key: FRAMEWORK_ID.into(),
                    detail: e.to_string(),
                })?,
            ),
            None => None,
        };
        let desired = store.get::<Doc<u64>>(DESIRED).await?;
        let formed = store.get::<Doc<bool>>(CLUSTER_FORMED).await?;
        let bootstrap = store.get::<Doc<Option<Bootstrap>>>(BOOTSTRAP).await?;
        let groups = store
            .get::<Doc<std::collections::BTreeMap<GroupName, GroupRecord>>>(GROUPS)
            .await?;
        let node_config = store.get::<Doc<ConfigTable>>(NODE_CONFIG).await?;
        let rollout = store.get::<Doc<Option<Rollout>>>(ROLLOUT).await?;
        let table = store.get_table::<SlotRecord>(SLOTS).await?;
        let mut slots = std::collections::BTreeMap::new();
        for (key, rec) in table {
            if key != rec.node_id.0.to_string() {
                return Err(StoreError::ZkCorrupt {
                    key: format!("{SLOTS}/{key}"),
                    detail: format!("holds the slot of node {}", rec.node_id),
                });
            }
            slots.insert(rec.node_id, rec);
        }
        let fresh =
            framework_id.is_none() && desired.is_none() && slots.is_empty() && groups.is_none();
        let state = PersistedState {
            framework_id,
            desired: desired.map_or(0, |d| d.value),
            cluster_formed: formed.is_some_and(|d| d.value),
            bootstrap: bootstrap.and_then(|d| d.value),
            slots,
            groups: groups.map(|d| d.value).unwrap_or_default(),
            node_config: node_config.map(|d| d.value),
            rollout: rollout.and_then(|d| d.value),
        };
        Ok(Self {
            store,
            state,
            fresh,
        })
    }

    pub fn state(&self) -> &PersistedState {
        &self.state
    }

    pub fn is_fresh(&self) -> bool {
        self.fresh
    }

    /// The ZooKeeper store, for documents beside the state (the agent-token secret).
    pub fn zk(&self) -> &ZkStore {
        &self.store
    }

    /// Commits `batch` as one compare-and-set `multi` (fenced), then applies it to the in-memory state.
    pub async fn write(&mut self, batch: &[StateWrite]) -> Result<(), StoreError> {
        let mut b = Batch::new();
        // The group table is one document: written once per batch, as the batch leaves it.
        let mut groups: Option<std::collections::BTreeMap<GroupName, GroupRecord>> = None;
        for w in batch {
            match w {
                StateWrite::FrameworkId(id) => b.put(FRAMEWORK_ID, &Doc { value: id.as_str() })?,
                StateWrite::Desired(n) => b.put(DESIRED, &Doc { value: *n })?,
                StateWrite::ClusterFormed => b.put(CLUSTER_FORMED, &Doc { value: true })?,
                StateWrite::Bootstrapped(boot) => {
                    b.put(CLUSTER_FORMED, &Doc { value: true })?;
                    b.put(
                        BOOTSTRAP,
                        &Doc {
                            value: Some(boot.clone()),
                        },
                    )?
                }
                StateWrite::BootstrapReset => {
                    b.put(CLUSTER_FORMED, &Doc { value: false })?;
                    b.put(BOOTSTRAP, &Doc::<Option<Bootstrap>> { value: None })?
                }
                StateWrite::Slot(rec) => b.upsert(SLOTS, &slot_key(rec.node_id), rec)?,
                StateWrite::RemoveSlot(id) => b.remove(SLOTS, &slot_key(*id))?,
                StateWrite::NodeConfig(table) => b.put(NODE_CONFIG, &Doc { value: table })?,
                StateWrite::Rollout(r) => b.put(ROLLOUT, &Doc { value: r })?,
                StateWrite::Group(name, rec) => {
                    groups
                        .get_or_insert_with(|| self.state.groups.clone())
                        .insert(name.clone(), rec.clone());
                    &mut b
                }
            };
        }
        if let Some(groups) = &groups {
            b.put(GROUPS, &Doc { value: groups })?;
        }
        self.store.commit(b).await?;
        for w in batch {
            self.state.apply(w);
        }
        self.fresh = false;
        Ok(())
    }
}

fn slot_key(id: NodeId) -> String {
    id.0.to_string()
}
