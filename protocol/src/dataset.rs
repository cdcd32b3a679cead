//! Dataset paths: what a dataset file may be called, and how its name
//! travels in a URL. One rule for the coordinator (which refuses a bad
//! name with a 400), the CLI (which says so before uploading) and the
//! worker (which asks for exactly the file the job planned).

use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

/// Longest dataset path, in bytes.
pub const MAX_PATH_BYTES: usize = 1024;
/// Longest segment of a dataset path, in bytes (what file systems allow).
pub const MAX_SEGMENT_BYTES: usize = 255;
/// Characters a dataset path may not contain: glob syntax (a path must
/// mean one file), `%` and `#` (which change meaning in URLs), `\`.
const FORBIDDEN: &[char] = &['*', '?', '[', ']', '{', '}', '%', '#', '\\'];

/// Checks a dataset path: `/`-separated non-empty segments, none `.` or
/// `..`, each at most 255 bytes, at most 1024 bytes in all, without control
/// characters or any of `* ? [ ] { } % # \`. The message says what is
/// wrong and what is allowed.
pub fn check_path(path: &str) -> Result<(), String> {
    let problem = if path.is_empty() {
        Some("it is empty".to_owned())
    } else if path.len() > MAX_PATH_BYTES {
        Some(format!("it is longer than {MAX_PATH_BYTES} bytes"))
    } else if let Some(c) = path
        .chars()
        .find(|c| c.is_control() || FORBIDDEN.contains(c))
    {
        Some(format!("it contains {c:?}"))
    } else {
        path.split('/').find_map(|segment| match segment {
            "" => Some("it has an empty segment".to_owned()),
            "." | ".." => Some(format!("it has a {segment:?} segment")),
            s if s.len() > MAX_SEGMENT_BYTES => Some(format!(
                "a segment is longer than {MAX_SEGMENT_BYTES} bytes"
            )),
            _ => None,
        })
    };
    match problem {
        None => Ok(()),
        Some(problem) => Err(format!(
            "invalid dataset path {path:?}: {problem}; use '/'-separated names of up to \
             {MAX_SEGMENT_BYTES} bytes, without '..', control characters or any of * ? [ ] {{ }} % # \\"
        )),
    }
}

/// What is percent-encoded in a path segment: controls, space, the
/// characters URLs reserve, and `/` (a segment never contains one, but an
/// encoded path must not gain segments).
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'[')
    .add(b']')
    .add(b'\\')
    .add(b'^')
    .add(b'|');

/// `path` for a URL: each segment percent-encoded, the slashes kept. The
/// server decodes it back to exactly `path`.
pub fn url_path(path: &str) -> String {
    path.split('/')
        .map(|segment| utf8_percent_encode(segment, SEGMENT).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_paths_pass() {
        for path in [
            "a.txt",
            "books/pg-1.txt",
            "logs/date=2026-01-01/part 1.csv",
            "ünï/cödé",
        ] {
            assert_eq!(check_path(path), Ok(()), "{path}");
        }
    }

    #[test]
    fn bad_paths_say_why() {
        let long_segment = "x".repeat(300);
        let cases = [
            ("", "empty"),
            ("a//b", "empty segment"),
            ("a/../b", "\"..\""),
            ("x%41", "'%'"),
            ("h#x", "'#'"),
            ("a\u{1}b", "'\\u{1}'"),
            ("a\nb", "'\\n'"),
            ("a\0b", "'\\0'"),
            ("books/*.txt", "'*'"),
            (long_segment.as_str(), "longer than 255"),
        ];
        for (path, why) in cases {
            let err = check_path(path).unwrap_err();
            assert!(err.contains(why), "{path:?}: {err}");
        }
        assert!(check_path(&"a/".repeat(600)).unwrap_err().contains("1024"));
    }

    #[test]
    fn url_paths_keep_slashes_and_encode_the_rest() {
        assert_eq!(url_path("books/pg 1.txt"), "books/pg%201.txt");
        assert_eq!(url_path("a/b%c#d?e"), "a/b%25c%23d%3Fe");
        assert_eq!(url_path("ünï"), "%C3%BCn%C3%AF");
    }
}
