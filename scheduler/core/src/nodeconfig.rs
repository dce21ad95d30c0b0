//! The stored node configuration (`tetherctl update`): per group, what a node runs (image, operator
//! settings and environment, cpus, mem, heap), numbered by `config_generation`.
//!
//! The start-up flags only seed it: a state without one (written before it existed, or a fresh start)
//! gets the flags' values as generation 1, and every slot written before it existed loads as launched
//! with generation 1 (`SlotRecord::config_generation`'s default). Once stored, the configuration wins
//! over the flags; a flag that differs is reported (a warning naming the `tetherctl update` line that
//! would apply it), never applied behind the operator's back, since applying it means restarting
//! nodes, which only a rollout does safely (`rollout.rs`).
//!
//! Each node runs the configuration its slot records (`config_generation`): a node relaunched after a
//! crash comes back on the one it ran, not on a newer one a rollout has not reached yet (a master on a
//! newer version before the data nodes would lock the older ones out). A node launched for the first
//! time (or scaled up again) takes its group's newest. Older configurations are kept while a slot still
//! runs them (for those relaunches and for `rollout rollback`).

use crate::config::{Config, OWNED_SETTINGS, env_refusal};
use crate::core::Core;
use crate::domain::EsVersion;
use crate::error::CoreError;
use crate::ids::{GroupName, Millis, NodeId};
use crate::state::StateWrite;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What `tetherctl update` can change for a group's nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeConfig {
    /// Elasticsearch image.
    pub image: String,
    /// Operator settings (`--es-setting`), in order.
    pub es_settings: Vec<(String, String)>,
    /// Operator environment (`--es-env`), in order.
    pub es_env: Vec<(String, String)>,
    /// CPUs per node.
    pub cpus: f64,
    /// Memory per node, MB.
    pub mem_mb: f64,
    /// JVM heap per node, MB.
    pub heap_mb: u64,
}

// Only finite numbers are ever stored (`NodeConfig::validate`), so equality is an equivalence.
impl Eq for NodeConfig {}

/// One group's configuration and the generation it was stored under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versioned {
    /// Its `config_generation`.
    pub generation: u64,
    /// The configuration.
    pub config: NodeConfig,
}

/// Every group's configurations, durable (`PersistedState::node_config`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigTable {
    /// The newest `config_generation` handed out (1 for the configuration seeded from the flags).
    pub generation: u64,
    /// Per group name: its configurations, oldest first; the last is the group's current one.
    pub groups: BTreeMap<GroupName, Vec<Versioned>>,
}

impl ConfigTable {
    /// The current configuration of `group`.
    #[must_use]
    pub fn current(&self, group: &GroupName) -> Option<&Versioned> {
        self.groups.get(group).and_then(|v| v.last())
    }

    /// The configuration a node of `group` launched with generation `generation` runs: the group's
    /// newest stored at or before it (a generation that changed only other groups left it as it was).
    #[must_use]
    pub fn at(&self, group: &GroupName, generation: u64) -> Option<&Versioned> {
        let list = self.groups.get(group)?;
        list.iter()
            .rev()
            .find(|v| v.generation <= generation)
            .or_else(|| list.first())
    }
}

/// A requested change (`tetherctl update`); `None` keeps the current value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfigUpdate {
    /// New image.
    pub image: Option<String>,
    /// Settings to set (added, or replacing the same key).
    pub es_settings: Vec<(String, String)>,
    /// Environment variables to set (added, or replacing the same name).
    pub es_env: Vec<(String, String)>,
    /// Settings to remove (each must be stored).
    pub unset_es_settings: Vec<String>,
    /// Environment variables to remove (each must be stored).
    pub unset_es_env: Vec<String>,
    /// New CPUs per node.
    pub cpus: Option<f64>,
    /// New memory per node, MB.
    pub mem_mb: Option<f64>,
    /// New heap per node, MB.
    pub heap_mb: Option<u64>,
    /// The group (`None`: every group).
    pub group: Option<String>,
    /// Accept an image tag with no readable version.
    pub allow_unknown_version: bool,
}

/// The version in an image reference's tag (`docker.elastic.co/elasticsearch/elasticsearch:8.13.4`,
/// `es:7.17.1-SNAPSHOT`); `None` when there is no tag or it is no version. A digest (`@sha256:`) is
/// not a version.
#[must_use]
pub fn image_version(image: &str) -> Option<EsVersion> {
    let name = image.split('@').next()?;
    // The tag follows the last ':' after the last '/' (a registry's port has a '/' after it).
    let last = name.rsplit('/').next()?;
    let (_, tag) = last.rsplit_once(':')?;
    EsVersion::parse(tag)
}

impl NodeConfig {
    /// The configuration the flags give the nodes of `group`.
    #[must_use]
    pub fn from_flags(config: &Config, group: &GroupName) -> NodeConfig {
        let r = config.resources_of(config.group_spec(group));
        NodeConfig {
            image: config.image.clone(),
            es_settings: config.es_settings.clone(),
            es_env: config.es_env.clone(),
            cpus: r.cpus,
            mem_mb: r.mem_mb,
            heap_mb: r.heap_mb,
        }
    }

    /// Refuses what `Config::validate` refuses of the same values.
    pub fn validate(&self) -> Result<(), CoreError> {
        let bad = |m: String| Err(CoreError::Refused(m));
        if self.image.trim().is_empty() {
            return bad("the image must not be empty".into());
        }
        if !(self.cpus.is_finite()
            && self.cpus > 0.0
            && self.mem_mb.is_finite()
            && self.mem_mb > 0.0)
            || self.heap_mb == 0
        {
            return bad("cpus, mem and heap must be positive".into());
        }
        for (key, _) in &self.es_settings {
            if key.is_empty() {
                return bad("an Elasticsearch setting needs a name".into());
            }
            if OWNED_SETTINGS.contains(&key.as_str()) {
                return bad(format!(
                    "--es-setting {key}: Tether sets {key} itself and it cannot be overridden"
                ));
            }
        }
        for (name, _) in &self.es_env {
            if let Some(why) = env_refusal(name) {
                return bad(why);
            }
        }
        Ok(())
    }

    /// The `tetherctl update` arguments that turn `self` into `other` (empty: nothing differs that
    /// `update` can change).
    #[must_use]
    pub fn update_args(&self, other: &NodeConfig) -> Vec<String> {
        let mut args = Vec::new();
        if self.image != other.image {
            args.push(format!("--image {}", other.image));
        }
        for (k, v) in &other.es_settings {
            if !self.es_settings.iter().any(|(k2, v2)| k2 == k && v2 == v) {
                args.push(format!("--es-setting {k}={v}"));
            }
        }
        for (k, _) in &self.es_settings {
            if !other.es_settings.iter().any(|(k2, _)| k2 == k) {
                args.push(format!("--unset-es-setting {k}"));
            }
        }
        for (k, v) in &other.es_env {
            if !self.es_env.iter().any(|(k2, v2)| k2 == k && v2 == v) {
                args.push(format!("--es-env {k}={v}"));
            }
        }
        for (k, _) in &self.es_env {
            if !other.es_env.iter().any(|(k2, _)| k2 == k) {
                args.push(format!("--unset-es-env {k}"));
            }
        }
        if self.cpus != other.cpus {
            args.push(format!("--cpus {}", other.cpus));
        }
        if self.mem_mb != other.mem_mb {
            args.push(format!("--mem {}", other.mem_mb));
        }
        if self.heap_mb != other.heap_mb {
            args.push(format!("--heap {}", other.heap_mb));
        }
        args
    }
}

/// Adds each `(key, value)` to `entries`, or replaces the value of the same key in place.
fn set_entries(entries: &mut Vec<(String, String)>, set: &[(String, String)]) {
    for (k, v) in set {
        match entries.iter_mut().find(|(k2, _)| k2 == k) {
            Some(entry) => entry.1 = v.clone(),
            None => entries.push((k.clone(), v.clone())),
        }
    }
}

/// Removes each key of `unset` from `entries`; a key that is not there is refused (a typo would
/// otherwise roll the whole cluster for nothing).
fn unset_entries(
    entries: &mut Vec<(String, String)>,
    unset: &[String],
    what: &str,
    group: &GroupName,
) -> Result<(), CoreError> {
    for key in unset {
        let before = entries.len();
        entries.retain(|(k, _)| k != key);
        if entries.len() == before {
            return Err(CoreError::Refused(format!(
                "group {group} has no stored {what} {key} to remove"
            )));
        }
    }
    Ok(())
}

impl Core {
    /// At construction: seeds the stored configuration from the flags (generation 1) when the state has
    /// none, adds a group that has none at the current generation, and warns about a flag that differs
    /// from what is stored.
    pub(crate) fn seed_node_config(&mut self) {
        let names: Vec<GroupName> = self.groups.values().map(|g| g.name.clone()).collect();
        let mut table = self.persisted.node_config.clone().unwrap_or(ConfigTable {
            generation: 1,
            groups: BTreeMap::new(),
        });
        let before = self.persisted.node_config.clone();
        let mut warnings = Vec::new();
        for name in names {
            let flags = NodeConfig::from_flags(&self.config, &name);
            match table.current(&name) {
                None => {
                    let generation = table.generation;
                    table.groups.insert(
                        name,
                        vec![Versioned {
                            generation,
                            config: flags,
                        }],
                    );
                }
                Some(stored) => {
                    let args = stored.config.update_args(&flags);
                    if !args.is_empty() {
                        let group = if name.is_default() {
                            String::new()
                        } else {
                            format!(" --group {name}")
                        };
                        warnings.push(format!(
                            "the start-up flags differ from the stored configuration of group {name} \
                             (generation {}), which wins; to apply the flags, run `tetherctl update{group} {}`",
                            stored.generation,
                            args.join(" "),
                        ));
                    }
                }
            }
        }
        if before.as_ref() != Some(&table) {
            self.write(StateWrite::NodeConfig(table));
        }
        for message in warnings {
            self.watch(crate::command::WatchEvent::Warning { message });
        }
    }

    /// The stored configuration table (always present once the core is built).
    pub(crate) fn config_table(&self) -> Option<&ConfigTable> {
        self.persisted.node_config.as_ref()
    }

    /// The name of node `id`'s group as the configuration table keys it.
    pub(crate) fn group_key(&self, id: NodeId) -> GroupName {
        self.groups
            .get(&id.group())
            .map_or_else(GroupName::default_group, |g| g.name.clone())
    }

    /// The generation of `group`'s current configuration.
    pub(crate) fn current_generation(&self, group: &GroupName) -> u64 {
        self.config_table()
            .and_then(|t| t.current(group))
            .map_or(1, |v| v.generation)
    }

    /// The configuration generation node `id` launches with next: the one its slot records, or its
    /// group's current one for a node that never ran.
    #[must_use]
    pub fn node_generation(&self, id: NodeId) -> u64 {
        match self.record(id) {
            Some(r) if r.generation > 0 => r.config_generation,
            _ => self.current_generation(&self.group_key(id)),
        }
    }

    /// The configuration node `id` launches with next.
    #[must_use]
    pub fn node_config(&self, id: NodeId) -> NodeConfig {
        let group = self.group_key(id);
        self.config_table()
            .and_then(|t| t.at(&group, self.node_generation(id)))
            .map_or_else(
                || NodeConfig::from_flags(&self.config, &group),
                |v| v.config.clone(),
            )
    }

    /// The newest configuration number.
    #[must_use]
    pub fn config_generation(&self) -> u64 {
        self.config_table().map_or(1, |t| t.generation)
    }

    /// Whether node `id` runs an older configuration than its group's current one.
    pub(crate) fn out_of_date(&self, id: NodeId) -> bool {
        self.record(id).is_some_and(|r| {
            !r.removed && self.node_generation(id) < self.current_generation(&self.group_key(id))
        })
    }

    /// The groups an admin request names (`None`: every group).
    fn target_groups(&self, group: Option<&str>) -> Result<Vec<GroupName>, CoreError> {
        match group {
            None => Ok(self.groups.values().map(|g| g.name.clone()).collect()),
            Some(g) => {
                self.group_desired(g)?;
                Ok(vec![GroupName::new(g).map_err(CoreError::from)?])
            }
        }
    }

    /// The lowest version the cluster runs: the lowest Elasticsearch reports, else the lowest any
    /// stored configuration's image names.
    pub(crate) fn running_version(&self, now: Millis) -> Option<EsVersion> {
        if let Some(v) = self.fresh_cluster(now).and_then(|c| c.min_version()) {
            return Some(v);
        }
        self.config_table()?
            .groups
            .values()
            .flatten()
            .filter_map(|v| image_version(&v.config.image))
            .min()
    }

    /// Stores a new configuration (`tetherctl update`) under the next generation and starts (or
    /// extends) the rollout. Refuses an image older than the running version, and one whose tag has no
    /// readable version unless `allow_unknown_version`. Returns the new generation.
    pub fn handle_config_update(
        &mut self,
        update: ConfigUpdate,
        now: Millis,
    ) -> Result<u64, CoreError> {
        let groups = self.target_groups(update.group.as_deref())?;
        if !self.config.groups.is_empty()
            && update.es_settings.iter().any(|(k, _)| k == "node.roles")
        {
            return Err(CoreError::Refused(
                "with --group, node.roles comes from each group's roles=, not from a setting"
                    .into(),
            ));
        }
        if let Some(image) = &update.image {
            match image_version(image) {
                None if !update.allow_unknown_version => {
                    return Err(CoreError::Refused(format!(
                        "image {image}: its tag has no readable Elasticsearch version (x.y.z), so Tether \
                         cannot check it is no downgrade; pass --allow-unknown-version if it is right"
                    )));
                }
                None => {}
                Some(v) => {
                    if let Some(running) = self.running_version(now)
                        && v < running
                    {
                        return Err(CoreError::Refused(format!(
                            "image {image} is Elasticsearch {v}, older than the {running} the cluster \
                             runs: Elasticsearch cannot read data a newer version wrote, so versions \
                             never go down"
                        )));
                    }
                }
            }
        }
        let table = self.config_table().cloned().unwrap_or(ConfigTable {
            generation: 1,
            groups: BTreeMap::new(),
        });
        let mut changed = Vec::new();
        for name in &groups {
            let mut config = table.current(name).map_or_else(
                || NodeConfig::from_flags(&self.config, name),
                |v| v.config.clone(),
            );
            if let Some(image) = &update.image {
                config.image = image.clone();
            }
            set_entries(&mut config.es_settings, &update.es_settings);
            set_entries(&mut config.es_env, &update.es_env);
            unset_entries(
                &mut config.es_settings,
                &update.unset_es_settings,
                "setting",
                name,
            )?;
            unset_entries(
                &mut config.es_env,
                &update.unset_es_env,
                "environment variable",
                name,
            )?;
            if let Some(c) = update.cpus {
                config.cpus = c;
            }
            if let Some(m) = update.mem_mb {
                config.mem_mb = m;
            }
            if let Some(h) = update.heap_mb {
                config.heap_mb = h;
            }
            config.validate()?;
            if table.current(name).is_none_or(|v| v.config != config) {
                changed.push((name.clone(), config));
            }
        }
        if changed.is_empty() {
            return Err(CoreError::Refused(
                "nothing to change: the stored configuration already says that (`tetherctl restart` \
                 restarts the nodes on it)"
                    .into(),
            ));
        }
        self.store_generation(table, changed, now)
    }

    /// Rolls the current configuration again over `group` (`None`: every group): `tetherctl restart`.
    pub fn handle_restart(&mut self, group: Option<&str>, now: Millis) -> Result<u64, CoreError> {
        let groups = self.target_groups(group)?;
        let table = self.config_table().cloned().unwrap_or(ConfigTable {
            generation: 1,
            groups: BTreeMap::new(),
        });
        let changed = groups
            .into_iter()
            .map(|name| {
                let config = table.current(&name).map_or_else(
                    || NodeConfig::from_flags(&self.config, &name),
                    |v| v.config.clone(),
                );
                (name, config)
            })
            .collect();
        self.store_generation(table, changed, now)
    }

    fn store_generation(
        &mut self,
        mut table: ConfigTable,
        changed: Vec<(GroupName, NodeConfig)>,
        now: Millis,
    ) -> Result<u64, CoreError> {
        let generation = table.generation.saturating_add(1);
        table.generation = generation;
        for (name, config) in changed {
            table
                .groups
                .entry(name)
                .or_default()
                .push(Versioned { generation, config });
        }
        self.prune_configs(&mut table);
        self.write(StateWrite::NodeConfig(table));
        self.start_rollout(now);
        Ok(generation)
    }

    /// Drops configurations no slot runs any more (each group keeps its current one).
    pub(crate) fn prune_configs(&self, table: &mut ConfigTable) {
        let used: Vec<(GroupName, u64)> = self
            .persisted
            .slots
            .values()
            .filter(|r| r.task.is_some())
            .map(|r| (self.group_key(r.node_id), r.config_generation))
            .collect();
        // The rollout's current node may go either way: on to the configuration it is being restarted
        // on (an update during its step must not take that one away), or back (`rollback`).
        let rollout_node: Vec<(GroupName, u64)> = self
            .persisted
            .rollout
            .as_ref()
            .and_then(|r| r.current.as_ref())
            .map(|c| {
                let group = self.group_key(c.node_id);
                [(group.clone(), c.from_generation), (group, c.to_generation)]
            })
            .into_iter()
            .flatten()
            .collect();
        for (name, list) in &mut table.groups {
            let keep: Vec<u64> = used
                .iter()
                .chain(rollout_node.iter())
                .filter(|(g, _)| g == name)
                .filter_map(|(_, gen_)| {
                    list.iter()
                        .rev()
                        .find(|v| v.generation <= *gen_)
                        .map(|v| v.generation)
                })
                .collect();
            let last = list.last().map(|v| v.generation);
            list.retain(|v| Some(v.generation) == last || keep.contains(&v.generation));
        }
    }
}
