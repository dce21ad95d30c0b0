//! What a peer can make the core hold: agents nothing vouches for are forgotten after
//! `max_agent_absence_ms`, and volume names no node refers to are never kept.

use crate::domain::TaskState;
use crate::ids::NodeId;
use crate::testing::*;

fn external_harness(n: u64) -> Harness {
    let mut h = Harness::new(config(external(false)));
    h.subscribe();
    h.core
        .handle_scale(n, h.now)
        .unwrap_or_else(|e| panic!("{e}"));
    h.drain();
    h
}

#[test]
fn ten_thousand_invented_agents_are_forgotten_after_the_grace() {
    let mut h = external_harness(1);
    let grace = h.core.config().max_agent_absence_ms;
    for i in 0..10_000 {
        let name = format!("invented-{i}.example");
        h.core
            .handle_sidecar_hello(hello(&name, Some("z"), None, &format!("i-{i}")), h.now);
        h.core
            .handle_sidecar_report(&host(&name), report(1, Vec::new(), 0), h.now);
        h.core.handle_sidecar_disconnected(&host(&name), h.now);
    }
    h.drain();
    let held = h.core.footprint();
    assert_eq!(held.sidecars, 10_000);
    // The Hellos' agent ids are the sidecars' claims, not Mesos's word.
    assert_eq!(held.mesos_agents, 0);
    h.advance(grace - 1);
    assert_eq!(
        h.core.footprint().sidecars,
        10_000,
        "forgotten before the grace"
    );
    h.advance(1);
    let left = h.core.footprint();
    assert_eq!(
        (left.sidecars, left.absent, left.sidecar_volumes),
        (0, 0, 0),
        "{left:?}"
    );
    assert!(h.core.agents(h.now).is_empty());
    check(&h);
}

#[test]
fn an_agent_mesos_knows_or_a_node_names_is_kept_without_its_sidecar() {
    let mut h = external_harness(1);
    let grace = h.core.config().max_agent_absence_ms;
    let vols = h.core.persisted().slots[&NodeId(1)].volumes.clone();
    // "known" offered once and then went quiet (offers suppressed); "runs" holds node 1's task.
    for name in ["known", "runs"] {
        h.sidecar(name, None, None, &vols);
    }
    let id = h.next_offer_id();
    let cmds = h.offers(vec![offer(&id, "runs", 4.0, 8192.0, 0.0)]);
    let (_, command_id, _) = prepares(&cmds)[0].clone();
    h.prepare_result("runs", command_id, true);
    let task = h.task_of(1).expect("node 1 launched");
    // RUNNING: the sidecar's prepare mount is released, so only the task names "runs".
    h.update(status(&task, "runs", TaskState::Running, Some("u-1")));
    assert_eq!(h.core.persisted().slots[&NodeId(1)].mount_host, None);
    let id = h.next_offer_id();
    h.offers(vec![offer(&id, "known", 4.0, 8192.0, 0.0)]);
    // "runs" stops being known to Mesos (agent removed) but its node's task still names it.
    h.core.handle_agent_lost(&agent("runs"), h.now);
    for name in ["known", "runs"] {
        h.core.handle_sidecar_disconnected(&host(name), h.now);
    }
    h.drain();
    h.advance(grace * 3);
    let hosts: Vec<String> = h
        .core
        .agents(h.now)
        .into_iter()
        .map(|a| a.host.as_str().to_owned())
        .collect();
    assert_eq!(hosts, ["known", "runs"]);
    // Once the task is terminal and no mount is on record, nothing names "runs" any more.
    h.update(status(&task, "runs", TaskState::Lost, None));
    h.advance(grace * 2);
    let hosts: Vec<String> = h
        .core
        .agents(h.now)
        .into_iter()
        .map(|a| a.host.as_str().to_owned())
        .collect();
    assert!(!hosts.contains(&"runs".to_owned()), "{hosts:?}");
    assert!(hosts.contains(&"known".to_owned()), "{hosts:?}");
    check(&h);
}

#[test]
fn a_returning_sidecar_is_not_forgotten() {
    let mut h = external_harness(1);
    let grace = h.core.config().max_agent_absence_ms;
    h.sidecar("a", None, None, &[]);
    h.core.handle_sidecar_disconnected(&host("a"), h.now);
    h.advance(grace / 2);
    h.core
        .handle_sidecar_hello(hello("a", None, None, "i-1"), h.now);
    h.drain();
    h.advance(grace * 2);
    assert_eq!(h.core.footprint().sidecars, 1);
    check(&h);
}

#[test]
fn a_million_reported_volume_names_no_node_refers_to_are_not_held() {
    let mut h = external_harness(1);
    let grace = h.core.config().max_agent_absence_ms;
    let owned = h.core.persisted().slots[&NodeId(1)].volumes.clone();
    h.core
        .handle_sidecar_hello(hello("flood", None, None, "i-1"), h.now);
    // As the shell lets them through: at most 10,000 volumes per report.
    for batch in 0..100u64 {
        let mut vols: Vec<_> = (0..10_000)
            .map(|i| volume(&vol(&format!("junk-{batch}-{i}")), true, None, true))
            .collect();
        vols.extend(owned.iter().map(|v| volume(v, true, None, false)));
        h.core
            .handle_sidecar_report(&host("flood"), report(batch + 1, vols, 0), h.now);
        h.drain();
    }
    let held = h.core.footprint();
    assert_eq!(held.sidecar_volumes, owned.len(), "{held:?}");
    assert!(held.volume_index <= owned.len(), "{held:?}");
    assert_eq!(held.stray_released, 0, "{held:?}");
    // The owned names are still known to placement.
    let views = h.core.volumes();
    assert!(views.iter().all(|v| v.exists == Some(true)), "{views:?}");
    h.core.handle_sidecar_disconnected(&host("flood"), h.now);
    h.drain();
    h.advance(grace);
    let left = h.core.footprint();
    assert_eq!((left.sidecars, left.sidecar_volumes), (0, 0), "{left:?}");
    assert!(left.volume_index <= owned.len(), "{left:?}");
    check(&h);
}

#[test]
fn a_forgotten_agent_leaves_no_decline_reason_or_attributes() {
    let mut h = external_harness(1);
    let grace = h.core.config().max_agent_absence_ms;
    // No sidecar on "gone": its offer is declined, and the round keeps the reason and the attributes.
    let mut o = offer(&h.next_offer_id(), "gone", 4.0, 8192.0, 0.0);
    o.attributes = vec![(
        "rack".into(),
        crate::domain::AttributeValue::Text("r1".into()),
    )];
    h.offers(vec![o]);
    let held = h.core.footprint();
    assert_eq!(
        (held.decline_reasons, held.host_attributes),
        (1, 1),
        "{held:?}"
    );
    assert!(
        h.core
            .agents(h.now)
            .iter()
            .any(|a| a.host.as_str() == "gone" && a.last_decline.is_some())
    );
    h.core.handle_agent_lost(&agent("gone"), h.now);
    h.drain();
    h.advance(grace * 2);
    let left = h.core.footprint();
    assert_eq!(
        (
            left.decline_reasons,
            left.host_attributes,
            left.mesos_agents
        ),
        (0, 0, 0),
        "{left:?}"
    );
    assert!(h.core.agents(h.now).is_empty());
    check(&h);
}

#[test]
fn an_agent_mesos_lost_is_known_again_when_it_offers_under_the_same_id() {
    let mut h = external_harness(1);
    let o = |h: &mut Harness| {
        let mut o = offer(&h.next_offer_id(), "back", 4.0, 8192.0, 0.0);
        o.attributes = vec![(
            "rack".into(),
            crate::domain::AttributeValue::Text("r1".into()),
        )];
        o
    };
    let first = o(&mut h);
    h.offers(vec![first]);
    assert_eq!(h.core.footprint().mesos_agents, 1);
    h.core.handle_agent_lost(&agent("back"), h.now);
    h.drain();
    assert_eq!(h.core.footprint().mesos_agents, 0);
    // The same agent id, host and attributes as the offer noted before the loss.
    let again = o(&mut h);
    h.offers(vec![again]);
    assert_eq!(h.core.footprint().mesos_agents, 1);
    assert_eq!(h.core.agent_hosts.get(&agent("back")), Some(&host("back")));
    check(&h);
}
