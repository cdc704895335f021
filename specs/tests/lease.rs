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

/// Explores the model with `bound` and `restart_rule` at the quick bounds
/// until the lease property fails; returns (and prints) how it failed.
fn counterexample(bound: LeaseBound, restart_rule: RestartRule) -> Vec<Action> {
    let checker = LeaseModel::new(bound, restart_rule, Depth::Quick)
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
        "{bound:?} with {restart_rule:?} must let a new leader in during the lease"
    );
    println!("counterexample: {path:?}");
    path
}

#[test]
fn a_lease_as_long_as_an_election_timeout_overlaps_the_next_leader() {
    counterexample(LeaseBound::WholeElectionTimeout, RestartRule::RefuseVotes);
}

#[test]
fn a_lease_that_forgets_late_ticks_overlaps_the_next_leader() {
    counterexample(LeaseBound::NoLateTicks, RestartRule::RefuseVotes);
}

#[test]
fn a_replica_that_votes_right_after_a_restart_elects_a_leader_during_the_lease() {
    let path = counterexample(LeaseBound::Flotilla, RestartRule::VoteAtOnce);
    assert!(
        path.iter().any(|a| matches!(a, Action::Restart(_))),
        "the counterexample restarts a replica: {path:?}"
    );
}
