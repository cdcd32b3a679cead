//! Guests that panic, spin, hoard memory, flood stdout or fail on purpose:
//! each failure is typed and worded for the guest's author, logs stay
//! bounded, and the runtime runs a normal job correctly afterwards.

use std::io::Cursor;
use std::path::PathBuf;
use std::time::Duration;

use protocol::{InputFormat, Limits};
use worker::local::{LocalFailure, LocalJob, run_local};
use worker::{GuestError, MapInput, MapSettings, TaskError, run_map};

use crate::support::{
    assert_runtime_healthy, guest, native_wordcount, read_output, runtime, small_texts,
};

/// A quick job over the small texts; `args` pick the misbehaviour.
fn misbehave(args: &[(&str, &str)], limits: Limits) -> Result<(), Box<LocalFailure>> {
    misbehave_over(small_texts(), args, limits)
}

fn misbehave_over(
    inputs: Vec<PathBuf>,
    args: &[(&str, &str)],
    limits: Limits,
) -> Result<(), Box<LocalFailure>> {
    let dir = tempfile::tempdir().unwrap();
    let mut job = LocalJob::new(inputs.clone(), 2, dir.path().join("out"));
    job.args = args
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    job.limits = limits;
    match run_local(runtime(), &guest(examples_wasm::MISBEHAVE), &job) {
        Ok(_) => {
            assert_eq!(
                read_output(&job.output, 2, b"\t"),
                native_wordcount(&inputs)
            );
            Ok(())
        }
        Err(err) => {
            assert!(!job.output.join("_SUCCESS").exists());
            Err(Box::new(
                err.downcast::<LocalFailure>().expect("a task failure"),
            ))
        }
    }
}

#[test]
fn without_a_mode_it_counts_words() {
    misbehave(&[], Limits::default()).expect("a well-behaved run");
}

#[test]
fn a_panic_is_a_trap_carrying_the_panic_message() {
    let failure = misbehave(&[("mode", "panic")], Limits::default()).unwrap_err();
    match &failure.error {
        TaskError::Guest(GuestError::Trap { function, message }) => {
            assert_eq!(function, "map");
            assert!(message.contains("deliberate panic"), "{message}");
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    assert!(failure.logs.stderr.contains("deliberate panic"));
    assert_runtime_healthy();
}

#[test]
fn an_endless_loop_times_out() {
    let limits = Limits {
        timeout_secs: 1,
        ..Limits::default()
    };
    let failure = misbehave(&[("mode", "loop")], limits).unwrap_err();
    assert!(
        matches!(
            failure.error,
            TaskError::Guest(GuestError::Timeout { limit }) if limit == Duration::from_secs(1)
        ),
        "{:?}",
        failure.error
    );
    assert_runtime_healthy();
}

/// A guest spinning in `map` stops soon after its attempt is cancelled (the
/// flag the worker sets when a heartbeat drops the attempt), long before its
/// time limit, and the runtime is fine afterwards. Prints the latency.
#[test]
fn a_cancelled_attempt_stops_while_the_guest_spins() {
    let latency = cancel_latency(&[("mode", "loop")]);
    println!(
        "cancel to stop, spinning: {:.1} ms",
        latency.as_secs_f64() * 1e3
    );
    // The default limit is 10 minutes: stopping within seconds is the flag.
    assert!(latency < Duration::from_secs(5), "{latency:?}");
}

#[test]
fn a_cancelled_attempt_stops_while_the_guest_sleeps() {
    let latency = cancel_latency(&[("mode", "sleep"), ("sleep-ms", "3600000")]);
    println!(
        "cancel to stop, sleeping: {:.1} ms",
        latency.as_secs_f64() * 1e3
    );
    // The guest asked for an hour, its limit is 10 minutes.
    assert!(latency < Duration::from_secs(5), "{latency:?}");
}

#[test]
fn a_guest_sleeping_in_a_host_call_is_stopped_at_its_time_limit() {
    let limits = Limits {
        timeout_secs: 1,
        ..Limits::default()
    };
    let started = std::time::Instant::now();
    let failure = misbehave(&[("mode", "sleep"), ("sleep-ms", "3600000")], limits).unwrap_err();
    assert!(
        matches!(
            failure.error,
            TaskError::Guest(GuestError::Timeout { limit }) if limit == Duration::from_secs(1)
        ),
        "{:?}",
        failure.error
    );
    // It asked to sleep for an hour.
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    assert_runtime_healthy();
}

/// Runs a map task of the misbehaving guest with `args`, cancels it 300 ms
/// in and returns how long it took to stop after that.
fn cancel_latency(args: &[(&str, &str)]) -> Duration {
    let text = b"one two\nthree\n".to_vec();
    let len = text.len() as u64;
    let settings = MapSettings {
        args: args
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..MapSettings::new(2)
    };
    let cancel = settings.cancel.clone();
    let dir = tempfile::tempdir().unwrap();
    let module = guest(examples_wasm::MISBEHAVE);
    let cancelled_at = std::sync::Arc::new(std::sync::Mutex::new(None));
    let canceller = {
        let cancelled_at = cancelled_at.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            *cancelled_at.lock().unwrap() = Some(std::time::Instant::now());
            cancel.cancel();
        })
    };
    let report = run_map(
        runtime(),
        &module,
        &settings,
        MapInput {
            reader: Cursor::new(text),
            file_name: "spin.txt".into(),
            format: InputFormat::Lines,
            start: 0,
            end: len,
        },
        dir.path(),
        &dir.path().join("map.out"),
    );
    let stopped = std::time::Instant::now();
    canceller.join().unwrap();
    assert!(
        matches!(report.outcome, Err(TaskError::Cancelled)),
        "{:?}",
        report.outcome
    );
    assert_runtime_healthy();
    stopped - cancelled_at.lock().unwrap().expect("cancelled")
}

#[test]
fn unbounded_allocation_hits_the_memory_cap() {
    let limits = Limits {
        memory_mib: 64,
        ..Limits::default()
    };
    let failure = misbehave(&[("mode", "alloc")], limits).unwrap_err();
    assert!(
        matches!(
            failure.error,
            TaskError::Guest(GuestError::OutOfMemory { limit_mib: 64 })
        ),
        "{:?}",
        failure.error
    );
    assert_runtime_healthy();
}

#[test]
fn a_returned_error_fails_with_the_guests_message() {
    let failure = misbehave(&[("mode", "fail")], Limits::default()).unwrap_err();
    match &failure.error {
        TaskError::Guest(GuestError::Failed { function, message }) => {
            assert_eq!(function, "map");
            assert_eq!(message, "misbehave: deliberate failure at 0");
        }
        other => panic!("expected a guest failure, got {other:?}"),
    }
    assert!(failure.task.starts_with("map task 0"), "{}", failure.task);
    assert_runtime_healthy();
}

#[test]
fn a_failure_mid_split_names_the_record() {
    // A line start in the first input (its only split), past the first
    // line, so the guest sees the records before it first.
    let text = std::fs::read(&small_texts()[0]).unwrap();
    let at = text[..600].iter().rposition(|&b| b == b'\n').unwrap() + 1;
    let failure = misbehave(
        &[("mode", "fail"), ("fail-at", &at.to_string())],
        Limits::default(),
    )
    .unwrap_err();
    assert!(
        failure
            .error
            .to_string()
            .contains(&format!("deliberate failure at {at}")),
        "{}",
        failure.error
    );
}

#[test]
fn a_reduce_panic_fails_the_reduce_task() {
    let failure = misbehave(&[("reduce-mode", "panic")], Limits::default()).unwrap_err();
    assert_eq!(failure.task, "reduce task 0");
    match &failure.error {
        TaskError::Guest(GuestError::Trap { function, message }) => {
            assert_eq!(function, "reduce");
            assert!(message.contains("deliberate panic"), "{message}");
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    assert_runtime_healthy();
}

#[test]
fn a_reduce_error_fails_the_reduce_task() {
    let failure = misbehave(
        &[("reduce-mode", "fail"), ("fail-at", "Gregor")],
        Limits::default(),
    )
    .unwrap_err();
    assert!(failure.task.starts_with("reduce task"), "{}", failure.task);
    assert!(
        matches!(
            &failure.error,
            TaskError::Guest(GuestError::Failed { function, message })
                if function == "reduce" && message == "misbehave: deliberate failure at Gregor"
        ),
        "{:?}",
        failure.error
    );
}

#[test]
fn a_flood_of_stdout_is_capped_and_the_task_succeeds() {
    // Three records, 64 MiB of stdout each.
    let text = b"one two\nthree one\r\nfour".to_vec();
    let len = text.len() as u64;
    let settings = MapSettings {
        args: vec![("mode".into(), "stdout".into())],
        ..MapSettings::new(2)
    };
    let input = MapInput {
        reader: Cursor::new(text),
        file_name: "flood.txt".into(),
        format: InputFormat::Lines,
        start: 0,
        end: len,
    };
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("map.out");
    let module = guest(examples_wasm::MISBEHAVE);
    let report = run_map(runtime(), &module, &settings, input, dir.path(), &output);

    let index = report.outcome.expect("the task succeeds");
    // No combiner in this guest: every emitted pair is in the output.
    assert_eq!(index.total_records(), 5, "one two three one four");
    let cap = Limits::default().log_bytes as usize;
    let stdout = &report.logs.stdout;
    assert!(stdout.contains("bytes dropped"), "no drop marker");
    assert!(
        stdout.len() >= cap && stdout.len() <= cap + 200,
        "stdout log is {} bytes, cap {cap}",
        stdout.len()
    );
    let dropped: u64 = stdout
        .split("[... ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("the marker counts the dropped bytes");
    assert_eq!(dropped, 3 * (64 << 20) - cap as u64);
    assert!(
        stdout
            .trim_matches(|c| c == 'x' || c == '\n')
            .starts_with("[...")
    );

    // The same guest through the local runner: the whole job succeeds.
    // (It floods once per record, so the input is tiny.)
    let input = dir.path().join("flood.txt");
    std::fs::write(&input, "alpha beta\ngamma alpha\n").unwrap();
    misbehave_over(vec![input], &[("mode", "stdout")], Limits::default())
        .expect("the job succeeds");
    assert_runtime_healthy();
}

#[test]
fn a_record_past_the_limit_fails_the_task_naming_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("long.txt");
    let mut text = b"short line\n".to_vec();
    text.extend(std::iter::repeat_n(b'x', 64 << 10));
    text.extend_from_slice(b"\nafter\n");
    std::fs::write(&path, &text).unwrap();
    let limits = Limits {
        record_bytes: 4096,
        ..Limits::default()
    };
    let failure = misbehave_over(vec![path], &[], limits).unwrap_err();
    match &failure.error {
        TaskError::Guest(GuestError::RecordTooLong {
            file,
            offset,
            limit,
        }) => {
            assert!(file.ends_with("long.txt"), "{file}");
            assert_eq!((*offset, *limit), (11, 4096));
        }
        other => panic!("expected a record too long, got {other:?}"),
    }
    let message = failure.error.to_string();
    assert!(message.contains("--max-record-bytes"), "{message}");
}

#[test]
fn an_output_past_the_limit_fails_the_reduce() {
    let limits = Limits {
        output_bytes: 1024,
        ..Limits::default()
    };
    let failure = misbehave(&[], limits).unwrap_err();
    assert!(
        matches!(
            failure.error,
            TaskError::Guest(GuestError::OutputTooLarge { limit: 1024 })
        ),
        "{:?}",
        failure.error
    );
}
