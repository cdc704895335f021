//! A region's durable checkpoint: its key range's data plus everything the
//! region needs to restart at `applied_index` (region metadata, Raft
//! membership, the session table). The same bytes are the Raft snapshot a
//! lagging follower installs.

use std::path::Path;

use engine::checkpoint::Checkpoint;
use protobuf::Message as _;
use raft::prelude::ConfState;

use crate::apply::SessionTable;
use crate::codec::{Decoder, Encoder};
use crate::error::RaftstoreError;
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
}

impl RegionCheckpoint {
    fn into_engine(self) -> Result<Checkpoint, RaftstoreError> {
        let mut enc = Encoder::new();
        self.region.encode(&mut enc);
        let cs = self
            .conf_state
            .write_to_bytes()
            .map_err(|e| RaftstoreError::Internal(format!("encode conf state: {e}")))?;
        enc.bytes(&cs);
        self.sessions.encode(&mut enc);
        Ok(Checkpoint {
            region_id: self.region.id,
            applied_index: self.applied_index,
            applied_term: self.applied_term,
            meta: enc.finish(),
            pairs: self.pairs,
        })
    }

    fn from_engine(cp: Checkpoint) -> Result<Self, RaftstoreError> {
        let mut dec = Decoder::new("checkpoint metadata", &cp.meta);
        let region = RegionMeta::decode(&mut dec)?;
        let cs_bytes = dec.bytes()?;
        let conf_state = ConfState::parse_from_bytes(&cs_bytes).map_err(|e| {
            RaftstoreError::Corrupt(format!(
                "checkpoint conf state of region {}: {e}",
                cp.region_id
            ))
        })?;
        let sessions = SessionTable::decode(&mut dec)?;
        dec.finish()?;
        if region.id != cp.region_id {
            return Err(RaftstoreError::Corrupt(format!(
                "checkpoint of region {} holds metadata of region {}",
                cp.region_id, region.id
            )));
        }
        Ok(RegionCheckpoint {
            region,
            applied_index: cp.applied_index,
            applied_term: cp.applied_term,
            conf_state,
            sessions,
            pairs: cp.pairs,
        })
    }

    /// The encoded form: the file's bytes and a Raft snapshot's data.
    pub fn encode(self) -> Result<Vec<u8>, RaftstoreError> {
        Ok(engine::checkpoint::encode(&self.into_engine()?))
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, RaftstoreError> {
        Self::from_engine(engine::checkpoint::decode(bytes)?)
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

    #[test]
    fn round_trips_through_bytes() {
        let cp = RegionCheckpoint {
            region: RegionMeta::whole_keyspace(1, &[1, 2, 3]),
            applied_index: 42,
            applied_term: 3,
            conf_state: ConfState {
                voters: vec![1, 2, 3],
                ..Default::default()
            },
            sessions: SessionTable::default(),
            pairs: vec![(b"a".to_vec(), b"1".to_vec())],
        };
        let bytes = cp.clone().encode().unwrap();
        assert_eq!(RegionCheckpoint::decode(&bytes).unwrap(), cp);
        assert!(RegionCheckpoint::decode(&bytes[..bytes.len() - 1]).is_err());
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
