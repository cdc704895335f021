//! The harness's own connection to a cluster: who leads (by the nodes' own
//! Status reports, as `flotilla_tests::cluster::leader` judges them),
//! whether the cluster serves again after faults (every node answers, every
//! region has a leader, a linearizable read succeeds), the regions holding a
//! workload's keys, and the client the nemesis makes its admin calls with.

use super::NodeId;
use crate::workload::KeySpace;
use crate::Error;
use client::{Client, ClientConfig, ClusterView, StatusResponse};
use std::time::Duration;
use tokio::time::Instant;

/// A key no workload uses, read to prove the cluster serves.
const PROBE_KEY: &[u8] = b"jepsen-probe";
/// Pause between availability probes.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How long an admin call (a split, a leader transfer, a membership change)
/// may take: longer than a data operation, because a change waits out
/// another one in flight, and a learner gets this long to show progress.
const ADMIN_OPERATION_TIMEOUT: Duration = Duration::from_secs(10);
/// The role a replica that leads its region reports.
const LEADER_ROLE: &str = "leader";

/// Client settings of a run: fail over quickly, and give up on an
/// operation after about two election timeouts, so faults show up as fail
/// and info outcomes rather than as clients stalled behind retries.
pub fn client_config(endpoints: Vec<String>) -> ClientConfig {
    ClientConfig {
        request_timeout: Duration::from_secs(1),
        operation_timeout: Duration::from_secs(3),
        connect_timeout: Duration::from_millis(500),
        ..ClientConfig::new(endpoints)
    }
}

/// The harness's view of the cluster.
#[derive(Debug)]
pub struct Control {
    client: Client,
    admin: Client,
    endpoints: Vec<String>,
}

impl Control {
    pub async fn connect(endpoints: Vec<String>) -> Result<Control, Error> {
        let client = Client::connect(client_config(endpoints.clone())).await?;
        let admin = Client::connect(ClientConfig {
            operation_timeout: ADMIN_OPERATION_TIMEOUT,
            ..client_config(endpoints.clone())
        })
        .await?;
        Ok(Control {
            client,
            admin,
            endpoints,
        })
    }

    /// The client for admin calls: [`client_config`], but with
    /// `ADMIN_OPERATION_TIMEOUT` per operation.
    pub fn admin(&self) -> &Client {
        &self.admin
    }

    /// The leader a majority agrees on, if any (nodes that do not answer
    /// count as disagreeing).
    pub async fn leader(&self) -> Option<NodeId> {
        let replies =
            futures::future::join_all(self.endpoints.iter().map(|e| self.client.status(e))).await;
        let statuses: Vec<_> = replies.into_iter().filter_map(Result::ok).collect();
        flotilla_tests::cluster::leader::agreed_leader(self.endpoints.len(), &statuses)
    }

    /// How many regions of the cluster's merged view hold keys of `space`.
    pub async fn regions_holding(&self, space: KeySpace) -> usize {
        let view = self.client.cluster_view().await;
        view.regions
            .iter()
            .filter(|view| space.overlaps(&view.region.start_key, &view.region.end_key))
            .count()
    }

    /// Waits, for at most `timeout`, until every node answers, a majority
    /// agrees on the leader of the first region, every region has a leader
    /// that says so itself, and a linearizable read succeeds; returns the
    /// first region's leader. At the deadline the error says what was
    /// still missing.
    pub async fn wait_until_serving(
        &self,
        timeout: Duration,
        phase: &'static str,
    ) -> Result<NodeId, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            let missing = match self.serving().await {
                Ok(leader) => return Ok(leader),
                Err(missing) => missing,
            };
            if Instant::now() >= deadline {
                return Err(Error::NotRecovered { phase, missing });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// The first region's agreed leader if the cluster serves, else what
    /// is missing.
    async fn serving(&self) -> Result<NodeId, String> {
        let view = self.client.cluster_view().await;
        let silent: Vec<&str> = view
            .answers
            .iter()
            .filter(|(_, answer)| answer.is_err())
            .map(|(addr, _)| addr.as_str())
            .collect();
        if !silent.is_empty() {
            return Err(format!("no status from {}", silent.join(", ")));
        }
        let statuses: Vec<StatusResponse> = view
            .answers
            .iter()
            .filter_map(|(_, answer)| answer.as_ref().ok().cloned())
            .collect();
        let leader =
            flotilla_tests::cluster::leader::agreed_leader(self.endpoints.len(), &statuses)
                .ok_or("no leader of the first region agreed by a majority")?;
        let leaderless = leaderless_regions(&view);
        if !leaderless.is_empty() {
            return Err(format!("regions without a leader: {leaderless:?}"));
        }
        self.client
            .get(PROBE_KEY)
            .await
            .map_err(|err| format!("probe read: {err}"))?;
        Ok(leader)
    }
}

/// The regions of `view` that no node claims to lead in its own report.
fn leaderless_regions(view: &ClusterView) -> Vec<u64> {
    let claims = |node: u64, region_id: u64| {
        view.answers
            .iter()
            .filter_map(|(_, answer)| answer.as_ref().ok())
            .filter(|status| status.node_id == node)
            .flat_map(|status| &status.regions)
            .any(|report| {
                report.role == LEADER_ROLE
                    && report
                        .region
                        .as_ref()
                        .is_some_and(|region| region.id == region_id)
            })
    };
    view.regions
        .iter()
        .filter(|region| {
            !region
                .leader
                .is_some_and(|leader| claims(leader, region.region.id))
        })
        .map(|region| region.region.id)
        .collect()
}
