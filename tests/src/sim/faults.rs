//! The simulator's nemesis: from the run's seeded generator it picks, at
//! random intervals, one fault to inject or repair — crash a node (between
//! turns, or inside a WAL persist with the batch lost or kept), restart it,
//! pause and resume a node, partition the network (random halves or one
//! node alone), heal it, and degrade or restore the links (drops,
//! duplicates, long delays that reorder). It also cuts a node off and
//! pauses it, then resumes it still cut off: the others elect new leaders
//! and write meanwhile, and reads sent to the old leader wait in its inbox;
//! a leader that served them on a lease it no longer holds would answer
//! them stale.
//!
//! On a schedule of its own it also splits regions, as an operator would:
//! it picks a region the nodes report and a key inside it and sends the
//! split to the node it believes leads the region (sometimes to any node),
//! then checks the answer. A few requests are built to be refused (a split
//! at the region's start key, or with a stale epoch); one of those
//! succeeding, a success that does not describe the requested split, or an
//! error no caller must see, is a server fault.

use super::network::{LinkFaults, SimNetwork};
use super::node::{SimNode, TornPersist};
use super::routing::{believed_leader, RegionCache};
use futures::channel::oneshot;
use raftstore::command::WriteResult;
use raftstore::region::{RegionEpoch, RegionMeta};
use raftstore::shard_core::ShardMsg;
use raftstore::RaftstoreError;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use std::collections::BTreeMap;

/// Virtual milliseconds between two admin splits: uniform in this range.
const SPLIT_INTERVAL_MS: (u64, u64) = (150, 1_000);
/// Characters of the random split keys the nemesis tries.
const SPLIT_KEY_ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
/// Random split keys tried before settling for one built to be refused.
const SPLIT_KEY_TRIES: usize = 16;

/// Counts of what the nemesis did in one run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    pub crashes: u32,
    pub torn_persists: u32,
    pub restarts: u32,
    pub pauses: u32,
    pub partitions: u32,
    /// Nodes cut off and paused, to be resumed still cut off.
    pub isolated_pauses: u32,
    pub lossy_links: u32,
    /// Admin splits handed to a node, and how many of them applied.
    pub splits_requested: u32,
    pub splits_applied: u32,
}

pub struct Nemesis {
    next_at_ms: u64,
    /// When the next admin split is due; `None` when the run has none.
    next_split_at_ms: Option<u64>,
    pending_splits: Vec<PendingSplit>,
    /// A node cut off and paused, and when it resumes (still cut off).
    isolated_resume: Option<(u64, u64)>,
    pub counts: FaultCounts,
}

/// An admin split waiting for its answer.
struct PendingSplit {
    region_id: u64,
    split_key: Vec<u8>,
    epoch: Option<RegionEpoch>,
    /// Why the split must be refused, when it was built to be.
    must_fail: Option<&'static str>,
    reply: oneshot::Receiver<Result<WriteResult, RaftstoreError>>,
}

impl Nemesis {
    /// A nemesis whose first fault comes at `first_at_ms`, splitting
    /// regions too if `admin_splits`.
    pub fn new(first_at_ms: u64, admin_splits: bool) -> Self {
        Nemesis {
            next_at_ms: first_at_ms,
            next_split_at_ms: admin_splits.then_some(first_at_ms),
            pending_splits: Vec::new(),
            isolated_resume: None,
            counts: FaultCounts::default(),
        }
    }

    /// Injects or repairs one fault if one is due. Fails only if a
    /// restarted node cannot recover from its disk.
    pub fn step(
        &mut self,
        now_ms: u64,
        rng: &mut StdRng,
        nodes: &mut BTreeMap<u64, SimNode>,
        network: &mut SimNetwork,
    ) -> Result<(), RaftstoreError> {
        if self.next_split_at_ms.is_some_and(|at| now_ms >= at) {
            self.next_split_at_ms =
                Some(now_ms + rng.gen_range(SPLIT_INTERVAL_MS.0..SPLIT_INTERVAL_MS.1));
            self.request_split(now_ms, rng, nodes);
        }
        if let Some((node, at_ms)) = self.isolated_resume {
            if now_ms >= at_ms {
                self.isolated_resume = None;
                if let Some(node) = nodes.get_mut(&node) {
                    node.paused = false;
                }
                tracing::debug!(node, now_ms, "nemesis: isolated node resumed");
            }
        }
        if now_ms < self.next_at_ms {
            return Ok(());
        }
        self.next_at_ms = now_ms + rng.gen_range(100..1_200);
        let ids: Vec<u64> = nodes.keys().copied().collect();
        let down = nodes.values().filter(|n| !n.is_up()).count();
        let minority = (ids.len() - 1) / 2;
        let Some(&target) = ids.choose(rng) else {
            return Ok(());
        };
        match rng.gen_range(0..11) {
            0 | 1 => {
                if let Some(node) = nodes.get_mut(&target).filter(|n| n.is_up()) {
                    if down < minority || rng.gen_bool(0.2) {
                        node.crash();
                        self.counts.crashes += 1;
                        tracing::debug!(node = target, now_ms, "nemesis: crash");
                    }
                }
            }
            2 => {
                if let Some(node) = nodes.get_mut(&target).filter(|n| n.is_up()) {
                    let mode = if rng.gen_bool(0.5) {
                        TornPersist::Lost
                    } else {
                        TornPersist::Kept
                    };
                    let shard = rng.gen_range(0..node.shards.len());
                    node.shards[shard].io.crash_in_persist = Some(mode);
                    self.counts.torn_persists += 1;
                    tracing::debug!(node = target, ?mode, now_ms, "nemesis: crash in a persist");
                }
            }
            3 | 4 => {
                for (id, node) in nodes.iter_mut().filter(|(_, n)| !n.is_up()) {
                    node.start(now_ms)?;
                    self.counts.restarts += 1;
                    tracing::debug!(node = id, now_ms, "nemesis: restart");
                }
            }
            5 => {
                if let Some(node) = nodes.get_mut(&target) {
                    node.paused = !node.paused;
                    if node.paused {
                        self.counts.pauses += 1;
                    }
                    tracing::debug!(
                        node = target,
                        paused = node.paused,
                        now_ms,
                        "nemesis: pause toggled"
                    );
                }
            }
            6 => {
                network.heal();
                let side: Vec<u64> = if rng.gen_bool(0.5) {
                    vec![target]
                } else {
                    let mut shuffled = ids.clone();
                    shuffled.shuffle(rng);
                    shuffled.truncate(ids.len() / 2);
                    shuffled
                };
                network.partition(&ids, &side);
                self.counts.partitions += 1;
                tracing::debug!(?side, now_ms, "nemesis: partition");
            }
            7 => {
                network.heal();
                tracing::debug!(now_ms, "nemesis: heal");
            }
            8 => {
                network.faults = LinkFaults {
                    drop_per_mille: rng.gen_range(0..150),
                    duplicate_per_mille: rng.gen_range(0..60),
                    delay_ms: (1, rng.gen_range(2..60)),
                };
                self.counts.lossy_links += 1;
                tracing::debug!(faults = ?network.faults, now_ms, "nemesis: lossy links");
            }
            10 => {
                if self.isolated_resume.is_none() {
                    if let Some(node) = nodes.get_mut(&target).filter(|n| n.is_up()) {
                        network.heal();
                        network.partition(&ids, &[target]);
                        node.paused = true;
                        let resume_at = now_ms + rng.gen_range(50..600);
                        self.isolated_resume = Some((target, resume_at));
                        self.counts.isolated_pauses += 1;
                        tracing::debug!(
                            node = target,
                            now_ms,
                            resume_at,
                            "nemesis: cut off and paused"
                        );
                    }
                }
            }
            _ => {
                network.faults = LinkFaults::HEALTHY;
                tracing::debug!(now_ms, "nemesis: links restored");
            }
        }
        Ok(())
    }

    /// Sends one admin split: a region the nodes report, a key inside it
    /// (or one built to be refused), to the believed leader or any node.
    fn request_split(&mut self, now_ms: u64, rng: &mut StdRng, nodes: &mut BTreeMap<u64, SimNode>) {
        let mut view = RegionCache::default();
        view.refresh(nodes);
        let regions: Vec<&RegionMeta> = view.regions().collect();
        let Some(&region) = regions.choose(rng) else {
            return;
        };
        let ids: Vec<u64> = nodes.keys().copied().collect();
        let target = match believed_leader(nodes, region.id) {
            Some(leader) if rng.gen_bool(0.8) => leader,
            _ => *ids.choose(rng).unwrap_or(&0),
        };
        let stale = RegionEpoch {
            version: region.epoch.version.saturating_sub(1),
            ..region.epoch
        };
        let (split_key, epoch, must_fail) = match (split_key_in(region, rng), rng.gen_range(0..10))
        {
            (None, _) | (_, 0) => (
                region.start_key.clone(),
                Some(region.epoch),
                Some("a split at the region's start key"),
            ),
            (Some(key), 1) => (key, Some(stale), Some("a split with a stale epoch")),
            (Some(key), 2) => (key, None, None),
            (Some(key), _) => (key, Some(region.epoch), None),
        };
        let Some(node) = nodes.get_mut(&target).filter(|n| n.is_up()) else {
            return;
        };
        let (reply, rx) = oneshot::channel();
        node.deliver(
            region.id,
            ShardMsg::Split {
                region_id: region.id,
                epoch,
                split_key: split_key.clone(),
                reply,
            },
        );
        self.counts.splits_requested += 1;
        tracing::debug!(
            node = target,
            region = region.id,
            split_key = %split_key.escape_ascii(),
            ?epoch,
            must_fail,
            now_ms,
            "nemesis: split"
        );
        self.pending_splits.push(PendingSplit {
            region_id: region.id,
            split_key,
            epoch,
            must_fail,
            reply: rx,
        });
    }

    /// Collects the answers to admin splits; what no caller may see goes
    /// to `server_faults`.
    pub fn poll_splits(&mut self, server_faults: &mut Vec<String>) {
        let applied = &mut self.counts.splits_applied;
        self.pending_splits.retain_mut(|split| {
            let answer = match split.reply.try_recv() {
                Ok(None) => return true,
                Ok(Some(answer)) => answer,
                // The node crashed with the request.
                Err(oneshot::Canceled) => return false,
            };
            tracing::debug!(region = split.region_id, ?answer, "nemesis: split answered");
            match judge_split(split, answer) {
                Ok(true) => *applied += 1,
                Ok(false) => {}
                Err(fault) => server_faults.push(fault),
            }
            false
        });
    }

    /// Repairs everything: restarts and resumes every node, heals the
    /// network, restores healthy links.
    pub fn heal_all(
        &mut self,
        now_ms: u64,
        nodes: &mut BTreeMap<u64, SimNode>,
        network: &mut SimNetwork,
    ) -> Result<(), RaftstoreError> {
        self.isolated_resume = None;
        for node in nodes.values_mut() {
            node.paused = false;
            for shard in &mut node.shards {
                shard.io.crash_in_persist = None;
            }
            if !node.is_up() {
                node.start(now_ms)?;
                self.counts.restarts += 1;
            }
        }
        network.heal();
        network.faults = LinkFaults::HEALTHY;
        Ok(())
    }
}

/// A random key strictly inside `region` at which it may split: a short
/// random key, or the region's start key extended by one character.
fn split_key_in(region: &RegionMeta, rng: &mut StdRng) -> Option<Vec<u8>> {
    let random_char = |rng: &mut StdRng| *SPLIT_KEY_ALPHABET.choose(rng).unwrap_or(&b'a');
    (0..SPLIT_KEY_TRIES)
        .map(|_| {
            if rng.gen_bool(0.5) {
                let len = rng.gen_range(1..=3);
                (0..len).map(|_| random_char(rng)).collect::<Vec<u8>>()
            } else {
                let mut key = region.start_key.clone();
                key.push(random_char(rng));
                key
            }
        })
        .find(|key| region.may_split_at(key))
}

/// Whether an admin split's answer is one a caller may see: `Ok(true)` if
/// the split applied, `Ok(false)` if it was refused or its fate is unknown.
fn judge_split(
    split: &PendingSplit,
    answer: Result<WriteResult, RaftstoreError>,
) -> Result<bool, String> {
    let requested = format!(
        "split of region {} at {:?} (epoch {:?})",
        split.region_id,
        split.split_key.escape_ascii().to_string(),
        split.epoch
    );
    let (left, right) = match answer {
        Ok(WriteResult::Split { left, right }) => (left, right),
        Ok(other) => return Err(format!("{requested} answered {other:?}")),
        Err(
            RaftstoreError::NotLeader { .. }
            | RaftstoreError::EpochNotMatch { .. }
            | RaftstoreError::KeyNotInRegion { .. }
            | RaftstoreError::RegionNotFound { .. }
            | RaftstoreError::Indeterminate { .. }
            | RaftstoreError::Unavailable(_)
            | RaftstoreError::ShuttingDown,
        ) => return Ok(false),
        Err(other) => return Err(format!("{requested} failed: {other}")),
    };
    if let Some(reason) = split.must_fail {
        return Err(format!("{requested}: {reason} was applied"));
    }
    let as_requested = left.id == split.region_id
        && right.id != left.id
        && left.end_key == split.split_key
        && right.start_key == split.split_key
        && left.epoch == right.epoch
        && split
            .epoch
            .is_none_or(|e| left.epoch.version == e.version + 1);
    if !as_requested {
        return Err(format!(
            "{requested} answered left {left:?}, right {right:?}"
        ));
    }
    Ok(true)
}
