//! Mesos master detection through ZooKeeper (`--master zk://host:2181/mesos`): the masters' contenders
//! register ephemeral sequential `json.info_<seq>` znodes holding MasterInfo JSON; the lowest sequence
//! leads. [`MasterDetector`] follows leader changes and publishes the leading master's address.
//! `log_replicas` and old binary `info_` znodes are ignored.

use std::net::Ipv4Addr;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use zookeeper_client as zk;

use crate::session::{ZkConfig, ZkError, ZkSession};

const JSON_PREFIX: &str = "json.info_";

/// Where the leading master's HTTP API is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MasterAddr {
    /// The master's advertised hostname (`address.hostname`, else top-level `hostname`).
    pub hostname: Option<String>,
    /// The master's IP (`address.ip`, else the top-level `ip` uint32 in network byte order).
    pub ip: Option<String>,
    /// The master's port (`address.port`, else top-level `port`).
    pub port: u16,
    /// The master's id, if given.
    pub id: Option<String>,
}

impl MasterAddr {
    /// The host to connect to: hostname if advertised, else the IP.
    pub fn host(&self) -> &str {
        self.hostname
            .as_deref()
            .or(self.ip.as_deref())
            .unwrap_or_default()
    }

    /// `http://host:port` (IPv6 literals bracketed).
    pub fn url(&self) -> String {
        let host = self.host();
        if host.contains(':') {
            format!("http://[{host}]:{}", self.port)
        } else {
            format!("http://{host}:{}", self.port)
        }
    }
}

/// Why a `json.info_` znode could not be understood.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MasterInfoError {
    /// Not JSON, or not a MasterInfo object.
    #[error("MasterInfo is not valid JSON: {0}")]
    Json(String),
    /// Neither a hostname nor an IP.
    #[error("MasterInfo has no address.hostname, address.ip, hostname or ip")]
    NoHost,
    /// No port in 1..=65535.
    #[error("MasterInfo has no valid port")]
    NoPort,
}

#[derive(Deserialize)]
struct RawAddress {
    hostname: Option<String>,
    ip: Option<String>,
    port: Option<i64>,
}

#[derive(Deserialize)]
struct RawMasterInfo {
    id: Option<String>,
    address: Option<RawAddress>,
    hostname: Option<String>,
    ip: Option<u32>,
    port: Option<i64>,
}

/// Parses the MasterInfo JSON a Mesos master writes into its `json.info_` znode.
pub fn parse_master_info(data: &[u8]) -> Result<MasterAddr, MasterInfoError> {
    let raw: RawMasterInfo =
        serde_json::from_slice(data).map_err(|e| MasterInfoError::Json(e.to_string()))?;
    let nonempty = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
    let (a_host, a_ip, a_port) = match raw.address {
        Some(a) => (nonempty(a.hostname), nonempty(a.ip), a.port),
        None => (None, None, None),
    };
    let hostname = a_host.or(nonempty(raw.hostname));
    // The top-level ip is a uint32 in network byte order, i.e. its little-endian bytes are the octets.
    let ip = a_ip.or(raw
        .ip
        .filter(|ip| *ip != 0)
        .map(|ip| Ipv4Addr::from(ip.to_le_bytes()).to_string()));
    if hostname.is_none() && ip.is_none() {
        return Err(MasterInfoError::NoHost);
    }
    let port = a_port
        .or(raw.port)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .ok_or(MasterInfoError::NoPort)?;
    Ok(MasterAddr {
        hostname,
        ip,
        port,
        id: nonempty(raw.id),
    })
}

/// The sequence number of a `json.info_<seq>` child, or `None` for anything else.
pub fn json_info_seq(name: &str) -> Option<i64> {
    name.strip_prefix(JSON_PREFIX)?.parse().ok()
}

/// Follows the leading Mesos master in ZooKeeper. Stops when dropped.
#[derive(Debug)]
pub struct MasterDetector {
    rx: watch::Receiver<Option<MasterAddr>>,
    stop: CancellationToken,
}

impl MasterDetector {
    /// Connects (failing if ZooKeeper cannot be reached now) and starts following the masters under the
    /// URL's path. Later session loss is handled by reconnecting.
    pub async fn start(config: ZkConfig) -> Result<Self, ZkError> {
        let session = ZkSession::connect(&config).await?;
        let (tx, rx) = watch::channel(None);
        let stop = CancellationToken::new();
        tokio::spawn(follow(config, session, tx, stop.clone()));
        Ok(Self { rx, stop })
    }

    /// A receiver of the leading master (`None` while no master leads or its info is unreadable).
    pub fn watch(&self) -> watch::Receiver<Option<MasterAddr>> {
        self.rx.clone()
    }

    /// The leading master as last seen.
    pub fn current(&self) -> Option<MasterAddr> {
        self.rx.borrow().clone()
    }

    /// Waits until some master leads and returns it.
    pub async fn leader(&self) -> MasterAddr {
        let mut rx = self.rx.clone();
        loop {
            if let Some(m) = rx.borrow_and_update().clone() {
                return m;
            }
            if rx.changed().await.is_err() {
                // The task never drops the sender while we hold `self`; wait forever rather than lie.
                std::future::pending::<()>().await;
            }
        }
    }
}

impl Drop for MasterDetector {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn publish(tx: &watch::Sender<Option<MasterAddr>>, new: Option<MasterAddr>) {
    tx.send_if_modified(|cur| {
        if *cur == new {
            return false;
        }
        match &new {
            Some(m) => {
                tracing::info!(master = %m.url(), id = ?m.id, "leading Mesos master detected")
            }
            None => tracing::warn!("no leading Mesos master in ZooKeeper"),
        }
        *cur = new;
        true
    });
}

async fn follow(
    config: ZkConfig,
    mut session: ZkSession,
    tx: watch::Sender<Option<MasterAddr>>,
    stop: CancellationToken,
) {
    loop {
        match watch_once(&session, &tx, &stop).await {
            Ok(()) => return,
            Err(e) if e.is_session_terminal() => {
                tracing::warn!(error = %e, "ZooKeeper session for master detection ended; reconnecting");
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        r = ZkSession::connect(&config) => match r {
                            Ok(s) => { session = s; break; }
                            Err(e) => {
                                tracing::warn!(error = %e, "cannot reconnect to ZooKeeper for master detection");
                                tokio::select! {
                                    _ = stop.cancelled() => return,
                                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                                }
                            }
                        }
                    }
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "master detection read failed; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
        }
    }
}

/// Follows the masters on one session until stopped (`Ok`) or a read fails (`Err`).
async fn watch_once(
    session: &ZkSession,
    tx: &watch::Sender<Option<MasterAddr>>,
    stop: &CancellationToken,
) -> Result<(), ZkError> {
    let client = session.client();
    let root = session.root();
    let mut state = session.state_watcher();
    loop {
        let now = state.state();
        if matches!(
            now,
            zk::SessionState::Expired | zk::SessionState::Closed | zk::SessionState::AuthFailed
        ) {
            return Err(ZkError::Op {
                op: "watch",
                path: root.to_owned(),
                source: zk::Error::SessionExpired,
            });
        }
        let (children, children_watch) = match client.list_and_watch_children(root).await {
            Ok(r) => r,
            Err(zk::Error::NoNode) => {
                // No master ever registered here yet: wait for the path to appear.
                publish(tx, None);
                let (stat, w) =
                    client
                        .check_and_watch_stat(root)
                        .await
                        .map_err(|source| ZkError::Op {
                            op: "exists",
                            path: root.to_owned(),
                            source,
                        })?;
                if stat.is_none() {
                    tokio::select! {
                        _ = stop.cancelled() => return Ok(()),
                        _ = w.changed() => {}
                    }
                }
                continue;
            }
            Err(source) => {
                return Err(ZkError::Op {
                    op: "list",
                    path: root.to_owned(),
                    source,
                });
            }
        };
        let mut masters: Vec<(i64, String)> = children
            .into_iter()
            .filter_map(|c| json_info_seq(&c).map(|s| (s, c)))
            .collect();
        masters.sort();
        let leader = match masters.first() {
            None => None,
            Some((_, name)) => {
                let path = format!("{root}/{name}");
                match client.get_data(&path).await {
                    Ok((data, _)) => match parse_master_info(&data) {
                        Ok(m) => Some(m),
                        Err(e) => {
                            tracing::warn!(znode = %path, error = %e, "leading master's info is unreadable");
                            None
                        }
                    },
                    // It went away between list and get; the children watch has fired or will.
                    Err(zk::Error::NoNode) => None,
                    Err(source) => {
                        return Err(ZkError::Op {
                            op: "get",
                            path,
                            source,
                        });
                    }
                }
            }
        };
        publish(tx, leader);
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            ev = children_watch.changed() => {
                if ev.event_type == zk::EventType::Session {
                    return Err(ZkError::Op { op: "watch", path: root.to_owned(), source: zk::Error::SessionExpired });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_a_real_master_info() {
        // Shape written by Mesos 1.x masters (src/master/detector, MasterInfo as JSON).
        let json = br#"{"address":{"hostname":"m1.example","ip":"10.0.0.11","port":5050},
            "hostname":"m1.example","id":"8c1c4ab9-2f1f-4a2e-9e5d-1c4d3f6b7a80","ip":184549386,
            "pid":"master@10.0.0.11:5050","port":5050,"version":"1.11.0","capabilities":[{"type":"AGENT_UPDATE"}]}"#;
        let m = parse_master_info(json).unwrap();
        assert_eq!(m.hostname.as_deref(), Some("m1.example"));
        assert_eq!(m.ip.as_deref(), Some("10.0.0.11"));
        assert_eq!(m.port, 5050);
        assert_eq!(m.url(), "http://m1.example:5050");
    }

    #[test]
    fn falls_back_to_ip_and_top_level_fields() {
        let m = parse_master_info(br#"{"address":{"ip":"10.0.0.12","port":5051}}"#).unwrap();
        assert_eq!(m.url(), "http://10.0.0.12:5051");
        let m = parse_master_info(br#"{"hostname":"old.example","port":5050}"#).unwrap();
        assert_eq!(m.url(), "http://old.example:5050");
        // 127.0.0.1 as a uint32 in network byte order.
        let m = parse_master_info(br#"{"ip":16777343,"port":5050}"#).unwrap();
        assert_eq!(m.url(), "http://127.0.0.1:5050");
        let m =
            parse_master_info(br#"{"address":{"hostname":"","ip":"::1","port":5050}}"#).unwrap();
        assert_eq!(m.url(), "http://[::1]:5050");
    }

    #[test]
    fn rejects_unusable_info() {
        assert!(matches!(
            parse_master_info(b"\x08\x01binary protobuf"),
            Err(MasterInfoError::Json(_))
        ));
        assert_eq!(
            parse_master_info(br#"{"port":5050}"#),
            Err(MasterInfoError::NoHost)
        );
        assert_eq!(
            parse_master_info(br#"{"hostname":"h"}"#),
            Err(MasterInfoError::NoPort)
        );
        assert_eq!(
            parse_master_info(br#"{"hostname":"h","port":70000}"#),
            Err(MasterInfoError::NoPort)
        );
    }

    #[test]
    fn only_json_info_children_count() {
        assert_eq!(json_info_seq("json.info_0000000003"), Some(3));
        assert_eq!(json_info_seq("info_0000000001"), None);
        assert_eq!(json_info_seq("log_replicas"), None);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_and_valid_ones_keep_their_port(data in proptest::collection::vec(any::<u8>(), 0..200), port in 1u16..) {
            if let Ok(m) = parse_master_info(&data) {
                prop_assert!(m.port != 0 && !m.host().is_empty());
            }
            let json = format!(r#"{{"address":{{"ip":"10.1.2.3","port":{port}}}}}"#);
            prop_assert_eq!(parse_master_info(json.as_bytes()).unwrap().port, port);
        }
    }
}
