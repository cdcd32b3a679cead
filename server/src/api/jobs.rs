//! `/jobs`: submit (validated: 422 naming the field), list, get, cancel,
//! tasks, attempts and their logs, outputs, and a server-sent-events stream
//! of a job's progress.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use protocol::api::{AttemptInfo, AttemptLogs, ErrorBody, JobInfo, OutputFile, TaskInfo};
use protocol::{AttemptId, JobId, JobSpec};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ApiResult};
use crate::extract::{BodyBytes, PathParams, QueryParams};
use crate::store::JobRecord;
use crate::{AppState, now_ms};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, submit))
        .routes(routes!(show))
        .routes(routes!(cancel))
        .routes(routes!(tasks))
        .routes(routes!(attempts))
        .routes(routes!(logs))
        .routes(routes!(outputs))
        .routes(routes!(download))
        .routes(routes!(events))
}

fn parse_job(id: &str) -> ApiResult<JobId> {
    id.parse().map_err(ApiError::NotFound)
}

/// The API view of a job.
pub async fn job_info(state: &AppState, record: JobRecord) -> ApiResult<JobInfo> {
    let counters = state.store.job_counters(record.id).await?;
    let outputs = state
        .store
        .reduce_outputs(record.id)
        .await?
        .into_iter()
        .map(|(p, _)| protocol::part_name(p))
        .collect();
    Ok(JobInfo {
        id: record.id,
        spec: record.spec,
        state: record.state,
        error: record.error,
        map: record.map,
        reduce: record.reduce,
        counters,
        created_at: record.created_at,
        finished_at: record.finished_at,
        outputs,
    })
}

async fn load(state: &AppState, id: &str) -> ApiResult<JobRecord> {
    let id = parse_job(id)?;
    state
        .store
        .get_job(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no job {id}")))
}

/// Submits a job: its inputs are resolved and split, and its tasks
/// created, in one step.
#[utoipa::path(post, path = "/jobs", tag = "jobs", security(("user" = [])),
    request_body = JobSpec,
    responses(
        (status = 201, description = "The job, created", body = JobInfo),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 422, description = "A field of the spec is invalid; `field` names it", body = ErrorBody),
    ))]
async fn submit(
    State(state): State<AppState>,
    BodyBytes(body): BodyBytes,
) -> ApiResult<(StatusCode, Json<JobInfo>)> {
    let spec: JobSpec = serde_json::from_slice(&body).map_err(|e| ApiError::InvalidSpec {
        field: json_field(&e.to_string()),
        message: e.to_string(),
    })?;
    spec.validate()?;
    let Some(module) = state.store.get_module(&spec.module).await? else {
        return Err(ApiError::InvalidSpec {
            field: "module".into(),
            message: format!("no module {} (upload it first)", spec.module),
        });
    };
    spec.mode
        .check(module.kind)
        .map_err(|message| ApiError::InvalidSpec {
            field: "mode".into(),
            message,
        })?;
    let job = crate::scheduler::plan_job(&state, spec).await?;
    let id = state.store.create_job(&job, now_ms()).await?;
    tracing::info!(job_id = %id, maps = job.maps.len(), reducers = job.spec.reducers, "job submitted");
    state.changed.notify_waiters();
    let record = state
        .store
        .get_job(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no job {id}")))?;
    Ok((StatusCode::CREATED, Json(job_info(&state, record).await?)))
}

/// Best guess at the field a serde error is about (`unknown field `x``,
/// `missing field `x``, `invalid type ... at line`), for the 422 body.
fn json_field(message: &str) -> String {
    for marker in ["unknown field `", "missing field `"] {
        if let Some(rest) = message.split(marker).nth(1)
            && let Some(field) = rest.split('`').next()
        {
            return field.to_owned();
        }
    }
    "body".into()
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Most jobs to list, newest first (1 to 1000; default 100).
    limit: Option<i64>,
}

/// Jobs, newest first.
#[utoipa::path(get, path = "/jobs", tag = "jobs", security(("user" = [])),
    params(ListQuery),
    responses(
        (status = 200, body = Vec<JobInfo>),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
    ))]
async fn list(
    State(state): State<AppState>,
    QueryParams(q): QueryParams<ListQuery>,
) -> ApiResult<Json<Vec<JobInfo>>> {
    let records = state
        .store
        .list_jobs(q.limit.unwrap_or(100).clamp(1, 1000))
        .await?;
    let mut jobs = Vec::with_capacity(records.len());
    for record in records {
        jobs.push(job_info(&state, record).await?);
    }
    Ok(Json(jobs))
}

/// One job.
#[utoipa::path(get, path = "/jobs/{id}", tag = "jobs", security(("user" = [])),
    params(("id" = i64, Path, description = "The job")),
    responses((status = 200, body = JobInfo), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn show(
    State(state): State<AppState>,
    PathParams(id): PathParams<String>,
) -> ApiResult<Json<JobInfo>> {
    let record = load(&state, &id).await?;
    Ok(Json(job_info(&state, record).await?))
}

/// Cancels an unfinished job; its running attempts are dropped at their
/// workers' next heartbeat.
#[utoipa::path(post, path = "/jobs/{id}/cancel", tag = "jobs", security(("user" = [])),
    params(("id" = i64, Path, description = "The job")),
    responses(
        (status = 200, description = "The job, cancelled", body = JobInfo),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The job has already finished", body = ErrorBody),
    ))]
async fn cancel(
    State(state): State<AppState>,
    PathParams(id): PathParams<String>,
) -> ApiResult<Json<JobInfo>> {
    let id = parse_job(&id)?;
    state.store.cancel_job(id, now_ms()).await?;
    state.changed.notify_waiters();
    let record = load(&state, &id.to_string()).await?;
    Ok(Json(job_info(&state, record).await?))
}

/// A job's map and reduce tasks.
#[utoipa::path(get, path = "/jobs/{id}/tasks", tag = "jobs", security(("user" = [])),
    params(("id" = i64, Path, description = "The job")),
    responses((status = 200, body = Vec<TaskInfo>), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn tasks(
    State(state): State<AppState>,
    PathParams(id): PathParams<String>,
) -> ApiResult<Json<Vec<TaskInfo>>> {
    let record = load(&state, &id).await?;
    Ok(Json(state.store.list_tasks(record.id).await?))
}

/// Every attempt of a job's tasks, with how it ended.
#[utoipa::path(get, path = "/jobs/{id}/attempts", tag = "jobs", security(("user" = [])),
    params(("id" = i64, Path, description = "The job")),
    responses((status = 200, body = Vec<AttemptInfo>), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn attempts(
    State(state): State<AppState>,
    PathParams(id): PathParams<String>,
) -> ApiResult<Json<Vec<AttemptInfo>>> {
    let record = load(&state, &id).await?;
    Ok(Json(state.store.list_attempts(record.id).await?))
}

/// The guest's captured stdout and stderr of one attempt.
#[utoipa::path(get, path = "/jobs/{id}/attempts/{attempt}/logs", tag = "jobs", security(("user" = [])),
    params(("id" = i64, Path, description = "The job"), ("attempt" = i64, Path, description = "The attempt")),
    responses((status = 200, body = AttemptLogs), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn logs(
    State(state): State<AppState>,
    PathParams((id, attempt)): PathParams<(String, String)>,
) -> ApiResult<Json<AttemptLogs>> {
    let job = parse_job(&id)?;
    let attempt: AttemptId = attempt.parse().map_err(ApiError::NotFound)?;
    state
        .store
        .attempt_logs(job, attempt)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no attempt {attempt} in job {job}")))
}

/// A job's committed outputs, one per finished reduce partition.
#[utoipa::path(get, path = "/jobs/{id}/outputs", tag = "jobs", security(("user" = [])),
    params(("id" = i64, Path, description = "The job")),
    responses((status = 200, body = Vec<OutputFile>), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn outputs(
    State(state): State<AppState>,
    PathParams(id): PathParams<String>,
) -> ApiResult<Json<Vec<OutputFile>>> {
    let record = load(&state, &id).await?;
    let mut files = Vec::new();
    for (partition, key) in state.store.reduce_outputs(record.id).await? {
        let size = state
            .blobs
            .size(&key)
            .await
            .map_err(ApiError::internal)?
            .unwrap_or(0);
        files.push(OutputFile {
            name: protocol::part_name(partition),
            size,
        });
    }
    Ok(Json(files))
}

/// One committed output (`part-r-00003`), streamed.
#[utoipa::path(get, path = "/jobs/{id}/outputs/{name}", tag = "jobs", security(("user" = [])),
    params(("id" = i64, Path, description = "The job"), ("name" = String, Path, description = "The output, `part-r-NNNNN`")),
    responses(
        (status = 200, description = "The output's bytes", content_type = "application/octet-stream", body = String),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ))]
async fn download(
    State(state): State<AppState>,
    PathParams((id, name)): PathParams<(String, String)>,
) -> ApiResult<Response> {
    let record = load(&state, &id).await?;
    let key = state
        .store
        .reduce_outputs(record.id)
        .await?
        .into_iter()
        .find(|(p, _)| protocol::part_name(*p) == name)
        .map(|(_, key)| key)
        .ok_or_else(|| {
            ApiError::NotFound(format!("job {} has no committed output {name}", record.id))
        })?;
    super::datasets::stream_blob(&state, &key, &name).await
}

/// `event: progress` with the job as data whenever it changes, until it
/// finishes (the last event is the finished job).
#[utoipa::path(get, path = "/jobs/{id}/events", tag = "jobs", security(("user" = [])),
    params(("id" = i64, Path, description = "The job")),
    responses(
        (status = 200, description = "Server-sent events: `progress` with the job as JSON data", content_type = "text/event-stream", body = String),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ))]
async fn events(
    State(state): State<AppState>,
    PathParams(id): PathParams<String>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let record = load(&state, &id).await?;
    let id = record.id;
    let stream = async_stream(state, id);
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

fn async_stream(state: AppState, id: JobId) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(
        (state, None::<String>, false),
        move |(state, last, done)| async move {
            if done {
                return None;
            }
            let notify = state.changed.clone();
            loop {
                let changed = notify.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                let info = match state.store.get_job(id).await {
                    Ok(Some(record)) => job_info(&state, record).await.ok(),
                    _ => None,
                };
                let info = info?;
                let text = serde_json::to_string(&info).unwrap_or_default();
                if last.as_deref() != Some(text.as_str()) {
                    let finished = info.state.is_finished();
                    let event = Event::default().event("progress").data(text.clone());
                    return Some((Ok(event), (state, Some(text), finished)));
                }
                let _ = tokio::time::timeout(Duration::from_millis(500), changed).await;
            }
        },
    )
}
