//! Who is calling: [`Principal`], and API keys (generation, hashing, and
//! reading when one expires).
//!
//! A key is `mnemo_` followed by 43 base64url characters (256 random bits).
//! The database keeps only its SHA-256 and a short prefix for listings.

use base64::Engine;
use chrono::{DateTime, TimeDelta, Utc};
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

/// Why `--expires` could not be read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExpiryError {
    #[error(
        "--expires {text:?} is {reason}: use a duration like 90d, 12h, 30m or 1week, or an RFC 3339 \
         time like 2030-01-31T00:00:00Z"
    )]
    Unreadable { text: String, reason: String },
    #[error(
        "--expires {0:?} is too far in the future to store: use a shorter duration or an RFC 3339 time"
    )]
    TooFar(String),
    #[error("--expires {0:?} is not in the future: a key must expire after it is created")]
    NotFuture(String),
}

/// When a key created at `now` with `--expires text` stops working: `now`
/// plus a duration ("90d", "12h", "30m", "1week", "1h 30m", humantime's
/// units), or an RFC 3339 time; either must be after `now`.
pub fn key_expiry(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, ExpiryError> {
    let text = text.trim();
    let future = |at: DateTime<Utc>| {
        if at > now {
            Ok(at)
        } else {
            Err(ExpiryError::NotFuture(text.into()))
        }
    };
    let not_a_duration = match humantime::parse_duration(text) {
        Ok(duration) => {
            return TimeDelta::from_std(duration)
                .ok()
                .and_then(|d| now.checked_add_signed(d))
                .ok_or_else(|| ExpiryError::TooFar(text.into()))
                .and_then(future);
        }
        Err(humantime::DurationError::NumberOverflow) => {
            return Err(ExpiryError::TooFar(text.into()));
        }
        Err(e) => e,
    };
    match DateTime::parse_from_rfc3339(text) {
        Ok(at) => future(at.with_timezone(&Utc)),
        // Explain in the terms of the form the text looks like.
        Err(not_a_time) => Err(ExpiryError::Unreadable {
            text: text.into(),
            reason: if text.contains(['-', ':']) {
                format!("not an RFC 3339 time ({not_a_time})")
            } else {
                format!("not a duration ({not_a_duration})")
            },
        }),
    }
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

    #[test]
    fn key_expiry_reads_durations_and_times() {
        let now = DateTime::parse_from_rfc3339("2026-12-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let after = |text: &str| key_expiry(text, now).map(|at| at - now);
        assert_eq!(after("90d"), Ok(TimeDelta::days(90)));
        assert_eq!(after("12h"), Ok(TimeDelta::hours(12)));
        assert_eq!(after("30m"), Ok(TimeDelta::minutes(30)));
        assert_eq!(after("1week"), Ok(TimeDelta::weeks(1)));
        assert_eq!(after(" 1h 30m "), Ok(TimeDelta::minutes(90)));
        assert_eq!(
            key_expiry("2027-01-31T00:00:00+01:00", now),
            Ok(DateTime::parse_from_rfc3339("2027-01-30T23:00:00Z")
                .unwrap()
                .with_timezone(&Utc))
        );
    }

    #[test]
    fn key_expiry_refuses_bad_input_without_panicking() {
        let now = Utc::now();
        let unreadable =
            |text: &str| matches!(key_expiry(text, now), Err(ExpiryError::Unreadable { .. }));
        // A multi-byte character after the number once split a char.
        assert!(unreadable("1é"), "{:?}", key_expiry("1é", now));
        assert!(unreadable("é"));
        assert!(unreadable(""));
        assert!(unreadable("ninety days"));
        assert!(unreadable("2027-13-01T00:00:00Z"));
        assert!(unreadable("-5d"));
        // Each of these once overflowed (a panic) or wrapped into the past.
        for text in ["999999999999999999d", "99999999d", "9223372036854775807m"] {
            assert_eq!(
                key_expiry(text, now),
                Err(ExpiryError::TooFar(text.into())),
                "{text}"
            );
        }
        assert_eq!(
            key_expiry("0d", now),
            Err(ExpiryError::NotFuture("0d".into()))
        );
        assert_eq!(
            key_expiry("2020-01-01T00:00:00Z", now),
            Err(ExpiryError::NotFuture("2020-01-01T00:00:00Z".into()))
        );
        let message = key_expiry("1é", now).unwrap_err().to_string();
        assert!(
            message.contains("90d") && message.contains("RFC 3339"),
            "{message}"
        );
    }
}
