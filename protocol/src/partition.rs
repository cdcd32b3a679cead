//! Which reduce partition a key goes to (by hash, or by key range for a
//! total order), how range split points are drawn from a sample, and where
//! each partition sits in a map task's output file.

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

/// How a job's map output keys are assigned to its R reduce partitions.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Partitioner {
    /// `fnv1a32(key) mod R`: keys spread evenly, no order between
    /// partitions.
    #[default]
    Hash,
    /// Key ranges: partition `p` holds the keys `k` with
    /// `split_points[p-1] <= k < split_points[p]` (byte order), so the R
    /// outputs concatenated in partition order are globally sorted. There
    /// are R - 1 split points, ascending, hex-encoded in JSON.
    Range {
        /// The R - 1 split points.
        #[serde(with = "hex_keys")]
        #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
        split_points: Vec<Vec<u8>>,
    },
}

impl Partitioner {
    /// The partition of `key` among `reducers`.
    #[inline]
    pub fn partition(&self, key: &[u8], reducers: u32) -> u32 {
        match self {
            Partitioner::Hash => partition_for(key, reducers),
            Partitioner::Range { split_points } => {
                let p = split_points.partition_point(|point| point.as_slice() <= key) as u32;
                p.min(reducers - 1)
            }
        }
    }

    /// Whether this partitioner can serve `reducers` partitions.
    pub fn check(&self, reducers: u32) -> Result<(), String> {
        match self {
            Partitioner::Hash => Ok(()),
            Partitioner::Range { split_points } => {
                if split_points.len() as u64 + 1 != u64::from(reducers) {
                    return Err(format!(
                        "a range partitioner for {reducers} reducers needs {} split points, not {}",
                        reducers - 1,
                        split_points.len()
                    ));
                }
                if split_points.windows(2).any(|w| w[0] > w[1]) {
                    return Err("range split points must ascend".into());
                }
                Ok(())
            }
        }
    }

    /// The range partitioner whose R - 1 split points cut `sample` (keys
    /// drawn evenly from the input, as TeraSort draws them) into R parts of
    /// equal count. An empty sample puts every key in the last partition.
    pub fn from_sample(mut sample: Vec<Vec<u8>>, reducers: u32) -> Self {
        sample.sort_unstable();
        let r = reducers.max(1) as usize;
        let split_points = (1..r)
            .map(|i| match sample.len() {
                0 => Vec::new(),
                n => sample[(i * n / r).min(n - 1)].clone(),
            })
            .collect();
        Partitioner::Range { split_points }
    }
}

/// Byte strings as lowercase hex in JSON: keys need not be text.
mod hex_keys {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(keys: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(keys.iter().map(|k| {
            k.iter()
                .fold(String::with_capacity(k.len() * 2), |mut out, b| {
                    out.push_str(&format!("{b:02x}"));
                    out
                })
        }))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        let texts = Vec::<String>::deserialize(d)?;
        texts
            .iter()
            .map(|text| {
                if text.len() % 2 != 0 {
                    return Err(D::Error::custom("a split point is not hex (odd length)"));
                }
                (0..text.len())
                    .step_by(2)
                    .map(|i| {
                        u8::from_str_radix(text.get(i..i + 2).unwrap_or("zz"), 16)
                            .map_err(|_| D::Error::custom("a split point is not hex"))
                    })
                    .collect()
            })
            .collect()
    }
}

/// Where to read a sample of an input of `sizes` bytes per file for a
/// range partitioner: up to `chunks` ranges of `chunk_bytes` each, spread
/// evenly over all bytes, as `(file index, offset, length)`.
pub fn sample_ranges(sizes: &[u64], chunks: u64, chunk_bytes: u64) -> Vec<(usize, u64, u64)> {
    let total: u64 = sizes.iter().sum();
    if total == 0 || chunks == 0 {
        return Vec::new();
    }
    let step = (total / chunks).max(chunk_bytes).max(1);
    let mut ranges = Vec::new();
    let mut at = 0u64;
    let mut file_start = 0u64;
    for (i, &size) in sizes.iter().enumerate() {
        let file_end = file_start + size;
        while at < file_end {
            let offset = at - file_start;
            ranges.push((i, offset, chunk_bytes.min(size - offset)));
            at += step;
        }
        file_start = file_end;
    }
    ranges
}

/// The whole lines of a chunk read at `offset` of a file: a chunk that
/// starts mid-file drops its first (partial) line, and the last line is
/// dropped unless it ends with a newline. Line endings are stripped as the
/// `lines` format strips them.
pub fn sample_lines(chunk: &[u8], offset: u64) -> impl Iterator<Item = &[u8]> {
    let mut rest = chunk;
    if offset > 0 {
        rest = match rest.iter().position(|&b| b == b'\n') {
            Some(at) => &rest[at + 1..],
            None => &[],
        };
    }
    let mut lines: Vec<&[u8]> = rest.split_inclusive(|&b| b == b'\n').collect();
    if lines.last().is_some_and(|l| !l.ends_with(b"\n")) {
        lines.pop();
    }
    lines.into_iter().map(|line| {
        let line = &line[..line.len() - 1];
        line.strip_suffix(b"\r").unwrap_or(line)
    })
}

/// The name of partition `partition`'s output: `part-r-00003`.
pub fn part_name(partition: u32) -> String {
    format!("part-r-{partition:05}")
}

/// One partition's place in a map-output file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

    /// Checks that the index can describe a map-output file of a job with
    /// `reducers` partitions: one entry per partition, back to back from
    /// offset 0 (as the file format lays them out), with no offset or
    /// length past `u64`. Returns the bytes the partitions take.
    pub fn check(&self, reducers: u32) -> Result<u64, String> {
        if self.partitions.len() != reducers as usize {
            return Err(format!(
                "map output has {} partitions, the job has {reducers} reducers",
                self.partitions.len()
            ));
        }
        let mut end: u64 = 0;
        for (i, p) in self.partitions.iter().enumerate() {
            if p.offset != end {
                return Err(format!(
                    "map output partition {i} starts at byte {}, not where partition {} ends ({end})",
                    p.offset,
                    i.saturating_sub(1)
                ));
            }
            end = p
                .offset
                .checked_add(p.length)
                .ok_or_else(|| format!("map output partition {i} ends past 2^64 bytes"))?;
        }
        Ok(end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_must_be_back_to_back_from_zero() {
        let part = |offset, length| PartitionIndex {
            offset,
            length,
            records: 1,
        };
        let good = MapOutputIndex {
            partitions: vec![part(0, 10), part(10, 0), part(10, 5)],
        };
        assert_eq!(good.check(3), Ok(15));
        assert!(good.check(2).unwrap_err().contains("3 partitions"));
        let gap = MapOutputIndex {
            partitions: vec![part(0, 10), part(11, 5)],
        };
        assert!(gap.check(2).unwrap_err().contains("starts at byte 11"));
        let huge = MapOutputIndex {
            partitions: vec![part(0, u64::MAX), part(u64::MAX, 2)],
        };
        assert!(huge.check(2).unwrap_err().contains("2^64"));
        let late = MapOutputIndex {
            partitions: vec![part(u64::MAX - 1, 1)],
        };
        assert!(late.check(1).is_err());
    }

    #[test]
    fn fnv1a32_matches_published_vectors() {
        assert_eq!(fnv1a32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a32(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn range_partitions_follow_the_split_points() {
        let sample: Vec<Vec<u8>> = (0..100u8).rev().map(|i| vec![i]).collect();
        let p = Partitioner::from_sample(sample, 4);
        p.check(4).unwrap();
        let Partitioner::Range { split_points } = &p else {
            panic!("a range partitioner")
        };
        assert_eq!(split_points, &vec![vec![25], vec![50], vec![75]]);
        assert_eq!(p.partition(&[0], 4), 0);
        assert_eq!(p.partition(&[24, 255], 4), 0);
        assert_eq!(p.partition(&[25], 4), 1);
        assert_eq!(p.partition(&[99], 4), 3);
        assert_eq!(p.partition(b"", 4), 0);
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(json, r#"{"kind":"range","split_points":["19","32","4b"]}"#);
        assert_eq!(serde_json::from_str::<Partitioner>(&json).unwrap(), p);
        assert!(Partitioner::from_sample(Vec::new(), 3).check(3).is_ok());
        assert!(p.check(5).is_err());
    }

    #[test]
    fn sample_lines_keep_whole_lines_only() {
        let lines: Vec<&[u8]> = sample_lines(b"tail\nfirst\r\nsecond\nhal", 10).collect();
        assert_eq!(lines, vec![&b"first"[..], b"second"]);
        let lines: Vec<&[u8]> = sample_lines(b"a\nb\n", 0).collect();
        assert_eq!(lines, vec![&b"a"[..], b"b"]);
        let ranges = sample_ranges(&[100, 0, 50], 3, 10);
        assert_eq!(ranges, vec![(0, 0, 10), (0, 50, 10), (2, 0, 10)]);
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
