//! `raftstore`: regions as raft-rs groups, run by one glommio executor per
//! core ("shard"), each shard persisting every region's log through one
//! shared WAL with group commit.
//!
//! - [`region`], [`command`], [`apply`], [`storage`], [`peer`], [`recovery`]
//!   are the core: region metadata and epoch checks, the replicated command
//!   format, exactly-once apply, raft-rs storage, the per-region peer, and
//!   start-up recovery. They do no network I/O and read no clock.
//!   [`membership`] decides membership changes; [`merge`] whether two
//!   regions may merge; [`tombstone`] remembers the regions this store was
//!   removed from (or that merged away).
//! - [`shard_core`] is a shard's logic without its runtime: the turn that
//!   drives every region through one WAL batch, behind the [`shard_core::ShardIo`]
//!   trait (disk and network) with time passed in, so the deterministic
//!   simulator runs the same code as production.
//! - `shard` is the glommio runtime loop around it; [`router`] is the
//!   thread-safe handle the gRPC side calls; [`transport::MessageSink`] is
//!   how shards hand messages to the network.
//!
//! Guarantees: a write is acknowledged only once applied after a quorum made
//! it durable; no message depending on local state leaves before the WAL
//! batch holding that state is synced; reads are served by a leader after a
//! quorum-confirmed ReadIndex, or within the lease such a round granted it
//! ([`lease`]); requests with stale epochs are refused.

pub mod apply;
pub mod checkpoint;
mod checkpoint_writer;
pub mod codec;
pub mod command;
pub mod config;
pub mod error;
pub mod lease;
pub mod liveness;
pub mod log_codec;
mod logger;
pub mod membership;
pub mod merge;
pub mod metrics;
pub mod peer;
pub mod recovery;
pub mod region;
pub mod region_id;
pub mod region_map;
pub mod remains;
pub mod router;
pub mod rules;
mod shard;
pub mod shard_core;
mod shard_peers;
pub mod size_check;
pub mod storage;
pub mod tombstone;
pub mod transport;

pub use config::StoreConfig;
pub use error::RaftstoreError;
pub use raft::prelude::Message as RaftMessage;
pub use router::StoreRouter;

use std::sync::Arc;

use engine::store::KvStore;
use glommio::{LocalExecutorBuilder, Placement};
use region_id::RegionIdAllocator;
use region_map::RegionMap;

/// A running store: its shard threads. Dropping it does not stop them; call
/// [`StoreRouter::shutdown`] then [`RunningStore::join`].
pub struct RunningStore {
    threads: Vec<glommio::ExecutorJoinHandle<()>>,
    failures: flume::Receiver<RaftstoreError>,
}

impl RunningStore {
    /// Resolves when a shard stopped on an error it cannot recover from (a
    /// WAL write or sync failed, say): the node must stop, since that
    /// shard's regions can no longer make anything durable.
    pub async fn failure(&self) -> RaftstoreError {
        match self.failures.recv_async().await {
            Ok(err) => err,
            // Every shard is gone without reporting: wait for shutdown.
            Err(_) => std::future::pending().await,
        }
    }

    /// Waits for every shard thread to finish.
    pub fn join(self) {
        for t in self.threads {
            if let Err(err) = t.join() {
                tracing::error!(?err, "shard thread ended abnormally");
            }
        }
    }
}

/// Starts the store's shards, recovering every region from disk. Returns
/// once every shard has recovered and is serving, or with the first error.
pub fn start_store(
    cfg: StoreConfig,
    sink: Arc<dyn transport::MessageSink>,
) -> Result<(StoreRouter, Arc<KvStore>, RunningStore), RaftstoreError> {
    assert!(cfg.shards > 0, "a store runs at least one shard");
    let cfg = Arc::new(cfg);
    let store = Arc::new(KvStore::new());
    let region_map = Arc::new(RegionMap::new());
    let liveness = Arc::new(liveness::NodeLiveness::new());
    let region_ids = Arc::new(RegionIdAllocator::open(
        &cfg.data_dir.join("meta"),
        cfg.node_id,
    )?);
    let checkpoint_dir = cfg.data_dir.join("store");
    std::fs::create_dir_all(&checkpoint_dir).map_err(|e| {
        RaftstoreError::Internal(format!("create {}: {e}", checkpoint_dir.display()))
    })?;
    let mut per_shard: Vec<Vec<_>> = (0..cfg.shards).map(|_| Vec::new()).collect();
    for cp in recovery::load_checkpoints(&checkpoint_dir, &cfg.initial_regions, &store)? {
        per_shard[cfg.shard_of(cp.region.id)].push(cp);
    }
    let (senders, inboxes): (Vec<_>, Vec<_>) = (0..cfg.shards)
        .map(|_| flume::bounded(cfg.inbox_capacity))
        .unzip();
    let mut threads = Vec::new();
    let mut started = Vec::new();
    let (failed, failures) = flume::unbounded();
    for ((index, rx), checkpoints) in inboxes.into_iter().enumerate().zip(per_shard) {
        let shard_io = shard::ShardContext {
            store: store.clone(),
            region_map: region_map.clone(),
            region_ids: region_ids.clone(),
            liveness: liveness.clone(),
            shards: senders.clone(),
            sink: sink.clone(),
            checkpoint_dir: checkpoint_dir.clone(),
        };
        let (ready_tx, ready_rx) = flume::bounded(1);
        started.push(ready_rx);
        let placement = if cfg.pin_cores {
            Placement::Fixed(index)
        } else {
            Placement::Unbound
        };
        let (cfg, failed) = (cfg.clone(), failed.clone());
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("shard-{index}"))
            .spawn(move || async move {
                match shard::Shard::open(cfg, index, checkpoints, shard_io).await {
                    Ok(shard) => {
                        let _ = ready_tx.send(Ok(()));
                        if let Err(err) = shard.run(rx).await {
                            let _ = failed.send(err);
                        }
                    }
                    Err(err) => {
                        let _ = ready_tx.send(Err(err));
                    }
                }
            })
            .map_err(|e| RaftstoreError::Internal(format!("start shard {index}: {e}")))?;
        threads.push(handle);
    }
    for ready in started {
        ready
            .recv()
            .map_err(|_| RaftstoreError::Internal("a shard died while starting".into()))??;
    }
    let shard_cfg = cfg.clone();
    let router = StoreRouter::new(senders, region_map, move |r| shard_cfg.shard_of(r));
    Ok((router, store, RunningStore { threads, failures }))
}
