//! Certificate renewal (`renewal.rs`): a node whose certificate comes within the renewal window is
//! restarted through the rollout's steps, one at a time, and only while no rollout runs or is paused;
//! expiries are wall-clock and survive a restart. Built on the rollout tests' cluster helpers.

use super::rollout::{current, green, observe, restart_node_with, running, state, update_image};
use crate::command::{Command, WatchEvent};
use crate::ids::NodeId;
use crate::rollout::{RolloutState, RolloutStep};
use crate::testing::check;

const DAY: u64 = 86_400;
/// The wall-clock time of the tests (2026-12-01T00:00:00Z).
const T0: u64 = 1_796_083_200;
const VERSION: &str = "8.13.4";
const NEW: &str = "docker.elastic.co/elasticsearch/elasticsearch:8.15.0";

fn issue(h: &mut crate::testing::Harness, node: u64, not_after: u64) {
    h.core
        .handle_certificate_issued(NodeId(node), not_after, h.now)
        .expect("a known node");
    h.drain();
}

fn wall(h: &mut crate::testing::Harness, unix_s: u64) -> Vec<Command> {
    h.core.handle_wall_clock(unix_s, h.now);
    h.drain()
}

fn rollout_messages(cmds: &[Command]) -> Vec<String> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Watch(WatchEvent::Rollout { message, .. }) => Some(message.clone()),
            _ => None,
        })
        .collect()
}

fn cert(h: &crate::testing::Harness, node: u64) -> Option<u64> {
    h.core.persisted().slots[&NodeId(node)].cert_not_after
}

/// Records a certificate valid a year from the wall-clock time [`T0`] for every relaunched node.
fn renew(h: &mut crate::testing::Harness, id: NodeId) {
    issue(h, id.0, T0 + 365 * DAY);
}

#[test]
fn a_due_certificate_restarts_its_node_through_the_rollout_which_ends_done_once_renewed() {
    let mut h = running(3);
    for (n, days) in [(1, 300), (2, 10), (3, 200)] {
        issue(&mut h, n, T0 + days * DAY);
    }
    observe(&mut h, green(3, VERSION, &[]));
    let cmds = wall(&mut h, T0);
    assert_eq!(state(&h), RolloutState::Running);
    assert_eq!(current(&h), Some((NodeId(2), RolloutStep::Prepare)));
    let messages = rollout_messages(&cmds);
    assert!(
        messages
            .iter()
            .any(|m| m == "certificate of node 2 expires on 2026-12-11T00:00:00Z: renewing"),
        "{messages:?}"
    );
    let view = h.core.rollout_view(h.now);
    assert!(view.pending.is_empty(), "only node 2 is due: {view:?}");
    assert!(
        view.reason
            .as_deref()
            .is_some_and(|r| r.starts_with("certificate of node 2 expires on 2026-12-11")),
        "{view:?}"
    );
    let generation = h.core.persisted().slots[&NodeId(2)].config_generation;
    restart_node_with(&mut h, 2, 3, VERSION, renew);
    assert_eq!(state(&h), RolloutState::Done);
    assert_eq!(cert(&h, 2), Some(T0 + 365 * DAY));
    assert_eq!(
        h.core.persisted().slots[&NodeId(2)].config_generation,
        generation,
        "restarted on the configuration it ran"
    );
    // A minute later nothing is due: no new rollout, no kill.
    h.advance(60_000);
    let cmds = wall(&mut h, T0 + 60);
    assert!(rollout_messages(&cmds).is_empty(), "{cmds:?}");
    assert_eq!(state(&h), RolloutState::Done);
    check(&h);
}

#[test]
fn a_certificate_outside_the_window_is_left_alone_until_it_enters_it() {
    let mut h = running(2);
    issue(&mut h, 1, T0 + 31 * DAY);
    issue(&mut h, 2, T0 + 200 * DAY);
    observe(&mut h, green(2, VERSION, &[]));
    // No wall-clock time yet: nothing can be due.
    assert!(h.core.rollout_view(h.now).pending.is_empty());
    let cmds = wall(&mut h, T0);
    assert!(rollout_messages(&cmds).is_empty(), "{cmds:?}");
    assert!(h.core.persisted().rollout.is_none());
    assert!(h.core.rollout_view(h.now).pending.is_empty());
    // One day and a second later it is within 30 days.
    let cmds = wall(&mut h, T0 + DAY + 1);
    assert!(!rollout_messages(&cmds).is_empty());
    assert_eq!(current(&h), Some((NodeId(1), RolloutStep::Prepare)));
    check(&h);
}

#[test]
fn a_paused_rollout_is_not_taken_over_and_holds_renewals() {
    let mut h = running(2);
    observe(&mut h, green(2, VERSION, &[]));
    update_image(&mut h, NEW);
    h.core.handle_rollout_pause(h.now).expect("pause");
    h.drain();
    let before = h.core.persisted().rollout.clone();
    issue(&mut h, 2, T0 + DAY);
    let cmds = wall(&mut h, T0);
    assert!(rollout_messages(&cmds).is_empty(), "{cmds:?}");
    assert_eq!(
        h.core.persisted().rollout,
        before,
        "left as the operator put it"
    );
    assert_eq!(state(&h), RolloutState::Paused);
    check(&h);
}

#[test]
fn a_restarted_scheduler_keeps_the_expiry_and_renews_once_told_the_time() {
    let mut h = running(2);
    issue(&mut h, 1, T0 + 5 * DAY);
    issue(&mut h, 2, T0 + 300 * DAY);
    h.restart();
    h.subscribe();
    assert_eq!(cert(&h, 1), Some(T0 + 5 * DAY), "durable");
    observe(&mut h, green(2, VERSION, &[]));
    assert!(
        h.core.persisted().rollout.is_none(),
        "the core has no clock of its own"
    );
    wall(&mut h, T0);
    assert_eq!(state(&h), RolloutState::Running);
    assert_eq!(current(&h), Some((NodeId(1), RolloutStep::Prepare)));
    // A second restart in the middle of the renewal carries on with the same node.
    h.restart();
    h.subscribe();
    assert_eq!(current(&h), Some((NodeId(1), RolloutStep::Prepare)));
    check(&h);
}

#[test]
fn several_due_nodes_go_one_at_a_time_in_the_rollout_order() {
    let mut h = running(3);
    for n in 1..=3 {
        issue(&mut h, n, T0 + n * DAY);
    }
    // Node 1 is the only master-eligible node: it goes last.
    observe(&mut h, green(3, VERSION, &[1]));
    let cmds = wall(&mut h, T0);
    assert!(
        rollout_messages(&cmds)
            .iter()
            .any(|m| m.contains("certificate of node 2 expires") && m.contains("3 nodes due")),
        "{cmds:?}"
    );
    assert_eq!(current(&h), Some((NodeId(2), RolloutStep::Prepare)));
    assert_eq!(
        h.core.rollout_view(h.now).pending,
        vec![NodeId(3), NodeId(1)]
    );
    // Each node goes through every step (one kill, its relaunch, its rejoin, green) before the next
    // starts; the helper's later observations list every node as master-eligible, so the rest go by id.
    let mut order = Vec::new();
    while let Some((id, step)) = current(&h) {
        assert_eq!(step, RolloutStep::Prepare);
        assert!(!order.contains(&id), "node {id} restarted twice");
        restart_node_with(&mut h, id.0, 3, VERSION, renew);
        assert_eq!(cert(&h, id.0), Some(T0 + 365 * DAY));
        order.push(id);
    }
    assert_eq!(order, vec![NodeId(2), NodeId(1), NodeId(3)]);
    assert_eq!(state(&h), RolloutState::Done);
    assert_eq!(
        h.core.persisted().rollout.as_ref().map(|r| r.done.clone()),
        Some(order)
    );
    check(&h);
}

#[test]
fn an_unknown_node_is_refused() {
    let mut h = running(1);
    assert!(
        h.core
            .handle_certificate_issued(NodeId(9), T0, h.now)
            .is_err()
    );
    check(&h);
}

#[test]
fn a_running_rollout_is_not_restarted_and_takes_due_nodes_in_its_turn() {
    let mut h = running(2);
    observe(&mut h, green(2, VERSION, &[]));
    update_image(&mut h, NEW);
    assert_eq!(current(&h), Some((NodeId(1), RolloutStep::Prepare)));
    let before = h.core.persisted().rollout.clone();
    issue(&mut h, 2, T0 + DAY);
    let cmds = wall(&mut h, T0);
    assert!(rollout_messages(&cmds).is_empty(), "{cmds:?}");
    assert_eq!(
        h.core.persisted().rollout,
        before,
        "the same rollout goes on"
    );
    assert_eq!(h.core.rollout_view(h.now).pending, vec![NodeId(2)]);
    check(&h);
}
