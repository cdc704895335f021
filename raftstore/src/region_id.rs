//! [`RegionIdAllocator`]: ids for the regions splits create.
//!
//! Every replica of a split must create the new region under the same id,
//! so the id travels in the split command; the leader that proposes the
//! split allocates it here. An id is `store_id << 32 | n` with `n` from a
//! store-local counter, so two stores never hand out the same id. The
//! counter is reserved durably in blocks ahead of use (a file holding the
//! first value not yet reserved, replaced atomically), so an id is never
//! handed out twice, even across crashes; a crash only skips the unused
//! rest of a block.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::RaftstoreError;

/// Counter values reserved per durable write.
const RESERVE_BLOCK: u64 = 1024;
const FILE_NAME: &str = "region_id_reserved";

pub struct RegionIdAllocator {
    store_id: u64,
    path: PathBuf,
    /// (next counter value, first value not reserved on disk).
    counter: Mutex<(u64, u64)>,
}

impl RegionIdAllocator {
    /// Opens the allocator of store `store_id` whose state lives in `dir`.
    pub fn open(dir: &Path, store_id: u64) -> Result<RegionIdAllocator, RaftstoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| RaftstoreError::Internal(format!("create {}: {e}", dir.display())))?;
        let path = dir.join(FILE_NAME);
        let reserved = match std::fs::read_to_string(&path) {
            Ok(text) => text.trim().parse::<u64>().map_err(|e| {
                RaftstoreError::Corrupt(format!("{}: {e}: {text:?}", path.display()))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 1,
            Err(e) => {
                return Err(RaftstoreError::Internal(format!(
                    "read {}: {e}",
                    path.display()
                )))
            }
        };
        Ok(RegionIdAllocator {
            store_id,
            path,
            // Values below `reserved` may have been handed out before.
            counter: Mutex::new((reserved, reserved)),
        })
    }

    /// A region id never handed out before by any store.
    pub fn allocate(&self) -> Result<u64, RaftstoreError> {
        let mut counter = self.counter.lock().unwrap_or_else(|p| p.into_inner());
        let (next, reserved) = *counter;
        if next >= u64::from(u32::MAX) {
            return Err(RaftstoreError::Internal(format!(
                "store {} has used up its region ids",
                self.store_id
            )));
        }
        if next >= reserved {
            let reserved = next + RESERVE_BLOCK;
            self.persist(reserved)?;
            counter.1 = reserved;
        }
        counter.0 = next + 1;
        Ok(self.store_id << 32 | next)
    }

    fn persist(&self, reserved: u64) -> Result<(), RaftstoreError> {
        engine::durable_dir::replace_file(&self.path, format!("{reserved}\n").as_bytes())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "flotilla-region-id-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn ids_are_unique_per_store_and_across_reopens() {
        let dir = scratch();
        let a = RegionIdAllocator::open(&dir, 3).unwrap();
        let first: Vec<u64> = (0..RESERVE_BLOCK + 5)
            .map(|_| a.allocate().unwrap())
            .collect();
        assert!(first.iter().all(|id| id >> 32 == 3));
        drop(a);
        // A crash loses the unused rest of the block, never reuses an id.
        let b = RegionIdAllocator::open(&dir, 3).unwrap();
        let again = b.allocate().unwrap();
        assert!(first.iter().all(|&id| id < again), "{again} reused");
        let mut all = first.clone();
        all.push(again);
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), first.len() + 1);
        // Another store's ids never collide.
        let other = RegionIdAllocator::open(&scratch(), 4).unwrap();
        assert_eq!(other.allocate().unwrap() >> 32, 4);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_damaged_file_is_an_error_not_a_reuse() {
        let dir = scratch();
        std::fs::write(dir.join(FILE_NAME), "not a number").unwrap();
        assert!(matches!(
            RegionIdAllocator::open(&dir, 1),
            Err(RaftstoreError::Corrupt(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
