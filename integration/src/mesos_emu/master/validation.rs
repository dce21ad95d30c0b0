//! The master's validation rules as pure checks, each answering with the real master's message: the
//! per-type presence checks of `validation::scheduler::call`, the roles of a SUBSCRIBE, and the steps of
//! `validation::task::validate` that ACCEPT runs in the master's order.

use std::collections::BTreeSet;

use base64::Engine as _;
use tether_mesos::model::*;

use super::super::resources::Res;

/// Semantic SUBSCRIBE checks answered with ERROR on the stream.
pub(super) fn validate_roles(info: &FrameworkInfo) -> Option<String> {
    let multi = info.has_capability(CapabilityType::MultiRole);
    if !multi && !info.roles.is_empty() {
        return Some("'FrameworkInfo.roles' is set but the MULTI_ROLE capability is not".into());
    }
    let mut seen = BTreeSet::new();
    for r in &info.roles {
        if !seen.insert(r) {
            return Some(format!(
                "'FrameworkInfo.roles' contains duplicate role '{r}'"
            ));
        }
        let bad = r.is_empty()
            || r.starts_with('/')
            || r.ends_with('/')
            || r.split('/')
                .any(|c| c == "." || c == ".." || c == "*" || c.starts_with('-') || c.is_empty())
            || r.chars().any(|c| c.is_whitespace() || c.is_control());
        if bad {
            return Some(format!("Role '{r}' is invalid"));
        }
    }
    None
}

/// The per-type presence checks and the ACKNOWLEDGE uuid check of `validation::scheduler::call`.
pub(super) fn validate_payload(c: &Call) -> Option<String> {
    let missing = |name: &str| Some(format!("Expecting '{name}' to be present"));
    match c.call_type {
        CallType::Accept if c.accept.is_none() => missing("accept"),
        CallType::Decline if c.decline.is_none() => missing("decline"),
        CallType::Kill if c.kill.is_none() => missing("kill"),
        CallType::Shutdown if c.shutdown.is_none() => missing("shutdown"),
        CallType::Message if c.message.is_none() => missing("message"),
        CallType::AcceptInverseOffers if c.accept_inverse_offers.is_none() => {
            missing("accept_inverse_offers")
        }
        CallType::DeclineInverseOffers if c.decline_inverse_offers.is_none() => {
            missing("decline_inverse_offers")
        }
        CallType::Acknowledge => match &c.acknowledge {
            None => missing("acknowledge"),
            Some(a) => {
                let cleaned: String = a.uuid.chars().filter(|c| !c.is_whitespace()).collect();
                let decoded = base64::engine::general_purpose::STANDARD_NO_PAD
                    .decode(cleaned.trim_end_matches('='));
                match decoded {
                    Ok(b) if b.len() == 16 => None,
                    _ => Some("'uuid' is not a valid UUID".into()),
                }
            }
        },
        _ => None,
    }
}

// ---- validation::task::validate, one step each, in the master's order ----------------------------------

/// A task id is 1..=255 characters, not `.` or `..`, without control characters or path separators.
pub(super) fn task_id(id: &str) -> Result<(), String> {
    if id.is_empty()
        || id.len() > 255
        || id == "."
        || id == ".."
        || id.chars().any(|c| c.is_control() || c == '/' || c == '\\')
    {
        return Err(format!("Task ID '{id}' is invalid"));
    }
    Ok(())
}

/// The framework has no task with this id yet (`known`).
pub(super) fn unique_task_id(id: &str, known: bool) -> Result<(), String> {
    if known {
        return Err(format!("Task has duplicate ID: {id}"));
    }
    Ok(())
}

/// The task names the agent of the offers it uses.
pub(super) fn task_agent(t: &TaskInfo, agent: &AgentID) -> Result<(), String> {
    if &t.agent_id != agent {
        return Err(format!(
            "Task uses invalid agent {} while agent {} is expected",
            t.agent_id, agent
        ));
    }
    Ok(())
}

pub(super) fn kill_policy(t: &TaskInfo) -> Result<(), String> {
    if let Some(g) = t.kill_policy.and_then(|k| k.grace_period)
        && g.nanoseconds < 0
    {
        return Err("Task's 'kill_policy.grace_period' must be non-negative".into());
    }
    Ok(())
}

/// A health check has a type (or an `http` section implying HTTP); an HTTP one has a path starting
/// with `/` and an http(s) scheme.
pub(super) fn health_check(t: &TaskInfo) -> Result<(), String> {
    let Some(h) = &t.health_check else {
        return Ok(());
    };
    let typ = h.check_type.or(if h.http.is_some() {
        Some(HealthCheckType::Http)
    } else {
        None
    });
    match (typ, &h.http) {
        (Some(HealthCheckType::Http), Some(http)) => {
            if http.path.as_deref().is_some_and(|p| !p.starts_with('/')) {
                return Err("Task's health check is invalid: The path must start with '/'".into());
            }
            if http
                .scheme
                .as_deref()
                .is_some_and(|s| s != "http" && s != "https")
            {
                return Err(
                    "Task's health check is invalid: The scheme must be 'http' or 'https'".into(),
                );
            }
        }
        (Some(HealthCheckType::Http), None) => {
            return Err("Task's health check is invalid: Expecting 'http' to be set".into());
        }
        (None, _) if h.tcp.is_none() => {
            return Err("Task's health check is invalid: type is not set".into());
        }
        _ => {}
    }
    Ok(())
}

/// The task's resources: some, and each valid.
pub(super) fn task_resources(t: &TaskInfo) -> Result<Res, String> {
    if t.resources.is_empty() {
        return Err("Task uses no resources".into());
    }
    Res::from_resources(&t.resources).map_err(|e| format!("Task uses invalid resources: {e}"))
}

/// Every VALUE environment variable of the command has a value.
pub(super) fn environment(t: &TaskInfo) -> Result<(), String> {
    if let Some(c) = t.command.as_ref().and_then(|c| c.environment.as_ref()) {
        for v in &c.variables {
            if v.variable_type.unwrap_or(VariableType::Value) == VariableType::Value
                && v.value.is_none()
            {
                return Err(format!(
                    "Environment variable '{}' of type 'VALUE' must have a value set",
                    v.name
                ));
            }
        }
    }
    Ok(())
}

/// Each volume has exactly one of host path, image and source (a DOCKER_VOLUME source with its
/// details); a DOCKER container has its DockerInfo, without a `name` parameter.
pub(super) fn container(t: &TaskInfo) -> Result<(), String> {
    let Some(c) = &t.container else {
        return Ok(());
    };
    for v in &c.volumes {
        let n = usize::from(v.host_path.is_some())
            + usize::from(v.image.is_some())
            + usize::from(v.source.is_some());
        if n != 1 {
            return Err("Task's ContainerInfo is invalid: Only one of them should be set: 'host_path', 'image' and 'source' in Volume".into());
        }
        if let Some(s) = &v.source
            && s.source_type == Some(VolumeSourceType::DockerVolume)
            && s.docker_volume.is_none()
        {
            return Err("Task's ContainerInfo is invalid: 'source.docker_volume' is not set for DOCKER_VOLUME volume".into());
        }
    }
    if c.container_type == ContainerType::Docker {
        let Some(d) = &c.docker else {
            return Err("Task's ContainerInfo is invalid: DockerInfo 'docker' is not set for DOCKER typed ContainerInfo".into());
        };
        if d.parameters.iter().any(|p| p.key == "name") {
            return Err(
                "Task's ContainerInfo is invalid: Parameter in DockerInfo must not be 'name'"
                    .into(),
            );
        }
    }
    Ok(())
}

pub(super) fn command_or_executor(t: &TaskInfo) -> Result<(), String> {
    if t.command.is_some() == t.executor.is_some() {
        return Err(
            "Task should have at least one (but not both) of CommandInfo or ExecutorInfo present"
                .into(),
        );
    }
    Ok(())
}

/// The task's resources fit in what is left of the offers.
pub(super) fn fits(res: &Res, available: &Res) -> Result<(), String> {
    if !available.contains(res) {
        return Err(format!(
            "Total resources {res} required by task and its executor is more than available {available}"
        ));
    }
    Ok(())
}
