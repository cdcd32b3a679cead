//! Jobs: creating one with its tasks, reading jobs, tasks and attempts
//! back, and ending a job from outside (cancel, fail).

use async_trait::async_trait;
use protocol::api::{AttemptInfo, AttemptLogs, TaskInfo};
use protocol::{AttemptId, Counters, JobId};

use super::{AttemptTarget, JobRecord, NewJob, StoreResult};

/// Jobs, their tasks and their attempts as users see them.
#[async_trait]
pub trait Jobs: Send + Sync + 'static {
    /// Creates a job and its M map and R reduce tasks.
    async fn create_job(&self, job: &NewJob, now: i64) -> StoreResult<JobId>;

    /// One job.
    async fn get_job(&self, id: JobId) -> StoreResult<Option<JobRecord>>;

    /// Recent jobs, newest first.
    async fn list_jobs(&self, limit: i64) -> StoreResult<Vec<JobRecord>>;

    /// A job's counters.
    async fn job_counters(&self, id: JobId) -> StoreResult<Counters>;

    /// Cancels an unfinished job; `Conflict` when it already finished.
    async fn cancel_job(&self, id: JobId, now: i64) -> StoreResult<()>;

    /// Fails a job with a message (e.g. its inputs vanished).
    async fn fail_job(&self, id: JobId, error: &str, now: i64) -> StoreResult<()>;

    /// A job's tasks.
    async fn list_tasks(&self, job: JobId) -> StoreResult<Vec<TaskInfo>>;

    /// A job's attempts.
    async fn list_attempts(&self, job: JobId) -> StoreResult<Vec<AttemptInfo>>;

    /// Committed reduce outputs of a job: (partition, staged blob path).
    async fn reduce_outputs(&self, job: JobId) -> StoreResult<Vec<(u32, String)>>;

    /// The task an attempt runs and whether it still holds its lease (as
    /// the task's attempt or as its backup).
    async fn attempt_target(&self, attempt: AttemptId) -> StoreResult<Option<AttemptTarget>>;

    /// An attempt's logs.
    async fn attempt_logs(
        &self,
        job: JobId,
        attempt: AttemptId,
    ) -> StoreResult<Option<AttemptLogs>>;
}

/// Implements [`Jobs`] for `$store` on database `$db`, locking a job row
/// with `$lock_job` (see `store_impl!`).
macro_rules! jobs_impl {
    ($store:ident, $db:ty, $lock_job:expr) => {
        impl $store {
            async fn progress_rows(&self, id: i64) -> StoreResult<Vec<ProgressRow>> {
                Ok(sqlx::query_as::<_, ProgressRow>(
                    "SELECT kind, state, COUNT(*) AS n FROM tasks WHERE job_id = $1 GROUP BY kind, state",
                )
                .bind(id)
                .fetch_all(&self.pool)
                .await?)
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::Jobs for $store {
            async fn create_job(&self, job: &NewJob, now: i64) -> StoreResult<JobId> {
                let mut tx = self.begin().await?;
                let state = if job.maps.is_empty() { JobState::Reducing } else { JobState::Mapping };
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO jobs (module, spec, state, token, map_tasks, reduce_tasks, created_at, backups, partitioner) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
                )
                .bind(&job.spec.module)
                .bind(serde_json::to_string(&job.spec)?)
                .bind(state.as_str())
                .bind(&job.token)
                .bind(job.maps.len() as i64)
                .bind(i64::from(job.spec.reducers))
                .bind(now)
                .bind(job.spec.backups)
                .bind(serde_json::to_string(&job.partitioner)?)
                .fetch_one(&mut *tx)
                .await?;
                // Many rows per statement: a 65,536-split job was 65,536
                // statements holding SQLite's one connection for seconds.
                // 4 binds a row, 1,000 rows: under both databases' limits.
                let inputs = job
                    .maps
                    .iter()
                    .map(serde_json::to_string)
                    .collect::<Result<Vec<_>, _>>()?;
                for (chunk_no, chunk) in inputs.chunks(1000).enumerate() {
                    let mut insert = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO tasks (job_id, kind, idx, state, input, updated_at) ",
                    );
                    insert.push_values(chunk.iter().enumerate(), |mut row, (i, input)| {
                        row.push_bind(id)
                            .push("'map'")
                            .push_bind((chunk_no * 1000 + i) as i64)
                            .push("'idle'")
                            .push_bind(input.as_str())
                            .push_bind(now);
                    });
                    insert.build().execute(&mut *tx).await?;
                }
                let paths: std::collections::BTreeSet<&str> = job.maps.iter().map(|m| m.path.as_str()).collect();
                for path in paths {
                    sqlx::query("INSERT INTO job_inputs (job_id, path) VALUES ($1, $2)")
                        .bind(id)
                        .bind(path)
                        .execute(&mut *tx)
                        .await?;
                }
                for idx in 0..job.spec.reducers {
                    sqlx::query(
                        "INSERT INTO tasks (job_id, kind, idx, state, input, updated_at) \
                         VALUES ($1, 'reduce', $2, 'idle', '{}', $3)",
                    )
                    .bind(id)
                    .bind(i64::from(idx))
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(JobId(id))
            }

            async fn get_job(&self, id: JobId) -> StoreResult<Option<JobRecord>> {
                let row = sqlx::query_as::<_, JobRow>(
                    "SELECT id, spec, state, error, token, created_at, finished_at FROM jobs WHERE id = $1",
                )
                .bind(id.0)
                .fetch_optional(&self.pool)
                .await?;
                match row {
                    Some(row) => {
                        let progress = self.progress_rows(row.id).await?;
                        Ok(Some(job_record(row, &progress)?))
                    }
                    None => Ok(None),
                }
            }

            async fn list_jobs(&self, limit: i64) -> StoreResult<Vec<JobRecord>> {
                let rows = sqlx::query_as::<_, JobRow>(
                    "SELECT id, spec, state, error, token, created_at, finished_at FROM jobs ORDER BY id DESC LIMIT $1",
                )
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                let mut jobs = Vec::with_capacity(rows.len());
                for row in rows {
                    let progress = self.progress_rows(row.id).await?;
                    jobs.push(job_record(row, &progress)?);
                }
                Ok(jobs)
            }

            async fn job_counters(&self, id: JobId) -> StoreResult<Counters> {
                let rows: Vec<(String, i64)> =
                    sqlx::query_as("SELECT name, value FROM counters WHERE job_id = $1 ORDER BY name")
                        .bind(id.0)
                        .fetch_all(&self.pool)
                        .await?;
                Ok(Counters(rows.into_iter().collect()))
            }

            async fn cancel_job(&self, id: JobId, now: i64) -> StoreResult<()> {
                let mut tx = self.begin().await?;
                let state: Option<String> =
                    sqlx::query_scalar(concat!("SELECT state FROM jobs WHERE id = $1 ", $lock_job))
                        .bind(id.0)
                        .fetch_optional(&mut *tx)
                        .await?;
                let state = parse::<JobState>(&state.ok_or(StoreError::NotFound)?)?;
                if state.is_finished() {
                    return Err(StoreError::Conflict(format!("job {id} already {}", state.as_str())));
                }
                release_job(&mut tx, id.0, "the job was cancelled", now).await?;
                sqlx::query("UPDATE jobs SET state = 'cancelled', error = 'cancelled by a user', finished_at = $2 WHERE id = $1")
                    .bind(id.0)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn fail_job(&self, id: JobId, error: &str, now: i64) -> StoreResult<()> {
                let mut tx = self.begin().await?;
                fail_job_tx(&mut tx, id.0, error, now).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn list_tasks(&self, job: JobId) -> StoreResult<Vec<TaskInfo>> {
                sqlx::query_as::<_, TaskRow>(
                    "SELECT id, kind, idx, state, input, worker_id, failures, attempts FROM tasks \
                     WHERE job_id = $1 ORDER BY kind, idx",
                )
                .bind(job.0)
                .fetch_all(&self.pool)
                .await?
                .into_iter()
                .map(TaskRow::into_info)
                .collect()
            }

            async fn list_attempts(&self, job: JobId) -> StoreResult<Vec<AttemptInfo>> {
                sqlx::query_as::<_, AttemptRow>(
                    "SELECT a.id, a.task_id, t.kind, t.idx, a.worker_id, a.backup, a.started_at, a.ended_at, \
                     a.outcome, a.error, a.counters FROM attempts a JOIN tasks t ON t.id = a.task_id \
                     WHERE a.job_id = $1 ORDER BY a.id",
                )
                .bind(job.0)
                .fetch_all(&self.pool)
                .await?
                .into_iter()
                .map(AttemptRow::into_info)
                .collect()
            }

            async fn reduce_outputs(&self, job: JobId) -> StoreResult<Vec<(u32, String)>> {
                let rows: Vec<(i32, Option<String>)> = sqlx::query_as(
                    "SELECT idx, output FROM tasks WHERE job_id = $1 AND kind = 'reduce' AND state = 'completed' \
                     ORDER BY idx",
                )
                .bind(job.0)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .filter_map(|(idx, output)| Some((idx as u32, output?)))
                    .collect())
            }

            async fn attempt_target(&self, attempt: AttemptId) -> StoreResult<Option<AttemptTarget>> {
                let row: Option<(i64, String, i32, String, Option<i64>, Option<i64>, String, String, String)> = sqlx::query_as(
                    "SELECT t.job_id, t.kind, t.idx, t.state, t.attempt_id, t.backup_attempt_id, j.state, j.spec, a.worker_id \
                     FROM attempts a JOIN tasks t ON t.id = a.task_id JOIN jobs j ON j.id = t.job_id WHERE a.id = $1",
                )
                .bind(attempt.0)
                .fetch_optional(&self.pool)
                .await?;
                let Some((job, kind, idx, state, current, backup, job_state, spec, worker)) = row else {
                    return Ok(None);
                };
                let spec: JobSpec = serde_json::from_str(&spec)?;
                Ok(Some(AttemptTarget {
                    job: JobId(job),
                    kind: parse(&kind)?,
                    index: idx as u32,
                    holds: state == TaskState::InProgress.as_str()
                        && (current == Some(attempt.0) || backup == Some(attempt.0))
                        && !parse::<JobState>(&job_state)?.is_finished(),
                    output_bytes: spec.limits.output_bytes,
                    worker: WorkerId(worker),
                }))
            }

            async fn attempt_logs(&self, job: JobId, attempt: AttemptId) -> StoreResult<Option<AttemptLogs>> {
                let row: Option<(Option<String>, Option<String>)> =
                    sqlx::query_as("SELECT stdout, stderr FROM attempts WHERE id = $1 AND job_id = $2")
                        .bind(attempt.0)
                        .bind(job.0)
                        .fetch_optional(&self.pool)
                        .await?;
                Ok(row.map(|(stdout, stderr)| AttemptLogs {
                    stdout: stdout.unwrap_or_default(),
                    stderr: stderr.unwrap_or_default(),
                }))
            }
        }
    };
}

pub(super) use jobs_impl;
