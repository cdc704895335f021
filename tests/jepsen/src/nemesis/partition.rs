//! Partition shapes, after Jepsen's `jepsen.nemesis` grudges. Each returns a
//! [`Grudge`]: for every node, the peers whose packets it drops.
//!
//! - [`random_halves`]: a random minority and majority, cut apart.
//! - [`isolate`]: one node (e.g. the leader) cut off from all others.
//! - [`majority_ring`]: nodes on a shuffled ring; each sees the majority
//!   window centred on itself and drops the rest, so every node sees a
//!   majority but no two see the same one.
//! - [`bridge`]: two halves cut apart except for one node that sees both.

use crate::backend::{Grudge, NodeId};
use rand::seq::SliceRandom;
use rand::Rng;
use std::collections::BTreeSet;

/// Cuts every link between different components, both ways.
pub fn complete_grudge(components: &[Vec<NodeId>]) -> Grudge {
    let mut grudge = Grudge::new();
    for (index, component) in components.iter().enumerate() {
        let others: BTreeSet<NodeId> = components
            .iter()
            .enumerate()
            .filter(|(other, _)| *other != index)
            .flat_map(|(_, nodes)| nodes.iter().copied())
            .collect();
        for &node in component {
            grudge.insert(node, others.clone());
        }
    }
    grudge.retain(|_, drops| !drops.is_empty());
    grudge
}

/// A random minority (`⌊n/2⌋` nodes) cut from the rest.
pub fn random_halves(rng: &mut impl Rng, nodes: &[NodeId]) -> Grudge {
    let mut shuffled = nodes.to_vec();
    shuffled.shuffle(rng);
    let minority = shuffled.split_off(shuffled.len() - nodes.len() / 2);
    complete_grudge(&[minority, shuffled])
}

/// `node` cut from every other node.
pub fn isolate(node: NodeId, nodes: &[NodeId]) -> Grudge {
    let rest: Vec<NodeId> = nodes.iter().copied().filter(|&n| n != node).collect();
    complete_grudge(&[vec![node], rest])
}

/// Jepsen's `majorities-ring`: on a shuffled ring, each node is the middle
/// of a window of `⌊n/2⌋ + 1` consecutive nodes and drops everyone outside
/// it. With three nodes the cuts are one-way.
pub fn majority_ring(rng: &mut impl Rng, nodes: &[NodeId]) -> Grudge {
    let mut ring = nodes.to_vec();
    ring.shuffle(rng);
    let n = ring.len();
    let window = n / 2 + 1;
    let mut grudge = Grudge::new();
    for start in 0..n {
        let visible: BTreeSet<NodeId> = (0..window).map(|i| ring[(start + i) % n]).collect();
        let middle = ring[(start + window / 2) % n];
        let drops: BTreeSet<NodeId> = nodes
            .iter()
            .copied()
            .filter(|node| !visible.contains(node))
            .collect();
        if !drops.is_empty() {
            grudge.insert(middle, drops);
        }
    }
    grudge
}

/// Two halves cut apart, with one node in both (it drops nothing).
pub fn bridge(rng: &mut impl Rng, nodes: &[NodeId]) -> Grudge {
    let mut shuffled = nodes.to_vec();
    shuffled.shuffle(rng);
    let Some(bridge) = shuffled.pop() else {
        return Grudge::new();
    };
    let right = shuffled.split_off(shuffled.len() / 2);
    let mut grudge = complete_grudge(&[shuffled, right]);
    debug_assert!(!grudge.contains_key(&bridge));
    grudge.retain(|_, drops| {
        drops.remove(&bridge);
        !drops.is_empty()
    });
    grudge
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    const FIVE: [NodeId; 5] = [1, 2, 3, 4, 5];

    fn sees(grudge: &Grudge, node: NodeId, nodes: &[NodeId]) -> usize {
        let drops = grudge.get(&node).map_or(0, BTreeSet::len);
        nodes.len() - drops
    }

    #[test]
    fn random_halves_cut_a_minority_off_both_ways() {
        let grudge = random_halves(&mut StdRng::seed_from_u64(1), &FIVE);
        let seen: Vec<usize> = FIVE.iter().map(|&n| sees(&grudge, n, &FIVE)).collect();
        assert_eq!(seen.iter().filter(|&&s| s == 2).count(), 2, "{grudge:?}");
        assert_eq!(seen.iter().filter(|&&s| s == 3).count(), 3, "{grudge:?}");
        for (node, drops) in &grudge {
            for peer in drops {
                assert!(grudge[peer].contains(node), "cuts are symmetric");
            }
        }
    }

    #[test]
    fn an_isolated_node_sees_only_itself() {
        let grudge = isolate(3, &FIVE);
        assert_eq!(sees(&grudge, 3, &FIVE), 1);
        assert_eq!(sees(&grudge, 1, &FIVE), 4);
    }

    #[test]
    fn in_a_majority_ring_everyone_sees_a_different_majority() {
        for nodes in [&FIVE[..3], &FIVE[..]] {
            let grudge = majority_ring(&mut StdRng::seed_from_u64(2), nodes);
            let mut views = BTreeSet::new();
            for &node in nodes {
                assert_eq!(sees(&grudge, node, nodes), nodes.len() / 2 + 1);
                views.insert(grudge[&node].clone());
            }
            assert_eq!(views.len(), nodes.len(), "{grudge:?}");
        }
    }

    #[test]
    fn the_bridge_sees_everyone_and_the_halves_only_it() {
        let grudge = bridge(&mut StdRng::seed_from_u64(3), &FIVE);
        let bridge: Vec<NodeId> = FIVE
            .iter()
            .copied()
            .filter(|n| !grudge.contains_key(n))
            .collect();
        assert_eq!(bridge.len(), 1, "{grudge:?}");
        for (node, drops) in &grudge {
            assert_eq!(drops.len(), 2, "node {node} drops the other half");
        }
    }
}
