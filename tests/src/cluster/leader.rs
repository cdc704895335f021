//! Reading the nodes' own Status reports: which node leads, how far each
//! has applied.
//!
//! Leadership is judged for the region that holds the start of the keyspace
//! (the only region until the first split). A node counts as the leader when
//! it reports itself leader at the highest term any node reports for that
//! role, and a majority of the cluster — itself included — names it as leader
//! at that term. Requiring the majority means a deposed leader that has not
//! yet heard of its successor is never picked, and that once a leader is
//! returned, clients can reach it through any follower's hint.

use client::{RegionStatus, StatusResponse};

const LEADER_ROLE: &str = "leader";

/// The status of the keyspace's first region, if the node reports it.
pub fn first_region(status: &StatusResponse) -> Option<&RegionStatus> {
    status.regions.iter().find(|region| {
        region
            .region
            .as_ref()
            .is_some_and(|region| region.start_key.is_empty())
    })
}

/// The node a majority of a `cluster_size`-node cluster agrees leads, given
/// the Status replies of the nodes that answered.
pub fn agreed_leader(cluster_size: usize, statuses: &[StatusResponse]) -> Option<u64> {
    let (leader, term) = statuses
        .iter()
        .filter_map(|status| Some((status.node_id, first_region(status)?)))
        .filter(|(_, region)| region.role == LEADER_ROLE)
        .map(|(node, region)| (node, region.term))
        .max_by_key(|&(_, term)| term)?;
    let supporters = statuses
        .iter()
        .filter_map(|status| Some((status.node_id, first_region(status)?)))
        .filter(|(node, region)| {
            *node == leader || (region.leader_id == leader && region.term == term)
        })
        .count();
    (supporters > cluster_size / 2).then_some(leader)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(node: u64, role: &str, leader: u64, term: u64) -> StatusResponse {
        StatusResponse {
            node_id: node,
            regions: vec![RegionStatus {
                // The default region starts at the empty key.
                region: Some(Default::default()),
                leader_id: leader,
                term,
                role: role.to_owned(),
                ..RegionStatus::default()
            }],
            ..StatusResponse::default()
        }
    }

    #[test]
    fn majority_agreement_names_the_leader() {
        let statuses = [
            status(1, "follower", 2, 3),
            status(2, "leader", 2, 3),
            status(3, "follower", 0, 2),
        ];
        assert_eq!(agreed_leader(3, &statuses), Some(2));
    }

    #[test]
    fn leader_without_majority_support_is_not_agreed() {
        let statuses = [status(2, "leader", 2, 3), status(3, "candidate", 0, 4)];
        assert_eq!(agreed_leader(3, &statuses), None);
    }

    #[test]
    fn deposed_leader_at_a_lower_term_loses_to_the_new_one() {
        let statuses = [
            status(1, "leader", 1, 2),
            status(2, "leader", 2, 3),
            status(3, "follower", 2, 3),
        ];
        assert_eq!(agreed_leader(3, &statuses), Some(2));
    }

    #[test]
    fn no_claimed_leader_means_none() {
        let statuses = [
            status(1, "follower", 0, 1),
            status(2, "pre-candidate", 0, 1),
        ];
        assert_eq!(agreed_leader(3, &statuses), None);
        assert_eq!(agreed_leader(3, &[]), None);
    }
}
