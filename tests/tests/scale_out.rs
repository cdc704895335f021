//! The placement driver moves data without an operator: two nodes added to
//! a loaded 3-node cluster receive replicas and leaders until the stores
//! are even; a node killed afterwards has its replicas rebuilt on the live
//! stores; and the placement leader killed under load costs the client
//! retries, never an error. Every key written is read back after each step.
//!
//! Each test prints its measurements (replicas and leaders per store,
//! times to balance and repair).

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use client::{Client, KvPair, PlacementRegion, PlacementStore, StoreLiveness, StoreState};
use flotilla_tests::cluster::Cluster;
use flotilla_tests::test_environment;
use futures::StreamExt;
use tokio::time::Instant;

/// Production intervals shortened so the test waits seconds, not minutes:
/// heartbeats every second, a store silent for 5 s is down, and regions
/// split at 400 keys so a few thousand keys make a dozen regions.
const SERVER_ARGS: [&str; 8] = [
    "--store-heartbeat-interval",
    "1s",
    "--region-heartbeat-interval",
    "1s",
    "--max-store-down-time",
    "5s",
    "--region-split-keys",
    "400",
];
const KEYS: u32 = 5_000;
const BATCH: u32 = 250;
const REPLICAS: usize = 3;
/// Most and fewest replicas (or leaders) per store may differ by this much
/// once balanced (the schedulers stop within a tolerance of 1; a region's
/// replicas on distinct stores can keep one more apart).
const SPREAD_MAX: u64 = 2;
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
const BALANCE_TIMEOUT: Duration = Duration::from_secs(180);
const REPAIR_TIMEOUT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(500);

fn key(i: u32) -> Vec<u8> {
    format!("key/{i:06}").into_bytes()
}

fn value(i: u32) -> Vec<u8> {
    format!("value-{i}").into_bytes()
}

fn server_args() -> Vec<String> {
    SERVER_ARGS.map(String::from).to_vec()
}

/// Polls `check` until it returns `Ok`, or panics at the deadline with the
/// last thing it saw (after printing the tails of the nodes' logs).
async fn wait_for<T, F, Fut>(cluster: &Cluster, what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check().await {
            Ok(found) => return found,
            Err(last) => last,
        };
        if Instant::now() >= deadline {
            cluster.dump_logs(100);
            panic!("{what}: not within {timeout:?}; last seen: {last}");
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn load(client: &Client, keys: std::ops::Range<u32>) {
    let batches = keys.step_by(BATCH as usize).map(|first| {
        let client = client.clone();
        async move {
            let pairs = (first..first + BATCH)
                .map(|i| KvPair {
                    key: key(i),
                    value: value(i),
                })
                .collect();
            client
                .batch_put(pairs)
                .await
                .unwrap_or_else(|e| panic!("batch from key {first}: {e}"));
        }
    });
    futures::stream::iter(batches)
        .buffer_unordered(4)
        .collect::<Vec<()>>()
        .await;
}

async fn check_all(client: &Client, keys: std::ops::Range<u32>) {
    let pairs = client
        .scan(key(keys.start), key(keys.end), 0, false)
        .await
        .expect("scan every key");
    let expected: Vec<(Vec<u8>, Vec<u8>)> = keys.map(|i| (key(i), value(i))).collect();
    let got: Vec<(Vec<u8>, Vec<u8>)> = pairs.into_iter().map(|p| (p.key, p.value)).collect();
    assert_eq!(got.len(), expected.len(), "keys lost or duplicated");
    assert!(got == expected, "a key is missing, misplaced or wrong");
}

/// The placement driver's view: stores by id, and every region.
async fn placement_view(
    client: &Client,
) -> Result<(BTreeMap<u64, PlacementStore>, Vec<PlacementRegion>), String> {
    let placement = client.placement();
    let stores = placement
        .get_all_stores()
        .await
        .map_err(|e| format!("stores: {e}"))?;
    let regions = placement
        .scan_regions("", "", 0)
        .await
        .map_err(|e| format!("regions: {e}"))?;
    Ok((stores.into_iter().map(|s| (s.id, s)).collect(), regions))
}

/// Store ids of a region's voters.
fn voters(region: &PlacementRegion) -> Vec<u64> {
    region
        .region
        .iter()
        .flat_map(|r| &r.peers)
        .map(|p| p.store_id)
        .filter(|s| !region.learner_store_ids.contains(s))
        .collect()
}

/// Replicas and leaders per store, counted from the regions (so they agree
/// with each other at one instant, whatever the store heartbeats say).
fn counts(regions: &[PlacementRegion], stores: &[u64]) -> BTreeMap<u64, (u64, u64)> {
    let mut counts: BTreeMap<u64, (u64, u64)> = stores.iter().map(|&s| (s, (0, 0))).collect();
    for region in regions {
        for store in voters(region) {
            counts.entry(store).or_default().0 += 1;
        }
        counts.entry(region.leader_store_id).or_default().1 += 1;
    }
    counts
}

fn spread(values: impl Iterator<Item = u64> + Clone) -> u64 {
    values.clone().max().unwrap_or(0) - values.min().unwrap_or(0)
}

fn table(title: &str, counts: &BTreeMap<u64, (u64, u64)>) -> String {
    let mut out = format!("{title}\n| store | replicas | leaders |\n| --- | --- | --- |\n");
    for (store, (replicas, leaders)) in counts {
        out += &format!("| {store} | {replicas} | {leaders} |\n");
    }
    out
}

/// Every region has exactly `REPLICAS` voters, no learner, all on `live`
/// stores, and a leader among them; the regions tile the keyspace.
fn fully_replicated_on(regions: &[PlacementRegion], live: &[u64]) -> Result<(), String> {
    let mut next_start: Vec<u8> = Vec::new();
    for region in regions {
        let meta = region.region.as_ref().ok_or("a region without its shape")?;
        if meta.start_key != next_start {
            return Err(format!("gap or overlap before region {}", meta.id));
        }
        next_start = meta.end_key.clone();
        let voters = voters(region);
        if voters.len() != REPLICAS
            || !region.learner_store_ids.is_empty()
            || !voters.iter().all(|s| live.contains(s))
            || !voters.contains(&region.leader_store_id)
        {
            return Err(format!(
                "region {}: voters {voters:?}, learners {:?}, leader {}",
                meta.id, region.learner_store_ids, region.leader_store_id
            ));
        }
    }
    if !next_start.is_empty() {
        return Err("the last region is bounded".into());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_nodes_take_their_share_and_a_dead_nodes_replicas_are_rebuilt() {
    let mut cluster =
        Cluster::start_with_leader(test_environment!(), 3, server_args(), SETTLE_TIMEOUT)
            .await
            .expect("start a cluster with a leader");
    let client = cluster.client();
    load(&client, 0..KEYS).await;

    let original = cluster.node_ids();
    let before = wait_for(
        &cluster,
        "the driver sees the loaded cluster",
        SETTLE_TIMEOUT,
        || {
            let client = client.clone();
            let original = original.clone();
            async move {
                let (_, regions) = placement_view(&client).await?;
                fully_replicated_on(&regions, &original)?;
                if regions.len() < 8 {
                    return Err(format!("only {} regions", regions.len()));
                }
                Ok(counts(&regions, &original))
            }
        },
    )
    .await;
    eprintln!("{}", table("before scale-out", &before));

    // Two more nodes; nobody tells the driver to move anything.
    let started = Instant::now();
    cluster.join_node().await.expect("node 4 joins");
    cluster.join_node().await.expect("node 5 joins");
    let all = cluster.node_ids();
    let after = wait_for(
        &cluster,
        "replicas and leaders even out",
        BALANCE_TIMEOUT,
        || {
            let client = client.clone();
            let all = all.clone();
            async move {
                let (stores, regions) = placement_view(&client).await?;
                if !all.iter().all(|id| {
                    stores
                        .get(id)
                        .is_some_and(|s| s.state() == StoreState::Up && s.heard_from)
                }) {
                    return Err(format!("stores: {stores:?}"));
                }
                fully_replicated_on(&regions, &all)?;
                let counts = counts(&regions, &all);
                let replicas = spread(counts.values().map(|c| c.0));
                let leaders = spread(counts.values().map(|c| c.1));
                if replicas > SPREAD_MAX || leaders > SPREAD_MAX {
                    return Err(table("not yet even", &counts));
                }
                Ok(counts)
            }
        },
    )
    .await;
    eprintln!(
        "{}balanced {:.1} s after the first node joined",
        table("after scale-out", &after),
        started.elapsed().as_secs_f64()
    );
    assert!(after[&4].0 > 0 && after[&5].0 > 0);
    check_all(&client, 0..KEYS).await;

    // A node dies; its replicas are rebuilt on the four that are left.
    let victim = 2;
    cluster.kill(victim).expect("kill a node");
    let killed = Instant::now();
    let live: Vec<u64> = all.iter().copied().filter(|&s| s != victim).collect();
    let repaired = wait_for(
        &cluster,
        "the dead node's replicas rebuilt",
        REPAIR_TIMEOUT,
        || {
            let client = client.clone();
            let live = live.clone();
            async move {
                let (stores, regions) = placement_view(&client).await?;
                let down = stores
                    .get(&victim)
                    .is_some_and(|s| s.liveness() != StoreLiveness::Alive);
                if !down {
                    return Err(format!("store {victim} still looks alive"));
                }
                fully_replicated_on(&regions, &live)?;
                Ok(counts(&regions, &live))
            }
        },
    )
    .await;
    eprintln!(
        "{}repaired {:.1} s after node {victim} was killed (5 s of that is --max-store-down-time)",
        table("after repair", &repaired),
        killed.elapsed().as_secs_f64()
    );
    check_all(&client, 0..KEYS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_placement_leader_under_load_costs_retries_not_errors() {
    let mut cluster =
        Cluster::start_with_leader(test_environment!(), 3, server_args(), SETTLE_TIMEOUT)
            .await
            .expect("start a cluster with a leader");
    let client = cluster.client();
    load(&client, 0..1_000).await;

    // The placement leader leads the system region; find its store.
    let placement_leader = wait_for(&cluster, "a placement leader", SETTLE_TIMEOUT, || {
        let client = client.clone();
        async move {
            let region = client
                .placement()
                .get_region(client::SYSTEM_KEY_PREFIX.to_vec())
                .await
                .map_err(|e| e.to_string())?
                .ok_or("the system region is not reported yet")?;
            Ok(region.leader_store_id)
        }
    })
    .await;

    // Writers and a timestamp reader run through the kill.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..4u32)
        .map(|w| {
            let client = client.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut written = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let i = 10_000 + w * 100_000 + written;
                    client
                        .put(key(i), value(i))
                        .await
                        .unwrap_or_else(|e| panic!("put {i} failed: {e}"));
                    written += 1;
                }
                (w, written)
            })
        })
        .collect();
    let timestamps = {
        let client = client.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut last = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let ts = client
                    .get_timestamp()
                    .await
                    .unwrap_or_else(|e| panic!("timestamp failed: {e}"));
                assert!(ts.0 > last, "timestamp {} after {last}", ts.0);
                last = ts.0;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster
        .kill(placement_leader)
        .expect("kill the placement leader");
    let killed = Instant::now();
    let live: Vec<u64> = cluster
        .node_ids()
        .into_iter()
        .filter(|&s| s != placement_leader)
        .collect();
    wait_for(&cluster, "a new placement leader", SETTLE_TIMEOUT, || {
        let client = client.clone();
        let live = live.clone();
        async move {
            let region = client
                .placement()
                .get_region(client::SYSTEM_KEY_PREFIX.to_vec())
                .await
                .map_err(|e| e.to_string())?
                .ok_or("no system region")?;
            if live.contains(&region.leader_store_id) {
                Ok(())
            } else {
                Err(format!("leader still {}", region.leader_store_id))
            }
        }
    })
    .await;
    eprintln!(
        "placement answers from a new leader {:.1} s after the kill",
        killed.elapsed().as_secs_f64()
    );
    // Keep the load on a while under the new leader.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    timestamps.await.expect("timestamp task");
    for writer in writers {
        let (w, written) = writer.await.expect("writer task");
        assert!(written > 0, "writer {w} wrote nothing");
        for n in 0..written {
            let i = 10_000 + w * 100_000 + n;
            assert_eq!(
                client.get(key(i)).await.expect("read back"),
                Some(value(i)),
                "acknowledged write {i} lost"
            );
        }
    }
    check_all(&client, 0..1_000).await;
}
