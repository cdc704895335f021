//! Decommissioning: a store an operator marked Offline is emptied by the
//! replica checker (each of its replicas is replaced elsewhere, its
//! leaderships moved first); once nothing is left on it, the driver makes it
//! a Tombstone, which is final.

use crate::cluster::{ClusterSnapshot, StoreState};
use crate::schedule::{store_health, ScheduleConfig, StoreHealth};

/// Offline stores that hold no replica: no region in the snapshot lists
/// them, and their own last report counts no region (unless they are down,
/// and their report is stale). The snapshot must cover every region (the
/// driver asks only once it has led for a full region-heartbeat interval).
pub fn emptied_stores(snapshot: &ClusterSnapshot, config: &ScheduleConfig) -> Vec<u64> {
    snapshot
        .stores()
        .filter(|s| {
            s.record.state == StoreState::Offline
                && snapshot.replica_count(s.record.id) == 0
                && (s.stats.region_count == 0
                    || store_health(snapshot, config, s.record.id) == StoreHealth::Down)
        })
        .map(|s| s.record.id)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::tests::region;
    use crate::schedule::tests::{run_to_fixed_point, store};

    #[test]
    fn an_offline_store_is_emptied_then_reported_empty() {
        let stores = vec![
            store(1, StoreState::Up, 0),
            store(2, StoreState::Up, 0),
            store(3, StoreState::Up, 0),
            store(4, StoreState::Offline, 0),
            store(5, StoreState::Up, 0),
        ];
        let regions = vec![
            region(1, "", "g", 2, &[4, 1, 2]),
            region(2, "g", "p", 2, &[2, 3, 4]),
            region(3, "p", "", 2, &[1, 2, 3]),
        ];
        let mut snapshot = ClusterSnapshot::new(stores, regions);
        let config = ScheduleConfig::default();
        assert!(emptied_stores(&snapshot, &config).is_empty());
        run_to_fixed_point(&mut snapshot, &config);
        assert_eq!(emptied_stores(&snapshot, &config), [4]);
        assert!(snapshot.regions().all(|r| r.peer_on(4).is_none()));
    }
}
