//! `/api/v1/worker/*`: the worker protocol. Registration, long-polled
//! leases, heartbeats, completions (applied only while the attempt holds
//! its lease), staged reduce outputs, module and input downloads.

use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use protocol::worker_api::{
    CompleteRequest, CompleteResponse, HeartbeatRequest, HeartbeatResponse, LeaseRequest,
    RegisterRequest, RegisterResponse,
};
use protocol::{AttemptId, TaskKind, WorkerId};

use crate::error::{ApiError, ApiResult};
use crate::store::Completion;
use crate::{AppState, now_ms};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/register", post(register))
        .route("/lease", post(lease))
        .route("/heartbeat", post(heartbeat))
        .route("/attempts/{attempt}/complete", post(complete))
        .route(
            "/attempts/{attempt}/output",
            put(upload_output).layer(DefaultBodyLimit::disable()),
        )
        .route("/modules/{sha256}", get(module))
        .route("/datasets/{*path}", get(dataset))
}

async fn register(
    State(state): State<AppState>,
    Json(req): Json<RegisterRequest>,
) -> ApiResult<Json<RegisterResponse>> {
    if req.slots == 0 || req.slots > 1024 {
        return Err(ApiError::BadRequest(
            "slots must be between 1 and 1024".into(),
        ));
    }
    if !(req.address.starts_with("http://") || req.address.starts_with("https://")) {
        return Err(ApiError::BadRequest(
            "address must be an http(s) URL".into(),
        ));
    }
    let id = WorkerId(format!("w-{}", &crate::auth::new_token()[4..20]));
    state
        .store
        .register_worker(&id, &req.address, req.slots, now_ms())
        .await?;
    tracing::info!(worker_id = %id, address = %req.address, slots = req.slots, "worker registered");
    state.changed.notify_waiters();
    Ok(Json(RegisterResponse {
        worker_id: id,
        heartbeat_ms: state.config.heartbeat.as_millis() as u64,
    }))
}

/// Long poll: answers with a lease as soon as one is available, or 204
/// after `wait_ms`. Waiters wake on job changes in this process and poll
/// the database every 250 ms for changes made by other coordinators.
async fn lease(
    State(state): State<AppState>,
    Json(req): Json<LeaseRequest>,
) -> ApiResult<Response> {
    let wait = Duration::from_millis(req.wait_ms).min(state.config.lease_wait);
    let deadline = Instant::now() + wait;
    loop {
        // Registered before looking, so a change between the look and the
        // wait is not missed.
        let changed = state.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        if let Some(lease) = state
            .store
            .lease(&req.worker_id, now_ms(), state.config.liveness())
            .await?
        {
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

async fn heartbeat(
    State(state): State<AppState>,
    Json(req): Json<HeartbeatRequest>,
) -> ApiResult<Json<HeartbeatResponse>> {
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

async fn complete(
    State(state): State<AppState>,
    Path(attempt): Path<String>,
    Json(req): Json<CompleteRequest>,
) -> ApiResult<Json<CompleteResponse>> {
    let attempt: AttemptId = attempt.parse().map_err(ApiError::NotFound)?;
    let decision = state.store.complete(attempt, &req, now_ms()).await?;
    let accepted = matches!(decision, Completion::Accepted { .. });
    tracing::debug!(attempt = %attempt, accepted, "completion");
    state.changed.notify_waiters();
    Ok(Json(CompleteResponse { accepted }))
}

/// A reduce attempt stages its output here before reporting completion.
/// Only the attempt holding the lease may stage.
async fn upload_output(
    State(state): State<AppState>,
    Path(attempt): Path<String>,
    body: Body,
) -> ApiResult<StatusCode> {
    let attempt: AttemptId = attempt.parse().map_err(ApiError::NotFound)?;
    let (job, kind, idx, holds) = state
        .store
        .attempt_target(attempt)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no attempt {attempt}")))?;
    if kind != TaskKind::Reduce {
        return Err(ApiError::BadRequest(
            "only reduce attempts have outputs to stage".into(),
        ));
    }
    if !holds {
        return Err(ApiError::Conflict(format!(
            "attempt {attempt} no longer holds its lease"
        )));
    }
    let key = crate::store::staged_output_path(job, attempt, idx);
    state
        .blobs
        .put_stream(&key, body.into_data_stream(), u64::MAX)
        .await
        .map_err(ApiError::internal)?
        .map_err(|_| ApiError::PayloadTooLarge("output too large".into()))?;
    Ok(StatusCode::NO_CONTENT)
}

async fn module(State(state): State<AppState>, Path(sha256): Path<String>) -> ApiResult<Response> {
    let bytes = state
        .blobs
        .get(&super::modules::module_key(&sha256))
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::NotFound(format!("no module {sha256}")))?;
    Ok(([("content-type", "application/wasm")], bytes).into_response())
}

/// Input bytes for map tasks, with `Range: bytes=A-` or `bytes=A-B`.
async fn dataset(
    State(state): State<AppState>,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let key = super::datasets::dataset_key(path.trim_start_matches('/'));
    let range = headers
        .get("range")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.split_once('-'))
        .map(|(a, b)| (a.parse::<u64>().ok(), b.parse::<u64>().ok()));
    let (start, end) = match range {
        Some((Some(a), b)) => (a, b.map(|b| b + 1)),
        Some(_) => return Err(ApiError::BadRequest("unsupported Range".into())),
        None => (0, None),
    };
    let Some(size) = state.blobs.size(&key).await.map_err(ApiError::internal)? else {
        return Err(ApiError::NotFound(format!("no dataset file {path}")));
    };
    if start >= size {
        return Response::builder()
            .status(StatusCode::RANGE_NOT_SATISFIABLE)
            .header("content-range", format!("bytes */{size}"))
            .body(Body::empty())
            .map_err(ApiError::internal);
    }
    let end = end.map_or(size, |e| e.min(size));
    let (_, stream) = state
        .blobs
        .get_range(&key, start, Some(end))
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::NotFound(format!("no dataset file {path}")))?;
    Response::builder()
        .status(if range.is_some() {
            StatusCode::PARTIAL_CONTENT
        } else {
            StatusCode::OK
        })
        .header("content-length", end - start)
        .header(
            "content-range",
            format!("bytes {start}-{}/{size}", end.saturating_sub(1)),
        )
        .body(Body::from_stream(stream))
        .map_err(ApiError::internal)
}
