//! The split-snapshot model: one store that missed a region's splits, and
//! how it catches up — by applying the splits from its own log, or by
//! snapshots of the regions the splits made, in any order, late or
//! repeated. The store's decision whether a replica still waiting for its
//! first snapshot may take one is `raftstore::rules::may_step_snapshot`,
//! the function `ShardCore` calls.
//!
//! Mirrors `ShardCore` and `Peer`:
//! - a message for a region the store does not hold creates a replica
//!   waiting for its first snapshot (a placeholder);
//! - a placeholder's snapshot is stepped (accepted) or held, by the rule;
//!   accepted snapshots install in the next turn, before that turn applies
//!   anything;
//! - an initialized replica takes a snapshot only if it is newer than what
//!   it holds (raft-rs refuses older ones);
//! - applying a split shrinks the region and starts the new one, replacing
//!   a placeholder but never an initialized replica;
//! - held snapshots are re-checked on the clock, and dropped once their
//!   replica is initialized.
//!
//! The cluster's history is fixed: region 1 (the whole keyspace) splits at
//! `m`, making region 2; region 2 splits at `t`, making region 3. The store
//! started with region 1 before both splits. The network may deliver a
//! snapshot of any region in any shape it ever had, at any time, any
//! number of times.
//!
//! Property: the store's initialized regions never overlap. An overlap is
//! the bug this rule exists for: the older shape would apply its log over
//! the newer region's keys. A broken variant that ignores accepted but not
//! yet installed snapshots must fail it.

use std::collections::BTreeMap;

use raftstore::region::{RegionEpoch, RegionMeta};
use raftstore::region_map::ranges_overlap;
use raftstore::rules::may_step_snapshot;
use stateright::{Model, Property};

/// A shape a region had: (region id, epoch version, start, end).
type ShapeRow = (u64, u64, &'static [u8], &'static [u8]);

/// Every shape of the fixed history, oldest first per region.
const SHAPES: [ShapeRow; 5] = [
    (1, 1, b"", b""),
    (1, 2, b"", b"m"),
    (2, 2, b"m", b""),
    (2, 3, b"m", b"t"),
    (3, 3, b"t", b""),
];

/// Applying the split in shape `from`'s log: (shape after, new region's shape).
const SPLITS: [(usize, usize, usize); 2] = [(0, 1, 2), (2, 3, 4)];

/// A shape, by its index in [`SHAPES`].
pub type Shape = usize;

fn meta(shape: Shape) -> RegionMeta {
    let (id, version, start, end) = SHAPES[shape];
    RegionMeta {
        id,
        start_key: start.to_vec(),
        end_key: end.to_vec(),
        epoch: RegionEpoch {
            conf_ver: 1,
            version,
        },
        peers: Vec::new(),
    }
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Replica {
    /// Created by a message; waits for its first snapshot.
    Placeholder,
    Initialized(Shape),
}

#[derive(Clone, Debug, Default, Hash, PartialEq, Eq)]
pub struct StoreState {
    pub replicas: BTreeMap<u64, Replica>,
    /// Snapshots stepped, to install in the next turn (placeholders and
    /// initialized replicas alike).
    pub stepped: BTreeMap<u64, Shape>,
    /// Placeholder snapshots held back by the rule.
    pub held: BTreeMap<u64, Shape>,
    /// Ghost: some placeholder was initialized by a snapshot.
    pub placeholder_installed: bool,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum Action {
    /// A leader's snapshot of this shape arrives.
    Deliver(Shape),
    /// A turn: stepped snapshots install.
    Turn,
    /// The region applies the split in its log (after a turn's installs).
    ApplySplit(u64),
    /// The clock re-checks held snapshots.
    Clock,
}

/// Which regions the store's rule counts against a placeholder's snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OverlapCheck {
    /// Installed regions and snapshots stepped but not yet installed (as
    /// `ShardCore` does).
    InstalledAndStepped,
    /// Broken: installed regions only.
    InstalledOnly,
}

pub struct SplitSnapshotModel {
    pub check: OverlapCheck,
}

pub const NEVER_OVERLAP: &str = "initialized regions never overlap";
pub const CAUGHT_UP: &str = "all three regions initialized in their final shapes";
pub const PLACEHOLDER_INSTALLED: &str = "a placeholder initialized by a snapshot";

impl SplitSnapshotModel {
    /// The rule as `ShardCore::check_snapshot` applies it.
    fn may_step(&self, state: &StoreState, shape: Shape) -> bool {
        let region = meta(shape);
        let installed: Vec<RegionMeta> = initialized(state).map(|(_, s)| meta(s)).collect();
        let stepped: Vec<RegionMeta> = match self.check {
            OverlapCheck::InstalledAndStepped => state.stepped.values().map(|&s| meta(s)).collect(),
            OverlapCheck::InstalledOnly => Vec::new(),
        };
        may_step_snapshot(&region, installed.iter().chain(&stepped))
    }

    fn deliver(&self, state: &mut StoreState, shape: Shape) {
        let region = SHAPES[shape].0;
        match state.replicas.get(&region).copied() {
            None | Some(Replica::Placeholder) => {
                state.replicas.insert(region, Replica::Placeholder);
                if state.stepped.contains_key(&region) {
                    // raft-rs holds one pending snapshot; this one waits.
                    return;
                }
                if self.may_step(state, shape) {
                    state.stepped.insert(region, shape);
                } else {
                    state.held.insert(region, shape);
                }
            }
            Some(Replica::Initialized(current)) => {
                if SHAPES[shape].1 > SHAPES[current].1 {
                    state.stepped.insert(region, shape);
                }
            }
        }
    }
}

fn initialized(state: &StoreState) -> impl Iterator<Item = (u64, Shape)> + '_ {
    state.replicas.iter().filter_map(|(&id, r)| match r {
        Replica::Initialized(shape) => Some((id, *shape)),
        Replica::Placeholder => None,
    })
}

impl Model for SplitSnapshotModel {
    type State = StoreState;
    type Action = Action;

    fn init_states(&self) -> Vec<StoreState> {
        vec![StoreState {
            replicas: BTreeMap::from([(1, Replica::Initialized(0))]),
            ..Default::default()
        }]
    }

    fn actions(&self, state: &StoreState, actions: &mut Vec<Action>) {
        actions.extend((0..SHAPES.len()).map(Action::Deliver));
        if !state.stepped.is_empty() {
            actions.push(Action::Turn);
        } else {
            for (id, shape) in initialized(state) {
                if SPLITS.iter().any(|&(from, _, _)| from == shape) {
                    actions.push(Action::ApplySplit(id));
                }
            }
        }
        if !state.held.is_empty() {
            actions.push(Action::Clock);
        }
    }

    fn next_state(&self, last: &StoreState, action: Action) -> Option<StoreState> {
        let mut state = last.clone();
        match action {
            Action::Deliver(shape) => self.deliver(&mut state, shape),
            Action::Turn => {
                for (region, shape) in std::mem::take(&mut state.stepped) {
                    let before = state.replicas.insert(region, Replica::Initialized(shape));
                    state.placeholder_installed |= before == Some(Replica::Placeholder);
                }
            }
            Action::ApplySplit(region) => {
                let Some(Replica::Initialized(shape)) = state.replicas.get(&region).copied() else {
                    return None;
                };
                let &(_, after, child) = SPLITS.iter().find(|&&(from, _, _)| from == shape)?;
                state.replicas.insert(region, Replica::Initialized(after));
                let child_id = SHAPES[child].0;
                if !matches!(state.replicas.get(&child_id), Some(Replica::Initialized(_))) {
                    state.replicas.insert(child_id, Replica::Initialized(child));
                }
            }
            Action::Clock => {
                for (region, shape) in std::mem::take(&mut state.held) {
                    if matches!(state.replicas.get(&region), Some(Replica::Initialized(_))) {
                        continue;
                    }
                    if state.stepped.contains_key(&region) || !self.may_step(&state, shape) {
                        state.held.insert(region, shape);
                    } else {
                        state.stepped.insert(region, shape);
                    }
                }
            }
        }
        (state != *last).then_some(state)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always(NEVER_OVERLAP, |_, state: &StoreState| {
                let regions: Vec<RegionMeta> = initialized(state).map(|(_, s)| meta(s)).collect();
                regions
                    .iter()
                    .enumerate()
                    .all(|(i, a)| regions[i + 1..].iter().all(|b| !ranges_overlap(a, b)))
            }),
            Property::sometimes(CAUGHT_UP, |_, state: &StoreState| {
                let final_shapes = [(1, 1), (2, 3), (3, 4)];
                final_shapes.iter().all(|&(id, shape)| {
                    state.replicas.get(&id) == Some(&Replica::Initialized(shape))
                })
            }),
            Property::sometimes(PLACEHOLDER_INSTALLED, |_, state: &StoreState| {
                state.placeholder_installed
            }),
        ]
    }
}
