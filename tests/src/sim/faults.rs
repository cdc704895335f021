//! The simulator's nemesis: from the run's seeded generator it picks, at
//! random intervals, one fault to inject or repair — crash a node (between
//! turns, or inside a WAL persist with the batch lost or kept), restart it,
//! pause and resume a node, partition the network (random halves or one
//! node alone), heal it, and degrade or restore the links (drops,
//! duplicates, long delays that reorder).

use super::network::{LinkFaults, SimNetwork};
use super::node::{SimNode, TornPersist};
use raftstore::RaftstoreError;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use std::collections::BTreeMap;

/// Counts of what the nemesis did in one run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    pub crashes: u32,
    pub torn_persists: u32,
    pub restarts: u32,
    pub pauses: u32,
    pub partitions: u32,
    pub lossy_links: u32,
}

pub struct Nemesis {
    next_at_ms: u64,
    pub counts: FaultCounts,
}

impl Nemesis {
    pub fn new(first_at_ms: u64) -> Self {
        Nemesis {
            next_at_ms: first_at_ms,
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
        match rng.gen_range(0..10) {
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
            _ => {
                network.faults = LinkFaults::HEALTHY;
                tracing::debug!(now_ms, "nemesis: links restored");
            }
        }
        Ok(())
    }

    /// Repairs everything: restarts and resumes every node, heals the
    /// network, restores healthy links.
    pub fn heal_all(
        &mut self,
        now_ms: u64,
        nodes: &mut BTreeMap<u64, SimNode>,
        network: &mut SimNetwork,
    ) -> Result<(), RaftstoreError> {
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
