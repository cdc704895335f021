//! Request limits, checked before anything reaches Raft, so oversized or
//! malformed input is refused with a message the user can act on.
//!
//! Also the fence around the reserved system keyspace (keys starting `0xFF
//! 0xFF`, see `placement::system_keys`): user keys there are refused, writes
//! to ranges reaching into it are refused, and read ranges are clamped to
//! end before it. Every key and range of the Kv service passes through here.

use placement::system_keys::{clamp_to_user_keys, is_system_key};
use tonic::Status;

/// `(start, end)` of a range holding user keys only.
pub type UserRange = (Vec<u8>, Vec<u8>);

#[derive(Clone, Copy, Debug)]
pub struct RequestLimits {
    pub key_bytes_max: usize,
    pub value_bytes_max: usize,
    /// Keys or pairs in one batch request.
    pub batch_items_max: usize,
    /// Pairs one scan returns at most (also the default for limit 0).
    pub scan_limit_max: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            key_bytes_max: 8 << 10,
            value_bytes_max: 4 << 20,
            batch_items_max: 10_000,
            scan_limit_max: 10_000,
        }
    }
}

impl RequestLimits {
    /// A user key: not empty, not oversized, not a system key.
    pub fn key(&self, key: &[u8]) -> Result<(), Status> {
        if key.is_empty() {
            return Err(Status::invalid_argument("key must not be empty"));
        }
        self.key_size(key)?;
        if is_system_key(key) {
            return Err(Status::invalid_argument(
                "keys starting with the bytes 0xFF 0xFF are reserved for the cluster's own metadata; choose another key",
            ));
        }
        Ok(())
    }

    fn key_size(&self, key: &[u8]) -> Result<(), Status> {
        if key.len() > self.key_bytes_max {
            return Err(Status::invalid_argument(format!(
                "key is {} bytes; the limit is {} bytes (server flag --max-key-bytes)",
                key.len(),
                self.key_bytes_max
            )));
        }
        Ok(())
    }

    pub fn value(&self, value: &[u8]) -> Result<(), Status> {
        if value.len() > self.value_bytes_max {
            return Err(Status::invalid_argument(format!(
                "value is {} bytes; the limit is {} bytes (server flag --max-value-bytes)",
                value.len(),
                self.value_bytes_max
            )));
        }
        Ok(())
    }

    pub fn batch(&self, items: usize) -> Result<(), Status> {
        if items == 0 {
            return Err(Status::invalid_argument("batch must not be empty"));
        }
        if items > self.batch_items_max {
            return Err(Status::invalid_argument(format!(
                "batch has {items} items; the limit is {}: split it",
                self.batch_items_max
            )));
        }
        Ok(())
    }

    /// A range bound may be empty (unbounded) but not oversized.
    pub fn bound(&self, key: &[u8]) -> Result<(), Status> {
        self.key_size(key)
    }

    /// The range `[start, end)` of a scan or range delete (empty `end`: to
    /// the end of the user keys), bounds checked and cut where the system
    /// keyspace begins; `None` when no user key is left in it.
    pub fn user_range(&self, start: &[u8], end: &[u8]) -> Result<Option<UserRange>, Status> {
        self.bound(start)?;
        self.bound(end)?;
        Ok(clamp_to_user_keys(start, end).map(|(start, end)| (start.to_vec(), end.to_vec())))
    }

    pub fn scan_limit(&self, requested: u32) -> usize {
        match requested as usize {
            0 => self.scan_limit_max,
            n => n.min(self.scan_limit_max),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_and_empty_input_is_refused_with_the_limit_named() {
        let l = RequestLimits::default();
        assert!(l.key(b"k").is_ok());
        let e = l.key(&vec![0; 8193]).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("8192"), "{}", e.message());
        assert!(l.key(b"").is_err());
        assert!(l.value(&vec![0; 4 << 20]).is_ok());
        assert!(l.value(&vec![0; (4 << 20) + 1]).is_err());
        assert!(l.batch(0).is_err());
        assert_eq!(l.scan_limit(0), 10_000);
        assert_eq!(l.scan_limit(5), 5);
    }

    #[test]
    fn the_system_keyspace_is_refused_to_writes_and_cut_from_reads() {
        let l = RequestLimits::default();
        let system_key = b"\xFF\xFFplacement/tso_window";
        let refused = l.key(system_key).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert!(
            refused.message().contains("0xFF 0xFF"),
            "{}",
            refused.message()
        );
        assert!(l.key(b"\xFF\xFE").is_ok());
        // Bounds may name system keys; the range decides.
        assert!(l.bound(system_key).is_ok());
        assert_eq!(
            l.user_range(b"a", b"").unwrap(),
            Some((b"a".to_vec(), b"\xFF\xFF".to_vec()))
        );
        assert_eq!(
            l.user_range(b"a", b"m").unwrap(),
            Some((b"a".to_vec(), b"m".to_vec()))
        );
        assert_eq!(l.user_range(b"\xFF\xFF", b"").unwrap(), None);
        assert!(l.user_range(&vec![b'k'; 8193], b"").is_err());
    }
}
