//! Rows as the store reads them, and their conversions to API types.

use protocol::api::{AttemptInfo, DatasetFile, ModuleInfo, PhaseProgress, TaskInfo, WorkerInfo};
use protocol::{
    AttemptId, Counters, JobId, JobSpec, JobState, TaskId, TaskKind, TaskState, WorkerId,
};

use super::transition::{Columns, Task};
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

/// The columns of a task row that [`SlotRow`] reads, for a query over
/// `tasks t`.
macro_rules! slot_columns {
    () => {
        "t.id, t.job_id, t.kind, t.idx, t.input, t.state, t.attempt_id, t.worker_id, t.lease_deadline, \
         t.backup_attempt_id, t.backup_worker_id, t.backup_deadline, t.output, t.failures, t.host_failures, \
         t.attempts, t.counted, t.updated_at"
    };
}
pub(super) use slot_columns;

/// A task row with everything the state machine decides on.
#[derive(sqlx::FromRow)]
pub(super) struct SlotRow {
    pub id: i64,
    pub job_id: i64,
    pub kind: String,
    pub idx: i32,
    pub input: String,
    pub state: String,
    pub attempt_id: Option<i64>,
    pub worker_id: Option<String>,
    pub lease_deadline: Option<i64>,
    pub backup_attempt_id: Option<i64>,
    pub backup_worker_id: Option<String>,
    pub backup_deadline: Option<i64>,
    pub output: Option<String>,
    pub failures: i32,
    pub host_failures: i32,
    pub attempts: i32,
    pub counted: bool,
    pub updated_at: i64,
}

impl SlotRow {
    /// The task's kind.
    pub(super) fn task_kind(&self) -> StoreResult<TaskKind> {
        parse(&self.kind)
    }

    /// The row as the state machine's task.
    pub(super) fn task(&self) -> StoreResult<Task> {
        let columns = Columns {
            state: parse(&self.state)?,
            attempt_id: self.attempt_id,
            worker_id: self.worker_id.clone(),
            lease_deadline: self.lease_deadline,
            backup_attempt_id: self.backup_attempt_id,
            backup_worker_id: self.backup_worker_id.clone(),
            backup_deadline: self.backup_deadline,
            output: self.output.clone(),
        };
        Task::from_columns(
            columns,
            self.failures,
            self.host_failures,
            self.attempts,
            self.counted,
            self.updated_at,
        )
        .map_err(|e| {
            StoreError::Corrupt(serde::de::Error::custom(format!("task {}: {e}", self.id)))
        })
    }
}

/// The attempt being completed, its task and its job's state, read in one
/// go.
#[derive(sqlx::FromRow)]
pub(super) struct CompletionRow {
    #[sqlx(flatten)]
    pub task: SlotRow,
    /// The attempt's worker.
    pub attempt_worker: String,
    /// When the attempt started.
    pub started_at: i64,
    /// Whether the attempt already reported (counters are set by a report
    /// and by nothing else).
    pub reported: bool,
    pub job_state: String,
    /// Whether a task of the same phase is idle.
    pub waiting: bool,
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
