//! Applying committed writes to the state-machine store, exactly once.
//!
//! Every replica applies the same log in the same order through
//! [`apply_write`], so every decision here (epoch checks, deduplication,
//! eviction from the session table) depends only on the log and the store,
//! never on time or local state.

use std::collections::{BTreeMap, VecDeque};

use engine::store::KvStore;

use crate::codec::{CodecError, Decoder, Encoder};
use crate::command::{WriteCommand, WriteId, WriteOp, WriteResult};
use crate::region::RegionMeta;

/// Why a committed write was not applied. Nothing changed; the client may
/// retry after refreshing its routing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApplyRejection {
    /// The command was built for an older epoch of this region.
    EpochNotMatch,
    /// A key of the command lies outside the region.
    KeyNotInRegion,
    /// A split or merge command: it changes the region's shape, and is
    /// applied by the peer (`Peer::apply_split`, `peer::merge`), never here.
    NotADataWrite,
}

/// Results of recently applied writes by [`WriteId`], so a retried write is
/// answered from here instead of being applied twice. Bounded in entries and
/// bytes; the oldest results are evicted first (in log order, so every
/// replica evicts the same ones).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SessionTable {
    results: BTreeMap<WriteId, RememberedResult>,
    order: VecDeque<WriteId>,
    bytes: usize,
}

/// A write result as the session table keeps it: 16 bytes, where a
/// [`WriteResult`] takes twelve times that for its rare large variants. A
/// region applies each write next to other regions' writes, so the table
/// is mostly out of cache: small B-tree nodes are fewer misses per lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RememberedResult {
    Done,
    Deleted { existed: bool },
    DeletedRange { count: u64 },
    Other(Box<WriteResult>),
}

impl RememberedResult {
    fn new(result: WriteResult) -> Self {
        match result {
            WriteResult::Done => RememberedResult::Done,
            WriteResult::Deleted { existed } => RememberedResult::Deleted { existed },
            WriteResult::DeletedRange { count } => RememberedResult::DeletedRange { count },
            other => RememberedResult::Other(Box::new(other)),
        }
    }

    fn result(&self) -> WriteResult {
        match self {
            RememberedResult::Done => WriteResult::Done,
            RememberedResult::Deleted { existed } => WriteResult::Deleted { existed: *existed },
            RememberedResult::DeletedRange { count } => WriteResult::DeletedRange { count: *count },
            RememberedResult::Other(result) => (**result).clone(),
        }
    }

    fn size_bytes(&self) -> usize {
        match self {
            RememberedResult::Other(result) => result.size_bytes(),
            _ => WriteResult::Done.size_bytes(),
        }
    }
}

/// How many write results the session table keeps.
pub const SESSION_ENTRIES_MAX: usize = 200_000;
/// How many bytes of write results the session table keeps.
pub const SESSION_BYTES_MAX: usize = 64 << 20;

impl SessionTable {
    /// The result of the write `id`, if it was applied and is remembered.
    pub fn get(&self, id: &WriteId) -> Option<WriteResult> {
        self.results.get(id).map(RememberedResult::result)
    }

    fn remember(&mut self, id: WriteId, result: WriteResult) {
        self.remember_compact(id, RememberedResult::new(result));
    }

    fn remember_compact(&mut self, id: WriteId, result: RememberedResult) {
        if id.client_id == 0 {
            return;
        }
        self.bytes += result.size_bytes();
        if self.results.insert(id, result).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > SESSION_ENTRIES_MAX || self.bytes > SESSION_BYTES_MAX {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(r) = self.results.remove(&old) {
                self.bytes -= r.size_bytes();
            }
        }
        debug_assert_eq!(self.order.len(), self.results.len());
    }

    pub fn len(&self) -> usize {
        self.results.len()
    }

    /// Takes in the results `other` remembers and this table does not (a
    /// merge: retries of writes the source applied must still be
    /// recognised by the target). Deterministic: `other`'s log order.
    pub fn absorb(&mut self, other: &SessionTable) {
        for id in &other.order {
            if self.results.contains_key(id) {
                continue;
            }
            if let Some(result) = other.results.get(id) {
                self.remember_compact(*id, result.clone());
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.results.is_empty()
    }

    pub fn encode(&self, enc: &mut Encoder) {
        enc.u64(self.order.len() as u64);
        for id in &self.order {
            enc.u64(id.client_id).u64(id.sequence);
            match &self.results[id] {
                RememberedResult::Other(result) => result.encode(enc),
                small => small.result().encode(enc),
            }
        }
    }

    pub fn decode(dec: &mut Decoder<'_>) -> Result<Self, CodecError> {
        let n = dec.count(17)?;
        let mut table = SessionTable::default();
        for _ in 0..n {
            let id = WriteId {
                client_id: dec.u64()?,
                sequence: dec.u64()?,
            };
            let result = WriteResult::decode(dec)?;
            table.remember(id, result);
        }
        Ok(table)
    }
}

/// Applies one committed write to `store` on behalf of `region`.
///
/// A write whose id is in `sessions` is not applied again: its first result
/// is returned. Stale epochs and keys outside the region are refused.
pub fn apply_write(
    store: &KvStore,
    region: &RegionMeta,
    sessions: &mut SessionTable,
    cmd: &WriteCommand,
) -> Result<WriteResult, ApplyRejection> {
    if let Some(result) = sessions.get(&cmd.id) {
        return Ok(result);
    }
    if let Some(epoch) = cmd.header.epoch {
        if !epoch.is_current(&region.epoch) {
            return Err(ApplyRejection::EpochNotMatch);
        }
    }
    if !keys_in_region(region, &cmd.op) {
        return Err(ApplyRejection::KeyNotInRegion);
    }
    let result = match &cmd.op {
        WriteOp::Put { key, value } => {
            store.put(key.clone(), value.clone());
            WriteResult::Done
        }
        WriteOp::BatchPut { pairs } => {
            for (k, v) in pairs {
                store.put(k.clone(), v.clone());
            }
            WriteResult::Done
        }
        WriteOp::Delete { key } => WriteResult::Deleted {
            existed: store.delete(key),
        },
        WriteOp::DeleteRange { start, end } => WriteResult::DeletedRange {
            count: store.delete_range(start, end),
        },
        WriteOp::Split { .. }
        | WriteOp::PrepareMerge { .. }
        | WriteOp::CommitMerge { .. }
        | WriteOp::RollbackMerge => return Err(ApplyRejection::NotADataWrite),
        WriteOp::CompareAndSwap { key, expected, new } => {
            let previous = store.get(key);
            let succeeded = previous == *expected;
            if succeeded {
                match new {
                    Some(v) => store.put(key.clone(), v.clone()),
                    None => {
                        store.delete(key);
                    }
                }
            }
            WriteResult::CompareAndSwap {
                succeeded,
                previous,
            }
        }
    };
    sessions.remember(cmd.id, result.clone());
    Ok(result)
}

/// Every key the op touches lies inside `region`.
pub fn keys_in_region(region: &RegionMeta, op: &WriteOp) -> bool {
    match op {
        WriteOp::Put { key, .. }
        | WriteOp::Delete { key }
        | WriteOp::CompareAndSwap { key, .. } => region.contains_key(key),
        WriteOp::BatchPut { pairs } => pairs.iter().all(|(k, _)| region.contains_key(k)),
        WriteOp::DeleteRange { start, end } => region.contains_range(start, end),
        WriteOp::Split { split_key, .. } => region.may_split_at(split_key),
        // Checked when applied, against the region's state then.
        WriteOp::PrepareMerge { .. } | WriteOp::CommitMerge { .. } | WriteOp::RollbackMerge => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::RequestHeader;
    use crate::region::RegionEpoch;

    fn cmd(client_id: u64, sequence: u64, op: WriteOp) -> WriteCommand {
        WriteCommand {
            header: RequestHeader {
                region_id: 1,
                epoch: None,
            },
            id: WriteId {
                client_id,
                sequence,
            },
            op,
        }
    }

    fn cas(expected: Option<&[u8]>, new: &[u8]) -> WriteOp {
        WriteOp::CompareAndSwap {
            key: b"k".to_vec(),
            expected: expected.map(<[u8]>::to_vec),
            new: Some(new.to_vec()),
        }
    }

    #[test]
    fn retried_cas_is_applied_once_and_answers_the_same() {
        let store = KvStore::new();
        let region = RegionMeta::whole_keyspace(1, &[1]);
        let mut sessions = SessionTable::default();
        let first = cmd(7, 1, cas(None, b"a"));
        let r1 = apply_write(&store, &region, &mut sessions, &first).unwrap();
        assert_eq!(
            r1,
            WriteResult::CompareAndSwap {
                succeeded: true,
                previous: None
            }
        );
        // Another client changes the key; the retry of the first CAS must not
        // apply again (it would fail now, or worse, succeed twice).
        apply_write(
            &store,
            &region,
            &mut sessions,
            &cmd(8, 1, cas(Some(b"a"), b"b")),
        )
        .unwrap();
        let r2 = apply_write(&store, &region, &mut sessions, &first).unwrap();
        assert_eq!(r1, r2);
        assert_eq!(store.get(b"k"), Some(b"b".to_vec()));
    }

    #[test]
    fn stale_epoch_and_foreign_keys_are_refused_without_effect() {
        let store = KvStore::new();
        let mut region = RegionMeta::whole_keyspace(1, &[1]);
        region.end_key = b"m".to_vec();
        region.epoch = RegionEpoch {
            conf_ver: 1,
            version: 2,
        };
        let mut sessions = SessionTable::default();
        let mut stale = cmd(
            1,
            1,
            WriteOp::Put {
                key: b"a".to_vec(),
                value: b"v".to_vec(),
            },
        );
        stale.header.epoch = Some(RegionEpoch {
            conf_ver: 1,
            version: 1,
        });
        assert_eq!(
            apply_write(&store, &region, &mut sessions, &stale),
            Err(ApplyRejection::EpochNotMatch)
        );
        let foreign = cmd(
            1,
            2,
            WriteOp::Put {
                key: b"z".to_vec(),
                value: b"v".to_vec(),
            },
        );
        assert_eq!(
            apply_write(&store, &region, &mut sessions, &foreign),
            Err(ApplyRejection::KeyNotInRegion)
        );
        assert!(store.is_empty());
        assert!(sessions.is_empty());
    }

    #[test]
    fn every_kind_of_result_is_remembered_as_it_was() {
        let results = [
            WriteResult::Done,
            WriteResult::Deleted { existed: true },
            WriteResult::DeletedRange { count: 7 },
            WriteResult::CompareAndSwap {
                succeeded: false,
                previous: Some(b"old".to_vec()),
            },
            WriteResult::Region(RegionMeta::whole_keyspace(3, &[1])),
        ];
        let mut t = SessionTable::default();
        let id = |sequence| WriteId {
            client_id: 9,
            sequence,
        };
        for (sequence, result) in (1..).zip(&results) {
            t.remember(id(sequence), result.clone());
        }
        let mut enc = Encoder::new();
        t.encode(&mut enc);
        let buf = enc.finish();
        let decoded = SessionTable::decode(&mut Decoder::new("sessions", &buf)).unwrap();
        for (sequence, result) in (1..).zip(&results) {
            assert_eq!(t.get(&id(sequence)).as_ref(), Some(result));
            assert_eq!(decoded.get(&id(sequence)).as_ref(), Some(result));
        }
        assert_eq!(std::mem::size_of::<RememberedResult>(), 16);
    }

    #[test]
    fn session_table_round_trips_and_is_bounded() {
        let mut t = SessionTable::default();
        for i in 0..(SESSION_ENTRIES_MAX as u64 + 10) {
            t.remember(
                WriteId {
                    client_id: 1,
                    sequence: i,
                },
                WriteResult::Done,
            );
        }
        assert_eq!(t.len(), SESSION_ENTRIES_MAX);
        assert!(t
            .get(&WriteId {
                client_id: 1,
                sequence: 0
            })
            .is_none());
        let mut enc = Encoder::new();
        t.encode(&mut enc);
        let buf = enc.finish();
        let mut dec = Decoder::new("sessions", &buf);
        assert_eq!(SessionTable::decode(&mut dec).unwrap(), t);
    }
}
