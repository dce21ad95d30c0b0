//! Builds the Mesos `TaskInfo` of one node from the core's [`LaunchSpec`].
//!
//! The shapes follow `shared/protocols/mesos-v1-scheduler.md` §4: `ContainerInfo.type` is always set (it
//! is proto2-required; leaving it out gets the whole ACCEPT refused), the Docker containerizer gets
//! `DOCKER_VOLUME` sources with the driver (it ignores driver options, so none are sent), and the Mesos
//! containerizer gets a Docker image plus the same sources with driver options for the `docker/volume`
//! isolator. With no driver (the `normal` strategy) a volume is a sandbox-relative host path.
//!
//! Resource limits are given to both containerizers: `--ulimit` parameters to `docker run`, the same
//! limits as `rlimit_info` to the Mesos containerizer (its `posix/rlimits` isolator). The health check is
//! a TCP check on the HTTP port: with security on an unauthenticated HTTP check only sees 401, and the
//! official images have no shell for a command check.

use tether_core::command::LaunchSpec;
use tether_core::config::Containerizer;
use tether_core::domain::{Reservation, ResourceAmount};
use tether_mesos::model::{
    AgentID, CommandInfo, ContainerInfo, ContainerType, DiscoveryInfo, DockerImage, DockerInfo,
    DockerNetwork, Environment, HealthCheck, HealthCheckType, Image, ImageType, KillPolicy, Label,
    Labels, MesosInfo, Nanos, Parameter, Port, Ports, RLimit, RLimitInfo, ReservationInfo,
    ReservationType, Resource, TaskID, TaskInfo, TcpCheckInfo, Uri, Variable, Visibility, Volume,
    VolumeMode,
};

/// What the task runs, beyond the image.
#[derive(Debug, Clone, Default)]
pub enum TaskCommand {
    /// The image's own ENTRYPOINT and CMD (`shell: false`, no value).
    #[default]
    Image,
    /// `/bin/sh -c <command>` instead of the entrypoint. Note that a POSIX shell drops environment
    /// variables whose names are not identifiers, such as Elasticsearch's `node.name`.
    Shell(String),
    /// An executable and its arguments, run directly (`shell: false`), which keeps every environment
    /// variable. The two containerizers read `CommandInfo` differently (see [`command_info`]).
    Exec { program: String, args: Vec<String> },
}

/// The bootstrap checks of a production Elasticsearch node need at least this many open files.
pub const DEFAULT_DOCKER_PARAMETERS: &[(&str, &str)] = &[("ulimit", "nofile=65535:65535")];

/// How the shell renders every task, beyond the core's [`LaunchSpec`]: flags that do not change
/// placement.
#[derive(Debug, Clone)]
pub struct TaskOptions {
    /// What the container runs.
    pub command: TaskCommand,
    /// `docker run` parameters (`--docker-parameter`), defaults included; `ulimit` ones also become
    /// `rlimit_info` under the Mesos containerizer.
    pub docker_parameters: Vec<(String, String)>,
    /// Pull the image even when the agent has it.
    pub force_pull_image: bool,
    /// URIs the Mesos fetcher puts in the sandbox.
    pub fetch_uris: Vec<String>,
    /// `CommandInfo.user` (`None`: the framework's user).
    pub user: Option<String>,
    /// How long Elasticsearch gets between SIGTERM and SIGKILL (`--kill-grace-period`): the
    /// `kill_policy` of every TaskInfo and of every KILL.
    pub kill_grace_period: std::time::Duration,
}

impl TaskOptions {
    /// [`TaskOptions::kill_grace_period`] as Mesos's `DurationInfo.nanoseconds`.
    #[must_use]
    pub fn kill_grace_ns(&self) -> i64 {
        i64::try_from(self.kill_grace_period.as_nanos()).unwrap_or(i64::MAX)
    }
}

/// The default of `--kill-grace-period`: enough for Elasticsearch to flush and leave the cluster.
pub const DEFAULT_KILL_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

impl Default for TaskOptions {
    fn default() -> Self {
        TaskOptions {
            command: TaskCommand::Image,
            docker_parameters: merge_docker_parameters(&[]),
            force_pull_image: false,
            fetch_uris: Vec::new(),
            user: None,
            kill_grace_period: DEFAULT_KILL_GRACE,
        }
    }
}

/// The defaults with `extra` applied: a parameter replaces the default with the same key (for `ulimit`,
/// the same limit name, so `ulimit=memlock=-1:-1` is added and `ulimit=nofile=...` replaces).
#[must_use]
pub fn merge_docker_parameters(extra: &[(String, String)]) -> Vec<(String, String)> {
    fn identity((key, value): &(String, String)) -> (String, String) {
        let limit = if key == "ulimit" {
            value.split('=').next().unwrap_or_default().to_owned()
        } else {
            String::new()
        };
        (key.clone(), limit)
    }
    let mut out: Vec<(String, String)> = DEFAULT_DOCKER_PARAMETERS
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .filter(|d| !extra.iter().any(|e| identity(e) == identity(d)))
        .collect();
    out.extend(extra.iter().cloned());
    out
}

/// `ulimit=<name>=<soft>[:<hard>]` parameters as Mesos rlimits (`-1` is unlimited, left unset).
fn rlimits(parameters: &[(String, String)]) -> Vec<RLimit> {
    parameters
        .iter()
        .filter(|(k, _)| k == "ulimit")
        .filter_map(|(_, v)| {
            let (name, limits) = v.split_once('=')?;
            let (soft, hard) = limits.split_once(':').unwrap_or((limits, limits));
            let value = |s: &str| s.trim().parse::<u64>().ok();
            Some(RLimit {
                limit_type: format!("RLMT_{}", name.trim().to_ascii_uppercase()),
                hard: value(hard),
                soft: value(soft),
            })
        })
        .collect()
}

/// The TaskInfo for `spec`.
pub fn task_info(spec: &LaunchSpec, options: &TaskOptions) -> TaskInfo {
    TaskInfo {
        name: spec.name.clone(),
        task_id: TaskID::new(spec.task_id.as_str()),
        agent_id: AgentID::new(spec.agent_id.as_str()),
        resources: resources(spec),
        executor: None,
        command: Some(command_info(spec, options)),
        container: Some(container(spec, options)),
        health_check: Some(HealthCheck {
            // Elasticsearch takes a while to start and join; a failing check before that is noise.
            delay_seconds: Some(30.0),
            interval_seconds: Some(10.0),
            timeout_seconds: Some(5.0),
            consecutive_failures: Some(6),
            grace_period_seconds: Some(120.0),
            check_type: Some(HealthCheckType::Tcp),
            http: None,
            tcp: Some(TcpCheckInfo {
                port: u32::from(spec.health_check_port),
            }),
        }),
        kill_policy: Some(KillPolicy {
            grace_period: Some(Nanos {
                nanoseconds: options.kill_grace_ns(),
            }),
        }),
        data: None,
        labels: Some(Labels {
            labels: vec![Label {
                key: "tether.node_id".to_owned(),
                value: Some(spec.node_id.to_string()),
            }],
        }),
        discovery: Some(DiscoveryInfo {
            visibility: Visibility::Framework,
            name: Some(spec.name.clone()),
            environment: None,
            location: None,
            version: None,
            ports: Some(Ports {
                ports: vec![
                    port(spec.http_port, "http"),
                    port(spec.transport_port, "transport"),
                ],
            }),
            labels: None,
        }),
    }
}

fn port(number: u16, name: &str) -> Port {
    Port {
        number: u32::from(number),
        name: Some(name.to_owned()),
        protocol: Some("tcp".to_owned()),
        visibility: None,
        labels: None,
    }
}

/// The parts the core took from the offer, each with its reservation as offered: Tether does not declare
/// RESERVATION_REFINEMENT, so a single reservation goes in the pre-refinement form the master offered it
/// in (`role`, and `reservation` with principal and labels when dynamic), which the master upgrades
/// before it checks that the offer contains the task's resources; a stack of several (only offered to
/// frameworks with that capability) goes as `reservations`. Unreserved parts carry no role (`*`).
fn resources(spec: &LaunchSpec) -> Vec<Resource> {
    spec.resources
        .iter()
        .map(|part| {
            let mut r = match &part.amount {
                ResourceAmount::Scalar(v) => Resource::scalar(part.name.clone(), *v),
                ResourceAmount::Ranges(ranges) => Resource::ranges(
                    part.name.clone(),
                    ranges.iter().map(|x| (x.begin, x.end)).collect(),
                ),
            };
            let info = |x: &Reservation, with_type_and_role: bool| ReservationInfo {
                reservation_type: with_type_and_role.then_some(if x.dynamic {
                    ReservationType::Dynamic
                } else {
                    ReservationType::Static
                }),
                role: with_type_and_role.then(|| x.role.clone()),
                principal: x.principal.clone(),
                labels: x.labels.as_ref().map(|l| Labels {
                    labels: l
                        .iter()
                        .map(|(key, value)| Label {
                            key: key.clone(),
                            value: value.clone(),
                        })
                        .collect(),
                }),
            };
            match part.reservations.as_slice() {
                [] => {}
                [one] => {
                    r.role = Some(one.role.clone());
                    r.reservation = one.dynamic.then(|| info(one, false));
                }
                stack => r.reservations = stack.iter().map(|x| info(x, true)).collect(),
            }
            r
        })
        .collect()
}

fn command_info(spec: &LaunchSpec, options: &TaskOptions) -> CommandInfo {
    let environment = Some(Environment {
        variables: spec
            .env
            .iter()
            .map(|(k, v)| Variable::value(k, v))
            .collect(),
    });
    let info = match &options.command {
        TaskCommand::Shell(value) => CommandInfo {
            environment,
            shell: Some(true),
            value: Some(value.clone()),
            ..Default::default()
        },
        // The Mesos containerizer execs `value` with `arguments` as the whole argv, argv[0] included
        // (`mesos/launch.cpp`). The Docker containerizer runs `docker run IMAGE value arguments...`
        // (`Docker::RunOptions::create`): both become the CMD, handed to the image's ENTRYPOINT, so
        // argv[0] in `arguments` would reach the program twice.
        TaskCommand::Exec { program, args } => CommandInfo {
            environment,
            shell: Some(false),
            value: Some(program.clone()),
            arguments: match spec.containerizer {
                Containerizer::Mesos => std::iter::once(program.clone())
                    .chain(args.iter().cloned())
                    .collect(),
                Containerizer::Docker => args.clone(),
            },
            ..Default::default()
        },
        // `shell: false` with no value keeps the image's ENTRYPOINT and CMD.
        TaskCommand::Image => CommandInfo {
            environment,
            shell: Some(false),
            ..Default::default()
        },
    };
    CommandInfo {
        uris: options
            .fetch_uris
            .iter()
            .map(|u| Uri {
                value: u.clone(),
                executable: None,
                extract: None,
                cache: None,
                output_file: None,
            })
            .collect(),
        user: options.user.clone(),
        ..info
    }
}

fn container(spec: &LaunchSpec, options: &TaskOptions) -> ContainerInfo {
    let volumes = spec
        .volumes
        .iter()
        .map(|v| match &v.driver {
            Some(driver) => {
                let options = match spec.containerizer {
                    Containerizer::Mesos => v
                        .driver_options
                        .iter()
                        .map(|(key, value)| Parameter {
                            key: key.clone(),
                            value: value.clone(),
                        })
                        .collect(),
                    Containerizer::Docker => Vec::new(),
                };
                Volume::docker_volume(
                    &v.container_path,
                    VolumeMode::Rw,
                    driver,
                    v.name.as_str(),
                    options,
                )
            }
            None => Volume {
                mode: VolumeMode::Rw,
                container_path: v.container_path.clone(),
                host_path: Some(v.name.as_str().to_owned()),
                image: None,
                source: None,
            },
        })
        .collect();
    match spec.containerizer {
        Containerizer::Docker => ContainerInfo {
            container_type: ContainerType::Docker,
            volumes,
            hostname: None,
            docker: Some(DockerInfo {
                image: spec.image.clone(),
                network: Some(DockerNetwork::Host),
                port_mappings: Vec::new(),
                privileged: None,
                parameters: options
                    .docker_parameters
                    .iter()
                    .map(|(key, value)| Parameter {
                        key: key.clone(),
                        value: value.clone(),
                    })
                    .collect(),
                force_pull_image: Some(options.force_pull_image),
            }),
            mesos: None,
            rlimit_info: None,
        },
        Containerizer::Mesos => ContainerInfo {
            container_type: ContainerType::Mesos,
            volumes,
            hostname: None,
            docker: None,
            mesos: Some(MesosInfo {
                image: Some(Image {
                    image_type: ImageType::Docker,
                    docker: Some(DockerImage {
                        name: spec.image.clone(),
                    }),
                    // Not cached: the provisioner checks the registry for a newer image.
                    cached: options.force_pull_image.then_some(false),
                }),
            }),
            rlimit_info: {
                let rlimits = rlimits(&options.docker_parameters);
                (!rlimits.is_empty()).then_some(RLimitInfo { rlimits })
            },
        },
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn spec(containerizer: Containerizer, driver: Option<&str>) -> LaunchSpec {
        tether_core::testing::launch_spec(containerizer, driver)
    }

    #[test]
    fn docker_tasks_use_host_networking_and_driver_volumes_without_options() {
        let t = task_info(
            &spec(Containerizer::Docker, Some("rexray")),
            &TaskOptions::default(),
        );
        let json = serde_json::to_value(&t).expect("json");
        assert_eq!(json["container"]["type"], "DOCKER");
        assert_eq!(json["container"]["docker"]["network"], "HOST");
        let vol = &json["container"]["volumes"][0];
        assert_eq!(vol["mode"], "RW");
        assert_eq!(vol["source"]["type"], "DOCKER_VOLUME");
        assert_eq!(vol["source"]["docker_volume"]["driver"], "rexray");
        assert_eq!(vol["source"]["docker_volume"]["name"], "elasticsearch3data");
        assert!(
            vol["source"]["docker_volume"]
                .get("driver_options")
                .is_none()
        );
        assert_eq!(json["command"]["shell"], false);
        assert_eq!(
            json["resources"][2]["ranges"]["range"][0],
            serde_json::json!({"begin": 31000, "end": 31001})
        );
        assert_eq!(json["health_check"]["type"], "TCP");
        assert_eq!(json["health_check"]["tcp"]["port"], 31000);
        assert_eq!(
            json["container"]["docker"]["parameters"][0],
            serde_json::json!({"key": "ulimit", "value": "nofile=65535:65535"})
        );
        assert_eq!(json["container"]["docker"]["force_pull_image"], false);
    }

    #[test]
    fn mesos_tasks_carry_the_image_and_driver_options() {
        let t = task_info(
            &spec(Containerizer::Mesos, Some("rexray")),
            &TaskOptions {
                command: TaskCommand::Shell("es-standin".into()),
                docker_parameters: merge_docker_parameters(&[(
                    "ulimit".into(),
                    "memlock=-1:-1".into(),
                )]),
                force_pull_image: true,
                fetch_uris: vec!["https://example.com/p.tgz".into()],
                user: Some("elasticsearch".into()),
                kill_grace_period: std::time::Duration::from_secs(90),
            },
        );
        let json = serde_json::to_value(&t).expect("json");
        assert_eq!(json["container"]["type"], "MESOS");
        assert_eq!(
            json["container"]["mesos"]["image"]["docker"]["name"],
            "elasticsearch:8"
        );
        assert_eq!(
            json["container"]["volumes"][0]["source"]["docker_volume"]["driver_options"]["parameter"]
                [0],
            serde_json::json!({"key": "size", "value": "16"})
        );
        assert_eq!(json["command"]["shell"], true);
        assert_eq!(json["command"]["value"], "es-standin");
        assert_eq!(json["command"]["user"], "elasticsearch");
        assert_eq!(
            json["command"]["uris"][0]["value"],
            "https://example.com/p.tgz"
        );
        assert_eq!(json["container"]["mesos"]["image"]["cached"], false);
        assert_eq!(
            json["container"]["rlimit_info"]["rlimits"],
            serde_json::json!([
                {"type": "RLMT_NOFILE", "soft": 65535, "hard": 65535},
                {"type": "RLMT_MEMLOCK"}
            ])
        );
    }

    /// Mesos-DNS publishes `_http._<task>._tcp.<framework>.mesos` and the same for `transport` from these
    /// (its record generator reads `discovery.ports.ports[].{name, number, protocol}`).
    #[test]
    fn discovery_names_the_http_and_transport_ports() {
        let s = tether_core::testing::launch_spec_from(
            spec(Containerizer::Docker, Some("rexray")),
            &tether_core::testing::offer("o", "a", 4.0, 8192.0, 0.0),
            9200,
            9300,
        );
        let json = serde_json::to_value(task_info(&s, &TaskOptions::default())).expect("json");
        assert_eq!(
            json["discovery"],
            serde_json::json!({
                "visibility": "FRAMEWORK",
                "name": "elasticsearch-3",
                "ports": {"ports": [
                    {"number": 9200, "name": "http", "protocol": "tcp"},
                    {"number": 9300, "name": "transport", "protocol": "tcp"},
                ]},
            })
        );
        assert_eq!(
            json["resources"][2]["ranges"]["range"],
            serde_json::json!([{"begin": 9200, "end": 9200}, {"begin": 9300, "end": 9300}])
        );
    }

    /// Reserved parts keep their reservation in the pre-refinement form the master offers to a framework
    /// without RESERVATION_REFINEMENT (`role`, plus `reservation` when dynamic); the rest is unreserved.
    #[test]
    fn reserved_resources_keep_their_role_and_reservation() {
        let s = tether_core::testing::launch_spec_from(
            spec(Containerizer::Docker, Some("rexray")),
            &tether_core::testing::reserved_offer("o", "a", 0.25),
            31000,
            31001,
        );
        let json = serde_json::to_value(task_info(&s, &TaskOptions::default())).expect("json");
        let dynamic = serde_json::json!({"principal": "ops", "labels": {"labels": [{"key": "team", "value": "search"}]}});
        assert_eq!(
            json["resources"],
            serde_json::json!([
                {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.25}, "role": "elasticsearch", "reservation": dynamic},
                {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.75}},
                {"name": "mem", "type": "SCALAR", "scalar": {"value": 512.0}, "role": "elasticsearch"},
                {"name": "mem", "type": "SCALAR", "scalar": {"value": 1536.0}},
                {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": 31000, "end": 31000}]}, "role": "elasticsearch", "reservation": dynamic},
                {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": 31001, "end": 31001}]}},
            ])
        );
    }

    #[test]
    fn a_docker_parameter_replaces_the_default_of_the_same_key() {
        let merged = merge_docker_parameters(&[("ulimit".into(), "nofile=1048576:1048576".into())]);
        assert_eq!(
            merged,
            vec![("ulimit".to_owned(), "nofile=1048576:1048576".to_owned())]
        );
    }

    /// The Mesos containerizer execs `value` with `arguments` as argv (argv[0] included); the Docker
    /// containerizer appends `value` and then `arguments` to `docker run IMAGE`, so there argv[0] is
    /// `value` alone.
    #[test]
    fn exec_commands_follow_each_containerizer() {
        let command = TaskCommand::Exec {
            program: "/bin/es".into(),
            args: vec!["--x".into()],
        };
        let options = TaskOptions {
            command,
            ..TaskOptions::default()
        };
        for (containerizer, arguments) in [
            (Containerizer::Mesos, serde_json::json!(["/bin/es", "--x"])),
            (Containerizer::Docker, serde_json::json!(["--x"])),
        ] {
            let json = serde_json::to_value(task_info(&spec(containerizer, Some("d")), &options))
                .expect("json");
            assert_eq!(json["command"]["shell"], false);
            assert_eq!(json["command"]["value"], "/bin/es");
            assert_eq!(json["command"]["arguments"], arguments, "{containerizer:?}");
        }
    }

    #[test]
    fn without_a_driver_volumes_are_sandbox_host_paths() {
        let t = task_info(&spec(Containerizer::Docker, None), &TaskOptions::default());
        let vol = &t.container.expect("container").volumes[0];
        assert_eq!(vol.host_path.as_deref(), Some("elasticsearch3data"));
        assert!(vol.source.is_none());
    }
}
