//! `/workers`: the cluster's workers as users see them.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use protocol::api::WorkerInfo;

use crate::AppState;
use crate::error::ApiResult;

pub fn router() -> Router<AppState> {
    Router::new().route("/workers", get(list))
}

async fn list(State(state): State<AppState>) -> ApiResult<Json<Vec<WorkerInfo>>> {
    Ok(Json(state.store.list_workers().await?))
}
