//! The node's HTTP status endpoint (like TiKV's status port):
//! - `GET /metrics`: every Prometheus metric of the process (text format);
//! - `GET /status`: this node's id and its region replicas as JSON (range,
//!   epoch, peers and learners, role, leader, term, commit and applied
//!   index, the region a frozen merge source merges into);
//! - `GET /placement/stores`, `/placement/regions`, `/placement/operators`:
//!   the placement leader's view as JSON (stores with state, liveness and
//!   counts; regions as their leaders reported them; operators in flight and
//!   whether they could be dispatched). Any other node answers 503 naming
//!   the placement leader it knows.
//!
//! - test builds only (`failpoints` feature): `PUT`/`DELETE /fail/NAME`
//!   turn fault-injection points on and off ([`crate::fail_points`]).
//!
//! Read-only otherwise; it never touches Raft state except through the
//! shards' own status replies.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Json;
use raftstore::StoreRouter;
use serde_json::{json, Value};

use crate::placement_driver::{PlacementDriver, StatusView};

#[derive(Clone)]
struct StatusState {
    node_id: u64,
    router: StoreRouter,
    driver: Arc<PlacementDriver>,
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    node_id: u64,
    router: StoreRouter,
    driver: Arc<PlacementDriver>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/placement/stores", get(placement_stores))
        .route("/placement/regions", get(placement_regions))
        .route("/placement/operators", get(placement_operators));
    #[cfg(feature = "failpoints")]
    let app = app.merge(crate::fail_points::routes());
    let app = app.with_state(StatusState {
        node_id,
        router,
        driver,
    });
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
                "learners": s.learners,
                "role": s.role,
                "leader": s.leader_id,
                "term": s.term,
                "commit_index": s.commit_index,
                "applied_index": s.applied_index,
                "approximate_keys": s.size.keys,
                "approximate_bytes": s.size.bytes,
                "hibernating": s.hibernating,
                "merging_into": s.merging_into,
            })
        })
        .collect();
    Json(json!({ "node_id": state.node_id, "regions": regions }))
}

async fn placement_stores(State(state): State<StatusState>) -> (StatusCode, Json<Value>) {
    placement_view(&state, StatusView::Stores)
}

async fn placement_regions(State(state): State<StatusState>) -> (StatusCode, Json<Value>) {
    placement_view(&state, StatusView::Regions)
}

async fn placement_operators(State(state): State<StatusState>) -> (StatusCode, Json<Value>) {
    placement_view(&state, StatusView::Operators)
}

fn placement_view(state: &StatusState, view: StatusView) -> (StatusCode, Json<Value>) {
    match state.driver.status_json(view) {
        Ok(body) => (StatusCode::OK, Json(body)),
        Err(leader) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "error": "this node is not the placement leader",
                "node_id": state.node_id,
                "placement_leader": leader,
            })),
        ),
    }
}
