//! The timestamp oracle on a real 3-node cluster: timestamps from many
//! concurrent callers are strictly increasing per caller, unique overall and
//! in real-time order (a call that started after another finished gets a
//! greater timestamp); after the placement leader (the node leading the
//! system region) is killed with SIGKILL mid-stream, service resumes within
//! a few seconds and nothing handed out afterwards is at or below anything
//! handed out before; and the same holds once the killed node is back.

use client::{Client, RegionStatus, StatusResponse, Timestamp};
use flotilla_tests::cluster::Cluster;
use flotilla_tests::test_environment;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;

const CLIENTS: usize = 3;
const CALLERS_PER_CLIENT: usize = 8;
const CALLS_PER_CALLER: usize = 200;
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest acceptable gap in service after the placement leader dies: an
/// election (1–2 s) plus the client finding the new leader.
const FAILOVER_MAX: Duration = Duration::from_secs(8);
/// Successful calls awaited in each phase of the crash test.
const CALLS_PER_PHASE: usize = 300;
const PHASE_TIMEOUT: Duration = Duration::from_secs(30);
const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// The system region starts at the reserved prefix.
const SYSTEM_REGION_START: &[u8] = &[0xFF, 0xFF];

/// One successful call as its caller saw it.
#[derive(Clone, Copy, Debug)]
struct Call {
    started: Instant,
    finished: Instant,
    timestamp: Timestamp,
}

/// Checks what every successful call of a history must satisfy: unique
/// timestamps, and a call that started after another finished got a
/// greater timestamp.
fn check_real_time_order(calls: &[Call]) {
    let unique: HashSet<Timestamp> = calls.iter().map(|c| c.timestamp).collect();
    assert_eq!(
        unique.len(),
        calls.len(),
        "a timestamp was handed out twice"
    );
    let mut by_start: Vec<&Call> = calls.iter().collect();
    by_start.sort_by_key(|c| c.started);
    let mut by_finish: Vec<&Call> = calls.iter().collect();
    by_finish.sort_by_key(|c| c.finished);
    let mut finished = by_finish.iter().peekable();
    let mut highest_finished: Option<&Call> = None;
    for call in by_start {
        while let Some(done) = finished.next_if(|done| done.finished < call.started) {
            if highest_finished.is_none_or(|h| done.timestamp > h.timestamp) {
                highest_finished = Some(done);
            }
        }
        if let Some(before) = highest_finished {
            assert!(
                call.timestamp > before.timestamp,
                "{call:?} started after {before:?} finished but got a smaller timestamp"
            );
        }
    }
}

/// Callers running `get_timestamp` in a loop until stopped, recording every
/// success; errors (while the leader is down) are counted, not recorded.
struct Callers {
    calls: Arc<Mutex<Vec<Call>>>,
    errors: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<Vec<Timestamp>>>,
}

impl Callers {
    fn start(clients: &[Client], per_client: usize) -> Callers {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = clients
            .iter()
            .flat_map(|client| std::iter::repeat_n(client, per_client))
            .map(|client| {
                let (client, calls, errors, stop) =
                    (client.clone(), calls.clone(), errors.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut mine = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let started = Instant::now();
                        match client.get_timestamp().await {
                            Ok(timestamp) => {
                                let finished = Instant::now();
                                mine.push(timestamp);
                                calls.lock().expect("lock").push(Call {
                                    started,
                                    finished,
                                    timestamp,
                                });
                            }
                            Err(err) => errors.lock().expect("lock").push(err.to_string()),
                        }
                    }
                    mine
                })
            })
            .collect();
        Callers {
            calls,
            errors,
            stop,
            tasks,
        }
    }

    fn successes(&self) -> usize {
        self.calls.lock().expect("lock").len()
    }

    /// Waits until `count` more calls than `from` succeeded.
    async fn wait_for_successes(&self, from: usize, count: usize) {
        let deadline = Instant::now() + PHASE_TIMEOUT;
        while self.successes() < from + count {
            assert!(
                Instant::now() < deadline,
                "only {} of {count} timestamps within {PHASE_TIMEOUT:?}; errors: {:?}",
                self.successes() - from,
                self.errors.lock().expect("lock").last()
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Stops the callers; checks each caller saw strictly increasing
    /// timestamps; returns every successful call.
    async fn stop(self) -> Vec<Call> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let mine = task.await.expect("caller task");
            assert!(
                mine.windows(2).all(|pair| pair[0] < pair[1]),
                "a caller's timestamps went backwards"
            );
        }
        let calls = self.calls.lock().expect("lock").clone();
        calls
    }
}

/// The system region as `status` reports it.
fn system_region(status: &StatusResponse) -> Option<&RegionStatus> {
    status.regions.iter().find(|r| {
        r.region
            .as_ref()
            .is_some_and(|r| r.start_key == SYSTEM_REGION_START)
    })
}

/// The node a majority agrees leads the system region (the placement
/// leader), if any.
async fn placement_leader(cluster: &Cluster) -> Option<u64> {
    let mut statuses: Vec<StatusResponse> = Vec::new();
    for node in cluster.node_ids() {
        let Ok(endpoint) = cluster.endpoint(node) else {
            continue;
        };
        if let Ok(status) = cluster.client().status(&endpoint).await {
            statuses.push(status);
        }
    }
    let (leader, term) = statuses
        .iter()
        .filter_map(|s| Some((s.node_id, system_region(s)?)))
        .filter(|(_, r)| r.role == "leader")
        .map(|(node, r)| (node, r.term))
        .max_by_key(|&(_, term)| term)?;
    let supporters = statuses
        .iter()
        .filter_map(system_region)
        .filter(|r| r.leader_id == leader && r.term == term)
        .count();
    (supporters > cluster.node_ids().len() / 2).then_some(leader)
}

async fn wait_for_placement_leader(cluster: &Cluster) -> u64 {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        if let Some(leader) = placement_leader(cluster).await {
            return leader;
        }
        assert!(
            Instant::now() < deadline,
            "no agreed leader of the system region within {SETTLE_TIMEOUT:?}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

async fn clients(cluster: &Cluster) -> Vec<Client> {
    let mut clients = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        clients.push(cluster.new_client().await.expect("client"));
    }
    clients
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_get_unique_timestamps_in_real_time_order() {
    let cluster = Cluster::start(test_environment!(), 3)
        .await
        .expect("start cluster");
    wait_for_placement_leader(&cluster).await;
    let clients = clients(&cluster).await;
    let calls = Arc::new(Mutex::new(Vec::new()));
    let tasks: Vec<_> = clients
        .iter()
        .flat_map(|client| std::iter::repeat_n(client, CALLERS_PER_CLIENT))
        .map(|client| {
            let (client, calls) = (client.clone(), calls.clone());
            tokio::spawn(async move {
                let mut previous = Timestamp(0);
                for _ in 0..CALLS_PER_CALLER {
                    let started = Instant::now();
                    let timestamp = client.get_timestamp().await.expect("timestamp");
                    let finished = Instant::now();
                    assert!(timestamp > previous, "{timestamp:?} after {previous:?}");
                    previous = timestamp;
                    calls.lock().expect("lock").push(Call {
                        started,
                        finished,
                        timestamp,
                    });
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("caller");
    }
    let calls = calls.lock().expect("lock").clone();
    assert_eq!(calls.len(), CLIENTS * CALLERS_PER_CLIENT * CALLS_PER_CALLER);
    check_real_time_order(&calls);
    // The physical part is wall-clock milliseconds.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64;
    let last = calls.iter().map(|c| c.timestamp).max().expect("calls");
    assert!(
        last.physical_ms().abs_diff(now_ms) < 10_000,
        "physical part {} far from the clock {now_ms}",
        last.physical_ms()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_placement_leader_never_takes_timestamps_back() {
    let mut cluster = Cluster::start(test_environment!(), 3)
        .await
        .expect("start cluster");
    let old_leader = wait_for_placement_leader(&cluster).await;
    let callers = Callers::start(&clients(&cluster).await, 2);
    callers.wait_for_successes(0, CALLS_PER_PHASE).await;

    let killed_at = Instant::now();
    cluster.kill(old_leader).expect("kill the placement leader");
    // Service resumes: some call that started after the kill succeeds.
    let deadline = killed_at + PHASE_TIMEOUT;
    let resumed_at = loop {
        let first_after = callers
            .calls
            .lock()
            .expect("lock")
            .iter()
            .filter(|c| c.started > killed_at)
            .map(|c| c.finished)
            .min();
        if let Some(finished) = first_after {
            break finished;
        }
        assert!(Instant::now() < deadline, "no timestamp after the kill");
        tokio::time::sleep(POLL_INTERVAL).await;
    };
    let gap = resumed_at - killed_at;
    eprintln!(
        "timestamps resumed {gap:?} after the placement leader (node {old_leader}) was killed"
    );
    assert!(gap < FAILOVER_MAX, "service resumed only after {gap:?}");
    let new_leader = wait_for_placement_leader(&cluster).await;
    assert_ne!(new_leader, old_leader);
    callers
        .wait_for_successes(callers.successes(), CALLS_PER_PHASE)
        .await;

    cluster.restart(old_leader).await.expect("restart");
    callers
        .wait_for_successes(callers.successes(), CALLS_PER_PHASE)
        .await;
    let errors = callers.errors.lock().expect("lock").len();
    let calls = callers.stop().await;
    eprintln!(
        "{} timestamps, {errors} failed calls around the crash",
        calls.len()
    );

    let highest_before_kill = calls
        .iter()
        .filter(|c| c.finished < killed_at)
        .map(|c| c.timestamp)
        .max()
        .expect("timestamps before the kill");
    let lowest_after_kill = calls
        .iter()
        .filter(|c| c.started > killed_at)
        .map(|c| c.timestamp)
        .min()
        .expect("timestamps after the kill");
    assert!(
        lowest_after_kill > highest_before_kill,
        "{lowest_after_kill:?} after the failover is not above {highest_before_kill:?}"
    );
    check_real_time_order(&calls);
}
