//! Prometheus metrics of the node's network side, registered in the
//! process's default registry next to the store's (`raftstore::metrics`):
//! client request latency by kind, and the size of peer stream batches.
//! Latencies use log-spaced buckets (×2 from 50 µs).

use std::sync::LazyLock;

use prometheus::{
    exponential_buckets, register_histogram, register_histogram_vec, Histogram, HistogramVec,
};

/// Client requests, from arrival at the service to the reply, by `kind`
/// (`write`, `read`, `split` or `tso`) and `outcome` (`ok` or `error`).
pub static REQUEST_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    // Registration fails only on a duplicate name: a programming error.
    register_histogram_vec!(
        "flotilla_request_seconds",
        "Client request latency inside the node, by kind and outcome",
        &["kind", "outcome"],
        exponential_buckets(50e-6, 2.0, 18).unwrap_or_default()
    )
    .expect("metric names are unique")
});

/// Raft messages in one batch sent on a peer stream.
pub static PEER_BATCH_MESSAGES: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "flotilla_peer_batch_messages",
        "Raft messages in one batch on a peer stream",
        exponential_buckets(1.0, 2.0, 12).unwrap_or_default()
    )
    .expect("metric names are unique")
});

/// Records one request's latency.
pub fn observe_request(kind: &str, ok: bool, started: std::time::Instant) {
    let outcome = if ok { "ok" } else { "error" };
    REQUEST_SECONDS
        .with_label_values(&[kind, outcome])
        .observe(started.elapsed().as_secs_f64());
}

/// Every registered metric in the Prometheus text format.
pub fn render() -> String {
    use prometheus::Encoder as _;
    let mut out = Vec::new();
    if let Err(err) = prometheus::TextEncoder::new().encode(&prometheus::gather(), &mut out) {
        tracing::warn!(%err, "metrics did not encode");
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_text_carries_observed_requests_with_log_buckets() {
        observe_request("write", true, std::time::Instant::now());
        PEER_BATCH_MESSAGES.observe(3.0);
        let text = render();
        assert!(
            text.contains("flotilla_request_seconds_count{kind=\"write\",outcome=\"ok\"}"),
            "{text}"
        );
        // ×2 buckets from 50 µs: 50 µs, 100 µs, 200 µs, ...
        assert!(text.contains("le=\"0.00005\""), "{text}");
        assert!(text.contains("le=\"0.0001\""), "{text}");
        assert!(
            text.contains("flotilla_peer_batch_messages_sum 3"),
            "{text}"
        );
    }
}
