//! Property test of one placement round: whatever the offers, the launched nodes sit on distinct agents,
//! distinct `rack` values (`rack:UNIQUE`), on offers that fit, and no fitting offer is declined while a
//! node stays pending (the round is maximal).

use crate::config::Constraint;
use crate::domain::AttributeValue;
use crate::testing::*;
use proptest::prelude::*;
use std::collections::BTreeSet;

proptest! {
    #[test]
    fn a_round_places_validly_and_maximally(
        nodes in 0u64..8,
        offers in proptest::collection::vec((0u8..6, 0.5f64..4.0, 512f64..4096.0), 0..20),
    ) {
        let mut cfg = config(crate::Strategy::Normal);
        cfg.constraints = vec![Constraint::Unique("rack".into())];
        let mut h = Harness::new(cfg);
        h.subscribe();
        let _ = h.core.handle_scale(nodes, h.now);
        h.drain();
        let list: Vec<_> = offers
            .iter()
            .enumerate()
            .map(|(i, (host_i, cpus, mem))| {
                // An agent has one set of attributes: two racks of three agents each.
                let rack = host_i % 3;
                let mut o = offer(&format!("o-{i}"), &format!("h{host_i}"), *cpus, *mem, 1000.0);
                o.attributes = vec![("rack".into(), AttributeValue::Text(format!("r{rack}")))];
                o
            })
            .collect();
        let cmds = h.offers(list.clone());
        let launched = accepts(&cmds);
        let hosts: BTreeSet<_> = launched.iter().map(|l| l.host.clone()).collect();
        prop_assert_eq!(hosts.len(), launched.len(), "two nodes on one agent");
        let racks: BTreeSet<_> = launched
            .iter()
            .filter_map(|l| list.iter().find(|o| o.hostname == l.host))
            .filter_map(|o| o.attribute("rack"))
            .collect();
        prop_assert_eq!(racks.len(), launched.len(), "two nodes on one rack");
        let cfg = h.core.config().clone();
        let fits = |o: &crate::domain::Offer| o.cpus >= cfg.cpus && o.mem_mb >= cfg.mem_mb;
        for l in &launched {
            let used = cmds.iter().find_map(|c| match c {
                crate::Command::Mesos(crate::MesosCommand::Accept { offer_id, launch, .. }) if launch.task_id == l.task_id => Some(offer_id.clone()),
                _ => None,
            });
            let o = list.iter().find(|o| Some(&o.id) == used.as_ref());
            prop_assert!(o.is_some_and(fits), "launched on an offer that does not fit");
        }
        if (launched.len() as u64) < nodes {
            let spare = list.iter().any(|o| {
                fits(o) && !hosts.contains(&o.hostname) && o.attribute("rack").is_some_and(|r| !racks.contains(&r))
            });
            prop_assert!(!spare, "a fitting offer was declined while a node stays pending");
        }
        prop_assert!(h.violations.is_empty());
        prop_assert!(h.core.check_invariants().is_ok());
    }
}

#[test]
fn a_round_on_the_callers_list_leaves_it_empty_with_its_room() {
    let mut h = Harness::new(config(crate::Strategy::Normal));
    h.subscribe();
    h.core.handle_scale(1, h.now).expect("scale");
    h.drain();
    let mut list: Vec<_> = (0..3)
        .map(|i| offer(&format!("o-{i}"), &format!("h{i}"), 4.0, 8192.0, 1000.0))
        .collect();
    let room = list.capacity();
    h.core.handle_offers_in(&mut list, h.now);
    let cmds = h.drain();
    assert_eq!(accepts(&cmds).len(), 1);
    // Declined offers stay behind with their ids taken: a shell refilling the list must find it empty.
    assert!(list.is_empty(), "{list:?}");
    assert_eq!(list.capacity(), room);
    // The next event's offers go into the same list; the node is placed, so they are all declined.
    list.push(offer("o-3", "h3", 4.0, 8192.0, 1000.0));
    h.core.handle_offers_in(&mut list, h.now);
    assert!(accepts(&h.drain()).is_empty());
    assert!(list.is_empty());
    check(&h);
}
