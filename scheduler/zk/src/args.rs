//! Command-line flags for ZooKeeper, to `#[command(flatten)]` into a binary's clap `Args`. The URLs
//! themselves come from the binary's own `--state` / `--master` flags (a `zk://` value selects ZooKeeper).

use std::path::PathBuf;
use std::time::Duration;

use crate::session::ZkConfig;
use crate::url::{DigestCredentials, UrlError, ZkUrl};

/// ZooKeeper options shared by every `zk://` flag.
#[derive(Clone, Debug, clap::Args)]
pub struct ZkArgs {
    /// File holding ZooKeeper digest credentials as one line `user:password`. When set, Tether
    /// authenticates its sessions with them and creates its znodes readable and writable by that identity
    /// only. Preferred over credentials inside a zk:// URL; never logged.
    #[arg(long, env = "TETHER_ZK_AUTH_FILE", value_name = "PATH")]
    pub zk_auth_file: Option<PathBuf>,

    /// ZooKeeper session timeout (e.g. `10s`). A leader that loses its session stops acting at once, and
    /// a crashed leader is replaced after about this long. The server clamps it to [2, 20] x its tickTime.
    #[arg(long, env = "TETHER_ZK_SESSION_TIMEOUT", value_name = "DURATION", default_value = "10s",
          value_parser = humantime::parse_duration)]
    pub zk_session_timeout: Duration,
}

impl ZkArgs {
    /// The session config for `url` with these options (reads the auth file, if any).
    pub fn config(&self, url: ZkUrl) -> Result<ZkConfig, UrlError> {
        let credentials = self
            .zk_auth_file
            .as_deref()
            .map(DigestCredentials::from_file)
            .transpose()?;
        Ok(ZkConfig::new(url)
            .with_credentials(credentials)
            .with_session_timeout(self.zk_session_timeout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        zk: ZkArgs,
    }

    #[test]
    fn flags_parse_and_build_a_config() {
        let dir = tempfile::tempdir().unwrap();
        let auth = dir.path().join("auth");
        std::fs::write(&auth, "tether:pw\n").unwrap();
        let cli = Cli::try_parse_from([
            "x",
            "--zk-auth-file",
            auth.to_str().unwrap(),
            "--zk-session-timeout",
            "4s",
        ])
        .unwrap();
        let cfg = cli
            .zk
            .config("zk://h:2181/tether/es".parse().unwrap())
            .unwrap();
        assert_eq!(cfg.session_timeout, Duration::from_secs(4));
        assert_eq!(
            cfg.effective_credentials().map(|c| c.user()),
            Some("tether")
        );

        let defaults = Cli::try_parse_from(["x"]).unwrap();
        let cfg = defaults
            .zk
            .config("zk://h:2181/tether/es".parse().unwrap())
            .unwrap();
        assert_eq!(cfg.session_timeout, ZkConfig::DEFAULT_SESSION_TIMEOUT);
        assert!(cfg.effective_credentials().is_none());
    }
}
