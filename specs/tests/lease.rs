//! Model check of the leader lease (`specs::lease`): no replica is elected
//! while the old leader's lease holds, with clocks running up to 10 %
//! apart; and four broken variants are caught: a lease of a whole
//! election timeout, one that forgets late ticks, votes right after a
//! restart, and a lease kept through a leadership transfer.

use std::collections::BTreeSet;

use specs::depth::Depth;
use specs::lease::{
    Action, LeaseBound, LeaseModel, RestartRule, TransferRule, LEASE_CONFIRMED,
    NEW_LEADER_AFTER_LEASE, NO_LEADER_DURING_LEASE,
};
use stateright::{Checker, HasDiscoveries, Model};

#[test]
fn no_replica_is_elected_while_the_lease_holds() {
    let with_restart = LeaseModel::new(Depth::from_env());
    let with_transfer = LeaseModel::new(Depth::from_env()).with_transfer();
    for (name, model) in [("restart", with_restart), ("transfer", with_transfer)] {
        let checker = model.checker().spawn_bfs().join();
        println!(
            "lease model with a {name}: {} unique states, max depth {}",
            checker.unique_state_count(),
            checker.max_depth()
        );
        checker.assert_no_discovery(NO_LEADER_DURING_LEASE);
        checker.assert_any_discovery(LEASE_CONFIRMED);
        checker.assert_any_discovery(NEW_LEADER_AFTER_LEASE);
    }
}

/// Explores `model` at the quick bounds until the lease property fails;
/// returns (and prints) how it failed.
fn counterexample(model: LeaseModel) -> Vec<Action> {
    let what = format!(
        "{:?}, {:?}, {:?}",
        model.bound, model.restart_rule, model.transfer_rule
    );
    let checker = model
        .checker()
        .finish_when(HasDiscoveries::AnyOf(BTreeSet::from([
            NO_LEADER_DURING_LEASE,
        ])))
        .spawn_bfs()
        .join();
    let path = checker
        .discovery(NO_LEADER_DURING_LEASE)
        .map(|path| path.into_actions())
        .unwrap_or_default();
    assert!(
        !path.is_empty(),
        "{what} must let a new leader in during the lease"
    );
    println!("counterexample: {path:?}");
    path
}

#[test]
fn a_lease_as_long_as_an_election_timeout_overlaps_the_next_leader() {
    counterexample(LeaseModel {
        bound: LeaseBound::WholeElectionTimeout,
        ..LeaseModel::new(Depth::Quick)
    });
}

#[test]
fn a_lease_that_forgets_late_ticks_overlaps_the_next_leader() {
    counterexample(LeaseModel {
        bound: LeaseBound::NoLateTicks,
        ..LeaseModel::new(Depth::Quick)
    });
}

#[test]
fn a_replica_that_votes_right_after_a_restart_elects_a_leader_during_the_lease() {
    let path = counterexample(LeaseModel {
        restart_rule: RestartRule::VoteAtOnce,
        ..LeaseModel::new(Depth::Quick)
    });
    assert!(
        path.iter().any(|a| matches!(a, Action::Restart(_))),
        "the counterexample restarts a replica: {path:?}"
    );
}

#[test]
fn a_leader_that_keeps_its_lease_through_a_transfer_overlaps_the_next_leader() {
    let path = counterexample(LeaseModel {
        transfer_rule: TransferRule::KeepLease,
        ..LeaseModel::new(Depth::Quick).with_transfer()
    });
    assert!(
        path.iter().any(|a| matches!(a, Action::Transfer(_))),
        "the counterexample transfers the leadership: {path:?}"
    );
}
