//! The host side of the WIT world: per-task state, the `host` interface the
//! guest imports, and where emitted pairs go.

use std::io;

use protocol::Counters;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::map::{CombineSink, MapCollector};
use crate::merge::{BoxedSource, Grouper};
use crate::reduce::OutputWriter;
use crate::runtime::GuestError;

wasmtime::component::bindgen!({
    path: "../guest-sdk/wit",
    world: "job",
    imports: { default: trappable },
});

/// Largest key or value a guest may emit: 256 MiB.
pub const MAX_FIELD_BYTES: usize = 256 << 20;
/// Most distinct counters one task may keep.
const MAX_COUNTERS: usize = 1000;
/// Bytes of values handed out per `next-values` call.
pub const VALUES_BATCH_BYTES: usize = 256 << 10;

/// Where the guest's emitted pairs go in the current phase.
pub(crate) enum Sink {
    /// No phase accepts pairs (during `init`).
    Closed,
    /// `map`: into the sort buffer.
    Map(Box<MapCollector>),
    /// `combine`: straight into a sorted run.
    Combine(Box<CombineSink>),
    /// `reduce`: output lines.
    Reduce(Box<OutputWriter>),
}

/// Why the host refused a pair or an output line.
#[derive(Debug)]
pub enum SinkError {
    /// The guest's output breaks the contract; the message says how.
    BadOutput(String),
    /// Writing it failed on the host.
    Io(io::Error),
}

impl From<io::Error> for SinkError {
    fn from(err: io::Error) -> Self {
        SinkError::Io(err)
    }
}

/// A failure the host noticed while the guest was running; it takes
/// precedence over the trap the host raised to stop the guest.
pub(crate) enum HostFailure {
    Guest(GuestError),
    Io(io::Error),
}

/// Caps guest memory and remembers whether the cap was hit, so the trap
/// that follows a failed allocation is reported as what it is.
pub(crate) struct MemoryLimiter {
    pub(crate) cap: usize,
    pub(crate) hit: bool,
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.cap {
            self.hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
    }
}

/// Everything a task's store holds.
pub struct TaskState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) sink: Sink,
    /// The reduce input, reachable from `next-values`.
    pub(crate) values: Option<Grouper<BoxedSource>>,
    /// Whether the last `reduce` batch ended in a cut group.
    pub(crate) partial_open: bool,
    pub(crate) counters: Counters,
    pub(crate) failure: Option<HostFailure>,
}

impl TaskState {
    pub(crate) fn new(wasi: WasiCtx, memory_cap: usize) -> Self {
        TaskState {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                cap: memory_cap,
                hit: false,
            },
            sink: Sink::Closed,
            values: None,
            partial_open: false,
            counters: Counters::default(),
            failure: None,
        }
    }

    fn refuse(&mut self, failure: HostFailure) -> wasmtime::Error {
        let text = match &failure {
            HostFailure::Guest(err) => err.to_string(),
            HostFailure::Io(err) => format!("host I/O error: {err}"),
        };
        self.failure = Some(failure);
        wasmtime::Error::msg(text)
    }

    fn accept(&mut self, key: &[u8], value: &[u8]) -> Result<(), SinkError> {
        match &mut self.sink {
            Sink::Closed => Err(SinkError::BadOutput(
                "emit called outside map, combine or reduce".into(),
            )),
            Sink::Map(collector) => collector.accept(key, value),
            Sink::Combine(sink) => sink.accept(key, value),
            Sink::Reduce(writer) => writer.accept(key, value),
        }
    }
}

impl WasiView for TaskState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Splits a pair batch, checking its framing.
fn next_field<'a>(batch: &'a [u8], pos: &mut usize) -> Result<&'a [u8], String> {
    let header = batch
        .get(*pos..*pos + 4)
        .ok_or("a pair batch ends inside a length")?;
    let len = u32::from_le_bytes(header.try_into().unwrap()) as usize;
    *pos += 4;
    if len > MAX_FIELD_BYTES {
        return Err(format!(
            "a key or value of {len} bytes is over the {MAX_FIELD_BYTES}-byte limit"
        ));
    }
    let field = batch
        .get(*pos..*pos + len)
        .ok_or("a pair batch ends inside a key or value")?;
    *pos += len;
    Ok(field)
}

impl quern::job::host::Host for TaskState {
    fn emit(&mut self, pairs: Vec<u8>) -> wasmtime::Result<()> {
        let mut pos = 0;
        while pos < pairs.len() {
            let pair =
                next_field(&pairs, &mut pos).and_then(|k| Ok((k, next_field(&pairs, &mut pos)?)));
            let (key, value) = match pair {
                Ok(pair) => pair,
                Err(msg) => return Err(self.refuse(HostFailure::Guest(GuestError::BadOutput(msg)))),
            };
            match self.accept(key, value) {
                Ok(()) => {}
                Err(SinkError::BadOutput(msg)) => {
                    return Err(self.refuse(HostFailure::Guest(GuestError::BadOutput(msg))));
                }
                Err(SinkError::Io(err)) => return Err(self.refuse(HostFailure::Io(err))),
            }
        }
        Ok(())
    }

    fn next_values(&mut self) -> wasmtime::Result<Vec<u8>> {
        let mut out = Vec::new();
        if !self.partial_open {
            return Ok(out);
        }
        let result = match &mut self.values {
            Some(grouper) => grouper.next_values(&mut out, VALUES_BATCH_BYTES),
            None => Ok(()),
        };
        if let Err(err) = result {
            return Err(self.refuse(HostFailure::Io(err)));
        }
        if out.is_empty() {
            self.partial_open = false;
        }
        Ok(out)
    }

    fn add_counters(&mut self, deltas: Vec<(String, i64)>) -> wasmtime::Result<()> {
        for (name, delta) in deltas {
            if self.counters.0.len() >= MAX_COUNTERS && !self.counters.0.contains_key(&name) {
                let msg = format!("more than {MAX_COUNTERS} distinct counters");
                return Err(self.refuse(HostFailure::Guest(GuestError::BadOutput(msg))));
            }
            self.counters.add(&name, delta);
        }
        Ok(())
    }
}
