//! Membership changes of a region, decided without I/O: what a requested
//! list of peer changes means for the region's Raft configuration, and
//! whether it may be proposed at all.
//!
//! Guarantees of [`plan`]:
//! - a change that is already in effect (a learner added twice, a voter
//!   promoted twice, a store removed twice) is dropped, so a retried
//!   request is harmless; nothing left means nothing to propose;
//! - a change that cannot be carried out as asked is refused with
//!   [`RaftstoreError::InvalidRequest`], one that would be unsafe now (the
//!   leader removing itself, a voter set without a live majority) with
//!   [`RaftstoreError::Refused`]; the messages say what to do instead;
//! - several changes become one `ConfChangeV2` that raft-rs applies through
//!   a joint configuration and leaves by itself (`auto_leave`); a single
//!   change is a simple one (it changes at most one voter).
//!
//! A proposal carries the `conf_ver` it was planned against in its entry's
//! context ([`encode_context`]); every replica applies it only if the
//! region's `conf_ver` is still that one when the entry is applied.

use std::collections::BTreeSet;

use raft::prelude::{
    ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, ConfState,
};

use crate::codec::{CodecError, Decoder, Encoder};
use crate::error::RaftstoreError;

/// What to do with one store's replica of a region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerChangeKind {
    /// Add a replica that receives the log but does not vote.
    AddLearner,
    /// Make a learner a voter.
    Promote,
    /// Remove the replica, whatever its role.
    Remove,
}

/// One requested change of a region's membership.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerChange {
    pub kind: PeerChangeKind,
    pub store_id: u64,
}

/// The raft-rs change that carries out `changes` on a region whose (not
/// joint) configuration is `conf`, as planned by the leader `leader`;
/// `None` when every change is already in effect. `is_alive(store)` says
/// whether a store's replica answered recently: a change of the voters is
/// refused unless a majority of the new voters is alive.
pub fn plan(
    region_id: u64,
    conf: &ConfState,
    leader: u64,
    changes: &[PeerChange],
    is_alive: impl Fn(u64) -> bool,
) -> Result<Option<ConfChangeV2>, RaftstoreError> {
    debug_assert!(
        conf.voters_outgoing.is_empty(),
        "a joint configuration is left before another change is planned"
    );
    let invalid = |why: String| Err(RaftstoreError::InvalidRequest(why));
    if changes.is_empty() {
        return invalid(format!("region {region_id}: no peer change requested"));
    }
    let voters: BTreeSet<u64> = conf.voters.iter().copied().collect();
    let learners: BTreeSet<u64> = conf.learners.iter().copied().collect();
    let mut new_voters = voters.clone();
    let mut named = BTreeSet::new();
    let mut singles = Vec::new();
    for change in changes {
        let store = change.store_id;
        if store == 0 {
            return invalid(format!("region {region_id}: store ids start at 1"));
        }
        if !named.insert(store) {
            return invalid(format!(
                "region {region_id}: store {store} is named twice; request one change per store"
            ));
        }
        let change_type = match change.kind {
            PeerChangeKind::AddLearner if voters.contains(&store) => {
                return invalid(format!(
                    "region {region_id}: store {store} is already a voter; a voter cannot be made a learner"
                ))
            }
            PeerChangeKind::AddLearner if learners.contains(&store) => continue,
            PeerChangeKind::AddLearner => ConfChangeType::AddLearnerNode,
            PeerChangeKind::Promote if voters.contains(&store) => continue,
            PeerChangeKind::Promote if learners.contains(&store) => {
                new_voters.insert(store);
                ConfChangeType::AddNode
            }
            PeerChangeKind::Promote => {
                return invalid(format!(
                    "region {region_id}: store {store} holds no replica to promote; add it as a learner first"
                ))
            }
            PeerChangeKind::Remove if store == leader => {
                return Err(RaftstoreError::Refused(format!(
                    "region {region_id}: store {store} is the leader and cannot remove itself; transfer leadership to another voter first"
                )))
            }
            PeerChangeKind::Remove if voters.contains(&store) => {
                new_voters.remove(&store);
                ConfChangeType::RemoveNode
            }
            PeerChangeKind::Remove if learners.contains(&store) => ConfChangeType::RemoveNode,
            PeerChangeKind::Remove => continue,
        };
        let mut single = ConfChangeSingle::default();
        single.set_change_type(change_type);
        single.node_id = store;
        singles.push(single);
    }
    if singles.is_empty() {
        return Ok(None);
    }
    if new_voters != voters {
        let alive = new_voters.iter().filter(|&&s| is_alive(s)).count();
        if alive * 2 <= new_voters.len() {
            let down: Vec<u64> = new_voters
                .iter()
                .copied()
                .filter(|&s| !is_alive(s))
                .collect();
            return Err(RaftstoreError::Refused(format!(
                "region {region_id}: after this change only {alive} of its {} voters would be alive (stores {down:?} are not answering), not a majority; bring those stores back or remove a voter that is down instead",
                new_voters.len()
            )));
        }
    }
    let mut cc = ConfChangeV2::default();
    cc.set_transition(ConfChangeTransition::Auto);
    cc.set_changes(singles.into());
    Ok(Some(cc))
}

/// Format version of a conf change entry's context.
const CONTEXT_FORMAT_V1: u8 = 1;

/// The context of a conf change planned against `conf_ver`.
pub fn encode_context(conf_ver: u64) -> Vec<u8> {
    let mut enc = Encoder::new();
    enc.u8(CONTEXT_FORMAT_V1).u64(conf_ver);
    enc.finish()
}

/// The `conf_ver` a conf change entry was planned against; `None` for an
/// entry raft-rs proposed itself (leaving a joint configuration), whose
/// context is empty.
pub fn decode_context(context: &[u8]) -> Result<Option<u64>, CodecError> {
    if context.is_empty() {
        return Ok(None);
    }
    let mut dec = Decoder::new("conf change context", context);
    let format = dec.u8()?;
    if format != CONTEXT_FORMAT_V1 {
        return Err(CodecError {
            what: "conf change context",
            reason: format!("unknown format {format}"),
        });
    }
    let conf_ver = dec.u64()?;
    dec.finish()?;
    Ok(Some(conf_ver))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(voters: &[u64], learners: &[u64]) -> ConfState {
        ConfState {
            voters: voters.to_vec(),
            learners: learners.to_vec(),
            ..Default::default()
        }
    }

    fn change(kind: PeerChangeKind, store_id: u64) -> PeerChange {
        PeerChange { kind, store_id }
    }

    use PeerChangeKind::{AddLearner, Promote, Remove};

    fn singles(cc: &ConfChangeV2) -> Vec<(ConfChangeType, u64)> {
        cc.changes
            .iter()
            .map(|c| (c.get_change_type(), c.node_id))
            .collect()
    }

    #[test]
    fn a_move_is_one_joint_change_and_retries_are_no_ops() {
        let all_alive = |_| true;
        let add = plan(
            1,
            &conf(&[1, 2, 3], &[]),
            1,
            &[change(AddLearner, 4)],
            all_alive,
        )
        .unwrap()
        .unwrap();
        assert_eq!(singles(&add), [(ConfChangeType::AddLearnerNode, 4)]);
        assert_eq!(add.enter_joint(), None, "one change is a simple change");
        let again = plan(
            1,
            &conf(&[1, 2, 3], &[4]),
            1,
            &[change(AddLearner, 4)],
            all_alive,
        );
        assert!(matches!(again, Ok(None)));

        let swap = [change(Promote, 4), change(Remove, 3)];
        let cc = plan(1, &conf(&[1, 2, 3], &[4]), 1, &swap, all_alive)
            .unwrap()
            .unwrap();
        assert_eq!(
            singles(&cc),
            [
                (ConfChangeType::AddNode, 4),
                (ConfChangeType::RemoveNode, 3)
            ]
        );
        assert_eq!(cc.enter_joint(), Some(true), "joint, left automatically");
        let done = plan(1, &conf(&[1, 2, 4], &[]), 1, &swap, all_alive);
        assert!(matches!(done, Ok(None)), "the move already happened");
    }

    #[test]
    fn impossible_changes_are_invalid() {
        let c = conf(&[1, 2, 3], &[4]);
        let is_invalid = |changes: &[PeerChange]| {
            matches!(
                plan(7, &c, 1, changes, |_| true),
                Err(RaftstoreError::InvalidRequest(_))
            )
        };
        assert!(is_invalid(&[]));
        assert!(is_invalid(&[change(Promote, 5)]), "no replica to promote");
        assert!(is_invalid(&[change(AddLearner, 2)]), "demotion");
        assert!(is_invalid(&[change(AddLearner, 0)]));
        assert!(is_invalid(&[change(Promote, 4), change(Remove, 4)]));
    }

    #[test]
    fn the_leader_never_removes_itself() {
        let refused = plan(1, &conf(&[1, 2, 3], &[]), 2, &[change(Remove, 2)], |_| true);
        assert!(
            matches!(&refused, Err(RaftstoreError::Refused(m)) if m.contains("transfer leadership")),
            "{refused:?}"
        );
    }

    #[test]
    fn a_change_that_leaves_no_live_majority_is_refused() {
        // Store 3 is down: removing 2 leaves {1, 3} with one live voter.
        let alive = |s: u64| s != 3;
        let c = conf(&[1, 2, 3], &[4]);
        let refused = plan(1, &c, 1, &[change(Remove, 2)], alive);
        assert!(
            matches!(&refused, Err(RaftstoreError::Refused(m)) if m.contains("not a majority")),
            "{refused:?}"
        );
        // Removing the dead voter is fine, and so is removing a learner.
        assert!(plan(1, &c, 1, &[change(Remove, 3)], alive)
            .unwrap()
            .is_some());
        assert!(plan(1, &c, 1, &[change(Remove, 4)], |s| s == 1)
            .unwrap()
            .is_some());
        // Promoting a dead learner into {1, 2, 3} with 3 down: 2 of 4.
        let dead_learner = |s: u64| s == 1 || s == 2;
        assert!(matches!(
            plan(1, &c, 1, &[change(Promote, 4)], dead_learner),
            Err(RaftstoreError::Refused(_))
        ));
    }

    #[test]
    fn contexts_round_trip_and_the_empty_one_is_raft_rs_own() {
        assert_eq!(decode_context(&encode_context(42)).unwrap(), Some(42));
        assert_eq!(decode_context(&[]).unwrap(), None);
        let bytes = encode_context(42);
        for cut in 1..bytes.len() {
            assert!(decode_context(&bytes[..cut]).is_err());
        }
        assert!(decode_context(&[9, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
    }
}
