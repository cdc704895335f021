//! Directory changes made durable: a new directory survives a crash only once
//! its parent is fsynced, and a file created, renamed or removed in a
//! directory only once that directory is fsynced. Blocking (std::fs).

use std::fs;
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
}
