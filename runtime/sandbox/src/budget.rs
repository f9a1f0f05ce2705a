//! One byte budget for everything the sandbox keeps between runs: checked
//! packages (for hosts that keep them, as `tally serve` does), compiled
//! modules, graph bytes, loaded graphs (a portable graph's instance holds
//! its whole linear memory), costs and load checks. Entries are evicted
//! least recently used first, across kinds, whenever the total would pass
//! [`SandboxConfig::cache_bytes`](crate::SandboxConfig::cache_bytes).
//!
//! Eviction changes speed, never results: every entry is a pure function of
//! its key (a digest, or a digest and input shapes), fuel never depends on
//! what is cached, and a run pins what it prepared, so its own modules and
//! graphs cannot be evicted from under it. Evicting an entry drops the
//! cache's reference only: a run still holding it keeps it alive until the
//! run ends, so the budget bounds what is *retained between* runs; what a
//! run holds while it runs is bounded by its limits.
//!
//! Sizes are measured where the sandbox can (a compiled module's code
//! image, a portable graph's linear memory, bytes) and estimated where a
//! native library owns the memory (see `LoadedGraph::resident_bytes`).

use std::sync::{Arc, Mutex};

use lru::LruCache;
use tally_digest::Digest;
use tally_nn::{LoadedGraph, Signature};

use crate::cache::Compiled;

/// What a cache entry is, as `/metrics` labels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CacheKind {
    /// Checked packages, kept by a host between requests.
    Packages,
    /// Compiled, linked stage modules.
    Modules,
    /// Graph bytes, copied out of packages once.
    GraphBytes,
    /// Graphs loaded into the backend.
    Graphs,
    /// Static costs per (graph, input shapes), and deterministic refusals.
    Costs,
    /// Load-time constant-folding checks per graph.
    LoadChecks,
}

impl CacheKind {
    /// Every kind, in the order [`CacheStats::kinds`] lists them.
    pub const ALL: [CacheKind; 6] = [
        Self::Packages,
        Self::Modules,
        Self::GraphBytes,
        Self::Graphs,
        Self::Costs,
        Self::LoadChecks,
    ];

    /// The label: `packages`, `modules`, `graph_bytes`, `graphs`, `costs`,
    /// `load_checks`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Packages => "packages",
            Self::Modules => "modules",
            Self::GraphBytes => "graph_bytes",
            Self::Graphs => "graphs",
            Self::Costs => "costs",
            Self::LoadChecks => "load_checks",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One kind's figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct KindStats {
    /// Entries held now.
    pub entries: u64,
    /// Bytes they are weighed at now.
    pub bytes: u64,
    /// Lookups that found an entry, since the sandbox was built.
    pub hits: u64,
    /// Lookups that found none.
    pub misses: u64,
    /// Entries evicted to stay within the budget.
    pub evictions: u64,
}

/// A snapshot of the caches, for `/metrics` and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// The budget: [`SandboxConfig::cache_bytes`](crate::SandboxConfig::cache_bytes).
    pub budget_bytes: u64,
    /// Per kind, in [`CacheKind::ALL`] order.
    pub kinds: Vec<(CacheKind, KindStats)>,
}

impl CacheStats {
    /// Bytes held over all kinds (never above `budget_bytes`).
    pub fn total_bytes(&self) -> u64 {
        self.kinds.iter().map(|(_, s)| s.bytes).sum()
    }

    /// One kind's figures.
    pub fn kind(&self, kind: CacheKind) -> KindStats {
        self.kinds[kind.index()].1
    }
}

/// Bytes counted for each entry beyond its value: the key, the LRU's node
/// and hash slot.
const ENTRY_OVERHEAD: u64 = 192;

/// A cache key: the kind and what identifies the entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    Package(Digest),
    Module(Digest),
    GraphBytes(Digest),
    Graph(Digest),
    Cost(Digest, Signature),
    LoadCheck(Digest),
}

impl Key {
    fn kind(&self) -> CacheKind {
        match self {
            Key::Package(_) => CacheKind::Packages,
            Key::Module(_) => CacheKind::Modules,
            Key::GraphBytes(_) => CacheKind::GraphBytes,
            Key::Graph(_) => CacheKind::Graphs,
            Key::Cost(..) => CacheKind::Costs,
            Key::LoadCheck(_) => CacheKind::LoadChecks,
        }
    }

    /// What the key and its entry's bookkeeping take (the LRU's node and
    /// hash slot; a signature can be long).
    fn weight(&self) -> u64 {
        let sig = match self {
            Key::Cost(_, sig) => sig.iter().map(|(_, dims)| 16 + 4 * dims.len() as u64).sum(),
            _ => 0,
        };
        ENTRY_OVERHEAD + sig
    }
}

/// A cached value; its variant always matches its key's.
#[derive(Clone)]
pub(crate) enum Value {
    Package(Arc<tally_package::Package>),
    Module(Arc<Compiled>),
    GraphBytes(Arc<[u8]>),
    Graph(Arc<dyn LoadedGraph>),
    Cost(Result<u64, String>),
    LoadCheck(Result<(), String>),
}

impl Value {
    fn weight(&self) -> u64 {
        match self {
            Value::Package(p) => {
                let blobs: usize = p.blobs().values().map(Vec::len).sum();
                (blobs + p.manifest_text().len()) as u64
            }
            Value::Module(c) => {
                let image = c.pre.module().image_range();
                (image.end as usize - image.start as usize) as u64
            }
            Value::GraphBytes(b) => b.len() as u64,
            Value::Graph(g) => g.resident_bytes(),
            Value::Cost(r) => r.as_ref().err().map_or(8, |e| e.len() as u64),
            Value::LoadCheck(r) => r.as_ref().err().map_or(0, |e| e.len() as u64),
        }
    }
}

struct Entry {
    value: Value,
    bytes: u64,
}

struct Inner {
    lru: LruCache<Key, Entry>,
    held: u64,
    stats: [KindStats; CacheKind::ALL.len()],
}

/// The sandbox's caches, in one budget.
pub(crate) struct Caches {
    budget: u64,
    inner: Mutex<Inner>,
}

impl Caches {
    pub(crate) fn new(budget: u64) -> Self {
        Caches {
            budget,
            inner: Mutex::new(Inner {
                // Bounded in bytes, not in entries.
                lru: LruCache::unbounded(),
                held: 0,
                stats: Default::default(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The entry for `key`, now the most recently used.
    pub(crate) fn get(&self, key: &Key) -> Option<Value> {
        let mut inner = self.lock();
        let found = inner.lru.get(key).map(|e| e.value.clone());
        let s = &mut inner.stats[key.kind().index()];
        match found {
            Some(_) => s.hits += 1,
            None => s.misses += 1,
        }
        found
    }

    /// Keeps `value` under `key`, weighed at its own measure, evicting the
    /// least recently used entries until everything fits. A value bigger
    /// than the whole budget is not kept.
    pub(crate) fn insert(&self, key: Key, value: Value) {
        let weight = key.weight() + value.weight();
        let mut dropped = Vec::new();
        let mut inner = self.lock();
        dropped.extend(inner.remove(&key));
        if weight > self.budget {
            drop(inner);
            return;
        }
        let kind = key.kind().index();
        inner.lru.put(
            key,
            Entry {
                value,
                bytes: weight,
            },
        );
        inner.held += weight;
        inner.stats[kind].entries += 1;
        inner.stats[kind].bytes += weight;
        inner.evict_to(self.budget, &mut dropped);
        // Dropping a value can be slow (an ONNX Runtime session, gigabytes
        // of wasm memory): never under the lock.
        drop(inner);
        drop(dropped);
    }

    /// Weighs graph `key` again if the cache still holds this very `graph`
    /// (its memory grows as it runs on larger inputs and keeps more plans),
    /// evicting others if it no longer fits.
    pub(crate) fn reweigh_graph(&self, key: &Key, graph: &Arc<dyn LoadedGraph>) {
        let weight = key.weight() + graph.resident_bytes();
        let mut dropped = Vec::new();
        let mut inner = self.lock();
        let old = match inner.lru.peek(key) {
            Some(Entry {
                value: Value::Graph(g),
                bytes: old,
            }) if Arc::ptr_eq(g, graph) && *old != weight => *old,
            _ => return,
        };
        if weight > self.budget {
            dropped.extend(inner.remove(key));
        } else {
            inner.lru.peek_mut(key).expect("peeked above").bytes = weight;
            inner.held = inner.held - old + weight;
            let s = &mut inner.stats[key.kind().index()];
            s.bytes = s.bytes - old + weight;
            inner.evict_to(self.budget, &mut dropped);
        }
        drop(inner);
        drop(dropped);
    }

    pub(crate) fn stats(&self) -> CacheStats {
        let inner = self.lock();
        CacheStats {
            budget_bytes: self.budget,
            kinds: CacheKind::ALL
                .into_iter()
                .map(|k| (k, inner.stats[k.index()]))
                .collect(),
        }
    }
}

impl Inner {
    fn remove(&mut self, key: &Key) -> Option<Entry> {
        let e = self.lru.pop(key)?;
        self.forget(key, &e);
        Some(e)
    }

    /// Evicts least recently used entries until `budget` holds them all.
    fn evict_to(&mut self, budget: u64, dropped: &mut Vec<Entry>) {
        while self.held > budget {
            let Some((k, e)) = self.lru.pop_lru() else {
                break;
            };
            self.forget(&k, &e);
            self.stats[k.kind().index()].evictions += 1;
            dropped.push(e);
        }
    }

    fn forget(&mut self, key: &Key, e: &Entry) {
        self.held -= e.bytes;
        let s = &mut self.stats[key.kind().index()];
        s.entries -= 1;
        s.bytes -= e.bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(n: usize) -> Value {
        Value::GraphBytes(Arc::from(vec![0u8; n]))
    }

    fn key(i: u8) -> Key {
        Key::GraphBytes(Digest::of(&[i]))
    }

    #[test]
    fn evicts_least_recently_used_across_kinds_to_stay_within_budget() {
        let c = Caches::new(3 * (ENTRY_OVERHEAD + 1000));
        c.insert(key(1), bytes(1000));
        c.insert(key(2), bytes(1000));
        c.insert(
            Key::LoadCheck(Digest::of(b"g")),
            Value::LoadCheck(Err("x".repeat(1000))),
        );
        // Touch 1: 2 is now the least recently used.
        assert!(c.get(&key(1)).is_some());
        c.insert(key(3), bytes(1000));
        assert!(
            c.get(&key(2)).is_none(),
            "the least recently used goes first"
        );
        assert!(c.get(&key(1)).is_some());
        assert!(c.get(&key(3)).is_some());
        let s = c.stats();
        assert!(s.total_bytes() <= s.budget_bytes);
        assert_eq!(s.kind(CacheKind::GraphBytes).evictions, 1);
        assert_eq!(s.kind(CacheKind::GraphBytes).entries, 2);
        assert_eq!(s.kind(CacheKind::LoadChecks).entries, 1);
        assert_eq!(s.kind(CacheKind::GraphBytes).misses, 1);
    }

    #[test]
    fn a_value_larger_than_the_budget_is_not_kept_and_evicts_nothing() {
        let c = Caches::new(2000);
        c.insert(key(1), bytes(1000));
        c.insert(key(2), bytes(5000));
        assert!(c.get(&key(2)).is_none());
        assert!(c.get(&key(1)).is_some());
        assert_eq!(c.stats().total_bytes(), ENTRY_OVERHEAD + 1000);
    }

    #[test]
    fn replacing_an_entry_does_not_count_it_twice() {
        let c = Caches::new(3000);
        c.insert(key(1), bytes(1000));
        c.insert(key(1), bytes(10));
        assert_eq!(c.stats().total_bytes(), ENTRY_OVERHEAD + 10);
        assert_eq!(c.stats().kind(CacheKind::GraphBytes).entries, 1);
    }
}
