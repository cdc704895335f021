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
//!
//! Membership: a replica that applied its own removal, or that learns from
//! a member of a newer configuration that it is not part of it (a
//! [`crate::peer::removed_marker`]), is destroyed: its region leaves the
//! shard, the [`RegionMap`], the checkpoint directory and the store, and a
//! durable tombstone keeps old snapshots from bringing it back.
//!
//! Merge: `PrepareMerge` is proposed here after the checks of
//! `crate::merge`, judged with the target's replica at hand, or its
//! metadata when another shard of the store runs it. Before a region
//! applies a `CommitMerge`, the absorbed source's replica on this store is
//! destroyed, keeping its data (now the target's), with a tombstone no
//! checkpoint or snapshot of the source passes: on this shard at once,
//! before any other region applies anything; on another shard by message,
//! the target holding its apply meanwhile (see `peer::merge`). An
//! initialized region whose snapshot covers the range of an older-version
//! region of this store (a merge it missed) has that region destroyed
//! before stepping the snapshot.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use engine::store::KvStore;
use engine::wal::{RecordKind, WalBatch, WalRecord};
use futures::channel::oneshot;
use raft::prelude::Message;

use crate::checkpoint::{CheckpointDone, PendingCheckpoint, RegionCheckpoint};
use crate::command::{ReadOp, RequestHeader, WriteCommand, WriteId, WriteOp};
use crate::config::StoreConfig;
use crate::error::RaftstoreError;
use crate::liveness::{NodeLiveness, PING_REGION};
use crate::log_codec::{decode_hard_state, encode_truncation, Truncation};
use crate::membership::PeerChange;
use crate::peer::{
    parse_removed_marker, removed_marker, AppliedCheckpoint, MembershipReply, MergeRelease,
    MergeSource, NewRegion, Peer, PeerState, ReadPath, ReadReply, RegionStatus, SplitCheckpoints,
    TurnOutput, WriteReply,
};
use crate::recovery::recover_log;
use crate::region::{RegionEpoch, RegionMeta};
use crate::region_map::RegionMap;
use crate::remains::ReplicaRemains;
use crate::shard_peers::{PeerMut, ShardPeers, NO_LEADER};
use crate::size_check::{SizeCheck, SizeMeasured};
use crate::storage::RegionStorage;
use crate::tombstone::Tombstones;

/// What a shard's inbox carries. Large payloads are boxed: the inbox's
/// queue keeps the room its largest burst took (thousands of messages when
/// every region of a restarted store elects), so every byte of the enum
/// counts that many times.
pub enum ShardMsg {
    Write {
        region_id: u64,
        cmd: Box<WriteCommand>,
        reply: WriteReply,
    },
    Read {
        region_id: u64,
        header: RequestHeader,
        op: Box<ReadOp>,
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
    /// Split the region at the middle key of its data, measured by its
    /// leader when the request arrives (what the size check would choose).
    SplitAtMiddle {
        region_id: u64,
        epoch: Option<RegionEpoch>,
        reply: WriteReply,
    },
    /// A region a split on another shard of this store created, to run here.
    AddRegion(Box<NewRegion>),
    /// Change the membership of region `header.region_id` (admin request,
    /// served by its leader).
    ChangePeers {
        header: RequestHeader,
        changes: Vec<PeerChange>,
        reply: MembershipReply,
    },
    /// Hand the leadership of region `header.region_id` to the voter on
    /// store `to_store`.
    TransferLeader {
        header: RequestHeader,
        to_store: u64,
        reply: oneshot::Sender<Result<(), RaftstoreError>>,
    },
    /// The status of the regions `scope` names.
    Status {
        scope: StatusScope,
        reply: oneshot::Sender<Vec<RegionStatus>>,
    },
    /// How many regions the shard runs and leads.
    RegionCounts {
        reply: oneshot::Sender<RegionCounts>,
    },
    /// Freeze region `source_id` for a merge into its neighbour
    /// `target_id` (served by the source's leader); answered with the
    /// frozen source once applied, at once if it is already frozen for
    /// that target.
    PrepareMerge {
        source_id: u64,
        target_id: u64,
        reply: WriteReply,
    },
    /// The final state of the frozen region `region_id`, for its target.
    MergeSource {
        region_id: u64,
        reply: oneshot::Sender<Result<MergeSource, RaftstoreError>>,
    },
    /// From shard `reply_to` of this store: destroy the replica of the
    /// merge source `release.source` (keeping its data), which
    /// `release.target` absorbs, then answer with [`ShardMsg::MergeSourceReleased`].
    ReleaseMergeSource {
        release: MergeRelease,
        reply_to: usize,
    },
    /// This store's replica of `release.source` is destroyed: `release.target`
    /// may apply what it held back for it.
    MergeSourceReleased(MergeRelease),
    Shutdown,
}

/// Which regions a status request is about. Building a status costs a
/// copy of the region's metadata: with thousands of regions, a caller that
/// needs a few asks for those.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusScope {
    /// Every region.
    All,
    /// The regions this store leads.
    Leading,
    /// The regions this store leads that are frozen for a merge.
    LeadingFrozen,
    /// One region.
    Region(u64),
}

/// How many regions a shard (or store) runs, and how many of them it leads
/// (replicas still waiting for their first snapshot are not counted).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegionCounts {
    pub regions: u64,
    pub leaders: u64,
}

/// The `conf_ver` a merged-away region's tombstone records: it covers every
/// checkpoint and snapshot the region ever had (its id is never reused).
const MERGED_TOMBSTONE_CONF_VER: u64 = u64::MAX;

/// The most asleep regions one idle-checkpoint sweep starts checkpoints
/// for; the rest wait for the next sweep, so a store whose thousands of
/// regions all went idle at once (after a restart, say) spreads the writes.
const IDLE_CHECKPOINTS_PER_SWEEP: usize = 4096;

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
    /// Starts writing a checkpoint (reading its captured pairs first, off
    /// the turn); its outcome comes back through
    /// [`ShardIo::finished_checkpoints`].
    fn write_checkpoint(&mut self, checkpoint: PendingCheckpoint);
    /// Checkpoint writes that finished since the last call.
    fn finished_checkpoints(&mut self) -> Vec<CheckpointDone>;
    /// Cleans up what is left of a replica the shard destroyed, off the
    /// turn, after the checkpoint writes started before (see `remains`);
    /// nothing comes back.
    fn clean_up(&mut self, remains: ReplicaRemains);
    /// Starts measuring a region off the turn; the measurement comes back
    /// through [`ShardIo::measured_regions`].
    fn measure_region(&mut self, check: SizeCheck);
    /// Measurements taken since the last call.
    fn measured_regions(&mut self) -> Vec<SizeMeasured>;
    /// Each `(region, index)`: the region's log up to `index` is covered by
    /// a durable checkpoint, so WAL space holding only such records may be
    /// reclaimed. Called once per turn with every compaction of that turn.
    async fn log_compacted(&mut self, compacted: &[(u64, u64)]) -> Result<(), RaftstoreError>;
    /// A region id no region of the cluster has, nor will be given again.
    fn allocate_region_id(&mut self) -> Result<u64, RaftstoreError>;
    /// Hands `msg` to shard `shard` of this store (a region a split
    /// created, a merge source to destroy, or the answer to that). Never
    /// blocks.
    fn to_shard(&mut self, shard: usize, msg: ShardMsg);
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

/// A split whose checkpoints are being written (see [`SplitCheckpoints`]).
struct SplitInFlight {
    parent: u64,
    index: u64,
    /// The region to start once the parent's checkpoint is durable; the
    /// writer wrote its own just before.
    created: Option<NewRegion>,
}

pub struct ShardCore {
    cfg: Arc<StoreConfig>,
    shard_index: usize,
    /// Every region of the shard; a tick and a turn visit only the awake
    /// ones (see `shard_peers`).
    peers: ShardPeers,
    store: Arc<KvStore>,
    region_map: Arc<RegionMap>,
    checkpoint_dir: Arc<Path>,
    splits: Vec<SplitRequest>,
    /// Size checks the next turn hands to be measured.
    size_checks: Vec<SizeCheck>,
    /// Splits applied here whose checkpoints the writer has not finished.
    splits_in_flight: Vec<SplitInFlight>,
    /// Snapshots for uninitialized replicas that overlap a region not yet
    /// split here; stepped once the overlap is gone (see `step`).
    held_snapshots: BTreeMap<u64, Message>,
    /// Snapshots for initialized replicas whose range covers a region
    /// merged away that another shard of this store still runs; stepped
    /// once that shard destroyed it (see `release_merged_away`).
    held_merge_snapshots: BTreeMap<u64, Message>,
    /// Regions whose snapshot was stepped into an uninitialized replica
    /// (or is being written to be) but is not yet installed; their range
    /// is reserved in the region map until then (see
    /// `RegionMap::reserve_for_snapshot`): two overlapping snapshots
    /// accepted before either installs, on any shards, would let the older
    /// shape replay its log over the newer region's keys.
    accepted_snapshots: BTreeSet<u64>,
    /// Snapshots the writer is making their region's checkpoint, by
    /// region, stepped once durable (see `step_into_peer`).
    snapshots_being_written: BTreeMap<u64, SnapshotBeingWritten>,
    /// Checkpoints of destroyed replicas the writer has not reported, by
    /// region. Their reports come before any of a replica of the region
    /// created since (the writer keeps its queue's order) and are no
    /// one's: a new replica taking one for its own would compact a log it
    /// does not have.
    orphaned_checkpoints: BTreeMap<u64, u32>,
    /// Received snapshots for the writer, handed over at the end of the
    /// turn, after the checkpoints the turn's applies started.
    snapshot_writes: Vec<PendingCheckpoint>,
    /// When other stores were last heard from (shared by a store's shards).
    liveness: Arc<NodeLiveness>,
    /// Messages produced outside a turn (hibernation heartbeats, pings):
    /// (destination node, region, message), sent by the next turn.
    outbox: Vec<(u64, u64, Message)>,
    /// WAL records staged after a turn's batch was written (a compaction
    /// applied after the sync, a destroyed region's log): they ride with
    /// the next batch. Losing them in a crash only delays reclaiming space.
    staged_wal: Vec<WalRecord>,
    /// Messages for other shards of this store produced outside a turn:
    /// (shard, message), handed over by the next turn.
    shard_outbox: Vec<(usize, ShardMsg)>,
    /// What is left of replicas destroyed since the last turn, handed over
    /// to be cleaned up off the turn by the next one.
    remains: Vec<ReplicaRemains>,
    /// The regions of this shard this store was removed from.
    tombstones: Tombstones,
    /// The next turn checkpoints asleep regions (`StoreConfig::idle_checkpoint_interval`).
    idle_checkpoints_due: bool,
    /// The next turn looks for due checkpoints (`start_due_checkpoints`):
    /// once a tick, not every turn, as it visits every awake region.
    checkpoint_scan_due: bool,
    ticks: u64,
    next_tick: Instant,
    /// The latest time passed in.
    clock: Instant,
    /// With leader leases, the store refuses votes until then (an election
    /// timeout after it started): a replica that restarted forgot when it
    /// last heard from its leader, whose lease may count on it (see `lease`).
    votes_refused_until: Option<Instant>,
    /// Reads taken since the runtime last asked (`take_read_counts`).
    read_counts: ReadCounts,
}

/// Reads leaders took, by how they were confirmed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadCounts {
    pub on_lease: u64,
    pub by_read_index: u64,
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
        let tombstones = Tombstones::load(&checkpoint_dir, |id| cfg.shard_of(id) == shard_index)?;
        let mut core = ShardCore {
            next_tick: now + cfg.tick,
            clock: now,
            votes_refused_until: cfg.leader_lease().map(|_| now + cfg.election_timeout()),
            read_counts: ReadCounts::default(),
            cfg,
            shard_index,
            peers: ShardPeers::new(),
            store,
            region_map,
            checkpoint_dir: checkpoint_dir.into(),
            splits: Vec::new(),
            size_checks: Vec::new(),
            splits_in_flight: Vec::new(),
            held_snapshots: BTreeMap::new(),
            held_merge_snapshots: BTreeMap::new(),
            accepted_snapshots: BTreeSet::new(),
            snapshots_being_written: BTreeMap::new(),
            snapshot_writes: Vec::new(),
            orphaned_checkpoints: BTreeMap::new(),
            liveness: Arc::new(NodeLiveness::new()),
            outbox: Vec::new(),
            staged_wal: Vec::new(),
            shard_outbox: Vec::new(),
            remains: Vec::new(),
            tombstones,
            idle_checkpoints_due: false,
            checkpoint_scan_due: false,
            ticks: 0,
        };
        for checkpoint in checkpoints {
            debug_assert_eq!(core.cfg.shard_of(checkpoint.region.id), shard_index);
            let records = by_region.remove(&checkpoint.region.id).unwrap_or_default();
            core.start_region(checkpoint, records)?;
        }
        // A region destroyed before its log was discarded (a crash right
        // after the destruction): discard it now.
        for (region_id, records) in by_region {
            if core.tombstones.conf_ver(region_id).is_some() {
                if let Some(record) = discard_destroyed_log(region_id, &records)? {
                    core.staged_wal.push(record);
                }
            }
        }
        Ok(core)
    }

    /// Brings up a region from its checkpoint (data already in the store)
    /// and its WAL records.
    fn start_region(
        &mut self,
        checkpoint: RegionCheckpoint,
        records: Vec<&WalRecord>,
    ) -> Result<PeerMut<'_>, RaftstoreError> {
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
        Ok(self.peers.get_or_insert(id, peer))
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
            self.region_map.upsert(region.checkpoint.region.clone());
            io.to_shard(shard, ShardMsg::AddRegion(Box::new(region)));
            return Ok(());
        }
        self.start_split_region(region)
    }

    /// Starts a region a split created, on this shard, unless an
    /// initialized replica of it runs here already. A replica created by a
    /// message is replaced: it never voted and holds no entries.
    fn start_split_region(&mut self, region: NewRegion) -> Result<(), RaftstoreError> {
        let id = region.checkpoint.region.id;
        if self.peers.get(&id).is_some_and(Peer::is_initialized) {
            return Ok(());
        }
        self.peers.remove(&id);
        let campaign = region.campaign;
        let mut peer = self.start_region(region.checkpoint, Vec::new())?;
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

    /// The reads taken since the last call, by how they were confirmed.
    pub fn take_read_counts(&mut self) -> ReadCounts {
        std::mem::take(&mut self.read_counts)
    }

    /// When the Raft clock next needs a tick.
    pub fn next_tick(&self) -> Instant {
        self.next_tick
    }

    /// Ticks every awake region if a tick is due and expires overdue
    /// requests; wakes the asleep regions whose leader's store went silent.
    pub fn on_clock(&mut self, now: Instant) {
        self.clock = self.clock.max(now);
        if now < self.next_tick {
            return;
        }
        self.step_held_snapshots();
        self.ticks += 1;
        self.wake_where_leader_silent(now);
        for region_id in self.peers.awake() {
            let Some(mut peer) = self.peers.get_mut(&region_id) else {
                continue;
            };
            // Its last answers go out this turn; then it is asleep.
            if peer.is_hibernating() {
                continue;
            }
            peer.tick();
            peer.expire(now);
            if let Some(markers) = peer.hibernate_if_idle() {
                self.outbox
                    .extend(markers.into_iter().map(|m| (m.to, region_id, m)));
            }
            if let Some(check) = peer.size_check_due(self.cfg.split) {
                self.size_checks.push(check);
            }
        }
        self.checkpoint_scan_due = true;
        if self.ticks.is_multiple_of(self.cfg.idle_checkpoint_ticks()) {
            self.idle_checkpoints_due = true;
        }
        if self.shard_index == 0 && self.ticks.is_multiple_of(self.cfg.heartbeat_ticks as u64) {
            self.ping_stores();
        }
        self.next_tick = (self.next_tick + self.cfg.tick).max(now);
    }

    /// Wakes the asleep followers whose leader's store has been silent for
    /// an election timeout (or that know no leader), so that they can
    /// elect; each store is asked once, however many regions it leads.
    fn wake_where_leader_silent(&mut self, now: Instant) {
        let me = self.cfg.node_id;
        let silence_limit = self.cfg.election_timeout();
        let liveness = &self.liveness;
        let to_wake = self.peers.asleep_led_by(|leader| {
            leader == NO_LEADER || (leader != me && liveness.is_silent(leader, silence_limit, now))
        });
        for region_id in to_wake {
            let Some(mut peer) = self.peers.get_mut(&region_id) else {
                continue;
            };
            tracing::debug!(region = region_id, "leader's store silent; waking");
            if let Some(m) = peer.wake_for_silence() {
                self.outbox.push((m.to, region_id, m));
            }
        }
    }

    /// Takes one inbox message. Returns true on shutdown.
    pub fn handle(&mut self, msg: ShardMsg, now: Instant) -> bool {
        self.clock = self.clock.max(now);
        match msg {
            ShardMsg::Write {
                region_id,
                cmd,
                reply,
            } => match self.peers.get_mut(&region_id) {
                Some(mut peer) => peer.propose_write(*cmd, reply, now),
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
                Some(mut peer) => match peer.queue_read(header, *op, reply, now) {
                    Some(ReadPath::Lease) => self.read_counts.on_lease += 1,
                    Some(ReadPath::ReadIndex) => self.read_counts.by_read_index += 1,
                    None => {}
                },
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
            ShardMsg::ChangePeers {
                header,
                changes,
                reply,
            } => match self.peers.get_mut(&header.region_id) {
                Some(mut peer) => {
                    let liveness = &self.liveness;
                    let silence_limit = self.cfg.election_timeout();
                    let store_alive = |store| !liveness.is_silent(store, silence_limit, now);
                    peer.change_peers(header, &changes, store_alive, reply, now);
                }
                None => {
                    let _ = reply.send(Err(RaftstoreError::RegionNotFound {
                        region_id: header.region_id,
                    }));
                }
            },
            ShardMsg::TransferLeader {
                header,
                to_store,
                reply,
            } => {
                let result = match self.peers.get_mut(&header.region_id) {
                    Some(mut peer) => peer.transfer_leader(&header, to_store),
                    None => Err(RaftstoreError::RegionNotFound {
                        region_id: header.region_id,
                    }),
                };
                let _ = reply.send(result);
            }
            ShardMsg::SplitAtMiddle {
                region_id,
                epoch,
                reply,
            } => match self.peers.get(&region_id).map(Peer::middle_key) {
                Some(Ok(split_key)) => self.splits.push(SplitRequest {
                    region_id,
                    epoch,
                    split_key,
                    reply: Some(reply),
                    at: now,
                }),
                Some(Err(err)) => {
                    let _ = reply.send(Err(err));
                }
                None => {
                    let _ = reply.send(Err(RaftstoreError::RegionNotFound { region_id }));
                }
            },
            ShardMsg::AddRegion(region) => {
                let id = region.checkpoint.region.id;
                if let Err(err) = self.start_split_region(*region) {
                    tracing::error!(region = id, %err, "could not start a region split off on another shard");
                }
            }
            ShardMsg::Status { scope, reply } => {
                let _ = reply.send(self.status_in(scope));
            }
            ShardMsg::RegionCounts { reply } => {
                let _ = reply.send(self.region_counts());
            }
            ShardMsg::PrepareMerge {
                source_id,
                target_id,
                reply,
            } => self.prepare_merge(source_id, target_id, reply, now),
            ShardMsg::MergeSource { region_id, reply } => {
                let source = match self.peers.get(&region_id) {
                    Some(peer) => peer.merge_source(),
                    None => Err(RaftstoreError::RegionNotFound { region_id }),
                };
                let _ = reply.send(source);
            }
            ShardMsg::ReleaseMergeSource { release, reply_to } => {
                match self.destroy_merge_source(release) {
                    Ok(()) => self
                        .shard_outbox
                        .push((reply_to, ShardMsg::MergeSourceReleased(release))),
                    // The target keeps holding; the shard asks again when
                    // it restarts (the entry is replayed).
                    Err(err) => {
                        tracing::error!(region = release.source, %err, "could not destroy a merged-away replica")
                    }
                }
            }
            ShardMsg::MergeSourceReleased(release) => {
                if let Some(mut target) = self.peers.get_mut(&release.target) {
                    target.source_released(release.source);
                }
            }
            ShardMsg::Shutdown => return true,
        }
        false
    }

    /// Every region's status as this replica sees it (replicas still
    /// waiting for their first snapshot are left out).
    pub fn status(&self) -> Vec<RegionStatus> {
        self.status_in(StatusScope::All)
    }

    /// The status of the regions `scope` names, as this replica sees them
    /// (replicas still waiting for their first snapshot are left out).
    pub fn status_in(&self, scope: StatusScope) -> Vec<RegionStatus> {
        let silence_limit = self.cfg.election_timeout();
        let store_alive = |store| !self.liveness.is_silent(store, silence_limit, self.clock);
        let in_scope = |peer: &&Peer| {
            peer.is_initialized()
                && match scope {
                    StatusScope::All | StatusScope::Region(_) => true,
                    StatusScope::Leading => peer.is_leader(),
                    StatusScope::LeadingFrozen => peer.is_leader() && peer.merging().is_some(),
                }
        };
        let status = |peer: &Peer| RegionStatus {
            down_peers: peer.down_peers(store_alive),
            ..peer.status()
        };
        match scope {
            StatusScope::Region(id) => self
                .peers
                .get(&id)
                .filter(in_scope)
                .map(status)
                .into_iter()
                .collect(),
            _ => self.peers.values().filter(in_scope).map(status).collect(),
        }
    }

    /// How many regions this shard runs and leads.
    pub fn region_counts(&self) -> RegionCounts {
        let mut counts = RegionCounts::default();
        for peer in self.peers.values().filter(|p| p.is_initialized()) {
            counts.regions += 1;
            counts.leaders += u64::from(peer.is_leader());
        }
        counts
    }

    /// Pings every other store this store shares a region with, whichever
    /// shard runs the region (see `liveness`): one message per store,
    /// however many regions.
    fn ping_stores(&mut self) {
        let me = self.cfg.node_id;
        for store in self.region_map.peer_stores() {
            if store == me {
                continue;
            }
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
    /// overwrite the new region's keys with its older log. A snapshot of a
    /// configuration this store was removed from (see `tombstone`) is
    /// dropped, and a region merged away here is never created again.
    ///
    /// A message from a store that is not in the region's configuration,
    /// other than a leader's (whose newer configuration this replica may
    /// not know yet), is answered with a [`removed_marker`]: the sender is
    /// a replica removed from the region (perhaps while it was down), and
    /// destroys itself if its configuration is older than this one. The
    /// message is still stepped; raft-rs ignores what it must.
    fn step(&mut self, region_id: u64, msg: Message) {
        use raft::prelude::MessageType as T;
        if self.refuses_vote(&msg) {
            tracing::debug!(
                region = region_id,
                from = msg.from,
                "vote request in this store's first election timeout; refused"
            );
            return;
        }
        if let Some(epoch) = parse_removed_marker(&msg) {
            self.on_removed_marker(region_id, msg.from, epoch);
            return;
        }
        let from_leader = matches!(
            msg.get_msg_type(),
            T::MsgAppend | T::MsgHeartbeat | T::MsgSnapshot
        );
        if msg.get_msg_type() == T::MsgSnapshot
            && self.peers.get(&region_id).is_some_and(Peer::is_initialized)
            && !self.release_merged_away(region_id, &msg)
        {
            self.held_merge_snapshots.insert(region_id, msg);
            return;
        }
        if let Some(peer) = self.peers.get(&region_id) {
            let leaders_message = from_leader || msg.get_msg_type() == T::MsgTimeoutNow;
            if peer.is_initialized() && !leaders_message && !peer.is_member(msg.from) {
                tracing::debug!(
                    region = region_id,
                    from = msg.from,
                    "message from a store outside the configuration; telling it"
                );
                let marker = removed_marker(self.cfg.node_id, msg.from, peer.region().epoch);
                self.outbox.push((msg.from, region_id, marker));
            }
        }
        if !self.peers.contains_key(&region_id) {
            if !from_leader {
                tracing::debug!(region = region_id, "message for an unknown region dropped");
                return;
            }
            if self.tombstones.conf_ver(region_id) == Some(MERGED_TOMBSTONE_CONF_VER) {
                // Its source's old group, until every replica applied the
                // merge: the region lives on in its target here.
                tracing::debug!(
                    region = region_id,
                    from = msg.from,
                    "message for a region merged away here; dropped"
                );
                return;
            }
            let placeholder = RegionCheckpoint {
                region: RegionMeta::unknown(region_id),
                applied_index: 0,
                applied_term: 0,
                conf_state: Default::default(),
                sessions: Default::default(),
                merging: None,
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
                T::MsgSnapshot => match self.check_snapshot(&msg) {
                    SnapshotCheck::Accept => {
                        self.accepted_snapshots.insert(region_id);
                    }
                    SnapshotCheck::Hold => {
                        tracing::debug!(
                            region = region_id,
                            "snapshot overlaps a region not yet split here; held"
                        );
                        self.held_snapshots.insert(region_id, msg);
                        return;
                    }
                    SnapshotCheck::Undecodable(err) => {
                        tracing::warn!(region = region_id, %err, "snapshot does not decode; dropped");
                        return;
                    }
                    SnapshotCheck::Removed => {
                        tracing::debug!(
                            region = region_id,
                            "snapshot of a configuration this store was removed from; dropped"
                        );
                        self.peers.remove(&region_id);
                        return;
                    }
                },
                _ => {}
            }
        }
        self.step_into_peer(region_id, msg);
    }

    /// Steps `msg` into the replica of `region_id`. A snapshot the replica
    /// would install is first made the region's checkpoint by the shard's
    /// writer, off the turn, and stepped once that is durable (see
    /// `finish_checkpoints`): installing it in the turn then writes
    /// nothing, where writing a large region there would hold up every
    /// region of the shard. Another snapshot of the region arriving
    /// meanwhile is dropped; the leader sends again if it must.
    fn step_into_peer(&mut self, region_id: u64, msg: Message) {
        use raft::prelude::MessageType as T;
        let Some(mut peer) = self.peers.get_mut(&region_id) else {
            return;
        };
        if msg.get_msg_type() != T::MsgSnapshot || !peer.would_install(&msg) {
            peer.step(msg);
            return;
        }
        if self.snapshots_being_written.contains_key(&region_id) {
            tracing::debug!(
                region = region_id,
                "a snapshot of the region is being written already; dropped"
            );
            return;
        }
        let snapshot = msg.get_snapshot();
        let index = snapshot.get_metadata().index;
        let (write, decoded) = PendingCheckpoint::received(region_id, index, snapshot.data.clone());
        self.snapshot_writes.push(write);
        self.snapshots_being_written.insert(
            region_id,
            SnapshotBeingWritten {
                index,
                msg: Some(msg),
                decoded,
            },
        );
    }

    /// A vote or pre-vote request this store may not answer yet (see
    /// `votes_refused_until`). A leadership transfer's request is answered:
    /// its leader gave up its lease when it started the transfer.
    fn refuses_vote(&self, msg: &Message) -> bool {
        use raft::prelude::MessageType as T;
        matches!(msg.get_msg_type(), T::MsgRequestVote | T::MsgRequestPreVote)
            && msg.context.as_ref() != raft::CAMPAIGN_TRANSFER
            && self
                .votes_refused_until
                .is_some_and(|until| self.clock < until)
    }

    /// Another replica said this store is not in the region's
    /// configuration `epoch`: the replica here is destroyed if it knows
    /// only an older configuration (or none).
    fn on_removed_marker(&mut self, region_id: u64, from: u64, epoch: RegionEpoch) {
        let Some(peer) = self.peers.get(&region_id) else {
            return;
        };
        if peer.is_initialized() && peer.region().epoch.conf_ver >= epoch.conf_ver {
            tracing::debug!(
                region = region_id,
                from,
                "removal marker from an older configuration ignored"
            );
            return;
        }
        tracing::info!(
            region = region_id,
            from,
            conf_ver = epoch.conf_ver,
            "this store is not in the region's current configuration; destroying the replica"
        );
        if let Err(err) = self.destroy_region(region_id, epoch.conf_ver, false) {
            tracing::error!(region = region_id, %err, "could not destroy a removed replica; will retry on the next marker");
        }
    }

    /// Destroys this store's replica of `region_id`, which is not in the
    /// region's configuration `conf_ver`: the tombstone is made durable
    /// first, then the checkpoint is deleted, then the region leaves the
    /// shard and the region map, and its keys (its own: no other region of
    /// this store overlaps it) are given up, to be deleted off the turn
    /// (`engine::store::RangeDeletion`: a region that takes the range over
    /// first finishes the deletion before it writes), as is the file of a
    /// checkpoint of it still being written (see `remains`). Its log is discarded
    /// with the next WAL batch. A crash in between is finished by recovery,
    /// which loads no keys for it. With `keep_data` the keys stay in the
    /// store: a merge target owns them.
    fn destroy_region(
        &mut self,
        region_id: u64,
        conf_ver: u64,
        keep_data: bool,
    ) -> Result<(), RaftstoreError> {
        self.tombstones.record(region_id, conf_ver)?;
        let Some(peer) = self.peers.get(&region_id) else {
            return Ok(());
        };
        if peer.is_initialized() {
            engine::checkpoint::remove(&self.checkpoint_dir, region_id)?;
        }
        let Some(mut peer) = self.peers.remove(&region_id) else {
            return Ok(());
        };
        self.held_snapshots.remove(&region_id);
        self.held_merge_snapshots.remove(&region_id);
        self.release_accepted_snapshot(region_id);
        let snapshot_in_flight = match self.snapshots_being_written.get_mut(&region_id) {
            Some(being_written) => {
                being_written.msg = None;
                true
            }
            None => false,
        };
        if peer.checkpoints_in_flight() > 0 {
            *self.orphaned_checkpoints.entry(region_id).or_default() +=
                peer.checkpoints_in_flight();
        }
        let checkpoint_written_late = snapshot_in_flight || peer.checkpoints_in_flight() > 0;
        let mut keys = None;
        if peer.is_initialized() {
            let region = peer.region();
            if !keep_data {
                keys = Some(
                    self.store
                        .delete_range_later(&region.start_key, &region.end_key),
                );
            }
            self.region_map.remove(region_id);
            tracing::info!(region = region_id, conf_ver, keep_data, "replica destroyed");
        }
        if keys.is_some() || checkpoint_written_late {
            self.remains.push(ReplicaRemains {
                region_id,
                keys,
                checkpoint_written_late,
            });
        }
        let committed = peer.committed_index();
        if committed > 0 {
            self.staged_wal.push(discard_record(region_id, committed));
        }
        peer.fail_pending(|| RaftstoreError::RegionNotFound { region_id });
        Ok(())
    }

    /// Before the initialized replica `region_id` steps snapshot `msg`:
    /// destroys the regions of this store the snapshot's range covers with
    /// an older version. A region's range grows only by merges, so those
    /// are sources the region absorbed in entries this store will never
    /// apply; left alone, they would keep the keys the snapshot brings (or,
    /// lagging, write older values over them). Those on this shard go at
    /// once; those on other shards are asked to go. Returns whether none
    /// is left, so the snapshot may be stepped.
    fn release_merged_away(&mut self, region_id: u64, msg: &Message) -> bool {
        let Ok(cp) = RegionCheckpoint::decode_without_pairs(&msg.get_snapshot().data) else {
            return true; // judged again when installed
        };
        let mut all_gone = true;
        for stale in self.region_map.overlapping(&cp.region, region_id) {
            if stale.epoch.version >= cp.region.epoch.version {
                continue;
            }
            let release = MergeRelease {
                source: stale.id,
                target: region_id,
            };
            if self.ask_release_elsewhere(release) {
                all_gone = false;
                continue;
            }
            tracing::info!(
                region = stale.id,
                by = region_id,
                "a snapshot shows the region merged away"
            );
            if let Err(err) = self.destroy_merge_source(release) {
                tracing::error!(region = stale.id, %err, "could not destroy a merged-away replica");
                all_gone = false;
            }
        }
        all_gone
    }

    /// Whether a snapshot for the uninitialized replica `region_id` may
    /// be stepped now: the region it carries must overlap no region of
    /// this store, installed or accepted and about to install. If it may,
    /// its range is reserved (see `accepted_snapshots`).
    fn check_snapshot(&self, msg: &Message) -> SnapshotCheck {
        let cp = match RegionCheckpoint::decode_without_pairs(&msg.get_snapshot().data) {
            Ok(cp) => cp,
            Err(err) => return SnapshotCheck::Undecodable(err),
        };
        if self.tombstones.covers(&cp.region) {
            return SnapshotCheck::Removed;
        }
        if self.region_map.reserve_for_snapshot(&cp.region) {
            SnapshotCheck::Accept
        } else {
            SnapshotCheck::Hold
        }
    }

    /// Ends this shard's reservation of `region_id`'s snapshot range, if
    /// it holds one.
    fn release_accepted_snapshot(&mut self, region_id: u64) {
        if self.accepted_snapshots.remove(&region_id) {
            self.region_map.release_snapshot(region_id);
        }
    }

    /// Steps held snapshots whose overlap is gone (the parent split or was
    /// caught up); drops those whose replica no longer needs one.
    fn step_held_snapshots(&mut self) {
        for (region_id, msg) in std::mem::take(&mut self.held_merge_snapshots) {
            if !self.peers.get(&region_id).is_some_and(Peer::is_initialized) {
                continue;
            }
            if !self.release_merged_away(region_id, &msg) {
                self.held_merge_snapshots.insert(region_id, msg);
            } else {
                self.step_into_peer(region_id, msg);
            }
        }
        let held = std::mem::take(&mut self.held_snapshots);
        for (region_id, msg) in held {
            if self.peers.get(&region_id).is_none_or(Peer::is_initialized) {
                continue;
            }
            match self.check_snapshot(&msg) {
                SnapshotCheck::Hold => {
                    self.held_snapshots.insert(region_id, msg);
                }
                SnapshotCheck::Accept => {
                    self.accepted_snapshots.insert(region_id);
                    self.step_into_peer(region_id, msg);
                }
                SnapshotCheck::Undecodable(_) | SnapshotCheck::Removed => {}
            }
        }
    }

    /// One turn: Readies of every region -> one durable WAL batch ->
    /// messages and apply; then checkpoints that came due are started.
    pub async fn turn(&mut self, io: &mut impl ShardIo) -> Result<(), RaftstoreError> {
        let mut out = TurnOutput::default();
        for record in self.staged_wal.drain(..) {
            out.wal.push(record);
        }
        self.take_size_measurements(io);
        self.propose_splits(io)?;
        for check in std::mem::take(&mut self.size_checks) {
            io.measure_region(check);
        }
        let compacted = self.finish_checkpoints(io, &mut out)?;
        if !compacted.is_empty() {
            io.log_compacted(&compacted).await?;
        }
        // Taken, not drained: after every leader of the shard hibernated at
        // once, a drained outbox would keep room for all their markers.
        out.messages.append(&mut std::mem::take(&mut self.outbox));
        let mut readies = Vec::new();
        for id in self.peers.awake() {
            {
                let Some(mut peer) = self.peers.get_mut(&id) else {
                    continue; // absorbed by a merge earlier in this loop
                };
                peer.flush_reads();
                if let Some(rd) = peer.collect_ready(&mut out)? {
                    readies.push((id, rd));
                }
            }
            self.release_merge_sources(&mut out)?;
        }
        // Every accepted snapshot is now installed (or was refused by
        // Raft), but for those still being written.
        let done: Vec<u64> = self
            .accepted_snapshots
            .iter()
            .filter(|id| !self.snapshots_being_written.contains_key(id))
            .copied()
            .collect();
        for id in done {
            self.release_accepted_snapshot(id);
        }
        if !out.wal.is_empty() {
            // Commit-index-only changes ride along with a sync that happens
            // anyway (see `Peer::stage_hard_state`).
            for id in self.peers.unstaged_hard_states() {
                if let Some(mut peer) = self.peers.get_mut(&id) {
                    peer.stage_hard_state(&mut out);
                }
            }
        }
        // The leader's appends may travel while it syncs its own copy.
        send_grouped(io, std::mem::take(&mut out.messages));
        if !out.wal.is_empty() {
            io.persist(&out.wal).await?;
            out.wal = WalBatch::default();
        }
        for (id, rd) in readies {
            if let Some(mut peer) = self.peers.get_mut(&id) {
                peer.after_persist(rd, &mut out)?;
            }
            self.release_merge_sources(&mut out)?;
        }
        send_grouped(io, std::mem::take(&mut out.messages));
        for (shard, msg) in self.shard_outbox.drain(..) {
            io.to_shard(shard, msg);
        }
        self.staged_wal.extend(out.wal.records().iter().cloned());
        for checkpoint in std::mem::take(&mut out.checkpoints) {
            match checkpoint {
                AppliedCheckpoint::Split(split) => self.write_split(io, *split),
                AppliedCheckpoint::Membership(region) => io.write_checkpoint(*region),
            }
        }
        for snapshot in self.snapshot_writes.drain(..) {
            io.write_checkpoint(snapshot);
        }
        for region_id in self.peers.removed() {
            let Some(conf_ver) = self
                .peers
                .get(&region_id)
                .map(|p| p.region().epoch.conf_ver)
            else {
                continue;
            };
            self.destroy_region(region_id, conf_ver, false)?;
        }
        for remains in self.remains.drain(..) {
            io.clean_up(remains);
        }
        // Commit-index updates learnt in phase two ride with the next batch.
        if std::mem::take(&mut self.checkpoint_scan_due) {
            self.start_due_checkpoints(io);
        }
        if std::mem::take(&mut self.idle_checkpoints_due) {
            self.checkpoint_idle_regions(io);
        }
        Ok(())
    }

    /// Starts the checkpoints that are due, at the first turn after each
    /// tick: a region's once it applied `checkpoint_every_entries` since
    /// its last, and, while the logs the shard's awake regions hold in
    /// memory come to more than `log_memory_per_shard`, the largest ones'
    /// until the rest fit. Without that bound many regions taking writes
    /// would each keep up to `checkpoint_every_entries` in memory (and in
    /// the WAL): a shard's log memory would grow with its region count.
    /// Logs whose checkpoint is being written are not counted; they are
    /// released when it is done. An asleep region applied nothing since it
    /// last checked; the idle sweep releases its log.
    fn start_due_checkpoints(&mut self, io: &mut impl ShardIo) {
        let mut held = 0;
        let mut logs = Vec::new();
        for id in self.peers.awake() {
            let Some(mut peer) = self.peers.get_mut(&id) else {
                continue;
            };
            if let Some(cp) = peer.checkpoint_if_due(self.cfg.checkpoint_every_entries) {
                io.write_checkpoint(cp);
            } else if let Some(bytes) = peer.releasable_log_bytes() {
                held += bytes;
                logs.push((bytes, id));
            }
        }
        if held <= self.cfg.log_memory_per_shard {
            return;
        }
        logs.sort_unstable_by(|a, b| b.cmp(a));
        for (bytes, id) in logs {
            if held <= self.cfg.log_memory_per_shard {
                break;
            }
            if let Some(mut peer) = self.peers.get_mut(&id) {
                io.write_checkpoint(peer.checkpoint());
                held -= bytes;
            }
        }
    }

    /// Checkpoints asleep regions whose log holds entries their checkpoint
    /// does not (up to [`IDLE_CHECKPOINTS_PER_SWEEP`]): without it an idle
    /// region's log would stay in memory, and pin the WAL segments holding
    /// it, until it applied `checkpoint_every_entries` more. A region with
    /// writes now and then is checkpointed at most once per sweep interval.
    fn checkpoint_idle_regions(&mut self, io: &mut impl ShardIo) {
        let due: Vec<u64> = self
            .peers
            .values()
            .filter(|peer| peer.wants_idle_checkpoint())
            .map(|peer| peer.region().id)
            .take(IDLE_CHECKPOINTS_PER_SWEEP)
            .collect();
        for id in due {
            if let Some(mut peer) = self.peers.get_mut(&id) {
                io.write_checkpoint(peer.checkpoint());
            }
        }
    }

    /// Checks that every region is filed by its state (the invariants of
    /// `shard_peers`): for tests and the simulator, which call it between
    /// turns; it visits every region.
    pub fn check_filing(&self) -> Result<(), String> {
        self.peers.check_filing()
    }

    /// Destroys the replicas of the merge sources regions of this shard
    /// are about to absorb (see `peer::merge`), right after the region
    /// that asked, before any other region applies anything: on this shard
    /// at once, and the target resumes its apply; on another shard by
    /// message, and the target resumes when the answer comes.
    fn release_merge_sources(&mut self, out: &mut TurnOutput) -> Result<(), RaftstoreError> {
        // A resumed target may hold again, at a later `CommitMerge`.
        while !out.merge_releases.is_empty() {
            for release in std::mem::take(&mut out.merge_releases) {
                if self.ask_release_elsewhere(release) {
                    continue;
                }
                self.destroy_merge_source(release)?;
                if let Some(mut target) = self.peers.get_mut(&release.target) {
                    target.source_released(release.source);
                    target.resume_held_apply(out)?;
                }
            }
        }
        Ok(())
    }

    /// When another shard runs `release.source`, asks it to destroy its
    /// replica and answer this one, and returns true; false when this
    /// shard runs the source.
    fn ask_release_elsewhere(&mut self, release: MergeRelease) -> bool {
        let shard = self.cfg.shard_of(release.source);
        if shard == self.shard_index {
            return false;
        }
        self.shard_outbox.push((
            shard,
            ShardMsg::ReleaseMergeSource {
                release,
                reply_to: self.shard_index,
            },
        ));
        true
    }

    /// Destroys this shard's replica of a merge source, keeping its data
    /// (the target's now), with a tombstone no message, checkpoint or
    /// snapshot of the source passes.
    fn destroy_merge_source(&mut self, release: MergeRelease) -> Result<(), RaftstoreError> {
        debug_assert_eq!(self.cfg.shard_of(release.source), self.shard_index);
        if self.peers.contains_key(&release.source) {
            tracing::info!(
                region = release.source,
                target = release.target,
                "destroying the replica of a region merged away"
            );
        }
        self.destroy_region(release.source, MERGED_TOMBSTONE_CONF_VER, true)
    }

    /// Proposes `PrepareMerge` on `source_id`'s leader once the checks of
    /// `crate::merge` pass with both regions' replicas of this store.
    fn prepare_merge(&mut self, source_id: u64, target_id: u64, reply: WriteReply, now: Instant) {
        match self.merge_proposal(source_id, target_id) {
            Ok(Ok(cmd)) => {
                if let Some(mut source) = self.peers.get_mut(&source_id) {
                    source.propose_write(cmd, reply, now);
                }
            }
            Ok(Err(frozen)) => {
                let _ = reply.send(Ok(crate::command::WriteResult::Region(frozen)));
            }
            Err(err) => {
                let _ = reply.send(Err(err));
            }
        }
    }

    /// The `PrepareMerge` command to propose, or (inner `Err`) the frozen
    /// source if it is already frozen for this target.
    fn merge_proposal(
        &self,
        source_id: u64,
        target_id: u64,
    ) -> Result<Result<WriteCommand, RegionMeta>, RaftstoreError> {
        let me = self.cfg.node_id;
        let source = self
            .peers
            .get(&source_id)
            .filter(|p| p.is_initialized())
            .ok_or(RaftstoreError::RegionNotFound {
                region_id: source_id,
            })?;
        if source.leader_store() != Some(me) {
            return Err(RaftstoreError::NotLeader {
                region_id: source_id,
                leader: source.leader_store(),
            });
        }
        if let Some(target) = source.merging() {
            if target.id == target_id {
                return Ok(Err(source.region().clone()));
            }
            return Err(RaftstoreError::Refused(format!(
                "region {source_id} is already merging into region {}",
                target.id
            )));
        }
        let no_replica = || {
            RaftstoreError::Refused(format!(
                "store {me} holds no replica of region {target_id}; move replicas so both regions have the same stores first"
            ))
        };
        if self.cfg.shard_of(target_id) == self.shard_index {
            let target = self
                .peers
                .get(&target_id)
                .filter(|p| p.is_initialized())
                .ok_or_else(no_replica)?;
            if target.merging().is_some() {
                return Err(RaftstoreError::Refused(format!(
                    "region {target_id} is itself merging; retry once that merge completes"
                )));
            }
            if source.has_pending_conf_change() || target.has_pending_conf_change() {
                return Err(RaftstoreError::Unavailable(format!(
                    "a membership change of region {source_id} or {target_id} is in progress; retry once it completes"
                )));
            }
            crate::merge::check_merge(
                source.region(),
                source.conf_state(),
                target.region(),
                target.conf_state(),
            )?;
        } else {
            // Another shard runs the target: judged by its metadata, as
            // `PrepareMerge` is applied (the target refuses `CommitMerge`
            // if its configuration does not fit after all).
            let target = self.region_map.get(target_id).ok_or_else(no_replica)?;
            if source.has_pending_conf_change() {
                return Err(RaftstoreError::Unavailable(format!(
                    "a membership change of region {source_id} is in progress; retry once it completes"
                )));
            }
            crate::merge::check_merge(
                source.region(),
                source.conf_state(),
                &target,
                &crate::merge::voters_of(&target),
            )?;
        }
        let target = self.region_map.get(target_id).ok_or_else(no_replica)?;
        let region = source.region();
        let size = self.store.range_size(&region.start_key, &region.end_key);
        let carried = crate::merge::carried_bytes(size.keys, size.bytes);
        if carried > crate::merge::MERGE_SOURCE_BYTES_MAX as u64 {
            return Err(RaftstoreError::Refused(format!(
                "region {source_id} holds {carried} bytes; a merge carries at most {} bytes: merge smaller regions, or delete data first",
                crate::merge::MERGE_SOURCE_BYTES_MAX
            )));
        }
        Ok(Ok(WriteCommand {
            header: RequestHeader {
                region_id: source_id,
                epoch: Some(region.epoch),
            },
            id: WriteId::default(),
            answered_below: 0,
            op: WriteOp::PrepareMerge {
                target: RegionMeta::clone(&target),
            },
        }))
    }

    /// Proposes the splits requested since the last turn, each with a
    /// fresh region id.
    fn propose_splits(&mut self, io: &mut impl ShardIo) -> Result<(), RaftstoreError> {
        for request in std::mem::take(&mut self.splits) {
            let (reply, _ignored) = oneshot::channel();
            let reply = request.reply.unwrap_or(reply);
            let Some(mut peer) = self.peers.get_mut(&request.region_id) else {
                let _ = reply.send(Err(RaftstoreError::RegionNotFound {
                    region_id: request.region_id,
                }));
                continue;
            };
            let epoch = request.epoch.unwrap_or(peer.region().epoch);
            let mut cmd = WriteCommand {
                header: RequestHeader {
                    region_id: request.region_id,
                    epoch: Some(epoch),
                },
                id: WriteId::default(),
                answered_below: 0,
                op: WriteOp::Split {
                    split_key: request.split_key,
                    new_region_id: 0,
                },
            };
            // Refused before an id is spent on it: a split retried while
            // the region has no leader yet, or under a stale epoch, would
            // otherwise skip an id per attempt.
            if let Err(err) = peer.may_propose(&cmd) {
                let _ = reply.send(Err(err));
                continue;
            }
            if let WriteOp::Split { new_region_id, .. } = &mut cmd.op {
                *new_region_id = io.allocate_region_id()?;
            }
            peer.propose_write(cmd, reply, request.at);
        }
        Ok(())
    }

    /// Takes size checks' measurements to their regions; a region that
    /// passed its limit is split at its middle key.
    fn take_size_measurements(&mut self, io: &mut impl ShardIo) {
        for measured in io.measured_regions() {
            let Some(mut peer) = self.peers.get_mut(&measured.region_id) else {
                continue;
            };
            let Some(split_key) = peer.on_size_measured(measured, self.cfg.split) else {
                continue;
            };
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
                at: self.clock,
            });
        }
    }

    /// Hands a split's checkpoints to the writer, the new region's first.
    fn write_split(&mut self, io: &mut impl ShardIo, split: SplitCheckpoints) {
        let created = split.created.map(|child| {
            io.write_checkpoint(child.checkpoint);
            child.region
        });
        self.splits_in_flight.push(SplitInFlight {
            parent: split.parent.region_id(),
            index: split.parent.applied_index(),
            created,
        });
        io.write_checkpoint(split.parent);
    }

    /// Feeds finished checkpoint writes back to their regions, and starts
    /// the regions whose split is durable. Returns the (region, index)
    /// pairs whose log may now be reclaimed.
    ///
    /// A split's checkpoint that cannot be written fails the turn, as a
    /// WAL batch that cannot be would: the new region cannot start, and
    /// a restart replays the split from the parent's log.
    fn finish_checkpoints(
        &mut self,
        io: &mut impl ShardIo,
        out: &mut TurnOutput,
    ) -> Result<Vec<(u64, u64)>, RaftstoreError> {
        let mut compacted = Vec::new();
        for done in io.finished_checkpoints() {
            let (id, index) = (done.region_id, done.applied_index);
            if self
                .snapshots_being_written
                .get(&id)
                .is_some_and(|s| s.index == index)
            {
                self.step_written_snapshot(id, index, done.result);
                continue;
            }
            let split = self.splits_in_flight.iter().position(|s| {
                (s.parent, s.index) == (id, index)
                    || s.created.as_ref().is_some_and(|c| {
                        (c.checkpoint.region.id, c.checkpoint.applied_index) == (id, index)
                    })
            });
            if let (Some(_), Err(err)) = (split, &done.result) {
                return Err(RaftstoreError::Internal(format!(
                    "checkpoint of region {id} at {index}, written for a split: {err}"
                )));
            }
            let created = match split {
                Some(at) if self.splits_in_flight[at].parent == id => {
                    self.splits_in_flight.remove(at).created
                }
                // The new region's own: its parent's comes next.
                Some(_) => continue,
                None => None,
            };
            if self.take_orphaned_checkpoint(id) {
                tracing::debug!(
                    region = id,
                    index,
                    "checkpoint of a destroyed replica written"
                );
            } else if let Some(mut peer) = self.peers.get_mut(&id) {
                match done.result {
                    Ok(()) => {
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
            if let Some(region) = created {
                self.add_region(io, region)?;
            }
        }
        Ok(compacted)
    }

    /// Whether the next checkpoint report of `region_id` is of a destroyed
    /// replica (see `orphaned_checkpoints`); counts it off if so.
    fn take_orphaned_checkpoint(&mut self, region_id: u64) -> bool {
        let Some(left) = self.orphaned_checkpoints.get_mut(&region_id) else {
            return false;
        };
        *left -= 1;
        if *left == 0 {
            self.orphaned_checkpoints.remove(&region_id);
        }
        true
    }

    /// The writer finished making the snapshot of `region_id` at `index`
    /// the region's checkpoint: the snapshot is stepped, to install
    /// without writing. One it could not write is dropped: writing it in
    /// the turn would fail as well, or hold up the shard; the leader
    /// sends it again after its snapshot timeout.
    fn step_written_snapshot(
        &mut self,
        region_id: u64,
        index: u64,
        written: Result<(), RaftstoreError>,
    ) {
        let Some(SnapshotBeingWritten {
            msg, mut decoded, ..
        }) = self.snapshots_being_written.remove(&region_id)
        else {
            return;
        };
        let (Some(msg), Some(mut peer)) = (msg, self.peers.get_mut(&region_id)) else {
            // Its replica was destroyed: the file the writer made goes with
            // the replica's remains (see `remains`). A snapshot sent to a
            // replica created since was dropped (see `step_into_peer`).
            self.release_accepted_snapshot(region_id);
            return;
        };
        match written {
            Ok(()) => {
                peer.snapshot_written(index, decoded.try_recv().ok().flatten());
                peer.step(msg);
            }
            Err(err) => {
                tracing::warn!(region = region_id, index, %err, "received snapshot not written; dropped");
                drop(peer);
                self.release_accepted_snapshot(region_id);
            }
        }
    }
}

/// A received snapshot the shard's writer is making its region's
/// checkpoint (see `ShardCore::step_into_peer`).
struct SnapshotBeingWritten {
    index: u64,
    /// Gone if the replica was destroyed meanwhile: the write's report is
    /// then only swallowed, so that a replica created later never takes
    /// it for its own.
    msg: Option<Message>,
    /// The snapshot decoded by the writer once written (dropped unsent if
    /// it could not decode it).
    decoded: oneshot::Receiver<RegionCheckpoint>,
}

/// What may be done with a snapshot for an uninitialized replica.
enum SnapshotCheck {
    /// Step it; it will install as this region (its range is reserved).
    Accept,
    /// It overlaps a region of this store; keep it until that splits.
    Hold,
    Undecodable(RaftstoreError),
    /// It is of a configuration this store was removed from.
    Removed,
}

/// The WAL record that discards the log of a destroyed region, whose
/// records (in log order) are `records`: a truncation at its commit index,
/// so the WAL may reclaim segments holding only its committed entries.
/// (Not at its last index: if the store is added to the region again, the
/// new replica's entries start above the old commit index, but may lie
/// below an old uncommitted tail.)
fn discard_destroyed_log(
    region_id: u64,
    records: &[&WalRecord],
) -> Result<Option<WalRecord>, RaftstoreError> {
    let hard_state = records
        .iter()
        .rev()
        .find(|r| r.kind == RecordKind::HardState)
        .map(|r| decode_hard_state(&r.payload))
        .transpose()?;
    Ok(hard_state
        .filter(|hs| hs.commit > 0)
        .map(|hs| discard_record(region_id, hs.commit)))
}

/// A truncation record discarding `region_id`'s log up to `index`.
fn discard_record(region_id: u64, index: u64) -> WalRecord {
    WalRecord {
        region_id,
        kind: RecordKind::Truncate,
        index,
        payload: encode_truncation(Truncation::DiscardAll),
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

#[cfg(test)]
mod merge_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::WriteResult;
    use crate::peer::NEW_REGION_INDEX;
    use engine::store::RangeDeletion;
    use raft::prelude::{ConfState, MessageType, Snapshot};

    /// A leader's snapshot of `region` for this store (node 1).
    pub(super) fn snapshot_message(region: RegionMeta) -> Box<Message> {
        snapshot_message_with(region, Vec::new())
    }

    /// A leader's snapshot of `region`, holding `pairs`, for this store.
    fn snapshot_message_with(region: RegionMeta, pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Box<Message> {
        let voters = vec![1, 2, 3];
        let checkpoint = RegionCheckpoint {
            region,
            applied_index: 20,
            applied_term: 6,
            conf_state: ConfState {
                voters: voters.clone(),
                ..Default::default()
            },
            sessions: Default::default(),
            merging: None,
            pairs,
        };
        let mut snapshot = Snapshot::default();
        snapshot.mut_metadata().index = 20;
        snapshot.mut_metadata().term = 6;
        snapshot.mut_metadata().mut_conf_state().voters = voters;
        snapshot.data = checkpoint.encode().expect("encodes").into();
        let mut msg = Message::default();
        msg.set_msg_type(MessageType::MsgSnapshot);
        msg.from = 2;
        msg.to = 1;
        msg.term = 6;
        msg.set_snapshot(snapshot);
        Box::new(msg)
    }

    fn region(id: u64, start: &[u8], end: &[u8]) -> RegionMeta {
        RegionMeta {
            id,
            start_key: start.to_vec(),
            end_key: end.to_vec(),
            ..RegionMeta::whole_keyspace(id, &[1, 2, 3])
        }
    }

    /// A disk that syncs at once, and a network and other shards that keep
    /// what they are given.
    #[derive(Default)]
    pub(super) struct RecordingIo {
        pub(super) sent: Vec<(u64, Vec<(u64, Message)>)>,
        pub(super) to_shards: Vec<(usize, ShardMsg)>,
        /// (region, applied index) of every checkpoint started.
        pub(super) checkpoints: Vec<(u64, u64)>,
        /// The checkpoints started, for a test to write.
        pub(super) started: Vec<PendingCheckpoint>,
        /// Checkpoint writes to report finished at the next turn.
        pub(super) finished: Vec<CheckpointDone>,
        /// The id the next split gets; without one, splits are refused.
        pub(super) next_region_id: Option<u64>,
        /// What is left of destroyed replicas, for a test to clean up.
        pub(super) remains: Vec<ReplicaRemains>,
    }

    impl ShardIo for RecordingIo {
        async fn persist(&mut self, _batch: &WalBatch) -> Result<(), RaftstoreError> {
            Ok(())
        }
        fn send(&mut self, to_node: u64, messages: Vec<(u64, Message)>) {
            self.sent.push((to_node, messages));
        }
        fn write_checkpoint(&mut self, checkpoint: PendingCheckpoint) {
            self.checkpoints
                .push((checkpoint.region_id(), checkpoint.applied_index()));
            self.started.push(checkpoint);
        }
        fn finished_checkpoints(&mut self) -> Vec<CheckpointDone> {
            std::mem::take(&mut self.finished)
        }
        fn clean_up(&mut self, remains: ReplicaRemains) {
            self.remains.push(remains);
        }
        fn measure_region(&mut self, _check: SizeCheck) {}
        fn measured_regions(&mut self) -> Vec<SizeMeasured> {
            Vec::new()
        }
        async fn log_compacted(&mut self, _compacted: &[(u64, u64)]) -> Result<(), RaftstoreError> {
            Ok(())
        }
        fn allocate_region_id(&mut self) -> Result<u64, RaftstoreError> {
            self.next_region_id
                .take()
                .ok_or_else(|| RaftstoreError::Internal("no split expected".into()))
        }
        fn to_shard(&mut self, shard: usize, msg: ShardMsg) {
            self.to_shards.push((shard, msg));
        }
    }

    /// Store 1's single shard, running `regions` (voters as given) from
    /// their checkpoints at index 5, term 5.
    fn shard_with(regions: &[(u64, &[u64])], now: Instant) -> ShardCore {
        let dir = std::env::temp_dir().join(format!(
            "flotilla-shard-core-awake-{}-{}",
            std::process::id(),
            regions[0].0
        ));
        let mut cfg = StoreConfig::new(1, dir.clone(), Vec::new());
        cfg.shards = 1;
        let checkpoints = regions
            .iter()
            .map(|&(id, voters)| {
                RegionCheckpoint::new_region(
                    RegionMeta::whole_keyspace(id, voters),
                    ConfState {
                        voters: voters.to_vec(),
                        ..Default::default()
                    },
                    Default::default(),
                )
            })
            .collect();
        ShardCore::recover(
            Arc::new(cfg),
            0,
            checkpoints,
            Arc::new(KvStore::new()),
            Arc::new(RegionMap::new()),
            &[],
            dir,
            now,
        )
        .expect("the shard starts")
    }

    /// One tick and one turn at `now`, with the filing checked after both.
    fn tick_and_turn(core: &mut ShardCore, io: &mut RecordingIo, now: Instant) {
        core.on_clock(now);
        assert_eq!(core.check_filing(), Ok(()));
        futures::executor::block_on(core.turn(io)).expect("the turn succeeds");
        assert_eq!(core.check_filing(), Ok(()));
    }

    /// Ticks until `done` holds, at most `ticks_max` ticks; returns the time
    /// reached.
    fn tick_until(
        core: &mut ShardCore,
        io: &mut RecordingIo,
        mut now: Instant,
        ticks_max: u32,
        done: impl Fn(&ShardCore) -> bool,
    ) -> Instant {
        for _ in 0..ticks_max {
            if done(core) {
                return now;
            }
            now += core.cfg.tick;
            tick_and_turn(core, io, now);
        }
        assert!(done(core), "not reached within {ticks_max} ticks");
        now
    }

    /// A vote request from store 2 for region 31, in `term`.
    fn vote_request(kind: MessageType, term: u64, context: &[u8]) -> ShardMsg {
        let mut msg = Message::default();
        msg.set_msg_type(kind);
        msg.from = 2;
        msg.to = 1;
        msg.term = term;
        msg.log_term = 5;
        msg.index = 5;
        msg.context = context.to_vec().into();
        ShardMsg::Raft {
            region_id: 31,
            msg: Box::new(msg),
        }
    }

    /// Takes the answers to vote and pre-vote requests sent so far.
    fn vote_answers(io: &mut RecordingIo) -> usize {
        std::mem::take(&mut io.sent)
            .into_iter()
            .flat_map(|(_, msgs)| msgs)
            .filter(|(_, m)| {
                matches!(
                    m.get_msg_type(),
                    MessageType::MsgRequestVoteResponse | MessageType::MsgRequestPreVoteResponse
                )
            })
            .count()
    }

    /// A store that restarted may have acknowledged a leader's lease and
    /// forgotten when: it answers no vote or pre-vote for an election
    /// timeout after it starts, except a leadership transfer's.
    #[test]
    fn a_store_answers_votes_only_an_election_timeout_after_it_starts() {
        let start = Instant::now();
        let mut core = shard_with(&[(31, &[1, 2, 3])], start);
        let mut io = RecordingIo::default();
        let early = start + core.cfg.tick;
        core.handle(vote_request(MessageType::MsgRequestPreVote, 6, b""), early);
        core.handle(vote_request(MessageType::MsgRequestVote, 6, b""), early);
        futures::executor::block_on(core.turn(&mut io)).expect("the turn succeeds");
        assert_eq!(vote_answers(&mut io), 0, "refused while just started");

        let transfer = vote_request(MessageType::MsgRequestVote, 6, raft::CAMPAIGN_TRANSFER);
        core.handle(transfer, early);
        futures::executor::block_on(core.turn(&mut io)).expect("the turn succeeds");
        assert_eq!(vote_answers(&mut io), 1, "a transfer's vote is answered");

        let later = start + core.cfg.election_timeout();
        core.handle(vote_request(MessageType::MsgRequestPreVote, 8, b""), later);
        futures::executor::block_on(core.turn(&mut io)).expect("the turn succeeds");
        assert_eq!(vote_answers(&mut io), 1, "answered an election timeout on");
    }

    /// A single-voter region elects itself, hibernates and leaves the awake
    /// set; a write wakes it, is served, and it falls asleep again.
    #[test]
    fn a_region_is_awake_until_it_sleeps_and_again_once_a_write_wakes_it() {
        let mut now = Instant::now();
        let mut core = shard_with(&[(21, &[1])], now);
        let mut io = RecordingIo::default();
        assert_eq!(core.peers.awake(), vec![21], "a started region is awake");
        now = tick_until(&mut core, &mut io, now, 100, |core| {
            core.peers.get(&21).is_some_and(Peer::is_asleep)
        });
        assert!(core.peers.awake().is_empty());
        assert_eq!(core.status()[0].leader_id, 1);

        let mut answer = put(&mut core, 21, b"k", b"v", now);
        assert_eq!(core.peers.awake(), vec![21], "a write wakes the region");
        assert_eq!(core.check_filing(), Ok(()));
        now = tick_until(&mut core, &mut io, now, 10, |core| {
            core.store.get(b"k").is_some()
        });
        assert!(matches!(answer.try_recv(), Ok(Some(Ok(_)))));
        tick_until(&mut core, &mut io, now, 100, |core| {
            core.peers.awake().is_empty()
        });
    }

    /// Hands the shard a put of `key` in `region_id`; returns its answer.
    fn put(
        core: &mut ShardCore,
        region_id: u64,
        key: &[u8],
        value: &[u8],
        now: Instant,
    ) -> oneshot::Receiver<Result<WriteResult, RaftstoreError>> {
        let (reply, answer) = oneshot::channel();
        let cmd = WriteCommand {
            header: RequestHeader {
                region_id,
                epoch: None,
            },
            id: WriteId::default(),
            answered_below: 0,
            op: WriteOp::Put {
                key: key.to_vec(),
                value: value.to_vec(),
            },
        };
        let cmd = Box::new(cmd);
        core.handle(
            ShardMsg::Write {
                region_id,
                cmd,
                reply,
            },
            now,
        );
        answer
    }

    /// While the logs of the shard's awake regions hold more memory than
    /// the budget, the regions holding the most are checkpointed, largest
    /// first, however few entries they applied, until the rest fit; a log
    /// whose checkpoint is being written no longer counts, and once it is
    /// compacted nothing more is due.
    #[test]
    fn logs_over_the_shard_budget_checkpoint_the_largest_regions() {
        let mut now = Instant::now();
        let mut core = shard_with(&[(81, &[1]), (82, &[1]), (83, &[1])], now);
        Arc::make_mut(&mut core.cfg).log_memory_per_shard = 4 << 10;
        let mut io = RecordingIo::default();
        now = tick_until(&mut core, &mut io, now, 100, |core| {
            [81, 82, 83]
                .iter()
                .all(|id| core.peers.get(id).is_some_and(Peer::is_leader))
        });
        assert_eq!(io.checkpoints, vec![], "the elections' entries fit");

        // 81 holds over 6 KiB, 83 over 4 KiB, 82 a few hundred bytes: once
        // 81's log is released the rest still exceed 4 KiB; once 83's is,
        // they fit.
        let _small = put(&mut core, 82, b"small", &[1; 100], now);
        let writes = [(81, b'l', 3), (83, b'm', 2)];
        let _large: Vec<_> = writes
            .into_iter()
            .flat_map(|(id, prefix, n)| (0..n).map(move |i| (id, [prefix, i])))
            .map(|(id, key)| put(&mut core, id, &key, &[2; 2 << 10], now))
            .collect();
        now = tick_until(&mut core, &mut io, now, 10, |core| {
            [&b"small"[..], &[b'l', 2], &[b'm', 1]]
                .iter()
                .all(|key| core.store.get(key).is_some())
        });
        let applied =
            |core: &ShardCore, id| core.peers.get(&id).map_or(0, |p| p.status().applied_index);
        let (applied_81, applied_83) = (applied(&core, 81), applied(&core, 83));
        assert_eq!(
            io.checkpoints,
            vec![(81, applied_81), (83, applied_83)],
            "the largest logs, until the rest fit"
        );

        for _ in 0..3 {
            now += core.cfg.tick;
            tick_and_turn(&mut core, &mut io, now);
        }
        assert_eq!(
            io.checkpoints.len(),
            2,
            "the logs being checkpointed do not count"
        );
        for (region_id, applied_index) in [(81, applied_81), (83, applied_83)] {
            io.finished.push(CheckpointDone {
                region_id,
                applied_index,
                result: Ok(()),
            });
        }
        now += core.cfg.tick;
        tick_and_turn(&mut core, &mut io, now);
        let log = |id| core.peers.get(&id).and_then(Peer::releasable_log_bytes);
        assert_eq!((log(81), log(83)), (None, None), "compacted");
        assert!(log(82).is_some_and(|bytes| bytes < 4 << 10));
        assert_eq!(io.checkpoints.len(), 2, "nothing more is due");
    }

    /// An asleep region whose log holds entries its checkpoint does not is
    /// checkpointed by the next idle sweep, without waking; once that
    /// checkpoint is durable, later sweeps leave it alone until it applies
    /// more.
    #[test]
    fn an_asleep_region_is_checkpointed_once_per_applied_change() {
        let mut now = Instant::now();
        let mut core = shard_with(&[(61, &[1])], now);
        let sweep_ticks = 20;
        Arc::make_mut(&mut core.cfg).idle_checkpoint_interval = core.cfg.tick * sweep_ticks;
        let mut io = RecordingIo::default();
        let asleep = |core: &ShardCore| core.peers.get(&61).is_some_and(Peer::is_asleep);
        now = tick_until(&mut core, &mut io, now, 100, asleep);
        // Its election's entry (index 6) is in no checkpoint yet.
        for _ in 0..=sweep_ticks {
            if !io.checkpoints.is_empty() {
                break;
            }
            now += core.cfg.tick;
            tick_and_turn(&mut core, &mut io, now);
        }
        assert_eq!(io.checkpoints, vec![(61, 6)], "within one sweep interval");
        assert!(asleep(&core), "a checkpoint does not wake the region");
        io.finished.push(CheckpointDone {
            region_id: 61,
            applied_index: 6,
            result: Ok(()),
        });
        for _ in 0..3 * sweep_ticks {
            now += core.cfg.tick;
            tick_and_turn(&mut core, &mut io, now);
        }
        assert_eq!(io.checkpoints, vec![(61, 6)], "nothing new to checkpoint");
        assert!(asleep(&core));
    }

    /// Store 1's single shard running region `id` alone, once it applied
    /// a split at `m` that gives the right half region `new_id`; with the
    /// split's answer.
    fn split_applied(
        id: u64,
        new_id: u64,
    ) -> (
        ShardCore,
        RecordingIo,
        Instant,
        oneshot::Receiver<Result<WriteResult, RaftstoreError>>,
    ) {
        let mut now = Instant::now();
        let mut core = shard_with(&[(id, &[1])], now);
        let mut io = RecordingIo {
            next_region_id: Some(new_id),
            ..RecordingIo::default()
        };
        now = tick_until(&mut core, &mut io, now, 100, |core| {
            core.peers.get(&id).is_some_and(Peer::is_leader)
        });
        let (reply, answer) = oneshot::channel();
        core.handle(
            ShardMsg::Split {
                region_id: id,
                epoch: core.peers.get(&id).map(|p| p.region().epoch),
                split_key: b"m".to_vec(),
                reply,
            },
            now,
        );
        now = tick_until(&mut core, &mut io, now, 10, |core| {
            core.peers
                .get(&id)
                .is_some_and(|p| p.region().end_key == b"m")
        });
        (core, io, now, answer)
    }

    /// A split applies at once, but the region it creates starts only once
    /// its checkpoints are durable: the writer gets the new region's
    /// first, then the parent's at the split index, and the new region
    /// starts when the parent's is reported written. (Were it to start
    /// earlier, a crash could leave its log beside no checkpoint of its
    /// own, and recovery would drop entries it acknowledged.)
    #[test]
    fn a_split_region_starts_once_its_checkpoints_are_durable() {
        let (mut core, mut io, now, mut answer) = split_applied(71, 72);
        assert!(
            matches!(answer.try_recv(), Ok(Some(Ok(_)))),
            "answered once applied"
        );
        let split_index = io.checkpoints.last().map_or(0, |&(_, index)| index);
        assert!(split_index > NEW_REGION_INDEX);
        assert_eq!(
            io.checkpoints,
            vec![(72, NEW_REGION_INDEX), (71, split_index)],
            "the new region's checkpoint goes first"
        );
        let start_when = |io: &mut RecordingIo, core: &mut ShardCore, done: CheckpointDone| {
            io.finished.push(done);
            tick_and_turn(core, io, now + core.cfg.tick);
            core.peers.get(&72).is_some()
        };
        assert!(
            core.peers.get(&72).is_none(),
            "not started before its checkpoint"
        );
        let child_done = CheckpointDone {
            region_id: 72,
            applied_index: NEW_REGION_INDEX,
            result: Ok(()),
        };
        assert!(
            !start_when(&mut io, &mut core, child_done),
            "nor before the parent's"
        );
        let parent_done = CheckpointDone {
            region_id: 71,
            applied_index: split_index,
            result: Ok(()),
        };
        assert!(
            start_when(&mut io, &mut core, parent_done),
            "started after both"
        );
        assert_eq!(
            core.peers.get(&72).map(|p| p.region().start_key.clone()),
            Some(b"m".to_vec())
        );
    }

    /// A split the region would refuse (here: no leader yet) is answered
    /// without spending a region id, so retries do not skip ids.
    #[test]
    fn a_refused_split_spends_no_region_id() {
        let now = Instant::now();
        let mut core = shard_with(&[(75, &[1, 2, 3])], now);
        let mut io = RecordingIo {
            next_region_id: Some(76),
            ..RecordingIo::default()
        };
        let (reply, mut answer) = oneshot::channel();
        core.handle(
            ShardMsg::Split {
                region_id: 75,
                epoch: None,
                split_key: b"m".to_vec(),
                reply,
            },
            now,
        );
        tick_and_turn(&mut core, &mut io, now);
        assert!(
            matches!(
                answer.try_recv(),
                Ok(Some(Err(RaftstoreError::NotLeader { .. })))
            ),
            "refused: no leader"
        );
        assert_eq!(io.next_region_id, Some(76), "no id spent");
    }

    /// A split's checkpoint that cannot be written stops the shard: the
    /// new region cannot start, and a restart replays the split.
    #[test]
    fn a_split_checkpoint_that_fails_fails_the_turn() {
        let (mut core, mut io, now, _answer) = split_applied(73, 74);
        io.finished.push(CheckpointDone {
            region_id: 74,
            applied_index: NEW_REGION_INDEX,
            result: Err(RaftstoreError::Internal("disk full".into())),
        });
        core.on_clock(now + core.cfg.tick);
        let failed = futures::executor::block_on(core.turn(&mut io));
        assert!(
            matches!(&failed, Err(err) if err.to_string().contains("disk full")),
            "{failed:?}"
        );
    }

    /// A status request for some regions builds only theirs; the counts
    /// agree with the full status.
    #[test]
    fn status_scopes_and_counts_name_the_regions_asked_for() {
        let now = Instant::now();
        let mut core = shard_with(&[(41, &[1]), (42, &[1, 2, 3])], now);
        let mut io = RecordingIo::default();
        tick_until(&mut core, &mut io, now, 100, |core| {
            core.peers.get(&41).is_some_and(Peer::is_leader)
        });
        let ids =
            |scope| -> Vec<u64> { core.status_in(scope).iter().map(|s| s.region.id).collect() };
        assert_eq!(ids(StatusScope::All), vec![41, 42]);
        assert_eq!(ids(StatusScope::Leading), vec![41]);
        assert_eq!(ids(StatusScope::Region(42)), vec![42]);
        assert_eq!(ids(StatusScope::Region(43)), Vec::<u64>::new());
        assert_eq!(ids(StatusScope::LeadingFrozen), Vec::<u64>::new());
        assert_eq!(
            core.region_counts(),
            RegionCounts {
                regions: 2,
                leaders: 1
            }
        );
    }

    /// The hibernation heartbeat of a leader on store 2, stepped into store
    /// 1's replica of a three-voter region.
    fn hibernation_heartbeat() -> Box<Message> {
        let mut msg = Message::default();
        msg.set_msg_type(MessageType::MsgHeartbeat);
        msg.from = 2;
        msg.to = 1;
        msg.term = 6;
        msg.commit = 5;
        msg.context = crate::peer::HIBERNATE_CONTEXT.to_vec().into();
        Box::new(msg)
    }

    /// Asleep followers are not ticked, but are filed by their leader's
    /// store: while it pings they sleep on; once it has been silent for an
    /// election timeout they wake (and tell the leader, should it be alive
    /// after all), and only the regions it leads do.
    #[test]
    fn asleep_followers_wake_when_their_leaders_store_falls_silent() {
        let mut now = Instant::now();
        let mut core = shard_with(&[(31, &[1, 2, 3]), (32, &[1, 2, 3])], now);
        let liveness = Arc::new(NodeLiveness::new());
        core.set_liveness(liveness.clone());
        let mut io = RecordingIo::default();
        liveness.heard(2, now);
        core.handle(
            ShardMsg::Raft {
                region_id: 31,
                msg: hibernation_heartbeat(),
            },
            now,
        );
        assert!(core.peers.get(&31).is_some_and(Peer::is_hibernating));
        assert_eq!(
            core.peers.awake(),
            vec![31, 32],
            "awake until its answer is sent"
        );
        now += core.cfg.tick;
        tick_and_turn(&mut core, &mut io, now);
        assert_eq!(core.peers.awake(), vec![32]);
        assert_eq!(core.peers.asleep_led_by(|store| store == 2), vec![31]);

        // Store 2 keeps pinging: region 31 sleeps through many ticks.
        for _ in 0..3 * core.cfg.election_ticks {
            now += core.cfg.tick;
            liveness.heard(2, now);
            tick_and_turn(&mut core, &mut io, now);
            assert!(!core.peers.awake().contains(&31));
        }
        // Store 2 falls silent.
        io.sent.clear();
        let silent_from = now;
        now = tick_until(&mut core, &mut io, now, 100, |core| {
            core.peers.awake().contains(&31)
        });
        assert!(now - silent_from > core.cfg.election_timeout());
        let to_leader: Vec<MessageType> = io
            .sent
            .iter()
            .filter(|(to, _)| *to == 2)
            .flat_map(|(_, msgs)| msgs.iter())
            .filter(|(region, _)| *region == 31)
            .map(|(_, m)| m.get_msg_type())
            .collect();
        assert!(
            to_leader.contains(&MessageType::MsgHeartbeatResponse),
            "the woken follower tells its leader: {to_leader:?}"
        );
    }

    /// Store 1's shard leading region 91 alone, which applied `key` =
    /// `value`; and the time reached.
    fn region_91_with(key: &[u8], value: &[u8]) -> (ShardCore, RecordingIo, Instant) {
        let mut now = Instant::now();
        let mut core = shard_with(&[(91, &[1])], now);
        let mut io = RecordingIo::default();
        now = tick_until(&mut core, &mut io, now, 100, |core| {
            core.peers.get(&91).is_some_and(Peer::is_leader)
        });
        let _written = put(&mut core, 91, key, value, now);
        now = tick_until(&mut core, &mut io, now, 10, |core| {
            core.store.get(key).is_some()
        });
        (core, io, now)
    }

    /// A replica destroyed while its checkpoint is being written, and
    /// created again (by a message from the region's leader) before the
    /// writer reports it: the report is the destroyed replica's, and the
    /// new one, which has no log, does not compact anything on its word.
    #[test]
    fn a_checkpoint_of_a_destroyed_replica_is_no_one_elses() {
        let (mut core, mut io, mut now) = region_91_with(b"k", b"v");
        let Some(checkpoint) = core.peers.get_mut(&91).map(|mut peer| peer.checkpoint()) else {
            panic!("region 91 runs here");
        };
        let index = checkpoint.applied_index();
        core.destroy_region(91, 2, false).expect("destroyed");
        let mut heartbeat = Message::default();
        heartbeat.set_msg_type(MessageType::MsgHeartbeat);
        heartbeat.from = 2;
        heartbeat.to = 1;
        heartbeat.term = 9;
        core.handle(
            ShardMsg::Raft {
                region_id: 91,
                msg: Box::new(heartbeat),
            },
            now,
        );
        assert!(core.peers.get(&91).is_some(), "created again");
        io.finished.push(checkpoint.write(&core.checkpoint_dir));
        now += core.cfg.tick;
        tick_and_turn(&mut core, &mut io, now);
        assert!(!core.peers.get(&91).is_some_and(Peer::is_initialized));
        assert!(core.orphaned_checkpoints.is_empty());
        assert!(index > 5, "the checkpoint is past the new replica's log");
        // The file the late write left goes with the replica's remains.
        assert!(RegionCheckpoint::exists(&core.checkpoint_dir, 91));
        let [remains] = &io.remains[..] else {
            panic!("{} remains handed over", io.remains.len());
        };
        assert!(remains.checkpoint_written_late);
        for remains in io.remains.drain(..) {
            remains.clean_up(&core.checkpoint_dir);
        }
        assert!(!RegionCheckpoint::exists(&core.checkpoint_dir, 91));
        assert_eq!(core.store.get(b"k"), None, "its keys deleted");
    }

    /// Writes the checkpoint started last, as the shard's writer does, and
    /// reports it at the next turn; removes the file unless `keep`.
    fn write_last(core: &ShardCore, io: &mut RecordingIo, keep: bool) {
        let Some(write) = io.started.pop() else {
            panic!("no checkpoint started");
        };
        let done = write.write(&core.checkpoint_dir);
        if !keep {
            engine::checkpoint::remove(&core.checkpoint_dir, done.region_id).expect("removed");
        }
        io.finished.push(done);
    }

    /// A destroyed replica's keys are handed over to be deleted off the
    /// turn. A snapshot that takes the range over before the deletion runs
    /// finishes it first, so the deletion, run late, removes none of the
    /// snapshot's keys.
    #[test]
    fn a_destroyed_replicas_keys_are_deleted_off_the_turn() {
        let (mut core, mut io, now) = region_91_with(b"k", b"old");
        core.destroy_region(91, 2, false).expect("destroyed");
        tick_and_turn(&mut core, &mut io, now);
        let [ReplicaRemains {
            region_id: 91,
            keys: Some(keys),
            checkpoint_written_late: false,
        }] = &io.remains[..]
        else {
            panic!("{} remains handed over", io.remains.len());
        };
        assert_eq!(keys.range(), (&b""[..], &b""[..]));
        assert_eq!(
            core.store.get(b"k"),
            Some(b"old".to_vec()),
            "kept by the turn"
        );

        // Region 92 takes the whole key space over by snapshot.
        let pairs = vec![(b"k".to_vec(), b"new".to_vec())];
        let msg = snapshot_message_with(region(92, b"", b""), pairs);
        core.handle(ShardMsg::Raft { region_id: 92, msg }, now);
        tick_and_turn(&mut core, &mut io, now);
        write_last(&core, &mut io, true);
        tick_and_turn(&mut core, &mut io, now);
        assert!(core.peers.get(&92).is_some_and(Peer::is_initialized));
        assert_eq!(core.store.pending_deletions(), 0, "finished by the install");
        for remains in io.remains.drain(..) {
            assert_eq!(remains.keys.map(RangeDeletion::run), Some(0));
        }
        assert_eq!(core.store.get(b"k"), Some(b"new".to_vec()));
    }

    /// An empty shard of store 1, its checkpoints in a fresh directory.
    fn empty_shard(name: &str) -> ShardCore {
        let dir =
            std::env::temp_dir().join(format!("flotilla-shard-core-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut cfg = StoreConfig::new(1, dir.clone(), Vec::new());
        cfg.shards = 1;
        ShardCore::recover(
            Arc::new(cfg),
            0,
            Vec::new(),
            Arc::new(KvStore::new()),
            Arc::new(RegionMap::new()),
            &[],
            dir,
            Instant::now(),
        )
        .expect("an empty shard starts")
    }

    /// A snapshot the replica would install goes to the shard's writer
    /// first and is stepped only once the writer reports it durable; the
    /// install then writes nothing in the turn (the test removes the file
    /// the writer wrote, and none comes back). Until then its range counts
    /// as taken. One the writer could not write is dropped; one whose
    /// replica was destroyed meanwhile leaves no file behind.
    #[test]
    fn a_received_snapshot_is_written_by_the_writer_before_it_installs() {
        let now = Instant::now();
        let mut core = empty_shard("snapshot-writer");
        let mut io = RecordingIo::default();
        let msg = snapshot_message(region(10, b"", b"m"));
        let turn = |core: &mut ShardCore, io: &mut RecordingIo| {
            futures::executor::block_on(core.turn(io)).expect("the turn succeeds")
        };
        let deliver = |core: &mut ShardCore, region_id, msg| {
            core.handle(ShardMsg::Raft { region_id, msg }, now);
        };
        deliver(&mut core, 10, msg.clone());
        turn(&mut core, &mut io);
        assert_eq!(io.checkpoints, vec![(10, 20)], "handed to the writer");
        assert!(!core.peers.get(&10).is_some_and(Peer::is_initialized));
        assert!(core.accepted_snapshots.contains(&10), "its range is taken");
        // A second copy while the first is written is dropped.
        deliver(&mut core, 10, msg.clone());
        turn(&mut core, &mut io);
        assert_eq!(io.checkpoints, vec![(10, 20)]);

        write_last(&core, &mut io, false);
        turn(&mut core, &mut io);
        let Some(status) = core.peers.get(&10).map(Peer::status) else {
            panic!("the replica of region 10 is gone");
        };
        assert_eq!(status.applied_index, 20, "installed");
        assert!(
            !RegionCheckpoint::exists(&core.checkpoint_dir, 10),
            "the install wrote nothing"
        );
        assert!(core.accepted_snapshots.is_empty());

        // Region 11's snapshot could not be written: dropped, its range free.
        deliver(&mut core, 11, snapshot_message(region(11, b"m", b"")));
        turn(&mut core, &mut io);
        assert_eq!(io.checkpoints, vec![(10, 20), (11, 20)]);
        io.finished.push(CheckpointDone {
            region_id: 11,
            applied_index: 20,
            result: Err(RaftstoreError::Internal("disk full".into())),
        });
        turn(&mut core, &mut io);
        assert!(!core.peers.get(&11).is_some_and(Peer::is_initialized));
        assert!(core.snapshots_being_written.is_empty());
        assert!(core.accepted_snapshots.is_empty());

        // Region 12's replica is destroyed while its snapshot is written:
        // the file the writer made goes, and the report is no one's.
        deliver(&mut core, 12, snapshot_message(region(12, b"m", b"")));
        turn(&mut core, &mut io);
        core.destroy_region(12, 2, false).expect("destroyed");
        write_last(&core, &mut io, true);
        turn(&mut core, &mut io);
        for remains in io.remains.drain(..) {
            remains.clean_up(&core.checkpoint_dir);
        }
        assert!(!RegionCheckpoint::exists(&core.checkpoint_dir, 12));
        assert!(core.snapshots_being_written.is_empty());
        assert!(core.accepted_snapshots.is_empty());
    }

    /// A store that missed two splits gets the parent's pre-split snapshot
    /// and the child's in one turn: only the first may be stepped, or the
    /// parent would replay its old log over the child's keys.
    #[test]
    fn overlapping_snapshots_are_not_both_accepted_before_either_installs() {
        let mut core = empty_shard("overlapping-snapshots");
        let now = Instant::now();
        let parent = region(10, b"", b"");
        let child = region(11, b"m", b"");
        core.handle(
            ShardMsg::Raft {
                region_id: 10,
                msg: snapshot_message(parent.clone()),
            },
            now,
        );
        core.handle(
            ShardMsg::Raft {
                region_id: 11,
                msg: snapshot_message(child),
            },
            now,
        );
        assert!(core.accepted_snapshots.contains(&10));
        assert!(!core.accepted_snapshots.contains(&11));
        assert!(core.held_snapshots.contains_key(&11));
    }
}
