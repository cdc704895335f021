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
use crate::command::{ReadOp, RequestHeader, WriteCommand, WriteId, WriteOp};
use crate::config::StoreConfig;
use crate::error::RaftstoreError;
use crate::liveness::{NodeLiveness, PING_REGION};
use crate::peer::{NewRegion, Peer, PeerState, ReadReply, RegionStatus, TurnOutput, WriteReply};
use crate::recovery::recover_log;
use crate::region::RegionEpoch;
use crate::region_map::RegionMap;
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
    /// Split the region at `split_key` (admin request); without an epoch,
    /// at the region's epoch when the split is proposed.
    Split {
        region_id: u64,
        epoch: Option<RegionEpoch>,
        split_key: Vec<u8>,
        reply: WriteReply,
    },
    /// A region a split on another shard of this store created, to run here.
    AddRegion(Box<NewRegion>),
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
    /// A region id no region of the cluster has, nor will be given again.
    fn allocate_region_id(&mut self) -> Result<u64, RaftstoreError>;
    /// Hands a region a split created to shard `shard` of this store.
    fn hand_off(&mut self, shard: usize, region: NewRegion);
}

/// A split waiting for a region id (allocated in the turn, where the
/// shard's I/O is at hand) before it is proposed.
struct SplitRequest {
    region_id: u64,
    epoch: Option<RegionEpoch>,
    split_key: Vec<u8>,
    /// `None` for splits the size check decided.
    reply: Option<WriteReply>,
    at: Instant,
}

pub struct ShardCore {
    cfg: Arc<StoreConfig>,
    shard_index: usize,
    peers: BTreeMap<u64, Peer>,
    store: Arc<KvStore>,
    region_map: Arc<RegionMap>,
    checkpoint_dir: PathBuf,
    splits: Vec<SplitRequest>,
    /// Snapshots for uninitialized replicas that overlap a region not yet
    /// split here; stepped once the overlap is gone (see `step`).
    held_snapshots: BTreeMap<u64, Message>,
    /// When other stores were last heard from (shared by a store's shards).
    liveness: Arc<NodeLiveness>,
    /// Messages produced outside a turn (hibernation heartbeats, pings):
    /// (destination node, region, message), sent by the next turn.
    outbox: Vec<(u64, u64, Message)>,
    ticks: u64,
    next_tick: Instant,
}

impl ShardCore {
    /// Rebuilds shard `shard_index`'s regions from their `checkpoints`
    /// (see `recovery::load_checkpoints`, which loaded their data into
    /// `store`) plus the shard WAL's `records`, in log order.
    #[allow(clippy::too_many_arguments)]
    pub fn recover(
        cfg: Arc<StoreConfig>,
        shard_index: usize,
        checkpoints: Vec<RegionCheckpoint>,
        store: Arc<KvStore>,
        region_map: Arc<RegionMap>,
        records: &[WalRecord],
        checkpoint_dir: PathBuf,
        now: Instant,
    ) -> Result<ShardCore, RaftstoreError> {
        let mut by_region: BTreeMap<u64, Vec<&WalRecord>> = BTreeMap::new();
        for rec in records {
            by_region.entry(rec.region_id).or_default().push(rec);
        }
        let mut core = ShardCore {
            next_tick: now + cfg.tick,
            cfg,
            shard_index,
            peers: BTreeMap::new(),
            store,
            region_map,
            checkpoint_dir,
            splits: Vec::new(),
            held_snapshots: BTreeMap::new(),
            liveness: Arc::new(NodeLiveness::new()),
            outbox: Vec::new(),
            ticks: 0,
        };
        for checkpoint in checkpoints {
            debug_assert_eq!(core.cfg.shard_of(checkpoint.region.id), shard_index);
            let records = by_region.remove(&checkpoint.region.id).unwrap_or_default();
            core.start_region(checkpoint, records)?;
        }
        Ok(core)
    }

    /// Brings up a region from its checkpoint (data already in the store)
    /// and its WAL records.
    fn start_region(
        &mut self,
        checkpoint: RegionCheckpoint,
        records: Vec<&WalRecord>,
    ) -> Result<&mut Peer, RaftstoreError> {
        let id = checkpoint.region.id;
        let log = recover_log(&checkpoint, records)?;
        tracing::info!(
            region = id,
            applied = checkpoint.applied_index,
            last = log
                .entries
                .last()
                .map_or(checkpoint.applied_index, |e| e.index),
            commit = log.hard_state.commit,
            "region started"
        );
        let storage = RegionStorage::new(
            id,
            self.checkpoint_dir.clone(),
            log.hard_state,
            checkpoint.conf_state.clone(),
            (checkpoint.applied_index, checkpoint.applied_term),
            log.entries,
        );
        let raft_cfg = self.cfg.raft_config(checkpoint.applied_index);
        let raw = raft::RawNode::new(&raft_cfg, storage, &crate::logger::raft_logger(id))?;
        let state = PeerState {
            checkpoint,
            raw,
            checkpoint_dir: self.checkpoint_dir.clone(),
        };
        let peer = Peer::new(
            state,
            self.store.clone(),
            self.region_map.clone(),
            &self.cfg,
        );
        Ok(self.peers.entry(id).or_insert(peer))
    }

    /// Runs a region a split created, here or on the shard that owns it.
    fn add_region(
        &mut self,
        io: &mut impl ShardIo,
        region: NewRegion,
    ) -> Result<(), RaftstoreError> {
        let id = region.checkpoint.region.id;
        let shard = self.cfg.shard_of(id);
        if shard != self.shard_index {
            self.region_map.upsert(&region.checkpoint.region);
            io.hand_off(shard, region);
            return Ok(());
        }
        if self.peers.get(&id).is_some_and(Peer::is_initialized) {
            return Ok(());
        }
        // A replica created by a message has no state worth keeping: it
        // never voted and holds no entries.
        self.peers.remove(&id);
        let campaign = region.campaign;
        let peer = self.start_region(region.checkpoint, Vec::new())?;
        if campaign {
            peer.campaign_soon();
        }
        Ok(())
    }

    /// Shares the store's record of when other stores were last heard
    /// from; without it a shard knows only the pings it receives itself
    /// (shard 0 receives all of them).
    pub fn set_liveness(&mut self, liveness: Arc<NodeLiveness>) {
        self.liveness = liveness;
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
        self.step_held_snapshots();
        self.ticks += 1;
        let silence_limit = self.cfg.election_timeout();
        // Asked once per store and tick, however many regions it leads.
        let mut silent: BTreeMap<u64, bool> = BTreeMap::new();
        let liveness = &self.liveness;
        let mut is_silent = |store: u64| {
            *silent
                .entry(store)
                .or_insert_with(|| liveness.is_silent(store, silence_limit, now))
        };
        for peer in self.peers.values_mut() {
            if peer.is_hibernating() {
                match peer.leader_store() {
                    Some(leader) if leader == self.cfg.node_id => continue,
                    Some(leader) if !is_silent(leader) => continue,
                    _ => {
                        let region_id = peer.region().id;
                        tracing::debug!(region = region_id, "leader's store silent; waking");
                        if let Some(m) = peer.wake_for_silence() {
                            self.outbox.push((m.to, region_id, m));
                        }
                    }
                }
            }
            peer.tick();
            peer.expire(now);
            if let Some(markers) = peer.hibernate_if_idle() {
                let region_id = peer.region().id;
                self.outbox
                    .extend(markers.into_iter().map(|m| (m.to, region_id, m)));
            }
            if let Some(split_key) = peer.check_size(self.cfg.split) {
                let region = peer.region();
                tracing::info!(
                    region = region.id,
                    "region passed its size limit; splitting"
                );
                self.splits.push(SplitRequest {
                    region_id: region.id,
                    epoch: Some(region.epoch),
                    split_key,
                    reply: None,
                    at: now,
                });
            }
        }
        if self.shard_index == 0 && self.ticks.is_multiple_of(self.cfg.heartbeat_ticks as u64) {
            self.ping_stores();
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
            ShardMsg::Raft { region_id, msg } if region_id == PING_REGION => {
                self.liveness.heard(msg.from, now);
            }
            ShardMsg::Raft { region_id, msg } => self.step(region_id, *msg),
            ShardMsg::Split {
                region_id,
                epoch,
                split_key,
                reply,
            } => self.splits.push(SplitRequest {
                region_id,
                epoch,
                split_key,
                reply: Some(reply),
                at: now,
            }),
            ShardMsg::AddRegion(region) => {
                let region = *region;
                let id = region.checkpoint.region.id;
                if !self.peers.get(&id).is_some_and(Peer::is_initialized) {
                    self.peers.remove(&id);
                    let campaign = region.campaign;
                    match self.start_region(region.checkpoint, Vec::new()) {
                        Ok(peer) if campaign => peer.campaign_soon(),
                        Ok(_) => {}
                        Err(err) => {
                            tracing::error!(region = id, %err, "could not start a region split off on another shard")
                        }
                    }
                }
            }
            ShardMsg::Status { reply } => {
                let _ = reply.send(self.status());
            }
            ShardMsg::Shutdown => return true,
        }
        false
    }

    /// Every region's status as this replica sees it (replicas still
    /// waiting for their first snapshot are left out).
    pub fn status(&self) -> Vec<RegionStatus> {
        self.peers
            .values()
            .filter(|p| p.is_initialized())
            .map(Peer::status)
            .collect()
    }

    /// Pings every other store this store shares a region with (see
    /// `liveness`): one message per store, however many regions.
    fn ping_stores(&mut self) {
        let me = self.cfg.node_id;
        let stores: std::collections::BTreeSet<u64> = self
            .peers
            .values()
            .flat_map(|p| p.region().peers.iter().map(|peer| peer.store_id))
            .filter(|&s| s != me)
            .collect();
        for store in stores {
            let mut ping = Message::default();
            ping.set_msg_type(raft::prelude::MessageType::MsgHeartbeat);
            ping.from = me;
            ping.to = store;
            self.outbox.push((store, PING_REGION, ping));
        }
    }

    /// Hands a Raft message to its region's replica.
    ///
    /// A message from a leader of a region this store has no replica of
    /// creates one, uninitialized: this store is a member the region's
    /// split never reached here (a snapshot taken after the split caught
    /// up the parent instead). It waits for the leader's snapshot, and
    /// accepts it only once no region of this store still covers any of
    /// its keys — the parent must have split first, or it would later
    /// overwrite the new region's keys with its older log.
    fn step(&mut self, region_id: u64, msg: Message) {
        use raft::prelude::MessageType as T;
        let from_leader = matches!(
            msg.get_msg_type(),
            T::MsgAppend | T::MsgHeartbeat | T::MsgSnapshot
        );
        if !self.peers.contains_key(&region_id) {
            if !from_leader {
                tracing::debug!(region = region_id, "message for an unknown region dropped");
                return;
            }
            let placeholder = RegionCheckpoint {
                region: crate::region::RegionMeta::unknown(region_id),
                applied_index: 0,
                applied_term: 0,
                conf_state: Default::default(),
                sessions: Default::default(),
                pairs: Vec::new(),
            };
            if let Err(err) = self.start_region(placeholder, Vec::new()) {
                tracing::warn!(region = region_id, %err, "could not create a replica for a message");
                return;
            }
            tracing::info!(
                region = region_id,
                from = msg.from,
                "replica created to receive the region's snapshot"
            );
        }
        if !self.peers.get(&region_id).is_some_and(Peer::is_initialized) {
            match msg.get_msg_type() {
                // It has no log to judge a candidate by, and no durable vote.
                T::MsgRequestVote | T::MsgRequestPreVote => return,
                T::MsgSnapshot => match self.snapshot_overlaps(region_id, &msg) {
                    Ok(false) => {}
                    Ok(true) => {
                        tracing::debug!(
                            region = region_id,
                            "snapshot overlaps a region not yet split here; held"
                        );
                        self.held_snapshots.insert(region_id, msg);
                        return;
                    }
                    Err(err) => {
                        tracing::warn!(region = region_id, %err, "snapshot does not decode; dropped");
                        return;
                    }
                },
                _ => {}
            }
        }
        if let Some(peer) = self.peers.get_mut(&region_id) {
            peer.step(msg);
        }
    }

    /// Whether the region a snapshot for `region_id` carries overlaps
    /// another region of this store.
    fn snapshot_overlaps(&self, region_id: u64, msg: &Message) -> Result<bool, RaftstoreError> {
        let cp = RegionCheckpoint::decode(&msg.get_snapshot().data)?;
        Ok(!self
            .region_map
            .overlapping(&cp.region, region_id)
            .is_empty())
    }

    /// Steps held snapshots whose overlap is gone (the parent split or was
    /// caught up); drops those whose replica no longer needs one.
    fn step_held_snapshots(&mut self) {
        let held = std::mem::take(&mut self.held_snapshots);
        for (region_id, msg) in held {
            if self.peers.get(&region_id).is_none_or(Peer::is_initialized) {
                continue;
            }
            match self.snapshot_overlaps(region_id, &msg) {
                Ok(true) => {
                    self.held_snapshots.insert(region_id, msg);
                }
                Ok(false) => {
                    if let Some(peer) = self.peers.get_mut(&region_id) {
                        peer.step(msg);
                    }
                }
                Err(_) => {}
            }
        }
    }

    /// One turn: Readies of every region -> one durable WAL batch ->
    /// messages and apply; then checkpoints that came due are started.
    pub async fn turn(&mut self, io: &mut impl ShardIo) -> Result<(), RaftstoreError> {
        let mut out = TurnOutput::default();
        self.propose_splits(io)?;
        let compacted = self.finish_checkpoints(io, &mut out);
        if !compacted.is_empty() {
            io.log_compacted(&compacted).await?;
        }
        out.messages.append(&mut self.outbox);
        let mut readies = Vec::new();
        for (id, peer) in self.peers.iter_mut() {
            if peer.is_asleep() {
                continue;
            }
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
        for region in std::mem::take(&mut out.created) {
            self.add_region(io, region)?;
        }
        // Commit-index updates learnt in phase two ride with the next batch.
        for peer in self.peers.values_mut() {
            if let Some(cp) = peer.checkpoint_if_due(self.cfg.checkpoint_every_entries) {
                io.write_checkpoint(cp);
            }
        }
        Ok(())
    }

    /// Proposes the splits requested since the last turn, each with a
    /// fresh region id.
    fn propose_splits(&mut self, io: &mut impl ShardIo) -> Result<(), RaftstoreError> {
        for request in std::mem::take(&mut self.splits) {
            let (reply, _ignored) = oneshot::channel();
            let reply = request.reply.unwrap_or(reply);
            let Some(peer) = self.peers.get_mut(&request.region_id) else {
                let _ = reply.send(Err(RaftstoreError::RegionNotFound {
                    region_id: request.region_id,
                }));
                continue;
            };
            let epoch = request.epoch.unwrap_or(peer.region().epoch);
            let cmd = WriteCommand {
                header: RequestHeader {
                    region_id: request.region_id,
                    epoch: Some(epoch),
                },
                id: WriteId::default(),
                op: WriteOp::Split {
                    split_key: request.split_key,
                    new_region_id: io.allocate_region_id()?,
                },
            };
            peer.propose_write(cmd, reply, request.at);
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
