//! Docker tier: the emulator's `docker` launcher against the real engine, with fake-rexray registered as
//! the engine's volume driver. A task writes through its DOCKER_VOLUME into the fake's backend, a failing
//! command reports its exit status and output, kill stops and removes the container, a Mount the driver
//! refuses fails the task with the engine's message, killing the agent removes its containers, and
//! nothing the test created is left behind.
//!
//! Skips loudly when no engine answers; fails instead when TETHER_REQUIRE_DOCKER=1.

use std::path::Path;
use std::sync::Arc;

use tether_integration::docker_engine::DockerEngine;
use tether_integration::fake_rexray::{self, Config, FakeRexray, Faults, MethodFault};
use tether_integration::mesos_emu::docker_launcher::LABEL_INSTANCE;
use tether_integration::mesos_emu::{DockerLauncher, EmuConfig, EmuHandle, PluginVolumeAttacher};
use tether_integration::testing::docker::{
    DriverLock, TEST_DRIVER, TestImage, TestResult as R, VolumeCleanup, engine_available,
};
use tether_integration::testing::emu::{
    DEADLINE, Driver, ack_until_task, sleep_task, subscribed_framework,
};
use tether_integration::testing::eventually;
use tether_mesos::model::*;

/// A task in a Docker container running `script` under `/bin/sh -c`.
fn shell_task(
    id: &str,
    agent: &AgentID,
    image: &str,
    script: &str,
    volume: Option<&str>,
) -> TaskInfo {
    let mut t = sleep_task(id, agent);
    t.command = Some(CommandInfo {
        value: Some(script.into()),
        environment: Some(Environment {
            variables: vec![Variable::value("GREETING", "hello from a container")],
        }),
        ..CommandInfo::default()
    });
    t.container = Some(ContainerInfo {
        container_type: ContainerType::Docker,
        volumes: volume
            .map(|v| Volume::docker_volume("/data", VolumeMode::Rw, TEST_DRIVER, v, vec![]))
            .into_iter()
            .collect(),
        hostname: None,
        docker: Some(DockerInfo {
            image: image.into(),
            network: Some(DockerNetwork::None),
            port_mappings: vec![],
            privileged: None,
            parameters: vec![],
            force_pull_image: Some(false),
        }),
        mesos: None,
        rlimit_info: None,
    });
    t
}

/// Launches `task` on the next offer.
async fn launch(d: &mut Driver, task: TaskInfo) {
    let offer = d.offers().await.remove(0);
    let mut task = task;
    task.agent_id = offer.agent_id.clone();
    d.launch(&offer, vec![task]).await;
}

/// Launches `task` on the next offer and acknowledges updates until it reaches `want`, which it must.
async fn launch_until(d: &mut Driver, task: TaskInfo, want: TaskState) -> TaskStatus {
    let id = task.task_id.value.clone();
    launch(d, task).await;
    let s = ack_until_task(d, &id, want).await;
    assert_eq!(s.state, want, "{id}: {:?}", s.message);
    s
}

/// Kills `task` with a grace period of `grace_ns` nanoseconds and waits for its TASK_KILLED.
async fn kill(d: &mut Driver, task: &str, grace_ns: i64) -> R {
    d.client
        .send(Call::kill(TaskID::new(task), None, Some(grace_ns)))
        .await?;
    let s = ack_until_task(d, task, TaskState::Killed).await;
    assert_eq!(s.state, TaskState::Killed);
    Ok(())
}

/// The emulator of `cfg` with its tasks run by `launcher`, a subscribed framework, and the (one) agent.
async fn emulator(mut cfg: EmuConfig, launcher: &DockerLauncher) -> (EmuHandle, Driver, AgentID) {
    cfg.launcher = Arc::new(launcher.clone());
    let (emu, d, _) = subscribed_framework(cfg).await;
    let agent = AgentID::new(emu.agent_ids()[0].as_str());
    (emu, d, agent)
}

/// The test's containers on the engine, as `<names> <state>`.
async fn containers(engine: &DockerEngine, instance: &str) -> Vec<String> {
    engine
        .containers_labelled(LABEL_INSTANCE, instance)
        .await
        .expect("list containers")
        .into_iter()
        .map(|c| format!("{:?} {}", c.names, c.state))
        .collect()
}

async fn wait_no_containers(engine: &DockerEngine, instance: &str, what: &str) {
    if let Err(e) = eventually(what, DEADLINE, || async {
        containers(engine, instance).await.is_empty().then_some(())
    })
    .await
    {
        panic!("{e}; left: {:?}", containers(engine, instance).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_launcher_runs_tasks_with_fake_rexray_volumes() -> R {
    if !engine_available("mesos_emu_docker").await {
        return Ok(());
    }
    let tag = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
    let instance = format!("tether-test-{tag}");
    let lock = DriverLock::acquire()?;
    let tmp = tempfile::tempdir()?;
    let backend = tmp.path().join("backend");
    let fake = FakeRexray::serve(Config::new(
        format!("/run/docker/plugins/{TEST_DRIVER}.sock"),
        &backend,
        "docker-host",
    ))
    .await?;
    let image = TestImage::build(
        &format!("tether-test-sh:{tag}"),
        &[Path::new("/bin/sh"), Path::new("/bin/sleep")],
        &["data", "tmp"],
    )
    .await?;
    let (vol, refused_vol) = (format!("tether-vol-{tag}"), format!("tether-refused-{tag}"));
    // Declared after the fake so it drops first, while the plugin still answers `volume rm`.
    let _volumes = VolumeCleanup {
        volumes: vec![vol.clone(), refused_vol.clone()],
    };
    let engine = DockerEngine::new(tether_integration::docker_engine::DEFAULT_SOCKET);
    let launcher = DockerLauncher {
        engine: engine.clone(),
        instance: instance.clone(),
        default_image: None,
        volumes: None,
    };
    let (emu, mut d, agent) = emulator(EmuConfig::fast(1), &launcher).await;

    // A task writes through its volume: the file is in the fake's backend, the container is gone.
    launch_until(
        &mut d,
        shell_task(
            "writer",
            &agent,
            &image.tag,
            "echo \"$GREETING\" > /data/hello",
            Some(&vol),
        ),
        TaskState::Finished,
    )
    .await;
    let meta = fake_rexray::volume_info(&backend, &vol)?.ok_or("volume not in the backend")?;
    let data = meta.data_path.ok_or("never mounted")?;
    assert_eq!(
        std::fs::read_to_string(data.join("hello"))?.trim(),
        "hello from a container"
    );
    assert_eq!(fake.mount_count(&vol), 0, "the engine unmounted it");
    wait_no_containers(&engine, &instance, "the writer's container removed").await;

    // A failing command: TASK_FAILED with its exit status and what it printed.
    let s = launch_until(
        &mut d,
        shell_task(
            "failer",
            &agent,
            &image.tag,
            "echo broken-config >&2; exit 3",
            None,
        ),
        TaskState::Failed,
    )
    .await;
    let msg = s.message.unwrap_or_default();
    assert!(
        msg.contains("status 3") && msg.contains("broken-config"),
        "{msg}"
    );

    // Kill: the container is stopped and removed.
    launch_until(
        &mut d,
        shell_task("sleeper", &agent, &image.tag, "exec sleep 1000", None),
        TaskState::Running,
    )
    .await;
    let running = containers(&engine, &instance).await;
    assert_eq!(running.len(), 1, "{running:?}");
    assert!(running[0].contains("running"), "{running:?}");
    kill(&mut d, "sleeper", 1_000_000_000).await?;
    wait_no_containers(&engine, &instance, "the killed container removed").await;

    // The driver refuses Mount: TASK_FAILED with the engine's message, no container left.
    fake.faults().set(Faults::on(
        "Mount",
        MethodFault {
            error: Some("simulated attach failure".into()),
            ..MethodFault::default()
        },
    ));
    let s = launch_until(
        &mut d,
        shell_task("refused", &agent, &image.tag, "true", Some(&refused_vol)),
        TaskState::Failed,
    )
    .await;
    fake.faults().clear();
    assert_eq!(s.reason, Some(Reason::ReasonContainerLaunchFailed));
    let msg = s.message.unwrap_or_default();
    assert!(msg.contains("simulated attach failure"), "{msg}");
    wait_no_containers(&engine, &instance, "the refused task's container removed").await;

    // An image the engine does not have.
    let s = launch_until(
        &mut d,
        shell_task(
            "noimage",
            &agent,
            &format!("tether-test-missing:{tag}"),
            "true",
            None,
        ),
        TaskState::Failed,
    )
    .await;
    assert!(
        s.message
            .as_deref()
            .unwrap_or_default()
            .contains("No such image"),
        "{:?}",
        s.message
    );

    // A machine that dies takes its containers with it.
    launch_until(
        &mut d,
        shell_task("orphan", &agent, &image.tag, "exec sleep 1000", None),
        TaskState::Running,
    )
    .await;
    assert!(emu.kill_agent(&agent.value));
    wait_no_containers(&engine, &instance, "the dead agent's container removed").await;

    d.cancel.cancel();
    emu.shutdown();
    launcher.remove_all().await;
    assert_eq!(containers(&engine, &instance).await, Vec::<String>::new());
    drop(_volumes);
    let left = engine.volumes_of_driver(TEST_DRIVER).await?;
    assert!(
        !left.contains(&vol) && !left.contains(&refused_vol),
        "engine volumes left: {left:?}"
    );
    drop(image);
    fake.shutdown().await;
    assert!(!Path::new(&format!("/run/docker/plugins/{TEST_DRIVER}.sock")).exists());
    drop(lock);
    Ok(())
}

/// With `--plugin-root`, volumes are attached through the agent's own plugin (not registered with the
/// engine) and bind-mounted; a refused attach fails the task with the plugin's message before any
/// container exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_launcher_attaches_through_the_agents_plugin() -> R {
    if !engine_available("mesos_emu_docker").await {
        return Ok(());
    }
    let tag = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
    let instance = format!("tether-test-{tag}");
    let tmp = tempfile::tempdir()?;
    let backend = tmp.path().join("backend");
    let plugins = tmp.path().join("plugins");
    let cfg = EmuConfig::fast(1);
    let host = cfg.agents[0].hostname.clone();
    let fake = FakeRexray::serve(Config::new(
        plugins.join(&host).join("rexray.sock"),
        &backend,
        &host,
    ))
    .await?;
    fake_rexray::create_volume(&backend, &format!("es1data-{tag}"), 1, "")?;
    let image = TestImage::build(
        &format!("tether-test-sh:{tag}"),
        &[Path::new("/bin/sh")],
        &["data"],
    )
    .await?;
    let engine = DockerEngine::new(tether_integration::docker_engine::DEFAULT_SOCKET);
    let launcher = DockerLauncher {
        engine: engine.clone(),
        instance: instance.clone(),
        default_image: Some(image.tag.clone()),
        volumes: Some(Arc::new(PluginVolumeAttacher { root: plugins })),
    };
    let (emu, mut d, agent) = emulator(cfg, &launcher).await;

    // A command task (no image in the TaskInfo: the default image) writing through its volume.
    let vol = format!("es1data-{tag}");
    let mut t = shell_task(
        "writer",
        &agent,
        "",
        "echo \"$GREETING\" > /data/hello",
        None,
    );
    if let Some(c) = t.container.as_mut() {
        c.container_type = ContainerType::Mesos;
        c.docker = None;
        c.volumes = vec![Volume::docker_volume(
            "/data",
            VolumeMode::Rw,
            "rexray",
            &vol,
            vec![],
        )];
    }
    launch_until(&mut d, t, TaskState::Finished).await;
    let meta = fake_rexray::volume_info(&backend, &vol)?.ok_or("volume not in the backend")?;
    assert_eq!(meta.attached_host, None, "detached after the task");
    let data = meta.data_path.ok_or("never mounted")?;
    assert_eq!(
        std::fs::read_to_string(data.join("hello"))?.trim(),
        "hello from a container"
    );

    // A volume that does not exist (no implicit create): the plugin refuses, the task fails.
    let mut t = shell_task("missing", &agent, "", "true", None);
    if let Some(c) = t.container.as_mut() {
        c.volumes = vec![Volume::docker_volume(
            "/data",
            VolumeMode::Rw,
            "rexray",
            format!("nope-{tag}"),
            vec![],
        )];
    }
    let s = launch_until(&mut d, t, TaskState::Failed).await;
    assert_eq!(s.reason, Some(Reason::ReasonContainerLaunchFailed));
    let msg = s.message.unwrap_or_default();
    assert!(msg.contains(&format!("nope-{tag}")), "{msg}");
    assert_eq!(containers(&engine, &instance).await, Vec::<String>::new());

    d.cancel.cancel();
    emu.shutdown();
    launcher.remove_all().await;
    assert_eq!(containers(&engine, &instance).await, Vec::<String>::new());
    drop(image);
    fake.shutdown().await;
    Ok(())
}

/// Bridge networking with a port mapping, and the argv form (`shell: false`) keeping dotted environment
/// variables: es-standin in a container answers on the mapped host port with the node name it was given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_launcher_maps_ports_and_passes_the_environment() -> R {
    if !engine_available("mesos_emu_docker").await {
        return Ok(());
    }
    let tag = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
    let instance = format!("tether-test-{tag}");
    let standin = tether_integration::process::bin_path("es-standin")?;
    let image = TestImage::build(
        &format!("tether-test-standin:{tag}"),
        &[&standin],
        &["data", "tmp"],
    )
    .await?;
    let engine = DockerEngine::new(tether_integration::docker_engine::DEFAULT_SOCKET);
    let launcher = DockerLauncher {
        engine: engine.clone(),
        instance: instance.clone(),
        default_image: None,
        volumes: None,
    };
    let (emu, mut d, agent) = emulator(EmuConfig::fast(1), &launcher).await;

    let program = standin.display().to_string();
    let host_port = tether_integration::process::free_port();
    let mut t = shell_task("standin", &agent, &image.tag, "", None);
    t.command = Some(CommandInfo {
        shell: Some(false),
        value: Some(program.clone()),
        // The test image runs as root: its /tmp stands in for the image's own layer, whose user is
        // 1000:0 (see es_standin::container); single-node and no security keep the test about the launcher.
        // The Docker containerizer runs `docker run IMAGE value arguments...`: no argv[0] here.
        arguments: [
            "-E",
            "network.host=0.0.0.0",
            "-E",
            "http.port=9200",
            "-E",
            "discovery.type=single-node",
            "-E",
            "xpack.security.enabled=false",
        ]
        .map(str::to_owned)
        .to_vec(),
        environment: Some(Environment {
            variables: vec![
                Variable::value("node.name", "standin-in-a-container"),
                Variable::value(
                    tether_integration::mesos_emu::launcher::EMU_ROOTFS_ENV,
                    "/tmp",
                ),
            ],
        }),
        ..CommandInfo::default()
    });
    if let Some(docker) = t.container.as_mut().and_then(|c| c.docker.as_mut()) {
        docker.network = Some(DockerNetwork::Bridge);
        docker.port_mappings = vec![PortMapping {
            host_port: u32::from(host_port),
            container_port: 9200,
            protocol: Some("tcp".into()),
        }];
    }
    launch_until(&mut d, t, TaskState::Running).await;
    let url = format!("http://127.0.0.1:{host_port}/");
    let root = eventually(&format!("{url} answering"), DEADLINE, || async {
        match tether_integration::http_client::get_json(&url).await {
            Ok((200, body)) => Some(body),
            _ => None,
        }
    })
    .await?;
    assert_eq!(root["name"], "standin-in-a-container", "{root}");

    kill(&mut d, "standin", 5_000_000_000).await?;
    wait_no_containers(&engine, &instance, "the stand-in's container removed").await;
    d.cancel.cancel();
    emu.shutdown();
    drop(image);
    Ok(())
}
