//! The `docker` launcher: each task becomes a container created through the Docker engine API, the way
//! a Mesos agent's Docker containerizer runs `docker run` — image, command, environment, networking,
//! port mappings and `DOCKER_VOLUME` volumes from the TaskInfo — and the container's exit becomes
//! TASK_FINISHED or TASK_FAILED.
//!
//! Volumes: without a [`VolumeAttacher`] a `DOCKER_VOLUME` becomes a `volume` mount with the task's
//! driver, so the engine itself calls the plugin (`docker run -v name:/path --volume-driver`). With one
//! (`--plugin-root`), the agent's own plugin attaches it first, as the `docker/volume` isolator's dvdcli
//! does, and the mountpoint is bind-mounted. The second form exists because several emulated agents
//! share one engine: the engine pins a volume name to the first driver that created it ("driver 'x'
//! already has volume 'v': volume name must be unique"), so per-agent driver names cannot move a volume
//! from one agent to another, while per-agent plugins behind one engine can.
//!
//! Every container carries [`LABEL_INSTANCE`] so that [`DockerLauncher::cleanup`] (and tests) find them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{Value, json};
use tether_mesos::model::{DockerNetwork, Reason, TaskState, VolumeMode, VolumeSourceType};
use tokio::sync::mpsc;

use super::launcher::{
    LaunchSpec, Launcher, Reporter, TASK_IMAGE_ENV, TaskControl, VolumeAttacher, health_checks,
    kill_grace, task_image,
};
use crate::docker_engine::DockerEngine;

/// Present (value `true`) on every container the emulator creates.
pub const LABEL_EMU: &str = "tether.mesos-emu";
/// The launcher instance that created the container.
pub const LABEL_INSTANCE: &str = "tether.mesos-emu.instance";
pub const LABEL_TASK: &str = "tether.mesos-emu.task-id";
pub const LABEL_AGENT: &str = "tether.mesos-emu.agent";

/// Lines of the container's output quoted in a TASK_FAILED message.
const LOG_LINES: u32 = 5;

/// Runs tasks as containers of one Docker engine.
#[derive(Debug, Clone)]
pub struct DockerLauncher {
    pub engine: DockerEngine,
    /// Label value telling this emulator's containers apart from another's on the same engine.
    pub instance: String,
    /// Image for tasks whose TaskInfo names none (command tasks without `container.docker`).
    pub default_image: Option<String>,
    /// Attach `DOCKER_VOLUME`s through each agent's plugin and bind-mount them (see the module header);
    /// `None`: the engine mounts them with the task's driver.
    pub volumes: Option<Arc<dyn VolumeAttacher>>,
}

/// Where a task's container stands, for the cleanup path.
struct Running {
    id: String,
    attached: Vec<(String, String, String)>,
}

impl Launcher for DockerLauncher {
    fn launch(&self, spec: LaunchSpec, r: Reporter, control: mpsc::UnboundedReceiver<TaskControl>) {
        let this = self.clone();
        tokio::spawn(async move { this.run(spec, r, control).await });
    }

    fn cleanup(&self) -> BoxFuture<'static, ()> {
        let this = self.clone();
        Box::pin(async move { this.remove_all().await })
    }
}

impl DockerLauncher {
    /// Removes every container of this instance (running or not).
    pub async fn remove_all(&self) {
        match self
            .engine
            .containers_labelled(LABEL_INSTANCE, &self.instance)
            .await
        {
            Ok(list) => {
                for c in list {
                    if let Err(e) = self.engine.remove_container(&c.id).await {
                        tracing::warn!(container = %c.id, error = %e, "cannot remove container");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot list the emulator's containers"),
        }
    }

    async fn run(
        &self,
        spec: LaunchSpec,
        r: Reporter,
        mut control: mpsc::UnboundedReceiver<TaskControl>,
    ) {
        let fail = |msg: String| r.launch_failed(msg);
        let mut running = Running {
            id: String::new(),
            attached: Vec::new(),
        };
        let config = match self.container_config(&spec, &mut running).await {
            Ok(c) => c,
            Err(msg) => {
                self.detach_all(&running.attached).await;
                return fail(msg);
            }
        };
        r.report(TaskState::Starting, None, None, None);
        let name = container_name(&self.instance, &spec.task.task_id.value);
        running.id = match self.engine.create_container(&name, &config).await {
            Ok(id) => id,
            Err(e) => {
                self.detach_all(&running.attached).await;
                return fail(format!("Failed to create container: {}", e.message()));
            }
        };
        if let Err(e) = self.engine.start_container(&running.id).await {
            self.remove(&running).await;
            return fail(format!("Failed to run container: {}", e.message()));
        }
        r.report(TaskState::Running, None, None, None);
        // The docker executor checks from inside the container's network namespace: the host's, here.
        let (_checks, mut verdicts) = health_checks(&spec.task, &spec.agent_hostname);
        let mut killed_unhealthy = false;
        let exit = self.engine.wait_container(&running.id);
        tokio::pin!(exit);
        let (state, reason, message) = loop {
            tokio::select! {
                Some(v) = verdicts.recv() => {
                    r.report(
                        TaskState::Running,
                        Some(Reason::ReasonTaskHealthCheckStatusUpdated),
                        None,
                        Some(v.healthy),
                    );
                    if v.kill_task {
                        // As the docker executor's `_killTask`: TASK_KILLING first (passed on only
                        // to a framework with TASK_KILLING_STATE), then the stop.
                        r.report(TaskState::Killing, None, None, None);
                        self.stop(&running, kill_grace(&spec.task)).await;
                        killed_unhealthy = true;
                        break (TaskState::Killed, None, "Container stopped".to_owned());
                    }
                }
                exit = &mut exit => break match exit {
                    Ok(0) => (TaskState::Finished, None, "Container exited with status 0".to_owned()),
                    Ok(code) => {
                        let tail = self.engine.logs_tail(&running.id, LOG_LINES).await;
                        (
                            TaskState::Failed,
                            Some(Reason::ReasonCommandExecutorFailed),
                            format!("Container exited with status {code}{}", quoted(&tail)),
                        )
                    }
                    Err(e) => (
                        TaskState::Failed,
                        Some(Reason::ReasonExecutorTerminated),
                        format!("Lost the container: {}", e.message()),
                    ),
                },
                c = control.recv() => match c {
                    Some(TaskControl::Kill { grace }) => {
                        self.stop(&running, grace).await;
                        break (TaskState::Killed, None, "Container stopped".to_owned());
                    }
                    Some(TaskControl::Fail { message }) => {
                        self.stop(&running, Duration::ZERO).await;
                        break (TaskState::Failed, Some(Reason::ReasonExecutorTerminated), message);
                    }
                    Some(TaskControl::Freeze) => {
                        if let Err(e) = self.engine.pause_container(&running.id).await {
                            tracing::warn!(container = %running.id, error = %e, "pause failed");
                        }
                    }
                    Some(TaskControl::Thaw) => {
                        if let Err(e) = self.engine.unpause_container(&running.id).await {
                            tracing::warn!(container = %running.id, error = %e, "unpause failed");
                        }
                    }
                    Some(TaskControl::Lose) => {
                        // The machine died: the container goes, nothing is reported, and volumes the
                        // agent's plugin attached stay attached. (Volumes the engine itself mounted with
                        // the task's driver are unmounted by the engine: one engine plays every agent.)
                        if let Err(e) = self.engine.remove_container(&running.id).await {
                            tracing::warn!(container = %running.id, error = %e, "remove failed");
                        }
                        return;
                    }
                    None => {
                        self.stop(&running, Duration::ZERO).await;
                        break (TaskState::Killed, None, "agent removed".to_owned());
                    }
                },
            }
        };
        self.remove(&running).await;
        r.report(
            state,
            reason,
            Some(message),
            killed_unhealthy.then_some(false),
        );
    }

    async fn stop(&self, running: &Running, grace: Duration) {
        if let Err(e) = self.engine.stop_container(&running.id, grace).await {
            tracing::warn!(container = %running.id, error = %e, "stop failed; removing by force");
        }
    }

    /// Removes the container (the engine unmounts its volumes), then detaches plugin-attached ones.
    async fn remove(&self, running: &Running) {
        if let Err(e) = self.engine.remove_container(&running.id).await {
            tracing::warn!(container = %running.id, error = %e, "remove failed");
        }
        self.detach_all(&running.attached).await;
    }

    async fn detach_all(&self, attached: &[(String, String, String)]) {
        let Some(volumes) = &self.volumes else { return };
        for (a, d, n) in attached {
            if let Err(e) = volumes.detach(a.clone(), d.clone(), n.clone()).await {
                tracing::warn!(volume = %n, error = %e, "detach failed");
            }
        }
    }

    /// The `POST /containers/create` body for the task. Plugin-attached volumes are recorded in
    /// `running` as they are attached, so a later failure can detach them.
    async fn container_config(
        &self,
        spec: &LaunchSpec,
        running: &mut Running,
    ) -> Result<Value, String> {
        let task = &spec.task;
        let container = task.container.as_ref();
        let docker = container.and_then(|c| c.docker.as_ref());
        let image = task_image(task)
            .or_else(|| self.default_image.clone())
            .ok_or_else(|| {
                "the task names no image and the docker launcher has no default image".to_owned()
            })?;

        let mut env: BTreeMap<String, String> = BTreeMap::new();
        env.insert("MESOS_TASK_ID".into(), task.task_id.value.clone());
        env.insert("MESOS_AGENT_ID".into(), spec.agent_id.value.clone());
        env.insert("MESOS_SANDBOX".into(), "/mnt/mesos/sandbox".into());
        env.insert(TASK_IMAGE_ENV.into(), image.clone());
        let cmd = task.command.clone().unwrap_or_default();
        for var in cmd.environment.iter().flat_map(|e| e.variables.iter()) {
            if let Some(v) = &var.value {
                env.insert(var.name.clone(), v.clone());
            }
        }
        let (entrypoint, args) = docker_command(&cmd)?;

        let mut mounts = Vec::new();
        let mut binds = Vec::new();
        for v in container.iter().flat_map(|c| c.volumes.iter()) {
            let read_only = v.mode == VolumeMode::Ro;
            if let Some(src) = &v.source
                && src.source_type == Some(VolumeSourceType::DockerVolume)
            {
                let Some(dv) = &src.docker_volume else {
                    continue;
                };
                let driver = dv.driver.clone().unwrap_or_else(|| "local".into());
                let options: BTreeMap<String, String> = dv
                    .driver_options
                    .iter()
                    .flat_map(|p| p.parameter.iter())
                    .map(|p| (p.key.clone(), p.value.clone()))
                    .collect();
                match &self.volumes {
                    None => mounts.push(json!({
                        "Type": "volume",
                        "Source": dv.name,
                        "Target": v.container_path,
                        "ReadOnly": read_only,
                        "VolumeOptions": {
                            "DriverConfig": { "Name": driver, "Options": options },
                        },
                    })),
                    Some(attacher) => {
                        let host = attacher
                            .attach(
                                spec.agent_hostname.clone(),
                                driver.clone(),
                                dv.name.clone(),
                                options.into_iter().collect(),
                            )
                            .await
                            .map_err(|e| {
                                format!("Failed to mount docker volume '{}': {e}", dv.name)
                            })?;
                        running.attached.push((
                            spec.agent_hostname.clone(),
                            driver,
                            dv.name.clone(),
                        ));
                        mounts.push(bind(&host.display().to_string(), v, read_only));
                    }
                }
            } else if let Some(host) = &v.host_path {
                binds.push(bind(host, v, read_only));
            }
        }
        mounts.extend(binds);

        // HOST is the proto's default for DockerInfo.network.
        let network = docker
            .and_then(|d| d.network)
            .unwrap_or(DockerNetwork::Host);
        let mut exposed = serde_json::Map::new();
        let mut bindings = serde_json::Map::new();
        for p in docker.iter().flat_map(|d| d.port_mappings.iter()) {
            let key = format!(
                "{}/{}",
                p.container_port,
                p.protocol.as_deref().unwrap_or("tcp")
            );
            exposed.insert(key.clone(), json!({}));
            bindings.insert(key, json!([{ "HostPort": p.host_port.to_string() }]));
        }
        let (cpus, mem) =
            task.resources
                .iter()
                .fold((0.0, 0.0), |(c, m), res| match res.name.as_str() {
                    "cpus" => (c + res.scalar.as_ref().map_or(0.0, |s| s.value), m),
                    "mem" => (c, m + res.scalar.as_ref().map_or(0.0, |s| s.value)),
                    _ => (c, m),
                });
        let mut host_config = json!({
            "NetworkMode": match network {
                DockerNetwork::Host => "host",
                DockerNetwork::Bridge => "bridge",
                DockerNetwork::None => "none",
                DockerNetwork::User => "bridge",
            },
            "Mounts": mounts,
            "PortBindings": bindings,
            "Privileged": docker.and_then(|d| d.privileged).unwrap_or(false),
        });
        // As the Docker containerizer: shares from cpus, a hard limit from mem.
        if cpus > 0.0 {
            host_config["CpuShares"] = json!((cpus * 1024.0).round() as i64);
        }
        if mem > 0.0 {
            host_config["Memory"] = json!((mem * 1024.0 * 1024.0).round() as i64);
        }
        let labels = json!({
            LABEL_EMU: "true",
            LABEL_INSTANCE: self.instance,
            LABEL_TASK: task.task_id.value,
            LABEL_AGENT: spec.agent_hostname,
        });
        let mut config = json!({
            "Image": image,
            "Env": env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
            "Labels": labels,
            "ExposedPorts": exposed,
            "HostConfig": host_config,
        });
        if let Some(e) = entrypoint {
            config["Entrypoint"] = json!(e);
            config["Cmd"] = json!(args);
        } else if !args.is_empty() {
            config["Cmd"] = json!(args);
        }
        Ok(config)
    }
}

/// The entrypoint override and the CMD of `docker run`, as the Docker containerizer makes them
/// (`Docker::RunOptions::create`): a shell command replaces the entrypoint with `/bin/sh` and runs
/// `-c <value>` (no value is an error); without a shell the image's ENTRYPOINT stays and `value` (when
/// set) and then every one of `arguments` are its CMD.
pub(crate) fn docker_command(
    cmd: &tether_mesos::model::CommandInfo,
) -> Result<(Option<Vec<String>>, Vec<String>), String> {
    if cmd.shell.unwrap_or(true) {
        let Some(value) = &cmd.value else {
            return Err("Shell specified but no command value provided".to_owned());
        };
        return Ok((
            Some(vec!["/bin/sh".to_owned()]),
            vec!["-c".to_owned(), value.clone()],
        ));
    }
    Ok((
        None,
        cmd.value
            .iter()
            .chain(cmd.arguments.iter())
            .cloned()
            .collect(),
    ))
}

fn bind(source: &str, v: &tether_mesos::model::Volume, read_only: bool) -> Value {
    json!({
        "Type": "bind",
        "Source": source,
        "Target": v.container_path,
        "ReadOnly": read_only,
    })
}

/// `<instance>-<task id>` with the characters the engine refuses in names replaced.
pub fn container_name(instance: &str, task_id: &str) -> String {
    format!("{instance}-{task_id}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn quoted(tail: &str) -> String {
    let t = tail.trim();
    if t.is_empty() {
        String::new()
    } else {
        format!(": {t}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_become_docker_run_as_the_docker_containerizer_makes_them() {
        use tether_mesos::model::CommandInfo;
        let cmd = |shell: bool, value: Option<&str>, args: &[&str]| CommandInfo {
            shell: Some(shell),
            value: value.map(str::to_owned),
            arguments: args.iter().map(|a| (*a).to_owned()).collect(),
            ..CommandInfo::default()
        };
        let strings = |v: &[&str]| v.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            docker_command(&cmd(true, Some("exec es"), &["ignored"])),
            Ok((Some(strings(&["/bin/sh"])), strings(&["-c", "exec es"])))
        );
        assert!(docker_command(&cmd(true, None, &[])).is_err());
        // The image's ENTRYPOINT stays: value and arguments are its CMD.
        assert_eq!(
            docker_command(&cmd(false, Some("/bin/es"), &["--x", "y"])),
            Ok((None, strings(&["/bin/es", "--x", "y"])))
        );
        assert_eq!(
            docker_command(&cmd(false, None, &["--x"])),
            Ok((None, strings(&["--x"])))
        );
        assert_eq!(docker_command(&cmd(false, None, &[])), Ok((None, vec![])));
    }

    #[test]
    fn names_are_engine_safe() {
        assert_eq!(
            container_name("emu1", "elasticsearch-3.1/x:y"),
            "emu1-elasticsearch-3.1_x_y"
        );
    }
}
