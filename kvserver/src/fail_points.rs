//! Fault injection for tests: named points of the `fail` crate, and their
//! control over the status endpoint (`PUT /fail/NAME` with the actions as
//! the body, `DELETE /fail/NAME`, as TiKV's status server offers).
//!
//! Everything here is compiled only with the `failpoints` feature, which
//! the test binary turns on and the `flotilla` binary does not: a release
//! node serves no `/fail` route and its points cost nothing.
//!
//! - [`hold`]: an asynchronous pause. A task reaching it waits while the
//!   point is configured with `return`, without blocking its runtime
//!   thread (the `fail` crate's own `pause` would block a tokio worker).

#[cfg(feature = "failpoints")]
use axum::extract::Path;
#[cfg(feature = "failpoints")]
use axum::http::StatusCode;

/// How often a held task looks whether its point was turned off.
#[cfg(feature = "failpoints")]
const HOLD_POLL: std::time::Duration = std::time::Duration::from_millis(10);

/// Waits while fail point `name` is configured with `return`; returns at
/// once when it is off (always, without the `failpoints` feature).
pub async fn hold(name: &str) {
    #[cfg(feature = "failpoints")]
    {
        let mut held = false;
        while fail::eval(name, |_| ()).is_some() {
            if !held {
                tracing::info!(fail_point = name, "held at fail point");
                held = true;
            }
            tokio::time::sleep(HOLD_POLL).await;
        }
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}

/// The `/fail/{name}` routes.
#[cfg(feature = "failpoints")]
pub fn routes<S: Clone + Send + Sync + 'static>() -> axum::Router<S> {
    axum::Router::new().route("/fail/{name}", axum::routing::put(configure).delete(remove))
}

#[cfg(feature = "failpoints")]
async fn configure(Path(name): Path<String>, actions: String) -> (StatusCode, String) {
    match fail::cfg(name.as_str(), actions.trim()) {
        Ok(()) => {
            tracing::info!(fail_point = name, actions, "fail point configured");
            (StatusCode::OK, String::new())
        }
        Err(why) => (
            StatusCode::BAD_REQUEST,
            format!("fail point {name}: bad actions {actions:?}: {why}"),
        ),
    }
}

#[cfg(feature = "failpoints")]
async fn remove(Path(name): Path<String>) -> StatusCode {
    fail::remove(name.as_str());
    tracing::info!(fail_point = name, "fail point removed");
    StatusCode::OK
}
