//! Durable per-region checkpoints: a region's applied position, opaque
//! metadata and every key-value pair, in one self-describing, checksummed
//! file. A checkpoint is both the store's durability (until the LSM lands)
//! and the body of a Raft snapshot.
//!
//! Guarantees: [`write()`] replaces a region's previous checkpoint atomically
//! (temporary file, fsync, rename, directory fsync); [`decode`] rejects any
//! truncated or damaged input with an error and never panics, and allocates
//! no more than its input could describe.
//!
//! Layout (little-endian), 32-byte header then body:
//! ```text
//! header: magic "FLOTCKPT" (8) | version u32 | reserved u32 = 0 | body_bytes u64
//!         | body_crc32c u32 | header_crc32c u32 (over the 28 bytes before it)
//! body:   region_id u64 | applied_index u64 | applied_term u64
//!         | meta_len u32 | meta | pair_count u64
//!         | pair_count × (key_len u32 | key | value_len u32 | value)
//! ```

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::durable_dir::{create_dir_durably, remove_file, sync_dir};
use crate::EngineError;

/// A region's state machine at `applied_index`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub region_id: u64,
    pub applied_index: u64,
    pub applied_term: u64,
    /// Opaque to the engine: region meta, conf state, session table.
    pub meta: Vec<u8>,
    /// Key-value pairs of the region, in key order.
    pub pairs: Vec<(Vec<u8>, Vec<u8>)>,
}

const MAGIC: [u8; 8] = *b"FLOTCKPT";
const VERSION: u32 = 1;
const HEADER_BYTES: usize = 32;
const HEADER_CRC_AT: usize = 28;
const FILE_PREFIX: &str = "region-";
const FILE_SUFFIX: &str = ".checkpoint";
const TEMP_SUFFIX: &str = ".tmp";

fn push_len(out: &mut Vec<u8>, len: usize, what: &str) {
    assert!(
        len <= u32::MAX as usize,
        "{what} of {len} bytes exceeds the 4 GiB limit"
    );
    out.extend_from_slice(&(len as u32).to_le_bytes());
}

/// Encodes `cp` with header and body checksums.
pub fn encode(cp: &Checkpoint) -> Vec<u8> {
    let pair_bytes: usize = cp.pairs.iter().map(|(k, v)| 8 + k.len() + v.len()).sum();
    let mut out = Vec::with_capacity(HEADER_BYTES + 36 + cp.meta.len() + pair_bytes);
    out.resize(HEADER_BYTES, 0);
    out.extend_from_slice(&cp.region_id.to_le_bytes());
    out.extend_from_slice(&cp.applied_index.to_le_bytes());
    out.extend_from_slice(&cp.applied_term.to_le_bytes());
    push_len(&mut out, cp.meta.len(), "checkpoint meta");
    out.extend_from_slice(&cp.meta);
    out.extend_from_slice(&(cp.pairs.len() as u64).to_le_bytes());
    for (key, value) in &cp.pairs {
        push_len(&mut out, key.len(), "key");
        out.extend_from_slice(key);
        push_len(&mut out, value.len(), "value");
        out.extend_from_slice(value);
    }
    let body_bytes = (out.len() - HEADER_BYTES) as u64;
    let body_crc = crc32c::crc32c(&out[HEADER_BYTES..]);
    out[0..8].copy_from_slice(&MAGIC);
    out[8..12].copy_from_slice(&VERSION.to_le_bytes());
    out[16..24].copy_from_slice(&body_bytes.to_le_bytes());
    out[24..28].copy_from_slice(&body_crc.to_le_bytes());
    let header_crc = crc32c::crc32c(&out[..HEADER_CRC_AT]);
    out[HEADER_CRC_AT..HEADER_BYTES].copy_from_slice(&header_crc.to_le_bytes());
    out
}

fn corrupt(what: impl Into<String>) -> EngineError {
    EngineError::Corrupt { what: what.into() }
}

/// Checks the header and both checksums; returns the body.
fn verified_body(bytes: &[u8]) -> Result<&[u8], EngineError> {
    if bytes.len() < HEADER_BYTES {
        return Err(corrupt(format!(
            "checkpoint is {} bytes, shorter than its {HEADER_BYTES}-byte header",
            bytes.len()
        )));
    }
    let mut header = Reader::new(&bytes[..HEADER_BYTES]);
    let magic = header.bytes(8)?;
    let version = header.u32()?;
    let reserved = header.u32()?;
    let body_bytes = header.u64()?;
    let body_crc = header.u32()?;
    let header_crc = header.u32()?;
    if crc32c::crc32c(&bytes[..HEADER_CRC_AT]) != header_crc {
        return Err(corrupt("checkpoint header checksum mismatch"));
    }
    if magic != MAGIC {
        return Err(corrupt("not a checkpoint (wrong magic)"));
    }
    if version != VERSION || reserved != 0 {
        return Err(corrupt(format!(
            "unsupported checkpoint format version {version}"
        )));
    }
    let body = &bytes[HEADER_BYTES..];
    if body.len() as u64 != body_bytes {
        return Err(corrupt(format!(
            "checkpoint body is {} bytes, its header says {body_bytes}",
            body.len()
        )));
    }
    if crc32c::crc32c(body) != body_crc {
        return Err(corrupt("checkpoint body checksum mismatch"));
    }
    Ok(body)
}

/// What a checkpoint says before its pairs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointHead {
    pub region_id: u64,
    pub applied_index: u64,
    pub applied_term: u64,
    /// As [`Checkpoint::meta`].
    pub meta: Vec<u8>,
}

fn read_head(body: &mut Reader<'_>) -> Result<CheckpointHead, EngineError> {
    let region_id = body.u64()?;
    let applied_index = body.u64()?;
    let applied_term = body.u64()?;
    let meta_len = body.u32()? as usize;
    let meta = body.bytes(meta_len)?.to_vec();
    Ok(CheckpointHead {
        region_id,
        applied_index,
        applied_term,
        meta,
    })
}

/// Decodes a checkpoint's head, checking both checksums but not parsing
/// the pairs: what offering the checkpoint as a snapshot needs, at a
/// fraction of the cost of [`decode`] for a large region.
pub fn decode_head(bytes: &[u8]) -> Result<CheckpointHead, EngineError> {
    read_head(&mut Reader::new(verified_body(bytes)?))
}

/// Decodes a checkpoint; any damage is an error.
pub fn decode(bytes: &[u8]) -> Result<Checkpoint, EngineError> {
    let mut body = Reader::new(verified_body(bytes)?);
    let CheckpointHead {
        region_id,
        applied_index,
        applied_term,
        meta,
    } = read_head(&mut body)?;
    let pair_count = body.u64()?;
    // Each pair takes at least its two length fields.
    if pair_count > (body.remaining() / 8) as u64 {
        return Err(corrupt(format!(
            "checkpoint claims {pair_count} pairs but has {} bytes left",
            body.remaining()
        )));
    }
    let mut pairs = Vec::with_capacity(pair_count as usize);
    for _ in 0..pair_count {
        let key_len = body.u32()? as usize;
        let key = body.bytes(key_len)?.to_vec();
        let value_len = body.u32()? as usize;
        let value = body.bytes(value_len)?.to_vec();
        pairs.push((key, value));
    }
    if body.remaining() != 0 {
        return Err(corrupt(format!(
            "checkpoint has {} unexpected bytes after its last pair",
            body.remaining()
        )));
    }
    Ok(Checkpoint {
        region_id,
        applied_index,
        applied_term,
        meta,
        pairs,
    })
}

/// A bounds-checked little-endian cursor.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn bytes(&mut self, len: usize) -> Result<&'a [u8], EngineError> {
        if len > self.remaining() {
            return Err(corrupt(format!(
                "checkpoint field of {len} bytes at body offset {} runs past the end",
                self.pos
            )));
        }
        let field = &self.bytes[self.pos..self.pos + len];
        self.pos += len;
        Ok(field)
    }

    fn u32(&mut self) -> Result<u32, EngineError> {
        let mut le = [0u8; 4];
        le.copy_from_slice(self.bytes(4)?);
        Ok(u32::from_le_bytes(le))
    }

    fn u64(&mut self) -> Result<u64, EngineError> {
        let mut le = [0u8; 8];
        le.copy_from_slice(self.bytes(8)?);
        Ok(u64::from_le_bytes(le))
    }
}

fn checkpoint_path(dir: &Path, region_id: u64) -> PathBuf {
    dir.join(format!("{FILE_PREFIX}{region_id:020}{FILE_SUFFIX}"))
}

/// Durably replaces the region's checkpoint in `dir` (created if missing),
/// unless the one there has a higher applied index: a checkpoint never
/// replaces a newer one. Blocking: call from a thread that may block.
pub fn write(dir: &Path, cp: &Checkpoint) -> Result<(), EngineError> {
    replace(dir, cp.region_id, cp.applied_index, &encode(cp))
}

/// As [`write()`], for the checkpoint of `region_id` at `applied_index`
/// already encoded (a Raft snapshot's data): refused unless its checksums
/// verify and its head names that region and index, so a damaged or
/// mislabelled one never becomes a region's checkpoint.
pub fn write_encoded(
    dir: &Path,
    region_id: u64,
    applied_index: u64,
    bytes: &[u8],
) -> Result<(), EngineError> {
    let head = decode_head(bytes)?;
    if (head.region_id, head.applied_index) != (region_id, applied_index) {
        return Err(corrupt(format!(
            "expected the checkpoint of region {region_id} at {applied_index}, got region {} at {}",
            head.region_id, head.applied_index
        )));
    }
    replace(dir, region_id, applied_index, bytes)
}

/// Writes `bytes`, the checkpoint of `region_id` at `applied_index`, as
/// [`write()`] describes.
fn replace(
    dir: &Path,
    region_id: u64,
    applied_index: u64,
    bytes: &[u8],
) -> Result<(), EngineError> {
    create_dir_durably(dir)?;
    let path = checkpoint_path(dir, region_id);
    // One temporary file per index: concurrent writers never share one.
    let mut temp_name = path.clone().into_os_string();
    temp_name.push(format!(".{applied_index}{TEMP_SUFFIX}"));
    let temp = PathBuf::from(temp_name);
    let mut file = fs::File::create(&temp).map_err(|e| EngineError::io_at("creating", &temp, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| EngineError::io_at("writing", &temp, e))?;
    drop(file);
    // Writers of one region may race (a background checkpoint against one
    // taken at a split): the newest applied index must win, whatever order
    // the writes finish in.
    let _serialised = REPLACE_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    if applied_index_on_disk(&path).is_some_and(|on_disk| on_disk > applied_index) {
        fs::remove_file(&temp).map_err(|e| EngineError::io_at("removing", &temp, e))?;
        tracing::debug!(
            region = region_id,
            index = applied_index,
            "a newer checkpoint is already durable; this one is dropped"
        );
        return Ok(());
    }
    fs::rename(&temp, &path).map_err(|e| EngineError::io_at("renaming into place", &path, e))?;
    sync_dir(dir)
}

/// Serialises the compare-and-replace step of [`write()`].
static REPLACE_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The applied index in the header of the checkpoint at `path`, if a
/// readable one is there.
fn applied_index_on_disk(path: &Path) -> Option<u64> {
    use std::io::Read;
    let mut head = [0u8; HEADER_BYTES + 16];
    fs::File::open(path).ok()?.read_exact(&mut head).ok()?;
    if head[..8] != MAGIC {
        return None;
    }
    let at = HEADER_BYTES + 8;
    Some(u64::from_le_bytes(head[at..at + 8].try_into().ok()?))
}

/// The region's checkpoint as stored (checksums verified), e.g. to send as a
/// Raft snapshot; `None` if the region has none.
pub fn read_bytes(dir: &Path, region_id: u64) -> Result<Option<Vec<u8>>, EngineError> {
    let path = checkpoint_path(dir, region_id);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(EngineError::io_at("reading", &path, e)),
    };
    verified_body(&bytes).map_err(|e| in_file(&path, e))?;
    Ok(Some(bytes))
}

/// Whether the region has a checkpoint in `dir`.
pub fn exists(dir: &Path, region_id: u64) -> bool {
    checkpoint_path(dir, region_id).exists()
}

/// The region's checkpoint, or `None` if it has none.
pub fn read(dir: &Path, region_id: u64) -> Result<Option<Checkpoint>, EngineError> {
    let Some(bytes) = read_bytes(dir, region_id)? else {
        return Ok(None);
    };
    let path = checkpoint_path(dir, region_id);
    let cp = decode(&bytes).map_err(|e| in_file(&path, e))?;
    if cp.region_id != region_id {
        return Err(corrupt(format!(
            "{} holds a checkpoint of region {}",
            path.display(),
            cp.region_id
        )));
    }
    Ok(Some(cp))
}

/// Removes the region's checkpoint durably; returns whether there was one.
pub fn remove(dir: &Path, region_id: u64) -> Result<bool, EngineError> {
    remove_file(&checkpoint_path(dir, region_id))
}

/// Regions with a checkpoint in `dir`, ascending; empty if `dir` is missing.
pub fn list_regions(dir: &Path) -> Result<Vec<u64>, EngineError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(EngineError::io_at("listing", dir, e)),
    };
    let mut regions = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| EngineError::io_at("listing", dir, e))?;
        let name = entry.file_name();
        let region = name
            .to_str()
            .and_then(|n| n.strip_prefix(FILE_PREFIX))
            .and_then(|n| n.strip_suffix(FILE_SUFFIX))
            .and_then(|digits| digits.parse::<u64>().ok());
        regions.extend(region);
    }
    regions.sort_unstable();
    Ok(regions)
}

fn in_file(path: &Path, error: EngineError) -> EngineError {
    match error {
        EngineError::Corrupt { what } => corrupt(format!("{}: {what}", path.display())),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::scratch_dir;

    fn sample() -> Checkpoint {
        Checkpoint {
            region_id: 42,
            applied_index: 1000,
            applied_term: 7,
            meta: b"region meta".to_vec(),
            pairs: vec![
                (b"a".to_vec(), b"1".to_vec()),
                (b"b".to_vec(), Vec::new()),
                (Vec::new(), b"empty key".to_vec()),
                (vec![0xff; 300], vec![0x5a; 1000]),
            ],
        }
    }

    #[test]
    fn encode_decode_round_trip() {
        let cp = sample();
        assert_eq!(decode(&encode(&cp)).unwrap(), cp);
        let head = CheckpointHead {
            region_id: 42,
            applied_index: 1000,
            applied_term: 7,
            meta: b"region meta".to_vec(),
        };
        assert_eq!(decode_head(&encode(&cp)).unwrap(), head);
        let empty = Checkpoint {
            meta: Vec::new(),
            pairs: Vec::new(),
            ..cp
        };
        assert_eq!(decode(&encode(&empty)).unwrap(), empty);
    }

    #[test]
    fn every_truncation_is_rejected() {
        let bytes = encode(&sample());
        for len in 0..bytes.len() {
            assert!(
                matches!(decode(&bytes[..len]), Err(EngineError::Corrupt { .. })),
                "truncated to {len}"
            );
            assert!(
                decode_head(&bytes[..len]).is_err(),
                "head, truncated to {len}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer).is_err(), "trailing byte");
    }

    #[test]
    fn every_bit_flip_is_rejected() {
        let mut bytes = encode(&sample());
        for at in 0..bytes.len() {
            for bit in 0..8 {
                bytes[at] ^= 1 << bit;
                assert!(decode(&bytes).is_err(), "flip at {at} bit {bit}");
                assert!(decode_head(&bytes).is_err(), "head, flip at {at} bit {bit}");
                bytes[at] ^= 1 << bit;
            }
        }
    }

    #[test]
    fn well_sealed_but_inconsistent_bodies_are_rejected() {
        // A body that passes its checksums but claims more pairs than it holds.
        let cp = Checkpoint {
            pairs: Vec::new(),
            meta: Vec::new(),
            ..sample()
        };
        let mut bytes = encode(&cp);
        let count_at = HEADER_BYTES + 28;
        bytes[count_at..count_at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        let body_crc = crc32c::crc32c(&bytes[HEADER_BYTES..]);
        bytes[24..28].copy_from_slice(&body_crc.to_le_bytes());
        let header_crc = crc32c::crc32c(&bytes[..HEADER_CRC_AT]);
        bytes[HEADER_CRC_AT..HEADER_BYTES].copy_from_slice(&header_crc.to_le_bytes());
        let error = decode(&bytes).unwrap_err().to_string();
        assert!(error.contains("pairs"), "{error}");
    }

    #[test]
    fn write_read_replace_and_remove_through_a_directory() {
        let scratch = scratch_dir();
        let dir = scratch.path().join("store");
        assert_eq!(read(&dir, 42).unwrap(), None);
        assert_eq!(list_regions(&dir).unwrap(), Vec::<u64>::new());

        let first = sample();
        write(&dir, &first).unwrap();
        assert_eq!(read(&dir, 42).unwrap(), Some(first.clone()));
        assert_eq!(read_bytes(&dir, 42).unwrap(), Some(encode(&first)));

        let second = Checkpoint {
            applied_index: 2000,
            pairs: vec![(b"z".to_vec(), b"26".to_vec())],
            ..first.clone()
        };
        write(&dir, &second).unwrap();
        // An older checkpoint finishing late never replaces a newer one.
        write(&dir, &first).unwrap();
        assert_eq!(read(&dir, 42).unwrap(), Some(second.clone()));
        write(
            &dir,
            &Checkpoint {
                region_id: 7,
                ..second.clone()
            },
        )
        .unwrap();
        assert_eq!(read(&dir, 42).unwrap(), Some(second));
        assert_eq!(list_regions(&dir).unwrap(), vec![7, 42]);
        let leftovers: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().ends_with(TEMP_SUFFIX))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");

        assert!(remove(&dir, 7).unwrap());
        assert!(!remove(&dir, 7).unwrap());
        assert_eq!(list_regions(&dir).unwrap(), vec![42]);
    }

    #[test]
    fn an_encoded_checkpoint_is_written_only_if_it_checks() {
        let scratch = scratch_dir();
        let dir = scratch.path();
        let cp = sample();
        let mut bytes = encode(&cp);
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(matches!(
            write_encoded(dir, 42, cp.applied_index, &bytes),
            Err(EngineError::Corrupt { .. })
        ));
        bytes[last] ^= 1;
        assert!(matches!(
            write_encoded(dir, 43, cp.applied_index, &bytes),
            Err(EngineError::Corrupt { .. })
        ));
        assert!(matches!(
            write_encoded(dir, 42, cp.applied_index + 1, &bytes),
            Err(EngineError::Corrupt { .. })
        ));
        assert!(!exists(dir, 42));

        write_encoded(dir, 42, cp.applied_index, &bytes).unwrap();
        assert_eq!(read(dir, 42).unwrap(), Some(cp.clone()));
        // Like any checkpoint, it never replaces a newer one.
        let older = Checkpoint {
            applied_index: cp.applied_index - 1,
            pairs: Vec::new(),
            ..cp.clone()
        };
        write_encoded(dir, 42, older.applied_index, &encode(&older)).unwrap();
        assert_eq!(read(dir, 42).unwrap(), Some(cp));
    }

    #[test]
    fn damaged_files_are_rejected_with_their_path() {
        let scratch = scratch_dir();
        let dir = scratch.path();
        write(dir, &sample()).unwrap();
        let path = checkpoint_path(dir, 42);
        let mut bytes = fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 4;
        fs::write(&path, &bytes).unwrap();
        let error = read(dir, 42).unwrap_err().to_string();
        assert!(error.contains(&path.display().to_string()), "{error}");
        assert!(read_bytes(dir, 42).is_err());

        fs::write(&path, &encode(&sample())[..100]).unwrap();
        assert!(matches!(read(dir, 42), Err(EngineError::Corrupt { .. })));

        // A valid checkpoint of another region under this region's name.
        fs::write(
            &path,
            encode(&Checkpoint {
                region_id: 9,
                ..sample()
            }),
        )
        .unwrap();
        assert!(read(dir, 42).is_err());
    }
}
