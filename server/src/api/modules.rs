//! `/modules`: upload (validated: it compiles and is either a component of
//! the job world or a WASI command for streaming mode), list, get, delete.
//! Stored by sha256, deduplicated.

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use bytes::Bytes;
use protocol::api::ModuleInfo;
use protocol::{Limits, ModuleKind};
use serde::Deserialize;

use crate::error::{ApiError, ApiResult};
use crate::{AppState, now_ms};

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/modules",
            get(list).post(upload).layer(DefaultBodyLimit::disable()),
        )
        .route("/modules/{sha256}", get(show).delete(remove))
}

/// The blob key of a module.
pub fn module_key(sha256: &str) -> String {
    format!("modules/{sha256}.wasm")
}

#[derive(Deserialize)]
struct UploadQuery {
    name: Option<String>,
}

/// Reads a whole (small) body, refusing more than `limit` bytes.
pub(crate) async fn read_limited(body: Body, limit: u64, what: &str) -> ApiResult<Bytes> {
    use futures::StreamExt;
    let mut stream = body.into_data_stream();
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::BadRequest(format!("reading the {what}: {e}")))?;
        if (buf.len() + chunk.len()) as u64 > limit {
            return Err(ApiError::PayloadTooLarge(format!(
                "the {what} is larger than the {limit}-byte limit"
            )));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

async fn upload(
    State(state): State<AppState>,
    Query(query): Query<UploadQuery>,
    body: Body,
) -> ApiResult<(StatusCode, Json<ModuleInfo>)> {
    let bytes = read_limited(body, state.config.max_module_bytes, "module").await?;
    let runtime = state.runtime.clone();
    let checked = bytes.clone();
    let (kind, has_combine) = tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
        let module = runtime
            .load(&checked)
            .map_err(|e| ApiError::BadRequest(format!("invalid module: {e}")))?;
        let kind = module.kind();
        if kind == ModuleKind::Command {
            return Ok((kind, false));
        }
        // Asking the guest whether it combines runs its `init` under tight
        // limits; a guest that needs arguments to init simply says no here.
        let limits = Limits {
            memory_mib: 64,
            timeout_secs: 2,
            log_bytes: 4096,
        };
        let has_combine = runtime
            .instantiate(&module, &runtime::TaskPlan::reduce(), &limits, &[])
            .map(|g| g.has_combine())
            .unwrap_or(false);
        Ok((kind, has_combine))
    })
    .await
    .map_err(ApiError::internal)??;
    let sha256 = runtime::module_id(&bytes);
    if state.store.get_module(&sha256).await?.is_none() {
        state
            .blobs
            .put(&module_key(&sha256), bytes.clone())
            .await
            .map_err(ApiError::internal)?;
    }
    let info = ModuleInfo {
        sha256: sha256.clone(),
        name: query
            .name
            .unwrap_or_else(|| format!("{}.wasm", &sha256[..12])),
        size: bytes.len() as u64,
        created_at: now_ms(),
        has_combine,
        kind,
    };
    let created = state.store.put_module(&info).await?;
    let stored = state.store.get_module(&sha256).await?.unwrap_or(info);
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(stored)))
}

async fn list(State(state): State<AppState>) -> ApiResult<Json<Vec<ModuleInfo>>> {
    Ok(Json(state.store.list_modules().await?))
}

async fn show(
    State(state): State<AppState>,
    Path(sha256): Path<String>,
) -> ApiResult<Json<ModuleInfo>> {
    state
        .store
        .get_module(&sha256)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no module {sha256}")))
}

async fn remove(
    State(state): State<AppState>,
    Path(sha256): Path<String>,
) -> ApiResult<StatusCode> {
    state.store.delete_module(&sha256).await?;
    state
        .blobs
        .delete(&module_key(&sha256))
        .await
        .map_err(ApiError::internal)?;
    Ok(StatusCode::NO_CONTENT)
}
