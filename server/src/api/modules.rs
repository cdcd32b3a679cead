//! `/modules`: upload (validated: it compiles and is either a component of
//! the job world or a WASI command for streaming mode), list, get, delete.
//! Stored by sha256, deduplicated.

use axum::Json;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use bytes::Bytes;
use protocol::api::{ErrorBody, ModuleInfo};
use protocol::{Limits, ModuleKind};
use serde::Deserialize;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use crate::error::{ApiError, ApiResult};
use crate::extract::{PathParams, QueryParams};
use crate::{AppState, now_ms};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, upload).layer(DefaultBodyLimit::disable()))
        .routes(routes!(show, remove))
}

/// The blob key of a module.
pub fn module_key(sha256: &str) -> String {
    format!("modules/{sha256}.wasm")
}

/// A module id from a URL: 64 lowercase hex digits, or no such module.
pub(crate) fn check_sha256(sha256: &str) -> ApiResult<&str> {
    if sha256.len() == 64
        && sha256
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        Ok(sha256)
    } else {
        Err(ApiError::NotFound(format!(
            "no module {sha256:?}: a module id is 64 lowercase hex digits"
        )))
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct UploadQuery {
    /// A name to show for the module (default: from its hash).
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

/// Uploads a module: a WebAssembly component of the `quern:job` world, or a
/// WASI command for streaming mode. It is compiled and checked before it
/// is stored, by sha256; uploading the same bytes again changes nothing.
#[utoipa::path(post, path = "/modules", tag = "modules", security(("user" = [])),
    params(UploadQuery),
    request_body(content = String, description = "The `.wasm` file", content_type = "application/octet-stream"),
    responses(
        (status = 201, description = "Stored", body = ModuleInfo),
        (status = 200, description = "Already stored", body = ModuleInfo),
        (status = 400, description = "Not a usable module; the message says why", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody),
    ))]
async fn upload(
    State(state): State<AppState>,
    QueryParams(query): QueryParams<UploadQuery>,
    body: Body,
) -> ApiResult<(StatusCode, Json<ModuleInfo>)> {
    let bytes = read_limited(body, state.config.max_module_bytes, "module").await?;
    // Checked after the body is read, so that the client's connection
    // stays usable for its next request.
    if query
        .name
        .as_deref()
        .is_some_and(|n| n.chars().any(char::is_control) || n.len() > 255)
    {
        return Err(ApiError::BadRequest(
            "name must be at most 255 bytes, without control characters".into(),
        ));
    }
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
            ..Limits::default()
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

/// Uploaded modules.
#[utoipa::path(get, path = "/modules", tag = "modules", security(("user" = [])),
    responses((status = 200, body = Vec<ModuleInfo>), (status = 401, body = ErrorBody)))]
async fn list(State(state): State<AppState>) -> ApiResult<Json<Vec<ModuleInfo>>> {
    Ok(Json(state.store.list_modules().await?))
}

/// One module.
#[utoipa::path(get, path = "/modules/{sha256}", tag = "modules", security(("user" = [])),
    params(("sha256" = String, Path, description = "The module's sha256, lowercase hex")),
    responses((status = 200, body = ModuleInfo), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn show(
    State(state): State<AppState>,
    PathParams(sha256): PathParams<String>,
) -> ApiResult<Json<ModuleInfo>> {
    check_sha256(&sha256)?;
    state
        .store
        .get_module(&sha256)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no module {sha256}")))
}

/// Deletes a module no unfinished job uses.
#[utoipa::path(delete, path = "/modules/{sha256}", tag = "modules", security(("user" = [])),
    params(("sha256" = String, Path, description = "The module's sha256, lowercase hex")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "An unfinished job uses it", body = ErrorBody),
    ))]
async fn remove(
    State(state): State<AppState>,
    PathParams(sha256): PathParams<String>,
) -> ApiResult<StatusCode> {
    check_sha256(&sha256)?;
    state.store.delete_module(&sha256).await?;
    state
        .blobs
        .delete(&module_key(&sha256))
        .await
        .map_err(ApiError::internal)?;
    Ok(StatusCode::NO_CONTENT)
}
