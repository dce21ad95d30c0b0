//! Documents in a shard copy on the node's data path: `<data>/indices/<index>/<shard>/<hex id>.json`,
//! written to a temporary file, fsynced, renamed and the directory fsynced before the write is
//! acknowledged, so an acknowledged write survives a kill -9. Which copies exist and where is the
//! cluster's shard table (`cluster::routing`); writing to them is `cluster::shards`.

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
fn doc_path(dir: &Path, id: &str) -> Result<PathBuf, DocError> {
    if id.is_empty() || id.len() > 512 {
        return Err(DocError::new(
            400,
            "action_request_validation_exception",
            "id must be 1 to 512 bytes long",
        ));
    }
    let hex: String = id.bytes().map(|b| format!("{b:02x}")).collect();
    Ok(dir.join(format!("{hex}.json")))
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

/// Stores `version` of document `id` in the shard directory `dir` durably, unless the copy already holds
/// that version or a newer one (a replica may see a recovery and a live write in either order).
pub fn store(dir: &Path, id: &str, version: u64, source: Value) -> Result<(), DocError> {
    let path = doc_path(dir, id)?;
    if read_path(&path).is_some_and(|d| d.version >= version) {
        return Ok(());
    }
    let stored = json!({ "_version": version, "_source": source });
    write_durably(&path, stored.to_string().as_bytes())
        .map_err(|e| DocError::new(500, "io_exception", format!("{}: {e}", path.display())))
}

/// `(version, source)` of document `id` in the shard directory `dir`.
pub fn read(dir: &Path, id: &str) -> Option<(u64, Value)> {
    let d = read_path(&doc_path(dir, id).ok()?)?;
    Some((d.version, d.source))
}

/// Every document of the shard directory `dir` as `(id, version, source)`.
pub fn all(dir: &Path) -> Result<Vec<(String, u64, Value)>, String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(hex) = name.strip_suffix(".json") else {
            continue;
        };
        let Some(id) = unhex(hex) else { continue };
        if let Some(d) = read_path(&e.path()) {
            out.push((id, d.version, d.source));
        }
    }
    Ok(out)
}

/// Number of documents in the shard directory `dir`.
pub fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                .count()
        })
        .unwrap_or(0)
}

fn unhex(hex: &str) -> Option<String> {
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

struct StoredDoc {
    version: u64,
    source: Value,
}

fn read_path(path: &Path) -> Option<StoredDoc> {
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
    fn a_copy_keeps_the_newest_version_and_lists_its_documents() {
        let dir = tempfile::tempdir().expect("tempdir");
        store(dir.path(), "a/b", 2, json!({"x": 2})).expect("store");
        // An older version arriving late (a recovery after a live write) changes nothing.
        store(dir.path(), "a/b", 1, json!({"x": 1})).expect("store");
        assert_eq!(read(dir.path(), "a/b"), Some((2, json!({"x": 2}))));
        assert_eq!(read(dir.path(), "nope"), None);
        store(dir.path(), "c", 1, json!({})).expect("store");
        let mut ids: Vec<String> = all(dir.path())
            .expect("all")
            .into_iter()
            .map(|d| d.0)
            .collect();
        ids.sort();
        assert_eq!(ids, ["a/b", "c"]);
        assert_eq!(count(dir.path()), 2);
    }
}
