//! The Quern worker: runs map and reduce tasks of guest jobs inside
//! wasmtime. This crate holds the engine that the local runner and the
//! distributed worker share: input splitting, the sort/spill/merge
//! machinery, the map-output file format, and the sinks through which the
//! guests of the `runtime` crate hand over their pairs.

pub mod agent;
pub mod input;
pub mod local;
pub mod map;
pub mod merge;
pub mod reduce;
pub mod runfile;
pub mod sort;

pub use map::{MapInput, MapSettings, TaskReport, run_map};
pub use reduce::{ReduceOutput, ReduceSettings, run_reduce};
pub use runtime;
pub use runtime::{
    Guest, GuestError, GuestModule, ModuleError, Runtime, RuntimeConfig, TaskError, TaskLogs,
};
