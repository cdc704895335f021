//! Segment files on disk: naming, listing, creating (preallocated, header
//! written), reading whole, truncating and removing, each made durable.
//! All I/O on segments goes through glommio `DmaFile` (O_DIRECT) with
//! block-aligned buffers.

use std::path::{Path, PathBuf};

use glommio::io::{Directory, DmaFile, OpenOptions};

use super::format::{encode_batch, SegmentHeader, SEGMENT_HEADER_BLOCK_BYTES, WAL_BLOCK_BYTES};
use super::record::WalBatch;
use crate::durable_dir::create_dir_durably;
use crate::EngineError;

const SEGMENT_SUFFIX: &str = ".wal";
const SEGMENT_SEQ_DIGITS: usize = 20;
/// Recovery reads segments in pieces this large (glommio splits no reads itself).
const READ_CHUNK_BYTES: usize = 1 << 20;

/// Up-front reservation for a segment read; an absurd file size on disk must
/// not turn into an absurd allocation before any byte is read.
const READ_RESERVE_BYTES_MAX: u64 = 256 << 20;

const _: () = assert!(READ_CHUNK_BYTES % WAL_BLOCK_BYTES == 0);

/// `00000000000000000042.wal` for segment 42: names sort in sequence order.
fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!(
        "{seq:0width$}{SEGMENT_SUFFIX}",
        width = SEGMENT_SEQ_DIGITS
    ))
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != SEGMENT_SEQ_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The segment files in `dir`, by ascending sequence number. Other files are
/// ignored with a warning.
fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, EngineError> {
    let entries = std::fs::read_dir(dir).map_err(|e| EngineError::io_at("listing", dir, e))?;
    let mut segments = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| EngineError::io_at("listing", dir, e))?;
        let path = entry.path();
        let name = entry.file_name();
        match name.to_str().and_then(parse_segment_name) {
            Some(seq) => segments.push((seq, path)),
            None if name == PROBE_FILE_NAME => {}
            None => {
                tracing::warn!(path = %path.display(), "ignoring a file that is not a WAL segment")
            }
        }
    }
    segments.sort_unstable_by_key(|(seq, _)| *seq);
    Ok(segments)
}

/// Scratch file for [`prime_io_poll_probe`]; never a segment name.
const PROBE_FILE_NAME: &str = "io-poll-probe";

/// glommio decides once per thread and device whether the device supports
/// polled I/O, by reading from the first `DmaFile` opened there. A file that
/// is empty or only preallocated answers that read without touching the
/// device, glommio wrongly concludes "polled", and every later read fails with
/// EOPNOTSUPP. Opening a file holding written data first makes the probe ask
/// the device itself. Must run before any other `DmaFile` opens on the thread.
async fn prime_io_poll_probe(dir: &Path) -> Result<(), EngineError> {
    let path = dir.join(PROBE_FILE_NAME);
    std::fs::write(&path, [0x5a; WAL_BLOCK_BYTES])
        .map_err(|e| EngineError::io_at("writing", &path, e))?;
    let file = open_read_write(&path, false).await?;
    file.close()
        .await
        .map_err(|e| EngineError::io_at("closing", &path, e))?;
    std::fs::remove_file(&path).map_err(|e| EngineError::io_at("removing", &path, e))
}

/// Reads a whole segment file.
pub(crate) async fn read_segment(path: &Path) -> Result<Vec<u8>, EngineError> {
    let file = open_read_write(path, false).await?;
    let len = file
        .file_size()
        .await
        .map_err(|e| EngineError::io_at("sizing", path, e))?;
    let mut bytes = Vec::with_capacity(len.min(READ_RESERVE_BYTES_MAX) as usize);
    while (bytes.len() as u64) < len {
        let chunk = file
            .read_at_aligned(bytes.len() as u64, READ_CHUNK_BYTES)
            .await
            .map_err(|e| EngineError::io_at("reading", path, e))?;
        if chunk.is_empty() {
            break;
        }
        bytes.extend_from_slice(&chunk);
    }
    file.close()
        .await
        .map_err(|e| EngineError::io_at("closing", path, e))?;
    Ok(bytes)
}

/// Cuts a segment at `len` bytes and makes the cut durable.
pub(crate) async fn truncate_segment(path: &Path, len: u64) -> Result<(), EngineError> {
    let file = open_read_write(path, false).await?;
    file.truncate(len)
        .await
        .map_err(|e| EngineError::io_at("truncating", path, e))?;
    file.fdatasync()
        .await
        .map_err(|e| EngineError::io_at("syncing", path, e))?;
    file.close()
        .await
        .map_err(|e| EngineError::io_at("closing", path, e))
}

/// Opens a WAL file read+write (write-only breaks glommio's iopoll probe).
async fn open_read_write(path: &Path, create_new: bool) -> Result<DmaFile, EngineError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(create_new)
        .dma_open(path)
        .await
        .map_err(|e| EngineError::io_at("opening", path, e))
}

/// The WAL directory, where segments are created and removed durably.
pub(crate) struct SegmentDir {
    path: PathBuf,
    handle: Directory,
    segment_bytes: u64,
}

/// A segment open for appends. When [`SegmentDir::create`] returns it, it is
/// preallocated, its directory entry is durable, and its header block and
/// preamble are written but not yet synced.
pub(crate) struct OpenSegment {
    pub(crate) seq: u64,
    pub(crate) path: PathBuf,
    pub(crate) file: DmaFile,
    /// Offset after the header block and preamble: where the next batch goes.
    pub(crate) write_offset: u64,
}

impl SegmentDir {
    /// Opens (creating if missing) the WAL directory; segments created in it
    /// are preallocated to `segment_bytes`. Must run before any other
    /// `DmaFile` is opened on this thread (see [`prime_io_poll_probe`]).
    pub(crate) async fn open(path: &Path, segment_bytes: u64) -> Result<SegmentDir, EngineError> {
        create_dir_durably(path)?;
        prime_io_poll_probe(path).await?;
        let handle = Directory::open(path)
            .await
            .map_err(|e| EngineError::io_at("opening", path, e))?;
        Ok(SegmentDir {
            path: path.to_path_buf(),
            handle,
            segment_bytes,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The segment files, by ascending sequence number.
    pub(crate) fn list(&self) -> Result<Vec<(u64, PathBuf)>, EngineError> {
        list_segments(&self.path)
    }

    /// Creates segment `seq` whose first record carries `first_lsn`, with
    /// `preamble` as its first batch (none if empty).
    pub(crate) async fn create(
        &self,
        seq: u64,
        first_lsn: u64,
        preamble: &WalBatch,
    ) -> Result<OpenSegment, EngineError> {
        let path = segment_path(&self.path, seq);
        let file = open_read_write(&path, true).await?;
        file.pre_allocate(self.segment_bytes, false)
            .await
            .map_err(|e| EngineError::io_at("preallocating", &path, e))?;
        self.sync(&path).await?;
        let len = SEGMENT_HEADER_BLOCK_BYTES + preamble.encoded_bytes();
        let mut buf = file.alloc_dma_buffer(len);
        let (header_block, preamble_area) =
            buf.as_bytes_mut().split_at_mut(SEGMENT_HEADER_BLOCK_BYTES);
        SegmentHeader {
            segment_seq: seq,
            first_lsn,
        }
        .encode_block(header_block);
        if !preamble.is_empty() {
            encode_batch(preamble.records(), first_lsn, preamble_area);
        }
        write_all_at(&file, &path, buf, 0).await?;
        Ok(OpenSegment {
            seq,
            path,
            file,
            write_offset: len as u64,
        })
    }

    /// Deletes a segment file and makes the deletion durable.
    pub(crate) async fn remove(&self, path: &Path) -> Result<(), EngineError> {
        glommio::io::remove(path)
            .await
            .map_err(|e| EngineError::io_at("removing", path, e))?;
        self.sync(path).await
    }

    /// Makes the creation or removal of `changed` durable.
    async fn sync(&self, changed: &Path) -> Result<(), EngineError> {
        self.handle
            .sync()
            .await
            .map_err(|e| EngineError::io_at("syncing the directory after changing", changed, e))
    }
}

/// Writes a whole DMA buffer at a block-aligned offset; a short write is an error.
pub(crate) async fn write_all_at(
    file: &DmaFile,
    path: &Path,
    buf: glommio::io::DmaBuffer,
    offset: u64,
) -> Result<(), EngineError> {
    debug_assert_eq!(offset % WAL_BLOCK_BYTES as u64, 0);
    debug_assert_eq!(buf.len() % WAL_BLOCK_BYTES, 0);
    let len = buf.len();
    let written = file.write_at(buf, offset).await.map_err(|e| {
        EngineError::io(
            format!(
                "writing {len} bytes at offset {offset} of {}",
                path.display()
            ),
            e,
        )
    })?;
    if written != len {
        return Err(EngineError::io(
            format!(
                "writing {len} bytes at offset {offset} of {}",
                path.display()
            ),
            std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                format!("short write of {written} bytes"),
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip_and_sort_by_sequence() {
        let dir = Path::new("wal");
        for seq in [0, 1, 42, u64::MAX] {
            let path = segment_path(dir, seq);
            let name = path.file_name().and_then(|n| n.to_str());
            assert_eq!(name.and_then(parse_segment_name), Some(seq));
        }
        assert!(segment_path(dir, 9) < segment_path(dir, 10));
        for other in [
            "1.wal",
            "0000000000000000000x.wal",
            "00000000000000000001.tmp",
            "",
        ] {
            assert_eq!(parse_segment_name(other), None, "{other}");
        }
    }
}
