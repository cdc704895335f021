//! Segment files on disk: naming, listing, creating (preallocated, header
//! written), reading whole, truncating and removing. All writes go through
//! glommio `DmaFile` (O_DIRECT) with block-aligned buffers.

use std::path::{Path, PathBuf};

use glommio::io::{DmaFile, Directory, OpenOptions};

use super::format::{
    encode_batch, SegmentHeader, WAL_BLOCK_BYTES, SEGMENT_HEADER_BLOCK_BYTES,
};
use super::record::WalBatch;
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
pub(crate) fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:0width$}{SEGMENT_SUFFIX}", width = SEGMENT_SEQ_DIGITS))
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
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, EngineError> {
    let entries = std::fs::read_dir(dir).map_err(|e| EngineError::io_at("listing", dir, e))?;
    let mut segments = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| EngineError::io_at("listing", dir, e))?;
        let path = entry.path();
        match entry.file_name().to_str().and_then(parse_segment_name) {
            Some(seq) => segments.push((seq, path)),
            None => tracing::warn!(path = %path.display(), "ignoring a file that is not a WAL segment"),
        }
    }
    segments.sort_unstable_by_key(|(seq, _)| *seq);
    Ok(segments)
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

/// Deletes a segment file and makes the deletion durable.
pub(crate) async fn remove_segment(dir: &Directory, path: &Path) -> Result<(), EngineError> {
    glommio::io::remove(path)
        .await
        .map_err(|e| EngineError::io_at("removing", path, e))?;
    sync_dir(dir, path).await
}

/// Makes creations and removals in the WAL directory durable.
pub(crate) async fn sync_dir(dir: &Directory, changed: &Path) -> Result<(), EngineError> {
    dir.sync().await.map_err(|e| {
        EngineError::io_at("syncing the directory after changing", changed, e)
    })
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

/// A new segment file: created, preallocated, its directory entry durable,
/// and its header block plus `preamble` written (not yet synced).
pub(crate) struct NewSegment {
    pub(crate) file: DmaFile,
    /// Offset after the header block and preamble: where the next batch goes.
    pub(crate) write_offset: u64,
}

pub(crate) async fn create_segment(
    dir: &Directory,
    path: &Path,
    header: SegmentHeader,
    preamble: &WalBatch,
    preallocate_bytes: u64,
) -> Result<NewSegment, EngineError> {
    let file = open_read_write(path, true).await?;
    file.pre_allocate(preallocate_bytes, false)
        .await
        .map_err(|e| EngineError::io_at("preallocating", path, e))?;
    sync_dir(dir, path).await?;
    let len = SEGMENT_HEADER_BLOCK_BYTES + preamble.encoded_bytes();
    let mut buf = file.alloc_dma_buffer(len);
    let (header_block, preamble_area) = buf.as_bytes_mut().split_at_mut(SEGMENT_HEADER_BLOCK_BYTES);
    header.encode_block(header_block);
    if !preamble.is_empty() {
        encode_batch(preamble.records(), header.first_lsn, preamble_area);
    }
    write_all_at(&file, path, buf, 0).await?;
    Ok(NewSegment {
        file,
        write_offset: len as u64,
    })
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
        EngineError::io(format!("writing {len} bytes at offset {offset} of {}", path.display()), e)
    })?;
    if written != len {
        return Err(EngineError::io(
            format!("writing {len} bytes at offset {offset} of {}", path.display()),
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
        for other in ["1.wal", "0000000000000000000x.wal", "00000000000000000001.tmp", ""] {
            assert_eq!(parse_segment_name(other), None, "{other}");
        }
    }
}
