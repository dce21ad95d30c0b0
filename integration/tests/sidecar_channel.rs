//! tether-sidecar against an in-process fake scheduler and fake-rexray: Hello and reports, Prepare/Release,
//! balanced mounts across a crash and a graceful stop, driver and scheduler outages, bad driver replies.

use tether_integration::fake_rexray::{self, Faults, MethodFault, RawReply};
use tether_integration::testing::sidecar::{
    FakeScheduler, OneSidecar, RunningSidecar, World, sidecar_args, welcome,
};
use tether_proto::v1::{DriverScope, Report, VolumeReport};

type R = Result<(), Box<dyn std::error::Error>>;

fn vol<'a>(r: &'a Report, name: &str) -> Option<&'a VolumeReport> {
    r.volumes.iter().find(|v| v.name == name)
}

#[tokio::test]
async fn hello_and_watched_volumes_are_reported() -> R {
    let w = World::new()?;
    let _fake = w.rexray("rexray", "h1").await?;
    for (name, size) in [("es-a", 1), ("es-b", 2), ("other", 3)] {
        fake_rexray::create_volume(&w.backend(), name, size, "z9")?;
    }
    let sched = FakeScheduler::start(welcome(&["other", "ghost"], &["es-"], 100)).await?;
    let sidecar = RunningSidecar::spawn(w.sidecar_args(&sched.url(), "h1"));

    let report = sched
        .report("a report with every watched volume", |r| {
            r.volumes.len() == 4
        })
        .await?;
    let hello = sched.hellos().into_iter().next().ok_or("no hello")?;
    assert_eq!(
        (
            hello.hostname.as_str(),
            hello.driver_name.as_str(),
            hello.zone.as_str()
        ),
        ("h1", "rexray", "z1")
    );
    assert_eq!(hello.driver_scope, DriverScope::Global as i32);
    assert_eq!(hello.max_attachments, 4);
    assert!(!hello.instance_id.is_empty());
    assert!(
        report.driver.as_ref().is_some_and(|d| d.healthy),
        "{report:?}"
    );
    let b = vol(&report, "es-b").ok_or("es-b missing")?;
    assert!(b.exists && !b.attached_here);
    assert_eq!((b.size_bytes, b.zone.as_str()), (Some(2 << 30), "z9"));
    assert_eq!(b.status.get("type").map(String::as_str), Some("gp2"));
    let ghost = vol(&report, "ghost").ok_or("ghost missing")?;
    assert!(!ghost.exists && ghost.last_error.is_empty(), "{ghost:?}");
    assert!(vol(&report, "other").is_some());
    assert_eq!(report.attachments_used, 0);

    // Reports keep coming with increasing sequence numbers.
    let first = report.sequence;
    let later = sched
        .report("a later report", |r| r.sequence > first + 2)
        .await?;
    assert!(later.sequence > first);
    sidecar.stop().await?;
    Ok(())
}

#[tokio::test]
async fn prepare_release_round_trip_and_exclusivity() -> R {
    let w = World::new()?;
    let fake_a = w.rexray("rexray", "ha").await?;
    let plugins_b = w.dir.path().join("plugins-b");
    let mut cfg_b = fake_rexray::Config::new(plugins_b.join("rexray.sock"), w.backend(), "hb");
    cfg_b.zone = "z1".into();
    let _fake_b = fake_rexray::FakeRexray::serve(cfg_b).await?;
    fake_rexray::create_volume(&w.backend(), "v1", 1, "z1")?;

    let sched_a = FakeScheduler::start(welcome(&["v1"], &[], 100)).await?;
    let sched_b = FakeScheduler::start(welcome(&["v1"], &[], 100)).await?;
    let a = RunningSidecar::spawn(w.sidecar_args(&sched_a.url(), "ha"));
    let b = RunningSidecar::spawn(sidecar_args(
        &sched_b.url(),
        "rexray",
        &plugins_b,
        &w.state("hb"),
        "hb",
    ));
    sched_a.report("first report", |_| true).await?;
    sched_b.report("first report", |_| true).await?;

    let id = sched_a.prepare(7, &["v1"], false, &[]).await?;
    let res = sched_a.result(id).await?;
    assert!(res.ok, "{res:?}");
    let v = res.volumes.first().ok_or("no volume in result")?;
    assert!(
        v.attached_here && v.free_bytes.is_some() && v.size_bytes == Some(1 << 30),
        "{v:?}"
    );
    assert!(std::path::Path::new(&v.mountpoint).is_dir());
    assert_eq!(fake_a.mount_count("v1"), 1);
    // A repeated Prepare does not mount twice.
    let res = sched_a
        .result(sched_a.prepare(7, &["v1"], false, &[]).await?)
        .await?;
    assert!(res.ok, "{res:?}");
    assert_eq!(fake_a.mount_count("v1"), 1);
    sched_a
        .report("report showing the attachment", |r| {
            r.attachments_used == 1 && vol(r, "v1").is_some_and(|v| v.attached_here)
        })
        .await?;

    // Host b cannot take it while a holds it: REX-Ray's error, named.
    let res = sched_b
        .result(sched_b.prepare(7, &["v1"], false, &[]).await?)
        .await?;
    assert!(
        !res.ok
            && res.error.contains("VolumeDriver.Mount")
            && res.error.contains("resource not found"),
        "{res:?}"
    );
    assert!(std::fs::read_to_string(w.state("hb"))?.contains("\"mounts\": []"));

    let res = sched_a
        .result(sched_a.release(&["v1", "never-held"]).await?)
        .await?;
    assert!(res.ok, "{res:?}");
    assert_eq!(fake_a.mount_count("v1"), 0);
    assert_eq!(
        fake_rexray::volume_info(&w.backend(), "v1")?.and_then(|m| m.attached_host),
        None
    );

    // Now b can; missing volumes are created only when asked.
    let res = sched_b
        .result(sched_b.prepare(8, &["v1", "new-vol"], false, &[]).await?)
        .await?;
    assert!(!res.ok && res.error.contains("does not exist"), "{res:?}");
    // The failed command released what it had mounted.
    assert_eq!(
        fake_rexray::volume_info(&w.backend(), "v1")?.and_then(|m| m.attached_host),
        None
    );
    let res = sched_b
        .result(
            sched_b
                .prepare(8, &["v1", "new-vol"], true, &[("size", "5")])
                .await?,
        )
        .await?;
    assert!(res.ok, "{res:?}");
    let created = fake_rexray::volume_info(&w.backend(), "new-vol")?.ok_or("not created")?;
    assert_eq!(
        (created.size_gb, created.attached_host.as_deref()),
        (5, Some("hb"))
    );

    // Invalid names are refused at the edge.
    let res = sched_b
        .result(sched_b.prepare(9, &["../etc"], true, &[]).await?)
        .await?;
    assert!(
        !res.ok && res.error.contains("invalid volume name"),
        "{res:?}"
    );

    // A graceful stop releases everything held.
    a.stop().await?;
    b.stop().await?;
    for name in ["v1", "new-vol"] {
        assert_eq!(
            fake_rexray::volume_info(&w.backend(), name)?.and_then(|m| m.attached_host),
            None,
            "{name}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn mounts_stay_balanced_across_a_crash() -> R {
    let w = World::new()?;
    let fake = w.rexray("rexray", "h1").await?;
    fake_rexray::create_volume(&w.backend(), "v1", 1, "z1")?;
    let sched = FakeScheduler::start(welcome(&["v1"], &[], 100)).await?;
    let args = w.sidecar_args(&sched.url(), "h1");
    let first = RunningSidecar::spawn(args.clone());
    sched.report("first report", |_| true).await?;
    let res = sched
        .result(sched.prepare(1, &["v1"], false, &[]).await?)
        .await?;
    assert!(res.ok, "{res:?}");
    // Someone else (the Mesos isolator) also mounts it: REX-Ray counts 2.
    let other = tether_sidecar::plugin::PluginClient::new(
        tether_sidecar::plugin::PluginAddr::Unix(w.socket("rexray")),
    );
    other.mount("v1", "").await?;
    assert_eq!(fake.mount_count("v1"), 2);
    first.kill().await;
    assert_eq!(fake.mount_count("v1"), 2, "a crash makes no Unmount");

    sched.clear();
    let second = RunningSidecar::spawn(args);
    let report = sched
        .report("report after restart", |r| {
            vol(r, "v1").is_some_and(|v| !v.attached_here) && r.attachments_used == 0
        })
        .await?;
    assert!(report.driver.is_some_and(|d| d.healthy));
    assert_eq!(
        fake.mount_count("v1"),
        1,
        "exactly one Unmount for the sidecar's one Mount"
    );
    assert_eq!(
        fake_rexray::volume_info(&w.backend(), "v1")?
            .and_then(|m| m.attached_host)
            .as_deref(),
        Some("h1")
    );
    let hellos = sched.hellos();
    assert_eq!(hellos.len(), 1);
    second.stop().await?;
    assert_eq!(
        fake.mount_count("v1"),
        1,
        "nothing held, nothing released at stop"
    );
    other.unmount("v1", "").await?;
    Ok(())
}

#[tokio::test]
async fn driver_outage_is_reported_and_survived() -> R {
    let OneSidecar {
        world: w,
        fake,
        sched,
        sidecar,
    } = OneSidecar::start(&["v1"], welcome(&["v1"], &[], 100)).await?;
    sched
        .report("healthy report", |r| {
            r.driver.as_ref().is_some_and(|d| d.healthy)
        })
        .await?;

    fake.shutdown().await;
    let down = sched
        .report("unhealthy report", |r| {
            r.driver
                .as_ref()
                .is_some_and(|d| !d.healthy && d.error.contains("rexray"))
        })
        .await?;
    assert!(
        vol(&down, "v1").is_some_and(|v| !v.last_error.is_empty()),
        "{down:?}"
    );
    let res = sched
        .result(sched.prepare(1, &["v1"], false, &[]).await?)
        .await?;
    assert!(!res.ok && res.error.contains("unavailable"), "{res:?}");
    assert!(!sidecar.task.is_finished());

    let fake = w.rexray("rexray", "h1").await?;
    sched.clear();
    sched
        .report("healthy again", |r| {
            r.driver.as_ref().is_some_and(|d| d.healthy) && vol(r, "v1").is_some_and(|v| v.exists)
        })
        .await?;
    let res = sched
        .result(sched.prepare(1, &["v1"], false, &[]).await?)
        .await?;
    assert!(res.ok, "{res:?}");
    assert_eq!(fake.mount_count("v1"), 1);
    sidecar.stop().await?;
    assert_eq!(fake.mount_count("v1"), 0);
    Ok(())
}

#[tokio::test]
async fn scheduler_outage_and_reconnect_with_token() -> R {
    let w = World::new()?;
    let _fake = w.rexray("rexray", "h1").await?;
    let mut sched = FakeScheduler::start(welcome(&[], &[], 100)).await?;
    let token = w.dir.path().join("token");
    std::fs::write(&token, "s3cret\n")?;
    let mut args = w.sidecar_args(&sched.url(), "h1");
    args.token_file = Some(token);
    let sidecar = RunningSidecar::spawn(args);
    sched.report("first report", |_| true).await?;

    sched.stop().await;
    sched.clear();
    sched.restart().await?;
    sched.report("a report after the outage", |_| true).await?;
    let hellos = sched.hellos();
    assert_eq!(hellos.len(), 1, "a reconnecting sidecar says Hello again");
    assert!(sched.connections() >= 2);
    assert!(
        sched
            .authorizations()
            .iter()
            .all(|a| a.as_deref() == Some("Bearer s3cret"))
    );

    // The scheduler closing the stream is also survived.
    sched.clear();
    sched.disconnect();
    sched
        .report("a report after a disconnect", |_| true)
        .await?;
    assert!(!sidecar.task.is_finished());
    sidecar.stop().await?;
    Ok(())
}

#[tokio::test]
async fn bad_driver_replies_are_clear_errors_and_survived() -> R {
    let OneSidecar {
        world: w,
        fake,
        sched,
        sidecar,
    } = OneSidecar::start(&["v1"], welcome(&["v1"], &[], 100)).await?;

    let raw = |body: &str, pad| MethodFault {
        reply: Some(RawReply {
            status: 200,
            content_type: None,
            body: body.into(),
            pad_bytes: pad,
        }),
        ..Default::default()
    };
    let cases = [
        (raw("{\"Volume\": {", 0), "unreadable reply: not JSON"),
        (
            raw("{\"Volume\": {\"Name\": [1]}}", 0),
            "should be a string",
        ),
        (raw("{}", 10 << 20), "reply larger than"),
        (
            MethodFault {
                hang: true,
                ..Default::default()
            },
            "no reply within 2s",
        ),
    ];
    for (fault, want) in cases {
        fake.faults().set(Faults::on("Get", fault));
        sched.clear();
        let r = sched
            .report(want, |r| {
                vol(r, "v1").is_some_and(|v| v.last_error.contains(want))
            })
            .await?;
        let v = vol(&r, "v1").ok_or("v1")?;
        assert!(
            v.last_error.contains("VolumeDriver.Get of volume \"v1\""),
            "{v:?}"
        );
    }

    // A Mount that never answers: the command fails with a timeout and the mount is balanced.
    fake.faults().set(Faults::on(
        "Mount",
        MethodFault {
            hang: true,
            ..Default::default()
        },
    ));
    let res = sched
        .result(sched.prepare(1, &["v1"], false, &[]).await?)
        .await?;
    assert!(
        !res.ok
            && res.error.contains("VolumeDriver.Mount")
            && res.error.contains("no reply within 3s"),
        "{res:?}"
    );
    assert!(std::fs::read_to_string(w.state("h1"))?.contains("\"mounts\": []"));

    fake.faults().clear();
    sched.clear();
    sched
        .report("healthy after faults", |r| {
            r.driver.as_ref().is_some_and(|d| d.healthy)
                && vol(r, "v1").is_some_and(|v| v.exists && v.last_error.is_empty())
        })
        .await?;
    assert!(!sidecar.task.is_finished());
    sidecar.stop().await?;
    Ok(())
}
