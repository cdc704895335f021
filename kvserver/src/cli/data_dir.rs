//! Claiming a node's data directory: an exclusive lock (two processes on
//! one directory would corrupt it) and the node identity recorded in
//! `meta/node_id`, so a directory is never reused under another id.
//!
//! `meta/initialized` marks a directory whose node has started once (its
//! bootstrap regions written, or it joined a running cluster): such a node
//! never bootstraps regions again, even when every replica it held was
//! moved away.

use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::path::Path;

use anyhow::{bail, Context as _};

/// Held for the node's lifetime; the lock is released when dropped.
pub struct DataDirLock {
    _file: File,
}

pub fn claim(dir: &Path, node_id: u64) -> anyhow::Result<DataDirLock> {
    let meta = dir.join("meta");
    fs::create_dir_all(&meta).with_context(|| format!("create {}", meta.display()))?;
    let lock_path = dir.join("LOCK");
    let file =
        File::create(&lock_path).with_context(|| format!("create {}", lock_path.display()))?;
    // SAFETY: flock on a file descriptor we own; no memory is shared.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        bail!(
            "data dir {} is in use by another flotilla process",
            dir.display()
        );
    }
    let id_path = meta.join("node_id");
    match fs::read_to_string(&id_path) {
        Ok(text) => {
            let recorded: u64 = text
                .trim()
                .parse()
                .with_context(|| format!("{} is corrupt", id_path.display()))?;
            if recorded != node_id {
                bail!(
                    "data dir {} belongs to node {recorded}, not node {node_id}: use that node's id or another directory",
                    dir.display()
                );
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            engine::durable_dir::replace_file(&id_path, format!("{node_id}\n").as_bytes())
                .context("recording the node id")?;
        }
        Err(e) => return Err(e).with_context(|| format!("read {}", id_path.display())),
    }
    Ok(DataDirLock { _file: file })
}

fn initialized_marker(dir: &Path) -> std::path::PathBuf {
    dir.join("meta").join("initialized")
}

/// Whether the node of this (claimed) directory has started before.
pub fn is_initialized(dir: &Path) -> bool {
    initialized_marker(dir).exists()
}

/// Durably marks the (claimed) directory's node as started.
pub fn mark_initialized(dir: &Path) -> anyhow::Result<()> {
    if is_initialized(dir) {
        return Ok(());
    }
    engine::durable_dir::replace_file(&initialized_marker(dir), b"")
        .context("marking the data directory initialized")
}
