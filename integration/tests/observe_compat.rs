//! Observation by assignment is backward compatible both ways (issue 15): a sidecar that does not declare
//! `watch_delta` gets the full watch set in every Welcome from the new scheduler and never a WatchDelta;
//! the new sidecar against a scheduler that only sends full Welcomes reports full snapshots of every
//! watched volume, as before; and against a scheduler that assigns a share it observes that share and
//! reports changes only.

use std::time::Duration;

use tether_integration::fake_rexray;
use tether_integration::process::free_port;
use tether_integration::testing::scheduler::Scheduler;
use tether_integration::testing::sidecar::{FakeScheduler, RunningSidecar, World, welcome};
use tether_proto::v1::agent_channel_client::AgentChannelClient;
use tether_proto::v1::{
    AgentMessage, Hello, ObservedVolume, Report, ScaleRequest, SchedulerMessage, WatchDelta,
    Welcome, agent_message, scheduler_message,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

type R = Result<(), Box<dyn std::error::Error>>;

/// An open raw sidecar stream: keep `_up` to keep it open.
struct Stream {
    _up: mpsc::Sender<AgentMessage>,
    down: Streaming<SchedulerMessage>,
}

async fn open(sched: &Scheduler, host: &str, features: &[&str]) -> Stream {
    let (up, rx) = mpsc::channel(8);
    up.send(AgentMessage {
        body: Some(agent_message::Body::Hello(Hello {
            hostname: host.to_owned(),
            instance_id: "test".to_owned(),
            features: features.iter().map(|f| f.to_string()).collect(),
            ..Default::default()
        })),
    })
    .await
    .expect("queued");
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", sched.listen))
        .expect("url")
        .connect()
        .await
        .expect("scheduler reachable");
    let down = AgentChannelClient::new(channel)
        .connect(tonic::Request::new(ReceiverStream::new(rx)))
        .await
        .expect("stream accepted")
        .into_inner();
    Stream { _up: up, down }
}

async fn next(s: &mut Stream) -> scheduler_message::Body {
    tokio::time::timeout(Duration::from_secs(20), s.down.message())
        .await
        .expect("a message within the deadline")
        .expect("stream open")
        .and_then(|m| m.body)
        .expect("a message with a body")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_sidecar_gets_full_welcomes_from_the_new_scheduler_and_a_new_one_its_share() {
    let state = tempfile::tempdir().expect("tempdir");
    let mut sched = Scheduler::start(
        &format!("http://127.0.0.1:{}", free_port()),
        state.path(),
        &[],
    );
    let mut admin = sched.admin().await;

    let mut old = open(&sched, "old-agent", &["volume_owner", "node_identity"]).await;
    let names = match next(&mut old).await {
        scheduler_message::Body::Welcome(Welcome { watch: Some(w), .. }) => w.names,
        other => panic!("an old sidecar's first message: {other:?}"),
    };
    assert_eq!(names.len(), 6, "three nodes' two volumes each: {names:?}");

    let mut new = open(&sched, "new-agent", &["watch_delta"]).await;
    match next(&mut new).await {
        scheduler_message::Body::Welcome(w) => assert!(w.watch.is_none(), "{w:?}"),
        other => panic!("a new sidecar's first message: {other:?}"),
    }
    match next(&mut new).await {
        scheduler_message::Body::WatchDelta(d) => {
            assert!(d.reset && d.remove.is_empty(), "{d:?}");
            let mut got: Vec<String> = d.add.into_iter().map(|v| v.name).collect();
            got.sort();
            let mut want = names.clone();
            want.sort();
            assert_eq!(
                got, want,
                "the only watch_delta sidecar observes every volume"
            );
        }
        other => panic!("then its share: {other:?}"),
    }

    // A scale: the old sidecar is welcomed again with the full set, the new one gets the additions.
    admin
        .scale(ScaleRequest {
            nodes: 4,
            ..Default::default()
        })
        .await
        .expect("scaled");
    match next(&mut old).await {
        scheduler_message::Body::Welcome(Welcome { watch: Some(w), .. }) => {
            assert_eq!(w.names.len(), 8)
        }
        other => panic!("the old sidecar after a scale: {other:?}"),
    }
    match next(&mut new).await {
        scheduler_message::Body::WatchDelta(d) => {
            assert!(!d.reset && d.add.len() == 2 && d.remove.is_empty(), "{d:?}")
        }
        other => panic!("the new sidecar after a scale: {other:?}"),
    }
    sched.stop().await;
}

fn vol<'a>(r: &'a Report, name: &str) -> Option<&'a tether_proto::v1::VolumeReport> {
    r.volumes.iter().find(|v| v.name == name)
}

#[tokio::test]
async fn the_new_sidecar_reports_full_snapshots_to_a_scheduler_that_only_sends_full_welcomes() -> R
{
    let w = World::new()?;
    let _fake = w.rexray("rexray", "h1").await?;
    fake_rexray::create_volume(&w.backend(), "es-a", 1, "z1")?;
    let sched = FakeScheduler::start(welcome(&["es-a", "es-ghost"], &[], 100)).await?;
    let sidecar = RunningSidecar::spawn(w.sidecar_args(&sched.url(), "h1"));
    let first = sched
        .report("a first report", |r| r.volumes.len() == 2)
        .await?;
    let hello = sched.hellos().into_iter().next().ok_or("no hello")?;
    assert!(hello.features.iter().any(|f| f == "watch_delta"));
    // Later reports are still snapshots of every watched volume, never deltas.
    let later = sched
        .report("three reports later", |r| r.sequence >= first.sequence + 3)
        .await?;
    for r in [&first, &later] {
        assert!(!r.delta && r.removed.is_empty(), "{r:?}");
        assert!(vol(r, "es-a").is_some_and(|v| v.exists), "{r:?}");
        assert!(vol(r, "es-ghost").is_some_and(|v| !v.exists), "{r:?}");
    }
    let reports: Vec<Report> = sched
        .received()
        .into_iter()
        .filter_map(|m| match m.body {
            Some(agent_message::Body::Report(r)) => Some(r),
            _ => None,
        })
        .collect();
    assert!(reports.iter().all(|r| !r.delta && r.volumes.len() == 2));
    sidecar.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_share_by_delta_is_observed_and_reported_as_changes() -> R {
    let w = World::new()?;
    let _fake = w.rexray("rexray", "h1").await?;
    for name in ["es-a", "es-b"] {
        fake_rexray::create_volume(&w.backend(), name, 1, "z1")?;
    }
    let sched = FakeScheduler::start(Welcome {
        report_interval_ms: 100,
        watch: None,
    })
    .await?;
    let sidecar = RunningSidecar::spawn(w.sidecar_args(&sched.url(), "h1"));
    sched
        .wait_for("the hello", |m| match &m.body {
            Some(agent_message::Body::Hello(_)) => Some(()),
            _ => None,
        })
        .await?;
    let share = |names: &[&str]| WatchDelta {
        reset: true,
        add: names
            .iter()
            .map(|n| ObservedVolume {
                name: n.to_string(),
                urgent: true,
            })
            .collect(),
        remove: Vec::new(),
    };
    sched
        .send(scheduler_message::Body::WatchDelta(share(&[
            "es-a", "es-b",
        ])))
        .await?;
    let snapshot = sched
        .report("a snapshot of the share", |r| {
            !r.delta && r.volumes.len() == 2
        })
        .await?;
    assert!(snapshot.volumes.iter().all(|v| v.exists), "{snapshot:?}");
    // Nothing changed: the next reports carry no volume.
    let quiet = sched
        .report("a delta after the snapshot", |r| {
            r.delta && r.sequence > snapshot.sequence
        })
        .await?;
    assert!(
        quiet.volumes.is_empty() && quiet.removed.is_empty(),
        "{quiet:?}"
    );

    // Deleted behind Tether's back: the change, and only it.
    let backend = w.backend();
    tokio::task::spawn_blocking(move || fake_rexray::backend::delete_volume(&backend, "es-b"))
        .await??;
    let gone = sched
        .report("the deletion as a change", |r| {
            r.delta && vol(r, "es-b").is_some_and(|v| !v.exists)
        })
        .await?;
    assert!(vol(&gone, "es-a").is_none(), "{gone:?}");

    // Handed (back) to it: told afresh though nothing changed, since a scheduler that moved a volume
    // away and back before the next report forgot what this sidecar last said of it.
    sched.clear();
    sched
        .send(scheduler_message::Body::WatchDelta(WatchDelta {
            reset: false,
            add: vec![ObservedVolume {
                name: "es-b".into(),
                urgent: true,
            }],
            remove: Vec::new(),
        }))
        .await?;
    sched
        .report("es-b told again", |r| r.delta && vol(r, "es-b").is_some())
        .await?;

    // Removed from the share: named once in `removed`.
    sched
        .send(scheduler_message::Body::WatchDelta(WatchDelta {
            reset: false,
            add: Vec::new(),
            remove: vec!["es-a".into()],
        }))
        .await?;
    sched
        .report("the removal", |r| r.delta && r.removed == ["es-a"])
        .await?;
    // A Welcome asks for a snapshot again: just what is left of the share.
    sched.clear();
    sched
        .send(scheduler_message::Body::Welcome(Welcome {
            report_interval_ms: 100,
            watch: None,
        }))
        .await?;
    let again = sched
        .report("a snapshot after the Welcome", |r| !r.delta)
        .await?;
    assert_eq!(
        again
            .volumes
            .iter()
            .map(|v| v.name.as_str())
            .collect::<Vec<_>>(),
        ["es-b"]
    );
    sidecar.stop().await?;
    Ok(())
}
