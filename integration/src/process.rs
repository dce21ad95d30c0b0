//! Child processes for the local cluster, the end-to-end tests and the benchmarks: the workspace's
//! binaries (or this executable re-run as a component), each in its own process group with its output in
//! a log file, plus a free loopback port to give one.
//!
//! A [`Proc`] is one child with its output in a log file; dropping it kills the child, so a failing test
//! leaves nothing running. Binaries are found next to the running executable (`target/<profile>/`), which
//! is where `cargo build --workspace --bins` puts them — the README's test command builds them first.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use std::os::unix::process::CommandExt as _;

use rustix::process::{Pid, Signal, kill_process, kill_process_group};

/// Why a child could not be run or did not behave.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error(
        "binary {name} not found at {path}; build the workspace's binaries first (`cargo build --workspace --bins`)"
    )]
    MissingBinary { name: String, path: PathBuf },
    #[error("cannot start {name}: {source}")]
    Spawn {
        name: String,
        source: std::io::Error,
    },
    #[error("cannot create log file {path}: {source}")]
    Log {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{name} did not exit within {waited:?}")]
    NoExit { name: String, waited: Duration },
    #[error("signal to {name}: {source}")]
    Signal {
        name: String,
        source: std::io::Error,
    },
}

/// The directory holding the workspace's binaries for the running profile.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    // Test executables live in `target/<profile>/deps`; binaries one level up.
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// The path of a workspace binary, checked to exist.
pub fn bin_path(name: &str) -> Result<PathBuf, ProcError> {
    let path = bin_dir().join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(ProcError::MissingBinary {
            name: name.to_owned(),
            path,
        })
    }
}

/// A running child process whose stdout and stderr go to `<log_dir>/<label>.log`. Killed on drop.
#[derive(Debug)]
pub struct Proc {
    label: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Starts binary `name` with `args` and extra environment `env`.
    pub fn spawn(
        name: &str,
        label: &str,
        args: &[String],
        env: &[(String, String)],
        log_dir: &Path,
    ) -> Result<Proc, ProcError> {
        Proc::spawn_exe(&bin_path(name)?, label, args, env, log_dir)
    }

    /// Starts the executable at `path` (e.g. this program again, as a component).
    pub fn spawn_exe(
        path: &Path,
        label: &str,
        args: &[String],
        env: &[(String, String)],
        log_dir: &Path,
    ) -> Result<Proc, ProcError> {
        let name = path.display().to_string();
        let log = log_dir.join(format!("{label}.log"));
        // Appended, not truncated: a restarted component's log keeps what the killed one said, which is
        // what explains a failure after a crash.
        let out = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|source| ProcError::Log {
                path: log.clone(),
                source,
            })?;
        let mut marker = &out;
        std::io::Write::write_all(
            &mut marker,
            format!("=== {label}: {name} starts\n").as_bytes(),
        )
        .map_err(|source| ProcError::Log {
            path: log.clone(),
            source,
        })?;
        let err = out.try_clone().map_err(|source| ProcError::Log {
            path: log.clone(),
            source,
        })?;
        let child = Command::new(path)
            // Its own process group: killing the group also kills whatever it started (the emulator's
            // tasks), so a crashed or dropped component leaves nothing behind.
            .process_group(0)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|source| ProcError::Spawn {
                name: name.to_owned(),
                source,
            })?;
        Ok(Proc {
            label: label.to_owned(),
            child,
            log,
        })
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The child's output so far (for failure messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends a signal (e.g. SIGTERM for a graceful stop, SIGSTOP to freeze).
    pub fn signal(&self, signal: Signal) -> Result<(), ProcError> {
        let pid = Pid::from_raw(self.child.id() as i32).ok_or_else(|| ProcError::Signal {
            name: self.label.clone(),
            source: std::io::Error::other("invalid pid"),
        })?;
        kill_process(pid, signal).map_err(|e| ProcError::Signal {
            name: self.label.clone(),
            source: e.into(),
        })
    }

    /// SIGKILL to the process and everything it started, as a machine crash would.
    pub fn kill9(&mut self) {
        if let Some(pid) = Pid::from_raw(self.child.id() as i32) {
            let _ = kill_process_group(pid, Signal::KILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether the child is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the child to exit, polling (the child is not async).
    pub async fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, ProcError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Ok(status);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ProcError::NoExit {
                    name: self.label.clone(),
                    waited: timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, then wait for a clean exit.
    pub async fn stop(&mut self, timeout: Duration) -> Result<ExitStatus, ProcError> {
        self.signal(Signal::TERM)?;
        self.wait_exit(timeout).await
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // The group too: the leader may be gone while what it started still runs.
        self.kill9();
    }
}

/// A free TCP port on loopback (bound and released; good enough for tests on one machine).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::eventually;

    #[tokio::test]
    async fn a_child_is_logged_signalled_and_reaped() {
        let dir = tempfile::tempdir().expect("tempdir");
        // es-standin stops cleanly on SIGTERM.
        let Ok(_) = bin_path("es-standin") else {
            panic!("{}", bin_path("es-standin").expect_err("missing"));
        };
        // The stand-in plays a container: its own layer is a sandbox directory, as under the emulator.
        let rootfs = dir.path().join("rootfs");
        std::fs::create_dir(&rootfs).expect("rootfs");
        std::fs::set_permissions(&rootfs, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        let args = [
            "http.port=0",
            "transport.port=0",
            "network.host=127.0.0.1",
            "xpack.security.enabled=false",
        ]
        .iter()
        .flat_map(|s| ["-E".to_owned(), s.to_string()])
        .collect::<Vec<_>>();
        let env = [(
            crate::mesos_emu::launcher::EMU_ROOTFS_ENV.to_owned(),
            rootfs.display().to_string(),
        )];
        let mut p = Proc::spawn("es-standin", "es", &args, &env, dir.path()).expect("spawn");
        eventually(
            "es-standin to log its start",
            Duration::from_secs(20),
            || {
                let text = p.log_text();
                async move { text.contains("es-standin started").then_some(()) }
            },
        )
        .await
        .expect("started");
        let status = p.stop(Duration::from_secs(20)).await.expect("exits");
        assert!(status.success(), "clean exit on SIGTERM: {}", p.log_text());
    }

    #[test]
    fn a_missing_binary_says_how_to_build_it() {
        let err = bin_path("no-such-binary").expect_err("missing");
        assert!(err.to_string().contains("cargo build --workspace --bins"));
    }
}
