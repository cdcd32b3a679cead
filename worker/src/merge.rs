//! Sorted record streams: the `RecordSource` trait, a k-way merge of many
//! sources, and the grouper that packs a sorted stream into group batches
//! for `combine` and `reduce`. Memory use is one block per source plus one
//! batch, whatever the number of records.

use std::io;

/// A cursor over records in ascending key order.
pub trait RecordSource {
    /// Moves to the next record; false at the end.
    fn advance(&mut self) -> io::Result<bool>;
    /// The current record's key (valid after `advance` returned true).
    fn key(&self) -> &[u8];
    /// The current record's value.
    fn value(&self) -> &[u8];
}

impl<R: io::Read> RecordSource for crate::runfile::SegmentReader<R> {
    fn advance(&mut self) -> io::Result<bool> {
        crate::runfile::SegmentReader::advance(self)
    }
    fn key(&self) -> &[u8] {
        crate::runfile::SegmentReader::key(self)
    }
    fn value(&self) -> &[u8] {
        crate::runfile::SegmentReader::value(self)
    }
}

impl<S: RecordSource + ?Sized> RecordSource for Box<S> {
    fn advance(&mut self) -> io::Result<bool> {
        (**self).advance()
    }
    fn key(&self) -> &[u8] {
        (**self).key()
    }
    fn value(&self) -> &[u8] {
        (**self).value()
    }
}

/// A boxed source that can move between threads with the task.
pub type BoxedSource = Box<dyn RecordSource + Send>;

/// K-way merge by key. Ties go to the lower source index, so values of a
/// key come out in source order (map task order on the reduce side).
pub struct Merge<S> {
    sources: Vec<S>,
    heap: Vec<usize>,
    current: Option<usize>,
    started: bool,
}

impl<S: RecordSource> Merge<S> {
    /// A merge of `sources`, each already sorted.
    pub fn new(sources: Vec<S>) -> Self {
        Merge {
            heap: Vec::with_capacity(sources.len()),
            sources,
            current: None,
            started: false,
        }
    }

    fn less(&self, a: usize, b: usize) -> bool {
        match self.sources[a].key().cmp(self.sources[b].key()) {
            std::cmp::Ordering::Equal => a < b,
            ord => ord == std::cmp::Ordering::Less,
        }
    }

    fn push(&mut self, source: usize) {
        self.heap.push(source);
        let mut child = self.heap.len() - 1;
        while child > 0 {
            let parent = (child - 1) / 2;
            if self.less(self.heap[child], self.heap[parent]) {
                self.heap.swap(child, parent);
                child = parent;
            } else {
                break;
            }
        }
    }

    fn pop(&mut self) -> Option<usize> {
        if self.heap.is_empty() {
            return None;
        }
        let top = self.heap.swap_remove(0);
        let len = self.heap.len();
        let mut parent = 0;
        loop {
            let left = 2 * parent + 1;
            let right = left + 1;
            let mut smallest = parent;
            if left < len && self.less(self.heap[left], self.heap[smallest]) {
                smallest = left;
            }
            if right < len && self.less(self.heap[right], self.heap[smallest]) {
                smallest = right;
            }
            if smallest == parent {
                break;
            }
            self.heap.swap(parent, smallest);
            parent = smallest;
        }
        Some(top)
    }
}

impl<S: RecordSource> RecordSource for Merge<S> {
    fn advance(&mut self) -> io::Result<bool> {
        if !self.started {
            self.started = true;
            for i in 0..self.sources.len() {
                if self.sources[i].advance()? {
                    self.push(i);
                }
            }
        } else if let Some(i) = self.current
            && self.sources[i].advance()?
        {
            self.push(i);
        }
        self.current = self.pop();
        Ok(self.current.is_some())
    }

    fn key(&self) -> &[u8] {
        self.sources[self.current.expect("advance first")].key()
    }

    fn value(&self) -> &[u8] {
        self.sources[self.current.expect("advance first")].value()
    }
}

/// How a `Grouper::fill` call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// The stream is exhausted; the batch (possibly empty) holds the rest.
    End,
    /// The batch holds whole groups and more follow.
    Full,
    /// The batch's last group continues: read it with `next_values`.
    Partial,
}

/// Packs a sorted stream into group batches (the WIT world's encoding).
pub struct Grouper<S> {
    src: S,
    /// The source is positioned on a record no batch has taken yet.
    pending: bool,
    exhausted: bool,
    group_key: Vec<u8>,
    /// Records and groups handed out so far.
    pub records: u64,
    /// Distinct keys handed out so far.
    pub groups: u64,
}

use batch::put;

impl<S: RecordSource + Send + 'static> crate::runtime::ValueSource for Grouper<S> {
    fn next_values(&mut self, out: &mut Vec<u8>, max_bytes: usize) -> io::Result<()> {
        Grouper::next_values(self, out, max_bytes)
    }
}

impl<S: RecordSource> Grouper<S> {
    /// A grouper at the start of `src`.
    pub fn new(src: S) -> Self {
        Grouper {
            src,
            pending: false,
            exhausted: false,
            group_key: Vec::new(),
            records: 0,
            groups: 0,
        }
    }

    fn ensure_pending(&mut self) -> io::Result<bool> {
        if !self.pending && !self.exhausted {
            if self.src.advance()? {
                self.pending = true;
            } else {
                self.exhausted = true;
            }
        }
        Ok(self.pending)
    }

    /// Clears `out` and fills it with groups until about `budget` bytes.
    /// With `allow_partial`, a group that alone passes the budget is cut
    /// and the rest of its values come from `next_values`; without it, a
    /// group always goes whole into one batch.
    pub fn fill(
        &mut self,
        out: &mut Vec<u8>,
        budget: usize,
        allow_partial: bool,
    ) -> io::Result<Fill> {
        out.clear();
        loop {
            if !self.ensure_pending()? {
                return Ok(Fill::End);
            }
            if !out.is_empty() && out.len() >= budget {
                return Ok(Fill::Full);
            }
            self.group_key.clear();
            self.group_key.extend_from_slice(self.src.key());
            self.groups += 1;
            put(out, &self.group_key);
            let count_at = out.len();
            out.extend_from_slice(&[0; 4]);
            let mut count: u32 = 0;
            loop {
                put(out, self.src.value());
                count += 1;
                self.records += 1;
                self.pending = false;
                if !self.ensure_pending()? || self.src.key() != self.group_key.as_slice() {
                    break;
                }
                if (allow_partial && out.len() >= budget) || count == u32::MAX {
                    out[count_at..count_at + 4].copy_from_slice(&count.to_le_bytes());
                    return Ok(Fill::Partial);
                }
            }
            out[count_at..count_at + 4].copy_from_slice(&count.to_le_bytes());
        }
    }

    /// After `Fill::Partial`: clears `out` and fills it with the next values
    /// of the cut group as a value batch; empty when the group is done.
    pub fn next_values(&mut self, out: &mut Vec<u8>, budget: usize) -> io::Result<()> {
        out.clear();
        while out.len() < budget
            && self.ensure_pending()?
            && self.src.key() == self.group_key.as_slice()
        {
            put(out, self.src.value());
            self.records += 1;
            self.pending = false;
        }
        Ok(())
    }

    /// Drops the values of the cut group nobody asked for.
    pub fn skip_rest_of_group(&mut self) -> io::Result<()> {
        while self.ensure_pending()? && self.src.key() == self.group_key.as_slice() {
            self.records += 1;
            self.pending = false;
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An in-memory sorted source for tests.
    pub(crate) struct VecSource {
        records: Vec<(Vec<u8>, Vec<u8>)>,
        pos: Option<usize>,
    }

    impl VecSource {
        pub(crate) fn new(records: Vec<(&str, &str)>) -> Self {
            VecSource {
                records: records
                    .into_iter()
                    .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                    .collect(),
                pos: None,
            }
        }
    }

    impl RecordSource for VecSource {
        fn advance(&mut self) -> io::Result<bool> {
            let next = self.pos.map_or(0, |p| p + 1);
            self.pos = Some(next);
            Ok(next < self.records.len())
        }
        fn key(&self) -> &[u8] {
            &self.records[self.pos.unwrap()].0
        }
        fn value(&self) -> &[u8] {
            &self.records[self.pos.unwrap()].1
        }
    }

    fn decode_groups(batch: &[u8]) -> Vec<(String, Vec<String>)> {
        let mut reader = batch::Reader::new(batch);
        let text = |field: &[u8]| String::from_utf8(field.to_vec()).unwrap();
        let mut groups = Vec::new();
        while !reader.is_empty() {
            let key = text(reader.field().unwrap());
            let count = reader.u32().unwrap();
            let values = (0..count).map(|_| text(reader.field().unwrap())).collect();
            groups.push((key, values));
        }
        groups
    }

    #[test]
    fn merge_interleaves_in_key_then_source_order() {
        let a = VecSource::new(vec![("a", "a1"), ("c", "a2")]);
        let b = VecSource::new(vec![("a", "b1"), ("b", "b2"), ("d", "b3")]);
        let mut m = Merge::new(vec![a, b, VecSource::new(vec![])]);
        let mut got = Vec::new();
        while m.advance().unwrap() {
            got.push(String::from_utf8(m.value().to_vec()).unwrap());
        }
        assert_eq!(got, ["a1", "b1", "b2", "a2", "b3"]);
    }

    #[test]
    fn grouper_packs_whole_groups_and_cuts_big_ones() {
        let src = VecSource::new(vec![
            ("a", "1"),
            ("a", "2"),
            ("b", "3"),
            ("c", "4"),
            ("c", "5"),
            ("c", "6"),
        ]);
        let mut g = Grouper::new(src);
        let mut buf = Vec::new();
        assert_eq!(g.fill(&mut buf, 1 << 20, true).unwrap(), Fill::End);
        assert_eq!(
            decode_groups(&buf),
            vec![
                ("a".into(), vec!["1".into(), "2".into()]),
                ("b".into(), vec!["3".into()]),
                ("c".into(), vec!["4".into(), "5".into(), "6".into()]),
            ]
        );

        let src = VecSource::new(vec![
            ("a", "1"),
            ("c", "4"),
            ("c", "5"),
            ("c", "6"),
            ("d", "7"),
        ]);
        let mut g = Grouper::new(src);
        // A tiny budget: one group per batch, and `c` is cut after one value.
        assert_eq!(g.fill(&mut buf, 1, true).unwrap(), Fill::Full);
        assert_eq!(decode_groups(&buf), vec![("a".into(), vec!["1".into()])]);
        assert_eq!(g.fill(&mut buf, 1, true).unwrap(), Fill::Partial);
        assert_eq!(decode_groups(&buf), vec![("c".into(), vec!["4".into()])]);
        g.next_values(&mut buf, 1).unwrap();
        assert_eq!(buf, b"\x01\0\0\x005");
        g.skip_rest_of_group().unwrap();
        assert_eq!(g.fill(&mut buf, 1, true).unwrap(), Fill::End);
        assert_eq!(decode_groups(&buf), vec![("d".into(), vec!["7".into()])]);
        assert_eq!((g.records, g.groups), (5, 3));
    }
}
