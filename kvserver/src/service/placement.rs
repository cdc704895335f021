//! The `flotilla.placement.Placement` service: the timestamp oracle over
//! gRPC, run by the protocol in `placement::tso_leader` against this node's
//! store, and the metadata calls (heartbeats, regions, stores), answered by
//! the node's [`PlacementDriver`] when it is the placement leader.
//!
//! Every stream hands its requests to one task per node, which answers them
//! in rounds: it takes every request that has arrived, runs one round of the
//! protocol (a linearizable read of the window key through the node's
//! `StoreRouter`, and a claim or renewal when needed), then allocates each
//! request its timestamps in arrival order. Requests arriving meanwhile wait
//! for the next round, so a read is shared only by requests that arrived
//! before it was issued. Only the leader of the system region can complete
//! the read: any other node answers with the store's NotLeader, which names
//! the leader's client address (`error_status::to_status`), and ends the
//! stream.
//!
//! Guarantee: a response is sent only after a read issued after its request
//! arrived showed this node's own window; its timestamps are greater than
//! every timestamp any node handed out before the request arrived.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use flotilla_proto::placementpb as pb;
use flotilla_proto::placementpb::placement_server::Placement;
use flotilla_proto::placementpb::{TsoRequest, TsoResponse};
use futures::Stream;
use placement::tso::{TimestampBatch, LOGICAL_PER_MS};
use placement::tso_leader::{Refusal, Step, TsoLeader};
use raftstore::command::{RequestHeader, WriteId};
use raftstore::StoreRouter;
use tokio::sync::{mpsc, oneshot};
use tonic::{Request, Response, Status, Streaming};

use crate::error_status::to_status;
use crate::members::Members;
use crate::placement_driver::PlacementDriver;

/// Requests waiting for the timestamp task, from every stream together;
/// streams wait when it is full.
const CALLS_QUEUED_MAX: usize = 4096;
/// Requests one round answers at most; the rest wait for the next round.
const ROUND_CALLS_MAX: usize = 4096;

/// One stream request waiting for its timestamps.
struct TsoCall {
    count: u32,
    reply: oneshot::Sender<Result<TimestampBatch, Status>>,
}

/// The gRPC face of the node's timestamp task and placement driver.
pub struct PlacementService {
    calls: mpsc::Sender<TsoCall>,
    driver: Arc<PlacementDriver>,
}

impl PlacementService {
    /// Starts this node's timestamp task; it runs until every handle to the
    /// service is gone. Must be called inside a tokio runtime.
    pub fn start(
        node_id: u64,
        router: StoreRouter,
        members: Members,
        driver: Arc<PlacementDriver>,
    ) -> PlacementService {
        let (calls, queue) = mpsc::channel(CALLS_QUEUED_MAX);
        let task = TsoTask {
            leader: TsoLeader::new(node_id),
            router,
            members,
            queue,
        };
        tokio::spawn(task.run());
        PlacementService { calls, driver }
    }
}

/// Answers one stream request: its timestamps, or the status ending the stream.
async fn answer(calls: &mpsc::Sender<TsoCall>, count: u32) -> Result<TsoResponse, Status> {
    if count == 0 || u64::from(count) > LOGICAL_PER_MS {
        return Err(Status::invalid_argument(format!(
            "a timestamp request asks for 1 to {LOGICAL_PER_MS} timestamps, not {count}"
        )));
    }
    let started = Instant::now();
    let (reply, answered) = oneshot::channel();
    let gone = || {
        Status::unavailable("this node's timestamp service is shutting down; retry on another node")
    };
    calls
        .send(TsoCall { count, reply })
        .await
        .map_err(|_| gone())?;
    let result = answered.await.map_err(|_| gone())?;
    crate::metrics::observe_request("tso", result.is_ok(), started);
    let batch = result?;
    debug_assert_eq!(batch.count, count);
    Ok(TsoResponse {
        first: batch.first.0,
        count: batch.count,
    })
}

type TsoResponses = Pin<Box<dyn Stream<Item = Result<TsoResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Placement for PlacementService {
    type TsoStream = TsoResponses;

    async fn tso(
        &self,
        request: Request<Streaming<TsoRequest>>,
    ) -> Result<Response<Self::TsoStream>, Status> {
        let inbound = request.into_inner();
        // One request at a time per stream, so responses keep request
        // order; the first failure ends the stream.
        let responses =
            futures::stream::unfold(Some((inbound, self.calls.clone())), |open| async move {
                let (mut inbound, calls) = open?;
                let request = match inbound.message().await {
                    Ok(Some(request)) => request,
                    Ok(None) => return None,
                    Err(status) => {
                        tracing::debug!(%status, "timestamp stream broke off");
                        return None;
                    }
                };
                match answer(&calls, request.count).await {
                    Ok(response) => Some((Ok(response), Some((inbound, calls)))),
                    Err(status) => Some((Err(status), None)),
                }
            });
        Ok(Response::new(Box::pin(responses)))
    }

    async fn store_heartbeat(
        &self,
        request: Request<pb::StoreHeartbeatRequest>,
    ) -> Result<Response<pb::StoreHeartbeatResponse>, Status> {
        let response = self.driver.store_heartbeat(request.into_inner()).await?;
        Ok(Response::new(response))
    }

    async fn region_heartbeat(
        &self,
        request: Request<pb::RegionHeartbeatRequest>,
    ) -> Result<Response<pb::RegionHeartbeatResponse>, Status> {
        Ok(Response::new(
            self.driver.region_heartbeat(request.into_inner())?,
        ))
    }

    async fn get_region(
        &self,
        request: Request<pb::GetRegionRequest>,
    ) -> Result<Response<pb::GetRegionResponse>, Status> {
        Ok(Response::new(
            self.driver.get_region(&request.into_inner().key)?,
        ))
    }

    async fn get_region_by_id(
        &self,
        request: Request<pb::GetRegionByIdRequest>,
    ) -> Result<Response<pb::GetRegionResponse>, Status> {
        Ok(Response::new(
            self.driver
                .get_region_by_id(request.into_inner().region_id)?,
        ))
    }

    async fn scan_regions(
        &self,
        request: Request<pb::ScanRegionsRequest>,
    ) -> Result<Response<pb::ScanRegionsResponse>, Status> {
        Ok(Response::new(
            self.driver.scan_regions(&request.into_inner())?,
        ))
    }

    async fn get_store(
        &self,
        request: Request<pb::GetStoreRequest>,
    ) -> Result<Response<pb::GetStoreResponse>, Status> {
        Ok(Response::new(
            self.driver.get_store(request.into_inner().store_id)?,
        ))
    }

    async fn get_all_stores(
        &self,
        _request: Request<pb::GetAllStoresRequest>,
    ) -> Result<Response<pb::GetAllStoresResponse>, Status> {
        Ok(Response::new(self.driver.get_all_stores()?))
    }

    async fn set_store_state(
        &self,
        request: Request<pb::SetStoreStateRequest>,
    ) -> Result<Response<pb::SetStoreStateResponse>, Status> {
        let response = self.driver.set_store_state(request.into_inner()).await?;
        Ok(Response::new(response))
    }
}

/// The node's one timestamp task: the protocol state and its store.
struct TsoTask {
    leader: TsoLeader,
    router: StoreRouter,
    members: Members,
    queue: mpsc::Receiver<TsoCall>,
}

impl TsoTask {
    async fn run(mut self) {
        while let Some(first) = self.queue.recv().await {
            let mut round = vec![first];
            while round.len() < ROUND_CALLS_MAX {
                match self.queue.try_recv() {
                    Ok(call) => round.push(call),
                    Err(_) => break,
                }
            }
            self.serve_round(round).await;
        }
    }

    /// One round: confirm (or take) ownership with a read issued now, after
    /// every call of the round arrived, then answer the calls in order.
    async fn serve_round(&mut self, calls: Vec<TsoCall>) {
        let first_step = self.leader.begin_round();
        let mut refused = self.drive(first_step).await.err();
        for call in calls {
            let answer = match &refused {
                Some(status) => Err(status.clone()),
                None => self.allocate(call.count).await,
            };
            if let Err(status) = &answer {
                refused = Some(status.clone());
            }
            // The stream may be gone; its timestamps are simply not used.
            let _ = call.reply.send(answer);
        }
    }

    async fn allocate(&mut self, count: u32) -> Result<TimestampBatch, Status> {
        loop {
            match self.leader.allocate(count, now_ms()) {
                Ok(batch) => return Ok(batch),
                Err(step) => self.drive(step).await?,
            }
        }
    }

    /// Executes the protocol's steps until it serves or refuses.
    async fn drive(&mut self, mut step: Step) -> Result<(), Status> {
        // Region 0: the store routes by key to the region holding the window.
        let header = RequestHeader::default();
        loop {
            step = match step {
                Step::Serve => return Ok(()),
                Step::Refuse(refusal) => return Err(self.status(refusal)),
                Step::ReadWindow => {
                    let read = self.router.read(header, TsoLeader::read_op()).await;
                    self.leader.window_read(read, now_ms())
                }
                Step::SwapWindow(swap) => {
                    // Client id 0: the swap's expected value, not the session
                    // table, decides whether a retry applies.
                    let written = self
                        .router
                        .write(header, WriteId::default(), 0, swap.op())
                        .await;
                    self.leader.window_swapped(swap, written, now_ms())
                }
            };
        }
    }

    fn status(&self, refusal: Refusal) -> Status {
        match refusal {
            Refusal::Store(err) => to_status(err, &self.members),
            Refusal::Contended => Status::unavailable(
                "the timestamp window changed hands repeatedly during one round; retry",
            ),
            Refusal::BadCount(err) => Status::invalid_argument(err.to_string()),
            Refusal::Malformed(err) => Status::internal(err.to_string()),
            Refusal::Unexpected(what) => Status::internal(what),
        }
    }
}

/// The wall clock in ms since the Unix epoch (0 for a clock set before it:
/// the oracle never goes backwards whatever the clock says).
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_client_knows_the_reserved_prefix() {
        assert_eq!(
            client::SYSTEM_KEY_PREFIX,
            placement::system_keys::SYSTEM_KEY_PREFIX
        );
    }

    #[test]
    fn the_client_reads_timestamps_in_the_layout_the_oracle_writes() {
        assert_eq!(client::TIMESTAMP_LOGICAL_BITS, placement::tso::LOGICAL_BITS);
        let ts = placement::tso::Timestamp::new(1_700_000_000_000, 7);
        let seen = client::Timestamp(ts.0);
        assert_eq!(
            (seen.physical_ms(), seen.logical()),
            (ts.physical_ms(), ts.logical())
        );
    }
}
