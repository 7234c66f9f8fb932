//! Query vectors kept for searches that repeat: an agent that asks the same
//! thing on every turn skips the model, which is about half of a search.
//!
//! Least recently used first out. The vectors live in one block allocated
//! at start and reused slot by slot, and queries are known by a 128-bit hash
//! of their text: a cache that churned a small allocation per query
//! scattered long-lived blocks through the heap, and the server's peak RSS
//! under load drifted by up to 60 MB between runs (docs/BENCHMARKS.md).

use std::num::NonZeroUsize;
use std::sync::{Mutex, MutexGuard};

use lru::LruCache;
use sha2::{Digest, Sha256};

pub struct QueryCache {
    /// `None` when switched off (capacity 0).
    slots: Option<Mutex<Slots>>,
}

struct Slots {
    /// Query hash → slot.
    index: LruCache<u128, usize>,
    /// `capacity × dim` floats; slot `s` is `vectors[s·dim..(s+1)·dim]`.
    vectors: Vec<f32>,
    dim: usize,
    /// Slots handed out so far (all of them once the cache is full).
    used: usize,
}

fn key(text: &str) -> u128 {
    let digest = Sha256::digest(text.as_bytes());
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    u128::from_le_bytes(first)
}

impl QueryCache {
    /// A cache of up to `capacity` vectors of `dim` floats; 0 turns it off.
    pub fn new(capacity: usize, dim: usize) -> Self {
        QueryCache {
            slots: NonZeroUsize::new(capacity).map(|n| {
                Mutex::new(Slots {
                    index: LruCache::new(n),
                    vectors: vec![0.0; capacity * dim],
                    dim,
                    used: 0,
                })
            }),
        }
    }

    /// The vector of `text` if it was embedded lately.
    pub fn get(&self, text: &str) -> Option<Vec<f32>> {
        let key = key(text);
        let hit = {
            let mut slots = self.lock()?;
            let slot = slots.index.get(&key).copied();
            slot.map(|slot| slots.slot(slot).to_vec())
        };
        crate::metrics::query_cache(hit.is_some());
        hit
    }

    /// Keeps `vector` as the embedding of `text` (a vector of another
    /// dimension is ignored).
    pub fn put(&self, text: &str, vector: &[f32]) {
        let key = key(text);
        let Some(mut slots) = self.lock() else {
            return;
        };
        if vector.len() != slots.dim {
            return;
        }
        let known = slots.index.get(&key).copied();
        let slot = match known {
            Some(slot) => slot,
            None if slots.used < slots.index.cap().get() => {
                slots.used += 1;
                slots.used - 1
            }
            // Full: the least recently used query gives up its slot.
            None => match slots.index.peek_lru() {
                Some((_, &slot)) => slot,
                None => return,
            },
        };
        // Pushing at capacity evicts exactly the entry whose slot was taken.
        let evicted = slots.index.push(key, slot);
        debug_assert!(
            evicted.is_none_or(|(_, s)| s == slot),
            "a slot shared by two queries"
        );
        slots.slot_mut(slot).copy_from_slice(vector);
    }

    fn lock(&self) -> Option<MutexGuard<'_, Slots>> {
        // The slots stay usable even if a holder panicked.
        let slots = self.slots.as_ref()?;
        Some(slots.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Slots {
    fn slot(&self, slot: usize) -> &[f32] {
        &self.vectors[slot * self.dim..(slot + 1) * self.dim]
    }

    fn slot_mut(&mut self, slot: usize) -> &mut [f32] {
        &mut self.vectors[slot * self.dim..(slot + 1) * self.dim]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_most_recently_used_in_reused_slots() {
        let cache = QueryCache::new(2, 2);
        cache.put("a", &[1.0, 1.0]);
        cache.put("b", &[2.0, 2.0]);
        assert_eq!(
            cache.get("a"),
            Some(vec![1.0, 1.0]),
            "a is now the most recent"
        );
        cache.put("c", &[3.0, 3.0]);
        assert_eq!(cache.get("b"), None, "b was the least recently used");
        assert_eq!(
            cache.get("a"),
            Some(vec![1.0, 1.0]),
            "c took b's slot, not a's"
        );
        assert_eq!(cache.get("c"), Some(vec![3.0, 3.0]));
        cache.put("c", &[4.0, 4.0]);
        assert_eq!(cache.get("c"), Some(vec![4.0, 4.0]), "a repeat overwrites");
        assert_eq!(cache.get("a"), Some(vec![1.0, 1.0]));
        cache.put("d", &[5.0]);
        assert_eq!(
            cache.get("d"),
            None,
            "a vector of another dimension is not kept"
        );
    }

    #[test]
    fn capacity_zero_keeps_nothing() {
        let cache = QueryCache::new(0, 2);
        cache.put("a", &[1.0, 1.0]);
        assert_eq!(cache.get("a"), None);
    }
}
