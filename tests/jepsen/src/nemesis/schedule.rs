//! The fault schedule: healthy windows and fault windows taking turns,
//! drawn entirely from the run's seeded RNG before the run starts, so a seed
//! replays the same faults on the same nodes at the same offsets. Only
//! "the leader" is decided when the fault starts (with a planned fallback if
//! no leader is agreed then).

use super::partition;
use super::FaultKind;
use crate::backend::{Grudge, NodeId};
use rand::seq::SliceRandom;
use rand::Rng;
use serde::Serialize;
use std::time::Duration;

/// Length of a healthy window, in milliseconds.
const HEALTHY_MS: std::ops::RangeInclusive<u64> = 4_000..=7_000;
/// Length of a fault window, in milliseconds.
const FAULT_MS: std::ops::RangeInclusive<u64> = 5_000..=9_000;
/// No window starts closer than this to the time limit (it would be cut
/// too short to matter).
const FAULT_MIN_MS: u64 = 2_000;

/// One fault, from `start_ms` to `end_ms` after the workload starts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Window {
    pub start_ms: u64,
    pub end_ms: u64,
    pub fault: Fault,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Fault {
    Partition { shape: Shape },
    Kill { target: Target },
    Pause { target: Target },
}

impl Fault {
    pub fn kind(&self) -> FaultKind {
        match self {
            Fault::Partition { .. } => FaultKind::Partition,
            Fault::Kill { .. } => FaultKind::Kill,
            Fault::Pause { .. } => FaultKind::Pause,
        }
    }
}

/// A partition's shape; all but the leader's isolation are fixed when
/// planned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "shape", rename_all = "kebab-case")]
pub enum Shape {
    RandomHalves { grudge: Grudge },
    IsolateLeader { fallback: NodeId },
    MajorityRing { grudge: Grudge },
    Bridge { grudge: Grudge },
}

/// Which nodes a kill or pause hits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "target", rename_all = "kebab-case")]
pub enum Target {
    Node {
        node: NodeId,
    },
    Leader {
        fallback: NodeId,
    },
    /// A random minority (at least one node).
    Minority {
        nodes: Vec<NodeId>,
    },
    All,
}

/// Plans faults of the given kinds over `time_limit` (none when `kinds` is
/// empty).
pub fn plan(
    rng: &mut impl Rng,
    kinds: &[FaultKind],
    nodes: &[NodeId],
    time_limit: Duration,
) -> Vec<Window> {
    let limit_ms = u64::try_from(time_limit.as_millis()).unwrap_or(u64::MAX);
    let mut windows = Vec::new();
    if kinds.is_empty() {
        return windows;
    }
    let mut at_ms = rng.gen_range(HEALTHY_MS);
    while at_ms + FAULT_MIN_MS <= limit_ms {
        let end_ms = (at_ms + rng.gen_range(FAULT_MS)).min(limit_ms);
        let kind = kinds[rng.gen_range(0..kinds.len())];
        windows.push(Window {
            start_ms: at_ms,
            end_ms,
            fault: fault(rng, kind, nodes),
        });
        at_ms = end_ms + rng.gen_range(HEALTHY_MS);
    }
    windows
}

fn fault(rng: &mut impl Rng, kind: FaultKind, nodes: &[NodeId]) -> Fault {
    match kind {
        FaultKind::Partition => Fault::Partition {
            shape: match rng.gen_range(0..4) {
                0 => Shape::RandomHalves {
                    grudge: partition::random_halves(rng, nodes),
                },
                1 => Shape::IsolateLeader {
                    fallback: any_node(rng, nodes),
                },
                2 => Shape::MajorityRing {
                    grudge: partition::majority_ring(rng, nodes),
                },
                _ => Shape::Bridge {
                    grudge: partition::bridge(rng, nodes),
                },
            },
        },
        // Killing every node at once tests recovery from a full crash.
        FaultKind::Kill => Fault::Kill {
            target: match rng.gen_range(0..10) {
                0..=3 => Target::Node {
                    node: any_node(rng, nodes),
                },
                4..=6 => Target::Leader {
                    fallback: any_node(rng, nodes),
                },
                7 | 8 => minority(rng, nodes),
                _ => Target::All,
            },
        },
        FaultKind::Pause => Fault::Pause {
            target: match rng.gen_range(0..10) {
                0..=3 => Target::Node {
                    node: any_node(rng, nodes),
                },
                4..=7 => Target::Leader {
                    fallback: any_node(rng, nodes),
                },
                _ => minority(rng, nodes),
            },
        },
    }
}

fn any_node(rng: &mut impl Rng, nodes: &[NodeId]) -> NodeId {
    *nodes.choose(rng).expect("a cluster has nodes")
}

fn minority(rng: &mut impl Rng, nodes: &[NodeId]) -> Target {
    let size = rng.gen_range(1..=((nodes.len() - 1) / 2).max(1));
    let mut chosen: Vec<NodeId> = nodes.choose_multiple(rng, size).copied().collect();
    chosen.sort_unstable();
    Target::Minority { nodes: chosen }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    const KINDS: [FaultKind; 3] = [FaultKind::Partition, FaultKind::Kill, FaultKind::Pause];

    #[test]
    fn a_seed_replays_the_same_schedule() {
        let nodes = [1, 2, 3, 4, 5];
        let limit = Duration::from_secs(120);
        let first = plan(&mut StdRng::seed_from_u64(9), &KINDS, &nodes, limit);
        let again = plan(&mut StdRng::seed_from_u64(9), &KINDS, &nodes, limit);
        let other = plan(&mut StdRng::seed_from_u64(10), &KINDS, &nodes, limit);
        assert_eq!(first, again);
        assert_ne!(first, other);
    }

    #[test]
    fn faults_alternate_with_healthy_windows_within_the_limit() {
        let limit = Duration::from_secs(60);
        let windows = plan(&mut StdRng::seed_from_u64(4), &KINDS, &[1, 2, 3], limit);
        assert!(windows.len() >= 3, "{windows:?}");
        let mut healthy_from = 0;
        for window in &windows {
            assert!(window.start_ms - healthy_from >= *HEALTHY_MS.start());
            assert!(window.end_ms >= window.start_ms + FAULT_MIN_MS && window.end_ms <= 60_000);
            healthy_from = window.end_ms;
        }
    }

    #[test]
    fn only_the_requested_kinds_are_planned() {
        let windows = plan(
            &mut StdRng::seed_from_u64(5),
            &[FaultKind::Pause],
            &[1, 2, 3],
            Duration::from_secs(60),
        );
        assert!(windows.iter().all(|w| w.fault.kind() == FaultKind::Pause));
        assert!(plan(
            &mut StdRng::seed_from_u64(5),
            &[],
            &[1, 2, 3],
            Duration::from_secs(60)
        )
        .is_empty());
    }
}
