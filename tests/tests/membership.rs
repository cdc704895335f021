//! Membership changes on real nodes: a node joins a running cluster and a
//! replica moves to it while writes continue (the store it left destroys
//! its copy, durably); leadership moves on request; a removal that would
//! leave no live majority is refused, while removing the dead voter is
//! accepted and that voter, once back, learns it was removed and destroys
//! its replica.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use client::{Client, ClientError, PeerChange, Region, RegionStatus};
use flotilla_tests::cluster::Cluster;
use flotilla_tests::test_environment;
use tokio::time::Instant;

/// The user keyspace's region in a fresh cluster.
const REGION: u64 = 1;
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);

/// These tests move replicas and leaders by hand and check where they
/// went: the placement driver must not move them too.
fn hand_moved() -> Vec<String> {
    vec!["--no-schedule".to_string()]
}

fn key(prefix: &str, i: u32) -> String {
    format!("{prefix}/{i:05}")
}

async fn put_range(client: &Client, prefix: &str, range: std::ops::Range<u32>) {
    for i in range {
        client
            .put(key(prefix, i), format!("v{i}"))
            .await
            .unwrap_or_else(|e| panic!("put {}: {e}", key(prefix, i)));
    }
}

async fn check_range(client: &Client, prefix: &str, range: std::ops::Range<u32>) {
    for i in range {
        let value = client
            .get(key(prefix, i))
            .await
            .unwrap_or_else(|e| panic!("get {}: {e}", key(prefix, i)));
        assert_eq!(
            value,
            Some(format!("v{i}").into_bytes()),
            "{} lost or wrong",
            key(prefix, i)
        );
    }
}

/// Node `node`'s own report of region [`REGION`]; `None` if it does not
/// hold it (or does not answer).
async fn region_report(cluster: &Cluster, node: u64) -> Option<RegionStatus> {
    let status = cluster
        .client()
        .status(&cluster.endpoint(node).ok()?)
        .await
        .ok()?;
    status
        .regions
        .into_iter()
        .find(|r| r.region.as_ref().is_some_and(|r| r.id == REGION))
}

/// Waits until `condition` holds, polling; panics with `what` at the deadline.
async fn wait_until<F, Fut>(cluster: &Cluster, what: &str, condition: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    while !condition().await {
        if Instant::now() >= deadline {
            cluster.dump_logs(40);
            panic!("timed out waiting until {what}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The leader of [`REGION`] among `nodes`, by its own report.
async fn region_leader(cluster: &Cluster, nodes: &[u64]) -> Option<u64> {
    for &node in nodes {
        if region_report(cluster, node)
            .await
            .is_some_and(|r| r.role == "leader")
        {
            return Some(node);
        }
    }
    None
}

fn stores(region: &Region) -> Vec<(u64, bool)> {
    let mut peers: Vec<(u64, bool)> = region
        .peers
        .iter()
        .map(|p| (p.store_id, p.is_learner))
        .collect();
    peers.sort_unstable();
    peers
}

fn store_file(cluster: &Cluster, node: u64, suffix: &str) -> std::path::PathBuf {
    cluster
        .scratch_dir()
        .join(format!("node-{node}"))
        .join("store")
        .join(format!("region-{REGION:020}.{suffix}"))
}

fn exists(path: &Path) -> bool {
    path.try_exists().unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_moves_to_a_joined_node_while_writes_continue() {
    let mut cluster =
        Cluster::start_with_leader(test_environment!(), 3, hand_moved(), SETTLE_TIMEOUT)
            .await
            .expect("start a cluster with a leader");
    let client = cluster.client();
    put_range(&client, "before", 0..200).await;

    let joined = cluster.join_node().await.expect("node 4 joins");
    assert_eq!(joined, 4);

    // A writer runs through the whole move; every write must succeed.
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let client = cluster.new_client().await.expect("writer client");
        let writing = writing.clone();
        tokio::spawn(async move {
            let mut written = 0u32;
            while writing.load(Ordering::Relaxed) {
                client
                    .put(key("during", written), format!("v{written}"))
                    .await
                    .unwrap_or_else(|e| panic!("write {written} during the move: {e}"));
                written += 1;
            }
            written
        })
    };

    let moved = client
        .move_replica(REGION, 3, 4)
        .await
        .expect("move replica");
    writing.store(false, Ordering::Relaxed);
    let during = writer.await.expect("writer task");
    assert!(during > 0, "no write ran during the move");
    assert_eq!(
        stores(&moved),
        [(1, false), (2, false), (4, false)],
        "store 4 votes, store 3 is gone: {moved:?}"
    );
    let conf_ver = moved.epoch.map_or(0, |e| e.conf_ver);
    assert!(
        conf_ver >= 4,
        "learner, enter joint, leave joint: conf_ver {conf_ver}"
    );

    // Store 3 destroyed its replica: no region, no checkpoint, a tombstone,
    // and its store holds no more than the system region's few keys.
    wait_until(&cluster, "store 3 no longer holds the region", || async {
        region_report(&cluster, 3).await.is_none()
    })
    .await;
    assert!(!exists(&store_file(&cluster, 3, "checkpoint")));
    assert!(exists(&store_file(&cluster, 3, "tombstone")));
    let stored = cluster
        .client()
        .status(&cluster.endpoint(3).expect("node 3"))
        .await
        .expect("node 3 status")
        .stored_keys;
    assert!(stored < 10, "node 3 still stores {stored} keys");
    // The destruction is durable: a restart does not bring the region back.
    cluster.terminate(3).await.expect("stop node 3");
    cluster.restart(3).await.expect("restart node 3");
    assert!(region_report(&cluster, 3).await.is_none());
    cluster.terminate(3).await.expect("stop node 3 for good");

    // With store 1 down too, region 1 needs store 4's vote; led by store 4,
    // it serves every key from store 4's copy.
    cluster.kill(1).expect("kill node 1");
    wait_until(&cluster, "stores 2 and 4 elect a leader", || async {
        region_leader(&cluster, &[2, 4]).await.is_some()
    })
    .await;
    let survivor = cluster.new_client().await.expect("client");
    survivor
        .transfer_leader(REGION, 4)
        .await
        .expect("leadership to store 4");
    assert_eq!(region_leader(&cluster, &[2, 4]).await, Some(4));
    check_range(&survivor, "before", 0..200).await;
    check_range(&survivor, "during", 0..during).await;
    put_range(&survivor, "after", 0..20).await;
    check_range(&survivor, "after", 0..20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_moves_on_request_and_writes_keep_working() {
    let cluster = Cluster::start_with_args(test_environment!(), 3, hand_moved())
        .await
        .expect("start cluster");
    let leader = cluster
        .wait_for_leader(SETTLE_TIMEOUT)
        .await
        .expect("leader");
    let client = cluster.client();
    put_range(&client, "before", 0..20).await;
    let target = cluster
        .node_ids()
        .into_iter()
        .find(|&n| n != leader)
        .expect("a follower");

    client
        .transfer_leader(REGION, target)
        .await
        .expect("transfer leader");
    wait_until(&cluster, "every node names the new leader", || async {
        cluster.leader().await == Some(target)
    })
    .await;
    put_range(&client, "after", 0..20).await;
    check_range(&client, "before", 0..20).await;
    check_range(&client, "after", 0..20).await;

    let refused = client.transfer_leader(REGION, 9).await;
    assert!(
        matches!(&refused, Err(ClientError::InvalidArgument(m)) if m.contains("holds no replica")),
        "{refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_voter_that_would_lose_quorum_is_refused() {
    let mut cluster = Cluster::start_with_args(test_environment!(), 3, hand_moved())
        .await
        .expect("start cluster");
    let leader = cluster
        .wait_for_leader(SETTLE_TIMEOUT)
        .await
        .expect("leader");
    let client = cluster.client();
    put_range(&client, "k", 0..20).await;
    let followers: Vec<u64> = cluster
        .node_ids()
        .into_iter()
        .filter(|&n| n != leader)
        .collect();
    let (dead, alive) = (followers[0], followers[1]);
    cluster.kill(dead).expect("kill a follower");
    wait_until(
        &cluster,
        "the leader sees the dead follower as down",
        || async {
            region_report(&cluster, leader)
                .await
                .is_some_and(|r| r.down_peers.contains(&dead))
        },
    )
    .await;

    // Removing the live follower would leave {leader, dead}: one of two.
    let refused = client
        .change_peers(REGION, &[PeerChange::Remove(alive)])
        .await;
    assert!(
        matches!(
            &refused,
            Err(ClientError::Server { code: tonic::Code::FailedPrecondition, message })
                if message.contains("not a majority")
        ),
        "{refused:?}"
    );
    let report = region_report(&cluster, leader)
        .await
        .expect("leader report");
    let region = report.region.expect("region");
    assert_eq!(stores(&region).len(), 3, "nothing was removed: {region:?}");

    // Removing the dead voter leaves {leader, alive}: both answer.
    let shrunk = client
        .change_peers(REGION, &[PeerChange::Remove(dead)])
        .await
        .expect("remove the dead voter");
    let mut expected = vec![(leader, false), (alive, false)];
    expected.sort_unstable();
    assert_eq!(stores(&shrunk), expected);
    put_range(&client, "k", 20..40).await;

    // Back up, the removed voter hears it is not a member and destroys
    // its replica.
    cluster
        .restart(dead)
        .await
        .expect("restart the removed voter");
    wait_until(
        &cluster,
        "the removed voter destroys its replica",
        || async { region_report(&cluster, dead).await.is_none() },
    )
    .await;
    assert!(!exists(&store_file(&cluster, dead, "checkpoint")));
    assert!(exists(&store_file(&cluster, dead, "tombstone")));
    check_range(&client, "k", 0..40).await;
}
