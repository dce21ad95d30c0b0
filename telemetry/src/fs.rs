//! Durable file writes: a file replaced so that after a crash it holds either the old or the new
//! contents, and once the call returns the new contents survive a power loss.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

/// Replaces `path` with `body`: writes `<path minus extension>.tmp`, fsyncs it, renames it over `path`,
/// then fsyncs the directory so the rename itself is durable (a bare file name means the current
/// directory). The directory must exist.
pub fn write_atomically(path: &Path, body: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(body)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_and_leaves_no_temp_file() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("state.json");
        write_atomically(&path, b"one")?;
        write_atomically(&path, b"two")?;
        assert_eq!(fs::read(&path)?, b"two");
        let names: Vec<_> = fs::read_dir(dir.path())?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()?;
        assert_eq!(names, ["state.json"]);
        Ok(())
    }

    #[test]
    fn a_missing_directory_is_an_error_not_a_panic() {
        let err = write_atomically(Path::new("/nonexistent/dir/state.json"), b"x")
            .expect_err("no directory");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
