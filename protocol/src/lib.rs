//! Every type that crosses a Quern process boundary: the job spec, input
//! splits, the partition function and the map-output index. It does no I/O;
//! changing a type here is a contract change between coordinator, workers
//! and clients.
#![warn(missing_docs)]

pub mod counters;
pub mod job;
pub mod partition;
pub mod split;

pub use counters::Counters;
pub use job::{InputFormat, JobSpec, Limits, SpecError};
pub use partition::{MapOutputIndex, PartitionIndex, fnv1a32, partition_for};
pub use split::{InputFile, Split, plan_splits};
