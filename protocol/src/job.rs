//! The job spec: what a user submits, with its defaults and validation.

use serde::{Deserialize, Serialize};

/// Default split size: 64 MiB.
pub const DEFAULT_SPLIT_SIZE: u64 = 64 << 20;
/// Smallest split size accepted: 4 KiB.
pub const MIN_SPLIT_SIZE: u64 = 4 << 10;
/// Most reducers a job may ask for.
pub const MAX_REDUCERS: u32 = 10_000;

/// How input files become records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum InputFormat {
    /// One record per line: key = the line's byte offset in decimal, value =
    /// the line without `\n` or `\r\n`.
    #[default]
    Lines,
    /// One record per file: key = the file name, value = its contents.
    WholeFile,
}

impl InputFormat {
    /// The name used on the command line and in the WIT `input-info`.
    pub fn as_str(self) -> &'static str {
        match self {
            InputFormat::Lines => "lines",
            InputFormat::WholeFile => "whole-file",
        }
    }
}

impl std::str::FromStr for InputFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "lines" => Ok(InputFormat::Lines),
            "whole-file" => Ok(InputFormat::WholeFile),
            other => Err(format!(
                "unknown input format `{other}` (expected `lines` or `whole-file`)"
            )),
        }
    }
}

/// How the job's module is driven.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum JobMode {
    /// The module is a component of the `quern:job` world: the host calls
    /// its `init`, `map`, `reduce` and `combine` with record batches.
    #[default]
    Component,
    /// The module is a WASI command (a preview-1 core module or a preview-2
    /// command component) run once per task: records arrive as lines on
    /// stdin and pairs leave as `key<TAB>value` lines on stdout.
    Streaming,
}

impl JobMode {
    /// The name used on the command line and in the job spec.
    pub fn as_str(self) -> &'static str {
        match self {
            JobMode::Component => "component",
            JobMode::Streaming => "streaming",
        }
    }

    /// Whether a module of `kind` can run in this mode, and if not, what to
    /// do about it.
    pub fn check(self, kind: ModuleKind) -> Result<(), String> {
        match (self, kind) {
            (JobMode::Component, ModuleKind::Job) | (JobMode::Streaming, ModuleKind::Command) => {
                Ok(())
            }
            (JobMode::Component, ModuleKind::Command) => Err(
                "the module is a WASI command, not a component of the quern:job world: \
                 run it with mode `streaming` (`--mode streaming`)"
                    .into(),
            ),
            (JobMode::Streaming, ModuleKind::Job) => Err(
                "the module is a component of the quern:job world, not a WASI command: \
                 streaming mode runs a command's `main`; drop `--mode streaming`"
                    .into(),
            ),
        }
    }
}

impl std::str::FromStr for JobMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "component" => Ok(JobMode::Component),
            "streaming" => Ok(JobMode::Streaming),
            other => Err(format!(
                "unknown mode `{other}` (expected `component` or `streaming`)"
            )),
        }
    }
}

/// What an uploaded module is, found by inspecting it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum ModuleKind {
    /// A component implementing the `quern:job` world.
    #[default]
    Job,
    /// A WASI command: a preview-1 core module exporting `_start`, or a
    /// preview-2 component exporting `wasi:cli/run`.
    Command,
}

impl ModuleKind {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            ModuleKind::Job => "job",
            ModuleKind::Command => "command",
        }
    }

    /// The mode a module of this kind runs in.
    pub fn mode(self) -> JobMode {
        match self {
            ModuleKind::Job => JobMode::Component,
            ModuleKind::Command => JobMode::Streaming,
        }
    }
}

impl std::str::FromStr for ModuleKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "job" => Ok(ModuleKind::Job),
            "command" => Ok(ModuleKind::Command),
            other => Err(format!("unknown module kind `{other}`")),
        }
    }
}

/// How a job's map output keys are assigned to reduce partitions, as the
/// user asks for it (the coordinator turns `range` into a
/// [`crate::Partitioner`] with split points sampled from the input).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum PartitionBy {
    /// By hash of the key: even partitions, no order between them.
    #[default]
    Hash,
    /// By key range, split points sampled from the input's lines: the
    /// outputs concatenated in partition order are globally sorted, for
    /// jobs whose map keys order like their input lines (a sort).
    Range,
}

impl PartitionBy {
    /// The name used on the command line and in the job spec.
    pub fn as_str(self) -> &'static str {
        match self {
            PartitionBy::Hash => "hash",
            PartitionBy::Range => "range",
        }
    }
}

impl std::str::FromStr for PartitionBy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "hash" => Ok(PartitionBy::Hash),
            "range" => Ok(PartitionBy::Range),
            other => Err(format!(
                "unknown partitioner `{other}` (expected `hash` or `range`)"
            )),
        }
    }
}

/// Chunks of the input read to sample range split points, and their size:
/// up to 200 x 32 KiB, about 100,000 lines of prose.
pub const SAMPLE_CHUNKS: u64 = 200;
/// See [`SAMPLE_CHUNKS`].
pub const SAMPLE_CHUNK_BYTES: u64 = 32 << 10;

/// Most input patterns a job may name.
pub const MAX_INPUTS: usize = 4096;
/// Longest input pattern, in bytes.
pub const MAX_INPUT_BYTES: usize = 1024;

/// Smallest combine buffer a job may ask for.
pub const MIN_COMBINE_BUFFER: u64 = 1 << 10;

/// Per-task sandbox limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Cap on the guest's linear memory, in MiB.
    pub memory_mib: u64,
    /// Wall-clock limit of one task attempt, in seconds.
    pub timeout_secs: u64,
    /// Bytes of stdout and of stderr kept as the task's log.
    pub log_bytes: u64,
    /// Longest input record (a line, or a whole file) a map task reads; a
    /// longer one fails the task, naming the file and offset, before it is
    /// buffered.
    pub record_bytes: u64,
    /// Largest output one reduce task may write (and stage).
    pub output_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_mib: 512,
            timeout_secs: 600,
            log_bytes: 64 << 10,
            record_bytes: DEFAULT_RECORD_BYTES,
            output_bytes: DEFAULT_OUTPUT_BYTES,
        }
    }
}

/// Default longest record: 8 MiB.
pub const DEFAULT_RECORD_BYTES: u64 = 8 << 20;
/// Largest record limit a job may set: 1 GiB (the whole-file format's cap).
pub const MAX_RECORD_BYTES: u64 = 1 << 30;
/// Default largest output of one reduce task: 64 GiB.
pub const DEFAULT_OUTPUT_BYTES: u64 = 64 << 30;

/// A job as submitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// The module's sha256, in lowercase hex.
    pub module: String,
    /// Input dataset paths or globs (`books/*.txt`).
    pub inputs: Vec<String>,
    /// Number of reduce tasks, R.
    pub reducers: u32,
    /// Map split size in bytes.
    #[serde(default = "default_split_size")]
    pub split_size: u64,
    /// How inputs become records.
    #[serde(default)]
    pub format: InputFormat,
    /// How the module is driven: `component` (the default) or `streaming`.
    #[serde(default)]
    pub mode: JobMode,
    /// Whether to run the guest's `combine` (when it has one).
    #[serde(default = "default_true")]
    pub combine: bool,
    /// Bytes of pairs a map task's guest may hold back to combine them
    /// before emitting (in-mapper combining). Default 32 MiB, never more
    /// than a quarter of `limits.memory_mib`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub combine_buffer: Option<u64>,
    /// How map output keys are assigned to reduce partitions.
    #[serde(default)]
    pub partitioner: PartitionBy,
    /// Arguments passed to the guest's `init`.
    #[serde(default)]
    pub args: Vec<(String, String)>,
    /// Sandbox limits.
    #[serde(default)]
    pub limits: Limits,
    /// Attempts a task gets before its failure fails the job.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Whether idle workers may run backup attempts of stragglers near the
    /// end of a phase (the first attempt to finish wins). Turn off for
    /// guests with side effects outside their output.
    #[serde(default = "default_true")]
    pub backups: bool,
    /// A name for people; not used by Quern.
    #[serde(default)]
    pub name: Option<String>,
}

fn default_split_size() -> u64 {
    DEFAULT_SPLIT_SIZE
}

fn default_true() -> bool {
    true
}

fn default_max_attempts() -> u32 {
    4
}

/// What is wrong with a spec, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecError {
    /// The offending field, e.g. `reducers`.
    pub field: String,
    /// Why it is rejected.
    pub message: String,
}

impl std::fmt::Display for SpecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for SpecError {}

fn reject(field: &str, message: impl Into<String>) -> Result<(), SpecError> {
    Err(SpecError {
        field: field.into(),
        message: message.into(),
    })
}

impl JobSpec {
    /// A spec with the defaults for everything but module, inputs and R.
    pub fn new(module: impl Into<String>, inputs: Vec<String>, reducers: u32) -> Self {
        JobSpec {
            module: module.into(),
            inputs,
            reducers,
            split_size: DEFAULT_SPLIT_SIZE,
            format: InputFormat::Lines,
            mode: JobMode::Component,
            combine: true,
            combine_buffer: None,
            partitioner: PartitionBy::Hash,
            args: Vec::new(),
            limits: Limits::default(),
            max_attempts: default_max_attempts(),
            backups: true,
            name: None,
        }
    }

    /// Checks every field that can be checked without I/O.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.module.len() != 64 || !self.module.bytes().all(|b| b.is_ascii_hexdigit()) {
            return reject("module", "must be a module's sha256 in hex (64 characters)");
        }
        if self.inputs.is_empty() {
            return reject("inputs", "at least one input is required");
        }
        if let Some(bad) = self.inputs.iter().find(|i| i.trim().is_empty()) {
            return reject("inputs", format!("empty input path {bad:?}"));
        }
        if let Some(bad) = self.inputs.iter().find(|i| i.chars().any(char::is_control)) {
            return reject(
                "inputs",
                format!("input pattern {bad:?} contains control characters"),
            );
        }
        if self.inputs.len() > MAX_INPUTS {
            return reject("inputs", format!("at most {MAX_INPUTS} input patterns"));
        }
        if let Some(long) = self.inputs.iter().find(|i| i.len() > MAX_INPUT_BYTES) {
            return reject(
                "inputs",
                format!(
                    "an input pattern may be at most {MAX_INPUT_BYTES} bytes, one is {}",
                    long.len()
                ),
            );
        }
        if self.reducers == 0 || self.reducers > MAX_REDUCERS {
            return reject("reducers", format!("must be between 1 and {MAX_REDUCERS}"));
        }
        if self.split_size < MIN_SPLIT_SIZE {
            return reject(
                "split_size",
                format!("must be at least {MIN_SPLIT_SIZE} bytes"),
            );
        }
        if self.max_attempts == 0 || self.max_attempts > 100 {
            return reject("max_attempts", "must be between 1 and 100");
        }
        if self.limits.memory_mib < 16 || self.limits.memory_mib > 4096 {
            return reject("limits.memory_mib", "must be between 16 and 4096");
        }
        if self.limits.timeout_secs == 0 || self.limits.timeout_secs > 24 * 3600 {
            return reject("limits.timeout_secs", "must be between 1 and 86400");
        }
        if self.limits.log_bytes > 16 << 20 {
            return reject("limits.log_bytes", "must be at most 16 MiB");
        }
        if self.limits.record_bytes < 1024 || self.limits.record_bytes > MAX_RECORD_BYTES {
            return reject(
                "limits.record_bytes",
                format!("must be between 1024 and {MAX_RECORD_BYTES}"),
            );
        }
        if self.limits.output_bytes < 1024 {
            return reject("limits.output_bytes", "must be at least 1024");
        }
        if self.combine_buffer.is_some_and(|b| b < MIN_COMBINE_BUFFER) {
            return reject(
                "combine_buffer",
                format!("must be at least {MIN_COMBINE_BUFFER} bytes"),
            );
        }
        if self.partitioner == PartitionBy::Range && self.format != InputFormat::Lines {
            return reject(
                "partitioner",
                "range partitioning samples the input's lines: it needs the `lines` format",
            );
        }
        if let Some((name, _)) = self.args.iter().find(|(n, _)| n.is_empty()) {
            return reject("args", format!("argument with an empty name ({name:?})"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> JobSpec {
        JobSpec::new("a".repeat(64), vec!["x.txt".into()], 3)
    }

    #[test]
    fn defaults_validate() {
        spec().validate().unwrap();
    }

    #[test]
    fn errors_name_the_field() {
        let mut s = spec();
        s.reducers = 0;
        assert_eq!(s.validate().unwrap_err().field, "reducers");
        let mut s = spec();
        s.inputs.clear();
        assert_eq!(s.validate().unwrap_err().field, "inputs");
        let mut s = spec();
        s.module = "nope".into();
        assert_eq!(s.validate().unwrap_err().field, "module");
    }

    #[test]
    fn json_defaults_apply() {
        let s: JobSpec = serde_json::from_str(&format!(
            r#"{{"module":"{}","inputs":["a"],"reducers":2}}"#,
            "b".repeat(64)
        ))
        .unwrap();
        assert_eq!(s.split_size, DEFAULT_SPLIT_SIZE);
        assert!(s.combine);
        assert_eq!(s.max_attempts, 4);
        assert_eq!(s.mode, JobMode::Component);
    }

    #[test]
    fn streaming_mode_parses_and_checks_the_module_kind() {
        let s: JobSpec = serde_json::from_str(&format!(
            r#"{{"module":"{}","inputs":["a"],"reducers":2,"mode":"streaming"}}"#,
            "b".repeat(64)
        ))
        .unwrap();
        assert_eq!(s.mode, JobMode::Streaming);
        assert!(s.mode.check(ModuleKind::Command).is_ok());
        let err = s.mode.check(ModuleKind::Job).unwrap_err();
        assert!(err.contains("not a WASI command"), "{err}");
        let err = JobMode::Component.check(ModuleKind::Command).unwrap_err();
        assert!(err.contains("--mode streaming"), "{err}");
        assert!("stream".parse::<JobMode>().is_err());
    }
}
