//! Whole jobs through the local runner over the eight example texts,
//! checked against native computations across split sizes, reducer counts
//! and with the combiner on and off.

use protocol::counters as names;
use worker::local::LocalJob;

use crate::support::{guest, native_index, native_wordcount, read_output, run, texts};

/// (split size, reducers, combine). Small splits make hundreds of map tasks
/// (lines cut at split ends everywhere); 64 MiB is one split per file.
const GRID: &[(u64, u32, bool)] = &[
    (4 << 10, 10, true),
    (64 << 10, 3, false),
    (1 << 20, 1, true),
    (64 << 20, 7, true),
    (64 << 20, 2, false),
];

fn job(split_size: u64, reducers: u32, combine: bool, out: &std::path::Path) -> LocalJob {
    let mut job = LocalJob::new(texts(), reducers, out.to_path_buf());
    job.split_size = split_size;
    job.combine = combine;
    job
}

#[test]
fn wordcount_matches_native_counts() {
    let module = guest(examples_wasm::WORDCOUNT);
    let expected = native_wordcount(&texts());
    let total_words: i64 = expected.values().map(|n| n.parse::<i64>().unwrap()).sum();
    let input_bytes: u64 = texts()
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    for &(split_size, reducers, combine) in GRID {
        let dir = tempfile::tempdir().unwrap();
        let job = job(split_size, reducers, combine, &dir.path().join("out"));
        let report = run(&module, &job);
        let got = read_output(&job.output, reducers, b"\t");
        assert!(
            got == expected,
            "split {split_size}, R={reducers}, combine={combine}: output differs from native"
        );

        let expected_tasks: u64 = texts()
            .iter()
            .map(|p| std::fs::metadata(p).unwrap().len().div_ceil(split_size))
            .sum();
        assert_eq!(report.map_tasks as u64, expected_tasks);
        let c = &report.counters;
        assert_eq!(c.get(names::MAP_INPUT_BYTES) as u64, input_bytes);
        assert_eq!(c.get(names::MAP_OUTPUT_RECORDS), total_words);
        assert_eq!(c.get(names::REDUCE_OUTPUT_RECORDS), expected.len() as i64);
        assert_eq!(c.get(names::REDUCE_INPUT_GROUPS), expected.len() as i64);
        if combine {
            assert_eq!(c.get(names::COMBINE_INPUT_RECORDS), total_words);
            assert!(c.get(names::MAP_OUTPUT_MATERIALIZED_RECORDS) < total_words);
        } else {
            assert_eq!(c.get(names::COMBINE_INPUT_RECORDS), 0);
            assert_eq!(c.get(names::MAP_OUTPUT_MATERIALIZED_RECORDS), total_words);
        }
    }
}

#[test]
fn indexer_matches_native_index() {
    let module = guest(examples_wasm::INDEXER);
    let expected = native_index(&texts());
    // Spot-check the native side so both cannot be wrong the same way.
    assert!(expected["Gregor"].ends_with("pg-metamorphosis.txt"));
    assert!(expected["the"].starts_with("8 pg-being_ernest.txt,pg-dorian_gray.txt,"));
    for &(split_size, reducers, combine) in GRID {
        let dir = tempfile::tempdir().unwrap();
        let job = job(split_size, reducers, combine, &dir.path().join("out"));
        run(&module, &job);
        let got = read_output(&job.output, reducers, b"\t");
        assert!(
            got == expected,
            "split {split_size}, R={reducers}, combine={combine}: index differs from native"
        );
    }
}

#[test]
fn a_rerun_replaces_the_previous_output() {
    let module = guest(examples_wasm::WORDCOUNT);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    run(&module, &job(64 << 20, 5, true, &out));
    // Fewer reducers the second time: the stale parts 2..4 must go.
    let job = job(64 << 20, 2, true, &out);
    run(&module, &job);
    assert_eq!(read_output(&out, 2, b"\t"), native_wordcount(&texts()));
}
