//! The job store: every piece of coordinator state, behind one trait with a
//! SQLite and a Postgres implementation. Scheduling decisions that must be
//! atomic (leasing, accepting a completion, declaring a worker dead) are
//! single transactions here, so several coordinators may share a Postgres
//! database.

mod postgres;
mod sql;
mod sqlite;

use async_trait::async_trait;
use protocol::api::{
    AttemptInfo, AttemptLogs, DatasetFile, ModuleInfo, PhaseProgress, TaskInfo, WorkerInfo,
};
use protocol::worker_api::{CompleteRequest, Lease};
use protocol::{AttemptId, Counters, JobId, JobSpec, JobState, TaskKind, WorkerId};
use serde::{Deserialize, Serialize};

pub use postgres::PostgresStore;
pub use sql::staged_output_path;
pub use sqlite::SqliteStore;

/// Store errors. `Conflict` and `NotFound` are for the API to show; the
/// rest are internal.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The thing does not exist.
    #[error("not found")]
    NotFound,
    /// The change conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// Stored JSON did not parse.
    #[error("corrupt stored document: {0}")]
    Corrupt(#[from] serde_json::Error),
    /// Starting or migrating the database failed.
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Store result.
pub type StoreResult<T> = Result<T, StoreError>;

/// What a map task reads; stored as the task's `input` document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapInputDoc {
    /// Dataset path.
    pub path: String,
    /// Name the guest sees.
    pub file_name: String,
    /// Split start.
    pub start: u64,
    /// Split end.
    pub end: u64,
    /// The file's size when the job was planned (absent in jobs planned
    /// before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// A job to create: the spec and its planned map inputs.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// The validated spec.
    pub spec: JobSpec,
    /// One entry per map task.
    pub maps: Vec<MapInputDoc>,
    /// Secret for the job's shuffle.
    pub token: String,
    /// How map output is partitioned (range split points already drawn).
    pub partitioner: protocol::Partitioner,
}

/// A job row.
#[derive(Debug, Clone)]
pub struct JobRecord {
    /// Id.
    pub id: JobId,
    /// The spec.
    pub spec: JobSpec,
    /// State.
    pub state: JobState,
    /// Why it failed.
    pub error: Option<String>,
    /// Shuffle secret.
    pub token: String,
    /// Map progress.
    pub map: PhaseProgress,
    /// Reduce progress.
    pub reduce: PhaseProgress,
    /// Creation time.
    pub created_at: i64,
    /// Finish time.
    pub finished_at: Option<i64>,
}

/// What `complete` decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// Applied. For a reduce task, the caller must now publish the staged
    /// output as `part-r-{partition}`.
    Accepted {
        /// The job.
        job: JobId,
        /// Set for an accepted reduce: its partition.
        reduce_partition: Option<u32>,
        /// Staged outputs nobody will read (the losing attempt's, a
        /// failed attempt's): the caller deletes them.
        discard: Vec<String>,
    },
    /// The attempt no longer held the lease; nothing changed but the
    /// attempt's record.
    Refused {
        /// The attempt's staged output, when it has one that is not the
        /// task's committed output: the caller deletes it.
        discard: Vec<String>,
    },
}

impl Completion {
    /// Whether the report was applied.
    pub fn accepted(&self) -> bool {
        matches!(self, Completion::Accepted { .. })
    }

    /// Staged outputs to delete.
    pub fn discard(&self) -> &[String] {
        match self {
            Completion::Accepted { discard, .. } | Completion::Refused { discard } => discard,
        }
    }
}

/// What an attempt's task is, for a worker staging its output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptTarget {
    /// The job.
    pub job: JobId,
    /// The task's kind.
    pub kind: TaskKind,
    /// The task's index (a reduce task's partition).
    pub index: u32,
    /// Whether the attempt still runs as the task's attempt or its backup,
    /// in a job that has not ended.
    pub holds: bool,
    /// The job's `limits.output_bytes`.
    pub output_bytes: u64,
    /// The worker the attempt was leased to.
    pub worker: WorkerId,
}

/// Settings of the liveness rules.
#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    /// A lease lasts this long past its last renewal.
    pub lease_ms: i64,
    /// A worker silent this long is dead.
    pub dead_after_ms: i64,
}

/// A task must run at least this long (and twice its finished peers'
/// average) before an idle worker starts a backup attempt of it.
pub const BACKUP_MIN_RUNNING_MS: i64 = 3_000;

/// Host failures a task may have before its job fails anyway: a task that
/// keeps losing its worker or its input is not going to succeed.
pub const MAX_HOST_FAILURES: i32 = 20;

/// All coordinator state.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;

    /// How commits reach the disk, as the database reports it on a
    /// connection of the pool: `synchronous_commit=on` (Postgres) or
    /// `synchronous=full` (SQLite) when every acknowledged change survives
    /// a power loss.
    async fn durability(&self) -> StoreResult<String>;

    /// Adds an API token (stored hashed).
    async fn add_token(
        &self,
        token_hash: &str,
        kind: &str,
        name: &str,
        now: i64,
    ) -> StoreResult<()>;
    /// The kind and name of the token with this hash (a worker's own
    /// token is kind `node`, named by the worker's id).
    async fn token_kind(&self, token_hash: &str) -> StoreResult<Option<(String, String)>>;
    /// Revokes a worker: its own tokens stop working and it is dead (its
    /// tasks run again elsewhere). `NotFound` for an unknown worker.
    async fn revoke_worker(&self, worker: &WorkerId, now: i64) -> StoreResult<()>;

    /// Records a module; false when it was already there.
    async fn put_module(&self, module: &ModuleInfo) -> StoreResult<bool>;
    /// One module.
    async fn get_module(&self, sha256: &str) -> StoreResult<Option<ModuleInfo>>;
    /// Every module.
    async fn list_modules(&self) -> StoreResult<Vec<ModuleInfo>>;
    /// Deletes a module no unfinished job uses.
    async fn delete_module(&self, sha256: &str) -> StoreResult<()>;

    /// Records (or replaces) a dataset file.
    async fn put_blob(&self, file: &DatasetFile) -> StoreResult<()>;
    /// Dataset files whose path starts with `prefix`, by path.
    async fn list_blobs(&self, prefix: &str) -> StoreResult<Vec<DatasetFile>>;
    /// Deletes a dataset file's record.
    async fn delete_blob(&self, path: &str) -> StoreResult<()>;
    /// The unfinished jobs that read dataset file `path`.
    async fn blob_readers(&self, path: &str) -> StoreResult<Vec<JobId>>;

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

    /// Leases the next task to `worker`, if one is leasable: map tasks of
    /// mapping jobs and reduce tasks of reducing jobs, jobs taking turns.
    async fn lease(
        &self,
        worker: &WorkerId,
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
    /// tasks become idle again, and so do the completed map tasks of
    /// unfinished jobs whose output lived on a dead worker. Returns how
    /// many tasks went back to idle.
    async fn expire(&self, now: i64, liveness: Liveness) -> StoreResult<u64>;
}
