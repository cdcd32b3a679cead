//! Named counters: the built-in ones every task keeps and the ones a guest
//! bumps through the host. Summed per task and per job.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Input records a map task read.
pub const MAP_INPUT_RECORDS: &str = "map input records";
/// Input bytes a map task read.
pub const MAP_INPUT_BYTES: &str = "map input bytes";
/// Pairs the guest emitted from `map`.
pub const MAP_OUTPUT_RECORDS: &str = "map output records";
/// Records written to the map-output file (after the combiner).
pub const MAP_OUTPUT_MATERIALIZED_RECORDS: &str = "map output materialized records";
/// Bytes of the map-output file.
pub const MAP_OUTPUT_BYTES: &str = "map output bytes";
/// Sorted runs spilled to disk past the sort buffer.
pub const SPILLED_RUNS: &str = "spilled runs";
/// Records `combine` received.
pub const COMBINE_INPUT_RECORDS: &str = "combine input records";
/// Records `combine` emitted.
pub const COMBINE_OUTPUT_RECORDS: &str = "combine output records";
/// Shuffle records a reduce task read.
pub const REDUCE_INPUT_RECORDS: &str = "reduce input records";
/// Distinct keys a reduce task saw.
pub const REDUCE_INPUT_GROUPS: &str = "reduce input groups";
/// Shuffle bytes a reduce task read.
pub const REDUCE_SHUFFLE_BYTES: &str = "reduce shuffle bytes";
/// Lines a reduce task wrote.
pub const REDUCE_OUTPUT_RECORDS: &str = "reduce output records";
/// Bytes a reduce task wrote.
pub const REDUCE_OUTPUT_BYTES: &str = "reduce output bytes";

/// Distinct counters a guest may keep in one task.
pub const MAX_GUEST_COUNTERS: usize = 1000;
/// Distinct counters one task report may carry: the guest's and the
/// built-in ones.
pub const MAX_REPORTED: usize = MAX_GUEST_COUNTERS + 64;

/// Counter name to value. Ordered so that listings are stable.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(transparent)]
pub struct Counters(pub BTreeMap<String, i64>);

impl Counters {
    /// Adds `delta` to `name`.
    pub fn add(&mut self, name: &str, delta: i64) {
        match self.0.get_mut(name) {
            Some(v) => *v = v.saturating_add(delta),
            None => {
                self.0.insert(name.to_owned(), delta);
            }
        }
    }

    /// Adds every counter of `other`.
    pub fn merge(&mut self, other: &Counters) {
        for (name, delta) in &other.0 {
            self.add(name, *delta);
        }
    }

    /// The value of `name`, zero when never set.
    pub fn get(&self, name: &str) -> i64 {
        self.0.get(name).copied().unwrap_or(0)
    }
}
