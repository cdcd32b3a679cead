//! Turning a split's bytes into records. `lines`: a split that starts
//! mid-line skips to the next newline, and the line that crosses the split's
//! end is read whole by the split it starts in; `\r\n` and a missing final
//! newline are handled. `whole-file`: one record, the file.

use std::io::{self, BufRead, BufReader, Read};

use protocol::InputFormat;

/// Largest file the `whole-file` format reads: 1 GiB.
pub const MAX_WHOLE_FILE_BYTES: u64 = 1 << 30;

/// Where a split's bytes start being read: one byte early, so that a split
/// starting exactly at a line start can tell (that byte is a newline).
pub fn read_from(start: u64) -> u64 {
    start.saturating_sub(1)
}

/// Reads the records of split `start..end` of `file_name`. `src` must yield
/// the file's bytes from offset `read_from(start)` on (to the end of the
/// file or further than `end` plus the longest line). `emit` receives each
/// record and the number of input bytes consumed so far.
pub fn for_each_record(
    src: impl Read,
    file_name: &str,
    format: InputFormat,
    start: u64,
    end: u64,
    mut emit: impl FnMut(&[u8], &[u8]) -> io::Result<()>,
) -> io::Result<u64> {
    match format {
        InputFormat::WholeFile => {
            let mut contents = Vec::new();
            src.take(MAX_WHOLE_FILE_BYTES + 1)
                .read_to_end(&mut contents)?;
            if contents.len() as u64 > MAX_WHOLE_FILE_BYTES {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{file_name} is larger than the whole-file limit of 1 GiB; use the lines format"
                    ),
                ));
            }
            emit(file_name.as_bytes(), &contents)?;
            Ok(contents.len() as u64)
        }
        InputFormat::Lines => {
            let mut reader = BufReader::with_capacity(256 << 10, src);
            let mut pos = read_from(start);
            let mut line = Vec::with_capacity(256);
            if start > 0 {
                // Skip the tail of the line that started in the previous
                // split (or just the newline before this split's first line).
                pos += reader.read_until(b'\n', &mut line)? as u64;
            }
            let first = pos;
            let mut key = itoa_buf();
            while pos < end {
                line.clear();
                let n = reader.read_until(b'\n', &mut line)?;
                if n == 0 {
                    break;
                }
                let line_start = pos;
                pos += n as u64;
                let mut text = &line[..];
                if let Some(rest) = text.strip_suffix(b"\n") {
                    text = rest.strip_suffix(b"\r").unwrap_or(rest);
                }
                emit(format_offset(&mut key, line_start), text)?;
            }
            Ok(pos - first)
        }
    }
}

fn itoa_buf() -> [u8; 20] {
    [0; 20]
}

fn format_offset(buf: &mut [u8; 20], mut n: u64) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(text: &[u8], start: u64, end: u64) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let from = read_from(start) as usize;
        for_each_record(
            &text[from..],
            "f",
            InputFormat::Lines,
            start,
            end,
            |k, v| {
                out.push((
                    String::from_utf8(k.to_vec()).unwrap(),
                    String::from_utf8(v.to_vec()).unwrap(),
                ));
                Ok(())
            },
        )
        .unwrap();
        out
    }

    #[test]
    fn every_split_size_reads_every_line_once() {
        let text = b"alpha\r\nbeta\n\ngamma delta\nlast line without newline";
        let whole = records(text, 0, text.len() as u64);
        assert_eq!(whole.len(), 5);
        assert_eq!(whole[0], ("0".into(), "alpha".into()));
        assert_eq!(whole[2], ("12".into(), "".into()));
        assert_eq!(whole[4].1, "last line without newline");
        for size in 1..=text.len() as u64 + 1 {
            let mut all = Vec::new();
            let mut start = 0;
            while start < text.len() as u64 {
                let end = (start + size).min(text.len() as u64);
                all.extend(records(text, start, end));
                start = end;
            }
            assert_eq!(all, whole, "split size {size}");
        }
    }

    #[test]
    fn whole_file_is_one_record_named_after_the_file() {
        let mut got = Vec::new();
        for_each_record(
            &b"a\nb"[..],
            "book.txt",
            InputFormat::WholeFile,
            0,
            3,
            |k, v| {
                got.push((k.to_vec(), v.to_vec()));
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(got, vec![(b"book.txt".to_vec(), b"a\nb".to_vec())]);
    }
}
