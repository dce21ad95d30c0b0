//! The boundary between wire types (Mesos JSON models, `tether.v1` protobuf) and the core's domain types.
//!
//! Everything a peer sends is validated here; a value the core could not trust becomes a
//! [`ConvertError`] naming the field, and never reaches the core.

use std::collections::BTreeMap;

use tether_core::command::{MesosCommand, SidecarCommand};
use tether_core::domain::{
    AttributeValue, CommandResult, DriverAttachment, DriverScope, Hello, InverseOffer, Offer,
    PortRange, Report, Reservation, ResourceAmount, ResourcePart, StatusSource, TaskReason,
    TaskState, TaskStatus, Unavailability, VolumeReport,
};
use tether_core::ids::{AgentId, Hostname, IdError, NodeId, OfferId, TaskId, VolumeName};
use tether_mesos::model::{self, Call, Filters, Operation, ValueType};
use tether_proto::v1 as pb;

use crate::presentation::Clock;
use crate::taskinfo::{TaskOptions, task_info};

/// A peer's message the core cannot accept.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("{field}: {source}")]
    Id {
        field: &'static str,
        source: IdError,
    },
    #[error("{field}: {detail}")]
    Invalid { field: &'static str, detail: String },
}

fn id<T>(field: &'static str, r: Result<T, IdError>) -> Result<T, ConvertError> {
    r.map_err(|source| ConvertError::Id { field, source })
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

// ---------------------------------------------------------------------------------------------------------
// Mesos → core

/// A resource's reservation stack in the post-refinement form, as the master upgrades it
/// (`convertResourceFormat`): `reservations` when given, else a `role` other than `*` is one reservation,
/// DYNAMIC when `reservation` (principal, labels) is set and STATIC otherwise.
fn reservations(r: &model::Resource) -> Vec<Reservation> {
    let labels = |l: &Option<model::Labels>| {
        l.as_ref().map(|l| {
            l.labels
                .iter()
                .map(|x| (x.key.clone(), x.value.clone()))
                .collect()
        })
    };
    if !r.reservations.is_empty() {
        return r
            .reservations
            .iter()
            .map(|x| Reservation {
                dynamic: x.reservation_type == Some(model::ReservationType::Dynamic),
                role: x.role.clone().unwrap_or_default(),
                principal: x.principal.clone(),
                labels: labels(&x.labels),
            })
            .collect();
    }
    match r.role.as_deref() {
        None | Some("*") => Vec::new(),
        Some(role) => vec![Reservation {
            dynamic: r.reservation.is_some(),
            role: role.to_owned(),
            principal: r.reservation.as_ref().and_then(|x| x.principal.clone()),
            labels: r.reservation.as_ref().and_then(|x| labels(&x.labels)),
        }],
    }
}

/// An offer, reduced to what placement needs. Scalars of the same name are summed (an offer may split a
/// resource across reservations), and the reserved parts are kept with their reservation for the
/// task's resources. Disk with a `DiskInfo` (a MOUNT or PATH disk, a persistent volume) is left out: a
/// task could take it only whole and naming it, which Tether never does.
/// A maintenance window on the core's clock: the master's epoch nanoseconds read against the wall clock
/// `clock` started with (a negative duration counts as none).
#[must_use]
pub fn unavailability(u: &model::Unavailability, clock: &Clock) -> Unavailability {
    let ms = |ns: i64| u64::try_from(ns.max(0) / 1_000_000).unwrap_or(0);
    Unavailability {
        start: clock.at_unix_ms(ms(u.start.nanoseconds)),
        duration_ms: u.duration.map(|d| ms(d.nanoseconds)),
    }
}

/// An inverse offer; the master's maintenance inverse offers always name their agent.
pub fn inverse_offer(o: &model::InverseOffer, clock: &Clock) -> Result<InverseOffer, ConvertError> {
    let agent = o.agent_id.as_ref().ok_or(ConvertError::Invalid {
        field: "inverse_offer.agent_id",
        detail: "missing (Tether only answers maintenance inverse offers, which name an agent)"
            .into(),
    })?;
    Ok(InverseOffer {
        id: id("inverse_offer.id", OfferId::new(&o.id.value))?,
        agent_id: id("inverse_offer.agent_id", AgentId::new(&agent.value))?,
        unavailability: unavailability(&o.unavailability, clock),
    })
}

/// An offer; its `unavailability` goes on the core's clock through `clock`.
pub fn offer(o: &model::Offer, clock: &Clock) -> Result<Offer, ConvertError> {
    let mut cpus = 0.0;
    let mut mem_mb = 0.0;
    let mut disk_mb = 0.0;
    let mut ports = Vec::new();
    let mut reserved = Vec::new();
    for r in &o.resources {
        let amount = match (r.name.as_str(), r.value_type) {
            ("disk", ValueType::Scalar) if r.disk.is_some() => continue,
            ("cpus" | "mem" | "disk", ValueType::Scalar) => {
                let v = r.scalar.map_or(0.0, |s| s.value);
                match r.name.as_str() {
                    "cpus" => cpus += v,
                    "mem" => mem_mb += v,
                    _ => disk_mb += v,
                }
                ResourceAmount::Scalar(v)
            }
            ("ports", ValueType::Ranges) => {
                let mut these = Vec::new();
                for range in r.ranges.iter().flat_map(|rs| &rs.range) {
                    if range.begin > range.end {
                        return Err(ConvertError::Invalid {
                            field: "offer.resources.ports",
                            detail: format!("range {}-{} has begin > end", range.begin, range.end),
                        });
                    }
                    these.push(PortRange {
                        begin: range.begin,
                        end: range.end,
                    });
                }
                ports.extend(these.iter().copied());
                ResourceAmount::Ranges(these)
            }
            _ => continue,
        };
        let reservations = reservations(r);
        if !reservations.is_empty() {
            reserved.push(ResourcePart {
                name: r.name.clone(),
                reservations,
                amount,
            });
        }
    }
    if !(cpus.is_finite() && mem_mb.is_finite() && disk_mb.is_finite()) {
        return Err(ConvertError::Invalid {
            field: "offer.resources",
            detail: "non-finite scalar".into(),
        });
    }
    let attributes = o
        .attributes
        .iter()
        .filter_map(|a| match a.value_type {
            ValueType::Text => a
                .text
                .as_ref()
                .map(|t| (a.name.clone(), AttributeValue::Text(t.value.clone()))),
            ValueType::Scalar => a
                .scalar
                .map(|s| (a.name.clone(), AttributeValue::Scalar(s.value))),
            _ => None,
        })
        .collect();
    let role = o
        .allocation_info
        .as_ref()
        .and_then(|a| a.role.clone())
        .or_else(|| {
            o.resources
                .iter()
                .find_map(|r| r.allocation_info.as_ref().and_then(|a| a.role.clone()))
        })
        .unwrap_or_else(|| "*".to_owned());
    Ok(Offer {
        id: id("offer.id", OfferId::new(&o.id.value))?,
        agent_id: id("offer.agent_id", AgentId::new(&o.agent_id.value))?,
        hostname: id("offer.hostname", Hostname::new(&o.hostname))?,
        zone: o
            .domain
            .as_ref()
            .and_then(|d| d.fault_domain.as_ref())
            .map(|f| f.zone.name.clone()),
        ip: o
            .url
            .as_ref()
            .and_then(|u| u.address.ip.clone())
            .filter(|ip| !ip.is_empty()),
        cpus,
        mem_mb,
        disk_mb,
        ports,
        attributes,
        role,
        reserved,
        unavailability: o.unavailability.as_ref().map(|u| unavailability(u, clock)),
    })
}

fn state(s: model::TaskState) -> TaskState {
    match s {
        model::TaskState::Staging => TaskState::Staging,
        model::TaskState::Starting => TaskState::Starting,
        model::TaskState::Running => TaskState::Running,
        model::TaskState::Killing => TaskState::Killing,
        model::TaskState::Finished => TaskState::Finished,
        model::TaskState::Failed => TaskState::Failed,
        model::TaskState::Killed => TaskState::Killed,
        model::TaskState::Error => TaskState::Error,
        model::TaskState::Lost => TaskState::Lost,
        model::TaskState::Dropped => TaskState::Dropped,
        model::TaskState::Unreachable => TaskState::Unreachable,
        model::TaskState::Gone => TaskState::Gone,
        model::TaskState::GoneByOperator => TaskState::GoneByOperator,
        model::TaskState::Unknown => TaskState::Unknown,
    }
}

fn reason(r: model::Reason) -> TaskReason {
    use model::Reason as M;
    match r {
        M::ReasonCommandExecutorFailed => TaskReason::CommandExecutorFailed,
        M::ReasonContainerLaunchFailed => TaskReason::ContainerLaunchFailed,
        M::ReasonContainerLimitation => TaskReason::ContainerLimitation,
        M::ReasonContainerLimitationDisk => TaskReason::ContainerLimitationDisk,
        M::ReasonContainerLimitationMemory => TaskReason::ContainerLimitationMemory,
        M::ReasonContainerPreempted => TaskReason::ContainerPreempted,
        M::ReasonExecutorTerminated => TaskReason::ExecutorTerminated,
        M::ReasonExecutorUnregistered => TaskReason::ExecutorUnregistered,
        M::ReasonFrameworkRemoved => TaskReason::FrameworkRemoved,
        M::ReasonInvalidOffers => TaskReason::InvalidOffers,
        M::ReasonMasterDisconnected => TaskReason::MasterDisconnected,
        M::ReasonReconciliation => TaskReason::Reconciliation,
        M::ReasonAgentDisconnected => TaskReason::AgentDisconnected,
        M::ReasonAgentDraining => TaskReason::AgentDraining,
        M::ReasonAgentRemoved => TaskReason::AgentRemoved,
        M::ReasonAgentRemovedByOperator => TaskReason::AgentRemovedByOperator,
        M::ReasonAgentReregistered => TaskReason::AgentReregistered,
        M::ReasonAgentRestarted => TaskReason::AgentRestarted,
        M::ReasonAgentUnknown => TaskReason::AgentUnknown,
        M::ReasonTaskKilledDuringLaunch => TaskReason::TaskKilledDuringLaunch,
        M::ReasonTaskCheckStatusUpdated => TaskReason::TaskCheckStatusUpdated,
        M::ReasonTaskHealthCheckStatusUpdated => TaskReason::TaskHealthCheckStatusUpdated,
        M::ReasonTaskGroupInvalid => TaskReason::TaskGroupInvalid,
        M::ReasonTaskGroupUnauthorized => TaskReason::TaskGroupUnauthorized,
        M::ReasonTaskInvalid => TaskReason::TaskInvalid,
        M::ReasonTaskUnauthorized => TaskReason::TaskUnauthorized,
        M::ReasonTaskUnknown => TaskReason::TaskUnknown,
        M::Unrecognized => TaskReason::Unrecognized,
    }
}

/// A status update or reconciliation answer.
pub fn status(s: &model::TaskStatus) -> Result<TaskStatus, ConvertError> {
    Ok(TaskStatus {
        task_id: id("status.task_id", TaskId::new(&s.task_id.value))?,
        agent_id: s
            .agent_id
            .as_ref()
            .map(|a| id("status.agent_id", AgentId::new(&a.value)))
            .transpose()?,
        state: state(s.state),
        reason: s.reason.map(reason),
        message: s.message.clone(),
        source: s.source.and_then(|src| match src {
            model::Source::SourceMaster => Some(StatusSource::Master),
            model::Source::SourceAgent => Some(StatusSource::Agent),
            model::Source::SourceExecutor => Some(StatusSource::Executor),
            model::Source::Unrecognized => None,
        }),
        uuid: s.uuid.clone(),
        healthy: s.healthy,
    })
}

// ---------------------------------------------------------------------------------------------------------
// Sidecar → core

const KNOWN_FEATURES: [&str; 3] = [
    tether_core::domain::FEATURE_VOLUME_OWNER,
    tether_core::domain::FEATURE_NODE_IDENTITY,
    tether_core::domain::FEATURE_WATCH_DELTA,
];

pub fn hello(h: &pb::Hello) -> Result<Hello, ConvertError> {
    Ok(Hello {
        hostname: id("hello.hostname", Hostname::new(&h.hostname))?,
        agent_id: non_empty(&h.agent_id)
            .map(|a| id("hello.agent_id", AgentId::new(a)))
            .transpose()?,
        sidecar_version: h.sidecar_version.clone(),
        driver_name: h.driver_name.clone(),
        driver_scope: match pb::DriverScope::try_from(h.driver_scope) {
            Ok(pb::DriverScope::Global) => DriverScope::Global,
            Ok(pb::DriverScope::Local) => DriverScope::Local,
            _ => DriverScope::Unknown,
        },
        zone: non_empty(&h.zone),
        max_attachments: (h.max_attachments != 0).then_some(h.max_attachments),
        instance_id: h.instance_id.clone(),
        // Only the features this scheduler acts on are kept: the rest mean nothing here and would only
        // be held.
        features: h
            .features
            .iter()
            .filter(|f| KNOWN_FEATURES.contains(&f.as_str()))
            .cloned()
            .collect(),
    })
}

fn volume_report(v: &pb::VolumeReport) -> Result<VolumeReport, ConvertError> {
    Ok(VolumeReport {
        name: id("volume.name", VolumeName::new(&v.name))?,
        exists: v.exists,
        size_bytes: v.size_bytes,
        free_bytes: v.free_bytes,
        zone: non_empty(&v.zone),
        attached_here: v.attached_here,
        driver_attachment: driver_attachment(&v.status),
        last_error: non_empty(&v.last_error),
    })
}

/// The driver's own word on where the volume is attached: libStorage's `attachmentState` (2 here, 3
/// available, 4 elsewhere), which REX-Ray's Docker plugin does not report (`None`).
fn driver_attachment(
    status: &std::collections::HashMap<String, String>,
) -> Option<DriverAttachment> {
    let (_, v) = status
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("attachmentState"))?;
    match v.trim() {
        "2" => Some(DriverAttachment::Here),
        "3" => Some(DriverAttachment::Available),
        "4" => Some(DriverAttachment::Elsewhere),
        _ => None,
    }
}

/// Converts every volume, or fails on the first bad one: a sidecar that reports a name the scheduler
/// could never have asked for is misbehaving, and a partial report would look like missing volumes.
fn volume_reports(vs: &[pb::VolumeReport]) -> Result<Vec<VolumeReport>, ConvertError> {
    vs.iter().map(volume_report).collect()
}

/// A report as the core takes it: a snapshot, or (with `delta`) the changes since the previous one.
#[derive(Debug)]
pub enum SidecarReport {
    Full(Report),
    Delta {
        report: Report,
        removed: Vec<VolumeName>,
    },
}

/// A snapshot or a delta report (see [`report`] for the snapshot's fields).
pub fn any_report(r: &pb::Report) -> Result<SidecarReport, ConvertError> {
    let report = report(r)?;
    if !r.delta {
        return Ok(SidecarReport::Full(report));
    }
    let removed = r
        .removed
        .iter()
        .map(|n| id("report.removed", VolumeName::new(n)))
        .collect::<Result<_, _>>()?;
    Ok(SidecarReport::Delta { report, removed })
}

pub fn report(r: &pb::Report) -> Result<Report, ConvertError> {
    let driver = r.driver.clone().unwrap_or_default();
    Ok(Report {
        sequence: r.sequence,
        driver_healthy: driver.healthy,
        driver_latency_micros: driver.latency_micros,
        driver_error: non_empty(&driver.error),
        volumes: volume_reports(&r.volumes)?,
        attachments_used: r.attachments_used,
    })
}

pub fn command_result(c: &pb::CommandResult) -> Result<CommandResult, ConvertError> {
    Ok(CommandResult {
        command_id: c.command_id,
        ok: c.ok,
        error: non_empty(&c.error),
        volumes: volume_reports(&c.volumes)?,
        csr_pem: non_empty(&c.csr_pem),
    })
}

// ---------------------------------------------------------------------------------------------------------
// core → sidecar, core → Mesos

/// The message for a sidecar command; `None` for `InstallIdentity`, which needs the CSR signed first
/// ([`install_identity`]).
pub fn sidecar_command(c: &SidecarCommand) -> Option<pb::SchedulerMessage> {
    use pb::scheduler_message::Body;
    let names = |vs: &[VolumeName]| vs.iter().map(|v| v.as_str().to_owned()).collect::<Vec<_>>();
    let body = match c {
        SidecarCommand::Welcome {
            report_interval_ms,
            watch_names,
        } => Body::Welcome(pb::Welcome {
            report_interval_ms: *report_interval_ms,
            watch: watch_names.as_ref().map(|w| pb::VolumeSelector {
                names: names(w),
                prefixes: Vec::new(),
            }),
        }),
        SidecarCommand::WatchDelta { reset, add, remove } => Body::WatchDelta(pb::WatchDelta {
            reset: *reset,
            add: add
                .iter()
                .map(|(v, urgent)| pb::ObservedVolume {
                    name: v.as_str().to_owned(),
                    urgent: *urgent,
                })
                .collect(),
            remove: names(remove),
        }),
        SidecarCommand::Prepare {
            command_id,
            node_id,
            volumes,
            create_missing,
            create_options,
            deadline_ms,
            owner,
            identity,
        } => Body::Prepare(pb::Prepare {
            command_id: *command_id,
            node_id: node_id.0,
            volumes: names(volumes),
            create_missing: *create_missing,
            create_options: create_options
                .iter()
                .cloned()
                .collect::<BTreeMap<_, _>>()
                .into_iter()
                .collect(),
            deadline_ms: *deadline_ms,
            owner: owner.map(volume_owner),
            identity: identity.as_ref().map(identity_request),
        }),
        // The shell signs the CSR first (`Shell::sidecar`): it alone holds the cluster CA.
        SidecarCommand::InstallIdentity { .. } => return None,
        SidecarCommand::Release {
            command_id,
            volumes,
        } => Body::Release(pb::Release {
            command_id: *command_id,
            volumes: names(volumes),
        }),
    };
    Some(pb::SchedulerMessage { body: Some(body) })
}

fn volume_owner(o: tether_core::config::VolumeOwner) -> pb::VolumeOwner {
    pb::VolumeOwner {
        uid: o.uid,
        gid: o.gid,
        mode: o.mode,
    }
}

fn identity_request(i: &tether_core::domain::IdentityRequest) -> pb::IdentityRequest {
    pb::IdentityRequest {
        volume: i.volume.as_str().to_owned(),
        dir: i.dir.clone(),
        common_name: i.common_name.clone(),
        dns_names: i.dns_names.clone(),
        ip_addresses: i.ip_addresses.clone(),
    }
}

/// The `InstallIdentity` message: the signed certificate, the cluster CA and the password beside the key
/// of the Prepare `ids.1` (`ids.0` is its own command id).
pub fn install_identity(
    (command_id, prepare_command_id): (u64, u64),
    node_id: NodeId,
    identity: &tether_core::domain::IdentityRequest,
    owner: Option<tether_core::config::VolumeOwner>,
    certificate_pem: String,
    ca_pem: String,
    password: String,
) -> pb::SchedulerMessage {
    pb::SchedulerMessage {
        body: Some(pb::scheduler_message::Body::InstallIdentity(
            pb::InstallIdentity {
                command_id,
                node_id: node_id.0,
                volume: identity.volume.as_str().to_owned(),
                dir: identity.dir.clone(),
                certificate_pem,
                ca_pem,
                password,
                owner: owner.map(volume_owner),
                prepare_command_id,
            },
        )),
    }
}

/// The core's offer ids as the Mesos API's.
fn mesos_offer_ids(ids: &[OfferId]) -> Vec<model::OfferID> {
    ids.iter()
        .map(|o| model::OfferID::new(o.as_str()))
        .collect()
}

/// The Mesos call for a core command. `roles` scopes SUPPRESS and REVIVE to the framework's role (the
/// real field is `roles`, a list; the docs' `role` would be ignored and revive every role).
pub fn mesos_call(c: &MesosCommand, options: &TaskOptions, roles: &[String]) -> Call {
    match c {
        MesosCommand::Accept {
            offer_id,
            launch,
            refuse_seconds,
            ..
        } => Call::accept(
            vec![model::OfferID::new(offer_id.as_str())],
            vec![Operation::launch(vec![task_info(launch, options)])],
            Some(Filters {
                refuse_seconds: Some(*refuse_seconds),
            }),
        ),
        MesosCommand::Decline {
            offer_ids,
            refuse_seconds,
        } => Call::decline(mesos_offer_ids(offer_ids), Some(*refuse_seconds)),
        MesosCommand::Acknowledge {
            agent_id,
            task_id,
            uuid,
        } => Call::acknowledge(
            model::AgentID::new(agent_id.as_str()),
            model::TaskID::new(task_id.as_str()),
            uuid.clone(),
        ),
        MesosCommand::Reconcile { tasks } => Call::reconcile(
            tasks
                .iter()
                .map(|(t, a)| {
                    (
                        model::TaskID::new(t.as_str()),
                        a.as_ref().map(|a| model::AgentID::new(a.as_str())),
                    )
                })
                .collect(),
        ),
        // Every kill carries the grace period, as the TaskInfo's kill policy does: Elasticsearch gets
        // SIGTERM and time to leave the cluster cleanly, whoever asks for the kill.
        MesosCommand::Kill { task_id, agent_id } => Call::kill(
            model::TaskID::new(task_id.as_str()),
            agent_id.as_ref().map(|a| model::AgentID::new(a.as_str())),
            Some(options.kill_grace_ns()),
        ),
        MesosCommand::AcceptInverseOffers {
            inverse_offer_ids,
            refuse_seconds,
        } => Call::accept_inverse_offers(
            mesos_offer_ids(inverse_offer_ids),
            Some(Filters {
                refuse_seconds: Some(*refuse_seconds),
            }),
        ),
        MesosCommand::DeclineInverseOffers {
            inverse_offer_ids,
            refuse_seconds,
        } => Call::decline_inverse_offers(
            mesos_offer_ids(inverse_offer_ids),
            Some(Filters {
                refuse_seconds: Some(*refuse_seconds),
            }),
        ),
        MesosCommand::Suppress => Call::suppress(roles.to_vec()),
        MesosCommand::Revive => Call::revive(roles.to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire_offer(json: serde_json::Value) -> model::Offer {
        serde_json::from_value(json).expect("offer json")
    }

    #[test]
    fn offers_sum_scalars_and_keep_zone_ports_attributes_role() {
        let o = wire_offer(serde_json::json!({
            "id": {"value": "M-O1"}, "framework_id": {"value": "F"}, "agent_id": {"value": "M-S1"},
            "hostname": "agent-1",
            "domain": {"fault_domain": {"region": {"name": "r"}, "zone": {"name": "z1"}}},
            "allocation_info": {"role": "elasticsearch"},
            "resources": [
                {"name": "cpus", "type": "SCALAR", "scalar": {"value": 2.0}},
                {"name": "cpus", "type": "SCALAR", "scalar": {"value": 1.5}, "role": "elasticsearch"},
                {"name": "mem", "type": "SCALAR", "scalar": {"value": 4096.0}},
                {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": 31000, "end": 31005}]}}
            ],
            "attributes": [{"name": "rack", "type": "TEXT", "text": {"value": "r1"}}]
        }));
        let d = offer(&o, &Clock::start()).expect("valid");
        assert_eq!((d.cpus, d.mem_mb, d.disk_mb), (3.5, 4096.0, 0.0));
        assert_eq!(d.zone.as_deref(), Some("z1"));
        assert_eq!(d.role, "elasticsearch");
        assert_eq!(d.two_ports(), Some((31000, 31001)));
        assert_eq!(d.attribute("rack").as_deref(), Some("r1"));
    }

    /// Reserved parts are kept with their reservation in the post-refinement form the master upgrades
    /// both forms to: `role` alone is STATIC, `role` with `reservation` DYNAMIC, `reservations` as given;
    /// a disk with a DiskInfo is not counted (a task cannot take part of it).
    #[test]
    fn offers_keep_reserved_parts_with_their_reservation() {
        use tether_core::domain::{Reservation, ResourceAmount, ResourcePart};
        let o = wire_offer(serde_json::json!({
            "id": {"value": "M-O1"}, "framework_id": {"value": "F"}, "agent_id": {"value": "M-S1"},
            "hostname": "agent-1",
            "resources": [
                {"name": "cpus", "type": "SCALAR", "scalar": {"value": 2.0}, "role": "*"},
                {"name": "cpus", "type": "SCALAR", "scalar": {"value": 1.5}, "role": "es",
                 "reservation": {"principal": "ops", "labels": {"labels": [{"key": "k", "value": "v"}]}}},
                {"name": "mem", "type": "SCALAR", "scalar": {"value": 1024.0}, "role": "es"},
                {"name": "mem", "type": "SCALAR", "scalar": {"value": 512.0},
                 "reservations": [{"type": "DYNAMIC", "role": "es", "principal": "p"}]},
                {"name": "disk", "type": "SCALAR", "scalar": {"value": 9000.0}, "role": "*",
                 "disk": {"source": {"type": "MOUNT", "mount": {"root": "/mnt/d1"}}}},
                {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": 9200, "end": 9300}]}, "role": "es"}
            ]
        }));
        let d = offer(&o, &Clock::start()).expect("valid");
        assert_eq!((d.cpus, d.mem_mb, d.disk_mb), (3.5, 1536.0, 0.0));
        let r =
            |dynamic, principal: Option<&str>, labels: Option<Vec<(String, Option<String>)>>| {
                vec![Reservation {
                    dynamic,
                    role: "es".into(),
                    principal: principal.map(str::to_owned),
                    labels,
                }]
            };
        assert_eq!(
            d.reserved,
            vec![
                ResourcePart {
                    name: "cpus".into(),
                    reservations: r(
                        true,
                        Some("ops"),
                        Some(vec![("k".into(), Some("v".into()))])
                    ),
                    amount: ResourceAmount::Scalar(1.5),
                },
                ResourcePart {
                    name: "mem".into(),
                    reservations: r(false, None, None),
                    amount: ResourceAmount::Scalar(1024.0),
                },
                ResourcePart {
                    name: "mem".into(),
                    reservations: r(true, Some("p"), None),
                    amount: ResourceAmount::Scalar(512.0),
                },
                ResourcePart {
                    name: "ports".into(),
                    reservations: r(false, None, None),
                    amount: ResourceAmount::Ranges(vec![PortRange {
                        begin: 9200,
                        end: 9300
                    }]),
                },
            ]
        );
    }

    #[test]
    fn bad_offers_are_refused_with_the_field() {
        let o = wire_offer(serde_json::json!({
            "id": {"value": "M-O1"}, "framework_id": {"value": "F"}, "agent_id": {"value": "a/b"},
            "hostname": "agent-1"
        }));
        assert!(
            offer(&o, &Clock::start())
                .expect_err("bad agent id")
                .to_string()
                .starts_with("offer.agent_id")
        );
        let o = wire_offer(serde_json::json!({
            "id": {"value": "M-O1"}, "framework_id": {"value": "F"}, "agent_id": {"value": "S1"},
            "hostname": "agent-1",
            "resources": [{"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": 9, "end": 3}]}}]
        }));
        assert!(offer(&o, &Clock::start()).is_err());
    }

    #[test]
    fn statuses_keep_reason_names_and_uuids_verbatim() {
        let s: model::TaskStatus = serde_json::from_value(serde_json::json!({
            "task_id": {"value": "elasticsearch-1.1"}, "state": "TASK_LOST", "source": "SOURCE_MASTER",
            "reason": "REASON_AGENT_REMOVED", "agent_id": {"value": "S1"}, "uuid": "2vjUX1JpSmWJ0AnQ4zW3UA=="
        }))
        .expect("status json");
        let d = status(&s).expect("valid");
        assert_eq!(d.state, TaskState::Lost);
        assert_eq!(d.reason, Some(TaskReason::AgentRemoved));
        assert_eq!(
            d.reason.map(TaskReason::as_mesos),
            Some("REASON_AGENT_REMOVED")
        );
        assert_eq!(d.uuid.as_deref(), Some("2vjUX1JpSmWJ0AnQ4zW3UA=="));
        assert_eq!(d.source, Some(StatusSource::Master));
    }

    #[test]
    fn every_mesos_reason_keeps_its_wire_name() {
        let names = [
            "REASON_COMMAND_EXECUTOR_FAILED",
            "REASON_CONTAINER_LAUNCH_FAILED",
            "REASON_CONTAINER_LIMITATION",
            "REASON_CONTAINER_LIMITATION_DISK",
            "REASON_CONTAINER_LIMITATION_MEMORY",
            "REASON_CONTAINER_PREEMPTED",
            "REASON_EXECUTOR_TERMINATED",
            "REASON_EXECUTOR_UNREGISTERED",
            "REASON_FRAMEWORK_REMOVED",
            "REASON_INVALID_OFFERS",
            "REASON_MASTER_DISCONNECTED",
            "REASON_RECONCILIATION",
            "REASON_AGENT_DISCONNECTED",
            "REASON_AGENT_REMOVED",
            "REASON_AGENT_REMOVED_BY_OPERATOR",
            "REASON_AGENT_REREGISTERED",
            "REASON_AGENT_RESTARTED",
            "REASON_AGENT_UNKNOWN",
            "REASON_TASK_KILLED_DURING_LAUNCH",
            "REASON_TASK_CHECK_STATUS_UPDATED",
            "REASON_TASK_HEALTH_CHECK_STATUS_UPDATED",
            "REASON_TASK_GROUP_INVALID",
            "REASON_TASK_GROUP_UNAUTHORIZED",
            "REASON_TASK_INVALID",
            "REASON_TASK_UNAUTHORIZED",
            "REASON_TASK_UNKNOWN",
        ];
        for name in names {
            let wire: model::Reason =
                serde_json::from_value(serde_json::json!(name)).expect("a known reason");
            assert_ne!(wire, model::Reason::Unrecognized, "{name}");
            assert_eq!(reason(wire).as_mesos(), name);
        }
        let newer: model::Reason =
            serde_json::from_value(serde_json::json!("REASON_FROM_THE_FUTURE")).expect("parses");
        assert_eq!(reason(newer), TaskReason::Unrecognized);
    }

    #[test]
    fn sidecar_reports_with_bad_volume_names_are_refused() {
        let r = pb::Report {
            volumes: vec![pb::VolumeReport {
                name: "../etc".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(report(&r).is_err());
        let h = pb::Hello {
            hostname: "agent-1".into(),
            max_attachments: 0,
            ..Default::default()
        };
        assert_eq!(hello(&h).expect("valid").max_attachments, None);
    }

    #[test]
    fn suppress_and_revive_name_the_roles_field() {
        let roles = vec!["elasticsearch".to_owned()];
        let call = mesos_call(&MesosCommand::Revive, &TaskOptions::default(), &roles);
        let json = serde_json::to_value(&call).expect("json");
        assert_eq!(
            json["revive"]["roles"],
            serde_json::json!(["elasticsearch"])
        );
        assert!(json["revive"].get("role").is_none());
    }
}
