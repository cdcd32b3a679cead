//! Workers: registration, heartbeats (which renew the leases of what a
//! worker runs) and revocation.

use async_trait::async_trait;
use protocol::api::WorkerInfo;
use protocol::{AttemptId, JobId, WorkerId};

use super::{Liveness, StoreResult};

/// Workers and their liveness.
#[async_trait]
pub trait Workers: Send + Sync + 'static {
    /// Registers a worker.
    async fn register_worker(
        &self,
        id: &WorkerId,
        address: &str,
        slots: u32,
        now: i64,
    ) -> StoreResult<()>;

    /// Every worker.
    async fn list_workers(&self) -> StoreResult<Vec<WorkerInfo>>;

    /// Revokes a worker: its own tokens stop working and it is dead (its
    /// tasks run again elsewhere). `NotFound` for an unknown worker.
    async fn revoke_worker(&self, worker: &WorkerId, now: i64) -> StoreResult<()>;

    /// Records a heartbeat and renews the leases of `running`. Returns the
    /// attempts that no longer hold a lease, or `None` when the worker is
    /// unknown or was declared dead (it must register again).
    async fn heartbeat(
        &self,
        worker: &WorkerId,
        running: &[AttemptId],
        now: i64,
        liveness: Liveness,
    ) -> StoreResult<Option<Vec<AttemptId>>>;

    /// Of `jobs`, those that are finished.
    async fn finished_jobs(&self, jobs: &[JobId]) -> StoreResult<Vec<JobId>>;
}

/// Implements [`Workers`] for `$store`, locking task rows with `$lock_task`
/// (see `store_impl!`).
macro_rules! workers_impl {
    ($store:ident, $lock_task:expr) => {
        #[async_trait::async_trait]
        impl $crate::store::Workers for $store {
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

            async fn revoke_worker(&self, worker: &WorkerId, now: i64) -> StoreResult<()> {
                let mut tx = self.begin().await?;
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

            async fn heartbeat(
                &self,
                worker: &WorkerId,
                running: &[AttemptId],
                now: i64,
                liveness: Liveness,
            ) -> StoreResult<Option<Vec<AttemptId>>> {
                let mut tx = self.begin().await?;
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
                // Each renewal is the state machine's `renew`; rows are
                // locked by id (the lock order in `scheduling`).
                let rows = sqlx::query_as::<_, SlotRow>(concat!(
                    "SELECT ",
                    slot_columns!(),
                    " FROM tasks t WHERE t.state = 'in_progress' AND (t.worker_id = $1 OR t.backup_worker_id = $1) \
                     ORDER BY t.id ",
                    $lock_task
                ))
                .bind(&worker.0)
                .fetch_all(&mut *tx)
                .await?;
                let mut drop = Vec::new();
                for attempt in running {
                    let row = rows
                        .iter()
                        .find(|r| r.attempt_id == Some(attempt.0) || r.backup_attempt_id == Some(attempt.0));
                    let renewed = match row {
                        Some(row) => {
                            let mut task = row.task()?;
                            let renewed = task.renew(attempt.0, &worker.0, now + liveness.lease_ms);
                            if renewed {
                                write_task(&mut tx, row.id, &task).await?;
                            }
                            renewed
                        }
                        None => false,
                    };
                    if !renewed {
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
        }
    };
}

pub(super) use workers_impl;
