//! Turning a split's bytes into records. `lines`: a split that starts
//! mid-line skips to the next newline, and the line that crosses the split's
//! end is read whole by the split it starts in; `\r\n` and a missing final
//! newline are handled. `whole-file`: one record, the file.

use std::io::{self, BufRead, BufReader, Read};

use protocol::InputFormat;

/// Largest file the `whole-file` format reads: 1 GiB.
pub const MAX_WHOLE_FILE_BYTES: u64 = protocol::job::MAX_RECORD_BYTES;

/// Where a split's bytes start being read: one byte early, so that a split
/// starting exactly at a line start can tell (that byte is a newline).
pub fn read_from(start: u64) -> u64 {
    start.saturating_sub(1)
}

/// A record longer than the job's `limits.record_bytes`, found before it
/// was buffered. Travels inside the `io::Error` [`for_each_record`] returns;
/// [`RecordTooLong::find`] gets it back out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the record at byte {offset} is longer than the limit of {limit} bytes")]
pub struct RecordTooLong {
    /// Where the record starts in its file.
    pub offset: u64,
    /// The limit it broke.
    pub limit: u64,
}

impl RecordTooLong {
    /// The `RecordTooLong` inside `err`, if that is what it is.
    pub fn find(err: &io::Error) -> Option<&RecordTooLong> {
        err.get_ref()?.downcast_ref()
    }

    fn error(offset: u64, limit: u64) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, RecordTooLong { offset, limit })
    }
}

/// Reads the records of split `start..end` of `file_name`. `src` must yield
/// the file's bytes from offset `read_from(start)` on (to the end of the
/// file or further than `end` plus the longest line). `emit` receives each
/// record's key and value. A record longer than `max_record` bytes stops
/// the read with [`RecordTooLong`] before more than that is held. Returns
/// the input bytes consumed.
pub fn for_each_record(
    src: impl Read,
    file_name: &str,
    format: InputFormat,
    start: u64,
    end: u64,
    max_record: u64,
    mut emit: impl FnMut(&[u8], &[u8]) -> io::Result<()>,
) -> io::Result<u64> {
    match format {
        InputFormat::WholeFile => {
            let limit = max_record.min(MAX_WHOLE_FILE_BYTES);
            let mut contents = Vec::new();
            src.take(limit + 1).read_to_end(&mut contents)?;
            if contents.len() as u64 > limit {
                return Err(RecordTooLong::error(0, limit));
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
                // split (or just the newline before this split's first
                // line); the split it started in has read (or refused) it.
                pos += read_line(&mut reader, None, u64::MAX, pos)?;
            }
            let first = pos;
            let mut key = itoa_buf();
            while pos < end {
                line.clear();
                let n = read_line(&mut reader, Some(&mut line), max_record, pos)?;
                if n == 0 {
                    break;
                }
                let line_start = pos;
                pos += n;
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

/// Reads one line and its newline, appending them to `line` (or dropping
/// them when `line` is `None`); the line (without its newline) may be at
/// most `max` bytes, or the read fails with [`RecordTooLong`] for the line
/// at `offset`. Returns the bytes read.
fn read_line(
    reader: &mut impl BufRead,
    mut line: Option<&mut Vec<u8>>,
    max: u64,
    offset: u64,
) -> io::Result<u64> {
    let mut read: u64 = 0;
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(read);
        }
        let (take, done) = match memchr::memchr(b'\n', buf) {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        if read + (take - usize::from(done)) as u64 > max {
            return Err(RecordTooLong::error(offset, max));
        }
        if let Some(line) = line.as_deref_mut() {
            line.extend_from_slice(&buf[..take]);
        }
        reader.consume(take);
        read += take as u64;
        if done {
            return Ok(read);
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
            u64::MAX,
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
            u64::MAX,
            |k, v| {
                got.push((k.to_vec(), v.to_vec()));
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(got, vec![(b"book.txt".to_vec(), b"a\nb".to_vec())]);
    }

    #[test]
    fn a_line_past_the_limit_is_refused_before_it_is_held() {
        let text = b"short\nexactly8\nnine byte\nok\n";
        let mut got = Vec::new();
        let err = for_each_record(&text[..], "f", InputFormat::Lines, 0, 100, 8, |_, v| {
            got.push(v.to_vec());
            Ok(())
        })
        .unwrap_err();
        assert_eq!(got, vec![b"short".to_vec(), b"exactly8".to_vec()]);
        assert_eq!(
            RecordTooLong::find(&err),
            Some(&RecordTooLong {
                offset: 15,
                limit: 8
            })
        );
        // A split that starts inside the long line skips it and reads on.
        let from = read_from(20) as usize;
        let mut after = Vec::new();
        for_each_record(
            &text[from..],
            "f",
            InputFormat::Lines,
            20,
            100,
            8,
            |_, v| {
                after.push(v.to_vec());
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(after, vec![b"ok".to_vec()]);
    }

    /// A reader that yields `len` bytes of `x` and no newline, counting
    /// what was taken from it.
    struct Endless {
        left: u64,
        taken: std::rc::Rc<std::cell::Cell<u64>>,
    }

    impl Read for Endless {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = (buf.len() as u64).min(self.left) as usize;
            buf[..n].fill(b'x');
            self.left -= n as u64;
            self.taken.set(self.taken.get() + n as u64);
            Ok(n)
        }
    }

    #[test]
    fn a_huge_line_is_not_read_whole() {
        let taken = std::rc::Rc::new(std::cell::Cell::new(0));
        let src = Endless {
            left: 1 << 30,
            taken: taken.clone(),
        };
        let err = for_each_record(
            src,
            "big.txt",
            InputFormat::Lines,
            0,
            1 << 30,
            1 << 20,
            |_, _| panic!("no record fits"),
        )
        .unwrap_err();
        assert_eq!(RecordTooLong::find(&err).map(|e| e.offset), Some(0));
        assert!(
            taken.get() < 2 << 20,
            "read {} bytes of a 1 GiB line",
            taken.get()
        );
    }

    #[test]
    fn a_whole_file_past_the_limit_is_refused() {
        let err = for_each_record(
            &[b'a'; 2000][..],
            "f",
            InputFormat::WholeFile,
            0,
            2000,
            1024,
            |_, _| panic!("too long"),
        )
        .unwrap_err();
        assert_eq!(RecordTooLong::find(&err).map(|e| e.limit), Some(1024));
    }
}
