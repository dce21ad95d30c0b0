//! Finding a legacy ("v1") plugin by name, in the Docker engine's order: `<plugin dir>/N.sock`,
//! `<plugin dir>/N/N.sock`, then in each spec dir `N.spec`, `N/N.spec`, `N.json`, `N/N.json`. First hit wins.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// Where the Docker engine looks for plugin sockets.
pub const DEFAULT_PLUGIN_DIRS: &[&str] = &["/run/docker/plugins"];
/// Where the Docker engine looks for `.spec` / `.json` files.
pub const DEFAULT_SPEC_DIRS: &[&str] = &["/etc/docker/plugins", "/usr/lib/docker/plugins"];

/// How to reach a plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginAddr {
    /// A unix socket path.
    Unix(PathBuf),
    /// `host:port` over plain TCP (from `tcp://` or `http://` URLs).
    Tcp(String),
}

impl std::fmt::Display for PluginAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PluginAddr::Unix(p) => write!(f, "unix://{}", p.display()),
            PluginAddr::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

impl PluginAddr {
    /// Parses a spec URL: `unix:///path`, `tcp://host:port`, `http://host:port[/]`, or a bare absolute path.
    pub fn parse(url: &str) -> Result<PluginAddr, DiscoveryError> {
        let url = url.trim();
        let bad = |why: &str| DiscoveryError::BadSpec {
            spec: url.to_string(),
            why: why.to_string(),
        };
        if let Some(path) = url.strip_prefix("unix://") {
            if path.is_empty() {
                return Err(bad("empty socket path"));
            }
            return Ok(PluginAddr::Unix(PathBuf::from(path)));
        }
        if url.starts_with('/') {
            return Ok(PluginAddr::Unix(PathBuf::from(url)));
        }
        if url.starts_with("https://") {
            return Err(bad("https plugins are not supported (no TLS client)"));
        }
        let rest = url
            .strip_prefix("tcp://")
            .or_else(|| url.strip_prefix("http://"))
            .ok_or_else(|| bad("unknown protocol (want unix://, tcp:// or http://)"))?;
        let hostport = rest.split('/').next().unwrap_or_default();
        if hostport.is_empty() || !hostport.contains(':') {
            return Err(bad("want host:port"));
        }
        Ok(PluginAddr::Tcp(hostport.to_string()))
    }
}

/// Why a driver could not be found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    #[error("volume driver {name:?} not found (looked in {searched:?})")]
    NotFound {
        name: String,
        searched: Vec<PathBuf>,
    },
    #[error("invalid volume driver name {0:?}")]
    BadName(String),
    #[error("plugin spec {spec:?}: {why}")]
    BadSpec { spec: String, why: String },
}

/// Finds driver `name` the way the Docker engine does.
pub fn discover(
    name: &str,
    plugin_dirs: &[PathBuf],
    spec_dirs: &[PathBuf],
) -> Result<PluginAddr, DiscoveryError> {
    if name.is_empty() || name.contains('/') || name.contains('\0') || name == "." || name == ".." {
        return Err(DiscoveryError::BadName(name.to_string()));
    }
    let mut searched = Vec::new();
    for dir in plugin_dirs {
        for path in [
            dir.join(format!("{name}.sock")),
            dir.join(name).join(format!("{name}.sock")),
        ] {
            if is_socket(&path) {
                return Ok(PluginAddr::Unix(path));
            }
            searched.push(path);
        }
    }
    for dir in spec_dirs {
        let candidates = [
            dir.join(format!("{name}.spec")),
            dir.join(name).join(format!("{name}.spec")),
            dir.join(format!("{name}.json")),
            dir.join(name).join(format!("{name}.json")),
        ];
        for path in candidates {
            if path.is_file() {
                return read_spec(&path);
            }
            searched.push(path);
        }
    }
    Err(DiscoveryError::NotFound {
        name: name.to_string(),
        searched,
    })
}

fn is_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

fn read_spec(path: &Path) -> Result<PluginAddr, DiscoveryError> {
    let spec = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| DiscoveryError::BadSpec {
        spec: spec.clone(),
        why: e.to_string(),
    })?;
    if path.extension().is_some_and(|e| e == "json") {
        let v: Value = serde_json::from_str(&text).map_err(|e| DiscoveryError::BadSpec {
            spec: spec.clone(),
            why: e.to_string(),
        })?;
        let addr = v
            .as_object()
            .and_then(|o| super::reply::field(o, "Addr"))
            .and_then(Value::as_str)
            .ok_or_else(|| DiscoveryError::BadSpec {
                spec: spec.clone(),
                why: "no \"Addr\" string".into(),
            })?;
        PluginAddr::parse(addr)
    } else {
        PluginAddr::parse(
            text.lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or_default(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_spec_urls() {
        assert_eq!(
            PluginAddr::parse("tcp://127.0.0.1:9000").ok(),
            Some(PluginAddr::Tcp("127.0.0.1:9000".into()))
        );
        assert_eq!(
            PluginAddr::parse("http://h:1/").ok(),
            Some(PluginAddr::Tcp("h:1".into()))
        );
        assert_eq!(
            PluginAddr::parse("unix:///a/b.sock").ok(),
            Some(PluginAddr::Unix("/a/b.sock".into()))
        );
        assert!(PluginAddr::parse("https://h:1").is_err());
        assert!(PluginAddr::parse("ftp://h:1").is_err());
        assert!(PluginAddr::parse("tcp://").is_err());
    }

    #[test]
    fn discovery_order() -> Result<(), Box<dyn std::error::Error>> {
        let tmp = tempfile::tempdir()?;
        let plugins = tmp.path().join("run");
        let specs1 = tmp.path().join("etc");
        let specs2 = tmp.path().join("usr");
        for d in [&plugins, &specs1, &specs2] {
            std::fs::create_dir_all(d.join("n"))?;
        }
        let (p, s) = (vec![plugins.clone()], vec![specs1.clone(), specs2.clone()]);
        assert!(matches!(
            discover("n", &p, &s),
            Err(DiscoveryError::NotFound { .. })
        ));
        assert!(matches!(
            discover("../x", &p, &s),
            Err(DiscoveryError::BadName(_))
        ));

        std::fs::write(specs2.join("n.json"), r#"{"addr":"tcp://10.0.0.1:80"}"#)?;
        assert_eq!(
            discover("n", &p, &s)?,
            PluginAddr::Tcp("10.0.0.1:80".into())
        );
        std::fs::write(
            specs1.join("n").join("n.json"),
            r#"{"Addr":"tcp://10.0.0.2:80"}"#,
        )?;
        assert_eq!(
            discover("n", &p, &s)?,
            PluginAddr::Tcp("10.0.0.2:80".into())
        );
        std::fs::write(specs1.join("n").join("n.spec"), "http://10.0.0.3:80\n")?;
        assert_eq!(
            discover("n", &p, &s)?,
            PluginAddr::Tcp("10.0.0.3:80".into())
        );
        std::fs::write(specs1.join("n.spec"), "tcp://10.0.0.4:80\n")?;
        assert_eq!(
            discover("n", &p, &s)?,
            PluginAddr::Tcp("10.0.0.4:80".into())
        );
        let _l1 = std::os::unix::net::UnixListener::bind(plugins.join("n").join("n.sock"))?;
        assert_eq!(
            discover("n", &p, &s)?,
            PluginAddr::Unix(plugins.join("n").join("n.sock"))
        );
        let _l2 = std::os::unix::net::UnixListener::bind(plugins.join("n.sock"))?;
        assert_eq!(
            discover("n", &p, &s)?,
            PluginAddr::Unix(plugins.join("n.sock"))
        );
        Ok(())
    }
}
