//! `quern run --local`: a whole job, sequentially, in this process. It uses
//! the same map and reduce code as the distributed workers, which makes it
//! both a debugging aid for guest authors and the correctness oracle for
//! distributed runs.

use std::collections::HashSet;
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use protocol::job::{SAMPLE_CHUNK_BYTES, SAMPLE_CHUNKS};
use protocol::{
    Counters, InputFile, InputFormat, Limits, MapOutputIndex, PartitionBy, Partitioner, plan_splits,
};

use crate::map::{DEFAULT_SORT_BUFFER, MapInput, MapSettings, combine_buffer, run_map};
use crate::merge::BoxedSource;
use crate::reduce::{ReduceSettings, run_reduce};
use crate::runfile;
use crate::runtime::{GuestModule, Runtime, TaskError, TaskLogs};

/// A job for the local runner.
#[derive(Debug, Clone)]
pub struct LocalJob {
    /// Input files; the guest sees each by its file name.
    pub inputs: Vec<PathBuf>,
    /// Number of reducers, R.
    pub reducers: u32,
    /// Map split size in bytes.
    pub split_size: u64,
    /// Input format.
    pub format: InputFormat,
    /// Run the guest's combiner when it has one.
    pub combine: bool,
    /// Bytes the guest may hold back to combine pairs; `None` for the
    /// default.
    pub combine_buffer: Option<u64>,
    /// How map output keys are assigned to partitions.
    pub partitioner: PartitionBy,
    /// Arguments for the guest.
    pub args: Vec<(String, String)>,
    /// Sandbox limits.
    pub limits: Limits,
    /// Output directory; receives `part-r-NNNNN` files and `_SUCCESS`.
    pub output: PathBuf,
    /// Between key and value on output lines.
    pub separator: Vec<u8>,
    /// Sort buffer per map task.
    pub sort_buffer: usize,
}

impl LocalJob {
    /// A job with default settings.
    pub fn new(inputs: Vec<PathBuf>, reducers: u32, output: PathBuf) -> Self {
        LocalJob {
            inputs,
            reducers,
            split_size: protocol::job::DEFAULT_SPLIT_SIZE,
            format: InputFormat::Lines,
            combine: true,
            combine_buffer: None,
            partitioner: PartitionBy::Hash,
            args: Vec::new(),
            limits: Limits::default(),
            output,
            separator: b"\t".to_vec(),
            sort_buffer: DEFAULT_SORT_BUFFER,
        }
    }
}

/// What a local run did.
#[derive(Debug, Clone)]
pub struct LocalReport {
    /// Map tasks run.
    pub map_tasks: usize,
    /// The committed output files, in partition order.
    pub outputs: Vec<PathBuf>,
    /// All tasks' counters summed.
    pub counters: Counters,
}

/// A failed local run: which task, why, and the guest's logs.
#[derive(Debug, thiserror::Error)]
#[error("{task} failed: {error}")]
pub struct LocalFailure {
    /// `map task 3 (pg-grimm.txt bytes 0..65536)` or `reduce task 1`.
    pub task: String,
    /// The cause.
    pub error: TaskError,
    /// The guest's stdout and stderr.
    pub logs: TaskLogs,
}

/// The name a guest sees for an input path: its file name.
pub fn input_name(path: &Path) -> anyhow::Result<String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_owned)
        .with_context(|| format!("input {} has no usable file name", path.display()))
}

/// Runs `job` with the guest `module`.
pub fn run_local(
    runtime: &Runtime,
    module: &Arc<GuestModule>,
    job: &LocalJob,
) -> anyhow::Result<LocalReport> {
    if job.reducers == 0 {
        bail!("--reducers must be at least 1");
    }
    if job.split_size < protocol::job::MIN_SPLIT_SIZE {
        bail!(
            "--split-size must be at least {} bytes",
            protocol::job::MIN_SPLIT_SIZE
        );
    }
    let mut files = Vec::new();
    let mut seen = HashSet::new();
    for path in &job.inputs {
        let name = input_name(path)?;
        if !seen.insert(name.clone()) {
            bail!("two inputs are named {name}; the guest could not tell them apart");
        }
        let size = std::fs::metadata(path)
            .with_context(|| format!("reading input {}", path.display()))?
            .len();
        files.push(InputFile { name, size });
    }
    prepare_output(&job.output)?;
    let work = tempfile::Builder::new()
        .prefix("_temporary-")
        .tempdir_in(&job.output)
        .context("creating the work directory")?;

    let mut counters = Counters::default();
    let partitioner = match job.partitioner {
        PartitionBy::Hash => Partitioner::Hash,
        PartitionBy::Range => {
            if job.format != InputFormat::Lines {
                bail!("range partitioning samples the input's lines: it needs the lines format");
            }
            sample_partitioner(&job.inputs, &files, job.reducers)?
        }
    };
    let settings = MapSettings {
        reducers: job.reducers,
        combine: job.combine,
        limits: job.limits,
        args: job.args.clone(),
        sort_buffer: job.sort_buffer,
        combine_buffer: combine_buffer(job.combine_buffer, &job.limits),
        partitioner: Arc::new(partitioner),
        cancel: Default::default(),
    };
    let splits = plan_splits(&files, job.split_size, job.format);
    let mut map_outputs: Vec<(PathBuf, MapOutputIndex)> = Vec::with_capacity(splits.len());
    for (i, split) in splits.iter().enumerate() {
        let path = &job.inputs[split.file];
        let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        file.seek(SeekFrom::Start(crate::input::read_from(split.start)))?;
        let input = MapInput {
            reader: file,
            file_name: files[split.file].name.clone(),
            format: job.format,
            start: split.start,
            end: split.end,
        };
        let output = work.path().join(format!("map-{i:05}.out"));
        let report = run_map(runtime, module, &settings, input, work.path(), &output);
        counters.merge(&report.counters);
        match report.outcome {
            Ok(index) => map_outputs.push((output, index)),
            Err(error) => {
                return Err(LocalFailure {
                    task: format!(
                        "map task {i} ({} bytes {}..{})",
                        files[split.file].name, split.start, split.end
                    ),
                    error,
                    logs: report.logs,
                }
                .into());
            }
        }
    }

    let reduce_settings = ReduceSettings {
        limits: job.limits,
        args: job.args.clone(),
        separator: job.separator.clone(),
        cancel: Default::default(),
    };
    let mut outputs = Vec::new();
    for r in 0..job.reducers {
        let segments = map_outputs
            .iter()
            .map(|(path, index)| {
                runfile::open_segment(path, &index.partitions[r as usize])
                    .map(|s| Box::new(s) as BoxedSource)
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        let name = part_name(r);
        let tmp = work.path().join(format!("{name}.tmp"));
        let report = run_reduce(runtime, module, &reduce_settings, segments, &tmp);
        counters.merge(&report.counters);
        if let Err(error) = report.outcome {
            return Err(LocalFailure {
                task: format!("reduce task {r}"),
                error,
                logs: report.logs,
            }
            .into());
        }
        let committed = job.output.join(&name);
        std::fs::rename(&tmp, &committed)
            .with_context(|| format!("committing {}", committed.display()))?;
        outputs.push(committed);
    }
    File::create(job.output.join("_SUCCESS"))?;
    Ok(LocalReport {
        map_tasks: splits.len(),
        outputs,
        counters,
    })
}

pub use protocol::part_name;

/// A range partitioner with split points sampled from the input's lines.
fn sample_partitioner(
    paths: &[PathBuf],
    files: &[InputFile],
    reducers: u32,
) -> anyhow::Result<Partitioner> {
    use std::io::Read;
    let sizes: Vec<u64> = files.iter().map(|f| f.size).collect();
    let mut sample = Vec::new();
    let mut chunk = Vec::new();
    for (i, offset, len) in protocol::sample_ranges(&sizes, SAMPLE_CHUNKS, SAMPLE_CHUNK_BYTES) {
        let mut file =
            File::open(&paths[i]).with_context(|| format!("sampling {}", paths[i].display()))?;
        file.seek(SeekFrom::Start(offset))?;
        chunk.clear();
        file.take(len).read_to_end(&mut chunk)?;
        sample.extend(protocol::sample_lines(&chunk, offset).map(<[u8]>::to_vec));
    }
    Ok(Partitioner::from_sample(sample, reducers))
}

/// Creates the output directory, or clears a previous Quern output in it.
/// Anything else in the directory is left alone and refused.
fn prepare_output(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut previous = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("part-r-") || name == "_SUCCESS" {
            previous.push(entry.path());
        } else if name.starts_with("_temporary-") {
            std::fs::remove_dir_all(entry.path())?;
        } else {
            bail!(
                "output directory {} holds {name}, which is not a Quern output; choose an empty directory",
                dir.display()
            );
        }
    }
    for path in previous {
        std::fs::remove_file(path)?;
    }
    Ok(())
}
