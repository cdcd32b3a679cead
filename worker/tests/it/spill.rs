//! The external sort: a map task whose pairs overflow the sort buffer
//! spills sorted runs and merges them into the same output, and a key with
//! millions of values streams through `next-values` to the right answer.

use std::io::Write;

use protocol::counters as names;
use worker::local::LocalJob;

use crate::support::{guest, native_wordcount, read_output, run, texts};

#[test]
fn spilled_runs_merge_into_the_same_output() {
    // All eight texts as one ~3.2 MB file and one split, so one map task
    // emits ~620k pairs (~23 MB in the sort buffer) against 1 MiB.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("all.txt");
    let mut all = std::fs::File::create(&input).unwrap();
    for path in texts() {
        all.write_all(&std::fs::read(path).unwrap()).unwrap();
    }
    drop(all);
    let expected = native_wordcount(std::slice::from_ref(&input));
    let module = guest(examples_wasm::WORDCOUNT);

    for combine in [true, false] {
        let mut job = LocalJob::new(vec![input.clone()], 3, dir.path().join("out"));
        job.combine = combine;
        job.sort_buffer = 1 << 20;
        // A 1 KiB table makes the guest emit most pairs uncombined, so the
        // host's buffer overflows (and its combiner runs on the spills).
        job.combine_buffer = Some(1 << 10);
        let report = run(&module, &job);
        assert_eq!(report.map_tasks, 1);
        let spilled = report.counters.get(names::SPILLED_RUNS);
        assert!(spilled > 1, "combine={combine}: {spilled} spilled runs");
        let got = read_output(&job.output, 3, b"\t");
        assert!(got == expected, "combine={combine}: spilled output differs");

        // The same job with room for everything does not spill and agrees.
        job.sort_buffer = 256 << 20;
        let report = run(&module, &job);
        assert_eq!(report.counters.get(names::SPILLED_RUNS), 0);
        let unspilled = read_output(&job.output, 3, b"\t");
        assert!(unspilled == expected, "combine={combine}: output differs");
    }
}

#[test]
fn a_key_with_millions_of_values_streams_to_the_right_count() {
    const REPEATS: usize = 2_000_000;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("many.txt");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
    // Keys before and after the big one, so grouping must resume cleanly
    // once its values are streamed.
    writeln!(file, "aardvark").unwrap();
    let line = "quern ".repeat(1000);
    for _ in 0..REPEATS / 1000 {
        writeln!(file, "{line}").unwrap();
    }
    write!(file, "zebra aardvark").unwrap();
    drop(file);

    let mut job = LocalJob::new(vec![input], 1, dir.path().join("out"));
    job.combine = false;
    let report = run(&guest(examples_wasm::WORDCOUNT), &job);
    let got = read_output(&job.output, 1, b"\t");
    let expected: std::collections::BTreeMap<String, String> = [
        ("aardvark", "2".to_string()),
        ("quern", REPEATS.to_string()),
        ("zebra", "1".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(got, expected);
    let c = &report.counters;
    assert_eq!(c.get(names::REDUCE_INPUT_RECORDS), REPEATS as i64 + 3);
    assert_eq!(c.get(names::REDUCE_INPUT_GROUPS), 3);
}
