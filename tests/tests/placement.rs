//! The placement driver on a real 3-node cluster: every store registers
//! and reports itself (state Up, heard from, replica and leader counts that
//! add up to the cluster's regions), region lookups by key follow a split,
//! a region written hard is split by the driver (scheduled from the write
//! rate in its leader's heartbeat, dispatched to that leader), and after the placement leader is killed with SIGKILL a new leader
//! answers with all three stores (from the registry it reads from the
//! system keyspace), the killed one no longer heard from. `ctl stores`
//! into a closed pipe ends quietly.

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use client::{PlacementDriverClient, PlacementStore, StoreLiveness, StoreState};
use flotilla_tests::checks::wait_until;
use flotilla_tests::cluster::Cluster;
use flotilla_tests::test_environment;
use tokio::time::Instant;

/// Heartbeats every second, so the test does not wait out production
/// intervals; regions written faster than 4 KiB/s are hot; a region
/// measures its size after every 251 keys written.
const SERVER_ARGS: [&str; 10] = [
    "--store-heartbeat-interval",
    "1s",
    "--region-heartbeat-interval",
    "1s",
    "--max-store-down-time",
    "5s",
    "--hot-region-written-bytes-per-sec",
    "4096",
    "--region-split-keys",
    "2000",
];
/// Keys the hot-region phase writes (below `--region-split-keys`, so only
/// the placement driver splits), with values of `HOT_VALUE_BYTES`.
const HOT_KEYS: u32 = 600;
const HOT_VALUE_BYTES: usize = 200;
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
/// An election, the new leader's first registry read and a round of
/// heartbeats, with room to spare.
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(20);

/// `stores` are the three nodes, all up and heard from, and their counts
/// add up to `regions` regions of three replicas with one leader each.
fn all_up_and_counted(stores: &[PlacementStore], regions: u64) -> Result<(), String> {
    let ids: Vec<u64> = stores.iter().map(|s| s.id).collect();
    let healthy = stores.iter().all(|s| {
        s.state() == StoreState::Up
            && s.liveness() == StoreLiveness::Alive
            && s.heard_from
            && s.capacity_bytes > 0
            && s.available_bytes <= s.capacity_bytes
    });
    let replicas: u64 = stores.iter().map(|s| s.region_count).sum();
    let leaders: u64 = stores.iter().map(|s| s.leader_count).sum();
    if ids == [1, 2, 3] && healthy && replicas == 3 * regions && leaders == regions {
        Ok(())
    } else {
        Err(format!("{stores:?}"))
    }
}

/// Every store the driver knows, or why it could not say.
async fn all_stores(placement: &PlacementDriverClient) -> Result<Vec<PlacementStore>, String> {
    placement.get_all_stores().await.map_err(|e| e.to_string())
}

/// Waits until the driver reports the three stores as [`all_up_and_counted`]
/// for `regions` regions.
async fn wait_all_up_and_counted(placement: &PlacementDriverClient, regions: u64) {
    wait_until(
        &format!("three stores reporting {regions} regions"),
        Instant::now() + SETTLE_TIMEOUT,
        || async { all_up_and_counted(&all_stores(placement).await?, regions) },
    )
    .await;
}

/// `flotilla ctl stores` writing its table into a pipe nobody reads any
/// more (as in `ctl stores | head -0`) is ended by SIGPIPE, like any Unix
/// filter, and prints no panic. The reader is closed before ctl starts.
fn ctl_into_a_closed_pipe_ends_quietly(endpoint: &str) {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_flotilla-under-test"))
        .args(["ctl", "--endpoints", endpoint, "stores"])
        .stdout(writer)
        .output()
        .expect("run flotilla ctl stores");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.signal(),
        Some(libc::SIGPIPE),
        "ctl should end by SIGPIPE: {:?}, stderr: {stderr}",
        output.status
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_report_regions_are_found_and_a_new_leader_knows_every_store() {
    let args = SERVER_ARGS.iter().map(|a| a.to_string()).collect();
    let mut cluster = Cluster::start_with_args(test_environment!(), 3, args)
        .await
        .expect("start cluster");
    let client = cluster.client();
    let placement = client.placement();

    // A fresh cluster has two regions: user keys and system keys.
    wait_all_up_and_counted(placement, 2).await;
    ctl_into_a_closed_pipe_ends_quietly(&cluster.endpoints()[0]);

    let (left, right) = client.split_region("m").await.expect("split at m");
    wait_until(
        "lookups by key after the split",
        Instant::now() + SETTLE_TIMEOUT,
        || async {
            let above = placement.get_region("n").await.map_err(|e| e.to_string())?;
            let below = placement.get_region("a").await.map_err(|e| e.to_string())?;
            let shape = |info: &Option<client::PlacementRegion>| {
                info.as_ref()
                    .and_then(|i| i.region.as_ref())
                    .map(|r| (r.id, r.start_key.clone(), r.end_key.clone()))
            };
            let expected_above = Some((right.id, b"m".to_vec(), right.end_key.clone()));
            let expected_below = Some((left.id, left.start_key.clone(), b"m".to_vec()));
            if shape(&above) == expected_above && shape(&below) == expected_below {
                Ok(())
            } else {
                Err(format!("above m: {above:?}; below m: {below:?}"))
            }
        },
    )
    .await;
    let by_id = placement
        .get_region_by_id(right.id)
        .await
        .expect("region by id");
    assert_eq!(
        by_id.and_then(|i| i.region).map(|r| r.start_key),
        Some(b"m".to_vec())
    );
    let scanned = placement
        .scan_regions("", "", 0)
        .await
        .expect("scan regions");
    assert_eq!(scanned.len(), 3, "{scanned:?}");
    wait_all_up_and_counted(placement, 3).await;

    // A burst of writes above "m": the region there is hot, and the driver
    // splits it at its middle key through its leader.
    let before = placement.get_region("n").await.expect("region above m");
    let hot_id = before.and_then(|i| i.region).map(|r| r.id);
    for i in 0..HOT_KEYS {
        client
            .put(format!("n/{i:05}"), vec![b'x'; HOT_VALUE_BYTES])
            .await
            .unwrap_or_else(|e| panic!("put n/{i:05}: {e}"));
    }
    wait_until(
        "the hot region split by the driver",
        Instant::now() + SETTLE_TIMEOUT,
        || async {
            let regions = placement
                .scan_regions("m", "", 0)
                .await
                .map_err(|e| e.to_string())?;
            let starts: Vec<Vec<u8>> = regions
                .iter()
                .filter_map(|i| i.region.as_ref())
                .map(|r| r.start_key.clone())
                .collect();
            // The hot region kept [m, middle); a new one starts inside the
            // written keys.
            let split_inside = starts
                .iter()
                .any(|s| s.starts_with(b"n/") && s.as_slice() > b"n/00000".as_slice());
            let hot_kept_m = regions
                .iter()
                .filter_map(|i| i.region.as_ref())
                .any(|r| Some(r.id) == hot_id && r.start_key == b"m");
            if split_inside && hot_kept_m {
                Ok(())
            } else {
                Err(format!("{starts:?}"))
            }
        },
    )
    .await;

    // The client's placement calls go to the leader once it answered.
    let leader_addr = placement
        .preferred_endpoint()
        .expect("a placement endpoint");
    let leader = cluster
        .node_ids()
        .into_iter()
        .find(|&node| cluster.endpoint(node).ok().as_deref() == Some(leader_addr.as_str()))
        .expect("the placement leader is one of the nodes");
    cluster.kill(leader).expect("kill the placement leader");
    let killed_at = Instant::now();
    wait_until(
        "a new placement leader with every store",
        Instant::now() + FAILOVER_TIMEOUT,
        || async {
            let stores = all_stores(placement).await?;
            let ids: Vec<u64> = stores.iter().map(|s| s.id).collect();
            let (dead, live): (Vec<&PlacementStore>, Vec<&PlacementStore>) =
                stores.iter().partition(|s| s.id == leader);
            let dead_is_stale = dead
                .iter()
                .all(|s| !s.heard_from || s.liveness() != StoreLiveness::Alive);
            let live_reported = live
                .iter()
                .all(|s| s.heard_from && s.liveness() == StoreLiveness::Alive);
            if ids == [1, 2, 3] && dead_is_stale && live_reported {
                Ok(())
            } else {
                Err(format!("{stores:?}"))
            }
        },
    )
    .await;
    eprintln!(
        "a new placement leader knew every store {:?} after the old one (node {leader}) was killed",
        killed_at.elapsed()
    );
    assert_ne!(
        placement.preferred_endpoint().as_deref(),
        Some(leader_addr.as_str()),
        "answered by another node"
    );
}
