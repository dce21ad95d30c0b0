//! The master's v1 operator API (`POST /api/v1`, `mesos.v1.master.Call`) as far as the emulator
//! implements it: MARK_AGENT_GONE. The JSON shape is the real one (`include/mesos/v1/master/master.proto`:
//! `{"type": "MARK_AGENT_GONE", "mark_agent_gone": {"agent_id": {"value": "..."}}}`), and so are the
//! answers of `Master::Http::markAgentGone`: 200 with an empty body (also for an agent already gone),
//! 404 `Agent '<id>' not found` for an agent the master does not know (never registered, removed, or
//! forgotten by the registry). The master's 503 answers for a transition already in progress cannot
//! happen here: every transition completes under the master's one lock.

use serde::Deserialize;
use tether_mesos::model::AgentID;

use super::faults::FaultError;
use super::state::{Reply, State};

/// Every `mesos.v1.master.Call.Type`, so that a real call the emulator does not implement is told apart
/// from a malformed one.
const KNOWN_TYPES: &[&str] = &[
    "UNKNOWN",
    "GET_HEALTH",
    "GET_FLAGS",
    "GET_VERSION",
    "GET_METRICS",
    "GET_LOGGING_LEVEL",
    "SET_LOGGING_LEVEL",
    "LIST_FILES",
    "READ_FILE",
    "GET_STATE",
    "GET_AGENTS",
    "GET_FRAMEWORKS",
    "GET_EXECUTORS",
    "GET_OPERATIONS",
    "GET_TASKS",
    "GET_ROLES",
    "GET_WEIGHTS",
    "UPDATE_WEIGHTS",
    "GET_MASTER",
    "SUBSCRIBE",
    "RESERVE_RESOURCES",
    "UNRESERVE_RESOURCES",
    "CREATE_VOLUMES",
    "DESTROY_VOLUMES",
    "GROW_VOLUME",
    "SHRINK_VOLUME",
    "GET_MAINTENANCE_STATUS",
    "GET_MAINTENANCE_SCHEDULE",
    "UPDATE_MAINTENANCE_SCHEDULE",
    "START_MAINTENANCE",
    "STOP_MAINTENANCE",
    "DRAIN_AGENT",
    "DEACTIVATE_AGENT",
    "REACTIVATE_AGENT",
    "GET_QUOTA",
    "UPDATE_QUOTA",
    "SET_QUOTA",
    "REMOVE_QUOTA",
    "TEARDOWN",
    "MARK_AGENT_GONE",
];

/// `mesos.v1.master.Call`, the fields the emulator reads.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct OperatorCall {
    #[serde(rename = "type")]
    pub call_type: String,
    #[serde(default)]
    pub mark_agent_gone: Option<MarkAgentGone>,
}

/// `Call.MarkAgentGone`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct MarkAgentGone {
    pub agent_id: AgentID,
}

impl OperatorCall {
    /// The JSON → protobuf conversion's checks: a known type name (an enum must be its name).
    pub fn parse(value: serde_json::Value) -> Result<OperatorCall, String> {
        let call: OperatorCall = serde_json::from_value(value).map_err(|e| e.to_string())?;
        if !KNOWN_TYPES.contains(&call.call_type.as_str()) {
            return Err(format!(
                "Failed to find enum for '{}' in mesos.v1.master.Call.Type",
                call.call_type
            ));
        }
        Ok(call)
    }

    /// `validation::master::call::validate`: the message the type names must be present.
    pub fn validate(&self) -> Result<(), String> {
        if self.call_type == "MARK_AGENT_GONE" && self.mark_agent_gone.is_none() {
            return Err("Expecting 'mark_agent_gone' to be present".into());
        }
        Ok(())
    }
}

impl State {
    /// A validated operator call.
    pub fn operator_call(&mut self, call: OperatorCall) -> Reply {
        match (call.call_type.as_str(), call.mark_agent_gone) {
            ("MARK_AGENT_GONE", Some(m)) => match self.mark_gone(&m.agent_id.value) {
                Ok(()) => Reply::Status(200, String::new()),
                Err(e @ FaultError::UnknownAgent(_)) => Reply::Status(404, e.to_string()),
                Err(e @ FaultError::Conflict(_)) => Reply::Status(503, e.to_string()),
            },
            ("UNKNOWN", _) => Reply::Status(501, String::new()),
            (other, _) => Reply::Status(
                501,
                format!("the Mesos emulator implements MARK_AGENT_GONE only, not {other}"),
            ),
        }
    }
}
