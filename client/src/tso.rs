//! Timestamps from the cluster's timestamp oracle (`flotilla.placement.Placement/Tso`).
//!
//! Concurrent [`crate::Client::get_timestamp`] calls are batched: one
//! background task per client keeps one stream to the placement leader and
//! one request in flight on it; callers that arrive while a request is in
//! flight join the next one, which asks for as many timestamps as callers
//! are waiting (up to [`TSO_BATCH_MAX`]) and hands them out in arrival order.
//! A refused or broken stream is reopened — at the leader a `NotLeader`
//! names, else at the next known node — and the waiting callers are
//! retried there until their deadline.
//!
//! Guarantees: every timestamp a client returns is greater than every one
//! it returned before (checked on each response: a server answer that
//! breaks this is refused with an error, never handed out), so the calls of
//! one caller see strictly increasing timestamps and no two calls of one
//! client see the same one. Across clients, the server guarantees a
//! timestamp is greater than every timestamp handed out before its request
//! arrived.

use crate::backoff::Backoff;
use crate::classify::{classify, Next};
use crate::config::ClientConfig;
use crate::endpoint::canonical_addr;
use crate::error::{ClientError, Result};
use crate::router::ENDPOINTS_MAX;
use flotilla_proto::placementpb::placement_client::PlacementClient;
use flotilla_proto::placementpb::{TsoRequest, TsoResponse};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tonic::Streaming;

/// Bits of a [`Timestamp`] holding the logical counter (the wire format of
/// `placementpb.proto`).
pub const TIMESTAMP_LOGICAL_BITS: u32 = 18;
/// Timestamps one request asks for at most; more waiting callers wait for
/// the next request.
pub(crate) const TSO_BATCH_MAX: usize = 10_000;
/// Callers queued for the batching task at most; more wait to queue.
const WAITERS_QUEUED_MAX: usize = 65_536;
/// Hint-following redirects taken back to back before backing off.
const REDIRECTS_WITHOUT_BACKOFF_MAX: u32 = 3;

/// A timestamp from the cluster's oracle: `physical_ms << 18 | logical`, so
/// numeric order is time order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// Milliseconds since the Unix epoch, as the oracle's leader saw them
    /// (never behind any earlier timestamp's).
    pub fn physical_ms(self) -> u64 {
        self.0 >> TIMESTAMP_LOGICAL_BITS
    }

    /// The counter within the physical millisecond.
    pub fn logical(self) -> u64 {
        self.0 & ((1 << TIMESTAMP_LOGICAL_BITS) - 1)
    }
}

/// One caller waiting for its timestamp. Its deadline is set when the
/// batching task takes it from the queue (one clock read per batch, not
/// per caller): the queue is emptied before every attempt, so that is at
/// most one attempt after the call.
#[derive(Debug)]
struct Waiter {
    deadline: Option<Instant>,
    reply: oneshot::Sender<Result<Timestamp>>,
}

/// The handle callers use; the batching task runs until it is dropped.
#[derive(Debug)]
pub(crate) struct TsoClient {
    waiters: mpsc::Sender<Waiter>,
}

impl TsoClient {
    /// Starts the batching task. Must be called inside a tokio runtime.
    pub fn start(config: &ClientConfig) -> Result<TsoClient> {
        let mut endpoints: Vec<String> = Vec::new();
        for raw in &config.endpoints {
            let addr = canonical_addr(raw)?;
            if !endpoints.contains(&addr) {
                endpoints.push(addr);
            }
        }
        let (waiters, queue) = mpsc::channel(WAITERS_QUEUED_MAX);
        let batcher = Batcher {
            queue,
            endpoints,
            current: 0,
            stream: None,
            last_returned: 0,
            last_failure: String::new(),
            redirects_in_a_row: 0,
            operation_timeout: config.operation_timeout,
            request_timeout: config.request_timeout,
            connect_timeout: config.connect_timeout,
            backoff_min: config.backoff_min,
            backoff_max: config.backoff_max,
        };
        tokio::spawn(batcher.run());
        Ok(TsoClient { waiters })
    }

    /// One timestamp, greater than every one this client returned before.
    /// Answered within the operation timeout plus at most two attempts: the
    /// batching task fails callers whose deadline passed before each attempt,
    /// and every attempt is bounded (so no timer per call is needed).
    pub async fn get_timestamp(&self) -> Result<Timestamp> {
        let (reply, answer) = oneshot::channel();
        let stopped = || ClientError::Unavailable("the timestamp batching task stopped".into());
        self.waiters
            .send(Waiter {
                deadline: None,
                reply,
            })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// An open `Tso` stream to one node.
struct OpenStream {
    requests: futures::channel::mpsc::Sender<TsoRequest>,
    responses: Streaming<TsoResponse>,
}

/// Why one attempt failed and what to do next.
enum AttemptError {
    /// Try again (at whatever endpoint is current now), after a backoff
    /// unless `now`.
    Retry { now: bool },
    /// Final for the waiting callers.
    GiveUp(GiveUp),
}

/// A final answer for every caller of a batch. (`ClientError` is not
/// `Clone`; this makes one per caller.)
#[derive(Clone, Debug)]
enum GiveUp {
    InvalidArgument(String),
    Server { code: tonic::Code, message: String },
}

impl GiveUp {
    fn from_error(error: ClientError) -> GiveUp {
        match error {
            ClientError::InvalidArgument(message) => GiveUp::InvalidArgument(message),
            ClientError::Server { code, message } => GiveUp::Server { code, message },
            other => GiveUp::Server {
                code: tonic::Code::Unknown,
                message: other.to_string(),
            },
        }
    }

    fn to_error(&self) -> ClientError {
        match self {
            GiveUp::InvalidArgument(message) => ClientError::InvalidArgument(message.clone()),
            GiveUp::Server { code, message } => ClientError::Server {
                code: *code,
                message: message.clone(),
            },
        }
    }
}

/// The batching task: the waiting callers, the stream, and the last
/// timestamp handed out.
struct Batcher {
    queue: mpsc::Receiver<Waiter>,
    /// Canonical addresses: the configured ones, then learned leaders.
    endpoints: Vec<String>,
    current: usize,
    stream: Option<OpenStream>,
    /// The largest timestamp handed out (0: none yet).
    last_returned: u64,
    /// Why the last attempt failed, for callers that reach their deadline.
    last_failure: String,
    redirects_in_a_row: u32,
    operation_timeout: Duration,
    request_timeout: Duration,
    connect_timeout: Duration,
    backoff_min: Duration,
    backoff_max: Duration,
}

impl Batcher {
    async fn run(mut self) {
        while let Some(first) = self.queue.recv().await {
            let mut batch = vec![first];
            let mut backoff = Backoff::new(self.backoff_min, self.backoff_max);
            loop {
                self.join_waiting(&mut batch);
                self.expire(&mut batch);
                if batch.is_empty() {
                    break;
                }
                let count = u32::try_from(batch.len()).unwrap_or(u32::MAX);
                match self.request(count).await {
                    Ok(first) => {
                        for (offset, waiter) in (0u64..).zip(batch.drain(..)) {
                            // A caller that gave up meanwhile leaves a gap.
                            let _ = waiter.reply.send(Ok(Timestamp(first + offset)));
                        }
                        break;
                    }
                    Err(AttemptError::Retry { now: true }) => {}
                    Err(AttemptError::Retry { now: false }) => {
                        self.redirects_in_a_row = 0;
                        let until = batch.iter().filter_map(|w| w.deadline).min();
                        let pause = Instant::now() + backoff.next_delay();
                        tokio::time::sleep_until(until.map_or(pause, |d| d.min(pause))).await;
                    }
                    Err(AttemptError::GiveUp(give_up)) => {
                        for waiter in batch.drain(..) {
                            let _ = waiter.reply.send(Err(give_up.to_error()));
                        }
                        break;
                    }
                }
            }
        }
    }

    /// Callers that arrived while no request was in flight join the batch;
    /// every caller gets its deadline.
    fn join_waiting(&mut self, batch: &mut Vec<Waiter>) {
        while batch.len() < TSO_BATCH_MAX {
            match self.queue.try_recv() {
                Ok(waiter) => batch.push(waiter),
                Err(_) => break,
            }
        }
        let deadline = Instant::now() + self.operation_timeout;
        for waiter in batch.iter_mut() {
            waiter.deadline.get_or_insert(deadline);
        }
    }

    /// Fails the callers whose deadline passed, with the last failure, and
    /// drops those that stopped waiting.
    fn expire(&mut self, batch: &mut Vec<Waiter>) {
        let now = Instant::now();
        let (expired, waiting): (Vec<Waiter>, Vec<Waiter>) = batch
            .drain(..)
            .filter(|w| !w.reply.is_closed())
            .partition(|w| w.deadline.is_some_and(|deadline| deadline <= now));
        *batch = waiting;
        for waiter in expired {
            let _ = waiter.reply.send(Err(ClientError::Unavailable(format!(
                "no timestamp before the deadline; last failure: {}",
                self.last_failure
            ))));
        }
    }

    /// Asks for `count` timestamps on the open stream (opening one first if
    /// needed); returns the first.
    async fn request(&mut self, count: u32) -> Result<u64, AttemptError> {
        let mut stream = match self.stream.take() {
            Some(stream) => stream,
            None => self.open().await?,
        };
        // One request in flight per stream: there is always room.
        if stream.requests.try_send(TsoRequest { count }).is_err() {
            return Err(self.failed("the timestamp stream closed".into(), true));
        }
        let response =
            match tokio::time::timeout(self.request_timeout, stream.responses.message()).await {
                Err(_) => {
                    return Err(self.failed(
                        format!("no timestamps within {:?}", self.request_timeout),
                        true,
                    ))
                }
                Ok(Ok(Some(response))) => response,
                Ok(Ok(None)) => {
                    return Err(self.failed("the server ended the timestamp stream".into(), true))
                }
                Ok(Err(status)) => return Err(self.refused(&status)),
            };
        let first = self.check(count, &response)?;
        self.stream = Some(stream);
        self.redirects_in_a_row = 0;
        Ok(first)
    }

    /// Checks a response before anything of it is handed out: the count
    /// asked for, all above everything returned before.
    fn check(&mut self, count: u32, response: &TsoResponse) -> Result<u64, AttemptError> {
        let last = response.first.checked_add(u64::from(count) - 1);
        match last {
            Some(last) if response.count == count && response.first > self.last_returned => {
                self.last_returned = last;
                Ok(response.first)
            }
            _ => {
                let message = format!(
                    "the timestamp oracle answered {} timestamps from {} to a request for {count}, after {} was handed out: refusing them",
                    response.count, response.first, self.last_returned
                );
                tracing::error!(%message);
                Err(AttemptError::GiveUp(GiveUp::Server {
                    code: tonic::Code::Internal,
                    message,
                }))
            }
        }
    }

    /// Opens a stream to the current endpoint.
    async fn open(&mut self) -> Result<OpenStream, AttemptError> {
        let addr = self.endpoints[self.current].clone();
        let channel = match Endpoint::from_shared(format!("http://{addr}")) {
            Ok(endpoint) => endpoint
                .connect_timeout(self.connect_timeout)
                .tcp_nodelay(true)
                .connect_lazy(),
            Err(err) => return Err(self.failed(format!("endpoint {addr}: {err}"), false)),
        };
        let (requests, outbound) = futures::channel::mpsc::channel(1);
        let mut client = PlacementClient::<Channel>::new(channel);
        match tokio::time::timeout(self.request_timeout, client.tso(outbound)).await {
            Err(_) => Err(self.failed(
                format!(
                    "{addr} did not open a timestamp stream within {:?}",
                    self.request_timeout
                ),
                true,
            )),
            Ok(Err(status)) => Err(self.refused(&status)),
            Ok(Ok(response)) => Ok(OpenStream {
                requests,
                responses: response.into_inner(),
            }),
        }
    }

    /// A failed attempt: the stream is gone; try the next endpoint.
    fn failed(&mut self, why: String, move_on: bool) -> AttemptError {
        tracing::debug!(endpoint = %self.endpoints[self.current], %why, "timestamp attempt failed");
        self.last_failure = format!("{}: {why}", self.endpoints[self.current]);
        if move_on {
            self.current = (self.current + 1) % self.endpoints.len();
        }
        AttemptError::Retry { now: false }
    }

    /// An attempt the server (or the transport) ended with `status`.
    fn refused(&mut self, status: &tonic::Status) -> AttemptError {
        let failure = classify(status);
        match failure.next {
            Next::GiveUp(error) => AttemptError::GiveUp(GiveUp::from_error(error)),
            Next::FollowLeader(hint) => match self.learn(&hint.leader_addr) {
                Some(leader) if leader != self.current => {
                    self.last_failure = failure.message;
                    self.current = leader;
                    let now = self.redirects_in_a_row < REDIRECTS_WITHOUT_BACKOFF_MAX;
                    self.redirects_in_a_row += 1;
                    AttemptError::Retry { now }
                }
                _ => self.failed(failure.message, true),
            },
            Next::RefreshRoute(_) | Next::TryNextEndpoint | Next::RetrySameEndpoint => {
                self.failed(failure.message, true)
            }
        }
    }

    /// The index of `addr` in the endpoint list, learning it if new; `None`
    /// when it is empty, malformed, or the list is full.
    fn learn(&mut self, addr: &str) -> Option<usize> {
        if addr.is_empty() {
            return None;
        }
        let addr = canonical_addr(addr).ok()?;
        if let Some(index) = self.endpoints.iter().position(|known| *known == addr) {
            return Some(index);
        }
        if self.endpoints.len() >= ENDPOINTS_MAX {
            return None;
        }
        self.endpoints.push(addr);
        Some(self.endpoints.len() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_proto::kvpb::{error_detail::Kind, ErrorDetail, NotLeader};
    use flotilla_proto::placementpb as pb;
    use flotilla_proto::placementpb::placement_server::{Placement, PlacementServer};
    use prost::Message as _;
    use std::pin::Pin;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use tonic::{Request, Response, Status};

    /// How a fake node answers timestamp requests.
    #[derive(Clone, Debug)]
    enum Behaviour {
        /// Hands out consecutive timestamps from a shared counter.
        Serve,
        /// Ends every stream with NotLeader naming this address.
        NotLeader(String),
        /// Answers with timestamps that go backwards.
        Backwards,
    }

    struct FakeOracle {
        behaviour: Behaviour,
        next: Arc<AtomicU64>,
        /// The count of every request served.
        counts: Mutex<Vec<u32>>,
    }

    /// The gRPC face of a [`FakeOracle`].
    struct FakePlacement(Arc<FakeOracle>);

    type Responses = Pin<Box<dyn futures::Stream<Item = Result<TsoResponse, Status>> + Send>>;

    #[tonic::async_trait]
    impl Placement for FakePlacement {
        type TsoStream = Responses;

        async fn tso(
            &self,
            request: Request<Streaming<TsoRequest>>,
        ) -> Result<Response<Responses>, Status> {
            if let Behaviour::NotLeader(leader_addr) = &self.0.behaviour {
                let detail = ErrorDetail {
                    kind: Some(Kind::NotLeader(NotLeader {
                        region_id: 2,
                        leader_node_id: 7,
                        leader_addr: leader_addr.clone(),
                    })),
                };
                return Err(Status::with_details(
                    tonic::Code::FailedPrecondition,
                    "not the leader",
                    detail.encode_to_vec().into(),
                ));
            }
            let oracle = self.0.clone();
            let responses = futures::stream::unfold(request.into_inner(), move |mut inbound| {
                let oracle = oracle.clone();
                async move {
                    let request = inbound.message().await.ok()??;
                    oracle.counts.lock().unwrap().push(request.count);
                    let first = match oracle.behaviour {
                        Behaviour::Backwards => 5,
                        _ => oracle
                            .next
                            .fetch_add(u64::from(request.count), Ordering::SeqCst),
                    };
                    let response = TsoResponse {
                        first,
                        count: request.count,
                    };
                    Some((Ok(response), inbound))
                }
            });
            Ok(Response::new(Box::pin(responses)))
        }

        // The metadata calls are not part of these tests.
        async fn store_heartbeat(
            &self,
            _: Request<pb::StoreHeartbeatRequest>,
        ) -> Result<Response<pb::StoreHeartbeatResponse>, Status> {
            Err(Status::unimplemented("timestamps only"))
        }
        async fn region_heartbeat(
            &self,
            _: Request<pb::RegionHeartbeatRequest>,
        ) -> Result<Response<pb::RegionHeartbeatResponse>, Status> {
            Err(Status::unimplemented("timestamps only"))
        }
        async fn get_region(
            &self,
            _: Request<pb::GetRegionRequest>,
        ) -> Result<Response<pb::GetRegionResponse>, Status> {
            Err(Status::unimplemented("timestamps only"))
        }
        async fn get_region_by_id(
            &self,
            _: Request<pb::GetRegionByIdRequest>,
        ) -> Result<Response<pb::GetRegionResponse>, Status> {
            Err(Status::unimplemented("timestamps only"))
        }
        async fn scan_regions(
            &self,
            _: Request<pb::ScanRegionsRequest>,
        ) -> Result<Response<pb::ScanRegionsResponse>, Status> {
            Err(Status::unimplemented("timestamps only"))
        }
        async fn get_store(
            &self,
            _: Request<pb::GetStoreRequest>,
        ) -> Result<Response<pb::GetStoreResponse>, Status> {
            Err(Status::unimplemented("timestamps only"))
        }
        async fn get_all_stores(
            &self,
            _: Request<pb::GetAllStoresRequest>,
        ) -> Result<Response<pb::GetAllStoresResponse>, Status> {
            Err(Status::unimplemented("timestamps only"))
        }
        async fn set_store_state(
            &self,
            _: Request<pb::SetStoreStateRequest>,
        ) -> Result<Response<pb::SetStoreStateResponse>, Status> {
            Err(Status::unimplemented("timestamps only"))
        }
    }

    async fn fake_node(behaviour: Behaviour) -> (String, Arc<FakeOracle>) {
        let oracle = Arc::new(FakeOracle {
            behaviour,
            next: Arc::new(AtomicU64::new(1_000)),
            counts: Mutex::new(Vec::new()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let service = PlacementServer::new(FakePlacement(oracle.clone()));
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                .await
        });
        (addr, oracle)
    }

    fn config(endpoints: Vec<String>) -> ClientConfig {
        ClientConfig {
            operation_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_millis(500),
            ..ClientConfig::new(endpoints)
        }
    }

    #[test]
    fn timestamps_split_into_physical_and_logical_parts() {
        let ts = Timestamp(1_700_000_000_000 << TIMESTAMP_LOGICAL_BITS | 42);
        assert_eq!(ts.physical_ms(), 1_700_000_000_000);
        assert_eq!(ts.logical(), 42);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_callers_share_requests_and_get_distinct_increasing_timestamps() {
        let (addr, oracle) = fake_node(Behaviour::Serve).await;
        let tso = Arc::new(TsoClient::start(&config(vec![addr])).unwrap());
        const CALLERS: usize = 64;
        const CALLS: usize = 50;
        let tasks: Vec<_> = (0..CALLERS)
            .map(|_| {
                let tso = tso.clone();
                tokio::spawn(async move {
                    let mut seen = Vec::with_capacity(CALLS);
                    for _ in 0..CALLS {
                        seen.push(tso.get_timestamp().await.unwrap());
                    }
                    seen
                })
            })
            .collect();
        let mut all = Vec::new();
        for task in tasks {
            let seen = task.await.unwrap();
            assert!(
                seen.windows(2).all(|w| w[0] < w[1]),
                "per caller increasing"
            );
            all.extend(seen);
        }
        let total = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), total, "no timestamp handed out twice");
        let counts = oracle.counts.lock().unwrap();
        assert_eq!(counts.iter().map(|&c| c as usize).sum::<usize>(), total);
        assert!(
            counts.len() < total,
            "{} requests for {total} timestamps: no batching",
            counts.len()
        );
    }

    #[tokio::test]
    async fn a_not_leader_answer_is_followed_to_the_named_leader() {
        let (leader, oracle) = fake_node(Behaviour::Serve).await;
        let (follower, _) = fake_node(Behaviour::NotLeader(leader.clone())).await;
        let tso = TsoClient::start(&config(vec![follower])).unwrap();
        let first = tso.get_timestamp().await.unwrap();
        let second = tso.get_timestamp().await.unwrap();
        assert!(second > first);
        assert_eq!(oracle.counts.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn an_unreachable_node_is_skipped() {
        let (alive, _) = fake_node(Behaviour::Serve).await;
        // A port nobody listens on.
        let dead = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().to_string()
        };
        let tso = TsoClient::start(&config(vec![dead, alive])).unwrap();
        assert!(tso.get_timestamp().await.is_ok());
    }

    #[tokio::test]
    async fn timestamps_that_go_backwards_are_refused_not_returned() {
        let (addr, _) = fake_node(Behaviour::Backwards).await;
        let tso = TsoClient::start(&config(vec![addr])).unwrap();
        // The first answer (5) is above nothing handed out yet; the second
        // (5 again) is not above it.
        assert_eq!(tso.get_timestamp().await.unwrap(), Timestamp(5));
        let refused = tso.get_timestamp().await;
        assert!(
            matches!(
                &refused,
                Err(ClientError::Server {
                    code: tonic::Code::Internal,
                    ..
                })
            ),
            "{refused:?}"
        );
    }

    #[tokio::test]
    async fn callers_fail_at_their_deadline_with_the_last_failure() {
        let dead = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().to_string()
        };
        let tso = TsoClient::start(&ClientConfig {
            operation_timeout: Duration::from_millis(300),
            ..config(vec![dead.clone()])
        })
        .unwrap();
        let started = Instant::now();
        let err = tso.get_timestamp().await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(
            matches!(&err, ClientError::Unavailable(m) if m.contains(&dead)),
            "{err}"
        );
    }
}
