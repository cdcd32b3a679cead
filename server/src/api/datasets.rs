//! `/datasets`: input files in the blob store, uploaded and downloaded as
//! streams.

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use protocol::api::DatasetFile;
use serde::Deserialize;

use crate::error::{ApiError, ApiResult};
use crate::{AppState, now_ms};

pub fn router() -> Router<AppState> {
    Router::new().route("/datasets", get(list)).route(
        "/datasets/{*path}",
        get(download)
            .put(upload)
            .delete(remove)
            .layer(DefaultBodyLimit::disable()),
    )
}

/// The blob key of a dataset file.
pub fn dataset_key(path: &str) -> String {
    format!("datasets/{path}")
}

/// Checks a user-supplied dataset path.
fn check_path(path: &str) -> ApiResult<String> {
    let path = path.trim_start_matches('/');
    let ok = !path.is_empty()
        && path.len() <= 1024
        && path.split('/').all(|seg| {
            !seg.is_empty() && seg != "." && seg != ".." && !seg.contains(['*', '?', '\\'])
        });
    if !ok {
        return Err(ApiError::BadRequest(format!(
            "invalid dataset path {path:?}: use non-empty segments separated by '/', without '..', '*' or '?'"
        )));
    }
    Ok(path.to_owned())
}

async fn upload(
    State(state): State<AppState>,
    Path(path): Path<String>,
    body: Body,
) -> ApiResult<(StatusCode, Json<DatasetFile>)> {
    let path = check_path(&path)?;
    let limit = state.config.max_dataset_bytes;
    let size = state
        .blobs
        .put_stream(&dataset_key(&path), body.into_data_stream(), limit)
        .await
        .map_err(ApiError::internal)?
        .map_err(|limit| {
            ApiError::PayloadTooLarge(format!(
                "dataset file is larger than the {limit}-byte limit"
            ))
        })?;
    let file = DatasetFile {
        path,
        size,
        created_at: now_ms(),
    };
    state.store.put_blob(&file).await?;
    Ok((StatusCode::CREATED, Json(file)))
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    prefix: String,
}

async fn list(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Vec<DatasetFile>>> {
    Ok(Json(state.store.list_blobs(&q.prefix).await?))
}

async fn download(State(state): State<AppState>, Path(path): Path<String>) -> ApiResult<Response> {
    let path = check_path(&path)?;
    stream_blob(&state, &dataset_key(&path), &path).await
}

/// Streams a whole blob as an octet-stream response.
pub(crate) async fn stream_blob(state: &AppState, key: &str, name: &str) -> ApiResult<Response> {
    let Some((size, stream)) = state
        .blobs
        .get_range(key, 0, None)
        .await
        .map_err(ApiError::internal)?
    else {
        return Err(ApiError::NotFound(format!("no file {name}")));
    };
    Response::builder()
        .header("content-type", "application/octet-stream")
        .header("content-length", size)
        .body(Body::from_stream(stream))
        .map_err(ApiError::internal)
}

async fn remove(State(state): State<AppState>, Path(path): Path<String>) -> ApiResult<StatusCode> {
    let path = check_path(&path)?;
    state.store.delete_blob(&path).await?;
    state
        .blobs
        .delete(&dataset_key(&path))
        .await
        .map_err(ApiError::internal)?;
    Ok(StatusCode::NO_CONTENT)
}
