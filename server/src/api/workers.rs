//! `/workers`: the cluster's workers as users see them.

use axum::Json;
use axum::extract::State;
use protocol::api::{ErrorBody, WorkerInfo};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::ApiResult;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}

/// Registered workers, alive and dead.
#[utoipa::path(get, path = "/workers", tag = "workers", security(("user" = [])),
    responses((status = 200, body = Vec<WorkerInfo>), (status = 401, body = ErrorBody)))]
async fn list(State(state): State<AppState>) -> ApiResult<Json<Vec<WorkerInfo>>> {
    Ok(Json(state.store.list_workers().await?))
}
