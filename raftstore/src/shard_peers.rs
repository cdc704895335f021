//! [`ShardPeers`]: the regions of one shard (their [`Peer`]s), filed by
//! what the shard's clock and turn owe them.
//!
//! An idle region hibernates (`Peer::hibernate_if_idle`); once it has
//! nothing left to send it is *asleep* (`Peer::is_asleep`), and neither a
//! tick nor a turn has anything to do for it. The regions that are not
//! asleep form the awake set, which is all a tick and a turn visit: their
//! cost follows the awake regions, however many sleep. Asleep regions are
//! filed by the store of their leader instead, because when that store goes
//! silent they are the ones to wake (see `liveness`).
//!
//! Every mutable access to a peer goes through [`PeerMut`], which files the
//! region again when it is dropped: no change of a peer's state can escape
//! the sets.
//!
//! Invariants (asserted on every access in debug builds; checked whole by
//! [`ShardPeers::check_filing`]):
//! - a region is in the awake set iff its peer is not asleep;
//! - an asleep region is filed under exactly one store, its leader's
//!   ([`NO_LEADER`] when it knows none);
//! - a region is filed as having an unstaged hard state iff its peer has a
//!   hard state change no WAL batch holds yet;
//! - a region is filed as removed iff its peer applied its own removal.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::{Deref, DerefMut};

use crate::peer::Peer;

/// The store an asleep region is filed under when it knows no leader.
pub const NO_LEADER: u64 = raft::INVALID_ID;

/// A peer and where it is filed. The peer is boxed: it is large (raft-rs's
/// `RawNode` alone is about a kilobyte), and a B-tree of thousands of
/// inline peers keeps a third of its node space empty.
struct Slot {
    peer: Box<Peer>,
    /// `Some(leader store)` while the peer is asleep; `None` while awake.
    asleep_under: Option<u64>,
    /// Whether the region is filed in `unstaged_hard_states` and in
    /// `removed`: refiling an unchanged peer then touches no set.
    filed_unstaged: bool,
    filed_removed: bool,
}

/// The sets regions are filed in (see the module's invariants).
#[derive(Default)]
struct Filing {
    /// Regions whose peer is not asleep, in id order.
    awake: BTreeSet<u64>,
    /// (leader store, region) for every asleep region.
    asleep_by_leader: BTreeSet<(u64, u64)>,
    /// Regions whose hard state changed since a WAL batch last held it.
    unstaged_hard_states: BTreeSet<u64>,
    /// Regions whose peer applied its own removal.
    removed: BTreeSet<u64>,
}

impl Filing {
    /// Files region `id` by its peer's current state.
    fn file(&mut self, id: u64, slot: &mut Slot) {
        let peer = &slot.peer;
        let asleep_under = peer
            .is_asleep()
            .then(|| peer.leader_store().unwrap_or(NO_LEADER));
        if slot.asleep_under != asleep_under {
            match slot.asleep_under {
                Some(leader) => self.asleep_by_leader.remove(&(leader, id)),
                None => self.awake.remove(&id),
            };
            match asleep_under {
                Some(leader) => self.asleep_by_leader.insert((leader, id)),
                None => self.awake.insert(id),
            };
            slot.asleep_under = asleep_under;
        }
        debug_assert_eq!(
            self.awake.contains(&id),
            !peer.is_asleep(),
            "a region is awake iff its peer is not asleep"
        );
        let (unstaged, removed) = (peer.has_unstaged_hard_state(), peer.is_removed());
        if slot.filed_unstaged != unstaged {
            set_membership(&mut self.unstaged_hard_states, id, unstaged);
            slot.filed_unstaged = unstaged;
        }
        if slot.filed_removed != removed {
            set_membership(&mut self.removed, id, removed);
            slot.filed_removed = removed;
        }
        debug_assert_eq!(self.unstaged_hard_states.contains(&id), unstaged);
        debug_assert_eq!(self.removed.contains(&id), removed);
    }

    /// Forgets region `id`, filed as `slot` says.
    fn unfile(&mut self, id: u64, slot: &Slot) {
        match slot.asleep_under {
            Some(leader) => self.asleep_by_leader.remove(&(leader, id)),
            None => self.awake.remove(&id),
        };
        self.unstaged_hard_states.remove(&id);
        self.removed.remove(&id);
    }
}

/// Puts `id` in `set` or takes it out.
fn set_membership(set: &mut BTreeSet<u64>, id: u64, member: bool) {
    if member {
        set.insert(id);
    } else {
        set.remove(&id);
    }
}

/// The regions of one shard.
#[derive(Default)]
pub struct ShardPeers {
    slots: BTreeMap<u64, Slot>,
    filing: Filing,
}

/// Mutable access to one peer; files its region again when dropped.
pub struct PeerMut<'a> {
    id: u64,
    slot: &'a mut Slot,
    filing: &'a mut Filing,
}

impl Deref for PeerMut<'_> {
    type Target = Peer;

    fn deref(&self) -> &Peer {
        &self.slot.peer
    }
}

impl DerefMut for PeerMut<'_> {
    fn deref_mut(&mut self) -> &mut Peer {
        &mut self.slot.peer
    }
}

impl Drop for PeerMut<'_> {
    fn drop(&mut self) {
        self.filing.file(self.id, self.slot);
    }
}

impl ShardPeers {
    pub fn new() -> ShardPeers {
        ShardPeers::default()
    }

    pub fn contains_key(&self, id: &u64) -> bool {
        self.slots.contains_key(id)
    }

    pub fn get(&self, id: &u64) -> Option<&Peer> {
        self.slots.get(id).map(|slot| &*slot.peer)
    }

    pub fn get_mut(&mut self, id: &u64) -> Option<PeerMut<'_>> {
        let slot = self.slots.get_mut(id)?;
        Some(PeerMut {
            id: *id,
            slot,
            filing: &mut self.filing,
        })
    }

    /// The peer of region `id`: `peer`, unless the region has one already.
    pub fn get_or_insert(&mut self, id: u64, peer: Peer) -> PeerMut<'_> {
        let slot = match self.slots.entry(id) {
            Entry::Occupied(slot) => slot.into_mut(),
            Entry::Vacant(slot) => {
                // Filed as awake; the guard's drop files it for real.
                self.filing.awake.insert(id);
                slot.insert(Slot {
                    peer: Box::new(peer),
                    asleep_under: None,
                    filed_unstaged: false,
                    filed_removed: false,
                })
            }
        };
        PeerMut {
            id,
            slot,
            filing: &mut self.filing,
        }
    }

    pub fn remove(&mut self, id: &u64) -> Option<Peer> {
        let slot = self.slots.remove(id)?;
        self.filing.unfile(*id, &slot);
        Some(*slot.peer)
    }

    /// Every peer, in region id order.
    pub fn values(&self) -> impl Iterator<Item = &Peer> {
        self.slots.values().map(|slot| &*slot.peer)
    }

    /// The regions that are not asleep, in id order.
    pub fn awake(&self) -> Vec<u64> {
        self.filing.awake.iter().copied().collect()
    }

    /// The regions whose hard state changed since a WAL batch last held it,
    /// in id order.
    pub fn unstaged_hard_states(&self) -> Vec<u64> {
        self.filing.unstaged_hard_states.iter().copied().collect()
    }

    /// The regions whose peer applied its own removal, in id order.
    pub fn removed(&self) -> Vec<u64> {
        self.filing.removed.iter().copied().collect()
    }

    /// The asleep regions whose leader's store `wake` picks (asked once per
    /// store that leads an asleep region, with [`NO_LEADER`] for those that
    /// know none), in (store, region) order.
    pub fn asleep_led_by(&self, mut wake: impl FnMut(u64) -> bool) -> Vec<u64> {
        use std::ops::Bound::{Excluded, Unbounded};
        let by_leader = &self.filing.asleep_by_leader;
        let mut picked = Vec::new();
        let mut next = by_leader.first().map(|&(leader, _)| leader);
        while let Some(leader) = next {
            let led = by_leader.range((leader, 0)..=(leader, u64::MAX));
            if wake(leader) {
                picked.extend(led.map(|&(_, id)| id));
            }
            next = by_leader
                .range((Excluded((leader, u64::MAX)), Unbounded))
                .next()
                .map(|&(leader, _)| leader);
        }
        picked
    }

    /// Checks every invariant of the module against every peer; a
    /// description of the first violation found.
    pub fn check_filing(&self) -> Result<(), String> {
        let filing = &self.filing;
        let mut asleep = 0;
        for (&id, slot) in &self.slots {
            let peer = &slot.peer;
            if filing.awake.contains(&id) == peer.is_asleep() {
                return Err(format!(
                    "region {id}: asleep {} but filed awake {}",
                    peer.is_asleep(),
                    filing.awake.contains(&id)
                ));
            }
            if peer.is_asleep() {
                asleep += 1;
                let leader = peer.leader_store().unwrap_or(NO_LEADER);
                if slot.asleep_under != Some(leader)
                    || !filing.asleep_by_leader.contains(&(leader, id))
                {
                    return Err(format!(
                        "region {id}: asleep with leader store {leader}, filed under {:?}",
                        slot.asleep_under
                    ));
                }
            }
            if filing.unstaged_hard_states.contains(&id) != peer.has_unstaged_hard_state() {
                return Err(format!("region {id}: unstaged hard state misfiled"));
            }
            if filing.removed.contains(&id) != peer.is_removed() {
                return Err(format!("region {id}: removal misfiled"));
            }
        }
        let filed_regions = [&filing.awake, &filing.unstaged_hard_states, &filing.removed];
        if filed_regions
            .iter()
            .any(|set| set.iter().any(|id| !self.slots.contains_key(id)))
            || filing.asleep_by_leader.len() != asleep
        {
            return Err("a region without a peer is filed".into());
        }
        Ok(())
    }
}
