//! Region merge rules: whether a source region S may be absorbed by its
//! neighbour T, and the shapes the three merge commands give the regions.
//! Pure functions of region metadata and Raft configurations, shared by the
//! propose-time checks (on S's leader) and the apply-time checks (on every
//! replica, from the log alone).
//!
//! The protocol (see ARCHITECTURE.md, "Merge"): `PrepareMerge` freezes S
//! (no writes, no reads, no other proposals; epoch moves on), `CommitMerge`
//! on T carries S's frozen metadata, final pairs and session table and
//! extends T over S's range, `RollbackMerge` unfreezes S when T refused.
//!
//! Guarantees: a merge is allowed only between adjacent regions with the
//! same voters and neither a learner nor a joint configuration; the merged
//! region's version exceeds both regions' versions, so every request built
//! for either old shape is refused.

use raft::prelude::ConfState;

use crate::error::RaftstoreError;
use crate::region::{RegionEpoch, RegionMeta};

/// The most a `CommitMerge` may carry (S's pairs and session table,
/// encoded): it travels as one gRPC message, one Raft entry and one WAL
/// record, all of which take it with room to spare.
pub const MERGE_SOURCE_BYTES_MAX: usize = 4 << 20;

/// What each carried pair costs in a `CommitMerge` beyond its key and
/// value: two length prefixes.
const CARRIED_BYTES_PER_KEY: u64 = 16;

/// The bytes a `CommitMerge` carries for a source holding `keys` keys of
/// `bytes` bytes (keys plus values): what [`MERGE_SOURCE_BYTES_MAX`] bounds.
pub const fn carried_bytes(keys: u64, bytes: u64) -> u64 {
    bytes.saturating_add(keys.saturating_mul(CARRIED_BYTES_PER_KEY))
}

/// Whether `source` and `target` are neighbours: one ends where the other
/// starts.
pub fn adjacent(source: &RegionMeta, target: &RegionMeta) -> bool {
    (!target.end_key.is_empty() && target.end_key == source.start_key)
        || (!source.end_key.is_empty() && source.end_key == target.start_key)
}

/// The voters of a configuration, in id order.
fn voters(conf_state: &ConfState) -> Vec<u64> {
    let mut ids = conf_state.voters.clone();
    ids.sort_unstable();
    ids
}

/// Why `conf_state` of `region_id` cannot take part in a merge now, if it
/// cannot.
fn configuration_refusal(region_id: u64, conf_state: &ConfState) -> Option<RaftstoreError> {
    if !conf_state.voters_outgoing.is_empty() {
        return Some(RaftstoreError::Unavailable(format!(
            "region {region_id} is in a joint configuration; retry once the membership change completes"
        )));
    }
    if !conf_state.learners.is_empty() || !conf_state.learners_next.is_empty() {
        return Some(RaftstoreError::Refused(format!(
            "region {region_id} has learners {:?}; promote or remove them before merging",
            conf_state.learners
        )));
    }
    None
}

/// Whether `source` (configuration `source_conf`) may be absorbed by
/// `target` (configuration `target_conf`). Every refusal says what to do.
pub fn check_merge(
    source: &RegionMeta,
    source_conf: &ConfState,
    target: &RegionMeta,
    target_conf: &ConfState,
) -> Result<(), RaftstoreError> {
    let (s, t) = (source.id, target.id);
    if s == t {
        return Err(RaftstoreError::InvalidRequest(format!(
            "region {s} cannot merge into itself"
        )));
    }
    if !adjacent(source, target) {
        return Err(RaftstoreError::InvalidRequest(format!(
            "regions {s} and {t} are not adjacent; only neighbouring regions merge"
        )));
    }
    if let Some(refusal) =
        configuration_refusal(s, source_conf).or_else(|| configuration_refusal(t, target_conf))
    {
        return Err(refusal);
    }
    let (source_voters, target_voters) = (voters(source_conf), voters(target_conf));
    if source_voters != target_voters {
        return Err(RaftstoreError::Refused(format!(
            "regions {s} and {t} have different voters ({source_voters:?} and {target_voters:?}); move replicas so both regions have the same stores first"
        )));
    }
    Ok(())
}

/// The configuration a region's metadata implies when it has no learners
/// and no joint configuration (what a merge requires): every peer votes.
pub fn voters_of(region: &RegionMeta) -> ConfState {
    ConfState {
        voters: region.peers.iter().map(|p| p.store_id).collect(),
        ..Default::default()
    }
}

/// The source once `PrepareMerge` is applied: frozen, with both epoch
/// numbers moved on (a request or membership change built before is
/// refused).
pub fn frozen(source: &RegionMeta) -> RegionMeta {
    RegionMeta {
        epoch: frozen_epoch(source.epoch),
        ..source.clone()
    }
}

/// The epoch `PrepareMerge` gives a source whose epoch was `epoch`: both
/// numbers one up, which neither a split (version only) nor a membership
/// change (conf_ver only) produces, so it tells a frozen source apart.
pub fn frozen_epoch(epoch: RegionEpoch) -> RegionEpoch {
    RegionEpoch {
        conf_ver: epoch.conf_ver + 1,
        version: epoch.version + 1,
    }
}

/// The source once `RollbackMerge` is applied: serving again, with a new
/// version.
pub fn rolled_back(source: &RegionMeta) -> RegionMeta {
    RegionMeta {
        epoch: RegionEpoch {
            version: source.epoch.version + 1,
            ..source.epoch
        },
        ..source.clone()
    }
}

/// The target once it absorbed `source`: the union of both ranges, with a
/// version above both.
pub fn merged(target: &RegionMeta, source: &RegionMeta) -> RegionMeta {
    assert!(adjacent(source, target), "only neighbours merge");
    let source_on_the_left = !source.end_key.is_empty() && source.end_key == target.start_key;
    let (start_key, end_key) = if source_on_the_left {
        (source.start_key.clone(), target.end_key.clone())
    } else {
        (target.start_key.clone(), source.end_key.clone())
    };
    RegionMeta {
        start_key,
        end_key,
        epoch: RegionEpoch {
            conf_ver: target.epoch.conf_ver,
            version: target.epoch.version.max(source.epoch.version) + 1,
        },
        ..target.clone()
    }
}

/// Whether `target` already covers `source`'s whole range: it absorbed it
/// (regions never overlap otherwise), so a repeated `CommitMerge` is a no-op.
pub fn absorbed(target: &RegionMeta, source: &RegionMeta) -> bool {
    target.contains_range(&source.start_key, &source.end_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(id: u64, start: &[u8], end: &[u8]) -> RegionMeta {
        RegionMeta {
            start_key: start.to_vec(),
            end_key: end.to_vec(),
            ..RegionMeta::whole_keyspace(id, &[1, 2, 3])
        }
    }

    fn voters_conf(voters: &[u64]) -> ConfState {
        ConfState {
            voters: voters.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn neighbours_with_the_same_voters_may_merge() {
        let conf = voters_conf(&[1, 2, 3]);
        let left = region(5, b"", b"m");
        let right = region(9, b"m", b"");
        assert!(check_merge(&right, &conf, &left, &conf).is_ok());
        assert!(check_merge(&left, &conf, &right, &voters_conf(&[3, 2, 1])).is_ok());
    }

    #[test]
    fn refusals_name_the_cause() {
        let conf = voters_conf(&[1, 2, 3]);
        let a = region(5, b"a", b"c");
        let far = region(9, b"d", b"f");
        let err = check_merge(&a, &conf, &far, &conf).unwrap_err();
        assert!(matches!(err, RaftstoreError::InvalidRequest(_)), "{err}");
        assert!(err.to_string().contains("not adjacent"), "{err}");
        let b = region(9, b"c", b"f");
        let err = check_merge(&a, &conf, &b, &voters_conf(&[1, 2, 4])).unwrap_err();
        assert!(matches!(err, RaftstoreError::Refused(_)), "{err}");
        assert!(err.to_string().contains("same stores"), "{err}");
        let with_learner = ConfState {
            learners: vec![4],
            ..conf.clone()
        };
        let err = check_merge(&a, &with_learner, &b, &conf).unwrap_err();
        assert!(err.to_string().contains("learners"), "{err}");
        let joint = ConfState {
            voters_outgoing: vec![1, 2, 4],
            ..conf.clone()
        };
        let err = check_merge(&a, &conf, &b, &joint).unwrap_err();
        assert!(matches!(err, RaftstoreError::Unavailable(_)), "{err}");
        assert!(check_merge(&a, &conf, &a, &conf).is_err(), "itself");
    }

    #[test]
    fn the_merged_region_covers_both_and_outranks_both_epochs() {
        let mut left = region(5, b"", b"m");
        left.epoch.version = 7;
        let mut right = region(9, b"m", b"");
        right.epoch.version = 3;
        let source = frozen(&right);
        assert_eq!(source.epoch.version, 4);
        assert_eq!(source.epoch.conf_ver, right.epoch.conf_ver + 1);
        let t = merged(&left, &source);
        assert_eq!(
            (t.id, &t.start_key[..], &t.end_key[..]),
            (5, &b""[..], &b""[..])
        );
        assert_eq!(t.epoch.version, 8);
        assert_eq!(t.epoch.conf_ver, left.epoch.conf_ver);
        assert!(absorbed(&t, &source));
        assert!(!absorbed(&left, &source));
        // The target on the right of its source.
        let t = merged(&right, &frozen(&left));
        assert_eq!(
            (t.id, &t.start_key[..], &t.end_key[..]),
            (9, &b""[..], &b""[..])
        );
        assert_eq!(t.epoch.version, 9);
        let back = rolled_back(&source);
        assert_eq!(back.epoch.version, source.epoch.version + 1);
        assert_eq!(back.epoch.conf_ver, source.epoch.conf_ver);
    }
}
