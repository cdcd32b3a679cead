//! Shared helpers: one runtime for the whole test binary, the guests, the
//! example texts, native reference computations and an output reader that
//! checks the job's output invariants as it parses.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use protocol::partition_for;
use worker::local::{LocalJob, LocalReport, part_name, run_local};
use worker::{GuestModule, Runtime, RuntimeConfig};

/// The runtime every test shares. Compiling a guest costs far more than a
/// job over the test inputs, so modules are compiled once per binary; the
/// misbehaving-guest tests also prove that one runtime survives failures
/// while other tests use it.
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| Runtime::new(RuntimeConfig::default()).expect("runtime starts"))
}

/// A guest from `examples_wasm`, compiled (once) by the shared runtime.
pub fn guest(path: &str) -> Arc<GuestModule> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    runtime().load(&bytes).expect("example guests load")
}

/// The eight example texts, in name order.
pub fn texts() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/data");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "txt"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 8, "examples/data holds the eight texts");
    files
}

/// The two smallest example texts, for quick jobs.
pub fn small_texts() -> Vec<PathBuf> {
    texts()
        .into_iter()
        .filter(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            name == "pg-being_ernest.txt" || name == "pg-metamorphosis.txt"
        })
        .collect()
}

/// The file name a guest sees.
pub fn name_of(path: &Path) -> String {
    path.file_name().unwrap().to_str().unwrap().to_owned()
}

/// Words as the example guests define them: maximal runs of alphabetic
/// characters of the text decoded lossily. Decoding the whole file at once
/// gives the same words as decoding line by line, because a newline never
/// sits inside a UTF-8 sequence.
pub fn words(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .split(|c: char| !c.is_alphabetic())
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Word -> occurrences over `files`, computed natively.
pub fn native_wordcount(files: &[PathBuf]) -> BTreeMap<String, String> {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for path in files {
        for word in words(&std::fs::read(path).unwrap()) {
            *counts.entry(word).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .map(|(w, n)| (w, n.to_string()))
        .collect()
}

/// Word -> `N name1,name2` of the sorted distinct files holding it.
pub fn native_index(files: &[PathBuf]) -> BTreeMap<String, String> {
    let mut index: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for path in files {
        let name = name_of(path);
        for word in words(&std::fs::read(path).unwrap()) {
            index.entry(word).or_default().insert(name.clone());
        }
    }
    index
        .into_iter()
        .map(|(w, names)| {
            let list: Vec<&str> = names.iter().map(String::as_str).collect();
            (w, format!("{} {}", names.len(), list.join(",")))
        })
        .collect()
}

/// Reads every `part-r-*` file of a job with `reducers` partitions, checking
/// that each key sits in the partition the contract assigns it, that each
/// file is sorted by key bytes with no key twice, that `_SUCCESS` is there
/// and that no work directory was left behind.
pub fn read_output(dir: &Path, reducers: u32, separator: &[u8]) -> BTreeMap<String, String> {
    assert!(
        dir.join("_SUCCESS").exists(),
        "no _SUCCESS in {}",
        dir.display()
    );
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut expected: Vec<String> = (0..reducers).map(part_name).collect();
    expected.push("_SUCCESS".into());
    expected.sort();
    assert_eq!(names, expected, "output directory holds exactly the parts");

    let mut all = BTreeMap::new();
    for r in 0..reducers {
        let bytes = std::fs::read(dir.join(part_name(r))).unwrap();
        assert!(
            bytes.is_empty() || bytes.ends_with(b"\n"),
            "part {r} ends with a newline"
        );
        let mut previous: Option<Vec<u8>> = None;
        for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let at = line
                .windows(separator.len())
                .position(|w| w == separator)
                .unwrap_or_else(|| panic!("no separator in {:?}", String::from_utf8_lossy(line)));
            let (key, value) = (&line[..at], &line[at + separator.len()..]);
            assert_eq!(
                partition_for(key, reducers),
                r,
                "key {:?} is in the wrong partition",
                String::from_utf8_lossy(key)
            );
            if let Some(prev) = &previous {
                assert!(
                    prev.as_slice() < key,
                    "part {r} is not sorted: {:?} then {:?}",
                    String::from_utf8_lossy(prev),
                    String::from_utf8_lossy(key)
                );
            }
            previous = Some(key.to_vec());
            let old = all.insert(
                String::from_utf8(key.to_vec()).expect("keys are UTF-8"),
                String::from_utf8_lossy(value).into_owned(),
            );
            assert!(old.is_none(), "a key is in two partitions");
        }
    }
    all
}

/// Runs `job` on the shared runtime, panicking with the failure if any.
pub fn run(module: &Arc<GuestModule>, job: &LocalJob) -> LocalReport {
    match run_local(runtime(), module, job) {
        Ok(report) => report,
        Err(err) => panic!("job failed: {err:#}"),
    }
}

/// Runs `job` and returns its parsed output.
pub fn run_and_read(module: &Arc<GuestModule>, job: &LocalJob) -> BTreeMap<String, String> {
    let report = run(module, job);
    assert_eq!(report.outputs.len(), job.reducers as usize);
    read_output(&job.output, job.reducers, &job.separator)
}

/// Proves the runtime still works: a word count over the small texts is
/// exactly right.
pub fn assert_runtime_healthy() {
    let out = tempfile::tempdir().unwrap();
    let files = small_texts();
    let job = LocalJob::new(files.clone(), 2, out.path().join("out"));
    let got = run_and_read(&guest(examples_wasm::WORDCOUNT), &job);
    assert_eq!(got, native_wordcount(&files));
}
