//! [`PlacementDriverClient`]: unary calls to the placement driver
//! (`flotilla.placement.Placement`): heartbeats, region and store metadata,
//! store states. Any node answers only if it is the placement leader;
//! others refuse with `NotLeader` naming it, and the client follows the
//! hint, else tries the next known node, with backoff, until the
//! operation's deadline.
//!
//! Every call here is safe to repeat: heartbeats replace what they report,
//! lookups change nothing, and a store state is set, not toggled.
//!
//! Guarantee: an `Ok` answer comes from a node that was the placement
//! leader when it answered.

use crate::backoff::Backoff;
use crate::classify::{classify, Next};
use crate::config::ClientConfig;
use crate::endpoint::canonical_addr;
use crate::error::{ClientError, Result};
use crate::router::ENDPOINTS_MAX;
use flotilla_proto::placementpb::placement_client::PlacementClient;
use flotilla_proto::placementpb::{
    GetAllStoresRequest, GetRegionByIdRequest, GetRegionRequest, GetStoreRequest,
    RegionHeartbeatRequest, RegionHeartbeatResponse, RegionInfo, ScanRegionsRequest,
    SetStoreStateRequest, Store, StoreHeartbeatRequest, StoreHeartbeatResponse, StoreState,
};
use std::future::Future;
use std::sync::{Mutex, MutexGuard, PoisonError};
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

/// Hint-following redirects taken back to back before backing off.
const REDIRECTS_WITHOUT_BACKOFF_MAX: u32 = 3;

/// A stub for one node's `Placement` service.
type PlacementStub = PlacementClient<Channel>;

/// Calls to the placement leader; cheap to share between tasks.
#[derive(Debug)]
pub struct PlacementDriverClient {
    config: ClientConfig,
    endpoints: Mutex<Endpoints>,
}

#[derive(Debug)]
struct Endpoints {
    known: Vec<(String, PlacementStub)>,
    /// Index of the node believed to lead.
    preferred: usize,
}

impl PlacementDriverClient {
    /// A client over `config.endpoints` (more are learned from hints).
    /// Connects lazily; fails only on a bad configuration.
    pub fn new(config: &ClientConfig) -> Result<PlacementDriverClient> {
        config.validate()?;
        let client = PlacementDriverClient {
            config: config.clone(),
            endpoints: Mutex::new(Endpoints {
                known: Vec::new(),
                preferred: 0,
            }),
        };
        for addr in &config.endpoints {
            client.learn(addr)?;
        }
        Ok(client)
    }

    /// Adds a node's client address to those tried (a no-op when known or
    /// when the list is full).
    pub fn add_endpoint(&self, addr: &str) -> Result<()> {
        self.learn(addr).map(|_| ())
    }

    /// The index of `addr`, learning it if new; `None` when the list is full.
    fn learn(&self, addr: &str) -> Result<Option<usize>> {
        let addr = canonical_addr(addr)?;
        let mut endpoints = self.lock();
        if let Some(index) = endpoints.known.iter().position(|(known, _)| *known == addr) {
            return Ok(Some(index));
        }
        if endpoints.known.len() >= ENDPOINTS_MAX {
            return Ok(None);
        }
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|err| ClientError::Config(format!("endpoint {addr:?}: {err}")))?
            .connect_timeout(self.config.connect_timeout)
            .tcp_nodelay(true)
            .connect_lazy();
        let stub = PlacementClient::new(channel)
            .max_decoding_message_size(self.config.message_bytes_max)
            .max_encoding_message_size(self.config.message_bytes_max);
        endpoints.known.push((addr, stub));
        Ok(Some(endpoints.known.len() - 1))
    }

    fn lock(&self) -> MutexGuard<'_, Endpoints> {
        // Every update is a single push or assignment: consistent even if a
        // holder panicked.
        self.endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The client address of the node last believed to lead.
    pub fn preferred_endpoint(&self) -> Option<String> {
        let endpoints = self.lock();
        endpoints
            .known
            .get(endpoints.preferred)
            .map(|(addr, _)| addr.clone())
    }

    /// Sends `request` through `call` until the placement leader answers,
    /// the answer is final, or the deadline passes.
    async fn call<M, R, F, Fut>(&self, request: M, call: F) -> Result<R>
    where
        M: Clone,
        F: Fn(PlacementStub, tonic::Request<M>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        let deadline = Instant::now() + self.config.operation_timeout;
        let mut backoff = Backoff::new(self.config.backoff_min, self.config.backoff_max);
        let mut redirects = 0;
        let mut last_failure = String::from("no attempt completed");
        loop {
            // As for KV calls: no attempt starts after the deadline, and one
            // started before it gets its whole timeout.
            if Instant::now() >= deadline {
                return Err(ClientError::Unavailable(format!(
                    "no placement leader answered within {:?}; last failure: {last_failure}",
                    self.config.operation_timeout
                )));
            }
            let attempt_timeout = self.config.request_timeout;
            let (index, addr, stub) = {
                let endpoints = self.lock();
                let (addr, stub) = &endpoints.known[endpoints.preferred];
                (endpoints.preferred, addr.clone(), stub.clone())
            };
            let mut attempt = tonic::Request::new(request.clone());
            attempt.set_timeout(attempt_timeout);
            let status = match tokio::time::timeout(attempt_timeout, call(stub, attempt)).await {
                Ok(Ok(response)) => return Ok(response.into_inner()),
                Ok(Err(status)) => status,
                Err(_) => tonic::Status::deadline_exceeded(format!(
                    "no answer within {attempt_timeout:?}"
                )),
            };
            let failure = classify(&status);
            last_failure = format!("{addr}: {}", failure.message);
            tracing::debug!(endpoint = %addr, cause = %failure.message, "placement call failed");
            let redirected = match failure.next {
                Next::GiveUp(error) => return Err(error),
                Next::FollowLeader(hint) => match self.learn(&hint.leader_addr).ok().flatten() {
                    Some(leader) if leader != index => {
                        self.lock().preferred = leader;
                        true
                    }
                    _ => false,
                },
                Next::RefreshRoute(_) | Next::TryNextEndpoint | Next::RetrySameEndpoint => false,
            };
            if redirected && redirects < REDIRECTS_WITHOUT_BACKOFF_MAX {
                redirects += 1;
                continue;
            }
            if !redirected {
                let mut endpoints = self.lock();
                if endpoints.preferred == index {
                    endpoints.preferred = (index + 1) % endpoints.known.len();
                }
            }
            redirects = 0;
            let pause = backoff
                .next_delay()
                .min(deadline.saturating_duration_since(Instant::now()));
            tokio::time::sleep(pause).await;
        }
    }

    /// Reports a store (registers it on first contact).
    pub async fn store_heartbeat(
        &self,
        request: StoreHeartbeatRequest,
    ) -> Result<StoreHeartbeatResponse> {
        self.call(
            request,
            |mut pd, r| async move { pd.store_heartbeat(r).await },
        )
        .await
    }

    /// Reports the regions a store leads.
    pub async fn region_heartbeat(
        &self,
        request: RegionHeartbeatRequest,
    ) -> Result<RegionHeartbeatResponse> {
        self.call(
            request,
            |mut pd, r| async move { pd.region_heartbeat(r).await },
        )
        .await
    }

    /// The region holding `key`, if one was reported.
    pub async fn get_region(&self, key: impl Into<Vec<u8>>) -> Result<Option<RegionInfo>> {
        let request = GetRegionRequest { key: key.into() };
        let response = self
            .call(request, |mut pd, r| async move { pd.get_region(r).await })
            .await?;
        Ok(response.region)
    }

    /// The region with this id, if one was reported.
    pub async fn get_region_by_id(&self, region_id: u64) -> Result<Option<RegionInfo>> {
        let request = GetRegionByIdRequest { region_id };
        let response = self
            .call(
                request,
                |mut pd, r| async move { pd.get_region_by_id(r).await },
            )
            .await?;
        Ok(response.region)
    }

    /// Up to `limit` regions (0: the server's maximum) overlapping
    /// `[start_key, end_key)` (empty end: unbounded), in key order.
    pub async fn scan_regions(
        &self,
        start_key: impl Into<Vec<u8>>,
        end_key: impl Into<Vec<u8>>,
        limit: u32,
    ) -> Result<Vec<RegionInfo>> {
        let request = ScanRegionsRequest {
            start_key: start_key.into(),
            end_key: end_key.into(),
            limit,
        };
        let response = self
            .call(request, |mut pd, r| async move { pd.scan_regions(r).await })
            .await?;
        Ok(response.regions)
    }

    /// One store, as registered and last reported.
    pub async fn get_store(&self, store_id: u64) -> Result<Option<Store>> {
        let request = GetStoreRequest { store_id };
        let response = self
            .call(request, |mut pd, r| async move { pd.get_store(r).await })
            .await?;
        Ok(response.store)
    }

    /// Every registered store, by id.
    pub async fn get_all_stores(&self) -> Result<Vec<Store>> {
        let response = self
            .call(GetAllStoresRequest {}, |mut pd, r| async move {
                pd.get_all_stores(r).await
            })
            .await?;
        Ok(response.stores)
    }

    /// Marks a store Offline (decommission) or Up again; returns it.
    pub async fn set_store_state(&self, store_id: u64, state: StoreState) -> Result<Option<Store>> {
        let request = SetStoreStateRequest {
            store_id,
            state: state.into(),
        };
        let response = self
            .call(
                request,
                |mut pd, r| async move { pd.set_store_state(r).await },
            )
            .await?;
        Ok(response.store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_proto::kvpb::{error_detail::Kind, ErrorDetail, NotLeader};
    use flotilla_proto::placementpb::placement_server::{Placement, PlacementServer};
    use flotilla_proto::placementpb::{
        GetAllStoresResponse, GetRegionResponse, GetStoreResponse, ScanRegionsResponse,
        SetStoreStateResponse, TsoRequest, TsoResponse,
    };
    use prost::Message as _;
    use std::pin::Pin;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;
    use tonic::{Request, Response, Status, Streaming};

    /// A node that either answers `GetAllStores` with one store or refuses
    /// everything with NotLeader naming `leader_addr`.
    struct FakeNode {
        leader_addr: Option<String>,
        calls: Arc<AtomicUsize>,
    }

    impl FakeNode {
        fn refuse(&self) -> Result<(), Status> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            match &self.leader_addr {
                None => Ok(()),
                Some(addr) => {
                    let detail = ErrorDetail {
                        kind: Some(Kind::NotLeader(NotLeader {
                            region_id: 2,
                            leader_node_id: 9,
                            leader_addr: addr.clone(),
                        })),
                    };
                    Err(Status::with_details(
                        tonic::Code::FailedPrecondition,
                        "not the placement leader",
                        detail.encode_to_vec().into(),
                    ))
                }
            }
        }
    }

    type Tso = Pin<Box<dyn futures::Stream<Item = Result<TsoResponse, Status>> + Send>>;

    #[tonic::async_trait]
    impl Placement for FakeNode {
        type TsoStream = Tso;
        async fn tso(&self, _: Request<Streaming<TsoRequest>>) -> Result<Response<Tso>, Status> {
            Err(Status::unimplemented("not in this test"))
        }
        async fn store_heartbeat(
            &self,
            _: Request<StoreHeartbeatRequest>,
        ) -> Result<Response<StoreHeartbeatResponse>, Status> {
            self.refuse()?;
            Ok(Response::new(StoreHeartbeatResponse::default()))
        }
        async fn region_heartbeat(
            &self,
            _: Request<RegionHeartbeatRequest>,
        ) -> Result<Response<RegionHeartbeatResponse>, Status> {
            self.refuse()?;
            Ok(Response::new(RegionHeartbeatResponse::default()))
        }
        async fn get_region(
            &self,
            _: Request<GetRegionRequest>,
        ) -> Result<Response<GetRegionResponse>, Status> {
            self.refuse()?;
            Ok(Response::new(GetRegionResponse::default()))
        }
        async fn get_region_by_id(
            &self,
            _: Request<GetRegionByIdRequest>,
        ) -> Result<Response<GetRegionResponse>, Status> {
            self.refuse()?;
            Ok(Response::new(GetRegionResponse::default()))
        }
        async fn scan_regions(
            &self,
            _: Request<ScanRegionsRequest>,
        ) -> Result<Response<ScanRegionsResponse>, Status> {
            self.refuse()?;
            Ok(Response::new(ScanRegionsResponse::default()))
        }
        async fn get_store(
            &self,
            _: Request<GetStoreRequest>,
        ) -> Result<Response<GetStoreResponse>, Status> {
            self.refuse()?;
            Ok(Response::new(GetStoreResponse::default()))
        }
        async fn get_all_stores(
            &self,
            _: Request<GetAllStoresRequest>,
        ) -> Result<Response<GetAllStoresResponse>, Status> {
            self.refuse()?;
            Ok(Response::new(GetAllStoresResponse {
                stores: vec![Store {
                    id: 1,
                    ..Store::default()
                }],
            }))
        }
        async fn set_store_state(
            &self,
            _: Request<SetStoreStateRequest>,
        ) -> Result<Response<SetStoreStateResponse>, Status> {
            self.refuse()?;
            Ok(Response::new(SetStoreStateResponse::default()))
        }
    }

    async fn fake_node(leader_addr: Option<String>) -> (String, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let service = PlacementServer::new(FakeNode {
            leader_addr,
            calls: calls.clone(),
        });
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                .await
        });
        (addr, calls)
    }

    fn config(endpoints: Vec<String>, operation_timeout: Duration) -> ClientConfig {
        ClientConfig {
            operation_timeout,
            request_timeout: Duration::from_millis(500),
            ..ClientConfig::new(endpoints)
        }
    }

    #[tokio::test]
    async fn a_not_leader_answer_is_followed_and_remembered() {
        let (leader, leader_calls) = fake_node(None).await;
        let (follower, follower_calls) = fake_node(Some(leader.clone())).await;
        let pd =
            PlacementDriverClient::new(&config(vec![follower], Duration::from_secs(3))).unwrap();
        let stores = pd.get_all_stores().await.unwrap();
        assert_eq!(stores.len(), 1);
        assert_eq!(pd.preferred_endpoint(), Some(leader));
        pd.get_all_stores().await.unwrap();
        assert_eq!(
            follower_calls.load(Ordering::SeqCst),
            1,
            "the hint is remembered"
        );
        assert_eq!(leader_calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn without_a_leader_the_call_fails_at_its_deadline_naming_the_cause() {
        // A node that names a leader nobody runs: every attempt fails.
        let dead = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().to_string()
        };
        let (follower, _) = fake_node(Some(dead)).await;
        let pd = PlacementDriverClient::new(&config(vec![follower], Duration::from_millis(400)))
            .unwrap();
        let started = Instant::now();
        let err = pd.get_all_stores().await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(3));
        assert!(
            matches!(&err, ClientError::Unavailable(m) if m.contains("no placement leader")),
            "{err}"
        );
    }
}
