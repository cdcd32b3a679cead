//! Cutting input files into map splits. The plan is byte ranges only; the
//! map task aligns them to lines when it reads (see `InputFormat::Lines`).

use serde::{Deserialize, Serialize};

use crate::InputFormat;

/// An input file as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputFile {
    /// The name the guest sees (`input-info.file`), e.g. `pg-grimm.txt`.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
}

/// One map task's input: bytes `start..end` of file `file`.
///
/// With [`InputFormat::Lines`] the split owns every line that *starts* in
/// `start..end`: a split that starts mid-line skips to the next newline, and
/// the line that crosses `end` is read whole by this split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Split {
    /// Index into the job's input files.
    pub file: usize,
    /// First byte (inclusive).
    pub start: u64,
    /// Last byte (exclusive).
    pub end: u64,
}

/// Cuts `files` into splits of at most `split_size` bytes, in file order.
/// A whole-file job gets one split per file; an empty file gets no split
/// for `lines` (it has no records) and one for `whole-file` (it is a record).
pub fn plan_splits(files: &[InputFile], split_size: u64, format: InputFormat) -> Vec<Split> {
    assert!(split_size > 0, "split size is validated before planning");
    let mut splits = Vec::new();
    for (index, file) in files.iter().enumerate() {
        match format {
            InputFormat::WholeFile => splits.push(Split {
                file: index,
                start: 0,
                end: file.size,
            }),
            InputFormat::Lines => {
                let mut start = 0;
                while start < file.size {
                    let end = file.size.min(start.saturating_add(split_size));
                    splits.push(Split {
                        file: index,
                        start,
                        end,
                    });
                    start = end;
                }
            }
        }
    }
    splits
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, size: u64) -> InputFile {
        InputFile {
            name: name.into(),
            size,
        }
    }

    #[test]
    fn splits_cover_each_file_exactly() {
        let files = [file("a", 10), file("b", 0), file("c", 25)];
        let splits = plan_splits(&files, 10, InputFormat::Lines);
        let ranges: Vec<_> = splits.iter().map(|s| (s.file, s.start, s.end)).collect();
        assert_eq!(
            ranges,
            vec![(0, 0, 10), (2, 0, 10), (2, 10, 20), (2, 20, 25)]
        );
    }

    #[test]
    fn whole_file_is_one_split_per_file() {
        let files = [file("a", 100), file("b", 0)];
        let splits = plan_splits(&files, 10, InputFormat::WholeFile);
        assert_eq!(splits.len(), 2);
        assert_eq!((splits[0].start, splits[0].end), (0, 100));
    }
}
