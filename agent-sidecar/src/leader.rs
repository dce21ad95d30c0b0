//! Which scheduler to dial. `--scheduler` is one URL, several (comma-separated: the HA candidates), or
//! `zk://hosts/<root>`, the schedulers' `--state`, where the leader's advertised admin address is read
//! from the election (`<root>/leader`, lowest `member-<seq>`, as `tether_zk::current_leader` reads it).
//! A standby refuses a sidecar with UNAVAILABLE and the metadata `tether-leader: <host:port>`; the
//! sidecar dials that address next, so whichever URL it was given first it ends up at the leader.

use std::str::FromStr as _;

use tether_zk::{ZkArgs, ZkConfig, ZkSession, ZkUrl};

/// The metadata key a standby names the leader with (`agent.proto`).
pub const LEADER_METADATA: &str = "tether-leader";

#[derive(Debug, Clone)]
enum Source {
    Urls(Vec<String>),
    Zk(ZkConfig),
}

/// Where the next dial goes.
#[derive(Debug, Clone)]
pub struct Targets {
    source: Source,
    /// The next URL of the list to try.
    next: usize,
    /// `https` for addresses read from ZooKeeper or named by a standby (the scheduler is TLS when
    /// `--scheduler-ca` is given).
    tls: bool,
}

impl Targets {
    /// Parses `--scheduler`. `tls`: the scheduler speaks TLS (for addresses without a scheme).
    pub fn parse(raw: &str, zk: &ZkArgs, tls: bool) -> Result<Targets, String> {
        let raw = raw.trim();
        let source = if ZkUrl::is_zk(raw) {
            let url = ZkUrl::from_str(raw).map_err(|e| format!("--scheduler {raw:?}: {e}"))?;
            Source::Zk(
                zk.config(url)
                    .map_err(|e| format!("--scheduler {raw:?}: {e}"))?,
            )
        } else {
            let urls: Vec<String> = raw
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_owned)
                .collect();
            if urls.is_empty() {
                return Err("--scheduler must name at least one URL".into());
            }
            Source::Urls(urls)
        };
        Ok(Targets {
            source,
            next: 0,
            tls,
        })
    }

    /// The URLs given, for checking them at start-up (none with `zk://`).
    pub fn urls(&self) -> &[String] {
        match &self.source {
            Source::Urls(u) => u,
            Source::Zk(_) => &[],
        }
    }

    /// The URL to dial next: the list in turn, or the leader ZooKeeper names now.
    pub async fn next(&mut self) -> Result<String, String> {
        match &self.source {
            Source::Urls(urls) => {
                let url = urls[self.next % urls.len()].clone();
                self.next = (self.next + 1) % urls.len();
                Ok(url)
            }
            Source::Zk(config) => {
                let session = ZkSession::connect(config)
                    .await
                    .map_err(|e| format!("ZooKeeper {}: {e}", config.url.connect_string()))?;
                let leader = tether_zk::current_leader(&session)
                    .await
                    .map_err(|e| format!("reading the scheduler leader: {e}"))?;
                let leader = leader.ok_or_else(|| {
                    format!(
                        "no tether-scheduler campaigns under {} yet",
                        config.url.path()
                    )
                })?;
                Ok(self.leader_url(&leader.admin_address))
            }
        }
    }

    /// The URL of an address a standby or ZooKeeper named: `host:port` gets this sidecar's scheme.
    pub fn leader_url(&self, address: &str) -> String {
        if address.contains("://") {
            address.to_owned()
        } else {
            let scheme = if self.tls { "https" } else { "http" };
            format!("{scheme}://{address}")
        }
    }
}

/// The leader a refusal names, when it is a standby's.
pub fn leader_of(status: &tonic::Status) -> Option<String> {
    if status.code() != tonic::Code::Unavailable {
        return None;
    }
    status
        .metadata()
        .get(LEADER_METADATA)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        zk: ZkArgs,
    }

    fn zk() -> ZkArgs {
        Cli::try_parse_from(["x"]).expect("defaults").zk
    }

    #[tokio::test]
    async fn several_urls_are_tried_in_turn() {
        let mut t = Targets::parse("http://a:1, http://b:2,", &zk(), false).expect("parses");
        assert_eq!(t.urls(), ["http://a:1", "http://b:2"]);
        assert_eq!(t.next().await.as_deref(), Ok("http://a:1"));
        assert_eq!(t.next().await.as_deref(), Ok("http://b:2"));
        assert_eq!(t.next().await.as_deref(), Ok("http://a:1"));
        assert!(Targets::parse(" , ", &zk(), false).is_err());
    }

    #[test]
    fn zk_urls_and_named_leaders_parse() {
        let t = Targets::parse("zk://z1:2181,z2:2181/tether/es", &zk(), true).expect("parses");
        assert!(t.urls().is_empty());
        assert_eq!(t.leader_url("10.0.0.5:7070"), "https://10.0.0.5:7070");
        assert_eq!(t.leader_url("http://s:1"), "http://s:1");
        assert!(Targets::parse("zk://", &zk(), false).is_err());
    }

    #[test]
    fn only_a_standbys_refusal_names_a_leader() {
        let mut s = tonic::Status::unavailable("standby");
        assert_eq!(leader_of(&s), None);
        s.metadata_mut()
            .insert(LEADER_METADATA, "10.0.0.5:7070".parse().expect("ascii"));
        assert_eq!(leader_of(&s).as_deref(), Some("10.0.0.5:7070"));
        let mut other = tonic::Status::permission_denied("no");
        other
            .metadata_mut()
            .insert(LEADER_METADATA, "10.0.0.5:7070".parse().expect("ascii"));
        assert_eq!(leader_of(&other), None);
    }
}
