//! Packed batches as the WIT world defines them: little-endian `u32`
//! lengths, each followed by that many bytes.

/// Appends one length-prefixed field.
pub(crate) fn put(buf: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).expect("a key or value is at most 4 GiB");
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(bytes);
}

/// Reads fields off the front of a batch.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader { rest: bytes }
    }

    pub(crate) fn rest(&self) -> &'a [u8] {
        self.rest
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    pub(crate) fn u32(&mut self) -> Result<u32, String> {
        if self.rest.len() < 4 {
            return Err("malformed batch from the host: truncated length".into());
        }
        let (len, rest) = self.rest.split_at(4);
        self.rest = rest;
        Ok(u32::from_le_bytes(len.try_into().expect("four bytes")))
    }

    pub(crate) fn field(&mut self) -> Result<&'a [u8], String> {
        let len = self.u32()? as usize;
        if self.rest.len() < len {
            return Err("malformed batch from the host: truncated field".into());
        }
        let (field, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(field)
    }
}
