//! Directory changes made durable: a new directory survives a crash only once
//! its parent is fsynced, and a file created, renamed or removed in a
//! directory only once that directory is fsynced. Blocking (std::fs).
//!
//! [`replace_file`] is the one way small state files (counters, address
//! books, markers) are written: a reader after a crash sees either the old
//! contents or the new, never a mix.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::EngineError;

/// Creates `dir` and any missing ancestors, fsyncing the parent of each one
/// created. Does nothing if `dir` already exists.
pub(crate) fn create_dir_durably(dir: &Path) -> Result<(), EngineError> {
    let missing: Vec<PathBuf> = dir
        .ancestors()
        .take_while(|ancestor| !ancestor.as_os_str().is_empty() && !ancestor.exists())
        .map(Path::to_path_buf)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(|e| EngineError::io_at("creating", dir, e))?;
    for created in &missing {
        if let Some(parent) = created.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
    }
    Ok(())
}

/// Fsyncs `dir` so that entries created, renamed or removed in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), EngineError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| EngineError::io_at("syncing directory", dir, e))
}

/// Durably replaces the file at `path` with `contents`: written to a
/// temporary file beside it, fsynced, renamed over `path`, and the directory
/// fsynced. The directory must exist.
pub fn replace_file(path: &Path, contents: &[u8]) -> Result<(), EngineError> {
    let mut temp_name = path.as_os_str().to_owned();
    temp_name.push(".tmp");
    let temp = PathBuf::from(temp_name);
    let mut file = fs::File::create(&temp).map_err(|e| EngineError::io_at("creating", &temp, e))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|e| EngineError::io_at("writing", &temp, e))?;
    drop(file);
    fs::rename(&temp, path).map_err(|e| EngineError::io_at("renaming into place", path, e))?;
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => sync_dir(dir),
        None => sync_dir(Path::new(".")),
    }
}

/// Durably removes the file at `path`; returns whether there was one.
pub fn remove_file(path: &Path) -> Result<bool, EngineError> {
    match fs::remove_file(path) {
        Ok(()) => {
            let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
            sync_dir(dir.unwrap_or(Path::new("."))).map(|()| true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(EngineError::io_at("removing", path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::scratch_dir;

    #[test]
    fn creates_missing_ancestors_and_accepts_existing_directories() {
        let scratch = scratch_dir();
        let nested = scratch.path().join("a/b/c");
        create_dir_durably(&nested).unwrap();
        assert!(nested.is_dir());
        create_dir_durably(&nested).unwrap();
        create_dir_durably(Path::new(".")).unwrap();
    }

    #[test]
    fn files_are_replaced_whole_and_removed_once() {
        let scratch = scratch_dir();
        let path = scratch.path().join("state");
        replace_file(&path, b"one").unwrap();
        replace_file(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(scratch.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("state")],
            "no temporary left"
        );
        assert!(remove_file(&path).unwrap());
        assert!(!remove_file(&path).unwrap());
    }
}
