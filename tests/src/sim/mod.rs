//! Deterministic simulation of a whole Flotilla cluster in one thread.
//!
//! The production shard logic ([`raftstore::shard_core::ShardCore`]: raft-rs
//! nodes, the two-phase turn, apply, ReadIndex, checkpoints, snapshots,
//! recovery) runs unchanged over a simulated disk (`node`), network
//! (`network`) and clock: virtual milliseconds, with each node's clock
//! drifting at its own rate. Everything random — message delays, drops,
//! duplicates, reordering, crashes (also inside a WAL persist), pauses,
//! partitions, client operations — comes from one seeded generator, and
//! raft-rs is configured to draw no random numbers of its own, so a seed
//! replays exactly: [`simulate`] returns a digest of the run to prove it.
//!
//! Regions split while the run goes on: the nemesis sends admin splits at
//! random keys, and runs configured with small thresholds split regions
//! automatically under load. Clients route by the regions the nodes report
//! (`routing`), so every check below covers regions as they come and go.
//!
//! A run has three phases: faults while clients run register operations;
//! repair (every node restarted and resumed, the network healed) with
//! clients still running; then a final read of every key. It then checks:
//! - election safety: never two leaders of a region id in one term;
//! - shape agreement: a region id at one epoch version has one key range on
//!   every replica that ever reports it;
//! - no server-side error a client (or the operator splitting) must never
//!   see;
//! - convergence: every replica of a region reaches the same applied index,
//!   shape and data, and the regions tile the keyspace. A replica still
//!   missing after a grace period while its node holds nothing over the
//!   region's range is the known split gap (its parent was caught up by a
//!   snapshot taken after the split, and the new region never reached it):
//!   counted and logged, not failed;
//! - linearizability of the whole history, with the same checker the
//!   real-cluster tests use (acknowledged writes lost on recovery show up
//!   here as reads that no order explains).

mod client;
mod faults;
mod network;
mod node;
mod routing;
mod stale_leader;

pub use faults::FaultCounts;
pub use stale_leader::{read_from_a_deposed_leader, LateReadAnswer};

use crate::history::{Command, History, Operation, ProcessId};
use crate::Error;
use client::{ClientEnv, SimClient};
use faults::Nemesis;
use network::SimNetwork;
use node::SimNode;
use raftstore::peer::SplitThresholds;
use raftstore::region::{PeerMeta, RegionEpoch, RegionMeta};
use raftstore::region_map::ranges_overlap;
use raftstore::StoreConfig;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::time::{Duration, Instant};

/// The shape and length of one simulated run.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub nodes: u64,
    pub shards: usize,
    /// Initial region boundaries: `n` split keys make `n + 1` regions.
    pub split_keys: Vec<Vec<u8>>,
    pub keys: Vec<Vec<u8>>,
    /// The first `hot_keys` of `keys` get half of the operations.
    pub hot_keys: usize,
    pub clients: usize,
    /// Virtual time with faults, then with everything repaired.
    pub fault_ms: u64,
    pub repair_ms: u64,
    /// How long the final reads and convergence may take.
    pub settle_deadline_ms: u64,
    /// Applied entries between checkpoints: small, so that logs compact and
    /// lagging replicas install snapshots.
    pub checkpoint_every_entries: u64,
    /// Log memory a shard's awake regions may hold before the largest is
    /// checkpointed: small, so that checkpoints also start on this budget.
    pub log_memory_per_shard: usize,
    /// Whether the nemesis splits regions at random keys.
    pub admin_splits: bool,
    /// A region's leader splits it at its middle key once it holds more
    /// keys than this; `None`: never.
    pub auto_split_keys: Option<u64>,
}

impl Default for SimConfig {
    fn default() -> Self {
        let keys: Vec<Vec<u8>> = ["a", "c", "j", "m", "r", "x"]
            .iter()
            .map(|k| k.as_bytes().to_vec())
            .collect();
        SimConfig {
            nodes: 3,
            shards: 2,
            split_keys: vec![b"h".to_vec(), b"p".to_vec()],
            hot_keys: keys.len(),
            keys,
            clients: 5,
            fault_ms: 6_000,
            repair_ms: 2_000,
            settle_deadline_ms: 30_000,
            checkpoint_every_entries: 40,
            log_memory_per_shard: 16 << 10,
            admin_splits: true,
            auto_split_keys: None,
        }
    }
}

impl SimConfig {
    /// Regions that also split automatically under load: `cold_keys` more
    /// keys spread over the keyspace (the default six stay hot, with half
    /// the operations), and a split threshold of `split_keys` keys.
    pub fn splitting_under_load(cold_keys: usize, split_keys: u64) -> Self {
        let mut cfg = SimConfig::default();
        cfg.keys.extend((0..cold_keys).map(|i| {
            let letter = char::from(b'a' + (i % 26) as u8);
            format!("{letter}{:02}", i / 26).into_bytes()
        }));
        cfg.auto_split_keys = Some(split_keys);
        cfg
    }
}

/// What a passing run did.
#[derive(Clone, Debug)]
pub struct SimReport {
    pub seed: u64,
    /// Operations (ok, fail, info).
    pub outcomes: (usize, usize, usize),
    pub messages_sent: u64,
    pub messages_dropped: u64,
    pub messages_duplicated: u64,
    pub faults: FaultCounts,
    /// Regions at the end (splits made the ones beyond the initial few).
    pub regions: usize,
    /// Replicas missing at the end because of the known split gap.
    pub split_gaps: usize,
    /// Distinct (region, term) leaderships observed.
    pub leaderships: usize,
    pub wal_persists: u64,
    pub virtual_ms: u64,
    /// Hash of the history and final state: equal for equal seeds.
    pub digest: u64,
}

/// Virtual milliseconds per simulation step.
const STEP_MS: u64 = 1;

/// Runs one seeded simulation; scratch files go under `scratch`.
pub fn simulate(seed: u64, cfg: &SimConfig, scratch: &Path) -> Result<SimReport, Error> {
    Simulation::new(seed, cfg, scratch)?.run()
}

struct Simulation<'a> {
    seed: u64,
    cfg: &'a SimConfig,
    rng: StdRng,
    now_ms: u64,
    nodes: BTreeMap<u64, SimNode>,
    network: SimNetwork,
    nemesis: Nemesis,
    clients: Vec<SimClient>,
    history: Vec<Operation>,
    next_process: ProcessId,
    server_faults: Vec<String>,
    /// (region, term) -> the node seen leading it.
    leaders: BTreeMap<(u64, u64), u64>,
    /// (region, epoch version) -> the key range replicas reported for it.
    shapes: BTreeMap<(u64, u64), (Vec<u8>, Vec<u8>)>,
}

/// A peer of a region with no replica of it. The known split gap when the
/// node is up and none of its regions covers any of the region's keys.
#[derive(Debug, PartialEq, Eq)]
struct MissingReplica {
    region_id: u64,
    node: u64,
    node_up: bool,
    /// The node's regions over the missing region's range.
    overlapping: Vec<u64>,
}

/// How long missing replicas must stay missing, with everything else
/// settled, before convergence takes them for the known split gap rather
/// than replicas still on their way (a new region's first snapshot may
/// wait out a snapshot timeout).
const SPLIT_GAP_GRACE_MS: u64 = 6_000;

/// One replica of a region as its node reports it.
struct Replica {
    node: u64,
    applied_index: u64,
    region: RegionMeta,
}

impl<'a> Simulation<'a> {
    fn new(seed: u64, cfg: &'a SimConfig, scratch: &Path) -> Result<Self, Error> {
        let mut rng = StdRng::seed_from_u64(seed);
        let ids: Vec<u64> = (1..=cfg.nodes).collect();
        let regions = build_regions(&cfg.split_keys, &ids);
        let base = Instant::now();
        let mut nodes = BTreeMap::new();
        for &id in &ids {
            let mut store_cfg = StoreConfig::new(
                id,
                scratch.join(format!("seed-{seed}/node-{id}")),
                regions.clone(),
            );
            store_cfg.shards = cfg.shards;
            store_cfg.pin_cores = false;
            store_cfg.tick = Duration::from_millis(10);
            store_cfg.election_ticks_max = Some(store_cfg.election_ticks + 1);
            store_cfg.request_timeout = Duration::from_secs(2);
            store_cfg.checkpoint_every_entries = cfg.checkpoint_every_entries;
            store_cfg.log_memory_per_shard = cfg.log_memory_per_shard;
            if let Some(keys) = cfg.auto_split_keys {
                store_cfg.split = SplitThresholds {
                    keys,
                    bytes: u64::MAX,
                };
            }
            let rate_ppm = rng.gen_range(900_000..1_100_000);
            let node = SimNode::new(store_cfg, rate_ppm, base, 0)
                .map_err(|e| sim_error(seed, format!("node {id} failed to start: {e}")))?;
            nodes.insert(id, node);
        }
        let clients = (0..cfg.clients as ProcessId).map(SimClient::new).collect();
        Ok(Simulation {
            seed,
            cfg,
            rng,
            now_ms: 0,
            nodes,
            network: SimNetwork::new(),
            nemesis: Nemesis::new(500, cfg.admin_splits),
            clients,
            history: Vec::new(),
            next_process: cfg.clients as ProcessId,
            server_faults: Vec::new(),
            leaders: BTreeMap::new(),
            shapes: BTreeMap::new(),
        })
    }

    fn run(mut self) -> Result<SimReport, Error> {
        while self.now_ms < self.cfg.fault_ms {
            self.nemesis
                .step(
                    self.now_ms,
                    &mut self.rng,
                    &mut self.nodes,
                    &mut self.network,
                )
                .map_err(|e| self.error(format!("a node failed to recover: {e}")))?;
            self.step()?;
        }
        self.nemesis
            .heal_all(self.now_ms, &mut self.nodes, &mut self.network)
            .map_err(|e| self.error(format!("a node failed to recover: {e}")))?;
        let repaired_until = self.now_ms + self.cfg.repair_ms;
        while self.now_ms < repaired_until {
            self.step()?;
        }
        self.final_reads()?;
        let split_gaps = self.converge()?;
        self.check_server_faults()?;
        let history = History {
            operations: std::mem::take(&mut self.history),
        };
        crate::linearizability::check(&history).map_err(|e| self.error(e.to_string()))?;
        Ok(SimReport {
            seed: self.seed,
            outcomes: history.outcome_counts(),
            messages_sent: self.network.sent,
            messages_dropped: self.network.dropped,
            messages_duplicated: self.network.duplicated,
            faults: self.nemesis.counts,
            regions: self.region_replicas().len(),
            split_gaps,
            leaderships: self.leaders.len(),
            wal_persists: self.wal_persists(),
            virtual_ms: self.now_ms,
            digest: self.digest(&history),
        })
    }

    /// One virtual millisecond: deliveries, clients, every node's turns.
    fn step(&mut self) -> Result<(), Error> {
        self.now_ms += STEP_MS;
        for delivery in self.network.deliver_due(self.now_ms) {
            if let Some(node) = self.nodes.get_mut(&delivery.to) {
                node.deliver(
                    delivery.region_id,
                    raftstore::shard_core::ShardMsg::Raft {
                        region_id: delivery.region_id,
                        msg: Box::new(delivery.message),
                    },
                );
            }
        }
        let mut env = ClientEnv {
            now_ms: self.now_ms,
            rng: &mut self.rng,
            nodes: &mut self.nodes,
            keys: &self.cfg.keys,
            hot_keys: self.cfg.hot_keys,
            history: &mut self.history,
            next_process: &mut self.next_process,
            server_faults: &mut self.server_faults,
        };
        for client in &mut self.clients {
            client.step(&mut env);
        }
        self.nemesis.poll_splits(&mut self.server_faults);
        let mut outgoing = Vec::new();
        for (&id, node) in self.nodes.iter_mut() {
            if !node.is_up() || node.paused {
                continue;
            }
            let result = node.run_turns(self.now_ms, &mut outgoing);
            for (to, messages) in outgoing.drain(..) {
                self.network
                    .send(&mut self.rng, self.now_ms, id, to, messages);
            }
            if let Err(err) = result {
                if !err.to_string().contains("simulated crash") {
                    return Err(sim_error(
                        self.seed,
                        format!("node {id} stopped at {} ms: {err}", self.now_ms),
                    ));
                }
                node.crash();
            }
        }
        self.check_region_safety()
    }

    /// Election safety and shape agreement, on every replica every step;
    /// and every shard's filing of its regions as awake or asleep.
    fn check_region_safety(&mut self) -> Result<(), Error> {
        for (&id, node) in &self.nodes {
            if let Err(err) = node.check_filing() {
                return Err(sim_error(
                    self.seed,
                    format!("awake set: node {id} at {} ms: {err}", self.now_ms),
                ));
            }
            for status in node.status() {
                let region = &status.region;
                let shape = self
                    .shapes
                    .entry((region.id, region.epoch.version))
                    .or_insert_with(|| (region.start_key.clone(), region.end_key.clone()));
                if (&shape.0, &shape.1) != (&region.start_key, &region.end_key) {
                    return Err(sim_error(
                        self.seed,
                        format!(
                            "shape agreement: region {} at version {} is [{}, {}) on node {id} but was [{}, {}) (at {} ms)",
                            region.id,
                            region.epoch.version,
                            region.start_key.escape_ascii(),
                            region.end_key.escape_ascii(),
                            shape.0.escape_ascii(),
                            shape.1.escape_ascii(),
                            self.now_ms
                        ),
                    ));
                }
                if status.role != "leader" {
                    continue;
                }
                let leader = *self.leaders.entry((region.id, status.term)).or_insert(id);
                if leader != id {
                    return Err(sim_error(
                        self.seed,
                        format!(
                            "election safety: region {} has leaders {leader} and {id} in term {} (at {} ms)",
                            region.id, status.term, self.now_ms
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Every key read once more, after the repair, by clients that start no
    /// other operations; waits for all of them to finish.
    fn final_reads(&mut self) -> Result<(), Error> {
        for client in &mut self.clients {
            client.random_ops = false;
        }
        let clients = self.clients.len();
        for (i, key) in self.cfg.keys.iter().enumerate() {
            self.clients[i % clients]
                .script
                .push_back((key.clone(), Command::Read));
        }
        let deadline = self.now_ms + self.cfg.settle_deadline_ms;
        while !self.clients.iter().all(SimClient::is_idle) {
            if self.now_ms >= deadline {
                return Err(self.error("the final reads did not finish after repair".into()));
            }
            self.step()?;
        }
        let unanswered = self
            .history
            .iter()
            .rev()
            .take(self.cfg.keys.len())
            .filter(|op| !matches!(op.outcome, crate::history::Outcome::Ok(_)))
            .count();
        if unanswered > 0 {
            return Err(self.error(format!(
                "{unanswered} final reads failed on a repaired cluster"
            )));
        }
        Ok(())
    }

    /// Every region's replicas as the nodes report them, by region id.
    fn region_replicas(&self) -> BTreeMap<u64, Vec<Replica>> {
        let mut replicas: BTreeMap<u64, Vec<Replica>> = BTreeMap::new();
        for (&node, sim_node) in &self.nodes {
            for status in sim_node.status() {
                replicas.entry(status.region.id).or_default().push(Replica {
                    node,
                    applied_index: status.applied_index,
                    region: status.region,
                });
            }
        }
        replicas
    }

    /// Waits until every replica of every region applied the same index
    /// and has the same shape, then checks that the regions tile the
    /// keyspace and that replicas hold the same data. Returns how many
    /// replicas are missing because of the known split gap: missing
    /// replicas are waited for, and taken for the gap once nothing changed
    /// for [`SPLIT_GAP_GRACE_MS`].
    fn converge(&mut self) -> Result<usize, Error> {
        let deadline = self.now_ms + self.cfg.settle_deadline_ms;
        // Since when the replicas settled with the same ones missing.
        let mut missing_since = self.now_ms;
        let mut missing_before = Vec::new();
        let (replicas, missing) = loop {
            let replicas = self.region_replicas();
            let unsettled = unsettled_regions(&replicas);
            let starting = self.nodes.values().any(SimNode::has_pending_regions);
            let missing = self.missing_replicas(&replicas);
            let settled = unsettled.is_empty() && !starting;
            if !settled || missing != missing_before {
                missing_since = self.now_ms;
            }
            if settled && (missing.is_empty() || self.now_ms >= missing_since + SPLIT_GAP_GRACE_MS)
            {
                break (replicas, missing);
            }
            if self.now_ms >= deadline {
                return Err(self.error(format!(
                    "replicas did not converge: {}; missing replicas: {missing:?}; split regions waiting to start: {starting}",
                    unsettled.join("; ")
                )));
            }
            missing_before = missing;
            self.step()?;
        };
        let shapes: Vec<&RegionMeta> = replicas.values().map(|r| &r[0].region).collect();
        check_tiling(&shapes).map_err(|e| self.error(format!("convergence: {e}")))?;
        for gap in &missing {
            if !gap.node_up || !gap.overlapping.is_empty() {
                return Err(self.error(format!(
                    "region {} has no replica on node {} (node up: {}; its regions over the range: {:?})",
                    gap.region_id, gap.node, gap.node_up, gap.overlapping
                )));
            }
            tracing::warn!(
                seed = self.seed,
                region = gap.region_id,
                node = gap.node,
                "known split gap: the node holds no replica of the region nor anything over its range (its parent was caught up by a snapshot taken after the split)"
            );
        }
        self.compare_replica_data(&replicas)?;
        Ok(missing.len())
    }

    /// Every replica of a region holds the same pairs (called once they
    /// agree on the applied index).
    fn compare_replica_data(&self, replicas: &BTreeMap<u64, Vec<Replica>>) -> Result<(), Error> {
        for (id, region_replicas) in replicas {
            let mut contents = region_replicas
                .iter()
                .map(|x| (x.node, self.nodes[&x.node].region_pairs(&x.region)));
            let Some((first_node, first)) = contents.next() else {
                continue;
            };
            for (node, pairs) in contents {
                if pairs != first {
                    let differ = |p: Option<&(Vec<u8>, Vec<u8>)>| {
                        p.map(|(k, v)| format!("{}={}", k.escape_ascii(), v.escape_ascii()))
                    };
                    let at = (0..pairs.len().max(first.len()))
                        .find(|&i| pairs.get(i) != first.get(i))
                        .unwrap_or_default();
                    return Err(self.error(format!(
                    "region {id}: node {node} holds {} pairs, node {first_node} {} pairs, at the same applied index; they first differ at pair {at}: {:?} vs {:?}",
                    pairs.len(),
                    first.len(),
                    differ(pairs.get(at)),
                    differ(first.get(at)),
                )));
                }
            }
        }
        Ok(())
    }

    /// Every peer of a region that has no replica of it.
    fn missing_replicas(&self, replicas: &BTreeMap<u64, Vec<Replica>>) -> Vec<MissingReplica> {
        let mut missing = Vec::new();
        for (&region_id, region_replicas) in replicas {
            let region = &region_replicas[0].region;
            for peer in &region.peers {
                if region_replicas.iter().any(|x| x.node == peer.store_id) {
                    continue;
                }
                missing.push(MissingReplica {
                    region_id,
                    node: peer.store_id,
                    node_up: self.nodes.get(&peer.store_id).is_some_and(SimNode::is_up),
                    overlapping: replicas
                        .values()
                        .flatten()
                        .filter(|x| x.node == peer.store_id && ranges_overlap(&x.region, region))
                        .map(|x| x.region.id)
                        .collect(),
                });
            }
        }
        missing
    }

    fn check_server_faults(&self) -> Result<(), Error> {
        match self.server_faults.first() {
            Some(fault) => Err(self.error(format!(
                "{} server errors, first: {fault}",
                self.server_faults.len()
            ))),
            None => Ok(()),
        }
    }

    fn wal_persists(&self) -> u64 {
        self.nodes
            .values()
            .flat_map(|n| n.shards.iter())
            .map(|s| s.io.persists)
            .sum()
    }

    fn digest(&self, history: &History) -> u64 {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        format!("{:?}", history.operations).hash(&mut hasher);
        for node in self.nodes.values() {
            for status in node.status() {
                format!("{:?}", status.region).hash(&mut hasher);
                status.applied_index.hash(&mut hasher);
                node.region_pairs(&status.region).hash(&mut hasher);
            }
        }
        self.network.sent.hash(&mut hasher);
        hasher.finish()
    }

    fn error(&self, problem: String) -> Error {
        sim_error(self.seed, problem)
    }
}

fn sim_error(seed: u64, problem: String) -> Error {
    Error::Simulation { seed, problem }
}

/// The regions whose replicas disagree on applied index or shape, each
/// with what every replica reports.
fn unsettled_regions(replicas: &BTreeMap<u64, Vec<Replica>>) -> Vec<String> {
    replicas
        .iter()
        .filter(|(_, r)| {
            r.iter()
                .any(|x| (x.applied_index, &x.region) != (r[0].applied_index, &r[0].region))
        })
        .map(|(id, r)| {
            let at: Vec<String> = r
                .iter()
                .map(|x| {
                    format!(
                        "node {}: applied {} version {}",
                        x.node, x.applied_index, x.region.epoch.version
                    )
                })
                .collect();
            format!("region {id} ({})", at.join(", "))
        })
        .collect()
}

/// Whether `regions` cover the whole keyspace without overlap.
fn check_tiling(regions: &[&RegionMeta]) -> Result<(), String> {
    let mut sorted = regions.to_vec();
    sorted.sort_by(|a, b| a.start_key.cmp(&b.start_key));
    let mut next_start: Option<&[u8]> = Some(b"");
    for region in sorted {
        if next_start != Some(region.start_key.as_slice()) {
            return Err(format!(
                "region {} starts at {:?}, where the previous region ends at {:?}",
                region.id,
                region.start_key.escape_ascii().to_string(),
                next_start.map(|k| k.escape_ascii().to_string())
            ));
        }
        next_start = (!region.end_key.is_empty()).then_some(region.end_key.as_slice());
    }
    match next_start {
        None => Ok(()),
        Some(end) => Err(format!(
            "no region holds the keys from {:?}",
            end.escape_ascii().to_string()
        )),
    }
}

/// Regions covering the keyspace, cut at `split_keys`, each replicated on
/// every node.
fn build_regions(split_keys: &[Vec<u8>], ids: &[u64]) -> Vec<RegionMeta> {
    let mut bounds = vec![Vec::new()];
    bounds.extend(split_keys.iter().cloned());
    bounds.push(Vec::new());
    bounds
        .windows(2)
        .enumerate()
        .map(|(i, w)| RegionMeta {
            id: i as u64 + 1,
            start_key: w[0].clone(),
            end_key: w[1].clone(),
            epoch: RegionEpoch {
                conf_ver: 1,
                version: 1,
            },
            peers: ids
                .iter()
                .map(|&s| PeerMeta { id: s, store_id: s })
                .collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiling_accepts_a_partition_of_the_keyspace_only() {
        let initial = build_regions(&[b"h".to_vec(), b"p".to_vec()], &[1, 2, 3]);
        let all: Vec<&RegionMeta> = initial.iter().collect();
        assert_eq!(check_tiling(&all), Ok(()));
        let (left, right) = initial[1].split(b"k", 9);
        assert_eq!(
            check_tiling(&[&initial[2], &right, &initial[0], &left]),
            Ok(())
        );
        // The parent's old shape next to its split child: an overlap.
        assert!(check_tiling(&[&initial[0], &initial[1], &right, &initial[2]]).is_err());
        // The child missing: a hole.
        assert!(check_tiling(&[&initial[0], &left, &initial[2]]).is_err());
        // Nothing holds the last keys.
        assert!(check_tiling(&[&initial[0], &initial[1]]).is_err());
    }
}
