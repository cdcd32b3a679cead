//! The job store: every piece of coordinator state, behind the [`Store`]
//! traits with a SQLite and a Postgres implementation. Scheduling decisions
//! that must be atomic (leasing, accepting a completion, declaring a worker
//! dead) are transactions that lock what they change, so several
//! coordinators may share a Postgres database.
//!
//! By concern: [`catalog`] (tokens, modules, dataset files), [`jobs`],
//! [`workers`] and [`scheduling`] (lease, complete, expire), each a trait
//! and its SQL; [`transition`] is the task state machine they apply,
//! without a database; `sql` puts the parts together per backend.

pub mod catalog;
mod group;
pub mod jobs;
mod postgres;
mod rows;
pub mod scheduling;
mod sql;
mod sqlite;
pub mod transition;
pub mod workers;

pub use catalog::Catalog;
pub use jobs::Jobs;
use protocol::api::PhaseProgress;
use protocol::{AttemptId, JobId, JobSpec, JobState, TaskKind, WorkerId};
pub use scheduling::Scheduling;
use serde::{Deserialize, Serialize};
pub use workers::Workers;

pub use postgres::PostgresStore;
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

/// All coordinator state: every part of the store, by concern.
pub trait Store: Catalog + Jobs + Workers + Scheduling {}

impl<T: Catalog + Jobs + Workers + Scheduling> Store for T {}

/// Where a reduce attempt's output is staged in the blob store. The job's
/// visible output for a partition is the staged file of the attempt the
/// store accepted, so publishing it is the same commit that completes the
/// task: exactly one attempt's output is ever visible.
pub fn staged_output_path(job: JobId, attempt: AttemptId, partition: u32) -> String {
    format!("jobs/{job}/attempts/{attempt}/part-r-{partition:05}")
}
