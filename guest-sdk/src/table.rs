//! In-mapper combining: the table where a map task's pairs wait, grouped
//! by key, until the job's `combine` folds them. A key's values are
//! combined as soon as they pile up, and the whole table is combined and
//! emitted when it outgrows the budget the host gave at `init` and at the
//! end of the task, so a word count emits each distinct word about once per
//! task instead of once per occurrence.
//!
//! A key's values are kept as runs: a value repeated (a word count's "1")
//! costs a counter increment in the table entry, not a write to a buffer
//! elsewhere in memory. Runs are packed as `(u32le len, value, u32le
//! repeats)*`; [`crate::Values::from_runs`] reads them back one by one.

use hashbrown::HashTable;

/// Bytes of bookkeeping counted per key on top of its bytes (the table
/// entry, the key's and the values' allocations).
const SLOT_OVERHEAD: usize = 96;
/// A key is combined once it holds this many values...
const RIPE_COUNT: u32 = 1024;
/// ... or this many bytes of packed runs.
const RIPE_BYTES: usize = 8192;
/// `Slot::open_len` when no run is open.
const NO_RUN: u32 = u32::MAX;

/// One key and its values.
pub(crate) struct Slot {
    hash: u64,
    /// `load(key)` for a key of at most 8 bytes, so that finding a short
    /// key reads only the table, not the key's own allocation.
    short: u64,
    pub(crate) key: Box<[u8]>,
    /// Closed runs.
    packed: Vec<u8>,
    /// The open run: a value of at most 8 bytes (as `load` gives it), its
    /// length (`NO_RUN` for none) and how often it repeats.
    open: u64,
    open_len: u32,
    open_repeats: u32,
    /// Values held.
    pub(crate) count: u32,
    ripe: bool,
    /// The count and packed size at which the key is combined next: twice
    /// what the last combine left, so a combine that cannot shrink a key's
    /// values costs linear time, not quadratic.
    ripe_count: u32,
    ripe_bytes: usize,
}

impl Slot {
    fn new(hash: u64, short: u64, key: &[u8]) -> Self {
        Slot {
            hash,
            short,
            key: key.into(),
            packed: Vec::new(),
            open: 0,
            open_len: NO_RUN,
            open_repeats: 0,
            count: 0,
            ripe: false,
            ripe_count: RIPE_COUNT,
            ripe_bytes: RIPE_BYTES,
        }
    }

    /// Adds a value; returns the bytes of packed runs it added.
    #[inline]
    fn push(&mut self, value: &[u8]) -> usize {
        self.count += 1;
        if value.len() <= 8 {
            let word = load(value);
            if self.open_len == value.len() as u32 && self.open == word {
                self.open_repeats += 1;
                return 0;
            }
            let closed = self.close_run();
            self.open = word;
            self.open_len = value.len() as u32;
            self.open_repeats = 1;
            return closed;
        }
        let closed = self.close_run();
        put_run(&mut self.packed, value, 1);
        closed + 8 + value.len()
    }

    /// Packs the open run, if any; returns the bytes added.
    fn close_run(&mut self) -> usize {
        if self.open_len == NO_RUN {
            return 0;
        }
        let len = self.open_len as usize;
        let bytes = unload(self.open, len);
        put_run(&mut self.packed, &bytes[..len], self.open_repeats);
        self.open_len = NO_RUN;
        self.open_repeats = 0;
        8 + len
    }

    /// Every value as a run batch, and their number, leaving the slot
    /// empty.
    pub(crate) fn take_runs(&mut self) -> (Vec<u8>, u32) {
        self.close_run();
        let count = std::mem::replace(&mut self.count, 0);
        (std::mem::take(&mut self.packed), count)
    }
}

fn put_run(buf: &mut Vec<u8>, value: &[u8], repeats: u32) {
    batch::put(buf, value);
    batch::put_u32(buf, repeats);
}

/// Pairs held back for combining.
pub(crate) struct Table {
    slots: HashTable<Slot>,
    bytes: usize,
    budget: usize,
    /// Keys whose values piled up since the last `take_ripe`.
    ripe: Vec<Box<[u8]>>,
}

impl Table {
    pub(crate) fn new(budget: usize) -> Self {
        Table {
            slots: HashTable::new(),
            bytes: 0,
            budget,
            ripe: Vec::new(),
        }
    }

    fn find_mut(&mut self, key: &[u8]) -> Option<&mut Slot> {
        let hash = hash_key(key);
        let short = short_of(key);
        self.slots
            .find_mut(hash, |slot| slot.matches(hash, short, key))
    }

    /// Adds one pair.
    #[inline]
    pub(crate) fn add(&mut self, key: &[u8], value: &[u8]) {
        let hash = hash_key(key);
        let short = short_of(key);
        let slot = match self
            .slots
            .find_mut(hash, |slot| slot.matches(hash, short, key))
        {
            Some(slot) => slot,
            None => {
                self.bytes += key.len() + SLOT_OVERHEAD;
                self.slots
                    .insert_unique(hash, Slot::new(hash, short, key), |slot| slot.hash)
                    .into_mut()
            }
        };
        self.bytes += slot.push(value);
        if !slot.ripe && (slot.count >= slot.ripe_count || slot.packed.len() > slot.ripe_bytes) {
            slot.ripe = true;
            self.ripe.push(key.into());
        }
    }

    /// Whether the table holds more than its budget.
    pub(crate) fn over_budget(&self) -> bool {
        self.bytes > self.budget
    }

    /// Whether the table holds so much that it must be emitted at once,
    /// uncombined (a single `map` call emitting without end).
    pub(crate) fn over_hard_limit(&self) -> bool {
        self.bytes > self.budget.saturating_mul(2)
    }

    /// Whether some key's values piled up.
    #[inline]
    pub(crate) fn has_ripe(&self) -> bool {
        !self.ripe.is_empty()
    }

    /// The keys whose values piled up, clearing the list.
    pub(crate) fn take_ripe(&mut self) -> Vec<Box<[u8]>> {
        std::mem::take(&mut self.ripe)
    }

    /// Takes a key's values out for combining, as a run batch and their
    /// number (the key stays, empty); none when it holds one value or none.
    pub(crate) fn take_values(&mut self, key: &[u8]) -> Option<(Vec<u8>, u32)> {
        let slot = self.find_mut(key)?;
        slot.ripe = false;
        if slot.count <= 1 {
            return None;
        }
        // What the table counted for the slot: the packed runs, not the
        // open run that `take_runs` packs on the way out.
        let counted = slot.packed.len();
        let taken = slot.take_runs();
        self.bytes -= counted;
        Some(taken)
    }

    /// Puts what combining a key's values gave back (a value batch).
    pub(crate) fn put_values(&mut self, key: &[u8], values: &[u8]) {
        let Some(slot) = self.find_mut(key) else {
            return;
        };
        let mut added = 0;
        let mut reader = batch::Reader::new(values);
        while let Ok(value) = reader.field() {
            added += slot.push(value);
        }
        slot.ripe_count = RIPE_COUNT.max(slot.count.saturating_mul(2));
        slot.ripe_bytes = RIPE_BYTES.max(slot.packed.len() * 2);
        self.bytes += added;
    }

    /// Empties the table, handing back its contents.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = Slot> + use<> {
        self.bytes = 0;
        self.ripe.clear();
        std::mem::take(&mut self.slots).into_iter()
    }
}

impl Slot {
    /// Whether this is the slot of `key` (whose hash and short form are
    /// given): a short key is compared without reading its allocation, a
    /// long one with `memcmp` (a byte loop in WebAssembly) only when the
    /// whole hash agrees.
    #[inline]
    fn matches(&self, hash: u64, short: u64, key: &[u8]) -> bool {
        self.key.len() == key.len()
            && if key.len() <= 8 {
                self.short == short
            } else {
                self.hash == hash && *self.key == *key
            }
    }
}

/// The bytes `load` made a word of, given their number: every byte is in
/// the word for a length of at most 8.
fn unload(word: u64, n: usize) -> [u8; 8] {
    let mut bytes = [0u8; 8];
    if n >= 4 {
        bytes[..4].copy_from_slice(&(word as u32).to_le_bytes());
        bytes[n - 4..n].copy_from_slice(&((word >> 32) as u32).to_le_bytes());
    } else if n > 0 {
        bytes[0] = word as u8;
        bytes[n / 2] = (word >> 8) as u8;
        bytes[n - 1] = (word >> 16) as u8;
    }
    bytes
}

/// The short form of a key: `load(key)` for up to 8 bytes, else 0.
#[inline]
fn short_of(key: &[u8]) -> u64 {
    if key.len() <= 8 { load(key) } else { 0 }
}

/// Up to 8 bytes as one word, which for a given length tells the bytes
/// apart: two overlapping 4-byte loads from 4 bytes on, the first, middle
/// and last byte below that (wyhash's trick). A copy of a variable number
/// of bytes into a buffer would be a `memory.copy`, which WebAssembly
/// runtimes call out of the guest for: far slower than these loads.
#[inline]
fn load(bytes: &[u8]) -> u64 {
    let n = bytes.len();
    debug_assert!(n <= 8);
    if n >= 4 {
        let lo = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let hi = u32::from_le_bytes([bytes[n - 4], bytes[n - 3], bytes[n - 2], bytes[n - 1]]);
        u64::from(lo) | u64::from(hi) << 32
    } else if n > 0 {
        u64::from(bytes[0]) | u64::from(bytes[n / 2]) << 8 | u64::from(bytes[n - 1]) << 16
    } else {
        0
    }
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

/// A fast non-cryptographic hash (the multiply-rotate of Firefox and
/// rustc, a word at a time). The table holds one task's own keys, so there
/// is no adversary to resist, and SipHash would cost more than the rest of
/// an emit. A key of up to 8 bytes costs one multiply.
#[inline]
fn hash_key(key: &[u8]) -> u64 {
    let mut hash = (key.len() as u64).wrapping_mul(SEED);
    let mut rest = key;
    while let Some((chunk, tail)) = rest.split_first_chunk::<8>() {
        hash = (hash.rotate_left(5) ^ u64::from_le_bytes(*chunk)).wrapping_mul(SEED);
        rest = tail;
    }
    if !rest.is_empty() {
        hash = (hash.rotate_left(5) ^ load(rest)).wrapping_mul(SEED);
    }
    // The table takes its control bits from the top of the hash: fold the
    // well-mixed high half down and the low half up.
    hash ^ (hash >> 29)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_pile_up_per_key_and_ripen() {
        let mut t = Table::new(1 << 20);
        for _ in 0..RIPE_COUNT {
            t.add(b"the", b"1");
        }
        t.add(b"fox", b"1");
        assert_eq!(t.take_ripe(), vec![Box::<[u8]>::from(&b"the"[..])]);
        let (runs, count) = t.take_values(b"the").unwrap();
        assert_eq!(count, RIPE_COUNT);
        // One run: "1" repeated.
        assert_eq!(
            runs,
            [&[1, 0, 0, 0, b'1'][..], &RIPE_COUNT.to_le_bytes()].concat()
        );
        let values: Vec<_> = crate::Values::from_runs(&runs, count).collect();
        assert_eq!(values.len(), RIPE_COUNT as usize);
        assert!(values.iter().all(|v| &**v == b"1"));
        assert!(
            t.take_values(b"fox").is_none(),
            "one value needs no combining"
        );
        t.put_values(b"the", &[4, 0, 0, 0, b'1', b'0', b'2', b'4']);
        let mut slots: Vec<Slot> = t.drain().collect();
        assert_eq!(slots.len(), 2);
        let the = slots.iter_mut().find(|s| &*s.key == b"the").unwrap();
        assert_eq!(the.count, 1);
        assert_eq!(
            the.take_runs(),
            (
                [&[4, 0, 0, 0][..], b"1024", &1u32.to_le_bytes()].concat(),
                1
            )
        );
        assert!(!t.over_budget());
    }

    #[test]
    fn a_combine_that_cannot_shrink_waits_for_twice_as_many_values() {
        let mut t = Table::new(1 << 30);
        // Same-size values, so the count and the packed bytes both double.
        let distinct = |i: u32| format!("v{i:06}").into_bytes();
        for i in 0..RIPE_COUNT {
            t.add(b"k", &distinct(i));
        }
        assert_eq!(t.take_ripe().len(), 1);
        let (runs, count) = t.take_values(b"k").unwrap();
        // A combine that gives every value back.
        let mut back = Vec::new();
        for v in crate::Values::from_runs(&runs, count) {
            batch::put(&mut back, &v);
        }
        t.put_values(b"k", &back);
        for i in 0..RIPE_COUNT - 1 {
            t.add(b"k", &distinct(RIPE_COUNT + i));
        }
        assert!(!t.has_ripe(), "not ripe again before twice the values");
        t.add(b"k", b"one more");
        assert!(t.has_ripe());
    }

    #[test]
    fn taking_a_keys_values_gives_back_what_they_were_counted() {
        let mut t = Table::new(1 << 20);
        for v in [b"a", b"a", b"b"] {
            t.add(b"k", v);
        }
        // "a" twice is a packed run of 9 bytes; "b" is the open run.
        assert_eq!(t.bytes, 1 + SLOT_OVERHEAD + 9);
        t.take_values(b"k").unwrap();
        assert_eq!(t.bytes, 1 + SLOT_OVERHEAD);
    }

    #[test]
    fn runs_keep_values_and_their_order() {
        let mut t = Table::new(1 << 20);
        let values: [&[u8]; 7] = [b"a", b"a", b"long value here", b"a", b"", b"", b"bb"];
        for v in values {
            t.add(b"k", v);
        }
        let (runs, count) = t.take_values(b"k").unwrap();
        assert_eq!(count, values.len() as u32);
        let got: Vec<Vec<u8>> = crate::Values::from_runs(&runs, count)
            .map(|v| v.into_owned())
            .collect();
        assert_eq!(got, values.map(<[u8]>::to_vec));
    }

    #[test]
    fn keys_are_told_apart_by_every_byte_and_the_length() {
        let mut t = Table::new(1 << 20);
        let keys: [&[u8]; 6] = [b"", b"a", b"a\0", b"abcdefgh", b"abcdefghi", b"abcdefgh\0"];
        for key in keys {
            t.add(key, key);
        }
        for key in keys {
            t.add(key, b"again and again");
        }
        let slots: Vec<Slot> = t.drain().collect();
        assert_eq!(slots.len(), keys.len());
        assert!(slots.iter().all(|s| s.count == 2));
        // Every byte of every short length counts.
        for n in 1..=8usize {
            let base = vec![b'x'; n];
            for i in 0..n {
                let mut other = base.clone();
                other[i] = b'y';
                assert_ne!(load(&base), load(&other), "length {n}, byte {i}");
                assert_eq!(&unload(load(&other), n)[..n], &other[..]);
            }
        }
    }

    #[test]
    fn the_budget_counts_keys_and_values() {
        let mut t = Table::new(1000);
        for i in 0..30u32 {
            t.add(&i.to_le_bytes(), b"value");
        }
        assert!(t.over_budget());
        assert!(t.over_hard_limit());
    }
}
