//! `/api/v1/worker/*`: the worker protocol. Registration, long-polled
//! leases, heartbeats, completions (applied only while the attempt holds
//! its lease), staged reduce outputs, module and input downloads.

use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use protocol::api::ErrorBody;
use protocol::worker_api::{
    AttemptResult, CompleteRequest, CompleteResponse, HeartbeatRequest, HeartbeatResponse, Lease,
    LeaseRequest, RegisterRequest, RegisterResponse, TaskWork,
};
use protocol::{AttemptId, TaskKind, WorkerId};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use crate::auth::Node;
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, PathParams};
use crate::{AppState, now_ms};

/// Input reads: documented at `/datasets/{path}`, routed at axum's
/// wildcard `/datasets/{*path}`.
#[derive(utoipa::OpenApi)]
#[openapi(paths(dataset))]
struct DatasetPath;

/// What the cluster's worker token opens: registration.
pub fn join_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(register))
}

/// What a worker's own token opens: everything else.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(<DatasetPath as utoipa::OpenApi>::openapi())
        .routes(routes!(lease))
        .routes(routes!(heartbeat))
        .routes(routes!(complete))
        .routes(routes!(upload_output).layer(DefaultBodyLimit::disable()))
        .routes(routes!(module))
        .route("/datasets/{*path}", axum::routing::get(dataset))
}

/// Registers a worker: its map-output server's address and its slots. The
/// answer carries the worker's id and its own token, which every other
/// worker call must use.
#[utoipa::path(post, path = "/register", tag = "worker protocol", security(("worker" = [])),
    request_body = RegisterRequest,
    responses(
        (status = 200, body = RegisterResponse),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 415, body = ErrorBody),
    ))]
async fn register(
    State(state): State<AppState>,
    JsonBody(req): JsonBody<RegisterRequest>,
) -> ApiResult<Json<RegisterResponse>> {
    if req.slots == 0 || req.slots > 1024 {
        return Err(ApiError::BadRequest(
            "slots must be between 1 and 1024".into(),
        ));
    }
    if !(req.address.starts_with("http://") || req.address.starts_with("https://"))
        || req.address.len() > 2048
        || req
            .address
            .chars()
            .any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(ApiError::BadRequest(
            "address must be an http(s) URL".into(),
        ));
    }
    let id = WorkerId(format!("w-{}", &crate::auth::new_token()[4..20]));
    let now = now_ms();
    state
        .store
        .register_worker(&id, &req.address, req.slots, now)
        .await?;
    let token = crate::auth::new_token();
    state
        .store
        .add_token(
            &crate::auth::hash_token(&token),
            crate::auth::NODE,
            &id.0,
            now,
        )
        .await?;
    tracing::info!(worker_id = %id, address = %req.address, slots = req.slots, "worker registered");
    state.changed.notify_waiters();
    Ok(Json(RegisterResponse {
        worker_id: id,
        heartbeat_ms: state.config.heartbeat.as_millis() as u64,
        token,
    }))
}

/// Long poll: answers with a lease as soon as one is available, or 204
/// after `wait_ms`. Waiters wake on job changes in this process and poll
/// the database every 250 ms for changes made by other coordinators.
#[utoipa::path(post, path = "/lease", tag = "worker protocol", security(("node" = [])),
    request_body = LeaseRequest,
    responses(
        (status = 200, description = "A task attempt to run", body = Lease),
        (status = 204, description = "Nothing to run within the wait"),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "The token is another worker's", body = ErrorBody),
        (status = 409, description = "The worker is not registered, or was declared dead", body = ErrorBody),
        (status = 415, body = ErrorBody),
    ))]
async fn lease(
    State(state): State<AppState>,
    node: Node,
    JsonBody(req): JsonBody<LeaseRequest>,
) -> ApiResult<Response> {
    node.check(&req.worker_id)?;
    let wait = Duration::from_millis(req.wait_ms).min(state.config.lease_wait);
    let deadline = Instant::now() + wait;
    loop {
        // Registered before looking, so a change between the look and the
        // wait is not missed.
        let changed = state.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        if let Some(mut lease) = state
            .store
            .lease(&req.worker_id, now_ms(), state.config.liveness())
            .await?
        {
            // The job's secret stays here; the worker gets tokens scoped
            // to its own map-output server and to each source's.
            let secret = std::mem::take(&mut lease.job_token);
            lease.job_token = crate::auth::shuffle_token(&secret, &req.worker_id);
            if let TaskWork::Reduce { sources, .. } = &mut lease.work {
                for source in sources {
                    source.token = crate::auth::shuffle_token(&secret, &source.worker);
                }
            }
            tracing::debug!(worker_id = %req.worker_id, attempt = %lease.attempt, "leased");
            return Ok(Json(lease).into_response());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        let _ = tokio::time::timeout(left.min(Duration::from_millis(250)), changed).await;
    }
}

/// Renews the leases of the attempts a worker runs; answers which to drop
/// and which jobs' map outputs it may delete.
#[utoipa::path(post, path = "/heartbeat", tag = "worker protocol", security(("node" = [])),
    request_body = HeartbeatRequest,
    responses(
        (status = 200, body = HeartbeatResponse),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "The token is another worker's", body = ErrorBody),
        (status = 415, body = ErrorBody),
    ))]
async fn heartbeat(
    State(state): State<AppState>,
    node: Node,
    JsonBody(req): JsonBody<HeartbeatRequest>,
) -> ApiResult<Json<HeartbeatResponse>> {
    node.check(&req.worker_id)?;
    let now = now_ms();
    let Some(drop) = state
        .store
        .heartbeat(&req.worker_id, &req.running, now, state.config.liveness())
        .await?
    else {
        return Ok(Json(HeartbeatResponse {
            reregister: true,
            ..HeartbeatResponse::default()
        }));
    };
    let release = state.store.finished_jobs(&req.holding).await?;
    Ok(Json(HeartbeatResponse {
        drop,
        release,
        reregister: false,
    }))
}

/// Reports how an attempt ended; applied only while it holds its lease.
#[utoipa::path(post, path = "/attempts/{attempt}/complete", tag = "worker protocol", security(("node" = [])),
    params(("attempt" = i64, Path, description = "The attempt")),
    request_body = CompleteRequest,
    responses(
        (status = 200, description = "`accepted`: whether the report was applied", body = CompleteResponse),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "The token is another worker's", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The report cannot be right (an index that describes no file, a reduce with nothing staged)", body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody),
    ))]
async fn complete(
    State(state): State<AppState>,
    node: Node,
    PathParams(attempt): PathParams<String>,
    JsonBody(req): JsonBody<CompleteRequest>,
) -> ApiResult<Json<CompleteResponse>> {
    node.check(&req.worker_id)?;
    let attempt: AttemptId = attempt.parse().map_err(ApiError::NotFound)?;
    if req.counters.0.len() > protocol::counters::MAX_REPORTED {
        return Err(ApiError::BadRequest(format!(
            "a report may carry at most {} counters",
            protocol::counters::MAX_REPORTED
        )));
    }
    if matches!(req.result, AttemptResult::Reduce { .. }) {
        // A reduce succeeds only with its output staged: a completion
        // without it would commit a partition nobody can download.
        let target = state
            .store
            .attempt_target(attempt)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no attempt {attempt}")))?;
        let key = crate::store::staged_output_path(target.job, attempt, target.index);
        if target.kind == TaskKind::Reduce
            && target.holds
            && state
                .blobs
                .size(&key)
                .await
                .map_err(ApiError::internal)?
                .is_none()
        {
            return Err(ApiError::Conflict(format!(
                "attempt {attempt} reports success but staged no output; PUT it to \
                 /api/v1/worker/attempts/{attempt}/output first"
            )));
        }
    }
    let decision = state.store.complete(attempt, &req, now_ms()).await?;
    for key in decision.discard() {
        discard_staged(&state, key).await;
    }
    tracing::debug!(attempt = %attempt, accepted = decision.accepted(), "completion");
    state.changed.notify_waiters();
    Ok(Json(CompleteResponse {
        accepted: decision.accepted(),
    }))
}

/// Deletes a staged output that lost (or failed); a failure only costs
/// space, so it is logged, not reported.
async fn discard_staged(state: &AppState, key: &str) {
    if let Err(err) = state.blobs.delete(key).await {
        tracing::warn!(key, error = %format!("{err:#}"), "deleting a discarded staged output failed");
    }
}

/// A reduce attempt stages its output here before reporting completion.
/// Only an attempt holding its lease (the task's attempt or its backup)
/// may stage, at most the job's `limits.output_bytes`. An attempt that
/// lost its lease while its output streamed in has it deleted again.
#[utoipa::path(put, path = "/attempts/{attempt}/output", tag = "worker protocol", security(("node" = [])),
    params(("attempt" = i64, Path, description = "The reduce attempt")),
    request_body(content = String, description = "The reduce output", content_type = "application/octet-stream"),
    responses(
        (status = 204, description = "Staged"),
        (status = 400, description = "Not a reduce attempt", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "The token is another worker's", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The attempt no longer holds its lease", body = ErrorBody),
        (status = 413, description = "Larger than the job's `limits.output_bytes`", body = ErrorBody),
    ))]
async fn upload_output(
    State(state): State<AppState>,
    node: Node,
    PathParams(attempt): PathParams<String>,
    body: Body,
) -> ApiResult<StatusCode> {
    let attempt: AttemptId = attempt.parse().map_err(ApiError::NotFound)?;
    let target = state
        .store
        .attempt_target(attempt)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no attempt {attempt}")))?;
    node.check(&target.worker)?;
    if target.kind != TaskKind::Reduce {
        return Err(ApiError::BadRequest(
            "only reduce attempts have outputs to stage".into(),
        ));
    }
    let lost = || ApiError::Conflict(format!("attempt {attempt} no longer holds its lease"));
    if !target.holds {
        return Err(lost());
    }
    let key = crate::store::staged_output_path(target.job, attempt, target.index);
    let stored = state
        .blobs
        .put_stream(&key, body.into_data_stream(), target.output_bytes)
        .await
        .map_err(ApiError::internal)?;
    if stored.is_err() {
        return Err(ApiError::PayloadTooLarge(format!(
            "the output is larger than the job's limit of {} bytes (limits.output_bytes)",
            target.output_bytes
        )));
    }
    // The winner's completion deletes its rival's staged output; one that
    // arrives after that is deleted here.
    let still = state.store.attempt_target(attempt).await?;
    if !still.is_some_and(|t| t.holds) {
        discard_staged(&state, &key).await;
        return Err(lost());
    }
    Ok(StatusCode::NO_CONTENT)
}

/// A module's `.wasm` bytes.
#[utoipa::path(get, path = "/modules/{sha256}", tag = "worker protocol", security(("node" = [])),
    params(("sha256" = String, Path, description = "The module's sha256")),
    responses(
        (status = 200, content_type = "application/wasm", body = String),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ))]
async fn module(
    State(state): State<AppState>,
    PathParams(sha256): PathParams<String>,
) -> ApiResult<Response> {
    let sha256 = super::modules::check_sha256(&sha256)?;
    let bytes = state
        .blobs
        .get(&super::modules::module_key(sha256))
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::NotFound(format!("no module {sha256}")))?;
    Ok(([("content-type", "application/wasm")], bytes).into_response())
}

/// Input bytes for map tasks, with `Range: bytes=A-` or `bytes=A-B`.
#[utoipa::path(get, path = "/datasets/{path}", tag = "worker protocol", security(("node" = [])),
    params(
        ("path" = String, Path, description = "The dataset file's path"),
        ("range" = Option<String>, Header, description = "One byte range"),
    ),
    responses(
        (status = 200, content_type = "application/octet-stream", body = String),
        (status = 206, content_type = "application/octet-stream", body = String),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 416, description = "The range is not one the file can satisfy"),
    ))]
async fn dataset(
    State(state): State<AppState>,
    PathParams(path): PathParams<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let path = super::datasets::check_path(&path)?;
    let key = super::datasets::dataset_key(&path);
    let Some(size) = state.blobs.size(&key).await.map_err(ApiError::internal)? else {
        return Err(ApiError::NotFound(format!("no dataset file {path}")));
    };
    let range = match headers.get("range") {
        None => None,
        Some(value) => match value
            .to_str()
            .ok()
            .map(|v| protocol::range::byte_range(v, size))
        {
            Some(Ok(range)) => Some(range),
            _ => {
                return Response::builder()
                    .status(StatusCode::RANGE_NOT_SATISFIABLE)
                    .header("content-range", format!("bytes */{size}"))
                    .body(Body::empty())
                    .map_err(ApiError::internal);
            }
        },
    };
    let (start, end) = range.clone().map_or((0, size), |r| (r.start, r.end));
    let body = if start == end {
        Body::empty()
    } else {
        let (_, stream) = state
            .blobs
            .get_range(&key, start, Some(end))
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::NotFound(format!("no dataset file {path}")))?;
        Body::from_stream(stream)
    };
    let mut response = Response::builder()
        .header("content-type", "application/octet-stream")
        .header("content-length", end - start)
        .header("accept-ranges", "bytes");
    response = match range {
        Some(_) => response
            .status(StatusCode::PARTIAL_CONTENT)
            .header("content-range", format!("bytes {start}-{}/{size}", end - 1)),
        None => response.status(StatusCode::OK),
    };
    response.body(body).map_err(ApiError::internal)
}
