//! Simulated clients: each issues one register operation at a time (read,
//! write or compare-and-swap on a small key set) straight into the nodes'
//! shards, follows leader hints, retries a write under the same write id
//! (so it applies at most once), and records what it observed.
//!
//! Clients route by the cluster's current regions, not a static list: each
//! keeps a [`RegionCache`] learnt from the nodes' status, sends every
//! attempt to the region holding the key with that region's epoch, and on
//! EpochNotMatch, KeyNotInRegion or RegionNotFound (never executed) refreshes
//! the cache and retries, a write under the same write id.
//!
//! Outcomes follow the history's conventions: a write whose fate stayed
//! unknown at its deadline is `Info` and its process retires (a fresh
//! process id takes over, since the old one may still have an operation in
//! flight); a read that got no answer is `Fail`.

use super::node::SimNode;
use super::routing::RegionCache;
use crate::history::{Command, Operation, Outcome, ProcessId, Response, Value};
use futures::channel::oneshot;
use raftstore::command::{
    ReadOp, ReadResult, RequestHeader, WriteCommand, WriteId, WriteOp, WriteResult,
};
use raftstore::region::RegionEpoch;
use raftstore::shard_core::ShardMsg;
use raftstore::RaftstoreError;
use rand::rngs::StdRng;
use rand::Rng;
use std::collections::{BTreeMap, VecDeque};

/// How long a client keeps retrying one operation, in virtual ms.
const OPERATION_DEADLINE_MS: u64 = 4_000;
/// Pause before retrying at another node.
const RETRY_BACKOFF_MS: u64 = 5;

enum Reply {
    Write(oneshot::Receiver<Result<WriteResult, RaftstoreError>>),
    Read(oneshot::Receiver<Result<ReadResult, RaftstoreError>>),
}

enum Attempt {
    /// Waiting for the node's answer.
    Sent(Reply),
    /// Waiting to retry.
    Backoff { until_ms: u64 },
}

struct InFlight {
    /// Index of the operation in the history.
    op_index: usize,
    key: Vec<u8>,
    /// The region the last attempt was routed to (0 before the first),
    /// and the epoch it was sent with.
    region_id: u64,
    epoch: RegionEpoch,
    /// The write; its header is rewritten for every attempt's routing.
    write: Option<WriteCommand>,
    read: Option<ReadOp>,
    node: u64,
    attempt: Attempt,
    deadline_ms: u64,
    /// Some attempt of this write may have been applied.
    maybe_applied: bool,
}

/// What went wrong on the server side that a client must never see.
pub type ServerFault = String;

pub struct SimClient {
    process: ProcessId,
    sequence: u64,
    routing: RegionCache,
    leader_guess: BTreeMap<u64, u64>,
    in_flight: Option<InFlight>,
    next_op_at_ms: u64,
    /// Operations to run before random ones (the final reads).
    pub script: VecDeque<(Vec<u8>, Command)>,
    /// Whether to start random operations when the script is empty.
    pub random_ops: bool,
    /// Values this client has seen, per key: CAS candidates.
    seen: BTreeMap<Vec<u8>, Value>,
}

/// Shared context of one client step.
pub struct ClientEnv<'a> {
    pub now_ms: u64,
    pub rng: &'a mut StdRng,
    pub nodes: &'a mut BTreeMap<u64, SimNode>,
    pub keys: &'a [Vec<u8>],
    /// The first `hot_keys` of `keys` get half of the random operations.
    pub hot_keys: usize,
    pub history: &'a mut Vec<Operation>,
    pub next_process: &'a mut ProcessId,
    pub server_faults: &'a mut Vec<ServerFault>,
}

impl SimClient {
    pub fn new(process: ProcessId) -> Self {
        SimClient {
            process,
            sequence: 0,
            routing: RegionCache::default(),
            leader_guess: BTreeMap::new(),
            in_flight: None,
            next_op_at_ms: 0,
            script: VecDeque::new(),
            random_ops: true,
            seen: BTreeMap::new(),
        }
    }

    pub fn is_idle(&self) -> bool {
        self.in_flight.is_none() && self.script.is_empty()
    }

    /// Advances this client: starts, retries, or completes its operation.
    pub fn step(&mut self, env: &mut ClientEnv<'_>) {
        if self.in_flight.is_none() {
            if env.now_ms < self.next_op_at_ms {
                return;
            }
            let next = match self.script.pop_front() {
                Some(op) => op,
                None if self.random_ops => self.random_command(env),
                None => return,
            };
            self.start(env, next.0, next.1);
        }
        self.poll(env);
    }

    fn random_command(&mut self, env: &mut ClientEnv<'_>) -> (Vec<u8>, Command) {
        let pool = match env.rng.gen_bool(0.5) {
            true => env.hot_keys.clamp(1, env.keys.len()),
            false => env.keys.len(),
        };
        let key = env.keys[env.rng.gen_range(0..pool)].clone();
        let fresh = Some(format!("p{}-s{}", self.process, self.sequence + 1).into_bytes());
        let command = match env.rng.gen_range(0..10) {
            0..=3 => Command::Read,
            4..=6 => Command::Write(fresh),
            _ => Command::Cas {
                expected: match env.rng.gen_bool(0.8) {
                    true => self.seen.get(&key).cloned().flatten(),
                    false => None,
                },
                new: fresh,
            },
        };
        (key, command)
    }

    fn start(&mut self, env: &mut ClientEnv<'_>, key: Vec<u8>, command: Command) {
        self.sequence += 1;
        // Routed at every attempt (`send`): no region yet.
        let header = RequestHeader {
            region_id: 0,
            epoch: None,
        };
        let (write, read) = match &command {
            Command::Read => (None, Some(ReadOp::Get { key: key.clone() })),
            Command::Write(value) => {
                let op = match value {
                    Some(v) => WriteOp::Put {
                        key: key.clone(),
                        value: v.clone(),
                    },
                    None => WriteOp::Delete { key: key.clone() },
                };
                (Some(self.write_command(header, op)), None)
            }
            Command::Cas { expected, new } => {
                let op = WriteOp::CompareAndSwap {
                    key: key.clone(),
                    expected: expected.clone(),
                    new: new.clone(),
                };
                (Some(self.write_command(header, op)), None)
            }
        };
        env.history.push(Operation {
            process: self.process,
            key: key.clone(),
            command,
            invoked_ns: ms_to_ns(env.now_ms),
            completed_ns: None,
            outcome: Outcome::Info,
        });
        let mut op = InFlight {
            op_index: env.history.len() - 1,
            key,
            region_id: 0,
            epoch: RegionEpoch::default(),
            write,
            read,
            node: pick_node(env),
            attempt: Attempt::Backoff { until_ms: 0 },
            deadline_ms: env.now_ms + OPERATION_DEADLINE_MS,
            maybe_applied: false,
        };
        self.send(env, &mut op);
        self.in_flight = Some(op);
    }

    fn write_command(&self, header: RequestHeader, op: WriteOp) -> WriteCommand {
        WriteCommand {
            header,
            id: WriteId {
                // Client id 0 means "no session": never deduplicated.
                client_id: self.process + 1,
                sequence: self.sequence,
            },
            // One operation at a time: every earlier one is over.
            answered_below: self.sequence,
            op,
        }
    }

    /// Routes the operation's next attempt to the region holding its key
    /// and sends it to `op.node` (the region's guessed leader when the
    /// routing changed). Waits and retries if no known region holds the key.
    fn send(&mut self, env: &mut ClientEnv<'_>, op: &mut InFlight) {
        if self.routing.locate(&op.key).is_none() {
            self.routing.refresh(env.nodes);
        }
        let Some(region) = self.routing.locate(&op.key) else {
            op.attempt = Attempt::Backoff {
                until_ms: env.now_ms + RETRY_BACKOFF_MS,
            };
            return;
        };
        let header = RequestHeader {
            region_id: region.id,
            epoch: Some(region.epoch),
        };
        if region.id != op.region_id {
            op.region_id = region.id;
            if let Some(&leader) = self.leader_guess.get(&region.id) {
                op.node = leader;
            }
        }
        op.epoch = region.epoch;
        let Some(node) = env.nodes.get_mut(&op.node).filter(|n| n.is_up()) else {
            // Connection refused: nothing was sent.
            op.node = pick_node(env);
            op.attempt = Attempt::Backoff {
                until_ms: env.now_ms + RETRY_BACKOFF_MS,
            };
            return;
        };
        op.attempt = if let Some(cmd) = op.write.as_mut() {
            cmd.header = header;
            let (reply, rx) = oneshot::channel();
            node.deliver(
                op.region_id,
                ShardMsg::Write {
                    region_id: op.region_id,
                    cmd: Box::new(cmd.clone()),
                    reply,
                },
            );
            Attempt::Sent(Reply::Write(rx))
        } else {
            let (reply, rx) = oneshot::channel();
            let read = op.read.clone().unwrap_or(ReadOp::Get { key: Vec::new() });
            node.deliver(
                op.region_id,
                ShardMsg::Read {
                    region_id: op.region_id,
                    header,
                    op: Box::new(read),
                    reply,
                },
            );
            Attempt::Sent(Reply::Read(rx))
        };
    }

    fn poll(&mut self, env: &mut ClientEnv<'_>) {
        let Some(mut op) = self.in_flight.take() else {
            return;
        };
        let answer = match &mut op.attempt {
            Attempt::Backoff { until_ms } => {
                if env.now_ms >= *until_ms && env.now_ms < op.deadline_ms {
                    self.send(env, &mut op);
                }
                None
            }
            Attempt::Sent(Reply::Write(rx)) => match rx.try_recv() {
                Ok(None) => None,
                Ok(Some(result)) => Some(result.map(write_response)),
                // The node crashed with the request: it may have applied.
                Err(oneshot::Canceled) => Some(Err(RaftstoreError::Indeterminate {
                    region_id: op.region_id,
                    reason: "node crashed".into(),
                })),
            },
            Attempt::Sent(Reply::Read(rx)) => match rx.try_recv() {
                Ok(None) => None,
                Ok(Some(result)) => Some(result.map(read_response)),
                Err(oneshot::Canceled) => {
                    Some(Err(RaftstoreError::Unavailable("node crashed".into())))
                }
            },
        };
        match answer {
            Some(Ok(response)) => return self.complete(env, op, Outcome::Ok(response)),
            Some(Err(err)) => self.on_error(env, &mut op, err),
            None => {}
        }
        if env.now_ms >= op.deadline_ms {
            let outcome = if op.write.is_some() && (op.maybe_applied || sent(&op)) {
                Outcome::Info
            } else {
                Outcome::Fail
            };
            return self.complete(env, op, outcome);
        }
        self.in_flight = Some(op);
    }

    fn on_error(&mut self, env: &mut ClientEnv<'_>, op: &mut InFlight, err: RaftstoreError) {
        match err {
            RaftstoreError::NotLeader { leader, .. } => {
                op.node = leader.unwrap_or_else(|| pick_node(env));
                self.leader_guess.insert(op.region_id, op.node);
            }
            RaftstoreError::Indeterminate { .. } => {
                op.maybe_applied = true;
                op.node = pick_node(env);
            }
            RaftstoreError::Unavailable(_) | RaftstoreError::ShuttingDown => {
                op.node = pick_node(env);
            }
            // Routed by a stale shape of the region, or to a replica that
            // has not caught up with it: nothing was executed.
            RaftstoreError::EpochNotMatch { .. } | RaftstoreError::KeyNotInRegion { .. } => {
                self.routing.refresh(env.nodes);
                let route = self.routing.locate(&op.key).map(|r| (r.id, r.epoch));
                if route == Some((op.region_id, op.epoch)) {
                    op.node = pick_node(env);
                }
            }
            // This node has no replica of the region (yet): nothing was
            // executed.
            RaftstoreError::RegionNotFound { .. } => {
                self.routing.refresh(env.nodes);
                op.node = pick_node(env);
            }
            other => {
                env.server_faults.push(format!(
                    "process {} got an error a client must never see: {other}",
                    self.process
                ));
                op.maybe_applied = true;
            }
        }
        op.attempt = Attempt::Backoff {
            until_ms: env.now_ms + RETRY_BACKOFF_MS,
        };
    }

    fn complete(&mut self, env: &mut ClientEnv<'_>, op: InFlight, outcome: Outcome) {
        let record = &mut env.history[op.op_index];
        record.completed_ns = Some(ms_to_ns(env.now_ms));
        match &outcome {
            Outcome::Ok(Response::Read(v)) => {
                self.seen.insert(record.key.clone(), v.clone());
            }
            Outcome::Ok(Response::Cas {
                succeeded: true, ..
            }) => {
                if let Command::Cas { new, .. } = &record.command {
                    self.seen.insert(record.key.clone(), new.clone());
                }
            }
            _ => {}
        }
        if outcome == Outcome::Info {
            // The operation may still take effect: this process retires.
            self.process = *env.next_process;
            *env.next_process += 1;
            self.leader_guess.clear();
        }
        record.outcome = outcome;
        self.next_op_at_ms = env.now_ms + env.rng.gen_range(0..20);
    }
}

/// Whether the current attempt reached a node (a write in it may apply).
fn sent(op: &InFlight) -> bool {
    matches!(op.attempt, Attempt::Sent(_))
}

fn pick_node(env: &mut ClientEnv<'_>) -> u64 {
    let ids: Vec<u64> = env.nodes.keys().copied().collect();
    ids[env.rng.gen_range(0..ids.len())]
}

fn write_response(result: WriteResult) -> Response {
    match result {
        WriteResult::CompareAndSwap {
            succeeded,
            previous,
        } => Response::Cas {
            succeeded,
            previous,
        },
        WriteResult::Done
        | WriteResult::Deleted { .. }
        | WriteResult::DeletedRange { .. }
        | WriteResult::Split { .. }
        | WriteResult::Region(_) => Response::Written,
    }
}

fn read_response(result: ReadResult) -> Response {
    match result {
        ReadResult::Value(v) => Response::Read(v),
        ReadResult::Pairs(pairs) => Response::Read(pairs.into_iter().next().map(|(_, v)| v)),
    }
}

pub fn ms_to_ns(ms: u64) -> u64 {
    ms * 1_000_000
}
