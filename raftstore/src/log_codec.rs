//! How Raft state is laid out in the payloads of shard WAL records:
//! `Entries` carry a counted list of protobuf-encoded entries, `HardState`
//! one protobuf hard state, `Truncate` a one-byte [`Truncation`] mode, or
//! nothing: the WAL restates each region's latest truncation point at the
//! head of every new segment with an empty payload, which says only that
//! entries up to the index are gone ([`Truncation::UpTo`]). That is also
//! the only safe reading of a restated snapshot install: replayed as
//! `DiscardAll`, the copy would wipe the entries appended after it.

use protobuf::{CodedOutputStream, Message as _};
use raft::prelude::{Entry, HardState};

use crate::codec::{CodecError, Decoder};
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

/// The entries as a counted list of length-prefixed protobuf encodings
/// (the layout of `codec::Encoder::bytes`), each encoded in place into one
/// buffer sized for all of them: a turn encodes the new entries of every
/// region with a write, most often one entry each.
pub fn encode_entries(ents: &[Entry]) -> Result<Vec<u8>, RaftstoreError> {
    let total = 8 + ents
        .iter()
        .map(|e| 8 + e.compute_size() as usize)
        .sum::<usize>();
    let mut buf = Vec::with_capacity(total);
    buf.extend_from_slice(&(ents.len() as u64).to_le_bytes());
    for e in ents {
        buf.extend_from_slice(&u64::from(e.get_cached_size()).to_le_bytes());
        let mut out = CodedOutputStream::vec(&mut buf);
        e.write_to_with_cached_sizes(&mut out)
            .and_then(|()| out.flush())
            .map_err(|e| corrupt("encode entry", e))?;
    }
    debug_assert_eq!(buf.len(), total, "sizes computed are sizes written");
    Ok(buf)
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

/// The protobuf encoding of `hs`, written by hand: its three fields are
/// varints (tags 1–3), left out when zero, as protobuf writes them. Every
/// region with a write in a turn stages one.
pub fn encode_hard_state(hs: &HardState) -> Vec<u8> {
    let mut buf = Vec::with_capacity(3 * 11);
    for (tag, value) in [(0x08, hs.term), (0x10, hs.vote), (0x18, hs.commit)] {
        if value != 0 {
            buf.push(tag);
            let mut rest = value;
            while rest >= 0x80 {
                buf.push(rest as u8 | 0x80);
                rest >>= 7;
            }
            buf.push(rest as u8);
        }
    }
    buf
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Encoder;

    #[test]
    fn a_hard_state_is_encoded_as_protobuf_encodes_it() {
        let values = [0, 1, 127, 128, 300, 16_383, 16_384, u64::MAX / 3, u64::MAX];
        for term in values {
            for vote in [0, 1, 300, u64::MAX] {
                for commit in values {
                    let hs = HardState {
                        term,
                        vote,
                        commit,
                        ..Default::default()
                    };
                    let by_hand = encode_hard_state(&hs);
                    assert_eq!(by_hand, hs.write_to_bytes().unwrap(), "{hs:?}");
                    assert_eq!(decode_hard_state(&by_hand).unwrap(), hs);
                }
            }
        }
    }

    #[test]
    fn entries_encoded_in_place_are_length_prefixed_protobuf() {
        for n in [0, 1, 3] {
            let ents: Vec<Entry> = (0..n)
                .map(|i| Entry {
                    index: 10 + i,
                    term: 2,
                    data: vec![i as u8; 200 * i as usize].into(),
                    ..Default::default()
                })
                .collect();
            let mut enc = Encoder::new();
            enc.u64(n);
            for e in &ents {
                enc.bytes(&e.write_to_bytes().unwrap());
            }
            let encoded = encode_entries(&ents).unwrap();
            assert_eq!(encoded, enc.finish());
            assert_eq!(decode_entries(&encoded).unwrap(), ents);
        }
    }
}
