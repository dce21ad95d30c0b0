//! Leader election among scheduler instances sharing one root: each instance joins `<root>/leader` with
//! an EPHEMERAL_SEQUENTIAL `member-<seq>` znode holding its [`MemberInfo`]; the lowest sequence leads;
//! each follower watches only its predecessor (plus the leader's znode, to report who leads).
//!
//! Fencing by session: a leader's [`Leadership::lost`] token fires as soon as the session is
//! disconnected, expired or closed, or its member znode disappears, and never un-fires. The scheduler
//! must stop acting on that signal before doing anything else. Disconnection counts as loss because the
//! server may expire the session (letting another instance lead) while we cannot hear about it; the
//! state store's writes are additionally fenced on the member znode (see [`crate::store::Fence`]).

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use zookeeper_client as zk;

use crate::session::{ZkError, ZkSession};
use crate::store::Fence;

const MEMBER_PREFIX: &str = "member-";

/// What each member znode holds (JSON), so followers can say who leads and where to send admin writes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// The scheduler instance's id (unique per process run).
    pub id: String,
    /// Where this instance serves the admin API (`host:port` or a URL).
    pub admin_address: String,
    /// When this instance joined the election (Unix milliseconds).
    pub since_unix_ms: u64,
}

impl MemberInfo {
    /// Info stamped with the current wall-clock time.
    pub fn now(id: impl Into<String>, admin_address: impl Into<String>) -> Self {
        let since_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Self {
            id: id.into(),
            admin_address: admin_address.into(),
            since_unix_ms,
        }
    }
}

/// Where a candidate stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// Waiting; `leader` is who leads now (`None` while unknown, e.g. between leaders).
    Follower { leader: Option<MemberInfo> },
    /// This instance leads.
    Leader,
    /// The candidacy is over (session lost, or our znode vanished); campaign again to rejoin.
    Lost { reason: String },
}

/// Why a candidacy ended before (or instead of) leading.
#[derive(Debug, thiserror::Error)]
pub enum ElectionError {
    /// Joining failed.
    #[error(transparent)]
    Zk(#[from] ZkError),
    /// The candidacy ended; campaign again (with a new session if it expired).
    #[error("lost the election candidacy: {0}")]
    Lost(String),
}

/// This instance's membership in the election. Dropping it withdraws (deletes the member znode).
#[derive(Debug)]
pub struct Candidate {
    session: ZkSession,
    member_path: String,
    info: MemberInfo,
    role: watch::Receiver<Role>,
    lost: CancellationToken,
    stop: CancellationToken,
}

/// Proof that this instance leads, valid until [`Self::lost`] fires.
#[derive(Clone, Debug)]
pub struct Leadership {
    lost: CancellationToken,
    fence: Fence,
}

impl Leadership {
    /// Fires the moment leadership ends (session disconnected/expired/closed, or member znode gone).
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// Whether leadership has already ended.
    pub fn is_lost(&self) -> bool {
        self.lost.is_cancelled()
    }

    /// The fence to give [`crate::ZkStore::open`] so state writes fail once leadership is gone.
    pub fn fence(&self) -> Fence {
        self.fence.clone()
    }
}

/// The election directory under a root: `<root>/leader`.
pub fn election_dir(session: &ZkSession) -> String {
    session.path("leader")
}

/// Who leads the election under the session's root now, as a client that does not campaign reads it
/// (sidecars following the leader): the info of the lowest `member-<seq>`; `None` when nobody
/// campaigns. A member that vanishes while being read is skipped for the next one.
pub async fn current_leader(session: &ZkSession) -> Result<Option<MemberInfo>, ZkError> {
    let dir = election_dir(session);
    let mut members: Vec<(i64, String)> = match session.client().list_children(&dir).await {
        Ok(names) => names
            .into_iter()
            .filter_map(|n| member_seq(&n).map(|s| (s, n)))
            .collect(),
        Err(zk::Error::NoNode) => return Ok(None),
        Err(source) => {
            return Err(ZkError::Op {
                op: "list",
                path: dir,
                source,
            });
        }
    };
    members.sort();
    for (_, name) in members {
        let path = format!("{dir}/{name}");
        match session.client().get_data(&path).await {
            Ok((data, _)) => {
                // A member whose data does not parse names no address: look at the next one rather
                // than following nobody.
                match serde_json::from_slice::<MemberInfo>(&data) {
                    Ok(info) => return Ok(Some(info)),
                    Err(e) => {
                        tracing::warn!(member = %path, error = %e, "unreadable election member")
                    }
                }
            }
            Err(zk::Error::NoNode) => {}
            Err(source) => {
                return Err(ZkError::Op {
                    op: "get",
                    path,
                    source,
                });
            }
        }
    }
    Ok(None)
}

/// Joins the election under `<root>/leader` and returns at once; use [`Candidate::elected`] to wait.
pub async fn campaign(session: &ZkSession, info: MemberInfo) -> Result<Candidate, ElectionError> {
    let dir = election_dir(session);
    session.ensure_path(&dir).await?;
    let data = serde_json::to_vec(&info)
        .map_err(|e| ElectionError::Lost(format!("cannot encode member info: {e}")))?;
    let prefix = format!("{dir}/{MEMBER_PREFIX}");
    let options = zk::CreateMode::EphemeralSequential.with_acls(session.acls());
    let (_, seq) = session
        .client()
        .create(&prefix, &data, &options)
        .await
        .map_err(|source| ZkError::Op {
            op: "create",
            path: prefix.clone(),
            source,
        })?;
    let name = format!("{MEMBER_PREFIX}{seq}");
    let member_path = format!("{dir}/{name}");
    tracing::info!(member = %member_path, id = %info.id, "joined leader election");
    let (role_tx, role) = watch::channel(Role::Follower { leader: None });
    let lost = CancellationToken::new();
    let stop = CancellationToken::new();
    let task = Task {
        session: session.clone(),
        dir,
        name,
        member_path: member_path.clone(),
        role_tx,
        lost: lost.clone(),
        stop: stop.clone(),
    };
    tokio::spawn(task.run());
    Ok(Candidate {
        session: session.clone(),
        member_path,
        info,
        role,
        lost,
        stop,
    })
}

impl Candidate {
    /// This candidate's member znode.
    pub fn member_path(&self) -> &str {
        &self.member_path
    }

    /// This candidate's own info.
    pub fn info(&self) -> &MemberInfo {
        &self.info
    }

    /// The session this candidate campaigns on.
    pub fn session(&self) -> &ZkSession {
        &self.session
    }

    /// A receiver of role changes (for status pages and follower redirects).
    pub fn role(&self) -> watch::Receiver<Role> {
        self.role.clone()
    }

    /// Who leads, as last seen: ourselves when leading, `None` when unknown or lost.
    pub fn leader(&self) -> Option<MemberInfo> {
        match &*self.role.borrow() {
            Role::Leader => Some(self.info.clone()),
            Role::Follower { leader } => leader.clone(),
            Role::Lost { .. } => None,
        }
    }

    /// Fires when the candidacy ends (for a leader: when leadership ends).
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// Waits until this instance leads. Fails if the candidacy ends first.
    pub async fn elected(&mut self) -> Result<Leadership, ElectionError> {
        loop {
            match &*self.role.borrow_and_update() {
                Role::Leader if !self.lost.is_cancelled() => {
                    return Ok(Leadership {
                        lost: self.lost.clone(),
                        fence: Fence::new(self.member_path.clone()),
                    });
                }
                Role::Lost { reason } => return Err(ElectionError::Lost(reason.clone())),
                Role::Leader | Role::Follower { .. } => {}
            }
            if self.role.changed().await.is_err() {
                return Err(ElectionError::Lost("election task ended".into()));
            }
        }
    }

    /// Withdraws: stops the watcher task and deletes the member znode (so the next instance leads now
    /// rather than after the session timeout).
    pub async fn resign(self) {
        self.stop.cancel();
        self.lost.cancel();
        match self.session.client().delete(&self.member_path, None).await {
            Ok(()) | Err(zk::Error::NoNode) => {
                tracing::info!(member = %self.member_path, "resigned from leader election")
            }
            Err(e) => {
                tracing::warn!(member = %self.member_path, error = %e, "could not delete member znode; it goes with the session")
            }
        }
    }
}

impl Drop for Candidate {
    fn drop(&mut self) {
        if !self.stop.is_cancelled() {
            self.stop.cancel();
            self.lost.cancel();
            let client = self.session.client().clone();
            let path = self.member_path.clone();
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    let _ = client.delete(&path, None).await;
                });
            }
        }
    }
}

struct Task {
    session: ZkSession,
    dir: String,
    name: String,
    member_path: String,
    role_tx: watch::Sender<Role>,
    lost: CancellationToken,
    stop: CancellationToken,
}

/// Parses `member-<seq>` into its sequence number.
fn member_seq(name: &str) -> Option<i64> {
    name.strip_prefix(MEMBER_PREFIX)?.parse().ok()
}

fn is_terminal(state: zk::SessionState) -> bool {
    matches!(
        state,
        zk::SessionState::Expired | zk::SessionState::Closed | zk::SessionState::AuthFailed
    )
}

impl Task {
    async fn run(self) {
        let reason = self.follow().await;
        let Some(reason) = reason else { return };
        // Stop acting first: the token fires before anything else happens.
        self.lost.cancel();
        tracing::warn!(member = %self.member_path, %reason, "leader election candidacy lost");
        self.role_tx.send_replace(Role::Lost { reason });
        self.withdraw_when_reconnected().await;
    }

    /// If the session comes back, delete our stale member znode so we do not sit at the head of the
    /// queue while no longer acting as leader.
    async fn withdraw_when_reconnected(&self) {
        let mut state = self.session.state_watcher();
        loop {
            let now = state.state();
            if is_terminal(now) {
                return;
            }
            if now == zk::SessionState::SyncConnected {
                match self.session.client().delete(&self.member_path, None).await {
                    Ok(()) | Err(zk::Error::NoNode) => return,
                    Err(e) if e == zk::Error::SessionExpired || e == zk::Error::ClientClosed => {
                        return;
                    }
                    Err(_) => {}
                }
            }
            tokio::select! {
                _ = state.changed() => {}
                _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
            }
        }
    }

    /// Runs until the candidacy ends; returns why (`None` when stopped by the owner).
    async fn follow(&self) -> Option<String> {
        let client = self.session.client();
        let mut state = self.session.state_watcher();
        loop {
            if self.stop.is_cancelled() {
                return None;
            }
            let now = state.state();
            if is_terminal(now) {
                return Some(format!("ZooKeeper session {now:?}"));
            }
            let children = match client.list_children(&self.dir).await {
                Ok(c) => c,
                Err(e) => {
                    if let Some(r) = self.wait_after_error(&mut state, &e).await {
                        return r;
                    }
                    continue;
                }
            };
            let mut members: Vec<(i64, String)> = children
                .into_iter()
                .filter_map(|c| member_seq(&c).map(|s| (s, c)))
                .collect();
            members.sort();
            let Some(pos) = members.iter().position(|(_, n)| *n == self.name) else {
                return Some("our member znode disappeared".into());
            };
            if pos == 0 {
                let (stat, me) = match client.check_and_watch_stat(&self.member_path).await {
                    Ok(r) => r,
                    Err(e) => {
                        if let Some(r) = self.wait_after_error(&mut state, &e).await {
                            return r;
                        }
                        continue;
                    }
                };
                if stat.is_none() {
                    return Some("our member znode disappeared".into());
                }
                // Only declare leadership from a live, connected session.
                if state.state() != zk::SessionState::SyncConnected {
                    continue;
                }
                tracing::info!(member = %self.member_path, "elected leader");
                self.role_tx.send_replace(Role::Leader);
                tokio::select! {
                    _ = self.stop.cancelled() => return None,
                    ev = me.changed() => match ev.event_type {
                        zk::EventType::Session => return Some(format!("ZooKeeper session {:?}", ev.session_state)),
                        zk::EventType::NodeDeleted => return Some("our member znode disappeared".into()),
                        // Nobody should touch our data, but that alone is no reason to step down: re-check.
                        _ => continue,
                    },
                    s = state.changed() => {
                        // Any state change while leading (even a disconnect that may heal) ends leadership.
                        return Some(format!("ZooKeeper session {s:?} while leading"));
                    }
                }
            }
            let (_, pred) = &members[pos - 1];
            let (_, head) = &members[0];
            let head_path = format!("{}/{head}", self.dir);
            let leader = match client.get_data(&head_path).await {
                Ok((data, _)) => match serde_json::from_slice::<MemberInfo>(&data) {
                    Ok(info) => Some(info),
                    Err(e) => {
                        tracing::warn!(member = %head_path, error = %e, "leader znode holds no valid member info");
                        None
                    }
                },
                Err(zk::Error::NoNode) => continue,
                Err(e) => {
                    if let Some(r) = self.wait_after_error(&mut state, &e).await {
                        return r;
                    }
                    continue;
                }
            };
            self.role_tx.send_if_modified(|r| {
                let new = Role::Follower {
                    leader: leader.clone(),
                };
                if *r == new {
                    false
                } else {
                    *r = new;
                    true
                }
            });
            let pred_path = format!("{}/{pred}", self.dir);
            let pred_watch = match client.check_and_watch_stat(&pred_path).await {
                Ok((Some(_), w)) => w,
                Ok((None, _)) => continue,
                Err(e) => {
                    if let Some(r) = self.wait_after_error(&mut state, &e).await {
                        return r;
                    }
                    continue;
                }
            };
            let head_watch = if pred == head {
                None
            } else {
                match client.check_and_watch_stat(&head_path).await {
                    Ok((Some(_), w)) => Some(w),
                    Ok((None, _)) => continue,
                    Err(e) => {
                        if let Some(r) = self.wait_after_error(&mut state, &e).await {
                            return r;
                        }
                        continue;
                    }
                }
            };
            let head_changed = async {
                match head_watch {
                    Some(w) => {
                        w.changed().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = self.stop.cancelled() => return None,
                _ = pred_watch.changed() => {}
                _ = head_changed => {}
                s = state.changed() => {
                    if is_terminal(s) {
                        return Some(format!("ZooKeeper session {s:?}"));
                    }
                }
            }
        }
    }

    /// After a failed read: `Some(reason)` ends the candidacy; `None` means retry once the session is
    /// usable again. `Some(None)` means we were stopped.
    async fn wait_after_error(
        &self,
        state: &mut zk::StateWatcher,
        err: &zk::Error,
    ) -> Option<Option<String>> {
        if matches!(
            err,
            zk::Error::SessionExpired | zk::Error::ClientClosed | zk::Error::AuthFailed
        ) {
            return Some(Some(format!("ZooKeeper session ended: {err}")));
        }
        tracing::debug!(error = %err, "election read failed; retrying");
        tokio::select! {
            _ = self.stop.cancelled() => Some(None),
            s = state.changed() => if is_terminal(s) { Some(Some(format!("ZooKeeper session {s:?}"))) } else { None },
            _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names_parse() {
        assert_eq!(member_seq("member-0000000007"), Some(7));
        assert_eq!(member_seq("member-x"), None);
        assert_eq!(member_seq("other-0000000001"), None);
    }

    #[test]
    fn member_info_json_is_the_documented_shape() {
        let info = MemberInfo {
            id: "sched-a".into(),
            admin_address: "10.0.0.5:7070".into(),
            since_unix_ms: 42,
        };
        let json = serde_json::to_value(&info).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"id": "sched-a", "admin_address": "10.0.0.5:7070", "since_unix_ms": 42})
        );
        assert_eq!(serde_json::from_value::<MemberInfo>(json).unwrap(), info);
    }
}
