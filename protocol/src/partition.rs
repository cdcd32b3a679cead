//! Which reduce partition a key goes to, and where each partition sits in a
//! map task's output file.

use serde::{Deserialize, Serialize};

/// 32-bit FNV-1a of `bytes`: offset basis 2166136261, prime 16777619.
///
/// This is the partition hash of the contract: it never changes between
/// releases, so outputs are comparable across versions and with other
/// implementations that use the same function.
pub fn fnv1a32(bytes: &[u8]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for &b in bytes {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// The reduce partition of `key` among `reducers` partitions:
/// `fnv1a32(key) mod reducers`.
pub fn partition_for(key: &[u8], reducers: u32) -> u32 {
    debug_assert!(reducers > 0);
    fnv1a32(key) % reducers
}

/// One partition's place in a map-output file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionIndex {
    /// Byte offset of the partition's first block.
    pub offset: u64,
    /// Length in bytes of the partition's blocks.
    pub length: u64,
    /// Number of records in the partition.
    pub records: u64,
}

/// The index of a map-output file: partition `p` of the job is entry `p`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapOutputIndex {
    /// One entry per reduce partition, in partition order.
    pub partitions: Vec<PartitionIndex>,
}

impl MapOutputIndex {
    /// Total bytes of all partitions.
    pub fn total_bytes(&self) -> u64 {
        self.partitions.iter().map(|p| p.length).sum()
    }

    /// Total records of all partitions.
    pub fn total_records(&self) -> u64 {
        self.partitions.iter().map(|p| p.records).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a32_matches_published_vectors() {
        assert_eq!(fnv1a32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a32(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn partitions_are_in_range() {
        for r in 1..20 {
            for key in [&b"the"[..], b"", b"Alice", b"\xff\x00"] {
                assert!(partition_for(key, r) < r);
            }
        }
    }
}
