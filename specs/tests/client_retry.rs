//! Model checks of the client-retry protocol against raftstore's real apply
//! path: Flotilla's retries (same `WriteId`, and what was answered) keep the
//! register linearizable while the server forgets answered writes, and
//! retries under a fresh `WriteId` are caught.

use std::collections::BTreeSet;

use raftstore::command::WriteId;
use specs::client_retry::{
    RegisterMsg, RegisterWrite, RetryModel, RetryModelConfig, RetryPolicy, ALL_CLIENTS_DONE,
    DUPLICATE_ANSWERED, LATE_COPY_REFUSED, LINEARIZABLE, NO_WRITE_REFUSED,
};
use specs::depth::Depth;
use specs::register_spec::{RegisterOp, Value};
use stateright::actor::{ActorModelAction, Id};
use stateright::{Checker, HasDiscoveries, Model, Path};

type RetryPath = Path<<RetryModel as Model>::State, <RetryModel as Model>::Action>;

/// Fewer unique states than this would mean the model stopped exploring
/// (the quick bounds reach several times more).
const QUICK_STATES_MIN: usize = 10_000;

fn v(text: &str) -> Value {
    Value::from_str_bytes(text)
}

fn check_exhaustively(config: RetryModelConfig) -> impl Checker<RetryModel> {
    config.checker().spawn_dfs().join()
}

/// Checks `config` until a counterexample to [`LINEARIZABLE`] is found and
/// returns it.
fn linearizability_counterexample(config: RetryModelConfig) -> RetryPath {
    let checker = config
        .checker()
        .finish_when(HasDiscoveries::AnyOf(BTreeSet::from([LINEARIZABLE])))
        .spawn_dfs()
        .join();
    checker.assert_no_discovery(NO_WRITE_REFUSED);
    let path = checker
        .discovery(LINEARIZABLE)
        .expect("a counterexample to linearizability");
    println!(
        "counterexample to {LINEARIZABLE}: {:?}",
        path.last_state().history
    );
    path
}

/// The writes the server applied along `path`, in order, with who sent them.
fn delivered_writes(path: RetryPath) -> Vec<(WriteId, RegisterWrite)> {
    path.into_actions()
        .into_iter()
        .filter_map(|action| match action {
            ActorModelAction::Deliver {
                dst,
                msg: RegisterMsg::Write { id, write, .. },
                ..
            } if dst == Id::from(0) => Some((id, write)),
            _ => None,
        })
        .collect()
}

/// Checks `workloads` both ways: linearizable with Flotilla's same-id
/// retries; with fresh ids, a counterexample whose delivered writes hold
/// one operation applied twice, at the returned positions.
fn passes_with_same_ids_fails_with_fresh_ones(
    workloads: Vec<Vec<RegisterOp>>,
) -> (Vec<(WriteId, RegisterWrite)>, usize, usize) {
    let correct = RetryModelConfig {
        workloads: workloads.clone(),
        retry_max: 1,
        policy: RetryPolicy::ReuseWriteId,
    };
    // Not `assert_properties`: a client whose only write is its first
    // operation never says it was answered, so no late copy is refused.
    let checker = check_exhaustively(correct);
    checker.assert_no_discovery(LINEARIZABLE);
    checker.assert_no_discovery(NO_WRITE_REFUSED);
    checker.assert_any_discovery(ALL_CLIENTS_DONE);
    checker.assert_any_discovery(DUPLICATE_ANSWERED);
    let broken = RetryModelConfig {
        workloads,
        retry_max: 1,
        policy: RetryPolicy::FreshWriteId,
    };
    let writes = delivered_writes(linearizability_counterexample(broken));
    let (first, second) = applied_twice(&writes).unwrap_or_else(|| panic!("{writes:?}"));
    (writes, first, second)
}

/// Positions in `writes` of one client's operation applied under two ids.
fn applied_twice(writes: &[(WriteId, RegisterWrite)]) -> Option<(usize, usize)> {
    (0..writes.len()).find_map(|i| {
        (i + 1..writes.len())
            .find(|&j| {
                writes[i].0.client_id == writes[j].0.client_id
                    && writes[i].0 != writes[j].0
                    && writes[i].1 == writes[j].1
            })
            .map(|j| (i, j))
    })
}

#[test]
fn flotilla_retries_keep_the_register_linearizable() {
    let depth = Depth::from_env();
    let checker = check_exhaustively(RetryModelConfig::contended(
        RetryPolicy::ReuseWriteId,
        depth,
    ));
    println!(
        "client-retry model ({depth:?}): {} unique states, max depth {}",
        checker.unique_state_count(),
        checker.max_depth()
    );
    checker.assert_no_discovery(LINEARIZABLE);
    checker.assert_no_discovery(NO_WRITE_REFUSED);
    checker.assert_any_discovery(ALL_CLIENTS_DONE);
    checker.assert_any_discovery(DUPLICATE_ANSWERED);
    checker.assert_any_discovery(LATE_COPY_REFUSED);
    assert!(
        checker.unique_state_count() > QUICK_STATES_MIN,
        "only {} states explored",
        checker.unique_state_count()
    );
}

#[test]
fn retries_under_a_fresh_write_id_are_caught() {
    let config = RetryModelConfig::contended(RetryPolicy::FreshWriteId, Depth::Quick);
    let writes = delivered_writes(linearizability_counterexample(config));
    assert!(applied_twice(&writes).is_some(), "{writes:?}");
}

#[test]
fn a_retried_cas_applied_twice_is_caught() {
    let workloads = vec![
        vec![
            RegisterOp::Cas {
                expected: None,
                new: v("a"),
            },
            RegisterOp::Read,
        ],
        vec![
            RegisterOp::Cas {
                expected: None,
                new: v("b"),
            },
            RegisterOp::Read,
        ],
    ];
    let (writes, first, second) = passes_with_same_ids_fails_with_fresh_ones(workloads);
    assert!(
        matches!(writes[first].1, RegisterWrite::Cas { .. }),
        "{writes:?}"
    );
    assert!(
        matches!(writes[second].1, RegisterWrite::Cas { .. }),
        "{writes:?}"
    );
}

#[test]
fn a_retried_put_applied_after_a_later_write_is_caught() {
    let workloads = vec![
        vec![
            RegisterOp::Put(v("a")),
            RegisterOp::Put(v("b")),
            RegisterOp::Read,
        ],
        vec![RegisterOp::Read],
    ];
    let (writes, first, second) = passes_with_same_ids_fails_with_fresh_ones(workloads);
    assert_eq!(writes[first].1, RegisterWrite::Put(v("a")), "{writes:?}");
    assert!(
        writes[first + 1..second]
            .iter()
            .any(|(_, write)| *write == RegisterWrite::Put(v("b"))),
        "the later put lands between the two applications of the retried one: {writes:?}"
    );
}
