//! tether-sidecar command edge cases: Prepare deadlines, and SIGTERM-like shutdown with commands in flight
//! (finished within the grace period, or abandoned after it) always ending with every mount released.

use std::time::Duration;

use tether_integration::fake_rexray::{self, Faults, MethodFault};
use tether_integration::testing::sidecar::{DEADLINE, OneSidecar, welcome};
use tether_proto::v1::{Prepare, scheduler_message};

type R = Result<(), Box<dyn std::error::Error>>;

/// Polls the state file until it mentions `needle` (a command is then provably in flight).
async fn state_mentions(path: &std::path::Path, needle: &str) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if std::fs::read_to_string(path).is_ok_and(|s| s.contains(needle)) {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("state file never mentioned {needle}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn prepare_deadline_caps_driver_calls() -> R {
    let OneSidecar {
        world: _w,
        fake,
        sched,
        sidecar,
    } = OneSidecar::start(&["v1"], welcome(&[], &[], 100)).await?;

    fake.faults().set(Faults::on(
        "Get",
        MethodFault {
            hang: true,
            ..Default::default()
        },
    ));
    let p = Prepare {
        command_id: 41,
        node_id: 1,
        volumes: vec!["v1".into()],
        deadline_ms: 300,
        ..Default::default()
    };
    sched.send(scheduler_message::Body::Prepare(p)).await?;
    let res = sched.result(41).await?;
    assert!(
        !res.ok && res.error.contains("VolumeDriver.Get") && res.error.contains("no reply within"),
        "{res:?}"
    );
    assert!(
        !res.error.contains("within 2s"),
        "the deadline, not the 2s call timeout, must bound the call: {res:?}"
    );
    assert_eq!(fake.mount_count("v1"), 0);
    sidecar.stop().await?;
    Ok(())
}

#[tokio::test]
async fn shutdown_finishes_in_flight_commands_then_releases() -> R {
    let OneSidecar {
        world: w,
        fake,
        sched,
        sidecar,
    } = OneSidecar::start(&["v1"], welcome(&[], &[], 100)).await?;

    fake.faults().set(Faults::on(
        "Mount",
        MethodFault {
            latency_ms: 400,
            ..Default::default()
        },
    ));
    sched.prepare(1, &["v1"], false, &[]).await?;
    state_mentions(&w.state("h1"), "mounting").await?;
    sidecar.stop().await?;
    // The Mount completed inside the grace period and was then released: balanced and detached.
    assert_eq!(fake.mount_count("v1"), 0);
    assert_eq!(
        fake_rexray::volume_info(&w.backend(), "v1")?.and_then(|m| m.attached_host),
        None
    );
    assert!(std::fs::read_to_string(w.state("h1"))?.contains("\"mounts\": []"));
    Ok(())
}

#[tokio::test]
async fn shutdown_abandons_a_hung_mount_after_the_grace_period() -> R {
    let OneSidecar {
        world: w,
        fake,
        sched,
        sidecar,
    } = OneSidecar::start_with(&["v1"], welcome(&[], &[], 100), |args| {
        args.grace_period = Duration::from_millis(300).into();
        args.mount_timeout = Duration::from_secs(60).into();
    })
    .await?;

    fake.faults().set(Faults::on(
        "Mount",
        MethodFault {
            hang: true,
            ..Default::default()
        },
    ));
    sched.prepare(1, &["v1"], false, &[]).await?;
    state_mentions(&w.state("h1"), "mounting").await?;
    // Returns after the grace period, not the 60 s mount timeout; the unknown Mount got its Unmount.
    sidecar.stop().await?;
    assert!(std::fs::read_to_string(w.state("h1"))?.contains("\"mounts\": []"));
    assert_eq!(
        fake_rexray::volume_info(&w.backend(), "v1")?.and_then(|m| m.attached_host),
        None
    );
    Ok(())
}

#[tokio::test]
async fn concurrent_prepares_of_one_volume_are_serialised() -> R {
    let OneSidecar {
        world: _w,
        fake,
        sched,
        sidecar,
    } = OneSidecar::start(&["v1"], welcome(&["v1"], &[], 100)).await?;

    // Slow Mounts: unserialised, both commands would Mount and REX-Ray would count 2.
    fake.faults().set(Faults::on(
        "Mount",
        MethodFault {
            latency_ms: 300,
            ..Default::default()
        },
    ));
    let first = sched.prepare(1, &["v1"], false, &[]).await?;
    let second = sched.prepare(1, &["v1"], false, &[]).await?;
    let (r1, r2) = (sched.result(first).await?, sched.result(second).await?);
    assert!(r1.ok && r2.ok, "{r1:?} {r2:?}");
    assert_eq!(fake.mount_count("v1"), 1);
    // Reports kept flowing while a Mount was in flight, and show one attachment.
    sched
        .report("one attachment", |r| r.attachments_used == 1)
        .await?;
    let released = sched.result(sched.release(&["v1"]).await?).await?;
    assert!(released.ok, "{released:?}");
    assert_eq!(fake.mount_count("v1"), 0);
    sidecar.stop().await?;
    Ok(())
}
