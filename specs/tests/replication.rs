//! Model checks of Flotilla's Raft replication (raft-rs as Flotilla
//! configures it, plus `raftstore::peer`'s decisions): the Raft safety
//! properties and linearizable reads hold within the bounds, and two
//! deliberately broken variants are caught.
//!
//! Every check prints the states it explored; `FLOTILLA_SPECS_DEEP=1`
//! checks the deep bounds (run them with `--release`).

use std::collections::BTreeSet;

use specs::depth::Depth;
use specs::replication::properties::{
    ELECTION_SAFETY, LEADER_COMPLETENESS, LEADER_ELECTED, LEADER_REPLACED, LINEARIZABLE,
    LOG_MATCHING, NOT_EXECUTED_NEVER_APPLIED, READ_SERVED, SNAPSHOT_INSTALLED,
    STATE_MACHINE_SAFETY, WRITE_ACKNOWLEDGED,
};
use specs::replication::{
    CommitRule, ReadPolicy, ReplicationConfig, ReplicationModel, SupersededWrites,
};
use stateright::{Checker, HasDiscoveries, Model};

const SAFETY: [&str; 6] = [
    ELECTION_SAFETY,
    LOG_MATCHING,
    LEADER_COMPLETENESS,
    STATE_MACHINE_SAFETY,
    LINEARIZABLE,
    NOT_EXECUTED_NEVER_APPLIED,
];

/// Checks `cfg` exhaustively: no safety property fails, each of `reached`
/// is reached, and more than `states_min` states were explored (fewer would
/// mean the model stopped exploring).
fn check_safe(name: &str, cfg: ReplicationConfig, reached: &[&'static str], states_min: usize) {
    let depth = Depth::from_env();
    let checker = ReplicationModel::new(cfg).checker().spawn_dfs().join();
    println!(
        "replication model `{name}` ({depth:?}): {} unique states, max depth {}",
        checker.unique_state_count(),
        checker.max_depth()
    );
    for property in SAFETY {
        checker.assert_no_discovery(property);
    }
    for &property in reached {
        checker.assert_any_discovery(property);
    }
    assert!(
        checker.unique_state_count() > states_min,
        "only {} states explored",
        checker.unique_state_count()
    );
}

/// Checks `cfg` until `property` fails and returns the counterexample's
/// events, printing how many there are.
fn counterexample(name: &str, cfg: ReplicationConfig, property: &'static str) -> usize {
    let checker = ReplicationModel::new(cfg)
        .checker()
        .finish_when(HasDiscoveries::AnyOf(BTreeSet::from([property])))
        .spawn_dfs()
        .join();
    let path = checker.assert_any_discovery(property);
    let events = path.into_actions().len();
    println!(
        "broken variant `{name}`: `{property}` fails after {events} events ({} unique states explored)",
        checker.unique_state_count()
    );
    events
}

#[test]
fn elections_and_replication_are_safe() {
    check_safe(
        "elections",
        ReplicationConfig::elections(Depth::from_env()),
        &[LEADER_ELECTED, LEADER_REPLACED, WRITE_ACKNOWLEDGED],
        1_000_000,
    );
}

#[test]
fn read_index_reads_are_linearizable() {
    check_safe(
        "reads",
        ReplicationConfig::reads(Depth::from_env()),
        &[LEADER_REPLACED, WRITE_ACKNOWLEDGED, READ_SERVED],
        50_000,
    );
}

#[test]
fn snapshots_bring_a_follower_behind_the_compacted_log_up() {
    check_safe(
        "snapshots",
        ReplicationConfig::snapshots(Depth::from_env()),
        &[SNAPSHOT_INSTALLED, WRITE_ACKNOWLEDGED],
        // 3,428 at the quick depth: with no commit broadcast (raft-rs's
        // `skip_bcast_commit`, as Flotilla runs it) there are fewer
        // messages to interleave.
        3_000,
    );
}

#[test]
fn reads_served_without_read_index_are_caught() {
    let cfg = ReplicationConfig {
        read_policy: ReadPolicy::LeaderLocal,
        ..ReplicationConfig::reads(Depth::Quick)
    };
    let events = counterexample("leader-local reads", cfg, LINEARIZABLE);
    assert!(events > 10, "a stale read needs two elections and a write");
}

#[test]
fn acknowledging_a_write_whose_slot_was_taken_is_caught() {
    let cfg = ReplicationConfig {
        superseded_writes: SupersededWrites::Acknowledged,
        ..ReplicationConfig::reads(Depth::Quick)
    };
    let events = counterexample("acknowledge superseded writes", cfg, LINEARIZABLE);
    assert!(events > 10, "a superseded write needs two elections");
}

/// raft-rs commits by counting only entries of the leader's term. Dropping
/// that check is masked in raft-rs's message flow: a new leader's first
/// entry is its no-op and every append runs to the end of the leader's log,
/// so every acknowledgement it counts covers the no-op or was committed
/// already. This keeps the finding honest: if the model ever sent appends
/// that stop short (as `max_size_per_msg` can), this check would fail.
#[test]
fn counting_earlier_term_entries_is_masked_by_the_noop() {
    let cfg = ReplicationConfig {
        protocol: specs::replication::raft::Protocol {
            commit_rule: CommitRule::AnyTerm,
            ..ReplicationConfig::elections(Depth::Quick).protocol
        },
        heartbeats: false,
        check_quorum: false,
        term_max: 3,
        ..ReplicationConfig::elections(Depth::Quick)
    };
    check_safe(
        "commit by counting, terms <= 3",
        cfg,
        &[LEADER_REPLACED, WRITE_ACKNOWLEDGED],
        200_000,
    );
}
