//! A region's durable checkpoint: its key range's data plus everything the
//! region needs to restart at `applied_index` (region metadata, Raft
//! membership, the session table). The same bytes are the Raft snapshot a
//! lagging follower installs.
//!
//! A region frozen for a merge (see `merge`) carries its merge target
//! here, so it stays frozen across restarts and snapshots. Checkpoints
//! written before merges existed end after the session table: not merging.
//!
//! A periodic checkpoint is taken in the shard's turn as a
//! [`PendingCheckpoint`]: the region's small state copied, its key range
//! captured, not copied. The pairs are read from the capture off the turn,
//! while the region keeps applying, and still read as they were at
//! `applied_index`. A snapshot received from the leader is one too, already
//! encoded: written the same way, before the replica installs it.

use std::path::Path;

use engine::checkpoint::{Checkpoint, CheckpointHead};
use engine::store::RangeCapture;
use futures::channel::oneshot;
use protobuf::Message as _;
use raft::prelude::ConfState;

use crate::apply::SessionTable;
use crate::codec::{Decoder, Encoder};
use crate::error::RaftstoreError;
use crate::peer::{NEW_REGION_INDEX, NEW_REGION_TERM};
use crate::region::RegionMeta;

/// Everything a region restarts from, besides its WAL.
#[derive(Debug, Clone, PartialEq)]
pub struct RegionCheckpoint {
    pub region: RegionMeta,
    pub applied_index: u64,
    pub applied_term: u64,
    pub conf_state: ConfState,
    pub sessions: SessionTable,
    pub pairs: Vec<(Vec<u8>, Vec<u8>)>,
    /// The region is frozen for a merge into this region (as it was when
    /// the merge was prepared).
    pub merging: Option<RegionMeta>,
}

/// A background checkpoint's outcome: whether the checkpoint of
/// `region_id` at `applied_index` is durable now.
#[derive(Debug)]
pub struct CheckpointDone {
    pub region_id: u64,
    pub applied_index: u64,
    pub result: Result<(), RaftstoreError>,
}

/// A checkpoint for the shard's writer to make durable (see
/// `checkpoint_writer`), in one of two forms.
pub struct PendingCheckpoint {
    region_id: u64,
    applied_index: u64,
    content: PendingContent,
}

enum PendingContent {
    /// Taken from the region here (boxed: a received one is small).
    Captured(Box<CapturedCheckpoint>),
    /// A snapshot received from the region's leader, already encoded:
    /// written before the replica installs it (see `ShardCore::step`).
    Received(Box<ReceivedSnapshot>),
}

/// A received snapshot's data, and where its decoded form goes once it
/// is written, so that the install need not decode it in the turn.
struct ReceivedSnapshot {
    data: bytes::Bytes,
    decoded: oneshot::Sender<RegionCheckpoint>,
}

/// A checkpoint complete but for its pairs (empty), which are still to be
/// read from a capture of its range, taken at the same applied index as
/// the rest of it.
struct CapturedCheckpoint {
    checkpoint: RegionCheckpoint,
    pairs: RangeCapture,
}

impl PendingCheckpoint {
    pub fn new(checkpoint: RegionCheckpoint, pairs: RangeCapture) -> PendingCheckpoint {
        debug_assert!(
            checkpoint.pairs.is_empty(),
            "the pairs come from the capture"
        );
        PendingCheckpoint {
            region_id: checkpoint.region.id,
            applied_index: checkpoint.applied_index,
            content: PendingContent::Captured(Box::new(CapturedCheckpoint { checkpoint, pairs })),
        }
    }

    /// The data of a snapshot of `region_id` at `applied_index`; the
    /// writer refuses it unless its checksums verify and its head says
    /// the same region and index. Once it is written, the writer decodes
    /// it and sends the result to the receiver returned.
    pub fn received(
        region_id: u64,
        applied_index: u64,
        data: bytes::Bytes,
    ) -> (PendingCheckpoint, oneshot::Receiver<RegionCheckpoint>) {
        let (decoded, receiver) = oneshot::channel();
        let checkpoint = PendingCheckpoint {
            region_id,
            applied_index,
            content: PendingContent::Received(Box::new(ReceivedSnapshot { data, decoded })),
        };
        (checkpoint, receiver)
    }

    pub fn region_id(&self) -> u64 {
        self.region_id
    }

    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// Durably writes the checkpoint into `dir` (reading a captured one's
    /// pairs first: a copy of the whole range, so call it where that holds
    /// nothing up).
    pub fn write(self, dir: &Path) -> CheckpointDone {
        let (region_id, applied_index) = (self.region_id, self.applied_index);
        let result = match self.content {
            PendingContent::Captured(captured) => {
                let CapturedCheckpoint { checkpoint, pairs } = *captured;
                RegionCheckpoint {
                    pairs: pairs.pairs(),
                    ..checkpoint
                }
                .write(dir)
            }
            PendingContent::Received(received) => {
                let ReceivedSnapshot { data, decoded } = *received;
                let written =
                    engine::checkpoint::write_encoded(dir, region_id, applied_index, &data);
                if written.is_ok() {
                    // Checked whole by the write: only a bug fails here, and
                    // the install then decodes it itself.
                    if let Ok(checkpoint) = RegionCheckpoint::decode(&data) {
                        // The shard may have dropped the snapshot meanwhile.
                        let _ = decoded.send(checkpoint);
                    }
                }
                written.map_err(RaftstoreError::from)
            }
        };
        CheckpointDone {
            region_id,
            applied_index,
            result,
        }
    }
}

impl RegionCheckpoint {
    /// The starting checkpoint of `region` as a split creates it: at
    /// [`NEW_REGION_INDEX`], [`NEW_REGION_TERM`], with no pairs (a split's
    /// are read from the store, where they already are).
    pub fn new_region(
        region: RegionMeta,
        conf_state: ConfState,
        sessions: SessionTable,
    ) -> RegionCheckpoint {
        RegionCheckpoint {
            region,
            applied_index: NEW_REGION_INDEX,
            applied_term: NEW_REGION_TERM,
            conf_state,
            sessions,
            merging: None,
            pairs: Vec::new(),
        }
    }

    fn into_engine(self) -> Result<Checkpoint, RaftstoreError> {
        let mut enc = Encoder::new();
        self.region.encode(&mut enc);
        let cs = self
            .conf_state
            .write_to_bytes()
            .map_err(|e| RaftstoreError::Internal(format!("encode conf state: {e}")))?;
        enc.bytes(&cs);
        self.sessions.encode(&mut enc);
        if let Some(target) = &self.merging {
            enc.u8(1);
            target.encode(&mut enc);
        }
        Ok(Checkpoint {
            region_id: self.region.id,
            applied_index: self.applied_index,
            applied_term: self.applied_term,
            meta: enc.finish(),
            pairs: self.pairs,
        })
    }

    /// The checkpoint from its head (position and metadata) and pairs.
    fn from_engine(cp: Checkpoint) -> Result<Self, RaftstoreError> {
        let head = CheckpointHead {
            region_id: cp.region_id,
            applied_index: cp.applied_index,
            applied_term: cp.applied_term,
            meta: cp.meta,
        };
        let mut checkpoint = Self::from_head(&head)?;
        checkpoint.pairs = cp.pairs;
        Ok(checkpoint)
    }

    /// The checkpoint without its pairs.
    fn from_head(head: &CheckpointHead) -> Result<Self, RaftstoreError> {
        let mut dec = Decoder::new("checkpoint metadata", &head.meta);
        let region = RegionMeta::decode(&mut dec)?;
        let cs_bytes = dec.bytes()?;
        let conf_state = ConfState::parse_from_bytes(&cs_bytes).map_err(|e| {
            RaftstoreError::Corrupt(format!(
                "checkpoint conf state of region {}: {e}",
                head.region_id
            ))
        })?;
        let sessions = SessionTable::decode(&mut dec)?;
        let merging = if dec.is_at_end() {
            None
        } else {
            match dec.u8()? {
                1 => Some(RegionMeta::decode(&mut dec)?),
                tag => {
                    return Err(RaftstoreError::Corrupt(format!(
                        "checkpoint of region {}: merge tag {tag}",
                        head.region_id
                    )))
                }
            }
        };
        dec.finish()?;
        if region.id != head.region_id {
            return Err(RaftstoreError::Corrupt(format!(
                "checkpoint of region {} holds metadata of region {}",
                head.region_id, region.id
            )));
        }
        Ok(RegionCheckpoint {
            region,
            applied_index: head.applied_index,
            applied_term: head.applied_term,
            conf_state,
            sessions,
            pairs: Vec::new(),
            merging,
        })
    }

    /// The encoded form: the file's bytes and a Raft snapshot's data.
    pub fn encode(self) -> Result<Vec<u8>, RaftstoreError> {
        Ok(engine::checkpoint::encode(&self.into_engine()?))
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, RaftstoreError> {
        Self::from_engine(engine::checkpoint::decode(bytes)?)
    }

    /// Decodes all but the pairs (left empty), checking the checksums:
    /// what offering the bytes as a snapshot needs to know of them.
    pub fn decode_without_pairs(bytes: &[u8]) -> Result<Self, RaftstoreError> {
        Self::from_head(&engine::checkpoint::decode_head(bytes)?)
    }

    /// Writes durably (tmp file, fsync, rename), replacing the previous one.
    pub fn write(self, dir: &Path) -> Result<(), RaftstoreError> {
        engine::checkpoint::write(dir, &self.into_engine()?)?;
        Ok(())
    }

    /// Whether the region has a checkpoint in `dir`.
    pub fn exists(dir: &Path, region_id: u64) -> bool {
        engine::checkpoint::exists(dir, region_id)
    }

    pub fn read(dir: &Path, region_id: u64) -> Result<Option<Self>, RaftstoreError> {
        engine::checkpoint::read(dir, region_id)?
            .map(Self::from_engine)
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Region `id` over the whole keyspace at index 42, with one pair.
    fn sample(id: u64) -> RegionCheckpoint {
        RegionCheckpoint {
            region: RegionMeta::whole_keyspace(id, &[1, 2, 3]),
            applied_index: 42,
            applied_term: 3,
            conf_state: ConfState {
                voters: vec![1, 2, 3],
                ..Default::default()
            },
            sessions: SessionTable::default(),
            pairs: vec![(b"a".to_vec(), b"1".to_vec())],
            merging: None,
        }
    }

    #[test]
    fn round_trips_through_bytes() {
        let cp = sample(1);
        let bytes = cp.clone().encode().unwrap();
        assert_eq!(RegionCheckpoint::decode(&bytes).unwrap(), cp);
        assert!(RegionCheckpoint::decode(&bytes[..bytes.len() - 1]).is_err());
        let without_pairs = RegionCheckpoint {
            pairs: Vec::new(),
            ..cp
        };
        assert_eq!(
            RegionCheckpoint::decode_without_pairs(&bytes).unwrap(),
            without_pairs
        );
        assert!(RegionCheckpoint::decode_without_pairs(&bytes[..bytes.len() - 1]).is_err());
    }

    /// The writer writes a received snapshot, then hands its decoded form
    /// over; one that does not check is neither written nor handed over.
    #[test]
    fn a_received_snapshot_is_written_then_decoded() {
        let dir = tempfile::tempdir().unwrap();
        let cp = sample(9);
        let data = bytes::Bytes::from(cp.clone().encode().unwrap());
        let (write, mut decoded) = PendingCheckpoint::received(9, 42, data.clone());
        assert!(write.write(dir.path()).result.is_ok());
        assert_eq!(decoded.try_recv().unwrap(), Some(cp.clone()));
        assert_eq!(RegionCheckpoint::read(dir.path(), 9).unwrap(), Some(cp));

        let damaged = data.slice(..data.len() - 1);
        let (write, mut decoded) = PendingCheckpoint::received(8, 42, damaged);
        assert!(write.write(dir.path()).result.is_err());
        assert!(decoded.try_recv().is_err(), "nothing handed over");
        assert!(!RegionCheckpoint::exists(dir.path(), 8));
    }

    #[test]
    fn a_frozen_region_stays_frozen_through_its_checkpoint() {
        let cp = RegionCheckpoint {
            region: RegionMeta::whole_keyspace(1, &[1, 2, 3]),
            applied_index: 42,
            applied_term: 3,
            conf_state: ConfState {
                voters: vec![1, 2, 3],
                ..Default::default()
            },
            sessions: SessionTable::default(),
            pairs: Vec::new(),
            merging: Some(RegionMeta::whole_keyspace(7, &[1, 2, 3])),
        };
        let bytes = cp.clone().encode().unwrap();
        let decoded = RegionCheckpoint::decode(&bytes).unwrap();
        assert_eq!(decoded.merging.map(|t| t.id), Some(7));
        for cut in 1..40 {
            assert!(RegionCheckpoint::decode(&bytes[..bytes.len() - cut]).is_err());
        }
    }

    #[test]
    fn a_joint_configuration_with_learners_round_trips() {
        // Store 4 is promoted while 3 leaves; 5 is a learner: peers list all.
        let conf_state = ConfState {
            voters: vec![1, 2, 4],
            voters_outgoing: vec![1, 2, 3],
            learners: vec![5],
            auto_leave: true,
            ..Default::default()
        };
        let cp = RegionCheckpoint {
            region: RegionMeta::whole_keyspace(1, &[1, 2, 3]).with_membership(&conf_state),
            applied_index: 9,
            applied_term: 2,
            conf_state,
            sessions: SessionTable::default(),
            merging: None,
            pairs: Vec::new(),
        };
        let decoded = RegionCheckpoint::decode(&cp.clone().encode().unwrap()).unwrap();
        assert_eq!(decoded, cp);
        assert_eq!(decoded.region.epoch.conf_ver, 2);
        let stores: Vec<u64> = decoded.region.peers.iter().map(|p| p.store_id).collect();
        assert_eq!(stores, [1, 2, 3, 4, 5]);
        assert_eq!(crate::region::learners(&decoded.conf_state), [5]);
    }
}
