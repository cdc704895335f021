//! The shard's logic without its runtime: every region of one shard, the
//! turn that moves them forward, and the recovery that rebuilds them.
//!
//! [`ShardCore`] owns the regions' [`Peer`]s and does no I/O of its own: the
//! disk (WAL and checkpoint writes) and the network sit behind [`ShardIo`],
//! and time comes in as arguments. Production drives it from a glommio
//! executor with the shard WAL and gRPC streams (`shard`); the deterministic
//! simulator drives the very same code with a simulated disk, network and
//! clock.
//!
//! A turn ([`ShardCore::turn`]) keeps the persistence rules of raft-rs:
//! 1. every region's Ready is collected; what is committed is applied and
//!    the leaders' appends are sent (a leader may persist in parallel);
//! 2. all their records are made durable as ONE WAL batch (a change of
//!    the commit index alone never forces a sync; it rides with the next);
//! 3. only then go the messages that depend on that state (votes, acks),
//!    and the regions advance.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use engine::store::KvStore;
use engine::wal::{WalBatch, WalRecord};
use futures::channel::oneshot;
use raft::prelude::Message;

use crate::checkpoint::RegionCheckpoint;
use crate::command::{ReadOp, RequestHeader, WriteCommand};
use crate::config::StoreConfig;
use crate::error::RaftstoreError;
use crate::peer::{Peer, PeerState, ReadReply, RegionStatus, TurnOutput, WriteReply};
use crate::recovery::recover_log;
use crate::region::RegionMeta;
use crate::storage::RegionStorage;

/// What a shard's inbox carries.
pub enum ShardMsg {
    Write {
        region_id: u64,
        cmd: WriteCommand,
        reply: WriteReply,
    },
    Read {
        region_id: u64,
        header: RequestHeader,
        op: ReadOp,
        reply: ReadReply,
    },
    Raft {
        region_id: u64,
        msg: Box<Message>,
    },
    Status {
        reply: oneshot::Sender<Vec<RegionStatus>>,
    },
    Shutdown,
}

/// A background checkpoint's outcome: the region and the applied index the
/// checkpoint file now durably holds.
pub type CheckpointDone = (u64, Result<u64, RaftstoreError>);

/// The disk and network a shard works through.
// The production implementation lives on one glommio thread: its futures
// are deliberately not `Send`.
#[allow(async_fn_in_trait)]
pub trait ShardIo {
    /// Makes `batch` durable: one write, one sync. Nothing in it may be
    /// relied on before this returns `Ok`.
    async fn persist(&mut self, batch: &WalBatch) -> Result<(), RaftstoreError>;
    /// Hands `(region, message)` pairs for one node to the network. Never
    /// blocks; may drop (Raft retransmits).
    fn send(&mut self, to_node: u64, messages: Vec<(u64, Message)>);
    /// Starts writing a checkpoint; its outcome comes back through
    /// [`ShardIo::finished_checkpoints`].
    fn write_checkpoint(&mut self, checkpoint: RegionCheckpoint);
    /// Checkpoint writes that finished since the last call.
    fn finished_checkpoints(&mut self) -> Vec<CheckpointDone>;
    /// Each `(region, index)`: the region's log up to `index` is covered by
    /// a durable checkpoint, so WAL space holding only such records may be
    /// reclaimed. Called once per turn with every compaction of that turn.
    async fn log_compacted(&mut self, compacted: &[(u64, u64)]) -> Result<(), RaftstoreError>;
}

pub struct ShardCore {
    cfg: Arc<StoreConfig>,
    peers: BTreeMap<u64, Peer>,
    next_tick: Instant,
}

impl ShardCore {
    /// Rebuilds the shard's `regions` from their checkpoints in
    /// `checkpoint_dir` plus the WAL's `records` (in log order), or
    /// bootstraps a region that has no checkpoint yet. Loads every
    /// region's data into `store`.
    pub fn recover(
        cfg: Arc<StoreConfig>,
        regions: Vec<RegionMeta>,
        store: Arc<KvStore>,
        records: &[WalRecord],
        checkpoint_dir: PathBuf,
        now: Instant,
    ) -> Result<ShardCore, RaftstoreError> {
        let mut by_region: BTreeMap<u64, Vec<&WalRecord>> = BTreeMap::new();
        for rec in records {
            by_region.entry(rec.region_id).or_default().push(rec);
        }
        let mut peers = BTreeMap::new();
        for bootstrap in regions {
            let id = bootstrap.id;
            let mut checkpoint = match RegionCheckpoint::read(&checkpoint_dir, id)? {
                Some(cp) => cp,
                None => {
                    let cp = bootstrap_checkpoint(bootstrap);
                    cp.clone().write(&checkpoint_dir)?;
                    cp
                }
            };
            for (k, v) in checkpoint.pairs.drain(..) {
                store.put(k, v);
            }
            let log = recover_log(&checkpoint, by_region.remove(&id).unwrap_or_default())?;
            tracing::info!(
                region = id,
                applied = checkpoint.applied_index,
                last = log
                    .entries
                    .last()
                    .map_or(checkpoint.applied_index, |e| e.index),
                commit = log.hard_state.commit,
                "region recovered"
            );
            let storage = RegionStorage::new(
                id,
                checkpoint_dir.clone(),
                log.hard_state,
                checkpoint.conf_state.clone(),
                (checkpoint.applied_index, checkpoint.applied_term),
                log.entries,
            );
            let raft_cfg = cfg.raft_config(checkpoint.applied_index);
            let raw = raft::RawNode::new(&raft_cfg, storage, &crate::logger::raft_logger(id))?;
            let state = PeerState {
                checkpoint,
                raw,
                checkpoint_dir: checkpoint_dir.clone(),
            };
            peers.insert(id, Peer::new(state, store.clone(), &cfg));
        }
        Ok(ShardCore {
            next_tick: now + cfg.tick,
            cfg,
            peers,
        })
    }

    /// When the Raft clock next needs a tick.
    pub fn next_tick(&self) -> Instant {
        self.next_tick
    }

    /// Ticks every region if a tick is due and expires overdue requests.
    pub fn on_clock(&mut self, now: Instant) {
        if now < self.next_tick {
            return;
        }
        for peer in self.peers.values_mut() {
            peer.tick();
            peer.expire(now);
        }
        self.next_tick = (self.next_tick + self.cfg.tick).max(now);
    }

    /// Takes one inbox message. Returns true on shutdown.
    pub fn handle(&mut self, msg: ShardMsg, now: Instant) -> bool {
        match msg {
            ShardMsg::Write {
                region_id,
                cmd,
                reply,
            } => match self.peers.get_mut(&region_id) {
                Some(peer) => peer.propose_write(cmd, reply, now),
                None => {
                    let _ = reply.send(Err(RaftstoreError::RegionNotFound { region_id }));
                }
            },
            ShardMsg::Read {
                region_id,
                header,
                op,
                reply,
            } => match self.peers.get_mut(&region_id) {
                Some(peer) => peer.queue_read(header, op, reply, now),
                None => {
                    let _ = reply.send(Err(RaftstoreError::RegionNotFound { region_id }));
                }
            },
            ShardMsg::Raft { region_id, msg } => match self.peers.get_mut(&region_id) {
                Some(peer) => peer.step(*msg),
                None => tracing::debug!(
                    region = region_id,
                    "message for a region not on this shard dropped"
                ),
            },
            ShardMsg::Status { reply } => {
                let _ = reply.send(self.status());
            }
            ShardMsg::Shutdown => return true,
        }
        false
    }

    /// Every region's status as this replica sees it.
    pub fn status(&self) -> Vec<RegionStatus> {
        self.peers.values().map(Peer::status).collect()
    }

    /// One turn: Readies of every region -> one durable WAL batch ->
    /// messages and apply; then checkpoints that came due are started.
    pub async fn turn(&mut self, io: &mut impl ShardIo) -> Result<(), RaftstoreError> {
        let mut out = TurnOutput::default();
        let compacted = self.finish_checkpoints(io, &mut out);
        if !compacted.is_empty() {
            io.log_compacted(&compacted).await?;
        }
        let mut readies = Vec::new();
        for (id, peer) in self.peers.iter_mut() {
            peer.flush_reads();
            if let Some(rd) = peer.collect_ready(&mut out)? {
                readies.push((*id, rd));
            }
        }
        if !out.wal.is_empty() {
            // Commit-index-only changes ride along with a sync that happens
            // anyway (see `Peer::stage_hard_state`).
            for peer in self.peers.values_mut() {
                peer.stage_hard_state(&mut out)?;
            }
        }
        // The leader's appends may travel while it syncs its own copy.
        send_grouped(io, std::mem::take(&mut out.messages));
        if !out.wal.is_empty() {
            io.persist(&out.wal).await?;
            out.wal = WalBatch::default();
        }
        for (id, rd) in readies {
            if let Some(peer) = self.peers.get_mut(&id) {
                peer.after_persist(rd, &mut out)?;
            }
        }
        send_grouped(io, std::mem::take(&mut out.messages));
        // Commit-index updates learnt in phase two ride with the next batch.
        for peer in self.peers.values_mut() {
            if let Some(cp) = peer.checkpoint_if_due(self.cfg.checkpoint_every_entries) {
                io.write_checkpoint(cp);
            }
        }
        Ok(())
    }

    /// Feeds finished checkpoint writes back to their regions. Returns the
    /// (region, index) pairs whose log may now be reclaimed.
    fn finish_checkpoints(
        &mut self,
        io: &mut impl ShardIo,
        out: &mut TurnOutput,
    ) -> Vec<(u64, u64)> {
        let mut compacted = Vec::new();
        for (id, result) in io.finished_checkpoints() {
            let Some(peer) = self.peers.get_mut(&id) else {
                continue;
            };
            match result {
                Ok(index) => {
                    peer.on_checkpoint_written(index, out);
                    compacted.push((id, index));
                    tracing::debug!(region = id, index, "checkpoint written; log compacted");
                }
                Err(err) => {
                    tracing::error!(region = id, %err, "checkpoint failed; will retry");
                    peer.on_checkpoint_failed();
                }
            }
        }
        compacted
    }
}

/// Sends `messages` (destination, region, message) with one hand-off per
/// destination node, in node order (deterministic for the simulator).
fn send_grouped(io: &mut impl ShardIo, messages: Vec<(u64, u64, Message)>) {
    if messages.is_empty() {
        return;
    }
    let mut by_node: BTreeMap<u64, Vec<(u64, Message)>> = BTreeMap::new();
    for (to, region, msg) in messages {
        by_node.entry(to).or_default().push((region, msg));
    }
    for (to, msgs) in by_node {
        io.send(to, msgs);
    }
}

fn bootstrap_checkpoint(region: RegionMeta) -> RegionCheckpoint {
    let voters = region.peers.iter().map(|p| p.id).collect();
    RegionCheckpoint {
        region,
        applied_index: 0,
        applied_term: 0,
        conf_state: raft::prelude::ConfState {
            voters,
            ..Default::default()
        },
        sessions: Default::default(),
        pairs: Vec::new(),
    }
}
