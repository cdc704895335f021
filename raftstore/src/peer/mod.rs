//! One replica of a region: a raft-rs `RawNode` plus the bookkeeping around
//! it — proposals waiting for apply, read batches waiting for ReadIndex,
//! the applied state and checkpoints.
//!
//! The peer does no I/O of its own except the checkpoint files a snapshot
//! install or a membership change writes (and, before those, the starting
//! checkpoints of regions split off it that the shard's writer may not have
//! written yet); the shard loop drives it in two phases per turn: [`Peer::collect_ready`]
//! (before the shard's WAL batch is synced) and [`Peer::after_persist`]
//! (after). Time comes in as arguments.
//!
//! Guarantees:
//! - a write is acknowledged only after it was applied, with the result the
//!   state machine produced; a proposal that lost its log slot is answered
//!   "not executed", one whose fate is unknown "indeterminate";
//! - a membership change is proposed only when none is in flight and it
//!   leaves a live majority of voters (see `membership`); it is applied by
//!   every replica at the same log position, with `conf_ver` moved on, and
//!   checkpointed there, so the snapshot a new replica receives already
//!   names it; a replica that applies its own removal marks itself removed
//!   (the shard destroys it);
//! - a read is served only by a leader, after a ReadIndex round confirmed by
//!   a quorum, once the applied index reached the read index;
//! - the applied index never passes the commit index;
//! - a region frozen for a merge (`merge`) serves no read and applies no
//!   write until the merge commits (the shard destroys it) or is rolled
//!   back; the frozen state is part of its checkpoint.

mod merge;

use merge::HeldApply;
pub use merge::{MergeRelease, MergeSource};

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::store::KvStore;
use engine::wal::{RecordKind, WalBatch, WalRecord};
use futures::channel::oneshot;
use protobuf::Message as _;
use raft::prelude::{ConfChange, ConfChangeV2, ConfState, Entry, EntryType, Message, Snapshot};
use raft::{ProgressState, RawNode, SnapshotStatus, StateRole};

use crate::apply::{apply_write, ApplyRejection, SessionTable};
use crate::checkpoint::{PendingCheckpoint, RegionCheckpoint};
use crate::command::{ReadOp, ReadResult, RequestHeader, WriteCommand, WriteOp, WriteResult};
use crate::config::StoreConfig;
use crate::error::RaftstoreError;
use crate::lease::LeaderLease;
use crate::log_codec::{encode_entries, encode_hard_state, encode_truncation, Truncation};
use crate::membership::{self, PeerChange};
use crate::region::{learners, members, RegionEpoch, RegionMeta};
use crate::region_map::RegionMap;
use crate::rules::{
    may_serve_read, may_start_read_index, proposal_fate, LogPosition, ProposalFate,
};
use crate::size_check::{SizeCheck, SizeMeasured};

pub type WriteReply = oneshot::Sender<Result<WriteResult, RaftstoreError>>;
pub type ReadReply = oneshot::Sender<Result<ReadResult, RaftstoreError>>;
/// Answered with the region's status once a membership change is applied
/// (and its joint configuration, if any, left).
pub type MembershipReply = oneshot::Sender<Result<RegionStatus, RaftstoreError>>;

/// What a shard turn collects from its peers: Raft messages to send and the
/// WAL records to make durable.
#[derive(Default)]
pub struct TurnOutput {
    /// (destination node, region, message).
    pub messages: Vec<(u64, u64, Message)>,
    pub wal: WalBatch,
    /// Checkpoints this turn's applies started, in log order, for the
    /// shard's writer (which keeps that order).
    pub checkpoints: Vec<AppliedCheckpoint>,
    /// Merge sources whose replica on this store the shard must destroy
    /// (keeping the data, which is the target's): a target holds its apply
    /// until that is done (see `merge`).
    pub merge_releases: Vec<MergeRelease>,
}

/// A checkpoint an applied entry started.
pub enum AppliedCheckpoint {
    /// A split's (see [`SplitCheckpoints`]): the regions it created start
    /// once they are durable.
    Split(Box<SplitCheckpoints>),
    /// The region at a membership change (see `Peer::change_membership`).
    Membership(Box<PendingCheckpoint>),
}

/// The checkpoints a split writes, in this order: the new region's
/// starting checkpoint (unless a replay of the split finds it written
/// already), then the parent's at the split index, with its new range.
/// The new region starts only once both are durable. Until then the only
/// crash-left overlap is the one recovery resolves (the new region's
/// checkpoint beside the parent's from before the split), and the new
/// region has no log that resolving it would drop.
pub struct SplitCheckpoints {
    pub created: Option<SplitChild>,
    pub parent: PendingCheckpoint,
}

/// A region a split created on this store, and its starting checkpoint.
pub struct SplitChild {
    pub checkpoint: PendingCheckpoint,
    pub region: NewRegion,
}

/// A region a split created on this store: its starting state (without
/// its data, which is already in the store).
pub struct NewRegion {
    pub checkpoint: RegionCheckpoint,
    /// This store led the parent when it split: the new region's replica
    /// here should campaign rather than wait out an election timeout.
    pub campaign: bool,
}

/// Log position a region made by a split starts at (like TiKV's), so that
/// it is never confused with a replica that has no state at all (index 0).
pub const NEW_REGION_INDEX: u64 = 5;
/// Term a region made by a split starts at.
pub const NEW_REGION_TERM: u64 = 5;

/// Context of the heartbeat a leader sends when its region goes idle: the
/// followers stop ticking until the region is woken (see [`Peer::step`]).
pub const HIBERNATE_CONTEXT: &[u8] = b"flotilla/hibernate";

/// Ticks in a row, with no request, an idle leader waits before it
/// hibernates: one election timeout at the default timing.
const HIBERNATE_AFTER_QUIET_TICKS: u32 = 10;

/// Context prefix of the answer a replica gives a store that is not in its
/// region's configuration, followed by the replica's epoch (`conf_ver`,
/// `version`, little-endian): "in this configuration you are not a member".
/// The recipient destroys its replica if its own `conf_ver` is older (see
/// `ShardCore::step`); the marker is never stepped into raft-rs.
pub const REMOVED_CONTEXT: &[u8] = b"flotilla/removed";

/// The marker telling store `to` that its replica is not in the
/// configuration `epoch` of the region, sent by replica `from`.
pub fn removed_marker(from: u64, to: u64, epoch: RegionEpoch) -> Message {
    let mut m = Message::default();
    m.set_msg_type(raft::prelude::MessageType::MsgHeartbeat);
    m.from = from;
    m.to = to;
    let mut context = REMOVED_CONTEXT.to_vec();
    context.extend_from_slice(&epoch.conf_ver.to_le_bytes());
    context.extend_from_slice(&epoch.version.to_le_bytes());
    m.context = context.into();
    m
}

/// The epoch a [`removed_marker`] carries; `None` for any other message.
pub fn parse_removed_marker(msg: &Message) -> Option<RegionEpoch> {
    let rest = msg.context.strip_prefix(REMOVED_CONTEXT)?;
    let (conf_ver, version) = rest.split_at_checked(8)?;
    Some(RegionEpoch {
        conf_ver: u64::from_le_bytes(conf_ver.try_into().ok()?),
        version: u64::from_le_bytes(version.try_into().ok()?),
    })
}

/// Ticks a new region's replica on the parent leader's store waits before
/// campaigning, so that the other replicas have applied the split too (a
/// vote request for a region a store does not have yet is dropped).
const NEW_REGION_CAMPAIGN_TICKS: u32 = 2;

struct PendingWrite {
    index: u64,
    term: u64,
    reply: WriteReply,
    deadline: Instant,
}

/// The membership change in flight (a leader proposes one at a time).
struct PendingConfChange {
    proposed: LogPosition,
    reply: MembershipReply,
    deadline: Instant,
    /// Its entry applied and entered a joint configuration: answered once
    /// the configuration is left (raft-rs proposes that by itself).
    entered_joint: bool,
}

/// How a read taken by a leader is confirmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadPath {
    /// On the leader's lease, with no round of its own.
    Lease,
    /// By a ReadIndex round.
    ReadIndex,
}

struct ReadBatch {
    ctx: u64,
    /// Each read with the routing it was sent with, checked again when it
    /// is served (the region may have split in between).
    reads: Vec<(RequestHeader, ReadOp, ReadReply)>,
    /// Set once a quorum confirmed leadership (or, for reads on the lease,
    /// at once): serve when applied >= it.
    read_index: Option<u64>,
    sent: bool,
    /// When the batch was opened: no later than its round's heartbeats
    /// left, so the lease a confirmation grants counts from here.
    opened: Instant,
    /// The term it was opened in: its round's confirmation grants a lease
    /// only if it comes in that term.
    term: u64,
    deadline: Instant,
}

/// A region's status as this replica sees it.
#[derive(Clone, Debug)]
pub struct RegionStatus {
    pub region: RegionMeta,
    pub leader_id: u64,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub role: &'static str,
    /// The region's learners (store ids), from its Raft configuration; the
    /// other peers vote.
    pub learners: Vec<u64>,
    /// On the leader, the stores whose replicas do not answer; filled by
    /// the shard, which knows which stores keep pinging.
    pub down_peers: Vec<u64>,
    /// As of the last size check (leaders check; 0 before the first).
    pub size: RegionSize,
    pub hibernating: bool,
    /// What this replica applied and served since it started (the
    /// placement heartbeats turn differences into rates).
    pub traffic: RegionTraffic,
    /// On a leader: the peers it can bring up to date only with a snapshot
    /// (their log position is below its first entry, or a snapshot is in
    /// flight). Empty on other replicas.
    pub pending_peers: Vec<u64>,
    /// The region is frozen for a merge into this region.
    pub merging_into: Option<u64>,
}

/// Cumulative counts of what a replica applied and served; they only grow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegionTraffic {
    /// Keys and bytes (keys plus values) of the writes it applied.
    pub written_keys: u64,
    pub written_bytes: u64,
    /// Keys its reads returned (a get counts one, found or not).
    pub read_keys: u64,
}

/// How much data a region holds, as of its last size check.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegionSize {
    pub keys: u64,
    pub bytes: u64,
}

/// When a region is too large and splits (at its middle key).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplitThresholds {
    pub keys: u64,
    pub bytes: u64,
}

pub struct Peer {
    /// Shared with the store's [`RegionMap`]; replaced whole when the
    /// region changes shape.
    region: Arc<RegionMeta>,
    raw: RawNode<crate::storage::RegionStorage>,
    store: Arc<KvStore>,
    sessions: SessionTable,
    applied_index: u64,
    applied_term: u64,
    writes: VecDeque<PendingWrite>,
    reads: Vec<ReadBatch>,
    next_read_ctx: u64,
    lease: LeaderLease,
    /// `StoreConfig::leader_lease`.
    lease_duration: Option<Duration>,
    hard_state_dirty: bool,
    /// The unsynced hard state changed term or vote: it must be in this
    /// turn's WAL batch.
    hard_state_urgent: bool,
    last_checkpoint_index: u64,
    /// Checkpoints of this region handed to the shard's writer and not yet
    /// reported back: a periodic or idle one, a split's.
    checkpoints_in_flight: u32,
    /// The starting checkpoints of regions split off this one that are not
    /// known to be durable yet, by split index: a second capture of each,
    /// written here before this region writes a checkpoint of its own in
    /// the turn (see [`Peer::write_split_children`]).
    split_children: Vec<(u64, PendingCheckpoint)>,
    /// A snapshot the shard's writer made this region's durable
    /// checkpoint before handing it here, by applied index, with its
    /// decoded form if the writer sent it: installing it writes nothing,
    /// and decodes nothing if decoded (see [`Peer::snapshot_written`]).
    snapshot_on_disk: Option<(u64, Option<Box<RegionCheckpoint>>)>,
    checkpoint_dir: Arc<Path>,
    request_timeout: Duration,
    /// Ticks a follower may stay waiting for a snapshot before the send is
    /// declared failed and retried.
    snapshot_timeout_ticks: u32,
    /// Ticks each follower has been waiting for a snapshot (leader only).
    snapshot_waits: BTreeMap<u64, u32>,
    region_map: Arc<RegionMap>,
    size: RegionSize,
    /// Keys and bytes written since the last size check; `None` before the
    /// first check.
    written_since_size_check: Option<RegionSize>,
    /// A size check's measurement is being taken (see `size_check`).
    size_check_in_flight: bool,
    /// Ticks left before this replica campaigns (a region just split off).
    campaign_in_ticks: Option<u32>,
    /// Idle region: neither ticks nor heartbeats until something wakes it.
    hibernating: bool,
    may_hibernate: bool,
    /// Ticks in a row this leader found its region idle, with no request
    /// in between (see `hibernate_if_idle`).
    quiet_ticks: u32,
    /// Ticks this replica has led in `leading_term` since it last woke
    /// (see `is_peer_alive`).
    leading_ticks: u32,
    leading_term: u64,
    /// On the leader, for each peer that sent a message since the
    /// leadership or wake began, `leading_ticks` when it last did. Not
    /// raft-rs's `recent_active`: check-quorum clears that every election
    /// timeout, so a request arriving right after the check (placement's
    /// heartbeat-driven dispatch does, every time) finds every follower
    /// "inactive".
    heard_from: Vec<(u64, u32)>,
    /// A hibernating replica stepped a message: its answer is still to go
    /// out in the next turn.
    settling: bool,
    pending_conf_change: Option<PendingConfChange>,
    /// This replica applied its own removal from the region: the shard
    /// destroys it after the turn.
    removed: bool,
    traffic: RegionTraffic,
    /// Frozen for a merge into this region (as it was when the merge was
    /// prepared): see `merge`. Boxed: almost every region has none.
    merging: Option<Box<RegionMeta>>,
    /// Committed entries held back until a merge source's replica here is
    /// destroyed: see `merge`. Boxed: almost every region has none.
    held_apply: Option<Box<HeldApply>>,
}

fn role_name(role: StateRole) -> &'static str {
    match role {
        StateRole::Leader => "leader",
        StateRole::Follower => "follower",
        StateRole::Candidate => "candidate",
        StateRole::PreCandidate => "pre-candidate",
    }
}

/// Everything a peer starts from (see `recovery`).
pub struct PeerState {
    pub checkpoint: RegionCheckpoint,
    pub raw: RawNode<crate::storage::RegionStorage>,
    pub checkpoint_dir: Arc<Path>,
}

impl Peer {
    pub fn new(
        state: PeerState,
        store: Arc<KvStore>,
        region_map: Arc<RegionMap>,
        cfg: &StoreConfig,
    ) -> Self {
        let cp = state.checkpoint;
        let region = Arc::new(cp.region);
        if region.is_known() {
            region_map.upsert(region.clone());
        }
        Peer {
            merging: cp.merging.map(Box::new),
            region,
            raw: state.raw,
            store,
            sessions: cp.sessions,
            applied_index: cp.applied_index,
            applied_term: cp.applied_term,
            writes: VecDeque::new(),
            reads: Vec::new(),
            next_read_ctx: 1,
            lease: LeaderLease::default(),
            lease_duration: cfg.leader_lease(),
            hard_state_dirty: false,
            hard_state_urgent: false,
            last_checkpoint_index: cp.applied_index,
            checkpoints_in_flight: 0,
            split_children: Vec::new(),
            snapshot_on_disk: None,
            checkpoint_dir: state.checkpoint_dir,
            request_timeout: cfg.request_timeout,
            snapshot_timeout_ticks: cfg.snapshot_timeout_ticks,
            snapshot_waits: BTreeMap::new(),
            region_map,
            size: RegionSize::default(),
            written_since_size_check: None,
            size_check_in_flight: false,
            campaign_in_ticks: None,
            hibernating: false,
            may_hibernate: cfg.hibernate,
            quiet_ticks: 0,
            leading_ticks: 0,
            leading_term: 0,
            heard_from: Vec::new(),
            settling: false,
            pending_conf_change: None,
            removed: false,
            traffic: RegionTraffic::default(),
            held_apply: None,
        }
    }

    pub fn is_hibernating(&self) -> bool {
        self.hibernating
    }

    /// Hibernating with nothing left to do: a turn may skip it.
    pub fn is_asleep(&self) -> bool {
        self.hibernating && !self.settling && self.held_apply.is_none()
    }

    /// Leaves hibernation: the region ticks (and its leader heartbeats) again.
    pub fn wake(&mut self) {
        if self.hibernating {
            tracing::trace!(region = self.region.id, "woken");
            self.forget_leading();
        }
        self.hibernating = false;
    }

    /// Gives back what an idle region need not hold: raft-rs's pipelining
    /// buffers (`max_inflight_msgs` slots per follower) and the spare
    /// capacity of its message and log vectors. Reallocated on demand
    /// when the region wakes.
    fn release_idle_memory(&mut self) {
        let raft = &mut self.raw.raft;
        raft.maybe_free_inflight_buffers();
        raft.msgs.shrink_to_fit();
        raft.raft_log.unstable.entries.shrink_to_fit();
        self.raw.mut_store().shrink_to_fit();
        self.reads.shrink_to_fit();
        self.writes.shrink_to_fit();
    }

    /// Wakes a hibernating follower whose leader's store went silent, and
    /// returns a message that wakes the leader in turn if it is alive after
    /// all (its pings were only late): it then heartbeats again, instead of
    /// the followers timing out and electing a new leader without need.
    pub fn wake_for_silence(&mut self) -> Option<Message> {
        self.wake();
        let raft = &self.raw.raft;
        let leader = self.leader_store()?;
        let mut m = Message::default();
        m.set_msg_type(raft::prelude::MessageType::MsgHeartbeatResponse);
        m.from = raft.id;
        m.to = leader;
        m.term = raft.term;
        m.commit = raft.raft_log.committed;
        Some(m)
    }

    /// The store of this region's leader, as this replica knows it.
    pub fn leader_store(&self) -> Option<u64> {
        let leader = self.raw.raft.leader_id;
        (leader != raft::INVALID_ID).then_some(leader)
    }

    /// On an idle leader: hibernates and returns the heartbeats that tell
    /// the followers to stop ticking too.
    ///
    /// Idle means nothing is in flight: no proposal, read, snapshot,
    /// membership change or campaign, everything applied, and every
    /// follower holds the whole log and knows the commit index (so a
    /// hibernating follower is never left behind) — at
    /// `HIBERNATE_AFTER_QUIET_TICKS` ticks in a row with no request.
    pub fn hibernate_if_idle(&mut self) -> Option<Vec<Message>> {
        if !self.may_hibernate || self.hibernating || !self.is_leader() {
            return None;
        }
        let raft = &self.raw.raft;
        let last = raft.raft_log.last_index();
        let committed = raft.raft_log.committed;
        let idle = self.writes.is_empty()
            && self.reads.is_empty()
            && self.pending_conf_change.is_none()
            && !self.is_joint()
            && self.snapshot_waits.is_empty()
            && self.campaign_in_ticks.is_none()
            && raft.commit_to_current_term()
            && committed == last
            && self.applied_index == committed
            && raft.pending_conf_index <= self.applied_index
            && raft.lead_transferee.is_none()
            && raft.prs().iter().all(|(id, pr)| {
                *id == raft.id || (pr.matched == last && pr.committed_index == committed)
            });
        if !idle {
            self.quiet_ticks = 0;
            return None;
        }
        // A region under light load is idle at most tick instants; it
        // sleeps only after a stretch with no request at all, or it would
        // pay for a hibernate-wake round (markers, freed and regrown
        // buffers) every few requests. (A Ready — the heartbeats a tick
        // just produced — only postpones it.)
        self.quiet_ticks = self.quiet_ticks.saturating_add(1);
        if self.quiet_ticks < HIBERNATE_AFTER_QUIET_TICKS || self.raw.has_ready() {
            return None;
        }
        self.quiet_ticks = 0;
        self.hibernating = true;
        tracing::trace!(region = self.region.id, "hibernating");
        let term = raft.term;
        let from = raft.id;
        let markers = raft
            .prs()
            .iter()
            .filter(|(id, _)| **id != from)
            .map(|(id, _)| {
                let mut m = Message::default();
                m.set_msg_type(raft::prelude::MessageType::MsgHeartbeat);
                m.to = *id;
                m.from = from;
                m.term = term;
                // Every follower matched the whole log, all of it committed.
                m.commit = committed;
                m.context = HIBERNATE_CONTEXT.to_vec().into();
                m
            })
            .collect();
        self.release_idle_memory();
        Some(markers)
    }

    /// Campaigns after a couple of ticks (see [`NewRegion::campaign`]).
    pub fn campaign_soon(&mut self) {
        self.campaign_in_ticks = Some(NEW_REGION_CAMPAIGN_TICKS);
    }

    pub fn region(&self) -> &RegionMeta {
        &self.region
    }

    /// False for a replica created by a message, until a snapshot gives it
    /// the region's range and data: it serves nothing and never votes.
    pub fn is_initialized(&self) -> bool {
        self.region.is_known()
    }

    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    /// Whether store `id` is in the region's Raft configuration (either
    /// half of a joint one, or a learner).
    pub fn is_member(&self, id: u64) -> bool {
        self.raw.raft.prs().get(id).is_some()
    }

    /// The configuration is joint: a membership change is half way.
    fn is_joint(&self) -> bool {
        !self.raw.store().conf_state().voters_outgoing.is_empty()
    }

    /// This replica applied its own removal; it serves nothing more and
    /// is to be destroyed.
    pub fn is_removed(&self) -> bool {
        self.removed
    }

    /// The hard state changed since a WAL batch last held it (a change of
    /// the commit index alone waits for the next batch: see
    /// [`Peer::stage_hard_state`]).
    pub fn has_unstaged_hard_state(&self) -> bool {
        self.hard_state_dirty
    }

    /// The highest log index this replica knows to be committed.
    pub fn committed_index(&self) -> u64 {
        self.raw.raft.raft_log.committed
    }

    /// Answers every request waiting on this replica with `error()`: it
    /// is being destroyed.
    pub fn fail_pending(&mut self, error: impl Fn() -> RaftstoreError) {
        for w in self.writes.drain(..) {
            let _ = w.reply.send(Err(error()));
        }
        for batch in self.reads.drain(..) {
            for (_, _, reply) in batch.reads {
                let _ = reply.send(Err(error()));
            }
        }
        if let Some(pending) = self.pending_conf_change.take() {
            let _ = pending.reply.send(Err(error()));
        }
    }

    /// Proposes the membership change `changes` (see `membership::plan`);
    /// `reply` is answered with the region once it is applied. Stores for
    /// which `store_alive` is false count as down, like followers raft-rs
    /// has not heard from recently.
    pub fn change_peers(
        &mut self,
        header: RequestHeader,
        changes: &[PeerChange],
        store_alive: impl Fn(u64) -> bool,
        reply: MembershipReply,
        now: Instant,
    ) {
        self.wake();
        if let Err(e) = self.check_header(&header) {
            let _ = reply.send(Err(e));
            return;
        }
        if !self.is_leader() {
            let _ = reply.send(Err(self.not_leader()));
            return;
        }
        if self.merging.is_some() {
            let _ = reply.send(Err(self.merging_error()));
            return;
        }
        let raft = &self.raw.raft;
        if self.pending_conf_change.is_some() || raft.has_pending_conf() || self.is_joint() {
            let _ = reply.send(Err(RaftstoreError::Unavailable(format!(
                "region {}: a membership change is in progress; retry once it completes",
                self.region.id
            ))));
            return;
        }
        let leader = raft.id;
        let alive = |store: u64| self.is_peer_alive(store, &store_alive);
        let conf = self.raw.store().conf_state().clone();
        let cc = match membership::plan(self.region.id, &conf, leader, changes, alive) {
            Ok(Some(cc)) => cc,
            Ok(None) => {
                let _ = reply.send(Ok(self.status()));
                return;
            }
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let before = self.raw.raft.raft_log.last_index();
        let context = membership::encode_context(self.region.epoch.conf_ver);
        if let Err(err) = self.raw.propose_conf_change(context, cc) {
            tracing::debug!(region = self.region.id, %err, "membership change not proposed");
            let _ = reply.send(Err(RaftstoreError::Unavailable(format!(
                "region {}: the leader could not propose the change now ({err}); retry",
                self.region.id
            ))));
            return;
        }
        let index = self.raw.raft.raft_log.last_index();
        // raft-rs turns a conf change it will not take into an empty entry.
        if index != before + 1 || self.raw.raft.pending_conf_index != index {
            let _ = reply.send(Err(RaftstoreError::Unavailable(format!(
                "region {}: the leader did not take the change (a membership change or leader transfer is under way); retry",
                self.region.id
            ))));
            return;
        }
        tracing::info!(
            region = self.region.id,
            index,
            ?changes,
            "membership change proposed"
        );
        self.pending_conf_change = Some(PendingConfChange {
            proposed: LogPosition {
                index,
                term: self.raw.raft.term,
            },
            reply,
            deadline: now + self.request_timeout,
            entered_joint: false,
        });
    }

    /// Starts counting leadership afresh (new term, or woken).
    fn forget_leading(&mut self) {
        self.leading_ticks = 0;
        self.heard_from.clear();
    }

    /// On the leader, notes that the replica on `store` sent a message.
    fn note_heard_from(&mut self, store: u64) {
        let now = self.leading_ticks;
        match self.heard_from.iter_mut().find(|(s, _)| *s == store) {
            Some((_, at)) => *at = now,
            None => self.heard_from.push((store, now)),
        }
    }

    /// Whether the replica on `store` answers, as the leader judges it:
    /// this replica itself, or a member whose store keeps pinging
    /// (`store_alive`; the region alone would miss a peer that died while
    /// it hibernated) and that sent this leader a message within the last
    /// election timeout. For the first election timeout after this replica
    /// became leader or woke, silence proves nothing yet, so the store's
    /// pings decide alone.
    fn is_peer_alive(&self, store: u64, store_alive: &impl Fn(u64) -> bool) -> bool {
        let raft = &self.raw.raft;
        if store == raft.id {
            return true;
        }
        if raft.prs().get(store).is_none() {
            return false;
        }
        let timeout = raft.election_timeout();
        let heard_lately = self.heard_from.iter().any(|&(s, at)| {
            s == store && (self.leading_ticks.saturating_sub(at) as usize) <= timeout
        });
        let leading_long_enough = self.leading_ticks as usize >= timeout;
        store_alive(store) && (heard_lately || !leading_long_enough)
    }

    /// On the leader, the stores whose replicas do not answer (see
    /// [`Peer::is_peer_alive`]), in id order; empty elsewhere.
    pub fn down_peers(&self, store_alive: impl Fn(u64) -> bool) -> Vec<u64> {
        if !self.is_leader() {
            return Vec::new();
        }
        let mut down: Vec<u64> = self
            .raw
            .raft
            .prs()
            .iter()
            .map(|(id, _)| *id)
            .filter(|&id| !self.is_peer_alive(id, &store_alive))
            .collect();
        down.sort_unstable();
        down
    }

    /// Starts handing leadership to store `to`, which must be a voter. The
    /// transfer completes (or is abandoned by raft-rs after an election
    /// timeout) on its own; the region's status shows where it went.
    pub fn transfer_leader(
        &mut self,
        header: &RequestHeader,
        to: u64,
    ) -> Result<(), RaftstoreError> {
        self.wake();
        self.check_header(header)?;
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        let raft = &self.raw.raft;
        if to == raft.id {
            return Ok(());
        }
        if !raft.prs().conf().voters().contains(to) {
            let why = if raft.prs().conf().learners().contains(&to) {
                "is a learner; promote it first"
            } else {
                "holds no replica of it"
            };
            return Err(RaftstoreError::InvalidRequest(format!(
                "region {}: cannot transfer leadership to store {to}: it {why}",
                self.region.id
            )));
        }
        tracing::info!(region = self.region.id, to, "transferring leadership");
        // The target's campaign overrides the voters' election timers.
        self.lease.forbid(self.raw.raft.term);
        self.raw.transfer_leader(to);
        Ok(())
    }

    fn not_leader(&self) -> RaftstoreError {
        let leader = self.raw.raft.leader_id;
        RaftstoreError::NotLeader {
            region_id: self.region.id,
            leader: (leader != raft::INVALID_ID).then_some(leader),
        }
    }

    /// Refuses requests built for another shape of this region.
    fn check_header(&self, header: &RequestHeader) -> Result<(), RaftstoreError> {
        if !self.is_initialized() || (header.region_id != 0 && header.region_id != self.region.id) {
            return Err(RaftstoreError::RegionNotFound {
                region_id: header.region_id,
            });
        }
        if let Some(epoch) = header.epoch {
            if !epoch.is_current(&self.region.epoch) {
                return Err(RaftstoreError::EpochNotMatch {
                    region_id: self.region.id,
                    current: vec![RegionMeta::clone(&self.region)],
                });
            }
        }
        Ok(())
    }

    /// Refuses a read built for another shape of this region, or one that
    /// names a key outside it (a scan is clamped to the region instead).
    fn check_read(&self, header: &RequestHeader, op: &ReadOp) -> Result<(), RaftstoreError> {
        self.check_header(header)?;
        if self.merging.is_some() {
            return Err(self.merging_error());
        }
        let inside = match op {
            ReadOp::Get { key } => self.region.contains_key(key),
            ReadOp::BatchGet { keys } => keys.iter().all(|k| self.region.contains_key(k)),
            ReadOp::Scan { .. } => true,
        };
        if inside {
            Ok(())
        } else {
            Err(RaftstoreError::KeyNotInRegion {
                region_id: self.region.id,
            })
        }
    }

    /// Proposes a write; `reply` is answered once its fate is known.
    pub fn propose_write(&mut self, cmd: WriteCommand, reply: WriteReply, now: Instant) {
        self.wake();
        self.quiet_ticks = 0;
        if let Err(e) = self.may_propose(&cmd) {
            let _ = reply.send(Err(e));
            return;
        }
        let before = self.raw.raft.raft_log.last_index();
        if self.raw.propose(Vec::new(), cmd.encode()).is_err() {
            let _ = reply.send(Err(self.not_leader()));
            return;
        }
        let index = self.raw.raft.raft_log.last_index();
        debug_assert_eq!(index, before + 1, "one proposal, one entry");
        self.writes.push_back(PendingWrite {
            index,
            term: self.raw.raft.term,
            reply,
            deadline: now + self.request_timeout,
        });
    }

    /// Why `cmd` would be refused if proposed now, if it would: a stale
    /// header, a merge in progress, keys outside the region, or this
    /// replica not leading.
    pub fn may_propose(&self, cmd: &WriteCommand) -> Result<(), RaftstoreError> {
        self.check_header(&cmd.header)?;
        if self.merging.is_some() && cmd.op != WriteOp::RollbackMerge {
            return Err(self.merging_error());
        }
        if !crate::apply::keys_in_region(&self.region, &cmd.op) {
            return Err(RaftstoreError::KeyNotInRegion {
                region_id: self.region.id,
            });
        }
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        Ok(())
    }

    /// Takes a linearizable read: served on the lease, or queued for the
    /// next ReadIndex round. Returns which, or `None` if it was refused.
    pub fn queue_read(
        &mut self,
        header: RequestHeader,
        op: ReadOp,
        reply: ReadReply,
        now: Instant,
    ) -> Option<ReadPath> {
        self.wake();
        self.quiet_ticks = 0;
        if let Err(e) = self.check_read(&header, &op) {
            let _ = reply.send(Err(e));
            return None;
        }
        if !self.is_leader() {
            let _ = reply.send(Err(self.not_leader()));
            return None;
        }
        if self.may_read_on_lease(now) {
            self.read_on_lease(header, op, reply, now);
            return Some(ReadPath::Lease);
        }
        match self.reads.last_mut() {
            Some(batch) if !batch.sent => batch.reads.push((header, op, reply)),
            _ => self.open_read_batch(vec![(header, op, reply)], None, now),
        }
        Some(ReadPath::ReadIndex)
    }

    /// Whether a read arriving at `now` may skip the ReadIndex round: this
    /// replica leads with a lease that holds (see `lease`), has committed
    /// an entry of its term, and neither a leadership transfer nor a
    /// membership change nor a merge is under way.
    fn may_read_on_lease(&self, now: Instant) -> bool {
        let raft = &self.raw.raft;
        self.is_leader()
            && raft.commit_to_current_term()
            && raft.lead_transferee.is_none()
            && self.pending_conf_change.is_none()
            && !self.is_joint()
            && self.merging.is_none()
            && self.lease.holds(raft.term, now)
    }

    /// Serves a read on the lease: its read index is the commit index now,
    /// so it is answered at once if everything committed is applied, or
    /// once it is. When the lease has less than a third left, a round with
    /// no reads of its own starts to extend it, so that steady reads never
    /// wait for one.
    fn read_on_lease(&mut self, header: RequestHeader, op: ReadOp, reply: ReadReply, now: Instant) {
        let read_index = self.raw.raft.raft_log.committed;
        if may_serve_read(Some(read_index), self.applied_index) {
            self.answer_read(header, op, reply);
        } else {
            self.open_read_batch(vec![(header, op, reply)], Some(read_index), now);
        }
        let term = self.raw.raft.term;
        let renewing = self.reads.iter().any(|batch| batch.read_index.is_none());
        if let Some(duration) = self.lease_duration {
            if !renewing && self.lease.remaining(term, now) < duration / 3 {
                self.open_read_batch(Vec::new(), None, now);
            }
        }
    }

    /// Opens a read batch: waiting for a ReadIndex round when `read_index`
    /// is `None`, or (on the lease) only for apply to reach it.
    fn open_read_batch(
        &mut self,
        reads: Vec<(RequestHeader, ReadOp, ReadReply)>,
        read_index: Option<u64>,
        now: Instant,
    ) {
        let ctx = self.next_read_ctx;
        self.next_read_ctx += 1;
        self.reads.push(ReadBatch {
            ctx,
            reads,
            sent: read_index.is_some(),
            read_index,
            opened: now,
            term: self.raw.raft.term,
            deadline: now + self.request_timeout,
        });
    }

    /// Starts a ReadIndex round for the queued reads. raft-rs ignores read
    /// requests until the leader committed an entry of its term, so wait.
    pub fn flush_reads(&mut self) {
        // Most regions have no read waiting: they pay no log lookup.
        let waiting = self.reads.iter().any(|b| !b.sent);
        if !waiting
            || !may_start_read_index(self.is_leader(), self.raw.raft.commit_to_current_term())
        {
            return;
        }
        for batch in self.reads.iter_mut().filter(|b| !b.sent) {
            self.raw.read_index(batch.ctx.to_le_bytes().to_vec());
            batch.sent = true;
        }
    }

    /// Steps a message from another replica. Any message wakes the region,
    /// except the hibernation heartbeat and its response; a follower that
    /// receives its leader's hibernation heartbeat hibernates.
    ///
    /// A heartbeat committing past this replica's log is dropped (raft-rs
    /// would panic on it). A leader sends one only to a replica it counts
    /// by an earlier incarnation (destroyed and created again, its log
    /// empty), or to one that lost entries it had acknowledged; nothing may
    /// be committed on its word in either case.
    pub fn step(&mut self, msg: Message) {
        use raft::prelude::MessageType as T;
        let last_index = self.raw.raft.raft_log.last_index();
        if msg.get_msg_type() == T::MsgHeartbeat && msg.commit > last_index {
            if self.is_initialized() {
                tracing::warn!(
                    region = self.region.id,
                    from = msg.from,
                    commit = msg.commit,
                    last_index,
                    "heartbeat commits past this replica's log; dropped"
                );
            } else {
                tracing::debug!(
                    region = self.region.id,
                    from = msg.from,
                    commit = msg.commit,
                    "heartbeat for an earlier incarnation of this replica; dropped"
                );
            }
            return;
        }
        let marker = msg.context.as_ref() == HIBERNATE_CONTEXT;
        let hibernate = marker && msg.get_msg_type() == T::MsgHeartbeat;
        let from = msg.from;
        let marker_answer = marker && msg.get_msg_type() == T::MsgHeartbeatResponse;
        if !(hibernate || marker_answer) {
            self.wake();
        }
        self.settling = true;
        if self.is_leader() && self.raw.raft.term == self.leading_term {
            self.note_heard_from(from);
        }
        if let Err(err) = self.raw.step(msg) {
            tracing::debug!(region = self.region.id, %err, "raft message refused");
            return;
        }
        if hibernate {
            let raft = &self.raw.raft;
            self.hibernating =
                self.may_hibernate && raft.state == StateRole::Follower && raft.leader_id == from;
            if self.hibernating {
                self.release_idle_memory();
            }
        }
    }

    pub fn tick(&mut self) {
        if self.hibernating {
            return;
        }
        let term = self.raw.raft.term;
        if self.is_leader() && term == self.leading_term {
            self.leading_ticks = self.leading_ticks.saturating_add(1);
        } else {
            self.forget_leading();
            self.leading_term = term;
        }
        self.raw.tick();
        self.check_snapshot_sends();
        if let Some(ticks) = self.campaign_in_ticks.as_mut() {
            *ticks = ticks.saturating_sub(1);
            if *ticks == 0 {
                self.campaign_in_ticks = None;
                if !self.is_leader() && self.raw.raft.leader_id == raft::INVALID_ID {
                    if let Err(err) = self.raw.campaign() {
                        tracing::debug!(region = self.region.id, %err, "campaign refused");
                    }
                }
            }
        }
    }

    /// On a leader whose writes since the last size check could have made
    /// it too large: a measurement of the region, to take off the turn
    /// (see `size_check`). One at a time.
    pub fn size_check_due(&mut self, limits: SplitThresholds) -> Option<SizeCheck> {
        if !self.is_leader() || self.merging.is_some() || self.size_check_in_flight {
            return None;
        }
        if let Some(written) = self.written_since_size_check {
            // A split could become due only after this much growth.
            if written.keys < limits.keys / 8 + 1 && written.bytes < limits.bytes / 8 + 1 {
                return None;
            }
        }
        self.size_check_in_flight = true;
        self.written_since_size_check = Some(RegionSize::default());
        Some(SizeCheck::new(
            self.region.id,
            self.region.epoch.version,
            self.region.start_key.clone(),
            self.region.end_key.clone(),
            Arc::clone(&self.store),
        ))
    }

    /// Takes in a size check's measurement; returns where the region
    /// should split, if it passed `limits` and still leads the range the
    /// measurement was taken from.
    pub fn on_size_measured(
        &mut self,
        measured: SizeMeasured,
        limits: SplitThresholds,
    ) -> Option<Vec<u8>> {
        self.size_check_in_flight = false;
        if measured.version != self.region.epoch.version {
            return None; // taken from an earlier shape: the next check retakes it
        }
        self.size = RegionSize {
            keys: measured.size.keys,
            bytes: measured.size.bytes,
        };
        if !self.is_leader()
            || self.merging.is_some()
            || (self.size.keys <= limits.keys && self.size.bytes <= limits.bytes)
        {
            return None;
        }
        measured
            .size
            .middle_key
            .filter(|key| self.region.may_split_at(key))
    }

    /// raft-rs keeps a follower in the snapshot state, sending it nothing,
    /// until the snapshot is reported: success shows up by itself as the
    /// follower's append response, but a snapshot message lost on the way
    /// (dropped by a full queue, a broken stream, a crash) would leave the
    /// follower stranded forever. After a timeout, report it failed so that
    /// the leader probes again and resends.
    fn check_snapshot_sends(&mut self) {
        if !self.is_leader() {
            self.snapshot_waits.clear();
            return;
        }
        let waiting: Vec<u64> = self
            .raw
            .raft
            .prs()
            .iter()
            .filter(|(_, pr)| pr.state == ProgressState::Snapshot)
            .map(|(id, _)| *id)
            .collect();
        self.snapshot_waits.retain(|id, _| waiting.contains(id));
        for id in waiting {
            let ticks = self.snapshot_waits.entry(id).or_insert(0);
            *ticks += 1;
            if *ticks >= self.snapshot_timeout_ticks {
                self.snapshot_waits.remove(&id);
                tracing::info!(
                    region = self.region.id,
                    to = id,
                    "snapshot not acknowledged in time; resending"
                );
                self.raw.report_snapshot(id, SnapshotStatus::Failure);
            }
        }
    }

    /// Answers requests whose deadline passed: reads were not served
    /// (retry-safe), writes may or may not apply later (indeterminate).
    pub fn expire(&mut self, now: Instant) {
        let region_id = self.region.id;
        self.reads.retain_mut(|batch| {
            if batch.deadline > now {
                return true;
            }
            for (_, _, reply) in batch.reads.drain(..) {
                let _ = reply.send(Err(RaftstoreError::Unavailable(format!(
                    "region {region_id}: read index not confirmed in time; retry"
                ))));
            }
            false
        });
        while self.writes.front().is_some_and(|w| w.deadline <= now) {
            if let Some(w) = self.writes.pop_front() {
                let _ = w.reply.send(Err(RaftstoreError::Indeterminate {
                    region_id,
                    reason: "not applied before the deadline".into(),
                }));
            }
        }
        if self
            .pending_conf_change
            .as_ref()
            .is_some_and(|p| p.deadline <= now)
        {
            self.answer_joint_change();
            if let Some(pending) = self.pending_conf_change.take() {
                let _ = pending.reply.send(Err(RaftstoreError::Indeterminate {
                    region_id,
                    reason: "the membership change was not applied before the deadline".into(),
                }));
            }
        }
    }

    /// If the membership change in flight already entered its joint
    /// configuration, answers it with the region as it is: the change is
    /// applied, and raft-rs leaves the joint configuration by itself.
    fn answer_joint_change(&mut self) {
        if self
            .pending_conf_change
            .as_ref()
            .is_some_and(|p| p.entered_joint)
        {
            if let Some(pending) = self.pending_conf_change.take() {
                let _ = pending.reply.send(Ok(self.status()));
            }
        }
    }

    /// Phase one of a turn: takes the Ready, sends what may go out before
    /// the sync, applies what is committed, and stages entries and hard
    /// state in the shard's WAL batch.
    pub fn collect_ready(
        &mut self,
        out: &mut TurnOutput,
    ) -> Result<Option<raft::Ready>, RaftstoreError> {
        self.settling = false;
        self.resume_held_apply(out)?;
        if !self.raw.has_ready() {
            return Ok(None);
        }
        let mut rd = self.raw.ready();
        if let Some(ss) = rd.ss() {
            if ss.raft_state == StateRole::Leader {
                self.region_map.note_leadership(self.region.id);
            } else {
                self.fail_reads();
                // A change not applied yet learns its fate from the log.
                self.answer_joint_change();
            }
        }
        self.route(rd.take_messages(), out);
        if !rd.snapshot().is_empty() {
            self.install_snapshot(rd.snapshot(), out)?;
        }
        let leading_term = self.is_leader().then_some(self.raw.raft.term);
        for rs in rd.take_read_states() {
            let ctx = rs
                .request_ctx
                .as_slice()
                .try_into()
                .map(u64::from_le_bytes)
                .unwrap_or(0);
            if let Some(batch) = self.reads.iter_mut().find(|b| b.ctx == ctx) {
                batch.read_index = Some(rs.index);
                if let (Some(duration), Some(term)) = (self.lease_duration, leading_term) {
                    if batch.term == term {
                        self.lease.confirm(term, batch.opened, duration);
                    }
                }
            }
        }
        self.apply_entries(rd.take_committed_entries(), out)?;
        if !rd.entries().is_empty() {
            let ents = rd.take_entries();
            let last = ents.last().map_or(0, |e| e.index);
            out.wal.push(WalRecord {
                region_id: self.region.id,
                kind: RecordKind::Entries,
                index: last,
                payload: encode_entries(&ents)?,
            });
            self.raw.mut_store().append(&ents);
        }
        if let Some(hs) = rd.hs() {
            let old = self.raw.store().hard_state();
            // A new term or vote must be durable before any message that
            // depends on it leaves; a commit index alone need not (see
            // `stage_hard_state`).
            self.hard_state_urgent |= hs.term != old.term || hs.vote != old.vote;
            self.raw.mut_store().set_hard_state(hs.clone());
            self.hard_state_dirty = true;
        }
        if self.hard_state_urgent {
            self.stage_hard_state(out);
        }
        Ok(Some(rd))
    }

    /// Phase two, after the WAL batch holding phase one's records is durable.
    pub fn after_persist(
        &mut self,
        mut rd: raft::Ready,
        out: &mut TurnOutput,
    ) -> Result<(), RaftstoreError> {
        self.route(rd.take_persisted_messages(), out);
        // Applied progress is reported as it is made: a merge may hold
        // committed entries back (see `merge`).
        let mut light = self.raw.advance_append(rd);
        if let Some(commit) = light.commit_index() {
            self.raw.mut_store().set_commit(commit);
            self.hard_state_dirty = true;
        }
        self.route(light.take_messages(), out);
        self.apply_entries(light.take_committed_entries(), out)?;
        self.raw.advance_apply_to(self.applied_index);
        self.serve_reads();
        Ok(())
    }

    /// Stages the hard state if it changed since it was last made durable.
    ///
    /// A change of the commit index alone is not urgent: the shard stages it
    /// only when it writes a WAL batch anyway, so a write costs one sync,
    /// not two. Losing it in a crash is harmless: the entries it covers are
    /// durable, recovery raises the commit index to the checkpoint, and the
    /// leader re-sends the rest.
    pub fn stage_hard_state(&mut self, out: &mut TurnOutput) {
        self.hard_state_urgent = false;
        if self.hard_state_dirty {
            out.wal.push(WalRecord {
                region_id: self.region.id,
                kind: RecordKind::HardState,
                index: 0,
                payload: encode_hard_state(self.raw.store().hard_state()),
            });
            self.hard_state_dirty = false;
        }
    }

    fn route(&self, msgs: Vec<Message>, out: &mut TurnOutput) {
        for m in msgs {
            out.messages.push((m.to, self.region.id, m));
        }
    }

    fn fail_reads(&mut self) {
        let err_leader = self.raw.raft.leader_id;
        for batch in self.reads.drain(..) {
            for (_, _, reply) in batch.reads {
                let _ = reply.send(Err(RaftstoreError::NotLeader {
                    region_id: self.region.id,
                    leader: (err_leader != raft::INVALID_ID).then_some(err_leader),
                }));
            }
        }
    }

    fn serve_reads(&mut self) {
        let applied = self.applied_index;
        let mut i = 0;
        while i < self.reads.len() {
            if may_serve_read(self.reads[i].read_index, applied) {
                let batch = self.reads.swap_remove(i);
                for (header, op, reply) in batch.reads {
                    self.answer_read(header, op, reply);
                }
            } else {
                i += 1;
            }
        }
    }

    /// Answers a read whose read index is applied, checking its routing
    /// again (the region may have split since it arrived).
    fn answer_read(&mut self, header: RequestHeader, op: ReadOp, reply: ReadReply) {
        let answer = self.check_read(&header, &op).map(|()| self.read(op));
        if let Ok(result) = &answer {
            self.traffic.read_keys += match result {
                ReadResult::Value(_) => 1,
                ReadResult::Pairs(pairs) => pairs.len() as u64,
            };
        }
        let _ = reply.send(answer);
    }

    fn read(&self, op: ReadOp) -> ReadResult {
        match op {
            ReadOp::Get { key } => ReadResult::Value(self.store.get(&key)),
            ReadOp::BatchGet { keys } => ReadResult::Pairs(
                keys.into_iter()
                    .filter_map(|k| self.store.get(&k).map(|v| (k, v)))
                    .collect(),
            ),
            ReadOp::Scan {
                start,
                end,
                limit,
                reverse,
            } => {
                let start = start.max(self.region.start_key.clone());
                let end = clamp_end(&end, &self.region.end_key);
                ReadResult::Pairs(self.store.scan(&start, &end, limit, reverse))
            }
        }
    }

    fn apply_entries(
        &mut self,
        entries: Vec<Entry>,
        out: &mut TurnOutput,
    ) -> Result<(), RaftstoreError> {
        self.apply_entries_released(entries, None, out)
    }

    /// Applies committed `entries` in order, holding them back from the
    /// first `CommitMerge` that absorbs a source other than `released`
    /// (one whose replica here is destroyed already): see `merge`.
    pub(super) fn apply_entries_released(
        &mut self,
        entries: Vec<Entry>,
        released: Option<u64>,
        out: &mut TurnOutput,
    ) -> Result<(), RaftstoreError> {
        if let Some(held) = self.held_apply.as_mut() {
            held.entries.extend(entries);
            return Ok(());
        }
        let mut entries = entries.into_iter();
        let mut shape_changed = false;
        while let Some(entry) = entries.next() {
            debug_assert_eq!(
                entry.index,
                self.applied_index + 1,
                "entries apply in order, without gaps"
            );
            debug_assert!(
                entry.index <= self.raw.raft.raft_log.committed,
                "applied never passes committed"
            );
            let decoded = (entry.get_entry_type() == EntryType::EntryNormal
                && !entry.data.is_empty())
            .then(|| WriteCommand::decode(&entry.data));
            if let Some(Ok(cmd)) = &decoded {
                if let Some(source) = self.absorbs(cmd).filter(|&s| Some(s) != released) {
                    self.hold_apply(source, entry, entries.collect(), out);
                    return Ok(());
                }
            }
            let mut membership_outcome = None;
            shape_changed |= matches!(&decoded, Some(Ok(cmd)) if cmd.op.changes_shape());
            let outcome = match entry.get_entry_type() {
                EntryType::EntryNormal => match decoded {
                    None => None,
                    Some(decoded) => Some(match decoded {
                        Ok(cmd) if matches!(cmd.op, WriteOp::Split { .. }) => {
                            self.apply_split(&cmd, entry.index, entry.term, out)?
                        }
                        Ok(cmd) if matches!(cmd.op, WriteOp::PrepareMerge { .. }) => {
                            self.apply_prepare_merge(&cmd)
                        }
                        Ok(cmd) if matches!(cmd.op, WriteOp::CommitMerge { .. }) => {
                            self.apply_commit_merge(&cmd, out)
                        }
                        Ok(cmd) if cmd.op == WriteOp::RollbackMerge => {
                            self.apply_rollback_merge(&cmd)
                        }
                        // Frozen for a merge: writes proposed before the freeze
                        // and committed after it are refused, on every replica.
                        Ok(_) if self.merging.is_some() => Err(self.merging_error()),
                        Ok(cmd) => {
                            self.note_written(&cmd.op);
                            apply_write(&self.store, &self.region, &mut self.sessions, &cmd)
                                .map_err(|r| self.rejection(r))
                        }
                        Err(err) => {
                            tracing::error!(region = self.region.id, index = entry.index, %err, "committed entry does not decode; skipped");
                            Err(RaftstoreError::Corrupt(format!(
                                "entry {} does not decode: {err}",
                                entry.index
                            )))
                        }
                    }),
                },
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                    membership_outcome = Some(self.apply_membership_entry(&entry, out)?);
                    None
                }
            };
            self.applied_index = entry.index;
            self.applied_term = entry.term;
            self.resolve_write(entry.index, entry.term, outcome);
            let applied = LogPosition {
                index: entry.index,
                term: entry.term,
            };
            self.resolve_conf_change(applied, membership_outcome);
        }
        if shape_changed {
            self.announce_commit();
        }
        Ok(())
    }

    /// On a leader: sends every follower the commit index now, instead of
    /// with the next append or heartbeat (see `skip_bcast_commit` in
    /// `StoreConfig::raft_config`), so that followers split or merge as soon
    /// as the leader did and a new region finds its replicas in place.
    fn announce_commit(&mut self) {
        if self.is_leader() {
            self.raw.raft.bcast_append();
        }
    }

    /// Applies a committed conf change entry. It is skipped (and the
    /// answer says why) when the region's `conf_ver` moved since it was
    /// planned, or when raft-rs refuses it; every replica decides the same,
    /// from the log alone.
    fn apply_membership_entry(
        &mut self,
        entry: &Entry,
        out: &mut TurnOutput,
    ) -> Result<Result<(), RaftstoreError>, RaftstoreError> {
        // The quorum that confirmed the lease may not be one any more.
        self.lease.revoke();
        let corrupt = |e: &dyn std::fmt::Display| {
            RaftstoreError::Corrupt(format!("conf change at {}: {e}", entry.index))
        };
        let planned_at = match membership::decode_context(&entry.context) {
            Ok(planned_at) => planned_at,
            Err(err) => {
                tracing::error!(region = self.region.id, index = entry.index, %err, "conf change context does not decode; skipped");
                return Ok(Err(corrupt(&err)));
            }
        };
        if planned_at.is_some_and(|conf_ver| conf_ver != self.region.epoch.conf_ver) {
            return Ok(Err(self.rejection(ApplyRejection::EpochNotMatch)));
        }
        let applied = if entry.get_entry_type() == EntryType::EntryConfChange {
            let cc = ConfChange::parse_from_bytes(&entry.data).map_err(|e| corrupt(&e))?;
            self.raw.apply_conf_change(&cc)
        } else {
            let cc = ConfChangeV2::parse_from_bytes(&entry.data).map_err(|e| corrupt(&e))?;
            self.raw.apply_conf_change(&cc)
        };
        match applied {
            Ok(conf_state) => {
                self.change_membership(conf_state, entry.index, entry.term, out)?;
                Ok(Ok(()))
            }
            Err(err) => {
                tracing::error!(region = self.region.id, index = entry.index, %err, "raft-rs refused a committed conf change; skipped");
                Ok(Err(RaftstoreError::InvalidRequest(format!(
                    "region {}: the change was refused when applied: {err}",
                    self.region.id
                ))))
            }
        }
    }

    /// The region's configuration became `conf_state` at log position
    /// (`index`, `term`): `conf_ver` moves on and `peers` follows, and a
    /// checkpoint of the region there goes to the shard's writer (off the
    /// turn: it copies the whole region). The in-memory log is dropped up
    /// to `index` at once, so a replica this change added, which has no
    /// log and can start only from a snapshot, is sent that checkpoint
    /// once it is durable, never the entries before it (`RegionStorage::snapshot`
    /// offers no checkpoint older than the log). The WAL keeps those
    /// entries until the checkpoint is durable (`on_checkpoint_written`):
    /// a crash before then replays the change from the log.
    fn change_membership(
        &mut self,
        conf_state: ConfState,
        index: u64,
        term: u64,
        out: &mut TurnOutput,
    ) -> Result<(), RaftstoreError> {
        self.raw.mut_store().set_conf_state(conf_state.clone());
        self.region = Arc::new(self.region.with_membership(&conf_state));
        self.region_map.upsert(Arc::clone(&self.region));
        self.removed = !members(&conf_state).contains(&self.raw.raft.id);
        tracing::info!(
            region = self.region.id,
            index,
            conf_ver = self.region.epoch.conf_ver,
            voters = ?conf_state.voters,
            outgoing = ?conf_state.voters_outgoing,
            learners = ?conf_state.learners,
            removed = self.removed,
            "membership changed"
        );
        if self.removed {
            // Nothing to keep: the shard destroys this replica.
            return Ok(());
        }
        let checkpoint = self.checkpoint_at(index, term);
        out.checkpoints
            .push(AppliedCheckpoint::Membership(Box::new(checkpoint)));
        self.raw.mut_store().compact_to(index);
        Ok(())
    }

    /// Answers the membership change in flight once the replica applied
    /// `applied` (with `outcome` for a conf change entry there; `None` for
    /// a snapshot ending there).
    fn resolve_conf_change(
        &mut self,
        applied: LogPosition,
        outcome: Option<Result<(), RaftstoreError>>,
    ) {
        let Some(mut pending) = self.pending_conf_change.take() else {
            return;
        };
        let answer = if pending.entered_joint {
            if self.is_joint() {
                self.pending_conf_change = Some(pending);
                return;
            }
            Ok(self.status())
        } else {
            match proposal_fate(pending.proposed, applied) {
                ProposalFate::Waiting => {
                    self.pending_conf_change = Some(pending);
                    return;
                }
                ProposalFate::Applied => match outcome {
                    Some(Ok(())) if self.is_joint() => {
                        pending.entered_joint = true;
                        self.pending_conf_change = Some(pending);
                        return;
                    }
                    Some(Ok(())) => Ok(self.status()),
                    Some(Err(e)) => Err(e),
                    None => Err(RaftstoreError::Indeterminate {
                        region_id: self.region.id,
                        reason: format!("entry {} was applied by a snapshot", applied.index),
                    }),
                },
                ProposalFate::Skipped => Err(RaftstoreError::Indeterminate {
                    region_id: self.region.id,
                    reason: "log replaced by a snapshot".into(),
                }),
                ProposalFate::Superseded => Err(self.not_leader()),
            }
        };
        let _ = pending.reply.send(answer);
    }

    fn rejection(&self, rejection: ApplyRejection) -> RaftstoreError {
        let region_id = self.region.id;
        match rejection {
            ApplyRejection::EpochNotMatch => RaftstoreError::EpochNotMatch {
                region_id,
                current: vec![RegionMeta::clone(&self.region)],
            },
            ApplyRejection::KeyNotInRegion => RaftstoreError::KeyNotInRegion { region_id },
            ApplyRejection::NotADataWrite => {
                RaftstoreError::Internal(format!("region {region_id}: a split reached apply_write"))
            }
            ApplyRejection::AlreadyAnswered => RaftstoreError::Refused(
                "a late copy of a write its client already had answered; not applied".into(),
            ),
        }
    }

    fn note_written(&mut self, op: &WriteOp) {
        let (keys, bytes) = op.written();
        self.traffic.written_keys += keys;
        self.traffic.written_bytes += bytes;
        if let Some(written) = self.written_since_size_check.as_mut() {
            written.keys += keys;
            written.bytes += bytes;
        }
    }

    /// Applies a committed split at log position (`index`, `term`): the
    /// region keeps the left half, a new region takes the right.
    ///
    /// Deterministic on every replica: it depends only on the command and
    /// the region's state. Writes nothing itself: the new region's
    /// checkpoint and this region's (at `index`, with its new range) are
    /// captured here and written off the turn, in that order (see
    /// [`SplitCheckpoints`]).
    fn apply_split(
        &mut self,
        cmd: &WriteCommand,
        index: u64,
        term: u64,
        out: &mut TurnOutput,
    ) -> Result<Result<WriteResult, RaftstoreError>, RaftstoreError> {
        let WriteOp::Split {
            split_key,
            new_region_id,
        } = &cmd.op
        else {
            return Err(RaftstoreError::Internal("apply_split: not a split".into()));
        };
        if !cmd
            .header
            .epoch
            .is_some_and(|e| e.is_current(&self.region.epoch))
        {
            return Ok(Err(self.rejection(ApplyRejection::EpochNotMatch)));
        }
        if !self.region.may_split_at(split_key) || *new_region_id == self.region.id {
            return Ok(Err(self.rejection(ApplyRejection::KeyNotInRegion)));
        }
        let (left, right) = self.region.split(split_key, *new_region_id);
        let child = RegionCheckpoint::new_region(
            right.clone(),
            self.raw.store().conf_state().clone(),
            // Retries of writes to the right half's keys must still be
            // recognised there.
            self.sessions.clone(),
        );
        // Replayed after a crash, the split may find the new region already
        // there; it is never created twice.
        let created = if RegionCheckpoint::exists(&self.checkpoint_dir, right.id) {
            None
        } else {
            let capture = || self.store.capture(&right.start_key, &right.end_key);
            let checkpoint = PendingCheckpoint::new(child.clone(), capture());
            let second = PendingCheckpoint::new(child.clone(), capture());
            self.split_children.push((index, second));
            Some(SplitChild {
                checkpoint,
                region: NewRegion {
                    checkpoint: child,
                    campaign: self.is_leader(),
                },
            })
        };
        self.region = Arc::new(left.clone());
        let parent = self.checkpoint_at(index, term);
        out.checkpoints
            .push(AppliedCheckpoint::Split(Box::new(SplitCheckpoints {
                created,
                parent,
            })));
        self.region_map.upsert(Arc::clone(&self.region));
        self.written_since_size_check = None;
        // Reads queued for keys that moved fail when served (`check_read`).
        tracing::info!(
            region = left.id,
            new_region = right.id,
            index,
            version = left.epoch.version,
            "region split"
        );
        Ok(Ok(WriteResult::Split { left, right }))
    }

    /// Answers the proposal that waited for log slot `index`, if any.
    fn resolve_write(
        &mut self,
        index: u64,
        term: u64,
        mut outcome: Option<Result<WriteResult, RaftstoreError>>,
    ) {
        while let Some(front) = self.writes.front() {
            let proposed = LogPosition {
                index: front.index,
                term: front.term,
            };
            let answer = match proposal_fate(proposed, LogPosition { index, term }) {
                ProposalFate::Waiting => break,
                ProposalFate::Skipped => Err(RaftstoreError::Indeterminate {
                    region_id: self.region.id,
                    reason: "log replaced by a snapshot".into(),
                }),
                // No outcome for its own slot: a snapshot ending exactly
                // there applied it; what it returned is unknown.
                ProposalFate::Applied => outcome.take().unwrap_or_else(|| {
                    Err(RaftstoreError::Indeterminate {
                        region_id: self.region.id,
                        reason: format!("entry {index} was applied by a snapshot"),
                    })
                }),
                ProposalFate::Superseded => Err(self.not_leader()),
            };
            if let Some(w) = self.writes.pop_front() {
                let _ = w.reply.send(answer);
            }
        }
    }

    fn install_snapshot(
        &mut self,
        snap: &Snapshot,
        out: &mut TurnOutput,
    ) -> Result<(), RaftstoreError> {
        let meta = snap.get_metadata();
        let (index, term) = (meta.index, meta.term);
        let (written_ahead, decoded) = match self.snapshot_on_disk.take() {
            Some((at, decoded)) if at == index => (true, decoded),
            _ => (false, None),
        };
        let mut cp = match decoded {
            Some(decoded) => *decoded,
            None => RegionCheckpoint::decode(&snap.data)?,
        };
        if cp.applied_index != index || cp.region.id != self.region.id {
            return Err(RaftstoreError::Corrupt(format!(
                "snapshot of region {} at {} carries a checkpoint of region {} at {}",
                self.region.id, index, cp.region.id, cp.applied_index
            )));
        }
        // The snapshot covers whatever a merge held back.
        if let Some(held) = self.held_apply.take() {
            debug_assert!(held.entries.iter().all(|e| e.index <= index));
        }
        if !written_ahead {
            self.write_split_children()?;
            engine::checkpoint::write_encoded(
                &self.checkpoint_dir,
                self.region.id,
                index,
                &snap.data,
            )?;
        }
        let pairs = std::mem::take(&mut cp.pairs);
        self.store
            .replace_range(&cp.region.start_key, &cp.region.end_key, pairs);
        self.region = Arc::new(cp.region);
        self.region_map.upsert(Arc::clone(&self.region));
        self.written_since_size_check = None;
        self.sessions = cp.sessions;
        self.merging = cp.merging.map(Box::new);
        self.raw
            .mut_store()
            .apply_snapshot_metadata(index, term, cp.conf_state);
        self.applied_index = index;
        self.applied_term = term;
        self.last_checkpoint_index = index;
        self.hard_state_dirty = true;
        self.hard_state_urgent = true;
        out.wal.push(WalRecord {
            region_id: self.region.id,
            kind: RecordKind::Truncate,
            index,
            payload: encode_truncation(Truncation::DiscardAll),
        });
        self.resolve_write(index, term, None);
        self.resolve_conf_change(LogPosition { index, term }, None);
        tracing::info!(region = self.region.id, index, term, "installed snapshot");
        Ok(())
    }

    /// Whether raft-rs would install snapshot message `msg` rather than
    /// ignore it: it is of this replica's term or later, its index is
    /// beyond what this replica knows committed, and its configuration
    /// has this replica. Only such a snapshot is written before it is
    /// stepped (see `ShardCore::step`).
    pub fn would_install(&self, msg: &Message) -> bool {
        let meta = msg.get_snapshot().get_metadata();
        msg.term >= self.raw.raft.term
            && meta.index > self.committed_index()
            && crate::region::members(meta.get_conf_state()).contains(&self.raw.raft.id)
    }

    /// The shard's writer made the snapshot at `index` this region's
    /// durable checkpoint: installing it (stepped next) need not write it,
    /// nor decode it if the writer did (`decoded`).
    ///
    /// Safe whether or not it is installed: a leader's snapshot holds only
    /// committed entries, so a restart from it (with the WAL's log above
    /// its index) is a state this replica could have reached; and no
    /// checkpoint of the region's own, older, replaces it (see
    /// `engine::checkpoint::write`).
    pub fn snapshot_written(&mut self, index: u64, decoded: Option<RegionCheckpoint>) {
        self.snapshot_on_disk = Some((index, decoded.map(Box::new)));
    }

    /// The region at its applied index, if a checkpoint is due (see
    /// [`Peer::checkpoint`]).
    pub fn checkpoint_if_due(&mut self, every_entries: u64) -> Option<PendingCheckpoint> {
        if self.checkpoints_in_flight > 0
            || self.applied_index < self.last_checkpoint_index + every_entries
        {
            return None;
        }
        Some(self.checkpoint())
    }

    /// The log memory a checkpoint started now would release, if one may
    /// start: none is being written and the region applied entries its
    /// last checkpoint does not hold.
    pub fn releasable_log_bytes(&self) -> Option<usize> {
        (self.checkpoints_in_flight == 0 && self.applied_index > self.last_checkpoint_index)
            .then(|| self.raw.store().log_bytes())
    }

    /// Whether this asleep region applied entries its last checkpoint does
    /// not hold (and none is being written): its log stays in memory and
    /// in the WAL until one does.
    pub fn wants_idle_checkpoint(&self) -> bool {
        self.is_asleep()
            && self.checkpoints_in_flight == 0
            && self.applied_index > self.last_checkpoint_index
    }

    /// The region at its applied index, now: its key range captured, to
    /// be read off the turn.
    pub fn checkpoint(&mut self) -> PendingCheckpoint {
        debug_assert_eq!(self.checkpoints_in_flight, 0, "one checkpoint at a time");
        self.checkpoint_at(self.applied_index, self.applied_term)
    }

    /// The region as it is now, at log position (`index`, `term`) (the
    /// entry last applied), its key range captured; counted in flight.
    fn checkpoint_at(&mut self, index: u64, term: u64) -> PendingCheckpoint {
        self.checkpoints_in_flight += 1;
        let checkpoint = RegionCheckpoint {
            region: RegionMeta::clone(&self.region),
            applied_index: index,
            applied_term: term,
            conf_state: self.raw.store().conf_state().clone(),
            sessions: self.sessions.clone(),
            merging: self.merging.as_deref().cloned(),
            pairs: Vec::new(),
        };
        let pairs = self
            .store
            .capture(&self.region.start_key, &self.region.end_key);
        PendingCheckpoint::new(checkpoint, pairs)
    }

    /// The checkpoint at `index` is durable: the log before it can go.
    pub fn on_checkpoint_written(&mut self, index: u64, out: &mut TurnOutput) {
        self.checkpoints_in_flight = self.checkpoints_in_flight.saturating_sub(1);
        // A split's checkpoints go out child first: the children of this
        // split and of any before it are durable.
        self.split_children.retain(|(at, _)| *at > index);
        self.raw.mut_store().checkpoint_durable(index);
        if index <= self.last_checkpoint_index {
            return;
        }
        self.last_checkpoint_index = index;
        self.raw.mut_store().compact_to(index);
        out.wal.push(WalRecord {
            region_id: self.region.id,
            kind: RecordKind::Truncate,
            index,
            payload: encode_truncation(Truncation::UpTo),
        });
    }

    /// Checkpoints of this replica the shard's writer has not reported.
    pub fn checkpoints_in_flight(&self) -> u32 {
        self.checkpoints_in_flight
    }

    pub fn on_checkpoint_failed(&mut self) {
        self.checkpoints_in_flight = self.checkpoints_in_flight.saturating_sub(1);
    }

    /// Writes, now, the starting checkpoints of regions split off this one
    /// that the shard's writer may not have written yet. Called before
    /// this region writes a checkpoint in the turn: that checkpoint drops
    /// the split-off ranges, and must not be durable while theirs are not
    /// (the data of those ranges would then be in no checkpoint).
    fn write_split_children(&mut self) -> Result<(), RaftstoreError> {
        for (_, child) in std::mem::take(&mut self.split_children) {
            child.write(&self.checkpoint_dir).result?;
        }
        Ok(())
    }

    pub fn status(&self) -> RegionStatus {
        let conf_state = self.raw.store().conf_state();
        let learners = learners(conf_state);
        let role = if learners.contains(&self.raw.raft.id) {
            "learner"
        } else {
            role_name(self.raw.raft.state)
        };
        RegionStatus {
            region: RegionMeta::clone(&self.region),
            leader_id: self.raw.raft.leader_id,
            term: self.raw.raft.term,
            commit_index: self.raw.raft.raft_log.committed,
            applied_index: self.applied_index,
            role,
            learners,
            down_peers: Vec::new(),
            size: self.size,
            hibernating: self.hibernating,
            traffic: self.traffic,
            pending_peers: self.pending_peers(),
            merging_into: self.merging.as_ref().map(|t| t.id),
        }
    }

    /// On a leader, the peers only a snapshot can bring up to date.
    fn pending_peers(&self) -> Vec<u64> {
        if !self.is_leader() {
            return Vec::new();
        }
        let first_index = self.raw.raft.raft_log.first_index();
        self.raw
            .raft
            .prs()
            .iter()
            .filter(|(_, pr)| pr.state == ProgressState::Snapshot || pr.matched + 1 < first_index)
            .map(|(id, _)| *id)
            .collect()
    }

    /// The key a split of this region should happen at: the middle key of
    /// its data, measured now (the size check's choice). Only the leader
    /// decides splits.
    pub fn middle_key(&self) -> Result<Vec<u8>, RaftstoreError> {
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        self.store
            .range_size(&self.region.start_key, &self.region.end_key)
            .middle_key
            .filter(|key| self.region.may_split_at(key))
            .ok_or(RaftstoreError::NoSplitKey {
                region_id: self.region.id,
            })
    }
}

/// The tighter of a request's end key and a region's (empty = unbounded).
fn clamp_end(req_end: &[u8], region_end: &[u8]) -> Vec<u8> {
    match (req_end.is_empty(), region_end.is_empty()) {
        (true, _) => region_end.to_vec(),
        (false, true) => req_end.to_vec(),
        (false, false) => req_end.min(region_end).to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::prelude::{HardState, MessageType};

    const REGION: u64 = 7;

    /// Store 1's replica of a region with voters 1, 2 and 3, elected leader
    /// with store 2's votes. It never hibernates.
    fn leader_of_three() -> Peer {
        let dir: Arc<Path> = std::env::temp_dir()
            .join(format!("flotilla-peer-{}", std::process::id()))
            .into();
        let mut cfg = StoreConfig::new(1, dir.to_path_buf(), Vec::new());
        cfg.hibernate = false;
        let conf_state = ConfState {
            voters: vec![1, 2, 3],
            ..Default::default()
        };
        let checkpoint = RegionCheckpoint {
            region: RegionMeta::whole_keyspace(REGION, &[1, 2, 3]),
            applied_index: 5,
            applied_term: 5,
            conf_state: conf_state.clone(),
            sessions: Default::default(),
            merging: None,
            pairs: Vec::new(),
        };
        let hard_state = HardState {
            term: 5,
            commit: 5,
            ..Default::default()
        };
        let storage = crate::storage::RegionStorage::new(
            REGION,
            dir.clone(),
            hard_state,
            conf_state,
            (5, 5),
            Vec::new(),
        );
        let raw = RawNode::new(
            &cfg.raft_config(5),
            storage,
            &crate::logger::raft_logger(REGION),
        )
        .expect("a valid raft config");
        let state = PeerState {
            checkpoint,
            raw,
            checkpoint_dir: dir,
        };
        let mut peer = Peer::new(
            state,
            Arc::new(KvStore::new()),
            Arc::new(RegionMap::new()),
            &cfg,
        );
        peer.raw.campaign().expect("campaigns");
        let term = peer.raw.raft.term;
        peer.step(reply_from(
            2,
            MessageType::MsgRequestPreVoteResponse,
            term + 1,
        ));
        let term = peer.raw.raft.term;
        peer.step(reply_from(2, MessageType::MsgRequestVoteResponse, term));
        assert!(peer.is_leader(), "elected with store 2's vote");
        peer
    }

    fn reply_from(from: u64, kind: MessageType, term: u64) -> Message {
        let mut msg = Message::default();
        msg.set_msg_type(kind);
        msg.from = from;
        msg.to = 1;
        msg.term = term;
        msg
    }

    /// Ticks the leader once; `answering` followers answer its heartbeats.
    fn tick_answered_by(peer: &mut Peer, answering: &[u64]) {
        peer.tick();
        let term = peer.raw.raft.term;
        for &from in answering {
            peer.step(reply_from(from, MessageType::MsgHeartbeatResponse, term));
        }
    }

    /// raft-rs's check-quorum forgets who answered every election timeout;
    /// a membership request landing right after that tick (as placement's
    /// heartbeat-driven dispatch does, every second) must still see the
    /// followers that answered a moment before as alive.
    #[test]
    fn followers_that_answer_stay_alive_right_after_a_check_quorum() {
        let mut peer = leader_of_three();
        let timeout = peer.raw.raft.election_timeout();
        for _ in 0..3 * timeout - 1 {
            tick_answered_by(&mut peer, &[2, 3]);
        }
        peer.tick(); // the third check-quorum; nobody has answered it yet
        assert!(peer.is_leader());
        assert_eq!(peer.down_peers(|_| true), Vec::<u64>::new());
    }

    /// A leader that counts this replica by an earlier incarnation sends it
    /// a commit index beyond its log; raft-rs panics on such a heartbeat.
    #[test]
    fn a_heartbeat_committing_past_the_log_is_dropped() {
        let mut peer = leader_of_three();
        let (term, last) = (peer.raw.raft.term, peer.raw.raft.raft_log.last_index());
        let mut heartbeat = reply_from(2, MessageType::MsgHeartbeat, term + 1);
        heartbeat.commit = last + 100;
        peer.step(heartbeat);
        assert_eq!(peer.raw.raft.term, term, "the heartbeat was not stepped");
        assert!(peer.raw.raft.raft_log.committed <= last);
    }

    /// One turn of this peer alone (its WAL batch taken as durable);
    /// returns the messages it sends.
    fn turn(peer: &mut Peer) -> Vec<Message> {
        let mut out = TurnOutput::default();
        if let Some(rd) = peer.collect_ready(&mut out).expect("a ready") {
            peer.after_persist(rd, &mut out).expect("applied");
        }
        out.messages.into_iter().map(|(_, _, msg)| msg).collect()
    }

    /// Proposes `op`, has store 2 acknowledge it, and returns what the
    /// leader sends once it has committed and applied it.
    fn commit_with_store_2(peer: &mut Peer, op: WriteOp) -> Vec<Message> {
        let (reply, _answer) = oneshot::channel();
        let cmd = WriteCommand {
            header: RequestHeader {
                region_id: REGION,
                epoch: Some(peer.region().epoch),
            },
            id: Default::default(),
            answered_below: 0,
            op,
        };
        peer.propose_write(cmd, reply, Instant::now());
        let appended = turn(peer);
        assert!(appended
            .iter()
            .any(|m| m.get_msg_type() == MessageType::MsgAppend && !m.entries.is_empty()));
        let mut ack = reply_from(2, MessageType::MsgAppendResponse, peer.raw.raft.term);
        ack.index = peer.raw.raft.raft_log.last_index();
        peer.step(ack);
        let sent = turn(peer);
        assert_eq!(peer.applied_index, peer.raw.raft.raft_log.last_index());
        sent
    }

    /// A size check is measured off the turn, one at a time; a measurement
    /// taken from the region before it changed shape is dropped, and the
    /// next check measures it again.
    #[test]
    fn a_size_measurement_of_an_earlier_shape_is_dropped() {
        let mut peer = leader_of_three();
        let limits = SplitThresholds {
            keys: 2,
            bytes: u64::MAX,
        };
        for key in [b"a", b"b", b"c", b"x", b"y"] {
            commit_with_store_2(&mut peer, put(key));
        }
        let Some(check) = peer.size_check_due(limits) else {
            panic!("a leader's first size check is due at once");
        };
        assert!(peer.size_check_due(limits).is_none(), "one at a time");
        let before_split = check.measure();
        assert_eq!(before_split.size.keys, 5);
        let split = WriteOp::Split {
            split_key: b"m".to_vec(),
            new_region_id: 9_002,
        };
        commit_with_store_2(&mut peer, split);
        assert_eq!(peer.on_size_measured(before_split, limits), None);
        assert_eq!(peer.size, RegionSize::default(), "not taken in");
        let Some(check) = peer.size_check_due(limits) else {
            panic!("due again once the split reset the count");
        };
        let measured = check.measure();
        assert_eq!(measured.size.keys, 3);
        assert_eq!(peer.on_size_measured(measured, limits), Some(b"b".to_vec()));
        assert_eq!(peer.size.keys, 3);
    }

    /// A membership change checkpoints the region off the turn, and after
    /// the checkpoints of a split applied before it in the same turn: the
    /// writer keeps that order, so the split-off range is never in no
    /// checkpoint. The in-memory log is dropped to the change at once; the
    /// WAL's copy only once the checkpoint, which names the new member and
    /// holds the region's data, is durable.
    #[test]
    fn a_membership_checkpoint_goes_to_the_writer_after_the_split_before_it() {
        use crate::membership::{PeerChange, PeerChangeKind};
        let mut peer = leader_of_three();
        commit_with_store_2(&mut peer, put(b"a"));
        let header = RequestHeader {
            region_id: REGION,
            epoch: Some(peer.region().epoch),
        };
        let split = WriteCommand {
            header,
            id: Default::default(),
            answered_below: 0,
            op: WriteOp::Split {
                split_key: b"m".to_vec(),
                new_region_id: 9_001,
            },
        };
        let (reply, _split_answer) = oneshot::channel();
        peer.propose_write(split, reply, Instant::now());
        let (reply, _change_answer) = oneshot::channel();
        let learner = PeerChange {
            kind: PeerChangeKind::AddLearner,
            store_id: 4,
        };
        peer.change_peers(header, &[learner], |_| true, reply, Instant::now());
        turn(&mut peer);
        let mut ack = reply_from(2, MessageType::MsgAppendResponse, peer.raw.raft.term);
        ack.index = peer.raw.raft.raft_log.last_index();
        peer.step(ack);
        let mut out = TurnOutput::default();
        if let Some(rd) = peer.collect_ready(&mut out).expect("a ready") {
            peer.after_persist(rd, &mut out).expect("applied");
        }
        assert_eq!(peer.region().epoch.conf_ver, 2, "the change applied");
        assert_eq!(peer.region().end_key, b"m", "after the split");
        let change_index = peer.applied_index;
        let [AppliedCheckpoint::Split(split), AppliedCheckpoint::Membership(membership)] =
            &mut out.checkpoints[..]
        else {
            panic!("the split's checkpoints, then the change's");
        };
        assert!(split.parent.applied_index() < change_index);
        assert_eq!(membership.applied_index(), change_index);
        assert_eq!(
            peer.raw.store().truncated_index(),
            change_index,
            "a new member is sent the checkpoint, not the entries before it"
        );
        let truncations = |out: &TurnOutput| {
            out.wal
                .records()
                .iter()
                .filter(|r| r.kind == RecordKind::Truncate)
                .count()
        };
        assert_eq!(truncations(&out), 0, "the WAL waits for the checkpoint");

        let Some(AppliedCheckpoint::Membership(membership)) = out.checkpoints.pop() else {
            unreachable!("matched above");
        };
        let dir = tempfile::tempdir().expect("a temporary directory");
        (*membership).write(dir.path()).result.expect("written");
        let written = RegionCheckpoint::read(dir.path(), REGION)
            .expect("readable")
            .expect("there");
        assert!(written.conf_state.learners.contains(&4));
        assert_eq!(written.pairs, vec![(b"a".to_vec(), b"v".to_vec())]);
        peer.on_checkpoint_written(change_index, &mut out);
        assert_eq!(truncations(&out), 1, "durable: the WAL may drop the log");
    }

    /// Whether `sent` tells store 2 that everything up to `peer`'s commit
    /// index is committed.
    fn announces_commit(peer: &Peer, sent: &[Message]) -> bool {
        sent.iter().any(|m| {
            m.get_msg_type() == MessageType::MsgAppend
                && m.to == 2
                && m.commit == peer.raw.raft.raft_log.committed
        })
    }

    fn put(key: &[u8]) -> WriteOp {
        WriteOp::Put {
            key: key.to_vec(),
            value: b"v".to_vec(),
        }
    }

    /// Followers learn a new commit index from the next append or
    /// heartbeat; only a change of the region's shape is announced at once,
    /// so that followers split with the leader.
    #[test]
    fn only_a_shape_change_announces_its_commit() {
        let mut peer = leader_of_three();
        commit_with_store_2(&mut peer, put(b"a")); // and the term's no-op
        let sent = commit_with_store_2(&mut peer, put(b"b"));
        assert!(
            !announces_commit(&peer, &sent),
            "a data write waits for the next append"
        );
        let split = WriteOp::Split {
            split_key: b"m".to_vec(),
            new_region_id: REGION + 1,
        };
        let version = peer.region().epoch.version;
        let sent = commit_with_store_2(&mut peer, split);
        assert_eq!(peer.region().epoch.version, version + 1, "split applied");
        assert!(announces_commit(&peer, &sent));
    }

    /// Queues a read of `key` at `now`; the receiver holds its answer once
    /// it is served.
    fn read_at(
        peer: &mut Peer,
        key: &[u8],
        now: Instant,
    ) -> oneshot::Receiver<Result<ReadResult, RaftstoreError>> {
        let (reply, answer) = oneshot::channel();
        let header = RequestHeader {
            region_id: REGION,
            epoch: Some(peer.region().epoch),
        };
        let op = ReadOp::Get { key: key.to_vec() };
        peer.queue_read(header, op, reply, now);
        answer
    }

    /// The ReadIndex heartbeats among `sent` (those carrying a read context).
    fn read_index_heartbeats(sent: &[Message]) -> Vec<Message> {
        sent.iter()
            .filter(|m| m.get_msg_type() == MessageType::MsgHeartbeat && !m.context.is_empty())
            .cloned()
            .collect()
    }

    /// Runs one ReadIndex round to its end, store 2 answering: returns
    /// whether the leader asked for one.
    fn answer_read_round(peer: &mut Peer) -> bool {
        peer.flush_reads();
        let heartbeats = read_index_heartbeats(&turn(peer));
        let Some(heartbeat) = heartbeats.iter().find(|m| m.to == 2) else {
            return false;
        };
        let mut ack = reply_from(2, MessageType::MsgHeartbeatResponse, peer.raw.raft.term);
        ack.context = heartbeat.context.clone();
        peer.step(ack);
        turn(peer);
        true
    }

    fn served(answer: &mut oneshot::Receiver<Result<ReadResult, RaftstoreError>>) -> bool {
        matches!(answer.try_recv(), Ok(Some(Ok(_))))
    }

    /// A leader whose read at the returned instant a quorum confirmed, so
    /// that it holds a lease from then; and the lease's length.
    fn leader_with_lease() -> (Peer, Duration, Instant) {
        let mut peer = leader_of_three();
        commit_with_store_2(&mut peer, put(b"a"));
        let lease = peer.lease_duration.expect("leases are on by default");
        let t0 = Instant::now();
        let mut first = read_at(&mut peer, b"a", t0);
        assert!(answer_read_round(&mut peer));
        assert!(served(&mut first));
        (peer, lease, t0)
    }

    /// A read that a quorum confirmed grants a lease: reads arriving within
    /// it are answered at once, with no round; the first after it waits
    /// for a round of its own.
    #[test]
    fn reads_within_the_lease_skip_the_read_index_round() {
        let mut peer = leader_of_three();
        commit_with_store_2(&mut peer, put(b"a"));
        let lease = peer.lease_duration.expect("leases are on by default");
        let t0 = Instant::now();
        let mut first = read_at(&mut peer, b"a", t0);
        assert!(!served(&mut first), "no lease yet");
        assert!(answer_read_round(&mut peer));
        assert!(served(&mut first));

        let mut within = read_at(&mut peer, b"a", t0 + lease / 2);
        assert!(
            served(&mut within),
            "answered on the lease, before any turn"
        );
        assert!(!answer_read_round(&mut peer), "and no round started");

        let mut after = read_at(&mut peer, b"a", t0 + lease);
        assert!(!served(&mut after), "the lease ran out");
        assert!(answer_read_round(&mut peer));
        assert!(served(&mut after));
    }

    /// With less than a third of the lease left, a read is still answered
    /// on it, and a round starts that extends it.
    #[test]
    fn a_read_late_in_the_lease_extends_it() {
        let (mut peer, lease, t0) = leader_with_lease();
        let late = t0 + lease - lease / 4;
        let mut answer = read_at(&mut peer, b"a", late);
        assert!(served(&mut answer));
        assert!(answer_read_round(&mut peer), "a renewal round");
        let mut later = read_at(&mut peer, b"a", t0 + lease + lease / 2);
        assert!(
            served(&mut later),
            "the renewed lease counts from the renewal"
        );
    }

    /// A leader that started a leadership transfer serves no read on its
    /// lease for the rest of its term: the transfer's vote ignores the
    /// voters' election timers.
    #[test]
    fn a_leadership_transfer_ends_the_lease() {
        let (mut peer, lease, t0) = leader_with_lease();
        let header = RequestHeader {
            region_id: REGION,
            epoch: Some(peer.region().epoch),
        };
        peer.transfer_leader(&header, 3).expect("store 3 votes");
        let mut answer = read_at(&mut peer, b"a", t0 + lease / 10);
        assert!(
            !served(&mut answer),
            "no read on the lease during a transfer"
        );
        // Store 3 never answers: raft-rs gives the transfer up after an
        // election timeout, and this replica still leads.
        for _ in 0..peer.raw.raft.election_timeout() {
            tick_answered_by(&mut peer, &[2]);
        }
        assert!(peer.is_leader() && peer.raw.raft.lead_transferee.is_none());
        let t1 = t0 + lease / 5;
        let mut confirmed = read_at(&mut peer, b"a", t1);
        assert!(answer_read_round(&mut peer));
        assert!(served(&mut confirmed));
        let mut next = read_at(&mut peer, b"a", t1 + lease / 10);
        assert!(
            !served(&mut next),
            "a confirmed round grants no lease in the transfer's term"
        );
    }

    /// With leases off, every read waits for a round.
    #[test]
    fn without_leases_every_read_has_a_round() {
        let mut peer = leader_of_three();
        peer.lease_duration = None;
        commit_with_store_2(&mut peer, put(b"a"));
        let t0 = Instant::now();
        let mut first = read_at(&mut peer, b"a", t0);
        assert!(answer_read_round(&mut peer));
        assert!(served(&mut first));
        let mut answer = read_at(&mut peer, b"a", t0);
        assert!(!served(&mut answer));
        assert!(answer_read_round(&mut peer));
        assert!(served(&mut answer));
    }

    #[test]
    fn a_silent_follower_is_down_after_an_election_timeout_of_leading() {
        let mut peer = leader_of_three();
        let timeout = peer.raw.raft.election_timeout();
        for _ in 0..timeout - 1 {
            tick_answered_by(&mut peer, &[2]);
        }
        assert_eq!(
            peer.down_peers(|_| true),
            Vec::<u64>::new(),
            "too early to judge store 3"
        );
        for _ in 0..2 {
            tick_answered_by(&mut peer, &[2]);
        }
        assert_eq!(peer.down_peers(|_| true), vec![3]);
        assert_eq!(
            peer.down_peers(|store| store != 2),
            vec![2, 3],
            "a store that stopped pinging is down whatever the region heard"
        );
    }
}
