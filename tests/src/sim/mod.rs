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
//! A run has three phases: faults while clients run register operations;
//! repair (every node restarted and resumed, the network healed) with
//! clients still running; then a final read of every key. It then checks:
//! - election safety: never two leaders of a region in one term;
//! - no server-side error a client must never see;
//! - convergence: every replica of a region reaches the same applied index
//!   and holds the same data;
//! - linearizability of the whole history, with the same checker the
//!   real-cluster tests use (acknowledged writes lost on recovery show up
//!   here as reads that no order explains).

mod client;
mod faults;
mod network;
mod node;

pub use faults::FaultCounts;

use crate::history::{Command, History, Operation, ProcessId};
use crate::Error;
use client::{ClientEnv, SimClient};
use faults::Nemesis;
use network::SimNetwork;
use node::SimNode;
use raftstore::region::{PeerMeta, RegionEpoch, RegionMeta};
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
    /// Region boundaries: `n` split keys make `n + 1` regions.
    pub split_keys: Vec<Vec<u8>>,
    pub keys: Vec<Vec<u8>>,
    pub clients: usize,
    /// Virtual time with faults, then with everything repaired.
    pub fault_ms: u64,
    pub repair_ms: u64,
    /// How long the final reads and convergence may take.
    pub settle_deadline_ms: u64,
    /// Applied entries between checkpoints: small, so that logs compact and
    /// lagging replicas install snapshots.
    pub checkpoint_every_entries: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            nodes: 3,
            shards: 2,
            split_keys: vec![b"h".to_vec(), b"p".to_vec()],
            keys: ["a", "c", "j", "m", "r", "x"]
                .iter()
                .map(|k| k.as_bytes().to_vec())
                .collect(),
            clients: 5,
            fault_ms: 6_000,
            repair_ms: 2_000,
            settle_deadline_ms: 30_000,
            checkpoint_every_entries: 40,
        }
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
    regions: Vec<RegionMeta>,
    network: SimNetwork,
    clients: Vec<SimClient>,
    history: Vec<Operation>,
    next_process: ProcessId,
    server_faults: Vec<String>,
    /// (region, term) -> the node seen leading it.
    leaders: BTreeMap<(u64, u64), u64>,
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
            regions,
            network: SimNetwork::new(),
            clients,
            history: Vec::new(),
            next_process: cfg.clients as ProcessId,
            server_faults: Vec::new(),
            leaders: BTreeMap::new(),
        })
    }

    fn run(mut self) -> Result<SimReport, Error> {
        let mut nemesis = Nemesis::new(500);
        while self.now_ms < self.cfg.fault_ms {
            nemesis
                .step(
                    self.now_ms,
                    &mut self.rng,
                    &mut self.nodes,
                    &mut self.network,
                )
                .map_err(|e| self.error(format!("a node failed to recover: {e}")))?;
            self.step()?;
        }
        nemesis
            .heal_all(self.now_ms, &mut self.nodes, &mut self.network)
            .map_err(|e| self.error(format!("a node failed to recover: {e}")))?;
        let repaired_until = self.now_ms + self.cfg.repair_ms;
        while self.now_ms < repaired_until {
            self.step()?;
        }
        self.final_reads()?;
        self.converge()?;
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
            faults: nemesis.counts,
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
            regions: &self.regions,
            keys: &self.cfg.keys,
            history: &mut self.history,
            next_process: &mut self.next_process,
            server_faults: &mut self.server_faults,
        };
        for client in &mut self.clients {
            client.step(&mut env);
        }
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
        self.check_election_safety()
    }

    fn check_election_safety(&mut self) -> Result<(), Error> {
        for (&id, node) in &self.nodes {
            for status in node.status().into_iter().filter(|s| s.role == "leader") {
                let leader = *self
                    .leaders
                    .entry((status.region.id, status.term))
                    .or_insert(id);
                if leader != id {
                    return Err(sim_error(
                        self.seed,
                        format!(
                            "election safety: region {} has leaders {leader} and {id} in term {} (at {} ms)",
                            status.region.id, status.term, self.now_ms
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

    /// Waits until every replica of every region applied the same index,
    /// then compares their data.
    fn converge(&mut self) -> Result<(), Error> {
        let deadline = self.now_ms + self.cfg.settle_deadline_ms;
        loop {
            let mut applied: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
            for node in self.nodes.values() {
                for s in node.status() {
                    applied
                        .entry(s.region.id)
                        .or_default()
                        .push(s.applied_index);
                }
            }
            let settled = applied
                .values()
                .all(|v| v.len() == self.nodes.len() && v.iter().all(|&a| a == v[0]));
            if settled {
                break;
            }
            if self.now_ms >= deadline {
                return Err(self.error(format!(
                    "replicas did not converge: applied indexes per region {applied:?}"
                )));
            }
            self.step()?;
        }
        for region in &self.regions {
            let mut contents = self
                .nodes
                .iter()
                .map(|(&id, node)| (id, node.region_pairs(region)));
            let Some((first_id, first)) = contents.next() else {
                continue;
            };
            for (id, pairs) in contents {
                if pairs != first {
                    return Err(self.error(format!(
                        "region {}: node {id} holds {} pairs, node {first_id} {} pairs, at the same applied index",
                        region.id,
                        pairs.len(),
                        first.len()
                    )));
                }
            }
        }
        Ok(())
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
            for region in &self.regions {
                node.region_pairs(region).hash(&mut hasher);
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
