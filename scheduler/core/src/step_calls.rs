//! The Elasticsearch calls of one step of a removal or of a rollout, as this process sent them: the two
//! drive their steps alike (each call idempotent, all sent again with every step and every restart, a
//! failed one after a pause).

use crate::ids::Millis;
use std::collections::BTreeSet;

/// How long after a failed Elasticsearch call it is sent again.
pub(crate) const CALL_RETRY_MS: u64 = 5_000;

#[derive(Debug, Clone)]
pub(crate) struct StepCalls {
    /// Sent and not answered.
    in_flight: BTreeSet<u64>,
    /// Every call was answered with success (or there was none to make).
    done: bool,
    /// Not sent again before this time (after a failure).
    retry_at: Millis,
}

/// What an answer did to the step's calls.
pub(crate) enum Answer {
    /// Not a call of this step (of an earlier one, or of a cancelled step): nothing changed.
    Stale,
    /// Answered with success.
    Ok,
    /// Failed with `error`: every call of the step goes again at `retry_at`.
    Failed { retry_at: Millis, error: String },
}

impl StepCalls {
    pub(crate) fn new() -> StepCalls {
        StepCalls {
            in_flight: BTreeSet::new(),
            done: false,
            retry_at: Millis(0),
        }
    }

    pub(crate) fn done(&self) -> bool {
        self.done
    }

    /// Whether the step's calls are to be sent now: not sent, not answered, not failed too recently.
    pub(crate) fn due(&self, now: Millis) -> bool {
        !self.done && self.in_flight.is_empty() && now >= self.retry_at
    }

    /// The step has no call to make.
    pub(crate) fn none_to_make(&mut self) {
        self.done = true;
    }

    pub(crate) fn sent(&mut self, call_id: u64) {
        self.in_flight.insert(call_id);
    }

    /// Records the answer to `call_id`: the calls are done once every one has succeeded.
    pub(crate) fn answer(
        &mut self,
        call_id: u64,
        result: &Result<(), String>,
        now: Millis,
    ) -> Answer {
        if !self.in_flight.remove(&call_id) {
            return Answer::Stale;
        }
        match result {
            Ok(()) => {
                if self.in_flight.is_empty() {
                    self.done = true;
                }
                Answer::Ok
            }
            Err(e) => {
                self.retry_at = now.plus(CALL_RETRY_MS);
                Answer::Failed {
                    retry_at: self.retry_at,
                    error: e.clone(),
                }
            }
        }
    }
}
