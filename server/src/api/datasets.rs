//! `/datasets`: input files in the blob store, uploaded and downloaded as
//! streams.

use axum::Json;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use protocol::api::{DatasetFile, ErrorBody};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ApiResult};
use crate::extract::{PathParams, QueryParams};
use crate::{AppState, now_ms};

/// The operations on one file: documented at `/datasets/{path}`, routed
/// at axum's wildcard `/datasets/{*path}` (a path has several segments).
#[derive(utoipa::OpenApi)]
#[openapi(paths(download, upload, remove))]
struct FilePaths;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(<FilePaths as utoipa::OpenApi>::openapi())
        .routes(routes!(list))
        .route(
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

/// Checks a dataset path from a URL (`protocol::dataset::check_path`).
pub(crate) fn check_path(path: &str) -> ApiResult<String> {
    let path = path.trim_start_matches('/');
    protocol::dataset::check_path(path).map_err(ApiError::BadRequest)?;
    Ok(path.to_owned())
}

/// Refuses to change a file an unfinished job reads: its splits were
/// planned from what is there now.
async fn check_unread(state: &AppState, path: &str, change: &str) -> ApiResult<()> {
    let readers = state.store.blob_readers(path).await?;
    if let Some(job) = readers.first() {
        return Err(ApiError::Conflict(format!(
            "cannot {change} dataset file {path}: job {job} reads it; wait for the job to end or cancel it"
        )));
    }
    Ok(())
}

/// Refuses a path that is a directory of other files, or under a file:
/// both cannot exist at once.
async fn check_free(state: &AppState, path: &str) -> ApiResult<()> {
    let inside = state.store.list_blobs(&format!("{path}/")).await?;
    if let Some(file) = inside.first() {
        return Err(ApiError::Conflict(format!(
            "{path} is a directory holding {}; choose another name",
            file.path
        )));
    }
    // One lookup per ancestor (not a listing of everything under it).
    let mut parent = path;
    while let Some((up, _)) = parent.rsplit_once('/') {
        let file = state
            .blobs
            .size(&dataset_key(up))
            .await
            .map_err(ApiError::internal)?;
        if file.is_some() {
            return Err(ApiError::Conflict(format!(
                "{up} is a file, so {path} cannot be under it; choose another name"
            )));
        }
        parent = up;
    }
    Ok(())
}

/// Uploads (or replaces) a dataset file, streamed.
#[utoipa::path(put, path = "/datasets/{path}", tag = "datasets", security(("user" = [])),
    params(("path" = String, Path, description = "The file's path: `/`-separated names")),
    request_body(content = String, description = "The file's bytes", content_type = "application/octet-stream"),
    responses(
        (status = 201, description = "Stored", body = DatasetFile),
        (status = 400, description = "The path is not allowed; the message says why", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 409, description = "A file is in the way, or an unfinished job reads this one", body = ErrorBody),
        (status = 413, body = ErrorBody),
    ))]
async fn upload(
    State(state): State<AppState>,
    PathParams(path): PathParams<String>,
    body: Body,
) -> ApiResult<(StatusCode, Json<DatasetFile>)> {
    let path = check_path(&path)?;
    check_free(&state, &path).await?;
    check_unread(&state, &path, "overwrite").await?;
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

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only files whose path starts with this.
    #[serde(default)]
    prefix: String,
}

/// Dataset files, by path.
#[utoipa::path(get, path = "/datasets", tag = "datasets", security(("user" = [])),
    params(ListQuery),
    responses((status = 200, body = Vec<DatasetFile>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn list(
    State(state): State<AppState>,
    QueryParams(q): QueryParams<ListQuery>,
) -> ApiResult<Json<Vec<DatasetFile>>> {
    // No path holds one, and Postgres refuses a NUL in text.
    if q.prefix.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(
            "prefix contains control characters; no dataset path does".into(),
        ));
    }
    Ok(Json(state.store.list_blobs(&q.prefix).await?))
}

/// A dataset file's bytes, streamed.
#[utoipa::path(get, path = "/datasets/{path}", tag = "datasets", security(("user" = [])),
    params(("path" = String, Path, description = "The file's path")),
    responses(
        (status = 200, description = "The file's bytes", content_type = "application/octet-stream", body = String),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ))]
async fn download(
    State(state): State<AppState>,
    PathParams(path): PathParams<String>,
) -> ApiResult<Response> {
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

/// Deletes a dataset file no unfinished job reads.
#[utoipa::path(delete, path = "/datasets/{path}", tag = "datasets", security(("user" = [])),
    params(("path" = String, Path, description = "The file's path")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "An unfinished job reads it", body = ErrorBody),
    ))]
async fn remove(
    State(state): State<AppState>,
    PathParams(path): PathParams<String>,
) -> ApiResult<StatusCode> {
    let path = check_path(&path)?;
    check_unread(&state, &path, "delete").await?;
    state.store.delete_blob(&path).await?;
    state
        .blobs
        .delete(&dataset_key(&path))
        .await
        .map_err(ApiError::internal)?;
    Ok(StatusCode::NO_CONTENT)
}
