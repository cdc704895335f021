//! Idle regions hibernate (no ticks, no heartbeats), wake on demand, and
//! still fail over: when the store of a hibernating leader dies, its
//! followers notice the store's silence, wake and elect a new leader.

use std::time::Duration;

use flotilla_tests::cluster::Cluster;
use flotilla_tests::test_environment;
use tokio::time::Instant;

const DEADLINE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);

/// Whether every live node reports every one of its regions hibernating.
async fn all_hibernating(cluster: &Cluster, nodes: &[u64]) -> bool {
    for &node in nodes {
        let Ok(endpoint) = cluster.endpoint(node) else {
            return false;
        };
        match cluster.client().status(&endpoint).await {
            Ok(status) if !status.regions.is_empty() => {
                if !status.regions.iter().all(|r| r.hibernating) {
                    return false;
                }
            }
            _ => return false,
        }
    }
    true
}

async fn wait_all_hibernating(cluster: &Cluster, nodes: &[u64]) {
    let deadline = Instant::now() + DEADLINE;
    while !all_hibernating(cluster, nodes).await {
        if Instant::now() >= deadline {
            cluster.dump_logs(30);
            panic!("regions did not hibernate on nodes {nodes:?} within {DEADLINE:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hibernating_regions_wake_for_requests_and_fail_over_when_the_leader_dies() {
    let mut cluster = Cluster::start(test_environment!(), 3)
        .await
        .expect("start cluster");
    let leader = cluster.wait_for_leader(DEADLINE).await.expect("leader");
    let client = cluster.client();
    client.put("k", "v1").await.expect("put");
    let nodes = cluster.node_ids();
    wait_all_hibernating(&cluster, &nodes).await;

    // A request wakes the region; it serves, then sleeps again.
    client
        .put("k", "v2")
        .await
        .expect("put to a hibernating region");
    assert_eq!(client.get("k").await.expect("get"), Some(b"v2".to_vec()));
    wait_all_hibernating(&cluster, &nodes).await;

    // The leader's store dies while every region sleeps: nothing else
    // would wake the followers.
    cluster.kill(leader).expect("kill the leader");
    let started = Instant::now();
    let new_leader = cluster
        .wait_for_new_leader(leader, DEADLINE)
        .await
        .expect("the followers elect a new leader");
    let failover = started.elapsed();
    assert_ne!(new_leader, leader);
    eprintln!("failover from a hibernating leader took {failover:?}");
    client.put("k", "v3").await.expect("put after failover");
    assert_eq!(client.get("k").await.expect("get"), Some(b"v3".to_vec()));

    cluster.restart(leader).await.expect("restart");
    wait_all_hibernating(&cluster, &nodes).await;
    assert_eq!(client.get("k").await.expect("get"), Some(b"v3".to_vec()));
}
