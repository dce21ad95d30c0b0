//! Versioned JSON state in ZooKeeper: keyed documents and bucketed tables under `<root>/state`, every
//! write a compare-and-set on the znode versions this instance last saw, optionally fenced by the
//! leader's election znode. A write that loses a race is fatal for the instance: the store is poisoned
//! and the caller must stop acting, re-open and reload (never retry blindly).
//!
//! Layout (see the crate README):
//! * `<root>/state/<key>`: one JSON document per key (e.g. `framework_id`, `desired`).
//! * `<root>/state/<table>/<bucket>`: a table's entries spread over up to [`BUCKETS`] znodes named
//!   `00`..`ff` by a stable hash of the entry key, each `{"entries": {"<key>": <value>, ...}}`; empty
//!   buckets are deleted. A table of 10,000 slots is about 40 entries per znode.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::Mutex;
use zookeeper_client as zk;

use crate::session::{ZkError, ZkSession};

/// Number of buckets a table is spread over.
pub const BUCKETS: u32 = 256;
/// Largest znode this store writes; ZooKeeper's hard limit (`jute.maxbuffer`) is 1 MiB.
pub const MAX_ZNODE_BYTES: usize = 512 * 1024;
/// Largest payload sent in one `multi`; bigger batches are split (each part still CAS-checked and fenced).
pub const MAX_MULTI_BYTES: usize = 640 * 1024;

/// A store failure. `Conflict`, `Fenced` and `Poisoned` mean this instance must stop acting.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Someone else changed `path` since this instance read it: another (newer) leader is writing.
    #[error(
        "state write conflict on {path}: another scheduler changed it; this instance must stop"
    )]
    Conflict { path: String },
    /// The fence (this instance's leader znode) is gone or the session expired: no longer the leader.
    #[error("state write fenced off: {reason}; this instance is no longer the leader")]
    Fenced { reason: String },
    /// An earlier write failed; the store's view may be stale, so it refuses further writes.
    #[error("state store refuses writes after an earlier failure ({0}); re-open it and reload")]
    Poisoned(String),
    /// A document or bucket would exceed [`MAX_ZNODE_BYTES`].
    #[error("state value {path} is {bytes} bytes, over the {MAX_ZNODE_BYTES}-byte limit per znode")]
    TooLarge { path: String, bytes: usize },
    /// A key or table name is not a single znode name.
    #[error("bad state key {0:?}: use [A-Za-z0-9_.-]+ (not . or ..)")]
    BadKey(String),
    /// A value could not be serialized.
    #[error("cannot serialize state value {key}: {source}")]
    Serialize {
        key: String,
        source: serde_json::Error,
    },
    /// A stored znode does not hold the JSON we expect.
    #[error("corrupt state znode {path}: {reason}")]
    Corrupt { path: String, reason: String },
    /// ZooKeeper failed (connection loss, auth, ...).
    #[error(transparent)]
    Zk(#[from] ZkError),
}

impl StoreError {
    /// Whether this error means another instance leads now (or might): stop acting immediately.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            StoreError::Conflict { .. } | StoreError::Fenced { .. } | StoreError::Poisoned(_)
        )
    }
}

/// Proof of leadership checked atomically with every write: the leader's ephemeral election znode.
/// Created with version 0 and never modified, so `check(path, 0)` fails once the session is gone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    path: String,
}

impl Fence {
    /// A fence on an existing znode that must still be at version 0 for writes to succeed.
    pub fn new(path: impl Into<String>) -> Self {
        Self { path: path.into() }
    }

    /// The fenced znode's absolute path.
    pub fn path(&self) -> &str {
        &self.path
    }
}

/// Writes to apply atomically (as one `multi`, split only when over [`MAX_MULTI_BYTES`]).
#[derive(Debug, Default)]
pub struct Batch {
    ops: Vec<BatchOp>,
}

#[derive(Debug)]
enum BatchOp {
    Put {
        key: String,
        value: Value,
    },
    Delete {
        key: String,
    },
    ReplaceTable {
        table: String,
        entries: BTreeMap<String, Value>,
    },
    Upsert {
        table: String,
        entries: BTreeMap<String, Value>,
    },
    Remove {
        table: String,
        keys: Vec<String>,
    },
}

fn to_value<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<Value, StoreError> {
    serde_json::to_value(value).map_err(|source| StoreError::Serialize {
        key: key.to_owned(),
        source,
    })
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Sets document `key` to `value`.
    pub fn put<T: Serialize + ?Sized>(
        &mut self,
        key: &str,
        value: &T,
    ) -> Result<&mut Self, StoreError> {
        check_name(key)?;
        self.ops.push(BatchOp::Put {
            key: key.to_owned(),
            value: to_value(key, value)?,
        });
        Ok(self)
    }

    /// Deletes document `key` (no-op if it does not exist).
    pub fn delete(&mut self, key: &str) -> Result<&mut Self, StoreError> {
        check_name(key)?;
        self.ops.push(BatchOp::Delete {
            key: key.to_owned(),
        });
        Ok(self)
    }

    /// Makes `table` hold exactly `entries`; only buckets whose content changes are written.
    pub fn replace_table<'a, T: Serialize + 'a>(
        &mut self,
        table: &str,
        entries: impl IntoIterator<Item = (&'a String, &'a T)>,
    ) -> Result<&mut Self, StoreError> {
        check_name(table)?;
        let entries = entries
            .into_iter()
            .map(|(k, v)| Ok((k.clone(), to_value(k, v)?)))
            .collect::<Result<_, StoreError>>()?;
        self.ops.push(BatchOp::ReplaceTable {
            table: table.to_owned(),
            entries,
        });
        Ok(self)
    }

    /// Inserts or replaces one entry of `table`.
    pub fn upsert<T: Serialize + ?Sized>(
        &mut self,
        table: &str,
        key: &str,
        value: &T,
    ) -> Result<&mut Self, StoreError> {
        check_name(table)?;
        let mut entries = BTreeMap::new();
        entries.insert(key.to_owned(), to_value(key, value)?);
        self.ops.push(BatchOp::Upsert {
            table: table.to_owned(),
            entries,
        });
        Ok(self)
    }

    /// Removes one entry of `table` (no-op if absent).
    pub fn remove(&mut self, table: &str, key: &str) -> Result<&mut Self, StoreError> {
        check_name(table)?;
        self.ops.push(BatchOp::Remove {
            table: table.to_owned(),
            keys: vec![key.to_owned()],
        });
        Ok(self)
    }
}

fn check_name(name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(StoreError::BadKey(name.to_owned()))
    }
}

/// The bucket of a table entry: FNV-1a (32 bit) of the key's UTF-8 bytes, modulo [`BUCKETS`]. Stable
/// across versions so that small changes touch few buckets; readers never need it (they read all).
pub fn bucket_of(key: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in key.as_bytes() {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % BUCKETS
}

fn bucket_name(b: u32) -> String {
    format!("{b:02x}")
}

/// The JSON of one table bucket znode.
#[derive(serde::Serialize, serde::Deserialize)]
struct BucketDoc {
    entries: BTreeMap<String, Value>,
}

/// What this instance last saw (or wrote) at each znode: its version, or absence.
#[derive(Debug, Default)]
struct Inner {
    /// Absolute path -> version. A path not in the map is believed absent.
    versions: HashMap<String, i32>,
    /// Table -> bucket -> entries, as last read or written.
    tables: HashMap<String, BTreeMap<u32, BTreeMap<String, Value>>>,
    poisoned: Option<String>,
}

/// The versioned JSON store under `<root>/state`. Read what you will write first: a write to a znode this
/// instance never read expects it not to exist.
#[derive(Debug)]
pub struct ZkStore {
    session: ZkSession,
    dir: String,
    fence: Option<Fence>,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
enum Write {
    Create {
        path: String,
        data: Vec<u8>,
    },
    Set {
        path: String,
        data: Vec<u8>,
        version: i32,
    },
    Delete {
        path: String,
        version: i32,
    },
}

impl Write {
    fn path(&self) -> &str {
        match self {
            Write::Create { path, .. } | Write::Set { path, .. } | Write::Delete { path, .. } => {
                path
            }
        }
    }

    fn size(&self) -> usize {
        let data = match self {
            Write::Create { data, .. } | Write::Set { data, .. } => data.len(),
            Write::Delete { .. } => 0,
        };
        data + self.path().len() + 64
    }
}

impl ZkStore {
    /// Opens the store under `<root>/state`, creating the directory if needed. With a fence, every write
    /// also checks that the fence znode still exists at version 0.
    pub async fn open(session: ZkSession, fence: Option<Fence>) -> Result<Self, StoreError> {
        let dir = session.path("state");
        session.ensure_path(&dir).await?;
        Ok(Self {
            session,
            dir,
            fence,
            inner: Mutex::new(Inner::default()),
        })
    }

    /// The session this store writes through.
    pub fn session(&self) -> &ZkSession {
        &self.session
    }

    /// The absolute path of the state directory.
    pub fn dir(&self) -> &str {
        &self.dir
    }

    fn doc_path(&self, key: &str) -> String {
        format!("{}/{key}", self.dir)
    }

    fn table_path(&self, table: &str) -> String {
        format!("{}/{table}", self.dir)
    }

    /// Reads document `key` and remembers its version for the next write.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        check_name(key)?;
        let path = self.doc_path(key);
        let mut inner = self.inner.lock().await;
        match self.session.client().get_data(&path).await {
            Ok((data, stat)) => {
                let value = serde_json::from_slice(&data).map_err(|e| StoreError::Corrupt {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                inner.versions.insert(path, stat.version);
                Ok(Some(value))
            }
            Err(zk::Error::NoNode) => {
                inner.versions.remove(&path);
                Ok(None)
            }
            Err(source) => Err(ZkError::Op {
                op: "get",
                path,
                source,
            }
            .into()),
        }
    }

    /// Reads every entry of `table` (empty if it was never written) and remembers bucket versions.
    pub async fn get_table<T: DeserializeOwned>(
        &self,
        table: &str,
    ) -> Result<BTreeMap<String, T>, StoreError> {
        check_name(table)?;
        let dir = self.table_path(table);
        let mut inner = self.inner.lock().await;
        let client = self.session.client();
        let children = match client.list_children(&dir).await {
            Ok(c) => c,
            Err(zk::Error::NoNode) => Vec::new(),
            Err(source) => {
                return Err(ZkError::Op {
                    op: "list",
                    path: dir,
                    source,
                }
                .into());
            }
        };
        inner
            .versions
            .retain(|p, _| !p.starts_with(&format!("{dir}/")));
        let mut buckets = BTreeMap::new();
        let mut out = BTreeMap::new();
        for child in children {
            let path = format!("{dir}/{child}");
            let corrupt = |reason: String| StoreError::Corrupt {
                path: path.clone(),
                reason,
            };
            let bucket = u32::from_str_radix(&child, 16)
                .ok()
                .filter(|b| *b < BUCKETS && child.len() == 2)
                .ok_or_else(|| corrupt("not a bucket name 00..ff".into()))?;
            let (data, stat) = match client.get_data(&path).await {
                Ok(r) => r,
                // Deleted between list and get: the writer's next CAS will tell whether that matters.
                Err(zk::Error::NoNode) => continue,
                Err(source) => {
                    return Err(ZkError::Op {
                        op: "get",
                        path,
                        source,
                    }
                    .into());
                }
            };
            let doc: BucketDoc =
                serde_json::from_slice(&data).map_err(|e| corrupt(e.to_string()))?;
            for (k, v) in &doc.entries {
                if bucket_of(k) != bucket {
                    return Err(corrupt(format!(
                        "entry {k:?} belongs in bucket {:02x}",
                        bucket_of(k)
                    )));
                }
                let typed = serde_json::from_value(v.clone())
                    .map_err(|e| corrupt(format!("entry {k:?}: {e}")))?;
                out.insert(k.clone(), typed);
            }
            inner.versions.insert(path, stat.version);
            buckets.insert(bucket, doc.entries);
        }
        inner.tables.insert(table.to_owned(), buckets);
        Ok(out)
    }

    /// Sets one document (a one-op [`Batch`]).
    pub async fn put<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<(), StoreError> {
        let mut b = Batch::new();
        b.put(key, value)?;
        self.commit(b).await
    }

    /// Deletes one document (a one-op [`Batch`]).
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let mut b = Batch::new();
        b.delete(key)?;
        self.commit(b).await
    }

    /// Applies a batch: every znode written is compare-and-set against the version this instance last
    /// saw, plus the fence check. Any failure poisons the store.
    pub async fn commit(&self, batch: Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut inner = self.inner.lock().await;
        if let Some(why) = &inner.poisoned {
            return Err(StoreError::Poisoned(why.clone()));
        }
        // Plan against a scratch copy of the table cache so a failed commit leaves the cache untouched.
        let mut tables = HashMap::new();
        let mut docs: BTreeMap<String, Option<Value>> = BTreeMap::new();
        for op in batch.ops {
            match op {
                BatchOp::Put { key, value } => {
                    docs.insert(key, Some(value));
                }
                BatchOp::Delete { key } => {
                    docs.insert(key, None);
                }
                BatchOp::ReplaceTable { table, entries } => {
                    let mut buckets: BTreeMap<u32, BTreeMap<String, Value>> = BTreeMap::new();
                    for (k, v) in entries {
                        buckets.entry(bucket_of(&k)).or_default().insert(k, v);
                    }
                    tables.insert(table, buckets);
                }
                BatchOp::Upsert { table, entries } => {
                    let t = tables
                        .entry(table.clone())
                        .or_insert_with(|| inner.tables.get(&table).cloned().unwrap_or_default());
                    for (k, v) in entries {
                        t.entry(bucket_of(&k)).or_default().insert(k, v);
                    }
                }
                BatchOp::Remove { table, keys } => {
                    let t = tables
                        .entry(table.clone())
                        .or_insert_with(|| inner.tables.get(&table).cloned().unwrap_or_default());
                    for k in keys {
                        let b = bucket_of(&k);
                        if let Some(bucket) = t.get_mut(&b) {
                            bucket.remove(&k);
                            if bucket.is_empty() {
                                t.remove(&b);
                            }
                        }
                    }
                }
            }
        }

        let mut writes = Vec::new();
        for (key, value) in &docs {
            let path = self.doc_path(key);
            let known = inner.versions.get(&path).copied();
            match (value, known) {
                (Some(v), _) => {
                    let data = serde_json::to_vec(v).map_err(|source| StoreError::Serialize {
                        key: key.clone(),
                        source,
                    })?;
                    writes.push(plan_put(path, data, known)?);
                }
                (None, Some(version)) => writes.push(Write::Delete { path, version }),
                (None, None) => {}
            }
        }
        for (table, buckets) in &tables {
            let empty = BTreeMap::new();
            let old = inner.tables.get(table).unwrap_or(&empty);
            let dir = self.table_path(table);
            for b in old
                .keys()
                .chain(buckets.keys())
                .collect::<std::collections::BTreeSet<_>>()
            {
                let path = format!("{dir}/{}", bucket_name(*b));
                let known = inner.versions.get(&path).copied();
                match (buckets.get(b), old.get(b)) {
                    (Some(new), Some(prev)) if new == prev => {}
                    (Some(new), _) => {
                        let data = serde_json::to_vec(&BucketDoc {
                            entries: new.clone(),
                        })
                        .map_err(|source| StoreError::Serialize {
                            key: path.clone(),
                            source,
                        })?;
                        writes.push(plan_put(path, data, known)?);
                    }
                    (None, _) => {
                        if let Some(version) = known {
                            writes.push(Write::Delete { path, version });
                        }
                    }
                }
            }
            if !buckets.is_empty() {
                self.session.ensure_path(&dir).await?;
            }
        }

        match self.send(&writes, &mut inner.versions).await {
            Ok(()) => {
                for (table, buckets) in tables {
                    inner.tables.insert(table, buckets);
                }
                Ok(())
            }
            Err(e) => {
                inner.poisoned = Some(e.to_string());
                Err(e)
            }
        }
    }

    async fn send(
        &self,
        writes: &[Write],
        versions: &mut HashMap<String, i32>,
    ) -> Result<(), StoreError> {
        let options = self.session.persistent_options();
        let mut start = 0;
        while start < writes.len() {
            let mut end = start;
            let mut size = 0;
            while end < writes.len()
                && (end == start || size + writes[end].size() <= MAX_MULTI_BYTES)
            {
                size += writes[end].size();
                end += 1;
            }
            let chunk = &writes[start..end];
            let client = self.session.client();
            let mut multi = client.new_multi_writer();
            let offset = usize::from(self.fence.is_some());
            let bad_args = |source: zk::Error, path: &str| {
                StoreError::Zk(ZkError::Op {
                    op: "multi",
                    path: path.to_owned(),
                    source,
                })
            };
            if let Some(f) = &self.fence {
                multi
                    .add_check_version(&f.path, 0)
                    .map_err(|e| bad_args(e, &f.path))?;
            }
            for w in chunk {
                let r = match w {
                    Write::Create { path, data } => multi.add_create(path, data, &options),
                    Write::Set {
                        path,
                        data,
                        version,
                    } => multi.add_set_data(path, data, Some(*version)),
                    Write::Delete { path, version } => multi.add_delete(path, Some(*version)),
                };
                r.map_err(|e| bad_args(e, w.path()))?;
            }
            match multi.commit().await {
                Ok(results) => {
                    for (w, r) in chunk.iter().zip(results.into_iter().skip(offset)) {
                        match (w, r) {
                            (Write::Create { path, .. }, _) => {
                                versions.insert(path.clone(), 0);
                            }
                            (Write::Set { path, .. }, zk::MultiWriteResult::SetData { stat }) => {
                                versions.insert(path.clone(), stat.version);
                            }
                            (Write::Set { path, version, .. }, _) => {
                                versions.insert(path.clone(), version + 1);
                            }
                            (Write::Delete { path, .. }, _) => {
                                versions.remove(path);
                            }
                        }
                    }
                }
                Err(zk::MultiWriteError::OperationFailed { index, source }) => {
                    if index < offset {
                        return Err(StoreError::Fenced {
                            reason: format!("leader znode check failed: {source}"),
                        });
                    }
                    let path = chunk
                        .get(index - offset)
                        .map(|w| w.path().to_owned())
                        .unwrap_or_default();
                    return Err(match source {
                        zk::Error::BadVersion | zk::Error::NodeExists | zk::Error::NoNode => {
                            StoreError::Conflict { path }
                        }
                        source => StoreError::Zk(ZkError::Op {
                            op: "multi",
                            path,
                            source,
                        }),
                    });
                }
                Err(zk::MultiWriteError::RequestFailed { source }) => {
                    if self.fence.is_some()
                        && matches!(source, zk::Error::SessionExpired | zk::Error::ClientClosed)
                    {
                        return Err(StoreError::Fenced {
                            reason: format!("ZooKeeper session lost: {source}"),
                        });
                    }
                    return Err(StoreError::Zk(ZkError::Op {
                        op: "multi",
                        path: self.dir.clone(),
                        source,
                    }));
                }
            }
            start = end;
        }
        Ok(())
    }
}

fn plan_put(path: String, data: Vec<u8>, known: Option<i32>) -> Result<Write, StoreError> {
    if data.len() > MAX_ZNODE_BYTES {
        return Err(StoreError::TooLarge {
            path,
            bytes: data.len(),
        });
    }
    Ok(match known {
        Some(version) => Write::Set {
            path,
            data,
            version,
        },
        None => Write::Create { path, data },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bucket_hash_is_stable() {
        // Pinned values: changing the hash would rewrite every bucket of existing deployments.
        assert_eq!(bucket_of(""), 0x811c_9dc5 % BUCKETS);
        assert_eq!(bucket_of("a"), 0xe40c_292c % BUCKETS);
        assert_eq!(bucket_name(bucket_of("a")), "2c");
        assert_eq!(bucket_name(0), "00");
    }

    #[test]
    fn names_are_validated() {
        for good in ["framework_id", "slots", "a.b-c_1"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "ü"] {
            assert!(
                matches!(check_name(bad), Err(StoreError::BadKey(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn oversized_values_are_refused_before_sending() {
        let err = plan_put("/x".into(), vec![b'a'; MAX_ZNODE_BYTES + 1], None).unwrap_err();
        assert!(matches!(err, StoreError::TooLarge { bytes, .. } if bytes == MAX_ZNODE_BYTES + 1));
    }

    proptest! {
        #[test]
        fn buckets_spread_keys(n in 1000usize..3000) {
            let mut counts = vec![0usize; BUCKETS as usize];
            for i in 0..n {
                counts[bucket_of(&format!("es-data-{i:05}")) as usize] += 1;
            }
            // With n/256 expected per bucket, no bucket should hold more than a few times that.
            let max = counts.iter().max().copied().unwrap_or(0);
            prop_assert!(max <= 4 * n / BUCKETS as usize + 8, "max {max} for {n}");
        }
    }
}
