//! [`Client`]: the typed operations. Each builds its request once — writes
//! with a fresh `(client_id, sequence)` header — addresses it to the region
//! the route cache names, and hands it to the retry loop, which resends that
//! same request until it gets a final answer. Operations on many keys are cut
//! at region boundaries: batch reads, batch writes and range deletes send one
//! request per region, concurrently ([`crate::multi_region`]); scans walk the
//! regions in key order.

use crate::cluster_view::ClusterView;
use crate::config::ClientConfig;
use crate::endpoint::{KvStub, StubSettings};
use crate::error::{ClientError, Result};
use crate::multi_region::{send_by_region, KeyRange, Part};
use crate::placement::PlacementDriverClient;
use crate::region_cache::min_end;
use crate::retry::{send_part, Attempts, OpKind, PartError, Routed};
use crate::router::Router;
use crate::routing::Routing;
use crate::tso::{Timestamp, TsoClient};
use crate::write_sequences::{OpenWrite, WriteSequences};
use flotilla_proto::kvpb::{
    BatchGetRequest, BatchPutRequest, CompareAndSwapRequest, DeleteRangeRequest, DeleteRequest,
    GetRequest, KvPair, PutRequest, Region, RequestHeader, ScanRequest, SplitRegionRequest,
    StatusResponse,
};
use rand::Rng;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, OnceLock};

/// Pairs a scan asks one region for at most: the server's per-request
/// maximum, and what a scan with limit 0 returns at most. A region that
/// answers fewer pairs than asked has no more in the range, which holds as
/// long as the server's maximum is not below this.
const SCAN_PART_LIMIT_MAX: u32 = 10_000;

/// Keys starting with these bytes belong to the cluster itself (its
/// placement metadata): the server refuses user keys there, refuses writes
/// to ranges reaching them, and ends scans before them.
pub const SYSTEM_KEY_PREFIX: [u8; 2] = [0xFF, 0xFF];

/// A handle to a Flotilla cluster. Cheap to clone; clones share connections,
/// the route cache and the write identity (`client_id`).
#[derive(Clone, Debug)]
pub struct Client {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    config: ClientConfig,
    routing: Routing,
    client_id: u64,
    sequences: WriteSequences,
    /// The timestamp batching task, started by the first `get_timestamp`.
    tso: OnceLock<TsoClient>,
    placement: PlacementDriverClient,
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
        let placement = PlacementDriverClient::new(&config)?;
        let routing = Routing::new(router, config.request_timeout);
        // Zero disables deduplication on the server, so never use it.
        let client_id = rand::thread_rng().gen_range(1..=u64::MAX);
        Ok(Client {
            shared: Arc::new(Shared {
                config,
                routing,
                client_id,
                sequences: WriteSequences::default(),
                tso: OnceLock::new(),
                placement,
            }),
        })
    }

    /// This client's write identity, sent in every write's header.
    pub fn client_id(&self) -> u64 {
        self.shared.client_id
    }

    /// Every endpoint the client knows: the configured ones, then those
    /// learned from leader hints and from the nodes' member lists.
    pub fn endpoints(&self) -> Vec<String> {
        self.shared.routing.router().addrs()
    }

    /// The value of `key`, or `None` if it is absent. Linearizable.
    pub async fn get(&self, key: impl Into<Vec<u8>>) -> Result<Option<Vec<u8>>> {
        let request = GetRequest {
            header: None,
            key: key.into(),
        };
        let response = self
            .send_to_key(
                OpKind::Read,
                &request.key,
                &request,
                |mut kv, r| async move { kv.get(r).await },
            )
            .await?;
        Ok(response.found.then_some(response.value))
    }

    /// The pairs of those `keys` that exist, in request order. The keys of
    /// one region are read at one point in time (linearizably); the regions
    /// are read concurrently, each at its own point in time. No keys: no
    /// request, no pairs.
    pub async fn batch_get(&self, keys: Vec<Vec<u8>>) -> Result<Vec<KvPair>> {
        let routing = &self.shared.routing;
        let answered = send_by_region(
            routing,
            Attempts::new(&self.shared.config, OpKind::Read),
            || 0,
            keys.clone(),
            |mut part: Part<Vec<Vec<u8>>>| async move {
                let request = BatchGetRequest {
                    header: None,
                    keys: std::mem::take(&mut part.scope),
                };
                let result = send_part(
                    routing,
                    &mut part.attempts,
                    part.region.as_ref(),
                    &request,
                    &|mut kv: KvStub, r| async move { kv.batch_get(r).await },
                )
                .await;
                part.scope = request.keys;
                (part, result)
            },
        )
        .await?;
        let found: HashMap<Vec<u8>, Vec<u8>> = answered
            .into_iter()
            .flat_map(|(_, response)| response.pairs)
            .map(|pair| (pair.key, pair.value))
            .collect();
        Ok(keys
            .into_iter()
            .filter_map(|key| {
                let value = found.get(&key)?.clone();
                Some(KvPair { key, value })
            })
            .collect())
    }

    /// Sets `key` to `value`.
    pub async fn put(&self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Result<()> {
        let write = self.shared.sequences.open();
        let request = PutRequest {
            header: Some(self.write_header(&write)),
            key: key.into(),
            value: value.into(),
        };
        self.send_to_key(
            OpKind::Write,
            &request.key,
            &request,
            |mut kv, r| async move { kv.put(r).await },
        )
        .await?;
        Ok(())
    }

    /// Sets every pair. The pairs of one region are written atomically, as
    /// one request with its own `(client_id, sequence)`; the regions are
    /// written concurrently and independently, so the batch as a whole is
    /// not atomic: when it fails after some region applied its pairs, the
    /// error is [`ClientError::Indeterminate`]. No pairs: no request.
    pub async fn batch_put(&self, pairs: Vec<KvPair>) -> Result<()> {
        let routing = &self.shared.routing;
        let client_id = self.shared.client_id;
        let write = self.shared.sequences.open();
        let answered_below = write.answered_below;
        send_by_region(
            routing,
            Attempts::new(&self.shared.config, OpKind::Write),
            || self.shared.sequences.next(),
            pairs,
            |mut part: Part<Vec<KvPair>>| async move {
                let request = BatchPutRequest {
                    header: Some(write_header(client_id, part.sequence, answered_below)),
                    pairs: std::mem::take(&mut part.scope),
                };
                let result = send_part(
                    routing,
                    &mut part.attempts,
                    part.region.as_ref(),
                    &request,
                    &|mut kv: KvStub, r| async move { kv.batch_put(r).await },
                )
                .await;
                part.scope = request.pairs;
                (part, result)
            },
        )
        .await?;
        Ok(())
    }

    /// Removes `key`; returns whether it existed.
    pub async fn delete(&self, key: impl Into<Vec<u8>>) -> Result<bool> {
        let write = self.shared.sequences.open();
        let request = DeleteRequest {
            header: Some(self.write_header(&write)),
            key: key.into(),
        };
        let response = self
            .send_to_key(
                OpKind::Write,
                &request.key,
                &request,
                |mut kv, r| async move { kv.delete(r).await },
            )
            .await?;
        Ok(response.existed)
    }

    /// Removes every key in `[start, end)`; returns how many existed. An
    /// empty `end` means the end of the user keys: the range stops where the
    /// reserved [`SYSTEM_KEY_PREFIX`] begins. Each
    /// region's part is one atomic request with its own `(client_id,
    /// sequence)`; the parts run concurrently, so the whole is not atomic (a
    /// failure after some part applied is [`ClientError::Indeterminate`]). If
    /// a region split while a part's outcome was unknown, the count may
    /// include that part twice.
    pub async fn delete_range(
        &self,
        start: impl Into<Vec<u8>>,
        end: impl Into<Vec<u8>>,
    ) -> Result<u64> {
        let mut range = KeyRange {
            start: start.into(),
            end: end.into(),
        };
        if !range.end.is_empty() && range.end <= range.start {
            return Err(ClientError::InvalidArgument(
                "end_key must be greater than start_key (or empty for unbounded)".into(),
            ));
        }
        // Cut here, before the range is divided by region: no part may reach
        // the system keys.
        if range.end.is_empty() || range.end.as_slice() > &SYSTEM_KEY_PREFIX[..] {
            range.end = SYSTEM_KEY_PREFIX.to_vec();
        }
        if range.start.as_slice() >= &SYSTEM_KEY_PREFIX[..] {
            return Err(ClientError::InvalidArgument(
                "keys starting with 0xFF 0xFF are reserved for the cluster's own metadata".into(),
            ));
        }
        let routing = &self.shared.routing;
        let client_id = self.shared.client_id;
        let write = self.shared.sequences.open();
        let answered_below = write.answered_below;
        let answered = send_by_region(
            routing,
            Attempts::new(&self.shared.config, OpKind::Write),
            || self.shared.sequences.next(),
            range,
            |mut part: Part<KeyRange>| async move {
                let request = DeleteRangeRequest {
                    header: Some(write_header(client_id, part.sequence, answered_below)),
                    start_key: part.scope.start.clone(),
                    end_key: part.scope.end.clone(),
                };
                let result = send_part(
                    routing,
                    &mut part.attempts,
                    part.region.as_ref(),
                    &request,
                    &|mut kv: KvStub, r| async move { kv.delete_range(r).await },
                )
                .await;
                (part, result)
            },
        )
        .await?;
        Ok(answered.iter().map(|(_, response)| response.deleted).sum())
    }

    /// Up to `limit` pairs (0: 10,000) with keys in `[start, end)` (an empty
    /// `end`: to the end of the keyspace), in key order, or newest-key-first
    /// when `reverse`. Walks the regions in order, one request per region
    /// (more for a region holding over 10,000 matching pairs); a region
    /// that changed under the walk is re-planned from where the walk stood,
    /// so the result has every key in range exactly once, in order. Each
    /// region is read linearizably, at its own point in time.
    pub async fn scan(
        &self,
        start: impl Into<Vec<u8>>,
        end: impl Into<Vec<u8>>,
        limit: u32,
        reverse: bool,
    ) -> Result<Vec<KvPair>> {
        // The part of the range not scanned yet.
        let mut rest = KeyRange {
            start: start.into(),
            end: end.into(),
        };
        if !rest.end.is_empty() && rest.end < rest.start {
            return Err(ClientError::InvalidArgument(
                "end_key must not be less than start_key (or empty for unbounded)".into(),
            ));
        }
        let limit = match limit {
            0 => SCAN_PART_LIMIT_MAX,
            limit => limit,
        };
        let routing = &self.shared.routing;
        let mut attempts = Attempts::new(&self.shared.config, OpKind::Read);
        let mut pairs: Vec<KvPair> = Vec::new();
        while pairs.len() < limit as usize && (rest.end.is_empty() || rest.start < rest.end) {
            let region = if reverse {
                self.locate_before(&rest.end).await
            } else {
                self.locate(&rest.start).await
            };
            let ask = (limit - pairs.len() as u32).min(SCAN_PART_LIMIT_MAX);
            let request = ScanRequest {
                header: None,
                start_key: match &region {
                    Some(region) if reverse => rest.start.clone().max(region.start_key.clone()),
                    _ => rest.start.clone(),
                },
                end_key: match &region {
                    Some(region) if !reverse => min_end(&rest.end, &region.end_key).to_vec(),
                    _ => rest.end.clone(),
                },
                limit: ask,
                reverse,
            };
            let response = match send_part(
                routing,
                &mut attempts,
                region.as_ref(),
                &request,
                &|mut kv: KvStub, r| async move { kv.scan(r).await },
            )
            .await
            {
                Ok(response) => response,
                Err(PartError::Stale) => continue,
                Err(PartError::Failed(error)) => return Err(error),
            };
            let full = response.pairs.len() >= ask as usize;
            let last_key = response.pairs.last().map(|pair| pair.key.clone());
            pairs.extend(response.pairs);
            let Some(region) = region else {
                // Routed by the server; its answer is all there is to know.
                break;
            };
            match (full, last_key) {
                // The region may hold more: continue inside it.
                (true, Some(last_key)) if reverse => rest.end = last_key,
                (true, Some(mut last_key)) => {
                    last_key.push(0);
                    rest.start = last_key;
                }
                // The region is done: continue in the next one, if any.
                _ if reverse => {
                    if region.start_key <= rest.start {
                        break;
                    }
                    rest.end = region.start_key;
                }
                _ => {
                    if region.end_key.is_empty()
                        || (!rest.end.is_empty() && region.end_key >= rest.end)
                    {
                        break;
                    }
                    rest.start = region.end_key;
                }
            }
        }
        pairs.truncate(limit as usize);
        Ok(pairs)
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
        let write = self.shared.sequences.open();
        let request = CompareAndSwapRequest {
            header: Some(self.write_header(&write)),
            key: key.into(),
            expect_absent: expected.is_none(),
            expected_value: expected.unwrap_or_default(),
            delete: new.is_none(),
            new_value: new.unwrap_or_default(),
        };
        let response = self
            .send_to_key(
                OpKind::Write,
                &request.key,
                &request,
                |mut kv, r| async move { kv.compare_and_swap(r).await },
            )
            .await?;
        Ok(CasOutcome {
            succeeded: response.succeeded,
            previous: response.previous_found.then_some(response.previous_value),
        })
    }

    /// Splits the region holding `split_key` at that key (on the region's
    /// leader) and returns the halves: `[old start, split_key)`, which keeps
    /// the region's id, and `[split_key, old end)`. Idempotent: if a region
    /// already starts at `split_key` (a retry whose first answer was lost,
    /// or an earlier split), returns the two regions meeting there.
    pub async fn split_region(&self, split_key: impl Into<Vec<u8>>) -> Result<(Region, Region)> {
        let write = self.shared.sequences.open();
        let request = SplitRegionRequest {
            header: Some(self.write_header(&write)),
            split_key: split_key.into(),
            at_middle_key: false,
        };
        if request.split_key.is_empty() {
            return Err(ClientError::InvalidArgument(
                "split key must not be empty: the empty key starts the first region".into(),
            ));
        }
        let routing = &self.shared.routing;
        let mut attempts = Attempts::new(&self.shared.config, OpKind::Write);
        loop {
            // After the lookup, so that a cache filled by it is consulted.
            let region = self.locate(&request.split_key).await;
            if let Some(halves) = self.regions_meeting_at(&request.split_key) {
                return Ok(halves);
            }
            let call = |mut kv: KvStub, r| async move { kv.split_region(r).await };
            match send_part(routing, &mut attempts, region.as_ref(), &request, &call).await {
                Ok(response) => {
                    let (Some(left), Some(right)) = (response.left, response.right) else {
                        return Err(ClientError::Server {
                            code: tonic::Code::Internal,
                            message: "the split answer lacks a half".into(),
                        });
                    };
                    routing
                        .cache()
                        .insert_successors(region.as_ref(), vec![left.clone(), right.clone()]);
                    return Ok((left, right));
                }
                Err(PartError::Stale) => continue,
                Err(PartError::Failed(error)) => return Err(error),
            }
        }
    }

    /// Every node's status, merged: each region once with its freshest
    /// metadata and leader, and every store with whether it answered. Asks
    /// every known endpoint and every member they name, concurrently (each
    /// bounded by the request timeout), and refreshes the route cache with
    /// the result.
    pub async fn cluster_view(&self) -> ClusterView {
        self.shared.routing.cluster_view().await
    }

    /// The node and region state of the node at `endpoint`, as that node sees
    /// it. One attempt, bounded by the request timeout; no retries.
    pub async fn status(&self, endpoint: &str) -> Result<StatusResponse> {
        self.shared.routing.status(endpoint).await
    }

    /// [`Client::status`] of every known endpoint, queried concurrently, in
    /// the order of [`Client::endpoints`].
    pub async fn cluster_status(&self) -> Vec<(String, Result<StatusResponse>)> {
        let endpoints = self.endpoints();
        let replies =
            futures::future::join_all(endpoints.iter().map(|endpoint| self.status(endpoint))).await;
        endpoints.into_iter().zip(replies).collect()
    }

    /// The placement driver: stores, regions as their leaders reported
    /// them, store decommissioning.
    pub fn placement(&self) -> &PlacementDriverClient {
        &self.shared.placement
    }

    /// A timestamp from the cluster's timestamp oracle, greater than every
    /// timestamp this client returned before and every one the cluster
    /// handed out before the call. Concurrent calls share one request to the
    /// placement leader.
    pub async fn get_timestamp(&self) -> Result<Timestamp> {
        let tso = match self.shared.tso.get() {
            Some(tso) => tso,
            None => {
                let started = TsoClient::start(&self.shared.config)?;
                // A concurrent first call may have won; its task serves both.
                self.shared.tso.get_or_init(|| started)
            }
        };
        tso.get_timestamp().await
    }

    /// Where requests go and what the client knows of the regions.
    pub(crate) fn routing(&self) -> &Routing {
        &self.shared.routing
    }

    /// The configuration the client was connected with.
    pub(crate) fn config(&self) -> &ClientConfig {
        &self.shared.config
    }

    /// The header of `write`'s one request, with a fresh sequence.
    fn write_header(&self, write: &OpenWrite<'_>) -> RequestHeader {
        write_header(
            self.shared.client_id,
            self.shared.sequences.next(),
            write.answered_below,
        )
    }

    /// The region holding `key`, from the cache (refreshed once on a miss);
    /// `None` when the cluster told nothing that helps.
    async fn locate(&self, key: &[u8]) -> Option<Region> {
        self.shared
            .routing
            .lookup(|cache| cache.locate(key).map(|cached| cached.region.clone()))
            .await
    }

    /// The region holding the keys just below `end`, like [`Self::locate`].
    async fn locate_before(&self, end: &[u8]) -> Option<Region> {
        self.shared
            .routing
            .lookup(|cache| cache.locate_before(end).map(|cached| cached.region.clone()))
            .await
    }

    /// The cached regions ending and starting at `key`, if a boundary is
    /// there.
    fn regions_meeting_at(&self, key: &[u8]) -> Option<(Region, Region)> {
        let cache = self.shared.routing.cache();
        let right = cache.locate(key).filter(|c| c.region.start_key == key)?;
        let left = cache.locate_before(key)?;
        Some((left.region.clone(), right.region.clone()))
    }

    /// Sends a request about `key` to the region holding it, re-planning
    /// when the route is refused, until it is answered or fails for good.
    async fn send_to_key<M, R, F, Fut>(
        &self,
        kind: OpKind,
        key: &[u8],
        message: &M,
        call: F,
    ) -> Result<R>
    where
        M: Routed,
        F: Fn(KvStub, tonic::Request<M>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        let mut attempts = Attempts::new(&self.shared.config, kind);
        loop {
            let region = self.locate(key).await;
            match send_part(
                &self.shared.routing,
                &mut attempts,
                region.as_ref(),
                message,
                &call,
            )
            .await
            {
                Ok(response) => return Ok(response),
                Err(PartError::Stale) => continue,
                Err(PartError::Failed(error)) => return Err(error),
            }
        }
    }
}

fn write_header(client_id: u64, sequence: u64, answered_below: u64) -> RequestHeader {
    debug_assert!(answered_below <= sequence, "{answered_below} > {sequence}");
    RequestHeader {
        region_id: 0,
        region_epoch: None,
        client_id,
        sequence,
        answered_below,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn range_deletes_of_system_keys_only_are_refused_before_sending() {
        // Nobody listens there: a refusal must come without a request.
        let client = Client::connect(ClientConfig::new(["127.0.0.1:9"]))
            .await
            .unwrap();
        for start in [&b"\xFF\xFF"[..], b"\xFF\xFF\x00"] {
            let refused = client.delete_range(start, "").await;
            assert!(
                matches!(&refused, Err(ClientError::InvalidArgument(m)) if m.contains("0xFF 0xFF")),
                "{refused:?}"
            );
        }
    }
}
