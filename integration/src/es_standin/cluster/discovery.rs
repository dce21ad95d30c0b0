//! Discovery and bootstrapping: probing seed hosts and known nodes, joining an elected master, and the
//! one-time bootstrap from `cluster.initial_master_nodes`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;

use super::Coordinator;
use super::state::{BOOTSTRAP_PLACEHOLDER_PREFIX, DiscoveryNode, VotingConfig};
use super::transport::{Request, Response};

impl Coordinator {
    /// Seeds and every node heard of, as `(address, host to verify)`.
    pub(super) async fn probe_targets(&self) -> Vec<(SocketAddr, String)> {
        let mut out: BTreeMap<SocketAddr, String> = BTreeMap::new();
        // A single-node cluster looks for nobody.
        if self.cfg.single_node {
            return Vec::new();
        }
        for seed in &self.cfg.seed_hosts {
            let (host, port) = split_host_port(seed, self.cfg.default_port);
            match tokio::net::lookup_host((host.as_str(), port)).await {
                Ok(addrs) => {
                    for a in addrs {
                        out.entry(a).or_insert_with(|| host.clone());
                    }
                }
                Err(e) => tracing::debug!(seed, error = %e, "failed to resolve seed host"),
            }
        }
        let known: Vec<DiscoveryNode> = {
            let i = self.lock();
            i.p.accepted
                .nodes
                .values()
                .chain(i.heard_of.values())
                .cloned()
                .collect()
        };
        for n in known {
            out.entry(n.address).or_insert(n.host);
        }
        out.remove(&self.local().address);
        out.into_iter().collect()
    }

    pub(super) async fn discovery_round(self: &Arc<Self>) {
        let targets = self.probe_targets().await;
        let known: Vec<DiscoveryNode> = self.lock().peers.values().cloned().collect();
        let probes = targets.iter().map(|(addr, host)| {
            self.transport.send(
                *addr,
                host,
                Request::Peers {
                    known: known.clone(),
                },
                self.cfg.request_peers_timeout,
            )
        });
        let results = futures::future::join_all(probes).await;
        let mut peers = BTreeMap::new();
        let mut heard_of = BTreeMap::new();
        let mut masters: Vec<DiscoveryNode> = Vec::new();
        for (r, (addr, _)) in results.into_iter().zip(&targets) {
            match r {
                Ok(Response::Peers {
                    node,
                    master,
                    known,
                }) => {
                    let node = *node;
                    if node.id == self.local().id {
                        continue;
                    }
                    for k in known.into_iter().filter(|k| k.id != self.local().id) {
                        heard_of.insert(k.id.clone(), k);
                    }
                    if let Some(m) = master.map(|m| *m).filter(|m| m.id != self.local().id)
                        && !masters.contains(&m)
                    {
                        masters.push(m);
                    }
                    if node.is_master_eligible() {
                        peers.insert(node.id.clone(), node);
                    }
                }
                Ok(other) => tracing::debug!(%addr, ?other, "unexpected answer to a peers request"),
                Err(e) => tracing::debug!(error = %e, "peer probe failed"),
            }
        }
        {
            let mut i = self.lock();
            i.peers = peers;
            i.heard_of = heard_of;
        }
        for master in masters {
            if self.join(&master).await {
                return;
            }
        }
        self.maybe_bootstrap();
        self.maybe_elect().await;
    }

    /// Asks `master` to add this node; true when it did.
    pub(super) async fn join(&self, master: &DiscoveryNode) -> bool {
        match self
            .transport
            .send_to(master, Request::Join, self.cfg.publish_timeout)
            .await
        {
            Ok(_) => {
                tracing::info!(node = %self.local().name, master = %master, "joined the cluster");
                true
            }
            Err(e) => {
                tracing::warn!(
                    "failed to join {master} with JoinRequest{{sourceNode={}}}: {e}",
                    self.local()
                );
                false
            }
        }
    }

    pub(super) fn maybe_bootstrap(&self) {
        let mut i = self.lock();
        if !i.p.accepted.last_accepted_config.is_empty()
            || !i.bootstrapping_permitted
            || !self.local().is_master_eligible()
        {
            return;
        }
        let mut discovered: Vec<DiscoveryNode> = vec![self.local().clone()];
        discovered.extend(i.peers.values().cloned());
        let config: BTreeSet<String> = if self.cfg.single_node {
            BTreeSet::from([self.local().id.clone()])
        } else if !self.cfg.initial_master_nodes.is_empty() {
            let reqs = &self.cfg.initial_master_nodes;
            let (matched, unmatched) = match check_requirements(&discovered, reqs) {
                Ok(x) => x,
                Err(msg) => {
                    tracing::warn!("bootstrapping cancelled: {msg}");
                    i.bootstrapping_permitted = false;
                    return;
                }
            };
            if !matched.contains(&self.local().id) {
                tracing::info!(
                    "skipping cluster bootstrapping as local node does not match bootstrap requirements: [{}]",
                    reqs.join(", ")
                );
                i.bootstrapping_permitted = false;
                return;
            }
            if matched.len() * 2 <= reqs.len() {
                return;
            }
            matched
                .into_iter()
                .chain(
                    unmatched
                        .iter()
                        .map(|r| format!("{BOOTSTRAP_PLACEHOLDER_PREFIX}{r}")),
                )
                .collect()
        } else if let Some(after) = self.cfg.unconfigured_bootstrap {
            if self.started.elapsed() < after {
                return;
            }
            tracing::info!(
                "performing best-effort cluster bootstrapping with the discovered nodes"
            );
            discovered
                .iter()
                .filter(|n| n.is_master_eligible())
                .map(|n| n.id.clone())
                .collect()
        } else {
            return;
        };
        i.bootstrapping_permitted = false;
        let config = VotingConfig(config);
        tracing::info!(node = %self.local().name, "setting initial configuration to VotingConfiguration{config}");
        i.p.accepted.last_committed_config = config.clone();
        i.p.accepted.last_accepted_config = config;
        let _ = self.persist(&i);
    }

    pub(super) fn warn_not_formed(&self) {
        let i = self.lock();
        let mut discovered: Vec<String> = vec![self.local().to_string()];
        discovered.extend(i.peers.values().map(ToString::to_string));
        let discovered = discovered.join(", ");
        let seeds = self.cfg.seed_hosts.join(", ");
        let msg = if i.p.accepted.last_accepted_config.is_empty() {
            if self.cfg.initial_master_nodes.is_empty() {
                format!(
                    "master not discovered yet, this node has not previously joined a bootstrapped cluster, and [cluster.initial_master_nodes] is empty on this node: have discovered [{discovered}]; discovery will continue using [{seeds}] from hosts providers"
                )
            } else {
                format!(
                    "master not discovered yet, this node has not previously joined a bootstrapped cluster, and this node must discover master-eligible nodes [{}] to bootstrap a cluster: have discovered [{discovered}]; discovery will continue using [{seeds}] from hosts providers",
                    self.cfg.initial_master_nodes.join(", ")
                )
            }
        } else {
            format!(
                "master not discovered or elected yet, an election requires at least {} nodes with ids from {}, have discovered [{discovered}]; discovery will continue using [{seeds}] from hosts providers; node term {}, last-accepted version {} in term {}",
                i.p.accepted.last_accepted_config.quorum_size(),
                i.p.accepted.last_accepted_config,
                i.p.current_term,
                i.p.accepted.version,
                i.p.accepted.term
            )
        };
        tracing::warn!(node = %self.local().name, "{msg}");
    }
}

/// `(matched node ids, unmatched requirements)`; refuses a requirement matching two nodes or a node
/// matching two requirements, as `ClusterBootstrapService` does.
fn check_requirements(
    nodes: &[DiscoveryNode],
    reqs: &[String],
) -> Result<(BTreeSet<String>, Vec<String>), String> {
    let mut selected = BTreeSet::new();
    let mut unmatched = Vec::new();
    for r in reqs {
        let matching: Vec<&DiscoveryNode> = nodes
            .iter()
            .filter(|n| n.is_master_eligible() && n.matches_requirement(r))
            .collect();
        match matching.as_slice() {
            [] => unmatched.push(r.clone()),
            [one] => {
                if !selected.insert(one.id.clone()) {
                    return Err(format!(
                        "node [{one}] matches multiple requirements: [{}]",
                        reqs.join(", ")
                    ));
                }
            }
            many => {
                let names: Vec<String> = many.iter().map(ToString::to_string).collect();
                return Err(format!(
                    "requirement [{r}] matches multiple nodes: [{}]",
                    names.join(", ")
                ));
            }
        }
    }
    Ok((selected, unmatched))
}

/// `host:port`, `[v6]:port` or a bare host (then `default_port`).
fn split_host_port(seed: &str, default_port: u16) -> (String, u16) {
    if let Some(rest) = seed.strip_prefix('[')
        && let Some((host, tail)) = rest.split_once(']')
    {
        let port = tail
            .strip_prefix(':')
            .and_then(|p| p.parse().ok())
            .unwrap_or(default_port);
        return (host.to_owned(), port);
    }
    match seed.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => {
            (host.to_owned(), port.parse().unwrap_or(default_port))
        }
        _ => (seed.to_owned(), default_port),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::es_standin::image::EsVersion;

    fn node(id: &str, name: &str, addr: &str) -> DiscoveryNode {
        DiscoveryNode {
            id: id.into(),
            name: name.into(),
            address: addr.parse().expect("addr"),
            host: "127.0.0.1".into(),
            roles: BTreeSet::from(["master".to_owned(), "data".to_owned()]),
            version: EsVersion::DEFAULT,
            attributes: BTreeMap::new(),
            ephemeral_id: String::new(),
        }
    }

    #[test]
    fn bootstrap_requirements_match_names_addresses_and_ips() {
        let nodes = vec![
            node("i1", "es-1", "127.0.0.1:9301"),
            node("i2", "es-2", "127.0.0.2:9300"),
        ];
        let reqs: Vec<String> = ["es-1", "127.0.0.2", "es-3"].map(String::from).to_vec();
        let (matched, unmatched) = check_requirements(&nodes, &reqs).expect("ok");
        assert_eq!(matched, BTreeSet::from(["i1".to_owned(), "i2".to_owned()]));
        assert_eq!(unmatched, vec!["es-3".to_owned()]);
        let ambiguous: Vec<String> = ["127.0.0.1:9301", "es-1"].map(String::from).to_vec();
        assert!(check_requirements(&nodes, &ambiguous).is_err());
    }

    #[test]
    fn seeds_split_into_host_and_port() {
        assert_eq!(split_host_port("a:9301", 9300), ("a".into(), 9301));
        assert_eq!(split_host_port("a", 9300), ("a".into(), 9300));
        assert_eq!(split_host_port("[::1]:9305", 9300), ("::1".into(), 9305));
    }
}
