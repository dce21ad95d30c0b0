//! Docker tier: the real Docker engine as the reference client of fake-rexray. Registers the fake's socket
//! in /run/docker/plugins (a fixed test driver name; unique volume and image names), then
//! `docker volume create -d`, `inspect`, `ls`, and `docker run -v vol:/data` with a `FROM scratch` image
//! (the system's `sh` plus the libraries `ldd` lists) writing a file that must then be visible through the
//! plugin's mountpoint.
//!
//! Skips loudly when no engine answers; fails instead when TETHER_REQUIRE_DOCKER=1.

use std::path::Path;

use tether_integration::fake_rexray::{self, Config, FakeRexray};
use tether_integration::testing::docker::{
    DriverLock, TEST_DRIVER, TestImage, TestResult as R, VolumeCleanup, docker_ok, engine_available,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_engine_uses_fake_rexray() -> R {
    if !engine_available("docker_plugin").await {
        return Ok(());
    }
    let tag = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
    let driver = TEST_DRIVER.to_string();
    let lock = DriverLock::acquire()?;
    let volume = format!("tether-vol-{tag}");
    let image = format!("tether-test-sh:{tag}");
    let tmp = tempfile::tempdir()?;
    let backend = tmp.path().join("backend");
    let mut cfg = Config::new(
        format!("/run/docker/plugins/{driver}.sock"),
        &backend,
        "docker-host",
    );
    cfg.zone = "z1".into();
    let fake = FakeRexray::serve(cfg).await?;
    // Declared after the fake so it drops first, while the plugin still answers `volume rm`.
    let mut cleanup = VolumeCleanup::default();

    cleanup.volumes.push(volume.clone());
    docker_ok(&[
        "volume",
        "create",
        "-d",
        &driver,
        "--opt",
        "size=2",
        "--opt",
        "availabilityZone=z7",
        &volume,
    ])
    .await?;
    let meta = fake_rexray::volume_info(&backend, &volume)?.ok_or("volume not in the backend")?;
    assert_eq!((meta.size_gb, meta.zone.as_str()), (2, "z7"));

    let inspect: serde_json::Value =
        serde_json::from_str(&docker_ok(&["volume", "inspect", &volume]).await?)?;
    let v = &inspect[0];
    assert_eq!(v["Driver"], driver.as_str());
    assert_eq!(v["Scope"], "global");
    assert_eq!(v["Status"]["availabilityZone"], "z7");
    assert_eq!(v["Status"]["size"], 2);

    let ls = docker_ok(&[
        "volume",
        "ls",
        "--filter",
        &format!("driver={driver}"),
        "--format",
        "{{.Name}}",
    ])
    .await?;
    assert!(
        ls.lines().any(|l| l.trim() == volume),
        "docker volume ls: {ls}"
    );

    let image = TestImage::build(&image, &[Path::new("/bin/sh")], &["data"]).await?;
    let mount = format!("{volume}:/data");
    docker_ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        &mount,
        &image.tag,
        "/bin/sh",
        "-c",
        "echo written-by-docker > /data/hello",
    ])
    .await?;

    // The engine balanced its Mount with an Unmount, and the data is in the plugin's mountpoint.
    assert_eq!(fake.mount_count(&volume), 0);
    let meta = fake_rexray::volume_info(&backend, &volume)?.ok_or("volume vanished")?;
    assert_eq!(meta.attached_host, None);
    let data = meta.data_path.ok_or("never mounted")?;
    assert!(
        data.ends_with(format!("volumes/{volume}/data")),
        "{}",
        data.display()
    );
    assert_eq!(
        std::fs::read_to_string(data.join("hello"))?.trim(),
        "written-by-docker"
    );

    docker_ok(&["volume", "rm", &volume]).await?;
    assert!(fake_rexray::volume_info(&backend, &volume)?.is_none());
    drop(cleanup);
    drop(image);
    fake.shutdown().await;
    assert!(!Path::new(&format!("/run/docker/plugins/{driver}.sock")).exists());
    drop(lock);
    Ok(())
}
