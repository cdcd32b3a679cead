//! A reduce task: a streaming k-way merge of the partition's sorted
//! segments, `reduce` called once per key in key order with its values
//! streamed, and the output written to a temporary file the caller commits
//! by renaming.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use protocol::Counters;
use protocol::Limits;
use protocol::counters as names;

use crate::map::TaskReport;
use crate::merge::{BoxedSource, Fill, Grouper, Merge, RecordSource};
use crate::runtime::{Guest, GuestModule, Runtime, Sink, SinkError, TaskError, TaskLogs};

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
}

/// What a reduce task wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReduceOutput {
    /// Output lines.
    pub records: u64,
    /// Output bytes.
    pub bytes: u64,
}

/// Output lines `key SEP value\n`.
pub(crate) struct OutputWriter {
    out: BufWriter<File>,
    separator: Vec<u8>,
    records: u64,
    bytes: u64,
}

impl OutputWriter {
    pub(crate) fn accept(&mut self, key: &[u8], value: &[u8]) -> Result<(), SinkError> {
        self.out.write_all(key)?;
        self.out.write_all(&self.separator)?;
        self.out.write_all(value)?;
        self.out.write_all(b"\n")?;
        self.records += 1;
        self.bytes += (key.len() + self.separator.len() + value.len() + 1) as u64;
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

/// An error from segment `index`, so the failure names the map task whose
/// output must be produced again.
#[derive(Debug)]
struct SourceError {
    index: usize,
    inner: io::Error,
}

impl std::fmt::Display for SourceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.inner)
    }
}

impl std::error::Error for SourceError {}

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

/// The task error for an I/O error met while merging.
pub(crate) fn merge_error(err: io::Error) -> TaskError {
    if let Some(source) = err.get_ref().and_then(|e| e.downcast_ref::<SourceError>()) {
        return TaskError::FetchFailed {
            source_index: source.index,
            message: source.inner.to_string(),
        };
    }
    TaskError::Host(anyhow::Error::from(err).context("reduce input"))
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
    let mut counters = Counters::default();
    let mut guest = match runtime.instantiate(module, &settings.limits, &settings.args) {
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

fn reduce_with(
    guest: &mut Guest,
    settings: &ReduceSettings,
    segments: Vec<BoxedSource>,
    tmp_output: &Path,
    counters: &mut Counters,
) -> Result<ReduceOutput, TaskError> {
    let tagged: Vec<BoxedSource> = segments
        .into_iter()
        .enumerate()
        .map(|(index, inner)| Box::new(Tagged { index, inner }) as BoxedSource)
        .collect();
    let merge: BoxedSource = Box::new(Merge::new(tagged));
    let file = File::create(tmp_output)?;
    let state = guest.state();
    state.values = Some(Grouper::new(merge));
    state.sink = Sink::Reduce(Box::new(OutputWriter {
        out: BufWriter::with_capacity(256 << 10, file),
        separator: settings.separator.clone(),
        records: 0,
        bytes: 0,
    }));

    let mut batch = Vec::with_capacity(REDUCE_BATCH_BYTES + 4096);
    let result = (|| loop {
        let grouper = guest
            .state()
            .values
            .as_mut()
            .expect("reduce input in place");
        let fill = grouper
            .fill(&mut batch, REDUCE_BATCH_BYTES, true)
            .map_err(merge_error)?;
        if !batch.is_empty() {
            guest.reduce(&batch, fill != Fill::Partial)?;
        }
        match fill {
            Fill::End => return Ok::<_, TaskError>(()),
            Fill::Full => {}
            Fill::Partial => {
                let grouper = guest
                    .state()
                    .values
                    .as_mut()
                    .expect("reduce input in place");
                grouper.skip_rest_of_group().map_err(merge_error)?;
            }
        }
    })();

    let state = guest.state();
    let grouper = state.values.take().expect("reduce input in place");
    let Sink::Reduce(writer) = std::mem::replace(&mut state.sink, Sink::Closed) else {
        unreachable!("the reduce sink stays in place during reduce");
    };
    counters.add(names::REDUCE_INPUT_RECORDS, grouper.records as i64);
    counters.add(names::REDUCE_INPUT_GROUPS, grouper.groups as i64);
    result?;
    let output = writer.finish()?;
    counters.add(names::REDUCE_OUTPUT_RECORDS, output.records as i64);
    counters.add(names::REDUCE_OUTPUT_BYTES, output.bytes as i64);
    Ok(output)
}
