//! How emulated agents run tasks. A [`Launcher`] gets the TaskInfo, a [`Reporter`] for status updates and
//! a control channel (kill, fail, and the machine faults: lost with its machine, frozen, thawed).
//! `SimLauncher` scripts the transitions; `ProcessLauncher` spawns the task's command locally, resolving
//! DOCKER_VOLUME volumes through a [`VolumeAttacher`] the way dvdcli does for the Mesos containerizer, and
//! hands the container-path → host-path mapping to the process.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::future::BoxFuture;
use tether_mesos::model::{
    AgentID, CommandInfo, ContainerType, FrameworkID, Reason, TaskInfo, TaskState, VolumeSourceType,
};
use tokio::sync::mpsc;

use super::health::{self, Policy, Probe, Verdict};
use super::master::Shared;

/// Commands from the master (or a fault) to a running task.
#[derive(Debug, Clone)]
pub enum TaskControl {
    /// Kill: SIGTERM, then SIGKILL after `grace`.
    Kill { grace: Duration },
    /// Fault injection: the task fails now.
    Fail { message: String },
    /// The agent's machine died: the task's processes are gone at once, and nothing else happens — no
    /// status update (its executor died too) and no unmount (a dead machine detaches nothing, so its
    /// volumes stay attached to it).
    Lose,
    /// The machine is cut off and its processes stop where they are (SIGSTOP), as behind a partition
    /// where nothing the task does reaches anyone.
    Freeze,
    /// The partition heals: frozen processes continue (SIGCONT) from where they stopped.
    Thaw,
}

/// What a launcher is given.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    pub framework_id: FrameworkID,
    pub agent_id: AgentID,
    pub agent_hostname: String,
    pub task: TaskInfo,
}

/// Sends status updates for one task, as its executor would. Dropped silently once the master forgot it.
#[derive(Debug, Clone)]
pub struct Reporter {
    pub(crate) shared: Weak<Shared>,
    pub(crate) framework_id: FrameworkID,
    pub(crate) task_id: String,
}

impl Reporter {
    pub fn report(
        &self,
        state: TaskState,
        reason: Option<Reason>,
        message: Option<String>,
        healthy: Option<bool>,
    ) {
        if let Some(shared) = self.shared.upgrade() {
            shared.agent_report(
                &self.framework_id,
                &self.task_id,
                state,
                reason,
                message,
                healthy,
            );
        }
    }

    /// TASK_FAILED with REASON_CONTAINER_LAUNCH_FAILED, as an agent reports a container it could not start.
    pub fn launch_failed(&self, message: String) {
        self.report(
            TaskState::Failed,
            Some(Reason::ReasonContainerLaunchFailed),
            Some(message),
            None,
        );
    }
}

/// Runs tasks for the emulated agents.
pub trait Launcher: Send + Sync + std::fmt::Debug {
    /// Starts the task; must return quickly (spawn) and report at least one state eventually.
    fn launch(
        &self,
        spec: LaunchSpec,
        reporter: Reporter,
        control: mpsc::UnboundedReceiver<TaskControl>,
    );

    /// Removes whatever the launcher left outside this process (containers); run when the emulator
    /// starts and after it stops.
    fn cleanup(&self) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

/// Scripted tasks: STARTING, RUNNING (healthy when a health check is set), then whatever the control
/// channel or the script says.
#[derive(Debug, Clone)]
pub struct SimLauncher {
    /// Delay before each of STARTING and RUNNING.
    pub step: Duration,
    /// Tasks whose name contains one of these fail to launch (TASK_FAILED, REASON_CONTAINER_LAUNCH_FAILED).
    pub fail_names: Vec<String>,
    /// When set, tasks finish (TASK_FINISHED) after running this long.
    pub run_for: Option<Duration>,
}

impl Default for SimLauncher {
    fn default() -> Self {
        SimLauncher {
            step: Duration::from_millis(10),
            fail_names: vec![],
            run_for: None,
        }
    }
}

impl Launcher for SimLauncher {
    fn launch(
        &self,
        spec: LaunchSpec,
        r: Reporter,
        mut control: mpsc::UnboundedReceiver<TaskControl>,
    ) {
        let this = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(this.step).await;
            r.report(TaskState::Starting, None, None, None);
            tokio::time::sleep(this.step).await;
            if this
                .fail_names
                .iter()
                .any(|n| spec.task.name.contains(n.as_str()))
            {
                r.report(
                    TaskState::Failed,
                    Some(Reason::ReasonContainerLaunchFailed),
                    Some("Failed to launch container: scripted failure".into()),
                    None,
                );
                return;
            }
            let healthy = spec.task.health_check.as_ref().map(|_| true);
            r.report(TaskState::Running, None, None, healthy);
            let finish = async {
                match this.run_for {
                    Some(d) => tokio::time::sleep(d).await,
                    None => futures::future::pending::<()>().await,
                }
            };
            tokio::pin!(finish);
            loop {
                tokio::select! {
                    _ = &mut finish => {
                        r.report(TaskState::Finished, None, Some("Command exited with status 0".into()), None);
                        return;
                    }
                    c = control.recv() => match c {
                        Some(TaskControl::Kill { grace }) => {
                            tokio::time::sleep(grace.min(this.step)).await;
                            r.report(TaskState::Killed, None, Some("Command terminated with signal Terminated".into()), None);
                            return;
                        }
                        Some(TaskControl::Fail { message }) => {
                            r.report(TaskState::Failed, Some(Reason::ReasonExecutorTerminated), Some(message), None);
                            return;
                        }
                        // A scripted task has no process to freeze; a lost one just ends, unreported.
                        Some(TaskControl::Freeze | TaskControl::Thaw) => {}
                        Some(TaskControl::Lose) | None => return,
                    },
                }
            }
        });
    }
}

/// Resolves a Docker volume to a host directory on the task's agent, like `dvdcli mount` run by that
/// agent's `docker/volume` isolator (and `unmount` when the task ends).
pub trait VolumeAttacher: Send + Sync + std::fmt::Debug {
    fn attach(
        &self,
        agent: String,
        driver: String,
        name: String,
        options: Vec<(String, String)>,
    ) -> BoxFuture<'static, Result<PathBuf, String>>;
    fn detach(
        &self,
        agent: String,
        driver: String,
        name: String,
    ) -> BoxFuture<'static, Result<(), String>>;
}

/// Test attacher: each volume is `<root>/<driver>/<name>`, created on first attach.
#[derive(Debug, Clone)]
pub struct DirVolumeAttacher {
    pub root: PathBuf,
}

impl VolumeAttacher for DirVolumeAttacher {
    fn attach(
        &self,
        _agent: String,
        driver: String,
        name: String,
        _: Vec<(String, String)>,
    ) -> BoxFuture<'static, Result<PathBuf, String>> {
        let root = self.root.clone();
        Box::pin(async move {
            if name.is_empty()
                || name.contains('/')
                || name.starts_with('.')
                || driver.contains('/')
            {
                return Err(format!("invalid volume name {name:?} or driver {driver:?}"));
            }
            let p = root
                .join(if driver.is_empty() { "local" } else { &driver })
                .join(&name);
            tokio::fs::create_dir_all(&p)
                .await
                .map_err(|e| format!("cannot create {}: {e}", p.display()))?;
            Ok(p)
        })
    }
    fn detach(&self, _: String, _: String, _: String) -> BoxFuture<'static, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
}

/// Attaches through each agent's Docker volume plugin: the socket of driver `D` on agent `H` is found
/// under `<root>/<H>/` the way the Docker engine finds it (`D.sock`, `D/D.sock`). Like dvdcli, it mounts
/// with no id and unmounts once when the task ends.
#[derive(Debug, Clone)]
pub struct PluginVolumeAttacher {
    pub root: PathBuf,
}

impl PluginVolumeAttacher {
    fn client(
        &self,
        agent: &str,
        driver: &str,
    ) -> Result<tether_sidecar::plugin::PluginClient, String> {
        if agent.is_empty() || agent.contains('/') || agent.starts_with('.') {
            return Err(format!("invalid agent host name {agent:?}"));
        }
        let dir = self.root.join(agent);
        let addr = tether_sidecar::plugin::discover(driver, &[dir], &[])
            .map_err(|e| format!("volume driver {driver} on {agent}: {e}"))?;
        Ok(tether_sidecar::plugin::PluginClient::new(addr))
    }
}

impl VolumeAttacher for PluginVolumeAttacher {
    fn attach(
        &self,
        agent: String,
        driver: String,
        name: String,
        _options: Vec<(String, String)>,
    ) -> BoxFuture<'static, Result<PathBuf, String>> {
        let client = self.client(&agent, &driver);
        Box::pin(async move {
            let client = client?;
            let mountpoint = client.mount(&name, "").await.map_err(|e| e.to_string())?;
            Ok(PathBuf::from(mountpoint))
        })
    }

    fn detach(
        &self,
        agent: String,
        driver: String,
        name: String,
    ) -> BoxFuture<'static, Result<(), String>> {
        let client = self.client(&agent, &driver);
        Box::pin(async move { client?.unmount(&name, "").await.map_err(|e| e.to_string()) })
    }
}

/// The task's container image (`ContainerInfo.docker.image` or `.mesos.image.docker.name`), handed to the
/// process by both launchers: the Elasticsearch stand-in plays the version its tag names.
pub const TASK_IMAGE_ENV: &str = "TETHER_TASK_IMAGE";

/// Set by [`ProcessLauncher`] to the sandbox: the host directory standing in for the container's own
/// filesystem, which this launcher cannot give the task (see `es_standin::container`).
pub const EMU_ROOTFS_ENV: &str = "TETHER_EMU_ROOTFS";

/// The image a TaskInfo names, Docker or Mesos containerizer.
pub fn task_image(task: &TaskInfo) -> Option<String> {
    let container = task.container.as_ref()?;
    container
        .docker
        .as_ref()
        .map(|d| d.image.clone())
        .filter(|i| !i.is_empty())
        .or_else(|| {
            container
                .mesos
                .as_ref()
                .and_then(|m| m.image.as_ref())
                .and_then(|i| i.docker.as_ref())
                .map(|d| d.name.clone())
        })
}

/// `TETHER_VOLUME_<container path, non-alphanumerics as '_', upper-case>`, e.g. `/data` → `TETHER_VOLUME_DATA`.
pub fn volume_env_name(container_path: &str) -> String {
    let s: String = container_path
        .trim_matches('/')
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("TETHER_VOLUME_{s}")
}

/// Spawns the task's command on this host.
#[derive(Debug, Clone)]
pub struct ProcessLauncher {
    /// Sandboxes are `<sandbox_root>/<task id>`.
    pub sandbox_root: PathBuf,
    pub volumes: Arc<dyn VolumeAttacher>,
}

impl Launcher for ProcessLauncher {
    fn launch(&self, spec: LaunchSpec, r: Reporter, control: mpsc::UnboundedReceiver<TaskControl>) {
        let this = self.clone();
        tokio::spawn(async move { this.run(spec, r, control).await });
    }
}

impl ProcessLauncher {
    async fn run(
        &self,
        spec: LaunchSpec,
        r: Reporter,
        mut control: mpsc::UnboundedReceiver<TaskControl>,
    ) {
        let fail = |msg: String| r.launch_failed(msg);
        let task = &spec.task;
        let Some(cmd) = task.command.clone() else {
            return fail("the process launcher runs only tasks with a CommandInfo".into());
        };
        let safe_id: String = task
            .task_id
            .value
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let sandbox = self.sandbox_root.join(safe_id);
        if let Err(e) = tokio::fs::create_dir_all(&sandbox).await {
            return fail(format!("cannot create sandbox {}: {e}", sandbox.display()));
        }
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        let mut attached: Vec<(String, String, String)> = Vec::new();
        for v in task.container.iter().flat_map(|c| c.volumes.iter()) {
            let Some(src) = &v.source else { continue };
            if src.source_type != Some(VolumeSourceType::DockerVolume) {
                continue;
            }
            let Some(dv) = &src.docker_volume else {
                continue;
            };
            let driver = dv.driver.clone().unwrap_or_default();
            let opts = dv
                .driver_options
                .iter()
                .flat_map(|p| p.parameter.iter())
                .map(|p| (p.key.clone(), p.value.clone()));
            match self
                .volumes
                .attach(
                    spec.agent_hostname.clone(),
                    driver.clone(),
                    dv.name.clone(),
                    opts.collect(),
                )
                .await
            {
                Ok(path) => {
                    env.insert(
                        volume_env_name(&v.container_path),
                        path.display().to_string(),
                    );
                    attached.push((spec.agent_hostname.clone(), driver, dv.name.clone()));
                }
                Err(e) => {
                    self.detach_all(&attached).await;
                    return fail(format!("Failed to mount docker volume '{}': {e}", dv.name));
                }
            }
        }
        env.insert("MESOS_SANDBOX".into(), sandbox.display().to_string());
        env.insert("MESOS_TASK_ID".into(), task.task_id.value.clone());
        env.insert("MESOS_AGENT_ID".into(), spec.agent_id.value.clone());
        env.insert(EMU_ROOTFS_ENV.into(), sandbox.display().to_string());
        if let Some(image) = task_image(task) {
            env.insert(TASK_IMAGE_ENV.into(), image);
        }
        for var in cmd.environment.iter().flat_map(|e| e.variables.iter()) {
            if let Some(v) = &var.value {
                env.insert(var.name.clone(), v.clone());
            }
        }
        let mut command = if cmd.shell.unwrap_or(true) {
            let mut c = tokio::process::Command::new("/bin/sh");
            c.arg("-c").arg(cmd.value.clone().unwrap_or_default());
            c
        } else {
            let Some((program, args)) = exec_argv(task, &cmd) else {
                self.detach_all(&attached).await;
                return fail("shell=false needs command.value (the executable)".into());
            };
            let mut c = tokio::process::Command::new(program);
            c.args(args);
            c
        };
        command
            .current_dir(&sandbox)
            .envs(&env)
            .kill_on_drop(true)
            .stdin(std::process::Stdio::null());
        let log = |name: &str| {
            std::fs::File::create(sandbox.join(name))
                .ok()
                .map(std::process::Stdio::from)
        };
        if let Some(o) = log("stdout") {
            command.stdout(o);
        }
        if let Some(e) = log("stderr") {
            command.stderr(e);
        }
        r.report(TaskState::Starting, None, None, None);
        let mut child = match command.spawn() {
            Ok(c) => c,
            Err(e) => {
                self.detach_all(&attached).await;
                return fail(format!("Failed to spawn the command: {e}"));
            }
        };
        r.report(TaskState::Running, None, None, None);
        let (_checks, mut verdicts) = health_checks(task, &spec.agent_hostname);
        let mut killed_unhealthy = false;
        let ended = loop {
            tokio::select! {
                status = child.wait() => break Some(exit_state(status)),
                Some(v) = verdicts.recv() => {
                    r.report(
                        TaskState::Running,
                        Some(Reason::ReasonTaskHealthCheckStatusUpdated),
                        None,
                        Some(v.healthy),
                    );
                    if v.kill_task {
                        // The command executor kills a task whose checks failed too often, with the
                        // task's kill policy, and says so in the terminal update's `healthy`; first
                        // TASK_KILLING, which the master passes on only to a framework with
                        // TASK_KILLING_STATE (`executor.cpp`, `kill`).
                        r.report(TaskState::Killing, None, None, None);
                        terminate(&mut child, kill_grace(task)).await;
                        killed_unhealthy = true;
                        break Some((TaskState::Killed, None, "Command terminated".to_string()));
                    }
                }
                c = control.recv() => match c {
                    Some(TaskControl::Kill { grace }) => {
                        terminate(&mut child, grace).await;
                        break Some((TaskState::Killed, None, "Command terminated".to_string()));
                    }
                    Some(TaskControl::Fail { message }) => {
                        terminate(&mut child, Duration::ZERO).await;
                        break Some((TaskState::Failed, Some(Reason::ReasonExecutorTerminated), message));
                    }
                    Some(TaskControl::Freeze) => signal(&child, "STOP").await,
                    Some(TaskControl::Thaw) => signal(&child, "CONT").await,
                    Some(TaskControl::Lose) => {
                        let _ = child.kill().await;
                        break None;
                    }
                    None => {
                        terminate(&mut child, Duration::ZERO).await;
                        break Some((TaskState::Killed, None, "agent removed".to_string()));
                    }
                },
            }
        };
        // A task lost with its machine leaves its volumes attached there and reports nothing.
        let Some((state, reason, message)) = ended else {
            return;
        };
        self.detach_all(&attached).await;
        r.report(
            state,
            reason,
            Some(message),
            killed_unhealthy.then_some(false),
        );
    }

    async fn detach_all(&self, attached: &[(String, String, String)]) {
        for (a, d, n) in attached {
            if let Err(e) = self.volumes.detach(a.clone(), d.clone(), n.clone()).await {
                tracing::warn!(volume = %n, error = %e, "detach failed");
            }
        }
    }
}

/// The agent's health checking of `task` (see [`super::health`]), whose "localhost" is its agent's
/// address: the verdicts, and the checker, which stops when dropped. No check (or a COMMAND one, which the
/// emulator cannot run): no verdict ever.
pub(crate) fn health_checks(
    task: &TaskInfo,
    host: &str,
) -> (Option<AbortOnDrop>, mpsc::UnboundedReceiver<Verdict>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let checker = task.health_check.as_ref().and_then(|h| {
        let probe = Probe::of(h, host)?;
        let run = health::run(
            Policy::of(h),
            move || {
                let p = probe.clone();
                async move { p.check().await }
            },
            tx,
        );
        Some(AbortOnDrop(tokio::spawn(run)))
    });
    (checker, rx)
}

/// The kill policy's grace period, else the command executor's 3 s.
pub(crate) fn kill_grace(task: &TaskInfo) -> Duration {
    task.kill_policy
        .and_then(|p| p.grace_period)
        .map(|g| Duration::from_nanos(g.nanoseconds.max(0) as u64))
        .unwrap_or(Duration::from_secs(3))
}

/// A spawned task aborted when this is dropped.
#[derive(Debug)]
pub(crate) struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn exit_state(
    status: std::io::Result<std::process::ExitStatus>,
) -> (TaskState, Option<Reason>, String) {
    match status {
        Ok(s) if s.success() => (
            TaskState::Finished,
            None,
            "Command exited with status 0".into(),
        ),
        Ok(s) => (
            TaskState::Failed,
            Some(Reason::ReasonCommandExecutorFailed),
            format!("Command exited with {s}"),
        ),
        Err(e) => (
            TaskState::Failed,
            Some(Reason::ReasonExecutorTerminated),
            format!("wait failed: {e}"),
        ),
    }
}

/// Sends `SIG<name>` to the task's process (through `kill`, keeping this crate free of unsafe). Only that
/// process: tasks stay in the emulator's process group so that they die with it, and a task command that
/// forks (an `sh -c` that does not exec) has its children left running.
async fn signal(child: &tokio::process::Child, name: &str) {
    if let Some(pid) = child.id() {
        let _ = tokio::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()
            .await;
    }
}

/// SIGTERM (through `kill`, keeping this crate free of unsafe), then SIGKILL after the grace period.
async fn terminate(child: &mut tokio::process::Child, grace: Duration) {
    if let Some(pid) = child.id()
        && !grace.is_zero()
    {
        let _ = tokio::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .await;
        if tokio::time::timeout(grace, child.wait()).await.is_ok() {
            return;
        }
    }
    let _ = child.kill().await;
}

/// The program and its arguments (after argv[0]) of a `shell: false` command, run here with no image.
/// The Mesos containerizer execs `value` with `arguments` as the whole argv, argv[0] included
/// (`mesos/launch.cpp`); the Docker containerizer makes `value` and then `arguments` the CMD of
/// `docker run` (`Docker::RunOptions::create`), which with no ENTRYPOINT is the argv itself.
fn exec_argv(task: &TaskInfo, cmd: &CommandInfo) -> Option<(String, Vec<String>)> {
    let docker = task
        .container
        .as_ref()
        .is_some_and(|c| c.container_type == ContainerType::Docker);
    if docker {
        let mut argv = cmd.value.iter().chain(cmd.arguments.iter()).cloned();
        let program = argv.next()?;
        return Some((program, argv.collect()));
    }
    let program = cmd.value.clone()?;
    Some((program, cmd.arguments.iter().skip(1).cloned().collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same `--exec` as each containerizer gets it from the task builder runs the same argv.
    #[test]
    fn exec_argv_reads_each_containerizer_s_command_form() {
        use tether_mesos::model::{ContainerInfo, Image, ImageType, MesosInfo};
        let agent = AgentID::new("a");
        let with = |container_type| TaskInfo {
            container: Some(ContainerInfo {
                container_type,
                volumes: vec![],
                hostname: None,
                docker: None,
                mesos: Some(MesosInfo {
                    image: Some(Image {
                        image_type: ImageType::Docker,
                        docker: None,
                        cached: None,
                    }),
                }),
                rlimit_info: None,
            }),
            ..crate::testing::emu::sleep_task("t", &agent)
        };
        let cmd = |args: &[&str]| CommandInfo {
            shell: Some(false),
            value: Some("/bin/es".into()),
            arguments: args.iter().map(|a| (*a).to_owned()).collect(),
            ..CommandInfo::default()
        };
        let want = Some(("/bin/es".to_owned(), vec!["--x".to_owned()]));
        assert_eq!(
            exec_argv(&with(ContainerType::Mesos), &cmd(&["/bin/es", "--x"])),
            want
        );
        assert_eq!(
            exec_argv(&with(ContainerType::Docker), &cmd(&["--x"])),
            want
        );
        let no_value = CommandInfo {
            value: None,
            ..cmd(&["/bin/es", "--x"])
        };
        assert_eq!(exec_argv(&with(ContainerType::Docker), &no_value), want);
        assert_eq!(exec_argv(&with(ContainerType::Mesos), &no_value), None);
    }

    #[test]
    fn env_names() {
        assert_eq!(volume_env_name("/data"), "TETHER_VOLUME_DATA");
        assert_eq!(volume_env_name("/tmp/config"), "TETHER_VOLUME_TMP_CONFIG");
        assert_eq!(
            volume_env_name("/usr/share/elasticsearch/data"),
            "TETHER_VOLUME_USR_SHARE_ELASTICSEARCH_DATA"
        );
    }

    #[tokio::test]
    async fn dir_attacher_rejects_traversal() {
        let d = tempfile::tempdir().unwrap();
        let a = DirVolumeAttacher {
            root: d.path().to_path_buf(),
        };
        assert!(
            a.attach("agent0.emu".into(), "rexray".into(), "../x".into(), vec![])
                .await
                .is_err()
        );
        let p = a
            .attach(
                "agent0.emu".into(),
                "rexray".into(),
                "es1data".into(),
                vec![],
            )
            .await
            .unwrap();
        assert!(p.is_dir());
    }
}
