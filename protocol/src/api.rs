//! Bodies of the public REST API under `/api/v1`.

use serde::{Deserialize, Serialize};

use crate::{
    AttemptId, AttemptOutcome, Counters, JobId, JobSpec, JobState, TaskId, TaskKind, TaskState,
    WorkerId,
};

/// Every error response: `{"error": {"code": "...", "message": "...", "field": ...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    /// `not_found`, `conflict`, `bad_request`, `invalid_spec`, `unauthorized`,
    /// `payload_too_large`, `internal`.
    pub code: String,
    /// For people.
    pub message: String,
    /// The offending field of a job spec, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// A stored module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModuleInfo {
    /// sha256 of the bytes, in hex: the module's id.
    pub sha256: String,
    /// The name it was uploaded under.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    /// Whether the guest implements `combine`.
    pub has_combine: bool,
    /// A `quern:job` component or a WASI command (streaming mode).
    #[serde(default)]
    pub kind: crate::ModuleKind,
}

/// A stored input file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DatasetFile {
    /// Its path, e.g. `books/pg-grimm.txt`.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
}

/// Task counts of one kind by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PhaseProgress {
    /// All tasks of the kind.
    pub total: u64,
    /// Waiting.
    pub idle: u64,
    /// Running.
    pub in_progress: u64,
    /// Done.
    pub completed: u64,
    /// Failed for good.
    pub failed: u64,
}

/// A job as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobInfo {
    /// Its id.
    pub id: JobId,
    /// The spec as submitted (with defaults filled in).
    pub spec: JobSpec,
    /// Where it is.
    pub state: JobState,
    /// Why it failed, for people.
    pub error: Option<String>,
    /// Map progress.
    pub map: PhaseProgress,
    /// Reduce progress.
    pub reduce: PhaseProgress,
    /// Counters of completed tasks, summed.
    pub counters: Counters,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    /// When it finished.
    pub finished_at: Option<i64>,
    /// Paths of committed outputs (under `/api/v1/jobs/{id}/outputs/`).
    pub outputs: Vec<String>,
}

/// A task as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskInfo {
    /// Its id.
    pub id: TaskId,
    /// Map or reduce.
    pub kind: TaskKind,
    /// Its index among the job's tasks of that kind.
    pub index: u32,
    /// Its state.
    pub state: TaskState,
    /// What it reads: `pg-grimm.txt bytes 0..65536`, `partition 3`.
    pub input: String,
    /// The worker holding it (in progress) or its output (completed map).
    pub worker: Option<WorkerId>,
    /// Guest failures so far.
    pub failures: u32,
    /// Attempts so far.
    pub attempts: u32,
}

/// An attempt as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AttemptInfo {
    /// Its id.
    pub id: AttemptId,
    /// Its task.
    pub task: TaskId,
    /// The task's kind.
    pub kind: TaskKind,
    /// The task's index.
    pub index: u32,
    /// Where it ran.
    pub worker: WorkerId,
    /// Milliseconds since the Unix epoch.
    pub started_at: i64,
    /// When it ended.
    pub ended_at: Option<i64>,
    /// How it ended.
    pub outcome: AttemptOutcome,
    /// Why it failed.
    pub error: Option<String>,
    /// Its counters.
    pub counters: Counters,
    /// Whether it was a backup of a slow attempt.
    pub backup: bool,
}

/// An attempt's captured logs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AttemptLogs {
    /// Guest stdout (capped).
    pub stdout: String,
    /// Guest stderr (capped).
    pub stderr: String,
}

/// A worker as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkerInfo {
    /// Its id.
    pub id: WorkerId,
    /// Its shuffle address.
    pub address: String,
    /// Concurrent task slots.
    pub slots: u32,
    /// `alive` or `dead`.
    pub state: String,
    /// Milliseconds since the Unix epoch.
    pub last_heartbeat: i64,
    /// Tasks it runs now.
    pub running: u32,
}

/// A committed output file of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OutputFile {
    /// `part-r-00000`.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
}

/// One server-sent event of a job's progress stream (`event: progress`).
pub type ProgressEvent = JobInfo;
