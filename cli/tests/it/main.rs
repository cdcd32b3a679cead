//! The `quern` binary end to end: `quern run --local` as a user runs it,
//! checking the files it writes, its exit status and what it prints.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod api;
mod chaos;
mod cluster;
mod languages;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/data")
        .join(name)
}

fn two_texts() -> Vec<PathBuf> {
    vec![data("pg-metamorphosis.txt"), data("pg-being_ernest.txt")]
}

/// Runs `quern run --local MODULE INPUTS... ARGS...` with a private module
/// cache, so the test never writes to the user's cache directory.
fn quern_run(cache: &Path, module: &Path, inputs: &[PathBuf], args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_quern"))
        .env("QUERN_CACHE_DIR", cache)
        .env_remove("QUERN_LOG")
        .arg("run")
        .arg("--local")
        .arg(module)
        .args(inputs)
        .args(args)
        .output()
        .expect("quern starts")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Word counts computed natively, as decimal strings.
fn native_wordcount(files: &[PathBuf]) -> BTreeMap<String, String> {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for path in files {
        let bytes = std::fs::read(path).unwrap();
        for word in String::from_utf8_lossy(&bytes)
            .split(|c: char| !c.is_alphabetic())
            .filter(|w| !w.is_empty())
        {
            *counts.entry(word.to_owned()).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .map(|(w, n)| (w, n.to_string()))
        .collect()
}

fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Every line of every part, split at the first `separator`.
fn read_parts(dir: &Path, reducers: u32, separator: char) -> BTreeMap<String, String> {
    let mut all = BTreeMap::new();
    for r in 0..reducers {
        let part = std::fs::read_to_string(dir.join(format!("part-r-{r:05}"))).unwrap();
        for line in part.lines() {
            let (key, value) = line
                .split_once(separator)
                .unwrap_or_else(|| panic!("no separator in {line:?}"));
            assert!(all.insert(key.to_owned(), value.to_owned()).is_none());
        }
    }
    all
}

#[test]
fn run_local_writes_every_part_and_success() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let output = quern_run(
        &tmp.path().join("cache"),
        Path::new(examples_wasm::WORDCOUNT),
        &two_texts(),
        &[
            "--reducers",
            "4",
            "--split-size",
            "16KiB",
            "--output",
            out.to_str().unwrap(),
        ],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(
        file_names(&out),
        [
            "_SUCCESS",
            "part-r-00000",
            "part-r-00001",
            "part-r-00002",
            "part-r-00003"
        ]
    );
    // stdout lists the parts, one per line; stderr summarises the run.
    let listed: Vec<String> = text(&output.stdout).lines().map(str::to_owned).collect();
    assert_eq!(listed.len(), 4);
    assert!(listed[0].ends_with("part-r-00000"), "{listed:?}");
    let stderr = text(&output.stderr);
    assert!(stderr.contains("job succeeded"), "{stderr}");
    assert!(stderr.contains("reduce output records"), "{stderr}");

    assert_eq!(read_parts(&out, 4, '\t'), native_wordcount(&two_texts()));
}

#[test]
fn separator_changes_the_output_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let output = quern_run(
        &tmp.path().join("cache"),
        Path::new(examples_wasm::WORDCOUNT),
        &two_texts(),
        &[
            "--reducers",
            "2",
            "--separator",
            " ",
            "--output",
            out.to_str().unwrap(),
        ],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    for r in 0..2 {
        let part = std::fs::read_to_string(out.join(format!("part-r-{r:05}"))).unwrap();
        assert!(!part.contains('\t'), "part {r} still uses tabs");
    }
    assert_eq!(read_parts(&out, 2, ' '), native_wordcount(&two_texts()));
}

#[test]
fn a_failing_guest_exits_non_zero_with_its_message() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let output = quern_run(
        &tmp.path().join("cache"),
        Path::new(examples_wasm::MISBEHAVE),
        &two_texts(),
        &["--arg", "mode=fail", "--output", out.to_str().unwrap()],
    );
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(stderr.contains("job failed"), "{stderr}");
    assert!(
        stderr.contains("misbehave: deliberate failure at 0"),
        "{stderr}"
    );
    assert!(!out.join("_SUCCESS").exists());
}

#[test]
fn a_panicking_guest_shows_its_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let output = quern_run(
        &tmp.path().join("cache"),
        Path::new(examples_wasm::MISBEHAVE),
        &two_texts(),
        &["--arg", "mode=panic", "--output", out.to_str().unwrap()],
    );
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(stderr.contains("deliberate panic"), "{stderr}");
    assert!(stderr.contains("--- guest stderr ---"), "{stderr}");
}

#[test]
fn a_garbage_module_exits_non_zero_with_a_clear_message() {
    let tmp = tempfile::tempdir().unwrap();
    let module = tmp.path().join("job.wasm");
    std::fs::write(&module, b"this is a shell script, not a job\n").unwrap();
    let out = tmp.path().join("out");
    let output = quern_run(
        &tmp.path().join("cache"),
        &module,
        &two_texts(),
        &["--output", out.to_str().unwrap()],
    );
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(stderr.contains("not a WebAssembly"), "{stderr}");
    assert!(
        stderr.contains("job.wasm"),
        "the message names the file: {stderr}"
    );
    assert!(!out.join("_SUCCESS").exists());
}
