//! An in-process fake `Kv` node for the client's retry tests: it answers
//! each request from a script of replies (then a default reply) and records
//! every request it received, so tests can assert what the client sent where.
//! Its status names no regions, so the client routes by the server's key
//! routing (region id 0).

use client::{Client, ClientConfig};
use flotilla_proto::kvpb::error_detail::Kind;
use flotilla_proto::kvpb::kv_server::{Kv, KvServer};
use flotilla_proto::kvpb::*;
use prost::Message;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::{Code, Request, Response, Status};

/// How the fake node answers one request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// Success; reads find the value `"v"`.
    Ok,
    /// FailedPrecondition + not_leader, with the leader's address if given.
    NotLeader(Option<String>),
    /// Unavailable without details (no leader yet, shutting down).
    Unavailable,
    /// Unknown + indeterminate (the write may have been applied).
    Indeterminate,
    /// InvalidArgument.
    InvalidArgument,
    /// Never answers.
    Hang,
}

/// One request the fake node received.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: &'static str,
    pub header: Option<RequestHeader>,
}

pub struct FakeKv {
    node_id: u64,
    script: Mutex<VecDeque<Reply>>,
    default_reply: Reply,
    received: Mutex<Vec<Received>>,
}

/// A running fake node.
pub struct FakeNode {
    pub addr: String,
    pub kv: Arc<FakeKv>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeNode {
    /// Starts a node on an ephemeral loopback port that answers with `script`
    /// first and `default_reply` afterwards.
    pub async fn start(node_id: u64, script: Vec<Reply>, default_reply: Reply) -> FakeNode {
        let kv = Arc::new(FakeKv {
            node_id,
            script: Mutex::new(script.into()),
            default_reply,
            received: Mutex::new(Vec::new()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let service = KvServer::from_arc(kv.clone());
        let server = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                .await
                .unwrap();
        });
        FakeNode { addr, kv, server }
    }

    pub fn received(&self) -> Vec<Received> {
        self.kv.received.lock().unwrap().clone()
    }
}

/// A client with short timeouts and backoff, so tests finish quickly.
pub async fn client(endpoints: &[&str], operation_timeout: Duration) -> Client {
    let config = ClientConfig {
        request_timeout: Duration::from_millis(200),
        operation_timeout,
        connect_timeout: Duration::from_millis(200),
        backoff_min: Duration::from_millis(1),
        backoff_max: Duration::from_millis(5),
        ..ClientConfig::new(endpoints.iter().copied())
    };
    Client::connect(config).await.unwrap()
}

/// An address nothing listens on.
pub async fn dead_addr() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().to_string()
}

fn with_detail(code: Code, kind: Kind) -> Status {
    let details = ErrorDetail { kind: Some(kind) }.encode_to_vec();
    Status::with_details(code, format!("fake {code:?}"), details.into())
}

impl FakeKv {
    /// Records the request and answers it per the script.
    async fn answer<T>(
        &self,
        method: &'static str,
        header: Option<RequestHeader>,
        ok: T,
    ) -> Result<Response<T>, Status> {
        self.received
            .lock()
            .unwrap()
            .push(Received { method, header });
        let reply = self
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| self.default_reply.clone());
        match reply {
            Reply::Ok => Ok(Response::new(ok)),
            Reply::NotLeader(hint) => Err(with_detail(
                Code::FailedPrecondition,
                Kind::NotLeader(NotLeader {
                    region_id: 1,
                    leader_node_id: if hint.is_some() { 2 } else { 0 },
                    leader_addr: hint.unwrap_or_default(),
                }),
            )),
            Reply::Unavailable => Err(Status::unavailable("fake: no leader")),
            Reply::Indeterminate => Err(with_detail(
                Code::Unknown,
                Kind::Indeterminate(Indeterminate {}),
            )),
            Reply::InvalidArgument => Err(Status::invalid_argument("fake: key too large")),
            Reply::Hang => std::future::pending().await,
        }
    }
}

#[tonic::async_trait]
impl Kv for FakeKv {
    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let response = GetResponse {
            found: true,
            value: b"v".to_vec(),
        };
        self.answer("get", request.into_inner().header, response)
            .await
    }

    async fn batch_get(
        &self,
        request: Request<BatchGetRequest>,
    ) -> Result<Response<BatchGetResponse>, Status> {
        self.answer(
            "batch_get",
            request.into_inner().header,
            BatchGetResponse::default(),
        )
        .await
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        self.answer("put", request.into_inner().header, PutResponse {})
            .await
    }

    async fn batch_put(
        &self,
        request: Request<BatchPutRequest>,
    ) -> Result<Response<BatchPutResponse>, Status> {
        self.answer(
            "batch_put",
            request.into_inner().header,
            BatchPutResponse {},
        )
        .await
    }

    async fn delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        self.answer(
            "delete",
            request.into_inner().header,
            DeleteResponse { existed: true },
        )
        .await
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        self.answer(
            "delete_range",
            request.into_inner().header,
            DeleteRangeResponse { deleted: 3 },
        )
        .await
    }

    async fn scan(&self, request: Request<ScanRequest>) -> Result<Response<ScanResponse>, Status> {
        self.answer("scan", request.into_inner().header, ScanResponse::default())
            .await
    }

    async fn compare_and_swap(
        &self,
        request: Request<CompareAndSwapRequest>,
    ) -> Result<Response<CompareAndSwapResponse>, Status> {
        let response = CompareAndSwapResponse {
            succeeded: true,
            previous_found: false,
            previous_value: Vec::new(),
        };
        self.answer("compare_and_swap", request.into_inner().header, response)
            .await
    }

    async fn split_region(
        &self,
        request: Request<SplitRegionRequest>,
    ) -> Result<Response<SplitRegionResponse>, Status> {
        self.answer(
            "split_region",
            request.into_inner().header,
            SplitRegionResponse::default(),
        )
        .await
    }

    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        Ok(Response::new(StatusResponse {
            node_id: self.node_id,
            ..StatusResponse::default()
        }))
    }

    async fn transfer_leader(
        &self,
        request: Request<TransferLeaderRequest>,
    ) -> Result<Response<TransferLeaderResponse>, Status> {
        self.answer(
            "transfer_leader",
            request.into_inner().header,
            TransferLeaderResponse::default(),
        )
        .await
    }

    async fn change_peers(
        &self,
        request: Request<ChangePeersRequest>,
    ) -> Result<Response<ChangePeersResponse>, Status> {
        self.answer(
            "change_peers",
            request.into_inner().header,
            ChangePeersResponse::default(),
        )
        .await
    }

    async fn merge_region(
        &self,
        request: Request<MergeRegionRequest>,
    ) -> Result<Response<MergeRegionResponse>, Status> {
        self.answer(
            "merge_region",
            request.into_inner().header,
            MergeRegionResponse::default(),
        )
        .await
    }

    async fn commit_merge(
        &self,
        _request: Request<CommitMergeRequest>,
    ) -> Result<Response<CommitMergeResponse>, Status> {
        Err(Status::unimplemented("a client never calls it"))
    }
}
