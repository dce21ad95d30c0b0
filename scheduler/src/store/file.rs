//! The embedded state store: a write-ahead log plus snapshots in a local state directory.
//!
//! Layout of the state directory:
//! - `lock`: held (flock) by the one scheduler process using the directory; a second one refuses to start.
//! - `snapshot.json`: `{"seq": N, "state": S}`, replaced atomically (write temp, fsync, rename, fsync dir).
//! - `wal.jsonl`: one `{"seq": N, "write": W}` JSON line per write, appended and fsynced before `write`
//!   returns. Records with `seq <= snapshot.seq` were folded into the snapshot and are skipped on load.
//!
//! Crash safety: a crash can only tear the last line of the log (appends are sequential); a torn LAST
//! line (no newline: the append stopped halfway) is dropped on load with a warning, because its `write`
//! never returned. A complete last line that does not decode is dropped too, since nothing after it can
//! have been acknowledged either, but logged at error level with what it held: a crash does not usually
//! leave one, so it may be a newer scheduler's record or damage worth a look. Any other unparsable line,
//! and any gap in the records' sequence numbers (a missing record), is corruption and fails the load
//! loudly rather than silently losing acknowledged state.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tether_telemetry::fs::write_atomically;

use super::StoreError;

/// Folds a write into a state.
pub trait Apply<W> {
    fn apply(&mut self, write: &W);
}

/// Compact the log into a new snapshot once it holds this many records.
const DEFAULT_COMPACT_AFTER: u64 = 4096;

#[derive(Serialize, Deserialize)]
struct Snapshot<S> {
    seq: u64,
    state: S,
}

#[derive(Serialize, Deserialize)]
struct Record<W> {
    seq: u64,
    write: W,
}

/// A last log record dropped on load (it was never acknowledged); also logged when found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DroppedTail {
    /// The line has no newline: an append a crash cut off (a warning).
    Torn {
        path: PathBuf,
        line: usize,
        bytes: usize,
    },
    /// The line is complete but is not a record this scheduler can read (an error: a crash rarely leaves
    /// one). `excerpt` is its start, for the operator.
    Undecodable {
        path: PathBuf,
        line: usize,
        error: String,
        excerpt: String,
    },
}

/// How much of an undecodable record the log shows.
const EXCERPT_CHARS: usize = 200;

fn excerpt(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    let mut out: String = text.chars().take(EXCERPT_CHARS).collect();
    if text.chars().count() > EXCERPT_CHARS {
        out.push('…');
    }
    out
}

/// A write-ahead-logged state in a directory. See the module docs for the layout.
#[derive(Debug)]
pub struct FileStore<S, W> {
    dir: PathBuf,
    state: S,
    seq: u64,
    log: File,
    log_records: u64,
    compact_after: u64,
    fresh: bool,
    dropped: Option<DroppedTail>,
    _lock: File,
    _write: PhantomData<fn(W)>,
}

fn io_err(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl<S, W> FileStore<S, W>
where
    S: Default + Serialize + DeserializeOwned + Apply<W>,
    W: Serialize + DeserializeOwned,
{
    /// Opens (creating if needed) the store in `dir`, locks it and replays snapshot and log.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io_err(&lock_path, e))?;
        match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(StoreError::Locked {
                    dir: dir.to_path_buf(),
                });
            }
            Err(e) => return Err(io_err(&lock_path, e.into())),
        }

        let snap_path = dir.join("snapshot.json");
        let log_path = dir.join("wal.jsonl");
        let had_snapshot = snap_path.exists();
        let (mut seq, mut state) = match fs::read(&snap_path) {
            Ok(bytes) => {
                let snap: Snapshot<S> =
                    serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                        path: snap_path.clone(),
                        detail: e.to_string(),
                    })?;
                (snap.seq, snap.state)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (0, S::default()),
            Err(e) => return Err(io_err(&snap_path, e)),
        };

        let mut log_records = 0;
        let mut valid_len: u64 = 0;
        let mut dropped = None;
        if let Ok(file) = File::open(&log_path) {
            let mut reader = BufReader::new(file);
            let mut line = Vec::new();
            let mut next = Vec::new();
            let mut line_no = 0;
            // The sequence the next record must carry; the first may be anywhere up to the snapshot's
            // (a crash between the snapshot and the log's truncation leaves records it already holds).
            let mut expected: Option<u64> = None;
            let read = |r: &mut BufReader<File>, buf: &mut Vec<u8>| {
                buf.clear();
                r.read_until(b'\n', buf).map_err(|e| io_err(&log_path, e))
            };
            let mut more = read(&mut reader, &mut line)? > 0;
            while more {
                line_no += 1;
                more = read(&mut reader, &mut next)? > 0;
                let is_last = !more;
                // A torn tail: its write never returned, so nothing acknowledged is lost.
                let complete = line.last() == Some(&b'\n');
                let body = line.strip_suffix(b"\n").unwrap_or(&line);
                // Only the last line can lack its newline: `read_until` stops at one or at the end.
                match serde_json::from_slice::<Record<W>>(body) {
                    _ if !complete => {
                        tracing::warn!(path = %log_path.display(), line = line_no, bytes = line.len(),
                            "dropping the state log's torn last line (a write a crash cut off; it was never acknowledged)");
                        dropped = Some(DroppedTail::Torn {
                            path: log_path.clone(),
                            line: line_no,
                            bytes: line.len(),
                        });
                    }
                    Ok(rec) => {
                        let want = expected.unwrap_or(rec.seq.min(seq + 1));
                        if rec.seq != want {
                            return Err(StoreError::SequenceGap {
                                path: log_path.clone(),
                                line: line_no,
                                missing: want,
                                found: rec.seq,
                            });
                        }
                        expected = Some(rec.seq + 1);
                        valid_len += line.len() as u64;
                        log_records += 1;
                        if rec.seq > seq {
                            state.apply(&rec.write);
                            seq = rec.seq;
                        }
                    }
                    Err(e) if is_last => {
                        let excerpt = excerpt(body);
                        tracing::error!(path = %log_path.display(), line = line_no, error = %e, record = %excerpt,
                            "dropping the state log's last record: it is complete but cannot be decoded \
                             (written by another version, or damaged); it was never acknowledged by this scheduler");
                        dropped = Some(DroppedTail::Undecodable {
                            path: log_path.clone(),
                            line: line_no,
                            error: e.to_string(),
                            excerpt,
                        });
                    }
                    Err(e) => {
                        return Err(StoreError::Corrupt {
                            path: log_path.clone(),
                            detail: format!("line {line_no}: {e}"),
                        });
                    }
                }
                std::mem::swap(&mut line, &mut next);
            }
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| io_err(&log_path, e))?;
        // Drop a torn tail so later appends start on a fresh line.
        log.set_len(valid_len).map_err(|e| io_err(&log_path, e))?;
        Ok(FileStore {
            dir: dir.to_path_buf(),
            state,
            seq,
            log,
            log_records,
            compact_after: DEFAULT_COMPACT_AFTER,
            // Opening leaves an empty log behind: only a record or a snapshot means something was stored.
            fresh: !had_snapshot && log_records == 0,
            dropped,
            _lock: lock,
            _write: PhantomData,
        })
    }

    /// Compacts after `n` log records instead of the default (tests use small values).
    pub fn with_compact_after(mut self, n: u64) -> Self {
        self.compact_after = n.max(1);
        self
    }

    /// True when the directory held no state when opened (a first start).
    pub fn is_fresh(&self) -> bool {
        self.fresh
    }

    /// The last log record dropped when the store was opened, if any (it was also logged).
    pub fn dropped_tail(&self) -> Option<&DroppedTail> {
        self.dropped.as_ref()
    }

    /// The state as of the last durable write.
    pub fn state(&self) -> &S {
        &self.state
    }

    /// Appends `writes` and fsyncs; when this returns Ok they survive a crash.
    pub fn write(&mut self, writes: &[W]) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        let log_path = self.dir.join("wal.jsonl");
        let mut buf = Vec::new();
        for (i, write) in writes.iter().enumerate() {
            let rec = Record {
                seq: self.seq + 1 + i as u64,
                write,
            };
            serde_json::to_writer(&mut buf, &rec).map_err(|e| StoreError::Encode(e.to_string()))?;
            buf.push(b'\n');
        }
        self.log.write_all(&buf).map_err(|e| io_err(&log_path, e))?;
        self.log.sync_data().map_err(|e| io_err(&log_path, e))?;
        for write in writes {
            self.state.apply(write);
        }
        self.seq += writes.len() as u64;
        self.log_records += writes.len() as u64;
        if self.log_records >= self.compact_after {
            self.compact()?;
        }
        Ok(())
    }

    /// Writes the current state as the new snapshot and empties the log.
    pub fn compact(&mut self) -> Result<(), StoreError> {
        let snap_path = self.dir.join("snapshot.json");
        let body = serde_json::to_vec(&Snapshot {
            seq: self.seq,
            state: &self.state,
        })
        .map_err(|e| StoreError::Encode(e.to_string()))?;
        write_atomically(&snap_path, &body).map_err(|e| io_err(&snap_path, e))?;
        // The snapshot is durable: the log's records are now redundant (and skipped by seq if a crash
        // leaves them in place).
        let log_path = self.dir.join("wal.jsonl");
        self.log.set_len(0).map_err(|e| io_err(&log_path, e))?;
        self.log.sync_all().map_err(|e| io_err(&log_path, e))?;
        self.log_records = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
    struct Kv(BTreeMap<u8, u32>);

    #[derive(Debug, Clone, Serialize, Deserialize)]
    enum Op {
        Set(u8, u32),
        Del(u8),
    }

    impl Apply<Op> for Kv {
        fn apply(&mut self, w: &Op) {
            match w {
                Op::Set(k, v) => {
                    self.0.insert(*k, *v);
                }
                Op::Del(k) => {
                    self.0.remove(k);
                }
            }
        }
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..16, any::<u32>()).prop_map(|(k, v)| Op::Set(k, v)),
            (0u8..16).prop_map(Op::Del)
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Whatever the batching and compaction points, a reopened store equals the in-memory model.
        #[test]
        fn reopen_replays_exactly_what_was_written(
            batches in prop::collection::vec(prop::collection::vec(op(), 0..6), 0..20),
            compact_after in 1u64..8,
        ) {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut model = Kv::default();
            {
                let mut store: FileStore<Kv, Op> = FileStore::open(dir.path()).expect("open").with_compact_after(compact_after);
                for batch in &batches {
                    store.write(batch).expect("write");
                    for w in batch { model.apply(w); }
                    prop_assert_eq!(store.state(), &model);
                }
            }
            let store: FileStore<Kv, Op> = FileStore::open(dir.path()).expect("reopen");
            prop_assert_eq!(store.state(), &model);
        }
    }

    #[test]
    fn a_torn_last_line_is_dropped_and_later_writes_still_replay() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut store: FileStore<Kv, Op> = FileStore::open(dir.path()).expect("open");
            store.write(&[Op::Set(1, 10)]).expect("write");
        }
        // A crash in the middle of an append.
        let mut log = OpenOptions::new()
            .append(true)
            .open(dir.path().join("wal.jsonl"))
            .expect("log");
        log.write_all(br#"{"seq":2,"write":{"Set":[2,"#)
            .expect("tear");
        drop(log);
        {
            let mut store: FileStore<Kv, Op> = FileStore::open(dir.path()).expect("reopen");
            assert_eq!(store.state().0, BTreeMap::from([(1, 10)]));
            assert!(
                matches!(
                    store.dropped_tail(),
                    Some(DroppedTail::Torn { line: 2, .. })
                ),
                "{:?}",
                store.dropped_tail()
            );
            store.write(&[Op::Set(3, 30)]).expect("write after tear");
        }
        let store: FileStore<Kv, Op> = FileStore::open(dir.path()).expect("reopen");
        assert_eq!(store.state().0, BTreeMap::from([(1, 10), (3, 30)]));
    }

    #[test]
    fn corruption_before_the_tail_fails_loudly() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut store: FileStore<Kv, Op> = FileStore::open(dir.path()).expect("open");
            store
                .write(&[Op::Set(1, 10), Op::Set(2, 20)])
                .expect("write");
        }
        let path = dir.path().join("wal.jsonl");
        let text = fs::read_to_string(&path).expect("read");
        fs::write(&path, text.replacen("\"seq\":1", "\"seq\":?", 1)).expect("corrupt");
        let err = FileStore::<Kv, Op>::open(dir.path()).expect_err("corruption detected");
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    }

    fn write_three(dir: &Path) -> PathBuf {
        let mut store: FileStore<Kv, Op> = FileStore::open(dir).expect("open");
        store
            .write(&[Op::Set(1, 10), Op::Set(2, 20), Op::Set(3, 30)])
            .expect("write");
        dir.join("wal.jsonl")
    }

    #[test]
    fn a_missing_middle_record_refuses_to_load_naming_the_file_and_the_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write_three(dir.path());
        let text = fs::read_to_string(&path).expect("read");
        let lines: Vec<&str> = text.lines().collect();
        fs::write(&path, format!("{}\n{}\n", lines[0], lines[2])).expect("delete a line");
        let err = FileStore::<Kv, Op>::open(dir.path()).expect_err("gap detected");
        assert!(
            matches!(
                err,
                StoreError::SequenceGap {
                    line: 2,
                    missing: 2,
                    found: 3,
                    ..
                }
            ),
            "{err}"
        );
        let text = err.to_string();
        assert!(
            text.contains("wal.jsonl") && text.contains("record 2 is missing"),
            "{text}"
        );
    }

    #[test]
    fn a_missing_first_record_after_the_snapshot_refuses_to_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write_three(dir.path());
        let text = fs::read_to_string(&path).expect("read");
        let rest: Vec<&str> = text.lines().skip(1).collect();
        fs::write(&path, format!("{}\n", rest.join("\n"))).expect("delete the first line");
        let err = FileStore::<Kv, Op>::open(dir.path()).expect_err("gap detected");
        assert!(
            matches!(
                err,
                StoreError::SequenceGap {
                    missing: 1,
                    found: 2,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn records_already_in_the_snapshot_still_load() {
        // A crash after the snapshot was written but before the log was emptied.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write_three(dir.path());
        let log = fs::read(&path).expect("read");
        {
            let mut store: FileStore<Kv, Op> = FileStore::open(dir.path()).expect("open");
            store.compact().expect("compact");
        }
        fs::write(&path, log).expect("restore the old log");
        {
            let mut store: FileStore<Kv, Op> = FileStore::open(dir.path()).expect("reopen");
            store.write(&[Op::Set(4, 40)]).expect("write");
        }
        let store: FileStore<Kv, Op> = FileStore::open(dir.path()).expect("reopen");
        assert_eq!(
            store.state().0,
            BTreeMap::from([(1, 10), (2, 20), (3, 30), (4, 40)])
        );
    }

    #[test]
    fn a_complete_but_undecodable_last_record_is_dropped_and_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write_three(dir.path());
        let mut log = OpenOptions::new().append(true).open(&path).expect("log");
        log.write_all(b"{\"seq\":4,\"write\":{\"Rename\":[1,2]}}\n")
            .expect("append");
        drop(log);
        let store: FileStore<Kv, Op> = FileStore::open(dir.path()).expect("loads");
        assert_eq!(store.state().0, BTreeMap::from([(1, 10), (2, 20), (3, 30)]));
        match store.dropped_tail() {
            Some(DroppedTail::Undecodable {
                line: 4,
                error,
                excerpt,
                ..
            }) => {
                assert!(error.contains("Rename"), "{error}");
                assert!(excerpt.contains("\"seq\":4"), "{excerpt}");
            }
            other => panic!("expected an undecodable tail, got {other:?}"),
        }
    }

    #[test]
    fn a_second_process_cannot_open_a_locked_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _first: FileStore<Kv, Op> = FileStore::open(dir.path()).expect("open");
        let err = FileStore::<Kv, Op>::open(dir.path()).expect_err("locked");
        assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    }
}
