//! [`Client`]: the typed operations. Each builds its request once — writes
//! with a fresh `(client_id, sequence)` header — and hands it to the retry
//! loop, which resends that same request until it gets a final answer.

use crate::classify::single_attempt_error;
use crate::config::ClientConfig;
use crate::endpoint::{KvStub, StubSettings};
use crate::error::{ClientError, Result};
use crate::retry::{execute, OpKind};
use crate::router::Router;
use flotilla_proto::kvpb::{
    BatchGetRequest, BatchPutRequest, CompareAndSwapRequest, DeleteRangeRequest, DeleteRequest,
    GetRequest, KvPair, PutRequest, RequestHeader, ScanRequest, StatusRequest, StatusResponse,
};
use rand::Rng;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A handle to a Flotilla cluster. Cheap to clone; clones share connections,
/// leader knowledge and the write identity (`client_id`).
#[derive(Clone, Debug)]
pub struct Client {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    config: ClientConfig,
    router: Router,
    client_id: u64,
    /// The last sequence handed out; writes use strictly increasing values.
    last_sequence: AtomicU64,
}

/// The result of [`Client::compare_and_swap`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CasOutcome {
    /// Whether the expectation held and the replacement was applied.
    pub succeeded: bool,
    /// The key's value before the operation (`None`: absent), which is what
    /// the expectation was compared with.
    pub previous: Option<Vec<u8>>,
}

impl Client {
    /// Checks the configuration and prepares a connection per endpoint.
    /// Connections open lazily on first use, so this fails only on a bad
    /// configuration, never because a node is down. Must run inside a tokio
    /// runtime.
    pub async fn connect(config: ClientConfig) -> Result<Client> {
        config.validate()?;
        let settings = StubSettings {
            connect_timeout: config.connect_timeout,
            message_bytes_max: config.message_bytes_max,
        };
        let router = Router::new(&config.endpoints, settings)?;
        // Zero disables deduplication on the server, so never use it.
        let client_id = rand::thread_rng().gen_range(1..=u64::MAX);
        Ok(Client {
            shared: Arc::new(Shared {
                config,
                router,
                client_id,
                last_sequence: AtomicU64::new(0),
            }),
        })
    }

    /// This client's write identity, sent in every write's header.
    pub fn client_id(&self) -> u64 {
        self.shared.client_id
    }

    /// Every endpoint the client knows: the configured ones, then those
    /// learned from leader hints.
    pub fn endpoints(&self) -> Vec<String> {
        self.shared.router.addrs()
    }

    /// The value of `key`, or `None` if it is absent. Linearizable.
    pub async fn get(&self, key: impl Into<Vec<u8>>) -> Result<Option<Vec<u8>>> {
        let request = GetRequest {
            header: None,
            key: key.into(),
        };
        let response = self
            .run(
                OpKind::Read,
                request,
                |mut kv, r| async move { kv.get(r).await },
            )
            .await?;
        Ok(response.found.then_some(response.value))
    }

    /// The pairs of those `keys` that exist, in request order. Linearizable:
    /// all values are read at one point in time.
    pub async fn batch_get(&self, keys: Vec<Vec<u8>>) -> Result<Vec<KvPair>> {
        let request = BatchGetRequest { header: None, keys };
        let response = self
            .run(OpKind::Read, request, |mut kv, r| async move {
                kv.batch_get(r).await
            })
            .await?;
        Ok(response.pairs)
    }

    /// Sets `key` to `value`.
    pub async fn put(&self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Result<()> {
        let request = PutRequest {
            header: Some(self.write_header()),
            key: key.into(),
            value: value.into(),
        };
        self.run(OpKind::Write, request, |mut kv, r| async move {
            kv.put(r).await
        })
        .await?;
        Ok(())
    }

    /// Sets every pair, atomically.
    pub async fn batch_put(&self, pairs: Vec<KvPair>) -> Result<()> {
        let request = BatchPutRequest {
            header: Some(self.write_header()),
            pairs,
        };
        self.run(OpKind::Write, request, |mut kv, r| async move {
            kv.batch_put(r).await
        })
        .await?;
        Ok(())
    }

    /// Removes `key`; returns whether it existed.
    pub async fn delete(&self, key: impl Into<Vec<u8>>) -> Result<bool> {
        let request = DeleteRequest {
            header: Some(self.write_header()),
            key: key.into(),
        };
        let response = self
            .run(OpKind::Write, request, |mut kv, r| async move {
                kv.delete(r).await
            })
            .await?;
        Ok(response.existed)
    }

    /// Removes every key in `[start, end)` (an empty `end`: to the end of the
    /// keyspace); returns how many existed.
    pub async fn delete_range(
        &self,
        start: impl Into<Vec<u8>>,
        end: impl Into<Vec<u8>>,
    ) -> Result<u64> {
        let request = DeleteRangeRequest {
            header: Some(self.write_header()),
            start_key: start.into(),
            end_key: end.into(),
        };
        let response = self
            .run(OpKind::Write, request, |mut kv, r| async move {
                kv.delete_range(r).await
            })
            .await?;
        Ok(response.deleted)
    }

    /// Up to `limit` pairs (0: the server's maximum) with keys in
    /// `[start, end)` (an empty `end`: to the end of the keyspace), in key
    /// order, or newest-key-first when `reverse`. Linearizable.
    pub async fn scan(
        &self,
        start: impl Into<Vec<u8>>,
        end: impl Into<Vec<u8>>,
        limit: u32,
        reverse: bool,
    ) -> Result<Vec<KvPair>> {
        let request = ScanRequest {
            header: None,
            start_key: start.into(),
            end_key: end.into(),
            limit,
            reverse,
        };
        let response = self
            .run(OpKind::Read, request, |mut kv, r| async move {
                kv.scan(r).await
            })
            .await?;
        Ok(response.pairs)
    }

    /// Atomically: if `key` currently holds `expected` (`None`: is absent),
    /// set it to `new` (`None`: delete it). The outcome says whether it did
    /// and what the key held before.
    pub async fn compare_and_swap(
        &self,
        key: impl Into<Vec<u8>>,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    ) -> Result<CasOutcome> {
        let request = CompareAndSwapRequest {
            header: Some(self.write_header()),
            key: key.into(),
            expect_absent: expected.is_none(),
            expected_value: expected.unwrap_or_default(),
            delete: new.is_none(),
            new_value: new.unwrap_or_default(),
        };
        let response = self
            .run(OpKind::Write, request, |mut kv, r| async move {
                kv.compare_and_swap(r).await
            })
            .await?;
        Ok(CasOutcome {
            succeeded: response.succeeded,
            previous: response.previous_found.then_some(response.previous_value),
        })
    }

    /// The node and region state of the node at `endpoint`, as that node sees
    /// it. One attempt, bounded by the request timeout; no retries.
    pub async fn status(&self, endpoint: &str) -> Result<StatusResponse> {
        let mut stub = self.shared.router.stub_for(endpoint)?;
        let timeout = self.shared.config.request_timeout;
        let mut request = tonic::Request::new(StatusRequest {});
        request.set_timeout(timeout);
        match tokio::time::timeout(timeout, stub.status(request)).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(single_attempt_error(&status, timeout)),
            Err(_elapsed) => Err(ClientError::Timeout(timeout)),
        }
    }

    /// [`Client::status`] of every known endpoint, queried concurrently, in
    /// the order of [`Client::endpoints`].
    pub async fn cluster_status(&self) -> Vec<(String, Result<StatusResponse>)> {
        let endpoints = self.endpoints();
        let replies =
            futures::future::join_all(endpoints.iter().map(|endpoint| self.status(endpoint))).await;
        endpoints.into_iter().zip(replies).collect()
    }

    fn write_header(&self) -> RequestHeader {
        let sequence = self.shared.last_sequence.fetch_add(1, Ordering::Relaxed) + 1;
        debug_assert!(sequence > 0, "sequence wrapped");
        RequestHeader {
            region_id: 0,
            region_epoch: None,
            client_id: self.shared.client_id,
            sequence,
        }
    }

    async fn run<M, R, F, Fut>(&self, kind: OpKind, message: M, call: F) -> Result<R>
    where
        M: Clone,
        F: Fn(KvStub, tonic::Request<M>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        execute(
            &self.shared.config,
            &self.shared.router,
            kind,
            message,
            call,
        )
        .await
    }
}
