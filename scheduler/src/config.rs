//! From flags to the settings each part runs with: the core's [`Config`], the Mesos client's
//! [`MesosConfig`], the task command, the tokens, and the address a standby names for the leader. Every
//! check that needs no network runs here, so `bind` fails on a bad flag before anything starts.

use std::path::Path;

use tether_core::config::{
    Config, Constraint, Containerizer as CoreContainerizer, Fencing as CoreFencing, Security,
    Strategy, VolumeOwner, VolumeSpec,
};
use tether_mesos::client::{Credential, FrameworkSettings, MesosConfig};

use crate::args::{Args, Containerizer, EsSecurity, Fencing, MasterSource};
use crate::auth::{Token, TokenError};
use crate::cluster_ca::{ClusterSecrets, SecretsError};
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
    c.report_interval_ms = args.report_interval.as_millis() as u64;
    c.prepare_hold_ms = args.prepare_timeout.as_millis() as u64;
    c.implicit_reconcile_ms = args.reconcile_interval.as_millis() as u64;
    c.startup_grace_ms = args.startup_grace.as_millis() as u64;
    c.data_volume = args.data_volume.clone();
    c.es_settings = pairs("--es-setting", &args.es_settings)?;
    c.es_env = pairs("--es-env", &args.es_env)?;
    c.security = security(args)?;
    c.volume_owner = volume_owner(&args.volume_owner)?;
    c.use_ip_address = args.use_ip_address;
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

/// The major version an image's tag names (`...elasticsearch:7.17.22` → 7); `None` without a numeric tag.
#[must_use]
pub fn image_major_version(image: &str) -> Option<u32> {
    let name = image.rsplit('/').next().unwrap_or(image);
    let tag = name.split_once(':')?.1;
    let digits: String = tag.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// `--es-security`, `auto` resolved from the image's tag (an unknown tag is taken as the current 8.x):
/// `transport` from 8 on, `off` below. HTTP TLS (`full`) is refused for now: the scheduler issues and
/// trusts the certificates, but a cluster with HTTP TLS has not been seen to bootstrap end to end here.
fn security(args: &Args) -> Result<Security, SchedulerError> {
    let wanted = match args.es_security {
        EsSecurity::Off => Security::Off,
        EsSecurity::Transport => Security::Transport,
        EsSecurity::Full => {
            return Err(SchedulerError::Config(
                "--es-security full (HTTP TLS) is not supported yet; use transport (transport TLS and \
                 the elastic password; HTTP stays plain)"
                    .into(),
            ));
        }
        EsSecurity::Auto => match image_major_version(&args.image) {
            Some(v) if v < 8 => Security::Off,
            _ => Security::Transport,
        },
    };
    Ok(wanted)
}

/// With security on, the cluster CA and the `elastic` password: the operator's, or kept in (and on first
/// start created in) `--state-dir`. With `--state zk://` the operator gives them (every scheduler
/// instance must sign with the same CA).
pub fn cluster_secrets(
    args: &Args,
    config: &Config,
) -> Result<Option<std::sync::Arc<ClusterSecrets>>, SchedulerError> {
    if !config.security.is_on() {
        return Ok(None);
    }
    let ca = match (&args.es_ca_cert, &args.es_ca_key) {
        (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
        (None, None) => None,
        _ => return Err(SchedulerError::Config(SecretsError::HalfCa.to_string())),
    };
    if args.state.is_some() && (ca.is_none() || args.es_password_file.is_none()) {
        return Err(SchedulerError::Config(format!(
            "Elasticsearch security {} with --state zk:// needs --es-ca-cert, --es-ca-key and \
             --es-password-file (every scheduler instance signs with the same CA)",
            config.security.as_str()
        )));
    }
    ClusterSecrets::load_or_create(&args.state_dir, ca, args.es_password_file.as_deref())
        .map(|s| Some(std::sync::Arc::new(s)))
        .map_err(|e| SchedulerError::Config(format!("Elasticsearch security: {e}")))
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
    }

    #[test]
    fn auto_security_follows_the_image() {
        let old = args(&["--image", "elasticsearch:7.17.22"]);
        assert_eq!(security(&old).expect("off below 8"), Security::Off);
        assert_eq!(security(&args(&[])).expect("8.x"), Security::Transport);
        let e = security(&args(&["--es-security", "full"])).expect_err("not yet");
        assert!(e.to_string().contains("use transport"), "{e}");
        assert_eq!(
            security(&args(&["--es-security", "transport"])).expect("transport"),
            Security::Transport
        );
        let off = args(&["--es-security", "off"]);
        assert_eq!(security(&off).expect("explicitly off"), Security::Off);
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
