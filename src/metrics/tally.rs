//! Counters for the request path. Each thread counts into cells of its own, found through `thread_local`:
//! [`Counters`] for a few keys known by index (a plain add), [`Tally`] for open key sets (a short list, then a map,
//! behind an uncontended lock). A scrape sums the threads' cells and reports the totals through an OpenTelemetry
//! observable counter, so the exported series are the same as a counter's.
//!
//! Why not an OpenTelemetry counter `add`: it builds, hashes and looks up an attribute set per measurement, and
//! every thread adds to the same cell; a shared concurrent map (tried before: `DashMap`) still bounces its shard
//! lock and the cell between cores on every request. Measured on the warm-manifest path, see
//! `docs/benchmarks.md` (cost of metrics and the access log).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use opentelemetry::metrics::{AsyncInstrumentBuilder, ObservableCounter};
use opentelemetry::KeyValue;
use rustc_hash::FxHasher;
use thread_local::ThreadLocal;

/// A thread's counts: the first [`FEW`] keys in a list searched in order, any further ones in a map. The keys
/// counted on the request path are few (upstream namespaces); comparing a short string with one or two keys
/// costs a fraction of hashing it and probing a map.
struct Cells<K> {
    few: Vec<(K, u64)>,
    more: HashMap<K, u64, BuildHasherDefault<FxHasher>>,
}

/// How many keys a thread keeps in its list before using the map.
const FEW: usize = 8;

impl<K> Default for Cells<K> {
    fn default() -> Self {
        Cells {
            few: Vec::new(),
            more: HashMap::default(),
        }
    }
}

impl<K: Eq + Hash> Cells<K> {
    /// The count of the key `key` borrows from, made with `owned` (at 0) the first time.
    fn count<Q>(&mut self, key: &Q, owned: impl FnOnce() -> K) -> &mut u64
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        // An index, not a reference from the search: the borrow checker would hold it over the pushes below.
        // The same key object (the configured registry's name, shared) is known equal without comparing bytes.
        if let Some(i) = self
            .few
            .iter()
            .position(|(k, _)| std::ptr::eq(k.borrow(), key) || k.borrow() == key)
        {
            return &mut self.few[i].1;
        }
        if self.few.len() < FEW {
            self.few.push((owned(), 0));
            return &mut self.few.last_mut().expect("just pushed").1;
        }
        if !self.more.contains_key(key) {
            self.more.insert(owned(), 0);
        }
        self.more.get_mut(key).expect("just inserted")
    }

    fn iter(&self) -> impl Iterator<Item = (&K, &u64)> {
        self.few.iter().map(|(k, n)| (k, n)).chain(self.more.iter())
    }
}

/// Cumulative counts by key.
pub struct Tally<K: Eq + Hash + Send> {
    threads: ThreadLocal<Mutex<Cells<K>>>,
}

impl<K: Eq + Hash + Send> Default for Tally<K> {
    fn default() -> Self {
        Tally {
            threads: ThreadLocal::new(),
        }
    }
}

impl<K: Eq + Hash + Clone + Send> Tally<K> {
    /// Adds `n` to `key`'s count.
    pub fn add(&self, key: K, n: u64) {
        self.add_borrowed(&key, n, || key.clone());
    }

    /// Adds `n` to the count of the key `key` borrows from, making the key with `owned` only the first time
    /// this thread counts it (e.g. no reference count touched for an `Arc<str>` key already present).
    pub fn add_borrowed<Q>(&self, key: &Q, n: u64, owned: impl FnOnce() -> K)
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        *self.cells().count(key, owned) += n;
    }

    /// Calls `f` with every key and its count summed over the threads (at scrape time).
    pub fn each(&self, mut f: impl FnMut(&K, u64)) {
        let mut total: HashMap<K, u64, BuildHasherDefault<FxHasher>> = HashMap::default();
        for cells in self.threads.iter() {
            for (key, n) in lock(cells).iter() {
                *total.entry(key.clone()).or_insert(0) += n;
            }
        }
        for (key, n) in &total {
            f(key, *n);
        }
    }

    fn cells(&self) -> std::sync::MutexGuard<'_, Cells<K>> {
        lock(self.threads.get_or_default())
    }
}

/// Counts for a fixed set of `N` keys known by index (a status class, hit or miss): each thread adds to cells
/// only it writes, so an increment is a load and a store on a cache line no other core touches until a scrape.
pub struct Counters<const N: usize> {
    threads: ThreadLocal<[AtomicU64; N]>,
}

impl<const N: usize> Default for Counters<N> {
    fn default() -> Self {
        Counters {
            threads: ThreadLocal::new(),
        }
    }
}

impl<const N: usize> Counters<N> {
    /// Adds `n` to the count of key `index` (`index < N`).
    pub fn add(&self, index: usize, n: u64) {
        let cell = &self
            .threads
            .get_or(|| std::array::from_fn(|_| AtomicU64::new(0)))[index];
        add_own(cell, n);
    }

    /// The count of key `index`, summed over the threads (at scrape time).
    pub fn sum(&self, index: usize) -> u64 {
        self.threads
            .iter()
            .map(|cells| cells[index].load(Ordering::Relaxed))
            .sum()
    }

    /// New counters, exported through `counter` (an observable counter, named and described): key `i` is the
    /// series `label="values[i]"`, left out while its count is zero.
    pub fn exported(
        counter: AsyncInstrumentBuilder<'_, ObservableCounter<u64>, u64>,
        label: &'static str,
        values: [&'static str; N],
    ) -> Arc<Self> {
        let counters = Arc::new(Counters::default());
        let observed = counters.clone();
        counter
            .with_callback(move |o| {
                for (index, value) in values.into_iter().enumerate() {
                    let n = observed.sum(index);
                    if n > 0 {
                        o.observe(n, &[KeyValue::new(label, value)]);
                    }
                }
            })
            .build();
        counters
    }
}

/// Adds `n` to a cell only the calling thread writes (a thread id is reused only after its thread ended): a
/// load and a store, no locked read-modify-write.
pub fn add_own(cell: &AtomicU64, n: u64) {
    cell.store(
        cell.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding it cannot leave a count half-written: keep counting.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
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

    #[test]
    fn counts_keys_beyond_the_list_in_the_map() {
        let tally: Tally<String> = Tally::default();
        for round in 1..=3 {
            for k in 0..FEW * 3 {
                tally.add_borrowed(format!("k{k}").as_str(), round, || format!("k{k}"));
            }
        }
        let mut seen = Vec::new();
        tally.each(|k, v| seen.push((k.clone(), v)));
        seen.sort();
        let mut expected: Vec<_> = (0..FEW * 3).map(|k| (format!("k{k}"), 6)).collect();
        expected.sort();
        assert_eq!(seen, expected);
        let cells = tally.cells();
        assert_eq!((cells.few.len(), cells.more.len()), (FEW, FEW * 2));
    }

    #[test]
    fn counters_sum_over_threads() {
        let counters: Arc<Counters<3>> = Arc::new(Counters::default());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let counters = counters.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        counters.add(t % 2, 1);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        counters.add(2, 7);
        assert_eq!(
            [counters.sum(0), counters.sum(1), counters.sum(2)],
            [2000, 2000, 7]
        );
    }

    #[test]
    fn sums_over_threads_including_ones_that_ended() {
        let tally: Arc<Tally<Arc<str>>> = Arc::new(Tally::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let tally = tally.clone();
                std::thread::spawn(move || {
                    let name: Arc<str> = "docker.io".into();
                    for _ in 0..1000 {
                        tally.add_borrowed("docker.io", 1, || name.clone());
                    }
                    tally.add("quay.io".into(), 5);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        tally.add_borrowed("docker.io", 1, || "docker.io".into());
        let mut seen = Vec::new();
        tally.each(|k, v| seen.push((k.to_string(), v)));
        seen.sort();
        assert_eq!(
            seen,
            vec![("docker.io".to_string(), 4001), ("quay.io".to_string(), 20)]
        );
    }
}
