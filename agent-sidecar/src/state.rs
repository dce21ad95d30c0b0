//! The state file: which mounts this sidecar holds. Written atomically (temp file, fsync, rename, fsync of
//! the directory) before each Mount and after each Mount/Unmount, so that after a crash or restart every
//! Mount the sidecar may have made is matched by one Unmount.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tether_telemetry::fs::write_atomically;

use crate::lock;

/// Where a held mount is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// A Mount was (or is being) sent; whether the driver counted it is not yet known.
    Mounting,
    /// Mounted; the sidecar holds it until a Release.
    Held,
    /// Must be unmounted (release requested, or left over from an earlier process); retried until done.
    Releasing,
}

/// One mount the sidecar holds (or may hold).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountEntry {
    pub volume: String,
    pub phase: Phase,
    #[serde(default)]
    pub mountpoint: String,
    #[serde(default)]
    pub node_id: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Data {
    version: u32,
    mount_id: String,
    mounts: Vec<MountEntry>,
}

/// The persisted mount list, with an in-memory copy.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    data: Mutex<Data>,
}

impl StateFile {
    /// Loads the file (creating it with `default_mount_id` when missing). Every entry found is an
    /// earlier process's mount, so it is marked `Releasing`.
    pub fn open(path: &Path, default_mount_id: &str) -> io::Result<StateFile> {
        let mut data = match fs::read(path) {
            Ok(bytes) => serde_json::from_slice::<Data>(&bytes).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("state file {}: {e}", path.display()),
                )
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Data::default(),
            Err(e) => return Err(e),
        };
        data.version = 1;
        if data.mount_id.is_empty() {
            data.mount_id = default_mount_id.to_string();
        }
        for m in &mut data.mounts {
            m.phase = Phase::Releasing;
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)?;
        }
        save(path, &data)?;
        Ok(StateFile {
            path: path.to_path_buf(),
            data: Mutex::new(data),
        })
    }

    /// The id sent with every Mount/Unmount; stable for the life of the state file.
    pub fn mount_id(&self) -> String {
        lock(&self.data).mount_id.clone()
    }

    pub fn entries(&self) -> Vec<MountEntry> {
        lock(&self.data).mounts.clone()
    }

    pub fn entry(&self, volume: &str) -> Option<MountEntry> {
        lock(&self.data)
            .mounts
            .iter()
            .find(|m| m.volume == volume)
            .cloned()
    }

    /// Sets (or with `None` removes) the entry of `volume` and persists the file.
    pub fn set(&self, volume: &str, entry: Option<MountEntry>) -> io::Result<()> {
        let mut data = lock(&self.data);
        let before = data.clone();
        data.mounts.retain(|m| m.volume != volume);
        if let Some(e) = entry {
            data.mounts.push(e);
        }
        data.mounts.sort_by(|a, b| a.volume.cmp(&b.volume));
        if let Err(e) = save(&self.path, &data) {
            *data = before;
            return Err(e);
        }
        Ok(())
    }
}

/// Serialises `data` and replaces the file durably.
fn save(path: &Path, data: &Data) -> io::Result<()> {
    let body = serde_json::to_vec_pretty(data).map_err(io::Error::other)?;
    write_atomically(path, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_survive_reopen_as_releasing() -> io::Result<()> {
        let tmp = tempfile::tempdir()?;
        let path = tmp.path().join("sub").join("state.json");
        let s = StateFile::open(&path, "tether-sidecar-h1")?;
        let held = MountEntry {
            volume: "v".into(),
            phase: Phase::Held,
            mountpoint: "/m".into(),
            node_id: 3,
        };
        s.set("v", Some(held))?;
        s.set(
            "w",
            Some(MountEntry {
                volume: "w".into(),
                phase: Phase::Mounting,
                mountpoint: String::new(),
                node_id: 3,
            }),
        )?;
        drop(s);
        let s = StateFile::open(&path, "other")?;
        assert_eq!(s.mount_id(), "tether-sidecar-h1");
        let phases: Vec<_> = s
            .entries()
            .iter()
            .map(|e| (e.volume.clone(), e.phase))
            .collect();
        assert_eq!(
            phases,
            [
                ("v".to_string(), Phase::Releasing),
                ("w".to_string(), Phase::Releasing)
            ]
        );
        s.set("v", None)?;
        assert_eq!(StateFile::open(&path, "x")?.entries().len(), 1);
        Ok(())
    }

    #[test]
    fn corrupt_file_is_a_clear_error() -> io::Result<()> {
        let tmp = tempfile::tempdir()?;
        let path = tmp.path().join("state.json");
        fs::write(&path, b"{garbage")?;
        let err = StateFile::open(&path, "m")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("state file"), "{err}");
        Ok(())
    }
}
