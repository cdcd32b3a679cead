//! Job options shared by `quern run --local` and `quern submit`.

use clap::Args;
use protocol::{InputFormat, JobMode, Limits, ModuleKind, PartitionBy};

use crate::units::{parse_arg, parse_size};

/// How a job runs, whichever runner runs it.
#[derive(Debug, Args)]
pub struct JobOptions {
    /// Number of reduce tasks (and output files).
    #[arg(long, short = 'r', default_value_t = 1)]
    pub reducers: u32,
    /// Map split size (e.g. 64MiB, 4KiB).
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    pub split_size: u64,
    /// Input format: `lines` or `whole-file`.
    #[arg(long, default_value = "lines")]
    pub format: InputFormat,
    /// How the module runs: `component` (a quern:job component) or
    /// `streaming` (a WASI command reading records on stdin and writing
    /// `key<TAB>value` lines on stdout). By default, the mode the module's
    /// kind runs in.
    #[arg(long)]
    pub mode: Option<JobMode>,
    /// Do not run the guest's combiner (neither in the guest nor on the
    /// host).
    #[arg(long)]
    pub no_combine: bool,
    /// Memory a map task's guest may hold pairs in to combine them before
    /// emitting (e.g. 32MiB; at most a quarter of --memory-mib).
    #[arg(long, value_parser = parse_size)]
    pub combine_buffer: Option<u64>,
    /// How map output keys go to reducers: `hash` (even spread) or `range`
    /// (split points sampled from the input's lines; the outputs in order
    /// are globally sorted, as a sort job needs).
    #[arg(long, default_value = "hash")]
    pub partitioner: PartitionBy,
    /// A job argument `name=value` (repeatable).
    #[arg(long = "arg", value_parser = parse_arg)]
    pub args: Vec<(String, String)>,
    /// Guest memory cap in MiB.
    #[arg(long, default_value_t = Limits::default().memory_mib)]
    pub memory_mib: u64,
    /// Time limit per task attempt in seconds.
    #[arg(long, default_value_t = Limits::default().timeout_secs)]
    pub timeout_secs: u64,
    /// Longest input record (line) a map task reads, e.g. 64MiB; a longer
    /// one fails the task naming its file and offset.
    #[arg(long, value_parser = parse_size, default_value = "8MiB")]
    pub max_record_bytes: u64,
    /// Largest output one reduce task may write, e.g. 100GiB.
    #[arg(long, value_parser = parse_size, default_value = "64GiB")]
    pub max_output_bytes: u64,
}

impl JobOptions {
    /// The mode asked for, or the one a module of `kind` runs in; an
    /// explicit mode that does not fit the module is an error saying so.
    pub fn mode_for(&self, kind: ModuleKind) -> Result<JobMode, String> {
        let mode = self.mode.unwrap_or(kind.mode());
        mode.check(kind)?;
        Ok(mode)
    }

    /// The sandbox limits the options ask for.
    pub fn limits(&self) -> Limits {
        Limits {
            memory_mib: self.memory_mib,
            timeout_secs: self.timeout_secs,
            record_bytes: self.max_record_bytes,
            output_bytes: self.max_output_bytes,
            ..Limits::default()
        }
    }
}
