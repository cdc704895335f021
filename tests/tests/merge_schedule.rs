//! The placement driver's merge checker on a real 3-node cluster: the user
//! keyspace is split by hand into seven regions, one of them larger than
//! `--max-merge-region-size`; the driver learns of the splits at once
//! (prompt region heartbeats, well before the periodic one), merges nothing
//! for `--split-merge-interval`, then merges the small regions into their
//! neighbours — the large one absorbs them but is never merged away — until
//! one user region is left. A client keeps writing and reading throughout
//! and sees no error; every key reads back and a full scan sees each key
//! once, in order.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use client::{voter_stores, Client, PlacementDriverClient, Region};
use flotilla_tests::checks::{check_data, wait_until};
use flotilla_tests::cluster::Cluster;
use flotilla_tests::test_environment;
use tokio::time::Instant;

/// Stores report every second and regions every 10 s: the driver hears of
/// splits and merges within a second only through prompt reports. A region
/// over 20,000 bytes is not merged away; one split in the last 12 s is left
/// alone (longer than the 10 s a new placement leader waits to schedule,
/// so the merges start when the splits allow, not when the driver does).
const SERVER_ARGS: [&str; 8] = [
    "--store-heartbeat-interval",
    "1s",
    "--region-heartbeat-interval",
    "10s",
    "--max-merge-region-size",
    "20000",
    "--split-merge-interval",
    "12s",
];
const REGION_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);
const SPLIT_MERGE_INTERVAL: Duration = Duration::from_secs(12);
/// Where the user keyspace is cut: seven regions.
const SPLIT_KEYS: [&str; 6] = ["b/", "d/", "f/", "h/", "p/", "r/"];
/// Keys written before the splits, by prefix: a few small ones in six
/// regions, and the large region `["h/", "p/")` (300 keys of 120 bytes).
const SMALL_PREFIXES: [&str; 6] = ["a/", "c/", "e/", "g/", "q/", "s/"];
const SMALL_KEYS: u32 = 30;
const LARGE_PREFIX: &str = "m/";
const LARGE_KEYS: u32 = 300;
const LARGE_VALUE_BYTES: usize = 120;
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

fn value_of(key: &str) -> Vec<u8> {
    if key.starts_with(LARGE_PREFIX) {
        let mut value = format!("v-{key}-").into_bytes();
        value.resize(LARGE_VALUE_BYTES, b'x');
        value
    } else {
        format!("v-{key}").into_bytes()
    }
}

/// The user regions the placement driver knows, in key order.
async fn user_regions(placement: &PlacementDriverClient) -> Result<Vec<Region>, String> {
    let regions = placement
        .scan_regions("", "", 0)
        .await
        .map_err(|e| e.to_string())?;
    Ok(regions
        .into_iter()
        .filter_map(|info| info.region)
        .filter(|r| !r.start_key.starts_with(&[0xFF, 0xFF]))
        .collect())
}

fn shapes(regions: &[Region]) -> String {
    let shape = |r: &Region| {
        format!(
            "{}:[{}, {})",
            r.id,
            r.start_key.escape_ascii(),
            r.end_key.escape_ascii()
        )
    };
    regions.iter().map(shape).collect::<Vec<_>>().join(" ")
}

/// The one region of `regions` when it holds the whole user key space.
fn the_whole_user_key_space(regions: &[Region]) -> Option<&Region> {
    match regions {
        [one] if one.start_key.is_empty() && one.end_key == [0xFF, 0xFF] => Some(one),
        _ => None,
    }
}

/// Writes and reads back a key of each small region in turn until `stop`;
/// every call must succeed (the client's own retries allowed). Returns the
/// keys written and how many operations it made.
async fn traffic(client: Client, stop: Arc<AtomicBool>) -> (BTreeSet<String>, u64) {
    let mut written = BTreeSet::new();
    let mut operations = 0;
    for n in 0u64.. {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let prefix = SMALL_PREFIXES[n as usize % SMALL_PREFIXES.len()];
        // Ten keys per prefix, overwritten: the regions do not grow.
        let key = format!("{prefix}w{}", n / SMALL_PREFIXES.len() as u64 % 10);
        client
            .put(key.as_str(), value_of(&key))
            .await
            .unwrap_or_else(|e| panic!("put {key} during merges: {e}"));
        let read = client
            .get(key.as_str())
            .await
            .unwrap_or_else(|e| panic!("get {key} during merges: {e}"));
        assert_eq!(read, Some(value_of(&key)), "{key}");
        written.insert(key);
        operations += 2;
    }
    (written, operations)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_regions_are_merged_back_and_a_large_one_is_never_merged_away() {
    let args = SERVER_ARGS.map(String::from).to_vec();
    let cluster = Cluster::start_with_leader(test_environment!(), 3, args, SETTLE_TIMEOUT)
        .await
        .expect("start a cluster with a leader");
    let client = cluster.client();
    let placement = client.placement();

    let mut written = BTreeSet::new();
    for prefix in SMALL_PREFIXES {
        for i in 0..SMALL_KEYS {
            written.insert(format!("{prefix}{i:04}"));
        }
    }
    for i in 0..LARGE_KEYS {
        written.insert(format!("{LARGE_PREFIX}{i:04}"));
    }
    for key in &written {
        client
            .put(key.as_str(), value_of(key))
            .await
            .unwrap_or_else(|e| panic!("put {key}: {e}"));
    }

    let splits_started = Instant::now();
    let mut large = None;
    for key in SPLIT_KEYS {
        let (left, _) = client.split_region(key).await.expect("split");
        if key == "p/" {
            large = Some(left.id);
        }
    }
    let splits_done = Instant::now();
    let large = large.expect("the large region is the left half of the split at p/");

    // The driver hears of every split through prompt reports, before a
    // periodic region heartbeat could have told it.
    let learnt = wait_until(
        "the placement driver knows all seven regions",
        splits_done + REGION_HEARTBEAT_INTERVAL,
        || async {
            let regions = user_regions(placement).await?;
            let starts: Vec<&[u8]> = regions.iter().map(|r| r.start_key.as_slice()).collect();
            let mut expected: Vec<&[u8]> = vec![b""];
            expected.extend(SPLIT_KEYS.iter().map(|k| k.as_bytes()));
            if starts == expected {
                Ok(Instant::now())
            } else {
                Err(shapes(&regions))
            }
        },
    )
    .await;
    eprintln!(
        "the placement driver knew of the last split {:?} after it returned",
        learnt - splits_done
    );

    let stop = Arc::new(AtomicBool::new(false));
    let traffic = tokio::spawn(traffic(cluster.client(), stop.clone()));

    // The regions become eligible a split-merge interval after the driver
    // learnt of their splits; the first merge comes no earlier.
    let eligible = learnt + SPLIT_MERGE_INTERVAL;
    let first_merge = wait_until("the first merge", eligible + SETTLE_TIMEOUT, || async {
        let regions = user_regions(placement).await?;
        if regions.len() < 7 {
            Ok(Instant::now())
        } else {
            Err(shapes(&regions))
        }
    })
    .await;
    assert!(
        first_merge >= splits_started + SPLIT_MERGE_INTERVAL,
        "a region merged {:?} after the splits started, within the split-merge interval",
        first_merge - splits_started
    );
    let merged = wait_until("one user region", eligible + SETTLE_TIMEOUT, || async {
        let regions = user_regions(placement).await?;
        // A view with gaps (a new placement leader hearing from the
        // regions again) may lack it; a whole one must hold it.
        let whole = regions.first().is_some_and(|r| r.start_key.is_empty())
            && regions.last().is_some_and(|r| r.end_key == [0xFF, 0xFF])
            && regions.windows(2).all(|w| w[0].end_key == w[1].start_key);
        assert!(
            !whole || regions.iter().any(|r| r.id == large),
            "the large region {large} was merged away: {}",
            shapes(&regions)
        );
        match the_whole_user_key_space(&regions) {
            Some(one) => Ok((Instant::now(), one.clone())),
            None => Err(shapes(&regions)),
        }
    })
    .await;
    let (merged_at, survivor) = merged;
    eprintln!(
        "merges: the first {:?} and the last {:?} after the regions became eligible",
        first_merge.saturating_duration_since(eligible),
        merged_at.saturating_duration_since(eligible)
    );
    assert_eq!(survivor.id, large, "the large region absorbed the others");

    stop.store(true, Ordering::SeqCst);
    let (traffic_keys, operations) = traffic.await.expect("traffic task");
    eprintln!("{operations} reads and writes during the merges, none failed");
    written.extend(traffic_keys);
    check_data(&client, &written, value_of).await;

    // Every store ends with the merged region and the system region only.
    for node in cluster.node_ids() {
        wait_until(
            "every store holds two regions",
            Instant::now() + SETTLE_TIMEOUT,
            || async {
                let endpoint = cluster.endpoint(node).map_err(|e| e.to_string())?;
                let status = client.status(&endpoint).await.map_err(|e| e.to_string())?;
                let ids: BTreeSet<u64> = status
                    .regions
                    .iter()
                    .filter_map(|r| r.region.as_ref().map(|r| r.id))
                    .collect();
                if ids.len() == 2 && ids.contains(&large) {
                    Ok(())
                } else {
                    Err(format!("node {node}: {ids:?}"))
                }
            },
        )
        .await;
    }
}

/// Two small neighbours whose replicas sit on different stores: the merge
/// checker first moves the left one's replicas onto the right one's stores
/// (a learner on store 4, then a joint change that promotes it and removes
/// the voter on store 1), then merges it away. The balancer is held off
/// (a large tolerance), so only the merge checker moves replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn neighbours_on_different_stores_are_aligned_then_merged() {
    let mut args = SERVER_ARGS.map(String::from).to_vec();
    args.extend(["--region-balance-tolerance", "100"].map(String::from));
    let mut cluster = Cluster::start_with_leader(test_environment!(), 3, args, SETTLE_TIMEOUT)
        .await
        .expect("start a cluster with a leader");
    let fourth = cluster.join_node().await.expect("node 4 joins");
    let client = cluster.client();
    let placement = client.placement();

    let mut written = BTreeSet::new();
    for prefix in ["a/", "q/"] {
        for i in 0..SMALL_KEYS {
            let key = format!("{prefix}{i:04}");
            client
                .put(key.as_str(), value_of(&key))
                .await
                .unwrap_or_else(|e| panic!("put {key}: {e}"));
            written.insert(key);
        }
    }
    let (left, right) = client.split_region("m/").await.expect("split");
    // The split-off region elects its leader first (a retried move resumes).
    let moved = wait_until(
        "the right region's replica moved off store 1",
        Instant::now() + SETTLE_TIMEOUT,
        || async {
            client
                .move_replica(right.id, 1, fourth)
                .await
                .map_err(|e| e.to_string())
        },
    )
    .await;
    assert_eq!(voter_stores(&moved), [2, 3, fourth]);

    let apart = wait_until(
        "the placement driver sees the neighbours on different stores",
        Instant::now() + SETTLE_TIMEOUT,
        || async {
            let regions = user_regions(placement).await?;
            match regions.as_slice() {
                [l, r] if voter_stores(l) == [1, 2, 3] && voter_stores(r) == [2, 3, fourth] => {
                    Ok(Instant::now())
                }
                _ => Err(shapes(&regions)),
            }
        },
    )
    .await;

    let merged = wait_until(
        "one user region on the right one's stores",
        apart + SPLIT_MERGE_INTERVAL + SETTLE_TIMEOUT,
        || async {
            let regions = user_regions(placement).await?;
            the_whole_user_key_space(&regions)
                .cloned()
                .ok_or_else(|| shapes(&regions))
        },
    )
    .await;
    eprintln!(
        "merged {:?} after the driver saw the neighbours apart (split-merge interval {:?})",
        apart.elapsed(),
        SPLIT_MERGE_INTERVAL
    );
    assert_eq!(
        merged.id, right.id,
        "the left region {} merged away",
        left.id
    );
    assert_eq!(voter_stores(&merged), [2, 3, fourth]);
    check_data(&client, &written, value_of).await;
}
