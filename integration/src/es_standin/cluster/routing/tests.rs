use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::es_standin::image::EsVersion;

const V8: EsVersion = EsVersion::new(8, 15, 0);

fn node(id: &str, roles: &[&str], attrs: &[(&str, &str)], version: EsVersion) -> DiscoveryNode {
    DiscoveryNode {
        id: id.to_owned(),
        name: format!("name-{id}"),
        address: format!("127.0.0.{}:9300", id.len()).parse().expect("addr"),
        host: "127.0.0.1".into(),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        version,
        attributes: attrs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ephemeral_id: String::new(),
    }
}

fn data(id: &str) -> DiscoveryNode {
    node(id, &["master", "data"], &[], V8)
}

fn cluster(nodes: Vec<DiscoveryNode>) -> ClusterState {
    let mut s = ClusterState::empty("c");
    s.nodes = nodes.into_iter().map(|n| (n.id.clone(), n)).collect();
    s
}

fn add_index(s: &mut ClusterState, name: &str, shards: u32, replicas: u32) {
    let meta = IndexMeta {
        uuid: "u".into(),
        number_of_shards: shards,
        number_of_replicas: replicas,
        node_left_delay_ms: DEFAULT_NODE_LEFT_DELAY_MS,
        creation_date_ms: 0,
    };
    s.indices.insert(name.to_owned());
    s.routing
        .insert(name.to_owned(), new_index_routing(&meta, 0));
    s.metadata.indices.insert(name.to_owned(), meta);
}

fn settings(s: &ClusterState) -> AllocSettings {
    AllocSettings::effective(&s.metadata, &BTreeMap::new())
}

/// Reroutes and starts every initializing copy until nothing changes (recoveries that all succeed).
fn settle(s: &mut ClusterState, now: u64) {
    for _ in 0..20 {
        let before = s.clone();
        let set = settings(s);
        reroute(s, &set, now);
        let starting: Vec<(String, usize, String)> = s
            .routing
            .iter()
            .flat_map(|(i, shards)| {
                shards.iter().enumerate().flat_map(move |(n, t)| {
                    t.copies.iter().filter_map(move |c| match c.state {
                        CopyState::Initializing => {
                            Some((i.clone(), n, c.allocation_id.clone().expect("aid")))
                        }
                        CopyState::Relocating => {
                            Some((i.clone(), n, c.target_allocation_id.clone().expect("aid")))
                        }
                        _ => None,
                    })
                })
            })
            .collect();
        for (i, n, aid) in starting {
            assert!(shard_started(s, &i, n, &aid));
        }
        if *s == before {
            return;
        }
    }
}

fn copies(s: &ClusterState, index: &str) -> Vec<(bool, CopyState, Option<String>)> {
    s.routing[index]
        .iter()
        .flat_map(|t| {
            t.copies
                .iter()
                .map(|c| (c.primary, c.state, c.node.clone()))
        })
        .collect()
}

fn health(s: &ClusterState) -> Health {
    let mut h = Health::default();
    for t in s.routing.values().flatten() {
        h.add(t);
    }
    h
}

#[test]
fn copies_spread_over_data_nodes_never_two_on_one() {
    let mut s = cluster(vec![
        data("a"),
        data("b"),
        node("m", &["master"], &[], V8),
        node("c", &[], &[], V8),
    ]);
    add_index(&mut s, "i", 3, 1);
    settle(&mut s, 0);
    for t in &s.routing["i"] {
        let holders: BTreeSet<_> = t.copies.iter().filter_map(|c| c.node.clone()).collect();
        assert_eq!(holders, BTreeSet::from(["a".into(), "b".into()]), "{t:?}");
    }
    assert_eq!(health(&s).status, 0);
    // One data node: the replicas stay unassigned (yellow).
    let mut one = cluster(vec![data("a"), node("m", &["master"], &[], V8)]);
    add_index(&mut one, "i", 2, 1);
    settle(&mut one, 0);
    let h = health(&one);
    assert_eq!((h.status, h.unassigned, h.active_primary), (1, 2, 2));
}

#[test]
fn a_departed_primary_is_replaced_by_its_replica_and_the_copy_waits_for_its_node() {
    let mut s = cluster(vec![data("a"), data("b"), data("c")]);
    add_index(&mut s, "i", 1, 1);
    settle(&mut s, 0);
    let primary_node = s.routing["i"][0]
        .primary()
        .and_then(|p| p.node.clone())
        .expect("p");
    s.nodes.remove(&primary_node);
    node_left(&mut s, &primary_node, 1000);
    let t = &s.routing["i"][0];
    let p = t.primary().expect("primary");
    assert_eq!(p.state, CopyState::Started, "the replica was promoted");
    assert_ne!(p.node.as_deref(), Some(primary_node.as_str()));
    // The departed copy is delayed (1m) rather than rebuilt on the third node at once.
    settle(&mut s, 2000);
    let h = health(&s);
    assert_eq!(
        (h.status, h.delayed_unassigned),
        (1, 1),
        "{:?}",
        copies(&s, "i")
    );
    // After the delay it is rebuilt elsewhere.
    settle(&mut s, 1000 + DEFAULT_NODE_LEFT_DELAY_MS);
    assert_eq!(health(&s).status, 0, "{:?}", copies(&s, "i"));
}

#[test]
fn a_returning_node_gets_its_copy_back_before_the_delay_ends() {
    let mut s = cluster(vec![data("a"), data("b"), data("c")]);
    add_index(&mut s, "i", 1, 1);
    settle(&mut s, 0);
    let replica = s.routing["i"][0]
        .copies
        .iter()
        .find(|c| !c.primary)
        .and_then(|c| c.node.clone())
        .expect("replica node");
    let back = s.nodes.remove(&replica).expect("node");
    node_left(&mut s, &replica, 1000);
    s.nodes.insert(back.id.clone(), back);
    settle(&mut s, 2000);
    let holders: BTreeSet<_> = s.routing["i"][0]
        .copies
        .iter()
        .filter_map(|c| c.node.clone())
        .collect();
    assert!(holders.contains(&replica), "{holders:?}");
    assert_eq!(health(&s).status, 0);
}

#[test]
fn the_last_copy_goes_back_only_to_a_node_that_holds_it() {
    let mut s = cluster(vec![data("a"), data("b")]);
    add_index(&mut s, "i", 1, 0);
    settle(&mut s, 0);
    let holder = s.routing["i"][0]
        .primary()
        .and_then(|p| p.node.clone())
        .expect("p");
    let gone = s.nodes.remove(&holder).expect("node");
    node_left(&mut s, &holder, 1000);
    settle(&mut s, 1000);
    assert_eq!(health(&s).status, 2, "red: no other node has the data");
    assert_eq!(s.routing["i"][0].in_sync, BTreeSet::from([holder.clone()]));
    // The same node (same id: its data path) comes back: the primary returns to it.
    s.nodes.insert(gone.id.clone(), gone);
    settle(&mut s, 2000);
    assert_eq!(
        s.routing["i"][0].primary().and_then(|p| p.node.clone()),
        Some(holder)
    );
    assert_eq!(health(&s).status, 0);
}

#[test]
fn excluded_and_removed_nodes_shed_their_copies() {
    let mut s = cluster(vec![data("a"), data("b"), data("c")]);
    add_index(&mut s, "i", 2, 1);
    settle(&mut s, 0);
    s.metadata.transient.insert(
        "cluster.routing.allocation.exclude._name".into(),
        "name-a".into(),
    );
    settle(&mut s, 0);
    assert!(
        copies(&s, "i").iter().all(|c| c.2.as_deref() != Some("a")),
        "{:?}",
        copies(&s, "i")
    );
    // A `remove` shutdown moves the copies away too; with two data nodes left and one replica
    // there is nowhere for them: they stay.
    s.metadata.shutdowns.insert(
        "b".into(),
        ShutdownRecord {
            node_id: "b".into(),
            kind: "remove".into(),
            reason: "r".into(),
            started_ms: 0,
            allocation_delay_ms: None,
            target_node_name: None,
        },
    );
    settle(&mut s, 0);
    assert!(copies(&s, "i").iter().any(|c| c.2.as_deref() == Some("b")));
    s.metadata.transient.clear();
    settle(&mut s, 0);
    assert!(
        copies(&s, "i").iter().all(|c| c.2.as_deref() != Some("b")),
        "{:?}",
        copies(&s, "i")
    );
}

#[test]
fn allocation_enable_limits_what_is_assigned() {
    let mut s = cluster(vec![data("a"), data("b")]);
    s.metadata
        .transient
        .insert("cluster.routing.allocation.enable".into(), "none".into());
    add_index(&mut s, "i", 1, 1);
    settle(&mut s, 0);
    assert_eq!(health(&s).unassigned, 2, "none: nothing");
    s.metadata.transient.insert(
        "cluster.routing.allocation.enable".into(),
        "primaries".into(),
    );
    settle(&mut s, 0);
    let h = health(&s);
    assert_eq!((h.active_primary, h.unassigned), (1, 1), "primaries only");
    s.metadata
        .persistent
        .insert("cluster.routing.allocation.enable".into(), "all".into());
    settle(&mut s, 0);
    assert_eq!(health(&s).unassigned, 1, "transient wins over persistent");
    s.metadata.transient.clear();
    settle(&mut s, 0);
    assert_eq!(health(&s).status, 0);
    // new_primaries: a new index's primaries only.
    s.metadata.transient.insert(
        "cluster.routing.allocation.enable".into(),
        "new_primaries".into(),
    );
    add_index(&mut s, "j", 1, 1);
    settle(&mut s, 0);
    assert_eq!(health(&s).unassigned, 1);
}

#[test]
fn awareness_spreads_copies_over_zones_and_skips_nodes_without_the_attribute() {
    let z = |id: &str, zone: &str| node(id, &["data"], &[("zone", zone)], V8);
    let mut s = cluster(vec![z("a1", "z1"), z("a2", "z1"), z("b1", "z2"), data("x")]);
    s.metadata.persistent.insert(
        "cluster.routing.allocation.awareness.attributes".into(),
        "zone".into(),
    );
    add_index(&mut s, "i", 4, 1);
    settle(&mut s, 0);
    for t in &s.routing["i"] {
        let zones: BTreeSet<String> = t
            .copies
            .iter()
            .filter_map(|c| c.node.as_ref())
            .map(|n| {
                s.nodes[n]
                    .attributes
                    .get("zone")
                    .cloned()
                    .expect("zoned node")
            })
            .collect();
        assert_eq!(zones.len(), 2, "{t:?}");
    }
    // Forced awareness with a missing zone: replicas stay unassigned rather than crowd z1.
    let mut f = cluster(vec![z("a1", "z1"), z("a2", "z1")]);
    f.metadata.persistent.insert(
        "cluster.routing.allocation.awareness.attributes".into(),
        "zone".into(),
    );
    f.metadata.persistent.insert(
        "cluster.routing.allocation.awareness.force.zone.values".into(),
        "z1,z2".into(),
    );
    add_index(&mut f, "i", 1, 1);
    settle(&mut f, 0);
    assert_eq!(health(&f).unassigned, 1);
}

#[test]
fn a_replica_never_goes_to_a_node_older_than_its_primary() {
    let old = EsVersion::new(7, 17, 22);
    let mut s = cluster(vec![
        node("new", &["data"], &[], V8),
        node("old", &["data"], &[], old),
    ]);
    s.metadata.transient.insert(
        "cluster.routing.allocation.exclude._name".into(),
        "name-old".into(),
    );
    add_index(&mut s, "i", 1, 1);
    settle(&mut s, 0);
    s.metadata.transient.clear();
    settle(&mut s, 0);
    let t = &s.routing["i"][0];
    assert_eq!(t.primary().and_then(|p| p.node.as_deref()), Some("new"));
    assert_eq!(health(&s).unassigned, 1, "{t:?}");
}

#[test]
fn a_restart_shutdown_delays_reallocation_by_its_allocation_delay() {
    let mut s = cluster(vec![data("a"), data("b"), data("c")]);
    add_index(&mut s, "i", 1, 1);
    settle(&mut s, 0);
    let replica = s.routing["i"][0]
        .copies
        .iter()
        .find(|c| !c.primary)
        .and_then(|c| c.node.clone())
        .expect("replica");
    s.metadata.shutdowns.insert(
        replica.clone(),
        ShutdownRecord {
            node_id: replica.clone(),
            kind: "restart".into(),
            reason: "r".into(),
            started_ms: 0,
            allocation_delay_ms: Some(600_000),
            target_node_name: None,
        },
    );
    s.nodes.remove(&replica);
    node_left(&mut s, &replica, 0);
    // Past the index's 1m delay, within the shutdown's 10m: still waiting.
    settle(&mut s, 120_000);
    assert_eq!(health(&s).delayed_unassigned, 1);
    settle(&mut s, 600_001);
    assert_eq!(health(&s).status, 0);
}

#[test]
fn a_relocation_keeps_the_copy_active_until_the_target_started() {
    let mut s = cluster(vec![data("a"), data("b"), data("c")]);
    add_index(&mut s, "i", 1, 1);
    settle(&mut s, 0);
    let victim = s.routing["i"][0].copies[1].node.clone().expect("node");
    s.metadata.transient.insert(
        "cluster.routing.allocation.exclude._id".into(),
        victim.clone(),
    );
    let set = settings(&s);
    reroute(&mut s, &set, 0);
    let h = health(&s);
    assert_eq!((h.relocating, h.active, h.status), (1, 2, 0));
    let c = &s.routing["i"][0].copies[1];
    let aid = c.target_allocation_id.clone().expect("target");
    let target = c.relocating_node.clone().expect("target node");
    assert!(shard_started(&mut s, "i", 0, &aid));
    let c = &s.routing["i"][0].copies[1];
    assert_eq!(
        (c.state, c.node.clone()),
        (CopyState::Started, Some(target.clone()))
    );
    assert!(s.routing["i"][0].in_sync.contains(&target));
    assert!(!s.routing["i"][0].in_sync.contains(&victim));
}

/// A node's own `cluster.routing.*` settings are validated at start-up as Elasticsearch does: a typo is
/// an unknown setting with a suggestion, a real but unmodelled setting is accepted, a bad value refused.
#[test]
fn start_up_refuses_unknown_routing_settings_and_bad_values() {
    // Long keys sharing a prefix are all similar: the closest comes first.
    let typo = startup_error("cluster.routing.allocation.enabled", "all").expect("unknown");
    assert!(
        typo.starts_with(
            "unknown setting [cluster.routing.allocation.enabled] did you mean any of [cluster.routing.allocation.enable, "
        ),
        "{typo}"
    );
    assert_eq!(
        startup_error("cluster.routing.rebalance.enablx", "all").as_deref(),
        Some(
            "unknown setting [cluster.routing.rebalance.enablx] did you mean [cluster.routing.rebalance.enable]?"
        )
    );
    let far = startup_error("cluster.routing.zzz", "1").expect("unknown");
    assert!(
        far.ends_with("please check that any required plugins are installed, or check the breaking changes documentation for removed settings"),
        "{far}"
    );
    assert_eq!(
        startup_error("cluster.routing.allocation.enable", "sometimes").as_deref(),
        Some("Illegal allocation.enable value [SOMETIMES]")
    );
    for fine in [
        ("cluster.routing.allocation.enable", "primaries"),
        ("cluster.routing.allocation.exclude._name", "a,b"),
        ("cluster.routing.allocation.disk.watermark.low", "85%"),
        (
            "cluster.routing.allocation.desired_balance.progress_log_interval",
            "1m",
        ),
        ("node.attr.zone", "z1"),
    ] {
        assert_eq!(startup_error(fine.0, fine.1), None, "{fine:?}");
    }
    assert!((similarity("abc", "abc") - 1.0).abs() < f32::EPSILON);
    assert!((similarity("abcd", "abce") - 0.75).abs() < f32::EPSILON);
}

#[test]
fn settings_values_and_wildcards() {
    assert!(known_setting("cluster.routing.allocation.exclude._name"));
    assert!(!known_setting("cluster.routing.allocation.bogus"));
    assert!(invalid_value("cluster.routing.allocation.enable", "some").is_some());
    assert!(invalid_value("cluster.routing.allocation.enable", "primaries").is_none());
    assert!(simple_match("es-*", "es-3"));
    assert!(simple_match("*-3", "es-3"));
    assert!(!simple_match("es-*", "x-3"));
}

#[test]
fn a_new_data_node_receives_copies_once_all_are_active() {
    let mut s = cluster(vec![data("a"), data("b")]);
    add_index(&mut s, "i", 3, 1);
    settle(&mut s, 0);
    s.nodes.insert("c".into(), data("c"));
    settle(&mut s, 0);
    let on_c = copies(&s, "i")
        .iter()
        .filter(|c| c.2.as_deref() == Some("c"))
        .count();
    assert_eq!(on_c, 2, "6 copies over 3 nodes: {:?}", copies(&s, "i"));
    assert_eq!(health(&s).status, 0);
    // Not with rebalancing off.
    let mut off = cluster(vec![data("a"), data("b")]);
    off.metadata
        .persistent
        .insert("cluster.routing.rebalance.enable".into(), "none".into());
    add_index(&mut off, "i", 3, 1);
    settle(&mut off, 0);
    off.nodes.insert("c".into(), data("c"));
    settle(&mut off, 0);
    assert!(
        copies(&off, "i")
            .iter()
            .all(|c| c.2.as_deref() != Some("c"))
    );
}

#[test]
fn a_drained_node_gets_copies_back_when_its_shutdown_record_goes() {
    let mut s = cluster(vec![data("a"), data("b"), data("c")]);
    add_index(&mut s, "i", 2, 1);
    settle(&mut s, 0);
    let record = |kind: &str| ShutdownRecord {
        node_id: "c".into(),
        kind: kind.into(),
        reason: "r".into(),
        started_ms: 0,
        allocation_delay_ms: None,
        target_node_name: None,
    };
    s.metadata.shutdowns.insert("c".into(), record("remove"));
    settle(&mut s, 0);
    assert!(copies(&s, "i").iter().all(|c| c.2.as_deref() != Some("c")));
    s.metadata.shutdowns.insert("c".into(), record("restart"));
    settle(&mut s, 0);
    assert!(
        copies(&s, "i").iter().any(|c| c.2.as_deref() == Some("c")),
        "{:?}",
        copies(&s, "i")
    );
}
