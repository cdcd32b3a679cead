//! Reading over HTTP from blocking task code: a pump task moves a response
//! body into a bounded channel and a `Read` drains it, so a map task reads
//! its split as a plain stream; and the reducer's fetch of map outputs,
//! with bounded concurrency, retries and checksum verification.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use protocol::worker_api::MapSource;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::runfile::SegmentReader;

/// A blocking reader over an HTTP response body.
pub(crate) struct BodyReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl BodyReader {
    /// Starts pumping `response` into a reader. Dropping the reader stops
    /// the pump and closes the connection.
    pub(crate) fn new(response: Option<reqwest::Response>) -> Self {
        let (tx, rx) = mpsc::channel(8);
        if let Some(response) = response {
            tokio::spawn(async move {
                let mut body = response.bytes_stream();
                while let Some(chunk) = body.next().await {
                    let item = chunk.map_err(io::Error::other);
                    let failed = item.is_err();
                    if tx.send(item).await.is_err() || failed {
                        break;
                    }
                }
            });
        }
        BodyReader {
            rx,
            current: Bytes::new(),
        }
    }
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(err)) => return Err(err),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// Longest a map-output server may stay silent, before its answer or
/// between two chunks of it, before the try fails. A server that accepts
/// connections but never answers (a frozen process) must not hold a reducer
/// for the whole request timeout.
const FETCH_IDLE: Duration = Duration::from_secs(10);

/// Longest a `Retry-After` from a map-output server is honoured: a server
/// asking for an hour must not park the reducer (and its slot) that long.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// How long to wait after a 429 with this `Retry-After` (seconds), capped.
fn retry_after(header: Option<&str>) -> Option<Duration> {
    let secs = header?.trim().parse::<u64>().ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

/// Why a map output could not be fetched.
#[derive(Debug)]
pub(crate) struct FetchError {
    pub(crate) source: MapSource,
    pub(crate) message: String,
}

/// Tries to fetch one source to `dest` and check every block.
async fn fetch_once(
    http: &reqwest::Client,
    token: &str,
    source: &MapSource,
    dest: &Path,
) -> Result<(), (String, Option<Duration>)> {
    let Some(last) = source
        .offset
        .checked_add(source.length)
        .and_then(|end| end.checked_sub(1))
    else {
        return Err((
            format!(
                "invalid map output index: bytes {}+{} overflow",
                source.offset, source.length
            ),
            None,
        ));
    };
    let request = http
        .get(&source.url)
        .bearer_auth(token)
        .header("range", format!("bytes={}-{last}", source.offset))
        .timeout(Duration::from_secs(300))
        .send();
    let response = tokio::time::timeout(FETCH_IDLE, request)
        .await
        .map_err(|_| (format!("no answer within {FETCH_IDLE:?}"), None))?
        .map_err(|e| (format!("request failed: {e}"), None))?;
    if response.status() == reqwest::StatusCode::TOO_MANY_REQUESTS {
        let wait = retry_after(
            response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()),
        );
        return Err(("map output server busy (429)".into(), wait));
    }
    if response.status() != reqwest::StatusCode::PARTIAL_CONTENT {
        return Err((
            format!("map output server answered {}", response.status()),
            None,
        ));
    }
    let mut file = tokio::fs::File::create(dest)
        .await
        .map_err(|e| (format!("creating {}: {e}", dest.display()), None))?;
    let mut body = response.bytes_stream();
    let mut got: u64 = 0;
    loop {
        let next = tokio::time::timeout(FETCH_IDLE, body.next())
            .await
            .map_err(|_| {
                (
                    format!("no data for {FETCH_IDLE:?} after {got} bytes"),
                    None,
                )
            })?;
        let Some(chunk) = next else {
            break;
        };
        let chunk =
            chunk.map_err(|e| (format!("connection broke after {got} bytes: {e}"), None))?;
        // Checked before writing: a server that sends more than the range
        // asked for fills no disk.
        if got + chunk.len() as u64 > source.length {
            return Err((
                format!(
                    "map output server sent more than the {} bytes asked for",
                    source.length
                ),
                None,
            ));
        }
        got += chunk.len() as u64;
        file.write_all(&chunk)
            .await
            .map_err(|e| (format!("writing: {e}"), None))?;
    }
    file.flush()
        .await
        .map_err(|e| (format!("writing: {e}"), None))?;
    if got != source.length {
        return Err((format!("got {got} of {} bytes", source.length), None));
    }
    let path = dest.to_path_buf();
    let (length, records) = (source.length, source.records);
    tokio::task::spawn_blocking(move || verify(&path, length, records))
        .await
        .map_err(|e| (e.to_string(), None))?
        .map_err(|e| (format!("corrupt map output: {e}"), None))
}

/// Reads a fetched segment through, checking every block checksum and the
/// record count.
fn verify(path: &Path, length: u64, records: u64) -> io::Result<()> {
    let file = io::BufReader::with_capacity(256 << 10, std::fs::File::open(path)?);
    let mut reader = SegmentReader::new(file, length, Some(records));
    while reader.advance()? {}
    Ok(())
}

/// Fetches every source into `dir` (`src-{map_index}`), `concurrency` at a
/// time, each with up to four tries. Returns the local paths in source
/// order, or, as soon as one source could not be fetched, that source (the
/// rest are abandoned: the attempt fails either way).
/// Fetches every source's segment, presenting each source's own token
/// (`fallback`, the lease's, for a coordinator that sends none).
pub(crate) async fn fetch_all(
    http: &reqwest::Client,
    fallback: &str,
    sources: &[MapSource],
    dir: &Path,
    concurrency: usize,
) -> Result<Vec<PathBuf>, FetchError> {
    let mut jobs = Vec::with_capacity(sources.len());
    for source in sources.iter().cloned() {
        let http = http.clone();
        let token = if source.token.is_empty() {
            fallback.to_owned()
        } else {
            source.token.clone()
        };
        let dest = dir.join(format!("src-{}", source.map_index));
        jobs.push(fetch_with_retries(http, token, source, dest));
    }
    futures::stream::iter(jobs)
        .buffered(concurrency.max(1))
        .try_collect()
        .await
}

async fn fetch_with_retries(
    http: reqwest::Client,
    token: String,
    source: MapSource,
    dest: PathBuf,
) -> Result<PathBuf, FetchError> {
    {
        let (http, token, source) = (&http, token.as_str(), &source);
        if source.length == 0 {
            return Ok(dest);
        }
        let mut message = String::new();
        for attempt in 0..4u32 {
            match fetch_once(http, token, source, &dest).await {
                Ok(()) => return Ok(dest),
                Err((why, wait)) => {
                    tracing::warn!(map_task = %source.map_task, attempt, error = %why, "map output fetch failed");
                    message = why;
                    if attempt < 3 {
                        let backoff = wait.unwrap_or(Duration::from_millis(200 << attempt));
                        tokio::time::sleep(backoff).await;
                    }
                }
            }
        }
        Err(FetchError {
            source: source.clone(),
            message,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::http::StatusCode;
    use axum::routing::get;
    use protocol::{AttemptId, TaskId};

    fn source(url: String, offset: u64, length: u64) -> MapSource {
        MapSource {
            map_task: TaskId(1),
            map_index: 0,
            attempt: AttemptId(1),
            url,
            offset,
            length,
            records: 1,
            worker: Default::default(),
            token: String::new(),
        }
    }

    /// A map-output server on 127.0.0.1 that answers every GET with
    /// `answer`.
    async fn serve(answer: fn() -> (StatusCode, Vec<u8>)) -> String {
        let app = Router::new().route("/out", get(move || async move { answer() }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/out", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        url
    }

    #[tokio::test]
    async fn an_index_past_u64_is_refused_not_overflowed() {
        let dir = tempfile::tempdir().unwrap();
        let http = reqwest::Client::new();
        let src = source("http://127.0.0.1:9/out".into(), u64::MAX, 64);
        let err = fetch_once(&http, "t", &src, &dir.path().join("x"))
            .await
            .unwrap_err();
        assert!(err.0.contains("overflow"), "{}", err.0);
    }

    #[tokio::test]
    async fn a_body_longer_than_the_range_is_cut_off_before_it_is_written() {
        let url = serve(|| (StatusCode::PARTIAL_CONTENT, vec![b'x'; 64 << 20])).await;
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("src-0");
        let http = reqwest::Client::new();
        let err = fetch_once(&http, "t", &source(url, 0, 64), &dest)
            .await
            .unwrap_err();
        assert!(err.0.contains("more than the 64 bytes"), "{}", err.0);
        let written = std::fs::metadata(&dest).map(|m| m.len()).unwrap_or(0);
        assert!(written <= 64, "{written} bytes written");
    }

    #[test]
    fn retry_after_is_capped() {
        assert_eq!(retry_after(Some("3600")), Some(MAX_RETRY_AFTER));
        assert_eq!(retry_after(Some(" 2 ")), Some(Duration::from_secs(2)));
        assert_eq!(retry_after(Some("soon")), None);
        assert_eq!(retry_after(None), None);
    }
}
