//! The nemesis: faults planned from the run's seed ([`schedule`]), applied
//! to the cluster and undone ([`Nemesis`]), and logged ([`events`]).
//!
//! - `partition`: packet drops between nodes, in one of the
//!   [`partition`] shapes (random halves, the leader isolated, a majority
//!   ring, a bridge); healed by removing every drop.
//! - `kill`: SIGKILL to one node, the leader, a minority or every node;
//!   undone by starting them again on their data.
//! - `pause`: SIGSTOP (a frozen process keeps its sockets open but answers
//!   nothing) to one node, the leader or a minority; undone by SIGCONT.
//! - `split`: one to three region splits at keys of the workload's space
//!   (bucket boundaries, which cut between keys in use). Runs with it
//!   also start the servers with a small `--region-split-keys`
//!   ([`SPLIT_NEMESIS_SERVER_ARGS`]), so regions split by size under load too.
//! - `merge`: one to three region merges, each of the region holding a key
//!   of the workload's space into its neighbour on a side the seed picks
//!   (the other side when that one has none; a neighbour with the same
//!   voters first; otherwise the source's replicas are moved onto the
//!   neighbour's stores first, one at a time). Runs with it also get the split nemesis's server
//!   arguments, so the set workload's keys split regions by size for the
//!   merges to join again; list `split` before `merge` for a register run,
//!   whose few keys hold one region until the nemesis splits it.
//! - `transfer`: one to three leader transfers, each of the region holding a
//!   key of the workload's space, to another of its voters.
//! - `membership`: one membership change of the region holding a key of the
//!   workload's space, by joint consensus: a replica moved to a store that
//!   holds none of the region (add a learner, wait until it caught up,
//!   promote it and remove the old voter in one joint change), or, when
//!   every store holds one (3 nodes) or the plan says so, a follower voter
//!   removed, added back as a learner once its replica is gone, and
//!   promoted when caught up. Runs with it also start the servers with a
//!   short `--region-heartbeat-interval`
//!   ([`MEMBERSHIP_NEMESIS_SERVER_ARGS`]), so the placement driver soon
//!   brings regions down to three replicas and frees stores to move to.
//!
//! Splits, merges, transfers and membership changes (`reshape`) are changes
//! of shape, made through the client's admin calls and never undone; each
//! is logged with the regions it left or the error (failures are expected
//! after other faults, and do not stop the run), or, for a merge in a key
//! space of one region, as having had nothing to do.
//!
//! One fault is in effect at a time; healthy windows separate them, and the
//! kinds take turns ([`schedule`]).

pub mod events;
pub mod partition;
mod reshape;
mod runner;
pub mod schedule;

pub use runner::Nemesis;

use serde::Serialize;

/// The kinds of fault a run may inject (`--nemesis`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FaultKind {
    Partition,
    Kill,
    Pause,
    Split,
    Merge,
    Transfer,
    Membership,
}

/// Server arguments of a run with the split or the merge nemesis: a region
/// splits by size once it holds this many keys, so the set workload's
/// thousands of keys split regions on their own while the nemesis splits
/// and merges others.
pub const SPLIT_NEMESIS_SERVER_ARGS: [&str; 2] = ["--region-split-keys", "200"];

/// Server arguments of a run with the membership nemesis: the placement
/// driver hears from region leaders every 5 s rather than every minute, so
/// within seconds it brings a fresh cluster's regions (on every node, by
/// static bootstrap) down to three replicas, and a cluster of more than
/// three nodes has stores without a replica to move one to.
pub const MEMBERSHIP_NEMESIS_SERVER_ARGS: [&str; 2] = ["--region-heartbeat-interval", "5s"];

/// Server arguments a run with `faults` needs.
pub fn server_args(faults: &[FaultKind]) -> Vec<String> {
    let mut args = Vec::new();
    if faults.contains(&FaultKind::Split) || faults.contains(&FaultKind::Merge) {
        args.extend(SPLIT_NEMESIS_SERVER_ARGS.map(str::to_owned));
    }
    if faults.contains(&FaultKind::Membership) {
        args.extend(MEMBERSHIP_NEMESIS_SERVER_ARGS.map(str::to_owned));
    }
    args
}

impl FaultKind {
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Partition => "partition",
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::Split => "split",
            FaultKind::Merge => "merge",
            FaultKind::Transfer => "transfer",
            FaultKind::Membership => "membership",
        }
    }

    /// Whether the fault changes the cluster's shape (regions, leaders,
    /// replicas) for good rather than holding a state that is undone.
    pub fn changes_shape(self) -> bool {
        match self {
            FaultKind::Partition | FaultKind::Kill | FaultKind::Pause => false,
            FaultKind::Split | FaultKind::Merge | FaultKind::Transfer | FaultKind::Membership => {
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_merges_and_membership_changes_bring_their_server_arguments() {
        assert!(server_args(&[FaultKind::Kill, FaultKind::Transfer]).is_empty());
        assert_eq!(server_args(&[FaultKind::Merge]), SPLIT_NEMESIS_SERVER_ARGS);
        assert_eq!(
            server_args(&[FaultKind::Split, FaultKind::Merge]),
            SPLIT_NEMESIS_SERVER_ARGS
        );
        assert_eq!(
            server_args(&[FaultKind::Membership, FaultKind::Split]),
            [
                SPLIT_NEMESIS_SERVER_ARGS.as_slice(),
                MEMBERSHIP_NEMESIS_SERVER_ARGS.as_slice()
            ]
            .concat()
        );
    }
}
