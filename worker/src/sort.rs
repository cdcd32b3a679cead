//! The map side's sort buffer: emitted pairs are partitioned by the
//! contract's hash and kept in one arena; sorting orders small fixed-size
//! entries by one 128-bit sort key (partition, the key's first 8 bytes and
//! its length up to 8), which alone decides the order of every key of at
//! most 8 bytes, so most comparisons never touch the arena.

use std::io;
use std::sync::Arc;

use protocol::Partitioner;

use crate::merge::RecordSource;

#[derive(Clone, Copy)]
struct Entry {
    /// `partition << 72 | first 8 key bytes (big-endian, zero-padded) << 8 |
    /// min(key length, 9)`. Two keys with equal prefixes compare by length
    /// when either is at most 8 bytes long (the shorter is then a prefix of
    /// the longer); code 9 means "longer than 8: compare the rest".
    sort_key: u128,
    offset: u64,
    key_len: u32,
    value_len: u32,
}

const LONG_KEY: u128 = 9;

/// Bytes of bookkeeping per record on top of its key and value.
pub const ENTRY_OVERHEAD: usize = std::mem::size_of::<Entry>();

fn prefix_of(key: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    let n = key.len().min(8);
    bytes[..n].copy_from_slice(&key[..n]);
    u64::from_be_bytes(bytes)
}

/// Partitioned pairs awaiting a sort.
pub struct SortBuffer {
    reducers: u32,
    partitioner: Arc<Partitioner>,
    arena: Vec<u8>,
    entries: Vec<Entry>,
    sorted: bool,
}

impl SortBuffer {
    /// An empty buffer for `reducers` partitions by hash.
    pub fn new(reducers: u32) -> Self {
        Self::with_partitioner(reducers, Arc::new(Partitioner::Hash))
    }

    /// An empty buffer for `reducers` partitions assigned by `partitioner`.
    pub fn with_partitioner(reducers: u32, partitioner: Arc<Partitioner>) -> Self {
        SortBuffer {
            reducers,
            partitioner,
            arena: Vec::new(),
            entries: Vec::new(),
            sorted: true,
        }
    }

    /// Adds a pair to its partition.
    pub fn push(&mut self, key: &[u8], value: &[u8]) {
        let partition = self.partitioner.partition(key, self.reducers);
        self.push_to(partition, key, value);
    }

    /// Adds a pair to a given partition.
    pub fn push_to(&mut self, partition: u32, key: &[u8], value: &[u8]) {
        let offset = self.arena.len() as u64;
        self.arena.extend_from_slice(key);
        self.arena.extend_from_slice(value);
        let sort_key = (u128::from(partition) << 72)
            | (u128::from(prefix_of(key)) << 8)
            | (key.len() as u128).min(LONG_KEY);
        self.entries.push(Entry {
            sort_key,
            offset,
            key_len: key.len() as u32,
            value_len: value.len() as u32,
        });
        self.sorted = false;
    }

    /// Number of partitions.
    pub fn reducers(&self) -> u32 {
        self.reducers
    }

    /// How keys are assigned to partitions.
    pub fn partitioner(&self) -> &Arc<Partitioner> {
        &self.partitioner
    }

    /// Memory held, in bytes.
    pub fn bytes(&self) -> usize {
        self.arena.len() + self.entries.len() * ENTRY_OVERHEAD
    }

    /// Number of pairs held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the buffer holds no pair.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn key(&self, e: &Entry) -> &[u8] {
        let start = e.offset as usize;
        &self.arena[start..start + e.key_len as usize]
    }

    /// Sorts by (partition, key); pairs with equal keys keep emission order
    /// (the arena offset breaks ties, so the unstable sort is deterministic
    /// and equal to a stable one).
    pub fn sort(&mut self) {
        if self.sorted {
            return;
        }
        let mut entries = std::mem::take(&mut self.entries);
        entries.sort_unstable_by(|a, b| {
            a.sort_key
                .cmp(&b.sort_key)
                .then_with(|| {
                    if a.sort_key & 0xff == LONG_KEY {
                        self.key(a)[8..].cmp(&self.key(b)[8..])
                    } else {
                        std::cmp::Ordering::Equal
                    }
                })
                .then(a.offset.cmp(&b.offset))
        });
        self.entries = entries;
        self.sorted = true;
    }

    /// A cursor over partition `partition` of the sorted buffer.
    pub fn partition(&self, partition: u32) -> BufferCursor<'_> {
        assert!(self.sorted, "sort before reading");
        let part = |e: &Entry| (e.sort_key >> 72) as u32;
        let start = self.entries.partition_point(|e| part(e) < partition);
        let end = self.entries.partition_point(|e| part(e) <= partition);
        BufferCursor {
            buffer: self,
            entries: &self.entries[start..end],
            pos: None,
        }
    }

    /// Empties the buffer, keeping its allocations for reuse.
    pub fn clear(&mut self) {
        self.arena.clear();
        self.entries.clear();
        self.sorted = true;
    }
}

/// A cursor over one partition of a sorted [`SortBuffer`].
pub struct BufferCursor<'a> {
    buffer: &'a SortBuffer,
    entries: &'a [Entry],
    pos: Option<usize>,
}

impl RecordSource for BufferCursor<'_> {
    fn advance(&mut self) -> io::Result<bool> {
        let next = self.pos.map_or(0, |p| p + 1);
        self.pos = Some(next);
        Ok(next < self.entries.len())
    }

    fn key(&self) -> &[u8] {
        self.buffer
            .key(&self.entries[self.pos.expect("advance first")])
    }

    fn value(&self) -> &[u8] {
        let e = &self.entries[self.pos.expect("advance first")];
        let start = e.offset as usize + e.key_len as usize;
        &self.buffer.arena[start..start + e.value_len as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_by_partition_then_key_keeping_value_order() {
        let mut buf = SortBuffer::new(3);
        let words = [
            "pear",
            "apple",
            "fig",
            "apple",
            "banana",
            "applesauce",
            "",
            "fig",
        ];
        for (i, w) in words.iter().enumerate() {
            buf.push(w.as_bytes(), i.to_string().as_bytes());
        }
        buf.sort();
        let mut seen = 0;
        for p in 0..3 {
            let mut c = buf.partition(p);
            let mut prev: Option<(Vec<u8>, usize)> = None;
            while c.advance().unwrap() {
                seen += 1;
                assert_eq!(protocol::partition_for(c.key(), 3), p);
                let v: usize = std::str::from_utf8(c.value()).unwrap().parse().unwrap();
                if let Some((k, pv)) = &prev {
                    assert!(k.as_slice() <= c.key());
                    if k.as_slice() == c.key() {
                        assert!(*pv < v, "equal keys keep emission order");
                    }
                }
                prev = Some((c.key().to_vec(), v));
            }
        }
        assert_eq!(seen, words.len());

        // Exactly the stable sort of (partition, key bytes).
        let mut want: Vec<(u32, &[u8], usize)> = words
            .iter()
            .enumerate()
            .map(|(i, w)| (protocol::partition_for(w.as_bytes(), 3), w.as_bytes(), i))
            .collect();
        want.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        let mut got = Vec::new();
        for p in 0..3 {
            let mut c = buf.partition(p);
            while c.advance().unwrap() {
                let i: usize = std::str::from_utf8(c.value()).unwrap().parse().unwrap();
                got.push(i);
            }
        }
        assert_eq!(got, want.iter().map(|w| w.2).collect::<Vec<_>>());
    }
}
