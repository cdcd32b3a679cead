//! Split boundaries and input formats never change a job's output: any
//! split size and any number of reducers give the same word count over an
//! awkward text, and `whole-file` counts the same words as `lines`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use protocol::InputFormat;
use worker::local::LocalJob;

use crate::support::{guest, native_wordcount, run_and_read, texts};

/// Words with multi-byte UTF-8 (two-, three- and four-byte sequences) and
/// separators with CRLF, empty lines, punctuation and a byte that is not
/// UTF-8 at all (it decodes to U+FFFD, which is not a letter).
const WORDS: &[&str] = &[
    "the",
    "a",
    "Quern",
    "naïve",
    "straße",
    "Ωmega",
    "日本語",
    "𐐷𐐷",
    "über",
    "x",
];
const SEPARATORS: &[&[u8]] = &[
    b" ",
    b" ",
    b" ",
    b", ",
    b"\r\n",
    b"\n",
    b"\n\n",
    b"\r\n\r\n",
    b"\t",
    b"\xff",
    b"--",
];

fn text(tokens: &[(usize, usize)]) -> Vec<u8> {
    let mut text = Vec::new();
    for &(word, sep) in tokens {
        text.extend_from_slice(WORDS[word].as_bytes());
        text.extend_from_slice(SEPARATORS[sep]);
    }
    // A word last, so the file has no final newline.
    text.extend_from_slice("Ende".as_bytes());
    text
}

fn word_count(
    inputs: Vec<PathBuf>,
    out: &Path,
    split_size: u64,
    reducers: u32,
    format: InputFormat,
) -> BTreeMap<String, String> {
    let mut job = LocalJob::new(inputs, reducers, out.to_path_buf());
    job.split_size = split_size;
    job.format = format;
    run_and_read(&guest(examples_wasm::WORDCOUNT), &job)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn any_split_size_and_reducer_count_give_the_same_output(
        tokens in prop::collection::vec((0..WORDS.len(), 0..SEPARATORS.len()), 3000..9000),
        split_size in 4096u64..40_000,
        reducers in 1u32..=10,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("awkward.txt");
        let bytes = text(&tokens);
        std::fs::write(&input, &bytes).unwrap();
        prop_assume!(bytes.len() as u64 > split_size, "at least two splits");

        let expected = native_wordcount(std::slice::from_ref(&input));
        let got = word_count(vec![input.clone()], &dir.path().join("lines"), split_size, reducers, InputFormat::Lines);
        prop_assert_eq!(&got, &expected);

        let whole = word_count(vec![input], &dir.path().join("whole"), split_size, reducers, InputFormat::WholeFile);
        prop_assert_eq!(&whole, &expected);
    }
}

#[test]
fn whole_file_counts_the_same_words_as_lines() {
    let dir = tempfile::tempdir().unwrap();
    let lines = word_count(
        texts(),
        &dir.path().join("lines"),
        256 << 10,
        3,
        InputFormat::Lines,
    );
    let whole = word_count(
        texts(),
        &dir.path().join("whole"),
        256 << 10,
        3,
        InputFormat::WholeFile,
    );
    assert_eq!(lines, whole);
    assert_eq!(lines, native_wordcount(&texts()));
}

#[test]
fn empty_inputs_give_empty_parts() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("empty.txt");
    std::fs::write(&input, b"").unwrap();
    let lines = word_count(
        vec![input.clone()],
        &dir.path().join("lines"),
        4096,
        3,
        InputFormat::Lines,
    );
    assert!(lines.is_empty());
    let whole = word_count(
        vec![input],
        &dir.path().join("whole"),
        4096,
        3,
        InputFormat::WholeFile,
    );
    assert!(whole.is_empty());
}
