//! The merged picture of a cluster, built from the nodes' `Status` answers:
//! each region once, with the newest metadata any node reported and the
//! leader most likely current, and every store with whether it answered.
//! Pure, so the merge rules are unit-tested here.
//!
//! Merge rules: for one region id the metadata with the highest
//! `(epoch.version, epoch.conf_ver)` wins; its leader is the node that itself
//! claims leadership (role `leader`) at the highest term, else the leader id
//! reported at the highest term. Regions of different ids that overlap (one
//! node saw a split the other did not yet) keep only the higher version.
//! No node is assumed to host every region.

use crate::error::Result;
use crate::region_cache::{overlaps, supersedes};
use flotilla_proto::kvpb::{Region, RegionStatus, StatusResponse};
use std::collections::{BTreeMap, HashMap};

/// What [`crate::Client::cluster_view`] learned from every node it reached.
#[derive(Debug)]
pub struct ClusterView {
    /// Every region, in key order.
    pub regions: Vec<RegionView>,
    /// Every store any node named (as a member or a region's peer), by id.
    pub stores: Vec<StoreView>,
    /// Each asked node's own answer, by client address, in the order the
    /// answers arrived.
    pub answers: Vec<(String, Result<StatusResponse>)>,
}

/// One region of a [`ClusterView`].
#[derive(Clone, Debug, PartialEq)]
pub struct RegionView {
    /// Range, epoch and peers.
    pub region: Region,
    /// Node id of the leader; `None` when no node knows one.
    pub leader: Option<u64>,
    /// The term the leader was reported at (0 when unknown).
    pub term: u64,
    /// Keys in the region, as the leader (else the reporting node) last
    /// measured.
    pub approximate_keys: u64,
    /// Bytes (keys + values) in the region, measured alike.
    pub approximate_bytes: u64,
}

/// One store (node) of a [`ClusterView`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreView {
    /// The node id (peer ids equal store ids).
    pub id: u64,
    /// Its client address, if any node knew it.
    pub client_addr: Option<String>,
    /// Whether it answered its own `Status` request.
    pub up: bool,
}

/// Collects answers one at a time; [`ViewBuilder::build`] merges them.
#[derive(Debug, Default)]
pub(crate) struct ViewBuilder {
    regions: HashMap<u64, MergedRegion>,
    stores: BTreeMap<u64, StoreView>,
    answers: Vec<(String, Result<StatusResponse>)>,
}

#[derive(Debug)]
struct MergedRegion {
    /// The newest metadata (by epoch) and the size its reporter measured.
    region: Region,
    newest_approximate: (u64, u64),
    /// The highest-term report by a node that says it leads the region.
    claimed: Option<LeaderReport>,
    /// The highest-term report naming a leader, by any node.
    named: Option<LeaderReport>,
}

#[derive(Clone, Copy, Debug)]
struct LeaderReport {
    term: u64,
    node_id: u64,
    approximate_keys: u64,
    approximate_bytes: u64,
}

impl ViewBuilder {
    /// Adds the answer of the node asked at `addr`.
    pub fn add(&mut self, addr: String, answer: Result<StatusResponse>) {
        if let Ok(status) = &answer {
            self.add_status(&addr, status);
        }
        self.answers.push((addr, answer));
    }

    /// Whether the answers so far name, without gaps, regions covering the
    /// whole keyspace, each led by a node that said so itself — enough to
    /// route everything, so waiting for slower nodes can stop.
    pub fn is_complete(&self) -> bool {
        let regions = self.resolved();
        let Some(first) = regions.first() else {
            return false;
        };
        let contiguous = regions
            .windows(2)
            .all(|pair| pair[0].region.end_key == pair[1].region.start_key);
        let last = regions[regions.len() - 1];
        first.region.start_key.is_empty()
            && last.region.end_key.is_empty()
            && contiguous
            && regions.iter().all(|merged| merged.claimed.is_some())
    }

    /// The merged view.
    pub fn build(self) -> ClusterView {
        let regions: Vec<RegionView> = self
            .resolved()
            .into_iter()
            .map(MergedRegion::view)
            .collect();
        let mut stores = self.stores;
        for region in &regions {
            for peer in &region.region.peers {
                stores.entry(peer.store_id).or_insert_with(|| StoreView {
                    id: peer.store_id,
                    client_addr: None,
                    up: false,
                });
            }
        }
        ClusterView {
            regions,
            stores: stores.into_values().collect(),
            answers: self.answers,
        }
    }

    fn add_status(&mut self, addr: &str, status: &StatusResponse) {
        let own_addr = if status.client_addr.is_empty() {
            addr.to_string()
        } else {
            status.client_addr.clone()
        };
        self.stores.insert(
            status.node_id,
            StoreView {
                id: status.node_id,
                client_addr: Some(own_addr),
                up: true,
            },
        );
        for member in &status.members {
            let store = self
                .stores
                .entry(member.node_id)
                .or_insert_with(|| StoreView {
                    id: member.node_id,
                    client_addr: None,
                    up: false,
                });
            if store.client_addr.is_none() && !member.client_addr.is_empty() {
                store.client_addr = Some(member.client_addr.clone());
            }
        }
        for report in &status.regions {
            self.add_region(status.node_id, report);
        }
    }

    fn add_region(&mut self, reporter: u64, report: &RegionStatus) {
        let Some(region) = &report.region else {
            return;
        };
        let merged = self
            .regions
            .entry(region.id)
            .or_insert_with(|| MergedRegion {
                region: region.clone(),
                newest_approximate: (report.approximate_keys, report.approximate_bytes),
                claimed: None,
                named: None,
            });
        if region.epoch != merged.region.epoch && supersedes(region, &merged.region) {
            merged.region = region.clone();
            merged.newest_approximate = (report.approximate_keys, report.approximate_bytes);
        }
        let leader_report = |node_id| LeaderReport {
            term: report.term,
            node_id,
            approximate_keys: report.approximate_keys,
            approximate_bytes: report.approximate_bytes,
        };
        if report.role == "leader" && merged.claimed.is_none_or(|c| c.term < report.term) {
            merged.claimed = Some(leader_report(reporter));
        }
        if report.leader_id != 0 && merged.named.is_none_or(|n| n.term < report.term) {
            merged.named = Some(leader_report(report.leader_id));
        }
    }

    /// One region per id, overlaps resolved in favour of the higher version,
    /// in key order.
    fn resolved(&self) -> Vec<&MergedRegion> {
        let mut by_start: Vec<&MergedRegion> = self.regions.values().collect();
        by_start.sort_by(|a, b| {
            (&a.region.start_key, a.region.id).cmp(&(&b.region.start_key, b.region.id))
        });
        let mut kept: Vec<&MergedRegion> = Vec::with_capacity(by_start.len());
        for merged in by_start {
            // Kept regions are disjoint and sorted, so only the last one can
            // reach past this one's start.
            match kept.last() {
                Some(last) if overlaps(&last.region, &merged.region) => {
                    if supersedes(&merged.region, &last.region) {
                        kept.pop();
                        kept.push(merged);
                    }
                }
                _ => kept.push(merged),
            }
        }
        kept
    }
}

impl MergedRegion {
    fn view(&self) -> RegionView {
        let leader = self.claimed.or(self.named);
        let (approximate_keys, approximate_bytes) = match self.claimed {
            Some(claim) => (claim.approximate_keys, claim.approximate_bytes),
            None => self.newest_approximate,
        };
        RegionView {
            region: self.region.clone(),
            leader: leader.map(|report| report.node_id),
            term: leader.map_or(0, |report| report.term),
            approximate_keys,
            approximate_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ClientError;
    use crate::region_cache::tests::region;
    use flotilla_proto::kvpb::{Member, Peer};

    fn report(region: Region, role: &str, leader_id: u64, term: u64) -> RegionStatus {
        RegionStatus {
            region: Some(region),
            leader_id,
            term,
            role: role.into(),
            approximate_keys: term * 10,
            ..RegionStatus::default()
        }
    }

    fn answer(node_id: u64, regions: Vec<RegionStatus>) -> StatusResponse {
        StatusResponse {
            node_id,
            client_addr: format!("n{node_id}:1"),
            members: (1..=3)
                .map(|id| Member {
                    node_id: id,
                    peer_addr: format!("n{id}:2"),
                    client_addr: String::new(),
                })
                .collect(),
            regions,
            stored_keys: 0,
        }
    }

    #[test]
    fn the_newest_epoch_wins_and_the_self_declared_leader_of_the_highest_term() {
        let mut builder = ViewBuilder::default();
        // Node 1 lags: it still has the parent region and an old leader.
        builder.add(
            "n1:1".into(),
            Ok(answer(
                1,
                vec![report(region(1, "", "", 1), "follower", 1, 3)],
            )),
        );
        // Node 2 saw the split and leads the left half at term 4.
        builder.add(
            "n2:1".into(),
            Ok(answer(
                2,
                vec![
                    report(region(1, "", "m", 2), "leader", 2, 4),
                    report(region(7, "m", "", 2), "follower", 0, 1),
                ],
            )),
        );
        assert!(!builder.is_complete(), "nobody claims region 7 yet");
        // Node 3 leads the right half; it also (wrongly) names node 1 for region 1 at term 3.
        builder.add(
            "n3:1".into(),
            Ok(answer(
                3,
                vec![
                    report(region(1, "", "m", 2), "follower", 1, 3),
                    report(region(7, "m", "", 2), "leader", 3, 1),
                ],
            )),
        );
        assert!(builder.is_complete());
        let view = builder.build();
        let regions: Vec<(u64, Option<u64>, u64)> = view
            .regions
            .iter()
            .map(|r| (r.region.id, r.leader, r.term))
            .collect();
        assert_eq!(regions, [(1, Some(2), 4), (7, Some(3), 1)]);
        assert_eq!(view.regions[0].region.end_key, b"m");
        assert_eq!(view.regions[0].approximate_keys, 40, "the leader's measure");
        assert_eq!(view.answers.len(), 3);
    }

    #[test]
    fn a_lagging_parent_does_not_hide_its_split_halves() {
        let mut builder = ViewBuilder::default();
        builder.add(
            "n2:1".into(),
            Ok(answer(
                2,
                vec![
                    report(region(1, "", "m", 2), "leader", 2, 4),
                    report(region(7, "m", "", 2), "leader", 2, 4),
                ],
            )),
        );
        // A lagging node reports an older region overlapping both halves.
        builder.add(
            "n1:1".into(),
            Ok(answer(
                1,
                vec![report(region(5, "a", "z", 1), "leader", 1, 9)],
            )),
        );
        let view = builder.build();
        let ids: Vec<u64> = view.regions.iter().map(|r| r.region.id).collect();
        assert_eq!(ids, [1, 7]);
    }

    #[test]
    fn a_leader_named_by_followers_is_used_when_none_claims() {
        let mut builder = ViewBuilder::default();
        builder.add(
            "n1:1".into(),
            Ok(answer(
                1,
                vec![report(region(1, "", "", 1), "follower", 3, 5)],
            )),
        );
        builder.add(
            "n2:1".into(),
            Ok(answer(
                2,
                vec![report(region(1, "", "", 1), "candidate", 0, 6)],
            )),
        );
        assert!(!builder.is_complete());
        let view = builder.build();
        assert_eq!(view.regions[0].leader, Some(3));
        assert_eq!(view.regions[0].term, 5);
    }

    #[test]
    fn stores_are_up_only_if_they_answered() {
        let mut builder = ViewBuilder::default();
        let mut with_peers = region(1, "", "", 1);
        with_peers.peers = (1..=4)
            .map(|id| Peer {
                id,
                store_id: id,
                is_learner: false,
            })
            .collect();
        let mut status = answer(1, vec![report(with_peers, "leader", 1, 2)]);
        status.members[1].client_addr = "n2:1".into();
        builder.add("n1:1".into(), Ok(status));
        builder.add("n2:1".into(), Err(ClientError::Transport("refused".into())));
        let view = builder.build();
        let stores: Vec<(u64, Option<&str>, bool)> = view
            .stores
            .iter()
            .map(|s| (s.id, s.client_addr.as_deref(), s.up))
            .collect();
        assert_eq!(
            stores,
            [
                (1, Some("n1:1"), true),
                (2, Some("n2:1"), false),
                (3, None, false),
                (4, None, false)
            ]
        );
    }

    #[test]
    fn no_answer_is_an_incomplete_empty_view() {
        let builder = ViewBuilder::default();
        assert!(!builder.is_complete());
        let view = builder.build();
        assert!(view.regions.is_empty() && view.stores.is_empty());
    }
}
