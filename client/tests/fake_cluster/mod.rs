//! An in-process fake multi-region cluster for the client's routing tests:
//! nodes sharing one keyspace (an ordered map) cut into regions, each led by
//! one node. Every node checks a request as a real one does — the region its
//! header names (region id 0: the region holding its first key), that node's
//! leadership, the epoch, that the keys lie inside the region — and refuses
//! with the same error details (NotLeader with the leader's address,
//! EpochNotMatch with the current regions, RegionNotFound). Scans are clamped
//! to the region. Tests split regions (at once, or just before the n-th scan
//! arrives, to split under a running scan), move leaders, stop nodes (they
//! then answer Unavailable), and
//! read every request each node received.

use client::{Client, ClientConfig};
use flotilla_proto::kvpb::error_detail::Kind;
use flotilla_proto::kvpb::kv_server::{Kv, KvServer};
use flotilla_proto::kvpb::*;
use prost::Message;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tonic::{Code, Request, Response, Status};

/// One request a node received (status requests are only counted).
#[derive(Clone, Debug)]
pub struct Received {
    pub node: u64,
    pub method: &'static str,
    pub header: RequestHeader,
    /// The request's keys; for range requests and scans, start and end.
    pub keys: Vec<Vec<u8>>,
    /// Why the node refused it (`NotLeader`, `EpochNotMatch`,
    /// `RegionNotFound`); `None` if it was served.
    pub refused: Option<&'static str>,
}

impl Received {
    /// The keys as text.
    pub fn key_strings(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|key| String::from_utf8(key.clone()).unwrap())
            .collect()
    }
}

/// A split to perform just before the `at_scan`-th scan request (counted
/// from 1, over all nodes) is handled.
#[derive(Clone, Debug)]
pub struct PlannedSplit {
    pub at_scan: u64,
    pub split_key: Vec<u8>,
    pub new_region_id: u64,
    pub new_leader: u64,
}

#[derive(Debug)]
struct FakeRegion {
    region: Region,
    leader: u64,
}

#[derive(Debug, Default)]
struct ClusterState {
    /// Sorted by start key, covering the keyspace.
    regions: Vec<FakeRegion>,
    data: BTreeMap<Vec<u8>, Vec<u8>>,
    addrs: HashMap<u64, String>,
    received: Vec<Received>,
    status_calls: u64,
    scans: u64,
    planned_split: Option<PlannedSplit>,
    /// Nodes that answer everything with Unavailable, as a node that is
    /// shutting down does.
    stopped: HashSet<u64>,
}

/// A running fake cluster.
pub struct FakeCluster {
    state: Arc<Mutex<ClusterState>>,
    servers: Vec<tokio::task::JoinHandle<()>>,
    pub addrs: HashMap<u64, String>,
}

impl Drop for FakeCluster {
    fn drop(&mut self) {
        for server in &self.servers {
            server.abort();
        }
    }
}

/// A region `[start, end)` at epoch version 1, replicated on nodes 1..=3.
pub fn region(id: u64, start: &str, end: &str) -> Region {
    Region {
        id,
        start_key: start.as_bytes().to_vec(),
        end_key: end.as_bytes().to_vec(),
        epoch: Some(RegionEpoch {
            conf_ver: 1,
            version: 1,
        }),
        peers: (1..=3)
            .map(|id| Peer {
                id,
                store_id: id,
                is_learner: false,
            })
            .collect(),
    }
}

impl FakeCluster {
    /// Starts nodes `1..=nodes` on ephemeral loopback ports, with `regions`
    /// (contiguous, covering the keyspace) led by the given nodes.
    pub async fn start(nodes: u64, regions: Vec<(Region, u64)>) -> FakeCluster {
        let mut listeners = Vec::new();
        let mut addrs = HashMap::new();
        for node in 1..=nodes {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addrs.insert(node, listener.local_addr().unwrap().to_string());
            listeners.push((node, listener));
        }
        let state = Arc::new(Mutex::new(ClusterState {
            regions: regions
                .into_iter()
                .map(|(region, leader)| FakeRegion { region, leader })
                .collect(),
            addrs: addrs.clone(),
            ..ClusterState::default()
        }));
        let mut servers = Vec::new();
        for (node, listener) in listeners {
            let service = KvServer::new(FakeNode {
                node,
                state: state.clone(),
            });
            let server = tokio::spawn(async move {
                tonic::transport::Server::builder()
                    .add_service(service)
                    .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                    .await
                    .unwrap();
            });
            servers.push(server);
        }
        FakeCluster {
            state,
            servers,
            addrs,
        }
    }

    fn lock(&self) -> MutexGuard<'_, ClusterState> {
        self.state.lock().unwrap()
    }

    /// A client that knows only the given nodes' addresses, with short
    /// timeouts and backoff.
    pub async fn client(&self, nodes: &[u64]) -> Client {
        let endpoints = nodes.iter().map(|node| self.addrs[node].clone());
        let config = ClientConfig {
            request_timeout: Duration::from_millis(500),
            operation_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_millis(200),
            backoff_min: Duration::from_millis(1),
            backoff_max: Duration::from_millis(5),
            ..ClientConfig::new(endpoints)
        };
        Client::connect(config).await.unwrap()
    }

    /// Stores `key = value` directly.
    pub fn insert(&self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.lock().data.insert(key.into(), value.into());
    }

    /// Every key, in order.
    pub fn keys(&self) -> Vec<Vec<u8>> {
        self.lock().data.keys().cloned().collect()
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<Received> {
        self.lock().received.clone()
    }

    /// Requests of one method, in arrival order.
    pub fn received_of(&self, method: &str) -> Vec<Received> {
        self.lock()
            .received
            .iter()
            .filter(|r| r.method == method)
            .cloned()
            .collect()
    }

    pub fn status_calls(&self) -> u64 {
        self.lock().status_calls
    }

    /// Makes `node` the leader of `region_id`.
    pub fn set_leader(&self, region_id: u64, node: u64) {
        let mut state = self.lock();
        let region = state
            .regions
            .iter_mut()
            .find(|r| r.region.id == region_id)
            .unwrap();
        region.leader = node;
    }

    /// The current regions with their leaders, in key order.
    pub fn regions(&self) -> Vec<(Region, u64)> {
        self.lock()
            .regions
            .iter()
            .map(|r| (r.region.clone(), r.leader))
            .collect()
    }

    /// Splits the region holding `split_key` there now.
    pub fn split(&self, split_key: &str, new_region_id: u64, new_leader: u64) {
        split(
            &mut self.lock(),
            split_key.as_bytes(),
            new_region_id,
            new_leader,
        )
        .unwrap();
    }

    /// Arranges a split just before the `at_scan`-th scan is handled.
    pub fn split_before_scan(&self, planned: PlannedSplit) {
        self.lock().planned_split = Some(planned);
    }

    /// Stops node `node`: it answers every request with Unavailable.
    pub fn stop(&self, node: u64) {
        self.lock().stopped.insert(node);
    }
}

/// Splits the region holding `split_key` at it; both halves' versions grow.
fn split(
    state: &mut ClusterState,
    split_key: &[u8],
    new_region_id: u64,
    new_leader: u64,
) -> Result<(Region, Region), Status> {
    let index = region_index_of_key(state, split_key)?;
    let left = &mut state.regions[index].region;
    if left.start_key.as_slice() >= split_key {
        return Err(Status::invalid_argument(
            "split key must lie strictly inside the region",
        ));
    }
    let epoch = left.epoch.get_or_insert_with(RegionEpoch::default);
    epoch.version += 1;
    let mut right = left.clone();
    right.id = new_region_id;
    right.start_key = split_key.to_vec();
    left.end_key = split_key.to_vec();
    let left = left.clone();
    state.regions.insert(
        index + 1,
        FakeRegion {
            region: right.clone(),
            leader: new_leader,
        },
    );
    Ok((left, right))
}

fn region_index_of_key(state: &ClusterState, key: &[u8]) -> Result<usize, Status> {
    state
        .regions
        .iter()
        .position(|r| contains(&r.region, key))
        .ok_or_else(|| Status::internal("the fake's regions do not cover the key"))
}

fn contains(region: &Region, key: &[u8]) -> bool {
    region.start_key.as_slice() <= key && (region.end_key.is_empty() || key < &region.end_key[..])
}

fn with_detail(code: Code, kind: Kind) -> Status {
    let details = ErrorDetail { kind: Some(kind) }.encode_to_vec();
    Status::with_details(code, format!("fake {code:?}"), details.into())
}

/// What a request touches, for the region check.
enum Touches<'a> {
    /// These keys must all lie in the region.
    Keys(Vec<&'a [u8]>),
    /// `[start, end)` must lie in the region.
    Range(&'a [u8], &'a [u8]),
    /// A scan of `[start, end)`: clamped to the region, never refused for
    /// its range.
    Scan(&'a [u8], &'a [u8]),
}

struct FakeNode {
    node: u64,
    state: Arc<Mutex<ClusterState>>,
}

impl FakeNode {
    /// Records the request and checks its route as a real node does;
    /// returns the index of its region.
    fn admit(
        &self,
        state: &mut ClusterState,
        method: &'static str,
        header: Option<RequestHeader>,
        touches: Touches<'_>,
    ) -> Result<usize, Status> {
        self.ensure_up(state)?;
        let header = header.unwrap_or_default();
        let keys: Vec<Vec<u8>> = match &touches {
            Touches::Keys(keys) => keys.iter().map(|k| k.to_vec()).collect(),
            Touches::Range(start, end) | Touches::Scan(start, end) => {
                vec![start.to_vec(), end.to_vec()]
            }
        };
        let verdict = self.check(state, &header, touches);
        state.received.push(Received {
            node: self.node,
            method,
            header,
            keys,
            refused: verdict.as_ref().err().map(|(reason, _)| *reason),
        });
        verdict.map_err(|(_, status)| status)
    }

    fn check(
        &self,
        state: &ClusterState,
        header: &RequestHeader,
        touches: Touches<'_>,
    ) -> Result<usize, (&'static str, Status)> {
        let region_not_found = |region_id| {
            (
                "RegionNotFound",
                with_detail(
                    Code::FailedPrecondition,
                    Kind::RegionNotFound(RegionNotFound { region_id }),
                ),
            )
        };
        let index = if header.region_id == 0 {
            let first_key = match &touches {
                Touches::Keys(keys) => keys.first().copied().unwrap_or_default(),
                Touches::Range(start, _) | Touches::Scan(start, _) => start,
            };
            region_index_of_key(state, first_key).map_err(|status| ("internal", status))?
        } else {
            state
                .regions
                .iter()
                .position(|r| r.region.id == header.region_id)
                .ok_or_else(|| region_not_found(header.region_id))?
        };
        let FakeRegion { region, leader } = &state.regions[index];
        if *leader != self.node {
            return Err((
                "NotLeader",
                with_detail(
                    Code::FailedPrecondition,
                    Kind::NotLeader(NotLeader {
                        region_id: region.id,
                        leader_node_id: *leader,
                        leader_addr: state.addrs[leader].clone(),
                    }),
                ),
            ));
        }
        if header.region_epoch.is_some() && header.region_epoch != region.epoch {
            return Err((
                "EpochNotMatch",
                with_detail(
                    Code::FailedPrecondition,
                    Kind::EpochNotMatch(EpochNotMatch {
                        current_regions: state.regions.iter().map(|r| r.region.clone()).collect(),
                    }),
                ),
            ));
        }
        let inside = match touches {
            Touches::Keys(keys) => keys.iter().all(|key| contains(region, key)),
            Touches::Range(start, end) => {
                contains(region, start)
                    && (region.end_key.is_empty()
                        || (!end.is_empty() && end <= region.end_key.as_slice()))
            }
            Touches::Scan(..) => true,
        };
        if !inside {
            return Err(region_not_found(region.id));
        }
        Ok(index)
    }

    fn ensure_up(&self, state: &ClusterState) -> Result<(), Status> {
        if state.stopped.contains(&self.node) {
            return Err(Status::unavailable("fake: node stopped"));
        }
        Ok(())
    }

    fn state(&self) -> MutexGuard<'_, ClusterState> {
        self.state.lock().unwrap()
    }
}

#[tonic::async_trait]
impl Kv for FakeNode {
    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let request = request.into_inner();
        let mut state = self.state();
        self.admit(
            &mut state,
            "get",
            request.header,
            Touches::Keys(vec![&request.key]),
        )?;
        let value = state.data.get(&request.key).cloned();
        Ok(Response::new(GetResponse {
            found: value.is_some(),
            value: value.unwrap_or_default(),
        }))
    }

    async fn batch_get(
        &self,
        request: Request<BatchGetRequest>,
    ) -> Result<Response<BatchGetResponse>, Status> {
        let request = request.into_inner();
        let mut state = self.state();
        let keys = request.keys.iter().map(Vec::as_slice).collect();
        self.admit(&mut state, "batch_get", request.header, Touches::Keys(keys))?;
        let pairs = request
            .keys
            .iter()
            .filter_map(|key| {
                let value = state.data.get(key)?.clone();
                Some(KvPair {
                    key: key.clone(),
                    value,
                })
            })
            .collect();
        Ok(Response::new(BatchGetResponse { pairs }))
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let request = request.into_inner();
        let mut state = self.state();
        self.admit(
            &mut state,
            "put",
            request.header,
            Touches::Keys(vec![&request.key]),
        )?;
        state.data.insert(request.key, request.value);
        Ok(Response::new(PutResponse {}))
    }

    async fn batch_put(
        &self,
        request: Request<BatchPutRequest>,
    ) -> Result<Response<BatchPutResponse>, Status> {
        let request = request.into_inner();
        let mut state = self.state();
        let keys = request.pairs.iter().map(|p| p.key.as_slice()).collect();
        self.admit(&mut state, "batch_put", request.header, Touches::Keys(keys))?;
        for pair in request.pairs {
            state.data.insert(pair.key, pair.value);
        }
        Ok(Response::new(BatchPutResponse {}))
    }

    async fn delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let request = request.into_inner();
        let mut state = self.state();
        self.admit(
            &mut state,
            "delete",
            request.header,
            Touches::Keys(vec![&request.key]),
        )?;
        let existed = state.data.remove(&request.key).is_some();
        Ok(Response::new(DeleteResponse { existed }))
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let request = request.into_inner();
        let mut state = self.state();
        self.admit(
            &mut state,
            "delete_range",
            request.header,
            Touches::Range(&request.start_key, &request.end_key),
        )?;
        let doomed: Vec<Vec<u8>> = state
            .data
            .keys()
            .filter(|key| {
                key.as_slice() >= request.start_key.as_slice()
                    && (request.end_key.is_empty() || key.as_slice() < request.end_key.as_slice())
            })
            .cloned()
            .collect();
        for key in &doomed {
            state.data.remove(key);
        }
        Ok(Response::new(DeleteRangeResponse {
            deleted: doomed.len() as u64,
        }))
    }

    async fn scan(&self, request: Request<ScanRequest>) -> Result<Response<ScanResponse>, Status> {
        let request = request.into_inner();
        let mut state = self.state();
        state.scans += 1;
        let scans = state.scans;
        let planned = state
            .planned_split
            .take_if(|planned| planned.at_scan == scans);
        if let Some(planned) = planned {
            split(
                &mut state,
                &planned.split_key,
                planned.new_region_id,
                planned.new_leader,
            )?;
        }
        let index = self.admit(
            &mut state,
            "scan",
            request.header,
            Touches::Scan(&request.start_key, &request.end_key),
        )?;
        let region = &state.regions[index].region;
        let start = request.start_key.clone().max(region.start_key.clone());
        let end = match (request.end_key.is_empty(), region.end_key.is_empty()) {
            (true, _) => region.end_key.clone(),
            (_, true) => request.end_key.clone(),
            _ => request.end_key.clone().min(region.end_key.clone()),
        };
        let in_range = state.data.iter().filter(|(key, _)| {
            key.as_slice() >= start.as_slice()
                && (end.is_empty() || key.as_slice() < end.as_slice())
        });
        let limit = request.limit as usize;
        let pair = |(key, value): (&Vec<u8>, &Vec<u8>)| KvPair {
            key: key.clone(),
            value: value.clone(),
        };
        let pairs = if request.reverse {
            in_range.rev().take(limit).map(pair).collect()
        } else {
            in_range.take(limit).map(pair).collect()
        };
        Ok(Response::new(ScanResponse { pairs }))
    }

    async fn compare_and_swap(
        &self,
        request: Request<CompareAndSwapRequest>,
    ) -> Result<Response<CompareAndSwapResponse>, Status> {
        let request = request.into_inner();
        let mut state = self.state();
        self.admit(
            &mut state,
            "compare_and_swap",
            request.header,
            Touches::Keys(vec![&request.key]),
        )?;
        let previous = state.data.get(&request.key).cloned();
        let expected = (!request.expect_absent).then_some(&request.expected_value);
        let succeeded = previous.as_ref() == expected;
        if succeeded {
            if request.delete {
                state.data.remove(&request.key);
            } else {
                state.data.insert(request.key, request.new_value);
            }
        }
        Ok(Response::new(CompareAndSwapResponse {
            succeeded,
            previous_found: previous.is_some(),
            previous_value: previous.unwrap_or_default(),
        }))
    }

    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let mut state = self.state();
        self.ensure_up(&state)?;
        state.status_calls += 1;
        let mut members: Vec<Member> = state
            .addrs
            .iter()
            .map(|(node, addr)| Member {
                node_id: *node,
                peer_addr: String::new(),
                client_addr: addr.clone(),
            })
            .collect();
        members.sort_by_key(|m| m.node_id);
        let regions = state
            .regions
            .iter()
            .map(|r| RegionStatus {
                region: Some(r.region.clone()),
                leader_id: r.leader,
                term: 1,
                role: if r.leader == self.node {
                    "leader".into()
                } else {
                    "follower".into()
                },
                approximate_keys: state
                    .data
                    .keys()
                    .filter(|key| contains(&r.region, key))
                    .count() as u64,
                ..RegionStatus::default()
            })
            .collect();
        Ok(Response::new(StatusResponse {
            node_id: self.node,
            client_addr: state.addrs[&self.node].clone(),
            members,
            regions,
            stored_keys: state.data.len() as u64,
        }))
    }

    async fn split_region(
        &self,
        request: Request<SplitRegionRequest>,
    ) -> Result<Response<SplitRegionResponse>, Status> {
        let request = request.into_inner();
        let mut state = self.state();
        self.admit(
            &mut state,
            "split_region",
            request.header,
            Touches::Keys(vec![&request.split_key]),
        )?;
        let new_region_id = state.regions.iter().map(|r| r.region.id).max().unwrap_or(0) + 1;
        let (left, right) = split(&mut state, &request.split_key, new_region_id, self.node)?;
        Ok(Response::new(SplitRegionResponse {
            left: Some(left),
            right: Some(right),
        }))
    }

    async fn transfer_leader(
        &self,
        _request: Request<TransferLeaderRequest>,
    ) -> Result<Response<TransferLeaderResponse>, Status> {
        Err(Status::unimplemented(
            "the fake cluster moves leaders only when a test does",
        ))
    }

    async fn change_peers(
        &self,
        _request: Request<ChangePeersRequest>,
    ) -> Result<Response<ChangePeersResponse>, Status> {
        Err(Status::unimplemented("the fake cluster has no membership"))
    }

    async fn merge_region(
        &self,
        _request: Request<MergeRegionRequest>,
    ) -> Result<Response<MergeRegionResponse>, Status> {
        Err(Status::unimplemented("the fake cluster does not merge"))
    }

    async fn commit_merge(
        &self,
        _request: Request<CommitMergeRequest>,
    ) -> Result<Response<CommitMergeResponse>, Status> {
        Err(Status::unimplemented("the fake cluster does not merge"))
    }
}
