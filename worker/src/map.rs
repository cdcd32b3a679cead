//! A map task: records from a split go to the guest in batches; emitted
//! pairs are partitioned, sorted (spilling sorted runs past the memory
//! budget), combined when the job has a combiner, and written as ONE
//! map-output file.

use std::fs::File;
use std::io::{self, BufWriter, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use protocol::counters as names;
use protocol::{Counters, InputFormat, Limits, MapOutputIndex, ModuleKind, Partitioner};

use crate::merge::{BoxedSource, Fill, Grouper, Merge, RecordSource};
use crate::runfile::{self, RunWriter};
use crate::runtime::{
    Cancel, CommandSpec, Guest, GuestError, GuestModule, LineSink, PairSink, Runtime, SinkError,
    TaskError, TaskLogs, TaskPlan,
};
use crate::sort::SortBuffer;

/// Input bytes per `map` call.
const MAP_BATCH_BYTES: usize = 256 << 10;
/// Group-batch bytes per `combine` call.
const COMBINE_BATCH_BYTES: usize = 256 << 10;
/// Default sort buffer: 64 MiB.
pub const DEFAULT_SORT_BUFFER: usize = 64 << 20;
/// Default bytes a guest may hold back to combine them: 32 MiB (and at
/// most a quarter of its memory limit).
pub const DEFAULT_COMBINE_BUFFER: u64 = 32 << 20;

/// The combine buffer a guest gets: the job's setting, or the default,
/// never more than a quarter of its memory limit.
pub fn combine_buffer(setting: Option<u64>, limits: &Limits) -> u64 {
    setting
        .unwrap_or(DEFAULT_COMBINE_BUFFER)
        .min((limits.memory_mib << 20) / 4)
}

/// The task error for a failed read of input `file`: a record over the
/// job's limit fails the task as the job's fault, anything else is the
/// host's.
fn input_error(err: io::Error, file: &str) -> TaskError {
    match crate::input::RecordTooLong::find(&err) {
        Some(too_long) => TaskError::Guest(GuestError::RecordTooLong {
            file: file.to_owned(),
            offset: too_long.offset,
            limit: too_long.limit,
        }),
        None => TaskError::Host(anyhow::Error::from(err).context(format!("reading input {file}"))),
    }
}

/// How to run one map task.
#[derive(Debug, Clone)]
pub struct MapSettings {
    /// Number of reduce partitions.
    pub reducers: u32,
    /// Run the guest's `combine` (if it has one).
    pub combine: bool,
    /// Sandbox limits.
    pub limits: Limits,
    /// The job's arguments.
    pub args: Vec<(String, String)>,
    /// Bytes of pairs held before a sorted run is spilled to disk.
    pub sort_buffer: usize,
    /// Bytes of pairs the guest may hold back to combine them itself
    /// (in-mapper combining); see [`combine_buffer`].
    pub combine_buffer: u64,
    /// How keys are assigned to partitions.
    pub partitioner: Arc<Partitioner>,
    /// Stops the attempt from outside.
    pub cancel: Cancel,
}

impl MapSettings {
    /// `reducers` hash partitions, combining on, the default limits and
    /// buffers, no arguments.
    pub fn new(reducers: u32) -> Self {
        let limits = Limits::default();
        MapSettings {
            reducers,
            combine: true,
            limits,
            args: Vec::new(),
            sort_buffer: DEFAULT_SORT_BUFFER,
            combine_buffer: combine_buffer(None, &limits),
            partitioner: Arc::new(Partitioner::Hash),
            cancel: Cancel::default(),
        }
    }
}

/// One map task's input.
pub struct MapInput<R> {
    /// The bytes of the file from `input::read_from(start)` on.
    pub reader: R,
    /// The file's name as the guest sees it.
    pub file_name: String,
    /// Input format.
    pub format: InputFormat,
    /// Split start (inclusive).
    pub start: u64,
    /// Split end (exclusive).
    pub end: u64,
}

/// What a task attempt produced, whatever its outcome: counters and logs
/// are kept for failed attempts too.
#[derive(Debug)]
pub struct TaskReport<T> {
    /// The outcome.
    pub outcome: Result<T, TaskError>,
    /// Built-in and user counters.
    pub counters: Counters,
    /// The guest's captured stdout and stderr.
    pub logs: TaskLogs,
}

/// Where emitted map pairs go: the sort buffer, spilling plain sorted runs
/// if a single call emits far past the budget.
pub(crate) struct MapCollector {
    buffer: SortBuffer,
    hard_limit: usize,
    spill_dir: PathBuf,
    spills: Vec<(PathBuf, MapOutputIndex)>,
    emitted: u64,
}

impl MapCollector {
    fn new(settings: &MapSettings, hard_limit: usize, spill_dir: &Path) -> Self {
        MapCollector {
            buffer: SortBuffer::with_partitioner(settings.reducers, settings.partitioner.clone()),
            hard_limit,
            spill_dir: spill_dir.to_path_buf(),
            spills: Vec::new(),
            emitted: 0,
        }
    }

    fn next_spill_path(&self) -> PathBuf {
        self.spill_dir
            .join(format!("spill-{:05}.run", self.spills.len()))
    }
}

impl PairSink for MapCollector {
    fn accept(&mut self, key: &[u8], value: &[u8]) -> Result<(), SinkError> {
        self.buffer.push(key, value);
        self.emitted += 1;
        if self.buffer.bytes() > self.hard_limit {
            // A combiner cannot run while the guest is mid-call, and an
            // uncombined run is just as correct, only larger.
            let path = self.next_spill_path();
            self.buffer.sort();
            let index = write_sorted(&self.buffer, &path)?;
            self.buffer.clear();
            self.spills.push((path, index));
        }
        Ok(())
    }
}

fn write_sorted(buffer: &SortBuffer, path: &Path) -> io::Result<MapOutputIndex> {
    let mut writer = runfile::create(path)?;
    let reducers = buffer.reducers();
    for p in 0..reducers {
        writer.start_partition();
        let mut cursor = buffer.partition(p);
        while cursor.advance()? {
            writer.push(cursor.key(), cursor.value())?;
        }
        writer.end_partition()?;
    }
    let (file, index) = writer.finish()?;
    file.into_inner().map_err(|e| e.into_error())?.sync_data()?;
    Ok(index)
}

/// Where `combine` output goes: straight into a run, checked to stay in
/// the partition and in key order.
pub(crate) struct CombineSink {
    writer: RunWriter<BufWriter<File>>,
    partition: u32,
    reducers: u32,
    partitioner: Arc<Partitioner>,
    last_key: Vec<u8>,
    records: u64,
}

impl PairSink for CombineSink {
    fn accept(&mut self, key: &[u8], value: &[u8]) -> Result<(), SinkError> {
        if self.partitioner.partition(key, self.reducers) != self.partition
            || key < self.last_key.as_slice()
        {
            return Err(SinkError::BadOutput(format!(
                "combine emitted key {:?} out of order; it must emit pairs under the key it was given",
                String::from_utf8_lossy(key)
            )));
        }
        if key != self.last_key.as_slice() {
            self.last_key.clear();
            self.last_key.extend_from_slice(key);
        }
        self.records += 1;
        self.writer.push(key, value)?;
        Ok(())
    }
}

/// Writes every partition of `sources` (one sorted source per partition)
/// to a run file, through the guest's `combine` when `combine` is set.
fn write_run<'s>(
    combiner: Option<&mut Guest>,
    reducers: u32,
    partitioner: &Arc<Partitioner>,
    path: &Path,
    counters: &mut Counters,
    mut source_for: impl FnMut(u32) -> io::Result<Box<dyn RecordSource + 's>>,
) -> Result<MapOutputIndex, TaskError> {
    let mut combiner = combiner;
    let mut writer = runfile::create(path)?;
    let mut batch = Vec::new();
    for partition in 0..reducers {
        writer.start_partition();
        let mut source = source_for(partition)?;
        if let Some(guest) = combiner.as_deref_mut() {
            guest.set_sink(Box::new(CombineSink {
                writer,
                partition,
                reducers,
                partitioner: partitioner.clone(),
                last_key: Vec::new(),
                records: 0,
            }));
            let mut grouper = Grouper::new(&mut source);
            let result = (|| {
                loop {
                    let fill = grouper.fill(&mut batch, COMBINE_BATCH_BYTES, false)?;
                    if !batch.is_empty() {
                        guest.combine(&batch)?;
                    }
                    if fill == Fill::End {
                        return Ok::<_, TaskError>(());
                    }
                }
            })();
            let sink = guest
                .take_sink::<CombineSink>()
                .expect("the combine sink stays in place during combine");
            result?;
            counters.add(names::COMBINE_INPUT_RECORDS, grouper.records as i64);
            counters.add(names::COMBINE_OUTPUT_RECORDS, sink.records as i64);
            writer = sink.writer;
        } else {
            while source.advance()? {
                writer.push(source.key(), source.value())?;
            }
        }
        writer.end_partition()?;
    }
    let (file, index) = writer.finish()?;
    file.into_inner().map_err(|e| e.into_error())?.sync_data()?;
    Ok(index)
}

impl<S: RecordSource + ?Sized> RecordSource for &mut S {
    fn advance(&mut self) -> io::Result<bool> {
        (**self).advance()
    }
    fn key(&self) -> &[u8] {
        (**self).key()
    }
    fn value(&self) -> &[u8] {
        (**self).value()
    }
}

/// Runs one map task attempt: reads the split, calls the guest (or runs
/// the streaming command), and writes the map-output file to `output` (via
/// a temporary name, so a file at `output` is always whole). `work_dir`
/// holds spills and is left empty.
pub fn run_map<R: Read>(
    runtime: &Runtime,
    module: &GuestModule,
    settings: &MapSettings,
    input: MapInput<R>,
    work_dir: &Path,
    output: &Path,
) -> TaskReport<MapOutputIndex> {
    if module.kind() == ModuleKind::Command {
        return map_streaming(runtime, module, settings, input, work_dir, output);
    }
    let mut counters = Counters::default();
    let plan = TaskPlan {
        cancel: settings.cancel.clone(),
        ..TaskPlan::map(settings.combine, settings.combine_buffer)
    };
    let mut guest = match runtime.instantiate(module, &plan, &settings.limits, &settings.args) {
        Ok(guest) => guest,
        Err(err) => {
            return TaskReport {
                outcome: Err(err),
                counters,
                logs: TaskLogs::default(),
            };
        }
    };
    let outcome = map_with(&mut guest, settings, input, work_dir, output, &mut counters);
    counters.merge(guest.counters());
    TaskReport {
        outcome,
        counters,
        logs: guest.logs(),
    }
}

fn map_with<R: Read>(
    guest: &mut Guest,
    settings: &MapSettings,
    input: MapInput<R>,
    work_dir: &Path,
    output: &Path,
    counters: &mut Counters,
) -> Result<MapOutputIndex, TaskError> {
    let combine = settings.combine && guest.has_combine();
    let budget = settings.sort_buffer.max(1 << 20);
    guest.set_sink(Box::new(MapCollector::new(
        settings,
        budget.saturating_mul(2),
        work_dir,
    )));

    // Records are packed into batches; a failed guest call stops the read.
    let mut batch = Vec::with_capacity(MAP_BATCH_BYTES + 4096);
    let mut records: u64 = 0;
    let mut guest_error: Option<TaskError> = None;
    let file_name = input.file_name.clone();
    let mut flush = |guest: &mut Guest, batch: &mut Vec<u8>| -> Result<(), TaskError> {
        if batch.is_empty() {
            return Ok(());
        }
        settings.cancel.check()?;
        guest.map(&file_name, input.format, batch)?;
        batch.clear();
        spill_if_over_budget(guest, combine, budget, counters)
    };
    let read = crate::input::for_each_record(
        input.reader,
        &input.file_name,
        input.format,
        input.start,
        input.end,
        settings.limits.record_bytes,
        |key, value| {
            records += 1;
            batch::put_pair(&mut batch, key, value);
            if batch.len() >= MAP_BATCH_BYTES
                && let Err(err) = flush(guest, &mut batch)
            {
                guest_error = Some(err);
                return Err(io::Error::other("map stopped"));
            }
            Ok(())
        },
    );
    if let Some(err) = guest_error {
        return Err(err);
    }
    let input_bytes = read.map_err(|e| input_error(e, &input.file_name))?;
    flush(guest, &mut batch)?;
    guest.finish()?;
    counters.add(names::MAP_INPUT_RECORDS, records as i64);
    counters.add(names::MAP_INPUT_BYTES, input_bytes as i64);

    let collector = guest
        .take_sink::<MapCollector>()
        .expect("the map sink stays in place during map");
    let combiner = if combine { Some(guest) } else { None };
    write_map_output(combiner, *collector, output, counters)
}

/// Sorts what the collector holds, merges it with its spills (through the
/// combiner, if any) and writes the one map-output file.
fn write_map_output(
    mut combiner: Option<&mut Guest>,
    mut collector: MapCollector,
    output: &Path,
    counters: &mut Counters,
) -> Result<MapOutputIndex, TaskError> {
    let reducers = collector.buffer.reducers();
    let partitioner = collector.buffer.partitioner().clone();
    counters.add(names::MAP_OUTPUT_RECORDS, collector.emitted as i64);
    let tmp = output.with_extension("tmp");
    let index = if collector.spills.is_empty() {
        collector.buffer.sort();
        let buffer = &collector.buffer;
        write_run(combiner, reducers, &partitioner, &tmp, counters, |p| {
            Ok(Box::new(buffer.partition(p)))
        })?
    } else {
        if !collector.buffer.is_empty() {
            spill(combiner.as_deref_mut(), &mut collector, counters)?;
        }
        counters.add(names::SPILLED_RUNS, collector.spills.len() as i64);
        let spills = std::mem::take(&mut collector.spills);
        let index = write_run(combiner, reducers, &partitioner, &tmp, counters, |p| {
            let sources = spills
                .iter()
                .map(|(path, index)| {
                    runfile::open_segment(path, &index.partitions[p as usize])
                        .map(|s| Box::new(s) as BoxedSource)
                })
                .collect::<io::Result<Vec<_>>>()?;
            Ok(Box::new(Merge::new(sources)))
        })?;
        for (path, _) in &spills {
            let _ = std::fs::remove_file(path);
        }
        index
    };
    // What reducers will be told must be what the file holds: read the
    // index back from disk (its checksum, and its size against the file's).
    let on_disk = runfile::read_index(&mut File::open(&tmp)?)?;
    if on_disk != index {
        return Err(TaskError::Host(anyhow::anyhow!(
            "the map output file {} does not match its index",
            tmp.display()
        )));
    }
    std::fs::rename(&tmp, output)?;
    counters.add(
        names::MAP_OUTPUT_MATERIALIZED_RECORDS,
        index.total_records() as i64,
    );
    counters.add(names::MAP_OUTPUT_BYTES, index.total_bytes() as i64);
    Ok(index)
}

fn spill_if_over_budget(
    guest: &mut Guest,
    combine: bool,
    budget: usize,
    counters: &mut Counters,
) -> Result<(), TaskError> {
    let over = guest
        .sink_mut::<MapCollector>()
        .is_some_and(|c| c.buffer.bytes() >= budget);
    if !over {
        return Ok(());
    }
    let mut collector = guest
        .take_sink::<MapCollector>()
        .expect("the map sink stays in place during map");
    let combiner = if combine { Some(&mut *guest) } else { None };
    let result = spill(combiner, &mut collector, counters);
    guest.set_sink(collector);
    result
}

/// Sorts the buffer and writes it as a (combined) run.
fn spill(
    combiner: Option<&mut Guest>,
    collector: &mut MapCollector,
    counters: &mut Counters,
) -> Result<(), TaskError> {
    let path = collector.next_spill_path();
    collector.buffer.sort();
    let reducers = collector.buffer.reducers();
    let partitioner = collector.buffer.partitioner().clone();
    let buffer = &collector.buffer;
    let index = write_run(combiner, reducers, &partitioner, &path, counters, |p| {
        Ok(Box::new(buffer.partition(p)))
    })?;
    collector.buffer.clear();
    collector.spills.push((path, index));
    Ok(())
}

/// Streaming-mode map output: `key<TAB>value` lines into the collector.
struct MapLines {
    collector: MapCollector,
}

impl LineSink for MapLines {
    fn line(&mut self, line: &[u8], number: u64) -> Result<(), SinkError> {
        let Some(tab) = memchr::memchr(b'\t', line) else {
            return Err(SinkError::BadOutput(format!(
                "map output line {number} is not `key<TAB>value` (it has no TAB): {}",
                quote_line(line)
            )));
        };
        self.collector.accept(&line[..tab], &line[tab + 1..])
    }
}

/// A line for an error message: quoted, and cut if long.
pub(crate) fn quote_line(line: &[u8]) -> String {
    const SHOWN: usize = 200;
    let text = String::from_utf8_lossy(&line[..line.len().min(SHOWN)]);
    if line.len() > SHOWN {
        format!("{text:?}... ({} bytes)", line.len())
    } else {
        format!("{text:?}")
    }
}

/// A map task in streaming mode: the split's records go to the command's
/// stdin (each line followed by `\n` for `lines`; the file's bytes as they
/// are for `whole-file`), its stdout lines are the pairs.
fn map_streaming<R: Read>(
    runtime: &Runtime,
    module: &GuestModule,
    settings: &MapSettings,
    input: MapInput<R>,
    work_dir: &Path,
    output: &Path,
) -> TaskReport<MapOutputIndex> {
    let mut counters = Counters::default();
    // No combiner runs here, so the buffer spills as soon as it is full.
    let collector = MapCollector::new(settings, settings.sort_buffer.max(1 << 20), work_dir);
    let spec = CommandSpec {
        phase: "map",
        args: &settings.args,
        env: vec![
            ("QUERN_INPUT_FILE", input.file_name.clone()),
            ("QUERN_INPUT_FORMAT", input.format.as_str().to_owned()),
        ],
        limits: &settings.limits,
        cancel: settings.cancel.clone(),
    };
    let mut records: u64 = 0;
    let mut input_bytes: u64 = 0;
    let MapInput {
        reader,
        file_name,
        format,
        start,
        end,
    } = input;
    let run = runtime.run_command(module, &spec, MapLines { collector }, |mut stdin| {
        let read = crate::input::for_each_record(
            reader,
            &file_name,
            format,
            start,
            end,
            spec.limits.record_bytes,
            |_, value| {
                records += 1;
                match format {
                    InputFormat::Lines => stdin.write(&[value, b"\n"]),
                    InputFormat::WholeFile => stdin.write(&[value]),
                }
            },
        );
        input_bytes = read
            .and_then(|bytes| stdin.flush().map(|()| bytes))
            .map_err(|e| input_error(e, &file_name))?;
        Ok(())
    });
    counters.add(names::MAP_INPUT_RECORDS, records as i64);
    counters.add(names::MAP_INPUT_BYTES, input_bytes as i64);
    let outcome = run
        .outcome
        .and_then(|()| write_map_output(None, run.sink.collector, output, &mut counters));
    TaskReport {
        outcome,
        counters,
        logs: run.logs,
    }
}
