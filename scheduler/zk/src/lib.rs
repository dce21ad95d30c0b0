//! ZooKeeper building blocks for Tether's high availability: `zk://` URLs and digest credentials
//! ([`url`]), a shared session with ACLs ([`session`]), a versioned JSON document store with
//! compare-and-set and leader fencing ([`store`]), leader election ([`election`]), Mesos master detection
//! ([`master`]), and a real-server test harness ([`testing`]).
//!
//! The znode layout is documented in this crate's `README.md`.
//!
//! How a scheduler uses it (the leader loop):
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use tether_zk::{Batch, MemberInfo, ZkConfig, ZkSession, ZkStore, campaign};
//!
//! let config = ZkConfig::new("zk://zk1:2181,zk2:2181/tether/es".parse()?);
//! loop {
//!     let session = ZkSession::connect(&config).await?;
//!     let mut candidate = campaign(&session, MemberInfo::now("sched-1", "10.0.0.5:7070")).await?;
//!     // Followers: candidate.leader() says who leads (for admin reads and write redirects).
//!     let leadership = candidate.elected().await?;
//!     let store = ZkStore::open(session.clone(), Some(leadership.fence())).await?;
//!     let framework_id: Option<serde_json::Value> = store.get("framework_id").await?;
//!     let slots = store.get_table::<serde_json::Value>("slots").await?;
//!     // ... subscribe to Mesos with `framework_id`, reconcile `slots`, act; every change is a Batch:
//!     let mut batch = Batch::new();
//!     batch.put("desired", &serde_json::json!({"value": slots.len() + 1}))?;
//!     store.commit(batch).await?; // Conflict/Fenced: stop acting, never retry
//!     // ... until leadership ends; then stop acting FIRST, and campaign again.
//!     leadership.lost().cancelled().await;
//! }
//! # }
//! ```

pub mod args;
pub mod election;
pub mod master;
pub mod session;
pub mod store;
pub mod testing;
pub mod url;

pub use args::ZkArgs;
pub use election::{
    Candidate, ElectionError, Leadership, MemberInfo, Role, campaign, current_leader,
};
pub use master::{MasterAddr, MasterDetector, parse_master_info};
pub use session::{ZkConfig, ZkError, ZkSession};
pub use store::{Batch, Fence, StoreError, ZkStore};
pub use url::{DigestCredentials, UrlError, ZkUrl};
pub use zookeeper_client as client;
