//! Streaming mode: a WASI command (a preview-1 core module or a preview-2
//! command component) reads records on stdin and writes `key<TAB>value`
//! lines. Its word count equals the component's byte for byte; malformed
//! lines, non-zero exits, loops and hoarding each fail the task with a
//! message that says what happened, and the runtime stays healthy.

use std::path::PathBuf;
use std::time::Duration;

use protocol::{InputFormat, Limits};
use worker::local::{LocalFailure, LocalJob, part_name, run_local};
use worker::{GuestError, TaskError};

use crate::support::{
    assert_runtime_healthy, guest, native_wordcount, read_output, run, runtime, small_texts, texts,
};

fn job(
    inputs: Vec<PathBuf>,
    reducers: u32,
    args: &[(&str, &str)],
) -> (tempfile::TempDir, LocalJob) {
    let dir = tempfile::tempdir().unwrap();
    let mut job = LocalJob::new(inputs, reducers, dir.path().join("out"));
    job.args = args
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    (dir, job)
}

/// The bytes of every part file, in partition order.
fn parts(job: &LocalJob) -> Vec<Vec<u8>> {
    (0..job.reducers)
        .map(|r| std::fs::read(job.output.join(part_name(r))).unwrap())
        .collect()
}

#[test]
fn streaming_word_count_equals_the_component_byte_for_byte() {
    let files = texts();
    let (_a, mut reference) = job(files.clone(), 3, &[]);
    // Small splits and a small sort buffer: many map tasks, spills.
    reference.split_size = 256 << 10;
    run(&guest(examples_wasm::WORDCOUNT), &reference);
    let expected = parts(&reference);
    assert_eq!(
        read_output(&reference.output, 3, b"\t"),
        native_wordcount(&files)
    );

    for module in [examples_wasm::STREAMING, examples_wasm::STREAMING_COMPONENT] {
        let (_b, mut streaming) = job(files.clone(), 3, &[]);
        streaming.split_size = 256 << 10;
        streaming.sort_buffer = 1 << 20;
        let report = run(&guest(module), &streaming);
        assert_eq!(parts(&streaming), expected, "{module}");
        assert!(
            report.counters.get(protocol::counters::SPILLED_RUNS) > 0,
            "the 1 MiB sort buffer spilled"
        );
        assert!(report.counters.get(protocol::counters::MAP_INPUT_RECORDS) > 0);
    }
}

#[test]
fn map_sees_its_file_format_and_arguments() {
    let files = small_texts();
    let (_d, mut probe) = job(files.clone(), 1, &[("probe", "1"), ("color", "blue")]);
    probe.split_size = u64::MAX;
    let module = guest(examples_wasm::STREAMING);
    run(&module, &probe);
    let out = String::from_utf8(std::fs::read(probe.output.join(part_name(0))).unwrap()).unwrap();
    // One map task per file: each reports what it saw; the identity reduce
    // keeps every line, sorted by key.
    for file in &files {
        let name = file.file_name().unwrap().to_str().unwrap();
        assert!(
            out.contains(&format!("QUERN_INPUT_FILE\t{name}\n")),
            "{out}"
        );
        let lines = std::fs::read(file)
            .unwrap()
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        assert!(out.contains(&format!("stdin-lines\t{lines}\n")), "{out}");
    }
    assert!(out.contains("QUERN_PHASE\tmap\n"), "{out}");
    assert!(out.contains("QUERN_INPUT_FORMAT\tlines\n"), "{out}");
    assert!(out.contains("args\tprobe=1,color=blue\n"), "{out}");

    // whole-file: the file's bytes as they are, no framing added.
    let (_e, mut whole) = job(files.clone(), 1, &[("probe", "1")]);
    whole.format = InputFormat::WholeFile;
    run(&module, &whole);
    let out = String::from_utf8(std::fs::read(whole.output.join(part_name(0))).unwrap()).unwrap();
    assert!(out.contains("QUERN_INPUT_FORMAT\twhole-file\n"), "{out}");
    for file in &files {
        let size = std::fs::metadata(file).unwrap().len();
        assert!(out.contains(&format!("stdin-bytes\t{size}\n")), "{out}");
    }
}

fn failure(args: &[(&str, &str)], limits: Limits) -> Box<LocalFailure> {
    failure_of(examples_wasm::STREAMING, args, limits)
}

fn failure_of(module: &str, args: &[(&str, &str)], limits: Limits) -> Box<LocalFailure> {
    let (_d, mut job) = job(small_texts(), 2, args);
    job.limits = limits;
    let err = run_local(runtime(), &guest(module), &job).expect_err("the job fails");
    assert!(!job.output.join("_SUCCESS").exists());
    Box::new(err.downcast::<LocalFailure>().expect("a task failure"))
}

#[test]
fn a_line_without_a_tab_fails_the_task_naming_the_line() {
    let failure = failure(&[("fault", "bad-line")], Limits::default());
    let message = failure.error.to_string();
    assert!(
        matches!(&failure.error, TaskError::Guest(GuestError::BadOutput(_))),
        "{message}"
    );
    assert!(message.contains("has no TAB"), "{message}");
    assert!(message.contains("\"this line has no tab\""), "{message}");
    assert!(message.contains("map output line "), "{message}");
    assert!(failure.task.starts_with("map task"), "{}", failure.task);
    assert_runtime_healthy();
}

#[test]
fn a_non_zero_exit_fails_with_the_status_and_stderr() {
    let failure = failure(&[("fault", "exit")], Limits::default());
    match &failure.error {
        TaskError::Guest(GuestError::Exited {
            function,
            status,
            stderr,
        }) => {
            assert_eq!(function, "map");
            assert_eq!(*status, 3);
            assert!(stderr.contains("giving up"), "{stderr}");
        }
        other => panic!("expected an exit failure, got {other:?}"),
    }
    assert!(failure.logs.stderr.contains("giving up"));
    assert_runtime_healthy();
}

#[test]
fn a_command_that_loops_is_stopped_by_the_time_limit() {
    let limits = Limits {
        timeout_secs: 1,
        ..Limits::default()
    };
    let failure = failure(&[("fault", "loop")], limits);
    assert_eq!(
        failure.error.to_string(),
        TaskError::Guest(GuestError::Timeout {
            limit: Duration::from_secs(1)
        })
        .to_string()
    );
    assert_runtime_healthy();
}

/// A command asleep in a host call (an hour, in `poll_oneoff` for the
/// preview-1 module and in `wasi:io/poll` for the preview-2 one) is
/// stopped at its time limit; it slept on before.
#[test]
fn a_sleeping_command_is_stopped_by_the_time_limit() {
    let limits = Limits {
        timeout_secs: 1,
        ..Limits::default()
    };
    for module in [examples_wasm::STREAMING, examples_wasm::STREAMING_COMPONENT] {
        let started = std::time::Instant::now();
        let failure = failure_of(module, &[("fault", "sleep")], limits);
        assert_eq!(
            failure.error.to_string(),
            TaskError::Guest(GuestError::Timeout {
                limit: Duration::from_secs(1)
            })
            .to_string(),
            "{module}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{module}: {:?}",
            started.elapsed()
        );
    }
    assert_runtime_healthy();
}

#[test]
fn a_command_that_hoards_memory_hits_its_cap() {
    let limits = Limits {
        memory_mib: 32,
        ..Limits::default()
    };
    let failure = failure(&[("fault", "alloc")], limits);
    assert!(
        matches!(
            failure.error,
            TaskError::Guest(GuestError::OutOfMemory { limit_mib: 32 })
        ),
        "{:?}",
        failure.error
    );
    assert_runtime_healthy();
}

#[test]
fn a_command_that_stops_reading_early_succeeds_with_what_it_wrote() {
    // Like `head -n 1`: it reads one record of each split and exits 0.
    let files = small_texts();
    let (_d, job) = job(files.clone(), 1, &[("fault", "head")]);
    run(&guest(examples_wasm::STREAMING), &job);
    let first_lines: Vec<String> = files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            text.lines().next().unwrap().to_owned()
        })
        .collect();
    let got = read_output(&job.output, 1, b"\t");
    let expected_words: usize = first_lines
        .iter()
        .map(|l| crate::support::words(l.as_bytes()).len())
        .sum();
    let counted: u64 = got.values().map(|v| v.parse::<u64>().unwrap()).sum();
    assert_eq!(counted as usize, expected_words);
}

#[test]
fn a_job_component_cannot_run_as_a_command_and_back() {
    use protocol::{JobMode, ModuleKind};
    let command = guest(examples_wasm::STREAMING);
    assert_eq!(command.kind(), ModuleKind::Command);
    let err = JobMode::Component.check(command.kind()).unwrap_err();
    assert!(err.contains("--mode streaming"), "{err}");
    let err = runtime()
        .instantiate(
            &command,
            &worker::runtime::TaskPlan::reduce(),
            &Limits::default(),
            &[],
        )
        .err()
        .expect("a command has no init");
    assert!(err.to_string().contains("WASI command"), "{err}");
}
