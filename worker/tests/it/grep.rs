//! The grep guest: matching lines keyed by `file:offset`, equal to native
//! filtering, and a clear failure without its `pattern` argument.

use std::collections::BTreeMap;

use worker::local::{LocalFailure, LocalJob, run_local};
use worker::{GuestError, TaskError};

use crate::support::{guest, name_of, run_and_read, runtime, texts};

/// `file:offset` -> line for every line of the texts that `matches`.
fn native_grep(matches: impl Fn(&str) -> bool) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for path in texts() {
        let bytes = std::fs::read(&path).unwrap();
        let mut offset = 0;
        for raw in bytes.split_inclusive(|&b| b == b'\n') {
            let line = raw.strip_suffix(b"\n").unwrap_or(raw);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let text = String::from_utf8_lossy(line);
            if matches(&text) {
                out.insert(format!("{}:{offset}", name_of(&path)), text.into_owned());
            }
            offset += raw.len();
        }
    }
    out
}

fn grep(pattern: &str, split_size: u64, reducers: u32) -> BTreeMap<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let mut job = LocalJob::new(texts(), reducers, dir.path().join("out"));
    job.split_size = split_size;
    job.args = vec![("pattern".into(), pattern.into())];
    run_and_read(&guest(examples_wasm::GREP), &job)
}

#[test]
fn grep_output_equals_native_filtering() {
    let expected = native_grep(|line| line.contains("Holmes"));
    assert!(expected.len() > 400, "the texts mention Holmes often");
    assert_eq!(grep("Holmes", 64 << 10, 3), expected);

    let expected = native_grep(|line| line.starts_with("The "));
    assert!(!expected.is_empty());
    assert_eq!(grep("^The ", 4 << 10, 5), expected);

    let expected = native_grep(|line| line.find("Tom").is_some_and(|at| line[at..].contains('?')));
    assert!(!expected.is_empty());
    assert_eq!(grep(r"Tom.*\?", 1 << 20, 1), expected);
}

#[test]
fn grep_without_pattern_fails_naming_the_argument() {
    let module = guest(examples_wasm::GREP);
    let dir = tempfile::tempdir().unwrap();
    let job = LocalJob::new(texts(), 2, dir.path().join("out"));
    let err = run_local(runtime(), &module, &job).expect_err("no pattern");
    let failure = err.downcast::<LocalFailure>().expect("a task failure");
    match &failure.error {
        TaskError::Guest(GuestError::Failed { function, message }) => {
            assert_eq!(function, "init");
            assert!(message.contains("pattern"), "{message}");
        }
        other => panic!("expected a guest failure, got {other:?}"),
    }
    assert!(failure.task.starts_with("map task 0"), "{}", failure.task);
    assert!(!dir.path().join("out").join("_SUCCESS").exists());
}

#[test]
fn grep_with_a_bad_pattern_fails_in_init() {
    let module = guest(examples_wasm::GREP);
    let args = [("pattern".to_owned(), "(unclosed".to_owned())];
    let err = runtime()
        .instantiate(
            &module,
            &worker::runtime::TaskPlan::reduce(),
            &protocol::Limits::default(),
            &args,
        )
        .err()
        .expect("a bad regex is refused");
    assert!(
        matches!(&err, TaskError::Guest(GuestError::Failed { function, .. }) if function == "init"),
        "{err:?}"
    );
}
