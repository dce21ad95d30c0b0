//! Documents on the node's data path: `<data>/indices/<index>/<hex id>.json`, written to a temporary file,
//! fsynced, renamed and the directory fsynced before the write is acknowledged, so an acknowledged write
//! survives a kill -9. Documents stay on the node that took them (no shard routing or replication); the
//! index itself is created in the cluster state through the master, so writes need an elected master.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::data_path::write_durably;

/// A refused document request, Elasticsearch-shaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocError {
    pub status: u16,
    pub kind: &'static str,
    pub reason: String,
}

impl DocError {
    fn new(status: u16, kind: &'static str, reason: impl Into<String>) -> DocError {
        DocError {
            status,
            kind,
            reason: reason.into(),
        }
    }
}

/// Index names follow Elasticsearch's rules, which also keep them safe as directory names.
pub fn valid_index(index: &str) -> bool {
    !index.is_empty()
        && index.len() <= 255
        && index != "."
        && index != ".."
        && !index.starts_with(['-', '_', '+'])
        && index
            .chars()
            .all(|c| !c.is_ascii_uppercase() && !"\\/*?\"<>| ,#:".contains(c) && !c.is_control())
}

pub fn check_index(index: &str) -> Result<(), DocError> {
    if valid_index(index) {
        Ok(())
    } else {
        Err(DocError::new(
            400,
            "invalid_index_name_exception",
            format!("Invalid index name [{index}]"),
        ))
    }
}

/// Document ids may hold any character, so they are stored hex-encoded as file names.
fn doc_path(indices: &Path, index: &str, id: &str) -> Result<PathBuf, DocError> {
    check_index(index)?;
    if id.is_empty() || id.len() > 512 {
        return Err(DocError::new(
            400,
            "action_request_validation_exception",
            "id must be 1 to 512 bytes long",
        ));
    }
    let hex: String = id.bytes().map(|b| format!("{b:02x}")).collect();
    Ok(indices.join(index).join(format!("{hex}.json")))
}

/// Parses a document body: a JSON object.
pub fn parse_source(body: &[u8]) -> Result<Value, DocError> {
    match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(DocError::new(
            400,
            "mapper_parsing_exception",
            "the document must be a JSON object",
        )),
        Err(e) => Err(DocError::new(
            400,
            "mapper_parsing_exception",
            format!("failed to parse: {e}"),
        )),
    }
}

/// Stores a document durably; `(status, body)` as Elasticsearch answers.
pub fn put(indices: &Path, index: &str, id: &str, source: Value) -> Result<(u16, Value), DocError> {
    let path = doc_path(indices, index, id)?;
    let version = read(&path).map(|d| d.version + 1).unwrap_or(1);
    let stored = json!({ "_version": version, "_source": source });
    write_durably(&path, stored.to_string().as_bytes())
        .map_err(|e| DocError::new(500, "io_exception", format!("{}: {e}", path.display())))?;
    let (status, result) = if version == 1 {
        (201, "created")
    } else {
        (200, "updated")
    };
    Ok((
        status,
        json!({ "_index": index, "_id": id, "_version": version, "result": result,
                "_shards": { "total": 1, "successful": 1, "failed": 0 } }),
    ))
}

/// Reads a document; `(status, body)` as Elasticsearch answers (404 with `found: false` when missing).
pub fn get(indices: &Path, index: &str, id: &str) -> Result<(u16, Value), DocError> {
    let path = doc_path(indices, index, id)?;
    Ok(match read(&path) {
        Some(doc) => (
            200,
            json!({ "_index": index, "_id": id, "_version": doc.version, "found": true, "_source": doc.source }),
        ),
        None => (404, json!({ "_index": index, "_id": id, "found": false })),
    })
}

/// Whether this node holds documents of `index`.
pub fn has_index(indices: &Path, index: &str) -> bool {
    valid_index(index) && indices.join(index).is_dir()
}

struct StoredDoc {
    version: u64,
    source: Value,
}

fn read(path: &Path) -> Option<StoredDoc> {
    let bytes = std::fs::read(path).ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    Some(StoredDoc {
        version: v.get("_version")?.as_u64()?,
        source: v.get("_source")?.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_names_follow_elasticsearch_rules() {
        assert!(valid_index("logs-2026.11"));
        for bad in [
            "", ".", "..", "Logs", "a/b", "_x", "-x", "a b", "a\\b", "a#b", "a:b",
        ] {
            assert!(!valid_index(bad), "{bad:?} must be refused");
        }
    }

    #[test]
    fn versions_count_up_and_survive_a_reread() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (s, b) = put(dir.path(), "i", "a/b", json!({"x": 1})).expect("put");
        assert_eq!((s, b["result"].as_str()), (201, Some("created")));
        let (s, b) = put(dir.path(), "i", "a/b", json!({"x": 2})).expect("put");
        assert_eq!((s, b["_version"].as_u64()), (200, Some(2)));
        let (s, b) = get(dir.path(), "i", "a/b").expect("get");
        assert_eq!((s, &b["_source"]), (200, &json!({"x": 2})));
        assert_eq!(get(dir.path(), "i", "nope").expect("get").0, 404);
    }
}
