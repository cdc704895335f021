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
    /// A late copy of a write its client said was answered (a later
    /// write's `answered_below` passed its sequence): its result may be
    /// forgotten, so applying it could apply it twice. Nobody waits for it.
    AlreadyAnswered,
}

/// Results of recently applied writes by [`WriteId`], so a retried write is
/// answered from here instead of being applied twice.
///
/// A result goes when its client says it was answered (a later write's
/// `answered_below`: that client retries none of those writes any more),
/// or, as a bound for clients that never say so, when the table holds more
/// than [`SESSION_ENTRIES_MAX`] results or [`SESSION_BYTES_MAX`] bytes: the
/// oldest first, in log order. Every replica applies the same log, so every
/// replica forgets the same results.
///
/// What a client said stays as its *floor*: a copy of an answered write
/// that arrives late (an old attempt a node held, or the network kept) is
/// refused, because its result may be gone. At most
/// [`SESSION_FLOORS_MAX`] clients keep a floor; past that, the client that
/// set its first floor longest ago loses its floor first.
#[derive(Debug, Default, Clone)]
pub struct SessionTable {
    results: BTreeMap<WriteId, RememberedResult>,
    /// Log order of the results, and of ids forgotten since (skipped; cut
    /// off the front as they reach it, and all dropped when they outnumber
    /// the results).
    order: VecDeque<WriteId>,
    bytes: usize,
    /// Per client: every write with a lower sequence was answered.
    floors: BTreeMap<u64, u64>,
    /// Clients with a floor, in the log order they first set one.
    floor_order: VecDeque<u64>,
}

/// Tables are equal when they remember the same results in the same log
/// order, and the same floors; forgotten ids still in `order` do not count.
impl PartialEq for SessionTable {
    fn eq(&self, other: &Self) -> bool {
        self.results == other.results
            && self.remembered().eq(other.remembered())
            && self.floors == other.floors
            && self.floor_order == other.floor_order
    }
}

impl Eq for SessionTable {}

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
/// How many clients' floors the session table keeps.
pub const SESSION_FLOORS_MAX: usize = 100_000;
/// First word of an encoded table that carries floors; an older table
/// starts with its result count, which never comes near it.
const FLOORS_FOLLOW: u64 = u64::MAX;

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
        while self.results.len() > SESSION_ENTRIES_MAX || self.bytes > SESSION_BYTES_MAX {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(r) = self.results.remove(&old) {
                self.bytes -= r.size_bytes();
            }
        }
        self.tidy_order();
    }

    /// Whether `id` is below its client's floor: answered, and perhaps
    /// forgotten.
    pub fn is_answered(&self, id: &WriteId) -> bool {
        self.floors
            .get(&id.client_id)
            .is_some_and(|&floor| id.sequence < floor)
    }

    /// Raises `client_id`'s floor to `answered_below` and forgets the
    /// results of its writes below it: the client has their answers and
    /// retries none.
    pub fn forget_answered(&mut self, client_id: u64, answered_below: u64) {
        if client_id == 0 || !self.raise_floor(client_id, answered_below) {
            return;
        }
        let from = WriteId {
            client_id,
            sequence: 0,
        };
        let below = WriteId {
            client_id,
            sequence: answered_below,
        };
        let answered: Vec<WriteId> = self.results.range(from..below).map(|(id, _)| *id).collect();
        for id in answered {
            if let Some(r) = self.results.remove(&id) {
                self.bytes -= r.size_bytes();
            }
        }
        self.tidy_order();
    }

    /// Raises a floor; false if `floor` is not above the one kept. Sequences
    /// start at 1, so a floor of 1 says nothing and is not kept: a client
    /// that writes once (a one-shot `ctl put`) leaves no floor behind.
    fn raise_floor(&mut self, client_id: u64, floor: u64) -> bool {
        match self.floors.get_mut(&client_id) {
            Some(kept) if *kept >= floor => false,
            Some(kept) => {
                *kept = floor;
                true
            }
            None if floor <= 1 => false,
            None => {
                self.floors.insert(client_id, floor);
                self.floor_order.push_back(client_id);
                while self.floor_order.len() > SESSION_FLOORS_MAX {
                    if let Some(old) = self.floor_order.pop_front() {
                        self.floors.remove(&old);
                    }
                }
                debug_assert_eq!(self.floors.len(), self.floor_order.len());
                true
            }
        }
    }

    /// Cuts forgotten ids off the front of `order`, and rebuilds it from
    /// the remembered ones when forgotten ids are the majority (a client
    /// that never said its writes were answered holds the front).
    fn tidy_order(&mut self) {
        while self
            .order
            .front()
            .is_some_and(|id| !self.results.contains_key(id))
        {
            self.order.pop_front();
        }
        if self.order.len() > 2 * self.results.len() + 64 {
            let results = &self.results;
            self.order.retain(|id| results.contains_key(id));
        }
        debug_assert!(self.order.len() >= self.results.len());
    }

    /// The remembered ids, in log order.
    fn remembered(&self) -> impl Iterator<Item = &WriteId> {
        self.order.iter().filter(|id| self.results.contains_key(id))
    }

    pub fn len(&self) -> usize {
        self.results.len()
    }

    /// Takes in the results `other` remembers and this table does not (a
    /// merge: retries of writes the source applied must still be
    /// recognised by the target). Deterministic: `other`'s log order.
    pub fn absorb(&mut self, other: &SessionTable) {
        for &client_id in &other.floor_order {
            if let Some(&floor) = other.floors.get(&client_id) {
                self.forget_answered(client_id, floor);
            }
        }
        for id in other.remembered() {
            if self.results.contains_key(id) || self.is_answered(id) {
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
        if !self.floors.is_empty() {
            enc.u64(FLOORS_FOLLOW).u64(self.floor_order.len() as u64);
            for client_id in &self.floor_order {
                enc.u64(*client_id).u64(self.floors[client_id]);
            }
        }
        enc.u64(self.results.len() as u64);
        for id in self.remembered() {
            enc.u64(id.client_id).u64(id.sequence);
            match &self.results[id] {
                RememberedResult::Other(result) => result.encode(enc),
                small => small.result().encode(enc),
            }
        }
    }

    pub fn decode(dec: &mut Decoder<'_>) -> Result<Self, CodecError> {
        let mut table = SessionTable::default();
        if dec.take_marker(FLOORS_FOLLOW) {
            for _ in 0..dec.count(16)? {
                let client_id = dec.u64()?;
                let floor = dec.u64()?;
                if client_id == 0
                    || table.floors.contains_key(&client_id)
                    || !table.raise_floor(client_id, floor)
                {
                    return Err(CodecError {
                        what: "session table",
                        reason: format!("floor {floor} of client {client_id}"),
                    });
                }
            }
        }
        let n = dec.count(17)?;
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
    sessions.forget_answered(cmd.id.client_id, cmd.answered_below);
    if sessions.is_answered(&cmd.id) {
        return Err(ApplyRejection::AlreadyAnswered);
    }
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
        answered_cmd(client_id, sequence, 0, op)
    }

    fn answered_cmd(
        client_id: u64,
        sequence: u64,
        answered_below: u64,
        op: WriteOp,
    ) -> WriteCommand {
        WriteCommand {
            header: RequestHeader {
                region_id: 1,
                epoch: None,
            },
            id: WriteId {
                client_id,
                sequence,
            },
            answered_below,
            op,
        }
    }

    fn put(value: &[u8]) -> WriteOp {
        WriteOp::Put {
            key: b"k".to_vec(),
            value: value.to_vec(),
        }
    }

    fn round_trip(t: &SessionTable) -> SessionTable {
        let mut enc = Encoder::new();
        t.encode(&mut enc);
        let buf = enc.finish();
        let mut dec = Decoder::new("sessions", &buf);
        let decoded = SessionTable::decode(&mut dec).unwrap();
        dec.finish().unwrap();
        decoded
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
        let decoded = round_trip(&t);
        for (sequence, result) in (1..).zip(&results) {
            assert_eq!(t.get(&id(sequence)).as_ref(), Some(result));
            assert_eq!(decoded.get(&id(sequence)).as_ref(), Some(result));
        }
        assert_eq!(std::mem::size_of::<RememberedResult>(), 16);
    }

    #[test]
    fn answered_writes_are_forgotten_and_their_late_copies_refused() {
        let store = KvStore::new();
        let region = RegionMeta::whole_keyspace(1, &[1]);
        let mut sessions = SessionTable::default();
        let first = answered_cmd(7, 1, 1, put(b"a"));
        apply_write(&store, &region, &mut sessions, &first).unwrap();
        assert!(sessions.floors.is_empty(), "a first write sets no floor");
        // Another client's writes are not the business of client 7's floor.
        apply_write(
            &store,
            &region,
            &mut sessions,
            &answered_cmd(8, 1, 1, put(b"x")),
        )
        .unwrap();
        apply_write(
            &store,
            &region,
            &mut sessions,
            &answered_cmd(7, 2, 2, put(b"b")),
        )
        .unwrap();
        assert_eq!(sessions.len(), 2, "write 1 of client 7 is forgotten");
        assert!(sessions.get(&first.id).is_none());
        assert_eq!(
            apply_write(&store, &region, &mut sessions, &first),
            Err(ApplyRejection::AlreadyAnswered),
            "a late copy of write 1 must not put \"a\" back"
        );
        assert_eq!(store.get(b"k"), Some(b"b".to_vec()));
        // A retry of the write in flight is still answered from the table,
        // even one sent before the client learnt of any answer.
        let retry = answered_cmd(7, 2, 0, put(b"b"));
        assert_eq!(
            apply_write(&store, &region, &mut sessions, &retry),
            Ok(WriteResult::Done)
        );
        // The floor survives the checkpoint.
        let restored = round_trip(&sessions);
        assert_eq!(restored, sessions);
        assert!(restored.is_answered(&first.id));
        assert!(!restored.is_answered(&retry.id));
    }

    #[test]
    fn a_merge_takes_the_floors_and_forgets_what_they_cover() {
        let id = |client_id, sequence| WriteId {
            client_id,
            sequence,
        };
        let mut target = SessionTable::default();
        target.remember(id(7, 1), WriteResult::Done);
        target.remember(id(7, 5), WriteResult::Done);
        let mut source = SessionTable::default();
        source.remember(id(7, 3), WriteResult::Done);
        source.forget_answered(7, 4);
        source.remember(id(7, 4), WriteResult::Done);
        target.absorb(&source);
        assert!(target.is_answered(&id(7, 3)));
        assert!(target.get(&id(7, 1)).is_none(), "below the source's floor");
        assert!(target.get(&id(7, 4)).is_some());
        assert!(target.get(&id(7, 5)).is_some());
        assert_eq!(round_trip(&target), target);
    }

    #[test]
    fn a_table_written_before_floors_existed_still_decodes() {
        let mut t = SessionTable::default();
        t.remember(
            WriteId {
                client_id: 3,
                sequence: 9,
            },
            WriteResult::Done,
        );
        let mut enc = Encoder::new();
        t.encode(&mut enc);
        let buf = enc.finish();
        // No floors: the encoding is the old one, the result count first.
        assert_eq!(buf[..8], 1u64.to_le_bytes());
        assert_eq!(round_trip(&t), t);
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
        assert_eq!(round_trip(&t), t);
    }
}
