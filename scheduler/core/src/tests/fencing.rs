//! UNREACHABLE nodes on a virtual clock: the operator path (which agents may be marked gone) and every
//! rule of storage fencing (the delay, Elasticsearch's second opinion, the takeover's confirmation, the
//! old task killed when it shows up, no second writer without preemption).

use std::collections::BTreeSet;

use crate::command::{Command, MesosCommand, WatchEvent};
use crate::config::Fencing;
use crate::domain::{DriverAttachment, EsView, TaskReason, TaskState, VolumeReport};
use crate::error::CoreError;
use crate::ids::{NodeId, TaskId, VolumeName};
use crate::testing::*;
use crate::view::{NextAction, OperatorWait};

const DELAY: u64 = 60_000;

/// The configuration of these tests, with `fencing`.
fn fencing_config(fencing: Fencing) -> crate::config::Config {
    let mut c = config(external(false));
    c.fencing = fencing;
    c.unreachable_replace_after_ms = DELAY;
    c.es_view_max_age_ms = 15_000;
    c
}

/// A subscribed core with one node wanted and sidecars on agents `a` and `b`; the node's volumes.
fn one_node_two_sidecars(c: crate::config::Config) -> (Harness, Vec<VolumeName>) {
    let mut h = Harness::new(c);
    h.subscribe();
    h.core
        .handle_scale(1, h.now)
        .unwrap_or_else(|e| panic!("{e}"));
    h.drain();
    let vols = h.core.persisted().slots[&NodeId(1)].volumes.clone();
    h.sidecar("a", None, None, &vols);
    h.sidecar("b", None, None, &vols);
    (h, vols)
}

/// One node running on agent `a` (agents `a` and `b` have sidecars), with `fencing`.
fn running_on_a(fencing: Fencing) -> (Harness, TaskId, Vec<VolumeName>) {
    let (mut h, vols) = one_node_two_sidecars(fencing_config(fencing));
    let cmds = h.offers(vec![offer("o-a", "a", 4.0, 8192.0, 0.0)]);
    let (_, command_id, _) = prepares(&cmds)[0].clone();
    let cmds = h.prepare_result("a", command_id, true);
    let task = accepts(&cmds)[0].task_id.clone();
    h.update(status(&task, "a", TaskState::Running, Some("u1")));
    (h, task, vols)
}

fn unreachable(h: &mut Harness, task: &TaskId) {
    let mut s = status(task, "a", TaskState::Unreachable, None);
    s.reason = Some(TaskReason::AgentRemoved);
    h.update(s);
}

fn es_lists(h: &mut Harness, names: &[&str]) -> Vec<Command> {
    let view = EsView::Master {
        master: "es-2".into(),
        nodes: names
            .iter()
            .map(|n| (*n).to_owned())
            .collect::<BTreeSet<_>>(),
    };
    h.core.handle_es_view(view, h.now);
    h.drain()
}

fn no_master(h: &mut Harness) -> Vec<Command> {
    h.core.handle_es_view(
        EsView::NoMaster {
            why: "master_not_discovered_exception".into(),
        },
        h.now,
    );
    h.drain()
}

fn next_action(h: &Harness) -> NextAction {
    h.core
        .nodes(h.now)
        .into_iter()
        .find(|n| n.node_id == NodeId(1))
        .map(|n| n.next_action)
        .unwrap_or(NextAction::None)
}

fn kills(cmds: &[Command]) -> Vec<TaskId> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Mesos(MesosCommand::Kill { task_id, .. }) => Some(task_id.clone()),
            _ => None,
        })
        .collect()
}

/// Advances in steps of 5 s, the sidecars reporting (so they stay fresh) and Elasticsearch answering
/// with `view` (when given) at every step; returns every command.
fn pass(h: &mut Harness, ms: u64, vols: &[VolumeName], view: Option<&[&str]>) -> Vec<Command> {
    let mut out = Vec::new();
    let end = h.now.plus(ms);
    while h.now < end {
        let step = 5_000.min(end.since(h.now));
        out.extend(h.advance(step));
        out.extend(h.sidecar("a", None, None, vols));
        out.extend(h.sidecar("b", None, None, vols));
        if let Some(names) = view {
            out.extend(es_lists(h, names));
        }
    }
    out
}

/// The volumes' reports of a successful preempting prepare on `b`, as the driver sees them after it.
fn taken_over(vols: &[VolumeName], attachment: Option<DriverAttachment>) -> Vec<VolumeReport> {
    vols.iter()
        .map(|v| {
            let mut r = volume(v, true, None, true);
            r.driver_attachment = attachment;
            r
        })
        .collect()
}

/// Offers `b` and answers its prepare with `volumes`; returns the commands of the answer.
fn place_on_b(h: &mut Harness, volumes: Vec<VolumeReport>) -> Vec<Command> {
    let id = h.next_offer_id();
    let cmds = h.offers(vec![offer(&id, "b", 4.0, 8192.0, 0.0)]);
    let p = prepares(&cmds);
    assert_eq!(p.len(), 1, "a prepare on b: {cmds:?}");
    h.prepare_result_with("b", p[0].1, volumes)
}

#[test]
fn without_fencing_an_unreachable_node_waits_for_an_operator() {
    let (mut h, task, vols) = running_on_a(Fencing::None);
    unreachable(&mut h, &task);
    assert_eq!(
        next_action(&h),
        NextAction::WaitOperator {
            host: host("a"),
            why: OperatorWait::FencingOff
        }
    );
    let node = &h.core.nodes(h.now)[0];
    assert_eq!(node.unreachable_since, Some(h.now));
    let cmds = pass(&mut h, 10 * DELAY, &vols, Some(&[]));
    let cmds = [cmds, h.offers(vec![offer("o-b", "b", 4.0, 8192.0, 0.0)])].concat();
    assert!(prepares(&cmds).is_empty() && kills(&cmds).is_empty());
    // The operator marks the agent gone: the node is placed at once.
    let mut gone = status(&task, "a", TaskState::GoneByOperator, None);
    gone.reason = Some(TaskReason::AgentRemovedByOperator);
    h.update(gone);
    assert_eq!(next_action(&h), NextAction::None);
    let cmds = h.offers(vec![offer("o-b2", "b", 4.0, 8192.0, 0.0)]);
    assert_eq!(prepares(&cmds).len(), 1);
    check(&h);
}

#[test]
fn storage_fencing_replaces_once_unreachable_and_absent_from_elasticsearch_for_the_delay() {
    let (mut h, task, vols) = running_on_a(Fencing::Storage);
    es_lists(&mut h, &["es-1"]);
    unreachable(&mut h, &task);
    let t0 = h.now;
    // Elasticsearch still lists it for 10 s, then no longer: the delay runs from then.
    pass(&mut h, 10_000, &vols, Some(&["es-1"]));
    assert_eq!(
        next_action(&h),
        NextAction::EsStillSeesIt {
            master: "es-2".into()
        }
    );
    es_lists(&mut h, &[]);
    let absent = h.now;
    assert_eq!(
        next_action(&h),
        NextAction::ReplaceAt {
            at: absent.plus(DELAY)
        }
    );
    let cmds = pass(&mut h, DELAY - 5_000, &vols, Some(&[]));
    assert!(kills(&cmds).is_empty(), "not before the delay");
    assert_eq!(h.task_of(1), Some(task.clone()));
    let cmds = pass(&mut h, 5_000, &vols, Some(&[]));
    assert!(h.now >= t0.plus(DELAY));
    assert_eq!(
        kills(&cmds),
        vec![task.clone()],
        "the old task is asked to die"
    );
    assert!(cmds.iter().any(|c| matches!(
        c,
        Command::Watch(WatchEvent::FencedReplacement { task_id, .. }) if *task_id == task
    )));
    assert_eq!(h.task_of(1), None);
    assert!(h.core.persisted().slots[&NodeId(1)].fenced);

    let cmds = place_on_b(&mut h, taken_over(&vols, Some(DriverAttachment::Here)));
    let l = accepts(&cmds);
    assert_eq!(l.len(), 1, "launched once the driver confirms: {cmds:?}");
    assert_eq!(l[0].host, host("b"));
    assert!(!h.core.persisted().slots[&NodeId(1)].fenced);
    check(&h);
}

/// With security on the Prepare's answer (volumes and the CSR) is followed by the InstallIdentity's,
/// which reports no volumes: the takeover is confirmed from the Prepare's, and the node launches once its
/// identity is installed. (Checked against the second answer, every secure fenced replacement failed with
/// "the driver reported nothing of it".)
#[test]
fn with_security_the_takeover_is_confirmed_by_the_prepare_and_launched_after_the_identity() {
    let mut c = fencing_config(Fencing::Storage);
    c.security = crate::config::Security::Full;
    c.volumes[0].container_path = crate::config::IDENTITY_MOUNT.into();
    c.validate().expect("a valid secure layout");
    let (mut h, vols) = one_node_two_sidecars(c);
    let answer = |command_id, volumes, csr: Option<&str>| crate::domain::CommandResult {
        command_id,
        ok: true,
        error: None,
        volumes,
        csr_pem: csr.map(str::to_owned),
    };
    let install_id = |cmds: &[Command]| {
        cmds.iter().find_map(|c| match c {
            Command::Sidecar {
                command: crate::command::SidecarCommand::InstallIdentity { command_id, .. },
                ..
            } => Some(*command_id),
            _ => None,
        })
    };
    // First launch on a, through Prepare and InstallIdentity.
    let cmds = h.offers(vec![offer("o-a", "a", 4.0, 8192.0, 0.0)]);
    let (_, prepare_id, _) = prepares(&cmds)[0].clone();
    h.core.handle_sidecar_result(
        &host("a"),
        answer(prepare_id, Vec::new(), Some("CSR")),
        h.now,
    );
    let cmds = h.drain();
    let install = install_id(&cmds).expect("an identity to install");
    h.core
        .handle_sidecar_result(&host("a"), answer(install, Vec::new(), None), h.now);
    let cmds = h.drain();
    let task = accepts(&cmds)[0].task_id.clone();
    h.update(status(&task, "a", TaskState::Running, Some("u1")));

    unreachable(&mut h, &task);
    pass(&mut h, DELAY + 5_000, &vols, Some(&[]));
    assert_eq!(h.task_of(1), None, "replaced");
    let id = h.next_offer_id();
    let cmds = h.offers(vec![offer(&id, "b", 4.0, 8192.0, 0.0)]);
    let (_, prepare_id, _) = prepares(&cmds)[0].clone();
    h.core.handle_sidecar_result(
        &host("b"),
        answer(
            prepare_id,
            taken_over(&vols, Some(DriverAttachment::Here)),
            Some("CSR"),
        ),
        h.now,
    );
    let cmds = h.drain();
    assert!(accepts(&cmds).is_empty(), "not before the identity");
    let install = install_id(&cmds).expect("the confirmed takeover goes on to the identity");
    h.core
        .handle_sidecar_result(&host("b"), answer(install, Vec::new(), None), h.now);
    let cmds = h.drain();
    let l = accepts(&cmds);
    assert_eq!(l.len(), 1, "launched: {cmds:?}");
    assert_eq!(l[0].host, host("b"));
    check(&h);
}

#[test]
fn a_driver_that_reports_no_attachment_is_taken_at_its_mount() {
    let (mut h, task, vols) = running_on_a(Fencing::Storage);
    unreachable(&mut h, &task);
    pass(&mut h, DELAY + 5_000, &vols, Some(&[]));
    assert_eq!(h.task_of(1), None);
    let cmds = place_on_b(&mut h, taken_over(&vols, None));
    assert_eq!(accepts(&cmds).len(), 1);
    check(&h);
}

#[test]
fn elasticsearch_still_listing_the_node_leaves_it_alone() {
    let (mut h, task, vols) = running_on_a(Fencing::Storage);
    unreachable(&mut h, &task);
    let cmds = pass(&mut h, 5 * DELAY, &vols, Some(&["es-1"]));
    assert!(kills(&cmds).is_empty());
    assert_eq!(h.task_of(1), Some(task));
    assert!(matches!(next_action(&h), NextAction::EsStillSeesIt { .. }));
    check(&h);
}

#[test]
fn without_an_elasticsearch_master_nothing_is_replaced() {
    let (mut h, task, vols) = running_on_a(Fencing::Storage);
    unreachable(&mut h, &task);
    // Absent for a while, then no master: the absence clock stops, and nothing happens.
    pass(&mut h, DELAY / 2, &vols, Some(&[]));
    let mut cmds = Vec::new();
    for _ in 0..20 {
        cmds.extend(pass(&mut h, 10_000, &vols, None));
        cmds.extend(no_master(&mut h));
    }
    assert!(kills(&cmds).is_empty());
    assert!(matches!(
        next_action(&h),
        NextAction::WaitOperator {
            why: OperatorWait::NoEsMaster(_),
            ..
        }
    ));
    // A master again: absence counts from now, the full delay.
    es_lists(&mut h, &[]);
    assert_eq!(
        next_action(&h),
        NextAction::ReplaceAt {
            at: h.now.plus(DELAY)
        }
    );
    // And no answer for longer than the view's age is no view, even past the replace time.
    pass(&mut h, DELAY / 2, &vols, None);
    pass(&mut h, DELAY, &vols, None);
    assert!(matches!(
        next_action(&h),
        NextAction::WaitOperator {
            why: OperatorWait::NoEsView,
            ..
        }
    ));
    assert_eq!(h.task_of(1), Some(task));
    check(&h);
}

#[test]
fn a_task_back_before_the_delay_is_not_replaced() {
    let (mut h, task, vols) = running_on_a(Fencing::Storage);
    unreachable(&mut h, &task);
    pass(&mut h, DELAY / 2, &vols, Some(&[]));
    let mut back = status(&task, "a", TaskState::Running, None);
    back.reason = Some(TaskReason::AgentReregistered);
    h.update(back);
    assert_eq!(next_action(&h), NextAction::None);
    let cmds = pass(&mut h, 2 * DELAY, &vols, Some(&["es-1"]));
    assert!(kills(&cmds).is_empty());
    assert_eq!(h.task_of(1), Some(task));
    check(&h);
}

#[test]
fn a_fenced_task_reported_unreachable_again_is_not_killed_in_a_loop() {
    let (mut h, task, vols) = running_on_a(Fencing::Storage);
    unreachable(&mut h, &task);
    let cmds = pass(&mut h, DELAY + 5_000, &vols, Some(&[]));
    assert_eq!(kills(&cmds), vec![task.clone()], "asked once");
    // The master answers that KILL as by reconciliation: UNREACHABLE. No second KILL follows.
    let mut again = status(&task, "a", TaskState::Unreachable, None);
    again.reason = Some(TaskReason::Reconciliation);
    let cmds = h.update(again);
    assert!(kills(&cmds).is_empty(), "{cmds:?}");
    check(&h);
}

#[test]
fn the_fenced_task_is_killed_as_soon_as_it_shows_up() {
    let (mut h, task, vols) = running_on_a(Fencing::Storage);
    unreachable(&mut h, &task);
    pass(&mut h, DELAY + 5_000, &vols, Some(&[]));
    place_on_b(&mut h, taken_over(&vols, Some(DriverAttachment::Here)));
    let new = h.task_of(1).unwrap_or_else(|| panic!("a new task"));
    h.update(status(&new, "b", TaskState::Running, Some("u2")));
    // The partition heals: the old task is reported again, and killed at once.
    let mut back = status(&task, "a", TaskState::Running, None);
    back.reason = Some(TaskReason::AgentReregistered);
    let cmds = h.update(back);
    assert_eq!(kills(&cmds), vec![task.clone()]);
    assert!(cmds.iter().any(|c| matches!(
        c,
        Command::Watch(WatchEvent::StrayTask { task_id, .. }) if *task_id == task
    )));
    assert_eq!(h.task_of(1), Some(new));
    let cmds = h.update(status(&task, "a", TaskState::Killed, Some("u3")));
    assert!(kills(&cmds).is_empty());
    assert!(h.core.fenced_tasks.is_empty());
    check(&h);
}

#[test]
fn an_attachment_the_driver_does_not_confirm_is_not_launched() {
    let (mut h, task, vols) = running_on_a(Fencing::Storage);
    unreachable(&mut h, &task);
    pass(&mut h, DELAY + 5_000, &vols, Some(&[]));
    for (volumes, says) in [
        (
            taken_over(&vols, Some(DriverAttachment::Elsewhere)),
            "another agent",
        ),
        (Vec::new(), "reported nothing"),
    ] {
        let cmds = place_on_b(&mut h, volumes);
        assert!(accepts(&cmds).is_empty(), "{cmds:?}");
        assert!(
            cmds.iter().any(|c| matches!(
                c,
                Command::Sidecar {
                    command: crate::SidecarCommand::Release { .. },
                    ..
                }
            )),
            "what was mounted is released: {cmds:?}"
        );
        let reason = h.core.nodes(h.now)[0]
            .last_reason
            .clone()
            .unwrap_or_default();
        assert!(
            reason.contains("not launched") && reason.contains(says),
            "{reason}"
        );
        pass(&mut h, 60_000, &vols, Some(&[]));
    }
    let cmds = place_on_b(&mut h, taken_over(&vols, Some(DriverAttachment::Here)));
    assert_eq!(accepts(&cmds).len(), 1);
    check(&h);
}

#[test]
fn a_driver_without_preemption_never_gets_a_second_writer() {
    let (mut h, task, vols) = running_on_a(Fencing::Storage);
    unreachable(&mut h, &task);
    pass(&mut h, DELAY + 5_000, &vols, Some(&[]));
    for _ in 0..5 {
        let id = h.next_offer_id();
        let cmds = h.offers(vec![offer(&id, "b", 4.0, 8192.0, 0.0)]);
        if let Some((_, command_id, _)) = prepares(&cmds).first().cloned() {
            let cmds = h.prepare_result("b", command_id, false);
            assert!(accepts(&cmds).is_empty());
        }
        pass(&mut h, 60_000, &vols, Some(&[]));
    }
    let node = &h.core.nodes(h.now)[0];
    assert!(matches!(node.phase, crate::view::NodePhase::Pending));
    assert!(
        node.last_reason
            .as_deref()
            .unwrap_or_default()
            .contains("volume busy"),
        "{node:?}"
    );
    assert!(!h.log.iter().any(|c| matches!(
        c,
        Command::Mesos(MesosCommand::Accept { launch, .. }) if launch.task_id != task
    )));
    check(&h);
}

#[test]
fn the_unreachable_clock_restarts_with_the_scheduler() {
    let (mut h, task, vols) = running_on_a(Fencing::Storage);
    unreachable(&mut h, &task);
    pass(&mut h, DELAY - 10_000, &vols, Some(&[]));
    h.restart();
    h.subscribe();
    // Reconciliation answers UNREACHABLE again: the wait starts from this process's first sight.
    h.update(status(&task, "a", TaskState::Unreachable, None));
    let since = h.now;
    es_lists(&mut h, &[]);
    assert_eq!(
        next_action(&h),
        NextAction::ReplaceAt {
            at: since.plus(DELAY)
        }
    );
    check(&h);
}

#[test]
fn only_agents_known_unreachable_may_be_marked_gone() {
    let (mut h, task, _) = running_on_a(Fencing::None);
    let refused = |h: &Harness, target: &str| match h.core.gone_agents(target) {
        Err(CoreError::NotUnreachable { why, .. }) => why,
        other => panic!("{target}: expected a refusal, got {other:?}"),
    };
    assert!(refused(&h, "a").contains("up"), "a running agent is up");
    assert!(refused(&h, agent("a").as_str()).contains("up"));
    assert!(refused(&h, "nowhere").contains("knows no UNREACHABLE task"));
    unreachable(&mut h, &task);
    let want = vec![(agent("a"), host("a"))];
    assert_eq!(h.core.gone_agents("a"), Ok(want.clone()));
    assert_eq!(h.core.gone_agents(agent("a").as_str()), Ok(want));
    check(&h);
}

#[test]
fn storage_fencing_needs_the_external_strategy_and_a_delay() {
    let mut c = config(crate::Strategy::Normal);
    c.fencing = Fencing::Storage;
    assert!(matches!(c.validate(), Err(CoreError::InvalidConfig(_))));
    let mut c = config(external(false));
    c.fencing = Fencing::Storage;
    c.unreachable_replace_after_ms = 0;
    assert!(matches!(c.validate(), Err(CoreError::InvalidConfig(_))));
    c.unreachable_replace_after_ms = 1;
    assert_eq!(c.validate(), Ok(()));
}
