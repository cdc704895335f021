//! Regions split on real nodes: automatically as they grow, without losing
//! or misplacing a key, across restarts, and on a replica that was down
//! while the splits happened (it learns of them from snapshots).

use std::collections::BTreeMap;
use std::time::Duration;

use client::{Client, RegionStatus};
use flotilla_tests::cluster::Cluster;
use flotilla_tests::test_environment;
use futures::StreamExt;
use tokio::time::Instant;

const SPLIT_KEYS: &str = "150";
const CHECKPOINT_EVERY_ENTRIES: &str = "60";
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(200);

fn key(i: u32) -> String {
    format!("key/{i:06}")
}

async fn put_range(client: &Client, range: std::ops::Range<u32>) {
    for i in range {
        client
            .put(key(i), format!("v{i}"))
            .await
            .unwrap_or_else(|e| panic!("put {}: {e}", key(i)));
    }
}

async fn check_range(client: &Client, range: std::ops::Range<u32>) {
    for i in range {
        let value = client
            .get(key(i))
            .await
            .unwrap_or_else(|e| panic!("get {}: {e}", key(i)));
        assert_eq!(
            value,
            Some(format!("v{i}").into_bytes()),
            "{} lost or wrong",
            key(i)
        );
    }
}

/// The regions `node` reports, by id (initialized replicas only).
async fn regions_of(cluster: &Cluster, node: u64) -> Option<BTreeMap<u64, RegionStatus>> {
    let endpoint = cluster.endpoint(node).ok()?;
    let status = cluster.client().status(&endpoint).await.ok()?;
    Some(
        status
            .regions
            .into_iter()
            .filter_map(|r| Some((r.region.as_ref()?.id, r)))
            .collect(),
    )
}

/// Whether the regions tile the keyspace: sorted by start key, each ends
/// where the next starts, the first starts at "" and the last is unbounded.
fn tiling(regions: &BTreeMap<u64, RegionStatus>) -> Result<(), String> {
    let mut ranges: Vec<(Vec<u8>, Vec<u8>)> = regions
        .values()
        .filter_map(|r| r.region.as_ref())
        .map(|r| (r.start_key.clone(), r.end_key.clone()))
        .collect();
    ranges.sort();
    let bounded = ranges.first().is_some_and(|(s, _)| s.is_empty())
        && ranges.last().is_some_and(|(_, e)| e.is_empty());
    if !bounded || ranges.windows(2).any(|pair| pair[0].1 != pair[1].0) {
        return Err(format!("gap or overlap in {ranges:?}"));
    }
    Ok(())
}

fn assert_tiles_keyspace(regions: &BTreeMap<u64, RegionStatus>) {
    if let Err(err) = tiling(regions) {
        panic!("{err}");
    }
}

/// Waits until every node in `nodes` reports the same regions (ids and
/// epochs), each with a leader, all at the same applied index, and they
/// tile the keyspace (a region a split just made starts once its
/// checkpoints are durable: until then its range is in no region).
async fn wait_until_settled(cluster: &Cluster, nodes: &[u64]) -> BTreeMap<u64, RegionStatus> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let mut views = Vec::new();
        for &node in nodes {
            views.extend(regions_of(cluster, node).await);
        }
        if views.len() == nodes.len() {
            let first = &views[0];
            let same = views.iter().all(|view| {
                view.len() == first.len()
                    && view.iter().all(|(id, r)| {
                        first.get(id).is_some_and(|f| {
                            f.region == r.region && f.applied_index == r.applied_index
                        })
                    })
            });
            let led = first.values().all(|r| r.leader_id != 0);
            if same && led && tiling(first).is_ok() {
                return views.swap_remove(0);
            }
        }
        if Instant::now() >= deadline {
            cluster.dump_logs(30);
            panic!("nodes {nodes:?} did not settle on the same regions: {views:#?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

fn server_args() -> Vec<String> {
    [
        "--region-split-keys",
        SPLIT_KEYS,
        "--checkpoint-every-entries",
        CHECKPOINT_EVERY_ENTRIES,
    ]
    .map(String::from)
    .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regions_split_as_they_grow_and_keep_every_key_across_restarts() {
    let mut cluster =
        Cluster::start_with_leader(test_environment!(), 3, server_args(), SETTLE_TIMEOUT)
            .await
            .expect("start a cluster with a leader");
    let client = cluster.client();
    put_range(&client, 0..1200).await;

    let regions = wait_until_settled(&cluster, &cluster.node_ids()).await;
    assert!(
        regions.len() >= 4,
        "1,200 keys with a 150-key limit split into only {} regions",
        regions.len()
    );
    assert_tiles_keyspace(&regions);
    for r in regions.values() {
        let epoch = r.region.as_ref().and_then(|r| r.epoch);
        assert!(
            epoch.is_some_and(|e| e.version > 1 || r.region.as_ref().is_some_and(|m| m.id <= 2))
        );
    }
    check_range(&client, 0..1200).await;

    // A full restart recovers every region from its checkpoints and WAL.
    for node in cluster.node_ids() {
        cluster.terminate(node).await.expect("stop");
    }
    for node in cluster.node_ids() {
        cluster.restart(node).await.expect("restart");
    }
    // No split is lost: every region boundary from before is still one
    // (a region left slightly over its limit may split further).
    let after = wait_until_settled(&cluster, &cluster.node_ids()).await;
    assert_tiles_keyspace(&after);
    let starts = |m: &BTreeMap<u64, RegionStatus>| -> std::collections::BTreeSet<Vec<u8>> {
        m.values()
            .filter_map(|r| r.region.as_ref())
            .map(|r| r.start_key.clone())
            .collect()
    };
    assert!(
        starts(&regions).is_subset(&starts(&after)),
        "a split was lost across the restart: before {:?}, after {:?}",
        starts(&regions),
        starts(&after)
    );
    check_range(&client, 0..1200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_down_during_splits_gets_the_new_regions_by_snapshot() {
    let mut cluster = Cluster::start_with_args(test_environment!(), 3, server_args())
        .await
        .expect("start cluster");
    let leader = cluster
        .wait_for_leader(SETTLE_TIMEOUT)
        .await
        .expect("leader");
    let client = cluster.client();
    put_range(&client, 0..100).await;
    let ids = cluster.node_ids();
    let lagging = *ids.iter().find(|&&n| n != leader).expect("a follower");
    let others: Vec<u64> = ids.iter().copied().filter(|&n| n != lagging).collect();
    cluster.terminate(lagging).await.expect("stop the follower");

    // Splits and compactions happen without it.
    put_range(&client, 100..1200).await;
    let without = wait_until_settled(&cluster, &others).await;
    assert!(without.len() >= 4, "only {} regions", without.len());

    cluster
        .restart(lagging)
        .await
        .expect("restart the follower");
    // Settled means the restarted replica holds every region the others do.
    let with = wait_until_settled(&cluster, &ids).await;
    assert!(with.len() >= without.len());
    assert_tiles_keyspace(&with);
    let log = std::fs::read_to_string(cluster.scratch_dir().join(format!("node-{lagging}.log")))
        .expect("read log");
    assert!(
        log.contains("replica created to receive the region's snapshot"),
        "node {lagging} got the new regions without a snapshot; the test did not exercise the path:\n{}",
        cluster.log_tails(30)
    );

    // Every region now needs the restarted replica for a quorum.
    let other = *others.iter().find(|&&n| n != leader).unwrap_or(&others[0]);
    cluster.kill(other).expect("kill another node");
    put_range(&client, 1200..1300).await;
    check_range(&client, 0..1300).await;
}

/// 200,000 keys written in batches split one region into many; a scan
/// pages through all of them in order, each exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_thousand_keys_split_into_many_regions_and_scan_back_in_order() {
    const KEYS: u32 = 200_000;
    const BATCH: u32 = 1_000;
    const PAGE: u32 = 10_000;
    let args = ["--region-split-keys", "10000"].map(String::from).to_vec();
    let cluster = Cluster::start_with_leader(test_environment!(), 3, args, SETTLE_TIMEOUT)
        .await
        .expect("start a cluster with a leader");
    let client = cluster.client();
    let batches = (0..KEYS / BATCH).map(|b| {
        let client = client.clone();
        async move {
            let pairs = (b * BATCH..(b + 1) * BATCH)
                .map(|i| client::KvPair {
                    key: key(i).into_bytes(),
                    value: format!("v{i}").into_bytes(),
                })
                .collect();
            client
                .batch_put(pairs)
                .await
                .unwrap_or_else(|e| panic!("batch {b}: {e}"));
        }
    });
    // A few batches in flight at a time, as a loader would.
    futures::stream::iter(batches)
        .buffer_unordered(4)
        .collect::<Vec<()>>()
        .await;

    let regions = wait_until_settled(&cluster, &cluster.node_ids()).await;
    assert_tiles_keyspace(&regions);
    assert!(
        regions.len() >= 10,
        "{KEYS} keys with a 10,000-key limit split into only {} regions",
        regions.len()
    );

    let mut next = 0u32;
    let mut start = key(0).into_bytes();
    loop {
        let page = client
            .scan(start.clone(), "key0", PAGE, false)
            .await
            .unwrap_or_else(|e| panic!("scan from {}: {e}", String::from_utf8_lossy(&start)));
        for pair in &page {
            assert_eq!(
                pair.key,
                key(next).into_bytes(),
                "scan out of order or missing a key"
            );
            assert_eq!(pair.value, format!("v{next}").into_bytes());
            next += 1;
        }
        match page.last() {
            Some(last) if page.len() == PAGE as usize => {
                start = last.key.clone();
                start.push(0);
            }
            _ => break,
        }
    }
    assert_eq!(next, KEYS, "the scan returned {next} of {KEYS} keys");
}
