//! The requests a region serves: writes, which travel through the Raft log
//! as encoded [`WriteCommand`]s, and reads, which are served on the leader
//! after a ReadIndex round. Decoding a log entry never panics.

use crate::apply::SessionTable;
use crate::codec::{CodecError, Decoder, Encoder};
use crate::region::{RegionEpoch, RegionMeta};

/// Who sent a write, for exactly-once application: a (client_id, sequence)
/// pair is applied at most once. `client_id == 0` opts out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WriteId {
    pub client_id: u64,
    pub sequence: u64,
}

/// Routing facts a request carries: which region it was built for and that
/// region's epoch as the sender knew it (checked when present).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestHeader {
    pub region_id: u64,
    pub epoch: Option<RegionEpoch>,
}

/// A mutation of the key space, replicated through Raft.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOp {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    BatchPut {
        pairs: Vec<(Vec<u8>, Vec<u8>)>,
    },
    Delete {
        key: Vec<u8>,
    },
    /// `[start, end)`, empty `end` = unbounded.
    DeleteRange {
        start: Vec<u8>,
        end: Vec<u8>,
    },
    /// If the current value equals `expected` (`None` = absent), set it to
    /// `new` (`None` = delete).
    CompareAndSwap {
        key: Vec<u8>,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    },
    /// Splits the region at `split_key`: the region keeps `[start,
    /// split_key)`, a new region `new_region_id` takes the rest. Applied by
    /// the peer (it changes the region's shape, not its keys), only with
    /// the region's current epoch.
    Split {
        split_key: Vec<u8>,
        new_region_id: u64,
    },
    /// Freezes this region (the merge source) for a merge into `target`
    /// (as the source's leader saw it): it serves nothing more until the
    /// merge commits or is rolled back. Applied by the peer, only with the
    /// region's current epoch.
    PrepareMerge {
        target: RegionMeta,
    },
    /// Extends this region (the merge target) over the frozen `source`,
    /// whose final `pairs` and `sessions` it carries. Applied by the peer,
    /// only with the target's epoch the source was frozen against.
    CommitMerge {
        source: RegionMeta,
        sessions: SessionTable,
        pairs: Vec<(Vec<u8>, Vec<u8>)>,
    },
    /// Unfreezes this region: its merge target refused the merge.
    RollbackMerge,
}

impl WriteOp {
    /// About the bytes the keys and values of this operation take encoded
    /// (each with its length); what else an operation holds is small.
    fn data_len(&self) -> usize {
        let sized = |v: &[u8]| v.len() + 8;
        let pairs = |ps: &Pairs| ps.iter().map(|(k, v)| sized(k) + sized(v)).sum::<usize>();
        match self {
            WriteOp::Put { key, value } => sized(key) + sized(value),
            WriteOp::BatchPut { pairs: ps } | WriteOp::CommitMerge { pairs: ps, .. } => pairs(ps),
            WriteOp::Delete { key } => sized(key),
            WriteOp::DeleteRange { start, end } => sized(start) + sized(end),
            WriteOp::CompareAndSwap { key, expected, new } => {
                let opt = |v: &Option<Vec<u8>>| v.as_deref().map_or(1, |v| 1 + sized(v));
                sized(key) + opt(expected) + opt(new)
            }
            WriteOp::Split { split_key, .. } => sized(split_key),
            WriteOp::PrepareMerge { .. } | WriteOp::RollbackMerge => 0,
        }
    }

    /// Changes the region's key range or existence: applied by the peer
    /// (split, merge), never by `apply::apply_write`.
    pub fn changes_shape(&self) -> bool {
        matches!(
            self,
            WriteOp::Split { .. }
                | WriteOp::PrepareMerge { .. }
                | WriteOp::CommitMerge { .. }
                | WriteOp::RollbackMerge
        )
    }

    /// Keys and bytes (keys plus values) the op writes, for size tracking;
    /// deletions count as nothing.
    pub fn written(&self) -> (u64, u64) {
        match self {
            WriteOp::Put { key, value } => (1, (key.len() + value.len()) as u64),
            WriteOp::BatchPut { pairs } => (
                pairs.len() as u64,
                pairs.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum(),
            ),
            WriteOp::CompareAndSwap {
                key, new: Some(v), ..
            } => (1, (key.len() + v.len()) as u64),
            WriteOp::CompareAndSwap { new: None, .. }
            | WriteOp::Delete { .. }
            | WriteOp::DeleteRange { .. }
            | WriteOp::Split { .. }
            | WriteOp::PrepareMerge { .. }
            | WriteOp::CommitMerge { .. }
            | WriteOp::RollbackMerge => (0, 0),
        }
    }
}

/// What a write produced, as returned to the client (and remembered in the
/// session table for retries).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteResult {
    Done,
    Deleted {
        existed: bool,
    },
    DeletedRange {
        count: u64,
    },
    CompareAndSwap {
        succeeded: bool,
        previous: Option<Vec<u8>>,
    },
    Split {
        left: RegionMeta,
        right: RegionMeta,
    },
    /// A merge command's region once applied: the frozen source, the
    /// extended target, or the unfrozen source.
    Region(RegionMeta),
}

/// A write as it sits in a Raft log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteCommand {
    pub header: RequestHeader,
    pub id: WriteId,
    /// Every write of `id.client_id` with a lower sequence was answered:
    /// applying this command forgets their results (see `SessionTable`).
    /// 0: nothing to forget.
    pub answered_below: u64,
    pub op: WriteOp,
}

/// A linearizable read, served by the leader after ReadIndex.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadOp {
    Get {
        key: Vec<u8>,
    },
    BatchGet {
        keys: Vec<Vec<u8>>,
    },
    /// `[start, end)`, empty `end` = unbounded; `limit` > 0.
    Scan {
        start: Vec<u8>,
        end: Vec<u8>,
        limit: usize,
        reverse: bool,
    },
}

/// What a read produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadResult {
    Value(Option<Vec<u8>>),
    Pairs(Vec<(Vec<u8>, Vec<u8>)>),
}

/// Format version of an encoded [`WriteCommand`]; the first byte of every
/// entry this store proposes. Version 2 adds `answered_below` after the
/// write id; version 1 entries (written before it) still decode, with 0.
const COMMAND_FORMAT_V1: u8 = 1;
const COMMAND_FORMAT_V2: u8 = 2;

fn encode_opt(enc: &mut Encoder, v: &Option<Vec<u8>>) {
    match v {
        None => enc.u8(0),
        Some(b) => enc.u8(1).bytes(b),
    };
}

fn decode_opt(dec: &mut Decoder<'_>) -> Result<Option<Vec<u8>>, CodecError> {
    match dec.u8()? {
        0 => Ok(None),
        1 => Ok(Some(dec.bytes()?)),
        tag => Err(CodecError {
            what: "optional bytes",
            reason: format!("tag {tag}"),
        }),
    }
}

/// Key-value pairs, in key order where it matters.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

fn decode_pairs(dec: &mut Decoder<'_>) -> Result<Pairs, CodecError> {
    let n = dec.count(16)?;
    let mut pairs = Vec::with_capacity(n);
    for _ in 0..n {
        pairs.push((dec.bytes()?, dec.bytes()?));
    }
    Ok(pairs)
}

impl WriteCommand {
    pub fn encode(&self) -> Vec<u8> {
        // Header and ids: 50 bytes; a region's metadata (merges) more.
        let mut enc = Encoder::with_capacity(128 + self.op.data_len());
        enc.u8(COMMAND_FORMAT_V2).u64(self.header.region_id);
        match self.header.epoch {
            None => enc.u8(0),
            Some(e) => enc.u8(1).u64(e.conf_ver).u64(e.version),
        };
        enc.u64(self.id.client_id)
            .u64(self.id.sequence)
            .u64(self.answered_below);
        match &self.op {
            WriteOp::Put { key, value } => enc.u8(1).bytes(key).bytes(value),
            WriteOp::BatchPut { pairs } => {
                enc.u8(2).u64(pairs.len() as u64);
                for (k, v) in pairs {
                    enc.bytes(k).bytes(v);
                }
                &mut enc
            }
            WriteOp::Delete { key } => enc.u8(3).bytes(key),
            WriteOp::DeleteRange { start, end } => enc.u8(4).bytes(start).bytes(end),
            WriteOp::CompareAndSwap { key, expected, new } => {
                enc.u8(5).bytes(key);
                encode_opt(&mut enc, expected);
                encode_opt(&mut enc, new);
                &mut enc
            }
            WriteOp::Split {
                split_key,
                new_region_id,
            } => enc.u8(6).bytes(split_key).u64(*new_region_id),
            WriteOp::PrepareMerge { target } => {
                enc.u8(7);
                target.encode(&mut enc);
                &mut enc
            }
            WriteOp::CommitMerge {
                source,
                sessions,
                pairs,
            } => {
                enc.u8(8);
                source.encode(&mut enc);
                sessions.encode(&mut enc);
                enc.u64(pairs.len() as u64);
                for (k, v) in pairs {
                    enc.bytes(k).bytes(v);
                }
                &mut enc
            }
            WriteOp::RollbackMerge => enc.u8(9),
        };
        enc.finish()
    }

    pub fn decode(buf: &[u8]) -> Result<Self, CodecError> {
        let mut dec = Decoder::new("write command", buf);
        let format = dec.u8()?;
        if format != COMMAND_FORMAT_V1 && format != COMMAND_FORMAT_V2 {
            return Err(CodecError {
                what: "write command",
                reason: format!("unknown format {format}"),
            });
        }
        let region_id = dec.u64()?;
        let epoch = match dec.u8()? {
            0 => None,
            1 => Some(RegionEpoch {
                conf_ver: dec.u64()?,
                version: dec.u64()?,
            }),
            tag => {
                return Err(CodecError {
                    what: "write command",
                    reason: format!("epoch tag {tag}"),
                })
            }
        };
        let id = WriteId {
            client_id: dec.u64()?,
            sequence: dec.u64()?,
        };
        let answered_below = if format == COMMAND_FORMAT_V2 {
            dec.u64()?
        } else {
            0
        };
        let op = match dec.u8()? {
            1 => WriteOp::Put {
                key: dec.bytes()?,
                value: dec.bytes()?,
            },
            2 => WriteOp::BatchPut {
                pairs: decode_pairs(&mut dec)?,
            },
            3 => WriteOp::Delete { key: dec.bytes()? },
            4 => WriteOp::DeleteRange {
                start: dec.bytes()?,
                end: dec.bytes()?,
            },
            5 => WriteOp::CompareAndSwap {
                key: dec.bytes()?,
                expected: decode_opt(&mut dec)?,
                new: decode_opt(&mut dec)?,
            },
            6 => WriteOp::Split {
                split_key: dec.bytes()?,
                new_region_id: dec.u64()?,
            },
            7 => WriteOp::PrepareMerge {
                target: RegionMeta::decode(&mut dec)?,
            },
            8 => WriteOp::CommitMerge {
                source: RegionMeta::decode(&mut dec)?,
                sessions: SessionTable::decode(&mut dec)?,
                pairs: decode_pairs(&mut dec)?,
            },
            9 => WriteOp::RollbackMerge,
            tag => {
                return Err(CodecError {
                    what: "write command",
                    reason: format!("op tag {tag}"),
                })
            }
        };
        dec.finish()?;
        Ok(WriteCommand {
            header: RequestHeader { region_id, epoch },
            id,
            answered_below,
            op,
        })
    }
}

impl WriteResult {
    pub fn encode(&self, enc: &mut Encoder) {
        match self {
            WriteResult::Done => enc.u8(1),
            WriteResult::Deleted { existed } => enc.u8(2).u8(u8::from(*existed)),
            WriteResult::DeletedRange { count } => enc.u8(3).u64(*count),
            WriteResult::CompareAndSwap {
                succeeded,
                previous,
            } => {
                enc.u8(4).u8(u8::from(*succeeded));
                encode_opt(enc, previous);
                enc
            }
            WriteResult::Split { left, right } => {
                enc.u8(5);
                left.encode(enc);
                right.encode(enc);
                enc
            }
            WriteResult::Region(region) => {
                enc.u8(6);
                region.encode(enc);
                enc
            }
        };
    }

    pub fn decode(dec: &mut Decoder<'_>) -> Result<Self, CodecError> {
        Ok(match dec.u8()? {
            1 => WriteResult::Done,
            2 => WriteResult::Deleted {
                existed: dec.u8()? != 0,
            },
            3 => WriteResult::DeletedRange { count: dec.u64()? },
            4 => WriteResult::CompareAndSwap {
                succeeded: dec.u8()? != 0,
                previous: decode_opt(dec)?,
            },
            5 => WriteResult::Split {
                left: RegionMeta::decode(dec)?,
                right: RegionMeta::decode(dec)?,
            },
            6 => WriteResult::Region(RegionMeta::decode(dec)?),
            tag => {
                return Err(CodecError {
                    what: "write result",
                    reason: format!("tag {tag}"),
                })
            }
        })
    }

    /// Bytes this result pins in the session table.
    pub fn size_bytes(&self) -> usize {
        match self {
            WriteResult::CompareAndSwap {
                previous: Some(p), ..
            } => 16 + p.len(),
            WriteResult::Split { left, right } => {
                64 + left.start_key.len()
                    + left.end_key.len()
                    + right.start_key.len()
                    + right.end_key.len()
            }
            WriteResult::Region(region) => 32 + region.start_key.len() + region.end_key.len(),
            _ => 16,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_commands() -> Vec<WriteCommand> {
        let ops = vec![
            WriteOp::Put {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
            },
            WriteOp::BatchPut {
                pairs: vec![(b"a".to_vec(), b"1".to_vec()), (b"b".to_vec(), vec![])],
            },
            WriteOp::Delete { key: b"k".to_vec() },
            WriteOp::DeleteRange {
                start: b"a".to_vec(),
                end: vec![],
            },
            WriteOp::CompareAndSwap {
                key: b"k".to_vec(),
                expected: None,
                new: Some(b"x".to_vec()),
            },
            WriteOp::CompareAndSwap {
                key: b"k".to_vec(),
                expected: Some(vec![]),
                new: None,
            },
            WriteOp::Split {
                split_key: b"m".to_vec(),
                new_region_id: 12,
            },
            WriteOp::PrepareMerge {
                target: RegionMeta::whole_keyspace(4, &[1, 2, 3]),
            },
            WriteOp::CommitMerge {
                source: RegionMeta::whole_keyspace(5, &[1, 2]),
                sessions: merge_sessions(),
                pairs: vec![(b"a".to_vec(), b"1".to_vec()), (b"b".to_vec(), vec![])],
            },
            WriteOp::RollbackMerge,
        ];
        ops.into_iter()
            .enumerate()
            .map(|(i, op)| WriteCommand {
                header: RequestHeader {
                    region_id: 1,
                    epoch: (i % 2 == 0).then_some(RegionEpoch {
                        conf_ver: 1,
                        version: 2,
                    }),
                },
                id: WriteId {
                    client_id: 9,
                    sequence: i as u64,
                },
                answered_below: i as u64 / 2,
                op,
            })
            .collect()
    }

    /// A data write is encoded into the buffer sized for it, without
    /// growing it: with large values too.
    #[test]
    fn a_data_write_encodes_within_its_first_buffer() {
        let big = vec![7; 4096];
        let mut commands = sample_commands();
        for cmd in &mut commands {
            match &mut cmd.op {
                WriteOp::Put { value, .. } => *value = big.clone(),
                WriteOp::BatchPut { pairs } => pairs[0].1 = big.clone(),
                WriteOp::CompareAndSwap { new, .. } => *new = Some(big.clone()),
                _ => {}
            }
        }
        for cmd in commands.iter().filter(|c| !c.op.changes_shape()) {
            let encoded = cmd.encode();
            assert!(
                encoded.len() <= 128 + cmd.op.data_len(),
                "{:?}: {} bytes",
                cmd.op,
                encoded.len()
            );
        }
    }

    /// A session table remembering one write of client 9.
    fn merge_sessions() -> SessionTable {
        let mut sessions = SessionTable::default();
        let cmd = WriteCommand {
            header: RequestHeader::default(),
            id: WriteId {
                client_id: 9,
                sequence: 1,
            },
            answered_below: 0,
            op: WriteOp::Put {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
            },
        };
        let region = RegionMeta::whole_keyspace(5, &[1]);
        let store = engine::store::KvStore::new();
        crate::apply::apply_write(&store, &region, &mut sessions, &cmd).unwrap();
        assert_eq!(sessions.len(), 1);
        sessions
    }

    #[test]
    fn commands_round_trip() {
        for cmd in sample_commands() {
            assert_eq!(WriteCommand::decode(&cmd.encode()).unwrap(), cmd);
        }
    }

    #[test]
    fn entries_of_the_first_format_decode_with_nothing_answered() {
        for cmd in sample_commands() {
            let v2 = cmd.encode();
            // Version 1: no `answered_below` after the id (format byte,
            // region id, epoch, client id and sequence come first).
            let id_end = 1 + 8 + if cmd.header.epoch.is_some() { 17 } else { 1 } + 16;
            let mut v1 = v2[..id_end].to_vec();
            v1[0] = COMMAND_FORMAT_V1;
            v1.extend_from_slice(&v2[id_end + 8..]);
            let decoded = WriteCommand::decode(&v1).unwrap();
            assert_eq!(
                decoded,
                WriteCommand {
                    answered_below: 0,
                    ..cmd
                }
            );
        }
    }

    #[test]
    fn every_truncation_and_trailing_garbage_is_an_error() {
        for cmd in sample_commands() {
            let buf = cmd.encode();
            for cut in 0..buf.len() {
                assert!(
                    WriteCommand::decode(&buf[..cut]).is_err(),
                    "{cmd:?} cut at {cut}"
                );
            }
            let mut long = buf.clone();
            long.push(0);
            assert!(WriteCommand::decode(&long).is_err());
        }
    }
}
