//! [`CheckpointWriter`]: one thread per shard that finishes the shard's
//! checkpoints, one at a time and in the order they were queued (a split
//! relies on it: the new region's checkpoint is durable before its
//! parent's): it copies each region's captured pairs and writes its file
//! (see `checkpoint`), or writes a received snapshot as the region's file,
//! off the shard's loop. Between checkpoints it takes
//! the leaders' size checks (see `size_check`), which walk a whole region
//! too, and cleans up after replicas the shard destroyed (see `remains`).
//!
//! The thread runs at a lower priority than the shard and gRPC threads
//! ([`BACKGROUND_NICE`]): a checkpoint copies its whole region, and at the
//! foreground's priority that copy would take a core from them for as long
//! as it lasts. A region being copied keeps applying; its writes save what
//! they overwrite for the copy.

use std::path::PathBuf;
use std::time::Instant;

use crate::checkpoint::{CheckpointDone, PendingCheckpoint};
use crate::error::RaftstoreError;
use crate::metrics;
use crate::remains::ReplicaRemains;
use crate::size_check::{SizeCheck, SizeMeasured};

/// The writer thread's niceness: the kernel weighs it about a tenth of a
/// thread at 0, so it gets a core only while the foreground leaves one.
const BACKGROUND_NICE: libc::c_int = 10;

enum Job {
    Checkpoint(Box<PendingCheckpoint>),
    Measure(SizeCheck),
    CleanUp(ReplicaRemains),
}

enum Finished {
    Checkpoint(CheckpointDone),
    Measured(SizeMeasured),
}

pub(crate) struct CheckpointWriter {
    jobs: flume::Sender<Job>,
    finished: flume::Receiver<Finished>,
    /// Outcomes received, not yet asked for: checkpoints (and those refused
    /// because the thread is gone: it never stops while the writer lives,
    /// unless it panicked), in the order they were queued; measurements.
    checkpoints: Vec<CheckpointDone>,
    measured: Vec<SizeMeasured>,
    /// Where the thread writes (and cleans up, when it is gone).
    dir: PathBuf,
}

impl CheckpointWriter {
    /// Starts shard `shard_index`'s writer, writing into `dir`. The thread
    /// ends when the writer is dropped.
    pub(crate) fn start(shard_index: usize, dir: PathBuf) -> Result<Self, RaftstoreError> {
        let (jobs, queued) = flume::unbounded::<Job>();
        let (finish, finished) = flume::unbounded();
        let thread_dir = dir.clone();
        std::thread::Builder::new()
            .name(format!("checkpoint-{shard_index}"))
            .spawn(move || {
                let dir = thread_dir;
                yield_to_foreground();
                for job in queued.iter() {
                    let outcome = match job {
                        Job::Checkpoint(checkpoint) => {
                            let checkpoint = *checkpoint;
                            let started = Instant::now();
                            let done = checkpoint.write(&dir);
                            metrics::CHECKPOINT_WRITE_SECONDS
                                .observe(started.elapsed().as_secs_f64());
                            Finished::Checkpoint(done)
                        }
                        Job::Measure(check) => Finished::Measured(check.measure()),
                        Job::CleanUp(remains) => {
                            remains.clean_up(&dir);
                            continue;
                        }
                    };
                    if finish.send(outcome).is_err() {
                        break; // the shard is gone
                    }
                }
            })
            .map_err(|e| {
                RaftstoreError::Internal(format!("cannot start the checkpoint writer: {e}"))
            })?;
        Ok(CheckpointWriter {
            jobs,
            finished,
            checkpoints: Vec::new(),
            measured: Vec::new(),
            dir,
        })
    }

    /// Queues `checkpoint`; its outcome comes back through `finished`.
    pub(crate) fn write(&mut self, checkpoint: PendingCheckpoint) {
        self.receive();
        if let Err(flume::SendError(Job::Checkpoint(checkpoint))) =
            self.jobs.send(Job::Checkpoint(Box::new(checkpoint)))
        {
            tracing::error!(
                region = checkpoint.region_id(),
                "the checkpoint writer has stopped; checkpoint not written"
            );
            self.checkpoints.push(CheckpointDone {
                region_id: checkpoint.region_id(),
                applied_index: checkpoint.applied_index(),
                result: Err(RaftstoreError::Internal(
                    "the checkpoint writer has stopped".into(),
                )),
            });
        }
    }

    /// Queues a size check; its measurement comes back through `measured`.
    /// With the thread gone it is measured here, in the caller's turn.
    pub(crate) fn measure(&mut self, check: SizeCheck) {
        if let Err(flume::SendError(Job::Measure(check))) = self.jobs.send(Job::Measure(check)) {
            self.measured.push(check.measure());
        }
    }

    /// Queues what is left of a destroyed replica to clean up after the
    /// checkpoints queued before; nothing comes back. With the thread gone
    /// it is cleaned up here, in the caller's turn.
    pub(crate) fn clean_up(&mut self, remains: ReplicaRemains) {
        if let Err(flume::SendError(Job::CleanUp(remains))) = self.jobs.send(Job::CleanUp(remains))
        {
            remains.clean_up(&self.dir);
        }
    }

    /// Checkpoints finished since the last call, in the order they were
    /// queued.
    pub(crate) fn finished(&mut self) -> Vec<CheckpointDone> {
        self.receive();
        std::mem::take(&mut self.checkpoints)
    }

    /// Size checks measured since the last call.
    pub(crate) fn measured(&mut self) -> Vec<SizeMeasured> {
        self.receive();
        std::mem::take(&mut self.measured)
    }

    /// Sorts the thread's outcomes so far into their lists. Called before
    /// a refusal is recorded, so that refusals follow every outcome of a
    /// job queued before them.
    fn receive(&mut self) {
        for outcome in self.finished.try_iter() {
            match outcome {
                Finished::Checkpoint(done) => self.checkpoints.push(done),
                Finished::Measured(measured) => self.measured.push(measured),
            }
        }
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
