//! Torn map output: a flipped byte or a truncated file in one map task's
//! output makes the reduce task fail with `FetchFailed` naming that map
//! task, never a silently different answer.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use protocol::{InputFormat, Limits, MapOutputIndex};
use worker::merge::BoxedSource;
use worker::reduce::ReduceSettings;
use worker::runfile::{open_segment, read_index};
use worker::{MapInput, MapSettings, TaskError, run_map, run_reduce};

use crate::support::{guest, name_of, native_wordcount, runtime, texts};

const REDUCERS: u32 = 2;

/// Runs one map task per input and returns each output file and index.
fn map_outputs(inputs: &[PathBuf], dir: &Path) -> Vec<(PathBuf, MapOutputIndex)> {
    let module = guest(examples_wasm::WORDCOUNT);
    let settings = MapSettings::new(REDUCERS);
    inputs
        .iter()
        .enumerate()
        .map(|(i, path)| {
            let input = MapInput {
                reader: File::open(path).unwrap(),
                file_name: name_of(path),
                format: InputFormat::Lines,
                start: 0,
                end: std::fs::metadata(path).unwrap().len(),
            };
            let output = dir.join(format!("map-{i}.out"));
            let report = run_map(runtime(), &module, &settings, input, dir, &output);
            let index = report.outcome.expect("map succeeds");
            let mut file = File::open(&output).unwrap();
            assert_eq!(read_index(&mut file).unwrap(), index, "the file's index");
            (output, index)
        })
        .collect()
}

fn segments(outputs: &[(PathBuf, MapOutputIndex)], partition: u32) -> Vec<BoxedSource> {
    outputs
        .iter()
        .map(|(path, index)| {
            Box::new(open_segment(path, &index.partitions[partition as usize]).unwrap())
                as BoxedSource
        })
        .collect()
}

fn reduce(
    outputs: &[(PathBuf, MapOutputIndex)],
    partition: u32,
    dir: &Path,
) -> Result<BTreeMap<String, String>, TaskError> {
    let settings = ReduceSettings {
        limits: Limits::default(),
        args: Vec::new(),
        separator: b"\t".to_vec(),
        cancel: Default::default(),
    };
    let tmp = dir.join(format!("part-{partition}.tmp"));
    let module = guest(examples_wasm::WORDCOUNT);
    let report = run_reduce(
        runtime(),
        &module,
        &settings,
        segments(outputs, partition),
        &tmp,
    );
    report.outcome?;
    let text = std::fs::read_to_string(&tmp).unwrap();
    Ok(text
        .lines()
        .map(|l| {
            let (k, v) = l.split_once('\t').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect())
}

fn flip_byte(path: &Path, at: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at as usize] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

fn three_inputs() -> Vec<PathBuf> {
    texts().into_iter().take(3).collect()
}

#[test]
fn intact_map_outputs_reduce_to_the_native_answer() {
    let dir = tempfile::tempdir().unwrap();
    let outputs = map_outputs(&three_inputs(), dir.path());
    let mut all = BTreeMap::new();
    for p in 0..REDUCERS {
        all.extend(reduce(&outputs, p, dir.path()).expect("intact input"));
    }
    assert_eq!(all, native_wordcount(&three_inputs()));
}

#[test]
fn a_flipped_byte_fails_the_fetch_of_that_map_output() {
    let dir = tempfile::tempdir().unwrap();
    let outputs = map_outputs(&three_inputs(), dir.path());
    let part = outputs[1].1.partitions[0];
    // Inside the first block's payload, past its 8-byte header.
    flip_byte(&outputs[1].0, part.offset + 9);

    // Reading the segment directly notices it.
    let mut segment = open_segment(&outputs[1].0, &part).unwrap();
    let read = (|| {
        while segment.advance()? {}
        Ok::<_, std::io::Error>(())
    })();
    let err = read.expect_err("the corruption is noticed");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);

    match reduce(&outputs, 0, dir.path()) {
        Err(TaskError::FetchFailed {
            source_index,
            message,
        }) => {
            assert_eq!(source_index, 1, "map output 1 was corrupted");
            assert!(message.contains("checksum"), "{message}");
        }
        other => panic!("expected FetchFailed, got {other:?}"),
    }
    // Partition 1 of the same file is intact and still reduces.
    reduce(&outputs, 1, dir.path()).expect("the other partition is intact");
}

#[test]
fn a_truncated_map_output_fails_the_fetch_of_that_map_output() {
    let dir = tempfile::tempdir().unwrap();
    let outputs = map_outputs(&three_inputs(), dir.path());
    let part = outputs[2].1.partitions[0];
    OpenOptions::new()
        .write(true)
        .open(&outputs[2].0)
        .unwrap()
        .set_len(part.offset + part.length / 2)
        .unwrap();
    let mut file = File::open(&outputs[2].0).unwrap();
    assert!(
        read_index(&mut file).is_err(),
        "the index went with the tail"
    );

    match reduce(&outputs, 0, dir.path()) {
        Err(TaskError::FetchFailed { source_index, .. }) => assert_eq!(source_index, 2),
        other => panic!("expected FetchFailed, got {other:?}"),
    }
}
