//! A directed run of the simulator against the leader lease: the leader of
//! the only region confirms its leadership with a read, is cut off and
//! paused, the other two elect a new leader and overwrite a key, and then
//! a read of that key, sent after the overwrite was acknowledged, reaches
//! the old leader as it resumes (still cut off). Any answer but the new
//! value would be a stale read; a correct lease has run out by then, so
//! the old leader must start a ReadIndex round it cannot complete and
//! answer nothing, or that it no longer leads.

use super::{sim_error, SimConfig, Simulation};
use crate::Error;
use futures::channel::oneshot;
use raftstore::command::{ReadOp, ReadResult, RequestHeader, WriteCommand, WriteOp};
use raftstore::shard_core::ShardMsg;
use raftstore::RaftstoreError;
use std::path::Path;

/// The only region of the run.
const REGION: u64 = 1;
const KEY: &[u8] = b"a";
/// How long each step of the story may take, in virtual ms.
const STEP_DEADLINE_MS: u64 = 3_000;
/// How long the resumed old leader is watched.
const WATCH_MS: u64 = 500;

/// What the old leader answered the late read, if anything, within
/// [`WATCH_MS`] of resuming.
pub type LateReadAnswer = Option<Result<ReadResult, RaftstoreError>>;

/// Runs the story with `seed` (which picks message delays and clock
/// rates) and returns the old leader's answer to the late read.
pub fn read_from_a_deposed_leader(seed: u64, scratch: &Path) -> Result<LateReadAnswer, Error> {
    let cfg = SimConfig {
        shards: 1,
        split_keys: Vec::new(),
        clients: 0,
        admin_splits: false,
        ..SimConfig::default()
    };
    let mut sim = Simulation::new(seed, &cfg, scratch)?;
    let old_leader = sim.wait_for_leader(None)?;
    sim.write_through(old_leader, b"old")?;
    // A confirmed read: the old leader now holds a lease, if leases are on.
    let confirmed = sim.send_read(old_leader);
    sim.wait_for_answer(confirmed)?
        .map_err(|e| sim.error(format!("the confirming read failed: {e}")))?;

    let ids: Vec<u64> = sim.nodes.keys().copied().collect();
    sim.network.partition(&ids, &[old_leader]);
    sim.node_mut(old_leader)?.paused = true;
    let new_leader = sim.wait_for_leader(Some(old_leader))?;
    sim.write_through(new_leader, b"new")?;

    let mut late = sim.send_read(old_leader);
    sim.node_mut(old_leader)?.paused = false;
    sim.step_until(WATCH_MS, |_| late.try_recv().ok().flatten())
}

impl Simulation<'_> {
    /// Steps for at most `ms` virtual ms until `poll` returns something.
    fn step_until<T>(
        &mut self,
        ms: u64,
        mut poll: impl FnMut(&Self) -> Option<T>,
    ) -> Result<Option<T>, Error> {
        let until = self.now_ms + ms;
        while self.now_ms < until {
            self.step()?;
            if let Some(found) = poll(self) {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    fn node_mut(&mut self, id: u64) -> Result<&mut super::SimNode, Error> {
        let seed = self.seed;
        self.nodes
            .get_mut(&id)
            .ok_or_else(|| sim_error(seed, format!("no node {id}")))
    }

    /// Steps until a node other than `not` leads the region and has
    /// committed an entry of its term; returns it.
    fn wait_for_leader(&mut self, not: Option<u64>) -> Result<u64, Error> {
        let leader = self.step_until(STEP_DEADLINE_MS, |sim| {
            sim.nodes
                .iter()
                .filter(|(&id, node)| Some(id) != not && !node.paused)
                .find(|(_, node)| {
                    node.status().iter().any(|s| {
                        s.region.id == REGION
                            && s.role == "leader"
                            && s.applied_index == s.commit_index
                    })
                })
                .map(|(&id, _)| id)
        })?;
        leader.ok_or_else(|| self.error("no leader was elected".into()))
    }

    fn header(&self, node: u64) -> Result<RequestHeader, Error> {
        let status = self
            .nodes
            .get(&node)
            .into_iter()
            .flat_map(|n| n.status())
            .find(|s| s.region.id == REGION)
            .ok_or_else(|| self.error(format!("node {node} has no replica of the region")))?;
        Ok(RequestHeader {
            region_id: REGION,
            epoch: Some(status.region.epoch),
        })
    }

    /// Writes `value` to [`KEY`] through `node`; fails unless acknowledged.
    fn write_through(&mut self, node: u64, value: &[u8]) -> Result<(), Error> {
        let (reply, mut answer) = oneshot::channel();
        let cmd = WriteCommand {
            header: self.header(node)?,
            id: Default::default(),
            answered_below: 0,
            op: WriteOp::Put {
                key: KEY.to_vec(),
                value: value.to_vec(),
            },
        };
        self.node_mut(node)?.deliver(
            REGION,
            ShardMsg::Write {
                region_id: REGION,
                cmd: Box::new(cmd),
                reply,
            },
        );
        match self.step_until(STEP_DEADLINE_MS, |_| answer.try_recv().ok().flatten())? {
            Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(self.error(format!("write through {node}: {e}"))),
            None => Err(self.error(format!("write through {node} not acknowledged"))),
        }
    }

    fn send_read(&mut self, node: u64) -> oneshot::Receiver<Result<ReadResult, RaftstoreError>> {
        let (reply, answer) = oneshot::channel();
        if let (Ok(header), Some(target)) = (self.header(node), self.nodes.get_mut(&node)) {
            target.deliver(
                REGION,
                ShardMsg::Read {
                    region_id: REGION,
                    header,
                    op: Box::new(ReadOp::Get { key: KEY.to_vec() }),
                    reply,
                },
            );
        }
        answer
    }

    fn wait_for_answer(
        &mut self,
        mut answer: oneshot::Receiver<Result<ReadResult, RaftstoreError>>,
    ) -> Result<Result<ReadResult, RaftstoreError>, Error> {
        self.step_until(STEP_DEADLINE_MS, |_| answer.try_recv().ok().flatten())?
            .ok_or_else(|| self.error("a read went unanswered".into()))
    }
}
