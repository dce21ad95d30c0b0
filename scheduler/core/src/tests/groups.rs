//! Node groups: per-group ids, names and volumes, roles, bootstrap and seeds of master-eligible nodes
//! only, scale per group, validation, and old (group-less) state loading into the default group.

use crate::GroupSpec;
use crate::command::{LaunchSpec, env};
use crate::domain::TaskState;
use crate::error::CoreError;
use crate::ids::{GroupName, NodeId};
use crate::state::{GroupRecord, PersistedState};
use crate::testing::*;
use crate::{Config, Core};

fn group(text: &str) -> GroupSpec {
    GroupSpec::parse(text).unwrap_or_else(|e| panic!("{e}"))
}

/// Dedicated masters (3) and data nodes (2) with more memory.
fn two_groups() -> Config {
    let mut c = config(crate::Strategy::Normal);
    c.groups = vec![
        group("masters:3:roles=master:mem=512:heap=256"),
        group("data:2:roles=data+ingest:mem=2048"),
    ];
    c
}

fn env_of<'a>(l: &'a LaunchSpec, key: &str) -> Option<&'a str> {
    l.env
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn launch_all(h: &mut Harness, hosts: &[&str]) -> Vec<LaunchSpec> {
    accepts(&h.offers_from(hosts))
}

#[test]
fn group_specs_parse_and_refuse_what_they_cannot_mean() {
    let g = group("masters:3:roles=master+voting_only:cpus=0.5:mem=1024:heap=512:disk=10");
    assert_eq!(g.name.as_str(), "masters");
    assert_eq!(g.count, 3);
    assert_eq!(g.roles, Some(vec!["master".into(), "voting_only".into()]));
    assert_eq!(
        (g.cpus, g.mem_mb, g.heap_mb, g.disk_mb),
        (Some(0.5), Some(1024.0), Some(512), Some(10.0))
    );
    assert_eq!(group("coord:2:roles=").roles, Some(vec![]));
    assert_eq!(group("all:2").roles, None);
    for bad in [
        "masters",
        "masters:x",
        "Masters:1",
        "data1:1",
        "m:1:roles=master:roles=data",
        "m:1:cpu=2",
        "m:1:mem=-1",
        "m:1:heap",
    ] {
        assert!(GroupSpec::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn validation_refuses_duplicates_unknown_roles_and_no_master() {
    let refused = |groups: &[&str]| {
        let mut c = config(crate::Strategy::Normal);
        c.groups = groups.iter().map(|g| group(g)).collect();
        match c.validate() {
            Err(CoreError::InvalidConfig(m)) => m,
            other => panic!("{groups:?}: {other:?}"),
        }
    };
    assert!(refused(&["a:1", "a:2"]).contains("given twice"));
    assert!(refused(&["a:1:roles=master+boss"]).contains("unknown Elasticsearch role \"boss\""));
    assert!(refused(&["a:1:roles=master+master"]).contains("listed twice"));
    assert!(refused(&["a:1:roles=data+voting_only"]).contains("needs the master role"));
    let m = refused(&["data:2:roles=data", "coord:1:roles="]);
    assert!(m.contains("no --group is master-eligible"), "{m}");
    assert!(refused(&["a:1:cpus=0"]).contains("must be positive"));

    let mut roles_twice = two_groups();
    roles_twice.es_settings = vec![("node.roles".into(), "master".into())];
    assert!(roles_twice.validate().is_err());
    let mut template = two_groups();
    template.volume_name_template = "{cluster}{id}{volume}".into();
    assert!(template.validate().is_err());
    assert_eq!(two_groups().validate(), Ok(()));
    // One group of every role is a cluster too.
    let mut one = config(crate::Strategy::Normal);
    one.groups = vec![group("all:3")];
    assert_eq!(one.validate(), Ok(()));
}

#[test]
fn each_group_has_its_own_ids_names_and_volumes() {
    let h = Harness::new(two_groups());
    check(&h);
    let nodes = h.core.nodes(h.now);
    let names: Vec<(String, u64, String)> = nodes
        .iter()
        .map(|n| {
            (
                n.group.clone(),
                n.node_id.ordinal(),
                n.volumes
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            )
        })
        .collect();
    assert_eq!(
        names,
        vec![
            (
                "masters".into(),
                1,
                "es-masters1config,es-masters1data".into()
            ),
            (
                "masters".into(),
                2,
                "es-masters2config,es-masters2data".into()
            ),
            (
                "masters".into(),
                3,
                "es-masters3config,es-masters3data".into()
            ),
            ("data".into(), 1, "es-data1config,es-data1data".into()),
            ("data".into(), 2, "es-data2config,es-data2data".into()),
        ]
    );
    // The groups' indexes are persisted in the order the flags first named them.
    assert_eq!(
        h.core
            .persisted()
            .groups
            .get(&GroupName::new("data").unwrap_or_else(|e| panic!("{e}"))),
        Some(&GroupRecord {
            index: 2,
            desired: 2
        })
    );
    assert_eq!(h.core.persisted().desired, 0);
    let groups = h.core.cluster().groups;
    let summary: Vec<(String, u64)> = groups.iter().map(|g| (g.name.clone(), g.desired)).collect();
    assert_eq!(summary, vec![("masters".into(), 3), ("data".into(), 2)]);
    assert_eq!(h.core.cluster().desired, 5);
}

#[test]
fn launches_carry_roles_resources_and_a_bootstrap_of_masters_only() {
    let mut h = Harness::new(two_groups());
    h.subscribe();
    // The data nodes wait for a master to be launched: they would have no seed.
    let first = launch_all(&mut h, &["a1", "a2", "a3", "a4", "a5"]);
    let ids: Vec<String> = first.iter().map(|l| l.task_id.to_string()).collect();
    assert_eq!(
        ids,
        vec!["es-masters-1.1", "es-masters-2.1", "es-masters-3.1"]
    );
    let waiting = h
        .core
        .nodes(h.now)
        .into_iter()
        .find(|n| n.group == "data")
        .and_then(|n| n.last_reason)
        .unwrap_or_default();
    assert!(waiting.contains("master-eligible"), "{waiting}");
    for l in &first {
        assert_eq!(env_of(l, env::NODE_ROLES), Some("master"));
        assert_eq!(
            env_of(l, env::INITIAL_MASTER_NODES),
            Some("es-masters-1,es-masters-2,es-masters-3")
        );
        assert_eq!((l.mem_mb, l.heap_mb, l.cpus), (512.0, 256, 1.0));
        assert_eq!(env_of(l, env::JAVA_OPTS), Some("-Xms256m -Xmx256m"));
    }
    assert_eq!(first[0].name, "es-masters-1");
    assert_eq!(env_of(&first[0], env::NODE_ID), Some("1"));

    let data = launch_all(&mut h, &["b1", "b2"]);
    let ids: Vec<String> = data.iter().map(|l| l.task_id.to_string()).collect();
    assert_eq!(ids, vec!["es-data-1.1", "es-data-2.1"]);
    for l in &data {
        assert_eq!(env_of(l, env::NODE_ROLES), Some("data,ingest"));
        assert_eq!(env_of(l, env::INITIAL_MASTER_NODES), None);
        assert_eq!((l.mem_mb, l.heap_mb), (2048.0, 512));
        // Seeds: the masters only, never the other data node.
        let seeds = env_of(l, env::SEED_HOSTS).unwrap_or_default();
        assert_eq!(seeds.split(',').count(), 3, "{seeds}");
        assert!(seeds.split(',').all(|s| s.starts_with('a')), "{seeds}");
    }
    check(&h);
}

#[test]
fn an_offer_too_small_for_a_group_goes_to_another() {
    let mut h = Harness::new(two_groups());
    h.subscribe();
    launch_all(&mut h, &["a1", "a2", "a3"]);
    // 1 GiB fits no data node (2 GiB each): declined, the data nodes keep waiting.
    let id = h.next_offer_id();
    let cmds = h.offers(vec![offer(&id, "small", 4.0, 1024.0, 1000.0)]);
    assert!(accepts(&cmds).is_empty());
    let id = h.next_offer_id();
    let cmds = h.offers(vec![offer(&id, "big", 4.0, 4096.0, 1000.0)]);
    assert_eq!(accepts(&cmds)[0].task_id.as_str(), "es-data-1.1");
    check(&h);
}

#[test]
fn a_coordinating_group_gets_an_empty_role_list() {
    let mut c = config(crate::Strategy::Normal);
    c.groups = vec![group("all:1"), group("coord:1:roles=")];
    let mut h = Harness::new(c);
    h.subscribe();
    let first = launch_all(&mut h, &["a1", "a2"]);
    assert_eq!(first.len(), 1, "the coordinating node waits for the master");
    assert_eq!(env_of(&first[0], env::NODE_ROLES), None);
    assert_eq!(
        env_of(&first[0], env::INITIAL_MASTER_NODES),
        Some("es-all-1")
    );
    let coord = launch_all(&mut h, &["a2"]);
    assert_eq!(env_of(&coord[0], env::NODE_ROLES), Some("[]"));
    assert_eq!(env_of(&coord[0], env::INITIAL_MASTER_NODES), None);
    check(&h);
}

#[test]
fn scale_per_group_stops_that_groups_highest_ids() {
    let mut h = Harness::new(two_groups());
    h.subscribe();
    launch_all(&mut h, &["a1", "a2", "a3"]);
    let data = launch_all(&mut h, &["b1", "b2"]);
    for l in &data {
        h.update(status(
            &l.task_id,
            l.host.as_str(),
            TaskState::Running,
            Some("u"),
        ));
    }
    let plan = h
        .core
        .handle_scale_group("data", 4, false, h.now)
        .unwrap_or_else(|e| panic!("{e}"));
    h.drain();
    assert_eq!(
        plan.start.iter().map(|n| n.ordinal()).collect::<Vec<_>>(),
        vec![3, 4]
    );
    assert!(plan.start.iter().all(|n| h.core.group_name(*n) == "data"));
    let plan = h
        .core
        .handle_scale_group("data", 1, false, h.now)
        .unwrap_or_else(|e| panic!("{e}"));
    let cmds = h.drain();
    assert_eq!(
        plan.stop.iter().map(|n| n.ordinal()).collect::<Vec<_>>(),
        vec![4, 3, 2]
    );
    // The watch says which group changed: a bare "4 -> 1" would read as the whole cluster's count.
    let scaled: Vec<_> = cmds
        .iter()
        .filter_map(|c| match c {
            crate::Command::Watch(crate::WatchEvent::Scaled { group, from, to }) => {
                Some((group.as_ref().map(|g| g.as_str().to_owned()), *from, *to))
            }
            _ => None,
        })
        .collect();
    assert_eq!(scaled, vec![(Some("data".to_owned()), 4, 1)]);
    // Data node 2 ran: it is killed; the masters are untouched.
    let killed: Vec<String> = cmds
        .iter()
        .filter_map(|c| match c {
            crate::Command::Mesos(crate::MesosCommand::Kill { task_id, .. }) => {
                Some(task_id.to_string())
            }
            _ => None,
        })
        .collect();
    assert_eq!(killed, vec!["es-data-2.1"]);
    let masters = h
        .core
        .cluster()
        .groups
        .into_iter()
        .find(|g| g.name == "masters")
        .map(|g| g.desired);
    assert_eq!(masters, Some(3));
    assert!(h.core.handle_scale_group("nope", 1, false, h.now).is_err());
    check(&h);
    // A restart loads every group's count and slots back.
    h.restart();
    check(&h);
    assert_eq!(
        h.core
            .cluster()
            .groups
            .iter()
            .map(|g| (g.name.as_str(), g.desired))
            .collect::<Vec<_>>(),
        vec![("masters", 3), ("data", 1)]
    );
}

#[test]
fn start_up_flags_seed_new_groups_and_the_stored_counts_win() {
    let mut h = Harness::new(two_groups());
    h.core
        .handle_scale_group("data", 5, false, h.now)
        .unwrap_or_else(|e| panic!("{e}"));
    h.drain();
    // Restarted with the same flags (data:2) and a new group: data keeps 5, coord starts at its 2.
    let mut c = two_groups();
    c.groups.push(group("coord:2:roles="));
    let mut h2 = Harness::restore(c, h.store.clone());
    check(&h2);
    let counts: Vec<(String, u64)> = h2
        .core
        .cluster()
        .groups
        .into_iter()
        .map(|g| (g.name, g.desired))
        .collect();
    assert_eq!(
        counts,
        vec![
            ("masters".into(), 3),
            ("data".into(), 5),
            ("coord".into(), 2)
        ]
    );
    // A stored group that still wants nodes cannot lose its flag.
    let mut dropped = two_groups();
    dropped.groups.truncate(1);
    dropped.groups.push(group("coord:2:roles="));
    match Core::new(dropped, h2.store.clone()) {
        Err(CoreError::InvalidConfig(m)) => assert!(m.contains("group data"), "{m}"),
        other => panic!("{other:?}"),
    }
    // Scaled to 0 first, it can: its slots and volumes stay, under its index.
    h2.core
        .handle_scale_group("data", 0, false, h2.now)
        .unwrap_or_else(|e| panic!("{e}"));
    h2.drain();
    let mut dropped = two_groups();
    dropped.groups.truncate(1);
    dropped.groups.push(group("coord:2:roles="));
    let h3 = Harness::restore(dropped, h2.store.clone());
    check(&h3);
    assert_eq!(
        h3.core
            .nodes(h3.now)
            .iter()
            .filter(|n| n.group == "data")
            .count(),
        5
    );
}

#[test]
fn old_state_without_groups_loads_into_the_default_group_unchanged() {
    // A state document as schedulers before groups wrote it.
    let old = serde_json::to_value(sample_state()).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        old.get("groups").is_none(),
        "an empty group table is not written"
    );
    let state: PersistedState = serde_json::from_value(old).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(state, sample_state());
    let h = Harness::restore(config(crate::Strategy::Normal), state.clone());
    check(&h);
    let mut seeded = h.core.persisted().clone();
    assert_eq!(
        seeded.node_config.take().map(|t| t.generation),
        Some(1),
        "the stored configuration is seeded from the flags as generation 1"
    );
    assert_eq!(seeded, state, "nothing else rewritten");
    let nodes = h.core.nodes(h.now);
    assert!(nodes.iter().all(|n| n.group == "default"));
    assert_eq!(
        nodes.iter().map(|n| n.node_id).collect::<Vec<_>>(),
        vec![NodeId(1), NodeId(2), NodeId(3)]
    );
    let groups = h.core.cluster().groups;
    assert_eq!(groups.len(), 1);
    assert_eq!((groups[0].name.as_str(), groups[0].desired), ("default", 2));
    // The default group's names are the 2016 framework's.
    let mut fresh = Harness::new(config(crate::Strategy::Normal));
    fresh.subscribe();
    fresh
        .core
        .handle_scale(1, fresh.now)
        .unwrap_or_else(|e| panic!("{e}"));
    fresh.drain();
    let l = launch_all(&mut fresh, &["a1"]);
    assert_eq!(l[0].task_id.as_str(), "es-1.1");
    assert_eq!(l[0].name, "es-1");
    assert_eq!(
        l[0].volumes
            .iter()
            .map(|v| v.name.to_string())
            .collect::<Vec<_>>(),
        vec!["es1config", "es1data"]
    );
    assert_eq!(env_of(&l[0], env::NODE_ROLES), None);
}

#[test]
fn the_default_group_can_be_kept_beside_new_groups() {
    // An existing cluster of 2 default nodes gains dedicated masters: `--group default:2 --group ...`.
    let mut h = Harness::new(config(crate::Strategy::Normal));
    h.core
        .handle_scale(2, h.now)
        .unwrap_or_else(|e| panic!("{e}"));
    h.drain();
    let mut c = config(crate::Strategy::Normal);
    c.groups = vec![group("masters:3:roles=master")];
    match Core::new(c.clone(), h.store.clone()) {
        Err(CoreError::InvalidConfig(m)) => {
            assert!(m.contains("--group default:2"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    c.groups.push(group("default:2:roles=data"));
    let mut h2 = Harness::restore(c, h.store.clone());
    check(&h2);
    h2.subscribe();
    let l = launch_all(&mut h2, &["a1", "a2", "a3", "a4", "a5"]);
    let ids: Vec<&str> = l.iter().map(|l| l.task_id.as_str()).collect();
    assert_eq!(
        ids,
        vec!["es-masters-1.1", "es-masters-2.1", "es-masters-3.1"]
    );
    let l = launch_all(&mut h2, &["b1", "b2"]);
    let ids: Vec<&str> = l.iter().map(|l| l.task_id.as_str()).collect();
    assert_eq!(
        ids,
        vec!["es-1.1", "es-2.1"],
        "the default group keeps its names"
    );
    assert_eq!(env_of(&l[0], env::NODE_ROLES), Some("data"));
    check(&h2);
}

#[test]
fn state_check_refuses_inconsistent_groups() {
    let mut s = sample_state();
    let name = |n: &str| GroupName::new(n).unwrap_or_else(|e| panic!("{e}"));
    s.groups.insert(
        name("a"),
        GroupRecord {
            index: 1,
            desired: 0,
        },
    );
    assert_eq!(s.check(), Ok(()));
    let mut twice = s.clone();
    twice.groups.insert(
        name("b"),
        GroupRecord {
            index: 1,
            desired: 0,
        },
    );
    assert!(twice.check().unwrap_err().contains("share index"));
    let mut zero = s.clone();
    zero.groups.insert(
        name("b"),
        GroupRecord {
            index: 0,
            desired: 0,
        },
    );
    assert!(zero.check().is_err());
    let mut orphan = s;
    let mut rec = orphan.slots[&NodeId(1)].clone();
    rec.node_id = NodeId::in_group(7, 1);
    rec.volumes = vec![vol("es-x1data")];
    rec.task = None;
    orphan.slots.insert(rec.node_id, rec);
    assert!(orphan.check().unwrap_err().contains("no group has"));
    // Writes rebuild a state with groups.
    let h = Harness::new(two_groups());
    let mut rebuilt = PersistedState::default();
    for w in h.core.persisted().writes() {
        rebuilt.apply(&w);
    }
    assert_eq!(&rebuilt, h.core.persisted());
}

#[test]
fn what_elasticsearch_says_is_matched_to_a_group_node_by_its_own_name() {
    let mut h = Harness::new(two_groups());
    h.subscribe();
    // Data nodes are placed once a master was launched: two rounds.
    let mut launches = launch_all(&mut h, &["h1", "h2", "h3"]);
    launches.extend(launch_all(&mut h, &["h4", "h5"]));
    for l in &launches {
        h.update(status(
            &l.task_id,
            l.host.as_str(),
            TaskState::Running,
            Some("u"),
        ));
    }
    let names: Vec<String> = launches.iter().map(|l| l.name.clone()).collect();
    assert!(names.contains(&"es-data-1".to_owned()), "{names:?}");
    let nodes: Vec<(&str, bool)> = names.iter().map(|n| (n.as_str(), true)).collect();
    h.es_cluster(es_cluster(
        &nodes,
        "8.15.0",
        vec![shard("logs", 0, true, Some("es-data-1"))],
    ));
    let view = h.core.nodes(h.now);
    assert!(view.iter().all(|n| n.es_joined), "{view:?}");
    let data1 = view
        .iter()
        .find(|n| n.group == "data" && n.node_id.ordinal() == 1)
        .expect("data 1");
    assert_eq!(data1.shards, Some(1));
    check(&h);
}
