//! The plain word count a user would write instead of a job, the baseline
//! of every word-count figure: one thread, the input read whole, words are
//! runs of ASCII letters (the benchmark texts are ASCII, where this and the
//! guests' Unicode-letter split give the same words), counted in a
//! `HashMap` of byte slices with the standard hasher.

use std::collections::HashMap;
use std::io;
use std::path::Path;

use protocol::MapOutputIndex;

/// The count of each word of `text`.
pub fn word_counts(text: &[u8]) -> HashMap<&[u8], u64> {
    let mut counts: HashMap<&[u8], u64> = HashMap::new();
    for word in text.split(|b| !b.is_ascii_alphabetic()) {
        if !word.is_empty() {
            *counts.entry(word).or_insert(0) += 1;
        }
    }
    counts
}

/// Reads `path` and counts its words; returns the number of distinct
/// words (the counts themselves are compared by [`same_counts`]).
pub fn word_count_file(path: &Path) -> io::Result<HashMap<Vec<u8>, u64>> {
    let text = std::fs::read(path)?;
    Ok(word_counts(&text)
        .into_iter()
        .map(|(w, n)| (w.to_vec(), n))
        .collect())
}

/// The word counts a word-count map output file holds: each partition's
/// pairs, a word's counts summed (a word appears once per partition when
/// the job combined, once per occurrence when it did not).
pub fn map_output_counts(path: &Path, index: &MapOutputIndex) -> io::Result<HashMap<Vec<u8>, u64>> {
    let mut counts: HashMap<Vec<u8>, u64> = HashMap::new();
    for partition in &index.partitions {
        let mut segment = worker::runfile::open_segment(path, partition)?;
        while segment.advance()? {
            let n: u64 = std::str::from_utf8(segment.value())
                .ok()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| io::Error::other("a count is not a number"))?;
            *counts.entry(segment.key().to_vec()).or_insert(0) += n;
        }
    }
    Ok(counts)
}
