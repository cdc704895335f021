//! [`CheckpointWriter`]: one thread per shard that finishes the shard's
//! checkpoints, one at a time and in the order they were queued (a split
//! relies on it: the new region's checkpoint is durable before its
//! parent's): it copies each region's captured pairs and writes its file
//! (see `checkpoint`), off the shard's loop.
//!
//! The thread runs at a lower priority than the shard and gRPC threads
//! ([`BACKGROUND_NICE`]): a checkpoint copies its whole region, and at the
//! foreground's priority that copy would take a core from them for as long
//! as it lasts. A region being copied keeps applying; its writes save what
//! they overwrite for the copy.

use std::path::PathBuf;
use std::time::Instant;

use crate::checkpoint::PendingCheckpoint;
use crate::error::RaftstoreError;
use crate::metrics;
use crate::shard_core::CheckpointDone;

/// The writer thread's niceness: the kernel weighs it about a tenth of a
/// thread at 0, so it gets a core only while the foreground leaves one.
const BACKGROUND_NICE: libc::c_int = 10;

pub(crate) struct CheckpointWriter {
    jobs: flume::Sender<PendingCheckpoint>,
    done: flume::Receiver<CheckpointDone>,
    /// Checkpoints refused because the thread is gone (it never stops
    /// while the writer lives, unless it panicked).
    refused: Vec<CheckpointDone>,
}

impl CheckpointWriter {
    /// Starts shard `shard_index`'s writer, writing into `dir`. The thread
    /// ends when the writer is dropped.
    pub(crate) fn start(shard_index: usize, dir: PathBuf) -> Result<Self, RaftstoreError> {
        let (jobs, queued) = flume::unbounded::<PendingCheckpoint>();
        let (finished, done) = flume::unbounded();
        std::thread::Builder::new()
            .name(format!("checkpoint-{shard_index}"))
            .spawn(move || {
                yield_to_foreground();
                for checkpoint in queued.iter() {
                    let started = Instant::now();
                    let outcome = checkpoint.write(&dir);
                    metrics::CHECKPOINT_WRITE_SECONDS.observe(started.elapsed().as_secs_f64());
                    if finished.send(outcome).is_err() {
                        break; // the shard is gone
                    }
                }
            })
            .map_err(|e| {
                RaftstoreError::Internal(format!("cannot start the checkpoint writer: {e}"))
            })?;
        Ok(CheckpointWriter {
            jobs,
            done,
            refused: Vec::new(),
        })
    }

    /// Queues `checkpoint`; its outcome comes back through `finished`.
    pub(crate) fn write(&mut self, checkpoint: PendingCheckpoint) {
        if let Err(flume::SendError(checkpoint)) = self.jobs.send(checkpoint) {
            tracing::error!(
                region = checkpoint.region_id(),
                "the checkpoint writer has stopped; checkpoint not written"
            );
            self.refused.push(CheckpointDone {
                region_id: checkpoint.region_id(),
                applied_index: checkpoint.applied_index(),
                result: Err(RaftstoreError::Internal(
                    "the checkpoint writer has stopped".into(),
                )),
            });
        }
    }

    /// Checkpoints finished since the last call, in the order they were
    /// queued.
    pub(crate) fn finished(&mut self) -> Vec<CheckpointDone> {
        // Refused ones were queued after every one the thread took.
        let mut finished: Vec<CheckpointDone> = self.done.try_iter().collect();
        finished.append(&mut self.refused);
        finished
    }
}

/// Lowers the calling thread's priority to [`BACKGROUND_NICE`]. Failing to
/// is not fatal: checkpoints then compete with the foreground as equals.
fn yield_to_foreground() {
    // SAFETY: gettid and setpriority take and return plain integers and
    // read or write no memory of this process; the id names this thread
    // alone, so only its own priority changes.
    let rc = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, BACKGROUND_NICE)
    };
    if rc != 0 {
        tracing::warn!(
            err = %std::io::Error::last_os_error(),
            "could not lower the checkpoint writer's priority"
        );
    }
}
