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
    let last = source.offset + source.length - 1;
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
        let wait = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_secs);
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
pub(crate) async fn fetch_all(
    http: &reqwest::Client,
    token: &str,
    sources: &[MapSource],
    dir: &Path,
    concurrency: usize,
) -> Result<Vec<PathBuf>, FetchError> {
    let mut jobs = Vec::with_capacity(sources.len());
    for source in sources.iter().cloned() {
        let http = http.clone();
        let token = token.to_owned();
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
                    let backoff = wait.unwrap_or(Duration::from_millis(200 << attempt));
                    tokio::time::sleep(backoff).await;
                }
            }
        }
        Err(FetchError {
            source: source.clone(),
            message,
        })
    }
}
