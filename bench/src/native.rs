//! Word count compiled natively through the host's own machinery, the
//! baseline for the guest: the same line reader, the same sort buffer and
//! spill budget, the same run format, with the combiner's summing done in
//! Rust instead of in the guest.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use protocol::{InputFormat, MapOutputIndex};
use worker::merge::{Merge, RecordSource};
use worker::runfile::{self, RunWriter};
use worker::sort::SortBuffer;

/// Maps `input` (one split, the whole file) to a combined map-output file
/// at `output`, spilling combined runs to `work` past `budget` bytes.
pub fn word_count_map(
    input: &Path,
    reducers: u32,
    budget: usize,
    work: &Path,
    output: &Path,
) -> io::Result<MapOutputIndex> {
    let size = std::fs::metadata(input)?.len();
    let mut buffer = SortBuffer::new(reducers);
    let mut spills: Vec<(PathBuf, MapOutputIndex)> = Vec::new();
    worker::input::for_each_record(
        File::open(input)?,
        "input.txt",
        InputFormat::Lines,
        0,
        size,
        |_offset, line| {
            for word in String::from_utf8_lossy(line).split(|c: char| !c.is_alphabetic()) {
                if !word.is_empty() {
                    buffer.push(word.as_bytes(), b"1");
                }
            }
            if buffer.bytes() >= budget {
                let path = work.join(format!("native-spill-{}.run", spills.len()));
                buffer.sort();
                let index = write_combined(&path, reducers, |p| Ok(buffer.partition(p)))?;
                buffer.clear();
                spills.push((path, index));
            }
            Ok(())
        },
    )?;
    buffer.sort();
    if spills.is_empty() {
        return write_combined(output, reducers, |p| Ok(buffer.partition(p)));
    }
    if !buffer.is_empty() {
        let path = work.join(format!("native-spill-{}.run", spills.len()));
        let index = write_combined(&path, reducers, |p| Ok(buffer.partition(p)))?;
        spills.push((path, index));
    }
    let index = write_combined(output, reducers, |p| {
        let sources = spills
            .iter()
            .map(|(path, index)| runfile::open_segment(path, &index.partitions[p as usize]))
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Merge::new(sources))
    })?;
    for (path, _) in &spills {
        std::fs::remove_file(path)?;
    }
    Ok(index)
}

/// Writes a run file whose partition `p` is `source_for(p)` with the
/// counts of each key summed, synced to disk like the host's runs.
fn write_combined<S: RecordSource>(
    path: &Path,
    reducers: u32,
    mut source_for: impl FnMut(u32) -> io::Result<S>,
) -> io::Result<MapOutputIndex> {
    let mut writer = runfile::create(path)?;
    for p in 0..reducers {
        writer.start_partition();
        sum_counts(&mut writer, source_for(p)?)?;
        writer.end_partition()?;
    }
    let (out, index) = writer.finish()?;
    out.into_inner().map_err(|e| e.into_error())?.sync_data()?;
    Ok(index)
}

fn sum_counts<W: io::Write>(
    writer: &mut RunWriter<W>,
    mut source: impl RecordSource,
) -> io::Result<()> {
    let mut key: Option<Vec<u8>> = None;
    let mut sum: u64 = 0;
    while source.advance()? {
        if key.as_deref() != Some(source.key()) {
            if let Some(done) = &key {
                writer.push(done, sum.to_string().as_bytes())?;
            }
            key = Some(source.key().to_vec());
            sum = 0;
        }
        sum += std::str::from_utf8(source.value())
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| io::Error::other("a count is not a number"))?;
    }
    if let Some(done) = &key {
        writer.push(done, sum.to_string().as_bytes())?;
    }
    Ok(())
}
