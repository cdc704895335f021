//! The `flotilla.kv.Kv` service: validates each request, hands it to the
//! region's shard through the [`StoreRouter`], and maps the outcome to a
//! response or an actionable status. Every key and range passes through
//! [`RequestLimits`], which also keeps users out of the reserved system
//! keyspace. The admin calls (split, merge, leader transfer, membership
//! changes) go to the region's leader like writes; `CommitMerge` is the
//! merge coordinator's call between nodes.

use std::sync::Arc;

use engine::store::KvStore;
use flotilla_proto::kvpb::{self, kv_server::Kv, peer_change};
use raftstore::command::{
    ReadOp, ReadResult, RequestHeader, WriteCommand, WriteId, WriteOp, WriteResult,
};
use raftstore::membership::{PeerChange, PeerChangeKind};
use raftstore::region::RegionEpoch;
use raftstore::{RaftstoreError, StoreRouter};
use tonic::{Request, Response, Status};

use crate::error_status::{region_to_proto, to_status};
use crate::limits::RequestLimits;
use crate::members::Members;
use crate::merge_coordinator::MergeCoordinator;

/// How long a status request waits for the shards before it reports one
/// stalled: a healthy shard answers within one turn (milliseconds).
const SHARD_STATUS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

pub struct KvService {
    pub node_id: u64,
    pub client_addr: String,
    pub router: StoreRouter,
    /// The node's state-machine store (for its key count in `Status`).
    pub store: Arc<KvStore>,
    pub members: Members,
    pub limits: RequestLimits,
    pub merges: Arc<MergeCoordinator>,
}

fn header(h: Option<kvpb::RequestHeader>) -> (RequestHeader, WriteId) {
    let h = h.unwrap_or_default();
    let epoch = h.region_epoch.map(|e| RegionEpoch {
        conf_ver: e.conf_ver,
        version: e.version,
    });
    (
        RequestHeader {
            region_id: h.region_id,
            epoch,
        },
        WriteId {
            client_id: h.client_id,
            sequence: h.sequence,
        },
    )
}

/// The header's `answered_below`, refused when above the write's own
/// sequence: the store would take the write for a late copy of itself.
fn answered_below(h: Option<&kvpb::RequestHeader>) -> Result<u64, Status> {
    let Some(h) = h else { return Ok(0) };
    if h.answered_below > h.sequence {
        return Err(Status::invalid_argument(format!(
            "answered_below {} is above the write's own sequence {}: a client \
             cannot have the answer of a write it has not sent",
            h.answered_below, h.sequence
        )));
    }
    Ok(h.answered_below)
}

impl KvService {
    async fn write(
        &self,
        h: Option<kvpb::RequestHeader>,
        op: WriteOp,
    ) -> Result<WriteResult, Status> {
        let started = std::time::Instant::now();
        let answered_below = answered_below(h.as_ref())?;
        let (header, id) = header(h);
        let result = self.router.write(header, id, answered_below, op).await;
        crate::metrics::observe_request("write", result.is_ok(), started);
        result.map_err(|e| to_status(e, &self.members))
    }

    async fn read(&self, h: Option<kvpb::RequestHeader>, op: ReadOp) -> Result<ReadResult, Status> {
        let started = std::time::Instant::now();
        let (header, _) = header(h);
        let result = self.router.read(header, op).await;
        crate::metrics::observe_request("read", result.is_ok(), started);
        result.map_err(|e| to_status(e, &self.members))
    }
}

/// The header of an admin request about one region: it must name it.
fn region_header(h: Option<kvpb::RequestHeader>, what: &str) -> Result<RequestHeader, Status> {
    let (header, _) = header(h);
    if header.region_id == 0 {
        return Err(Status::invalid_argument(format!(
            "{what} needs the region's id in header.region_id"
        )));
    }
    Ok(header)
}

fn peer_change(change: &kvpb::PeerChange) -> Result<PeerChange, Status> {
    let kind = match peer_change::Kind::try_from(change.kind) {
        Ok(peer_change::Kind::AddLearner) => PeerChangeKind::AddLearner,
        Ok(peer_change::Kind::Promote) => PeerChangeKind::Promote,
        Ok(peer_change::Kind::Remove) => PeerChangeKind::Remove,
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "unknown peer change kind {}",
                change.kind
            )))
        }
    };
    Ok(PeerChange {
        kind,
        store_id: change.store_id,
    })
}

fn unexpected<T>(what: &str) -> Result<T, Status> {
    Err(Status::internal(format!(
        "{what}: the store produced an unexpected result kind"
    )))
}

fn pairs(ps: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<kvpb::KvPair> {
    ps.into_iter()
        .map(|(key, value)| kvpb::KvPair { key, value })
        .collect()
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn get(
        &self,
        req: Request<kvpb::GetRequest>,
    ) -> Result<Response<kvpb::GetResponse>, Status> {
        let req = req.into_inner();
        self.limits.key(&req.key)?;
        match self.read(req.header, ReadOp::Get { key: req.key }).await? {
            ReadResult::Value(v) => Ok(Response::new(kvpb::GetResponse {
                found: v.is_some(),
                value: v.unwrap_or_default(),
            })),
            ReadResult::Pairs(_) => unexpected("get"),
        }
    }

    async fn batch_get(
        &self,
        req: Request<kvpb::BatchGetRequest>,
    ) -> Result<Response<kvpb::BatchGetResponse>, Status> {
        let req = req.into_inner();
        self.limits.batch(req.keys.len())?;
        for k in &req.keys {
            self.limits.key(k)?;
        }
        match self
            .read(req.header, ReadOp::BatchGet { keys: req.keys })
            .await?
        {
            ReadResult::Pairs(ps) => Ok(Response::new(kvpb::BatchGetResponse { pairs: pairs(ps) })),
            ReadResult::Value(_) => unexpected("batch get"),
        }
    }

    async fn put(
        &self,
        req: Request<kvpb::PutRequest>,
    ) -> Result<Response<kvpb::PutResponse>, Status> {
        let req = req.into_inner();
        self.limits.key(&req.key)?;
        self.limits.value(&req.value)?;
        self.write(
            req.header,
            WriteOp::Put {
                key: req.key,
                value: req.value,
            },
        )
        .await?;
        Ok(Response::new(kvpb::PutResponse {}))
    }

    async fn batch_put(
        &self,
        req: Request<kvpb::BatchPutRequest>,
    ) -> Result<Response<kvpb::BatchPutResponse>, Status> {
        let req = req.into_inner();
        self.limits.batch(req.pairs.len())?;
        for p in &req.pairs {
            self.limits.key(&p.key)?;
            self.limits.value(&p.value)?;
        }
        let total: usize = req.pairs.iter().map(|p| p.key.len() + p.value.len()).sum();
        if total > self.limits.value_bytes_max {
            return Err(Status::invalid_argument(format!(
                "batch carries {total} bytes; the limit is {} bytes: split it",
                self.limits.value_bytes_max
            )));
        }
        let pairs = req.pairs.into_iter().map(|p| (p.key, p.value)).collect();
        self.write(req.header, WriteOp::BatchPut { pairs }).await?;
        Ok(Response::new(kvpb::BatchPutResponse {}))
    }

    async fn delete(
        &self,
        req: Request<kvpb::DeleteRequest>,
    ) -> Result<Response<kvpb::DeleteResponse>, Status> {
        let req = req.into_inner();
        self.limits.key(&req.key)?;
        match self
            .write(req.header, WriteOp::Delete { key: req.key })
            .await?
        {
            WriteResult::Deleted { existed } => Ok(Response::new(kvpb::DeleteResponse { existed })),
            _ => unexpected("delete"),
        }
    }

    async fn delete_range(
        &self,
        req: Request<kvpb::DeleteRangeRequest>,
    ) -> Result<Response<kvpb::DeleteRangeResponse>, Status> {
        let req = req.into_inner();
        if !req.end_key.is_empty() && req.end_key <= req.start_key {
            return Err(Status::invalid_argument(
                "end_key must be greater than start_key (or empty for unbounded)",
            ));
        }
        let Some((start, end)) = self.limits.user_range(&req.start_key, &req.end_key)? else {
            // Only system keys in range: nothing a user may delete.
            return Ok(Response::new(kvpb::DeleteRangeResponse { deleted: 0 }));
        };
        match self
            .write(req.header, WriteOp::DeleteRange { start, end })
            .await?
        {
            WriteResult::DeletedRange { count } => {
                Ok(Response::new(kvpb::DeleteRangeResponse { deleted: count }))
            }
            _ => unexpected("delete range"),
        }
    }

    async fn scan(
        &self,
        req: Request<kvpb::ScanRequest>,
    ) -> Result<Response<kvpb::ScanResponse>, Status> {
        let req = req.into_inner();
        if !req.end_key.is_empty() && req.end_key < req.start_key {
            return Err(Status::invalid_argument(
                "end_key must not be less than start_key (or empty for unbounded)",
            ));
        }
        let Some((start, end)) = self.limits.user_range(&req.start_key, &req.end_key)? else {
            // Only system keys in range: nothing a user may see.
            return Ok(Response::new(kvpb::ScanResponse { pairs: Vec::new() }));
        };
        let op = ReadOp::Scan {
            start,
            end,
            limit: self.limits.scan_limit(req.limit),
            reverse: req.reverse,
        };
        match self.read(req.header, op).await? {
            ReadResult::Pairs(ps) => Ok(Response::new(kvpb::ScanResponse { pairs: pairs(ps) })),
            ReadResult::Value(_) => unexpected("scan"),
        }
    }

    async fn compare_and_swap(
        &self,
        req: Request<kvpb::CompareAndSwapRequest>,
    ) -> Result<Response<kvpb::CompareAndSwapResponse>, Status> {
        let req = req.into_inner();
        self.limits.key(&req.key)?;
        self.limits.value(&req.expected_value)?;
        self.limits.value(&req.new_value)?;
        let op = WriteOp::CompareAndSwap {
            key: req.key,
            expected: (!req.expect_absent).then_some(req.expected_value),
            new: (!req.delete).then_some(req.new_value),
        };
        match self.write(req.header, op).await? {
            WriteResult::CompareAndSwap {
                succeeded,
                previous,
            } => Ok(Response::new(kvpb::CompareAndSwapResponse {
                succeeded,
                previous_found: previous.is_some(),
                previous_value: previous.unwrap_or_default(),
            })),
            _ => unexpected("compare and swap"),
        }
    }

    async fn split_region(
        &self,
        req: Request<kvpb::SplitRegionRequest>,
    ) -> Result<Response<kvpb::SplitRegionResponse>, Status> {
        let req = req.into_inner();
        let (header, _) = header(req.header);
        if req.at_middle_key {
            if !req.split_key.is_empty() || header.region_id == 0 {
                return Err(Status::invalid_argument(
                    "a split at the middle key names its region and no split key",
                ));
            }
        } else {
            self.limits.key(&req.split_key)?;
        }
        let started = std::time::Instant::now();
        let result = if req.at_middle_key {
            self.router.split_at_middle(header).await
        } else {
            self.router.split(header, req.split_key).await
        };
        crate::metrics::observe_request("split", result.is_ok(), started);
        match result.map_err(|e| to_status(e, &self.members))? {
            WriteResult::Split { left, right } => Ok(Response::new(kvpb::SplitRegionResponse {
                left: Some(region_to_proto(&left, &[])),
                right: Some(region_to_proto(&right, &[])),
            })),
            _ => unexpected("split region"),
        }
    }

    async fn status(
        &self,
        _req: Request<kvpb::StatusRequest>,
    ) -> Result<Response<kvpb::StatusResponse>, Status> {
        // A shard that does not answer is stalled (its turn never ends):
        // say so instead of hanging, so the caller and the log both show it.
        let regions = tokio::time::timeout(SHARD_STATUS_TIMEOUT, self.router.status())
            .await
            .map_err(|_| {
                tracing::error!(
                    timeout_ms = SHARD_STATUS_TIMEOUT.as_millis() as u64,
                    "a shard did not answer a status request; it is stalled"
                );
                Status::unavailable(format!(
                    "this node's shards did not answer within {SHARD_STATUS_TIMEOUT:?}: a shard is stalled; see the node's log"
                ))
            })?
            .into_iter()
            .map(|s| kvpb::RegionStatus {
                region: Some(region_to_proto(&s.region, &s.learners)),
                leader_id: s.leader_id,
                term: s.term,
                commit_index: s.commit_index,
                applied_index: s.applied_index,
                role: s.role.to_string(),
                approximate_keys: s.size.keys,
                approximate_bytes: s.size.bytes,
                hibernating: s.hibernating,
                down_peers: s.down_peers,
                merging_into: s.merging_into.unwrap_or(0),
            })
            .collect();
        let members = self
            .members
            .all()
            .into_iter()
            .map(|(node_id, m)| kvpb::Member {
                node_id,
                peer_addr: m.peer_addr,
                client_addr: m.client_addr,
            })
            .collect();
        Ok(Response::new(kvpb::StatusResponse {
            node_id: self.node_id,
            client_addr: self.client_addr.clone(),
            members,
            regions,
            stored_keys: self.store.len() as u64,
        }))
    }

    async fn transfer_leader(
        &self,
        req: Request<kvpb::TransferLeaderRequest>,
    ) -> Result<Response<kvpb::TransferLeaderResponse>, Status> {
        let req = req.into_inner();
        let header = region_header(req.header, "transfer leader")?;
        let started = std::time::Instant::now();
        let result = self.router.transfer_leader(header, req.to_store).await;
        crate::metrics::observe_request("transfer_leader", result.is_ok(), started);
        result.map_err(|e| to_status(e, &self.members))?;
        Ok(Response::new(kvpb::TransferLeaderResponse {}))
    }

    async fn merge_region(
        &self,
        req: Request<kvpb::MergeRegionRequest>,
    ) -> Result<Response<kvpb::MergeRegionResponse>, Status> {
        let req = req.into_inner();
        let source = region_header(req.header, "merge")?.region_id;
        let target = req.target_region_id;
        if target == 0 {
            return Err(Status::invalid_argument(
                "a merge names its target region in target_region_id",
            ));
        }
        let started = std::time::Instant::now();
        // Its own task: a caller that gives up (a timeout) must not cancel
        // a merge half-way, which would leave the source frozen until the
        // coordinator's resume pass.
        let merges = self.merges.clone();
        let result = tokio::spawn(async move { merges.merge(source, target).await })
            .await
            .unwrap_or_else(|err| {
                Err(raftstore::RaftstoreError::Internal(format!(
                    "the merge task failed: {err}"
                )))
            });
        crate::metrics::observe_request("merge", result.is_ok(), started);
        let region = result.map_err(|e| to_status(e, &self.members))?;
        Ok(Response::new(kvpb::MergeRegionResponse {
            region: Some(region),
        }))
    }

    async fn commit_merge(
        &self,
        req: Request<kvpb::CommitMergeRequest>,
    ) -> Result<Response<kvpb::CommitMergeResponse>, Status> {
        let cmd = WriteCommand::decode(&req.into_inner().command)
            .map_err(|e| Status::invalid_argument(format!("commit merge: {e}")))?;
        if !matches!(cmd.op, WriteOp::CommitMerge { .. }) || cmd.header.region_id == 0 {
            return Err(Status::invalid_argument(
                "commit merge carries a CommitMerge command naming its target",
            ));
        }
        let refused = |why: String| {
            Ok(Response::new(kvpb::CommitMergeResponse {
                region: None,
                refused: why,
            }))
        };
        match self
            .router
            .write(cmd.header, cmd.id, cmd.answered_below, cmd.op)
            .await
        {
            Ok(WriteResult::Region(region)) => Ok(Response::new(kvpb::CommitMergeResponse {
                region: Some(region_to_proto(&region, &[])),
                refused: String::new(),
            })),
            Ok(_) => unexpected("commit merge"),
            // Final: every replica refuses it alike, now and later.
            Err(
                err @ (RaftstoreError::EpochNotMatch { .. }
                | RaftstoreError::Refused(_)
                | RaftstoreError::InvalidRequest(_)),
            ) => refused(err.to_string()),
            Err(err) => Err(to_status(err, &self.members)),
        }
    }

    async fn change_peers(
        &self,
        req: Request<kvpb::ChangePeersRequest>,
    ) -> Result<Response<kvpb::ChangePeersResponse>, Status> {
        let req = req.into_inner();
        let header = region_header(req.header, "change peers")?;
        let changes = req
            .changes
            .iter()
            .map(peer_change)
            .collect::<Result<Vec<_>, _>>()?;
        let started = std::time::Instant::now();
        let result = self.router.change_peers(header, changes).await;
        crate::metrics::observe_request("change_peers", result.is_ok(), started);
        let status = result.map_err(|e| to_status(e, &self.members))?;
        Ok(Response::new(kvpb::ChangePeersResponse {
            region: Some(region_to_proto(&status.region, &status.learners)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answered_below_may_reach_the_write_but_not_pass_it() {
        let header = |sequence, answered_below| kvpb::RequestHeader {
            client_id: 7,
            sequence,
            answered_below,
            ..Default::default()
        };
        assert_eq!(answered_below(None).ok(), Some(0));
        assert_eq!(answered_below(Some(&header(5, 5))).ok(), Some(5));
        let refused = answered_below(Some(&header(5, 6))).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert!(refused
            .message()
            .contains("above the write's own sequence 5"));
    }
}
