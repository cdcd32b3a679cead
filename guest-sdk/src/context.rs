//! What a job function sees: its arguments, the emitter, counters and the
//! values of a key.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::batch::{self, Reader};
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

/// The task's side of the host: emits pairs, bumps counters, tells where
/// the records come from.
#[derive(Default)]
pub struct Context {
    pending: Vec<u8>,
    counters: HashMap<String, i64>,
    input: String,
}

impl Context {
    /// Emits one pair: to the shuffle from `map` and `combine`, as an output
    /// line from `reduce`.
    pub fn emit(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        batch::put(&mut self.pending, key.as_ref());
        batch::put(&mut self.pending, value.as_ref());
        if self.pending.len() >= EMIT_FLUSH_BYTES {
            self.flush_pairs();
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

    fn flush_pairs(&mut self) {
        if !self.pending.is_empty() {
            crate::__bindings::quern::job::host::emit(&self.pending);
            self.pending.clear();
        }
    }

    /// Hands everything buffered to the host; called at the end of every
    /// export call.
    pub(crate) fn flush(&mut self) {
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
}

impl<'a> Values<'a> {
    pub(crate) fn new(batch: Reader<'a>, in_batch: u32, streaming: bool) -> Self {
        Values {
            batch,
            in_batch,
            streaming,
            fetched: None,
            failed: None,
        }
    }

    /// Sums the values as decimal `u64`s (the word count's reduce).
    pub fn sum_u64(&mut self) -> Result<u64> {
        let mut total: u64 = 0;
        for value in self.by_ref() {
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
        while self.in_batch > 0 {
            self.in_batch -= 1;
            self.batch.field()?;
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
                        self.failed = Some(err);
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
        if self.in_batch > 0 {
            self.in_batch -= 1;
            return match self.batch.field() {
                Ok(value) => Some(Cow::Borrowed(value)),
                Err(err) => {
                    self.failed = Some(err);
                    self.in_batch = 0;
                    self.streaming = false;
                    None
                }
            };
        }
        self.next_fetched().map(Cow::Owned)
    }
}
