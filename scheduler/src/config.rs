//! From flags to the settings each part runs with: the core's [`Config`], the Mesos client's
//! [`MesosConfig`], the task command, the tokens, and the address a standby names for the leader. Every
//! check that needs no network runs here, so `bind` fails on a bad flag before anything starts.

use std::path::Path;

use tether_core::config::{
    Config, Constraint, Containerizer as CoreContainerizer, Fencing as CoreFencing, GroupSpec,
    Security, Strategy, VolumeOwner, VolumeSpec,
};
use tether_mesos::client::{Credential, FrameworkSettings, MesosConfig};

use crate::args::{Args, Containerizer, EsSecurity, Fencing, MasterSource};
use crate::auth::{Token, TokenError};
use crate::cluster_ca::{ClusterSecrets, OperatorSecrets, SecretsError};
use crate::error::SchedulerError;
use crate::taskinfo::{TaskCommand, TaskOptions, merge_docker_parameters};

/// The core's configuration from the flags.
pub fn core_config(args: &Args) -> Result<Config, SchedulerError> {
    let mut c = Config::new(&args.framework_name);
    c.cluster_name = args.cluster_name.clone();
    c.first_id = args.first_id;
    c.volumes = args
        .volumes
        .iter()
        .map(|v| {
            let (suffix, path) = v.split_once(':').ok_or_else(|| {
                SchedulerError::Config(format!("--volume {v:?}: expected suffix:container-path"))
            })?;
            Ok(VolumeSpec {
                suffix: suffix.to_owned(),
                container_path: path.to_owned(),
            })
        })
        .collect::<Result<_, SchedulerError>>()?;
    c.volume_name_template = args.volume_name_template.clone();
    let options = args
        .volume_options
        .iter()
        .map(|o| {
            o.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| {
                    SchedulerError::Config(format!("--volume-option {o:?}: expected key=value"))
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    c.strategy = if args.external_volume_driver.is_empty() {
        Strategy::Normal
    } else {
        Strategy::External {
            driver: args.external_volume_driver.clone(),
            auto_create: args.auto_create_volumes,
            create_options: options.clone(),
            driver_options: options,
        }
    };
    c.containerizer = match args.containerizer {
        Containerizer::Docker => CoreContainerizer::Docker,
        Containerizer::Mesos => CoreContainerizer::Mesos,
    };
    c.image = args.image.clone();
    c.cpus = args.cpus;
    c.mem_mb = args.mem;
    c.disk_mb = args.disk;
    c.heap_mb = args.heap.unwrap_or((args.mem / 2.0) as u64);
    c.constraints = args
        .constraints
        .iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| Constraint::parse(s.trim()).map_err(|e| SchedulerError::Config(e.to_string())))
        .collect::<Result<_, _>>()?;
    c.groups = args
        .groups
        .iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| GroupSpec::parse(s.trim()).map_err(|e| SchedulerError::Config(e.to_string())))
        .collect::<Result<_, _>>()?;
    check_group_roles(&c, &args.image)?;
    c.report_interval_ms = args.report_interval.as_millis() as u64;
    c.prepare_hold_ms = args.prepare_timeout.as_millis() as u64;
    c.implicit_reconcile_ms = args.reconcile_interval.as_millis() as u64;
    c.startup_grace_ms = args.startup_grace.as_millis() as u64;
    c.data_volume = args.data_volume.clone();
    c.es_settings = pairs("--es-setting", &args.es_settings)?;
    c.es_env = pairs("--es-env", &args.es_env)?;
    c.security = security(args);
    c.volume_owner = volume_owner(&args.volume_owner)?;
    c.use_ip_address = args.use_ip_address;
    c.http_port = args.http_port;
    c.transport_port = args.transport_port;
    c.fencing = match args.fencing {
        Fencing::None => CoreFencing::None,
        Fencing::Storage => CoreFencing::Storage,
    };
    c.unreachable_replace_after_ms = args.unreachable_replace_after.as_millis() as u64;
    // A few polls fit in a view's life, so one slow answer does not void it.
    c.es_view_max_age_ms = (args.es_poll_interval.as_millis() as u64)
        .saturating_mul(3)
        .max(1);
    c.max_agent_absence_ms = args.max_agent_absence.as_millis() as u64;
    c.removal_step_timeout_ms = args.removal_step_timeout.as_millis() as u64;
    c.rollout_step_timeout_ms = args.rollout_step_timeout.as_millis() as u64;
    c.cert_renew_before_s = args.es_cert_renew_before.as_secs();
    c.maintenance_refuse_seconds = args.maintenance_answer_interval.as_secs_f64();
    c.validate()
        .map_err(|e| SchedulerError::Config(e.to_string()))?;
    // Every sidecar reports every watched volume in one report: the largest watch set must fit.
    let watched = args.max_nodes.saturating_mul(c.volumes.len() as u64);
    if watched > args.max_volumes_per_report {
        return Err(SchedulerError::Config(format!(
            "--max-nodes {} × {} volumes per node = {watched} volumes in every sidecar report, above \
             --max-volumes-per-report={}: raise it or lower --max-nodes",
            args.max_nodes,
            c.volumes.len(),
            args.max_volumes_per_report
        )));
    }
    Ok(c)
}

/// The Mesos client's settings. With a `zk://` master the address list is a placeholder: the follower
/// replaces it with the leader ZooKeeper names.
pub fn mesos_config(args: &Args, masters: &MasterSource) -> Result<MesosConfig, SchedulerError> {
    let credential = match (&args.principal, &args.secret_file) {
        (Some(p), Some(f)) => Some(
            Credential::from_secret_file(p.clone(), f)
                .map_err(|e| SchedulerError::Config(e.to_string()))?,
        ),
        (None, Some(_)) => {
            return Err(SchedulerError::Config(
                "--secret-file needs --principal".into(),
            ));
        }
        _ => None,
    };
    Ok(MesosConfig {
        masters: match masters {
            MasterSource::Http(list) => list.clone(),
            MasterSource::Zk(_) => vec!["http://127.0.0.1:5050".into()],
        },
        framework: FrameworkSettings {
            user: args.user.clone(),
            name: args.framework_name.clone(),
            roles: vec![args.role.clone()],
            failover_timeout: args.failover_timeout,
            hostname: Some(hostname(args)),
            principal: args.principal.clone(),
            webui_url: None,
            labels: None,
        },
        credential,
        max_frame: (args.max_event_mib as usize) << 20,
        master_ca: args.master_ca.clone(),
        ..MesosConfig::default()
    })
}

/// `key=value` flags as pairs.
fn pairs(flag: &str, values: &[String]) -> Result<Vec<(String, String)>, SchedulerError> {
    values
        .iter()
        .filter(|v| !v.trim().is_empty())
        .map(|v| {
            v.split_once('=')
                .filter(|(k, _)| !k.trim().is_empty())
                .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
                .ok_or_else(|| SchedulerError::Config(format!("{flag} {v:?}: expected key=value")))
        })
        .collect()
}

/// The major version an image's tag names (`...elasticsearch:7.17.22` → 7, `8.15.0-amd64` → 8); `None`
/// unless the tag is a version: every dotted part of it (before a `-` or `+` suffix, or a digest) a
/// number. A tag such as `3f2a9c81b7e0` (a build id) is no version 3.
#[must_use]
pub fn image_major_version(image: &str) -> Option<u32> {
    image_version(image)?.first().copied()
}

/// The version parts (`[major]`, `[major, minor]` or `[major, minor, patch]`) an image's tag names, by
/// [`image_major_version`]'s rule.
fn image_version(image: &str) -> Option<Vec<u32>> {
    let no_digest = image.split('@').next().unwrap_or(image);
    let name = no_digest.rsplit('/').next().unwrap_or(no_digest);
    let tag = name.split_once(':')?.1;
    let version = tag.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<u32> = version
        .split('.')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    (!parts.is_empty() && parts.len() <= 3).then_some(parts)
}

/// A coordinating-only group (`roles=`) reaches Elasticsearch as `node.roles=[]`, which it reads as the
/// empty list from 8.2 only: refused for an image whose tag names an older version (an unknown tag is
/// taken as the current 8.x).
fn check_group_roles(c: &Config, image: &str) -> Result<(), SchedulerError> {
    let Some(g) = c
        .groups
        .iter()
        .find(|g| g.roles.as_ref().is_some_and(Vec::is_empty))
    else {
        return Ok(());
    };
    let too_old = match image_version(image).as_deref() {
        Some([major, ..]) if *major < 8 => true,
        Some([8, minor, ..]) => *minor < 2,
        _ => false,
    };
    if too_old {
        return Err(SchedulerError::Config(format!(
            "--group {}: a coordinating-only group (roles= empty) needs Elasticsearch 8.2 or later \
             (node.roles=[] from the environment); --image {image} is older",
            g.name
        )));
    }
    Ok(())
}

/// `--es-security`, `auto` resolved from the image's tag (an unknown tag is taken as the current 8.x):
/// `full` from 8 on (8.x starts with security on: TLS on both layers), `off` below. This is only what a
/// new cluster asks for; the core keeps what the cluster bootstrapped with (`Core::security`).
fn security(args: &Args) -> Security {
    match args.es_security {
        EsSecurity::Off => Security::Off,
        EsSecurity::Transport => Security::Transport,
        EsSecurity::Full => Security::Full,
        EsSecurity::Auto => match image_major_version(&args.image) {
            Some(v) if v < 8 => Security::Off,
            _ => Security::Full,
        },
    }
}

/// Where the cluster CA and the `elastic` password come from when security is on.
#[derive(Debug)]
pub enum SecretsSource {
    /// The operator's, or kept in (and on first start created in) `--state-dir`.
    Ready(std::sync::Arc<ClusterSecrets>),
    /// With `--state zk://`: kept in ZooKeeper, so every HA candidate shares them, and loaded (or
    /// created) by the leader once elected; the operator's parts, read now, take precedence.
    Store(OperatorSecrets),
}

/// With security on, where the cluster CA and the `elastic` password come from.
pub fn cluster_secrets(
    args: &Args,
    config: &Config,
) -> Result<Option<SecretsSource>, SchedulerError> {
    if !config.security.is_on() {
        return Ok(None);
    }
    let ca = match (&args.es_ca_cert, &args.es_ca_key) {
        (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
        (None, None) => None,
        _ => return Err(SchedulerError::Config(SecretsError::HalfCa.to_string())),
    };
    let security = |e: SecretsError| SchedulerError::Config(format!("Elasticsearch security: {e}"));
    if args.state.is_some() {
        return OperatorSecrets::read(ca, args.es_password_file.as_deref())
            .map(|o| Some(SecretsSource::Store(o)))
            .map_err(security);
    }
    ClusterSecrets::load_or_create(&args.state_dir, ca, args.es_password_file.as_deref())
        .map(|s| Some(SecretsSource::Ready(std::sync::Arc::new(s))))
        .map_err(security)
}

/// `--volume-owner uid:gid` (empty: `None`); the root directory gets mode 0770.
fn volume_owner(raw: &str) -> Result<Option<VolumeOwner>, SchedulerError> {
    if raw.trim().is_empty() {
        return Ok(None);
    }
    let bad =
        || SchedulerError::Config(format!("--volume-owner {raw:?}: expected uid:gid, numeric"));
    let (uid, gid) = raw.split_once(':').ok_or_else(bad)?;
    Ok(Some(VolumeOwner {
        uid: uid.trim().parse().map_err(|_| bad())?,
        gid: gid.trim().parse().map_err(|_| bad())?,
        mode: 0o770,
    }))
}

/// How tasks are rendered: the command, `docker run` parameters, fetcher URIs, the task's user.
pub fn task_options(args: &Args) -> Result<TaskOptions, SchedulerError> {
    Ok(TaskOptions {
        command: task_command(args),
        docker_parameters: merge_docker_parameters(&pairs(
            "--docker-parameter",
            &args.docker_parameters,
        )?),
        force_pull_image: args.force_pull_image,
        fetch_uris: args
            .fetch_uris
            .iter()
            .filter(|u| !u.trim().is_empty())
            .cloned()
            .collect(),
        user: args.task_user.clone().filter(|u| !u.is_empty()),
        kill_grace_period: args.kill_grace_period,
    })
}

/// What the tasks run: `--exec` with its arguments, a `--command` for the shell, or the image's own.
pub fn task_command(args: &Args) -> TaskCommand {
    match (&args.exec, args.command.is_empty()) {
        (Some(program), _) => TaskCommand::Exec {
            program: program.clone(),
            args: args.exec_args.clone(),
        },
        (None, false) => TaskCommand::Shell(args.command.clone()),
        (None, true) => TaskCommand::Image,
    }
}

/// A token file's token (`None` without the flag: that API is open).
pub fn token(path: Option<&Path>) -> Result<Option<Token>, TokenError> {
    path.map(Token::from_file).transpose()
}

/// `--hostname`, else this machine's node name.
pub fn hostname(args: &Args) -> String {
    args.hostname.clone().unwrap_or_else(|| {
        rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned()
    })
}

/// The admin address a standby names: `--advertise-address`, else `--listen` with the host name in
/// place of an unspecified address.
pub fn advertise_address(args: &Args) -> String {
    args.advertise_address.clone().unwrap_or_else(|| {
        if args.listen.ip().is_unspecified() {
            format!("{}:{}", hostname(args), args.listen.port())
        } else {
            args.listen.to_string()
        }
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    fn args(extra: &[&str]) -> Args {
        let base = ["tether-scheduler", "--master", "http://m:5050"];
        Args::try_parse_from(base.iter().chain(extra)).expect("valid flags")
    }

    #[test]
    fn the_version_comes_from_the_image_tag() {
        assert_eq!(
            image_major_version("docker.elastic.co/elasticsearch/elasticsearch:7.17.22"),
            Some(7)
        );
        assert_eq!(image_major_version("registry:5000/es:8.15.0"), Some(8));
        assert_eq!(image_major_version("registry:5000/es"), None);
        assert_eq!(image_major_version("es:latest"), None);
        assert_eq!(image_major_version("es:8.15.1-amd64@sha256:abc"), Some(8));
        assert_eq!(
            image_major_version("tether/es-standin:3f2a9c81b7e0"),
            None,
            "a build id that starts with a digit is no version"
        );
    }

    #[test]
    fn groups_come_from_the_flags_and_coordinating_only_needs_8_2() {
        let c = core_config(&args(&[
            "--group",
            "masters:3:roles=master",
            "--group",
            "coord:2:roles=:mem=512",
            "--image",
            "elasticsearch:8.13.4",
            "--es-security",
            "off",
        ]))
        .expect("valid");
        let names: Vec<&str> = c.groups.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["masters", "coord"]);
        assert_eq!(c.groups[1].mem_mb, Some(512.0));
        for old in ["elasticsearch:7.17.22", "elasticsearch:8.1.3"] {
            let e = core_config(&args(&[
                "--group",
                "m:1",
                "--group",
                "c:1:roles=",
                "--image",
                old,
            ]))
            .expect_err("too old for roles=");
            assert!(e.to_string().contains("8.2 or later"), "{e}");
        }
        let e = core_config(&args(&[
            "--group",
            "data:1:roles=data",
            "--es-security",
            "off",
        ]))
        .expect_err("no master");
        assert!(e.to_string().contains("master-eligible"), "{e}");
        let e = core_config(&args(&["--group", "Bad:1"])).expect_err("bad name");
        assert!(e.to_string().contains("group name"), "{e}");
    }

    #[test]
    fn auto_security_follows_the_image() {
        let old = args(&["--image", "elasticsearch:7.17.22"]);
        assert_eq!(security(&old), Security::Off, "off below 8");
        assert_eq!(
            security(&args(&[])),
            Security::Full,
            "8.x: TLS on both layers"
        );
        assert_eq!(
            security(&args(&[
                "--image",
                "elasticsearch:7.17.22",
                "--es-security",
                "full"
            ])),
            Security::Full,
            "an explicit choice is kept"
        );
        assert_eq!(
            security(&args(&["--es-security", "transport"])),
            Security::Transport
        );
        let off = args(&["--es-security", "off"]);
        assert_eq!(security(&off), Security::Off, "explicitly off");
    }

    #[test]
    fn the_default_volume_layout_is_valid_with_8x_security_and_the_seed_layout_without() {
        let rexray = ["--external-volume-driver", "rexray"];
        let c = core_config(&args(&rexray)).expect("the default command line with an 8.x image");
        assert_eq!(c.security, Security::Full);
        c.validate()
            .expect("valid: the identity volume is inside the config dir");
        let seed = [
            "--external-volume-driver",
            "rexray",
            "--volume",
            "config:/tmp/config,data:/data",
        ];
        let e = core_config(&args(&seed))
            .and_then(|c| {
                c.validate()
                    .map_err(|e| SchedulerError::Config(e.to_string()))
            })
            .expect_err("the seed layout cannot hold 8.x TLS files");
        assert!(e.to_string().contains("--volume config:"), "{e}");
        let off: Vec<&str> = seed
            .iter()
            .copied()
            .chain(["--es-security", "off"])
            .collect();
        core_config(&args(&off))
            .expect("flags")
            .validate()
            .expect("the seed layout stays valid with security off");
    }

    #[test]
    fn task_options_merge_docker_parameters_and_read_the_task_user() {
        let a = args(&[
            "--docker-parameter",
            "ulimit=memlock=-1:-1",
            "--task-user",
            "elasticsearch",
            "--fetch-uri",
            "https://example.com/a.tgz",
            "--force-pull-image",
        ]);
        let o = task_options(&a).expect("options");
        assert_eq!(o.docker_parameters.len(), 2);
        assert_eq!(o.user.as_deref(), Some("elasticsearch"));
        assert_eq!(o.fetch_uris, ["https://example.com/a.tgz"]);
        assert!(o.force_pull_image);
        assert_eq!(
            volume_owner("1000:0").expect("owner"),
            Some(VolumeOwner {
                uid: 1000,
                gid: 0,
                mode: 0o770
            })
        );
        assert_eq!(volume_owner("").expect("none"), None);
        assert!(volume_owner("elastic").is_err());
    }
}
