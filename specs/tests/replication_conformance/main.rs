//! Conformance of the replication model to raft-rs: random traces of the
//! model (timeouts, ticks, client requests, checkpoints and message
//! deliveries among three replicas) are replayed on real raft-rs `RawNode`s
//! over Flotilla's `RegionStorage`, configured as Flotilla configures them,
//! and after every event both must agree on every replica's term, vote,
//! role, leader, log, commit and applied state, a leader's view of its
//! followers and pending ReadIndex requests, and the messages in flight.
//!
//! A difference means the model no longer mirrors raft-rs (after a raft-rs
//! upgrade, say), so what the model checks would not be what runs.

mod convert;
mod real_cluster;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use specs::depth::Depth;
use specs::register_spec::{RegisterOp, Value};
use specs::replication::{Action, ReplicationConfig, ReplicationModel};
use stateright::Model;

use real_cluster::{RealCluster, RealEvent};

/// Everything on, few bounds: random traces need no exhaustive search.
fn config() -> ReplicationConfig {
    let value = |text: &str| Value::from_str_bytes(text);
    ReplicationConfig {
        workloads: vec![
            vec![
                RegisterOp::Put(value("a")),
                RegisterOp::Read,
                RegisterOp::Cas {
                    expected: Some(value("a")),
                    new: value("c"),
                },
                RegisterOp::Read,
            ],
            vec![
                RegisterOp::Read,
                RegisterOp::Put(value("b")),
                RegisterOp::Read,
            ],
        ],
        term_max: 8,
        heartbeats: true,
        check_quorum: true,
        checkpoints: true,
        client_deadlines: true,
        network_max: usize::MAX,
        ..ReplicationConfig::reads(Depth::Quick)
    }
}

/// Replays one random trace of `steps_max` events from `seed`.
fn replay(seed: u64, steps_max: usize) {
    let model = ReplicationModel::new(config());
    let cfg = model.cfg.clone();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut state = model.init_states().remove(0);
    let mut real = RealCluster::new();
    let mut actions = Vec::new();
    for step in 0..steps_max {
        actions.clear();
        model.actions(&state, &mut actions);
        if actions.is_empty() {
            return;
        }
        let action = pick(&mut rng, &actions);
        let context = format!("step {step} of seed {seed}: {action:?}");
        let (id, event) = match &action {
            Action::Deliver(m) => (m.to, RealEvent::Deliver(m)),
            Action::ElectionTimeout(id) => (*id, RealEvent::ElectionTimeout),
            Action::HeartbeatTick(id) => (*id, RealEvent::HeartbeatTick),
            Action::CheckQuorumTick(id) => (*id, RealEvent::CheckQuorumTick),
            Action::SnapshotTimeout { leader, to } => {
                (*leader, RealEvent::SnapshotTimeout { to: *to })
            }
            Action::Checkpoint(id) => (*id, RealEvent::Checkpoint),
            Action::Invoke { client, at } => {
                let op = specs::replication::raft::log::OpId {
                    client: *client,
                    op: state.clients[usize::from(*client)].next_op,
                };
                match cfg.op(op) {
                    RegisterOp::Read => (*at, RealEvent::None),
                    _ => (*at, RealEvent::Propose(convert::op_data(op))),
                }
            }
            Action::Deadline { .. } => {
                state = model
                    .next_state(&state, action.clone())
                    .expect("a next state");
                continue;
            }
        };
        let sent_before = sent_reads(&state, id);
        let next = model
            .next_state(&state, action.clone())
            .expect("a next state");
        let read_ctxs: Vec<u64> = sent_reads(&next, id)
            .into_iter()
            .filter(|ctx| !sent_before.contains(ctx))
            .collect();
        real.run(&cfg, id, event, &read_ctxs);
        state = next;
        real.tidy_network(&state);
        real.assert_conforms(&state, &context);
    }
}

/// A random event, four times in five a delivery if any message is in
/// flight (timers fire far less often than messages arrive).
fn pick(rng: &mut StdRng, actions: &[Action]) -> Action {
    let (deliveries, others): (Vec<&Action>, Vec<&Action>) = actions
        .iter()
        .partition(|a| matches!(a, Action::Deliver(_)));
    let pool = if others.is_empty() || (!deliveries.is_empty() && rng.gen_bool(0.8)) {
        deliveries
    } else {
        others
    };
    pool[rng.gen_range(0..pool.len())].clone()
}

/// The ReadIndex batches replica `id` has requested from Raft.
fn sent_reads(state: &specs::replication::ClusterState, id: u64) -> Vec<u64> {
    state
        .replica(id)
        .reads
        .iter()
        .filter(|batch| batch.sent)
        .map(|batch| batch.ctx)
        .collect()
}

#[test]
fn model_traces_replay_identically_on_raft_rs() {
    let traces = match Depth::from_env() {
        Depth::Quick => 200,
        Depth::Deep => 5_000,
    };
    for seed in 0..traces {
        replay(seed, 150);
    }
    println!("{traces} random traces of up to 150 events replayed on raft-rs");
}
