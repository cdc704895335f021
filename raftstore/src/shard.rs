//! The production shard runtime: one glommio executor (a core) driving a
//! [`ShardCore`] with the shard's direct-I/O WAL and the network sink.
//!
//! A loop turn: wait for inbox messages or the next Raft tick, drain the
//! inbox in a batch, tick on schedule, then run the core's turn (one WAL
//! batch: one write, one fdatasync). Checkpoints are copied from their
//! capture and written, and size checks measured, by the shard's checkpoint
//! writer thread; obsolete WAL segments are deleted by a task of the
//! shard's own: all off the loop.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use engine::store::KvStore;
use engine::wal::{ObsoleteSegments, ShardWal, WalBatch, WalOptions};
use futures::future::{select, Either};
use raft::prelude::Message;

use crate::checkpoint::{CheckpointDone, PendingCheckpoint, RegionCheckpoint};
use crate::checkpoint_writer::CheckpointWriter;
use crate::config::StoreConfig;
use crate::error::RaftstoreError;
use crate::liveness::NodeLiveness;
use crate::metrics;
use crate::region_id::RegionIdAllocator;
use crate::region_map::RegionMap;
use crate::remains::ReplicaRemains;
use crate::shard_core::{ShardCore, ShardIo, ShardMsg};
use crate::size_check::{SizeCheck, SizeMeasured};
use crate::transport::MessageSink;

/// How many inbox messages one turn takes before it processes Readies.
const INBOX_BATCH_MAX: usize = 4096;
/// A turn this long holds up every region of the shard (elections time out
/// after about a second): it is logged as a warning.
const TURN_SLOW: std::time::Duration = std::time::Duration::from_millis(500);

pub(crate) struct Shard {
    core: ShardCore,
    io: GlommioIo,
    /// See `StoreConfig::on_idle`.
    on_idle: Option<fn()>,
}

/// What every shard of a store shares.
pub(crate) struct ShardContext {
    pub store: Arc<KvStore>,
    pub region_map: Arc<RegionMap>,
    pub region_ids: Arc<RegionIdAllocator>,
    pub liveness: Arc<NodeLiveness>,
    /// Every shard's inbox, this one's included (for hand-offs).
    pub shards: Vec<flume::Sender<ShardMsg>>,
    pub sink: Arc<dyn MessageSink>,
    pub checkpoint_dir: PathBuf,
}

/// The shard's disk and network: the direct-I/O WAL, the checkpoint
/// writer, the node's message sink, and the other shards' inboxes.
struct GlommioIo {
    wal: ShardWal,
    /// To [`delete_obsolete_segments`].
    obsolete_segments: flume::Sender<ObsoleteSegments>,
    ctx: ShardContext,
    checkpoints: CheckpointWriter,
}

impl ShardIo for GlommioIo {
    async fn persist(&mut self, batch: &WalBatch) -> Result<(), RaftstoreError> {
        fail::fail_point!("wal_persist", |reason| Err(RaftstoreError::Internal(
            format!("injected WAL failure: {}", reason.unwrap_or_default())
        )));
        let started = Instant::now();
        self.wal.append(batch).await?;
        metrics::WAL_PERSIST_SECONDS.observe(started.elapsed().as_secs_f64());
        metrics::WAL_BATCH_BYTES.observe(batch.payload_bytes() as f64);
        Ok(())
    }

    fn send(&mut self, to_node: u64, messages: Vec<(u64, Message)>) {
        self.ctx.sink.send(to_node, messages);
    }

    fn write_checkpoint(&mut self, checkpoint: PendingCheckpoint) {
        self.checkpoints.write(checkpoint);
    }

    fn finished_checkpoints(&mut self) -> Vec<CheckpointDone> {
        self.checkpoints.finished()
    }

    fn clean_up(&mut self, remains: ReplicaRemains) {
        self.checkpoints.clean_up(remains);
    }

    fn measure_region(&mut self, check: SizeCheck) {
        self.checkpoints.measure(check);
    }

    fn measured_regions(&mut self) -> Vec<SizeMeasured> {
        self.checkpoints.measured()
    }

    async fn log_compacted(&mut self, compacted: &[(u64, u64)]) -> Result<(), RaftstoreError> {
        for &(region_id, index) in compacted {
            self.wal.compact_region(region_id, index);
        }
        let obsolete = self.wal.take_obsolete_segments()?;
        if !obsolete.is_empty() && self.obsolete_segments.send(obsolete).is_err() {
            // Left on disk; the next start reads them and deletes them.
            tracing::debug!("the segment deleter has stopped; obsolete WAL segments kept");
        }
        Ok(())
    }

    fn allocate_region_id(&mut self) -> Result<u64, RaftstoreError> {
        self.ctx.region_ids.allocate()
    }

    fn to_shard(&mut self, shard: usize, msg: ShardMsg) {
        let Some(tx) = self.ctx.shards.get(shard).cloned() else {
            tracing::error!(shard, "no such shard of this store");
            return;
        };
        // Waits for room in the other shard's inbox without holding up
        // this loop.
        glommio::spawn_local(async move {
            if tx.send_async(msg).await.is_err() {
                // Whatever it carried is redone at the next start: a new
                // region starts from its checkpoint, a held merge is
                // replayed from the log.
                tracing::debug!(shard, "shard gone; message for it dropped");
            }
        })
        .detach();
    }
}

impl Shard {
    /// Opens the shard's WAL and brings up its regions: from their
    /// checkpoint and the WAL, or freshly bootstrapped.
    pub(crate) async fn open(
        cfg: Arc<StoreConfig>,
        shard_index: usize,
        checkpoints: Vec<RegionCheckpoint>,
        ctx: ShardContext,
    ) -> Result<Shard, RaftstoreError> {
        let wal_dir = cfg
            .data_dir
            .join("wal")
            .join(format!("shard-{shard_index}"));
        std::fs::create_dir_all(&wal_dir)
            .map_err(|e| RaftstoreError::Internal(format!("create {}: {e}", wal_dir.display())))?;
        let (wal, recovery) = ShardWal::open(&wal_dir, WalOptions::default()).await?;
        if let Some(tear) = &recovery.tear {
            tracing::warn!(shard = shard_index, segment = %tear.segment.display(), offset = tear.offset, reason = %tear.reason, "WAL recovery stopped at a torn record");
        }
        let on_idle = cfg.on_idle;
        let mut core = ShardCore::recover(
            cfg,
            shard_index,
            checkpoints,
            ctx.store.clone(),
            ctx.region_map.clone(),
            &recovery.records,
            ctx.checkpoint_dir.clone(),
            Instant::now(),
        )?;
        core.set_liveness(ctx.liveness.clone());
        let checkpoints = CheckpointWriter::start(shard_index, ctx.checkpoint_dir.clone())?;
        let (obsolete_segments, to_delete) = flume::unbounded();
        glommio::spawn_local(delete_obsolete_segments(to_delete)).detach();
        Ok(Shard {
            core,
            on_idle,
            io: GlommioIo {
                wal,
                obsolete_segments,
                ctx,
                checkpoints,
            },
        })
    }

    /// Runs until shutdown, or until a turn fails (returned: the shard's
    /// regions can no longer make anything durable).
    pub(crate) async fn run(
        mut self,
        inbox: flume::Receiver<ShardMsg>,
    ) -> Result<(), RaftstoreError> {
        loop {
            let now = Instant::now();
            let next_tick = self.core.next_tick();
            let mut shutdown = false;
            let mut taken = 0;
            if now < next_tick && inbox.is_empty() {
                if let Some(on_idle) = self.on_idle {
                    on_idle();
                }
                match select(
                    inbox.recv_async(),
                    Box::pin(glommio::timer::sleep(next_tick - now)),
                )
                .await
                {
                    Either::Left((Ok(msg), _)) => {
                        shutdown |= self.core.handle(msg, Instant::now());
                        taken += 1;
                    }
                    Either::Left((Err(_), _)) => shutdown = true,
                    Either::Right(_) => {}
                }
            }
            let started = Instant::now();
            for msg in inbox.try_iter().take(INBOX_BATCH_MAX) {
                // Read per message: a read served on the leader's lease
                // must be checked against a time no earlier than its arrival.
                shutdown |= self.core.handle(msg, Instant::now());
                taken += 1;
            }
            self.core.on_clock(Instant::now());
            let reads = self.core.take_read_counts();
            metrics::READS_ON_LEASE.inc_by(reads.on_lease);
            metrics::READS_BY_READ_INDEX.inc_by(reads.by_read_index);
            if let Err(err) = self.core.turn(&mut self.io).await {
                tracing::error!(%err, "shard turn failed; stopping the shard");
                return Err(err);
            }
            let turn = started.elapsed();
            metrics::SHARD_TURN_SECONDS.observe(turn.as_secs_f64());
            if turn >= TURN_SLOW {
                tracing::warn!(
                    turn_ms = turn.as_millis() as u64,
                    messages = taken,
                    "slow shard turn: every region of this shard waited"
                );
            }
            metrics::SHARD_INBOX_BATCH.observe(taken as f64);
            if shutdown {
                break;
            }
            glommio::yield_if_needed().await;
        }
        tracing::info!("shard stopping");
        Ok(())
    }
}

/// Deletes the shard's obsolete WAL segments, one batch after another, off
/// the loop: each deletion is an unlink plus a directory sync, tens of
/// milliseconds on a busy disk, that every region of the shard would
/// otherwise wait for. After a failure it deletes nothing more, so that
/// the segments left are always the newest (see `ObsoleteSegments`).
async fn delete_obsolete_segments(batches: flume::Receiver<ObsoleteSegments>) {
    while let Ok(batch) = batches.recv_async().await {
        match batch.delete().await {
            Ok(deleted) => tracing::debug!(deleted, "obsolete WAL segments deleted"),
            Err(err) => {
                tracing::error!(%err, "cannot delete an obsolete WAL segment; the rest are kept until the next start");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use engine::wal::{WalRecord, WAL_BLOCK_BYTES};

    use super::*;

    fn wal_files(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.path().extension().is_some_and(|x| x == "wal"))
                    .count()
            })
            .unwrap_or(0)
    }

    /// Obsolete segments handed to the deleter are deleted off the loop,
    /// oldest first: the WAL reopens over what is left without a gap.
    #[test]
    fn the_deleter_removes_obsolete_segments_and_leaves_no_gap() {
        let dir = tempfile::tempdir().expect("a scratch directory");
        let path = dir.path().to_path_buf();
        let options = WalOptions {
            segment_bytes: 4 * WAL_BLOCK_BYTES as u64,
        };
        let run = move || async move {
            let (mut wal, _) = ShardWal::open(&path, options.clone()).await.expect("opens");
            for i in 1..=30u64 {
                let mut batch = WalBatch::new();
                batch.push(WalRecord::entries(1, i, vec![7; 3000]));
                wal.append(&batch).await.expect("appends");
            }
            let before = wal_files(&path);
            wal.compact_region(1, 20);
            let (tx, rx) = flume::unbounded();
            let deleter = glommio::spawn_local(delete_obsolete_segments(rx));
            let obsolete = wal.take_obsolete_segments().expect("usable");
            assert!(
                !obsolete.is_empty(),
                "entries up to 20 fill several segments"
            );
            tx.send(obsolete).expect("the deleter runs");
            drop(tx);
            deleter.await;
            let after = wal_files(&path);
            assert!(after < before, "{after} of {before} segments left");
            assert_eq!(wal.stats().live_segments, after);
            drop(wal);
            let (reopened, recovery) = ShardWal::open(&path, options).await.expect("no gap");
            assert!(recovery.records.iter().any(|r| r.index == 30));
            drop(reopened);
        };
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn(run)
            .expect("an executor")
            .join()
            .expect("the test body ran");
    }
}
