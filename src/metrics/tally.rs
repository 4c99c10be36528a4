//! Counters for the request path. Each thread counts into cells of its own, found through `thread_local`:
//! [`Counters`] for a few keys known by index (a plain add), [`Tally`] for open key sets (a few slots without a
//! lock, then a map behind an uncontended one). A scrape sums the threads' cells and reports the totals through
//! an OpenTelemetry observable counter, so the exported series are the same as a counter's.
//!
//! Why not an OpenTelemetry counter `add`: it builds, hashes and looks up an attribute set per measurement, and
//! every thread adds to the same cell; a shared concurrent map (tried before: `DashMap`) still bounces its shard
//! lock and the cell between cores on every request. Measured on the warm-manifest path, see
//! `docs/benchmarks.md` (cost of metrics and the access log).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use opentelemetry::metrics::{AsyncInstrumentBuilder, ObservableCounter};
use opentelemetry::KeyValue;
use rustc_hash::FxHasher;
use thread_local::ThreadLocal;

/// A thread's counts: the first [`FEW`] keys in slots searched in order, any further ones in a map. The keys
/// counted on the request path are few (upstream namespaces); comparing a short string with one or two keys
/// costs a fraction of hashing it and probing a map. Only the owning thread fills a slot or adds to its count, so
/// the common case takes no lock: a key is set once and read by a scrape through its `OnceLock`, the count is a
/// cell of the thread's own (see [`add_own`]); the map, past the slots, is behind an uncontended lock.
struct Cells<K> {
    few: [Slot<K>; FEW],
    more: Mutex<HashMap<K, u64, BuildHasherDefault<FxHasher>>>,
}

struct Slot<K> {
    key: OnceLock<K>,
    count: AtomicU64,
}

/// How many keys a thread keeps in its slots before using the map.
const FEW: usize = 8;

impl<K> Default for Cells<K> {
    fn default() -> Self {
        Cells {
            few: std::array::from_fn(|_| Slot {
                key: OnceLock::new(),
                count: AtomicU64::new(0),
            }),
            more: Mutex::new(HashMap::default()),
        }
    }
}

impl<K: Eq + Hash> Cells<K> {
    /// Adds `n` to the count of the key `key` borrows from, made with `owned` the first time. Called only by the
    /// thread that owns these cells.
    fn add<Q>(&self, key: &Q, n: u64, owned: impl FnOnce() -> K)
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        for slot in &self.few {
            match slot.key.get() {
                Some(k) if k.borrow() == key => return add_own(&slot.count, n),
                Some(_) => {}
                None => {
                    // Slots fill in order, and only this thread fills them: this one is still empty. A scrape that
                    // sees the key before the count is added reads a count of 0, and leaves it out.
                    let _ = slot.key.set(owned());
                    return add_own(&slot.count, n);
                }
            }
        }
        let mut more = lock(&self.more);
        match more.get_mut(key) {
            Some(count) => *count += n,
            None => {
                more.insert(owned(), n);
            }
        }
    }

    /// Calls `f` with every key and its count (at scrape time).
    fn each(&self, mut f: impl FnMut(&K, u64)) {
        for slot in &self.few {
            let Some(key) = slot.key.get() else {
                break;
            };
            f(key, slot.count.load(Ordering::Relaxed));
        }
        for (key, n) in lock(&self.more).iter() {
            f(key, *n);
        }
    }
}

/// Cumulative counts by key.
pub struct Tally<K: Eq + Hash + Send + Sync> {
    threads: ThreadLocal<Cells<K>>,
}

impl<K: Eq + Hash + Send + Sync> Default for Tally<K> {
    fn default() -> Self {
        Tally {
            threads: ThreadLocal::new(),
        }
    }
}

impl<K: Eq + Hash + Clone + Send + Sync> Tally<K> {
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
        self.threads.get_or_default().add(key, n, owned);
    }

    /// Calls `f` with every key and its count summed over the threads (at scrape time); keys counted 0 are left
    /// out.
    pub fn each(&self, mut f: impl FnMut(&K, u64)) {
        let mut total: HashMap<K, u64, BuildHasherDefault<FxHasher>> = HashMap::default();
        for cells in self.threads.iter() {
            cells.each(|key, n| {
                if n > 0 {
                    *total.entry(key.clone()).or_insert(0) += n;
                }
            });
        }
        for (key, n) in &total {
            f(key, *n);
        }
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
        let cells = tally.threads.get_or_default();
        assert!(cells.few.iter().all(|slot| slot.key.get().is_some()));
        assert_eq!(lock(&cells.more).len(), FEW * 2);
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
