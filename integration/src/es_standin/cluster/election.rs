//! Elections: pre-voting, then a new term in which a majority of both voting configurations must vote.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use super::state::{self, new_uuid, reconfigure};
use super::transport::{Request, Response};
use super::{Coordinator, Mode, retired};

impl Coordinator {
    pub(super) async fn maybe_elect(self: &Arc<Self>) {
        let delay = {
            let mut i = self.lock();
            if !matches!(i.mode, Mode::Candidate)
                || i.p.accepted.last_accepted_config.is_empty()
                || !self.local().is_master_eligible()
                || self.local().roles.contains("voting_only")
            {
                return;
            }
            // `nodeMayWinElection`: an excluded node outside both configurations does not stand.
            let me = &self.local().id;
            let accepted = &i.p.accepted;
            if !accepted.last_committed_config.0.contains(me)
                && !accepted.last_accepted_config.0.contains(me)
                && retired(accepted).contains(me)
            {
                return;
            }
            let mut possible: BTreeSet<String> = i.peers.keys().cloned().collect();
            possible.insert(self.local().id.clone());
            if !i.p.accepted.has_quorum(&possible) {
                return;
            }
            let cap = (self.cfg.election_initial_timeout
                + self.cfg.election_back_off * i.election_attempts)
                .min(self.cfg.election_max_timeout);
            i.election_attempts = i.election_attempts.saturating_add(1);
            Duration::from_millis(rand::random_range(0..=cap.as_millis() as u64))
        };
        tokio::time::sleep(delay).await;
        self.election().await;
    }

    pub(super) async fn election(self: &Arc<Self>) {
        let (peers, last_term, last_version, accepted) = {
            let i = self.lock();
            if !matches!(i.mode, Mode::Candidate) {
                return;
            }
            (
                i.peers.values().cloned().collect::<Vec<_>>(),
                i.p.accepted.term,
                i.p.accepted.version,
                i.p.accepted.clone(),
            )
        };
        // Pre-voting: would a quorum follow us without disrupting a working leader?
        let pre = futures::future::join_all(peers.iter().map(|p| {
            self.transport.send_to(
                p,
                Request::PreVote {
                    last_accepted_term: last_term,
                    last_accepted_version: last_version,
                },
                self.cfg.request_peers_timeout,
            )
        }))
        .await;
        let mut max_term = self.lock().p.current_term;
        let mut pre_votes = BTreeSet::from([self.local().id.clone()]);
        for (p, r) in peers.iter().zip(pre) {
            if let Ok(Response::PreVote {
                current_term,
                last_accepted_term,
                last_accepted_version,
                has_leader,
            }) = r
            {
                max_term = max_term.max(current_term);
                if !has_leader
                    && (last_accepted_term, last_accepted_version) <= (last_term, last_version)
                {
                    pre_votes.insert(p.id.clone());
                }
            }
        }
        if !accepted.has_quorum(&pre_votes) {
            return;
        }
        // The election proper, in a new term.
        let term = {
            let mut i = self.lock();
            if !matches!(i.mode, Mode::Candidate) {
                return;
            }
            let term = i.p.current_term.max(max_term) + 1;
            i.p.current_term = term;
            if self.persist(&i).is_err() {
                return;
            }
            term
        };
        let votes_in = futures::future::join_all(peers.iter().map(|p| {
            self.transport.send_to(
                p,
                Request::StartJoin { term },
                self.cfg.request_peers_timeout,
            )
        }))
        .await;
        let mut voters = vec![self.local().clone()];
        for (p, r) in peers.iter().zip(votes_in) {
            match r {
                Ok(Response::Vote {
                    term: t,
                    last_accepted_term,
                    last_accepted_version,
                }) if t == term
                    && (last_accepted_term, last_accepted_version) <= (last_term, last_version) =>
                {
                    voters.push(p.clone());
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "no vote"),
            }
        }
        let votes: BTreeSet<String> = voters.iter().map(|n| n.id.clone()).collect();
        // Held before becoming leader, so that no join publishes from the state of an older term.
        let _guard = self.publish_lock.lock().await;
        let state = {
            let mut i = self.lock();
            if !matches!(i.mode, Mode::Candidate) || i.p.current_term != term {
                return;
            }
            if !i.p.accepted.has_quorum(&votes) {
                tracing::debug!(term, votes = ?votes, "election lost");
                return;
            }
            let mut state = i.p.accepted.clone();
            state.term = term;
            state.version = i.p.accepted.version + 1;
            state.master = Some(self.local().id.clone());
            // The nodes of the last state stay (follower checks remove the dead), so their shard copies
            // stay assigned across a change of master, as `becomeMasterAndTrimConflictingNodes` does.
            for n in &voters {
                if state
                    .nodes
                    .get(&n.id)
                    .is_some_and(|old| old.ephemeral_id != n.ephemeral_id)
                {
                    state.nodes.remove(&n.id);
                    super::routing::node_left(&mut state, &n.id, super::shards::now_ms());
                }
                state.nodes.insert(n.id.clone(), n.clone());
            }
            if state.cluster_uuid == state::UNKNOWN_UUID {
                state.cluster_uuid = new_uuid();
                state.uuid_committed = false;
            }
            let live: std::collections::BTreeSet<String> = voters
                .iter()
                .filter(|n| n.is_master_eligible())
                .map(|n| n.id.clone())
                .collect();
            state.last_accepted_config = reconfigure(
                &live,
                &retired(&state),
                &self.local().id,
                &state.last_accepted_config,
            );
            i.mode = Mode::Leader;
            i.election_attempts = 0;
            i.follower_failures.clear();
            state
        };
        match self.publish(state).await {
            Ok(()) => tracing::info!(
                node = %self.local().name, term,
                "elected-as-master ([{}] nodes joined)", votes.len()
            ),
            Err(e) => {
                tracing::warn!(term, error = %e, "failed to publish the first state as master")
            }
        }
    }
}
