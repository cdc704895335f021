//! A leader's size check, measured off the shard's turn: walking a large
//! region's keys takes tens of milliseconds (a 100 MB region, about 50 ms),
//! and in the turn every region of the shard would wait for it.
//!
//! The turn asks ([`SizeCheck`]); the shard's checkpoint writer thread
//! measures the range as it is then ([`SizeCheck::measure`]); the next
//! turn takes the answer ([`SizeMeasured`]) to the region, which drops it
//! if it changed shape meanwhile. A measurement taken while the region
//! keeps applying is approximate, and a split needs no more: the split key
//! is checked against the region when the split applies.

use std::sync::Arc;

use engine::store::{KvStore, RangeSize};

/// A request to measure region `region_id` as its range is now.
pub struct SizeCheck {
    region_id: u64,
    /// The region's epoch version when asked.
    version: u64,
    start: Vec<u8>,
    end: Vec<u8>,
    store: Arc<KvStore>,
}

/// What a [`SizeCheck`] measured.
#[derive(Debug)]
pub struct SizeMeasured {
    pub region_id: u64,
    /// The epoch version the range was taken from: a region whose version
    /// moved since (it split or merged) drops the measurement.
    pub version: u64,
    pub size: RangeSize,
}

impl SizeCheck {
    pub fn new(
        region_id: u64,
        version: u64,
        start: Vec<u8>,
        end: Vec<u8>,
        store: Arc<KvStore>,
    ) -> SizeCheck {
        SizeCheck {
            region_id,
            version,
            start,
            end,
            store,
        }
    }

    pub fn region_id(&self) -> u64 {
        self.region_id
    }

    /// Walks the range: call it off the turn.
    pub fn measure(self) -> SizeMeasured {
        SizeMeasured {
            region_id: self.region_id,
            version: self.version,
            size: self.store.range_size(&self.start, &self.end),
        }
    }
}
