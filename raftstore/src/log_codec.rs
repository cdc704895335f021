//! How Raft state is laid out in the payloads of shard WAL records:
//! `Entries` carry a counted list of protobuf-encoded entries, `HardState`
//! one protobuf hard state, `Truncate` a one-byte [`Truncation`] mode, or
//! nothing: the WAL restates each region's latest truncation point at the
//! head of every new segment with an empty payload, which says only that
//! entries up to the index are gone ([`Truncation::UpTo`]). That is also
//! the only safe reading of a restated snapshot install: replayed as
//! `DiscardAll`, the copy would wipe the entries appended after it.

use protobuf::Message as _;
use raft::prelude::{Entry, HardState};

use crate::codec::{CodecError, Decoder, Encoder};
use crate::error::RaftstoreError;

/// What a `Truncate` record at index `i` means for recovery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Truncation {
    /// Log compaction: entries up to `i` are covered by a checkpoint.
    UpTo,
    /// Snapshot install: the whole log is replaced; it restarts after `i`.
    DiscardAll,
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> RaftstoreError {
    RaftstoreError::Corrupt(format!("{what}: {e}"))
}

pub fn encode_entries(ents: &[Entry]) -> Result<Vec<u8>, RaftstoreError> {
    let mut enc = Encoder::new();
    enc.u64(ents.len() as u64);
    for e in ents {
        enc.bytes(&e.write_to_bytes().map_err(|e| corrupt("encode entry", e))?);
    }
    Ok(enc.finish())
}

pub fn decode_entries(buf: &[u8]) -> Result<Vec<Entry>, RaftstoreError> {
    let mut dec = Decoder::new("wal entries", buf);
    let n = dec.count(8)?;
    let mut ents = Vec::with_capacity(n);
    for _ in 0..n {
        let raw = dec.bytes()?;
        ents.push(Entry::parse_from_bytes(&raw).map_err(|e| corrupt("wal entry", e))?);
    }
    dec.finish()?;
    if ents.windows(2).any(|w| w[1].index != w[0].index + 1) {
        return Err(corrupt("wal entries", "indexes are not consecutive"));
    }
    Ok(ents)
}

pub fn encode_hard_state(hs: &HardState) -> Result<Vec<u8>, RaftstoreError> {
    hs.write_to_bytes()
        .map_err(|e| corrupt("encode hard state", e))
}

pub fn decode_hard_state(buf: &[u8]) -> Result<HardState, RaftstoreError> {
    HardState::parse_from_bytes(buf).map_err(|e| corrupt("wal hard state", e))
}

pub fn encode_truncation(t: Truncation) -> Vec<u8> {
    vec![match t {
        Truncation::UpTo => 1,
        Truncation::DiscardAll => 2,
    }]
}

pub fn decode_truncation(buf: &[u8]) -> Result<Truncation, CodecError> {
    match buf {
        [] | [1] => Ok(Truncation::UpTo),
        [2] => Ok(Truncation::DiscardAll),
        _ => Err(CodecError {
            what: "wal truncation",
            reason: format!("{buf:?}"),
        }),
    }
}
