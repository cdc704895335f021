//! [`ReplicaRemains`]: what is left of a replica the shard destroyed, to
//! clean up off the turn: its keys in the store (hundreds of milliseconds
//! of deletions for a large region) and, when one of its checkpoints was
//! still being written, the file that write leaves behind.
//!
//! The shard's checkpoint writer cleans up in its queue's order: after
//! every checkpoint write queued before the replica was destroyed (so the
//! file a late write makes is removed after it is made), and before any
//! write queued after (so the file of a replica of the region created
//! since, by a snapshot, is never removed). Until then the store holds the
//! keys of no region of its own (see `engine::store::RangeDeletion`), and
//! a leftover file is ignored by recovery: the replica's tombstone is made
//! durable before anything else.

use std::path::Path;

use engine::store::RangeDeletion;

pub struct ReplicaRemains {
    pub region_id: u64,
    /// Its keys, unless a merge target took them over.
    pub keys: Option<RangeDeletion>,
    /// A checkpoint of it (its own, or a snapshot it received) was being
    /// written when it was destroyed.
    pub checkpoint_written_late: bool,
}

impl ReplicaRemains {
    /// Deletes the keys and removes the late checkpoint's file from `dir`.
    pub fn clean_up(self, dir: &Path) {
        if self.checkpoint_written_late {
            if let Err(err) = engine::checkpoint::remove(dir, self.region_id) {
                tracing::error!(region = self.region_id, %err, "could not remove a destroyed replica's checkpoint; recovery ignores it (tombstone)");
            }
        }
        if let Some(keys) = self.keys {
            let removed = keys.run();
            tracing::debug!(
                region = self.region_id,
                removed,
                "a destroyed replica's keys deleted"
            );
        }
    }
}
