//! From flags to the settings each part runs with: the core's [`Config`], the Mesos client's
//! [`MesosConfig`], the task command, the tokens, and the address a standby names for the leader. Every
//! check that needs no network runs here, so `bind` fails on a bad flag before anything starts.

use std::path::Path;

use tether_core::config::{
    Config, Constraint, Containerizer as CoreContainerizer, Fencing as CoreFencing, Strategy,
    VolumeSpec,
};
use tether_mesos::client::{Credential, FrameworkSettings, MesosConfig};

use crate::args::{Args, Containerizer, Fencing, MasterSource};
use crate::auth::{Token, TokenError};
use crate::error::SchedulerError;
use crate::taskinfo::TaskCommand;

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
    c.fencing = match args.fencing {
        Fencing::None => CoreFencing::None,
        Fencing::Storage => CoreFencing::Storage,
    };
    c.unreachable_replace_after_ms = args.unreachable_replace_after.as_millis() as u64;
    // A few polls fit in a view's life, so one slow answer does not void it.
    c.es_view_max_age_ms = (args.es_poll_interval.as_millis() as u64)
        .saturating_mul(3)
        .max(1);
    c.validate()
        .map_err(|e| SchedulerError::Config(e.to_string()))?;
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
