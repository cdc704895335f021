//! The store registry as kept in the system keyspace: one record per store
//! under [`crate::system_keys::store_key`], so that every placement leader,
//! including one that just took over, knows every store that ever joined,
//! its addresses and its administrative state. Region information is not
//! persisted: a new leader rebuilds it from heartbeats.
//!
//! Encoding (little-endian, `raftstore::codec`):
//!
//! ```text
//! | format u8 = 1 | id u64 | state u8 | peer_addr len u64, bytes | client_addr len u64, bytes |
//! ```
//!
//! Guarantee: `decode(encode(r)) == r`; a record that is truncated, has
//! trailing bytes, an unknown format or state, non-UTF-8 addresses, or an id
//! that differs from its key's is refused, never guessed at.

use raftstore::codec::{Decoder, Encoder};
use raftstore::command::{ReadOp, WriteOp};

use crate::cluster::{StoreRecord, StoreState};
use crate::error::PlacementError;
use crate::system_keys::{store_id_of_key, store_key, stores_range};

const RECORD_FORMAT_V1: u8 = 1;

/// Stores a registry scan returns at most (the registry's size bound).
pub const STORES_MAX: usize = 10_000;

fn state_code(state: StoreState) -> u8 {
    match state {
        StoreState::Up => 0,
        StoreState::Offline => 1,
        StoreState::Tombstone => 2,
    }
}

fn state_of_code(code: u8) -> Option<StoreState> {
    match code {
        0 => Some(StoreState::Up),
        1 => Some(StoreState::Offline),
        2 => Some(StoreState::Tombstone),
        _ => None,
    }
}

pub fn encode(record: &StoreRecord) -> Vec<u8> {
    let mut enc = Encoder::new();
    enc.u8(RECORD_FORMAT_V1)
        .u64(record.id)
        .u8(state_code(record.state))
        .bytes(record.peer_addr.as_bytes())
        .bytes(record.client_addr.as_bytes());
    enc.finish()
}

/// Decodes the record stored under store `store_id`'s key.
pub fn decode(store_id: u64, bytes: &[u8]) -> Result<StoreRecord, PlacementError> {
    let malformed = |reason: String| PlacementError::MalformedStoreRecord { store_id, reason };
    let mut dec = Decoder::new("store record", bytes);
    let format = dec.u8().map_err(|e| malformed(e.to_string()))?;
    if format != RECORD_FORMAT_V1 {
        return Err(malformed(format!("unknown format {format}")));
    }
    let id = dec.u64().map_err(|e| malformed(e.to_string()))?;
    if id != store_id {
        return Err(malformed(format!("it names store {id}")));
    }
    let code = dec.u8().map_err(|e| malformed(e.to_string()))?;
    let state = state_of_code(code).ok_or_else(|| malformed(format!("unknown state {code}")))?;
    let mut text = |what: &str| -> Result<String, PlacementError> {
        let raw = dec.bytes().map_err(|e| malformed(e.to_string()))?;
        String::from_utf8(raw).map_err(|_| malformed(format!("{what} is not UTF-8")))
    };
    let peer_addr = text("the peer address")?;
    let client_addr = text("the client address")?;
    dec.finish().map_err(|e| malformed(e.to_string()))?;
    Ok(StoreRecord {
        id,
        peer_addr,
        client_addr,
        state,
    })
}

/// The linearizable read of the whole registry.
pub fn scan_op() -> ReadOp {
    let (start, end) = stores_range();
    ReadOp::Scan {
        start,
        end,
        limit: STORES_MAX,
        reverse: false,
    }
}

/// Decodes what [`scan_op`] returned.
pub fn decode_scan(pairs: &[(Vec<u8>, Vec<u8>)]) -> Result<Vec<StoreRecord>, PlacementError> {
    pairs
        .iter()
        .map(|(key, value)| {
            let store_id = store_id_of_key(key).ok_or(PlacementError::MalformedStoreRecord {
                store_id: 0,
                reason: format!(
                    "key {:?} is not a store key",
                    key.escape_ascii().to_string()
                ),
            })?;
            decode(store_id, value)
        })
        .collect()
}

/// The compare-and-swap that replaces `expected` (`None`: no record yet)
/// by `new`, so that two leaders' writes cannot silently overwrite each
/// other.
pub fn swap_op(expected: Option<&StoreRecord>, new: &StoreRecord) -> WriteOp {
    debug_assert!(expected.is_none_or(|e| e.id == new.id));
    WriteOp::CompareAndSwap {
        key: store_key(new.id),
        expected: expected.map(encode),
        new: Some(encode(new)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(state: StoreState) -> StoreRecord {
        StoreRecord {
            id: 3,
            peer_addr: "127.0.0.3:2380".into(),
            client_addr: "127.0.0.3:20160".into(),
            state,
        }
    }

    #[test]
    fn records_round_trip_in_every_state() {
        for state in [StoreState::Up, StoreState::Offline, StoreState::Tombstone] {
            let r = record(state);
            assert_eq!(decode(3, &encode(&r)), Ok(r));
        }
    }

    #[test]
    fn damaged_records_are_refused() {
        let bytes = encode(&record(StoreState::Up));
        for cut in 0..bytes.len() {
            assert!(decode(3, &bytes[..cut]).is_err(), "truncated at {cut}");
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(decode(3, &trailing).is_err());
        assert!(
            decode(4, &bytes).is_err(),
            "a record under another store's key"
        );
        let mut bad_state = bytes.clone();
        bad_state[9] = 7;
        assert!(decode(3, &bad_state).is_err());
        let mut bad_format = bytes;
        bad_format[0] = 2;
        assert!(decode(3, &bad_format).is_err());
    }

    #[test]
    fn scans_decode_by_key() {
        let r = record(StoreState::Offline);
        let pairs = vec![(store_key(3), encode(&r))];
        assert_eq!(decode_scan(&pairs), Ok(vec![r.clone()]));
        let misplaced = vec![(b"\xFF\xFFplacement/stores/x".to_vec(), encode(&r))];
        assert!(decode_scan(&misplaced).is_err());
        let WriteOp::CompareAndSwap { key, expected, new } = swap_op(None, &r) else {
            panic!("a swap");
        };
        assert_eq!((key, expected, new), (store_key(3), None, Some(encode(&r))));
    }
}
