//! Job planning at submit time and the background loop that takes work
//! back from dead workers. Every decision is a store transaction; this
//! module only decides when to ask.

use std::time::Duration;

use futures::TryStreamExt;
use protocol::job::{SAMPLE_CHUNK_BYTES, SAMPLE_CHUNKS};
use protocol::{InputFile, JobSpec, PartitionBy, Partitioner, plan_splits};

use crate::AppState;
use crate::error::ApiError;
use crate::store::{MapInputDoc, NewJob};

/// The dataset files an input pattern names: an exact path, a directory
/// prefix ending in `/`, or a glob with `*` and `?` in its last segment.
pub async fn resolve_inputs(
    state: &AppState,
    spec: &JobSpec,
) -> Result<Vec<protocol::api::DatasetFile>, ApiError> {
    let mut files = Vec::new();
    for pattern in &spec.inputs {
        let pattern = pattern.trim_start_matches('/');
        let literal_prefix: String = pattern
            .chars()
            .take_while(|c| *c != '*' && *c != '?')
            .collect();
        let candidates = state.store.list_blobs(&literal_prefix).await?;
        let matched: Vec<_> = candidates
            .into_iter()
            .filter(|f| {
                if pattern.ends_with('/') || pattern.is_empty() {
                    true
                } else {
                    glob_match(pattern.as_bytes(), f.path.as_bytes())
                }
            })
            .collect();
        if matched.is_empty() {
            return Err(ApiError::InvalidSpec {
                field: "inputs".into(),
                message: format!(
                    "no dataset file matches {pattern:?} (upload it first: quern upload)"
                ),
            });
        }
        for file in matched {
            if !files
                .iter()
                .any(|f: &protocol::api::DatasetFile| f.path == file.path)
            {
                files.push(file);
            }
        }
    }
    Ok(files)
}

/// `*` matches any run of characters except `/`; `?` one character.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    match (pattern.first(), text.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob_match(&pattern[1..], text)
                || (!text.is_empty() && text[0] != b'/' && glob_match(pattern, &text[1..]))
        }
        (Some(b'?'), Some(&c)) if c != b'/' => glob_match(&pattern[1..], &text[1..]),
        (Some(p), Some(t)) if p == t => glob_match(&pattern[1..], &text[1..]),
        _ => false,
    }
}

/// The name a guest sees for a dataset path: its last segment.
fn file_name(path: &str) -> String {
    path.rsplit('/').next().unwrap_or(path).to_owned()
}

/// Plans a validated spec into a job: its map splits and shuffle secret.
pub async fn plan_job(state: &AppState, spec: JobSpec) -> Result<NewJob, ApiError> {
    let files = resolve_inputs(state, &spec).await?;
    let mut names = std::collections::HashSet::new();
    for f in &files {
        if !names.insert(file_name(&f.path)) {
            return Err(ApiError::InvalidSpec {
                field: "inputs".into(),
                message: format!(
                    "two inputs are named {}; the guest could not tell them apart",
                    file_name(&f.path)
                ),
            });
        }
    }
    let planned: Vec<InputFile> = files
        .iter()
        .map(|f| InputFile {
            name: file_name(&f.path),
            size: f.size,
        })
        .collect();
    let maps = plan_splits(&planned, spec.split_size, spec.format)
        .into_iter()
        .map(|s| MapInputDoc {
            path: files[s.file].path.clone(),
            file_name: planned[s.file].name.clone(),
            start: s.start,
            end: s.end,
        })
        .collect();
    let partitioner = match spec.partitioner {
        PartitionBy::Hash => Partitioner::Hash,
        PartitionBy::Range => sample_partitioner(state, &files, spec.reducers).await?,
    };
    Ok(NewJob {
        spec,
        maps,
        token: crate::auth::new_token(),
        partitioner,
    })
}

/// A range partitioner whose split points come from the lines of about
/// `SAMPLE_CHUNKS` chunks read evenly across the inputs (TeraSort's
/// sampling): R parts of about equal size, drawn before any map runs.
async fn sample_partitioner(
    state: &AppState,
    files: &[protocol::api::DatasetFile],
    reducers: u32,
) -> Result<Partitioner, ApiError> {
    let sizes: Vec<u64> = files.iter().map(|f| f.size).collect();
    let mut sample = Vec::new();
    for (i, offset, len) in protocol::sample_ranges(&sizes, SAMPLE_CHUNKS, SAMPLE_CHUNK_BYTES) {
        let key = crate::api::datasets::dataset_key(&files[i].path);
        let Some((_, stream)) = state
            .blobs
            .get_range(&key, offset, Some(offset + len))
            .await
            .map_err(ApiError::internal)?
        else {
            return Err(ApiError::InvalidSpec {
                field: "inputs".into(),
                message: format!(
                    "dataset {} was deleted while the job was planned",
                    files[i].path
                ),
            });
        };
        let chunks: Vec<bytes::Bytes> = stream.try_collect().await.map_err(ApiError::internal)?;
        let chunk = chunks.concat();
        sample.extend(protocol::sample_lines(&chunk, offset).map(<[u8]>::to_vec));
    }
    Ok(Partitioner::from_sample(sample, reducers))
}

/// Every so often: declare silent workers dead and take back expired
/// leases. Safe to run in several coordinators at once.
pub async fn expiry_loop(state: AppState) {
    let period =
        (state.config.dead_after / 4).clamp(Duration::from_millis(100), Duration::from_secs(2));
    loop {
        tokio::time::sleep(period).await;
        match state
            .store
            .expire(crate::now_ms(), state.config.liveness())
            .await
        {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(
                    tasks = n,
                    "took back tasks from dead workers or expired leases"
                );
                state.changed.notify_waiters();
            }
            Err(err) => tracing::warn!(error = %err, "expiry pass failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        assert!(glob_match(b"books/*.txt", b"books/a.txt"));
        assert!(!glob_match(b"books/*.txt", b"books/sub/a.txt"));
        assert!(glob_match(b"books/pg-?.txt", b"books/pg-1.txt"));
        assert!(glob_match(b"a.txt", b"a.txt"));
        assert!(!glob_match(b"a.txt", b"a.txt2"));
    }
}
