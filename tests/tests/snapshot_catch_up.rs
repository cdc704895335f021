//! A follower that falls behind log compaction catches up by installing a
//! snapshot (the leader's region checkpoint), then takes part in the quorum.
//!
//! Nodes checkpoint every few entries, so while one follower is down the
//! others compact their logs past everything it has. On restart it must
//! receive and install a snapshot, reach the leader's commit index, and then
//! serve as half of a two-node quorum while the third node is down. Every
//! acknowledged write must be readable at the end.

use flotilla_tests::cluster::Cluster;
use flotilla_tests::test_environment;
use std::time::Duration;

const CHECKPOINT_EVERY_ENTRIES: &str = "40";
const ELECTION_TIMEOUT: Duration = Duration::from_secs(20);
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);

async fn put_range(client: &client::Client, prefix: &str, range: std::ops::Range<u32>) {
    for i in range {
        let key = format!("{prefix}/{i:05}");
        client
            .put(key.clone(), format!("v{i}"))
            .await
            .unwrap_or_else(|e| panic!("put {key}: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_follower_installs_a_snapshot_and_rejoins_the_quorum() {
    let args = vec![
        "--checkpoint-every-entries".to_string(),
        CHECKPOINT_EVERY_ENTRIES.to_string(),
    ];
    let mut cluster = Cluster::start_with_args(test_environment!(), 3, args)
        .await
        .expect("start cluster");
    let leader = cluster
        .wait_for_leader(ELECTION_TIMEOUT)
        .await
        .expect("leader");
    let client = cluster.client();
    put_range(&client, "before", 0..20).await;

    let lagging = cluster
        .node_ids()
        .into_iter()
        .find(|n| *n != leader)
        .expect("a follower");
    let other = cluster
        .node_ids()
        .into_iter()
        .find(|n| *n != leader && *n != lagging)
        .expect("a third node");
    cluster.terminate(lagging).await.expect("stop the follower");
    // Several checkpoints' worth of entries: the others compact past it.
    put_range(&client, "while-down", 0..300).await;

    cluster
        .restart(lagging)
        .await
        .expect("restart the follower");
    cluster
        .wait_for_catch_up(lagging, CATCH_UP_TIMEOUT)
        .await
        .expect("follower catches up");
    let log = std::fs::read_to_string(cluster.scratch_dir().join(format!("node-{lagging}.log")))
        .expect("read log");
    assert!(
        log.contains("installed snapshot"),
        "node {lagging} caught up without a snapshot:\n{}",
        cluster.log_tails(40)
    );

    // With the third node down, every write needs the snapshotted node.
    cluster.kill(other).expect("kill the third node");
    put_range(&client, "after", 0..50).await;
    cluster
        .restart(other)
        .await
        .expect("restart the third node");

    for (prefix, n) in [("before", 20), ("while-down", 300), ("after", 50)] {
        let pairs = client
            .scan(format!("{prefix}/"), format!("{prefix}0"), 0, false)
            .await
            .expect("scan");
        assert_eq!(pairs.len(), n, "{prefix}: acknowledged keys missing");
        for (i, p) in pairs.iter().enumerate() {
            assert_eq!(p.key, format!("{prefix}/{i:05}").into_bytes());
            assert_eq!(p.value, format!("v{i}").into_bytes());
        }
    }
}
