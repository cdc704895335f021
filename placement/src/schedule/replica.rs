//! The replica checker: brings each region's replica set to
//! `max_replicas` voters on serving stores, one step at a time.
//!
//! For a region, in order:
//! 1. a learner on a store that must be vacated goes (`RemovePeer`);
//! 2. a learner that caught up is promoted — alone if voters are missing
//!    (`PromoteLearner`), otherwise in one joint change with the removal of
//!    the worst voter (`PromoteAndRemove`): one on a down store, else on a
//!    decommissioned one, else one that keeps a small region from merging
//!    (the merge checker moves its replicas onto a neighbour's stores),
//!    else on the store with most replicas;
//! 3. with no learner: if a voter sits on a down store (repair) or a store
//!    being decommissioned, or voters are missing, a learner is added on the
//!    serving store with fewest replicas that holds none of the region
//!    (`AddLearner`); surplus voters are removed (`RemovePeer`).
//!
//! A voter to remove that leads the region is first relieved of the
//! leadership (`TransferLeader` to the healthiest other voter). A region
//! whose voters on live stores are no majority is left alone: it can commit
//! no change until its stores come back.

use crate::cluster::RegionInfo;
use crate::schedule::{merge, Operator, Round, StoreHealth};

/// Runs the checker over every region without an operator in flight.
pub(crate) fn check_all(round: &mut Round<'_>) {
    let snapshot = round.snapshot;
    for region in snapshot.regions() {
        if round.is_busy(region.id) {
            continue;
        }
        if let Some(operator) = check_region(round, region) {
            if !round.admit(operator.clone()) {
                tracing::debug!(
                    ?operator,
                    "replica operator deferred: a store is at its limit"
                );
            }
        }
    }
}

fn check_region(round: &Round<'_>, region: &RegionInfo) -> Option<Operator> {
    let voters: Vec<u64> = region.voters().map(|p| p.store_id).collect();
    if round.live_voters(region) * 2 <= voters.len() {
        return None;
    }
    let (id, epoch) = (region.id, region.epoch);
    if let Some(learner) = region
        .learners()
        .find(|p| round.health(p.store_id).must_be_vacated())
    {
        return Some(Operator::RemovePeer {
            region: id,
            epoch,
            store: learner.store_id,
        });
    }
    if let Some(learner) = region.learners().next() {
        let store = learner.store_id;
        if region.pending_stores.contains(&store) || round.health(store) != StoreHealth::Serving {
            // Not caught up (or not reachable): promote it later.
            return None;
        }
        if voters.len() < round.config.max_replicas {
            return Some(Operator::PromoteLearner {
                region: id,
                epoch,
                store,
            });
        }
        let remove = voter_to_replace(round, region, store)?;
        if remove == region.leader_store {
            return transfer_leader_away(round, region, remove);
        }
        let live_after = voters
            .iter()
            .chain([&store])
            .filter(|&&s| s != remove && round.health(s).is_live())
            .count();
        return (live_after * 2 > voters.len()).then_some(Operator::PromoteAndRemove {
            region: id,
            epoch,
            promote: store,
            remove,
        });
    }
    let must_replace = voters.iter().any(|&s| round.health(s).must_be_vacated());
    if voters.len() < round.config.max_replicas
        || (must_replace && voters.len() <= round.config.max_replicas)
    {
        if let Some(store) = best_target(round, region) {
            return Some(Operator::AddLearner {
                region: id,
                epoch,
                store,
            });
        }
    }
    if voters.len() > round.config.max_replicas {
        let remove = worst_voter(round, region)?;
        if remove == region.leader_store {
            return transfer_leader_away(round, region, remove);
        }
        let live_after = voters
            .iter()
            .filter(|&&s| s != remove && round.health(s).is_live())
            .count();
        return (live_after * 2 > voters.len() - 1).then_some(Operator::RemovePeer {
            region: id,
            epoch,
            store: remove,
        });
    }
    None
}

/// The voter a learner on `learner_store` replaces when it is promoted:
/// the worst one if it is on a store not serving; else, for a small region
/// being moved onto a merge neighbour's stores, one the neighbour lacks
/// (see [`merge::voter_off_merge_target`]); else the worst.
fn voter_to_replace(round: &Round<'_>, region: &RegionInfo, learner_store: u64) -> Option<u64> {
    let worst = worst_voter(round, region)?;
    if round.health(worst) != StoreHealth::Serving {
        return Some(worst);
    }
    Some(merge::voter_off_merge_target(round, region, learner_store).unwrap_or(worst))
}

/// The voter that should go first: on a down store, else on a
/// decommissioned one, else on a disconnected one, else on the store with
/// most replicas (ties: the higher store id).
fn worst_voter(round: &Round<'_>, region: &RegionInfo) -> Option<u64> {
    let badness = |health: StoreHealth| match health {
        StoreHealth::Down => 3,
        StoreHealth::Leaving => 2,
        StoreHealth::Disconnected => 1,
        StoreHealth::Serving => 0,
    };
    region
        .voters()
        .map(|p| p.store_id)
        .max_by_key(|&s| (badness(round.health(s)), round.replica_count(s), s))
}

/// The serving store with fewest replicas (ties: the lower id) that holds
/// no replica of `region` and has room for an operator.
pub(crate) fn best_target(round: &Round<'_>, region: &RegionInfo) -> Option<u64> {
    round
        .serving_stores()
        .into_iter()
        .filter(|&s| region.peer_on(s).is_none() && round.has_room(s))
        .min_by_key(|&s| (round.replica_count(s), s))
}

/// Moves the leadership off `store` to the voter on a serving store with
/// fewest leaders, if there is one that is caught up.
fn transfer_leader_away(round: &Round<'_>, region: &RegionInfo, store: u64) -> Option<Operator> {
    let to_store = region
        .voters()
        .map(|p| p.store_id)
        .filter(|&s| {
            s != store
                && round.health(s) == StoreHealth::Serving
                && !region.pending_stores.contains(&s)
        })
        .min_by_key(|&s| (round.leader_count(s), s))?;
    Some(Operator::TransferLeader {
        region: region.id,
        epoch: region.epoch,
        to_store,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::tests::region;
    use crate::cluster::{ClusterSnapshot, PeerInfo, StoreState};
    use crate::schedule::tests::{check_invariants, run_to_fixed_point, store};
    use crate::schedule::{schedule, OperatorQueue, ScheduleConfig};

    fn config() -> ScheduleConfig {
        ScheduleConfig {
            max_store_down_ms: 5_000,
            store_disconnected_ms: 1_000,
            ..ScheduleConfig::default()
        }
    }

    /// `count` regions spread over `stores` three at a time, leaders rotating.
    fn regions_over(count: u64, stores: &[u64]) -> Vec<RegionInfo> {
        (0..count)
            .map(|i| {
                let n = stores.len();
                let on: Vec<u64> = (0..3).map(|k| stores[(i as usize + k) % n]).collect();
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
                region(i + 1, &start, &end, 2, &on)
            })
            .collect()
    }

    #[test]
    fn one_store_down_gets_every_region_back_to_three_live_replicas() {
        let config = config();
        let mut snapshot = ClusterSnapshot::new(
            vec![
                store(1, StoreState::Up, 0),
                store(2, StoreState::Up, 0),
                store(3, StoreState::Up, 6_000),
                store(4, StoreState::Up, 0),
                store(5, StoreState::Up, 0),
            ],
            regions_over(40, &[1, 2, 3, 4, 5]),
        );
        let affected = snapshot
            .regions()
            .filter(|r| r.peer_on(3).is_some())
            .count();
        assert!(affected > 0);
        let operators = run_to_fixed_point(&mut snapshot, &config);
        assert!(
            operators.len() >= affected * 2,
            "a learner and a promotion each"
        );
        for region in snapshot.regions() {
            assert_eq!(region.voters().count(), 3, "{region:?}");
            assert_eq!(region.learners().count(), 0, "{region:?}");
            assert!(
                region.peer_on(3).is_none(),
                "nothing left on the down store: {region:?}"
            );
            assert_ne!(region.leader_store, 3);
        }
        check_invariants(&snapshot, &config);
    }

    #[test]
    fn a_store_silent_less_than_the_down_time_is_not_replaced() {
        let config = config();
        let snapshot = ClusterSnapshot::new(
            vec![
                store(1, StoreState::Up, 0),
                store(2, StoreState::Up, 0),
                store(3, StoreState::Up, 4_000),
                store(4, StoreState::Up, 0),
            ],
            vec![region(1, "", "", 2, &[1, 2, 3])],
        );
        assert!(schedule(&snapshot, &config, &OperatorQueue::new(u64::MAX))
            .iter()
            .all(|op| !matches!(op, Operator::AddLearner { .. })));
    }

    #[test]
    fn a_learner_is_promoted_only_once_caught_up_and_the_dead_voter_goes_with_it() {
        let config = config();
        let mut r = region(1, "", "", 2, &[1, 2, 3]);
        r.peers.push(PeerInfo {
            id: 4,
            store_id: 4,
            is_learner: true,
        });
        r.pending_stores = vec![4];
        let stores = vec![
            store(1, StoreState::Up, 0),
            store(2, StoreState::Up, 0),
            store(3, StoreState::Up, 9_000),
            store(4, StoreState::Up, 0),
        ];
        let queue = OperatorQueue::new(u64::MAX);
        let pending = ClusterSnapshot::new(stores.clone(), vec![r.clone()]);
        assert!(
            schedule(&pending, &config, &queue).is_empty(),
            "waits for the learner"
        );
        r.pending_stores.clear();
        let caught_up = ClusterSnapshot::new(stores, vec![r.clone()]);
        assert_eq!(
            schedule(&caught_up, &config, &queue),
            [Operator::PromoteAndRemove {
                region: 1,
                epoch: r.epoch,
                promote: 4,
                remove: 3
            }]
        );
    }

    #[test]
    fn a_region_without_a_live_quorum_is_left_alone() {
        let snapshot = ClusterSnapshot::new(
            vec![
                store(1, StoreState::Up, 0),
                store(2, StoreState::Up, 9_000),
                store(3, StoreState::Up, 9_000),
                store(4, StoreState::Up, 0),
                store(5, StoreState::Up, 0),
            ],
            vec![region(1, "", "", 2, &[1, 2, 3])],
        );
        assert!(schedule(&snapshot, &config(), &OperatorQueue::new(u64::MAX)).is_empty());
    }

    #[test]
    fn a_decommissioned_store_is_emptied_leaders_first() {
        let config = config();
        let mut snapshot = ClusterSnapshot::new(
            vec![
                store(1, StoreState::Offline, 0),
                store(2, StoreState::Up, 0),
                store(3, StoreState::Up, 0),
                store(4, StoreState::Up, 0),
            ],
            regions_over(12, &[1, 2, 3, 4]),
        );
        let operators = run_to_fixed_point(&mut snapshot, &config);
        assert!(operators
            .iter()
            .any(|op| matches!(op, Operator::TransferLeader { .. })));
        assert_eq!(snapshot.replica_count(1), 0);
        for region in snapshot.regions() {
            assert_eq!(region.voters().count(), 3);
        }
    }

    #[test]
    fn surplus_voters_are_removed_and_missing_ones_added() {
        let config = config();
        let mut snapshot = ClusterSnapshot::new(
            (1..=5).map(|id| store(id, StoreState::Up, 0)).collect(),
            vec![
                region(1, "", "m", 2, &[1, 2, 3, 4, 5]),
                region(2, "m", "", 2, &[1]),
            ],
        );
        run_to_fixed_point(&mut snapshot, &config);
        for region in snapshot.regions() {
            assert_eq!(region.voters().count(), 3, "{region:?}");
        }
    }

    #[test]
    fn without_a_spare_store_a_dead_replica_stays_until_one_joins() {
        let config = config();
        let stores = vec![
            store(1, StoreState::Up, 0),
            store(2, StoreState::Up, 0),
            store(3, StoreState::Up, 9_000),
        ];
        let regions = vec![region(1, "", "", 2, &[1, 2, 3])];
        let snapshot = ClusterSnapshot::new(stores.clone(), regions.clone());
        assert!(schedule(&snapshot, &config, &OperatorQueue::new(u64::MAX)).is_empty());
        let mut joined = stores;
        joined.push(store(4, StoreState::Up, 0));
        let snapshot = ClusterSnapshot::new(joined, regions);
        assert_eq!(
            schedule(&snapshot, &config, &OperatorQueue::new(u64::MAX)),
            [Operator::AddLearner {
                region: 1,
                epoch: snapshot.region(1).map(|r| r.epoch).unwrap_or_default(),
                store: 4
            }]
        );
    }

    #[test]
    fn per_store_limits_bound_operators_in_flight() {
        let config = ScheduleConfig {
            store_operators_max: 2,
            ..config()
        };
        let snapshot = ClusterSnapshot::new(
            vec![
                store(1, StoreState::Up, 0),
                store(2, StoreState::Up, 0),
                store(3, StoreState::Up, 9_000),
                store(4, StoreState::Up, 0),
            ],
            regions_over(10, &[1, 2, 3]),
        );
        let operators = schedule(&snapshot, &config, &OperatorQueue::new(u64::MAX));
        assert_eq!(operators.len(), 2, "{operators:?}");
        assert!(operators
            .iter()
            .all(|op| matches!(op, Operator::AddLearner { store: 4, .. })));
    }
}
