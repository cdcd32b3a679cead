//! The REST API under `/api/v1`: one file per resource, each with its own
//! router; user routes and worker routes carry different tokens.

pub(crate) mod datasets;
mod jobs;
mod modules;
mod worker;
mod workers;

use axum::Router;
use axum::middleware::from_fn_with_state;
use axum::routing::get;

use crate::AppState;

/// Every route.
pub fn router(state: AppState) -> Router {
    let user = Router::new()
        .merge(modules::router())
        .merge(datasets::router())
        .merge(jobs::router())
        .merge(workers::router())
        .route_layer(from_fn_with_state(state.clone(), crate::auth::require_user));
    let worker = worker::router().route_layer(from_fn_with_state(
        state.clone(),
        crate::auth::require_worker,
    ));
    Router::new()
        .nest("/api/v1", user)
        .nest("/api/v1/worker", worker)
        .route("/healthz", get(|| async { "ok" }))
        .merge(crate::dashboard::router())
        .with_state(state)
}
