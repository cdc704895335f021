//! What a shard's turn costs per write with one region against many, with
//! no disk, network or other process in the way: one shard of single-voter
//! regions, a disk that syncs at once (checkpoints are reported written,
//! so logs are compacted as in a server), writes spread round-robin over
//! the regions, a fixed number of writes handed in before each turn, and
//! a tick of the clock every 200 turns.
//!
//! ```sh
//! cargo run --release -p raftstore --example turn_cost -- [REGIONS] [WRITES_PER_TURN] [TURNS]
//! ```
//!
//! The keys are 10,000 whatever the region count, and the allocator is
//! the server's (mimalloc). It prints the CPU time per write of the turns
//! (handing the writes in included), after a warm-up of as many turns. A
//! benchmark, not a test: it checks only that every write was applied.

use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::store::KvStore;
use engine::wal::WalBatch;
use raft::prelude::{ConfState, Message};
use raftstore::checkpoint::{CheckpointDone, PendingCheckpoint, RegionCheckpoint};
use raftstore::command::{RequestHeader, WriteCommand, WriteId, WriteOp};
use raftstore::region::RegionMeta;
use raftstore::region_map::RegionMap;
use raftstore::remains::ReplicaRemains;
use raftstore::shard_core::{ShardCore, ShardIo, ShardMsg};
use raftstore::size_check::{SizeCheck, SizeMeasured};
use raftstore::{RaftstoreError, StoreConfig};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Distinct keys written, spread evenly over the regions.
const KEYS: u64 = 10_000;

/// Turns between two ticks of the shard's clock: a server under load
/// turns about every 0.1 ms to 1 ms, and ticks every 100 ms.
const TURNS_PER_TICK: usize = 200;

/// A disk that syncs at once and keeps nothing, and reports each
/// checkpoint written at the next turn; no peers, no other shards.
#[derive(Default)]
struct InstantDisk {
    checkpoints: Vec<CheckpointDone>,
}

impl ShardIo for InstantDisk {
    async fn persist(&mut self, _batch: &WalBatch) -> Result<(), RaftstoreError> {
        Ok(())
    }
    fn send(&mut self, _to_node: u64, _messages: Vec<(u64, Message)>) {}
    fn write_checkpoint(&mut self, checkpoint: PendingCheckpoint) {
        self.checkpoints.push(CheckpointDone {
            region_id: checkpoint.region_id(),
            applied_index: checkpoint.applied_index(),
            result: Ok(()),
        });
    }
    fn finished_checkpoints(&mut self) -> Vec<CheckpointDone> {
        std::mem::take(&mut self.checkpoints)
    }
    /// No replica is destroyed here.
    fn clean_up(&mut self, _remains: ReplicaRemains) {}
    fn measure_region(&mut self, _check: SizeCheck) {}
    fn measured_regions(&mut self) -> Vec<SizeMeasured> {
        Vec::new()
    }
    async fn log_compacted(&mut self, _compacted: &[(u64, u64)]) -> Result<(), RaftstoreError> {
        Ok(())
    }
    fn allocate_region_id(&mut self) -> Result<u64, RaftstoreError> {
        Err(RaftstoreError::Internal("no splits here".into()))
    }
    fn to_shard(&mut self, _shard: usize, _msg: ShardMsg) {}
}

/// The first key of region `i` of `n` (region 0 starts at the empty key).
fn boundary(i: usize) -> Vec<u8> {
    if i == 0 {
        Vec::new()
    } else {
        format!("k{i:04}").into_bytes()
    }
}

fn region(i: usize, n: usize) -> RegionCheckpoint {
    let id = 100 + i as u64;
    RegionCheckpoint::new_region(
        RegionMeta {
            start_key: boundary(i),
            end_key: if i + 1 == n {
                Vec::new()
            } else {
                boundary(i + 1)
            },
            ..RegionMeta::whole_keyspace(id, &[1])
        },
        ConfState {
            voters: vec![1],
            ..Default::default()
        },
        Default::default(),
    )
}

/// The keys of each region, made before the turns are timed.
fn keys(regions: usize) -> Vec<Vec<Vec<u8>>> {
    let per_region = (KEYS / regions as u64).max(1);
    (0..regions)
        .map(|region| {
            (0..per_region)
                .map(|i| [boundary(region), format!("-{i:05}").into_bytes()].concat())
                .collect()
        })
        .collect()
}

/// The `seq`th put, in region `seq % regions`.
fn put(keys: &[Vec<Vec<u8>>], seq: u64) -> ShardMsg {
    let regions = keys.len();
    let region = seq as usize % regions;
    let region_id = 100 + region as u64;
    let in_region = &keys[region];
    let key = in_region[(seq / regions as u64 % in_region.len() as u64) as usize].clone();
    let cmd = WriteCommand {
        header: RequestHeader {
            region_id,
            epoch: None,
        },
        id: WriteId {
            client_id: 1 + seq % 64,
            sequence: 1 + seq / 64,
        },
        answered_below: seq / 64,
        op: WriteOp::Put {
            key,
            value: vec![7; 256],
        },
    };
    let (reply, _answer) = futures::channel::oneshot::channel();
    ShardMsg::Write {
        region_id,
        cmd: Box::new(cmd),
        reply,
    }
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn main() -> Result<(), RaftstoreError> {
    let arg = |i: usize, default: usize| {
        std::env::args()
            .nth(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or(default)
    };
    let (regions, per_turn, turns) = (arg(1, 64), arg(2, 20), arg(3, 20_000));
    let dir = tempfile::tempdir().map_err(|e| RaftstoreError::Internal(e.to_string()))?;
    let mut cfg = StoreConfig::new(1, dir.path().to_path_buf(), Vec::new());
    cfg.shards = 1;
    cfg.hibernate = false;
    let cfg = Arc::new(cfg);
    let checkpoints = (0..regions).map(|i| region(i, regions)).collect();
    let store = Arc::new(KvStore::new());
    let mut core = ShardCore::recover(
        cfg.clone(),
        0,
        checkpoints,
        store.clone(),
        Arc::new(RegionMap::new()),
        &[],
        dir.path().to_path_buf(),
        Instant::now(),
    )?;
    let mut io = InstantDisk::default();
    let mut now = Instant::now();
    let all_lead = |core: &ShardCore| core.status().iter().all(|s| s.leader_id == 1);
    for _ in 0..1_000 {
        if all_lead(&core) {
            break;
        }
        now += cfg.tick;
        core.on_clock(now);
        futures::executor::block_on(core.turn(&mut io))?;
    }
    if !all_lead(&core) {
        return Err(RaftstoreError::Internal("regions did not elect".into()));
    }
    let keys = keys(regions);
    let mut seq = 0u64;
    let mut run = |core: &mut ShardCore, turns: usize| -> Result<Duration, RaftstoreError> {
        let start = thread_cpu();
        for turn in 0..turns {
            if turn % TURNS_PER_TICK == 0 {
                now += cfg.tick;
                core.on_clock(now);
            }
            for _ in 0..per_turn {
                core.handle(put(&keys, seq), now);
                seq += 1;
            }
            futures::executor::block_on(core.turn(&mut io))?;
        }
        Ok(thread_cpu() - start)
    };
    run(&mut core, turns)?;
    let spent = run(&mut core, turns)?;
    let writes = (turns * per_turn) as f64;
    let applied: u64 = core.status().iter().map(|s| s.applied_index - 6).sum();
    if applied != 2 * writes as u64 {
        return Err(RaftstoreError::Internal(format!(
            "{applied} writes applied of {}",
            2 * writes as u64
        )));
    }
    println!(
        "regions {regions} writes/turn {per_turn} turns {turns}: {:.2} µs per write, {:.1} µs per turn",
        spent.as_secs_f64() * 1e6 / writes,
        spent.as_secs_f64() * 1e6 / turns as f64
    );
    Ok(())
}
