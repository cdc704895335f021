//! Prometheus metrics of the store's runtime, registered in the process's
//! default registry (the node's status endpoint serves them): WAL group
//! commits, shard loop turns, checkpoint writes, and reads by how they were
//! confirmed.
//! Latencies use log-spaced buckets (×2 from 50 µs), sizes ×2 from 512
//! bytes.
//!
//! Only the runtime (`shard`) records these; the clock-free core does not.

use std::sync::LazyLock;

use prometheus::{
    exponential_buckets, register_histogram, register_int_counter_vec, Histogram, IntCounter,
    IntCounterVec,
};

/// Latency buckets: 50 µs × 2^k, up to about 6.5 s.
fn latency_buckets() -> Vec<f64> {
    exponential_buckets(50e-6, 2.0, 18).unwrap_or_default()
}

fn histogram(name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    // Registration fails only on a duplicate name: a programming error
    // caught by the first test that touches the metric.
    register_histogram!(name, help, buckets).expect("metric names are unique")
}

/// One WAL batch: write plus fdatasync.
pub static WAL_PERSIST_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "flotilla_wal_persist_seconds",
        "Time to write and fdatasync one WAL batch",
        latency_buckets(),
    )
});

/// One checkpoint, off the turn: copying its captured pairs, then writing
/// and syncing its file.
pub static CHECKPOINT_WRITE_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "flotilla_checkpoint_write_seconds",
        "Time to copy a region's captured pairs and write its checkpoint file",
        latency_buckets(),
    )
});

/// Payload bytes of one WAL batch.
pub static WAL_BATCH_BYTES: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "flotilla_wal_batch_bytes",
        "Payload bytes in one WAL batch (one group commit)",
        exponential_buckets(512.0, 2.0, 20).unwrap_or_default(),
    )
});

/// One shard loop turn, from its first inbox message to the end of apply.
pub static SHARD_TURN_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "flotilla_shard_turn_seconds",
        "Time of one shard loop turn (Readies, WAL batch, messages, apply)",
        latency_buckets(),
    )
});

/// Inbox messages (requests and Raft messages) a turn took in.
pub static SHARD_INBOX_BATCH: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "flotilla_shard_inbox_batch_messages",
        "Inbox messages taken in by one shard loop turn",
        exponential_buckets(1.0, 2.0, 14).unwrap_or_default(),
    )
});

/// Reads leaders took, by `path`: `lease` (no round of their own) or
/// `read_index` (confirmed by a ReadIndex round).
static READS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "flotilla_reads_total",
        "Linearizable reads taken by region leaders, by how they were confirmed",
        &["path"]
    )
    .expect("metric names are unique")
});

pub static READS_ON_LEASE: LazyLock<IntCounter> =
    LazyLock::new(|| READS.with_label_values(&["lease"]));

pub static READS_BY_READ_INDEX: LazyLock<IntCounter> =
    LazyLock::new(|| READS.with_label_values(&["read_index"]));
