//! Acknowledged writes survive a leader crash, the crashed node's restart,
//! and a clean restart of the whole cluster.
//!
//! Several writers put unique keys while the leader is killed with SIGKILL;
//! a new leader must be elected and the writers must keep making progress.
//! Every write the client acknowledged must then be readable with its value
//! — once the killed node is back, and again after every node was shut down
//! with SIGTERM and started anew.

use client::Client;
use flotilla_tests::cluster::Cluster;
use flotilla_tests::test_environment;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;

const WRITERS: usize = 4;
/// Acknowledged writes awaited in each phase (before the crash, after the
/// new election, after the restart).
const ACKS_PER_PHASE: usize = 60;
const PHASE_TIMEOUT: Duration = Duration::from_secs(40);
const ELECTION_TIMEOUT: Duration = Duration::from_secs(20);
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);
const VERIFY_BATCH_KEYS: usize = 100;
const POLL_INTERVAL: Duration = Duration::from_millis(20);

type Acknowledged = Arc<Mutex<BTreeMap<String, String>>>;

/// Writer tasks putting unique keys until told to stop.
struct Writers {
    acknowledged: Acknowledged,
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Writers {
    fn start(clients: Vec<Client>) -> Self {
        let acknowledged = Acknowledged::default();
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = clients
            .into_iter()
            .enumerate()
            .map(|(writer, client)| {
                let acknowledged = acknowledged.clone();
                let stop = stop.clone();
                tokio::spawn(async move {
                    for sequence in 0u64.. {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let key = format!("crash/w{writer}/{sequence:06}");
                        let value = format!("value-{writer}-{sequence}");
                        // Unacknowledged writes may or may not exist; only
                        // acknowledged ones are checked.
                        if client.put(key.clone(), value.clone()).await.is_ok() {
                            acknowledged.lock().expect("lock").insert(key, value);
                        }
                    }
                })
            })
            .collect();
        Self {
            acknowledged,
            stop,
            tasks,
        }
    }

    fn acknowledged_count(&self) -> usize {
        self.acknowledged.lock().expect("lock").len()
    }

    /// Waits until `more` writes beyond the current count are acknowledged.
    async fn wait_for_progress(&self, more: usize, phase: &str) {
        let target = self.acknowledged_count() + more;
        let deadline = Instant::now() + PHASE_TIMEOUT;
        while self.acknowledged_count() < target {
            assert!(
                Instant::now() < deadline,
                "{phase}: only {} of {target} writes acknowledged within {PHASE_TIMEOUT:?}",
                self.acknowledged_count()
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    async fn stop(self) -> BTreeMap<String, String> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("writer task");
        }
        let acknowledged = self.acknowledged.lock().expect("lock");
        acknowledged.clone()
    }
}

/// Asserts every acknowledged key holds its value.
async fn assert_all_readable(client: &Client, acknowledged: &BTreeMap<String, String>, when: &str) {
    let entries: Vec<(&String, &String)> = acknowledged.iter().collect();
    for batch in entries.chunks(VERIFY_BATCH_KEYS) {
        let keys = batch
            .iter()
            .map(|(key, _)| key.as_bytes().to_vec())
            .collect();
        let found: BTreeMap<Vec<u8>, Vec<u8>> = client
            .batch_get(keys)
            .await
            .unwrap_or_else(|err| panic!("{when}: batch read failed: {err}"))
            .into_iter()
            .map(|pair| (pair.key, pair.value))
            .collect();
        for (key, value) in batch {
            assert_eq!(
                found
                    .get(key.as_bytes())
                    .map(|v| String::from_utf8_lossy(v).into_owned()),
                Some((*value).clone()),
                "{when}: acknowledged key {key} lost or changed"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_leader_crash_and_full_restart() {
    let mut cluster = Cluster::start(test_environment!(), 3)
        .await
        .expect("start cluster");
    let leader = cluster
        .wait_for_leader(ELECTION_TIMEOUT)
        .await
        .expect("initial leader");

    let mut clients = Vec::with_capacity(WRITERS);
    for _ in 0..WRITERS {
        clients.push(cluster.new_client().await.expect("client"));
    }
    let writers = Writers::start(clients);
    writers
        .wait_for_progress(ACKS_PER_PHASE, "before the crash")
        .await;

    cluster.kill(leader).expect("kill leader");
    let new_leader = cluster
        .wait_for_new_leader(leader, ELECTION_TIMEOUT)
        .await
        .expect("a new leader after the crash");
    assert_ne!(new_leader, leader);
    writers
        .wait_for_progress(ACKS_PER_PHASE, "after the new election")
        .await;

    cluster
        .restart(leader)
        .await
        .expect("restart the crashed node");
    writers
        .wait_for_progress(ACKS_PER_PHASE, "after the restart")
        .await;
    let acknowledged = writers.stop().await;
    assert!(acknowledged.len() >= 3 * ACKS_PER_PHASE);

    cluster
        .wait_for_catch_up(leader, CATCH_UP_TIMEOUT)
        .await
        .expect("the restarted node catches up");
    assert_all_readable(&cluster.client(), &acknowledged, "after the crash").await;

    for node in cluster.node_ids() {
        if let Err(err) = cluster.terminate(node).await {
            panic!("SIGTERM must shut node {node} down cleanly: {err}");
        }
    }
    for node in cluster.node_ids() {
        cluster.restart(node).await.expect("restart after shutdown");
    }
    cluster
        .wait_for_leader(ELECTION_TIMEOUT)
        .await
        .expect("a leader after the full restart");
    let reader = cluster.new_client().await.expect("client");
    assert_all_readable(&reader, &acknowledged, "after the full restart").await;
}
