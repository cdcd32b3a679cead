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
/// prefix ending in `/`, or a glob (`*` and `?` within a path segment,
/// `**` across segments, `[a-z]`, `{a,b}`).
pub async fn resolve_inputs(
    state: &AppState,
    spec: &JobSpec,
) -> Result<Vec<protocol::api::DatasetFile>, ApiError> {
    let mut files = Vec::new();
    for pattern in &spec.inputs {
        let pattern = pattern.trim_start_matches('/');
        let literal_prefix = &pattern[..pattern.find(GLOB_CHARS).unwrap_or(pattern.len())];
        let matcher = if pattern.ends_with('/') || pattern.is_empty() {
            None
        } else {
            Some(glob(pattern)?)
        };
        let candidates = state.store.list_blobs(literal_prefix).await?;
        let matched: Vec<_> = candidates
            .into_iter()
            .filter(|f| matcher.as_ref().is_none_or(|m| m.is_match(&f.path)))
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

/// The characters that make an input pattern a glob.
const GLOB_CHARS: &[char] = &['*', '?', '[', '{', '\\'];

/// An input glob, matched in time linear in the path (a compiled automaton,
/// never backtracking): `*` and `?` stay within a path segment. Built as a
/// one-glob `GlobSet`, whose compilation reports a pattern too large to
/// compile as an error (`Glob::compile_matcher` panics on it).
fn glob(pattern: &str) -> Result<globset::GlobSet, ApiError> {
    let invalid = |e: globset::Error| ApiError::InvalidSpec {
        field: "inputs".into(),
        message: format!("{pattern:?} is not a valid glob: {}", e.kind()),
    };
    let glob = globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map_err(invalid)?;
    globset::GlobSetBuilder::new()
        .add(glob)
        .build()
        .map_err(invalid)
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
            size: Some(files[s.file].size),
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
    use super::glob;

    fn matches(pattern: &str, path: &str) -> bool {
        glob(pattern).unwrap().is_match(path)
    }

    #[test]
    fn globs() {
        assert!(matches("books/*.txt", "books/a.txt"));
        assert!(!matches("books/*.txt", "books/sub/a.txt"));
        assert!(matches("books/**/*.txt", "books/sub/a.txt"));
        assert!(matches("books/pg-?.txt", "books/pg-1.txt"));
        assert!(matches("books/pg-[0-9].txt", "books/pg-1.txt"));
        assert!(matches("a.txt", "a.txt"));
        assert!(!matches("a.txt", "a.txt2"));
    }

    #[test]
    fn pathological_globs_are_quick_or_refused() {
        // Exponential for a backtracking matcher: 11 stars and a near miss.
        let pattern = format!("{}b", "a*".repeat(11));
        assert!(!matches(&pattern, &"a".repeat(45)));
        // 200,000 stars overflowed a recursive matcher's stack (and make
        // `Glob::compile_matcher` panic): an error, not a crash.
        assert!(glob(&"*".repeat(200_000)).is_err());
        // The longest pattern a spec may hold compiles and matches.
        assert!(matches(&"*".repeat(protocol::job::MAX_INPUT_BYTES), "name"));
        assert!(glob("books/[z-a].txt").is_err());
    }
}
