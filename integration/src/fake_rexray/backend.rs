//! The backend shared by every fake-rexray instance (one per simulated host): per volume a JSON metadata
//! file under `<backend>/volumes/`. Every read-modify-write happens under an exclusive `flock` on
//! `<backend>/lock`, and files are replaced by atomic rename, so several fake-rexray PROCESSES on one
//! backend keep attachments exclusive across hosts, like a cloud block-storage API.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One volume as the "cloud" knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMeta {
    pub name: String,
    pub size_gb: u64,
    pub zone: String,
    pub iops: u64,
    pub volume_type: String,
    /// Host name of the instance the volume is attached to.
    pub attached_host: Option<String>,
    /// Where the volume's data directory currently lives (it moves to the mounting host's root).
    pub data_path: Option<PathBuf>,
}

/// Exclusive access to the backend while alive.
#[derive(Debug)]
pub struct Locked {
    dir: PathBuf,
    _lock: File,
}

/// Takes the backend lock (blocking). Creates the layout on first use.
#[allow(clippy::incompatible_msrv)]
pub fn lock(backend: &Path) -> io::Result<Locked> {
    fs::create_dir_all(backend.join("volumes"))?;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(backend.join("lock"))?;
    file.lock()?;
    Ok(Locked {
        dir: backend.to_path_buf(),
        _lock: file,
    })
}

fn valid_name(name: &str) -> io::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid volume name {name:?}"),
        ))
    }
}

impl Locked {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join("volumes").join(format!("{name}.json"))
    }

    pub fn read(&self, name: &str) -> io::Result<Option<VolumeMeta>> {
        valid_name(name)?;
        match fs::read(self.path(name)) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(io::Error::other),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn write(&self, meta: &VolumeMeta) -> io::Result<()> {
        valid_name(&meta.name)?;
        let path = self.path(&meta.name);
        let tmp = path.with_extension("json.tmp");
        let mut f = File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(meta).map_err(io::Error::other)?)?;
        f.sync_all()?;
        fs::rename(&tmp, &path)
    }

    pub fn delete(&self, name: &str) -> io::Result<()> {
        valid_name(name)?;
        fs::remove_file(self.path(name))
    }

    pub fn list(&self) -> io::Result<Vec<VolumeMeta>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(self.dir.join("volumes"))? {
            let p = entry?.path();
            if p.extension().is_some_and(|e| e == "json")
                && let Some(name) = p.file_stem().and_then(|s| s.to_str())
                && let Some(meta) = self.read(name)?
            {
                out.push(meta);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

/// A force-detach, as of an EBS volume attached elsewhere: the volume's data at `old` (on the holder's
/// host) becomes the new holder's at `new`, and the old holder loses it. The data is copied, not moved,
/// so that files the old holder still has open stay the old host's — writes through them vanish, like
/// writes to a detached block device — and `old` becomes a plain file saying what happened, so that
/// anything the old holder opens or creates under its mountpoint afterwards fails (`ENOTDIR`).
pub fn force_detach(old: &Path, new: &Path, name: &str, holder: &str, by: &str) -> io::Result<()> {
    copy_tree(old, new)?;
    fs::remove_dir_all(old)?;
    fs::write(
        old,
        format!(
            "volume {name} was force-detached from {holder}: {by} mounted it with preemption\n"
        ),
    )
}

/// Copies directories, regular files and symbolic links under `from` into `to` (created), with their
/// owners and modes: they live on the volume's filesystem, which the new host mounts as it is.
fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type()?;
        if kind.is_dir() {
            copy_tree(&src, &dst)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&src)?, &dst)?;
            copy_owner(&src, &dst)?;
        } else if kind.is_file() {
            fs::copy(&src, &dst)?;
            copy_owner(&src, &dst)?;
        }
    }
    copy_owner(from, to)?;
    fs::set_permissions(to, fs::metadata(from)?.permissions())
}

/// Gives `to` the owner and group of `from` (symbolic links themselves, not their targets).
fn copy_owner(from: &Path, to: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = fs::symlink_metadata(from)?;
    std::os::unix::fs::lchown(to, Some(meta.uid()), Some(meta.gid()))
}

/// Creates a volume in the backend as an operator would (`aws ec2 create-volume`). Existing: unchanged.
pub fn create_volume(backend: &Path, name: &str, size_gb: u64, zone: &str) -> io::Result<()> {
    let locked = lock(backend)?;
    if locked.read(name)?.is_none() {
        locked.write(&new_meta(name, size_gb, zone))?;
    }
    Ok(())
}

/// Deletes a volume from the backend behind everyone's back (`aws ec2 delete-volume` by an operator):
/// the driver's `Get` no longer finds it, whoever held it.
pub fn delete_volume(backend: &Path, name: &str) -> io::Result<()> {
    lock(backend)?.delete(name)
}

/// Reads one volume's metadata (which host holds it, its size and zone).
pub fn volume_info(backend: &Path, name: &str) -> io::Result<Option<VolumeMeta>> {
    lock(backend)?.read(name)
}

pub(crate) fn new_meta(name: &str, size_gb: u64, zone: &str) -> VolumeMeta {
    VolumeMeta {
        name: name.to_string(),
        size_gb,
        zone: zone.to_string(),
        iops: 0,
        volume_type: "gp2".to_string(),
        attached_host: None,
        data_path: None,
    }
}
