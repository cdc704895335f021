//! The merge checker (PD's): a small region is merged into a neighbour, so
//! that the regions splits and deletes leave behind do not cost a Raft
//! group each forever.
//!
//! A region is a *candidate* when:
//! - it holds user keys only (the system region is never merged, nor
//!   merged into: the placement driver lives there);
//! - it is small: at most `max_merge_region_bytes` and
//!   `max_merge_region_keys`, as its leader last measured;
//! - it did not split within `split_merge_interval_ms` (see
//!   `ClusterState` for how a split is dated; a region whose last split
//!   the snapshot does not know counts as split lately);
//! - it is healthy: exactly `max_replicas` voters, all on serving stores,
//!   no learner, no peer waiting for a snapshot;
//! - it is quiet: written no faster than `merge_written_bytes_per_sec_max`;
//! - it has no operator in flight.
//!
//! Its *target* is an adjacent region, healthy, quiet, free and not split
//! lately as well, whose merge with it is not refused lately (see
//! `OperatorQueue::refuse_merge`) and would hold at most half the stores'
//! split thresholds, so the merged region does not split again.
//!
//! A merge moves no data between stores, so it needs a target with the
//! same voter stores; of two such neighbours the smaller is taken (ties:
//! the lower id). When no target has them, the candidate's replicas are
//! moved onto the stores of the target that shares most of them (ties: the
//! smaller), one replica at a time, as PD does before a merge: a learner
//! on one of the target's stores ([`align_step`]), which the replica
//! checker then promotes while it removes a voter the target does not
//! have ([`voter_off_merge_target`]). Merges and such first steps together
//! are at most `merge_schedule_limit` in a round, and merges in flight at
//! most that many; 0 turns merging off.
//!
//! Sizes are approximate (a leader measures its region after a split or
//! merge, then again only after enough writes): the source's leader checks
//! the real size before it freezes the region, and refuses a source too
//! large for a merge to carry.

use crate::cluster::RegionInfo;
use crate::schedule::{Operator, Round, StoreHealth};
use crate::system_keys::SYSTEM_KEY_PREFIX;

/// Adds merges (or first steps towards them), in key order, until the
/// limit is reached.
pub(crate) fn merge_small_regions(round: &mut Round<'_>) {
    let snapshot = round.snapshot;
    let ordered = snapshot.regions_by_key();
    let mut aligning = 0;
    for (i, region) in ordered.iter().enumerate() {
        if round.merges() + aligning >= round.config.merge_schedule_limit {
            return;
        }
        if !is_candidate(round, region) {
            continue;
        }
        let left = i.checked_sub(1).map(|j| ordered[j]);
        let right = ordered.get(i + 1).copied();
        let targets: Vec<&RegionInfo> = [left, right]
            .into_iter()
            .flatten()
            .filter(|t| are_neighbours(t, region))
            .filter(|t| may_absorb(round, t, region))
            .collect();
        let same_stores = targets
            .iter()
            .filter(|t| stores_missing(t, region) == 0)
            .min_by_key(|t| (t.approximate_bytes, t.approximate_keys, t.id));
        if let Some(target) = same_stores {
            round.admit(Operator::Merge {
                source: region.id,
                source_epoch: region.epoch,
                target: target.id,
                target_epoch: target.epoch,
            });
        } else if let Some(step) = align_step(round, region, &targets) {
            if round.admit(step) {
                aligning += 1;
            }
        }
    }
}

/// Whether `region` may be merged away now (with merging on). The
/// balance scheduler leaves such regions to this checker, so the two do not
/// move the same replicas back and forth (PD's balancer skips empty
/// regions for the same reason).
pub(crate) fn is_candidate(round: &Round<'_>, region: &RegionInfo) -> bool {
    round.config.merge_schedule_limit > 0 && is_small(round, region) && may_take_part(round, region)
}

fn is_small(round: &Round<'_>, region: &RegionInfo) -> bool {
    region.approximate_bytes <= round.config.max_merge_region_bytes
        && region.approximate_keys <= round.config.max_merge_region_keys
}

/// Whether `target` may absorb its neighbour `source` now, its voters
/// aside.
fn may_absorb(round: &Round<'_>, target: &RegionInfo, source: &RegionInfo) -> bool {
    let config = round.config;
    let merged_keys = target
        .approximate_keys
        .saturating_add(source.approximate_keys);
    let merged_bytes = target
        .approximate_bytes
        .saturating_add(source.approximate_bytes);
    may_take_part(round, target)
        && !round.is_merge_refused(source.id, target.id)
        && merged_keys <= config.region_split_keys / 2
        && merged_bytes <= config.region_split_bytes / 2
}

/// Whether `a` ends where `b` starts or starts where `b` ends.
fn are_neighbours(a: &RegionInfo, b: &RegionInfo) -> bool {
    (!b.start_key.is_empty() && a.end_key == b.start_key)
        || (!b.end_key.is_empty() && a.start_key == b.end_key)
}

/// How many of `target`'s voter stores hold no voter of `source`.
fn stores_missing(target: &RegionInfo, source: &RegionInfo) -> usize {
    target
        .voters()
        .filter(|t| source.peer_on(t.store_id).is_none_or(|p| p.is_learner))
        .count()
}

/// The first step of moving `source`'s replicas onto the stores of one of
/// `targets` (all of which may absorb it): a learner on the target's
/// store with fewest replicas that `source` is not on.
fn align_step(round: &Round<'_>, source: &RegionInfo, targets: &[&RegionInfo]) -> Option<Operator> {
    let target = targets.iter().min_by_key(|t| {
        (
            stores_missing(t, source),
            t.approximate_bytes,
            t.approximate_keys,
            t.id,
        )
    })?;
    let store = target
        .voters()
        .map(|p| p.store_id)
        .filter(|&s| source.peer_on(s).is_none() && round.has_room(s))
        .min_by_key(|&s| (round.replica_count(s), s))?;
    Some(Operator::AddLearner {
        region: source.id,
        epoch: source.epoch,
        store,
    })
}

/// For a small region whose caught-up learner on `learner_store` is to be
/// promoted: a voter to remove that brings its voters onto those of a
/// neighbour holding a voter on `learner_store` (not the leader when
/// another will do). `None` when no neighbour does: the learner was added
/// for another reason.
pub(crate) fn voter_off_merge_target(
    round: &Round<'_>,
    source: &RegionInfo,
    learner_store: u64,
) -> Option<u64> {
    if !is_small(round, source) || !is_settled(round, source) {
        return None;
    }
    let neighbour = round.snapshot.regions().find(|r| {
        are_neighbours(r, source) && r.peer_on(learner_store).is_some_and(|p| !p.is_learner)
    })?;
    source
        .voters()
        .map(|p| p.store_id)
        .filter(|&s| neighbour.peer_on(s).is_none())
        .max_by_key(|&s| (s != source.leader_store, round.replica_count(s), s))
}

/// What the source and the target of a merge both need: settled, free
/// and healthy.
fn may_take_part(round: &Round<'_>, region: &RegionInfo) -> bool {
    let config = round.config;
    let healthy = region.voters().count() == config.max_replicas
        && region.learners().next().is_none()
        && region.pending_stores.is_empty()
        && region
            .voters()
            .all(|p| round.health(p.store_id) == StoreHealth::Serving);
    is_settled(round, region) && !round.is_busy(region.id) && healthy
}

/// User keys only, not split lately, quiet.
fn is_settled(round: &Round<'_>, region: &RegionInfo) -> bool {
    let config = round.config;
    let user_keys_only =
        !region.end_key.is_empty() && region.end_key.as_slice() <= &SYSTEM_KEY_PREFIX[..];
    let split_lately = round
        .snapshot
        .ms_since_split(region.id)
        .is_none_or(|ms| ms < config.split_merge_interval_ms);
    user_keys_only
        && !split_lately
        && region.written_bytes_per_sec <= config.merge_written_bytes_per_sec_max
}

#[cfg(test)]
mod tests {
    use crate::cluster::tests::region;
    use crate::cluster::{ClusterSnapshot, PeerInfo, RegionInfo, StoreState, StoreView};
    use crate::schedule::tests::{check_invariants, run_to_fixed_point, store};
    use crate::schedule::{schedule, Operator, OperatorQueue, ScheduleConfig};
    use crate::system_keys::SYSTEM_KEY_PREFIX;

    fn config() -> ScheduleConfig {
        ScheduleConfig {
            max_merge_region_bytes: 1_000,
            max_merge_region_keys: 100,
            split_merge_interval_ms: 60_000,
            ..ScheduleConfig::default()
        }
    }

    /// User regions on stores 1, 2, 3 split at `bounds` (the first starts
    /// at "", the last ends where the system keyspace starts), then the
    /// system region (id 2); user ids from 10 in key order, each with
    /// `keys` keys of 10 bytes, leaders spread over the stores.
    fn regions(bounds: &[&str], keys: u64) -> Vec<RegionInfo> {
        let mut starts: Vec<Vec<u8>> = vec![Vec::new()];
        starts.extend(bounds.iter().map(|b| b.as_bytes().to_vec()));
        let mut ends: Vec<Vec<u8>> = bounds.iter().map(|b| b.as_bytes().to_vec()).collect();
        ends.push(SYSTEM_KEY_PREFIX.to_vec());
        let mut all: Vec<RegionInfo> = starts
            .into_iter()
            .zip(ends)
            .enumerate()
            .map(|(i, (start, end))| {
                let mut r = region(10 + i as u64, "", "", 5, &[1, 2, 3]);
                r.start_key = start;
                r.end_key = end;
                r.leader_store = i as u64 % 3 + 1;
                r.approximate_keys = keys;
                r.approximate_bytes = keys * 10;
                r
            })
            .collect();
        let mut system = region(2, "", "", 1, &[1, 2, 3]);
        system.start_key = SYSTEM_KEY_PREFIX.to_vec();
        system.approximate_keys = 3;
        all.push(system);
        all
    }

    /// Stores 1, 2, 3 up, and `regions`, split long ago.
    fn snapshot(regions: Vec<RegionInfo>) -> ClusterSnapshot {
        with_stores(
            (1..=3).map(|id| store(id, StoreState::Up, 0)).collect(),
            regions,
        )
    }

    fn with_stores(stores: Vec<StoreView>, regions: Vec<RegionInfo>) -> ClusterSnapshot {
        let ids: Vec<u64> = regions.iter().map(|r| r.id).collect();
        let mut snapshot = ClusterSnapshot::new(stores, regions);
        for id in ids {
            snapshot.set_ms_since_split(id, u64::MAX);
        }
        snapshot
    }

    fn merges(snapshot: &ClusterSnapshot, config: &ScheduleConfig) -> Vec<(u64, u64)> {
        merges_with(snapshot, config, &OperatorQueue::new(u64::MAX))
    }

    fn merges_with(
        snapshot: &ClusterSnapshot,
        config: &ScheduleConfig,
        in_flight: &OperatorQueue,
    ) -> Vec<(u64, u64)> {
        schedule(snapshot, config, in_flight)
            .into_iter()
            .filter_map(|op| match op {
                Operator::Merge { source, target, .. } => Some((source, target)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn small_neighbours_merge_pairwise_and_the_system_region_never() {
        // 10 ["", "g"), 11 ["g", "p"), 12 ["p", system), 2 [system, "").
        let three = snapshot(regions(&["g", "p"], 5));
        assert_eq!(merges(&three, &config()), [(10, 11)]);
        // Alone next to the system region, the last user region stays.
        assert!(merges(&snapshot(regions(&[], 5)), &config()).is_empty());
    }

    #[test]
    fn many_small_regions_merge_down_to_one() {
        let config = config();
        let mut snapshot = snapshot(regions(&["b", "d", "f", "h", "k", "m", "p"], 5));
        let operators = run_to_fixed_point(&mut snapshot, &config);
        let merges = operators
            .iter()
            .filter(|op| matches!(op, Operator::Merge { .. }))
            .count();
        assert_eq!(merges, 7, "{operators:?}");
        let user: Vec<&RegionInfo> = snapshot.regions().filter(|r| r.id != 2).collect();
        assert_eq!(user.len(), 1, "{user:?}");
        assert_eq!(
            (&user[0].start_key[..], &user[0].end_key[..]),
            (&b""[..], &SYSTEM_KEY_PREFIX[..])
        );
        assert_eq!(user[0].approximate_keys, 40);
        check_invariants(&snapshot, &config);
    }

    #[test]
    fn only_small_regions_are_merged_away_and_the_smaller_neighbour_absorbs() {
        let config = config();
        // 10 ["", "g") big in keys, 11 ["g", "p") small, 12 ["p", system)
        // smaller still, 13 big in bytes.
        let mut all = regions(&["g", "p", "t"], 5);
        all[0].approximate_keys = 101;
        all[2].approximate_keys = 2;
        all[2].approximate_bytes = 20;
        all[3].approximate_bytes = 1_001;
        assert_eq!(merges(&snapshot(all.clone()), &config), [(11, 12)]);
        // Neighbours of equal size (neither small enough to go itself):
        // the lower id absorbs.
        all[2] = RegionInfo {
            approximate_keys: all[0].approximate_keys,
            approximate_bytes: all[0].approximate_bytes,
            ..all[2].clone()
        };
        assert_eq!(merges(&snapshot(all), &config), [(11, 10)]);
    }

    #[test]
    fn at_most_the_limit_of_merges_is_in_flight_and_zero_turns_merging_off() {
        let bounds = ["b", "d", "f", "h", "k", "m", "p"];
        let snapshot = snapshot(regions(&bounds, 5));
        let limited = ScheduleConfig {
            merge_schedule_limit: 2,
            ..config()
        };
        let first = merges(&snapshot, &limited);
        assert_eq!(first, [(10, 11), (12, 13)]);
        let mut in_flight = OperatorQueue::new(u64::MAX);
        for op in schedule(&snapshot, &limited, &OperatorQueue::new(u64::MAX)) {
            if let Operator::Merge { .. } = op {
                in_flight.add(op, 0);
            }
        }
        assert!(merges_with(&snapshot, &limited, &in_flight).is_empty());
        let off = ScheduleConfig {
            merge_schedule_limit: 0,
            ..config()
        };
        assert!(merges(&snapshot, &off).is_empty());
    }

    #[test]
    fn regions_split_lately_are_neither_merged_nor_merged_into() {
        let config = config();
        let mut snapshot = snapshot(regions(&["g", "p"], 5));
        snapshot.set_ms_since_split(10, 59_999);
        snapshot.set_ms_since_split(11, 60_000);
        let mut unknown = snapshot.clone();
        unknown.remove_region(12);
        unknown.put_region(regions(&["g", "p"], 5)[2].clone());
        assert!(merges(&unknown, &config).is_empty(), "12's history unknown");
        // 10 split lately; 11's neighbours: 10 (lately split) and 12.
        assert_eq!(merges(&snapshot, &config), [(11, 12)]);
        snapshot.set_ms_since_split(12, 1);
        assert!(merges(&snapshot, &config).is_empty());
    }

    #[test]
    fn neighbours_with_other_voters_learners_pending_or_down_peers_are_left() {
        let config = config();
        let base = regions(&["g"], 5);
        let case = |change: &dyn Fn(&mut RegionInfo)| {
            let mut all = base.clone();
            change(&mut all[1]);
            merges(&snapshot(all), &config)
        };
        assert_eq!(case(&|_| {}), [(10, 11)]);
        let mut elsewhere = base.clone();
        elsewhere[1].peers[2].store_id = 4;
        let four_stores = with_stores(
            (1..=4).map(|id| store(id, StoreState::Up, 0)).collect(),
            elsewhere,
        );
        assert!(merges(&four_stores, &config).is_empty(), "other voters");
        assert!(
            schedule(&four_stores, &config, &OperatorQueue::new(u64::MAX)).contains(
                &Operator::AddLearner {
                    region: 10,
                    epoch: base[0].epoch,
                    store: 4,
                }
            ),
            "other voters: 10 first gets a replica on 11's store"
        );
        assert!(case(&|r| r.peers.push(PeerInfo {
            id: 4,
            store_id: 4,
            is_learner: true,
        }))
        .is_empty());
        assert!(case(&|r| r.pending_stores = vec![3]).is_empty());
        assert!(case(&|r| r.peers.truncate(2)).is_empty(), "a voter short");
        let down = with_stores(
            vec![
                store(1, StoreState::Up, 0),
                store(2, StoreState::Up, 0),
                store(3, StoreState::Up, 60_000),
            ],
            base.clone(),
        );
        let config_down = ScheduleConfig {
            store_disconnected_ms: 1_000,
            ..config.clone()
        };
        assert!(merges(&down, &config_down).is_empty(), "a store down");
        let offline = with_stores(
            vec![
                store(1, StoreState::Up, 0),
                store(2, StoreState::Up, 0),
                store(3, StoreState::Offline, 0),
            ],
            base,
        );
        assert!(merges(&offline, &config).is_empty(), "a store leaving");
    }

    #[test]
    fn a_small_region_moves_onto_its_neighbours_stores_then_merges() {
        let config = config();
        // 10 ["", "g") on stores 1, 2, 3, led by 1; 11 ["g", system) on
        // 3, 4, 5: two of 10's replicas must move before they can merge.
        let mut all = regions(&["g"], 5);
        for (peer, store) in all[1].peers.iter_mut().zip([3, 4, 5]) {
            peer.store_id = store;
        }
        all[1].leader_store = 4;
        let stores = (1..=5).map(|id| store(id, StoreState::Up, 0)).collect();
        let mut snapshot = with_stores(stores, all);
        let operators = run_to_fixed_point(&mut snapshot, &config);
        let user: Vec<&RegionInfo> = snapshot.regions().filter(|r| r.id != 2).collect();
        assert_eq!(user.len(), 1, "{operators:?}");
        let added = operators
            .iter()
            .filter(|op| matches!(op, Operator::AddLearner { region: 10, .. }))
            .count();
        assert_eq!(added, 2, "one learner per replica moved: {operators:?}");
        assert!(operators.iter().any(|op| matches!(
            op,
            Operator::Merge {
                source: 10,
                target: 11,
                ..
            }
        )));
        check_invariants(&snapshot, &config);
    }

    #[test]
    fn a_learner_added_for_other_reasons_replaces_the_worst_voter() {
        let config = config();
        // 10 is small, but no neighbour has a voter on store 4: its
        // learner there replaces the voter on the store with most replicas.
        let mut all = regions(&["g"], 5);
        all[0].peers.push(PeerInfo {
            id: 40,
            store_id: 4,
            is_learner: true,
        });
        let stores = (1..=4).map(|id| store(id, StoreState::Up, 0)).collect();
        let snapshot = with_stores(stores, all);
        let operators = schedule(&snapshot, &config, &OperatorQueue::new(u64::MAX));
        assert!(
            operators.iter().any(|op| matches!(
                op,
                Operator::PromoteAndRemove {
                    region: 10,
                    promote: 4,
                    remove: 3,
                    ..
                }
            )),
            "{operators:?}"
        );
    }

    #[test]
    fn hot_or_busy_regions_are_left() {
        let config = config();
        let mut all = regions(&["g"], 5);
        all[0].written_bytes_per_sec = config.merge_written_bytes_per_sec_max + 1;
        assert!(merges(&snapshot(all.clone()), &config).is_empty(), "hot");
        all[0].written_bytes_per_sec = 0;
        let snapshot = snapshot(all.clone());
        let mut in_flight = OperatorQueue::new(u64::MAX);
        in_flight.add(
            Operator::TransferLeader {
                region: 11,
                epoch: all[1].epoch,
                to_store: 2,
            },
            0,
        );
        assert!(
            merges_with(&snapshot, &config, &in_flight).is_empty(),
            "busy"
        );
    }

    #[test]
    fn a_merge_that_would_split_again_is_not_scheduled() {
        let keys = ScheduleConfig {
            region_split_keys: 20,
            ..config()
        };
        // 5 + 5 keys: half the split threshold, allowed; 6 + 5 is not.
        let mut all = regions(&["g"], 5);
        assert_eq!(merges(&snapshot(all.clone()), &keys), [(10, 11)]);
        all[1].approximate_keys = 6;
        assert!(merges(&snapshot(all.clone()), &keys).is_empty());
        let bytes = ScheduleConfig {
            region_split_bytes: 199,
            ..config()
        };
        all[1].approximate_keys = 5;
        assert!(
            merges(&snapshot(all), &bytes).is_empty(),
            "100 > 199 / 2 bytes"
        );
    }

    #[test]
    fn a_refused_pair_is_left_for_the_other_neighbour() {
        let config = config();
        let snapshot = snapshot(regions(&["g", "p"], 5));
        let mut in_flight = OperatorQueue::new(u64::MAX);
        in_flight.refuse_merge(10, 11, 0);
        // 10 has no other neighbour; 11 goes into 12.
        assert_eq!(merges_with(&snapshot, &config, &in_flight), [(11, 12)]);
    }

    #[test]
    fn merge_limits_a_merge_cannot_carry_are_refused() {
        assert_eq!(ScheduleConfig::default().validate(), Ok(()));
        let too_big = ScheduleConfig {
            max_merge_region_bytes: 4 << 20,
            ..ScheduleConfig::default()
        };
        assert!(too_big.validate().is_err());
    }
}
