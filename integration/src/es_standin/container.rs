//! The container the stand-in believes it runs in: who it runs as and where a container path really is.
//!
//! **Who it runs as.** The official image runs Elasticsearch as uid 1000, gid 0: 8.x through its
//! `USER 1000:0` line, 7.17 by starting as root and dropping to 1000:0 in its entrypoint. The stand-in
//! decides the identity it plays in this order:
//! 1. `TETHER_EMU_USER=<uid>:<gid>`, the user a container runtime was told to start it as (like
//!    `docker run --user`);
//! 2. under the process launcher's emulation (`TETHER_EMU_ROOTFS` set) *and* really running as root: the
//!    image's own user — 1000:0 for 8.x, root for 7.17 (whose entrypoint then drops to 1000:0). The
//!    launcher runs every task as root on this machine, so the stand-in plays the image's user and gives
//!    what it creates to that user, as the kernel would;
//! 3. otherwise what it really is (the Docker tier's image says `USER 1000:0`; a direct run as root is
//!    root, which 8.x refuses).
//!
//! Every file the stand-in reads or writes on the node's behalf is first checked against that identity the
//! way the kernel checks a process with that uid and only that gid: search permission on every directory
//! on the way, then read or write on the target, owner bits if the uid owns it, else group bits if the gid
//! does, else the other bits; a read-only mount refuses writes. So a volume root-owned 0755 is refused to
//! uid 1000 here exactly as it is in a real container.
//!
//! **Where a container path is.** The process launcher cannot give a task its own filesystem, so:
//! - a path inside a volume is under the host directory in `TETHER_VOLUME_<container path>` (see
//!   [`volume_env_name`]), the deepest mount winning;
//! - `/mnt/mesos/sandbox` (the sandbox as a container sees it) is the sandbox itself;
//! - any other path is in the task's own layer, `TETHER_EMU_ROOTFS/<path>`: the sandbox, gone when the
//!   task is. A path already inside that directory (e.g. `${MESOS_SANDBOX}/certs`, which the launcher sets
//!   to the host path) is taken as it is.
//!
//! Without `TETHER_EMU_ROOTFS` (a real container, or a direct run) paths are what they say.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Component, Path, PathBuf};

pub use crate::mesos_emu::launcher::EMU_ROOTFS_ENV;
use crate::mesos_emu::volume_env_name;

/// `uid:gid` a container runtime starts the process as.
pub const EMU_USER_ENV: &str = "TETHER_EMU_USER";
/// Where Mesos mounts the sandbox in a container.
pub const MESOS_SANDBOX_PATH: &str = "/mnt/mesos/sandbox";

/// A uid and the one gid a process has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
}

impl Identity {
    pub const ROOT: Identity = Identity { uid: 0, gid: 0 };
    /// The user the official image runs Elasticsearch as.
    pub const ELASTICSEARCH: Identity = Identity { uid: 1000, gid: 0 };

    /// This process's effective uid and gid.
    pub fn real() -> Identity {
        Identity {
            uid: rustix::process::geteuid().as_raw(),
            gid: rustix::process::getegid().as_raw(),
        }
    }

    /// `uid:gid`.
    pub fn parse(raw: &str) -> Option<Identity> {
        let (u, g) = raw.split_once(':')?;
        Some(Identity {
            uid: u.trim().parse().ok()?,
            gid: g.trim().parse().ok()?,
        })
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.uid, self.gid)
    }
}

/// What a process wants of a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    /// Write a file, or create entries in a directory (write and search).
    Write,
}

/// Why a path cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Elasticsearch (Java) reports this as `AccessDeniedException[<path>]`.
    #[error("AccessDeniedException[{0}]")]
    Denied(String),
    #[error("NoSuchFileException[{0}]")]
    Missing(String),
    #[error("{path}: {message}")]
    Io { path: String, message: String },
}

/// How container paths map to this host (see the module header).
#[derive(Debug, Clone)]
pub struct ContainerFs {
    rootfs: Option<PathBuf>,
    volumes: BTreeMap<String, PathBuf>,
    /// Whether this process may give files away (it really is root).
    can_chown: bool,
}

impl ContainerFs {
    pub fn from_env(env: &BTreeMap<String, String>) -> ContainerFs {
        ContainerFs {
            rootfs: env
                .get(EMU_ROOTFS_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            volumes: env
                .iter()
                .filter(|(k, _)| k.starts_with("TETHER_VOLUME_"))
                .map(|(k, v)| (k.clone(), PathBuf::from(v)))
                .collect(),
            can_chown: Identity::real().uid == 0,
        }
    }

    /// Whether the process launcher emulates the container's filesystem.
    pub fn emulated(&self) -> bool {
        self.rootfs.is_some()
    }

    /// The host path of `container` (absolute; `.` and `..` resolved lexically).
    pub fn host(&self, container: &Path) -> PathBuf {
        let p = self.container_view(container);
        if let Some((mount, host)) = self.mount_of(&p) {
            return join_rel(&host, p.strip_prefix(&mount).unwrap_or(Path::new("")));
        }
        match &self.rootfs {
            Some(root) => join_rel(root, p.strip_prefix("/").unwrap_or(&p)),
            None => p,
        }
    }

    /// `container` normalized; a host path inside the emulated root (what `${MESOS_SANDBOX}` expands to
    /// under the process launcher) is seen as the sandbox mount it is.
    fn container_view(&self, container: &Path) -> PathBuf {
        let p = normalize(container);
        match &self.rootfs {
            Some(root) => match p.strip_prefix(root) {
                Ok(rel) => join_rel(Path::new(MESOS_SANDBOX_PATH), rel),
                Err(_) => p,
            },
            None => p,
        }
    }

    /// The deepest mount holding `p` (a volume, or the sandbox at `/mnt/mesos/sandbox` under emulation)
    /// as `(container mount point, host directory)`.
    fn mount_of(&self, p: &Path) -> Option<(PathBuf, PathBuf)> {
        for anc in p.ancestors() {
            if anc == Path::new("/") {
                break;
            }
            if let Some(h) = self.volumes.get(&volume_env_name(&anc.to_string_lossy())) {
                return Some((anc.to_path_buf(), h.clone()));
            }
            if let Some(root) = &self.rootfs
                && anc == Path::new(MESOS_SANDBOX_PATH)
            {
                return Some((anc.to_path_buf(), root.clone()));
            }
        }
        None
    }

    /// Checks that `who` may have `access` to `container` as the kernel would: search on each directory
    /// on the way, then the access on the target. A missing target is fine for [`Access::Write`] when its
    /// closest existing ancestor lets `who` create entries (it will be created).
    pub fn check(&self, container: &Path, access: Access, who: Identity) -> Result<(), PathError> {
        let p = self.container_view(container);
        let shown = p.display().to_string();
        let prefixes: Vec<PathBuf> = {
            let mut v: Vec<PathBuf> = p.ancestors().map(Path::to_path_buf).collect();
            v.reverse();
            v
        };
        // Directories the runtime creates to mount on (root-owned, 0755) need not exist in the layer.
        let mount = self.mount_of(&p).map(|(m, _)| m);
        let mut parent: Option<(PathBuf, fs::Metadata)> = None;
        for (i, q) in prefixes.iter().enumerate() {
            let last = i + 1 == prefixes.len();
            let host = self.host(q);
            let meta = match fs::metadata(&host) {
                Ok(m) => m,
                Err(_) if mount.as_ref().is_some_and(|m| m.starts_with(q) && m != q) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if access == Access::Read {
                        return Err(PathError::Missing(shown));
                    }
                    // Created by the node: its parent must accept new entries.
                    return match parent {
                        Some((phost, pmeta)) if may(&pmeta, who, W | X) && !read_only(&phost) => {
                            Ok(())
                        }
                        Some(_) => Err(PathError::Denied(shown)),
                        None => Err(PathError::Missing(shown)),
                    };
                }
                Err(e) => {
                    return Err(PathError::Io {
                        path: shown,
                        message: e.to_string(),
                    });
                }
            };
            if !last {
                if !meta.is_dir() {
                    return Err(PathError::Io {
                        path: q.display().to_string(),
                        message: "Not a directory".into(),
                    });
                }
                if !may(&meta, who, X) {
                    return Err(PathError::Denied(shown));
                }
            } else {
                let want = match (access, meta.is_dir()) {
                    (Access::Read, true) => R | X,
                    (Access::Read, false) => R,
                    (Access::Write, true) => W | X,
                    (Access::Write, false) => W,
                };
                if !may(&meta, who, want) || (access == Access::Write && read_only(&host)) {
                    return Err(PathError::Denied(shown));
                }
            }
            parent = Some((host, meta));
        }
        Ok(())
    }

    /// Creates `container` and its missing parents, mode 0775 (the image's umask is 0002), owned by
    /// `owner` as if `owner` had created them.
    pub fn create_dir_all(&self, container: &Path, owner: Identity) -> Result<(), PathError> {
        let p = self.container_view(container);
        let mut missing: Vec<PathBuf> = Vec::new();
        for anc in p.ancestors() {
            if self.host(anc).exists() {
                break;
            }
            missing.push(anc.to_path_buf());
        }
        for q in missing.into_iter().rev() {
            self.make_dir(&q, 0o775, owner)?;
        }
        Ok(())
    }

    /// Creates one directory with `mode` and `owner` unless it exists.
    pub fn make_dir(&self, container: &Path, mode: u32, owner: Identity) -> Result<(), PathError> {
        let host = self.host(container);
        let io_err = |e: io::Error| PathError::Io {
            path: container.display().to_string(),
            message: e.to_string(),
        };
        match fs::create_dir(&host) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
            Err(e) => return Err(io_err(e)),
        }
        fs::set_permissions(&host, fs::Permissions::from_mode(mode)).map_err(io_err)?;
        self.give(&host, owner).map_err(io_err)
    }

    /// Writes a file with `mode` and `owner` unless it exists.
    pub fn make_file(
        &self,
        container: &Path,
        body: &[u8],
        mode: u32,
        owner: Identity,
    ) -> Result<(), PathError> {
        let host = self.host(container);
        if host.exists() {
            return Ok(());
        }
        let io_err = |e: io::Error| PathError::Io {
            path: container.display().to_string(),
            message: e.to_string(),
        };
        fs::write(&host, body).map_err(io_err)?;
        fs::set_permissions(&host, fs::Permissions::from_mode(mode)).map_err(io_err)?;
        self.give(&host, owner).map_err(io_err)
    }

    /// Gives `host` to `owner` when this process may (it is root); otherwise it stays this process's,
    /// which is then also the identity the stand-in plays.
    pub fn give(&self, host: &Path, owner: Identity) -> io::Result<()> {
        if self.can_chown {
            std::os::unix::fs::chown(host, Some(owner.uid), Some(owner.gid))?;
        }
        Ok(())
    }

    /// `chown -R owner` of `container` (what `TAKE_FILE_OWNERSHIP` does).
    pub fn chown_recursive(&self, container: &Path, owner: Identity) -> io::Result<()> {
        fn walk(p: &Path, owner: Identity) -> io::Result<()> {
            std::os::unix::fs::lchown(p, Some(owner.uid), Some(owner.gid))?;
            if fs::symlink_metadata(p)?.is_dir() {
                for entry in fs::read_dir(p)? {
                    walk(&entry?.path(), owner)?;
                }
            }
            Ok(())
        }
        let host = self.host(container);
        if host.exists() {
            walk(&host, owner)?;
        }
        Ok(())
    }

    /// Reads a file after checking `who` may.
    pub fn read(&self, container: &Path, who: Identity) -> Result<Vec<u8>, PathError> {
        self.check(container, Access::Read, who)?;
        fs::read(self.host(container)).map_err(|e| PathError::Io {
            path: container.display().to_string(),
            message: e.to_string(),
        })
    }

    /// The permission bits of a file (`stat -L -c %a`).
    pub fn mode(&self, container: &Path) -> Option<u32> {
        fs::metadata(self.host(container))
            .ok()
            .map(|m| m.mode() & 0o7777)
    }
}

const R: u32 = 4;
const W: u32 = 2;
const X: u32 = 1;

/// The kernel's DAC check for a process with exactly `who`'s uid and gid.
fn may(meta: &fs::Metadata, who: Identity, want: u32) -> bool {
    if who.uid == 0 {
        return true;
    }
    let mode = meta.mode();
    let bits = if meta.uid() == who.uid {
        (mode >> 6) & 7
    } else if meta.gid() == who.gid {
        (mode >> 3) & 7
    } else {
        mode & 7
    };
    bits & want == want
}

fn read_only(host: &Path) -> bool {
    rustix::fs::statvfs(host)
        .is_ok_and(|s| s.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY))
}

/// Absolute, with `.` and `..` resolved lexically (a container path is not resolved on this host).
pub fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

fn join_rel(base: &Path, rest: &Path) -> PathBuf {
    if rest.as_os_str().is_empty() {
        base.to_path_buf()
    } else {
        base.join(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fs_with(rootfs: &Path, volumes: &[(&str, &Path)]) -> ContainerFs {
        let mut env = BTreeMap::new();
        env.insert(EMU_ROOTFS_ENV.to_owned(), rootfs.display().to_string());
        for (c, h) in volumes {
            env.insert(volume_env_name(c), h.display().to_string());
        }
        ContainerFs::from_env(&env)
    }

    #[test]
    fn container_paths_map_to_volumes_the_sandbox_and_the_layer() {
        let root = Path::new("/sb/task-1");
        let vol = Path::new("/vols/es1data");
        let f = fs_with(root, &[("/usr/share/elasticsearch/data", vol)]);
        assert_eq!(
            f.host(Path::new("/usr/share/elasticsearch/data/indices")),
            vol.join("indices")
        );
        assert_eq!(f.host(Path::new("/usr/share/elasticsearch/data")), vol);
        assert_eq!(
            f.host(Path::new("/usr/share/elasticsearch/config")),
            root.join("usr/share/elasticsearch/config")
        );
        assert_eq!(
            f.host(Path::new("/mnt/mesos/sandbox/certs/ca.crt")),
            root.join("certs/ca.crt")
        );
        assert_eq!(f.host(&root.join("certs")), root.join("certs"));
        let direct = ContainerFs::from_env(&BTreeMap::new());
        assert_eq!(direct.host(Path::new("/data/../x")), Path::new("/x"));
    }

    #[test]
    fn permissions_follow_owner_then_group_then_other() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("rootfs");
        fs::create_dir(&root).expect("rootfs");
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).expect("chmod");
        let f = fs_with(&root, &[]);
        let me = Identity::real();
        let other = Identity {
            uid: me.uid.wrapping_add(4242),
            gid: me.gid.wrapping_add(4242),
        };
        let group = Identity {
            uid: me.uid.wrapping_add(4242),
            gid: me.gid,
        };
        let data = Path::new("/data");
        f.make_dir(data, 0o770, me).expect("mkdir");
        assert_eq!(
            f.check(data, Access::Write, other),
            Err(PathError::Denied("/data".into()))
        );
        assert_eq!(f.check(data, Access::Write, group), Ok(()));
        fs::set_permissions(f.host(data), fs::Permissions::from_mode(0o707)).expect("chmod");
        // The owner class applies even when the other bits would allow more.
        if me.uid != 0 {
            assert!(f.check(data, Access::Write, me).is_err());
        }
        assert_eq!(f.check(data, Access::Write, other), Ok(()));
        // Search permission on the way matters.
        fs::set_permissions(&root, fs::Permissions::from_mode(0o750)).expect("chmod");
        assert!(f.check(data, Access::Write, other).is_err());
        // A missing path can be created when its parent allows it.
        fs::set_permissions(&root, fs::Permissions::from_mode(0o777)).expect("chmod");
        assert_eq!(
            f.check(Path::new("/new/deeper"), Access::Write, other),
            Ok(())
        );
        assert_eq!(
            f.check(Path::new("/nope"), Access::Read, other),
            Err(PathError::Missing("/nope".into()))
        );
    }
}
