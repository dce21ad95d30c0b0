//! Mesos maintenance (`maintenance.rs`): a node on an agent scheduled for maintenance moves away
//! through the safe removal path, one at a time, never with the last copy of a shard or the last
//! master, and the inverse offers are answered by whether the agent still holds a Tether node.

use crate::command::{Command, EsCall, MesosCommand, WatchEvent};
use crate::domain::{EsHealth, NodeShutdown, ShutdownKind, ShutdownStatus, TaskReason, TaskState};
use crate::ids::{NodeId, OfferId};
use crate::state::{RemovalKind, RemovalStep};
use crate::testing::*;

/// [`running_cluster`] of `n` nodes (normal strategy), removal steps overdue after a minute, inverse
/// offers answered every 30 s.
fn running(n: u64) -> Harness {
    let mut c = config(crate::Strategy::Normal);
    c.removal_step_timeout_ms = 60_000;
    c.maintenance_refuse_seconds = 30.0;
    running_cluster(c, n)
}

fn names(n: u64) -> Vec<String> {
    (1..=n).map(|i| format!("es-{i}")).collect()
}

/// A green 8.x cluster of nodes `es-1..es-n` but `except`, all master-eligible.
fn cluster(
    n: u64,
    except: Option<u64>,
    shards: Vec<crate::domain::EsShard>,
) -> crate::domain::EsCluster {
    let skip = except.map(|e| format!("es-{e}"));
    let names: Vec<String> = names(n)
        .into_iter()
        .filter(|x| Some(x) != skip.as_ref())
        .collect();
    let nodes: Vec<(&str, bool)> = names.iter().map(|s| (s.as_str(), true)).collect();
    es_cluster(&nodes, "8.15.0", shards)
}

/// Every shard of index `logs` has a copy on two of three nodes.
fn replicated() -> Vec<crate::domain::EsShard> {
    vec![
        shard("logs", 0, true, Some("es-1")),
        shard("logs", 0, false, Some("es-2")),
        shard("logs", 1, true, Some("es-2")),
        shard("logs", 1, false, Some("es-3")),
        shard("logs", 2, true, Some("es-3")),
        shard("logs", 2, false, Some("es-1")),
    ]
}

fn step(h: &Harness, node: u64) -> Option<RemovalStep> {
    h.core.persisted().slots[&NodeId(node)]
        .removal
        .as_ref()
        .map(|r| r.step)
}

fn kind(h: &Harness, node: u64) -> Option<RemovalKind> {
    h.core.persisted().slots[&NodeId(node)]
        .removal
        .as_ref()
        .map(|r| r.kind)
}

fn reason_of(h: &Harness, node: u64) -> String {
    h.core
        .nodes(h.now)
        .into_iter()
        .find(|n| n.node_id == NodeId(node))
        .and_then(|n| n.last_reason)
        .unwrap_or_default()
}

fn shutdowns(cmds: &[Command]) -> Vec<(String, String)> {
    es_calls(cmds)
        .into_iter()
        .filter_map(|(_, c)| match c {
            EsCall::PutShutdown {
                node_id, reason, ..
            } => Some((node_id, reason)),
            _ => None,
        })
        .collect()
}

fn kills(cmds: &[Command]) -> usize {
    cmds.iter()
        .filter(|c| matches!(c, Command::Mesos(MesosCommand::Kill { .. })))
        .count()
}

fn ids(list: &[&str]) -> Vec<OfferId> {
    list.iter()
        .map(|s| OfferId::new(*s).expect("offer id"))
        .collect()
}

fn declined_inverse(cmds: &[Command]) -> Vec<OfferId> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Mesos(MesosCommand::DeclineInverseOffers {
                inverse_offer_ids,
                refuse_seconds,
            }) => {
                assert_eq!(*refuse_seconds, 30.0, "declined with the configured filter");
                Some(inverse_offer_ids.clone())
            }
            _ => None,
        })
        .flatten()
        .collect()
}

fn accepted_inverse(cmds: &[Command]) -> Vec<OfferId> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Mesos(MesosCommand::AcceptInverseOffers {
                inverse_offer_ids, ..
            }) => Some(inverse_offer_ids.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn warnings(cmds: &[Command]) -> Vec<String> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Watch(WatchEvent::Warning { message }) => Some(message.clone()),
            _ => None,
        })
        .collect()
}

/// Answers every Elasticsearch call in `cmds` (and those the answers cause) with success; returns the
/// commands the answers caused.
fn answer_all(h: &mut Harness, cmds: &[Command]) -> Vec<Command> {
    let mut out = Vec::new();
    let mut pending: Vec<u64> = es_calls(cmds).into_iter().map(|(id, _)| id).collect();
    while let Some(id) = pending.pop() {
        let more = h.es_result(id, None);
        pending.extend(es_calls(&more).into_iter().map(|(id, _)| id));
        out.extend(more);
    }
    out
}

/// Walks node `node`'s removal to its end with Elasticsearch agreeing at every step (the calls in
/// `started`, the commands that started it, answered first; its data moved, its shutdown COMPLETE, its
/// voting exclusion listed, its task KILLED, then no longer listed); returns every command on the way.
fn finish_move(h: &mut Harness, node: u64, n: u64, started: &[Command]) -> Vec<Command> {
    let mut all = answer_all(h, started);
    let name = format!("es-{node}");
    for _ in 0..10 {
        let Some(s) = step(h, node) else {
            return all;
        };
        let cmds = match s {
            RemovalStep::MoveData | RemovalStep::ExcludeVoting => {
                let mut c = cluster(n, None, Vec::new());
                c.shutdowns.get_or_insert_default().insert(
                    format!("id-{name}"),
                    NodeShutdown {
                        kind: ShutdownKind::Remove,
                        status: ShutdownStatus::Complete,
                    },
                );
                c.voting_exclusions
                    .get_or_insert_default()
                    .insert(name.clone());
                h.es_cluster(c)
            }
            RemovalStep::Stop => {
                let rec = &h.core.persisted().slots[&NodeId(node)];
                let t = rec.task.clone().expect("task");
                h.update(status(
                    &t.task_id,
                    t.host.as_str(),
                    TaskState::Killed,
                    Some("k"),
                ))
            }
            RemovalStep::Clear => h.es_cluster(cluster(n, Some(node), Vec::new())),
        };
        let more = answer_all(h, &cmds);
        all.extend(cmds);
        all.extend(more);
    }
    panic!(
        "the move of node {node} did not finish: {:?}",
        step(h, node)
    );
}

#[test]
fn an_inverse_offer_moves_the_node_away_safely_and_is_accepted_once_it_left() {
    let mut h = running(3);
    h.es_cluster(cluster(3, None, replicated()));
    let window = h.now.plus(3_600_000);

    let cmds = h.inverse_offer("io-1", "h2", window);
    assert_eq!(
        shutdowns(&cmds),
        vec![(
            "id-es-2".to_owned(),
            "tether: maintenance move of node 2".to_owned()
        )],
        "the data moves away first, through the shutdown API"
    );
    assert_eq!(kills(&cmds), 0, "not killed before its data moved");
    assert!(
        declined_inverse(&cmds).is_empty() && accepted_inverse(&cmds).is_empty(),
        "held while the node moves"
    );
    assert_eq!(kind(&h, 2), Some(RemovalKind::Maintenance));
    assert_eq!(step(&h, 2), Some(RemovalStep::MoveData));

    let cmds = finish_move(&mut h, 2, 3, &cmds);
    assert_eq!(kills(&cmds), 1, "stopped once, after its data moved");
    // Accepted as soon as its task ended there, never declined on the way.
    assert_eq!(accepted_inverse(&cmds), ids(&["io-1"]));
    assert!(declined_inverse(&cmds).is_empty());
    let accept_at = cmds
        .iter()
        .position(|c| matches!(c, Command::Mesos(MesosCommand::AcceptInverseOffers { .. })))
        .expect("accepted");
    let kill_at = cmds
        .iter()
        .position(|c| matches!(c, Command::Mesos(MesosCommand::Kill { .. })))
        .expect("killed");
    assert!(kill_at < accept_at, "accepted before the node left");
    assert_eq!(step(&h, 2), None);
    assert!(
        !h.core.persisted().slots[&NodeId(2)].removed,
        "relaunched, not scaled down"
    );

    // Relaunched on its volumes elsewhere, never on the agent under maintenance.
    let o_maint = h.next_offer_id();
    let o_free = h.next_offer_id();
    let cmds = h.offers(vec![
        unavailable_offer(&o_maint, "h2", window),
        offer(&o_free, "h4", 4.0, 8192.0, 1000.0),
    ]);
    let launched = accepts(&cmds);
    assert_eq!(launched.len(), 1);
    assert_eq!(launched[0].node_id, NodeId(2));
    assert_eq!(launched[0].host.as_str(), "h4");
    assert!(declines(&cmds).iter().any(|(id, _)| *id == o_maint));

    // Asked again after the filter: the agent is still empty.
    let cmds = h.inverse_offer("io-2", "h2", window);
    assert_eq!(accepted_inverse(&cmds), ids(&["io-2"]));
    assert!(declined_inverse(&cmds).is_empty());
    check(&h);
}

#[test]
fn an_offer_with_unavailability_alone_moves_the_node_and_is_never_placed_on() {
    let mut h = running(3);
    h.es_cluster(cluster(3, None, replicated()));
    let o = h.next_offer_id();
    let cmds = h.offers(vec![unavailable_offer(&o, "h3", h.now.plus(60_000))]);
    assert_eq!(shutdowns(&cmds).len(), 1);
    assert_eq!(shutdowns(&cmds)[0].0, "id-es-3");
    assert!(accepts(&cmds).is_empty());
    assert_eq!(kind(&h, 3), Some(RemovalKind::Maintenance));

    // A scale-up does not land there either.
    h.core.handle_scale(4, h.now).expect("scale");
    h.drain();
    let o = h.next_offer_id();
    let cmds = h.offers(vec![unavailable_offer(&o, "h5", h.now.plus(60_000))]);
    assert!(accepts(&cmds).is_empty());
    let agents = h.core.agents(h.now);
    let h5 = agents.iter().find(|a| a.host.as_str() == "h5").expect("h5");
    assert_eq!(
        h5.last_decline.as_ref().map(ToString::to_string).as_deref(),
        Some("the agent is scheduled for Mesos maintenance")
    );
    check(&h);
}

#[test]
fn nodes_move_one_at_a_time_the_earliest_window_first() {
    let mut h = running(3);
    h.es_cluster(cluster(3, None, replicated()));
    let started = h.inverse_offer("io-1", "h1", h.now.plus(7_200_000));
    assert_eq!(shutdowns(&started)[0].0, "id-es-1");
    let cmds = h.inverse_offer("io-2", "h3", h.now.plus(3_600_000));
    assert!(
        shutdowns(&cmds).is_empty(),
        "a second node never moves at once"
    );
    assert!(
        declined_inverse(&cmds).is_empty() && accepted_inverse(&cmds).is_empty(),
        "held: its node only waits for its turn"
    );
    assert_eq!(kind(&h, 3), None);
    assert!(reason_of(&h, 3).contains("node 1 is being removed or moved first"));

    finish_move(&mut h, 1, 3, &started);
    // Node 1 is down until it runs elsewhere: nothing else moves meanwhile.
    let cmds = h.es_cluster(cluster(3, Some(1), replicated()));
    assert!(shutdowns(&cmds).is_empty());
    assert!(reason_of(&h, 3).contains("node 1 is not running"));
    let o = h.next_offer_id();
    let launched = accepts(&h.offers(vec![offer(&o, "h4", 4.0, 8192.0, 1000.0)]));
    assert_eq!(launched[0].node_id, NodeId(1));
    // Running again: the next node starts.
    let mut cmds = h.update(status(
        &launched[0].task_id,
        "h4",
        TaskState::Running,
        Some("u"),
    ));
    cmds.extend(h.es_root(1, "uuid-1"));
    cmds.extend(h.es_cluster(cluster(3, None, replicated())));
    assert_eq!(shutdowns(&cmds).len(), 1);
    assert_eq!(shutdowns(&cmds)[0].0, "id-es-3");
    assert_eq!(kind(&h, 3), Some(RemovalKind::Maintenance));
    assert_eq!(reason_of(&h, 3), "");
    check(&h);
}

#[test]
fn the_last_copy_of_a_shard_is_not_moved_without_the_operator() {
    let mut h = running(3);
    let mut shards = replicated();
    shards.push(shard("solo", 0, true, Some("es-2")));
    h.es_cluster(cluster(3, None, shards));
    let cmds = h.inverse_offer("io-1", "h2", h.now.plus(60_000));
    assert!(shutdowns(&cmds).is_empty());
    assert_eq!(kills(&cmds), 0);
    assert_eq!(kind(&h, 2), None);
    assert_eq!(declined_inverse(&cmds), ids(&["io-1"]));
    let reason = reason_of(&h, 2);
    assert!(
        reason.contains("maintenance") && reason.contains("solo"),
        "{reason}"
    );
    assert!(
        warnings(&cmds).iter().any(|w| w.contains("solo")),
        "watchers are told why"
    );
    check(&h);
}

#[test]
fn the_last_master_eligible_node_is_never_moved() {
    let mut h = running(3);
    let nodes = [("es-1", true), ("es-2", false), ("es-3", false)];
    h.es_cluster(es_cluster(&nodes, "8.15.0", replicated()));
    let cmds = h.inverse_offer("io-1", "h1", h.now.plus(60_000));
    assert!(shutdowns(&cmds).is_empty());
    assert_eq!(kind(&h, 1), None);
    assert!(reason_of(&h, 1).contains("last master-eligible"));

    // A data node beside it moves.
    let cmds = h.inverse_offer("io-2", "h3", h.now.plus(60_000));
    assert_eq!(shutdowns(&cmds)[0].0, "id-es-3");
    check(&h);
}

#[test]
fn nothing_moves_while_the_cluster_is_red_or_another_node_is_down() {
    let mut h = running(3);
    let mut red = cluster(3, None, replicated());
    red.health = EsHealth::Red;
    h.es_cluster(red);
    let cmds = h.inverse_offer("io-1", "h2", h.now.plus(60_000));
    assert!(shutdowns(&cmds).is_empty());
    assert!(reason_of(&h, 2).contains("red"));

    // Green again, but node 1's task failed: one node down at a time.
    let t1 = h.task_of(1).expect("task");
    h.update(status(&t1, "h1", TaskState::Failed, Some("f")));
    let cmds = h.es_cluster(cluster(3, Some(1), replicated()));
    assert!(shutdowns(&cmds).is_empty());
    assert!(
        reason_of(&h, 2).contains("node 1 is not running"),
        "{}",
        reason_of(&h, 2)
    );
    check(&h);
}

#[test]
fn a_scheduler_failover_resumes_the_move_and_starts_no_second_one() {
    let mut h = running(3);
    h.es_cluster(cluster(3, None, replicated()));
    h.inverse_offer("io-1", "h2", h.now.plus(60_000));
    assert_eq!(kind(&h, 2), Some(RemovalKind::Maintenance));

    h.restart();
    h.subscribe();
    // The move is durable: the first observation sends its call again.
    let resent = h.es_cluster(cluster(3, None, replicated()));
    assert_eq!(shutdowns(&resent)[0].0, "id-es-2");
    // The master re-sends the inverse offers after a re-subscription: the other agent waits.
    let cmds = h.inverse_offer("io-7", "h3", h.now.plus(60_000));
    assert!(shutdowns(&cmds).is_empty());
    assert!(
        declined_inverse(&cmds).is_empty(),
        "held: it waits for its turn"
    );
    assert_eq!(kind(&h, 3), None);
    finish_move(&mut h, 2, 3, &resent);
    assert_eq!(step(&h, 2), None);
    check(&h);
}

#[test]
fn a_rescinded_inverse_offer_or_an_offer_without_unavailability_ends_the_maintenance() {
    let mut h = running(3);
    let mut red = cluster(3, None, replicated());
    red.health = EsHealth::Red;
    h.es_cluster(red);
    h.inverse_offer("io-1", "h2", h.now.plus(60_000));
    assert!(reason_of(&h, 2).contains("red"));
    assert_eq!(h.core.maintenance().len(), 1);
    assert_eq!(h.core.maintenance()[0].nodes, vec![NodeId(2)]);
    // The agents view shows it on h2 and nowhere else.
    let agent_maintenance = |h: &Harness, name: &str| {
        h.core
            .agents(h.now)
            .into_iter()
            .find(|a| a.host.as_str() == name)
            .and_then(|a| a.maintenance)
    };
    let m = agent_maintenance(&h, "h2").expect("h2 under maintenance");
    assert_eq!(
        (m.window.start, m.nodes.clone()),
        (h.now.plus(60_000), vec![NodeId(2)])
    );
    assert!(agent_maintenance(&h, "h1").is_none());

    h.core
        .handle_rescind_inverse_offer(&OfferId::new("io-1").expect("id"), h.now);
    h.drain();
    assert!(h.core.maintenance().is_empty());
    assert!(agent_maintenance(&h, "h2").is_none());
    assert_eq!(reason_of(&h, 2), "");

    // Known from an offer, cleared by the agent's next offer without it.
    let o = h.next_offer_id();
    h.offers(vec![unavailable_offer(&o, "h2", h.now.plus(60_000))]);
    assert_eq!(h.core.maintenance().len(), 1);
    let o = h.next_offer_id();
    h.offers(vec![offer(&o, "h2", 1.0, 512.0, 10.0)]);
    assert!(h.core.maintenance().is_empty());
    assert_eq!(reason_of(&h, 2), "");
    assert_eq!(kind(&h, 2), None);
    check(&h);
}

#[test]
fn a_resubscription_forgets_inverse_offers_the_master_rescinded() {
    let mut h = running(3);
    let mut red = cluster(3, None, replicated());
    red.health = EsHealth::Red;
    h.es_cluster(red);
    h.inverse_offer("io-1", "h2", h.now.plus(60_000));
    assert_eq!(h.core.maintenance().len(), 1);
    h.core.handle_disconnected(h.now);
    h.subscribe();
    assert!(h.core.maintenance().is_empty());
    assert_eq!(reason_of(&h, 2), "");
    check(&h);
}

#[test]
fn a_task_killed_by_agent_draining_is_relaunched_elsewhere_at_once() {
    let mut h = running(3);
    h.es_cluster(cluster(3, None, replicated()));
    let t2 = h.task_of(2).expect("task");
    let mut s = status(&t2, "h2", TaskState::Killed, Some("k"));
    s.reason = Some(TaskReason::AgentDraining);
    h.update(s);
    let m = h.core.maintenance();
    assert_eq!(m.len(), 1);
    assert!(m[0].draining);
    assert_eq!(kind(&h, 2), None, "Mesos stopped it: nothing to move");
    // No backoff: placed in the very next round, elsewhere.
    let o = h.next_offer_id();
    let cmds = h.offers(vec![offer(&o, "h4", 4.0, 8192.0, 1000.0)]);
    let launched = accepts(&cmds);
    assert_eq!(launched.len(), 1);
    assert_eq!(launched[0].node_id, NodeId(2));
    check(&h);
}

#[test]
fn an_inverse_offer_is_declined_while_the_node_cannot_move_and_held_once_it_moves() {
    let mut h = running(3);
    let mut red = cluster(3, None, replicated());
    red.health = EsHealth::Red;
    h.es_cluster(red);
    let cmds = h.inverse_offer("io-1", "h2", h.now.plus(60_000));
    assert_eq!(
        declined_inverse(&cmds),
        ids(&["io-1"]),
        "it cannot move now"
    );
    // Green again: it moves; the master's next inverse offer (after the filter) is held until it left.
    let started = h.es_cluster(cluster(3, None, replicated()));
    assert_eq!(shutdowns(&started)[0].0, "id-es-2");
    let cmds = h.inverse_offer("io-2", "h2", h.now.plus(60_000));
    assert!(declined_inverse(&cmds).is_empty() && accepted_inverse(&cmds).is_empty());
    let cmds = finish_move(&mut h, 2, 3, &started);
    assert_eq!(accepted_inverse(&cmds), ids(&["io-2"]));
    check(&h);
}
