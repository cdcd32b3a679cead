//! Guests in other languages, built from source with their own toolchains
//! (C with wit-bindgen and wasi-libc, Python with componentize-py,
//! JavaScript with componentize-js, and plain C in streaming mode as a
//! preview-1 module and as a preview-2 command component), each running
//! word count over the eight texts with `quern run --local`: every output
//! equals the Rust guest's, byte for byte.
//!
//! The toolchains come from `scripts/guest-toolchains` (which `scripts/test`
//! runs first); builds are cached under `target/lang-guests/` by source
//! hash.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::{data, quern_run, text};

const REDUCERS: u32 = 3;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn eight_texts() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data(""))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 8);
    files
}

/// The part files of an output directory, by name, as bytes.
fn parts(dir: &Path) -> Vec<(String, Vec<u8>)> {
    assert!(
        dir.join("_SUCCESS").exists(),
        "no _SUCCESS in {}",
        dir.display()
    );
    (0..REDUCERS)
        .map(|r| {
            let name = format!("part-r-{r:05}");
            let bytes = std::fs::read(dir.join(&name)).unwrap();
            (name, bytes)
        })
        .collect()
}

/// Runs word count with `module` over the eight texts and returns the parts.
fn word_count(module: &Path, extra: &[&str]) -> Vec<(String, Vec<u8>)> {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let reducers = REDUCERS.to_string();
    let mut args = vec!["--reducers", &reducers, "--output", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    let run = quern_run(&work.path().join("cache"), module, &eight_texts(), &args);
    assert!(
        run.status.success(),
        "{} failed:\n{}",
        module.display(),
        text(&run.stderr)
    );
    parts(&out)
}

/// The Rust guest's output: the reference.
fn reference() -> &'static [(String, Vec<u8>)] {
    static REFERENCE: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    REFERENCE.get_or_init(|| word_count(Path::new(examples_wasm::WORDCOUNT), &[]))
}

/// Builds `lang`'s examples (or finds them cached) and returns their
/// directory.
fn build(lang: &str) -> PathBuf {
    // The C builds adapt their core modules with the preview-1 adapters;
    // written here so the build script need not run cargo inside a test.
    let adapters = repo().join("target/tools/adapters");
    std::fs::create_dir_all(&adapters).unwrap();
    for (name, bytes) in [
        ("reactor", examples_wasm::PREVIEW1_REACTOR_ADAPTER),
        ("command", examples_wasm::PREVIEW1_COMMAND_ADAPTER),
    ] {
        let path = adapters.join(format!("wasi_snapshot_preview1.{name}.wasm"));
        if std::fs::read(&path).ok().as_deref() != Some(bytes) {
            std::fs::write(&path, bytes).unwrap();
        }
    }
    let built = Command::new(repo().join("examples-wasm/langs/build"))
        .arg(lang)
        .output()
        .expect("the build script starts");
    assert!(
        built.status.success(),
        "building the {lang} examples failed (are the toolchains installed? run scripts/guest-toolchains):\n{}",
        text(&built.stderr)
    );
    PathBuf::from(text(&built.stdout).trim())
}

fn assert_same_as_rust(lang: &str, got: &[(String, Vec<u8>)]) {
    let want = reference();
    assert_eq!(got.len(), want.len());
    for ((name, bytes), (_, expected)) in got.iter().zip(want) {
        assert!(
            bytes == expected,
            "{lang}: {name} differs from the Rust guest's ({} bytes vs {} bytes)",
            bytes.len(),
            expected.len()
        );
    }
    assert!(
        want.iter().all(|(_, b)| !b.is_empty()),
        "the reference has words"
    );
}

#[test]
fn c_component_counts_words_like_rust() {
    let dir = build("c");
    let got = word_count(&dir.join("c-wordcount.wasm"), &[]);
    assert_same_as_rust("c", &got);
}

#[test]
fn c_streaming_module_and_component_count_words_like_rust() {
    let dir = build("c-streaming");
    for file in [
        "c-streaming-wordcount.wasm",
        "c-streaming-wordcount-component.wasm",
    ] {
        let got = word_count(&dir.join(file), &["--mode", "streaming"]);
        assert_same_as_rust(file, &got);
    }
}

#[test]
fn python_component_counts_words_like_rust() {
    let dir = build("python");
    let got = word_count(&dir.join("python-wordcount.wasm"), &[]);
    assert_same_as_rust("python", &got);
}

#[test]
fn javascript_component_counts_words_like_rust() {
    let dir = build("js");
    let got = word_count(&dir.join("js-wordcount.wasm"), &[]);
    assert_same_as_rust("js", &got);
}

#[test]
fn rust_streaming_command_counts_words_like_rust() {
    let got = word_count(
        Path::new(examples_wasm::STREAMING),
        &["--mode", "streaming"],
    );
    assert_same_as_rust("streaming", &got);
    // Without `--mode` the module's kind picks streaming.
    let got = word_count(Path::new(examples_wasm::STREAMING_COMPONENT), &[]);
    assert_same_as_rust("streaming-component", &got);
}

#[test]
fn the_wrong_mode_is_refused_before_anything_runs() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let cache = work.path().join("cache");
    let texts = eight_texts();
    let run = quern_run(
        &cache,
        Path::new(examples_wasm::STREAMING),
        &texts[..1],
        &["--mode", "component", "--output", out.to_str().unwrap()],
    );
    assert!(!run.status.success());
    let stderr = text(&run.stderr);
    assert!(stderr.contains("--mode streaming"), "{stderr}");
    let run = quern_run(
        &cache,
        Path::new(examples_wasm::WORDCOUNT),
        &texts[..1],
        &["--mode", "streaming", "--output", out.to_str().unwrap()],
    );
    assert!(!run.status.success());
    let stderr = text(&run.stderr);
    assert!(stderr.contains("not a WASI command"), "{stderr}");
    assert!(!out.exists(), "nothing ran");
}
