//! The node's data path: where it is, who may write it, the exclusive `node.lock`, and what lives there.
//!
//! - Default `path.data` is `ES_HOME/data` — a directory of the task's own layer unless a volume is
//!   mounted exactly there, so data not on a volume is lost when the task goes. A relative `path.data` is
//!   relative to `ES_HOME` (the image's working directory). 8.x accepts one data path only.
//! - Before using it the node checks, as its user, that it may create entries there; then it holds an
//!   exclusive `flock` on `<data>/node.lock` for its whole life. Either failure is Elasticsearch's
//!   "failed to obtain node locks" — the check that catches an unwritable volume and two writers on one
//!   data directory. Before every document read and write the node checks that `<data>/node.lock` is
//!   still the file it locked ([`LockCheck`], Lucene's `NativeFSLock.ensureValid`): a volume
//!   force-detached underneath the node (another host mounted it with preemption) fails that check, so
//!   the node acknowledges nothing more, as Elasticsearch fails on the IO errors of a lost volume.
//! - `<data>/_state/` holds the coordination state (node id, term, last accepted cluster state; see
//!   `cluster::state`), `<data>/indices/` the documents, `<data>/node.json` the Tether node id that first
//!   created the data (the stand-in's own record, so tests can prove a relaunched node found its volume).

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::container::{Access, ContainerFs, Identity};
use super::image::{ES_HOME, EsVersion};
use super::settings::{Settings, SettingsError};

/// Why the data path cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DataPathError {
    #[error(
        "failed to obtain node locks, tried [{tried}]; maybe these locations are not writable or multiple nodes were started on the same data path?: {cause}"
    )]
    NodeLock { tried: String, cause: String },
    #[error("data path {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The data path a node uses: its container path and where that is on this host.
#[derive(Debug, Clone)]
pub struct DataPath {
    pub container: PathBuf,
    pub host: PathBuf,
}

/// Identifies the node lock this node holds, to tell later whether the data path still holds it.
#[derive(Debug, Clone)]
pub struct LockCheck {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl LockCheck {
    /// The identity of `lock`, the open and locked `<data>/node.lock` of `data`.
    pub fn new(lock: &File, data: &DataPath) -> Result<LockCheck, DataPathError> {
        use std::os::unix::fs::MetadataExt as _;
        let meta = lock.metadata().map_err(|source| DataPathError::Io {
            path: data.host.clone(),
            source,
        })?;
        Ok(LockCheck {
            path: data.host.join("node.lock"),
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    /// `Err` with Elasticsearch's words when the data path no longer holds the lock this node took.
    pub fn ensure_valid(&self) -> Result<(), String> {
        use std::os::unix::fs::MetadataExt as _;
        match fs::metadata(&self.path) {
            Ok(m) if m.dev() == self.dev && m.ino() == self.ino => Ok(()),
            Ok(_) => Err(format!(
                "environment is not locked: Underlying file changed by an external force ({})",
                self.path.display()
            )),
            Err(e) => Err(format!(
                "environment is not locked: {}: {e}",
                self.path.display()
            )),
        }
    }
}

/// `path.data` from the settings (see the module header).
pub fn configured(settings: &Settings, version: EsVersion) -> Result<PathBuf, SettingsError> {
    let paths = settings.list("path.data");
    let raw = match paths.as_slice() {
        [] => format!("{ES_HOME}/data"),
        [one] => one.clone(),
        [first, ..] if !version.is_8() => {
            tracing::warn!("es-standin uses only the first of several [path.data] values");
            first.clone()
        }
        _ => {
            return Err(SettingsError::Invalid(
                "Multiple [path.data] values found. Specify a single data path.".into(),
            ));
        }
    };
    let p = Path::new(&raw);
    Ok(if p.is_absolute() {
        p.to_path_buf()
    } else {
        Path::new(ES_HOME).join(p)
    })
}

/// Checks `who` may write the data path, creates it and takes its lock.
pub fn open(
    fs: &ContainerFs,
    container: &Path,
    who: Identity,
) -> Result<(DataPath, File), DataPathError> {
    let tried = container.display().to_string();
    let lock_path = container.join("node.lock");
    fs.check(container, Access::Write, who)
        .map_err(|e| DataPathError::NodeLock {
            tried: tried.clone(),
            cause: match e {
                super::container::PathError::Denied(_) => {
                    format!("AccessDeniedException[{}]", lock_path.display())
                }
                other => other.to_string(),
            },
        })?;
    fs.create_dir_all(container, who)
        .map_err(|e| DataPathError::NodeLock {
            tried: tried.clone(),
            cause: e.to_string(),
        })?;
    let host = fs.host(container);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(host.join("node.lock"))
        .map_err(|source| DataPathError::Io {
            path: host.clone(),
            source,
        })?;
    let _ = fs.give(&host.join("node.lock"), who);
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok((
            DataPath {
                container: container.to_path_buf(),
                host,
            },
            file,
        )),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(DataPathError::NodeLock {
            tried,
            cause: format!(
                "LockObtainFailedException[Lock held by another program: {}]",
                lock_path.display()
            ),
        }),
        Err(e) => Err(DataPathError::Io {
            path: host,
            source: e.into(),
        }),
    }
}

impl DataPath {
    pub fn state_dir(&self) -> PathBuf {
        self.host.join("_state")
    }

    pub fn indices(&self) -> PathBuf {
        self.host.join("indices")
    }

    /// Returns the Tether node id recorded in `node.json`, recording `node_id` there when the data path
    /// is new.
    pub fn record_owner(&self, node_id: Option<&str>) -> Result<Option<String>, DataPathError> {
        let path = self.host.join("node.json");
        let io = |source| DataPathError::Io {
            path: path.clone(),
            source,
        };
        match fs::read(&path) {
            Ok(bytes) => Ok(serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| v.get("node_id").and_then(Value::as_str).map(str::to_owned))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let Some(id) = node_id else { return Ok(None) };
                let body = serde_json::to_vec(&json!({ "node_id": id })).unwrap_or_default();
                write_durably(&path, &body).map_err(io)?;
                Ok(Some(id.to_owned()))
            }
            Err(e) => Err(io(e)),
        }
    }
}

/// Write to a temporary file, fsync it, rename it into place and fsync the directory, so a reader sees
/// either the old or the new content and an acknowledged write survives a crash.
pub fn write_durably(path: &Path, body: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(body)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}
