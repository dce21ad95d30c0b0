//! Fault detection: the master's follower checks and the followers' leader checks.

use std::sync::Arc;

use super::state::DiscoveryNode;
use super::transport::{Request, TransportError};
use super::{Coordinator, Mode};

impl Coordinator {
    pub(super) async fn check_followers(self: &Arc<Self>) {
        let (term, targets) = {
            let i = self.lock();
            if !matches!(i.mode, Mode::Leader) {
                return;
            }
            let targets: Vec<DiscoveryNode> = i
                .applied
                .nodes
                .values()
                .filter(|n| n.id != self.local().id)
                .cloned()
                .collect();
            (i.p.current_term, targets)
        };
        if targets.is_empty() {
            return;
        }
        let results = futures::future::join_all(targets.iter().map(|n| {
            self.transport.send_to(
                n,
                Request::FollowerCheck {
                    term,
                    ephemeral_id: Some(n.ephemeral_id.clone()),
                },
                self.cfg.follower_check_timeout,
            )
        }))
        .await;
        let mut removals: Vec<(DiscoveryNode, String)> = Vec::new();
        {
            let mut i = self.lock();
            if !matches!(i.mode, Mode::Leader) || i.p.current_term != term {
                return;
            }
            for (n, r) in targets.into_iter().zip(results) {
                match r {
                    Ok(_) => {
                        i.follower_failures.remove(&n.id);
                    }
                    Err(e) if e.is_disconnect() => removals.push((n, "disconnected".into())),
                    Err(e) => {
                        let count = i.follower_failures.entry(n.id.clone()).or_insert(0);
                        *count += 1;
                        tracing::debug!(node = %n, failures = *count, error = %e, "follower check failed");
                        if *count >= self.cfg.follower_check_retries {
                            removals.push((n, "followers check retry count exceeded".into()));
                        }
                    }
                }
            }
        }
        if removals.is_empty() {
            return;
        }
        let _guard = self.publish_lock.lock().await;
        let state = {
            let mut i = self.lock();
            if !matches!(i.mode, Mode::Leader) {
                return;
            }
            let mut state = i.applied.clone();
            let now = super::shards::now_ms();
            for (n, _) in &removals {
                state.nodes.remove(&n.id);
                super::routing::node_left(&mut state, &n.id, now);
                i.follower_failures.remove(&n.id);
            }
            state
        };
        let reasons: Vec<String> = removals
            .iter()
            .map(|(n, why)| format!("{n} reason: {why}"))
            .collect();
        match self.publish_next(state).await {
            Ok(()) => {
                tracing::info!(node = %self.local().name, "node-left[{}]", reasons.join(", "))
            }
            Err(e) => tracing::warn!(error = %e, "failed to remove [{}]", reasons.join(", ")),
        }
    }

    pub(super) async fn check_leader(&self) {
        let leader = match &self.lock().mode {
            Mode::Follower(l) => l.clone(),
            _ => return,
        };
        let r = self
            .transport
            .send_to(&leader, Request::LeaderCheck, self.cfg.leader_check_timeout)
            .await;
        let mut i = self.lock();
        if !matches!(&i.mode, Mode::Follower(l) if l.id == leader.id) {
            return;
        }
        match r {
            Ok(_) => i.leader_failures = 0,
            Err(e) if e.is_disconnect() => {
                self.become_candidate(&mut i, &format!("master node [{leader}] disconnected"))
            }
            Err(TransportError::Refused(_, msg)) if msg.contains("removed from the cluster") => {
                self.become_candidate(&mut i, &msg)
            }
            Err(e) => {
                i.leader_failures += 1;
                if i.leader_failures >= self.cfg.leader_check_retries {
                    self.become_candidate(
                        &mut i,
                        &format!("leader check retry count exceeded for [{leader}]: {e}"),
                    );
                }
            }
        }
    }
}
