//! A reduce task: a streaming k-way merge of the partition's sorted
//! segments, `reduce` called once per key in key order with its values
//! streamed, and the output written to a temporary file the caller commits
//! by renaming.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use protocol::counters as names;
use protocol::{Counters, Limits, ModuleKind};

use crate::map::TaskReport;
use crate::merge::{BoxedSource, Fill, Grouper, Merge, RecordSource};
use crate::runtime::{
    Cancel, CommandSpec, Guest, GuestError, GuestModule, LineSink, PairSink, Runtime, SinkError,
    SourceError, TaskError, TaskLogs, TaskPlan, io_task_error,
};

/// Group-batch bytes per `reduce` call; a key with more values than fit
/// streams the rest through `next-values`.
const REDUCE_BATCH_BYTES: usize = 256 << 10;

/// How to run one reduce task.
#[derive(Debug, Clone)]
pub struct ReduceSettings {
    /// Sandbox limits.
    pub limits: Limits,
    /// The job's arguments.
    pub args: Vec<(String, String)>,
    /// Between key and value on each output line (a tab by default).
    pub separator: Vec<u8>,
    /// Stops the attempt from outside.
    pub cancel: Cancel,
}

/// What a reduce task wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReduceOutput {
    /// Output lines.
    pub records: u64,
    /// Output bytes.
    pub bytes: u64,
}

/// Output lines `key SEP value\n`, or `key\n` when the value is empty.
pub(crate) struct OutputWriter {
    out: BufWriter<File>,
    separator: Vec<u8>,
    records: u64,
    bytes: u64,
    /// The job's `limits.output_bytes`.
    limit: u64,
}

impl PairSink for OutputWriter {
    fn accept(&mut self, key: &[u8], value: &[u8]) -> Result<(), SinkError> {
        let mut bytes = key.len() as u64 + 1;
        if !value.is_empty() {
            bytes += (self.separator.len() + value.len()) as u64;
        }
        self.count(bytes)?;
        self.out.write_all(key)?;
        if !value.is_empty() {
            self.out.write_all(&self.separator)?;
            self.out.write_all(value)?;
        }
        self.out.write_all(b"\n")?;
        Ok(())
    }
}

impl OutputWriter {
    /// Counts a line of `bytes` about to be written, refusing it if the
    /// output would grow past the job's limit.
    fn count(&mut self, bytes: u64) -> Result<(), SinkError> {
        if self.bytes + bytes > self.limit {
            return Err(SinkError::Limit(GuestError::OutputTooLarge {
                limit: self.limit,
            }));
        }
        self.records += 1;
        self.bytes += bytes;
        Ok(())
    }

    /// A streaming-mode output line, copied as it is.
    fn accept_line(&mut self, line: &[u8]) -> Result<(), SinkError> {
        self.count(line.len() as u64 + 1)?;
        self.out.write_all(line)?;
        self.out.write_all(b"\n")?;
        Ok(())
    }

    fn finish(self) -> io::Result<ReduceOutput> {
        let file = self.out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(ReduceOutput {
            records: self.records,
            bytes: self.bytes,
        })
    }
}

/// Tags a segment's I/O errors with its index.
struct Tagged<S> {
    index: usize,
    inner: S,
}

impl<S: RecordSource> RecordSource for Tagged<S> {
    fn advance(&mut self) -> io::Result<bool> {
        self.inner.advance().map_err(|inner| {
            io::Error::new(
                inner.kind(),
                SourceError {
                    index: self.index,
                    inner,
                },
            )
        })
    }
    fn key(&self) -> &[u8] {
        self.inner.key()
    }
    fn value(&self) -> &[u8] {
        self.inner.value()
    }
}

/// Runs one reduce task attempt over `segments` (one sorted stream per map
/// task, in map task order) and writes the output to `tmp_output`.
pub fn run_reduce(
    runtime: &Runtime,
    module: &GuestModule,
    settings: &ReduceSettings,
    segments: Vec<BoxedSource>,
    tmp_output: &Path,
) -> TaskReport<ReduceOutput> {
    if module.kind() == ModuleKind::Command {
        return reduce_streaming(runtime, module, settings, segments, tmp_output);
    }
    let mut counters = Counters::default();
    let plan = TaskPlan {
        cancel: settings.cancel.clone(),
        ..TaskPlan::reduce()
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
    let outcome = reduce_with(&mut guest, settings, segments, tmp_output, &mut counters);
    counters.merge(guest.counters());
    TaskReport {
        outcome,
        counters,
        logs: guest.logs(),
    }
}

/// The merged reduce input, its errors naming the segment they came from.
fn merged(segments: Vec<BoxedSource>) -> BoxedSource {
    let tagged: Vec<BoxedSource> = segments
        .into_iter()
        .enumerate()
        .map(|(index, inner)| Box::new(Tagged { index, inner }) as BoxedSource)
        .collect();
    Box::new(Merge::new(tagged))
}

impl OutputWriter {
    fn create(path: &Path, separator: &[u8], limit: u64) -> io::Result<Self> {
        Ok(OutputWriter {
            out: BufWriter::with_capacity(256 << 10, File::create(path)?),
            separator: separator.to_vec(),
            records: 0,
            bytes: 0,
            limit,
        })
    }
}

fn reduce_with(
    guest: &mut Guest,
    settings: &ReduceSettings,
    segments: Vec<BoxedSource>,
    tmp_output: &Path,
    counters: &mut Counters,
) -> Result<ReduceOutput, TaskError> {
    let merge = merged(segments);
    let writer = OutputWriter::create(
        tmp_output,
        &settings.separator,
        settings.limits.output_bytes,
    )?;
    guest.set_values(Box::new(Grouper::new(merge)));
    guest.set_sink(Box::new(writer));

    let mut batch = Vec::with_capacity(REDUCE_BATCH_BYTES + 4096);
    let result = (|| loop {
        let grouper = guest
            .values_mut::<Grouper<BoxedSource>>()
            .expect("reduce input in place");
        let fill = grouper
            .fill(&mut batch, REDUCE_BATCH_BYTES, true)
            .map_err(io_task_error)?;
        if !batch.is_empty() {
            settings.cancel.check()?;
            guest.reduce(&batch, fill != Fill::Partial)?;
        }
        match fill {
            Fill::End => return guest.finish(),
            Fill::Full => {}
            Fill::Partial => {
                let grouper = guest
                    .values_mut::<Grouper<BoxedSource>>()
                    .expect("reduce input in place");
                grouper.skip_rest_of_group().map_err(io_task_error)?;
            }
        }
    })();

    let grouper = guest
        .take_values::<Grouper<BoxedSource>>()
        .expect("reduce input in place");
    let writer = guest
        .take_sink::<OutputWriter>()
        .expect("the reduce sink stays in place during reduce");
    counters.add(names::REDUCE_INPUT_RECORDS, grouper.records as i64);
    counters.add(names::REDUCE_INPUT_GROUPS, grouper.groups as i64);
    result?;
    let output = writer.finish()?;
    counters.add(names::REDUCE_OUTPUT_RECORDS, output.records as i64);
    counters.add(names::REDUCE_OUTPUT_BYTES, output.bytes as i64);
    Ok(output)
}

/// Streaming-mode reduce output: each stdout line is an output line.
struct ReduceLines {
    writer: OutputWriter,
}

impl LineSink for ReduceLines {
    fn line(&mut self, line: &[u8], _number: u64) -> Result<(), SinkError> {
        self.writer.accept_line(line)
    }
}

/// A reduce task in streaming mode: the merged partition goes to the
/// command's stdin as key-sorted `key<TAB>value` lines; its stdout lines
/// are the output, copied as they are (the separator setting does not
/// apply).
fn reduce_streaming(
    runtime: &Runtime,
    module: &GuestModule,
    settings: &ReduceSettings,
    segments: Vec<BoxedSource>,
    tmp_output: &Path,
) -> TaskReport<ReduceOutput> {
    let mut counters = Counters::default();
    let writer = match OutputWriter::create(tmp_output, b"", settings.limits.output_bytes) {
        Ok(writer) => writer,
        Err(err) => {
            return TaskReport {
                outcome: Err(err.into()),
                counters,
                logs: TaskLogs::default(),
            };
        }
    };
    let spec = CommandSpec {
        phase: "reduce",
        args: &settings.args,
        env: Vec::new(),
        limits: &settings.limits,
        cancel: settings.cancel.clone(),
    };
    let mut records: u64 = 0;
    let mut groups: u64 = 0;
    let run = runtime.run_command(module, &spec, ReduceLines { writer }, |mut stdin| {
        let mut merge = merged(segments);
        let mut last_key: Vec<u8> = Vec::new();
        while merge.advance().map_err(io_task_error)? {
            let key = merge.key();
            if records == 0 || key != last_key.as_slice() {
                groups += 1;
                last_key.clear();
                last_key.extend_from_slice(key);
            }
            records += 1;
            stdin.write(&[key, b"\t", merge.value(), b"\n"])?;
        }
        stdin.flush()?;
        Ok(())
    });
    counters.add(names::REDUCE_INPUT_RECORDS, records as i64);
    counters.add(names::REDUCE_INPUT_GROUPS, groups as i64);
    let outcome = run.outcome.and_then(|()| {
        let output = run.sink.writer.finish()?;
        counters.add(names::REDUCE_OUTPUT_RECORDS, output.records as i64);
        counters.add(names::REDUCE_OUTPUT_BYTES, output.bytes as i64);
        Ok(output)
    });
    TaskReport {
        outcome,
        counters,
        logs: run.logs,
    }
}
