//! Fuzz targets: every parser that reads what a peer sends, driven with arbitrary bytes.
//!
//! Each target is a plain function of `&[u8]` that must return, whatever the bytes: a parser answers
//! bad input with a typed error, never a panic, and the properties asserted here (chunking carries no
//! meaning, a model writes back what it read, a reloaded store loads the same state, the core keeps its
//! invariants whatever a peer says) are findings when they fail. `fuzz/libfuzzer` drives them with
//! coverage-guided libFuzzer (nightly, `fuzz/run.sh`); `tests/corpus.rs` replays the committed corpora
//! (`fuzz/corpus/<target>/`) as ordinary tests on stable, so a regression fails CI.

use std::io::Write as _;

use prost::Message as _;
use tether_core::Core;
use tether_core::ids::{AgentId, FrameworkId, NodeId, OfferId};
use tether_core::state::{PersistedState, StateWrite};
use tether_core::testing::{Harness, accepts, config, external, offer, prepares};
use tether_mesos::model::{Call, Event, EventType};
use tether_mesos::recordio::{self, DEFAULT_MAX_FRAME, Decoder};
use tether_proto::v1 as pb;
use tether_scheduler::convert;
use tether_scheduler::store::file::FileStore;
use tether_sidecar::plugin::{self, Answer, Method};

/// A target: its name (the corpus directory and the libFuzzer binary) and its function.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, in the order the docs list them.
pub const TARGETS: &[Target] = &[
    ("recordio", recordio),
    ("mesos_events", mesos_events),
    ("plugin_reply", plugin_reply),
    ("agent_messages", agent_messages),
    ("wal", wal),
];

// ---------------------------------------------------------------------------------------------------------
// RecordIO (`tether-mesos`): the subscription stream's framing.

/// Input: one byte choosing the frame cap and the chunk size, then the stream's bytes.
pub fn recordio(data: &[u8]) {
    let Some((&head, stream)) = data.split_first() else {
        return;
    };
    let cap = if head & 0x80 == 0 {
        usize::from(head & 0x3f) + 1
    } else {
        DEFAULT_MAX_FRAME
    };
    let chunk = usize::from(head >> 6 & 1) * 6 + 1;
    let mut chunked = Decoder::new(cap);
    let mut records = Vec::new();
    let mut failed = None;
    for piece in stream.chunks(chunk) {
        match chunked.feed(piece) {
            Ok(got) => {
                assert!(failed.is_none(), "the decoder recovered after an error");
                for r in got {
                    assert!(
                        !r.is_empty() && r.len() <= cap,
                        "record of {} bytes",
                        r.len()
                    );
                    records.push(r);
                }
            }
            Err(e) => {
                // Sticky: every later call repeats the first error.
                if let Some(first) = &failed {
                    assert_eq!(first, &e);
                }
                failed = Some(e);
            }
        }
    }
    // Chunk boundaries carry no meaning: the stream in one piece ends the same way.
    let mut whole = Decoder::new(cap);
    match (whole.feed(stream), &failed) {
        (Ok(got), None) => assert_eq!(got, records),
        (Err(e), Some(first)) => assert_eq!(&e, first),
        (got, first) => panic!("one piece gave {got:?}, chunks gave {first:?}"),
    }
    assert_eq!(whole.finish(), chunked.finish());
    if failed.is_none() {
        // What was read encodes back to a stream that reads the same.
        let mut again = Vec::new();
        for r in &records {
            again.extend_from_slice(&recordio::encode(r));
        }
        let mut d = Decoder::new(cap);
        assert_eq!(d.feed(&again).expect("re-encoded records decode"), records);
        assert_eq!(d.finish(), Ok(()));
    }
}

// ---------------------------------------------------------------------------------------------------------
// The Mesos event model (`tether-mesos`) and its conversion to the core's types (`convert.rs`).

/// A core with two nodes pending and a sidecar on each of `h1`, `h2` reporting their volumes, both
/// offered: a Prepare is outstanding with each sidecar (the `(host, command id)` of each is returned).
pub fn core_with_outstanding_prepares() -> (Harness, Vec<(String, u64)>) {
    let mut h = Harness::new(config(external(true)));
    h.subscribe();
    let _ = h.core.handle_scale(2, h.now);
    h.drain();
    for (host, node) in [("h1", 1), ("h2", 2)] {
        let vols = h
            .core
            .config()
            .volume_names(NodeId(node))
            .unwrap_or_default();
        h.sidecar(host, None, None, &vols);
    }
    let offers = ["h1", "h2"]
        .iter()
        .map(|host| {
            let id = h.next_offer_id();
            offer(&id, host, 4.0, 8192.0, 10_000.0)
        })
        .collect();
    let cmds = h.offers(offers);
    let prepared = prepares(&cmds)
        .into_iter()
        .map(|(host, id, _)| (host.as_str().to_owned(), id))
        .collect();
    (h, prepared)
}

/// Both nodes of [`core_with_outstanding_prepares`] prepared and launched (STAGING on `h1` and `h2`):
/// a fuzzed subscription reaches offers, updates of live tasks, rescinds and agent losses. Returns the
/// launched task ids.
pub fn core_with_launched_nodes() -> (Harness, Vec<String>) {
    let (mut h, prepared) = core_with_outstanding_prepares();
    let mut launched = Vec::new();
    for (host, id) in prepared {
        let cmds = h.prepare_result(&host, id, true);
        launched.extend(
            accepts(&cmds)
                .into_iter()
                .map(|l| l.task_id.as_str().to_owned()),
        );
    }
    (h, launched)
}

/// Whatever it was told, the core keeps its invariants and the command stream its rules.
fn assert_core_sound(h: &mut Harness) {
    h.advance(120_000);
    assert!(h.violations.is_empty(), "{:?}", h.violations);
    if let Err(e) = h.core.check_invariants() {
        panic!("core invariant broken: {e}");
    }
}

/// Input: events as JSON, one per line (a subscription's records). Each that parses is written back and
/// read again (it must not change), converted as the scheduler's loop converts it, and handed to a core.
pub fn mesos_events(data: &[u8]) {
    let (mut h, _) = core_with_launched_nodes();
    let clock = tether_scheduler::presentation::Clock::start();
    for line in data.split(|&b| b == b'\n') {
        let Ok(ev) = serde_json::from_slice::<Event>(line) else {
            continue;
        };
        let json = serde_json::to_vec(&ev).expect("an event serializes");
        let again: Event = serde_json::from_slice(&json).unwrap_or_else(|e| {
            panic!(
                "own output {} unreadable: {e}",
                String::from_utf8_lossy(&json)
            )
        });
        assert_eq!(again, ev, "an event changed on a round trip");
        let now = h.now;
        match ev.event_type {
            EventType::Subscribed => {
                if let Some(id) = ev
                    .subscribed
                    .and_then(|s| FrameworkId::new(s.framework_id.value).ok())
                {
                    h.core.handle_subscribed(id, now);
                }
            }
            EventType::Offers => {
                let offers = ev
                    .offers
                    .map(|o| o.offers)
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|o| convert::offer(o, &clock).ok())
                    .collect();
                h.core.handle_offers(offers, now);
            }
            EventType::Rescind => {
                if let Some(id) = ev.rescind.and_then(|r| OfferId::new(r.offer_id.value).ok()) {
                    h.core.handle_rescind(&id, now);
                }
            }
            EventType::InverseOffers => {
                let offers = ev
                    .inverse_offers
                    .map(|o| o.inverse_offers)
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|o| convert::inverse_offer(o, &clock).ok())
                    .collect();
                h.core.handle_inverse_offers(offers, now);
            }
            EventType::RescindInverseOffer => {
                if let Some(id) = ev
                    .rescind_inverse_offer
                    .and_then(|r| OfferId::new(r.inverse_offer_id.value).ok())
                {
                    h.core.handle_rescind_inverse_offer(&id, now);
                }
            }
            EventType::Update => {
                if let Some(u) = ev.update {
                    let _ = Call::acknowledge_status(&u.status);
                    if let Ok(s) = convert::status(&u.status) {
                        h.core.handle_update(s, now);
                    }
                }
            }
            EventType::Failure => {
                if let Some(agent) = ev
                    .failure
                    .filter(|f| f.executor_id.is_none())
                    .and_then(|f| f.agent_id)
                    .and_then(|a| AgentId::new(a.value).ok())
                {
                    h.core.handle_agent_lost(&agent, now);
                }
            }
            _ => {}
        }
        h.drain();
        h.advance(1_000);
    }
    assert_core_sound(&mut h);
}

// ---------------------------------------------------------------------------------------------------------
// The volume plugin's replies (`tether-sidecar`).

const METHODS: [Method; 9] = [
    Method::Activate,
    Method::Create,
    Method::Remove,
    Method::Mount,
    Method::Unmount,
    Method::Path,
    Method::Get,
    Method::List,
    Method::Capabilities,
];

/// Input: one byte for the method, two for the HTTP status (100..=599), then the reply body.
pub fn plugin_reply(data: &[u8]) {
    let [m, s1, s2, body @ ..] = data else {
        return;
    };
    let method = METHODS[usize::from(*m) % METHODS.len()];
    let status = 100 + u16::from_be_bytes([*s1, *s2]) % 500;
    let ok = (200..300).contains(&status);
    match plugin::read_reply(method, status, body) {
        Ok(answer) => {
            assert!(
                ok || method == Method::Capabilities,
                "HTTP {status} read as a success: {answer:?}"
            );
            match answer {
                Answer::Mountpoint(p) => assert!(!p.is_empty()),
                Answer::Volume(Some(v)) => {
                    let _ = (v.size_bytes(), v.zone());
                }
                Answer::Volumes(vs) => {
                    for v in vs {
                        let _ = (v.size_bytes(), v.zone());
                    }
                }
                _ => {}
            }
        }
        Err(kind) => {
            let e = plugin::PluginError {
                method,
                volume: Some("es-1-data".into()),
                kind,
            };
            let _ = (e.to_string(), e.is_not_found(), e.outcome_unknown());
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// `tether.v1` as the scheduler receives it: one sidecar stream, converted and handed to the core.

/// Input: a sidecar's stream as length-delimited `AgentMessage`s. As the agent channel does, the first
/// must be a Hello and a second Hello ends the stream; every message is converted (`convert.rs`) and what
/// converts goes to a core that has Prepares outstanding with the sidecars of `h1` and `h2`.
pub fn agent_messages(data: &[u8]) {
    let (mut h, _) = core_with_outstanding_prepares();
    let mut buf = data;
    let mut host = None;
    while !buf.is_empty() {
        let Ok(msg) = pb::AgentMessage::decode_length_delimited(&mut buf) else {
            break;
        };
        let again = pb::AgentMessage::decode(msg.encode_to_vec().as_slice())
            .expect("a decoded message encodes to one that decodes");
        assert_eq!(again, msg);
        let now = h.now;
        match (msg.body, &host) {
            (Some(pb::agent_message::Body::Hello(hello)), None) => {
                let Ok(hello) = convert::hello(&hello) else {
                    break;
                };
                host = Some(hello.hostname.clone());
                h.core.handle_sidecar_hello(hello, now);
            }
            (Some(pb::agent_message::Body::Hello(_)), Some(_)) | (_, None) => break,
            (Some(pb::agent_message::Body::Report(r)), Some(host)) => {
                if let Ok(r) = convert::report(&r) {
                    h.core.handle_sidecar_report(host, r, now);
                }
            }
            (Some(pb::agent_message::Body::Result(r)), Some(host)) => {
                if let Ok(r) = convert::command_result(&r) {
                    h.core.handle_sidecar_result(host, r, now);
                }
            }
            (None, Some(_)) => {}
        }
        h.drain();
        h.advance(500);
    }
    if let Some(host) = host {
        h.core.handle_sidecar_disconnected(&host, h.now);
        h.drain();
    }
    assert_core_sound(&mut h);
}

// ---------------------------------------------------------------------------------------------------------
// The embedded store's loader (`scheduler/src/store/file.rs`).

/// Input: `snapshot.json`, a NUL byte, then `wal.jsonl` (no NUL: a log without a snapshot). The store
/// either loads or answers a typed error; a store that loaded loads the same state again (dropping a
/// torn tail changed nothing), and the core accepts or refuses that state without a panic.
pub fn wal(data: &[u8]) {
    let (snapshot, log) = match data.iter().position(|&b| b == 0) {
        Some(i) => (Some(&data[..i]), &data[i + 1..]),
        None => (None, data),
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    if let Some(s) = snapshot {
        std::fs::write(dir.path().join("snapshot.json"), s).expect("write the snapshot");
    }
    let mut f = std::fs::File::create(dir.path().join("wal.jsonl")).expect("create the log");
    f.write_all(log).expect("write the log");
    drop(f);
    let Ok(store) = FileStore::<PersistedState, StateWrite>::open(dir.path()) else {
        return;
    };
    let state = store.state().clone();
    drop(store);
    let reopened = FileStore::<PersistedState, StateWrite>::open(dir.path())
        .unwrap_or_else(|e| panic!("a store that loaded fails to load again: {e}"));
    assert_eq!(reopened.state(), &state, "a second load differs");
    let _ = Core::new(config(external(true)), state);
}
