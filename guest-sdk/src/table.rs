//! In-mapper combining: the table where a map task's pairs wait, grouped
//! by key, until the job's `combine` folds them. A key's values are
//! combined as soon as they pile up, and the whole table is combined and
//! emitted when it outgrows the budget the host gave at `init` and at the
//! end of the task, so a word count emits each distinct word about once per
//! task instead of once per occurrence.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Bytes of bookkeeping counted per key on top of its bytes (the map entry,
/// the key's and the values' allocations).
const SLOT_OVERHEAD: usize = 96;
/// A key is combined once it holds this many values...
const RIPE_COUNT: u32 = 256;
/// ... or this many bytes of them.
const RIPE_BYTES: usize = 4096;

/// One key's values, packed as a value batch.
#[derive(Default)]
pub(crate) struct Slot {
    pub(crate) values: Vec<u8>,
    pub(crate) count: u32,
    ripe: bool,
}

/// Pairs held back for combining.
pub(crate) struct Table {
    pub(crate) slots: HashMap<Box<[u8]>, Slot, BuildHasherDefault<FxHasher>>,
    bytes: usize,
    budget: usize,
    /// Keys whose values piled up since the last `take_ripe`.
    ripe: Vec<Box<[u8]>>,
}

impl Table {
    pub(crate) fn new(budget: usize) -> Self {
        Table {
            slots: HashMap::default(),
            bytes: 0,
            budget,
            ripe: Vec::new(),
        }
    }

    /// Adds one pair.
    #[inline]
    pub(crate) fn add(&mut self, key: &[u8], value: &[u8]) {
        let added = 4 + value.len();
        if let Some(slot) = self.slots.get_mut(key) {
            batch::put(&mut slot.values, value);
            slot.count += 1;
            self.bytes += added;
            if !slot.ripe && (slot.count >= RIPE_COUNT || slot.values.len() >= RIPE_BYTES) {
                slot.ripe = true;
                self.ripe.push(key.into());
            }
            return;
        }
        let mut slot = Slot::default();
        batch::put(&mut slot.values, value);
        slot.count = 1;
        self.bytes += key.len() + SLOT_OVERHEAD + added;
        self.slots.insert(key.into(), slot);
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

    /// Takes a key's values out for combining (the key stays, empty).
    pub(crate) fn take_values(&mut self, key: &[u8]) -> Option<(Vec<u8>, u32)> {
        let slot = self.slots.get_mut(key)?;
        slot.ripe = false;
        if slot.count <= 1 {
            return None;
        }
        self.bytes -= slot.values.len();
        let count = std::mem::replace(&mut slot.count, 0);
        Some((std::mem::take(&mut slot.values), count))
    }

    /// Puts a key's combined values back.
    pub(crate) fn put_values(&mut self, key: &[u8], values: Vec<u8>, count: u32) {
        if let Some(slot) = self.slots.get_mut(key) {
            self.bytes += values.len();
            slot.values = values;
            slot.count = count;
        }
    }

    /// Empties the table, handing back its contents.
    pub(crate) fn drain(&mut self) -> HashMap<Box<[u8]>, Slot, BuildHasherDefault<FxHasher>> {
        self.bytes = 0;
        self.ripe.clear();
        std::mem::take(&mut self.slots)
    }
}

/// A fast non-cryptographic hash (the multiply-rotate of Firefox and rustc).
/// The table holds one task's own keys, so there is no adversary to
/// resist, and SipHash would cost more than the rest of an emit.
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher {
    hash: u64,
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, mut bytes: &[u8]) {
        while let Some((chunk, rest)) = bytes.split_first_chunk::<8>() {
            self.add(u64::from_le_bytes(*chunk));
            bytes = rest;
        }
        if let Some((chunk, rest)) = bytes.split_first_chunk::<4>() {
            self.add(u64::from(u32::from_le_bytes(*chunk)));
            bytes = rest;
        }
        for &b in bytes {
            self.add(u64::from(b));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
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
        let (values, count) = t.take_values(b"the").unwrap();
        assert_eq!(count, RIPE_COUNT);
        assert_eq!(values.len(), 5 * RIPE_COUNT as usize);
        assert!(
            t.take_values(b"fox").is_none(),
            "one value needs no combining"
        );
        t.put_values(b"the", vec![2, 0, 0, 0, b'6', b'4'], 1);
        let slots = t.drain();
        assert_eq!(slots.len(), 2);
        assert_eq!(slots[&b"the"[..]].count, 1);
        assert!(!t.over_budget());
    }

    #[test]
    fn the_budget_counts_keys_and_values() {
        let mut t = Table::new(1000);
        for i in 0..20u32 {
            t.add(&i.to_le_bytes(), b"value");
        }
        assert!(t.over_budget());
        assert!(t.over_hard_limit());
    }
}
