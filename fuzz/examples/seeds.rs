//! Writes the seed corpora under `fuzz/corpus/<target>/seed-*`: real inputs (the Mesos events of the
//! protocol notes, the sidecar's real messages, REX-Ray's replies, a WAL written by the real store) and
//! tricky ones. Regenerate with `cargo run -p tether-fuzz --example seeds`; findings are added by hand as
//! `regression-*` files next to them and are never overwritten.

use std::path::Path;

use prost::Message as _;
use serde_json::json;
use tether_core::Command;
use tether_core::state::{PersistedState, StateWrite};
use tether_mesos::recordio::encode;
use tether_proto::v1 as pb;
use tether_scheduler::store::file::FileStore;

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    std::fs::create_dir_all(&dir).expect("corpus directory");
    std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("write a seed");
}

/// The events of `shared/protocols/mesos-v1-scheduler.md`, as the master sends them.
const DOC_EVENTS: &[(&str, &str)] = &[
    (
        "subscribed",
        r#"{"type":"SUBSCRIBED","subscribed":{"framework_id":{"value":"5b2f-2e44-0000"},"heartbeat_interval_seconds":15.0,"master_info":{"id":"5b2f-2e44","ip":16777343,"port":5050,"pid":"master@127.0.0.1:5050","hostname":"localhost","version":"1.11.0","address":{"hostname":"localhost","ip":"127.0.0.1","port":5050},"capabilities":[{"type":"AGENT_UPDATE"},{"type":"AGENT_DRAINING"},{"type":"QUOTA_V2"}]}}}"#,
    ),
    (
        "offers",
        r#"{"type":"OFFERS","offers":{"offers":[{"id":{"value":"M-O12"},"framework_id":{"value":"FW-0000"},"agent_id":{"value":"M-S3"},"hostname":"agent3.example","url":{"scheme":"http","address":{"hostname":"agent3.example","ip":"10.0.0.3","port":5051},"path":"/slave(1)"},"domain":{"fault_domain":{"region":{"name":"us-east-1"},"zone":{"name":"us-east-1a"}}},"allocation_info":{"role":"elasticsearch"},"resources":[{"name":"cpus","type":"SCALAR","scalar":{"value":8.0},"role":"*","allocation_info":{"role":"elasticsearch"}},{"name":"ports","type":"RANGES","ranges":{"range":[{"begin":31000,"end":32000}]},"role":"*","allocation_info":{"role":"elasticsearch"}}],"attributes":[{"name":"rack","type":"TEXT","text":{"value":"r1"}}],"executor_ids":[{"value":"es-exec-1"}]}]}}"#,
    ),
    (
        "rescind",
        r#"{"type":"RESCIND","rescind":{"offer_id":{"value":"M-O12"}}}"#,
    ),
    (
        "update-running",
        r#"{"type":"UPDATE","update":{"status":{"task_id":{"value":"es-data-1.6f1c"},"state":"TASK_RUNNING","source":"SOURCE_EXECUTOR","agent_id":{"value":"M-S3"},"executor_id":{"value":"es-data-1.6f1c"},"timestamp":1718000000.123,"uuid":"2vjUX1JpSmWJ0AnQ4zW3UA==","healthy":true,"container_status":{"container_id":{"value":"c0ffee"},"network_infos":[{"ip_addresses":[{"ip_address":"10.0.0.3"}]}]}}}}"#,
    ),
    (
        "update-error",
        r#"{"type":"UPDATE","update":{"status":{"task_id":{"value":"es-data-1.6f1c"},"state":"TASK_ERROR","message":"Task uses no resources","source":"SOURCE_MASTER","reason":"REASON_TASK_INVALID","agent_id":{"value":"S3"},"timestamp":1718000000.5}}}"#,
    ),
    (
        "message",
        r#"{"type":"MESSAGE","message":{"agent_id":{"value":"M-S3"},"executor_id":{"value":"ex-1"},"data":"aGVsbG8="}}"#,
    ),
    (
        "failure-executor",
        r#"{"type":"FAILURE","failure":{"agent_id":{"value":"M-S3"},"executor_id":{"value":"ex-1"},"status":137}}"#,
    ),
    (
        "failure-agent",
        r#"{"type":"FAILURE","failure":{"agent_id":{"value":"M-S3"}}}"#,
    ),
    (
        "error",
        r#"{"type":"ERROR","error":{"message":"Framework failed over"}}"#,
    ),
    ("heartbeat", r#"{"type":"HEARTBEAT"}"#),
    (
        "inverse-offers",
        r#"{"type":"INVERSE_OFFERS","inverse_offers":{"inverse_offers":[{"id":{"value":"M-O99"},"framework_id":{"value":"FW-0000"},"agent_id":{"value":"M-S3"},"unavailability":{"start":{"nanoseconds":1718003600000000000},"duration":{"nanoseconds":3600000000000}}}]}}"#,
    ),
    (
        "rescind-inverse-offer",
        r#"{"type":"RESCIND_INVERSE_OFFER","rescind_inverse_offer":{"inverse_offer_id":{"value":"M-O99"}}}"#,
    ),
    (
        "update-operation-status",
        r#"{"type":"UPDATE_OPERATION_STATUS","update_operation_status":{"status":{"operation_id":{"value":"op-1"},"state":"OPERATION_FAILED","uuid":{"value":"2vjUX1JpSmWJ0AnQ4zW3UA=="},"agent_id":{"value":"M-S3"}}}}"#,
    ),
];

fn recordio() {
    let mut all = vec![0x80];
    for (name, event) in DOC_EVENTS {
        let mut one = vec![0x80];
        one.extend_from_slice(&encode(event.as_bytes()));
        write("recordio", name, &one);
        all.extend_from_slice(&encode(event.as_bytes()));
    }
    write("recordio", "all-doc-events", &all);
    // In chunks of one byte under a small cap, so every header boundary is crossed.
    let mut small = vec![0x3f];
    for r in [&b"{}"[..], b"[1,2,3]", b"x"] {
        small.extend_from_slice(&encode(r));
    }
    write("recordio", "small-cap-byte-chunks", &small);
    let tricky: &[(&str, &[u8])] = &[
        ("empty-record", b"\x800\n2\n{}"),
        ("header-too-long", b"\x80000000000000000000001\n{}"),
        ("header-overflow", b"\x8099999999999999999999\n"),
        ("u64-max-header", b"\x8018446744073709551615\n"),
        ("non-digit-header", b"\x8012a\n"),
        ("empty-header", b"\x80\n{}"),
        ("truncated", b"\x8020\n{\"type\":\"HEART"),
        ("frame-over-cap", b"\x0111\n{\"a\":12345}"),
        ("cr-lf-header", b"\x8020\r\n{\"type\":\"HEARTBEAT\"}"),
    ];
    for (name, bytes) in tricky {
        write("recordio", name, bytes);
    }
}

/// A real subscription's life for the two tasks the target's core launched: staging to running, an
/// agent lost and its task UNREACHABLE then GONE, another offer, reconciliation answers.
fn mesos_events() {
    for (name, event) in DOC_EVENTS {
        write("mesos_events", name, event.as_bytes());
    }
    let (_, tasks) = tether_fuzz::core_with_launched_nodes();
    let update = |task: &str, host: &str, state: &str, reason: Option<&str>| {
        let mut status = json!({
            "task_id": {"value": task},
            "state": state,
            "source": "SOURCE_AGENT",
            "agent_id": {"value": host},
            "timestamp": 1718000000.5,
            "uuid": "2vjUX1JpSmWJ0AnQ4zW3UA==",
        });
        if let Some(r) = reason {
            status["reason"] = json!(r);
            status["source"] = json!("SOURCE_MASTER");
        }
        json!({"type": "UPDATE", "update": {"status": status}}).to_string()
    };
    let offer = |id: &str, host: &str| {
        json!({"type": "OFFERS", "offers": {"offers": [{
            "id": {"value": id}, "framework_id": {"value": "fw-1"}, "agent_id": {"value": host},
            "hostname": host,
            "resources": [
                {"name": "cpus", "type": "SCALAR", "scalar": {"value": 4.0}, "role": "*"},
                {"name": "mem", "type": "SCALAR", "scalar": {"value": 8192.0}, "role": "*"},
                {"name": "disk", "type": "SCALAR", "scalar": {"value": 10000.0}, "role": "*"},
                {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": 31000, "end": 32000}]}, "role": "*"}
            ]
        }]}})
        .to_string()
    };
    let (t1, t2) = (&tasks[0], &tasks[1]);
    let life = [
        update(t1, "h1", "TASK_STARTING", None),
        update(t1, "h1", "TASK_RUNNING", None),
        update(t2, "h2", "TASK_RUNNING", None),
        update(t2, "h2", "TASK_UNREACHABLE", Some("REASON_AGENT_REMOVED")),
        json!({"type": "FAILURE", "failure": {"agent_id": {"value": "h2"}}}).to_string(),
        offer("o-90", "h1"),
        update(t2, "h2", "TASK_GONE", Some("REASON_AGENT_REMOVED")),
        offer("o-91", "h2"),
        json!({"type": "RESCIND", "rescind": {"offer_id": {"value": "o-91"}}}).to_string(),
        update(t1, "h1", "TASK_KILLED", None),
        update(
            "es-99.unknown",
            "h1",
            "TASK_LOST",
            Some("REASON_RECONCILIATION"),
        ),
        r#"{"type":"HEARTBEAT"}"#.to_owned(),
    ];
    write("mesos_events", "task-life", life.join("\n").as_bytes());
    let tricky: &[(&str, &str)] = &[
        ("unknown-type", r#"{"type":"NOT_A_TYPE"}"#),
        (
            "unknown-state",
            r#"{"type":"UPDATE","update":{"status":{"task_id":{"value":"t"},"state":"TASK_FLYING"}}}"#,
        ),
        (
            "ports-reversed",
            r#"{"type":"OFFERS","offers":{"offers":[{"id":{"value":"o"},"framework_id":{"value":"f"},"agent_id":{"value":"h1"},"hostname":"h1","resources":[{"name":"ports","type":"RANGES","ranges":{"range":[{"begin":32000,"end":31000}]}}]}]}}"#,
        ),
        (
            "huge-scalar",
            r#"{"type":"OFFERS","offers":{"offers":[{"id":{"value":"o"},"framework_id":{"value":"f"},"agent_id":{"value":"h1"},"hostname":"h1","resources":[{"name":"cpus","type":"SCALAR","scalar":{"value":1e308}},{"name":"cpus","type":"SCALAR","scalar":{"value":1e308}}]}]}}"#,
        ),
        (
            "empty-ids",
            r#"{"type":"UPDATE","update":{"status":{"task_id":{"value":""},"state":"TASK_RUNNING","agent_id":{"value":""}}}}"#,
        ),
        (
            "bad-hostname",
            r#"{"type":"OFFERS","offers":{"offers":[{"id":{"value":"o"},"framework_id":{"value":"f"},"agent_id":{"value":"a"},"hostname":"bad host/name"}]}}"#,
        ),
    ];
    for (name, text) in tricky {
        write("mesos_events", name, text.as_bytes());
    }
}

fn plugin_reply() {
    // Method indexes as the target maps them.
    const ACTIVATE: u8 = 0;
    const CREATE: u8 = 1;
    const MOUNT: u8 = 3;
    const PATH: u8 = 5;
    const GET: u8 = 6;
    const LIST: u8 = 7;
    const CAPABILITIES: u8 = 8;
    let reply = |method: u8, status: u16, body: &[u8]| {
        let mut out = vec![method];
        out.extend_from_slice(&(status - 100).to_be_bytes());
        out.extend_from_slice(body);
        out
    };
    let long = "é".repeat(600);
    let cases: &[(&str, u8, u16, &[u8])] = &[
        ("activate", ACTIVATE, 200, br#"{"Implements": ["VolumeDriver"]}"#),
        ("activate-authz-only", ACTIVATE, 200, br#"{"Implements":["authz"]}"#),
        ("create", CREATE, 200, br#"{"Err":""}"#),
        (
            "mount",
            MOUNT,
            200,
            br#"{"Mountpoint":"/var/lib/rexray/volumes/es-1-data/data","Err":""}"#,
        ),
        ("mount-no-mountpoint", MOUNT, 200, br#"{"Err":""}"#),
        (
            "mount-busy",
            MOUNT,
            500,
            br#"{"Err":"VolumeDriver.Mount: volume es-1-data is attached to another instance"}"#,
        ),
        ("path-empty", PATH, 200, br#"{"Mountpoint":""}"#),
        (
            "get",
            GET,
            200,
            br#"{"Volume":{"Name":"es-1-data","Mountpoint":"","CreatedAt":"2024-06-10T12:00:00Z","Status":{"availabilityZone":"us-east-1a","fields":null,"iops":0,"name":"es-1-data","server":"ebs","service":"ebs","size":16,"type":"gp2","attachmentState":4,"attachments":[{"instanceID":{"id":"i-1"}}]}},"Err":""}"#,
        ),
        ("get-null", GET, 200, br#"{"Volume":null,"Err":""}"#),
        ("get-not-found", GET, 500, br#"{"Err":"resource not found"}"#),
        (
            "get-size-string",
            GET,
            200,
            br#"{"volume":{"name":"es-1-data","status":{"size":"16.5","AvailabilityZone":"z"}}}"#,
        ),
        (
            "list",
            LIST,
            200,
            br#"{"Volumes":[{"Name":"es-1-data","Mountpoint":"/x"},{"Name":"es-2-data"}],"Err":""}"#,
        ),
        ("list-not-array", LIST, 200, br#"{"Volumes":{"Name":"a"}}"#),
        (
            "capabilities",
            CAPABILITIES,
            200,
            br#"{"Capabilities":{"Scope":"global"}}"#,
        ),
        ("capabilities-error", CAPABILITIES, 404, b"404 page not found\n"),
        (
            "legacy-error-text-plain",
            GET,
            500,
            br#"{"Error":"bad "quote" here"}"#,
        ),
        (
            "html-bad-gateway",
            MOUNT,
            502,
            b"<html><body><h1>502 Bad Gateway</h1></body></html>",
        ),
        ("empty-body", GET, 200, b""),
        ("not-json", GET, 200, b"{not json"),
        ("non-utf8", MOUNT, 500, b"\xff\xfe{\"Err\":\"\xc3\x28\"}"),
        ("err-not-string", GET, 200, br#"{"Err":{"code":5}}"#),
        ("multibyte-excerpt", GET, 503, long.as_bytes()),
    ];
    for (name, method, status, body) in cases {
        write("plugin_reply", name, &reply(*method, *status, body));
    }
}

fn delimited(messages: &[pb::agent_message::Body]) -> Vec<u8> {
    let mut out = Vec::new();
    for body in messages {
        let msg = pb::AgentMessage {
            body: Some(body.clone()),
        };
        msg.encode_length_delimited(&mut out)
            .expect("a Vec has room");
    }
    out
}

fn agent_messages() {
    use pb::agent_message::Body;
    let (h, prepared) = tether_fuzz::core_with_outstanding_prepares();
    let hello = |host: &str| {
        Body::Hello(pb::Hello {
            hostname: host.into(),
            agent_id: host.into(),
            sidecar_version: "0.1.0".into(),
            driver_name: "rexray".into(),
            driver_scope: pb::DriverScope::Global as i32,
            zone: "us-east-1a".into(),
            max_attachments: 39,
            instance_id: "6f1c2e44-0000-4000-8000-000000000001".into(),
            features: vec!["volume_owner".into(), "node_identity".into()],
        })
    };
    let volumes = |node: u64| -> Vec<pb::VolumeReport> {
        h.core
            .config()
            .volume_names(tether_core::NodeId(node))
            .unwrap_or_default()
            .iter()
            .map(|v| pb::VolumeReport {
                name: v.as_str().into(),
                exists: true,
                size_bytes: Some(16 << 30),
                free_bytes: Some(10 << 30),
                zone: "us-east-1a".into(),
                attached_here: true,
                mountpoint: String::new(),
                last_error: String::new(),
                status: [("attachmentState".to_owned(), "2".to_owned())].into(),
            })
            .collect()
    };
    let report = |sequence: u64, node: u64| {
        Body::Report(pb::Report {
            sequence,
            driver: Some(pb::DriverHealth {
                healthy: true,
                latency_micros: 850,
                error: String::new(),
            }),
            volumes: volumes(node),
            attachments_used: 1,
            ..pb::Report::default()
        })
    };
    let result = |command_id: u64, ok: bool, node: u64| {
        Body::Result(pb::CommandResult {
            command_id,
            ok,
            error: if ok {
                String::new()
            } else {
                "Mount: volume busy".into()
            },
            volumes: volumes(node),
            csr_pem: String::new(),
        })
    };
    for (i, (host, command_id)) in prepared.iter().enumerate() {
        let node = i as u64 + 1;
        write(
            "agent_messages",
            &format!("prepare-ok-{host}"),
            &delimited(&[
                hello(host),
                report(1, node),
                result(*command_id, true, node),
                report(2, node),
            ]),
        );
        write(
            "agent_messages",
            &format!("prepare-failed-{host}"),
            &delimited(&[hello(host), result(*command_id, false, node)]),
        );
    }
    write(
        "agent_messages",
        "report-before-hello",
        &delimited(&[report(1, 1), hello("h1")]),
    );
    write(
        "agent_messages",
        "second-hello",
        &delimited(&[hello("h1"), hello("h2"), report(1, 2)]),
    );
    write(
        "agent_messages",
        "bad-hostname",
        &delimited(&[hello("not a host/name"), report(1, 1)]),
    );
    write(
        "agent_messages",
        "stale-sequence",
        &delimited(&[hello("h3"), report(5, 1), report(4, 1), report(5, 2)]),
    );
    let mut bad_volume = pb::VolumeReport {
        name: "../etc".into(),
        ..Default::default()
    };
    bad_volume
        .status
        .insert("attachmentState".into(), "4".into());
    write(
        "agent_messages",
        "bad-volume-name",
        &delimited(&[
            hello("h1"),
            Body::Report(pb::Report {
                sequence: 1,
                volumes: vec![bad_volume],
                ..Default::default()
            }),
        ]),
    );
    let mut empty_body = delimited(&[hello("h1")]);
    pb::AgentMessage { body: None }
        .encode_length_delimited(&mut empty_body)
        .expect("a Vec has room");
    write("agent_messages", "message-without-body", &empty_body);
    write(
        "agent_messages",
        "truncated-length",
        &[0xff, 0xff, 0xff, 0xff, 0x0f, 0x0a],
    );
}

/// A store written through the real `FileStore` by a core's own writes (a scale and two launches), as
/// `snapshot.json` NUL `wal.jsonl`, plus the damage a crash or a disk can do.
fn wal() {
    let (mut h, _) = tether_fuzz::core_with_launched_nodes();
    let writes: Vec<StateWrite> = h
        .drain()
        .into_iter()
        .chain(std::mem::take(&mut h.log))
        .filter_map(|c| match c {
            Command::Persist(w) => Some(w),
            _ => None,
        })
        .collect();
    let store_files = |compact_after: u64| {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut store = FileStore::<PersistedState, StateWrite>::open(dir.path())
                .expect("open")
                .with_compact_after(compact_after);
            for w in &writes {
                store.write(std::slice::from_ref(w)).expect("write");
            }
        }
        let snapshot = std::fs::read(dir.path().join("snapshot.json")).ok();
        let log = std::fs::read(dir.path().join("wal.jsonl")).expect("log");
        (snapshot, log)
    };
    let join = |snapshot: Option<&[u8]>, log: &[u8]| {
        let mut out = Vec::new();
        if let Some(s) = snapshot {
            out.extend_from_slice(s);
            out.push(0);
        }
        out.extend_from_slice(log);
        out
    };
    let (_, log) = store_files(u64::MAX);
    write("wal", "log-only", &join(None, &log));
    let half = writes.len() as u64 / 2;
    let (snapshot, tail) = store_files(half.max(1));
    write("wal", "snapshot-and-log", &join(snapshot.as_deref(), &tail));
    let lines: Vec<&[u8]> = log
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let rejoin = |ls: &[&[u8]]| {
        let mut out = Vec::new();
        for l in ls {
            out.extend_from_slice(l);
            out.push(b'\n');
        }
        out
    };
    let mut torn = rejoin(&lines);
    torn.truncate(torn.len() - 7);
    write("wal", "torn-last-line", &torn);
    if lines.len() > 2 {
        let mut gap = lines.clone();
        gap.remove(lines.len() / 2);
        write("wal", "middle-line-missing", &rejoin(&gap));
        let mut dup = lines.clone();
        dup.insert(1, lines[1]);
        write("wal", "line-repeated", &rejoin(&dup));
    }
    let mut corrupt = lines.clone();
    corrupt[0] = b"{\"seq\":1,\"write\":{\"Nonsense\":1}}";
    write("wal", "undecodable-first-line", &rejoin(&corrupt));
    let mut meaningless_tail = lines.clone();
    meaningless_tail.push(b"{\"seq\":999,\"write\":{\"Desired\":\"many\"}}");
    write("wal", "meaningless-last-line", &rejoin(&meaningless_tail));
    write(
        "wal",
        "snapshot-corrupt",
        &join(Some(b"{\"seq\":3,\"state\":{\"desired\":"), &log),
    );
    write(
        "wal",
        "snapshot-ahead-of-log",
        &join(
            snapshot
                .as_deref()
                .or(Some(b"{\"seq\":1000000,\"state\":{}}")),
            &log,
        ),
    );
    write("wal", "empty", b"");
    write(
        "wal",
        "crlf-lines",
        &log.iter()
            .flat_map(|&b| {
                if b == b'\n' {
                    vec![b'\r', b'\n']
                } else {
                    vec![b]
                }
            })
            .collect::<Vec<_>>(),
    );
}

fn main() {
    recordio();
    mesos_events();
    plugin_reply();
    agent_messages();
    wal();
    println!("seeds written under {}/corpus", env!("CARGO_MANIFEST_DIR"));
}
