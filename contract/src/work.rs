//! Work counters for tests that assert how work grows with fleet size, without timing it
//! (timings are noisy on shared machines; counts are not). Compiled only with the
//! `work-counters` feature, which the engine's tests turn on.
//!
//! One counter: every comparison of two [`ResourceId`](crate::resource::ResourceId)s (map
//! lookups and inserts keyed by address, sorts, equality) and every read of one
//! (`provider`, `path`, `as_str`). A pass that scans every compiled resource for each tenant
//! shows up here even when it allocates nothing.

use std::sync::atomic::{AtomicU64, Ordering};

static ID_OPS: AtomicU64 = AtomicU64::new(0);

/// Counts one comparison or read of an address.
#[inline]
pub fn count_id_op() {
    ID_OPS.fetch_add(1, Ordering::Relaxed);
}

/// Address comparisons and reads since the process started, on all threads.
pub fn id_ops() -> u64 {
    ID_OPS.load(Ordering::Relaxed)
}
