//! The emulated master's state machine, split along the master's own sections:
//!
//! - [`state`]: what the master knows (agents, frameworks and their streams and tasks, offers, decline
//!   filters, fault switches) and the shapes every section builds;
//! - [`subscription`]: SUBSCRIBE, the checks every other call passes, streams, heartbeats, disconnection,
//!   the failover timeout and TEARDOWN;
//! - [`allocation`]: offers per allocation interval, decline filters, SUPPRESS/REVIVE;
//! - [`accept`] and [`validation`]: ACCEPT in the master's stages and the master's validation rules;
//! - [`updates`]: status updates with acknowledgement and resend, KILL, RECONCILE;
//! - [`operator`]: the operator API's calls (MARK_AGENT_GONE);
//! - [`maintenance`]: the maintenance schedule and status endpoints, `unavailability` on offers, and
//!   inverse offers with their answers and filters;
//! - [`faults`]: machines that die, partitions (frozen or not) and their healing, restarts under the old
//!   or a new agent id, the operator's MARK_AGENT_GONE, maintenance removal, the registry forgetting old
//!   agents, failed tasks, rescinded offers, master failover.
//!
//! Here: the dispatch of a call to its section, and the tick that drives everything time-based.
//!
//! Everything runs under one lock ([`Shared`]): a call, a launcher's report and a tick each see and
//! change the whole master at once, so the events a framework receives keep the order the master would
//! give them. Time comes from `tokio::time` so tests can use short intervals.

mod accept;
mod allocation;
mod faults;
mod maintenance;
mod operator;
mod state;
mod subscription;
mod updates;
mod validation;

use tether_mesos::model::{Call, CallType};
use tokio::time::Instant;

pub(crate) use faults::FaultError;
pub use faults::Restart;
pub(crate) use operator::OperatorCall;
pub(crate) use state::{AgentStatus, Reply, Shared, State};

impl State {
    /// Any call but SUBSCRIBE, after the transport checks.
    pub fn call(&mut self, call: Call, stream_header: Option<&str>) -> Reply {
        let fw = match self.check_caller(&call, stream_header) {
            Ok(fw) => fw,
            Err(reply) => return reply,
        };
        let now = Instant::now();
        match call.call_type {
            CallType::Teardown => {
                self.remove_framework(&fw);
            }
            CallType::Accept => {
                if let Some(a) = call.accept {
                    self.accept(&fw, a, now);
                }
            }
            CallType::Decline => {
                if let Some(d) = call.decline {
                    self.decline(&fw, &d.offer_ids, d.filters, now);
                }
            }
            CallType::Revive => {
                self.revive(&fw, call.revive.map(|r| r.roles).unwrap_or_default());
            }
            CallType::Suppress => {
                self.suppress(&fw, call.suppress.map(|r| r.roles).unwrap_or_default());
            }
            CallType::Kill => {
                if let Some(k) = call.kill {
                    self.kill(&fw, k);
                }
            }
            CallType::Acknowledge => {
                if let Some(a) = call.acknowledge {
                    self.acknowledge(&fw, a, now);
                }
            }
            CallType::Reconcile => {
                self.reconcile(&fw, call.reconcile.unwrap_or_default().tasks, now);
            }
            CallType::AcceptInverseOffers => {
                if let Some(r) = call.accept_inverse_offers {
                    self.answer_inverse_offers(&fw, r, true, now);
                }
            }
            CallType::DeclineInverseOffers => {
                if let Some(r) = call.decline_inverse_offers {
                    self.answer_inverse_offers(&fw, r, false, now);
                }
            }
            CallType::Shutdown | CallType::Message | CallType::Request => {}
            CallType::Subscribe => {}
            CallType::Unknown => {
                return Reply::Status(501, "Received an unexpected call type".into());
            }
        }
        Reply::Status(202, String::new())
    }

    /// Everything time-driven, in this order: heartbeats, failover timeouts, agent ping timeouts, the
    /// registry forgetting old agents, agents re-registering after a master failover, resends, filter
    /// expiry and allocation.
    pub fn tick(&mut self, now: Instant) {
        self.send_heartbeats(now);
        self.expire_failovers(now);
        self.time_out_partitions(now);
        self.forget_old_agents(now);
        self.finish_reregistrations(now);
        self.resend_updates(now);
        self.allocation_tick(now);
    }
}
