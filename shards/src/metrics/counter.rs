//! A counter or gauge with one writer thread and any number of reader threads.

use std::sync::atomic::{AtomicU64, Ordering};

/// A `u64` that only its shard's thread writes and the admin HTTP thread reads.
///
/// With a single writer an update is a relaxed load and store (plain moves on x86 and ARM), not
/// a locked read-modify-write: the hot path pays nothing for being readable from another thread,
/// and a reader sees every value whole, at most one update late.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`; call only from the owning shard's thread.
    pub fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    /// Subtracts `n` (a gauge going down); call only from the owning shard's thread.
    pub fn sub(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).saturating_sub(n),
            Ordering::Relaxed,
        );
    }

    /// Replaces the value (a sampled gauge); call only from the owning shard's thread.
    pub fn set(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed);
    }

    /// The current value, from any thread.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}
