//! Prepare and Release: the only code that sends Mount and Unmount. Every Mount is preceded by a persisted
//! `Mounting` entry and every entry is removed only after an Unmount the driver answered, so mounts stay
//! balanced across errors, retries and restarts. Commands on one volume are serialised by a per-volume
//! lock; different volumes proceed in parallel.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tether_proto::v1::{IdentityRequest, VolumeReport};
use tokio_util::sync::CancellationToken;

use crate::driver::{Driver, DriverError};
use crate::identity::{self, Owner};
use crate::plugin::Volume;
use crate::state::{MountEntry, Phase, StateFile};

/// Validates a volume name from the scheduler (Docker's rule: `[A-Za-z0-9][A-Za-z0-9_.-]+`).
pub fn validate_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if first_ok && rest_ok && name.len() >= 2 && name.len() <= 255 {
        Ok(())
    } else {
        Err(format!("invalid volume name {name:?}"))
    }
}

/// Size and free bytes of a mounted filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub total: u64,
    pub free: u64,
}

/// statvfs of `path` (off the async threads: a stuck network filesystem must not stall the runtime).
pub async fn measure(path: &Path) -> Result<Usage, String> {
    let p = path.to_path_buf();
    let r = tokio::task::spawn_blocking(move || rustix::fs::statvfs(&p)).await;
    match r {
        Ok(Ok(st)) => Ok(Usage {
            total: st.f_blocks.saturating_mul(st.f_frsize),
            free: st.f_bavail.saturating_mul(st.f_frsize),
        }),
        Ok(Err(e)) => Err(format!("statvfs {}: {e}", path.display())),
        Err(e) => Err(format!("statvfs {}: {e}", path.display())),
    }
}

/// Builds the report of one volume from what is known about it.
pub fn volume_report(
    name: &str,
    found: Option<&Volume>,
    held: Option<&MountEntry>,
    usage: Option<Usage>,
    last_error: &str,
) -> VolumeReport {
    let held = held.filter(|h| h.phase == Phase::Held);
    VolumeReport {
        name: name.to_string(),
        exists: found.is_some() || held.is_some(),
        size_bytes: found
            .and_then(Volume::size_bytes)
            .or(usage.map(|u| u.total)),
        free_bytes: usage.filter(|_| held.is_some()).map(|u| u.free),
        zone: found.map(Volume::zone).unwrap_or_default(),
        attached_here: held.is_some(),
        mountpoint: held.map(|h| h.mountpoint.clone()).unwrap_or_default(),
        status: found
            .map(|v| {
                v.status
                    .iter()
                    .map(|(k, v)| (k.clone(), Volume::status_string(v)))
                    .collect()
            })
            .unwrap_or_default(),
        last_error: last_error.to_string(),
    }
}

/// The mounts and their locks.
#[derive(Debug)]
pub struct Volumes {
    pub driver: Arc<Driver>,
    pub state: StateFile,
    mount_id: String,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    last_errors: Mutex<HashMap<String, String>>,
    /// Cancelled at the end of the shutdown grace period: in-flight calls give up.
    abort: Mutex<CancellationToken>,
}

/// What a Prepare asks for.
#[derive(Debug, Clone, Default)]
pub struct PrepareSpec {
    pub node_id: u64,
    pub volumes: Vec<String>,
    pub create_missing: bool,
    pub create_options: BTreeMap<String, String>,
    pub deadline: Option<Instant>,
    /// Set on each volume's root after mounting (feature `volume_owner`).
    pub owner: Option<Owner>,
    /// Answered with a key on the volume and a CSR (feature `node_identity`).
    pub identity: Option<IdentityRequest>,
}

/// What an InstallIdentity asks for.
#[derive(Debug, Clone, Default)]
pub struct InstallSpec {
    pub volume: String,
    pub dir: String,
    pub certificate_pem: String,
    pub ca_pem: String,
    pub password: String,
    pub owner: Option<Owner>,
}

/// Outcome of a command: the first error and the state of each volume touched.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub error: Option<String>,
    pub volumes: Vec<VolumeReport>,
    /// The CSR of a Prepare with an identity request.
    pub csr_pem: Option<String>,
}

impl Outcome {
    pub(crate) fn failed(error: String) -> Outcome {
        Outcome {
            error: Some(error),
            ..Outcome::default()
        }
    }
}

impl Volumes {
    pub fn new(driver: Arc<Driver>, state: StateFile) -> Self {
        let mount_id = state.mount_id();
        Volumes {
            driver,
            state,
            mount_id,
            locks: Mutex::new(HashMap::new()),
            last_errors: Mutex::new(HashMap::new()),
            abort: Mutex::new(CancellationToken::new()),
        }
    }

    pub fn mount_id(&self) -> &str {
        &self.mount_id
    }

    fn volume_lock(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        crate::lock(&self.locks)
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    pub(crate) fn set_error(&self, name: &str, error: Option<&str>) {
        let mut m = crate::lock(&self.last_errors);
        match error {
            Some(e) => {
                m.insert(name.to_string(), e.to_string());
            }
            None => {
                m.remove(name);
            }
        }
    }

    /// Volumes attached here through the sidecar's own mounts.
    pub fn attachments_used(&self) -> u32 {
        let n = self
            .state
            .entries()
            .iter()
            .filter(|e| e.phase != Phase::Releasing)
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// One driver call, bounded by the command deadline and abandoned at the end of the grace period.
    async fn call<T, F, Fut>(&self, deadline: Option<Instant>, f: F) -> Result<T, DriverError>
    where
        F: FnOnce(crate::plugin::PluginClient) -> Fut,
        Fut: std::future::Future<Output = Result<T, crate::plugin::PluginError>>,
    {
        let cap = deadline.map(|d| {
            d.saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1))
        });
        let abort = crate::lock(&self.abort).clone();
        tokio::select! {
            r = self.driver.call(cap, f) => r,
            () = abort.cancelled() => Err(DriverError::Unavailable {
                driver: self.driver.name().to_string(),
                message: "sidecar shutting down".into(),
            }),
        }
    }

    /// Prepares every volume (owner set on each root, identity key and CSR made when asked); on any
    /// failure releases what this command mounted.
    pub async fn prepare(&self, spec: &PrepareSpec) -> Outcome {
        if let Some(req) = &spec.identity {
            // Bad input from the scheduler mounts nothing.
            if !spec.volumes.contains(&req.volume) {
                return Outcome::failed(format!(
                    "identity volume {:?} is not one of the Prepare's volumes",
                    req.volume
                ));
            }
            if let Err(e) = identity::validate_request(req) {
                return Outcome::failed(format!("identity on volume {:?}: {e}", req.volume));
            }
        }
        let mut outcome = Outcome::default();
        let mut mounted_now = Vec::new();
        for name in &spec.volumes {
            if let Err(e) = validate_name(name) {
                outcome.error = Some(e);
                break;
            }
            let lock = self.volume_lock(name);
            let _guard = lock.lock().await;
            match self.prepare_one(name, spec).await {
                Ok((report, newly)) => {
                    if newly {
                        mounted_now.push(name.clone());
                    }
                    self.set_error(name, None);
                    outcome.volumes.push(report);
                }
                Err(e) => {
                    self.set_error(name, Some(&e));
                    outcome.volumes.push(volume_report(
                        name,
                        None,
                        self.state.entry(name).as_ref(),
                        None,
                        &e,
                    ));
                    outcome.error = Some(e);
                    break;
                }
            }
        }
        if outcome.error.is_none()
            && let Some(req) = &spec.identity
        {
            match self.generate_identity(req, spec.owner).await {
                Ok(csr) => outcome.csr_pem = Some(csr),
                Err(e) => outcome.error = Some(e),
            }
        }
        if outcome.error.is_some() {
            for name in &mounted_now {
                let lock = self.volume_lock(name);
                let _guard = lock.lock().await;
                let r = self.release_one(name).await;
                if let Some(v) = outcome.volumes.iter_mut().find(|v| &v.name == name) {
                    *v = volume_report(
                        name,
                        None,
                        self.state.entry(name).as_ref(),
                        None,
                        r.as_ref().err().map_or("", String::as_str),
                    );
                }
            }
        }
        outcome
    }

    /// Returns the report and whether this call made a new mount.
    async fn prepare_one(
        &self,
        name: &str,
        spec: &PrepareSpec,
    ) -> Result<(VolumeReport, bool), String> {
        if spec.deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(format!("prepare of volume {name:?}: deadline exceeded"));
        }
        let found = match self
            .call(spec.deadline, |c| async move { c.get(name).await })
            .await
        {
            Ok(v) => v,
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e.to_string()),
        };
        let found = match found {
            Some(v) => v,
            None if spec.create_missing => {
                let opts = spec.create_options.clone();
                self.call(
                    spec.deadline,
                    |c| async move { c.create(name, &opts).await },
                )
                .await
                .map_err(|e| e.to_string())?;
                match self
                    .call(spec.deadline, |c| async move { c.get(name).await })
                    .await
                {
                    Ok(Some(v)) => v,
                    Ok(None) => Volume {
                        name: name.to_string(),
                        ..Volume::default()
                    },
                    Err(e) => return Err(e.to_string()),
                }
            }
            None => {
                return Err(format!(
                    "VolumeDriver.Get of volume {name:?}: volume does not exist"
                ));
            }
        };
        if let Some(held) = self.state.entry(name).filter(|e| e.phase == Phase::Held) {
            // Already held (a repeated Prepare): one mount per volume, so do not mount again.
            self.apply_owner(name, &held.mountpoint, spec.owner).await?;
            let usage = measure(Path::new(&held.mountpoint)).await?;
            return Ok((
                volume_report(name, Some(&found), Some(&held), Some(usage), ""),
                false,
            ));
        }
        if self
            .state
            .entry(name)
            .is_some_and(|e| e.phase == Phase::Releasing)
        {
            // A release of an earlier mount is still pending; finish it first so mounts stay balanced.
            self.release_one(name)
                .await
                .map_err(|e| format!("earlier release of {name:?} pending: {e}"))?;
        }
        let mut entry = MountEntry {
            volume: name.to_string(),
            phase: Phase::Mounting,
            mountpoint: String::new(),
            node_id: spec.node_id,
        };
        self.state
            .set(name, Some(entry.clone()))
            .map_err(|e| format!("writing state file: {e}"))?;
        let id = self.mount_id.clone();
        let mountpoint = match self
            .call(spec.deadline, |c| async move { c.mount(name, &id).await })
            .await
        {
            Ok(mp) => mp,
            Err(e) => {
                if e.outcome_unknown() {
                    // The driver may have counted it: balance it now (or later, if that fails too).
                    let _ = self.release_one(name).await;
                } else {
                    let _ = self.state.set(name, None);
                }
                return Err(e.to_string());
            }
        };
        entry.phase = Phase::Held;
        entry.mountpoint = mountpoint.clone();
        if let Err(e) = self.state.set(name, Some(entry.clone())) {
            let _ = self.release_one(name).await;
            return Err(format!("writing state file: {e}"));
        }
        let checked = match tokio::fs::metadata(&mountpoint).await {
            Ok(m) if m.is_dir() => match self.apply_owner(name, &mountpoint, spec.owner).await {
                Ok(()) => measure(Path::new(&mountpoint)).await,
                Err(e) => Err(e),
            },
            Ok(_) => Err(format!(
                "VolumeDriver.Mount of volume {name:?}: mountpoint {mountpoint} is not a directory"
            )),
            Err(e) => Err(format!(
                "VolumeDriver.Mount of volume {name:?}: mountpoint {mountpoint}: {e}"
            )),
        };
        match checked {
            Ok(usage) => {
                // The driver's own word after the Mount (a takeover's attachment, as the driver sees
                // it); a failed look leaves the word from before, the Mount itself succeeded.
                let after = match self
                    .call(spec.deadline, |c| async move { c.get(name).await })
                    .await
                {
                    Ok(Some(v)) => v,
                    _ => found,
                };
                Ok((
                    volume_report(name, Some(&after), Some(&entry), Some(usage), ""),
                    true,
                ))
            }
            Err(e) => {
                let _ = self.release_one(name).await;
                Err(e)
            }
        }
    }

    /// Sets the owner (and mode) of a mounted volume's root, if asked.
    async fn apply_owner(
        &self,
        name: &str,
        mountpoint: &str,
        owner: Option<Owner>,
    ) -> Result<(), String> {
        let Some(owner) = owner else {
            return Ok(());
        };
        let root = std::path::PathBuf::from(mountpoint);
        blocking(move || identity::apply_owner(&root, &owner))
            .await
            .map_err(|e| {
                format!(
                    "setting owner {}:{} of volume {name:?}: {e}",
                    owner.uid, owner.gid
                )
            })
    }

    /// The mountpoint of `name` if this sidecar holds it mounted (caller holds the volume lock).
    fn held_mountpoint(&self, name: &str) -> Option<std::path::PathBuf> {
        self.state
            .entry(name)
            .filter(|e| e.phase == Phase::Held)
            .map(|e| e.mountpoint.into())
    }

    /// A fresh key on the identity volume (mounted by this Prepare or an earlier one) and its CSR.
    async fn generate_identity(
        &self,
        req: &IdentityRequest,
        owner: Option<Owner>,
    ) -> Result<String, String> {
        let lock = self.volume_lock(&req.volume);
        let _guard = lock.lock().await;
        let root = self
            .held_mountpoint(&req.volume)
            .ok_or_else(|| format!("identity volume {:?} is not mounted here", req.volume))?;
        let request = req.clone();
        blocking(move || identity::generate(&root, &request, owner.as_ref()))
            .await
            .map_err(|e| format!("identity on volume {:?}: {e}", req.volume))
    }

    /// Writes a signed certificate, the CA and the password beside the key of a volume held here.
    pub async fn install_identity(&self, spec: &InstallSpec) -> Outcome {
        let name = spec.volume.as_str();
        if let Err(e) = validate_name(name) {
            return Outcome::failed(e);
        }
        let lock = self.volume_lock(name);
        let _guard = lock.lock().await;
        let Some(root) = self.held_mountpoint(name) else {
            return Outcome::failed(format!(
                "InstallIdentity: volume {name:?} is not mounted by this sidecar (it must follow a Prepare)"
            ));
        };
        let owned = spec.clone();
        let r = blocking(move || {
            identity::install(
                &root,
                &identity::Install {
                    dir: &owned.dir,
                    certificate_pem: &owned.certificate_pem,
                    ca_pem: &owned.ca_pem,
                    password: &owned.password,
                    owner: owned.owner,
                },
            )
        })
        .await;
        let error = r
            .err()
            .map(|e| format!("InstallIdentity on volume {name:?}: {e}"));
        Outcome {
            volumes: vec![volume_report(
                name,
                None,
                self.state.entry(name).as_ref(),
                None,
                error.as_deref().unwrap_or(""),
            )],
            error,
            csr_pem: None,
        }
    }

    /// Releases every volume (those not held succeed and do nothing).
    pub async fn release(&self, volumes: &[String]) -> Outcome {
        let mut outcome = Outcome::default();
        for name in volumes {
            let lock = self.volume_lock(name);
            let _guard = lock.lock().await;
            let r = self.release_one(name).await;
            let err = r.as_ref().err().cloned();
            self.set_error(name, err.as_deref());
            outcome.volumes.push(volume_report(
                name,
                None,
                self.state.entry(name).as_ref(),
                None,
                err.as_deref().unwrap_or(""),
            ));
            if outcome.error.is_none() {
                outcome.error = err;
            }
        }
        outcome
    }

    /// Unmounts `name` if an entry exists (caller holds the volume lock). The entry is dropped once the
    /// driver answered; otherwise it stays `Releasing` and is retried by [`Volumes::retry_pending`].
    async fn release_one(&self, name: &str) -> Result<(), String> {
        let Some(mut entry) = self.state.entry(name) else {
            return Ok(());
        };
        if entry.phase != Phase::Releasing {
            entry.phase = Phase::Releasing;
            self.state
                .set(name, Some(entry))
                .map_err(|e| format!("writing state file: {e}"))?;
        }
        let id = self.mount_id.clone();
        match self
            .call(None, |c| async move { c.unmount(name, &id).await })
            .await
        {
            Ok(()) => {
                self.state
                    .set(name, None)
                    .map_err(|e| format!("writing state file: {e}"))?;
                Ok(())
            }
            Err(DriverError::Plugin(e)) if !e.outcome_unknown() => {
                // The driver answered: that was the one Unmount for this Mount, even if it complained.
                tracing::warn!(volume = name, error = %e, "driver refused Unmount; considering the mount released");
                self.state
                    .set(name, None)
                    .map_err(|e| format!("writing state file: {e}"))?;
                Err(e.to_string())
            }
            Err(e) => Err(format!("{e} (will retry)")),
        }
    }

    /// Retries every pending release (left over from an earlier process or from a failed Unmount).
    pub async fn retry_pending(&self) {
        for entry in self
            .state
            .entries()
            .into_iter()
            .filter(|e| e.phase == Phase::Releasing)
        {
            let lock = self.volume_lock(&entry.volume);
            // A command busy on this volume will see the pending release itself; never block the reporter.
            let Ok(_guard) = lock.try_lock() else {
                continue;
            };
            match self.release_one(&entry.volume).await {
                Ok(()) => tracing::info!(volume = %entry.volume, "released a pending mount"),
                Err(e) => {
                    tracing::warn!(volume = %entry.volume, error = %e, "pending release failed")
                }
            }
        }
    }

    /// Makes in-flight driver calls give up (end of the shutdown grace period).
    pub fn abort_calls(&self) {
        crate::lock(&self.abort).cancel();
    }

    /// Releases everything the sidecar holds (shutdown), with calls no longer aborted.
    pub async fn release_all(&self) -> Result<(), String> {
        *crate::lock(&self.abort) = CancellationToken::new();
        let names: Vec<String> = self.state.entries().into_iter().map(|e| e.volume).collect();
        let outcome = self.release(&names).await;
        outcome.error.map_or(Ok(()), Err)
    }
}

/// Runs file work off the async threads (a volume may be a slow network filesystem).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, identity::IdentityError> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["es-data-0", "a1", "A.b_c-d"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a", "-x", "../etc", "a/b", "a b", ".hidden"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn report_of_held_volume_has_usage_and_mountpoint() {
        let held = MountEntry {
            volume: "v".into(),
            phase: Phase::Held,
            mountpoint: "/m".into(),
            node_id: 1,
        };
        let r = volume_report(
            "v",
            None,
            Some(&held),
            Some(Usage { total: 10, free: 4 }),
            "",
        );
        assert!(r.exists && r.attached_here);
        assert_eq!(
            (r.size_bytes, r.free_bytes, r.mountpoint.as_str()),
            (Some(10), Some(4), "/m")
        );
        let releasing = MountEntry {
            phase: Phase::Releasing,
            ..held
        };
        let r = volume_report("v", None, Some(&releasing), None, "boom");
        assert!(!r.exists && !r.attached_here && r.free_bytes.is_none());
        assert_eq!(r.last_error, "boom");
    }
}
