//! Region merge on a real 3-node cluster: a region is merged into its
//! neighbour through the admin client while a writer keeps writing to both;
//! every acknowledged write survives, scans see every key once and in
//! order, the source disappears from every store and from the placement
//! driver, a merge of regions that are not neighbours or of the system
//! region is refused, and the merged shape and data survive a SIGKILL and
//! restart.
//!
//! Held between PrepareMerge and CommitMerge (fail point
//! `merge_after_prepare` on every node), a merge
//! - whose target splits meanwhile is refused by the target and rolled
//!   back: the source thaws, keeps its data and takes writes again;
//! - whose coordinating node is SIGKILLed is finished by the source's next
//!   leader, and the killed node comes back with the merged shape.
//!
//! With two shards per node, neighbours that run on different shards of
//! every store merge too, under writes, and the merge survives a restart.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use client::{Client, ClientError};
use flotilla_tests::checks::{check_data, wait_until};
use flotilla_tests::cluster::Cluster;
use flotilla_tests::test_environment;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// Region heartbeats every second, so placement sees the merge quickly.
const SERVER_ARGS: [&str; 4] = [
    "--store-heartbeat-interval",
    "1s",
    "--region-heartbeat-interval",
    "1s",
];
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(200);
/// Keys written before the merge, in each of the two regions.
const KEYS_PER_REGION: u32 = 100;
/// Writes each writer makes after the merge answered.
const WRITES_AFTER_MERGE: u32 = 20;
/// Where the target (the first region) ends and the source starts.
const SOURCE_START: &str = "m/";
/// Where the source ends and a third region starts.
const THIRD_START: &str = "t/";
/// Where a target split while the merge is held.
const TARGET_SPLIT: &str = "g/";
/// The fail point between PrepareMerge and CommitMerge.
const HOLD_POINT: &str = "merge_after_prepare";

/// The value every test writes under `key`.
fn value_of(key: &str) -> Vec<u8> {
    format!("v-{key}").into_bytes()
}

/// Puts `key` until it is acknowledged; a merge in progress answers
/// "retry" for a moment, which the client waits out, and an outcome it
/// could not learn is retried with the same write id by the client.
async fn put_acknowledged(client: &Client, key: &str) {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        match client.put(key, value_of(key)).await {
            Ok(()) => return,
            Err(err) if Instant::now() < deadline => {
                tracing::debug!(%err, key, "put retried");
                tokio::time::sleep(POLL).await;
            }
            Err(err) => panic!("put {key} never acknowledged: {err}"),
        }
    }
}

/// The ids of the regions node `node` reports.
async fn region_ids_of(cluster: &Cluster, node: u64) -> Result<BTreeSet<u64>, String> {
    let endpoint = cluster.endpoint(node).map_err(|e| e.to_string())?;
    let status = cluster
        .client()
        .status(&endpoint)
        .await
        .map_err(|e| e.to_string())?;
    Ok(status
        .regions
        .iter()
        .filter_map(|r| r.region.as_ref().map(|r| r.id))
        .collect())
}

/// Waits until `node` reports `target` and not `source`.
async fn wait_merged_on(cluster: &Cluster, node: u64, source: u64, target: u64) {
    wait_until(
        "the source gone, the target there",
        Instant::now() + SETTLE_TIMEOUT,
        || async {
            let ids = region_ids_of(cluster, node).await?;
            if ids.contains(&source) || !ids.contains(&target) {
                return Err(format!("node {node} reports {ids:?}"));
            }
            Ok(())
        },
    )
    .await;
}

/// Waits until every node reports `target` and not `source`.
async fn wait_source_gone(cluster: &Cluster, source: u64, target: u64) {
    for node in cluster.node_ids() {
        wait_merged_on(cluster, node, source, target).await;
    }
}

/// A 3-node cluster split into a target `[.., m/)`, a source `[m/, t/)`
/// and a third region `[t/, ..)`, with [`KEYS_PER_REGION`] keys written to
/// each of the first two.
async fn three_regions() -> (Cluster, [client::Region; 3], BTreeSet<String>) {
    let args = SERVER_ARGS.map(String::from).to_vec();
    let cluster = Cluster::start_with_leader(test_environment!(), 3, args, SETTLE_TIMEOUT)
        .await
        .expect("start a cluster with a leader");
    let client = cluster.client();
    let (target, source) = client.split_region(SOURCE_START).await.expect("split");
    let (_, third) = client.split_region(THIRD_START).await.expect("split");
    let mut written = BTreeSet::new();
    for i in 0..KEYS_PER_REGION {
        for prefix in ["a/", SOURCE_START] {
            let key = format!("{prefix}{i:06}");
            put_acknowledged(&client, &key).await;
            written.insert(key);
        }
    }
    (cluster, [target, source, third], written)
}

/// The statuses of `region` on every running node, by node.
async fn replicas_of(
    cluster: &Cluster,
    region: u64,
) -> Result<Vec<(u64, client::RegionStatus)>, String> {
    let mut found = Vec::new();
    for node in cluster.node_ids() {
        let Ok(endpoint) = cluster.endpoint(node) else {
            continue;
        };
        let Ok(status) = cluster.client().status(&endpoint).await else {
            continue;
        };
        found.extend(
            status
                .regions
                .into_iter()
                .filter(|r| r.region.as_ref().is_some_and(|r| r.id == region))
                .map(|r| (node, r)),
        );
    }
    Ok(found)
}

/// Waits until the leader of `source` reports it frozen for a merge into
/// `target`, and returns the leader's node.
async fn wait_frozen(cluster: &Cluster, source: u64, target: u64) -> u64 {
    wait_until(
        "the source frozen by PrepareMerge",
        Instant::now() + SETTLE_TIMEOUT,
        || async {
            let replicas = replicas_of(cluster, source).await?;
            replicas
                .iter()
                .find(|(_, r)| r.role == "leader" && r.merging_into == target)
                .map(|(node, _)| *node)
                .ok_or_else(|| format!("{replicas:?}"))
        },
    )
    .await
}

/// Starts a merge of `source` into `target` whose call waits for as long as
/// a test holds it: a shorter attempt would time out, and its retry would
/// find the first merge under way or, once that ended, start another.
async fn held_merge(
    cluster: &Cluster,
    source: u64,
    target: u64,
) -> tokio::task::JoinHandle<Result<client::Region, ClientError>> {
    let config = client::ClientConfig {
        request_timeout: 2 * SETTLE_TIMEOUT,
        operation_timeout: 2 * SETTLE_TIMEOUT,
        ..client::ClientConfig::new(cluster.endpoints())
    };
    let client = Client::connect(config).await.expect("a client");
    tokio::spawn(async move { client.merge_regions(source, target).await })
}

/// Restarts `node` (stopped) and checks it comes back with the merged
/// `target` and without `source`, and that it can lead the merged region
/// with all of `written`.
async fn restart_holding_the_merge(
    cluster: &mut Cluster,
    node: u64,
    source: u64,
    target: u64,
    written: &BTreeSet<String>,
) {
    cluster.restart(node).await.expect("restart");
    cluster
        .wait_for_catch_up(node, SETTLE_TIMEOUT)
        .await
        .expect("catch up");
    wait_merged_on(cluster, node, source, target).await;
    let client = cluster.client();
    check_data(&client, written, value_of).await;
    client
        .transfer_leader(target, node)
        .await
        .expect("leadership to the restarted store");
    check_data(&client, written, value_of).await;
}

/// Holds every node's merges between PrepareMerge and CommitMerge.
async fn hold_merges(cluster: &Cluster) {
    for node in cluster.node_ids() {
        cluster
            .set_fail_point(node, HOLD_POINT, "return")
            .await
            .expect("fail point on");
    }
}

/// Lets every running node's held merges go on.
async fn release_merges(cluster: &mut Cluster) {
    for node in cluster.node_ids() {
        if cluster.is_running(node).expect("a node of the cluster") {
            cluster
                .remove_fail_point(node, HOLD_POINT)
                .await
                .expect("fail point off");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_merges_into_its_neighbour_under_writes_and_across_a_restart() {
    let (mut cluster, [target, source, third], written) = three_regions().await;
    let client = cluster.client();
    let written = Arc::new(Mutex::new(written));

    // Not neighbours: refused, with a message saying so.
    match client.merge_regions(third.id, target.id).await {
        Err(ClientError::InvalidArgument(message)) => {
            assert!(message.contains("not adjacent"), "{message}");
        }
        other => panic!("a merge of non-neighbours answered {other:?}"),
    }

    // The system region (the placement driver's state, the last region)
    // neither absorbs its user neighbour nor is absorbed.
    let status = client
        .status(&cluster.endpoint(1).expect("node 1"))
        .await
        .expect("status");
    let system = status
        .regions
        .iter()
        .filter_map(|r| r.region.as_ref())
        .find(|r| r.end_key.is_empty())
        .expect("the system region")
        .id;
    for (source, target) in [(third.id, system), (system, third.id)] {
        match client.merge_regions(source, target).await {
            Err(ClientError::InvalidArgument(message)) => {
                assert!(message.contains("system keys"), "{message}");
            }
            other => panic!("a merge of {source} into {target} answered {other:?}"),
        }
    }

    // One writer per region keeps writing while the source merges.
    let merged_flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = ["a/w", "m/w"]
        .into_iter()
        .map(|prefix| {
            let client = cluster.client();
            let written = written.clone();
            let merged_flag = merged_flag.clone();
            tokio::spawn(async move {
                let mut after = 0;
                for n in 0.. {
                    let key = format!("{prefix}{n:06}");
                    put_acknowledged(&client, &key).await;
                    written.lock().await.insert(key);
                    if merged_flag.load(std::sync::atomic::Ordering::SeqCst) {
                        after += 1;
                        if after == WRITES_AFTER_MERGE {
                            return n;
                        }
                    }
                }
                unreachable!("the writer stops after the merge")
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await; // writes before the merge
    let started = Instant::now();
    let merged = client
        .merge_regions(source.id, target.id)
        .await
        .expect("merge");
    let merge_latency = started.elapsed();
    merged_flag.store(true, std::sync::atomic::Ordering::SeqCst);
    eprintln!("merge of region {} took {merge_latency:?}", source.id);
    for writer in writers {
        let writes = writer.await.expect("writer");
        assert!(writes >= WRITES_AFTER_MERGE, "{writes} writes");
    }

    assert_eq!(merged.id, target.id);
    assert_eq!(merged.start_key, target.start_key);
    assert_eq!(merged.end_key, THIRD_START.as_bytes());
    let version = |r: &client::Region| r.epoch.map_or(0, |e| e.version);
    assert!(version(&merged) > version(&target).max(version(&source)));
    let written = written.lock().await.clone();
    check_data(&client, &written, value_of).await;

    wait_source_gone(&cluster, source.id, target.id).await;
    let placement = client.placement();
    wait_until(
        "the placement driver drops the source",
        Instant::now() + SETTLE_TIMEOUT,
        || async {
            let regions = placement
                .scan_regions("", "", 0)
                .await
                .map_err(|e| e.to_string())?;
            let shapes: Vec<(u64, Vec<u8>)> = regions
                .iter()
                .filter_map(|i| i.region.as_ref())
                .map(|r| (r.id, r.end_key.clone()))
                .collect();
            let merged_known = shapes
                .iter()
                .any(|(id, end)| *id == target.id && end == THIRD_START.as_bytes());
            if shapes.iter().any(|(id, _)| *id == source.id) || !merged_known {
                return Err(format!("{shapes:?}"));
            }
            Ok(())
        },
    )
    .await;

    // A follower's store is killed and restarted: it comes back with the
    // merged region and without the source, and nothing is lost.
    let leader = cluster.leader().await.expect("a leader");
    let victim = *cluster
        .node_ids()
        .iter()
        .find(|&&n| n != leader)
        .expect("a follower");
    cluster.kill(victim).expect("kill -9");
    restart_holding_the_merge(&mut cluster, victim, source.id, target.id, &written).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_refused_by_its_target_rolls_back_and_the_source_takes_writes_again() {
    let (mut cluster, [target, source, _], mut written) = three_regions().await;
    let client = cluster.client();
    hold_merges(&cluster).await;
    let merge = held_merge(&cluster, source.id, target.id).await;
    wait_frozen(&cluster, source.id, target.id).await;

    // The target moves on while the source waits: its epoch no longer
    // matches the one the merge was prepared against.
    client
        .split_region(TARGET_SPLIT)
        .await
        .expect("split the target");
    release_merges(&mut cluster).await;
    match merge.await.expect("merge task") {
        Err(ClientError::Server {
            code: tonic::Code::FailedPrecondition,
            message,
        }) if message.contains("rolled back") => {}
        other => panic!("a merge whose target split answered {other:?}"),
    }

    wait_until(
        "the source thawed on every store",
        Instant::now() + SETTLE_TIMEOUT,
        || async {
            let replicas = replicas_of(&cluster, source.id).await?;
            let frozen = replicas.iter().filter(|(_, r)| r.merging_into != 0).count();
            if replicas.len() != 3 || frozen != 0 {
                return Err(format!("{replicas:?}"));
            }
            Ok(())
        },
    )
    .await;
    for i in 0..WRITES_AFTER_MERGE {
        let key = format!("{SOURCE_START}after/{i:06}");
        put_acknowledged(&client, &key).await;
        written.insert(key);
    }
    check_data(&client, &written, value_of).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_whose_coordinator_is_killed_is_finished_by_the_next_leader() {
    let (mut cluster, [target, source, _], written) = three_regions().await;
    let client = cluster.client();
    hold_merges(&cluster).await;
    // The call goes to the coordinator and, once it is killed, to the
    // source's next leader, as a client's does.
    let merge = {
        let client = cluster.client();
        tokio::spawn(async move { client.merge_regions(source.id, target.id).await })
    };
    let coordinator = wait_frozen(&cluster, source.id, target.id).await;
    cluster
        .kill(coordinator)
        .expect("kill -9 the coordinating node");
    release_merges(&mut cluster).await;
    // The call may be answered by the source's next leader or fail with
    // the coordinator; either way the merge must finish.
    let answer = tokio::time::timeout(SETTLE_TIMEOUT, merge)
        .await
        .expect("the merge call answers");
    eprintln!("merge call across the kill answered {answer:?}");

    wait_until(
        "the merge finished by the surviving nodes",
        Instant::now() + SETTLE_TIMEOUT,
        || async {
            let sources = replicas_of(&cluster, source.id).await?;
            let targets = replicas_of(&cluster, target.id).await?;
            let merged = targets
                .iter()
                .filter(|(_, r)| {
                    r.region
                        .as_ref()
                        .is_some_and(|r| r.end_key == THIRD_START.as_bytes())
                })
                .count();
            if !sources.is_empty() || merged != 2 {
                return Err(format!("source {sources:?}, target {targets:?}"));
            }
            Ok(())
        },
    )
    .await;
    check_data(&client, &written, value_of).await;

    restart_holding_the_merge(&mut cluster, coordinator, source.id, target.id, &written).await;
}

/// With two shards per node (a region runs on shard `id % 2`), a region
/// merges into a neighbour that runs on the other shard of every store
/// while a writer keeps writing to it; nothing is lost, the source is gone
/// from every store, and a SIGKILLed store comes back with the merge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn neighbours_on_different_shards_merge_under_writes_and_across_a_restart() {
    let mut args = SERVER_ARGS.map(String::from).to_vec();
    args.extend(["--shards", "2"].map(String::from));
    let mut cluster = Cluster::start_with_leader(test_environment!(), 3, args, SETTLE_TIMEOUT)
        .await
        .expect("start a cluster with a leader");
    let client = cluster.client();
    // Each split at `c/{i}` cuts `[c/{i-1}, ..)`: stop at the first whose
    // halves run on different shards.
    let mut halves = None;
    for i in 1..=8 {
        let (left, right) = client.split_region(format!("c/{i}")).await.expect("split");
        if left.id % 2 != right.id % 2 {
            halves = Some((i, left, right));
            break;
        }
    }
    let (i, target, source) = halves.expect("eight splits made a pair on different shards");
    let mut written = BTreeSet::new();
    for n in 0..KEYS_PER_REGION {
        for half in [i - 1, i] {
            let key = format!("c/{half}/{n:06}");
            put_acknowledged(&client, &key).await;
            written.insert(key);
        }
    }

    let writer = {
        let client = cluster.client();
        tokio::spawn(async move {
            let mut keys = BTreeSet::new();
            for n in 0..3 * WRITES_AFTER_MERGE {
                let key = format!("c/{i}/w{n:06}");
                put_acknowledged(&client, &key).await;
                keys.insert(key);
            }
            keys
        })
    };
    let merged = client
        .merge_regions(source.id, target.id)
        .await
        .expect("merge across shards");
    assert_eq!(merged.id, target.id);
    assert_eq!(merged.start_key, target.start_key);
    assert_eq!(merged.end_key, source.end_key);
    written.extend(writer.await.expect("writer"));
    check_data(&client, &written, value_of).await;
    wait_source_gone(&cluster, source.id, target.id).await;

    let leader = cluster.leader().await.expect("a leader");
    cluster.kill(leader).expect("kill -9");
    restart_holding_the_merge(&mut cluster, leader, source.id, target.id, &written).await;
}
