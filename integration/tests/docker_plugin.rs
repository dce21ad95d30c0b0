//! Docker tier: the real Docker engine as the reference client of fake-rexray. Registers the fake's socket
//! in /run/docker/plugins (a fixed test driver name; unique volume and image names), then
//! `docker volume create -d`, `inspect`, `ls`, and `docker run -v vol:/data` with a `FROM scratch` image
//! (the system's `sh` plus the libraries `ldd` lists) writing a file that must then be visible through the
//! plugin's mountpoint.
//!
//! Skips loudly when no engine answers; fails instead when TETHER_REQUIRE_DOCKER=1.

use std::path::{Path, PathBuf};
use std::process::Output;

use tether_integration::fake_rexray::{self, Config, FakeRexray};

type R = Result<(), Box<dyn std::error::Error>>;

async fn docker(args: &[&str]) -> Result<Output, String> {
    tokio::process::Command::new("docker")
        .args(args)
        .output()
        .await
        .map_err(|e| format!("docker {args:?}: {e}"))
}

/// Runs docker and requires success; returns stdout.
async fn docker_ok(args: &[&str]) -> Result<String, String> {
    let out = docker(args).await?;
    if !out.status.success() {
        return Err(format!(
            "docker {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether a Docker engine answers; panics when one is required but missing.
async fn engine_available() -> bool {
    let ok = docker(&["info", "--format", "{{.ServerVersion}}"])
        .await
        .is_ok_and(|o| o.status.success());
    if !ok {
        if std::env::var("TETHER_REQUIRE_DOCKER").is_ok_and(|v| v == "1") {
            panic!("TETHER_REQUIRE_DOCKER=1 but no Docker engine answers `docker info`");
        }
        eprintln!("\n*** SKIPPING docker_plugin: no Docker engine answers `docker info` ***\n");
    }
    ok
}

/// Removes what the test created, even when it fails half-way.
struct Cleanup {
    volumes: Vec<String>,
    image: Option<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for v in &self.volumes {
            let _ = std::process::Command::new("docker")
                .args(["volume", "rm", "-f", v])
                .output();
        }
        if let Some(i) = &self.image {
            let _ = std::process::Command::new("docker")
                .args(["rmi", "-f", i])
                .output();
        }
    }
}

/// A build context holding `sh` and the shared libraries it needs, at their own paths.
fn shell_rootfs(ctx: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let sh = std::fs::canonicalize("/bin/sh")?;
    let ldd = std::process::Command::new("ldd").arg(&sh).output()?;
    if !ldd.status.success() {
        return Err(format!(
            "ldd {}: {}",
            sh.display(),
            String::from_utf8_lossy(&ldd.stderr)
        )
        .into());
    }
    let mut files: Vec<PathBuf> = String::from_utf8_lossy(&ldd.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
        .map(PathBuf::from)
        .collect();
    files.push(sh.clone());
    let rootfs = ctx.join("rootfs");
    for f in &files {
        let dest = rootfs.join(f.strip_prefix("/")?);
        std::fs::create_dir_all(dest.parent().ok_or("no parent")?)?;
        std::fs::copy(f, &dest)?;
    }
    let bin_sh = rootfs.join("bin/sh");
    if !bin_sh.exists() {
        std::fs::create_dir_all(rootfs.join("bin"))?;
        std::fs::copy(&sh, &bin_sh)?;
    }
    std::fs::create_dir_all(rootfs.join("data"))?;
    std::fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY rootfs/ /\n")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_engine_uses_fake_rexray() -> R {
    if !engine_available().await {
        return Ok(());
    }
    let tag = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
    // A fixed driver name: the engine remembers every driver it has used and, while its socket is gone,
    // retries it for ~15 s on each `docker volume ls`; a name per run would slow every later run.
    let driver = "tether-test-fake-rexray".to_string();
    // The fixed name means two test runs on one machine (two checkouts) would share the socket; take
    // turns through a lock held for the whole test.
    let lock = std::fs::File::create(std::env::temp_dir().join(format!("{driver}.lock")))?;
    lock.lock()?;
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
    let mut cleanup = Cleanup {
        volumes: Vec::new(),
        image: None,
    };

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

    let ctx = tmp.path().join("ctx");
    shell_rootfs(&ctx)?;
    cleanup.image = Some(image.clone());
    docker_ok(&["build", "-q", "-t", &image, &ctx.display().to_string()]).await?;
    let mount = format!("{volume}:/data");
    docker_ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        &mount,
        &image,
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
    fake.shutdown().await;
    assert!(!Path::new(&format!("/run/docker/plugins/{driver}.sock")).exists());
    drop(lock);
    Ok(())
}
