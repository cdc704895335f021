//! Balance schedulers: even out leaders and replicas over the serving
//! stores.
//!
//! - Leaders: while the serving stores with most and fewest leaders differ
//!   by more than `leader_balance_tolerance`, transfer the leadership of a
//!   region from the first to a voter on the second (only ever to a voter
//!   that is caught up). The system region's leadership is not moved: its
//!   leader is the placement leader, and a move costs a placement
//!   failover (a new model, a scheduling pause, merges held back for a
//!   split-merge interval). The replica checker still moves it off a store
//!   that must be vacated.
//! - Replicas: while the serving stores with most and fewest replicas
//!   differ by more than `region_balance_tolerance`, add a learner on the
//!   emptiest store for a healthy region of the fullest one; the replica
//!   checker then promotes it and removes the voter on the fullest store.
//!   A store never receives a region it already holds, and a region the
//!   merge checker may merge away is left to it.
//!
//! Each round adds at most `balance_operators_per_round_max` operators of
//! each kind, counting the effect of those already added, so a round never
//! overshoots.

use crate::cluster::RegionInfo;
use crate::schedule::{merge, Operator, Round, StoreHealth};
use crate::system_keys::SYSTEM_KEY_PREFIX;

/// Moves leaders from the stores with most to those with fewest.
pub(crate) fn balance_leaders(round: &mut Round<'_>) {
    for _ in 0..round.config.balance_operators_per_round_max {
        let Some(operator) = next_leader_move(round) else {
            return;
        };
        if !round.admit(operator) {
            return;
        }
    }
}

fn next_leader_move(round: &Round<'_>) -> Option<Operator> {
    let mut stores = round.serving_stores();
    stores.sort_by_key(|&s| (round.leader_count(s), s));
    for &source in stores.iter().rev() {
        for &target in &stores {
            if round.leader_count(source) - round.leader_count(target)
                <= round.config.leader_balance_tolerance as i64
            {
                break;
            }
            if !round.has_room(target) {
                continue;
            }
            let movable = round.snapshot.regions().find(|r| {
                r.leader_store == source
                    && !r.start_key.starts_with(&SYSTEM_KEY_PREFIX)
                    && !round.is_busy(r.id)
                    && r.peer_on(target).is_some_and(|p| !p.is_learner)
                    && !r.pending_stores.contains(&target)
            });
            if let Some(region) = movable {
                return Some(Operator::TransferLeader {
                    region: region.id,
                    epoch: region.epoch,
                    to_store: target,
                });
            }
        }
    }
    None
}

/// Moves replicas from the stores with most to those with fewest.
pub(crate) fn balance_regions(round: &mut Round<'_>) {
    for _ in 0..round.config.balance_operators_per_round_max {
        let Some(operator) = next_replica_move(round) else {
            return;
        };
        if !round.admit(operator) {
            return;
        }
    }
}

fn next_replica_move(round: &Round<'_>) -> Option<Operator> {
    let mut stores = round.serving_stores();
    stores.sort_by_key(|&s| (round.replica_count(s), s));
    for &source in stores.iter().rev() {
        for &target in &stores {
            if round.replica_count(source) - round.replica_count(target)
                <= round.config.region_balance_tolerance as i64
            {
                break;
            }
            if !round.has_room(target) || !round.has_room(source) {
                continue;
            }
            let movable = round.snapshot.regions().find(|r| {
                r.peer_on(source).is_some_and(|p| !p.is_learner) && may_move(round, r, target)
            });
            if let Some(region) = movable {
                return Some(Operator::AddLearner {
                    region: region.id,
                    epoch: region.epoch,
                    store: target,
                });
            }
        }
    }
    None
}

/// Whether a replica of `region` may be moved to `target` now: the region
/// is free, healthy (exactly `max_replicas` voters, all on serving stores,
/// no learner), holds nothing on `target`, and is not one the merge
/// checker may merge away.
fn may_move(round: &Round<'_>, region: &RegionInfo, target: u64) -> bool {
    !round.is_busy(region.id)
        && !merge::is_candidate(round, region)
        && region.peer_on(target).is_none()
        && region.learners().next().is_none()
        && region.voters().count() == round.config.max_replicas
        && region
            .voters()
            .all(|p| round.health(p.store_id) == StoreHealth::Serving)
}

#[cfg(test)]
mod tests {
    use crate::cluster::tests::region;
    use crate::cluster::{ClusterSnapshot, RegionInfo, StoreState};
    use crate::schedule::tests::{check_invariants, run_to_fixed_point, store};
    use crate::schedule::{schedule, Operator, OperatorQueue, ScheduleConfig};

    fn spread(count: impl Fn(u64) -> u64, stores: &[u64]) -> u64 {
        let counts: Vec<u64> = stores.iter().map(|&s| count(s)).collect();
        counts.iter().max().unwrap_or(&0) - counts.iter().min().unwrap_or(&0)
    }

    /// `count` regions all on stores 1, 2, 3, leaders rotating among them.
    fn full_stores(count: u64) -> Vec<RegionInfo> {
        (0..count)
            .map(|i| {
                let start = if i == 0 {
                    String::new()
                } else {
                    format!("k{i:04}")
                };
                let end = if i + 1 == count {
                    String::new()
                } else {
                    format!("k{:04}", i + 1)
                };
                let mut r = region(i + 1, &start, &end, 2, &[1, 2, 3]);
                r.leader_store = i % 3 + 1;
                r
            })
            .collect()
    }

    #[test]
    fn two_empty_stores_added_to_three_full_ones_converge_to_an_even_spread() {
        let config = ScheduleConfig::default();
        let regions = 60;
        let mut snapshot = ClusterSnapshot::new(
            (1..=5).map(|id| store(id, StoreState::Up, 0)).collect(),
            full_stores(regions),
        );
        let all = [1, 2, 3, 4, 5];
        assert_eq!(spread(|s| snapshot.replica_count(s), &all), regions);
        let operators = run_to_fixed_point(&mut snapshot, &config);
        assert!(operators
            .iter()
            .any(|op| matches!(op, Operator::AddLearner { store: 4, .. })));
        assert!(operators
            .iter()
            .any(|op| matches!(op, Operator::AddLearner { store: 5, .. })));
        assert!(operators.iter().any(|op| matches!(
            op,
            Operator::TransferLeader {
                to_store: 4 | 5,
                ..
            }
        )));
        // 180 replicas over 5 stores: 36 each, give or take the tolerance.
        let replicas = spread(|s| snapshot.replica_count(s), &all);
        let leaders = spread(|s| snapshot.leader_count(s), &all);
        assert!(
            replicas <= config.region_balance_tolerance,
            "replica spread {replicas}"
        );
        assert!(
            leaders <= config.leader_balance_tolerance,
            "leader spread {leaders}"
        );
        assert!(all.iter().all(|&s| snapshot.replica_count(s) >= 35));
        for region in snapshot.regions() {
            assert_eq!(region.voters().count(), 3);
            assert_eq!(region.learners().count(), 0);
        }
        check_invariants(&snapshot, &config);
    }

    #[test]
    fn leaders_go_only_to_voters() {
        let config = ScheduleConfig::default();
        // Every region led by store 1; store 4 holds no voter of region 1.
        let mut regions: Vec<RegionInfo> = (0..4)
            .map(|i| {
                let start = if i == 0 {
                    String::new()
                } else {
                    format!("k{i}")
                };
                let end = if i == 3 {
                    String::new()
                } else {
                    format!("k{}", i + 1)
                };
                region(i + 1, &start, &end, 2, &[1, 2, 3])
            })
            .collect();
        regions[0].peers.retain(|p| p.store_id != 3);
        let snapshot = ClusterSnapshot::new(
            (1..=3).map(|id| store(id, StoreState::Up, 0)).collect(),
            regions,
        );
        for op in schedule(&snapshot, &config, &OperatorQueue::new(u64::MAX)) {
            if let Operator::TransferLeader {
                region, to_store, ..
            } = op
            {
                let r = snapshot.region(region).expect("known region");
                assert!(r.peer_on(to_store).is_some_and(|p| !p.is_learner), "{op:?}");
            }
        }
    }

    #[test]
    fn an_operator_in_flight_counts_as_done() {
        let config = ScheduleConfig::default();
        // Three regions all led by store 3: two transfers even it out.
        let regions: Vec<RegionInfo> = full_stores(3)
            .into_iter()
            .map(|mut r| {
                r.leader_store = 3;
                r
            })
            .collect();
        let snapshot = ClusterSnapshot::new(
            (1..=3).map(|id| store(id, StoreState::Up, 0)).collect(),
            regions,
        );
        let mut in_flight = OperatorQueue::new(u64::MAX);
        let first = schedule(&snapshot, &config, &in_flight);
        assert_eq!(first.len(), 2, "{first:?}");
        for op in &first {
            in_flight.add(op.clone(), 0);
        }
        // Nothing moved yet: the next round must not move more.
        assert!(schedule(&snapshot, &config, &in_flight).is_empty());
    }

    #[test]
    fn the_system_regions_leadership_stays_where_it_is() {
        let config = ScheduleConfig::default();
        // Store 1 leads all three; the system region has the lowest id, so
        // it would be the first to move.
        let system_start = crate::system_keys::SYSTEM_KEY_PREFIX.to_vec();
        let mut system = region(1, "", "", 2, &[1, 2, 3]);
        system.start_key = system_start.clone();
        let mut last_user = region(3, "k", "", 2, &[1, 2, 3]);
        last_user.end_key = system_start;
        let snapshot = ClusterSnapshot::new(
            (1..=3).map(|id| store(id, StoreState::Up, 0)).collect(),
            vec![system, region(2, "", "k", 2, &[1, 2, 3]), last_user],
        );
        let moved: Vec<u64> = schedule(&snapshot, &config, &OperatorQueue::new(u64::MAX))
            .iter()
            .filter_map(|op| match op {
                Operator::TransferLeader { region, .. } => Some(*region),
                _ => None,
            })
            .collect();
        assert_eq!(moved, [2, 3]);
    }

    #[test]
    fn balanced_clusters_stay_put() {
        let config = ScheduleConfig::default();
        let snapshot = ClusterSnapshot::new(
            (1..=3).map(|id| store(id, StoreState::Up, 0)).collect(),
            full_stores(9),
        );
        assert!(schedule(&snapshot, &config, &OperatorQueue::new(u64::MAX)).is_empty());
    }
}
