//! The SQL of the store, written once and instantiated for SQLite and
//! Postgres by `store_impl!`. The dialects differ in row locking only:
//! Postgres locks the job row of a completion (`FOR UPDATE`) and skips
//! locked task rows when leasing (`FOR UPDATE OF t SKIP LOCKED`); SQLite
//! gets the same atomicity from its single writer connection.

use protocol::api::{AttemptInfo, DatasetFile, ModuleInfo, PhaseProgress, TaskInfo, WorkerInfo};
use protocol::{
    AttemptId, Counters, JobId, JobSpec, JobState, TaskId, TaskKind, TaskState, WorkerId,
};

use super::{JobRecord, MapInputDoc, StoreError, StoreResult};

#[derive(sqlx::FromRow)]
pub(super) struct JobRow {
    pub id: i64,
    pub spec: String,
    pub state: String,
    pub error: Option<String>,
    pub token: String,
    pub created_at: i64,
    pub finished_at: Option<i64>,
}

#[derive(sqlx::FromRow)]
pub(super) struct ProgressRow {
    pub kind: String,
    pub state: String,
    pub n: i64,
}

#[derive(sqlx::FromRow)]
pub(super) struct ModuleRow {
    pub sha256: String,
    pub name: String,
    pub size: i64,
    pub has_combine: bool,
    pub created_at: i64,
    pub kind: String,
}

impl From<ModuleRow> for ModuleInfo {
    fn from(r: ModuleRow) -> Self {
        ModuleInfo {
            sha256: r.sha256,
            name: r.name,
            size: r.size as u64,
            created_at: r.created_at,
            has_combine: r.has_combine,
            // The column is only ever written from a `ModuleKind`.
            kind: r.kind.parse().unwrap_or_default(),
        }
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct BlobRow {
    pub path: String,
    pub size: i64,
    pub created_at: i64,
}

impl From<BlobRow> for DatasetFile {
    fn from(r: BlobRow) -> Self {
        DatasetFile {
            path: r.path,
            size: r.size as u64,
            created_at: r.created_at,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct TaskRow {
    pub id: i64,
    pub kind: String,
    pub idx: i32,
    pub state: String,
    pub input: String,
    pub worker_id: Option<String>,
    pub failures: i32,
    pub attempts: i32,
}

impl TaskRow {
    pub(super) fn into_info(self) -> StoreResult<TaskInfo> {
        let kind = parse::<TaskKind>(&self.kind)?;
        let input = match kind {
            TaskKind::Map => {
                let doc: MapInputDoc = serde_json::from_str(&self.input)?;
                format!("{} bytes {}..{}", doc.path, doc.start, doc.end)
            }
            TaskKind::Reduce => format!("partition {}", self.idx),
        };
        Ok(TaskInfo {
            id: TaskId(self.id),
            kind,
            index: self.idx as u32,
            state: parse(&self.state)?,
            input,
            worker: self.worker_id.map(WorkerId),
            failures: self.failures as u32,
            attempts: self.attempts as u32,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct AttemptRow {
    pub id: i64,
    pub task_id: i64,
    pub kind: String,
    pub idx: i32,
    pub worker_id: String,
    pub backup: bool,
    pub started_at: i64,
    pub ended_at: Option<i64>,
    pub outcome: String,
    pub error: Option<String>,
    pub counters: Option<String>,
}

impl AttemptRow {
    pub(super) fn into_info(self) -> StoreResult<AttemptInfo> {
        Ok(AttemptInfo {
            id: AttemptId(self.id),
            task: TaskId(self.task_id),
            kind: parse(&self.kind)?,
            index: self.idx as u32,
            worker: WorkerId(self.worker_id),
            started_at: self.started_at,
            ended_at: self.ended_at,
            outcome: parse(&self.outcome)?,
            error: self.error,
            counters: match self.counters {
                Some(text) => serde_json::from_str(&text)?,
                None => Counters::default(),
            },
            backup: self.backup,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct WorkerRow {
    pub id: String,
    pub address: String,
    pub slots: i32,
    pub state: String,
    pub last_heartbeat: i64,
    pub running: i64,
}

impl From<WorkerRow> for WorkerInfo {
    fn from(r: WorkerRow) -> Self {
        WorkerInfo {
            id: WorkerId(r.id),
            address: r.address,
            slots: r.slots as u32,
            state: r.state,
            last_heartbeat: r.last_heartbeat,
            running: r.running as u32,
        }
    }
}

/// The attempt being completed, its task and its job, read in one go.
#[derive(sqlx::FromRow)]
pub(super) struct CompletionRow {
    pub task_id: i64,
    pub job_id: i64,
    pub worker_id: String,
    pub kind: String,
    pub idx: i32,
    pub task_state: String,
    pub task_attempt: Option<i64>,
    pub backup_attempt: Option<i64>,
    pub failures: i32,
    pub host_failures: i32,
    pub counted: bool,
    pub reported: bool,
    pub job_state: String,
    pub spec: String,
}

#[derive(sqlx::FromRow)]
pub(super) struct SourceRow {
    pub id: i64,
    pub idx: i32,
    pub attempt_id: Option<i64>,
    pub output: Option<String>,
    pub address: String,
    pub worker_id: String,
}

pub(super) fn parse<T: std::str::FromStr<Err = String>>(text: &str) -> StoreResult<T> {
    text.parse()
        .map_err(|e: String| StoreError::Corrupt(serde::de::Error::custom(e)))
}

pub(super) fn progress(rows: &[ProgressRow], kind: TaskKind) -> StoreResult<PhaseProgress> {
    let mut p = PhaseProgress::default();
    for row in rows.iter().filter(|r| r.kind == kind.as_str()) {
        let n = row.n as u64;
        p.total += n;
        match parse::<TaskState>(&row.state)? {
            TaskState::Idle => p.idle += n,
            TaskState::InProgress => p.in_progress += n,
            TaskState::Completed => p.completed += n,
            TaskState::Failed => p.failed += n,
        }
    }
    Ok(p)
}

pub(super) fn job_record(row: JobRow, progress_rows: &[ProgressRow]) -> StoreResult<JobRecord> {
    let spec: JobSpec = serde_json::from_str(&row.spec)?;
    Ok(JobRecord {
        id: JobId(row.id),
        spec,
        state: parse::<JobState>(&row.state)?,
        error: row.error,
        token: row.token,
        map: progress(progress_rows, TaskKind::Map)?,
        reduce: progress(progress_rows, TaskKind::Reduce)?,
        created_at: row.created_at,
        finished_at: row.finished_at,
    })
}

/// Implements `Store` for `$store` (a struct with a `pool` field) on
/// database `$db`. `$lock_job` is appended to the query that reads a job
/// row before changing it; `$skip_locked` to the lease's candidate query.
macro_rules! store_impl {
    ($store:ident, $db:ty, $lock_job:expr, $skip_locked:expr) => {
        use $crate::store::sql::*;
        use $crate::store::*;
        use protocol::worker_api::*;
        use protocol::*;

        /// Jobs with a task to start, the one leased least recently first
        /// (jobs take turns, so they share the workers).
        const LEASE_JOBS: &str = "SELECT j.id, CASE WHEN j.state = 'mapping' THEN 'map' ELSE 'reduce' END AS kind, \
             j.spec, j.token \
             FROM jobs j JOIN job_turns turn ON turn.job_id = j.id \
             WHERE j.state IN ('mapping', 'reducing') AND EXISTS (SELECT 1 FROM tasks t \
               WHERE t.job_id = j.id AND t.state = 'idle' \
               AND t.kind = CASE WHEN j.state = 'mapping' THEN 'map' ELSE 'reduce' END) \
             ORDER BY turn.last_leased_at, j.id LIMIT 4";

        /// The job's lowest idle task of the phase, skipping rows another
        /// transaction is leasing (Postgres).
        const LEASE_CANDIDATE: &str = concat!(
            "UPDATE tasks SET state = 'in_progress', worker_id = $1, lease_deadline = $2, \
             attempts = attempts + 1, updated_at = $3 \
             WHERE id = (SELECT t.id FROM tasks t WHERE t.job_id = $4 AND t.kind = $5 AND t.state = 'idle' \
               ORDER BY t.idx LIMIT 1 ",
            $skip_locked,
            ") AND state = 'idle' RETURNING id, job_id, kind, idx, input"
        );

        /// A backup attempt of a straggler: a running task of a phase with
        /// nothing left to start, running on another worker for longer
        /// than `BACKUP_MIN_RUNNING_MS` and than twice its finished peers'
        /// average, and without a backup yet. The averages are computed
        /// once per (job, phase) in `peers`, not once per candidate: a
        /// correlated average made the query quadratic in the job's tasks
        /// (a 2,000-map job's tail kept every connection busy for minutes).
        const BACKUP_CANDIDATE: &str = concat!(
            "WITH peers AS (SELECT a2.job_id, t2.kind, AVG(a2.ended_at - a2.started_at) AS avg_ms \
               FROM attempts a2 JOIN tasks t2 ON t2.id = a2.task_id JOIN jobs j2 ON j2.id = a2.job_id \
               WHERE a2.outcome = 'succeeded' AND j2.backups AND j2.state IN ('mapping', 'reducing') \
               GROUP BY a2.job_id, t2.kind) \
             UPDATE tasks SET backup_worker_id = $1, backup_deadline = $2, attempts = attempts + 1, updated_at = $3 \
             WHERE id = (SELECT t.id FROM tasks t JOIN jobs j ON j.id = t.job_id JOIN attempts a ON a.id = t.attempt_id \
               JOIN peers p ON p.job_id = t.job_id AND p.kind = t.kind \
               WHERE t.state = 'in_progress' AND t.backup_worker_id IS NULL AND t.worker_id <> $1 AND j.backups \
               AND ((t.kind = 'map' AND j.state = 'mapping') OR (t.kind = 'reduce' AND j.state = 'reducing')) \
               AND NOT EXISTS (SELECT 1 FROM tasks i WHERE i.job_id = t.job_id AND i.kind = t.kind AND i.state = 'idle') \
               AND $3 - a.started_at > $4 \
               AND $3 - a.started_at > 2 * p.avg_ms \
               ORDER BY a.started_at LIMIT 1 ",
            $skip_locked,
            ") AND state = 'in_progress' AND backup_worker_id IS NULL RETURNING id, job_id, kind, idx, input"
        );

        const COMPLETION_ROW: &str =
            "SELECT a.task_id, a.job_id, a.worker_id, t.kind, t.idx, t.state AS task_state, \
             t.attempt_id AS task_attempt, t.backup_attempt_id AS backup_attempt, t.failures, t.host_failures, t.counted, \
             a.counters IS NOT NULL AS reported, j.state AS job_state, j.spec \
             FROM attempts a JOIN tasks t ON t.id = a.task_id JOIN jobs j ON j.id = a.job_id WHERE a.id = $1";

        const LOCK_JOB_OF_ATTEMPT: &str = concat!(
            "SELECT id FROM jobs WHERE id = (SELECT job_id FROM attempts WHERE id = $1) ",
            $lock_job
        );

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

        /// Locks a job's row (Postgres) before changing its tasks: every
        /// writer takes the job first, then its tasks, so none deadlock.
        async fn lock_job(tx: &mut sqlx::Transaction<'static, $db>, job: i64) -> StoreResult<()> {
            if $lock_job.is_empty() {
                return Ok(());
            }
            sqlx::query(concat!("SELECT id FROM jobs WHERE id = $1 ", $lock_job))
                .bind(job)
                .fetch_optional(&mut **tx)
                .await?;
            Ok(())
        }

        async fn add_counters(
            tx: &mut sqlx::Transaction<'static, $db>,
            job: i64,
            counters: &Counters,
        ) -> StoreResult<()> {
            if counters.0.is_empty() {
                return Ok(());
            }
            // One statement for all of a task's counters; sums saturate at
            // the ends of i64 as `Counters::add` does (an overflowing sum
            // would be an error on Postgres and turn REAL on SQLite).
            let mut query = sqlx::QueryBuilder::<$db>::new("INSERT INTO counters (job_id, name, value) ");
            query.push_values(&counters.0, |mut row, (name, value)| {
                row.push_bind(job).push_bind(name.clone()).push_bind(*value);
            });
            query.push(
                " ON CONFLICT (job_id, name) DO UPDATE SET value = CASE \
                 WHEN excluded.value > 0 THEN CASE WHEN counters.value > 9223372036854775807 - excluded.value \
                   THEN 9223372036854775807 ELSE counters.value + excluded.value END \
                 WHEN excluded.value < 0 THEN CASE WHEN counters.value < (-9223372036854775807 - 1) - excluded.value \
                   THEN (-9223372036854775807 - 1) ELSE counters.value + excluded.value END \
                 ELSE counters.value END",
            );
            query.build().execute(&mut **tx).await?;
            Ok(())
        }

        /// Puts a completed map task whose output is gone back to idle and
        /// sends its job back to the map phase.
        /// Sends a completed map task back to idle because its output is
        /// gone, unless the output is newer than `seen_by`: a reduce that was
        /// leased before the map ran again reports the old output missing,
        /// and that must not throw away the new one.
        async fn lose_map_output(
            tx: &mut sqlx::Transaction<'static, $db>,
            task: i64,
            seen_by: i64,
            now: i64,
        ) -> StoreResult<bool> {
            let rows = sqlx::query(
                "UPDATE tasks SET state = 'idle', worker_id = NULL, attempt_id = NULL, output = NULL, \
                 lease_deadline = NULL, updated_at = $2 WHERE id = $1 AND kind = 'map' AND state = 'completed' \
                 AND updated_at <= $3",
            )
            .bind(task)
            .bind(now)
            .bind(seen_by)
            .execute(&mut **tx)
            .await?
            .rows_affected();
            if rows > 0 {
                sqlx::query(
                    "UPDATE jobs SET state = 'mapping' WHERE id = (SELECT job_id FROM tasks WHERE id = $1) \
                     AND state = 'reducing'",
                )
                .bind(task)
                .execute(&mut **tx)
                .await?;
            }
            Ok(rows > 0)
        }

        async fn end_attempt(
            tx: &mut sqlx::Transaction<'static, $db>,
            attempt: i64,
            outcome: AttemptOutcome,
            error: Option<&str>,
            report: Option<&CompleteRequest>,
            now: i64,
        ) -> StoreResult<()> {
            let counters = report.map(|r| serde_json::to_string(&r.counters)).transpose()?;
            sqlx::query(
                "UPDATE attempts SET outcome = $2, error = $3, ended_at = $4, \
                 counters = COALESCE($5, counters), stdout = COALESCE($6, stdout), stderr = COALESCE($7, stderr) \
                 WHERE id = $1",
            )
            .bind(attempt)
            .bind(outcome.as_str())
            .bind(error)
            .bind(now)
            .bind(counters)
            .bind(report.map(|r| r.stdout.clone()))
            .bind(report.map(|r| r.stderr.clone()))
            .execute(&mut **tx)
            .await?;
            Ok(())
        }

        /// Takes every running attempt of a job that just ended back: the
        /// workers learn it from their next heartbeat, and their reports
        /// are refused.
        async fn release_running(tx: &mut sqlx::Transaction<'static, $db>, job: i64, why: &str, now: i64) -> StoreResult<()> {
            sqlx::query(
                "UPDATE attempts SET outcome = 'superseded', error = $2, ended_at = $3 \
                 WHERE job_id = $1 AND outcome = 'running'",
            )
            .bind(job)
            .bind(why)
            .bind(now)
            .execute(&mut **tx)
            .await?;
            sqlx::query(
                "UPDATE tasks SET state = 'idle', worker_id = NULL, attempt_id = NULL, lease_deadline = NULL, \
                 backup_attempt_id = NULL, backup_worker_id = NULL, backup_deadline = NULL, \
                 updated_at = $2 WHERE job_id = $1 AND state = 'in_progress'",
            )
            .bind(job)
            .bind(now)
            .execute(&mut **tx)
            .await?;
            Ok(())
        }

        async fn fail_job_tx(tx: &mut sqlx::Transaction<'static, $db>, job: i64, error: &str, now: i64) -> StoreResult<()> {
            release_running(tx, job, "the job failed", now).await?;
            sqlx::query(
                "UPDATE jobs SET state = 'failed', error = $2, finished_at = $3 \
                 WHERE id = $1 AND state IN ('mapping', 'reducing')",
            )
            .bind(job)
            .bind(error)
            .bind(now)
            .execute(&mut **tx)
            .await?;
            Ok(())
        }

        #[async_trait::async_trait]
        impl Store for $store {
            fn backend(&self) -> &'static str {
                Self::BACKEND
            }

            async fn durability(&self) -> StoreResult<String> {
                self.durability_setting().await
            }

            async fn add_token(&self, token_hash: &str, kind: &str, name: &str, now: i64) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO tokens (token_hash, kind, name, created_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (token_hash) DO NOTHING",
                )
                .bind(token_hash)
                .bind(kind)
                .bind(name)
                .bind(now)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn token_kind(&self, token_hash: &str) -> StoreResult<Option<(String, String)>> {
                Ok(sqlx::query_as::<_, (String, String)>("SELECT kind, name FROM tokens WHERE token_hash = $1")
                    .bind(token_hash)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn revoke_worker(&self, worker: &WorkerId, now: i64) -> StoreResult<()> {
                let mut tx = self.pool.begin().await?;
                // Dead now: the next expiry pass takes its tasks back.
                let found = sqlx::query("UPDATE workers SET state = 'dead', last_heartbeat = $2 WHERE id = $1")
                    .bind(&worker.0)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if found == 0 {
                    return Err(StoreError::NotFound);
                }
                sqlx::query("DELETE FROM tokens WHERE kind = 'node' AND name = $1")
                    .bind(&worker.0)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn put_module(&self, m: &ModuleInfo) -> StoreResult<bool> {
                let rows = sqlx::query(
                    "INSERT INTO modules (sha256, name, size, has_combine, created_at, kind) VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (sha256) DO NOTHING",
                )
                .bind(&m.sha256)
                .bind(&m.name)
                .bind(m.size as i64)
                .bind(m.has_combine)
                .bind(m.created_at)
                .bind(m.kind.as_str())
                .execute(&self.pool)
                .await?
                .rows_affected();
                Ok(rows > 0)
            }

            async fn get_module(&self, sha256: &str) -> StoreResult<Option<ModuleInfo>> {
                Ok(sqlx::query_as::<_, ModuleRow>(
                    "SELECT sha256, name, size, has_combine, created_at, kind FROM modules WHERE sha256 = $1",
                )
                .bind(sha256)
                .fetch_optional(&self.pool)
                .await?
                .map(Into::into))
            }

            async fn list_modules(&self) -> StoreResult<Vec<ModuleInfo>> {
                Ok(sqlx::query_as::<_, ModuleRow>(
                    "SELECT sha256, name, size, has_combine, created_at, kind FROM modules ORDER BY created_at DESC, sha256",
                )
                .fetch_all(&self.pool)
                .await?
                .into_iter()
                .map(Into::into)
                .collect())
            }

            async fn delete_module(&self, sha256: &str) -> StoreResult<()> {
                let mut tx = self.pool.begin().await?;
                let busy: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM jobs WHERE module = $1 AND state IN ('mapping', 'reducing')",
                )
                .bind(sha256)
                .fetch_one(&mut *tx)
                .await?;
                if busy > 0 {
                    return Err(StoreError::Conflict(format!("module is used by {busy} unfinished job(s)")));
                }
                let rows = sqlx::query("DELETE FROM modules WHERE sha256 = $1")
                    .bind(sha256)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if rows == 0 {
                    return Err(StoreError::NotFound);
                }
                tx.commit().await?;
                Ok(())
            }

            async fn put_blob(&self, f: &DatasetFile) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO blobs (path, size, created_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (path) DO UPDATE SET size = excluded.size, created_at = excluded.created_at",
                )
                .bind(&f.path)
                .bind(f.size as i64)
                .bind(f.created_at)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn list_blobs(&self, prefix: &str) -> StoreResult<Vec<DatasetFile>> {
                // A range instead of LIKE, so `%` and `_` in paths mean themselves.
                let mut end = prefix.to_owned();
                end.push(char::MAX);
                Ok(sqlx::query_as::<_, BlobRow>(
                    "SELECT path, size, created_at FROM blobs WHERE path >= $1 AND path < $2 ORDER BY path",
                )
                .bind(prefix)
                .bind(end)
                .fetch_all(&self.pool)
                .await?
                .into_iter()
                .map(Into::into)
                .collect())
            }

            async fn blob_readers(&self, path: &str) -> StoreResult<Vec<JobId>> {
                let ids: Vec<i64> = sqlx::query_scalar(
                    "SELECT j.id FROM job_inputs i JOIN jobs j ON j.id = i.job_id \
                     WHERE i.path = $1 AND j.state IN ('mapping', 'reducing') ORDER BY j.id",
                )
                .bind(path)
                .fetch_all(&self.pool)
                .await?;
                Ok(ids.into_iter().map(JobId).collect())
            }

            async fn delete_blob(&self, path: &str) -> StoreResult<()> {
                let rows = sqlx::query("DELETE FROM blobs WHERE path = $1")
                    .bind(path)
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                if rows == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(())
            }

            async fn create_job(&self, job: &NewJob, now: i64) -> StoreResult<JobId> {
                let mut tx = self.pool.begin().await?;
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
                sqlx::query("INSERT INTO job_turns (job_id) VALUES ($1)")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
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
                let mut tx = self.pool.begin().await?;
                let state: Option<String> =
                    sqlx::query_scalar(concat!("SELECT state FROM jobs WHERE id = $1 ", $lock_job))
                        .bind(id.0)
                        .fetch_optional(&mut *tx)
                        .await?;
                let state = parse::<JobState>(&state.ok_or(StoreError::NotFound)?)?;
                if state.is_finished() {
                    return Err(StoreError::Conflict(format!("job {id} already {}", state.as_str())));
                }
                release_running(&mut tx, id.0, "the job was cancelled", now).await?;
                sqlx::query("UPDATE jobs SET state = 'cancelled', error = 'cancelled by a user', finished_at = $2 WHERE id = $1")
                    .bind(id.0)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn fail_job(&self, id: JobId, error: &str, now: i64) -> StoreResult<()> {
                let mut tx = self.pool.begin().await?;
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

            async fn register_worker(&self, id: &WorkerId, address: &str, slots: u32, now: i64) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO workers (id, address, slots, state, registered_at, last_heartbeat) \
                     VALUES ($1, $2, $3, 'alive', $4, $4)",
                )
                .bind(&id.0)
                .bind(address)
                .bind(i64::from(slots))
                .bind(now)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn list_workers(&self) -> StoreResult<Vec<WorkerInfo>> {
                Ok(sqlx::query_as::<_, WorkerRow>(
                    "SELECT w.id, w.address, w.slots, w.state, w.last_heartbeat, \
                     (SELECT COUNT(*) FROM tasks t WHERE t.state = 'in_progress' \
                       AND (t.worker_id = w.id OR t.backup_worker_id = w.id)) AS running \
                     FROM workers w ORDER BY w.registered_at, w.id",
                )
                .fetch_all(&self.pool)
                .await?
                .into_iter()
                .map(Into::into)
                .collect())
            }

            async fn heartbeat(
                &self,
                worker: &WorkerId,
                running: &[AttemptId],
                now: i64,
                liveness: Liveness,
            ) -> StoreResult<Option<Vec<AttemptId>>> {
                let mut tx = self.pool.begin().await?;
                let alive = sqlx::query("UPDATE workers SET last_heartbeat = $2 WHERE id = $1 AND state = 'alive'")
                    .bind(&worker.0)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if alive == 0 {
                    tx.commit().await?;
                    return Ok(None);
                }
                let mut drop = Vec::new();
                for attempt in running {
                    // Renews the attempt's lease whether it runs as the
                    // task's attempt or as its backup.
                    let held = sqlx::query(
                        "UPDATE tasks SET \
                         lease_deadline = CASE WHEN attempt_id = $1 THEN $3 ELSE lease_deadline END, \
                         backup_deadline = CASE WHEN backup_attempt_id = $1 THEN $3 ELSE backup_deadline END \
                         WHERE state = 'in_progress' AND ((attempt_id = $1 AND worker_id = $2) \
                           OR (backup_attempt_id = $1 AND backup_worker_id = $2))",
                    )
                    .bind(attempt.0)
                    .bind(&worker.0)
                    .bind(now + liveness.lease_ms)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if held == 0 {
                        drop.push(*attempt);
                    }
                }
                tx.commit().await?;
                Ok(Some(drop))
            }

            async fn finished_jobs(&self, jobs: &[JobId]) -> StoreResult<Vec<JobId>> {
                let mut finished = Vec::new();
                for job in jobs {
                    let state: Option<String> = sqlx::query_scalar("SELECT state FROM jobs WHERE id = $1")
                        .bind(job.0)
                        .fetch_optional(&self.pool)
                        .await?;
                    let done = match state {
                        Some(state) => parse::<JobState>(&state)?.is_finished(),
                        None => true,
                    };
                    if done {
                        finished.push(*job);
                    }
                }
                Ok(finished)
            }

            async fn lease(&self, worker: &WorkerId, now: i64, liveness: Liveness) -> StoreResult<Option<Lease>> {
                let mut tx = self.pool.begin().await?;
                let state: Option<String> = sqlx::query_scalar("SELECT state FROM workers WHERE id = $1")
                    .bind(&worker.0)
                    .fetch_optional(&mut *tx)
                    .await?;
                if state.as_deref() != Some("alive") {
                    return Err(StoreError::Conflict(format!(
                        "worker {worker} is not registered, or was declared dead: register again"
                    )));
                }
                let jobs: Vec<(i64, String, String, String)> = sqlx::query_as(LEASE_JOBS).fetch_all(&mut *tx).await?;
                let mut picked: Option<(i64, i64, String, i32, String)> = None;
                let mut job_doc = None;
                for (job, kind, spec, token) in jobs {
                    picked = sqlx::query_as(LEASE_CANDIDATE)
                        .bind(&worker.0)
                        .bind(now + liveness.lease_ms)
                        .bind(now)
                        .bind(job)
                        .bind(kind)
                        .fetch_optional(&mut *tx)
                        .await?;
                    if picked.is_some() {
                        job_doc = Some((spec, token));
                        break;
                    }
                }
                let (picked, backup) = match picked {
                    Some(picked) => (picked, false),
                    None => {
                        let backup: Option<(i64, i64, String, i32, String)> = sqlx::query_as(BACKUP_CANDIDATE)
                            .bind(&worker.0)
                            .bind(now + liveness.lease_ms)
                            .bind(now)
                            .bind(BACKUP_MIN_RUNNING_MS)
                            .fetch_optional(&mut *tx)
                            .await?;
                        match backup {
                            Some(picked) => (picked, true),
                            None => return Ok(None),
                        }
                    }
                };
                let (task, job, kind, idx, input) = picked;
                let attempt: i64 = sqlx::query_scalar(
                    "INSERT INTO attempts (task_id, job_id, worker_id, backup, started_at, outcome) \
                     VALUES ($1, $2, $3, $4, $5, 'running') RETURNING id",
                )
                .bind(task)
                .bind(job)
                .bind(&worker.0)
                .bind(backup)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
                let set_attempt = if backup {
                    "UPDATE tasks SET backup_attempt_id = $2 WHERE id = $1"
                } else {
                    "UPDATE tasks SET attempt_id = $2 WHERE id = $1"
                };
                sqlx::query(set_attempt)
                    .bind(task)
                    .bind(attempt)
                    .execute(&mut *tx)
                    .await?;
                // Not the jobs row: see migration 0007 (lock order).
                sqlx::query("UPDATE job_turns SET last_leased_at = $2 WHERE job_id = $1")
                    .bind(job)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                let (spec, token): (String, String) = match job_doc {
                    Some(doc) => doc,
                    None => {
                        sqlx::query_as("SELECT spec, token FROM jobs WHERE id = $1")
                            .bind(job)
                            .fetch_one(&mut *tx)
                            .await?
                    }
                };
                let spec: JobSpec = serde_json::from_str(&spec)?;
                let kind = parse::<TaskKind>(&kind)?;
                // Only map tasks partition; a range partitioner's split
                // points (R - 1 keys) are read for them alone, not with
                // every job a lease looks at.
                let partitioner: Partitioner = match kind {
                    TaskKind::Map => {
                        let text: String = sqlx::query_scalar("SELECT partitioner FROM jobs WHERE id = $1")
                            .bind(job)
                            .fetch_one(&mut *tx)
                            .await?;
                        serde_json::from_str(&text)?
                    }
                    TaskKind::Reduce => Partitioner::Hash,
                };
                let work = match kind {
                    TaskKind::Map => {
                        let doc: MapInputDoc = serde_json::from_str(&input)?;
                        TaskWork::Map {
                            input: doc.path,
                            file_name: doc.file_name,
                            start: doc.start,
                            end: doc.end,
                            size: doc.size,
                            format: spec.format,
                        }
                    }
                    TaskKind::Reduce => {
                        let rows = sqlx::query_as::<_, SourceRow>(
                            "SELECT t.id, t.idx, t.attempt_id, t.output, w.address, w.id AS worker_id FROM tasks t \
                             JOIN workers w ON w.id = t.worker_id \
                             WHERE t.job_id = $1 AND t.kind = 'map' AND t.state = 'completed' ORDER BY t.idx",
                        )
                        .bind(job)
                        .fetch_all(&mut *tx)
                        .await?;
                        // INTEGER column: INT4 on Postgres, so read as i32.
                        let maps: i32 = sqlx::query_scalar("SELECT map_tasks FROM jobs WHERE id = $1")
                            .bind(job)
                            .fetch_one(&mut *tx)
                            .await?;
                        if rows.len() as i64 != i64::from(maps) {
                            // The job is between phases (a map output was just
                            // lost); the rollback leaves the task idle.
                            return Ok(None);
                        }
                        let mut sources = Vec::with_capacity(rows.len());
                        for row in rows {
                            let index: MapOutputIndex =
                                serde_json::from_str(row.output.as_deref().unwrap_or("null"))?;
                            let part = index.partitions.get(idx as usize).copied().ok_or_else(|| {
                                StoreError::Conflict(format!("map output of task {} has too few partitions", row.id))
                            })?;
                            let attempt = AttemptId(row.attempt_id.unwrap_or_default());
                            sources.push(MapSource {
                                map_task: TaskId(row.id),
                                map_index: row.idx as u32,
                                attempt,
                                url: format!("{}/shuffle/{}/{}", row.address.trim_end_matches('/'), job, attempt),
                                offset: part.offset,
                                length: part.length,
                                records: part.records,
                                worker: WorkerId(row.worker_id),
                                // Scoped by the API from the job's secret.
                                token: String::new(),
                            });
                        }
                        TaskWork::Reduce {
                            partition: idx as u32,
                            sources,
                        }
                    }
                };
                tx.commit().await?;
                Ok(Some(Lease {
                    attempt: AttemptId(attempt),
                    task: TaskId(task),
                    job: JobId(job),
                    kind,
                    index: idx as u32,
                    module: spec.module.clone(),
                    reducers: spec.reducers,
                    combine: spec.combine,
                    combine_buffer: spec.combine_buffer,
                    partitioner,
                    args: spec.args.clone(),
                    limits: spec.limits,
                    job_token: token,
                    work,
                }))
            }

            async fn complete(&self, attempt: AttemptId, report: &CompleteRequest, now: i64) -> StoreResult<Completion> {
                let mut tx = self.pool.begin().await?;
                if !$lock_job.is_empty() {
                    sqlx::query(LOCK_JOB_OF_ATTEMPT).bind(attempt.0).fetch_optional(&mut *tx).await?;
                }
                let row = sqlx::query_as::<_, CompletionRow>(COMPLETION_ROW)
                    .bind(attempt.0)
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or(StoreError::NotFound)?;
                let job_state = parse::<JobState>(&row.job_state)?;
                let is_primary = row.task_attempt == Some(attempt.0);
                let is_backup = row.backup_attempt == Some(attempt.0);
                // The other attempt of the task still running, if any.
                let rival = if is_primary { row.backup_attempt } else { row.task_attempt };
                let holds = row.task_state == TaskState::InProgress.as_str()
                    && (is_primary || is_backup)
                    && row.worker_id == report.worker_id.0
                    && !job_state.is_finished();
                if !holds {
                    // Only the attempt's own worker ends it, and only with its
                    // first report: a running attempt, or one whose lease was
                    // taken back before it reported (counters are set by a
                    // report and by nothing else).
                    if row.worker_id == report.worker_id.0 && !row.reported {
                        let why = "finished after another attempt took over or the job ended; result discarded";
                        end_attempt(&mut tx, attempt.0, AttemptOutcome::Superseded, Some(why), Some(report), now)
                            .await?;
                    }
                    tx.commit().await?;
                    // A repeated report of the committed attempt keeps its output.
                    let committed = row.task_state == TaskState::Completed.as_str() && is_primary;
                    let discard = if row.kind == TaskKind::Reduce.as_str() && !committed {
                        vec![staged_output_path(JobId(row.job_id), attempt, row.idx as u32)]
                    } else {
                        Vec::new()
                    };
                    return Ok(Completion::Refused { discard });
                }
                let spec: JobSpec = serde_json::from_str(&row.spec)?;
                let kind = parse::<TaskKind>(&row.kind)?;
                let task_name = format!("{} task {}", kind.as_str(), row.idx);
                let mut reduce_partition = None;
                let staged = |attempt: i64| staged_output_path(JobId(row.job_id), AttemptId(attempt), row.idx as u32);
                let mut discard = Vec::new();
                match (&report.result, kind) {
                    (AttemptResult::Map { .. }, TaskKind::Map) | (AttemptResult::Reduce { .. }, TaskKind::Reduce) => {
                        let output = match &report.result {
                            AttemptResult::Map { index } => {
                                index.check(spec.reducers).map_err(StoreError::Conflict)?;
                                serde_json::to_string(index)?
                            }
                            _ => {
                                reduce_partition = Some(row.idx as u32);
                                staged_output_path(JobId(row.job_id), attempt, row.idx as u32)
                            }
                        };
                        sqlx::query(
                            "UPDATE tasks SET state = 'completed', output = $2, lease_deadline = NULL, \
                             counted = $3, updated_at = $4, worker_id = $5, attempt_id = $6, \
                             backup_attempt_id = NULL, backup_worker_id = NULL, backup_deadline = NULL WHERE id = $1",
                        )
                        .bind(row.task_id)
                        .bind(output)
                        .bind(true)
                        .bind(now)
                        .bind(&report.worker_id.0)
                        .bind(attempt.0)
                        .execute(&mut *tx)
                        .await?;
                        if let Some(rival) = rival {
                            let why = "another attempt of this task finished first";
                            end_attempt(&mut tx, rival, AttemptOutcome::Superseded, Some(why), None, now).await?;
                            if kind == TaskKind::Reduce {
                                discard.push(staged(rival));
                            }
                        }
                        end_attempt(&mut tx, attempt.0, AttemptOutcome::Succeeded, None, Some(report), now).await?;
                        if !row.counted {
                            add_counters(&mut tx, row.job_id, &report.counters).await?;
                        }
                        let left: i64 = sqlx::query_scalar(
                            "SELECT COUNT(*) FROM (SELECT 1 FROM tasks WHERE job_id = $1 AND kind = $2 \
                             AND state IN ('idle', 'in_progress', 'failed') LIMIT 1) AS unfinished",
                        )
                        .bind(row.job_id)
                        .bind(kind.as_str())
                        .fetch_one(&mut *tx)
                        .await?;
                        if left == 0 {
                            let (from, to) = match kind {
                                TaskKind::Map => ("mapping", "reducing"),
                                TaskKind::Reduce => ("reducing", "succeeded"),
                            };
                            sqlx::query(
                                "UPDATE jobs SET state = $2, finished_at = CASE WHEN $2 = 'succeeded' THEN $4 ELSE NULL END \
                                 WHERE id = $1 AND state = $3",
                            )
                            .bind(row.job_id)
                            .bind(to)
                            .bind(from)
                            .bind(now)
                            .execute(&mut *tx)
                            .await?;
                            if kind == TaskKind::Reduce {
                                // The last reduce may finish while a lost map
                                // runs again; every output is in, so the job is.
                                sqlx::query(
                                    "UPDATE jobs SET state = 'succeeded', finished_at = $2 \
                                     WHERE id = $1 AND state = 'mapping'",
                                )
                                .bind(row.job_id)
                                .bind(now)
                                .execute(&mut *tx)
                                .await?;
                            }
                        }
                    }
                    (AttemptResult::Map { .. } | AttemptResult::Reduce { .. }, _) => {
                        return Err(StoreError::Conflict(format!("a {} task cannot report that result", kind.as_str())));
                    }
                    (AttemptResult::Failed(failure), _) => {
                        let (outcome, message, guest) = match failure {
                            Failure::Guest { message } => (AttemptOutcome::Failed, message.clone(), true),
                            Failure::Host { message } => (AttemptOutcome::Lost, message.clone(), false),
                            Failure::FetchFailed { map_task, message } => {
                                let belongs: Option<i64> =
                                    sqlx::query_scalar("SELECT id FROM tasks WHERE id = $1 AND job_id = $2")
                                        .bind(map_task.0)
                                        .bind(row.job_id)
                                        .fetch_optional(&mut *tx)
                                        .await?;
                                if belongs.is_some() {
                                    // Only an output this attempt could have
                                    // been given: one completed before it began.
                                    let started: i64 = sqlx::query_scalar("SELECT started_at FROM attempts WHERE id = $1")
                                        .bind(attempt.0)
                                        .fetch_one(&mut *tx)
                                        .await?;
                                    lose_map_output(&mut tx, map_task.0, started, now).await?;
                                }
                                (AttemptOutcome::Lost, format!("fetching map output of task {map_task}: {message}"), false)
                            }
                        };
                        end_attempt(&mut tx, attempt.0, outcome, Some(&message), Some(report), now).await?;
                        if kind == TaskKind::Reduce {
                            discard.push(staged(attempt.0));
                        }
                        let failures = row.failures + i32::from(guest);
                        let host_failures = row.host_failures + i32::from(!guest);
                        let give_up = failures >= spec.max_attempts as i32 || host_failures >= MAX_HOST_FAILURES;
                        let state = if give_up { TaskState::Failed } else { TaskState::Idle };
                        let update = match (give_up, rival.is_some(), is_primary) {
                            // The backup carries on as the task's attempt.
                            (false, true, true) => {
                                "UPDATE tasks SET failures = $3, host_failures = $4, updated_at = $5, \
                                 attempt_id = backup_attempt_id, worker_id = backup_worker_id, \
                                 lease_deadline = backup_deadline, backup_attempt_id = NULL, backup_worker_id = NULL, \
                                 backup_deadline = NULL WHERE id = $1 AND $2 = $2"
                            }
                            // The primary carries on; the backup slot frees up.
                            (false, true, false) => {
                                "UPDATE tasks SET failures = $3, host_failures = $4, updated_at = $5, \
                                 backup_attempt_id = NULL, backup_worker_id = NULL, backup_deadline = NULL \
                                 WHERE id = $1 AND $2 = $2"
                            }
                            _ => {
                                "UPDATE tasks SET state = $2, failures = $3, host_failures = $4, worker_id = NULL, \
                                 attempt_id = NULL, lease_deadline = NULL, backup_attempt_id = NULL, \
                                 backup_worker_id = NULL, backup_deadline = NULL, updated_at = $5 WHERE id = $1"
                            }
                        };
                        sqlx::query(update)
                        .bind(row.task_id)
                        .bind(state.as_str())
                        .bind(failures)
                        .bind(host_failures)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                        if give_up {
                            let error = if guest {
                                format!("{task_name} failed {failures} times; last error: {message}")
                            } else {
                                format!("{task_name} could not run ({host_failures} host failures); last error: {message}")
                            };
                            fail_job_tx(&mut tx, row.job_id, &error, now).await?;
                        }
                    }
                }
                tx.commit().await?;
                Ok(Completion::Accepted {
                    job: JobId(row.job_id),
                    reduce_partition,
                    discard,
                })
            }

            async fn expire(&self, now: i64, liveness: Liveness) -> StoreResult<u64> {
                sqlx::query("UPDATE workers SET state = 'dead' WHERE state = 'alive' AND last_heartbeat < $1")
                    .bind(now - liveness.dead_after_ms)
                    .execute(&self.pool)
                    .await?;
                let stale: Vec<(i64, i64, Option<i64>, bool)> = sqlx::query_as(
                    "SELECT t.id, t.job_id, t.attempt_id, t.lease_deadline < $1 AS expired FROM tasks t \
                     JOIN jobs j ON j.id = t.job_id \
                     WHERE t.state = 'in_progress' AND j.state IN ('mapping', 'reducing') AND (t.lease_deadline < $1 \
                       OR t.worker_id IN (SELECT id FROM workers WHERE state = 'dead'))",
                )
                .bind(now)
                .fetch_all(&self.pool)
                .await?;
                let mut requeued = 0;
                let stale_backups: Vec<(i64, i64, i64)> = sqlx::query_as(
                    "SELECT t.id, t.job_id, t.backup_attempt_id FROM tasks t JOIN jobs j ON j.id = t.job_id \
                     WHERE t.state = 'in_progress' AND t.backup_attempt_id IS NOT NULL \
                     AND j.state IN ('mapping', 'reducing') AND (t.backup_deadline < $1 \
                       OR t.backup_worker_id IN (SELECT id FROM workers WHERE state = 'dead'))",
                )
                .bind(now)
                .fetch_all(&self.pool)
                .await?;
                for (task, job, attempt) in &stale_backups {
                    let mut tx = self.pool.begin().await?;
                    lock_job(&mut tx, *job).await?;
                    let taken = sqlx::query(
                        "UPDATE tasks SET backup_attempt_id = NULL, backup_worker_id = NULL, backup_deadline = NULL \
                         WHERE id = $1 AND state = 'in_progress' AND backup_attempt_id = $2",
                    )
                    .bind(task)
                    .bind(attempt)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if taken > 0 {
                        end_attempt(&mut tx, *attempt, AttemptOutcome::Lost, Some("backup attempt lost"), None, now).await?;
                    }
                    tx.commit().await?;
                }
                // One transaction per task, each locking its job row first:
                // the same order as `complete`, so the two never deadlock,
                // and a completion that wins the race is left alone.
                for (task, job, attempt, expired) in &stale {
                    let mut tx = self.pool.begin().await?;
                    lock_job(&mut tx, *job).await?;
                    // A running backup takes over; otherwise the task waits again.
                    let promoted = sqlx::query(
                        "UPDATE tasks SET attempt_id = backup_attempt_id, worker_id = backup_worker_id, \
                         lease_deadline = backup_deadline, backup_attempt_id = NULL, backup_worker_id = NULL, \
                         backup_deadline = NULL, updated_at = $3 \
                         WHERE id = $1 AND state = 'in_progress' AND attempt_id = $2 AND backup_attempt_id IS NOT NULL",
                    )
                    .bind(task)
                    .bind(attempt)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    let taken = promoted
                        + sqlx::query(
                            "UPDATE tasks SET state = 'idle', worker_id = NULL, attempt_id = NULL, lease_deadline = NULL, \
                             updated_at = $3 WHERE id = $1 AND state = 'in_progress' AND attempt_id = $2",
                        )
                        .bind(task)
                        .bind(attempt)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    if taken > 0 {
                        if let Some(attempt) = attempt {
                            let why = if *expired { "lease expired (the worker stopped renewing it)" } else { "worker lost" };
                            end_attempt(&mut tx, *attempt, AttemptOutcome::Lost, Some(why), None, now).await?;
                        }
                        requeued += 1;
                    }
                    tx.commit().await?;
                }
                let lost: Vec<(i64, i64)> = sqlx::query_as(
                    "SELECT t.id, t.job_id FROM tasks t JOIN jobs j ON j.id = t.job_id \
                     WHERE t.kind = 'map' AND t.state = 'completed' AND j.state IN ('mapping', 'reducing') \
                     AND t.worker_id IN (SELECT id FROM workers WHERE state = 'dead')",
                )
                .fetch_all(&self.pool)
                .await?;
                for (task, job) in lost {
                    let mut tx = self.pool.begin().await?;
                    lock_job(&mut tx, job).await?;
                    if lose_map_output(&mut tx, task, i64::MAX, now).await? {
                        requeued += 1;
                    }
                    tx.commit().await?;
                }
                Ok(requeued)
            }
        }
    };
}

pub(super) use store_impl;

/// Where a reduce attempt's output is staged in the blob store. The job's
/// visible output for a partition is the staged file of the attempt the
/// store accepted, so publishing it is the same commit that completes the
/// task: exactly one attempt's output is ever visible.
pub fn staged_output_path(job: JobId, attempt: AttemptId, partition: u32) -> String {
    format!("jobs/{job}/attempts/{attempt}/part-r-{partition:05}")
}
