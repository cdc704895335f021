//! [`Tombstones`]: the regions this store held a replica of until the
//! replica was removed from the region's configuration, each with the
//! `conf_ver` of a configuration the store is not part of.
//!
//! A tombstone keeps a removed replica from coming back by accident: a
//! checkpoint it covers is deleted at start-up instead of loaded (a crash in
//! the middle of a destruction), and a snapshot it covers (sent by the old
//! group before the removal) is dropped instead of installed. A snapshot of
//! a newer configuration (the store was added again) is accepted.
//!
//! Guarantees: a tombstone is durable before [`Tombstones::record`]
//! returns (one small file per region beside the checkpoints, replaced
//! atomically), and its `conf_ver` never goes down.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::RaftstoreError;
use crate::region::RegionMeta;

const FILE_PREFIX: &str = "region-";
const FILE_SUFFIX: &str = ".tombstone";

/// The tombstones of some regions of a store, in memory and on disk.
#[derive(Debug)]
pub struct Tombstones {
    dir: PathBuf,
    /// Region id -> the `conf_ver` of a configuration without this store.
    conf_vers: BTreeMap<u64, u64>,
}

fn path_of(dir: &Path, region_id: u64) -> PathBuf {
    dir.join(format!("{FILE_PREFIX}{region_id:020}{FILE_SUFFIX}"))
}

impl Tombstones {
    /// The tombstones in `dir` of the regions `keep` selects.
    pub fn load(dir: &Path, keep: impl Fn(u64) -> bool) -> Result<Tombstones, RaftstoreError> {
        let mut conf_vers = BTreeMap::new();
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Tombstones {
                    dir: dir.to_path_buf(),
                    conf_vers,
                })
            }
            Err(e) => {
                return Err(RaftstoreError::Internal(format!(
                    "list {}: {e}",
                    dir.display()
                )))
            }
        };
        for entry in entries {
            let entry = entry
                .map_err(|e| RaftstoreError::Internal(format!("list {}: {e}", dir.display())))?;
            let name = entry.file_name();
            let Some(region_id) = name
                .to_str()
                .and_then(|n| n.strip_prefix(FILE_PREFIX))
                .and_then(|n| n.strip_suffix(FILE_SUFFIX))
                .and_then(|digits| digits.parse::<u64>().ok())
            else {
                continue;
            };
            if !keep(region_id) {
                continue;
            }
            let path = entry.path();
            let text = std::fs::read_to_string(&path)
                .map_err(|e| RaftstoreError::Internal(format!("read {}: {e}", path.display())))?;
            let conf_ver = text.trim().parse::<u64>().map_err(|e| {
                RaftstoreError::Corrupt(format!("tombstone {}: {e}: {text:?}", path.display()))
            })?;
            conf_vers.insert(region_id, conf_ver);
        }
        Ok(Tombstones {
            dir: dir.to_path_buf(),
            conf_vers,
        })
    }

    /// The `conf_ver` of a configuration of `region_id` this store is not
    /// part of, if its replica was removed.
    pub fn conf_ver(&self, region_id: u64) -> Option<u64> {
        self.conf_vers.get(&region_id).copied()
    }

    /// Whether `region` (as a checkpoint or snapshot describes it) is a
    /// configuration no newer than one this store was removed from: a
    /// leftover of the old group, never to be installed.
    pub fn covers(&self, region: &RegionMeta) -> bool {
        self.conf_ver(region.id)
            .is_some_and(|removed_at| region.epoch.conf_ver <= removed_at)
    }

    /// Durably records that this store is not part of `region_id`'s
    /// configuration `conf_ver` (a newer tombstone already there is kept).
    pub fn record(&mut self, region_id: u64, conf_ver: u64) -> Result<(), RaftstoreError> {
        if self
            .conf_ver(region_id)
            .is_some_and(|known| known >= conf_ver)
        {
            return Ok(());
        }
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| RaftstoreError::Internal(format!("create {}: {e}", self.dir.display())))?;
        engine::durable_dir::replace_file(
            &path_of(&self.dir, region_id),
            format!("{conf_ver}\n").as_bytes(),
        )?;
        self.conf_vers.insert(region_id, conf_ver);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "flotilla-tombstones-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn region(id: u64, conf_ver: u64) -> RegionMeta {
        let mut r = RegionMeta::whole_keyspace(id, &[1, 2, 3]);
        r.epoch.conf_ver = conf_ver;
        r
    }

    #[test]
    fn tombstones_survive_a_reload_and_never_go_back() {
        let dir = scratch();
        let mut t = Tombstones::load(&dir, |_| true).unwrap();
        assert_eq!(t.conf_ver(7), None);
        assert!(!t.covers(&region(7, 1)));
        t.record(7, 4).unwrap();
        t.record(7, 2).unwrap();
        t.record(8, 9).unwrap();
        let reloaded = Tombstones::load(&dir, |id| id == 7).unwrap();
        assert_eq!(reloaded.conf_ver(7), Some(4));
        assert_eq!(reloaded.conf_ver(8), None, "not selected");
        assert!(
            reloaded.covers(&region(7, 4)),
            "the group it was removed from"
        );
        assert!(!reloaded.covers(&region(7, 5)), "added again later");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_damaged_tombstone_refuses_start_up() {
        let dir = scratch();
        std::fs::write(path_of(&dir, 3), "three").unwrap();
        assert!(matches!(
            Tombstones::load(&dir, |_| true),
            Err(RaftstoreError::Corrupt(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
