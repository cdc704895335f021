//! The shard loop: one glommio executor (a core) running every region
//! assigned to it, with one shared WAL.
//!
//! A loop turn: drain the inbox (client requests, Raft messages) in a batch,
//! tick on schedule, start ReadIndex rounds, then collect every region's
//! Ready, write all their records as ONE WAL batch (one write, one
//! fdatasync), and only then send the messages that depend on it and apply
//! what committed. Leaders' own appends go out before the sync (raft-rs
//! allows the leader to persist in parallel with replication).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use engine::store::KvStore;
use engine::wal::{ShardWal, WalOptions, WalRecord};
use futures::channel::oneshot;
use futures::future::{select, Either};
use raft::prelude::Message;

use crate::checkpoint::RegionCheckpoint;
use crate::command::{ReadOp, RequestHeader, WriteCommand};
use crate::config::StoreConfig;
use crate::error::RaftstoreError;
use crate::peer::{Peer, ReadReply, RegionStatus, TurnOutput, WriteReply};
use crate::recovery::recover_log;
use crate::region::RegionMeta;
use crate::storage::RegionStorage;
use crate::transport::MessageSink;

/// What a shard's inbox carries.
pub enum ShardMsg {
    Write {
        region_id: u64,
        cmd: WriteCommand,
        reply: WriteReply,
    },
    Read {
        region_id: u64,
        header: RequestHeader,
        op: ReadOp,
        reply: ReadReply,
    },
    Raft {
        region_id: u64,
        msg: Box<Message>,
    },
    Status {
        reply: oneshot::Sender<Vec<RegionStatus>>,
    },
    Shutdown,
}

/// A background checkpoint's outcome: (region, applied index written).
type CheckpointDone = (u64, Result<u64, RaftstoreError>);

/// How many inbox messages one turn takes before it processes Readies.
const INBOX_BATCH_MAX: usize = 4096;

pub(crate) struct Shard {
    cfg: Arc<StoreConfig>,
    peers: BTreeMap<u64, Peer>,
    wal: ShardWal,
    sink: Arc<dyn MessageSink>,
    checkpoint_dir: PathBuf,
    checkpoint_done: (
        flume::Sender<CheckpointDone>,
        flume::Receiver<CheckpointDone>,
    ),
}

impl Shard {
    /// Opens the shard's WAL and brings up its regions: from their
    /// checkpoint and the WAL, or freshly bootstrapped.
    pub(crate) async fn open(
        cfg: Arc<StoreConfig>,
        shard_index: usize,
        regions: Vec<RegionMeta>,
        store: Arc<KvStore>,
        sink: Arc<dyn MessageSink>,
    ) -> Result<Shard, RaftstoreError> {
        let wal_dir = cfg
            .data_dir
            .join("wal")
            .join(format!("shard-{shard_index}"));
        let checkpoint_dir = cfg.data_dir.join("store");
        for dir in [&wal_dir, &checkpoint_dir] {
            std::fs::create_dir_all(dir)
                .map_err(|e| RaftstoreError::Internal(format!("create {}: {e}", dir.display())))?;
        }
        let (wal, recovery) = ShardWal::open(&wal_dir, WalOptions::default()).await?;
        if let Some(tear) = &recovery.tear {
            tracing::warn!(shard = shard_index, segment = %tear.segment.display(), offset = tear.offset, reason = %tear.reason, "WAL recovery stopped at a torn record");
        }
        let mut by_region: HashMap<u64, Vec<&WalRecord>> = HashMap::new();
        for rec in &recovery.records {
            by_region.entry(rec.region_id).or_default().push(rec);
        }
        let mut peers = BTreeMap::new();
        for bootstrap in regions {
            let id = bootstrap.id;
            let mut checkpoint = match RegionCheckpoint::read(&checkpoint_dir, id)? {
                Some(cp) => cp,
                None => {
                    let cp = bootstrap_checkpoint(bootstrap);
                    cp.clone().write(&checkpoint_dir)?;
                    cp
                }
            };
            for (k, v) in checkpoint.pairs.drain(..) {
                store.put(k, v);
            }
            let log = recover_log(&checkpoint, by_region.remove(&id).unwrap_or_default())?;
            tracing::info!(
                region = id,
                applied = checkpoint.applied_index,
                last = log
                    .entries
                    .last()
                    .map_or(checkpoint.applied_index, |e| e.index),
                commit = log.hard_state.commit,
                "region recovered"
            );
            let storage = RegionStorage::new(
                id,
                checkpoint_dir.clone(),
                log.hard_state,
                checkpoint.conf_state.clone(),
                (checkpoint.applied_index, checkpoint.applied_term),
                log.entries,
            );
            let raft_cfg = cfg.raft_config(checkpoint.applied_index);
            let raw = raft::RawNode::new(&raft_cfg, storage, &crate::logger::raft_logger(id))?;
            let state = crate::peer::PeerState {
                checkpoint,
                raw,
                checkpoint_dir: checkpoint_dir.clone(),
            };
            peers.insert(id, Peer::new(state, store.clone(), cfg.request_timeout));
        }
        Ok(Shard {
            cfg,
            peers,
            wal,
            sink,
            checkpoint_dir,
            checkpoint_done: flume::unbounded(),
        })
    }

    pub(crate) async fn run(mut self, inbox: flume::Receiver<ShardMsg>) {
        let tick = self.cfg.tick;
        let mut next_tick = Instant::now() + tick;
        loop {
            let now = Instant::now();
            let mut shutdown = false;
            if now < next_tick && inbox.is_empty() {
                match select(
                    inbox.recv_async(),
                    Box::pin(glommio::timer::sleep(next_tick - now)),
                )
                .await
                {
                    Either::Left((Ok(msg), _)) => shutdown |= self.handle(msg),
                    Either::Left((Err(_), _)) => shutdown = true,
                    Either::Right(_) => {}
                }
            }
            for msg in inbox.try_iter().take(INBOX_BATCH_MAX) {
                shutdown |= self.handle(msg);
            }
            let now = Instant::now();
            if now >= next_tick {
                for peer in self.peers.values_mut() {
                    peer.tick();
                    peer.expire(now);
                }
                next_tick = (next_tick + tick).max(now);
            }
            if let Err(err) = self.turn().await {
                tracing::error!(%err, "shard turn failed; stopping the shard");
                break;
            }
            if shutdown {
                break;
            }
            glommio::yield_if_needed().await;
        }
        self.shutdown();
    }

    /// Returns true on shutdown.
    fn handle(&mut self, msg: ShardMsg) -> bool {
        let now = Instant::now();
        match msg {
            ShardMsg::Write {
                region_id,
                cmd,
                reply,
            } => match self.peers.get_mut(&region_id) {
                Some(peer) => peer.propose_write(cmd, reply, now),
                None => {
                    let _ = reply.send(Err(RaftstoreError::RegionNotFound { region_id }));
                }
            },
            ShardMsg::Read {
                region_id,
                header,
                op,
                reply,
            } => match self.peers.get_mut(&region_id) {
                Some(peer) => peer.queue_read(header, op, reply, now),
                None => {
                    let _ = reply.send(Err(RaftstoreError::RegionNotFound { region_id }));
                }
            },
            ShardMsg::Raft { region_id, msg } => match self.peers.get_mut(&region_id) {
                Some(peer) => peer.step(*msg),
                None => tracing::debug!(
                    region = region_id,
                    "message for a region not on this shard dropped"
                ),
            },
            ShardMsg::Status { reply } => {
                let _ = reply.send(self.peers.values().map(Peer::status).collect());
            }
            ShardMsg::Shutdown => return true,
        }
        false
    }

    /// Readies of every region -> one durable WAL batch -> messages, apply.
    async fn turn(&mut self) -> Result<(), RaftstoreError> {
        let mut out = TurnOutput::default();
        if self.finish_checkpoints(&mut out) {
            let purged = self.wal.purge_obsolete_segments().await?;
            if purged > 0 {
                tracing::debug!(purged, "obsolete WAL segments deleted");
            }
        }
        let mut readies = Vec::new();
        for (id, peer) in self.peers.iter_mut() {
            peer.flush_reads();
            if let Some(rd) = peer.collect_ready(&mut out)? {
                readies.push((*id, rd));
            }
        }
        // The leader's appends may travel while it syncs its own copy.
        self.send(std::mem::take(&mut out.messages));
        if !out.wal.is_empty() {
            self.wal.append(&out.wal).await?;
            out.wal = Default::default();
        }
        for (id, rd) in readies {
            if let Some(peer) = self.peers.get_mut(&id) {
                peer.after_persist(rd, &mut out)?;
            }
        }
        self.send(std::mem::take(&mut out.messages));
        // Commit-index updates learnt in phase two ride with the next batch
        // (recovery raises commit to the checkpoint, so nothing depends on
        // them being durable now).
        self.start_checkpoints();
        Ok(())
    }

    fn send(&self, messages: Vec<(u64, u64, Message)>) {
        if messages.is_empty() {
            return;
        }
        let mut by_node: HashMap<u64, Vec<(u64, Message)>> = HashMap::new();
        for (to, region, msg) in messages {
            by_node.entry(to).or_default().push((region, msg));
        }
        for (to, msgs) in by_node {
            self.sink.send(to, msgs);
        }
    }

    fn start_checkpoints(&mut self) {
        for (id, peer) in self.peers.iter_mut() {
            let Some(cp) = peer.checkpoint_if_due(self.cfg.checkpoint_every_entries) else {
                continue;
            };
            let (id, index, dir, done) = (
                *id,
                cp.applied_index,
                self.checkpoint_dir.clone(),
                self.checkpoint_done.0.clone(),
            );
            glommio::spawn_local(async move {
                let result = glommio::executor()
                    .spawn_blocking(move || cp.write(&dir))
                    .await
                    .map(|()| index);
                let _ = done.send((id, result));
            })
            .detach();
        }
    }

    /// Returns true when some checkpoint completed (the WAL may be purged).
    fn finish_checkpoints(&mut self, out: &mut TurnOutput) -> bool {
        let mut any = false;
        for (id, result) in self.checkpoint_done.1.try_iter() {
            let Some(peer) = self.peers.get_mut(&id) else {
                continue;
            };
            match result {
                Ok(index) => {
                    peer.on_checkpoint_written(index, out);
                    self.wal.compact_region(id, index);
                    any = true;
                    tracing::debug!(region = id, index, "checkpoint written; log compacted");
                }
                Err(err) => {
                    tracing::error!(region = id, %err, "checkpoint failed; will retry");
                    peer.on_checkpoint_failed();
                }
            }
        }
        any
    }

    fn shutdown(&mut self) {
        tracing::info!("shard stopping");
    }
}

fn bootstrap_checkpoint(region: RegionMeta) -> RegionCheckpoint {
    let voters = region.peers.iter().map(|p| p.id).collect();
    RegionCheckpoint {
        region,
        applied_index: 0,
        applied_term: 0,
        conf_state: raft::prelude::ConfState {
            voters,
            ..Default::default()
        },
        sessions: Default::default(),
        pairs: Vec::new(),
    }
}
