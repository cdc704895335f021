//! What every node tells the placement leader: a store heartbeat every
//! store interval (its id and addresses, its data directory's capacity and
//! free space, how many regions it holds and leads) and, every region
//! interval, one batch with every region it leads (shape, leader term,
//! size, pending peers, and read and write rates from the counters' growth
//! since the previous batch).
//!
//! Prompt reports: a region that changed on this node (a split's two
//! halves, a merge's target, a membership change, a replica that became
//! leader: `StoreRouter::changed_regions`) is reported at once if this node
//! leads it, as TiKV does, rather than up to a region interval
//! later, so the placement driver's model (the merge checker's split dates,
//! the operators waiting to see their effect) follows splits, merges,
//! membership changes and leader transfers closely. The report waits
//! [`PROMPT_SETTLE`] first, so that a split's new half has elected its
//! leader and the leaders measured their new sizes; a changed region
//! without a leader yet is looked at again every [`PROMPT_RECHECK`] for up
//! to [`PROMPT_WINDOW`], and one led elsewhere is that node's to report.
//!
//! The leader is found like the timestamp client finds it: any node that is
//! not the leader answers `NotLeader` naming it; the client tries this
//! node's own address first, then every member's it has learnt.
//!
//! Guarantee: a beat that cannot be delivered within its interval is
//! dropped, never queued behind the next one.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use client::{ClientConfig, PlacementDriverClient};
use flotilla_proto::placementpb as pb;
use placement::cluster::{PeerInfo, RegionInfo};
use raftstore::peer::{RegionStatus, RegionTraffic};
use raftstore::shard_core::{RegionCounts, StatusScope};
use raftstore::StoreRouter;

use crate::members::Members;
use crate::placement_driver::convert::region_to_proto;

/// How long a prompt report waits after a change (two Raft ticks: the
/// leaders' size checks ran, a split's new half had time to elect).
pub const PROMPT_SETTLE: Duration = Duration::from_millis(250);
/// How often a changed region without a known leader is looked at again.
pub const PROMPT_RECHECK: Duration = Duration::from_millis(100);
/// How long a changed region may take to elect a leader before it is left
/// to the periodic report (a few election timeouts).
pub const PROMPT_WINDOW: Duration = Duration::from_secs(3);

/// Who this node is, for its heartbeats.
pub struct HeartbeatIdentity {
    pub store_id: u64,
    pub peer_addr: String,
    pub client_addr: String,
    pub data_dir: PathBuf,
}

/// Capacity and free space of the file system holding `path`, in bytes.
pub fn disk_space(path: &std::path::Path) -> std::io::Result<(u64, u64)> {
    let stat = rustix::fs::statvfs(path)?;
    let capacity = stat.f_blocks.saturating_mul(stat.f_frsize);
    let available = stat.f_bavail.saturating_mul(stat.f_frsize);
    Ok((capacity, available))
}

/// Sends this node's heartbeats until the task is aborted.
pub async fn run(
    identity: HeartbeatIdentity,
    router: StoreRouter,
    members: Members,
    store_interval: Duration,
    region_interval: Duration,
) {
    let config = ClientConfig {
        request_timeout: store_interval.min(Duration::from_secs(2)),
        operation_timeout: store_interval.min(region_interval),
        ..ClientConfig::new([identity.client_addr.clone()])
    };
    let pd = match PlacementDriverClient::new(&config) {
        Ok(pd) => pd,
        Err(err) => {
            tracing::error!(%err, "cannot reach the placement driver from this node's address; no heartbeats");
            return;
        }
    };
    let mut store_ticks = tokio::time::interval(store_interval);
    let mut region_ticks = tokio::time::interval(region_interval);
    store_ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    region_ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rates = RateTracker::default();
    let mut prompt = PromptReports::default();
    loop {
        let beat = tokio::select! {
            _ = store_ticks.tick() => Beat::Store,
            _ = region_ticks.tick() => Beat::Regions,
            changed = router.changed_regions() => {
                prompt.add(changed, Instant::now() + PROMPT_WINDOW);
                tokio::time::sleep(PROMPT_SETTLE).await;
                Beat::Prompt
            }
            _ = tokio::time::sleep(PROMPT_RECHECK), if !prompt.is_empty() => Beat::Prompt,
        };
        for (_, member) in members.all() {
            if !member.client_addr.is_empty() {
                if let Err(err) = pd.add_endpoint(&member.client_addr) {
                    tracing::debug!(%err, addr = %member.client_addr, "member address unusable");
                }
            }
        }
        let outcome = if beat == Beat::Store {
            let counts = router.region_counts().await;
            pd.store_heartbeat(store_heartbeat(&identity, counts))
                .await
                .map(|response| tracing::debug!(state = ?response.state(), "store heartbeat delivered"))
        } else {
            // A prompt report looks at every region: a changed one with no
            // leader yet stays pending. The periodic one needs only those led.
            let scope = if beat == Beat::Prompt {
                StatusScope::All
            } else {
                StatusScope::Leading
            };
            let statuses = router.status_in(scope).await;
            let only = match beat {
                Beat::Prompt => match prompt.take_due(&statuses, Instant::now()) {
                    due if due.is_empty() => continue,
                    due => Some(due),
                },
                _ => None,
            };
            if let Some(due) = &only {
                tracing::debug!(regions = ?due, "reporting changed regions at once");
            }
            let regions =
                rates.leader_reports(identity.store_id, &statuses, Instant::now(), only.as_ref());
            pd.region_heartbeat(pb::RegionHeartbeatRequest {
                store_id: identity.store_id,
                regions,
            })
            .await
            .map(|response| {
                if response.stale > 0 {
                    tracing::debug!(
                        stale = response.stale,
                        "placement leader knows newer shapes of some regions"
                    );
                }
            })
        };
        if let Err(err) = outcome {
            tracing::debug!(%err, ?beat, "heartbeat not delivered");
        }
    }
}

/// What woke the heartbeat loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Beat {
    Store,
    Regions,
    /// Changed regions may be due for a prompt report.
    Prompt,
}

/// Regions changed on this node and not reported yet, each with the
/// instant after which it is left to the periodic report.
#[derive(Default)]
struct PromptReports {
    pending: BTreeMap<u64, Instant>,
}

impl PromptReports {
    fn add(&mut self, regions: Vec<u64>, until: Instant) {
        for id in regions {
            self.pending.insert(id, until);
        }
    }

    fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The pending regions this node leads now, which it reports and
    /// forgets; also forgets those led elsewhere, gone from this node, or
    /// past their window. The rest (no leader yet) stay pending.
    fn take_due(&mut self, statuses: &[RegionStatus], now: Instant) -> BTreeSet<u64> {
        let mut due = BTreeSet::new();
        self.pending.retain(|&id, until| {
            let Some(status) = statuses.iter().find(|s| s.region.id == id) else {
                return false;
            };
            if status.role == "leader" {
                due.insert(id);
                return false;
            }
            status.leader_id == 0 && now < *until
        });
        due
    }
}

fn store_heartbeat(
    identity: &HeartbeatIdentity,
    counts: RegionCounts,
) -> pb::StoreHeartbeatRequest {
    let (capacity_bytes, available_bytes) = match disk_space(&identity.data_dir) {
        Ok(space) => space,
        Err(err) => {
            tracing::warn!(%err, dir = %identity.data_dir.display(), "cannot measure the data directory's file system");
            (0, 0)
        }
    };
    pb::StoreHeartbeatRequest {
        store_id: identity.store_id,
        peer_addr: identity.peer_addr.clone(),
        client_addr: identity.client_addr.clone(),
        capacity_bytes,
        available_bytes,
        region_count: counts.regions,
        leader_count: counts.leaders,
    }
}

/// Each led region's traffic counters at the previous batch, to turn their
/// growth into rates.
#[derive(Default)]
struct RateTracker {
    previous: HashMap<u64, (Instant, RegionTraffic)>,
}

impl RateTracker {
    /// The reports for the regions this store leads (of those in `only`,
    /// if given), with rates over the time since each was last reported
    /// from here (zero the first time, and after the counters restarted).
    fn leader_reports(
        &mut self,
        store_id: u64,
        statuses: &[RegionStatus],
        now: Instant,
        only: Option<&BTreeSet<u64>>,
    ) -> Vec<pb::RegionInfo> {
        let mut next = HashMap::new();
        let reports = statuses
            .iter()
            .filter(|s| s.role == "leader" && s.region.is_known())
            .filter(|s| only.is_none_or(|ids| ids.contains(&s.region.id)))
            .map(|s| {
                let traffic = s.traffic;
                let rate = |current: u64, before: u64, elapsed: Duration| -> u64 {
                    let secs = elapsed.as_secs_f64();
                    if secs <= 0.0 || current < before {
                        return 0;
                    }
                    ((current - before) as f64 / secs) as u64
                };
                let (written_bytes, written_keys, read_keys) = match self.previous.get(&s.region.id)
                {
                    Some((at, before)) => {
                        let elapsed = now.saturating_duration_since(*at);
                        (
                            rate(traffic.written_bytes, before.written_bytes, elapsed),
                            rate(traffic.written_keys, before.written_keys, elapsed),
                            rate(traffic.read_keys, before.read_keys, elapsed),
                        )
                    }
                    None => (0, 0, 0),
                };
                next.insert(s.region.id, (now, traffic));
                region_to_proto(&RegionInfo {
                    id: s.region.id,
                    start_key: s.region.start_key.clone(),
                    end_key: s.region.end_key.clone(),
                    epoch: s.region.epoch,
                    peers: s
                        .region
                        .peers
                        .iter()
                        .map(|p| PeerInfo {
                            id: p.id,
                            store_id: p.store_id,
                            is_learner: s.learners.contains(&p.store_id),
                        })
                        .collect(),
                    leader_store: store_id,
                    term: s.term,
                    approximate_keys: s.size.keys,
                    approximate_bytes: s.size.bytes,
                    written_bytes_per_sec: written_bytes,
                    written_keys_per_sec: written_keys,
                    read_keys_per_sec: read_keys,
                    pending_stores: s.pending_peers.clone(),
                })
            })
            .collect();
        if only.is_some() {
            self.previous.extend(next);
        } else {
            // A full report: regions no longer led here are forgotten.
            self.previous = next;
        }
        reports
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftstore::peer::RegionSize;
    use raftstore::region::RegionMeta;

    fn status(id: u64, role: &'static str, traffic: RegionTraffic) -> RegionStatus {
        RegionStatus {
            region: RegionMeta::whole_keyspace(id, &[1, 2, 3]),
            leader_id: 1,
            term: 4,
            commit_index: 10,
            applied_index: 10,
            role,
            size: RegionSize { keys: 5, bytes: 50 },
            hibernating: false,
            traffic,
            pending_peers: vec![3],
            learners: Vec::new(),
            down_peers: Vec::new(),
            merging_into: None,
        }
    }

    #[test]
    fn rates_are_the_counters_growth_over_the_interval() {
        let mut tracker = RateTracker::default();
        let start = Instant::now();
        let first = tracker.leader_reports(
            1,
            &[
                status(1, "leader", RegionTraffic::default()),
                status(2, "follower", RegionTraffic::default()),
            ],
            start,
            None,
        );
        assert_eq!(first.len(), 1, "only led regions are reported");
        assert_eq!(
            first[0].written_bytes_per_sec, 0,
            "no rate without a previous sample"
        );
        assert_eq!(
            (
                first[0].leader_store_id,
                first[0].term,
                first[0].approximate_keys
            ),
            (1, 4, 5)
        );
        assert_eq!(first[0].pending_store_ids, [3]);
        let grown = RegionTraffic {
            written_keys: 20,
            written_bytes: 2_000,
            read_keys: 100,
        };
        let second = tracker.leader_reports(
            1,
            &[status(1, "leader", grown)],
            start + Duration::from_secs(2),
            None,
        );
        assert_eq!(
            (
                second[0].written_bytes_per_sec,
                second[0].written_keys_per_sec,
                second[0].read_keys_per_sec
            ),
            (1_000, 10, 50)
        );
        // Counters that went backwards (a new replica) give no rate.
        let restarted = tracker.leader_reports(
            1,
            &[status(1, "leader", RegionTraffic::default())],
            start + Duration::from_secs(3),
            None,
        );
        assert_eq!(restarted[0].written_bytes_per_sec, 0);
    }

    #[test]
    fn prompt_reports_cover_only_the_named_regions_and_keep_the_others_rates() {
        let mut tracker = RateTracker::default();
        let start = Instant::now();
        let grown = RegionTraffic {
            written_keys: 10,
            written_bytes: 1_000,
            read_keys: 0,
        };
        tracker.leader_reports(
            1,
            &[
                status(1, "leader", RegionTraffic::default()),
                status(2, "leader", RegionTraffic::default()),
            ],
            start,
            None,
        );
        let prompt = tracker.leader_reports(
            1,
            &[status(1, "leader", grown), status(2, "leader", grown)],
            start + Duration::from_secs(1),
            Some(&BTreeSet::from([2])),
        );
        assert_eq!(prompt.len(), 1);
        assert_eq!(prompt[0].region.as_ref().map(|r| r.id), Some(2));
        // Region 1's baseline is still the first full report.
        let full = tracker.leader_reports(
            1,
            &[status(1, "leader", grown), status(2, "leader", grown)],
            start + Duration::from_secs(2),
            None,
        );
        let rates: Vec<u64> = full.iter().map(|r| r.written_bytes_per_sec).collect();
        assert_eq!(rates, [500, 0]);
    }

    #[test]
    fn changed_regions_are_due_once_led_here_and_dropped_otherwise() {
        let start = Instant::now();
        let mut prompt = PromptReports::default();
        prompt.add(vec![1, 2, 3, 4, 5], start + PROMPT_WINDOW);
        let mut leaderless = status(2, "candidate", RegionTraffic::default());
        leaderless.leader_id = 0;
        let mut led_elsewhere = status(3, "follower", RegionTraffic::default());
        led_elsewhere.leader_id = 2;
        let mut late = status(5, "follower", RegionTraffic::default());
        late.leader_id = 0;
        let statuses = [
            status(1, "leader", RegionTraffic::default()),
            leaderless.clone(),
            led_elsewhere,
            late.clone(),
        ];
        // Region 4 is not on this node any more.
        assert_eq!(prompt.take_due(&statuses, start), BTreeSet::from([1]));
        assert_eq!(
            prompt.pending.keys().copied().collect::<Vec<_>>(),
            [2, 5],
            "the leaderless wait"
        );
        prompt.add(vec![5], start);
        let elected = [status(2, "leader", RegionTraffic::default()), late];
        assert_eq!(
            prompt.take_due(&elected, start + Duration::from_millis(1)),
            BTreeSet::from([2])
        );
        assert!(prompt.is_empty(), "region 5's window passed");
    }

    #[test]
    fn disk_space_measures_a_real_file_system() {
        let (capacity, available) = disk_space(std::path::Path::new(".")).expect("statvfs");
        assert!(capacity > 0 && available <= capacity);
    }
}
