//! Serde models of the Mesos v1 scheduler `Call` and `Event` messages and the nested `mesos.v1` messages
//! Tether uses. Field names are the proto field names (snake_case), fields are declared in `.proto`
//! declaration order (the master writes JSON in that order, and so do we), enums travel as their names,
//! optional fields are skipped when unset, and `bytes` fields (uuids, data) are kept as the base64 string
//! received so that they can be echoed back verbatim. Unknown input fields are ignored, as the master does.

use serde::{Deserialize, Serialize};

macro_rules! id_type {
    ($($(#[$m:meta])* $name:ident),* $(,)?) => {$(
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub struct $name {
            pub value: String,
        }
        impl $name {
            pub fn new(value: impl Into<String>) -> Self {
                Self { value: value.into() }
            }
        }
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.value)
            }
        }
    )*};
}

id_type!(
    /// `mesos.v1.FrameworkID`.
    FrameworkID,
    /// `mesos.v1.OfferID` (also used for inverse offers).
    OfferID,
    /// `mesos.v1.AgentID`.
    AgentID,
    /// `mesos.v1.TaskID`.
    TaskID,
    /// `mesos.v1.ExecutorID`.
    ExecutorID,
    /// `mesos.v1.ContainerID` (only `value` is modelled).
    ContainerID,
);

fn is_empty<T>(v: &[T]) -> bool {
    v.is_empty()
}

// ---------------------------------------------------------------------------------------------------------
// Enums. Each has a catch-all so an enum value added by a newer master never fails a whole event.

/// `scheduler.Call.Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CallType {
    Subscribe,
    Teardown,
    Accept,
    Decline,
    AcceptInverseOffers,
    DeclineInverseOffers,
    Revive,
    Kill,
    Shutdown,
    Acknowledge,
    Reconcile,
    Message,
    Request,
    Suppress,
    #[serde(other)]
    Unknown,
}

/// `scheduler.Event.Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventType {
    Subscribed,
    Offers,
    InverseOffers,
    Rescind,
    RescindInverseOffer,
    Update,
    UpdateOperationStatus,
    Message,
    Failure,
    Error,
    Heartbeat,
    #[serde(other)]
    Unknown,
}

/// `mesos.v1.TaskState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TaskState {
    #[serde(rename = "TASK_STAGING")]
    Staging,
    #[serde(rename = "TASK_STARTING")]
    Starting,
    #[serde(rename = "TASK_RUNNING")]
    Running,
    #[serde(rename = "TASK_KILLING")]
    Killing,
    #[serde(rename = "TASK_FINISHED")]
    Finished,
    #[serde(rename = "TASK_FAILED")]
    Failed,
    #[serde(rename = "TASK_KILLED")]
    Killed,
    #[serde(rename = "TASK_ERROR")]
    Error,
    #[serde(rename = "TASK_LOST")]
    Lost,
    #[serde(rename = "TASK_DROPPED")]
    Dropped,
    #[serde(rename = "TASK_UNREACHABLE")]
    Unreachable,
    #[serde(rename = "TASK_GONE")]
    Gone,
    #[serde(rename = "TASK_GONE_BY_OPERATOR")]
    GoneByOperator,
    #[serde(rename = "TASK_UNKNOWN", other)]
    Unknown,
}

impl TaskState {
    /// Terminal states: the task will never run again. LOST is listed because, for Tether (always
    /// PARTITION_AWARE), the master only sends it where a non-aware framework would get GONE/DROPPED.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Finished
                | TaskState::Failed
                | TaskState::Killed
                | TaskState::Error
                | TaskState::Lost
                | TaskState::Dropped
                | TaskState::Gone
                | TaskState::GoneByOperator
        )
    }
}

/// `TaskStatus.Source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Source {
    SourceMaster,
    SourceAgent,
    SourceExecutor,
    #[serde(other)]
    Unrecognized,
}

/// `TaskStatus.Reason` (the subset Tether and the emulator use; anything else maps to `Unrecognized`).
/// `REASON_AGENT_REREGISTERED` exists upstream since 1.5 (not in Debian's older copy of the protos).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Reason {
    ReasonCommandExecutorFailed,
    ReasonContainerLaunchFailed,
    ReasonContainerLimitation,
    ReasonContainerLimitationDisk,
    ReasonContainerLimitationMemory,
    ReasonContainerPreempted,
    ReasonExecutorTerminated,
    ReasonExecutorUnregistered,
    ReasonFrameworkRemoved,
    ReasonInvalidOffers,
    ReasonMasterDisconnected,
    ReasonReconciliation,
    ReasonAgentDisconnected,
    /// The agent is being drained (`DRAIN_AGENT`, Mesos 1.9+): its tasks are killed by the master.
    ReasonAgentDraining,
    ReasonAgentRemoved,
    ReasonAgentRemovedByOperator,
    ReasonAgentReregistered,
    ReasonAgentRestarted,
    ReasonAgentUnknown,
    ReasonTaskKilledDuringLaunch,
    ReasonTaskCheckStatusUpdated,
    ReasonTaskHealthCheckStatusUpdated,
    ReasonTaskGroupInvalid,
    ReasonTaskGroupUnauthorized,
    ReasonTaskInvalid,
    ReasonTaskUnauthorized,
    ReasonTaskUnknown,
    #[serde(other)]
    Unrecognized,
}

/// `FrameworkInfo.Capability.Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CapabilityType {
    RevocableResources,
    TaskKillingState,
    GpuResources,
    SharedResources,
    PartitionAware,
    MultiRole,
    ReservationRefinement,
    RegionAware,
    #[serde(other)]
    Unknown,
}

/// `Value.Type` (resources use SCALAR, RANGES, SET; attributes also TEXT).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ValueType {
    Scalar,
    Ranges,
    Set,
    Text,
}

/// `Offer.Operation.Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OperationType {
    Launch,
    LaunchGroup,
    Reserve,
    Unreserve,
    Create,
    Destroy,
    #[serde(other)]
    Unknown,
}

/// `ContainerInfo.Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ContainerType {
    Docker,
    Mesos,
}

/// `ContainerInfo.DockerInfo.Network`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DockerNetwork {
    Host,
    Bridge,
    None,
    User,
}

/// `Image.Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ImageType {
    Appc,
    Docker,
}

/// `Volume.Mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum VolumeMode {
    Rw,
    Ro,
}

/// `Volume.Source.Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum VolumeSourceType {
    DockerVolume,
    HostPath,
    SandboxPath,
    Secret,
    CsiVolume,
    #[serde(other)]
    Unknown,
}

/// `HealthCheck.Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HealthCheckType {
    Command,
    Http,
    Tcp,
    #[serde(other)]
    Unknown,
}

/// `DiscoveryInfo.Visibility`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Visibility {
    Framework,
    Cluster,
    External,
}

/// `Environment.Variable.Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum VariableType {
    Value,
    Secret,
    #[serde(other)]
    Unknown,
}

/// `ExecutorInfo.Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ExecutorType {
    Default,
    Custom,
    #[serde(other)]
    Unknown,
}

// ---------------------------------------------------------------------------------------------------------
// Small shared messages.

/// `TimeInfo` / `DurationInfo`: 64-bit nanoseconds, written as a JSON number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nanos {
    pub nanoseconds: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Label {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Labels {
    #[serde(default, skip_serializing_if = "is_empty")]
    pub labels: Vec<Label>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Parameter {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Parameters {
    #[serde(default, skip_serializing_if = "is_empty")]
    pub parameter: Vec<Parameter>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Address {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    pub port: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Url {
    pub scheme: String,
    pub address: Address,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Name {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultDomain {
    pub region: Name,
    pub zone: Name,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct DomainInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault_domain: Option<FaultDomain>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MasterInfo {
    pub id: String,
    pub ip: u32,
    pub port: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Address>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<DomainInfo>,
}

// ---------------------------------------------------------------------------------------------------------
// Values, resources, attributes.

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Scalar {
    pub value: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    pub begin: u64,
    pub end: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Ranges {
    #[serde(default, skip_serializing_if = "is_empty")]
    pub range: Vec<Range>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Set {
    #[serde(default, skip_serializing_if = "is_empty")]
    pub item: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Text {
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AllocationInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Root {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskSource {
    #[serde(rename = "type")]
    pub source_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<Root>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount: Option<Root>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct DiskInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<DiskSource>,
}

/// `mesos.v1.Resource` (SCALAR, RANGES or SET).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resource {
    pub name: String,
    #[serde(rename = "type")]
    pub value_type: ValueType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scalar: Option<Scalar>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ranges: Option<Ranges>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<Set>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation_info: Option<AllocationInfo>,
    /// The pre-refinement form of a dynamic reservation (with `role`): principal and labels only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation: Option<ReservationInfo>,
    /// The post-refinement form (RESERVATION_REFINEMENT): the stack, outermost first.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub reservations: Vec<ReservationInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<DiskInfo>,
}

/// `Resource.ReservationInfo.Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReservationType {
    Static,
    Dynamic,
    #[serde(other)]
    Unknown,
}

/// `Resource.ReservationInfo`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ReservationInfo {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub reservation_type: Option<ReservationType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Labels>,
}

impl Resource {
    pub fn scalar(name: impl Into<String>, value: f64) -> Self {
        Resource {
            name: name.into(),
            value_type: ValueType::Scalar,
            scalar: Some(Scalar { value }),
            ranges: None,
            set: None,
            role: None,
            allocation_info: None,
            reservation: None,
            reservations: Vec::new(),
            disk: None,
        }
    }

    pub fn ranges(name: impl Into<String>, ranges: Vec<(u64, u64)>) -> Self {
        Resource {
            name: name.into(),
            value_type: ValueType::Ranges,
            scalar: None,
            ranges: Some(Ranges {
                range: ranges
                    .into_iter()
                    .map(|(begin, end)| Range { begin, end })
                    .collect(),
            }),
            set: None,
            role: None,
            allocation_info: None,
            reservation: None,
            reservations: Vec::new(),
            disk: None,
        }
    }

    pub fn set(name: impl Into<String>, items: Vec<String>) -> Self {
        Resource {
            name: name.into(),
            value_type: ValueType::Set,
            scalar: None,
            ranges: None,
            set: Some(Set { item: items }),
            role: None,
            allocation_info: None,
            reservation: None,
            reservations: Vec::new(),
            disk: None,
        }
    }

    /// Marks the resource as allocated to `role` (MULTI_ROLE frameworks).
    pub fn with_allocation_role(mut self, role: impl Into<String>) -> Self {
        self.allocation_info = Some(AllocationInfo {
            role: Some(role.into()),
        });
        self
    }
}

/// `mesos.v1.Attribute`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attribute {
    pub name: String,
    #[serde(rename = "type")]
    pub value_type: ValueType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scalar: Option<Scalar>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ranges: Option<Ranges>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<Set>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<Text>,
}

impl Attribute {
    pub fn text(name: impl Into<String>, value: impl Into<String>) -> Self {
        Attribute {
            name: name.into(),
            value_type: ValueType::Text,
            scalar: None,
            ranges: None,
            set: None,
            text: Some(Text {
                value: value.into(),
            }),
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Framework and offers.

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capability {
    #[serde(rename = "type")]
    pub capability_type: CapabilityType,
}

/// `mesos.v1.FrameworkInfo`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameworkInfo {
    pub user: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<FrameworkID>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover_timeout: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<bool>,
    #[serde(default, skip_serializing_if = "is_empty")]
    pub roles: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webui_url: Option<String>,
    #[serde(default, skip_serializing_if = "is_empty")]
    pub capabilities: Vec<Capability>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Labels>,
}

impl FrameworkInfo {
    pub fn has_capability(&self, c: CapabilityType) -> bool {
        self.capabilities.iter().any(|x| x.capability_type == c)
    }
}

/// `mesos.v1.Offer`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Offer {
    pub id: OfferID,
    pub framework_id: FrameworkID,
    pub agent_id: AgentID,
    pub hostname: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<Url>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<DomainInfo>,
    #[serde(default, skip_serializing_if = "is_empty")]
    pub resources: Vec<Resource>,
    #[serde(default, skip_serializing_if = "is_empty")]
    pub attributes: Vec<Attribute>,
    #[serde(default, skip_serializing_if = "is_empty")]
    pub executor_ids: Vec<ExecutorID>,
    /// Set while the agent's machine is scheduled for maintenance (`mesos.proto` field 9).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailability: Option<Unavailability>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation_info: Option<AllocationInfo>,
}

/// `Offer.Operation` (LAUNCH and LAUNCH_GROUP are modelled; other types are only named).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Operation {
    #[serde(rename = "type")]
    pub operation_type: OperationType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch: Option<Launch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch_group: Option<LaunchGroup>,
}

impl Operation {
    pub fn launch(task_infos: Vec<TaskInfo>) -> Self {
        Operation {
            operation_type: OperationType::Launch,
            launch: Some(Launch { task_infos }),
            launch_group: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Launch {
    #[serde(default, skip_serializing_if = "is_empty")]
    pub task_infos: Vec<TaskInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LaunchGroup {
    pub executor: ExecutorInfo,
    pub task_group: TaskGroupInfo,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TaskGroupInfo {
    #[serde(default, skip_serializing_if = "is_empty")]
    pub tasks: Vec<TaskInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutorInfo {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub executor_type: Option<ExecutorType>,
    pub executor_id: ExecutorID,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub framework_id: Option<FrameworkID>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerInfo>,
    #[serde(default, skip_serializing_if = "is_empty")]
    pub resources: Vec<Resource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `mesos.v1.Filters`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct Filters {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refuse_seconds: Option<f64>,
}

// ---------------------------------------------------------------------------------------------------------
// Tasks.

/// `mesos.v1.TaskInfo`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskInfo {
    pub name: String,
    pub task_id: TaskID,
    pub agent_id: AgentID,
    #[serde(default, skip_serializing_if = "is_empty")]
    pub resources: Vec<Resource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor: Option<ExecutorInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill_policy: Option<KillPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Labels>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery: Option<DiscoveryInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Uri {
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executable: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extract: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_file: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Variable {
    pub name: String,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub variable_type: Option<VariableType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

impl Variable {
    pub fn value(name: impl Into<String>, value: impl Into<String>) -> Self {
        Variable {
            name: name.into(),
            variable_type: Some(VariableType::Value),
            value: Some(value.into()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Environment {
    #[serde(default, skip_serializing_if = "is_empty")]
    pub variables: Vec<Variable>,
}

/// `mesos.v1.CommandInfo`. `shell` defaults to true in the proto when unset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CommandInfo {
    #[serde(default, skip_serializing_if = "is_empty")]
    pub uris: Vec<Uri>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<Environment>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "is_empty")]
    pub arguments: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortMapping {
    pub host_port: u32,
    pub container_port: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DockerInfo {
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<DockerNetwork>,
    #[serde(default, skip_serializing_if = "is_empty")]
    pub port_mappings: Vec<PortMapping>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privileged: Option<bool>,
    #[serde(default, skip_serializing_if = "is_empty")]
    pub parameters: Vec<Parameter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_pull_image: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerImage {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    #[serde(rename = "type")]
    pub image_type: ImageType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<DockerImage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct MesosInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<Image>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DockerVolume {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver_options: Option<Parameters>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeSource {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub source_type: Option<VolumeSourceType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_volume: Option<DockerVolume>,
}

/// `mesos.v1.Volume`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Volume {
    pub mode: VolumeMode,
    pub container_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<Image>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<VolumeSource>,
}

impl Volume {
    /// A `DOCKER_VOLUME` volume.
    pub fn docker_volume(
        container_path: impl Into<String>,
        mode: VolumeMode,
        driver: impl Into<String>,
        name: impl Into<String>,
        driver_options: Vec<Parameter>,
    ) -> Self {
        Volume {
            mode,
            container_path: container_path.into(),
            host_path: None,
            image: None,
            source: Some(VolumeSource {
                source_type: Some(VolumeSourceType::DockerVolume),
                docker_volume: Some(DockerVolume {
                    driver: Some(driver.into()),
                    name: name.into(),
                    driver_options: (!driver_options.is_empty()).then_some(Parameters {
                        parameter: driver_options,
                    }),
                }),
            }),
        }
    }
}

/// `mesos.v1.ContainerInfo`. `type` is required (leaving it out gets the whole call rejected).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerInfo {
    #[serde(rename = "type")]
    pub container_type: ContainerType,
    #[serde(default, skip_serializing_if = "is_empty")]
    pub volumes: Vec<Volume>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<DockerInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesos: Option<MesosInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rlimit_info: Option<RLimitInfo>,
}

/// `mesos.v1.RLimitInfo`: POSIX resource limits of the container (Mesos containerizer, `posix/rlimits`
/// isolator).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RLimitInfo {
    #[serde(default, skip_serializing_if = "is_empty")]
    pub rlimits: Vec<RLimit>,
}

/// `mesos.v1.RLimitInfo.RLimit`; `type` is an enum such as `RLMT_NOFILE`. Unset `hard` and `soft`
/// mean unlimited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RLimit {
    #[serde(rename = "type")]
    pub limit_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hard: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpCheckInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    pub port: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "is_empty")]
    pub statuses: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TcpCheckInfo {
    pub port: u32,
}

/// `mesos.v1.HealthCheck` (HTTP and TCP).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct HealthCheck {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_failures: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_period_seconds: Option<f64>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub check_type: Option<HealthCheckType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpCheckInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpCheckInfo>,
}

/// `mesos.v1.KillPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct KillPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_period: Option<Nanos>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Port {
    pub number: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visibility: Option<Visibility>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Labels>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Ports {
    #[serde(default, skip_serializing_if = "is_empty")]
    pub ports: Vec<Port>,
}

/// `mesos.v1.DiscoveryInfo`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiscoveryInfo {
    pub visibility: Visibility,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Ports>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Labels>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct IpAddress {
    /// `IPv4` | `IPv6` (default `IPv4`, so the master always writes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct NetworkInfo {
    #[serde(default, skip_serializing_if = "is_empty")]
    pub ip_addresses: Vec<IpAddress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ContainerStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<ContainerID>,
    #[serde(default, skip_serializing_if = "is_empty")]
    pub network_infos: Vec<NetworkInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor_pid: Option<u32>,
}

/// `mesos.v1.TaskStatus`. `uuid` is present only on updates that must be acknowledged; it is kept as the
/// base64 string received so that ACKNOWLEDGE echoes it verbatim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskStatus {
    pub task_id: TaskID,
    pub state: TaskState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<AgentID>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor_id: Option<ExecutorID>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Labels>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_status: Option<ContainerStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreachable_time: Option<Nanos>,
}

impl TaskStatus {
    pub fn new(task_id: TaskID, state: TaskState) -> Self {
        TaskStatus {
            task_id,
            state,
            message: None,
            source: None,
            reason: None,
            data: None,
            agent_id: None,
            executor_id: None,
            timestamp: None,
            uuid: None,
            healthy: None,
            labels: None,
            container_status: None,
            unreachable_time: None,
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Calls.

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subscribe {
    pub framework_info: FrameworkInfo,
    #[serde(default, skip_serializing_if = "is_empty")]
    pub suppressed_roles: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Accept {
    #[serde(default, skip_serializing_if = "is_empty")]
    pub offer_ids: Vec<OfferID>,
    #[serde(default, skip_serializing_if = "is_empty")]
    pub operations: Vec<Operation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<Filters>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Decline {
    #[serde(default, skip_serializing_if = "is_empty")]
    pub offer_ids: Vec<OfferID>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<Filters>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct InverseOffersReply {
    #[serde(default, skip_serializing_if = "is_empty")]
    pub inverse_offer_ids: Vec<OfferID>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<Filters>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Roles {
    #[serde(default, skip_serializing_if = "is_empty")]
    pub roles: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Kill {
    pub task_id: TaskID,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<AgentID>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill_policy: Option<KillPolicy>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shutdown {
    pub executor_id: ExecutorID,
    pub agent_id: AgentID,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Acknowledge {
    pub agent_id: AgentID,
    pub task_id: TaskID,
    /// base64 of the 16-byte uuid, exactly as received in `TaskStatus.uuid`.
    pub uuid: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReconcileTask {
    pub task_id: TaskID,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<AgentID>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Reconcile {
    #[serde(default, skip_serializing_if = "is_empty")]
    pub tasks: Vec<ReconcileTask>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageCall {
    pub agent_id: AgentID,
    pub executor_id: ExecutorID,
    pub data: String,
}

/// `scheduler.Call`. Build one with the constructors (`Call::accept`, `Call::decline`, …); the client fills
/// in `framework_id` for every call but SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Call {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub framework_id: Option<FrameworkID>,
    #[serde(rename = "type")]
    pub call_type: CallType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscribe: Option<Subscribe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accept: Option<Accept>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decline: Option<Decline>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accept_inverse_offers: Option<InverseOffersReply>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decline_inverse_offers: Option<InverseOffersReply>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revive: Option<Roles>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill: Option<Kill>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shutdown: Option<Shutdown>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledge: Option<Acknowledge>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconcile: Option<Reconcile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<MessageCall>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppress: Option<Roles>,
}

impl Call {
    fn bare(call_type: CallType) -> Self {
        Call {
            framework_id: None,
            call_type,
            subscribe: None,
            accept: None,
            decline: None,
            accept_inverse_offers: None,
            decline_inverse_offers: None,
            revive: None,
            kill: None,
            shutdown: None,
            acknowledge: None,
            reconcile: None,
            message: None,
            suppress: None,
        }
    }

    /// SUBSCRIBE. With `framework_info.id` set (a re-subscription) the id is also put at the top level,
    /// because the master requires both to match.
    pub fn subscribe(framework_info: FrameworkInfo, suppressed_roles: Vec<String>) -> Self {
        let mut c = Call::bare(CallType::Subscribe);
        c.framework_id = framework_info.id.clone();
        c.subscribe = Some(Subscribe {
            framework_info,
            suppressed_roles,
        });
        c
    }
    pub fn teardown() -> Self {
        Call::bare(CallType::Teardown)
    }
    pub fn accept(
        offer_ids: Vec<OfferID>,
        operations: Vec<Operation>,
        filters: Option<Filters>,
    ) -> Self {
        let mut c = Call::bare(CallType::Accept);
        c.accept = Some(Accept {
            offer_ids,
            operations,
            filters,
        });
        c
    }
    pub fn decline(offer_ids: Vec<OfferID>, refuse_seconds: Option<f64>) -> Self {
        let mut c = Call::bare(CallType::Decline);
        c.decline = Some(Decline {
            offer_ids,
            filters: refuse_seconds.map(|s| Filters {
                refuse_seconds: Some(s),
            }),
        });
        c
    }
    pub fn accept_inverse_offers(ids: Vec<OfferID>, filters: Option<Filters>) -> Self {
        let mut c = Call::bare(CallType::AcceptInverseOffers);
        c.accept_inverse_offers = Some(InverseOffersReply {
            inverse_offer_ids: ids,
            filters,
        });
        c
    }
    pub fn decline_inverse_offers(ids: Vec<OfferID>, filters: Option<Filters>) -> Self {
        let mut c = Call::bare(CallType::DeclineInverseOffers);
        c.decline_inverse_offers = Some(InverseOffersReply {
            inverse_offer_ids: ids,
            filters,
        });
        c
    }
    /// REVIVE; an empty list revives every role of the framework.
    pub fn revive(roles: Vec<String>) -> Self {
        let mut c = Call::bare(CallType::Revive);
        c.revive = Some(Roles { roles });
        c
    }
    /// SUPPRESS; an empty list suppresses every role of the framework.
    pub fn suppress(roles: Vec<String>) -> Self {
        let mut c = Call::bare(CallType::Suppress);
        c.suppress = Some(Roles { roles });
        c
    }
    pub fn kill(task_id: TaskID, agent_id: Option<AgentID>, grace_period_ns: Option<i64>) -> Self {
        let mut c = Call::bare(CallType::Kill);
        c.kill = Some(Kill {
            task_id,
            agent_id,
            kill_policy: grace_period_ns.map(|n| KillPolicy {
                grace_period: Some(Nanos { nanoseconds: n }),
            }),
        });
        c
    }
    pub fn shutdown(executor_id: ExecutorID, agent_id: AgentID) -> Self {
        let mut c = Call::bare(CallType::Shutdown);
        c.shutdown = Some(Shutdown {
            executor_id,
            agent_id,
        });
        c
    }
    /// ACKNOWLEDGE, echoing the uuid string exactly as received.
    pub fn acknowledge(agent_id: AgentID, task_id: TaskID, uuid: String) -> Self {
        let mut c = Call::bare(CallType::Acknowledge);
        c.acknowledge = Some(Acknowledge {
            agent_id,
            task_id,
            uuid,
        });
        c
    }
    /// ACKNOWLEDGE for a status that carries a uuid; `None` for master-generated updates, which must not be
    /// acknowledged.
    pub fn acknowledge_status(status: &TaskStatus) -> Option<Self> {
        let uuid = status.uuid.clone()?;
        let agent_id = status.agent_id.clone()?;
        Some(Call::acknowledge(agent_id, status.task_id.clone(), uuid))
    }
    /// RECONCILE; an empty list asks for implicit reconciliation.
    pub fn reconcile(tasks: Vec<(TaskID, Option<AgentID>)>) -> Self {
        let mut c = Call::bare(CallType::Reconcile);
        c.reconcile = Some(Reconcile {
            tasks: tasks
                .into_iter()
                .map(|(task_id, agent_id)| ReconcileTask { task_id, agent_id })
                .collect(),
        });
        c
    }
    pub fn message(agent_id: AgentID, executor_id: ExecutorID, data_base64: String) -> Self {
        let mut c = Call::bare(CallType::Message);
        c.message = Some(MessageCall {
            agent_id,
            executor_id,
            data: data_base64,
        });
        c
    }
}

// ---------------------------------------------------------------------------------------------------------
// Events.

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subscribed {
    pub framework_id: FrameworkID,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_interval_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_info: Option<MasterInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Offers {
    #[serde(default, skip_serializing_if = "is_empty")]
    pub offers: Vec<Offer>,
}

/// `mesos.v1.Unavailability`: `start` (`TimeInfo`, nanoseconds since the epoch) and, when finite, its
/// `duration` (`DurationInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unavailability {
    pub start: Nanos,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<Nanos>,
}

/// `mesos.v1.InverseOffer`: the master asks for an agent's resources back (maintenance). The real master
/// sends maintenance inverse offers with no `resources` (the whole agent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InverseOffer {
    pub id: OfferID,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<Url>,
    pub framework_id: FrameworkID,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<AgentID>,
    pub unavailability: Unavailability,
    #[serde(default, skip_serializing_if = "is_empty")]
    pub resources: Vec<Resource>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct InverseOffers {
    #[serde(default, skip_serializing_if = "is_empty")]
    pub inverse_offers: Vec<InverseOffer>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rescind {
    pub offer_id: OfferID,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RescindInverseOffer {
    pub inverse_offer_id: OfferID,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Update {
    pub status: TaskStatus,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageEvent {
    pub agent_id: AgentID,
    pub executor_id: ExecutorID,
    pub data: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Failure {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<AgentID>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor_id: Option<ExecutorID>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorEvent {
    pub message: String,
}

/// `scheduler.Event`. Operation updates are parsed (so they never break the stream) and otherwise
/// ignored by Tether.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    #[serde(rename = "type")]
    pub event_type: EventType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscribed: Option<Subscribed>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offers: Option<Offers>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inverse_offers: Option<InverseOffers>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rescind: Option<Rescind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rescind_inverse_offer: Option<RescindInverseOffer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<Update>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<MessageEvent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorEvent>,
}

impl Event {
    fn bare(event_type: EventType) -> Self {
        Event {
            event_type,
            subscribed: None,
            offers: None,
            inverse_offers: None,
            rescind: None,
            rescind_inverse_offer: None,
            update: None,
            message: None,
            failure: None,
            error: None,
        }
    }
    pub fn heartbeat() -> Self {
        Event::bare(EventType::Heartbeat)
    }
    pub fn subscribed(s: Subscribed) -> Self {
        let mut e = Event::bare(EventType::Subscribed);
        e.subscribed = Some(s);
        e
    }
    pub fn offers(offers: Vec<Offer>) -> Self {
        let mut e = Event::bare(EventType::Offers);
        e.offers = Some(Offers { offers });
        e
    }
    pub fn rescind(offer_id: OfferID) -> Self {
        let mut e = Event::bare(EventType::Rescind);
        e.rescind = Some(Rescind { offer_id });
        e
    }
    pub fn inverse_offers(inverse_offers: Vec<InverseOffer>) -> Self {
        let mut e = Event::bare(EventType::InverseOffers);
        e.inverse_offers = Some(InverseOffers { inverse_offers });
        e
    }
    pub fn rescind_inverse_offer(inverse_offer_id: OfferID) -> Self {
        let mut e = Event::bare(EventType::RescindInverseOffer);
        e.rescind_inverse_offer = Some(RescindInverseOffer { inverse_offer_id });
        e
    }
    pub fn update(status: TaskStatus) -> Self {
        let mut e = Event::bare(EventType::Update);
        e.update = Some(Update { status });
        e
    }
    pub fn failure(f: Failure) -> Self {
        let mut e = Event::bare(EventType::Failure);
        e.failure = Some(f);
        e
    }
    pub fn error(message: impl Into<String>) -> Self {
        let mut e = Event::bare(EventType::Error);
        e.error = Some(ErrorEvent {
            message: message.into(),
        });
        e
    }
    pub fn message(m: MessageEvent) -> Self {
        let mut e = Event::bare(EventType::Message);
        e.message = Some(m);
        e
    }
}

// ---------------------------------------------------------------------------------------------------------
// Maintenance (`mesos.v1.maintenance`, `mesos.v1.allocator`): the master's `/maintenance/schedule` and
// `/maintenance/status` documents.

/// `mesos.v1.MachineID`: a machine as the master knows its agents (host name, case-insensitive, and the
/// IP of the agent's pid; an omitted field is the empty string and must match too).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
pub struct MachineID {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
}

/// `mesos.v1.maintenance.Window`: machines that go down in the same `unavailability`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintenanceWindow {
    #[serde(default, skip_serializing_if = "is_empty")]
    pub machine_ids: Vec<MachineID>,
    pub unavailability: Unavailability,
}

/// `mesos.v1.maintenance.Schedule`, the body of `POST /maintenance/schedule` (an empty one cancels).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct MaintenanceSchedule {
    #[serde(default, skip_serializing_if = "is_empty")]
    pub windows: Vec<MaintenanceWindow>,
}

/// `mesos.v1.allocator.InverseOfferStatus.Status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InverseOfferStatusKind {
    Unknown,
    Accept,
    Decline,
    #[serde(other)]
    Unrecognized,
}

/// `mesos.v1.allocator.InverseOfferStatus`: a framework's latest answer to an inverse offer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InverseOfferStatus {
    pub status: InverseOfferStatusKind,
    pub framework_id: FrameworkID,
    pub timestamp: Nanos,
}

/// `ClusterStatus.DrainingMachine`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainingMachine {
    pub id: MachineID,
    #[serde(default, skip_serializing_if = "is_empty")]
    pub statuses: Vec<InverseOfferStatus>,
}

/// `mesos.v1.maintenance.ClusterStatus`, what `GET /maintenance/status` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ClusterStatus {
    #[serde(default, skip_serializing_if = "is_empty")]
    pub draining_machines: Vec<DrainingMachine>,
    #[serde(default, skip_serializing_if = "is_empty")]
    pub down_machines: Vec<MachineID>,
}

/// `mesos.v1.master.Call.Type`: the operator-API calls Tether makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OperatorCallType {
    /// An operator asserts an agent's machine is gone for good.
    MarkAgentGone,
}

/// `mesos.v1.master.Call.MarkAgentGone`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkAgentGone {
    pub agent_id: AgentID,
}

/// `mesos.v1.master.Call`, the operator API's call (`POST /api/v1`), with the fields Tether sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorCall {
    #[serde(rename = "type")]
    pub call_type: OperatorCallType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mark_agent_gone: Option<MarkAgentGone>,
}

impl OperatorCall {
    /// `MARK_AGENT_GONE` of `agent_id`.
    pub fn mark_agent_gone(agent_id: AgentID) -> Self {
        OperatorCall {
            call_type: OperatorCallType::MarkAgentGone,
            mark_agent_gone: Some(MarkAgentGone { agent_id }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mark_agent_gone_has_the_operator_api_shape() {
        let call = OperatorCall::mark_agent_gone(AgentID::new("M-S3"));
        assert_eq!(
            serde_json::to_value(&call).unwrap(),
            serde_json::json!({"type": "MARK_AGENT_GONE", "mark_agent_gone": {"agent_id": {"value": "M-S3"}}})
        );
    }

    /// Found by fuzzing (`fuzz/corpus/mesos_events/regression-float-round-trip`): serde_json's default
    /// float parser is off by an ulp for some large exponents, so an event written and read back changed.
    #[test]
    fn an_event_with_a_huge_timestamp_reads_back_as_written() {
        let text = r#"{"type":"UPDATE","update":{"status":{"task_id":{"value":"es-1.1"},"state":"TASK_KILLED","timestamp":1718000011111111111111111111111111111111111111111111111111111111111111111111111111111111100.5}}}"#;
        let event: Event = serde_json::from_str(text).unwrap();
        let again: Event = serde_json::from_slice(&serde_json::to_vec(&event).unwrap()).unwrap();
        assert_eq!(again, event);
        let written = serde_json::json!(1.7180000111111108e90).to_string();
        assert_eq!(
            written.parse::<serde_json::Value>().unwrap(),
            serde_json::json!(1.7180000111111108e90)
        );
    }

    #[test]
    fn offers_event_is_nested_and_unknown_fields_are_ignored() {
        let text = r#"{"type":"OFFERS","offers":{"offers":[{"id":{"value":"M-O1"},"framework_id":{"value":"F"},
            "agent_id":{"value":"M-S1"},"hostname":"h","future_field":{"x":1},
            "resources":[{"name":"cpus","type":"SCALAR","scalar":{"value":2.0},"role":"*"}]}]}}"#;
        let e: Event = serde_json::from_str(text).unwrap();
        let offers = e.offers.unwrap().offers;
        assert_eq!(offers[0].resources[0].scalar, Some(Scalar { value: 2.0 }));
        assert_eq!(offers[0].agent_id.value, "M-S1");
    }

    #[test]
    fn maintenance_events_and_offers_read_as_the_master_writes_them() {
        let text = r#"{"type":"INVERSE_OFFERS","inverse_offers":{"inverse_offers":[{"id":{"value":"M-O99"},
            "url":{"scheme":"http","address":{"hostname":"a3","ip":"10.0.0.3","port":5051},"path":"/slave(1)"},
            "framework_id":{"value":"FW-0000"},"agent_id":{"value":"M-S3"},
            "unavailability":{"start":{"nanoseconds":1718003600000000000},"duration":{"nanoseconds":3600000000000}}}]}}"#;
        let e: Event = serde_json::from_str(text).unwrap();
        let io = &e.inverse_offers.unwrap().inverse_offers[0];
        assert_eq!(io.agent_id, Some(AgentID::new("M-S3")));
        assert_eq!(
            io.unavailability.start.nanoseconds,
            1_718_003_600_000_000_000
        );
        assert_eq!(
            io.unavailability.duration,
            Some(Nanos {
                nanoseconds: 3_600_000_000_000
            })
        );
        let e: Event = serde_json::from_str(
            r#"{"type":"RESCIND_INVERSE_OFFER","rescind_inverse_offer":{"inverse_offer_id":{"value":"M-O99"}}}"#,
        )
        .unwrap();
        assert_eq!(
            e.rescind_inverse_offer.unwrap().inverse_offer_id.value,
            "M-O99"
        );
        let o: Offer = serde_json::from_str(
            r#"{"id":{"value":"M-O1"},"framework_id":{"value":"F"},"agent_id":{"value":"M-S3"},"hostname":"a3",
            "unavailability":{"start":{"nanoseconds":5}}}"#,
        )
        .unwrap();
        assert_eq!(o.unavailability.map(|u| u.start.nanoseconds), Some(5));
        // Written back in the proto's order: `unavailability` (9) before `allocation_info` (10).
        let mut o = serde_json::from_str::<Offer>(
            r#"{"id":{"value":"M-O1"},"framework_id":{"value":"F"},"agent_id":{"value":"M-S3"},"hostname":"a3"}"#,
        )
        .unwrap();
        o.unavailability = Some(Unavailability {
            start: Nanos { nanoseconds: 5 },
            duration: None,
        });
        o.allocation_info = Some(AllocationInfo {
            role: Some("r".into()),
        });
        let json = serde_json::to_string(&o).unwrap();
        assert!(
            json.find("unavailability") < json.find("allocation_info"),
            "{json}"
        );
    }

    #[test]
    fn unknown_event_type_and_reason_do_not_fail() {
        let e: Event =
            serde_json::from_str(r#"{"type":"SOMETHING_NEW","something_new":{}}"#).unwrap();
        assert_eq!(e.event_type, EventType::Unknown);
        let s: TaskStatus = serde_json::from_str(
            r#"{"task_id":{"value":"t"},"state":"TASK_RUNNING","reason":"REASON_NEW"}"#,
        )
        .unwrap();
        assert_eq!(s.reason, Some(Reason::Unrecognized));
    }

    #[test]
    fn acknowledge_echoes_uuid_verbatim() {
        let mut s = TaskStatus::new(TaskID::new("t"), TaskState::Running);
        s.agent_id = Some(AgentID::new("a"));
        s.uuid = Some("2vjUX1JpSmWJ0AnQ4zW3UA==".into());
        let c = Call::acknowledge_status(&s).unwrap();
        let text = serde_json::to_string(&c).unwrap();
        assert!(
            text.contains(r#""uuid":"2vjUX1JpSmWJ0AnQ4zW3UA==""#),
            "{text}"
        );
        s.uuid = None;
        assert!(Call::acknowledge_status(&s).is_none());
    }

    #[test]
    fn resubscribe_carries_id_in_both_places() {
        let fi = FrameworkInfo {
            user: "u".into(),
            name: "n".into(),
            id: Some(FrameworkID::new("F-0000")),
            failover_timeout: None,
            checkpoint: Some(true),
            roles: vec![],
            hostname: None,
            principal: None,
            webui_url: None,
            capabilities: vec![],
            labels: None,
        };
        let v = serde_json::to_value(Call::subscribe(fi, vec![])).unwrap();
        assert_eq!(v["framework_id"]["value"], "F-0000");
        assert_eq!(v["subscribe"]["framework_info"]["id"]["value"], "F-0000");
        assert_eq!(v["type"], "SUBSCRIBE");
    }
}
