//! Why a guest failed, typed so that callers can decide between retrying
//! and failing, and worded for the person who wrote the guest.

use std::io;
use std::time::Duration;

use crate::TaskError;

/// A task's guest failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GuestError {
    /// The guest returned an error from `init`, `map`, `reduce` or `combine`.
    #[error("the job's {function} returned an error: {message}")]
    Failed {
        /// The export that failed.
        function: String,
        /// The guest's message.
        message: String,
    },
    /// The guest trapped (a Rust panic, an out-of-bounds access, ...).
    #[error("the guest crashed in {function}: {message}")]
    Trap {
        /// The export that was running.
        function: String,
        /// The trap and, when the guest printed one, its panic message.
        message: String,
    },
    /// The task ran past its time limit.
    #[error("the task ran past its time limit of {}s and was stopped", limit.as_secs_f64())]
    Timeout {
        /// The limit.
        limit: Duration,
    },
    /// The guest tried to grow its memory past the cap.
    #[error("the guest tried to use more than its memory limit of {limit_mib} MiB")]
    OutOfMemory {
        /// The cap in MiB.
        limit_mib: u64,
    },
    /// A streaming-mode command exited with a non-zero status.
    #[error("the job's {function} command exited with status {status}{}", if stderr.is_empty() { String::new() } else { format!("; its stderr ends with: {stderr}") })]
    Exited {
        /// The phase, `map` or `reduce`.
        function: String,
        /// The exit status.
        status: i32,
        /// The end of what it wrote to stderr.
        stderr: String,
    },
    /// The guest emitted something the host cannot accept.
    #[error("the guest's output is invalid: {0}")]
    BadOutput(String),
    /// An input record is longer than the job allows; the input, not the
    /// guest, is at fault, but running again cannot help either.
    #[error(
        "the record at byte {offset} of {file} is longer than the job's limit of {limit} bytes (limits.record_bytes; --max-record-bytes)"
    )]
    RecordTooLong {
        /// The input file.
        file: String,
        /// Where the record starts in it.
        offset: u64,
        /// The limit.
        limit: u64,
    },
    /// A reduce task's output grew past the job's limit.
    #[error(
        "the task's output grew past the job's limit of {limit} bytes (limits.output_bytes; --max-output-bytes)"
    )]
    OutputTooLarge {
        /// The limit.
        limit: u64,
    },
}

/// A module cannot be used as a job.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModuleError {
    /// The bytes are not a WebAssembly component implementing the contract.
    #[error("{0}")]
    Invalid(String),
}

/// An I/O error from input source `index` of a task: a reduce task's
/// segment of map task `index`, which must then run again.
#[derive(Debug)]
pub struct SourceError {
    /// Which source (the map task's index).
    pub index: usize,
    /// What went wrong.
    pub inner: io::Error,
}

impl std::fmt::Display for SourceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.inner)
    }
}

impl std::error::Error for SourceError {}

/// The task error for an I/O error met on the host's side of a call: a
/// [`SourceError`] becomes [`TaskError::FetchFailed`], anything else a host
/// error.
pub fn io_task_error(err: io::Error) -> TaskError {
    if let Some(source) = err.get_ref().and_then(|e| e.downcast_ref::<SourceError>()) {
        return TaskError::FetchFailed {
            source_index: source.index,
            message: source.inner.to_string(),
        };
    }
    TaskError::Host(anyhow::Error::from(err).context("reduce input"))
}
