//! What operators read: the core's views and watch events turned into `tether.v1` admin messages. The
//! core hands over typed values (task states, decline reasons); their words are chosen here, at the gRPC
//! edge, and nowhere else.

use tether_core::ReasonKind;
use tether_core::command::WatchEvent;
use tether_core::domain::TaskState;
use tether_core::ids::{Millis, NodeId};
use tether_core::view::{
    AgentView, ClusterView, NextAction, NodePhase, NodeView, OperatorWait, VolumeView,
};
use tether_proto::v1 as pb;

/// The shell's clock: the core's [`Millis`] count from the process start, shown as Unix milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    started: std::time::Instant,
    started_unix_ms: u64,
}

impl Clock {
    /// Starts counting now.
    #[must_use]
    pub fn start() -> Clock {
        Clock {
            started: std::time::Instant::now(),
            started_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        }
    }

    /// The core's `now`.
    #[must_use]
    pub fn now(&self) -> Millis {
        Millis(self.started.elapsed().as_millis() as u64)
    }

    /// `at` as Unix milliseconds.
    #[must_use]
    pub fn unix_ms(&self, at: Millis) -> u64 {
        self.started_unix_ms + at.0
    }

    /// Unix milliseconds on the core's clock (a time before this process started is `Millis(0)`).
    #[must_use]
    pub fn at_unix_ms(&self, unix_ms: u64) -> Millis {
        Millis(unix_ms.saturating_sub(self.started_unix_ms))
    }
}

/// What the shell knows of the cluster besides the core's view.
#[derive(Debug, Clone, Copy)]
pub struct ClusterFacts<'a> {
    pub framework_name: &'a str,
    /// The subscribed master's URL (empty while not subscribed).
    pub master: &'a str,
    /// `--external-volume-driver`.
    pub driver: &'a str,
    /// This instance's advertised admin address when it won a ZooKeeper election (empty otherwise).
    pub leader_address: &'a str,
}

/// The `GetCluster` answer of the leader.
#[must_use]
pub fn cluster(c: ClusterView, facts: ClusterFacts<'_>, clock: &Clock) -> pb::Cluster {
    pb::Cluster {
        framework_id: c.framework_id.unwrap_or_default(),
        framework_name: facts.framework_name.to_owned(),
        master: facts.master.to_owned(),
        subscribed_since_unix_ms: c.subscribed_since.map_or(0, |s| clock.unix_ms(s)),
        desired: c.desired,
        running: c.running,
        strategy: c.strategy,
        driver: facts.driver.to_owned(),
        leader: true,
        leader_address: facts.leader_address.to_owned(),
        cluster_uuid: c.cluster_uuid,
        security: c.security,
        health: c.health.as_str().to_owned(),
        shards: c.shard_counts.map(|k| pb::ShardCounts {
            active: k.active,
            relocating: k.relocating,
            initializing: k.initializing,
            unassigned: k.unassigned,
        }),
        es_master: c.es_master.unwrap_or_default(),
        groups: c
            .groups
            .into_iter()
            .map(|g| pb::GroupStatus {
                name: g.name,
                desired: g.desired,
                running: g.running,
                roles_default: g.roles.is_none(),
                roles: g.roles.unwrap_or_default(),
            })
            .collect(),
    }
}

/// A safe removal as `ListNodes` shows it.
#[must_use]
pub fn removal(r: &tether_core::removal::RemovalView) -> pb::NodeRemoval {
    use tether_core::state::{RemovalKind, RemovalStep};
    pb::NodeRemoval {
        kind: match r.kind {
            RemovalKind::ScaleDown => "scale_down",
            RemovalKind::Replace => "replace",
            RemovalKind::Maintenance => "maintenance",
        }
        .to_owned(),
        step: match r.step {
            RemovalStep::MoveData => "move_data",
            RemovalStep::ExcludeVoting => "exclude_voting",
            RemovalStep::Stop => "stop",
            RemovalStep::Clear => "clear",
        }
        .to_owned(),
        waiting: r.waiting.clone(),
        stalled: r.stalled,
    }
}

/// A task state as `ListNodes` shows it: the Mesos name without `TASK_` (`RUNNING`).
#[must_use]
pub fn task_state(s: TaskState) -> &'static str {
    let name = s.as_mesos();
    name.strip_prefix("TASK_").unwrap_or(name)
}

/// A node's state as `ListNodes` shows it.
#[must_use]
pub fn node_state(phase: &NodePhase) -> &'static str {
    match phase {
        NodePhase::Pending => "PENDING",
        NodePhase::Preparing => "PREPARING",
        NodePhase::Task(Some(s)) => task_state(*s),
        NodePhase::Task(None) => "STAGING",
        NodePhase::Stopping => "STOPPING",
        NodePhase::Stopped => "STOPPED",
    }
}

/// What Tether will do about an UNREACHABLE node, as `ListNodes` (and its JSON, `next_action`) shows
/// it: `kind` `none`, `wait_operator`, `replace_at` or `es_still_sees_it`.
#[must_use]
pub fn next_action(a: &NextAction, clock: &Clock, now: Millis) -> pb::NextAction {
    let (kind, at_unix_ms, text) = match a {
        NextAction::None => ("none", 0, String::new()),
        NextAction::WaitOperator { host, why } => {
            let why = match why {
                OperatorWait::FencingOff => String::new(),
                OperatorWait::NoEsView => {
                    " (storage fencing waits for an answer from Elasticsearch)".to_owned()
                }
                OperatorWait::NoEsMaster(w) => {
                    format!(
                        " (storage fencing replaces nothing without an Elasticsearch master: {w})"
                    )
                }
            };
            (
                "wait_operator",
                0,
                format!("waiting for an operator: tetherctl agents gone {host}{why}"),
            )
        }
        NextAction::ReplaceAt { at } => {
            let secs = at.since(now).div_ceil(1000);
            (
                "replace_at",
                clock.unix_ms(*at),
                format!("replacing in {secs} s, storage-fenced"),
            )
        }
        NextAction::EsStillSeesIt { master } => (
            "es_still_sees_it",
            0,
            format!("Elasticsearch's master {master} still lists it: left alone"),
        ),
    };
    pb::NextAction {
        kind: kind.to_owned(),
        at_unix_ms,
        text,
    }
}

#[must_use]
pub fn node(n: NodeView, clock: &Clock) -> pb::Node {
    let (http_port, transport_port) = n
        .ports
        .map_or((0, 0), |(h, t)| (u32::from(h), u32::from(t)));
    let joined = n.joined();
    let action = next_action(&n.next_action, clock, clock.now());
    // An UNREACHABLE node's reason is what will end its wait; a node being removed, what its
    // removal waits for.
    let reason = match (&n.removal, action.text.is_empty()) {
        (_, false) => action.text.clone(),
        (Some(r), true) if !r.waiting.is_empty() => {
            format!("{}: {}", r.step.as_str(), r.waiting)
        }
        _ => n.last_reason.unwrap_or_default(),
    };
    pb::Node {
        joined,
        id: n.node_id.ordinal(),
        group: n.group,
        state: node_state(&n.phase).to_owned(),
        task_id: n.task_id.map(String::from).unwrap_or_default(),
        agent_id: n.agent_id.map(String::from).unwrap_or_default(),
        host: n.host.map(String::from).unwrap_or_default(),
        http_port,
        transport_port,
        volumes: n.volumes.into_iter().map(String::from).collect(),
        reason,
        since_unix_ms: clock.unix_ms(n.since),
        unreachable_since_unix_ms: n.unreachable_since.map(|t| clock.unix_ms(t)),
        next_action: Some(action),
        es_joined: n.es_joined,
        shards: n.shards,
        removal: n.removal.as_ref().map(removal),
        config_generation: n.config_generation,
        certificate_not_after: n.certificate_not_after,
    }
}

/// The rollout as the admin API shows it; `message` says what the request did.
#[must_use]
pub fn rollout(core: &tether_core::Core, now: Millis, message: String) -> pb::RolloutStatus {
    let v = core.rollout_view(now);
    let node = |id: NodeId| pb::RolloutNode {
        id: id.ordinal(),
        group: core.group_name(id).to_owned(),
    };
    pb::RolloutStatus {
        config_generation: v.config_generation,
        state: v.state,
        done: v.done.into_iter().map(node).collect(),
        current: v.current.map(node),
        pending: v.pending.into_iter().map(node).collect(),
        reason: v.reason.unwrap_or_default(),
        step: v.step.map(|s| s.as_str().to_owned()).unwrap_or_default(),
        message,
    }
}

#[must_use]
pub fn agent(a: AgentView, clock: &Clock) -> pb::Agent {
    let now = clock.now();
    pb::Agent {
        host: a.host.into(),
        agent_id: a.agent_id.map(String::from).unwrap_or_default(),
        sidecar_connected: a.sidecar_connected,
        last_report_age_ms: a.last_report_at.map(|t| now.since(t)),
        driver_healthy: a.driver_healthy,
        driver_latency_micros: a.driver_latency_micros,
        driver_error: a.driver_error.unwrap_or_default(),
        zone: a.zone.unwrap_or_default(),
        attachments_used: a.attachments_used,
        attachments_max: a.attachments_max.unwrap_or(0),
        volumes_seen: a.volumes_seen.len() as u32,
        last_decline_reason: a.last_decline.map(|r| r.to_string()).unwrap_or_default(),
        observes: a.observes,
        maintenance: a.maintenance.map(|m| pb::AgentMaintenance {
            start_unix_ms: (m.window.start != Millis(0)).then(|| clock.unix_ms(m.window.start)),
            duration_ms: m.window.duration_ms,
            draining: m.draining,
            nodes: u32::try_from(m.nodes.len()).unwrap_or(u32::MAX),
        }),
    }
}

#[must_use]
pub fn volume(v: VolumeView) -> pb::Volume {
    pb::Volume {
        name: v.name.into(),
        node_id: v.node_id.ordinal(),
        group: v.group,
        exists: v.exists.unwrap_or(false),
        size_bytes: v.size_bytes,
        free_bytes: v.free_bytes,
        zone: v.zone.unwrap_or_default(),
        attached_to: v
            .attached_to
            .iter()
            .map(|h| h.as_str())
            .collect::<Vec<_>>()
            .join(","),
        last_error: v.last_error.unwrap_or_default(),
    }
}

/// One round's declines as watchers read them: `2× cpus; 5× nothing pending`.
#[must_use]
pub fn declines(by_reason: &[(ReasonKind, usize)]) -> String {
    by_reason
        .iter()
        .map(|(r, n)| format!("{n}× {r}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// A watch event for `WatchEvents` (and the log), stamped `at_unix_ms`.
#[must_use]
pub fn cluster_event(e: &WatchEvent, at_unix_ms: u64) -> pb::ClusterEvent {
    let none = || (None::<NodeId>, "", "");
    let (kind, (node_id, host, task_id), message) = match e {
        WatchEvent::Subscribed { framework_id } => {
            ("subscribed", none(), format!("framework {framework_id}"))
        }
        WatchEvent::Disconnected => ("disconnected", none(), "subscription ended".to_owned()),
        WatchEvent::Preparing { node_id, host } => (
            "preparing",
            (Some(*node_id), host.as_str(), ""),
            "preparing volumes".to_owned(),
        ),
        WatchEvent::Launched {
            node_id,
            task_id,
            host,
        } => (
            "launch",
            (Some(*node_id), host.as_str(), task_id.as_str()),
            "launched".to_owned(),
        ),
        WatchEvent::TaskState {
            node_id,
            task_id,
            state,
        } => (
            "node_state",
            (Some(*node_id), "", task_id.as_str()),
            state.as_mesos().to_owned(),
        ),
        WatchEvent::NodeWaiting { node_id, reason } => {
            ("node_waiting", (Some(*node_id), "", ""), reason.to_string())
        }
        WatchEvent::OffersDeclined { by_reason } => {
            ("offers_declined", none(), declines(by_reason))
        }
        WatchEvent::Scaled { group, from, to } => (
            "scale",
            none(),
            match group {
                Some(g) => format!("group {g}: {from} -> {to}"),
                None => format!("{from} -> {to}"),
            },
        ),
        WatchEvent::Replaced { node_id, force } => (
            "replace",
            (Some(*node_id), "", ""),
            format!("replacement requested (force: {force})"),
        ),
        WatchEvent::FencedReplacement {
            node_id,
            task_id,
            host,
        } => (
            "fenced_replacement",
            (Some(*node_id), host.as_str(), task_id.as_str()),
            "UNREACHABLE and absent from Elasticsearch past the delay: replacing it, storage-fenced; \
             the old task is killed wherever it shows up"
                .to_owned(),
        ),
        WatchEvent::StrayTask { task_id, state } => (
            "stray_task",
            (None, "", task_id.as_str()),
            format!("killing stray task in {}", state.as_mesos()),
        ),
        WatchEvent::Bootstrap { node_id, message } => {
            ("bootstrap", (*node_id, "", ""), message.clone())
        }
        WatchEvent::Removal {
            node_id,
            message,
            stalled,
        } => (
            if *stalled { "removal_stalled" } else { "removal" },
            (Some(*node_id), "", ""),
            message.clone(),
        ),
        WatchEvent::Rollout {
            node_id,
            state,
            message,
        } => (
            "rollout",
            (*node_id, "", ""),
            format!("{state}: {message}"),
        ),
        WatchEvent::Warning { message } => ("warning", none(), message.clone()),
    };
    pb::ClusterEvent {
        at_unix_ms,
        kind: kind.to_owned(),
        node_id: node_id.map(NodeId::ordinal),
        host: host.to_owned(),
        task_id: task_id.to_owned(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use tether_core::Reason;
    use tether_core::ids::{FrameworkId, TaskId, VolumeName};

    use super::*;

    fn must<T, E: std::fmt::Debug>(r: Result<T, E>) -> T {
        r.unwrap_or_else(|e| panic!("{e:?}"))
    }

    #[test]
    fn node_states_drop_the_task_prefix() {
        assert_eq!(
            node_state(&NodePhase::Task(Some(TaskState::Running))),
            "RUNNING"
        );
        assert_eq!(
            node_state(&NodePhase::Task(Some(TaskState::GoneByOperator))),
            "GONE_BY_OPERATOR"
        );
        assert_eq!(node_state(&NodePhase::Task(None)), "STAGING");
        assert_eq!(node_state(&NodePhase::Pending), "PENDING");
    }

    #[test]
    fn events_read_as_they_always_have() {
        let declined = WatchEvent::OffersDeclined {
            by_reason: vec![(ReasonKind::Cpus, 2), (ReasonKind::NothingPending, 5)],
        };
        let e = cluster_event(&declined, 7);
        assert_eq!((e.kind.as_str(), e.at_unix_ms), ("offers_declined", 7));
        assert_eq!(e.message, "2× cpus; 5× nothing pending");

        let state = WatchEvent::TaskState {
            node_id: NodeId(3),
            task_id: must(TaskId::new("es-3.1")),
            state: TaskState::Running,
        };
        let e = cluster_event(&state, 0);
        assert_eq!(
            (e.node_id, e.task_id.as_str(), e.message.as_str()),
            (Some(3), "es-3.1", "TASK_RUNNING")
        );

        let waiting = WatchEvent::NodeWaiting {
            node_id: NodeId(2),
            reason: Reason::VolumeMissing(must(VolumeName::new("es2data"))),
        };
        assert_eq!(
            cluster_event(&waiting, 0).message,
            "volume es2data does not exist and auto-create is off"
        );

        let subscribed = WatchEvent::Subscribed {
            framework_id: must(FrameworkId::new("fw-1")),
        };
        assert_eq!(cluster_event(&subscribed, 0).message, "framework fw-1");
        let stray = WatchEvent::StrayTask {
            task_id: must(TaskId::new("es-1.1")),
            state: TaskState::Running,
        };
        assert_eq!(
            cluster_event(&stray, 0).message,
            "killing stray task in TASK_RUNNING"
        );
    }
}
