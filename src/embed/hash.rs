//! A deterministic hashing embedder for tests that are not about retrieval
//! quality: each lowercased word adds ±1 to one of `dim` buckets. Equal texts
//! get equal vectors and texts sharing words are closer; nothing more.

use futures::future::BoxFuture;

use super::{EmbedError, Embedder, normalize};

pub struct HashEmbedder {
    dim: usize,
}

impl HashEmbedder {
    pub fn new(dim: usize) -> Self {
        HashEmbedder { dim }
    }

    pub fn embed_one(&self, text: &str) -> Vec<f32> {
        let mut v = vec![0f32; self.dim];
        for word in text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
        {
            let h = fnv1a(word.to_lowercase().as_bytes());
            let bucket = (h % self.dim as u64) as usize;
            v[bucket] += if h & (1 << 63) == 0 { 1.0 } else { -1.0 };
        }
        // An empty or punctuation-only text still gets a valid unit vector.
        if v.iter().all(|x| *x == 0.0) {
            v[0] = 1.0;
        }
        normalize(&mut v);
        v
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Embedder for HashEmbedder {
    fn dim(&self) -> usize {
        self.dim
    }

    fn model_id(&self) -> &str {
        "hash"
    }

    fn embed(&self, texts: Vec<String>) -> BoxFuture<'_, Result<Vec<Vec<f32>>, EmbedError>> {
        let vectors = texts.iter().map(|t| self.embed_one(t)).collect();
        Box::pin(async move { Ok(vectors) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_texts_match_and_vectors_are_unit_length() {
        let e = HashEmbedder::new(64);
        let a = e.embed_one("Coffee, black");
        assert_eq!(a, e.embed_one("coffee black"));
        let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
        assert_ne!(a, e.embed_one("tea with milk"));
        assert_eq!(e.embed_one("").len(), 64);
    }
}
