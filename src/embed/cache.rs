//! Query vectors kept for searches that repeat: an agent that asks the same
//! thing on every turn skips the model, which is about half of a search.
//!
//! Keyed by the exact query text for one embedder (the server has one), least
//! recently used first out. Long queries rarely repeat, so they are not kept:
//! the cache stays within a few megabytes whatever the traffic.

use std::num::NonZeroUsize;
use std::sync::Mutex;

use lru::LruCache;

/// Queries longer than this (in bytes) are embedded every time.
const MAX_KEY_BYTES: usize = 512;

pub struct QueryCache {
    /// `None` when switched off (capacity 0).
    entries: Option<Mutex<LruCache<String, Vec<f32>>>>,
}

impl QueryCache {
    /// A cache of up to `capacity` query vectors; 0 turns it off.
    pub fn new(capacity: usize) -> Self {
        QueryCache {
            entries: NonZeroUsize::new(capacity).map(|n| Mutex::new(LruCache::new(n))),
        }
    }

    /// The vector of `text` if it was embedded lately.
    pub fn get(&self, text: &str) -> Option<Vec<f32>> {
        let hit = self.lock()?.get(text).cloned();
        crate::metrics::query_cache(hit.is_some());
        hit
    }

    /// Keeps `vector` as the embedding of `text`.
    pub fn put(&self, text: &str, vector: &[f32]) {
        if text.len() > MAX_KEY_BYTES {
            return;
        }
        if let Some(mut entries) = self.lock() {
            entries.put(text.to_string(), vector.to_vec());
        }
    }

    fn lock(&self) -> Option<std::sync::MutexGuard<'_, LruCache<String, Vec<f32>>>> {
        // A plain map stays usable even if a holder panicked.
        let entries = self.entries.as_ref()?;
        Some(entries.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_most_recently_used_and_skips_long_queries() {
        let cache = QueryCache::new(2);
        cache.put("a", &[1.0]);
        cache.put("b", &[2.0]);
        assert_eq!(cache.get("a"), Some(vec![1.0]), "a is now the most recent");
        cache.put("c", &[3.0]);
        assert_eq!(cache.get("b"), None, "b was the least recently used");
        assert_eq!(cache.get("a"), Some(vec![1.0]));
        assert_eq!(cache.get("c"), Some(vec![3.0]));
        let long = "x".repeat(MAX_KEY_BYTES + 1);
        cache.put(&long, &[4.0]);
        assert_eq!(cache.get(&long), None, "long queries are not kept");
    }

    #[test]
    fn capacity_zero_keeps_nothing() {
        let cache = QueryCache::new(0);
        cache.put("a", &[1.0]);
        assert_eq!(cache.get("a"), None);
    }
}
