//! The one parser of HTTP `Range` headers, for the coordinator's dataset
//! reads and the workers' map-output server: a single byte range
//! (`bytes=A-B`, `bytes=A-`, `bytes=-N`) checked against the file's size
//! by the `http-range-header` crate. Several ranges are refused: Quern's
//! readers never ask for them, and answering one with the whole file would
//! be wrong.

use std::ops::Range;

/// Why a `Range` header cannot be served: the answer is a 416.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsatisfiable;

/// The bytes `header` asks for of a file of `size` bytes, as `start..end`.
pub fn byte_range(header: &str, size: u64) -> Result<Range<u64>, Unsatisfiable> {
    if size == 0 {
        // No byte of an empty file can be asked for.
        return Err(Unsatisfiable);
    }
    let ranges = http_range_header::parse_range_header(header)
        .and_then(|parsed| parsed.validate(size))
        .map_err(|_| Unsatisfiable)?;
    match ranges.as_slice() {
        [one] => Ok(*one.start()..one.end() + 1),
        _ => Err(Unsatisfiable),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_ranges() {
        assert_eq!(byte_range("bytes=0-9", 100), Ok(0..10));
        assert_eq!(byte_range("bytes=90-", 100), Ok(90..100));
        assert_eq!(byte_range("bytes=-10", 100), Ok(90..100));
        assert_eq!(byte_range("bytes=99-99", 100), Ok(99..100));
        // A last byte past the end means the end (RFC 9110).
        assert_eq!(byte_range("bytes=0-18446744073709551615", 100), Ok(0..100));
    }

    #[test]
    fn bad_ranges_are_unsatisfiable() {
        for header in [
            "bytes=100-",
            "bytes=5-2",
            "bytes=18446744073709551615-",
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes=a-b",
            "",
        ] {
            assert_eq!(byte_range(header, 100), Err(Unsatisfiable), "{header:?}");
        }
        assert_eq!(byte_range("bytes=0-", 0), Err(Unsatisfiable));
    }
}
