//! The harness's own connection to a cluster: who leads (by the nodes' own
//! Status reports, as `flotilla_tests::cluster::leader` judges them),
//! whether the cluster serves linearizable reads again after faults, and
//! the regions (splitting them, counting those that hold a workload's keys).

use super::NodeId;
use crate::workload::KeySpace;
use crate::Error;
use client::{Client, ClientConfig, ClientError, Region};
use std::time::Duration;
use tokio::time::Instant;

/// A key no workload uses, read to prove the cluster serves.
const PROBE_KEY: &[u8] = b"jepsen-probe";
/// Pause between availability probes.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

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
    endpoints: Vec<String>,
}

impl Control {
    pub async fn connect(endpoints: Vec<String>) -> Result<Control, Error> {
        let client = Client::connect(client_config(endpoints.clone())).await?;
        Ok(Control { client, endpoints })
    }

    /// The leader a majority agrees on, if any (nodes that do not answer
    /// count as disagreeing).
    pub async fn leader(&self) -> Option<NodeId> {
        let replies =
            futures::future::join_all(self.endpoints.iter().map(|e| self.client.status(e))).await;
        let statuses: Vec<_> = replies.into_iter().filter_map(Result::ok).collect();
        flotilla_tests::cluster::leader::agreed_leader(self.endpoints.len(), &statuses)
    }

    /// Splits the region holding `key` at `key` (see
    /// [`Client::split_region`]); gives up at the client's operation
    /// deadline.
    pub async fn split_region(&self, key: &[u8]) -> Result<(Region, Region), ClientError> {
        self.client.split_region(key).await
    }

    /// How many regions of the cluster's merged view hold keys of `space`.
    pub async fn regions_holding(&self, space: KeySpace) -> usize {
        let view = self.client.cluster_view().await;
        view.regions
            .iter()
            .filter(|view| space.overlaps(&view.region.start_key, &view.region.end_key))
            .count()
    }

    /// Waits until a majority agrees on a leader and a linearizable read
    /// succeeds, for at most `timeout`; returns the leader.
    pub async fn wait_until_serving(
        &self,
        timeout: Duration,
        phase: &'static str,
    ) -> Result<NodeId, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(leader) = self.leader().await {
                if self.client.get(PROBE_KEY).await.is_ok() {
                    return Ok(leader);
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::NotRecovered { phase });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}
