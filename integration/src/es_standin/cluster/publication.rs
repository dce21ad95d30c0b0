//! Publication: two-phase (accept, then commit on a quorum of both voting configurations).

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;

use super::routing::{self, AllocSettings};
use super::shards::now_ms;
use super::state::{ClusterState, DiscoveryNode, reconfigure};
use super::transport::Request;
use super::{Coordinator, Inner, Mode, live_master_eligible, retired};

impl Coordinator {
    /// Publishes `state` (nodes already changed) as the next version, with a voting configuration fitted
    /// to its live nodes. The caller holds the publish lock.
    pub(super) async fn publish_next(
        self: &Arc<Self>,
        mut state: ClusterState,
    ) -> Result<(), String> {
        {
            let i = self.lock();
            if !matches!(i.mode, Mode::Leader) {
                return Err("no longer the master".into());
            }
            state.term = i.p.current_term;
            state.version = i.p.accepted.version.max(i.applied.version) + 1;
            state.master = Some(self.local().id.clone());
            state.last_committed_config = i.applied.last_accepted_config.clone();
            let settings =
                AllocSettings::effective(&state.metadata, &self.cfg.local_cluster_settings);
            routing::reroute(&mut state, &settings, now_ms());
            state.last_accepted_config = reconfigure(
                &live_master_eligible(&state),
                &retired(&state),
                &self.local().id,
                &i.applied.last_accepted_config,
            );
        }
        let abdicate = !state.last_accepted_config.0.contains(&self.local().id)
            && retired(&state).contains(&self.local().id);
        self.publish(state).await?;
        if abdicate {
            // Elasticsearch's master hands over once the configuration no longer holds it.
            let mut i = self.lock();
            self.become_candidate(&mut i, "abdicating: this node is excluded from voting");
        }
        Ok(())
    }

    /// Two-phase publication: accept locally, send to every node, commit once both configurations have
    /// a quorum of acceptances; step down otherwise. The caller holds the publish lock.
    pub(super) async fn publish(self: &Arc<Self>, state: ClusterState) -> Result<(), String> {
        {
            let mut i = self.lock();
            if !matches!(i.mode, Mode::Leader) || i.p.current_term != state.term {
                return Err("no longer the master".into());
            }
            i.p.accepted = state.clone();
            self.persist(&i)?;
        }
        let mut acks = BTreeSet::from([self.local().id.clone()]);
        let mut pending: FuturesUnordered<_> = state
            .nodes
            .values()
            .filter(|n| n.id != self.local().id)
            .cloned()
            .map(|n| {
                let t = self.transport.clone();
                let req = Request::Publish {
                    state: Box::new(state.clone()),
                };
                let timeout = self.cfg.publish_timeout;
                async move {
                    let r = t.send_to(&n, req, timeout).await;
                    (n, r)
                }
            })
            .collect();
        while !state.has_quorum(&acks) {
            let Some((n, r)) = pending.next().await else {
                break;
            };
            match r {
                Ok(_) => {
                    acks.insert(n.id.clone());
                }
                Err(e) => tracing::debug!(node = %n, error = %e, "publication not accepted"),
            }
        }
        if !state.has_quorum(&acks) {
            let mut i = self.lock();
            self.become_candidate(
                &mut i,
                "publication failed: no quorum of the voting configuration",
            );
            return Err(format!(
                "publication of cluster state version [{}] in term [{}] failed: only [{}] of the voting configuration accepted it",
                state.version,
                state.term,
                acks.len()
            ));
        }
        {
            let mut i = self.lock();
            if i.p.accepted.term == state.term && i.p.accepted.version == state.version {
                self.apply_committed(&mut i);
            }
        }
        // Commit to those that accepted, and to late acceptors as they answer.
        let commit = Request::Commit {
            term: state.term,
            version: state.version,
        };
        let acked: Vec<DiscoveryNode> = state
            .nodes
            .values()
            .filter(|n| n.id != self.local().id && acks.contains(&n.id))
            .cloned()
            .collect();
        let t = self.transport.clone();
        let timeout = self.cfg.publish_timeout;
        tokio::spawn(async move {
            let first = futures::future::join_all(
                acked.iter().map(|n| t.send_to(n, commit.clone(), timeout)),
            );
            let late = async {
                while let Some((n, r)) = pending.next().await {
                    if r.is_ok() {
                        let _ = t.send_to(&n, commit.clone(), timeout).await;
                    }
                }
            };
            tokio::join!(first, late);
        });
        Ok(())
    }

    /// Marks the accepted state committed and applies it.
    pub(super) fn apply_committed(&self, i: &mut Inner) {
        i.p.accepted.uuid_committed = true;
        i.p.accepted.last_committed_config = i.p.accepted.last_accepted_config.clone();
        let _ = self.persist(i);
        let before = std::mem::replace(&mut i.applied, i.p.accepted.clone());
        i.recovered = true;
        let joined: Vec<String> = i
            .applied
            .nodes
            .values()
            .filter(|n| !before.nodes.contains_key(&n.id))
            .map(ToString::to_string)
            .collect();
        let left: Vec<String> = before
            .nodes
            .values()
            .filter(|n| !i.applied.nodes.contains_key(&n.id))
            .map(ToString::to_string)
            .collect();
        if before.master != i.applied.master || !joined.is_empty() || !left.is_empty() {
            tracing::info!(
                node = %self.local().name,
                master = ?i.applied.master_node().map(ToString::to_string),
                term = i.applied.term,
                version = i.applied.version,
                joined = ?joined,
                left = ?left,
                "cluster state applied"
            );
        }
        self.refresh_view(i);
    }
}
