//! Observation by assignment (`observe.rs`): every volume observed by exactly one `watch_delta` sidecar
//! (of its zone when one is connected) while sidecars come and go, a held volume by its holder, old
//! sidecars still welcomed with the full watch set, and delta reports; the incremental flush decides as a
//! recomputation of every share from scratch.

use crate::command::{Command, SidecarCommand};
use crate::domain::{DriverScope, TaskState};
use crate::ids::{Hostname, Millis, NodeId, VolumeName};
use crate::testing::*;
use proptest::prelude::*;
use std::collections::BTreeMap;

fn harness(nodes: u64) -> Harness {
    let mut h = Harness::new(config(external(true)));
    h.subscribe();
    h.core
        .handle_scale(nodes, h.now)
        .unwrap_or_else(|e| panic!("{e}"));
    h.drain();
    h
}

fn node_volumes(h: &Harness, node: u64) -> Vec<VolumeName> {
    h.core.persisted().slots[&NodeId(node)].volumes.clone()
}

fn connect(h: &mut Harness, shares: &mut Shares, name: &str, zone: Option<&str>) -> Vec<Command> {
    h.core
        .handle_sidecar_hello(hello_observing(name, zone, "i-1"), h.now);
    let cmds = h.drain();
    shares.apply(&cmds);
    cmds
}

fn disconnect(h: &mut Harness, shares: &mut Shares, name: &str) {
    shares.gone(&host(name));
    h.core.handle_sidecar_disconnected(&host(name), h.now);
    let cmds = h.drain();
    shares.apply(&cmds);
}

/// Every volume of every node is observed by exactly one connected sidecar, of its zone when a sidecar
/// of that zone is connected; what the core says each observes equals what it told them.
fn check_assignment(h: &Harness, shares: &Shares, zones: &BTreeMap<String, Option<String>>) {
    let connected: Vec<_> = h
        .core
        .agents(h.now)
        .into_iter()
        .filter(|a| a.sidecar_connected)
        .collect();
    for v in h.core.watch_names().iter() {
        let observers = shares.observers(v);
        if connected.is_empty() {
            assert!(
                observers.is_empty(),
                "{v}: {observers:?} with nobody connected"
            );
            continue;
        }
        assert_eq!(observers.len(), 1, "{v} observed by {observers:?}");
        let zone = h
            .core
            .volumes()
            .into_iter()
            .find(|x| &x.name == v)
            .and_then(|x| x.zone);
        if let Some(z) = zone
            && connected.iter().any(|a| a.zone.as_ref() == Some(&z))
        {
            assert_eq!(
                zones.get(observers[0].as_str()).cloned().flatten(),
                Some(z.clone()),
                "{v} of zone {z} observed from another zone"
            );
        }
    }
    for a in &connected {
        let told = shares.0.get(&a.host).map_or(0, BTreeMap::len);
        assert_eq!(a.observes as usize, told, "{}", a.host);
        assert_eq!(h.core.observed_by(&a.host).len(), told, "{}", a.host);
    }
}

#[derive(Debug, Clone)]
enum Op {
    Connect(usize),
    Disconnect(usize),
    Scale(u64),
    /// A sidecar reports a node's volumes in a zone (the zone becomes known).
    Zone(u64, usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0usize..6).prop_map(Op::Connect),
        (0usize..6).prop_map(Op::Disconnect),
        (0u64..8).prop_map(Op::Scale),
        (1u64..8, 0usize..3).prop_map(|(n, z)| Op::Zone(n, z)),
    ]
}

const ZONES: [&str; 3] = ["z-a", "z-b", "z-c"];

proptest! {
    #[test]
    fn every_volume_is_observed_exactly_once_while_sidecars_come_and_go(
        ops in proptest::collection::vec(op(), 1..40)
    ) {
        let mut h = harness(4);
        let mut shares = Shares::default();
        let mut zones: BTreeMap<String, Option<String>> = BTreeMap::new();
        let mut seq = 1u64;
        for op in ops {
            match op {
                Op::Connect(i) => {
                    let name = format!("s{i}");
                    // Two of the six sidecars have no zone.
                    let zone = (i < 4).then(|| ZONES[i % 3].to_owned());
                    zones.insert(name.clone(), zone.clone());
                    connect(&mut h, &mut shares, &name, zone.as_deref());
                }
                Op::Disconnect(i) => disconnect(&mut h, &mut shares, &format!("s{i}")),
                Op::Scale(n) => {
                    h.core.handle_scale(n, h.now).unwrap_or_else(|e| panic!("{e}"));
                    let cmds = h.drain();
                    shares.apply(&cmds);
                }
                Op::Zone(node, z) => {
                    let Some(rec) = h.core.persisted().slots.get(&NodeId(node)) else { continue };
                    let vols = rec.volumes.clone();
                    // Reported by whichever sidecar observes it, as it would be.
                    for v in vols {
                        let Some(observer) = shares.observers(&v).into_iter().next() else { continue };
                        seq += 1;
                        h.core.handle_sidecar_report(
                            &observer,
                            report(seq, vec![volume(&v, true, Some(ZONES[z]), false)], 0),
                            h.now,
                        );

                        let cmds = h.drain();
                        shares.apply(&cmds);
                    }
                }
            }
            check_assignment(&h, &shares, &zones);
        }
    }

    #[test]
    fn the_spread_is_even(sidecars in 1usize..12, nodes in 0u64..30) {
        let mut h = harness(nodes);
        let mut shares = Shares::default();
        for i in 0..sidecars {
            connect(&mut h, &mut shares, &format!("s{i:02}"), None);
        }
        let volumes = h.core.watch_names().len();
        let most = shares.0.values().map(BTreeMap::len).max().unwrap_or(0);
        prop_assert!(most <= volumes.div_ceil(sidecars), "{most} of {volumes} on one of {sidecars}");
    }
}

#[test]
fn a_held_volume_is_observed_by_its_holder_and_moves_when_that_sidecar_goes() {
    let mut h = harness(1);
    let mut shares = Shares::default();
    let vols = node_volumes(&h, 1);
    // Pending (a launch wanted): urgent wherever it is observed.
    connect(&mut h, &mut shares, "a", Some("z"));
    connect(&mut h, &mut shares, "b", Some("z"));
    for v in &vols {
        assert_eq!(shares.observers(v).len(), 1);
        let holder = &shares.observers(v)[0];
        assert_eq!(shares.0[holder].get(v), Some(&true), "pending is urgent");
    }
    // Both sidecars report fresh; the offer comes from b: a prepare there makes b the holder.
    for (s, name) in [(2, "a"), (3, "b")] {
        let own = h.core.observed_by(&host(name));
        let mut r = report(s, Vec::new(), 0);
        r.volumes = own
            .iter()
            .map(|v| volume(v, true, Some("z"), false))
            .collect();
        h.core.handle_sidecar_report(&host(name), r, h.now);
        shares.apply(&h.drain());
    }
    let cmds = h.offers(vec![offer("o-1", "b", 4.0, 8192.0, 0.0)]);
    shares.apply(&cmds);
    let (_, cid, _) = prepares(&cmds)[0].clone();
    for v in &vols {
        assert_eq!(
            shares.observers(v),
            vec![host("b")],
            "the holder observes {v}"
        );
    }
    let cmds = h.prepare_result("b", cid, true);
    shares.apply(&cmds);
    let t = h.task_of(1).unwrap_or_else(|| panic!("launched"));
    let cmds = h.update(status(&t, "b", TaskState::Running, Some("u1")));
    shares.apply(&cmds);
    for v in &vols {
        assert_eq!(
            shares.observers(v),
            vec![host("b")],
            "the task's agent observes {v}"
        );
        assert_eq!(shares.0[&host("b")].get(v), Some(&true), "held is urgent");
    }
    // Its sidecar goes: a takes over.
    disconnect(&mut h, &mut shares, "b");
    for v in &vols {
        assert_eq!(shares.observers(v), vec![host("a")]);
    }
    // The node scaled down and its task ended: nothing held, nothing pending, so not urgent.
    h.core
        .handle_scale(0, h.now)
        .unwrap_or_else(|e| panic!("{e}"));
    shares.apply(&h.drain());
    let cmds = h.update(status(&t, "b", TaskState::Killed, Some("u2")));
    shares.apply(&cmds);
    for v in &vols {
        assert_eq!(shares.0[&host("a")].get(v), Some(&false), "settled: {v}");
    }
}

#[test]
fn a_sidecar_without_watch_delta_gets_the_full_watch_set_and_no_deltas() {
    let mut h = harness(2);
    h.core
        .handle_sidecar_hello(hello("old", None, None, "i-1"), h.now);
    let cmds = h.drain();
    let welcome = cmds.iter().find_map(|c| match c {
        Command::Sidecar {
            command:
                SidecarCommand::Welcome {
                    watch_names: Some(names),
                    ..
                },
            ..
        } => Some(names.len()),
        _ => None,
    });
    assert_eq!(welcome, Some(h.core.watch_names().len()));
    assert!(
        !cmds.iter().any(|c| matches!(
            c,
            Command::Sidecar {
                command: SidecarCommand::WatchDelta { .. },
                ..
            }
        )),
        "{cmds:?}"
    );
    // A new sidecar beside it observes everything; the old one still gets full Welcomes on a scale.
    let mut shares = Shares::default();
    let cmds = connect(&mut h, &mut shares, "new", None);
    assert!(cmds.iter().any(|c| matches!(
        c,
        Command::Sidecar {
            command: SidecarCommand::Welcome {
                watch_names: None,
                ..
            },
            ..
        }
    )));
    assert_eq!(shares.0[&host("new")].len(), h.core.watch_names().len());
    h.core
        .handle_scale(3, h.now)
        .unwrap_or_else(|e| panic!("{e}"));
    let cmds = h.drain();
    shares.apply(&cmds);
    let old_welcomes = cmds
        .iter()
        .filter(|c| matches!(c, Command::Sidecar { host, command: SidecarCommand::Welcome { watch_names: Some(n), .. } } if host.as_str() == "old" && n.len() == 6))
        .count();
    assert_eq!(old_welcomes, 1, "{cmds:?}");
    assert_eq!(shares.0[&host("new")].len(), 6);
    let agents = h.core.agents(h.now);
    assert!(agents.iter().all(|a| a.observes == 6), "{agents:?}");
}

#[test]
fn a_delta_report_applies_changes_and_a_gap_asks_for_a_snapshot() {
    let mut h = harness(1);
    let mut shares = Shares::default();
    connect(&mut h, &mut shares, "a", None);
    let vols = node_volumes(&h, 1);
    let snapshot = vols.iter().map(|v| volume(v, true, None, false)).collect();
    h.core
        .handle_sidecar_report(&host("a"), report(1, snapshot, 0), h.now);
    h.drain();
    let exists = |h: &Harness| -> Vec<Option<bool>> {
        h.core.volumes().into_iter().map(|v| v.exists).collect()
    };
    assert_eq!(exists(&h), vec![Some(true); vols.len()]);
    // Deleted behind Tether's back: the delta carries only that volume.
    h.core.handle_sidecar_report_delta(
        &host("a"),
        report(2, vec![volume(&vols[0], false, None, false)], 0),
        Vec::new(),
        h.now,
    );
    assert!(h.drain().is_empty());
    let mut want = vec![Some(true); vols.len()];
    want[0] = Some(false);
    assert_eq!(exists(&h), want);
    // A delta that does not follow the last report is not applied: the sidecar is welcomed again.
    h.core.handle_sidecar_report_delta(
        &host("a"),
        report(5, vec![volume(&vols[0], true, None, false)], 0),
        Vec::new(),
        h.now,
    );
    let cmds = h.drain();
    assert!(cmds.iter().any(|c| matches!(
        c,
        Command::Sidecar {
            command: SidecarCommand::Welcome { .. },
            ..
        }
    )));
    assert_eq!(exists(&h), want, "the out-of-order delta changed nothing");
    // A removed name is forgotten.
    h.core.handle_sidecar_report_delta(
        &host("a"),
        report(6, Vec::new(), 0),
        vec![vols[1].clone()],
        h.now,
    );
    h.drain();
    want[1] = None;
    assert_eq!(exists(&h), want);
}

#[test]
fn the_observer_that_goes_takes_its_word_with_it() {
    let mut h = harness(1);
    let mut shares = Shares::default();
    connect(&mut h, &mut shares, "a", None);
    let vols = node_volumes(&h, 1);
    let all = vols.iter().map(|v| volume(v, true, None, false)).collect();
    h.core
        .handle_sidecar_report(&host("a"), report(1, all, 0), h.now);
    h.drain();
    connect(&mut h, &mut shares, "b", None);
    disconnect(&mut h, &mut shares, "a");
    for v in &vols {
        assert_eq!(shares.observers(v), vec![host("b")]);
    }
    // b finds the volume gone: nothing a said before outvotes it.
    let gone = vols.iter().map(|v| volume(v, false, None, false)).collect();
    h.core
        .handle_sidecar_report(&host("b"), report(1, gone, 0), h.now);
    h.drain();
    assert!(h.core.volumes().iter().all(|v| v.exists == Some(false)));
}

#[test]
fn a_volume_whose_zone_becomes_known_moves_to_a_sidecar_of_that_zone() {
    let mut h = harness(2);
    let mut shares = Shares::default();
    let mut zones = BTreeMap::new();
    for (name, zone) in [("a", "z-a"), ("b", "z-b")] {
        connect(&mut h, &mut shares, name, Some(zone));
        zones.insert(name.to_owned(), Some(zone.to_owned()));
    }
    let vols = node_volumes(&h, 1);
    let observer = shares.observers(&vols[0])[0].clone();
    let other = if observer.as_str() == "a" {
        "z-b"
    } else {
        "z-a"
    };
    h.core.handle_sidecar_report(
        &observer,
        report(1, vec![volume(&vols[0], true, Some(other), false)], 0),
        h.now,
    );
    shares.apply(&h.drain());
    assert_ne!(shares.observers(&vols[0]), vec![observer]);
    check_assignment(&h, &shares, &zones);
}

/// One event of the flush property: a sidecar says Hello (with or without `watch_delta`, of a cluster-wide
/// or host-local driver, in a zone or none) and reports, disconnects; the cluster scales; a volume's zone
/// becomes known; an offer places a node (its volumes get a holder); time passes (prepares expire, absent
/// agents are forgotten).
#[derive(Debug, Clone)]
enum Event {
    Hello {
        sidecar: usize,
        delta: bool,
        local: bool,
        zone: Option<usize>,
    },
    Disconnect(usize),
    Scale(u64),
    Zone(u64, usize, usize),
    Offer(usize),
    Advance(u64),
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        3 => (0usize..6, proptest::bool::weighted(0.8), proptest::bool::weighted(0.15), proptest::option::of(0usize..3))
            .prop_map(|(sidecar, delta, local, zone)| Event::Hello { sidecar, delta, local, zone }),
        2 => (0usize..6).prop_map(Event::Disconnect),
        1 => (0u64..8).prop_map(Event::Scale),
        2 => (1u64..8, 0usize..3, 0usize..6).prop_map(|(n, z, s)| Event::Zone(n, z, s)),
        2 => (0usize..6).prop_map(Event::Offer),
        1 => prop_oneof![Just(1_000u64), Just(120_000), Just(4_000_000)].prop_map(Event::Advance),
    ]
}

/// Runs `event` on the core, then checks that the flush the next poll runs decides exactly as a
/// recomputation of every share from scratch: the same observers, the same shares, the same WatchDeltas
/// in the same order.
fn flush_as_from_scratch(
    h: &mut Harness,
    event: impl FnOnce(&mut crate::core::Core, Millis),
) -> Result<(), TestCaseError> {
    event(&mut h.core, h.now);
    let want = h.core.observation_from_scratch();
    let cmds = h.drain();
    let deltas: Vec<(Hostname, SidecarCommand)> = cmds
        .into_iter()
        .filter_map(|c| match c {
            Command::Sidecar {
                host,
                command: command @ SidecarCommand::WatchDelta { .. },
            } => Some((host, command)),
            _ => None,
        })
        .collect();
    prop_assert_eq!(deltas, want.commands);
    prop_assert_eq!(&h.core.observe.observer, &want.observer);
    prop_assert_eq!(&h.core.observe.shares, &want.shares);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_incremental_flush_decides_as_a_recomputation_from_scratch(
        events in proptest::collection::vec(event(), 1..40)
    ) {
        let mut h = harness(4);
        let mut seq = 1u64;
        let name = |i: usize| format!("s{i}");
        for e in events {
            match e {
                Event::Hello { sidecar, delta, local, zone } => {
                    let zone = zone.map(|z| ZONES[z]);
                    let mut hello = if delta {
                        hello_observing(&name(sidecar), zone, "i-1")
                    } else {
                        crate::testing::hello(&name(sidecar), zone, None, "i-1")
                    };
                    if local {
                        hello.driver_scope = DriverScope::Local;
                    }
                    flush_as_from_scratch(&mut h, |c, now| c.handle_sidecar_hello(hello, now))?;
                    seq += 1;
                    let s = seq;
                    flush_as_from_scratch(&mut h, |c, now| {
                        c.handle_sidecar_report(&host(&name(sidecar)), report(s, Vec::new(), 0), now);
                    })?;
                }
                Event::Disconnect(i) => {
                    flush_as_from_scratch(&mut h, |c, now| c.handle_sidecar_disconnected(&host(&name(i)), now))?;
                }
                Event::Scale(n) => {
                    flush_as_from_scratch(&mut h, |c, now| {
                        let _ = c.handle_scale(n, now);
                    })?;
                }
                Event::Zone(node, z, i) => {
                    let Some(rec) = h.core.persisted().slots.get(&NodeId(node)) else { continue };
                    for v in rec.volumes.clone() {
                        // Reported by its observer if it has one, else by sidecar `i`.
                        let by = h.core.observe.observer.get(&v).cloned().unwrap_or_else(|| host(&name(i)));
                        seq += 1;
                        let s = seq;
                        flush_as_from_scratch(&mut h, |c, now| {
                            c.handle_sidecar_report(&by, report(s, vec![volume(&v, true, Some(ZONES[z]), false)], 0), now);
                        })?;
                    }
                }
                Event::Offer(i) => {
                    let id = h.next_offer_id();
                    let o = offer(&id, &name(i), 4.0, 8192.0, 10_000.0);
                    flush_as_from_scratch(&mut h, |c, now| c.handle_offers(vec![o], now))?;
                }
                Event::Advance(ms) => {
                    h.now = h.now.plus(ms);
                    flush_as_from_scratch(&mut h, |c, now| c.handle_timeout(now))?;
                }
            }
        }
        prop_assert!(h.violations.is_empty(), "{:?}", h.violations);
    }
}
