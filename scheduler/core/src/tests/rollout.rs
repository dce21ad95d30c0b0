//! The stored node configuration (`nodeconfig.rs`) and rolling changes (`rollout.rs`): every guard, the
//! steps in order, and a rollout that carries on after a restart, driven by what Elasticsearch says
//! with a virtual clock.

use crate::command::{AllocationEnable, Command, EsCall, MesosCommand, WatchEvent};
use crate::domain::{EsCluster, EsHealth, NodeShutdown, ShutdownKind, ShutdownStatus, TaskState};
use crate::error::CoreError;
use crate::ids::{Millis, NodeId};
use crate::nodeconfig::{ConfigUpdate, image_version};
use crate::rollout::{RolloutState, RolloutStep};
use crate::state::PersistedState;
use crate::testing::*;

const OLD: &str = "docker.elastic.co/elasticsearch/elasticsearch:8.13.4";
const NEW: &str = "docker.elastic.co/elasticsearch/elasticsearch:8.15.0";

/// [`running_cluster`] of `n` nodes (normal strategy, image [`OLD`]), rollout steps overdue after
/// 10 minutes.
pub(super) fn running(n: u64) -> Harness {
    let mut c = config(crate::Strategy::Normal);
    c.image = OLD.into();
    c.rollout_step_timeout_ms = 600_000;
    running_cluster(c, n)
}

/// A green cluster of `es-1..es-n` on `version`, master-eligible as `masters` says (all when empty).
pub(super) fn green(n: u64, version: &str, masters: &[u64]) -> EsCluster {
    let names: Vec<(String, bool)> = (1..=n)
        .map(|i| {
            (
                format!("es-{i}"),
                masters.is_empty() || masters.contains(&i),
            )
        })
        .collect();
    let nodes: Vec<(&str, bool)> = names.iter().map(|(n, m)| (n.as_str(), *m)).collect();
    es_cluster(&nodes, version, Vec::new())
}

pub(super) fn without(mut c: EsCluster, name: &str) -> EsCluster {
    if let crate::domain::EsView::Master { nodes, .. } = &mut c.view {
        nodes.remove(name);
    }
    c.nodes.remove(name);
    c
}

pub(super) fn restarted(mut c: EsCluster, es_id: &str) -> EsCluster {
    c.shutdowns.get_or_insert_default().insert(
        es_id.to_owned(),
        NodeShutdown {
            kind: ShutdownKind::Restart,
            status: ShutdownStatus::Complete,
        },
    );
    c
}

/// Delivers the same observation twice: a rollout gate trusts only an observation begun after its step
/// began, and the first after a change may have been under way already.
pub(super) fn observe(h: &mut Harness, c: EsCluster) -> Vec<Command> {
    let mut out = h.es_cluster(c.clone());
    out.extend(h.es_cluster(c));
    out
}

pub(super) fn kills(cmds: &[Command]) -> Vec<String> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Mesos(MesosCommand::Kill { task_id, .. }) => Some(task_id.to_string()),
            _ => None,
        })
        .collect()
}

pub(super) fn calls(cmds: &[Command]) -> Vec<EsCall> {
    es_calls(cmds).into_iter().map(|(_, c)| c).collect()
}

pub(super) fn answer_all(h: &mut Harness, cmds: &[Command]) -> Vec<Command> {
    let mut out = Vec::new();
    for (id, _) in es_calls(cmds) {
        out.extend(h.es_result(id, None));
    }
    out
}

pub(super) fn update_image(h: &mut Harness, image: &str) -> u64 {
    let g = h
        .core
        .handle_config_update(
            ConfigUpdate {
                image: Some(image.into()),
                ..ConfigUpdate::default()
            },
            h.now,
        )
        .expect("update");
    h.drain();
    g
}

pub(super) fn state(h: &Harness) -> RolloutState {
    h.core
        .persisted()
        .rollout
        .as_ref()
        .expect("a rollout")
        .state
}

pub(super) fn current(h: &Harness) -> Option<(NodeId, RolloutStep)> {
    h.core
        .persisted()
        .rollout
        .as_ref()
        .and_then(|r| r.current.as_ref())
        .map(|c| (c.node_id, c.step))
}

/// One node of a rollout driven through its steps (8.x, restart shutdown records) as Elasticsearch and
/// Mesos answer, one method a step; each returns what the step emitted, so a test asserts in between.
struct NodeSteps {
    n: u64,
    /// The cluster's size: what Elasticsearch lists between the steps.
    total: u64,
    version: &'static str,
}

impl NodeSteps {
    /// Node `n` of `total` on 8.13.4.
    fn new(n: u64, total: u64) -> NodeSteps {
        NodeSteps {
            n,
            total,
            version: "8.13.4",
        }
    }

    fn es_id(&self) -> String {
        format!("id-es-{}", self.n)
    }

    fn host(&self) -> String {
        format!("h{}", self.n)
    }

    /// The cluster green with every node, and the node's restart shutdown record complete.
    fn recorded(&self) -> EsCluster {
        restarted(green(self.total, self.version, &[]), &self.es_id())
    }

    /// Prepare: the cluster is green; every Elasticsearch call asked so far is answered.
    fn prepare(&self, h: &mut Harness) -> Vec<Command> {
        let mut out = observe(h, green(self.total, self.version, &[]));
        let log = h.log.clone();
        out.extend(answer_all(h, &log));
        out
    }

    /// Stop: Elasticsearch reports the shutdown record complete and the node's task then ends KILLED.
    fn stop(&self, h: &mut Harness) -> Stopped {
        let cmds = observe(h, self.recorded());
        let task = h.task_of(self.n).expect("task");
        let step = current(h);
        h.update(status(&task, &self.host(), TaskState::Killed, Some("k")));
        Stopped { cmds, task, step }
    }

    /// After `wait_ms`, the agent the node ran on offers and the relaunched task reports `state`.
    fn relaunch(
        &self,
        h: &mut Harness,
        wait_ms: u64,
        state: TaskState,
    ) -> crate::command::LaunchSpec {
        h.advance(wait_ms);
        let id = h.next_offer_id();
        let cmds = h.offers(vec![offer(&id, &self.host(), 4.0, 8192.0, 1000.0)]);
        let launch = accepts(&cmds).into_iter().next().expect("relaunch");
        h.update(status(&launch.task_id, &self.host(), state, Some("r")));
        launch
    }

    /// Rejoin: the new process reports the cluster's UUID, the elected master lists it and its calls
    /// (the clean-up) are answered; returns what the observation emitted.
    fn rejoin(&self, h: &mut Harness) -> Vec<Command> {
        h.es_root(self.n, "uuid-1");
        let cmds = observe(h, self.recorded());
        answer_all(h, &cmds);
        cmds
    }

    /// Green: the cluster is green again without the record.
    fn green(&self, h: &mut Harness) -> Vec<Command> {
        observe(h, green(self.total, self.version, &[]))
    }
}

/// What [`NodeSteps::stop`] saw.
struct Stopped {
    /// What the complete shutdown record's report emitted (the kill).
    cmds: Vec<Command>,
    /// The task that was killed.
    task: crate::ids::TaskId,
    /// The rollout's step before the task ended.
    step: Option<(NodeId, RolloutStep)>,
}

/// Kills, relaunches and rejoins node `n` of a cluster of `total` on `version` through every step,
/// asserting each; returns the relaunched task's image.
fn restart_node(h: &mut Harness, n: u64, total: u64, version: &'static str) -> String {
    restart_node_with(h, n, total, version, |_, _| {})
}

/// [`restart_node`], calling `on_launch` once the node is relaunched (before its task runs): where the
/// shell records the new certificate it signed.
pub(super) fn restart_node_with(
    h: &mut Harness,
    n: u64,
    total: u64,
    version: &'static str,
    mut on_launch: impl FnMut(&mut Harness, NodeId),
) -> String {
    let node = NodeSteps {
        version,
        ..NodeSteps::new(n, total)
    };
    let es_id = node.es_id();
    assert_eq!(current(h), Some((NodeId(n), RolloutStep::Prepare)));
    let cmds = node.prepare(h);
    assert!(
        kills(&cmds).is_empty(),
        "killed before Elasticsearch was told"
    );
    let put = es_calls(&h.log)
        .into_iter()
        .rev()
        .find(|(_, c)| matches!(c, EsCall::PutShutdown { node_id, .. } if *node_id == es_id));
    let (_, call) = put.expect("a restart shutdown record asked");
    assert!(matches!(
        call,
        EsCall::PutShutdown {
            kind: ShutdownKind::Restart,
            ..
        }
    ));
    let stopped = node.stop(h);
    assert_eq!(kills(&stopped.cmds), vec![stopped.task.to_string()]);
    assert_eq!(stopped.step, Some((NodeId(n), RolloutStep::Stop)));
    observe(h, without(node.recorded(), &format!("es-{n}")));
    let launch = node.relaunch(h, 60_000, TaskState::Staging);
    assert_eq!(launch.node_id, NodeId(n));
    on_launch(h, NodeId(n));
    h.update(status(
        &launch.task_id,
        &format!("h{n}"),
        TaskState::Running,
        Some("r"),
    ));
    assert_eq!(current(h), Some((NodeId(n), RolloutStep::Rejoin)));
    let cmds = node.rejoin(h);
    assert_eq!(
        calls(&cmds),
        vec![EsCall::DeleteShutdown { node_id: es_id }]
    );
    node.green(h);
    launch.image
}

#[test]
fn a_state_without_a_stored_configuration_is_seeded_from_the_flags_as_generation_1() {
    let state = sample_state();
    let json = serde_json::to_value(&state).expect("json");
    assert!(json.get("node_config").is_none() && json.get("rollout").is_none());
    // A slot record written before config_generation existed loads as generation 1.
    let mut slot = serde_json::to_value(&state.slots[&NodeId(1)]).expect("json");
    slot.as_object_mut()
        .expect("object")
        .remove("config_generation");
    let slot: crate::state::SlotRecord = serde_json::from_value(slot).expect("old slot");
    assert_eq!(slot.config_generation, 1);

    let h = Harness::restore(config(crate::Strategy::Normal), state);
    let table = h.core.persisted().node_config.clone().expect("seeded");
    assert_eq!(table.generation, 1);
    let current = table
        .current(&crate::ids::GroupName::default_group())
        .expect("default group");
    assert_eq!(current.config.image, h.core.config().image);
    assert_eq!(current.config.heap_mb, 512);
    assert_eq!(h.core.config_generation(), 1);
    check(&h);
}

#[test]
fn once_stored_the_configuration_wins_and_a_differing_flag_is_reported_with_its_update_line() {
    let mut h = running(1);
    let g = h
        .core
        .handle_config_update(
            ConfigUpdate {
                heap_mb: Some(1024),
                es_settings: vec![("indices.memory.index_buffer_size".into(), "20%".into())],
                ..ConfigUpdate::default()
            },
            h.now,
        )
        .expect("update");
    assert_eq!(g, 2);
    h.drain();
    // The flags still say heap 512: the stored 1024 wins, and the operator is told how to apply 512.
    h.restart();
    h.subscribe();
    let warnings: Vec<String> = h
        .log
        .iter()
        .filter_map(|c| match c {
            Command::Watch(WatchEvent::Warning { message }) => Some(message.clone()),
            _ => None,
        })
        .collect();
    assert!(
        warnings.iter().any(|w| w.contains(
            "tetherctl update --unset-es-setting indices.memory.index_buffer_size --heap 512`"
        ) && w.contains("generation 2")),
        "{warnings:?}"
    );
    assert_eq!(h.core.config_generation(), 2);
    // A node first launched now gets the stored configuration.
    h.core.handle_scale(2, h.now).expect("scale");
    h.drain();
    let id = h.next_offer_id();
    let cmds = h.offers(vec![offer(&id, "h2", 4.0, 8192.0, 1000.0)]);
    let launch = accepts(&cmds).into_iter().next().expect("launch");
    assert_eq!(launch.heap_mb, 1024);
    assert!(
        launch
            .env
            .contains(&("indices.memory.index_buffer_size".into(), "20%".into()))
    );
    assert_eq!(
        h.core.persisted().slots[&NodeId(2)].config_generation,
        2,
        "the slot remembers the generation it launched with"
    );
    check(&h);
}

#[test]
fn a_node_relaunched_after_a_crash_keeps_the_configuration_it_ran() {
    let mut h = running(2);
    observe(&mut h, green(2, "8.13.4", &[]));
    h.core
        .handle_rollout_pause(h.now)
        .expect_err("nothing to pause yet");
    update_image(&mut h, NEW);
    h.core.handle_rollout_pause(h.now).expect("pause");
    h.drain();
    // Node 2 (not the rollout's) crashes: it comes back on the image it ran, not on one the rollout
    // has not reached yet.
    let task = h.task_of(2).expect("task");
    h.update(status(&task, "h2", TaskState::Failed, Some("crash")));
    h.advance(60_000);
    let id = h.next_offer_id();
    let cmds = h.offers(vec![offer(&id, "h2", 4.0, 8192.0, 1000.0)]);
    let launch = accepts(&cmds).into_iter().next().expect("relaunch");
    assert_eq!(launch.image, OLD);
    check(&h);
}

#[test]
fn a_rollout_replaces_nodes_one_at_a_time_through_every_step_and_ends_done() {
    let mut h = running(3);
    observe(&mut h, green(3, "8.13.4", &[]));
    assert_eq!(update_image(&mut h, NEW), 2);
    assert_eq!(state(&h), RolloutState::Running);
    let view = h.core.rollout_view(h.now);
    assert_eq!(view.config_generation, 2);
    assert_eq!(view.current, Some(NodeId(1)));
    assert_eq!(view.pending, vec![NodeId(2), NodeId(3)]);
    for n in 1..=3 {
        let image = restart_node(&mut h, n, 3, "8.13.4");
        assert_eq!(image, NEW, "node {n} relaunched on the new image");
        assert_eq!(h.core.persisted().slots[&NodeId(n)].config_generation, 2);
        check(&h);
    }
    let view = h.core.rollout_view(h.now);
    assert_eq!(view.state, "done");
    assert_eq!(view.done, vec![NodeId(1), NodeId(2), NodeId(3)]);
    assert!(view.pending.is_empty() && view.current.is_none());
    // Exactly one kill per node, each only after the previous node was back and green.
    assert_eq!(kills(&h.log).len(), 3);
    check(&h);
}

#[test]
fn before_7_15_2_allocation_goes_to_primaries_with_a_flush_and_back_afterwards() {
    let mut h = running(2);
    observe(&mut h, green(2, "7.15.1", &[]));
    update_image(&mut h, "es:7.17.0");
    let cmds = observe(&mut h, green(2, "7.15.1", &[]));
    let _ = cmds;
    let sent = calls(&h.log);
    assert_eq!(
        sent,
        vec![
            EsCall::SetAllocationEnable(Some(AllocationEnable::Primaries)),
            EsCall::Flush
        ]
    );
    assert!(
        h.core
            .persisted()
            .rollout
            .as_ref()
            .expect("r")
            .current
            .as_ref()
            .expect("c")
            .allocation_set
    );
    let log = h.log.clone();
    let cmds = answer_all(&mut h, &log);
    let task = h.task_of(1).expect("task");
    assert_eq!(kills(&cmds), vec![task.to_string()]);
    h.update(status(&task, "h1", TaskState::Killed, Some("k")));
    NodeSteps::new(1, 2).relaunch(&mut h, 60_000, TaskState::Running);
    h.es_root(1, "uuid-1");
    let cmds = observe(&mut h, green(2, "7.15.1", &[]));
    assert_eq!(calls(&cmds), vec![EsCall::SetAllocationEnable(None)]);
    check(&h);
}

#[test]
fn never_a_node_while_red_or_yellow_on_one_version_or_a_node_missing() {
    let mut h = running(3);
    let mut red = green(3, "8.13.4", &[]);
    red.health = EsHealth::Red;
    observe(&mut h, red.clone());
    update_image(&mut h, NEW);
    assert_eq!(current(&h), None);
    assert!(
        h.core
            .rollout_view(h.now)
            .reason
            .expect("why")
            .contains("red")
    );
    assert!(calls(&h.log).is_empty() && kills(&h.log).is_empty());

    let mut yellow = green(3, "8.13.4", &[]);
    yellow.health = EsHealth::Yellow;
    observe(&mut h, yellow.clone());
    assert_eq!(current(&h), None, "yellow on one version waits for green");

    observe(&mut h, without(green(3, "8.13.4", &[]), "es-2"));
    assert_eq!(current(&h), None);
    assert!(
        h.core
            .rollout_view(h.now)
            .reason
            .expect("why")
            .contains("node 2 is not in the cluster")
    );

    // Yellow while versions are mixed, with nothing initializing or relocating, lets the next go.
    let mut mixed = yellow;
    if let Some(n) = mixed.nodes.get_mut("es-3") {
        n.version = crate::domain::EsVersion::parse("8.15.0");
    }
    observe(&mut h, mixed.clone());
    assert_eq!(current(&h), Some((NodeId(1), RolloutStep::Prepare)));
    check(&h);

    // While one node is restarting the cluster going red never starts a second.
    let mut h = running(3);
    observe(&mut h, green(3, "8.13.4", &[]));
    update_image(&mut h, NEW);
    restart_node_until_green_gate(&mut h);
    observe(&mut h, red);
    assert_eq!(current(&h), Some((NodeId(1), RolloutStep::Green)));
    assert_eq!(kills(&h.log).len(), 1);
}

/// Takes node 1 of a 3-node rollout to its final wait for green.
fn restart_node_until_green_gate(h: &mut Harness) {
    let node = NodeSteps::new(1, 3);
    node.prepare(h);
    node.stop(h);
    node.relaunch(h, 60_000, TaskState::Running);
    h.es_root(1, "uuid-1");
    let mut c = node.recorded();
    c.health = EsHealth::Yellow;
    c.shard_counts = Some(crate::domain::ShardCounts {
        active: 1,
        relocating: 0,
        initializing: 1,
        unassigned: 0,
    });
    let cmds = observe(h, c.clone());
    answer_all(h, &cmds);
    observe(h, c);
    assert_eq!(current(h), Some((NodeId(1), RolloutStep::Green)));
}

#[test]
fn masters_go_last_one_at_a_time() {
    let mut h = running(3);
    // Node 1 is master-eligible, 2 and 3 are not.
    observe(&mut h, green(3, "8.13.4", &[1]));
    update_image(&mut h, NEW);
    let view = h.core.rollout_view(h.now);
    assert_eq!(view.current, Some(NodeId(2)));
    assert_eq!(view.pending, vec![NodeId(3), NodeId(1)]);
    check(&h);
}

#[test]
fn never_the_last_started_copy_of_a_shard_and_unreplicated_holders_go_last() {
    let mut h = running(3);
    // logs has a replica that is not started: es-1 holds its last started copy. scratch has no
    // replicas: es-2 holds its only copy and goes last.
    let mut c = green(3, "8.13.4", &[]);
    c.shards = Some(vec![
        shard("logs", 0, true, Some("es-1")),
        shard("logs", 0, false, None),
        shard("scratch", 0, true, Some("es-2")),
    ]);
    c.health = EsHealth::Yellow;
    if let Some(n) = c.nodes.get_mut("es-3") {
        n.version = crate::domain::EsVersion::parse("8.15.0");
    }
    observe(&mut h, c.clone());
    update_image(&mut h, NEW);
    let view = h.core.rollout_view(h.now);
    assert_eq!(view.pending, vec![NodeId(1), NodeId(3), NodeId(2)]);
    assert_eq!(view.current, None);
    assert!(
        view.reason
            .expect("why")
            .contains("last started copy of a shard of logs")
    );

    // Once the replica started, node 1 goes; node 2, the only holder of scratch, is last and the
    // status says why.
    let mut c2 = green(3, "8.13.4", &[]);
    c2.shards = Some(vec![
        shard("logs", 0, true, Some("es-1")),
        shard("logs", 0, false, Some("es-3")),
        shard("scratch", 0, true, Some("es-2")),
    ]);
    observe(&mut h, c2.clone());
    assert_eq!(current(&h), Some((NodeId(1), RolloutStep::Prepare)));
    let mut h2 = running(1);
    let mut c3 = green(1, "8.13.4", &[]);
    c3.shards = Some(vec![shard("scratch", 0, true, Some("es-1"))]);
    observe(&mut h2, c3);
    update_image(&mut h2, NEW);
    assert_eq!(current(&h2), Some((NodeId(1), RolloutStep::Prepare)));
    assert!(
        h2.core
            .rollout_view(h2.now)
            .reason
            .expect("why")
            .contains("only copy of index(es) scratch (no replicas)")
    );
}

#[test]
fn a_group_of_several_nodes_is_never_emptied() {
    let mut h = running(2);
    // Elasticsearch lists only node 1 (the other member of its group is not in the cluster).
    observe(&mut h, without(green(2, "8.13.4", &[]), "es-2"));
    update_image(&mut h, NEW);
    assert_eq!(current(&h), None);
    assert!(
        h.core
            .rollout_view(h.now)
            .reason
            .expect("why")
            .contains("a group is never emptied")
    );
}

#[test]
fn an_overdue_step_pauses_the_rollout_with_the_reason_and_nothing_is_forced() {
    let mut h = running(2);
    let mut red = green(2, "8.13.4", &[]);
    red.health = EsHealth::Red;
    observe(&mut h, red.clone());
    update_image(&mut h, NEW);
    h.advance(599_000);
    observe(&mut h, red.clone());
    assert_eq!(state(&h), RolloutState::Running);
    h.advance(1_000);
    assert_eq!(state(&h), RolloutState::Paused);
    let reason = h.core.rollout_view(h.now).reason.expect("reason");
    assert!(
        reason.contains("600 s") && reason.contains("red"),
        "{reason}"
    );
    // Green again: a paused rollout stays paused until resumed.
    observe(&mut h, green(2, "8.13.4", &[]));
    assert_eq!(current(&h), None);
    assert!(kills(&h.log).is_empty());
    h.core.handle_rollout_resume(h.now).expect("resume");
    h.drain();
    assert_eq!(state(&h), RolloutState::Running);
    assert_eq!(current(&h), Some((NodeId(1), RolloutStep::Prepare)));
    check(&h);
}

/// Two nodes rolling to [`NEW`], at node 1's Prepare with its one call sent and not answered.
fn at_the_first_call() -> (Harness, Vec<(u64, EsCall)>) {
    let mut h = running(2);
    observe(&mut h, green(2, "8.13.4", &[]));
    update_image(&mut h, NEW);
    observe(&mut h, green(2, "8.13.4", &[]));
    let put: Vec<(u64, EsCall)> = es_calls(&h.log);
    assert_eq!(put.len(), 1);
    (h, put)
}

#[test]
fn a_new_leader_resumes_the_rollout_at_the_same_step() {
    let (mut h, put) = at_the_first_call();
    // kill -9 before the answer: the new core is built from the durable state, mid-Prepare.
    h.restart();
    h.subscribe();
    assert_eq!(current(&h), Some((NodeId(1), RolloutStep::Prepare)));
    let cmds = observe(&mut h, green(2, "8.13.4", &[]));
    assert_eq!(
        calls(&cmds),
        vec![put[0].1.clone()],
        "the idempotent call is sent again"
    );
    answer_all(&mut h, &cmds);
    let cmds = observe(&mut h, restarted(green(2, "8.13.4", &[]), "id-es-1"));
    let task = h.task_of(1).expect("task");
    assert_eq!(kills(&cmds), vec![task.to_string()]);
    // And again mid-Stop: the kill is sent again, the step is not repeated from the start.
    h.restart();
    h.subscribe();
    assert_eq!(current(&h), Some((NodeId(1), RolloutStep::Stop)));
    let cmds = observe(&mut h, restarted(green(2, "8.13.4", &[]), "id-es-1"));
    assert!(calls(&cmds).is_empty());
    assert_eq!(kills(&cmds), vec![task.to_string()]);
    h.update(status(&task, "h1", TaskState::Killed, Some("k")));
    let launch = NodeSteps::new(1, 2).relaunch(&mut h, 60_000, TaskState::Running);
    assert_eq!(launch.image, NEW);
    h.es_root(1, "uuid-1");
    h.restart();
    h.subscribe();
    let node = NodeSteps::new(1, 2);
    let cmds = node.rejoin(&mut h);
    assert_eq!(
        calls(&cmds),
        vec![EsCall::DeleteShutdown {
            node_id: "id-es-1".into()
        }]
    );
    node.green(&mut h);
    assert_eq!(current(&h), Some((NodeId(2), RolloutStep::Prepare)));
    assert_eq!(h.core.rollout_view(h.now).done, vec![NodeId(1)]);
    check(&h);
}

#[test]
fn a_refused_call_is_sent_again_after_a_pause_not_at_once() {
    let (mut h, put) = at_the_first_call();
    let cmds = h.es_result(put[0].0, Some("HTTP 503: no master"));
    assert!(calls(&cmds).is_empty(), "no hot loop on a failing cluster");
    assert!(calls(&observe(&mut h, green(2, "8.13.4", &[]))).is_empty());
    let cmds = h.advance(5_000);
    assert_eq!(calls(&cmds), vec![put[0].1.clone()]);
    assert_eq!(current(&h), Some((NodeId(1), RolloutStep::Prepare)));
    check(&h);
}

#[test]
fn abort_stops_after_the_current_node_and_nodes_done_stay_new() {
    let mut h = running(3);
    observe(&mut h, green(3, "8.13.4", &[]));
    update_image(&mut h, NEW);
    h.core.handle_rollout_abort(h.now).expect("abort");
    h.drain();
    assert_eq!(
        state(&h),
        RolloutState::Running,
        "the current node finishes first"
    );
    restart_node(&mut h, 1, 3, "8.13.4");
    assert_eq!(state(&h), RolloutState::Aborted);
    let view = h.core.rollout_view(h.now);
    assert_eq!(view.done, vec![NodeId(1)]);
    assert_eq!(view.pending, vec![NodeId(2), NodeId(3)]);
    assert_eq!(h.core.persisted().slots[&NodeId(1)].config_generation, 2);
    assert_eq!(h.core.persisted().slots[&NodeId(2)].config_generation, 1);
    assert!(h.core.handle_rollout_resume(h.now).is_err());
    check(&h);
}

#[test]
fn rollback_returns_a_node_that_never_joined_and_is_refused_once_it_joined() {
    let (mut h, image) = first_node_fails();
    assert_eq!(image, NEW);

    let back = h.core.handle_rollout_rollback(h.now).expect("rollback");
    h.drain();
    assert_eq!(back, NodeId(1));
    assert_eq!(state(&h), RolloutState::Paused);
    let node = NodeSteps::new(1, 2);
    let launch = node.relaunch(&mut h, 120_000, TaskState::Running);
    assert_eq!(launch.image, OLD, "relaunched on the old image");
    node.rejoin(&mut h);
    node.green(&mut h);
    assert_eq!(current(&h), None);
    assert_eq!(state(&h), RolloutState::Paused);
    let view = h.core.rollout_view(h.now);
    assert!(view.done.is_empty());
    assert!(view.reason.expect("why").contains("rolled back"));
    h.core.handle_rollout_abort(h.now).expect("abort");
    h.drain();
    assert_eq!(state(&h), RolloutState::Aborted);
    assert_eq!(h.core.persisted().slots[&NodeId(1)].config_generation, 1);

    // A node that joined on the new configuration is not rolled back.
    let mut h = running(3);
    observe(&mut h, green(3, "8.13.4", &[]));
    update_image(&mut h, NEW);
    restart_node_until_green_gate(&mut h);
    let err = h.core.handle_rollout_rollback(h.now).expect_err("joined");
    assert!(matches!(err, CoreError::Refused(m) if m.contains("already joined")));
    check(&h);
}

#[test]
fn versions_never_go_down_and_an_unreadable_tag_needs_allow_unknown_version() {
    assert_eq!(
        image_version(OLD),
        crate::domain::EsVersion::parse("8.13.4")
    );
    assert_eq!(
        image_version("localhost:5000/es:8.1.0"),
        crate::domain::EsVersion::parse("8.1.0")
    );
    assert_eq!(image_version("localhost:5000/es"), None);
    assert_eq!(image_version("es:latest"), None);
    let mut h = running(1);
    // What Elasticsearch reports wins over the stored image.
    observe(&mut h, green(1, "8.14.0", &[]));
    let update = |image: &str, allow: bool| ConfigUpdate {
        image: Some(image.into()),
        allow_unknown_version: allow,
        ..ConfigUpdate::default()
    };
    let err = h
        .core
        .handle_config_update(update(OLD, false), h.now)
        .expect_err("downgrade");
    assert!(matches!(err, CoreError::Refused(m) if m.contains("older than the 8.14.0")));
    let err = h
        .core
        .handle_config_update(update("es:latest", false), h.now)
        .expect_err("unknown");
    assert!(matches!(err, CoreError::Refused(m) if m.contains("--allow-unknown-version")));
    assert_eq!(h.core.config_generation(), 1);
    h.core
        .handle_config_update(update("es:latest", true), h.now)
        .expect("allowed");
    h.drain();
    // Without an answer from Elasticsearch the stored images are the running version.
    let mut h = running(1);
    let err = h
        .core
        .handle_config_update(update("es:8.0.0", false), Millis(h.now.0 + 1))
        .expect_err("older than the stored image");
    assert!(matches!(err, CoreError::Refused(m) if m.contains("8.13.4")));
    h.drain();
    check(&h);
}

#[test]
fn restart_rolls_the_same_configuration_and_the_current_node_cannot_be_removed() {
    let mut h = running(3);
    observe(&mut h, green(3, "8.13.4", &[]));
    let g = h.core.handle_restart(None, h.now).expect("restart");
    h.drain();
    assert_eq!(g, 2);
    assert_eq!(current(&h), Some((NodeId(1), RolloutStep::Prepare)));
    let err = h
        .core
        .handle_replace_with(NodeId(1), false, false, h.now)
        .expect_err("rolling");
    assert!(matches!(err, CoreError::Refused(m) if m.contains("being restarted by the rollout")));
    let image = restart_node(&mut h, 1, 3, "8.13.4");
    assert_eq!(image, OLD, "restart keeps the configuration");
    assert!(h.core.handle_restart(Some("nope"), h.now).is_err());
    check(&h);
}

#[test]
fn the_stored_state_round_trips_with_a_rollout_in_progress() {
    let mut h = running(2);
    observe(&mut h, green(2, "8.13.4", &[]));
    update_image(&mut h, NEW);
    let json = serde_json::to_string(h.core.persisted()).expect("json");
    let back: PersistedState = serde_json::from_str(&json).expect("back");
    assert_eq!(&back, h.core.persisted());
    let mut rebuilt = PersistedState::default();
    for w in back.writes() {
        rebuilt.apply(&w);
    }
    assert_eq!(rebuilt, back);
}

/// [`first_node_stopped`], and past the failure backoff but within the preference for the agent it ran
/// on, another agent (h3) offers: not taken. Returns what that offer emitted.
fn another_agent_offers_while_node_1_waits() -> (Harness, Vec<Command>) {
    let (mut h, _) = first_node_stopped();
    h.advance(10_000);
    let id = h.next_offer_id();
    let cmds = h.offers(vec![offer(&id, "h3", 4.0, 8192.0, 1000.0)]);
    assert!(accepts(&cmds).is_empty(), "placed away from h1 at once");
    (h, cmds)
}

#[test]
fn a_restarted_node_waits_a_while_for_the_agent_it_ran_on_then_takes_any() {
    let (mut h, _) = another_agent_offers_while_node_1_waits();
    // Past it, any agent will do.
    h.advance(crate::rollout::PREFER_HOST_MS);
    let id = h.next_offer_id();
    let cmds = h.offers(vec![offer(&id, "h3", 4.0, 8192.0, 1000.0)]);
    let launch = accepts(&cmds).into_iter().next().expect("placed on h3");
    assert_eq!((launch.node_id, launch.image.as_str()), (NodeId(1), NEW));
    check(&h);
}

#[test]
fn a_restarted_node_waiting_for_its_agent_says_so_not_that_its_volume_is_held_elsewhere() {
    let (h, cmds) = another_agent_offers_while_node_1_waits();
    let waiting: Vec<&crate::command::Reason> = cmds
        .iter()
        .filter_map(|c| match c {
            Command::Watch(WatchEvent::NodeWaiting { node_id, reason })
                if *node_id == NodeId(1) =>
            {
                Some(reason)
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        waiting,
        vec![&crate::command::Reason::WaitingForPreviousAgent { host: host("h1") }]
    );
    assert_eq!(
        waiting[0].kind().names(),
        ("waiting for previous agent", "waiting_for_previous_agent")
    );
    let shown = h
        .core
        .nodes(h.now)
        .into_iter()
        .find(|n| n.node_id == NodeId(1))
        .and_then(|n| n.last_reason)
        .expect("a reason");
    assert_eq!(
        shown,
        format!(
            "restarted by the rollout: waits up to {} s for an offer from agent h1, where it ran",
            crate::rollout::PREFER_HOST_MS / 1000
        )
    );
    check(&h);
}

/// A 2-node rollout to [`NEW`] whose first node was told and stopped (its task ended KILLED).
fn first_node_stopped() -> (Harness, NodeSteps) {
    let mut h = running(2);
    observe(&mut h, green(2, "8.13.4", &[]));
    update_image(&mut h, NEW);
    let node = NodeSteps::new(1, 2);
    node.prepare(&mut h);
    node.stop(&mut h);
    (h, node)
}

/// A 2-node rollout whose first node's new image fails: node 1 stays in Rejoin. Returns the image of
/// the failed relaunch.
fn first_node_fails() -> (Harness, String) {
    let (mut h, node) = first_node_stopped();
    let launch = node.relaunch(&mut h, 60_000, TaskState::Failed);
    observe(&mut h, without(node.recorded(), "es-1"));
    assert_eq!(current(&h), Some((NodeId(1), RolloutStep::Rejoin)));
    (h, launch.image)
}

#[test]
fn abort_right_after_a_rollback_ends_aborted_once_the_node_is_back() {
    let (mut h, _) = first_node_fails();
    h.core.handle_rollout_rollback(h.now).expect("rollback");
    h.core.handle_rollout_abort(h.now).expect("abort");
    h.drain();
    assert_eq!(
        state(&h),
        RolloutState::Running,
        "the node comes back first"
    );
    let node = NodeSteps::new(1, 2);
    let launch = node.relaunch(&mut h, 120_000, TaskState::Running);
    assert_eq!(launch.image, OLD, "relaunched on the old image");
    node.rejoin(&mut h);
    node.green(&mut h);
    assert_eq!(state(&h), RolloutState::Aborted);
    let view = h.core.rollout_view(h.now);
    assert!(view.done.is_empty());
    assert_eq!(view.pending, vec![NodeId(1), NodeId(2)]);
    check(&h);
}

#[test]
fn a_gate_trusts_only_what_the_cluster_said_after_the_step_began() {
    let (mut h, node) = first_node_stopped();
    node.relaunch(&mut h, 60_000, TaskState::Running);
    // The master still lists the stopped node (it has not noticed yet): not a rejoin, since the new
    // process has not reported the cluster's UUID.
    observe(&mut h, restarted(green(2, "8.13.4", &[]), "id-es-1"));
    assert_eq!(current(&h), Some((NodeId(1), RolloutStep::Rejoin)));
    h.es_root(1, "uuid-1");
    let cmds = observe(&mut h, restarted(green(2, "8.13.4", &[]), "id-es-1"));
    answer_all(&mut h, &cmds);
    assert_eq!(current(&h), Some((NodeId(1), RolloutStep::Green)));
    // One green answer right after the clean-up may have been asked before it: not enough.
    h.es_cluster(green(2, "8.13.4", &[]));
    assert_eq!(current(&h), Some((NodeId(1), RolloutStep::Green)));
    h.es_cluster(green(2, "8.13.4", &[]));
    assert_eq!(current(&h), Some((NodeId(2), RolloutStep::Prepare)));
    check(&h);
}

#[test]
fn the_rollouts_own_stop_is_no_failure_and_a_rollback_relaunches_at_once() {
    let (mut h, node) = first_node_stopped();
    assert_eq!(h.backoff_left(1), 0, "Tether stopped it: no crash to damp");
    let mut expected = h.core.config().backoff_initial_ms;
    for round in 0..3 {
        // At once the first time; then once the previous backoff passed.
        let wait = if round == 0 { 0 } else { expected / 2 };
        // The new image cannot start: RUNNING, then FAILED at once, each time backing off longer.
        let launch = node.relaunch(&mut h, wait, TaskState::Running);
        assert_eq!(launch.image, NEW);
        h.update(status(&launch.task_id, "h1", TaskState::Failed, Some("f")));
        assert_eq!(h.backoff_left(1), expected);
        expected *= 2;
    }
    h.core.handle_rollout_rollback(h.now).expect("rollback");
    h.drain();
    assert_eq!(
        h.backoff_left(1),
        0,
        "its old configuration gets a prompt try"
    );
    let id = h.next_offer_id();
    let cmds = h.offers(vec![offer(&id, "h1", 4.0, 8192.0, 1000.0)]);
    let launch = accepts(&cmds)
        .into_iter()
        .next()
        .expect("relaunched at once");
    assert_eq!(launch.image, OLD);
    check(&h);
}

#[test]
fn update_sets_and_removes_settings_and_environment_and_refuses_removing_what_is_not_stored() {
    let mut h = running(1);
    observe(&mut h, green(1, "8.13.4", &[]));
    let setting = (
        "indices.memory.index_buffer_size".to_owned(),
        "20%".to_owned(),
    );
    let env = ("TZ".to_owned(), "UTC".to_owned());
    let g = h
        .core
        .handle_config_update(
            ConfigUpdate {
                es_settings: vec![setting.clone()],
                es_env: vec![env.clone()],
                ..ConfigUpdate::default()
            },
            h.now,
        )
        .expect("update");
    assert_eq!(g, 2);
    h.drain();
    let stored = h.core.config_table().expect("stored").clone();
    let current = &stored
        .current(&crate::ids::GroupName::default_group())
        .expect("group")
        .config;
    assert!(current.es_settings.contains(&setting) && current.es_env.contains(&env));
    let g = h
        .core
        .handle_config_update(
            ConfigUpdate {
                unset_es_settings: vec![setting.0.clone()],
                unset_es_env: vec![env.0.clone()],
                ..ConfigUpdate::default()
            },
            h.now,
        )
        .expect("removal");
    assert_eq!(g, 3);
    h.drain();
    assert_eq!(
        current_node_target(&h),
        Some(2),
        "node 1 was already being restarted on 2"
    );
    let kept = h.core.config_table().expect("stored").clone();
    assert_eq!(
        kept.at(&crate::ids::GroupName::default_group(), 2)
            .map(|v| v.generation),
        Some(2),
        "the configuration the rollout's node is restarted on is kept while it is"
    );
    let table = h.core.config_table().expect("stored");
    let after = &table
        .current(&crate::ids::GroupName::default_group())
        .expect("group")
        .config;
    assert!(!after.es_settings.contains(&setting) && !after.es_env.contains(&env));
    assert_eq!(
        current.update_args(after),
        vec![
            format!("--unset-es-setting {}", setting.0),
            format!("--unset-es-env {}", env.0)
        ],
        "the start-up warning names the removals too"
    );
    let err = h
        .core
        .handle_config_update(
            ConfigUpdate {
                unset_es_env: vec!["NOT_THERE".into()],
                ..ConfigUpdate::default()
            },
            h.now,
        )
        .expect_err("nothing to remove");
    assert!(
        matches!(&err, CoreError::Refused(m) if m.contains("no stored environment variable NOT_THERE")),
        "{err}"
    );
    // What Tether sets itself cannot come in through the environment either, in any of its forms.
    for name in [
        "ES_JAVA_OPTS",
        "node.name",
        "ES_SETTING_PATH_DATA",
        "ELASTIC_PASSWORD_FILE",
    ] {
        let err = h
            .core
            .handle_config_update(
                ConfigUpdate {
                    es_env: vec![(name.into(), "x".into())],
                    ..ConfigUpdate::default()
                },
                h.now,
            )
            .expect_err(name);
        assert!(
            matches!(&err, CoreError::Refused(m) if m.contains(name)),
            "{err}"
        );
    }
    assert_eq!(
        h.core.config_generation(),
        3,
        "a refused update stores nothing"
    );
    check(&h);
}

/// The configuration generation the rollout's current node is being restarted on.
fn current_node_target(h: &Harness) -> Option<u64> {
    h.core
        .persisted()
        .rollout
        .as_ref()
        .and_then(|r| r.current.as_ref())
        .map(|c| c.to_generation)
}
