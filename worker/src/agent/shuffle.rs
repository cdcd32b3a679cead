//! The map-output server: `GET /shuffle/{job}/{attempt}` with `Range`
//! (206, or 416 for a range outside the file). The file path is derived
//! from the parsed ids, never from the request's text; the caller must
//! present the job's shuffle token, so one job cannot read another's data;
//! past `serve_concurrency` requests it answers 429 with `Retry-After`.

use std::io::SeekFrom;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt;
use protocol::{AttemptId, JobId};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::Semaphore;

use super::Agent;

#[derive(Clone)]
struct ShuffleState {
    agent: Arc<Agent>,
    permits: Arc<Semaphore>,
}

pub(crate) fn router(agent: Arc<Agent>) -> Router {
    let permits = Arc::new(Semaphore::new(agent.config.serve_concurrency.max(1)));
    Router::new()
        .route("/shuffle/{job}/{attempt}", get(serve_map_output))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(ShuffleState { agent, permits })
}

/// The file holding attempt `attempt`'s map output.
pub(crate) fn map_output_path(agent: &Agent, job: JobId, attempt: AttemptId) -> std::path::PathBuf {
    agent.job_dir(job).join(format!("map-{attempt}.out"))
}

/// Compares tokens by their SHA-256 digests, so the time a comparison
/// takes says nothing about how much of a guess was right.
fn same_token(expected: &str, presented: &str) -> bool {
    use sha2::{Digest, Sha256};
    Sha256::digest(expected.as_bytes()) == Sha256::digest(presented.as_bytes())
}

fn status(code: StatusCode, text: &'static str) -> Response {
    (code, text).into_response()
}

async fn serve_map_output(
    State(state): State<ShuffleState>,
    Path((job, attempt)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let (Ok(job), Ok(attempt)) = (job.parse::<JobId>(), attempt.parse::<AttemptId>()) else {
        return status(StatusCode::NOT_FOUND, "no such map output");
    };
    let expected = state.agent.jobs.lock().unwrap().get(&job).cloned();
    let presented = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match (expected, presented) {
        (Some(expected), Some(presented)) if expected.iter().any(|e| same_token(e, presented)) => {}
        (None, _) => return status(StatusCode::NOT_FOUND, "no such map output"),
        _ => return status(StatusCode::UNAUTHORIZED, "wrong or missing job token"),
    }
    let Ok(permit) = state.permits.clone().try_acquire_owned() else {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "1")],
            "busy",
        )
            .into_response();
    };
    let path = map_output_path(&state.agent, job, attempt);
    let Ok(mut file) = tokio::fs::File::open(&path).await else {
        return status(StatusCode::NOT_FOUND, "no such map output");
    };
    let Ok(size) = file.metadata().await.map(|m| m.len()) else {
        return status(StatusCode::INTERNAL_SERVER_ERROR, "cannot stat map output");
    };
    let range = headers.get("range").and_then(|v| v.to_str().ok());
    let (code, start, end) = match range {
        None => (StatusCode::OK, 0, size),
        Some(header) => match protocol::range::byte_range(header, size) {
            Ok(range) => (StatusCode::PARTIAL_CONTENT, range.start, range.end),
            Err(_) => {
                return (
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    [("content-range", format!("bytes */{size}"))],
                    "range not satisfiable",
                )
                    .into_response();
            }
        },
    };
    if file.seek(SeekFrom::Start(start)).await.is_err() {
        return status(StatusCode::INTERNAL_SERVER_ERROR, "cannot seek map output");
    }
    // The permit lives as long as the body stream.
    let stream = tokio_util::io::ReaderStream::with_capacity(file.take(end - start), 256 << 10)
        .map(move |chunk| {
            let _held = &permit;
            chunk
        });
    let mut response = Response::builder()
        .status(code)
        .header("content-length", end - start)
        .header("accept-ranges", "bytes");
    if code == StatusCode::PARTIAL_CONTENT {
        response = response.header("content-range", format!("bytes {start}-{}/{size}", end - 1));
    }
    response
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| status(StatusCode::INTERNAL_SERVER_ERROR, "response"))
}
