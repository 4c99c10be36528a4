//! Counters for the request path: an increment is one atomic add on a cell found by a small key (no attribute
//! set built, hashed and sorted per measurement, as an OpenTelemetry counter `add` does); the cells are reported
//! through an OpenTelemetry observable counter at scrape time, so the exported series are the same.

use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;

/// Cumulative counts by key.
pub struct Tally<K: Eq + Hash> {
    cells: DashMap<K, AtomicU64>,
}

impl<K: Eq + Hash + Clone> Default for Tally<K> {
    fn default() -> Self {
        Tally {
            cells: DashMap::new(),
        }
    }
}

impl<K: Eq + Hash + Clone> Tally<K> {
    /// Adds `n` to `key`'s count.
    pub fn add(&self, key: K, n: u64) {
        if let Some(cell) = self.cells.get(&key) {
            cell.fetch_add(n, Ordering::Relaxed);
            return;
        }
        self.cells
            .entry(key)
            .or_default()
            .fetch_add(n, Ordering::Relaxed);
    }

    /// Calls `f` with every key and its count (at scrape time).
    pub fn each(&self, mut f: impl FnMut(&K, u64)) {
        for cell in self.cells.iter() {
            f(cell.key(), cell.value().load(Ordering::Relaxed));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_key() {
        let tally = Tally::default();
        tally.add(("a", 200u16), 1);
        tally.add(("a", 200u16), 2);
        tally.add(("b", 404u16), 1);
        let mut seen = Vec::new();
        tally.each(|k, v| seen.push((*k, v)));
        seen.sort();
        assert_eq!(seen, vec![(("a", 200), 3), (("b", 404), 1)]);
    }
}
