//! The simulated cluster's regions as the nodes report them: what clients
//! route by and where the nemesis aims its splits.
//!
//! Regions change shape as they split, and a node's view of a region may lag
//! (a replica that has not applied the split yet). [`RegionCache`] keeps, per
//! region id, the shape with the highest epoch version any node reported,
//! and routes a key to the newest region holding it: a key's owner gains a
//! version at every split that moves it, so the newest candidate is the
//! current owner as far as anyone reported. The cache may still be stale; a
//! request routed by it is then refused by the region (EpochNotMatch,
//! KeyNotInRegion, RegionNotFound: never executed) and the client refreshes.

use super::node::SimNode;
use raftstore::region::RegionMeta;
use std::collections::BTreeMap;

/// Region shapes learnt from the nodes, newest per region id.
#[derive(Clone, Debug, Default)]
pub struct RegionCache {
    regions: BTreeMap<u64, RegionMeta>,
}

impl RegionCache {
    /// Learns every region reported by a node that can answer (up and not
    /// paused). Monotone: an older shape never replaces a newer one.
    pub fn refresh(&mut self, nodes: &BTreeMap<u64, SimNode>) {
        for node in nodes.values().filter(|n| n.is_up() && !n.paused) {
            for status in node.status() {
                self.learn(status.region);
            }
        }
    }

    fn learn(&mut self, region: RegionMeta) {
        match self.regions.get(&region.id) {
            Some(known) if !is_newer(&region, known) => {}
            _ => {
                self.regions.insert(region.id, region);
            }
        }
    }

    /// The newest known region holding `key`.
    pub fn locate(&self, key: &[u8]) -> Option<&RegionMeta> {
        self.regions
            .values()
            .filter(|r| r.contains_key(key))
            .max_by_key(|r| (r.epoch.version, r.epoch.conf_ver, r.id))
    }

    /// Every known region, by id.
    pub fn regions(&self) -> impl Iterator<Item = &RegionMeta> {
        self.regions.values()
    }
}

/// `a` is a later shape of its region than `b`.
fn is_newer(a: &RegionMeta, b: &RegionMeta) -> bool {
    (a.epoch.version, a.epoch.conf_ver) > (b.epoch.version, b.epoch.conf_ver)
}

/// The node that reports leading `region_id` in the highest term, among
/// nodes that can answer.
pub fn believed_leader(nodes: &BTreeMap<u64, SimNode>, region_id: u64) -> Option<u64> {
    nodes
        .iter()
        .filter(|(_, n)| n.is_up() && !n.paused)
        .flat_map(|(&id, n)| {
            n.status()
                .into_iter()
                .filter(|s| s.region.id == region_id && s.role == "leader")
                .map(move |s| (s.term, id))
        })
        .max()
        .map(|(_, id)| id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftstore::region::RegionEpoch;

    fn region(id: u64, start: &str, end: &str, version: u64) -> RegionMeta {
        RegionMeta {
            id,
            start_key: start.as_bytes().to_vec(),
            end_key: end.as_bytes().to_vec(),
            epoch: RegionEpoch {
                conf_ver: 1,
                version,
            },
            peers: Vec::new(),
        }
    }

    #[test]
    fn routes_to_the_newest_owner_of_a_key() {
        let mut cache = RegionCache::default();
        cache.learn(region(1, "", "", 1));
        assert_eq!(cache.locate(b"m").map(|r| r.id), Some(1));
        // Region 1 split at "k" as one node reports it; another node still
        // reports the old shape, which must not win back.
        cache.learn(region(9, "k", "", 2));
        assert_eq!(cache.locate(b"m").map(|r| r.id), Some(9));
        cache.learn(region(1, "", "k", 2));
        cache.learn(region(1, "", "", 1));
        assert_eq!(cache.locate(b"a").map(|r| r.id), Some(1));
        assert_eq!(cache.locate(b"m").map(|r| r.id), Some(9));
        assert_eq!(cache.regions().count(), 2);
    }

    #[test]
    fn an_unknown_split_child_leaves_a_hole() {
        let mut cache = RegionCache::default();
        cache.learn(region(1, "", "k", 2));
        assert_eq!(cache.locate(b"m"), None);
        assert_eq!(cache.locate(b"a").map(|r| r.id), Some(1));
    }
}
