//! Leasing, completing and expiring tasks: the database side of the task
//! state machine in [`super::transition`]. Each step is one transaction:
//! it locks what it changes, reads the task row into a
//! [`Task`](super::transition::Task), applies one event and writes the row
//! back with `write_task`, the one statement that changes a task's holders.
//!
//! # Lock order (Postgres; SQLite has one writer and needs none)
//!
//! 1. the job's row (`FOR NO KEY UPDATE`), taken by whatever may change the
//!    job: a failure report, expiry, cancel, fail, and the phase check
//!    after a success;
//! 2. task rows, by id (`FOR NO KEY UPDATE OF t`); a success report locks
//!    only its task (completions of one job run in parallel), a heartbeat
//!    only its attempts' tasks, and a lease skips task rows another
//!    transaction holds (`SKIP LOCKED`) and writes no job row;
//! 3. attempt rows, then counters.
//!
//! Inserting an attempt takes key-share locks on its job and task, which
//! the no-key-update locks above do not block.
//!
//! A success never moves its job on in its own transaction: two
//! completions of a phase's last two tasks could each see the other still
//! running. Instead, after it commits, a success that finds no task of its
//! phase idle checks the job in a second transaction (`advance_job`, which
//! locks the job first). Every task unfinished at that point completes
//! later and checks again, so the last completion to commit sees every
//! task done. (SQLite has one writer, so what a completion reads is
//! still true when it commits, and it checks in its own transaction.) The expiry pass runs the same check over every
//! running job, so a coordinator that dies between the two commits leaves
//! no job stuck.

use async_trait::async_trait;
use protocol::worker_api::{CompleteRequest, Lease};
use protocol::{AttemptId, JobSpec, Partitioner};

use super::{Completion, Liveness, StoreResult};

/// What never changes about a job once it is submitted, cached per job so
/// leases and completions neither read nor parse it again.
#[derive(Debug)]
pub(super) struct JobStatics {
    pub spec: JobSpec,
    pub token: String,
    pub partitioner: Partitioner,
    pub maps: i64,
}

/// The [`JobStatics`] of recent jobs. Shared by every connection of one
/// coordinator; safe across coordinators because the data never changes.
#[derive(Default, Clone)]
pub(super) struct JobCache(
    std::sync::Arc<std::sync::Mutex<std::collections::HashMap<i64, std::sync::Arc<JobStatics>>>>,
);

impl JobCache {
    /// Most jobs kept; past it the cache starts over (a lease reads its
    /// job again, once).
    const CAPACITY: usize = 1024;

    pub(super) fn get(&self, job: i64) -> Option<std::sync::Arc<JobStatics>> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&job)
            .cloned()
    }

    pub(super) fn put(&self, job: i64, statics: JobStatics) -> std::sync::Arc<JobStatics> {
        let statics = std::sync::Arc::new(statics);
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= Self::CAPACITY {
            map.clear();
        }
        map.insert(job, statics.clone());
        statics
    }
}

/// Leasing, completing and expiring tasks.
#[async_trait]
pub trait Scheduling: Send + Sync + 'static {
    /// Leases the next task to `worker`, if one is leasable: map tasks of
    /// mapping jobs and reduce tasks of reducing jobs, jobs taking turns;
    /// with nothing to start, a backup attempt of a straggler.
    async fn lease(
        &self,
        worker: &protocol::WorkerId,
        now: i64,
        liveness: Liveness,
    ) -> StoreResult<Option<Lease>>;

    /// Applies an attempt's end, only if it still holds its lease.
    async fn complete(
        &self,
        attempt: AttemptId,
        report: &CompleteRequest,
        now: i64,
    ) -> StoreResult<Completion>;

    /// Declares silent workers dead and takes back expired leases: their
    /// tasks become idle again (or their backup carries on), and so do the
    /// completed map tasks of unfinished jobs whose output lived on a dead
    /// worker. Returns how many tasks went back to idle.
    async fn expire(&self, now: i64, liveness: Liveness) -> StoreResult<u64>;
}

/// The transaction helpers every part of the store shares, and
/// [`Scheduling`] for `$store` on database `$db` (see `store_impl!`).
macro_rules! scheduling_impl {
    ($store:ident, $db:ty, $tx:ty, $lock_job:expr, $lock_task:expr, $skip_locked:expr) => {
        type Tx = $tx;

        /// Jobs with a task to start, the one with the fewest tasks running
        /// first, then the oldest: running jobs share the workers.
        macro_rules! lease_jobs {
            ($limit:literal) => {
                concat!(
                    "SELECT j.id, CASE WHEN j.state = 'mapping' THEN 'map' ELSE 'reduce' END AS kind \
                     FROM jobs j WHERE j.state IN ('mapping', 'reducing') AND EXISTS (SELECT 1 FROM tasks t \
                       WHERE t.job_id = j.id AND t.state = 'idle' \
                       AND t.kind = CASE WHEN j.state = 'mapping' THEN 'map' ELSE 'reduce' END) \
                     ORDER BY (SELECT COUNT(*) FROM tasks r WHERE r.state = 'in_progress' AND r.job_id = j.id), j.id \
                     LIMIT ",
                    $limit
                )
            };
        }
        const LEASE_JOBS: &str = lease_jobs!("4");

        /// The common lease in one statement: the first job's lowest idle
        /// task, if the worker is alive. Nothing when the worker is not,
        /// there is nothing to start, or (Postgres) every idle task of that
        /// job is being leased by others; the lease then looks closer.
        const LEASE_FAST: &str = concat!(
            "WITH job AS (",
            lease_jobs!("1"),
            ") SELECT ",
            slot_columns!(),
            " FROM tasks t WHERE t.job_id = (SELECT id FROM job) AND t.kind = (SELECT kind FROM job) \
             AND t.state = 'idle' AND EXISTS (SELECT 1 FROM workers WHERE id = $1 AND state = 'alive') \
             ORDER BY t.idx LIMIT 1 ",
            $skip_locked
        );

        /// The job's lowest idle task of the phase, skipping rows another
        /// transaction is leasing (Postgres).
        const LEASE_CANDIDATE: &str = concat!(
            "SELECT ",
            slot_columns!(),
            " FROM tasks t WHERE t.job_id = $1 AND t.kind = $2 AND t.state = 'idle' ORDER BY t.idx LIMIT 1 ",
            $skip_locked
        );

        /// A straggler to back up: a running task of a phase with nothing
        /// left to start, running on another worker for longer than
        /// `BACKUP_MIN_RUNNING_MS` and than twice its finished peers'
        /// average, and without a backup yet. The averages are computed
        /// once per (job, phase) in `peers`, not once per candidate: a
        /// correlated average made the query quadratic in the job's tasks.
        const BACKUP_CANDIDATE: &str = concat!(
            "WITH peers AS (SELECT a2.job_id, t2.kind, AVG(a2.ended_at - a2.started_at) AS avg_ms \
               FROM attempts a2 JOIN tasks t2 ON t2.id = a2.task_id JOIN jobs j2 ON j2.id = a2.job_id \
               WHERE a2.outcome = 'succeeded' AND j2.backups AND j2.state IN ('mapping', 'reducing') \
               GROUP BY a2.job_id, t2.kind) \
             SELECT ",
            slot_columns!(),
            " FROM tasks t JOIN jobs j ON j.id = t.job_id JOIN attempts a ON a.id = t.attempt_id \
               JOIN peers p ON p.job_id = t.job_id AND p.kind = t.kind \
             WHERE t.state = 'in_progress' AND t.backup_worker_id IS NULL AND t.worker_id <> $1 AND j.backups \
               AND ((t.kind = 'map' AND j.state = 'mapping') OR (t.kind = 'reduce' AND j.state = 'reducing')) \
               AND NOT EXISTS (SELECT 1 FROM tasks i WHERE i.job_id = t.job_id AND i.kind = t.kind AND i.state = 'idle') \
               AND $2 - a.started_at > $3 \
               AND $2 - a.started_at > 2 * p.avg_ms \
             ORDER BY a.started_at LIMIT 1 ",
            $skip_locked
        );

        /// Whether job `$job` has a task of kind `$kind` not completed yet.
        /// A task that failed for good failed its job in the same
        /// transaction, so a running job's unfinished tasks are idle or in
        /// progress. One equality per state, so each is an index lookup
        /// (`tasks_idle`, `tasks_by_job_phase`): with `state IN (...)`
        /// Postgres walked the job's tasks in index order, completed ones
        /// first.
        macro_rules! unfinished {
            ($job:literal, $kind:literal) => {
                concat!(
                    "(EXISTS (SELECT 1 FROM tasks u WHERE u.job_id = ", $job, " AND u.kind = ", $kind,
                    " AND u.state = 'idle') OR EXISTS (SELECT 1 FROM tasks u WHERE u.job_id = ", $job,
                    " AND u.kind = ", $kind, " AND u.state = 'in_progress'))"
                )
            };
        }

        /// The completion's row; `$waiting` is whether a task of the same
        /// phase is idle, read only where it stays true until the commit
        /// (one writer), else left out.
        macro_rules! completion_row {
            ($waiting:literal) => {
                concat!(
                    "SELECT ",
                    slot_columns!(),
                    ", a.worker_id AS attempt_worker, a.started_at, a.counters IS NOT NULL AS reported, \
                     j.state AS job_state, ",
                    $waiting,
                    " AS waiting FROM attempts a JOIN tasks t ON t.id = a.task_id JOIN jobs j ON j.id = a.job_id \
                     WHERE a.id = $1 ",
                    $lock_task
                )
            };
        }
        const COMPLETION_ROW: &str = if $store::SERIAL {
            completion_row!(
                "EXISTS (SELECT 1 FROM tasks o WHERE o.job_id = t.job_id AND o.kind = t.kind AND o.state = 'idle')"
            )
        } else {
            completion_row!("FALSE")
        };

        const LOCK_JOB_OF_ATTEMPT: &str = concat!(
            "SELECT id FROM jobs WHERE id = (SELECT job_id FROM attempts WHERE id = $1) ",
            $lock_job
        );

        /// Locks a job's row (Postgres) before changing its tasks.
        async fn lock_job(tx: &mut Tx, job: i64) -> StoreResult<()> {
            if $lock_job.is_empty() {
                return Ok(());
            }
            sqlx::query(concat!("SELECT id FROM jobs WHERE id = $1 ", $lock_job))
                .bind(job)
                .fetch_optional(&mut **tx)
                .await?;
            Ok(())
        }

        /// Reads (and on Postgres locks) one task row.
        async fn read_task(tx: &mut Tx, task: i64) -> StoreResult<Option<SlotRow>> {
            Ok(sqlx::query_as::<_, SlotRow>(concat!("SELECT ", slot_columns!(), " FROM tasks t WHERE t.id = $1 ", $lock_task))
                .bind(task)
                .fetch_optional(&mut **tx)
                .await?)
        }

        /// Writes back what the state machine owns of a task's row: the
        /// one statement that changes who holds a task.
        async fn write_task(tx: &mut Tx, id: i64, task: &transition::Task) -> StoreResult<()> {
            let c = task.columns();
            sqlx::query(
                "UPDATE tasks SET state = $2, attempt_id = $3, worker_id = $4, lease_deadline = $5, \
                 backup_attempt_id = $6, backup_worker_id = $7, backup_deadline = $8, output = $9, \
                 failures = $10, host_failures = $11, attempts = $12, counted = $13, updated_at = $14 WHERE id = $1",
            )
            .bind(id)
            .bind(c.state.as_str())
            .bind(c.attempt_id)
            .bind(c.worker_id)
            .bind(c.lease_deadline)
            .bind(c.backup_attempt_id)
            .bind(c.backup_worker_id)
            .bind(c.backup_deadline)
            .bind(c.output)
            .bind(task.failures)
            .bind(task.host_failures)
            .bind(task.attempts)
            .bind(task.counted)
            .bind(task.updated_at)
            .execute(&mut **tx)
            .await?;
            Ok(())
        }

        /// The job's immutable part, from the cache or read once.
        async fn job_statics(cache: &JobCache, tx: &mut Tx, job: i64) -> StoreResult<std::sync::Arc<JobStatics>> {
            if let Some(statics) = cache.get(job) {
                return Ok(statics);
            }
            let (spec, token, partitioner, maps): (String, String, String, i32) =
                sqlx::query_as("SELECT spec, token, partitioner, map_tasks FROM jobs WHERE id = $1")
                    .bind(job)
                    .fetch_one(&mut **tx)
                    .await?;
            Ok(cache.put(
                job,
                JobStatics {
                    spec: serde_json::from_str(&spec)?,
                    token,
                    partitioner: serde_json::from_str(&partitioner)?,
                    maps: i64::from(maps),
                },
            ))
        }

        async fn add_counters(tx: &mut Tx, job: i64, counters: &Counters) -> StoreResult<()> {
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

        /// Sends completed map task `task` of `job` back to idle because
        /// its output is gone, unless the output is newer than `seen_by`
        /// (see `Task::lose_output`), and the job back to mapping.
        async fn lose_map_output(tx: &mut Tx, task: i64, job: i64, seen_by: i64, now: i64) -> StoreResult<bool> {
            let Some(row) = read_task(tx, task).await? else {
                return Ok(false);
            };
            if row.job_id != job || row.task_kind()? != TaskKind::Map {
                return Ok(false);
            }
            let mut state = row.task()?;
            if !state.lose_output(seen_by, now) {
                return Ok(false);
            }
            write_task(tx, task, &state).await?;
            sqlx::query("UPDATE jobs SET state = 'mapping' WHERE id = $1 AND state = 'reducing'")
                .bind(job)
                .execute(&mut **tx)
                .await?;
            Ok(true)
        }

        async fn end_attempt(
            tx: &mut Tx,
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
        /// are refused. The caller holds the job's lock.
        async fn release_job(tx: &mut Tx, job: i64, why: &str, now: i64) -> StoreResult<()> {
            let running = sqlx::query_as::<_, SlotRow>(concat!(
                "SELECT ",
                slot_columns!(),
                " FROM tasks t WHERE t.job_id = $1 AND t.state = 'in_progress' ORDER BY t.id ",
                $lock_task
            ))
            .bind(job)
            .fetch_all(&mut **tx)
            .await?;
            for row in running {
                let mut task = row.task()?;
                task.release(now);
                write_task(tx, row.id, &task).await?;
            }
            sqlx::query(
                "UPDATE attempts SET outcome = 'superseded', error = $2, ended_at = $3 \
                 WHERE job_id = $1 AND outcome = 'running'",
            )
            .bind(job)
            .bind(why)
            .bind(now)
            .execute(&mut **tx)
            .await?;
            Ok(())
        }

        /// Moves a running job on when its tasks say so
        /// (`transition::next_job_state`), under the job's lock.
        async fn advance_job(tx: &mut Tx, job: i64, now: i64) -> StoreResult<()> {
            let row: Option<(String, bool, bool)> = sqlx::query_as(concat!(
                "SELECT j.state, ",
                unfinished!("j.id", "'map'"),
                ", ",
                unfinished!("j.id", "'reduce'"),
                " FROM jobs j WHERE j.id = $1 ",
                $lock_job
            ))
            .bind(job)
            .fetch_optional(&mut **tx)
            .await?;
            let Some((state, maps_left, reduces_left)) = row else {
                return Ok(());
            };
            if let Some(next) = transition::next_job_state(parse(&state)?, maps_left, reduces_left) {
                sqlx::query("UPDATE jobs SET state = $2, finished_at = $3 WHERE id = $1")
                    .bind(job)
                    .bind(next.as_str())
                    .bind(next.is_finished().then_some(now))
                    .execute(&mut **tx)
                    .await?;
            }
            Ok(())
        }

        async fn fail_job_tx(tx: &mut Tx, job: i64, error: &str, now: i64) -> StoreResult<()> {
            lock_job(tx, job).await?;
            release_job(tx, job, "the job failed", now).await?;
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

        /// Where a reduce task reads its partition: every map's output, or
        /// `None` while a lost map output runs again.
        async fn map_sources(tx: &mut Tx, job: i64, maps: i64, partition: u32) -> StoreResult<Option<Vec<MapSource>>> {
            let rows = sqlx::query_as::<_, SourceRow>(
                "SELECT t.id, t.idx, t.attempt_id, t.output, w.address, w.id AS worker_id FROM tasks t \
                 JOIN workers w ON w.id = t.worker_id \
                 WHERE t.job_id = $1 AND t.kind = 'map' AND t.state = 'completed' ORDER BY t.idx",
            )
            .bind(job)
            .fetch_all(&mut **tx)
            .await?;
            if rows.len() as i64 != maps {
                return Ok(None);
            }
            let mut sources = Vec::with_capacity(rows.len());
            for row in rows {
                let index: MapOutputIndex = serde_json::from_str(row.output.as_deref().unwrap_or("null"))?;
                let part = index.partitions.get(partition as usize).copied().ok_or_else(|| {
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
            Ok(Some(sources))
        }

        #[async_trait::async_trait]
        impl $crate::store::Scheduling for $store {
            async fn lease(&self, worker: &WorkerId, now: i64, liveness: Liveness) -> StoreResult<Option<Lease>> {
                let mut tx = self.begin().await?;
                let mut picked = sqlx::query_as::<_, SlotRow>(LEASE_FAST)
                    .bind(&worker.0)
                    .fetch_optional(&mut *tx)
                    .await?;
                if picked.is_none() {
                    let state: Option<String> = sqlx::query_scalar("SELECT state FROM workers WHERE id = $1")
                        .bind(&worker.0)
                        .fetch_optional(&mut *tx)
                        .await?;
                    if state.as_deref() != Some("alive") {
                        return Err(StoreError::Conflict(format!(
                            "worker {worker} is not registered, or was declared dead: register again"
                        )));
                    }
                }
                let jobs: Vec<(i64, String)> = if picked.is_none() {
                    sqlx::query_as(LEASE_JOBS).fetch_all(&mut *tx).await?
                } else {
                    Vec::new()
                };
                for (job, kind) in jobs {
                    picked = sqlx::query_as::<_, SlotRow>(LEASE_CANDIDATE)
                        .bind(job)
                        .bind(kind)
                        .fetch_optional(&mut *tx)
                        .await?;
                    if picked.is_some() {
                        break;
                    }
                }
                let backup = picked.is_none();
                if backup {
                    picked = sqlx::query_as::<_, SlotRow>(BACKUP_CANDIDATE)
                        .bind(&worker.0)
                        .bind(now)
                        .bind(BACKUP_MIN_RUNNING_MS)
                        .fetch_optional(&mut *tx)
                        .await?;
                }
                let Some(row) = picked else {
                    return Ok(None);
                };
                let statics = job_statics(&self.jobs, &mut tx, row.job_id).await?;
                let kind = row.task_kind()?;
                let (work, partitioner) = match kind {
                    TaskKind::Map => {
                        let doc: MapInputDoc = serde_json::from_str(&row.input)?;
                        let work = TaskWork::Map {
                            input: doc.path,
                            file_name: doc.file_name,
                            start: doc.start,
                            end: doc.end,
                            size: doc.size,
                            format: statics.spec.format,
                        };
                        (work, statics.partitioner.clone())
                    }
                    TaskKind::Reduce => {
                        let partition = row.idx as u32;
                        let Some(sources) = map_sources(&mut tx, row.job_id, statics.maps, partition).await? else {
                            // The job is between phases (a map output was
                            // just lost); the rollback leaves the task idle.
                            return Ok(None);
                        };
                        (TaskWork::Reduce { partition, sources }, Partitioner::Hash)
                    }
                };
                let attempt: i64 = sqlx::query_scalar(
                    "INSERT INTO attempts (task_id, job_id, worker_id, backup, started_at, outcome) \
                     VALUES ($1, $2, $3, $4, $5, 'running') RETURNING id",
                )
                .bind(row.id)
                .bind(row.job_id)
                .bind(&worker.0)
                .bind(backup)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
                let holder = transition::Holder {
                    attempt,
                    worker: worker.0.clone(),
                    deadline: now + liveness.lease_ms,
                };
                let mut task = row.task()?;
                let taken = if backup { task.add_backup(holder) } else { task.lease(holder, now) };
                if !taken {
                    // The candidate queries pick only tasks the event
                    // applies to; the rollback undoes the attempt.
                    return Err(StoreError::Conflict(format!("task {} cannot be leased now", row.id)));
                }
                write_task(&mut tx, row.id, &task).await?;
                tx.commit().await?;
                let spec = &statics.spec;
                Ok(Some(Lease {
                    attempt: AttemptId(attempt),
                    task: TaskId(row.id),
                    job: JobId(row.job_id),
                    kind,
                    index: row.idx as u32,
                    module: spec.module.clone(),
                    reducers: spec.reducers,
                    combine: spec.combine,
                    combine_buffer: spec.combine_buffer,
                    partitioner,
                    args: spec.args.clone(),
                    limits: spec.limits,
                    job_token: statics.token.clone(),
                    work,
                }))
            }

            async fn complete(&self, attempt: AttemptId, report: &CompleteRequest, now: i64) -> StoreResult<Completion> {
                let mut tx = self.begin().await?;
                // Only a failure may change the job in this transaction (see
                // the lock order above).
                let failed = matches!(report.result, AttemptResult::Failed(_));
                if failed && !$lock_job.is_empty() {
                    sqlx::query(LOCK_JOB_OF_ATTEMPT).bind(attempt.0).fetch_optional(&mut *tx).await?;
                }
                let row = sqlx::query_as::<_, CompletionRow>(COMPLETION_ROW)
                    .bind(attempt.0)
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or(StoreError::NotFound)?;
                let job = row.task.job_id;
                let job_state = parse::<JobState>(&row.job_state)?;
                let kind = row.task.task_kind()?;
                let index = row.task.idx as u32;
                let staged = |attempt: i64| staged_output_path(JobId(job), AttemptId(attempt), index);
                let mut task = row.task.task()?;
                let worker = report.worker_id.0.as_str();
                if !task.may_end(attempt.0, worker, !job_state.is_finished()) {
                    // Only the attempt's own worker ends it, and only with
                    // its first report: a running attempt, or one whose
                    // lease was taken back before it reported.
                    if row.attempt_worker == worker && !row.reported {
                        let why = "finished after another attempt took over or the job ended; result discarded";
                        end_attempt(&mut tx, attempt.0, AttemptOutcome::Superseded, Some(why), Some(report), now)
                            .await?;
                    }
                    tx.commit().await?;
                    // A repeated report of the committed attempt keeps its output.
                    let committed = matches!(task.slots, transition::Slots::Completed { attempt: a, .. } if a == attempt.0);
                    let discard = if kind == TaskKind::Reduce && !committed { vec![staged(attempt.0)] } else { Vec::new() };
                    return Ok(Completion::Refused { discard });
                }
                let statics = job_statics(&self.jobs, &mut tx, job).await?;
                let spec = &statics.spec;
                let mut discard = Vec::new();
                let mut reduce_partition = None;
                let mut advance = false;
                let (verdict, failure) = match (&report.result, kind) {
                    (AttemptResult::Map { index }, TaskKind::Map) => {
                        index.check(spec.reducers).map_err(StoreError::Conflict)?;
                        let output = serde_json::to_string(index)?;
                        (task.succeed(attempt.0, worker, true, output, now), None)
                    }
                    (AttemptResult::Reduce { .. }, TaskKind::Reduce) => {
                        reduce_partition = Some(index);
                        (task.succeed(attempt.0, worker, true, staged(attempt.0), now), None)
                    }
                    (AttemptResult::Map { .. } | AttemptResult::Reduce { .. }, _) => {
                        return Err(StoreError::Conflict(format!("a {} task cannot report that result", kind.as_str())));
                    }
                    (AttemptResult::Failed(failure), _) => {
                        let (outcome, message, failure_kind) = match failure {
                            Failure::Guest { message } => (AttemptOutcome::Failed, message.clone(), transition::FailureKind::Guest),
                            Failure::Host { message } => (AttemptOutcome::Lost, message.clone(), transition::FailureKind::Host),
                            Failure::FetchFailed { map_task, message } => {
                                // Only an output this attempt could have been
                                // given: one completed before it began.
                                lose_map_output(&mut tx, map_task.0, job, row.started_at, now).await?;
                                let message = format!("fetching map output of task {map_task}: {message}");
                                (AttemptOutcome::Lost, message, transition::FailureKind::Host)
                            }
                        };
                        let verdict = task.fail(
                            attempt.0,
                            worker,
                            true,
                            failure_kind,
                            spec.max_attempts as i32,
                            MAX_HOST_FAILURES,
                            now,
                        );
                        (verdict, Some((outcome, message, failure_kind)))
                    }
                };
                write_task(&mut tx, row.task.id, &task).await?;
                let task_name = format!("{} task {}", kind.as_str(), index);
                match (verdict, failure) {
                    (transition::Verdict::Committed { superseded, add_counters: add }, _) => {
                        if let Some(rival) = superseded {
                            let why = "another attempt of this task finished first";
                            end_attempt(&mut tx, rival, AttemptOutcome::Superseded, Some(why), None, now).await?;
                            if kind == TaskKind::Reduce {
                                discard.push(staged(rival));
                            }
                        }
                        end_attempt(&mut tx, attempt.0, AttemptOutcome::Succeeded, None, Some(report), now).await?;
                        if add {
                            add_counters(&mut tx, job, &report.counters).await?;
                        }
                        if Self::SERIAL {
                            // One writer: what this change read is still
                            // true at its commit.
                            if !row.waiting {
                                advance_job(&mut tx, job, now).await?;
                            }
                        } else {
                            advance = true;
                        }
                    }
                    (transition::Verdict::Failed { give_up, failures, host_failures }, Some((outcome, message, failure_kind))) => {
                        end_attempt(&mut tx, attempt.0, outcome, Some(&message), Some(report), now).await?;
                        if kind == TaskKind::Reduce {
                            discard.push(staged(attempt.0));
                        }
                        if give_up {
                            let error = match failure_kind {
                                transition::FailureKind::Guest => {
                                    format!("{task_name} failed {failures} times; last error: {message}")
                                }
                                transition::FailureKind::Host => {
                                    format!("{task_name} could not run ({host_failures} host failures); last error: {message}")
                                }
                            };
                            fail_job_tx(&mut tx, job, &error, now).await?;
                        }
                    }
                    // `may_end` held, so the event applied.
                    (verdict, _) => {
                        return Err(StoreError::Conflict(format!("attempt {attempt}: unexpected verdict {verdict:?}")));
                    }
                }
                tx.commit().await?;
                // Checked after the commit, so that of the phase's last
                // completions, the last to commit sees all of them (see the
                // lock order above).
                let waiting: bool = if advance {
                    sqlx::query_scalar(
                        "SELECT EXISTS (SELECT 1 FROM tasks WHERE job_id = $1 AND kind = $2 AND state = 'idle')",
                    )
                    .bind(job)
                    .bind(kind.as_str())
                    .fetch_one(&self.pool)
                    .await?
                } else {
                    true
                };
                if !waiting {
                    let mut tx = self.begin().await?;
                    advance_job(&mut tx, job, now).await?;
                    tx.commit().await?;
                }
                Ok(Completion::Accepted {
                    job: JobId(job),
                    reduce_partition,
                    discard,
                })
            }

            async fn expire(&self, now: i64, liveness: Liveness) -> StoreResult<u64> {
                sqlx::query("UPDATE workers SET state = 'dead' WHERE state = 'alive' AND last_heartbeat < $1")
                    .bind(now - liveness.dead_after_ms)
                    .execute(&self.pool)
                    .await?;
                // (task, job, attempt, why, primary): backups first, so a
                // primary that expires with them is not handed a dead backup.
                let mut stale: Vec<(i64, i64, i64, &str, bool)> = Vec::new();
                let backups: Vec<(i64, i64, i64, bool)> = sqlx::query_as(
                    "SELECT t.id, t.job_id, t.backup_attempt_id, t.backup_deadline < $1 AS expired \
                     FROM tasks t JOIN jobs j ON j.id = t.job_id \
                     WHERE t.state = 'in_progress' AND t.backup_attempt_id IS NOT NULL \
                     AND j.state IN ('mapping', 'reducing') AND (t.backup_deadline < $1 \
                       OR t.backup_worker_id IN (SELECT id FROM workers WHERE state = 'dead'))",
                )
                .bind(now)
                .fetch_all(&self.pool)
                .await?;
                let primaries: Vec<(i64, i64, i64, bool)> = sqlx::query_as(
                    "SELECT t.id, t.job_id, t.attempt_id, t.lease_deadline < $1 AS expired FROM tasks t \
                     JOIN jobs j ON j.id = t.job_id \
                     WHERE t.state = 'in_progress' AND j.state IN ('mapping', 'reducing') AND (t.lease_deadline < $1 \
                       OR t.worker_id IN (SELECT id FROM workers WHERE state = 'dead'))",
                )
                .bind(now)
                .fetch_all(&self.pool)
                .await?;
                let why = |expired: bool| {
                    if expired { "lease expired (the worker stopped renewing it)" } else { "worker lost" }
                };
                stale.extend(backups.into_iter().map(|(t, j, a, e)| (t, j, a, why(e), false)));
                stale.extend(primaries.into_iter().map(|(t, j, a, e)| (t, j, a, why(e), true)));
                let mut requeued = 0;
                // One transaction per task, each locking its job first (the
                // lock order): a completion that wins the race is left alone.
                for (id, job, attempt, why, primary) in stale {
                    let mut tx = self.begin().await?;
                    lock_job(&mut tx, job).await?;
                    if let Some(row) = read_task(&mut tx, id).await? {
                        let mut task = row.task()?;
                        if task.expire(attempt, now) {
                            write_task(&mut tx, id, &task).await?;
                            end_attempt(&mut tx, attempt, AttemptOutcome::Lost, Some(why), None, now).await?;
                            if primary {
                                requeued += 1;
                            }
                        }
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
                    let mut tx = self.begin().await?;
                    lock_job(&mut tx, job).await?;
                    if lose_map_output(&mut tx, task, job, i64::MAX, now).await? {
                        requeued += 1;
                    }
                    tx.commit().await?;
                }
                // Jobs whose phase is done but which did not move on (their
                // last completion's coordinator died between its commits).
                let done: Vec<i64> = sqlx::query_scalar(
                    concat!(
                        "SELECT j.id FROM jobs j WHERE j.state IN ('mapping', 'reducing') AND (NOT ",
                        unfinished!("j.id", "CASE WHEN j.state = 'mapping' THEN 'map' ELSE 'reduce' END"),
                        " OR NOT ",
                        unfinished!("j.id", "'reduce'"),
                        ")"
                    ),
                )
                .fetch_all(&self.pool)
                .await?;
                for job in done {
                    let mut tx = self.begin().await?;
                    advance_job(&mut tx, job, now).await?;
                    tx.commit().await?;
                }
                Ok(requeued)
            }
        }
    };
}

pub(super) use scheduling_impl;
