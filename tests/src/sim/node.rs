//! A simulated node: the production [`ShardCore`]s of its shards, each over
//! a simulated disk ([`SimIo`]), plus the node's in-memory store.
//!
//! The disk keeps what a real one would across a crash: WAL batches that
//! were persisted (all or nothing, like the shard WAL) and checkpoint files
//! (written durably to a scratch directory by the production code). A crash
//! drops the cores, the store and every queued request; a restart rebuilds
//! them with the production recovery path.

use engine::store::KvStore;
use engine::wal::{WalBatch, WalRecord};
use raftstore::checkpoint::{CheckpointDone, PendingCheckpoint};
use raftstore::liveness::NodeLiveness;
use raftstore::recovery::load_checkpoints;
use raftstore::region_map::RegionMap;
use raftstore::remains::ReplicaRemains;
use raftstore::shard_core::{ShardCore, ShardIo, ShardMsg};
use raftstore::size_check::{SizeCheck, SizeMeasured};
use raftstore::{RaftMessage, RaftstoreError, StoreConfig};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// How the next WAL persist of a node fails, when a crash is scheduled
/// into it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TornPersist {
    /// The batch never reaches the disk.
    Lost,
    /// The batch is durable but the node dies before anything that depends
    /// on it leaves.
    Kept,
}

/// A job for the simulated checkpoint writer.
enum WriterJob {
    Checkpoint(PendingCheckpoint),
    CleanUp(ReplicaRemains),
}

/// One shard's disk and network, simulated.
pub struct SimIo {
    node_id: u64,
    /// The node's region id counter: durable, shared by its shards.
    region_ids: Arc<AtomicU64>,
    /// Messages for another shard of this node, to deliver.
    pub handoffs: Vec<(usize, ShardMsg)>,
    /// Durable WAL records, in log order.
    durable: Vec<WalRecord>,
    checkpoint_dir: PathBuf,
    /// The writer's jobs queued in this turn, and in the turn before.
    /// Each is done at the start of the turn after next, in queue order as
    /// the writer does them: a checkpoint is copied from its capture then,
    /// so the region applies a turn's entries in between (the copy must
    /// still read the region as it was when taken), and a destroyed
    /// replica's keys stay in the store for as long (a snapshot for the
    /// range may arrive in between).
    taken: Vec<WriterJob>,
    copying: Vec<WriterJob>,
    finished: Vec<CheckpointDone>,
    /// Size checks asked for this turn, measured at the start of the next.
    measuring: Vec<SizeCheck>,
    /// Messages handed to the network this turn: (to, region, message).
    pub outbox: Vec<(u64, Vec<(u64, RaftMessage)>)>,
    pub crash_in_persist: Option<TornPersist>,
    pub persists: u64,
}

impl ShardIo for SimIo {
    async fn persist(&mut self, batch: &WalBatch) -> Result<(), RaftstoreError> {
        match self.crash_in_persist.take() {
            Some(TornPersist::Lost) => Err(RaftstoreError::Internal(
                "simulated crash: batch lost".into(),
            )),
            Some(TornPersist::Kept) => {
                self.durable.extend(batch.records().iter().cloned());
                Err(RaftstoreError::Internal(
                    "simulated crash after the sync".into(),
                ))
            }
            None => {
                self.persists += 1;
                self.durable.extend(batch.records().iter().cloned());
                Ok(())
            }
        }
    }

    fn send(&mut self, to_node: u64, messages: Vec<(u64, RaftMessage)>) {
        self.outbox.push((to_node, messages));
    }

    fn write_checkpoint(&mut self, checkpoint: PendingCheckpoint) {
        self.taken.push(WriterJob::Checkpoint(checkpoint));
    }

    fn finished_checkpoints(&mut self) -> Vec<CheckpointDone> {
        for job in std::mem::take(&mut self.copying) {
            match job {
                WriterJob::Checkpoint(checkpoint) => {
                    self.finished.push(checkpoint.write(&self.checkpoint_dir));
                }
                WriterJob::CleanUp(remains) => remains.clean_up(&self.checkpoint_dir),
            }
        }
        self.copying = std::mem::take(&mut self.taken);
        std::mem::take(&mut self.finished)
    }

    fn clean_up(&mut self, remains: ReplicaRemains) {
        self.taken.push(WriterJob::CleanUp(remains));
    }

    fn measure_region(&mut self, check: SizeCheck) {
        self.measuring.push(check);
    }

    fn measured_regions(&mut self) -> Vec<SizeMeasured> {
        self.measuring.drain(..).map(SizeCheck::measure).collect()
    }

    async fn log_compacted(&mut self, _compacted: &[(u64, u64)]) -> Result<(), RaftstoreError> {
        // The simulated disk keeps every record: recovery must skip what
        // the checkpoints cover, exactly as it does over unpurged segments.
        Ok(())
    }

    fn allocate_region_id(&mut self) -> Result<u64, RaftstoreError> {
        Ok(self.node_id << 32 | self.region_ids.fetch_add(1, Ordering::Relaxed))
    }

    fn to_shard(&mut self, shard: usize, msg: ShardMsg) {
        self.handoffs.push((shard, msg));
    }
}

/// One shard of a simulated node.
pub struct SimShard {
    pub core: Option<ShardCore>,
    pub io: SimIo,
    pub inbox: VecDeque<ShardMsg>,
}

pub struct SimNode {
    pub cfg: Arc<StoreConfig>,
    pub shards: Vec<SimShard>,
    /// This node's clock runs at `rate_ppm` parts per million of virtual
    /// time, so nodes' ticks drift apart as real clocks do.
    pub rate_ppm: u64,
    pub paused: bool,
    base: Instant,
    store: Option<Arc<KvStore>>,
}

impl SimNode {
    /// A fresh node (empty disk) that is started at once.
    pub fn new(
        cfg: StoreConfig,
        rate_ppm: u64,
        base: Instant,
        now_ms: u64,
    ) -> Result<Self, RaftstoreError> {
        let checkpoint_dir = cfg.data_dir.join("store");
        std::fs::create_dir_all(&checkpoint_dir)
            .map_err(|e| RaftstoreError::Internal(format!("create checkpoint dir: {e}")))?;
        let region_ids = Arc::new(AtomicU64::new(1));
        let shards = (0..cfg.shards)
            .map(|_| SimShard {
                core: None,
                io: SimIo {
                    node_id: cfg.node_id,
                    region_ids: region_ids.clone(),
                    handoffs: Vec::new(),
                    durable: Vec::new(),
                    checkpoint_dir: checkpoint_dir.clone(),
                    taken: Vec::new(),
                    copying: Vec::new(),
                    finished: Vec::new(),
                    measuring: Vec::new(),
                    outbox: Vec::new(),
                    crash_in_persist: None,
                    persists: 0,
                },
                inbox: VecDeque::new(),
            })
            .collect();
        let mut node = SimNode {
            cfg: Arc::new(cfg),
            shards,
            rate_ppm,
            paused: false,
            base,
            store: None,
        };
        node.start(now_ms)?;
        Ok(node)
    }

    /// This node's clock at virtual time `now_ms`.
    pub fn clock(&self, now_ms: u64) -> Instant {
        self.base + std::time::Duration::from_micros(now_ms * self.rate_ppm / 1000)
    }

    pub fn is_up(&self) -> bool {
        self.shards.iter().all(|s| s.core.is_some())
    }

    /// Recovers every shard from the simulated disk.
    pub fn start(&mut self, now_ms: u64) -> Result<(), RaftstoreError> {
        let _node = tracing::info_span!("node", id = self.cfg.node_id).entered();
        let store = Arc::new(KvStore::new());
        let region_map = Arc::new(RegionMap::new());
        // Shared by the shards as in production: shard 0 receives the
        // other stores' pings for all of them.
        let liveness = Arc::new(NodeLiveness::new());
        let now = self.clock(now_ms);
        let checkpoint_dir = self.cfg.data_dir.join("store");
        let mut per_shard: Vec<Vec<_>> = (0..self.shards.len()).map(|_| Vec::new()).collect();
        for cp in load_checkpoints(&checkpoint_dir, &self.cfg.initial_regions, &store)? {
            per_shard[self.cfg.shard_of(cp.region.id)].push(cp);
        }
        for ((index, shard), checkpoints) in self.shards.iter_mut().enumerate().zip(per_shard) {
            let mut core = ShardCore::recover(
                self.cfg.clone(),
                index,
                checkpoints,
                store.clone(),
                region_map.clone(),
                &shard.io.durable,
                shard.io.checkpoint_dir.clone(),
                now,
            )?;
            core.set_liveness(liveness.clone());
            shard.core = Some(core);
        }
        self.store = Some(store);
        Ok(())
    }

    /// Loses everything volatile: cores, store, queued requests (their
    /// reply channels close), unsent messages.
    pub fn crash(&mut self) {
        for shard in &mut self.shards {
            shard.core = None;
            shard.inbox.clear();
            shard.io.outbox.clear();
            shard.io.finished.clear();
            shard.io.taken.clear();
            shard.io.copying.clear();
            shard.io.measuring.clear();
            shard.io.handoffs.clear();
            shard.io.crash_in_persist = None;
        }
        self.paused = false;
        self.store = None;
    }

    /// The region's pairs in this node's store (empty while it is down).
    pub fn region_pairs(&self, region: &raftstore::region::RegionMeta) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.store
            .as_ref()
            .map(|s| s.range_pairs(&region.start_key, &region.end_key))
            .unwrap_or_default()
    }

    /// Queues a message for the shard owning `region_id`.
    pub fn deliver(&mut self, region_id: u64, msg: ShardMsg) {
        let index = self.cfg.shard_of(region_id);
        if self.shards[index].core.is_some() {
            self.shards[index].inbox.push_back(msg);
        }
    }

    /// One loop turn of every shard, as the production loop runs it. What
    /// the shards sent goes to `outgoing` (including what left before a
    /// failed persist); an error is what stopped a shard: a simulated crash
    /// in a persist, or a real failure.
    pub fn run_turns(
        &mut self,
        now_ms: u64,
        outgoing: &mut Vec<(u64, Vec<(u64, RaftMessage)>)>,
    ) -> Result<(), RaftstoreError> {
        let _node = tracing::info_span!("node", id = self.cfg.node_id).entered();
        let now = self.clock(now_ms);
        let mut handoffs = Vec::new();
        for shard in &mut self.shards {
            let Some(core) = shard.core.as_mut() else {
                continue;
            };
            while let Some(msg) = shard.inbox.pop_front() {
                core.handle(msg, now);
            }
            core.on_clock(now);
            let result = futures::executor::block_on(core.turn(&mut shard.io));
            outgoing.append(&mut shard.io.outbox);
            handoffs.append(&mut shard.io.handoffs);
            result?;
        }
        for (index, msg) in handoffs {
            if let Some(shard) = self.shards.get_mut(index) {
                shard.inbox.push_back(msg);
            }
        }
        Ok(())
    }

    /// Whether a region a split created waits in a shard's inbox to start
    /// (handed over from the shard that applied the split).
    pub fn has_pending_regions(&self) -> bool {
        self.shards
            .iter()
            .flat_map(|s| s.inbox.iter())
            .any(|m| matches!(m, ShardMsg::AddRegion(_)))
    }

    /// Every region replica's status on this node.
    pub fn status(&self) -> Vec<raftstore::peer::RegionStatus> {
        self.shards
            .iter()
            .filter_map(|s| s.core.as_ref())
            .flat_map(ShardCore::status)
            .collect()
    }

    /// Whether every shard files its regions by their state (awake or
    /// asleep, see `raftstore::shard_core::ShardCore::check_filing`).
    pub fn check_filing(&self) -> Result<(), String> {
        self.shards
            .iter()
            .filter_map(|s| s.core.as_ref())
            .try_for_each(ShardCore::check_filing)
    }
}
