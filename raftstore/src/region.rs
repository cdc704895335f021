//! Region metadata: the key range a Raft group owns, its peers, and its
//! epoch. The epoch checks here are the single definition of "stale routing"
//! shared by the request path, the apply path and the `specs` models.
//!
//! A peer's role (voter or learner) is not kept here: the region's Raft
//! configuration (`ConfState`, checkpointed with the region) is the one
//! record of it; [`RegionMeta::with_membership`] derives `peers` from it.

use raft::prelude::ConfState;

use crate::codec::{CodecError, Decoder, Encoder};

/// Version numbers of a region's shape: `version` grows on split/merge,
/// `conf_ver` on membership change.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegionEpoch {
    pub conf_ver: u64,
    pub version: u64,
}

impl RegionEpoch {
    /// A request built against `self` may be served by a region whose
    /// current epoch is `current` only if neither number moved.
    pub fn is_current(&self, current: &RegionEpoch) -> bool {
        self.conf_ver == current.conf_ver && self.version == current.version
    }
}

/// One replica of a region. Today a peer's Raft id equals its store (node)
/// id: a store holds at most one replica of a region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerMeta {
    pub id: u64,
    pub store_id: u64,
}

/// A region: the keys in `[start_key, end_key)` (empty end = unbounded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionMeta {
    pub id: u64,
    pub start_key: Vec<u8>,
    pub end_key: Vec<u8>,
    pub epoch: RegionEpoch,
    pub peers: Vec<PeerMeta>,
}

impl RegionMeta {
    /// The region covering the whole keyspace, replicated on `store_ids`:
    /// what a fresh cluster bootstraps with.
    pub fn whole_keyspace(id: u64, store_ids: &[u64]) -> Self {
        let peers = store_ids
            .iter()
            .map(|&s| PeerMeta { id: s, store_id: s })
            .collect();
        RegionMeta {
            id,
            start_key: Vec::new(),
            end_key: Vec::new(),
            epoch: RegionEpoch {
                conf_ver: 1,
                version: 1,
            },
            peers,
        }
    }

    /// What a store knows of a region it has only heard of through a Raft
    /// message (a replica created to receive a snapshot): its id. Epoch
    /// (0, 0) marks it; every real region has version and conf_ver >= 1.
    pub fn unknown(id: u64) -> Self {
        RegionMeta {
            id,
            start_key: Vec::new(),
            end_key: Vec::new(),
            epoch: RegionEpoch::default(),
            peers: Vec::new(),
        }
    }

    /// False for [`RegionMeta::unknown`]: the range and peers are not known.
    pub fn is_known(&self) -> bool {
        self.epoch != RegionEpoch::default()
    }

    pub fn contains_key(&self, key: &[u8]) -> bool {
        key >= self.start_key.as_slice()
            && (self.end_key.is_empty() || key < self.end_key.as_slice())
    }

    /// `[start, end)` lies inside the region (empty `end` = unbounded).
    pub fn contains_range(&self, start: &[u8], end: &[u8]) -> bool {
        if start < self.start_key.as_slice() {
            return false;
        }
        if self.end_key.is_empty() {
            return true;
        }
        !end.is_empty() && end <= self.end_key.as_slice()
    }

    /// Whether a split at `split_key` leaves two non-empty ranges: the key
    /// lies inside the region and is not its start.
    pub fn may_split_at(&self, split_key: &[u8]) -> bool {
        split_key > self.start_key.as_slice() && self.contains_key(split_key)
    }

    /// The two regions a split at `split_key` makes: `self` keeps `[start,
    /// split_key)`, region `new_region_id` gets `[split_key, end)` on the
    /// same peers. Both carry the next epoch version, so every request
    /// built for the old shape is refused by both.
    pub fn split(&self, split_key: &[u8], new_region_id: u64) -> (RegionMeta, RegionMeta) {
        assert!(
            self.may_split_at(split_key),
            "split key must lie strictly inside the region"
        );
        assert_ne!(self.id, new_region_id, "a split makes a new region");
        let epoch = RegionEpoch {
            conf_ver: self.epoch.conf_ver,
            version: self.epoch.version + 1,
        };
        let left = RegionMeta {
            end_key: split_key.to_vec(),
            epoch,
            ..self.clone()
        };
        let right = RegionMeta {
            id: new_region_id,
            start_key: split_key.to_vec(),
            epoch,
            ..self.clone()
        };
        (left, right)
    }

    /// The region once a membership change left its Raft configuration at
    /// `conf_state`: `conf_ver` moves on by one, and `peers` lists every
    /// replica the configuration names (see [`members`]). The range and
    /// `version` do not change.
    pub fn with_membership(&self, conf_state: &ConfState) -> RegionMeta {
        let peers = members(conf_state)
            .into_iter()
            .map(|id| PeerMeta { id, store_id: id })
            .collect();
        RegionMeta {
            epoch: RegionEpoch {
                conf_ver: self.epoch.conf_ver + 1,
                version: self.epoch.version,
            },
            peers,
            ..self.clone()
        }
    }

    pub fn encode(&self, enc: &mut Encoder) {
        enc.u64(self.id)
            .bytes(&self.start_key)
            .bytes(&self.end_key)
            .u64(self.epoch.conf_ver)
            .u64(self.epoch.version)
            .u64(self.peers.len() as u64);
        for p in &self.peers {
            enc.u64(p.id).u64(p.store_id);
        }
    }

    pub fn decode(dec: &mut Decoder<'_>) -> Result<Self, CodecError> {
        let id = dec.u64()?;
        let start_key = dec.bytes()?;
        let end_key = dec.bytes()?;
        let epoch = RegionEpoch {
            conf_ver: dec.u64()?,
            version: dec.u64()?,
        };
        let n = dec.count(16)?;
        let mut peers = Vec::with_capacity(n);
        for _ in 0..n {
            peers.push(PeerMeta {
                id: dec.u64()?,
                store_id: dec.u64()?,
            });
        }
        Ok(RegionMeta {
            id,
            start_key,
            end_key,
            epoch,
            peers,
        })
    }
}

/// Every replica a Raft configuration names, in id order: the voters of
/// both halves of a joint configuration and the learners (a voter being
/// demoted is still an outgoing voter until the configuration is left).
pub fn members(conf_state: &ConfState) -> Vec<u64> {
    let mut ids: Vec<u64> = conf_state
        .voters
        .iter()
        .chain(&conf_state.voters_outgoing)
        .chain(&conf_state.learners)
        .chain(&conf_state.learners_next)
        .copied()
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// The learners of a Raft configuration, in id order.
pub fn learners(conf_state: &ConfState) -> Vec<u64> {
    let mut ids = conf_state.learners.clone();
    ids.sort_unstable();
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(start: &[u8], end: &[u8]) -> RegionMeta {
        RegionMeta {
            start_key: start.to_vec(),
            end_key: end.to_vec(),
            ..RegionMeta::whole_keyspace(1, &[1, 2, 3])
        }
    }

    #[test]
    fn key_and_range_containment() {
        let r = region(b"b", b"d");
        assert!(!r.contains_key(b"a"));
        assert!(r.contains_key(b"b"));
        assert!(r.contains_key(b"c\xff"));
        assert!(!r.contains_key(b"d"));
        assert!(r.contains_range(b"b", b"d"));
        assert!(!r.contains_range(b"b", b""));
        assert!(!r.contains_range(b"a", b"c"));
        let all = region(b"", b"");
        assert!(all.contains_key(b""));
        assert!(all.contains_range(b"", b""));
    }

    #[test]
    fn stale_epoch_is_not_current() {
        let now = RegionEpoch {
            conf_ver: 2,
            version: 5,
        };
        assert!(now.is_current(&now));
        assert!(!RegionEpoch {
            conf_ver: 2,
            version: 4
        }
        .is_current(&now));
        assert!(!RegionEpoch {
            conf_ver: 1,
            version: 5
        }
        .is_current(&now));
    }

    #[test]
    fn split_makes_adjacent_regions_with_a_new_version() {
        let r = region(b"b", b"x");
        assert!(
            !r.may_split_at(b"b"),
            "the start key leaves an empty left half"
        );
        assert!(!r.may_split_at(b"a"));
        assert!(!r.may_split_at(b"x"));
        assert!(r.may_split_at(b"b\0"));
        let (left, right) = r.split(b"m", 9);
        assert_eq!((left.id, right.id), (1, 9));
        assert_eq!(
            (left.start_key.as_slice(), left.end_key.as_slice()),
            (&b"b"[..], &b"m"[..])
        );
        assert_eq!(
            (right.start_key.as_slice(), right.end_key.as_slice()),
            (&b"m"[..], &b"x"[..])
        );
        assert_eq!(left.epoch.version, r.epoch.version + 1);
        assert_eq!(left.epoch, right.epoch);
        assert_eq!(left.peers, r.peers);
        assert_eq!(right.peers, r.peers);
        assert!(!r.epoch.is_current(&left.epoch));
        let (_, tail) = region(b"", b"").split(b"k", 2);
        assert!(tail.end_key.is_empty());
    }

    #[test]
    fn meta_round_trips() {
        let r = region(b"k1", b"k9");
        let mut enc = Encoder::new();
        r.encode(&mut enc);
        let buf = enc.finish();
        let mut dec = Decoder::new("region", &buf);
        assert_eq!(RegionMeta::decode(&mut dec).unwrap(), r);
        dec.finish().unwrap();
    }

    #[test]
    fn a_membership_change_moves_conf_ver_and_lists_every_member() {
        let r = region(b"b", b"x");
        // A learner joins.
        let with_learner = r.with_membership(&ConfState {
            voters: vec![1, 2, 3],
            learners: vec![4],
            ..Default::default()
        });
        assert_eq!(with_learner.epoch.conf_ver, r.epoch.conf_ver + 1);
        assert_eq!(with_learner.epoch.version, r.epoch.version);
        assert_eq!(
            (
                with_learner.start_key.as_slice(),
                with_learner.end_key.as_slice()
            ),
            (&b"b"[..], &b"x"[..])
        );
        let ids = |r: &RegionMeta| {
            r.peers
                .iter()
                .map(|p| (p.id, p.store_id))
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&with_learner), [(1, 1), (2, 2), (3, 3), (4, 4)]);
        assert!(
            !r.epoch.is_current(&with_learner.epoch),
            "requests built before are refused"
        );
        // Joint: 4 promoted, 3 on its way out; both still members.
        let joint = ConfState {
            voters: vec![4, 1, 2],
            voters_outgoing: vec![1, 2, 3],
            auto_leave: true,
            ..Default::default()
        };
        let entered = with_learner.with_membership(&joint);
        assert_eq!(ids(&entered), [(1, 1), (2, 2), (3, 3), (4, 4)]);
        assert_eq!(entered.epoch.conf_ver, r.epoch.conf_ver + 2);
        // Leaving the joint configuration drops 3.
        let left = entered.with_membership(&ConfState {
            voters: vec![1, 2, 4],
            ..Default::default()
        });
        assert_eq!(ids(&left), [(1, 1), (2, 2), (4, 4)]);
        assert_eq!(left.epoch.conf_ver, r.epoch.conf_ver + 3);
        // A demotion keeps the voter as a member, as a learner-to-be.
        let demoting = ConfState {
            voters: vec![1, 2],
            voters_outgoing: vec![1, 2, 4],
            learners_next: vec![4],
            ..Default::default()
        };
        assert_eq!(members(&demoting), [1, 2, 4]);
        assert!(learners(&demoting).is_empty());
        assert_eq!(
            learners(&ConfState {
                learners: vec![9, 4],
                ..Default::default()
            }),
            [4, 9]
        );
    }
}
