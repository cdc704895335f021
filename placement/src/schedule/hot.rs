//! The hot-region scheduler: a region written faster than
//! `hot_region_written_bytes_per_sec` (as its leader's last heartbeat
//! measured) is split in two, at the middle key its leader's size check
//! finds, so that the halves can be led and balanced apart.

use crate::schedule::{Operator, Round};

/// Least keys a region must hold to have a middle key to split at.
const SPLITTABLE_KEYS_MIN: u64 = 2;

pub(crate) fn split_hot_regions(round: &mut Round<'_>) {
    let threshold = round.config.hot_region_written_bytes_per_sec;
    let snapshot = round.snapshot;
    for region in snapshot.regions() {
        if region.written_bytes_per_sec > threshold
            && region.approximate_keys >= SPLITTABLE_KEYS_MIN
            && !round.is_busy(region.id)
        {
            round.admit(Operator::Split {
                region: region.id,
                epoch: region.epoch,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::cluster::tests::region;
    use crate::cluster::{ClusterSnapshot, StoreState};
    use crate::schedule::tests::store;
    use crate::schedule::{schedule, Operator, OperatorQueue, ScheduleConfig};

    #[test]
    fn only_regions_written_past_the_threshold_split() {
        let config = ScheduleConfig {
            hot_region_written_bytes_per_sec: 1_000,
            ..ScheduleConfig::default()
        };
        let mut hot = region(1, "", "m", 2, &[1, 2, 3]);
        hot.written_bytes_per_sec = 5_000;
        hot.approximate_keys = 100;
        let mut warm = region(2, "m", "t", 2, &[2, 3, 1]);
        warm.written_bytes_per_sec = 1_000;
        warm.approximate_keys = 100;
        let mut single_key = region(3, "t", "", 2, &[3, 1, 2]);
        single_key.written_bytes_per_sec = 9_000;
        single_key.approximate_keys = 1;
        let snapshot = ClusterSnapshot::new(
            (1..=3).map(|id| store(id, StoreState::Up, 0)).collect(),
            vec![hot.clone(), warm, single_key],
        );
        let mut in_flight = OperatorQueue::new(u64::MAX);
        assert_eq!(
            schedule(&snapshot, &config, &in_flight),
            [Operator::Split {
                region: 1,
                epoch: hot.epoch
            }]
        );
        in_flight.add(
            Operator::Split {
                region: 1,
                epoch: hot.epoch,
            },
            0,
        );
        assert!(
            schedule(&snapshot, &config, &in_flight).is_empty(),
            "one operator per region"
        );
    }
}
