//! The REST API under `/api/v1`: one file per resource, each with its own
//! router; user routes and worker routes carry different tokens. Every
//! operation is described by its `#[utoipa::path]`; the OpenAPI 3.1
//! document is assembled from them and served at `/api/v1/openapi.json`.

pub(crate) mod datasets;
mod jobs;
mod modules;
mod worker;
mod workers;

use axum::middleware::from_fn_with_state;
use axum::routing::get;
use axum::{Json, Router};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;

use crate::AppState;
use crate::error::ApiError;

/// The document's fixed parts; the operations come from the routers.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Quern",
        description = "MapReduce jobs whose map and reduce are WebAssembly components. \
            User operations take the user token, worker-protocol operations the worker \
            token, both as `Authorization: Bearer`. Every error is an `ErrorBody`."
    ),
    modifiers(&BearerTokens),
    tags(
        (name = "jobs", description = "Submit jobs, follow them, download their outputs"),
        (name = "modules", description = "Upload and manage `.wasm` modules"),
        (name = "datasets", description = "Input files"),
        (name = "workers", description = "The cluster's workers"),
        (name = "worker protocol", description = "What workers call: registration (with the cluster's worker token), then leases, heartbeats and completions with the worker's own token"),
    )
)]
struct Document;

struct BearerTokens;

impl utoipa::Modify for BearerTokens {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        // `user`: the user token; `worker`: the cluster's worker token
        // (registration only); `node`: a worker's own token.
        for name in ["user", "worker", "node"] {
            components.add_security_scheme(
                name,
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
    }
}

/// The routers of every operation and the OpenAPI document describing them.
fn routes(state: &AppState) -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let user = OpenApiRouter::new()
        .merge(modules::router())
        .merge(datasets::router())
        .merge(jobs::router())
        .merge(workers::router())
        .route_layer(from_fn_with_state(state.clone(), crate::auth::require_user));
    let join = worker::join_router().route_layer(from_fn_with_state(
        state.clone(),
        crate::auth::require_worker,
    ));
    let worker = worker::router()
        .route_layer(from_fn_with_state(state.clone(), crate::auth::require_node))
        .merge(join);
    OpenApiRouter::with_openapi(<Document as utoipa::OpenApi>::openapi())
        .nest("/api/v1", user)
        .nest("/api/v1/worker", worker)
        .split_for_parts()
}

/// Every route.
pub fn router(state: AppState) -> Router {
    let (api, document) = routes(&state);
    let document = std::sync::Arc::new(document);
    api.route(
        "/api/v1/openapi.json",
        get(move || {
            let document = document.clone();
            async move { Json(document.as_ref().clone()) }
        }),
    )
    .route("/healthz", get(|| async { "ok" }))
    .fallback(|| async { ApiError::NotFound("no such route".into()) })
    .merge(crate::dashboard::router())
    .with_state(state)
}
