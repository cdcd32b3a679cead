//! The map-output file: R sorted partitions back to back, then an index.
//! Spilled sort runs use the same format, so one reader serves both.
//!
//! ```text
//! file      = partition{R} footer
//! partition = block*
//! block     = u32le payload-len, u32le crc32(payload), payload
//! payload   = record+
//! record    = varint key-len, varint value-len, key, value
//! footer    = (u64le offset, u64le length, u64le records){R}, u32le R,
//!             u32le crc32(everything before it in the footer), "QUERNMO1"
//! ```
//!
//! Every block carries a CRC-32 of its payload and the index gives each
//! partition's exact length, so a torn file, a truncated range or a flipped
//! bit is an error, never a silently different record stream.

use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};

use protocol::{MapOutputIndex, PartitionIndex};

const MAGIC: &[u8; 8] = b"QUERNMO1";
/// A block is cut once its payload reaches this size.
const BLOCK_BYTES: usize = 64 << 10;
/// No block may claim more than this; a larger header is corruption.
const MAX_BLOCK_BYTES: u32 = 1 << 31;

fn corrupt(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn get_varint(buf: &[u8], pos: &mut usize) -> io::Result<u64> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let byte = *buf
            .get(*pos)
            .ok_or_else(|| corrupt("record header runs past its block"))?;
        *pos += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(corrupt("varint longer than 64 bits"))
}

/// Writes partitions in order, then the index.
pub struct RunWriter<W: Write> {
    out: W,
    position: u64,
    block: Vec<u8>,
    partitions: Vec<PartitionIndex>,
    current: Option<PartitionIndex>,
}

impl<W: Write> RunWriter<W> {
    /// A writer at the start of `out`.
    pub fn new(out: W) -> Self {
        RunWriter {
            out,
            position: 0,
            block: Vec::with_capacity(BLOCK_BYTES + 1024),
            partitions: Vec::new(),
            current: None,
        }
    }

    /// Starts the next partition.
    pub fn start_partition(&mut self) {
        assert!(self.current.is_none(), "partition already started");
        self.current = Some(PartitionIndex {
            offset: self.position,
            length: 0,
            records: 0,
        });
    }

    /// Appends a record to the current partition. Records must come in key
    /// order; the writer does not check.
    pub fn push(&mut self, key: &[u8], value: &[u8]) -> io::Result<()> {
        let current = self.current.as_mut().expect("push outside a partition");
        current.records += 1;
        put_varint(&mut self.block, key.len() as u64);
        put_varint(&mut self.block, value.len() as u64);
        self.block.extend_from_slice(key);
        self.block.extend_from_slice(value);
        if self.block.len() >= BLOCK_BYTES {
            self.flush_block()?;
        }
        Ok(())
    }

    fn flush_block(&mut self) -> io::Result<()> {
        if self.block.is_empty() {
            return Ok(());
        }
        let len = u32::try_from(self.block.len())
            .ok()
            .filter(|&l| l < MAX_BLOCK_BYTES)
            .ok_or_else(|| io::Error::other("a single record is larger than 2 GiB"))?;
        let mut header = [0u8; 8];
        header[..4].copy_from_slice(&len.to_le_bytes());
        header[4..].copy_from_slice(&crc32fast::hash(&self.block).to_le_bytes());
        self.out.write_all(&header)?;
        self.out.write_all(&self.block)?;
        self.position += 8 + self.block.len() as u64;
        self.block.clear();
        Ok(())
    }

    /// Ends the current partition.
    pub fn end_partition(&mut self) -> io::Result<PartitionIndex> {
        self.flush_block()?;
        let mut index = self.current.take().expect("no partition started");
        index.length = self.position - index.offset;
        self.partitions.push(index);
        Ok(index)
    }

    /// Writes the index and returns the sink with the file's index.
    pub fn finish(mut self) -> io::Result<(W, MapOutputIndex)> {
        assert!(self.current.is_none(), "partition left open");
        let mut footer = Vec::with_capacity(self.partitions.len() * 24 + 16);
        for p in &self.partitions {
            footer.extend_from_slice(&p.offset.to_le_bytes());
            footer.extend_from_slice(&p.length.to_le_bytes());
            footer.extend_from_slice(&p.records.to_le_bytes());
        }
        footer.extend_from_slice(&(self.partitions.len() as u32).to_le_bytes());
        let crc = crc32fast::hash(&footer);
        footer.extend_from_slice(&crc.to_le_bytes());
        footer.extend_from_slice(MAGIC);
        self.out.write_all(&footer)?;
        self.out.flush()?;
        Ok((
            self.out,
            MapOutputIndex {
                partitions: self.partitions,
            },
        ))
    }
}

/// Creates `path` and a buffered run writer over it.
pub fn create(path: &std::path::Path) -> io::Result<RunWriter<BufWriter<File>>> {
    let file = File::create(path)?;
    Ok(RunWriter::new(BufWriter::with_capacity(256 << 10, file)))
}

/// Reads the index at the end of a run file, checking its checksum and
/// that its partitions fill the file up to the index.
pub fn read_index(file: &mut File) -> io::Result<MapOutputIndex> {
    let size = file.seek(SeekFrom::End(0))?;
    if size < 16 {
        return Err(corrupt("map output file too short for an index"));
    }
    let mut tail = [0u8; 16];
    file.seek(SeekFrom::Start(size - 16))?;
    file.read_exact(&mut tail)?;
    if &tail[8..] != MAGIC {
        return Err(corrupt("map output file has no index (bad magic)"));
    }
    let count = u32::from_le_bytes(tail[..4].try_into().unwrap()) as u64;
    let crc = u32::from_le_bytes(tail[4..8].try_into().unwrap());
    let footer_len = count * 24 + 4;
    if footer_len + 12 > size {
        return Err(corrupt("map output index larger than the file"));
    }
    let mut footer = vec![0u8; footer_len as usize];
    file.seek(SeekFrom::Start(size - 12 - footer_len))?;
    file.read_exact(&mut footer)?;
    if crc32fast::hash(&footer) != crc {
        return Err(corrupt("map output index checksum mismatch"));
    }
    let partitions = footer[..footer.len() - 4]
        .chunks_exact(24)
        .map(|c| PartitionIndex {
            offset: u64::from_le_bytes(c[0..8].try_into().unwrap()),
            length: u64::from_le_bytes(c[8..16].try_into().unwrap()),
            records: u64::from_le_bytes(c[16..24].try_into().unwrap()),
        })
        .collect();
    let index = MapOutputIndex { partitions };
    // The partitions must fill the file up to the footer exactly.
    let data_end = size - 12 - footer_len;
    match index.check(count as u32) {
        Ok(end) if end == data_end => Ok(index),
        _ => Err(corrupt("map output index does not match the file's size")),
    }
}

/// Streams the records of one partition (a segment) from any reader that
/// yields exactly the partition's bytes.
pub struct SegmentReader<R: Read> {
    src: R,
    remaining: u64,
    block: Vec<u8>,
    pos: usize,
    key: (usize, usize),
    value: (usize, usize),
    records_left: Option<u64>,
}

impl<R: Read> SegmentReader<R> {
    /// A reader of a segment `length` bytes long. With `records`, the count
    /// is checked too.
    pub fn new(src: R, length: u64, records: Option<u64>) -> Self {
        SegmentReader {
            src,
            remaining: length,
            block: Vec::new(),
            pos: 0,
            key: (0, 0),
            value: (0, 0),
            records_left: records,
        }
    }

    /// Moves to the next record; false at the end of the segment.
    pub fn advance(&mut self) -> io::Result<bool> {
        if self.pos >= self.block.len() && !self.next_block()? {
            if let Some(left) = self.records_left
                && left != 0
            {
                return Err(corrupt(format!("segment ended {left} records early")));
            }
            return Ok(false);
        }
        let klen = get_varint(&self.block, &mut self.pos)? as usize;
        let vlen = get_varint(&self.block, &mut self.pos)? as usize;
        let kstart = self.pos;
        let vstart = kstart
            .checked_add(klen)
            .ok_or_else(|| corrupt("record length overflow"))?;
        let end = vstart
            .checked_add(vlen)
            .ok_or_else(|| corrupt("record length overflow"))?;
        if end > self.block.len() {
            return Err(corrupt("record runs past its block"));
        }
        self.key = (kstart, vstart);
        self.value = (vstart, end);
        self.pos = end;
        if let Some(left) = &mut self.records_left {
            *left = left
                .checked_sub(1)
                .ok_or_else(|| corrupt("segment holds more records than its index says"))?;
        }
        Ok(true)
    }

    fn next_block(&mut self) -> io::Result<bool> {
        if self.remaining == 0 {
            return Ok(false);
        }
        if self.remaining < 8 {
            return Err(corrupt("segment ends inside a block header"));
        }
        let mut header = [0u8; 8];
        self.src.read_exact(&mut header).map_err(truncated)?;
        let len = u32::from_le_bytes(header[..4].try_into().unwrap());
        let crc = u32::from_le_bytes(header[4..].try_into().unwrap());
        if len == 0 || len >= MAX_BLOCK_BYTES || u64::from(len) + 8 > self.remaining {
            return Err(corrupt("block length does not fit the segment"));
        }
        self.block.resize(len as usize, 0);
        self.src.read_exact(&mut self.block).map_err(truncated)?;
        if crc32fast::hash(&self.block) != crc {
            return Err(corrupt("block checksum mismatch"));
        }
        self.remaining -= 8 + u64::from(len);
        self.pos = 0;
        Ok(true)
    }

    /// The current record's key.
    pub fn key(&self) -> &[u8] {
        &self.block[self.key.0..self.key.1]
    }

    /// The current record's value.
    pub fn value(&self) -> &[u8] {
        &self.block[self.value.0..self.value.1]
    }
}

fn truncated(err: io::Error) -> io::Error {
    if err.kind() == io::ErrorKind::UnexpectedEof {
        corrupt("segment truncated")
    } else {
        err
    }
}

/// Opens partition `index` of the run file at `path` as a segment reader.
pub fn open_segment(
    path: &std::path::Path,
    index: &PartitionIndex,
) -> io::Result<SegmentReader<io::Take<io::BufReader<File>>>> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(index.offset))?;
    let reader = io::BufReader::with_capacity(64 << 10, file).take(index.length);
    Ok(SegmentReader::new(
        reader,
        index.length,
        Some(index.records),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_sample(parts: &[Vec<(&[u8], &[u8])>]) -> (Vec<u8>, MapOutputIndex) {
        let mut w = RunWriter::new(Vec::new());
        for part in parts {
            w.start_partition();
            for (k, v) in part {
                w.push(k, v).unwrap();
            }
            w.end_partition().unwrap();
        }
        w.finish().unwrap()
    }

    fn read_all(bytes: &[u8], p: &PartitionIndex) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let slice = &bytes[p.offset as usize..(p.offset + p.length) as usize];
        let mut r = SegmentReader::new(slice, p.length, Some(p.records));
        let mut out = Vec::new();
        while r.advance()? {
            out.push((r.key().to_vec(), r.value().to_vec()));
        }
        Ok(out)
    }

    #[test]
    fn round_trips_partitions_and_index() {
        let big = vec![7u8; 200_000];
        let parts = vec![
            vec![(&b"a"[..], &b"1"[..]), (b"b", b"")],
            vec![],
            vec![(b"", b"empty key"), (b"z", &big[..])],
        ];
        let (bytes, index) = write_sample(&parts);
        assert_eq!(index.partitions.len(), 3);
        assert_eq!(index.partitions[1].length, 0);
        for (p, part) in index.partitions.iter().zip(&parts) {
            let got = read_all(&bytes, p).unwrap();
            let want: Vec<_> = part.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
            assert_eq!(got, want);
        }
        let mut tmp = tempfile::tempfile().unwrap();
        tmp.write_all(&bytes).unwrap();
        assert_eq!(read_index(&mut tmp).unwrap(), index);
    }

    #[test]
    fn detects_flipped_bits_and_truncation() {
        let parts = vec![vec![(&b"key"[..], &b"value"[..]); 100]];
        let (bytes, index) = write_sample(&parts);
        let p = index.partitions[0];
        for i in 0..p.length as usize {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(read_all(&bad, &p).is_err(), "flip at {i} went unnoticed");
        }
        let short = PartitionIndex {
            length: p.length - 3,
            ..p
        };
        assert!(read_all(&bytes, &short).is_err());
    }

    #[test]
    fn an_index_that_does_not_fill_the_file_is_refused() {
        let parts = vec![vec![(&b"key"[..], &b"value"[..]); 10], vec![]];
        let (bytes, index) = write_sample(&parts);
        let data_end = index.total_bytes() as usize;
        // Bytes the index does not account for, between the partitions and
        // the index (its checksum still holds).
        let mut padded = bytes[..data_end].to_vec();
        padded.extend_from_slice(&[0u8; 7]);
        padded.extend_from_slice(&bytes[data_end..]);
        let mut tmp = tempfile::tempfile().unwrap();
        tmp.write_all(&padded).unwrap();
        let err = read_index(&mut tmp).unwrap_err();
        assert!(err.to_string().contains("size"), "{err}");
    }
}
