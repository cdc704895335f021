//! Request limits, checked before anything reaches Raft, so oversized or
//! malformed input is refused with a message the user can act on.

use tonic::Status;

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
    pub fn key(&self, key: &[u8]) -> Result<(), Status> {
        if key.is_empty() {
            return Err(Status::invalid_argument("key must not be empty"));
        }
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
        if key.is_empty() {
            Ok(())
        } else {
            self.key(key)
        }
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
}
