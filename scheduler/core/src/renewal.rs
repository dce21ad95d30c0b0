//! Certificate renewal: a running node whose certificate comes within `Config::cert_renew_before_s`
//! (`--es-cert-renew-before`, 30 days) of its expiry is restarted through the rollout (`rollout.rs`),
//! one at a time under the same gates, and gets a new certificate at its relaunch.
//!
//! The shell signs each launch's certificate and tells the core when it expires
//! ([`Core::handle_certificate_issued`], durable on the slot: `SlotRecord::cert_not_after`). Expiries
//! are wall-clock (Unix seconds): the core's `Millis` count from this process's start and the state is
//! shared by every leader, so the shell also tells the core the wall-clock time
//! ([`Core::handle_wall_clock`], at start and every minute); without it nothing is renewed.
//!
//! A due node is pending in the rollout's order whatever the rollout's reason: an idle, done or aborted
//! rollout is started for due nodes; a running one (a configuration change) takes them in its turn; a
//! paused one is the operator's hold and stays paused, renewals included. A node is restarted on the
//! configuration generation it runs (its group's current one if it is out of date as well). A node
//! restarted by the current rollout is not pending again for its certificate (had its relaunch not
//! recorded a new one, another restart would not help either). A node with no recorded expiry (launched
//! by an older scheduler, or with security off) is never renewed.

use crate::core::Core;
use crate::error::CoreError;
use crate::ids::{Millis, NodeId};
use crate::rollout::RolloutState;

/// The wall-clock time the shell last gave, and the core's `now` then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WallClock {
    pub(crate) unix_s: u64,
    pub(crate) at: Millis,
}

const DAY: u64 = 86_400;

/// The UTC `(year, month, day)` holding `unix_s` (days to civil date, Howard Hinnant's algorithm); the
/// shell dates the certificates it signs with it too.
#[must_use]
pub fn civil_date(unix_s: u64) -> (i64, u8, u8) {
    let z = i64::try_from(unix_s / DAY).unwrap_or(i64::MAX / 2) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    // Both within 1..=31 and 1..=12 by construction.
    let day = u8::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let month = u8::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// `unix_s` as a UTC date and time (`2027-01-05T00:00:00Z`), for reasons and events.
#[must_use]
pub fn utc(unix_s: u64) -> String {
    let (year, month, day) = civil_date(unix_s);
    let s = unix_s % DAY;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

impl Core {
    /// The shell signed node `id`'s certificate for the launch under way; it expires at
    /// `not_after_unix_s` (the certificate's own `notAfter`). Durable on the slot.
    pub fn handle_certificate_issued(
        &mut self,
        id: NodeId,
        not_after_unix_s: u64,
        now: Millis,
    ) -> Result<(), CoreError> {
        if self.record(id).is_none() {
            return Err(CoreError::UnknownNode(id));
        }
        if self.record(id).and_then(|r| r.cert_not_after) != Some(not_after_unix_s) {
            self.update_slot(id, |r| r.cert_not_after = Some(not_after_unix_s));
        }
        // The node may have been the one a renewal waits for.
        self.drive_rollout(now);
        Ok(())
    }

    /// The wall-clock time now (Unix seconds), from the shell's clock: starts a renewal rollout when a
    /// running node's certificate is due and no rollout runs or is paused.
    pub fn handle_wall_clock(&mut self, unix_s: u64, now: Millis) {
        self.wall = Some(crate::renewal::WallClock { unix_s, at: now });
        let due = self.renewal_due(now);
        let Some(&first) = due.first() else {
            return;
        };
        let active = self
            .persisted
            .rollout
            .as_ref()
            .is_some_and(|r| matches!(r.state, RolloutState::Running | RolloutState::Paused));
        if active {
            // A running rollout takes due nodes in its turn; a paused one is the operator's hold.
            return;
        }
        let expires = self.cert_expiry(first).unwrap_or_default();
        let message = format!(
            "certificate of node {first} expires on {}: renewing{}",
            utc(expires),
            match due.len() {
                1 => String::new(),
                n => format!(" ({n} nodes due)"),
            }
        );
        self.start_rollout_for(now, message);
    }

    /// The wall-clock time now (Unix seconds), if the shell gave one.
    pub(crate) fn wall_now(&self, now: Millis) -> Option<u64> {
        self.wall
            .map(|w| w.unix_s.saturating_add(now.since(w.at) / 1000))
    }

    fn cert_expiry(&self, id: NodeId) -> Option<u64> {
        self.record(id).and_then(|r| r.cert_not_after)
    }

    /// Whether node `id` runs on a certificate due for renewal (and this rollout has not restarted it).
    pub(crate) fn cert_due(&self, id: NodeId, now: Millis) -> bool {
        let Some(wall) = self.wall_now(now) else {
            return false;
        };
        let Some(rec) = self.record(id) else {
            return false;
        };
        let restarted = self.persisted.rollout.as_ref().is_some_and(|r| {
            matches!(r.state, RolloutState::Running | RolloutState::Paused) && r.done.contains(&id)
        });
        !rec.removed
            && !restarted
            && Core::task_live(rec)
            && rec
                .cert_not_after
                .is_some_and(|t| t <= wall.saturating_add(self.config.cert_renew_before_s))
    }

    /// The nodes due for renewal, in the rollout's order.
    fn renewal_due(&self, now: Millis) -> Vec<NodeId> {
        self.rollout_pending(now)
            .into_iter()
            .filter(|id| self.cert_due(*id, now))
            .collect()
    }

    /// Why node `id` is restarted, when it is for its certificate.
    pub(crate) fn renewal_note(&self, id: NodeId, now: Millis) -> Option<String> {
        self.cert_due(id, now).then(|| {
            format!(
                "certificate of node {id} expires on {}: renewing",
                utc(self.cert_expiry(id).unwrap_or_default())
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{civil_date, utc};

    #[test]
    fn utc_dates_are_the_calendar_ones() {
        assert_eq!(civil_date(0), (1970, 1, 1));
        assert_eq!(civil_date(951_782_400), (2000, 2, 29));
        assert_eq!(civil_date(1_798_675_200), (2026, 12, 31));
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        // 2000-02-29 (a leap day of a century leap year) 12:34:56.
        assert_eq!(utc(951_827_696), "2000-02-29T12:34:56Z");
        assert_eq!(utc(1_798_761_599), "2026-12-31T23:59:59Z");
    }
}
