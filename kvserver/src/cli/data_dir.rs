//! Claiming a node's data directory: an exclusive lock (two processes on
//! one directory would corrupt it) and the node identity recorded in
//! `meta/node_id`, so a directory is never reused under another id.

use std::fs::{self, File};
use std::io::Write as _;
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
            let tmp = meta.join("node_id.tmp");
            let mut f = File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
            writeln!(f, "{node_id}")?;
            f.sync_all()?;
            fs::rename(&tmp, &id_path)?;
            File::open(&meta)?.sync_all()?;
        }
        Err(e) => return Err(e).with_context(|| format!("read {}", id_path.display())),
    }
    Ok(DataDirLock { _file: file })
}
