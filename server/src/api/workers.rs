//! `/workers`: the cluster's workers as users see them, and revoking one.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use protocol::WorkerId;
use protocol::api::{ErrorBody, WorkerInfo};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ApiResult};
use crate::extract::PathParams;
use crate::{AppState, now_ms};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(revoke))
}

/// Registered workers, alive and dead.
#[utoipa::path(get, path = "/workers", tag = "workers", security(("user" = [])),
    responses((status = 200, body = Vec<WorkerInfo>), (status = 401, body = ErrorBody)))]
async fn list(State(state): State<AppState>) -> ApiResult<Json<Vec<WorkerInfo>>> {
    Ok(Json(state.store.list_workers().await?))
}

/// Revokes a worker: its token stops working at once and it is declared
/// dead, so its tasks run again elsewhere. A worker process that should
/// come back registers again with the cluster's worker token.
#[utoipa::path(delete, path = "/workers/{id}", tag = "workers", security(("user" = [])),
    params(("id" = String, Path, description = "The worker's id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ))]
async fn revoke(
    State(state): State<AppState>,
    PathParams(id): PathParams<String>,
) -> ApiResult<StatusCode> {
    let worker = WorkerId(id);
    state
        .store
        .revoke_worker(&worker, now_ms())
        .await
        .map_err(|e| match e {
            crate::store::StoreError::NotFound => ApiError::NotFound(format!("no worker {worker}")),
            other => other.into(),
        })?;
    tracing::info!(worker_id = %worker, "worker revoked");
    state.changed.notify_waiters();
    Ok(StatusCode::NO_CONTENT)
}
