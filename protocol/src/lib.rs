//! Every type that crosses a Quern process boundary: the job spec, input
//! splits, the partition function and the map-output index. It does no I/O;
//! changing a type here is a contract change between coordinator, workers
//! and clients.
#![warn(missing_docs)]

pub mod api;
pub mod counters;
pub mod dataset;
pub mod ids;
pub mod job;
pub mod partition;
pub mod range;
pub mod split;
pub mod state;
pub mod worker_api;

pub use counters::Counters;
pub use ids::{AttemptId, JobId, TaskId, WorkerId};
pub use job::{InputFormat, JobMode, JobSpec, Limits, ModuleKind, PartitionBy, SpecError};
pub use partition::{
    MapOutputIndex, PartitionIndex, Partitioner, fnv1a32, part_name, partition_for, sample_lines,
    sample_ranges,
};
pub use split::{InputFile, Split, plan_splits};
pub use state::{AttemptOutcome, JobState, TaskKind, TaskState};
