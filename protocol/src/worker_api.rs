//! Bodies of the worker endpoints under `/api/v1/worker` (worker token).

use serde::{Deserialize, Serialize};

use crate::{
    AttemptId, Counters, InputFormat, JobId, Limits, MapOutputIndex, TaskId, TaskKind, WorkerId,
};

/// A worker introduces itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegisterRequest {
    /// Base URL of its map-output server, e.g. `http://10.0.0.5:7879`.
    pub address: String,
    /// Tasks it runs at once.
    pub slots: u32,
}

/// The coordinator's answer to a registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegisterResponse {
    /// The id to use from now on.
    pub worker_id: WorkerId,
    /// How often to heartbeat, in milliseconds.
    pub heartbeat_ms: u64,
    /// This worker's own token, for every call but registering: bound to
    /// `worker_id`, revocable on its own (`DELETE /api/v1/workers/{id}`).
    /// The cluster's worker token only registers.
    pub token: String,
}

/// A worker asks for work, waiting up to `wait_ms` for some.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LeaseRequest {
    /// Who asks.
    pub worker_id: WorkerId,
    /// Longest wait in milliseconds (long poll).
    pub wait_ms: u64,
}

/// Where a reducer fetches one map task's partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MapSource {
    /// The map task.
    pub map_task: TaskId,
    /// Its index in the job.
    pub map_index: u32,
    /// The attempt whose output it is.
    pub attempt: AttemptId,
    /// URL of the map-output file on the worker holding it.
    pub url: String,
    /// Byte range and record count of this reducer's partition.
    pub offset: u64,
    /// Length of the partition in bytes.
    pub length: u64,
    /// Records in the partition.
    pub records: u64,
    /// The worker holding the map output.
    #[serde(default)]
    pub worker: WorkerId,
    /// The token that worker's map-output server accepts for this job:
    /// scoped to that worker, so it opens no other worker's outputs.
    #[serde(default)]
    pub token: String,
}

/// What a leased task does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TaskWork {
    /// Read `start..end` of `input` and write a map-output file.
    Map {
        /// Dataset path of the input file.
        input: String,
        /// Name the guest sees.
        file_name: String,
        /// Split start.
        start: u64,
        /// Split end.
        end: u64,
        /// The file's size when the job was planned: a worker that finds
        /// another size fails the task instead of reading a changed file.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size: Option<u64>,
        /// Input format.
        format: InputFormat,
    },
    /// Merge `partition` of every map output and write `part-r-NNNNN`.
    Reduce {
        /// The partition.
        partition: u32,
        /// One source per map task, in map order.
        sources: Vec<MapSource>,
    },
}

/// A task handed to a worker. Only this attempt is listened to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Lease {
    /// The attempt.
    pub attempt: AttemptId,
    /// The task.
    pub task: TaskId,
    /// The job.
    pub job: JobId,
    /// Map or reduce.
    pub kind: TaskKind,
    /// The task's index.
    pub index: u32,
    /// Module sha256 (download from `/api/v1/worker/modules/{sha256}`).
    pub module: String,
    /// Reducers of the job.
    pub reducers: u32,
    /// Whether to combine.
    pub combine: bool,
    /// Bytes a map task's guest may hold back to combine pairs (the job's
    /// `combine_buffer`, or the default when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub combine_buffer: Option<u64>,
    /// How map output keys are assigned to partitions (for map leases; a
    /// reduce lease carries the default, which it does not use).
    #[serde(default)]
    pub partitioner: crate::Partitioner,
    /// Guest arguments.
    pub args: Vec<(String, String)>,
    /// Sandbox limits.
    pub limits: Limits,
    /// Secret that reducers of this job present to fetch map outputs.
    pub job_token: String,
    /// The work.
    pub work: TaskWork,
}

/// Periodic liveness report; renews the leases of `running`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HeartbeatRequest {
    /// Who reports.
    pub worker_id: WorkerId,
    /// Attempts it is running.
    pub running: Vec<AttemptId>,
    /// Jobs it holds map outputs for.
    pub holding: Vec<JobId>,
}

/// What the worker must stop doing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HeartbeatResponse {
    /// Attempts that no longer hold their lease: stop and discard them.
    pub drop: Vec<AttemptId>,
    /// Jobs that are over: delete their map outputs.
    pub release: Vec<JobId>,
    /// The coordinator does not know this worker (it restarted on a new
    /// database, or declared it dead): register again.
    pub reregister: bool,
}

/// Why an attempt failed, kept typed end to end. Its tag is `failure`
/// (not `kind`) because it travels inside `AttemptResult`, whose tag is
/// `kind`: `{"kind": "failed", "failure": "guest", "message": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "failure", rename_all = "snake_case")]
pub enum Failure {
    /// The guest failed: counts toward `max_attempts`.
    Guest {
        /// For the user.
        message: String,
    },
    /// The worker failed (disk, network, input): retried without counting.
    Host {
        /// For the operator.
        message: String,
    },
    /// A reducer could not fetch a map output: that map task runs again.
    FetchFailed {
        /// The map task whose output is unreachable or corrupt.
        map_task: TaskId,
        /// What happened.
        message: String,
    },
}

/// How an attempt ended, from the worker's side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AttemptResult {
    /// A map-output file is ready on the worker.
    Map {
        /// Its partition index.
        index: MapOutputIndex,
    },
    /// The reduce output was uploaded under the attempt's staging name.
    Reduce {
        /// Output lines.
        records: u64,
        /// Output bytes.
        bytes: u64,
    },
    /// It failed.
    Failed(Failure),
}

/// A worker reports an attempt's end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CompleteRequest {
    /// Who reports.
    pub worker_id: WorkerId,
    /// How it ended.
    pub result: AttemptResult,
    /// Its counters.
    pub counters: Counters,
    /// Guest stdout (capped).
    pub stdout: String,
    /// Guest stderr (capped).
    pub stderr: String,
}

/// Whether the coordinator took the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CompleteResponse {
    /// False: the attempt no longer held its lease; its result was
    /// discarded and the worker must delete what it produced.
    pub accepted: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PartitionIndex, TaskId};

    fn round_trip(result: AttemptResult) {
        let report = CompleteRequest {
            worker_id: WorkerId("w".into()),
            result,
            counters: Counters::default(),
            stdout: String::new(),
            stderr: String::new(),
        };
        let text = serde_json::to_string(&report).unwrap();
        let back: CompleteRequest =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(back, report);
    }

    #[test]
    fn every_attempt_result_survives_json() {
        round_trip(AttemptResult::Map {
            index: MapOutputIndex {
                partitions: vec![PartitionIndex {
                    offset: 1,
                    length: 2,
                    records: 3,
                }],
            },
        });
        round_trip(AttemptResult::Reduce {
            records: 1,
            bytes: 2,
        });
        round_trip(AttemptResult::Failed(Failure::Guest {
            message: "boom".into(),
        }));
        round_trip(AttemptResult::Failed(Failure::Host {
            message: "disk".into(),
        }));
        round_trip(AttemptResult::Failed(Failure::FetchFailed {
            map_task: TaskId(7),
            message: "reset".into(),
        }));
    }
}
