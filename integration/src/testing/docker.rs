//! Helpers of the Docker-tier tests: whether an engine answers (skipping loudly, or failing under
//! `TETHER_REQUIRE_DOCKER=1`), the `docker` CLI as the reference client, `FROM scratch` images built from
//! host programs plus the shared libraries `ldd` lists, the fixed test driver name and its lock, and
//! guards that remove what a test created even when it fails half-way.

use std::path::{Path, PathBuf};
use std::process::Output;

/// The driver name tests register fake-rexray under. Fixed: the engine remembers every driver it has used
/// and, while its socket is gone, retries it for ~15 s on each `docker volume ls`; a name per run would
/// slow every later run.
pub const TEST_DRIVER: &str = "tether-test-fake-rexray";

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Runs `docker <args>`.
pub async fn docker(args: &[&str]) -> Result<Output, String> {
    tokio::process::Command::new("docker")
        .args(args)
        .output()
        .await
        .map_err(|e| format!("docker {args:?}: {e}"))
}

/// Runs `docker <args>` and requires success; returns stdout.
pub async fn docker_ok(args: &[&str]) -> Result<String, String> {
    let out = docker(args).await?;
    if !out.status.success() {
        return Err(format!(
            "docker {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether `TETHER_REQUIRE_DOCKER=1` asks Docker-tier tests to fail rather than skip.
pub fn docker_required() -> bool {
    std::env::var("TETHER_REQUIRE_DOCKER").is_ok_and(|v| v == "1")
}

/// Whether a Docker engine answers; panics when one is required but missing, says loudly that `test` is
/// skipped otherwise.
pub async fn engine_available(test: &str) -> bool {
    let ok = docker(&["info", "--format", "{{.ServerVersion}}"])
        .await
        .is_ok_and(|o| o.status.success());
    if !ok {
        if docker_required() {
            panic!("TETHER_REQUIRE_DOCKER=1 but no Docker engine answers `docker info`");
        }
        eprintln!("\n*** SKIPPING {test}: no Docker engine answers `docker info` ***\n");
    }
    ok
}

/// Holds [`TEST_DRIVER`] for this test: two test runs on one machine (two checkouts) would otherwise
/// share its socket.
#[derive(Debug)]
pub struct DriverLock {
    _lock: std::fs::File,
}

impl DriverLock {
    pub fn acquire() -> std::io::Result<DriverLock> {
        let f = std::fs::File::create(std::env::temp_dir().join(format!("{TEST_DRIVER}.lock")))?;
        f.lock()?;
        Ok(DriverLock { _lock: f })
    }
}

/// Copies `programs` (and the shared libraries `ldd` lists for each, at their own paths) into
/// `<ctx>/rootfs`, creates `dirs` there, and writes a `FROM scratch` Dockerfile. A static program has no
/// libraries to copy, so this also packs static binaries.
pub fn scratch_context(
    ctx: &Path,
    programs: &[&Path],
    dirs: &[&str],
    entrypoint: Option<&str>,
) -> Result<(), Box<dyn std::error::Error>> {
    let rootfs = ctx.join("rootfs");
    for program in programs {
        let real = std::fs::canonicalize(program)?;
        let ldd = std::process::Command::new("ldd").arg(&real).output()?;
        // `ldd` fails on a static binary ("not a dynamic executable"): nothing to copy then.
        let mut files: Vec<PathBuf> = if ldd.status.success() {
            String::from_utf8_lossy(&ldd.stdout)
                .split_whitespace()
                .filter(|w| w.starts_with('/'))
                .map(PathBuf::from)
                .collect()
        } else {
            Vec::new()
        };
        files.push(real.clone());
        for f in &files {
            let dest = rootfs.join(f.strip_prefix("/")?);
            std::fs::create_dir_all(dest.parent().ok_or("no parent")?)?;
            std::fs::copy(f, &dest)?;
        }
        // Also at the path it was asked for (e.g. /bin/sh → /usr/bin/dash).
        let asked = rootfs.join(program.strip_prefix("/")?);
        if !asked.exists() {
            std::fs::create_dir_all(asked.parent().ok_or("no parent")?)?;
            std::fs::copy(&real, &asked)?;
        }
    }
    for d in dirs {
        std::fs::create_dir_all(rootfs.join(d.trim_start_matches('/')))?;
    }
    let mut dockerfile = "FROM scratch\nCOPY rootfs/ /\n".to_owned();
    if let Some(e) = entrypoint {
        dockerfile.push_str(&format!("ENTRYPOINT [\"{e}\"]\n"));
    }
    std::fs::write(ctx.join("Dockerfile"), dockerfile)?;
    Ok(())
}

/// An image built by a test; removed when dropped.
#[derive(Debug)]
pub struct TestImage {
    pub tag: String,
}

impl TestImage {
    /// Builds `tag` from the programs (see [`scratch_context`]) in a temporary context.
    pub async fn build(
        tag: &str,
        programs: &[&Path],
        dirs: &[&str],
    ) -> Result<TestImage, Box<dyn std::error::Error>> {
        let ctx = tempfile::tempdir()?;
        scratch_context(ctx.path(), programs, dirs, None)?;
        let image = TestImage {
            tag: tag.to_owned(),
        };
        docker_ok(&["build", "-q", "-t", tag, &ctx.path().display().to_string()]).await?;
        Ok(image)
    }
}

impl Drop for TestImage {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rmi", "-f", &self.tag])
            .output();
    }
}

/// Engine volumes a test created (through the CLI or through containers); removed when dropped. Declare
/// it after the plugin serving them, so that it drops first while the plugin still answers `Remove`.
#[derive(Debug, Default)]
pub struct VolumeCleanup {
    pub volumes: Vec<String>,
}

impl Drop for VolumeCleanup {
    fn drop(&mut self) {
        for v in &self.volumes {
            let _ = std::process::Command::new("docker")
                .args(["volume", "rm", "-f", v])
                .output();
        }
    }
}
