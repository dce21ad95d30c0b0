//! Safe removal (`removal.rs`): every guard of scale-down and replace, driven by what Elasticsearch
//! says (observations and call results) with a virtual clock.

use crate::command::{Command, EsCall, MesosCommand, WatchEvent};
use crate::domain::{NodeShutdown, ShutdownKind, ShutdownStatus, TaskState};
use crate::error::CoreError;
use crate::ids::NodeId;
use crate::state::{RemovalKind, RemovalStep};
use crate::testing::*;

/// [`running_cluster`] of `n` nodes (normal strategy), removal steps overdue after a minute.
fn running(n: u64) -> Harness {
    let mut c = config(crate::Strategy::Normal);
    c.removal_step_timeout_ms = 60_000;
    running_cluster(c, n)
}

fn names(n: u64) -> Vec<String> {
    (1..=n).map(|i| format!("es-{i}")).collect()
}

/// A green 8.x cluster of nodes `es-1..es-n` (all master-eligible), each holding the given shards.
fn cluster_of(n: u64, shards: Vec<crate::domain::EsShard>) -> crate::domain::EsCluster {
    let names = names(n);
    let nodes: Vec<(&str, bool)> = names.iter().map(|s| (s.as_str(), true)).collect();
    es_cluster(&nodes, "8.15.0", shards)
}

fn kills(cmds: &[Command]) -> Vec<String> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Mesos(MesosCommand::Kill { task_id, .. }) => Some(task_id.to_string()),
            _ => None,
        })
        .collect()
}

fn step(h: &Harness, node: u64) -> Option<RemovalStep> {
    h.core.persisted().slots[&NodeId(node)]
        .removal
        .as_ref()
        .map(|r| r.step)
}

fn only_call(cmds: &[Command]) -> (u64, EsCall) {
    let calls = es_calls(cmds);
    assert_eq!(calls.len(), 1, "{calls:?}");
    calls.into_iter().next().expect("one call")
}

fn complete(c: &mut crate::domain::EsCluster, es_id: &str) {
    c.shutdowns.get_or_insert_default().insert(
        es_id.to_owned(),
        NodeShutdown {
            kind: ShutdownKind::Remove,
            status: ShutdownStatus::Complete,
        },
    );
}

#[test]
fn scale_down_moves_data_then_excludes_the_master_then_stops_then_clears() {
    let mut h = running(3);
    let shards = vec![
        shard("logs", 0, true, Some("es-1")),
        shard("logs", 0, false, Some("es-3")),
    ];
    h.es_cluster(cluster_of(3, shards));

    let plan = h.core.handle_scale_with(2, false, h.now).expect("scale");
    let cmds = h.drain();
    assert_eq!(plan.stop, vec![NodeId(3)]);
    assert!(kills(&cmds).is_empty(), "killed before its data moved");
    let (id, call) = only_call(&cmds);
    assert_eq!(
        call,
        EsCall::PutShutdown {
            node_id: "id-es-3".into(),
            kind: ShutdownKind::Remove,
            reason: "tether: scale-down of node 3".into(),
            target_node_name: None,
        }
    );
    assert_eq!(step(&h, 3), Some(RemovalStep::MoveData));
    h.es_result(id, None);

    // Still holding a copy: it waits, whatever the record says.
    let mut c = cluster_of(3, vec![shard("logs", 0, false, Some("es-3"))]);
    complete(&mut c, "id-es-3");
    assert!(es_calls(&h.es_cluster(c)).is_empty());
    assert_eq!(step(&h, 3), Some(RemovalStep::MoveData));
    let view = h.core.nodes(h.now);
    assert_eq!(view[2].shards, Some(1));
    assert!(view[2].es_joined);

    // Moved, but the record is not COMPLETE yet.
    let mut c = cluster_of(3, vec![shard("logs", 0, false, Some("es-2"))]);
    c.shutdowns.get_or_insert_default().insert(
        "id-es-3".into(),
        NodeShutdown {
            kind: ShutdownKind::Remove,
            status: ShutdownStatus::InProgress,
        },
    );
    h.es_cluster(c.clone());
    assert_eq!(step(&h, 3), Some(RemovalStep::MoveData));

    // Empty and COMPLETE: a master-eligible node leaves the voting configuration first.
    complete(&mut c, "id-es-3");
    let cmds = h.es_cluster(c.clone());
    let (id, call) = only_call(&cmds);
    assert_eq!(
        call,
        EsCall::AddVotingExclusions {
            node_names: vec!["es-3".into()]
        }
    );
    assert!(kills(&cmds).is_empty(), "stopped before the exclusion");
    let cmds = h.es_result(id, None);
    assert!(
        kills(&cmds).is_empty(),
        "the observation does not list it yet"
    );
    c.voting_exclusions
        .get_or_insert_default()
        .insert("es-3".into());
    let cmds = h.es_cluster(c.clone());
    assert_eq!(kills(&cmds), vec!["es-3.1".to_owned()]);
    assert_eq!(step(&h, 3), Some(RemovalStep::Stop));

    // Killed; cleared only once the master no longer lists it.
    let task = h.task_of(3).expect("task");
    h.update(status(&task, "h3", TaskState::Killed, Some("k")));
    assert_eq!(step(&h, 3), Some(RemovalStep::Clear));
    assert!(es_calls(&h.es_cluster(c)).is_empty());
    let cmds = h.es_cluster(cluster_of(2, vec![shard("logs", 0, true, Some("es-1"))]));
    let calls: Vec<EsCall> = es_calls(&cmds).into_iter().map(|(_, c)| c).collect();
    assert_eq!(
        calls,
        vec![
            EsCall::DeleteShutdown {
                node_id: "id-es-3".into()
            },
            EsCall::ClearVotingExclusions,
        ]
    );
    for (id, _) in es_calls(&cmds) {
        h.es_result(id, None);
    }
    assert_eq!(step(&h, 3), None);
    assert!(h.core.persisted().slots[&NodeId(3)].removed);
    check(&h);
}

#[test]
fn before_7_15_2_the_allocation_exclude_is_used_and_nothing_may_be_unassigned_or_moving() {
    let mut h = running(3);
    let nodes = [("es-1", false), ("es-2", false), ("es-3", false)];
    h.es_cluster(es_cluster(
        &nodes,
        "7.15.1",
        vec![
            shard("a", 0, true, Some("es-3")),
            shard("b", 0, true, Some("es-2")),
        ],
    ));
    h.core.handle_scale_with(1, true, h.now).expect("scale");
    let cmds = h.drain();
    // Both nodes' data moves at once; the list is one setting, so each call carries all of it.
    let calls: Vec<EsCall> = es_calls(&cmds).into_iter().map(|(_, c)| c).collect();
    assert_eq!(
        calls,
        vec![
            EsCall::SetAllocationExclude {
                names: vec!["es-3".into()]
            },
            EsCall::SetAllocationExclude {
                names: vec!["es-2".into(), "es-3".into()]
            },
        ]
    );
    for (id, _) in es_calls(&cmds) {
        h.es_result(id, None);
    }
    let mut c = es_cluster(
        &nodes,
        "7.15.1",
        vec![
            shard("a", 0, true, Some("es-1")),
            shard("b", 0, true, Some("es-1")),
        ],
    );
    c.shard_counts.as_mut().expect("counts").relocating = 1;
    assert!(kills(&h.es_cluster(c.clone())).is_empty());
    c.shard_counts.as_mut().expect("counts").relocating = 0;
    // Not master-eligible: no voting exclusion; and one node stops at a time, the highest first.
    let cmds = h.es_cluster(c.clone());
    assert_eq!(kills(&cmds), vec!["es-3.1".to_owned()]);
    assert_eq!(step(&h, 2), Some(RemovalStep::Stop));
    let task = h.task_of(3).expect("task");
    let cmds = h.update(status(&task, "h3", TaskState::Killed, Some("k")));
    assert_eq!(kills(&cmds), vec!["es-2.1".to_owned()]);
    // Node 3's clean-up keeps node 2 in the list.
    let c = es_cluster(
        &nodes[..2],
        "7.15.1",
        vec![shard("a", 0, true, Some("es-1"))],
    );
    let (_, call) = only_call(&h.es_cluster(c));
    assert_eq!(
        call,
        EsCall::SetAllocationExclude {
            names: vec!["es-2".into()]
        }
    );
    check(&h);
}

#[test]
fn removing_the_last_copy_of_a_shard_is_refused_naming_the_index_unless_allowed() {
    let mut h = running(3);
    let shards = vec![
        shard("no-replicas", 0, true, Some("es-3")),
        shard("replicated", 0, true, Some("es-3")),
        shard("replicated", 0, false, Some("es-1")),
    ];
    h.es_cluster(cluster_of(3, shards));
    let before = h.core.persisted().clone();
    match h.core.handle_scale_with(2, false, h.now) {
        Err(CoreError::Refused(m)) => {
            assert!(
                m.contains("no-replicas") && !m.contains("replicated,"),
                "{m}"
            );
            assert!(m.contains("--allow-data-loss"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    h.drain();
    assert_eq!(
        h.core.persisted(),
        &before,
        "a refused scale changed nothing"
    );
    match h.core.handle_replace_with(NodeId(3), false, false, h.now) {
        Err(CoreError::Refused(m)) => assert!(m.contains("no-replicas"), "{m}"),
        other => panic!("{other:?}"),
    }
    // Two copies, both leaving: the data move relocates them, one serving copy at least throughout.
    assert!(
        h.core
            .check_removal(&[NodeId(1), NodeId(3)], 1, false, h.now)
            .is_err(),
        "node 3 still holds no-replicas' only copy"
    );
    let mut both = running(3);
    both.es_cluster(cluster_of(
        3,
        vec![
            shard("pair", 0, true, Some("es-2")),
            shard("pair", 0, false, Some("es-3")),
        ],
    ));
    assert!(both.core.handle_scale_with(1, false, both.now).is_ok());
    both.drain();
    check(&both);
    // `replace --force` keeps its meaning: no guard, the operator asserts the task is dead.
    assert!(
        h.core
            .handle_replace_with(NodeId(3), true, false, h.now)
            .is_ok()
    );
    h.drain();
    let mut h = running(3);
    h.es_cluster(cluster_of(
        3,
        vec![shard("no-replicas", 0, true, Some("es-3"))],
    ));
    h.core.handle_scale_with(2, true, h.now).expect("allowed");
    let cmds = h.drain();
    assert!(kills(&cmds).is_empty(), "its data is still moved first");
    assert_eq!(step(&h, 3), Some(RemovalStep::MoveData));
    check(&h);
}

#[test]
fn the_last_master_eligible_node_is_never_removed() {
    let mut h = running(2);
    let nodes = [("es-1", false), ("es-2", true)];
    h.es_cluster(es_cluster(&nodes, "8.15.0", Vec::new()));
    match h.core.handle_scale_with(1, true, h.now) {
        Err(CoreError::Refused(m)) => assert!(m.contains("last master-eligible"), "{m}"),
        other => panic!("{other:?}"),
    }
    h.drain();
    // The guard also holds at the step itself (the roles seen changed since the request).
    let mut h = running(2);
    h.es_cluster(cluster_of(2, Vec::new()));
    h.core.handle_scale_with(1, false, h.now).expect("scale");
    let (id, _) = only_call(&h.drain());
    h.es_result(id, None);
    let mut c = es_cluster(&nodes, "8.15.0", Vec::new());
    complete(&mut c, "id-es-2");
    let cmds = h.es_cluster(c);
    assert!(es_calls(&cmds).is_empty() && kills(&cmds).is_empty());
    assert_eq!(step(&h, 2), Some(RemovalStep::ExcludeVoting));
    let view = h.core.nodes(h.now);
    let waiting = &view[1].removal.as_ref().expect("removal").waiting;
    assert!(waiting.contains("last master-eligible"), "{waiting}");
    check(&h);
}

#[test]
fn masters_leave_one_at_a_time() {
    let mut h = running(3);
    h.es_cluster(cluster_of(3, Vec::new()));
    h.core.handle_scale_with(1, false, h.now).expect("scale");
    let cmds = h.drain();
    assert_eq!(es_calls(&cmds).len(), 2, "both nodes' data moves at once");
    for (id, _) in es_calls(&cmds) {
        h.es_result(id, None);
    }
    let mut c = cluster_of(3, Vec::new());
    complete(&mut c, "id-es-2");
    complete(&mut c, "id-es-3");
    let (id, call) = only_call(&h.es_cluster(c.clone()));
    assert_eq!(
        call,
        EsCall::AddVotingExclusions {
            node_names: vec!["es-3".into()]
        }
    );
    assert_eq!(step(&h, 2), Some(RemovalStep::ExcludeVoting));
    h.es_result(id, None);
    c.voting_exclusions
        .get_or_insert_default()
        .insert("es-3".into());
    let cmds = h.es_cluster(c.clone());
    assert_eq!(kills(&cmds), vec!["es-3.1".to_owned()]);
    assert!(es_calls(&cmds).is_empty(), "node 2 waits for node 3");
    let task = h.task_of(3).expect("task");
    h.update(status(&task, "h3", TaskState::Killed, Some("k")));
    let mut c = cluster_of(2, Vec::new());
    complete(&mut c, "id-es-2");
    c.voting_exclusions
        .get_or_insert_default()
        .insert("es-3".into());
    let cmds = h.es_cluster(c);
    // Node 3's exclusions are cleared before node 2 is excluded.
    let calls: Vec<EsCall> = es_calls(&cmds).into_iter().map(|(_, c)| c).collect();
    assert_eq!(
        calls,
        vec![
            EsCall::DeleteShutdown {
                node_id: "id-es-3".into()
            },
            EsCall::ClearVotingExclusions
        ]
    );
    assert_eq!(step(&h, 2), Some(RemovalStep::ExcludeVoting));
    let mut later = Vec::new();
    for (id, _) in es_calls(&cmds) {
        later.extend(h.es_result(id, None));
    }
    assert_eq!(step(&h, 3), None);
    let cmds = later;
    assert_eq!(
        es_calls(&cmds)
            .into_iter()
            .map(|(_, c)| c)
            .collect::<Vec<_>>(),
        vec![EsCall::AddVotingExclusions {
            node_names: vec!["es-2".into()]
        }]
    );
    check(&h);
}

#[test]
fn a_scheduler_killed_mid_drain_resumes_and_clears_what_it_set() {
    let mut h = running(2);
    h.es_cluster(cluster_of(2, vec![shard("i", 0, true, Some("es-2"))]));
    h.core.handle_scale_with(1, true, h.now).expect("scale");
    let (_, first) = only_call(&h.drain());
    // kill -9 before the answer came: the durable record says what may have been set.
    h.restart();
    let rec = &h.core.persisted().slots[&NodeId(2)];
    assert_eq!(
        rec.removal.as_ref().map(|r| r.shutdown_node_id.clone()),
        Some(Some("id-es-2".into()))
    );
    assert_eq!(
        rec.removal.as_ref().map(|r| r.kind),
        Some(RemovalKind::ScaleDown)
    );
    h.subscribe();
    h.es_root(2, "uuid-1");
    let (id, again) =
        only_call(&h.es_cluster(cluster_of(2, vec![shard("i", 0, true, Some("es-2"))])));
    assert_eq!(again, first, "the same idempotent call is sent again");
    h.es_result(id, None);
    // Scaled back up before the move finished: the record is cleared and the node stays.
    h.core.handle_scale_with(2, false, h.now).expect("scale up");
    let cmds = h.drain();
    assert!(kills(&cmds).is_empty());
    let (id, call) = only_call(&cmds);
    assert_eq!(
        call,
        EsCall::DeleteShutdown {
            node_id: "id-es-2".into()
        }
    );
    h.es_result(id, None);
    assert_eq!(step(&h, 2), None);
    assert!(!h.core.persisted().slots[&NodeId(2)].removed);
    check(&h);
}

#[test]
fn an_overdue_step_is_reported_never_forced_unless_data_loss_is_allowed() {
    let mut h = running(2);
    // A copy that cannot move (say, no room elsewhere): the replica on node 1 keeps the data safe.
    let stuck = cluster_of(
        2,
        vec![
            shard("i", 0, true, Some("es-2")),
            shard("i", 0, false, Some("es-1")),
        ],
    );
    h.es_cluster(stuck.clone());
    h.core.handle_scale_with(1, false, h.now).expect("scale");
    let (id, _) = only_call(&h.drain());
    h.es_result(id, None);
    h.advance(30_000);
    h.es_cluster(stuck.clone());
    let cmds = h.advance(31_000);
    let stalled: Vec<&String> = cmds
        .iter()
        .filter_map(|c| match c {
            Command::Watch(WatchEvent::Removal {
                message,
                stalled: true,
                ..
            }) => Some(message),
            _ => None,
        })
        .collect();
    assert_eq!(stalled.len(), 1, "{cmds:?}");
    assert!(
        stalled[0].contains("1 shard copies still on it"),
        "{}",
        stalled[0]
    );
    assert!(stalled[0].contains("--allow-data-loss"), "{}", stalled[0]);
    let cmds = h.es_cluster(stuck.clone());
    assert!(
        kills(&cmds).is_empty() && es_calls(&cmds).is_empty(),
        "an overdue step is not forced"
    );
    assert!(
        h.core.nodes(h.now)[1]
            .removal
            .as_ref()
            .expect("removal")
            .stalled
    );
    // The operator repeats the request with --allow-data-loss: the overdue move goes on.
    h.core.handle_scale_with(1, true, h.now).expect("allowed");
    h.drain();
    let (id, call) = only_call(&h.es_cluster(stuck));
    assert!(
        matches!(call, EsCall::AddVotingExclusions { .. }),
        "{call:?}"
    );
    h.es_result(id, None);
    check(&h);
}

#[test]
fn a_node_elasticsearch_does_not_know_is_stopped_at_once_as_is_a_scale_to_zero() {
    let mut h = running(3);
    // Node 3 never reported the cluster's UUID and the master does not list it.
    let mut rt = h.core.slots.remove(&NodeId(3)).expect("rt");
    rt.cluster_uuid = None;
    h.core.slots.insert(NodeId(3), rt);
    h.es_cluster(cluster_of(2, Vec::new()));
    h.core.handle_scale_with(2, false, h.now).expect("scale");
    let cmds = h.drain();
    assert_eq!(kills(&cmds), vec!["es-3.1".to_owned()]);
    assert!(es_calls(&cmds).is_empty());
    assert_eq!(step(&h, 3), None);
    // A full stop: every task killed at once, the volumes keep the data.
    h.core.handle_scale_with(0, false, h.now).expect("scale");
    let cmds = h.drain();
    assert_eq!(kills(&cmds), vec!["es-2.1".to_owned(), "es-1.1".to_owned()]);
    check(&h);
}

#[test]
fn replace_moves_data_first_and_relaunches_only_after_clearing() {
    let mut h = running(2);
    h.es_cluster(cluster_of(
        2,
        vec![
            shard("i", 0, true, Some("es-1")),
            shard("i", 0, false, Some("es-2")),
        ],
    ));
    h.core
        .handle_replace_with(NodeId(2), false, false, h.now)
        .expect("replace");
    let cmds = h.drain();
    assert!(kills(&cmds).is_empty());
    let (id, call) = only_call(&cmds);
    assert!(
        matches!(&call, EsCall::PutShutdown { kind: ShutdownKind::Remove, node_id, .. } if node_id == "id-es-2"),
        "{call:?}"
    );
    h.es_result(id, None);
    assert!(matches!(
        h.core.handle_replace_with(NodeId(2), false, false, h.now),
        Err(CoreError::Refused(_))
    ));
    let mut c = cluster_of(2, vec![shard("i", 0, true, Some("es-1"))]);
    complete(&mut c, "id-es-2");
    let (id, _) = only_call(&h.es_cluster(c.clone()));
    h.es_result(id, None);
    c.voting_exclusions
        .get_or_insert_default()
        .insert("es-2".into());
    assert_eq!(kills(&h.es_cluster(c)), vec!["es-2.1".to_owned()]);
    let task = h.task_of(2).expect("task");
    h.update(status(&task, "h2", TaskState::Killed, Some("k")));
    h.advance(2_000);
    // Not placed while its exclusions remain: it must not come back excluded.
    let o = h.next_offer_id();
    assert!(accepts(&h.offers(vec![offer(&o, "h9", 4.0, 8192.0, 1000.0)])).is_empty());
    let cmds = h.es_cluster(cluster_of(1, vec![shard("i", 0, true, Some("es-1"))]));
    for (id, _) in es_calls(&cmds) {
        h.es_result(id, None);
    }
    assert_eq!(step(&h, 2), None);
    let o = h.next_offer_id();
    let launched = accepts(&h.offers(vec![offer(&o, "h9", 4.0, 8192.0, 1000.0)]));
    assert_eq!(launched.len(), 1);
    assert_eq!(launched[0].node_id, NodeId(2));
    check(&h);
}

#[test]
fn a_refused_call_is_sent_again_after_a_pause_not_at_once() {
    let mut h = running(2);
    h.es_cluster(cluster_of(2, Vec::new()));
    h.core.handle_scale_with(1, false, h.now).expect("scale");
    let (id, call) = only_call(&h.drain());
    let cmds = h.es_result(id, Some("HTTP 503: no master"));
    assert!(
        es_calls(&cmds).is_empty(),
        "no hot loop on a failing cluster"
    );
    assert!(es_calls(&h.es_cluster(cluster_of(2, Vec::new()))).is_empty());
    let cmds = h.advance(5_000);
    let (_, again) = only_call(&cmds);
    assert_eq!(again, call);
    check(&h);
}

#[test]
fn versions_parse_as_elasticsearch_reports_them_and_pick_the_shutdown_api_from_7_15_2() {
    use crate::domain::EsVersion;
    assert_eq!(EsVersion::parse("8.15.0"), Some(EsVersion(8, 15, 0)));
    assert_eq!(
        EsVersion::parse("7.17.1-SNAPSHOT"),
        Some(EsVersion(7, 17, 1))
    );
    assert_eq!(EsVersion::parse("7.10"), Some(EsVersion(7, 10, 0)));
    assert_eq!(EsVersion::parse("latest"), None);
    assert_eq!(EsVersion::parse("8.1.2.3"), None);
    assert!(EsVersion(7, 15, 1) < EsVersion::SHUTDOWN_API);
    // One node still on an older version decides: the fallback is used.
    let mut c = cluster_of(2, Vec::new());
    c.nodes.get_mut("es-1").expect("node").version = EsVersion::parse("7.14.0");
    assert_eq!(c.min_version(), Some(EsVersion(7, 14, 0)));
    c.nodes.get_mut("es-1").expect("node").version = None;
    assert_eq!(
        c.min_version(),
        None,
        "an unknown version is not assumed new"
    );
}

#[test]
fn a_removal_kill_is_sent_again_after_a_resubscription() {
    let mut h = running(2);
    let nodes = [("es-1", false), ("es-2", false)];
    h.es_cluster(es_cluster(&nodes, "8.15.0", Vec::new()));
    h.core.handle_scale_with(1, false, h.now).expect("scale");
    let (id, _) = only_call(&h.drain());
    h.es_result(id, None);
    let mut c = es_cluster(&nodes, "8.15.0", Vec::new());
    complete(&mut c, "id-es-2");
    assert_eq!(kills(&h.es_cluster(c)), vec!["es-2.1".to_owned()]);
    h.core.handle_disconnected(h.now);
    h.drain();
    assert_eq!(kills(&h.subscribe()), vec!["es-2.1".to_owned()]);
    check(&h);
}

#[test]
fn after_a_restart_a_node_of_a_formed_cluster_is_not_stopped_before_elasticsearch_answers() {
    let mut h = running(2);
    h.restart();
    h.subscribe();
    h.core.handle_scale_with(1, false, h.now).expect("scale");
    let cmds = h.drain();
    assert!(kills(&cmds).is_empty(), "it may hold data: {cmds:?}");
    assert_eq!(step(&h, 2), Some(RemovalStep::MoveData));
    // Elasticsearch answers without it (it never joined): no data to move, stopped at once.
    let cmds = h.es_cluster(cluster_of(1, Vec::new()));
    assert_eq!(kills(&cmds), vec!["es-2.1".to_owned()]);
    check(&h);
}
