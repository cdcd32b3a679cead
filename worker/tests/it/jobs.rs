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
        assert_eq!(c.get(names::REDUCE_OUTPUT_RECORDS), expected.len() as i64);
        assert_eq!(c.get(names::REDUCE_INPUT_GROUPS), expected.len() as i64);
        if combine {
            // The guest combined its pairs before emitting them: far fewer
            // cross the boundary than there are words, and the host's
            // combine sees exactly those.
            let emitted = c.get(names::MAP_OUTPUT_RECORDS);
            assert!(emitted < total_words, "{emitted} of {total_words}");
            if split_size >= 1 << 20 {
                assert!(emitted * 4 < total_words, "{emitted} of {total_words}");
            }
            assert_eq!(c.get(names::COMBINE_INPUT_RECORDS), emitted);
            assert!(c.get(names::MAP_OUTPUT_MATERIALIZED_RECORDS) <= emitted);
        } else {
            assert_eq!(c.get(names::MAP_OUTPUT_RECORDS), total_words);
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

/// In-guest combining with the default buffer, a 1 KiB buffer (the table
/// is combined and emitted every few dozen distinct words) and a 64 KiB
/// one, and no combining: the same output for every example guest with a
/// combiner, and more pairs crossing the boundary the smaller the buffer.
#[test]
fn in_guest_combining_gives_the_same_output_at_any_buffer() {
    for module_path in [examples_wasm::WORDCOUNT, examples_wasm::INDEXER] {
        let module = guest(module_path);
        let mut outputs = Vec::new();
        let mut emitted = Vec::new();
        for (combine, buffer) in [
            (true, None),
            (true, Some(64 << 10)),
            (true, Some(1 << 10)),
            (false, None),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let mut job = job(1 << 20, 3, combine, &dir.path().join("out"));
            job.combine_buffer = buffer;
            let report = run(&module, &job);
            outputs.push(read_output(&job.output, 3, b"\t"));
            emitted.push(report.counters.get(names::MAP_OUTPUT_RECORDS));
        }
        assert!(
            outputs.iter().all(|o| *o == outputs[0]),
            "{module_path}: outputs differ across buffers"
        );
        assert!(
            emitted.windows(2).all(|w| w[0] < w[1]),
            "{module_path}: pairs emitted {emitted:?}"
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
