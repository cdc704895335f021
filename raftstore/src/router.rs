//! [`StoreRouter`]: the thread-safe handle the network side uses to reach
//! regions. It routes each request to the shard owning the region and
//! waits for the shard's answer; it never touches Raft state itself.

use std::sync::Arc;

use futures::channel::oneshot;
use raft::prelude::Message;

use crate::command::{
    ReadOp, ReadResult, RequestHeader, WriteCommand, WriteId, WriteOp, WriteResult,
};
use crate::error::RaftstoreError;
use crate::membership::PeerChange;
use crate::peer::{MergeSource, RegionStatus};
use crate::region::RegionMeta;
use crate::region_map::RegionMap;
use crate::shard_core::{RegionCounts, ShardMsg, StatusScope};

struct RouterInner {
    shards: Vec<flume::Sender<ShardMsg>>,
    /// Regions on this node, kept current by the shards.
    regions: Arc<RegionMap>,
    shard_of: Box<dyn Fn(u64) -> usize + Send + Sync>,
}

/// How often a request that names no region is re-routed when the region
/// it was routed to turns out not to hold its key (it split meanwhile).
const REROUTES_MAX: usize = 3;

#[derive(Clone)]
pub struct StoreRouter {
    inner: Arc<RouterInner>,
}

impl StoreRouter {
    pub(crate) fn new(
        shards: Vec<flume::Sender<ShardMsg>>,
        regions: Arc<RegionMap>,
        shard_of: impl Fn(u64) -> usize + Send + Sync + 'static,
    ) -> Self {
        StoreRouter {
            inner: Arc::new(RouterInner {
                shards,
                regions,
                shard_of: Box::new(shard_of),
            }),
        }
    }

    /// The region on this node that holds `key`.
    pub fn region_for_key(&self, key: &[u8]) -> Option<RegionMeta> {
        self.inner.regions.region_for_key(key)
    }

    /// Waits until regions on this node changed in a way the placement
    /// driver waits to see (created, split, merged, membership changed, led
    /// here anew) and returns their ids; see [`RegionMap::take_changed`].
    /// For one caller: the node's placement heartbeat.
    pub async fn changed_regions(&self) -> Vec<u64> {
        self.inner.regions.take_changed().await
    }

    fn resolve(&self, header: &RequestHeader, key: &[u8]) -> Result<u64, RaftstoreError> {
        if header.region_id != 0 {
            return Ok(header.region_id);
        }
        self.region_for_key(key)
            .map(|r| r.id)
            .ok_or(RaftstoreError::RegionNotFound { region_id: 0 })
    }

    async fn call<T>(
        &self,
        region_id: u64,
        make: impl FnOnce(oneshot::Sender<Result<T, RaftstoreError>>) -> ShardMsg,
    ) -> Result<T, RaftstoreError> {
        let shard = (self.inner.shard_of)(region_id);
        let tx = self
            .inner
            .shards
            .get(shard)
            .ok_or(RaftstoreError::RegionNotFound { region_id })?;
        let (reply, rx) = oneshot::channel();
        tx.send_async(make(reply))
            .await
            .map_err(|_| RaftstoreError::ShuttingDown)?;
        rx.await.map_err(|_| RaftstoreError::ShuttingDown)?
    }

    /// Replicates and applies a write; answers with what it produced.
    pub async fn write(
        &self,
        header: RequestHeader,
        id: WriteId,
        answered_below: u64,
        op: WriteOp,
    ) -> Result<WriteResult, RaftstoreError> {
        self.rerouted(header, op, first_key, |region_id, op| {
            let cmd = Box::new(WriteCommand {
                header,
                id,
                answered_below,
                op,
            });
            self.call(region_id, move |reply| ShardMsg::Write {
                region_id,
                cmd,
                reply,
            })
        })
        .await
    }

    /// Splits the region holding `split_key` (or `header.region_id`) at it.
    pub async fn split(
        &self,
        header: RequestHeader,
        split_key: Vec<u8>,
    ) -> Result<WriteResult, RaftstoreError> {
        let region_id = self.resolve(&header, &split_key)?;
        self.call(region_id, |reply| ShardMsg::Split {
            region_id,
            epoch: header.epoch,
            split_key,
            reply,
        })
        .await
    }

    /// Changes the membership of region `header.region_id` (on its leader)
    /// and answers with the region once the change is applied.
    pub async fn change_peers(
        &self,
        header: RequestHeader,
        changes: Vec<PeerChange>,
    ) -> Result<RegionStatus, RaftstoreError> {
        self.call(header.region_id, |reply| ShardMsg::ChangePeers {
            header,
            changes,
            reply,
        })
        .await
    }

    /// Starts handing the leadership of region `header.region_id` to store
    /// `to_store`.
    pub async fn transfer_leader(
        &self,
        header: RequestHeader,
        to_store: u64,
    ) -> Result<(), RaftstoreError> {
        self.call(header.region_id, |reply| ShardMsg::TransferLeader {
            header,
            to_store,
            reply,
        })
        .await
    }

    /// Splits region `header.region_id` at the middle key of its data, as
    /// its leader measures it now.
    pub async fn split_at_middle(
        &self,
        header: RequestHeader,
    ) -> Result<WriteResult, RaftstoreError> {
        let region_id = header.region_id;
        self.call(region_id, |reply| ShardMsg::SplitAtMiddle {
            region_id,
            epoch: header.epoch,
            reply,
        })
        .await
    }

    /// Freezes region `source_id` for a merge into its neighbour
    /// `target_id` (on the source's leader) and answers with the frozen
    /// source once that is applied; at once if it already is frozen for it.
    pub async fn prepare_merge(
        &self,
        source_id: u64,
        target_id: u64,
    ) -> Result<WriteResult, RaftstoreError> {
        self.call(source_id, |reply| ShardMsg::PrepareMerge {
            source_id,
            target_id,
            reply,
        })
        .await
    }

    /// The final state of the frozen region `region_id`, as this store's
    /// replica holds it.
    pub async fn merge_source(&self, region_id: u64) -> Result<MergeSource, RaftstoreError> {
        self.call(region_id, |reply| ShardMsg::MergeSource {
            region_id,
            reply,
        })
        .await
    }

    /// Runs `attempt` with `op` on the region `header` names, or else on
    /// the region holding `key(op)`; a region that no longer holds the key
    /// (it split since it was looked up) refused it unexecuted, so it is
    /// routed again. `op` is copied only for attempts that may be retried:
    /// never when the request names its region.
    async fn rerouted<O: Clone, T, F>(
        &self,
        header: RequestHeader,
        op: O,
        key: impl Fn(&O) -> &[u8],
        attempt: impl Fn(u64, O) -> F,
    ) -> Result<T, RaftstoreError>
    where
        F: std::future::Future<Output = Result<T, RaftstoreError>>,
    {
        let mut tries = 0;
        loop {
            let region_id = self.resolve(&header, key(&op))?;
            if header.region_id != 0 || tries == REROUTES_MAX {
                return attempt(region_id, op).await;
            }
            match attempt(region_id, op.clone()).await {
                Err(RaftstoreError::KeyNotInRegion { .. }) => tries += 1,
                result => return result,
            }
        }
    }

    /// A linearizable read through ReadIndex on the region's leader.
    pub async fn read(
        &self,
        header: RequestHeader,
        op: ReadOp,
    ) -> Result<ReadResult, RaftstoreError> {
        self.rerouted(header, op, read_key, |region_id, op| {
            self.call(region_id, move |reply| ShardMsg::Read {
                region_id,
                header,
                op: Box::new(op),
                reply,
            })
        })
        .await
    }

    /// Hands an incoming Raft message to its region's shard; drops it if the
    /// shard's inbox is full (Raft retransmits).
    pub fn deliver(&self, region_id: u64, msg: Message) {
        let shard = (self.inner.shard_of)(region_id);
        if let Some(tx) = self.inner.shards.get(shard) {
            if tx
                .try_send(ShardMsg::Raft {
                    region_id,
                    msg: Box::new(msg),
                })
                .is_err()
            {
                tracing::debug!(region = region_id, "shard inbox full; raft message dropped");
            }
        }
    }

    /// Every region's status on this node.
    pub async fn status(&self) -> Vec<RegionStatus> {
        self.status_in(StatusScope::All).await
    }

    /// The status of the regions `scope` names, by region id.
    pub async fn status_in(&self, scope: StatusScope) -> Vec<RegionStatus> {
        let shards: &[flume::Sender<ShardMsg>] = match scope {
            StatusScope::Region(id) => {
                let shard = (self.inner.shard_of)(id);
                self.inner.shards.get(shard..=shard).unwrap_or_default()
            }
            _ => &self.inner.shards,
        };
        let mut all = Vec::new();
        for tx in shards {
            let (reply, rx) = oneshot::channel();
            if tx
                .send_async(ShardMsg::Status { scope, reply })
                .await
                .is_ok()
            {
                if let Ok(regions) = rx.await {
                    all.extend(regions);
                }
            }
        }
        all.sort_by_key(|s| s.region.id);
        all
    }

    /// How many regions this store runs and leads.
    pub async fn region_counts(&self) -> RegionCounts {
        let mut total = RegionCounts::default();
        for tx in &self.inner.shards {
            let (reply, rx) = oneshot::channel();
            if tx
                .send_async(ShardMsg::RegionCounts { reply })
                .await
                .is_ok()
            {
                if let Ok(counts) = rx.await {
                    total.regions += counts.regions;
                    total.leaders += counts.leaders;
                }
            }
        }
        total
    }

    /// Asks every shard to stop after its current turn.
    pub fn shutdown(&self) {
        for tx in &self.inner.shards {
            let _ = tx.try_send(ShardMsg::Shutdown);
        }
    }
}

fn first_key(op: &WriteOp) -> &[u8] {
    match op {
        WriteOp::Put { key, .. }
        | WriteOp::Delete { key }
        | WriteOp::CompareAndSwap { key, .. } => key,
        WriteOp::BatchPut { pairs } => pairs.first().map_or(&[][..], |(k, _)| k.as_slice()),
        WriteOp::DeleteRange { start, .. } => start,
        WriteOp::Split { split_key, .. } => split_key,
        // Merge commands always name their region.
        WriteOp::PrepareMerge { .. } | WriteOp::CommitMerge { .. } | WriteOp::RollbackMerge => &[],
    }
}

fn read_key(op: &ReadOp) -> &[u8] {
    match op {
        ReadOp::Get { key } => key,
        ReadOp::BatchGet { keys } => keys.first().map_or(&[][..], Vec::as_slice),
        ReadOp::Scan { start, .. } => start,
    }
}
