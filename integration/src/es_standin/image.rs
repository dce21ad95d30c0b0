//! The official image as the stand-in plays it: the version its tag names, the files it ships and what its
//! entrypoint does before Elasticsearch starts.
//!
//! - **Version**: from the task's image tag (`TETHER_TASK_IMAGE`, set by the emulator's launchers):
//!   `…:8.13.4`, `…:7.17`, `…:8`; a tag that is not a version (`latest`, `dev`) plays [`EsVersion::DEFAULT`].
//!   Only 7.17 and 8.x are played.
//! - **Layout**: `ES_HOME=/usr/share/elasticsearch` with `config`, `data` and `logs`, all 1000:0 and 0775;
//!   the config directory holds `elasticsearch.yml` (`cluster.name: docker-cluster`, `network.host:
//!   0.0.0.0`, so a node is in production mode unless told otherwise), `jvm.options` (no heap: it is sized
//!   automatically) and `log4j2.properties`. Under the process launcher the stand-in lays these out in the
//!   task's layer when they are missing; a volume mounted over one of them hides it, as in a container.
//! - **Entrypoint**: `ELASTIC_PASSWORD_FILE` (exclusive with `ELASTIC_PASSWORD`, must exist with mode 400
//!   or 600, read as the node's user), then `ELASTIC_PASSWORD` added to the keystore of the *default*
//!   config directory as `bootstrap.password` unless already there (never overwritten); 7.17 started as
//!   root runs `chown -R 1000:0` on `ES_HOME/{data,logs}` when `TAKE_FILE_OWNERSHIP` is set and drops to
//!   1000:0; 8.0–8.2 drop the command's arguments, 8.3+ pass them to Elasticsearch.
//! - **Keystore**: `<config>/elasticsearch.keystore`; Elasticsearch creates, seeds or upgrades it at start
//!   through a temporary file, so the config directory must be writable by the node's user.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::container::{Access, ContainerFs, Identity, PathError};

pub use crate::mesos_emu::launcher::TASK_IMAGE_ENV;

/// `ES_HOME` in the image.
pub const ES_HOME: &str = "/usr/share/elasticsearch";
/// The image's config directory (also where the entrypoint always puts the keystore).
pub const DEFAULT_CONFIG_DIR: &str = "/usr/share/elasticsearch/config";
pub const KEYSTORE_FILE: &str = "elasticsearch.keystore";

/// An Elasticsearch version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EsVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl EsVersion {
    /// Played when the image tag names no version.
    pub const DEFAULT: EsVersion = EsVersion {
        major: 8,
        minor: 15,
        patch: 0,
    };

    /// The version the image tag names (see the module header).
    pub fn from_image(image: Option<&str>) -> Result<EsVersion, String> {
        let Some(image) = image.filter(|i| !i.is_empty()) else {
            return Ok(EsVersion::DEFAULT);
        };
        let no_digest = image.split('@').next().unwrap_or(image);
        let last = no_digest.rsplit('/').next().unwrap_or(no_digest);
        let Some((_, tag)) = last.rsplit_once(':') else {
            return Ok(EsVersion::DEFAULT);
        };
        let numbers: Vec<&str> = tag
            .split(['-', '+'])
            .next()
            .unwrap_or("")
            .split('.')
            .collect();
        let parsed: Option<Vec<u32>> = numbers.iter().map(|n| n.parse().ok()).collect();
        let Some(parsed) = parsed.filter(|p| !p.is_empty() && p.len() <= 3) else {
            return Ok(EsVersion::DEFAULT);
        };
        let version = match parsed.as_slice() {
            [8] => EsVersion::DEFAULT,
            [7] => EsVersion::new(7, 17, 0),
            [major, minor] => EsVersion::new(*major, *minor, 0),
            [major, minor, patch] => EsVersion::new(*major, *minor, *patch),
            _ => EsVersion::new(parsed[0], 0, 0),
        };
        if version.major == 8 || (version.major == 7 && version.minor == 17) {
            Ok(version)
        } else {
            Err(format!(
                "es-standin plays Elasticsearch 7.17 and 8.x; image [{image}] names {version}"
            ))
        }
    }

    pub const fn new(major: u32, minor: u32, patch: u32) -> EsVersion {
        EsVersion {
            major,
            minor,
            patch,
        }
    }

    pub fn is_8(&self) -> bool {
        self.major >= 8
    }

    /// The user the image starts its entrypoint as.
    pub fn image_user(&self) -> Identity {
        if self.is_8() {
            Identity::ELASTICSEARCH
        } else {
            Identity::ROOT
        }
    }
}

impl std::fmt::Display for EsVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// What the entrypoint or the image refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// The entrypoint's own `ERROR: …` lines.
    #[error("ERROR: {0}")]
    Entrypoint(String),
    /// Elasticsearch could not use its config directory.
    #[error("{0}")]
    Config(String),
}

/// The files the image ships in its config directory.
fn bundled_config() -> [(&'static str, &'static str); 3] {
    [
        (
            "elasticsearch.yml",
            "cluster.name: \"docker-cluster\"\nnetwork.host: 0.0.0.0\n",
        ),
        (
            "jvm.options",
            "## The heap is sized automatically unless -Xms/-Xmx are set in jvm.options.d or ES_JAVA_OPTS.\n\
             -XX:+UseG1GC\n",
        ),
        ("log4j2.properties", "status = error\n"),
    ]
}

/// Lays out the image's own directories and config files where they are missing (under the process
/// launcher only: a real container already has them).
pub fn materialize_layer(fs: &ContainerFs) -> Result<(), PathError> {
    if !fs.emulated() {
        return Ok(());
    }
    for (dir, mode, owner) in [
        ("/usr", 0o755, Identity::ROOT),
        ("/usr/share", 0o755, Identity::ROOT),
        (ES_HOME, 0o775, Identity::ELASTICSEARCH),
        (DEFAULT_CONFIG_DIR, 0o775, Identity::ELASTICSEARCH),
        (
            "/usr/share/elasticsearch/data",
            0o775,
            Identity::ELASTICSEARCH,
        ),
        (
            "/usr/share/elasticsearch/logs",
            0o775,
            Identity::ELASTICSEARCH,
        ),
    ] {
        fs.make_dir(Path::new(dir), mode, owner)?;
    }
    let config = Path::new(DEFAULT_CONFIG_DIR);
    // A volume mounted over the config directory hides the image's files.
    if fs.host(config)
        == fs
            .host(Path::new("/"))
            .join(DEFAULT_CONFIG_DIR.trim_start_matches('/'))
    {
        for (name, body) in bundled_config() {
            fs.make_file(
                &config.join(name),
                body.as_bytes(),
                0o664,
                Identity::ELASTICSEARCH,
            )?;
        }
    }
    Ok(())
}

/// The keystore: secure settings, here only `bootstrap.password`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Keystore {
    #[serde(default)]
    pub entries: BTreeMap<String, String>,
}

impl Keystore {
    pub const BOOTSTRAP_PASSWORD: &'static str = "bootstrap.password";

    fn path(config_dir: &Path) -> PathBuf {
        config_dir.join(KEYSTORE_FILE)
    }

    /// Loads the keystore of `config_dir`; `None` when there is none.
    pub fn load(
        fs: &ContainerFs,
        config_dir: &Path,
        who: Identity,
    ) -> Result<Option<Keystore>, ImageError> {
        let path = Keystore::path(config_dir);
        if !fs.host(&path).exists() {
            return Ok(None);
        }
        let bytes = fs
            .read(&path, who)
            .map_err(|e| ImageError::Config(format!("unable to read keystore: {e}")))?;
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            ImageError::Config(format!(
                "{}: not a keystore written by es-standin: {e}",
                path.display()
            ))
        })
    }

    /// Saves it as `who` would: a temporary file in the config directory, then renamed.
    pub fn save(
        &self,
        fs: &ContainerFs,
        config_dir: &Path,
        who: Identity,
    ) -> Result<(), PathError> {
        let path = Keystore::path(config_dir);
        let tmp = config_dir.join(format!("{KEYSTORE_FILE}.tmp"));
        fs.check(&tmp, Access::Write, who)
            .map_err(|_| PathError::Denied(tmp.display().to_string()))?;
        let body = serde_json::to_vec(self).unwrap_or_default();
        let io = |e: std::io::Error| PathError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        super::data_path::write_durably(&fs.host(&path), &body).map_err(io)?;
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(fs.host(&path), std::fs::Permissions::from_mode(0o660))
            .map_err(io)?;
        fs.give(&fs.host(&path), who).map_err(io)
    }
}

/// What the entrypoint hands to Elasticsearch.
#[derive(Debug, Clone)]
pub struct Entrypoint {
    /// The identity Elasticsearch runs as.
    pub identity: Identity,
    /// The command's arguments passed to Elasticsearch (8.0–8.2 drop them).
    pub args_passed: bool,
}

/// Runs the entrypoint's steps (see the module header) for a process starting as `start`.
pub fn run_entrypoint(
    version: EsVersion,
    env: &BTreeMap<String, String>,
    fs: &ContainerFs,
    start: Identity,
) -> Result<Entrypoint, ImageError> {
    // 7.17 runs these steps as root and Elasticsearch as 1000:0; 8.x runs everything as its USER.
    let es_user = if !version.is_8() && start.uid == 0 {
        Identity::ELASTICSEARCH
    } else {
        start
    };
    let password = elastic_password(env, fs, es_user)?;
    if let Some(password) = password.filter(|p| !p.is_empty()) {
        let config = Path::new(DEFAULT_CONFIG_DIR);
        let mut ks = Keystore::load(fs, config, es_user)?.unwrap_or_default();
        if !ks.entries.contains_key(Keystore::BOOTSTRAP_PASSWORD) {
            ks.entries
                .insert(Keystore::BOOTSTRAP_PASSWORD.to_owned(), password);
            ks.save(fs, config, es_user)
                .map_err(|e| ImageError::Entrypoint(format!("java.nio.file.{e}")))?;
        }
    }
    if !version.is_8()
        && start.uid == 0
        && env
            .get("TAKE_FILE_OWNERSHIP")
            .is_some_and(|v| !v.is_empty())
    {
        for dir in ["data", "logs"] {
            fs.chown_recursive(&Path::new(ES_HOME).join(dir), Identity::ELASTICSEARCH)
                .map_err(|e| ImageError::Entrypoint(format!("chown: {e}")))?;
        }
    }
    let args_passed = !(version.is_8() && version.minor <= 2);
    Ok(Entrypoint {
        identity: es_user,
        args_passed,
    })
}

/// `ELASTIC_PASSWORD`, or the content of `ELASTIC_PASSWORD_FILE` (`bin/elasticsearch-env-from-file`).
fn elastic_password(
    env: &BTreeMap<String, String>,
    fs: &ContainerFs,
    who: Identity,
) -> Result<Option<String>, ImageError> {
    let Some(file) = env.get("ELASTIC_PASSWORD_FILE").filter(|f| !f.is_empty()) else {
        return Ok(env.get("ELASTIC_PASSWORD").cloned());
    };
    if env.contains_key("ELASTIC_PASSWORD") {
        return Err(ImageError::Entrypoint(
            "Both ELASTIC_PASSWORD_FILE and ELASTIC_PASSWORD are set. These are mutually exclusive."
                .into(),
        ));
    }
    let path = Path::new(file);
    let Some(mode) = fs.mode(path) else {
        return Err(ImageError::Entrypoint(format!(
            "File {file} from ELASTIC_PASSWORD_FILE does not exist"
        )));
    };
    if mode != 0o400 && mode != 0o600 {
        return Err(ImageError::Entrypoint(format!(
            "File {file} from ELASTIC_PASSWORD_FILE must have file permissions 400 or 600, but actually has: {mode:o}"
        )));
    }
    // `$(cat file)` as the node's user: an unreadable file gives an empty password.
    match fs.read(path, who) {
        Ok(bytes) => Ok(Some(
            String::from_utf8_lossy(&bytes)
                .trim_end_matches('\n')
                .to_owned(),
        )),
        Err(e) => {
            tracing::warn!("cat: {file}: Permission denied ({e})");
            Ok(Some(String::new()))
        }
    }
}

/// What the config directory gives Elasticsearch.
#[derive(Debug, Clone)]
pub struct ConfigDir {
    pub path: PathBuf,
    pub yml: Option<String>,
    pub jvm_options: Vec<String>,
    pub keystore: Keystore,
}

/// Reads the config directory as `who`: `jvm.options` and `log4j2.properties` must be there,
/// `elasticsearch.yml` may be; a missing keystore is created.
pub fn read_config_dir(
    env: &BTreeMap<String, String>,
    fs: &ContainerFs,
    who: Identity,
) -> Result<ConfigDir, ImageError> {
    let path = PathBuf::from(
        env.get("ES_PATH_CONF")
            .filter(|p| !p.is_empty())
            .map(String::as_str)
            .unwrap_or(DEFAULT_CONFIG_DIR),
    );
    fs.check(&path, Access::Read, who)
        .map_err(|e| ImageError::Config(format!("ES_PATH_CONF [{}]: {e}", path.display())))?;
    let jvm = path.join("jvm.options");
    let jvm_text = fs
        .read(&jvm, who)
        .map_err(|e| ImageError::Config(format!("java.nio.file.{e}")))?;
    let mut jvm_options: Vec<String> = String::from_utf8_lossy(&jvm_text)
        .lines()
        .map(str::to_owned)
        .collect();
    let jvm_d = path.join("jvm.options.d");
    if let Ok(entries) = std::fs::read_dir(fs.host(&jvm_d)) {
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "options"))
            .collect();
        files.sort();
        for f in files {
            let name = jvm_d.join(f.file_name().unwrap_or_default());
            let text = fs
                .read(&name, who)
                .map_err(|e| ImageError::Config(format!("java.nio.file.{e}")))?;
            jvm_options.extend(String::from_utf8_lossy(&text).lines().map(str::to_owned));
        }
    }
    let log4j = path.join("log4j2.properties");
    if fs.check(&log4j, Access::Read, who).is_err() {
        return Err(ImageError::Config(format!(
            "no log4j2.properties found; tried [{}] and its subdirectories",
            path.display()
        )));
    }
    let yml_path = path.join("elasticsearch.yml");
    let yml = if fs.host(&yml_path).exists() {
        let bytes = fs
            .read(&yml_path, who)
            .map_err(|e| ImageError::Config(format!("java.nio.file.{e}")))?;
        Some(String::from_utf8_lossy(&bytes).into_owned())
    } else {
        None
    };
    // Elasticsearch writes its keystore (`elasticsearch.keystore.tmp`, then a rename) when it creates,
    // seeds or upgrades it, so the directory must be writable even when a keystore is there.
    if fs.check(&path, Access::Write, who).is_err() {
        return Err(ImageError::Config(format!(
            "java.nio.file.AccessDeniedException[{}]: the config directory must be writable by {who}",
            path.join(format!("{KEYSTORE_FILE}.tmp")).display()
        )));
    }
    let keystore = match Keystore::load(fs, &path, who)? {
        Some(ks) => ks,
        None => {
            let ks = Keystore::default();
            ks.save(fs, &path, who)
                .map_err(|e| ImageError::Config(format!("java.nio.file.{e}")))?;
            ks
        }
    };
    Ok(ConfigDir {
        path,
        yml,
        jvm_options,
        keystore,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_comes_from_the_image_tag() {
        let v = |i: &str| EsVersion::from_image(Some(i));
        assert_eq!(
            v("docker.elastic.co/elasticsearch/elasticsearch:8.13.4"),
            Ok(EsVersion::new(8, 13, 4))
        );
        assert_eq!(v("elasticsearch:7.17.22"), Ok(EsVersion::new(7, 17, 22)));
        assert_eq!(v("elasticsearch:7.17"), Ok(EsVersion::new(7, 17, 0)));
        assert_eq!(v("elasticsearch:8"), Ok(EsVersion::DEFAULT));
        assert_eq!(v("tether/es-standin:dev"), Ok(EsVersion::DEFAULT));
        assert_eq!(v("localhost:5000/es"), Ok(EsVersion::DEFAULT));
        assert_eq!(v("es:8.15.1@sha256:abc"), Ok(EsVersion::new(8, 15, 1)));
        assert!(v("elasticsearch:6.8.23").is_err());
        assert!(v("elasticsearch:7.10.2").is_err());
        assert_eq!(EsVersion::from_image(None), Ok(EsVersion::DEFAULT));
    }
}
