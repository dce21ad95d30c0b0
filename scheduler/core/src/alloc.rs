//! Node-id allocation: the lowest free id at or above the first id, unbounded, O(log n). Free ids below the
//! high-water mark sit in a `BTreeSet`; above it every id is free.

use crate::ids::NodeId;
use std::collections::BTreeSet;

/// Allocates and frees node ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdAllocator {
    first: u64,
    /// Every id in `first..high` not in `free` is allocated.
    high: u64,
    free: BTreeSet<u64>,
    allocated: BTreeSet<u64>,
}

impl IdAllocator {
    /// An allocator with nothing allocated.
    #[must_use]
    pub fn new(first: u64) -> IdAllocator {
        IdAllocator {
            first,
            high: first,
            free: BTreeSet::new(),
            allocated: BTreeSet::new(),
        }
    }

    /// The lowest free id, now allocated.
    pub fn allocate(&mut self) -> NodeId {
        let id = match self.free.pop_first() {
            Some(id) => id,
            None => {
                let id = self.high;
                self.high = self.high.saturating_add(1);
                id
            }
        };
        self.allocated.insert(id);
        NodeId(id)
    }

    /// Marks a specific id allocated (restoring persisted state). Ids below `first` are ignored.
    pub fn claim(&mut self, id: NodeId) {
        let id = id.0;
        if id < self.first || self.allocated.contains(&id) {
            return;
        }
        if id >= self.high {
            self.free.extend(self.high..id);
            self.high = id.saturating_add(1);
        } else {
            self.free.remove(&id);
        }
        self.allocated.insert(id);
    }

    /// Frees an id; the high-water mark shrinks when the top ids are all free.
    pub fn release(&mut self, id: NodeId) {
        if !self.allocated.remove(&id.0) {
            return;
        }
        self.free.insert(id.0);
        while self.high > self.first && self.free.remove(&(self.high - 1)) {
            self.high -= 1;
        }
    }

    /// The highest allocated id.
    #[must_use]
    pub fn highest(&self) -> Option<NodeId> {
        self.allocated.last().copied().map(NodeId)
    }

    /// Whether `id` is allocated.
    #[must_use]
    pub fn contains(&self, id: NodeId) -> bool {
        self.allocated.contains(&id.0)
    }

    /// How many ids are allocated.
    #[must_use]
    pub fn len(&self) -> usize {
        self.allocated.len()
    }

    /// Nothing allocated.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.allocated.is_empty()
    }

    /// Allocated ids, ascending.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = NodeId> + '_ {
        self.allocated.iter().copied().map(NodeId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowest_free_first_from_the_first_id() {
        let mut a = IdAllocator::new(1);
        assert_eq!(a.allocate(), NodeId(1));
        assert_eq!(a.allocate(), NodeId(2));
        assert_eq!(a.allocate(), NodeId(3));
        a.release(NodeId(2));
        assert_eq!(a.allocate(), NodeId(2));
        assert_eq!(a.allocate(), NodeId(4));
        let mut b = IdAllocator::new(7);
        assert_eq!(b.allocate(), NodeId(7));
    }

    #[test]
    fn thousands_of_ids_without_bound_or_reuse() {
        let mut a = IdAllocator::new(1);
        for want in 1..=5_000u64 {
            assert_eq!(a.allocate(), NodeId(want));
        }
        for id in [17u64, 4_000, 3] {
            a.release(NodeId(id));
        }
        assert_eq!(a.allocate(), NodeId(3));
        assert_eq!(a.allocate(), NodeId(17));
        assert_eq!(a.allocate(), NodeId(4_000));
        assert_eq!(a.allocate(), NodeId(5_001));
        assert_eq!(a.len(), 5_001);
    }

    #[test]
    fn claim_restores_gaps_as_free() {
        let mut a = IdAllocator::new(1);
        a.claim(NodeId(3));
        a.claim(NodeId(1));
        assert_eq!(a.allocate(), NodeId(2));
        assert_eq!(a.allocate(), NodeId(4));
        a.release(NodeId(4));
        a.release(NodeId(3));
        assert_eq!(a.highest(), Some(NodeId(2)));
        assert_eq!(a.allocate(), NodeId(3));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Allocate,
        Release(u64),
        Claim(u64),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            3 => Just(Op::Allocate),
            2 => (0u64..40).prop_map(Op::Release),
            1 => (0u64..40).prop_map(Op::Claim),
        ]
    }

    proptest::proptest! {
        /// Against a naive model: allocate returns the lowest id >= first not in use.
        #[test]
        fn allocator_matches_the_naive_model(first in 0u64..5, ops in proptest::collection::vec(op(), 0..200)) {
            let mut a = IdAllocator::new(first);
            let mut model = BTreeSet::new();
            for op in ops {
                match op {
                    Op::Allocate => {
                        let want = (first..).find(|i| !model.contains(i)).unwrap_or(first);
                        model.insert(want);
                        proptest::prop_assert_eq!(a.allocate(), NodeId(want));
                    }
                    Op::Release(i) => {
                        model.remove(&i);
                        a.release(NodeId(i));
                    }
                    Op::Claim(i) => {
                        if i >= first {
                            model.insert(i);
                        }
                        a.claim(NodeId(i));
                    }
                }
                let have: Vec<u64> = a.iter().map(|n| n.0).collect();
                let want: Vec<u64> = model.iter().copied().collect();
                proptest::prop_assert_eq!(have, want);
                proptest::prop_assert_eq!(a.highest().map(|n| n.0), model.last().copied());
            }
        }
    }
}
