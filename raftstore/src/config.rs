//! Store configuration: where data lives, how many shards, Raft timing,
//! request limits. Defaults follow DESIGN (tick 100 ms, heartbeat 2 ticks,
//! election 10 ticks, pre-vote and check-quorum on).

use std::path::PathBuf;
use std::time::Duration;

use crate::peer::SplitThresholds;
use crate::region::RegionMeta;

#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// This node's store id (also its Raft peer id in every region).
    pub node_id: u64,
    pub data_dir: PathBuf,
    /// glommio executors (cores) this node runs; regions are spread over them.
    pub shards: usize,
    /// Pin shard `i` to CPU `i` (production); off when many nodes share a machine.
    pub pin_cores: bool,
    /// The regions a fresh store bootstraps (static for now).
    pub initial_regions: Vec<RegionMeta>,
    pub tick: Duration,
    pub heartbeat_ticks: usize,
    pub election_ticks: usize,
    /// Upper bound (exclusive) of the randomized election timeout, in
    /// ticks; `None` is raft-rs's default of twice `election_ticks`. The
    /// simulator sets `election_ticks + 1` so that raft-rs draws no random
    /// numbers of its own and a seed replays exactly.
    pub election_ticks_max: Option<usize>,
    /// How long a request may wait for its write to apply or read to be confirmed.
    pub request_timeout: Duration,
    /// Ticks a follower may wait for a snapshot the leader sent before the
    /// send counts as failed and is retried (covers transfer and install).
    pub snapshot_timeout_ticks: u32,
    /// Applied entries between checkpoints (after which the log is compacted).
    pub checkpoint_every_entries: u64,
    /// Memory the logs of a shard's awake regions may hold before the
    /// shard checkpoints the largest, whatever `checkpoint_every_entries`
    /// says (see `ShardCore::start_due_checkpoints`).
    pub log_memory_per_shard: usize,
    /// How often a shard checkpoints its asleep regions that applied
    /// entries since their last checkpoint, so that an idle region's log
    /// leaves memory and stops pinning WAL segments (a restart alone adds
    /// an entry to every region).
    pub idle_checkpoint_interval: Duration,
    /// Capacity of each shard's inbox; senders wait when it is full.
    pub inbox_capacity: usize,
    /// A region holding more keys or bytes than this splits at its middle
    /// key (TiKV's defaults: 960,000 keys, 96 MiB).
    pub split: SplitThresholds,
    /// Idle regions stop ticking and heartbeating (see `Peer::hibernate_if_idle`).
    pub hibernate: bool,
    /// A leader may serve reads on its lease, without a ReadIndex round of
    /// their own (see `lease`); a store then refuses votes for an election
    /// timeout after it starts.
    pub lease_reads: bool,
    /// Called by a shard thread whenever it is about to wait for messages
    /// or its next tick: the binary's allocator upkeep (returning freed
    /// pages to the OS). It must cost next to nothing when it has nothing
    /// to do.
    pub on_idle: Option<fn()>,
}

impl StoreConfig {
    pub fn new(node_id: u64, data_dir: PathBuf, initial_regions: Vec<RegionMeta>) -> Self {
        StoreConfig {
            node_id,
            data_dir,
            shards: 2,
            pin_cores: true,
            initial_regions,
            tick: Duration::from_millis(100),
            heartbeat_ticks: 2,
            election_ticks: 10,
            election_ticks_max: None,
            request_timeout: Duration::from_secs(5),
            snapshot_timeout_ticks: 300,
            checkpoint_every_entries: 50_000,
            log_memory_per_shard: 64 << 20,
            idle_checkpoint_interval: Duration::from_secs(60),
            inbox_capacity: 8192,
            split: SplitThresholds {
                keys: 960_000,
                bytes: 96 << 20,
            },
            hibernate: true,
            lease_reads: true,
            on_idle: None,
        }
    }

    /// The raft-rs configuration of a replica whose state machine applied `applied`.
    pub fn raft_config(&self, applied: u64) -> raft::Config {
        assert!(
            self.election_ticks > 2 * self.heartbeat_ticks,
            "election timeout must exceed two heartbeats"
        );
        raft::Config {
            id: self.node_id,
            election_tick: self.election_ticks,
            heartbeat_tick: self.heartbeat_ticks,
            max_election_tick: self.election_ticks_max.unwrap_or(0),
            applied,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            pre_vote: true,
            check_quorum: true,
            read_only_option: raft::ReadOnlyOption::Safe,
            // A follower learns a new commit index from the next append
            // or heartbeat, not from a message of its own: that halves the
            // messages per write when a region carries one write at a time.
            // Changes of a region's shape are announced at once
            // (`Peer::announce_commit`); membership changes by raft-rs.
            skip_bcast_commit: true,
            ..Default::default()
        }
    }

    /// How long a store may stay silent before the regions it leads are
    /// presumed leaderless: an election timeout.
    pub fn election_timeout(&self) -> std::time::Duration {
        self.tick * self.election_ticks as u32
    }

    /// Ticks between two idle-checkpoint sweeps (at least one).
    pub fn idle_checkpoint_ticks(&self) -> u64 {
        let ticks = self.idle_checkpoint_interval.as_nanos() / self.tick.as_nanos().max(1);
        (ticks as u64).max(1)
    }

    /// How long a leader's lease lasts after the start of the ReadIndex
    /// round that confirmed it; `None` when reads take no lease.
    pub fn leader_lease(&self) -> Option<std::time::Duration> {
        if !self.lease_reads {
            return None;
        }
        crate::lease::lease_duration(self.tick, self.election_ticks)
    }

    /// Which shard runs `region_id`.
    pub fn shard_of(&self, region_id: u64) -> usize {
        (region_id % self.shards as u64) as usize
    }
}
