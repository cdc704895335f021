//! Model check of how a store that missed splits catches up by snapshots
//! (`specs::split_snapshots`): its regions never overlap, under every order
//! of deliveries, turns, split applies and clock ticks; and the check that
//! ignores snapshots stepped but not yet installed is caught.

use std::collections::BTreeSet;

use specs::split_snapshots::{
    OverlapCheck, SplitSnapshotModel, CAUGHT_UP, NEVER_OVERLAP, PLACEHOLDER_INSTALLED,
};
use stateright::{Checker, HasDiscoveries, Model};

#[test]
fn a_store_catching_up_on_splits_never_holds_overlapping_regions() {
    let model = SplitSnapshotModel {
        check: OverlapCheck::InstalledAndStepped,
    };
    let checker = model.checker().spawn_bfs().join();
    println!(
        "split-snapshot model: {} unique states, max depth {}",
        checker.unique_state_count(),
        checker.max_depth()
    );
    checker.assert_no_discovery(NEVER_OVERLAP);
    checker.assert_any_discovery(CAUGHT_UP);
    checker.assert_any_discovery(PLACEHOLDER_INSTALLED);
    assert!(
        checker.unique_state_count() > 20,
        "the model stopped exploring"
    );
}

#[test]
fn counting_only_installed_regions_lets_two_overlapping_snapshots_in() {
    let model = SplitSnapshotModel {
        check: OverlapCheck::InstalledOnly,
    };
    let checker = model
        .checker()
        .finish_when(HasDiscoveries::AnyOf(BTreeSet::from([NEVER_OVERLAP])))
        .spawn_bfs()
        .join();
    let path = checker
        .discovery(NEVER_OVERLAP)
        .expect("the broken check must let regions overlap");
    println!("counterexample: {:?}", path.into_actions());
}
