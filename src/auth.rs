//! Who is calling: [`Principal`], and API keys (generation and hashing).
//!
//! A key is `mnemo_` followed by 43 base64url characters (256 random bits).
//! The database keeps only its SHA-256 and a short prefix for listings.

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::store::Scope;

/// The caller of an HTTP request, decided by authentication. It fixes the
/// companion every tool call of the request acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The API key used; `None` when the server runs without authentication.
    pub key_id: Option<Uuid>,
    pub scope: Scope,
}

impl Principal {
    /// A stable text form for logs and session binding.
    pub fn id(&self) -> String {
        match self.key_id {
            Some(id) => format!("key:{id}"),
            None => "anonymous".into(),
        }
    }
}

const KEY_PREFIX: &str = "mnemo_";

/// A fresh random API key.
pub fn generate_key() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "{KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// What the database stores for `key`.
pub fn hash_key(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

/// The part of a key shown in listings.
pub fn display_prefix(key: &str) -> String {
    key.chars().take(KEY_PREFIX.len() + 6).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_and_hash_stably() {
        let a = generate_key();
        let b = generate_key();
        assert_ne!(a, b);
        assert!(a.starts_with("mnemo_") && a.len() == 6 + 43, "{a}");
        assert_eq!(hash_key(&a), hash_key(&a));
        assert_ne!(hash_key(&a), hash_key(&b));
        assert_eq!(display_prefix(&a).len(), 12);
    }
}
