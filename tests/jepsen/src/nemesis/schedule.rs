//! The fault schedule: healthy windows and fault windows taking turns,
//! drawn entirely from the run's seeded RNG before the run starts, so a seed
//! replays the same faults on the same nodes at the same offsets, and the
//! same splits at the same keys. Only what depends on the cluster's state
//! is decided when the fault starts: "the leader" (with a planned fallback
//! if no leader is agreed then), which regions a merge joins (planned as a
//! key and a side, see [`PlannedMerge`]), and which region, voter and store
//! a leader transfer or membership change takes (planned as a key and picks
//! among the candidates found then, see [`PlannedTransfer`] and
//! [`PlannedMembership`]).
//!
//! The kinds take turns (`Turns`): every kind asked for once per round,
//! the first round in the order given, each later round in an order drawn
//! from the seed. A short run therefore gets the kinds listed first, and a
//! longer one every kind, rather than whatever independent draws happen to
//! leave out.

use super::partition;
use super::FaultKind;
use crate::backend::{Grudge, NodeId};
use crate::workload::keys::{KeySpace, SPREAD_BUCKETS};
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
/// Splits one split window makes, one after another, at its start.
const SPLITS_PER_WINDOW: std::ops::RangeInclusive<usize> = 1..=3;
/// Merges one merge window makes, one after another: as many as a split
/// window makes splits, so splits and merges keep each other in balance.
const MERGES_PER_WINDOW: std::ops::RangeInclusive<usize> = SPLITS_PER_WINDOW;
/// Leader transfers one transfer window makes, one after another.
const TRANSFERS_PER_WINDOW: std::ops::RangeInclusive<usize> = 1..=3;

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
    Partition {
        shape: Shape,
    },
    Kill {
        target: Target,
    },
    Pause {
        target: Target,
    },
    /// Split the regions holding these keys at them, in turn (keys of the
    /// workload's space, ASCII).
    Split {
        keys: Vec<String>,
    },
    /// Merge the regions holding these keys into a neighbour each, in turn.
    Merge {
        merges: Vec<PlannedMerge>,
    },
    /// Hand leaderships to other voters, in turn.
    Transfer {
        transfers: Vec<PlannedTransfer>,
    },
    /// Change the membership of the region holding `key` (a key of the
    /// workload's space, ASCII).
    Membership {
        key: String,
        change: PlannedMembership,
    },
}

/// A leader transfer of the region holding `key` (a key of the workload's
/// space, ASCII). The new leader is the voter other than the current leader
/// at `pick` modulo their number, in store order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlannedTransfer {
    pub key: String,
    pub pick: u32,
}

/// A merge of the region holding `key` (a key of the workload's space,
/// ASCII) into its neighbour on side `toward`, or on the other side when
/// there is none on that one (the first or last region of the user key
/// space). Of two neighbours, one with the same voters is taken first:
/// only such regions merge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlannedMerge {
    pub key: String,
    pub toward: Side,
}

/// A side in key order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// Towards smaller keys: the neighbour ending where the region starts.
    Left,
    /// Towards larger keys: the neighbour starting where the region ends.
    Right,
}

/// A membership change, resolved against the region's replicas when the
/// fault starts: each pick chooses among candidates in store order, modulo
/// their number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "kebab-case")]
pub enum PlannedMembership {
    /// Move the replica of a voter (`from_pick`, the leader included) to a
    /// store holding no replica of the region (`to_pick`). When every store
    /// holds one, `from_pick` picks a follower voter to re-add instead.
    MoveReplica { from_pick: u32, to_pick: u32 },
    /// Remove a follower voter (`pick`), add it back as a learner once its
    /// replica is gone, and promote it once caught up.
    ReAddVoter { pick: u32 },
}

impl Fault {
    pub fn kind(&self) -> FaultKind {
        match self {
            Fault::Partition { .. } => FaultKind::Partition,
            Fault::Kill { .. } => FaultKind::Kill,
            Fault::Pause { .. } => FaultKind::Pause,
            Fault::Split { .. } => FaultKind::Split,
            Fault::Merge { .. } => FaultKind::Merge,
            Fault::Transfer { .. } => FaultKind::Transfer,
            Fault::Membership { .. } => FaultKind::Membership,
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
/// empty), the kinds taking turns (`Turns`); splits, merges, transfers and
/// membership changes at keys of `key_space`. A split, a merge or a leader
/// transfer is a quick change of shape, not a state to undo, so its window
/// is half as long as the others: the healthy window after it comes sooner. A membership
/// change keeps a whole window: a learner has to catch up.
pub fn plan(
    rng: &mut impl Rng,
    kinds: &[FaultKind],
    nodes: &[NodeId],
    key_space: KeySpace,
    time_limit: Duration,
) -> Vec<Window> {
    let limit_ms = u64::try_from(time_limit.as_millis()).unwrap_or(u64::MAX);
    let mut windows = Vec::new();
    if kinds.is_empty() {
        return windows;
    }
    let mut turns = Turns::new(kinds);
    let mut at_ms = rng.gen_range(HEALTHY_MS);
    while at_ms + FAULT_MIN_MS <= limit_ms {
        let mut length_ms = rng.gen_range(FAULT_MS);
        let kind = turns.next(rng);
        if matches!(
            kind,
            FaultKind::Split | FaultKind::Merge | FaultKind::Transfer
        ) {
            length_ms /= 2;
        }
        let end_ms = (at_ms + length_ms).min(limit_ms);
        windows.push(Window {
            start_ms: at_ms,
            end_ms,
            fault: fault(rng, kind, nodes, key_space),
        });
        at_ms = end_ms + rng.gen_range(HEALTHY_MS);
    }
    windows
}

fn fault(rng: &mut impl Rng, kind: FaultKind, nodes: &[NodeId], key_space: KeySpace) -> Fault {
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
        // Bucket boundaries cut between keys in use (see `workload::keys`);
        // the first bucket's would cut off no key.
        FaultKind::Split => Fault::Split {
            keys: (0..rng.gen_range(SPLITS_PER_WINDOW))
                .map(|_| bucket_key(rng, key_space, 1..SPREAD_BUCKETS))
                .collect(),
        },
        FaultKind::Merge => Fault::Merge {
            merges: (0..rng.gen_range(MERGES_PER_WINDOW))
                .map(|_| PlannedMerge {
                    key: bucket_key(rng, key_space, 0..SPREAD_BUCKETS),
                    toward: if rng.gen_bool(0.5) {
                        Side::Left
                    } else {
                        Side::Right
                    },
                })
                .collect(),
        },
        FaultKind::Transfer => Fault::Transfer {
            transfers: (0..rng.gen_range(TRANSFERS_PER_WINDOW))
                .map(|_| PlannedTransfer {
                    key: bucket_key(rng, key_space, 0..SPREAD_BUCKETS),
                    pick: rng.gen(),
                })
                .collect(),
        },
        FaultKind::Membership => Fault::Membership {
            key: bucket_key(rng, key_space, 0..SPREAD_BUCKETS),
            change: if rng.gen_bool(0.5) {
                PlannedMembership::MoveReplica {
                    from_pick: rng.gen(),
                    to_pick: rng.gen(),
                }
            } else {
                PlannedMembership::ReAddVoter { pick: rng.gen() }
            },
        },
    }
}

/// The first key of a bucket drawn from `buckets`, as text: the region
/// holding it holds that bucket's keys (at least the first ones).
fn bucket_key(rng: &mut impl Rng, key_space: KeySpace, buckets: std::ops::Range<u64>) -> String {
    let key = key_space.bucket_boundary(rng.gen_range(buckets));
    String::from_utf8_lossy(&key).into_owned()
}

/// Which kind of fault comes next: every kind once per round, the first
/// round in the order the kinds were given, each later one shuffled.
struct Turns<'k> {
    kinds: &'k [FaultKind],
    /// What is left of the current round, next last.
    round: Vec<FaultKind>,
    first_round: bool,
}

impl<'k> Turns<'k> {
    /// `kinds` must not be empty.
    fn new(kinds: &'k [FaultKind]) -> Self {
        assert!(!kinds.is_empty(), "turns of no kind");
        Turns {
            kinds,
            round: Vec::new(),
            first_round: true,
        }
    }

    fn next(&mut self, rng: &mut impl Rng) -> FaultKind {
        if self.round.is_empty() {
            self.round = self.kinds.to_vec();
            if !std::mem::take(&mut self.first_round) {
                self.round.shuffle(rng);
            }
            self.round.reverse();
        }
        self.round.pop().expect("a round is refilled when empty")
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

    const KINDS: [FaultKind; 7] = [
        FaultKind::Partition,
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::Split,
        FaultKind::Merge,
        FaultKind::Transfer,
        FaultKind::Membership,
    ];
    const SPACE: KeySpace = KeySpace::new("k/");

    #[test]
    fn a_seed_replays_the_same_schedule() {
        let nodes = [1, 2, 3, 4, 5];
        let limit = Duration::from_secs(120);
        let first = plan(&mut StdRng::seed_from_u64(9), &KINDS, &nodes, SPACE, limit);
        let again = plan(&mut StdRng::seed_from_u64(9), &KINDS, &nodes, SPACE, limit);
        let other = plan(&mut StdRng::seed_from_u64(10), &KINDS, &nodes, SPACE, limit);
        assert_eq!(first, again);
        assert_ne!(first, other);
    }

    #[test]
    fn faults_alternate_with_healthy_windows_within_the_limit() {
        let limit = Duration::from_secs(60);
        let windows = plan(
            &mut StdRng::seed_from_u64(4),
            &KINDS,
            &[1, 2, 3],
            SPACE,
            limit,
        );
        assert!(windows.len() >= 3, "{windows:?}");
        let mut healthy_from = 0;
        for window in &windows {
            assert!(window.start_ms - healthy_from >= *HEALTHY_MS.start());
            assert!(window.end_ms >= window.start_ms + FAULT_MIN_MS && window.end_ms <= 60_000);
            match &window.fault {
                Fault::Split { keys } => {
                    assert!(window.end_ms - window.start_ms <= FAULT_MS.end() / 2);
                    assert!(SPLITS_PER_WINDOW.contains(&keys.len()), "{keys:?}");
                }
                Fault::Merge { merges } => {
                    assert!(window.end_ms - window.start_ms <= FAULT_MS.end() / 2);
                    assert!(MERGES_PER_WINDOW.contains(&merges.len()), "{merges:?}");
                }
                Fault::Transfer { transfers } => {
                    assert!(window.end_ms - window.start_ms <= FAULT_MS.end() / 2);
                    assert!(
                        TRANSFERS_PER_WINDOW.contains(&transfers.len()),
                        "{transfers:?}"
                    );
                }
                _ => {}
            }
            healthy_from = window.end_ms;
        }
    }

    #[test]
    fn only_the_requested_kinds_are_planned() {
        let windows = plan(
            &mut StdRng::seed_from_u64(5),
            &[FaultKind::Pause],
            &[1, 2, 3],
            SPACE,
            Duration::from_secs(60),
        );
        assert!(windows.iter().all(|w| w.fault.kind() == FaultKind::Pause));
        assert!(plan(
            &mut StdRng::seed_from_u64(5),
            &[],
            &[1, 2, 3],
            SPACE,
            Duration::from_secs(60)
        )
        .is_empty());
    }

    #[test]
    fn splits_are_planned_at_bucket_boundaries_of_the_key_space() {
        let windows = plan(
            &mut StdRng::seed_from_u64(6),
            &[FaultKind::Split],
            &[1, 2, 3],
            SPACE,
            Duration::from_secs(60),
        );
        let keys: Vec<&String> = windows
            .iter()
            .flat_map(|window| match &window.fault {
                Fault::Split { keys } => keys.iter(),
                other => panic!("not a split: {other:?}"),
            })
            .collect();
        assert!(
            keys.len() >= windows.len() && windows.len() >= 4,
            "{windows:?}"
        );
        for key in keys {
            let bucket = key.strip_prefix("k/").expect("in the key space");
            assert!(bucket.len() == 2 && bucket != "00", "{key}");
        }
    }

    #[test]
    fn kinds_take_turns_the_first_round_in_the_order_given() {
        let kinds = [FaultKind::Membership, FaultKind::Kill, FaultKind::Transfer];
        let mut turns = Turns::new(&kinds);
        let mut rng = StdRng::seed_from_u64(8);
        let drawn: Vec<FaultKind> = (0..12).map(|_| turns.next(&mut rng)).collect();
        assert_eq!(drawn[..3], kinds);
        for round in drawn.chunks(3) {
            let mut round = round.to_vec();
            round.sort_unstable();
            let mut all = kinds.to_vec();
            all.sort_unstable();
            assert_eq!(round, all, "every kind once per round: {drawn:?}");
        }
        assert!(
            drawn.chunks(3).skip(1).any(|round| round != kinds),
            "later rounds are shuffled: {drawn:?}"
        );
    }

    #[test]
    fn merges_transfers_and_membership_changes_target_keys_of_the_space() {
        let windows = plan(
            &mut StdRng::seed_from_u64(7),
            &[FaultKind::Merge, FaultKind::Transfer, FaultKind::Membership],
            &[1, 2, 3],
            SPACE,
            Duration::from_secs(180),
        );
        let (mut merges, mut transfers, mut changes) = (0, 0, 0);
        let mut sides = Vec::new();
        for window in &windows {
            let keys: Vec<&String> = match &window.fault {
                Fault::Merge { merges: planned } => {
                    merges += planned.len();
                    sides.extend(planned.iter().map(|merge| merge.toward));
                    planned.iter().map(|merge| &merge.key).collect()
                }
                Fault::Transfer { transfers: planned } => {
                    transfers += planned.len();
                    planned.iter().map(|transfer| &transfer.key).collect()
                }
                Fault::Membership { key, .. } => {
                    changes += 1;
                    vec![key]
                }
                other => panic!("not asked for: {other:?}"),
            };
            for key in keys {
                let bucket = key.strip_prefix("k/").expect("in the key space");
                assert!(bucket.len() == 2, "{key}");
            }
        }
        assert!(merges >= 2 && transfers >= 2 && changes >= 2, "{windows:?}");
        assert!(
            sides.contains(&Side::Left) && sides.contains(&Side::Right),
            "merges go both ways: {sides:?}"
        );
    }
}
