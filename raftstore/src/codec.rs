//! A small little-endian binary codec for Flotilla's own records (Raft
//! commands, region metadata, checkpoint metadata). Decoding never panics:
//! every read is bounds-checked and fails with [`CodecError`].

use thiserror::Error;

/// Input that does not decode: truncated, or a field out of range.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("malformed {what}: {reason}")]
pub struct CodecError {
    pub what: &'static str,
    pub reason: String,
}

/// Appends fixed-width integers and length-prefixed byte strings.
#[derive(Default)]
pub struct Encoder {
    buf: Vec<u8>,
}

impl Encoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// An encoder whose buffer holds `bytes` before it grows: a caller that
    /// knows about how much it writes saves the reallocations.
    pub fn with_capacity(bytes: usize) -> Self {
        Encoder {
            buf: Vec::with_capacity(bytes),
        }
    }

    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.u64(v.len() as u64);
        self.buf.extend_from_slice(v);
        self
    }

    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads what [`Encoder`] wrote, in the same order.
pub struct Decoder<'a> {
    what: &'static str,
    rest: &'a [u8],
}

impl<'a> Decoder<'a> {
    pub fn new(what: &'static str, input: &'a [u8]) -> Self {
        Self { what, rest: input }
    }

    fn err(&self, reason: impl Into<String>) -> CodecError {
        CodecError {
            what: self.what,
            reason: reason.into(),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.rest.len() < n {
            return Err(self.err(format!("needs {n} more bytes, has {}", self.rest.len())));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    pub fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }

    pub fn u64(&mut self) -> Result<u64, CodecError> {
        let mut raw = [0u8; 8];
        raw.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(raw))
    }

    pub fn bytes(&mut self) -> Result<Vec<u8>, CodecError> {
        let len = self.u64()?;
        let len = usize::try_from(len).map_err(|_| self.err("length overflows usize"))?;
        Ok(self.take(len)?.to_vec())
    }

    /// Consumes the next eight bytes if they are `marker`, as a `u64`.
    pub fn take_marker(&mut self, marker: u64) -> bool {
        let found = self.rest.get(..8) == Some(&marker.to_le_bytes()[..]);
        if found {
            self.rest = &self.rest[8..];
        }
        found
    }

    /// A count of items that follow, each at least `min_item_bytes` long:
    /// bounded by the remaining input so a corrupt count cannot allocate.
    pub fn count(&mut self, min_item_bytes: usize) -> Result<usize, CodecError> {
        let n = self.u64()?;
        let max = (self.rest.len() / min_item_bytes.max(1)) as u64;
        if n > max {
            return Err(self.err(format!(
                "count {n} exceeds what {} bytes can hold",
                self.rest.len()
            )));
        }
        Ok(n as usize)
    }

    /// Nothing is left to decode (an optional trailing field is absent).
    pub fn is_at_end(&self) -> bool {
        self.rest.is_empty()
    }

    pub fn finish(self) -> Result<(), CodecError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(CodecError {
                what: self.what,
                reason: format!("{} trailing bytes", self.rest.len()),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation_is_an_error() {
        let mut enc = Encoder::new();
        enc.u8(7).u64(42).bytes(b"hello");
        let buf = enc.finish();
        let mut dec = Decoder::new("test", &buf);
        assert_eq!(dec.u8().unwrap(), 7);
        assert_eq!(dec.u64().unwrap(), 42);
        assert_eq!(dec.bytes().unwrap(), b"hello");
        dec.finish().unwrap();
        for cut in 0..buf.len() {
            let mut dec = Decoder::new("test", &buf[..cut]);
            let ok = dec.u8().and_then(|_| dec.u64()).and_then(|_| dec.bytes());
            assert!(ok.is_err(), "cut at {cut} decoded");
        }
    }

    #[test]
    fn huge_count_is_refused_without_allocating() {
        let mut enc = Encoder::new();
        enc.u64(u64::MAX);
        let buf = enc.finish();
        assert!(Decoder::new("test", &buf).count(1).is_err());
        assert!(Decoder::new("test", &buf).bytes().is_err());
    }
}
