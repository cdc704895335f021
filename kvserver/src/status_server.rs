//! The node's HTTP status endpoint (like TiKV's status port):
//! - `GET /metrics`: every Prometheus metric of the process (text format);
//! - `GET /status`: this node's id and its region replicas as JSON (range,
//!   epoch, role, leader, term, commit and applied index).
//!
//! Read-only; it never touches Raft state except through the shards' own
//! status replies.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Json;
use raftstore::StoreRouter;
use serde_json::{json, Value};

#[derive(Clone)]
struct StatusState {
    node_id: u64,
    router: StoreRouter,
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    node_id: u64,
    router: StoreRouter,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .with_state(StatusState { node_id, router });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::render(),
    )
}

async fn status(State(state): State<StatusState>) -> Json<Value> {
    let regions: Vec<Value> = state
        .router
        .status()
        .await
        .into_iter()
        .map(|s| {
            json!({
                "id": s.region.id,
                "start_key": String::from_utf8_lossy(&s.region.start_key),
                "end_key": String::from_utf8_lossy(&s.region.end_key),
                "epoch": { "conf_ver": s.region.epoch.conf_ver, "version": s.region.epoch.version },
                "peers": s.region.peers.iter().map(|p| p.store_id).collect::<Vec<_>>(),
                "role": s.role,
                "leader": s.leader_id,
                "term": s.term,
                "commit_index": s.commit_index,
                "applied_index": s.applied_index,
                "approximate_keys": s.size.keys,
                "approximate_bytes": s.size.bytes,
                "hibernating": s.hibernating,
            })
        })
        .collect();
    Json(json!({ "node_id": state.node_id, "regions": regions }))
}
