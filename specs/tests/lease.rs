//! Model check of the leader lease (`specs::lease`): no replica is elected
//! while the old leader's lease holds, with clocks running up to 10 %
//! apart; and three broken variants are caught: a lease of a whole
//! election timeout, one that forgets late ticks, and votes right after a
//! restart.

use std::collections::BTreeSet;

use specs::depth::Depth;
use specs::lease::{
    Action, LeaseBound, LeaseModel, RestartRule, LEASE_CONFIRMED, NEW_LEADER_AFTER_LEASE,
    NO_LEADER_DURING_LEASE,
};
use stateright::{Checker, HasDiscoveries, Model};

#[test]
fn no_replica_is_elected_while_the_lease_holds() {
    let model = LeaseModel::new(
        LeaseBound::Flotilla,
        RestartRule::RefuseVotes,
        Depth::from_env(),
    );
    let checker = model.checker().spawn_bfs().join();
    println!(
        "lease model: {} unique states, max depth {}",
        checker.unique_state_count(),
        checker.max_depth()
    );
    checker.assert_no_discovery(NO_LEADER_DURING_LEASE);
    checker.assert_any_discovery(LEASE_CONFIRMED);
    checker.assert_any_discovery(NEW_LEADER_AFTER_LEASE);
}

/// Explores `model` until the lease property fails, and returns how.
fn counterexample(model: LeaseModel) -> Vec<Action> {
    let checker = model
        .checker()
        .finish_when(HasDiscoveries::AnyOf(BTreeSet::from([
            NO_LEADER_DURING_LEASE,
        ])))
        .spawn_bfs()
        .join();
    checker
        .discovery(NO_LEADER_DURING_LEASE)
        .map(|path| path.into_actions())
        .unwrap_or_default()
}

#[test]
fn a_lease_as_long_as_an_election_timeout_overlaps_the_next_leader() {
    let model = LeaseModel::new(
        LeaseBound::WholeElectionTimeout,
        RestartRule::RefuseVotes,
        Depth::Quick,
    );
    let path = counterexample(model);
    assert!(
        !path.is_empty(),
        "a lease of a whole election timeout must be caught"
    );
    println!("counterexample: {path:?}");
}

#[test]
fn a_lease_that_forgets_late_ticks_overlaps_the_next_leader() {
    let model = LeaseModel::new(
        LeaseBound::NoLateTicks,
        RestartRule::RefuseVotes,
        Depth::Quick,
    );
    let path = counterexample(model);
    assert!(
        !path.is_empty(),
        "a lease ignoring late ticks must be caught"
    );
    println!("counterexample: {path:?}");
}

#[test]
fn a_replica_that_votes_right_after_a_restart_elects_a_leader_during_the_lease() {
    let model = LeaseModel::new(LeaseBound::Flotilla, RestartRule::VoteAtOnce, Depth::Quick);
    let path = counterexample(model);
    assert!(
        path.iter().any(|a| matches!(a, Action::Restart(_))),
        "votes right after a restart must be caught, with a restart: {path:?}"
    );
    println!("counterexample: {path:?}");
}
