//! What a node answers its peers.

use std::sync::Arc;

use super::state::{ClusterState, DiscoveryNode};
use super::transport::{Request, Response, TransportError};
use super::{Coordinator, Mode};

impl Coordinator {
    pub(super) async fn handle(self: Arc<Self>, from: DiscoveryNode, req: Request) -> Response {
        match req {
            Request::Peers { known } => self.on_peers(from, known),
            Request::PreVote { .. } => {
                let i = self.lock();
                Response::PreVote {
                    current_term: i.p.current_term,
                    last_accepted_term: i.p.accepted.term,
                    last_accepted_version: i.p.accepted.version,
                    has_leader: !matches!(i.mode, Mode::Candidate),
                }
            }
            Request::StartJoin { term } => self.on_start_join(term),
            Request::Join => self.on_join(from).await,
            Request::ValidateJoin { cluster_uuid } => self.on_validate_join(&cluster_uuid),
            Request::Publish { state } => self.on_publish(from, *state),
            Request::Commit { term, version } => {
                let mut i = self.lock();
                if i.p.accepted.term != term || i.p.accepted.version != version {
                    return Response::Refused(format!(
                        "received commit for term [{term}] version [{version}] but the last accepted state is version [{}] in term [{}]",
                        i.p.accepted.version, i.p.accepted.term
                    ));
                }
                self.apply_committed(&mut i);
                Response::Ack
            }
            Request::FollowerCheck {
                ephemeral_id: Some(e),
                ..
            } if e != self.local().ephemeral_id => Response::Refused(format!(
                "{} {}: it restarted since [{from}] last saw it",
                super::transport::RESTARTED,
                self.local()
            )),
            Request::FollowerCheck { term, .. } => self.on_follower_check(from, term),
            Request::LeaderCheck => {
                let i = self.lock();
                match i.mode {
                    Mode::Leader if i.applied.nodes.contains_key(&from.id) => Response::Ack,
                    Mode::Leader => Response::Refused(format!(
                        "rejecting leader check since [{from}] has been removed from the cluster"
                    )),
                    _ => Response::Refused(format!(
                        "rejecting leader check from [{from}] sent to a node that is no longer the master"
                    )),
                }
            }
            Request::Update(u) => match self.update_as_master(u).await {
                Ok(version) => Response::Published(version),
                Err(e) => Response::Refused(e),
            },
            Request::StateVersion => {
                let i = self.lock();
                match i.mode {
                    Mode::Leader => Response::Published(i.applied.version),
                    _ => Response::Refused(format!("[{}] is not the master", self.local())),
                }
            }
            Request::PrimaryWrite { index, id, source } => {
                match self.write_as_primary(&index, &id, &source).await {
                    Ok((status, body)) => Response::Written(status, body),
                    Err(e) => Response::Refused(e.reason),
                }
            }
            Request::ReplicaWrite {
                index,
                shard,
                id,
                version,
                source,
            } => {
                self.on_replica_write(&index, shard, &id, version, source)
                    .await
            }
            Request::GetDoc { index, shard, id } => self.on_get_doc(&index, shard, &id),
            Request::RecoverShard {
                index,
                shard,
                allocation_id,
            } => self.on_recover_shard(&index, shard, &allocation_id).await,
        }
    }

    pub(super) fn on_peers(&self, from: DiscoveryNode, known: Vec<DiscoveryNode>) -> Response {
        let mut i = self.lock();
        if matches!(i.mode, Mode::Candidate) {
            for k in known
                .into_iter()
                .chain([from])
                .filter(|k| k.id != self.local().id)
            {
                i.heard_of.insert(k.id.clone(), k);
            }
        }
        let master = match &i.mode {
            Mode::Leader => Some(self.local().clone()),
            Mode::Follower(l) => Some(l.clone()),
            Mode::Candidate => None,
        };
        Response::Peers {
            node: Box::new(self.local().clone()),
            master: master.map(Box::new),
            known: i
                .peers
                .values()
                .chain(i.applied.nodes.values())
                .cloned()
                .collect(),
        }
    }

    pub(super) fn on_start_join(&self, term: u64) -> Response {
        let mut i = self.lock();
        if term <= i.p.current_term {
            return Response::Refused(format!(
                "incoming term {term} does not match current term {}",
                i.p.current_term
            ));
        }
        i.p.current_term = term;
        if let Err(e) = self.persist(&i) {
            return Response::Refused(e);
        }
        if !matches!(i.mode, Mode::Candidate) {
            self.become_candidate(&mut i, "joining a newer term");
        }
        Response::Vote {
            term,
            last_accepted_term: i.p.accepted.term,
            last_accepted_version: i.p.accepted.version,
        }
    }

    pub(super) fn on_validate_join(&self, cluster_uuid: &str) -> Response {
        let i = self.lock();
        if i.p.accepted.uuid_committed && i.p.accepted.cluster_uuid != cluster_uuid {
            let msg = format!(
                "This node previously joined a cluster with UUID [{}] and is now trying to join a different cluster with UUID [{cluster_uuid}]. This is forbidden and usually indicates an incorrect discovery or cluster bootstrapping configuration. Note that the cluster UUID persists across restarts and can only be changed by deleting the contents of the node's data path [{}] which will also remove any data held by this node.",
                i.p.accepted.cluster_uuid, self.data_path_shown
            );
            tracing::warn!("{msg}");
            return Response::Refused(msg);
        }
        Response::Ack
    }

    pub(super) async fn on_join(self: &Arc<Self>, from: DiscoveryNode) -> Response {
        let _guard = self.publish_lock.lock().await;
        if self.cfg.single_node {
            return Response::Refused(
                "cannot join node with [discovery.type] set to [single-node] discovery".into(),
            );
        }
        let applied = {
            let i = self.lock();
            if !matches!(i.mode, Mode::Leader) {
                return Response::Refused(format!(
                    "Node [{}] not master for join request",
                    self.local()
                ));
            }
            i.applied.clone()
        };
        match self
            .transport
            .send_to(
                &from,
                Request::ValidateJoin {
                    cluster_uuid: applied.cluster_uuid.clone(),
                },
                self.cfg.publish_timeout,
            )
            .await
        {
            Ok(_) => {}
            Err(TransportError::Refused(_, msg)) => return Response::Refused(msg),
            Err(e) => {
                return Response::Refused(format!(
                    "failure when sending a join validation request from [{}] to [{from}]: {e}",
                    self.local()
                ));
            }
        }
        if let Some(min) = applied.nodes.values().map(|n| n.version).min()
            && from.version < min
        {
            return Response::Refused(format!(
                "node version [{}] may not join a cluster comprising only nodes of version [{min}] or greater",
                from.version
            ));
        }
        let mut state = applied;
        // A node restarted elsewhere keeps its id; a different node at the same address replaces it.
        let replaced: Vec<String> = state
            .nodes
            .values()
            .filter(|n| {
                (n.id == from.id && n.ephemeral_id != from.ephemeral_id)
                    || (n.id != from.id && n.address == from.address)
            })
            .map(|n| n.id.clone())
            .collect();
        let now = super::shards::now_ms();
        for id in replaced {
            state.nodes.remove(&id);
            super::routing::node_left(&mut state, &id, now);
        }
        state.nodes.insert(from.id.clone(), from.clone());
        match self.publish_next(state).await {
            Ok(()) => {
                tracing::info!(node = %self.local().name, "node-join[{from} join existing leader]");
                Response::Ack
            }
            Err(e) => Response::Refused(e),
        }
    }

    pub(super) fn on_publish(&self, from: DiscoveryNode, state: ClusterState) -> Response {
        let mut i = self.lock();
        if state.term < i.p.current_term {
            return Response::Refused(format!(
                "incoming term {} does not match current term {}",
                state.term, i.p.current_term
            ));
        }
        if i.p.accepted.uuid_committed && state.cluster_uuid != i.p.accepted.cluster_uuid {
            return Response::Refused(format!(
                "received cluster state from {from} with a different cluster uuid {} than local cluster uuid {}, rejecting",
                state.cluster_uuid, i.p.accepted.cluster_uuid
            ));
        }
        if state.term == i.p.accepted.term && state.version < i.p.accepted.version {
            return Response::Refused(format!(
                "incoming version {} lower than current version {}",
                state.version, i.p.accepted.version
            ));
        }
        let Some(master) = state.master_node().cloned() else {
            return Response::Refused("published state names no master".into());
        };
        i.p.current_term = i.p.current_term.max(state.term);
        i.p.accepted = state;
        if let Err(e) = self.persist(&i) {
            return Response::Refused(e);
        }
        i.leader_failures = 0;
        i.mode = Mode::Follower(master);
        self.refresh_view(&i);
        Response::Ack
    }

    pub(super) fn on_follower_check(&self, from: DiscoveryNode, term: u64) -> Response {
        let mut i = self.lock();
        if term < i.p.current_term {
            return Response::Refused(format!(
                "onFollowerCheckRequest: current term is [{}] which is greater than term [{term}] of the follower check",
                i.p.current_term
            ));
        }
        if term > i.p.current_term {
            i.p.current_term = term;
            if let Err(e) = self.persist(&i) {
                return Response::Refused(e);
            }
        }
        match &i.mode {
            Mode::Follower(l) if l.id == from.id => Response::Ack,
            _ if i.p.accepted.master.as_deref() == Some(&from.id) && i.p.accepted.term == term => {
                i.mode = Mode::Follower(from);
                self.refresh_view(&i);
                Response::Ack
            }
            _ => Response::Refused(format!("[{}] is not following [{from}]", self.local())),
        }
    }
}
