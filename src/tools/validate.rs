//! Argument limits and the checks that enforce them. Every message names
//! the argument, what was wrong, and what is allowed.

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use uuid::Uuid;

use super::output::ToolError;

pub use crate::limits::{
    MAX_CONTENT_CHARS, MAX_METADATA_BYTES, MAX_METADATA_DEPTH, MAX_TAG_CHARS, MAX_TAGS,
    MAX_USER_CHARS,
};
pub const MAX_BATCH: usize = 500;
pub const MAX_QUERY_CHARS: usize = 2_048;
pub const MAX_LIMIT: i64 = 100;
pub const MAX_TTL_HOURS: f64 = 24.0 * 365.0 * 100.0;

/// Trimmed content of 1 to [`MAX_CONTENT_CHARS`] characters.
pub fn content(field: &str, value: &str) -> Result<String, ToolError> {
    let trimmed = value.trim();
    let chars = trimmed.chars().count();
    if chars == 0 {
        return Err(ToolError::invalid(format!(
            "{field} is empty: give 1 to {MAX_CONTENT_CHARS} characters"
        )));
    }
    if chars > MAX_CONTENT_CHARS {
        return Err(ToolError::invalid(format!(
            "{field} is {chars} characters long: at most {MAX_CONTENT_CHARS} are allowed; split it into several memories"
        )));
    }
    if trimmed.contains('\0') {
        return Err(ToolError::invalid(format!(
            "{field} contains a NUL character, which cannot be stored"
        )));
    }
    Ok(trimmed.to_string())
}

pub fn query(value: &str) -> Result<String, ToolError> {
    let trimmed = value.trim();
    let chars = trimmed.chars().count();
    if chars == 0 || chars > MAX_QUERY_CHARS || trimmed.contains('\0') {
        return Err(ToolError::invalid(format!(
            "query must be 1 to {MAX_QUERY_CHARS} characters without NUL (got {chars})"
        )));
    }
    Ok(trimmed.to_string())
}

pub fn importance(field: &str, value: Option<i64>, default: i16) -> Result<i16, ToolError> {
    match value {
        None => Ok(default),
        Some(v @ 0..=10) => Ok(v as i16),
        Some(v) => Err(ToolError::invalid(format!(
            "{field} is {v}: use a whole number from 0 (trivial) to 10 (critical)"
        ))),
    }
}

pub fn unit(field: &str, value: Option<f64>, default: f32) -> Result<f32, ToolError> {
    match value {
        None => Ok(default),
        Some(v) if v.is_finite() && (0.0..=1.0).contains(&v) => Ok(v as f32),
        Some(v) => Err(ToolError::invalid(format!(
            "{field} is {v}: use a number from 0 to 1"
        ))),
    }
}

/// Trimmed, de-duplicated tags, at most [`MAX_TAGS`] of 1 to [`MAX_TAG_CHARS`] characters.
pub fn tags(field: &str, value: Option<Vec<String>>) -> Result<Vec<String>, ToolError> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    if value.len() > MAX_TAGS {
        return Err(ToolError::invalid(format!(
            "{field} has {} tags: at most {MAX_TAGS} are allowed",
            value.len()
        )));
    }
    let mut out: Vec<String> = Vec::with_capacity(value.len());
    for tag in value {
        let t = tag.trim();
        let chars = t.chars().count();
        if chars == 0 || chars > MAX_TAG_CHARS || t.chars().any(char::is_control) {
            return Err(ToolError::invalid(format!(
                "{field} has the tag {tag:?}: each tag must be 1 to {MAX_TAG_CHARS} printable characters"
            )));
        }
        if !out.iter().any(|o| o == t) {
            out.push(t.to_string());
        }
    }
    Ok(out)
}

/// A JSON object of at most [`MAX_METADATA_BYTES`] bytes and [`MAX_METADATA_DEPTH`] levels.
pub fn metadata(
    field: &str,
    value: Option<serde_json::Value>,
) -> Result<serde_json::Value, ToolError> {
    let Some(value) = value else {
        return Ok(serde_json::Value::Object(Default::default()));
    };
    if !value.is_object() {
        return Err(ToolError::invalid(format!(
            "{field} must be a JSON object (e.g. {{\"source\": \"chat\"}}), not {}",
            json_type(&value)
        )));
    }
    let size = value.to_string().len();
    if size > MAX_METADATA_BYTES {
        return Err(ToolError::invalid(format!(
            "{field} is {size} bytes as JSON: at most {MAX_METADATA_BYTES} are allowed"
        )));
    }
    if depth(&value) > MAX_METADATA_DEPTH {
        return Err(ToolError::invalid(format!(
            "{field} is nested more than {MAX_METADATA_DEPTH} levels deep"
        )));
    }
    if value.to_string().contains("\\u0000") {
        return Err(ToolError::invalid(format!(
            "{field} contains a NUL character, which cannot be stored"
        )));
    }
    Ok(value)
}

fn depth(value: &serde_json::Value) -> usize {
    match value {
        serde_json::Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        serde_json::Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn json_type(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// The user's external id, or `default` when none is given.
pub fn user(value: Option<String>, default: &str) -> Result<String, ToolError> {
    let Some(value) = value else {
        return Ok(default.to_string());
    };
    let t = value.trim();
    let chars = t.chars().count();
    if chars == 0 || chars > MAX_USER_CHARS || t.chars().any(char::is_control) {
        return Err(ToolError::invalid(format!(
            "user_id {} is not valid: use 1 to {MAX_USER_CHARS} printable characters, or leave it out for the default user",
            shown(&value)
        )));
    }
    Ok(t.to_string())
}

/// The years a time may fall in, after conversion to UTC: RFC 3339's four
/// digits less year 0 (1 BC, which PostgreSQL shows as "0001 BC"). A time
/// outside comes back in a form this server refuses ("+10000-01-01...",
/// "-0001-..."), so it is refused when it comes in.
pub const TIME_YEARS: std::ops::RangeInclusive<i32> = 1..=9999;

/// Whether `t` lies in [`TIME_YEARS`].
pub fn representable(t: &DateTime<Utc>) -> bool {
    TIME_YEARS.contains(&t.year())
}

/// An RFC 3339 timestamp, or a plain date (taken as midnight UTC), in
/// [`TIME_YEARS`] once converted to UTC.
pub fn time(field: &str, value: Option<&str>) -> Result<Option<DateTime<Utc>>, ToolError> {
    let Some(text) = value else {
        return Ok(None);
    };
    let text = text.trim();
    let parsed = DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|t| t.and_utc())
        });
    match parsed {
        Some(t) if representable(&t) => Ok(Some(t)),
        Some(t) => Err(ToolError::invalid(format!(
            "{field} {} is {t}: times must fall in the years 0001 to 9999 in UTC (0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z)",
            shown(text)
        ))),
        None => Err(ToolError::invalid(format!(
            "{field} {} is not a time: use RFC 3339 like 2024-05-08T13:56:00Z, or a date like 2024-05-08",
            shown(text)
        ))),
    }
}

/// Longest piece of a bad value an error message quotes.
const SHOWN_CHARS: usize = 80;

/// `value` quoted for an error message, cut at [`SHOWN_CHARS`] characters:
/// a 10 MB argument should not come back as a 10 MB error.
pub fn shown(value: &str) -> String {
    match value.char_indices().nth(SHOWN_CHARS) {
        None => format!("{value:?}"),
        Some((cut, _)) => format!(
            "{:?}... ({} characters)",
            &value[..cut],
            value.chars().count()
        ),
    }
}

/// The expiry from `expires_at` or `ttl_hours` (not both); it must be in the future.
pub fn expiry(
    expires_at: Option<&str>,
    ttl_hours: Option<f64>,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, ToolError> {
    match (expires_at, ttl_hours) {
        (Some(_), Some(_)) => Err(ToolError::invalid("give expires_at or ttl_hours, not both")),
        (Some(at), None) => {
            let at = time("expires_at", Some(at))?;
            match at {
                Some(t) if t <= now => Err(ToolError::invalid(format!(
                    "expires_at {t} is in the past: give a future time, or leave it out to keep the memory"
                ))),
                other => Ok(other),
            }
        }
        (None, Some(h)) => {
            if !h.is_finite() || h <= 0.0 || h > MAX_TTL_HOURS {
                return Err(ToolError::invalid(format!(
                    "ttl_hours is {h}: use a number of hours above 0 and at most {MAX_TTL_HOURS}"
                )));
            }
            let ms = (h * 3_600_000.0) as i64;
            Ok(Some(now + chrono::Duration::milliseconds(ms.max(1))))
        }
        (None, None) => Ok(None),
    }
}

/// A memory id.
pub fn id(field: &str, value: &str) -> Result<Uuid, ToolError> {
    Uuid::parse_str(value.trim()).map_err(|_| {
        ToolError::invalid(format!(
            "{field} {} is not a memory id: ids are UUIDs like 5f0c6a4e-8a4b-4c1e-9d3e-2b7f1a0c9e11, as returned by store_memory or search_memories",
            shown(value)
        ))
    })
}

pub fn limit(value: Option<i64>, default: i64) -> Result<i64, ToolError> {
    match value {
        None => Ok(default),
        Some(v) if (1..=MAX_LIMIT).contains(&v) => Ok(v),
        Some(v) => Err(ToolError::invalid(format!(
            "limit is {v}: use 1 to {MAX_LIMIT}"
        ))),
    }
}

/// Longest message content, in characters.
pub const MAX_MESSAGE_CHARS: usize = 65_536;
/// Longest context name, tool call id, tool name or model name, in characters.
pub const MAX_LABEL_CHARS: usize = 256;
/// Most messages one get_context page returns.
pub const MAX_MESSAGE_PAGE: i64 = 500;
/// Largest token count a message may claim.
pub const MAX_TOKEN_COUNT: i64 = 10_000_000;

/// Message content of 1 to [`MAX_MESSAGE_CHARS`] characters, kept exactly
/// as given (whitespace can matter in a transcript) but not blank.
pub fn message_content(field: &str, value: String) -> Result<String, ToolError> {
    let chars = value.chars().count();
    if value.trim().is_empty() {
        return Err(ToolError::invalid(format!(
            "{field} is empty: give 1 to {MAX_MESSAGE_CHARS} characters"
        )));
    }
    if chars > MAX_MESSAGE_CHARS {
        return Err(ToolError::invalid(format!(
            "{field} is {chars} characters long: at most {MAX_MESSAGE_CHARS} are allowed; split it into several messages"
        )));
    }
    if value.contains('\0') {
        return Err(ToolError::invalid(format!(
            "{field} contains a NUL character, which cannot be stored"
        )));
    }
    Ok(value)
}

/// A trimmed label (context name, tool call id, tool name, model) of 1 to
/// [`MAX_LABEL_CHARS`] printable characters.
pub fn label(field: &str, value: &str) -> Result<String, ToolError> {
    let t = value.trim();
    let chars = t.chars().count();
    if chars == 0 || chars > MAX_LABEL_CHARS || t.chars().any(char::is_control) {
        return Err(ToolError::invalid(format!(
            "{field} {} is not valid: use 1 to {MAX_LABEL_CHARS} printable characters",
            shown(value)
        )));
    }
    Ok(t.to_string())
}

/// A context id.
pub fn context_id(field: &str, value: &str) -> Result<Uuid, ToolError> {
    Uuid::parse_str(value.trim()).map_err(|_| {
        ToolError::invalid(format!(
            "{field} {} is not a context id: ids are UUIDs like 5f0c6a4e-8a4b-4c1e-9d3e-2b7f1a0c9e11, as returned by append_messages or list_contexts",
            shown(value)
        ))
    })
}

/// A context version: 0 (before the first message) or more.
pub fn version(field: &str, value: Option<i64>) -> Result<Option<i64>, ToolError> {
    match value {
        Some(v) if v < 0 => Err(ToolError::invalid(format!(
            "{field} is {v}: versions are 0 (before the first message) or more"
        ))),
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_say_what_is_allowed() {
        let e = content("content", "   ").unwrap_err().to_string();
        assert!(e.contains("empty") && e.contains("32768"), "{e}");
        let e = importance("importance", Some(11), 5)
            .unwrap_err()
            .to_string();
        assert!(e.contains("0") && e.contains("10"), "{e}");
        assert!(unit("confidence", Some(f64::NAN), 1.0).is_err());
        assert!(tags("tags", Some(vec!["".into()])).is_err());
        assert_eq!(
            tags("tags", Some(vec![" a ".into(), "a".into(), "b".into()])).unwrap(),
            vec!["a", "b"]
        );
        assert!(metadata("metadata", Some(serde_json::json!([1]))).is_err());
        assert!(id("id", "nope").unwrap_err().to_string().contains("UUID"));
        let now = Utc::now();
        assert!(expiry(Some("2000-01-01"), None, now).is_err());
        assert!(expiry(Some("2999-01-01"), Some(1.0), now).is_err());
        assert!(expiry(None, Some(-1.0), now).is_err());
        assert_eq!(
            time("occurred_at", Some("2023-05-08"))
                .unwrap()
                .unwrap()
                .to_rfc3339(),
            "2023-05-08T00:00:00+00:00"
        );
    }
}
