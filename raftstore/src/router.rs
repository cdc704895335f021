//! [`StoreRouter`]: the thread-safe handle the network side uses to reach
//! regions. It routes each request to the shard owning the region and
//! waits for the shard's answer; it never touches Raft state itself.

use std::sync::{Arc, RwLock};

use futures::channel::oneshot;
use raft::prelude::Message;

use crate::command::{
    ReadOp, ReadResult, RequestHeader, WriteCommand, WriteId, WriteOp, WriteResult,
};
use crate::error::RaftstoreError;
use crate::peer::RegionStatus;
use crate::region::RegionMeta;
use crate::shard_core::ShardMsg;

struct RouterInner {
    shards: Vec<flume::Sender<ShardMsg>>,
    /// Regions on this node, sorted by start key.
    regions: RwLock<Vec<RegionMeta>>,
    shard_of: Box<dyn Fn(u64) -> usize + Send + Sync>,
}

#[derive(Clone)]
pub struct StoreRouter {
    inner: Arc<RouterInner>,
}

impl StoreRouter {
    pub(crate) fn new(
        shards: Vec<flume::Sender<ShardMsg>>,
        mut regions: Vec<RegionMeta>,
        shard_of: impl Fn(u64) -> usize + Send + Sync + 'static,
    ) -> Self {
        regions.sort_by(|a, b| a.start_key.cmp(&b.start_key));
        StoreRouter {
            inner: Arc::new(RouterInner {
                shards,
                regions: RwLock::new(regions),
                shard_of: Box::new(shard_of),
            }),
        }
    }

    /// The region on this node that holds `key`.
    pub fn region_for_key(&self, key: &[u8]) -> Option<RegionMeta> {
        let regions = self.inner.regions.read().unwrap_or_else(|p| p.into_inner());
        regions.iter().find(|r| r.contains_key(key)).cloned()
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
        op: WriteOp,
    ) -> Result<WriteResult, RaftstoreError> {
        let key = first_key(&op);
        let region_id = self.resolve(&header, key)?;
        let cmd = WriteCommand { header, id, op };
        self.call(region_id, |reply| ShardMsg::Write {
            region_id,
            cmd,
            reply,
        })
        .await
    }

    /// A linearizable read through ReadIndex on the region's leader.
    pub async fn read(
        &self,
        header: RequestHeader,
        op: ReadOp,
    ) -> Result<ReadResult, RaftstoreError> {
        let key = match &op {
            ReadOp::Get { key } => key.as_slice(),
            ReadOp::BatchGet { keys } => keys.first().map_or(&[][..], Vec::as_slice),
            ReadOp::Scan { start, .. } => start.as_slice(),
        };
        let region_id = self.resolve(&header, key)?;
        self.call(region_id, |reply| ShardMsg::Read {
            region_id,
            header,
            op,
            reply,
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
        let mut all = Vec::new();
        for tx in &self.inner.shards {
            let (reply, rx) = oneshot::channel();
            if tx.send_async(ShardMsg::Status { reply }).await.is_ok() {
                if let Ok(regions) = rx.await {
                    all.extend(regions);
                }
            }
        }
        all.sort_by_key(|s| s.region.id);
        all
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
    }
}
