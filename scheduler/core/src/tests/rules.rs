//! Deterministic tests with a virtual clock, one (or a few) per rule of the core.

use crate::command::{Command, MesosCommand, SidecarCommand, WatchEvent, env};
use crate::config::{Constraint, Containerizer, Strategy};
use crate::domain::{ALL_STATES, AttributeValue, TaskReason, TaskState};
use crate::error::CoreError;
use crate::ids::{Millis, NodeId};
use crate::state::{PersistedState, StateWrite};
use crate::testing::*;
use crate::view::NodePhase;
use crate::{Config, Core};

/// Every test ends here: no stream violations, the store equals the core's belief, invariants hold.
fn normal_harness(n: u64) -> Harness {
    let mut h = Harness::new(config(crate::Strategy::Normal));
    h.subscribe();
    must_scale(&mut h, n);
    h
}

fn must_scale(h: &mut Harness, n: u64) -> crate::ScalePlan {
    let plan = h
        .core
        .handle_scale(n, h.now)
        .unwrap_or_else(|e| panic!("{e}"));
    h.drain();
    plan
}

fn big_offer(h: &mut Harness, host_name: &str) -> crate::domain::Offer {
    let id = h.next_offer_id();
    offer(&id, host_name, 4.0, 8192.0, 1000.0)
}

fn reason_of(h: &Harness, node: u64) -> String {
    h.core
        .nodes(h.now)
        .into_iter()
        .find(|n| n.node_id == NodeId(node))
        .and_then(|n| n.last_reason)
        .unwrap_or_default()
}

fn decline_of(h: &Harness, host_name: &str) -> String {
    h.core
        .agents(h.now)
        .into_iter()
        .find(|a| a.host.as_str() == host_name)
        .and_then(|a| a.last_decline)
        .map(|r| r.to_string())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------------
// Node ids and scaling
// ---------------------------------------------------------------------------------------------------

#[test]
fn ids_are_lowest_free_from_the_first_id_and_unbounded() {
    let mut cfg = config(crate::Strategy::Normal);
    cfg.first_id = 5;
    let mut h = Harness::new(cfg);
    let plan = must_scale(&mut h, 3_000);
    assert_eq!(plan.start.first(), Some(&NodeId(5)));
    assert_eq!(plan.start.last(), Some(&NodeId(3_004)));
    assert_eq!(plan.start.len(), 3_000);
    let rec = &h.core.persisted().slots[&NodeId(2_500)];
    assert_eq!(rec.volumes, vec![vol("es2500config"), vol("es2500data")]);
    must_scale(&mut h, 2_990);
    let plan = must_scale(&mut h, 3_001);
    assert_eq!(plan.start, (2_995..=3_005).map(NodeId).collect::<Vec<_>>());
    check(&h);
}

#[test]
fn scale_down_stops_highest_ids_first_and_keeps_their_volumes() {
    let mut h = normal_harness(5);
    h.launch_running(&["a", "b", "c", "d", "e"]);
    let t4 = h.task_of(4).unwrap_or_else(|| panic!("node 4 launched"));
    let t5 = h.task_of(5).unwrap_or_else(|| panic!("node 5 launched"));
    let plan = h
        .core
        .handle_scale(3, h.now)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plan.stop, vec![NodeId(5), NodeId(4)]);
    let cmds = h.drain();
    let kills: Vec<_> = cmds
        .iter()
        .filter_map(|c| match c {
            Command::Mesos(MesosCommand::Kill { task_id, .. }) => Some(task_id.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(kills, vec![t5.clone(), t4.clone()]);
    let rec5 = &h.core.persisted().slots[&NodeId(5)];
    assert!(rec5.removed);
    assert_eq!(rec5.volumes, vec![vol("es5config"), vol("es5data")]);
    h.update(status(&t5, "e", TaskState::Killed, Some("k5")));
    h.update(status(&t4, "d", TaskState::Killed, Some("k4")));
    // Scale back up: the same ids, the same volumes, the next generation.
    let plan = must_scale(&mut h, 5);
    assert_eq!(plan.start, vec![NodeId(4), NodeId(5)]);
    let offers = vec![big_offer(&mut h, "d"), big_offer(&mut h, "e")];
    let cmds = h.offers(offers);
    let launched: Vec<_> = accepts(&cmds)
        .into_iter()
        .map(|l| (l.node_id, l.task_id.to_string()))
        .collect();
    assert_eq!(
        launched,
        vec![
            (NodeId(4), "es-4.2".to_owned()),
            (NodeId(5), "es-5.2".to_owned())
        ]
    );
    check(&h);
}

#[test]
fn scale_down_of_a_node_whose_kill_is_unanswered_keeps_fencing_it() {
    let mut h = normal_harness(2);
    h.launch_running(&["a", "b"]);
    must_scale(&mut h, 1);
    must_scale(&mut h, 2);
    // Node 2's old task was never confirmed dead: no relaunch.
    let o = big_offer(&mut h, "c");
    let cmds = h.offers(vec![o]);
    assert!(accepts(&cmds).is_empty());
    check(&h);
}

// ---------------------------------------------------------------------------------------------------
// Offer strategies
// ---------------------------------------------------------------------------------------------------

#[test]
fn normal_strategy_requires_disk_cpus_mem_and_two_ports() {
    let mut h = normal_harness(1);
    let mut no_ports = offer("o-p", "p", 4.0, 8192.0, 1000.0);
    no_ports.ports = vec![crate::domain::PortRange {
        begin: 31000,
        end: 31000,
    }];
    let cmds = h.offers(vec![
        offer("o-d", "d", 4.0, 8192.0, 50.0),
        offer("o-c", "c", 0.5, 8192.0, 1000.0),
        offer("o-m", "m", 4.0, 512.0, 1000.0),
        no_ports,
    ]);
    assert!(accepts(&cmds).is_empty());
    assert_eq!(declines(&cmds).len(), 4);
    assert!(
        decline_of(&h, "d").contains("disk 50"),
        "{}",
        decline_of(&h, "d")
    );
    assert!(decline_of(&h, "c").contains("cpus"));
    assert!(decline_of(&h, "m").contains("mem"));
    assert!(decline_of(&h, "p").contains("two ports"));
    let cmds = h.offers(vec![offer("o-ok", "ok", 1.0, 1024.0, 100.0)]);
    let l = accepts(&cmds);
    assert_eq!(l.len(), 1);
    assert_eq!((l[0].http_port, l[0].transport_port), (31000, 31001));
    check(&h);
}

#[test]
fn pinned_ports_are_taken_from_the_offer_or_the_offer_does_not_fit() {
    let mut cfg = config(crate::Strategy::Normal);
    cfg.http_port = Some(9200);
    cfg.transport_port = Some(9300);
    let mut h = Harness::new(cfg);
    h.subscribe();
    must_scale(&mut h, 2);
    let with = |id: &str, host: &str, ranges: &[(u64, u64)]| {
        let mut o = offer(id, host, 4.0, 8192.0, 1000.0);
        o.ports = ranges
            .iter()
            .map(|&(begin, end)| crate::domain::PortRange { begin, end })
            .collect();
        o
    };
    // Plenty of ports, but not the pinned transport port: no fit, and the reason names it.
    let cmds = h.offers(vec![with("o-1", "a", &[(9200, 9200), (31000, 31009)])]);
    assert!(accepts(&cmds).is_empty());
    let why = decline_of(&h, "a");
    assert!(
        why.contains("transport port 9300 (--transport-port)"),
        "{why}"
    );
    let node = &h.core.nodes(h.now)[0];
    assert!(
        node.last_reason
            .as_deref()
            .is_some_and(|r| r.contains("9300")),
        "the pending node says why: {node:?}"
    );
    let cmds = h.offers(vec![with("o-2", "b", &[(9200, 9200), (9300, 9300)])]);
    let l = accepts(&cmds);
    assert_eq!((l[0].http_port, l[0].transport_port), (9200, 9300));
    check(&h);
}

#[test]
fn one_pinned_port_leaves_the_other_to_the_first_free_offered_port() {
    let o = |ranges: &[(u64, u64)]| crate::domain::Offer {
        ports: ranges
            .iter()
            .map(|&(begin, end)| crate::domain::PortRange { begin, end })
            .collect(),
        ..offer("o", "a", 1.0, 1.0, 1.0)
    };
    assert_eq!(
        o(&[(9200, 9201)]).node_ports(Some(9200), None),
        Ok((9200, 9201))
    );
    assert_eq!(
        o(&[(9200, 9201)]).node_ports(None, Some(9200)),
        Ok((9201, 9200))
    );
    assert_eq!(
        o(&[(9200, 9200)]).node_ports(Some(9200), None),
        Err(crate::command::Reason::Ports)
    );
    assert_eq!(
        o(&[(31000, 31009)]).node_ports(Some(9200), None),
        Err(crate::command::Reason::PinnedPortNotOffered {
            name: "http".into(),
            port: 9200
        })
    );
    assert_eq!(
        o(&[(31000, 31009)]).node_ports(None, None),
        Ok((31000, 31001))
    );
}

fn external_harness(n: u64, auto_create: bool) -> Harness {
    let mut h = Harness::new(config(external(auto_create)));
    h.subscribe();
    must_scale(&mut h, n);
    h
}

fn node_volumes(h: &Harness, node: u64) -> Vec<crate::ids::VolumeName> {
    h.core.persisted().slots[&NodeId(node)].volumes.clone()
}

#[test]
fn external_strategy_skips_the_disk_check_but_needs_a_fresh_sidecar() {
    let mut h = external_harness(1, false);
    let vols = node_volumes(&h, 1);
    // No sidecar at all.
    let cmds = h.offers(vec![offer("o-1", "a", 4.0, 8192.0, 0.0)]);
    assert!(prepares(&cmds).is_empty());
    assert!(decline_of(&h, "a").contains("no tether-sidecar"));
    // Sidecar connected and fresh: disk 0 is fine, a Prepare goes out.
    h.sidecar("a", None, None, &vols);
    let cmds = h.offers(vec![offer("o-2", "a", 4.0, 8192.0, 0.0)]);
    assert_eq!(prepares(&cmds).len(), 1);
    check(&h);
}

#[test]
fn external_strategy_records_every_rejection_reason() {
    let mut h = external_harness(1, false);
    let vols = node_volumes(&h, 1);
    // Stale sidecar.
    h.sidecar("stale", None, None, &vols);
    h.advance(h.core.config().freshness_ms() + 1);
    // Disconnected sidecar.
    h.sidecar("gone", None, None, &vols);
    h.core.handle_sidecar_disconnected(&host("gone"), h.now);
    // Unhealthy driver.
    h.core
        .handle_sidecar_hello(hello("sick", None, None, "i"), h.now);
    let mut r = report(1, vec![], 0);
    r.driver_healthy = false;
    r.driver_error = Some("connection refused".into());
    h.core.handle_sidecar_report(&host("sick"), r, h.now);
    // No attach slots.
    h.core
        .handle_sidecar_hello(hello("full", None, Some(4), "i"), h.now);
    h.core
        .handle_sidecar_report(&host("full"), report(1, vec![], 3), h.now);
    h.drain();
    let offers =
        ["stale", "gone", "sick", "full"].map(|x| offer(&format!("o-{x}"), x, 4.0, 8192.0, 0.0));
    let cmds = h.offers(offers.to_vec());
    assert!(prepares(&cmds).is_empty());
    assert!(
        decline_of(&h, "stale").contains("old"),
        "{}",
        decline_of(&h, "stale")
    );
    assert!(decline_of(&h, "gone").contains("disconnected"));
    assert!(decline_of(&h, "sick").contains("connection refused"));
    assert!(decline_of(&h, "full").contains("attach slots 3/4"));
    check(&h);
}

#[test]
fn external_strategy_checks_volume_existence_zone_and_attachment() {
    let mut h = external_harness(1, false);
    let vols = node_volumes(&h, 1);
    // Volumes reported missing, auto-create off.
    h.core
        .handle_sidecar_hello(hello("a", Some("z1"), None, "i"), h.now);
    let missing = vols.iter().map(|v| volume(v, false, None, false)).collect();
    h.core
        .handle_sidecar_report(&host("a"), report(1, missing, 0), h.now);
    h.drain();
    let cmds = h.offers(vec![offer("o-1", "a", 4.0, 8192.0, 0.0)]);
    assert!(prepares(&cmds).is_empty());
    assert!(
        reason_of(&h, 1).contains("does not exist"),
        "{}",
        reason_of(&h, 1)
    );
    // Volumes exist in zone z2: the z1 agent is refused.
    let in_z2 = vols
        .iter()
        .map(|v| volume(v, true, Some("z2"), false))
        .collect();
    h.core
        .handle_sidecar_report(&host("a"), report(2, in_z2, 0), h.now);
    let cmds = h.offers(vec![offer("o-2", "a", 4.0, 8192.0, 0.0)]);
    assert!(prepares(&cmds).is_empty());
    assert!(
        reason_of(&h, 1).contains("from zone z2"),
        "{}",
        reason_of(&h, 1)
    );
    // Attached to another live agent b (in z2): a z2 agent c is refused, only b would do.
    h.core
        .handle_sidecar_hello(hello("b", Some("z2"), None, "i"), h.now);
    let attached = vols
        .iter()
        .map(|v| volume(v, true, Some("z2"), true))
        .collect();
    h.core
        .handle_sidecar_report(&host("b"), report(1, attached, 2), h.now);
    h.sidecar("c", Some("z2"), None, &vols);
    let cmds = h.offers(vec![offer("o-3", "c", 4.0, 8192.0, 0.0)]);
    assert!(prepares(&cmds).is_empty());
    assert!(
        reason_of(&h, 1).contains("held on agent b"),
        "{}",
        reason_of(&h, 1)
    );
    let cmds = h.offers(vec![
        offer("o-4", "c", 4.0, 8192.0, 0.0),
        offer("o-5", "b", 4.0, 8192.0, 0.0),
    ]);
    let p = prepares(&cmds);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].0, host("b"));
    check(&h);
}

#[test]
fn auto_create_places_unreported_volumes_and_passes_the_zone() {
    let mut h = external_harness(1, true);
    h.sidecar("a", Some("z1"), None, &[]);
    let mut o = offer("o-1", "a", 4.0, 8192.0, 0.0);
    o.zone = Some("z1".into());
    let cmds = h.offers(vec![o]);
    let prep = cmds.iter().find_map(|c| match c {
        Command::Sidecar {
            command:
                SidecarCommand::Prepare {
                    create_missing,
                    create_options,
                    ..
                },
            ..
        } => Some((*create_missing, create_options.clone())),
        _ => None,
    });
    let (create, opts) = prep.unwrap_or_else(|| panic!("a prepare: {cmds:?}"));
    assert!(create);
    assert!(opts.contains(&("availabilityZone".to_owned(), "z1".to_owned())));
    check(&h);
}

#[test]
fn the_best_offer_is_chosen_not_the_first() {
    let mut h = normal_harness(1);
    let cmds = h.offers(vec![
        offer("o-small", "small", 1.0, 1024.0, 100.0),
        offer("o-big", "big", 8.0, 16384.0, 100.0),
    ]);
    let l = accepts(&cmds);
    assert_eq!(l.len(), 1);
    assert_eq!(l[0].host, host("big"));
    assert!(declines(&cmds).iter().any(|(o, _)| o == "o-small"));
    // External: more free attach slots wins over more resources.
    let mut h = external_harness(1, false);
    let vols = node_volumes(&h, 1);
    h.core
        .handle_sidecar_hello(hello("roomy", None, Some(40), "i"), h.now);
    h.core.handle_sidecar_report(
        &host("roomy"),
        report(
            1,
            vols.iter().map(|v| volume(v, true, None, false)).collect(),
            0,
        ),
        h.now,
    );
    h.core
        .handle_sidecar_hello(hello("tight", None, Some(40), "i"), h.now);
    h.core.handle_sidecar_report(
        &host("tight"),
        report(
            1,
            vols.iter().map(|v| volume(v, true, None, false)).collect(),
            37,
        ),
        h.now,
    );
    h.drain();
    let cmds = h.offers(vec![
        offer("o-t", "tight", 16.0, 65536.0, 0.0),
        offer("o-r", "roomy", 1.0, 1024.0, 0.0),
    ]);
    assert_eq!(prepares(&cmds)[0].0, host("roomy"));
    check(&h);
}

#[test]
fn a_relaunch_prefers_the_previous_agent() {
    let mut h = normal_harness(1);
    h.launch_running(&["home"]);
    let t = h.task_of(1).unwrap_or_else(|| panic!("launched"));
    h.update(status(&t, "home", TaskState::Failed, Some("f")));
    h.advance(60_000);
    let cmds = h.offers(vec![
        offer("o-x", "bigger", 16.0, 65536.0, 100.0),
        offer("o-h", "home", 1.0, 1024.0, 100.0),
    ]);
    assert_eq!(accepts(&cmds)[0].host, host("home"));
    check(&h);
}

#[test]
fn at_most_one_node_per_agent() {
    let mut h = normal_harness(2);
    let cmds = h.offers(vec![
        offer("o-1", "a", 8.0, 16384.0, 1000.0),
        offer("o-2", "a", 8.0, 16384.0, 1000.0),
    ]);
    assert_eq!(accepts(&cmds).len(), 1);
    assert!(
        decline_of(&h, "a").contains("already runs"),
        "{}",
        decline_of(&h, "a")
    );
    // Later offers from that agent are refused too while the node lives.
    let cmds = h.offers(vec![offer("o-3", "a", 8.0, 16384.0, 1000.0)]);
    assert!(accepts(&cmds).is_empty());
    check(&h);
}

#[test]
fn unique_and_cluster_constraints() {
    let mut cfg = config(crate::Strategy::Normal);
    cfg.constraints = vec![
        Constraint::parse("rack:UNIQUE").unwrap_or_else(|e| panic!("{e}")),
        Constraint::parse("dc:CLUSTER:east").unwrap_or_else(|e| panic!("{e}")),
    ];
    assert!(Constraint::parse("rack:LIKE:x").is_err());
    let mut h = Harness::new(cfg);
    h.subscribe();
    must_scale(&mut h, 3);
    let with = |id: &str, hn: &str, rack: &str, dc: &str| {
        let mut o = offer(id, hn, 4.0, 8192.0, 1000.0);
        o.attributes = vec![
            ("rack".into(), AttributeValue::Text(rack.into())),
            ("dc".into(), AttributeValue::Text(dc.into())),
        ];
        o
    };
    let cmds = h.offers(vec![
        with("o-1", "a", "r1", "east"),
        with("o-2", "b", "r1", "east"),
        with("o-3", "c", "r2", "east"),
        with("o-4", "d", "r3", "west"),
    ]);
    let hosts: Vec<_> = accepts(&cmds)
        .into_iter()
        .map(|l| l.host.to_string())
        .collect();
    assert_eq!(hosts.len(), 2);
    assert!(hosts.contains(&"c".to_owned()));
    assert!(
        decline_of(&h, "d").contains("CLUSTER"),
        "{}",
        decline_of(&h, "d")
    );
    let r1_loser = if hosts.contains(&"a".to_owned()) {
        "b"
    } else {
        "a"
    };
    assert!(
        decline_of(&h, r1_loser).contains("UNIQUE"),
        "{}",
        decline_of(&h, r1_loser)
    );
    check(&h);
}

// ---------------------------------------------------------------------------------------------------
// Prepare, then launch
// ---------------------------------------------------------------------------------------------------

#[test]
fn prepare_then_persist_then_accept_then_release_on_running() {
    let mut h = external_harness(1, false);
    let vols = node_volumes(&h, 1);
    h.sidecar("a", None, None, &vols);
    let cmds = h.offers(vec![offer("o-1", "a", 4.0, 8192.0, 0.0)]);
    assert!(
        accepts(&cmds).is_empty(),
        "no launch before the volumes are prepared"
    );
    assert!(declines(&cmds).is_empty(), "the offer is held");
    let (_, cid, node) = prepares(&cmds)[0].clone();
    assert_eq!(node, NodeId(1));
    let cmds = h.prepare_result("a", cid, true);
    let persist_at = cmds.iter().position(|c| {
        matches!(c, Command::Persist(StateWrite::Slot(r)) if r.task.as_ref().is_some_and(|t| t.task_id.as_str() == "es-1.1"))
    });
    let accept_at = cmds
        .iter()
        .position(|c| matches!(c, Command::Mesos(MesosCommand::Accept { .. })));
    assert!(
        persist_at.is_some() && accept_at.is_some() && persist_at < accept_at,
        "{cmds:?}"
    );
    let l = &accepts(&cmds)[0];
    assert_eq!(l.volumes[0].driver.as_deref(), Some("rexray"));
    assert_eq!(l.disk_mb, 0.0);
    let t = h.task_of(1).unwrap_or_else(|| panic!("task"));
    let cmds = h.update(status(&t, "a", TaskState::Starting, Some("u1")));
    assert!(!cmds.iter().any(|c| matches!(
        c,
        Command::Sidecar {
            command: SidecarCommand::Release { .. },
            ..
        }
    )));
    let cmds = h.update(status(&t, "a", TaskState::Running, Some("u2")));
    let released = cmds.iter().find_map(|c| match c {
        Command::Sidecar {
            host,
            command: SidecarCommand::Release { volumes, .. },
        } => Some((host.clone(), volumes.clone())),
        _ => None,
    });
    assert_eq!(released, Some((host("a"), vols)));
    check(&h);
}

#[test]
fn rescind_during_prepare_releases_and_backs_off_then_tries_elsewhere() {
    let mut h = external_harness(1, false);
    let vols = node_volumes(&h, 1);
    h.sidecar("a", None, None, &vols);
    h.sidecar("b", None, None, &vols);
    let cmds = h.offers(vec![offer("o-1", "a", 4.0, 8192.0, 0.0)]);
    let (_, cid, _) = prepares(&cmds)[0].clone();
    h.core.handle_rescind(
        &crate::ids::OfferId::new("o-1").unwrap_or_else(|e| panic!("{e}")),
        h.now,
    );
    let cmds = h.drain();
    assert!(cmds.iter().any(|c| matches!(c, Command::Sidecar { host, command: SidecarCommand::Release { .. } } if host.as_str() == "a")));
    assert!(
        declines(&cmds).is_empty(),
        "a rescinded offer no longer exists"
    );
    // Within the backoff nothing is placed.
    let cmds = h.offers(vec![offer("o-2", "b", 4.0, 8192.0, 0.0)]);
    assert!(prepares(&cmds).is_empty());
    assert!(reason_of(&h, 1).contains("rescinded") || reason_of(&h, 1).contains("backing off"));
    // The late answer to the abandoned prepare is released again.
    let cmds = h.prepare_result("a", cid, true);
    assert!(cmds.iter().any(|c| matches!(
        c,
        Command::Sidecar {
            command: SidecarCommand::Release { .. },
            ..
        }
    )));
    h.advance(h.core.config().prepare_hold_ms + 1);
    h.sidecar("b", None, None, &vols);
    let cmds = h.offers(vec![offer("o-3", "b", 4.0, 8192.0, 0.0)]);
    assert_eq!(prepares(&cmds)[0].0, host("b"));
    check(&h);
}

#[test]
fn prepare_failure_declines_releases_and_backs_off_exponentially() {
    let mut h = external_harness(1, false);
    let vols = node_volumes(&h, 1);
    h.sidecar("a", None, None, &vols);
    let mut waits = Vec::new();
    for round in 0..4 {
        let refresh = report(
            100 + round,
            vols.iter().map(|v| volume(v, true, None, false)).collect(),
            0,
        );
        h.core.handle_sidecar_report(&host("a"), refresh, h.now);
        let o = h.next_offer_id();
        let cmds = h.offers(vec![offer(&o, "a", 4.0, 8192.0, 0.0)]);
        let (_, cid, _) = prepares(&cmds)[0].clone();
        let cmds = h.prepare_result("a", cid, false);
        assert!(declines(&cmds).iter().any(|(x, _)| *x == o));
        assert!(cmds.iter().any(|c| matches!(
            c,
            Command::Sidecar {
                command: SidecarCommand::Release { .. },
                ..
            }
        )));
        assert!(reason_of(&h, 1).contains("volume busy"));
        let node = h
            .core
            .nodes(h.now)
            .into_iter()
            .find(|n| n.node_id == NodeId(1))
            .unwrap_or_else(|| panic!("node"));
        waits.push(node.not_before.since(h.now));
        h.now = node.not_before;
        h.core.handle_timeout(h.now);
        h.drain();
    }
    assert_eq!(waits, vec![1_000, 2_000, 4_000, 8_000]);
    check(&h);
}

#[test]
fn an_offer_is_held_only_for_the_bounded_prepare_time() {
    let mut h = external_harness(1, false);
    let vols = node_volumes(&h, 1);
    h.sidecar("a", None, None, &vols);
    h.offers(vec![offer("o-1", "a", 4.0, 8192.0, 0.0)]);
    assert_eq!(
        h.core.poll_timeout(),
        Some(Millis(h.core.config().prepare_hold_ms))
    );
    let cmds = h.advance(h.core.config().prepare_hold_ms);
    assert!(declines(&cmds).iter().any(|(o, _)| o == "o-1"));
    assert!(reason_of(&h, 1).contains("hold"), "{}", reason_of(&h, 1));
    check(&h);
}

#[test]
fn a_sidecar_disconnect_during_prepare_declines_and_releases_on_return() {
    let mut h = external_harness(1, false);
    let vols = node_volumes(&h, 1);
    h.sidecar("a", None, None, &vols);
    h.offers(vec![offer("o-1", "a", 4.0, 8192.0, 0.0)]);
    h.core.handle_sidecar_disconnected(&host("a"), h.now);
    let cmds = h.drain();
    assert!(declines(&cmds).iter().any(|(o, _)| o == "o-1"));
    assert!(
        !cmds.iter().any(|c| matches!(c, Command::Sidecar { .. })),
        "nothing is sent to a closed stream"
    );
    h.core
        .handle_sidecar_hello(hello("a", None, None, "i-1"), h.now);
    let cmds = h.drain();
    let kinds: Vec<_> = cmds
        .iter()
        .filter_map(|c| match c {
            Command::Sidecar {
                command: SidecarCommand::Welcome { .. },
                ..
            } => Some("welcome"),
            Command::Sidecar {
                command: SidecarCommand::Release { .. },
                ..
            } => Some("release"),
            _ => None,
        })
        .collect();
    assert_eq!(kinds, vec!["welcome", "release"]);
    check(&h);
}

// ---------------------------------------------------------------------------------------------------
// Fencing and task states
// ---------------------------------------------------------------------------------------------------

#[test]
fn terminal_states_are_exactly_the_documented_ones() {
    let terminal: Vec<_> = ALL_STATES
        .iter()
        .copied()
        .filter(|s| s.is_terminal())
        .collect();
    use TaskState::*;
    assert_eq!(
        terminal,
        vec![
            Finished,
            Failed,
            Killed,
            Error,
            Lost,
            Dropped,
            Gone,
            GoneByOperator
        ]
    );
    for s in ALL_STATES {
        assert_eq!(TaskState::from_mesos(s.as_mesos()), Some(s));
    }
}

#[test]
fn every_terminal_state_frees_the_slot_and_no_other_state_does() {
    for s in ALL_STATES {
        let mut h = normal_harness(1);
        h.launch_running(&["a"]);
        let t = h.task_of(1).unwrap_or_else(|| panic!("launched"));
        h.update(status(&t, "a", s, None));
        h.advance(120_000);
        let o = big_offer(&mut h, "b");
        let cmds = h.offers(vec![o]);
        assert_eq!(accepts(&cmds).len(), usize::from(s.is_terminal()), "{s:?}");
        check(&h);
    }
}

#[test]
fn unreachable_fences_the_node_until_a_terminal_state() {
    let mut h = normal_harness(1);
    h.launch_running(&["a"]);
    let t = h.task_of(1).unwrap_or_else(|| panic!("launched"));
    h.update(status(&t, "a", TaskState::Unreachable, None));
    h.core.handle_agent_lost(&agent("a"), h.now);
    h.drain();
    for _ in 0..3 {
        h.advance(600_000);
        let o = big_offer(&mut h, "b");
        assert!(accepts(&h.offers(vec![o])).is_empty());
    }
    // Out of order: a stale RUNNING then the terminal GONE; a duplicate terminal changes nothing.
    h.update(status(&t, "a", TaskState::Running, None));
    h.update(status(&t, "a", TaskState::Gone, None));
    h.update(status(&t, "a", TaskState::Running, Some("late")));
    h.advance(10_000);
    let o = big_offer(&mut h, "b");
    let cmds = h.offers(vec![o]);
    assert_eq!(accepts(&cmds)[0].task_id.as_str(), "es-1.2");
    check(&h);
}

#[test]
fn a_node_lost_with_its_agent_is_placed_at_once_a_failed_one_backs_off() {
    let lost = |state, reason: Option<TaskReason>| {
        let mut h = normal_harness(1);
        h.launch_running(&["a"]);
        let t = h.task_of(1).unwrap_or_else(|| panic!("launched"));
        let mut s = status(&t, "a", state, None);
        s.reason = reason;
        h.update(s);
        // The very next offer, with no time passing.
        let o = big_offer(&mut h, "b");
        let placed = !accepts(&h.offers(vec![o])).is_empty();
        check(&h);
        placed
    };
    assert!(lost(TaskState::Gone, None));
    assert!(lost(TaskState::GoneByOperator, None));
    assert!(lost(TaskState::Lost, Some(TaskReason::AgentRemoved)));
    assert!(lost(TaskState::Lost, Some(TaskReason::AgentDisconnected)));
    assert!(!lost(TaskState::Lost, Some(TaskReason::ExecutorTerminated)));
    assert!(!lost(
        TaskState::Failed,
        Some(TaskReason::CommandExecutorFailed)
    ));
    assert!(!lost(TaskState::Failed, Some(TaskReason::AgentRemoved)));
    assert!(!lost(TaskState::Killed, None));
}

#[test]
fn replace_without_force_is_refused_while_the_task_may_live_and_force_overrides() {
    let mut h = normal_harness(1);
    h.launch_running(&["a"]);
    let t = h.task_of(1).unwrap_or_else(|| panic!("launched"));
    h.update(status(&t, "a", TaskState::Unreachable, None));
    let err = h.core.handle_replace(NodeId(1), false, h.now);
    assert!(
        matches!(err, Err(CoreError::TaskMayBeAlive { .. })),
        "{err:?}"
    );
    assert!(matches!(
        h.core.handle_replace(NodeId(9), true, h.now),
        Err(CoreError::UnknownNode(_))
    ));
    h.core
        .handle_replace(NodeId(1), true, h.now)
        .unwrap_or_else(|e| panic!("{e}"));
    let cmds = h.drain();
    assert!(has(
        &cmds,
        &MesosCommand::Kill {
            task_id: t.clone(),
            agent_id: Some(agent("a"))
        }
    ));
    assert!(h.core.persisted().slots[&NodeId(1)].forced);
    let o = big_offer(&mut h, "b");
    let cmds = h.offers(vec![o]);
    assert_eq!(accepts(&cmds)[0].task_id.as_str(), "es-1.2");
    assert!(!h.core.persisted().slots[&NodeId(1)].forced);
    // The old task comes back from the partition: it is killed, the new one stays.
    let cmds = h.update(status(&t, "a", TaskState::Running, Some("back")));
    assert!(has(
        &cmds,
        &MesosCommand::Kill {
            task_id: t.clone(),
            agent_id: Some(agent("a"))
        }
    ));
    assert_eq!(h.task_of(1).map(|x| x.to_string()), Some("es-1.2".into()));
    check(&h);
}

#[test]
fn a_node_that_fails_soon_after_it_runs_backs_off_more_each_time_until_it_stays_up() {
    // Elasticsearch fails its bootstrap checks after Mesos reported the container RUNNING: RUNNING
    // alone must not reset the backoff, or a node that cannot start relaunches (and attaches its
    // volumes) every second forever.
    let mut h = normal_harness(1);
    let (initial, cap) = (
        h.core.config().backoff_initial_ms,
        h.core.config().backoff_max_ms,
    );
    assert!(
        cap >= 8 * initial,
        "the test needs a few doublings below the cap"
    );
    h.launch_running(&["a"]);
    let mut expected = initial;
    for _ in 0..4 {
        let t = h.task_of(1).unwrap_or_else(|| panic!("launched"));
        h.update(status(&t, "a", TaskState::Failed, Some("f")));
        assert_eq!(h.backoff_left(1), expected);
        h.advance(expected - 1);
        let o = big_offer(&mut h, "a");
        assert!(accepts(&h.offers(vec![o])).is_empty(), "within the backoff");
        h.advance(1);
        h.launch_running(&["a"]);
        assert_ne!(h.task_of(1), Some(t), "relaunched once the backoff passed");
        expected = (expected * 2).min(cap);
    }
    // A task that ran as long as the longest backoff proved itself: its end is a first failure.
    h.advance(cap);
    let t = h.task_of(1).unwrap_or_else(|| panic!("launched"));
    h.update(status(&t, "a", TaskState::Failed, Some("f")));
    assert_eq!(h.backoff_left(1), initial);
    check(&h);
}

#[test]
fn replace_of_a_dead_node_clears_its_backoff() {
    let mut h = normal_harness(1);
    h.launch_running(&["a"]);
    let t = h.task_of(1).unwrap_or_else(|| panic!("launched"));
    h.update(status(&t, "a", TaskState::Failed, None));
    h.core
        .handle_replace(NodeId(1), false, h.now)
        .unwrap_or_else(|e| panic!("{e}"));
    h.drain();
    let o = big_offer(&mut h, "b");
    assert_eq!(accepts(&h.offers(vec![o])).len(), 1);
    check(&h);
}

// ---------------------------------------------------------------------------------------------------
// Reconciliation and acknowledgements
// ---------------------------------------------------------------------------------------------------

#[test]
fn acknowledge_exactly_the_updates_with_a_uuid_after_persisting_them() {
    let mut h = normal_harness(1);
    let o = big_offer(&mut h, "a");
    h.offers(vec![o]);
    let t = h.task_of(1).unwrap_or_else(|| panic!("launched"));
    let cmds = h.update(status(
        &t,
        "a",
        TaskState::Running,
        Some("2vjUX1JpSmWJ0AnQ4zW3UA=="),
    ));
    let ack = MesosCommand::Acknowledge {
        agent_id: agent("a"),
        task_id: t.clone(),
        uuid: "2vjUX1JpSmWJ0AnQ4zW3UA==".into(),
    };
    let ack_at = cmds
        .iter()
        .position(|c| matches!(c, Command::Mesos(m) if *m == ack));
    let persist_at = cmds.iter().position(|c| matches!(c, Command::Persist(_)));
    assert!(persist_at.is_some() && persist_at < ack_at, "{cmds:?}");
    let cmds = h.update(status(&t, "a", TaskState::Running, None));
    assert!(
        !cmds
            .iter()
            .any(|c| matches!(c, Command::Mesos(MesosCommand::Acknowledge { .. })))
    );
    // Updates for unknown tasks are acknowledged too (else the agent retries forever) and killed.
    let cmds = h.update(status(
        &task("other-1.1"),
        "a",
        TaskState::Running,
        Some("x"),
    ));
    assert!(
        cmds.iter()
            .any(|c| matches!(c, Command::Mesos(MesosCommand::Acknowledge { .. })))
    );
    assert!(
        cmds.iter()
            .any(|c| matches!(c, Command::Mesos(MesosCommand::Kill { .. })))
    );
    check(&h);
}

fn reconciles(cmds: &[Command]) -> Vec<usize> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Mesos(MesosCommand::Reconcile { tasks }) => Some(tasks.len()),
            _ => None,
        })
        .collect()
}

#[test]
fn explicit_reconciliation_with_backoff_after_every_subscription_then_implicit() {
    let mut h = normal_harness(2);
    h.launch_running(&["a", "b"]);
    h.core.handle_disconnected(h.now);
    let cmds = h.subscribe();
    assert_eq!(reconciles(&cmds), vec![2]);
    // Retries back off: 2 s, 4 s, 8 s ...
    let mut times = Vec::new();
    let start = h.now;
    for _ in 0..3 {
        let next = h.core.poll_timeout().unwrap_or_else(|| panic!("a timer"));
        h.advance(next.since(h.now));
        times.push(h.now.since(start));
    }
    assert_eq!(times, vec![2_000, 6_000, 14_000]);
    // One task answers: only the other is retried.
    let t1 = h.task_of(1).unwrap_or_else(|| panic!("t1"));
    let t2 = h.task_of(2).unwrap_or_else(|| panic!("t2"));
    h.update(status(&t1, "a", TaskState::Running, None));
    let cmds = h.advance(16_000);
    assert_eq!(reconciles(&cmds), vec![1]);
    h.update(status(&t2, "b", TaskState::Running, None));
    assert_eq!(h.core.reconciling_since(), None);
    // Then implicit reconciliation, periodically.
    let period = h.core.config().implicit_reconcile_ms;
    let cmds = h.advance(period);
    assert_eq!(reconciles(&cmds), vec![0]);
    let cmds = h.advance(period);
    assert_eq!(reconciles(&cmds), vec![0]);
    check(&h);
}

#[test]
fn a_launch_that_never_hears_back_is_reconciled() {
    let mut h = normal_harness(1);
    let o = big_offer(&mut h, "a");
    h.offers(vec![o]);
    let cmds = h.advance(h.core.config().launch_status_timeout_ms);
    assert_eq!(reconciles(&cmds), vec![1]);
    let t = h.task_of(1).unwrap_or_else(|| panic!("t"));
    h.update(status(&t, "a", TaskState::Gone, None));
    h.advance(10_000);
    let o = big_offer(&mut h, "a");
    assert_eq!(accepts(&h.offers(vec![o])).len(), 1);
    check(&h);
}

#[test]
fn restart_from_persisted_state_fences_until_reconciled() {
    let mut h = normal_harness(2);
    h.launch_running(&["a", "b"]);
    let t1 = h.task_of(1).unwrap_or_else(|| panic!("t1"));
    h.restart();
    assert_eq!(&h.store, h.core.persisted());
    let cmds = h.subscribe();
    assert_eq!(reconciles(&cmds), vec![2]);
    // Both tasks may be alive: nothing is launched.
    let o = big_offer(&mut h, "c");
    assert!(accepts(&h.offers(vec![o])).is_empty());
    h.update(status(&t1, "a", TaskState::Lost, None));
    h.advance(10_000);
    let o = big_offer(&mut h, "c");
    let cmds = h.offers(vec![o]);
    assert_eq!(accepts(&cmds)[0].task_id.as_str(), "es-1.2");
    check(&h);
}

#[test]
fn restart_repairs_an_interrupted_scale_and_rejects_a_corrupt_table() {
    let mut store = PersistedState {
        desired: 3,
        ..PersistedState::default()
    };
    let mut h = Harness::restore(config(crate::Strategy::Normal), store.clone());
    assert_eq!(h.core.persisted().slots.len(), 3);
    check(&h);
    h.restart();
    check(&h);
    store = h.store.clone();
    if let Some(r) = store.slots.get_mut(&NodeId(2)) {
        r.volumes = vec![vol("es1data")];
    }
    assert!(matches!(
        Core::new(config(crate::Strategy::Normal), store),
        Err(CoreError::BadState(_))
    ));
}

#[test]
fn a_stray_mount_after_a_restart_is_released_once() {
    let mut h = external_harness(1, false);
    let vols = node_volumes(&h, 1);
    h.restart();
    h.subscribe();
    h.core
        .handle_sidecar_hello(hello("a", None, None, "i"), h.now);
    let attached: Vec<_> = vols.iter().map(|v| volume(v, true, None, true)).collect();
    h.core
        .handle_sidecar_report(&host("a"), report(1, attached.clone(), 2), h.now);
    let cmds = h.drain();
    assert!(cmds.iter().any(|c| matches!(
        c,
        Command::Sidecar {
            command: SidecarCommand::Release { .. },
            ..
        }
    )));
    h.core
        .handle_sidecar_report(&host("a"), report(2, attached, 2), h.now);
    let cmds = h.drain();
    assert!(!cmds.iter().any(|c| matches!(
        c,
        Command::Sidecar {
            command: SidecarCommand::Release { .. },
            ..
        }
    )));
    check(&h);
}

#[test]
fn stale_sidecar_reports_are_dropped() {
    let mut h = external_harness(1, false);
    let vols = node_volumes(&h, 1);
    h.core
        .handle_sidecar_hello(hello("a", None, None, "i"), h.now);
    h.core.handle_sidecar_report(
        &host("a"),
        report(
            5,
            vols.iter().map(|v| volume(v, true, None, false)).collect(),
            0,
        ),
        h.now,
    );
    h.core.handle_sidecar_report(
        &host("a"),
        report(
            4,
            vols.iter().map(|v| volume(v, false, None, false)).collect(),
            0,
        ),
        h.now,
    );
    h.drain();
    assert!(h.core.volumes().iter().all(|v| v.exists == Some(true)));
    check(&h);
}

#[test]
fn suppress_when_nothing_is_pending_and_revive_when_something_is() {
    let mut h = normal_harness(1);
    let o = big_offer(&mut h, "a");
    let cmds = h.offers(vec![o]);
    assert!(has(&cmds, &MesosCommand::Suppress));
    let o = big_offer(&mut h, "b");
    let cmds = h.offers(vec![o]);
    assert!(
        declines(&cmds)
            .iter()
            .all(|(_, r)| *r == h.core.config().idle_refuse_seconds)
    );
    let t = h.task_of(1).unwrap_or_else(|| panic!("t"));
    let cmds = h.update(status(&t, "a", TaskState::Failed, Some("f")));
    assert!(has(&cmds, &MesosCommand::Revive));
    check(&h);
}

// ---------------------------------------------------------------------------------------------------
// Task builder
// ---------------------------------------------------------------------------------------------------

fn env_of(l: &crate::LaunchSpec, k: &str) -> Option<String> {
    l.env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
}

#[test]
fn launch_spec_carries_identity_ports_seeds_and_bootstrap_masters() {
    let mut cfg = config(external(false));
    cfg.containerizer = Containerizer::Mesos;
    cfg.cluster_name = "logs".into();
    let mut h = Harness::new(cfg);
    h.subscribe();
    must_scale(&mut h, 2);
    let mut all = node_volumes(&h, 1);
    all.extend(node_volumes(&h, 2));
    h.sidecar("a", None, None, &all);
    h.sidecar("b", None, None, &all);
    let cmds = h.offers(vec![offer("o-1", "a", 4.0, 8192.0, 0.0)]);
    let (_, cid, _) = prepares(&cmds)[0].clone();
    let l1 = accepts(&h.prepare_result("a", cid, true))[0].clone();
    assert_eq!(env_of(&l1, env::NODE_ID).as_deref(), Some("1"));
    assert_eq!(env_of(&l1, env::NODE_NAME).as_deref(), Some("es-1"));
    assert_eq!(env_of(&l1, env::CLUSTER_NAME).as_deref(), Some("logs"));
    assert_eq!(env_of(&l1, env::HTTP_PORT).as_deref(), Some("31000"));
    assert_eq!(env_of(&l1, env::TRANSPORT_PORT).as_deref(), Some("31001"));
    assert_eq!(
        env_of(&l1, env::INITIAL_MASTER_NODES).as_deref(),
        Some("es-1,es-2")
    );
    assert_eq!(
        env_of(&l1, env::JAVA_OPTS).as_deref(),
        Some("-Xms512m -Xmx512m")
    );
    assert_eq!(l1.containerizer, Containerizer::Mesos);
    assert_eq!(l1.volumes[1].container_path, "/data");
    assert_eq!(
        l1.volumes[1].driver_options,
        vec![("size".to_owned(), "10".to_owned())]
    );
    assert_eq!(
        (l1.health_check_port, l1.health_check_path.as_str()),
        (31000, "/_cluster/health?local=true")
    );
    assert_eq!(env_of(&l1, env::PATH_DATA).as_deref(), Some("/data"));
    assert_eq!(env_of(&l1, env::SECURITY_ENABLED).as_deref(), Some("false"));
    h.update(status(&l1.task_id, "a", TaskState::Running, None));
    // A running container, or a node that has not joined a cluster yet, is no proof of bootstrap.
    h.es_root(1, crate::es_events::NO_CLUSTER_UUID);
    assert!(!h.core.persisted().cluster_formed);
    let cmds = h.offers(vec![offer("o-2", "b", 4.0, 8192.0, 0.0)]);
    let (_, cid, _) = prepares(&cmds)[0].clone();
    let l2 = accepts(&h.prepare_result("b", cid, true))[0].clone();
    assert_eq!(env_of(&l2, env::SEED_HOSTS).as_deref(), Some("a:31001"));
    assert_eq!(
        env_of(&l2, env::INITIAL_MASTER_NODES).as_deref(),
        Some("es-1,es-2"),
        "identical on every node until bootstrap is confirmed"
    );
    check(&h);
}

#[test]
fn only_a_reported_cluster_uuid_bootstraps_and_another_uuid_is_flagged() {
    let mut h = Harness::new(config(Strategy::Normal));
    h.subscribe();
    must_scale(&mut h, 2);
    let cmds = h.offers(vec![
        offer("o-1", "a", 4.0, 8192.0, 4096.0),
        offer("o-2", "b", 4.0, 8192.0, 4096.0),
    ]);
    let launches = accepts(&cmds);
    assert_eq!(launches.len(), 2);
    for (l, host) in launches.iter().zip(["a", "b"]) {
        h.update(status(&l.task_id, host, TaskState::Running, None));
    }
    let joined =
        |h: &Harness| -> Vec<bool> { h.core.nodes(h.now).iter().map(|n| n.joined()).collect() };
    assert_eq!(joined(&h), [false, false], "running is not joined");
    h.es_root(1, crate::es_events::NO_CLUSTER_UUID);
    assert_eq!(joined(&h), [false, false], "`_na_` is not joined");
    h.es_root(1, "uuid-A");
    assert_eq!(joined(&h), [true, false]);
    let b = h.core.persisted().bootstrap.clone();
    assert_eq!(
        b.map(|b| (b.cluster_uuid, b.security)),
        Some(("uuid-A".to_owned(), crate::config::Security::Off))
    );
    assert_eq!(h.core.cluster().cluster_uuid.as_deref(), Some("uuid-A"));
    assert_eq!(h.core.cluster().running, 2);
    let cmds = h.es_root(2, "uuid-B");
    assert!(cmds.iter().any(|c| matches!(c,
        Command::Watch(WatchEvent::Bootstrap { message, .. }) if message.contains("node 2 joined another cluster"))));
    assert_eq!(
        h.core.cluster().running,
        1,
        "a node of another cluster is not counted"
    );
    assert!(h.core.nodes(h.now)[1].foreign_cluster);
    assert_eq!(
        joined(&h),
        [true, false],
        "another cluster's node is not joined"
    );
    // The reset refuses while nodes report a cluster, unless told a new cluster is wanted.
    assert!(h.core.handle_bootstrap_reset(false, h.now).is_err());
    h.core
        .handle_bootstrap_reset(true, h.now)
        .expect("forced reset");
    h.drain();
    assert!(!h.core.persisted().cluster_formed);
    assert_eq!(h.store.bootstrap, None);
    check(&h);
}

#[test]
fn a_sidecar_that_does_not_declare_volume_owner_is_not_used_and_the_prepare_carries_the_owner() {
    let mut cfg = config(external(false));
    cfg.volume_owner = Some(crate::config::VolumeOwner {
        uid: 1000,
        gid: 0,
        mode: 0o770,
    });
    let mut h = Harness::new(cfg);
    h.subscribe();
    must_scale(&mut h, 1);
    let vols = node_volumes(&h, 1);
    // An old sidecar: its Hello declares nothing.
    let mut old = hello("old", None, None, "i-1");
    old.features.clear();
    h.core.handle_sidecar_hello(old, h.now);
    let report_vols = vols.iter().map(|v| volume(v, true, None, false)).collect();
    h.core
        .handle_sidecar_report(&host("old"), report(1, report_vols, 0), h.now);
    h.drain();
    let cmds = h.offers(vec![offer("o-1", "old", 4.0, 8192.0, 0.0)]);
    assert!(prepares(&cmds).is_empty(), "no prepare on an old sidecar");
    let agent = h
        .core
        .agents(h.now)
        .into_iter()
        .find(|a| a.host.as_str() == "old")
        .expect("the old agent");
    assert!(
        agent
            .last_decline
            .as_ref()
            .is_some_and(|r| r.to_string().contains("volume_owner")),
        "the reason is shown: {agent:?}"
    );
    h.sidecar("new", None, None, &vols);
    let cmds = h.offers(vec![offer("o-2", "new", 4.0, 8192.0, 0.0)]);
    let owner = cmds.iter().find_map(|c| match c {
        Command::Sidecar {
            command: SidecarCommand::Prepare { owner, .. },
            ..
        } => Some(*owner),
        _ => None,
    });
    assert_eq!(
        owner.flatten().map(|o| (o.uid, o.gid, o.mode)),
        Some((1000, 0, 0o770))
    );
    check(&h);
}

#[test]
fn with_security_the_launch_waits_for_the_installed_identity_and_carries_no_secret() {
    let mut cfg = config(external(false));
    cfg.security = crate::config::Security::Transport;
    cfg.volumes[0].container_path = crate::config::IDENTITY_MOUNT.into();
    cfg.validate().expect("a valid secure layout");
    let mut h = Harness::new(cfg);
    h.subscribe();
    must_scale(&mut h, 1);
    let vols = node_volumes(&h, 1);
    h.sidecar("a", None, None, &vols);
    let mut o = offer("o-1", "a", 4.0, 8192.0, 0.0);
    o.ip = Some("10.0.0.7".into());
    let cmds = h.offers(vec![o]);
    let identity = cmds.iter().find_map(|c| match c {
        Command::Sidecar {
            command: SidecarCommand::Prepare { identity, .. },
            ..
        } => identity.clone(),
        _ => None,
    });
    let identity = identity.expect("the prepare asks for an identity");
    assert_eq!(identity.volume, vols[0]);
    assert_eq!(identity.dns_names, ["a", "es-1"]);
    assert_eq!(identity.ip_addresses, ["10.0.0.7"]);
    let (_, cid, _) = prepares(&cmds)[0].clone();
    let answer = |command_id, csr: Option<&str>| crate::domain::CommandResult {
        command_id,
        ok: true,
        error: None,
        volumes: Vec::new(),
        csr_pem: csr.map(str::to_owned),
    };
    h.core
        .handle_sidecar_result(&host("a"), answer(cid, Some("CSR")), h.now);
    let cmds = h.drain();
    assert!(
        accepts(&cmds).is_empty(),
        "no launch before the identity is installed"
    );
    let install = cmds.iter().find_map(|c| match c {
        Command::Sidecar {
            command:
                SidecarCommand::InstallIdentity {
                    command_id,
                    prepare_id,
                    csr_pem,
                    ..
                },
            ..
        } => Some((*command_id, *prepare_id, csr_pem.clone())),
        _ => None,
    });
    let (install_id, prepare_id, csr) = install.expect("an InstallIdentity");
    assert_eq!(csr, "CSR");
    assert_eq!(prepare_id, cid, "it names the Prepare whose key it is for");
    h.core
        .handle_sidecar_result(&host("a"), answer(install_id, None), h.now);
    let launch = accepts(&h.drain())[0].clone();
    assert_eq!(
        env_of(&launch, "xpack.security.transport.ssl.key").as_deref(),
        Some("node/node.key")
    );
    assert_eq!(
        env_of(&launch, env::PASSWORD_FILE).as_deref(),
        Some("/usr/share/elasticsearch/config/node/elastic-password")
    );
    assert_eq!(env_of(&launch, "xpack.security.http.ssl.enabled"), None);
    check(&h);
}

#[test]
fn security_needs_the_identity_volume_inside_the_config_directory() {
    let mut c = config(external(false));
    c.security = crate::config::Security::Full;
    let e = c.validate().expect_err("the seed layout keeps /tmp/config");
    assert!(e.to_string().contains(crate::config::IDENTITY_MOUNT), "{e}");
    c.volumes.retain(|v| v.suffix == "data");
    assert!(c.validate().is_err(), "no identity volume at all");
}

#[test]
fn owned_settings_cannot_be_overridden() {
    let mut c = Config::new("es");
    c.es_settings = vec![("node.name".into(), "x".into())];
    let e = c.validate().expect_err("node.name is Tether's");
    assert!(e.to_string().contains("node.name"), "{e}");
    c.es_settings = vec![("indices.memory.index_buffer_size".into(), "20%".into())];
    c.validate().expect("a setting of the operator's own");
    c.es_env = vec![("ES_SETTING_PATH_DATA".into(), "/x".into())];
    assert!(c.validate().is_err());
    c.es_env = vec![("discovery.seed_hosts".into(), "x:1".into())];
    assert!(c.validate().is_err());
    c.es_env = vec![("TZ".into(), "UTC".into())];
    c.validate().expect("plain environment");
    c.es_env = Vec::new();
    c.data_volume = "logs".into();
    assert!(
        c.validate().is_err(),
        "the data volume must be one of the volumes"
    );
}

#[test]
fn config_validation_and_naming_template() {
    let mut c = Config::new("es");
    c.volume_name_template = "{framework}-{cluster}-{id}-{volume}".into();
    c.cluster_name = "logs".into();
    assert_eq!(
        c.volume_names(NodeId(7)).unwrap_or_default(),
        vec![vol("es-logs-7-config"), vol("es-logs-7-data")]
    );
    c.volume_name_template = "{framework}{volume}".into();
    assert!(c.validate().is_err());
    let mut c = Config::new("bad/name");
    assert!(c.validate().is_err());
    c = Config::new("es");
    c.volumes[0].container_path = "relative".into();
    assert!(c.validate().is_err());
}

#[test]
fn views_describe_nodes_agents_volumes_and_cluster() {
    let mut h = external_harness(2, false);
    let mut all = node_volumes(&h, 1);
    all.extend(node_volumes(&h, 2));
    h.sidecar("a", Some("z1"), Some(40), &all);
    let cmds = h.offers(vec![offer("o-1", "a", 4.0, 8192.0, 0.0)]);
    let nodes = h.core.nodes(h.now);
    assert_eq!(nodes[0].phase, NodePhase::Preparing);
    assert_eq!(nodes[1].phase, NodePhase::Pending);
    let (_, cid, _) = prepares(&cmds)[0].clone();
    h.prepare_result("a", cid, true);
    let t = h.task_of(1).unwrap_or_else(|| panic!("t"));
    h.update(status(&t, "a", TaskState::Running, None));
    let nodes = h.core.nodes(h.now);
    assert_eq!(nodes[0].phase, NodePhase::Task(Some(TaskState::Running)));
    assert_eq!(nodes[0].ports, Some((31000, 31001)));
    let agents = h.core.agents(h.now);
    assert_eq!(agents[0].zone.as_deref(), Some("z1"));
    assert_eq!(agents[0].attachments_max, Some(40));
    assert!(agents[0].sidecar_fresh);
    assert_eq!(h.core.volumes().len(), 4);
    let c = h.core.cluster();
    assert_eq!(
        (c.desired, c.running, c.strategy.as_str()),
        (2, 1, "external")
    );
    check(&h);
}

#[test]
fn bogus_offers_from_the_master_are_declined_not_trusted() {
    let mut h = normal_harness(1);
    let mut huge = offer("o-r", "r", 4.0, 8192.0, 1000.0);
    huge.ports = vec![crate::domain::PortRange {
        begin: 70_000,
        end: u64::MAX,
    }];
    let nan = offer("o-n", "n", f64::NAN, 8192.0, 1000.0);
    let mut dup = offer("o-d", "d", 4.0, 8192.0, 1000.0);
    dup.ports = vec![
        crate::domain::PortRange {
            begin: 31000,
            end: 31000,
        },
        crate::domain::PortRange {
            begin: 31000,
            end: 31000,
        },
    ];
    let cmds = h.offers(vec![huge, nan, dup]);
    assert!(accepts(&cmds).is_empty());
    assert_eq!(declines(&cmds).len(), 3);
    assert!(decline_of(&h, "r").contains("two ports"));
    assert!(decline_of(&h, "n").contains("cpus"));
    assert!(decline_of(&h, "d").contains("two ports"));
    check(&h);
}

#[test]
fn a_restarted_sidecar_voids_its_prepare_and_a_report_before_hello_is_refused() {
    let mut h = external_harness(1, false);
    let vols = node_volumes(&h, 1);
    h.sidecar("a", None, None, &vols);
    let cmds = h.offers(vec![offer("o-1", "a", 4.0, 8192.0, 0.0)]);
    let (_, cid, _) = prepares(&cmds)[0].clone();
    h.core
        .handle_sidecar_hello(hello("a", None, None, "i-2"), h.now);
    let cmds = h.drain();
    assert!(declines(&cmds).iter().any(|(o, _)| o == "o-1"));
    assert!(reason_of(&h, 1).contains("sidecar restarted"));
    // Its answer can no longer launch anything.
    let cmds = h.prepare_result("a", cid, true);
    assert!(accepts(&cmds).is_empty());
    h.core
        .handle_sidecar_report(&host("nobody"), report(1, vec![], 0), h.now);
    let cmds = h.drain();
    assert!(
        cmds.iter()
            .any(|c| matches!(c, Command::Watch(crate::WatchEvent::Warning { .. })))
    );
    check(&h);
}

#[test]
fn seed_hosts_are_bounded_to_the_lowest_live_nodes() {
    let mut cfg = config(crate::Strategy::Normal);
    cfg.max_seed_hosts = 2;
    let mut h = Harness::new(cfg);
    h.subscribe();
    must_scale(&mut h, 4);
    let offers: Vec<_> = ["a", "b", "c", "d"]
        .iter()
        .map(|x| big_offer(&mut h, x))
        .collect();
    let cmds = h.offers(offers);
    let last = accepts(&cmds)
        .into_iter()
        .last()
        .unwrap_or_else(|| panic!("launches"));
    assert_eq!(last.node_id, NodeId(4));
    assert_eq!(
        env_of(&last, env::SEED_HOSTS).map(|s| s.split(',').count()),
        Some(2)
    );
    check(&h);
}

#[test]
fn after_a_failed_prepare_the_node_tries_another_agent_first() {
    let mut h = external_harness(1, false);
    let vols = node_volumes(&h, 1);
    h.sidecar("a", None, Some(40), &vols);
    h.sidecar("b", None, Some(10), &vols);
    let cmds = h.offers(vec![
        offer("o-1", "a", 4.0, 8192.0, 0.0),
        offer("o-2", "b", 4.0, 8192.0, 0.0),
    ]);
    let (first, cid, _) = prepares(&cmds)[0].clone();
    assert_eq!(first, host("a"), "most free attach slots first");
    h.prepare_result("a", cid, false);
    h.advance(1_000);
    h.sidecar("a", None, Some(40), &vols);
    h.sidecar("b", None, Some(10), &vols);
    let cmds = h.offers(vec![
        offer("o-3", "a", 4.0, 8192.0, 0.0),
        offer("o-4", "b", 4.0, 8192.0, 0.0),
    ]);
    assert_eq!(prepares(&cmds)[0].0, host("b"));
    check(&h);
}

#[test]
fn host_local_volumes_pin_the_node_to_their_agent() {
    let mut h = external_harness(1, false);
    let vols = node_volumes(&h, 1);
    let mut local = hello("a", None, None, "i");
    local.driver_scope = crate::domain::DriverScope::Local;
    h.core.handle_sidecar_hello(local, h.now);
    let here = vols.iter().map(|v| volume(v, true, None, false)).collect();
    h.core
        .handle_sidecar_report(&host("a"), report(1, here, 0), h.now);
    h.sidecar("b", None, None, &[]);
    let cmds = h.offers(vec![offer("o-b", "b", 16.0, 65536.0, 0.0)]);
    assert!(prepares(&cmds).is_empty());
    let cmds = h.offers(vec![
        offer("o-b2", "b", 16.0, 65536.0, 0.0),
        offer("o-a", "a", 1.0, 1024.0, 0.0),
    ]);
    assert_eq!(prepares(&cmds)[0].0, host("a"));
    check(&h);
}

#[test]
fn a_mount_held_by_an_absent_sidecar_pins_the_node_durably_until_released() {
    let mut h = external_harness(1, false);
    let vols = node_volumes(&h, 1);
    h.sidecar("a", None, None, &vols);
    h.sidecar("b", None, None, &vols);
    let cmds = h.offers(vec![offer("o-1", "a", 4.0, 8192.0, 0.0)]);
    let (_, cid, _) = prepares(&cmds)[0].clone();
    assert_eq!(
        h.core.persisted().slots[&NodeId(1)].mount_host,
        Some(host("a")),
        "persisted before the Prepare"
    );
    h.prepare_result("a", cid, true);
    let t = h.task_of(1).unwrap_or_else(|| panic!("launched"));
    h.core.handle_sidecar_disconnected(&host("a"), h.now);
    h.update(status(&t, "a", TaskState::Running, Some("r")));
    h.update(status(&t, "a", TaskState::Failed, Some("f")));
    // The release could not go out: the node stays pinned to a, across a restart too.
    h.restart();
    h.subscribe();
    h.advance(120_000);
    h.sidecar("b", None, None, &vols);
    let cmds = h.offers(vec![offer("o-2", "b", 4.0, 8192.0, 0.0)]);
    assert!(prepares(&cmds).is_empty());
    assert!(
        reason_of(&h, 1).contains("held on agent a"),
        "{}",
        reason_of(&h, 1)
    );
    // a comes back: the release goes out first, then the node may go anywhere.
    let cmds = h.sidecar("a", None, None, &vols);
    assert!(cmds.iter().any(|c| matches!(c, Command::Sidecar { host: x, command: SidecarCommand::Release { .. } } if x.as_str() == "a")));
    assert_eq!(h.core.persisted().slots[&NodeId(1)].mount_host, None);
    let cmds = h.offers(vec![offer("o-3", "b", 4.0, 8192.0, 0.0)]);
    assert_eq!(prepares(&cmds)[0].0, host("b"));
    check(&h);
}

#[test]
fn the_external_strategy_waits_for_sidecars_after_a_start() {
    let mut cfg = config(external(true));
    cfg.startup_grace_ms = 15_000;
    let mut h = Harness::new(cfg);
    h.subscribe();
    must_scale(&mut h, 1);
    h.sidecar("a", None, None, &[]);
    let cmds = h.offers(vec![offer("o-1", "a", 4.0, 8192.0, 0.0)]);
    assert!(prepares(&cmds).is_empty());
    assert!(
        decline_of(&h, "a").contains("sidecars to report"),
        "{}",
        decline_of(&h, "a")
    );
    let cmds = h.advance(15_000);
    assert!(has(&cmds, &MesosCommand::Revive));
    h.sidecar("a", None, None, &[]);
    let cmds = h.offers(vec![offer("o-2", "a", 4.0, 8192.0, 0.0)]);
    assert_eq!(prepares(&cmds).len(), 1);
    check(&h);
}

#[test]
fn persisted_state_round_trips_through_json_and_refuses_bad_ids() {
    let mut h = external_harness(2, true);
    h.sidecar("a", None, None, &[]);
    let cmds = h.offers(vec![offer("o-1", "a", 4.0, 8192.0, 0.0)]);
    let (_, cid, _) = prepares(&cmds)[0].clone();
    h.prepare_result("a", cid, true);
    let json = serde_json::to_string(&h.store).unwrap_or_else(|e| panic!("{e}"));
    let back: PersistedState = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(back, h.store);
    let bad = json.replace("es1data", "-es1data");
    assert!(serde_json::from_str::<PersistedState>(&bad).is_err());
    // Every write is serialisable on its own too (the store may log deltas).
    for c in &h.log {
        if let Command::Persist(w) = c {
            let text = serde_json::to_string(w).unwrap_or_else(|e| panic!("{e}"));
            let again: StateWrite = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(&again, w);
        }
    }
    check(&h);
}

#[test]
fn an_agent_known_only_from_an_accepted_offer_is_listed() {
    let mut h = normal_harness(1);
    h.offers(vec![offer("o-1", "a", 4.0, 8192.0, 4096.0)]);
    assert!(h.task_of(1).is_some(), "node 1 launched on a");
    let agents = h.core.agents(h.now);
    let hosts: Vec<&str> = agents.iter().map(|a| a.host.as_str()).collect();
    assert_eq!(hosts, ["a"]);
    assert!(agents[0].agent_id.is_some());
    assert!(agents[0].last_decline.is_none());
}

/// Resources offered under a reservation are taken first and keep it (the master checks a task's
/// resources against the offer's with their reservations); what the reservation lacks comes unreserved,
/// never summed into one resource with the reserved part.
#[test]
fn reserved_resources_are_taken_first_and_keep_their_reservation() {
    use crate::domain::{PortRange, Reservation, ResourceAmount, ResourcePart};
    let mut h = normal_harness(1);
    let id = h.next_offer_id();
    let cmds = h.offers(vec![reserved_offer(&id, "a", 0.3)]);
    let l = accepts(&cmds);
    assert_eq!(l.len(), 1);
    let part = |name: &str, reservations: Vec<Reservation>, amount| ResourcePart {
        name: name.into(),
        reservations,
        amount,
    };
    let port = |p: u64| ResourceAmount::Ranges(vec![PortRange { begin: p, end: p }]);
    assert_eq!(
        l[0].resources,
        vec![
            part("cpus", dynamic_reservation(), ResourceAmount::Scalar(0.3)),
            part("cpus", Vec::new(), ResourceAmount::Scalar(0.7)),
            part("mem", static_reservation(), ResourceAmount::Scalar(512.0)),
            part("mem", Vec::new(), ResourceAmount::Scalar(512.0)),
            part("disk", Vec::new(), ResourceAmount::Scalar(100.0)),
            part("ports", dynamic_reservation(), port(31000)),
            part("ports", Vec::new(), port(31001)),
        ]
    );
    assert_eq!((l[0].http_port, l[0].transport_port), (31000, 31001));
    check(&h);
}
