//! Fault tolerance, proven with real processes: `quern serve` and `quern
//! worker` run as children of the test and are killed with SIGKILL, frozen
//! with SIGSTOP or cut off by fault-injecting proxies, and every job's
//! output is compared with the local run. Each test that makes random
//! choices draws them from a seed, printed when it fails;
//! `QUERN_CHAOS_SEED=N` replays those choices (the timing of real
//! processes still varies from run to run).
//!
//! This file holds the harness; the tests live in `chaos/`.

mod api;
mod coordinator;
mod crash;
mod guest;
mod lab;
mod lost;
mod network;
mod processes;
mod proxy;
mod straggler;
mod zombie;

use std::fmt;
use std::time::Duration;

pub use api::{Api, OutputWatch, assert_output, job_spec};
pub use processes::{Chaos, NewWorker, Options};

/// The variable that replays a chaos test's random choices.
pub const SEED_VAR: &str = "QUERN_CHAOS_SEED";

/// What a test without random choices names in place of a seed.
pub const NO_SEED: &str = "no random choices";

/// Longest a chaos job may take before the test gives up on it.
pub const JOB_TIMEOUT: Duration = Duration::from_secs(240);

/// A test's seed: from `QUERN_CHAOS_SEED`, or fresh. Shown when the test
/// starts (in the captured output) and again if it panics.
pub struct Seed {
    test: &'static str,
    value: u64,
}

impl Seed {
    pub fn new(test: &'static str) -> Self {
        let value = match std::env::var(SEED_VAR) {
            Ok(text) if !text.trim().is_empty() => text
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("{SEED_VAR}={text:?} is not a number")),
            _ => {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64;
                Rng::new(nanos ^ (u64::from(std::process::id()) << 32)).next() % 1_000_000_000
            }
        };
        eprintln!("{test}: {SEED_VAR}={value}");
        Seed { test, value }
    }

    pub fn value(&self) -> u64 {
        self.value
    }

    /// A generator for one purpose; different `stream`s give independent
    /// sequences, so adding a draw to one does not change the others.
    pub fn rng(&self, stream: u64) -> Rng {
        Rng::new(self.value ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }
}

impl fmt::Display for Seed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SEED_VAR}={}", self.value)
    }
}

impl Drop for Seed {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "{} failed; replay its choices with {SEED_VAR}={}",
                self.test, self.value
            );
        }
    }
}

/// SplitMix64: small, seedable and the same on every platform and
/// dependency version.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// True once in `n` times.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    /// A duration between `lo` and `hi` milliseconds.
    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi.saturating_sub(lo) + 1))
    }
}

/// Milliseconds since the Unix epoch, the unit of the API's timestamps.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
