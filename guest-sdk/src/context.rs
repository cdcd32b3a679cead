//! What a job function sees: its arguments, the emitter, counters and the
//! values of a key.

use std::borrow::Cow;
use std::collections::HashMap;

use batch::Reader;

use crate::table::Table;
use crate::{Error, Result};

/// Pairs are handed to the host once this many bytes are buffered, so a
/// batch crosses the boundary in one call.
const EMIT_FLUSH_BYTES: usize = 64 * 1024;

/// The job's arguments, from `--arg name=value` on submit.
#[derive(Debug, Default, Clone)]
pub struct Args {
    pairs: Vec<(String, String)>,
}

impl Args {
    pub(crate) fn new(pairs: Vec<(String, String)>) -> Self {
        Args { pairs }
    }

    /// The value of the argument `name`, if given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of the argument `name`, or an error naming it.
    pub fn require(&self, name: &str) -> Result<&str> {
        self.get(name).ok_or_else(|| {
            Error::msg(format!(
                "missing job argument `{name}` (pass --arg {name}=...)"
            ))
        })
    }

    /// Every argument in the order given.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }
}

/// Where [`Context::emit`] sends a pair.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
enum Route {
    /// Straight to the host, in batches.
    #[default]
    Host,
    /// Into the combining table (a map task of a job that combines).
    Table,
    /// Into the capture of a combine the SDK runs on the table.
    Capture,
}

/// What a combine run on the table emitted.
#[derive(Default)]
struct Capture {
    key: Vec<u8>,
    values: Vec<u8>,
    stray: Option<Vec<u8>>,
}

/// The task's side of the host: emits pairs, bumps counters, tells where
/// the records come from.
#[derive(Default)]
pub struct Context {
    pending: Vec<u8>,
    counters: HashMap<String, i64>,
    input: String,
    route: Route,
    table: Option<Table>,
    capture: Capture,
}

impl Context {
    /// Emits one pair: to the shuffle from `map` and `combine`, as an output
    /// line from `reduce`.
    ///
    /// In a map task of a job with a combiner, pairs are held in a table
    /// and combined before they leave the guest; the job sees no
    /// difference but speed.
    #[inline]
    pub fn emit(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        let (key, value) = (key.as_ref(), value.as_ref());
        match self.route {
            Route::Host => self.emit_to_host(key, value),
            Route::Table => {
                let table = self.table.as_mut().expect("the table route has a table");
                table.add(key, value);
                if table.over_hard_limit() {
                    self.spill_table_uncombined();
                }
            }
            Route::Capture => {
                if key == self.capture.key.as_slice() {
                    batch::put(&mut self.capture.values, value);
                } else if self.capture.stray.is_none() {
                    self.capture.stray = Some(key.to_vec());
                }
            }
        }
    }

    /// Adds `delta` to the user counter `name`, summed per task and per job.
    pub fn count(&mut self, name: &str, delta: i64) {
        match self.counters.get_mut(name) {
            Some(total) => *total += delta,
            None => {
                self.counters.insert(name.to_owned(), delta);
            }
        }
    }

    /// The name of the input file the current `map` records come from
    /// (empty outside `map`).
    pub fn input(&self) -> &str {
        &self.input
    }

    pub(crate) fn set_input(&mut self, input: String) {
        self.input = input;
    }

    /// Turns on in-mapper combining with a table of `budget` bytes.
    pub(crate) fn hold_back(&mut self, budget: usize) {
        self.table = Some(Table::new(budget));
    }

    /// Starts an export call whose pairs may be held back.
    pub(crate) fn begin_map(&mut self) {
        if self.table.is_some() {
            self.route = Route::Table;
        }
    }

    pub(crate) fn table_mut(&mut self) -> Option<&mut Table> {
        self.table.as_mut()
    }

    #[inline]
    fn emit_to_host(&mut self, key: &[u8], value: &[u8]) {
        batch::put_pair(&mut self.pending, key, value);
        if self.pending.len() >= EMIT_FLUSH_BYTES {
            self.flush_pairs();
        }
    }

    /// Emits a key with each value of a value batch.
    pub(crate) fn emit_values(&mut self, key: &[u8], values: &[u8]) -> Result {
        let mut reader = Reader::new(values);
        while !reader.is_empty() {
            let value = reader.field().map_err(Error::msg)?;
            self.emit_to_host(key, value);
        }
        Ok(())
    }

    /// A single call emitted past twice the budget: the table goes to the
    /// host as it is (the host sorts and combines it), keeping memory
    /// bounded whatever one call emits.
    fn spill_table_uncombined(&mut self) {
        let Some(table) = self.table.as_mut() else {
            return;
        };
        for mut slot in table.drain() {
            // The table's own encoding: it cannot be malformed.
            let (runs, count) = slot.take_runs();
            let _ = self.emit_runs(&slot.key, &runs, count);
        }
    }

    /// Emits a key with each value of a run batch.
    pub(crate) fn emit_runs(&mut self, key: &[u8], runs: &[u8], count: u32) -> Result {
        let mut values = Values::from_runs(runs, count);
        for value in values.by_ref() {
            self.emit_to_host(key, &value);
        }
        values.finish().map(|_| ()).map_err(Error::msg)
    }

    /// Runs the job's `combine` on one key's values (a run batch of
    /// `count` values), returning the values it emitted as a value batch.
    pub(crate) fn run_combine<J: crate::Job>(
        &mut self,
        job: &mut J,
        key: &[u8],
        runs: &[u8],
        count: u32,
    ) -> Result<Vec<u8>> {
        let route = std::mem::replace(&mut self.route, Route::Capture);
        self.capture.key.clear();
        self.capture.key.extend_from_slice(key);
        self.capture.stray = None;
        let mut given = Values::from_runs(runs, count);
        let result = job.combine(key, &mut given, self);
        let rest = given.finish();
        self.route = route;
        result?;
        rest.map_err(Error::msg)?;
        if let Some(stray) = self.capture.stray.take() {
            return Err(Error::msg(format!(
                "combine emitted key {:?} while combining key {:?}; it must emit pairs under the key it was given",
                String::from_utf8_lossy(&stray),
                String::from_utf8_lossy(key)
            )));
        }
        Ok(std::mem::take(&mut self.capture.values))
    }

    fn flush_pairs(&mut self) {
        if !self.pending.is_empty() {
            crate::__bindings::quern::job::host::emit(&self.pending);
            self.pending.clear();
        }
    }

    /// Hands everything buffered to the host; called at the end of every
    /// export call. Pairs held in the table stay there.
    pub(crate) fn flush(&mut self) {
        self.route = Route::Host;
        self.flush_pairs();
        if !self.counters.is_empty() {
            let deltas: Vec<(String, i64)> = self.counters.drain().collect();
            crate::__bindings::quern::job::host::add_counters(&deltas);
        }
    }
}

/// The values of one key, in the order the shuffle delivered them.
///
/// It is an iterator of byte slices; values past the current batch are
/// fetched from the host as the iterator advances, so a key with millions
/// of values runs in constant memory.
pub struct Values<'a> {
    batch: Reader<'a>,
    in_batch: u32,
    streaming: bool,
    fetched: Option<(Vec<u8>, usize)>,
    failed: Option<String>,
    /// The batch holds runs (`value, u32 repeats`), the combining table's
    /// own encoding, instead of plain values.
    runs: bool,
    run_value: &'a [u8],
    run_left: u32,
}

impl<'a> Values<'a> {
    pub(crate) fn new(batch: Reader<'a>, in_batch: u32, streaming: bool) -> Self {
        Values {
            batch,
            in_batch,
            streaming,
            fetched: None,
            failed: None,
            runs: false,
            run_value: &[],
            run_left: 0,
        }
    }

    /// The `count` values of a run batch (see [`crate::table`]).
    pub(crate) fn from_runs(runs: &'a [u8], count: u32) -> Self {
        Values {
            runs: true,
            ..Values::new(Reader::new(runs), count, false)
        }
    }

    /// Sums the values as decimal `u64`s (the word count's reduce).
    pub fn sum_u64(&mut self) -> Result<u64> {
        let mut total: u64 = 0;
        for value in self.by_ref() {
            // Plain digits (what a word count's values are) need neither
            // UTF-8 checks nor trimming; anything else takes the long way.
            if !value.is_empty() && value.len() <= 19 && value.iter().all(u8::is_ascii_digit) {
                let n = value.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
                total = total
                    .checked_add(n)
                    .ok_or_else(|| Error::msg("sum overflows u64"))?;
                continue;
            }
            let text =
                std::str::from_utf8(&value).map_err(|_| Error::msg("a value is not UTF-8 text"))?;
            let n: u64 = text
                .trim()
                .parse()
                .map_err(|_| Error::msg(format!("value {text:?} is not a whole number")))?;
            total = total
                .checked_add(n)
                .ok_or_else(|| Error::msg("sum overflows u64"))?;
        }
        Ok(total)
    }

    /// Skips the values nobody read, leaving the batch at the next group.
    pub(crate) fn finish(mut self) -> std::result::Result<Reader<'a>, String> {
        if self.runs {
            return match self.failed {
                Some(err) => Err(err),
                None => Ok(self.batch),
            };
        }
        while self.in_batch > 0 {
            self.in_batch -= 1;
            self.batch.field().map_err(|e| malformed(&e))?;
        }
        match self.failed {
            Some(err) => Err(err),
            None => Ok(self.batch),
        }
    }

    fn next_fetched(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some((buf, pos)) = &mut self.fetched
                && *pos < buf.len()
            {
                let mut reader = Reader::new(&buf[*pos..]);
                let value = match reader.field() {
                    Ok(value) => value.to_vec(),
                    Err(err) => {
                        self.failed = Some(malformed(&err));
                        self.streaming = false;
                        return None;
                    }
                };
                *pos += 4 + value.len();
                return Some(value);
            }
            if !self.streaming {
                return None;
            }
            let next = crate::__bindings::quern::job::host::next_values();
            if next.is_empty() {
                self.streaming = false;
                self.fetched = None;
                return None;
            }
            self.fetched = Some((next, 0));
        }
    }
}

impl<'a> Iterator for Values<'a> {
    type Item = Cow<'a, [u8]>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.runs {
            if self.in_batch == 0 {
                return None;
            }
            if self.run_left == 0 {
                match (self.batch.field(), self.batch.u32()) {
                    (Ok(value), Ok(repeats)) if repeats > 0 => {
                        self.run_value = value;
                        self.run_left = repeats;
                    }
                    _ => {
                        self.failed = Some("the combining table is corrupt".into());
                        self.in_batch = 0;
                        return None;
                    }
                }
            }
            self.run_left -= 1;
            self.in_batch -= 1;
            return Some(Cow::Borrowed(self.run_value));
        }
        if self.in_batch > 0 {
            self.in_batch -= 1;
            return match self.batch.field() {
                Ok(value) => Some(Cow::Borrowed(value)),
                Err(err) => {
                    self.failed = Some(malformed(&err));
                    self.in_batch = 0;
                    self.streaming = false;
                    None
                }
            };
        }
        self.next_fetched().map(Cow::Owned)
    }
}

/// The message for a batch from the host that breaks the framing.
pub(crate) fn malformed(err: &batch::Malformed) -> String {
    format!("malformed batch from the host: {err}")
}
