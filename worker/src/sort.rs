//! The map side's sort buffer: emitted pairs are partitioned by the job's
//! partitioner and kept in one arena; sorting orders one 128-bit key per
//! pair (partition, the key's first 8 bytes, its length up to 8, and the
//! pair's index), which alone decides the order of every key of at most 8
//! bytes, with equal keys in emission order. Sorting plain integers keeps
//! comparisons branch-free and off the arena; only runs of equal 8-byte
//! prefixes of longer keys are ordered again by their remaining bytes.

use std::io;
use std::sync::Arc;

use protocol::Partitioner;

use crate::merge::RecordSource;

/// Where a pair lives in the arena.
#[derive(Clone, Copy)]
struct Entry {
    offset: u64,
    key_len: u32,
    value_len: u32,
}

/// The order key of pair `index`: `partition << 104 | first 8 key bytes
/// (big-endian, zero-padded) << 40 | min(key length, 9) << 32 | index`.
/// Two keys with equal prefixes compare by length when either is at most 8
/// bytes long (the shorter is then a prefix of the longer); code 9 means
/// "longer than 8: compare the rest".
fn order_key(partition: u32, key: &[u8], index: u32) -> u128 {
    (u128::from(partition) << 104)
        | (u128::from(prefix_of(key)) << 40)
        | ((key.len() as u128).min(LONG_KEY) << 32)
        | u128::from(index)
}

const LONG_KEY: u128 = 9;

/// Bytes of bookkeeping per record on top of its key and value.
pub const ENTRY_OVERHEAD: usize = std::mem::size_of::<Entry>() + std::mem::size_of::<u128>();

fn prefix_of(key: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    let n = key.len().min(8);
    bytes[..n].copy_from_slice(&key[..n]);
    u64::from_be_bytes(bytes)
}

fn partition_of(order: u128) -> u32 {
    (order >> 104) as u32
}

fn index_of(order: u128) -> usize {
    order as u32 as usize
}

/// Partitioned pairs awaiting a sort.
pub struct SortBuffer {
    reducers: u32,
    partitioner: Arc<Partitioner>,
    arena: Vec<u8>,
    entries: Vec<Entry>,
    order: Vec<u128>,
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
            order: Vec::new(),
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
        let index = u32::try_from(self.entries.len()).expect("fewer than 2^32 pairs per buffer");
        let offset = self.arena.len() as u64;
        self.arena.extend_from_slice(key);
        self.arena.extend_from_slice(value);
        self.entries.push(Entry {
            offset,
            key_len: key.len() as u32,
            value_len: value.len() as u32,
        });
        self.order.push(order_key(partition, key, index));
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

    fn key(&self, index: usize) -> &[u8] {
        let e = &self.entries[index];
        let start = e.offset as usize;
        &self.arena[start..start + e.key_len as usize]
    }

    /// Sorts by (partition, key); pairs with equal keys keep emission order.
    pub fn sort(&mut self) {
        if self.sorted {
            return;
        }
        let mut order = std::mem::take(&mut self.order);
        order.sort_unstable();
        // Runs that share partition, prefix and the long-key code are
        // ordered by the rest of their keys, then by index (emission).
        let mut start = 0;
        while start < order.len() {
            let head = order[start] >> 32;
            let mut end = start + 1;
            while end < order.len() && order[end] >> 32 == head {
                end += 1;
            }
            if head & 0xff == LONG_KEY && end - start > 1 {
                order[start..end].sort_unstable_by(|a, b| {
                    self.key(index_of(*a))[8..]
                        .cmp(&self.key(index_of(*b))[8..])
                        .then(a.cmp(b))
                });
            }
            start = end;
        }
        self.order = order;
        self.sorted = true;
    }

    /// A cursor over partition `partition` of the sorted buffer.
    pub fn partition(&self, partition: u32) -> BufferCursor<'_> {
        assert!(self.sorted, "sort before reading");
        let start = self.order.partition_point(|&o| partition_of(o) < partition);
        let end = self
            .order
            .partition_point(|&o| partition_of(o) <= partition);
        BufferCursor {
            buffer: self,
            order: &self.order[start..end],
            pos: None,
        }
    }

    /// Empties the buffer, keeping its allocations for reuse.
    pub fn clear(&mut self) {
        self.arena.clear();
        self.entries.clear();
        self.order.clear();
        self.sorted = true;
    }
}

/// A cursor over one partition of a sorted [`SortBuffer`].
pub struct BufferCursor<'a> {
    buffer: &'a SortBuffer,
    order: &'a [u128],
    pos: Option<usize>,
}

impl BufferCursor<'_> {
    fn entry(&self) -> usize {
        index_of(self.order[self.pos.expect("advance first")])
    }
}

impl RecordSource for BufferCursor<'_> {
    fn advance(&mut self) -> io::Result<bool> {
        let next = self.pos.map_or(0, |p| p + 1);
        self.pos = Some(next);
        Ok(next < self.order.len())
    }

    fn key(&self) -> &[u8] {
        self.buffer.key(self.entry())
    }

    fn value(&self) -> &[u8] {
        let e = &self.buffer.entries[self.entry()];
        let start = e.offset as usize + e.key_len as usize;
        &self.buffer.arena[start..start + e.value_len as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever the keys (long ones sharing 8-byte prefixes, prefixes
        /// of each other, empty, repeated), the buffer's order is the
        /// stable sort by (partition, key bytes).
        #[test]
        fn the_order_is_the_stable_sort_by_partition_and_key(
            keys in proptest::collection::vec(
                proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'b'), Just(0u8)], 0..14),
                0..300,
            ),
            reducers in 1u32..5,
        ) {
            let mut buf = SortBuffer::new(reducers);
            for (i, key) in keys.iter().enumerate() {
                buf.push(key, i.to_string().as_bytes());
            }
            buf.sort();
            let mut want: Vec<(u32, &[u8], usize)> = keys
                .iter()
                .enumerate()
                .map(|(i, k)| (protocol::partition_for(k, reducers), k.as_slice(), i))
                .collect();
            want.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
            let mut got = Vec::new();
            for p in 0..reducers {
                let mut c = buf.partition(p);
                while c.advance().unwrap() {
                    got.push(std::str::from_utf8(c.value()).unwrap().parse::<usize>().unwrap());
                }
            }
            prop_assert_eq!(got, want.iter().map(|w| w.2).collect::<Vec<_>>());
        }
    }

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
