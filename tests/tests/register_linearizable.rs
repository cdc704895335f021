//! Random reads, writes and compare-and-swaps from concurrent clients on a
//! few keys, with the leader killed and restarted midway, must form a
//! linearizable history.
//!
//! The seed is printed; set `FLOTILLA_TEST_SEED` to replay a run's choices
//! (the cluster's timing is, of course, not replayed).

use flotilla_tests::cluster::Cluster;
use flotilla_tests::history::{Command, HistoryRecorder, Outcome, ProcessId, Response, Value};
use flotilla_tests::linearizability;
use flotilla_tests::recorded_client::RecordedClient;
use flotilla_tests::test_environment;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

const PROCESSES: ProcessId = 8;
const KEYS: [&str; 4] = ["reg/a", "reg/b", "reg/c", "reg/d"];
const OPERATIONS: usize = 1500;
/// Completed operations before the leader is killed, and before it returns.
const KILL_AFTER: usize = 500;
const RESTART_AFTER: usize = 800;
const ELECTION_TIMEOUT: Duration = Duration::from_secs(20);
const PHASE_TIMEOUT: Duration = Duration::from_secs(60);
const POLL_INTERVAL: Duration = Duration::from_millis(20);

fn seed() -> u64 {
    match std::env::var("FLOTILLA_TEST_SEED") {
        Ok(text) => text.parse().expect("FLOTILLA_TEST_SEED is a u64"),
        Err(_) => rand::random(),
    }
}

/// Shared progress of the workload.
#[derive(Default)]
struct Progress {
    issued: AtomicUsize,
    completed: AtomicUsize,
}

impl Progress {
    async fn wait_for_completed(&self, at_least: usize, phase: &str) {
        let deadline = Instant::now() + PHASE_TIMEOUT;
        while self.completed.load(Ordering::Relaxed) < at_least {
            assert!(
                Instant::now() < deadline,
                "{phase}: only {} of {at_least} operations completed within {PHASE_TIMEOUT:?}",
                self.completed.load(Ordering::Relaxed)
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

/// One process's loop: random commands until the shared budget is spent.
async fn run_process(
    client: RecordedClient,
    process: ProcessId,
    mut rng: StdRng,
    progress: Arc<Progress>,
) {
    // What this process last saw in each key: its CAS expectations.
    let mut last_seen: HashMap<&str, Value> = HashMap::new();
    for serial in 0u64.. {
        if progress.issued.fetch_add(1, Ordering::Relaxed) >= OPERATIONS {
            break;
        }
        let key = KEYS[rng.gen_range(0..KEYS.len())];
        let fresh = Some(format!("p{process}-{serial}").into_bytes());
        let roll = rng.gen_range(0..100);
        let command = if roll < 40 {
            Command::Read
        } else if roll < 65 {
            Command::Write(fresh)
        } else if roll < 70 {
            Command::Write(None)
        } else {
            let expected = if rng.gen_bool(0.7) {
                last_seen.get(key).cloned().flatten()
            } else {
                None
            };
            let new = if rng.gen_bool(0.9) { fresh } else { None };
            Command::Cas { expected, new }
        };
        match (client.run(key.as_bytes(), command.clone()).await, command) {
            (Outcome::Ok(Response::Read(value)), _) => {
                last_seen.insert(key, value);
            }
            (
                Outcome::Ok(Response::Cas {
                    succeeded,
                    previous,
                }),
                Command::Cas { new, .. },
            ) => {
                last_seen.insert(key, if succeeded { new } else { previous });
            }
            (Outcome::Ok(Response::Written), Command::Write(value)) => {
                last_seen.insert(key, value);
            }
            _ => {}
        }
        progress.completed.fetch_add(1, Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_history_with_leader_crash_is_linearizable() {
    let seed = seed();
    println!("seed = {seed} (replay with FLOTILLA_TEST_SEED={seed})");
    let mut cluster =
        Cluster::start_with_leader(test_environment!(), 3, Vec::new(), ELECTION_TIMEOUT)
            .await
            .expect("start a cluster with a leader");

    let recorder = HistoryRecorder::new();
    let progress = Arc::new(Progress::default());
    let mut processes = Vec::new();
    for process in 0..PROCESSES {
        let client = cluster.new_client().await.expect("client");
        let client = RecordedClient::new(client, recorder.clone(), process);
        let rng = StdRng::seed_from_u64(seed ^ process.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        processes.push(tokio::spawn(run_process(
            client,
            process,
            rng,
            progress.clone(),
        )));
    }

    progress
        .wait_for_completed(KILL_AFTER, "before the crash")
        .await;
    let leader = cluster
        .wait_for_leader(ELECTION_TIMEOUT)
        .await
        .expect("leader before the crash");
    cluster.kill(leader).expect("kill leader");
    cluster
        .wait_for_new_leader(leader, ELECTION_TIMEOUT)
        .await
        .expect("a new leader after the crash");
    progress
        .wait_for_completed(RESTART_AFTER, "after the crash")
        .await;
    cluster
        .restart(leader)
        .await
        .expect("restart the crashed node");
    for process in processes {
        process.await.expect("process task");
    }

    let history = recorder.history();
    let (ok, fail, info) = history.outcome_counts();
    println!("history: {ok} ok, {fail} failed, {info} indeterminate");
    assert_eq!(history.operations.len(), OPERATIONS);
    assert!(
        ok >= OPERATIONS / 2,
        "most operations succeed ({ok} of {OPERATIONS})"
    );
    let swaps = history
        .operations
        .iter()
        .filter(|op| {
            matches!(
                op.outcome,
                Outcome::Ok(Response::Cas {
                    succeeded: true,
                    ..
                })
            )
        })
        .count();
    assert!(
        swaps > 0,
        "the workload exercises successful compare-and-swaps"
    );
    match linearizability::check(&history) {
        Ok(summary) => println!("linearizable: {summary:?}"),
        Err(err) => panic!("seed {seed}: {err}"),
    }
}
