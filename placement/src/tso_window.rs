//! The timestamp oracle's durable window as stored under
//! [`crate::system_keys::TSO_WINDOW_KEY`]: which node owns the oracle and
//! the physical time (ms) below which its timestamps stay.
//!
//! Encoding (16 bytes, fixed width, little-endian):
//!
//! ```text
//! 0       8        16
//! | owner | end_ms |
//! ```
//!
//! Guarantee: `decode(encode(w)) == w`, and anything that is not exactly 16
//! bytes is refused, never guessed at.

use crate::error::PlacementError;

/// Bytes of an encoded [`TsoWindow`].
pub const TSO_WINDOW_BYTES: usize = 16;

/// A durable window: `owner` may hand out timestamps with a physical part
/// below `end_ms`, and nobody else may until it has swapped the window away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TsoWindow {
    /// Node id of the oracle's owner.
    pub owner: u64,
    /// Physical time (ms since the Unix epoch) the owner stays below.
    pub end_ms: u64,
}

impl TsoWindow {
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(TSO_WINDOW_BYTES);
        bytes.extend_from_slice(&self.owner.to_le_bytes());
        bytes.extend_from_slice(&self.end_ms.to_le_bytes());
        debug_assert_eq!(bytes.len(), TSO_WINDOW_BYTES);
        bytes
    }

    pub fn decode(bytes: &[u8]) -> Result<TsoWindow, PlacementError> {
        let malformed = || PlacementError::MalformedWindow { len: bytes.len() };
        let (owner, end_ms) = bytes.split_first_chunk::<8>().ok_or_else(malformed)?;
        let end_ms: &[u8; 8] = end_ms.try_into().map_err(|_| malformed())?;
        Ok(TsoWindow {
            owner: u64::from_le_bytes(*owner),
            end_ms: u64::from_le_bytes(*end_ms),
        })
    }

    /// The stored window, if the key holds one (`None`: absent).
    pub fn decode_stored(value: Option<&[u8]>) -> Result<Option<TsoWindow>, PlacementError> {
        value.map(TsoWindow::decode).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_round_trip_in_sixteen_little_endian_bytes() {
        let window = TsoWindow {
            owner: 3,
            end_ms: 1_700_000_000_123,
        };
        let bytes = window.encode();
        assert_eq!(bytes.len(), TSO_WINDOW_BYTES);
        assert_eq!(&bytes[..8], &3u64.to_le_bytes());
        assert_eq!(&bytes[8..], &1_700_000_000_123u64.to_le_bytes());
        assert_eq!(TsoWindow::decode(&bytes), Ok(window));
    }

    #[test]
    fn anything_but_sixteen_bytes_is_refused() {
        for len in [0, 1, 8, 15, 17, 32] {
            assert_eq!(
                TsoWindow::decode(&vec![0; len]),
                Err(PlacementError::MalformedWindow { len })
            );
        }
        assert_eq!(TsoWindow::decode_stored(None), Ok(None));
    }
}
