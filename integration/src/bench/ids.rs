//! Benchmark 2, node ids: 1,000,000 allocations, then 1,000,000 churn steps (free a pseudo-random
//! allocated id, allocate again: the lowest free id comes back), then 1,000,000 frees — with the core's
//! `alloc::IdAllocator` and with the baseline, a bitmask whose lowest free bit is found by scanning the
//! words from the start (the 2016 framework's one-int bitmask, grown so it can hold a million ids; it is
//! generous to the baseline, which rebuilt the mask from the task list on every launch).

use std::time::{Duration, Instant};

use tether_core::NodeId;
use tether_core::alloc::IdAllocator;

use super::{figure, note, ratio};

/// The baseline: one bit per id, lowest free found by a linear scan of the words.
#[derive(Debug, Clone, Default)]
pub struct BitmaskIds {
    first: u64,
    words: Vec<u64>,
}

impl BitmaskIds {
    /// An empty mask whose ids start at `first`.
    #[must_use]
    pub fn new(first: u64) -> BitmaskIds {
        BitmaskIds {
            first,
            words: Vec::new(),
        }
    }

    /// The lowest free id, now allocated.
    pub fn allocate(&mut self) -> u64 {
        let w = self
            .words
            .iter()
            .position(|w| *w != u64::MAX)
            .unwrap_or_else(|| {
                self.words.push(0);
                self.words.len() - 1
            });
        let bit = (!self.words[w]).trailing_zeros();
        self.words[w] |= 1 << bit;
        self.first + (w as u64) * 64 + u64::from(bit)
    }

    /// Frees `id`.
    pub fn release(&mut self, id: u64) {
        let bit = (id - self.first) as usize;
        if let Some(w) = self.words.get_mut(bit / 64) {
            *w &= !(1 << (bit % 64));
        }
    }
}

/// A deterministic pseudo-random sequence (xorshift), so both sides see the same operations.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    /// Seeded generator (seed must not be 0).
    #[must_use]
    pub fn new(seed: u64) -> XorShift {
        XorShift(seed.max(1))
    }

    /// Next value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// The operations of one run, applied to some allocator; returns a checksum of every id handed out.
pub trait Ids {
    /// Allocates the lowest free id.
    fn alloc(&mut self) -> u64;
    /// Frees an id.
    fn free(&mut self, id: u64);
}

impl Ids for IdAllocator {
    fn alloc(&mut self) -> u64 {
        self.allocate().0
    }
    fn free(&mut self, id: u64) {
        self.release(NodeId(id));
    }
}

impl Ids for BitmaskIds {
    fn alloc(&mut self) -> u64 {
        self.allocate()
    }
    fn free(&mut self, id: u64) {
        self.release(id);
    }
}

/// Allocates `n` ids, churns `n` times, frees all; returns a checksum of the ids allocated.
pub fn workload(ids: &mut impl Ids, n: u64) -> u64 {
    let mut sum = 0u64;
    for _ in 0..n {
        sum = sum.wrapping_mul(31).wrapping_add(ids.alloc());
    }
    let mut rng = XorShift::new(0x7e7e_7e7e);
    for _ in 0..n {
        ids.free(1 + rng.next_u64() % n);
        sum = sum.wrapping_mul(31).wrapping_add(ids.alloc());
    }
    for id in 1..=n {
        ids.free(id);
    }
    sum
}

/// Runs benchmark 2 and prints its lines.
pub fn bench(quick: bool) {
    let n: u64 = 1_000_000;
    let reps = if quick { 1 } else { 3 };
    note(format!(
        "node ids: {n} allocations + {n} free/allocate steps + {n} frees, {reps} run(s) each"
    ));
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for _ in 0..reps {
        let mut a = IdAllocator::new(1);
        let t = Instant::now();
        let x = workload(&mut a, n);
        ours.push(t.elapsed());
        let mut b = BitmaskIds::new(1);
        let t = Instant::now();
        let y = workload(&mut b, n);
        theirs.push(t.elapsed());
        if x != y {
            note("node ids: the baseline handed out different ids (checksums differ)");
        }
    }
    let (ours, theirs): (Duration, Duration) = (super::median(ours), super::median(theirs));
    let per_op = |d: Duration| d.as_secs_f64() * 1e9 / (3 * n) as f64;
    figure("node_ids_3m_ops", super::ms(ours), "ms");
    figure("node_ids_3m_ops_bitmask_scan", super::ms(theirs), "ms");
    figure("node_ids_per_op", per_op(ours), "ns");
    figure("node_ids_per_op_bitmask_scan", per_op(theirs), "ns");
    ratio("node_ids", theirs, ours);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bitmask_hands_out_the_same_ids_as_the_allocator() {
        let mut a = IdAllocator::new(1);
        let mut b = BitmaskIds::new(1);
        let mut rng = XorShift::new(42);
        let mut live: Vec<u64> = Vec::new();
        for step in 0..2_000 {
            if step % 3 == 2 && !live.is_empty() {
                let id = live.swap_remove((rng.next_u64() % live.len() as u64) as usize);
                a.free(id);
                b.free(id);
            } else {
                let (x, y) = (a.alloc(), b.alloc());
                assert_eq!(x, y, "step {step}");
                live.push(x);
            }
        }
        assert_eq!(
            workload(&mut IdAllocator::new(1), 500),
            workload(&mut BitmaskIds::new(1), 500)
        );
    }
}
