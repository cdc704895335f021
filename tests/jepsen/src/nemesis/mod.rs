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
//!
//! One fault is in effect at a time; healthy windows separate them.

pub mod events;
pub mod partition;
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
}

impl FaultKind {
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Partition => "partition",
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
        }
    }
}
