//! The host side of the WIT world: per-task state, the `host` interface the
//! guest imports, and the traits through which emitted pairs leave and
//! streamed values arrive. The runtime knows nothing of map or reduce: the
//! caller plugs in a [`PairSink`] and a [`ValueSource`] for each phase.

use std::any::Any;
use std::io;

use batch::Reader;
use protocol::Counters;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::GuestError;
use crate::sleep::{HasStop, Stop};

wasmtime::component::bindgen!({
    path: "../guest-sdk/wit",
    world: "job",
    imports: { default: trappable },
});

/// Largest key or value a guest may emit: 256 MiB.
pub const MAX_FIELD_BYTES: usize = 256 << 20;
/// Most distinct counters one task may keep.
const MAX_COUNTERS: usize = protocol::counters::MAX_GUEST_COUNTERS;
/// Bytes of values handed out per `next-values` call.
pub const VALUES_BATCH_BYTES: usize = 256 << 10;

/// Where the pairs a guest emits go: the sort buffer of a map task, the run
/// a combine writes, the output file of a reduce task.
pub trait PairSink: Any + Send {
    /// Takes one pair, or refuses it (the guest's call then fails).
    fn accept(&mut self, key: &[u8], value: &[u8]) -> Result<(), SinkError>;
}

/// Where `next-values` reads the rest of a long group from.
pub trait ValueSource: Any + Send {
    /// Appends a value batch of at most about `max_bytes` of the current
    /// group's next values to `out`; nothing when the group is done.
    fn next_values(&mut self, out: &mut Vec<u8>, max_bytes: usize) -> io::Result<()>;
}

/// Why the host refused a pair or an output line.
#[derive(Debug)]
pub enum SinkError {
    /// The guest's output breaks the contract; the message says how.
    BadOutput(String),
    /// Writing it failed on the host.
    Io(io::Error),
    /// Taking it would break a job limit (the output size).
    Limit(GuestError),
}

impl From<io::Error> for SinkError {
    fn from(err: io::Error) -> Self {
        SinkError::Io(err)
    }
}

impl From<SinkError> for HostFailure {
    fn from(err: SinkError) -> Self {
        match err {
            SinkError::BadOutput(msg) => HostFailure::Guest(GuestError::BadOutput(msg)),
            SinkError::Limit(err) => HostFailure::Guest(err),
            SinkError::Io(err) => HostFailure::Io(err),
        }
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
    pub(crate) sink: Option<Box<dyn PairSink>>,
    /// The reduce input, reachable from `next-values`.
    pub(crate) values: Option<Box<dyn ValueSource>>,
    /// Whether the last `reduce` batch ended in a cut group.
    pub(crate) partial_open: bool,
    pub(crate) counters: Counters,
    pub(crate) failure: Option<HostFailure>,
    stop: Stop,
}

impl HasStop for TaskState {
    fn stop(&self) -> &Stop {
        &self.stop
    }
}

impl TaskState {
    pub(crate) fn new(wasi: WasiCtx, memory_cap: usize, stop: Stop) -> Self {
        TaskState {
            stop,
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                cap: memory_cap,
                hit: false,
            },
            sink: None,
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
            None => Err(SinkError::BadOutput(
                "emit called outside map, combine, reduce or finish".into(),
            )),
            Some(sink) => sink.accept(key, value),
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

impl quern::job::host::Host for TaskState {
    fn emit(&mut self, pairs: Vec<u8>) -> wasmtime::Result<()> {
        let mut reader = Reader::with_limit(&pairs, MAX_FIELD_BYTES);
        while !reader.is_empty() {
            let (key, value) = match reader.pair() {
                Ok(pair) => pair,
                Err(err) => {
                    let msg = format!("a pair batch from the guest is malformed: {err}");
                    return Err(self.refuse(HostFailure::Guest(GuestError::BadOutput(msg))));
                }
            };
            if let Err(err) = self.accept(key, value) {
                return Err(self.refuse(err.into()));
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
            Some(source) => source.next_values(&mut out, VALUES_BATCH_BYTES),
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
