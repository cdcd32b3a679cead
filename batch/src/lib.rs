//! Packed record batches, the one encoding records have when they cross the
//! guest boundary (`guest-sdk/wit/quern.wit` gives the grammar): every field
//! is a little-endian `u32` length followed by that many bytes. The host and
//! the guest SDK both use this crate, so the codec exists once. It has no
//! dependencies and builds for every target, WebAssembly included.
#![warn(missing_docs)]

/// Largest field a batch can carry.
pub const MAX_FIELD: usize = u32::MAX as usize;

/// Appends one length-prefixed field.
///
/// # Panics
/// If `bytes` is longer than [`MAX_FIELD`].
#[inline]
pub fn put(buf: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).expect("a batch field is at most 4 GiB");
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(bytes);
}

/// Appends a bare `u32` (the value count of a group).
#[inline]
pub fn put_u32(buf: &mut Vec<u8>, n: u32) {
    buf.extend_from_slice(&n.to_le_bytes());
}

/// Appends a pair: key, then value.
#[inline]
pub fn put_pair(buf: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    buf.reserve(8 + key.len() + value.len());
    put(buf, key);
    put(buf, value);
}

/// Why a batch could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// The batch ends inside a length.
    TruncatedLength,
    /// The batch ends inside a field.
    TruncatedField,
    /// A field is longer than the reader's limit.
    TooLong {
        /// The field's length.
        len: usize,
        /// The reader's limit.
        limit: usize,
    },
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Malformed::TruncatedLength => f.write_str("the batch ends inside a length"),
            Malformed::TruncatedField => f.write_str("the batch ends inside a key or value"),
            Malformed::TooLong { len, limit } => write!(
                f,
                "a key or value of {len} bytes is over the {limit}-byte limit"
            ),
        }
    }
}

impl std::error::Error for Malformed {}

/// Reads fields off the front of a batch, checking its framing.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    rest: &'a [u8],
    limit: usize,
}

impl<'a> Reader<'a> {
    /// A reader over `bytes` accepting fields of any length.
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader {
            rest: bytes,
            limit: MAX_FIELD,
        }
    }

    /// A reader refusing fields longer than `limit` bytes.
    pub fn with_limit(bytes: &'a [u8], limit: usize) -> Self {
        Reader { rest: bytes, limit }
    }

    /// What is left to read.
    pub fn rest(&self) -> &'a [u8] {
        self.rest
    }

    /// Bytes left to read.
    pub fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// Whether the batch is read to its end.
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// Reads a bare `u32`.
    #[inline]
    pub fn u32(&mut self) -> Result<u32, Malformed> {
        let Some((head, rest)) = self.rest.split_first_chunk::<4>() else {
            return Err(Malformed::TruncatedLength);
        };
        self.rest = rest;
        Ok(u32::from_le_bytes(*head))
    }

    /// Reads one length-prefixed field.
    #[inline]
    pub fn field(&mut self) -> Result<&'a [u8], Malformed> {
        let len = self.u32()? as usize;
        if len > self.limit {
            return Err(Malformed::TooLong {
                len,
                limit: self.limit,
            });
        }
        if self.rest.len() < len {
            return Err(Malformed::TruncatedField);
        }
        let (field, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(field)
    }

    /// Reads a pair: key, then value.
    #[inline]
    pub fn pair(&mut self) -> Result<(&'a [u8], &'a [u8]), Malformed> {
        Ok((self.field()?, self.field()?))
    }

    /// Skips `count` fields.
    pub fn skip(&mut self, count: u32) -> Result<(), Malformed> {
        for _ in 0..count {
            self.field()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_round_trip() {
        let mut buf = Vec::new();
        put_pair(&mut buf, b"key", b"");
        put_pair(&mut buf, b"", b"value");
        let mut r = Reader::new(&buf);
        assert_eq!(r.pair().unwrap(), (&b"key"[..], &b""[..]));
        assert_eq!(r.pair().unwrap(), (&b""[..], &b"value"[..]));
        assert!(r.is_empty());
    }

    #[test]
    fn framing_errors_are_told_apart() {
        assert_eq!(
            Reader::new(&[1, 0]).field(),
            Err(Malformed::TruncatedLength)
        );
        assert_eq!(
            Reader::new(&[3, 0, 0, 0, b'a']).field(),
            Err(Malformed::TruncatedField)
        );
        let mut buf = Vec::new();
        put(&mut buf, b"toolong");
        assert_eq!(
            Reader::with_limit(&buf, 3).field(),
            Err(Malformed::TooLong { len: 7, limit: 3 })
        );
    }
}
