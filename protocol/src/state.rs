//! Job, task and attempt states.

use serde::{Deserialize, Serialize};

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Map tasks are running or waiting.
    Mapping,
    /// Every map is complete; reduce tasks are running or waiting.
    Reducing,
    /// Every output is committed.
    Succeeded,
    /// A task failed its last attempt, or the job could not start.
    Failed,
    /// A user cancelled it.
    Cancelled,
}

impl JobState {
    /// Whether the job will never change again.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }

    /// The name stored in the database and shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Mapping => "mapping",
            JobState::Reducing => "reducing",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }
}

impl std::str::FromStr for JobState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "mapping" => JobState::Mapping,
            "reducing" => JobState::Reducing,
            "succeeded" => JobState::Succeeded,
            "failed" => JobState::Failed,
            "cancelled" => JobState::Cancelled,
            other => return Err(format!("unknown job state `{other}`")),
        })
    }
}

/// Map or reduce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// Reads a split, writes a map-output file.
    Map,
    /// Merges one partition of every map output, writes `part-r-NNNNN`.
    Reduce,
}

impl TaskKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskKind::Map => "map",
            TaskKind::Reduce => "reduce",
        }
    }
}

impl std::str::FromStr for TaskKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "map" => Ok(TaskKind::Map),
            "reduce" => Ok(TaskKind::Reduce),
            other => Err(format!("unknown task kind `{other}`")),
        }
    }
}

/// The task state machine: `idle -> in_progress -> completed`, back to
/// `idle` on a lost lease, a retryable failure or (maps) lost output, and
/// `failed` after its last attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Waiting for a worker.
    Idle,
    /// Leased to a worker.
    InProgress,
    /// Done; for a map, its output is on the worker that ran it.
    Completed,
    /// Failed `max_attempts` times.
    Failed,
}

impl TaskState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Idle => "idle",
            TaskState::InProgress => "in_progress",
            TaskState::Completed => "completed",
            TaskState::Failed => "failed",
        }
    }
}

impl std::str::FromStr for TaskState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "idle" => TaskState::Idle,
            "in_progress" => TaskState::InProgress,
            "completed" => TaskState::Completed,
            "failed" => TaskState::Failed,
            other => return Err(format!("unknown task state `{other}`")),
        })
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// Still running (holds the lease).
    Running,
    /// Finished and accepted; its output is the task's.
    Succeeded,
    /// The guest failed (counts toward `max_attempts`).
    Failed,
    /// The host failed, the worker died or the lease expired (does not
    /// count toward `max_attempts`).
    Lost,
    /// Finished after another attempt had won, or after the job ended; its
    /// result was discarded.
    Superseded,
}

impl AttemptOutcome {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Running => "running",
            AttemptOutcome::Succeeded => "succeeded",
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::Lost => "lost",
            AttemptOutcome::Superseded => "superseded",
        }
    }
}

impl std::str::FromStr for AttemptOutcome {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "running" => AttemptOutcome::Running,
            "succeeded" => AttemptOutcome::Succeeded,
            "failed" => AttemptOutcome::Failed,
            "lost" => AttemptOutcome::Lost,
            "superseded" => AttemptOutcome::Superseded,
            other => return Err(format!("unknown attempt outcome `{other}`")),
        })
    }
}
